//! The HTTPS server the API server calls: reads an AdmissionReview, runs [`decide`] against the
//! FLMonitors of the pod's namespace, answers with the patch, and records the outcome.
//!
//! It never denies: anything it cannot handle is admitted unchanged (and counted), on top of the
//! configuration's `failurePolicy: Ignore` which covers the webhook being unreachable.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flmon_crds::FLMonitor;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::runtime::reflector::Store;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::events::{EventSink, events_for};
use super::inject::{Decision, decide, pod_display_name};
use super::metrics::{AdmissionMetrics, ErrorKind, Outcome};
use super::registration::MUTATE_PATH;
use super::settings::{AgentDefaults, InjectionSettings};

/// A TLS handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest AdmissionReview accepted (a pod is at most about 1.5 MiB).
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Where the webhook finds the FLMonitors of a namespace.
pub trait MonitorSource: Send + Sync + 'static {
    /// The monitors of `namespace`, as the injection sees them.
    fn monitors_in(&self, namespace: &str) -> Vec<InjectionSettings>;
}

impl MonitorSource for Store<FLMonitor> {
    fn monitors_in(&self, namespace: &str) -> Vec<InjectionSettings> {
        self.state()
            .iter()
            .filter(|m| m.metadata.namespace.as_deref() == Some(namespace))
            .map(|m| InjectionSettings::from(m.as_ref()))
            .collect()
    }
}

/// A fixed set of monitors by namespace (tests, benchmarks).
#[derive(Clone, Debug, Default)]
pub struct StaticMonitors(pub BTreeMap<String, Vec<InjectionSettings>>);

impl MonitorSource for StaticMonitors {
    fn monitors_in(&self, namespace: &str) -> Vec<InjectionSettings> {
        self.0.get(namespace).cloned().unwrap_or_default()
    }
}

/// Everything a request needs.
pub struct WebhookState {
    /// The FLMonitors.
    pub monitors: Arc<dyn MonitorSource>,
    /// The agent image and version to inject.
    pub defaults: AgentDefaults,
    /// Outcome counters.
    pub metrics: Arc<AdmissionMetrics>,
    /// Where Events go; `None` publishes none.
    pub events: Option<EventSink>,
}

/// The answer to one request.
#[derive(Debug)]
pub struct Answer {
    /// The AdmissionReview JSON to return, or `None` for a body that is not one (HTTP 400: the
    /// API server then applies `failurePolicy: Ignore`).
    pub body: Option<Vec<u8>>,
    /// How it ended.
    pub outcome: Outcome,
}

/// The AdmissionReview answer, written directly: the patch goes out base64-encoded, which is how
/// the API server's Go decoder reads `[]byte` natively (kube's response type writes it as an
/// array of numbers, about three times the size, and costs most of an answer's time).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewAnswer<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseBody<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseBody<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// An `allowed: true` answer to request `uid`, with `patch` (JSON bytes) when there is one.
fn allow<R: kube::Resource>(
    request: &AdmissionRequest<R>,
    patch: Option<&[u8]>,
    warnings: &[String],
) -> Option<Vec<u8>> {
    let answer = ReviewAnswer {
        api_version: if request.types.api_version.is_empty() {
            "admission.k8s.io/v1"
        } else {
            &request.types.api_version
        },
        kind: "AdmissionReview",
        response: ResponseBody {
            uid: &request.uid,
            allowed: true,
            patch_type: patch.map(|_| "JSONPatch"),
            patch: patch.map(|p| BASE64.encode(p)),
            warnings,
        },
    };
    // Plain strings and bools: serialising cannot fail.
    serde_json::to_vec(&answer).ok()
}

