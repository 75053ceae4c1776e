//! Training events (SPEC §5): parsing and validating a batch posted to `/v1/events` or read from the
//! events topic. A body is one JSON object, an array of objects, or NDJSON. Every invalid event is
//! reported (line, field, value, expected) and the whole batch is rejected; nothing is applied.

use serde::Serialize;

use crate::json::{self, Reader, Value};

/// Longest accepted `run_id` / `client_id`; ids become history keys and metric labels.
pub const MAX_ID_LEN: usize = 128;
/// At most this many errors are reported for one batch.
pub const MAX_ERRORS: usize = 100;
/// Largest integer accepted for counts (exact in an `f64`).
const MAX_INT: f64 = 9_007_199_254_740_992.0;

/// One validated training event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The server finished a round.
    RoundEnd(RoundEnd),
    /// A client finished its local training for a round.
    ClientUpdate(ClientUpdate),
}

/// `type: round_end`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoundEnd {
    /// The run; `None` means the pod's run (pod uid, segmented on round decreases).
    pub run_id: Option<String>,
    /// Round number.
    pub round: u64,
    /// Global model loss (may be non-finite).
    pub global_loss: Option<f64>,
    /// Global model accuracy, 0–1 (or NaN).
    pub global_accuracy: Option<f64>,
    /// Clients that took part.
    pub participants: Option<u64>,
    /// Clients the server expected.
    pub expected_participants: Option<u64>,
    /// Round duration in seconds.
    pub duration_seconds: Option<f64>,
    /// Learning rate.
    pub learning_rate: Option<f64>,
    /// Gradient norm.
    pub gradient_norm: Option<f64>,
    /// L2 norm of the weight change.
    pub weight_change_norm: Option<f64>,
    /// Messages sent during the round.
    pub messages_sent: Option<u64>,
    /// Unix time in seconds.
    pub time: Option<f64>,
}

/// `type: client_update`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientUpdate {
    /// The run; `None` means the pod's run.
    pub run_id: Option<String>,
    /// Round number.
    pub round: u64,
    /// The client; filled from the agent's own client id when missing.
    pub client_id: String,
    /// Local loss.
    pub loss: Option<f64>,
    /// Local accuracy, 0–1 (or NaN).
    pub accuracy: Option<f64>,
    /// Local training time in seconds.
    pub training_seconds: Option<f64>,
    /// Training samples.
    pub samples: Option<u64>,
    /// Unix time in seconds.
    pub time: Option<f64>,
}

impl Event {
    /// A fingerprint of the event's key and values (not its `time`): two events carry the same
    /// values exactly when their fingerprints are equal (up to a 2^-64 collision). NaN equals NaN,
    /// so a resent NaN is a duplicate. Only fingerprints are kept for deduplication.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        fn num(h: &mut impl Hasher, v: Option<f64>) {
            match v {
                None => 0u8.hash(h),
                Some(n) if n.is_nan() => 1u8.hash(h),
                // +0.0 and -0.0 are the same value.
                Some(n) => (2u8, if n == 0.0 { 0 } else { n.to_bits() }).hash(h),
            }
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match self {
            Event::RoundEnd(r) => {
                (
                    0u8,
                    &r.run_id,
                    r.round,
                    r.participants,
                    r.expected_participants,
                    r.messages_sent,
                )
                    .hash(&mut h);
                for v in [
                    r.global_loss,
                    r.global_accuracy,
                    r.duration_seconds,
                    r.learning_rate,
                    r.gradient_norm,
                ] {
                    num(&mut h, v);
                }
                num(&mut h, r.weight_change_norm);
            }
            Event::ClientUpdate(u) => {
                (1u8, &u.run_id, u.round, &u.client_id, u.samples).hash(&mut h);
                for v in [u.loss, u.accuracy, u.training_seconds] {
                    num(&mut h, v);
                }
            }
        }
        h.finish()
    }
}

/// One problem in a rejected batch, as reported in the `400` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventError {
    /// 1-based NDJSON line, or 1-based array position.
    pub line: usize,
    /// The offending field; `null` when the event itself is malformed.
    pub field: Option<String>,
    /// The offending value (non-finite numbers as `"NaN"`, `"Infinity"`, `"-Infinity"`).
    pub value: serde_json::Value,
    /// What was expected instead.
    pub expected: String,
}

