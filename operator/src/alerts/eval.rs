//! The AlertRule evaluator: what the generated PrometheusRule means, computed by the operator.
//!
//! # The expression
//! [`crate::controller::rules::promql`] compiles a condition to
//! `AGG by (namespace, flmon_monitor[, scope]) (last_over_time(SERIES{namespace, flmon_monitor}[2i])) [* scale] OP threshold`,
//! gated by the monitor's phase. [`expression_value`] computes the same instant vector:
//!
//! 1. **Selection.** Samples of the metric's series ([`metric_series`]) belonging to the monitor: a
//!    sample whose `namespace` or `flmon_monitor` label names something else is not selected; one
//!    without those labels is the monitor's own (agents do not export them, Prometheus adds them).
//! 2. **Freshness** (`last_over_time(…[2i])`, `i` = the monitor's scrape interval, 30 s when unset).
//!    A series is identified by all its labels. Its value is that of its newest sample with
//!    `now − 2i ≤ timestamp ≤ now` (both ends included, as Prometheus 2's range selectors do;
//!    Prometheus 3 excludes a sample exactly `2i` old, a difference only when a scrape lands exactly on
//!    that instant). A series with no such sample is **absent**: older than two intervals, or from a
//!    target that is gone (the caller stops passing samples of a pod once the pod is gone — at
//!    most `2i` earlier than Prometheus, which keeps the last value in range after its stale
//!    marker), or never scraped.
//! 3. **Scope.** Series are grouped by the values of `namespace`, `flmon_monitor` (the monitor's
//!    own) and the metric's scope labels (`pod`; `pod`, `gpu`; `consumergroup`); a series without a
//!    scope label falls in the group where that label is empty, and the result then has no such
//!    label, as in PromQL.
//! 4. **Aggregation.** `max`: the largest value, where NaN loses to any number and only a group of
//!    NaNs is NaN (PromQL's `max`). `sum`: the Kahan–Neumaier compensated sum (as Prometheus 3
//!    sums; lags are integers, which every summation order adds exactly), so NaN or opposite
//!    infinities give NaN.
//! 5. **Unit.** The group's value times the metric's `scale` (accuracy percent → 0–1,
//!    GPU ratio → percent), the same floating-point product PromQL computes.
//! 6. **Comparison.** `value OP threshold` as IEEE comparisons ([`flmon_crds::ComparisonOp::holds`]): NaN
//!    satisfies only `!=`. A group that fails is not in the result.
//! 7. **Phase.** With `activePhases` set, nothing is in the result while the monitor's phase is
//!    another one (`unless on(…) flmon_monitor_phase{phase!~…} == 1`); with no known phase the
//!    rule is evaluated (the PromQL too evaluates without the operator's phase metric).
//!
//! # The life cycle (Prometheus's alerting rule)
//! Each element of the result is an alert instance, keyed by the rule and its full label set
//! ([`Alert::labels`]: `alertname`, [`alert_labels`], `namespace`, `flmon_monitor`, scope labels —
//! exactly those of the PrometheusRule's alert, so Alertmanager deduplicates the two):
//! - not active and in the result → **pending** since `now` (`activeAt`);
//! - pending and `now − activeAt ≥ for` → **firing** (`firedAt = now`); with `for: 0` that is the
//!   same evaluation that first saw it;
//! - pending and not in the result → forgotten (no notification: it never fired);
//! - firing and not in the result (the condition fails, the value is absent or stale, the phase
//!   left `activePhases`, or the rule no longer applies) → **resolved** (`resolvedAt = now`),
//!   reported once, then forgotten;
//! - reappearing after that → a new instance, pending again (so `for` counts afresh).
//!
//! `for` is measured between evaluations, so an alert fires at the first evaluation at least
//! `for` after the one that first saw the condition — Prometheus's behaviour with its evaluation
//! interval. The state lives in memory: an operator restart starts pending afresh (Prometheus
//! restores it from `ALERTS_FOR_STATE`).
//!
//! # Notifications (Events and webhooks) and `debounce`
//! Per alert instance (the rule, the monitor and the scope: `(rule, monitor[, pod])` for the
//! metrics of SPEC §3's table, `(rule, monitor, pod, gpu)` for GPUs, `(rule, monitor,
//! consumergroup)` for lag), with `d` the rule's `debounce`:
//! - **Firing** is notified at an evaluation where the instance is firing and no firing
//!   notification for it was sent in the last `d` (so: when it starts firing; again every `d` while
//!   it keeps firing; and when it fires again after a flap only once `d` has passed since the
//!   last one). `debounce: 0` notifies at every evaluation while firing.
//! - **Resolved** is notified once, when it resolves, if a firing notification for it was sent
//!   since the last resolved one — a receiver never sees a resolve for a firing it was not told
//!   about (a flap suppressed by `d` is silent both ways).
//!
//! Alertmanager is not debounced: [`Evaluation::firing`] and [`Evaluation::resolved`] are sent at
//! every evaluation (see [`super::notify`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use flmon_crds::names::metrics as m;
use flmon_crds::{AlertRule, FLMonitor, FiringAlert, NotifySpec, Phase, Severity};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::sample::{Labels, Sample};
use crate::controller::rules::{
    Aggregation, DEFAULT_SCRAPE_INTERVAL, alert_labels, alert_name, metric_series,
};

