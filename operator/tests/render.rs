//! Renders the five figure sets, the report and the dashboard page from a realistic history, and
//! checks them as files: PNG signature and size, pixels actually drawn, SVG well-formed, every
//! value of the report filled. One test renders again inside a mount namespace where the system's
//! font folders are empty, proving the embedded font is all the plots need.

use std::path::{Path, PathBuf};
use std::process::Command;

use flmon_operator::analysis::{
    AnalysisConfig, Analyzer, ClientUpdate, History, KafkaSample, RoundEnd, SystemSample,
    history::{AgentInfo, GpuSample},
};
use flmon_operator::render::{self, Size};

fn samples() -> PathBuf {
    let dir = std::env::var_os("FLMON_SAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/samples/fl"));
    assert!(
        dir.is_dir(),
        "sample curves not found at {} (set FLMON_SAMPLES_DIR)",
        dir.display()
    );
    dir
}

/// A deterministic pseudo-random stream (no dependency needed for test noise).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The server's history: FedAvg MNIST E=20 (its loss turns NaN at round 818) with participants,
/// durations and optimiser norms added; client pods with `clients` clients, one of them slow;
/// three pods' host samples; two topics and a consumer group.
fn histories(clients: usize) -> Vec<History> {
    let path = samples().join("derived/flower-fedavg-mnist/hist_C=100_B=1000000_E=20_R=1000_stag=0.0.csv");
    let text = std::fs::read_to_string(&path).expect("sample");
    let mut noise = Noise(7);
    let t0 = 1_750_000_000.0;
    let mut server = History {
        agent: AgentInfo {
            pod: "fl-server-0".into(),
            uid: "u-server".into(),
            role: "server".into(),
            ..AgentInfo::default()
        },
        ..History::default()
    };
    let mut client_docs: Vec<History> = (0..clients)
        .map(|i| History {
            agent: AgentInfo {
                pod: format!("fl-client-{i}"),
                uid: format!("u-client-{i}"),
                role: "client".into(),
                client_id: Some(format!("client-{i:02}")),
                ..AgentInfo::default()
            },
            ..History::default()
        })
        .collect();
    for line in text.lines().skip(1) {
        let mut f = line.split(',');
        let round: u64 = f.next().and_then(|v| v.parse().ok()).expect("round");
        let loss = f.next().and_then(|v| v.parse::<f64>().ok());
        let accuracy = f.next().and_then(|v| v.parse::<f64>().ok());
        let time = t0 + round as f64 * 4.0;
        let participants = if round % 97 == 50 {
            0
        } else {
            clients as u32 - u32::from(noise.next() < 0.1)
        };
        server.rounds.push(RoundEnd {
            run_id: Some("mnist-e20".into()),
            round,
            global_loss: loss,
            global_accuracy: accuracy,
            participants: Some(participants),
            expected_participants: Some(clients as u32),
            duration_seconds: Some(3.5 + noise.next()),
            learning_rate: Some(0.1 * 0.5f64.powi((round / 250) as i32)),
            gradient_norm: Some(2.0 / (1.0 + round as f64 / 50.0) + 0.1 * noise.next()),
            weight_change_norm: Some(0.8 / (1.0 + round as f64 / 80.0) + 0.05 * noise.next()),
            time: Some(time),
            ..RoundEnd::default()
        });
        for (i, doc) in client_docs.iter_mut().enumerate() {
            if participants == 0 || (i == 1 && round.is_multiple_of(3)) {
                continue;
            }
            let base = if i == 0 { 5.0 } else { 2.0 + 0.1 * i as f64 };
            doc.clients.push(ClientUpdate {
                run_id: Some("mnist-e20".into()),
                round,
                loss: loss.map(|l| l * (1.0 + 0.3 * noise.next())),
                accuracy: accuracy.map(|a| (a * (0.95 + 0.05 * noise.next())).min(1.0)),
                training_seconds: Some(
                    base * (1.0 + 0.2 * noise.next()) + if i == 2 { round as f64 * 0.004 } else { 0.0 },
                ),
                samples: Some(600),
                time: Some(time),
                ..ClientUpdate::default()
            });
        }
    }
    let mut docs = vec![server];
    docs.extend(client_docs);
    for (p, doc) in docs.iter_mut().take(3).enumerate() {
        for k in 0..720 {
            let t = t0 + f64::from(k) * 5.0;
            doc.system.push(SystemSample {
                time: Some(t),
                cpu_percent: Some(30.0 + 20.0 * p as f64 + 15.0 * noise.next()),
                memory_percent: Some(40.0 + 5.0 * p as f64 + f64::from(k) * 0.01),
                network_rx_bytes_per_second: Some(2e6 * (1.0 + noise.next())),
                network_tx_bytes_per_second: Some(1e6 * (1.0 + noise.next())),
                gpus: if p == 0 {
                    vec![GpuSample {
                        utilization_percent: Some(60.0 + 30.0 * noise.next()),
                        memory_used_bytes: Some(30e9),
                        memory_total_bytes: Some(80e9),
                        ..GpuSample::default()
                    }]
                } else {
                    Vec::new()
                },
                ..SystemSample::default()
            });
        }
    }
    for k in 0..720 {
        let t = t0 + f64::from(k) * 5.0;
        for (topic, rate) in [("fl-updates", 40.0), ("fl-global-model", 4.0)] {
            docs[0].kafka.push(KafkaSample {
                time: Some(t),
                topic: Some(topic.into()),
                messages_per_second: Some(rate * (0.8 + 0.4 * noise.next())),
                bytes_per_second: Some(rate * 250_000.0 * (0.8 + 0.4 * noise.next())),
                latency_seconds: Some(0.02 + 0.05 * noise.next()),
                ..KafkaSample::default()
            });
        }
        docs[0].kafka.push(KafkaSample {
            time: Some(t),
            group: Some("fl-server".into()),
            lag: Some((100.0 * noise.next()).floor()),
            ..KafkaSample::default()
        });
    }
    docs
}

