//! The `flmon-agent` binary: parse flags and environment, set up logging, run until SIGTERM.

use clap::Parser as _;
use flmon_agent::Config;
use flmon_agent::config::LogFormat;
use tracing_subscriber::EnvFilter;

// Two workers: the agent is a small sidecar, and the default (one per node CPU) would start dozens.
#[tokio::main(worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .init();
        }
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }
    flmon_agent::run(config).await
}
