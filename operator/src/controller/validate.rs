//! Checks the schema cannot express: label syntax, selector operators, allowed namespaces and URLs.
//! Each failure names the field, the value and what was expected.

use std::fmt;

use flmon_crds::FLMonitor;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::Settings;

/// One invalid field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.grafana.namespace`.
    pub field: String,
    /// The rejected value.
    pub value: String,
    /// What would have been accepted.
    pub expected: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, value: impl Into<String>, expected: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:?} is invalid, expected {}",
            self.field, self.value, self.expected
        )
    }
}

impl std::error::Error for FieldError {}

/// Validates what the CRD schema cannot: the FLMonitor's labels, selector and target namespaces.
///
/// # Errors
/// The first invalid field.
pub fn validate_monitor(monitor: &FLMonitor, settings: &Settings) -> Result<(), FieldError> {
    let spec = &monitor.spec;
    let own_namespace = monitor.metadata.namespace.as_deref().unwrap_or_default();
    validate_selector("spec.selector", &spec.selector)?;
    if spec.selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && spec
            .selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
    {
        return Err(FieldError::new(
            "spec.selector",
            "{}",
            "matchLabels or matchExpressions (an empty selector selects every pod of the namespace)",
        ));
    }
    // The CRD refuses these too; a monitor stored before that rule must not inject an agent
    // that would refuse to start.
    let min = flmon_crds::flmonitor::MIN_SAMPLE_INTERVAL_MS;
    if spec.agent.sample_interval.as_std() < std::time::Duration::from_millis(min) {
        return Err(FieldError::new(
            "spec.agent.sampleInterval",
            spec.agent.sample_interval.to_string(),
            format!("at least {min}ms: the agent samples at most that often"),
        ));
    }
    validate_qualified_name("spec.roles.role.key", &spec.roles.role.key)?;
    validate_qualified_name("spec.roles.clientId.key", &spec.roles.client_id.key)?;
    for (key, value) in &spec.prometheus.labels {
        let field = format!("spec.prometheus.labels[{key}]");
        validate_qualified_name(&field, key)?;
        validate_label_value(&field, value)?;
    }
    let grafana = &spec.grafana;
    validate_qualified_name("spec.grafana.labelKey", &grafana.label_key)?;
    validate_label_value("spec.grafana.labelValue", &grafana.label_value)?;
    validate_qualified_name("spec.grafana.folderAnnotation", &grafana.folder_annotation)?;
    if let Some(namespace) = &grafana.namespace
        && namespace != own_namespace
        && !settings
            .dashboard_namespaces
            .iter()
            .any(|allowed| allowed == namespace)
    {
        let allowed = if settings.dashboard_namespaces.is_empty() {
            format!("the monitor's own namespace {own_namespace:?} (the operator allows no other)")
        } else {
            format!(
                "the monitor's own namespace or one the operator allows: {}",
                settings.dashboard_namespaces.join(", ")
            )
        };
        return Err(FieldError::new("spec.grafana.namespace", namespace, allowed));
    }
    if let Some(kafka) = &spec.kafka {
        validate_kafka_security(kafka, spec.agent.image.is_some())?;
        for server in kafka.bootstrap_servers.split(',') {
            let server = server.trim();
            let valid = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid {
                return Err(FieldError::new(
                    "spec.kafka.bootstrapServers",
                    server,
                    "comma-separated host:port pairs",
                ));
            }
        }
    }
    Ok(())
}

/// The stock agent image speaks `PLAINTEXT` and `SASL_PLAINTEXT` with `PLAIN` only (it is built
/// without OpenSSL, which TLS and SCRAM need): asked for more with that image, the monitor is
/// invalid rather than an agent whose Kafka collector could never connect. A monitor naming its
/// own agent image (`spec.agent.image`, built with rdkafka's `ssl` feature) may ask for them.
fn validate_kafka_security(
    kafka: &flmon_crds::flmonitor::KafkaSpec,
    own_image: bool,
) -> Result<(), FieldError> {
    use flmon_crds::flmonitor::{KafkaSecurityProtocol, SaslMechanism};
    if own_image {
        return Ok(());
    }
    let hint = "or name an agent image built with rdkafka's ssl feature in spec.agent.image";
    if matches!(
        kafka.security_protocol,
        KafkaSecurityProtocol::Ssl | KafkaSecurityProtocol::SaslSsl
    ) {
        return Err(FieldError::new(
            "spec.kafka.securityProtocol",
            kafka.security_protocol.as_str(),
            format!("PLAINTEXT or SASL_PLAINTEXT: the default agent image has no TLS ({hint})"),
        ));
    }
    if let Some(sasl) = &kafka.sasl
        && sasl.mechanism != SaslMechanism::Plain
    {
        return Err(FieldError::new(
            "spec.kafka.sasl.mechanism",
            sasl.mechanism.as_str(),
            format!("PLAIN: the default agent image has no SCRAM ({hint})"),
        ));
    }
    Ok(())
}

