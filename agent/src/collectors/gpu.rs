//! The GPU collector: NVML (through nvml-wrapper, loaded at run time) behind [`GpuBackend`], so
//! tests use a fake. A reading NVML marks NotSupported (MIG instances, some boards) is absent, not
//! zero. Without the NVML library the agent logs one line, exports `flmon_gpu_up{reason=…} 0`, and
//! every other collector carries on.
//!
//! Which GPUs are this pod's (`NodeVisible`): the webhook makes the node's GPUs visible to the agent
//! (`NVIDIA_VISIBLE_DEVICES=all`, no GPU requested), and the agent reports a GPU once one of its
//! compute processes is a process of this pod — a pid present in the pod's shared process
//! namespace. NVIDIA drivers that translate pids into the caller's pid namespace report the app's
//! pids as the agent sees them; processes of other pods are not in that namespace. A GPU stays
//! attributed for the agent's lifetime, as device-plugin assignments do not change while a pod
//! runs. Before the app creates a CUDA context no GPU is attributed and `flmon_gpu_up` says so.
//! In `Claim` mode the pod's DRA claim is shared with the agent, so every visible GPU is the pod's.
//!
//! MIG: a card in MIG mode is read through its MIG devices (handles by slot, as nvml.h says
//! per-instance memory and processes must be read), each reported as a GPU of its own: its
//! `MIG-…` uuid, the card's index, and NVML's name for it (`… MIG 1g.18gb`). Utilization,
//! temperature and power exist only for the whole card. In `NodeVisible` and `Claim` a card in MIG
//! mode is never the pod's itself (other tenants share it); its devices are attributed one by one.
//! `All` reports the cards as well.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::PathBuf;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;

use super::{Collector, HistoryUpdate, Output, SampleTime};
use crate::config::{Config, GpuMode};
use crate::exposition::TextWriter;
use crate::history::GpuRecord;
use crate::metrics;

/// GPUs exported; more are dropped and counted.
const MAX_GPUS: usize = 64;

/// One GPU's readings; `None` where NVML does not support the query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuReading {
    /// NVML index.
    pub index: u32,
    /// NVML uuid (`GPU-…` or `MIG-…`).
    pub uuid: String,
    /// Model name.
    pub model: String,
    /// Utilization in percent.
    pub utilization_percent: Option<u32>,
    /// Memory used in bytes.
    pub memory_used: Option<u64>,
    /// Memory installed in bytes.
    pub memory_total: Option<u64>,
    /// Core temperature in °C.
    pub temperature: Option<u32>,
    /// Power draw in milliwatts.
    pub power_milliwatts: Option<u32>,
    /// Pids of compute processes, as the driver reports them.
    pub compute_pids: Option<Vec<u32>>,
    /// A card in MIG mode: its MIG devices follow as readings of their own.
    pub mig_mode: bool,
}

/// Why NVML cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// `libnvidia-ml.so` is not there (no NVIDIA runtime, or not a GPU node).
    #[error("the NVML library is not available: {0}")]
    LibraryNotFound(String),
    /// The library is there but NVML did not start (driver not loaded, no permission).
    #[error("NVML did not initialize: {0}")]
    InitFailed(String),
    /// A query failed for the whole node.
    #[error("NVML query failed: {0}")]
    Query(String),
}

impl GpuError {
    /// The `reason` label of `flmon_gpu_up`.
    pub fn reason(&self) -> &'static str {
        match self {
            GpuError::LibraryNotFound(_) => "nvml_library_not_found",
            GpuError::InitFailed(_) => "nvml_init_failed",
            GpuError::Query(_) => "nvml_query_failed",
        }
    }
}

/// Access to the GPUs.
pub trait GpuBackend: Send {
    /// Reads every visible GPU.
    ///
    /// # Errors
    /// [`GpuError::Query`] when no GPU can be read at all.
    fn read(&mut self) -> Result<Vec<GpuReading>, GpuError>;

