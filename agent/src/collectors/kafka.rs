//! The Kafka collector (server-role agents only, so a job's topics and groups are counted once):
//! per-topic message rates from high-watermark increases, an estimated byte rate, sampled
//! end-to-end latency from message timestamps, and the lag of the watched consumer groups.
//!
//! Lag comes from the broker without joining or disturbing the groups: for each watched group the
//! agent keeps a consumer configured with that `group.id` that never subscribes, never polls a
//! group assignment and never commits; it only sends OffsetFetch requests (`committed_offsets`),
//! which read the group's committed offsets and leave its membership and generation untouched.
//! A partition without a committed offset has unknown lag (absent, counted); a committed offset
//! below the log start counts from the log start; lag is never negative. The latency sampler and
//! the events-topic reader use manual assignment and no group at all. librdkafka reconnects by
//! itself, so after a broker restart the next sample succeeds again. (librdkafka's manual
//! assignment still needs a `group.id`: [`UNJOINED_GROUP`], never joined nor committed to.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{Collector, HistoryUpdate, Output, SampleTime};
use crate::app::Shared;
use crate::config::{Config, Role};
use crate::exposition::TextWriter;
use crate::history::KafkaRecord;
use crate::metrics;
use crate::training::Source;

/// Timeout of each broker request; a down broker fails the sample after this, not after many.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest time spent waiting for fresh messages to time per sample.
const LATENCY_WINDOW: Duration = Duration::from_millis(1000);

/// `group.id` of the agent's manually assigned consumers (latency sampler, events reader).
pub const UNJOINED_GROUP: &str = "flmon-agent-manual-assignment";

/// Connection settings shared by the agent's Kafka clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Security protocol.
    pub security_protocol: Option<String>,
    /// SASL mechanism.
    pub sasl_mechanism: Option<String>,
    /// SASL username.
    pub sasl_username: Option<String>,
    /// SASL password.
    pub sasl_password: Option<String>,
}

impl KafkaSettings {
    /// The settings of `config`, when Kafka is configured.
    pub fn from_config(config: &Config) -> Option<Self> {
        Some(KafkaSettings {
            bootstrap: config
                .kafka_bootstrap_servers
                .clone()
                .filter(|b| !b.trim().is_empty())?,
            security_protocol: config.kafka_security_protocol.clone(),
            sasl_mechanism: config.kafka_sasl_mechanism.clone(),
            sasl_username: config.kafka_sasl_username.clone(),
            sasl_password: config.kafka_sasl_password.clone(),
        })
    }

    /// A SASL mechanism needs both credentials; the injected ones come from an optional
    /// Secret reference, so a missing Secret or key shows here, not as a pod that never starts.
    fn check_credentials(&self) -> Result<(), String> {
        use flmon_crds::names::env;
        let Some(mechanism) = &self.sasl_mechanism else {
            return Ok(());
        };
        let missing: Vec<&str> = [
            (env::KAFKA_SASL_USERNAME, &self.sasl_username),
            (env::KAFKA_SASL_PASSWORD, &self.sasl_password),
        ]
        .into_iter()
        .filter(|(_, value)| value.as_deref().is_none_or(str::is_empty))
        .map(|(name, _)| name)
        .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "SASL mechanism {mechanism} needs credentials but {} {} not set (in a pod: the Secret \
             named by spec.kafka.sasl.secretRef is missing or lacks the key)",
            missing.join(" and "),
            if missing.len() == 1 { "is" } else { "are" }
        ))
    }

    /// A consumer; `group` sets `group.id` (only ever used for OffsetFetch), else
    /// [`UNJOINED_GROUP`] for manual assignment.
    fn consumer(&self, purpose: &str, group: Option<&str>) -> Result<BaseConsumer, String> {
        self.check_credentials()?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", format!("flmon-agent-{purpose}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("socket.timeout.ms", "10000")
            .set("fetch.wait.max.ms", "100")
            .set("reconnect.backoff.max.ms", "2000")
            // The agent reads a message per partition per sample and small events: small fetch
            // buffers keep its resident memory small (librdkafka's defaults prefetch 64 MiB).
            .set("queued.max.messages.kbytes", "1024")
            .set("fetch.max.bytes", "1048576")
            .set("max.partition.fetch.bytes", "262144")
            // No KIP-714 telemetry push: it is not wanted from a monitor, and its per-broker
            // histograms cost about 100 KiB of memory per broker connection.
            .set("enable.metrics.push", "false")
            .set("log_level", "3");
        // librdkafka's assign() needs some group.id even for manual assignment; this one is never
        // joined (no subscribe) and never committed to, so it never exists on the broker.
        c.set("group.id", group.unwrap_or(UNJOINED_GROUP));
        if let Some(p) = &self.security_protocol {
            c.set("security.protocol", p);
        }
        if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p);
        }
        // The error names the setting librdkafka rejected, never the password's value.
        c.create()
            .map_err(|e| format!("cannot create the Kafka {purpose} client: {e}"))
    }
}

