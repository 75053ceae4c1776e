//! The five figure sets of SPEC §6, built as plain values from the analyzer's series: training
//! progress, client metrics, system metrics, convergence, Kafka.

use crate::analysis::analyzer::{Analyzer, Run};
use crate::analysis::clients::{ClientBook, ClientSummary};
use crate::analysis::series::{Bucket, Series};

use super::plot::{BLUE, Figure, GREEN, Line, ORANGE, PALETTE, PURPLE, Panel, RED, Reference, Scale, Style};

/// Names of the figures, in order (file stems).
pub const FIGURES: [&str; 5] = [
    "training_progress",
    "client_metrics",
    "system_metrics",
    "convergence_analysis",
    "kafka_metrics",
];

/// Lines drawn one per pod / topic / group before the rest are left out of a panel.
const MAX_LINES: usize = 8;
/// Clients shown as one bar each in the participation panel; more are shown as a histogram.
const MAX_CLIENT_BARS: usize = 40;

fn buckets(series: &Series) -> &[Bucket] {
    series.buckets()
}

/// "1 topic", "2 topics".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A series of bytes per second in MB/s.
fn megabytes(series: &Series) -> Vec<Bucket> {
    series
        .buckets()
        .iter()
        .map(|b| Bucket {
            min: b.min / 1e6,
            max: b.max / 1e6,
            sum: b.sum / 1e6,
            last: b.last / 1e6,
            ..*b
        })
        .collect()
}

/// The run's rounds, so every round-based panel of a figure spans the same x range.
fn round_range(run: Option<&Run>) -> Option<(f64, f64)> {
    let run = run?;
    let (first, last) = run.round_span()?;
    Some((first as f64, last as f64))
}

fn run_label(run: Option<&Run>) -> String {
    run.map_or_else(
        || "no training events yet".to_string(),
        |r| format!("run {}", r.id()),
    )
}

/// All five figures of the analyzer's current run.
pub fn figures(analyzer: &Analyzer) -> Vec<Figure> {
    let closed = analyzer.current_run().map(|r| r.clients.closed_copy());
    vec![
        training_progress(analyzer),
        client_metrics(analyzer, closed.as_ref()),
        system_metrics(analyzer),
        convergence(analyzer),
        kafka(analyzer),
    ]
}

/// Global loss, global accuracy, participation per round, round duration.
pub fn training_progress(analyzer: &Analyzer) -> Figure {
    let run = analyzer.current_run();
    let config = analyzer.config();
    let mut loss = Panel::new("Global Model Loss", "Round", "Loss");
    let mut accuracy = Panel::new("Global Model Accuracy", "Round", "Accuracy (%)");
    let mut participation = Panel::new("Client Participation per Round", "Round", "Clients");
    let mut duration = Panel::new("Round Duration", "Round", "Duration (s)");
    if let Some(run) = run {
        let s = &run.series;
        loss.lines.push(Line::new("global loss", BLUE, buckets(&s.loss)));
        loss.mark_non_finite = true;
        if let Some(t) = config.target_loss {
            loss.references.push(Reference {
                y: t,
                label: format!("target {t}"),
                color: GREEN,
            });
        }
        accuracy.lines.push(Line::new(
            "global accuracy",
            GREEN,
            &percent(buckets(&s.accuracy)),
        ));
        if let Some(t) = config.target_accuracy {
            accuracy.references.push(Reference {
                y: 100.0 * t,
                label: format!("target {} %", super::plot::tick(100.0 * t)),
                color: RED,
            });
        }
        participation.y_from_zero = true;
        participation
            .lines
            .push(Line::new("participants", PURPLE, buckets(&s.participants)).styled(Style::Bars));
        if !s.expected.is_empty() {
            participation
                .lines
                .push(Line::new("expected", ORANGE, buckets(&s.expected)).styled(Style::Dashed));
        }
        duration.y_from_zero = true;
        duration
            .lines
            .push(Line::new("duration", RED, buckets(&s.duration)));
        for p in [&mut loss, &mut accuracy, &mut participation, &mut duration] {
            p.x_range = round_range(Some(run));
        }
    }
    Figure {
        name: "training_progress",
        title: format!("Federated Learning Training Progress — {}", run_label(run)),
        panels: vec![loss, accuracy, participation, duration],
    }
}

