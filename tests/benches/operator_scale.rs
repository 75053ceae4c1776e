//! Benchmark (not a test) of the controller at scale on a real kube-apiserver, printing what it
//! measured:
//!
//! 1. 500 FLMonitors × 20 pods: the pods are created and marked Running first (there is no
//!    kubelet: the benchmark patches their status itself), then the 500 monitors are created at
//!    once while one operator replica runs; time until every monitor is `Ready=True`, with its
//!    Service, ServiceMonitor, PrometheusRule and dashboard applied. Target: ≤ 60 s.
//! 2. Once the monitors have settled (the training pipeline's first analysis also writes each
//!    monitor's status, after Ready), one quiet minute: status writes counted by the operator, and
//!    independently by a watch on FLMonitors (each change attributed to the controller or the
//!    analysis by the fields it touched) and by comparing every monitor's resourceVersion before
//!    and after. Target: zero.
//!
//! Run: `cargo bench -p flmon-tests --bench operator_scale` (add `--profile dev` to skip the
//! release build). `FLMON_SCALE_MONITORS` and `FLMON_SCALE_PODS` change the sizes.

#[path = "../it/common/operator.rs"]
mod operator;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flmon_crds::FLMonitor;
use flmon_tests::Kube;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use operator::{Operator, apply_yaml, install_flmon_crds, run_args};
use serde_json::json;
use tokio::task::JoinSet;

/// Monitors per namespace: 25 namespaces for 500 monitors, as several teams' jobs would spread.
const MONITORS_PER_NAMESPACE: usize = 20;
/// Requests in flight while setting up.
const SETUP_CONCURRENCY: usize = 32;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `jobs` with at most `SETUP_CONCURRENCY` at once.
async fn run_all<F>(jobs: Vec<F>)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut set = JoinSet::new();
    for job in jobs {
        if set.len() >= SETUP_CONCURRENCY {
            let _ = set.join_next().await;
        }
        set.spawn(job);
    }
    while set.join_next().await.is_some() {}
}

fn pod(name: &str, job: &str, role: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": job }, "annotations": { "flmon.io/role": role } },
        "spec": { "containers": [{ "name": "fl", "image": "registry.example/fl:1" }] },
    }))
    .expect("pod")
}

fn monitor(name: &str) -> FLMonitor {
    serde_json::from_value(json!({
        "apiVersion": "flmon.io/v1alpha1", "kind": "FLMonitor",
        "metadata": { "name": name },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "prometheus": { "labels": { "release": "kube-prometheus-stack" } },
        },
    }))
    .expect("monitor")
}

fn key(monitor: &FLMonitor) -> String {
    format!(
        "{}/{}",
        monitor.namespace().unwrap_or_default(),
        monitor.name_any()
    )
}

/// Which part of the operator wrote a status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// The controller: observedGeneration, generated objects, pod audit, Ready, MonitoringReady, AgentsInjected.
    Controller,
    /// The training pipeline: phase, round, loss, convergence, its conditions.
    Analysis,
}

fn classify(before: &serde_json::Value, after: &serde_json::Value) -> Writer {
    const FIELDS: [&str; 4] = ["observedGeneration", "generated", "pods", "outdatedAgents"];
    const CONDITIONS: [&str; 3] = ["Ready", "MonitoringReady", "AgentsInjected"];
    let condition = |status: &serde_json::Value, type_: &str| {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
    };
    let controller = FIELDS.iter().any(|f| before[*f] != after[*f])
        || CONDITIONS
            .iter()
            .any(|t| condition(before, t) != condition(after, t));
    if controller {
        Writer::Controller
    } else {
        Writer::Analysis
    }
}

