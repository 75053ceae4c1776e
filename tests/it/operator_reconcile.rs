//! The FLMonitor and AlertRule controllers against a real kube-apiserver with the real
//! Prometheus Operator CRDs: generated objects are accepted, status and conditions are set,
//! `kubectl get flm` shows its columns, invalid resources are rejected or reported naming the
//! field, nothing is written when nothing changed, and deletion cleans up.
//!
//! One operator replica (no leader election) serves every test of this binary; each test works
//! in its own namespace.

#[path = "common/operator.rs"]
mod operator;

use std::sync::OnceLock;
use std::time::Duration;

use flmon_crds::{AlertRule, FLMonitor};
use flmon_tests::Kube;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use operator::{
    Operator, apply_yaml, condition, eventually, install_flmon_crds, promop, run_args, wait_condition,
};
use serde_json::json;

/// The environment of this binary: the operator's namespace (default AlertRules), a namespace
/// allowed to receive dashboards, and the running replica.
struct Env {
    operator_namespace: String,
    dashboards: String,
    _operator: Operator,
}

/// Starts the shared environment once, on a thread of its own (each test has its own runtime).
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let kube = Kube::shared();
                let client = kube.client().await;
                install_flmon_crds(kube, &client).await;
                kube.install_prometheus_operator_crds(&client)
                    .await
                    .expect("Prometheus Operator CRDs install");
                let operator_namespace = kube.namespace("flmon-system").await;
                let dashboards = kube.namespace("monitoring").await;
                apply_yaml(&client, &operator_namespace, &operator::default_rules_yaml()).await;
                let args = run_args(
                    &operator_namespace,
                    &[
                        "--dashboard-namespaces",
                        &dashboards,
                        "--notify-url-prefixes",
                        "http://alertmanager.monitoring:9093",
                    ],
                );
                Env {
                    _operator: Operator::start(kube, args).assert_started(Duration::from_secs(2)),
                    operator_namespace,
                    dashboards,
                }
            })
        })
        .join()
        .expect("the environment starts")
    })
}

fn monitor_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: flmon.io/v1alpha1
kind: FLMonitor
metadata:
  name: {name}
  labels: {{team: vision}}
spec:
  selector:
    matchLabels: {{app: {name}}}
{extra_spec}"
    )
}

async fn setup(prefix: &str) -> (kube::Client, String) {
    let env = env();
    let kube = Kube::shared();
    let _ = &env.operator_namespace;
    (kube.client().await, kube.namespace(prefix).await)
}

fn rule_alerts(rule: &DynamicObject) -> Vec<String> {
    rule.data["spec"]["groups"][0]["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r["alert"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_flmonitor_gets_its_objects_accepted_and_a_ready_status() {
    let (client, ns) = setup("reconcile").await;
    apply_yaml(
        &client,
        &ns,
        &monitor_yaml(
            "mnist",
            "  prometheus:\n    labels: {release: kube-prometheus-stack}\n",
        ),
    )
    .await;
    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), &ns);
    let monitor = wait_condition(&monitors, "mnist", "Ready", "True").await;

    let status = monitor.status.clone().expect("status");
    assert_eq!(status.observed_generation, monitor.metadata.generation);
    assert_eq!(status.phase, Some(flmon_crds::Phase::Pending));
    let monitoring = condition(&monitor, "MonitoringReady").expect("MonitoringReady");
    assert_eq!(
        (monitoring.status.as_str(), monitoring.reason.as_str()),
        ("True", "MonitoringApplied")
    );
    let generated = status.generated.expect("generated names");
    assert_eq!(generated.service.as_deref(), Some("flmon-mnist"));
    assert_eq!(generated.service_monitor.as_deref(), Some("flmon-mnist"));
    assert_eq!(generated.prometheus_rule.as_deref(), Some("flmon-mnist"));
    assert_eq!(generated.dashboard, Some(format!("{ns}/flmon-mnist-dashboard")));

    // Each generated object exists, was accepted by its real schema, and is owned by the monitor.
    let uid = monitor.uid().expect("uid");
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .get("flmon-mnist")
        .await
        .expect("Service exists");
    let spec = service.spec.clone().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
    assert_eq!(spec.selector.expect("selector")["flmon.io/monitor"], "mnist");
    assert_eq!(
        spec.ports.expect("ports")[0].name.as_deref(),
        Some("flmon-metrics")
    );
    let service_monitor =
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &promop("ServiceMonitor"))
            .get("flmon-mnist")
            .await
            .expect("ServiceMonitor exists");
    assert_eq!(service_monitor.labels()["release"], "kube-prometheus-stack");
    let rule = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &promop("PrometheusRule"))
        .get("flmon-mnist")
        .await
        .expect("PrometheusRule exists");
    assert_eq!(
        rule_alerts(&rule),
        [
            "HighCpuUsage",
            "HighGlobalLoss",
            "LowClientParticipation",
            "TrainingStalled"
        ],
        "the four default rules"
    );
    let dashboard = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("flmon-mnist-dashboard")
        .await
        .expect("dashboard ConfigMap exists");
    assert_eq!(dashboard.labels()["grafana_dashboard"], "1");
    for owners in [
        service.owner_references(),
        service_monitor.owner_references(),
        rule.owner_references(),
        dashboard.owner_references(),
    ] {
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, uid);
        assert_eq!(owners[0].controller, Some(true));
    }
    assert!(
        monitor.finalizers().is_empty(),
        "no finalizer without a cross-namespace dashboard"
    );
}

