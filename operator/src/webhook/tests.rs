//! Golden and property tests of the injection: real-world pod shapes in `testdata/cases/`, the
//! monitors they are decided against in `testdata/monitors.yaml`, and the expected patch or skip
//! in `testdata/expected/`. `FLMON_BLESS=1 cargo test -p flmon-operator webhook` rewrites the
//! goldens (review the diff).

use std::collections::BTreeSet;
use std::path::PathBuf;

use flmon_crds::FLMonitor;
use flmon_crds::names::{self, env};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Deserialize;
use serde_json::{Value, json};

use super::inject::{AGENT_TMP_VOLUME, Decision, SkipReason, app_containers, decide, has_agent};
use super::settings::{AgentDefaults, GpuMode, InjectionSettings};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/webhook/testdata")
}

fn defaults() -> AgentDefaults {
    AgentDefaults {
        image: "registry.example/flmon/agent:0.1.0".to_owned(),
        version: "0.1.0".to_owned(),
    }
}

fn yaml_documents(text: &str) -> Vec<serde_yaml_ng::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).expect("fixture is YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The monitors of `namespace` from `testdata/monitors.yaml`.
fn monitors_in(namespace: &str) -> Vec<InjectionSettings> {
    let text = std::fs::read_to_string(testdata().join("monitors.yaml")).expect("monitors.yaml");
    yaml_documents(&text)
        .into_iter()
        .map(|doc| serde_yaml_ng::from_value::<FLMonitor>(doc).expect("fixture is an FLMonitor"))
        .filter(|m| m.metadata.namespace.as_deref() == Some(namespace))
        .map(|m| InjectionSettings::from(&m))
        .collect()
}

fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(testdata().join("cases"))
        .expect("cases dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| path.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn case_pod(name: &str) -> Pod {
    let path = testdata().join("cases").join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).expect("case file");
    let doc = yaml_documents(&text)
        .into_iter()
        .find(|doc| doc.get("kind").and_then(|k| k.as_str()) == Some("Pod"))
        .expect("a Pod document");
    serde_yaml_ng::from_value(doc).expect("case is a Pod")
}

fn decide_case(name: &str) -> (Pod, Decision) {
    let pod = case_pod(name);
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .expect("case pods name their namespace");
    let decision = decide(&pod, &monitors_in(&namespace), &defaults());
    (pod, decision)
}

fn apply(pod: &Pod, decision: &Decision) -> Pod {
    let mut json = serde_json::to_value(pod).expect("pod serialises");
    json_patch::patch(&mut json, &decision.patch()).expect("patch applies");
    serde_json::from_value(json).expect("patched pod parses as a Pod")
}

fn outcome(decision: &Decision) -> Value {
    match decision {
        Decision::Inject(injection) => json!({
            "outcome": "inject",
            "monitor": injection.monitor,
            "conflicts": injection.conflicts,
            "role": injection.role.as_str(),
            "gpuMode": injection.gpu_mode.as_str(),
            "warnings": injection.warnings,
            "patch": injection.patch,
        }),
        Decision::Skip(skip) => json!({
            "outcome": "skip",
            "reason": skip.reason.as_str(),
            "monitor": skip.monitor,
            "message": skip.message,
        }),
    }
}

fn agent_of(pod: &Pod) -> &Container {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == names::AGENT_CONTAINER))
        .expect("the agent is an init container")
}

fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

