//! AlertRules: validation, which monitors a rule applies to, and the compilation of its one
//! structured condition to PromQL. The operator's own evaluation reads the same table
//! ([`metric_series`]) so the two agree on series, unit, scope and labels.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use flmon_crds::names::metrics as m;
use flmon_crds::{AlertMetric, AlertRule, AlertRuleSpec, FLMonitor};
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::Settings;
use super::validate::{FieldError, is_prometheus_label_name, validate_selector};

/// Label on every generated alert naming its AlertRule as `namespace/name`.
pub const LABEL_RULE: &str = "flmon_rule";

/// Labels flmon sets on alerts itself; an AlertRule may not set them in `spec.labels`.
pub const RESERVED_LABELS: [&str; 8] = [
    "alertname",
    "severity",
    "namespace",
    "pod",
    m::LABEL_MONITOR,
    LABEL_RULE,
    m::LABEL_GPU,
    m::LABEL_CONSUMER_GROUP,
];

/// Scrape interval assumed when a monitor does not set one (kube-prometheus-stack's default).
pub const DEFAULT_SCRAPE_INTERVAL: StdDuration = StdDuration::from_secs(30);

/// How the per-target series of a metric are combined into the rule's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// The largest value (several pods may briefly report a per-monitor value, e.g. across a restart).
    Max,
    /// The sum (lag over partitions).
    Sum,
}

impl Aggregation {
    fn promql(self) -> &'static str {
        match self {
            Aggregation::Max => "max",
            Aggregation::Sum => "sum",
        }
    }
}

/// Where one AlertRule metric comes from and how it is scoped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSeries {
    /// The Prometheus series.
    pub series: &'static str,
    /// Factor from the series' unit to the rule's unit (accuracy percent → 0-1, GPU ratio → percent).
    pub scale: f64,
    /// How the series are combined.
    pub aggregation: Aggregation,
    /// Labels that identify one alert instance, besides `namespace` and `flmon_monitor`.
    pub scope: &'static [&'static str],
}

/// The series, unit and scope of each AlertRule metric (SPEC §3's table).
pub fn metric_series(metric: AlertMetric) -> MetricSeries {
    let monitor = |series| MetricSeries {
        series,
        scale: 1.0,
        aggregation: Aggregation::Max,
        scope: &[],
    };
    match metric {
        AlertMetric::GlobalLoss => monitor(m::GLOBAL_LOSS),
        AlertMetric::GlobalAccuracy => MetricSeries {
            scale: 0.01,
            ..monitor(m::GLOBAL_ACCURACY_PERCENT)
        },
        AlertMetric::ActiveClients => monitor(m::ACTIVE_CLIENTS),
        AlertMetric::RoundsWithoutImprovement => monitor(m::ROUNDS_WITHOUT_IMPROVEMENT),
        AlertMetric::RoundDuration => monitor(m::LAST_ROUND_DURATION_SECONDS),
        AlertMetric::CpuUsage => MetricSeries {
            scope: &["pod"],
            ..monitor(m::CPU_USAGE_PERCENT)
        },
        AlertMetric::MemoryUsage => MetricSeries {
            scope: &["pod"],
            ..monitor(m::MEMORY_USAGE_PERCENT)
        },
        AlertMetric::GpuUsage => MetricSeries {
            scale: 100.0,
            scope: &["pod", m::LABEL_GPU],
            ..monitor(m::GPU_UTILIZATION_RATIO)
        },
        AlertMetric::ConsumerLag => MetricSeries {
            aggregation: Aggregation::Sum,
            scope: &[m::LABEL_CONSUMER_GROUP],
            ..monitor(m::KAFKA_CONSUMERGROUP_LAG)
        },
    }
}

/// The range of thresholds that can both fire and stay quiet for a metric, in the rule's unit.
fn threshold_range(metric: AlertMetric) -> (f64, f64, &'static str) {
    match metric {
        AlertMetric::GlobalLoss => (f64::MIN, f64::MAX, "a finite number"),
        AlertMetric::GlobalAccuracy => (0.0, 1.0, "a ratio from 0 to 1 (90 % is 0.9)"),
        AlertMetric::CpuUsage | AlertMetric::MemoryUsage | AlertMetric::GpuUsage => {
            (0.0, 100.0, "a percentage from 0 to 100")
        }
        AlertMetric::ActiveClients
        | AlertMetric::RoundsWithoutImprovement
        | AlertMetric::RoundDuration
        | AlertMetric::ConsumerLag => (0.0, f64::MAX, "a number >= 0"),
    }
}