/// A validated batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// The events in order.
    pub events: Vec<Event>,
    /// Unknown fields seen (ignored, counted).
    pub unknown_fields: u64,
}

const ROUND_END_FIELDS: &[&str] = &[
    "type",
    "run_id",
    "round",
    "global_loss",
    "global_accuracy",
    "participants",
    "expected_participants",
    "duration_seconds",
    "learning_rate",
    "gradient_norm",
    "weight_change_norm",
    "messages_sent",
    "time",
];
const CLIENT_UPDATE_FIELDS: &[&str] = &[
    "type",
    "run_id",
    "round",
    "client_id",
    "loss",
    "accuracy",
    "training_seconds",
    "samples",
    "time",
];

/// Parses and validates a batch. `default_client_id` fills `client_id` when an update lacks it.
///
/// # Errors
/// Every problem found (up to [`MAX_ERRORS`]); the batch must then be rejected whole.
pub fn parse_batch(body: &[u8], default_client_id: Option<&str>) -> Result<Batch, Vec<EventError>> {
    let mut events = Vec::new();
    let (unknown_fields, errors) = scan(body, default_client_id, &mut |e| events.push(e));
    if errors.is_empty() {
        Ok(Batch {
            events,
            unknown_fields,
        })
    } else {
        Err(errors)
    }
}

/// Validates a batch without keeping its events; returns the unknown fields it carries. A valid
/// batch is then applied with [`for_each_event`]: two passes over the body instead of a vector
/// of every event, so a large batch costs no more memory than its body (resident memory matters
/// more in a sidecar than the second parse, a few microseconds per event).
///
/// # Errors
/// As [`parse_batch`].
pub fn validate_batch(body: &[u8], default_client_id: Option<&str>) -> Result<u64, Vec<EventError>> {
    let (unknown_fields, errors) = scan(body, default_client_id, &mut drop);
    if errors.is_empty() {
        Ok(unknown_fields)
    } else {
        Err(errors)
    }
}

/// Hands the events of a body that [`validate_batch`] accepted to `apply`, in order. (Of a body
/// it rejected, only the valid events would be handed over: validate first.)
pub fn for_each_event(body: &[u8], default_client_id: Option<&str>, apply: &mut dyn FnMut(Event)) {
    scan(body, default_client_id, apply);
}

/// Parses `body`, handing each valid event to `sink`; returns the unknown fields of the valid
/// events and every error.
fn scan(body: &[u8], default_client_id: Option<&str>, sink: &mut dyn FnMut(Event)) -> (u64, Vec<EventError>) {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut out = Collector {
        sink,
        unknown_fields: 0,
        errors: Vec::new(),
        default_client_id,
    };
    let mut reader = Reader::new(body);
    match reader.peek_non_ws() {
        None => out.error(1, None, serde_json::Value::Null, "at least one event"),
        Some(b'[') => parse_array(body, &mut reader, &mut out),
        Some(_) => parse_stream(body, &mut reader, &mut out),
    }
    (out.unknown_fields, out.errors)
}

struct Collector<'a> {
    sink: &'a mut dyn FnMut(Event),
    unknown_fields: u64,
    errors: Vec<EventError>,
    default_client_id: Option<&'a str>,
}

impl Collector<'_> {
    fn error(&mut self, line: usize, field: Option<&str>, value: serde_json::Value, expected: &str) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(EventError {
                line,
                field: field.map(str::to_owned),
                value,
                expected: expected.to_owned(),
            });
        }
    }

    fn full(&self) -> bool {
        self.errors.len() >= MAX_ERRORS
    }

    fn syntax(&mut self, line: usize, body: &[u8], err: &json::SyntaxError) {
        let snippet = line_snippet(body, err.offset);
        self.error(
            line,
            None,
            serde_json::Value::String(snippet),
            &format!("valid JSON ({err})"),
        );
    }
}

