//! Bounded ring buffers of rounds, client updates, system samples and Kafka samples, served as
//! `/v1/history?since=&limit=`. Every record gets a sequence number from one counter, so a poller
//! asks for `since=<nextSeq of its last answer>` and pages through records in the order they were
//! recorded. Non-finite numbers are written as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
//! The document's own fields are camelCase (`schemaVersion`, `nextSeq`); the records' fields are
//! snake_case, exactly as the training events that carried them (`global_loss`, `run_id`).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// Version of the `/v1/history` document; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Serializes an optional number, writing non-finite values as Python spells them.
pub(crate) fn opt_num<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) if n.is_finite() => s.serialize_f64(*n),
        Some(n) => s.serialize_str(crate::json::non_finite_name(*n)),
        None => s.serialize_none(),
    }
}

/// An optional number in 8 bytes where `Option<f64>` takes 16 (the client-update ring holds
/// 10 000 records by default). Absent is a NaN payload no parsed value carries: JSON's `NaN`
/// parses to the canonical quiet NaN. Serialized as [`opt_num`] serializes an `Option<f64>`.
#[derive(Clone, Copy)]
pub struct OptNum(u64);

/// The bits of an absent [`OptNum`]: a signalling NaN with a payload of its own.
const ABSENT: u64 = 0x7ff4_0000_0000_f1a6;

impl OptNum {
    /// The number, if present.
    pub fn get(self) -> Option<f64> {
        (self.0 != ABSENT).then(|| f64::from_bits(self.0))
    }

    /// Whether the number is absent.
    pub fn is_none(&self) -> bool {
        self.0 == ABSENT
    }
}

impl From<Option<f64>> for OptNum {
    fn from(v: Option<f64>) -> Self {
        // Any NaN is kept as the canonical one, so no value can turn into "absent".
        OptNum(v.map_or(ABSENT, |n| {
            if n.is_nan() {
                f64::NAN.to_bits()
            } else {
                n.to_bits()
            }
        }))
    }
}

impl PartialEq for OptNum {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl std::fmt::Debug for OptNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl Serialize for OptNum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        opt_num(&self.get(), s)
    }
}

/// A `round_end` as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundRecord {
    /// Sequence number.
    pub seq: u64,
    /// Effective run id (the event's `run_id`, else the pod uid, `#<n>` appended from segment 2 on).
    pub run_id: Arc<str>,
    /// Round number.
    pub round: u64,
    /// Unix time (the event's `time`, else when it arrived).
    pub time: f64,
    /// Global loss.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub global_loss: Option<f64>,
    /// Global accuracy (0–1).
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub global_accuracy: Option<f64>,
    /// Participants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<u64>,
    /// Expected participants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_participants: Option<u64>,
    /// Duration in seconds.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Learning rate.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Gradient norm.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub gradient_norm: Option<f64>,
    /// Weight change norm.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub weight_change_norm: Option<f64>,
    /// Messages sent in the round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_sent: Option<u64>,
    /// True when this record replaces an earlier one with the same key (the later `seq` wins).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replaces: bool,
}

/// A `client_update` as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientRecord {
    /// Sequence number.
    pub seq: u64,
    /// Effective run id.
    pub run_id: Arc<str>,
    /// Round number.
    pub round: u64,
    /// Client id.
    pub client_id: Arc<str>,
    /// Unix time.
    pub time: f64,
    /// Local loss.
    #[serde(skip_serializing_if = "OptNum::is_none")]
    pub loss: OptNum,
    /// Local accuracy (0–1).
    #[serde(skip_serializing_if = "OptNum::is_none")]
    pub accuracy: OptNum,
    /// Local training seconds.
    #[serde(skip_serializing_if = "OptNum::is_none")]
    pub training_seconds: OptNum,
    /// Samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// True when this record replaces an earlier one with the same key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replaces: bool,
}

/// One GPU in a system sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuRecord {
    /// NVML uuid.
    pub uuid: String,
    /// NVML index.
    pub index: u32,
    /// Utilization in percent.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f64>,
    /// Memory used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Memory total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
}

/// A host (+ GPU) sample.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SystemRecord {
    /// Sequence number.
    pub seq: u64,
    /// Unix time.
    pub time: f64,
    /// CPU usage in percent of the limit.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Memory usage in percent of the limit.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    /// CPU usage in cores.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    /// Memory usage in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU limit in cores.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub cpu_limit_cores: Option<f64>,
    /// Memory limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Network receive rate, all devices but loopback.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub network_rx_bytes_per_second: Option<f64>,
    /// Network transmit rate, all devices but loopback.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub network_tx_bytes_per_second: Option<f64>,
    /// Disk read rate.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub disk_read_bytes_per_second: Option<f64>,
    /// Disk write rate.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub disk_write_bytes_per_second: Option<f64>,
    /// This pod's GPUs at the latest GPU sample.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuRecord>,
}

