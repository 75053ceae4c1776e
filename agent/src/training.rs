//! Training state built from events: exactly-once per key, run segments, the gauges of the latest
//! round, per-client gauges under a cap, and the records the history keeps.
//!
//! Keys: `round_end` by (run, round); `client_update` by (run, round, client). An identical duplicate
//! is ignored; a differing one replaces the earlier (gauges and history follow the replacement; the
//! round-duration histogram and the counters only ever grow, so they keep the first observation,
//! except `fl_messages_sent_total`, which grows by any increase of `messages_sent`).
//! Without `run_id` the run is the pod's uid, and a round lower than the last one seen (for a new
//! key) starts a new run segment `<uid>#2`, `<uid>#3`, …

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::events::{Batch, ClientUpdate, Event, RoundEnd};
use crate::exposition::{Histogram, TextWriter};
use crate::history::{ClientRecord, History, RoundRecord};
use crate::metrics;

/// Runs remembered for deduplication; the least recently used beyond this is forgotten.
const MAX_RUNS: usize = 16;

/// Limits of the training state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingConfig {
    /// The pod uid: the run of events without `run_id`.
    pub pod_uid: String,
    /// Rounds per run remembered for deduplication.
    pub keep_rounds: usize,
    /// Distinct clients exported as per-client series.
    pub max_clients: usize,
}

/// Where a batch came from (a label of the event counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /v1/events`.
    Http,
    /// The events topic.
    Kafka,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Kafka => "kafka",
        }
    }
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Events with a new key.
    pub new: u64,
    /// Identical duplicates ignored.
    pub ignored: u64,
    /// Differing duplicates that replaced an earlier event.
    pub replaced: u64,
    /// Client updates left out of the per-client series by the cap.
    pub dropped_clients: u64,
}

/// What deduplication keeps of a round: a fingerprint of its values, and its `messages_sent`
/// (a replacement adds only the increase).
#[derive(Clone, Copy)]
struct RoundKey {
    fingerprint: u64,
    messages_sent: Option<u64>,
}

#[derive(Default)]
struct Run {
    rounds: BTreeMap<u64, RoundKey>,
    /// The `round_end` of the highest round, in full (the gauges show it).
    latest: Option<RoundEnd>,
    /// Fingerprints of client updates by round and client.
    updates: BTreeMap<u64, RoundUpdates>,
    last_used: u64,
}

/// Fingerprints of one round's client updates, sorted by client id: 24 bytes a client where a
/// hash map takes about twice that, and a run remembers `keep_rounds` rounds. A round's vector
/// grows as usual while its updates arrive and is trimmed to size once a later round starts.
#[derive(Default)]
struct RoundUpdates(Vec<(Arc<str>, u64)>);

impl RoundUpdates {
    fn position(&self, client: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(c, _)| (**c).cmp(client))
    }

    /// The fingerprint recorded for `client`.
    fn get(&self, client: &str) -> Option<u64> {
        let i = self.position(client).ok()?;
        self.0.get(i).map(|(_, f)| *f)
    }

    /// Records (or replaces) the fingerprint of `client`'s update.
    fn insert(&mut self, client: Arc<str>, fingerprint: u64) {
        match self.position(&client) {
            Ok(i) => {
                if let Some(entry) = self.0.get_mut(i) {
                    entry.1 = fingerprint;
                }
            }
            Err(i) => self.0.insert(i, (client, fingerprint)),
        }
    }

    /// Gives back the room kept for more updates (the round is over).
    fn trim(&mut self) {
        self.0.shrink_to_fit();
    }

    /// Clients with an update.
    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Segmentation of the implicit (pod uid) run.
#[derive(Default)]
struct Implicit {
    segment: u32,
    last_round_end: Option<u64>,
    client_last: HashMap<Arc<str>, u64>,
}

struct ClientGauges {
    run: Arc<str>,
    update: ClientUpdate,
    updates_total: u64,
}

