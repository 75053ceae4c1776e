//! flmon's test environment: real etcd + kube-apiserver and a real Apache Kafka broker for tests.
//!
//! The binaries are installed by `tests/env/install.sh` under the flmon cache directory; where each
//! one lives is printed by `tests/env/paths.sh`, so versions are named in one place. Every process is
//! started through `tests/env/tied.sh`, which ends it when the test binary exits, however it exits.
//!
//! ```no_run
//! # async fn demo() {
//! let kube = flmon_tests::Kube::shared();
//! let client = kube.client().await;
//! let ns = kube.namespace("example").await;
//! # }
//! ```

mod certs;
mod kafka;
mod kubeenv;
mod process;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use kafka::Kafka;
pub use kubeenv::Kube;
pub use process::{group_alive, stop_groups};

/// Makes services started from now on outlive this process instead of ending with it (for the
/// `flmon-testenv up` entry point; tests never call it).
pub fn set_detached(detached: bool) {
    process::DETACHED.store(detached, std::sync::atomic::Ordering::Relaxed);
}

/// What a finished command printed, stdout then stderr, for assertions and failure messages.
pub fn combined_output(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `promtool check metrics` over a `/metrics` body: whether it is clean (exit 0, nothing
/// printed), and what promtool said.
///
/// # Panics
/// When promtool is not installed or cannot be run.
pub fn promtool_check_metrics(body: &str) -> (bool, String) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(body.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to promtool: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("promtool did not finish: {e}"));
    let text = combined_output(&out);
    (out.status.success() && text.trim().is_empty(), text)
}

/// The workspace root (the folder holding the top `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn paths() -> &'static HashMap<String, String> {
    static PATHS: OnceLock<HashMap<String, String>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let script = repo_root().join("tests/env/paths.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// The path of a test-environment tool: `kube-apiserver`, `etcd`, `kubectl`,
/// `kube-controller-manager`, `helm`, `kubeconform`, `promtool`, `prometheus`, `kcat`,
/// `node-exporter`, `java`, `python` (the project's venv).
///
/// # Panics
/// When the tool is unknown or not installed, naming the install command: a test that needs a
/// tool fails loudly instead of skipping.
pub fn tool(name: &str) -> PathBuf {
    let path = paths()
        .get(name)
        .unwrap_or_else(|| panic!("unknown test tool '{name}' (see tests/env/paths.sh)"));
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "test tool '{name}' is not installed at {}: run tests/env/install.sh (or tests/run.sh)",
        path.display()
    );
    path
}

/// The folder holding the real Prometheus Operator CRDs (`monitoring.coreos.com_*.yaml`).
///
/// # Panics
/// When they are not installed (run `tests/env/install.sh promop`).
pub fn promop_crds_dir() -> PathBuf {
    tool("promop-crds")
}

/// The folder of offline Kubernetes JSON schemas for kubeconform (`-schema-location`).
///
/// # Panics
/// When they are not installed (run `tests/env/install.sh schemas`).
pub fn kubeconform_schemas_dir() -> PathBuf {
    tool("kubeconform-schemas")
}

/// The Kubernetes version the test apiserver runs, e.g. `v1.36.3`.
pub fn kubernetes_version() -> String {
    paths().get("FLMON_K8S_VERSION").cloned().unwrap_or_default()
}