fn parse_array(body: &[u8], reader: &mut Reader<'_>, out: &mut Collector<'_>) {
    reader.eat(b'[');
    if reader.eat(b']') {
        out.error(
            1,
            None,
            serde_json::Value::String("[]".into()),
            "at least one event",
        );
        return;
    }
    let mut index = 0;
    loop {
        index += 1;
        match reader.value() {
            Ok(value) => validate(index, &value, out),
            Err(err) => {
                out.syntax(index, body, &err);
                return;
            }
        }
        if out.full() {
            return;
        }
        if reader.eat(b',') {
            continue;
        }
        if reader.eat(b']') {
            break;
        }
        let err = json::SyntaxError {
            offset: reader.offset(),
            expected: "',' or ']'",
        };
        out.syntax(index, body, &err);
        return;
    }
    if !reader.at_end() {
        let err = json::SyntaxError {
            offset: reader.offset(),
            expected: "the end of the body",
        };
        out.syntax(index, body, &err);
    }
}

/// NDJSON, a single (possibly pretty-printed) object, or objects separated by whitespace. An event's
/// line is the line it starts on; after a syntax error parsing resumes on the next line.
fn parse_stream(body: &[u8], reader: &mut Reader<'_>, out: &mut Collector<'_>) {
    let mut lines = LineCounter::default();
    while !reader.at_end() && !out.full() {
        let start = reader.offset();
        let line = lines.line_at(body, start);
        match reader.value() {
            Ok(value) => validate(line, &value, out),
            Err(err) => {
                out.syntax(line, body, &err);
                // Resume at the line the error is on when the event broke off there (an unclosed
                // NDJSON line), else after it.
                let at = err.offset.min(body.len());
                let error_line_start = body[..at].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                let next = if error_line_start > start {
                    error_line_start
                } else {
                    body[at..]
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(body.len(), |p| at + p + 1)
                };
                reader.seek(next.max(start + 1));
            }
        }
    }
}

/// Maps byte offsets (visited in increasing order) to 1-based line numbers.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    newlines: usize,
}

impl LineCounter {
    fn line_at(&mut self, body: &[u8], offset: usize) -> usize {
        let offset = offset.min(body.len());
        if offset >= self.offset {
            self.newlines += body[self.offset..offset].iter().filter(|b| **b == b'\n').count();
            self.offset = offset;
        }
        self.newlines + 1
    }
}

fn line_snippet(body: &[u8], offset: usize) -> String {
    let offset = offset.min(body.len());
    let start = body[..offset]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let end = body[offset..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(body.len(), |p| offset + p);
    let text = String::from_utf8_lossy(&body[start..end]);
    let text = text.trim();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text.into()
    }
}

fn validate(line: usize, value: &Value<'_>, out: &mut Collector<'_>) {
    let Value::Object(fields) = value else {
        out.error(line, None, value.to_report(), "a JSON object (one event)");
        return;
    };
    let errors_before = out.errors.len();
    let mut v = Fields {
        line,
        obj: value,
        out,
    };
    let kind = match value.get("type") {
        Some(Value::String(s)) if s.as_ref() == "round_end" => "round_end",
        Some(Value::String(s)) if s.as_ref() == "client_update" => "client_update",
        other => {
            let reported = other.map_or(serde_json::Value::Null, Value::to_report);
            v.out
                .error(line, Some("type"), reported, "\"round_end\" or \"client_update\"");
            return;
        }
    };
    let known = if kind == "round_end" {
        ROUND_END_FIELDS
    } else {
        CLIENT_UPDATE_FIELDS
    };
    let unknown = fields
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_ref()))
        .count() as u64;
    let run_id = v.id("run_id");
    let round = v.required_int("round");
    let time = v.time();
    let event = if kind == "round_end" {
        Event::RoundEnd(RoundEnd {
            run_id,
            round: round.unwrap_or(0),
            global_loss: v.any_number("global_loss"),
            global_accuracy: v.ratio("global_accuracy"),
            participants: v.int("participants"),
            expected_participants: v.int("expected_participants"),
            duration_seconds: v.seconds("duration_seconds"),
            learning_rate: v.any_number("learning_rate"),
            gradient_norm: v.any_number("gradient_norm"),
            weight_change_norm: v.any_number("weight_change_norm"),
            messages_sent: v.int("messages_sent"),
            time,
        })
    } else {
        let client_id = match v.id("client_id") {
            Some(id) => id,
            None if v.obj.get("client_id").is_some_and(|c| *c != Value::Null) => String::new(),
            None => match v.out.default_client_id {
                Some(id) => id.to_owned(),
                None => {
                    v.out.error(
                        line,
                        Some("client_id"),
                        serde_json::Value::Null,
                        "a client id (this agent has none to fill in)",
                    );
                    String::new()
                }
            },
        };
        Event::ClientUpdate(ClientUpdate {
            run_id,
            round: round.unwrap_or(0),
            client_id,
            loss: v.any_number("loss"),
            accuracy: v.ratio("accuracy"),
            training_seconds: v.seconds("training_seconds"),
            samples: v.int("samples"),
            time,
        })
    };
    if out.errors.len() == errors_before {
        (out.sink)(event);
        out.unknown_fields += unknown;
    }
}

