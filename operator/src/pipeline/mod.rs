//! The training pipeline, run by the leader: at every poll interval it reads each FLMonitor's
//! agents and turns what they report into what users look at.
//!
//! ```text
//! FLMonitors, AlertRules (listed each poll)      pods labelled flmon.io/monitor (watched)
//!            │                                              │ Running with a pod IP
//!            ▼                                              ▼
//!   per monitor: one Analyzer ◀── GET :9477/v1/history?since=<cursor per pod uid>   (concurrent, 2 s timeouts)
//!                Evaluator    ◀── GET :9477/metrics (a failed scrape keeps the pod's last samples)
//!            │
//!            ├─▶ status: phase, round, loss, accuracy, clients, convergence, stragglers,
//!            │   firingAlerts, conditions Converged/Stalled/LowParticipation/Diverged
//!            │   (merge patch of what changed, guarded by resourceVersion; nothing when unchanged)
//!            ├─▶ Events: condition and phase transitions, alerts (debounced by the evaluator)
//!            ├─▶ Alertmanager / webhooks (in the background)
//!            ├─▶ client pods' flmon.io/client-trend, flmon.io/straggler (patched on change)
//!            ├─▶ operator /metrics: flmon_monitor_phase, flmon_monitor_rounds_without_improvement
//!            ├─▶ ConfigMap <monitor>-flmon-report on entering Converged/Diverged/Completed
//!            ├─▶ --report-dir/<namespace>/<name>/: plots, report.md, index.html (on change)
//!            └─▶ the dashboard's view
//! AlertRules ◀── status firingMonitors / lastFired
//! ```
//!
//! The controller's reconcile owns the other status fields (observedGeneration, pods, generated,
//! conditions Ready/AgentsInjected/MonitoringReady) and sets `phase` only while it is absent. Both
//! write merge patches guarded by the `resourceVersion` they read, so neither overwrites the other:
//! a writer that read a stale object gets 409 and tries again with a fresh one (the pipeline at its
//! next poll). An unreachable agent is logged and counted, never fatal.

pub mod agent;
pub mod cursor;
pub mod derive;
pub mod report;
pub mod stats;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use flmon_crds::names::metrics::ROUNDS_WITHOUT_IMPROVEMENT;
use flmon_crds::names::{self, LABEL_MONITOR};
use flmon_crds::{AlertRule, AnalysisSpec, FLMonitor, FLMonitorStatus, Phase};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::alerts::{Evaluation, Evaluator, Labels, MonitorRef, Notifier, NotifierConfig, Sample};
use crate::analysis::{Analysis, Analyzer, History};
use crate::controller::Settings;
use crate::controller::rules::{rule_applies, validate_rule};
use crate::controller::status::now;
use crate::dashboard::{DashboardState, MonitorView};
use crate::metrics::ControllerMetrics;
use crate::render::html::AlertView;

use self::agent::{HistoryRead, read_history, scrape};
use self::cursor::{Cursors, Page};
use self::derive::Pods;
use self::stats::{PipelineStats, Request};

/// The kind label of the pipeline's status writes in the operator's metrics.
pub const KIND: &str = "FLMonitor";

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Time between polls.
    pub poll_interval: Duration,
    /// The agents' metrics port (`flmon-metrics`).
    pub agent_port: u16,
    /// Timeout of each request to an agent.
    pub agent_timeout: Duration,
    /// Agents read at once, over all monitors.
    pub concurrency: usize,
    /// Where to also write each monitor's plots, report and page on change.
    pub report_dir: Option<PathBuf>,
    /// Labels added to every alert posted to Alertmanager.
    pub external_labels: Labels,
    /// The controller's settings (operator namespace, allowed notification URLs).
    pub controller: Settings,
}

impl PipelineSettings {
    /// Defaults around the controller's settings: 10 s polls, port 9477, 2 s timeouts.
    pub fn new(controller: Settings) -> Self {
        PipelineSettings {
            poll_interval: Duration::from_secs(10),
            agent_port: names::METRICS_PORT,
            agent_timeout: Duration::from_secs(2),
            concurrency: 64,
            report_dir: None,
            external_labels: Labels::new(),
            controller,
        }
    }
}

/// The pipeline failed to start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An HTTP client could not be built.
    #[error("failed to build the pipeline's HTTP clients: {0}")]
    Http(String),
}

type MonitorKey = (String, String);

