//! The agent in-process, over HTTP: the handed event cases, librdkafka samples, history paging,
//! health, body limits and graceful shutdown.

// Test helpers outside #[test] functions unwrap too: a failure stops the test where it happened.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use flmon_agent::{Agent, Config};
use serde_json::Value;

fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

async fn start(extra: &[&str]) -> Agent {
    let mut args = vec![
        "flmon-agent",
        "--metrics-addr",
        "127.0.0.1:0",
        "--ingest-addr",
        "127.0.0.1:0",
        "--pod-uid",
        "0f6c1b1e-uid",
        "--pod-name",
        "fl-server-0",
        "--role",
        "server",
        "--collectors",
        "host,librdkafka,events",
        "--sample-interval",
        "200ms",
        "--max-body-bytes",
        "65536",
    ];
    args.extend_from_slice(extra);
    Agent::start(Config::from_args(args).unwrap()).await.unwrap()
}

struct Client {
    http: reqwest::Client,
    metrics: String,
    ingest: String,
}

impl Client {
    fn new(agent: &Agent) -> Self {
        Client {
            http: reqwest::Client::new(),
            metrics: format!("http://{}", agent.metrics_addr),
            ingest: format!("http://{}", agent.ingest_addr),
        }
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.ingest))
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.metrics))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }
}

fn case(name: &str) -> String {
    std::fs::read_to_string(shared_dir().join("cases/events").join(name)).unwrap()
}

