//! The dashboard pages as pure functions returning HTML: an index of monitors and a page per
//! monitor with its plots (inline SVG), status, alerts and report. Self-contained — inline CSS,
//! no scripts, and a Content-Security-Policy that forbids every request beyond the page itself —
//! and refreshing itself with a meta refresh.

use std::fmt::Write as _;

use crate::analysis::{Analysis, State};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:0;color:#222;background:#f6f7f9}\
header{background:#1f3b57;color:#fff;padding:12px 24px}header a{color:#cfe3ff}\
main{padding:16px 24px;max-width:1600px}h1{font-size:22px;margin:0}h2{font-size:18px;margin:24px 0 8px}\
table{border-collapse:collapse;background:#fff;margin:8px 0}td,th{border:1px solid #d5d9de;padding:4px 10px;text-align:left;font-size:14px}\
th{background:#eef1f4}.state{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:bold}\
.Converged{background:#2ca02c}.Improving{background:#1f77b4}.WarmingUp{background:#7f7f7f}.Plateaued{background:#bcbd22}\
.Stalled{background:#ff7f0e}.Diverged{background:#d62728}.critical{color:#d62728;font-weight:bold}.warning{color:#b35c00;font-weight:bold}\
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(640px,1fr));gap:12px}\
figure{margin:0;background:#fff;border:1px solid #d5d9de;padding:6px}figure svg{width:100%;height:auto;display:block}\
.report{background:#fff;border:1px solid #d5d9de;padding:8px 16px}.muted{color:#666;font-size:13px}";

fn head(title: &str, refresh_seconds: Option<u32>) -> String {
    let refresh = refresh_seconds.map_or(String::new(), |s| {
        format!("<meta http-equiv=\"refresh\" content=\"{s}\">")
    });
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; base-uri 'none'\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}<title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    )
}

/// A firing alert shown on a monitor's page.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    /// AlertRule name.
    pub name: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// The rule's message.
    pub message: String,
    /// Firing since (RFC 3339).
    pub since: String,
}

/// What a monitor's page shows.
#[derive(Debug, Clone, Copy)]
pub struct MonitorPage<'a> {
    /// Namespace of the FLMonitor ("" for a rendered history).
    pub namespace: &'a str,
    /// Name of the FLMonitor.
    pub name: &'a str,
    /// The analysis.
    pub analysis: &'a Analysis,
    /// The Markdown report (rendered into the page).
    pub report_markdown: &'a str,
    /// Figures as (name, SVG document).
    pub figures: &'a [(&'a str, String)],
    /// Firing alerts.
    pub alerts: &'a [AlertView],
    /// Seconds between reloads; `None` for a static page.
    pub refresh_seconds: Option<u32>,
    /// When the page was generated (RFC 3339), shown as is.
    pub generated: &'a str,
}

fn state_badge(state: State) -> String {
    format!("<span class=\"state {0}\">{0}</span>", state.as_str())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        Some(v) => v.to_string(),
        None => "—".into(),
    }
}

