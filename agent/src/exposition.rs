//! Writes the Prometheus text exposition format (0.0.4): families with `# HELP` and `# TYPE`,
//! samples with escaped labels, histograms with cumulative buckets. Families are written whole, so
//! a family's samples are always contiguous (promtool rejects split families).

use std::fmt::Write as _;

use crate::metrics::{Kind, MetricDef};

/// An append-only buffer of exposition text.
#[derive(Debug, Default)]
pub struct TextWriter {
    buf: String,
}

impl TextWriter {
    /// An empty writer.
    pub fn new() -> Self {
        TextWriter::default()
    }

    /// Writes one family: `fill` adds its samples; nothing (not even the header) is written when
    /// it adds none, so absent data stays absent.
    pub fn family(&mut self, def: &MetricDef, fill: impl FnOnce(&mut FamilyWriter<'_>)) {
        let start = self.buf.len();
        let mut family = FamilyWriter {
            def,
            buf: &mut self.buf,
            samples: 0,
        };
        family.header();
        let header_end = family.buf.len();
        fill(&mut family);
        if family.samples == 0 {
            self.buf.truncate(start);
        }
        debug_assert!(self.buf.len() == start || self.buf.len() > header_end);
    }

    /// A family with one unlabelled sample, when the value is known.
    pub fn single(&mut self, def: &MetricDef, value: Option<f64>) {
        if let Some(v) = value {
            self.family(def, |f| f.sample(&[], v));
        }
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.buf
    }
}

/// Adds the samples of one family.
pub struct FamilyWriter<'a> {
    def: &'a MetricDef,
    buf: &'a mut String,
    samples: usize,
}

impl FamilyWriter<'_> {
    fn header(&mut self) {
        let kind = match self.def.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(
            self.buf,
            "# HELP {} {}",
            self.def.name,
            escape_help(self.def.help)
        );
        let _ = writeln!(self.buf, "# TYPE {} {}", self.def.name, kind);
    }

    /// One sample of a gauge or counter.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.line(self.def.name, "", labels, None, value);
    }

    /// A histogram's buckets, `_sum` and `_count`.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &Histogram) {
        let name = self.def.name;
        let mut cumulative = 0u64;
        for (bound, count) in h.bounds.iter().zip(&h.counts) {
            cumulative += count;
            self.line(
                name,
                "_bucket",
                labels,
                Some(("le", &format_value(*bound))),
                cumulative as f64,
            );
        }
        self.line(name, "_bucket", labels, Some(("le", "+Inf")), h.count as f64);
        self.line(name, "_sum", labels, None, h.sum);
        self.line(name, "_count", labels, None, h.count as f64);
    }

    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        v: f64,
    ) {
        self.samples += 1;
        self.buf.push_str(name);
        self.buf.push_str(suffix);
        if !labels.is_empty() || extra.is_some() {
            self.buf.push('{');
            let mut first = true;
            for (k, val) in labels.iter().copied().chain(extra) {
                if !first {
                    self.buf.push(',');
                }
                first = false;
                self.buf.push_str(k);
                self.buf.push_str("=\"");
                escape_label_into(self.buf, val);
                self.buf.push('"');
            }
            self.buf.push('}');
        }
        self.buf.push(' ');
        self.buf.push_str(&format_value(v));
        self.buf.push('\n');
    }
}

/// A histogram with fixed upper bounds; `counts[i]` holds observations in `(bounds[i-1], bounds[i]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, finite).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// Records one observation; non-finite values are ignored (they would poison `_sum`).
    pub fn observe(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// A sample value as Prometheus writes it: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

fn escape_label_into(buf: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '"' => buf.push_str("\\\""),
            '\n' => buf.push_str("\\n"),
            c => buf.push(c),
        }
    }
}

fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{GLOBAL_LOSS, ROUND_DURATION};

    #[test]
    fn a_family_without_samples_writes_nothing() {
        let mut w = TextWriter::new();
        w.family(&GLOBAL_LOSS, |_| {});
        w.single(&GLOBAL_LOSS, None);
        assert_eq!(w.finish(), "");
    }

    #[test]
    fn labels_are_escaped_and_values_formatted() {
        let mut w = TextWriter::new();
        w.family(&GLOBAL_LOSS, |f| {
            f.sample(&[("a", "x\"y\\z\nw")], 0.25);
            f.sample(&[], f64::NAN);
            f.sample(&[], 3.0);
        });
        let text = w.finish();
        assert!(
            text.contains("fl_global_loss{a=\"x\\\"y\\\\z\\nw\"} 0.25\n"),
            "{text}"
        );
        assert!(text.contains("fl_global_loss NaN\n"));
        assert!(text.contains("fl_global_loss 3\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        static BOUNDS: [f64; 2] = [1.0, 10.0];
        let mut h = Histogram::new(&BOUNDS);
        for v in [0.5, 5.0, 5.0, 50.0, f64::NAN] {
            h.observe(v);
        }
        let mut w = TextWriter::new();
        w.family(&ROUND_DURATION, |f| f.histogram(&[], &h));
        let text = w.finish();
        assert!(text.contains("fl_round_duration_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("fl_round_duration_seconds_bucket{le=\"10\"} 3\n"));
        assert!(text.contains("fl_round_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("fl_round_duration_seconds_sum 60.5\n"));
        assert!(text.contains("fl_round_duration_seconds_count 4\n"));
    }

    #[test]
    fn values_use_prometheus_spellings() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1e300), "1e300");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(-2.0), "-2");
    }
}