    /// Releases the library.
    fn shutdown(&mut self) {}
}

/// The real backend.
pub struct NvmlBackend {
    nvml: Option<Nvml>,
}

impl NvmlBackend {
    /// Loads and initializes NVML (`library`: an explicit path, else the loader's search).
    ///
    /// # Errors
    /// [`GpuError::LibraryNotFound`] or [`GpuError::InitFailed`].
    pub fn init(library: Option<&std::path::Path>) -> Result<Self, GpuError> {
        let result = match library {
            Some(path) => Nvml::builder().lib_path(path.as_os_str()).init(),
            None => Nvml::init(),
        };
        match result {
            Ok(nvml) => Ok(NvmlBackend { nvml: Some(nvml) }),
            Err(
                e @ (NvmlError::LibloadingError(_)
                | NvmlError::LibraryNotFound
                | NvmlError::FailedToLoadSymbol(_)),
            ) => Err(GpuError::LibraryNotFound(e.to_string())),
            Err(e) => Err(GpuError::InitFailed(e.to_string())),
        }
    }
}

fn supported<T>(r: Result<T, NvmlError>) -> Option<T> {
    // NotSupported (and any per-field failure) is absence: never report a made-up zero.
    r.ok()
}

/// One device's readings: a card, or a MIG device under card `index`.
fn reading(device: &nvml_wrapper::Device<'_>, index: u32, uuid: String) -> GpuReading {
    let memory = supported(device.memory_info());
    GpuReading {
        index,
        uuid,
        model: supported(device.name()).unwrap_or_default(),
        utilization_percent: supported(device.utilization_rates()).map(|u| u.gpu),
        memory_used: memory.as_ref().map(|m| m.used),
        memory_total: memory.as_ref().map(|m| m.total),
        temperature: supported(device.temperature(TemperatureSensor::Gpu)),
        power_milliwatts: supported(device.power_usage()),
        compute_pids: supported(device.running_compute_processes())
            .map(|ps| ps.into_iter().map(|p| p.pid).collect()),
        mig_mode: false,
    }
}

impl GpuBackend for NvmlBackend {
    fn read(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        let nvml = self
            .nvml
            .as_ref()
            .ok_or_else(|| GpuError::Query("NVML was shut down".into()))?;
        let count = nvml.device_count().map_err(|e| GpuError::Query(e.to_string()))?;
        let mut out = Vec::new();
        for index in 0..count {
            // A lost or inaccessible GPU is skipped; the others are still reported.
            let Ok(device) = nvml.device_by_index(index) else {
                continue;
            };
            let Ok(uuid) = device.uuid() else { continue };
            // Zero when MIG is off or not supported; else the slots to look in.
            let slots = device.mig_device_count().unwrap_or(0);
            out.push(GpuReading {
                mig_mode: slots > 0,
                ..reading(&device, index, uuid)
            });
            for slot in 0..slots {
                // An empty slot answers NotFound.
                let Ok(mig) = device.mig_device_by_index(slot) else {
                    continue;
                };
                let Ok(uuid) = mig.uuid() else { continue };
                out.push(reading(&mig, index, uuid));
            }
        }
        Ok(out)
    }

    fn shutdown(&mut self) {
        if let Some(nvml) = self.nvml.take()
            && let Err(e) = nvml.shutdown()
        {
            tracing::warn!(error = %e, "NVML shutdown failed");
        }
    }
}

/// A backend with canned readings, for tests and for hosts without GPUs.
pub struct FakeBackend {
    /// What [`GpuBackend::read`] returns.
    pub readings: Result<Vec<GpuReading>, GpuError>,
}

impl GpuBackend for FakeBackend {
    fn read(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        self.readings.clone()
    }
}

/// The GPU collector.
pub struct GpuCollector {
    mode: GpuMode,
    backend: Result<Box<dyn GpuBackend>, GpuError>,
    proc_root: PathBuf,
    attributed: BTreeSet<String>,
    announced: Option<&'static str>,
}

