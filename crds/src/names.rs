//! Names shared by the operator's webhook, its controller and the agent: annotations, labels,
//! environment variables and ports. Changing one is a breaking change for running pods.

/// API group of flmon's custom resources.
pub const GROUP: &str = "flmon.io";
/// API version of flmon's custom resources.
pub const VERSION: &str = "v1alpha1";

/// Name of the injected sidecar container.
pub const AGENT_CONTAINER: &str = "flmon-agent";
/// Name of the agent's metrics port (ServiceMonitors and Services select it by name).
pub const METRICS_PORT_NAME: &str = "flmon-metrics";
/// The agent's metrics port. Not 9464 (the OpenTelemetry Prometheus exporter's) nor 9100 (node_exporter's).
pub const METRICS_PORT: u16 = 9477;
/// The agent's pod-local event-ingest port, bound to 127.0.0.1 only.
pub const INGEST_PORT: u16 = 9478;

/// Pod annotation: `"true"`, `"false"` or the name of the FLMonitor that should inject this pod.
pub const ANNOTATION_INJECT: &str = "flmon.io/inject";
/// Pod annotation set by the webhook: the version of the injected agent.
pub const ANNOTATION_INJECTED: &str = "flmon.io/injected";
/// Pod annotation and label set by the webhook: the FLMonitor that injected this pod.
pub const ANNOTATION_MONITOR: &str = "flmon.io/monitor";
/// Pod label set by the webhook; generated Services and ServiceMonitors select on it.
pub const LABEL_MONITOR: &str = "flmon.io/monitor";
/// Pod annotation set by the webhook: a hash of the injected agent's configuration.
pub const ANNOTATION_CONFIG_HASH: &str = "flmon.io/config-hash";
/// Default pod annotation telling the server (`server`) from clients (`client`).
pub const ANNOTATION_ROLE: &str = "flmon.io/role";
/// Default pod annotation carrying the FL client id (else the pod name).
pub const ANNOTATION_CLIENT_ID: &str = "flmon.io/client-id";
/// Pod annotation written by the operator: the client's training-time trend (`stable`, `slowing`, `speeding-up`).
pub const ANNOTATION_CLIENT_TREND: &str = "flmon.io/client-trend";
/// Pod annotation written by the operator: `"true"` while the client is a straggler.
pub const ANNOTATION_STRAGGLER: &str = "flmon.io/straggler";

