//! `flmon-operator render` as users run it: saved `/v1/history` documents of a server and a
//! client pod and an FLMonitor manifest in, figures, report and page out; bad input named.

use std::path::Path;
use std::process::{Command, Output};

fn render(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flmon-operator"))
        .arg("render")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a fixture");
}

/// A server's and a client's history of ten rounds whose loss falls from 2.0 to 0.2.
fn fixtures(dir: &Path) {
    let rounds: Vec<String> = (1..=10)
        .map(|r| {
            format!(
                r#"{{"seq": {r}, "run_id": "run-1", "round": {r}, "global_loss": {}, "global_accuracy": {}, "participants": 2, "expected_participants": 2, "duration_seconds": 12.5, "time": {}}}"#,
                2.0 / f64::from(r),
                0.5 + 0.04 * f64::from(r),
                1_750_000_000 + 15 * r
            )
        })
        .collect();
    write(
        &dir.join("server.json"),
        &format!(
            r#"{{"schemaVersion": 1, "agent": {{"pod": "fl-server", "uid": "u1", "role": "server"}}, "nextSeq": 11, "oldestSeq": 1, "rounds": [{}]}}"#,
            rounds.join(",")
        ),
    );
    let updates: Vec<String> = (1..=10)
        .map(|r| {
            format!(
                r#"{{"seq": {r}, "run_id": "run-1", "round": {r}, "loss": 0.5, "accuracy": 0.8, "training_seconds": {}, "samples": 600}}"#,
                10 + r
            )
        })
        .collect();
    write(
        &dir.join("client.json"),
        &format!(
            r#"{{"schemaVersion": 1, "agent": {{"pod": "site-1", "uid": "u2", "role": "client", "clientId": "site-1"}}, "nextSeq": 11, "oldestSeq": 1, "clients": [{}]}}"#,
            updates.join(",")
        ),
    );
    write(
        &dir.join("monitor.yaml"),
        "apiVersion: flmon.io/v1alpha1\nkind: FLMonitor\nmetadata: {name: mnist, namespace: fl}\nspec:\n  selector: {}\n  analysis: {targetLoss: 0.25}\n",
    );
}

#[test]
fn saved_histories_render_into_figures_a_report_and_a_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixtures(dir.path());
    let out = dir.path().join("out");
    let histories = format!(
        "{},{}",
        dir.path().join("server.json").display(),
        dir.path().join("client.json").display()
    );
    let output = render(&[
        "--history",
        &histories,
        "--monitor",
        dir.path().join("monitor.yaml").to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8 path"),
        "--width",
        "800",
        "--height",
        "600",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "training_progress.png",
        "training_progress.svg",
        "report.md",
        "index.html",
    ] {
        assert!(out.join(file).is_file(), "{file} missing; printed:\n{stdout}");
        assert!(stdout.contains(file), "{file} not listed:\n{stdout}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).expect("report");
    assert!(
        report.contains("mnist"),
        "the monitor names the report:\n{report}"
    );
    assert!(
        report.contains("site-1"),
        "the client pod's history was merged:\n{report}"
    );
    // Round 8's loss 0.25 reaches the monitor's target.
    assert!(report.contains("Converged"), "{report}");
}

/// Renders the history `text` (saved as `name`) and returns the error output of the failure.
fn refused_history(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    write(&path, text);
    let output = render(&[
        "--history",
        path.to_str().expect("utf-8 path"),
        "--out",
        dir.path().join("out").to_str().expect("utf-8 path"),
    ]);
    assert!(!output.status.success(), "{name} was rendered");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_malformed_history_is_named_with_its_line() {
    let stderr = refused_history(
        "bad.json",
        "{\"schemaVersion\": 1,\n \"rounds\": [{\"round\": \"three\"}]}",
    );
    assert!(
        stderr.contains("bad.json") && stderr.contains("line 2"),
        "{stderr}"
    );
    // A JSON object that is not a history (every field is optional) is not rendered as an
    // empty run.
    let stderr = refused_history("other.json", "{\"kind\": \"FLMonitor\"}");
    assert!(
        stderr.contains("other.json") && stderr.contains("schemaVersion: missing"),
        "{stderr}"
    );
}

#[test]
fn an_analysis_setting_the_analysis_cannot_use_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixtures(dir.path());
    let monitor = dir.path().join("wide.yaml");
    write(
        &monitor,
        "apiVersion: flmon.io/v1alpha1\nkind: FLMonitor\nmetadata: {name: wide}\nspec:\n  selector: {}\n  analysis: {window: 100}\n",
    );
    let output = render(&[
        "--history",
        dir.path().join("server.json").to_str().expect("utf-8 path"),
        "--monitor",
        monitor.to_str().expect("utf-8 path"),
        "--out",
        dir.path().join("out").to_str().expect("utf-8 path"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("window") && stderr.contains("100"), "{stderr}");
}
