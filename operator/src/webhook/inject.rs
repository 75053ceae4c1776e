//! The injection itself: a pod and the FLMonitors of its namespace in, a JSON patch or a skip
//! reason out (SPEC §4). Pure: no I/O, no clock, so every outcome is a golden test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use flmon_crds::names::{self, env};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Pod, PodSpec, Probe, ResourceClaim, ResourceFieldSelector, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::selector;
use super::settings::{
    AgentDefaults, GpuMode, InjectionSettings, KafkaSettings, default_agent_resources,
    guaranteed_agent_resources, pod_value,
};

/// Name of the agent's scratch volume (an `emptyDir` at `/tmp`, since its root FS is read-only).
pub const AGENT_TMP_VOLUME: &str = "flmon-agent-tmp";
/// Where the scratch volume is mounted in the agent container.
pub const AGENT_TMP_MOUNT_PATH: &str = "/tmp";
/// User and group the agent runs as (the distroless `nonroot` user).
pub const AGENT_UID: i64 = 65532;

/// Why a pod is admitted without the agent. The variant name is the metric label and Event reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The pod already carries flmon's agent (admission ran twice): empty patch.
    AlreadyInjected,
    /// The pod says `flmon.io/inject: "false"`.
    OptedOut,
    /// No FLMonitor selects the pod and it does not ask for injection.
    NotSelected,
    /// The pod asks for injection but names no existing FLMonitor of its namespace.
    NoMonitor,
    /// The pod says `flmon.io/inject: "true"`, no monitor selects it and several exist.
    AmbiguousMonitor,
    /// `hostNetwork: true`: the agent's ports would be the node's.
    HostNetwork,
    /// `hostPID: true`: the agent would count every process of the node as the app's, and
    /// `shareProcessNamespace` cannot be combined with it.
    HostPid,
    /// A Windows pod: the agent is a Linux binary and its securityContext is Linux-only.
    WindowsPod,
    /// A container of the pod is already named `flmon-agent`.
    ContainerNameClash,
    /// A container of the pod already uses the agent's ports or port name.
    PortClash,
    /// The pod already has a volume named like the agent's scratch volume.
    VolumeClash,
    /// The object carries no pod spec.
    InvalidPod,
}

impl SkipReason {
    /// Every reason, for exporting zero-valued counters.
    pub const ALL: [Self; 12] = [
        Self::AlreadyInjected,
        Self::OptedOut,
        Self::NotSelected,
        Self::NoMonitor,
        Self::AmbiguousMonitor,
        Self::HostNetwork,
        Self::HostPid,
        Self::WindowsPod,
        Self::ContainerNameClash,
        Self::PortClash,
        Self::VolumeClash,
        Self::InvalidPod,
    ];

    /// The reason as written in metrics, logs and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyInjected => "AlreadyInjected",
            Self::OptedOut => "OptedOut",
            Self::NotSelected => "NotSelected",
            Self::NoMonitor => "NoMonitor",
            Self::AmbiguousMonitor => "AmbiguousMonitor",
            Self::HostNetwork => "HostNetwork",
            Self::HostPid => "HostPID",
            Self::WindowsPod => "WindowsPod",
            Self::ContainerNameClash => "ContainerNameClash",
            Self::PortClash => "PortClash",
            Self::VolumeClash => "VolumeClash",
            Self::InvalidPod => "InvalidPod",
        }
    }

    /// Whether the pod was meant to carry the agent, so the skip deserves an `InjectionSkipped`
    /// Event (the others are ordinary: pods nobody asked to monitor, or already done).
    pub fn is_reported(self) -> bool {
        !matches!(self, Self::AlreadyInjected | Self::OptedOut | Self::NotSelected)
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The FL role of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The aggregation server (its agent also watches Kafka).
    Server,
    /// A training client.
    Client,
}

impl Role {
    /// The value of [`env::ROLE`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

/// The agent goes in.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// The FLMonitor whose settings were injected.
    pub monitor: String,
    /// Other FLMonitors that select the pod too (they lost: named by `flmon.io/inject`, else
    /// older, then by name).
    pub conflicts: Vec<String>,
    /// The pod's role.
    pub role: Role,
    /// The GPU mode the agent was given.
    pub gpu_mode: GpuMode,
    /// The RFC 6902 patch, valid whatever optional arrays and maps the pod lacks.
    pub patch: Patch,
    /// Things the user should know, returned as admission warnings.
    pub warnings: Vec<String>,
}

