//! Pure derivations from an [`Analysis`] to what the operator writes: a monitor's analysis
//! settings, its phase, the training fields and analysis conditions of its status (as a merge
//! patch of only what changed), the Events of their transitions, and client pods' annotations.

use std::collections::BTreeMap;

use flmon_crds::conditions;
use flmon_crds::flmonitor::MAX_LISTED_NAMES;
use flmon_crds::names::{ANNOTATION_CLIENT_TREND, ANNOTATION_STRAGGLER};
use flmon_crds::{
    AnalysisSpec, ConvergenceState, ConvergenceStatus, FLMonitorStatus, FiringAlert, Phase, PrimaryMetric,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use crate::analysis::stats;
use crate::analysis::{Analysis, AnalysisConfig, ClientSummary, ConfigError, Metric, State, Trend};
use crate::controller::status::{DesiredCondition, set_condition};

/// The analysis settings of a monitor's `spec.analysis`. `primaryMetric: Loss` (the default)
/// leaves the analysis free to fall back to accuracy while no loss arrives, as SPEC §3 says.
///
/// # Errors
/// A setting the analysis cannot use, naming the field, the value and what is expected (e.g.
/// `window` above 64).
pub fn analysis_config(spec: &AnalysisSpec) -> Result<AnalysisConfig, ConfigError> {
    let count = |field: &'static str, value: i32| {
        usize::try_from(value).map_err(|_| ConfigError {
            field,
            value: value.to_string(),
            expected: "a positive integer",
        })
    };
    let config = AnalysisConfig {
        window: count("window", spec.window)?,
        target_loss: spec.target_loss,
        target_accuracy: spec.target_accuracy,
        primary_metric: match spec.primary_metric {
            PrimaryMetric::Loss => None,
            PrimaryMetric::Accuracy => Some(Metric::Accuracy),
        },
        stall_rounds: count("stallRounds", spec.stall_rounds)? as u64,
        min_delta: spec.min_delta,
        straggler_factor: spec.straggler_factor,
        expected_clients: spec
            .expected_clients
            .map(|n| {
                u32::try_from(n).map_err(|_| ConfigError {
                    field: "expectedClients",
                    value: n.to_string(),
                    expected: "at least 1",
                })
            })
            .transpose()?,
        ..AnalysisConfig::default()
    };
    config.validate()?;
    Ok(config)
}

/// The monitor's pods as the poller sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pods {
    /// Pods labelled for the monitor and not being deleted.
    pub selected: usize,
    /// Of those, Running with a pod IP (the agents polled).
    pub running: usize,
    /// Of those, finished (`Succeeded` or `Failed`).
    pub finished: usize,
}

/// Whether `phase` ends training (the final report is written on entering it).
pub fn is_final(phase: Phase) -> bool {
    matches!(phase, Phase::Converged | Phase::Diverged | Phase::Completed)
}

