//! Every metric the agent exports, in one place: name, type and help text. The seed's seven names
//! keep the seed's meaning so its dashboard queries work; everything else follows Prometheus
//! conventions (base units, `_total` counters, ratios 0–1). Names that dashboards and alert rules
//! query come from [`flmon_crds::names::metrics`], shared with the operator.

use flmon_crds::names::metrics as shared;

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing count.
    Counter,
    /// Observations in cumulative buckets.
    Histogram,
}

/// A metric family's name, type and help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// The family name (for counters, including `_total`).
    pub name: &'static str,
    /// The type.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn gauge(name: &'static str, help: &'static str) -> MetricDef {
    MetricDef {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn counter(name: &'static str, help: &'static str) -> MetricDef {
    MetricDef {
        name,
        kind: Kind::Counter,
        help,
    }
}

// ---- The seed's seven ---------------------------------------------------------------------------

/// Seed name. Global model loss of the latest round.
pub const GLOBAL_LOSS: MetricDef = gauge(
    shared::GLOBAL_LOSS,
    "Global model loss of the latest round, as reported by the FL server.",
);
/// Seed name. Global model accuracy of the latest round, in percent (the one percent accuracy).
pub const GLOBAL_ACCURACY: MetricDef = gauge(
    shared::GLOBAL_ACCURACY_PERCENT,
    "Global model accuracy of the latest round, in percent (0-100); events carry it as a ratio.",
);
/// Seed name. Participants of the latest round.
pub const ACTIVE_CLIENTS: MetricDef = gauge(
    shared::ACTIVE_CLIENTS,
    "Clients that participated in the latest round.",
);
/// Seed name. Round durations.
pub const ROUND_DURATION: MetricDef = MetricDef {
    name: shared::ROUND_DURATION_SECONDS,
    kind: Kind::Histogram,
    help: "Duration of FL rounds, one observation per distinct round.",
};
/// Upper bounds of [`ROUND_DURATION`]'s buckets: FL rounds last from a second (simulation) to hours.
pub static ROUND_DURATION_BOUNDS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];
/// Seed name. Messages sent by the FL app.
pub const MESSAGES_SENT: MetricDef = counter(
    shared::MESSAGES_SENT_TOTAL,
    "Messages sent by the FL app: librdkafka txmsgs increases plus the messages_sent of round_end events.",
);
/// Seed name. CPU usage of the app containers in percent of their limits.
pub const CPU_USAGE_PERCENT: MetricDef = gauge(
    shared::CPU_USAGE_PERCENT,
    "CPU used by the app in percent of its CPU limit (node capacity when there is no limit).",
);
/// Seed name. Memory usage of the app containers in percent of their limits.
pub const MEMORY_USAGE_PERCENT: MetricDef = gauge(
    shared::MEMORY_USAGE_PERCENT,
    "Memory used by the app in percent of its memory limit (node capacity when there is no limit).",
);

// ---- Training (events) --------------------------------------------------------------------------

/// Latest round number.
pub const ROUND: MetricDef = gauge(shared::ROUND, "Number of the latest round seen.");
/// Clients expected in the latest round.
pub const EXPECTED_CLIENTS: MetricDef = gauge(
    "flmon_expected_clients",
    "Clients the FL server expected in the latest round.",
);
/// Duration of the latest round (AlertRule `roundDuration`).
pub const ROUND_LAST_DURATION: MetricDef = gauge(
    shared::LAST_ROUND_DURATION_SECONDS,
    "Duration of the latest round.",
);
/// Learning rate of the latest round.
pub const LEARNING_RATE: MetricDef = gauge("flmon_learning_rate", "Learning rate of the latest round.");
/// Gradient norm of the latest round.
pub const GRADIENT_NORM: MetricDef = gauge("flmon_gradient_norm", "Gradient norm of the latest round.");
/// Weight change norm of the latest round.
pub const WEIGHT_CHANGE_NORM: MetricDef = gauge(
    "flmon_weight_change_norm",
    "L2 norm of the global weight change in the latest round.",
);
/// Distinct rounds completed.
pub const ROUNDS_COMPLETED: MetricDef = counter(
    "flmon_rounds_completed_total",
    "Distinct rounds whose round_end event arrived.",
);
/// Unix time of the latest training event.
pub const LAST_EVENT_TIME: MetricDef = gauge(
    "flmon_last_event_timestamp_seconds",
    "Unix time of the latest accepted training event.",
);
/// Per-client loss of its latest update.
pub const CLIENT_LOSS: MetricDef = gauge(shared::CLIENT_LOSS, "Local loss of the client's latest update.");
/// Per-client accuracy of its latest update.
pub const CLIENT_ACCURACY: MetricDef = gauge(
    shared::CLIENT_ACCURACY_RATIO,
    "Local accuracy (0-1) of the client's latest update.",
);
/// Per-client training time of its latest update.
pub const CLIENT_TRAINING_SECONDS: MetricDef = gauge(
    shared::CLIENT_TRAINING_SECONDS,
    "Local training time of the client's latest update.",
);
/// Per-client sample count of its latest update.
pub const CLIENT_SAMPLES: MetricDef = gauge(
    "flmon_client_samples",
    "Training samples in the client's latest update.",
);
/// Per-client latest round.
pub const CLIENT_ROUND: MetricDef = gauge("flmon_client_round", "Round of the client's latest update.");
/// Per-client distinct updates.
pub const CLIENT_UPDATES: MetricDef = counter(
    shared::CLIENT_ROUNDS_TOTAL,
    "Rounds the client took part in: distinct (run, round) updates.",
);

