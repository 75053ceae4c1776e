//! Exercises the agent's real NVML path and prints what it saw: every GPU's readings as NVML
//! reports them, then the GPU collector's `/metrics` section in `All` and `NodeVisible` modes.
//! Run by `agent/scripts/gpu-check.sh` on a machine with an NVIDIA GPU.

use std::path::PathBuf;

use flmon_agent::collectors::gpu::{GpuBackend, GpuCollector, NvmlBackend};
use flmon_agent::collectors::{Collector, SampleTime};
use flmon_agent::config::GpuMode;

fn main() {
    let library = std::env::args().nth(1).map(PathBuf::from);
    let now = SampleTime {
        monotonic: 0.0,
        unix: 0.0,
    };
    match NvmlBackend::init(library.as_deref()) {
        Err(e) => println!("NVML: {e} (reason {})", e.reason()),
        Ok(mut backend) => {
            match backend.read() {
                Ok(readings) => {
                    println!("NVML sees {} GPU(s):", readings.len());
                    for r in &readings {
                        println!("  {r:?}");
                    }
                }
                Err(e) => println!("NVML read failed: {e}"),
            }
            backend.shutdown();
        }
    }
    for mode in [GpuMode::All, GpuMode::NodeVisible] {
        let backend = NvmlBackend::init(library.as_deref()).map(|b| Box::new(b) as Box<dyn GpuBackend>);
        let mut collector = GpuCollector::new(mode, backend, PathBuf::from("/proc"));
        let out = collector.sample(now);
        println!(
            "--- /metrics GPU section, mode {} (error: {:?})",
            mode.as_str(),
            out.error
        );
        print!("{}", out.text);
        collector.shutdown();
    }
}
