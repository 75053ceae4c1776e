//! The Grafana dashboard of one monitor: the seed dashboard's six panels with current panel types
//! (`stat`, `timeseries`; the seed's `graph` type was removed from Grafana), plus rows for
//! clients, GPUs and Kafka. A `$datasource` variable and no `__inputs`, so Grafana's sidecar
//! loads it as is.

use flmon_crds::FLMonitor;
use flmon_crds::names::metrics as m;
use kube::ResourceExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Grafana's grid is 24 columns wide.
const GRID_WIDTH: u32 = 24;

/// One query of a panel.
struct Query {
    expr: String,
    legend: &'static str,
}

/// What kind of panel, with its unit and extra field settings.
enum Kind {
    Stat,
    TimeSeries,
}

struct Panel {
    title: &'static str,
    description: &'static str,
    kind: Kind,
    unit: &'static str,
    width: u32,
    queries: Vec<Query>,
    /// Extra `fieldConfig` settings merged over the defaults.
    field_config: Value,
}

struct Row {
    title: &'static str,
    panels: Vec<Panel>,
}

/// The label matcher every query of a monitor's dashboard carries.
fn selector(monitor: &FLMonitor) -> String {
    format!(
        "namespace=\"{}\",{}=\"{}\"",
        monitor.namespace().unwrap_or_default(),
        m::LABEL_MONITOR,
        monitor.name_any()
    )
}

/// A pod's GPU memory on each card: the sum over its MIG devices on the card (`uuid="MIG-…"`)
/// where it has any, else the card itself — never a card and its MIG devices together, never two
/// MIG devices as one line. Utilization, temperature and power exist only for whole cards.
fn gpu_memory(metric: &str, sel: &str) -> String {
    format!(
        "sum by (pod, gpu) (max by (pod, gpu, uuid) ({metric}{{{sel},uuid=~\"MIG-.*\"}})) \
         or max by (pod, gpu) ({metric}{{{sel},uuid!~\"MIG-.*\"}})"
    )
}

fn query(expr: String, legend: &'static str) -> Query {
    Query { expr, legend }
}