/// What the collector watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaWatch {
    /// Topics.
    pub topics: Vec<String>,
    /// Consumer groups.
    pub groups: Vec<String>,
    /// Per-partition series exported at most.
    pub max_partitions: usize,
}

/// Builds the collector: only in the server role and with bootstrap servers configured.
///
/// # Errors
/// When a Kafka client cannot be created (a bad setting).
pub fn build(config: &Config) -> Result<Option<Box<dyn Collector>>, String> {
    if config.role != Role::Server {
        tracing::info!("Kafka metrics are collected by the server pod's agent only");
        return Ok(None);
    }
    let Some(settings) = KafkaSettings::from_config(config) else {
        tracing::info!("no Kafka bootstrap servers configured: Kafka metrics are off");
        return Ok(None);
    };
    let watch = KafkaWatch {
        topics: config
            .kafka_topics
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect(),
        groups: config
            .kafka_consumer_groups
            .iter()
            .filter(|g| !g.is_empty())
            .cloned()
            .collect(),
        max_partitions: config.max_partitions,
    };
    Ok(Some(Box::new(KafkaCollector::new(&settings, watch)?)))
}

/// A partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// Log start offset (low watermark).
    pub low: i64,
    /// Offset of the next message written (high watermark).
    pub high: i64,
}

/// One sample's view of the brokers.
#[derive(Debug, Clone, Default)]
struct View {
    /// Watched topics the brokers do not have, with why.
    missing: BTreeMap<String, String>,
    partitions: BTreeMap<(String, i32), Watermarks>,
    committed: BTreeMap<String, BTreeMap<(String, i32), Option<i64>>>,
}

/// The Kafka collector.
pub struct KafkaCollector {
    watch: KafkaWatch,
    /// Metadata, watermarks, and the latency sampler's manual assignment.
    meta: BaseConsumer,
    groups: Vec<(String, BaseConsumer)>,
    previous: Option<(f64, BTreeMap<String, i64>)>,
    previous_highs: BTreeMap<(String, i32), i64>,
    mean_size: HashMap<String, f64>,
    /// Watched topics last seen missing (logged when that changes).
    reported_missing: BTreeSet<String>,
}

impl KafkaCollector {
    /// Creates the clients (no broker connection is needed yet).
    ///
    /// # Errors
    /// When librdkafka rejects a setting.
    pub fn new(settings: &KafkaSettings, watch: KafkaWatch) -> Result<Self, String> {
        let groups = watch
            .groups
            .iter()
            .map(|g| Ok((g.clone(), settings.consumer("offsets", Some(g))?)))
            .collect::<Result<_, String>>()?;
        Ok(KafkaCollector {
            meta: settings.consumer("metadata", None)?,
            groups,
            watch,
            previous: None,
            previous_highs: BTreeMap::new(),
            mean_size: HashMap::new(),
            reported_missing: BTreeSet::new(),
        })
    }