/// Environment variables the webhook sets on the agent container and the agent reads.
pub mod env {
    /// Name of the pod (Downward API).
    pub const POD_NAME: &str = "FLMON_POD_NAME";
    /// Namespace of the pod (Downward API).
    pub const POD_NAMESPACE: &str = "FLMON_POD_NAMESPACE";
    /// UID of the pod (Downward API).
    pub const POD_UID: &str = "FLMON_POD_UID";
    /// Node the pod runs on (Downward API).
    pub const NODE_NAME: &str = "FLMON_NODE_NAME";
    /// Name of the FLMonitor that injected the agent.
    pub const MONITOR: &str = "FLMON_MONITOR";
    /// `server` or `client`.
    pub const ROLE: &str = "FLMON_ROLE";
    /// The FL client id of this pod (clients only).
    pub const CLIENT_ID: &str = "FLMON_CLIENT_ID";
    /// Address the metrics server binds, e.g. `0.0.0.0:9477`.
    pub const METRICS_ADDR: &str = "FLMON_METRICS_ADDR";
    /// Address the event-ingest server binds, e.g. `127.0.0.1:9478`.
    pub const INGEST_ADDR: &str = "FLMON_INGEST_ADDR";
    /// Sampling interval in Prometheus duration syntax, e.g. `5s`.
    pub const SAMPLE_INTERVAL: &str = "FLMON_SAMPLE_INTERVAL";
    /// Number of rounds kept in the history ring buffers.
    pub const HISTORY_ROUNDS: &str = "FLMON_HISTORY_ROUNDS";
    /// Comma-separated collectors to enable: `host,gpu,kafka,librdkafka,events`.
    pub const COLLECTORS: &str = "FLMON_COLLECTORS";
    /// GPU mode: `Off`, `NodeVisible` or `Claim`.
    pub const GPU_MODE: &str = "FLMON_GPU_MODE";
    /// Kafka bootstrap servers (server-role agents only).
    pub const KAFKA_BOOTSTRAP: &str = "FLMON_KAFKA_BOOTSTRAP_SERVERS";
    /// Comma-separated Kafka topics to watch.
    pub const KAFKA_TOPICS: &str = "FLMON_KAFKA_TOPICS";
    /// Comma-separated consumer groups whose lag to watch.
    pub const KAFKA_GROUPS: &str = "FLMON_KAFKA_CONSUMER_GROUPS";
    /// Topic carrying training events.
    pub const KAFKA_EVENTS_TOPIC: &str = "FLMON_KAFKA_EVENTS_TOPIC";
    /// Kafka security protocol (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`).
    pub const KAFKA_SECURITY_PROTOCOL: &str = "FLMON_KAFKA_SECURITY_PROTOCOL";
    /// SASL mechanism; username and password come from a Secret via `secretKeyRef`.
    pub const KAFKA_SASL_MECHANISM: &str = "FLMON_KAFKA_SASL_MECHANISM";
    /// SASL username (from a Secret).
    pub const KAFKA_SASL_USERNAME: &str = "FLMON_KAFKA_SASL_USERNAME";
    /// SASL password (from a Secret).
    pub const KAFKA_SASL_PASSWORD: &str = "FLMON_KAFKA_SASL_PASSWORD";
    /// Prefix of per-app-container limit variables: `FLMON_LIMIT_CPU_<container>` / `FLMON_LIMIT_MEMORY_<container>`
    /// (container name upper-cased, `-` → `_`), filled by the Downward API `resourceFieldRef`:
    /// CPU in millicores (divisor `1m`), memory in bytes.
    pub const LIMIT_CPU_PREFIX: &str = "FLMON_LIMIT_CPU_";
    /// See [`LIMIT_CPU_PREFIX`].
    pub const LIMIT_MEMORY_PREFIX: &str = "FLMON_LIMIT_MEMORY_";
    /// Set on app containers: where the FL app posts training events, e.g. `http://127.0.0.1:9478/v1/events`.
    pub const EVENTS_URL: &str = "FLMON_EVENTS_URL";
}

/// Prometheus series the agent exports and the operator's generated dashboards and alert rules
/// query. The seed's seven names keep the seed's meaning; the rest follow Prometheus conventions
/// (base units, `_total` counters, 0-1 ratios). Changing one breaks dashboards and rules.
pub mod metrics {
    /// Gauge: global loss after the last round (server pod).
    pub const GLOBAL_LOSS: &str = "fl_global_loss";
    /// Gauge: global accuracy after the last round, in **percent** 0-100 (the seed's meaning).
    pub const GLOBAL_ACCURACY_PERCENT: &str = "fl_global_accuracy";
    /// Gauge: clients that took part in the last round (server pod).
    pub const ACTIVE_CLIENTS: &str = "fl_active_clients";
    /// Histogram: round durations in seconds (`_bucket`, `_sum`, `_count`).
    pub const ROUND_DURATION_SECONDS: &str = "fl_round_duration_seconds";
    /// Counter: messages sent by the FL app.
    pub const MESSAGES_SENT_TOTAL: &str = "fl_messages_sent_total";
    /// Gauge: CPU usage of the pod's app processes, percent of the app containers' limits (node capacity if none).
    pub const CPU_USAGE_PERCENT: &str = "fl_cpu_usage_percent";
    /// Gauge: memory usage of the pod's app processes, percent of the app containers' limits (node capacity if none).
    pub const MEMORY_USAGE_PERCENT: &str = "fl_memory_usage_percent";

