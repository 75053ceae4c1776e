//! The host collector: CPU, memory, disk and network of the app, read from `/proc` and the cgroup
//! filesystem under configurable roots (so tests run on fixture trees).
//!
//! A sidecar sees its own cgroup, not the app's. In the `pod` scope, usage therefore comes from
//! the app's processes, visible through the pod's shared process namespace (the agent itself and
//! the pause process excluded), and limits from the Downward-API env the webhook injects, else from
//! the processes' cgroup when it is visible, else node capacity. In the `cgroup` scope (standalone)
//! both come from the agent's own cgroup, falling back to the whole machine at the root cgroup.
//! CPU usage needs two samples: the first sample exports no CPU percentage rather than a bogus 0.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::cgroup::Cgroup;
use super::procfs::{self, CpuTimes, NetDev};
use super::{Collector, HistoryUpdate, Output, SampleTime};
use crate::config::{Config, ContainerLimits, HostScope};
use crate::exposition::TextWriter;
use crate::history::SystemRecord;
use crate::metrics;

/// Network devices exported; more are dropped and counted.
const MAX_DEVICES: usize = 16;

/// What the host collector reads and how.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Root of the proc filesystem.
    pub proc_root: PathBuf,
    /// Root of the cgroup filesystem.
    pub cgroup_root: PathBuf,
    /// Whose usage to measure.
    pub scope: HostScope,
    /// The agent's own pid (excluded from the app's processes).
    pub self_pid: u32,
    /// Clock ticks per second (`USER_HZ`) of `/proc/<pid>/stat` times.
    pub clock_ticks: f64,
    /// Limits from the Downward-API env.
    pub limits: ContainerLimits,
    /// Filesystems to report.
    pub filesystems: Vec<PathBuf>,
}

/// Builds the host collector from the agent's configuration.
///
/// # Errors
/// Never in practice; the signature is the registry's.
pub fn build(config: &Config) -> Result<Option<Box<dyn Collector>>, String> {
    let (limits, errors) = ContainerLimits::from_vars(std::env::vars());
    for e in errors {
        tracing::warn!(error = %e, "ignoring a container limit");
    }
    let host = HostConfig {
        proc_root: config.proc_root.clone(),
        cgroup_root: config.cgroup_root.clone(),
        scope: config.effective_host_scope(),
        self_pid: std::process::id(),
        clock_ticks: rustix::param::clock_ticks_per_second() as f64,
        limits,
        filesystems: config.filesystems.clone(),
    };
    if host.scope == HostScope::Pod {
        tracing::info!(
            "host usage comes from the app processes in the shared process namespace; \
             it is absent when shareProcessNamespace is off"
        );
    }
    Ok(Some(Box::new(HostCollector::new(host))))
}

#[derive(Debug, Clone, Copy, Default)]
struct ProcCounters {
    ticks: u64,
    io: Option<(u64, u64)>,
}

/// Raw readings of one sample.
#[derive(Debug, Clone, Default)]
struct Reading {
    processes: Option<usize>,
    procs: HashMap<(u32, u64), ProcCounters>,
    /// Cumulative CPU seconds from a cgroup or the machine (cgroup scope).
    cpu_seconds: Option<f64>,
    memory: Option<u64>,
    io: Option<(u64, u64)>,
    cpu_limit: Option<(f64, &'static str)>,
    memory_limit: Option<(u64, &'static str)>,
    node: NodeCapacity,
    net: Vec<NetDev>,
}

#[derive(Debug, Clone, Copy, Default)]
struct NodeCapacity {
    cpus: Option<u32>,
    memory: Option<u64>,
    machine_busy_seconds: Option<f64>,
    machine_memory_used: Option<u64>,
}

/// The host collector.
pub struct HostCollector {
    config: HostConfig,
    previous: Option<(f64, Reading)>,
    cpu_seconds_total: f64,
    read_total: u64,
    written_total: u64,
}

impl HostCollector {
    /// A collector with no previous sample.
    pub fn new(config: HostConfig) -> Self {
        HostCollector {
            config,
            previous: None,
            cpu_seconds_total: 0.0,
            read_total: 0,
            written_total: 0,
        }
    }

    fn proc_path(&self, rel: &str) -> PathBuf {
        self.config.proc_root.join(rel)
    }

    fn node(&self) -> NodeCapacity {
        let stat = fs::read_to_string(self.proc_path("stat"))
            .ok()
            .and_then(|t| procfs::parse_stat(&t));
        let meminfo = fs::read_to_string(self.proc_path("meminfo")).ok();
        let total = meminfo.as_deref().and_then(|t| procfs::kb_field(t, "MemTotal"));
        let available = meminfo
            .as_deref()
            .and_then(|t| procfs::kb_field(t, "MemAvailable"));
        NodeCapacity {
            cpus: stat.map(|s: CpuTimes| s.cpus).filter(|n| *n > 0),
            memory: total,
            machine_busy_seconds: stat.map(|s| s.busy as f64 / self.config.clock_ticks),
            machine_memory_used: total.zip(available).map(|(t, a)| t.saturating_sub(a)),
        }
    }

    /// The app's processes: every pid but the agent, the pause process and zombies.
    fn app_processes(&self) -> Vec<(u32, procfs::PidStat)> {
        let Ok(dir) = fs::read_dir(&self.config.proc_root) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid == self.config.self_pid {
                continue;
            }
            let Some(stat) = fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|t| procfs::parse_pid_stat(&t))
            else {
                continue;
            };
            if stat.state == 'Z' || (stat.comm == "pause" && stat.ppid == 0) {
                continue;
            }
            out.push((pid, stat));
        }
        out.sort_by_key(|(pid, _)| *pid);
        out
    }

