//! The agent's configuration: flags, each with the environment variable the webhook sets as
//! fallback (names shared through `flmon_crds::names::env`). Without a pod uid the agent runs
//! standalone (a laptop or VM): host usage then comes from its own cgroup and GPUs are all its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use flmon_crds::names::env;

/// The collectors, in the order of the registry table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum CollectorName {
    /// CPU, memory, disk and network of the app.
    Host,
    /// NVML per-GPU metrics.
    Gpu,
    /// Broker-side topic rates, latency and consumer-group lag (server role).
    Kafka,
    /// Statistics JSON posted by the app's librdkafka client.
    Librdkafka,
    /// Training events posted by the app (and read from the events topic).
    Events,
}

impl CollectorName {
    /// The name used in flags, env and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectorName::Host => "host",
            CollectorName::Gpu => "gpu",
            CollectorName::Kafka => "kafka",
            CollectorName::Librdkafka => "librdkafka",
            CollectorName::Events => "events",
        }
    }
}

/// The pod's role in the FL job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The FL server (aggregator); only its agent watches Kafka.
    Server,
    /// An FL client.
    Client,
}

impl Role {
    /// `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// How the agent finds the GPUs of its pod (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum GpuMode {
    /// No GPU metrics.
    Off,
    /// The node's GPUs are visible; report those running this pod's compute processes.
    NodeVisible,
    /// The pod's DRA claim is shared with the agent: every visible GPU is the pod's.
    Claim,
    /// Standalone: every visible GPU is reported.
    All,
}

impl GpuMode {
    /// The spelling used in env and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuMode::Off => "Off",
            GpuMode::NodeVisible => "NodeVisible",
            GpuMode::Claim => "Claim",
            GpuMode::All => "All",
        }
    }
}

