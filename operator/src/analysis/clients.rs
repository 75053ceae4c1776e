//! Per-client performance of one run, in O(1) memory per client.
//!
//! Definitions (SPEC §6), per client:
//! - **mean / spread of training seconds**: Welford mean and sample standard deviation s of the
//!   finite `training_seconds` of its updates.
//! - **consistency** = `1 / (1 + CV)` with the coefficient of variation `CV = s / mean`: 1 for a
//!   perfectly steady client, → 0 as its times scatter; scale-free, so a slow steady client is as
//!   consistent as a fast steady one (the seed's `1 / (1 + s)` depended on the unit).
//! - **participation rate** = rounds participated / rounds since the client first appeared, where
//!   "rounds since" = latest round of the run − first round of the client + 1. An update with
//!   `failed: true`, or carrying no metric at all, is a failure and does not count as
//!   participating; rounds nobody took part in still count.
//! - **trend** = least-squares slope of training seconds over round number, relative to the mean
//!   (`slope / mean`, per round): `stable` within ±`trendBand` (2 %/round), `slowing` above,
//!   `speeding-up` below; unknown below three timed rounds.
//! - **straggler**: in a round, a client is *slow* when its training seconds exceed
//!   `stragglerFactor` × the median training seconds of that round's updates; it is a straggler
//!   when it was slow in at least ⌈window / 2⌉ of the run's last `window` round numbers.
//!
//! Updates are collected per round and the round is *closed* once an event two or more rounds
//! later arrives (client pods are polled one after the other, so updates of a round arrive in any
//! order); an update for a closed round is late and only counted. Snapshots include the open
//! rounds provisionally.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::series::Series;
use super::stats::{Regression, Welford, quantile_sorted};

/// Training-time trend of a client (the `flmon.io/client-trend` annotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Trend {
    /// Fewer than three timed rounds.
    Unknown,
    /// Within the trend band.
    Stable,
    /// Training time growing faster than the band.
    Slowing,
    /// Training time shrinking faster than the band.
    SpeedingUp,
}

impl Trend {
    /// The annotation value: `unknown`, `stable`, `slowing`, `speeding-up`.
    pub fn as_annotation(self) -> &'static str {
        match self {
            Trend::Unknown => "unknown",
            Trend::Stable => "stable",
            Trend::Slowing => "slowing",
            Trend::SpeedingUp => "speeding-up",
        }
    }
}

/// One client's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientSummary {
    /// FL client id.
    pub client_id: String,
    /// First round the client appeared in.
    pub first_round: u64,
    /// Last round the client sent an update for.
    pub last_round: u64,
    /// Rounds it took part in.
    pub rounds_participated: u64,
    /// Rounds it reported a failure.
    pub rounds_failed: u64,
    /// Rounds participated / rounds since it first appeared.
    pub participation_rate: f64,
    /// Mean training seconds.
    pub mean_training_seconds: Option<f64>,
    /// Sample standard deviation of training seconds.
    pub std_training_seconds: Option<f64>,
    /// `1 / (1 + CV)`.
    pub consistency: Option<f64>,
    /// Training-time trend.
    pub trend: Trend,
    /// Least-squares slope of training seconds per round, relative to the mean.
    pub relative_slope: Option<f64>,
    /// Slow in at least half of the last `window` rounds.
    pub straggler: bool,
    /// Rounds among the last `window` in which it was slow.
    pub slow_rounds: u32,
    /// Latest local loss.
    pub last_loss: Option<f64>,
    /// Latest local accuracy.
    pub last_accuracy: Option<f64>,
    /// Training samples summed over its updates.
    pub samples: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Client {
    id: Box<str>,
    first_round: u64,
    last_round: u64,
    participated: u64,
    failed: u64,
    seconds: Welford,
    trend: Regression,
    /// Bit i set: slow in round `mask_round − i`.
    slow_mask: u64,
    mask_round: u64,
    last_metrics_round: u64,
    /// Bit i set: an update of round `counted_round − i` was counted.
    counted_mask: u64,
    counted_round: u64,
    /// Round and position of its newest update still waiting in `pending`.
    open_slot: Option<(u64, u32)>,
    last_loss: Option<f64>,
    last_accuracy: Option<f64>,
    samples: u64,
}

/// One update waiting for its round to close (40 bytes: values with presence bits rather than
/// `Option`s, since up to `window + 2` rounds of every client's updates are held).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pending {
    loss: f64,
    accuracy: f64,
    seconds: f64,
    samples: u32,
    client: u32,
    present: u8,
    failed: bool,
}

