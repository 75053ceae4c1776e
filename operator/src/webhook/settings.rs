//! What the injection needs to know about one FLMonitor and about the operator's agent build,
//! kept apart from the CRD types so the injection stays a pure function of plain values.

use std::collections::BTreeMap;

use flmon_crds::{FLMonitor, PodMetadataKey, PodMetadataSource, names};
use k8s_openapi::api::core::v1::{Pod, ResourceRequirements, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

pub use flmon_crds::GpuMode;
use sha2::{Digest, Sha256};

/// The operator-wide facts about the agent: which image to inject and which version it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentDefaults {
    /// Image injected when the monitor names none, e.g. `ghcr.io/flmon/agent:0.1.0`.
    pub image: String,
    /// The agent version written to `flmon.io/injected`; a pod whose value differs is outdated.
    pub version: String,
}

impl AgentDefaults {
    /// The agent image of this operator build: `<repository>:<crate version>`.
    pub fn for_repository(repository: &str) -> Self {
        let version = env!("CARGO_PKG_VERSION").to_owned();
        Self {
            image: format!("{repository}:{version}"),
            version,
        }
    }
}

/// The agent part of a monitor's spec, defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSettings {
    /// Image override; `None` injects [`AgentDefaults::image`].
    pub image: Option<String>,
    /// Resources of the agent container; `None` gives [`default_agent_resources`].
    pub resources: Option<ResourceRequirements>,
    /// Sampling interval in Prometheus duration syntax.
    pub sample_interval: String,
    /// Entries kept in each of the agent's history ring buffers.
    pub history_length: i32,
    /// Collectors switched on (`host`, `gpu`, `kafka`, `librdkafka`, `events`).
    pub collectors: Vec<String>,
    /// Whether the pod's containers share one process namespace (the agent then sees the app's
    /// processes and reports their usage).
    pub share_process_namespace: bool,
    /// GPU mode; `None` picks [`GpuMode::NodeVisible`] for pods requesting `nvidia.com/gpu`, else
    /// [`GpuMode::Off`].
    pub gpu_mode: Option<GpuMode>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            image: None,
            resources: None,
            sample_interval: "5s".to_owned(),
            history_length: 4096,
            collectors: ["host", "gpu", "kafka", "librdkafka", "events"]
                .map(str::to_owned)
                .to_vec(),
            share_process_namespace: true,
            gpu_mode: None,
        }
    }
}

/// SASL credentials, always read from a Secret in the monitor's namespace.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SaslSettings {
    /// Mechanism, e.g. `SCRAM-SHA-512`.
    pub mechanism: String,
    /// Secret key holding the username.
    pub username: SecretKeySelector,
    /// Secret key holding the password.
    pub password: SecretKeySelector,
}

/// The Kafka part of a monitor's spec; passed to server-role agents only.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// Topics whose throughput and latency to watch.
    pub topics: Vec<String>,
    /// Consumer groups whose lag to watch.
    pub consumer_groups: Vec<String>,
    /// Topic carrying training events.
    pub events_topic: Option<String>,
    /// Security protocol (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`).
    pub security_protocol: Option<String>,
    /// SASL settings.
    pub sasl: Option<SaslSettings>,
}

/// Everything the webhook needs from one FLMonitor.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectionSettings {
    /// The monitor's name (label value of `flmon.io/monitor`).
    pub name: String,
    /// When the monitor was created; the oldest of two monitors selecting a pod wins.
    pub created: Option<Timestamp>,
    /// The FL pods of this job.
    pub selector: LabelSelector,
    /// Pod annotation or label telling server from clients.
    pub role: PodMetadataKey,
    /// The value of `role` that marks the server; any other value (or none) is a client.
    pub server_value: String,
    /// Pod annotation or label carrying the client id (else the pod name).
    pub client_id: PodMetadataKey,
    /// Agent settings.
    pub agent: AgentSettings,
    /// Kafka settings, if the job uses Kafka.
    pub kafka: Option<KafkaSettings>,
}

impl InjectionSettings {
    /// A monitor with default settings, handy in tests and for building from a spec.
    pub fn new(name: impl Into<String>, selector: LabelSelector) -> Self {
        Self {
            name: name.into(),
            created: None,
            selector,
            role: PodMetadataKey {
                source: PodMetadataSource::Annotation,
                key: names::ANNOTATION_ROLE.to_owned(),
            },
            server_value: "server".to_owned(),
            client_id: PodMetadataKey {
                source: PodMetadataSource::Annotation,
                key: names::ANNOTATION_CLIENT_ID.to_owned(),
            },
            agent: AgentSettings::default(),
            kafka: None,
        }
    }

    /// The image injected for this monitor.
    pub fn image<'a>(&'a self, defaults: &'a AgentDefaults) -> &'a str {
        self.agent.image.as_deref().unwrap_or(&defaults.image)
    }

