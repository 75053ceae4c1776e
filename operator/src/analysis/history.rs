//! The analysis' input: an agent's `/v1/history` document (SPEC §5) and the merge of several of them.
//!
//! Top-level fields are camelCase (`schemaVersion`, `nextSeq`); event fields are snake_case exactly
//! as the training events that carried them (`global_loss`, `training_seconds`). Every field except
//! `schemaVersion` (1) and `round` is optional, unknown fields are ignored, and a metric may be a
//! number, `null` (missing), or a non-finite value written either as Python's bare
//! `NaN`/`Infinity`/`-Infinity` tokens or as those words in a string (serde_json writes non-finite
//! floats as `null`, which would hide a diverged loss, so writers should use the strings).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// One agent's history document, as served on `/v1/history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct History {
    /// Version of the document's schema.
    pub schema_version: u32,
    /// Which agent wrote it.
    pub agent: AgentInfo,
    /// Sequence number to ask for next (`since=`).
    pub next_seq: u64,
    /// Oldest sequence number still held by the agent; a poll that asked for less lost events.
    pub oldest_seq: u64,
    /// `round_end` events.
    pub rounds: Vec<RoundEnd>,
    /// `client_update` events.
    pub clients: Vec<ClientUpdate>,
    /// Host samples of the pod.
    pub system: Vec<SystemSample>,
    /// Kafka samples (server-role agent only).
    pub kafka: Vec<KafkaSample>,
}

/// The agent that wrote a history document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentInfo {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// FLMonitor that injected the agent.
    pub monitor: String,
    /// Pod uid; the run id of events that carry none.
    pub uid: String,
    /// Agent version.
    pub version: String,
    /// `server` or `client`.
    pub role: String,
    /// FL client id of a client pod.
    pub client_id: Option<String>,
}

/// A `round_end` training event: the server finished aggregating a round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoundEnd {
    /// Sequence number in the agent's history.
    pub seq: Option<u64>,
    /// Training run; absent means the pod's uid (see [`merge`]).
    pub run_id: Option<String>,
    /// Round number within the run.
    pub round: u64,
    /// Loss of the aggregated model.
    #[serde(deserialize_with = "metric")]
    pub global_loss: Option<f64>,
    /// Accuracy of the aggregated model, 0–1.
    #[serde(deserialize_with = "metric")]
    pub global_accuracy: Option<f64>,
    /// Clients whose updates were aggregated.
    pub participants: Option<u32>,
    /// Clients the server asked for.
    pub expected_participants: Option<u32>,
    /// Wall-clock duration of the round.
    #[serde(deserialize_with = "metric")]
    pub duration_seconds: Option<f64>,
    /// Learning rate used in the round.
    #[serde(deserialize_with = "metric")]
    pub learning_rate: Option<f64>,
    /// Norm of the aggregated gradient (or pseudo-gradient).
    #[serde(deserialize_with = "metric")]
    pub gradient_norm: Option<f64>,
    /// L2 norm of the change of the global weights in this round.
    #[serde(deserialize_with = "metric")]
    pub weight_change_norm: Option<f64>,
    /// Messages sent during the round.
    pub messages_sent: Option<u64>,
    /// Set by the agent when this record replaces an earlier one with the same key.
    pub replaces: Option<bool>,
    /// Unix seconds.
    #[serde(deserialize_with = "metric")]
    pub time: Option<f64>,
}

/// A `client_update` training event: one client's local training in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientUpdate {
    /// Sequence number in the agent's history.
    pub seq: Option<u64>,
    /// Training run; absent means the pod's uid.
    pub run_id: Option<String>,
    /// Round number within the run.
    pub round: u64,
    /// FL client id; absent means the document's `agent.clientId`, else its pod name.
    pub client_id: Option<String>,
    /// Local training loss.
    #[serde(deserialize_with = "metric")]
    pub loss: Option<f64>,
    /// Local accuracy, 0–1.
    #[serde(deserialize_with = "metric")]
    pub accuracy: Option<f64>,
    /// Seconds of local training.
    #[serde(deserialize_with = "metric")]
    pub training_seconds: Option<f64>,
    /// Training samples used.
    pub samples: Option<u64>,
    /// `true` when the client reported a failed round (it then counts as not participating).
    pub failed: Option<bool>,
    /// Set by the agent when this record replaces an earlier one with the same key.
    pub replaces: Option<bool>,
    /// Unix seconds.
    #[serde(deserialize_with = "metric")]
    pub time: Option<f64>,
}