    /// Logs a watched topic when it goes missing and when it is back: once per change, not at
    /// every sample.
    fn report_missing(&mut self, missing: &BTreeMap<String, String>) {
        for (topic, why) in missing {
            if !self.reported_missing.contains(topic) {
                tracing::warn!(topic = %topic, reason = %why, "a watched Kafka topic is missing: no numbers for it until it exists");
            }
        }
        for topic in &self.reported_missing {
            if !missing.contains_key(topic) {
                tracing::info!(topic = %topic, "the watched Kafka topic exists now");
            }
        }
        self.reported_missing = missing.keys().cloned().collect();
    }

    fn read_view(&self) -> Result<View, String> {
        let mut view = View::default();
        for topic in &self.watch.topics {
            let md = self
                .meta
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(|e| format!("cannot read metadata of topic {topic}: {e}"))?;
            let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                view.missing
                    .insert(topic.clone(), "not in the brokers' metadata".to_owned());
                continue;
            };
            if let Some(error) = t.error() {
                // The topic does not exist (yet) or its name is invalid: no numbers for it.
                view.missing
                    .insert(topic.clone(), format!("{:?}", RDKafkaErrorCode::from(error)));
                continue;
            }
            for p in t.partitions() {
                let (low, high) = self
                    .meta
                    .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
                    .map_err(|e| format!("cannot read watermarks of {topic}/{}: {e}", p.id()))?;
                view.partitions
                    .insert((topic.clone(), p.id()), Watermarks { low, high });
            }
        }
        for (group, consumer) in &self.groups {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in view.partitions.keys() {
                tpl.add_partition(topic, *partition);
            }
            let mut offsets = BTreeMap::new();
            if tpl.count() > 0 {
                let committed = consumer
                    .committed_offsets(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| format!("cannot read committed offsets of group {group}: {e}"))?;
                for e in committed.elements() {
                    let known = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Some(o),
                        _ => None,
                    };
                    offsets.insert((e.topic().to_owned(), e.partition()), known);
                }
            }
            view.committed.insert(group.clone(), offsets);
        }
        Ok(view)
    }

    /// Waits up to [`LATENCY_WINDOW`] for new messages on partitions that grew, and returns per
    /// topic the largest latency seen and the mean size of the sampled messages.
    fn sample_latency(&mut self, view: &View) -> BTreeMap<String, (f64, f64)> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), w) in &view.partitions {
            let grew = self
                .previous_highs
                .get(&(topic.clone(), *partition))
                .is_none_or(|h| w.high > *h);
            if grew && tpl.add_partition_offset(topic, *partition, Offset::End).is_err() {
                continue;
            }
        }
        self.previous_highs = view.partitions.iter().map(|(k, w)| (k.clone(), w.high)).collect();
        let mut out: BTreeMap<String, (f64, f64, u32)> = BTreeMap::new();
        if tpl.count() == 0 || self.meta.assign(&tpl).is_err() {
            return BTreeMap::new();
        }
        let wanted = tpl.count();
        let mut seen = std::collections::HashSet::new();
        let deadline = Instant::now() + LATENCY_WINDOW;
        while seen.len() < wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(Ok(msg)) = self.meta.poll(left) else {
                continue;
            };
            let arrived_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if !seen.insert((msg.topic().to_owned(), msg.partition())) {
                continue;
            }
            let Some(ts) = msg.timestamp().to_millis() else {
                continue;
            };
            let latency = ((arrived_ms - ts) as f64 / 1000.0).max(0.0);
            let size = (msg.payload_len() + msg.key_len()) as f64;
            let e = out.entry(msg.topic().to_owned()).or_insert((0.0, 0.0, 0));
            e.0 = e.0.max(latency);
            e.1 += size;
            e.2 += 1;
        }
        let _ = self.meta.unassign();
        out.into_iter()
            .map(|(t, (lat, size, n))| (t, (lat, size / f64::from(n.max(1)))))
            .collect()
    }
}

