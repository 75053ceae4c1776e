use super::*;
use crate::analysis::RoundEnd;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as KubeCondition;

fn at(second: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(second).expect("valid time"))
}

/// The analysis of rounds 1..=n whose losses are `losses` (accuracy 1 − loss/3, 4 of 4 clients).
fn analysis_of(config: AnalysisConfig, losses: &[f64]) -> Analysis {
    let mut analyzer = crate::analysis::Analyzer::new(config).expect("valid settings");
    for (i, loss) in losses.iter().enumerate() {
        analyzer.push_round(&RoundEnd {
            run_id: Some("run".into()),
            round: i as u64 + 1,
            global_loss: Some(*loss),
            global_accuracy: loss.is_finite().then(|| 1.0 - loss / 3.0),
            participants: Some(4),
            expected_participants: Some(4),
            ..RoundEnd::default()
        });
    }
    analyzer.analysis()
}

fn no_rounds() -> Analysis {
    analysis_of(AnalysisConfig::default(), &[])
}

const RUNNING: Pods = Pods {
    selected: 3,
    running: 3,
    finished: 0,
};

#[test]
fn the_spec_defaults_become_the_analysis_defaults() {
    let config = analysis_config(&AnalysisSpec::default()).expect("defaults are valid");
    assert_eq!(config, AnalysisConfig::default());
}

#[test]
fn an_accuracy_primary_metric_is_kept_and_loss_may_fall_back_to_accuracy() {
    let spec = AnalysisSpec {
        primary_metric: PrimaryMetric::Accuracy,
        ..AnalysisSpec::default()
    };
    assert_eq!(
        analysis_config(&spec).expect("valid").primary_metric,
        Some(Metric::Accuracy)
    );
}

#[test]
fn a_window_the_analysis_cannot_hold_is_rejected_naming_the_field() {
    let spec = AnalysisSpec {
        window: 100,
        ..AnalysisSpec::default()
    };
    let error = analysis_config(&spec).expect_err("the CRD allows 1000, the analysis 64");
    assert_eq!(error.field, "window");
    assert_eq!(error.value, "100");
}

#[test]
fn without_rounds_the_phase_is_pending_without_pods_and_waiting_with_them() {
    assert_eq!(phase(&no_rounds(), Pods::default(), None), Phase::Pending);
    assert_eq!(phase(&no_rounds(), RUNNING, Some(Phase::Pending)), Phase::Waiting);
}

#[test]
fn a_final_phase_survives_an_operator_restart_after_the_pods_are_gone() {
    assert_eq!(
        phase(&no_rounds(), Pods::default(), Some(Phase::Converged)),
        Phase::Converged
    );
    // A new job's pods running again: back to waiting for its first round.
    assert_eq!(
        phase(&no_rounds(), RUNNING, Some(Phase::Completed)),
        Phase::Waiting
    );
}

#[test]
fn rounds_completing_mean_training() {
    let a = analysis_of(AnalysisConfig::default(), &[2.3, 2.0, 1.7]);
    assert_eq!(phase(&a, RUNNING, Some(Phase::Waiting)), Phase::Training);
}

#[test]
fn a_non_finite_loss_is_diverged_even_after_the_pods_finished() {
    let a = analysis_of(AnalysisConfig::default(), &[2.3, 2.0, f64::NAN]);
    assert_eq!(phase(&a, RUNNING, None), Phase::Diverged);
    let finished = Pods {
        selected: 3,
        running: 0,
        finished: 3,
    };
    assert_eq!(phase(&a, finished, None), Phase::Diverged);
}

#[test]
fn reaching_the_target_loss_is_converged() {
    let config = AnalysisConfig {
        target_loss: Some(0.5),
        ..AnalysisConfig::default()
    };
    let a = analysis_of(config, &[2.3, 1.0, 0.4]);
    assert_eq!(phase(&a, RUNNING, None), Phase::Converged);
}

#[test]
fn finished_pods_without_a_target_complete_the_job() {
    let a = analysis_of(AnalysisConfig::default(), &[2.3, 2.0, 1.7]);
    let finished = Pods {
        selected: 6,
        running: 0,
        finished: 6,
    };
    assert_eq!(phase(&a, finished, None), Phase::Completed);
    assert_eq!(phase(&a, Pods::default(), None), Phase::Completed, "pods deleted");
    let restarting = Pods {
        selected: 6,
        running: 0,
        finished: 0,
    };
    assert_eq!(phase(&a, restarting, None), Phase::Training, "pods not finished");
}

#[test]
fn more_rounds_than_stall_rounds_without_improvement_is_stalled() {
    // Round 1 is the best; rounds 2..=13 are 12 rounds without improvement, more than 10.
    let mut losses = vec![1.0];
    losses.extend(std::iter::repeat_n(1.2, 12));
    let a = analysis_of(AnalysisConfig::default(), &losses);
    assert_eq!(phase(&a, RUNNING, None), Phase::Stalled);
}

#[test]
fn the_training_status_carries_the_last_round_and_leaves_non_finite_numbers_out() {
    let a = analysis_of(AnalysisConfig::default(), &[2.3, 2.0, f64::NAN]);
    let status = training_status(
        &FLMonitorStatus::default(),
        &a,
        Phase::Diverged,
        Vec::new(),
        Some(3),
        &at(100),
    );
    assert_eq!(status.round, Some(3));
    assert_eq!(status.global_loss, None, "NaN cannot be written in JSON");
    assert_eq!(status.active_clients, Some(4));
    let convergence = status.convergence.expect("rounds were analysed");
    assert_eq!(convergence.state, ConvergenceState::Diverged);
    assert_eq!(convergence.best_loss, Some(2.0));
    let diverged = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Diverged")
        .expect("Diverged condition");
    assert_eq!(
        (diverged.status.as_str(), diverged.reason.as_str()),
        ("True", "NonFiniteLoss")
    );
    assert_eq!(diverged.observed_generation, Some(3));
    assert_eq!(status.conditions.len(), 4);
}