/// At most this many alerts are listed in an FLMonitor's `status.firingAlerts` (its schema's bound).
pub const MAX_STATUS_ALERTS: usize = 100;

/// The monitor an evaluation is about: identity, phase and scrape interval.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorRef {
    /// The monitor's namespace.
    pub namespace: String,
    /// The monitor's name.
    pub name: String,
    /// The monitor's current phase; `None` while unknown (rules are then evaluated).
    pub phase: Option<Phase>,
    /// The scrape interval `i`; samples older than `2i` are absent.
    pub scrape_interval: Duration,
}

impl MonitorRef {
    /// The monitor as the evaluation sees it: `status.phase` and `spec.prometheus.scrapeInterval`
    /// (30 s when unset, as the generated PromQL assumes).
    pub fn of(monitor: &FLMonitor) -> Self {
        MonitorRef {
            namespace: monitor.namespace().unwrap_or_default(),
            name: monitor.name_any(),
            phase: monitor.status.as_ref().and_then(|s| s.phase),
            scrape_interval: monitor
                .spec
                .prometheus
                .scrape_interval
                .as_ref()
                .map_or(DEFAULT_SCRAPE_INTERVAL, |d| d.as_std()),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The state of an active alert instance (inactive ones are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertState {
    /// The condition holds, not yet for `for`.
    Pending,
    /// The condition has held for `for`.
    Firing,
}

/// One alert instance: a rule, a monitor and a scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `namespace/name` of the AlertRule.
    pub rule: String,
    /// `namespace/name` of the FLMonitor.
    pub monitor: String,
    /// The full label set, as the PrometheusRule's alert carries it: `alertname`, `severity`,
    /// `flmon_rule`, the rule's `spec.labels`, `namespace`, `flmon_monitor` and the scope labels.
    pub labels: Labels,
    /// `summary` and `description`, as in the PrometheusRule.
    pub annotations: Labels,
    /// The rule's severity.
    pub severity: Severity,
    /// Pending or firing (resolved alerts keep the state they had: firing).
    pub state: AlertState,
    /// The expression's value at the last evaluation that saw it, in the rule's unit.
    pub value: f64,
    /// When the condition was first seen (Prometheus's `activeAt`).
    pub active_at: SystemTime,
    /// When it started firing.
    pub fired_at: Option<SystemTime>,
    /// When it resolved; set only on alerts in [`Evaluation::resolved`].
    pub resolved_at: Option<SystemTime>,
    /// Where the rule sends notifications (kept so a resolve reaches them after the rule is gone).
    pub notify: NotifySpec,
    /// The rule's `debounce`.
    pub debounce: Duration,
}

impl Alert {
    /// The `alertname` label.
    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// The `pod` label, for per-pod and per-GPU metrics.
    pub fn pod(&self) -> Option<&str> {
        self.labels.get("pod").map(String::as_str)
    }

    /// The scope labels besides namespace and monitor, as `k=v` pairs joined by `,` (empty for
    /// per-monitor metrics).
    pub fn scope(&self) -> String {
        self.labels
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "pod" | m::LABEL_GPU | m::LABEL_CONSUMER_GROUP))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The FLMonitor `status.firingAlerts` entry, for a firing alert.
    pub fn status_entry(&self) -> Option<FiringAlert> {
        let fired_at = self.fired_at?;
        Some(FiringAlert {
            rule: self.rule.clone(),
            severity: self.severity,
            pod: self.pod().map(str::to_owned),
            since: Time(Timestamp::try_from(fired_at).ok()?),
        })
    }
}

/// What happened to an alert instance at an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// Inactive → pending.
    Pending,
    /// Pending (or inactive, with `for: 0`) → firing.
    Firing,
    /// Pending → inactive before it fired.
    Cleared,
    /// Firing → inactive.
    Resolved,
}

/// A transition of one alert instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// What changed.
    pub change: Change,
    /// The instance after the change.
    pub alert: Alert,
}

