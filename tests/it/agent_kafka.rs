//! The agent's Kafka collector against a real broker: a second process produces at a known rate,
//! a consumer group commits offsets at known positions, training events arrive on the events
//! topic; the agent's rates and lags match, the group's membership and generation are untouched,
//! and after a broker restart the metrics resume.

// Test helpers outside #[test] functions unwrap too: a failure stops the test where it happened.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flmon_agent::{Agent, Config};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const UPDATES: &str = "fl-updates";
/// A watched topic that is never created.
const MISSING: &str = "fl-never-created";
const EVENTS: &str = "fl-events";
const GROUP: &str = "fl-aggregator";
const IDLE_GROUP: &str = "fl-never-committed";
const RATE: f64 = 40.0;
const SECONDS: f64 = 15.0;

/// Counts the rebalances the group's real member goes through: each new generation is one.
struct CountingContext {
    rebalances: Arc<AtomicU32>,
}

impl ClientContext for CountingContext {}

impl ConsumerContext for CountingContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.rebalances.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Parses the `/metrics` body into `series -> value`.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn metric(agent: &Agent, series: &str) -> Option<f64> {
    samples(&String::from_utf8_lossy(&agent.shared.snapshot.body()))
        .get(series)
        .copied()
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const PRODUCER: &str = r#"
import sys, time
from confluent_kafka import Producer
bootstrap, topic, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
n = int(rate * seconds)
start = time.time()
for i in range(n):
    delay = start + i / rate - time.time()
    if delay > 0:
        time.sleep(delay)
    p.produce(topic, value=b"w" * 100, partition=i % 3)
    p.poll(0)
p.flush(30)
print(n)
"#;

fn watermarks(bootstrap: &str) -> Vec<(i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..3)
        .map(|p| c.fetch_watermarks(UPDATES, p, Duration::from_secs(10)).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rates_and_lags_match_the_group_is_undisturbed_and_metrics_resume_after_a_broker_restart() {
    let mut kafka = tokio::task::spawn_blocking(flmon_tests::Kafka::start)
        .await
        .unwrap()
        .unwrap();
    let bootstrap = kafka.bootstrap();

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let topics = [
        NewTopic::new(UPDATES, 3, TopicReplication::Fixed(1)),
        NewTopic::new(EVENTS, 1, TopicReplication::Fixed(1)),
    ];
    for r in admin.create_topics(&topics, &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }

    // The watched group's real member: subscribed, polling, committing by hand only.
    let rebalances = Arc::new(AtomicU32::new(0));
    let member: Arc<BaseConsumer<CountingContext>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", GROUP)
            .set("client.id", "fl-test-member")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create_with_context(CountingContext {
                rebalances: rebalances.clone(),
            })
            .unwrap(),
    );
    member.subscribe(&[UPDATES]).unwrap();
    let stop_member = Arc::new(AtomicBool::new(false));
    let poller = {
        let (member, stop) = (member.clone(), stop_member.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = member.poll(Duration::from_millis(100));
            }
        })
    };
    wait_for("the member's first assignment", Duration::from_secs(60), || {
        rebalances.load(Ordering::SeqCst) >= 1
    })
    .await;
    let generations_before = rebalances.load(Ordering::SeqCst);

    let config = Config::from_args([
        "flmon-agent",
        "--metrics-addr",
        "127.0.0.1:0",
        "--ingest-addr",
        "127.0.0.1:0",
        "--pod-uid",
        "server-uid",
        "--role",
        "server",
        "--collectors",
        "kafka,events",
        "--sample-interval",
        "1s",
        "--kafka-bootstrap-servers",
        &bootstrap,
        "--kafka-topics",
        &format!("{UPDATES},{MISSING},bad topic"),
        "--kafka-consumer-groups",
        &format!("{GROUP},{IDLE_GROUP}"),
        "--kafka-events-topic",
        EVENTS,
    ])
    .unwrap();
    let agent = Agent::start(config).await.unwrap();
    wait_for("flmon_kafka_up 1", Duration::from_secs(60), || {
        metric(&agent, "flmon_kafka_up") == Some(1.0)
    })
    .await;
    // A watched topic the broker lacks, or whose name is invalid, is named as missing.
    let topic_up = |topic: &str| metric(&agent, &format!("flmon_kafka_topic_up{{topic=\"{topic}\"}}"));
    assert_eq!(topic_up(UPDATES), Some(1.0));
    assert_eq!(topic_up(MISSING), Some(0.0));
    assert_eq!(topic_up("bad topic"), Some(0.0));

    // A second process produces RATE messages per second for SECONDS seconds.
    let producer = tokio::process::Command::new(flmon_tests::tool("python"))
        .args([
            "-c",
            PRODUCER,
            &bootstrap,
            UPDATES,
            &RATE.to_string(),
            &SECONDS.to_string(),
        ])
        .output();
    let produced = tokio::spawn(producer);

    // Training events arrive on the events topic, read without a group from its end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let event = r#"{"type":"round_end","run_id":"kafka-run","round":3,"global_loss":0.42,"participants":5}"#;
    events
        .send(BaseRecord::<(), str>::to(EVENTS).payload(event))
        .unwrap();
    events.flush(Duration::from_secs(10)).unwrap();
    wait_for("the event from the events topic", Duration::from_secs(30), || {
        metric(&agent, "fl_global_loss") == Some(0.42)
    })
    .await;
    assert_eq!(metric(&agent, "fl_active_clients"), Some(5.0));

    let out = produced.await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Rates: the samples taken while the producer ran average to its rate.
    let page = agent.shared.history_page(0, 10_000);
    let rates: Vec<f64> = page
        .kafka
        .iter()
        .filter(|k| k.topic.as_deref() == Some(UPDATES))
        .filter_map(|k| k.messages_per_second)
        .filter(|r| *r > 0.0)
        .collect();
    assert!(rates.len() >= 8, "too few rate samples: {rates:?}");
    let steady = &rates[2..rates.len() - 2];
    let mean = steady.iter().sum::<f64>() / steady.len() as f64;
    assert!(
        (mean - RATE).abs() < RATE * 0.2,
        "mean rate {mean} vs {RATE}: {rates:?}"
    );
    let latency = metric(
        &agent,
        &format!("flmon_kafka_topic_latency_seconds{{topic=\"{UPDATES}\"}}"),
    );
    let sampled: Vec<f64> = page.kafka.iter().filter_map(|k| k.latency_seconds).collect();
    // What was measured, for the record (test output is often captured).
    let measured =
        format!("rate samples {rates:?}, steady mean {mean:.1}/s at {RATE}/s; latency samples {sampled:?}\n");
    let _ = std::fs::write(
        std::env::temp_dir().join("flmon-agent-kafka-measured.txt"),
        measured,
    );
    assert!(
        !sampled.is_empty() && sampled.iter().all(|l| *l < 5.0),
        "latency samples {sampled:?} (last {latency:?})"
    );

    // Known positions: partition 0 ten behind the end, partition 1 at 0 below a log start of 20,
    // partition 2 never committed.
    let marks = watermarks(&bootstrap);
    let total: i64 = marks.iter().map(|(_, h)| h).sum();
    assert_eq!(total as f64, RATE * SECONDS);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(UPDATES, 0, Offset::Offset(marks[0].1 - 10))
        .unwrap();
    tpl.add_partition_offset(UPDATES, 1, Offset::Offset(0)).unwrap();
    member.commit(&tpl, CommitMode::Sync).unwrap();
    let mut delete = TopicPartitionList::new();
    delete
        .add_partition_offset(UPDATES, 1, Offset::Offset(20))
        .unwrap();
    admin.delete_records(&delete, &AdminOptions::new()).await.unwrap();

    let lag = |p: i32| {
        format!(
            "flmon_kafka_consumergroup_lag{{consumergroup=\"{GROUP}\",topic=\"{UPDATES}\",partition=\"{p}\"}}"
        )
    };
    let expected_p1 = (marks[1].1 - 20) as f64;
    wait_for(
        "the committed positions in the agent's lag",
        Duration::from_secs(20),
        || metric(&agent, &lag(0)) == Some(10.0) && metric(&agent, &lag(1)) == Some(expected_p1),
    )
    .await;
    assert_eq!(metric(&agent, &lag(2)), None, "an unknown offset has unknown lag");
    assert_eq!(
        metric(
            &agent,
            &format!("flmon_kafka_consumergroup_partitions_unknown{{consumergroup=\"{GROUP}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &agent,
            &format!("flmon_kafka_consumergroup_lag_sum{{consumergroup=\"{GROUP}\"}}")
        ),
        Some(10.0 + expected_p1)
    );
    assert_eq!(
        metric(
            &agent,
            &format!("flmon_kafka_consumergroup_partitions_unknown{{consumergroup=\"{IDLE_GROUP}\"}}")
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &agent,
            &format!("flmon_kafka_consumergroup_lag_sum{{consumergroup=\"{IDLE_GROUP}\"}}")
        ),
        None
    );
    for (p, (low, high)) in marks.iter().enumerate() {
        let hw = format!("flmon_kafka_partition_high_watermark{{topic=\"{UPDATES}\",partition=\"{p}\"}}");
        assert_eq!(metric(&agent, &hw), Some(*high as f64));
        if p == 1 {
            let lw = format!("flmon_kafka_partition_low_watermark{{topic=\"{UPDATES}\",partition=\"1\"}}");
            assert_eq!(metric(&agent, &lw), Some(20.0));
        } else {
            assert_eq!(*low, 0);
        }
    }

    // The agent never joined the group: still one member (ours), same generation.
    assert_eq!(
        rebalances.load(Ordering::SeqCst),
        generations_before,
        "the group went through a rebalance"
    );
    let groups = member
        .fetch_group_list(Some(GROUP), Duration::from_secs(10))
        .unwrap();
    let group = groups.groups().iter().find(|g| g.name() == GROUP).unwrap();
    let members: Vec<&str> = group.members().iter().map(|m| m.client_id()).collect();
    assert_eq!(members, ["fl-test-member"]);
    assert_eq!(group.state(), "Stable");
    let idle = member
        .fetch_group_list(Some(IDLE_GROUP), Duration::from_secs(10))
        .unwrap();
    assert!(
        idle.groups().iter().all(|g| g.members().is_empty()),
        "the agent joined the idle group"
    );

    // Broker restart: the agent keeps serving, reports the outage, and recovers by itself.
    stop_member.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    drop(member);
    let mut kafka = tokio::task::spawn_blocking(move || {
        kafka.stop();
        kafka
    })
    .await
    .unwrap();
    wait_for(
        "flmon_kafka_up 0 while the broker is down",
        Duration::from_secs(30),
        || metric(&agent, "flmon_kafka_up") == Some(0.0),
    )
    .await;
    assert!(
        !agent.shared.snapshot.body().is_empty(),
        "the agent serves during the outage"
    );
    assert_eq!(
        metric(&agent, "flmon_agent_collector_success{collector=\"kafka\"}"),
        Some(0.0)
    );
    let kafka = tokio::task::spawn_blocking(move || {
        kafka.restart().unwrap();
        kafka
    })
    .await
    .unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    for i in 0..30 {
        producer
            .send(
                BaseRecord::<(), [u8]>::to(UPDATES)
                    .payload(&[1u8; 10][..])
                    .partition(i % 3),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let hw0 = format!("flmon_kafka_partition_high_watermark{{topic=\"{UPDATES}\",partition=\"0\"}}");
    let expected = RATE * SECONDS / 3.0 + 10.0;
    wait_for(
        "Kafka metrics after the broker restart",
        Duration::from_secs(90),
        || metric(&agent, "flmon_kafka_up") == Some(1.0) && metric(&agent, &hw0) == Some(expected),
    )
    .await;
    assert_eq!(
        metric(&agent, "flmon_agent_collector_success{collector=\"kafka\"}"),
        Some(1.0)
    );
    agent.stop().await.unwrap();
    drop(kafka);
}
