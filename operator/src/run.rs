//! Wiring of `flmon-operator run` and `flmon-operator crd`: logging, start-up checks, the
//! metrics and health endpoints, leader election, and the controllers on the leader.

use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, ResourceExt};
use tokio::sync::{oneshot, watch};

use crate::cli::{CrdArgs, LogFormat, RenderArgs, RunArgs};
use crate::controller::{self, Settings, Tuning};
use crate::dashboard::{self, Dashboard, DashboardState, Forward};
use crate::health::{self, Health};
use crate::leader::{self, LeaderElector, LeaseConfig};
use crate::metrics::{ControllerMetrics, Exposition};
use crate::pipeline::stats::PipelineStats;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::webhook::AgentDefaults;
use crate::webhook::metrics::AdmissionMetrics;
use crate::webhook::registration::{Registration, WebhookTarget};
use crate::webhook::run::{CertificateSource, ServeConfig};
use crate::webhook::tls::CertificateRequest;

/// Why the operator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot configure a Kubernetes client: {0}")]
    Client(kube::Error),
    /// The apiserver could not be asked for the CRDs.
    #[error("cannot check whether flmon's CRDs are installed: {}", crate::controller::error::describe(.0))]
    CrdCheck(kube::Error),
    /// One of flmon's CRDs is not installed or not established.
    #[error(
        "the CustomResourceDefinition {name} is {state}; install flmon's CRDs first with \
         `kubectl apply --server-side -f manifests/crds.yaml` (helm install does it too)"
    )]
    CrdMissing {
        /// Name of the CRD.
        name: String,
        /// `not installed` or `not established yet`.
        state: &'static str,
    },
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        cause: std::io::Error,
    },
    /// The logger could not be set up.
    #[error("invalid log filter {filter:?}: {cause}")]
    Logging {
        /// The filter given.
        filter: String,
        /// What was wrong.
        cause: String,
    },
    /// Writing the CRDs failed.
    #[error("cannot write {path}: {cause}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// Serializing the CRDs failed.
    #[error("cannot render the CRDs: {0}")]
    Render(#[from] serde_yaml_ng::Error),
}

/// Sets up structured logging.
///
/// # Errors
/// An invalid filter.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), StartupError> {
    let env_filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| StartupError::Logging {
        filter: filter.to_owned(),
        cause: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| StartupError::Logging {
        filter: filter.to_owned(),
        cause: e.to_string(),
    })
}

/// `flmon-operator crd`: prints every CRD, or writes one file per CRD into `--out-dir`.
///
/// # Errors
/// When a file cannot be written.
pub fn crd(args: &CrdArgs) -> Result<(), StartupError> {
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|cause| StartupError::Write {
            path: path.display().to_string(),
            cause,
        })
    };
    match &args.out_dir {
        Some(dir) => {
            for crd in flmon_crds::crds() {
                write(
                    &dir.join(flmon_crds::crd_file_name(&crd)),
                    &flmon_crds::crd_yaml(&crd)?,
                )?;
            }
            Ok(())
        }
        None => std::io::stdout()
            .write_all(flmon_crds::all_crds_yaml()?.as_bytes())
            .map_err(|cause| StartupError::Write {
                path: "stdout".into(),
                cause,
            }),
    }
}

