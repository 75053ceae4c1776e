//! Conditions and status writes: a condition's `lastTransitionTime` moves only when its status
//! changes, and a status is written only when it differs from what the apiserver holds.

use flmon_crds::conditions::ORDER;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "flmon-operator";

/// A condition as the controller computes it, before it is stamped with times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type, e.g. `Ready`.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// A sentence for humans; keep it stable between reconciles (no times or counters that
    /// change), or every reconcile becomes a write.
    pub message: String,
}

impl DesiredCondition {
    /// A condition.
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        DesiredCondition {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Sets `desired` in `conditions`: reason, message and observed generation are updated, and
/// `lastTransitionTime` becomes `now` only when the status changes (or the condition is new).
/// A new condition takes its place in [`ORDER`], so the list reads the same on every
/// monitor however its writes interleaved. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: &DesiredCondition,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = status_str(desired.status);
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let before = existing.clone();
            if existing.status != status {
                existing.status = status.to_owned();
                existing.last_transition_time = now.clone();
            }
            existing.reason = desired.reason.to_owned();
            existing.message.clone_from(&desired.message);
            existing.observed_generation = generation;
            *existing != before
        }
        None => {
            let rank = |t: &str| ORDER.iter().position(|o| *o == t).unwrap_or(ORDER.len());
            let at = conditions
                .iter()
                .position(|c| rank(&c.type_) > rank(desired.type_))
                .unwrap_or(conditions.len());
            conditions.insert(
                at,
                Condition {
                    type_: desired.type_.to_owned(),
                    status: status.to_owned(),
                    reason: desired.reason.to_owned(),
                    message: desired.message.clone(),
                    observed_generation: generation,
                    last_transition_time: now.clone(),
                },
            );
            true
        }
    }
}

/// The current time as a Kubernetes timestamp, truncated to whole seconds as the apiserver stores it
/// (so a value read back compares equal to the one written).
pub fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Writes `status` to the status subresource with a JSON merge patch guarded by the object's
/// `resourceVersion`: if another writer changed the object since it was read, the apiserver
/// answers 409 and nothing is overwritten; the caller retries with the fresh object.
///
/// # Errors
/// The apiserver's error, e.g. 409 Conflict.
pub async fn patch_status<K, S>(api: &Api<K>, object: &K, status: &S) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = json!({
        "metadata": { "resourceVersion": object.resource_version() },
        "status": status,
    });
    api.patch_status(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Whether `desired` is false and new: the condition was true, absent, or false with another
/// message. An invalid spec is told once per change, not at every reconcile.
pub fn newly_false(before: &[Condition], desired: &DesiredCondition) -> bool {
    !desired.status
        && !before
            .iter()
            .any(|c| c.type_ == desired.type_ && c.status == "False" && c.message == desired.message)
}

/// An Event of the operator's: `reason` with `note` (cut to the 1 000 characters the API keeps),
/// for `action`.
pub fn event(warning: bool, reason: &str, note: &str, action: &str) -> kube::runtime::events::Event {
    use kube::runtime::events::{Event, EventType};
    Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_owned(),
        secondary: None,
    }
}

/// Publishes a Warning Event on `object` saying why its spec is not used; a failure is logged.
pub async fn warn_invalid<K>(client: &kube::Client, object: &K, reason: &str, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    use kube::runtime::events::{Recorder, Reporter};
    let recorder = Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER));
    let event = event(true, reason, note, "Validate");
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, reason, "failed to publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).expect("valid time"))
    }

    #[test]
    fn a_new_condition_is_added_with_the_current_time() {
        let mut conditions = vec![];
        let ready = DesiredCondition::new("Ready", true, "Reconciled", "ok");
        assert!(set_condition(&mut conditions, &ready, Some(1), &at(10)));
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn setting_the_same_condition_again_changes_nothing() {
        let mut conditions = vec![];
        let ready = DesiredCondition::new("Ready", true, "Reconciled", "ok");
        set_condition(&mut conditions, &ready, Some(1), &at(10));
        assert!(!set_condition(&mut conditions, &ready, Some(1), &at(20)));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            &DesiredCondition::new("Ready", true, "A", "a"),
            Some(1),
            &at(10),
        );
        assert!(set_condition(
            &mut conditions,
            &DesiredCondition::new("Ready", true, "B", "b"),
            Some(2),
            &at(20)
        ));
        assert_eq!(
            conditions[0].last_transition_time,
            at(10),
            "same status: no transition"
        );
        assert_eq!(
            (conditions[0].reason.as_str(), conditions[0].message.as_str()),
            ("B", "b")
        );
        assert!(set_condition(
            &mut conditions,
            &DesiredCondition::new("Ready", false, "B", "b"),
            Some(2),
            &at(30)
        ));
        assert_eq!(conditions[0].last_transition_time, at(30));
    }

    #[test]
    fn other_conditions_are_left_alone() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            &DesiredCondition::new("Converged", true, "X", "x"),
            None,
            &at(5),
        );
        set_condition(
            &mut conditions,
            &DesiredCondition::new("Ready", true, "A", "a"),
            Some(1),
            &at(10),
        );
        assert_eq!(conditions.len(), 2);
        let converged = conditions.iter().find(|c| c.type_ == "Converged").unwrap();
        assert_eq!(converged.last_transition_time, at(5));
        assert_eq!(converged.observed_generation, None);
    }

    #[test]
    fn conditions_are_listed_in_one_order_whichever_was_written_first() {
        let types = |written: &[&'static str]| {
            let mut conditions = vec![];
            for t in written {
                set_condition(
                    &mut conditions,
                    &DesiredCondition::new(t, true, "R", "m"),
                    None,
                    &at(1),
                );
            }
            conditions.into_iter().map(|c| c.type_).collect::<Vec<_>>()
        };
        let expected = ["Ready", "AgentsInjected", "Converged", "Stalled", "Custom"];
        assert_eq!(
            types(&["Stalled", "Custom", "Converged", "AgentsInjected", "Ready"]),
            expected
        );
        assert_eq!(
            types(&["Ready", "AgentsInjected", "Converged", "Stalled", "Custom"]),
            expected
        );
        assert_eq!(
            types(&["Custom", "Converged", "Ready", "Stalled", "AgentsInjected"]),
            expected
        );
    }
}
