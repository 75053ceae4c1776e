//! The operator's own AlertRule evaluation agrees with Prometheus: synthetic series are fed both to
//! the [`Evaluator`] and, as `promtool test rules` input, to the real promtool evaluating the
//! PrometheusRules the controller generates. The evaluator's firing alerts at every evaluation
//! become promtool's expectations (`exp_alerts`, labels and annotations), so promtool fails
//! wherever the two disagree on when an alert fires, resolves, or what it carries.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use flmon_crds::names::metrics as m;
use flmon_crds::{AlertRule, FLMonitor, Phase};
use flmon_operator::alerts::{Evaluator, Labels, MonitorRef, Sample};
use flmon_operator::controller::Settings;
use flmon_operator::controller::build::build;
use flmon_operator::controller::rules::{alert_name, rule_applies, validate_rule};
use kube::ResourceExt;
use serde_json::{Value, json};

/// Scrape and evaluation step of the synthetic data.
const STEP: u64 = 15;
/// Steps in the timeline: 20 minutes.
const STEPS: usize = 81;

fn default_rules() -> Vec<AlertRule> {
    let path = flmon_tests::repo_root().join("manifests/default-alertrules.yaml");
    let text = std::fs::read_to_string(&path).expect("manifests/default-alertrules.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("default rule parses"))
        .collect()
}

/// Rules on the scoped and scaled metrics, in the monitors' namespace (they apply to all three).
fn extra_rules() -> Vec<AlertRule> {
    [
        ("gpu-hot", "gpuUsage", ">", "90", "1m"),
        ("kafka-lag", "consumerLag", ">", "1000", "30s"),
        ("accuracy-low", "globalAccuracy", "<", "0.5", "0"),
        ("loss-unexpected", "globalLoss", "!=", "2.3", "0"),
        ("memory-high", "memoryUsage", ">=", "80", "45s"),
        ("round-slow", "roundDuration", ">", "60", "30s"),
    ]
    .iter()
    .map(|(name, metric, op, threshold, for_)| {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: flmon.io/v1alpha1
kind: AlertRule
metadata: {{name: {name}, namespace: fl}}
spec:
  condition: {{metric: {metric}, op: '{op}', threshold: {threshold}, for: {for_}}}
  message: {name} on {metric}
  labels: {{team: vision}}"
        ))
        .expect("test rule parses")
    })
    .collect()
}

fn monitor(name: &str, spec: &str) -> FLMonitor {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: flmon.io/v1alpha1
kind: FLMonitor
metadata: {{name: {name}, namespace: fl}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
{spec}"
    ))
    .expect("test monitor parses")
}

/// One synthetic series: labels (with `__name__`) and a value per step, `None` for no sample.
struct Series {
    name: &'static str,
    labels: Labels,
    values: Vec<Option<f64>>,
}

/// A monitor of the scenario: the object, its phase per step, and its series.
struct Scenario {
    monitor: FLMonitor,
    phases: Vec<Option<Phase>>,
    series: Vec<Series>,
}

fn series(
    name: &'static str,
    monitor: &str,
    extra: &[(&str, &str)],
    values: impl Fn(usize) -> Option<f64>,
) -> Series {
    let mut labels: Labels = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.insert("namespace".into(), "fl".into());
    labels.insert(m::LABEL_MONITOR.into(), monitor.into());
    labels
        .entry("job".into())
        .or_insert_with(|| format!("fl/flmon-{monitor}"));
    Series {
        name,
        labels,
        values: (0..STEPS).map(values).collect(),
    }
}

