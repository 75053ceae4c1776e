#!/usr/bin/env bash
# flmon's demo: brings up the real test environment (etcd + kube-apiserver + Kafka), installs the
# Prometheus Operator CRDs, and runs the smoke scenario against it. Installs what is missing first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tests/env/install.sh all
echo "[flmon-demo] building" >&2
cargo build --locked -p flmon-tests --bin flmon-testenv
cargo test --locked -p flmon-tests --test smoke --no-run
echo "[flmon-demo] running the smoke scenario against a real apiserver and broker" >&2
cargo test --locked -p flmon-tests --test smoke -- --test-threads 2
