//! The streaming analyzer: takes history events as they are polled, keeps exact running aggregates
//! and bounded downsampled series per run, and answers with an [`Analysis`] at any time.
//!
//! Runs: events are grouped by `run_id` (events without one belong to the agent pod's uid, a new
//! segment starting whenever the round goes down, as the agent does). The newest run — the last
//! one to appear — is the *current* run that status and plots describe; the previous run is kept
//! live (late events of a finished run still land), older ones are reduced to a [`RunSummary`].
//!
//! Within a run, `round_end` events are applied in round order: a round at or below the last one
//! applied is a duplicate (identical) or out of order (counted, not applied — the history's event
//! keys already remove duplicates, so this only happens when a server rewinds without a new run
//! id). Missing rounds are counted as gaps.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::clients::{ClientBook, ClientSummary};
use super::config::{AnalysisConfig, ConfigError, Metric};
use super::convergence::{State, Tracker};
use super::history::{ClientUpdate, History, KafkaSample, Merged, RoundEnd, SystemSample};
use super::series::Series;

/// Live runs kept with their full state (the current one and the one before).
const LIVE_RUNS: usize = 2;
/// Summaries of earlier runs kept.
const RUN_SUMMARIES: usize = 16;
/// State transitions kept per run.
const TRANSITIONS: usize = 256;
/// Gap ranges kept per run (the latest).
const GAP_RANGES: usize = 32;
/// Pods whose host samples are kept.
pub const MAX_PODS: usize = 64;
/// Kafka topics and consumer groups kept, each.
pub const MAX_KAFKA_SERIES: usize = 32;
/// Clients listed by name in an [`Analysis`] (stragglers, slowest…).
pub const LISTED_CLIENTS: usize = 20;

/// A change of the convergence state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// Round at which the new state began.
    pub round: u64,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
}

/// How complete and clean the run's data is.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataQuality {
    /// Rounds missing between consecutive `round_end` events.
    pub missing_rounds: u64,
    /// The latest ranges of missing rounds (first, last), at most 32.
    pub gaps: Vec<(u64, u64)>,
    /// `round_end` events identical to the last one applied.
    pub duplicate_rounds: u64,
    /// `round_end` events at or below the last round applied, with other values (not applied).
    pub out_of_order_rounds: u64,
    /// `round_end` records marked `replaces` for a round already applied (the first copy stays
    /// in the running aggregates).
    pub replaced_rounds: u64,
    /// Rounds without a global loss.
    pub missing_loss: u64,
    /// Rounds with a non-finite global loss.
    pub non_finite_loss: u64,
    /// Rounds without a usable global accuracy.
    pub missing_accuracy: u64,
    /// Global or client accuracies outside 0–1 (treated as missing).
    pub out_of_range_accuracy: u64,
    /// Rounds in which no client took part.
    pub zero_participant_rounds: u64,
    /// Client updates arriving after their round was closed.
    pub late_client_updates: u64,
    /// Client updates that replaced a differing copy.
    pub replaced_client_updates: u64,
    /// Clients beyond `maxClients`, not tracked.
    pub dropped_clients: u64,
    /// Events of runs no longer kept live (ignored).
    pub stale_run_events: u64,
    /// Runs seen before the current one (restarts with a new run id or segment).
    pub restarts: u64,
    /// Host or Kafka samples without a time or out of time order (ignored).
    pub dropped_samples: u64,
}

/// A Kubernetes-style condition computed by the analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable explanation with the numbers.
    pub message: String,
}

impl Condition {
    fn new(status: bool, reason: &'static str, message: String) -> Self {
        Self {
            status,
            reason,
            message,
        }
    }
}

/// The four analysis conditions of an FLMonitor.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conditions {
    /// Every configured target reached.
    pub converged: Condition,
    /// No improvement for more than `stallRounds` rounds.
    pub stalled: Condition,
    /// Last round's participants below the minimum.
    pub low_participation: Condition,
    /// Non-finite loss or collapsed accuracy.
    pub diverged: Condition,
}

/// Convergence of the current run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Convergence {
    /// Metric the state is computed on.
    pub metric: Metric,
    /// State.
    pub state: State,
    /// Improvement per round over the window (positive = better).
    pub rate: Option<f64>,
    /// Sample variance of the window.
    pub variance: Option<f64>,
    /// Mean of the window.
    pub window_mean: Option<f64>,
    /// Lowest finite global loss and its round.
    pub best_loss: Option<f64>,
    /// Round of `best_loss`.
    pub best_loss_round: Option<u64>,
    /// Highest global accuracy and its round.
    pub best_accuracy: Option<f64>,
    /// Round of `best_accuracy`.
    pub best_accuracy_round: Option<u64>,
    /// Rounds since the primary metric last improved by more than `minDelta`.
    pub rounds_without_improvement: u64,
    /// Estimated rounds until the target, while improving.
    pub rounds_to_target: Option<u64>,
    /// Round at which every configured target was reached.
    pub target_reached_round: Option<u64>,
    /// Accuracy of chance used for the collapse test.
    pub chance_accuracy: Option<f64>,
}

/// Per-client results of the current run, bounded for status.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientsOverview {
    /// Clients tracked.
    pub tracked: usize,
    /// Stragglers, by id (at most 20 listed; see `straggler_count`).
    pub stragglers: Vec<String>,
    /// All stragglers.
    pub straggler_count: usize,
    /// Clients with participation rate below the participation fraction.
    pub low_participation_clients: usize,
    /// Mean over clients of their mean training seconds.
    pub mean_training_seconds: Option<f64>,
    /// Slowest clients by mean training seconds (at most 5).
    pub slowest: Vec<ClientSummary>,
    /// Most consistent client.
    pub most_consistent: Option<ClientSummary>,
    /// Least consistent client.
    pub least_consistent: Option<ClientSummary>,
    /// Clients whose training time is growing.
    pub slowing: usize,
    /// Clients whose training time is shrinking.
    pub speeding_up: usize,
    /// Clients with a stable training time.
    pub stable: usize,
}

