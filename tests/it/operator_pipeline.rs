//! The operator's training pipeline end to end on the real apiserver with real agents: the
//! agent library serves each pod's `/v1/history` and `/metrics` on its own loopback address,
//! training events are posted to the agents' ingest listeners, and the operator (one replica,
//! polling every 300 ms) turns them into FLMonitor status, conditions, Events, pod annotations,
//! the report ConfigMap, the report folder and the dashboard.
//!
//! There is no kubelet here: this test plays its part by patching each pod's status to
//! `Running` with the pod IP its agent listens on (127.0.0.1 for the server, 127.0.0.2–4 for
//! the clients, and 127.0.0.9, where nothing listens, for a pod whose agent is unreachable).

#![allow(clippy::unwrap_used)] // A failure stops the test where it happened.

#[path = "common/operator.rs"]
mod operator;

use std::collections::BTreeMap;
use std::time::Duration;

use flmon_agent::{Agent, Config};
use flmon_crds::{AlertRule, FLMonitor, Phase};
use flmon_tests::Kube;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use operator::{Operator, condition, elected_args, eventually, install_flmon_crds, run_args};
use serde_json::json;

const MONITOR: &str = "digits";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the agent of pod `name` (uid `uid`) on `ip:port`, as the webhook would configure it.
async fn start_agent(ip: &str, port: u16, name: &str, uid: &str, namespace: &str, role: &str) -> Agent {
    let metrics_addr = format!("{ip}:{port}");
    let mut args = vec![
        "flmon-agent",
        "--metrics-addr",
        &metrics_addr,
        "--ingest-addr",
        "127.0.0.1:0",
        "--pod-name",
        name,
        "--pod-uid",
        uid,
        "--pod-namespace",
        namespace,
        "--monitor",
        MONITOR,
        "--role",
        role,
        "--collectors",
        "events",
    ];
    if role == "client" {
        args.extend_from_slice(&["--client-id", name]);
    }
    Agent::start(Config::from_args(args).unwrap()).await.unwrap()
}

/// Posts NDJSON training events to an agent's ingest listener, as the FL app does.
async fn post(agent: &Agent, events: &[serde_json::Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/events", agent.ingest_addr))
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

/// Global loss per round: falls from 2.3 to 0.45; the target is 0.5 (reached at round 12).
const LOSSES: [f64; 12] = [2.3, 1.9, 1.5, 1.2, 0.95, 0.85, 0.75, 0.68, 0.62, 0.57, 0.53, 0.45];

/// The events of rounds `rounds` for the server and each client: site-1 and site-2 train in
/// about 10 s, site-3 takes 25 s growing by 2 s a round (slower than 1.5 × the median in every
/// round, so a straggler, and slowing).
fn round_events(
    rounds: std::ops::RangeInclusive<usize>,
) -> (
    Vec<serde_json::Value>,
    BTreeMap<&'static str, Vec<serde_json::Value>>,
) {
    let mut server = Vec::new();
    let mut clients: BTreeMap<&'static str, Vec<serde_json::Value>> = BTreeMap::new();
    for round in rounds {
        let loss = LOSSES[round - 1];
        for (client, seconds) in [
            ("site-1", 10.0),
            ("site-2", 10.5),
            ("site-3", 25.0 + 2.0 * round as f64),
        ] {
            // No client_id: each client's agent fills in its own.
            clients.entry(client).or_default().push(json!({
                "type": "client_update", "run_id": "run-1", "round": round,
                "loss": loss * 1.1, "accuracy": 0.9 - loss / 3.0, "training_seconds": seconds, "samples": 600,
            }));
        }
        server.push(json!({
            "type": "round_end", "run_id": "run-1", "round": round, "global_loss": loss,
            "global_accuracy": 1.0 - loss / 3.0, "participants": 3, "expected_participants": 3,
            "duration_seconds": 30.0,
        }));
    }
    (server, clients)
}

fn pod(name: &str, role: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "fl-pipeline", "flmon.io/monitor": MONITOR},
            "annotations": {"flmon.io/role": role},
        },
        "spec": {"containers": [{"name": "app", "image": "python:3.12-slim"}]},
    }))
    .unwrap()
}