/// The scenario, with what each part exercises.
fn scenarios() -> Vec<Scenario> {
    let mnist = {
        // 15 s scrapes (window 30 s); Training except steps 60..66 (Converged).
        let pod = |p: &'static str| [("pod", p), ("instance", p)];
        let server = pod("mnist-server");
        let client = pod("mnist-client-0");
        let phases = (0..STEPS)
            .map(|s| {
                Some(if (60..66).contains(&s) {
                    Phase::Converged
                } else {
                    Phase::Training
                })
            })
            .collect();
        Scenario {
            monitor: monitor("mnist", "  prometheus: {scrapeInterval: 15s}"),
            phases,
            series: vec![
                // > 2 from the start: fires at 10m (step 40); a 3-step gap from step 50 makes it
                // absent at step 52 (45 s old; at step 51 it is exactly 30 s old: still there).
                series(m::GLOBAL_LOSS, "mnist", &server, |s| match s {
                    50..=52 => None,
                    0..50 => Some(2.3),
                    _ => Some(2.5),
                }),
                // A second pod reporting NaN (e.g. an old server pod): `max` takes the number.
                series(m::GLOBAL_LOSS, "mnist", &pod("mnist-old"), |s| {
                    (s <= 45).then_some(f64::NAN)
                }),
                // < 2 until step 20: fires at 2m (step 8), resolves at step 20.
                series(m::ACTIVE_CLIENTS, "mnist", &server, |s| {
                    Some(if s < 20 { 1.0 } else { 3.0 })
                }),
                // Pod b's samples stop at step 30 (gone): its alert resolves on its own.
                series(m::CPU_USAGE_PERCENT, "mnist", &pod("mnist-b"), |s| {
                    (s < 30).then_some(92.0)
                }),
                series(m::CPU_USAGE_PERCENT, "mnist", &pod("mnist-a"), |_| Some(95.0)),
                series(m::CPU_USAGE_PERCENT, "mnist", &pod("mnist-c"), |_| Some(50.0)),
                // Exactly the threshold at step 5 (80 >= 80), below at step 9: `for: 45s` restarts.
                series(m::MEMORY_USAGE_PERCENT, "mnist", &pod("mnist-a"), |s| {
                    Some(if s == 9 {
                        79.9
                    } else if s >= 5 {
                        80.0
                    } else {
                        70.0
                    })
                }),
                // The operator's series: > 10 from step 11, no `for`.
                series(
                    m::ROUNDS_WITHOUT_IMPROVEMENT,
                    "mnist",
                    &[("job", "flmon-operator")],
                    |s| Some(s as f64),
                ),
                // GPU ratio × 100 > 90 on GPU 0 only; GPU 0's value dips at step 30.
                series(
                    m::GPU_UTILIZATION_RATIO,
                    "mnist",
                    &[
                        client[0],
                        client[1],
                        ("gpu", "0"),
                        ("uuid", "GPU-0a"),
                        ("model", "H200"),
                    ],
                    |s| Some(if s == 30 { 0.9 } else { 0.97 }),
                ),
                series(
                    m::GPU_UTILIZATION_RATIO,
                    "mnist",
                    &[
                        client[0],
                        client[1],
                        ("gpu", "1"),
                        ("uuid", "GPU-1b"),
                        ("model", "H200"),
                    ],
                    |_| Some(0.2),
                ),
                // Lag summed over partitions and topics per group: agg = 600 + 300 + step×10.
                series(
                    m::KAFKA_CONSUMERGROUP_LAG,
                    "mnist",
                    &[
                        server[0],
                        server[1],
                        ("consumergroup", "agg"),
                        ("topic", "updates"),
                        ("partition", "0"),
                    ],
                    |_| Some(600.0),
                ),
                series(
                    m::KAFKA_CONSUMERGROUP_LAG,
                    "mnist",
                    &[
                        server[0],
                        server[1],
                        ("consumergroup", "agg"),
                        ("topic", "updates"),
                        ("partition", "1"),
                    ],
                    |s| (s % 20 != 7).then_some(300.0),
                ),
                series(
                    m::KAFKA_CONSUMERGROUP_LAG,
                    "mnist",
                    &[
                        server[0],
                        server[1],
                        ("consumergroup", "agg"),
                        ("topic", "models"),
                        ("partition", "0"),
                    ],
                    |s| Some(s as f64 * 10.0),
                ),
                series(
                    m::KAFKA_CONSUMERGROUP_LAG,
                    "mnist",
                    &[
                        server[0],
                        server[1],
                        ("consumergroup", "eval"),
                        ("topic", "updates"),
                        ("partition", "0"),
                    ],
                    |_| Some(999.0),
                ),
                series(m::GLOBAL_ACCURACY_PERCENT, "mnist", &server, |s| {
                    Some(if s < 30 { 45.0 } else { 50.0 })
                }),
                series(m::LAST_ROUND_DURATION_SECONDS, "mnist", &server, |s| {
                    Some(if (10..20).contains(&s) { 61.0 } else { 60.0 })
                }),
                phase_series("mnist", "Training", |s| !(60..66).contains(&s)),
                phase_series("mnist", "Converged", |s| (60..66).contains(&s)),
            ],
        }
    };
    let cifar = {
        // Default 30 s interval (window 60 s) and no phase series: the phase is unknown and the
        // Training-only rules are evaluated. NaN losses fire `!=` and never `>`.
        let server = [("pod", "cifar-server"), ("instance", "cifar-server")];
        Scenario {
            monitor: monitor("cifar", ""),
            phases: vec![None; STEPS],
            series: vec![
                series(m::GLOBAL_LOSS, "cifar", &server, |s| match s {
                    // A 45 s gap stays within the 60 s window (fires at step 40); a 75 s one
                    // does not (absent at step 49).
                    20..=22 | 45..=49 => None,
                    60..=63 => Some(f64::NAN),
                    _ => Some(2.3),
                }),
                series(
                    m::ROUNDS_WITHOUT_IMPROVEMENT,
                    "cifar",
                    &[("job", "flmon-operator")],
                    |s| (s % 3 == 0).then_some(if s > 40 { 12.0 } else { 3.0 }),
                ),
                series(m::GLOBAL_ACCURACY_PERCENT, "cifar", &server, |s| {
                    Some(40.0 + s as f64 / 8.0)
                }),
            ],
        }
    };
    let done = {
        // Converged throughout: every condition holds, the Training-only rules stay quiet.
        let server = [("pod", "done-server"), ("instance", "done-server")];
        Scenario {
            monitor: monitor("done", ""),
            phases: vec![Some(Phase::Converged); STEPS],
            series: vec![
                series(m::GLOBAL_LOSS, "done", &server, |_| Some(2.3)),
                series(m::ACTIVE_CLIENTS, "done", &server, |_| Some(1.0)),
                series(
                    m::ROUNDS_WITHOUT_IMPROVEMENT,
                    "done",
                    &[("job", "flmon-operator")],
                    |_| Some(50.0),
                ),
                phase_series("done", "Training", |_| false),
                phase_series("done", "Converged", |_| true),
            ],
        }
    };
    vec![mnist, cifar, done]
}

