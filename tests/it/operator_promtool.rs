//! The operator's generated PromQL checked by the real `promtool`: generated PrometheusRules
//! parse, the default rules fire and stay quiet where SPEC §3 says (unit-tested with synthetic
//! series), every dashboard panel's expression parses when wrapped as a recording rule, and the
//! GPU memory panel counts MIG devices as a user expects.

use std::path::Path;
use std::process::Command;

use flmon_crds::{AlertRule, FLMonitor};
use flmon_operator::controller::Settings;
use flmon_operator::controller::build::{build, dashboard_queries};
use flmon_operator::controller::rules::{rule_applies, validate_rule};
use serde_json::{Value, json};

fn default_rules() -> Vec<AlertRule> {
    let path = flmon_tests::repo_root().join("manifests/default-alertrules.yaml");
    let text = std::fs::read_to_string(&path).expect("manifests/default-alertrules.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("default rule parses"))
        .collect()
}

fn monitor(namespace: &str, name: &str, extra_spec: &str) -> FLMonitor {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: flmon.io/v1alpha1
kind: FLMonitor
metadata: {{name: {name}, namespace: {namespace}, labels: {{team: vision}}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
{extra_spec}"
    ))
    .expect("test monitor parses")
}

/// A few extra rules covering every metric and operator, beside the defaults.
fn every_metric_rules(namespace: &str) -> Vec<AlertRule> {
    let metrics = [
        ("globalLoss", ">", "3.5"),
        ("globalAccuracy", "<", "0.25"),
        ("activeClients", "<=", "1"),
        ("roundsWithoutImprovement", ">=", "20"),
        ("roundDuration", ">", "600"),
        ("cpuUsage", ">", "99.5"),
        ("memoryUsage", ">=", "95"),
        ("gpuUsage", "==", "0"),
        ("consumerLag", "!=", "0"),
    ];
    metrics
        .iter()
        .enumerate()
        .map(|(i, (metric, op, threshold))| {
            serde_yaml_ng::from_str(&format!(
                "apiVersion: flmon.io/v1alpha1
kind: AlertRule
metadata: {{name: rule-{i}, namespace: {namespace}}}
spec:
  monitorSelector: {{matchLabels: {{team: vision}}}}
  condition: {{metric: {metric}, op: '{op}', threshold: {threshold}, for: 90s}}
  message: rule {i} on {metric}
  labels: {{team: vision}}"
            ))
            .expect("test rule parses")
        })
        .collect()
}

fn settings() -> Settings {
    Settings {
        operator_namespace: "flmon-system".into(),
        ..Settings::default()
    }
}

/// The rule groups of the PrometheusRules generated for `monitors`, as a promtool rule file.
fn rule_file(monitors: &[FLMonitor], rules: &[AlertRule]) -> Value {
    let mut groups = Vec::new();
    for monitor in monitors {
        let applicable: Vec<&AlertRule> = rules
            .iter()
            .filter(|r| validate_rule(r, &settings()).is_ok() && rule_applies(r, monitor, "flmon-system"))
            .collect();
        let rule = build(monitor, &applicable)
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
    json!({ "groups": groups })
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let output = Command::new(flmon_tests::tool("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = flmon_tests::combined_output(&output);
    assert!(
        output.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

fn write_yaml(dir: &Path, name: &str, value: &Value) {
    std::fs::write(
        dir.join(name),
        serde_yaml_ng::to_string(value).expect("serializes"),
    )
    .expect("write");
}

#[test]
fn generated_prometheus_rules_pass_promtool_check_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rules = default_rules();
    rules.extend(every_metric_rules("vision"));
    let monitors = [
        monitor("fl", "mnist", ""),
        monitor("vision", "cifar", "  prometheus: {scrapeInterval: 15s}"),
        monitor("vision", "no-defaults", "  alerting: {defaultRules: false}"),
    ];
    // One rule file per monitor, as Prometheus Operator writes one per PrometheusRule.
    let mut total = 0;
    for monitor in &monitors {
        let file = rule_file(std::slice::from_ref(monitor), &rules);
        let count: usize = file["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| g["rules"].as_array().map_or(0, Vec::len))
            .sum();
        write_yaml(dir.path(), "rules.yaml", &file);
        let out = promtool(&["check", "rules", "rules.yaml"], dir.path());
        assert!(out.contains(&format!("SUCCESS: {count} rules found")), "{out}");
        total += count;
    }
    // mnist: 4 defaults; cifar: 4 defaults + 9; no-defaults: 9.
    assert_eq!(total, 4 + 13 + 9);
}

#[test]
fn default_rules_fire_and_stay_quiet_as_specified_under_promtool_test_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let monitors = ["mnist", "calm", "done", "gone"].map(|name| monitor("fl", name, ""));
    write_yaml(dir.path(), "rules.yaml", &rule_file(&monitors, &default_rules()));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("it/fixtures/default-alertrules.test.yaml");
    std::fs::copy(&fixture, dir.path().join("test.yaml")).expect("copy fixture");
    let out = promtool(&["test", "rules", "test.yaml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_dashboard_expression_parses_as_a_recording_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = dashboard_queries(&monitor("fl", "mnist", ""));
    assert!(queries.len() >= 20, "dashboard has {} queries", queries.len());
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (title, expr))| {
            // Grafana substitutes $__rate_interval before Prometheus sees the query.
            json!({
                "record": format!("flmon_dashboard:query_{i}"),
                "expr": expr.replace("$__rate_interval", "2m"),
                "labels": { "panel": title },
            })
        })
        .collect();
    let count = rules.len();
    write_yaml(
        dir.path(),
        "dashboard.yaml",
        &json!({ "groups": [{ "name": "dashboard", "rules": rules }] }),
    );
    let out = promtool(&["check", "rules", "dashboard.yaml"], dir.path());
    assert!(out.contains(&format!("SUCCESS: {count} rules found")), "{out}");
}

#[test]
fn the_gpu_memory_panel_sums_a_pods_mig_devices_and_never_adds_their_card() {
    let queries = dashboard_queries(&monitor("fl", "mnist", ""));
    let used = queries
        .iter()
        .find(|(title, expr)| *title == "GPU Memory" && expr.contains("gpu_memory_used"))
        .map(|(_, expr)| expr.clone())
        .expect("a GPU memory panel");
    let series = |pod: &str, gpu: &str, uuid: &str, bytes: &str| {
        json!({
            "series": format!(
                "flmon_gpu_memory_used_bytes{{namespace=\"fl\",flmon_monitor=\"mnist\",pod=\"{pod}\",gpu=\"{gpu}\",uuid=\"{uuid}\"}}"
            ),
            "values": format!("{bytes}x4"),
        })
    };
    let sample = |pod: &str, gpu: &str, bytes: f64| json!({ "labels": format!("{{gpu=\"{gpu}\",pod=\"{pod}\"}}"), "value": bytes });
    let test = json!({
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                // A whole card.
                series("whole", "0", "GPU-a", "1000"),
                // Two MIG devices on card 1: two slices of one pod, added up.
                series("sliced", "1", "MIG-x", "200"),
                series("sliced", "1", "MIG-y", "300"),
                // Every device of the node (`All`): card 2 and its MIG device; the slice counts.
                series("node", "2", "GPU-c", "40000"),
                series("node", "2", "MIG-z", "500"),
                // Another monitor's pod is not on this dashboard.
                json!({
                    "series": "flmon_gpu_memory_used_bytes{namespace=\"fl\",flmon_monitor=\"other\",pod=\"x\",gpu=\"0\",uuid=\"GPU-q\"}",
                    "values": "7x4",
                }),
            ],
            "promql_expr_test": [{
                "expr": used,
                "eval_time": "2m",
                "exp_samples": [
                    sample("whole", "0", 1000.0),
                    sample("sliced", "1", 500.0),
                    sample("node", "2", 500.0),
                ],
            }],
        }],
    });
    let dir = tempfile::tempdir().expect("tempdir");
    write_yaml(dir.path(), "test.yaml", &test);
    let out = promtool(&["test", "rules", "test.yaml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
}
