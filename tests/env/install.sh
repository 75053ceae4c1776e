#!/usr/bin/env bash
# Installs flmon's test environment from the package registries alone, cached by version under
# $FLMON_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/flmon). Idempotent: a component whose stamp
# exists is skipped, and a stamp is written only after the tool has reported its version.
#
# Usage: tests/env/install.sh [all|apt|k8s|etcd|helm|kubeconform|promop|kafka|venv|schemas|nvml]...
#
# What a cold install cost on a 2-core machine is recorded in docs/TESTING.md.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Debian packages: promtool (prometheus), librdkafka's build needs (cmake, curl headers, zlib),
# kcat as an independent Kafka client, node_exporter as a benchmark reference, Chromium for the
# dashboard page's browser test, a C compiler for the GPU test's stand-in NVML library.
APT_PACKAGES=(prometheus libcurl4-openssl-dev zlib1g-dev cmake kcat prometheus-node-exporter iproute2 chromium gcc libc6-dev)

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  run_step "apt update" "$LOG_DIR/apt-update.log" $sudo apt-get update
  run_step "apt install ${missing[*]}" "$LOG_DIR/apt-install.log" \
    env DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
  # Debian starts the node exporter and prometheus as services where systemd runs; the benchmarks
  # start their own copies on free ports, so nothing else is needed.
}

