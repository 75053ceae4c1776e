//! FLMonitor reconcile: validate → build (pure) → apply (server-side apply) → status.
//!
//! Objects in the monitor's namespace carry an owner reference, so the garbage collector removes
//! them with the monitor. A dashboard placed in another namespace cannot be owned across
//! namespaces: while one exists the monitor carries the [`FINALIZER`], and deleting the monitor
//! deletes that dashboard before the finalizer is removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flmon_crds::conditions::{self, reason};
use flmon_crds::{AlertRule, FLMonitor, FLMonitorStatus, GeneratedObjects, Phase, names};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};

use super::Context;
use super::apply::{apply, delete_if_present, dynamic_api};
use super::build::{self, Desired, dashboard_location, object_name};
use super::error::Error;
use super::rules::{rule_applies, validate_rule};
use super::status::{DesiredCondition, newly_false, now, set_condition, warn_invalid};
use super::validate::validate_monitor;
use crate::webhook::{AgentAudit, InjectionSettings, audit};

/// Finalizer kept while a monitor's dashboard lives in another namespace.
pub const FINALIZER: &str = "flmon.io/dashboard-cleanup";

/// The kind label of this reconciler's metrics.
pub const KIND: &str = "FLMonitor";

/// Reconcile again after this even when nothing changes, to repair drift in objects the
/// operator does not watch (ServiceMonitor, PrometheusRule).
const RESYNC: Duration = Duration::from_secs(300);

/// Reconciles one FLMonitor and records the outcome in the metrics.
///
/// # Errors
/// The step that failed; the status says the same where it could be written.
pub async fn reconcile(monitor: Arc<FLMonitor>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_monitor(&monitor, &ctx).await;
    ctx.metrics.reconciled(
        KIND,
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

/// What to do after a failed reconcile: nothing until the spec changes when it is invalid,
/// retry at once on a write conflict, else retry after a pause.
pub fn error_policy(monitor: Arc<FLMonitor>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        monitor = %format!("{}/{}", monitor.namespace().unwrap_or_default(), monitor.name_any()),
        category = error.category(),
        %error,
        "reconcile failed"
    );
    match error {
        Error::Invalid(_) => Action::await_change(),
        error if error.is_conflict() => Action::requeue(Duration::from_millis(200)),
        _ => Action::requeue(Duration::from_secs(10)),
    }
}

/// The AlertRules that apply to `monitor` and are valid.
pub fn applicable_rules<'a>(
    rules: &'a [Arc<AlertRule>],
    monitor: &FLMonitor,
    ctx: &Context,
) -> Vec<&'a AlertRule> {
    let mut applicable: Vec<&AlertRule> = rules
        .iter()
        .map(AsRef::as_ref)
        .filter(|rule| rule_applies(rule, monitor, &ctx.settings.operator_namespace))
        .filter(|rule| validate_rule(rule, &ctx.settings).is_ok())
        .collect();
    applicable.sort_by_key(|r| (r.namespace(), r.name_any()));
    applicable
}

/// Audits the monitor's pods (those it selects or that name it in `flmon.io/inject`) from the
/// pod cache, as the webhook would decide for them now. `None` when the operator does not audit.
fn audit_agents(monitor: &FLMonitor, ctx: &Context) -> Option<AgentAudit> {
    let defaults = ctx.settings.agent_defaults.as_ref()?;
    let pods = ctx.pods.as_ref()?;
    let namespace = monitor.namespace();
    let name = monitor.name_any();
    let selector = Selector::try_from(monitor.spec.selector.clone()).ok();
    // Only this monitor's pods are cloned: the audit looks at no others.
    let candidates: Vec<Pod> = pods
        .in_namespace(namespace.as_deref().unwrap_or_default())
        .iter()
        .filter(|pod| {
            let names_it = pod
                .annotations()
                .get(names::ANNOTATION_INJECT)
                .is_some_and(|v| v.trim() == name);
            names_it || selector.as_ref().is_some_and(|s| s.matches(pod.labels()))
        })
        .map(|pod| pod.as_ref().clone())
        .collect();
    let namespace_monitors: Vec<InjectionSettings> = ctx
        .monitors
        .state()
        .iter()
        .filter(|m| m.metadata.namespace == namespace && m.meta().deletion_timestamp.is_none())
        .map(|m| InjectionSettings::from(m.as_ref()))
        .collect();
    Some(audit(
        &InjectionSettings::from(monitor),
        &namespace_monitors,
        &candidates,
        defaults,
    ))
}