const HAS_LOSS: u8 = 1;
const HAS_ACCURACY: u8 = 2;
const HAS_SECONDS: u8 = 4;
const HAS_SAMPLES: u8 = 8;

impl Pending {
    fn new(
        client: u32,
        loss: Option<f64>,
        accuracy: Option<f64>,
        seconds: Option<f64>,
        samples: Option<u64>,
        failed: bool,
    ) -> Self {
        let bit = |present: bool, flag: u8| if present { flag } else { 0 };
        Self {
            loss: loss.unwrap_or(0.0),
            accuracy: accuracy.unwrap_or(0.0),
            seconds: seconds.unwrap_or(0.0),
            samples: samples.map_or(0, |s| u32::try_from(s).unwrap_or(u32::MAX)),
            client,
            present: bit(loss.is_some(), HAS_LOSS)
                | bit(accuracy.is_some(), HAS_ACCURACY)
                | bit(seconds.is_some(), HAS_SECONDS)
                | bit(samples.is_some(), HAS_SAMPLES),
            failed,
        }
    }

    fn get(&self, flag: u8, value: f64) -> Option<f64> {
        (self.present & flag != 0).then_some(value)
    }

    fn loss(&self) -> Option<f64> {
        self.get(HAS_LOSS, self.loss)
    }

    fn accuracy(&self) -> Option<f64> {
        self.get(HAS_ACCURACY, self.accuracy)
    }

    fn seconds(&self) -> Option<f64> {
        self.get(HAS_SECONDS, self.seconds)
    }

    fn samples(&self) -> Option<u64> {
        (self.present & HAS_SAMPLES != 0).then_some(u64::from(self.samples))
    }

    /// Same values, NaN equal to NaN.
    fn same(&self, other: &Pending) -> bool {
        self.present == other.present
            && self.failed == other.failed
            && self.samples == other.samples
            && self.loss.to_bits() == other.loss.to_bits()
            && self.accuracy.to_bits() == other.accuracy.to_bits()
            && self.seconds.to_bits() == other.seconds.to_bits()
    }
}

/// Applies the order-independent part of an update: participation, failures, samples, the
/// training-time mean, spread and trend, and the latest loss and accuracy.
/// A round already counted for the client (or too old to tell, > 63 rounds behind its latest) is
/// left out, so a repeated late update never counts twice.
fn apply(c: &mut Client, p: &Pending, round: u64) {
    if round > c.counted_round || c.counted_mask == 0 {
        let shift = round.saturating_sub(c.counted_round);
        c.counted_mask = if shift >= 64 { 0 } else { c.counted_mask << shift };
        c.counted_round = round;
    }
    let age = c.counted_round - round;
    if age >= 64 || c.counted_mask & (1 << age) != 0 {
        return;
    }
    c.counted_mask |= 1 << age;
    if p.failed {
        c.failed += 1;
        return;
    }
    c.participated += 1;
    c.samples += p.samples().unwrap_or(0);
    if round >= c.last_metrics_round {
        c.last_metrics_round = round;
        c.last_loss = p.loss().or(c.last_loss);
        c.last_accuracy = p.accuracy().or(c.last_accuracy);
    }
    if let Some(s) = p.seconds() {
        c.seconds.push(s);
        c.trend.push(round as f64, s);
    }
}

/// A client's updates in open rounds: (participated, failed, slow-round bits by age, latest loss,
/// latest accuracy, samples).
type OpenRounds = (u64, u64, u64, Option<f64>, Option<f64>, u64);

/// Clients whose own series are kept for plotting one line each.
pub const LINE_CLIENTS: usize = 10;
const LINE_CAPACITY: usize = 256;

/// Per-round distribution of one client metric across the round's updates (10th, 50th, 90th
/// percentile), downsampled.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    /// 10th percentile per round.
    pub p10: Series,
    /// Median per round.
    pub p50: Series,
    /// 90th percentile per round.
    pub p90: Series,
}

impl Spread {
    fn new(capacity: usize) -> Self {
        Self {
            p10: Series::new(capacity),
            p50: Series::new(capacity),
            p90: Series::new(capacity),
        }
    }

    fn push(&mut self, round: u64, values: &mut [f64]) {
        if values.is_empty() {
            return;
        }
        values.sort_unstable_by(f64::total_cmp);
        let x = round as f64;
        self.p10.push(x, quantile_sorted(values, 0.1));
        self.p50.push(x, quantile_sorted(values, 0.5));
        self.p90.push(x, quantile_sorted(values, 0.9));
    }

