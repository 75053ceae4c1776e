//! Wiring: the state shared by the servers and the collector threads, start-up (collectors from
//! the registry table, the two listeners, the events-topic reader) and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::collectors::{self, HistoryUpdate, Output};
use crate::config::{CollectorName, Config};
use crate::events::{self, EventError};
use crate::history::{AgentIdentity, Capacity, History, HistoryPage};
use crate::librdkafka::{Accepted, LibrdkafkaState, StatsError};
use crate::server;
use crate::snapshot::{Section, Snapshot};
use crate::training::{Applied, Source, Training, TrainingConfig};

/// The agent's version, as exported and injected (`flmon.io/injected`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// State shared by the HTTP handlers and the collector threads.
pub struct Shared {
    /// Origin of the monotonic sample clock.
    pub origin: Instant,
    /// The `/metrics` body.
    pub snapshot: Snapshot,
    history: Mutex<History>,
    training: Mutex<Training>,
    librdkafka: Mutex<LibrdkafkaState>,
    librdkafka_tx: AtomicU64,
    identity: AgentIdentity,
    default_client_id: Option<String>,
    /// Ingest collectors switched on.
    events_enabled: bool,
    librdkafka_enabled: bool,
    sampled: Mutex<Vec<&'static str>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Shared {
    /// Empty state for `config`.
    pub fn new(config: &Config) -> Self {
        let identity = AgentIdentity {
            pod: config.pod_name.clone().unwrap_or_else(|| "standalone".into()),
            namespace: config.pod_namespace.clone().unwrap_or_default(),
            uid: config.pod_uid_or_local(),
            version: VERSION.into(),
            role: config.role.as_str().into(),
            client_id: config.client_id.clone(),
            monitor: config.monitor.clone(),
        };
        let info = vec![
            ("version", VERSION.to_owned()),
            ("role", config.role.as_str().to_owned()),
            ("monitor", config.monitor.clone().unwrap_or_default()),
            ("gpu_mode", config.effective_gpu_mode().as_str().to_owned()),
            (
                "host_scope",
                format!("{:?}", config.effective_host_scope()).to_lowercase(),
            ),
        ];
        let shared = Shared {
            origin: Instant::now(),
            snapshot: Snapshot::new(info),
            history: Mutex::new(History::new(Capacity {
                rounds: config.history_rounds,
                clients: config.history_clients,
                system: config.history_samples,
                kafka: config.history_samples,
            })),
            training: Mutex::new(Training::new(TrainingConfig {
                pod_uid: config.pod_uid_or_local(),
                keep_rounds: config.history_rounds,
                max_clients: config.max_clients,
            })),
            librdkafka: Mutex::new(LibrdkafkaState::default()),
            librdkafka_tx: AtomicU64::new(0),
            identity,
            default_client_id: config.client_id.clone(),
            events_enabled: config.enabled(CollectorName::Events),
            librdkafka_enabled: config.enabled(CollectorName::Librdkafka),
            sampled: Mutex::new(Vec::new()),
        };
        if shared.events_enabled {
            shared.render_training(&lock(&shared.training));
        }
        if shared.librdkafka_enabled {
            let (text, _) = lock(&shared.librdkafka).render();
            shared.snapshot.publish(Section::Librdkafka, text);
        }
        shared
    }

    /// Whether `POST /v1/events` is served.
    pub fn events_enabled(&self) -> bool {
        self.events_enabled
    }

    /// Whether `POST /v1/librdkafka-stats` is served.
    pub fn librdkafka_enabled(&self) -> bool {
        self.librdkafka_enabled
    }

    fn render_training(&self, training: &Training) {
        let mut text = training.render();
        let mut w = crate::exposition::TextWriter::new();
        let total = training.messages_sent() + self.librdkafka_tx.load(Ordering::Relaxed);
        w.family(&crate::metrics::MESSAGES_SENT, |f| f.sample(&[], total as f64));
        text.push_str(&w.finish());
        self.snapshot.publish(Section::Training, text);
    }

