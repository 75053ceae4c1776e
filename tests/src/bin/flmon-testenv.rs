//! `flmon-testenv up|down|status`: the test environment for humans and the demo. `up` starts etcd,
//! kube-apiserver and a Kafka broker, prints the kubeconfig path and Kafka address, and leaves them
//! running; `down` stops them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flmon_tests::{Kafka, Kube, group_alive, stop_groups};

fn run_dir() -> PathBuf {
    std::env::var_os("FLMON_TESTENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("flmon-testenv"))
}

fn up() -> Result<()> {
    let dir = run_dir();
    let state = dir.join("state.env");
    if state.exists() {
        bail!(
            "a test environment is already up (state in {}); run `flmon-testenv down` first",
            state.display()
        );
    }
    flmon_tests::set_detached(true);
    eprintln!(
        "starting etcd + kube-apiserver in {} …",
        dir.join("kube").display()
    );
    let kube = Kube::start_at(&dir.join("kube"))?;
    let kubeconfig = kube.kubeconfig().to_path_buf();
    let server = kube.server_url().to_string();
    let mut pgids = kube.detach();
    let host = std::env::var("FLMON_KAFKA_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    eprintln!("starting Kafka on {host} in {} …", dir.join("kafka").display());
    let kafka = Kafka::start_at(&dir.join("kafka"), &host).inspect_err(|_| stop(&pgids))?;
    let bootstrap = kafka.bootstrap();
    pgids.extend(kafka.detach());
    let text = format!(
        "KUBECONFIG={}\nKUBE_SERVER={server}\nKAFKA_BOOTSTRAP={bootstrap}\nPGIDS=\"{}\"\n",
        kubeconfig.display(),
        pgids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    );
    std::fs::write(&state, &text).with_context(|| format!("writing {}", state.display()))?;
    print!("{text}");
    eprintln!("test environment up; `flmon-testenv down` stops it");
    Ok(())
}

/// Ends the environment's process groups and returns once they have exited, so the ports and
/// files are free again (SIGKILL after 15 s).
fn stop(pgids: &[u32]) {
    stop_groups(pgids, Duration::from_secs(15), |pgid| !group_alive(pgid));
}

fn down() -> Result<()> {
    let dir = run_dir();
    let state = dir.join("state.env");
    let Ok(text) = std::fs::read_to_string(&state) else {
        eprintln!("no test environment is up ({} is absent)", state.display());
        return Ok(());
    };
    let pgids: Vec<u32> = text
        .lines()
        .find_map(|l| l.strip_prefix("PGIDS="))
        .map(|v| {
            v.trim_matches('"')
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    stop(&pgids);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    eprintln!("test environment stopped");
    Ok(())
}

fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("up") => up(),
        Some("down") => down(),
        Some("status") => {
            let state = run_dir().join("state.env");
            match std::fs::read_to_string(&state) {
                Ok(t) => print!("{t}"),
                Err(_) => println!("down"),
            }
            Ok(())
        }
        other => bail!("usage: flmon-testenv up|down|status (got {other:?})"),
    }
}