/// `namespace/name` → (namespace, name).
fn split_location(location: &str) -> Option<(&str, &str)> {
    location.split_once('/')
}

async fn reconcile_monitor(monitor: &FLMonitor, ctx: &Context) -> Result<Action, Error> {
    let namespace = monitor.namespace().unwrap_or_default();
    let name = monitor.name_any();
    tracing::debug!(monitor = %format!("{namespace}/{name}"), "reconciling");
    let api: Api<FLMonitor> = Api::namespaced(ctx.client.clone(), &namespace);

    if monitor.meta().deletion_timestamp.is_some() {
        cleanup(monitor, &api, ctx).await?;
        ctx.metrics.forget_monitor(&namespace, &name);
        return Ok(Action::await_change());
    }

    let current = monitor.status.clone().unwrap_or_default();
    let mut status = current.clone();
    let generation = monitor.meta().generation;
    status.observed_generation = generation;
    let phase = *status.phase.get_or_insert(Phase::Pending);
    ctx.metrics.set_phase(&namespace, &name, phase);
    let now = now();
    let mut resource_version = monitor.resource_version();

    if let Err(invalid) = validate_monitor(monitor, &ctx.settings) {
        let ready = DesiredCondition::new(
            conditions::READY,
            false,
            reason::INVALID_SPEC,
            invalid.to_string(),
        );
        let tell = newly_false(&current.conditions, &ready);
        set_condition(&mut status.conditions, &ready, generation, &now);
        write_status(&api, monitor, &resource_version, &current, &status, ctx).await?;
        if tell {
            warn_invalid(&ctx.client, monitor, reason::INVALID_SPEC, &ready.message).await;
        }
        return Err(Error::Invalid(invalid));
    }

    if let Some(agents) = audit_agents(monitor, ctx) {
        status.pods = Some(agents.pod_counts());
        status.outdated_agents = Some(agents.outdated);
        let injected = agents.condition();
        let condition = DesiredCondition::new(
            conditions::AGENTS_INJECTED,
            injected.ok,
            injected.reason,
            injected.message,
        );
        set_condition(&mut status.conditions, &condition, generation, &now);
    }

    let rules = ctx.rules.state();
    let desired = build::build(monitor, &applicable_rules(&rules, monitor, ctx));
    let (dashboard_namespace, _) = dashboard_location(monitor);
    let cross_namespace_dashboard = desired.dashboard.is_some() && dashboard_namespace != namespace;
    if cross_namespace_dashboard && !has_finalizer(monitor) {
        resource_version = set_finalizer(&api, monitor, &resource_version, true).await?;
    }

    let previous = current.generated.clone().unwrap_or_default();
    let wants_monitoring = desired.service_monitor.is_some() || desired.prometheus_rule.is_some();
    let had_monitoring = previous.service_monitor.is_some() || previous.prometheus_rule.is_some();
    let available = if wants_monitoring || had_monitoring {
        ctx.prometheus_operator.available(&ctx.client).await?
    } else {
        false
    };
    let plan = plan(monitor, &desired, available, &previous);
    // Skip the API calls when exactly this was applied a short while ago (e.g. the reconcile
    // that follows our own status write); changes to generated objects invalidate the entry.
    let key = (namespace.clone(), name.clone());
    let fingerprint = fingerprint(&desired, &plan);
    let outcome = if ctx.applied.is_fresh(&key, fingerprint) {
        Ok(())
    } else {
        let performed = perform(monitor, &desired, &plan, ctx).await;
        if performed.is_ok() {
            ctx.applied.remember(key, fingerprint);
        }
        performed
    };
    let (generated, monitoring) = match &outcome {
        Ok(()) => (plan.generated.clone(), Some(plan.monitoring.clone())),
        Err(_) => (previous.clone(), None),
    };
    status.generated = Some(generated);
    if let Some(monitoring) = &monitoring {
        set_condition(&mut status.conditions, monitoring, generation, &now);
    }
    let ready = match &outcome {
        Ok(()) => DesiredCondition::new(
            conditions::READY,
            true,
            reason::RECONCILED,
            "The spec is valid and every generated object is applied.",
        ),
        Err(error) => {
            DesiredCondition::new(conditions::READY, false, reason::APPLY_FAILED, error.to_string())
        }
    };
    set_condition(&mut status.conditions, &ready, generation, &now);

    if outcome.is_ok() && !cross_namespace_dashboard && has_finalizer(monitor) {
        resource_version = set_finalizer(&api, monitor, &resource_version, false).await?;
    }
    write_status(&api, monitor, &resource_version, &current, &status, ctx).await?;
    outcome?;

    let monitoring_missing = monitoring.is_some_and(|c| c.reason == reason::PROMETHEUS_OPERATOR_MISSING);
    Ok(if monitoring_missing {
        // Re-check soon: the CRDs may be installed after the monitor.
        Action::requeue(ctx.prometheus_operator.ttl())
    } else {
        Action::requeue(RESYNC)
    })
}