#[tokio::test]
async fn a_reconcile_with_nothing_changed_writes_nothing_and_drift_is_repaired() {
    let (client, ns) = setup("idle").await;
    apply_yaml(&client, &ns, &monitor_yaml("idle", "")).await;
    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), &ns);
    let ready = wait_condition(&monitors, "idle", "Ready", "True").await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service_uid = services.get("flmon-idle").await.expect("Service").uid();

    // Someone deletes the generated Service: the watch triggers a reconcile, which recreates it...
    services
        .delete("flmon-idle", &DeleteParams::default())
        .await
        .expect("delete the Service");
    eventually("the Service to be recreated", Duration::from_secs(45), || async {
        let service = services.get_opt("flmon-idle").await.ok()??;
        (service.uid() != service_uid).then_some(())
    })
    .await;
    // ...and, with nothing to change in the status, writes no status: the monitor's
    // resourceVersion stays where it was.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = monitors.get("idle").await.expect("monitor");
    assert_eq!(
        after.resource_version(),
        ready.resource_version(),
        "a reconcile with nothing new wrote to the monitor"
    );
    assert_eq!(after.status, ready.status);
}

#[tokio::test]
async fn kubectl_get_flm_fills_every_column() {
    let (client, ns) = setup("columns").await;
    apply_yaml(&client, &ns, &monitor_yaml("cifar", "")).await;
    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), &ns);
    let monitor = wait_condition(&monitors, "cifar", "Ready", "True").await;
    // The analysis fills round, loss, accuracy, clients and Converged from the agents' data;
    // here the test writes them the same way (merge patch on /status) and checks that the
    // controller's own status writes leave them alone.
    let mut conditions = monitor.status.clone().expect("status").conditions;
    conditions.push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "Converged".into(),
        status: "False".into(),
        reason: "BelowTarget".into(),
        message: "accuracy 0.87 is below the target 0.9".into(),
        observed_generation: monitor.metadata.generation,
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ),
    });
    let patch = json!({ "status": {
        "phase": "Training", "round": 42, "globalLoss": 0.4123, "globalAccuracy": 0.87, "activeClients": 8,
        "conditions": conditions,
    }});
    monitors
        .patch_status("cifar", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("status patch");
    // A spec change makes the controller write its part of the status again.
    monitors
        .patch(
            "cifar",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "analysis": { "targetAccuracy": 0.9 } } })),
        )
        .await
        .expect("spec patch");
    let monitor = eventually("observedGeneration 2", Duration::from_secs(45), || async {
        let m = monitors.get("cifar").await.ok()?;
        (m.status.as_ref()?.observed_generation == Some(2)).then_some(m)
    })
    .await;
    let status = monitor.status.clone().expect("status");
    assert_eq!(status.round, Some(42), "the controller kept the analysis' fields");
    assert!(condition(&monitor, "Converged").is_some());

    let output = Kube::shared()
        .kubectl()
        .args(["get", "flm", "-n", &ns])
        .output()
        .expect("kubectl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PHASE",
            "ROUND",
            "LOSS",
            "ACCURACY",
            "CLIENTS",
            "CONVERGED",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(
        &row[..7],
        ["cifar", "Training", "42", "0.4123", "0.87", "8", "False"],
        "{text}"
    );

    // The `flmon` category lists both kinds.
    let output = Kube::shared()
        .kubectl()
        .args(["get", "flmon", "-n", &ns, "-o", "name"])
        .output()
        .expect("kubectl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("flmonitor.flmon.io/cifar"), "{text}");
}

#[tokio::test]
async fn invalid_flmonitors_are_rejected_with_a_message_naming_the_field() {
    let (client, ns) = setup("invalid").await;
    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), &ns);
    let cases = [
        // The error names the field (not `<nil>`, the whole object) and says why.
        (
            &"x".repeat(53)[..],
            "",
            "is invalid: metadata.name: Invalid value: metadata.name must be at most 52 characters",
        ),
        (
            "dotted.name",
            "",
            "is invalid: metadata.name: Invalid value: metadata.name must be a DNS label",
        ),
        (
            "bad-duration",
            "  agent: {sampleInterval: 5 seconds}\n",
            "spec.agent.sampleInterval",
        ),
        // The value and what a duration looks like, not the regular expression behind it.
        (
            "bad-duration-message",
            "  agent: {sampleInterval: 5 seconds}\n",
            "\"5 seconds\" is not a duration: expected Prometheus syntax such as 30s, 5m or 1h30m",
        ),
        // Shorter than the agent samples: refused here rather than by a crash-looping sidecar.
        (
            "too-fast",
            "  agent: {sampleInterval: 50ms}\n",
            "\"50ms\" is too short: the agent samples at most every 100ms",
        ),
        (
            "too-fast-field",
            "  agent: {sampleInterval: 0s}\n",
            "spec.agent.sampleInterval",
        ),
        (
            "bad-target",
            "  analysis: {targetAccuracy: 1.5}\n",
            "spec.analysis.targetAccuracy",
        ),
        (
            "bad-metric",
            "  analysis: {primaryMetric: F1}\n",
            "spec.analysis.primaryMetric",
        ),
        (
            "no-sasl",
            "  kafka: {bootstrapServers: 'kafka:9092', securityProtocol: SASL_SSL}\n",
            "spec.kafka.sasl is required",
        ),
    ];
    // Sent as raw objects, as kubectl would: some of these the Rust types would refuse to build.
    let raw_monitors: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::core::ApiResource::erase::<FLMonitor>(&()),
    );
    for (name, extra, expected) in cases {
        let raw: DynamicObject =
            serde_yaml_ng::from_str(&monitor_yaml(name, extra)).expect("test YAML parses");
        let error = raw_monitors
            .create(&PostParams::default(), &raw)
            .await
            .expect_err(&format!("{name} must be rejected"));
        let message = error.to_string();
        assert!(message.contains(expected), "{name}: {message}");
    }
    // An empty selector would select every pod of the namespace.
    let raw = json!({
        "apiVersion": "flmon.io/v1alpha1", "kind": "FLMonitor",
        "metadata": {"name": "everything"}, "spec": {"selector": {}}
    });
    let error = monitors
        .create(
            &PostParams::default(),
            &serde_json::from_value(raw).expect("typed"),
        )
        .await
        .expect_err("empty selector rejected");
    assert!(error.to_string().contains("spec.selector"), "{error}");

    // What only the operator can judge is reported in the status, naming the field.
    apply_yaml(
        &client,
        &ns,
        &monitor_yaml("elsewhere", "  grafana: {namespace: kube-system}\n"),
    )
    .await;
    let monitor = wait_condition(&monitors, "elsewhere", "Ready", "False").await;
    let ready = condition(&monitor, "Ready").expect("Ready");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("spec.grafana.namespace"),
        "{}",
        ready.message
    );
    assert!(ready.message.contains(&env().dashboards), "{}", ready.message);
    // And told once as a Warning Event, which `kubectl get events` shows.
    let warnings = warning_events(&client, &ns, "elsewhere", "InvalidSpec").await;
    assert!(warnings[0].contains("spec.grafana.namespace"), "{warnings:?}");
    // `kubectl get flm -o wide` shows why in its Ready column.
    let output = Kube::shared()
        .kubectl()
        .args(["get", "flm", "elsewhere", "-n", &ns, "-o", "wide"])
        .output()
        .expect("kubectl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let (header, row) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
    // Columns are aligned under their headers; empty ones are blank.
    let at = header.find("READY").expect("a READY column");
    let cell = row.get(at..).unwrap_or_default().split_whitespace().next();
    assert_eq!(cell, Some("InvalidSpec"), "{text}");
}