#[test]
fn every_case_matches_its_golden_outcome() {
    let bless = std::env::var_os("FLMON_BLESS").is_some();
    let mut failures = Vec::new();
    for name in case_names() {
        let (_, decision) = decide_case(&name);
        let actual = outcome(&decision);
        let path = testdata().join("expected").join(format!("{name}.json"));
        if bless {
            let text = serde_json::to_string_pretty(&actual).expect("json") + "\n";
            std::fs::write(&path, text).expect("write golden");
            continue;
        }
        let expected: Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        if expected != actual {
            failures.push(format!(
                "{name}: expected {}\n  actual {}",
                serde_json::to_string_pretty(&expected).expect("json"),
                serde_json::to_string_pretty(&actual).expect("json")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (FLMON_BLESS=1 rewrites them):\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_injected_case_applies_cleanly_and_is_then_left_alone() {
    for name in case_names() {
        let (pod, decision) = decide_case(&name);
        let patched = apply(&pod, &decision);
        let namespace = pod.metadata.namespace.clone().expect("namespace");
        let again = decide(&patched, &monitors_in(&namespace), &defaults());
        match &decision {
            Decision::Inject(_) => {
                assert!(has_agent(&patched), "{name}: patched pod carries the agent");
                assert_eq!(
                    again.skip().map(|s| s.reason),
                    Some(SkipReason::AlreadyInjected),
                    "{name}: second admission"
                );
                assert!(again.patch().0.is_empty(), "{name}: second patch is empty");
            }
            Decision::Skip(_) => assert_eq!(patched, pod, "{name}: a skip changes nothing"),
        }
    }
}

#[test]
fn job_client_pod_gets_a_native_sidecar_and_no_new_container() {
    let (pod, decision) = decide_case("job-client-pod");
    assert!(matches!(decision, Decision::Inject(_)), "{decision:?}");
    let patched = apply(&pod, &decision);
    let spec = patched.spec.as_ref().expect("spec");
    assert_eq!(
        spec.containers.len(),
        1,
        "nothing added to containers, so the Job completes"
    );
    let agent = agent_of(&patched);
    assert_eq!(agent.restart_policy.as_deref(), Some("Always"));
    assert_eq!(env_value(agent, env::CLIENT_ID), Some("site-3"));
    assert_eq!(env_value(agent, env::ROLE), Some("client"));
    // The pod has only generateName: its name reaches the agent through the Downward API.
    let pod_name = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == env::POD_NAME)
        .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(pod_name, Some("metadata.name"));
    let labels = patched.metadata.labels.as_ref().expect("labels");
    assert_eq!(
        labels.get(names::LABEL_MONITOR).map(String::as_str),
        Some("mnist-fedavg")
    );
}

#[test]
fn mesh_proxy_first_leaves_the_proxy_untouched_and_feeds_the_fl_server() {
    let (pod, decision) = decide_case("mesh-proxy-first");
    let patched = apply(&pod, &decision);
    let before = &pod.spec.as_ref().expect("spec").containers;
    let after = &patched.spec.as_ref().expect("spec").containers;
    let proxy_before = before.iter().find(|c| c.name == "istio-proxy").expect("proxy");
    let proxy_after = after.iter().find(|c| c.name == "istio-proxy").expect("proxy");
    assert_eq!(proxy_after, proxy_before, "the proxy is left untouched");
    let server = after.iter().find(|c| c.name == "fl-server").expect("fl-server");
    assert!(env_value(server, env::EVENTS_URL).is_some());
    let agent = agent_of(&patched);
    assert_eq!(env_value(agent, env::ROLE), Some("server"));
    let limit_refs: BTreeSet<String> = agent
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let field = e.value_from.as_ref()?.resource_field_ref.as_ref()?;
            Some(format!(
                "{}={}/{}",
                e.name,
                field.container_name.as_deref()?,
                field.resource
            ))
        })
        .collect();
    assert_eq!(
        limit_refs,
        BTreeSet::from(
            [
                "FLMON_LIMIT_CPU_FL_SERVER=fl-server/limits.cpu",
                "FLMON_LIMIT_MEMORY_FL_SERVER=fl-server/limits.memory",
            ]
            .map(str::to_owned)
        )
    );
}

#[test]
fn app_containers_leave_out_proxies_by_name_and_by_istio_status() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"annotations": {
            "sidecar.istio.io/status": r#"{"initContainers":["istio-init"],"containers":["mesh-envoy"]}"#
        }},
        "spec": {"containers": [
            {"name": "mesh-envoy"}, {"name": "trainer"}, {"name": "linkerd-proxy"}, {"name": "loader"}
        ]}
    }))
    .expect("pod");
    let spec = pod.spec.as_ref().expect("spec");
    let names: Vec<&str> = app_containers(&pod, spec)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["trainer", "loader"]);

    let only_proxy: Pod =
        serde_json::from_value(json!({"spec": {"containers": [{"name": "istio-proxy"}]}})).expect("pod");
    let spec = only_proxy.spec.as_ref().expect("spec");
    let names: Vec<&str> = app_containers(&only_proxy, spec)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["istio-proxy"],
        "a pod of proxies only keeps them as its app"
    );
}

