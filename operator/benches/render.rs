//! Benchmark (not a test): the 4-panel training-progress figure at the seed's size (4500×3000 px)
//! for 100, 1 000 and 10 000 rounds, against the seed's matplotlib code on the same data in the
//! same run; and the analysis of a 1 000 000-round history.
//!
//! `cargo bench -p flmon-operator --bench render`. The seed side needs a Python with matplotlib
//! and seaborn: `FLMON_PYTHON` (default `~/.cache/flmon/venv/bin/python`) and the seed document
//! `FLMON_SEED_MD` (default `../shared/seed/monitoring-and-visualization.md` beside the
//! repository). Without them the seed column is reported as unavailable.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use flmon_operator::analysis::{AnalysisConfig, Analyzer, RoundEnd};
use flmon_operator::render::{self, Size};

/// Deterministic training-like curves: loss decaying with noise, accuracy rising, participants
/// around 10 of 12, durations around 30 s.
fn curves(rounds: usize) -> Vec<RoundEnd> {
    let mut state = 42u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..rounds)
        .map(|i| {
            let t = i as f64 / rounds.max(1) as f64;
            RoundEnd {
                run_id: Some("bench".into()),
                round: i as u64,
                global_loss: Some(2.3 * (-4.0 * t).exp() + 0.05 + 0.02 * noise()),
                global_accuracy: Some((0.1 + 0.85 * (1.0 - (-5.0 * t).exp()) + 0.01 * noise()).min(1.0)),
                participants: Some(8 + (noise() * 5.0) as u32),
                expected_participants: Some(12),
                duration_seconds: Some(30.0 + 10.0 * noise()),
                ..RoundEnd::default()
            }
        })
        .collect()
}

/// Time this thread has spent on a CPU (`/proc/thread-self/schedstat`, nanoseconds): on a shared
/// machine wall time also counts the time other processes held the cores.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn seed_times(data: &[(usize, Vec<RoundEnd>)]) -> Result<Vec<(usize, f64)>, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("FLMON_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/flmon/venv/bin/python")
        });
    let seed_md = std::env::var_os("FLMON_SEED_MD")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/seed/monitoring-and-visualization.md"));
    if !seed_md.is_file() {
        return Err(format!("seed document not found at {}", seed_md.display()));
    }
    let dir = std::env::temp_dir().join(format!("flmon-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut json = serde_json::Map::new();
    for (n, rounds) in data {
        let pick = |f: fn(&RoundEnd) -> f64| -> Vec<f64> { rounds.iter().map(f).collect() };
        json.insert(
            n.to_string(),
            serde_json::json!({
                "global_loss": pick(|r| r.global_loss.unwrap_or(f64::NAN)),
                // The seed plots accuracy in percent.
                "global_accuracy": pick(|r| 100.0 * r.global_accuracy.unwrap_or(f64::NAN)),
                "client_participation": pick(|r| f64::from(r.participants.unwrap_or(0))),
                "round_duration": pick(|r| r.duration_seconds.unwrap_or(f64::NAN)),
            }),
        );
    }
    let data_path = dir.join("data.json");
    std::fs::write(&data_path, serde_json::Value::Object(json).to_string()).map_err(|e| e.to_string())?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/seed_training_progress.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&seed_md)
        .arg(&data_path)
        .arg(&dir)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect())
}

fn main() {
    // `FLMON_BENCH=analysis` runs only the analysis part.
    if std::env::var("FLMON_BENCH").as_deref() != Ok("analysis") {
        figures();
    }
    analysis();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn figures() {
    let size = Size::SEED;
    let data: Vec<(usize, Vec<RoundEnd>)> =
        [100, 1_000, 10_000].into_iter().map(|n| (n, curves(n))).collect();
    let out = std::env::temp_dir().join(format!("flmon-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("output folder");
    println!(
        "training-progress figure, {}×{} px, median of 5 warm runs",
        size.width, size.height
    );
    // (rounds, draw, encode, total, total on CPU)
    let mut ours = Vec::new();
    for (n, rounds) in &data {
        let (mut draw, mut encode, mut total, mut cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..6 {
            let started = Instant::now();
            let cpu_started = cpu_time();
            let mut analyzer = Analyzer::new(AnalysisConfig::default()).expect("defaults are valid");
            for r in rounds {
                analyzer.push_round(r);
            }
            let figure = render::figures::training_progress(&analyzer);
            let (png, timing) = render::render_png_timed(&figure, size).expect("rendered");
            std::fs::write(out.join(format!("flmon_training_progress_{n}.png")), &png).expect("written");
            let elapsed = started.elapsed();
            let on_cpu = cpu_time().saturating_sub(cpu_started);
            if i > 0 {
                draw.push(elapsed - timing.encode);
                encode.push(timing.encode);
                total.push(elapsed);
                cpu.push(on_cpu);
            }
        }
        ours.push((*n, median(draw), median(encode), median(total), median(cpu)));
    }
    let seed = seed_times(&data);
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>13} {:>11} {:>13} {:>13}",
        "rounds",
        "flmon draw",
        "flmon encode",
        "flmon total",
        "(on CPU)",
        "seed total",
        "ratio draw",
        "ratio total"
    );
    for (n, draw, encode, total, cpu) in &ours {
        let seed_s = seed
            .as_ref()
            .ok()
            .and_then(|s| s.iter().find(|(m, _)| m == n).map(|(_, t)| *t));
        let (ratio_draw, ratio_total, seed_ms) = match seed_s {
            Some(s) => (
                format!("{:.0}×", s / draw.as_secs_f64()),
                format!("{:.0}×", s / total.as_secs_f64()),
                format!("{:.0}ms", s * 1e3),
            ),
            None => ("n/a".into(), "n/a".into(), "n/a".into()),
        };
        println!(
            "{n:>7} {:>10.1}ms {:>10.1}ms {:>10.1}ms {:>11.1}ms {seed_ms:>11} {ratio_draw:>13} {ratio_total:>13}",
            ms(*draw),
            ms(*encode),
            ms(*total),
            ms(*cpu),
        );
    }
    if let Err(e) = &seed {
        println!("seed side unavailable: {e}");
    }
    println!("figures written to {}", out.display());
}

fn analysis() {
    let history = curves(1_000_000);
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let started = Instant::now();
        let cpu_started = cpu_time();
        let mut analyzer = Analyzer::new(AnalysisConfig {
            target_loss: Some(0.06),
            ..AnalysisConfig::default()
        })
        .expect("valid settings");
        for r in &history {
            analyzer.push_round(r);
        }
        let analysis = analyzer.analysis();
        wall.push(started.elapsed());
        cpu.push(cpu_time().saturating_sub(cpu_started));
        assert_eq!(analysis.rounds_analysed, 1_000_000);
        std::hint::black_box(analyzer.heap_bytes());
    }
    // The floor: only reading the events' losses once.
    let mut reads = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let sum: f64 = history.iter().filter_map(|r| r.global_loss).sum();
        std::hint::black_box(sum);
        reads.push(started.elapsed());
    }
    let mut analyzer = Analyzer::new(AnalysisConfig::default()).expect("defaults");
    for r in &history {
        analyzer.push_round(r);
    }
    println!(
        "analysis of a 1 000 000-round history: {:.1} ms wall, {:.1} ms on CPU (median of 5; target ≤ 50 ms); \
         reading the events alone: {:.1} ms ({} bytes each); analyzer heap afterwards: {} KiB",
        ms(median(wall)),
        ms(median(cpu)),
        ms(median(reads)),
        std::mem::size_of::<RoundEnd>(),
        analyzer.heap_bytes() / 1024
    );
}