/// The agent the webhook injects and the controller audits pods against: `--agent-image`, and
/// this build's version (what `flmon.io/injected` says on pods it injected).
pub fn agent_defaults(args: &RunArgs) -> AgentDefaults {
    AgentDefaults {
        image: args.agent_image.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// Why `flmon-operator render` failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderCommandError {
    /// A file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// A history document is malformed.
    #[error("{path}: {cause}")]
    History {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        cause: crate::analysis::HistoryError,
    },
    /// The monitor manifest is not an FLMonitor.
    #[error("{path} is not an FLMonitor manifest: {cause}")]
    Monitor {
        /// The file.
        path: String,
        /// The parser's message.
        cause: String,
    },
    /// The monitor's `spec.analysis` cannot be used.
    #[error("{path}: {cause}")]
    Analysis {
        /// The file.
        path: String,
        /// The setting, its value and what is expected.
        cause: crate::analysis::ConfigError,
    },
    /// Drawing or writing failed.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
}

/// `flmon-operator render`: the five figures (PNG and SVG), `report.md` and `index.html` from
/// saved `/v1/history` documents, analysed as the operator analyses a monitor's agents.
///
/// # Errors
/// A file that cannot be read or parsed, unusable analysis settings, or a rendering failure.
pub fn render(args: &RenderArgs) -> Result<crate::render::Rendered, RenderCommandError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|cause| RenderCommandError::Read {
            path: path.display().to_string(),
            cause,
        })
    };
    let mut histories = Vec::new();
    for path in &args.histories {
        let text = read(path)?;
        let history = crate::analysis::parse_history(&text).map_err(|cause| RenderCommandError::History {
            path: path.display().to_string(),
            cause,
        })?;
        histories.push(history);
    }
    let (name, config) = match &args.monitor {
        Some(path) => {
            let shown = path.display().to_string();
            let monitor: flmon_crds::FLMonitor =
                serde_yaml_ng::from_str(&read(path)?).map_err(|e| RenderCommandError::Monitor {
                    path: shown.clone(),
                    cause: e.to_string(),
                })?;
            let config = crate::pipeline::derive::analysis_config(&monitor.spec.analysis)
                .map_err(|cause| RenderCommandError::Analysis { path: shown, cause })?;
            (monitor.name_any(), config)
        }
        None => ("history".to_owned(), crate::analysis::AnalysisConfig::default()),
    };
    let analyzer =
        crate::analysis::analyze(&histories, config).map_err(|cause| RenderCommandError::Analysis {
            path: "the analysis settings".to_owned(),
            cause,
        })?;
    let size = crate::render::Size {
        width: args.width,
        height: args.height,
    };
    Ok(crate::render::render_analyzer_dir(
        &analyzer, &name, &args.out, size,
    )?)
}

/// The training pipeline's settings from the command line.
pub fn pipeline_settings(args: &RunArgs, controller: Settings) -> PipelineSettings {
    PipelineSettings {
        poll_interval: args.poll_interval.max(std::time::Duration::from_millis(100)),
        agent_port: args.agent_port,
        agent_timeout: args.agent_timeout,
        report_dir: args.report_dir.clone(),
        external_labels: args.alertmanager_external_labels.iter().cloned().collect(),
        ..PipelineSettings::new(controller)
    }
}

/// What the leader runs besides the controllers: the training pipeline and its outputs.
#[derive(Clone)]
struct Training {
    settings: PipelineSettings,
    stats: Arc<PipelineStats>,
    dashboard: Arc<DashboardState>,
    /// The webhook configuration the leader keeps current (none when the webhook is off).
    registration: Option<(Registration, CertificateSource)>,
}

/// Runs the controllers and the training pipeline until `term` completes.
async fn lead(
    client: Client,
    settings: Settings,
    metrics: Arc<ControllerMetrics>,
    tuning: Tuning,
    training: Training,
    term: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let term = futures::future::FutureExt::shared(Box::pin(term));
    let pipeline = match Pipeline::new(
        client.clone(),
        training.settings,
        metrics.clone(),
        training.stats,
        training.dashboard,
    ) {
        Ok(pipeline) => Some(pipeline),
        Err(error) => {
            tracing::error!(%error, "the training pipeline cannot start; the controllers run without it");
            None
        }
    };
    // The leader keeps the webhook configuration's caBundle and namespace scope current.
    let registration = training.registration.map(|(registration, certificate)| {
        let (monitors, drive) = crate::webhook::run::watch_monitors(client.clone());
        let keep =
            crate::webhook::run::keep_registration(client.clone(), registration, certificate, monitors);
        tokio::spawn(async move {
            tokio::join!(drive, keep);
        })
    });
    let pipeline_term = term.clone();
    let pipeline = async move {
        if let Some(pipeline) = pipeline {
            pipeline.run(pipeline_term).await;
        }
    };
    tokio::join!(controller::run(client, settings, metrics, tuning, term), pipeline);
    if let Some(task) = registration {
        task.abort();
    }
}