/// What the pipeline keeps of one monitor between polls.
struct MonitorState {
    uid: String,
    spec: AnalysisSpec,
    analyzer: Option<Analyzer>,
    /// Why the analysis cannot run (invalid `spec.analysis`), reported once per change.
    invalid: Option<String>,
    cursors: Cursors,
    /// Agents whose reads failed, by pod uid: skipped for a while (see [`cursor::backoff_polls`]).
    failing: HashMap<String, Failing>,
    /// Latest alert samples per pod name.
    samples: HashMap<String, Vec<Sample>>,
    /// Role and client id per pod name, from the agents' documents.
    agents: HashMap<String, (String, Option<String>)>,
    /// The final phase whose report was written.
    reported: Option<Phase>,
    version: u64,
    rendered: u64,
    /// Set while the report folder is being written.
    rendering: Arc<AtomicBool>,
    last_view: Option<(Phase, Vec<AlertView>)>,
}

impl MonitorState {
    fn new(monitor: &FLMonitor) -> Self {
        let spec = monitor.spec.analysis.clone();
        let (analyzer, invalid) = match derive::analysis_config(&spec).and_then(Analyzer::new) {
            Ok(analyzer) => (Some(analyzer), None),
            Err(error) => (None, Some(format!("spec.analysis is unusable: {error}"))),
        };
        MonitorState {
            uid: monitor.uid().unwrap_or_default(),
            spec,
            analyzer,
            invalid,
            cursors: Cursors::default(),
            failing: HashMap::new(),
            samples: HashMap::new(),
            agents: HashMap::new(),
            reported: None,
            version: 0,
            rendered: 0,
            rendering: Arc::new(AtomicBool::new(false)),
            last_view: None,
        }
    }
}

/// An agent whose history could not be read.
#[derive(Debug, Clone, Copy)]
struct Failing {
    /// Failed reads in a row.
    failures: u32,
    /// The poll at which it is tried again.
    retry_at: u64,
}

/// One agent to read in this poll.
struct Job {
    monitor: MonitorKey,
    pod: String,
    uid: String,
    base: String,
    since: u64,
}

/// What was read from one agent.
struct Read {
    job: Job,
    history: Result<HistoryRead, agent::AgentError>,
    samples: Result<Vec<Sample>, agent::AgentError>,
}

/// The leader's poll loop and everything it keeps between polls.
pub struct Pipeline {
    client: Client,
    settings: PipelineSettings,
    http: reqwest::Client,
    metrics: Arc<ControllerMetrics>,
    stats: Arc<PipelineStats>,
    dashboard: Arc<DashboardState>,
    recorder: Recorder,
    notifier: Notifier,
    evaluator: Evaluator,
    monitors: HashMap<MonitorKey, MonitorState>,
    rules_seen: BTreeSet<MonitorKey>,
    /// Polls started so far.
    polls: u64,
}

impl Pipeline {
    /// A pipeline with nothing polled yet.
    ///
    /// # Errors
    /// The HTTP clients cannot be built.
    pub fn new(
        client: Client,
        settings: PipelineSettings,
        metrics: Arc<ControllerMetrics>,
        stats: Arc<PipelineStats>,
        dashboard: Arc<DashboardState>,
    ) -> Result<Self, PipelineError> {
        let http =
            agent::http_client(settings.agent_timeout).map_err(|e| PipelineError::Http(e.to_string()))?;
        let notifier = Notifier::new(NotifierConfig {
            allowed_prefixes: settings.controller.notify_url_prefixes.clone(),
            evaluation_interval: settings.poll_interval,
            external_labels: settings.external_labels.clone(),
            ..NotifierConfig::default()
        })
        .map_err(|e| PipelineError::Http(e.to_string()))?;
        let recorder = Recorder::new(client.clone(), Reporter::from("flmon-operator"));
        Ok(Pipeline {
            client,
            settings,
            http,
            metrics,
            stats,
            dashboard,
            recorder,
            notifier,
            evaluator: Evaluator::new(),
            monitors: HashMap::new(),
            rules_seen: BTreeSet::new(),
            polls: 0,
        })
    }

