# shellcheck shell=bash
# Shared settings and helpers for flmon's test-environment scripts (sourced, not run).
#
# Every tool lives under one cache directory, keyed by version, so that emptying it is a real cold
# start. Debian packages (installed as root through apt) are the one exception.

set -euo pipefail

FLMON_CACHE="${FLMON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flmon}"
FLMON_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Versions. Kubernetes 1.36.3 is the newest release the curated Go proxy serves whose modules build
# with the installed Go; k8s-openapi's `v1_33` feature (our floor) is compatible with it.
K8S_VERSION="${FLMON_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${FLMON_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${FLMON_HELM_VERSION:-v3.21.4}"
KUBECONFORM_VERSION="${FLMON_KUBECONFORM_VERSION:-v0.7.0}"
PROM_OPERATOR_VERSION="${FLMON_PROM_OPERATOR_VERSION:-v0.93.0}"
KAFKA_VERSION="${FLMON_KAFKA_VERSION:-4.1.1}"
KUBERNETES_VALIDATE_VERSION="${FLMON_KUBERNETES_VALIDATE_VERSION:-1.37.0}"
# NVIDIA's nvml.h, shipped in the PyPI wheel nvidia-nvml-dev-cu12 (the GPU test builds a stand-in
# NVML library against it, so the ABI it checks is NVIDIA's, not ours).
NVML_DEV_VERSION="${FLMON_NVML_DEV_VERSION:-12.9.79}"

# Go and Maven keep their module caches inside the flmon cache.
export GOMODCACHE="$FLMON_CACHE/go/mod"
export GOCACHE="$FLMON_CACHE/go/build"
export GOPATH="$FLMON_CACHE/go/path"
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
MAVEN_REPO="$FLMON_CACHE/m2"
PIP_CACHE_DIR="$FLMON_CACHE/pip"
export PIP_CACHE_DIR

LOG_DIR="$FLMON_CACHE/logs"
mkdir -p "$LOG_DIR"

k8s_dir() { echo "$FLMON_CACHE/k8s-$K8S_VERSION"; }
etcd_dir() { echo "$FLMON_CACHE/etcd-$ETCD_VERSION"; }
helm_dir() { echo "$FLMON_CACHE/helm-$HELM_VERSION"; }
kubeconform_dir() { echo "$FLMON_CACHE/kubeconform-$KUBECONFORM_VERSION"; }
promop_dir() { echo "$FLMON_CACHE/prometheus-operator-crds-$PROM_OPERATOR_VERSION"; }
kafka_dir() { echo "$FLMON_CACHE/kafka-$KAFKA_VERSION"; }
schemas_dir() { echo "$FLMON_CACHE/kubeconform-schemas-$KUBERNETES_VALIDATE_VERSION"; }
venv_dir() { echo "$FLMON_CACHE/venv"; }
nvml_dir() { echo "$FLMON_CACHE/nvml-dev-$NVML_DEV_VERSION"; }

say() { printf '[flmon-env] %s\n' "$*" >&2; }

# run_step NAME LOGFILE CMD...: runs CMD with its output in LOGFILE, printing elapsed time every 30 s
# so a cold build never sits silent. On failure names the step, the command and the log, with its tail.
run_step() {
  local name="$1" log="$2"
  shift 2
  local start=$SECONDS
  say "$name: started (log: $log)"
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    local waited=0
    while [ $waited -lt 30 ] && kill -0 "$pid" 2>/dev/null; do sleep 1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name: still running, $(((SECONDS - start) / 60))m$(((SECONDS - start) % 60))s so far"
    fi
  done
  local rc=0
  wait "$pid" || rc=$?
  if [ $rc -ne 0 ]; then
    say "FAILED: step '$name' (exit $rc)"
    say "  command: $*"
    say "  log:     $log"
    tail -n 30 "$log" | sed 's/^/  | /' >&2
    return $rc
  fi
  say "$name: done in $(((SECONDS - start) / 60))m$(((SECONDS - start) % 60))s"
}

# stamp_ok DIR: whether DIR holds a completed install (the stamp is written only after the tool ran).
stamp_ok() { [ -f "$1/.stamp" ]; }