impl Collector for KafkaCollector {
    fn sample(&mut self, now: SampleTime) -> Output {
        let view = match self.read_view() {
            Ok(v) => v,
            Err(e) => {
                // Stale numbers are worse than none: only `up 0` until the brokers answer again.
                let mut w = TextWriter::new();
                w.family(&metrics::KAFKA_UP, |f| f.sample(&[], 0.0));
                return Output {
                    text: w.finish(),
                    error: Some(e),
                    ..Output::default()
                };
            }
        };
        self.report_missing(&view.missing);
        let latency = self.sample_latency(&view);
        for (topic, (_, size)) in &latency {
            self.mean_size.insert(topic.clone(), *size);
        }
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        for ((topic, _), w) in &view.partitions {
            *totals.entry(topic.clone()).or_default() += w.high.max(0);
        }
        let rates: BTreeMap<String, f64> = match &self.previous {
            Some((t0, before)) if now.monotonic > *t0 => totals
                .iter()
                .filter_map(|(topic, n)| {
                    let b = before.get(topic)?;
                    // A topic recreated (watermarks went back) has no rate this time.
                    (n >= b).then(|| (topic.clone(), (n - b) as f64 / (now.monotonic - t0)))
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        self.previous = Some((now.monotonic, totals.clone()));

        let mut w = TextWriter::new();
        w.family(&metrics::KAFKA_UP, |f| f.sample(&[], 1.0));
        w.family(&metrics::KAFKA_TOPIC_UP, |f| {
            for topic in &self.watch.topics {
                f.sample(
                    &[("topic", topic)],
                    if view.missing.contains_key(topic) {
                        0.0
                    } else {
                        1.0
                    },
                );
            }
        });
        w.family(&metrics::KAFKA_TOPIC_MESSAGES, |f| {
            for (topic, n) in &totals {
                f.sample(&[("topic", topic)], *n as f64);
            }
        });
        w.family(&metrics::KAFKA_TOPIC_MESSAGE_RATE, |f| {
            for (topic, r) in &rates {
                f.sample(&[("topic", topic)], *r);
            }
        });
        let byte_rates: BTreeMap<&String, f64> = rates
            .iter()
            .filter_map(|(t, r)| Some((t, r * self.mean_size.get(t)?)))
            .collect();
        w.family(&metrics::KAFKA_TOPIC_BYTE_RATE, |f| {
            for (topic, r) in &byte_rates {
                f.sample(&[("topic", topic)], *r);
            }
        });
        w.family(&metrics::KAFKA_TOPIC_LATENCY, |f| {
            for (topic, (lat, _)) in &latency {
                f.sample(&[("topic", topic)], *lat);
            }
        });
        let cap = self.watch.max_partitions;
        let mut dropped = 0u64;
        let partitions: Vec<_> = view.partitions.iter().take(cap).collect();
        dropped += view.partitions.len().saturating_sub(cap) as u64 * 2;
        w.family(&metrics::KAFKA_HIGH_WATERMARK, |f| {
            for ((topic, p), wm) in &partitions {
                f.sample(&[("topic", topic), ("partition", &p.to_string())], wm.high as f64);
            }
        });
        w.family(&metrics::KAFKA_LOW_WATERMARK, |f| {
            for ((topic, p), wm) in &partitions {
                f.sample(&[("topic", topic), ("partition", &p.to_string())], wm.low as f64);
            }
        });

        let mut groups = Vec::new();
        let mut per_partition = Vec::new();
        for (group, offsets) in &view.committed {
            let consumed: std::collections::HashSet<&String> = offsets
                .iter()
                .filter(|(_, o)| o.is_some())
                .map(|((t, _), _)| t)
                .collect();
            let mut sum: Option<u64> = None;
            let mut unknown = 0u64;
            for ((topic, partition), committed) in offsets {
                // Topics the group has never committed on are not its topics.
                if !consumed.is_empty() && !consumed.contains(topic) {
                    continue;
                }
                let Some(wm) = view.partitions.get(&(topic.clone(), *partition)) else {
                    continue;
                };
                match committed {
                    Some(c) => {
                        let lag = lag(*c, *wm);
                        *sum.get_or_insert(0) += lag;
                        per_partition.push((group.clone(), topic.clone(), *partition, *c, lag));
                    }
                    None => unknown += 1,
                }
            }
            groups.push(GroupLag {
                group: group.clone(),
                lag: sum,
                unknown_partitions: unknown,
            });
        }
        dropped += per_partition.len().saturating_sub(cap) as u64 * 2;
        per_partition.truncate(cap);
        w.family(&metrics::KAFKA_GROUP_PARTITION_LAG, |f| {
            for (group, topic, p, _, lag) in &per_partition {
                let labels = [
                    ("consumergroup", group.as_str()),
                    ("topic", topic),
                    ("partition", &p.to_string()),
                ];
                f.sample(&labels, *lag as f64);
            }
        });
        w.family(&metrics::KAFKA_GROUP_COMMITTED, |f| {
            for (group, topic, p, c, _) in &per_partition {
                let labels = [
                    ("consumergroup", group.as_str()),
                    ("topic", topic),
                    ("partition", &p.to_string()),
                ];
                f.sample(&labels, *c as f64);
            }
        });
        w.family(&metrics::KAFKA_GROUP_LAG, |f| {
            for g in &groups {
                if let Some(lag) = g.lag {
                    f.sample(&[("consumergroup", &g.group)], lag as f64);
                }
            }
        });
        w.family(&metrics::KAFKA_GROUP_UNKNOWN, |f| {
            for g in &groups {
                f.sample(&[("consumergroup", &g.group)], g.unknown_partitions as f64);
            }
        });
        let mut records: Vec<KafkaRecord> = totals
            .keys()
            .map(|t| KafkaRecord {
                time: now.unix,
                topic: Some(t.clone()),
                messages_per_second: rates.get(t).copied(),
                bytes_per_second: byte_rates.get(t).copied(),
                latency_seconds: latency.get(t).map(|(l, _)| *l),
                ..KafkaRecord::default()
            })
            .collect();
        records.extend(groups.into_iter().map(|g| KafkaRecord {
            time: now.unix,
            group: Some(g.group),
            lag: g.lag,
            unknown_partitions: Some(g.unknown_partitions),
            ..KafkaRecord::default()
        }));
        Output {
            text: w.finish(),
            error: None,
            history: vec![HistoryUpdate::Kafka(records)],
            dropped: if dropped > 0 {
                vec![(metrics::KAFKA_HIGH_WATERMARK.name, dropped)]
            } else {
                Vec::new()
            },
        }
    }
}

/// A watched group's lag in one sample.
struct GroupLag {
    group: String,
    lag: Option<u64>,
    unknown_partitions: u64,
}

/// Lag of a committed offset: messages from the committed offset (raised to the log start, as
/// older messages are gone) to the high watermark, never negative.
pub fn lag(committed: i64, w: Watermarks) -> u64 {
    let position = committed.max(w.low.max(0));
    u64::try_from(w.high - position).unwrap_or(0)
}

/// Reads training events from the events topic by manual assignment (no group), from its end,
/// until `stop` is set. Each message is one batch (object, array or NDJSON).
///
/// # Errors
/// When the consumer cannot be created.
pub fn spawn_events_reader(
    settings: &KafkaSettings,
    topic: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let consumer = settings.consumer("events", None)?;
    std::thread::Builder::new()
        .name("kafka-events".into())
        .spawn(move || {
            let mut assigned: usize = 0;
            let mut last_warning: Option<Instant> = None;
            let mut next_refresh = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next_refresh {
                    // New partitions (and a topic created after the agent started) are picked up;
                    // until the topic is readable (it may exist without a leader yet), soon.
                    let pause = if assigned == 0 { 1 } else { 30 };
                    next_refresh = Instant::now() + Duration::from_secs(pause);
                    if let Ok(md) = consumer.fetch_metadata(Some(&topic), REQUEST_TIMEOUT)
                        && let Some(t) = md.topics().iter().find(|t| t.name() == topic && t.error().is_none())
                        && t.partitions().len() != assigned
                    {
                        let mut tpl = TopicPartitionList::new();
                        let positions = consumer.position().unwrap_or_default();
                        for p in t.partitions() {
                            // Partitions already read keep their position; new ones start at the end.
                            let offset = positions
                                .find_partition(&topic, p.id())
                                .map(|e| e.offset())
                                .filter(|o| matches!(o, Offset::Offset(_)))
                                .unwrap_or(Offset::End);
                            let _ = tpl.add_partition_offset(&topic, p.id(), offset);
                        }
                        match consumer.assign(&tpl) {
                            Ok(()) => {
                                assigned = t.partitions().len();
                                tracing::info!(topic = %topic, partitions = assigned, "reading training events from Kafka");
                            }
                            Err(e) => tracing::warn!(topic = %topic, error = %e, "cannot assign the events topic"),
                        }
                    }
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(msg)) => {
                        // Counted by source in flmon_agent_event_batches_total; logged at most once a minute.
                        if let Some(payload) = msg.payload()
                            && let Err(errors) = shared.ingest_events(payload, Source::Kafka)
                            && last_warning.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(60))
                        {
                            last_warning = Some(Instant::now());
                            let first = errors.first().map(|e| serde_json::to_string(e).unwrap_or_default());
                            tracing::warn!(topic = %topic, offset = msg.offset(), first_error = ?first, "rejected a training-event message");
                        }
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "events topic read failed"),
                    None => {}
                }
            }
        })
        .map_err(|e| format!("cannot start the events reader: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_clamped_at_the_log_start_and_never_negative() {
        let w = Watermarks {
            low: 18_376_014,
            high: 19_063_471,
        };
        assert_eq!(lag(16_571_473, w), 687_457);
        assert_eq!(lag(19_063_000, w), 471);
        assert_eq!(lag(19_063_500, w), 0);
        assert_eq!(lag(0, Watermarks { low: -1, high: 5 }), 5);
    }

    #[test]
    fn sasl_without_its_credentials_names_what_is_missing_and_never_the_password() {
        let settings = |user: Option<&str>, password: Option<&str>| KafkaSettings {
            bootstrap: "127.0.0.1:9".into(),
            security_protocol: Some("SASL_PLAINTEXT".into()),
            sasl_mechanism: Some("PLAIN".into()),
            sasl_username: user.map(Into::into),
            sasl_password: password.map(Into::into),
        };
        let error = settings(None, None)
            .consumer("watermarks", None)
            .map(|_| ())
            .expect_err("no credentials");
        assert!(
            error.contains("FLMON_KAFKA_SASL_USERNAME and FLMON_KAFKA_SASL_PASSWORD are not set"),
            "{error}"
        );
        assert!(error.contains("spec.kafka.sasl.secretRef"), "{error}");
        let error = settings(Some("fl"), Some(""))
            .consumer("watermarks", None)
            .map(|_| ())
            .expect_err("empty password");
        assert!(error.contains("FLMON_KAFKA_SASL_PASSWORD is not set"), "{error}");
        assert!(!error.contains("FLMON_KAFKA_SASL_USERNAME"), "{error}");
        // With both, the client is created (librdkafka connects lazily).
        let secret = "s3cret-value";
        assert!(
            settings(Some("fl"), Some(secret))
                .consumer("watermarks", None)
                .is_ok()
        );
        // Without a mechanism nothing is asked for.
        let mut plain = settings(None, None);
        plain.sasl_mechanism = None;
        plain.security_protocol = None;
        assert!(plain.consumer("watermarks", None).is_ok());
    }
}
