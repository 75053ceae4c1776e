//! Pods an FLMonitor should have injected but did not (created while the webhook was down, or
//! skipped), and pods whose agent is stale: what the controller reports as `AgentsInjected`,
//! `status.pods` and `status.outdatedAgents`. Pure, like the injection it re-runs.

use std::collections::{BTreeMap, BTreeSet};

use flmon_crds::PodCounts;
use flmon_crds::flmonitor::MAX_LISTED_NAMES;
use flmon_crds::names;
use k8s_openapi::api::core::v1::Pod;

use super::inject::{Decision, SkipReason, decide, has_agent};
use super::selector;
use super::settings::{AgentDefaults, InjectionSettings};

/// The agent situation of one monitor's pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentAudit {
    /// Live pods the monitor selects or that name it in `flmon.io/inject`.
    pub selected: i32,
    /// Of those, pods carrying this monitor's agent.
    pub injected: i32,
    /// Pods the webhook would inject for this monitor now but that lack the agent.
    pub missing: i32,
    /// Names of missing pods (at most [`MAX_LISTED_NAMES`], sorted).
    pub missing_names: Vec<String>,
    /// Pods the webhook skipped for a reason the user should fix (clashes, hostNetwork…).
    pub skipped: BTreeMap<SkipReason, i32>,
    /// Names of skipped pods (bounded, sorted).
    pub skipped_names: Vec<String>,
    /// Injected pods whose agent version or configuration hash is not the current one.
    pub outdated: i32,
    /// Names of outdated pods (bounded, sorted).
    pub outdated_names: Vec<String>,
    /// Other monitors that also select this monitor's pods.
    pub conflicts: BTreeSet<String>,
    /// Pods the monitor selects that have finished (Succeeded or Failed): not audited, since a
    /// pod gets the agent only when created, but named in the condition when no live pod is left.
    pub finished: i32,
}

/// An `AgentsInjected` condition, for the controller to stamp with times and generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentsInjected {
    /// Whether every selected pod carries the agent.
    pub ok: bool,
    /// `AllInjected`, `AgentsMissing`, `InjectionSkipped` or `NoPods`.
    pub reason: &'static str,
    /// A sentence naming the pods concerned.
    pub message: String,
}

fn bound(names: &mut Vec<String>) {
    names.sort();
    names.truncate(MAX_LISTED_NAMES);
}

fn is_live(pod: &Pod) -> bool {
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    !finished && pod.metadata.deletion_timestamp.is_none()
}

/// Audits `monitor`'s pods among `pods` (the pods of its namespace), given every monitor of
/// that namespace (`monitor` included) as the webhook would see them.
pub fn audit(
    monitor: &InjectionSettings,
    namespace_monitors: &[InjectionSettings],
    pods: &[Pod],
    defaults: &AgentDefaults,
) -> AgentAudit {
    let current_hash = monitor.config_hash(defaults);
    let mut audit = AgentAudit::default();
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let annotations = pod.metadata.annotations.as_ref();
        let names_it = annotations
            .and_then(|a| a.get(names::ANNOTATION_INJECT))
            .is_some_and(|v| v.trim() == monitor.name);
        let selects = selector::matches(&monitor.selector, pod.metadata.labels.as_ref()) == Ok(true);
        if !selects && !names_it {
            continue;
        }
        if !is_live(pod) {
            audit.finished += 1;
            continue;
        }
        audit.selected += 1;
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        if has_agent(pod) {
            let by = annotations.and_then(|a| a.get(names::ANNOTATION_MONITOR));
            if by.map(String::as_str) != Some(monitor.name.as_str()) {
                audit.conflicts.extend(by.cloned());
                continue;
            }
            audit.injected += 1;
            let version = annotations.and_then(|a| a.get(names::ANNOTATION_INJECTED));
            let hash = annotations.and_then(|a| a.get(names::ANNOTATION_CONFIG_HASH));
            if version != Some(&defaults.version) || hash != Some(&current_hash) {
                audit.outdated += 1;
                audit.outdated_names.push(name.to_owned());
            }
            continue;
        }
        match decide(pod, namespace_monitors, defaults) {
            Decision::Inject(injection) if injection.monitor == monitor.name => {
                audit.missing += 1;
                audit.missing_names.push(name.to_owned());
                audit.conflicts.extend(injection.conflicts);
            }
            Decision::Inject(injection) => {
                audit.conflicts.insert(injection.monitor);
            }
            Decision::Skip(skip)
                if skip.reason.is_reported() && skip.monitor.as_deref() == Some(&monitor.name) =>
            {
                *audit.skipped.entry(skip.reason).or_default() += 1;
                audit.skipped_names.push(name.to_owned());
            }
            Decision::Skip(_) => {}
        }
    }
    audit.conflicts.remove(&monitor.name);
    bound(&mut audit.missing_names);
    bound(&mut audit.skipped_names);
    bound(&mut audit.outdated_names);
    audit
}

