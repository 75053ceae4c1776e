//! FLMonitor and AlertRule reconcilers: validate → build → apply → status.
//!
//! - [`validate`], [`rules`]: checks the CRD schema cannot express, and AlertRule → PromQL;
//! - [`build`]: the pure function from a monitor and its rules to the generated objects;
//! - [`apply`]: server-side apply, deletes, and the Prometheus Operator probe;
//! - [`status`]: conditions that change only on transitions, status written only on change;
//! - [`monitor`], [`alertrule`]: the two reconcilers; [`run`] starts both.

pub mod alertrule;
pub mod apply;
pub mod build;
pub mod error;
pub mod monitor;
pub mod rules;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flmon_crds::{AlertRule, FLMonitor, names};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::metrics::ControllerMetrics;
use crate::webhook::AgentDefaults;
use apply::PrometheusOperatorProbe;
use build::{LABEL_MANAGED_BY, LABEL_MONITOR_NAMESPACE, MANAGED_BY};

pub use error::Error;

/// Operator settings the controller's decisions depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The operator's namespace: AlertRules here are cluster-wide defaults.
    pub operator_namespace: String,
    /// Namespaces besides a monitor's own that may receive its dashboard ConfigMap.
    pub dashboard_namespaces: Vec<String>,
    /// URL prefixes AlertRules may send notifications to; none when empty.
    pub notify_url_prefixes: Vec<String>,
    /// The agent the webhook injects; with it, the controller audits each monitor's pods
    /// (AgentsInjected, `status.pods`, `status.outdatedAgents`). Without it, it does not.
    pub agent_defaults: Option<AgentDefaults>,
}

/// How long an applied fingerprint is trusted before a reconcile applies again anyway.
const APPLIED_TTL: Duration = Duration::from_secs(240);

/// What each monitor's last successful apply wrote (a fingerprint), so that a reconcile with
/// nothing new to write makes no API calls. Entries expire, and any change to a generated
/// object drops its monitor's entry, so drift is repaired.
#[derive(Debug, Default)]
pub struct AppliedCache {
    entries: Mutex<HashMap<(String, String), (u64, Instant)>>,
}

impl AppliedCache {
    /// Whether `fingerprint` was applied for the monitor within the TTL.
    pub fn is_fresh(&self, key: &(String, String), fingerprint: u64) -> bool {
        self.entries.lock().is_ok_and(|e| {
            e.get(key)
                .is_some_and(|(f, at)| *f == fingerprint && at.elapsed() < APPLIED_TTL)
        })
    }

    /// Records a successful apply.
    pub fn remember(&self, key: (String, String), fingerprint: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, (fingerprint, Instant::now()));
        }
    }

    /// Forgets a monitor's entry (one of its objects changed).
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&(namespace.to_owned(), name.to_owned()));
        }
    }
}

/// Live pods as the controller's pod watch last showed them (managed fields dropped). Kept by
/// the watch's mapper rather than by a separate reflector, so that a reconcile triggered by a
/// pod event always sees that event's pod.
#[derive(Debug, Default)]
pub struct PodCache {
    pods: Mutex<HashMap<(String, String), Arc<Pod>>>,
}

impl PodCache {
    /// Records a pod from a watch event; a pod being deleted is dropped. Returns it.
    pub fn observe(&self, mut pod: Pod) -> Arc<Pod> {
        pod.metadata.managed_fields = None;
        let pod = Arc::new(pod);
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        if let Ok(mut pods) = self.pods.lock() {
            if pod.metadata.deletion_timestamp.is_some() {
                pods.remove(&key);
            } else {
                pods.insert(key, pod.clone());
            }
        }
        pod
    }

    /// Lists every pod into the cache (paginated).
    ///
    /// # Errors
    /// The apiserver's error.
    pub async fn prime(&self, client: &Client) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::all(client.clone());
        let mut params = kube::api::ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await?;
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            for pod in page.items {
                self.observe(pod);
            }
            match next {
                Some(token) => params.continue_token = Some(token),
                None => return Ok(()),
            }
        }
    }

    /// The cached pods of a namespace.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods.lock().map_or_else(
            |_| Vec::new(),
            |pods| {
                pods.iter()
                    .filter(|((ns, _), _)| ns == namespace)
                    .map(|(_, pod)| pod.clone())
                    .collect()
            },
        )
    }
}

/// What reconcilers share.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Operator settings.
    pub settings: Settings,
    /// The operator's metrics.
    pub metrics: Arc<ControllerMetrics>,
    /// Whether Prometheus Operator's CRDs are installed (cached).
    pub prometheus_operator: PrometheusOperatorProbe,
    /// Every AlertRule, kept current by the AlertRule controller's watch.
    pub rules: Store<AlertRule>,
    /// Every FLMonitor, kept current by the FLMonitor controller's watch.
    pub monitors: Store<FLMonitor>,
    /// Pods as the pod watch last showed them, for the agent audit; `None` when not audited.
    pub pods: Option<Arc<PodCache>>,
    /// Fingerprints of what was applied last.
    pub applied: AppliedCache,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Tuning of the controllers.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Reconciles running at once per controller.
    pub concurrency: u16,
    /// How long the Prometheus Operator probe's answer is kept (also how soon a monitor waiting
    /// for those CRDs is reconciled again).
    pub probe_ttl: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            concurrency: 16,
            probe_ttl: Duration::from_secs(30),
        }
    }
}

