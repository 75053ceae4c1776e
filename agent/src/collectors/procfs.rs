//! Parsers for `/proc` files. They take the file's text, so they are tested on fixtures and never
//! panic on odd input (a field that is missing or not a number makes the value unknown).

/// What the agent reads from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat {
    /// Command name (inside the parentheses; may contain spaces and parentheses).
    pub comm: String,
    /// State letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// User-mode CPU time in clock ticks.
    pub utime: u64,
    /// Kernel-mode CPU time in clock ticks.
    pub stime: u64,
    /// Start time after boot in clock ticks (with the pid, identifies a process across samples).
    pub starttime: u64,
}

/// Parses `/proc/<pid>/stat`. The command name is taken up to the *last* `)`, since it may
/// itself contain `)`.
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    // After the comm: state(3) ppid(4) … utime(14) stime(15) … starttime(22), 1-based in proc(5).
    let field = |n: usize| fields.get(n - 3).copied();
    Some(PidStat {
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        starttime: field(22)?.parse().ok()?,
    })
}

/// A `key: value kB` field of `/proc/<pid>/status` or `/proc/meminfo`, in bytes.
pub fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = rest.split_ascii_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") => n.checked_mul(1024),
            None => Some(n),
            Some(_) => None,
        }
    })
}

/// `read_bytes` and `write_bytes` of `/proc/<pid>/io`.
pub fn parse_pid_io(text: &str) -> Option<(u64, u64)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse::<u64>().ok())
    };
    Some((field("read_bytes")?, field("write_bytes")?))
}

/// The aggregate CPU line and the CPU count of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Number of `cpuN` lines.
    pub cpus: u32,
    /// Busy ticks over all CPUs (everything but idle and iowait; guest time is already in user).
    pub busy: u64,
    /// All ticks over all CPUs.
    pub total: u64,
}

/// Parses `/proc/stat`.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let mut times = CpuTimes::default();
    let mut seen_total = false;
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        match parts.next() {
            Some("cpu") => {
                let v: Vec<u64> = parts.take(8).filter_map(|p| p.parse().ok()).collect();
                if v.len() < 4 {
                    return None;
                }
                // user nice system idle iowait irq softirq steal
                let idle = v[3] + v.get(4).copied().unwrap_or(0);
                times.total = v.iter().sum();
                times.busy = times.total.saturating_sub(idle);
                seen_total = true;
            }
            Some(name) if name.starts_with("cpu") && name[3..].bytes().all(|b| b.is_ascii_digit()) => {
                times.cpus += 1;
            }
            _ => {}
        }
    }
    seen_total.then_some(times)
}

/// Counters of one network device from `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetDev {
    /// Device name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 counters`).
pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let v: Vec<u64> = counters
                .split_ascii_whitespace()
                .map(|c| c.parse().ok())
                .collect::<Option<_>>()?;
            if v.len() < 16 {
                return None;
            }
            Some(NetDev {
                name: name.trim().to_owned(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
            })
        })
        .collect()
}

/// Where a process sits in the cgroup hierarchies, from `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupMembership {
    /// The unified (v2) path, from the `0::<path>` line.
    pub unified: Option<String>,
    /// v1 paths by controller (`memory`, `cpu`, `cpuacct`, `blkio`, …).
    pub v1: Vec<(String, String)>,
}

impl CgroupMembership {
    /// The v1 path of `controller`.
    pub fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, p)| p.as_str())
    }
}

/// Parses `/proc/<pid>/cgroup` (`hierarchy-id:controllers:path` per line).
pub fn parse_cgroup_membership(text: &str) -> CgroupMembership {
    let mut m = CgroupMembership::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            m.unified = Some(path.to_owned());
        } else {
            for c in controllers.split(',').filter(|c| !c.is_empty()) {
                m.v1.push((c.trim_start_matches("name=").to_owned(), path.to_owned()));
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_and_spaces_in_the_command_parses() {
        let text = "42 (python (train) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 12345 0 0";
        let s = parse_pid_stat(text).unwrap();
        assert_eq!(s.comm, "python (train) x");
        assert_eq!(
            (s.state, s.ppid, s.utime, s.stime, s.starttime),
            ('S', 1, 250, 50, 12345)
        );
        assert_eq!(parse_pid_stat("42 (x) S 1"), None);
        assert_eq!(parse_pid_stat(")("), None);
    }

    #[test]
    fn meminfo_and_status_fields_are_bytes() {
        assert_eq!(
            kb_field("MemTotal:       16384 kB\nMemAvailable: 8 kB\n", "MemAvailable"),
            Some(8192)
        );
        assert_eq!(kb_field("VmRSS:\t  100 kB\n", "VmRSS"), Some(102_400));
        assert_eq!(kb_field("VmRSS: x kB\n", "VmRSS"), None);
    }

    #[test]
    fn proc_stat_counts_cpus_and_busy_time() {
        let t = parse_stat(
            "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0\ncpu1 50 0 25 400 25 0 0 0\nintr 1\n",
        )
        .unwrap();
        assert_eq!(
            t,
            CpuTimes {
                cpus: 2,
                busy: 150,
                total: 1000
            }
        );
    }

    #[test]
    fn net_dev_skips_headers() {
        let text = "Inter-|   Receive\n face |bytes\n  eth0: 10 2 0 0 0 0 0 0 20 3 1 0 0 0 0 0\n";
        let d = parse_net_dev(text);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].rx_bytes, d[0].tx_bytes, d[0].tx_errors), (10, 20, 1));
    }

    #[test]
    fn cgroup_membership_reads_v1_and_v2_lines() {
        let m =
            parse_cgroup_membership("12:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/kubepods/pod1/c1\n0::/\n");
        assert_eq!(m.unified.as_deref(), Some("/"));
        assert_eq!(m.v1_path("cpuacct"), Some("/kubepods/pod1/c1"));
        assert_eq!(m.v1_path("memory"), Some("/kubepods/pod1/c1"));
    }
}
