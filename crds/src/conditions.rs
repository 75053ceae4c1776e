//! Condition types and reasons that flmon writes into its resources' `status.conditions`.

/// FLMonitor: the spec is valid and every generated object was applied. Never depends on agents being reachable.
pub const READY: &str = "Ready";
/// FLMonitor: every selected pod carries the agent.
pub const AGENTS_INJECTED: &str = "AgentsInjected";
/// FLMonitor: the ServiceMonitor and PrometheusRule exist (False while Prometheus Operator's CRDs are absent).
pub const MONITORING_READY: &str = "MonitoringReady";
/// FLMonitor: the best value of the primary metric crossed the target.
pub const CONVERGED: &str = "Converged";
/// FLMonitor: more than `stallRounds` rounds without improvement.
pub const STALLED: &str = "Stalled";
/// FLMonitor: fewer clients took part in the last round than the participation threshold.
pub const LOW_PARTICIPATION: &str = "LowParticipation";
/// FLMonitor: the loss became non-finite or accuracy collapsed to chance.
pub const DIVERGED: &str = "Diverged";
/// AlertRule: the rule is well-formed and is part of the generated PrometheusRules.
pub const VALID: &str = "Valid";

/// The order of the types in `status.conditions`, as `kubectl describe` lists them: readiness
/// first, then what the analysis found, whichever was written first. Other types follow these.
pub const ORDER: [&str; 8] = [
    READY,
    AGENTS_INJECTED,
    MONITORING_READY,
    CONVERGED,
    STALLED,
    LOW_PARTICIPATION,
    DIVERGED,
    VALID,
];

/// Reasons (CamelCase, as Kubernetes wants them) used with the condition types above.
pub mod reason {
    /// Everything generated was applied.
    pub const RECONCILED: &str = "Reconciled";
    /// The spec is invalid; the message names the field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Applying a generated object failed; the message names the object.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// The ServiceMonitor and PrometheusRule were applied.
    pub const MONITORING_APPLIED: &str = "MonitoringApplied";
    /// Prometheus Operator's CRDs (`monitoring.coreos.com`) are not installed.
    pub const PROMETHEUS_OPERATOR_MISSING: &str = "PrometheusOperatorCRDsMissing";
    /// The spec turned both the ServiceMonitor and the PrometheusRule off.
    pub const MONITORING_DISABLED: &str = "Disabled";
    /// The AlertRule is valid.
    pub const VALID_RULE: &str = "Valid";
    /// The AlertRule is invalid; the message names the field, the value and what was expected.
    pub const INVALID_RULE: &str = "InvalidRule";
    /// No target was set, so convergence cannot be decided.
    pub const NO_TARGET: &str = "NoTarget";
}
