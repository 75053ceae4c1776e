//! The Markdown performance report: every value filled from the analysis (a value that cannot be
//! known says why, e.g. "n/a — no loss reported"), and recommendations derived from it.

use std::fmt::Write as _;

use crate::analysis::{Analysis, AnalysisConfig, ClientSummary, Metric, State, Trend};

/// `v` with `digits` decimals; a value too small for them keeps two significant digits (0.00086,
/// not 0.00), and tiny or huge values (a loss of 3e-6, a rate of 2e-9) go to scientific notation.
fn num(v: Option<f64>, digits: usize, missing: &str) -> String {
    match v {
        Some(v) if v.is_finite() && v != 0.0 && !(1e-4..1e6).contains(&v.abs()) => format!("{v:.3e}"),
        Some(v) if v.is_finite() && v != 0.0 && v.abs() < 0.5 * 10f64.powi(-(digits as i32)) => {
            let decimals = (-v.abs().log10()).ceil() as usize + 1;
            format!("{v:.decimals$}")
        }
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        Some(v) => format!("{v} (non-finite)"),
        None => format!("n/a — {missing}"),
    }
}

fn pct(v: Option<f64>, missing: &str) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:.2} %", 100.0 * v),
        Some(v) => format!("{v} (non-finite)"),
        None => format!("n/a — {missing}"),
    }
}

fn round_of(r: Option<u64>) -> String {
    r.map_or_else(|| "n/a".into(), |r| format!("round {r}"))
}