/// Buckets scaled from a 0–1 fraction to percent.
fn percent(buckets: &[Bucket]) -> Vec<Bucket> {
    buckets
        .iter()
        .map(|b| Bucket {
            min: b.min * 100.0,
            max: b.max * 100.0,
            sum: b.sum * 100.0,
            last: b.last * 100.0,
            ..*b
        })
        .collect()
}

fn spread_panel(
    panel: &mut Panel,
    book: &ClientBook,
    pick: impl Fn(&crate::analysis::clients::ClientLines) -> &Series,
    spread: &crate::analysis::clients::Spread,
    scale: f64,
) {
    let scaled = |b: &[Bucket]| if scale == 1.0 { b.to_vec() } else { percent(b) };
    if book.len() <= crate::analysis::clients::LINE_CLIENTS {
        // In client-id order, so a client keeps its colour and legend place from run to run
        // (arrival order differs every run).
        let mut clients: Vec<_> = book.lines.iter().collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        for (i, lines) in clients.into_iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            panel.lines.push(Line::new(
                short(&lines.client_id),
                color,
                &scaled(pick(lines).buckets()),
            ));
        }
    } else if spread.p50.has_finite() {
        let label = format!("median of {} clients, band 10th–90th percentile", book.len());
        let mut line = Line::new(label, BLUE, &scaled(spread.p50.buckets()));
        line.band = Some((scaled(spread.p10.buckets()), scaled(spread.p90.buckets())));
        panel.lines.push(line);
    }
}

fn short(id: &str) -> String {
    if id.chars().count() <= 14 {
        id.to_string()
    } else {
        let head: String = id.chars().take(6).collect();
        let tail: String = id
            .chars()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{head}…{tail}")
    }
}

/// Client local losses, accuracies, training times, and participation per client.
pub fn client_metrics(analyzer: &Analyzer, closed: Option<&ClientBook>) -> Figure {
    let run = analyzer.current_run();
    let mut loss = Panel::new("Client Local Losses", "Round", "Loss");
    let mut accuracy = Panel::new("Client Local Accuracies", "Round", "Accuracy (%)");
    let mut times = Panel::new("Client Training Times", "Round", "Training time (s)");
    let mut participation = Panel::new("Participation Rate per Client", "Client", "Participation (%)");
    if let Some(book) = closed {
        spread_panel(&mut loss, book, |l| &l.loss, &book.loss, 1.0);
        spread_panel(&mut accuracy, book, |l| &l.accuracy, &book.accuracy, 100.0);
        spread_panel(&mut times, book, |l| &l.training_seconds, &book.seconds, 1.0);
        times.y_from_zero = true;
        let summaries = book.summaries();
        participation_panel(&mut participation, &summaries);
        for p in [&mut loss, &mut accuracy, &mut times] {
            p.x_range = round_range(run);
        }
    }
    Figure {
        name: "client_metrics",
        title: format!("Client-Specific Metrics — {}", run_label(run)),
        panels: vec![loss, accuracy, times, participation],
    }
}

