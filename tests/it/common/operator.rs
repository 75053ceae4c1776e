//! Helpers shared by the operator's integration tests: install flmon's CRDs, run the operator
//! in-process against the test apiserver, apply YAML, and wait for conditions.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flmon_crds::FLMonitor;
use flmon_operator::cli::{Cli, Command, RunArgs};
use flmon_operator::metrics::ControllerMetrics;
use flmon_tests::Kube;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use tokio::sync::watch;

/// Installs flmon's CRDs (generated from the types, as `flmon-operator crd` prints them).
pub async fn install_flmon_crds(kube: &Kube, client: &Client) {
    let yaml = flmon_crds::all_crds_yaml().expect("CRDs render");
    kube.install_crds_yaml(client, &yaml)
        .await
        .expect("the apiserver accepts flmon's CRDs");
}

/// `flmon-operator run` arguments for a test replica.
pub fn run_args(namespace: &str, extra: &[&str]) -> RunArgs {
    let mut argv = vec![
        "flmon-operator",
        "run",
        "--namespace",
        namespace,
        "--metrics-addr",
        "127.0.0.1:0",
        "--prometheus-operator-recheck",
        "2s",
    ];
    // The webhook has tests of its own; these replicas run the controllers alone.
    if !extra.contains(&"--webhook-enabled") {
        argv.extend_from_slice(&["--webhook-enabled", "false"]);
    }
    if !extra.contains(&"--dashboard-addr") {
        argv.extend_from_slice(&["--dashboard-addr", "127.0.0.1:0"]);
    }
    if !extra.contains(&"--leader-election") {
        argv.extend_from_slice(&["--leader-election", "false"]);
    }
    argv.extend_from_slice(extra);
    match Cli::parse_args(argv).expect("test arguments parse").command {
        Command::Run(args) => *args,
        _ => unreachable!("run was asked for"),
    }
}

/// `run_args` for a leader-electing replica named `identity`, with a short Lease so tests see
/// takeovers within seconds, plus `extra`.
pub fn elected_args(namespace: &str, identity: &str, extra: &[&str]) -> RunArgs {
    let mut argv = vec![
        "--leader-election",
        "true",
        "--pod-name",
        identity,
        "--lease-duration",
        "4s",
        "--lease-renew-deadline",
        "3s",
        "--lease-retry-period",
        "500ms",
    ];
    argv.extend_from_slice(extra);
    run_args(namespace, &argv)
}

/// An operator replica running on its own thread and runtime, so it outlives the runtime of the
/// test that started it. Stopped (gracefully) on drop.
pub struct Operator {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    /// The replica's metrics.
    pub metrics: Arc<ControllerMetrics>,
}

impl Operator {
    /// Starts a replica with `args` against `kube`.
    pub fn start(kube: &'static Kube, args: RunArgs) -> Operator {
        Self::start_on(kube.kubeconfig().to_path_buf(), args)
    }

    /// Starts a replica with `args` against the apiserver of `kubeconfig`.
    pub fn start_on(kubeconfig: std::path::PathBuf, args: RunArgs) -> Operator {
        // FLMON_TEST_LOG=debug (any tracing filter) shows the replica's logs.
        if let Ok(filter) = std::env::var("FLMON_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let (stop, stopped) = watch::channel(false);
        let metrics = Arc::new(ControllerMetrics::default());
        let replica_metrics = metrics.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let client = client_for(&kubeconfig).await;
                flmon_operator::run::run_with_metrics(client, &args, stopped, replica_metrics)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        Operator {
            stop,
            thread: Some(thread),
            metrics,
        }
    }

    /// Stops the replica and returns how it ended.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop.send_replace(true);
        self.thread.take().map_or(Ok(()), |t| {
            t.join()
                .unwrap_or_else(|_| Err("the operator thread panicked".into()))
        })
    }

    /// Fails the test with the replica's error if it stopped within `grace` of starting.
    pub fn assert_started(mut self, grace: Duration) -> Operator {
        std::thread::sleep(grace);
        if !self.running() {
            let ended = self.thread.take().map(|t| t.join());
            panic!("the operator stopped right after starting: {ended:?}");
        }
        self
    }

    /// Whether the replica is still running.
    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client for the apiserver of `kubeconfig`.
pub async fn client_for(kubeconfig: &std::path::Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client builds")
}

/// Server-side applies every document of `yaml` into `namespace` (cluster-scoped kinds ignore it).
pub async fn apply_yaml(client: &Client, namespace: &str, yaml: &str) {
    use serde::Deserialize as _;
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde_yaml_ng::Value::deserialize(doc).expect("YAML parses");
        if value.is_null() {
            continue;
        }
        let mut object: DynamicObject = serde_yaml_ng::from_value(value).expect("a Kubernetes object");
        let types = object.types.clone().expect("apiVersion and kind");
        let (group, version) = types
            .api_version
            .split_once('/')
            .unwrap_or(("", &types.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{} is not served: {e}", types.kind));
        let api: Api<DynamicObject> = if capabilities.scope == Scope::Namespaced {
            object.metadata.namespace = Some(namespace.to_owned());
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let name = object.metadata.name.clone().expect("metadata.name");
        api.patch(
            &name,
            &PatchParams::apply("flmon-tests").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {namespace}/{name}: {e}", types.kind));
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A monitor's condition of `type_`.
pub fn condition<'a>(monitor: &'a FLMonitor, type_: &str) -> Option<&'a Condition> {
    monitor
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits until the monitor's condition `type_` has `status`, and returns the monitor.
pub async fn wait_condition(api: &Api<FLMonitor>, name: &str, type_: &str, status: &str) -> FLMonitor {
    eventually(
        &format!("{name}: {type_}={status}"),
        Duration::from_secs(60),
        || async {
            let monitor = api.get_opt(name).await.ok()??;
            (condition(&monitor, type_)?.status == status).then_some(monitor)
        },
    )
    .await
}

/// Prometheus Operator's kinds.
pub fn promop(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_ascii_lowercase());
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind),
        &plural,
    )
}

/// The shipped default AlertRules, moved into `namespace` (the operator's).
pub fn default_rules_yaml() -> String {
    std::fs::read_to_string(flmon_tests::repo_root().join("manifests/default-alertrules.yaml"))
        .expect("manifests/default-alertrules.yaml")
}
