//! The operator where its environment is incomplete: without its CRDs it refuses to start and
//! says how to install them; without Prometheus Operator's CRDs it reports MonitoringReady=False,
//! still generates the rest, and generates the ServiceMonitor and PrometheusRule once the CRDs
//! appear. Each test has a private apiserver (CRDs are cluster-wide).

#[path = "common/operator.rs"]
mod operator;

use std::time::Duration;

use flmon_crds::FLMonitor;
use flmon_tests::Kube;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DynamicObject};
use operator::{Operator, apply_yaml, condition, install_flmon_crds, promop, run_args, wait_condition};

/// A private apiserver, kept alive for the rest of the test binary (it is stopped at exit).
fn private_kube() -> &'static Kube {
    Box::leak(Box::new(Kube::start().expect("a private apiserver starts")))
}

#[tokio::test]
async fn without_its_crds_the_operator_refuses_to_start_and_says_how_to_install_them() {
    let kube = private_kube();
    let operator = Operator::start(kube, run_args("flmon-system", &[]));
    let ended = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        while operator.running() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        operator.stop()
    })
    .await
    .expect("join");
    let message = ended.expect_err("the operator must not run without its CRDs");
    assert!(
        message.contains("flmonitors.flmon.io is not installed"),
        "{message}"
    );
    assert!(
        message.contains("kubectl apply --server-side -f manifests/crds.yaml"),
        "{message}"
    );
}

#[tokio::test]
async fn without_prometheus_operator_monitoring_is_not_ready_the_rest_works_and_it_recovers() {
    let kube = private_kube();
    let client = operator::client_for(kube.kubeconfig()).await;
    install_flmon_crds(kube, &client).await;
    let operator_namespace = "flmon-system";
    apply_yaml(
        &client,
        "default",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {operator_namespace}}}\n"),
    )
    .await;
    let _operator =
        Operator::start(kube, run_args(operator_namespace, &[])).assert_started(Duration::from_secs(2));
    apply_yaml(
        &client,
        "default",
        "apiVersion: flmon.io/v1alpha1
kind: FLMonitor
metadata: {name: lonely}
spec:
  selector: {matchLabels: {app: lonely}}
",
    )
    .await;
    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), "default");
    let monitor = wait_condition(&monitors, "lonely", "MonitoringReady", "False").await;
    let monitoring = condition(&monitor, "MonitoringReady").expect("condition");
    assert_eq!(monitoring.reason, "PrometheusOperatorCRDsMissing");
    assert!(
        monitoring.message.contains("monitoring.coreos.com"),
        "{}",
        monitoring.message
    );
    // Everything else is there, and the monitor is Ready: its own spec is fine.
    assert_eq!(condition(&monitor, "Ready").expect("Ready").status, "True");
    let generated = monitor
        .status
        .clone()
        .and_then(|s| s.generated)
        .expect("generated");
    assert_eq!(generated.service_monitor, None);
    assert_eq!(generated.prometheus_rule, None);
    Api::<Service>::namespaced(client.clone(), "default")
        .get("flmon-lonely")
        .await
        .expect("the Service exists");
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .get("flmon-lonely-dashboard")
        .await
        .expect("the dashboard exists");

    // Prometheus Operator gets installed later: the monitor notices without being touched.
    kube.install_prometheus_operator_crds(&client)
        .await
        .expect("Prometheus Operator CRDs install");
    let monitor = wait_condition(&monitors, "lonely", "MonitoringReady", "True").await;
    let generated = monitor.status.and_then(|s| s.generated).expect("generated");
    assert_eq!(generated.service_monitor.as_deref(), Some("flmon-lonely"));
    Api::<DynamicObject>::namespaced_with(client.clone(), "default", &promop("ServiceMonitor"))
        .get("flmon-lonely")
        .await
        .expect("the ServiceMonitor exists");
    Api::<DynamicObject>::namespaced_with(client.clone(), "default", &promop("PrometheusRule"))
        .get("flmon-lonely")
        .await
        .expect("the PrometheusRule exists");
}