/// Plays the kubelet: the pod runs, at `ip`.
async fn mark_running(pods: &Api<Pod>, name: &str, ip: &str) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn get_text(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_histories_become_status_conditions_events_annotations_and_a_report() {
    let kube = Kube::shared();
    let client = kube.client().await;
    install_flmon_crds(kube, &client).await;
    let operator_namespace = kube.namespace("flmon-system").await;
    let ns = kube.namespace("pipeline").await;

    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), &ns);
    let monitor: FLMonitor = serde_json::from_value(json!({
        "apiVersion": "flmon.io/v1alpha1", "kind": "FLMonitor",
        "metadata": {"name": MONITOR},
        "spec": {
            "selector": {"matchLabels": {"app": "fl-pipeline"}},
            "analysis": {"targetLoss": 0.5, "expectedClients": 3},
            "prometheus": {"serviceMonitor": false, "rules": false, "scrapeInterval": "5s"},
            "grafana": {"dashboard": false},
        },
    }))
    .unwrap();
    monitors.create(&PostParams::default(), &monitor).await.unwrap();
    // A job-local rule that fires while the loss is above 1.0 (no `for`), then resolves.
    let rule: AlertRule = serde_json::from_value(json!({
        "apiVersion": "flmon.io/v1alpha1", "kind": "AlertRule",
        "metadata": {"name": "loss-above-one"},
        "spec": {
            "condition": {"metric": "globalLoss", "op": ">", "threshold": 1.0, "for": "0s"},
            "severity": "warning", "message": "Loss still above 1.0", "debounce": "0s",
        },
    }))
    .unwrap();
    Api::<AlertRule>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &rule)
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let layout = [
        ("fl-server", "server", "127.0.0.1"),
        ("site-1", "client", "127.0.0.2"),
        ("site-2", "client", "127.0.0.3"),
        ("site-3", "client", "127.0.0.4"),
        ("site-4", "client", "127.0.0.9"),
    ];
    let agent_port = free_port();
    let mut agents: BTreeMap<&str, Agent> = BTreeMap::new();
    for (name, role, ip) in layout {
        let created = pods
            .create(&PostParams::default(), &pod(name, role))
            .await
            .unwrap();
        if name != "site-4" {
            let uid = created.uid().unwrap();
            agents.insert(name, start_agent(ip, agent_port, name, &uid, &ns, role).await);
        }
        mark_running(&pods, name, ip).await;
    }

    let (server_events, client_events) = round_events(1..=4);
    post(&agents["fl-server"], &server_events).await;
    for (client, events) in &client_events {
        post(&agents[client], events).await;
    }

    let dashboard_port = free_port();
    let report_dir = tempfile::tempdir().unwrap();
    let dashboard_addr = format!("127.0.0.1:{dashboard_port}");
    let agent_port_text = agent_port.to_string();
    let args = run_args(
        &operator_namespace,
        &[
            "--poll-interval",
            "300ms",
            "--agent-port",
            &agent_port_text,
            "--dashboard-addr",
            &dashboard_addr,
            "--report-dir",
            report_dir.path().to_str().unwrap(),
        ],
    );
    let replica = Operator::start(kube, args).assert_started(Duration::from_millis(500));

    // Rounds 1-4: Training, the loss alert fires.
    let training = eventually("round 4 in status", Duration::from_secs(60), || async {
        let m = monitors.get(MONITOR).await.ok()?;
        let s = m.status.as_ref()?;
        (s.round == Some(4) && !s.firing_alerts.is_empty()).then_some(m)
    })
    .await;
    let status = training.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Training));
    assert_eq!(status.global_loss, Some(1.2));
    assert_eq!(status.active_clients, Some(3));
    assert_eq!(status.firing_alerts[0].rule, format!("{ns}/loss-above-one"));
    assert_eq!(condition(&training, "Converged").unwrap().status, "False");
    assert_eq!(
        condition(&training, "Converged").unwrap().reason,
        "TargetNotReached"
    );

    // Rounds 5-12 arrive through the same cursors: Converged at round 12, the alert resolved.
    // (A client's trend is computed over closed rounds, those more than window + 1 = 6 rounds
    // behind the newest: rounds 1-5 at round 12.)
    let (server_events, client_events) = round_events(5..=12);
    post(&agents["fl-server"], &server_events).await;
    for (client, events) in &client_events {
        post(&agents[client], events).await;
    }
    let converged = eventually("Converged at round 12", Duration::from_secs(60), || async {
        let m = monitors.get(MONITOR).await.ok()?;
        let s = m.status.as_ref()?;
        (s.round == Some(12) && s.phase == Some(Phase::Converged) && s.firing_alerts.is_empty()).then_some(m)
    })
    .await;
    let status = converged.status.clone().unwrap();
    assert_eq!(status.global_loss, Some(0.45));
    assert_eq!(status.global_accuracy, Some(1.0 - 0.45 / 3.0));
    assert_eq!(status.stragglers, ["site-3"]);
    let convergence = status.convergence.clone().unwrap();
    assert_eq!(convergence.best_loss, Some(0.45));
    assert_eq!(convergence.rounds_without_improvement, Some(0));
    let state_of = |type_: &str| {
        let c = condition(&converged, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    };
    assert_eq!(state_of("Converged"), ("True".into(), "TargetReached".into()));
    assert_eq!(state_of("Stalled").0, "False");
    assert_eq!(state_of("Diverged").0, "False");
    assert_eq!(
        state_of("LowParticipation"),
        ("False".into(), "ParticipationSufficient".into())
    );

    // Client pods carry their trend and straggler flag; the unreachable pod is left alone.
    let annotations = eventually(
        "site-3 annotated as a slowing straggler",
        Duration::from_secs(30),
        || async {
            let a = pods.get("site-3").await.ok()?.metadata.annotations?;
            (a.get("flmon.io/straggler").map(String::as_str) == Some("true")
                && a.get("flmon.io/client-trend").map(String::as_str) == Some("slowing"))
            .then_some(a)
        },
    )
    .await;
    assert_eq!(annotations["flmon.io/straggler"], "true");
    let site1 = pods.get("site-1").await.unwrap().metadata.annotations.unwrap();
    assert_eq!(site1["flmon.io/straggler"], "false");
    assert_eq!(site1["flmon.io/client-trend"], "stable");
    let site4 = pods.get("site-4").await.unwrap().metadata.annotations.unwrap();
    assert!(!site4.contains_key("flmon.io/straggler"));
    let server = pods.get("fl-server").await.unwrap().metadata.annotations.unwrap();
    assert!(
        !server.contains_key("flmon.io/straggler"),
        "the server is no client"
    );

    // The final report lives in a ConfigMap owned by the monitor.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let report = eventually("the report ConfigMap", Duration::from_secs(30), || async {
        configmaps
            .get_opt(&format!("{MONITOR}-flmon-report"))
            .await
            .ok()?
    })
    .await;
    let markdown = &report.data.as_ref().unwrap()["report.md"];
    assert!(markdown.contains(MONITOR), "{markdown}");
    assert!(markdown.contains("site-3"), "{markdown}");
    assert_eq!(
        report.owner_references()[0].uid,
        converged.uid().unwrap(),
        "owned by the monitor"
    );

    // Events of the transitions and of the alert.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reasons = eventually(
        "the Converged and alert Events",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            let reasons: Vec<String> = list
                .items
                .iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(MONITOR))
                .filter_map(|e| e.reason.clone())
                .collect();
            ["Converged", "PhaseChanged", "AlertFiring", "AlertResolved"]
                .iter()
                .all(|r| reasons.iter().any(|x| x == r))
                .then_some(reasons)
        },
    )
    .await;
    assert!(!reasons.iter().any(|r| r == "Stalled"), "{reasons:?}");

    // The AlertRule's status says when it last fired.
    let rule = Api::<AlertRule>::namespaced(client.clone(), &ns)
        .get("loss-above-one")
        .await
        .unwrap();
    assert!(rule.status.unwrap().last_fired.is_some());

    // The operator's /metrics gauge, the report folder and the dashboard.
    let mut exposition = String::new();
    replica.metrics.render(&mut exposition);
    assert!(
        exposition.contains(&format!(
            "flmon_monitor_rounds_without_improvement{{namespace=\"{ns}\",flmon_monitor=\"{MONITOR}\"}} 0"
        )),
        "{exposition}"
    );
    let folder = report_dir.path().join(&ns).join(MONITOR);
    eventually("the report folder", Duration::from_secs(30), || async {
        (folder.join("report.md").exists() && folder.join("training_progress.png").exists()).then_some(())
    })
    .await;
    let (code, index) = get_text(&format!("http://{dashboard_addr}/")).await;
    assert_eq!(code, 200);
    assert!(index.contains(MONITOR) && index.contains("Converged"), "{index}");
    let (code, page) = get_text(&format!("http://{dashboard_addr}/monitors/{ns}/{MONITOR}")).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<svg") && page.contains("site-3"),
        "{}",
        &page[..page.len().min(2000)]
    );
    let (code, _) = get_text(&format!("http://{dashboard_addr}/monitors/{ns}/nope")).await;
    assert_eq!(code, 404);

    // Nothing changes now: no more status writes over several polls.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = replica.metrics.status_writes();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replica.metrics.status_writes(),
        writes,
        "status written while nothing changed"
    );

    replica.stop().unwrap();
    for (_, agent) in agents {
        agent.stop().await.unwrap();
    }
}