    /// Applies a collector's sample: its section, history records, dropped series and status.
    pub fn apply_output(&self, name: &'static str, section: Section, output: Output, elapsed: Duration) {
        self.snapshot.publish(section, output.text);
        if !output.history.is_empty() {
            let mut history = lock(&self.history);
            for update in output.history {
                match update {
                    HistoryUpdate::System(s) => history.push_system(s),
                    HistoryUpdate::Gpus(g) => history.set_gpus(g),
                    HistoryUpdate::Kafka(records) => {
                        for k in records {
                            history.push_kafka(k);
                        }
                    }
                }
            }
        }
        for (family, n) in output.dropped {
            self.snapshot.count_dropped(family, n);
        }
        self.snapshot
            .record_collector(name, elapsed, output.error.is_none());
    }

    /// Parses and applies a batch of training events (the `POST /v1/events` body or one message of
    /// the events topic). Nothing of a rejected batch is applied.
    ///
    /// # Errors
    /// Every problem found in the batch.
    pub fn ingest_events(&self, body: &[u8], source: Source) -> Result<Applied, Vec<EventError>> {
        let started = Instant::now();
        let default_client_id = self.default_client_id.as_deref();
        let validated = events::validate_batch(body, default_client_id);
        let now = unix_now();
        let result = {
            let mut training = lock(&self.training);
            let result = match validated {
                Ok(unknown_fields) => {
                    let mut history = lock(&self.history);
                    Ok(
                        training.apply_each(source, now, &mut history, unknown_fields, |apply| {
                            events::for_each_event(body, default_client_id, apply);
                        }),
                    )
                }
                Err(errors) => {
                    training.count_rejected(source);
                    Err(errors)
                }
            };
            self.render_training(&training);
            result
        };
        if let Ok(applied) = &result {
            self.snapshot
                .count_dropped(crate::metrics::CLIENT_LOSS.name, applied.dropped_clients);
        }
        self.snapshot
            .record_collector(CollectorName::Events.as_str(), started.elapsed(), result.is_ok());
        result
    }

    /// Parses and applies a librdkafka statistics document; a bad one is counted and the last
    /// good one kept.
    ///
    /// # Errors
    /// Why the document was rejected.
    pub fn ingest_stats(&self, body: &[u8]) -> Result<Accepted, StatsError> {
        let started = Instant::now();
        let (result, text, dropped) = {
            let mut state = lock(&self.librdkafka);
            let result = state.accept(body);
            let (text, dropped) = state.render();
            (result, text, dropped)
        };
        self.snapshot.publish(Section::Librdkafka, text);
        if let Ok(accepted) = &result
            && accepted.new_tx_messages > 0
        {
            self.librdkafka_tx
                .fetch_add(accepted.new_tx_messages, Ordering::Relaxed);
            self.render_training(&lock(&self.training));
        }
        // Like a sampled collector: every render counts the partition samples its cap left out.
        self.snapshot
            .count_dropped(crate::metrics::LIBRDKAFKA_CONSUMER_LAG.name, dropped);
        if let Ok(accepted) = &result
            && accepted.retired_client
        {
            // The retired client's series are gone from every per-client family; counted once.
            self.snapshot
                .count_dropped(crate::metrics::LIBRDKAFKA_TX_MESSAGES.name, 1);
        }
        self.snapshot.record_collector(
            CollectorName::Librdkafka.as_str(),
            started.elapsed(),
            result.is_ok(),
        );
        result
    }

    /// A page of the history.
    pub fn history_page(&self, since: u64, limit: usize) -> HistoryPage {
        lock(&self.history).page(self.identity.clone(), since, limit)
    }

    /// Ready once every sampled collector has finished its first sample.
    pub fn ready(&self) -> bool {
        let statuses = self.snapshot.collector_statuses();
        lock(&self.sampled).iter().all(|name| statuses.contains_key(name))
    }
}

