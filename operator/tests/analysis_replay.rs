//! Replays real federated-learning curves (`shared/samples/fl`, see its SOURCES.md) through the
//! analysis. Each test says where its expected values come from: they were derived from the data
//! by hand or with a few lines of independent Python, never from this code's output.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use flmon_operator::analysis::{AnalysisConfig, Analyzer, ClientUpdate, Metric, RoundEnd, State, Trend};

/// `shared/samples/fl` beside the repository (override with `FLMON_SAMPLES_DIR`).
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

/// Rows of a small CSV file as column-name → field maps (no quoted fields in these files).
fn csv(path: &str, separator: char) -> Vec<HashMap<String, String>> {
    let path = samples().join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header")
        .split(separator)
        .map(str::to_string)
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(separator).map(str::to_string))
                .collect()
        })
        .collect()
}

/// A number, or `None` for an empty field; `nan` parses as NaN.
fn num(field: &str) -> Option<f64> {
    let field = field.trim();
    (!field.is_empty()).then(|| field.parse().unwrap_or_else(|e| panic!("{field:?}: {e}")))
}

fn round_end(run: &str, round: u64, loss: Option<f64>, accuracy: Option<f64>) -> RoundEnd {
    RoundEnd {
        run_id: Some(run.into()),
        round,
        global_loss: loss,
        global_accuracy: accuracy,
        ..RoundEnd::default()
    }
}

fn analyzer(config: AnalysisConfig) -> Analyzer {
    Analyzer::new(config).expect("valid settings")
}

/// FedAvg MNIST (Flower's replication of McMahan et al.), E=20, B=∞: the file's loss column reads
/// `nan` from round 818 on while accuracy drops 0.9914 → 0.098 (SOURCES.md; rows 818–1000).
#[test]
fn fedavg_mnist_is_diverged_from_the_round_its_loss_turns_nan() {
    let rows = csv(
        "derived/flower-fedavg-mnist/hist_C=100_B=1000000_E=20_R=1000_stag=0.0.csv",
        ',',
    );
    let mut a = analyzer(AnalysisConfig {
        target_accuracy: Some(0.99),
        ..AnalysisConfig::default()
    });
    for row in &rows {
        let round: u64 = row["round"].parse().expect("round");
        a.push_round(&round_end(
            "mnist",
            round,
            num(&row["loss_centralized"]),
            num(&row["accuracy_centralized"]),
        ));
        let analysis = a.analysis();
        if round < 818 {
            assert_ne!(analysis.convergence.state, State::Diverged, "round {round}");
            assert!(!analysis.conditions.diverged.status, "round {round}");
        } else {
            assert_eq!(analysis.convergence.state, State::Diverged, "round {round}");
            assert_eq!(
                analysis.conditions.diverged.reason, "NonFiniteLoss",
                "round {round}"
            );
        }
    }
    let analysis = a.analysis();
    // First row with accuracy ≥ 0.99 is round 527 (0.9901): the target was reached there, and
    // Converged stays true — the run did converge before it diverged.
    assert_eq!(analysis.convergence.target_reached_round, Some(527));
    assert!(analysis.conditions.converged.status);
    assert_eq!(analysis.data_quality.non_finite_loss, 183, "rounds 818–1000");
    assert!(
        analysis.conditions.diverged.message.contains("since round 818"),
        "{}",
        analysis.conditions.diverged.message
    );
    assert_eq!(
        analysis.transitions.last().map(|t| (t.round, t.to)),
        Some((818, State::Diverged)),
        "{:?}",
        analysis.transitions
    );
}

