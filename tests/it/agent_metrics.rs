//! The whole agent's `/metrics` (host over a fixture tree, GPU without NVML, training events,
//! librdkafka statistics, the agent's own metrics) passes `promtool check metrics`.

// Test helpers outside #[test] functions unwrap too: a failure stops the test where it happened.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use flmon_agent::training::Source;
use flmon_agent::{Agent, Config};

#[tokio::test(flavor = "multi_thread")]
async fn the_full_metrics_body_passes_promtool_check_metrics() {
    let fixtures = flmon_tests::repo_root().join("agent/tests/fixtures/pod/t0");
    let proc_root = fixtures.join("proc");
    let config = Config::from_args([
        "flmon-agent",
        "--metrics-addr",
        "127.0.0.1:0",
        "--ingest-addr",
        "127.0.0.1:0",
        "--pod-uid",
        "uid-1",
        "--role",
        "server",
        "--collectors",
        "host,gpu,librdkafka,events",
        "--gpu-mode",
        "NodeVisible",
        "--nvml-library",
        "/nonexistent/libnvidia-ml.so.1",
        "--host-scope",
        "pod",
        "--proc-root",
        proc_root.to_str().unwrap(),
        "--sample-interval",
        "200ms",
    ])
    .unwrap();
    let agent = Agent::start(config).await.unwrap();
    let events = "{\"type\":\"round_end\",\"run_id\":\"r\",\"round\":1,\"global_loss\":NaN,\"global_accuracy\":0.5,\"participants\":3,\"duration_seconds\":12.5,\"messages_sent\":7}\n\
         {\"type\":\"client_update\",\"run_id\":\"r\",\"round\":1,\"client_id\":\"site \\\"1\\\"\",\"loss\":0.4,\"accuracy\":0.8,\"training_seconds\":9,\"samples\":600}\n";
    agent
        .shared
        .ingest_events(events.as_bytes(), Source::Http)
        .unwrap();
    let stats = std::fs::read(
        flmon_tests::repo_root()
            .join("../shared/samples/librdkafka-stats/librdkafka-STATISTICS.md-example-producer.json"),
    )
    .unwrap();
    agent.shared.ingest_stats(&stats).unwrap();
    // Two host samples, so CPU usage is there too.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let url = format!("http://{}/metrics", agent.metrics_addr);
    let body = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("curl")
            .args(["-sf", &url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        child.wait().unwrap();
        out
    })
    .await
    .unwrap();
    for family in [
        "fl_global_loss NaN",
        "fl_global_accuracy 50",
        "fl_round_duration_seconds_bucket{le=\"+Inf\"} 1",
        "fl_messages_sent_total 4300760",
        "fl_cpu_usage_percent",
        "flmon_gpu_up{mode=\"NodeVisible\",reason=\"nvml_library_not_found\"} 0",
        "flmon_librdkafka_broker_rtt_seconds{",
        "flmon_agent_collector_success{collector=\"gpu\"} 1",
    ] {
        assert!(body.contains(family), "{family} missing:\n{body}");
    }
    let (clean, report) = flmon_tests::promtool_check_metrics(&body);
    assert!(clean, "promtool check metrics:\n{report}\n{body}");
    agent.stop().await.unwrap();
}
