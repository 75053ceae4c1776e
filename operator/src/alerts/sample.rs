//! Samples the evaluation reads, and a parser for the Prometheus text format the agents serve
//! on `/metrics`, so the operator sees the very series Prometheus scrapes.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flmon_crds::AlertMetric;
use flmon_crds::names::metrics as m;

use crate::controller::rules::metric_series;

/// A label set: label name → value, ordered so equal sets compare and print alike.
pub type Labels = BTreeMap<String, String>;

/// One value of one series at one time, as a scrape yields it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series (metric) name, e.g. `fl_global_loss`.
    pub name: String,
    /// The series' labels, without the name. The evaluation ignores a sample whose `namespace`
    /// or `flmon_monitor` label names another monitor; when those labels are missing the sample
    /// is taken as the monitor's own (agents do not export them; Prometheus adds them).
    pub labels: Labels,
    /// The value; NaN and ±Inf are values like any other (PromQL compares them the same way).
    pub value: f64,
    /// When it was scraped (or the exposition's own timestamp, as Prometheus honours it).
    pub timestamp: SystemTime,
}

impl Sample {
    /// A sample of series `name` with `labels` given as pairs.
    pub fn new(name: &str, labels: &[(&str, &str)], value: f64, timestamp: SystemTime) -> Self {
        Sample {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
            timestamp,
        }
    }
}

/// The series AlertRules read: those of every [`AlertMetric`] plus the operator's phase gauge.
/// A caller may keep only these when it stores scraped samples.
pub fn alert_series() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = AlertMetric::ALL
        .iter()
        .map(|&metric| metric_series(metric).series)
        .collect();
    names.push(m::MONITOR_PHASE);
    names.sort_unstable();
    names.dedup();
    names
}

/// A line of exposition text that is not a comment, a blank or a valid sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the metrics exposition: {reason}: {text:?}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// What was expected.
    pub reason: &'static str,
    /// The offending line (at most 200 characters).
    pub text: String,
}

/// Parses Prometheus text exposition (format 0.0.4): one sample per line
/// `name{label="value",...} value [timestamp_ms]`; `#` lines and blank lines are skipped.
///
/// Only samples whose name `wanted` accepts are kept. Each gets `extra` labels added (the
/// target labels Prometheus would add, e.g. `pod`; a label the line carries itself wins, like
/// Prometheus's `honor_labels`) and the timestamp `at`, unless the line has its own.
///
/// # Errors
/// The first malformed line. Prometheus fails a scrape on a malformed line and the target's
/// series then age out; a caller does the same by keeping none of this text's samples.
pub fn parse_exposition(
    text: &str,
    extra: &Labels,
    at: SystemTime,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Sample>, ExpositionError> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |reason| ExpositionError {
            line: index + 1,
            reason,
            text: line.chars().take(200).collect(),
        };
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(error("expected a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Labels::new();
        if let Some(after_brace) = rest.strip_prefix('{') {
            let (parsed, after) = parse_labels(after_brace).map_err(error)?;
            labels = parsed;
            rest = after;
        }
        if !rest.starts_with([' ', '\t']) {
            return Err(error("expected a space and a value after the series"));
        }
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_float)
            .ok_or_else(|| error("expected a float value (or NaN, +Inf, -Inf)"))?;
        let timestamp = match fields.next() {
            None => at,
            Some(ms) => {
                let ms: i64 = ms
                    .parse()
                    .map_err(|_| error("expected a timestamp in milliseconds"))?;
                timestamp_from_millis(ms).ok_or_else(|| error("expected a timestamp after 1970"))?
            }
        };
        if fields.next().is_some() {
            return Err(error("unexpected text after the timestamp"));
        }
        if !wanted(name) {
            continue;
        }
        for (key, value) in extra {
            labels.entry(key.clone()).or_insert_with(|| value.clone());
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
            timestamp,
        });
    }
    Ok(samples)
}

/// Parses `a="x",b="y"}` (the text after `{`); returns the labels and the text after `}`.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Labels::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let name_end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("expected a label name and a closing '}'")?;
        let name = &text[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("expected a label name ([a-zA-Z_][a-zA-Z0-9_]*)");
        }
        text = text[name_end..].trim_start();
        text = text
            .strip_prefix('=')
            .ok_or("expected '=' after a label name")?
            .trim_start();
        text = text.strip_prefix('"').ok_or("expected a quoted label value")?;
        let mut value = String::new();
        let mut chars = text.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("expected a closing '\"' for a label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err("expected \\n, \\\\ or \\\" after a backslash in a label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        text = text[end + 1..].trim_start();
        if labels.insert(name.to_owned(), value).is_some() {
            return Err("a label repeated within one series");
        }
        if let Some(after) = text.strip_prefix(',') {
            text = after;
        } else if !text.starts_with('}') {
            return Err("expected ',' or '}' after a label value");
        }
    }
}