/// One host sample of a pod's app containers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SystemSample {
    /// Sequence number in the agent's history.
    pub seq: Option<u64>,
    /// Unix seconds.
    #[serde(deserialize_with = "metric")]
    pub time: Option<f64>,
    /// CPU usage, percent of the app containers' limits.
    #[serde(deserialize_with = "metric")]
    pub cpu_percent: Option<f64>,
    /// Memory usage, percent of the app containers' limits.
    #[serde(deserialize_with = "metric")]
    pub memory_percent: Option<f64>,
    /// Network receive rate of the pod.
    #[serde(deserialize_with = "metric")]
    pub network_rx_bytes_per_second: Option<f64>,
    /// Network transmit rate of the pod.
    #[serde(deserialize_with = "metric")]
    pub network_tx_bytes_per_second: Option<f64>,
    /// GPUs used by the pod.
    pub gpus: Vec<GpuSample>,
}

/// One GPU in a [`SystemSample`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuSample {
    /// GPU uuid.
    pub uuid: Option<String>,
    /// GPU index on the node.
    pub index: Option<u32>,
    /// Utilization, percent.
    #[serde(deserialize_with = "metric")]
    pub utilization_percent: Option<f64>,
    /// Memory used.
    #[serde(deserialize_with = "metric")]
    pub memory_used_bytes: Option<f64>,
    /// Memory total.
    #[serde(deserialize_with = "metric")]
    pub memory_total_bytes: Option<f64>,
}

/// One Kafka sample: a topic's throughput and latency, or a consumer group's lag.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSample {
    /// Sequence number in the agent's history.
    pub seq: Option<u64>,
    /// Unix seconds.
    #[serde(deserialize_with = "metric")]
    pub time: Option<f64>,
    /// Topic of the throughput and latency fields.
    pub topic: Option<String>,
    /// Messages per second produced to the topic.
    #[serde(deserialize_with = "metric")]
    pub messages_per_second: Option<f64>,
    /// Bytes per second produced to the topic.
    #[serde(deserialize_with = "metric")]
    pub bytes_per_second: Option<f64>,
    /// Sampled end-to-end latency.
    #[serde(deserialize_with = "metric")]
    pub latency_seconds: Option<f64>,
    /// Consumer group of the lag field.
    pub group: Option<String>,
    /// Lag summed over partitions, in messages.
    #[serde(deserialize_with = "metric")]
    pub lag: Option<f64>,
}

/// Reads a metric: a number, `null`, or one of the strings `NaN`, `Infinity`, `-Infinity`
/// (also `inf`, `-inf`, `+Infinity`, any case).
fn metric<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }
    match Option::<Raw>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Raw::Number(v)) => Ok(Some(v)),
        Some(Raw::Text(text)) => parse_non_finite(&text).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid metric value {text:?}: expected a number, null, \"NaN\", \"Infinity\" or \"-Infinity\""
            ))
        }),
    }
}

fn parse_non_finite(text: &str) -> Option<f64> {
    match text.trim().to_ascii_lowercase().as_str() {
        "nan" | "-nan" | "+nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse::<f64>().ok(),
    }
}

/// A history document that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid history document at line {line}, column {column}: {message}")]
pub struct HistoryError {
    /// 1-based line of the offending token.
    pub line: usize,
    /// 1-based column of the offending token.
    pub column: usize,
    /// What was wrong: the field, the value and what was expected, as far as the parser knows.
    pub message: String,
}