# go_wrapper_build DIR MODULE VERSION PKG...: builds packages of a module whose go.mod replaces its
# staging modules with local paths (k8s.io/kubernetes, etcd) from a throw-away wrapper module.
# Every `X => ./...` replace line in the module's go.mod becomes `X => X@<staging version>`.
go_wrapper_build() {
  local dir="$1" module="$2" version="$3" staging_version="$4" ldflags="$5"
  shift 5
  local wrapper="$dir/wrapper"
  rm -rf "$wrapper" && mkdir -p "$wrapper" "$dir/bin"
  local gomod
  gomod=$(cd "$wrapper" && go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  (
    cd "$wrapper"
    go mod init flmon.local/wrapper >/dev/null 2>&1
    local gov godebug
    gov=$(awk '$1=="go"{print $2; exit}' "$gomod")
    go mod edit -go="$gov"
    godebug=$(awk '$1=="godebug"{print $2}' "$gomod")
    for d in $godebug; do go mod edit -godebug="$d"; done
    # Local replaces: `k8s.io/api => ./staging/src/k8s.io/api`, either inside a replace block or inline.
    # etcd also "replaces" modules it forbids with ./FORBIDDEN_DEPENDENCY: those are never needed.
    awk '/=>[[:space:]]*\.\.?\// && !/FORBIDDEN/ {for(i=1;i<=NF;i++) if($i=="=>") print $(i-1)}' "$gomod" | sed 's/^replace$//' | sort -u |
      while read -r m; do
        [ -n "$m" ] && go mod edit -replace="$m=$m@$staging_version"
      done
    go get "$module@$version"
    for pkg in "$@"; do go get "$pkg@$version"; done
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/bin/" "$@"
  )
}

k8s_ldflags() {
  local v="$K8S_VERSION" major minor
  major=$(echo "${v#v}" | cut -d. -f1)
  minor=$(echo "${v#v}" | cut -d. -f2)
  local f=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    f+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$f"
}

install_k8s() {
  local dir
  dir=$(k8s_dir)
  stamp_ok "$dir" && return 0
  local staging="v0.${K8S_VERSION#v1.}"
  run_step "build kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION (cold: about 5-20 min on 2 cores)" \
    "$LOG_DIR/k8s-build.log" go_wrapper_build "$dir" k8s.io/kubernetes "$K8S_VERSION" "$staging" "$(k8s_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
  "$dir/bin/kube-apiserver" --version | grep -qF "$K8S_VERSION" || { say "kube-apiserver reports $("$dir/bin/kube-apiserver" --version), wanted $K8S_VERSION"; return 1; }
  "$dir/bin/kubectl" version --client >/dev/null
  rm -rf "$dir/wrapper"
  "$dir/bin/kube-apiserver" --version >"$dir/.stamp"
}

install_etcd() {
  local dir
  dir=$(etcd_dir)
  stamp_ok "$dir" && return 0
  run_step "build etcd $ETCD_VERSION" "$LOG_DIR/etcd-build.log" \
    go_wrapper_build "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" "-s -w" go.etcd.io/etcd/server/v3
  [ -x "$dir/bin/v3" ] && mv "$dir/bin/v3" "$dir/bin/etcd"
  [ -x "$dir/bin/server" ] && mv "$dir/bin/server" "$dir/bin/etcd"
  "$dir/bin/etcd" --version >"$dir/.stamp"
}

install_helm() {
  local dir
  dir=$(helm_dir)
  stamp_ok "$dir" && return 0
  local minor
  minor=$(echo "${K8S_VERSION#v}" | cut -d. -f2)
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  mkdir -p "$dir/bin"
  run_step "build helm $HELM_VERSION" "$LOG_DIR/helm-build.log" \
    env GOBIN="$dir/bin" CGO_ENABLED=0 go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  "$dir/bin/helm" version --short >"$dir/.stamp"
}

install_kubeconform() {
  local dir
  dir=$(kubeconform_dir)
  stamp_ok "$dir" && return 0
  mkdir -p "$dir/bin"
  run_step "build kubeconform $KUBECONFORM_VERSION" "$LOG_DIR/kubeconform-build.log" \
    env GOBIN="$dir/bin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  # The CRD-to-JSON-schema converter ships inside the module.
  local src
  src=$(go mod download -json "github.com/yannh/kubeconform@$KUBECONFORM_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp "$src/scripts/openapi2jsonschema.py" "$dir/bin/"
  "$dir/bin/kubeconform" -v >"$dir/.stamp"
}

install_promop() {
  local dir
  dir=$(promop_dir)
  stamp_ok "$dir" && return 0
  mkdir -p "$dir"
  local src
  src=$(cd "$dir" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml "$dir/"
  ls "$dir"/monitoring.coreos.com_servicemonitors.yaml >"$dir/.stamp"
}

install_kafka() {
  local dir
  dir=$(kafka_dir)
  stamp_ok "$dir" && return 0
  mkdir -p "$dir"
  cat >"$dir/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.flmon.testenv</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$dir/libs"
  run_step "fetch Apache Kafka $KAFKA_VERSION from Maven Central" "$LOG_DIR/kafka-fetch.log" \
    mvn -B -q -f "$dir/pom.xml" -Dmaven.repo.local="$MAVEN_REPO" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$dir/libs"
  ls "$dir/libs" | grep -q '^log4j-slf4j-impl' || { say "no slf4j binding among Kafka's jars"; return 1; }
  java -cp "$dir/libs/*" kafka.tools.StorageTool random-uuid >"$dir/.stamp"
}

install_venv() {
  local dir
  dir=$(venv_dir)
  local req="$FLMON_ROOT/tests/env/requirements.txt"
  local want
  want=$(sha256sum "$req" | cut -c1-16)
  [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$want" ] && return 0
  [ -x "$dir/bin/python" ] || run_step "create venv" "$LOG_DIR/venv.log" python3 -m venv "$dir"
  run_step "pip install tests/env/requirements.txt" "$LOG_DIR/pip.log" \
    "$dir/bin/python" -m pip install --disable-pip-version-check -r "$req"
  "$dir/bin/python" -c 'import sklearn, confluent_kafka' && echo "$want" >"$dir/.stamp"
}

# Kubernetes JSON schemas for kubeconform, offline: the PyPI package kubernetes-validate ships them.
# kubeconform wants standalone files, so each file's $id is dropped and its $refs point at the local
# _definitions.json.
install_schemas() {
  install_venv
  local dir
  dir=$(schemas_dir)
  stamp_ok "$dir" && return 0
  local minor
  minor=$(echo "${K8S_VERSION#v}" | cut -d. -f1-2)
  rm -rf "$dir" && mkdir -p "$dir"
  "$(venv_dir)/bin/python" "$FLMON_ROOT/tests/env/kubeconform_schemas.py" "$K8S_VERSION" "$dir"
  ls "$dir/$K8S_VERSION-standalone-strict/deployment-apps-v1.json" >"$dir/.stamp"
}

# NVIDIA's NVML header from its PyPI wheel (platform-independent text, so the x86-64 wheel serves any
# machine): the GPU test compiles a stand-in libnvidia-ml.so against it.
install_nvml() {
  install_venv
  local dir python
  dir=$(nvml_dir)
  python="$(venv_dir)/bin/python"
  stamp_ok "$dir" && return 0
  rm -rf "$dir" && mkdir -p "$dir/include" "$dir/wheel"
  run_step "fetch nvml.h (nvidia-nvml-dev-cu12 $NVML_DEV_VERSION) from PyPI" "$LOG_DIR/nvml-fetch.log" \
    "$python" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --python-version 3 -d "$dir/wheel" "nvidia-nvml-dev-cu12==$NVML_DEV_VERSION"
  "$python" - "$dir" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
(wheel,) = glob.glob(f"{d}/wheel/*.whl")
with zipfile.ZipFile(wheel) as z:
    for name in ("nvidia/nvml_dev/include/nvml.h", next(n for n in z.namelist() if n.endswith("License.txt"))):
        with open(f"{d}/include/" + name.rsplit("/", 1)[1], "wb") as out:
            out.write(z.read(name))
PY
  rm -rf "$dir/wheel"
  grep -m1 -o 'NVML_API_VERSION *[0-9]*' "$dir/include/nvml.h" >"$dir/.stamp"
}

main() {
  local targets=("$@")
  [ ${#targets[@]} -eq 0 ] && targets=(all)
  [ "${targets[0]}" = all ] && targets=(apt etcd k8s helm kubeconform promop kafka venv schemas nvml)
  mkdir -p "$FLMON_CACHE"
  say "cache: $FLMON_CACHE"
  for t in "${targets[@]}"; do
    case "$t" in
      apt | k8s | etcd | helm | kubeconform | promop | kafka | venv | schemas | nvml) "install_$t" ;;
      *) say "unknown component '$t' (expected one of: all apt k8s etcd helm kubeconform promop kafka venv schemas nvml)"; exit 2 ;;
    esac
  done
  say "test environment ready under $FLMON_CACHE"
}

main "$@"
