#!/usr/bin/env bash
# Prints where each test-environment tool lives, as KEY=VALUE lines (read by the Rust test-support
# library and by the `up`/`down` entry point), so that versions are named in common.sh alone.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cat <<OUT
FLMON_CACHE=$FLMON_CACHE
FLMON_K8S_VERSION=$K8S_VERSION
FLMON_KAFKA_VERSION=$KAFKA_VERSION
kube-apiserver=$(k8s_dir)/bin/kube-apiserver
kube-controller-manager=$(k8s_dir)/bin/kube-controller-manager
kubectl=$(k8s_dir)/bin/kubectl
etcd=$(etcd_dir)/bin/etcd
helm=$(helm_dir)/bin/helm
kubeconform=$(kubeconform_dir)/bin/kubeconform
openapi2jsonschema=$(kubeconform_dir)/bin/openapi2jsonschema.py
kubeconform-schemas=$(schemas_dir)
promop-crds=$(promop_dir)
kafka-libs=$(kafka_dir)/libs
python=$(venv_dir)/bin/python
nvml-include=$(nvml_dir)/include
promtool=$(command -v promtool || echo /usr/bin/promtool)
prometheus=$(command -v prometheus || echo /usr/bin/prometheus)
kcat=$(command -v kcat || echo /usr/bin/kcat)
node-exporter=$(command -v prometheus-node-exporter || echo /usr/bin/prometheus-node-exporter)
java=$(command -v java || echo /usr/bin/java)
chromium=$(command -v chromium || echo /usr/bin/chromium)
OUT