impl AgentAudit {
    /// The counts for `status.pods`.
    pub fn pod_counts(&self) -> PodCounts {
        PodCounts {
            selected: self.selected,
            injected: self.injected,
            missing: self.missing + self.skipped.values().sum::<i32>(),
            missing_names: {
                let mut names: Vec<String> = self
                    .missing_names
                    .iter()
                    .chain(&self.skipped_names)
                    .cloned()
                    .collect();
                bound(&mut names);
                names
            },
        }
    }

    /// The `AgentsInjected` condition this audit implies.
    pub fn condition(&self) -> AgentsInjected {
        let list = |names: &[String], total: i32| {
            let more = usize::try_from(total).unwrap_or(0).saturating_sub(names.len());
            if more > 0 {
                format!("{} and {more} more", names.join(", "))
            } else {
                names.join(", ")
            }
        };
        let conflicts = if self.conflicts.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = self.conflicts.iter().map(String::as_str).collect();
            format!(
                "; FLMonitors {} also select pods this monitor selects",
                names.join(", ")
            )
        };
        if self.missing > 0 {
            AgentsInjected {
                ok: false,
                reason: "AgentsMissing",
                message: format!(
                    "{} of {} selected pods lack the agent (created while the webhook was unreachable?): {}; \
                     recreate them to inject it{conflicts}",
                    self.missing,
                    self.selected,
                    list(&self.missing_names, self.missing)
                ),
            }
        } else if !self.skipped.is_empty() {
            let total: i32 = self.skipped.values().sum();
            let reasons: Vec<String> = self.skipped.iter().map(|(r, n)| format!("{r}: {n}")).collect();
            AgentsInjected {
                ok: false,
                reason: "InjectionSkipped",
                message: format!(
                    "{total} selected pods were admitted without the agent ({}): {}; see their owners' \
                     InjectionSkipped Events{conflicts}",
                    reasons.join(", "),
                    list(&self.skipped_names, total)
                ),
            }
        } else if self.selected == 0 && self.finished > 0 {
            AgentsInjected {
                ok: true,
                reason: "NoPods",
                message: format!(
                    "no selected pod is running: {} selected {} finished{conflicts}",
                    self.finished,
                    if self.finished == 1 {
                        "pod has"
                    } else {
                        "pods have"
                    }
                ),
            }
        } else if self.selected == 0 {
            AgentsInjected {
                ok: true,
                reason: "NoPods",
                message: format!("no pod is selected yet{conflicts}"),
            }
        } else {
            AgentsInjected {
                ok: true,
                reason: "AllInjected",
                message: format!("all {} selected pods carry the agent{conflicts}", self.injected),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    use super::*;

    fn defaults() -> AgentDefaults {
        AgentDefaults {
            image: "registry.example/flmon/agent:0.1.0".to_owned(),
            version: "0.1.0".to_owned(),
        }
    }

    fn monitor() -> InjectionSettings {
        InjectionSettings::new(
            "mnist",
            LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), "mnist".to_owned())])),
                ..Default::default()
            },
        )
    }

    fn pod(name: &str, app: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("fl".to_owned()),
                labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "trainer".to_owned(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn injected(pod: &Pod, monitors: &[InjectionSettings], defaults: &AgentDefaults) -> Pod {
        let mut json = serde_json::to_value(pod).expect("json");
        json_patch::patch(&mut json, &decide(pod, monitors, defaults).patch()).expect("patch");
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn pods_created_while_the_webhook_was_down_are_reported_missing_by_name() {
        let monitors = [monitor()];
        let pods = vec![
            injected(&pod("mnist-0", "mnist"), &monitors, &defaults()),
            pod("mnist-1", "mnist"),
            pod("web-0", "web"),
        ];
        let audit = audit(&monitors[0], &monitors, &pods, &defaults());
        assert_eq!((audit.selected, audit.injected, audit.missing), (2, 1, 1));
        assert_eq!(audit.missing_names, ["mnist-1"]);
        let condition = audit.condition();
        assert!(!condition.ok);
        assert_eq!(condition.reason, "AgentsMissing");
        assert!(condition.message.contains("mnist-1"), "{}", condition.message);
        assert_eq!(audit.pod_counts().missing, 1);
    }

    #[test]
    fn agents_from_an_older_operator_or_config_are_outdated() {
        let monitors = [monitor()];
        let old = AgentDefaults {
            version: "0.0.9".to_owned(),
            ..defaults()
        };
        let pods = vec![
            injected(&pod("mnist-0", "mnist"), &monitors, &old),
            injected(&pod("mnist-1", "mnist"), &monitors, &defaults()),
        ];
        let audit = audit(&monitors[0], &monitors, &pods, &defaults());
        assert_eq!((audit.injected, audit.outdated), (2, 1));
        assert_eq!(audit.outdated_names, ["mnist-0"]);
        assert!(audit.condition().ok);
    }

    #[test]
    fn finished_pods_and_opted_out_pods_are_not_missing() {
        let monitors = [monitor()];
        let mut done = pod("mnist-0", "mnist");
        done.status = Some(PodStatus {
            phase: Some("Succeeded".to_owned()),
            ..Default::default()
        });
        let mut opted_out = pod("mnist-1", "mnist");
        opted_out.metadata.annotations = Some(BTreeMap::from([(
            names::ANNOTATION_INJECT.to_owned(),
            "false".to_owned(),
        )]));
        let audit = audit(&monitors[0], &monitors, &[done, opted_out], &defaults());
        assert_eq!((audit.selected, audit.missing), (1, 0));
        assert_eq!(audit.condition().reason, "AllInjected");
    }

    #[test]
    fn a_finished_job_is_told_apart_from_one_not_started() {
        let monitors = [monitor()];
        let condition = audit(&monitors[0], &monitors, &[], &defaults()).condition();
        assert_eq!(condition.reason, "NoPods");
        assert!(
            condition.message.contains("no pod is selected yet"),
            "{}",
            condition.message
        );
        let finished: Vec<Pod> = ["Succeeded", "Failed"]
            .iter()
            .enumerate()
            .map(|(i, phase)| {
                let mut p = injected(&pod(&format!("mnist-{i}"), "mnist"), &monitors, &defaults());
                p.status = Some(PodStatus {
                    phase: Some((*phase).to_owned()),
                    ..Default::default()
                });
                p
            })
            .collect();
        let audit = audit(&monitors[0], &monitors, &finished, &defaults());
        assert_eq!((audit.selected, audit.finished, audit.missing), (0, 2, 0));
        let condition = audit.condition();
        assert!(condition.ok);
        assert_eq!(condition.reason, "NoPods");
        assert_eq!(
            condition.message,
            "no selected pod is running: 2 selected pods have finished"
        );
    }

    #[test]
    fn skipped_pods_are_reported_with_their_reason() {
        let monitors = [monitor()];
        let mut host = pod("mnist-0", "mnist");
        if let Some(spec) = host.spec.as_mut() {
            spec.host_network = Some(true);
        }
        let audit = audit(&monitors[0], &monitors, &[host], &defaults());
        assert_eq!(audit.skipped.get(&SkipReason::HostNetwork), Some(&1));
        let condition = audit.condition();
        assert_eq!(condition.reason, "InjectionSkipped");
        assert!(
            condition.message.contains("HostNetwork: 1"),
            "{}",
            condition.message
        );
    }

    #[test]
    fn missing_names_are_bounded() {
        let monitors = [monitor()];
        let pods: Vec<Pod> = (0..50).map(|i| pod(&format!("mnist-{i:02}"), "mnist")).collect();
        let audit = audit(&monitors[0], &monitors, &pods, &defaults());
        assert_eq!(audit.missing, 50);
        assert_eq!(audit.missing_names.len(), MAX_LISTED_NAMES);
        assert!(audit.condition().message.contains("and 30 more"));
    }
}