fn rows(monitor: &FLMonitor) -> Vec<Row> {
    let sel = selector(monitor);
    let stat = |title, description, unit, expr: String, legend| Panel {
        title,
        description,
        kind: Kind::Stat,
        unit,
        width: 6,
        queries: vec![query(expr, legend)],
        field_config: json!({}),
    };
    let series = |title, description, unit, width, queries| Panel {
        title,
        description,
        kind: Kind::TimeSeries,
        unit,
        width,
        queries,
        field_config: json!({}),
    };
    vec![
        Row {
            title: "Training",
            panels: vec![
                Panel {
                    // The seed's thresholds: green below 0.5, yellow below 1.0, red above.
                    field_config: json!({ "defaults": { "color": { "mode": "thresholds" }, "thresholds": {
                        "mode": "absolute",
                        "steps": [
                            { "color": "green", "value": null },
                            { "color": "yellow", "value": 0.5 },
                            { "color": "red", "value": 1.0 }
                        ]
                    }}}),
                    ..stat(
                        "Global Model Loss",
                        "Global loss after the last round.",
                        "none",
                        format!("max({}{{{sel}}})", m::GLOBAL_LOSS),
                        "Global Loss",
                    )
                },
                stat(
                    "Global Model Accuracy",
                    "Global accuracy after the last round.",
                    "percent",
                    format!("max({}{{{sel}}})", m::GLOBAL_ACCURACY_PERCENT),
                    "Global Accuracy",
                ),
                stat(
                    "Active Clients",
                    "Clients that took part in the last round.",
                    "none",
                    format!("max({}{{{sel}}})", m::ACTIVE_CLIENTS),
                    "Active Clients",
                ),
                stat(
                    "Round",
                    "Last completed round.",
                    "none",
                    format!("max({}{{{sel}}})", m::ROUND),
                    "Round",
                ),
                Panel {
                    // Accuracy (percent) on a right-hand axis next to the loss, as the seed's two y axes.
                    field_config: json!({ "overrides": [{
                        "matcher": { "id": "byName", "options": "Accuracy" },
                        "properties": [
                            { "id": "unit", "value": "percent" },
                            { "id": "min", "value": 0 },
                            { "id": "max", "value": 100 },
                            { "id": "custom.axisPlacement", "value": "right" }
                        ]
                    }]}),
                    ..series(
                        "Training Progress",
                        "Global loss (left axis) and accuracy (right axis) per round.",
                        "none",
                        12,
                        vec![
                            query(format!("max({}{{{sel}}})", m::GLOBAL_LOSS), "Loss"),
                            query(
                                format!("max({}{{{sel}}})", m::GLOBAL_ACCURACY_PERCENT),
                                "Accuracy",
                            ),
                        ],
                    )
                },
                series(
                    "System Resources",
                    "CPU and memory usage of each pod's app processes, percent of their limits.",
                    "percent",
                    12,
                    vec![
                        query(format!("{}{{{sel}}}", m::CPU_USAGE_PERCENT), "CPU {{pod}}"),
                        query(format!("{}{{{sel}}}", m::MEMORY_USAGE_PERCENT), "Memory {{pod}}"),
                    ],
                ),
                series(
                    "Round Duration",
                    "Average round duration over the rate window, and the last round's duration.",
                    "s",
                    12,
                    vec![
                        query(
                            format!(
                                "sum(rate({h}_sum{{{sel}}}[$__rate_interval])) / sum(rate({h}_count{{{sel}}}[$__rate_interval]))",
                                h = m::ROUND_DURATION_SECONDS
                            ),
                            "Average Round Duration",
                        ),
                        query(
                            format!("max({}{{{sel}}})", m::LAST_ROUND_DURATION_SECONDS),
                            "Last Round",
                        ),
                    ],
                ),
                series(
                    "Messages Sent",
                    "Messages sent per second by each pod's FL app.",
                    "short",
                    12,
                    vec![query(
                        format!(
                            "sum by (pod) (rate({}{{{sel}}}[$__rate_interval]))",
                            m::MESSAGES_SENT_TOTAL
                        ),
                        "{{pod}}",
                    )],
                ),
            ],
        },
        Row {
            title: "Clients",
            panels: vec![
                series(
                    "Client Local Loss",
                    "Each client's local loss in its last round.",
                    "none",
                    12,
                    vec![query(
                        format!("max by (client_id) ({}{{{sel}}})", m::CLIENT_LOSS),
                        "{{client_id}}",
                    )],
                ),
                series(
                    "Client Local Accuracy",
                    "Each client's local accuracy in its last round.",
                    "percentunit",
                    12,
                    vec![query(
                        format!("max by (client_id) ({}{{{sel}}})", m::CLIENT_ACCURACY_RATIO),
                        "{{client_id}}",
                    )],
                ),
                series(
                    "Client Training Time",
                    "Each client's local training time in its last round.",
                    "s",
                    12,
                    vec![query(
                        format!("max by (client_id) ({}{{{sel}}})", m::CLIENT_TRAINING_SECONDS),
                        "{{client_id}}",
                    )],
                ),
                series(
                    "Rounds per Client",
                    "Rounds each client has taken part in.",
                    "none",
                    12,
                    vec![query(
                        format!("max by (client_id) ({}{{{sel}}})", m::CLIENT_ROUNDS_TOTAL),
                        "{{client_id}}",
                    )],
                ),
            ],
        },
        Row {
            title: "GPU",
            panels: vec![
                series(
                    "GPU Utilization",
                    "Utilization of each GPU used by the job's pods.",
                    "percentunit",
                    12,
                    vec![query(
                        format!("max by (pod, gpu) ({}{{{sel}}})", m::GPU_UTILIZATION_RATIO),
                        "{{pod}} GPU {{gpu}}",
                    )],
                ),
                series(
                    "GPU Memory",
                    "GPU memory in use, of the total.",
                    "bytes",
                    12,
                    vec![
                        query(
                            gpu_memory(m::GPU_MEMORY_USED_BYTES, &sel),
                            "{{pod}} GPU {{gpu}} used",
                        ),
                        query(
                            gpu_memory(m::GPU_MEMORY_TOTAL_BYTES, &sel),
                            "{{pod}} GPU {{gpu}} total",
                        ),
                    ],
                ),
                series(
                    "GPU Temperature",
                    "Temperature of each GPU.",
                    "celsius",
                    12,
                    vec![query(
                        format!("max by (pod, gpu) ({}{{{sel}}})", m::GPU_TEMPERATURE_CELSIUS),
                        "{{pod}} GPU {{gpu}}",
                    )],
                ),
                series(
                    "GPU Power",
                    "Power draw of each GPU.",
                    "watt",
                    12,
                    vec![query(
                        format!("max by (pod, gpu) ({}{{{sel}}})", m::GPU_POWER_WATTS),
                        "{{pod}} GPU {{gpu}}",
                    )],
                ),
            ],
        },
        Row {
            title: "Kafka",
            panels: vec![
                series(
                    "Message Throughput by Topic",
                    "Messages appended per second to each watched topic.",
                    "short",
                    8,
                    vec![query(
                        format!(
                            "sum by (topic) (rate({}{{{sel}}}[$__rate_interval]))",
                            m::KAFKA_TOPIC_MESSAGES_TOTAL
                        ),
                        "{{topic}}",
                    )],
                ),
                series(
                    "End-to-end Latency",
                    "Sampled age of each topic's newest messages.",
                    "s",
                    8,
                    vec![query(
                        format!("max by (topic) ({}{{{sel}}})", m::KAFKA_TOPIC_LATENCY_SECONDS),
                        "{{topic}}",
                    )],
                ),
                series(
                    "Consumer Lag",
                    "Messages each watched consumer group is behind, summed over partitions.",
                    "short",
                    8,
                    vec![query(
                        format!("sum by (consumergroup) ({}{{{sel}}})", m::KAFKA_CONSUMERGROUP_LAG),
                        "{{consumergroup}}",
                    )],
                ),
            ],
        },
    ]
}

