//! Benchmark (not a test) of the injection webhook, printing what it measured:
//!
//! 1. AdmissionReview latency direct to the webhook at a fixed 200 reviews/s (open loop: a new
//!    request every 5 ms whatever the previous ones do), over keep-alive TLS connections as the
//!    API server holds them: p50, p90, p99, max. Target: p99 ≤ 2 ms.
//! 2. Pod creation through the real kube-apiserver with the webhook registered vs without, same
//!    pods, same run: the ratio of median and mean create latency.
//!
//! Run: `cargo bench -p flmon-tests --bench webhook_admission` (add `--profile dev` to skip the
//! release build; numbers from a dev build are an upper bound).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flmon_crds::FLMonitor;
use flmon_operator::webhook::metrics::AdmissionMetrics;
use flmon_operator::webhook::registration::{
    MUTATE_PATH, Registration, WebhookTarget, apply_configuration, desired_configuration,
};
use flmon_operator::webhook::server::{StaticMonitors, WebhookState, router, serve};
use flmon_operator::webhook::tls::{CertStore, CertificateRequest, TlsMaterial};
use flmon_operator::webhook::{AgentDefaults, InjectionSettings};
use flmon_tests::Kube;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::net::TcpListener;

const RATE_PER_SECOND: u32 = 200;
const WARMUP: usize = 400;
const MEASURED: usize = 4000;
const APISERVER_PODS: usize = 200;

fn agent() -> AgentDefaults {
    AgentDefaults {
        image: "registry.example/flmon/agent:0.1.0".to_owned(),
        version: "0.1.0".to_owned(),
    }
}

fn monitor() -> InjectionSettings {
    InjectionSettings::new(
        "mnist-fedavg",
        LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_owned(), "mnist-fedavg".to_owned())])),
            ..Default::default()
        },
    )
}

/// A Job's client pod (the `job-client-pod` case) as the Job controller submits it.
fn job_pod(namespace: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "mnist-fedavg-client-3-", "namespace": namespace,
            "labels": {"app": "mnist-fedavg", "fl-role": "client",
                       "batch.kubernetes.io/job-name": "mnist-fedavg-client-3"},
            "annotations": {"flmon.io/role": "client", "flmon.io/client-id": "site-3"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "mnist-fedavg-client-3",
                                 "uid": "7d1c2a3e-1111-4c7b-9a55-0c1d2e3f4a5b", "controller": true,
                                 "blockOwnerDeletion": true}]
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "trainer", "image": "registry.example/fl/trainer:1.4",
                "args": ["--role=client", "--server=mnist-fedavg-server:8080"],
                "env": [{"name": "KAFKA_BOOTSTRAP", "value": "kafka.fl-team:9092"}],
                "resources": {"limits": {"cpu": "2", "memory": "4Gi"}}
            }]
        }
    })
}

fn review_body(uid: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{uid:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "fl-team",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
            "object": job_pod("fl-team"),
            "dryRun": false
        }
    }))
    .expect("a review serialises")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(label: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{label}: n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms mean={:.3} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap_or(&Duration::ZERO)),
        ms(mean)
    );
    (percentile(&samples, 0.5), mean)
}

async fn start_webhook(monitors: StaticMonitors) -> (u16, TlsMaterial, Arc<AdmissionMetrics>) {
    let request = CertificateRequest {
        dns_names: vec!["localhost".to_owned()],
        ip_addresses: vec!["127.0.0.1".parse().expect("an IP")],
    };
    let material =
        TlsMaterial::generate(&request, k8s_openapi::jiff::Timestamp::now()).expect("certificates");
    let store = CertStore::new(&material).expect("a certificate store");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let port = listener.local_addr().expect("bound").port();
    let metrics = Arc::new(AdmissionMetrics::default());
    let state = Arc::new(WebhookState {
        monitors: Arc::new(monitors),
        defaults: agent(),
        metrics: metrics.clone(),
        events: None,
    });
    let tls = store.server_config().expect("a TLS config");
    tokio::spawn(serve(listener, tls, router(state), std::future::pending()));
    (port, material, metrics)
}