/// Where the webhook's certificate comes from and how it is registered, from the flags.
fn webhook_setup(args: &RunArgs) -> (Registration, CertificateSource) {
    let hook = &args.webhook;
    let mut request = CertificateRequest::for_service(&hook.service, &args.namespace);
    let target = match &hook.url {
        Some(url) => {
            // The URL's host must be in the certificate the apiserver checks.
            let host = url
                .split("://")
                .nth(1)
                .unwrap_or(url)
                .split(['/', ':'])
                .next()
                .unwrap_or_default();
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) => request.ip_addresses.push(ip),
                Err(_) if !host.is_empty() => request.dns_names.push(host.to_owned()),
                Err(_) => {}
            }
            WebhookTarget::Url(url.clone())
        }
        None => WebhookTarget::Service {
            namespace: args.namespace.clone(),
            name: hook.service.clone(),
            port: 443,
        },
    };
    let certificate = match hook.tls_mode {
        crate::cli::TlsMode::SelfManaged => CertificateSource::SelfManaged {
            secret_name: hook.tls_secret.clone(),
            request,
        },
        crate::cli::TlsMode::CertManager => CertificateSource::Files {
            dir: hook.tls_dir.clone(),
        },
    };
    let registration = Registration {
        configuration_name: hook.config_name.clone(),
        target,
        operator_namespace: args.namespace.clone(),
    };
    (registration, certificate)
}

/// Fails with a clear message unless every flmon CRD is installed and established.
///
/// # Errors
/// [`StartupError::CrdMissing`] naming the CRD and how to install it.
pub async fn check_crds(client: &Client) -> Result<(), StartupError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in flmon_crds::crds() {
        let name = crd.name_any();
        let installed = api.get_opt(&name).await.map_err(StartupError::CrdCheck)?;
        let Some(installed) = installed else {
            return Err(StartupError::CrdMissing {
                name,
                state: "not installed",
            });
        };
        let established = installed
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if !established {
            return Err(StartupError::CrdMissing {
                name,
                state: "not established yet",
            });
        }
    }
    Ok(())
}

/// A `Send + Sync` future that completes when `future` does (kube's graceful shutdown wants
/// one; watch receivers' futures are not `Sync`).
fn completion_of(
    future: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + Sync {
    let (done, finished) = oneshot::channel::<()>();
    tokio::spawn(async move {
        future.await;
        let _ = done.send(());
    });
    async move {
        let _ = finished.await;
    }
}

/// Completes once `flag` is true (or its sender is gone).
async fn until(mut flag: watch::Receiver<bool>, value: bool) {
    let _ = flag.wait_for(|v| *v == value).await;
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `flmon-operator run` until SIGTERM or Ctrl-C.
///
/// # Errors
/// A start-up check that failed.
pub async fn run(args: RunArgs) -> Result<(), StartupError> {
    let client = Client::try_default().await.map_err(StartupError::Client)?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        termination_signal().await;
        tracing::info!("shutting down");
        stop.send_replace(true);
    });
    run_with(client, &args, stopped).await
}