/// The training state.
pub struct Training {
    config: TrainingConfig,
    runs: HashMap<Arc<str>, Run>,
    implicit: Implicit,
    current_run: Option<Arc<str>>,
    clock: u64,
    clients: BTreeMap<Arc<str>, ClientGauges>,
    interned: HashMap<String, Arc<str>>,
    round_durations: Histogram,
    rounds_completed: u64,
    messages_sent: u64,
    last_event_time: Option<f64>,
    events: BTreeMap<(&'static str, &'static str), u64>,
    batches: BTreeMap<(&'static str, &'static str), u64>,
    ignored: u64,
    replaced: u64,
    unknown_fields: u64,
    segments: u64,
}

impl Training {
    /// Empty state.
    pub fn new(config: TrainingConfig) -> Self {
        Training {
            config,
            runs: HashMap::new(),
            implicit: Implicit {
                segment: 1,
                ..Implicit::default()
            },
            current_run: None,
            clock: 0,
            clients: BTreeMap::new(),
            interned: HashMap::new(),
            round_durations: Histogram::new(&metrics::ROUND_DURATION_BOUNDS),
            rounds_completed: 0,
            messages_sent: 0,
            last_event_time: None,
            events: BTreeMap::new(),
            batches: BTreeMap::new(),
            ignored: 0,
            replaced: 0,
            unknown_fields: 0,
            segments: 0,
        }
    }

    /// Messages counted from `round_end.messages_sent` so far.
    pub fn messages_sent(&self) -> u64 {
        self.messages_sent
    }

    /// Counts a rejected batch.
    pub fn count_rejected(&mut self, source: Source) {
        *self.batches.entry((source.label(), "rejected")).or_default() += 1;
    }

    /// Applies a validated batch at Unix time `now`, recording new and replacing events in `history`.
    pub fn apply(&mut self, batch: Batch, source: Source, now: f64, history: &mut History) -> Applied {
        self.apply_each(source, now, history, batch.unknown_fields, |apply| {
            batch.events.into_iter().for_each(apply);
        })
    }

