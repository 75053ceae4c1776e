//! Reads a cgroup's limits and usage directly from the cgroup filesystem, v2 (unified) or v1.
//! A limit is the tightest one on the path to the root (cgroup limits are hierarchical), so a
//! container limited to 512 MiB on a 256 GiB host reports 512 MiB.

use std::fs;
use std::path::{Path, PathBuf};

use super::procfs::CgroupMembership;

/// v1 reports "no limit" as a huge page-aligned number; anything above this is unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// A resolved cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// Unified hierarchy: the cgroup's directory and the root it was resolved under.
    V2 {
        /// The cgroup's directory.
        dir: PathBuf,
        /// The cgroup filesystem root (ancestors are walked up to it).
        root: PathBuf,
    },
    /// v1: one directory per controller (those that were found).
    V1 {
        /// `memory` controller directory.
        memory: Option<PathBuf>,
        /// `cpu` controller directory.
        cpu: Option<PathBuf>,
        /// `cpuacct` controller directory.
        cpuacct: Option<PathBuf>,
        /// `blkio` controller directory.
        blkio: Option<PathBuf>,
    },
}

/// Usage and limits read from a cgroup; `None` where the file is absent or unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CgroupReading {
    /// Memory limit in bytes (`None`: unlimited or unknown).
    pub memory_limit: Option<u64>,
    /// CPU limit in cores (`None`: unlimited or unknown).
    pub cpu_limit: Option<f64>,
    /// Working set: usage minus inactive file cache, as the kubelet counts it.
    pub memory_working_set: Option<u64>,
    /// CPU time used, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Bytes read from block devices.
    pub read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub written_bytes: Option<u64>,
}

impl Cgroup {
    /// Resolves a process's cgroup under `root`. Inside a cgroup namespace the path may not exist
    /// under the mount (the mount *is* the cgroup), so the root itself is used then.
    pub fn resolve(root: &Path, membership: &CgroupMembership) -> Option<Cgroup> {
        if root.join("cgroup.controllers").exists() {
            let path = membership.unified.as_deref()?;
            let candidate = root.join(path.trim_start_matches('/'));
            let dir = if candidate.is_dir() && !path.contains("..") {
                candidate
            } else {
                root.to_path_buf()
            };
            return Some(Cgroup::V2 {
                dir,
                root: root.to_path_buf(),
            });
        }
        let find = |controller: &str, mounts: &[&str]| -> Option<PathBuf> {
            let path = membership.v1_path(controller)?;
            mounts.iter().find_map(|m| {
                let base = root.join(m);
                let nested = base.join(path.trim_start_matches('/'));
                if nested.is_dir() && !path.contains("..") {
                    Some(nested)
                } else if base.is_dir() {
                    Some(base)
                } else {
                    None
                }
            })
        };
        let cgroup = Cgroup::V1 {
            memory: find("memory", &["memory"]),
            cpu: find("cpu", &["cpu,cpuacct", "cpu", "cpuacct,cpu"]),
            cpuacct: find("cpuacct", &["cpu,cpuacct", "cpuacct", "cpuacct,cpu"]),
            blkio: find("blkio", &["blkio"]),
        };
        match &cgroup {
            Cgroup::V1 {
                memory: None,
                cpu: None,
                cpuacct: None,
                blkio: None,
            } => None,
            _ => Some(cgroup),
        }
    }

    /// Reads limits and usage.
    pub fn read(&self) -> CgroupReading {
        match self {
            Cgroup::V2 { dir, root } => read_v2(dir, root),
            Cgroup::V1 {
                memory,
                cpu,
                cpuacct,
                blkio,
            } => read_v1(
                memory.as_deref(),
                cpu.as_deref(),
                cpuacct.as_deref(),
                blkio.as_deref(),
            ),
        }
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// A `key value` line of a flat-keyed file (`memory.stat`, `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_ascii_whitespace();
        (parts.next()? == key)
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// `memory.max`: bytes or `max`.
pub fn parse_memory_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
}

/// `cpu.max`: `<quota|max> <period>` → cores.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_ascii_whitespace();
    let quota = parts.next()?;
    let period: f64 = parts.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let quota: f64 = quota.parse().ok()?;
    (quota > 0.0).then(|| quota / period)
}

/// `io.stat`: sums `rbytes=` and `wbytes=` over devices.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for token in text.split_ascii_whitespace() {
        if let Some(v) = token.strip_prefix("rbytes=").and_then(|v| v.parse::<u64>().ok()) {
            read = read.saturating_add(v);
        } else if let Some(v) = token.strip_prefix("wbytes=").and_then(|v| v.parse::<u64>().ok()) {
            written = written.saturating_add(v);
        }
    }
    (read, written)
}

/// `blkio.throttle.io_service_bytes`: sums the per-device `Read` and `Write` lines.
pub fn parse_blkio_service_bytes(text: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for line in text.lines() {
        let parts: Vec<&str> = line.split_ascii_whitespace().collect();
        if let [_device, op, n] = parts[..]
            && let Ok(n) = n.parse::<u64>()
        {
            match op {
                "Read" => read = read.saturating_add(n),
                "Write" => written = written.saturating_add(n),
                _ => {}
            }
        }
    }
    (read, written)
}