/// The notes of the Warning Events with `reason` about `name`, once there is one.
async fn warning_events(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Vec<String> {
    use k8s_openapi::api::events::v1::Event;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("a {reason} Warning Event about {name}"),
        Duration::from_secs(30),
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            let notes: Vec<String> = list
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
                .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note)
                .collect();
            (!notes.is_empty()).then_some(notes)
        },
    )
    .await
}

#[tokio::test]
async fn an_invalid_alert_rule_is_reported_and_left_out_while_the_others_stay() {
    let (client, ns) = setup("rules").await;
    apply_yaml(&client, &ns, &monitor_yaml("speech", "")).await;
    apply_yaml(
        &client,
        &ns,
        "apiVersion: flmon.io/v1alpha1
kind: AlertRule
metadata: {name: gpu-saturated}
spec:
  monitorSelector: {matchLabels: {team: vision}}
  condition: {metric: gpuUsage, op: '>=', threshold: 98, for: 15m}
  severity: info
  message: GPUs are saturated
---
apiVersion: flmon.io/v1alpha1
kind: AlertRule
metadata: {name: low-accuracy}
spec:
  condition: {metric: globalAccuracy, op: '<', threshold: 50, for: 30m}
  message: Accuracy is low
",
    )
    .await;
    let rules: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    let invalid = eventually("low-accuracy Valid=False", Duration::from_secs(45), || async {
        let rule = rules.get("low-accuracy").await.ok()?;
        let valid = rule
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Valid")?
            .clone();
        (valid.status == "False").then_some(valid)
    })
    .await;
    assert_eq!(invalid.reason, "InvalidRule");
    assert!(
        invalid.message.contains("spec.condition.threshold"),
        "{}",
        invalid.message
    );
    assert!(
        invalid.message.contains("0.9"),
        "says what was expected: {}",
        invalid.message
    );
    let warnings = warning_events(&client, &ns, "low-accuracy", "InvalidRule").await;
    assert!(warnings[0].contains("spec.condition.threshold"), "{warnings:?}");

    let prometheus_rules =
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &promop("PrometheusRule"));
    let alerts = eventually(
        "the valid rule in the PrometheusRule",
        Duration::from_secs(45),
        || async {
            let alerts = rule_alerts(&prometheus_rules.get("flmon-speech").await.ok()?);
            alerts.contains(&"GpuSaturated".to_owned()).then_some(alerts)
        },
    )
    .await;
    assert_eq!(
        alerts,
        [
            "HighCpuUsage",
            "HighGlobalLoss",
            "LowClientParticipation",
            "TrainingStalled",
            "GpuSaturated"
        ]
    );

    // Fixed, it joins the others.
    rules
        .patch(
            "low-accuracy",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "condition": { "threshold": 0.5 } } })),
        )
        .await
        .expect("fix the rule");
    eventually(
        "the fixed rule in the PrometheusRule",
        Duration::from_secs(45),
        || async {
            let alerts = rule_alerts(&prometheus_rules.get("flmon-speech").await.ok()?);
            alerts.contains(&"LowAccuracy".to_owned()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_a_monitor_deletes_its_dashboard_in_another_namespace() {
    let (client, ns) = setup("cleanup").await;
    let dashboards = &env().dashboards;
    apply_yaml(
        &client,
        &ns,
        &monitor_yaml(
            "shared",
            &format!("  grafana: {{namespace: {dashboards}, folder: FL}}\n"),
        ),
    )
    .await;
    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), &ns);
    let monitor = wait_condition(&monitors, "shared", "Ready", "True").await;
    assert_eq!(monitor.finalizers(), ["flmon.io/dashboard-cleanup"]);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), dashboards);
    let name = format!("flmon.{ns}.shared");
    let dashboard = configmaps
        .get(&name)
        .await
        .expect("dashboard in the other namespace");
    assert!(
        dashboard.owner_references().is_empty(),
        "owner references cannot cross namespaces"
    );
    assert_eq!(dashboard.annotations()["grafana_folder"], "FL");

    monitors
        .delete("shared", &DeleteParams::default())
        .await
        .expect("delete the monitor");
    eventually("the monitor to be gone", Duration::from_secs(45), || async {
        monitors.get_opt("shared").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        configmaps.get_opt(&name).await.expect("get").is_none(),
        "the cross-namespace dashboard was deleted before the monitor went"
    );
    // Objects in the monitor's namespace carry owner references: the garbage collector of a
    // real cluster deletes them (this test apiserver runs none, so they are only checked).
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .get("flmon-shared")
        .await
        .expect("Service");
    assert_eq!(service.owner_references()[0].uid, monitor.uid().expect("uid"));
}