/// The operator with a given client, until `shutdown` turns true. Tests run replicas this way.
///
/// # Errors
/// A start-up check that failed.
pub async fn run_with(
    client: Client,
    args: &RunArgs,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartupError> {
    let metrics = Arc::new(ControllerMetrics::default());
    run_with_metrics(client, args, shutdown, metrics).await
}

/// As [`run_with`], recording into `metrics` (so a caller can read them).
///
/// # Errors
/// A start-up check that failed.
pub async fn run_with_metrics(
    client: Client,
    args: &RunArgs,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<ControllerMetrics>,
) -> Result<(), StartupError> {
    let mut exposition = Exposition::default();
    let admission = Arc::new(AdmissionMetrics::default());
    if args.webhook.enabled {
        let rendered = admission.clone();
        exposition.add(Arc::new(move |out: &mut String| rendered.render(out)));
    }
    let rendered = metrics.clone();
    exposition.add(Arc::new(move |out: &mut String| rendered.render(out)));
    let stats = Arc::new(PipelineStats::default());
    let rendered = stats.clone();
    exposition.add(Arc::new(move |out: &mut String| rendered.render(out)));
    let ready = Arc::new(AtomicBool::new(false));
    let listener = health::bind(args.metrics_addr)
        .await
        .map_err(|cause| StartupError::Bind {
            addr: args.metrics_addr,
            cause,
        })?;
    let health = Health {
        exposition,
        ready: ready.clone(),
    };
    let server = tokio::spawn(health::serve(listener, health, until(shutdown.clone(), true)));
    // Every replica serves the dashboard; followers forward to the leader.
    let refresh = u32::try_from(args.poll_interval.as_secs().max(5)).unwrap_or(u32::MAX);
    let dashboard_state = Arc::new(DashboardState::new(Some(refresh)));
    let dashboard_listener = health::bind(args.dashboard_addr)
        .await
        .map_err(|cause| StartupError::Bind {
            addr: args.dashboard_addr,
            cause,
        })?;
    let dashboard = Dashboard {
        state: dashboard_state.clone(),
        metrics: metrics.clone(),
        forward: args.leader_election.then(|| Forward {
            client: client.clone(),
            namespace: args.namespace.clone(),
            lease: args.lease_name.clone(),
            port: args.dashboard_addr.port(),
        }),
        http: dashboard::forwarding_client().unwrap_or_default(),
    };
    let dashboard_server = tokio::spawn(dashboard::serve(
        dashboard_listener,
        dashboard,
        until(shutdown.clone(), true),
    ));

    check_crds(&client).await?;

    // Every replica serves the webhook; the leader keeps its configuration current.
    let webhook = args.webhook.enabled.then(|| webhook_setup(args));
    let webhook_server = match &webhook {
        Some((_, certificate)) => {
            let listener = tokio::net::TcpListener::bind(args.webhook.addr)
                .await
                .map_err(|cause| StartupError::Bind {
                    addr: args.webhook.addr,
                    cause,
                })?;
            let config = ServeConfig {
                namespace: args.namespace.clone(),
                certificate: certificate.clone(),
                agent: agent_defaults(args),
                reporter: kube::runtime::events::Reporter {
                    controller: "flmon-operator".into(),
                    instance: Some(args.pod_name.clone()),
                },
            };
            let serve = crate::webhook::run::serve_webhook(
                client.clone(),
                config,
                listener,
                admission,
                until(shutdown.clone(), true),
            );
            Some(tokio::spawn(async move {
                if let Err(error) = serve.await {
                    tracing::error!(%error, "the admission webhook stopped");
                }
            }))
        }
        None => None,
    };
    ready.store(true, Ordering::Relaxed);
    tracing::info!(
        namespace = %args.namespace,
        identity = %args.pod_name,
        leader_election = args.leader_election,
        "flmon operator started"
    );

    let nonempty = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let settings = Settings {
        operator_namespace: args.namespace.clone(),
        dashboard_namespaces: nonempty(&args.dashboard_namespaces),
        notify_url_prefixes: nonempty(&args.notify_url_prefixes),
        agent_defaults: Some(agent_defaults(args)),
    };
    let tuning = Tuning {
        concurrency: args.concurrency.max(1),
        probe_ttl: args.prometheus_operator_recheck,
    };
    let training = Training {
        settings: pipeline_settings(args, settings.clone()),
        stats,
        dashboard: dashboard_state,
        registration: webhook,
    };

    if args.leader_election {
        let config = LeaseConfig {
            lease_duration: args.lease_duration,
            renew_deadline: args.lease_renew_deadline,
            retry_period: args.lease_retry_period,
            ..LeaseConfig::new(&args.namespace, &args.lease_name, &args.pod_name)
        };
        let (leading_tx, leading) = watch::channel(false);
        let election = tokio::spawn(leader::run(
            LeaderElector::new(client.clone(), config),
            leading_tx,
            until(shutdown.clone(), true),
        ));
        loop {
            tokio::select! {
                () = until(leading.clone(), true) => {}
                () = until(shutdown.clone(), true) => break,
            }
            if *shutdown.borrow() {
                break;
            }
            metrics.set_leader(true);
            let term = {
                let leading = leading.clone();
                let shutdown = shutdown.clone();
                completion_of(async move {
                    tokio::select! {
                        () = until(leading, false) => {}
                        () = until(shutdown, true) => {}
                    }
                })
            };
            lead(
                client.clone(),
                settings.clone(),
                metrics.clone(),
                tuning.clone(),
                training.clone(),
                term,
            )
            .await;
            metrics.set_leader(false);
        }
        let _ = election.await;
    } else {
        metrics.set_leader(true);
        lead(
            client,
            settings,
            metrics,
            tuning,
            training,
            completion_of(until(shutdown, true)),
        )
        .await;
    }
    let _ = server.await;
    let _ = dashboard_server.await;
    if let Some(webhook_server) = webhook_server {
        let _ = webhook_server.await;
    }
    Ok(())
}