/// The pod is admitted unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// Why.
    pub reason: SkipReason,
    /// The monitor that would have injected the pod, when there is one.
    pub monitor: Option<String>,
    /// A sentence for Events and logs, naming the field and value at fault.
    pub message: String,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Patch the pod.
    Inject(Injection),
    /// Leave the pod as it is.
    Skip(Skip),
}

impl Decision {
    /// The patch to return: empty for a skip.
    pub fn patch(&self) -> Patch {
        match self {
            Self::Inject(injection) => injection.patch.clone(),
            Self::Skip(_) => Patch(Vec::new()),
        }
    }

    /// The skip, if this is one.
    pub fn skip(&self) -> Option<&Skip> {
        match self {
            Self::Inject(_) => None,
            Self::Skip(skip) => Some(skip),
        }
    }
}

fn skip(reason: SkipReason, monitor: Option<&str>, message: impl Into<String>) -> Decision {
    Decision::Skip(Skip {
        reason,
        monitor: monitor.map(str::to_owned),
        message: message.into(),
    })
}

/// Decides whether and how to inject the agent into `pod`, given the FLMonitors of its
/// namespace.
///
/// Order of checks: already injected, opt-out, which monitor (SPEC §4: the one named by
/// `flmon.io/inject`, else the oldest selecting one, then by name), then everything that would
/// make the patched pod invalid or the agent's numbers wrong (Windows, hostNetwork, hostPID,
/// name, port and volume clashes). Nothing assumes `containers[0]` is the FL app.
pub fn decide(pod: &Pod, monitors: &[InjectionSettings], defaults: &AgentDefaults) -> Decision {
    let Some(spec) = pod.spec.as_ref() else {
        return skip(SkipReason::InvalidPod, None, "the pod has no spec");
    };
    if has_agent(pod) {
        let by = annotation(pod, names::ANNOTATION_MONITOR);
        return skip(
            SkipReason::AlreadyInjected,
            by,
            format!(
                "the pod already carries the agent (annotation {}={:?})",
                names::ANNOTATION_INJECTED,
                annotation(pod, names::ANNOTATION_INJECTED).unwrap_or_default()
            ),
        );
    }
    let choice = match choose_monitor(pod, monitors) {
        Ok(choice) => choice,
        Err(decision) => return decision,
    };
    let monitor = choice.monitor;
    if let Some(clash) = find_obstacle(spec) {
        return skip(clash.0, Some(&monitor.name), clash.1);
    }
    Decision::Inject(build_injection(pod, spec, monitor, choice.conflicts, defaults))
}

/// Whether the pod carries flmon's agent: the `flmon.io/injected` annotation and a container
/// named `flmon-agent`. (A container of that name without the annotation is the user's own.)
pub fn has_agent(pod: &Pod) -> bool {
    annotation(pod, names::ANNOTATION_INJECTED).is_some()
        && pod
            .spec
            .as_ref()
            .is_some_and(|spec| all_containers(spec).any(|c| c.name == names::AGENT_CONTAINER))
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Containers that service meshes and platform agents inject beside the app, by their usual
/// names. They are not the FL app: flmon leaves them untouched (no events URL) and leaves their
/// limits out of the app's.
pub const PROXY_CONTAINERS: &[&str] = &[
    "istio-proxy",
    "linkerd-proxy",
    "consul-dataplane",
    "envoy-sidecar",
    "kuma-sidecar",
    "daprd",
    "vault-agent",
];

/// The pod's app containers: its regular containers except mesh proxies, known by name
/// ([`PROXY_CONTAINERS`]) or listed in Istio's `sidecar.istio.io/status` annotation. A pod made
/// only of such containers keeps them all, so there is always an app.
pub fn app_containers<'a>(pod: &Pod, spec: &'a PodSpec) -> Vec<&'a Container> {
    let istio: Vec<String> = annotation(pod, "sidecar.istio.io/status")
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| {
            v.get("containers")?.as_array().map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    let is_proxy = |c: &Container| PROXY_CONTAINERS.contains(&c.name.as_str()) || istio.contains(&c.name);
    let apps: Vec<&Container> = spec.containers.iter().filter(|c| !is_proxy(c)).collect();
    if apps.is_empty() {
        spec.containers.iter().collect()
    } else {
        apps
    }
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

/// The pod's name for logs and Events; at admission a Job's pod has only `generateName`.
pub fn pod_display_name(pod: &Pod) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) => name.clone(),
        (None, Some(prefix)) => format!("{prefix}<generated>"),
        (None, None) => "<unnamed>".to_owned(),
    }
}

