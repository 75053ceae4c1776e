#!/usr/bin/env bash
# flmon's demo, end to end on this machine:
#   1. brings up the real test environment (etcd + kube-apiserver, a Kafka broker on a pod network);
#   2. installs the chart (CRDs, RBAC, webhook configuration, default AlertRules) with Helm;
#   3. runs the operator as a local process against the apiserver (its webhook registered by URL);
#   4. applies an FLMonitor and an FL job (one server, five clients) that the webhook injects;
#   5. plays the kubelet's part for those pods, openly (examples/demo/kubelet.py): each pod gets its
#      own network namespace and one shared process namespace, and its containers, the app and
#      the injected flmon-agent, run in them as local processes; a real FedAvg run over Kafka on
#      scikit-learn's digits follows;
#   6. shows progress, then `kubectl get flm`, the alerts (firing now, and every firing and
#      resolution of the run), and where the plots, report and dashboard page are.
# Needs root (network namespaces). Installs what is missing first.
#
# Environment: FLMON_DEMO_ROUNDS (default 40), FLMON_DEMO_OUT (default ./out/demo),
# FLMON_DEMO_TIMEOUT seconds (default 900), FLMON_DEMO_KEEP=1 leaves everything running at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
ROUNDS=${FLMON_DEMO_ROUNDS:-40}
OUT=${FLMON_DEMO_OUT:-$ROOT/out/demo}
TIMEOUT=${FLMON_DEMO_TIMEOUT:-900}
SUBNET=10.77.0
BRIDGE=flmon0
export FLMON_TESTENV_DIR=${FLMON_TESTENV_DIR:-/tmp/flmon-demo-env}
# Where cargo puts the binaries (CARGO_TARGET_DIR is honoured).
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug

