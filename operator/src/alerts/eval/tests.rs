//! The evaluator on a fake clock: `for`, debounce, staleness, scope, phases.

use super::*;
use flmon_crds::names::metrics as m;

/// The fake clock: `secs` after a fixed start.
fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn rule(name: &str, condition: &str, extra: &str) -> AlertRule {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: flmon.io/v1alpha1
kind: AlertRule
metadata: {{name: {name}, namespace: flmon-system}}
spec:
  condition: {condition}
  severity: critical
  message: {name} happened
{extra}"
    ))
    .expect("test rule parses")
}

fn high_loss() -> AlertRule {
    rule(
        "high-global-loss",
        "{metric: globalLoss, op: '>', threshold: 2.0, for: 10m}",
        "  activePhases: [Training]",
    )
}

fn stalled() -> AlertRule {
    rule(
        "training-stalled",
        "{metric: roundsWithoutImprovement, op: '>', threshold: 10}",
        "  activePhases: [Training]",
    )
}

fn mnist() -> MonitorRef {
    MonitorRef {
        namespace: "fl".into(),
        name: "mnist".into(),
        phase: Some(Phase::Training),
        scrape_interval: Duration::from_secs(30),
    }
}

fn loss(value: f64, at: u64) -> Sample {
    Sample::new(m::GLOBAL_LOSS, &[("pod", "mnist-server")], value, t(at))
}

