//! Golden tests of `build`: each `testdata/<case>/` holds an input `monitor.yaml`, optional
//! `rules.yaml`, and the expected `objects.yaml`. Set `FLMON_UPDATE_GOLDEN=1` to rewrite the
//! expected files after an intended change, then review the diff.

use std::path::{Path, PathBuf};

use flmon_crds::{AlertRule, FLMonitor};

use super::*;
use crate::controller::Settings;
use crate::controller::rules::{rule_applies, validate_rule};

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/controller/build/testdata")
        .join(case)
}

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_rules(yaml: &str) -> Vec<AlertRule> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("rule parses"))
        .collect()
}

/// The shipped default rules, as the chart installs them into `flmon-system`.
fn default_rules() -> Vec<AlertRule> {
    parse_rules(&repo_file("manifests/default-alertrules.yaml"))
}

fn settings() -> Settings {
    Settings {
        operator_namespace: "flmon-system".into(),
        dashboard_namespaces: vec!["monitoring".into()],
        notify_url_prefixes: vec![],
        agent_defaults: None,
    }
}

fn build_case(case: &str) -> String {
    let dir = case_dir(case);
    let monitor: FLMonitor =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("monitor.yaml")).expect("monitor.yaml"))
            .expect("monitor parses");
    let mut all_rules = default_rules();
    if let Ok(extra) = std::fs::read_to_string(dir.join("rules.yaml")) {
        all_rules.extend(parse_rules(&extra));
    }
    let applicable: Vec<&AlertRule> = all_rules
        .iter()
        .filter(|r| validate_rule(r, &settings()).is_ok())
        .filter(|r| rule_applies(r, &monitor, "flmon-system"))
        .collect();
    let desired = build(&monitor, &applicable);
    desired
        .to_values()
        .iter()
        .map(|v| serde_yaml_ng::to_string(v).expect("serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn assert_golden(case: &str) {
    let actual = build_case(case);
    let path = case_dir(case).join("objects.yaml");
    if std::env::var_os("FLMON_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from what build() generates; if the change is intended, rerun with \
         FLMON_UPDATE_GOLDEN=1 and review the diff.\n--- generated ---\n{actual}",
        path.display()
    );
}

#[test]
fn a_minimal_monitor_gets_a_service_monitor_rules_from_the_defaults_and_a_dashboard() {
    assert_golden("minimal");
}

#[test]
fn labels_interval_folder_and_a_dashboard_in_another_namespace_are_honoured() {
    assert_golden("full");
}

#[test]
fn switched_off_parts_are_not_generated() {
    assert_golden("disabled");
}

#[test]
fn the_dashboard_has_current_panel_types_a_datasource_variable_and_no_inputs() {
    let monitor: FLMonitor = serde_yaml_ng::from_str(
        &std::fs::read_to_string(case_dir("minimal").join("monitor.yaml")).expect("read"),
    )
    .expect("parses");
    let dashboard = dashboard_json(&monitor);
    assert!(dashboard.get("__inputs").is_none());
    assert_eq!(dashboard["templating"]["list"][0]["name"], "datasource");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    // Every panel of the seed's dashboard, then the added rows.
    for seed_panel in [
        "Global Model Loss",
        "Global Model Accuracy",
        "Active Clients",
        "Training Progress",
        "System Resources",
        "Round Duration",
        "Clients",
        "GPU",
        "Kafka",
    ] {
        assert!(
            titles.contains(&seed_panel),
            "missing panel {seed_panel}: {titles:?}"
        );
    }
    for panel in panels {
        let kind = panel["type"].as_str().expect("type");
        assert!(["row", "stat", "timeseries"].contains(&kind), "panel type {kind}");
        if kind != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}");
            let grid = &panel["gridPos"];
            let right = grid["x"].as_u64().expect("x") + grid["w"].as_u64().expect("w");
            assert!(right <= 24, "{} overflows the grid", panel["title"]);
        }
    }
    let ids: std::collections::BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
}

#[test]
fn an_invalid_rule_is_left_out_and_the_others_stay() {
    let monitor: FLMonitor = serde_yaml_ng::from_str(
        &std::fs::read_to_string(case_dir("minimal").join("monitor.yaml")).expect("read"),
    )
    .expect("parses");
    let mut rules = default_rules();
    rules[0].spec.condition.metric = flmon_crds::AlertMetric::GlobalAccuracy; // threshold 2.0 is not a ratio
    let valid: Vec<&AlertRule> = rules
        .iter()
        .filter(|r| validate_rule(r, &settings()).is_ok())
        .collect();
    let desired = build(&monitor, &valid);
    let rule = desired.prometheus_rule.expect("rules on");
    let alerts: Vec<&str> = rule.data["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        alerts,
        ["HighCpuUsage", "LowClientParticipation", "TrainingStalled"]
    );
}