/// A Kafka sample of one topic (`topic` set) or one consumer group (`group` set).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct KafkaRecord {
    /// Sequence number.
    pub seq: u64,
    /// Unix time.
    pub time: f64,
    /// The topic of the rate and latency fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Messages per second written to the topic.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub messages_per_second: Option<f64>,
    /// Estimated bytes per second written to the topic.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<f64>,
    /// Sampled end-to-end latency in seconds.
    #[serde(serialize_with = "opt_num", skip_serializing_if = "Option::is_none")]
    pub latency_seconds: Option<f64>,
    /// The consumer group of the lag fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Lag summed over the group's partitions with a known committed offset; absent when none is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Partitions of watched topics where the group has no committed offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_partitions: Option<u64>,
}

/// The agent's identity in a history document.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentIdentity {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod uid.
    pub uid: String,
    /// Agent version.
    pub version: String,
    /// `server` or `client`.
    pub role: String,
    /// FL client id (clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The FLMonitor that injected the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
}

/// The `/v1/history` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Who answered.
    pub agent: AgentIdentity,
    /// Pass as `since` next time.
    pub next_seq: u64,
    /// Records from this sequence number on are all still held; `since` below it may have missed some.
    pub oldest_seq: u64,
    /// Rounds.
    pub rounds: Vec<RoundRecord>,
    /// Client updates.
    pub clients: Vec<ClientRecord>,
    /// System samples.
    pub system: Vec<SystemRecord>,
    /// Kafka samples.
    pub kafka: Vec<KafkaRecord>,
}

/// Buffer capacities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Rounds kept.
    pub rounds: usize,
    /// Client updates kept.
    pub clients: usize,
    /// System samples kept.
    pub system: usize,
    /// Kafka samples kept.
    pub kafka: usize,
}

struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Ring<T> {
    fn new(capacity: usize) -> Self {
        // Sized once: growing by doubling would leave a larger buffer half used, and untouched
        // pages of this one cost no resident memory until records arrive.
        let capacity = capacity.max(1);
        Ring {
            items: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Appends, returning the evicted item's seq.
    fn push(&mut self, item: T, seq_of: impl Fn(&T) -> u64) -> Option<u64> {
        let evicted = if self.items.len() >= self.capacity {
            self.items.pop_front().map(|x| seq_of(&x))
        } else {
            None
        };
        self.items.push_back(item);
        evicted
    }
}

/// The ring buffers.
pub struct History {
    next_seq: u64,
    evicted_through: u64,
    rounds: Ring<RoundRecord>,
    clients: Ring<ClientRecord>,
    system: Ring<SystemRecord>,
    kafka: Ring<KafkaRecord>,
    latest_gpus: Vec<GpuRecord>,
}

impl History {
    /// Empty buffers of the given sizes; sequence numbers start at 1.
    pub fn new(capacity: Capacity) -> Self {
        History {
            next_seq: 1,
            evicted_through: 0,
            rounds: Ring::new(capacity.rounds),
            clients: Ring::new(capacity.clients),
            system: Ring::new(capacity.system),
            kafka: Ring::new(capacity.kafka),
            latest_gpus: Vec::new(),
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn evicted(&mut self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.evicted_through = self.evicted_through.max(seq);
        }
    }

    /// Records a round (its `seq` is assigned here).
    pub fn push_round(&mut self, mut r: RoundRecord) {
        r.seq = self.take_seq();
        let e = self.rounds.push(r, |r| r.seq);
        self.evicted(e);
    }

    /// Records a client update (its `seq` is assigned here).
    pub fn push_client(&mut self, mut c: ClientRecord) {
        c.seq = self.take_seq();
        let e = self.clients.push(c, |c| c.seq);
        self.evicted(e);
    }

    /// Remembers the latest GPU readings; the next system sample carries them.
    pub fn set_gpus(&mut self, gpus: Vec<GpuRecord>) {
        self.latest_gpus = gpus;
    }

    /// Records a system sample, adding the latest GPU readings.
    pub fn push_system(&mut self, mut s: SystemRecord) {
        s.seq = self.take_seq();
        s.gpus = self.latest_gpus.clone();
        let e = self.system.push(s, |s| s.seq);
        self.evicted(e);
    }

    /// Records a Kafka sample.
    pub fn push_kafka(&mut self, mut k: KafkaRecord) {
        k.seq = self.take_seq();
        let e = self.kafka.push(k, |k| k.seq);
        self.evicted(e);
    }

    /// The records with `seq >= since`, oldest first, at most `limit` in all.
    pub fn page(&self, agent: AgentIdentity, since: u64, limit: usize) -> HistoryPage {
        let mut rounds = tail(&self.rounds, since, |r| r.seq);
        let mut clients = tail(&self.clients, since, |c| c.seq);
        let mut system = tail(&self.system, since, |s| s.seq);
        let mut kafka = tail(&self.kafka, since, |k| k.seq);
        let total = rounds.len() + clients.len() + system.len() + kafka.len();
        let next_seq = if total <= limit {
            self.next_seq
        } else {
            // Keep the `limit` lowest sequence numbers across the four buffers.
            let mut seqs: Vec<u64> = rounds
                .iter()
                .map(|r| r.seq)
                .chain(clients.iter().map(|c| c.seq))
                .chain(system.iter().map(|s| s.seq))
                .chain(kafka.iter().map(|k| k.seq))
                .collect();
            seqs.sort_unstable();
            let cut = seqs.get(limit).copied().unwrap_or(self.next_seq);
            rounds.retain(|r| r.seq < cut);
            clients.retain(|c| c.seq < cut);
            system.retain(|s| s.seq < cut);
            kafka.retain(|k| k.seq < cut);
            cut
        };
        HistoryPage {
            schema_version: SCHEMA_VERSION,
            agent,
            next_seq,
            oldest_seq: self.evicted_through + 1,
            rounds,
            clients,
            system,
            kafka,
        }
    }
}

fn tail<T: Clone>(ring: &Ring<T>, since: u64, seq_of: impl Fn(&T) -> u64) -> Vec<T> {
    let start = ring.items.partition_point(|x| seq_of(x) < since);
    ring.items.range(start..).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_numbers_keep_every_value_and_absence_apart() {
        for v in [
            Some(0.25),
            Some(-0.0),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            None,
        ] {
            assert_eq!(OptNum::from(v).get().map(f64::to_bits), v.map(f64::to_bits));
        }
        // Any NaN, whatever its payload, stays a NaN and never reads as absent.
        let odd_nan = f64::from_bits(ABSENT);
        assert!(OptNum::from(Some(odd_nan)).get().is_some_and(f64::is_nan));
        let json = |v: Option<f64>| serde_json::to_string(&OptNum::from(v)).unwrap_or_default();
        assert_eq!(json(Some(f64::NAN)), r#""NaN""#);
        assert_eq!(json(Some(1.5)), "1.5");
        assert_eq!(json(None), "null");
    }

    fn round(n: u64) -> RoundRecord {
        RoundRecord {
            seq: 0,
            run_id: "r".into(),
            round: n,
            time: 0.0,
            global_loss: Some(f64::NAN),
            global_accuracy: None,
            participants: None,
            expected_participants: None,
            duration_seconds: None,
            learning_rate: None,
            gradient_norm: None,
            weight_change_norm: None,
            messages_sent: None,
            replaces: false,
        }
    }

    fn cap(n: usize) -> Capacity {
        Capacity {
            rounds: n,
            clients: n,
            system: n,
            kafka: n,
        }
    }

    #[test]
    fn pages_follow_the_sequence_across_buffers() {
        let mut h = History::new(cap(10));
        h.push_round(round(1));
        h.push_system(SystemRecord::default());
        h.push_round(round(2));
        let p = h.page(AgentIdentity::default(), 1, 2);
        assert_eq!(p.rounds.len(), 1);
        assert_eq!(p.system.len(), 1);
        assert_eq!(p.next_seq, 3);
        let p = h.page(AgentIdentity::default(), p.next_seq, 2);
        assert_eq!(p.rounds[0].round, 2);
        assert_eq!(p.next_seq, 4);
        assert!(h.page(AgentIdentity::default(), 4, 10).rounds.is_empty());
    }

    #[test]
    fn eviction_moves_oldest_seq_and_nan_is_a_string() {
        let mut h = History::new(cap(2));
        for n in 1..=3 {
            h.push_round(round(n));
        }
        let p = h.page(AgentIdentity::default(), 0, 100);
        assert_eq!(p.oldest_seq, 2);
        assert_eq!(p.rounds.len(), 2);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["rounds"][0]["global_loss"], "NaN");
        assert_eq!(json["schemaVersion"], 1);
    }
}
