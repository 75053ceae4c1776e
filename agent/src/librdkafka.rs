//! librdkafka statistics posted by the FL app (`POST /v1/librdkafka-stats`). Parsed leniently:
//! fields may be missing, new or out of range; `-1`/`-1001` mean unknown; the unassigned partition
//! `-1` is skipped; lag is computed only from known offsets, the position raised to the log start
//! and never negative. A document that is not JSON is counted and the client's last good one kept.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::exposition::TextWriter;
use crate::metrics;

/// Distinct librdkafka clients (by `name`) exported; a new one beyond it replaces the one whose
/// last document is oldest (an app that makes a new producer per round retires the old ones).
pub const MAX_CLIENTS: usize = 16;
/// Retired clients whose last `txmsgs` is remembered, so one that comes back is counted from
/// where it was, not from zero; the oldest retiree is forgotten first.
pub const MAX_RETIRED: usize = 256;
/// Partition-lag series exported over all clients.
pub const MAX_PARTITIONS: usize = 512;

/// What the agent keeps of one statistics document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Statistics {
    /// librdkafka's handle name, e.g. `rdkafka#producer-1`.
    pub name: String,
    /// `producer` or `consumer`.
    pub kind: String,
    /// Unix time of the document.
    pub time: Option<f64>,
    /// Messages transmitted.
    pub txmsgs: Option<u64>,
    /// Message bytes transmitted.
    pub txmsg_bytes: Option<u64>,
    /// Messages received.
    pub rxmsgs: Option<u64>,
    /// Message bytes received.
    pub rxmsg_bytes: Option<u64>,
    /// Messages queued.
    pub msg_cnt: Option<u64>,
    /// Per-broker round-trip times.
    pub brokers: Vec<BrokerRtt>,
    /// Per-partition consumer lag (known ones only).
    pub lags: Vec<PartitionLag>,
}

/// Round-trip time to one broker, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerRtt {
    /// Broker name as librdkafka writes it (`host:port/id`).
    pub broker: String,
    /// Mean.
    pub avg: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// Consumer lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition (never `-1`).
    pub partition: i32,
    /// Messages between the committed position (at least the log start) and the end.
    pub lag: u64,
}

/// Why a document was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsError {
    /// Not JSON (or truncated).
    #[error("librdkafka statistics are not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but not an object.
    #[error("librdkafka statistics must be a JSON object, got {0}")]
    NotAnObject(&'static str),
}

/// A non-negative count; negative values (librdkafka's `-1`, `-1001`) and non-integers are unknown.
fn count(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// An offset; librdkafka writes unknown offsets as negative numbers (`-1001` = invalid).
fn offset(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().filter(|o| *o >= 0),
        _ => None,
    }
}

fn microseconds(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|us| us / 1e6),
        _ => None,
    }
}

/// Parses one document; `body` may carry a log-line prefix before the JSON object.
///
/// # Errors
/// [`StatsError`] when no JSON object can be read.
pub fn parse(body: &[u8]) -> Result<Statistics, StatsError> {
    let start = body.iter().position(|b| *b == b'{').unwrap_or(0);
    let value: Value =
        serde_json::from_slice(&body[start..]).map_err(|e| StatsError::Syntax(e.to_string()))?;
    let Value::Object(root) = &value else {
        return Err(StatsError::NotAnObject(json_type(&value)));
    };
    let text = |k: &str| root.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut stats = Statistics {
        name: text("name")
            .or_else(|| text("client_id"))
            .unwrap_or_else(|| "rdkafka".into()),
        kind: text("type").unwrap_or_default(),
        time: count(root.get("time")).map(|t| t as f64),
        txmsgs: count(root.get("txmsgs")),
        txmsg_bytes: count(root.get("txmsg_bytes")),
        rxmsgs: count(root.get("rxmsgs")),
        rxmsg_bytes: count(root.get("rxmsg_bytes")),
        msg_cnt: count(root.get("msg_cnt")),
        ..Statistics::default()
    };
    if let Some(Value::Object(brokers)) = root.get("brokers") {
        for (key, b) in brokers {
            let rtt = b.get("rtt");
            let avg = microseconds(rtt.and_then(|r| r.get("avg")));
            let p99 = microseconds(rtt.and_then(|r| r.get("p99")));
            // Brokers without traffic report zeros, which are not measurements.
            let measured = count(rtt.and_then(|r| r.get("cnt"))).is_none_or(|c| c > 0);
            if measured && (avg.is_some() || p99.is_some()) {
                let broker = b.get("name").and_then(Value::as_str).unwrap_or(key).to_owned();
                stats.brokers.push(BrokerRtt { broker, avg, p99 });
            }
        }
    }
    let mut partition_txmsgs: Option<u64> = None;
    if let Some(Value::Object(topics)) = root.get("topics") {
        for (topic_key, topic) in topics {
            let topic_name = topic.get("topic").and_then(Value::as_str).unwrap_or(topic_key);
            let Some(Value::Object(partitions)) = topic.get("partitions") else {
                continue;
            };
            for (pkey, p) in partitions {
                let id = p
                    .get("partition")
                    .and_then(Value::as_i64)
                    .or_else(|| pkey.parse().ok());
                let Some(id) = id.and_then(|i| i32::try_from(i).ok()).filter(|i| *i >= 0) else {
                    continue;
                };
                if let Some(tx) = count(p.get("txmsgs")) {
                    *partition_txmsgs.get_or_insert(0) += tx;
                }
                if let Some(lag) = partition_lag(p) {
                    stats.lags.push(PartitionLag {
                        topic: topic_name.to_owned(),
                        partition: id,
                        lag,
                    });
                }
            }
        }
    }
    if stats.txmsgs.is_none() {
        stats.txmsgs = partition_txmsgs;
    }
    Ok(stats)
}