/// Accepted training events by type and source.
pub const EVENTS: MetricDef = counter(
    "flmon_agent_events_total",
    "Training events applied, by type and source (http, kafka).",
);
/// Event batches by source and result.
pub const EVENT_BATCHES: MetricDef = counter(
    "flmon_agent_event_batches_total",
    "Training-event batches received, by source and result (accepted, rejected).",
);
/// Duplicate events by outcome.
pub const EVENT_DUPLICATES: MetricDef = counter(
    "flmon_agent_event_duplicates_total",
    "Events whose key was already seen: identical ones are ignored, differing ones replace the earlier.",
);
/// Unknown fields ignored.
pub const EVENT_UNKNOWN_FIELDS: MetricDef = counter(
    "flmon_agent_event_unknown_fields_total",
    "Unknown fields in accepted events (ignored).",
);
/// Run segments started.
pub const RUN_SEGMENTS: MetricDef = counter(
    "flmon_agent_run_segments_total",
    "Run segments started because events without run_id went back to a lower round.",
);

// ---- librdkafka statistics ------------------------------------------------------------------------

/// Statistics documents by result.
pub const LIBRDKAFKA_DOCUMENTS: MetricDef = counter(
    "flmon_librdkafka_statistics_total",
    "librdkafka statistics documents received, by result (accepted, rejected).",
);
/// Time of the last good document.
pub const LIBRDKAFKA_TIMESTAMP: MetricDef = gauge(
    "flmon_librdkafka_statistics_timestamp_seconds",
    "Unix time of the last accepted statistics document, per librdkafka client.",
);
/// Messages transmitted by a client.
pub const LIBRDKAFKA_TX_MESSAGES: MetricDef = counter(
    "flmon_librdkafka_tx_messages_total",
    "Messages transmitted to brokers (librdkafka txmsgs).",
);
/// Message bytes transmitted by a client.
pub const LIBRDKAFKA_TX_BYTES: MetricDef = counter(
    "flmon_librdkafka_tx_message_bytes_total",
    "Message bytes transmitted to brokers (librdkafka txmsg_bytes).",
);
/// Messages received by a client.
pub const LIBRDKAFKA_RX_MESSAGES: MetricDef = counter(
    "flmon_librdkafka_rx_messages_total",
    "Messages consumed from brokers (librdkafka rxmsgs).",
);
/// Message bytes received by a client.
pub const LIBRDKAFKA_RX_BYTES: MetricDef = counter(
    "flmon_librdkafka_rx_message_bytes_total",
    "Message bytes consumed from brokers (librdkafka rxmsg_bytes).",
);
/// Messages waiting in a producer's queue.
pub const LIBRDKAFKA_QUEUED: MetricDef = gauge(
    "flmon_librdkafka_queued_messages",
    "Messages in the client's queues (librdkafka msg_cnt).",
);
/// Broker round-trip time.
pub const LIBRDKAFKA_BROKER_RTT: MetricDef = gauge(
    "flmon_librdkafka_broker_rtt_seconds",
    "Broker round-trip time over librdkafka's last window, by statistic (avg, p99).",
);
/// Consumer lag per partition, computed from known offsets only.
pub const LIBRDKAFKA_CONSUMER_LAG: MetricDef = gauge(
    "flmon_librdkafka_consumer_lag_messages",
    "Consumer lag per partition: high watermark minus the consumer's position, at least the log start.",
);