/// The phase (SPEC §3), first match wins:
/// 1. no round analysed yet: the `current` final phase is kept while no agent runs (an operator
///    restart after the job ended has no history to analyse); else `Pending` with no pod,
///    `Waiting` with pods;
/// 2. `Diverged` when the Diverged condition holds (it stays: the best loss cannot recover
///    from a non-finite one in the same run);
/// 3. `Converged` when the Converged condition holds (the best value crossed the target);
/// 4. `Completed` when no agent runs any more and pods finished or are gone;
/// 5. `Stalled` when the Stalled condition holds;
/// 6. `Training`.
pub fn phase(analysis: &Analysis, pods: Pods, current: Option<Phase>) -> Phase {
    if analysis.round.is_none() {
        return match current {
            Some(phase) if is_final(phase) && pods.running == 0 => phase,
            _ if pods.selected == 0 => Phase::Pending,
            _ => Phase::Waiting,
        };
    }
    let c = &analysis.conditions;
    if c.diverged.status {
        Phase::Diverged
    } else if c.converged.status {
        Phase::Converged
    } else if pods.running == 0 && (pods.finished > 0 || pods.selected == 0) {
        Phase::Completed
    } else if c.stalled.status {
        Phase::Stalled
    } else {
        Phase::Training
    }
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

fn convergence_state(state: State) -> ConvergenceState {
    match state {
        State::WarmingUp => ConvergenceState::WarmingUp,
        State::Improving => ConvergenceState::Improving,
        State::Plateaued => ConvergenceState::Plateaued,
        State::Stalled => ConvergenceState::Stalled,
        State::Converged => ConvergenceState::Converged,
        State::Diverged => ConvergenceState::Diverged,
    }
}

/// The four analysis conditions as the status writes them.
pub fn analysis_conditions(analysis: &Analysis) -> [DesiredCondition; 4] {
    let c = &analysis.conditions;
    let desired = |type_, condition: &crate::analysis::Condition| {
        DesiredCondition::new(
            type_,
            condition.status,
            condition.reason,
            condition.message.clone(),
        )
    };
    [
        desired(conditions::CONVERGED, &c.converged),
        desired(conditions::STALLED, &c.stalled),
        desired(conditions::LOW_PARTICIPATION, &c.low_participation),
        desired(conditions::DIVERGED, &c.diverged),
    ]
}

/// `current` with the fields the analysis owns replaced: phase, round, globalLoss,
/// globalAccuracy, activeClients, convergence, stragglers, firingAlerts and the four analysis
/// conditions (their `lastTransitionTime` moves only when their status does). Non-finite numbers
/// are left out (JSON cannot carry them; the Diverged condition says why the loss is missing),
/// as is an accuracy outside 0–1.
pub fn training_status(
    current: &FLMonitorStatus,
    analysis: &Analysis,
    phase: Phase,
    firing: Vec<FiringAlert>,
    generation: Option<i64>,
    now: &Time,
) -> FLMonitorStatus {
    let mut status = current.clone();
    status.phase = Some(phase);
    status.round = analysis.round.and_then(|r| i64::try_from(r).ok());
    status.global_loss = finite(analysis.global_loss).map(stats::significant);
    status.global_accuracy = finite(analysis.global_accuracy)
        .filter(|a| (0.0..=1.0).contains(a))
        .map(stats::significant);
    status.active_clients = analysis.active_clients.and_then(|n| i32::try_from(n).ok());
    let c = &analysis.convergence;
    status.convergence = analysis.round.map(|_| ConvergenceStatus {
        state: convergence_state(c.state),
        rate: finite(c.rate),
        variance: finite(c.variance),
        best_loss: finite(c.best_loss),
        best_accuracy: finite(c.best_accuracy),
        rounds_without_improvement: i64::try_from(c.rounds_without_improvement).ok(),
        rounds_to_target: c.rounds_to_target.and_then(|r| i64::try_from(r).ok()),
    });
    status.stragglers = analysis
        .clients
        .stragglers
        .iter()
        .take(MAX_LISTED_NAMES)
        .cloned()
        .collect();
    status.firing_alerts = firing;
    for condition in analysis_conditions(analysis) {
        set_condition(&mut status.conditions, &condition, generation, now);
    }
    status
}

/// The fields the analysis owns that differ between `current` and `status`, as a merge patch of
/// `status` (an absent value becomes `null`, removing it). Empty when nothing changed, and then
/// nothing is written. `conditions` is a whole list in a merge patch, so it carries the
/// controller's conditions too, as read with the `resourceVersion` that guards the write.
pub fn training_changes(current: &FLMonitorStatus, status: &FLMonitorStatus) -> Map<String, Value> {
    let mut changes = Map::new();
    let mut put = |field: &str, differs: bool, value: Value| {
        if differs {
            changes.insert(field.to_owned(), value);
        }
    };
    put("phase", current.phase != status.phase, json!(status.phase));
    put("round", current.round != status.round, json!(status.round));
    put(
        "globalLoss",
        current.global_loss != status.global_loss,
        json!(status.global_loss),
    );
    put(
        "globalAccuracy",
        current.global_accuracy != status.global_accuracy,
        json!(status.global_accuracy),
    );
    put(
        "activeClients",
        current.active_clients != status.active_clients,
        json!(status.active_clients),
    );
    // A merge patch merges objects field by field; the whole convergence object is replaced
    // instead (absent fields as null) so that a field that went away is removed.
    put(
        "convergence",
        current.convergence != status.convergence,
        status.convergence.as_ref().map_or(Value::Null, |c| {
            json!({
                "state": c.state,
                "rate": c.rate,
                "variance": c.variance,
                "bestLoss": c.best_loss,
                "bestAccuracy": c.best_accuracy,
                "roundsWithoutImprovement": c.rounds_without_improvement,
                "roundsToTarget": c.rounds_to_target,
            })
        }),
    );
    put(
        "stragglers",
        current.stragglers != status.stragglers,
        json!(status.stragglers),
    );
    put(
        "firingAlerts",
        current.firing_alerts != status.firing_alerts,
        json!(status.firing_alerts),
    );
    put(
        "conditions",
        current.conditions != status.conditions,
        json!(status.conditions),
    );
    changes
}

/// An Event to publish about the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// The sentence `kubectl describe` shows.
    pub note: String,
}

