//! The dashboard server: `/` lists every FLMonitor, `/monitors/<namespace>/<name>` shows one
//! with its plots, status, firing alerts and report — self-contained pages rendered by
//! [`crate::render::html`] from the latest analysis the training pipeline published here.
//!
//! Only the leader polls agents, so only its state is current. A follower forwards each request
//! to the leader (the holder of the leader-election Lease, reached at its pod IP) and, when it
//! cannot, answers 503 naming the leader.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use flmon_crds::Phase;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::net::TcpListener;

use crate::analysis::{Analysis, Analyzer};
use crate::metrics::ControllerMetrics;
use crate::render::html::{self, AlertView, MonitorPage, MonitorRow};
use crate::render::{self, Size, report};

/// What the dashboard shows of one monitor, as of the pipeline's last poll.
#[derive(Debug, Clone)]
pub struct MonitorView {
    /// The analyzer (for the plots).
    pub analyzer: Arc<Analyzer>,
    /// Its analysis.
    pub analysis: Arc<Analysis>,
    /// The phase written to status.
    pub phase: Phase,
    /// Firing alerts.
    pub alerts: Vec<AlertView>,
    /// Grows whenever anything above changed (pages are cached per version).
    pub version: u64,
    /// When the view was last changed (RFC 3339).
    pub updated: String,
}

type Key = (String, String);

/// The latest view of every monitor, shared by the pipeline (writer) and the server (reader).
#[derive(Debug, Default)]
pub struct DashboardState {
    monitors: RwLock<BTreeMap<Key, MonitorView>>,
    pages: Mutex<HashMap<Key, (u64, Arc<String>)>>,
    refresh_seconds: Option<u32>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A page cache left half-written by a panic is still a valid cache.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DashboardState {
    /// A state whose pages reload themselves every `refresh_seconds`.
    pub fn new(refresh_seconds: Option<u32>) -> Self {
        DashboardState {
            refresh_seconds,
            ..DashboardState::default()
        }
    }

    /// Publishes a monitor's view.
    pub fn update(&self, namespace: &str, name: &str, view: MonitorView) {
        if let Ok(mut monitors) = self.monitors.write() {
            monitors.insert((namespace.to_owned(), name.to_owned()), view);
        }
    }

    /// The version of a monitor's view, if it has one.
    pub fn version(&self, namespace: &str, name: &str) -> Option<u64> {
        let monitors = self.monitors.read().ok()?;
        monitors
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|v| v.version)
    }

    /// Forgets a deleted monitor.
    pub fn remove(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        if let Ok(mut monitors) = self.monitors.write() {
            monitors.remove(&key);
        }
        lock(&self.pages).remove(&key);
    }

    /// Forgets every monitor (when this replica stops leading).
    pub fn clear(&self) {
        if let Ok(mut monitors) = self.monitors.write() {
            monitors.clear();
        }
        lock(&self.pages).clear();
    }

    /// The index page.
    pub fn index(&self) -> String {
        let rows: Vec<MonitorRow> = self.monitors.read().map_or_else(
            |_| Vec::new(),
            |monitors| {
                monitors
                    .iter()
                    .map(|((namespace, name), view)| MonitorRow {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        phase: view.phase.as_str().to_owned(),
                        state: view.analysis.convergence.state,
                        round: view.analysis.round,
                        loss: view.analysis.global_loss,
                        accuracy: view.analysis.global_accuracy,
                        clients: view.analysis.active_clients,
                        alerts: view.alerts.len(),
                        href: format!("monitors/{namespace}/{name}"),
                    })
                    .collect()
            },
        );
        html::index_page(&rows, self.refresh_seconds, &now_rfc3339())
    }

    /// A monitor's page (rendered once per version, then cached); `None` for an unknown
    /// monitor. Drawing the plots takes a while: call it off the async workers.
    pub fn page(&self, namespace: &str, name: &str) -> Option<Arc<String>> {
        let key = (namespace.to_owned(), name.to_owned());
        let view = self.monitors.read().ok()?.get(&key)?.clone();
        if let Some((version, page)) = lock(&self.pages).get(&key)
            && *version == view.version
        {
            return Some(page.clone());
        }
        let page = Arc::new(render_page(namespace, name, &view, self.refresh_seconds));
        lock(&self.pages).insert(key, (view.version, page.clone()));
        Some(page)
    }
}

fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    format!("{:.0}", now)
}

/// A monitor's page: its figures as inline SVG, status, alerts and report.
fn render_page(namespace: &str, name: &str, view: &MonitorView, refresh_seconds: Option<u32>) -> String {
    let analyzer = view.analyzer.as_ref();
    let svgs: Vec<(&str, String)> = render::figures(analyzer)
        .iter()
        .filter_map(|figure| match render::render_svg(figure, Size::DEFAULT) {
            Ok(svg) => Some((figure.name, svg)),
            Err(error) => {
                tracing::warn!(%error, figure = figure.name, "failed to draw a dashboard figure");
                None
            }
        })
        .collect();
    let clients = analyzer.client_summaries();
    let report = report::markdown(name, &view.analysis, &clients, analyzer.config());
    html::monitor_page(&MonitorPage {
        namespace,
        name,
        analysis: &view.analysis,
        report_markdown: &report,
        figures: &svgs,
        alerts: &view.alerts,
        refresh_seconds,
        generated: &view.updated,
    })
}