fn participation_panel(panel: &mut Panel, summaries: &[ClientSummary]) {
    if summaries.is_empty() {
        return;
    }
    panel.y_from_zero = true;
    let bar = |x: f64, v: f64| Bucket {
        x_start: x,
        x_end: x,
        min: v,
        max: v,
        sum: v,
        count: 1,
        non_finite: 0,
        points: 1,
        last: v,
    };
    if summaries.len() <= MAX_CLIENT_BARS {
        let mut sorted: Vec<&ClientSummary> = summaries.iter().collect();
        sorted.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        panel.categories = sorted.iter().map(|c| short(&c.client_id)).collect();
        let (stragglers, others): (Vec<_>, Vec<_>) =
            sorted.iter().enumerate().partition(|(_, c)| c.straggler);
        let to_bars = |v: Vec<(usize, &&ClientSummary)>| -> Vec<Bucket> {
            v.into_iter()
                .map(|(i, c)| bar(i as f64, 100.0 * c.participation_rate))
                .collect()
        };
        panel
            .lines
            .push(Line::new("client", PURPLE, &to_bars(others)).styled(Style::Bars));
        let stragglers = to_bars(stragglers);
        if !stragglers.is_empty() {
            panel
                .lines
                .push(Line::new("straggler", RED, &stragglers).styled(Style::Bars));
        }
        panel.y_range = Some((0.0, 105.0));
    } else {
        panel.title = format!("Participation Rate of {} Clients", summaries.len());
        panel.x_label = "Participation (%)".into();
        panel.y_label = "Clients".into();
        let mut bins = [0u32; 10];
        for c in summaries {
            let i = ((c.participation_rate * 10.0).floor() as usize).min(9);
            bins[i] += 1;
        }
        let bars: Vec<Bucket> = bins
            .iter()
            .enumerate()
            .map(|(i, n)| bar(i as f64 * 10.0 + 5.0, f64::from(*n)))
            .collect();
        let mut line = Line::new("clients per 10 % bin", PURPLE, &bars).styled(Style::Bars);
        // Bars 10 wide: spread the bucket over its bin.
        for b in &mut line.buckets {
            b.x_start -= 4.0;
            b.x_end += 4.0;
            b.points = 2;
        }
        panel.lines.push(line);
    }
}

/// Time axis for host and Kafka samples: seconds, minutes or hours since the first sample.
fn time_axis(panels: &mut [&mut Panel], series: &[&Series]) {
    let t0 = series
        .iter()
        .filter_map(|s| s.buckets().first().map(|b| b.x_start))
        .fold(f64::INFINITY, f64::min);
    let t1 = series
        .iter()
        .filter_map(|s| s.buckets().last().map(|b| b.x_end))
        .fold(f64::NEG_INFINITY, f64::max);
    let span = if t0.is_finite() && t1.is_finite() {
        t1 - t0
    } else {
        0.0
    };
    let (unit, name) = if span > 3.0 * 3600.0 {
        (3600.0, "h")
    } else if span > 180.0 {
        (60.0, "min")
    } else {
        (1.0, "s")
    };
    for p in panels.iter_mut() {
        p.x_origin = if t0.is_finite() { t0 } else { 0.0 };
        p.x_unit = unit;
        p.x_label = format!("Time since first sample ({name})");
    }
}