#[test]
fn an_unchanged_analysis_writes_nothing_and_a_new_round_writes_only_what_moved() {
    let a = analysis_of(AnalysisConfig::default(), &[2.3, 2.0]);
    let first = training_status(
        &FLMonitorStatus::default(),
        &a,
        Phase::Training,
        Vec::new(),
        Some(1),
        &at(100),
    );
    let again = training_status(&first, &a, Phase::Training, Vec::new(), Some(1), &at(200));
    assert!(training_changes(&first, &again).is_empty());

    let b = analysis_of(AnalysisConfig::default(), &[2.3, 2.0, 1.8]);
    let next = training_status(&first, &b, Phase::Training, Vec::new(), Some(1), &at(300));
    let changes = training_changes(&first, &next);
    assert!(changes.contains_key("round"));
    assert!(changes.contains_key("globalLoss"));
    assert!(!changes.contains_key("phase"));
    assert!(!changes.contains_key("activeClients"));
    // Conditions keep their transition times while their status holds.
    for condition in &next.conditions {
        assert_eq!(condition.last_transition_time, at(100), "{}", condition.type_);
    }
}

#[test]
fn a_field_that_went_away_is_patched_to_null() {
    let current = FLMonitorStatus {
        global_loss: Some(0.5),
        ..FLMonitorStatus::default()
    };
    let status = FLMonitorStatus::default();
    let changes = training_changes(&current, &status);
    assert_eq!(changes["globalLoss"], Value::Null);
}

fn with_condition(type_: &str, status: &str) -> FLMonitorStatus {
    FLMonitorStatus {
        conditions: vec![KubeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: at(1),
        }],
        ..FLMonitorStatus::default()
    }
}

#[test]
fn a_condition_turning_true_is_an_event_and_a_first_false_is_not() {
    let events = transition_events(
        &with_condition("Stalled", "False"),
        &with_condition("Stalled", "True"),
    );
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].reason, events[0].warning), ("Stalled", true));

    let events = transition_events(&FLMonitorStatus::default(), &with_condition("Stalled", "False"));
    assert!(events.is_empty());

    let events = transition_events(
        &with_condition("Stalled", "True"),
        &with_condition("Stalled", "False"),
    );
    assert_eq!((events[0].reason, events[0].warning), ("StallCleared", false));

    let events = transition_events(&FLMonitorStatus::default(), &with_condition("Converged", "True"));
    assert_eq!((events[0].reason, events[0].warning), ("Converged", false));
}

#[test]
fn a_phase_change_is_an_event_naming_both_phases() {
    let current = FLMonitorStatus {
        phase: Some(Phase::Waiting),
        ..FLMonitorStatus::default()
    };
    let status = FLMonitorStatus {
        phase: Some(Phase::Training),
        round: Some(1),
        ..FLMonitorStatus::default()
    };
    let events = transition_events(&current, &status);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].note, "phase Waiting → Training at round 1");
}

fn summary(trend: Trend, straggler: bool) -> ClientSummary {
    ClientSummary {
        client_id: "site-1".into(),
        first_round: 1,
        last_round: 5,
        rounds_participated: 5,
        rounds_failed: 0,
        participation_rate: 1.0,
        mean_training_seconds: Some(10.0),
        std_training_seconds: Some(1.0),
        consistency: Some(0.9),
        trend,
        relative_slope: Some(0.0),
        straggler,
        slow_rounds: 0,
        last_loss: None,
        last_accuracy: None,
        samples: 0,
    }
}

#[test]
fn annotations_are_patched_only_where_they_differ() {
    let desired = desired_annotations(&summary(Trend::Slowing, true));
    let patch = annotation_patch(None, &desired).expect("nothing there yet");
    assert_eq!(
        patch,
        json!({"metadata": {"annotations": {"flmon.io/client-trend": "slowing", "flmon.io/straggler": "true"}}})
    );
    let current: BTreeMap<String, String> = [
        ("flmon.io/client-trend".to_owned(), "slowing".to_owned()),
        ("flmon.io/straggler".to_owned(), "false".to_owned()),
        ("other".to_owned(), "kept".to_owned()),
    ]
    .into();
    let patch = annotation_patch(Some(&current), &desired).expect("straggler changed");
    assert_eq!(
        patch,
        json!({"metadata": {"annotations": {"flmon.io/straggler": "true"}}})
    );
    let mut same = current.clone();
    same.insert("flmon.io/straggler".into(), "true".into());
    assert_eq!(annotation_patch(Some(&same), &desired), None);
}

#[test]
fn an_unknown_trend_is_not_written() {
    let desired = desired_annotations(&summary(Trend::Unknown, false));
    assert_eq!(desired.len(), 1);
    assert_eq!(desired[ANNOTATION_STRAGGLER], "false");
}

#[test]
fn status_values_keep_five_significant_digits_for_kubectl() {
    assert_eq!(crate::analysis::stats::significant(0.2611684486902472), 0.26117);
    assert_eq!(crate::analysis::stats::significant(0.9488888888888888), 0.94889);
    assert_eq!(crate::analysis::stats::significant(1.234567), 1.2346);
    assert_eq!(crate::analysis::stats::significant(1.23456e-5), 1.2346e-5);
    assert_eq!(crate::analysis::stats::significant(0.0), 0.0);
}