/// Lag from known offsets only: end (last stable offset, else high watermark) minus the committed
/// offset raised to the log start. librdkafka's own `consumer_lag` is not trusted: it is computed
/// from offsets that may be unknown or below the log start.
fn partition_lag(p: &Value) -> Option<u64> {
    let end = offset(p.get("ls_offset")).or_else(|| offset(p.get("hi_offset")))?;
    let committed = offset(p.get("committed_offset"))?;
    let position = match offset(p.get("lo_offset")) {
        Some(lo) => committed.max(lo),
        None => committed,
    };
    Some(u64::try_from(end - position).unwrap_or(0))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Client {
    last: Statistics,
    /// When its last document came, in documents accepted.
    seen: u64,
}

/// The statistics of every client seen, and the counts behind `fl_messages_sent_total`.
#[derive(Default)]
pub struct LibrdkafkaState {
    clients: BTreeMap<String, Client>,
    /// Last `txmsgs` of clients replaced by newer ones, and when they were retired.
    retired: BTreeMap<String, (Option<u64>, u64)>,
    accepted: u64,
    rejected: u64,
}

/// What accepting a document changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    /// Increase of transmitted messages since the client's previous document.
    pub new_tx_messages: u64,
    /// Whether a client was retired to make room for this one (its series are gone).
    pub retired_client: bool,
}