#[test]
fn agent_goes_right_after_the_pods_native_sidecars() {
    let (pod, decision) = decide_case("native-sidecar-mesh");
    let patched = apply(&pod, &decision);
    let order: Vec<&str> = patched
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .expect("init containers")
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(order, ["istio-init", "istio-proxy", "flmon-agent", "fetch-shard"]);
}

#[test]
fn user_container_named_like_the_agent_is_skipped_with_a_reported_reason() {
    let (_, decision) = decide_case("user-container-named-like-agent");
    let skip = decision.skip().expect("a skip");
    assert_eq!(skip.reason, SkipReason::ContainerNameClash);
    assert!(skip.reason.is_reported());
    assert_eq!(skip.monitor.as_deref(), Some("mnist-fedavg"));
    assert!(skip.message.contains("flmon-agent"), "{}", skip.message);
}

#[test]
fn gpu_client_agent_requests_no_gpu_and_is_given_the_node_gpus_to_match() {
    let (pod, decision) = decide_case("gpu-client");
    let Decision::Inject(injection) = &decision else {
        panic!("expected an injection, got {decision:?}");
    };
    assert_eq!(injection.gpu_mode, GpuMode::NodeVisible);
    let patched = apply(&pod, &decision);
    let agent = agent_of(&patched);
    let resources = agent.resources.as_ref().expect("resources");
    for map in [&resources.limits, &resources.requests].into_iter().flatten() {
        assert!(
            map.keys().all(|k| !k.starts_with("nvidia.com/")),
            "agent requests no GPU: {map:?}"
        );
    }
    assert_eq!(env_value(agent, env::GPU_MODE), Some("NodeVisible"));
    assert_eq!(env_value(agent, "NVIDIA_VISIBLE_DEVICES"), Some("all"));
    assert_eq!(env_value(agent, "NVIDIA_DRIVER_CAPABILITIES"), Some("utility"));
    assert_eq!(
        patched.spec.as_ref().and_then(|s| s.share_process_namespace),
        Some(true),
        "the agent matches GPU processes against the pod's, so it must see them"
    );
}

#[test]
fn dra_claim_mode_shares_the_trainers_claim_with_the_agent() {
    let (pod, decision) = decide_case("gpu-dra-claim");
    let patched = apply(&pod, &decision);
    let agent = agent_of(&patched);
    let claims = agent
        .resources
        .as_ref()
        .and_then(|r| r.claims.as_ref())
        .expect("claims");
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].name, "gpu");
    assert_eq!(env_value(agent, "NVIDIA_VISIBLE_DEVICES"), None);
}

/// The container-level rules of the restricted Pod Security Standard (pod-level settings of the
/// case are the user's); the real apiserver checks the whole pod in the integration tests.
#[test]
fn injected_agent_meets_the_restricted_pod_security_standard() {
    let (pod, decision) = decide_case("restricted-namespace");
    let patched = apply(&pod, &decision);
    let agent = agent_of(&patched);
    let sc = agent.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_ne!(sc.run_as_user, Some(0));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.privileged, None);
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(caps.add, None);
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let volume = patched
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name == AGENT_TMP_VOLUME))
        .expect("scratch volume");
    assert!(
        volume.empty_dir.is_some(),
        "restricted allows emptyDir, never hostPath"
    );
}

#[test]
fn two_monitors_oldest_wins_unless_the_pod_names_one() {
    let (_, decision) = decide_case("two-monitors");
    let Decision::Inject(injection) = decision else {
        panic!("expected an injection");
    };
    assert_eq!(injection.monitor, "beta");
    assert_eq!(injection.conflicts, ["alpha"]);
    let (_, decision) = decide_case("two-monitors-named");
    let Decision::Inject(injection) = decision else {
        panic!("expected an injection");
    };
    assert_eq!(injection.monitor, "alpha");
    assert_eq!(injection.conflicts, ["beta"]);
}