/// Whether a notification says an alert fires or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// The alert fires (first time, after a flap, or a reminder after `debounce`).
    Firing,
    /// The alert resolved.
    Resolved,
}

/// A notification due to Kubernetes Events and the rule's webhook (debounced).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Firing or resolved.
    pub kind: NotificationKind,
    /// The alert.
    pub alert: Alert,
}

impl Notification {
    /// The Event type: `Warning` for a firing alert, `Normal` for a resolved one.
    pub fn event_type(&self) -> &'static str {
        match self.kind {
            NotificationKind::Firing => "Warning",
            NotificationKind::Resolved => "Normal",
        }
    }

    /// The Event reason: `AlertFiring` or `AlertResolved`.
    pub fn event_reason(&self) -> &'static str {
        match self.kind {
            NotificationKind::Firing => "AlertFiring",
            NotificationKind::Resolved => "AlertResolved",
        }
    }

    /// The Event note: alert name, scope, summary and value, e.g.
    /// `HighGlobalLoss (pod=a) firing: Global model loss is unusually high (value 2.3)`; at most
    /// 1 kB as Events allow.
    pub fn event_note(&self) -> String {
        let alert = &self.alert;
        let scope = alert.scope();
        let scope = if scope.is_empty() {
            String::new()
        } else {
            format!(" ({scope})")
        };
        let summary = alert.annotations.get("summary").map_or("", String::as_str);
        let note = match self.kind {
            NotificationKind::Firing => {
                format!(
                    "{}{scope} firing: {summary} (value {})",
                    alert.alertname(),
                    crate::analysis::stats::significant(alert.value)
                )
            }
            NotificationKind::Resolved => format!("{}{scope} resolved: {summary}", alert.alertname()),
        };
        note.chars().take(1024).collect()
    }
}

/// The result of evaluating one monitor's rules at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// When.
    pub at: SystemTime,
    /// `namespace/name` of the monitor.
    pub monitor: String,
    /// Every firing alert of the monitor, ordered by rule and labels.
    pub firing: Vec<Alert>,
    /// Every pending alert of the monitor.
    pub pending: Vec<Alert>,
    /// Alerts that resolved at this evaluation (each appears in exactly one evaluation).
    pub resolved: Vec<Alert>,
    /// Every transition at this evaluation.
    pub transitions: Vec<Transition>,
    /// What Events and webhooks must be told, after `debounce`.
    pub notify: Vec<Notification>,
}

impl Evaluation {
    /// The FLMonitor `status.firingAlerts`: firing alerts, oldest first, at most
    /// [`MAX_STATUS_ALERTS`].
    pub fn status_alerts(&self) -> Vec<FiringAlert> {
        let mut firing: Vec<&Alert> = self.firing.iter().collect();
        firing.sort_by(|a, b| a.fired_at.cmp(&b.fired_at).then_with(|| a.labels.cmp(&b.labels)));
        firing
            .iter()
            .filter_map(|a| a.status_entry())
            .take(MAX_STATUS_ALERTS)
            .collect()
    }
}

/// What an AlertRule's status reports: where it fires and when it last started firing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSummary {
    /// `namespace/name` of the monitors it fires for, sorted, at most 100.
    pub firing_monitors: Vec<String>,
    /// When an alert of the rule last started firing.
    pub last_fired: Option<SystemTime>,
}

/// Identity of an alert instance: the monitor, the rule and the full label set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct AlertKey {
    monitor: String,
    rule: String,
    labels: Labels,
}

/// Debounce bookkeeping of one alert instance; outlives the instance so flaps stay quiet.
#[derive(Debug, Clone)]
struct Debounce {
    last_firing_notified: SystemTime,
    told_firing: bool,
    debounce: Duration,
}