fn rounds(value: f64, at: u64) -> Sample {
    Sample::new(m::ROUNDS_WITHOUT_IMPROVEMENT, &[], value, t(at))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn changes(evaluation: &Evaluation) -> Vec<Change> {
    evaluation.transitions.iter().map(|t| t.change).collect()
}

fn notified(evaluation: &Evaluation) -> Vec<NotificationKind> {
    evaluation.notify.iter().map(|n| n.kind).collect()
}

#[test]
fn an_alert_is_pending_until_its_condition_has_held_for_for_then_fires() {
    let rule = high_loss();
    let mut evaluator = Evaluator::new();
    let mut fired_at = None;
    for step in 0..=24 {
        let now = step * 30;
        let evaluation = evaluator.evaluate(t(now), &mnist(), &[&rule], &[loss(2.3, now)]);
        if now < 600 {
            assert!(evaluation.firing.is_empty(), "fired at {now}s, before `for: 10m`");
            assert_eq!(evaluation.pending.len(), 1, "pending at {now}s");
            assert!(evaluation.notify.is_empty());
        } else if fired_at.is_none() {
            fired_at = Some(now);
            assert_eq!(changes(&evaluation), [Change::Firing]);
            assert_eq!(notified(&evaluation), [NotificationKind::Firing]);
        }
        if now == 0 {
            assert_eq!(changes(&evaluation), [Change::Pending]);
        }
    }
    assert_eq!(
        fired_at,
        Some(600),
        "fires at the first evaluation 10m after the first one that saw it"
    );
}

#[test]
fn a_firing_alert_carries_the_prometheus_rules_labels_and_annotations() {
    let rule = high_loss();
    let mut evaluator = Evaluator::new();
    evaluator.evaluate(t(0), &mnist(), &[&rule], &[loss(2.3, 0)]);
    let evaluation = evaluator.evaluate(t(600), &mnist(), &[&rule], &[loss(2.5, 600)]);
    let alert = &evaluation.firing[0];
    assert_eq!(
        alert.labels,
        labels(&[
            ("alertname", "HighGlobalLoss"),
            ("flmon_monitor", "mnist"),
            ("flmon_rule", "flmon-system/high-global-loss"),
            ("namespace", "fl"),
            ("severity", "critical"),
        ])
    );
    assert_eq!(alert.annotations["summary"], "high-global-loss happened");
    assert_eq!(
        alert.annotations["description"],
        "high-global-loss happened on FLMonitor fl/mnist: globalLoss > 2 (AlertRule flmon-system/high-global-loss)."
    );
    assert_eq!(alert.value, 2.5);
    assert_eq!(alert.active_at, t(0));
    assert_eq!(alert.fired_at, Some(t(600)));
}

/// The generated PrometheusRule and the evaluator must put the same labels and annotations on
/// an alert, or Alertmanager cannot deduplicate them.
#[test]
fn labels_and_annotations_match_the_generated_prometheus_rule() {
    let monitor: FLMonitor = serde_yaml_ng::from_str(
        "apiVersion: flmon.io/v1alpha1
kind: FLMonitor
metadata: {name: mnist, namespace: fl}
spec: {selector: {matchLabels: {app: mnist}}}",
    )
    .expect("test monitor parses");
    let mut rule = rule(
        "gpu-idle",
        "{metric: gpuUsage, op: '<', threshold: 12.5, for: 0}",
        "  labels: {team: vision}",
    );
    rule.spec.message = "GPU \"idle\": check the\ndata loader".into();
    let generated = crate::controller::build::build(&monitor, &[&rule])
        .prometheus_rule
        .expect("rules are on by default");
    let expected = &generated.data["spec"]["groups"][0]["rules"][0];
    let sample = Sample::new(m::GPU_UTILIZATION_RATIO, &[("pod", "p"), ("gpu", "1")], 0.1, t(0));
    let evaluation = Evaluator::new().evaluate(t(0), &MonitorRef::of(&monitor), &[&rule], &[sample]);
    let alert = &evaluation.firing[0];
    assert_eq!(serde_json::json!(alert.annotations), expected["annotations"]);
    let mut rule_labels: Labels = serde_json::from_value(expected["labels"].clone()).expect("labels");
    rule_labels.insert(
        "alertname".into(),
        expected["alert"].as_str().expect("alert name").into(),
    );
    rule_labels.extend(labels(&[
        ("namespace", "fl"),
        ("flmon_monitor", "mnist"),
        ("pod", "p"),
        ("gpu", "1"),
    ]));
    assert_eq!(alert.labels, rule_labels);
}

#[test]
fn for_zero_fires_at_the_first_evaluation_that_sees_the_condition() {
    let rule = stalled();
    let mut evaluator = Evaluator::new();
    let quiet = evaluator.evaluate(t(0), &mnist(), &[&rule], &[rounds(10.0, 0)]);
    assert!(quiet.transitions.is_empty(), "10 is not > 10");
    let evaluation = evaluator.evaluate(t(30), &mnist(), &[&rule], &[rounds(11.0, 30)]);
    assert_eq!(changes(&evaluation), [Change::Pending, Change::Firing]);
    assert_eq!(evaluation.firing.len(), 1);
    assert_eq!(notified(&evaluation), [NotificationKind::Firing]);
}

#[test]
fn a_condition_that_breaks_before_for_is_cleared_silently_and_for_counts_afresh() {
    let rule = high_loss();
    let mut evaluator = Evaluator::new();
    evaluator.evaluate(t(0), &mnist(), &[&rule], &[loss(2.3, 0)]);
    let cleared = evaluator.evaluate(t(300), &mnist(), &[&rule], &[loss(1.0, 300)]);
    assert_eq!(changes(&cleared), [Change::Cleared]);
    assert!(cleared.notify.is_empty() && cleared.resolved.is_empty());
    evaluator.evaluate(t(330), &mnist(), &[&rule], &[loss(2.3, 330)]);
    let before = evaluator.evaluate(t(900), &mnist(), &[&rule], &[loss(2.3, 900)]);
    assert!(before.firing.is_empty(), "10m have not passed since 330s");
    let after = evaluator.evaluate(t(930), &mnist(), &[&rule], &[loss(2.3, 930)]);
    assert_eq!(after.firing.len(), 1);
}

#[test]
fn events_are_not_repeated_within_debounce_and_repeat_after_it() {
    let rule = stalled(); // debounce: the 5m default
    let mut evaluator = Evaluator::new();
    let mut notified_at = Vec::new();
    for step in 0..=24 {
        let now = step * 30;
        let evaluation = evaluator.evaluate(t(now), &mnist(), &[&rule], &[rounds(20.0 + step as f64, now)]);
        assert_eq!(evaluation.firing.len(), 1, "firing at {now}s");
        if !evaluation.notify.is_empty() {
            assert_eq!(notified(&evaluation), [NotificationKind::Firing]);
            notified_at.push(now);
        }
    }
    assert_eq!(
        notified_at,
        [0, 300, 600],
        "a reminder every 5m while it keeps firing"
    );
}

#[test]
fn a_custom_debounce_is_honoured() {
    let rule = rule(
        "stalled-fast",
        "{metric: roundsWithoutImprovement, op: '>', threshold: 10}",
        "  debounce: 1m",
    );
    let mut evaluator = Evaluator::new();
    let notified_at: Vec<u64> = (0..=6)
        .map(|step| step * 30)
        .filter(|&now| {
            !evaluator
                .evaluate(t(now), &mnist(), &[&rule], &[rounds(50.0, now)])
                .notify
                .is_empty()
        })
        .collect();
    assert_eq!(notified_at, [0, 60, 120, 180]);
}

#[test]
fn a_flap_within_debounce_is_silent_both_ways_and_notified_again_after_it() {
    let rule = stalled();
    let mut evaluator = Evaluator::new();
    let mut step =
        |now: u64, value: f64| evaluator.evaluate(t(now), &mnist(), &[&rule], &[rounds(value, now)]);
    assert_eq!(notified(&step(0, 20.0)), [NotificationKind::Firing]);
    let resolved = step(60, 0.0);
    assert_eq!(changes(&resolved), [Change::Resolved]);
    assert_eq!(notified(&resolved), [NotificationKind::Resolved]);
    let refired = step(90, 20.0);
    assert_eq!(
        changes(&refired),
        [Change::Pending, Change::Firing],
        "a new instance"
    );
    assert!(
        refired.notify.is_empty(),
        "fired 90s after the last Event: within 5m"
    );
    let re_resolved = step(120, 0.0);
    assert_eq!(changes(&re_resolved), [Change::Resolved]);
    assert!(re_resolved.notify.is_empty(), "its firing was never told");
    assert_eq!(
        notified(&step(330, 20.0)),
        [NotificationKind::Firing],
        "330s after the last one"
    );
}

#[test]
fn a_long_suppressed_flap_is_caught_up_by_the_reminder() {
    let rule = stalled();
    let mut evaluator = Evaluator::new();
    let mut step =
        |now: u64, value: f64| evaluator.evaluate(t(now), &mnist(), &[&rule], &[rounds(value, now)]);
    step(0, 20.0);
    step(30, 0.0);
    assert!(step(60, 20.0).notify.is_empty());
    for now in (90..300).step_by(30) {
        assert!(step(now, 20.0).notify.is_empty(), "{now}s");
    }
    assert_eq!(notified(&step(300, 20.0)), [NotificationKind::Firing]);
}

#[test]
fn a_sample_older_than_two_scrape_intervals_is_absent_and_resolves_the_alert_once() {
    let rule = stalled();
    let mut evaluator = Evaluator::new();
    let samples = [rounds(20.0, 0)];
    assert_eq!(
        evaluator
            .evaluate(t(0), &mnist(), &[&rule], &samples)
            .firing
            .len(),
        1
    );
    let still = evaluator.evaluate(t(60), &mnist(), &[&rule], &samples);
    assert_eq!(still.firing.len(), 1, "exactly two intervals old is still fresh");
    let resolved = evaluator.evaluate(t(61), &mnist(), &[&rule], &samples);
    assert!(resolved.firing.is_empty());
    assert_eq!(resolved.resolved.len(), 1);
    assert_eq!(resolved.resolved[0].resolved_at, Some(t(61)));
    assert_eq!(resolved.resolved[0].fired_at, Some(t(0)));
    assert_eq!(notified(&resolved), [NotificationKind::Resolved]);
    let after = evaluator.evaluate(t(90), &mnist(), &[&rule], &samples);
    assert!(after.resolved.is_empty() && after.transitions.is_empty() && after.notify.is_empty());
}

#[test]
fn the_window_follows_the_monitors_scrape_interval() {
    let rule = stalled();
    let fast = MonitorRef {
        scrape_interval: Duration::from_secs(10),
        ..mnist()
    };
    let samples = [rounds(20.0, 0)];
    assert_eq!(
        Evaluator::new()
            .evaluate(t(20), &fast, &[&rule], &samples)
            .firing
            .len(),
        1
    );
    assert!(
        Evaluator::new()
            .evaluate(t(21), &fast, &[&rule], &samples)
            .firing
            .is_empty()
    );
}

#[test]
fn the_newest_fresh_sample_of_a_series_counts() {
    let rule = stalled();
    let samples = [rounds(20.0, 0), rounds(5.0, 30), rounds(30.0, 90)];
    let value = |now| expression_value(&rule, &mnist(), &samples, t(now));
    assert_eq!(value(0).len(), 1);
    assert!(value(30).is_empty(), "5 replaced 20");
    assert!(value(89).is_empty(), "the sample at 90s is in the future");
    assert_eq!(value(90)[0].1, 30.0);
}

#[test]
fn per_pod_alerts_are_separate_and_a_pod_whose_samples_stop_resolves_alone() {
    let rule = rule("high-cpu", "{metric: cpuUsage, op: '>', threshold: 90}", "");
    let cpu = |pod, value, at| Sample::new(m::CPU_USAGE_PERCENT, &[("pod", pod)], value, t(at));
    let mut evaluator = Evaluator::new();
    let both = evaluator.evaluate(
        t(0),
        &mnist(),
        &[&rule],
        &[cpu("a", 95.0, 0), cpu("b", 99.0, 0), cpu("c", 10.0, 0)],
    );
    let pods: Vec<Option<&str>> = both.firing.iter().map(Alert::pod).collect();
    assert_eq!(pods, [Some("a"), Some("b")]);
    assert_eq!(both.notify.len(), 2, "one Event per pod");
    // Pod b is gone: the caller stops passing its samples.
    let one = evaluator.evaluate(
        t(30),
        &mnist(),
        &[&rule],
        &[cpu("a", 95.0, 30), cpu("c", 10.0, 30)],
    );
    assert_eq!(one.firing.len(), 1);
    assert_eq!(
        one.resolved.iter().map(Alert::pod).collect::<Vec<_>>(),
        [Some("b")]
    );
    assert_eq!(
        notified(&one),
        [NotificationKind::Resolved],
        "a is within debounce"
    );
}

#[test]
fn gpu_usage_is_scaled_to_percent_per_gpu() {
    let rule = rule("gpu-hot", "{metric: gpuUsage, op: '>=', threshold: 95}", "");
    let gpu = |gpu, value| {
        Sample::new(
            m::GPU_UTILIZATION_RATIO,
            &[("pod", "p"), ("gpu", gpu), ("uuid", "GPU-x")],
            value,
            t(0),
        )
    };
    let result = expression_value(&rule, &mnist(), &[gpu("0", 0.95), gpu("1", 0.5)], t(0));
    assert_eq!(result.len(), 1);
    assert_eq!(result[0].0["gpu"], "0");
    assert!(!result[0].0.contains_key("uuid"), "only scope labels remain");
    assert_eq!(result[0].1, 0.95 * 100.0);
}

#[test]
fn consumer_lag_is_summed_over_partitions_and_topics_per_group() {
    let rule = rule("lagging", "{metric: consumerLag, op: '>', threshold: 1000}", "");
    let lag = |group, topic, partition, value| {
        Sample::new(
            m::KAFKA_CONSUMERGROUP_LAG,
            &[
                ("pod", "server"),
                ("consumergroup", group),
                ("topic", topic),
                ("partition", partition),
            ],
            value,
            t(0),
        )
    };
    let samples = [
        lag("agg", "updates", "0", 600.0),
        lag("agg", "updates", "1", 300.0),
        lag("agg", "models", "0", 200.0),
        lag("eval", "updates", "0", 999.0),
    ];
    let result = expression_value(&rule, &mnist(), &samples, t(0));
    assert_eq!(
        result,
        vec![(
            labels(&[
                ("consumergroup", "agg"),
                ("flmon_monitor", "mnist"),
                ("namespace", "fl")
            ]),
            1100.0
        )]
    );
}

#[test]
fn max_ignores_nan_unless_every_value_is_nan_and_nan_satisfies_only_not_equal() {
    let rule_gt = rule("loss-gt", "{metric: globalLoss, op: '>', threshold: 2}", "");
    let rule_ne = rule("loss-ne", "{metric: globalLoss, op: '!=', threshold: 2}", "");
    let two_pods = [
        Sample::new(m::GLOBAL_LOSS, &[("pod", "a")], f64::NAN, t(0)),
        Sample::new(m::GLOBAL_LOSS, &[("pod", "b")], 3.0, t(0)),
    ];
    assert_eq!(expression_value(&rule_gt, &mnist(), &two_pods, t(0))[0].1, 3.0);
    let nan = [loss(f64::NAN, 0)];
    assert!(expression_value(&rule_gt, &mnist(), &nan, t(0)).is_empty());
    assert!(expression_value(&rule_ne, &mnist(), &nan, t(0))[0].1.is_nan());
}

#[test]
fn active_phases_gate_the_rule_and_an_unknown_phase_evaluates_it() {
    let rule = stalled();
    let samples = [rounds(20.0, 0)];
    let converged = MonitorRef {
        phase: Some(Phase::Converged),
        ..mnist()
    };
    assert!(expression_value(&rule, &converged, &samples, t(0)).is_empty());
    let unknown = MonitorRef {
        phase: None,
        ..mnist()
    };
    assert_eq!(expression_value(&rule, &unknown, &samples, t(0)).len(), 1);
    let mut evaluator = Evaluator::new();
    evaluator.evaluate(t(0), &mnist(), &[&rule], &samples);
    let left = evaluator.evaluate(t(30), &converged, &[&rule], &[rounds(20.0, 30)]);
    assert_eq!(changes(&left), [Change::Resolved], "leaving Training resolves");
    let any_phase = rule_with_no_phases();
    assert_eq!(expression_value(&any_phase, &converged, &samples, t(0)).len(), 1);
}

fn rule_with_no_phases() -> AlertRule {
    rule(
        "stalled-always",
        "{metric: roundsWithoutImprovement, op: '>', threshold: 10}",
        "",
    )
}

#[test]
fn samples_labelled_for_another_monitor_are_ignored() {
    let rule = stalled();
    let other = |ns, monitor| {
        Sample::new(
            m::ROUNDS_WITHOUT_IMPROVEMENT,
            &[("namespace", ns), ("flmon_monitor", monitor)],
            50.0,
            t(0),
        )
    };
    assert!(
        expression_value(
            &rule,
            &mnist(),
            &[other("fl", "cifar"), other("vision", "mnist")],
            t(0)
        )
        .is_empty()
    );
    assert_eq!(
        expression_value(&rule, &mnist(), &[other("fl", "mnist")], t(0)).len(),
        1
    );
}

#[test]
fn a_rule_that_no_longer_applies_resolves_its_alerts() {
    let rule = stalled();
    let mut evaluator = Evaluator::new();
    evaluator.evaluate(t(0), &mnist(), &[&rule], &[rounds(20.0, 0)]);
    let evaluation = evaluator.evaluate(t(30), &mnist(), &[], &[rounds(20.0, 30)]);
    assert_eq!(changes(&evaluation), [Change::Resolved]);
    assert_eq!(evaluator.active_count(), 0);
}

#[test]
fn a_deleted_monitor_resolves_its_alerts_and_leaves_others_alone() {
    let rule = stalled();
    let cifar = MonitorRef {
        name: "cifar".into(),
        ..mnist()
    };
    let mut evaluator = Evaluator::new();
    evaluator.evaluate(t(0), &mnist(), &[&rule], &[rounds(20.0, 0)]);
    evaluator.evaluate(t(0), &cifar, &[&rule], &[rounds(20.0, 0)]);
    let gone = evaluator.forget_monitor(t(10), "fl", "mnist");
    assert_eq!(gone.resolved.len(), 1);
    assert_eq!(notified(&gone), [NotificationKind::Resolved]);
    assert_eq!(evaluator.active_count(), 1);
    assert_eq!(evaluator.rule_summary(&rule).firing_monitors, ["fl/cifar"]);
}

#[test]
fn the_rule_summary_lists_firing_monitors_and_the_last_firing() {
    let rule = stalled();
    let mut evaluator = Evaluator::new();
    assert_eq!(evaluator.rule_summary(&rule), RuleSummary::default());
    evaluator.evaluate(t(0), &mnist(), &[&rule], &[rounds(20.0, 0)]);
    let summary = evaluator.rule_summary(&rule);
    assert_eq!(summary.firing_monitors, ["fl/mnist"]);
    assert_eq!(summary.last_fired, Some(t(0)));
    evaluator.evaluate(t(30), &mnist(), &[&rule], &[]);
    let summary = evaluator.rule_summary(&rule);
    assert!(summary.firing_monitors.is_empty());
    assert_eq!(summary.last_fired, Some(t(0)), "kept after it resolved");
}

#[test]
fn status_alerts_name_the_rule_the_pod_and_since_when() {
    let rule = rule("high-cpu", "{metric: cpuUsage, op: '>', threshold: 90}", "");
    let sample = Sample::new(m::CPU_USAGE_PERCENT, &[("pod", "a")], 95.0, t(0));
    let evaluation = Evaluator::new().evaluate(t(0), &mnist(), &[&rule], &[sample]);
    let status = evaluation.status_alerts();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].rule, "flmon-system/high-cpu");
    assert_eq!(status[0].pod.as_deref(), Some("a"));
    assert_eq!(status[0].severity, flmon_crds::Severity::Critical);
    assert_eq!(status[0].since.0, Timestamp::try_from(t(0)).expect("in range"));
}