#[test]
fn guaranteed_pod_stays_guaranteed() {
    let (pod, decision) = decide_case("guaranteed-qos");
    let patched = apply(&pod, &decision);
    let resources = agent_of(&patched).resources.clone().expect("resources");
    assert_eq!(resources.requests, resources.limits);
    assert!(resources.limits.as_ref().is_some_and(|l| l.contains_key("cpu")));
}

#[test]
fn config_hash_changes_with_the_monitor_and_the_agent_version() {
    let monitors = monitors_in("fl-team");
    let base = monitors[0].config_hash(&defaults());
    assert_eq!(base.len(), 16);
    assert_eq!(base, monitors[0].config_hash(&defaults()), "stable");
    let mut changed = monitors[0].clone();
    changed.agent.sample_interval = "30s".to_owned();
    assert_ne!(base, changed.config_hash(&defaults()));
    let newer = AgentDefaults {
        version: "0.2.0".to_owned(),
        ..defaults()
    };
    assert_ne!(base, monitors[0].config_hash(&newer));
}

mod properties {
    //! Property tests over generated pods: a patch always applies to a valid Pod and a second
    //! admission never changes anything.

    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, PodSpec, ResourceRequirements, Volume};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use proptest::prelude::*;

    use super::*;

    fn container_strategy(name: String) -> impl Strategy<Value = Container> {
        (
            prop_oneof![Just(None), Just(Some(vec![])), Just(Some(vec!["x".to_owned()]))],
            prop_oneof![
                Just(None),
                Just(Some(vec![])),
                (8000i32..9500).prop_map(|p| Some(vec![p]))
            ],
            prop_oneof![Just(None), Just(Some(("2", "4Gi"))), Just(Some(("500m", "1Gi")))],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(move |(env, ports, limits, gpu, events_url)| {
                let mut env: Option<Vec<EnvVar>> = env.map(|names| {
                    names
                        .into_iter()
                        .map(|n| EnvVar {
                            name: n,
                            value: Some("1".to_owned()),
                            value_from: None,
                        })
                        .collect()
                });
                if events_url {
                    env.get_or_insert_with(Vec::new).push(EnvVar {
                        name: env::EVENTS_URL.to_owned(),
                        value: Some("http://127.0.0.1:9478/v1/events".to_owned()),
                        value_from: None,
                    });
                }
                let resources = limits.map(|(cpu, memory)| {
                    let mut limits = BTreeMap::from([
                        ("cpu".to_owned(), Quantity(cpu.to_owned())),
                        ("memory".to_owned(), Quantity(memory.to_owned())),
                    ]);
                    if gpu {
                        limits.insert("nvidia.com/gpu".to_owned(), Quantity("1".to_owned()));
                    }
                    ResourceRequirements {
                        limits: Some(limits),
                        ..Default::default()
                    }
                });
                Container {
                    name: name.clone(),
                    image: Some("registry.example/app:1".to_owned()),
                    env,
                    ports: ports.map(|ports| {
                        ports
                            .into_iter()
                            .map(|p| ContainerPort {
                                container_port: p,
                                ..Default::default()
                            })
                            .collect()
                    }),
                    resources,
                    ..Default::default()
                }
            })
    }

    fn pod_strategy() -> impl Strategy<Value = Pod> {
        let container_names = proptest::sample::subsequence(
            vec![
                "trainer",
                "istio-proxy",
                "flmon-agent",
                "fl-server",
                "log-shipper",
            ],
            1..4,
        );
        let init_names =
            proptest::sample::subsequence(vec!["istio-init", "mesh", "fetch", "flmon-agent"], 0..3);
        (container_names, init_names)
            .prop_flat_map(|(names, init_names)| {
                let init_names: Vec<&str> = init_names.into_iter().filter(|n| !names.contains(n)).collect();
                let containers: Vec<_> = names
                    .iter()
                    .map(|n| container_strategy((*n).to_owned()))
                    .collect();
                let inits: Vec<_> = init_names
                    .iter()
                    .map(|n| {
                        (container_strategy((*n).to_owned()), any::<bool>()).prop_map(|(mut c, sidecar)| {
                            c.restart_policy = sidecar.then(|| "Always".to_owned());
                            c
                        })
                    })
                    .collect();
                (
                    containers,
                    inits,
                    any::<bool>(),
                    prop_oneof![Just(None), Just(Some(vec![])), Just(Some(vec!["data"]))],
                    prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
                    prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
                    prop_oneof![
                        Just(None),
                        Just(Some(vec![])),
                        Just(Some(vec![("app", "mnist-fedavg")])),
                        Just(Some(vec![("app", "shared")])),
                        Just(Some(vec![("app", "web")])),
                    ],
                    prop_oneof![
                        Just(None),
                        Just(Some(vec![])),
                        Just(Some(vec![(names::ANNOTATION_INJECT, "true")])),
                        Just(Some(vec![(names::ANNOTATION_INJECT, "false")])),
                        Just(Some(vec![(names::ANNOTATION_INJECT, "alpha")])),
                        Just(Some(vec![(names::ANNOTATION_ROLE, "server")])),
                        Just(Some(vec![(names::ANNOTATION_INJECTED, "0.0.9")])),
                    ],
                    prop_oneof![Just("fl-team"), Just("fl-shared"), Just("fl-empty")],
                )
            })
            .prop_map(
                |(
                    containers,
                    inits,
                    init_present,
                    volumes,
                    host_network,
                    share,
                    labels,
                    annotations,
                    namespace,
                )| {
                    let map = |pairs: Option<Vec<(&str, &str)>>| {
                        pairs.map(|pairs| {
                            pairs
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .collect::<BTreeMap<_, _>>()
                        })
                    };
                    Pod {
                        metadata: ObjectMeta {
                            generate_name: Some("fl-".to_owned()),
                            namespace: Some(namespace.to_owned()),
                            labels: map(labels),
                            annotations: map(annotations),
                            ..Default::default()
                        },
                        spec: Some(PodSpec {
                            containers,
                            init_containers: (init_present || !inits.is_empty()).then_some(inits),
                            volumes: volumes.map(|names| {
                                names
                                    .into_iter()
                                    .map(|n| Volume {
                                        name: n.to_owned(),
                                        ..Default::default()
                                    })
                                    .collect()
                            }),
                            host_network,
                            share_process_namespace: share,
                            ..Default::default()
                        }),
                        status: None,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn patched_pods_parse_and_a_second_admission_changes_nothing(pod in pod_strategy()) {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let monitors = monitors_in(&namespace);
            let decision = decide(&pod, &monitors, &defaults());
            let mut json = serde_json::to_value(&pod).expect("serialises");
            json_patch::patch(&mut json, &decision.patch()).expect("the patch applies");
            let patched: Pod = serde_json::from_value(json).expect("parses as a Pod");
            let spec = patched.spec.as_ref().expect("spec");
            let names: Vec<&str> = spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
                .map(|c| c.name.as_str())
                .collect();
            let unique: BTreeSet<&str> = names.iter().copied().collect();
            prop_assert_eq!(unique.len(), names.len(), "container names stay unique: {:?}", names);
            prop_assert_eq!(spec.containers.len(), pod.spec.as_ref().expect("spec").containers.len());
            for container in spec.containers.iter() {
                let urls = container.env.iter().flatten().filter(|e| e.name == env::EVENTS_URL).count();
                prop_assert!(urls <= 1, "no duplicate env in {}", container.name);
            }
            if let Decision::Inject(_) = &decision {
                prop_assert!(has_agent(&patched));
                let again = decide(&patched, &monitors, &defaults());
                prop_assert!(again.patch().0.is_empty(), "second admission: {:?}", again);
            } else {
                prop_assert_eq!(&patched, &pod);
            }
        }
    }
}