impl WebhookState {
    /// Answers one AdmissionReview body. Publishes Events unless the request is a dry run.
    pub fn admit(&self, body: &[u8]) -> Answer {
        let request: AdmissionRequest<Pod> = match serde_json::from_slice::<AdmissionReview<Pod>>(body)
            .ok()
            .and_then(|review| review.try_into().ok())
        {
            Some(request) => request,
            None => return admit_unreadable(body),
        };
        let (Operation::Create, Some(pod)) = (&request.operation, request.object.as_ref()) else {
            return Answer {
                body: allow(&request, None, &[]),
                outcome: Outcome::Error(ErrorKind::UnexpectedOperation),
            };
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        let monitors = self.monitors.monitors_in(&namespace);
        let decision = decide(pod, &monitors, &self.defaults);
        let (body, outcome) = match &decision {
            Decision::Inject(injection) => match serde_json::to_vec(&injection.patch) {
                Ok(patch) => {
                    tracing::info!(
                        namespace, pod = %pod_display_name(pod), monitor = %injection.monitor,
                        "injected the agent"
                    );
                    (
                        allow(&request, Some(&patch), &injection.warnings),
                        Outcome::Injected,
                    )
                }
                Err(error) => {
                    tracing::warn!(%error, "admitting the pod unchanged: the patch does not serialise");
                    (allow(&request, None, &[]), Outcome::Error(ErrorKind::Patch))
                }
            },
            Decision::Skip(skip) => {
                if skip.reason.is_reported() {
                    tracing::info!(
                        namespace, pod = %pod_display_name(pod), reason = %skip.reason, message = %skip.message,
                        "admitted without the agent"
                    );
                }
                (allow(&request, None, &[]), Outcome::Skipped(skip.reason))
            }
        };
        if let Some(sink) = self.events.as_ref().filter(|_| !request.dry_run) {
            for event in events_for(pod, &namespace, &decision, &self.defaults.version) {
                if !sink.send(event) {
                    self.metrics.event_dropped();
                }
            }
        }
        Answer { body, outcome }
    }
}

/// A body that is not an AdmissionReview of a pod: admitted unchanged when it carries a request
/// uid to answer, else rejected as a bad request.
fn admit_unreadable(body: &[u8]) -> Answer {
    let answer = serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
        .ok()
        .and_then(|review| TryInto::<AdmissionRequest<DynamicObject>>::try_into(review).ok())
        .and_then(|request| allow(&request, None, &[]));
    Answer {
        body: answer,
        outcome: Outcome::Error(ErrorKind::BadRequest),
    }
}

async fn mutate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    let started = Instant::now();
    let answer = state.admit(&body);
    let response = match answer.body {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            "expected an AdmissionReview (admission.k8s.io/v1)",
        )
            .into_response(),
    };
    state.metrics.record(answer.outcome, started.elapsed());
    response
}