struct Choice<'a> {
    monitor: &'a InjectionSettings,
    conflicts: Vec<String>,
}

/// What `flmon.io/inject` asks for.
enum Request<'a> {
    Default,
    OptOut,
    OptIn,
    Named(&'a str),
}

fn inject_request(pod: &Pod) -> Request<'_> {
    match annotation(pod, names::ANNOTATION_INJECT).map(str::trim) {
        None | Some("") => Request::Default,
        Some(v) if v.eq_ignore_ascii_case("false") => Request::OptOut,
        Some(v) if v.eq_ignore_ascii_case("true") => Request::OptIn,
        Some(name) => Request::Named(name),
    }
}

fn choose_monitor<'a>(pod: &Pod, monitors: &'a [InjectionSettings]) -> Result<Choice<'a>, Decision> {
    let request = inject_request(pod);
    // Oldest first, then by name; a monitor without a creation time (never from the API) last.
    let mut selecting: Vec<&InjectionSettings> = monitors
        .iter()
        .filter(|m| selector::matches(&m.selector, pod.metadata.labels.as_ref()) == Ok(true))
        .collect();
    selecting.sort_by(|a, b| {
        (a.created.is_none(), a.created, &a.name).cmp(&(b.created.is_none(), b.created, &b.name))
    });
    let others = |winner: &str| {
        selecting
            .iter()
            .filter(|m| m.name != winner)
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
    };
    let chosen = match request {
        Request::OptOut => {
            return Err(skip(
                SkipReason::OptedOut,
                None,
                format!("the pod opts out with {}=\"false\"", names::ANNOTATION_INJECT),
            ));
        }
        Request::Named(name) => monitors.iter().find(|m| m.name == name).ok_or_else(|| {
            skip(
                SkipReason::NoMonitor,
                None,
                format!(
                    "{}={name:?} names an FLMonitor that does not exist in this namespace",
                    names::ANNOTATION_INJECT
                ),
            )
        })?,
        Request::OptIn => match (selecting.first(), monitors) {
            (Some(first), _) => first,
            (None, [only]) => only,
            (None, []) => {
                return Err(skip(
                    SkipReason::NoMonitor,
                    None,
                    format!(
                        "{}=\"true\" but this namespace holds no FLMonitor",
                        names::ANNOTATION_INJECT
                    ),
                ));
            }
            (None, several) => {
                return Err(skip(
                    SkipReason::AmbiguousMonitor,
                    None,
                    format!(
                        "{}=\"true\" but none of the {} FLMonitors of this namespace selects the pod; \
                         name one in the annotation",
                        names::ANNOTATION_INJECT,
                        several.len()
                    ),
                ));
            }
        },
        Request::Default => match selecting.first() {
            Some(first) => first,
            None => {
                return Err(skip(
                    SkipReason::NotSelected,
                    None,
                    "no FLMonitor of this namespace selects the pod",
                ));
            }
        },
    };
    Ok(Choice {
        monitor: chosen,
        conflicts: others(&chosen.name),
    })
}

