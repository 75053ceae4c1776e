//! The `AlertRule` custom resource: one structured condition on a training or system metric,
//! compiled both into the generated PrometheusRules and into the operator's own evaluation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, Phase};

/// Spec of an AlertRule. AlertRules in the operator's namespace are cluster-wide defaults; any
/// other applies to the monitors of its own namespace that `monitorSelector` selects.
// Each `printcolumn(...)` repeats `type_ = ...`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flmon.io",
    version = "v1alpha1",
    kind = "AlertRule",
    plural = "alertrules",
    singular = "alertrule",
    category = "flmon",
    namespaced,
    status = "AlertRuleStatus",
    derive = "PartialEq",
    doc = "AlertRule raises an alert when a metric of a monitored FL job crosses a threshold for a while. \
           It is compiled into each selected FLMonitor's PrometheusRule and evaluated by the operator itself.",
    printcolumn(name = "Metric", type_ = "string", json_path = ".spec.condition.metric"),
    printcolumn(name = "Op", type_ = "string", json_path = ".spec.condition.op"),
    printcolumn(name = "Threshold", type_ = "number", json_path = ".spec.condition.threshold"),
    printcolumn(name = "For", type_ = "string", json_path = ".spec.condition.for"),
    printcolumn(name = "Severity", type_ = "string", json_path = ".spec.severity"),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleSpec {
    /// Which FLMonitors of this namespace the rule applies to; empty or absent selects all.
    /// Ignored for default rules (those in the operator's namespace), which apply to every
    /// monitor that keeps `spec.alerting.defaultRules` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_selector: Option<LabelSelector>,
    /// When the alert fires.
    pub condition: AlertCondition,
    /// How urgent the alert is; becomes the alert's `severity` label.
    #[serde(default)]
    pub severity: Severity,
    /// Human-readable text of the alert (its `summary` annotation and the Event message).
    #[schemars(length(min = 1, max = 1024))]
    pub message: String,
    /// Events and webhook notifications for one (rule, monitor[, pod]) are not repeated within this.
    #[serde(default = "default_debounce")]
    pub debounce: Duration,
    /// Monitor phases in which the rule is evaluated; empty means every phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub active_phases: Vec<Phase>,
    /// Extra labels on the alert (Prometheus label names). Reserved, as flmon sets them itself:
    /// `alertname`, `severity`, `namespace`, `pod`, `flmon_monitor`, `flmon_rule`, `gpu`,
    /// `consumergroup`, and every label starting with `flmon_` or `__`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Where notifications go besides Kubernetes Events, which are always recorded.
    #[serde(default)]
    pub notify: NotifySpec,
}

fn default_debounce() -> Duration {
    Duration::from_secs(300)
}

/// One comparison of a metric with a threshold, held for a while.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertCondition {
    /// The metric compared; each maps to one Prometheus series and unit.
    pub metric: AlertMetric,
    /// The comparison.
    pub op: ComparisonOp,
    /// The threshold, in the metric's unit (accuracy 0-1, usage in percent).
    pub threshold: f64,
    /// How long the comparison must hold before the alert fires; `0` fires at once.
    #[serde(rename = "for", default = "zero")]
    pub for_: Duration,
}

fn zero() -> Duration {
    Duration::from_secs(0)
}

/// A metric an AlertRule can compare.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AlertMetric {
    /// Global loss, as reported (per monitor).
    GlobalLoss,
    /// Global accuracy, 0-1 (per monitor).
    GlobalAccuracy,
    /// Clients that took part in the last round (per monitor).
    ActiveClients,
    /// Rounds since the primary metric last improved (per monitor).
    RoundsWithoutImprovement,
    /// Duration of the last round in seconds (per monitor).
    RoundDuration,
    /// CPU usage in percent of the app containers' limits, node capacity if none (per pod).
    CpuUsage,
    /// Memory usage in percent of the app containers' limits, node capacity if none (per pod).
    MemoryUsage,
    /// GPU utilization in percent (per GPU).
    GpuUsage,
    /// Consumer lag in messages, summed over partitions (per consumer group).
    ConsumerLag,
}

impl AlertMetric {
    /// Every metric, in declaration order.
    pub const ALL: [AlertMetric; 9] = [
        AlertMetric::GlobalLoss,
        AlertMetric::GlobalAccuracy,
        AlertMetric::ActiveClients,
        AlertMetric::RoundsWithoutImprovement,
        AlertMetric::RoundDuration,
        AlertMetric::CpuUsage,
        AlertMetric::MemoryUsage,
        AlertMetric::GpuUsage,
        AlertMetric::ConsumerLag,
    ];

    /// The name as written in the resource.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertMetric::GlobalLoss => "globalLoss",
            AlertMetric::GlobalAccuracy => "globalAccuracy",
            AlertMetric::ActiveClients => "activeClients",
            AlertMetric::RoundsWithoutImprovement => "roundsWithoutImprovement",
            AlertMetric::RoundDuration => "roundDuration",
            AlertMetric::CpuUsage => "cpuUsage",
            AlertMetric::MemoryUsage => "memoryUsage",
            AlertMetric::GpuUsage => "gpuUsage",
            AlertMetric::ConsumerLag => "consumerLag",
        }
    }
}

/// A comparison operator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ComparisonOp {
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
    /// Greater than or equal.
    #[serde(rename = ">=")]
    Ge,
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Less than or equal.
    #[serde(rename = "<=")]
    Le,
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
}

impl ComparisonOp {
    /// The operator as PromQL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ComparisonOp::Gt => ">",
            ComparisonOp::Ge => ">=",
            ComparisonOp::Lt => "<",
            ComparisonOp::Le => "<=",
            ComparisonOp::Eq => "==",
            ComparisonOp::Ne => "!=",
        }
    }

    /// Whether `value op threshold` holds, as PromQL's comparison decides it (NaN compares false,
    /// except `!=`).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            ComparisonOp::Gt => value > threshold,
            ComparisonOp::Ge => value >= threshold,
            ComparisonOp::Lt => value < threshold,
            ComparisonOp::Le => value <= threshold,
            ComparisonOp::Eq => value == threshold,
            ComparisonOp::Ne => value != threshold,
        }
    }
}

/// Alert severity.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs attention.
    #[default]
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// The value of the alert's `severity` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Notification targets besides Kubernetes Events.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    /// Alertmanager base URL; alerts are posted to `<url>/api/v2/alerts`. Only URL prefixes the
    /// operator is configured to allow are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub alertmanager_url: Option<String>,
    /// Generic webhook URL receiving a JSON document per notification. Only URL prefixes the
    /// operator is configured to allow are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub webhook_url: Option<String>,
}

/// Observed state of an AlertRule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `namespace/name` of the monitors this rule currently fires for (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub firing_monitors: Vec<String>,
    /// When the rule last fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<Time>,
    /// Conditions: Valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
