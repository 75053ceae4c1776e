//! The `FLMonitor` custom resource: which pods form one FL job, where its Kafka is, and how to
//! monitor, analyse and alert on it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::names;

/// Longest FLMonitor name: generated objects are named `flmon-<name>` and a label value carries
/// the name, both limited to 63 characters; 52 leaves room for prefixes and suffixes.
pub const MAX_NAME_LENGTH: usize = 52;

/// Most names listed in bounded status lists (missing pods, stragglers).
pub const MAX_LISTED_NAMES: usize = 20;

/// Spec of an FLMonitor: one federated-learning job to monitor.
// Each `printcolumn(...)` repeats `type_ = ...`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flmon.io",
    version = "v1alpha1",
    kind = "FLMonitor",
    plural = "flmonitors",
    singular = "flmonitor",
    shortname = "flm",
    category = "flmon",
    namespaced,
    status = "FLMonitorStatus",
    derive = "PartialEq",
    doc = "FLMonitor monitors one federated-learning job: it selects the job's pods (the agent is injected into them), \
           generates a headless Service, ServiceMonitor, PrometheusRule and Grafana dashboard for it, and reports \
           training progress and convergence in its status.",
    validation = Rule::new("self.metadata.name.size() <= 52").field_path(".metadata.name").message("metadata.name must be at most 52 characters: generated object names and the flmon.io/monitor label value derive from it"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").field_path(".metadata.name").message("metadata.name must be a DNS label (lower-case letters, digits and '-'; no dots): it becomes part of Service names and a label value"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Training phase"),
    printcolumn(name = "Round", type_ = "integer", json_path = ".status.round", description = "Last completed round"),
    printcolumn(name = "Loss", type_ = "number", json_path = ".status.globalLoss", description = "Global loss after the last round"),
    printcolumn(name = "Accuracy", type_ = "number", json_path = ".status.globalAccuracy", description = "Global accuracy (0-1) after the last round"),
    printcolumn(name = "Clients", type_ = "integer", json_path = ".status.activeClients", description = "Clients that took part in the last round"),
    printcolumn(name = "Converged", type_ = "string", json_path = ".status.conditions[?(@.type==\"Converged\")].status", description = "Whether the target was reached"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", description = "Why the monitor is or is not ready (InvalidSpec names the field in its condition); shown with -o wide", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct FLMonitorSpec {
    /// Label selector of the FL job's pods (server and clients) in this namespace. Required; an
    /// empty selector would select every pod of the namespace and is rejected.
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
        "message": "spec.selector must have matchLabels or matchExpressions: an empty selector selects every pod in the namespace"
    }]))]
    pub selector: LabelSelector,

    /// How to tell the FL server from its clients, and how to name clients.
    #[serde(default)]
    pub roles: RolesSpec,

    /// The Kafka cluster the job communicates over. Only the server-role pod's agent talks to it,
    /// so throughput and lag are counted once per job. Omit when the job does not use Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSpec>,

    /// Settings of the injected agent sidecar.
    #[serde(default)]
    pub agent: AgentSpec,

    /// How the operator analyses training progress.
    #[serde(default)]
    pub analysis: AnalysisSpec,

    /// What is generated for Prometheus Operator.
    #[serde(default)]
    pub prometheus: PrometheusSpec,

    /// What is generated for Grafana.
    #[serde(default)]
    pub grafana: GrafanaSpec,

    /// Which AlertRules apply to this monitor.
    #[serde(default)]
    pub alerting: AlertingSpec,
}

/// Where a per-pod value is read from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PodMetadataSource {
    /// A pod annotation.
    #[default]
    Annotation,
    /// A pod label.
    Label,
}

/// A pod annotation or label holding a value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadataKey {
    /// Whether `key` names an annotation or a label.
    #[serde(default)]
    pub source: PodMetadataSource,
    /// The annotation or label key.
    #[schemars(length(min = 1, max = 316))]
    pub key: String,
}

/// How the server pod and client ids are found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolesSpec {
    /// Annotation or label whose value is the pod's role. A selected pod whose value is not
    /// `serverValue` (or that has none) is a client.
    #[serde(default = "default_role_key")]
    pub role: PodMetadataKey,
    /// The value of `role` that marks the FL server.
    #[serde(default = "default_server_value")]
    #[schemars(length(min = 1, max = 63))]
    pub server_value: String,
    /// Annotation or label holding a client's id; clients without it are identified by pod name.
    #[serde(default = "default_client_id_key")]
    pub client_id: PodMetadataKey,
}

