//! The `flmon-agent` binary: parse flags and environment, set up logging, run until SIGTERM.

use clap::Parser as _;
use flmon_agent::Config;
use flmon_agent::config::LogFormat;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

// One worker: the agent is a small sidecar whose collectors sample on threads of their own; each
// further worker would keep a malloc arena holding its share of request buffers.
#[tokio::main(worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) => {
            let source = env_source(&error);
            let _ = error.print();
            if let Some(var) = source {
                eprintln!("(the value came from the environment variable {var})");
            }
            return std::process::ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let (filter, bad_filter) = log_filter(std::env::var("RUST_LOG").ok());
    match config.log_format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let layer = tracing_subscriber::fmt::layer().with_ansi(ansi);
            tracing_subscriber::registry()
                .with(layer.with_filter(filter))
                .init();
        }
        LogFormat::Json => {
            let layer = tracing_subscriber::fmt::layer().json();
            tracing_subscriber::registry()
                .with(layer.with_filter(filter))
                .init();
        }
    }
    if let Some((value, error)) = bad_filter {
        tracing::warn!(RUST_LOG = %value, %error, "ignoring RUST_LOG: expected a level or target=level pairs separated by commas; logging at info");
    }
    // Reported as a log line (JSON under --log-format json), without a backtrace.
    match flmon_agent::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "flmon-agent stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The environment variable behind a bad value, when the flag itself was not given: in a pod
/// every setting arrives as env, and clap's message names only the flag.
fn env_source(error: &clap::Error) -> Option<String> {
    use clap::CommandFactory as _;
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split_whitespace().next()?;
    let given_as_flag = std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    let command = Config::command();
    let var = command
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|l| flag.strip_prefix("--") == Some(l)))?
        .get_env()?;
    (!given_as_flag && std::env::var_os(var).is_some()).then(|| var.to_string_lossy().into_owned())
}

/// The log filter from `RUST_LOG` (`info`, `warn,flmon_agent=debug`, …): levels by target, without
/// the span and field matching of `EnvFilter`, whose regex engine is about 190 KB of code the
/// agent would keep resident. Info when unset; a value that does not parse is reported once
/// logging is up.
fn log_filter(value: Option<String>) -> (Targets, Option<(String, String)>) {
    let default = || Targets::new().with_default(LevelFilter::INFO);
    match value.filter(|v| !v.trim().is_empty()) {
        None => (default(), None),
        Some(v) => match v.parse::<Targets>() {
            // Some malformed values (`[`, `=`) parse to targets no module has, or to none, and
            // would silence every log line, this warning included.
            Ok(targets) if !names_real_targets(&targets) => (
                default(),
                Some((
                    v,
                    "expected target names like flmon_agent or flmon_agent::collectors".to_owned(),
                )),
            ),
            Ok(targets) => (targets, None),
            Err(e) => (default(), Some((v, e.to_string()))),
        },
    }
}

/// Whether `targets` sets a default level or names at least one target, each a Rust module path.
fn names_real_targets(targets: &Targets) -> bool {
    let mut any = targets.default_level().is_some();
    for (target, _) in targets.iter() {
        if target.is_empty()
            || !target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return false;
        }
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn rust_log_sets_levels_by_target_and_a_bad_value_falls_back_to_info() {
        let (targets, bad) = log_filter(Some("warn,flmon_agent=debug".into()));
        assert!(bad.is_none());
        assert!(targets.would_enable("flmon_agent::app", &Level::DEBUG));
        assert!(!targets.would_enable("rdkafka", &Level::INFO));
        let (targets, bad) = log_filter(Some("flmon_agent=loud".into()));
        assert_eq!(bad.map(|(v, _)| v).as_deref(), Some("flmon_agent=loud"));
        assert!(targets.would_enable("flmon_agent", &Level::INFO));
        assert!(!targets.would_enable("flmon_agent", &Level::DEBUG));
        for silent in ["[", "=", "info,,=", "flmon_agent["] {
            let (targets, bad) = log_filter(Some(silent.into()));
            assert!(bad.is_some(), "{silent}");
            assert!(targets.would_enable("flmon_agent", &Level::WARN), "{silent}");
        }
        let (targets, bad) = log_filter(None);
        assert!(bad.is_none() && targets.would_enable("anything", &Level::INFO));
    }
}