    /// Gauge: the last completed round number (server pod).
    pub const ROUND: &str = "flmon_round";
    /// Gauge: duration of the last completed round in seconds (server pod).
    pub const LAST_ROUND_DURATION_SECONDS: &str = "flmon_last_round_duration_seconds";
    /// Gauge: a client's local loss in its last round; label [`LABEL_CLIENT_ID`].
    pub const CLIENT_LOSS: &str = "flmon_client_loss";
    /// Gauge: a client's local accuracy (0-1) in its last round; label [`LABEL_CLIENT_ID`].
    pub const CLIENT_ACCURACY_RATIO: &str = "flmon_client_accuracy_ratio";
    /// Gauge: a client's local training time in its last round, seconds; label [`LABEL_CLIENT_ID`].
    pub const CLIENT_TRAINING_SECONDS: &str = "flmon_client_training_seconds";
    /// Counter: rounds a client took part in; label [`LABEL_CLIENT_ID`].
    pub const CLIENT_ROUNDS_TOTAL: &str = "flmon_client_rounds_total";
    /// Gauge: GPU utilization 0-1; labels [`LABEL_GPU`], [`LABEL_GPU_UUID`], [`LABEL_GPU_MODEL`].
    pub const GPU_UTILIZATION_RATIO: &str = "flmon_gpu_utilization_ratio";
    /// Gauge: GPU memory in use, bytes; GPU labels.
    pub const GPU_MEMORY_USED_BYTES: &str = "flmon_gpu_memory_used_bytes";
    /// Gauge: GPU memory in total, bytes; GPU labels.
    pub const GPU_MEMORY_TOTAL_BYTES: &str = "flmon_gpu_memory_total_bytes";
    /// Gauge: GPU temperature, degrees Celsius; GPU labels.
    pub const GPU_TEMPERATURE_CELSIUS: &str = "flmon_gpu_temperature_celsius";
    /// Gauge: GPU power draw, watts; GPU labels.
    pub const GPU_POWER_WATTS: &str = "flmon_gpu_power_watts";
    /// Counter: messages appended to a topic (from high-watermark offsets); label [`LABEL_TOPIC`].
    pub const KAFKA_TOPIC_MESSAGES_TOTAL: &str = "flmon_kafka_topic_messages_total";
    /// Gauge: sampled end-to-end latency of a topic's messages (now minus message timestamp), seconds; label [`LABEL_TOPIC`].
    pub const KAFKA_TOPIC_LATENCY_SECONDS: &str = "flmon_kafka_topic_latency_seconds";
    /// Gauge: consumer lag in messages of one group on one partition; labels
    /// [`LABEL_CONSUMER_GROUP`], [`LABEL_TOPIC`], `partition`. Absent when the offset is unknown.
    pub const KAFKA_CONSUMERGROUP_LAG: &str = "flmon_kafka_consumergroup_lag";
    /// Gauge, exported by the **operator**: rounds since the monitor's primary metric last improved;
    /// labels `namespace`, [`LABEL_MONITOR`] (scraped with `honorLabels`).
    pub const ROUNDS_WITHOUT_IMPROVEMENT: &str = "flmon_monitor_rounds_without_improvement";
    /// Gauge, exported by the **operator**: 1 for the monitor's current phase, 0 for the others;
    /// labels `namespace`, [`LABEL_MONITOR`], `phase`.
    pub const MONITOR_PHASE: &str = "flmon_monitor_phase";

    /// Label carrying the FLMonitor's name on every scraped series (set by the generated
    /// ServiceMonitor from the pod label `flmon.io/monitor`).
    pub const LABEL_MONITOR: &str = "flmon_monitor";
    /// Label carrying a client id.
    pub const LABEL_CLIENT_ID: &str = "client_id";
    /// Label carrying a GPU's index.
    pub const LABEL_GPU: &str = "gpu";
    /// Label carrying a GPU's UUID.
    pub const LABEL_GPU_UUID: &str = "uuid";
    /// Label carrying a GPU's model name.
    pub const LABEL_GPU_MODEL: &str = "model";
    /// Label carrying a Kafka topic.
    pub const LABEL_TOPIC: &str = "topic";
    /// Label carrying a Kafka consumer group.
    pub const LABEL_CONSUMER_GROUP: &str = "consumergroup";
}