fn default_role_key() -> PodMetadataKey {
    PodMetadataKey {
        source: PodMetadataSource::Annotation,
        key: names::ANNOTATION_ROLE.to_owned(),
    }
}

fn default_server_value() -> String {
    "server".to_owned()
}

fn default_client_id_key() -> PodMetadataKey {
    PodMetadataKey {
        source: PodMetadataSource::Annotation,
        key: names::ANNOTATION_CLIENT_ID.to_owned(),
    }
}

impl Default for RolesSpec {
    fn default() -> Self {
        RolesSpec {
            role: default_role_key(),
            server_value: default_server_value(),
            client_id: default_client_id_key(),
        }
    }
}

/// Kafka connection and what to watch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!self.securityProtocol.startsWith('SASL') || has(self.sasl)",
    "message": "spec.kafka.sasl is required when securityProtocol is SASL_PLAINTEXT or SASL_SSL"
}]))]
pub struct KafkaSpec {
    /// Comma-separated `host:port` list of brokers, as Kafka clients take it.
    #[schemars(length(min = 1, max = 2048))]
    pub bootstrap_servers: String,
    /// Topics whose message and byte rates and end-to-end latency are watched (at most 50).
    #[serde(default)]
    #[schemars(length(max = 50), inner(length(min = 1, max = 249)))]
    pub topics: Vec<String>,
    /// Consumer groups whose lag is watched, read from the broker without joining the groups (at most 50).
    #[serde(default)]
    #[schemars(length(max = 50), inner(length(min = 1, max = 255)))]
    pub consumer_groups: Vec<String>,
    /// Topic carrying training events (the same JSON as the agent's `/v1/events`); read from its
    /// end by manual assignment, never as a group member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub events_topic: Option<String>,
    /// Security protocol of the connection. The default agent image speaks `PLAINTEXT` and
    /// `SASL_PLAINTEXT` (mechanism `PLAIN`); `SSL`, `SASL_SSL` and the SCRAM mechanisms need an
    /// agent built with rdkafka's `ssl` feature, named in `spec.agent.image`: without one the
    /// operator reports the monitor invalid (`Ready=False`, reason `InvalidSpec`).
    #[serde(default)]
    pub security_protocol: KafkaSecurityProtocol,
    /// SASL authentication; credentials come from a Secret in this namespace, never inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

/// Kafka security protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KafkaSecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS, verified against the system's CAs.
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// The value librdkafka's `security.protocol` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaSecurityProtocol::Plaintext => "PLAINTEXT",
            KafkaSecurityProtocol::Ssl => "SSL",
            KafkaSecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            KafkaSecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

/// SASL settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// SASL mechanism.
    pub mechanism: SaslMechanism,
    /// Secret in the monitor's namespace holding the username and password.
    pub secret_ref: SaslSecretRef,
}

/// SASL mechanism.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    /// `PLAIN`.
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The value librdkafka's `sasl.mechanism` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A Secret holding SASL credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaslSecretRef {
    /// Name of the Secret (in the monitor's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the username in the Secret.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password in the Secret.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".to_owned()
}

fn default_password_key() -> String {
    "password".to_owned()
}

/// The shortest sampling interval the agent accepts, in milliseconds.
pub const MIN_SAMPLE_INTERVAL_MS: u64 = 100;

/// The durations shorter than [`MIN_SAMPLE_INTERVAL_MS`] (every unit zero, and under 100 ms): the
/// CEL rule on `spec.agent` refuses them, so a monitor cannot inject an agent that would not start.
pub const SAMPLE_INTERVAL_TOO_SHORT: &str = "^(0|(0+[ywdhms])*(0*[0-9]{1,2}ms)?)$";

