#!/usr/bin/env bash
# Runs flmon's whole test suite: installs the test environment (cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/flmon; cold the first time), checks formatting and lints, then runs
# every test in the workspace against the real kube-apiserver, etcd, Kafka, promtool, Helm and
# kubeconform. A component that cannot be had fails the run with its reason: nothing is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS
tests/env/install.sh all
echo "[flmon-test] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[flmon-test] cargo clippy --all-targets -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[flmon-test] cargo test" >&2
cargo test --workspace --locked --no-fail-fast
echo "[flmon-test] all green in $(((SECONDS - start) / 60))m$(((SECONDS - start) % 60))s" >&2