// ---- Host -------------------------------------------------------------------------------------------

/// CPU time used by the app.
pub const CPU_USAGE_SECONDS: MetricDef = counter(
    "flmon_cpu_usage_seconds_total",
    "CPU time used by the app's processes.",
);
/// The app's CPU limit.
pub const CPU_LIMIT_CORES: MetricDef = gauge(
    "flmon_cpu_limit_cores",
    "CPU limit of the app (node capacity when there is no limit).",
);
/// The app's memory usage.
pub const MEMORY_USAGE_BYTES: MetricDef = gauge(
    "flmon_memory_usage_bytes",
    "Memory used by the app: resident set of its processes, or the cgroup's working set.",
);
/// The app's memory limit.
pub const MEMORY_LIMIT_BYTES: MetricDef = gauge(
    "flmon_memory_limit_bytes",
    "Memory limit of the app (node capacity when there is no limit).",
);
/// Where each limit came from.
pub const LIMIT_INFO: MetricDef = gauge(
    "flmon_limit_info",
    "Where a limit came from: downward_api, cgroup or node (capacity, no limit found).",
);
/// Node CPU capacity.
pub const NODE_CPU_CORES: MetricDef = gauge("flmon_node_cpu_cores", "CPUs of the node.");
/// Node memory capacity.
pub const NODE_MEMORY_BYTES: MetricDef = gauge("flmon_node_memory_bytes", "Memory of the node (MemTotal).");
/// App processes seen.
pub const HOST_PROCESSES: MetricDef = gauge(
    "flmon_host_processes",
    "App processes visible to the agent (shared process namespace).",
);
/// Bytes read from storage by the app.
pub const DISK_READ_BYTES: MetricDef = counter(
    "flmon_disk_read_bytes_total",
    "Bytes the app read from block storage.",
);
/// Bytes written to storage by the app.
pub const DISK_WRITTEN_BYTES: MetricDef = counter(
    "flmon_disk_written_bytes_total",
    "Bytes the app wrote to block storage.",
);
/// Network bytes received.
pub const NET_RX_BYTES: MetricDef = counter(
    "flmon_network_receive_bytes_total",
    "Bytes received by the pod's network device.",
);
/// Network bytes transmitted.
pub const NET_TX_BYTES: MetricDef = counter(
    "flmon_network_transmit_bytes_total",
    "Bytes transmitted by the pod's network device.",
);
/// Network packets received.
pub const NET_RX_PACKETS: MetricDef = counter(
    "flmon_network_receive_packets_total",
    "Packets received by the pod's network device.",
);
/// Network packets transmitted.
pub const NET_TX_PACKETS: MetricDef = counter(
    "flmon_network_transmit_packets_total",
    "Packets transmitted by the pod's network device.",
);
/// Network receive errors.
pub const NET_RX_ERRORS: MetricDef = counter(
    "flmon_network_receive_errors_total",
    "Receive errors on the pod's network device.",
);
/// Network transmit errors.
pub const NET_TX_ERRORS: MetricDef = counter(
    "flmon_network_transmit_errors_total",
    "Transmit errors on the pod's network device.",
);
/// Filesystem size.
pub const FS_SIZE: MetricDef = gauge("flmon_filesystem_size_bytes", "Size of the filesystem.");
/// Filesystem space available to unprivileged users.
pub const FS_AVAIL: MetricDef = gauge(
    "flmon_filesystem_avail_bytes",
    "Space available to unprivileged users on the filesystem.",
);

// ---- GPU ----------------------------------------------------------------------------------------------

/// Whether GPU metrics are exported, and why not.
pub const GPU_UP: MetricDef = gauge(
    "flmon_gpu_up",
    "1 when per-GPU metrics are exported; 0 otherwise, with the reason in the reason label.",
);
/// GPU utilization.
pub const GPU_UTILIZATION: MetricDef = gauge(
    shared::GPU_UTILIZATION_RATIO,
    "Fraction of the last sample period a kernel ran on the GPU (NVML utilization.gpu / 100).",
);
/// GPU memory in use.
pub const GPU_MEMORY_USED: MetricDef = gauge(shared::GPU_MEMORY_USED_BYTES, "GPU memory in use.");
/// GPU memory installed.
pub const GPU_MEMORY_TOTAL: MetricDef = gauge(shared::GPU_MEMORY_TOTAL_BYTES, "GPU memory installed.");
/// GPU temperature.
pub const GPU_TEMPERATURE: MetricDef = gauge(shared::GPU_TEMPERATURE_CELSIUS, "GPU core temperature.");
/// GPU power draw.
pub const GPU_POWER: MetricDef = gauge(shared::GPU_POWER_WATTS, "GPU power draw.");