/// The first thing that would make the patched pod invalid or the agent's numbers wrong.
fn find_obstacle(spec: &PodSpec) -> Option<(SkipReason, String)> {
    if spec.os.as_ref().is_some_and(|os| os.name == "windows") {
        return Some((
            SkipReason::WindowsPod,
            "spec.os.name is \"windows\"; the agent runs on Linux only".to_owned(),
        ));
    }
    if spec.host_network == Some(true) {
        return Some((
            SkipReason::HostNetwork,
            "spec.hostNetwork is true: the agent's ports would be the node's".to_owned(),
        ));
    }
    if spec.host_pid == Some(true) {
        return Some((
            SkipReason::HostPid,
            "spec.hostPID is true: the agent would count the node's processes as the app's".to_owned(),
        ));
    }
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| (&c.name, "ephemeralContainers"));
    let named = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (&c.name, "initContainers"))
        .chain(spec.containers.iter().map(|c| (&c.name, "containers")))
        .chain(ephemeral);
    for (name, list) in named {
        if name == names::AGENT_CONTAINER {
            return Some((
                SkipReason::ContainerNameClash,
                format!(
                    "spec.{list} already has a container named {:?} that flmon did not inject",
                    names::AGENT_CONTAINER
                ),
            ));
        }
    }
    for container in all_containers(spec) {
        for port in container.ports.iter().flatten() {
            let taken = [names::METRICS_PORT, names::INGEST_PORT]
                .iter()
                .any(|p| i32::from(*p) == port.container_port);
            if taken || port.name.as_deref() == Some(names::METRICS_PORT_NAME) {
                return Some((
                    SkipReason::PortClash,
                    format!(
                        "container {:?} already uses port {} ({}); the agent needs {} ({}) and {}",
                        container.name,
                        port.container_port,
                        port.name.as_deref().unwrap_or("unnamed"),
                        names::METRICS_PORT,
                        names::METRICS_PORT_NAME,
                        names::INGEST_PORT
                    ),
                ));
            }
        }
    }
    if spec.volumes.iter().flatten().any(|v| v.name == AGENT_TMP_VOLUME) {
        return Some((
            SkipReason::VolumeClash,
            format!("spec.volumes already has a volume named {AGENT_TMP_VOLUME:?}"),
        ));
    }
    None
}

