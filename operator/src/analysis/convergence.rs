//! Convergence of one global metric (loss or accuracy) over a run, and the state machine of SPEC §6.
//!
//! Definitions, for the primary metric with values v (finite values only; missing rounds skipped):
//! - **better**: lower for loss, higher for accuracy. "Improvement" and "rate" are signed so that a
//!   positive number always means getting better.
//! - **improvement**: a value better than the *reference* by more than `minDelta · |reference|`
//!   (relative). The reference is the value at the last improvement (the first value starts it),
//!   so many small steps add up to an improvement once together they exceed `minDelta` — as Keras'
//!   early stopping does. `best` is the best value ever seen (it may sit slightly beyond the
//!   reference).
//! - **roundsWithoutImprovement** = latest round of the run − round of the last improvement. Rounds
//!   with the metric missing still count (time passes without improvement).
//! - **window**: the latest `window` finite values. **rate** = `(first − last) / (r_last − r_first)`
//!   for loss (`(last − first) / …` for accuracy), per round; without gaps `r_last − r_first = n − 1`,
//!   the SPEC's `(first − last)/(n − 1)`. **variance** = sample variance `Σ(v − v̄)² / (n − 1)`.
//! - **Diverged**: the latest loss that arrived is non-finite (NaN, ±∞); or accuracy collapsed to
//!   chance after having been well above it: with chance c (the configured `chanceAccuracy`, else
//!   the run's first accuracy — an untrained model guesses) and best accuracy b, the run was *well
//!   above* chance when `b − c ≥ 0.25 · (1 − c)`, and has *collapsed* while the latest accuracy is
//!   `≤ c + 0.1 · (b − c)`. A later finite, recovered value clears it.
//! - **Converged**: every configured target is crossed by the best-so-far (loss ≤ targetLoss,
//!   accuracy ≥ targetAccuracy). No target: not converged, reason `NoTarget`.
//! - **Stalled**: roundsWithoutImprovement **>** stallRounds; clears with the next improvement.
//! - **Plateaued**: `|rate| / |mean(window)| < plateauThreshold` while above target.
//! - **WarmingUp**: fewer than `window` values; **Improving** otherwise.
//! - Precedence: Diverged, Converged, Stalled, WarmingUp, Plateaued, Improving. (Stalled before
//!   WarmingUp: with sparse evaluations, more than `stallRounds` rounds can pass before the window
//!   fills, and that is a stall all the same.)
//! - **roundsToTarget** (only while Improving with a positive rate): `⌈(last − target) / rate⌉` for
//!   loss, `⌈(target − last) / rate⌉` for accuracy.

use serde::Serialize;

use super::config::Metric;
use super::stats::Window;

/// Convergence state of a run (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum State {
    /// Fewer rounds with the metric than the window.
    WarmingUp,
    /// Getting better, or changing faster than the plateau threshold.
    Improving,
    /// Barely changing while above target.
    Plateaued,
    /// No improvement for more than `stallRounds` rounds.
    Stalled,
    /// Every configured target reached.
    Converged,
    /// Non-finite loss, or accuracy collapsed to chance.
    Diverged,
}

impl State {
    /// The state's name, as in status.
    pub fn as_str(self) -> &'static str {
        match self {
            State::WarmingUp => "WarmingUp",
            State::Improving => "Improving",
            State::Plateaued => "Plateaued",
            State::Stalled => "Stalled",
            State::Converged => "Converged",
            State::Diverged => "Diverged",
        }
    }
}

/// Fraction of the way from chance to 1 that the best accuracy must have reached before a fall
/// back to chance counts as a collapse.
pub const WELL_ABOVE_CHANCE: f64 = 0.25;
/// Fraction of the way from chance to the best accuracy below which accuracy has collapsed.
pub const COLLAPSE_FRACTION: f64 = 0.1;

/// Running convergence bookkeeping for one metric in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracker {
    metric: Metric,
    window: Window,
    /// Best value and its round.
    best: Option<(u64, f64)>,
    /// Value at the last improvement.
    reference: Option<f64>,
    last_improvement_round: Option<u64>,
    /// First finite value and its round.
    first: Option<(u64, f64)>,
    /// Last value that arrived, finite or not.
    last_arrived: Option<(u64, f64)>,
    /// Last finite value.
    last_finite: Option<(u64, f64)>,
    /// First round of the current streak of non-finite values.
    non_finite_since: Option<u64>,
    target_reached_round: Option<u64>,
    finite: u64,
    non_finite: u64,
}