async fn metrics(State(state): State<Arc<WebhookState>>) -> Response {
    let mut text = String::new();
    state.metrics.render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The webhook's routes: `POST /mutate-pods`, `GET /healthz`, `GET /metrics`.
pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serves `app` over TLS on `listener` (HTTP/2 and HTTP/1.1, keep-alive) until `shutdown`
/// completes; then open connections are closed gracefully (in-flight answers finish, HTTP/2
/// clients get a GOAWAY) so callers reconnect elsewhere. Each connection runs on its own task;
/// a failed handshake only drops that one.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let (closing, _) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "failed to accept a webhook connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut closing = closing.subscribe();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use serde_json::{Value, json};

    use super::*;
    use crate::webhook::SkipReason;
    use crate::webhook::tls::{CertStore, CertificateRequest, TlsMaterial};

    fn state() -> Arc<WebhookState> {
        let monitor = InjectionSettings::new(
            "mnist-fedavg",
            LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), "mnist-fedavg".to_owned())])),
                ..Default::default()
            },
        );
        Arc::new(WebhookState {
            monitors: Arc::new(StaticMonitors(BTreeMap::from([(
                "fl-team".to_owned(),
                vec![monitor],
            )]))),
            defaults: AgentDefaults {
                image: "registry.example/flmon/agent:0.1.0".to_owned(),
                version: "0.1.0".to_owned(),
            },
            metrics: Arc::new(AdmissionMetrics::default()),
            events: None,
        })
    }

    fn review(pod: Value, operation: &str) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "fl-team",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
                "object": pod,
                "dryRun": false
            }
        })
    }

    fn job_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "mnist-fedavg-client-3-", "namespace": "fl-team",
                         "labels": {"app": "mnist-fedavg"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "trainer", "image": "registry.example/fl/trainer:1.4"}]}
        })
    }

    /// The patch of a response, base64 as the API server reads `[]byte`.
    fn response_patch(response: &Value) -> Option<json_patch::Patch> {
        let bytes = BASE64.decode(response.get("patch")?.as_str()?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn answer_json(answer: Answer) -> Value {
        serde_json::from_slice(&answer.body.expect("an answer")).expect("JSON")
    }

    #[test]
    fn a_pod_create_is_answered_with_the_patch() {
        let state = state();
        let body = serde_json::to_vec(&review(job_pod(), "CREATE")).expect("json");
        let answer = state.admit(&body);
        assert_eq!(answer.outcome, Outcome::Injected);
        let json = answer_json(answer);
        assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(json["kind"], "AdmissionReview");
        let response = &json["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = response_patch(response).expect("a patch");
        let mut pod = job_pod();
        json_patch::patch(&mut pod, &patch).expect("applies");
        assert_eq!(pod["spec"]["initContainers"][0]["name"], "flmon-agent");
    }

    #[test]
    fn anything_unexpected_is_admitted_unchanged_never_denied() {
        let state = state();
        let update = serde_json::to_vec(&review(job_pod(), "UPDATE")).expect("json");
        let answer = state.admit(&update);
        assert_eq!(answer.outcome, Outcome::Error(ErrorKind::UnexpectedOperation));
        let json = answer_json(answer);
        assert_eq!(json["response"]["allowed"], true);
        assert!(json["response"].get("patch").is_none());

        let not_a_pod = review(json!({"apiVersion": "v1", "kind": "Pod", "spec": 7}), "CREATE");
        let answer = state.admit(&serde_json::to_vec(&not_a_pod).expect("json"));
        assert_eq!(answer.outcome, Outcome::Error(ErrorKind::BadRequest));
        let json = answer_json(answer);
        assert_eq!(json["response"]["allowed"], true);

        let answer = state.admit(b"not json");
        assert!(
            answer.body.is_none(),
            "no uid to answer: HTTP 400, and failurePolicy Ignore admits"
        );
    }

    #[tokio::test]
    async fn the_server_answers_over_tls_with_a_certificate_from_its_own_ca() {
        let request = CertificateRequest {
            dns_names: vec!["localhost".to_owned()],
            ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
        };
        let material = TlsMaterial::generate(&request, k8s_openapi::jiff::Timestamp::now()).expect("tls");
        let store = CertStore::new(&material).expect("store");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let state = state();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            store.server_config().expect("config"),
            router(state.clone()),
            async {
                let _ = stopped.await;
            },
        ));
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(material.ca_bundle.as_bytes()).expect("ca"))
            .build()
            .expect("client");
        let mut pod = job_pod();
        pod["spec"]["hostNetwork"] = json!(true);
        let response: Value = client
            .post(format!("https://127.0.0.1:{}{MUTATE_PATH}", addr.port()))
            .json(&review(pod, "CREATE"))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert_eq!(response["response"]["allowed"], true);
        assert!(response["response"].get("patch").is_none());
        assert_eq!(state.metrics.count(Outcome::Skipped(SkipReason::HostNetwork)), 1);
        let metrics = client
            .get(format!("https://127.0.0.1:{}/metrics", addr.port()))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text");
        assert!(metrics.contains("reason=\"HostNetwork\"} 1"), "{metrics}");
        let _ = stop.send(());
        server.await.expect("server stops");
    }
}
