//! The agent's GPU path through the real NVML binding, on a machine without a GPU: the agent binary
//! loads, through nvml-wrapper's dlopen, a stand-in `libnvidia-ml.so` compiled here against
//! NVIDIA's own `nvml.h` (`tests/nvml/fake_nvml.c`; the header comes from PyPI through
//! `tests/env/install.sh nvml`). So symbol names, prototypes, struct layouts (`nvmlMemory_v2_t` and
//! its version word, `nvmlProcessInfo_t`) and error codes are NVIDIA's, and the test shows what a
//! user sees on `/metrics`: this pod's GPUs only (NodeVisible, by compute-process pid), MIG devices
//! attributed one by one while their shared card is not, readings the board does not support
//! absent rather than zero, a GPU falling off the bus dropped while the
//! rest carries on, a driver that is not loaded reported as `flmon_gpu_up 0`, and NVML shut down
//! on SIGTERM. What no stand-in shows — a real driver's readings — is `agent/scripts/gpu-check.sh`'s
//! job on a machine with a GPU.

// Test helpers outside #[test] functions unwrap too: a failure stops the test where it happened.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The stand-in library and its state file, in a folder of their own.
struct FakeNvml {
    dir: tempfile::TempDir,
}

impl FakeNvml {
    fn build() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let include = flmon_tests::tool("nvml-include");
        let source = flmon_tests::repo_root().join("tests/nvml/fake_nvml.c");
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(&include)
            .arg(format!("-DFAKE_NVML_DIR=\"{}\"", dir.path().display()))
            .arg("-o")
            .arg(dir.path().join("libnvidia-ml.so.1"))
            .arg(&source)
            .output()
            .expect("a C compiler (cc) to build the stand-in NVML library");
        assert!(
            out.status.success(),
            "building {} against {}/nvml.h failed:\n{}",
            source.display(),
            include.display(),
            flmon_tests::combined_output(&out)
        );
        FakeNvml { dir }
    }

    fn library(&self) -> PathBuf {
        self.dir.path().join("libnvidia-ml.so.1")
    }

    /// Replaces the GPUs the library serves (written whole, then renamed into place).
    fn set_state(&self, state: &str) {
        let tmp = self.dir.path().join("state.new");
        std::fs::write(&tmp, state).unwrap();
        std::fs::rename(tmp, self.dir.path().join("state")).unwrap();
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

/// The `flmon-agent` binary cargo built beside this test binary. `cargo test --workspace` builds
/// it; run on its own (`-p flmon-tests --test agent_gpu`), this test uses whatever binary is
/// there, so `cargo build -p flmon-agent` first after changing the agent.
fn agent_binary() -> PathBuf {
    // The test binary lives in <target>/<profile>/deps; the flmon binaries one folder up.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("flmon-agent");
    assert!(
        bin.exists(),
        "build the agent first (cargo test --workspace does): {} is missing",
        bin.display()
    );
    bin
}

/// A running agent binary; killed if a test fails before stopping it.
struct Agent {
    child: Option<Child>,
    metrics: String,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent on ports the kernel picks, and reads the metrics address from its
    /// "agent started" log line (no port is chosen here that another process could take first).
    fn start(library: &Path, mode: &str, log_dir: &Path) -> Self {
        let log = log_dir.join("agent.log");
        let child = Command::new(agent_binary())
            .args([
                "--collectors",
                "gpu,host",
                "--gpu-mode",
                mode,
                "--sample-interval",
                "200ms",
            ])
            .arg("--nvml-library")
            .arg(library)
            .args(["--metrics-addr", "127.0.0.1:0", "--ingest-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut agent = Agent {
            child: Some(child),
            metrics: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while agent.metrics.is_empty() {
            let text = std::fs::read_to_string(&agent.log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find(|l| l.contains("agent started"))
                .and_then(|l| l.split("metrics_addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                agent.metrics = addr.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not log its start within 10 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn get(&self, path: &str) -> String {
        let out = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "5",
                &format!("http://{}{path}", self.metrics),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `/metrics` once `done` holds for it (10 s at most).
    fn metrics_when(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        self.get_when("/metrics", what, done)
    }

    /// `path` once `done` holds for its body (10 s at most).
    fn get_when(&self, path: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body = self.get(path);
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "waited 10 s for {what}; last {path}:\n{body}\nagent log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status (10 s at most).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                panic!("the agent did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// A process of "this pod"; killed when the test ends, however it ends.
struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// A pid no process has here: a GPU running it belongs to some other pod.
fn foreign_pid() -> u32 {
    (100_000..4_000_000)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

fn promtool_check(body: &str) {
    let (clean, report) = flmon_tests::promtool_check_metrics(body);
    assert!(clean, "promtool check metrics:\n{report}\n{body}");
}

const H200: &str = "GPU-5d1c6a3e-8f2b-4c19-9a7e-0b3f2d4c5e61";
const OTHER_POD: &str = "GPU-7e2d1b4f-3a5c-4d6e-8f90-1a2b3c4d5e6f";
const MIG_CARD: &str = "GPU-0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f";
const MIG: &str = "MIG-a1b2c3d4-e5f6-5a7b-8c9d-0e1f2a3b4c5d";
const OTHER_MIG: &str = "MIG-f0e1d2c3-b4a5-5968-7a8b-9c0d1e2f3a4b";

/// Three cards: one running this pod's process, one running another pod's, and one in MIG mode
/// with a MIG device for each pod (slots 0 and 3).
fn state(pod_pid: u32, other_pid: u32, h200: &str) -> String {
    format!(
        "init ok\n\
         gpu {H200} 87 17179869184 150754820096 64 312500 {pod_pid} {h200} NVIDIA H200\n\
         gpu {OTHER_POD} 55 8589934592 150754820096 51 201000 {other_pid} ok NVIDIA H200\n\
         gpu {MIG_CARD} 40 0 150754820096 47 180000 none ok NVIDIA H200\n\
         mig 2 0 {MIG} 4294967296 17179869184 {pod_pid} NVIDIA H200 MIG 1g.18gb\n\
         mig 2 3 {OTHER_MIG} 2147483648 17179869184 {other_pid} NVIDIA H200 MIG 1g.18gb\n"
    )
}

fn labels(index: u32, uuid: &str, model: &str) -> String {
    format!("{{gpu=\"{index}\",uuid=\"{uuid}\",model=\"{model}\"}}")
}

#[test]
fn node_visible_reports_this_pods_gpus_through_nvml_drops_a_lost_one_and_shuts_nvml_down() {
    let nvml = FakeNvml::build();
    // A process of "this pod" holding a CUDA context: the agent sees it in its process namespace.
    let app = App(Command::new("sleep").arg("120").spawn().unwrap());
    nvml.set_state(&state(app.0.id(), foreign_pid(), "ok"));
    let mut agent = Agent::start(&nvml.library(), "NodeVisible", nvml.dir.path());

    let body = agent.metrics_when("the pod's GPUs", |b| {
        b.contains("flmon_gpu_up{mode=\"NodeVisible\",reason=\"ok\"} 1") && b.contains(MIG)
    });
    let h200 = labels(0, H200, "NVIDIA H200");
    for line in [
        format!("flmon_gpu_utilization_ratio{h200} 0.87"),
        format!("flmon_gpu_memory_used_bytes{h200} 17179869184"),
        format!("flmon_gpu_memory_total_bytes{h200} 150754820096"),
        format!("flmon_gpu_temperature_celsius{h200} 64"),
        format!("flmon_gpu_power_watts{h200} 312.5"),
    ] {
        assert!(body.lines().any(|l| l == line), "missing `{line}` in:\n{body}");
    }
    // This pod's MIG device: its own memory; utilization, temperature and power exist only for
    // the whole card, so they are absent here, never 0.
    let mig = labels(2, MIG, "NVIDIA H200 MIG 1g.18gb");
    for line in [
        format!("flmon_gpu_memory_used_bytes{mig} 4294967296"),
        format!("flmon_gpu_memory_total_bytes{mig} 17179869184"),
    ] {
        assert!(body.lines().any(|l| l == line), "missing `{line}` in:\n{body}");
    }
    for family in [
        "flmon_gpu_utilization_ratio",
        "flmon_gpu_temperature_celsius",
        "flmon_gpu_power_watts",
    ] {
        assert!(
            !body.lines().any(|l| l.starts_with(family) && l.contains(MIG)),
            "{family} of the MIG device must be absent:\n{body}"
        );
    }
    for (uuid, why) in [
        (OTHER_POD, "a GPU running only another pod's process"),
        (OTHER_MIG, "another pod's MIG device"),
        (MIG_CARD, "a card in MIG mode, shared with other tenants,"),
    ] {
        assert!(!body.contains(uuid), "{why} is not this pod's:\n{body}");
    }
    promtool_check(&body);
    // The next host sample carries the GPU readings into /v1/history, for the operator's plots.
    let history = agent.get_when("/v1/history", "a system sample with the GPUs", |h| {
        h.contains(H200)
    });
    assert!(!history.contains(OTHER_POD), "{history}");

    // The H200 falls off the bus: its series go; the MIG device and the host collector stay.
    nvml.set_state(&state(app.0.id(), foreign_pid(), "lost"));
    let body = agent.metrics_when("the lost GPU to be dropped", |b| {
        b.contains("flmon_gpu_up{") && !b.contains(H200)
    });
    assert!(body.contains(MIG), "{body}");
    assert!(
        body.contains("flmon_agent_collector_success{collector=\"host\"} 1")
            && body.contains("flmon_agent_collector_success{collector=\"gpu\"} 1"),
        "{body}"
    );

    let status = agent.terminate();
    assert!(status.success(), "the agent exits cleanly on SIGTERM: {status}");
    let calls = nvml.calls();
    assert_eq!(
        calls.first().map(String::as_str),
        Some("nvmlInit_v2"),
        "{calls:?}"
    );
    assert_eq!(
        calls.last().map(String::as_str),
        Some("nvmlShutdown"),
        "NVML is shut down on SIGTERM: {calls:?}"
    );
}

#[test]
fn all_mode_reports_every_gpu_and_a_driver_not_loaded_is_up_zero_with_the_rest_serving() {
    let nvml = FakeNvml::build();
    nvml.set_state(&state(foreign_pid(), foreign_pid(), "ok"));
    let mut agent = Agent::start(&nvml.library(), "All", nvml.dir.path());
    let body = agent.metrics_when("every GPU", |b| {
        [H200, OTHER_POD, MIG_CARD, MIG, OTHER_MIG]
            .iter()
            .all(|uuid| b.contains(uuid))
    });
    assert!(
        body.contains("flmon_gpu_up{mode=\"All\",reason=\"ok\"} 1"),
        "{body}"
    );
    // The card in MIG mode: its own temperature and power; no utilization (not supported in MIG
    // mode) and no memory (its aggregate needs root), rather than zeros.
    let card = labels(2, MIG_CARD, "NVIDIA H200");
    for line in [
        format!("flmon_gpu_temperature_celsius{card} 47"),
        format!("flmon_gpu_power_watts{card} 180"),
    ] {
        assert!(body.lines().any(|l| l == line), "missing `{line}` in:\n{body}");
    }
    for family in ["flmon_gpu_utilization_ratio", "flmon_gpu_memory_used_bytes"] {
        assert!(
            !body.contains(&format!("{family}{card}")),
            "{family} of a MIG-mode card must be absent:\n{body}"
        );
    }
    promtool_check(&body);
    assert_eq!(agent.terminate().code(), Some(0));

    // A node whose NVIDIA driver is not loaded: the library is there, NVML does not start.
    nvml.set_state("init driver_not_loaded\n");
    let mut agent = Agent::start(&nvml.library(), "NodeVisible", nvml.dir.path());
    let body = agent.metrics_when("the host collector", |b| {
        b.contains("flmon_agent_collector_success{collector=\"host\"} 1")
    });
    assert!(
        body.contains("flmon_gpu_up{mode=\"NodeVisible\",reason=\"nvml_init_failed\"} 0"),
        "{body}"
    );
    assert!(!body.contains("flmon_gpu_utilization_ratio{"), "{body}");
    assert_eq!(agent.terminate().code(), Some(0));
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(
        log.contains("GPU metrics are absent") && log.contains("NVIDIA driver is not loaded"),
        "the log says once why GPU metrics are absent:\n{log}"
    );
}
