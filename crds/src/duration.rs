//! Durations in Prometheus syntax (`30s`, `5m`, `1h30m`), as every duration in flmon's CRs is written.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration as StdDuration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern the CRD schema enforces; the same one Prometheus Operator's CRDs use, so a
/// duration that passes here is one Prometheus accepts.
pub const DURATION_PATTERN: &str =
    "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$";

/// Longest duration string accepted (also bounds the CEL rule's cost).
pub const MAX_LENGTH: usize = 64;

/// What a duration looks like, as error messages say it.
pub const EXPECTED: &str =
    "expected Prometheus syntax such as 30s, 5m or 1h30m (units y, w, d, h, m, s, ms, largest first)";

/// A duration written in Prometheus syntax: units `y`, `w`, `d`, `h`, `m`, `s`, `ms`, largest first,
/// each at most once (`1h30m`, `90s`, `0`). Kept as the user wrote it so it round-trips unchanged
/// into generated PrometheusRules.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Duration {
    text: String,
    value: StdDuration,
}

/// Why a string is not a Prometheus duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The rejected text.
    pub value: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a Prometheus duration ({}); expected e.g. 30s, 5m, 1h30m",
            self.value, self.reason
        )
    }
}

impl std::error::Error for DurationError {}

impl Duration {
    /// The duration as a [`std::time::Duration`].
    pub fn as_std(&self) -> StdDuration {
        self.value
    }

    /// The text as written in the resource, e.g. `1h30m`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Builds a duration from whole seconds, written in the shortest Prometheus form.
    pub fn from_secs(secs: u64) -> Self {
        let mut text = String::new();
        let mut rest = secs;
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= size {
                text.push_str(&format!("{}{unit}", rest / size));
                rest %= size;
            }
        }
        if text.is_empty() {
            text.push('0');
        }
        Duration {
            text,
            value: StdDuration::from_secs(secs),
        }
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError {
            value: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > MAX_LENGTH {
            return Err(err("longer than 64 characters"));
        }
        if s == "0" {
            return Ok(Duration {
                text: s.to_owned(),
                value: StdDuration::ZERO,
            });
        }
        // Units in the order Prometheus requires them, with their size in milliseconds.
        const UNITS: [(&str, u64); 7] = [
            ("y", 365 * 86_400_000),
            ("w", 7 * 86_400_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ];
        let bytes = s.as_bytes();
        let mut pos = 0;
        let mut next_unit = 0;
        let mut millis: u64 = 0;
        while pos < bytes.len() {
            let start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            if pos == start {
                return Err(err("a number must precede each unit"));
            }
            let number: u64 = s[start..pos].parse().map_err(|_| err("number too large"))?;
            let unit_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
                pos += 1;
            }
            let unit = &s[unit_start..pos];
            let Some(offset) = UNITS[next_unit..].iter().position(|(u, _)| *u == unit) else {
                return Err(if UNITS.iter().any(|(u, _)| *u == unit) {
                    err("units must go from largest to smallest, each once")
                } else {
                    err("unknown unit; use y, w, d, h, m, s or ms")
                });
            };
            let index = next_unit + offset;
            let part = number
                .checked_mul(UNITS[index].1)
                .ok_or_else(|| err("too large"))?;
            millis = millis.checked_add(part).ok_or_else(|| err("too large"))?;
            next_unit = index + 1;
        }
        Ok(Duration {
            text: s.to_owned(),
            value: StdDuration::from_millis(millis),
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // A CEL rule rather than `pattern`: the API server then answers with the value and a
        // sentence (`"5 seconds" is not a duration: …`) instead of the regular expression.
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches('{DURATION_PATTERN}')"),
                "messageExpression": format!("'\"' + self + '\" is not a duration: {EXPECTED}'"),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        s.parse::<Duration>().expect("valid duration").as_std().as_secs()
    }

    #[test]
    fn prometheus_durations_parse_to_their_length() {
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("5m"), 300);
        assert_eq!(secs("1h30m"), 5_400);
        assert_eq!(secs("1d"), 86_400);
        assert_eq!(secs("0"), 0);
        assert_eq!(
            "1500ms".parse::<Duration>().expect("valid").as_std(),
            StdDuration::from_millis(1500)
        );
    }

    #[test]
    fn malformed_durations_are_rejected_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("5", "unknown unit; use y, w, d, h, m, s or ms"),
            ("m", "a number must precede each unit"),
            ("30m1h", "units must go from largest to smallest, each once"),
            ("5mm", "unknown unit; use y, w, d, h, m, s or ms"),
            ("1.5h", "unknown unit; use y, w, d, h, m, s or ms"),
            ("99999999999999999999s", "number too large"),
        ] {
            let error = text.parse::<Duration>().expect_err(text);
            assert_eq!(error.reason, reason, "{text}");
        }
    }

    #[test]
    fn durations_keep_the_text_the_user_wrote() {
        let d: Duration = serde_json::from_str("\"90s\"").expect("valid");
        assert_eq!(serde_json::to_string(&d).expect("serializes"), "\"90s\"");
        assert_eq!(Duration::from_secs(5_400).as_str(), "1h30m");
        assert_eq!(Duration::from_secs(0).as_str(), "0");
    }
}
