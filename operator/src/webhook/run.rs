//! Wiring for the operator binary: what every replica runs (certificate, monitor cache, HTTPS
//! server) and what only the leader runs (keeping the MutatingWebhookConfiguration's caBundle
//! and namespace scope current).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flmon_crds::FLMonitor;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::net::TcpListener;

use super::events::EventSink;
use super::metrics::AdmissionMetrics;
use super::registration::{Registration, apply_configuration, desired_configuration, scoped_namespaces};
use super::server::{WebhookState, router, serve};
use super::settings::AgentDefaults;
use super::tls::{CertStore, CertificateRequest, TlsError, ensure_secret, keep_files_fresh, keep_fresh};

/// How often every replica re-reads the certificate Secret (and renews it when due).
pub const CERTIFICATE_REFRESH: Duration = Duration::from_secs(300);
/// How often every replica re-reads certificate files (cert-manager mode).
pub const FILE_REFRESH: Duration = Duration::from_secs(30);
/// How often the leader re-checks the configuration's caBundle and namespace scope.
pub const REGISTRATION_REFRESH: Duration = Duration::from_secs(5);

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateSource {
    /// The operator's own CA and certificate, kept in Secret `secret_name` of the operator's
    /// namespace (created, renewed and rotated by [`ensure_secret`]).
    SelfManaged {
        /// Name of the Secret.
        secret_name: String,
        /// Names the serving certificate covers.
        request: CertificateRequest,
    },
    /// `tls.crt`/`tls.key` in a folder (cert-manager's Secret, mounted); reloaded when they
    /// change. cert-manager's CA injector fills the caBundle.
    Files {
        /// The folder.
        dir: PathBuf,
    },
}

/// Everything a replica needs to serve the webhook.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The operator's namespace (holds the certificate Secret).
    pub namespace: String,
    /// Where the serving certificate comes from.
    pub certificate: CertificateSource,
    /// The agent to inject.
    pub agent: AgentDefaults,
    /// Who reports the Events (controller name, replica).
    pub reporter: Reporter,
}

/// A live cache of every FLMonitor, for the webhook's [`super::server::MonitorSource`], and
/// the future that keeps it current (run it on the runtime; it ends only with the runtime).
pub fn watch_monitors(client: kube::Client) -> (Store<FLMonitor>, impl Future<Output = ()> + Send + 'static) {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<FLMonitor>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .applied_objects();
    let drive = async move {
        stream
            .for_each(|item| async move {
                if let Err(error) = item {
                    tracing::warn!(%error, "FLMonitor watch for the webhook failed; retrying");
                }
            })
            .await;
    };
    (reader, drive)
}

/// Serves the webhook on `listener` until `shutdown`: makes sure the certificate exists (the
/// Secret, or cert-manager's files), watches FLMonitors, keeps the certificate fresh, publishes
/// Events. Every replica runs this.
///
/// # Errors
/// [`TlsError`] when the certificate cannot be read or created at start.
pub async fn serve_webhook(
    client: kube::Client,
    config: ServeConfig,
    listener: TcpListener,
    metrics: Arc<AdmissionMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TlsError> {
    let (tls, refresh) = match &config.certificate {
        CertificateSource::SelfManaged { secret_name, request } => {
            let material = ensure_secret(client.clone(), &config.namespace, secret_name, request).await?;
            let store = CertStore::new(&material)?;
            let tls = store.server_config()?;
            let refresh = tokio::spawn(keep_fresh(
                client.clone(),
                config.namespace.clone(),
                secret_name.clone(),
                request.clone(),
                store,
                CERTIFICATE_REFRESH,
            ));
            (tls, refresh)
        }
        CertificateSource::Files { dir } => {
            let store = CertStore::from_files(dir)?;
            let tls = store.server_config()?;
            let refresh = tokio::spawn(keep_files_fresh(dir.clone(), store, FILE_REFRESH));
            (tls, refresh)
        }
    };
    let (monitors, drive) = watch_monitors(client.clone());
    let watch = tokio::spawn(drive);
    if monitors.wait_until_ready().await.is_err() {
        tracing::warn!("the FLMonitor cache closed before its first list");
    }
    let state = Arc::new(WebhookState {
        monitors: Arc::new(monitors),
        defaults: config.agent,
        metrics,
        events: Some(EventSink::spawn(client, config.reporter)),
    });
    serve(listener, tls, router(state), shutdown).await;
    refresh.abort();
    watch.abort();
    Ok(())
}

/// What [`sync_registration`] applied: the caBundle (none in cert-manager mode) and the scope.
pub type Applied = (Option<String>, BTreeSet<String>);

/// Applies the configuration for the current caBundle and monitor namespaces, unless it equals
/// `last` (what this replica applied before); returns what was applied.
///
/// # Errors
/// The API server's refusal to read the Secret or patch the configuration.
pub async fn sync_registration(
    client: kube::Client,
    registration: &Registration,
    certificate: &CertificateSource,
    monitors: &Store<FLMonitor>,
    last: Option<Applied>,
) -> Result<Applied, RegistrationError> {
    let ca_bundle = match certificate {
        CertificateSource::SelfManaged { secret_name, request } => Some(
            ensure_secret(
                client.clone(),
                &registration.operator_namespace,
                secret_name,
                request,
            )
            .await?
            .ca_bundle,
        ),
        CertificateSource::Files { .. } => None,
    };
    let state = monitors.state();
    let namespaces = scoped_namespaces(
        state.iter().filter_map(|m| m.metadata.namespace.as_deref()),
        &registration.operator_namespace,
    );
    let current = (ca_bundle, namespaces);
    if last.as_ref() != Some(&current) {
        let desired = desired_configuration(registration, current.0.as_deref(), &current.1);
        apply_configuration(client, &desired)
            .await
            .map_err(|source| RegistrationError::Apply {
                name: registration.configuration_name.clone(),
                source,
            })?;
        tracing::info!(
            configuration = %registration.configuration_name,
            namespaces = ?current.1,
            "applied the webhook configuration"
        );
    }
    Ok(current)
}

/// Keeps the configuration current until cancelled (the leader runs this).
pub async fn keep_registration(
    client: kube::Client,
    registration: Registration,
    certificate: CertificateSource,
    monitors: Store<FLMonitor>,
) {
    let mut last = None;
    loop {
        match sync_registration(
            client.clone(),
            &registration,
            &certificate,
            &monitors,
            last.clone(),
        )
        .await
        {
            Ok(applied) => last = Some(applied),
            Err(error) => tracing::warn!(%error, "failed to update the webhook configuration"),
        }
        tokio::time::sleep(REGISTRATION_REFRESH).await;
    }
}

/// Why the configuration could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The certificate Secret.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The configuration patch.
    #[error("failed to apply MutatingWebhookConfiguration {name}: {source}")]
    Apply {
        /// The configuration's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}