#[tokio::test]
async fn accuracy_in_percent_rejects_the_whole_batch_and_line_one_alone_is_accepted() {
    let agent = start(&[]).await;
    let c = Client::new(&agent);
    let body = case("accuracy-in-percent.ndjson");
    let (status, text) = c.post("/v1/events", body.clone()).await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0]["line"], 2);
    assert_eq!(errors[0]["field"], "global_accuracy");
    assert_eq!(errors[0]["value"], serde_json::json!(94.38));
    assert!(errors[0]["expected"].as_str().unwrap().contains("from 0 to 1"));
    // Nothing of the batch was applied.
    let m = c.metrics().await;
    assert!(!m.contains("fl_global_loss"), "{m}");
    assert!(m.contains("flmon_agent_event_batches_total{source=\"http\",result=\"rejected\"} 1"));
    let (_, history) = c.get("/v1/history").await;
    assert_eq!(
        serde_json::from_str::<Value>(&history).unwrap()["rounds"],
        serde_json::json!([])
    );

    let line1 = body.lines().next().unwrap().to_owned();
    let (status, text) = c.post("/v1/events", line1).await;
    assert_eq!(status, 200, "{text}");
    let m = c.metrics().await;
    assert!(m.contains("fl_global_accuracy 94.11\n"), "{m}");
    assert!(m.contains("fl_global_loss 0.1832\n"));
    assert!(m.contains("fl_active_clients 9\n"));
    assert!(m.contains("flmon_round 41\n"));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_retried_client_update_counts_once() {
    let agent = start(&[]).await;
    let c = Client::new(&agent);
    let (status, text) = c.post("/v1/events", case("client-update-retried.ndjson")).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((v["new"].as_u64(), v["duplicates"].as_u64()), (Some(2), Some(1)));
    let m = c.metrics().await;
    assert!(m.contains("fl_active_clients 2\n"), "{m}");
    assert!(m.contains("flmon_client_rounds_total{client_id=\"site-3\"} 1\n"));
    let (_, history) = c.get("/v1/history").await;
    let h: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(h["clients"].as_array().unwrap().len(), 2);
    assert_eq!(h["agent"]["pod"], "fl-server-0");
    // Sending the same batch again changes nothing.
    c.post("/v1/events", case("client-update-retried.ndjson")).await;
    assert!(c.metrics().await.contains("fl_active_clients 2\n"));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn python_nan_is_accepted_and_history_writes_it_as_a_string() {
    let agent = start(&[]).await;
    let c = Client::new(&agent);
    let body = r#"[{"type":"round_end","round":818,"global_loss":NaN,"global_accuracy":0.1,"duration_seconds":3.5}]"#;
    let (status, text) = c.post("/v1/events", body).await;
    assert_eq!(status, 200, "{text}");
    assert!(c.metrics().await.contains("fl_global_loss NaN\n"));
    let (_, history) = c.get("/v1/history?since=0&limit=10").await;
    let h: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(h["rounds"][0]["global_loss"], "NaN");
    assert_eq!(h["rounds"][0]["run_id"], "0f6c1b1e-uid");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_saying_the_limit() {
    let agent = start(&[]).await;
    let c = Client::new(&agent);
    let big = format!("[{}]", vec![r#"{"type":"round_end","round":1}"#; 4000].join(","));
    assert!(big.len() > 65536);
    for (path, body) in [
        ("/v1/events", big.into_bytes()),
        ("/v1/librdkafka-stats", vec![b' '; 70_000]),
    ] {
        let (status, text) = c.post(path, body).await;
        assert_eq!(status, 413, "{path}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["limitBytes"], 65536, "{text}");
        assert!(
            answer["error"].as_str().unwrap().contains("65536 bytes"),
            "{text}"
        );
    }
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_with_more_errors_than_listed_says_so_and_echoes_numbers_as_posted() {
    let agent = start(&[]).await;
    let c = Client::new(&agent);
    let bad = vec![r#"{"type":"round_end","run_id":"r","round":-1}"#; 150].join("\n");
    let (status, text) = c.post("/v1/events", bad).await;
    assert_eq!(status, 400);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["errors"].as_array().unwrap().len(), 100);
    assert_eq!(answer["errors"][0]["value"].to_string(), "-1", "{text}");
    assert!(
        answer["truncated"].as_str().unwrap().contains("first 100"),
        "{text}"
    );
    let (status, text) = c
        .post("/v1/events", r#"{"type":"round_end","run_id":"r","round":-1}"#)
        .await;
    assert_eq!(status, 400);
    assert!(
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .get("truncated")
            .is_none(),
        "{text}"
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn every_librdkafka_sample_is_parsed_or_rejected_and_the_last_good_one_is_kept() {
    let agent = start(&[]).await;
    let c = Client::new(&agent);
    let dir = shared_dir().join("samples/librdkafka-stats");
    let post_ok = |name: &'static str| {
        let c = &c;
        let dir = dir.clone();
        async move {
            let (status, text) = c
                .post("/v1/librdkafka-stats", std::fs::read(dir.join(name)).unwrap())
                .await;
            assert_eq!(status, 204, "{name}: {text}");
        }
    };
    post_ok("librdkafka-STATISTICS.md-example-producer.json").await;
    post_ok("rust-rdkafka-0.39-statistics.rs-EXAMPLE-producer.json").await;
    post_ok("wikimedia-node-rdkafka-statsd-test.js-consumer-2016.json").await;
    // The 2016 consumer's committed offset is unknown (-1001): no lag for test4, not librdkafka's 0.
    let m = c.metrics().await;
    assert!(!m.contains("flmon_librdkafka_consumer_lag_messages"), "{m}");
    assert!(!m.contains("topic=\"test4\""));
    post_ok("librdkafka-STATISTICS.md-b7b632d5-example-consumer-cgrp.json").await;
    post_ok("librdkafka-src-statistics_schema.json").await;
    let bad = [
        "librdkafka-issue-5378-partition-fragment-INVALID-JSON.txt",
        "lua_sandbox_extensions-issue-192-consumer-oneline-TRUNCATED.txt",
    ];
    for name in bad {
        let (status, text) = c
            .post("/v1/librdkafka-stats", std::fs::read(dir.join(name)).unwrap())
            .await;
        assert_eq!(status, 400, "{name}: {text}");
        assert!(text.contains("not valid JSON"), "{text}");
    }
    let m = c.metrics().await;
    assert!(
        m.contains("flmon_librdkafka_statistics_total{result=\"rejected\"} 2\n"),
        "{m}"
    );
    // The producer's last good document (rust-rdkafka's example, same client name) is kept.
    assert!(m.contains(
        "flmon_librdkafka_tx_messages_total{client=\"rdkafka#producer-1\",type=\"producer\"} 11853650\n"
    ));
    // The 2018 consumer's partitions have known committed offsets: lag 0, and no partition -1.
    assert!(m.contains("flmon_librdkafka_consumer_lag_messages{client=\"rdkafka#consumer-1\",topic=\"test\",partition=\"0\"} 0\n"));
    assert!(!m.contains("partition=\"-1\""));
    // fl_messages_sent_total: 4300753, then +7552897 up to 11853650.
    assert!(m.contains("fl_messages_sent_total 11853650\n"), "{m}");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn history_pages_and_bad_parameters_are_explained() {
    let agent = start(&[]).await;
    let c = Client::new(&agent);
    let body: String = (1..=5)
        .map(|r| format!("{{\"type\":\"round_end\",\"run_id\":\"r\",\"round\":{r},\"global_loss\":1.0}}\n"))
        .collect();
    assert_eq!(c.post("/v1/events", body).await.0, 200);
    let mut since = 0u64;
    let mut rounds = Vec::new();
    loop {
        let (_, text) = c.get(&format!("/v1/history?since={since}&limit=2")).await;
        let h: Value = serde_json::from_str(&text).unwrap();
        let page: Vec<u64> = h["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["round"].as_u64().unwrap())
            .collect();
        since = h["nextSeq"].as_u64().unwrap();
        if h["rounds"].as_array().unwrap().is_empty() && h["system"].as_array().unwrap().is_empty() {
            break;
        }
        rounds.extend(page);
    }
    assert_eq!(rounds, [1, 2, 3, 4, 5]);
    let (status, text) = c.get("/v1/history?limit=0").await;
    assert_eq!(status, 400);
    assert!(text.contains("\"parameter\":\"limit\""), "{text}");
    assert_eq!(c.get("/v1/history?since=x").await.0, 400);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn ready_after_the_first_sample_and_metrics_carry_collector_status() {
    let agent = start(&[]).await;
    let c = Client::new(&agent);
    assert_eq!(c.get("/healthz").await.0, 200);
    let mut ready = false;
    for _ in 0..50 {
        if c.get("/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready);
    let m = c.metrics().await;
    assert!(
        m.contains("flmon_agent_collector_success{collector=\"host\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("flmon_agent_collector_duration_seconds{collector=\"host\"}"));
    assert!(m.contains("flmon_agent_info{version="));
    agent.stop().await.unwrap();
}