/// Directories from `dir` up to `root`, inclusive.
fn ancestors<'a>(dir: &'a Path, root: &'a Path) -> impl Iterator<Item = &'a Path> {
    dir.ancestors().take_while(move |p| p.starts_with(root))
}

fn min_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y < x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn read_v2(dir: &Path, root: &Path) -> CgroupReading {
    let mut r = CgroupReading::default();
    for d in ancestors(dir, root) {
        r.memory_limit = min_opt(
            r.memory_limit,
            read(&d.join("memory.max")).and_then(|t| parse_memory_max(&t)),
        );
        r.cpu_limit = min_opt(
            r.cpu_limit,
            read(&d.join("cpu.max")).and_then(|t| parse_cpu_max(&t)),
        );
    }
    if let Some(current) = read_u64(&dir.join("memory.current")) {
        let inactive = read(&dir.join("memory.stat"))
            .and_then(|t| keyed(&t, "inactive_file"))
            .unwrap_or(0);
        r.memory_working_set = Some(current.saturating_sub(inactive));
    }
    r.cpu_seconds = read(&dir.join("cpu.stat"))
        .and_then(|t| keyed(&t, "usage_usec"))
        .map(|us| us as f64 / 1e6);
    if let Some(text) = read(&dir.join("io.stat")) {
        let (rb, wb) = parse_io_stat(&text);
        r.read_bytes = Some(rb);
        r.written_bytes = Some(wb);
    }
    r
}

fn read_v1(
    memory: Option<&Path>,
    cpu: Option<&Path>,
    cpuacct: Option<&Path>,
    blkio: Option<&Path>,
) -> CgroupReading {
    let mut r = CgroupReading::default();
    if let Some(m) = memory {
        let stat = read(&m.join("memory.stat"));
        let own = read_u64(&m.join("memory.limit_in_bytes"));
        let hierarchical = stat
            .as_deref()
            .and_then(|t| keyed(t, "hierarchical_memory_limit"));
        r.memory_limit = min_opt(own, hierarchical).filter(|l| *l < V1_UNLIMITED);
        if let Some(usage) = read_u64(&m.join("memory.usage_in_bytes")) {
            let inactive = stat
                .as_deref()
                .and_then(|t| keyed(t, "total_inactive_file"))
                .unwrap_or(0);
            r.memory_working_set = Some(usage.saturating_sub(inactive));
        }
    }
    if let Some(c) = cpu {
        let quota = read(&c.join("cpu.cfs_quota_us")).and_then(|t| t.trim().parse::<i64>().ok());
        let period = read_u64(&c.join("cpu.cfs_period_us"));
        if let (Some(q), Some(p)) = (quota, period)
            && q > 0
            && p > 0
        {
            r.cpu_limit = Some(q as f64 / p as f64);
        }
    }
    if let Some(c) = cpuacct {
        r.cpu_seconds = read_u64(&c.join("cpuacct.usage")).map(|ns| ns as f64 / 1e9);
    }
    if let Some(b) = blkio
        && let Some(text) = read(&b.join("blkio.throttle.io_service_bytes"))
    {
        let (rb, wb) = parse_blkio_service_bytes(&text);
        r.read_bytes = Some(rb);
        r.written_bytes = Some(wb);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_and_memory_max_parse() {
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_memory_max("536870912\n"), Some(536_870_912));
        assert_eq!(parse_memory_max("max\n"), None);
    }

    #[test]
    fn io_counters_sum_over_devices() {
        assert_eq!(
            parse_io_stat("8:0 rbytes=10 wbytes=20 rios=1\n8:16 rbytes=5 wbytes=1\n"),
            (15, 21)
        );
        assert_eq!(
            parse_blkio_service_bytes("8:0 Read 10\n8:0 Write 4\n8:0 Total 14\nTotal 14\n"),
            (10, 4)
        );
    }

    #[test]
    fn a_v2_limit_is_the_tightest_on_the_path_to_the_root() {
        let root = tempfile::tempdir().unwrap();
        let leaf = root.path().join("kubepods/pod1/ctr");
        fs::create_dir_all(&leaf).unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory io").unwrap();
        fs::write(root.path().join("kubepods/memory.max"), "1073741824").unwrap();
        fs::write(root.path().join("kubepods/pod1/memory.max"), "536870912").unwrap();
        fs::write(leaf.join("memory.max"), "max").unwrap();
        fs::write(leaf.join("cpu.max"), "200000 100000").unwrap();
        let membership = super::super::procfs::parse_cgroup_membership("0::/kubepods/pod1/ctr\n");
        let cg = Cgroup::resolve(root.path(), &membership).unwrap();
        let r = cg.read();
        assert_eq!(r.memory_limit, Some(536_870_912));
        assert_eq!(r.cpu_limit, Some(2.0));
    }

    #[test]
    fn v1_unlimited_is_no_limit() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory");
        fs::create_dir_all(&mem).unwrap();
        fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let membership = super::super::procfs::parse_cgroup_membership("5:memory:/docker/abc\n");
        let r = Cgroup::resolve(root.path(), &membership).unwrap().read();
        assert_eq!(r.memory_limit, None);
    }
}