/// Whose usage the host collector measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostScope {
    /// The app's processes, seen through the pod's shared process namespace; limits from the
    /// Downward-API env the webhook injects.
    Pod,
    /// The agent's own cgroup (standalone: the container or slice it runs in; the whole machine
    /// at the root cgroup).
    Cgroup,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line flags and environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "flmon-agent",
    version,
    about = "flmon's sidecar agent: FL training, host, GPU and Kafka metrics"
)]
pub struct Config {
    /// Address of the metrics server (`/metrics`, `/v1/history`, `/healthz`, `/readyz`).
    #[arg(long, env = env::METRICS_ADDR, default_value = "0.0.0.0:9477", value_parser = parse_addr)]
    pub metrics_addr: SocketAddr,
    /// Address of the event-ingest server; must be a loopback address.
    #[arg(long, env = env::INGEST_ADDR, default_value = "127.0.0.1:9478", value_parser = parse_loopback)]
    pub ingest_addr: SocketAddr,
    /// Pod name (Downward API).
    #[arg(long, env = env::POD_NAME)]
    pub pod_name: Option<String>,
    /// Pod namespace (Downward API).
    #[arg(long, env = env::POD_NAMESPACE)]
    pub pod_namespace: Option<String>,
    /// Pod uid (Downward API); absent means standalone.
    #[arg(long, env = env::POD_UID)]
    pub pod_uid: Option<String>,
    /// Node name (Downward API).
    #[arg(long, env = env::NODE_NAME)]
    pub node_name: Option<String>,
    /// The FLMonitor that injected the agent.
    #[arg(long, env = env::MONITOR)]
    pub monitor: Option<String>,
    /// The pod's role.
    #[arg(long, env = env::ROLE, value_enum, default_value = "client", ignore_case = true)]
    pub role: Role,
    /// This pod's FL client id, filled into client updates that lack one.
    #[arg(long, env = env::CLIENT_ID)]
    pub client_id: Option<String>,
    /// Sampling interval (Prometheus duration: `5s`, `1m`, `500ms`).
    #[arg(long, env = env::SAMPLE_INTERVAL, default_value = "5s", value_parser = parse_sample_interval)]
    pub sample_interval: Duration,
    /// Rounds kept in the history (and remembered for deduplication, per run).
    #[arg(long, env = env::HISTORY_ROUNDS, default_value_t = 1000, value_parser = positive)]
    pub history_rounds: usize,
    /// Client updates kept in the history.
    #[arg(long, default_value_t = 10_000, value_parser = positive)]
    pub history_clients: usize,
    /// System and Kafka samples kept in the history (720 = one hour at 5 s).
    #[arg(long, default_value_t = 720, value_parser = positive)]
    pub history_samples: usize,
    /// Collectors to run, comma-separated.
    #[arg(long, env = env::COLLECTORS, value_enum, value_delimiter = ',', ignore_case = true,
          default_value = "host,gpu,kafka,librdkafka,events")]
    pub collectors: Vec<CollectorName>,
    /// GPU mode (default: `All` standalone, `Off` in a pod without the setting).
    #[arg(long, env = env::GPU_MODE, value_enum, ignore_case = true)]
    pub gpu_mode: Option<GpuMode>,
    /// Path of the NVML library (default: the loader's search for `libnvidia-ml.so`).
    #[arg(long)]
    pub nvml_library: Option<PathBuf>,
    /// Kafka bootstrap servers (the Kafka collector runs only in the server role).
    #[arg(long, env = env::KAFKA_BOOTSTRAP)]
    pub kafka_bootstrap_servers: Option<String>,
    /// Topics to watch, comma-separated.
    #[arg(long, env = env::KAFKA_TOPICS, value_delimiter = ',')]
    pub kafka_topics: Vec<String>,
    /// Consumer groups whose lag to watch, comma-separated.
    #[arg(long, env = env::KAFKA_GROUPS, value_delimiter = ',')]
    pub kafka_consumer_groups: Vec<String>,
    /// Topic carrying training events, read by manual assignment from its end.
    #[arg(long, env = env::KAFKA_EVENTS_TOPIC)]
    pub kafka_events_topic: Option<String>,
    /// Kafka security protocol.
    #[arg(long, env = env::KAFKA_SECURITY_PROTOCOL)]
    pub kafka_security_protocol: Option<String>,
    /// SASL mechanism.
    #[arg(long, env = env::KAFKA_SASL_MECHANISM)]
    pub kafka_sasl_mechanism: Option<String>,
    /// SASL username (from a Secret).
    #[arg(long, env = env::KAFKA_SASL_USERNAME, hide_env_values = true)]
    pub kafka_sasl_username: Option<String>,
    /// SASL password (from a Secret; never logged).
    #[arg(long, env = env::KAFKA_SASL_PASSWORD, hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
    /// Whose usage the host collector measures (default: `pod` with a pod uid, else `cgroup`).
    #[arg(long, value_enum)]
    pub host_scope: Option<HostScope>,
    /// Root of the proc filesystem.
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Root of the cgroup filesystem.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Filesystems whose size and free space to report, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "/")]
    pub filesystems: Vec<PathBuf>,
    /// Distinct clients exported as per-client series.
    #[arg(long, default_value_t = 1000, value_parser = positive)]
    pub max_clients: usize,
    /// Partitions exported as per-partition Kafka series, over all topics and groups.
    #[arg(long, default_value_t = 1000, value_parser = positive)]
    pub max_partitions: usize,
    /// Largest event or statistics body accepted, in bytes (larger ones get 413); at least 1024.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = body_limit)]
    pub max_body_bytes: usize,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A configuration error, naming the setting, its value and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {setting} {value:?}: expected {expected}")]
pub struct ConfigError {
    /// Flag or variable.
    pub setting: String,
    /// The value given.
    pub value: String,
    /// What would be accepted.
    pub expected: String,
}