impl LibrdkafkaState {
    /// Parses and applies one document; a bad one is counted and changes nothing else.
    ///
    /// # Errors
    /// The parse error; the client's previous document stays in effect.
    pub fn accept(&mut self, body: &[u8]) -> Result<Accepted, StatsError> {
        let mut stats = match parse(body) {
            Ok(s) => s,
            Err(e) => {
                self.rejected += 1;
                return Err(e);
            }
        };
        self.accepted += 1;
        let seen = self.accepted;
        let previous_tx = match self.clients.get(&stats.name) {
            Some(client) => client.last.txmsgs,
            None => self.retired.remove(&stats.name).and_then(|(tx, _)| tx),
        };
        let mut retired_client = false;
        if !self.clients.contains_key(&stats.name)
            && self.clients.len() >= MAX_CLIENTS
            && let Some(oldest) = self
                .clients
                .iter()
                .min_by_key(|(_, c)| c.seen)
                .map(|(name, _)| name.clone())
            && let Some(client) = self.clients.remove(&oldest)
        {
            retired_client = true;
            if self.retired.len() >= MAX_RETIRED
                && let Some(forgotten) = self
                    .retired
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(name, _)| name.clone())
            {
                self.retired.remove(&forgotten);
            }
            self.retired.insert(oldest, (client.last.txmsgs, seen));
        }
        // A counter that went down means the client restarted: everything it reports is new.
        let new_tx_messages = match (previous_tx, stats.txmsgs) {
            (Some(before), Some(now)) if now >= before => now - before,
            (_, Some(now)) => now,
            (_, None) => 0,
        };
        if stats.txmsgs.is_none() {
            // Keep the last known count so a later document is not counted from zero again.
            stats.txmsgs = previous_tx;
        }
        self.clients
            .insert(stats.name.clone(), Client { last: stats, seen });
        Ok(Accepted {
            new_tx_messages,
            retired_client,
        })
    }

    /// Renders the librdkafka section; returns it and how many partition series the cap left out.
    pub fn render(&self) -> (String, u64) {
        let mut w = TextWriter::new();
        w.family(&metrics::LIBRDKAFKA_DOCUMENTS, |f| {
            f.sample(&[("result", "accepted")], self.accepted as f64);
            f.sample(&[("result", "rejected")], self.rejected as f64);
        });
        let clients: Vec<&Statistics> = self.clients.values().map(|c| &c.last).collect();
        type Pick = fn(&Statistics) -> Option<f64>;
        let per_client: [(&metrics::MetricDef, Pick); 6] = [
            (&metrics::LIBRDKAFKA_TIMESTAMP, |s| s.time),
            (&metrics::LIBRDKAFKA_TX_MESSAGES, |s| s.txmsgs.map(|n| n as f64)),
            (&metrics::LIBRDKAFKA_TX_BYTES, |s| s.txmsg_bytes.map(|n| n as f64)),
            (&metrics::LIBRDKAFKA_RX_MESSAGES, |s| s.rxmsgs.map(|n| n as f64)),
            (&metrics::LIBRDKAFKA_RX_BYTES, |s| s.rxmsg_bytes.map(|n| n as f64)),
            (&metrics::LIBRDKAFKA_QUEUED, |s| s.msg_cnt.map(|n| n as f64)),
        ];
        for (def, pick) in per_client {
            w.family(def, |f| {
                for s in &clients {
                    if let Some(v) = pick(s) {
                        f.sample(&[("client", &s.name), ("type", &s.kind)], v);
                    }
                }
            });
        }
        w.family(&metrics::LIBRDKAFKA_BROKER_RTT, |f| {
            for s in &clients {
                for b in &s.brokers {
                    for (stat, v) in [("avg", b.avg), ("p99", b.p99)] {
                        if let Some(v) = v {
                            f.sample(&[("client", &s.name), ("broker", &b.broker), ("stat", stat)], v);
                        }
                    }
                }
            }
        });
        let mut dropped = 0u64;
        w.family(&metrics::LIBRDKAFKA_CONSUMER_LAG, |f| {
            let mut written = 0usize;
            for s in &clients {
                for l in &s.lags {
                    if written >= MAX_PARTITIONS {
                        dropped += 1;
                        continue;
                    }
                    written += 1;
                    let partition = l.partition.to_string();
                    let labels = [
                        ("client", s.name.as_str()),
                        ("topic", &l.topic),
                        ("partition", &partition),
                    ];
                    f.sample(&labels, l.lag as f64);
                }
            }
        });
        (w.finish(), dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_offsets_give_no_lag_and_lag_is_clamped_at_the_log_start() {
        let p = serde_json::json!({"hi_offset": 19063471, "lo_offset": 18376014, "committed_offset": 16571473, "consumer_lag": 2491998});
        assert_eq!(partition_lag(&p), Some(19063471 - 18376014));
        let p = serde_json::json!({"hi_offset": 34784, "lo_offset": -1001, "committed_offset": -1001, "app_offset": 6143, "consumer_lag": 0});
        assert_eq!(partition_lag(&p), None);
        let p = serde_json::json!({"hi_offset": 10, "committed_offset": 12});
        assert_eq!(partition_lag(&p), Some(0));
    }

    #[test]
    fn a_bad_document_keeps_the_last_good_one() {
        let mut s = LibrdkafkaState::default();
        s.accept(br#"{"name":"p","type":"producer","txmsgs":10}"#)
            .unwrap();
        assert!(s.accept(b"{\"name\":\"p\",\"txmsgs\": 036}").is_err());
        let (text, _) = s.render();
        assert!(
            text.contains("flmon_librdkafka_tx_messages_total{client=\"p\",type=\"producer\"} 10"),
            "{text}"
        );
        assert!(text.contains("flmon_librdkafka_statistics_total{result=\"rejected\"} 1"));
    }

    #[test]
    fn txmsgs_deltas_count_restarts_as_new_messages() {
        let mut s = LibrdkafkaState::default();
        assert_eq!(
            s.accept(br#"{"name":"p","txmsgs":10}"#).unwrap().new_tx_messages,
            10
        );
        assert_eq!(
            s.accept(br#"{"name":"p","txmsgs":15}"#).unwrap().new_tx_messages,
            5
        );
        assert_eq!(s.accept(br#"{"name":"p"}"#).unwrap().new_tx_messages, 0);
        assert_eq!(
            s.accept(br#"{"name":"p","txmsgs":3}"#).unwrap().new_tx_messages,
            3
        );
    }

    #[test]
    fn a_producer_per_round_keeps_counting_and_retires_the_oldest_client() {
        let mut s = LibrdkafkaState::default();
        let mut counted = 0;
        for round in 0..40u64 {
            let doc = format!(r#"{{"name":"rdkafka#producer-{round}","txmsgs":5}}"#);
            let accepted = s.accept(doc.as_bytes()).unwrap();
            assert_eq!(
                accepted.retired_client,
                round >= MAX_CLIENTS as u64,
                "round {round}"
            );
            counted += accepted.new_tx_messages;
        }
        assert_eq!(counted, 200, "every new client's messages count");
        let (text, _) = s.render();
        assert!(!text.contains("client=\"rdkafka#producer-0\""), "{text}");
        assert!(text.contains("client=\"rdkafka#producer-39\""), "{text}");
        // A retired client that posts again is counted from where it was.
        let again = s.accept(br#"{"name":"rdkafka#producer-0","txmsgs":7}"#).unwrap();
        assert_eq!(again.new_tx_messages, 2);
    }

    #[test]
    fn a_log_line_prefix_is_skipped() {
        let s = parse(br#"1513716844 [info] rdkafka#consumer-1 {"name":"c","type":"consumer"}"#).unwrap();
        assert_eq!(s.name, "c");
    }
}