/// A run no longer live.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// First round.
    pub first_round: Option<u64>,
    /// Last round.
    pub last_round: Option<u64>,
    /// `round_end` events applied.
    pub rounds: u64,
    /// Final state.
    pub state: State,
    /// Best loss.
    pub best_loss: Option<f64>,
    /// Best accuracy.
    pub best_accuracy: Option<f64>,
}

/// Everything the analysis says about the current run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Current run; `None` before any training event.
    pub run_id: Option<String>,
    /// Latest round with a `round_end`.
    pub round: Option<u64>,
    /// `round_end` events applied in this run.
    pub rounds_analysed: u64,
    /// Global loss of the latest round (may be non-finite).
    pub global_loss: Option<f64>,
    /// Global accuracy of the latest round, 0–1.
    pub global_accuracy: Option<f64>,
    /// Participants of the latest round.
    pub active_clients: Option<u32>,
    /// Expected participants of the latest round.
    pub expected_clients: Option<u32>,
    /// Duration of the latest round.
    pub round_duration_seconds: Option<f64>,
    /// Convergence.
    pub convergence: Convergence,
    /// Conditions.
    pub conditions: Conditions,
    /// Clients.
    pub clients: ClientsOverview,
    /// Data quality.
    pub data_quality: DataQuality,
    /// Latest state transitions of this run (at most 256).
    pub transitions: Vec<Transition>,
    /// Earlier runs, oldest first.
    pub previous_runs: Vec<RunSummary>,
    /// Targets as configured, for the report.
    pub target_loss: Option<f64>,
    /// Targets as configured, for the report.
    pub target_accuracy: Option<f64>,
}

/// Per-round series of a run, downsampled.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSeries {
    /// Global loss (non-finite values counted per bucket).
    pub loss: Series,
    /// Global accuracy, 0–1.
    pub accuracy: Series,
    /// Participants.
    pub participants: Series,
    /// Expected participants.
    pub expected: Series,
    /// Round duration, seconds.
    pub duration: Series,
    /// Learning rate.
    pub learning_rate: Series,
    /// Gradient norm.
    pub gradient_norm: Series,
    /// Weight-change norm.
    pub weight_change: Series,
}

impl RunSeries {
    fn new(capacity: usize) -> Self {
        Self {
            loss: Series::new(capacity),
            accuracy: Series::new(capacity),
            participants: Series::new(capacity),
            expected: Series::new(capacity),
            duration: Series::new(capacity),
            learning_rate: Series::new(capacity),
            gradient_norm: Series::new(capacity),
            weight_change: Series::new(capacity),
        }
    }

    fn heap_bytes(&self) -> usize {
        [
            &self.loss,
            &self.accuracy,
            &self.participants,
            &self.expected,
            &self.duration,
            &self.learning_rate,
            &self.gradient_norm,
            &self.weight_change,
        ]
        .iter()
        .map(|s| s.heap_bytes())
        .sum()
    }
}

/// Numeric fields of the last applied round, to tell an identical duplicate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct LastRound {
    round: u64,
    loss: Option<f64>,
    accuracy: Option<f64>,
    participants: Option<u32>,
    expected: Option<u32>,
    duration: Option<f64>,
}

fn same_bits(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.to_bits() == b.to_bits(),
        (None, None) => true,
        _ => false,
    }
}

/// One run's full state.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    id: String,
    loss: Tracker,
    accuracy: Tracker,
    rounds: u64,
    first_round: Option<u64>,
    last: Option<LastRound>,
    quality: DataQuality,
    /// Downsampled per-round series.
    pub series: RunSeries,
    /// Clients.
    pub clients: ClientBook,
    state: State,
    transitions: VecDeque<Transition>,
}

impl Run {
    fn new(id: String, config: &AnalysisConfig) -> Self {
        Self {
            id,
            loss: Tracker::new(Metric::Loss, config.window),
            accuracy: Tracker::new(Metric::Accuracy, config.window),
            rounds: 0,
            first_round: None,
            last: None,
            quality: DataQuality::default(),
            series: RunSeries::new(config.series_capacity),
            clients: ClientBook::new(config),
            state: State::WarmingUp,
            transitions: VecDeque::new(),
        }
    }