/// Validates a label selector's operators and values as the apiserver would when using it.
///
/// # Errors
/// The first invalid requirement.
pub fn validate_selector(field: &str, selector: &LabelSelector) -> Result<(), FieldError> {
    for (key, value) in selector.match_labels.iter().flatten() {
        let field = format!("{field}.matchLabels[{key}]");
        validate_qualified_name(&field, key)?;
        validate_label_value(&field, value)?;
    }
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let field = format!("{field}.matchExpressions[{i}]");
        validate_qualified_name(&format!("{field}.key"), &requirement.key)?;
        let values = requirement.values.as_deref().unwrap_or_default();
        match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(FieldError::new(
                    format!("{field}.values"),
                    "[]",
                    format!("at least one value with operator {}", requirement.operator),
                ));
            }
            "In" | "NotIn" => {
                for value in values {
                    validate_label_value(&format!("{field}.values"), value)?;
                }
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(FieldError::new(
                    format!("{field}.values"),
                    values.join(","),
                    format!("no values with operator {}", requirement.operator),
                ));
            }
            "Exists" | "DoesNotExist" => {}
            other => {
                return Err(FieldError::new(
                    format!("{field}.operator"),
                    other,
                    "one of In, NotIn, Exists, DoesNotExist",
                ));
            }
        }
    }
    Ok(())
}

/// Validates a Kubernetes label or annotation key: an optional DNS-subdomain prefix and `/`, then
/// a name of at most 63 characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
///
/// # Errors
/// When the key is malformed.
pub fn validate_qualified_name(field: &str, key: &str) -> Result<(), FieldError> {
    let expected = "a qualified name: optional DNS prefix and '/', then at most 63 characters of \
                    alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric";
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    if !prefix_ok || !is_label_value_shaped(name) || name.is_empty() {
        return Err(FieldError::new(field, key, expected));
    }
    Ok(())
}

/// Validates a Kubernetes label value: empty, or at most 63 characters of alphanumerics, `-`,
/// `_`, `.`, starting and ending alphanumeric.
///
/// # Errors
/// When the value is malformed.
pub fn validate_label_value(field: &str, value: &str) -> Result<(), FieldError> {
    if !is_label_value_shaped(value) {
        return Err(FieldError::new(
            field,
            value,
            "a label value: at most 63 characters of alphanumerics, '-', '_' or '.', \
             starting and ending with an alphanumeric",
        ));
    }
    Ok(())
}