// ---- Kafka (server role) ------------------------------------------------------------------------------

/// Whether the broker answered the last sample.
pub const KAFKA_UP: MetricDef = gauge("flmon_kafka_up", "1 when the brokers answered the last sample.");
/// Whether a watched topic exists, per topic.
pub const KAFKA_TOPIC_UP: MetricDef = gauge(
    "flmon_kafka_topic_up",
    "1 when the watched topic is in the brokers' metadata, 0 when it is missing or its name is invalid.",
);
/// High watermark per partition.
pub const KAFKA_HIGH_WATERMARK: MetricDef = gauge(
    "flmon_kafka_partition_high_watermark",
    "Offset of the next message written to the partition.",
);
/// Low watermark (log start) per partition.
pub const KAFKA_LOW_WATERMARK: MetricDef = gauge(
    "flmon_kafka_partition_low_watermark",
    "Offset of the first message kept in the partition.",
);
/// Messages appended per topic (sum of high watermarks; resets if a topic is recreated).
pub const KAFKA_TOPIC_MESSAGES: MetricDef = counter(
    shared::KAFKA_TOPIC_MESSAGES_TOTAL,
    "Messages appended to the topic: the sum of its partitions' high watermarks.",
);
/// Message rate per topic.
pub const KAFKA_TOPIC_MESSAGE_RATE: MetricDef = gauge(
    "flmon_kafka_topic_messages_per_second",
    "Messages written to the topic per second, from high-watermark increases between samples.",
);
/// Estimated byte rate per topic.
pub const KAFKA_TOPIC_BYTE_RATE: MetricDef = gauge(
    "flmon_kafka_topic_bytes_per_second",
    "Estimated bytes written to the topic per second: message rate times the mean size of sampled messages.",
);
/// Sampled end-to-end latency per topic.
pub const KAFKA_TOPIC_LATENCY: MetricDef = gauge(
    shared::KAFKA_TOPIC_LATENCY_SECONDS,
    "Sampled latency from a message's timestamp to its arrival at the agent, max over the sample window.",
);
/// Lag per watched group, summed over partitions with a known committed offset.
pub const KAFKA_GROUP_LAG: MetricDef = gauge(
    "flmon_kafka_consumergroup_lag_sum",
    "Lag of the consumer group summed over its partitions with a known committed offset.",
);
/// Lag per watched group and partition.
pub const KAFKA_GROUP_PARTITION_LAG: MetricDef = gauge(
    shared::KAFKA_CONSUMERGROUP_LAG,
    "High watermark minus the group's committed offset, the committed offset raised to the log start.",
);
/// Committed offset per watched group and partition.
pub const KAFKA_GROUP_COMMITTED: MetricDef = gauge(
    "flmon_kafka_consumergroup_committed_offset",
    "The group's committed offset in the partition.",
);
/// Partitions whose committed offset is unknown.
pub const KAFKA_GROUP_UNKNOWN: MetricDef = gauge(
    "flmon_kafka_consumergroup_partitions_unknown",
    "Partitions of watched topics where the group has no committed offset (lag unknown).",
);
// ---- The agent itself -----------------------------------------------------------------------------------

/// Build and configuration info.
pub const AGENT_INFO: MetricDef = gauge("flmon_agent_info", "The agent's version and configuration.");
/// Per-collector duration of the last sample.
pub const COLLECTOR_DURATION: MetricDef = gauge(
    "flmon_agent_collector_duration_seconds",
    "Duration of the collector's last sample.",
);
/// Per-collector success of the last sample.
pub const COLLECTOR_SUCCESS: MetricDef = gauge(
    "flmon_agent_collector_success",
    "1 when the collector's last sample succeeded.",
);
/// Samples left out because a cardinality cap was reached.
pub const DROPPED_SERIES: MetricDef = counter(
    "flmon_agent_dropped_series_total",
    "Samples not exported because a cardinality cap was reached, by family.",
);