    fn heap_bytes(&self) -> usize {
        self.p10.heap_bytes() + self.p50.heap_bytes() + self.p90.heap_bytes()
    }
}

/// One plotted client's own series.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLines {
    /// Client id.
    pub client_id: String,
    /// Local loss per round.
    pub loss: Series,
    /// Local accuracy per round.
    pub accuracy: Series,
    /// Training seconds per round.
    pub training_seconds: Series,
}

/// All clients of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientBook {
    index: HashMap<Box<str>, u32>,
    clients: Vec<Client>,
    pending: BTreeMap<u64, Vec<Pending>>,
    closed_round: Option<u64>,
    latest_round: Option<u64>,
    max_clients: usize,
    window: usize,
    straggler_factor: f64,
    trend_band: f64,
    /// Clients not tracked because `maxClients` was reached.
    pub dropped_clients: u64,
    /// Updates for rounds already closed.
    pub late_updates: u64,
    /// Updates replacing a differing earlier copy in an open round.
    pub replaced_updates: u64,
    /// Updates whose accuracy was outside 0–1 (treated as missing).
    pub out_of_range: u64,
    /// Spread of local loss across each round's clients.
    pub loss: Spread,
    /// Spread of local accuracy.
    pub accuracy: Spread,
    /// Spread of training seconds.
    pub seconds: Spread,
    /// Participating clients per closed round.
    pub participants: Series,
    /// Own series of the first [`LINE_CLIENTS`] clients.
    pub lines: Vec<ClientLines>,
}

impl ClientBook {
    /// An empty book.
    pub fn new(config: &super::AnalysisConfig) -> Self {
        let cap = config.series_capacity;
        Self {
            index: HashMap::new(),
            clients: Vec::new(),
            pending: BTreeMap::new(),
            closed_round: None,
            latest_round: None,
            max_clients: config.max_clients,
            window: config.window.clamp(1, super::config::MAX_WINDOW),
            straggler_factor: config.straggler_factor,
            trend_band: config.trend_band,
            dropped_clients: 0,
            late_updates: 0,
            replaced_updates: 0,
            out_of_range: 0,
            loss: Spread::new(cap),
            accuracy: Spread::new(cap),
            seconds: Spread::new(cap),
            participants: Series::new(cap),
            lines: Vec::new(),
        }
    }

    /// Clients tracked.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client was seen.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Notes that the run reached `round` (a round_end or a client update); rounds of client
    /// updates more than `window + 1` rounds behind the latest client update are closed.
    pub fn advance(&mut self, round: u64) {
        if self.latest_round.is_none_or(|r| round > r) {
            self.latest_round = Some(round);
        }
    }

    fn close_before(&mut self, limit: u64) {
        while let Some((&r, _)) = self.pending.first_key_value() {
            if r >= limit {
                break;
            }
            if let Some(updates) = self.pending.remove(&r) {
                self.close(r, updates);
            }
        }
    }

    /// A copy with every open round closed: what plots of the run so far show.
    pub fn closed_copy(&self) -> ClientBook {
        let mut copy = self.clone();
        copy.close_before(u64::MAX);
        copy
    }

    /// Adds one client's update for `round`.
    pub fn push(&mut self, round: u64, client_id: &str, update: &super::history::ClientUpdate) {
        let Some(client) = self.client_index(client_id, round) else {
            return;
        };
        if let Some(c) = self.clients.get_mut(client as usize) {
            c.first_round = c.first_round.min(round);
            c.last_round = c.last_round.max(round);
        }
        let mut accuracy = update.accuracy;
        if accuracy.is_some_and(|a| a.is_finite() && !(0.0..=1.0).contains(&a)) {
            self.out_of_range += 1;
            accuracy = None;
        }
        let no_metric = update.loss.is_none()
            && accuracy.is_none()
            && update.training_seconds.is_none()
            && update.samples.is_none();
        let pending = Pending::new(
            client,
            update.loss,
            accuracy,
            update.training_seconds.filter(|s| s.is_finite() && *s >= 0.0),
            update.samples,
            update.failed.unwrap_or(false) || no_metric,
        );
        if self.closed_round.is_some_and(|c| round <= c) {
            // Its round is closed: counted, and applied to what does not depend on order.
            self.late_updates += 1;
            if let Some(c) = self.clients.get_mut(client as usize) {
                apply(c, &pending, round);
            }
            return;
        }
        let updates = self.pending.entry(round).or_default();
        // The client's latest open slot finds a repeat of its newest round in O(1); a repeat of an
        // older open round is searched for.
        let slot = match self.clients.get(client as usize).and_then(|c| c.open_slot) {
            Some((r, i)) if r == round => Some(i as usize),
            _ => updates.iter().position(|p| p.client == client),
        };
        match slot.and_then(|i| updates.get_mut(i)) {
            Some(existing) => {
                if !existing.same(&pending) {
                    self.replaced_updates += 1;
                    *existing = pending;
                }
            }
            None => {
                if let Some(c) = self.clients.get_mut(client as usize)
                    && c.open_slot.is_none_or(|(r, _)| round >= r)
                {
                    c.open_slot = Some((round, updates.len() as u32));
                }
                updates.push(pending);
            }
        }
        self.advance(round);
        let newest = self.pending.last_key_value().map_or(round, |(&r, _)| r);
        self.close_before(newest.saturating_sub(self.window as u64 + 1));
    }