fn is_ready(monitor: &FLMonitor) -> bool {
    monitor.status.as_ref().is_some_and(|s| {
        s.observed_generation == monitor.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn create_pods(client: &Client, namespaces: &[String], pods_per_monitor: usize) -> Duration {
    let started = Instant::now();
    let mut jobs = Vec::new();
    for (n, namespace) in namespaces.iter().enumerate() {
        for m in 0..MONITORS_PER_NAMESPACE {
            let job = format!("job-{n}-{m}");
            for p in 0..pods_per_monitor {
                let (client, namespace, job) = (client.clone(), namespace.clone(), job.clone());
                jobs.push(async move {
                    let pods: Api<Pod> = Api::namespaced(client, &namespace);
                    let role = if p == 0 { "server" } else { "client" };
                    let name = format!("{job}-{p}");
                    pods.create(&PostParams::default(), &pod(&name, &job, role))
                        .await
                        .expect("create pod");
                    // Play the kubelet: the pod runs, with an IP.
                    let ip = format!("10.{}.{}.{}", n % 250, m, p + 1);
                    let status = json!({ "status": {
                        "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }],
                        "conditions": [{ "type": "Ready", "status": "True" }],
                    }});
                    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .expect("mark the pod Running");
                });
            }
        }
    }
    run_all(jobs).await;
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let monitors_total = size("FLMON_SCALE_MONITORS", 500);
    let pods_per_monitor = size("FLMON_SCALE_PODS", 20);
    let namespaces_total = monitors_total.div_ceil(MONITORS_PER_NAMESPACE);
    let kube: &'static Kube = Box::leak(Box::new(Kube::start().expect("a private apiserver starts")));
    let client = kube.client().await;
    install_flmon_crds(kube, &client).await;
    kube.install_prometheus_operator_crds(&client)
        .await
        .expect("Prometheus Operator CRDs");
    let operator_namespace = "flmon-system".to_owned();
    let mut namespaces = Vec::new();
    for n in 0..=namespaces_total {
        let name = if n == 0 {
            operator_namespace.clone()
        } else {
            format!("team-{n}")
        };
        let namespace: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": name } })).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        if n > 0 {
            namespaces.push(name);
        }
    }
    apply_yaml(&client, &operator_namespace, &operator::default_rules_yaml()).await;
    println!(
        "setting up: {} monitors × {pods_per_monitor} pods in {namespaces_total} namespaces",
        monitors_total
    );
    let pods_took = create_pods(&client, &namespaces, pods_per_monitor).await;
    println!(
        "  {} pods created and marked Running in {:.1} s",
        monitors_total * pods_per_monitor,
        pods_took.as_secs_f64()
    );

    let replica =
        Operator::start(kube, run_args(&operator_namespace, &[])).assert_started(Duration::from_secs(2));
    // Let the operator list and settle (the default rules get their status) before the burst.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let created = Instant::now();
    let mut jobs = Vec::new();
    for (n, namespace) in namespaces.iter().enumerate() {
        for m in 0..MONITORS_PER_NAMESPACE.min(monitors_total - n * MONITORS_PER_NAMESPACE) {
            let (client, namespace) = (client.clone(), namespace.clone());
            jobs.push(async move {
                Api::<FLMonitor>::namespaced(client, &namespace)
                    .create(&PostParams::default(), &monitor(&format!("job-{n}-{m}")))
                    .await
                    .expect("create monitor");
            });
        }
    }
    run_all(jobs).await;
    let creating = created.elapsed();
    let all: Api<FLMonitor> = Api::all(client.clone());
    let mut last_report = Instant::now();
    let all_ready = loop {
        let list = all.list(&ListParams::default()).await.expect("list monitors");
        let ready = list.items.iter().filter(|m| is_ready(m)).count();
        if ready == monitors_total {
            break created.elapsed();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  … {ready}/{monitors_total} Ready after {:.0} s",
                created.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        assert!(
            created.elapsed() < Duration::from_secs(600),
            "not all monitors became Ready in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let writes_at_ready = replica.metrics.status_writes();
    let applies_at_ready = replica.metrics.applies();
    println!(
        "1. {monitors_total} FLMonitors created in {:.1} s; all Ready {:.1} s after the first create (target ≤ 60 s)",
        creating.as_secs_f64(),
        all_ready.as_secs_f64()
    );
    println!(
        "   {} status writes and {} server-side applies until then ({:.2} writes per monitor)",
        writes_at_ready,
        applies_at_ready,
        writes_at_ready as f64 / monitors_total as f64
    );

    // Watch every change to the monitors from now on, attributing each to the part of the
    // operator whose status fields it touched.
    let changes = Arc::new(Mutex::new(Vec::<(Instant, Writer)>::new()));
    let watch = {
        use futures::StreamExt as _;
        let changes = changes.clone();
        let all = all.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(all, watcher::Config::default()));
            let mut initial = true;
            let mut seen: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => initial = false,
                    Ok(watcher::Event::InitApply(m)) => {
                        seen.insert(key(&m), serde_json::to_value(&m).unwrap_or_default());
                    }
                    Ok(watcher::Event::Apply(m)) if !initial => {
                        let now = serde_json::to_value(&m).unwrap_or_default();
                        let before = seen.insert(key(&m), now.clone()).unwrap_or_default();
                        let writer = classify(&before["status"], &now["status"]);
                        if let Ok(mut changes) = changes.lock() {
                            changes.push((Instant::now(), writer));
                        }
                    }
                    _ => {}
                }
            }
        })
    };
    // The training pipeline's first analysis of 500 monitors (conditions such as Converged=False
    // NoTarget) arrives after Ready: wait until no monitor has changed for 10 s.
    let settle_started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let last = changes.lock().ok().and_then(|c| c.last().map(|(at, _)| *at));
        if last.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            break;
        }
        assert!(
            settle_started.elapsed() < Duration::from_secs(600),
            "the monitors never settled"
        );
    }
    let settled = created.elapsed() - Duration::from_secs(10);
    let by_writer = |from: usize| {
        let changes = changes.lock().map(|c| c[from..].to_vec()).unwrap_or_default();
        let controller = changes.iter().filter(|(_, w)| *w == Writer::Controller).count();
        (controller, changes.len() - controller)
    };
    let (controller_settling, pipeline_settling) = by_writer(0);
    println!(
        "   settled (no change for 10 s) {:.1} s after the first create; after all Ready: {controller_settling} \
         controller and {pipeline_settling} analysis status writes (its first round of conditions)",
        settled.as_secs_f64()
    );

    let before: BTreeMap<String, String> = all
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|m| (key(m), m.resource_version().unwrap_or_default()))
        .collect();
    let from = changes.lock().map(|c| c.len()).unwrap_or_default();
    let writes_before = replica.metrics.status_writes();
    let reconciles_before = replica.metrics.reconciles("FLMonitor", "success");
    tokio::time::sleep(Duration::from_secs(60)).await;
    watch.abort();
    let after = all.list(&ListParams::default()).await.expect("list");
    let changed = after
        .items
        .iter()
        .filter(|m| before.get(&key(m)) != m.resource_version().as_ref())
        .count();
    let writes = replica.metrics.status_writes() - writes_before;
    let reconciles = replica.metrics.reconciles("FLMonitor", "success") - reconciles_before;
    let (controller_quiet, pipeline_quiet) = by_writer(from);
    println!(
        "2. over the next 60 s: {writes} status writes counted by the operator; a watch saw {controller_quiet} \
         controller and {pipeline_quiet} analysis changes; {changed} monitors with a new resourceVersion; \
         {reconciles} reconciles ran (target: 0 writes)"
    );
    drop(replica);
}