say() { printf '\033[1m[flmon-demo]\033[0m %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "the demo needs root for network namespaces (ip netns)"; exit 1; }

tests/env/install.sh all
eval "$(bash tests/env/paths.sh | sed -n 's/^\(kubectl\|helm\|python\|promop-crds\)=\(.*\)/\1=\2/p' | sed 's/^promop-crds/PROMOP/; s/^kubectl/KUBECTL/; s/^helm/HELM/; s/^python/PY/')"
say "building flmon-operator, flmon-agent and the environment tool"
cargo build --locked -q -p flmon-operator -p flmon-agent -p flmon-tests --bins

rm -rf "$OUT" && mkdir -p "$OUT/logs"
pids=()
cleanup() {
  local rc=$?
  if [ "${FLMON_DEMO_KEEP:-0}" = 1 ] && [ $rc -eq 0 ]; then
    say "left running (FLMON_DEMO_KEEP=1): export KUBECONFIG=$KUBECONFIG"
    say "stop with: kill ${pids[*]}; $BIN/flmon-testenv down; ip link del $BRIDGE"
    return
  fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  $BIN/flmon-testenv down >/dev/null 2>&1 || true
  ip link del "$BRIDGE" 2>/dev/null || true
  exit $rc
}
trap cleanup EXIT INT TERM

# The pod network: a bridge whose address the broker listens on, so pods reach Kafka.
$BIN/flmon-testenv down >/dev/null 2>&1 || true
ip link del "$BRIDGE" 2>/dev/null || true
ip link add "$BRIDGE" type bridge && ip addr add "$SUBNET.1/24" dev "$BRIDGE" && ip link set "$BRIDGE" up

say "starting etcd, kube-apiserver and Kafka"
FLMON_KAFKA_HOST=$SUBNET.1 $BIN/flmon-testenv up >"$OUT/env.txt"
KUBECONFIG=$(sed -n 's/^KUBECONFIG=//p' "$OUT/env.txt")
KAFKA=$(sed -n 's/^KAFKA_BOOTSTRAP=//p' "$OUT/env.txt")
export KUBECONFIG
k() { "$KUBECTL" "$@"; }
say "apiserver up ($(k version -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')), Kafka at $KAFKA"

say "installing the Prometheus Operator CRDs and the flmon chart"
k apply --server-side -f "$PROMOP" >/dev/null
export HELM_CACHE_HOME=$OUT/helm HELM_CONFIG_HOME=$OUT/helm HELM_DATA_HOME=$OUT/helm
"$HELM" install flmon charts/flmon --namespace flmon-system --create-namespace \
  --set replicaCount=1 --set image.agent.tag=0.1.0 >"$OUT/logs/helm.txt"
k -n flmon-system get alertrules

say "starting the operator (its Deployment stays Pending without a kubelet; this process stands in for it)"
# Outside the cluster the operator registers its webhook by URL rather than by Service: it
# takes over the chart's configuration in that form.
FLMON_OPERATOR_NAMESPACE=flmon-system FLMON_OPERATOR_POD_NAME=flmon-operator-demo \
  FLMON_WEBHOOK_URL="https://127.0.0.1:9443" FLMON_WEBHOOK_ADDR=127.0.0.1:9443 \
  FLMON_WEBHOOK_CONFIG_NAME=flmon FLMON_WEBHOOK_SERVICE=flmon-operator FLMON_WEBHOOK_TLS_SECRET=flmon-webhook-tls \
  FLMON_METRICS_ADDR=127.0.0.1:8081 FLMON_DASHBOARD_ADDR=127.0.0.1:8080 FLMON_AGENT_IMAGE=ghcr.io/flmon/flmon-agent:0.1.0 \
  FLMON_POLL_INTERVAL=2s FLMON_REPORT_DIR="$OUT" FLMON_LOG_FORMAT=text \
  $BIN/flmon-operator run >"$OUT/logs/operator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do
  curl -sf http://127.0.0.1:8081/readyz >/dev/null && break
  sleep 1
done
curl -sf http://127.0.0.1:8081/readyz >/dev/null || { say "the operator did not become ready:"; tail -20 "$OUT/logs/operator.log"; exit 1; }

say "playing the kubelet for namespace fl-demo (pods run as local processes in network namespaces)"
"$PY" examples/demo/kubelet.py --kubeconfig "$KUBECONFIG" --kubectl "$KUBECTL" --namespace fl-demo \
  --bridge "$BRIDGE" --subnet "$SUBNET" --logs "$OUT/logs" --workdir "$ROOT" \
  --image "ghcr.io/flmon/flmon-agent=$BIN/flmon-agent" --image "python=$PY" \
  >"$OUT/logs/kubelet.log" 2>&1 &
pids+=($!)

say "applying the FLMonitor (the webhook's scope grows to its namespace)"
fill() { sed -e "s/\${KAFKA}/$KAFKA/g" -e "s/\${ROUNDS}/$ROUNDS/g" -e "s/\${DROP}/8-12/g" "$1"; }
fill examples/demo/fl-monitor.yaml >"$OUT/fl-monitor.yaml"
k apply -f "$OUT/fl-monitor.yaml" | sed 's/^/  /'
for _ in $(seq 1 30); do
  k get mutatingwebhookconfiguration flmon -o jsonpath='{.webhooks[0].namespaceSelector}' 2>/dev/null | grep -q fl-demo && break
  sleep 1
done
k get mutatingwebhookconfiguration flmon -o jsonpath='{.webhooks[0].namespaceSelector}' | grep -q fl-demo ||
  { say "the operator did not bring fl-demo into the webhook's scope"; tail -20 "$OUT/logs/operator.log"; exit 1; }

say "creating the FL job's pods (server + 5 clients; site-3 is slow, site-5 drops out for rounds 8-12)"
fill examples/demo/fl-pods.yaml >"$OUT/fl-pods.yaml"
k apply -f "$OUT/fl-pods.yaml" | sed 's/^/  /'
k -n fl-demo get pods -o custom-columns='POD:.metadata.name,INJECTED:.metadata.annotations.flmon\.io/injected,MONITOR:.metadata.labels.flmon\.io/monitor,SIDECAR:.spec.initContainers[*].name'

# A loopback Prometheus scrapes the agents as the generated ServiceMonitor says: its port, path
# and interval, with the pods behind the monitor's Service as targets (no kubelet, no service
# discovery here: the demo writes the targets out).
for _ in $(seq 1 60); do
  [ "$(k -n fl-demo get pods -l flmon.io/monitor=digits-fedavg -o jsonpath='{range .items[*]}{.status.podIP}{" "}{end}' | wc -w)" -ge 6 ] && break
  sleep 1
done
sm=$(k -n fl-demo get servicemonitors -o json)
"$PY" - "$OUT/prometheus.yml" "$sm" "$(k -n fl-demo get pods -l flmon.io/monitor=digits-fedavg -o json)" <<'PYEOF'
import json, sys
out, sm, pods = sys.argv[1], json.loads(sys.argv[2])["items"][0], json.loads(sys.argv[3])["items"]
ep = sm["spec"]["endpoints"][0]
targets = []
for p in pods:
    for c in p["spec"].get("initContainers", []) + p["spec"]["containers"]:
        for port in c.get("ports", []):
            if port.get("name") == ep["port"]:
                targets.append(f'{p["status"]["podIP"]}:{port["containerPort"]}')
cfg = {"global": {"scrape_interval": ep.get("interval", "5s")},
       "scrape_configs": [{"job_name": f'serviceMonitor/{sm["metadata"]["namespace"]}/{sm["metadata"]["name"]}/0',
                           "metrics_path": ep.get("path", "/metrics"), "scrape_interval": "2s",
                           "static_configs": [{"targets": targets}]}]}
open(out, "w").write(json.dumps(cfg))
print(f"  Prometheus scrapes {len(targets)} agents: {' '.join(targets)}")
PYEOF
PROM_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
prometheus --config.file="$OUT/prometheus.yml" --storage.tsdb.path="$OUT/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$OUT/logs/prometheus.log" 2>&1 &
pids+=($!)

say "training; progress every 10 s"
start=$SECONDS
printf '%-8s %-10s %6s %9s %9s %8s %10s\n' AGE PHASE ROUND LOSS ACCURACY CLIENTS CONVERGED
while :; do
  k -n fl-demo get flm digits-fedavg -o jsonpath='{.status.phase} {.status.round} {.status.globalLoss} {.status.globalAccuracy} {.status.activeClients} {.status.conditions[?(@.type=="Converged")].status}' |
    awk -v age="$((SECONDS - start))s" '{ if (NF < 6) { printf "%-8s %-10s\n", age, $1 } else printf "%-8s %-10s %6s %9s %9s %8s %10s\n", age, $1, $2, $3, $4, $5, $6 }'
  phase=$(k -n fl-demo get flm digits-fedavg -o jsonpath='{.status.phase}')
  server=$(k -n fl-demo get pod fl-server -o jsonpath='{.status.phase}')
  if [ "$server" = Succeeded ] || [ "$server" = Failed ]; then sleep 6; break; fi
  if [ $((SECONDS - start)) -gt "$TIMEOUT" ]; then say "timed out after ${TIMEOUT}s (phase $phase)"; exit 1; fi
  sleep 10
done

say "result"
k -n fl-demo get flm
echo
k -n fl-demo get flm digits-fedavg -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{"\n"}{end}'
echo
say "alerts: firing now, then every alert Event of the run"
firing=$(k -n fl-demo get flm digits-fedavg -o jsonpath='{range .status.firingAlerts[*]}{.alertname} {end}')
echo "firing now: ${firing:-none}"
k -n fl-demo get events --field-selector involvedObject.name=digits-fedavg --sort-by=.metadata.creationTimestamp \
  -o custom-columns='TIME:.metadata.creationTimestamp,REASON:.reason,MESSAGE:.message' 2>/dev/null |
  awk 'NR == 1 || $2 ~ /^Alert/' || true
say "pod annotations"
k -n fl-demo get pods -o custom-columns='POD:.metadata.name,TREND:.metadata.annotations.flmon\.io/client-trend,STRAGGLER:.metadata.annotations.flmon\.io/straggler'
curl -sf http://127.0.0.1:8080/ -o "$OUT/dashboard-index.html" || true
curl -sf http://127.0.0.1:8080/monitors/fl-demo/digits-fedavg -o "$OUT/dashboard.html" || true
# The saved pages link to each other as files, so they also work opened from disk.
sed -i 's#href="monitors/fl-demo/digits-fedavg"#href="dashboard.html"#' "$OUT/dashboard-index.html" 2>/dev/null || true
sed -i 's#href="\.\./\.\./"#href="dashboard-index.html"#' "$OUT/dashboard.html" 2>/dev/null || true
say "plots, report and dashboard:"
ls "$OUT"/fl-demo/digits-fedavg/* "$OUT"/*.html 2>/dev/null | sed 's/^/  /' || true
say "Prometheus (127.0.0.1:$PROM_PORT) has the seed's metric names from the agents:"
curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/label/__name__/values" >"$OUT/prometheus-names.json" || echo '{}' >"$OUT/prometheus-names.json"
"$PY" -c 'import json,sys; names=set(json.load(open(sys.argv[1])).get("data",[])); seed=["fl_global_loss","fl_global_accuracy","fl_active_clients","fl_round_duration_seconds_bucket","fl_messages_sent_total","fl_cpu_usage_percent","fl_memory_usage_percent"]; print("  " + "  ".join(("+" if n in names else "MISSING ") + n for n in seed))' "$OUT/prometheus-names.json"

# A machine-readable summary of the outcome (the end-to-end test asserts on it).
"$PY" - "$OUT/summary.json" <<PYEOF
import json, subprocess, sys
def kj(*a): return json.loads(subprocess.run(["$KUBECTL", *a, "-o", "json"], check=True, capture_output=True, text=True).stdout)
summary = {
    "monitor": kj("-n", "fl-demo", "get", "flm", "digits-fedavg"),
    "pods": kj("-n", "fl-demo", "get", "pods")["items"],
    "events": kj("-n", "fl-demo", "get", "events")["items"],
    "prometheus_names": json.load(open("$OUT/prometheus-names.json")).get("data", []),
}
json.dump(summary, open(sys.argv[1], "w"))
PYEOF
say "logs: $OUT/logs"