/// What a reconcile writes: the generated objects' names, the objects to delete, and the
/// MonitoringReady condition. Pure, from the desired objects and what was generated before.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Names of the objects that will exist.
    pub generated: GeneratedObjects,
    /// Objects generated before and no longer wanted: (kind, namespace, name).
    pub deletes: Vec<(&'static str, String, String)>,
    /// Whether Prometheus Operator's kinds are applied.
    pub apply_monitoring: bool,
    /// The MonitoringReady condition.
    pub monitoring: DesiredCondition,
}

/// Plans a reconcile. `available`: whether Prometheus Operator's CRDs are installed.
pub fn plan(monitor: &FLMonitor, desired: &Desired, available: bool, previous: &GeneratedObjects) -> Plan {
    let namespace = monitor.namespace().unwrap_or_default();
    let name = object_name(&monitor.name_any());
    let mut generated = GeneratedObjects {
        service: Some(name.clone()),
        ..GeneratedObjects::default()
    };
    let mut deletes = Vec::new();
    let wants_monitoring = desired.service_monitor.is_some() || desired.prometheus_rule.is_some();
    if available {
        if desired.service_monitor.is_some() {
            generated.service_monitor = Some(name.clone());
        } else if previous.service_monitor.is_some() {
            deletes.push(("ServiceMonitor", namespace.clone(), name.clone()));
        }
        if desired.prometheus_rule.is_some() {
            generated.prometheus_rule = Some(name.clone());
        } else if previous.prometheus_rule.is_some() {
            deletes.push(("PrometheusRule", namespace.clone(), name.clone()));
        }
    }
    let monitoring = match (wants_monitoring, available) {
        (true, true) => DesiredCondition::new(
            conditions::MONITORING_READY,
            true,
            reason::MONITORING_APPLIED,
            "The ServiceMonitor and PrometheusRule asked for by spec.prometheus are applied.",
        ),
        (true, false) => DesiredCondition::new(
            conditions::MONITORING_READY,
            false,
            reason::PROMETHEUS_OPERATOR_MISSING,
            "Prometheus Operator's CRDs (monitoring.coreos.com/v1 ServiceMonitor and PrometheusRule) are \
             not installed; the ServiceMonitor and PrometheusRule are created once they are.",
        ),
        (false, _) => disabled_condition(),
    };
    if desired.dashboard.is_some() {
        let (dashboard_namespace, dashboard_name) = dashboard_location(monitor);
        generated.dashboard = Some(format!("{dashboard_namespace}/{dashboard_name}"));
    }
    if let Some(old) = &previous.dashboard
        && Some(old) != generated.dashboard.as_ref()
        && let Some((old_namespace, old_name)) = split_location(old)
    {
        deletes.push(("ConfigMap", old_namespace.to_owned(), old_name.to_owned()));
    }
    Plan {
        generated,
        deletes,
        apply_monitoring: available && wants_monitoring,
        monitoring,
    }
}

/// A hash of everything a reconcile would write.
fn fingerprint(desired: &Desired, plan: &Plan) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for value in desired.to_values() {
        value.to_string().hash(&mut hasher);
    }
    plan.apply_monitoring.hash(&mut hasher);
    plan.deletes.hash(&mut hasher);
    hasher.finish()
}

