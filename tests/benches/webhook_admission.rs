//! Benchmark (not a test) of the injection webhook, printing what it measured:
//!
//! 1. AdmissionReview latency direct to the webhook at a fixed 200 reviews/s (open loop: a new
//!    request every 5 ms whatever the previous ones do), over keep-alive TLS as the API server
//!    holds it — one multiplexed HTTP/2 connection (what kube-apiserver negotiates), then a pool
//!    of HTTP/1.1 connections: p50, p90, p99, max, and the webhook's own time per review.
//!    Target: p99 ≤ 2 ms. The webhook and the client run on separate runtimes (threads).
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

/// How the stand-in for the API server talks to the webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// One HTTP/2 connection, requests multiplexed on it: what kube-apiserver's webhook client
    /// (Go's net/http with ALPN) does with a server that offers `h2`.
    Http2,
    /// A pool of keep-alive HTTP/1.1 connections, one request at a time on each: an API server
    /// with HTTP/2 switched off.
    Http1,
}

type Body = http_body_util::Full<bytes::Bytes>;

/// One TLS connection to the webhook, the handshake done before any request is timed.
async fn connect(port: u16, ca_bundle: &str, protocol: Protocol) -> Sender {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_bundle.as_bytes()) {
        roots.add(cert.expect("a CA certificate")).expect("a usable CA");
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![match protocol {
        Protocol::Http2 => b"h2".to_vec(),
        Protocol::Http1 => b"http/1.1".to_vec(),
    }];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connected");
    tcp.set_nodelay(true).expect("nodelay");
    let server_name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .expect("a TLS handshake");
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = hyper_util::rt::TokioIo::new(tls);
    match protocol {
        Protocol::Http2 => {
            assert_eq!(
                negotiated.as_deref(),
                Some(&b"h2"[..]),
                "the webhook offers HTTP/2"
            );
            let (sender, connection) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .expect("an HTTP/2 connection");
            tokio::spawn(connection);
            Sender::Http2(sender)
        }
        Protocol::Http1 => {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("an HTTP/1.1 connection");
            tokio::spawn(connection);
            Sender::Http1(sender)
        }
    }
}

enum Sender {
    Http2(hyper::client::conn::http2::SendRequest<Body>),
    Http1(hyper::client::conn::http1::SendRequest<Body>),
}

/// The connections a run uses: the one HTTP/2 connection, or the idle HTTP/1.1 ones (a request
/// that finds none idle opens another, as a keep-alive pool does).
struct Connections {
    port: u16,
    ca_bundle: String,
    protocol: Protocol,
    http2: Option<hyper::client::conn::http2::SendRequest<Body>>,
    idle: std::cell::RefCell<Vec<hyper::client::conn::http1::SendRequest<Body>>>,
    opened: std::cell::Cell<usize>,
}

impl Connections {
    async fn new(port: u16, ca_bundle: &str, protocol: Protocol) -> Self {
        let mut pool = Connections {
            port,
            ca_bundle: ca_bundle.to_owned(),
            protocol,
            http2: None,
            idle: std::cell::RefCell::new(Vec::new()),
            opened: std::cell::Cell::new(0),
        };
        // Open up front what the run will hold, so no timed request waits on a handshake.
        let count = if protocol == Protocol::Http2 { 1 } else { 4 };
        for _ in 0..count {
            match connect(port, ca_bundle, protocol).await {
                Sender::Http2(s) => pool.http2 = Some(s),
                Sender::Http1(s) => pool.idle.get_mut().push(s),
            }
            pool.opened.set(pool.opened.get() + 1);
        }
        pool
    }

    /// Sends one review and reads the whole answer; returns the time from send to last byte.
    async fn review(&self, body: bytes::Bytes, uri: &str) -> Duration {
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::HOST, "127.0.0.1")
            .body(Body::new(body))
            .expect("a request");
        match self.protocol {
            Protocol::Http2 => {
                let mut sender = self.http2.clone().expect("the HTTP/2 connection");
                let sent = Instant::now();
                read_answer(sent, sender.send_request(request).await).await
            }
            Protocol::Http1 => {
                let idle = self.idle.borrow_mut().pop();
                let mut sender = match idle {
                    Some(s) if !s.is_closed() => s,
                    _ => {
                        self.opened.set(self.opened.get() + 1);
                        match connect(self.port, &self.ca_bundle, self.protocol).await {
                            Sender::Http1(s) => s,
                            Sender::Http2(_) => unreachable!("asked for HTTP/1.1"),
                        }
                    }
                };
                let sent = Instant::now();
                let elapsed = read_answer(sent, sender.send_request(request).await).await;
                self.idle.borrow_mut().push(sender);
                elapsed
            }
        }
    }
}