impl Tracker {
    /// A tracker for `metric` with a window of `window` values.
    pub fn new(metric: Metric, window: usize) -> Self {
        Self {
            metric,
            window: Window::new(window),
            best: None,
            reference: None,
            last_improvement_round: None,
            first: None,
            last_arrived: None,
            last_finite: None,
            non_finite_since: None,
            target_reached_round: None,
            finite: 0,
            non_finite: 0,
        }
    }

    /// Whether `a` is better than `b` by more than `delta` (an absolute amount).
    #[inline]
    fn better_by(&self, a: f64, b: f64, delta: f64) -> bool {
        match self.metric {
            Metric::Loss => b - a > delta,
            Metric::Accuracy => a - b > delta,
        }
    }

    /// Whether `value` is at or beyond `target`.
    pub fn crosses(&self, value: f64, target: f64) -> bool {
        match self.metric {
            Metric::Loss => value <= target,
            Metric::Accuracy => value >= target,
        }
    }

    /// Adds the metric's value of `round`; returns whether it was an improvement.
    #[inline]
    pub fn push(&mut self, round: u64, value: f64, min_delta: f64, target: Option<f64>) -> bool {
        self.last_arrived = Some((round, value));
        if !value.is_finite() {
            self.non_finite += 1;
            self.non_finite_since.get_or_insert(round);
            return false;
        }
        self.non_finite_since = None;
        self.finite += 1;
        self.window.push(round, value);
        self.last_finite = Some((round, value));
        if self.first.is_none() {
            self.first = Some((round, value));
        }
        if self.best.is_none_or(|(_, best)| self.better_by(value, best, 0.0)) {
            self.best = Some((round, value));
        }
        if let Some(target) = target
            && self.target_reached_round.is_none()
            && self.crosses(value, target)
        {
            self.target_reached_round = Some(round);
        }
        let improved = match self.reference {
            None => true,
            Some(reference) => self.better_by(value, reference, min_delta * reference.abs()),
        };
        if improved {
            self.reference = Some(value);
            self.last_improvement_round = Some(round);
        }
        improved
    }

    /// The metric tracked.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Finite values seen.
    #[inline]
    pub fn finite_count(&self) -> u64 {
        self.finite
    }

    /// Non-finite values seen.
    pub fn non_finite_count(&self) -> u64 {
        self.non_finite
    }

    /// Whether any value, finite or not, arrived.
    #[inline]
    pub fn any_arrived(&self) -> bool {
        self.last_arrived.is_some()
    }

    /// Best value and its round.
    pub fn best(&self) -> Option<(u64, f64)> {
        self.best
    }

    /// First finite value and its round.
    #[inline]
    pub fn first(&self) -> Option<(u64, f64)> {
        self.first
    }

    /// Last finite value and its round.
    pub fn last_finite(&self) -> Option<(u64, f64)> {
        self.last_finite
    }

    /// Whether the last value that arrived is non-finite.
    #[inline]
    pub fn last_is_non_finite(&self) -> bool {
        self.last_arrived.is_some_and(|(_, v)| !v.is_finite())
    }

    /// First round of the current streak of non-finite values (`None` once a finite one arrives).
    pub fn non_finite_since(&self) -> Option<u64> {
        self.non_finite_since
    }

    /// Round of the last value that arrived.
    pub fn last_arrived_round(&self) -> Option<u64> {
        self.last_arrived.map(|(r, _)| r)
    }

    /// Round at which the best-so-far first crossed the target.
    #[inline]
    pub fn target_reached_round(&self) -> Option<u64> {
        self.target_reached_round
    }

    /// Round of the last improvement.
    pub fn last_improvement_round(&self) -> Option<u64> {
        self.last_improvement_round
    }

    /// `latest_round − round of the last improvement` (0 before any value).
    #[inline]
    pub fn rounds_without_improvement(&self, latest_round: u64) -> u64 {
        self.last_improvement_round
            .map_or(0, |r| latest_round.saturating_sub(r))
    }