/// A float as the exposition format writes it, including Go's spellings of NaN and infinities.
fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        // Rust also accepts "inf"/"infinity"/"nan" in any case; the format does not.
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E')) =>
        {
            None
        }
        _ => text.parse().ok(),
    }
}

fn timestamp_from_millis(ms: i64) -> Option<SystemTime> {
    let ms = u64::try_from(ms).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        write!(f, "{}{{{}}} {}", self.name, labels.join(","), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn pod(name: &str) -> Labels {
        Labels::from([("pod".to_owned(), name.to_owned())])
    }

    #[test]
    fn samples_get_the_target_labels_and_the_scrape_time() {
        let text = "# HELP fl_global_loss Global loss.\n# TYPE fl_global_loss gauge\nfl_global_loss 2.5\n\
                    flmon_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-1\",model=\"H200\"} 0.97\n";
        let samples = parse_exposition(text, &pod("server-0"), at(), |_| true).expect("valid text");
        assert_eq!(
            samples,
            vec![
                Sample::new("fl_global_loss", &[("pod", "server-0")], 2.5, at()),
                Sample::new(
                    "flmon_gpu_utilization_ratio",
                    &[
                        ("gpu", "0"),
                        ("model", "H200"),
                        ("pod", "server-0"),
                        ("uuid", "GPU-1")
                    ],
                    0.97,
                    at()
                ),
            ]
        );
    }

    #[test]
    fn escapes_special_values_and_own_timestamps_are_understood() {
        let text = "x{a=\"q\\\"uote\\\\ \\n\",b=\"{},\",} NaN 1000\ny +Inf\nz -Inf\n";
        let samples = parse_exposition(text, &Labels::new(), at(), |_| true).expect("valid text");
        assert_eq!(samples[0].labels["a"], "q\"uote\\ \n");
        assert_eq!(samples[0].labels["b"], "{},");
        assert!(samples[0].value.is_nan());
        assert_eq!(samples[0].timestamp, UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(samples[1].value, f64::INFINITY);
        assert_eq!(samples[2].value, f64::NEG_INFINITY);
    }

    #[test]
    fn a_label_the_line_carries_wins_over_the_target_label() {
        let samples = parse_exposition("x{pod=\"own\"} 1\n", &pod("target"), at(), |_| true).expect("valid");
        assert_eq!(samples[0].labels["pod"], "own");
    }

    #[test]
    fn unwanted_series_are_dropped() {
        let text = "fl_global_loss 1\nflmon_network_receive_bytes_total 5\n";
        let wanted = alert_series();
        let samples =
            parse_exposition(text, &Labels::new(), at(), |name| wanted.contains(&name)).expect("valid");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].name, "fl_global_loss");
    }

    #[test]
    fn a_malformed_line_is_reported_with_its_number() {
        for (text, reason) in [
            ("ok 1\nbad{a=\"x\" 1\n", "expected ',' or '}'"),
            ("ok 1\n\nbad\n", "expected a space"),
            ("x abc\n", "expected a float"),
            ("x inf\n", "expected a float"),
            ("x{a=\"1\",a=\"2\"} 1\n", "repeated"),
            ("x 1 -5\n", "after 1970"),
            ("x 1 2 3\n", "unexpected text"),
            ("{a=\"1\"} 1\n", "metric name"),
        ] {
            let error = parse_exposition(text, &Labels::new(), at(), |_| true).expect_err(text);
            assert!(error.reason.contains(reason), "{text:?}: {error}");
            assert!(error.line >= 1);
        }
        let error = parse_exposition("ok 1\n\nbad\n", &Labels::new(), at(), |_| true).expect_err("bad");
        assert_eq!(error.line, 3);
    }

    #[test]
    fn every_alert_metric_series_is_listed() {
        let names = alert_series();
        assert!(names.contains(&"fl_global_loss"));
        assert!(names.contains(&"flmon_kafka_consumergroup_lag"));
        assert!(names.contains(&"flmon_monitor_phase"));
    }

    proptest! {
        #[test]
        fn no_input_makes_the_parser_panic(text in "\\PC{0,200}") {
            let _ = parse_exposition(&text, &pod("p"), at(), |_| true);
        }

        #[test]
        fn written_samples_parse_back(
            value in proptest::num::f64::NORMAL | proptest::num::f64::ZERO,
            label in "[ -~]{0,20}",
        ) {
            let escaped = label.replace('\\', "\\\\").replace('"', "\\\"");
            let text = format!("series_x{{l=\"{escaped}\"}} {value}\n");
            let samples = parse_exposition(&text, &Labels::new(), at(), |_| true).expect("valid");
            prop_assert_eq!(samples.len(), 1);
            prop_assert_eq!(&samples[0].labels["l"], &label);
            prop_assert_eq!(samples[0].value, value);
        }
    }
}