fn build_injection(
    pod: &Pod,
    spec: &PodSpec,
    monitor: &InjectionSettings,
    conflicts: Vec<String>,
    defaults: &AgentDefaults,
) -> Injection {
    let mut warnings = Vec::new();
    if !conflicts.is_empty() {
        warnings.push(format!(
            "flmon: FLMonitors {} also select this pod; {:?} injected it",
            conflicts.join(", "),
            monitor.name
        ));
    }
    let role = match pod_value(pod, &monitor.role).map(str::trim) {
        Some(v) if v == monitor.server_value => Role::Server,
        Some(v) if v.eq_ignore_ascii_case(&monitor.server_value) => {
            warnings.push(format!(
                "flmon: {}={v:?} differs from the server value {:?} only in case; treated as a client",
                monitor.role.key, monitor.server_value
            ));
            Role::Client
        }
        _ => Role::Client,
    };
    let gpu_mode = gpu_mode(spec, monitor);
    let claims = app_claims(spec);
    if gpu_mode == GpuMode::Claim && claims.is_empty() {
        warnings.push(
            "flmon: gpu mode Claim but no container of this pod uses a resource claim; GPU metrics will be absent"
                .to_owned(),
        );
    }
    let mut agent = agent_container(pod, spec, monitor, defaults, role, gpu_mode, &mut warnings);
    if gpu_mode == GpuMode::Claim && !claims.is_empty() {
        let resources = agent.resources.get_or_insert_with(Default::default);
        resources.claims = Some(claims);
    }

    let mut patch = PatchBuilder::default();
    patch.set_entries(
        &["metadata", "labels"],
        pod.metadata.labels.is_some(),
        [(names::LABEL_MONITOR, monitor.name.clone())],
    );
    patch.set_entries(
        &["metadata", "annotations"],
        pod.metadata.annotations.is_some(),
        [
            (names::ANNOTATION_INJECTED, defaults.version.clone()),
            (names::ANNOTATION_MONITOR, monitor.name.clone()),
            (names::ANNOTATION_CONFIG_HASH, monitor.config_hash(defaults)),
        ],
    );
    // Right after the pod's own native sidecars (a mesh's ordering stays intact), else first.
    let position = spec
        .init_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .rposition(|c| c.restart_policy.as_deref() == Some("Always"))
        .map_or(0, |i| i + 1);
    patch.insert(
        &["spec", "initContainers"],
        spec.init_containers.is_some(),
        position,
        to_value(&agent),
    );
    patch.append(
        &["spec", "volumes"],
        spec.volumes.is_some(),
        to_value(&Volume {
            name: AGENT_TMP_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("16Mi".to_owned())),
                ..Default::default()
            }),
            ..Default::default()
        }),
    );
    let events_url = format!("http://127.0.0.1:{}/v1/events", names::INGEST_PORT);
    let apps = app_containers(pod, spec);
    for (index, container) in spec.containers.iter().enumerate() {
        let is_app = apps.iter().any(|a| a.name == container.name);
        let has_url = container.env.iter().flatten().any(|e| e.name == env::EVENTS_URL);
        if is_app && !has_url {
            let index = index.to_string();
            patch.append(
                &["spec", "containers", &index, "env"],
                container.env.is_some(),
                to_value(&plain_env(env::EVENTS_URL, &events_url)),
            );
        }
    }
    if monitor.agent.share_process_namespace {
        match spec.share_process_namespace {
            Some(true) => {}
            Some(false) => warnings.push(
                "flmon: spec.shareProcessNamespace is false, so the agent cannot see the app's \
                 processes and host usage metrics will be absent"
                    .to_owned(),
            ),
            None => patch.add(&["spec", "shareProcessNamespace"], Value::Bool(true)),
        }
    }
    Injection {
        monitor: monitor.name.clone(),
        conflicts,
        role,
        gpu_mode,
        patch: Patch(patch.ops),
        warnings,
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    // k8s-openapi types serialise to JSON infallibly (string keys, no non-finite floats).
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `Off` unless the `gpu` collector is on; the monitor's choice, else `NodeVisible` for pods
/// that request NVIDIA GPUs (whole or MIG slices), else `Off`.
fn gpu_mode(spec: &PodSpec, monitor: &InjectionSettings) -> GpuMode {
    if !monitor.agent.collectors.iter().any(|c| c == "gpu") {
        return GpuMode::Off;
    }
    monitor.agent.gpu_mode.unwrap_or_else(|| {
        if requests_nvidia_gpu(spec) {
            GpuMode::NodeVisible
        } else {
            GpuMode::Off
        }
    })
}

/// Whether any container requests `nvidia.com/gpu` or a MIG slice (`nvidia.com/mig-*`).
pub fn requests_nvidia_gpu(spec: &PodSpec) -> bool {
    all_containers(spec).any(|c| {
        let resources = c.resources.as_ref();
        let maps = resources
            .and_then(|r| r.limits.as_ref())
            .into_iter()
            .chain(resources.and_then(|r| r.requests.as_ref()));
        maps.flat_map(|m| m.iter()).any(|(name, quantity)| {
            (name == "nvidia.com/gpu" || name.starts_with("nvidia.com/mig-"))
                && quantity_value(&quantity.0).is_some_and(|v| v > 0.0)
        })
    })
}

/// Resource claims the app containers use, shared with the agent in `Claim` mode.
fn app_claims(spec: &PodSpec) -> Vec<ResourceClaim> {
    let mut seen = BTreeSet::new();
    spec.containers
        .iter()
        .filter_map(|c| c.resources.as_ref()?.claims.as_ref())
        .flatten()
        .filter(|claim| seen.insert((claim.name.clone(), claim.request.clone())))
        .cloned()
        .collect()
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

fn resource_env(name: String, container: &str, resource: &str, divisor: Option<&str>) -> EnvVar {
    EnvVar {
        name,
        value: None,
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some(container.to_owned()),
                resource: resource.to_owned(),
                divisor: divisor.map(|d| Quantity(d.to_owned())),
            }),
            ..Default::default()
        }),
    }
}

fn secret_env(name: &str, selector: &SecretKeySelector) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(selector.clone()),
            ..Default::default()
        }),
    }
}

/// `FLMON_LIMIT_CPU_` + the container name upper-cased with `-` → `_` (container names are DNS
/// labels, so the mapping is one-to-one).
pub fn limit_env_suffix(container: &str) -> String {
    container.to_ascii_uppercase().replace('-', "_")
}