fn phase_series(monitor: &str, phase: &str, on: impl Fn(usize) -> bool) -> Series {
    series(
        m::MONITOR_PHASE,
        monitor,
        &[("job", "flmon-operator"), ("phase", phase)],
        |s| Some(if on(s) { 1.0 } else { 0.0 }),
    )
}

fn at(step: usize) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(step as u64 * STEP)
}

fn promql_value(value: Option<f64>) -> String {
    match value {
        None => "_".into(),
        Some(v) if v.is_nan() => "NaN".into(),
        Some(v) => format!("{v}"),
    }
}

fn series_selector(series: &Series) -> String {
    let labels: Vec<String> = series.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{}{{{}}}", series.name, labels.join(","))
}

fn settings() -> Settings {
    Settings {
        operator_namespace: "flmon-system".into(),
        ..Settings::default()
    }
}

fn applicable<'a>(rules: &'a [AlertRule], monitor: &FLMonitor) -> Vec<&'a AlertRule> {
    rules
        .iter()
        .filter(|r| validate_rule(r, &settings()).is_ok() && rule_applies(r, monitor, "flmon-system"))
        .collect()
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let output = Command::new(flmon_tests::tool("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = flmon_tests::combined_output(&output);
    (output.status.success(), text)
}

/// Firing alerts of the evaluator per step: (step, alertname) → label sets with annotations.
type Firing = BTreeMap<(usize, String), Vec<(Labels, Labels)>>;

fn evaluate_all(scenarios: &[Scenario], rules: &[AlertRule]) -> Firing {
    let mut evaluator = Evaluator::new();
    let mut firing = Firing::new();
    for scenario in scenarios {
        let applicable = applicable(rules, &scenario.monitor);
        let samples: Vec<Sample> = scenario
            .series
            .iter()
            .flat_map(|s| {
                s.values.iter().enumerate().filter_map(|(step, v)| {
                    v.map(|value| Sample {
                        name: s.name.into(),
                        labels: s.labels.clone(),
                        value,
                        timestamp: at(step),
                    })
                })
            })
            .collect();
        for step in 0..STEPS {
            let monitor = MonitorRef {
                phase: scenario.phases[step],
                ..MonitorRef::of(&scenario.monitor)
            };
            // Every sample, future ones included: the evaluator must ignore those itself.
            let evaluation = evaluator.evaluate(at(step), &monitor, &applicable, &samples);
            for rule in &applicable {
                firing.entry((step, alert_name(&rule.name_any()))).or_default();
            }
            for alert in evaluation.firing {
                firing
                    .entry((step, alert.alertname().to_owned()))
                    .or_default()
                    .push((alert.labels.clone(), alert.annotations.clone()));
            }
        }
    }
    firing
}

/// The first step at which the evaluator fires `alertname` with label `key=value`.
fn first_firing(firing: &Firing, alertname: &str, key: &str, value: &str) -> Option<usize> {
    firing
        .iter()
        .find(|((_, name), alerts)| {
            name == alertname && alerts.iter().any(|(l, _)| l.get(key).is_some_and(|v| v == value))
        })
        .map(|((step, _), _)| *step)
}

fn firing_at(firing: &Firing, step: usize, alertname: &str) -> Vec<String> {
    firing
        .get(&(step, alertname.to_owned()))
        .map(|alerts| {
            let mut found: Vec<String> = alerts
                .iter()
                .map(|(l, _)| format!("{}:{}", l["flmon_monitor"], scope(l)))
                .collect();
            found.sort();
            found
        })
        .unwrap_or_default()
}

fn scope(labels: &Labels) -> String {
    ["pod", "gpu", "consumergroup"]
        .iter()
        .filter_map(|k| labels.get(*k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn the_operators_evaluation_fires_when_and_as_promtool_does() {
    let mut rules = default_rules();
    assert_eq!(rules.len(), 4, "the four shipped defaults");
    rules.extend(extra_rules());
    let scenarios = scenarios();
    let firing = evaluate_all(&scenarios, &rules);

    // Derived by hand from the series above, so the comparison below is not between two silences.
    assert_eq!(
        first_firing(&firing, "HighGlobalLoss", "flmon_monitor", "mnist"),
        Some(40),
        "10m of 2.3"
    );
    assert_eq!(
        firing_at(&firing, 51, "HighGlobalLoss"),
        ["mnist:"],
        "the sample 30 s old still counts"
    );
    assert!(
        firing_at(&firing, 52, "HighGlobalLoss").is_empty(),
        "45 s old: absent"
    );
    assert_eq!(
        first_firing(&firing, "LowClientParticipation", "flmon_monitor", "mnist"),
        Some(8)
    );
    assert!(firing_at(&firing, 20, "LowClientParticipation").is_empty());
    assert_eq!(
        first_firing(&firing, "TrainingStalled", "flmon_monitor", "mnist"),
        Some(11)
    );
    assert!(
        firing_at(&firing, 62, "TrainingStalled")
            .iter()
            .all(|a| !a.starts_with("mnist")),
        "Converged"
    );
    assert_eq!(
        first_firing(&firing, "HighCpuUsage", "pod", "mnist-a"),
        Some(20),
        "5m of 95"
    );
    assert_eq!(
        firing_at(&firing, 30, "HighCpuUsage"),
        ["mnist:pod=mnist-a", "mnist:pod=mnist-b"]
    );
    assert_eq!(
        firing_at(&firing, 33, "HighCpuUsage"),
        ["mnist:pod=mnist-a"],
        "b is gone"
    );
    assert_eq!(
        firing_at(&firing, 4, "GpuHot"),
        ["mnist:pod=mnist-client-0,gpu=0"]
    );
    assert!(firing_at(&firing, 30, "GpuHot").is_empty(), "90 is not > 90");
    assert_eq!(
        first_firing(&firing, "KafkaLag", "consumergroup", "agg"),
        Some(13),
        "sum > 1000 from step 11, for 30s"
    );
    assert_eq!(firing_at(&firing, 0, "AccuracyLow"), ["cifar:", "mnist:"]);
    assert_eq!(
        first_firing(&firing, "RoundSlow", "flmon_monitor", "mnist"),
        Some(12)
    );
    assert!(firing_at(&firing, 31, "LossUnexpected").is_empty(), "both at 2.3");
    assert_eq!(
        firing_at(&firing, 61, "LossUnexpected"),
        ["cifar:", "mnist:"],
        "NaN != 2.3, 2.5 != 2.3"
    );
    assert!(
        firing_at(&firing, 61, "HighGlobalLoss").is_empty(),
        "NaN > 2 is false"
    );
    assert!(first_firing(&firing, "TrainingStalled", "flmon_monitor", "done").is_none());
    assert_eq!(
        first_firing(&firing, "HighGlobalLoss", "flmon_monitor", "cifar"),
        Some(40),
        "no phase: evaluated"
    );
    assert_eq!(
        firing_at(&firing, 48, "HighGlobalLoss"),
        ["cifar:", "mnist:"],
        "60 s old: present"
    );
    assert_eq!(
        firing_at(&firing, 49, "HighGlobalLoss"),
        ["mnist:"],
        "cifar's sample is 75 s old: absent"
    );

    // The same series and the generated PrometheusRules under promtool, expecting exactly that.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut groups = Vec::new();
    for scenario in &scenarios {
        let applicable = applicable(&rules, &scenario.monitor);
        let rule = build(&scenario.monitor, &applicable)
            .prometheus_rule
            .expect("rules are on by default");
        groups.extend(
            rule.data["spec"]["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .cloned(),
        );
    }
    write_yaml(dir.path(), "rules.yaml", &json!({ "groups": groups }));
    let input_series: Vec<Value> = scenarios
        .iter()
        .flat_map(|s| &s.series)
        .map(|s| {
            let values: Vec<String> = s.values.iter().map(|v| promql_value(*v)).collect();
            json!({ "series": series_selector(s), "values": values.join(" ") })
        })
        .collect();
    let tests: Vec<Value> = firing
        .iter()
        .map(|((step, alertname), alerts)| {
            let exp: Vec<Value> = alerts
                .iter()
                .map(|(labels, annotations)| {
                    let mut labels = labels.clone();
                    labels.remove("alertname");
                    json!({ "exp_labels": labels, "exp_annotations": annotations })
                })
                .collect();
            json!({ "eval_time": format!("{}s", *step as u64 * STEP), "alertname": alertname, "exp_alerts": exp })
        })
        .collect();
    let checks = tests.len();
    write_yaml(
        dir.path(),
        "test.yaml",
        &json!({
            "rule_files": ["rules.yaml"],
            "evaluation_interval": format!("{STEP}s"),
            "tests": [{ "interval": format!("{STEP}s"), "input_series": input_series, "alert_rule_test": tests }],
        }),
    );
    let (ok, out) = promtool(&["test", "rules", "test.yaml"], dir.path());
    assert!(
        ok && out.contains("SUCCESS"),
        "promtool disagrees with the operator ({checks} checks):\n{out}"
    );
    assert!(checks >= STEPS * 10, "{checks} checks");
}

/// The agreement test must be able to fail: promtool rejects a deliberately wrong expectation.
#[test]
fn promtool_rejects_an_expectation_the_rules_do_not_meet() {
    let rules = default_rules();
    let scenario = &scenarios()[0];
    let applicable = applicable(&rules, &scenario.monitor);
    let rule = build(&scenario.monitor, &applicable)
        .prometheus_rule
        .expect("rules are on");
    let dir = tempfile::tempdir().expect("tempdir");
    write_yaml(
        dir.path(),
        "rules.yaml",
        &json!({ "groups": rule.data["spec"]["groups"] }),
    );
    let input_series: Vec<Value> = scenario
        .series
        .iter()
        .map(|s| {
            let values: Vec<String> = s.values.iter().map(|v| promql_value(*v)).collect();
            json!({ "series": series_selector(s), "values": values.join(" ") })
        })
        .collect();
    // HighGlobalLoss fires at 10m, not one evaluation earlier.
    write_yaml(
        dir.path(),
        "test.yaml",
        &json!({
            "rule_files": ["rules.yaml"],
            "evaluation_interval": "15s",
            "tests": [{ "interval": "15s", "input_series": input_series, "alert_rule_test": [{
                "eval_time": "585s", "alertname": "HighGlobalLoss",
                "exp_alerts": [{ "exp_labels": {
                    "severity": "warning", "flmon_rule": "flmon-system/high-global-loss",
                    "namespace": "fl", "flmon_monitor": "mnist" } }],
            }]}],
        }),
    );
    let (ok, out) = promtool(&["test", "rules", "test.yaml"], dir.path());
    assert!(!ok, "promtool accepted a wrong expectation:\n{out}");
}

fn write_yaml(dir: &Path, name: &str, value: &Value) {
    std::fs::write(
        dir.join(name),
        serde_yaml_ng::to_string(value).expect("serializes"),
    )
    .expect("write");
}
