//! FLMonitor and AlertRule reconcilers: validate → build → apply → status.

pub mod build;
pub mod rules;
pub mod validate;

/// Operator settings the controller's decisions depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The operator's namespace: AlertRules here are cluster-wide defaults.
    pub operator_namespace: String,
    /// Namespaces besides a monitor's own that may receive its dashboard ConfigMap.
    pub dashboard_namespaces: Vec<String>,
    /// URL prefixes AlertRules may send notifications to; none when empty.
    pub notify_url_prefixes: Vec<String>,
}
