//! AlertRule reconcile: validate and report it in the `Valid` condition. Valid rules reach the
//! PrometheusRules through the FLMonitor reconcile, which watches AlertRules; an invalid rule is
//! left out there and never breaks the other rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flmon_crds::conditions::{self, reason};
use flmon_crds::{AlertRule, AlertRuleStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::{Map, json};

use super::Context;
use super::error::Error;
use super::rules::validate_rule;
use super::status::{DesiredCondition, newly_false, now, set_condition, warn_invalid};

/// The kind label of this reconciler's metrics.
pub const KIND: &str = "AlertRule";

/// Reconciles one AlertRule and records the outcome in the metrics.
///
/// # Errors
/// When the status cannot be written.
pub async fn reconcile(rule: Arc<AlertRule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_rule(&rule, &ctx).await;
    ctx.metrics.reconciled(
        KIND,
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

/// Retry at once on a write conflict, else after a pause.
pub fn error_policy(rule: Arc<AlertRule>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        rule = %format!("{}/{}", rule.namespace().unwrap_or_default(), rule.name_any()),
        category = error.category(),
        %error,
        "reconcile failed"
    );
    if error.is_conflict() {
        Action::requeue(Duration::from_millis(200))
    } else {
        Action::requeue(Duration::from_secs(10))
    }
}

/// The `Valid` condition of a rule.
pub fn valid_condition(rule: &AlertRule, ctx: &Context) -> DesiredCondition {
    match validate_rule(rule, &ctx.settings) {
        Ok(()) => DesiredCondition::new(
            conditions::VALID,
            true,
            reason::VALID_RULE,
            "The rule is part of the PrometheusRule of every monitor it applies to.",
        ),
        Err(invalid) => DesiredCondition::new(
            conditions::VALID,
            false,
            reason::INVALID_RULE,
            format!("{invalid}; the rule is left out until fixed"),
        ),
    }
}

async fn reconcile_rule(rule: &AlertRule, ctx: &Context) -> Result<Action, Error> {
    let current = rule.status.clone().unwrap_or_default();
    let mut status = current.clone();
    let generation = rule.meta().generation;
    status.observed_generation = generation;
    let valid = valid_condition(rule, ctx);
    let tell = newly_false(&current.conditions, &valid);
    set_condition(&mut status.conditions, &valid, generation, &now());
    let changes = status_changes(&current, &status);
    if !changes.is_empty() {
        let namespace = rule.namespace().unwrap_or_default();
        let api: Api<AlertRule> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "metadata": { "resourceVersion": rule.resource_version() },
            "status": changes,
        });
        api.patch_status(&rule.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|cause| Error::Status {
                kind: KIND,
                namespace,
                name: rule.name_any(),
                cause,
            })?;
        ctx.metrics.status_written(KIND);
    }
    if tell {
        warn_invalid(&ctx.client, rule, valid.reason, &valid.message).await;
    }
    Ok(Action::await_change())
}

/// The fields of the rule's status the controller owns that changed.
fn status_changes(current: &AlertRuleStatus, status: &AlertRuleStatus) -> Map<String, serde_json::Value> {
    let mut changes = Map::new();
    if current.observed_generation != status.observed_generation {
        changes.insert("observedGeneration".into(), json!(status.observed_generation));
    }
    if current.conditions != status.conditions {
        changes.insert("conditions".into(), json!(status.conditions));
    }
    changes
}