/// McMahan et al. 2017, Table 2 (MNIST CNN, 99 % target, non-IID) against Flower's replication
/// curves. The expected rounds are the first row of each file with accuracy ≥ 0.99, read off the
/// files; the paper's numbers are in the same range (the replication's partition and seeds
/// differ), which the looser check documents.
#[test]
fn rounds_to_the_99_percent_target_match_the_first_crossing_in_each_replicated_curve() {
    // (file, first round with accuracy ≥ 0.99 in the file, the paper's non-IID rounds)
    let cases = [
        ("hist_C=100_B=1000000_E=5_R=1000_stag=0.0.csv", 989, 1000),
        ("hist_C=100_B=50_E=1_R=1000_stag=0.0.csv", 547, 600),
        ("hist_C=100_B=1000000_E=20_R=1000_stag=0.0.csv", 527, 672),
        ("hist_C=100_B=10_E=1_R=1000_stag=0.0.csv", 123, 350),
        ("hist_C=100_B=50_E=5_R=1000_stag=0.0.csv", 305, 334),
        ("hist_C=100_B=10_E=5_R=1000_stag=0.0.csv", 104, 229),
    ];
    let table = csv("transcribed/mcmahan2017/table2_rounds_to_target.csv", ',');
    for (file, first_crossing, paper) in cases {
        let rows = csv(&format!("derived/flower-fedavg-mnist/{file}"), ',');
        let mut a = analyzer(AnalysisConfig {
            target_accuracy: Some(0.99),
            ..AnalysisConfig::default()
        });
        for row in &rows {
            let round = row["round"].parse().expect("round");
            a.push_round(&round_end(
                "r",
                round,
                num(&row["loss_centralized"]),
                num(&row["accuracy_centralized"]),
            ));
        }
        let analysis = a.analysis();
        assert_eq!(
            analysis.convergence.target_reached_round,
            Some(first_crossing),
            "{file}"
        );
        let ratio = first_crossing as f64 / paper as f64;
        assert!(
            (0.25..=4.0).contains(&ratio),
            "{file}: {first_crossing} vs the paper's {paper}"
        );
        assert!(
            table
                .iter()
                .any(|r| r["rounds_noniid"] == paper.to_string() && r["target_accuracy"] == "0.99"),
            "{paper} is in the transcribed table"
        );
    }
    // B=10, E=5 reports no loss at all (empty column): accuracy becomes the primary metric.
    let rows = csv(
        "derived/flower-fedavg-mnist/hist_C=100_B=10_E=5_R=1000_stag=0.0.csv",
        ',',
    );
    let mut a = analyzer(AnalysisConfig::default());
    for row in &rows {
        let round = row["round"].parse().expect("round");
        a.push_round(&round_end(
            "r",
            round,
            num(&row["loss_centralized"]),
            num(&row["accuracy_centralized"]),
        ));
    }
    assert_eq!(a.analysis().convergence.metric, Metric::Accuracy);
    assert_eq!(a.analysis().conditions.converged.reason, "NoTarget");
}

