//! The notifier against a real HTTP receiver on 127.0.0.1: Alertmanager's `/api/v2/alerts` gets
//! every firing alert at each evaluation and exactly one resolve; the webhook gets only the
//! debounced notifications; URLs outside the allowed prefixes are never requested; a receiver
//! that fails or is down is counted, not fatal.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::post;
use flmon_crds::names::metrics as m;
use flmon_crds::{AlertRule, Phase};
use flmon_operator::alerts::{Evaluator, MonitorRef, Notifier, NotifierConfig, Sample, Target};
use serde_json::{Value, json};

/// What the receiver got: (path, JSON body).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// Starts a receiver answering `status` to every POST; returns its base URL and what it got.
async fn receiver(status: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    async fn record(
        State((received, status)): State<(Received, StatusCode)>,
        uri: Uri,
        body: axum::Json<Value>,
    ) -> StatusCode {
        received
            .lock()
            .expect("lock")
            .push((uri.path().to_owned(), body.0));
        status
    }
    let app = Router::new()
        .route("/{*path}", post(record))
        .with_state((received.clone(), status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{address}"), received)
}

fn take(received: &Received) -> Vec<(String, Value)> {
    std::mem::take(&mut *received.lock().expect("lock"))
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn rule(alertmanager: &str, webhook: &str) -> AlertRule {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: flmon.io/v1alpha1
kind: AlertRule
metadata: {{name: high-cpu-usage, namespace: flmon-system}}
spec:
  condition: {{metric: cpuUsage, op: '>', threshold: 90, for: 1m}}
  severity: warning
  message: CPU usage is critically high
  notify: {{alertmanagerUrl: '{alertmanager}', webhookUrl: '{webhook}'}}"
    ))
    .expect("test rule parses")
}

fn mnist() -> MonitorRef {
    MonitorRef {
        namespace: "fl".into(),
        name: "mnist".into(),
        phase: Some(Phase::Training),
        scrape_interval: Duration::from_secs(30),
    }
}

fn cpu(pod: &str, value: f64, at: u64) -> Sample {
    Sample::new(m::CPU_USAGE_PERCENT, &[("pod", pod)], value, t(at))
}

fn notifier(prefix: &str) -> Notifier {
    Notifier::new(NotifierConfig {
        allowed_prefixes: vec![prefix.to_owned()],
        evaluation_interval: Duration::from_secs(30),
        external_labels: [("prometheus".to_owned(), "monitoring/k8s".to_owned())].into(),
        generator_url: Some("http://flmon-operator.flmon-system:8080/monitors/{namespace}/{name}".into()),
        timeout: Duration::from_secs(5),
    })
    .expect("notifier builds")
}

#[tokio::test]
async fn alertmanager_gets_every_firing_alert_at_each_evaluation_and_one_resolve() {
    let (base, received) = receiver(StatusCode::OK).await;
    let rule = rule(&format!("{base}/am/"), &format!("{base}/hook"));
    let notifier = notifier(&base);
    let mut evaluator = Evaluator::new();
    let mut evaluate = |now: u64, samples: &[Sample]| evaluator.evaluate(t(now), &mnist(), &[&rule], samples);

    // Pending: nothing is sent.
    let pending = evaluate(0, &[cpu("a", 95.0, 0)]);
    assert!(notifier.send(&pending).await.is_empty());
    assert!(take(&received).is_empty());

    // Firing at 60 s: Alertmanager gets the alert, the webhook its first notification.
    let firing = evaluate(60, &[cpu("a", 95.0, 60)]);
    let outcomes = notifier.send(&firing).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let mut got = take(&received);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "/am/api/v2/alerts");
    assert_eq!(
        got[0].1,
        json!([{
            "labels": {
                "alertname": "HighCpuUsage", "severity": "warning",
                "flmon_rule": "flmon-system/high-cpu-usage",
                "namespace": "fl", "flmon_monitor": "mnist", "pod": "a",
                "prometheus": "monitoring/k8s",
            },
            "annotations": {
                "summary": "CPU usage is critically high",
                "description": "CPU usage is critically high on FLMonitor fl/mnist: cpuUsage > 90 (AlertRule flmon-system/high-cpu-usage).",
            },
            "startsAt": "2023-11-14T22:14:20.000Z",
            // 60 s + 4 × max(30 s, 1 min)
            "endsAt": "2023-11-14T22:18:20.000Z",
            "generatorURL": "http://flmon-operator.flmon-system:8080/monitors/fl/mnist",
        }])
    );
    assert_eq!(got[1].0, "/hook");
    assert_eq!(got[1].1["version"], "1");
    assert_eq!(got[1].1["monitor"], "fl/mnist");
    assert_eq!(got[1].1["alerts"][0]["status"], "firing");
    assert_eq!(got[1].1["alerts"][0]["value"], 95.0);
    assert_eq!(got[1].1["alerts"][0]["endsAt"], Value::Null);

    // Still firing, a second pod too: Alertmanager gets both again; the webhook only the new one.
    let both = evaluate(90, &[cpu("a", 96.0, 90), cpu("b", 99.0, 90)]);
    assert_eq!(both.firing.len(), 1, "b is pending");
    notifier.send(&both).await;
    let got = take(&received);
    assert_eq!(got.len(), 1, "nothing for the webhook within debounce: {got:?}");
    assert_eq!(got[0].1.as_array().expect("array").len(), 1);
    let both = evaluate(150, &[cpu("a", 96.0, 150), cpu("b", 99.0, 150)]);
    notifier.send(&both).await;
    let mut got = take(&received);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let pods: Vec<&Value> = got[0]
        .1
        .as_array()
        .expect("array")
        .iter()
        .map(|a| &a["labels"]["pod"])
        .collect();
    assert_eq!(pods, [&json!("a"), &json!("b")]);
    assert_eq!(got[1].1["alerts"].as_array().expect("alerts").len(), 1);
    assert_eq!(got[1].1["alerts"][0]["labels"]["pod"], "b");

    // a drops below the threshold: one resolve with endsAt = the resolve time.
    let resolved = evaluate(180, &[cpu("a", 50.0, 180), cpu("b", 99.0, 180)]);
    notifier.send(&resolved).await;
    let mut got = take(&received);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let alerts = got[0].1.as_array().expect("array");
    let a = alerts
        .iter()
        .find(|x| x["labels"]["pod"] == "a")
        .expect("the resolve of a");
    assert_eq!(a["endsAt"], "2023-11-14T22:16:20.000Z");
    assert_eq!(a["startsAt"], "2023-11-14T22:14:20.000Z");
    assert_eq!(got[1].1["alerts"][0]["status"], "resolved");
    assert_eq!(got[1].1["alerts"][0]["labels"]["pod"], "a");

    // Later evaluations never resend that resolve.
    for now in [210, 240] {
        let evaluation = evaluate(now, &[cpu("a", 50.0, now), cpu("b", 99.0, now)]);
        notifier.send(&evaluation).await;
        for (path, body) in take(&received) {
            assert_eq!(path, "/am/api/v2/alerts", "no webhook within debounce");
            assert!(
                body.as_array()
                    .expect("array")
                    .iter()
                    .all(|x| x["labels"]["pod"] == "b"),
                "{body}"
            );
        }
    }
    let counters = notifier.counters();
    assert_eq!(
        (
            counters.alertmanager_failed,
            counters.webhook_failed,
            counters.refused
        ),
        (0, 0, 0)
    );
    assert_eq!(counters.alertmanager_sent, 6);
    assert_eq!(counters.webhook_sent, 3);
}

