//! Smoke tests proving each part of the test environment is the real thing: the apiserver validates
//! and versions like a cluster, the Prometheus Operator CRDs install, Kafka moves records, promtool,
//! helm and kubeconform answer as themselves.

use std::process::Command;
use std::time::Duration;

use flmon_tests::{Kafka, Kube, kubernetes_version, repo_root, tool};
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.flmon.io
spec:
  group: smoke.flmon.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [replicas]
            properties:
              replicas: {type: integer, minimum: 1}
              mode: {type: string, enum: [Fast, Slow]}
            x-kubernetes-validations:
            - rule: "self.replicas <= 10 || self.mode == 'Slow'"
              message: "more than 10 replicas need mode Slow"
"#;

fn widget_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("smoke.flmon.io", "v1", "Widget");
    Api::namespaced_with(client, ns, &ApiResource::from_gvk(&gvk))
}

fn widget(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "smoke.flmon.io/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a Widget is a valid DynamicObject")
}

#[test]
fn kube_apiserver_binary_reports_the_intended_kubernetes_version() {
    let want = kubernetes_version();
    assert!(want.starts_with("v1."), "paths.sh names no Kubernetes version");
    let out = Command::new(tool("kube-apiserver"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("Kubernetes {want}"));
}

#[tokio::test]
async fn running_apiserver_serves_its_version_to_clients() {
    let kube = Kube::shared();
    let info = kube.client().await.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, kubernetes_version());
    let minor: u32 = info.minor.trim_end_matches('+').parse().unwrap();
    assert!(
        minor >= 33,
        "flmon needs Kubernetes >= 1.33 (native sidecars), got {}",
        info.minor
    );
}

#[tokio::test]
async fn a_custom_resource_round_trips_through_a_real_crd() {
    let kube = Kube::shared();
    let client = kube.client().await;
    kube.install_crds_yaml(&client, WIDGET_CRD).await.unwrap();
    let ns = kube.namespace("smoke-crd").await;
    let api = widget_api(client, &ns);
    api.create(
        &PostParams::default(),
        &widget("w1", serde_json::json!({"replicas": 3})),
    )
    .await
    .unwrap();
    let got = api.get("w1").await.unwrap();
    assert_eq!(got.data["spec"]["replicas"], 3);
}

#[tokio::test]
async fn an_invalid_resource_is_rejected_by_the_structural_schema_naming_the_field() {
    let kube = Kube::shared();
    let client = kube.client().await;
    kube.install_crds_yaml(&client, WIDGET_CRD).await.unwrap();
    let ns = kube.namespace("smoke-invalid").await;
    let api = widget_api(client, &ns);

    let err = api
        .create(
            &PostParams::default(),
            &widget("w0", serde_json::json!({"replicas": 0})),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("spec.replicas"), "{msg}");
    assert!(msg.contains("should be greater than or equal to 1"), "{msg}");

    let err = api
        .create(
            &PostParams::default(),
            &widget("w2", serde_json::json!({"replicas": 2, "mode": "Turbo"})),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec.mode"), "{err}");

    // A CEL rule (x-kubernetes-validations) is evaluated by the real apiserver too.
    let err = api
        .create(
            &PostParams::default(),
            &widget("w3", serde_json::json!({"replicas": 11, "mode": "Fast"})),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("more than 10 replicas need mode Slow"),
        "{err}"
    );
}

#[tokio::test]
async fn prometheus_operator_crds_install_with_server_side_apply_and_serve_objects() {
    let kube = Kube::shared();
    let client = kube.client().await;
    let names = kube.install_prometheus_operator_crds(&client).await.unwrap();
    for want in [
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let ns = kube.namespace("smoke-promop").await;
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ApiResource::from_gvk(&gvk));
    let sm: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "sm"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "endpoints": [{"port": "metrics"}]},
    }))
    .unwrap();
    api.create(&PostParams::default(), &sm).await.unwrap();
    // The real schema rejects what it should: endpoints must be a list.
    let mut bad = sm.clone();
    bad.metadata.name = Some("bad".into());
    bad.data["spec"]["endpoints"] = serde_json::json!("metrics");
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(err.to_string().contains("spec.endpoints"), "{err}");
}

#[tokio::test]
async fn a_record_is_produced_and_consumed_through_the_real_broker() {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};

    let kafka = Kafka::shared();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    let topic = format!("smoke-{}", std::process::id());
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("hello flmon"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("group.id", "smoke")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("no record within 30 s")
        .unwrap();
    assert_eq!(msg.payload(), Some(&b"hello flmon"[..]));
    assert_eq!(msg.key(), Some(&b"k"[..]));
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("the tool runs");
    let text = flmon_tests::combined_output(&out);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn promtool_checks_a_real_exposition_and_flags_a_broken_one() {
    let sample = repo_root().join("../shared/samples/node_exporter");
    let file = std::fs::read_dir(&sample)
        .unwrap_or_else(|e| panic!("{}: {e}", sample.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "txt" || x == "prom"))
        .expect("a node_exporter exposition among the samples");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.prom");
    std::fs::write(
        &good,
        "# HELP fl_global_loss Global model loss.\n# TYPE fl_global_loss gauge\nfl_global_loss 0.42\n",
    )
    .unwrap();
    let (code, text) = run(Command::new("sh").arg("-c").arg(format!(
        "{} check metrics < {}",
        tool("promtool").display(),
        good.display()
    )));
    assert_eq!(code, 0, "{text}");

    // A counter without _total is a lint problem promtool reports (exit 3): it really lints.
    let bad = dir.path().join("bad.prom");
    std::fs::write(&bad, "# HELP msgs Messages.\n# TYPE msgs counter\nmsgs 1\n").unwrap();
    let (code, text) = run(Command::new("sh").arg("-c").arg(format!(
        "{} check metrics < {}",
        tool("promtool").display(),
        bad.display()
    )));
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("_total"), "{text}");

    // And it parses a real exporter's output (lint findings allowed, parse errors not).
    let (_, text) = run(Command::new("sh").arg("-c").arg(format!(
        "{} check metrics < {}",
        tool("promtool").display(),
        file.display()
    )));
    assert!(
        !text.contains("error while linting"),
        "{}: {text}",
        file.display()
    );
}

#[test]
fn helm_and_kubectl_report_their_versions() {
    let (code, text) = run(Command::new(tool("helm")).args(["version", "--short"]));
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("v3."), "{text}");
    let (code, text) = run(Command::new(tool("kubectl")).args(["version", "--client"]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&kubernetes_version()), "{text}");
}

#[test]
fn kubeconform_validates_offline_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{name: http, port: 80}]\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{name: http, port: \"eighty\"}]\n",
    )
    .unwrap();
    let schemas = flmon_tests::kubeconform_schemas_dir();
    let location = format!(
        "{}/{{{{.NormalizedKubernetesVersion}}}}-standalone-strict/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
        schemas.display()
    );
    let kv = kubernetes_version();
    let kv = kv.trim_start_matches('v');
    let check = |f: &std::path::Path| {
        run(Command::new(tool("kubeconform"))
            .args([
                "-strict",
                "-summary",
                "-kubernetes-version",
                kv,
                "-schema-location",
                &location,
            ])
            .arg(f))
    };
    let (code, text) = check(&good);
    assert_eq!(code, 0, "{text}");
    let (code, text) = check(&bad);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("port"), "{text}");
}