impl Config {
    /// Parses flags and environment.
    ///
    /// # Errors
    /// clap's error for unknown flags or bad values.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::try_parse_from(args)
    }

    /// True without a pod uid (not in Kubernetes).
    pub fn standalone(&self) -> bool {
        self.pod_uid.is_none()
    }

    /// The effective GPU mode.
    pub fn effective_gpu_mode(&self) -> GpuMode {
        self.gpu_mode.unwrap_or(if self.standalone() {
            GpuMode::All
        } else {
            GpuMode::Off
        })
    }

    /// The effective host scope.
    pub fn effective_host_scope(&self) -> HostScope {
        self.host_scope.unwrap_or(if self.standalone() {
            HostScope::Cgroup
        } else {
            HostScope::Pod
        })
    }

    /// Whether a collector is switched on.
    pub fn enabled(&self, c: CollectorName) -> bool {
        self.collectors.contains(&c)
    }

    /// The run of events without `run_id`.
    pub fn pod_uid_or_local(&self) -> String {
        self.pod_uid.clone().unwrap_or_else(|| "standalone".into())
    }
}

/// An IP address and port; host names are not resolved (the agent binds before DNS matters).
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("{e}: expected an IP address and a port, such as 0.0.0.0:9477 or [::]:9477 (host names are not resolved)"))
}

/// The ingest listener's address: only loopback, so only the pod's own app may post events.
fn parse_loopback(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .trim()
        .parse()
        .map_err(|e| format!("{e}: expected an address such as 127.0.0.1:9478"))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err("expected a loopback address (127.0.0.1 or [::1]): only the pod's own app may post events".into())
    }
}

/// A sampling interval: a duration of at least the shared minimum.
fn parse_sample_interval(text: &str) -> Result<Duration, String> {
    let min = flmon_crds::flmonitor::MIN_SAMPLE_INTERVAL_MS;
    let interval = parse_duration(text)?;
    if interval < Duration::from_millis(min) {
        return Err(format!("too short: expected at least {min}ms"));
    }
    Ok(interval)
}

/// A count that must be at least 1 (a history or cap of 0 would keep nothing).
fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("expected a positive number".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}: expected a positive number")),
    }
}

/// The body limit: at least 1 KiB, so one event always fits.
fn body_limit(text: &str) -> Result<usize, String> {
    let n = positive(text)?;
    if n < 1024 {
        return Err("expected at least 1024 bytes, so that one event fits".into());
    }
    Ok(n)
}

/// Parses a Prometheus duration: one or more `<number><unit>` with units `ms`, `s`, `m`, `h`, `d`,
/// `w`, `y`, largest first (`1h30m`, `5s`, `250ms`), or a bare `0`.
///
/// # Errors
/// A message naming the value and the accepted syntax.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: expected e.g. 5s, 1m30s, 250ms");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    // Prometheus writes a zero duration as a bare `0`.
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ms: u128 = 0;
    let mut last_unit = u128::MAX;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(bad()),
        };
        if unit_ms >= last_unit {
            return Err(bad());
        }
        last_unit = unit_ms;
        total_ms = total_ms
            .checked_add(n.checked_mul(unit_ms).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    let ms = u64::try_from(total_ms).map_err(|_| bad())?;
    Ok(Duration::from_millis(ms))
}

/// Limits of the app containers from the Downward-API env (`FLMON_LIMIT_CPU_<C>` in millicores,
/// `FLMON_LIMIT_MEMORY_<C>` in bytes), keyed by the container suffix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerLimits {
    /// CPU limit in cores per container.
    pub cpu_cores: BTreeMap<String, f64>,
    /// Memory limit in bytes per container.
    pub memory_bytes: BTreeMap<String, u64>,
}

impl ContainerLimits {
    /// Reads the limit variables out of `vars`; unparsable values are skipped and reported.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> (Self, Vec<ConfigError>) {
        let mut limits = ContainerLimits::default();
        let mut errors = Vec::new();
        for (key, value) in vars {
            if let Some(container) = key.strip_prefix(env::LIMIT_CPU_PREFIX) {
                match parse_cpu_millis(&value) {
                    Some(m) => {
                        limits.cpu_cores.insert(container.to_owned(), m / 1000.0);
                    }
                    None => errors.push(ConfigError {
                        setting: key.clone(),
                        value,
                        expected: "millicores (resourceFieldRef divisor 1m) or a CPU quantity such as 500m"
                            .into(),
                    }),
                }
            } else if let Some(container) = key.strip_prefix(env::LIMIT_MEMORY_PREFIX) {
                match parse_bytes(&value) {
                    Some(b) => {
                        limits.memory_bytes.insert(container.to_owned(), b);
                    }
                    None => errors.push(ConfigError {
                        setting: key.clone(),
                        value,
                        expected: "bytes (resourceFieldRef divisor 1) or a quantity such as 512Mi".into(),
                    }),
                }
            }
        }
        (limits, errors)
    }

    /// Total CPU limit, when any container has one.
    pub fn total_cpu(&self) -> Option<f64> {
        (!self.cpu_cores.is_empty()).then(|| self.cpu_cores.values().sum())
    }

    /// Total memory limit, when any container has one.
    pub fn total_memory(&self) -> Option<u64> {
        (!self.memory_bytes.is_empty()).then(|| self.memory_bytes.values().sum())
    }
}

