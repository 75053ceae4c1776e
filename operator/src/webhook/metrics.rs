//! Admission counters and latency of the injection webhook, rendered in the Prometheus text
//! format for the operator's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::inject::SkipReason;

/// How an admission request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The agent was injected.
    Injected,
    /// The pod was admitted unchanged, for a [`SkipReason`].
    Skipped(SkipReason),
    /// The request could not be handled (unreadable body, not a pod CREATE); the pod is admitted
    /// unchanged.
    Error(ErrorKind),
}

/// Why a request could not be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The body is not an AdmissionReview of a pod.
    BadRequest,
    /// Not a pod CREATE (the webhook is registered for nothing else).
    UnexpectedOperation,
    /// The patch could not be serialised.
    Patch,
}

impl ErrorKind {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::UnexpectedOperation => "UnexpectedOperation",
            Self::Patch => "Patch",
        }
    }
}

impl Outcome {
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::Injected => ("injected", ""),
            Self::Skipped(reason) => ("skipped", reason.as_str()),
            Self::Error(kind) => ("error", kind.as_str()),
        }
    }
}

/// Upper bounds of the latency histogram, in seconds (the target is p99 ≤ 2 ms).
const BUCKETS: [f64; 9] = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25];

/// Counters by outcome and a latency histogram; cheap to update from every request.
#[derive(Debug, Default)]
pub struct AdmissionMetrics {
    outcomes: Mutex<BTreeMap<Outcome, u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    events_dropped: AtomicU64,
}

impl AdmissionMetrics {
    /// Counts one answered request and how long it took.
    pub fn record(&self, outcome: Outcome, elapsed: Duration) {
        if let Ok(mut outcomes) = self.outcomes.lock() {
            *outcomes.entry(outcome).or_default() += 1;
        }
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts an Event that was dropped because the publishing queue was full.
    pub fn event_dropped(&self) {
        self.events_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests ended with `outcome` so far.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes
            .lock()
            .map(|o| o.get(&outcome).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Appends the metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let outcomes = self.outcomes.lock().map(|o| o.clone()).unwrap_or_default();
        out.push_str(
            "# HELP flmon_webhook_admissions_total Pod admission requests answered by the injection webhook, by outcome and skip reason.\n\
             # TYPE flmon_webhook_admissions_total counter\n",
        );
        // Every outcome appears from the start, so rate() and alerts see a zero before the first.
        let mut all: BTreeMap<Outcome, u64> = std::iter::once(Outcome::Injected)
            .chain(SkipReason::ALL.into_iter().map(Outcome::Skipped))
            .map(|o| (o, 0))
            .collect();
        all.extend(outcomes);
        for (outcome, value) in all {
            let (outcome, reason) = outcome.labels();
            let _ = writeln!(
                out,
                "flmon_webhook_admissions_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} {value}"
            );
        }
        out.push_str(
            "# HELP flmon_webhook_admission_duration_seconds Time from reading an AdmissionReview to writing the answer.\n\
             # TYPE flmon_webhook_admission_duration_seconds histogram\n",
        );
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "flmon_webhook_admission_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "flmon_webhook_admission_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             flmon_webhook_admission_duration_seconds_sum {sum}\n\
             flmon_webhook_admission_duration_seconds_count {count}"
        );
        let _ = writeln!(
            out,
            "# HELP flmon_webhook_events_dropped_total Injection Events not published because the queue was full.\n\
             # TYPE flmon_webhook_events_dropped_total counter\n\
             flmon_webhook_events_dropped_total {}",
            self.events_dropped.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_by_reason_and_zeros_are_exported() {
        let metrics = AdmissionMetrics::default();
        metrics.record(Outcome::Injected, Duration::from_micros(300));
        metrics.record(
            Outcome::Skipped(SkipReason::ContainerNameClash),
            Duration::from_millis(1),
        );
        metrics.record(Outcome::Error(ErrorKind::BadRequest), Duration::from_millis(20));
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(text.contains("flmon_webhook_admissions_total{outcome=\"injected\",reason=\"\"} 1"));
        assert!(
            text.contains(
                "flmon_webhook_admissions_total{outcome=\"skipped\",reason=\"ContainerNameClash\"} 1"
            )
        );
        assert!(
            text.contains("flmon_webhook_admissions_total{outcome=\"skipped\",reason=\"HostNetwork\"} 0")
        );
        assert!(text.contains("flmon_webhook_admissions_total{outcome=\"error\",reason=\"BadRequest\"} 1"));
        assert!(text.contains("flmon_webhook_admission_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("flmon_webhook_admission_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert_eq!(metrics.count(Outcome::Injected), 1);
    }
}