#[tokio::test]
async fn urls_outside_the_allowed_prefixes_are_never_requested() {
    let (base, received) = receiver(StatusCode::OK).await;
    let mut rule = rule(&format!("{base}/am"), &format!("{base}/hook"));
    rule.spec.condition.for_ = flmon_crds::Duration::from_secs(0);
    let notifier = notifier("http://alertmanager.monitoring:9093");
    let evaluation = Evaluator::new().evaluate(t(0), &mnist(), &[&rule], &[cpu("a", 95.0, 0)]);
    let outcomes = notifier.send(&evaluation).await;
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes
            .iter()
            .all(|o| o.result.as_ref().is_err_and(|e| e.contains("allowed prefix")))
    );
    assert!(take(&received).is_empty());
    assert_eq!(notifier.counters().refused, 2);
}

#[tokio::test]
async fn a_failing_or_unreachable_receiver_is_counted_not_fatal() {
    let (base, _received) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let mut rule = rule(&format!("{base}/am"), &format!("{closed}/hook"));
    rule.spec.condition.for_ = flmon_crds::Duration::from_secs(0);
    let notifier = Notifier::new(NotifierConfig {
        allowed_prefixes: vec![base.clone(), closed.clone()],
        timeout: Duration::from_secs(2),
        ..NotifierConfig::default()
    })
    .expect("notifier builds");
    let evaluation = Evaluator::new().evaluate(t(0), &mnist(), &[&rule], &[cpu("a", 95.0, 0)]);
    let outcomes = notifier.send(&evaluation).await;
    let failed: Vec<Target> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.target)
        .collect();
    assert_eq!(failed, [Target::Alertmanager, Target::Webhook], "{outcomes:?}");
    let am = outcomes
        .iter()
        .find(|o| o.target == Target::Alertmanager)
        .expect("alertmanager outcome");
    assert!(am.result.as_ref().is_err_and(|e| e.contains("500")), "{am:?}");
    let counters = notifier.counters();
    assert_eq!((counters.alertmanager_failed, counters.webhook_failed), (1, 1));
}