/// The Events of a status change: each analysis condition that turned True (`Converged`,
/// `Stalled`, `LowParticipation`, `Diverged`; a warning except Converged) or back to False
/// (`StallCleared`, `ParticipationRecovered`, …), and each phase change (`PhaseChanged`). A
/// condition seen for the first time as False is no transition.
pub fn transition_events(current: &FLMonitorStatus, status: &FLMonitorStatus) -> Vec<PlannedEvent> {
    let mut events = Vec::new();
    if current.phase != status.phase
        && let Some(phase) = status.phase
    {
        let from = current.phase.map_or("none", Phase::as_str);
        let round = status.round.map_or(String::new(), |r| format!(" at round {r}"));
        events.push(PlannedEvent {
            warning: matches!(phase, Phase::Diverged | Phase::Stalled),
            reason: "PhaseChanged",
            note: format!("phase {from} → {}{round}", phase.as_str()),
        });
    }
    let kinds: [(&str, &'static str, &'static str, bool); 4] = [
        (conditions::CONVERGED, "Converged", "ConvergenceLost", false),
        (conditions::STALLED, "Stalled", "StallCleared", true),
        (
            conditions::LOW_PARTICIPATION,
            "LowParticipation",
            "ParticipationRecovered",
            true,
        ),
        (conditions::DIVERGED, "Diverged", "DivergenceCleared", true),
    ];
    for (type_, on, off, warning) in kinds {
        let before = current
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status == "True");
        let Some(after) = status.conditions.iter().find(|c| c.type_ == type_) else {
            continue;
        };
        let after_true = after.status == "True";
        if before == Some(after_true) || (before.is_none() && !after_true) {
            continue;
        }
        events.push(PlannedEvent {
            warning: warning && after_true,
            reason: if after_true { on } else { off },
            note: format!("{}: {}", after.reason, after.message),
        });
    }
    events
}

/// The annotations a client pod should carry from its summary: `flmon.io/straggler` (`true` or
/// `false`) and, once known, `flmon.io/client-trend` (`stable`, `slowing`, `speeding-up`).
pub fn desired_annotations(summary: &ClientSummary) -> BTreeMap<&'static str, String> {
    let mut desired = BTreeMap::new();
    desired.insert(ANNOTATION_STRAGGLER, summary.straggler.to_string());
    if summary.trend != Trend::Unknown {
        desired.insert(ANNOTATION_CLIENT_TREND, summary.trend.as_annotation().to_owned());
    }
    desired
}

/// A merge patch setting the annotations of `desired` whose value differs from `current`; `None`
/// when every one is already as desired (then the pod is not written).
pub fn annotation_patch(
    current: Option<&BTreeMap<String, String>>,
    desired: &BTreeMap<&'static str, String>,
) -> Option<Value> {
    let changed: Map<String, Value> = desired
        .iter()
        .filter(|(key, value)| current.and_then(|c| c.get(**key)) != Some(*value))
        .map(|(key, value)| ((*key).to_owned(), Value::String(value.clone())))
        .collect();
    (!changed.is_empty()).then(|| json!({ "metadata": { "annotations": changed } }))
}

#[cfg(test)]
mod tests;