    /// Polls every `poll_interval` until `shutdown` completes. Pods come from a watch of pods
    /// labelled `flmon.io/monitor`; the first poll waits until it has listed them.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let (pods, writer) = reflector::store::<Pod>();
        let config = watcher::Config::default().labels(LABEL_MONITOR);
        let watch = reflector::reflector(writer, watcher(Api::<Pod>::all(self.client.clone()), config))
            .default_backoff()
            .touched_objects()
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, "the pipeline's pod watch failed; retrying");
                }
            });
        let watch = tokio::spawn(watch);
        tokio::pin!(shutdown);
        let ready = async {
            loop {
                match tokio::time::timeout(Duration::from_millis(100), pods.wait_until_ready()).await {
                    Ok(result) => return result.is_ok(),
                    Err(_elapsed) => {}
                }
            }
        };
        let listed = tokio::select! {
            listed = ready => listed,
            () = &mut shutdown => false,
        };
        if listed {
            tracing::info!(interval = ?self.settings.poll_interval, "training pipeline started");
            let mut ticker = tokio::time::interval(self.settings.poll_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = &mut shutdown => break,
                }
                let started = Instant::now();
                let result = tokio::select! {
                    result = self.poll(&pods) => result,
                    () = &mut shutdown => break,
                };
                if let Err(error) = &result {
                    tracing::warn!(error = %crate::controller::error::describe(error), "poll failed");
                }
                self.stats.poll(result.is_ok(), started.elapsed());
            }
        }
        watch.abort();
        self.dashboard.clear();
        tracing::info!("training pipeline stopped");
    }

    /// One poll of every monitor.
    ///
    /// # Errors
    /// Listing FLMonitors or AlertRules failed (nothing was polled).
    pub async fn poll(&mut self, pods: &Store<Pod>) -> Result<(), kube::Error> {
        let now = SystemTime::now();
        let monitors = Api::<FLMonitor>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let rules = Api::<AlertRule>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let live: Vec<&FLMonitor> = monitors
            .iter()
            .filter(|m| m.meta().deletion_timestamp.is_none())
            .collect();
        self.forget_gone(&live, &rules, now);

        self.polls += 1;
        let mut pods_of: HashMap<MonitorKey, Vec<Arc<Pod>>> = HashMap::new();
        for pod in pods.state() {
            if let (Some(namespace), Some(monitor)) = (pod.namespace(), pod.labels().get(LABEL_MONITOR)) {
                pods_of.entry((namespace, monitor.clone())).or_default().push(pod);
            }
        }
        let mut jobs = Vec::new();
        let mut skipped = 0;
        let mut presence: HashMap<MonitorKey, (Pods, Vec<Arc<Pod>>)> = HashMap::new();
        for monitor in &live {
            let key = (monitor.namespace().unwrap_or_default(), monitor.name_any());
            let uid = monitor.uid().unwrap_or_default();
            let state = self
                .monitors
                .entry(key.clone())
                .or_insert_with(|| MonitorState::new(monitor));
            if state.uid != uid || state.spec != monitor.spec.analysis {
                // A recreated monitor or changed analysis settings: analyse from the start.
                *state = MonitorState::new(monitor);
            }
            let (counts, running) = monitor_pods(pods_of.get(&key).map_or(&[], Vec::as_slice));
            if state.analyzer.is_some() {
                for pod in &running {
                    let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) else {
                        continue;
                    };
                    let host = if ip.contains(':') {
                        format!("[{ip}]")
                    } else {
                        ip.to_owned()
                    };
                    let uid = pod.uid().unwrap_or_default();
                    if state.failing.get(&uid).is_some_and(|f| self.polls < f.retry_at) {
                        // Failing agents are tried less often, so timeouts do not stretch every poll.
                        skipped += 1;
                        continue;
                    }
                    jobs.push(Job {
                        monitor: key.clone(),
                        pod: pod.name_any(),
                        since: state.cursors.since(&uid),
                        uid,
                        base: format!("http://{host}:{}", self.settings.agent_port),
                    });
                }
            }
            presence.insert(key, (counts, running));
        }

        let http = self.http.clone();
        let reads: Vec<Read> = futures::stream::iter(jobs)
            .map(|job| read_agent(http.clone(), job, now))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        let unreachable = reads.iter().filter(|r| r.history.is_err()).count() + skipped;
        self.stats.set_unreachable(unreachable as u64);
        let mut by_monitor: HashMap<MonitorKey, Vec<Read>> = HashMap::new();
        for read in reads {
            by_monitor.entry(read.job.monitor.clone()).or_default().push(read);
        }

        for monitor in &live {
            let key = (monitor.namespace().unwrap_or_default(), monitor.name_any());
            let (counts, running) = presence.remove(&key).unwrap_or_default();
            let reads = by_monitor.remove(&key).unwrap_or_default();
            self.poll_monitor(monitor, &key, counts, &running, reads, &rules, now)
                .await;
        }
        self.write_rule_statuses(&rules).await;
        Ok(())
    }

    /// Drops the state of deleted monitors (their alerts resolve) and forgets deleted rules.
    fn forget_gone(&mut self, live: &[&FLMonitor], rules: &[AlertRule], now: SystemTime) {
        let keep: BTreeSet<MonitorKey> = live
            .iter()
            .map(|m| (m.namespace().unwrap_or_default(), m.name_any()))
            .collect();
        let gone: Vec<MonitorKey> = self
            .monitors
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            self.monitors.remove(&(namespace.clone(), name.clone()));
            let evaluation = self.evaluator.forget_monitor(now, &namespace, &name);
            self.send_notifications(&evaluation);
            self.metrics.forget_monitor(&namespace, &name);
            self.dashboard.remove(&namespace, &name);
            tracing::debug!(monitor = %format!("{namespace}/{name}"), "forgot a deleted monitor");
        }
        let rules_now: BTreeSet<MonitorKey> = rules
            .iter()
            .map(|r| (r.namespace().unwrap_or_default(), r.name_any()))
            .collect();
        for (namespace, name) in self.rules_seen.difference(&rules_now) {
            self.evaluator.forget_rule(namespace, name);
        }
        self.rules_seen = rules_now;
    }

    #[allow(clippy::too_many_arguments)] // One monitor's inputs of one poll, each distinct.
    async fn poll_monitor(
        &mut self,
        monitor: &FLMonitor,
        key: &MonitorKey,
        counts: Pods,
        running: &[Arc<Pod>],
        reads: Vec<Read>,
        rules: &[AlertRule],
        now: SystemTime,
    ) {
        let (namespace, name) = key;
        let polls = self.polls;
        let Some(state) = self.monitors.get_mut(key) else {
            return;
        };
        if let Some(invalid) = state.invalid.take() {
            tracing::warn!(monitor = %format!("{namespace}/{name}"), "{invalid}");
            publish(&self.recorder, monitor, true, "InvalidAnalysisSettings", &invalid).await;
        }
        let Some(analyzer) = state.analyzer.as_mut() else {
            return;
        };

        // Ingest what the agents sent.
        let mut documents: Vec<History> = Vec::new();
        for read in reads {
            let Read {
                job,
                history,
                samples,
            } = read;
            match history {
                Ok(read) => {
                    self.stats.request(Request::History, true);
                    let records: usize = read.documents.iter().map(|d| Page::of(d).records).sum();
                    self.stats.history(records as u64, read.missed, read.restarted);
                    if read.restarted {
                        tracing::info!(pod = %format!("{namespace}/{}", job.pod), "the agent's history started over; read it again from the start");
                    }
                    if read.missed > 0 {
                        tracing::warn!(pod = %format!("{namespace}/{}", job.pod), missed = read.missed, "history records were evicted before they were read");
                    }
                    state.cursors.set(&job.uid, read.next);
                    state.failing.remove(&job.uid);
                    if let Some(doc) = read.documents.last() {
                        state.agents.insert(
                            job.pod.clone(),
                            (doc.agent.role.clone(), doc.agent.client_id.clone()),
                        );
                    }
                    documents.extend(read.documents);
                }
                Err(error) => {
                    self.stats.request(Request::History, false);
                    let failing = state.failing.entry(job.uid.clone()).or_insert(Failing {
                        failures: 0,
                        retry_at: 0,
                    });
                    failing.failures += 1;
                    failing.retry_at = polls + 1 + cursor::backoff_polls(failing.failures);
                    tracing::warn!(
                        pod = %format!("{namespace}/{}", job.pod),
                        failures = failing.failures,
                        %error,
                        "cannot read the agent's history"
                    );
                }
            }
            match samples {
                Ok(samples) => {
                    self.stats.request(Request::Metrics, true);
                    state.samples.insert(job.pod.clone(), samples);
                }
                Err(error) => {
                    // The pod's previous samples stay; they age out after two scrape intervals.
                    self.stats.request(Request::Metrics, false);
                    tracing::debug!(pod = %format!("{namespace}/{}", job.pod), %error, "cannot scrape the agent");
                }
            }
        }
        let live_uids: BTreeSet<String> = running.iter().filter_map(|p| p.uid()).collect();
        let live_names: BTreeSet<String> = running.iter().map(|p| p.name_any()).collect();
        state.cursors.retain(|uid| live_uids.contains(uid));
        state.failing.retain(|uid, _| live_uids.contains(uid));
        state.samples.retain(|pod, _| live_names.contains(pod));
        state.agents.retain(|pod, _| live_names.contains(pod));
        let records: usize = documents.iter().map(|d| Page::of(d).records).sum();
        if records > 0 {
            analyzer.ingest_all(&documents);
            state.version += 1;
        }
        let analysis = analyzer.analysis();

        // Phase, the operator's gauges and the alert evaluation.
        let current = monitor.status.clone().unwrap_or_default();
        // Pods the selector matches but that carry no agent (the controller's audit counts them)
        // still mean the job exists: Waiting rather than Pending.
        let audited = current
            .pods
            .as_ref()
            .map_or(0, |p| usize::try_from(p.selected).unwrap_or(0));
        let counts = Pods {
            selected: counts.selected.max(audited),
            ..counts
        };
        let phase = derive::phase(&analysis, counts, current.phase);
        self.metrics.set_phase(namespace, name, phase);
        let mut samples: Vec<Sample> = state.samples.values().flatten().cloned().collect();
        if analysis.round.is_some() {
            let rwi = analysis.convergence.rounds_without_improvement;
            self.metrics.set_rounds_without_improvement(namespace, name, rwi);
            // Rounds stay far below 2^53, where f64 is exact.
            #[allow(clippy::cast_precision_loss)]
            samples.push(Sample::new(ROUNDS_WITHOUT_IMPROVEMENT, &[], rwi as f64, now));
        }
        let mut applicable: Vec<&AlertRule> = rules
            .iter()
            .filter(|rule| rule_applies(rule, monitor, &self.settings.controller.operator_namespace))
            .filter(|rule| validate_rule(rule, &self.settings.controller).is_ok())
            .collect();
        applicable.sort_by_key(|r| (r.namespace(), r.name_any()));
        let monitor_ref = MonitorRef {
            phase: Some(phase),
            ..MonitorRef::of(monitor)
        };
        let evaluation = self.evaluator.evaluate(now, &monitor_ref, &applicable, &samples);

        // Status, then the Events of what it changed.
        self.write_status(monitor, &analysis, phase, &evaluation).await;
        for notification in &evaluation.notify {
            publish(
                &self.recorder,
                monitor,
                notification.event_type() == "Warning",
                notification.event_reason(),
                &notification.event_note(),
            )
            .await;
        }
        self.send_notifications(&evaluation);

        // Client pods' annotations.
        let Some(state) = self.monitors.get_mut(key) else {
            return;
        };
        let Some(analyzer) = state.analyzer.as_ref() else {
            return;
        };
        let summaries: HashMap<String, crate::analysis::ClientSummary> = analyzer
            .client_summaries()
            .into_iter()
            .map(|s| (s.client_id.clone(), s))
            .collect();
        for pod in running {
            let pod_name = pod.name_any();
            let Some((role, client_id)) = state.agents.get(&pod_name) else {
                continue;
            };
            if role != "client" {
                continue;
            }
            let id = client_id.clone().unwrap_or_else(|| pod_name.clone());
            let Some(summary) = summaries.get(&id) else {
                continue;
            };
            let desired = derive::desired_annotations(summary);
            if let Some(patch) = derive::annotation_patch(pod.metadata.annotations.as_ref(), &desired) {
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
                match pods
                    .patch(&pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => self.stats.annotation_patched(),
                    Err(error) => {
                        tracing::warn!(pod = %format!("{namespace}/{pod_name}"), error = %crate::controller::error::describe(&error), "failed to annotate a client pod");
                    }
                }
            }
        }

        // The final report, once per final phase.
        if derive::is_final(phase) && state.reported != Some(phase) && analysis.round.is_some() {
            let markdown = crate::render::report::markdown(
                name,
                &analysis,
                &summaries.values().cloned().collect::<Vec<_>>(),
                analyzer.config(),
            );
            match report::write_configmap(&self.client, monitor, &markdown).await {
                Ok(()) => {
                    state.reported = Some(phase);
                    self.stats.report_written();
                    tracing::info!(monitor = %format!("{namespace}/{name}"), phase = phase.as_str(), "wrote the final report");
                }
                Err(error) => {
                    tracing::warn!(monitor = %format!("{namespace}/{name}"), error = %crate::controller::error::describe(&error), "failed to write the report ConfigMap");
                }
            }
        }

        // The dashboard's view and the report folder, when something changed.
        let alerts = alert_views(&evaluation);
        let view_key = (phase, alerts.clone());
        if state.last_view.as_ref() != Some(&view_key) {
            state.version += 1;
            state.last_view = Some(view_key);
        }
        let needs_view = self.dashboard.version(namespace, name) != Some(state.version);
        let needs_files = self.settings.report_dir.is_some()
            && state.rendered != state.version
            && !state.rendering.load(Ordering::Acquire);
        if needs_view || needs_files {
            let analyzer = Arc::new(analyzer.clone());
            if needs_view {
                self.dashboard.update(
                    namespace,
                    name,
                    MonitorView {
                        analyzer: analyzer.clone(),
                        analysis: Arc::new(analysis),
                        phase,
                        alerts,
                        version: state.version,
                        updated: format!("{:.0}", k8s_openapi::jiff::Timestamp::now()),
                    },
                );
            }
            if let Some(dir) = self.settings.report_dir.as_ref().filter(|_| needs_files) {
                // One rendering per monitor at a time; a change meanwhile is rendered after it.
                state.rendered = state.version;
                state.rendering.store(true, Ordering::Release);
                let rendering = state.rendering.clone();
                let out = report::monitor_dir(dir, namespace, name);
                let title = name.clone();
                let monitor_name = format!("{namespace}/{name}");
                tokio::task::spawn_blocking(move || {
                    if let Err(error) = report::write_dir(&analyzer, &title, &out) {
                        tracing::warn!(monitor = %monitor_name, %error, "failed to write the report folder");
                    }
                    rendering.store(false, Ordering::Release);
                });
            }
        }
    }

    /// Writes the fields the analysis owns when they changed, then publishes the Events of the
    /// transitions. On a conflict (the controller wrote meanwhile) the monitor is read again and
    /// the write retried once, so the status does not wait a whole poll.
    async fn write_status(
        &self,
        monitor: &FLMonitor,
        analysis: &Analysis,
        phase: Phase,
        evaluation: &Evaluation,
    ) {
        let namespace = monitor.namespace().unwrap_or_default();
        let name = monitor.name_any();
        let api: Api<FLMonitor> = Api::namespaced(self.client.clone(), &namespace);
        let mut fresh: Option<FLMonitor> = None;
        for attempt in 0..2 {
            let object = fresh.as_ref().unwrap_or(monitor);
            let current = object.status.clone().unwrap_or_default();
            let generation = object.meta().generation;
            let status = if analysis.round.is_some() {
                derive::training_status(
                    &current,
                    analysis,
                    phase,
                    evaluation.status_alerts(),
                    generation,
                    &now_time(),
                )
            } else {
                untrained_status(&current, analysis, phase, evaluation, generation)
            };
            let changes = derive::training_changes(&current, &status);
            if changes.is_empty() {
                return;
            }
            let patch = json!({
                "metadata": { "resourceVersion": object.resource_version() },
                "status": changes,
            });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.metrics.status_written(KIND);
                    for event in derive::transition_events(&current, &status) {
                        publish(&self.recorder, object, event.warning, event.reason, &event.note).await;
                    }
                    return;
                }
                Err(kube::Error::Api(error)) if error.code == 409 && attempt == 0 => {
                    match api.get_opt(&name).await {
                        Ok(Some(latest)) if latest.uid() == monitor.uid() => fresh = Some(latest),
                        _ => return,
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        monitor = %format!("{namespace}/{name}"),
                        error = %crate::controller::error::describe(&error),
                        "failed to write the training status; retrying at the next poll"
                    );
                    return;
                }
            }
        }
    }

    /// Posts an evaluation to Alertmanager and webhooks in the background.
    fn send_notifications(&self, evaluation: &Evaluation) {
        if evaluation.firing.is_empty() && evaluation.resolved.is_empty() && evaluation.notify.is_empty() {
            return;
        }
        let notifier = self.notifier.clone();
        let evaluation = evaluation.clone();
        tokio::spawn(async move {
            for outcome in notifier.send(&evaluation).await {
                tracing::debug!(?outcome, "alert notification");
            }
        });
    }

    /// Writes each AlertRule's `firingMonitors` and `lastFired` when they changed.
    async fn write_rule_statuses(&self, rules: &[AlertRule]) {
        for rule in rules {
            let summary = self.evaluator.rule_summary(rule);
            let current = rule.status.clone().unwrap_or_default();
            let last_fired = summary.last_fired.map(time_of);
            if current.firing_monitors == summary.firing_monitors && current.last_fired == last_fired {
                continue;
            }
            let namespace = rule.namespace().unwrap_or_default();
            let api: Api<AlertRule> = Api::namespaced(self.client.clone(), &namespace);
            let patch = json!({
                "metadata": { "resourceVersion": rule.resource_version() },
                "status": { "firingMonitors": summary.firing_monitors, "lastFired": last_fired },
            });
            match api
                .patch_status(&rule.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => self.metrics.status_written(crate::controller::alertrule::KIND),
                Err(error) => {
                    tracing::debug!(rule = %format!("{namespace}/{}", rule.name_any()), error = %crate::controller::error::describe(&error), "AlertRule status not written; retrying at the next poll");
                }
            }
        }
    }
}