/// Validates an AlertRule beyond its schema: threshold within the metric's unit, label names,
/// the monitor selector, and notification URLs under the allowed prefixes.
///
/// # Errors
/// The first invalid field, with its value and what was expected.
pub fn validate_rule(rule: &AlertRule, settings: &Settings) -> Result<(), FieldError> {
    let spec = &rule.spec;
    let condition = &spec.condition;
    let (low, high, expected) = threshold_range(condition.metric);
    if !condition.threshold.is_finite() || condition.threshold < low || condition.threshold > high {
        return Err(FieldError::new(
            "spec.condition.threshold",
            condition.threshold.to_string(),
            format!("{expected} for metric {}", condition.metric.as_str()),
        ));
    }
    if let Some(selector) = &spec.monitor_selector {
        validate_selector("spec.monitorSelector", selector)?;
    }
    for (name, value) in &spec.labels {
        let field = format!("spec.labels[{name}]");
        if !is_prometheus_label_name(name) {
            return Err(FieldError::new(
                field,
                name,
                "a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
            ));
        }
        if RESERVED_LABELS.contains(&name.as_str()) || name.starts_with("__") || name.starts_with("flmon_") {
            return Err(FieldError::new(
                field,
                name,
                format!(
                    "a label flmon does not set itself (reserved: {}, flmon_*, __*)",
                    RESERVED_LABELS.join(", ")
                ),
            ));
        }
        if value.is_empty() {
            return Err(FieldError::new(field, value, "a non-empty value"));
        }
    }
    for (field, url) in [
        ("spec.notify.alertmanagerUrl", &spec.notify.alertmanager_url),
        ("spec.notify.webhookUrl", &spec.notify.webhook_url),
    ] {
        if let Some(url) = url
            && !settings
                .notify_url_prefixes
                .iter()
                .any(|prefix| url.starts_with(prefix.as_str()))
        {
            let expected = if settings.notify_url_prefixes.is_empty() {
                "no URL: the operator allows no notification URLs (flag --notify-url-prefixes)".to_owned()
            } else {
                format!(
                    "a URL starting with one of: {}",
                    settings.notify_url_prefixes.join(", ")
                )
            };
            return Err(FieldError::new(field, url, expected));
        }
    }
    Ok(())
}

/// Whether an AlertRule applies to a monitor: default rules (in the operator's namespace) apply
/// to every monitor that keeps `spec.alerting.defaultRules`; other rules to the monitors of their
/// own namespace that `monitorSelector` selects (empty or absent selects all).
pub fn rule_applies(rule: &AlertRule, monitor: &FLMonitor, operator_namespace: &str) -> bool {
    let rule_namespace = rule.namespace().unwrap_or_default();
    let monitor_namespace = monitor.namespace().unwrap_or_default();
    if rule_namespace == operator_namespace && monitor_namespace != operator_namespace {
        return monitor.spec.alerting.default_rules;
    }
    if rule_namespace != monitor_namespace {
        return false;
    }
    match &rule.spec.monitor_selector {
        None => true,
        Some(selector) => Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(monitor.labels())),
    }
}