/// Parses a history document. Bare `NaN`, `Infinity` and `-Infinity` tokens (as Python's
/// `json.dumps` writes them) are accepted as non-finite numbers.
///
/// # Errors
/// [`HistoryError`] with the position and the parser's description of the offending value.
pub fn parse_history(text: &str) -> Result<History, HistoryError> {
    let quoted = quote_non_finite_tokens(text);
    let history: History = serde_json::from_str(&quoted).map_err(|e| HistoryError {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    // Any JSON object parses (every field is optional): the version says it is a history at all.
    if history.schema_version != SCHEMA_VERSION {
        let found = match history.schema_version {
            0 => "missing".to_owned(),
            v => v.to_string(),
        };
        return Err(HistoryError {
            line: 1,
            column: 1,
            message: format!(
                "schemaVersion: {found} is not supported, expected {SCHEMA_VERSION} (an agent's /v1/history document)"
            ),
        });
    }
    Ok(history)
}

/// The `/v1/history` schema version this operator reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Rewrites the bare tokens `NaN`, `Infinity`, `-Infinity` outside strings as strings, leaving
/// everything else byte for byte (so error positions stay close to the original's).
fn quote_non_finite_tokens(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(token) = token {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

/// Where an event came from, for samples that are per pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodName(pub String);

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Several agents' histories merged as the operator does: events deduplicated by their keys
/// (round_end: run, round; client_update: run, round, client — a later document's differing copy
/// replaces an earlier one), run ids filled in, runs ordered by when they started, rounds by number.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// `round_end` events, grouped by run (in start order), each run by round.
    pub rounds: Vec<RoundEnd>,
    /// `client_update` events, in the same run order, by round then client id.
    pub clients: Vec<ClientUpdate>,
    /// Host samples per pod, by time.
    pub system: Vec<(PodName, Vec<SystemSample>)>,
    /// Kafka samples of all documents, by time.
    pub kafka: Vec<KafkaSample>,
    /// Events whose key was seen before with different values (the later copy was kept).
    pub replaced: u64,
}

/// Fills in the run id of events that carry none: the pod's uid, with a new segment (`uid#2`,
/// `uid#3`, …) each time the round goes down, as the agent does.
fn assign_runs<'a, I>(uid: &str, pod: &str, rounds: I) -> Vec<String>
where
    I: Iterator<Item = (&'a Option<String>, u64)>,
{
    let base = if uid.is_empty() { pod } else { uid };
    let base = if base.is_empty() { "run" } else { base };
    let mut segment = 1u32;
    let mut last_round: Option<u64> = None;
    rounds
        .map(|(run, round)| match run {
            Some(run) => run.clone(),
            None => {
                if last_round.is_some_and(|last| round < last) {
                    segment += 1;
                }
                last_round = Some(round);
                if segment == 1 {
                    base.to_string()
                } else {
                    format!("{base}#{segment}")
                }
            }
        })
        .collect()
}

/// Merges several agents' history documents (see [`Merged`]).
pub fn merge(documents: &[History]) -> Merged {
    let mut merged = Merged::default();
    // run id -> (first time seen, first document index): the order runs are presented in.
    let mut run_start: HashMap<String, (f64, usize)> = HashMap::new();
    let mut rounds: HashMap<(String, u64), RoundEnd> = HashMap::new();
    let mut clients: HashMap<(String, u64, String), ClientUpdate> = HashMap::new();
    let mut system: HashMap<String, Vec<SystemSample>> = HashMap::new();
    for (doc_index, doc) in documents.iter().enumerate() {
        let mut note_run = |run: &str, time: Option<f64>| {
            let time = time.filter(|t| t.is_finite()).unwrap_or(f64::INFINITY);
            let entry = run_start.entry(run.to_string()).or_insert((time, doc_index));
            if time < entry.0 {
                entry.0 = time;
            }
        };
        let round_runs = assign_runs(
            &doc.agent.uid,
            &doc.agent.pod,
            doc.rounds.iter().map(|r| (&r.run_id, r.round)),
        );
        for (event, run) in doc.rounds.iter().zip(round_runs) {
            note_run(&run, event.time);
            let mut event = event.clone();
            event.run_id = Some(run.clone());
            if let Some(old) = rounds.insert((run, event.round), event.clone())
                && !same_round(&old, &event)
            {
                merged.replaced += 1;
            }
        }
        let client_runs = assign_runs(
            &doc.agent.uid,
            &doc.agent.pod,
            doc.clients.iter().map(|c| (&c.run_id, c.round)),
        );
        let default_client = doc
            .agent
            .client_id
            .clone()
            .unwrap_or_else(|| doc.agent.pod.clone());
        for (event, run) in doc.clients.iter().zip(client_runs) {
            note_run(&run, event.time);
            let mut event = event.clone();
            event.run_id = Some(run.clone());
            let client = event
                .client_id
                .get_or_insert_with(|| default_client.clone())
                .clone();
            if let Some(old) = clients.insert((run, event.round, client), event.clone())
                && !same_client(&old, &event)
            {
                merged.replaced += 1;
            }
        }
        if !doc.system.is_empty() {
            let pod = if doc.agent.pod.is_empty() {
                format!("pod-{doc_index}")
            } else {
                doc.agent.pod.clone()
            };
            system.entry(pod).or_default().extend(doc.system.iter().cloned());
        }
        merged.kafka.extend(doc.kafka.iter().cloned());
    }
    let run_order = |run: &Option<String>| -> (f64, usize, String) {
        let run = run.clone().unwrap_or_default();
        let (time, doc) = run_start
            .get(&run)
            .copied()
            .unwrap_or((f64::INFINITY, usize::MAX));
        (time, doc, run)
    };
    let mut rounds: Vec<RoundEnd> = rounds.into_values().collect();
    rounds.sort_by(|a, b| {
        let (ta, da, ra) = run_order(&a.run_id);
        let (tb, db, rb) = run_order(&b.run_id);
        ta.total_cmp(&tb)
            .then(da.cmp(&db))
            .then(ra.cmp(&rb))
            .then(a.round.cmp(&b.round))
    });
    let mut clients: Vec<ClientUpdate> = clients.into_values().collect();
    clients.sort_by(|a, b| {
        let (ta, da, ra) = run_order(&a.run_id);
        let (tb, db, rb) = run_order(&b.run_id);
        ta.total_cmp(&tb)
            .then(da.cmp(&db))
            .then(ra.cmp(&rb))
            .then(a.round.cmp(&b.round))
            .then(a.client_id.cmp(&b.client_id))
    });
    merged.rounds = rounds;
    merged.clients = clients;
    let by_time =
        |a: &Option<f64>, b: &Option<f64>| a.unwrap_or(f64::INFINITY).total_cmp(&b.unwrap_or(f64::INFINITY));
    let mut system: Vec<(PodName, Vec<SystemSample>)> = system
        .into_iter()
        .map(|(pod, samples)| (PodName(pod), samples))
        .collect();
    system.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, samples) in &mut system {
        samples.sort_by(|a, b| by_time(&a.time, &b.time));
    }
    merged.system = system;
    merged.kafka.sort_by(|a, b| by_time(&a.time, &b.time));
    merged
}

/// Equality that treats NaN as equal to NaN (an identical duplicate of a diverged round is still
/// a duplicate).
fn same_value(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.to_bits() == b.to_bits() || a == b,
        (None, None) => true,
        _ => false,
    }
}

fn same_round(a: &RoundEnd, b: &RoundEnd) -> bool {
    same_value(a.global_loss, b.global_loss)
        && same_value(a.global_accuracy, b.global_accuracy)
        && a.participants == b.participants
        && a.expected_participants == b.expected_participants
        && same_value(a.duration_seconds, b.duration_seconds)
        && same_value(a.learning_rate, b.learning_rate)
        && same_value(a.gradient_norm, b.gradient_norm)
        && same_value(a.weight_change_norm, b.weight_change_norm)
        && a.messages_sent == b.messages_sent
}

fn same_client(a: &ClientUpdate, b: &ClientUpdate) -> bool {
    same_value(a.loss, b.loss)
        && same_value(a.accuracy, b.accuracy)
        && same_value(a.training_seconds, b.training_seconds)
        && a.samples == b.samples
        && a.failed == b.failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_quoted_non_finite_values_are_read_as_non_finite() {
        let doc = r#"{"schemaVersion":1,"rounds":[
            {"run_id":"a","round":1,"global_loss":NaN,"global_accuracy":0.5},
            {"run_id":"a","round":2,"global_loss":"Infinity","global_accuracy":null},
            {"run_id":"NaN","round":3,"global_loss":-Infinity}]}"#;
        let history = parse_history(doc).expect("valid document");
        assert!(history.rounds[0].global_loss.is_some_and(f64::is_nan));
        assert_eq!(history.rounds[1].global_loss, Some(f64::INFINITY));
        assert_eq!(history.rounds[1].global_accuracy, None);
        assert_eq!(history.rounds[2].global_loss, Some(f64::NEG_INFINITY));
        assert_eq!(
            history.rounds[2].run_id.as_deref(),
            Some("NaN"),
            "strings are left alone"
        );
    }

    #[test]
    fn a_wrong_metric_type_names_the_field_and_the_value() {
        let doc = r#"{"rounds":[{"round":1,"global_loss":"lots"}]}"#;
        let error = parse_history(doc).expect_err("a word is not a loss");
        assert!(error.message.contains("lots"), "{error}");
        let doc = r#"{"rounds":[{"round":-1}]}"#;
        let error = parse_history(doc).expect_err("rounds are not negative");
        assert!(error.to_string().contains("-1"), "{error}");
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_fields_default() {
        let doc =
            r#"{"schemaVersion":1,"future":true,"rounds":[{"round":4,"new_metric":1}],"agent":{"pod":"p"}}"#;
        let history = parse_history(doc).expect("lenient");
        assert_eq!(history.rounds[0].round, 4);
        assert_eq!(history.agent.pod, "p");
    }

    #[test]
    fn a_document_without_the_history_schema_version_is_not_taken_for_an_empty_history() {
        for (doc, found) in [("{}", "missing"), (r#"{"schemaVersion":2,"rounds":[]}"#, "2")] {
            let error = parse_history(doc).expect_err(doc);
            assert!(
                error
                    .message
                    .contains(&format!("schemaVersion: {found} is not supported, expected 1")),
                "{error}"
            );
        }
    }

    #[test]
    fn merge_drops_duplicates_counts_replacements_and_splits_restarted_runs() {
        let round = |round: u64, loss: f64| RoundEnd {
            round,
            global_loss: Some(loss),
            ..RoundEnd::default()
        };
        let server = History {
            agent: AgentInfo {
                pod: "server".into(),
                uid: "u1".into(),
                ..AgentInfo::default()
            },
            rounds: vec![round(1, 2.0), round(2, 1.5), round(1, 2.2), round(2, 1.9)],
            ..History::default()
        };
        let again = History {
            rounds: vec![round(2, 1.5)],
            ..server.clone()
        };
        let merged = merge(&[server, again]);
        let runs: Vec<_> = merged
            .rounds
            .iter()
            .map(|r| (r.run_id.clone().unwrap_or_default(), r.round))
            .collect();
        assert_eq!(
            runs,
            [
                ("u1".into(), 1),
                ("u1".into(), 2),
                ("u1#2".into(), 1),
                ("u1#2".into(), 2)
            ],
            "the round going down starts segment #2"
        );
        assert_eq!(
            merged.replaced, 0,
            "the second document repeats round 2 of u1 unchanged"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::analysis::{AnalysisConfig, Analyzer};

    proptest! {
        #[test]
        fn parsing_never_panics_on_any_text(text in ".{0,400}") {
            let _ = parse_history(&text);
        }

        #[test]
        fn parsing_never_panics_on_json_like_text(text in r#"[\[\]{}":,0-9a-zA-Z_ .\-]{0,300}"#) {
            let _ = parse_history(&text);
        }

        #[test]
        fn any_event_sequence_is_analysed_without_panicking(
            events in proptest::collection::vec(
                (0u8..3, 0u64..40, proptest::option::of(-1e3f64..1e3), proptest::option::of(-0.5f64..1.5), 0u32..4),
                0..200,
            )
        ) {
            let mut a = Analyzer::new(AnalysisConfig::default()).expect("defaults");
            for (kind, round, loss, acc, who) in events {
                match kind {
                    0 => a.push_round(&RoundEnd {
                        run_id: Some(format!("r{}", who % 2)),
                        round,
                        global_loss: loss.map(|l| if l > 900.0 { f64::NAN } else { l }),
                        global_accuracy: acc,
                        participants: Some(who),
                        ..RoundEnd::default()
                    }),
                    1 => a.push_client(&ClientUpdate {
                        run_id: Some("r0".into()),
                        round,
                        client_id: Some(format!("c{who}")),
                        loss,
                        accuracy: acc,
                        training_seconds: loss.map(f64::abs),
                        ..ClientUpdate::default()
                    }),
                    _ => a.push_system("p", &SystemSample { time: Some(round as f64), cpu_percent: loss, ..SystemSample::default() }),
                }
            }
            let analysis = a.analysis();
            prop_assert!(analysis.clients.tracked <= 4);
            for c in a.client_summaries() {
                prop_assert!((0.0..=1.0).contains(&c.participation_rate));
            }
        }
    }
}