    /// Run id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// First and latest round of any event of the run.
    pub fn round_span(&self) -> Option<(u64, u64)> {
        let latest = self.latest_round();
        let first = match (self.first_round, self.clients.first_round()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((first, latest.max(first)))
    }

    fn primary(&self, config: &AnalysisConfig) -> &Tracker {
        match config.primary_metric {
            Some(Metric::Loss) => &self.loss,
            Some(Metric::Accuracy) => &self.accuracy,
            None if self.loss.any_arrived() || !self.accuracy.any_arrived() => &self.loss,
            None => &self.accuracy,
        }
    }

    fn chance(&self, config: &AnalysisConfig) -> Option<f64> {
        config
            .chance_accuracy
            .or_else(|| self.accuracy.first().map(|(_, v)| v))
    }

    /// Latest round of the run: its last `round_end`, else its latest client update.
    fn latest_round(&self) -> u64 {
        self.last
            .map(|l| l.round)
            .or(self.clients.latest_round())
            .unwrap_or(0)
    }

    fn push_round(&mut self, e: &RoundEnd, config: &AnalysisConfig) {
        let q = &mut self.quality;
        let mut accuracy = e.global_accuracy;
        if accuracy.is_some_and(|a| !a.is_finite()) {
            accuracy = None;
        }
        if accuracy.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
            q.out_of_range_accuracy += 1;
            accuracy = None;
        }
        let participants = e.participants.or_else(|| self.clients.participants_of(e.round));
        let current = LastRound {
            round: e.round,
            loss: e.global_loss,
            accuracy,
            participants,
            expected: e.expected_participants,
            duration: e.duration_seconds,
        };
        if let Some(last) = self.last {
            if e.round <= last.round {
                let identical = e.round == last.round
                    && same_bits(last.loss, current.loss)
                    && same_bits(last.accuracy, current.accuracy)
                    && same_bits(last.duration, current.duration)
                    && last.expected == current.expected;
                if identical {
                    q.duplicate_rounds += 1;
                } else if e.replaces == Some(true) {
                    q.replaced_rounds += 1;
                } else {
                    q.out_of_order_rounds += 1;
                }
                return;
            }
            if e.round > last.round + 1 {
                q.missing_rounds += e.round - last.round - 1;
                if q.gaps.len() == GAP_RANGES {
                    q.gaps.remove(0);
                }
                q.gaps.push((last.round + 1, e.round - 1));
            }
        }
        self.rounds += 1;
        self.first_round.get_or_insert(e.round);
        self.last = Some(current);
        let x = e.round as f64;
        match e.global_loss {
            None => q.missing_loss += 1,
            Some(v) => {
                if !v.is_finite() {
                    q.non_finite_loss += 1;
                }
                self.loss.push(e.round, v, config.min_delta, config.target_loss);
                self.series.loss.push(x, v);
            }
        }
        match accuracy {
            None => q.missing_accuracy += 1,
            Some(v) => {
                self.accuracy
                    .push(e.round, v, config.min_delta, config.target_accuracy);
                self.series.accuracy.push(x, v);
            }
        }
        if let Some(p) = participants {
            if p == 0 {
                q.zero_participant_rounds += 1;
            }
            self.series.participants.push(x, f64::from(p));
        }
        let expected = config.expected_clients.or(e.expected_participants);
        if let Some(n) = expected {
            self.series.expected.push(x, f64::from(n));
        }
        let optional = [
            (e.duration_seconds, &mut self.series.duration),
            (e.learning_rate, &mut self.series.learning_rate),
            (e.gradient_norm, &mut self.series.gradient_norm),
            (e.weight_change_norm, &mut self.series.weight_change),
        ];
        for (value, series) in optional {
            if let Some(v) = value {
                series.push(x, v);
            }
        }
        self.clients.advance(e.round);
        let state = self.evaluate(config).state;
        if state != self.state {
            if self.transitions.len() == TRANSITIONS {
                self.transitions.pop_front();
            }
            self.transitions.push_back(Transition {
                round: e.round,
                from: self.state,
                to: state,
            });
            self.state = state;
        }
    }

    fn evaluate(&self, config: &AnalysisConfig) -> Evaluation {
        let primary = self.primary(config);
        let latest = self.latest_round();
        let rwi = primary.rounds_without_improvement(latest);
        // Every configured target reached: the round of the last one to be reached.
        let reached = match (config.target_loss, config.target_accuracy) {
            (None, None) => None,
            (Some(_), None) => self.loss.target_reached_round(),
            (None, Some(_)) => self.accuracy.target_reached_round(),
            (Some(_), Some(_)) => self
                .loss
                .target_reached_round()
                .zip(self.accuracy.target_reached_round())
                .map(|(a, b)| a.max(b)),
        };
        let chance = self.chance(config);
        let diverged = if self.loss.last_is_non_finite() {
            Some(Diverged::NonFiniteLoss)
        } else if chance.is_some_and(|c| self.accuracy.collapsed_to(c)) {
            Some(Diverged::AccuracyCollapsed)
        } else {
            None
        };
        let stalled = primary.finite_count() > 0 && rwi > config.stall_rounds;
        let state = if diverged.is_some() {
            State::Diverged
        } else if reached.is_some() {
            State::Converged
        } else if stalled {
            State::Stalled
        } else if !primary.warmed_up() {
            State::WarmingUp
        } else if primary.plateaued(config.plateau_threshold) {
            State::Plateaued
        } else {
            State::Improving
        };
        Evaluation {
            state,
            reached,
            diverged,
            stalled,
            rwi,
            chance,
        }
    }

    fn summary(&self) -> RunSummary {
        RunSummary {
            run_id: self.id.clone(),
            first_round: self.first_round,
            last_round: self.last.map(|l| l.round),
            rounds: self.rounds,
            state: self.state,
            best_loss: self.loss.best().map(|(_, v)| v),
            best_accuracy: self.accuracy.best().map(|(_, v)| v),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.id.capacity()
            + self.loss.heap_bytes()
            + self.accuracy.heap_bytes()
            + self.series.heap_bytes()
            + self.clients.heap_bytes()
            + self.transitions.capacity() * std::mem::size_of::<Transition>()
            + self.quality.gaps.capacity() * 16
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Diverged {
    NonFiniteLoss,
    AccuracyCollapsed,
}

struct Evaluation {
    state: State,
    reached: Option<u64>,
    diverged: Option<Diverged>,
    stalled: bool,
    rwi: u64,
    chance: Option<f64>,
}

/// Host series of one pod (x = Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct PodSeries {
    /// Pod name.
    pub pod: String,
    /// CPU, percent of limits.
    pub cpu_percent: Series,
    /// Memory, percent of limits.
    pub memory_percent: Series,
    /// Network receive, bytes/s.
    pub network_rx: Series,
    /// Network transmit, bytes/s.
    pub network_tx: Series,
    /// Mean utilization of the pod's GPUs, percent.
    pub gpu_utilization: Series,
    /// GPU memory used, percent of total, over the pod's GPUs.
    pub gpu_memory_percent: Series,
    last_time: f64,
}

/// Kafka series of one topic (x = Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSeries {
    /// Topic.
    pub topic: String,
    /// Messages per second.
    pub messages_per_second: Series,
    /// Bytes per second.
    pub bytes_per_second: Series,
    /// End-to-end latency, seconds.
    pub latency_seconds: Series,
    last_time: f64,
}

/// Lag of one consumer group (x = Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSeries {
    /// Consumer group.
    pub group: String,
    /// Lag, messages.
    pub lag: Series,
    last_time: f64,
}