/// Reads an answer to its last byte and checks it carries a patch; the time since `sent`.
async fn read_answer(
    sent: Instant,
    response: hyper::Result<http::Response<hyper::body::Incoming>>,
) -> Duration {
    use http_body_util::BodyExt as _;
    let response = response.expect("an answer");
    assert_eq!(response.status(), http::StatusCode::OK);
    let bytes = response.into_body().collect().await.expect("a body").to_bytes();
    let elapsed = sent.elapsed();
    assert!(bytes.len() > 100, "a review with a patch");
    elapsed
}

/// Open-loop AdmissionReviews at [`RATE_PER_SECOND`] from the calling (single-threaded) runtime
/// to the webhook served by another runtime's threads.
async fn direct_latency(port: u16, ca_bundle: &str, metrics: &AdmissionMetrics, protocol: Protocol) {
    let connections = std::rc::Rc::new(Connections::new(port, ca_bundle, protocol).await);
    let uri: Arc<str> = Arc::from(match protocol {
        Protocol::Http2 => format!("https://127.0.0.1:{port}{MUTATE_PATH}"),
        Protocol::Http1 => MUTATE_PATH.to_owned(),
    });
    let bodies: Vec<bytes::Bytes> = (0..WARMUP + MEASURED).map(|i| review_body(i).into()).collect();
    let before = metrics_values(metrics);
    println!(
        "{protocol:?}: AdmissionReview of {} bytes, open loop at {RATE_PER_SECOND}/s",
        bodies[0].len()
    );
    let interval = Duration::from_secs(1) / RATE_PER_SECOND;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(bodies.len());
    let mut late = Vec::with_capacity(bodies.len());
    for (i, body) in bodies.into_iter().enumerate() {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due).await;
        late.push(due.elapsed());
        let (connections, uri) = (connections.clone(), uri.clone());
        tasks.push(tokio::task::spawn_local(async move {
            connections.review(body, &uri).await
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        samples.push(task.await.expect("joined"));
    }
    let elapsed = start.elapsed();
    let measured = samples.split_off(WARMUP);
    println!(
        "  sent {} reviews in {:.1} s ({:.0}/s achieved) over {} connection(s); sends late by p99 {:.3} ms",
        WARMUP + MEASURED,
        elapsed.as_secs_f64(),
        (WARMUP + MEASURED) as f64 / elapsed.as_secs_f64(),
        connections.opened.get(),
        ms(percentile(&sorted(late), 0.99)),
    );
    let (p50, _) = summary("  client-observed", measured.clone());
    let p99 = percentile(&sorted(measured), 0.99);
    println!(
        "  p99 {:.3} ms vs target 2 ms: {} (p50 {:.3} ms)",
        ms(p99),
        if p99 <= Duration::from_millis(2) {
            "met"
        } else {
            "NOT met"
        },
        ms(p50)
    );
    let after = metrics_values(metrics);
    let delta = |key: &str| after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0);
    let count = delta("count");
    let share = |le: &str| 100.0 * delta(le) / count;
    println!(
        "  server-side (parse, decide, answer): mean {:.3} ms; {:.1}% <= 0.5 ms, {:.1}% <= 1 ms, {:.1}% <= 2 ms",
        1000.0 * delta("sum") / count,
        share("0.0005"),
        share("0.001"),
        share("0.002")
    );
}

fn sorted(mut samples: Vec<Duration>) -> Vec<Duration> {
    samples.sort();
    samples
}

/// The webhook's own duration histogram: `count`, `sum` and the buckets by `le`.
fn metrics_values(metrics: &AdmissionMetrics) -> BTreeMap<String, f64> {
    let mut text = String::new();
    metrics.render(&mut text);
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        if let Some(rest) = key.strip_prefix("flmon_webhook_admission_duration_seconds_") {
            let name = match rest.strip_prefix("bucket{le=\"") {
                Some(le) => le.trim_end_matches("\"}").to_owned(),
                None => rest.to_owned(),
            };
            values.insert(name, value);
        }
    }
    values
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
    // The webhook runs on its own multi-threaded runtime, as in `flmon-operator run`; the stand-in
    // for the API server on another, single-threaded one, so neither queues behind the other's
    // tasks (they still share the machine's cores).
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("webhook")
        .enable_all()
        .build()
        .expect("a runtime");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let monitors = StaticMonitors(BTreeMap::from([("fl-team".to_owned(), vec![monitor()])]));
    let (port, material, metrics) = server.block_on(start_webhook(monitors));
    let local = tokio::task::LocalSet::new();
    for protocol in [Protocol::Http2, Protocol::Http1] {
        local.block_on(
            &client,
            direct_latency(port, &material.ca_bundle, &metrics, protocol),
        );
    }
    server.block_on(through_the_apiserver());
}