/// The page of one monitor.
pub fn monitor_page(page: &MonitorPage<'_>) -> String {
    let a = page.analysis;
    let title = if page.namespace.is_empty() {
        page.name.to_string()
    } else {
        format!("{}/{}", page.namespace, page.name)
    };
    let mut out = head(&format!("flmon — {title}"), page.refresh_seconds);
    let _ = write!(
        out,
        "<header><h1>{} {}</h1><div class=\"muted\" style=\"color:#cfe3ff\">{}{}</div></header><main>",
        escape(&title),
        state_badge(a.convergence.state),
        // Served at /monitors/<namespace>/<name>: the index is two levels up. A rendered
        // history (no namespace) stands alone.
        if page.namespace.is_empty() {
            ""
        } else {
            "<a href=\"../../\">all monitors</a>"
        },
        if page.generated.is_empty() {
            String::new()
        } else {
            format!(" · generated {}", escape(page.generated))
        }
    );
    let _ = write!(
        out,
        "<h2>Status</h2><table><tr><th>Run</th><th>Round</th><th>Loss</th><th>Accuracy</th><th>Clients</th><th>Rounds without improvement</th><th>Rounds to target</th></tr>"
    );
    let _ = write!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        escape(a.run_id.as_deref().unwrap_or("—")),
        a.round.map_or("—".into(), |r| r.to_string()),
        opt(a.global_loss, 4),
        a.global_accuracy
            .map_or("—".into(), |v| format!("{:.2} %", 100.0 * v)),
        match (a.active_clients, a.expected_clients) {
            (Some(p), Some(n)) => format!("{p} / {n}"),
            (Some(p), None) => p.to_string(),
            _ => "—".into(),
        },
        a.convergence.rounds_without_improvement,
        a.convergence
            .rounds_to_target
            .map_or("—".into(), |n| n.to_string()),
    );
    let _ = write!(
        out,
        "<table><tr><th>Condition</th><th>Status</th><th>Reason</th><th>Message</th></tr>"
    );
    for (name, c) in [
        ("Converged", &a.conditions.converged),
        ("Stalled", &a.conditions.stalled),
        ("LowParticipation", &a.conditions.low_participation),
        ("Diverged", &a.conditions.diverged),
    ] {
        let _ = write!(
            out,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.status { "<b>True</b>" } else { "False" },
            escape(c.reason),
            escape(&c.message)
        );
    }
    out.push_str("</table>");
    out.push_str("<h2>Alerts</h2>");
    if page.alerts.is_empty() {
        out.push_str("<p class=\"muted\">No alert is firing.</p>");
    } else {
        out.push_str("<table><tr><th>Alert</th><th>Severity</th><th>Since</th><th>Message</th></tr>");
        for alert in page.alerts {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&alert.name),
                escape(&alert.severity),
                escape(&alert.severity),
                escape(&alert.since),
                escape(&alert.message)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Plots</h2><div class=\"figs\">");
    for (name, svg) in page.figures {
        let body = svg.find("<svg").map_or("", |i| &svg[i..]);
        let _ = write!(out, "<figure id=\"{}\">{body}</figure>", escape(name));
    }
    out.push_str("</div><h2>Performance report</h2><div class=\"report\">");
    out.push_str(&markdown_to_html(page.report_markdown));
    out.push_str("</div></main></body></html>\n");
    out
}

/// One line of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Phase from status.
    pub phase: String,
    /// Analysis of the monitor.
    pub state: State,
    /// Latest round.
    pub round: Option<u64>,
    /// Latest global loss.
    pub loss: Option<f64>,
    /// Latest global accuracy, 0–1.
    pub accuracy: Option<f64>,
    /// Active clients.
    pub clients: Option<u32>,
    /// Alerts firing.
    pub alerts: usize,
    /// Link to the monitor's page, relative to the index.
    pub href: String,
}