/// A running agent: its bound addresses and what stops it.
pub struct Agent {
    /// Address the metrics server listens on.
    pub metrics_addr: SocketAddr,
    /// Address the ingest server listens on.
    pub ingest_addr: SocketAddr,
    /// The shared state (for tests and benchmarks).
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    collector_stops: Vec<mpsc::Sender<()>>,
    collector_threads: Vec<JoinHandle<()>>,
    events_stop: Arc<AtomicBool>,
}

impl Agent {
    /// Starts the collectors and binds both listeners.
    ///
    /// # Errors
    /// A listener that cannot bind, or a collector thread that cannot start.
    pub async fn start(config: Config) -> anyhow::Result<Agent> {
        let shared = Arc::new(Shared::new(&config));
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .await
            .with_context(|| format!("cannot listen on the metrics address {}", config.metrics_addr))?;
        let ingest_listener = TcpListener::bind(config.ingest_addr)
            .await
            .with_context(|| format!("cannot listen on the ingest address {}", config.ingest_addr))?;

        let mut collector_stops = Vec::new();
        let mut collector_threads = Vec::new();
        for entry in collectors::REGISTRY {
            if !config.enabled(entry.name) {
                continue;
            }
            match (entry.build)(&config) {
                Ok(Some(collector)) => {
                    let (tx, rx) = mpsc::channel();
                    lock(&shared.sampled).push(entry.name.as_str());
                    let handle =
                        collectors::spawn(entry, collector, config.sample_interval, shared.clone(), rx)
                            .with_context(|| format!("cannot start the {} collector", entry.name.as_str()))?;
                    collector_stops.push(tx);
                    collector_threads.push(handle);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(collector = entry.name.as_str(), error = %e, "collector not started");
                    shared
                        .snapshot
                        .record_collector(entry.name.as_str(), Duration::ZERO, false);
                }
            }
        }
        let events_stop = Arc::new(AtomicBool::new(false));
        if let (true, true, Some(topic), Some(settings)) = (
            config.role == crate::config::Role::Server,
            config.enabled(CollectorName::Events),
            config.kafka_events_topic.clone().filter(|t| !t.is_empty()),
            collectors::kafka::KafkaSettings::from_config(&config),
        ) {
            match collectors::kafka::spawn_events_reader(
                &settings,
                topic,
                shared.clone(),
                events_stop.clone(),
            ) {
                Ok(handle) => collector_threads.push(handle),
                Err(e) => tracing::warn!(error = %e, "training events are not read from Kafka"),
            }
        }

        let (shutdown, signal) = watch::channel(false);
        let metrics_addr = metrics_listener.local_addr()?;
        let ingest_addr = ingest_listener.local_addr()?;
        let servers = vec![
            tokio::spawn(serve(
                metrics_listener,
                server::metrics_router(shared.clone()),
                signal.clone(),
            )),
            tokio::spawn(serve(
                ingest_listener,
                server::ingest_router(shared.clone(), config.max_body_bytes),
                signal,
            )),
        ];
        tracing::info!(%metrics_addr, %ingest_addr, version = VERSION, standalone = config.standalone(), "agent started");
        Ok(Agent {
            metrics_addr,
            ingest_addr,
            shared,
            shutdown,
            servers,
            collector_stops,
            collector_threads,
            events_stop,
        })
    }

    /// Stops serving (in-flight requests finish), stops the collectors and releases NVML and the
    /// Kafka clients.
    ///
    /// # Errors
    /// When a server ended with an I/O error.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let mut result = Ok(());
        for server in self.servers {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(anyhow::Error::new(e).context("a server failed")),
                Err(e) => result = Err(anyhow::Error::new(e).context("a server task failed")),
            }
        }
        self.events_stop.store(true, Ordering::Relaxed);
        drop(self.collector_stops);
        let threads = self.collector_threads;
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await
        .context("waiting for the collectors to stop")?;
        tracing::info!("agent stopped");
        result
    }
}

async fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut signal: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = signal.wait_for(|stop| *stop).await;
        })
        .await
}

/// Runs the agent until SIGTERM or SIGINT, then shuts down gracefully.
///
/// # Errors
/// Start-up failures and server errors.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let agent = Agent::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    agent.stop().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