#[test]
fn event_notes_say_which_alert_where_and_the_value() {
    let rule = rule("high-cpu", "{metric: cpuUsage, op: '>', threshold: 90}", "");
    let mut evaluator = Evaluator::new();
    // The value as a person reads it: five significant digits.
    let sample = Sample::new(m::CPU_USAGE_PERCENT, &[("pod", "a")], 95.512_345_678, t(0));
    let firing = evaluator.evaluate(t(0), &mnist(), &[&rule], &[sample]);
    let note = &firing.notify[0];
    assert_eq!(
        (note.event_type(), note.event_reason()),
        ("Warning", "AlertFiring")
    );
    assert_eq!(
        note.event_note(),
        "HighCpu (pod=a) firing: high-cpu happened (value 95.512)"
    );
    let resolved = evaluator.evaluate(t(30), &mnist(), &[&rule], &[]);
    let note = &resolved.notify[0];
    assert_eq!(
        (note.event_type(), note.event_reason()),
        ("Normal", "AlertResolved")
    );
    assert_eq!(note.event_note(), "HighCpu (pod=a) resolved: high-cpu happened");
}

#[test]
fn debounce_memory_is_released_once_it_suppresses_nothing() {
    let rule = stalled();
    let mut evaluator = Evaluator::new();
    evaluator.evaluate(t(0), &mnist(), &[&rule], &[rounds(20.0, 0)]);
    evaluator.evaluate(t(30), &mnist(), &[&rule], &[]);
    assert_eq!(evaluator.debounce.len(), 1, "still suppressing a flap");
    evaluator.evaluate(t(301), &mnist(), &[&rule], &[]);
    assert!(evaluator.debounce.is_empty());
}