    fn read_pod(&self, r: &mut Reading) {
        let procs = self.app_processes();
        r.processes = Some(procs.len());
        if procs.is_empty() {
            return;
        }
        let mut memory = 0u64;
        let mut io_sum: Option<(u64, u64)> = None;
        for (pid, stat) in &procs {
            let base = self.config.proc_root.join(pid.to_string());
            if let Some(rss) = fs::read_to_string(base.join("status"))
                .ok()
                .and_then(|t| procfs::kb_field(&t, "VmRSS"))
            {
                memory += rss;
            }
            // /proc/<pid>/io needs ptrace access; a process of another user is simply not counted.
            let io = fs::read_to_string(base.join("io"))
                .ok()
                .and_then(|t| procfs::parse_pid_io(&t));
            if let Some((rb, wb)) = io {
                let sum = io_sum.get_or_insert((0, 0));
                sum.0 += rb;
                sum.1 += wb;
            }
            r.procs.insert(
                (*pid, stat.starttime),
                ProcCounters {
                    ticks: stat.utime + stat.stime,
                    io,
                },
            );
        }
        r.memory = Some(memory);
        r.io = io_sum;
        // Limits: Downward API, else the first process's cgroup when the agent can see it.
        let cgroup = self
            .process_cgroup(procs[0].0)
            .map(|c| c.read())
            .unwrap_or_default();
        r.cpu_limit = self
            .config
            .limits
            .total_cpu()
            .map(|c| (c, "downward_api"))
            .or(cgroup.cpu_limit.map(|c| (c, "cgroup")));
        r.memory_limit = self
            .config
            .limits
            .total_memory()
            .map(|m| (m, "downward_api"))
            .or(cgroup.memory_limit.map(|m| (m, "cgroup")));
    }