    fn client_index(&mut self, id: &str, round: u64) -> Option<u32> {
        if let Some(&i) = self.index.get(id) {
            return Some(i);
        }
        if self.clients.len() >= self.max_clients {
            self.dropped_clients += 1;
            return None;
        }
        let i = u32::try_from(self.clients.len()).ok()?;
        self.index.insert(id.into(), i);
        self.clients.push(Client {
            id: id.into(),
            first_round: round,
            last_round: round,
            participated: 0,
            failed: 0,
            seconds: Welford::default(),
            trend: Regression::default(),
            slow_mask: 0,
            mask_round: round,
            last_metrics_round: 0,
            counted_mask: 0,
            counted_round: round,
            open_slot: None,
            last_loss: None,
            last_accuracy: None,
            samples: 0,
        });
        if self.lines.len() < LINE_CLIENTS {
            self.lines.push(ClientLines {
                client_id: id.to_string(),
                loss: Series::new(LINE_CAPACITY),
                accuracy: Series::new(LINE_CAPACITY),
                training_seconds: Series::new(LINE_CAPACITY),
            });
        }
        Some(i)
    }

    /// The median training seconds of a round's successful updates.
    fn round_median(updates: &[Pending]) -> Option<f64> {
        let mut times: Vec<f64> = updates
            .iter()
            .filter(|p| !p.failed)
            .filter_map(|p| p.seconds())
            .collect();
        super::stats::quantile(&mut times, 0.5)
    }

    fn close(&mut self, round: u64, updates: Vec<Pending>) {
        let median = Self::round_median(&updates);
        let mut losses = Vec::with_capacity(updates.len());
        let mut accuracies = Vec::with_capacity(updates.len());
        let mut times = Vec::with_capacity(updates.len());
        let mut participants = 0u32;
        let x = round as f64;
        for p in &updates {
            let Some(c) = self.clients.get_mut(p.client as usize) else {
                continue;
            };
            apply(c, p, round);
            if p.failed {
                continue;
            }
            participants += 1;
            losses.extend(p.loss());
            accuracies.extend(p.accuracy());
            if let Some(s) = p.seconds() {
                times.push(s);
                let slow = median.is_some_and(|m| s > self.straggler_factor * m);
                let shift = round.saturating_sub(c.mask_round);
                c.slow_mask = if shift >= 64 { 0 } else { c.slow_mask << shift } | u64::from(slow);
                c.mask_round = round;
            }
            if let Some(lines) = self.lines.get_mut(p.client as usize) {
                if let Some(loss) = p.loss() {
                    lines.loss.push(x, loss);
                }
                if let Some(acc) = p.accuracy() {
                    lines.accuracy.push(x, acc);
                }
                if let Some(s) = p.seconds() {
                    lines.training_seconds.push(x, s);
                }
            }
        }
        losses.retain(|v| v.is_finite());
        self.loss.push(round, &mut losses);
        self.accuracy.push(round, &mut accuracies);
        self.seconds.push(round, &mut times);
        self.participants.push(x, f64::from(participants));
        self.closed_round = Some(round);
    }

    /// Participants of `round` as seen from client updates (open or closed rounds still held).
    pub fn participants_of(&self, round: u64) -> Option<u32> {
        self.pending
            .get(&round)
            .map(|u| u.iter().filter(|p| !p.failed).count() as u32)
    }