/// CPU, memory, network and GPU per pod.
///
/// CPU, memory and GPU draw the `MAX_LINES` busiest pods by CPU, in name order. Network draws
/// two lines a pod (rx, tx), so it picks its own `MAX_LINES / 2` busiest pods by traffic: in FL
/// the server moves the most bytes while using little CPU, and it must not be the pod left out.
/// A pod's colour is its place in name order, the same in every panel and from run to run, and a
/// panel that leaves pods out says how many in its title.
pub fn system_metrics(analyzer: &Analyzer) -> Figure {
    let mut cpu = Panel::new("CPU Usage", "Time", "CPU (% of limits)");
    let mut memory = Panel::new("Memory Usage", "Time", "Memory (% of limits)");
    let mut network = Panel::new("Network Throughput", "Time", "MB/s");
    let mut gpu = Panel::new("GPU Utilization", "Time", "GPU (%)");
    gpu.empty_message = "no GPU metrics reported".into();
    let mut pods: Vec<_> = analyzer.pods.iter().collect();
    let mean = |s: &Series| {
        let (sum, n) = s
            .buckets()
            .iter()
            .fold((0.0, 0u64), |(a, n), b| (a + b.sum, n + u64::from(b.count)));
        if n == 0 { 0.0 } else { sum / n as f64 }
    };
    pods.sort_by(|a, b| a.pod.cmp(&b.pod));
    let color = |i: usize| PALETTE[i % PALETTE.len()];
    let mut shown: Vec<usize> = (0..pods.len()).collect();
    shown.sort_by(|&a, &b| {
        mean(&pods[b].cpu_percent)
            .total_cmp(&mean(&pods[a].cpu_percent))
            .then(a.cmp(&b))
    });
    shown.truncate(MAX_LINES);
    shown.sort_unstable();
    let mut all: Vec<&Series> = Vec::new();
    for &i in &shown {
        let p = pods[i];
        let name = short(&p.pod);
        cpu.lines
            .push(Line::new(name.clone(), color(i), p.cpu_percent.buckets()));
        memory
            .lines
            .push(Line::new(name.clone(), color(i), p.memory_percent.buckets()));
        // Only pods with GPUs: the legend lists no CPU-only pod.
        if !p.gpu_utilization.is_empty() {
            gpu.lines
                .push(Line::new(name, color(i), p.gpu_utilization.buckets()));
        }
        all.extend([&p.cpu_percent, &p.memory_percent, &p.gpu_utilization]);
    }
    let mut by_traffic: Vec<usize> = (0..pods.len())
        .filter(|&i| !pods[i].network_rx.is_empty() || !pods[i].network_tx.is_empty())
        .collect();
    by_traffic.sort_by(|&a, &b| {
        let traffic = |i: usize| mean(&pods[i].network_rx) + mean(&pods[i].network_tx);
        traffic(b).total_cmp(&traffic(a)).then(a.cmp(&b))
    });
    let network_pods = by_traffic.len();
    by_traffic.truncate(MAX_LINES / 2);
    for &i in &by_traffic {
        let p = pods[i];
        let name = short(&p.pod);
        network.lines.push(Line::new(
            format!("{name} rx"),
            color(i),
            &megabytes(&p.network_rx),
        ));
        network
            .lines
            .push(Line::new(format!("{name} tx"), color(i), &megabytes(&p.network_tx)).styled(Style::Dashed));
        all.extend([&p.network_rx, &p.network_tx]);
    }
    if network_pods > by_traffic.len() {
        network.title = format!(
            "Network Throughput — {} busiest of {network_pods} pods",
            by_traffic.len()
        );
    }
    for p in [&mut cpu, &mut memory, &mut network, &mut gpu] {
        p.y_from_zero = true;
    }
    let hidden = pods.len().saturating_sub(MAX_LINES);
    time_axis(&mut [&mut cpu, &mut memory, &mut network, &mut gpu], &all);
    let more = if hidden > 0 {
        format!(" ({hidden} quieter pods not shown)")
    } else {
        String::new()
    };
    Figure {
        name: "system_metrics",
        title: format!("System Performance Metrics — {}{more}", count(pods.len(), "pod")),
        panels: vec![cpu, memory, network, gpu],
    }
}