async fn direct_latency() {
    let monitors = StaticMonitors(BTreeMap::from([("fl-team".to_owned(), vec![monitor()])]));
    let (port, material, metrics) = start_webhook(monitors).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(material.ca_bundle.as_bytes()).expect("the CA"))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("a client");
    let url = format!("https://127.0.0.1:{port}{MUTATE_PATH}");
    let bodies: Vec<Vec<u8>> = (0..WARMUP + MEASURED).map(review_body).collect();
    println!(
        "AdmissionReview: {} bytes in; open loop at {RATE_PER_SECOND}/s over keep-alive TLS (HTTP/1.1)",
        bodies[0].len()
    );
    let interval = Duration::from_secs(1) / RATE_PER_SECOND;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(bodies.len());
    for (i, body) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until(start + interval * u32::try_from(i).unwrap_or(u32::MAX)).await;
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("an answer");
            let bytes = response.bytes().await.expect("a body");
            assert!(bytes.len() > 100, "a review with a patch");
            sent.elapsed()
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        samples.push(task.await.expect("joined"));
    }
    let measured = samples.split_off(WARMUP);
    let elapsed = start.elapsed();
    println!(
        "sent {} reviews in {:.1} s ({:.0}/s achieved)",
        WARMUP + MEASURED,
        elapsed.as_secs_f64(),
        (WARMUP + MEASURED) as f64 / elapsed.as_secs_f64()
    );
    let (p50, _) = summary("direct, client-observed", measured.clone());
    let mut sorted = measured;
    sorted.sort();
    let p99 = percentile(&sorted, 0.99);
    println!(
        "direct p99 {:.3} ms vs target 2 ms: {} (p50 {:.3} ms)",
        ms(p99),
        if p99 <= Duration::from_millis(2) {
            "met"
        } else {
            "NOT met"
        },
        ms(p50)
    );
    let mut text = String::new();
    metrics.render(&mut text);
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let count = value("flmon_webhook_admission_duration_seconds_count");
    let share = |le: &str| {
        100.0
            * value(&format!(
                "flmon_webhook_admission_duration_seconds_bucket{{le=\"{le}\"}}"
            ))
            / count
    };
    println!(
        "server-side (parse, decide, answer): mean {:.3} ms; {:.1}% <= 0.5 ms, {:.1}% <= 1 ms, {:.1}% <= 2 ms",
        1000.0 * value("flmon_webhook_admission_duration_seconds_sum") / count,
        share("0.0005"),
        share("0.001"),
        share("0.002")
    );
}

async fn create_pods(client: &kube::Client, namespace: &str, label: &str) -> Vec<Duration> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(job_pod(namespace)).expect("a pod");
    let mut samples = Vec::with_capacity(APISERVER_PODS);
    for _ in 0..APISERVER_PODS {
        let started = Instant::now();
        let created = pods.create(&PostParams::default(), &pod).await.expect("created");
        samples.push(started.elapsed());
        let injected = created
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.name == "flmon-agent"));
        assert_eq!(injected, label == "with", "pods {label} the webhook");
    }
    samples
}

async fn through_the_apiserver() {
    let kube = Kube::shared();
    let client = kube.client().await;
    kube.install_crds_yaml(&client, &flmon_crds::all_crds_yaml().expect("CRDs"))
        .await
        .expect("CRDs installed");
    let plain = kube.namespace("bench-plain").await;
    let injected = kube.namespace("bench-webhook").await;
    let mut monitors = StaticMonitors::default();
    for ns in [&plain, &injected] {
        let resource: FLMonitor = serde_json::from_value(json!({
            "apiVersion": "flmon.io/v1alpha1", "kind": "FLMonitor",
            "metadata": {"name": "mnist-fedavg", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "mnist-fedavg"}}}
        }))
        .expect("a monitor");
        Api::<FLMonitor>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &resource)
            .await
            .expect("monitor created");
        monitors.0.insert(ns.clone(), vec![monitor()]);
    }
    let (port, material, _) = start_webhook(monitors).await;
    let registration = Registration {
        configuration_name: format!("flmon-bench-{injected}"),
        target: WebhookTarget::Url(format!("https://127.0.0.1:{port}")),
        operator_namespace: "flmon-system".to_owned(),
    };
    let scope = BTreeSet::from([injected.clone()]);
    apply_configuration(
        client.clone(),
        &desired_configuration(&registration, Some(&material.ca_bundle), &scope),
    )
    .await
    .expect("registered");
    // Wait until the apiserver calls the webhook.
    let probe: Pod = serde_json::from_value(job_pod(&injected)).expect("a pod");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = Api::<Pod>::namespaced(client.clone(), &injected)
            .create(&dry_run, &probe)
            .await
            .expect("dry run");
        if pod.spec.and_then(|s| s.init_containers).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the webhook never became effective");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Warm both paths, then alternate so drift on a shared machine hits both sides alike.
    create_pods(&client, &plain, "without").await;
    create_pods(&client, &injected, "with").await;
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..2 {
        without.extend(create_pods(&client, &plain, "without").await);
        with.extend(create_pods(&client, &injected, "with").await);
    }
    let (p50_without, mean_without) = summary("apiserver pod create without webhook", without);
    let (p50_with, mean_with) = summary("apiserver pod create with webhook   ", with);
    println!(
        "with/without: p50 ratio {:.2}, mean ratio {:.2}",
        p50_with.as_secs_f64() / p50_without.as_secs_f64(),
        mean_with.as_secs_f64() / mean_without.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        direct_latency().await;
        through_the_apiserver().await;
    });
}