/// How a follower reaches the leader's dashboard.
#[derive(Clone)]
pub struct Forward {
    /// API client (to read the Lease and the leader's pod).
    pub client: kube::Client,
    /// The operator's namespace (the Lease's and the replicas').
    pub namespace: String,
    /// The leader-election Lease.
    pub lease: String,
    /// The dashboard port of every replica.
    pub port: u16,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("namespace", &self.namespace)
            .field("lease", &self.lease)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// What the server answers from.
#[derive(Clone, Debug)]
pub struct Dashboard {
    /// The views.
    pub state: Arc<DashboardState>,
    /// Whether this replica leads (`is_leader`).
    pub metrics: Arc<ControllerMetrics>,
    /// How to reach the leader; `None` answers 503 on followers.
    pub forward: Option<Forward>,
    /// HTTP client for forwarding.
    pub http: reqwest::Client,
}

const HTML: &str = "text/html; charset=utf-8";

fn html_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, HTML)], body).into_response()
}

async fn index(State(dashboard): State<Dashboard>, uri: Uri) -> Response {
    if !dashboard.metrics.is_leader() {
        return forward(&dashboard, &uri).await;
    }
    html_response(dashboard.state.index())
}

async fn monitor(
    State(dashboard): State<Dashboard>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    if !dashboard.metrics.is_leader() {
        return forward(&dashboard, &uri).await;
    }
    let state = dashboard.state.clone();
    let (ns, n) = (namespace.clone(), name.clone());
    match tokio::task::spawn_blocking(move || state.page(&ns, &n)).await {
        Ok(Some(page)) => html_response(page.as_ref().clone()),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("no FLMonitor {namespace}/{name} has been analysed (yet)\n"),
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to render the page of {namespace}/{name}: {error}\n"),
        )
            .into_response(),
    }
}

/// The leader's identity and dashboard URL for `path`.
async fn leader_url(forward: &Forward, path: &str) -> Result<String, String> {
    let leases: Api<Lease> = Api::namespaced(forward.client.clone(), &forward.namespace);
    let lease = leases
        .get_opt(&forward.lease)
        .await
        .map_err(|e| {
            format!(
                "cannot read the Lease {}/{}: {e}",
                forward.namespace, forward.lease
            )
        })?
        .ok_or_else(|| format!("no Lease {}/{} exists yet", forward.namespace, forward.lease))?;
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "no replica holds the leader Lease right now".to_owned())?;
    let pods: Api<Pod> = Api::namespaced(forward.client.clone(), &forward.namespace);
    let ip = pods
        .get_opt(&holder)
        .await
        .map_err(|e| format!("the leader is {holder}; cannot read its pod: {e}"))?
        .and_then(|p| p.status)
        .and_then(|s| s.pod_ip)
        .ok_or_else(|| format!("the leader is {holder}, whose pod has no IP"))?;
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
    Ok(format!("http://{host}:{}{path}", forward.port))
}

/// Answers a follower's request with the leader's answer, or 503 saying why it cannot.
async fn forward(dashboard: &Dashboard, uri: &Uri) -> Response {
    let unavailable = |why: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("this replica does not lead, and only the leader polls the agents: {why}\n"),
        )
            .into_response()
    };
    let Some(forward) = &dashboard.forward else {
        return unavailable("forwarding is off".to_owned());
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = match leader_url(forward, path).await {
        Ok(url) => url,
        Err(why) => return unavailable(why),
    };
    let answer = async {
        let response = dashboard.http.get(&url).send().await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    match answer.await {
        Ok((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, HTML)],
            body,
        )
            .into_response(),
        Err(error) => unavailable(format!("forwarding to {url} failed: {error}")),
    }
}

/// The dashboard's routes.
pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/monitors", get(|| async { Redirect::to("/") }))
        .route("/monitors/", get(|| async { Redirect::to("/") }))
        .route("/monitors/{namespace}", get(|| async { Redirect::to("/") }))
        .route("/monitors/{namespace}/", get(|| async { Redirect::to("/") }))
        .route("/monitors/{namespace}/{name}", get(monitor))
        .with_state(dashboard)
}

/// A reqwest client for forwarding to the leader.
///
/// # Errors
/// reqwest's error when the client cannot be built.
pub fn forwarding_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Serves the dashboard on `listener` until `shutdown` completes.
///
/// # Errors
/// When serving fails.
pub async fn serve(
    listener: TcpListener,
    dashboard: Dashboard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(dashboard))
        .with_graceful_shutdown(shutdown)
        .await
}