/// A plain number is millicores (the webhook's divisor `1m`); `500m`, `1.5` with a suffix or
/// decimal point are read as Kubernetes quantities in cores.
fn parse_cpu_millis(v: &str) -> Option<f64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(n as f64);
    }
    if let Some(m) = v.strip_suffix('m') {
        return m.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0);
    }
    v.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|cores| cores * 1000.0)
}

/// Bytes, or a Kubernetes quantity with a binary or decimal suffix.
pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let suffixes: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0f64.powi(4)),
        ("Pi", 1024.0f64.powi(5)),
        ("Ei", 1024.0f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    for (suffix, factor) in suffixes {
        if let Some(n) = v.strip_suffix(suffix) {
            let n: f64 = n.parse().ok()?;
            let bytes = n * factor;
            return (0.0..1.8e19).contains(&bytes).then_some(bytes as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("30m1h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn downward_api_limits_are_read_per_container() {
        let vars = [
            ("FLMON_LIMIT_CPU_TRAINER", "500"),
            ("FLMON_LIMIT_MEMORY_TRAINER", "536870912"),
            ("FLMON_LIMIT_CPU_SIDECAR", "250m"),
            ("FLMON_LIMIT_MEMORY_SIDECAR", "64Mi"),
            ("FLMON_LIMIT_MEMORY_BAD", "lots"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let (limits, errors) = ContainerLimits::from_vars(vars);
        assert_eq!(limits.total_cpu(), Some(0.75));
        assert_eq!(limits.total_memory(), Some(536_870_912 + 64 * 1024 * 1024));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].setting, "FLMON_LIMIT_MEMORY_BAD");
    }

    #[test]
    fn env_names_are_the_shared_ones_and_modes_parse_as_the_webhook_writes_them() {
        let c = Config::from_args(["flmon-agent", "--gpu-mode", "NodeVisible", "--role", "server"]).unwrap();
        assert_eq!(c.effective_gpu_mode(), GpuMode::NodeVisible);
        assert_eq!(c.role, Role::Server);
        let c = Config::from_args(["flmon-agent", "--collectors", "host,events"]).unwrap();
        assert!(c.enabled(CollectorName::Host) && !c.enabled(CollectorName::Gpu));
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_the_flag_and_the_value_as_given() {
        for (flag, value, expected) in [
            ("--ingest-addr", "0.0.0.0:9478", "loopback"),
            ("--sample-interval", "0s", "at least 100ms"),
            ("--sample-interval", "0", "at least 100ms"),
            ("--metrics-addr", "localhost:9477", "host names are not resolved"),
            ("--sample-interval", "50ms", "at least 100ms"),
            ("--history-rounds", "0", "positive"),
            ("--history-samples", "0", "positive"),
            ("--max-clients", "0", "positive"),
            ("--max-body-bytes", "0", "positive"),
            ("--max-body-bytes", "100", "at least 1024"),
        ] {
            let e = Config::from_args(["flmon-agent", flag, value])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(flag) && e.contains(&format!("'{value}'")) && e.contains(expected),
                "{e}"
            );
        }
        let c = Config::from_args([
            "flmon-agent",
            "--sample-interval",
            "100ms",
            "--max-body-bytes",
            "1024",
        ])
        .unwrap();
        assert_eq!(c.sample_interval, Duration::from_millis(100));
    }
}