/// The monitor a generated object belongs to, from its labels: `flmon.io/monitor`, and
/// `flmon.io/monitor-namespace` for dashboards placed in another namespace.
fn owner_of(
    labels: &std::collections::BTreeMap<String, String>,
    namespace: Option<String>,
) -> Option<(String, String)> {
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    let name = labels.get(names::LABEL_MONITOR)?.clone();
    let namespace = labels.get(LABEL_MONITOR_NAMESPACE).cloned().or(namespace)?;
    Some((namespace, name))
}

/// Waits until a store has listed its objects; false if its writer went away first.
///
/// The store's readiness future wakes only its last poller (a controller's own runner also
/// waits on it), so it is polled again now and then rather than awaited once.
async fn wait_ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(result) => return result.is_ok(),
            Err(_elapsed) => {}
        }
    }
}

/// Runs the AlertRule and FLMonitor controllers until `shutdown` completes.
///
/// The AlertRule controller starts first and its store fills before monitors are reconciled,
/// so no PrometheusRule is ever written without the rules that exist.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<ControllerMetrics>,
    tuning: Tuning,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let config = Config::default().concurrency(tuning.concurrency);
    let rules_api: Api<AlertRule> = Api::all(client.clone());
    let rule_controller =
        Controller::new(rules_api.clone(), watcher::Config::default()).with_config(config.clone());
    let rules = rule_controller.store();
    let monitors = Controller::new(Api::<FLMonitor>::all(client.clone()), watcher::Config::default())
        .with_config(config);
    let monitor_store = monitors.store();
    let pods = settings
        .agent_defaults
        .is_some()
        .then(|| Arc::new(PodCache::default()));
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings,
        metrics,
        prometheus_operator: PrometheusOperatorProbe::new(tuning.probe_ttl),
        rules: rules.clone(),
        monitors: monitor_store.clone(),
        pods: pods.clone(),
        applied: AppliedCache::default(),
    });
    let rule_task = rule_controller
        .graceful_shutdown_on(shutdown.clone())
        .run(alertrule::reconcile, alertrule::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "AlertRule controller event");
            }
        });
    let rule_task = tokio::spawn(rule_task);
    tracing::debug!("waiting for the AlertRule watch to list the rules");
    if !wait_ready(&rules).await {
        tracing::error!("a watch stopped before it listed its objects");
        return;
    }
    if let Some(cache) = &pods {
        // Fill the pod cache before the first reconcile, so that no monitor is first audited
        // against a partly listed cache (each later pod event would then write its status again).
        if let Err(error) = cache.prime(&client).await {
            tracing::warn!(
                error = %error::describe(&error),
                "failed to list pods; the agent audit fills in as pods are watched"
            );
        }
    }
    tracing::info!(
        rules = rules.state().len(),
        "AlertRules listed; starting the FLMonitor controller"
    );
    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let on_service = ctx.clone();
    let on_configmap = ctx.clone();
    let monitors = if let Some(pod_cache) = ctx.pods.clone() {
        monitors.watches(Api::<Pod>::all(client.clone()), watcher::Config::default(), {
            let monitor_store = monitor_store.clone();
            move |pod: Pod| {
                // The cache is updated here, before the reconciles this event triggers run, so
                // they audit with the pod as this event shows it.
                let pod = pod_cache.observe(pod);
                // The monitors that select the pod or that it names: their agent audit changes.
                let inject = pod
                    .annotations()
                    .get(names::ANNOTATION_INJECT)
                    .map(|v| v.trim().to_owned());
                monitor_store
                    .state()
                    .into_iter()
                    .filter(|m| m.metadata.namespace == pod.metadata.namespace)
                    .filter(|m| {
                        inject.as_deref() == Some(m.name_any().as_str())
                            || Selector::try_from(m.spec.selector.clone())
                                .is_ok_and(|s| s.matches(pod.labels()))
                    })
                    .map(|m| ObjectRef::from_obj(m.as_ref()))
                    .collect::<Vec<_>>()
            }
        })
    } else {
        monitors
    };
    let monitor_task = monitors
        .watches(
            Api::<Service>::all(client.clone()),
            managed.clone(),
            move |service: Service| {
                let owner = owner_of(service.labels(), service.namespace());
                if let Some((namespace, name)) = &owner {
                    on_service.applied.forget(namespace, name);
                }
                owner.map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
            },
        )
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            managed,
            move |map: ConfigMap| {
                let owner = owner_of(map.labels(), map.namespace());
                if let Some((namespace, name)) = &owner {
                    on_configmap.applied.forget(namespace, name);
                }
                owner.map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
            },
        )
        .watches(rules_api, watcher::Config::default(), {
            let operator_namespace = ctx.settings.operator_namespace.clone();
            move |rule: AlertRule| {
                // Every monitor the rule may concern, whatever its selector says now: a selector
                // that changed must also release the monitors it used to select.
                let rule_namespace = rule.namespace().unwrap_or_default();
                monitor_store
                    .state()
                    .into_iter()
                    .filter(|m| {
                        rule_namespace == operator_namespace || m.namespace() == Some(rule_namespace.clone())
                    })
                    .map(|m| ObjectRef::from_obj(m.as_ref()))
                    .collect::<Vec<_>>()
            }
        })
        .graceful_shutdown_on(shutdown)
        .run(monitor::reconcile, monitor::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "FLMonitor controller event");
            }
        });
    monitor_task.await;
    let _ = rule_task.await;
}