fn is_label_value_shaped(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let bytes = value.as_bytes();
    value.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `name` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_prometheus_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(yaml: &str) -> FLMonitor {
        serde_yaml_ng::from_str(yaml).expect("test monitor parses")
    }

    const BASE: &str = "
apiVersion: flmon.io/v1alpha1
kind: FLMonitor
metadata: {name: mnist, namespace: fl}
spec:
  selector: {matchLabels: {app: mnist}}
";

    fn settings() -> Settings {
        Settings {
            dashboard_namespaces: vec!["monitoring".into()],
            ..Settings::default()
        }
    }

    #[test]
    fn a_minimal_monitor_is_valid() {
        assert_eq!(validate_monitor(&monitor(BASE), &settings()), Ok(()));
    }

    #[test]
    fn a_dashboard_namespace_outside_the_allowed_list_is_rejected_with_the_allowed_ones() {
        let mut m = monitor(BASE);
        m.spec.grafana.namespace = Some("kube-system".into());
        let error = validate_monitor(&m, &settings()).expect_err("kube-system is not allowed");
        assert_eq!(error.field, "spec.grafana.namespace");
        assert_eq!(error.value, "kube-system");
        assert!(error.expected.contains("monitoring"), "{error}");
        m.spec.grafana.namespace = Some("monitoring".into());
        assert_eq!(validate_monitor(&m, &settings()), Ok(()));
        m.spec.grafana.namespace = Some("fl".into());
        assert_eq!(validate_monitor(&m, &settings()), Ok(()));
    }

    #[test]
    fn malformed_labels_name_the_offending_key() {
        let mut m = monitor(BASE);
        m.spec
            .prometheus
            .labels
            .insert("release".into(), "kube prometheus".into());
        let error = validate_monitor(&m, &settings()).expect_err("space in a label value");
        assert_eq!(error.field, "spec.prometheus.labels[release]");
        assert_eq!(error.value, "kube prometheus");
    }

    #[test]
    fn selector_operators_are_checked() {
        let mut m = monitor(BASE);
        m.spec.selector =
            serde_yaml_ng::from_str("matchExpressions: [{key: app, operator: Within, values: [a]}]")
                .expect("selector parses");
        let error = validate_monitor(&m, &settings()).expect_err("unknown operator");
        assert_eq!(error.field, "spec.selector.matchExpressions[0].operator");
        m.spec.selector =
            serde_yaml_ng::from_str("matchExpressions: [{key: app, operator: In}]").expect("selector parses");
        let error = validate_monitor(&m, &settings()).expect_err("In without values");
        assert_eq!(error.field, "spec.selector.matchExpressions[0].values");
    }

    #[test]
    fn a_sample_interval_the_agent_would_refuse_is_invalid() {
        let mut m = monitor(BASE);
        for (text, ok) in [("50ms", false), ("0s", false), ("100ms", true), ("5s", true)] {
            m.spec.agent.sample_interval = text.parse().expect("a duration");
            let result = validate_monitor(&m, &settings());
            assert_eq!(result.is_ok(), ok, "{text}: {result:?}");
        }
        m.spec.agent.sample_interval = "50ms".parse().expect("a duration");
        let error = validate_monitor(&m, &settings()).expect_err("too short");
        assert_eq!(
            (error.field.as_str(), error.value.as_str()),
            ("spec.agent.sampleInterval", "50ms")
        );
    }

    #[test]
    fn bootstrap_servers_must_be_host_port_pairs() {
        let mut m = monitor(BASE);
        m.spec.kafka = serde_yaml_ng::from_str("bootstrapServers: 'kafka:9092, kafka-2'").expect("parses");
        let error = validate_monitor(&m, &settings()).expect_err("missing port");
        assert_eq!(
            (error.field.as_str(), error.value.as_str()),
            ("spec.kafka.bootstrapServers", "kafka-2")
        );
    }

    #[test]
    fn kafka_security_the_default_agent_image_cannot_speak_is_invalid_unless_the_monitor_brings_its_own() {
        let kafka = |yaml: &str| {
            let mut m = monitor(BASE);
            m.spec.kafka = Some(serde_yaml_ng::from_str(yaml).expect("parses"));
            m
        };
        let sasl = "sasl: {mechanism: PLAIN, secretRef: {name: kafka-user}}";
        for ok in [
            "bootstrapServers: kafka:9092".to_string(),
            format!("{{bootstrapServers: 'kafka:9092', securityProtocol: SASL_PLAINTEXT, {sasl}}}"),
        ] {
            assert_eq!(validate_monitor(&kafka(&ok), &settings()), Ok(()), "{ok}");
        }
        let tls = kafka("{bootstrapServers: 'kafka:9093', securityProtocol: SASL_SSL}");
        let error = validate_monitor(&tls, &settings()).expect_err("TLS with the stock image");
        assert_eq!(
            (error.field.as_str(), error.value.as_str()),
            ("spec.kafka.securityProtocol", "SASL_SSL")
        );
        assert!(error.expected.contains("spec.agent.image"), "{error}");
        let scram = kafka(&format!(
            "{{bootstrapServers: 'kafka:9092', securityProtocol: SASL_PLAINTEXT, {}}}",
            sasl.replace("PLAIN", "SCRAM-SHA-512")
        ));
        let error = validate_monitor(&scram, &settings()).expect_err("SCRAM with the stock image");
        assert_eq!(
            (error.field.as_str(), error.value.as_str()),
            ("spec.kafka.sasl.mechanism", "SCRAM-SHA-512")
        );
        // A monitor that names an agent image built with TLS may ask for both.
        for mut m in [tls, scram] {
            m.spec.agent.image = Some("registry.example/flmon-agent-ssl:1".into());
            assert_eq!(validate_monitor(&m, &settings()), Ok(()));
        }
    }

    #[test]
    fn qualified_names_follow_kubernetes_rules() {
        for good in ["app", "flmon.io/role", "a.b-c_d", "example.com/x"] {
            assert!(validate_qualified_name("f", good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "Example.com/x", "/x", "a/b/c", &"x".repeat(64)] {
            assert!(validate_qualified_name("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prometheus_label_names_follow_prometheus_rules() {
        assert!(is_prometheus_label_name("team"));
        assert!(is_prometheus_label_name("_x1"));
        assert!(!is_prometheus_label_name("1x"));
        assert!(!is_prometheus_label_name("a-b"));
        assert!(!is_prometheus_label_name(""));
    }
}