fn agent_env(
    pod: &Pod,
    spec: &PodSpec,
    monitor: &InjectionSettings,
    role: Role,
    gpu_mode: GpuMode,
) -> Vec<EnvVar> {
    let mut vars = vec![
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
        field_env(env::POD_UID, "metadata.uid"),
        field_env(env::NODE_NAME, "spec.nodeName"),
        plain_env(env::MONITOR, &monitor.name),
        plain_env(env::ROLE, role.as_str()),
    ];
    if role == Role::Client {
        // At admission a Job's pod has only generateName: the Downward API fills the real name.
        vars.push(match pod_value(pod, &monitor.client_id) {
            Some(id) if !id.trim().is_empty() => plain_env(env::CLIENT_ID, id.trim()),
            _ => field_env(env::CLIENT_ID, "metadata.name"),
        });
    }
    vars.extend([
        plain_env(env::METRICS_ADDR, &format!("0.0.0.0:{}", names::METRICS_PORT)),
        plain_env(env::INGEST_ADDR, &format!("127.0.0.1:{}", names::INGEST_PORT)),
        plain_env(env::SAMPLE_INTERVAL, &monitor.agent.sample_interval),
        plain_env(env::HISTORY_ROUNDS, &monitor.agent.history_length.to_string()),
        plain_env(env::COLLECTORS, &monitor.agent.collectors.join(",")),
        plain_env(env::GPU_MODE, gpu_mode.as_str()),
    ]);
    if gpu_mode == GpuMode::NodeVisible {
        // With the NVIDIA container runtime this exposes the node's GPUs to the agent for NVML
        // queries without requesting one: scheduling and the device plugin's accounting are
        // untouched. `utility` is the driver capability NVML needs, and nothing more.
        vars.push(plain_env("NVIDIA_VISIBLE_DEVICES", "all"));
        vars.push(plain_env("NVIDIA_DRIVER_CAPABILITIES", "utility"));
    }
    if role == Role::Server
        && let Some(kafka) = &monitor.kafka
    {
        vars.extend(kafka_env(kafka));
    }
    // Limits of the app containers only; a container without a limit gets the node's
    // allocatable from the Downward API, which the agent caps at the node's capacity.
    for container in app_containers(pod, spec) {
        let suffix = limit_env_suffix(&container.name);
        // CPU in millicores: the default divisor of 1 would round 500m up to 1.
        vars.push(resource_env(
            format!("{}{suffix}", env::LIMIT_CPU_PREFIX),
            &container.name,
            "limits.cpu",
            Some("1m"),
        ));
        vars.push(resource_env(
            format!("{}{suffix}", env::LIMIT_MEMORY_PREFIX),
            &container.name,
            "limits.memory",
            None,
        ));
    }
    vars
}

fn kafka_env(kafka: &KafkaSettings) -> Vec<EnvVar> {
    let mut vars = vec![plain_env(env::KAFKA_BOOTSTRAP, &kafka.bootstrap_servers)];
    if !kafka.topics.is_empty() {
        vars.push(plain_env(env::KAFKA_TOPICS, &kafka.topics.join(",")));
    }
    if !kafka.consumer_groups.is_empty() {
        vars.push(plain_env(env::KAFKA_GROUPS, &kafka.consumer_groups.join(",")));
    }
    if let Some(topic) = &kafka.events_topic {
        vars.push(plain_env(env::KAFKA_EVENTS_TOPIC, topic));
    }
    if let Some(protocol) = &kafka.security_protocol {
        vars.push(plain_env(env::KAFKA_SECURITY_PROTOCOL, protocol));
    }
    if let Some(sasl) = &kafka.sasl {
        vars.push(plain_env(env::KAFKA_SASL_MECHANISM, &sasl.mechanism));
        vars.push(secret_env(env::KAFKA_SASL_USERNAME, &sasl.username));
        vars.push(secret_env(env::KAFKA_SASL_PASSWORD, &sasl.password));
    }
    vars
}