/// Settings of the injected agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": format!("!has(self.sampleInterval) || !self.sampleInterval.matches('{SAMPLE_INTERVAL_TOO_SHORT}')"),
    "fieldPath": ".sampleInterval",
    "messageExpression": format!("'\"' + self.sampleInterval + '\" is too short: the agent samples at most every {MIN_SAMPLE_INTERVAL_MS}ms'"),
}]))]
pub struct AgentSpec {
    /// Agent image; defaults to the operator's `--agent-image` (`FLMON_AGENT_IMAGE`), which the
    /// Helm chart sets to the agent of the chart's own release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Resources of the agent container. When unset: requests cpu 10m and memory 32Mi, limit memory 64Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How often the agent samples host, GPU and Kafka metrics.
    #[serde(default = "default_sample_interval")]
    pub sample_interval: Duration,
    /// How many training rounds the agent's history keeps (and remembers per run, to drop
    /// duplicates). Client updates and system and Kafka samples keep the agent's own sizes
    /// (10 000 updates; 720 samples, an hour at 5 s).
    #[serde(default = "default_history_length")]
    #[schemars(range(min = 16, max = 1_000_000))]
    pub history_length: i32,
    /// Which collectors run.
    #[serde(default)]
    pub collectors: CollectorsSpec,
    /// Host (process) metrics settings.
    #[serde(default)]
    pub host: HostSpec,
    /// GPU metrics settings.
    #[serde(default)]
    pub gpu: GpuSpec,
}

fn default_sample_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_history_length() -> i32 {
    4096
}

impl Default for AgentSpec {
    fn default() -> Self {
        AgentSpec {
            image: None,
            resources: None,
            sample_interval: default_sample_interval(),
            history_length: default_history_length(),
            collectors: CollectorsSpec::default(),
            host: HostSpec::default(),
            gpu: GpuSpec::default(),
        }
    }
}

/// Collector switches; each is on unless turned off.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorsSpec {
    /// CPU, memory, disk and network of the pod's app processes.
    #[serde(default = "yes")]
    pub host: bool,
    /// GPU utilization, memory, temperature and power (see `gpu.mode`).
    #[serde(default = "yes")]
    pub gpu: bool,
    /// Kafka topic rates, latency and consumer-group lag (server-role pod only).
    #[serde(default = "yes")]
    pub kafka: bool,
    /// Statistics posted by the app's librdkafka-based client.
    #[serde(default = "yes")]
    pub librdkafka: bool,
    /// Training events posted by the app or read from `kafka.eventsTopic`.
    #[serde(default = "yes")]
    pub events: bool,
}

fn yes() -> bool {
    true
}

impl Default for CollectorsSpec {
    fn default() -> Self {
        CollectorsSpec {
            host: true,
            gpu: true,
            kafka: true,
            librdkafka: true,
            events: true,
        }
    }
}

/// Host metrics settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// Set `shareProcessNamespace: true` on injected pods so the agent sees the app's processes.
    /// When false, host usage metrics are absent.
    #[serde(default = "yes")]
    pub share_process_namespace: bool,
}

impl Default for HostSpec {
    fn default() -> Self {
        HostSpec {
            share_process_namespace: true,
        }
    }
}

/// GPU metrics settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// How the agent reaches the pod's GPUs. When unset: `NodeVisible` for pods that request
    /// `nvidia.com/gpu`, else `Off`. The agent never requests a GPU itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<GpuMode>,
}

/// How the agent reaches the pod's GPUs: `Off`, `NodeVisible` or `Claim`. When unset:
/// `NodeVisible` for pods that request `nvidia.com/gpu`, else `Off`.
///
/// Quote `Off` in YAML (`mode: "Off"`): kubectl reads a bare Off as the boolean false.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GpuMode {
    /// No GPU metrics.
    Off,
    /// The agent sees the node's GPUs (NVIDIA runtime) and reports only those running this pod's processes.
    NodeVisible,
    /// The pod's DRA resource claim is shared with the agent.
    Claim,
}

impl GpuMode {
    /// The value of the agent's GPU-mode environment variable.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuMode::Off => "Off",
            GpuMode::NodeVisible => "NodeVisible",
            GpuMode::Claim => "Claim",
        }
    }
}

/// How training is analysed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// Rounds in the moving window used for rate, variance, plateau and straggler decisions.
    #[serde(default = "default_window")]
    #[schemars(range(min = 2, max = 1000))]
    pub window: i32,
    /// Converged once the best global loss is at or below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub target_loss: Option<f64>,
    /// Converged once the best global accuracy (0-1) is at or above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub target_accuracy: Option<f64>,
    /// The metric convergence is decided on. Accuracy is used when no loss arrives.
    #[serde(default)]
    pub primary_metric: PrimaryMetric,
    /// Stalled once more than this many rounds pass without improvement.
    #[serde(default = "default_stall_rounds")]
    #[schemars(range(min = 1, max = 100_000))]
    pub stall_rounds: i32,
    /// Smallest relative change of the best value that counts as improvement (0.001 = 0.1 %).
    #[serde(default = "default_min_delta")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_delta: f64,
    /// A client is a straggler when slower than this factor times the round's median training time.
    #[serde(default = "default_straggler_factor")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub straggler_factor: f64,
    /// Clients expected per round; enables the LowParticipation condition when the events do not carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub expected_clients: Option<i32>,
}