/// Evaluates AlertRules over samples and keeps each alert instance's state between calls.
///
/// One evaluator serves every monitor; [`Evaluator::evaluate`] is called per monitor at each poll
/// with the time passed in (tests use a fake clock).
#[derive(Debug, Default)]
pub struct Evaluator {
    active: BTreeMap<AlertKey, Alert>,
    debounce: BTreeMap<AlertKey, Debounce>,
    last_fired: BTreeMap<String, SystemTime>,
}

/// `namespace/name` of an object.
fn object_key(namespace: Option<String>, name: String) -> String {
    format!("{}/{name}", namespace.unwrap_or_default())
}

/// The `summary` and `description` annotations of a rule's alert for one monitor, word for word
/// those of the generated PrometheusRule.
pub fn annotations(rule: &AlertRule, namespace: &str, monitor: &str) -> Labels {
    let spec = &rule.spec;
    Labels::from([
        ("summary".to_owned(), spec.message.clone()),
        (
            "description".to_owned(),
            format!(
                "{} on FLMonitor {namespace}/{monitor}: {} {} {} (AlertRule {}/{}).",
                spec.message,
                spec.condition.metric.as_str(),
                spec.condition.op.as_str(),
                spec.condition.threshold,
                rule.namespace().unwrap_or_default(),
                rule.name_any(),
            ),
        ),
    ])
}

/// Prometheus's `kahanSumInc`: adds `inc` to a compensated sum.
fn kahan_add(sum: f64, compensation: f64, inc: f64) -> (f64, f64) {
    let total = sum + inc;
    let compensation = if total.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        compensation + ((sum - total) + inc)
    } else {
        compensation + ((inc - total) + sum)
    };
    (total, compensation)
}

/// Whether a sample is of the monitor: its `namespace`/`flmon_monitor` labels, when present,
/// name this monitor.
fn of_monitor(sample: &Sample, monitor: &MonitorRef) -> bool {
    let matches = |label: &str, value: &str| sample.labels.get(label).is_none_or(|v| v == value);
    matches("namespace", &monitor.namespace) && matches(m::LABEL_MONITOR, &monitor.name)
}

/// The instant value of a rule's generated PromQL expression for one monitor at `now`: each
/// element is the scope label set (`namespace`, `flmon_monitor` and the non-empty scope labels)
/// and the value in the rule's unit, for the groups where the comparison holds. Steps 1–7 of the
/// [module documentation](self).
pub fn expression_value(
    rule: &AlertRule,
    monitor: &MonitorRef,
    samples: &[Sample],
    now: SystemTime,
) -> Vec<(Labels, f64)> {
    let spec = &rule.spec;
    if let Some(phase) = monitor.phase
        && !spec.active_phases.is_empty()
        && !spec.active_phases.contains(&phase)
    {
        return Vec::new();
    }
    let series = metric_series(spec.condition.metric);
    // Whole seconds, at least one, as `promql` writes the range.
    let window = Duration::from_secs(monitor.scrape_interval.saturating_mul(2).as_secs().max(1));
    let oldest = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);

    // last_over_time: the newest fresh sample of each series (all labels but the name).
    let mut last: BTreeMap<&Labels, &Sample> = BTreeMap::new();
    for sample in samples {
        if sample.name != series.series
            || !of_monitor(sample, monitor)
            || sample.timestamp < oldest
            || sample.timestamp > now
        {
            continue;
        }
        last.entry(&sample.labels)
            .and_modify(|kept| {
                if sample.timestamp >= kept.timestamp {
                    *kept = sample;
                }
            })
            .or_insert(sample);
    }

    // AGG by (scope): the group key is the scope labels' values, "" when missing.
    let mut groups: BTreeMap<Vec<&str>, (f64, f64)> = BTreeMap::new();
    for sample in last.values() {
        let key: Vec<&str> = series
            .scope
            .iter()
            .map(|label| sample.labels.get(*label).map_or("", String::as_str))
            .collect();
        let value = sample.value;
        groups
            .entry(key)
            .and_modify(|(acc, compensation)| match series.aggregation {
                Aggregation::Max => {
                    if *acc < value || acc.is_nan() {
                        *acc = value;
                    }
                }
                Aggregation::Sum => (*acc, *compensation) = kahan_add(*acc, *compensation, value),
            })
            .or_insert((value, 0.0));
    }

    let mut result = Vec::new();
    for (key, (acc, compensation)) in groups {
        let mut value = match series.aggregation {
            Aggregation::Max => acc,
            Aggregation::Sum if compensation.is_finite() => acc + compensation,
            Aggregation::Sum => acc,
        };
        if series.scale != 1.0 {
            value *= series.scale;
        }
        if !spec.condition.op.holds(value, spec.condition.threshold) {
            continue;
        }
        let mut labels = Labels::from([
            ("namespace".to_owned(), monitor.namespace.clone()),
            (m::LABEL_MONITOR.to_owned(), monitor.name.clone()),
        ]);
        for (label, value) in series.scope.iter().zip(key) {
            if !value.is_empty() {
                labels.insert((*label).to_owned(), value.to_owned());
            }
        }
        result.push((labels, value));
    }
    result
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