/// Loss on a log scale, gradient norms, weight changes, learning rate.
pub fn convergence(analyzer: &Analyzer) -> Figure {
    let run = analyzer.current_run();
    let config = analyzer.config();
    let mut loss = Panel::new("Loss Convergence (log scale)", "Round", "Loss (log scale)");
    loss.scale = Scale::Log;
    loss.mark_non_finite = true;
    let mut gradient = Panel::new("Gradient Norms", "Round", "Gradient norm");
    let mut weights = Panel::new(
        "Weight Changes Between Rounds",
        "Round",
        "L2 norm of weight change",
    );
    let mut lr = Panel::new("Learning Rate Schedule", "Round", "Learning rate");
    if let Some(run) = run {
        let s = &run.series;
        loss.lines.push(Line::new("global loss", BLUE, s.loss.buckets()));
        if let Some(t) = config.target_loss.filter(|t| *t > 0.0) {
            loss.references.push(Reference {
                y: t,
                label: format!("target {t}"),
                color: GREEN,
            });
        }
        gradient
            .lines
            .push(Line::new("gradient norm", ORANGE, s.gradient_norm.buckets()));
        weights
            .lines
            .push(Line::new("weight change", GREEN, s.weight_change.buckets()));
        lr.lines
            .push(Line::new("learning rate", PURPLE, s.learning_rate.buckets()));
        for p in [&mut gradient, &mut weights, &mut lr] {
            p.y_from_zero = true;
        }
        for p in [&mut loss, &mut gradient, &mut weights, &mut lr] {
            p.x_range = round_range(Some(run));
        }
    }
    Figure {
        name: "convergence_analysis",
        title: format!("Convergence Analysis — {}", run_label(run)),
        panels: vec![loss, gradient, weights, lr],
    }
}