/// The index of all monitors.
pub fn index_page(rows: &[MonitorRow], refresh_seconds: Option<u32>, generated: &str) -> String {
    let mut out = head("flmon — monitors", refresh_seconds);
    let _ = write!(
        out,
        "<header><h1>flmon — federated-learning monitors</h1>{}</header><main>",
        if generated.is_empty() {
            String::new()
        } else {
            format!(
                "<div class=\"muted\" style=\"color:#cfe3ff\">generated {}</div>",
                escape(generated)
            )
        }
    );
    if rows.is_empty() {
        out.push_str("<p>No FLMonitor exists yet. Create one with <code>kubectl apply -f</code>.</p>");
    } else {
        out.push_str("<table><tr><th>Namespace</th><th>Monitor</th><th>Phase</th><th>State</th><th>Round</th><th>Loss</th><th>Accuracy</th><th>Clients</th><th>Alerts</th></tr>");
        for r in rows {
            let _ = write!(
                out,
                "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.namespace),
                escape(&r.href),
                escape(&r.name),
                escape(&r.phase),
                state_badge(r.state),
                r.round.map_or("—".into(), |v| v.to_string()),
                opt(r.loss, 4),
                r.accuracy.map_or("—".into(), |v| format!("{:.2} %", 100.0 * v)),
                r.clients.map_or("—".into(), |v| v.to_string()),
                if r.alerts > 0 {
                    format!("<span class=\"critical\">{}</span>", r.alerts)
                } else {
                    "0".into()
                },
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</main></body></html>\n");
    out
}

/// Inline Markdown of the report: `**bold**` and `` `code` `` (escaped first).
fn inline(text: &str) -> String {
    let escaped = escape(text);
    let mut out = String::with_capacity(escaped.len());
    let mut bold = false;
    let mut code = false;
    let mut rest = escaped.as_str();
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("**") && !code {
            out.push_str(if bold { "</b>" } else { "<b>" });
            bold = !bold;
            rest = &rest[2..];
        } else if c == '`' {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = &rest[1..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</b>");
    }
    out
}

fn table_cells(line: &str) -> Vec<String> {
    let trimmed = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let mut current = String::new();
    let mut chars = trimmed.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                current.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    cells.push(current);
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The subset of Markdown the report uses — headings, paragraphs, lists, tables — as HTML.
pub fn markdown_to_html(markdown: &str) -> String {
    let mut out = String::new();
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_end();
        if t.is_empty() {
            continue;
        }
        if let Some(h) = t.strip_prefix("## ") {
            let _ = write!(out, "<h3>{}</h3>", inline(h));
        } else if let Some(h) = t.strip_prefix("# ") {
            let _ = write!(out, "<h2>{}</h2>", inline(h));
        } else if t.starts_with("- ") {
            out.push_str("<ul>");
            let mut item = Some(t);
            while let Some(i) = item {
                let _ = write!(out, "<li>{}</li>", inline(&i[2..]));
                item = lines.next_if(|l| l.starts_with("- "));
            }
            out.push_str("</ul>");
        } else if t.starts_with('|') {
            let header = table_cells(t);
            let _ = lines.next_if(|l| l.trim_start().starts_with("|-") || l.trim_start().starts_with("|--"));
            out.push_str("<table><tr>");
            for h in &header {
                let _ = write!(out, "<th>{}</th>", inline(h));
            }
            out.push_str("</tr>");
            while let Some(row) = lines.next_if(|l| l.trim_start().starts_with('|')) {
                out.push_str("<tr>");
                for c in table_cells(row) {
                    let _ = write!(out, "<td>{}</td>", inline(&c));
                }
                out.push_str("</tr>");
            }
            out.push_str("</table>");
        } else {
            let _ = write!(out, "<p>{}</p>", inline(t));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_markdown_becomes_escaped_html() {
        let html = markdown_to_html(
            "# T <x>\n\n| a | b |\n|---|---|\n| 1 \\| 2 | **3** |\n\n- one `two`\n- three\n",
        );
        assert_eq!(
            html,
            "<h2>T &lt;x&gt;</h2><table><tr><th>a</th><th>b</th></tr><tr><td>1 | 2</td><td><b>3</b></td></tr></table>\
<ul><li>one <code>two</code></li><li>three</li></ul>"
        );
    }

    #[test]
    fn the_index_links_each_monitor_and_refreshes() {
        let rows = [MonitorRow {
            namespace: "fl".into(),
            name: "mnist<1>".into(),
            phase: "Training".into(),
            state: State::Improving,
            round: Some(3),
            loss: Some(0.5),
            accuracy: Some(0.9),
            clients: Some(4),
            alerts: 1,
            href: "fl/mnist".into(),
        }];
        let html = index_page(&rows, Some(30), "");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
        assert!(html.contains("mnist&lt;1&gt;"));
        assert!(html.contains("90.00 %"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external references"
        );
    }
}
