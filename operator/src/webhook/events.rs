//! `Injected` / `InjectionSkipped` / `MonitorConflict` Events about admitted pods, published off
//! the admission path by one worker so an answer never waits on the API server.
//!
//! At admission the pod does not exist yet (a Job's pod has only `generateName`), so Events go on
//! its controlling owner (the Job, ReplicaSet, StatefulSet…), where `kubectl describe` shows them
//! next to the owner's own; a bare pod with a name gets them under its name; otherwise the
//! FLMonitor concerned gets them.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use super::inject::{Decision, pod_display_name};

/// Events waiting to be published; beyond this they are dropped and counted.
const QUEUE: usize = 1024;

/// An Event to publish and the object it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// Where the Event goes.
    pub regarding: ObjectReference,
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// `Injected`, `InjectionSkipped` or `MonitorConflict`.
    pub reason: String,
    /// The sentence shown by `kubectl describe`.
    pub note: String,
}

/// Publishes [`PendingEvent`]s in the background.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: mpsc::Sender<PendingEvent>,
}

impl EventSink {
    /// Starts the publishing worker on the current runtime.
    pub fn spawn(client: kube::Client, reporter: Reporter) -> Self {
        let (tx, mut rx) = mpsc::channel::<PendingEvent>(QUEUE);
        // The recorder folds repeats (same owner and reason) into one Event series, so a Job
        // creating 500 pods yields one Event with a count, not 500 objects.
        let recorder = Recorder::new(client, reporter);
        tokio::spawn(async move {
            while let Some(pending) = rx.recv().await {
                let event = Event {
                    type_: if pending.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: pending.reason.clone(),
                    note: Some(truncate(&pending.note, 1000)),
                    action: "Inject".to_owned(),
                    secondary: None,
                };
                if let Err(error) = recorder.publish(&event, &pending.regarding).await {
                    tracing::warn!(%error, reason = %pending.reason, "failed to publish an injection Event");
                }
            }
        });
        Self { tx }
    }

    /// Queues `event`; `false` when the queue is full and it was dropped.
    pub fn send(&self, event: PendingEvent) -> bool {
        self.tx.try_send(event).is_ok()
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The object Events about `pod` go on (see the module docs); `None` when there is nothing to
/// name (a bare pod with only `generateName` and no monitor).
pub fn event_target(pod: &Pod, namespace: &str, monitor: Option<&str>) -> Option<ObjectReference> {
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first());
    if let Some(owner) = owner {
        return Some(ObjectReference {
            api_version: Some(owner.api_version.clone()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: Some(namespace.to_owned()),
            uid: Some(owner.uid.clone()),
            ..Default::default()
        });
    }
    if let Some(name) = &pod.metadata.name {
        return Some(ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        });
    }
    monitor.map(|monitor| ObjectReference {
        api_version: Some(format!(
            "{}/{}",
            flmon_crds::names::GROUP,
            flmon_crds::names::VERSION
        )),
        kind: Some("FLMonitor".to_owned()),
        name: Some(monitor.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    })
}

/// The Events a decision deserves: `Injected` for an injection (plus `MonitorConflict` when
/// other monitors select the pod too), `InjectionSkipped` for a skip the user should know about.
pub fn events_for(pod: &Pod, namespace: &str, decision: &Decision, agent_version: &str) -> Vec<PendingEvent> {
    let pod_name = pod_display_name(pod);
    let monitor = match decision {
        Decision::Inject(injection) => Some(injection.monitor.as_str()),
        Decision::Skip(skip) => skip.monitor.as_deref(),
    };
    let Some(regarding) = event_target(pod, namespace, monitor) else {
        return Vec::new();
    };
    let mut events = Vec::new();
    match decision {
        Decision::Inject(injection) => {
            events.push(PendingEvent {
                regarding: regarding.clone(),
                warning: false,
                reason: "Injected".to_owned(),
                note: format!(
                    "injected flmon agent {agent_version} into pod {pod_name} for FLMonitor {} (role {}, gpu mode {})",
                    injection.monitor,
                    injection.role.as_str(),
                    injection.gpu_mode.as_str()
                ),
            });
            if !injection.conflicts.is_empty() {
                events.push(PendingEvent {
                    regarding,
                    warning: true,
                    reason: "MonitorConflict".to_owned(),
                    note: format!(
                        "pod {pod_name} is selected by FLMonitors {} too; {} injected it (named by flmon.io/inject, else the oldest)",
                        injection.conflicts.join(", "),
                        injection.monitor
                    ),
                });
            }
        }
        Decision::Skip(skip) if skip.reason.is_reported() => events.push(PendingEvent {
            regarding,
            warning: true,
            reason: "InjectionSkipped".to_owned(),
            note: format!(
                "pod {pod_name} admitted without the flmon agent ({}): {}",
                skip.reason, skip.message
            ),
        }),
        Decision::Skip(_) => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use crate::webhook::inject::{Skip, SkipReason};

    fn job_pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                generate_name: Some("mnist-fedavg-client-3-".to_owned()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "batch/v1".to_owned(),
                    kind: "Job".to_owned(),
                    name: "mnist-fedavg-client-3".to_owned(),
                    uid: "7d1c2a3e".to_owned(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_skip_of_a_job_pod_is_reported_on_the_job_naming_the_generated_pod() {
        let decision = Decision::Skip(Skip {
            reason: SkipReason::ContainerNameClash,
            monitor: Some("mnist-fedavg".to_owned()),
            message: "spec.containers already has a container named \"flmon-agent\"".to_owned(),
        });
        let events = events_for(&job_pod(), "fl-team", &decision, "0.1.0");
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert!(event.warning);
        assert_eq!(event.reason, "InjectionSkipped");
        assert_eq!(event.regarding.kind.as_deref(), Some("Job"));
        assert_eq!(event.regarding.name.as_deref(), Some("mnist-fedavg-client-3"));
        assert!(
            event.note.contains("mnist-fedavg-client-3-<generated>"),
            "{}",
            event.note
        );
        assert!(event.note.contains("ContainerNameClash"), "{}", event.note);
    }

    #[test]
    fn ordinary_skips_raise_no_event() {
        let decision = Decision::Skip(Skip {
            reason: SkipReason::NotSelected,
            monitor: None,
            message: String::new(),
        });
        assert!(events_for(&job_pod(), "fl-team", &decision, "0.1.0").is_empty());
    }

    #[test]
    fn an_unnamed_ownerless_pod_falls_back_to_the_monitor() {
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some("x-".to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let target = event_target(&pod, "fl-team", Some("mnist-fedavg")).expect("target");
        assert_eq!(target.kind.as_deref(), Some("FLMonitor"));
        assert!(event_target(&pod, "fl-team", None).is_none());
    }
}
