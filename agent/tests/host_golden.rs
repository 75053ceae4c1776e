//! The host collector over fixture `/proc` and cgroup trees: two samples five seconds apart, the
//! second's exposition compared with a golden file. `UPDATE_GOLDEN=1` rewrites the golden files.

// Test helpers outside #[test] functions unwrap too: a failure stops the test where it happened.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use flmon_agent::collectors::host::{HostCollector, HostConfig};
use flmon_agent::collectors::{Collector, SampleTime};
use flmon_agent::config::{ContainerLimits, HostScope};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_tree(from: &Path, to: &Path) {
    if !from.exists() {
        return;
    }
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Samples the `t0` tree, overlays `t1`, samples again 5 s later; returns both expositions.
fn two_samples(case: &str, scope: HostScope, limits: ContainerLimits) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join(case).join("t0"), dir.path());
    let mut collector = HostCollector::new(HostConfig {
        proc_root: dir.path().join("proc"),
        cgroup_root: dir.path().join("cgroup"),
        scope,
        self_pid: 30,
        clock_ticks: 100.0,
        limits,
        filesystems: Vec::new(),
    });
    let first = collector.sample(SampleTime {
        monotonic: 100.0,
        unix: 1_700_000_000.0,
    });
    assert_eq!(first.error, None);
    copy_tree(&fixtures().join(case).join("t1"), dir.path());
    let second = collector.sample(SampleTime {
        monotonic: 105.0,
        unix: 1_700_000_005.0,
    });
    assert_eq!(second.error, None);
    (first.text, second.text)
}

fn assert_golden(case: &str, text: &str) {
    let golden = fixtures().join(case).join("metrics.golden");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&golden, text).unwrap();
    }
    let expected = fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        expected == text,
        "{case}: /metrics differs from {}:\n{text}",
        golden.display()
    );
}

fn trainer_limits() -> ContainerLimits {
    let vars = [
        ("FLMON_LIMIT_CPU_TRAINER", "2000"),
        ("FLMON_LIMIT_MEMORY_TRAINER", "536870912"),
    ];
    ContainerLimits::from_vars(vars.map(|(k, v)| (k.to_owned(), v.to_owned()))).0
}

#[test]
fn pod_scope_sums_the_app_processes_against_the_downward_api_limits() {
    let (first, second) = two_samples("pod", HostScope::Pod, trainer_limits());
    assert!(
        !first.contains("fl_cpu_usage_percent"),
        "no CPU percentage before a second sample:\n{first}"
    );
    assert_golden("pod", &second);
    // pid 7 used 4 s, pid 12 0.5 s, the new pid 50 1 s: 1.1 cores of a 2-core limit.
    assert!(second.contains("fl_cpu_usage_percent 55\n"));
    // 256 + 64 + 32 MiB resident against 512 MiB; the agent, pause and the zombie are not counted.
    assert!(second.contains("fl_memory_usage_percent 68.75\n"));
    assert!(second.contains("flmon_memory_limit_bytes 536870912\n"));
}

#[test]
fn a_512_mib_container_limit_on_a_256_gib_host_reports_512_mib_cgroup_v2() {
    let (first, second) = two_samples("cgroup-v2", HostScope::Cgroup, ContainerLimits::default());
    assert!(!first.contains("fl_cpu_usage_percent"));
    assert_golden("cgroup-v2", &second);
    assert!(second.contains("flmon_memory_limit_bytes 536870912\n"));
    assert!(second.contains("flmon_node_memory_bytes 274877906944\n"));
    assert!(second.contains("flmon_limit_info{resource=\"memory\",source=\"cgroup\"} 1\n"));
    // 3 s of CPU in 5 s against 1.5 cores; working set 384 MiB - 64 MiB inactive file of 512 MiB.
    assert!(second.contains("fl_cpu_usage_percent 40\n"));
    assert!(second.contains("fl_memory_usage_percent 62.5\n"));
}

#[test]
fn a_512_mib_container_limit_on_a_256_gib_host_reports_512_mib_cgroup_v1() {
    let (_, second) = two_samples("cgroup-v1", HostScope::Cgroup, ContainerLimits::default());
    assert_golden("cgroup-v1", &second);
    assert!(second.contains("flmon_memory_limit_bytes 536870912\n"));
    assert!(second.contains("fl_cpu_usage_percent 40\n"));
}

#[test]
fn without_a_shared_process_namespace_pod_usage_is_absent_not_zero() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("pod/t0"), dir.path());
    for pid in ["1", "7", "12", "41"] {
        fs::remove_dir_all(dir.path().join("proc").join(pid)).unwrap();
    }
    let mut collector = HostCollector::new(HostConfig {
        proc_root: dir.path().join("proc"),
        cgroup_root: dir.path().join("cgroup"),
        scope: HostScope::Pod,
        self_pid: 30,
        clock_ticks: 100.0,
        limits: trainer_limits(),
        filesystems: Vec::new(),
    });
    for t in [0.0, 5.0] {
        let out = collector.sample(SampleTime {
            monotonic: t,
            unix: t,
        });
        assert!(!out.text.contains("fl_cpu_usage_percent") && !out.text.contains("fl_memory_usage_percent"));
        assert!(out.text.contains("flmon_host_processes 0\n"));
    }
}
