//! Sampled collectors behind one small trait, the registry table that builds them from the
//! configuration, and the loop that runs each on its own thread: a slow or failing collector (a
//! broker that does not answer) delays and fails only itself, never a scrape or another collector.

pub mod cgroup;
pub mod gpu;
pub mod host;
pub mod kafka;
pub mod procfs;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::app::Shared;
use crate::config::{CollectorName, Config};
use crate::history::{GpuRecord, KafkaRecord, SystemRecord};
use crate::snapshot::Section;

/// When a sample is taken: monotonic seconds (for rates) and Unix seconds (for history).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleTime {
    /// Seconds on a monotonic clock.
    pub monotonic: f64,
    /// Seconds since the Unix epoch.
    pub unix: f64,
}

impl SampleTime {
    /// The time now.
    pub fn now(origin: Instant) -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        SampleTime {
            monotonic: origin.elapsed().as_secs_f64(),
            unix,
        }
    }
}

/// What the history gets from a sample.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryUpdate {
    /// A host sample (GPU readings are added from the latest GPU sample).
    System(SystemRecord),
    /// The latest GPU readings.
    Gpus(Vec<GpuRecord>),
    /// A Kafka sample: one record per topic and per group.
    Kafka(Vec<KafkaRecord>),
}

/// The result of one sample. A collector always renders what it could; `error` makes the sample
/// count as failed (`flmon_agent_collector_success 0`) and is logged when it changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    /// Exposition text of this collector's section.
    pub text: String,
    /// Why the sample failed, if it did.
    pub error: Option<String>,
    /// Records for the history.
    pub history: Vec<HistoryUpdate>,
    /// Samples left out by cardinality caps, by family.
    pub dropped: Vec<(&'static str, u64)>,
}

/// A sampled collector.
pub trait Collector: Send {
    /// Takes one sample.
    fn sample(&mut self, now: SampleTime) -> Output;

    /// Releases what the collector holds (NVML, Kafka clients) at shutdown.
    fn shutdown(&mut self) {}
}

/// Builds a collector from the configuration; `Ok(None)` when it has nothing to do in this
/// configuration (Kafka in a client pod), with the reason logged once.
pub type Build = fn(&Config) -> Result<Option<Box<dyn Collector>>, String>;

/// One row of the registry table.
pub struct Entry {
    /// Switch name.
    pub name: CollectorName,
    /// Where its text goes in `/metrics`.
    pub section: Section,
    /// How to build it.
    pub build: Build,
}

/// The sampled collectors. (`librdkafka` and `events` are fed by the ingest listener.)
pub const REGISTRY: &[Entry] = &[
    Entry {
        name: CollectorName::Host,
        section: Section::Host,
        build: host::build,
    },
    Entry {
        name: CollectorName::Gpu,
        section: Section::Gpu,
        build: gpu::build,
    },
    Entry {
        name: CollectorName::Kafka,
        section: Section::Kafka,
        build: kafka::build,
    },
];

/// Runs `collector` every `interval` on its own thread until `stop` is dropped or signalled.
pub fn spawn(
    entry: &Entry,
    mut collector: Box<dyn Collector>,
    interval: Duration,
    shared: Arc<Shared>,
    stop: Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    let name = entry.name.as_str();
    let section = entry.section;
    std::thread::Builder::new()
        .name(format!("collector-{name}"))
        .spawn(move || {
            let mut last_error: Option<String> = None;
            loop {
                let started = Instant::now();
                let now = SampleTime::now(shared.origin);
                let output =
                    catch_unwind(AssertUnwindSafe(|| collector.sample(now))).unwrap_or_else(|_| Output {
                        error: Some("the collector panicked; it will be retried at the next sample".into()),
                        ..Output::default()
                    });
                let elapsed = started.elapsed();
                match (&output.error, &last_error) {
                    (Some(e), Some(l)) if e == l => {}
                    (Some(e), _) => tracing::warn!(collector = name, error = %e, "sample failed"),
                    (None, Some(_)) => tracing::info!(collector = name, "sample succeeded again"),
                    (None, None) => {}
                }
                last_error = output.error.clone();
                shared.apply_output(name, section, output, elapsed);
                match stop.recv_timeout(interval.saturating_sub(started.elapsed())) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            collector.shutdown();
        })
}
