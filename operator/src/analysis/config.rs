//! The analysis' settings (`spec.analysis` of an FLMonitor plus a few documented defaults) and
//! their validation.

use serde::{Deserialize, Serialize};

/// Which global metric drives the convergence state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Global loss: lower is better.
    Loss,
    /// Global accuracy (0–1): higher is better.
    Accuracy,
}

impl Metric {
    /// `Loss` or `Accuracy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Loss => "Loss",
            Metric::Accuracy => "Accuracy",
        }
    }
}

/// Settings of the analysis. Defaults are SPEC §3's `spec.analysis` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AnalysisConfig {
    /// Rounds in the window for rate, variance and straggler detection (5).
    pub window: usize,
    /// Loss target: Converged once the best loss is at or below it.
    pub target_loss: Option<f64>,
    /// Accuracy target (0–1): Converged once the best accuracy is at or above it.
    pub target_accuracy: Option<f64>,
    /// Metric of the convergence state; `None` = Loss, or Accuracy while no loss has arrived.
    pub primary_metric: Option<Metric>,
    /// Stalled once rounds without improvement exceed this (10).
    pub stall_rounds: u64,
    /// Relative change that counts as an improvement (0.001).
    pub min_delta: f64,
    /// A client is slow in a round when its training time exceeds this × the round's median (1.5).
    pub straggler_factor: f64,
    /// Clients expected per round; `None` = each round's `expected_participants`.
    pub expected_clients: Option<u32>,
    /// Plateaued when |rate| / |mean of the window| is below this (0.001).
    pub plateau_threshold: f64,
    /// A client's training-time trend is stable while |slope| / mean stays within this per round (0.02).
    pub trend_band: f64,
    /// LowParticipation when participants < ceil(this × expected) (0.5).
    pub participation_fraction: f64,
    /// Accuracy of guessing (e.g. 1 / classes); `None` = the run's first accuracy.
    pub chance_accuracy: Option<f64>,
    /// Clients tracked per run; later ones are counted as dropped (100 000).
    pub max_clients: usize,
    /// Points kept per downsampled series (between half of it and all of it are in use) (2048).
    pub series_capacity: usize,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            window: 5,
            target_loss: None,
            target_accuracy: None,
            primary_metric: None,
            stall_rounds: 10,
            min_delta: 0.001,
            straggler_factor: 1.5,
            expected_clients: None,
            plateau_threshold: 0.001,
            trend_band: 0.02,
            participation_fraction: 0.5,
            chance_accuracy: None,
            max_clients: 100_000,
            series_capacity: 2048,
        }
    }
}

/// A setting outside its valid range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid analysis setting {field}: {value} (expected {expected})")]
pub struct ConfigError {
    /// The setting, as spelled in `spec.analysis`.
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// What is accepted.
    pub expected: &'static str,
}

/// The longest window straggler detection can look back over (one bit per round in a `u64`).
pub const MAX_WINDOW: usize = 64;

impl AnalysisConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// The first setting outside its range, with its value and what is expected.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, value: String, expected| {
            Err(ConfigError {
                field,
                value,
                expected,
            })
        };
        if !(2..=MAX_WINDOW).contains(&self.window) {
            return err("window", self.window.to_string(), "an integer from 2 to 64");
        }
        if let Some(t) = self.target_loss
            && !t.is_finite()
        {
            return err("targetLoss", t.to_string(), "a finite number");
        }
        if let Some(t) = self.target_accuracy
            && !(0.0..=1.0).contains(&t)
        {
            return err("targetAccuracy", t.to_string(), "a fraction from 0 to 1");
        }
        if let Some(t) = self.chance_accuracy
            && !(0.0..1.0).contains(&t)
        {
            return err("chanceAccuracy", t.to_string(), "a fraction from 0 to below 1");
        }
        if self.stall_rounds == 0 {
            return err("stallRounds", "0".into(), "at least 1");
        }
        if !(self.min_delta.is_finite() && self.min_delta >= 0.0) {
            return err("minDelta", self.min_delta.to_string(), "a relative change ≥ 0");
        }
        if !(self.straggler_factor.is_finite() && self.straggler_factor >= 1.0) {
            return err(
                "stragglerFactor",
                self.straggler_factor.to_string(),
                "a factor ≥ 1",
            );
        }
        if self.expected_clients == Some(0) {
            return err("expectedClients", "0".into(), "at least 1");
        }
        if !(self.plateau_threshold.is_finite() && self.plateau_threshold >= 0.0) {
            return err(
                "plateauThreshold",
                self.plateau_threshold.to_string(),
                "a relative rate ≥ 0",
            );
        }
        if !(self.trend_band.is_finite() && self.trend_band >= 0.0) {
            return err("trendBand", self.trend_band.to_string(), "a relative slope ≥ 0");
        }
        if !(self.participation_fraction > 0.0 && self.participation_fraction <= 1.0) {
            return err(
                "participationFraction",
                self.participation_fraction.to_string(),
                "a fraction in (0, 1]",
            );
        }
        if self.max_clients == 0 {
            return err("maxClients", "0".into(), "at least 1");
        }
        if self.series_capacity < 16 {
            return err("seriesCapacity", self.series_capacity.to_string(), "at least 16");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(AnalysisConfig::default().validate(), Ok(()));
    }

    #[test]
    fn an_accuracy_target_in_percent_is_rejected_with_the_field_and_value() {
        let config = AnalysisConfig {
            target_accuracy: Some(97.0),
            ..AnalysisConfig::default()
        };
        let error = config.validate().expect_err("97 is not a fraction");
        assert_eq!(
            error.to_string(),
            "invalid analysis setting targetAccuracy: 97 (expected a fraction from 0 to 1)"
        );
    }
}
