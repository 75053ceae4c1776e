//! The rendered `/metrics` body. Each producer (a collector's sample loop, the event and statistics
//! ingest) renders its own section when its data changes; a scrape concatenates the sections once per
//! change and otherwise hands out the cached body, so scrapes cost a clone and never trigger sampling.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;

use crate::exposition::TextWriter;
use crate::metrics;

/// A part of the `/metrics` body, in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Training metrics from events.
    Training,
    /// Host metrics.
    Host,
    /// GPU metrics.
    Gpu,
    /// Kafka metrics (server role).
    Kafka,
    /// librdkafka statistics.
    Librdkafka,
    /// The agent's own metrics.
    Agent,
}

const SECTIONS: usize = 6;

impl Section {
    fn index(self) -> usize {
        self as usize
    }
}

/// The sections and the cached concatenation.
pub struct Snapshot {
    sections: [RwLock<Bytes>; SECTIONS],
    generation: AtomicU64,
    cache: RwLock<(u64, Bytes)>,
    agent: AgentSection,
}

/// What the agent section shows: info labels, per-collector status, dropped series.
struct AgentSection {
    info: Vec<(&'static str, String)>,
    collectors: Mutex<BTreeMap<&'static str, CollectorStatus>>,
    dropped: Mutex<BTreeMap<&'static str, u64>>,
}

/// The outcome of a collector's latest sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CollectorStatus {
    /// How long it took.
    pub duration: Duration,
    /// Whether it succeeded.
    pub success: bool,
    /// Samples attempted so far.
    pub attempts: u64,
}

impl Snapshot {
    /// An empty snapshot; `info` becomes the labels of `flmon_agent_info`.
    pub fn new(info: Vec<(&'static str, String)>) -> Self {
        let snapshot = Snapshot {
            sections: Default::default(),
            generation: AtomicU64::new(1),
            cache: RwLock::new((0, Bytes::new())),
            agent: AgentSection {
                info,
                collectors: Mutex::default(),
                dropped: Mutex::default(),
            },
        };
        snapshot.render_agent();
        snapshot
    }

    /// Replaces a section's text.
    pub fn publish(&self, section: Section, text: String) {
        {
            let mut slot = self.sections[section.index()]
                .write()
                .unwrap_or_else(|e| e.into_inner());
            *slot = Bytes::from(text);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current `/metrics` body.
    pub fn body(&self) -> Bytes {
        let generation = self.generation.load(Ordering::Acquire);
        {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            if cache.0 == generation {
                return cache.1.clone();
            }
        }
        let mut body = Vec::with_capacity(64 * 1024);
        for slot in &self.sections {
            body.extend_from_slice(&slot.read().unwrap_or_else(|e| e.into_inner()));
        }
        let body = Bytes::from(body);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        // A newer body may have been stored meanwhile; keep whichever is newer.
        if cache.0 < generation {
            *cache = (generation, body.clone());
        }
        body
    }

    /// Records a collector's sample outcome and re-renders the agent section.
    pub fn record_collector(&self, name: &'static str, duration: Duration, success: bool) {
        {
            let mut collectors = self.agent.collectors.lock().unwrap_or_else(|e| e.into_inner());
            let status = collectors.entry(name).or_default();
            status.duration = duration;
            status.success = success;
            status.attempts += 1;
        }
        self.render_agent();
    }

    /// The latest outcome of each collector that has run.
    pub fn collector_statuses(&self) -> BTreeMap<&'static str, CollectorStatus> {
        self.agent
            .collectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts `n` samples of `family` left out by a cardinality cap.
    pub fn count_dropped(&self, family: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        *self
            .agent
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(family)
            .or_default() += n;
        self.render_agent();
    }

    fn render_agent(&self) {
        let mut w = TextWriter::new();
        w.family(&metrics::AGENT_INFO, |f| {
            let labels: Vec<(&str, &str)> = self.agent.info.iter().map(|(k, v)| (*k, v.as_str())).collect();
            f.sample(&labels, 1.0);
        });
        let collectors = self.collector_statuses();
        w.family(&metrics::COLLECTOR_DURATION, |f| {
            for (name, s) in &collectors {
                f.sample(&[("collector", name)], s.duration.as_secs_f64());
            }
        });
        w.family(&metrics::COLLECTOR_SUCCESS, |f| {
            for (name, s) in &collectors {
                f.sample(&[("collector", name)], if s.success { 1.0 } else { 0.0 });
            }
        });
        let dropped = self
            .agent
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        w.family(&metrics::DROPPED_SERIES, |f| {
            for (family, n) in &dropped {
                f.sample(&[("family", family)], *n as f64);
            }
        });
        self.publish(Section::Agent, w.finish());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_cached_until_a_section_changes() {
        let s = Snapshot::new(vec![("version", "1".into())]);
        let a = s.body();
        let b = s.body();
        assert_eq!(a.as_ptr(), b.as_ptr(), "second scrape reuses the cached body");
        s.publish(Section::Host, "x 1\n".into());
        let c = s.body();
        assert!(c.starts_with(b"x 1\n"));
        assert!(String::from_utf8_lossy(&c).contains("flmon_agent_info{version=\"1\"} 1"));
    }

    #[test]
    fn dropped_series_are_counted_per_family() {
        let s = Snapshot::new(vec![]);
        s.count_dropped("fl_client_loss", 2);
        s.count_dropped("fl_client_loss", 1);
        let body = String::from_utf8(s.body().to_vec()).unwrap();
        assert!(
            body.contains("flmon_agent_dropped_series_total{family=\"fl_client_loss\"} 3"),
            "{body}"
        );
    }
}
