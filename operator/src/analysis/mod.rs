//! Training analysis: convergence, stalls, divergence, stragglers and client trends (pure, no I/O).
//!
//! Input is the agents' `/v1/history` documents ([`history`]); [`Analyzer`] consumes them
//! incrementally with exact running aggregates and bounded downsampled series, and
//! [`Analyzer::analysis`] answers with the state of the current run. Every formula is written
//! where it is computed: [`convergence`] (state machine, rate, variance, divergence),
//! [`clients`] (consistency, participation, trend, stragglers), [`stats`] (running statistics).

pub mod analyzer;
pub mod clients;
pub mod config;
pub mod convergence;
pub mod history;
pub mod series;
pub mod stats;

pub use analyzer::{Analysis, Analyzer, Condition, Conditions, Convergence, DataQuality, Transition};
pub use clients::{ClientSummary, Trend};
pub use config::{AnalysisConfig, ConfigError, Metric};
pub use convergence::State;
pub use history::{
    ClientUpdate, History, HistoryError, KafkaSample, RoundEnd, SystemSample, merge, parse_history,
};

/// Analyses whole history documents at once (merged as the operator does), e.g. saved ones.
///
/// # Errors
/// An invalid setting.
pub fn analyze(documents: &[History], config: AnalysisConfig) -> Result<Analyzer, ConfigError> {
    let mut analyzer = Analyzer::new(config)?;
    analyzer.ingest_merged(&merge(documents));
    Ok(analyzer)
}