/// The streaming analyzer (see the module documentation).
#[derive(Debug, Clone)]
pub struct Analyzer {
    config: AnalysisConfig,
    runs: Vec<Run>,
    finished: VecDeque<RunSummary>,
    /// uid → (last round, segment) of run-less `round_end` and `client_update` streams.
    segments: HashMap<(String, bool), (u64, u32)>,
    runs_seen: u64,
    stale_run_events: u64,
    dropped_samples: u64,
    dropped_pods: u64,
    /// Host series per pod (at most [`MAX_PODS`]).
    pub pods: Vec<PodSeries>,
    /// Kafka series per topic (at most [`MAX_KAFKA_SERIES`]).
    pub topics: Vec<TopicSeries>,
    /// Kafka lag per consumer group (at most [`MAX_KAFKA_SERIES`]).
    pub groups: Vec<GroupSeries>,
}

impl Analyzer {
    /// An analyzer with validated settings.
    ///
    /// # Errors
    /// The first invalid setting.
    pub fn new(config: AnalysisConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            runs: Vec::new(),
            finished: VecDeque::new(),
            segments: HashMap::new(),
            runs_seen: 0,
            stale_run_events: 0,
            dropped_samples: 0,
            dropped_pods: 0,
            pods: Vec::new(),
            topics: Vec::new(),
            groups: Vec::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &AnalysisConfig {
        &self.config
    }

    /// The current run, if any event arrived.
    pub fn current_run(&self) -> Option<&Run> {
        self.runs.last()
    }

    fn run_index(&mut self, id: &str) -> Option<usize> {
        if let Some(i) = self.runs.iter().rposition(|r| r.id == id) {
            return Some(i);
        }
        if self.finished.iter().any(|r| r.run_id == id) {
            self.stale_run_events += 1;
            return None;
        }
        if self.runs.len() == LIVE_RUNS {
            let old = self.runs.remove(0);
            if self.finished.len() == RUN_SUMMARIES {
                self.finished.pop_front();
            }
            self.finished.push_back(old.summary());
        }
        self.runs_seen += 1;
        self.runs.push(Run::new(id.to_string(), &self.config));
        Some(self.runs.len() - 1)
    }

    /// The run id of an event: its own, else the pod's uid with a segment number that grows
    /// whenever the round goes down.
    fn resolve_run(&mut self, run_id: Option<&str>, uid: &str, round: u64, clients: bool) -> String {
        if let Some(id) = run_id {
            return id.to_string();
        }
        let base = if uid.is_empty() { "run" } else { uid };
        let entry = self
            .segments
            .entry((base.to_string(), clients))
            .or_insert((round, 1));
        if round < entry.0 {
            entry.1 += 1;
        }
        entry.0 = round;
        if entry.1 == 1 {
            base.to_string()
        } else {
            format!("{base}#{}", entry.1)
        }
    }

    /// Applies one `round_end` (its `run_id` absent = run `"run"`).
    pub fn push_round(&mut self, event: &RoundEnd) {
        let id = event.run_id.as_deref().unwrap_or("run");
        let index = match self.runs.last() {
            Some(run) if run.id == id => Some(self.runs.len() - 1),
            _ => self.run_index(id),
        };
        if let Some(i) = index
            && let Some(run) = self.runs.get_mut(i)
        {
            run.push_round(event, &self.config);
        }
    }

    /// Applies one `client_update` (its `client_id` absent = client `"unknown"`).
    pub fn push_client(&mut self, event: &ClientUpdate) {
        let id = event.run_id.as_deref().unwrap_or("run");
        let index = match self.runs.last() {
            Some(run) if run.id == id => Some(self.runs.len() - 1),
            _ => self.run_index(id),
        };
        if let Some(i) = index
            && let Some(run) = self.runs.get_mut(i)
        {
            run.clients.push(
                event.round,
                event.client_id.as_deref().unwrap_or("unknown"),
                event,
            );
        }
    }

    /// Applies one host sample of `pod`.
    pub fn push_system(&mut self, pod: &str, sample: &SystemSample) {
        let Some(t) = sample.time.filter(|t| t.is_finite()) else {
            self.dropped_samples += 1;
            return;
        };
        let capacity = (self.config.series_capacity / 4).max(16);
        let index = match self.pods.iter().position(|p| p.pod == pod) {
            Some(i) => i,
            None if self.pods.len() >= MAX_PODS => {
                self.dropped_pods += 1;
                return;
            }
            None => {
                self.pods.push(PodSeries {
                    pod: pod.to_string(),
                    cpu_percent: Series::new(capacity),
                    memory_percent: Series::new(capacity),
                    network_rx: Series::new(capacity),
                    network_tx: Series::new(capacity),
                    gpu_utilization: Series::new(capacity),
                    gpu_memory_percent: Series::new(capacity),
                    last_time: f64::NEG_INFINITY,
                });
                self.pods.len() - 1
            }
        };
        let Some(p) = self.pods.get_mut(index) else { return };
        if t <= p.last_time {
            self.dropped_samples += 1;
            return;
        }
        p.last_time = t;
        let pairs = [
            (sample.cpu_percent, &mut p.cpu_percent),
            (sample.memory_percent, &mut p.memory_percent),
            (sample.network_rx_bytes_per_second, &mut p.network_rx),
            (sample.network_tx_bytes_per_second, &mut p.network_tx),
        ];
        for (value, series) in pairs {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                series.push(t, v);
            }
        }
        let utilization: Vec<f64> = sample
            .gpus
            .iter()
            .filter_map(|g| g.utilization_percent)
            .filter(|v| v.is_finite())
            .collect();
        if !utilization.is_empty() {
            p.gpu_utilization
                .push(t, utilization.iter().sum::<f64>() / utilization.len() as f64);
        }
        let (used, total) = sample.gpus.iter().fold((0.0, 0.0), |(u, t), g| {
            match (g.memory_used_bytes, g.memory_total_bytes) {
                (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b > 0.0 => (u + a, t + b),
                _ => (u, t),
            }
        });
        if total > 0.0 {
            p.gpu_memory_percent.push(t, 100.0 * used / total);
        }
    }

    /// Applies one Kafka sample.
    pub fn push_kafka(&mut self, sample: &KafkaSample) {
        let Some(t) = sample.time.filter(|t| t.is_finite()) else {
            self.dropped_samples += 1;
            return;
        };
        let capacity = (self.config.series_capacity / 4).max(16);
        if let Some(topic) = &sample.topic {
            let index = match self.topics.iter().position(|s| &s.topic == topic) {
                Some(i) => Some(i),
                None if self.topics.len() >= MAX_KAFKA_SERIES => None,
                None => {
                    self.topics.push(TopicSeries {
                        topic: topic.clone(),
                        messages_per_second: Series::new(capacity),
                        bytes_per_second: Series::new(capacity),
                        latency_seconds: Series::new(capacity),
                        last_time: f64::NEG_INFINITY,
                    });
                    Some(self.topics.len() - 1)
                }
            };
            match index.and_then(|i| self.topics.get_mut(i)) {
                Some(s) if t > s.last_time => {
                    s.last_time = t;
                    let pairs = [
                        (sample.messages_per_second, &mut s.messages_per_second),
                        (sample.bytes_per_second, &mut s.bytes_per_second),
                        (sample.latency_seconds, &mut s.latency_seconds),
                    ];
                    for (value, series) in pairs {
                        if let Some(v) = value.filter(|v| v.is_finite()) {
                            series.push(t, v);
                        }
                    }
                }
                _ => self.dropped_samples += 1,
            }
        }
        if let Some(group) = &sample.group {
            let index = match self.groups.iter().position(|s| &s.group == group) {
                Some(i) => Some(i),
                None if self.groups.len() >= MAX_KAFKA_SERIES => None,
                None => {
                    self.groups.push(GroupSeries {
                        group: group.clone(),
                        lag: Series::new(capacity),
                        last_time: f64::NEG_INFINITY,
                    });
                    Some(self.groups.len() - 1)
                }
            };
            match index.and_then(|i| self.groups.get_mut(i)) {
                Some(s) if t > s.last_time => {
                    s.last_time = t;
                    if let Some(v) = sample.lag.filter(|v| v.is_finite()) {
                        s.lag.push(t, v);
                    }
                }
                _ => self.dropped_samples += 1,
            }
        }
    }

    /// Applies one agent's history document (an incremental poll). Its `round_end` events are
    /// applied in round order per run; events without a run id get the pod's uid and segment.
    /// Poll every agent of a monitor and pass their documents to [`Analyzer::ingest_all`] so
    /// client updates of one round from different pods arrive together.
    pub fn ingest(&mut self, doc: &History) {
        self.ingest_all(std::slice::from_ref(doc));
    }

    /// Applies the documents of one polling cycle (see [`Analyzer::ingest`]).
    pub fn ingest_all(&mut self, docs: &[History]) {
        let mut rounds: Vec<RoundEnd> = Vec::new();
        let mut clients: Vec<ClientUpdate> = Vec::new();
        for doc in docs {
            for e in &doc.rounds {
                let run = self.resolve_run(e.run_id.as_deref(), &doc.agent.uid, e.round, false);
                rounds.push(RoundEnd {
                    run_id: Some(run),
                    ..e.clone()
                });
            }
            let default_client = doc
                .agent
                .client_id
                .as_deref()
                .unwrap_or(&doc.agent.pod)
                .to_string();
            for e in &doc.clients {
                let run = self.resolve_run(e.run_id.as_deref(), &doc.agent.uid, e.round, true);
                let client_id = e.client_id.clone().or_else(|| Some(default_client.clone()));
                clients.push(ClientUpdate {
                    run_id: Some(run),
                    client_id,
                    ..e.clone()
                });
            }
            let pod = if doc.agent.pod.is_empty() {
                "unknown"
            } else {
                doc.agent.pod.as_str()
            };
            for s in &doc.system {
                self.push_system(pod, s);
            }
            for k in &doc.kafka {
                self.push_kafka(k);
            }
        }
        rounds.sort_by_key(|r| r.round);
        clients.sort_by_key(|c| c.round);
        self.apply_sorted(rounds, clients);
    }

    /// Applies merged documents (see [`super::history::merge`]).
    pub fn ingest_merged(&mut self, merged: &Merged) {
        self.apply_sorted(merged.rounds.clone(), merged.clients.clone());
        for (pod, samples) in &merged.system {
            for s in samples {
                self.push_system(&pod.0, s);
            }
        }
        for k in &merged.kafka {
            self.push_kafka(k);
        }
    }

    /// Applies events run by run (runs in order of first appearance, rounds by number within a
    /// run, a round's client updates before its `round_end`). Sorting is stable, so events
    /// already in order stay as they were.
    fn apply_sorted(&mut self, mut rounds: Vec<RoundEnd>, mut clients: Vec<ClientUpdate>) {
        let mut order: HashMap<String, usize> = HashMap::new();
        for run in rounds
            .iter()
            .map(|r| &r.run_id)
            .chain(clients.iter().map(|c| &c.run_id))
        {
            let n = order.len();
            order.entry(run.clone().unwrap_or_default()).or_insert(n);
        }
        let key = |run: &Option<String>| {
            order
                .get(run.as_deref().unwrap_or(""))
                .copied()
                .unwrap_or(usize::MAX)
        };
        rounds.sort_by_key(|r| (key(&r.run_id), r.round));
        clients.sort_by_key(|c| (key(&c.run_id), c.round));
        let (mut i, mut j) = (0, 0);
        while i < rounds.len() || j < clients.len() {
            let take_client = match (rounds.get(i), clients.get(j)) {
                (Some(r), Some(c)) => (key(&c.run_id), c.round) <= (key(&r.run_id), r.round),
                (None, Some(_)) => true,
                _ => false,
            };
            if take_client {
                if let Some(c) = clients.get(j) {
                    self.push_client(c);
                }
                j += 1;
            } else {
                if let Some(r) = rounds.get(i) {
                    self.push_round(r);
                }
                i += 1;
            }
        }
    }

    /// The analysis of the current run.
    pub fn analysis(&self) -> Analysis {
        let config = &self.config;
        let previous_runs: Vec<RunSummary> = self
            .finished
            .iter()
            .cloned()
            .chain(self.runs.iter().rev().skip(1).rev().map(Run::summary))
            .collect();
        let Some(run) = self.runs.last() else {
            return self.empty_analysis(previous_runs);
        };
        let eval = run.evaluate(config);
        let primary = run.primary(config);
        let last = run.last;
        let mut quality = run.quality.clone();
        quality.late_client_updates = run.clients.late_updates;
        quality.replaced_client_updates = run.clients.replaced_updates;
        quality.dropped_clients = run.clients.dropped_clients;
        quality.out_of_range_accuracy += run.clients.out_of_range;
        quality.stale_run_events = self.stale_run_events;
        quality.restarts = self.runs_seen.saturating_sub(1);
        quality.dropped_samples = self.dropped_samples;
        let rounds_to_target = if eval.state == State::Improving {
            let primary_target = match primary.metric() {
                Metric::Loss => config.target_loss,
                Metric::Accuracy => config.target_accuracy,
            };
            match primary_target {
                Some(t) => primary.rounds_to_target(t),
                None => match (config.target_loss, config.target_accuracy) {
                    (Some(t), _) => run.loss.rounds_to_target(t),
                    (None, Some(t)) => run.accuracy.rounds_to_target(t),
                    (None, None) => None,
                },
            }
        } else {
            None
        };
        let convergence = Convergence {
            metric: primary.metric(),
            state: eval.state,
            rate: primary.rate(),
            variance: primary.variance(),
            window_mean: primary.window_mean(),
            best_loss: run.loss.best().map(|(_, v)| v),
            best_loss_round: run.loss.best().map(|(r, _)| r),
            best_accuracy: run.accuracy.best().map(|(_, v)| v),
            best_accuracy_round: run.accuracy.best().map(|(r, _)| r),
            rounds_without_improvement: eval.rwi,
            rounds_to_target,
            target_reached_round: eval.reached,
            chance_accuracy: eval.chance,
        };
        let summaries = run.clients.summaries();
        let clients = overview(&summaries, config);
        let conditions = self.conditions(run, &eval, last, &convergence);
        Analysis {
            run_id: Some(run.id.clone()),
            round: last.map(|l| l.round),
            rounds_analysed: run.rounds,
            global_loss: last.and_then(|l| l.loss),
            global_accuracy: last.and_then(|l| l.accuracy),
            active_clients: last.and_then(|l| l.participants),
            expected_clients: config.expected_clients.or(last.and_then(|l| l.expected)),
            round_duration_seconds: last.and_then(|l| l.duration),
            convergence,
            conditions,
            clients,
            data_quality: quality,
            transitions: run.transitions.iter().copied().collect(),
            previous_runs,
            target_loss: config.target_loss,
            target_accuracy: config.target_accuracy,
        }
    }

    fn conditions(
        &self,
        run: &Run,
        eval: &Evaluation,
        last: Option<LastRound>,
        c: &Convergence,
    ) -> Conditions {
        let config = &self.config;
        let metric = c.metric.as_str().to_lowercase();
        let converged = match (config.target_loss, config.target_accuracy, eval.reached) {
            (None, None, _) => {
                Condition::new(false, "NoTarget", "no targetLoss or targetAccuracy is set".into())
            }
            (_, _, Some(round)) => Condition::new(
                true,
                "TargetReached",
                format!("{} reached at round {round}", describe_targets(config)),
            ),
            _ => Condition::new(
                false,
                "TargetNotReached",
                format!(
                    "{} not reached; best loss {}, best accuracy {}",
                    describe_targets(config),
                    fmt_opt(c.best_loss),
                    fmt_opt(c.best_accuracy)
                ),
            ),
        };
        let stalled = if run.primary(config).finite_count() == 0 {
            Condition::new(false, "NoData", format!("no finite {metric} has arrived"))
        } else if eval.stalled {
            Condition::new(
                true,
                "NoImprovement",
                format!(
                    "{metric} has not improved by more than {} (relative) for {} rounds (limit {})",
                    config.min_delta, eval.rwi, config.stall_rounds
                ),
            )
        } else {
            Condition::new(
                false,
                "Improving",
                format!(
                    "{metric} improved {} rounds ago (limit {})",
                    eval.rwi, config.stall_rounds
                ),
            )
        };
        let expected = config.expected_clients.or(last.and_then(|l| l.expected));
        let low_participation = match (last.and_then(|l| l.participants), expected) {
            (None, _) => Condition::new(false, "NoData", "no participant count has arrived".into()),
            (Some(_), None) => Condition::new(
                false,
                "NoExpectation",
                "neither expectedClients nor expected_participants is set".into(),
            ),
            (Some(p), Some(n)) => {
                let minimum = (config.participation_fraction * f64::from(n)).ceil() as u32;
                if p < minimum {
                    Condition::new(
                        true,
                        "ParticipantsBelowMinimum",
                        format!(
                            "{p} of {n} expected clients took part in the last round (minimum {minimum})"
                        ),
                    )
                } else {
                    Condition::new(
                        false,
                        "ParticipationSufficient",
                        format!(
                            "{p} of {n} expected clients took part in the last round (minimum {minimum})"
                        ),
                    )
                }
            }
        };
        let diverged = match eval.diverged {
            Some(Diverged::NonFiniteLoss) => Condition::new(
                true,
                "NonFiniteLoss",
                format!(
                    "global loss is non-finite since round {}",
                    run.loss.non_finite_since().map_or("?".into(), |r| r.to_string())
                ),
            ),
            Some(Diverged::AccuracyCollapsed) => Condition::new(
                true,
                "AccuracyCollapsed",
                format!(
                    "global accuracy {} fell back to chance ({}) after reaching {}",
                    fmt_opt(run.accuracy.last_finite().map(|(_, v)| v)),
                    fmt_opt(eval.chance),
                    fmt_opt(c.best_accuracy)
                ),
            ),
            None => Condition::new(
                false,
                "Finite",
                "loss is finite and accuracy has not collapsed".into(),
            ),
        };
        Conditions {
            converged,
            stalled,
            low_participation,
            diverged,
        }
    }

    fn empty_analysis(&self, previous_runs: Vec<RunSummary>) -> Analysis {
        let no_data = |what: &str| Condition::new(false, "NoData", format!("no {what} has arrived"));
        Analysis {
            run_id: None,
            round: None,
            rounds_analysed: 0,
            global_loss: None,
            global_accuracy: None,
            active_clients: None,
            expected_clients: self.config.expected_clients,
            round_duration_seconds: None,
            convergence: Convergence {
                metric: self.config.primary_metric.unwrap_or(Metric::Loss),
                state: State::WarmingUp,
                rate: None,
                variance: None,
                window_mean: None,
                best_loss: None,
                best_loss_round: None,
                best_accuracy: None,
                best_accuracy_round: None,
                rounds_without_improvement: 0,
                rounds_to_target: None,
                target_reached_round: None,
                chance_accuracy: self.config.chance_accuracy,
            },
            conditions: Conditions {
                converged: if self.config.target_loss.is_none() && self.config.target_accuracy.is_none() {
                    Condition::new(false, "NoTarget", "no targetLoss or targetAccuracy is set".into())
                } else {
                    no_data("round")
                },
                stalled: no_data("round"),
                low_participation: no_data("round"),
                diverged: no_data("round"),
            },
            clients: ClientsOverview::default(),
            data_quality: DataQuality {
                dropped_samples: self.dropped_samples,
                stale_run_events: self.stale_run_events,
                ..DataQuality::default()
            },
            transitions: Vec::new(),
            previous_runs,
            target_loss: self.config.target_loss,
            target_accuracy: self.config.target_accuracy,
        }
    }

    /// Every client of the current run (for pod annotations and the report).
    pub fn client_summaries(&self) -> Vec<ClientSummary> {
        self.runs
            .last()
            .map(|r| r.clients.summaries())
            .unwrap_or_default()
    }

    /// Heap bytes held, estimated from capacities.
    pub fn heap_bytes(&self) -> usize {
        let runs: usize = self.runs.iter().map(Run::heap_bytes).sum();
        let pods: usize = self
            .pods
            .iter()
            .map(|p| {
                p.cpu_percent.heap_bytes()
                    + p.memory_percent.heap_bytes()
                    + p.network_rx.heap_bytes()
                    + p.network_tx.heap_bytes()
                    + p.gpu_utilization.heap_bytes()
                    + p.gpu_memory_percent.heap_bytes()
            })
            .sum();
        let kafka: usize = self
            .topics
            .iter()
            .map(|t| {
                t.messages_per_second.heap_bytes()
                    + t.bytes_per_second.heap_bytes()
                    + t.latency_seconds.heap_bytes()
            })
            .chain(self.groups.iter().map(|g| g.lag.heap_bytes()))
            .sum();
        runs + pods + kafka + self.finished.len() * std::mem::size_of::<RunSummary>()
    }
}

fn describe_targets(config: &AnalysisConfig) -> String {
    match (config.target_loss, config.target_accuracy) {
        (Some(l), Some(a)) => format!("targets loss ≤ {l} and accuracy ≥ {a}"),
        (Some(l), None) => format!("target loss ≤ {l}"),
        (None, Some(a)) => format!("target accuracy ≥ {a}"),
        (None, None) => "no target".into(),
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.4}"))
}

fn overview(summaries: &[ClientSummary], config: &AnalysisConfig) -> ClientsOverview {
    let mut stragglers: Vec<&ClientSummary> = summaries.iter().filter(|c| c.straggler).collect();
    stragglers.sort_by(|a, b| {
        b.mean_training_seconds
            .unwrap_or(0.0)
            .total_cmp(&a.mean_training_seconds.unwrap_or(0.0))
    });
    let means: Vec<f64> = summaries.iter().filter_map(|c| c.mean_training_seconds).collect();
    let mut slowest: Vec<&ClientSummary> = summaries
        .iter()
        .filter(|c| c.mean_training_seconds.is_some())
        .collect();
    slowest.sort_by(|a, b| {
        b.mean_training_seconds
            .unwrap_or(0.0)
            .total_cmp(&a.mean_training_seconds.unwrap_or(0.0))
    });
    let consistency = |c: &&ClientSummary| c.consistency.unwrap_or(f64::NAN);
    let with_consistency = summaries.iter().filter(|c| c.consistency.is_some());
    // Ties go to the lowest client id: the report names the same client whatever order the
    // clients joined in.
    let by_id = |a: &&ClientSummary, b: &&ClientSummary| a.client_id.cmp(&b.client_id);
    let most = with_consistency.clone().min_by(|a, b| {
        consistency(b)
            .total_cmp(&consistency(a))
            .then_with(|| by_id(a, b))
    });
    let least = with_consistency.min_by(|a, b| {
        consistency(a)
            .total_cmp(&consistency(b))
            .then_with(|| by_id(a, b))
    });
    let count = |t| summaries.iter().filter(|c| c.trend == t).count();
    ClientsOverview {
        tracked: summaries.len(),
        straggler_count: stragglers.len(),
        stragglers: stragglers
            .iter()
            .take(LISTED_CLIENTS)
            .map(|c| c.client_id.clone())
            .collect(),
        low_participation_clients: summaries
            .iter()
            .filter(|c| c.participation_rate < config.participation_fraction)
            .count(),
        mean_training_seconds: (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64),
        slowest: slowest.into_iter().take(5).cloned().collect(),
        most_consistent: most.cloned(),
        least_consistent: least.cloned(),
        slowing: count(super::clients::Trend::Slowing),
        speeding_up: count(super::clients::Trend::SpeedingUp),
        stable: count(super::clients::Trend::Stable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed_client(id: &str, consistency: f64) -> ClientSummary {
        ClientSummary {
            client_id: id.into(),
            first_round: 1,
            last_round: 5,
            rounds_participated: 5,
            rounds_failed: 0,
            participation_rate: 1.0,
            mean_training_seconds: Some(2.0),
            std_training_seconds: Some(0.1),
            consistency: Some(consistency),
            trend: super::super::clients::Trend::Stable,
            relative_slope: Some(0.0),
            straggler: false,
            slow_rounds: 0,
            last_loss: None,
            last_accuracy: None,
            samples: 0,
        }
    }

    #[test]
    fn the_most_and_least_consistent_clients_do_not_depend_on_the_order_clients_joined_in() {
        let config = AnalysisConfig::default();
        let clients = [
            timed_client("client-c", 0.9),
            timed_client("client-a", 0.9),
            timed_client("client-d", 0.5),
            timed_client("client-b", 0.5),
            timed_client("client-e", 0.7),
        ];
        let mut reversed = clients.clone();
        reversed.reverse();
        for order in [&clients[..], &reversed[..]] {
            let o = overview(order, &config);
            assert_eq!(
                o.most_consistent.map(|c| c.client_id).as_deref(),
                Some("client-a")
            );
            assert_eq!(
                o.least_consistent.map(|c| c.client_id).as_deref(),
                Some("client-b")
            );
        }
    }

    fn round(run: &str, round: u64, loss: Option<f64>) -> RoundEnd {
        RoundEnd {
            run_id: Some(run.into()),
            round,
            global_loss: loss,
            ..RoundEnd::default()
        }
    }

    #[test]
    fn gaps_duplicates_and_rounds_going_back_are_counted_not_applied() {
        let mut a = Analyzer::new(AnalysisConfig::default()).expect("defaults");
        for r in [
            round("a", 1, Some(1.0)),
            round("a", 2, Some(0.9)),
            round("a", 2, Some(0.9)),
        ] {
            a.push_round(&r);
        }
        a.push_round(&round("a", 6, Some(0.8)));
        a.push_round(&round("a", 4, Some(0.5)));
        a.push_round(&RoundEnd {
            replaces: Some(true),
            ..round("a", 6, Some(0.7))
        });
        let q = a.analysis().data_quality;
        assert_eq!((q.missing_rounds, q.gaps.clone()), (3, vec![(3, 5)]));
        assert_eq!(
            (q.duplicate_rounds, q.out_of_order_rounds, q.replaced_rounds),
            (1, 1, 1)
        );
        assert_eq!(a.analysis().rounds_analysed, 3);
    }

    #[test]
    fn a_new_run_id_starts_over_and_keeps_the_old_run_as_a_summary() {
        let mut a = Analyzer::new(AnalysisConfig::default()).expect("defaults");
        for i in 1..=20 {
            a.push_round(&round("first", i, Some(1.0 / i as f64)));
        }
        a.push_round(&round("second", 1, Some(2.3)));
        let analysis = a.analysis();
        assert_eq!(analysis.run_id.as_deref(), Some("second"));
        assert_eq!(analysis.convergence.state, State::WarmingUp);
        assert_eq!(analysis.previous_runs.len(), 1);
        assert_eq!(analysis.previous_runs[0].rounds, 20);
        assert_eq!(analysis.data_quality.restarts, 1);
    }

    #[test]
    fn zero_participant_rounds_raise_low_participation_and_are_counted() {
        let config = AnalysisConfig {
            expected_clients: Some(10),
            ..AnalysisConfig::default()
        };
        let mut a = Analyzer::new(config).expect("valid");
        a.push_round(&RoundEnd {
            participants: Some(0),
            ..round("a", 1, None)
        });
        let analysis = a.analysis();
        assert!(analysis.conditions.low_participation.status, "0 < ceil(0.5 × 10)");
        assert_eq!(analysis.data_quality.zero_participant_rounds, 1);
        assert_eq!(analysis.data_quality.missing_loss, 1);
        a.push_round(&RoundEnd {
            participants: Some(5),
            ..round("a", 2, None)
        });
        assert!(
            !a.analysis().conditions.low_participation.status,
            "5 is not below ceil(0.5 × 10) = 5"
        );
    }

    #[test]
    fn without_a_target_converged_is_false_with_reason_no_target_even_on_a_flat_curve() {
        // The seed called a flat curve "converged"; a plateau above any target is not convergence.
        let mut a = Analyzer::new(AnalysisConfig::default()).expect("defaults");
        for i in 1..=8 {
            a.push_round(&round("a", i, Some(2.0)));
        }
        let analysis = a.analysis();
        assert_eq!(analysis.conditions.converged.reason, "NoTarget");
        assert_eq!(analysis.convergence.state, State::Plateaued);
        assert_eq!(analysis.convergence.variance, Some(0.0));
    }

    #[test]
    fn stalled_needs_more_than_stall_rounds_without_improvement_and_clears_on_improvement() {
        let config = AnalysisConfig {
            stall_rounds: 3,
            ..AnalysisConfig::default()
        };
        let mut a = Analyzer::new(config).expect("valid");
        let losses = [1.0, 0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.5];
        let mut stalled = Vec::new();
        for (i, loss) in losses.iter().enumerate() {
            a.push_round(&round("a", i as u64 + 1, Some(*loss)));
            stalled.push(a.analysis().conditions.stalled.status);
        }
        // Last improvement at round 5; rounds 6–8 are 1–3 rounds after it (not > 3), round 9 is 4.
        assert_eq!(
            stalled,
            [
                false, false, false, false, false, false, false, false, true, false
            ]
        );
    }

    #[test]
    fn an_infinite_loss_diverges_and_a_recovered_loss_clears_it() {
        let mut a = Analyzer::new(AnalysisConfig::default()).expect("defaults");
        a.push_round(&round("a", 1, Some(1.0)));
        a.push_round(&round("a", 2, Some(f64::INFINITY)));
        assert_eq!(a.analysis().conditions.diverged.reason, "NonFiniteLoss");
        a.push_round(&round("a", 3, None));
        assert_eq!(
            a.analysis().convergence.state,
            State::Diverged,
            "a missing loss keeps the last verdict"
        );
        a.push_round(&round("a", 4, Some(0.9)));
        assert!(!a.analysis().conditions.diverged.status);
    }
}