fn out_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("FLMON_RENDER_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("flmon-render-{}", std::process::id())));
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).expect("output folder");
    dir
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn check_rendered(dir: &Path, size: Size) {
    for name in render::FIGURES {
        let png = std::fs::read(dir.join(format!("{name}.png"))).expect("png written");
        assert_eq!(png_size(&png), (size.width, size.height), "{name}");
        assert!(png.len() > 20_000, "{name}.png is only {} bytes", png.len());
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).expect("svg written");
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}.svg"
        );
        assert!(svg.matches("<text").count() > 20, "{name}.svg has its labels");
    }
    let report = std::fs::read_to_string(dir.join("report.md")).expect("report");
    assert!(
        !report.contains("{") && !report.contains("Unknown"),
        "every value filled:\n{report}"
    );
    let page = std::fs::read_to_string(dir.join("index.html")).expect("page");
    assert_eq!(page.matches("<figure").count(), 5);
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "no external requests"
    );
}

#[test]
fn the_five_figures_report_and_page_render_from_a_diverging_run() {
    let size = Size::DEFAULT;
    let dir = out_dir("diverging");
    let rendered = render::render_dir(
        &histories(6),
        AnalysisConfig {
            target_accuracy: Some(0.99),
            ..AnalysisConfig::default()
        },
        &dir,
        size,
    )
    .expect("rendered");
    assert_eq!(rendered.files.len(), 12);
    check_rendered(&dir, size);
    let report = std::fs::read_to_string(dir.join("report.md")).expect("report");
    assert!(report.contains("**Diverged**"), "{report}");
    assert!(
        report.contains("Training diverged"),
        "a recommendation follows from the divergence:\n{report}"
    );
    assert!(
        report.contains("client-00"),
        "the slow client is named:\n{report}"
    );
}

#[test]
fn many_clients_are_drawn_as_a_median_with_a_percentile_band() {
    let size = Size {
        width: 1200,
        height: 800,
    };
    let dir = out_dir("many-clients");
    render::render_dir(&histories(24), AnalysisConfig::default(), &dir, size).expect("rendered");
    check_rendered(&dir, size);
    let svg = std::fs::read_to_string(dir.join("client_metrics.svg")).expect("svg");
    assert!(svg.contains("median of 24 clients"), "legend names the aggregate");
}

#[test]
fn an_empty_history_still_renders_every_figure_saying_no_data() {
    let size = Size {
        width: 900,
        height: 600,
    };
    let dir = out_dir("empty");
    render::render_dir(&[], AnalysisConfig::default(), &dir, size).expect("rendered");
    let svg = std::fs::read_to_string(dir.join("training_progress.svg")).expect("svg");
    assert!(svg.contains("no data reported"));
    let report = std::fs::read_to_string(dir.join("report.md")).expect("report");
    assert!(report.contains("No training events have arrived"), "{report}");
}

