//! The operator's own metrics, rendered in the Prometheus text format on its `/metrics`:
//! reconciles, errors by category, durations, status writes, leadership, and the per-monitor
//! series that alert rules query (`flmon_monitor_phase`, `flmon_monitor_rounds_without_improvement`).
//! Other subsystems (the webhook, the analysis) add their own renderers to [`Exposition`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flmon_crds::Phase;
use flmon_crds::names::metrics as m;

/// Upper bounds of the reconcile-duration histogram, in seconds.
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Every phase, for the one-hot `flmon_monitor_phase` gauge.
const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Waiting,
    Phase::Training,
    Phase::Converged,
    Phase::Stalled,
    Phase::Diverged,
    Phase::Completed,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        for (bucket, bound) in self.counts.iter_mut().zip(BUCKETS) {
            if value <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }
}

/// A monitor's identity as metric labels.
type MonitorKey = (String, String);

/// Counters and gauges of the controller; cheap to update from every reconcile.
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    reconciles: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    durations: Mutex<BTreeMap<&'static str, Histogram>>,
    status_writes: Mutex<BTreeMap<&'static str, u64>>,
    status_writes_total: AtomicU64,
    applies_total: AtomicU64,
    leader: AtomicBool,
    phases: Mutex<BTreeMap<MonitorKey, Phase>>,
    rounds_without_improvement: Mutex<BTreeMap<MonitorKey, f64>>,
}