    fn process_cgroup(&self, pid: u32) -> Option<Cgroup> {
        let text = fs::read_to_string(self.config.proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        let membership = procfs::parse_cgroup_membership(&text);
        // In the pod scope only a cgroup found by its own path counts: the mount root is the
        // agent's own cgroup, which says nothing about the app.
        let cg = Cgroup::resolve(&self.config.cgroup_root, &membership)?;
        let own = match &cg {
            Cgroup::V2 { dir, root } => dir != root,
            Cgroup::V1 { memory, .. } => memory
                .as_deref()
                .is_some_and(|m| m != self.config.cgroup_root.join("memory")),
        };
        own.then_some(cg)
    }

    fn read_cgroup(&self, r: &mut Reading) {
        let membership = fs::read_to_string(self.proc_path("self/cgroup"))
            .map(|t| procfs::parse_cgroup_membership(&t))
            .unwrap_or_default();
        let reading = Cgroup::resolve(&self.config.cgroup_root, &membership)
            .map(|c| c.read())
            .unwrap_or_default();
        r.cpu_seconds = reading.cpu_seconds.or(r.node.machine_busy_seconds);
        r.memory = reading.memory_working_set.or(r.node.machine_memory_used);
        r.io = reading.read_bytes.zip(reading.written_bytes);
        r.cpu_limit = reading.cpu_limit.map(|c| (c, "cgroup"));
        r.memory_limit = reading.memory_limit.map(|m| (m, "cgroup"));
    }

    fn read(&self) -> Reading {
        let mut r = Reading {
            node: self.node(),
            ..Reading::default()
        };
        match self.config.scope {
            HostScope::Pod => self.read_pod(&mut r),
            HostScope::Cgroup => self.read_cgroup(&mut r),
        }
        // A limit above the node's capacity (or none) is the node's capacity.
        let node_cpus = r.node.cpus.map(f64::from);
        r.cpu_limit = match (r.cpu_limit, node_cpus) {
            (Some((l, s)), Some(n)) if l <= n => Some((l, s)),
            (_, Some(n)) => Some((n, "node")),
            (l, None) => l,
        };
        r.memory_limit = match (r.memory_limit, r.node.memory) {
            (Some((l, s)), Some(n)) if l <= n => Some((l, s)),
            (_, Some(n)) => Some((n, "node")),
            (l, None) => l,
        };
        r.net = fs::read_to_string(self.proc_path("net/dev"))
            .map(|t| procfs::parse_net_dev(&t))
            .unwrap_or_default();
        r
    }

    /// CPU seconds and I/O bytes used since `prev`, from per-process counters (pod scope) or
    /// cumulative cgroup counters.
    fn deltas(&self, prev: &Reading, now: &Reading) -> (Option<f64>, Option<(u64, u64)>) {
        if self.config.scope == HostScope::Cgroup {
            let cpu = now
                .cpu_seconds
                .zip(prev.cpu_seconds)
                .map(|(n, p)| (n - p).max(0.0));
            let io = now
                .io
                .zip(prev.io)
                .map(|(n, p)| (n.0.saturating_sub(p.0), n.1.saturating_sub(p.1)));
            return (cpu, io);
        }
        if now.processes.unwrap_or(0) == 0 {
            return (None, None);
        }
        let mut ticks = 0u64;
        let mut io = (0u64, 0u64);
        for (key, c) in &now.procs {
            // A process new since the last sample used all its time since then.
            let before = prev.procs.get(key).copied().unwrap_or_default();
            ticks += c.ticks.saturating_sub(before.ticks);
            if let Some((rb, wb)) = c.io {
                let (prb, pwb) = before.io.unwrap_or((0, 0));
                io.0 += rb.saturating_sub(prb);
                io.1 += wb.saturating_sub(pwb);
            }
        }
        (Some(ticks as f64 / self.config.clock_ticks), now.io.map(|_| io))
    }
}

fn net_totals(devs: &[NetDev]) -> (u64, u64) {
    devs.iter()
        .filter(|d| d.name != "lo")
        .fold((0, 0), |(rx, tx), d| (rx + d.rx_bytes, tx + d.tx_bytes))
}

impl Collector for HostCollector {
    fn sample(&mut self, now: SampleTime) -> Output {
        let reading = self.read();
        let mut record = SystemRecord {
            time: now.unix,
            ..SystemRecord::default()
        };
        let mut cpu_percent = None;
        if let Some((t0, prev)) = &self.previous {
            let dt = now.monotonic - t0;
            let (cpu, io) = self.deltas(prev, &reading);
            if let Some(cpu) = cpu {
                self.cpu_seconds_total += cpu;
                if dt > 0.0 {
                    let cores = cpu / dt;
                    record.cpu_cores = Some(cores);
                    cpu_percent = reading.cpu_limit.map(|(l, _)| cpu * 100.0 / (dt * l));
                }
            }
            if let Some((rb, wb)) = io {
                self.read_total += rb;
                self.written_total += wb;
                if dt > 0.0 {
                    record.disk_read_bytes_per_second = Some(rb as f64 / dt);
                    record.disk_write_bytes_per_second = Some(wb as f64 / dt);
                }
            }
            let (rx0, tx0) = net_totals(&prev.net);
            let (rx1, tx1) = net_totals(&reading.net);
            if dt > 0.0 && !reading.net.is_empty() {
                record.network_rx_bytes_per_second = Some(rx1.saturating_sub(rx0) as f64 / dt);
                record.network_tx_bytes_per_second = Some(tx1.saturating_sub(tx0) as f64 / dt);
            }
        }
        let has_usage = reading.memory.is_some();
        let memory_percent = reading
            .memory
            .zip(reading.memory_limit)
            .map(|(m, (l, _))| m as f64 * 100.0 / l as f64);
        record.cpu_percent = cpu_percent;
        record.memory_percent = memory_percent;
        record.memory_bytes = reading.memory;
        record.cpu_limit_cores = reading.cpu_limit.map(|(l, _)| l);
        record.memory_limit_bytes = reading.memory_limit.map(|(l, _)| l);

        let mut w = TextWriter::new();
        w.single(&metrics::CPU_USAGE_PERCENT, cpu_percent);
        w.single(&metrics::MEMORY_USAGE_PERCENT, memory_percent);
        w.single(
            &metrics::CPU_USAGE_SECONDS,
            (has_usage && self.previous.is_some()).then_some(self.cpu_seconds_total),
        );
        w.single(&metrics::CPU_LIMIT_CORES, reading.cpu_limit.map(|(l, _)| l));
        w.single(&metrics::MEMORY_USAGE_BYTES, reading.memory.map(|m| m as f64));
        w.single(
            &metrics::MEMORY_LIMIT_BYTES,
            reading.memory_limit.map(|(l, _)| l as f64),
        );
        w.family(&metrics::LIMIT_INFO, |f| {
            if let Some((_, source)) = reading.cpu_limit {
                f.sample(&[("resource", "cpu"), ("source", source)], 1.0);
            }
            if let Some((_, source)) = reading.memory_limit {
                f.sample(&[("resource", "memory"), ("source", source)], 1.0);
            }
        });
        w.single(&metrics::NODE_CPU_CORES, reading.node.cpus.map(f64::from));
        w.single(&metrics::NODE_MEMORY_BYTES, reading.node.memory.map(|m| m as f64));
        w.single(&metrics::HOST_PROCESSES, reading.processes.map(|n| n as f64));
        let io_known = reading.io.is_some() && self.previous.is_some();
        w.single(
            &metrics::DISK_READ_BYTES,
            io_known.then_some(self.read_total as f64),
        );
        w.single(
            &metrics::DISK_WRITTEN_BYTES,
            io_known.then_some(self.written_total as f64),
        );
        let devices = &reading.net[..reading.net.len().min(MAX_DEVICES)];
        type Pick = fn(&NetDev) -> u64;
        let net: [(&metrics::MetricDef, Pick); 6] = [
            (&metrics::NET_RX_BYTES, |d| d.rx_bytes),
            (&metrics::NET_TX_BYTES, |d| d.tx_bytes),
            (&metrics::NET_RX_PACKETS, |d| d.rx_packets),
            (&metrics::NET_TX_PACKETS, |d| d.tx_packets),
            (&metrics::NET_RX_ERRORS, |d| d.rx_errors),
            (&metrics::NET_TX_ERRORS, |d| d.tx_errors),
        ];
        for (def, pick) in net {
            w.family(def, |f| {
                for d in devices {
                    f.sample(&[("device", &d.name)], pick(d) as f64);
                }
            });
        }
        let filesystems: Vec<(String, u64, u64)> = self
            .config
            .filesystems
            .iter()
            .filter_map(|p| statvfs(p).map(|(s, a)| (p.display().to_string(), s, a)))
            .collect();
        w.family(&metrics::FS_SIZE, |f| {
            for (mount, size, _) in &filesystems {
                f.sample(&[("mountpoint", mount)], *size as f64);
            }
        });
        w.family(&metrics::FS_AVAIL, |f| {
            for (mount, _, avail) in &filesystems {
                f.sample(&[("mountpoint", mount)], *avail as f64);
            }
        });
        let dropped = (reading.net.len().saturating_sub(MAX_DEVICES) * net.len()) as u64;
        let error = (reading.node.memory.is_none()).then(|| {
            format!(
                "cannot read {}/meminfo: host metrics are incomplete",
                self.config.proc_root.display()
            )
        });
        self.previous = Some((now.monotonic, reading));
        Output {
            text: w.finish(),
            error,
            history: vec![HistoryUpdate::System(record)],
            dropped: if dropped > 0 {
                vec![(metrics::NET_RX_BYTES.name, dropped)]
            } else {
                Vec::new()
            },
        }
    }
}

fn statvfs(path: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some((
        s.f_blocks.saturating_mul(s.f_frsize),
        s.f_bavail.saturating_mul(s.f_frsize),
    ))
}