fn default_window() -> i32 {
    5
}

fn default_stall_rounds() -> i32 {
    10
}

fn default_min_delta() -> f64 {
    0.001
}

fn default_straggler_factor() -> f64 {
    1.5
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            window: default_window(),
            target_loss: None,
            target_accuracy: None,
            primary_metric: PrimaryMetric::default(),
            stall_rounds: default_stall_rounds(),
            min_delta: default_min_delta(),
            straggler_factor: default_straggler_factor(),
            expected_clients: None,
        }
    }
}

/// The metric convergence is decided on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PrimaryMetric {
    /// Global loss (lower is better).
    #[default]
    Loss,
    /// Global accuracy (higher is better).
    Accuracy,
}

/// What is generated for Prometheus Operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Generate a ServiceMonitor that scrapes every agent of this job.
    #[serde(default = "yes")]
    pub service_monitor: bool,
    /// Generate a PrometheusRule from the AlertRules that apply to this monitor.
    #[serde(default = "yes")]
    pub rules: bool,
    /// Labels put on every generated ServiceMonitor and PrometheusRule, e.g.
    /// `release: kube-prometheus-stack` so that Prometheus selects them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Scrape interval of the ServiceMonitor; Prometheus's global interval when unset. Alert
    /// expressions treat a sample older than two intervals (30s assumed when unset) as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<Duration>,
}

impl Default for PrometheusSpec {
    fn default() -> Self {
        PrometheusSpec {
            service_monitor: true,
            rules: true,
            labels: BTreeMap::new(),
            scrape_interval: None,
        }
    }
}

/// What is generated for Grafana.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaSpec {
    /// Generate a dashboard ConfigMap that Grafana's sidecar picks up.
    #[serde(default = "yes")]
    pub dashboard: bool,
    /// Namespace of the dashboard ConfigMap; the monitor's own when unset. Only namespaces the
    /// operator is configured to allow are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Label key Grafana's sidecar looks for.
    #[serde(default = "default_dashboard_label_key")]
    #[schemars(length(min = 1, max = 316))]
    pub label_key: String,
    /// Value of that label.
    #[serde(default = "default_dashboard_label_value")]
    #[schemars(length(max = 63))]
    pub label_value: String,
    /// Grafana folder to put the dashboard in, written to the `folderAnnotation` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Annotation key Grafana's sidecar reads the folder from.
    #[serde(default = "default_folder_annotation")]
    #[schemars(length(min = 1, max = 316))]
    pub folder_annotation: String,
}

fn default_dashboard_label_key() -> String {
    "grafana_dashboard".to_owned()
}

fn default_dashboard_label_value() -> String {
    "1".to_owned()
}

fn default_folder_annotation() -> String {
    "grafana_folder".to_owned()
}

impl Default for GrafanaSpec {
    fn default() -> Self {
        GrafanaSpec {
            dashboard: true,
            namespace: None,
            label_key: default_dashboard_label_key(),
            label_value: default_dashboard_label_value(),
            folder: None,
            folder_annotation: default_folder_annotation(),
        }
    }
}

/// Which AlertRules apply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertingSpec {
    /// Whether the cluster-wide default AlertRules (those in the operator's namespace) apply.
    #[serde(default = "yes")]
    pub default_rules: bool,
}

impl Default for AlertingSpec {
    fn default() -> Self {
        AlertingSpec { default_rules: true }
    }
}