/// Builds the GPU collector; NVML is loaded here, and its absence is logged once.
///
/// # Errors
/// Never; a missing NVML is a state of the collector, not an error.
pub fn build(config: &Config) -> Result<Option<Box<dyn Collector>>, String> {
    let mode = config.effective_gpu_mode();
    let backend: Result<Box<dyn GpuBackend>, GpuError> = if mode == GpuMode::Off {
        Err(GpuError::InitFailed("GPU mode is Off".into()))
    } else {
        NvmlBackend::init(config.nvml_library.as_deref()).map(|b| Box::new(b) as Box<dyn GpuBackend>)
    };
    Ok(Some(Box::new(GpuCollector::new(
        mode,
        backend,
        config.proc_root.clone(),
    ))))
}

impl GpuCollector {
    /// A collector over `backend` (an `Err` when NVML could not be loaded).
    pub fn new(mode: GpuMode, backend: Result<Box<dyn GpuBackend>, GpuError>, proc_root: PathBuf) -> Self {
        GpuCollector {
            mode,
            backend,
            proc_root,
            attributed: BTreeSet::new(),
            announced: None,
        }
    }

    /// Pids visible in this pod's process namespace.
    fn pod_pids(&self) -> HashSet<u32> {
        fs::read_dir(&self.proc_root)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Says once in the log why GPU metrics are absent (or that they are back).
    fn announce(&mut self, reason: &'static str, detail: &str) {
        if self.announced != Some(reason) {
            if reason == "ok" {
                tracing::info!(mode = self.mode.as_str(), "GPU metrics are exported");
            } else {
                tracing::info!(
                    mode = self.mode.as_str(),
                    reason,
                    "GPU metrics are absent: {detail}"
                );
            }
            self.announced = Some(reason);
        }
    }

    fn mine(&mut self, readings: Vec<GpuReading>) -> Vec<GpuReading> {
        match self.mode {
            GpuMode::Off => Vec::new(),
            GpuMode::All => readings,
            // A card in MIG mode is shared with other tenants; the claim's MIG device is reported.
            GpuMode::Claim => readings.into_iter().filter(|r| !r.mig_mode).collect(),
            GpuMode::NodeVisible => {
                let pids = self.pod_pids();
                for r in readings.iter().filter(|r| !r.mig_mode) {
                    if r.compute_pids
                        .as_ref()
                        .is_some_and(|ps| ps.iter().any(|p| pids.contains(p)))
                    {
                        self.attributed.insert(r.uuid.clone());
                    }
                }
                readings
                    .into_iter()
                    .filter(|r| self.attributed.contains(&r.uuid))
                    .collect()
            }
        }
    }
}

impl Collector for GpuCollector {
    fn sample(&mut self, _now: SampleTime) -> Output {
        let mode = self.mode.as_str();
        let (reason, detail, gpus, error) = if self.mode == GpuMode::Off {
            ("gpu_mode_off", "the GPU mode is Off".to_owned(), Vec::new(), None)
        } else {
            match self.backend.as_mut().map(|b| b.read()) {
                Err(e) => (e.reason(), e.to_string(), Vec::new(), None),
                Ok(Err(e)) => (e.reason(), e.to_string(), Vec::new(), Some(e.to_string())),
                Ok(Ok(readings)) if readings.is_empty() => {
                    ("no_gpus_visible", "NVML sees no GPU".to_owned(), Vec::new(), None)
                }
                Ok(Ok(readings)) => {
                    let gpus = self.mine(readings);
                    if gpus.is_empty() {
                        let detail = "no GPU runs a compute process of this pod yet".to_owned();
                        ("no_pod_processes_on_gpus", detail, gpus, None)
                    } else {
                        ("ok", String::new(), gpus, None)
                    }
                }
            }
        };
        self.announce(reason, &detail);
        let dropped = gpus.len().saturating_sub(MAX_GPUS) as u64;
        let gpus = &gpus[..gpus.len().min(MAX_GPUS)];
        let mut w = TextWriter::new();
        w.family(&metrics::GPU_UP, |f| {
            f.sample(
                &[("mode", mode), ("reason", reason)],
                if reason == "ok" { 1.0 } else { 0.0 },
            );
        });
        type Pick = fn(&GpuReading) -> Option<f64>;
        let families: [(&metrics::MetricDef, Pick); 5] = [
            (&metrics::GPU_UTILIZATION, |g| {
                g.utilization_percent.map(|u| f64::from(u) / 100.0)
            }),
            (&metrics::GPU_MEMORY_USED, |g| g.memory_used.map(|m| m as f64)),
            (&metrics::GPU_MEMORY_TOTAL, |g| g.memory_total.map(|m| m as f64)),
            (&metrics::GPU_TEMPERATURE, |g| g.temperature.map(f64::from)),
            (&metrics::GPU_POWER, |g| {
                g.power_milliwatts.map(|mw| f64::from(mw) / 1000.0)
            }),
        ];
        for (def, pick) in families {
            w.family(def, |f| {
                for g in gpus {
                    if let Some(v) = pick(g) {
                        let index = g.index.to_string();
                        f.sample(&[("gpu", &index), ("uuid", &g.uuid), ("model", &g.model)], v);
                    }
                }
            });
        }
        let records = gpus
            .iter()
            .map(|g| GpuRecord {
                uuid: g.uuid.clone(),
                index: g.index,
                utilization_percent: g.utilization_percent.map(f64::from),
                memory_used_bytes: g.memory_used,
                memory_total_bytes: g.memory_total,
            })
            .collect();
        Output {
            text: w.finish(),
            error,
            history: vec![HistoryUpdate::Gpus(records)],
            dropped: if dropped > 0 {
                vec![(metrics::GPU_UTILIZATION.name, dropped)]
            } else {
                Vec::new()
            },
        }
    }