struct Fields<'v, 'j, 'c, 'd> {
    line: usize,
    obj: &'v Value<'j>,
    out: &'c mut Collector<'d>,
}

impl<'v, 'j> Fields<'v, 'j, '_, '_> {
    /// The field's value; `null` counts as missing.
    fn get(&self, field: &str) -> Option<&'v Value<'j>> {
        self.obj.get(field).filter(|v| **v != Value::Null)
    }

    fn bad(&mut self, field: &str, value: &Value<'_>, expected: &str) {
        let reported = value.to_report();
        self.out.error(self.line, Some(field), reported, expected);
    }

    fn number(&mut self, field: &str, expected: &str, ok: impl Fn(f64) -> bool) -> Option<f64> {
        match self.get(field)? {
            Value::Number(n) if ok(*n) => Some(*n),
            other @ Value::Number(_) => {
                self.bad(field, other, expected);
                None
            }
            other => {
                // The type is the problem, not the range: say so first.
                let kind = match other {
                    Value::String(_) => "a string",
                    Value::Bool(_) => "a boolean",
                    Value::Array(_) => "an array",
                    _ => "an object",
                };
                self.bad(field, other, &format!("a JSON number, not {kind}: {expected}"));
                None
            }
        }
    }

    fn any_number(&mut self, field: &str) -> Option<f64> {
        self.number(field, "a number (NaN and Infinity allowed)", |_| true)
    }

    fn ratio(&mut self, field: &str) -> Option<f64> {
        self.number(field, "a ratio from 0 to 1 (not a percent)", |n| {
            n.is_nan() || (0.0..=1.0).contains(&n)
        })
    }

    fn seconds(&mut self, field: &str) -> Option<f64> {
        self.number(field, "a finite number of seconds >= 0", |n| {
            n.is_finite() && n >= 0.0
        })
    }

    fn time(&mut self) -> Option<f64> {
        self.number("time", "Unix time in seconds (a finite number >= 0)", |n| {
            n.is_finite() && n >= 0.0
        })
    }

    fn int(&mut self, field: &str) -> Option<u64> {
        self.number(field, "an integer from 0 to 2^53 (9007199254740992)", |n| {
            n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= MAX_INT
        })
        .map(|n| n as u64)
    }

    fn required_int(&mut self, field: &str) -> Option<u64> {
        if self.get(field).is_none() {
            let line = self.line;
            self.out.error(
                line,
                Some(field),
                serde_json::Value::Null,
                "an integer >= 0 (required)",
            );
            return None;
        }
        self.int(field)
    }