/// Observed state of an FLMonitor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FLMonitorStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Training phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Last completed round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<i64>,
    /// Global loss after the last round, as the job reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_loss: Option<f64>,
    /// Global accuracy after the last round, 0-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_accuracy: Option<f64>,
    /// Clients that took part in the last round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_clients: Option<i32>,
    /// Selected pods and whether they carry the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodCounts>,
    /// Pods whose agent version or configuration hash is out of date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outdated_agents: Option<i32>,
    /// Convergence analysis of the primary metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence: Option<ConvergenceStatus>,
    /// Client ids currently straggling (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub stragglers: Vec<String>,
    /// Alerts firing for this monitor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub firing_alerts: Vec<FiringAlert>,
    /// Names of the objects generated for this monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<GeneratedObjects>,
    /// Conditions: Ready, AgentsInjected, MonitoringReady, Converged, Stalled, LowParticipation, Diverged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Training phase of an FL job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// No pod selected yet.
    Pending,
    /// Pods exist but no round has completed.
    Waiting,
    /// Rounds are completing.
    Training,
    /// The target was reached.
    Converged,
    /// No improvement for more than `stallRounds` rounds.
    Stalled,
    /// The loss became non-finite or accuracy collapsed.
    Diverged,
    /// The job's pods finished.
    Completed,
}

impl Phase {
    /// The phase as written in the resource.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Waiting => "Waiting",
            Phase::Training => "Training",
            Phase::Converged => "Converged",
            Phase::Stalled => "Stalled",
            Phase::Diverged => "Diverged",
            Phase::Completed => "Completed",
        }
    }
}

/// Selected pods and whether they carry the agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    /// Pods the selector matches.
    pub selected: i32,
    /// Selected pods that carry the agent.
    pub injected: i32,
    /// Selected pods that should carry the agent but do not (e.g. created while the webhook was down).
    pub missing: i32,
    /// Names of missing pods (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub missing_names: Vec<String>,
}

/// Convergence analysis of the primary metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConvergenceStatus {
    /// Convergence state.
    pub state: ConvergenceState,
    /// Mean change per round over the window, `(first - last) / (n - 1)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Sample variance of the primary metric over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variance: Option<f64>,
    /// Lowest global loss so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_loss: Option<f64>,
    /// Highest global accuracy so far (0-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_accuracy: Option<f64>,
    /// Rounds since the last improvement beyond `minDelta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds_without_improvement: Option<i64>,
    /// Estimated rounds until the target, from the recent rate; absent unless improving toward a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds_to_target: Option<i64>,
}

/// Convergence state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConvergenceState {
    /// Fewer rounds than the window.
    WarmingUp,
    /// Improving.
    Improving,
    /// Flat above the target.
    Plateaued,
    /// No improvement for more than `stallRounds` rounds.
    Stalled,
    /// The best value crossed the target.
    Converged,
    /// Non-finite loss or accuracy collapsed to chance.
    Diverged,
}

/// An alert firing for a monitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FiringAlert {
    /// `namespace/name` of the AlertRule.
    pub rule: String,
    /// Severity of the rule.
    pub severity: crate::Severity,
    /// The pod the alert is about, for per-pod metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// When it started firing.
    pub since: Time,
}

/// Names of the objects generated for a monitor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedObjects {
    /// Headless Service selecting the job's agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// ServiceMonitor (absent while Prometheus Operator is missing or it is turned off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<String>,
    /// PrometheusRule (absent while Prometheus Operator is missing or it is turned off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_rule: Option<String>,
    /// Dashboard ConfigMap as `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CEL rule's expression and the agent's minimum agree: it matches exactly the durations
    /// shorter than [`MIN_SAMPLE_INTERVAL_MS`].
    #[test]
    fn the_sample_interval_rule_refuses_exactly_what_the_agent_would() {
        let too_short = regex::Regex::new(SAMPLE_INTERVAL_TOO_SHORT).expect("a valid expression");
        for text in [
            "0",
            "0s",
            "0ms",
            "00ms",
            "50ms",
            "99ms",
            "0s99ms",
            "0h0m0s",
            "0m50ms",
            "100ms",
            "101ms",
            "1000ms",
            "1s",
            "5s",
            "0s100ms",
            "1m",
            "0m30s",
            "1h30m",
            "1d",
            "2w",
            "1y",
            "10ms",
            "1ms",
            "0y0w0d0h0m0s0ms",
            "1s0ms",
            "0s1ms",
        ] {
            let duration: Duration = text.parse().expect("a Prometheus duration");
            let short = duration.as_std().as_millis() < u128::from(MIN_SAMPLE_INTERVAL_MS);
            assert_eq!(too_short.is_match(text), short, "{text}");
        }
    }
}
