//! The pure half of reconcile: an FLMonitor and the AlertRules that apply to it → the objects
//! flmon generates for it. No I/O, so every generated object is unit-tested as a plain value.

mod dashboard;

use std::collections::BTreeMap;

use flmon_crds::names::{self, metrics as m};
use flmon_crds::{AlertRule, FLMonitor};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

pub use dashboard::{dashboard_json, dashboard_queries};

use super::rules::{self, DEFAULT_SCRAPE_INTERVAL};

/// Label on every generated object: who manages it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "flmon-operator";
/// Label on dashboards generated into another namespace: the monitor's namespace (with
/// [`names::LABEL_MONITOR`] it identifies the owner, which owner references cannot across namespaces).
pub const LABEL_MONITOR_NAMESPACE: &str = "flmon.io/monitor-namespace";

/// Prometheus Operator's ServiceMonitor kind.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// Prometheus Operator's PrometheusRule kind.
pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

/// The name of the Service, ServiceMonitor and PrometheusRule of a monitor.
pub fn object_name(monitor: &str) -> String {
    format!("flmon-{monitor}")
}

/// Where a monitor's dashboard ConfigMap goes, as (namespace, name). In the monitor's own
/// namespace it is `flmon-<name>-dashboard`; elsewhere `flmon.<namespace>.<name>`, which cannot
/// collide because FLMonitor names and namespaces contain no dots.
pub fn dashboard_location(monitor: &FLMonitor) -> (String, String) {
    let own = monitor.namespace().unwrap_or_default();
    let name = monitor.name_any();
    match &monitor.spec.grafana.namespace {
        Some(target) if *target != own => (target.clone(), format!("flmon.{own}.{name}")),
        _ => (own, format!("flmon-{name}-dashboard")),
    }
}

/// Everything generated for one monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Headless Service selecting the monitor's pods on the agent's metrics port.
    pub service: Service,
    /// ServiceMonitor, unless turned off.
    pub service_monitor: Option<DynamicObject>,
    /// PrometheusRule, unless turned off.
    pub prometheus_rule: Option<DynamicObject>,
    /// Grafana dashboard ConfigMap, unless turned off.
    pub dashboard: Option<ConfigMap>,
}

impl Desired {
    /// Every object as JSON in a stable order (for goldens and logs).
    pub fn to_values(&self) -> Vec<Value> {
        let mut values = vec![json!(self.service)];
        values.extend(self.service_monitor.iter().map(|o| json!(o)));
        values.extend(self.prometheus_rule.iter().map(|o| json!(o)));
        values.extend(self.dashboard.iter().map(|o| json!(o)));
        values
    }
}

/// Builds every object of a monitor. `rules` are the valid AlertRules that apply to it (see
/// [`rules::rule_applies`]), in any order: the PrometheusRule lists them by namespace and name.
pub fn build(monitor: &FLMonitor, rules: &[&AlertRule]) -> Desired {
    let spec = &monitor.spec;
    Desired {
        service: service(monitor),
        service_monitor: spec.prometheus.service_monitor.then(|| service_monitor(monitor)),
        prometheus_rule: spec.prometheus.rules.then(|| prometheus_rule(monitor, rules)),
        dashboard: spec.grafana.dashboard.then(|| dashboard_config_map(monitor)),
    }
}

fn common_labels(monitor: &FLMonitor) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "flmon".to_owned()),
        (names::LABEL_MONITOR.to_owned(), monitor.name_any()),
    ])
}

fn owner_reference(monitor: &FLMonitor) -> Option<Vec<OwnerReference>> {
    // Objects built from a monitor read from the apiserver always have a uid; a monitor without
    // one (a unit test's) simply gets no owner reference.
    monitor.controller_owner_ref(&()).map(|owner| {
        vec![OwnerReference {
            block_owner_deletion: Some(true),
            ..owner
        }]
    })
}

fn meta(monitor: &FLMonitor, name: String, extra_labels: &BTreeMap<String, String>) -> ObjectMeta {
    let mut labels = extra_labels.clone();
    labels.extend(common_labels(monitor));
    ObjectMeta {
        name: Some(name),
        namespace: monitor.namespace(),
        labels: Some(labels),
        owner_references: owner_reference(monitor),
        ..ObjectMeta::default()
    }
}