/// The alert's name: the AlertRule's name in UpperCamelCase (`high-global-loss` → `HighGlobalLoss`),
/// as Prometheus alert names are conventionally written.
pub fn alert_name(rule_name: &str) -> String {
    rule_name
        .split(['-', '.'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The labels a rule puts on its alerts besides those of the expression's result
/// (`namespace`, `flmon_monitor` and the metric's scope labels): `severity`, `flmon_rule` and
/// the rule's own `spec.labels`. Prometheus adds `alertname`.
pub fn alert_labels(rule: &AlertRule) -> BTreeMap<String, String> {
    let mut labels = rule.spec.labels.clone();
    labels.insert("severity".into(), rule.spec.severity.as_str().into());
    labels.insert(
        LABEL_RULE.into(),
        format!("{}/{}", rule.namespace().unwrap_or_default(), rule.name_any()),
    );
    labels
}

/// Formats a threshold as a PromQL number literal.
fn promql_number(value: f64) -> String {
    // `Display` for f64 never uses an exponent and prints the shortest exact form.
    format!("{value}")
}

/// Escapes a string for a PromQL double-quoted label value.
fn promql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Compiles a rule's condition to a PromQL expression for one monitor.
///
/// The expression is `AGG by (namespace, flmon_monitor[, scope]) (last_over_time(SERIES{…}[2i])) [* scale] OP threshold`:
/// - `last_over_time` over two scrape intervals `i` makes a sample older than that, or one from
///   a target that is gone (Prometheus marks its series stale), absent; absent never fires;
/// - the `by` clause fixes the alert's labels, so the operator's own evaluation produces the
///   same label set and Alertmanager deduplicates the two;
/// - `activePhases` become `unless on(namespace, flmon_monitor) flmon_monitor_phase{phase!~"…"} == 1`,
///   so while the operator reports another phase the rule is quiet, and without the operator's
///   metric it still evaluates.
pub fn promql(spec: &AlertRuleSpec, namespace: &str, monitor: &str, scrape_interval: StdDuration) -> String {
    let series = metric_series(spec.condition.metric);
    let selector = format!(
        "namespace={},{}={}",
        promql_string(namespace),
        m::LABEL_MONITOR,
        promql_string(monitor)
    );
    let window = scrape_interval.saturating_mul(2).as_secs().max(1);
    let mut by = vec!["namespace", m::LABEL_MONITOR];
    by.extend(series.scope);
    let mut expr = format!(
        "{} by ({}) (last_over_time({}{{{selector}}}[{window}s]))",
        series.aggregation.promql(),
        by.join(", "),
        series.series,
    );
    if series.scale != 1.0 {
        expr = format!("{expr} * {}", promql_number(series.scale));
    }
    expr = format!(
        "{expr} {} {}",
        spec.condition.op.as_str(),
        promql_number(spec.condition.threshold)
    );
    if !spec.active_phases.is_empty() {
        let phases: Vec<&str> = spec.active_phases.iter().map(|p| p.as_str()).collect();
        expr = format!(
            "({expr}) unless on (namespace, {mon}) ({phase}{{{selector},phase!~{phases}}} == 1)",
            mon = m::LABEL_MONITOR,
            phase = m::MONITOR_PHASE,
            phases = promql_string(&phases.join("|")),
        );
    }
    expr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> AlertRule {
        serde_yaml_ng::from_str(yaml).expect("test rule parses")
    }

    fn monitor(namespace: &str, labels: &str, default_rules: bool) -> FLMonitor {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: flmon.io/v1alpha1
kind: FLMonitor
metadata: {{name: job, namespace: {namespace}, labels: {labels}}}
spec: {{selector: {{matchLabels: {{app: job}}}}, alerting: {{defaultRules: {default_rules}}}}}"
        ))
        .expect("test monitor parses")
    }

    const HIGH_LOSS: &str = "
apiVersion: flmon.io/v1alpha1
kind: AlertRule
metadata: {name: high-global-loss, namespace: flmon-system}
spec:
  condition: {metric: globalLoss, op: '>', threshold: 2.0, for: 10m}
  severity: warning
  message: Global model loss is unusually high
  activePhases: [Training]
";

    fn settings() -> Settings {
        Settings {
            operator_namespace: "flmon-system".into(),
            notify_url_prefixes: vec!["http://alertmanager.monitoring:9093".into()],
            ..Settings::default()
        }
    }

    #[test]
    fn a_condition_compiles_to_a_scoped_windowed_comparison() {
        let r = rule(HIGH_LOSS);
        assert_eq!(
            promql(&r.spec, "fl", "mnist", DEFAULT_SCRAPE_INTERVAL),
            "(max by (namespace, flmon_monitor) (last_over_time(fl_global_loss{namespace=\"fl\",flmon_monitor=\"mnist\"}[60s])) > 2) \
             unless on (namespace, flmon_monitor) (flmon_monitor_phase{namespace=\"fl\",flmon_monitor=\"mnist\",phase!~\"Training\"} == 1)"
        );
    }

    #[test]
    fn accuracy_is_compared_as_a_ratio_and_gpu_usage_as_a_percentage() {
        let mut r = rule(HIGH_LOSS);
        r.spec.active_phases.clear();
        r.spec.condition.metric = AlertMetric::GlobalAccuracy;
        r.spec.condition.threshold = 0.5;
        assert_eq!(
            promql(&r.spec, "fl", "m", StdDuration::from_secs(15)),
            "max by (namespace, flmon_monitor) (last_over_time(fl_global_accuracy{namespace=\"fl\",flmon_monitor=\"m\"}[30s])) * 0.01 > 0.5"
        );
        r.spec.condition.metric = AlertMetric::GpuUsage;
        r.spec.condition.threshold = 95.0;
        assert_eq!(
            promql(&r.spec, "fl", "m", StdDuration::from_secs(15)),
            "max by (namespace, flmon_monitor, pod, gpu) (last_over_time(flmon_gpu_utilization_ratio{namespace=\"fl\",flmon_monitor=\"m\"}[30s])) * 100 > 95"
        );
    }

    #[test]
    fn consumer_lag_is_summed_per_group() {
        let mut r = rule(HIGH_LOSS);
        r.spec.active_phases.clear();
        r.spec.condition.metric = AlertMetric::ConsumerLag;
        r.spec.condition.threshold = 1000.0;
        assert_eq!(
            promql(&r.spec, "fl", "m", DEFAULT_SCRAPE_INTERVAL),
            "sum by (namespace, flmon_monitor, consumergroup) (last_over_time(flmon_kafka_consumergroup_lag{namespace=\"fl\",flmon_monitor=\"m\"}[60s])) > 1000"
        );
    }

    #[test]
    fn a_valid_rule_passes_validation() {
        assert_eq!(validate_rule(&rule(HIGH_LOSS), &settings()), Ok(()));
    }

    #[test]
    fn an_accuracy_threshold_written_as_a_percentage_is_invalid() {
        let mut r = rule(HIGH_LOSS);
        r.spec.condition.metric = AlertMetric::GlobalAccuracy;
        r.spec.condition.threshold = 90.0;
        let error = validate_rule(&r, &settings()).expect_err("90 is not a ratio");
        assert_eq!(error.field, "spec.condition.threshold");
        assert_eq!(error.value, "90");
        assert!(error.expected.contains("0.9"), "{error}");
    }

    #[test]
    fn usage_thresholds_must_be_percentages() {
        let mut r = rule(HIGH_LOSS);
        r.spec.condition.metric = AlertMetric::CpuUsage;
        r.spec.condition.threshold = 150.0;
        assert_eq!(
            validate_rule(&r, &settings()).map_err(|e| e.field),
            Err("spec.condition.threshold".into())
        );
        r.spec.condition.metric = AlertMetric::ActiveClients;
        r.spec.condition.threshold = -1.0;
        assert!(validate_rule(&r, &settings()).is_err());
    }

    #[test]
    fn the_crd_lists_every_reserved_label_kubectl_explain_shows() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(AlertRule::crd()).expect("serializes");
        let description = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["labels"]["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for label in RESERVED_LABELS {
            assert!(
                description.contains(&format!("`{label}`")),
                "{label} missing from: {description}"
            );
        }
    }

    #[test]
    fn reserved_and_malformed_label_names_are_invalid() {
        for (name, fragment) in [
            ("severity", "reserved"),
            ("flmon_x", "reserved"),
            ("team-name", "label name"),
        ] {
            let mut r = rule(HIGH_LOSS);
            r.spec.labels.insert(name.into(), "x".into());
            let error = validate_rule(&r, &settings()).expect_err(name);
            assert_eq!(error.field, format!("spec.labels[{name}]"));
            assert!(error.expected.contains(fragment), "{error}");
        }
        let mut r = rule(HIGH_LOSS);
        r.spec.labels.insert("team".into(), "ml".into());
        assert_eq!(validate_rule(&r, &settings()), Ok(()));
    }

    #[test]
    fn notification_urls_must_start_with_an_allowed_prefix() {
        let mut r = rule(HIGH_LOSS);
        r.spec.notify.webhook_url = Some("https://evil.example/hook".into());
        let error = validate_rule(&r, &settings()).expect_err("not allowed");
        assert_eq!(error.field, "spec.notify.webhookUrl");
        r.spec.notify.webhook_url = None;
        r.spec.notify.alertmanager_url = Some("http://alertmanager.monitoring:9093".into());
        assert_eq!(validate_rule(&r, &settings()), Ok(()));
    }

    #[test]
    fn default_rules_apply_to_monitors_that_keep_them() {
        let r = rule(HIGH_LOSS);
        assert!(rule_applies(&r, &monitor("fl", "{}", true), "flmon-system"));
        assert!(!rule_applies(&r, &monitor("fl", "{}", false), "flmon-system"));
    }

    #[test]
    fn namespaced_rules_apply_to_selected_monitors_of_their_namespace_only() {
        let mut r = rule(HIGH_LOSS);
        r.metadata.namespace = Some("fl".into());
        assert!(rule_applies(&r, &monitor("fl", "{}", true), "flmon-system"));
        assert!(!rule_applies(&r, &monitor("other", "{}", true), "flmon-system"));
        r.spec.monitor_selector = serde_yaml_ng::from_str("matchLabels: {team: vision}").expect("parses");
        assert!(!rule_applies(&r, &monitor("fl", "{}", true), "flmon-system"));
        assert!(rule_applies(
            &r,
            &monitor("fl", "{team: vision}", true),
            "flmon-system"
        ));
    }

    #[test]
    fn alert_names_are_upper_camel_case() {
        assert_eq!(alert_name("high-global-loss"), "HighGlobalLoss");
        assert_eq!(alert_name("cpu"), "Cpu");
        assert_eq!(alert_name("a..b-c"), "ABC");
    }

    #[test]
    fn alert_labels_carry_severity_and_the_rule() {
        let labels = alert_labels(&rule(HIGH_LOSS));
        assert_eq!(labels["severity"], "warning");
        assert_eq!(labels[LABEL_RULE], "flmon-system/high-global-loss");
    }
}
