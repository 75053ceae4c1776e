//! Command line of `flmon-operator`. Every flag has an environment-variable fallback (the chart
//! sets those), so the same binary runs from a Deployment, a shell or a test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// flmon's Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "flmon-operator", version, about)]
pub struct Cli {
    /// Log filter: a level (`info`) or a tracing filter (`flmon_operator=debug,kube=info`).
    #[arg(long, env = "FLMON_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "FLMON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line (program name first), as `main` does with the process's; for
    /// callers that do not depend on clap themselves.
    ///
    /// # Errors
    /// Clap's error, saying which flag is wrong and why.
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Cli as Parser>::try_parse_from(args)
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: controllers (on the leader), admission webhook, metrics and health.
    Run(Box<RunArgs>),
    /// Print the CRDs as YAML (all of them to stdout, or one file each into a folder).
    Crd(CrdArgs),
    /// Render the plots, the report and the dashboard page from saved `/v1/history` documents.
    Render(RenderArgs),
}

/// `flmon-operator render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Saved `/v1/history` documents (repeat the flag or separate with commas); several pods'
    /// documents are merged as the operator merges them.
    #[arg(long = "history", env = "FLMON_RENDER_HISTORY", required = true, num_args = 1.., value_delimiter = ',')]
    pub histories: Vec<PathBuf>,
    /// Folder to write the figures (PNG and SVG), `report.md` and `index.html` into.
    #[arg(long, env = "FLMON_RENDER_OUT")]
    pub out: PathBuf,
    /// An FLMonitor manifest (YAML or JSON) whose `spec.analysis` and name to use; without it the
    /// analysis runs with the default settings and no target.
    #[arg(long, env = "FLMON_RENDER_MONITOR")]
    pub monitor: Option<PathBuf>,
    /// Width of each figure in pixels.
    #[arg(long, env = "FLMON_RENDER_WIDTH", default_value_t = 1500)]
    pub width: u32,
    /// Height of each figure in pixels.
    #[arg(long, env = "FLMON_RENDER_HEIGHT", default_value_t = 1000)]
    pub height: u32,
}

/// `flmon-operator crd`.
#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Write `<group>_<plural>.yaml` per CRD into this folder instead of printing them.
    #[arg(long, env = "FLMON_CRD_OUT_DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `flmon-operator run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The operator's namespace: AlertRules here are the cluster-wide defaults; the Lease and
    /// the webhook's Secret live here.
    #[arg(long, env = "FLMON_OPERATOR_NAMESPACE", default_value = "flmon-system")]
    pub namespace: String,
    /// This replica's name (its pod name), its identity in leader election.
    #[arg(long, env = "FLMON_OPERATOR_POD_NAME", default_value_t = default_identity())]
    pub pod_name: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "FLMON_METRICS_ADDR", default_value = "0.0.0.0:8081")]
    pub metrics_addr: SocketAddr,
    /// Address of the dashboard server.
    #[arg(long, env = "FLMON_DASHBOARD_ADDR", default_value = "0.0.0.0:8080")]
    pub dashboard_addr: SocketAddr,
    /// Leader election: only the holder of the Lease reconciles, polls and evaluates.
    #[arg(long, env = "FLMON_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "FLMON_LEASE_NAME", default_value = "flmon-operator")]
    pub lease_name: String,
    /// How long the Lease is valid without renewal (a follower waits this long after the leader stops renewing).
    #[arg(long, env = "FLMON_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long a leader keeps leading while renewals fail.
    #[arg(long, env = "FLMON_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub lease_renew_deadline: Duration,
    /// How often the Lease is acquired or renewed.
    #[arg(long, env = "FLMON_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: Duration,
    /// Namespaces other than a monitor's own that may receive its dashboard ConfigMap (comma-separated).
    #[arg(long, env = "FLMON_DASHBOARD_NAMESPACES", value_delimiter = ',', num_args = 0..)]
    pub dashboard_namespaces: Vec<String>,
    /// URL prefixes AlertRules may send notifications to (comma-separated); none when empty.
    #[arg(long, env = "FLMON_NOTIFY_URL_PREFIXES", value_delimiter = ',', num_args = 0..)]
    pub notify_url_prefixes: Vec<String>,
    /// Reconciles running at once per controller.
    #[arg(long, env = "FLMON_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// How often the operator re-checks whether Prometheus Operator's CRDs are installed.
    #[arg(long, env = "FLMON_PROMETHEUS_OPERATOR_RECHECK", default_value = "30s", value_parser = parse_duration)]
    pub prometheus_operator_recheck: Duration,
    /// The agent image injected by default.
    #[arg(
        long,
        env = "FLMON_AGENT_IMAGE",
        default_value = "ghcr.io/flmon/flmon-agent:latest"
    )]
    pub agent_image: String,
    /// How often the leader polls every monitor's agents (history, metrics) and updates status.
    #[arg(long, env = "FLMON_POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// The agents' metrics port, where the operator reads `/v1/history` and `/metrics`.
    #[arg(long, env = "FLMON_AGENT_PORT", default_value_t = flmon_crds::names::METRICS_PORT)]
    pub agent_port: u16,
    /// Timeout of each request to an agent.
    #[arg(long, env = "FLMON_AGENT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub agent_timeout: Duration,
    /// Also write each monitor's plots, report and page into `<dir>/<namespace>/<name>/` when they change.
    #[arg(long, env = "FLMON_REPORT_DIR")]
    pub report_dir: Option<PathBuf>,
    /// Labels added to every alert sent to Alertmanager (`name=value`, comma-separated), e.g. the
    /// external labels of the Prometheus evaluating the same rules, so Alertmanager deduplicates both.
    #[arg(long, env = "FLMON_ALERTMANAGER_EXTERNAL_LABELS", value_delimiter = ',', num_args = 0.., value_parser = parse_label)]
    pub alertmanager_external_labels: Vec<(String, String)>,
    /// Admission webhook settings.
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// Admission webhook flags.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Serve the admission webhook and keep its configuration (off: only the controllers run).
    #[arg(long = "webhook-enabled", env = "FLMON_WEBHOOK_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Register the webhook by this base URL (e.g. `https://127.0.0.1:9443`) instead of by its
    /// Service: for an operator running outside the cluster. Its host goes into the certificate.
    #[arg(long = "webhook-url", env = "FLMON_WEBHOOK_URL")]
    pub url: Option<String>,
    /// Address of the HTTPS admission webhook.
    #[arg(
        long = "webhook-addr",
        env = "FLMON_WEBHOOK_ADDR",
        default_value = "0.0.0.0:9443"
    )]
    pub addr: SocketAddr,
    /// Name of the MutatingWebhookConfiguration the operator keeps up to date.
    #[arg(
        long = "webhook-config-name",
        env = "FLMON_WEBHOOK_CONFIG_NAME",
        default_value = "flmon"
    )]
    pub config_name: String,
    /// Name of the Service in front of the webhook (the serving certificate's DNS name).
    #[arg(
        long = "webhook-service",
        env = "FLMON_WEBHOOK_SERVICE",
        default_value = "flmon-operator"
    )]
    pub service: String,
    /// Secret holding the webhook's CA and serving certificate.
    #[arg(
        long = "webhook-tls-secret",
        env = "FLMON_WEBHOOK_TLS_SECRET",
        default_value = "flmon-webhook-tls"
    )]
    pub tls_secret: String,
    /// Who manages the webhook's certificate.
    #[arg(long = "webhook-tls-mode", env = "FLMON_WEBHOOK_TLS_MODE", value_enum, default_value_t = TlsMode::SelfManaged)]
    pub tls_mode: TlsMode,
    /// Folder of `tls.crt`/`tls.key`/`ca.crt` when cert-manager manages the certificate.
    #[arg(
        long = "webhook-tls-dir",
        env = "FLMON_WEBHOOK_TLS_DIR",
        default_value = "/var/run/flmon/tls"
    )]
    pub tls_dir: PathBuf,
}

