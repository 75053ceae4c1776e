//! Property tests: the event, statistics, JSON and `/proc` parsers never panic, whatever the input,
//! and what they accept obeys the schema's rules.

// Test helpers outside #[test] functions unwrap too: a failure stops the test where it happened.
#![allow(clippy::unwrap_used)]

use flmon_agent::collectors::{cgroup, procfs};
use flmon_agent::events::{Event, for_each_event, parse_batch, validate_batch};
use flmon_agent::json;
use flmon_agent::librdkafka::{self, LibrdkafkaState};
use proptest::prelude::*;

const FIELDS: &[&str] = &[
    "type",
    "run_id",
    "round",
    "global_loss",
    "global_accuracy",
    "participants",
    "expected_participants",
    "duration_seconds",
    "learning_rate",
    "messages_sent",
    "time",
    "client_id",
    "loss",
    "accuracy",
    "training_seconds",
    "samples",
    "bogus",
];

/// JSON-ish values, including Python's non-finite tokens and near-miss spellings.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("NaN".to_owned()),
        Just("Infinity".to_owned()),
        Just("-Infinity".to_owned()),
        Just("-Inf".to_owned()),
        Just("\"round_end\"".to_owned()),
        Just("\"client_update\"".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        (0.0f64..2.0).prop_map(|f| f.to_string()),
        "[a-z0-9 \\\\\"-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("[1,{}]".to_owned()),
        Just("{\"a\":".to_owned()),
    ]
}

fn event() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(FIELDS), value()), 0..10).prop_map(|fields| {
        let body: Vec<String> = fields.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

fn batch() -> impl Strategy<Value = String> {
    (prop::collection::vec(event(), 0..6), 0u8..3).prop_map(|(events, shape)| match shape {
        0 => events.join("\n"),
        1 => format!("[{}]", events.join(",")),
        _ => events.join("\r\n\n"),
    })
}

/// Mostly valid events (non-finite losses, unknown fields, a missing client id), and now and then
/// a broken one, so that whole batches are accepted as often as rejected.
fn mostly_valid_event() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        (0.0f64..5.0).prop_map(|f| f.to_string()),
        Just("NaN".to_owned()),
        Just("Infinity".to_owned()),
        Just("null".to_owned()),
    ];
    prop_oneof![
        (0u64..50, number.clone(), 0u64..20).prop_map(|(round, loss, n)| format!(
            r#"{{"type":"round_end","run_id":"r","round":{round},"global_loss":{loss},"participants":{n},"extra":1}}"#
        )),
        (0u64..50, number, prop::option::of("[a-z0-9-]{1,8}")).prop_map(|(round, loss, client)| {
            let client = client.map_or(String::new(), |c| format!(r#","client_id":"{c}""#));
            format!(r#"{{"type":"client_update","round":{round},"loss":{loss}{client}}}"#)
        }),
        event(),
    ]
}

fn mostly_valid_batch() -> impl Strategy<Value = String> {
    (prop::collection::vec(mostly_valid_event(), 1..8), any::<bool>()).prop_map(|(events, array)| {
        if array {
            format!("[{}]", events.join(","))
        } else {
            events.join("\n")
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn event_batches_of_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_batch(&bytes, None);
        let _ = parse_batch(&bytes, Some("site-1"));
        let _ = json::parse(&bytes);
    }

    #[test]
    fn accepted_events_obey_the_schema(body in batch()) {
        match parse_batch(body.as_bytes(), None) {
            Ok(batch) => {
                for e in batch.events {
                    match e {
                        Event::RoundEnd(r) => {
                            prop_assert!(r.global_accuracy.is_none_or(|a| a.is_nan() || (0.0..=1.0).contains(&a)));
                            prop_assert!(r.duration_seconds.is_none_or(|d| d.is_finite() && d >= 0.0));
                        }
                        Event::ClientUpdate(u) => {
                            prop_assert!(!u.client_id.is_empty());
                            prop_assert!(u.accuracy.is_none_or(|a| a.is_nan() || (0.0..=1.0).contains(&a)));
                        }
                    }
                }
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for e in errors {
                    prop_assert!(e.line >= 1);
                    prop_assert!(!e.expected.is_empty());
                }
            }
        }
    }

    /// The agent applies a batch in two passes (validate, then apply event by event): the two
    /// passes accept exactly what one parse accepts, and hand over the same events in order.
    #[test]
    fn two_pass_ingest_accepts_and_applies_what_one_parse_does(body in mostly_valid_batch(), client in prop::option::of(Just("site-1"))) {
        let once = parse_batch(body.as_bytes(), client);
        match validate_batch(body.as_bytes(), client) {
            Ok(unknown_fields) => {
                let mut events = Vec::new();
                for_each_event(body.as_bytes(), client, &mut |e| events.push(e));
                let batch = once.unwrap();
                prop_assert_eq!(batch.unknown_fields, unknown_fields);
                // Compared as text: NaN, a valid loss, is not equal to itself.
                prop_assert_eq!(format!("{:?}", batch.events), format!("{events:?}"));
            }
            Err(errors) => prop_assert_eq!(once.unwrap_err(), errors),
        }
    }

    #[test]
    fn statistics_of_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut state = LibrdkafkaState::default();
        let _ = state.accept(&bytes);
        let _ = state.render();
    }

    #[test]
    fn statistics_with_any_numbers_never_give_negative_lag(
        hi in any::<i64>(), lo in any::<i64>(), committed in any::<i64>(), ls in prop::option::of(any::<i64>()),
        partition in -3i64..5, tx in any::<i64>(),
    ) {
        let ls = ls.map_or(String::new(), |l| format!(",\"ls_offset\":{l}"));
        let doc = format!(
            "{{\"name\":\"c\",\"type\":\"consumer\",\"txmsgs\":{tx},\"topics\":{{\"t\":{{\"topic\":\"t\",\"partitions\":{{\"{partition}\":{{\"partition\":{partition},\"hi_offset\":{hi},\"lo_offset\":{lo},\"committed_offset\":{committed}{ls}}}}}}}}}}}"
        );
        let stats = librdkafka::parse(doc.as_bytes()).unwrap();
        for l in &stats.lags {
            prop_assert!(l.partition >= 0);
            prop_assert!(committed >= 0, "lag from an unknown offset");
            let end = stats_end(hi, ls.is_empty());
            prop_assert!(l.lag <= u64::try_from(end).unwrap_or(0));
        }
    }

    #[test]
    fn proc_and_cgroup_parsers_never_panic(text in "\\PC{0,300}") {
        let _ = procfs::parse_pid_stat(&text);
        let _ = procfs::parse_stat(&text);
        let _ = procfs::parse_net_dev(&text);
        let _ = procfs::parse_cgroup_membership(&text);
        let _ = procfs::kb_field(&text, "MemTotal");
        let _ = procfs::parse_pid_io(&text);
        let _ = cgroup::parse_cpu_max(&text);
        let _ = cgroup::parse_memory_max(&text);
        let _ = cgroup::parse_io_stat(&text);
        let _ = cgroup::parse_blkio_service_bytes(&text);
    }
}

/// The end offset the lag is measured to when `ls_offset` is absent: the high watermark. (With an
/// `ls_offset`, the lag is bounded by it, which is at most any value; only the bound below matters.)
fn stats_end(hi: i64, no_ls: bool) -> i64 {
    if no_ls { hi } else { i64::MAX }
}
