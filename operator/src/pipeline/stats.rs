//! The pipeline's own metrics on the operator's `/metrics`: agent requests by kind and result,
//! unreachable agents, history records read and missed, agent restarts, polls and their
//! duration, pod annotation patches and reports written.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters and gauges of the pipeline; updated from the poll loop, read by `/metrics`.
#[derive(Debug, Default)]
pub struct PipelineStats {
    history_ok: AtomicU64,
    history_failed: AtomicU64,
    metrics_ok: AtomicU64,
    metrics_failed: AtomicU64,
    unreachable: AtomicU64,
    records: AtomicU64,
    missed: AtomicU64,
    restarts: AtomicU64,
    polls_ok: AtomicU64,
    polls_failed: AtomicU64,
    last_poll_micros: AtomicU64,
    annotation_patches: AtomicU64,
    reports: AtomicU64,
}

/// Which request to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `/v1/history`.
    History,
    /// `/metrics`.
    Metrics,
}

impl PipelineStats {
    /// Counts a request to an agent.
    pub fn request(&self, request: Request, ok: bool) {
        let counter = match (request, ok) {
            (Request::History, true) => &self.history_ok,
            (Request::History, false) => &self.history_failed,
            (Request::Metrics, true) => &self.metrics_ok,
            (Request::Metrics, false) => &self.metrics_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Agents whose history could not be read at the last poll.
    pub fn set_unreachable(&self, agents: u64) {
        self.unreachable.store(agents, Ordering::Relaxed);
    }

    /// Counts history records read, records missed (evicted before they were read) and agents
    /// found restarted.
    pub fn history(&self, records: u64, missed: u64, restarted: bool) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.missed.fetch_add(missed, Ordering::Relaxed);
        if restarted {
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a poll and records its duration.
    pub fn poll(&self, ok: bool, took: Duration) {
        let counter = if ok { &self.polls_ok } else { &self.polls_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_poll_micros.store(micros, Ordering::Relaxed);
    }

    /// Polls completed so far (successful or not).
    pub fn polls(&self) -> u64 {
        self.polls_ok.load(Ordering::Relaxed) + self.polls_failed.load(Ordering::Relaxed)
    }

    /// Counts a pod annotation patch.
    pub fn annotation_patched(&self) {
        self.annotation_patches.fetch_add(1, Ordering::Relaxed);
    }

    /// Pod annotation patches so far.
    pub fn annotation_patches(&self) -> u64 {
        self.annotation_patches.load(Ordering::Relaxed)
    }

    /// Counts a report ConfigMap written.
    pub fn report_written(&self) {
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            out,
            "flmon_operator_agent_requests_total",
            "counter",
            "Requests to agents by endpoint and result.",
        );
        for (endpoint, result, value) in [
            ("history", "success", get(&self.history_ok)),
            ("history", "error", get(&self.history_failed)),
            ("metrics", "success", get(&self.metrics_ok)),
            ("metrics", "error", get(&self.metrics_failed)),
        ] {
            let _ = writeln!(
                out,
                "flmon_operator_agent_requests_total{{endpoint=\"{endpoint}\",result=\"{result}\"}} {value}"
            );
        }
        let simple = [
            (
                "flmon_operator_agents_unreachable",
                "gauge",
                "Agents whose history could not be read at the last poll.",
                get(&self.unreachable),
            ),
            (
                "flmon_operator_history_records_total",
                "counter",
                "History records read from agents.",
                get(&self.records),
            ),
            (
                "flmon_operator_history_missed_records_total",
                "counter",
                "History records evicted from agents' ring buffers before they were read.",
                get(&self.missed),
            ),
            (
                "flmon_operator_agent_restarts_total",
                "counter",
                "Agents whose history counter started over.",
                get(&self.restarts),
            ),
            (
                "flmon_operator_pod_annotation_patches_total",
                "counter",
                "Client pods whose flmon.io/client-trend or flmon.io/straggler annotation was patched.",
                get(&self.annotation_patches),
            ),
            (
                "flmon_operator_reports_written_total",
                "counter",
                "Final performance reports written to ConfigMaps.",
                get(&self.reports),
            ),
        ];
        for (name, kind, help, value) in simple {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        family(
            out,
            "flmon_operator_polls_total",
            "counter",
            "Polls of every monitor's agents by result.",
        );
        let _ = writeln!(
            out,
            "flmon_operator_polls_total{{result=\"success\"}} {}\nflmon_operator_polls_total{{result=\"error\"}} {}",
            get(&self.polls_ok),
            get(&self.polls_failed)
        );
        family(
            out,
            "flmon_operator_last_poll_duration_seconds",
            "gauge",
            "Duration of the last poll.",
        );
        // Microseconds stay far below 2^53, where f64 is exact.
        #[allow(clippy::cast_precision_loss)]
        let seconds = get(&self.last_poll_micros) as f64 / 1e6;
        let _ = writeln!(out, "flmon_operator_last_poll_duration_seconds {seconds}");
    }
}