/// Markdown table cells must not contain `|` or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The report for monitor `name`.
pub fn markdown(name: &str, a: &Analysis, clients: &[ClientSummary], config: &AnalysisConfig) -> String {
    let c = &a.convergence;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Federated Learning Performance Report — {name}\n");
    let _ = writeln!(w, "## Executive Summary\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| Training status | **{}** |", c.state.as_str());
    let _ = writeln!(
        w,
        "| Run | {} |",
        cell(a.run_id.as_deref().unwrap_or("n/a — no training event yet"))
    );
    let _ = writeln!(
        w,
        "| Latest round | {} |",
        a.round
            .map_or("n/a — no round has ended".into(), |r| r.to_string())
    );
    let _ = writeln!(w, "| Rounds analysed | {} |", a.rounds_analysed);
    let _ = writeln!(
        w,
        "| Global loss | {} |",
        num(a.global_loss, 4, "no loss reported")
    );
    let _ = writeln!(
        w,
        "| Global accuracy | {} |",
        pct(a.global_accuracy, "no accuracy reported")
    );
    let expected = a
        .expected_clients
        .map_or("expected count unknown".to_string(), |n| {
            format!("of {n} expected")
        });
    let _ = writeln!(
        w,
        "| Active clients (last round) | {} |",
        a.active_clients
            .map_or("n/a — no participant count reported".into(), |p| format!(
                "{p} {expected}"
            ))
    );
    let _ = writeln!(
        w,
        "| Last round duration | {} |",
        seconds(a.round_duration_seconds, "not reported")
    );
    let _ = writeln!(w, "| Clients tracked | {} |", a.clients.tracked);
    let _ = writeln!(w);

    let _ = writeln!(w, "## Convergence Analysis\n");
    let metric = match c.metric {
        Metric::Loss => "loss",
        Metric::Accuracy => "accuracy",
    };
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| Primary metric | {metric} |");
    let _ = writeln!(w, "| Convergence state | {} |", c.state.as_str());
    let _ = writeln!(
        w,
        "| Convergence rate (improvement per round, last {} values) | {} |",
        config.window,
        num(c.rate, 6, "fewer than two values")
    );
    let _ = writeln!(
        w,
        "| Variance of the window (sample, n − 1) | {} |",
        num(c.variance, 6, "fewer than two values")
    );
    let _ = writeln!(
        w,
        "| Best loss | {} ({}) |",
        num(c.best_loss, 6, "no finite loss"),
        round_of(c.best_loss_round)
    );
    let _ = writeln!(
        w,
        "| Best accuracy | {} ({}) |",
        pct(c.best_accuracy, "no accuracy"),
        round_of(c.best_accuracy_round)
    );
    let _ = writeln!(
        w,
        "| Rounds without improvement | {} (stalled above {}, min delta {} relative) |",
        c.rounds_without_improvement, config.stall_rounds, config.min_delta
    );
    let target = match (config.target_loss, config.target_accuracy) {
        (None, None) => "none set".to_string(),
        (Some(l), None) => format!("loss ≤ {l}"),
        (None, Some(t)) => format!("accuracy ≥ {:.2} %", 100.0 * t),
        (Some(l), Some(t)) => format!("loss ≤ {l} and accuracy ≥ {:.2} %", 100.0 * t),
    };
    let _ = writeln!(w, "| Target | {target} |");
    let reached = match (c.target_reached_round, &target[..]) {
        (Some(r), _) => format!("reached at round {r}"),
        (None, "none set") => "n/a — no target set".into(),
        (None, _) => "not reached".into(),
    };
    let _ = writeln!(w, "| Target status | {reached} |");
    let eta = match (c.rounds_to_target, c.target_reached_round) {
        (_, Some(_)) => "0 — reached".to_string(),
        (Some(n), None) => format!("{n} (at the current rate)"),
        (None, None) if target == "none set" => "n/a — no target set".into(),
        (None, None) => format!("n/a — not improving ({})", c.state.as_str()),
    };
    let _ = writeln!(w, "| Estimated rounds to target | {eta} |");
    let _ = writeln!(w);
    let cond = &a.conditions;
    let _ = writeln!(w, "| Condition | Status | Reason | Message |\n|---|---|---|---|");
    for (name, k) in [
        ("Converged", &cond.converged),
        ("Stalled", &cond.stalled),
        ("LowParticipation", &cond.low_participation),
        ("Diverged", &cond.diverged),
    ] {
        let _ = writeln!(
            w,
            "| {name} | {} | {} | {} |",
            if k.status { "True" } else { "False" },
            k.reason,
            cell(&k.message)
        );
    }
    let _ = writeln!(w);
    if !a.transitions.is_empty() {
        let shown: Vec<String> = a
            .transitions
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(|t| format!("round {}: {} → {}", t.round, t.from.as_str(), t.to.as_str()))
            .collect();
        let _ = writeln!(
            w,
            "State changes (latest {}): {}.\n",
            shown.len(),
            shown.join("; ")
        );
    }

    let _ = writeln!(w, "## Client Performance\n");
    let o = &a.clients;
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| Clients tracked | {} |", o.tracked);
    let _ = writeln!(
        w,
        "| Average training time | {} |",
        seconds(o.mean_training_seconds, "no training times reported")
    );
    let describe = |c: &Option<ClientSummary>| match c {
        Some(c) => format!(
            "{} (consistency {}, mean {})",
            cell(&c.client_id),
            num(c.consistency, 3, "n/a"),
            seconds(c.mean_training_seconds, "n/a")
        ),
        None => "n/a — fewer than two timed rounds per client".into(),
    };
    let _ = writeln!(w, "| Most consistent client | {} |", describe(&o.most_consistent));
    let _ = writeln!(
        w,
        "| Least consistent client | {} |",
        describe(&o.least_consistent)
    );
    let _ = writeln!(
        w,
        "| Slowest client | {} |",
        o.slowest
            .first()
            .map_or("n/a — no training times reported".into(), |c| format!(
                "{} (mean {})",
                cell(&c.client_id),
                seconds(c.mean_training_seconds, "n/a")
            ))
    );
    let _ = writeln!(
        w,
        "| Stragglers (> {}× the round median in ≥ half of the last {} rounds) | {} |",
        config.straggler_factor,
        config.window,
        if o.straggler_count == 0 {
            "none".to_string()
        } else {
            format!("{}: {}", o.straggler_count, cell(&o.stragglers.join(", ")))
        }
    );
    let _ = writeln!(
        w,
        "| Training-time trend | {} slowing, {} stable, {} speeding up, {} unknown |",
        o.slowing,
        o.stable,
        o.speeding_up,
        o.tracked.saturating_sub(o.slowing + o.stable + o.speeding_up)
    );
    let _ = writeln!(
        w,
        "| Clients participating in < {:.0} % of rounds | {} |",
        100.0 * config.participation_fraction,
        o.low_participation_clients
    );
    let _ = writeln!(w);
    if !clients.is_empty() {
        let mut listed: Vec<&ClientSummary> = clients.iter().collect();
        listed.sort_by(|a, b| {
            b.straggler.cmp(&a.straggler).then(
                b.mean_training_seconds
                    .unwrap_or(0.0)
                    .total_cmp(&a.mean_training_seconds.unwrap_or(0.0)),
            )
        });
        let shown = listed.len().min(20);
        let _ = writeln!(
            w,
            "{} clients, slowest first{}:\n",
            listed.len(),
            if shown < listed.len() {
                format!(" (first {shown})")
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            w,
            "| Client | Rounds | Participation | Mean time (s) | Spread (s) | Consistency | Trend | Straggler | Last loss | Last accuracy |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
        for c in listed.iter().take(shown) {
            let _ = writeln!(
                w,
                "| {} | {} | {:.1} % | {} | {} | {} | {} | {} | {} | {} |",
                cell(&c.client_id),
                c.rounds_participated,
                100.0 * c.participation_rate,
                num(c.mean_training_seconds, 2, "n/a"),
                num(c.std_training_seconds, 2, "n/a"),
                num(c.consistency, 3, "n/a"),
                c.trend.as_annotation(),
                if c.straggler { "yes" } else { "no" },
                num(c.last_loss, 4, "n/a"),
                pct(c.last_accuracy, "n/a"),
            );
        }
        let _ = writeln!(w);
    }

    let q = &a.data_quality;
    let _ = writeln!(w, "## Data Quality\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let gaps = if q.gaps.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = q
            .gaps
            .iter()
            .rev()
            .take(5)
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}–{b}")
                }
            })
            .collect();
        format!(" (latest: {})", list.join(", "))
    };
    let _ = writeln!(w, "| Missing rounds | {}{gaps} |", q.missing_rounds);
    let _ = writeln!(
        w,
        "| Rounds without loss / with non-finite loss | {} / {} |",
        q.missing_loss, q.non_finite_loss
    );
    let _ = writeln!(w, "| Rounds without accuracy | {} |", q.missing_accuracy);
    let _ = writeln!(
        w,
        "| Accuracies outside 0–1 (ignored) | {} |",
        q.out_of_range_accuracy
    );
    let _ = writeln!(
        w,
        "| Rounds with no participant | {} |",
        q.zero_participant_rounds
    );
    let _ = writeln!(
        w,
        "| Duplicate / replaced / out-of-order rounds | {} / {} / {} |",
        q.duplicate_rounds, q.replaced_rounds, q.out_of_order_rounds
    );
    let _ = writeln!(
        w,
        "| Late / replaced client updates | {} / {} |",
        q.late_client_updates, q.replaced_client_updates
    );
    let _ = writeln!(
        w,
        "| Clients not tracked (limit {}) | {} |",
        config.max_clients, q.dropped_clients
    );
    let _ = writeln!(w, "| Earlier runs (restarts) | {} |", q.restarts);
    let _ = writeln!(w);
    if !a.previous_runs.is_empty() {
        let _ = writeln!(
            w,
            "| Earlier run | Rounds | Final state | Best loss | Best accuracy |\n|---|---|---|---|---|"
        );
        for r in &a.previous_runs {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} |",
                cell(&r.run_id),
                r.rounds,
                r.state.as_str(),
                num(r.best_loss, 4, "none"),
                pct(r.best_accuracy, "none")
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Recommendations\n");
    for r in recommendations(a, clients, config) {
        let _ = writeln!(w, "- {r}");
    }
    out
}