#[tokio::test]
async fn turning_parts_off_deletes_what_was_generated_for_them() {
    let (client, ns) = setup("toggle").await;
    apply_yaml(&client, &ns, &monitor_yaml("toggle", "")).await;
    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), &ns);
    wait_condition(&monitors, "toggle", "Ready", "True").await;
    monitors
        .patch(
            "toggle",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": {
                "prometheus": { "serviceMonitor": false, "rules": false },
                "grafana": { "dashboard": false },
            }})),
        )
        .await
        .expect("turn off");
    let monitor = eventually("generated objects dropped", Duration::from_secs(45), || async {
        let m = monitors.get("toggle").await.ok()?;
        let generated = m.status.as_ref()?.generated.clone()?;
        (generated.service_monitor.is_none() && generated.dashboard.is_none()).then_some(m)
    })
    .await;
    assert_eq!(
        condition(&monitor, "MonitoringReady").expect("condition").reason,
        "Disabled"
    );
    let monitors_api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &promop("ServiceMonitor"));
    assert!(monitors_api.get_opt("flmon-toggle").await.expect("get").is_none());
    let rules_api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &promop("PrometheusRule"));
    assert!(rules_api.get_opt("flmon-toggle").await.expect("get").is_none());
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(
        configmaps
            .get_opt("flmon-toggle-dashboard")
            .await
            .expect("get")
            .is_none()
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    assert!(
        services.get_opt("flmon-toggle").await.expect("get").is_some(),
        "the Service stays"
    );
}

