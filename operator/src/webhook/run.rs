//! Wiring for the operator binary: what every replica runs (certificate, monitor cache, HTTPS
//! server) and what only the leader runs (keeping the MutatingWebhookConfiguration's caBundle
//! and namespace scope current).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use flmon_crds::FLMonitor;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::events::Reporter;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::net::TcpListener;

use super::events::EventSink;
use super::metrics::AdmissionMetrics;
use super::registration::{Registration, apply_configuration, desired_configuration, scoped_namespaces};
use super::server::{MonitorSource, WebhookState, router, serve};
use super::settings::{AgentDefaults, InjectionSettings};
use super::tls::{CertStore, CertificateRequest, TlsError, ensure_secret, keep_files_fresh, keep_fresh};

/// How often every replica re-reads the certificate Secret (and renews it when due).
pub const CERTIFICATE_REFRESH: Duration = Duration::from_secs(300);
/// How often every replica re-reads certificate files (cert-manager mode).
pub const FILE_REFRESH: Duration = Duration::from_secs(30);
/// How long a replica waits for the first FLMonitor list before serving anyway.
pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(10);
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

/// The FLMonitors of the cluster as the webhook needs them, kept current by
/// [`watch_monitors`]. A monitor that does not parse is logged and left out: one bad object
/// never stalls injection for everyone (the controller reports it on the monitor itself).
#[derive(Clone, Debug, Default)]
pub struct MonitorCache {
    by_namespace: Arc<RwLock<BTreeMap<String, BTreeMap<String, InjectionSettings>>>>,
    ready: Arc<AtomicBool>,
}

impl MonitorCache {
    /// Whether the first full list has arrived.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The namespaces holding at least one monitor.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.by_namespace
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn apply(map: &mut BTreeMap<String, BTreeMap<String, InjectionSettings>>, object: DynamicObject) {
        let (Some(namespace), Some(name)) = (object.metadata.namespace.clone(), object.metadata.name.clone())
        else {
            return;
        };
        match object.try_parse::<FLMonitor>() {
            Ok(monitor) => {
                map.entry(namespace)
                    .or_default()
                    .insert(name, InjectionSettings::from(&monitor));
            }
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "FLMonitor left out of injection: it does not parse");
                Self::remove(map, &namespace, &name);
            }
        }
    }

    fn remove(map: &mut BTreeMap<String, BTreeMap<String, InjectionSettings>>, namespace: &str, name: &str) {
        if let Some(monitors) = map.get_mut(namespace) {
            monitors.remove(name);
            if monitors.is_empty() {
                map.remove(namespace);
            }
        }
    }

    fn handle(
        &self,
        event: watcher::Event<DynamicObject>,
        buffer: &mut BTreeMap<String, BTreeMap<String, InjectionSettings>>,
    ) {
        let Ok(mut map) = self.by_namespace.write() else {
            return;
        };
        match event {
            watcher::Event::Apply(object) => Self::apply(&mut map, object),
            watcher::Event::Delete(object) => {
                if let (Some(namespace), Some(name)) = (&object.metadata.namespace, &object.metadata.name) {
                    Self::remove(&mut map, namespace, name);
                }
            }
            watcher::Event::Init => buffer.clear(),
            watcher::Event::InitApply(object) => Self::apply(buffer, object),
            watcher::Event::InitDone => {
                *map = std::mem::take(buffer);
                self.ready.store(true, Ordering::Release);
            }
        }
    }
}

impl MonitorSource for MonitorCache {
    fn monitors_in(&self, namespace: &str) -> Vec<InjectionSettings> {
        self.by_namespace
            .read()
            .ok()
            .and_then(|m| {
                m.get(namespace)
                    .map(|monitors| monitors.values().cloned().collect())
            })
            .unwrap_or_default()
    }
}

/// A [`MonitorCache`] of every FLMonitor and the future that keeps it current (run it on the
/// runtime; it ends only with the runtime).
pub fn watch_monitors(client: kube::Client) -> (MonitorCache, impl Future<Output = ()> + Send + 'static) {
    let cache = MonitorCache::default();
    // Untyped, so one object the Rust type rejects is skipped instead of failing the whole list.
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<FLMonitor>(&()));
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let drive = {
        let cache = cache.clone();
        async move {
            let mut buffer = BTreeMap::new();
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => cache.handle(event, &mut buffer),
                    Err(error) => tracing::warn!(%error, "FLMonitor watch for the webhook failed; retrying"),
                }
            }
        }
    };
    (cache, drive)
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
    // Answer from the first full list on; if it is slow, serve anyway (pods admitted meanwhile
    // are found by the audit) rather than leave the API server waiting on a closed port.
    let listed = Instant::now();
    while !monitors.is_ready() && listed.elapsed() < FIRST_LIST_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !monitors.is_ready() {
        tracing::warn!("serving the webhook before the first FLMonitor list arrived");
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
    monitors: &MonitorCache,
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
    if !monitors.is_ready() {
        return Err(RegistrationError::NotListed);
    }
    let namespaces = monitors.namespaces();
    let namespaces = scoped_namespaces(
        namespaces.iter().map(String::as_str),
        &registration.operator_namespace,
    );
    let current = (ca_bundle, namespaces);
    if last.as_ref() != Some(&current) {
        let desired = desired_configuration(registration, current.0.as_deref(), &current.1);
        apply_configuration(client, &desired)
            .await
            .map_err(|cause| RegistrationError::Apply {
                name: registration.configuration_name.clone(),
                cause,
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
    monitors: MonitorCache,
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
    /// FLMonitors not listed yet: applying now would scope the webhook to no namespace.
    #[error("the FLMonitor list has not arrived yet")]
    NotListed,
    /// The certificate Secret.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The configuration patch.
    #[error("failed to apply MutatingWebhookConfiguration {name}: {cause}")]
    Apply {
        /// The configuration's name.
        name: String,
        /// The API error.
        cause: kube::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(namespace: &str, name: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flmon.io/v1alpha1",
            "kind": "FLMonitor",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
        .expect("a DynamicObject")
    }

    #[test]
    fn a_monitor_that_does_not_parse_is_left_out_and_the_rest_still_serve() {
        let cache = MonitorCache::default();
        let mut buffer = BTreeMap::new();
        let good = object(
            "fl",
            "mnist",
            serde_json::json!({"selector": {"matchLabels": {"app": "mnist"}}}),
        );
        let bad = object(
            "fl",
            "broken",
            serde_json::json!({"selector": {"matchLabels": {"app": "x"}}, "agent": {"sampleInterval": "soon"}}),
        );
        cache.handle(watcher::Event::Init, &mut buffer);
        cache.handle(watcher::Event::InitApply(good.clone()), &mut buffer);
        cache.handle(watcher::Event::InitApply(bad), &mut buffer);
        assert!(!cache.is_ready());
        cache.handle(watcher::Event::InitDone, &mut buffer);
        assert!(cache.is_ready());
        let names: Vec<String> = cache.monitors_in("fl").into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["mnist"]);
        assert_eq!(cache.namespaces(), BTreeSet::from(["fl".to_owned()]));
        cache.handle(watcher::Event::Delete(good), &mut buffer);
        assert!(cache.monitors_in("fl").is_empty());
        assert!(cache.namespaces().is_empty());
    }
}