    /// Applies the events that `events` hands over, one at a time, as one validated batch that
    /// carried `unknown_fields` unknown fields (see [`crate::events::for_each_event`]).
    pub fn apply_each(
        &mut self,
        source: Source,
        now: f64,
        history: &mut History,
        unknown_fields: u64,
        events: impl FnOnce(&mut dyn FnMut(Event)),
    ) -> Applied {
        *self.batches.entry((source.label(), "accepted")).or_default() += 1;
        self.unknown_fields += unknown_fields;
        let mut applied = Applied::default();
        events(&mut |event| match event {
            Event::RoundEnd(r) => self.apply_round(r, source, now, history, &mut applied),
            Event::ClientUpdate(u) => self.apply_update(u, source, now, history, &mut applied),
        });
        self.ignored += applied.ignored;
        self.replaced += applied.replaced;
        applied
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        if self.interned.len() > 4 * (self.config.max_clients + MAX_RUNS) {
            self.interned.clear();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(s.to_owned(), a.clone());
        a
    }

    fn implicit_run_id(&mut self) -> Arc<str> {
        let id = if self.implicit.segment <= 1 {
            self.config.pod_uid.clone()
        } else {
            format!("{}#{}", self.config.pod_uid, self.implicit.segment)
        };
        self.intern(&id)
    }

    fn new_segment(&mut self) {
        self.implicit.segment += 1;
        self.implicit.last_round_end = None;
        self.implicit.client_last.clear();
        self.segments += 1;
    }

    fn touch_run(&mut self, run: &Arc<str>) -> &mut Run {
        self.clock += 1;
        if !self.runs.contains_key(run) && self.runs.len() >= MAX_RUNS {
            let oldest = self
                .runs
                .iter()
                .min_by_key(|(_, r)| r.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.runs.remove(&oldest);
            }
        }
        let clock = self.clock;
        let entry = self.runs.entry(run.clone()).or_default();
        entry.last_used = clock;
        entry
    }

    fn apply_round(
        &mut self,
        mut r: RoundEnd,
        source: Source,
        now: f64,
        history: &mut History,
        out: &mut Applied,
    ) {
        let explicit = r.run_id.is_some();
        let mut run_id = match &r.run_id {
            Some(id) => self.intern(id),
            None => self.implicit_run_id(),
        };
        r.run_id = Some(run_id.to_string());
        if !explicit {
            let known = self
                .runs
                .get(&run_id)
                .is_some_and(|run| run.rounds.contains_key(&r.round));
            if !known && self.implicit.last_round_end.is_some_and(|last| r.round < last) {
                self.new_segment();
                run_id = self.implicit_run_id();
                r.run_id = Some(run_id.to_string());
            }
            let last = self.implicit.last_round_end.get_or_insert(r.round);
            *last = (*last).max(r.round);
        }
        let keep = self.config.keep_rounds.max(1);
        let run = self.touch_run(&run_id);
        let fingerprint = Event::RoundEnd(r.clone()).fingerprint();
        let previous = run.rounds.get(&r.round).copied();
        let replaces = match previous {
            Some(p) if p.fingerprint == fingerprint => {
                out.ignored += 1;
                return;
            }
            Some(_) => true,
            None => false,
        };
        run.rounds.insert(
            r.round,
            RoundKey {
                fingerprint,
                messages_sent: r.messages_sent,
            },
        );
        while run.rounds.len() > keep {
            run.rounds.pop_first();
        }
        if run.latest.as_ref().is_none_or(|l| r.round >= l.round) {
            run.latest = Some(r.clone());
        }
        if replaces {
            out.replaced += 1;
            let before = previous.and_then(|p| p.messages_sent).unwrap_or(0);
            self.messages_sent += r.messages_sent.unwrap_or(0).saturating_sub(before);
        } else {
            out.new += 1;
            self.rounds_completed += 1;
            self.messages_sent += r.messages_sent.unwrap_or(0);
            if let Some(d) = r.duration_seconds {
                self.round_durations.observe(d);
            }
        }
        *self.events.entry(("round_end", source.label())).or_default() += 1;
        self.current_run = Some(run_id.clone());
        let time = r.time.unwrap_or(now);
        self.last_event_time = Some(self.last_event_time.map_or(time, |t: f64| t.max(time)));
        history.push_round(RoundRecord {
            seq: 0,
            run_id,
            round: r.round,
            time,
            global_loss: r.global_loss,
            global_accuracy: r.global_accuracy,
            participants: r.participants,
            expected_participants: r.expected_participants,
            duration_seconds: r.duration_seconds,
            learning_rate: r.learning_rate,
            gradient_norm: r.gradient_norm,
            weight_change_norm: r.weight_change_norm,
            messages_sent: r.messages_sent,
            replaces,
        });
    }

    fn apply_update(
        &mut self,
        mut u: ClientUpdate,
        source: Source,
        now: f64,
        history: &mut History,
        out: &mut Applied,
    ) {
        let explicit = u.run_id.is_some();
        let client = self.intern(&u.client_id);
        let mut run_id = match &u.run_id {
            Some(id) => self.intern(id),
            None => self.implicit_run_id(),
        };
        if !explicit {
            let known = self
                .runs
                .get(&run_id)
                .and_then(|run| run.updates.get(&u.round))
                .is_some_and(|m| m.get(&client).is_some());
            let went_back = self
                .implicit
                .client_last
                .get(&client)
                .is_some_and(|last| u.round < *last);
            if !known && went_back {
                self.new_segment();
                run_id = self.implicit_run_id();
            }
            let last = self.implicit.client_last.entry(client.clone()).or_insert(u.round);
            *last = (*last).max(u.round);
        }
        u.run_id = Some(run_id.to_string());
        let keep = self.config.keep_rounds.max(1);
        let run = self.touch_run(&run_id);
        let fingerprint = Event::ClientUpdate(u.clone()).fingerprint();
        if !run.updates.contains_key(&u.round)
            && let Some((_, previous)) = run.updates.range_mut(..u.round).next_back()
        {
            // A later round has started: the previous one's vector is complete.
            previous.trim();
        }
        let round_updates = run.updates.entry(u.round).or_default();
        let replaces = match round_updates.get(&client) {
            Some(p) if p == fingerprint => {
                out.ignored += 1;
                return;
            }
            Some(_) => true,
            None => false,
        };
        round_updates.insert(client.clone(), fingerprint);
        while run.updates.len() > keep {
            run.updates.pop_first();
        }
        if replaces {
            out.replaced += 1;
        } else {
            out.new += 1;
        }
        *self.events.entry(("client_update", source.label())).or_default() += 1;
        // round_end events decide the current run; updates alone do only while no round ended.
        let current_has_rounds = self
            .current_run
            .as_ref()
            .and_then(|c| self.runs.get(c))
            .is_some_and(|r| !r.rounds.is_empty());
        if !current_has_rounds {
            self.current_run = Some(run_id.clone());
        }
        self.update_client_gauges(&client, &run_id, &u, replaces, out);
        let time = u.time.unwrap_or(now);
        self.last_event_time = Some(self.last_event_time.map_or(time, |t: f64| t.max(time)));
        history.push_client(ClientRecord {
            seq: 0,
            run_id,
            round: u.round,
            client_id: client,
            time,
            loss: u.loss.into(),
            accuracy: u.accuracy.into(),
            training_seconds: u.training_seconds.into(),
            samples: u.samples,
            replaces,
        });
    }

    fn update_client_gauges(
        &mut self,
        client: &Arc<str>,
        run: &Arc<str>,
        u: &ClientUpdate,
        replaces: bool,
        out: &mut Applied,
    ) {
        if let Some(g) = self.clients.get_mut(client) {
            if !replaces {
                g.updates_total += 1;
            }
            if g.run != *run || u.round >= g.update.round {
                g.run = run.clone();
                g.update = u.clone();
            }
        } else if self.clients.len() < self.config.max_clients {
            self.clients.insert(
                client.clone(),
                ClientGauges {
                    run: run.clone(),
                    update: u.clone(),
                    updates_total: 1,
                },
            );
        } else {
            out.dropped_clients += 1;
        }
    }

    /// The latest round of the current run.
    fn latest(&self) -> Option<&RoundEnd> {
        self.runs.get(self.current_run.as_ref()?)?.latest.as_ref()
    }

    /// Participants of the latest round: `participants` of its `round_end`, else the distinct
    /// clients that sent an update for the latest round with updates.
    pub fn active_clients(&self) -> Option<u64> {
        let run = self.runs.get(self.current_run.as_ref()?)?;
        let latest_round = run.latest.as_ref().map(|r| (&r.round, r));
        let latest_updates = run.updates.iter().rev().find(|(_, m)| !m.is_empty());
        match (latest_round, latest_updates) {
            (Some((round, r)), updates) => r
                .participants
                .or_else(|| run.updates.get(round).map(|m| m.len() as u64))
                .or_else(|| {
                    updates
                        .filter(|(ur, _)| *ur >= round)
                        .map(|(_, m)| m.len() as u64)
                }),
            (None, Some((_, m))) => Some(m.len() as u64),
            (None, None) => None,
        }
    }

    /// Renders the training section of `/metrics`.
    pub fn render(&self) -> String {
        let mut w = TextWriter::new();
        let latest = self.latest();
        w.single(&metrics::GLOBAL_LOSS, latest.and_then(|r| r.global_loss));
        w.single(
            &metrics::GLOBAL_ACCURACY,
            latest.and_then(|r| r.global_accuracy).map(|a| a * 100.0),
        );
        w.single(&metrics::ACTIVE_CLIENTS, self.active_clients().map(|n| n as f64));
        if self.round_durations.count() > 0 {
            w.family(&metrics::ROUND_DURATION, |f| {
                f.histogram(&[], &self.round_durations)
            });
        }
        w.single(&metrics::ROUND, self.current_round().map(|n| n as f64));
        w.single(
            &metrics::EXPECTED_CLIENTS,
            latest.and_then(|r| r.expected_participants).map(|n| n as f64),
        );
        w.single(
            &metrics::ROUND_LAST_DURATION,
            latest.and_then(|r| r.duration_seconds),
        );
        w.single(&metrics::LEARNING_RATE, latest.and_then(|r| r.learning_rate));
        w.single(&metrics::GRADIENT_NORM, latest.and_then(|r| r.gradient_norm));
        w.single(
            &metrics::WEIGHT_CHANGE_NORM,
            latest.and_then(|r| r.weight_change_norm),
        );
        w.family(&metrics::ROUNDS_COMPLETED, |f| {
            f.sample(&[], self.rounds_completed as f64)
        });
        w.single(&metrics::LAST_EVENT_TIME, self.last_event_time);
        self.render_clients(&mut w);
        w.family(&metrics::EVENTS, |f| {
            for ((kind, source), n) in &self.events {
                f.sample(&[("type", kind), ("source", source)], *n as f64);
            }
        });
        w.family(&metrics::EVENT_BATCHES, |f| {
            for ((source, result), n) in &self.batches {
                f.sample(&[("source", source), ("result", result)], *n as f64);
            }
        });
        w.family(&metrics::EVENT_DUPLICATES, |f| {
            f.sample(&[("outcome", "ignored")], self.ignored as f64);
            f.sample(&[("outcome", "replaced")], self.replaced as f64);
        });
        w.family(&metrics::EVENT_UNKNOWN_FIELDS, |f| {
            f.sample(&[], self.unknown_fields as f64)
        });
        w.family(&metrics::RUN_SEGMENTS, |f| f.sample(&[], self.segments as f64));
        w.finish()
    }

    fn current_round(&self) -> Option<u64> {
        let run = self.runs.get(self.current_run.as_ref()?)?;
        let r = run.rounds.last_key_value().map(|(k, _)| *k);
        let u = run.updates.last_key_value().map(|(k, _)| *k);
        r.max(u)
    }

    fn render_clients(&self, w: &mut TextWriter) {
        type Pick = fn(&ClientGauges) -> Option<f64>;
        let families: [(&metrics::MetricDef, Pick); 6] = [
            (&metrics::CLIENT_LOSS, |g| g.update.loss),
            (&metrics::CLIENT_ACCURACY, |g| g.update.accuracy),
            (&metrics::CLIENT_TRAINING_SECONDS, |g| g.update.training_seconds),
            (&metrics::CLIENT_SAMPLES, |g| g.update.samples.map(|n| n as f64)),
            (&metrics::CLIENT_ROUND, |g| Some(g.update.round as f64)),
            (&metrics::CLIENT_UPDATES, |g| Some(g.updates_total as f64)),
        ];
        for (def, pick) in families {
            w.family(def, |f| {
                for (id, g) in &self.clients {
                    if let Some(v) = pick(g) {
                        f.sample(&[("client_id", id)], v);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::parse_batch;
    use crate::history::Capacity;

    fn setup() -> (Training, History) {
        let t = Training::new(TrainingConfig {
            pod_uid: "uid-1".into(),
            keep_rounds: 100,
            max_clients: 2,
        });
        let h = History::new(Capacity {
            rounds: 100,
            clients: 100,
            system: 10,
            kafka: 10,
        });
        (t, h)
    }

    fn post(t: &mut Training, h: &mut History, body: &str) -> Applied {
        let batch = parse_batch(body.as_bytes(), None).unwrap();
        t.apply(batch, Source::Http, 1000.0, h)
    }

    #[test]
    fn a_retried_client_update_counts_once() {
        let (mut t, mut h) = setup();
        let a = post(
            &mut t,
            &mut h,
            r#"{"type":"client_update","run_id":"r","round":7,"client_id":"site-3","loss":0.4}
{"type":"client_update","run_id":"r","round":7,"client_id":"site-4","loss":0.5}
{"type":"client_update","run_id":"r","round":7,"client_id":"site-3","loss":0.4}"#,
        );
        assert_eq!((a.new, a.ignored, a.replaced), (2, 1, 0));
        assert_eq!(t.active_clients(), Some(2));
        assert_eq!(h.page(Default::default(), 0, 100).clients.len(), 2);
    }

    #[test]
    fn a_differing_duplicate_replaces_and_is_counted() {
        let (mut t, mut h) = setup();
        post(
            &mut t,
            &mut h,
            r#"{"type":"round_end","run_id":"r","round":1,"global_loss":0.9,"messages_sent":10}"#,
        );
        let a = post(
            &mut t,
            &mut h,
            r#"{"type":"round_end","run_id":"r","round":1,"global_loss":0.8,"messages_sent":12}"#,
        );
        assert_eq!(a.replaced, 1);
        assert_eq!(t.messages_sent(), 12);
        let text = t.render();
        assert!(text.contains("fl_global_loss 0.8\n"), "{text}");
        assert!(text.contains("flmon_rounds_completed_total 1\n"));
        assert!(text.contains("flmon_agent_event_duplicates_total{outcome=\"replaced\"} 1\n"));
        let page = h.page(Default::default(), 0, 100);
        assert!(page.rounds[1].replaces);
    }

    #[test]
    fn without_run_id_a_lower_round_starts_a_new_segment() {
        let (mut t, mut h) = setup();
        post(
            &mut t,
            &mut h,
            r#"{"type":"round_end","round":5,"global_loss":0.5}"#,
        );
        post(
            &mut t,
            &mut h,
            r#"{"type":"round_end","round":5,"global_loss":0.5}"#,
        );
        post(
            &mut t,
            &mut h,
            r#"{"type":"round_end","round":1,"global_loss":2.0}"#,
        );
        let page = h.page(Default::default(), 0, 100);
        let runs: Vec<_> = page
            .rounds
            .iter()
            .map(|r| (r.run_id.to_string(), r.round))
            .collect();
        assert_eq!(runs, [("uid-1".into(), 5), ("uid-1#2".into(), 1)]);
        assert!(t.render().contains("fl_global_loss 2\n"));
        assert!(t.render().contains("flmon_agent_run_segments_total 1\n"));
    }

    #[test]
    fn accuracy_is_exported_in_percent_and_nan_loss_as_nan() {
        let (mut t, mut h) = setup();
        post(
            &mut t,
            &mut h,
            r#"{"type":"round_end","round":1,"global_loss":NaN,"global_accuracy":0.5,"participants":3}"#,
        );
        let text = t.render();
        assert!(text.contains("fl_global_accuracy 50\n"));
        assert!(text.contains("fl_global_loss NaN\n"));
        assert!(text.contains("fl_active_clients 3\n"));
    }

    #[test]
    fn clients_beyond_the_cap_are_dropped_and_counted() {
        let (mut t, mut h) = setup();
        let a = post(
            &mut t,
            &mut h,
            r#"[{"type":"client_update","round":1,"client_id":"a"},{"type":"client_update","round":1,"client_id":"b"},{"type":"client_update","round":1,"client_id":"c"}]"#,
        );
        assert_eq!(a.dropped_clients, 1);
        let text = t.render();
        assert!(text.contains("flmon_client_round{client_id=\"b\"} 1"));
        assert!(!text.contains("client_id=\"c\""));
    }
}