fn agent_container(
    pod: &Pod,
    spec: &PodSpec,
    monitor: &InjectionSettings,
    defaults: &AgentDefaults,
    role: Role,
    gpu_mode: GpuMode,
    warnings: &mut Vec<String>,
) -> Container {
    // A native sidecar counts towards the pod's QoS class: requests below limits would demote
    // a Guaranteed training pod (pinned CPUs, last to be evicted) to Burstable.
    let guaranteed = is_guaranteed(spec);
    let mut resources = match (&monitor.agent.resources, guaranteed) {
        (Some(resources), _) => resources.clone(),
        (None, true) => guaranteed_agent_resources(),
        (None, false) => default_agent_resources(),
    };
    // The agent requests no GPU whatever the mode: it only observes.
    strip_gpu_resources(&mut resources);
    if guaranteed && monitor.agent.resources.is_some() {
        match resources.limits.clone() {
            Some(limits) if limits.contains_key("cpu") && limits.contains_key("memory") => {
                resources.requests = Some(limits);
            }
            _ => warnings.push(format!(
                "flmon: the pod is Guaranteed but FLMonitor {:?} sets no cpu and memory limits \
                 for the agent (spec.agent.resources.limits); the pod becomes Burstable",
                monitor.name
            )),
        }
    }
    Container {
        name: names::AGENT_CONTAINER.to_owned(),
        image: Some(monitor.image(defaults).to_owned()),
        restart_policy: Some("Always".to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some(names::METRICS_PORT_NAME.to_owned()),
            container_port: i32::from(names::METRICS_PORT),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        env: Some(agent_env(pod, spec, monitor, role, gpu_mode)),
        resources: Some(resources),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".to_owned()),
                port: IntOrString::String(names::METRICS_PORT_NAME.to_owned()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(1),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(AGENT_UID),
            run_as_group: Some(AGENT_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: AGENT_TMP_VOLUME.to_owned(),
            mount_path: AGENT_TMP_MOUNT_PATH.to_owned(),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}

fn strip_gpu_resources(resources: &mut ResourceRequirements) {
    for map in [&mut resources.limits, &mut resources.requests]
        .into_iter()
        .flatten()
    {
        map.retain(|name, _| !name.starts_with("nvidia.com/"));
    }
}

/// The kubelet's rule: every container (init ones included) sets cpu and memory limits, and
/// its requests, where set, equal them.
fn is_guaranteed(spec: &PodSpec) -> bool {
    all_containers(spec).all(|c| {
        let Some(resources) = c.resources.as_ref() else {
            return false;
        };
        let Some(limits) = resources.limits.as_ref() else {
            return false;
        };
        ["cpu", "memory"].iter().all(|name| {
            let Some(limit) = limits.get(*name) else {
                return false;
            };
            match resources.requests.as_ref().and_then(|r| r.get(*name)) {
                None => true,
                Some(request) => quantity_value(&request.0) == quantity_value(&limit.0),
            }
        })
    })
}

/// A Kubernetes quantity (`500m`, `4Gi`, `1e3`, `2`) as a number; `None` when malformed.
pub fn quantity_value(text: &str) -> Option<f64> {
    let text = text.trim();
    // Binary suffixes before the decimal ones they end with ("Mi" before "M"... "i" is unique).
    let suffixes: [(&str, f64); 15] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(suffix, factor)| Some((text.strip_suffix(suffix)?, *factor)))
        .unwrap_or((text, 1.0));
    number
        .parse::<f64>()
        .ok()
        .map(|n| n * factor)
        .filter(|v| v.is_finite())
}

/// Collects RFC 6902 operations, choosing `add` of a whole map or array where the pod lacks it
/// and `add` of a member or element where it has it (an `add` of a member replaces it, so a
/// value that is already there is overwritten, never duplicated).
#[derive(Default)]
struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    fn add(&mut self, tokens: &[&str], value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(tokens.iter().copied()),
            value,
        }));
    }

    fn set_entries<const N: usize>(&mut self, map: &[&str], exists: bool, entries: [(&str, String); N]) {
        if exists {
            for (key, value) in entries {
                let mut tokens = map.to_vec();
                tokens.push(key);
                self.add(&tokens, Value::String(value));
            }
        } else {
            let object: serde_json::Map<String, Value> = entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect();
            self.add(map, Value::Object(object));
        }
    }

    fn append(&mut self, array: &[&str], exists: bool, value: Value) {
        if exists {
            let mut tokens = array.to_vec();
            tokens.push("-");
            self.add(&tokens, value);
        } else {
            self.add(array, Value::Array(vec![value]));
        }
    }

    fn insert(&mut self, array: &[&str], exists: bool, index: usize, value: Value) {
        if exists {
            let index = index.to_string();
            let mut tokens = array.to_vec();
            tokens.push(&index);
            self.add(&tokens, value);
        } else {
            self.add(array, Value::Array(vec![value]));
        }
    }
}