impl Evaluator {
    /// An evaluator with no alert active.
    pub fn new() -> Self {
        Evaluator::default()
    }

    /// Evaluates `rules` (those valid and applying to the monitor, as for its PrometheusRule) for
    /// one monitor at `now` over `samples`, advances every alert instance of the monitor, and
    /// says what to notify. Alerts of rules no longer in `rules` resolve.
    ///
    /// `samples` are the monitor's: every sample the operator holds from its agents' current
    /// pods (with the `pod` label set, as Prometheus's target labels do) plus the operator's own
    /// `flmon_monitor_rounds_without_improvement`. Older samples may be included; only the
    /// newest fresh one per series counts.
    pub fn evaluate(
        &mut self,
        now: SystemTime,
        monitor: &MonitorRef,
        rules: &[&AlertRule],
        samples: &[Sample],
    ) -> Evaluation {
        let monitor_key = monitor.key();
        let mut seen: BTreeSet<AlertKey> = BTreeSet::new();
        let mut transitions = Vec::new();
        for rule in rules {
            let rule_key = object_key(rule.namespace(), rule.name_any());
            let mut base = alert_labels(rule);
            base.insert("alertname".to_owned(), alert_name(&rule.name_any()));
            for (scope, value) in expression_value(rule, monitor, samples, now) {
                let mut labels = scope;
                labels.extend(base.clone());
                let key = AlertKey {
                    monitor: monitor_key.clone(),
                    rule: rule_key.clone(),
                    labels: labels.clone(),
                };
                let is_new = !self.active.contains_key(&key);
                let alert = self.active.entry(key.clone()).or_insert_with(|| Alert {
                    rule: rule_key.clone(),
                    monitor: monitor_key.clone(),
                    labels,
                    annotations: Labels::new(),
                    severity: rule.spec.severity,
                    state: AlertState::Pending,
                    value,
                    active_at: now,
                    fired_at: None,
                    resolved_at: None,
                    notify: NotifySpec::default(),
                    debounce: Duration::ZERO,
                });
                // Like Prometheus, value and annotations follow the latest evaluation; so do the
                // rule's other settings.
                alert.value = value;
                alert.annotations = annotations(rule, &monitor.namespace, &monitor.name);
                alert.severity = rule.spec.severity;
                alert.notify = rule.spec.notify.clone();
                alert.debounce = rule.spec.debounce.as_std();
                if is_new {
                    transitions.push(Transition {
                        change: Change::Pending,
                        alert: alert.clone(),
                    });
                }
                if alert.state == AlertState::Pending
                    && elapsed(alert.active_at, now) >= rule.spec.condition.for_.as_std()
                {
                    alert.state = AlertState::Firing;
                    alert.fired_at = Some(now);
                    self.last_fired.insert(rule_key.clone(), now);
                    transitions.push(Transition {
                        change: Change::Firing,
                        alert: alert.clone(),
                    });
                }
                seen.insert(key);
            }
        }
        let gone: Vec<AlertKey> = self
            .active
            .keys()
            .filter(|k| k.monitor == monitor_key && !seen.contains(*k))
            .cloned()
            .collect();
        let mut evaluation = self.retire(now, &monitor_key, gone, transitions);
        for alert in self.active.values().filter(|a| a.monitor == monitor_key) {
            match alert.state {
                AlertState::Firing => evaluation.firing.push(alert.clone()),
                AlertState::Pending => evaluation.pending.push(alert.clone()),
            }
        }
        self.debounce_notifications(now, &mut evaluation);
        evaluation
    }