/// The events of `rounds` rounds of one run, as the server posts them.
fn server_rounds(run: &str, rounds: std::ops::RangeInclusive<u64>) -> Vec<serde_json::Value> {
    rounds
        .map(|round| json!({"type": "round_end", "run_id": run, "round": round, "global_loss": 1.0 / round as f64}))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_is_read_again_from_the_start_and_a_gone_one_fails_fast() {
    use flmon_operator::pipeline::agent::{http_client, read_history};

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client(Duration::from_secs(2)).unwrap();
    let first = start_agent("127.0.0.1", port, "fl-server", "uid-1", "fl", "server").await;
    post(&first, &server_rounds("a", 1..=30)).await;
    let read = read_history(&http, &base, 0).await.unwrap();
    let rounds: usize = read.documents.iter().map(|d| d.rounds.len()).sum();
    assert_eq!(rounds, 30);
    assert!(!read.restarted);
    let cursor = read.next;
    let again = read_history(&http, &base, cursor).await.unwrap();
    assert_eq!(
        again.documents.iter().map(|d| d.rounds.len()).sum::<usize>(),
        0,
        "nothing new"
    );
    assert_eq!(again.next, cursor);

    // The agent's container restarts: its ring buffers and counter start over.
    first.stop().await.unwrap();
    let second = start_agent("127.0.0.1", port, "fl-server", "uid-1", "fl", "server").await;
    post(&second, &server_rounds("b", 1..=2)).await;
    let read = read_history(&http, &base, cursor).await.unwrap();
    assert!(read.restarted);
    let rounds: Vec<u64> = read
        .documents
        .iter()
        .flat_map(|d| d.rounds.iter().map(|r| r.round))
        .collect();
    assert_eq!(rounds, [1, 2]);
    assert!(read.next < cursor);
    second.stop().await.unwrap();

    // Nothing listens any more: an error naming the URL, quickly.
    let started = std::time::Instant::now();
    let error = read_history(&http, &base, 0).await.unwrap_err();
    assert!(error.to_string().contains(&base), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_forwards_dashboard_requests_to_the_leader_or_says_why_it_cannot() {
    let kube = Kube::shared();
    let client = kube.client().await;
    install_flmon_crds(kube, &client).await;
    let operator_namespace = kube.namespace("flmon-system").await;
    let port = free_port();
    let replica = |identity: &str, ip: &str| {
        let addr = format!("{ip}:{port}");
        let args = elected_args(&operator_namespace, identity, &["--dashboard-addr", &addr]);
        Operator::start(kube, args)
    };
    let leader = replica("replica-a", "127.0.0.1");
    eventually("replica-a to lead", Duration::from_secs(45), || async {
        leader.metrics.is_leader().then_some(())
    })
    .await;
    let follower = replica("replica-b", "127.0.0.2").assert_started(Duration::from_millis(500));

    // Playing the kubelet for the leader's pod: it runs at 127.0.0.1, where its dashboard listens.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &operator_namespace);
    pods.create(&PostParams::default(), &pod("replica-a", "operator"))
        .await
        .unwrap();
    mark_running(&pods, "replica-a", "127.0.0.1").await;

    let (code, body) = get_text(&format!("http://127.0.0.2:{port}/")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("federated-learning monitors"), "{body}");
    assert!(!follower.metrics.is_leader());

    // Without the leader's pod the follower cannot reach it, and says so.
    pods.delete("replica-a", &Default::default()).await.unwrap();
    let body = eventually("a 503 from the follower", Duration::from_secs(30), || async {
        let (code, body) = get_text(&format!("http://127.0.0.2:{port}/")).await;
        (code == 503).then_some(body)
    })
    .await;
    assert!(body.contains("the leader is replica-a"), "{body}");
    follower.stop().unwrap();
    leader.stop().unwrap();
}