/// Applies the desired objects and deletes those no longer wanted.
async fn perform(monitor: &FLMonitor, desired: &Desired, plan: &Plan, ctx: &Context) -> Result<(), Error> {
    let namespace = monitor.namespace().unwrap_or_default();
    let client = &ctx.client;

    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    apply(&services, "Service", &desired.service).await?;
    ctx.metrics.applied();
    if plan.apply_monitoring {
        let kinds = [
            (
                "ServiceMonitor",
                build::service_monitor_resource(),
                &desired.service_monitor,
            ),
            (
                "PrometheusRule",
                build::prometheus_rule_resource(),
                &desired.prometheus_rule,
            ),
        ];
        for (kind, resource, object) in kinds {
            if let Some(object) = object {
                apply(&dynamic_api(client, &namespace, &resource), kind, object).await?;
                ctx.metrics.applied();
            }
        }
    }
    if let Some(dashboard) = &desired.dashboard {
        let (dashboard_namespace, _) = dashboard_location(monitor);
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &dashboard_namespace);
        apply(&api, "ConfigMap", dashboard).await?;
        ctx.metrics.applied();
    }
    for (kind, namespace, name) in &plan.deletes {
        match *kind {
            "ConfigMap" => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
                delete_if_present(&api, kind, namespace, name).await?;
            }
            _ => {
                let resource = if *kind == "ServiceMonitor" {
                    build::service_monitor_resource()
                } else {
                    build::prometheus_rule_resource()
                };
                delete_if_present(&dynamic_api(client, namespace, &resource), kind, namespace, name).await?;
            }
        }
    }
    Ok(())
}

fn disabled_condition() -> DesiredCondition {
    DesiredCondition::new(
        conditions::MONITORING_READY,
        true,
        reason::MONITORING_DISABLED,
        "spec.prometheus turns off both the ServiceMonitor and the PrometheusRule.",
    )
}