    /// Resolves every alert of a monitor that is gone (deleted), so receivers get their resolves.
    pub fn forget_monitor(&mut self, now: SystemTime, namespace: &str, name: &str) -> Evaluation {
        let monitor_key = format!("{namespace}/{name}");
        let gone: Vec<AlertKey> = self
            .active
            .keys()
            .filter(|k| k.monitor == monitor_key)
            .cloned()
            .collect();
        let mut evaluation = self.retire(now, &monitor_key, gone, Vec::new());
        self.debounce_notifications(now, &mut evaluation);
        self.debounce
            .retain(|k, d| k.monitor != monitor_key || d.told_firing);
        evaluation
    }

    /// Removes `gone` instances: pending ones are cleared, firing ones resolved.
    fn retire(
        &mut self,
        now: SystemTime,
        monitor: &str,
        gone: Vec<AlertKey>,
        mut transitions: Vec<Transition>,
    ) -> Evaluation {
        let mut resolved = Vec::new();
        for key in gone {
            let Some(mut alert) = self.active.remove(&key) else {
                continue;
            };
            match alert.state {
                AlertState::Pending => transitions.push(Transition {
                    change: Change::Cleared,
                    alert,
                }),
                AlertState::Firing => {
                    alert.resolved_at = Some(now);
                    transitions.push(Transition {
                        change: Change::Resolved,
                        alert: alert.clone(),
                    });
                    resolved.push(alert);
                }
            }
        }
        Evaluation {
            at: now,
            monitor: monitor.to_owned(),
            firing: Vec::new(),
            pending: Vec::new(),
            resolved,
            transitions,
            notify: Vec::new(),
        }
    }

    /// Decides the Event/webhook notifications of an evaluation (module docs, "Notifications").
    fn debounce_notifications(&mut self, now: SystemTime, evaluation: &mut Evaluation) {
        for alert in &evaluation.firing {
            let key = key_of(alert);
            let due = self
                .debounce
                .get(&key)
                .is_none_or(|d| elapsed(d.last_firing_notified, now) >= alert.debounce);
            if due {
                self.debounce.insert(
                    key,
                    Debounce {
                        last_firing_notified: now,
                        told_firing: true,
                        debounce: alert.debounce,
                    },
                );
                evaluation.notify.push(Notification {
                    kind: NotificationKind::Firing,
                    alert: alert.clone(),
                });
            }
        }
        for alert in &evaluation.resolved {
            if let Some(d) = self.debounce.get_mut(&key_of(alert))
                && d.told_firing
            {
                d.told_firing = false;
                evaluation.notify.push(Notification {
                    kind: NotificationKind::Resolved,
                    alert: alert.clone(),
                });
            }
        }
        // Entries that no longer suppress anything are dropped, so memory follows active alerts.
        let active = &self.active;
        self.debounce.retain(|k, d| {
            d.told_firing || active.contains_key(k) || elapsed(d.last_firing_notified, now) < d.debounce
        });
    }

    /// Where a rule fires now and when it last started firing (for its `status`).
    pub fn rule_summary(&self, rule: &AlertRule) -> RuleSummary {
        let rule_key = object_key(rule.namespace(), rule.name_any());
        let monitors: BTreeSet<&str> = self
            .active
            .values()
            .filter(|a| a.rule == rule_key && a.state == AlertState::Firing)
            .map(|a| a.monitor.as_str())
            .collect();
        RuleSummary {
            firing_monitors: monitors.into_iter().take(100).map(str::to_owned).collect(),
            last_fired: self.last_fired.get(&rule_key).copied(),
        }
    }

    /// Forgets a deleted rule's last-fired time (its alerts resolve at the monitors' next evaluation).
    pub fn forget_rule(&mut self, namespace: &str, name: &str) {
        self.last_fired.remove(&format!("{namespace}/{name}"));
    }

    /// Number of active (pending or firing) alert instances, over all monitors.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }
}

fn key_of(alert: &Alert) -> AlertKey {
    AlertKey {
        monitor: alert.monitor.clone(),
        rule: alert.rule.clone(),
        labels: alert.labels.clone(),
    }
}

#[cfg(test)]
mod tests;