fn seconds(v: Option<f64>, missing: &str) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.2} s"),
        _ => format!("n/a — {missing}"),
    }
}

/// Recommendations derived from the analysis, most urgent first.
pub fn recommendations(a: &Analysis, clients: &[ClientSummary], config: &AnalysisConfig) -> Vec<String> {
    let c = &a.convergence;
    let mut out = Vec::new();
    if a.run_id.is_none() {
        out.push(
            "No training events have arrived: check that the FL server posts `round_end` events to `FLMON_EVENTS_URL` (or the events topic)."
                .to_string(),
        );
        return out;
    }
    match a.conditions.diverged.reason {
        "NonFiniteLoss" => out.push(format!(
            "Training diverged ({}). Lower the learning rate or add gradient clipping, check client data for corrupt samples, and resume from the checkpoint of the best round ({}).",
            a.conditions.diverged.message,
            round_of(c.best_accuracy_round.or(c.best_loss_round))
        )),
        "AccuracyCollapsed" => out.push(format!(
            "Accuracy collapsed to chance ({}). The model has likely diverged (NaN weights): lower the learning rate or server momentum and resume from the checkpoint of {}.",
            a.conditions.diverged.message,
            round_of(c.best_accuracy_round)
        )),
        _ => {}
    }
    if c.state != State::Diverged {
        if a.conditions.stalled.status {
            out.push(format!(
                "Training has stalled: {}. Decay or retune the learning rate, increase local epochs, or stop early — the best model is from {}.",
                a.conditions.stalled.message,
                round_of(match c.metric {
                    Metric::Loss => c.best_loss_round,
                    Metric::Accuracy => c.best_accuracy_round,
                })
            ));
        } else if c.state == State::Plateaued {
            out.push(format!(
                "Progress has plateaued ({} per round, below {} of the window mean) short of the target: consider a learning-rate change or stopping.",
                num(c.rate, 6, "n/a"),
                config.plateau_threshold
            ));
        } else if c.rate.is_some_and(|r| r < 0.0) && c.state == State::Improving {
            out.push(format!(
                "The {} got worse over the last {} values (rate {} per round): watch for divergence; a lower learning rate may help.",
                c.metric.as_str().to_lowercase(),
                config.window,
                num(c.rate, 6, "n/a")
            ));
        }
        if let Some(n) = c.rounds_to_target {
            out.push(format!(
                "At the current rate the target is {n} rounds away (around round {}).",
                a.round.unwrap_or(0).saturating_add(n)
            ));
        }
    }
    if a.conditions.converged.reason == "NoTarget" {
        out.push(
            "No target is set: set `spec.analysis.targetLoss` or `targetAccuracy` so flmon can report Converged and estimate rounds to target."
                .into(),
        );
    } else if a.conditions.converged.status && c.state != State::Diverged {
        out.push(format!(
            "The target was reached ({}); further rounds can be stopped to save resources.",
            a.conditions.converged.message
        ));
    }
    if a.conditions.low_participation.status {
        out.push(format!(
            "Low participation: {}. Check client pods' readiness and connectivity to the server and Kafka.",
            a.conditions.low_participation.message
        ));
    }
    let o = &a.clients;
    if o.straggler_count > 0 {
        out.push(format!(
            "{} straggler(s) ({}) are slower than {}× the round median: give them more resources, smaller local workloads, or aggregate with a round deadline.",
            o.straggler_count,
            o.stragglers.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            config.straggler_factor
        ));
    }
    let slowing: Vec<&ClientSummary> = clients.iter().filter(|c| c.trend == Trend::Slowing).collect();
    if !slowing.is_empty() {
        out.push(format!(
            "{} client(s) get slower round after round (e.g. {}): look for memory pressure, thermal throttling or growing local data.",
            slowing.len(),
            slowing.iter().take(3).map(|c| c.client_id.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(least) = &o.least_consistent
        && least.consistency.is_some_and(|v| v < 0.5)
    {
        out.push(format!(
            "Client {} has erratic training times (consistency {}): check for noisy neighbours on its node.",
            least.client_id,
            num(least.consistency, 3, "n/a")
        ));
    }
    if o.low_participation_clients > 0 {
        out.push(format!(
            "{} client(s) took part in fewer than {:.0} % of the rounds since they joined: check their logs for failures or restarts.",
            o.low_participation_clients,
            100.0 * config.participation_fraction
        ));
    }
    if o.mean_training_seconds.is_some_and(|t| t > 60.0) {
        out.push(format!(
            "Average local training takes {}: reduce local epochs or batch count, or give clients GPUs.",
            seconds(o.mean_training_seconds, "n/a")
        ));
    }
    let q = &a.data_quality;
    if q.out_of_range_accuracy > 0 {
        out.push(format!(
            "{} accuracy value(s) were outside 0–1 and ignored: send accuracy as a fraction, not a percent.",
            q.out_of_range_accuracy
        ));
    }
    if q.missing_rounds > 0 {
        out.push(format!(
            "{} round(s) are missing from the history: events were lost or the server skips rounds; check the agent's history length and the server's event posting.",
            q.missing_rounds
        ));
    }
    if q.dropped_clients > 0 {
        out.push(format!(
            "{} client(s) exceeded the tracking limit of {} and were not analysed.",
            q.dropped_clients, config.max_clients
        ));
    }
    if out.is_empty() {
        out.push(format!(
            "No action needed: training is {} with no stragglers, participation problems or data gaps.",
            c.state.as_str()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::num;

    #[test]
    fn a_small_value_is_never_shown_as_zero_and_a_column_reads_alike() {
        // Training-time spreads of one client column: none may read 0.00 beside a smaller one
        // in scientific notation.
        assert_eq!(num(Some(0.0013), 2, ""), "0.0013");
        assert_eq!(num(Some(0.000_863_3), 2, ""), "0.00086");
        assert_eq!(num(Some(0.004_99), 2, ""), "0.0050");
        assert_eq!(num(Some(0.005), 2, ""), "0.01");
        assert_eq!(num(Some(1.2), 2, ""), "1.20");
        assert_eq!(num(Some(0.0), 2, ""), "0.00");
        assert_eq!(num(Some(-0.0013), 2, ""), "-0.0013");
        assert_eq!(num(Some(0.227_024), 4, ""), "0.2270");
        assert_eq!(num(Some(3e-6), 4, ""), "3.000e-6");
        assert_eq!(num(Some(2.5e7), 2, ""), "2.500e7");
        assert_eq!(num(Some(f64::NAN), 2, ""), "NaN (non-finite)");
        assert_eq!(num(None, 2, "no loss reported"), "n/a — no loss reported");
    }
}