fn has_finalizer(monitor: &FLMonitor) -> bool {
    monitor.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds or removes the finalizer with a merge patch guarded by `resourceVersion` (so another
/// controller's finalizer is never lost). Returns the new resourceVersion.
async fn set_finalizer(
    api: &Api<FLMonitor>,
    monitor: &FLMonitor,
    resource_version: &Option<String>,
    present: bool,
) -> Result<Option<String>, Error> {
    let mut finalizers: Vec<String> = monitor
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = json!({ "metadata": { "resourceVersion": resource_version, "finalizers": finalizers } });
    let updated = api
        .patch(
            &monitor.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|cause| Error::Finalizer {
            namespace: monitor.namespace().unwrap_or_default(),
            name: monitor.name_any(),
            cause,
        })?;
    Ok(updated.resource_version())
}

/// On deletion: deletes a dashboard placed in another namespace, then releases the monitor.
async fn cleanup(monitor: &FLMonitor, api: &Api<FLMonitor>, ctx: &Context) -> Result<(), Error> {
    if !has_finalizer(monitor) {
        return Ok(());
    }
    let own = monitor.namespace().unwrap_or_default();
    let mut locations = vec![dashboard_location(monitor)];
    if let Some(generated) = monitor.status.as_ref().and_then(|s| s.generated.as_ref())
        && let Some((namespace, name)) = generated.dashboard.as_deref().and_then(split_location)
    {
        locations.push((namespace.to_owned(), name.to_owned()));
    }
    for (namespace, name) in locations.iter().filter(|(namespace, _)| *namespace != own) {
        let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
        if delete_if_present(&configmaps, "ConfigMap", namespace, name).await? {
            tracing::info!(dashboard = %format!("{namespace}/{name}"), "deleted the dashboard of a deleted monitor");
        }
    }
    set_finalizer(api, monitor, &monitor.resource_version(), false).await?;
    Ok(())
}

/// The fields of `status` that differ from `current`, as a merge patch (absent options become
/// `null` so that they are removed). Empty when nothing changed.
pub fn status_changes(current: &FLMonitorStatus, status: &FLMonitorStatus) -> Map<String, Value> {
    let mut changes = Map::new();
    if current.observed_generation != status.observed_generation {
        changes.insert("observedGeneration".into(), json!(status.observed_generation));
    }
    if current.phase != status.phase {
        changes.insert("phase".into(), json!(status.phase));
    }
    if current.pods != status.pods {
        changes.insert(
            "pods".into(),
            merge_patch(json!(current.pods), json!(status.pods)),
        );
    }
    if current.outdated_agents != status.outdated_agents {
        changes.insert("outdatedAgents".into(), json!(status.outdated_agents));
    }
    if current.generated != status.generated {
        changes.insert(
            "generated".into(),
            merge_patch(json!(current.generated), json!(status.generated)),
        );
    }
    if current.conditions != status.conditions {
        changes.insert("conditions".into(), json!(status.conditions));
    }
    changes
}

/// `desired` as a JSON merge patch over `current`: a key of a nested object that `desired` leaves
/// out (an empty list or an absent option not serialized) becomes `null`, so it is removed rather
/// than kept from `current`.
fn merge_patch(current: Value, desired: Value) -> Value {
    match (current, desired) {
        (Value::Object(current), Value::Object(mut desired)) => {
            for (key, old) in current {
                match desired.remove(&key) {
                    Some(new) => {
                        desired.insert(key, merge_patch(old, new));
                    }
                    None => {
                        desired.insert(key, Value::Null);
                    }
                }
            }
            Value::Object(desired)
        }
        (_, desired) => desired,
    }
}

/// Writes the status when it changed, and counts the write.
async fn write_status(
    api: &Api<FLMonitor>,
    monitor: &FLMonitor,
    resource_version: &Option<String>,
    current: &FLMonitorStatus,
    status: &FLMonitorStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let changes = status_changes(current, status);
    if changes.is_empty() {
        return Ok(());
    }
    tracing::debug!(
        monitor = %format!("{}/{}", monitor.namespace().unwrap_or_default(), monitor.name_any()),
        fields = ?changes.keys().collect::<Vec<_>>(),
        "writing status"
    );
    let patch = json!({
        "metadata": { "resourceVersion": resource_version },
        "status": changes,
    });
    api.patch_status(
        &monitor.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|cause| Error::Status {
        kind: KIND,
        namespace: monitor.namespace().unwrap_or_default(),
        name: monitor.name_any(),
        cause,
    })?;
    ctx.metrics.status_written(KIND);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_status_yields_no_patch() {
        let status = FLMonitorStatus {
            observed_generation: Some(2),
            phase: Some(Phase::Training),
            ..FLMonitorStatus::default()
        };
        assert!(status_changes(&status, &status.clone()).is_empty());
    }

    #[test]
    fn a_dropped_generated_object_is_patched_to_null() {
        let current = FLMonitorStatus {
            generated: Some(GeneratedObjects {
                service: Some("flmon-x".into()),
                service_monitor: Some("flmon-x".into()),
                ..GeneratedObjects::default()
            }),
            ..FLMonitorStatus::default()
        };
        let mut status = current.clone();
        if let Some(generated) = status.generated.as_mut() {
            generated.service_monitor = None;
        }
        let changes = status_changes(&current, &status);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes["generated"]["serviceMonitor"], Value::Null);
        assert_eq!(changes["generated"]["service"], "flmon-x");
    }

    #[test]
    fn a_pod_list_that_emptied_is_patched_away_not_kept() {
        let current = FLMonitorStatus {
            pods: Some(flmon_crds::flmonitor::PodCounts {
                selected: 1,
                missing: 1,
                missing_names: vec!["client-7".into()],
                ..Default::default()
            }),
            ..FLMonitorStatus::default()
        };
        let mut status = current.clone();
        if let Some(pods) = status.pods.as_mut() {
            pods.missing = 0;
            pods.injected = 1;
            pods.missing_names.clear();
        }
        let changes = status_changes(&current, &status);
        assert_eq!(changes["pods"]["missingNames"], Value::Null);
        assert_eq!(changes["pods"]["injected"], 1);
        assert_eq!(changes["pods"]["missing"], 0);
    }

    #[test]
    fn fields_owned_by_the_analysis_are_never_patched() {
        let current = FLMonitorStatus {
            round: Some(7),
            global_loss: Some(0.3),
            ..FLMonitorStatus::default()
        };
        let mut status = current.clone();
        status.observed_generation = Some(1);
        let changes = status_changes(&current, &status);
        assert_eq!(changes.keys().collect::<Vec<_>>(), ["observedGeneration"]);
    }
}