/// Every PromQL expression of a monitor's dashboard, with its panel title (for linting).
pub fn dashboard_queries(monitor: &FLMonitor) -> Vec<(&'static str, String)> {
    rows(monitor)
        .into_iter()
        .flat_map(|row| row.panels)
        .flat_map(|panel| panel.queries.into_iter().map(move |q| (panel.title, q.expr)))
        .collect()
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// A stable dashboard uid (Grafana allows at most 40 characters) from the monitor's identity.
fn uid(monitor: &FLMonitor) -> String {
    let digest = Sha256::digest(format!(
        "{}/{}",
        monitor.namespace().unwrap_or_default(),
        monitor.name_any()
    ));
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("flmon-{hex}")
}

/// The dashboard JSON model of a monitor.
pub fn dashboard_json(monitor: &FLMonitor) -> Value {
    let datasource = json!({ "type": "prometheus", "uid": "${datasource}" });
    let mut panels = Vec::new();
    let mut id = 0;
    let mut y = 0;
    for row in rows(monitor) {
        id += 1;
        panels.push(json!({
            "id": id,
            "type": "row",
            "title": row.title,
            "collapsed": false,
            "gridPos": { "h": 1, "w": GRID_WIDTH, "x": 0, "y": y },
            "panels": [],
        }));
        y += 1;
        let mut x = 0;
        let mut row_height = 0;
        for panel in row.panels {
            let height = match panel.kind {
                Kind::Stat => 4,
                Kind::TimeSeries => 8,
            };
            if x + panel.width > GRID_WIDTH {
                x = 0;
                y += row_height;
                row_height = 0;
            }
            id += 1;
            let targets: Vec<Value> = panel
                .queries
                .iter()
                .zip('A'..)
                .map(|(q, ref_id)| {
                    json!({
                        "refId": ref_id.to_string(),
                        "datasource": datasource,
                        "expr": q.expr,
                        "legendFormat": q.legend,
                    })
                })
                .collect();
            let (kind, options, custom) = match panel.kind {
                Kind::Stat => (
                    "stat",
                    json!({
                        "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
                        "colorMode": "value",
                        "graphMode": "area",
                        "justifyMode": "auto",
                        "orientation": "auto",
                        "textMode": "auto",
                    }),
                    json!({}),
                ),
                Kind::TimeSeries => (
                    "timeseries",
                    json!({
                        "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
                        "tooltip": { "mode": "multi", "sort": "none" },
                    }),
                    json!({ "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": false }),
                ),
            };
            let mut field_config = json!({
                "defaults": { "unit": panel.unit, "custom": custom },
                "overrides": [],
            });
            merge(&mut field_config, &panel.field_config);
            panels.push(json!({
                "id": id,
                "type": kind,
                "title": panel.title,
                "description": panel.description,
                "datasource": datasource,
                "gridPos": { "h": height, "w": panel.width, "x": x, "y": y },
                "targets": targets,
                "fieldConfig": field_config,
                "options": options,
            }));
            x += panel.width;
            row_height = row_height.max(height);
        }
        y += row_height;
    }
    json!({
        "uid": uid(monitor),
        "title": format!("FL job {}/{}", monitor.namespace().unwrap_or_default(), monitor.name_any()),
        "description": "Generated by flmon-operator from an FLMonitor; edits are overwritten.",
        "tags": ["flmon", "federated-learning", "ml"],
        "timezone": "browser",
        "editable": false,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": { "from": "now-1h", "to": "now" },
        "templating": { "list": [{
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        }]},
        "annotations": { "list": [{
            "builtIn": 1,
            "datasource": { "type": "grafana", "uid": "-- Grafana --" },
            "enable": true,
            "hide": true,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "links": [],
        "panels": panels,
    })
}