/// Renders in this process (anywhere) and, when `FLMON_FONTLESS` is set by the test below, first
/// checks that the system's font folders really are empty.
#[test]
fn rendering_needs_no_installed_font() {
    if std::env::var_os("FLMON_FONTLESS").is_some() {
        for dir in ["/usr/share/fonts", "/usr/local/share/fonts", "/etc/fonts"] {
            let entries = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
            assert_eq!(entries, 0, "{dir} should be hidden in this namespace");
        }
    }
    let analyzer = Analyzer::new(AnalysisConfig::default()).expect("config");
    let mut analyzer = analyzer;
    analyzer.ingest_merged(&flmon_operator::analysis::merge(&histories(4)));
    let figure = render::figures::training_progress(&analyzer);
    let rgb = render::render_rgb(&figure, Size::DEFAULT).expect("drawn");
    // The title band (top 40 px) holds dark text pixels only if glyphs were drawn.
    let dark = rgb[..1500 * 40 * 3]
        .chunks(3)
        .filter(|p| p.iter().all(|&c| c < 100))
        .count();
    assert!(
        dark > 500,
        "only {dark} dark pixels in the title: no glyphs drawn"
    );
}

#[test]
fn figures_render_in_a_namespace_where_the_font_folders_are_empty() {
    let exe = std::env::current_exe().expect("test binary");
    let script = format!(
        "for d in /usr/share/fonts /usr/local/share/fonts /etc/fonts; do if [ -d $d ]; then mount -t tmpfs none $d || exit 1; fi; done && exec {} --exact rendering_needs_no_installed_font --test-threads 1",
        exe.display()
    );
    let output = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .env("FLMON_FONTLESS", "1")
        .output()
        .expect("unshare runs (util-linux; needs root or user namespaces)");
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
fn odd_values_render_without_failing() {
    // Non-finite, negative (on the log-scale panel), huge, tiny and constant values, a single
    // round, an out-of-range accuracy and a duration of zero: every figure still draws.
    let values = [
        1e300,
        -5.0,
        0.0,
        f64::NAN,
        f64::INFINITY,
        1e-300,
        f64::NEG_INFINITY,
        2.0,
    ];
    for (case, take) in [(0usize, 1usize), (1, 2), (2, values.len())] {
        let mut analyzer = Analyzer::new(AnalysisConfig {
            target_loss: Some(0.5),
            ..AnalysisConfig::default()
        })
        .expect("valid settings");
        for (i, v) in values.iter().take(take).enumerate() {
            analyzer.push_round(&RoundEnd {
                run_id: Some("odd".into()),
                round: 7 + i as u64,
                global_loss: Some(*v),
                global_accuracy: Some(if i % 2 == 0 { 1.5 } else { 0.0 }),
                participants: Some(0),
                duration_seconds: Some(0.0),
                learning_rate: Some(*v),
                gradient_norm: Some(-*v),
                ..RoundEnd::default()
            });
            analyzer.push_client(&ClientUpdate {
                run_id: Some("odd".into()),
                round: i as u64,
                client_id: Some(format!("c{i}")),
                loss: Some(*v),
                training_seconds: Some(*v),
                ..ClientUpdate::default()
            });
        }
        for figure in render::figures(&analyzer) {
            let svg = render::render_svg(
                &figure,
                Size {
                    width: 600,
                    height: 400,
                },
            )
            .expect("svg");
            assert!(svg.contains("</svg>"), "case {case}: {}", figure.name);
            let png = render::render_png(
                &figure,
                Size {
                    width: 600,
                    height: 400,
                },
            )
            .expect("png");
            assert_eq!(png_size(&png), (600, 400), "case {case}: {}", figure.name);
        }
    }
}

#[test]
fn a_saved_history_that_is_not_json_names_the_file_and_position() {
    let dir = out_dir("bad-input");
    let path = dir.join("server.json");
    std::fs::write(&path, "{\"rounds\": [{\"round\": 1, \"global_loss\": \"lots\"}]}").expect("written");
    let error = render::render_files(
        std::slice::from_ref(&path),
        AnalysisConfig::default(),
        &dir.join("out"),
        Size::DEFAULT,
    )
    .expect_err("a word is not a loss");
    let text = error.to_string();
    assert!(
        text.contains("server.json") && text.contains("line 1") && text.contains("lots"),
        "{text}"
    );
}