#[tokio::test]
async fn pods_created_without_the_agent_are_reported_missing() {
    let (client, ns) = setup("agents").await;
    apply_yaml(&client, &ns, &monitor_yaml("missed", "")).await;
    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), &ns);
    let monitor = wait_condition(&monitors, "missed", "Ready", "True").await;
    let none = condition(&monitor, "AgentsInjected").expect("AgentsInjected");
    assert_eq!(
        (none.status.as_str(), none.reason.as_str()),
        ("True", "NoPods"),
        "{}",
        none.message
    );

    // No webhook serves this apiserver: the pods are created as if it had been down.
    let pod = |name: &str, app: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\n\
             spec: {{containers: [{{name: app, image: registry.example/fl:1}}]}}\n"
        )
    };
    apply_yaml(&client, &ns, &pod("missed-client-1", "missed")).await;
    apply_yaml(&client, &ns, &pod("missed-client-0", "missed")).await;
    apply_yaml(&client, &ns, &pod("bystander", "other")).await;
    let monitor = eventually("both pods counted", Duration::from_secs(45), || async {
        let m = monitors.get("missed").await.ok()?;
        (m.status.as_ref()?.pods.as_ref()?.selected == 2).then_some(m)
    })
    .await;
    let status = monitor.status.clone().expect("status");
    let pods = status.pods.expect("pod counts");
    assert_eq!((pods.selected, pods.injected, pods.missing), (2, 0, 2));
    assert_eq!(pods.missing_names, ["missed-client-0", "missed-client-1"]);
    let missing = condition(&monitor, "AgentsInjected").expect("condition");
    assert_eq!(missing.reason, "AgentsMissing");
    assert!(missing.message.contains("missed-client-0"), "{}", missing.message);
    assert_eq!(
        condition(&monitor, "Ready").expect("Ready").status,
        "True",
        "Ready never depends on agents"
    );

    // A deleted pod leaves the count (without a kubelet it stays Terminating: deletion started).
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns)
        .delete("missed-client-1", &DeleteParams::default())
        .await
        .expect("delete a pod");
    eventually("one missing pod", Duration::from_secs(45), || async {
        let m = monitors.get("missed").await.ok()?;
        (m.status?.pods?.missing == 1).then_some(())
    })
    .await;
}