/// The status before any round: phase and firing alerts; the analysis conditions only where the
/// status has none yet (so values written before an operator restart are not wiped while the
/// agents are gone).
fn untrained_status(
    current: &FLMonitorStatus,
    analysis: &Analysis,
    phase: Phase,
    evaluation: &Evaluation,
    generation: Option<i64>,
) -> FLMonitorStatus {
    let mut status = current.clone();
    status.phase = Some(phase);
    status.firing_alerts = evaluation.status_alerts();
    let now = now_time();
    for condition in derive::analysis_conditions(analysis) {
        if !status.conditions.iter().any(|c| c.type_ == condition.type_) {
            crate::controller::status::set_condition(&mut status.conditions, &condition, generation, &now);
        }
    }
    status
}

fn now_time() -> Time {
    now()
}

/// A `SystemTime` as a Kubernetes timestamp in whole seconds (as the apiserver stores it).
fn time_of(at: SystemTime) -> Time {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Time(
        k8s_openapi::jiff::Timestamp::from_second(seconds)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Firing alerts as the dashboard shows them.
fn alert_views(evaluation: &Evaluation) -> Vec<AlertView> {
    evaluation
        .firing
        .iter()
        .map(|alert| AlertView {
            name: alert.alertname().to_owned(),
            severity: alert.labels.get("severity").cloned().unwrap_or_default(),
            message: alert.annotations.get("summary").cloned().unwrap_or_default(),
            since: alert
                .fired_at
                .map(|t| format!("{:.0}", time_of(t).0))
                .unwrap_or_default(),
        })
        .collect()
}

/// A monitor's pods (those labelled with its name): counts, and those Running with a pod IP.
fn monitor_pods(pods: &[Arc<Pod>]) -> (Pods, Vec<Arc<Pod>>) {
    let mut counts = Pods::default();
    let mut running = Vec::new();
    for pod in pods {
        if pod.meta().deletion_timestamp.is_some() {
            continue;
        }
        counts.selected += 1;
        let status = pod.status.as_ref();
        match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") if status.and_then(|s| s.pod_ip.as_ref()).is_some() => {
                counts.running += 1;
                running.push(pod.clone());
            }
            Some("Succeeded" | "Failed") => counts.finished += 1,
            _ => {}
        }
    }
    running.sort_by_key(|p| p.name_any());
    (counts, running)
}

/// Reads one agent's history and metrics at once.
async fn read_agent(http: reqwest::Client, job: Job, now: SystemTime) -> Read {
    let (history, samples) = tokio::join!(
        read_history(&http, &job.base, job.since),
        scrape(&http, &job.base, &job.pod, now)
    );
    Read {
        job,
        history,
        samples,
    }
}

/// Publishes an Event on the monitor; a failure is logged.
async fn publish(recorder: &Recorder, monitor: &FLMonitor, warning: bool, reason: &str, note: &str) {
    let event = crate::controller::status::event(warning, reason, note, "Analyze");
    if let Err(error) = recorder.publish(&event, &monitor.object_ref(&())).await {
        tracing::warn!(%error, reason, "failed to publish an Event");
    }
}