    /// First round any client appeared in.
    pub fn first_round(&self) -> Option<u64> {
        self.clients.iter().map(|c| c.first_round).min()
    }

    /// Latest round any event of the run reached.
    pub fn latest_round(&self) -> Option<u64> {
        self.latest_round
    }

    /// Summaries of all clients, open rounds included provisionally.
    pub fn summaries(&self) -> Vec<ClientSummary> {
        let latest = self.latest_round.unwrap_or(0);
        let mut extra: HashMap<u32, OpenRounds> = HashMap::new();
        for (&round, updates) in &self.pending {
            let median = Self::round_median(updates);
            for p in updates {
                // (participated, failed, slow mask bits to add, loss, accuracy, samples)
                let e = extra.entry(p.client).or_insert((0, 0, 0, None, None, 0));
                if p.failed {
                    e.1 += 1;
                    continue;
                }
                e.0 += 1;
                e.5 += p.samples().unwrap_or(0);
                e.3 = p.loss().or(e.3);
                e.4 = p.accuracy().or(e.4);
                if let (Some(s), Some(m)) = (p.seconds(), median)
                    && s > self.straggler_factor * m
                {
                    let age = latest.saturating_sub(round);
                    if age < 64 {
                        e.2 |= 1 << age;
                    }
                }
            }
        }
        let window_mask = if self.window >= 64 {
            u64::MAX
        } else {
            (1u64 << self.window) - 1
        };
        let needed = self.window.div_ceil(2) as u32;
        self.clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (p_extra, f_extra, slow_extra, loss, acc, samples) = extra
                    .get(&(i as u32))
                    .copied()
                    .unwrap_or((0, 0, 0, None, None, 0));
                let age = latest.saturating_sub(c.mask_round);
                let committed = if age >= 64 { 0 } else { c.slow_mask << age };
                let slow_rounds = ((committed | slow_extra) & window_mask).count_ones();
                let participated = c.participated + p_extra;
                let since = latest.saturating_sub(c.first_round) + 1;
                let mean = c.seconds.mean();
                let std = c.seconds.std_dev();
                let consistency = match (mean, std) {
                    (Some(m), Some(s)) if m > 0.0 => Some(1.0 / (1.0 + s / m)),
                    (Some(_), Some(0.0)) => Some(1.0),
                    _ => None,
                };
                let relative_slope = match (c.trend.slope(), c.trend.mean_y()) {
                    (Some(b), Some(m)) if m > 0.0 && c.trend.count() >= 3 => Some(b / m),
                    _ => None,
                };
                let trend = match relative_slope {
                    None => Trend::Unknown,
                    Some(s) if s > self.trend_band => Trend::Slowing,
                    Some(s) if s < -self.trend_band => Trend::SpeedingUp,
                    Some(_) => Trend::Stable,
                };
                ClientSummary {
                    client_id: c.id.to_string(),
                    first_round: c.first_round,
                    last_round: c.last_round,
                    rounds_participated: participated,
                    rounds_failed: c.failed + f_extra,
                    participation_rate: (participated as f64 / since as f64).min(1.0),
                    mean_training_seconds: mean,
                    std_training_seconds: std,
                    consistency,
                    trend,
                    relative_slope,
                    straggler: slow_rounds >= needed,
                    slow_rounds,
                    last_loss: loss.or(c.last_loss),
                    last_accuracy: acc.or(c.last_accuracy),
                    samples: c.samples + samples,
                }
            })
            .collect()
    }

    /// Heap bytes held (estimate from capacities; ids counted twice, as map key and in the client).
    pub fn heap_bytes(&self) -> usize {
        let ids: usize = self.clients.iter().map(|c| c.id.len()).sum();
        let map = self.index.capacity() * (std::mem::size_of::<(Box<str>, u32)>() + 1);
        let pending: usize = self
            .pending
            .values()
            .map(|v| v.capacity() * std::mem::size_of::<Pending>() + 64)
            .sum();
        let lines: usize = self
            .lines
            .iter()
            .map(|l| l.loss.heap_bytes() + l.accuracy.heap_bytes() + l.training_seconds.heap_bytes())
            .sum();
        self.clients.capacity() * std::mem::size_of::<Client>()
            + 2 * ids
            + map
            + pending
            + lines
            + self.loss.heap_bytes()
            + self.accuracy.heap_bytes()
            + self.seconds.heap_bytes()
            + self.participants.heap_bytes()
    }
}