    /// Whether the window is full.
    #[inline]
    pub fn warmed_up(&self) -> bool {
        self.window.is_full()
    }

    /// Improvement per round over the window (positive = better); `None` below two values.
    #[inline]
    pub fn rate(&self) -> Option<f64> {
        let (r0, first) = self.window.first()?;
        let (r1, last) = self.window.last()?;
        if r1 <= r0 {
            return None;
        }
        let change = match self.metric {
            Metric::Loss => first - last,
            Metric::Accuracy => last - first,
        };
        Some(change / (r1 - r0) as f64)
    }

    /// Sample variance of the window.
    pub fn variance(&self) -> Option<f64> {
        self.window.variance()
    }

    /// Mean of the window.
    #[inline]
    pub fn window_mean(&self) -> Option<f64> {
        self.window.mean()
    }

    /// Whether `|rate| / |mean(window)| < threshold`.
    #[inline]
    pub fn plateaued(&self, threshold: f64) -> bool {
        match (self.rate(), self.window_mean()) {
            (Some(rate), Some(mean)) if mean != 0.0 => (rate / mean).abs() < threshold,
            (Some(rate), Some(_)) => rate == 0.0,
            _ => false,
        }
    }

    /// Rounds until the target at the current rate, while the rate is positive.
    pub fn rounds_to_target(&self, target: f64) -> Option<u64> {
        let rate = self.rate().filter(|r| *r > 0.0)?;
        let (_, last) = self.last_finite?;
        let remaining = match self.metric {
            Metric::Loss => last - target,
            Metric::Accuracy => target - last,
        };
        if remaining <= 0.0 {
            return Some(0);
        }
        // A hair below the ceiling so 0.2 / 0.01 = 20.000000000000004 counts as 20 rounds.
        let rounds = (remaining / rate - 1e-9).ceil();
        (rounds.is_finite() && rounds < u64::MAX as f64).then_some(rounds as u64)
    }

    /// Whether accuracy collapsed to `chance` after having been well above it (see module docs).
    #[inline]
    pub fn collapsed_to(&self, chance: f64) -> bool {
        let (Some((_, best)), Some((_, last))) = (self.best, self.last_finite) else {
            return false;
        };
        let well_above = best - chance >= WELL_ABOVE_CHANCE * (1.0 - chance);
        well_above && last <= chance + COLLAPSE_FRACTION * (best - chance)
    }

    /// Heap bytes held (none: the window is a fixed ring).
    pub fn heap_bytes(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_steps_add_up_to_an_improvement() {
        let mut t = Tracker::new(Metric::Loss, 5);
        assert!(t.push(1, 1.0, 0.01, None), "the first value starts the reference");
        assert!(!t.push(2, 0.995, 0.01, None), "0.5 % is below the 1 % min delta");
        assert!(!t.push(3, 0.992, 0.01, None));
        assert!(t.push(4, 0.989, 0.01, None), "1.1 % below the reference 1.0");
        assert_eq!(t.rounds_without_improvement(9), 5);
        assert_eq!(t.best(), Some((4, 0.989)));
    }

    #[test]
    fn rate_is_per_round_and_positive_when_getting_better() {
        let mut t = Tracker::new(Metric::Accuracy, 3);
        for (r, v) in [(10, 0.5), (20, 0.6), (30, 0.7)] {
            t.push(r, v, 0.0, None);
        }
        assert!(
            (t.rate().expect("3 values") - 0.01).abs() < 1e-12,
            "0.2 over 20 rounds"
        );
        assert_eq!(t.rounds_to_target(0.9), Some(20));
    }

    #[test]
    fn collapse_needs_having_been_well_above_chance() {
        let mut t = Tracker::new(Metric::Accuracy, 3);
        for (r, v) in [(1, 0.1), (2, 0.25), (3, 0.1)] {
            t.push(r, v, 0.0, None);
        }
        assert!(
            !t.collapsed_to(0.1),
            "0.25 is not well above a chance of 0.1 (needs 0.325)"
        );
        t.push(4, 0.6, 0.0, None);
        t.push(5, 0.12, 0.0, None);
        assert!(t.collapsed_to(0.1), "0.12 ≤ 0.1 + 0.1 · 0.5");
    }
}
