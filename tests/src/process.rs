//! Child processes tied to the test binary's life, free loopback ports and readiness waits.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Whether services started from now on outlive this process (see [`crate::set_detached`]).
pub static DETACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A free TCP port on 127.0.0.1, chosen by the kernel.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(l.local_addr()?.port())
}

/// A server process started through `tests/env/tied.sh`: it ends when the test binary does, and on drop.
pub struct Service {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `program args...` with its output in `log`; `cleanup` (if any) is removed once it ends.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> Result<Self> {
        let tied = crate::repo_root().join("tests/env/tied.sh");
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        // The `up` entry point leaves processes running after it exits.
        let parent = if DETACHED.load(std::sync::atomic::Ordering::Relaxed) {
            "0".to_string()
        } else {
            std::process::id().to_string()
        };
        let mut cmd = Command::new("bash");
        cmd.arg(&tied)
            .arg(parent)
            .arg(cleanup.map(|p| p.display().to_string()).unwrap_or_default())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The process group of the service (its `tied.sh` wrapper leads it).
    pub fn pgid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Forgets the process without stopping it (for the detached `up` entry point).
    pub fn detach(&mut self) {
        self.child = None;
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..].join("\n")
    }

    /// The path of the process's log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Waits until `ready()` returns true, failing with the log tail on timeout or early exit.
    pub fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            if !self.running() {
                bail!(
                    "{} exited before it was ready; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(40)
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} was not ready within {:?}; log {}:\n{}",
                    self.name,
                    timeout,
                    self.log.display(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the process (SIGTERM to its group, then SIGKILL after 12 s) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_groups(&[child.id()], Duration::from_secs(12), |_| {
                !matches!(child.try_wait(), Ok(None))
            });
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(signal: &str, pgid: u32) -> bool {
    Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether any process of group `pgid` is still there.
pub fn group_alive(pgid: u32) -> bool {
    signal_group("-0", pgid)
}

/// Ends process groups: SIGTERM to each, then waits until `gone` says each has exited (polled
/// every 100 ms) or `grace` has passed, then SIGKILL to each, so nothing of them lingers.
pub fn stop_groups(pgids: &[u32], grace: Duration, mut gone: impl FnMut(u32) -> bool) {
    for pgid in pgids {
        signal_group("-TERM", *pgid);
    }
    let start = Instant::now();
    while !pgids.iter().all(|p| gone(*p)) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(100));
    }
    for pgid in pgids {
        signal_group("-KILL", *pgid);
    }
}

/// Whether something accepts TCP connections on `addr`.
pub fn port_open(addr: &str) -> bool {
    addr.parse()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).ok())
        .is_some()
}

/// A plain-HTTP GET on loopback; returns the status code.
pub fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}
