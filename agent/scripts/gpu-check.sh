#!/usr/bin/env bash
# Exercises the agent's real NVML path on a machine with an NVIDIA GPU and prints what it saw:
# NVML's view of every GPU, the GPU collector's output in All and NodeVisible modes (with a CUDA
# process of our own running when PyTorch or CuPy is there, so NodeVisible has something to
# attribute), and the running agent's /metrics. Prebuilt binaries may be given as
# FLMON_AGENT_BIN and FLMON_GPU_PROBE_BIN; otherwise cargo builds them.
set -uo pipefail
cd "$(dirname "$0")/../.."

agent_bin=${FLMON_AGENT_BIN:-}
probe_bin=${FLMON_GPU_PROBE_BIN:-}
if [ -z "$agent_bin" ] || [ -z "$probe_bin" ]; then
  echo "== building the agent and the probe"
  cargo build -q -p flmon-agent --bin flmon-agent --example gpu_probe || exit 1
  agent_bin=target/debug/flmon-agent
  probe_bin=target/debug/examples/gpu_probe
fi

echo "== nvidia-smi"
nvidia-smi -L 2>&1 || echo "(no nvidia-smi)"
nvidia-smi --query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw --format=csv 2>&1 || true

cuda_pid=""
for py in python3 python; do
  command -v "$py" >/dev/null || continue
  "$py" - <<'PY' &
import time
try:
    import torch
    x = torch.ones((4096, 4096), device="cuda")
    end = time.time() + 25
    while time.time() < end:
        x = (x @ x).clamp(-1, 1)
        torch.cuda.synchronize()
except Exception:
    try:
        import cupy
        x = cupy.ones((4096, 4096))
        end = time.time() + 25
        while time.time() < end:
            x = cupy.clip(x @ x, -1, 1)
            cupy.cuda.Device().synchronize()
    except Exception as e:
        print(f"(no CUDA process: {e})")
PY
  cuda_pid=$!
  break
done
sleep 6
[ -n "$cuda_pid" ] && echo "== helper process (a CUDA context if PyTorch or CuPy was found): pid $cuda_pid"

echo "== probe (NVML readings and the collector's /metrics section)"
"$probe_bin"

echo "== the agent binary, --gpu-mode NodeVisible, scraped over HTTP"
"$agent_bin" --collectors gpu,host --gpu-mode NodeVisible --sample-interval 1s \
  --metrics-addr 127.0.0.1:19477 --ingest-addr 127.0.0.1:19478 &
agent_pid=$!
sleep 3
curl -s 127.0.0.1:19477/metrics | grep -E '^(flmon_gpu|flmon_agent_collector|fl_cpu_usage_percent)'
kill -TERM "$agent_pid"
wait "$agent_pid"
echo "== agent exit status: $?"
[ -n "$cuda_pid" ] && wait "$cuda_pid" 2>/dev/null
exit 0