    fn shutdown(&mut self) {
        if let Ok(backend) = self.backend.as_mut() {
            backend.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SampleTime {
        SampleTime {
            monotonic: 0.0,
            unix: 0.0,
        }
    }

    fn gpu(index: u32, pids: &[u32]) -> GpuReading {
        GpuReading {
            index,
            uuid: format!("GPU-{index}"),
            model: "NVIDIA H100 80GB HBM3".into(),
            utilization_percent: Some(87),
            memory_used: Some(1 << 30),
            memory_total: Some(80 << 30),
            temperature: None,
            power_milliwatts: Some(312_500),
            compute_pids: Some(pids.to_vec()),
            mig_mode: false,
        }
    }

    fn fake(readings: Result<Vec<GpuReading>, GpuError>) -> Result<Box<dyn GpuBackend>, GpuError> {
        Ok(Box::new(FakeBackend { readings }))
    }

    #[test]
    fn no_nvml_exports_up_zero_with_the_reason_and_nothing_else() {
        let mut c = GpuCollector::new(
            GpuMode::NodeVisible,
            Err(GpuError::LibraryNotFound("libnvidia-ml.so: cannot open".into())),
            "/nonexistent".into(),
        );
        let out = c.sample(now());
        assert_eq!(
            out.text,
            "# HELP flmon_gpu_up 1 when per-GPU metrics are exported; 0 otherwise, with the reason in the reason label.\n\
             # TYPE flmon_gpu_up gauge\n\
             flmon_gpu_up{mode=\"NodeVisible\",reason=\"nvml_library_not_found\"} 0\n"
        );
        assert_eq!(out.error, None, "a node without GPUs is not a failing collector");
    }

    #[test]
    fn not_supported_readings_are_absent_not_zero() {
        let mut c = GpuCollector::new(GpuMode::All, fake(Ok(vec![gpu(0, &[])])), "/nonexistent".into());
        let text = c.sample(now()).text;
        assert!(text.contains(
            "flmon_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-0\",model=\"NVIDIA H100 80GB HBM3\"} 0.87"
        ));
        assert!(text.contains(
            "flmon_gpu_power_watts{gpu=\"0\",uuid=\"GPU-0\",model=\"NVIDIA H100 80GB HBM3\"} 312.5"
        ));
        assert!(!text.contains("flmon_gpu_temperature_celsius"), "{text}");
    }

    #[test]
    fn node_visible_reports_only_gpus_running_this_pods_processes_and_keeps_them() {
        let proc_root = tempfile::tempdir().unwrap();
        for pid in ["1", "7", "12"] {
            fs::create_dir(proc_root.path().join(pid)).unwrap();
        }
        let mut c = GpuCollector::new(
            GpuMode::NodeVisible,
            fake(Ok(vec![gpu(0, &[4242]), gpu(1, &[7]), gpu(2, &[])])),
            proc_root.path().into(),
        );
        let text = c.sample(now()).text;
        assert!(text.contains("uuid=\"GPU-1\""));
        assert!(!text.contains("uuid=\"GPU-0\"") && !text.contains("uuid=\"GPU-2\""));
        assert!(text.contains("flmon_gpu_up{mode=\"NodeVisible\",reason=\"ok\"} 1"));
        // Between rounds the process may hold no context; the GPU is still the pod's.
        c.backend = fake(Ok(vec![gpu(0, &[4242]), gpu(1, &[]), gpu(2, &[])]));
        assert!(c.sample(now()).text.contains("uuid=\"GPU-1\""));
    }

    #[test]
    fn a_card_in_mig_mode_is_never_the_pods_but_its_mig_device_is() {
        let proc_root = tempfile::tempdir().unwrap();
        fs::create_dir(proc_root.path().join("7")).unwrap();
        // A privileged agent sees the card's aggregate process list, the pod's pid among them.
        let card = GpuReading {
            mig_mode: true,
            ..gpu(0, &[7, 4242])
        };
        let mine = GpuReading {
            uuid: "MIG-mine".into(),
            utilization_percent: None,
            ..gpu(0, &[7])
        };
        let theirs = GpuReading {
            uuid: "MIG-theirs".into(),
            ..gpu(0, &[4242])
        };
        let readings = vec![card, mine, theirs];
        let mut c = GpuCollector::new(
            GpuMode::NodeVisible,
            fake(Ok(readings.clone())),
            proc_root.path().into(),
        );
        let text = c.sample(now()).text;
        assert!(text.contains("uuid=\"MIG-mine\""), "{text}");
        assert!(
            !text.contains("uuid=\"GPU-0\"") && !text.contains("MIG-theirs"),
            "{text}"
        );
        let mut c = GpuCollector::new(GpuMode::Claim, fake(Ok(readings.clone())), "/nonexistent".into());
        let text = c.sample(now()).text;
        assert!(
            text.contains("MIG-mine") && !text.contains("uuid=\"GPU-0\""),
            "{text}"
        );
        let mut c = GpuCollector::new(GpuMode::All, fake(Ok(readings)), "/nonexistent".into());
        assert!(c.sample(now()).text.contains("uuid=\"GPU-0\""));
    }

    #[test]
    fn node_visible_before_the_app_uses_a_gpu_says_why() {
        let mut c = GpuCollector::new(
            GpuMode::NodeVisible,
            fake(Ok(vec![gpu(0, &[4242])])),
            "/nonexistent".into(),
        );
        let text = c.sample(now()).text;
        assert!(text.contains("reason=\"no_pod_processes_on_gpus\"} 0"), "{text}");
        assert!(!text.contains("flmon_gpu_utilization_ratio"));
    }

    #[test]
    fn gpu_mode_off_is_reported() {
        let mut c = GpuCollector::new(GpuMode::Off, Err(GpuError::InitFailed("off".into())), "/x".into());
        assert!(
            c.sample(now())
                .text
                .contains("flmon_gpu_up{mode=\"Off\",reason=\"gpu_mode_off\"} 0")
        );
    }
}