/// Flower FedNova baselines: in 10 of the 59 files (SOURCES.md says 63; the folder holds 59) the loss column turns empty (NaN written as
/// nothing) and accuracy falls to 10.0119 % — chance for CIFAR-10 — from then on. Listed below with
/// the first empty-loss row, read off each file. The other 49 files never collapse. Accuracy is in
/// percent in these files and is divided by 100 here (flmon's events carry 0–1).
#[test]
fn fednova_runs_whose_accuracy_collapses_to_chance_are_diverged_from_that_round() {
    let collapsed: BTreeMap<&str, u64> = [
        ("momentum_fednova_varEpoch_True_seed_3_Dec3.csv", 58),
        ("proximal_fedavg_varEpoch_False_seed_1_Dec3.csv", 93),
        ("proximal_fedavg_varEpoch_True_seed_4_Dec3_mu_0.001.csv", 81),
        ("proximal_fedavg_varEpoch_True_seed_6_Dec3_mu_0.001.csv", 37),
        ("proximal_fednova_varEpoch_False_seed_2_Dec3.csv", 78),
        ("proximal_fednova_varEpoch_False_seed_6_Dec3.csv", 99),
        ("proximal_fednova_varEpoch_True_seed_1_Dec3.csv", 74),
        ("proximal_fednova_varEpoch_True_seed_3_Dec3.csv", 78),
        ("vanilla_fedavg_varEpoch_True_seed_2_Dec3.csv", 70),
        ("vanilla_fednova_varEpoch_True_seed_3_Dec3.csv", 78),
    ]
    .into_iter()
    .collect();
    let mut files: Vec<_> = std::fs::read_dir(samples().join("flower-fednova"))
        .expect("fednova folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 59);
    for file in &files {
        let rows = csv(&format!("flower-fednova/{file}"), ',');
        let mut a = analyzer(AnalysisConfig::default());
        let mut first_diverged = None;
        for row in &rows {
            let round: u64 = row["round"].parse().expect("round");
            let accuracy = num(&row["test_accuracy"]).map(|p| p / 100.0);
            a.push_round(&round_end("r", round, num(&row["test_loss"]), accuracy));
            let analysis = a.analysis();
            if analysis.convergence.state == State::Diverged && first_diverged.is_none() {
                first_diverged = Some(round);
                assert_eq!(analysis.conditions.diverged.reason, "AccuracyCollapsed", "{file}");
            }
            if first_diverged.is_some() {
                assert_eq!(
                    analysis.convergence.state,
                    State::Diverged,
                    "{file} round {round}"
                );
            }
        }
        assert_eq!(first_diverged, collapsed.get(file.as_str()).copied(), "{file}");
    }
}

/// LEAF FEMNIST, minibatch SGD, 3 clients per round (`stat_metrics_minibatch_c_3_mb_0.1.csv`):
/// every 20 rounds all 35 clients are evaluated. The global accuracy is the sample-weighted mean of
/// the clients' accuracies (LEAF's own aggregate): 0.006, 0.047, 0.045, 0.049, 0.074, 0.158, … at
/// rounds 0, 19, 39, 59, 79, 99. With minDelta 0.1 (relative) and stallRounds 30, an independent
/// Python pass over these values gives the Stalled transitions
/// raise 59, clear 79, raise 139, clear 159, raise 259, clear 279, raise 359, clear 419,
/// raise 499, clear 679, raise 719, clear 1399, raise 1439: the long early plateau (rounds 19–59)
/// raises Stalled, and the rise at round 79 clears it.
#[test]
fn leaf_femnist_early_plateau_raises_stalled_and_the_later_rise_clears_it() {
    let rows = csv("leaf-baseline/stat_metrics_minibatch_c_3_mb_0.1.csv", ',');
    let mut per_round: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for row in &rows {
        let round = row["round_number"].parse().expect("round");
        let n: f64 = row["num_samples"].parse().expect("samples");
        let acc = num(&row["accuracy"]).expect("accuracy");
        let e = per_round.entry(round).or_default();
        e.0 += n * acc;
        e.1 += n;
    }
    let config = AnalysisConfig {
        window: 3,
        min_delta: 0.1,
        stall_rounds: 30,
        primary_metric: Some(Metric::Accuracy),
        ..AnalysisConfig::default()
    };
    let mut a = analyzer(config);
    let mut stalled = false;
    let mut changes = Vec::new();
    for (&round, &(sum, n)) in &per_round {
        a.push_round(&round_end("femnist", round, None, Some(sum / n)));
        let now = a.analysis().conditions.stalled.status;
        if now != stalled {
            changes.push((round, if now { "raise" } else { "clear" }));
            stalled = now;
        }
    }
    assert_eq!(
        changes,
        [
            (59, "raise"),
            (79, "clear"),
            (139, "raise"),
            (159, "clear"),
            (259, "raise"),
            (279, "clear"),
            (359, "raise"),
            (419, "clear"),
            (499, "raise"),
            (679, "clear"),
            (719, "raise"),
            (1399, "clear"),
            (1439, "raise"),
        ]
    );
    let analysis = a.analysis();
    assert_eq!(
        analysis.data_quality.missing_rounds, 1899,
        "rounds 0…1999 with 101 evaluated"
    );
    assert!(
        analysis
            .transitions
            .iter()
            .any(|t| t.round == 59 && t.to == State::Stalled)
    );
}

/// LEAF Sent140, k=10: 18 600 clients, each evaluated at rounds 0, 1, 3, 5, 7, 9 (111 600 rows).
/// Every client appears in 6 of the 10 rounds since its first (round 0), so each participation
/// rate is 6 / 10. Memory must stay bounded: a fixed size per client, none per round.
#[test]
fn leaf_sent140_with_18600_clients_stays_within_memory_bounds() {
    let rows = csv("leaf-baseline/stat_metrics_k_10.csv", ',');
    assert_eq!(rows.len(), 111_600);
    let mut a = analyzer(AnalysisConfig::default());
    let started = Instant::now();
    let mut rounds: Vec<u64> = Vec::new();
    for row in &rows {
        let round: u64 = row["round_number"].parse().expect("round");
        a.push_client(&ClientUpdate {
            run_id: Some("sent140".into()),
            round,
            client_id: Some(row["client_id"].clone()),
            accuracy: num(&row["accuracy"]),
            samples: row["num_samples"].parse().ok(),
            ..ClientUpdate::default()
        });
        if rounds.last() != Some(&round) {
            rounds.push(round);
        }
    }
    let elapsed = started.elapsed();
    let summaries = a.client_summaries();
    assert_eq!(summaries.len(), 18_600);
    assert!(
        summaries
            .iter()
            .all(|c| (c.participation_rate - 0.6).abs() < 1e-12)
    );
    assert!(summaries.iter().all(|c| c.rounds_participated == 6));
    let bytes = a.heap_bytes();
    // Fixed per client (≈ 300 bytes of state and id) plus fixed-size series: well under 16 MiB.
    assert!(bytes < 16 << 20, "{bytes} bytes for 18 600 clients");
    assert!(bytes / 18_600 < 900, "{} bytes per client", bytes / 18_600);
    assert!(elapsed.as_secs() < 30, "{elapsed:?} to ingest 111 600 updates");
}

/// LEAF FEMNIST, 35 clients every round for 1 516 rounds (`sys_metrics_minibatch_c_35_mb_1.csv`):
/// a client's work (`local_computations`, FLOPs) is the same in every round (checked in the file:
/// one distinct value per client). With training time proportional to work (equal devices), the
/// stragglers are the clients whose work exceeds 1.5 × the round median (10 245 544 296 FLOPs):
/// clients 1, 4, 6, 7, 8, 14, 16, 17, 20, 21, 25, 30, 32, 33, 34 — slow in all of the last 5 rounds.
/// Their times never change, so every trend is stable and every consistency is 1.
#[test]
fn leaf_femnist_clients_with_one_and_a_half_times_the_median_work_are_stragglers() {
    let rows = csv("leaf-baseline/sys_metrics_minibatch_c_35_mb_1.csv", ',');
    let mut a = analyzer(AnalysisConfig::default());
    for row in &rows {
        let flops: f64 = row["local_computations"].parse().expect("flops");
        a.push_client(&ClientUpdate {
            run_id: Some("femnist".into()),
            round: row["round_number"].parse().expect("round"),
            client_id: Some(row["client_id"].clone()),
            training_seconds: Some(flops / 1e9),
            samples: row["num_samples"].parse().ok(),
            ..ClientUpdate::default()
        });
    }
    let summaries = a.client_summaries();
    let mut stragglers: Vec<u32> = summaries
        .iter()
        .filter(|c| c.straggler)
        .map(|c| c.client_id.parse().expect("numeric id"))
        .collect();
    stragglers.sort_unstable();
    assert_eq!(
        stragglers,
        [1, 4, 6, 7, 8, 14, 16, 17, 20, 21, 25, 30, 32, 33, 34]
    );
    assert!(
        summaries.iter().all(|c| c.trend == Trend::Stable),
        "constant times"
    );
    assert!(summaries.iter().all(|c| c.consistency == Some(1.0)));
    assert!(summaries.iter().all(|c| c.participation_rate == 1.0));
    assert_eq!(a.analysis().clients.straggler_count, 15);
}

/// flwr 1.42 with two SuperNodes, the second killed during round 3 and restarted
/// (`flwr-observed/…kill-restart.jsonl`). Read off the file's `client_train` records:
/// node 7297720139867940625 trains in rounds 1–8 (8 of 8); node 8214760308039278097 in rounds 1–2
/// and never again (2 of 8); the failure in round 3 arrives as `node: 1` with `error: true` (0 of
/// 6, a failure does not count as participating); the restarted node 6961120448902293393 trains in
/// rounds 4–8 (5 of 5). Round 3 had 1 of 2 expected clients: not LowParticipation (minimum 1).
#[test]
fn flower_kill_and_restart_shows_in_participation_rates() {
    let path = samples().join("flwr-observed/flwr-1.42.0-digits-2nodes-kill-restart.jsonl");
    let text = std::fs::read_to_string(&path).expect("jsonl");
    let mut a = analyzer(AnalysisConfig {
        expected_clients: Some(2),
        ..AnalysisConfig::default()
    });
    let mut participants: BTreeMap<u64, u32> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let round = v["round"].as_u64().expect("round");
        match v["kind"].as_str() {
            Some("client_train") => {
                let failed = v["error"].as_bool() == Some(true);
                *participants.entry(round).or_default() += u32::from(!failed);
                a.push_client(&ClientUpdate {
                    run_id: Some("digits".into()),
                    round,
                    client_id: Some(v["node"].to_string()),
                    loss: v["train_loss"].as_f64(),
                    training_seconds: v["train_time_s"].as_f64(),
                    samples: v["num-examples"].as_u64(),
                    failed: Some(failed),
                    ..ClientUpdate::default()
                });
            }
            Some("global_eval") => {
                let mut e = round_end("digits", round, v["eval_loss"].as_f64(), v["eval_acc"].as_f64());
                e.participants = participants.get(&round).copied();
                a.push_round(&e);
                if round == 3 {
                    assert!(!a.analysis().conditions.low_participation.status);
                    assert_eq!(a.analysis().active_clients, Some(1));
                }
            }
            _ => {}
        }
    }
    let rates: BTreeMap<String, (u64, f64)> = a
        .client_summaries()
        .into_iter()
        .map(|c| (c.client_id, (c.rounds_participated, c.participation_rate)))
        .collect();
    assert_eq!(rates["7297720139867940625"], (8, 1.0));
    assert_eq!(rates["8214760308039278097"], (2, 0.25));
    assert_eq!(rates["1"], (0, 0.0));
    assert_eq!(rates["6961120448902293393"], (5, 1.0));
}