fn service(monitor: &FLMonitor) -> Service {
    Service {
        metadata: meta(monitor, object_name(&monitor.name_any()), &BTreeMap::new()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(BTreeMap::from([(
                names::LABEL_MONITOR.to_owned(),
                monitor.name_any(),
            )])),
            ports: Some(vec![ServicePort {
                name: Some(names::METRICS_PORT_NAME.into()),
                port: i32::from(names::METRICS_PORT),
                target_port: Some(IntOrString::String(names::METRICS_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn dynamic(resource: &ApiResource, metadata: ObjectMeta, spec: Value) -> DynamicObject {
    DynamicObject {
        types: Some(kube::api::TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        }),
        metadata,
        data: json!({ "spec": spec }),
    }
}

fn service_monitor(monitor: &FLMonitor) -> DynamicObject {
    let name = monitor.name_any();
    let mut endpoint = json!({
        "port": names::METRICS_PORT_NAME,
        "path": "/metrics",
        "scheme": "http",
        "relabelings": [{
            "action": "replace",
            "sourceLabels": ["__meta_kubernetes_pod_label_flmon_io_monitor"],
            "targetLabel": m::LABEL_MONITOR,
        }],
    });
    if let Some(interval) = &monitor.spec.prometheus.scrape_interval {
        endpoint["interval"] = json!(interval.as_str());
    }
    dynamic(
        &service_monitor_resource(),
        meta(monitor, object_name(&name), &monitor.spec.prometheus.labels),
        json!({
            "selector": { "matchLabels": {
                names::LABEL_MONITOR: name,
                LABEL_MANAGED_BY: MANAGED_BY,
            }},
            "namespaceSelector": { "matchNames": [monitor.namespace().unwrap_or_default()] },
            "endpoints": [endpoint],
        }),
    )
}

fn prometheus_rule(monitor: &FLMonitor, applicable: &[&AlertRule]) -> DynamicObject {
    let namespace = monitor.namespace().unwrap_or_default();
    let name = monitor.name_any();
    let interval = monitor
        .spec
        .prometheus
        .scrape_interval
        .as_ref()
        .map_or(DEFAULT_SCRAPE_INTERVAL, |d| d.as_std());
    let mut sorted: Vec<&AlertRule> = applicable.to_vec();
    sorted.sort_by_key(|r| (r.namespace(), r.name_any()));
    let alerts: Vec<Value> = sorted
        .iter()
        .map(|rule| {
            let mut alert = json!({
                "alert": rules::alert_name(&rule.name_any()),
                "expr": rules::promql(&rule.spec, &namespace, &name, interval),
                "labels": rules::alert_labels(rule),
                "annotations": {
                    "summary": rule.spec.message,
                    "description": format!(
                        "{} on FLMonitor {namespace}/{name}: {} {} {} (AlertRule {}/{}).",
                        rule.spec.message,
                        rule.spec.condition.metric.as_str(),
                        rule.spec.condition.op.as_str(),
                        rule.spec.condition.threshold,
                        rule.namespace().unwrap_or_default(),
                        rule.name_any(),
                    ),
                },
            });
            if !rule.spec.condition.for_.as_std().is_zero() {
                alert["for"] = json!(rule.spec.condition.for_.as_str());
            }
            alert
        })
        .collect();
    dynamic(
        &prometheus_rule_resource(),
        meta(monitor, object_name(&name), &monitor.spec.prometheus.labels),
        json!({ "groups": [{ "name": format!("flmon.{namespace}.{name}"), "rules": alerts }] }),
    )
}

fn dashboard_config_map(monitor: &FLMonitor) -> ConfigMap {
    let grafana = &monitor.spec.grafana;
    let own_namespace = monitor.namespace().unwrap_or_default();
    let (namespace, name) = dashboard_location(monitor);
    let mut labels = common_labels(monitor);
    labels.insert(grafana.label_key.clone(), grafana.label_value.clone());
    let cross_namespace = namespace != own_namespace;
    if cross_namespace {
        labels.insert(LABEL_MONITOR_NAMESPACE.into(), own_namespace.clone());
    }
    let annotations = grafana
        .folder
        .as_ref()
        .map(|folder| BTreeMap::from([(grafana.folder_annotation.clone(), folder.clone())]));
    let dashboard = dashboard_json(monitor);
    // Pretty-printed: the ConfigMap stays readable in `kubectl get -o yaml`.
    let text = serde_json::to_string_pretty(&dashboard).unwrap_or_else(|_| dashboard.to_string());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations,
            owner_references: if cross_namespace {
                None
            } else {
                owner_reference(monitor)
            },
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            format!("flmon-{own_namespace}-{}.json", monitor.name_any()),
            text,
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests;