    fn id(&mut self, field: &str) -> Option<String> {
        match self.get(field)? {
            Value::String(s)
                if !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control) =>
            {
                Some(s.to_string())
            }
            other => {
                let expected =
                    format!("a non-empty string of at most {MAX_ID_LEN} bytes without control characters");
                self.bad(field, other, &expected);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Batch {
        parse_batch(body.as_bytes(), None).unwrap()
    }

    fn errs(body: &str) -> Vec<EventError> {
        parse_batch(body.as_bytes(), None).unwrap_err()
    }

    #[test]
    fn an_object_an_array_and_ndjson_all_parse() {
        let one = r#"{"type":"round_end","round":1,"global_loss":0.5}"#;
        assert_eq!(ok(one).events.len(), 1);
        assert_eq!(ok(&format!("[{one},{one}]")).events.len(), 2);
        assert_eq!(ok(&format!("{one}\n\n{one}\r\n")).events.len(), 2);
        let pretty = "{\n  \"type\": \"round_end\",\n  \"round\": 3\n}\n";
        assert_eq!(ok(pretty).events.len(), 1);
    }

    #[test]
    fn python_non_finite_loss_is_accepted_and_null_is_missing() {
        let b = ok(r#"{"type":"round_end","round":2,"global_loss":NaN,"global_accuracy":null}"#);
        let Event::RoundEnd(r) = &b.events[0] else {
            panic!()
        };
        assert!(r.global_loss.unwrap().is_nan());
        assert_eq!(r.global_accuracy, None);
    }

    #[test]
    fn unknown_fields_are_ignored_and_counted() {
        let b = ok(r#"{"type":"round_end","round":2,"strategy":"fedavg","x":1}"#);
        assert_eq!(b.unknown_fields, 2);
    }

    #[test]
    fn accuracy_in_percent_names_the_line_field_value_and_range() {
        let e = errs(
            "{\"type\":\"round_end\",\"round\":1,\"global_accuracy\":0.9}\n\
             {\"type\":\"round_end\",\"round\":2,\"global_accuracy\":94.38}\n",
        );
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 2);
        assert_eq!(e[0].field.as_deref(), Some("global_accuracy"));
        assert_eq!(e[0].value, serde_json::json!(94.38));
        assert!(e[0].expected.contains("0 to 1"));
    }

    #[test]
    fn a_number_sent_as_a_string_is_told_as_a_type_error_and_a_too_large_round_gives_the_limit() {
        let e = errs(r#"{"type":"round_end","round":1,"global_accuracy":"0.9"}"#);
        assert_eq!(e[0].value, serde_json::json!("0.9"));
        assert!(
            e[0].expected.starts_with("a JSON number, not a string"),
            "{}",
            e[0].expected
        );
        assert!(e[0].expected.contains("0 to 1"), "{}", e[0].expected);
        let e = errs(r#"{"type":"round_end","round":18446744073709551615}"#);
        assert_eq!(e[0].field.as_deref(), Some("round"));
        assert!(e[0].expected.contains("9007199254740992"), "{}", e[0].expected);
    }

    #[test]
    fn array_errors_name_the_position() {
        let e = errs(r#"[{"type":"round_end","round":1},{"type":"round_end","round":-1}]"#);
        assert_eq!((e[0].line, e[0].field.as_deref()), (2, Some("round")));
    }

    #[test]
    fn broken_lines_are_reported_and_later_lines_still_checked() {
        let e = errs("{\"type\":\"round_end\",\"round\":1\n{\"type\":\"bogus\",\"round\":1}\n");
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].line, e[0].field.as_deref()), (1, None));
        assert_eq!((e[1].line, e[1].field.as_deref()), (2, Some("type")));
    }

    #[test]
    fn missing_round_and_missing_client_id_are_errors() {
        let e = errs(r#"{"type":"client_update","loss":1}"#);
        let fields: Vec<_> = e.iter().map(|e| e.field.clone().unwrap()).collect();
        assert_eq!(fields, ["round", "client_id"]);
        let b = parse_batch(br#"{"type":"client_update","round":1}"#, Some("site-1")).unwrap();
        let Event::ClientUpdate(u) = &b.events[0] else {
            panic!()
        };
        assert_eq!(u.client_id, "site-1");
    }

    #[test]
    fn an_empty_body_is_an_error() {
        assert_eq!(errs("  \n").len(), 1);
        assert_eq!(errs("[]").len(), 1);
    }

    #[test]
    fn infinite_accuracy_and_negative_durations_are_rejected() {
        let e = errs(r#"{"type":"round_end","round":1,"global_accuracy":Infinity,"duration_seconds":-1}"#);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].value, serde_json::json!("Infinity"));
    }
}