/// Who manages the webhook's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// The operator creates and rotates it, kept in a Secret.
    SelfManaged,
    /// cert-manager issues it into the Secret, mounted at `--webhook-tls-dir`.
    CertManager,
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("flmon-operator-{}", std::process::id()))
}

/// Parses a Prometheus-style duration (`15s`, `1m30s`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<flmon_crds::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

/// Parses a `name=value` label; the name must be a Prometheus label name.
fn parse_label(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid label {text:?}: expected name=value"))?;
    let name = name.trim();
    let valid = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid {
        return Err(format!(
            "invalid label name {name:?}: expected letters, digits and underscores, not starting with a digit"
        ));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_its_settings_from_flags() {
        let cli = Cli::try_parse_from([
            "flmon-operator",
            "--log-format",
            "json",
            "run",
            "--namespace",
            "ops",
            "--leader-election",
            "false",
            "--lease-duration",
            "1m",
            "--dashboard-namespaces",
            "monitoring,grafana",
        ])
        .expect("parses");
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.namespace, "ops");
        assert!(!args.leader_election);
        assert_eq!(args.lease_duration, Duration::from_secs(60));
        assert_eq!(args.dashboard_namespaces, ["monitoring", "grafana"]);
        assert!(args.notify_url_prefixes.is_empty());
    }

    #[test]
    fn the_pipeline_flags_parse_with_their_defaults() {
        let cli = Cli::try_parse_from([
            "flmon-operator",
            "run",
            "--alertmanager-external-labels",
            "cluster=prod,region=eu",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.poll_interval, Duration::from_secs(10));
        assert_eq!(args.agent_port, 9477);
        assert_eq!(args.report_dir, None);
        assert_eq!(
            args.alertmanager_external_labels,
            [
                ("cluster".to_owned(), "prod".to_owned()),
                ("region".to_owned(), "eu".to_owned())
            ]
        );
    }

    #[test]
    fn a_malformed_external_label_is_rejected_naming_it() {
        let error = Cli::try_parse_from(["flmon-operator", "run", "--alertmanager-external-labels", "1x=y"])
            .expect_err("bad name");
        assert!(error.to_string().contains("invalid label name \"1x\""), "{error}");
    }

    #[test]
    fn a_malformed_duration_is_rejected_with_what_was_expected() {
        let error =
            Cli::try_parse_from(["flmon-operator", "run", "--lease-duration", "15"]).expect_err("no unit");
        assert!(error.to_string().contains("expected e.g. 30s"), "{error}");
    }

    #[test]
    fn every_flag_has_an_environment_fallback() {
        fn check(command: &clap::Command) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) || arg.is_positional() {
                    continue;
                }
                assert!(
                    arg.get_env().is_some(),
                    "--{id} of `{}` has no env fallback",
                    command.get_name()
                );
            }
            for sub in command.get_subcommands() {
                check(sub);
            }
        }
        check(&Cli::command());
    }
}