/// Locks a metrics map; a panic while holding it cannot leave a counter inconsistent, so a
/// poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ControllerMetrics {
    /// Records one reconcile of `kind` (`FLMonitor`, `AlertRule`): its duration, and the error
    /// category when it failed.
    pub fn reconciled(&self, kind: &'static str, elapsed: Duration, error_category: Option<&'static str>) {
        let result = if error_category.is_some() {
            "error"
        } else {
            "success"
        };
        *lock(&self.reconciles).entry((kind, result)).or_default() += 1;
        if let Some(category) = error_category {
            *lock(&self.errors).entry((kind, category)).or_default() += 1;
        }
        lock(&self.durations)
            .entry(kind)
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Records one write to a status subresource.
    pub fn status_written(&self, kind: &'static str) {
        *lock(&self.status_writes).entry(kind).or_default() += 1;
        self.status_writes_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Status writes so far, all kinds together.
    pub fn status_writes(&self) -> u64 {
        self.status_writes_total.load(Ordering::Relaxed)
    }

    /// Records one server-side apply.
    pub fn applied(&self) {
        self.applies_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Server-side applies so far.
    pub fn applies(&self) -> u64 {
        self.applies_total.load(Ordering::Relaxed)
    }

    /// Reconciles of `kind` that ended with `result` (`success` or `error`).
    pub fn reconciles(&self, kind: &'static str, result: &'static str) -> u64 {
        lock(&self.reconciles).get(&(kind, result)).copied().unwrap_or(0)
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Whether this replica leads (as last set).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Sets a monitor's current phase (exported one-hot, for alert rules' `activePhases`).
    pub fn set_phase(&self, namespace: &str, monitor: &str, phase: Phase) {
        lock(&self.phases).insert((namespace.to_owned(), monitor.to_owned()), phase);
    }

    /// Sets a monitor's rounds without improvement (fed by the analysis).
    pub fn set_rounds_without_improvement(&self, namespace: &str, monitor: &str, rounds: u64) {
        // Rounds stay far below 2^53, where f64 is exact.
        #[allow(clippy::cast_precision_loss)]
        let value = rounds as f64;
        lock(&self.rounds_without_improvement).insert((namespace.to_owned(), monitor.to_owned()), value);
    }

    /// Drops a deleted monitor's series.
    pub fn forget_monitor(&self, namespace: &str, monitor: &str) {
        let key = (namespace.to_owned(), monitor.to_owned());
        lock(&self.phases).remove(&key);
        lock(&self.rounds_without_improvement).remove(&key);
    }

    /// Appends the metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        family(
            out,
            "flmon_operator_reconciles_total",
            "counter",
            "Reconciles by kind and result.",
        );
        for ((kind, result), value) in lock(&self.reconciles).iter() {
            let _ = writeln!(
                out,
                "flmon_operator_reconciles_total{{kind=\"{kind}\",result=\"{result}\"}} {value}"
            );
        }
        family(
            out,
            "flmon_operator_reconcile_errors_total",
            "counter",
            "Failed reconciles by kind and error category.",
        );
        for ((kind, category), value) in lock(&self.errors).iter() {
            let _ = writeln!(
                out,
                "flmon_operator_reconcile_errors_total{{kind=\"{kind}\",category=\"{category}\"}} {value}"
            );
        }
        family(
            out,
            "flmon_operator_reconcile_duration_seconds",
            "histogram",
            "Duration of reconciles by kind.",
        );
        for (kind, histogram) in lock(&self.durations).iter() {
            for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                let _ = writeln!(
                    out,
                    "flmon_operator_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "flmon_operator_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "flmon_operator_reconcile_duration_seconds_sum{{kind=\"{kind}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "flmon_operator_reconcile_duration_seconds_count{{kind=\"{kind}\"}} {}",
                histogram.count
            );
        }
        family(
            out,
            "flmon_operator_status_writes_total",
            "counter",
            "Writes to status subresources by kind; none while nothing changes.",
        );
        for (kind, value) in lock(&self.status_writes).iter() {
            let _ = writeln!(
                out,
                "flmon_operator_status_writes_total{{kind=\"{kind}\"}} {value}"
            );
        }
        family(
            out,
            "flmon_operator_applies_total",
            "counter",
            "Server-side applies of generated objects.",
        );
        let _ = writeln!(out, "flmon_operator_applies_total {}", self.applies());
        family(
            out,
            "flmon_operator_leader",
            "gauge",
            "1 while this replica holds the leader Lease.",
        );
        let _ = writeln!(
            out,
            "flmon_operator_leader {}",
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        family(
            out,
            m::MONITOR_PHASE,
            "gauge",
            "1 for each FLMonitor's current phase, 0 for the others.",
        );
        for ((namespace, monitor), current) in lock(&self.phases).iter() {
            for phase in PHASES {
                let _ = writeln!(
                    out,
                    "{}{{namespace=\"{namespace}\",{}=\"{monitor}\",phase=\"{}\"}} {}",
                    m::MONITOR_PHASE,
                    m::LABEL_MONITOR,
                    phase.as_str(),
                    u8::from(phase == *current)
                );
            }
        }
        family(
            out,
            m::ROUNDS_WITHOUT_IMPROVEMENT,
            "gauge",
            "Rounds since each FLMonitor's primary metric last improved.",
        );
        for ((namespace, monitor), value) in lock(&self.rounds_without_improvement).iter() {
            let _ = writeln!(
                out,
                "{}{{namespace=\"{namespace}\",{}=\"{monitor}\"}} {value}",
                m::ROUNDS_WITHOUT_IMPROVEMENT,
                m::LABEL_MONITOR
            );
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Something that appends metrics in the Prometheus text format.
pub type Renderer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Everything the operator's `/metrics` serves: one renderer per subsystem, in order.
#[derive(Clone, Default)]
pub struct Exposition {
    renderers: Vec<Renderer>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("renderers", &self.renderers.len())
            .finish()
    }
}

impl Exposition {
    /// Adds a renderer.
    pub fn add(&mut self, renderer: Renderer) {
        self.renderers.push(renderer);
    }

    /// The full exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for renderer in &self.renderers {
            renderer(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_errors_and_durations_are_rendered_by_kind() {
        let metrics = ControllerMetrics::default();
        metrics.reconciled("FLMonitor", Duration::from_millis(20), None);
        metrics.reconciled("FLMonitor", Duration::from_millis(300), Some("apply"));
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(text.contains("flmon_operator_reconciles_total{kind=\"FLMonitor\",result=\"success\"} 1\n"));
        assert!(
            text.contains("flmon_operator_reconcile_errors_total{kind=\"FLMonitor\",category=\"apply\"} 1\n")
        );
        assert!(text.contains(
            "flmon_operator_reconcile_duration_seconds_bucket{kind=\"FLMonitor\",le=\"0.025\"} 1\n"
        ));
        assert!(text.contains("flmon_operator_reconcile_duration_seconds_count{kind=\"FLMonitor\"} 2\n"));
    }

    #[test]
    fn the_phase_is_exported_one_hot_and_forgotten_with_the_monitor() {
        let metrics = ControllerMetrics::default();
        metrics.set_phase("fl", "mnist", Phase::Training);
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(text.contains(
            "flmon_monitor_phase{namespace=\"fl\",flmon_monitor=\"mnist\",phase=\"Training\"} 1\n"
        ));
        assert!(
            text.contains(
                "flmon_monitor_phase{namespace=\"fl\",flmon_monitor=\"mnist\",phase=\"Pending\"} 0\n"
            )
        );
        metrics.forget_monitor("fl", "mnist");
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(!text.contains("mnist"));
    }
}