/// Throughput per topic, latency, consumer lag, bytes per topic.
pub fn kafka(analyzer: &Analyzer) -> Figure {
    let mut throughput = Panel::new("Message Throughput by Topic", "Time", "Messages/s");
    let mut latency = Panel::new("End-to-End Latency by Topic", "Time", "Latency (s)");
    let mut lag = Panel::new("Consumer Lag by Group", "Time", "Lag (messages)");
    let mut bytes = Panel::new("Byte Throughput by Topic", "Time", "MB/s");
    let mut all: Vec<&Series> = Vec::new();
    for (i, t) in analyzer.topics.iter().take(MAX_LINES).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        throughput
            .lines
            .push(Line::new(t.topic.clone(), color, t.messages_per_second.buckets()));
        latency
            .lines
            .push(Line::new(t.topic.clone(), color, t.latency_seconds.buckets()));
        let mb = megabytes(&t.bytes_per_second);
        bytes.lines.push(Line::new(t.topic.clone(), color, &mb));
        all.extend([&t.messages_per_second, &t.latency_seconds, &t.bytes_per_second]);
    }
    for (i, g) in analyzer.groups.iter().take(MAX_LINES).enumerate() {
        lag.lines.push(Line::new(
            g.group.clone(),
            PALETTE[i % PALETTE.len()],
            g.lag.buckets(),
        ));
        all.push(&g.lag);
    }
    for p in [&mut throughput, &mut latency, &mut lag, &mut bytes] {
        p.y_from_zero = true;
        p.empty_message = "no Kafka metrics reported".into();
    }
    time_axis(&mut [&mut throughput, &mut latency, &mut lag, &mut bytes], &all);
    Figure {
        name: "kafka_metrics",
        title: format!(
            "Kafka Performance Metrics — {}, {}",
            count(analyzer.topics.len(), "topic"),
            count(analyzer.groups.len(), "consumer group")
        ),
        panels: vec![throughput, latency, lag, bytes],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::history::{AgentInfo, History, SystemSample};
    use crate::analysis::{AnalysisConfig, Analyzer};

    /// A pod's host samples: `cpu` percent and `rx` bytes/s (tx is half of it), every 5 s.
    fn pod(name: &str, cpu: f64, rx: f64) -> History {
        History {
            agent: AgentInfo {
                pod: name.into(),
                uid: format!("uid-{name}"),
                ..AgentInfo::default()
            },
            system: (0..20)
                .map(|k| SystemSample {
                    time: Some(1_750_000_000.0 + f64::from(k) * 5.0),
                    cpu_percent: Some(cpu),
                    memory_percent: Some(30.0),
                    network_rx_bytes_per_second: Some(rx),
                    network_tx_bytes_per_second: Some(rx / 2.0),
                    ..SystemSample::default()
                })
                .collect(),
            ..History::default()
        }
    }

    fn labels(panel: &Panel) -> Vec<&str> {
        panel.lines.iter().map(|l| l.label.as_str()).collect()
    }

    #[test]
    fn the_network_panel_shows_the_busiest_pods_by_traffic_and_says_what_it_leaves_out() {
        // The FL server idles on CPU but moves the most bytes; two clients move almost nothing.
        let docs = vec![
            pod("fl-server", 2.0, 9e6),
            pod("fl-client-1", 80.0, 3e6),
            pod("fl-client-2", 70.0, 1e3),
            pod("fl-client-3", 60.0, 2e6),
            pod("fl-client-4", 50.0, 1e6),
            pod("fl-client-5", 40.0, 2e3),
        ];
        let mut analyzer = Analyzer::new(AnalysisConfig::default()).expect("analyzer");
        analyzer.ingest_all(&docs);
        let figure = system_metrics(&analyzer);
        let [cpu, _, network, _] = &figure.panels[..] else {
            panic!("four panels")
        };
        assert_eq!(cpu.lines.len(), 6, "every pod's CPU is drawn");
        assert_eq!(
            labels(network),
            [
                "fl-server rx",
                "fl-server tx",
                "fl-client-1 rx",
                "fl-client-1 tx",
                "fl-client-3 rx",
                "fl-client-3 tx",
                "fl-client-4 rx",
                "fl-client-4 tx"
            ]
        );
        assert_eq!(network.title, "Network Throughput — 4 busiest of 6 pods");
        assert!(
            figure.panels[3].lines.is_empty(),
            "no pod reported a GPU, so the GPU panel lists none"
        );
        let colour_of = |panel: &Panel, label: &str| {
            panel
                .lines
                .iter()
                .find(|l| l.label == label)
                .map(|l| l.color)
                .expect(label)
        };
        for name in ["fl-server", "fl-client-3"] {
            assert_eq!(
                colour_of(network, &format!("{name} rx")),
                colour_of(cpu, name),
                "{name} keeps its colour across panels"
            );
        }
    }

    #[test]
    fn clients_keep_their_colour_and_legend_place_whatever_order_they_arrive_in() {
        use crate::analysis::history::{ClientUpdate, RoundEnd};
        let run = |arrival: &[&str]| {
            let mut doc = History::default();
            for round in 1..=3 {
                doc.rounds.push(RoundEnd {
                    run_id: Some("r".into()),
                    round,
                    global_loss: Some(1.0),
                    ..RoundEnd::default()
                });
                for id in arrival {
                    doc.clients.push(ClientUpdate {
                        run_id: Some("r".into()),
                        round,
                        client_id: Some((*id).into()),
                        loss: Some(0.5),
                        ..ClientUpdate::default()
                    });
                }
            }
            let mut analyzer = Analyzer::new(AnalysisConfig::default()).expect("analyzer");
            analyzer.ingest_all(&[doc]);
            let figure = figures(&analyzer).swap_remove(1);
            figure.panels[0]
                .lines
                .iter()
                .map(|l| (l.label.clone(), l.color))
                .collect::<Vec<_>>()
        };
        let first = run(&["site-3", "site-1", "site-2"]);
        assert_eq!(
            first.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
            ["site-1", "site-2", "site-3"]
        );
        assert_eq!(first, run(&["site-2", "site-3", "site-1"]));
    }

    #[test]
    fn titles_count_in_singular_and_plural() {
        assert_eq!(count(1, "consumer group"), "1 consumer group");
        assert_eq!(count(2, "topic"), "2 topics");
        assert_eq!(count(0, "topic"), "0 topics");
    }

    #[test]
    fn a_network_panel_with_room_for_every_pod_keeps_its_plain_title() {
        let mut analyzer = Analyzer::new(AnalysisConfig::default()).expect("analyzer");
        analyzer.ingest_all(&[pod("fl-server", 2.0, 9e6), pod("fl-client-1", 80.0, 3e6)]);
        let figure = system_metrics(&analyzer);
        assert_eq!(figure.panels[2].title, "Network Throughput");
        assert_eq!(figure.panels[2].lines.len(), 4);
    }
}
