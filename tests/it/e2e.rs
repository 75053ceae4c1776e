//! End to end: the README's demo, shorter (20 rounds), asserting what a user would check. The
//! demo plays the kubelet's part openly (examples/demo/kubelet.py) and needs root for network
//! namespaces; everything else is real: apiserver, Helm, webhook, operator, agents, Kafka, a FedAvg
//! run on scikit-learn's digits, and a loopback Prometheus configured from the ServiceMonitor.

use std::process::Command;

use flmon_tests::repo_root;
use serde_json::Value;

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod["metadata"]["annotations"][key].as_str()
}

#[test]
fn the_demo_converges_with_injected_pods_a_flagged_straggler_and_only_the_expected_alerts() {
    let out = tempfile::tempdir().unwrap();
    let env_dir = out.path().join("env");
    let status = Command::new("bash")
        .arg(repo_root().join("tests/demo.sh"))
        .env("FLMON_DEMO_ROUNDS", "20")
        .env("FLMON_DEMO_TIMEOUT", "420")
        .env("FLMON_DEMO_OUT", out.path())
        .env("FLMON_TESTENV_DIR", &env_dir)
        .status()
        .expect("tests/demo.sh runs");
    if !status.success() {
        // Keep the demo's logs for whoever reads the failure.
        let kept = out.keep();
        panic!("the demo failed; its logs are in {}", kept.join("logs").display());
    }

    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("summary.json")).expect("the demo wrote summary.json"),
    )
    .unwrap();

    // Every pod of the job was injected with the native sidecar.
    let pods = summary["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 6, "one server and five clients");
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(
            annotation(pod, "flmon.io/injected").is_some(),
            "{name} not injected"
        );
        assert_eq!(
            pod["metadata"]["labels"]["flmon.io/monitor"], "digits-fedavg",
            "{name}"
        );
        let sidecar = pod["spec"]["initContainers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "flmon-agent"))
            .unwrap_or_else(|| panic!("{name} has no flmon-agent init container"));
        assert_eq!(sidecar["restartPolicy"], "Always", "{name}: not a native sidecar");
        assert_eq!(
            pod["status"]["phase"], "Succeeded",
            "{name} did not finish its work"
        );
    }

    // The monitor converged (the target accuracy 0.93 is reached within 20 rounds: see the
    // workload's own log in the README), with every condition filled.
    let monitor = &summary["monitor"];
    let status = &monitor["status"];
    assert_eq!(status["phase"], "Converged", "{status:#}");
    assert_eq!(status["round"], 20);
    assert!(status["globalAccuracy"].as_f64().unwrap() >= 0.93, "{status:#}");
    let condition = |t: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap_or_else(|| panic!("no {t} condition"))["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(condition("Converged"), "True");
    assert_eq!(condition("Diverged"), "False");
    assert_eq!(condition("Ready"), "True");

    // site-3 runs four times slower than the others: it alone is the straggler.
    let stragglers: Vec<&str> = status["stragglers"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x["clientId"].as_str().or(x.as_str()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(stragglers, vec!["site-3"], "{status:#}");
    for pod in pods
        .iter()
        .filter(|p| annotation(p, "flmon.io/role") == Some("client"))
    {
        let id = annotation(pod, "flmon.io/client-id").unwrap();
        let flagged = annotation(pod, "flmon.io/straggler");
        assert_eq!(
            flagged,
            Some(if id == "site-3" { "true" } else { "false" }),
            "{id}"
        );
    }

    // Rounds 8–12 wait for site-5, which is offline, so the job's slow-rounds rule fires; none of
    // the default rules does (loss falls below 2 at once, participation stays at 4 or 5, CPU is low,
    // training never stalls).
    let fired: std::collections::BTreeSet<String> = summary["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "AlertFiring")
        .filter_map(|e| e["note"].as_str().or(e["message"].as_str()))
        .map(|m| m.split(' ').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        fired.into_iter().collect::<Vec<_>>(),
        vec!["SlowRounds".to_owned()]
    );

    // Plots and report.
    let dir = out.path().join("fl-demo/digits-fedavg");
    for figure in [
        "training_progress",
        "client_metrics",
        "system_metrics",
        "convergence_analysis",
        "kafka_metrics",
    ] {
        let png = std::fs::metadata(dir.join(format!("{figure}.png"))).expect(figure);
        assert!(png.len() > 10_000, "{figure}.png is too small to hold a figure");
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("site-3"), "the report names the straggler");

    // Prometheus, configured from the generated ServiceMonitor, scraped the seed's seven names.
    let names: Vec<&str> = summary["prometheus_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "fl_global_loss",
        "fl_global_accuracy",
        "fl_active_clients",
        "fl_round_duration_seconds_bucket",
        "fl_messages_sent_total",
        "fl_cpu_usage_percent",
        "fl_memory_usage_percent",
    ] {
        assert!(names.contains(&want), "Prometheus lacks {want}: {names:?}");
    }
}