    /// A short hash of everything in this monitor (and the operator's agent build) that shapes
    /// the injected agent; written to `flmon.io/config-hash` so stale agents can be counted.
    ///
    /// Pod-specific values (role, client id, the app containers' limits) are left out on purpose:
    /// they cannot change for a running pod, so they never make an agent stale.
    pub fn config_hash(&self, defaults: &AgentDefaults) -> String {
        #[derive(Serialize)]
        struct HashInput<'a> {
            version: &'a str,
            image: &'a str,
            agent: &'a AgentSettings,
            kafka: &'a Option<KafkaSettings>,
            role: &'a PodMetadataKey,
            server_value: &'a str,
            client_id: &'a PodMetadataKey,
        }
        let input = HashInput {
            version: &defaults.version,
            image: self.image(defaults),
            agent: &self.agent,
            kafka: &self.kafka,
            role: &self.role,
            server_value: &self.server_value,
            client_id: &self.client_id,
        };
        // Serialising plain structs, strings and BTreeMaps cannot fail.
        let json = serde_json::to_vec(&input).unwrap_or_default();
        let digest = Sha256::digest(&json);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The value of a pod annotation or label.
pub fn pod_value<'a>(pod: &'a Pod, key: &PodMetadataKey) -> Option<&'a str> {
    let map = match key.source {
        PodMetadataSource::Annotation => pod.metadata.annotations.as_ref(),
        PodMetadataSource::Label => pod.metadata.labels.as_ref(),
    };
    map?.get(&key.key).map(String::as_str)
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), Quantity((*value).to_owned())))
        .collect()
}

/// The agent's resources when the monitor sets none: it samples a few files every few seconds
/// and serves small scrapes, so 10m CPU and 32Mi memory are requested and memory is capped at
/// 64Mi. No CPU limit: throttling would only make scrapes slow.
pub fn default_agent_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "10m"), ("memory", "32Mi")])),
        limits: Some(quantities(&[("memory", "64Mi")])),
        ..Default::default()
    }
}

/// The agent's resources in a Guaranteed pod when the monitor sets none: requests equal limits
/// (so the pod keeps its QoS class), with CPU headroom since a limit is then unavoidable.
pub fn guaranteed_agent_resources() -> ResourceRequirements {
    let both = quantities(&[("cpu", "50m"), ("memory", "64Mi")]);
    ResourceRequirements {
        requests: Some(both.clone()),
        limits: Some(both),
        ..Default::default()
    }
}

impl From<&FLMonitor> for InjectionSettings {
    fn from(monitor: &FLMonitor) -> Self {
        let spec = &monitor.spec;
        let agent = &spec.agent;
        let collectors = &agent.collectors;
        let switches = [
            ("host", collectors.host),
            ("gpu", collectors.gpu),
            ("kafka", collectors.kafka),
            ("librdkafka", collectors.librdkafka),
            ("events", collectors.events),
        ];
        // Optional: a missing Secret or key must not keep the FL pod from starting (a required
        // secretKeyRef of the sidecar would hold the whole pod in CreateContainerConfigError);
        // the agent then reports its Kafka collector failed, naming the missing credentials.
        let namespace_secret = |name: &str, key: &str| SecretKeySelector {
            name: name.to_owned(),
            key: key.to_owned(),
            optional: Some(true),
        };
        Self {
            name: monitor.name_any(),
            created: monitor.metadata.creation_timestamp.as_ref().map(|t| t.0),
            selector: spec.selector.clone(),
            role: spec.roles.role.clone(),
            server_value: spec.roles.server_value.clone(),
            client_id: spec.roles.client_id.clone(),
            agent: AgentSettings {
                image: agent.image.clone(),
                resources: agent.resources.clone(),
                sample_interval: agent.sample_interval.to_string(),
                history_length: agent.history_length,
                collectors: switches
                    .iter()
                    .filter(|(_, on)| *on)
                    .map(|(name, _)| (*name).to_owned())
                    .collect(),
                share_process_namespace: agent.host.share_process_namespace,
                gpu_mode: agent.gpu.mode,
            },
            kafka: spec.kafka.as_ref().map(|kafka| KafkaSettings {
                bootstrap_servers: kafka.bootstrap_servers.clone(),
                topics: kafka.topics.clone(),
                consumer_groups: kafka.consumer_groups.clone(),
                events_topic: kafka.events_topic.clone(),
                security_protocol: Some(kafka.security_protocol.as_str().to_owned()),
                sasl: kafka.sasl.as_ref().map(|sasl| SaslSettings {
                    mechanism: sasl.mechanism.as_str().to_owned(),
                    username: namespace_secret(&sasl.secret_ref.name, &sasl.secret_ref.username_key),
                    password: namespace_secret(&sasl.secret_ref.name, &sasl.secret_ref.password_key),
                }),
            }),
        }
    }
}
