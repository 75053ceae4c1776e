//! Reading one agent over HTTP: its history, page by page from a cursor, and its `/metrics` for
//! the alert evaluation. Every request has a short timeout; failures are returned, never fatal.

use std::time::{Duration, SystemTime};

use crate::alerts::{self, Labels, Sample};
use crate::analysis::{History, parse_history};

use super::cursor::{Page, Step, missed, step};

/// Records asked for per history page (the agent's largest page).
pub const PAGE_LIMIT: usize = 10_000;
/// Pages read from one agent in one poll at most; the rest waits for the next poll.
pub const MAX_PAGES: usize = 10;

/// Reading an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request failed (refused, timed out, reset).
    #[error("GET {url} failed: {cause}")]
    Request {
        /// The URL.
        url: String,
        /// What reqwest reported (with its source chain).
        cause: String,
    },
    /// The agent answered with an error status.
    #[error("GET {url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The history document could not be read.
    #[error("GET {url}: {cause}")]
    History {
        /// The URL.
        url: String,
        /// The parser's error.
        cause: crate::analysis::HistoryError,
    },
    /// The metrics text could not be read.
    #[error("GET {url}: {cause}")]
    Exposition {
        /// The URL.
        url: String,
        /// The parser's error.
        cause: alerts::ExpositionError,
    },
}

/// reqwest's error with its causes, on one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An HTTP client for agents: `timeout` for connecting and for each whole request, no redirects.
///
/// # Errors
/// reqwest's error when the client cannot be built.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flmon-operator/", env!("CARGO_PKG_VERSION")))
        .build()
}

async fn get_text(http: &reqwest::Client, url: &str) -> Result<String, AgentError> {
    let request_failed = |e: reqwest::Error| AgentError::Request {
        url: url.to_owned(),
        cause: describe(&e),
    };
    let response = http.get(url).send().await.map_err(request_failed)?;
    if !response.status().is_success() {
        return Err(AgentError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    response.text().await.map_err(request_failed)
}

/// What one poll read from an agent's history.
#[derive(Debug, Default)]
pub struct HistoryRead {
    /// The pages read, oldest first.
    pub documents: Vec<History>,
    /// The cursor to keep.
    pub next: u64,
    /// Whether the agent's counter went backwards (it was read again from 0).
    pub restarted: bool,
    /// Records evicted before they were read.
    pub missed: u64,
}

/// Reads the agent at `base` (`http://ip:port`) from `since`, page by page (at most
/// [`MAX_PAGES`]).
///
/// # Errors
/// The first request that failed; nothing read before it is kept (the cursor stays where it was,
/// so the next poll reads the same records again).
pub async fn read_history(http: &reqwest::Client, base: &str, since: u64) -> Result<HistoryRead, AgentError> {
    let mut read = HistoryRead {
        next: since,
        ..HistoryRead::default()
    };
    let mut since = since;
    for _ in 0..MAX_PAGES {
        let url = format!("{base}/v1/history?since={since}&limit={PAGE_LIMIT}");
        let text = get_text(http, &url).await?;
        let doc = parse_history(&text).map_err(|cause| AgentError::History {
            url: url.clone(),
            cause,
        })?;
        let page = Page::of(&doc);
        match step(since, PAGE_LIMIT, page) {
            Step::Restarted if !read.restarted => {
                read.restarted = true;
                since = 0;
                read.next = 0;
            }
            Step::Restarted => {
                // The counter went backwards twice in one poll: take what is there.
                read.missed += missed(since, page);
                read.next = page.next_seq;
                read.documents.push(doc);
                break;
            }
            Step::More { since: next } => {
                read.missed += missed(since, page);
                read.documents.push(doc);
                read.next = next;
                since = next;
            }
            Step::Done { next } => {
                read.missed += missed(since, page);
                read.documents.push(doc);
                read.next = next;
                break;
            }
        }
    }
    Ok(read)
}

/// Scrapes the agent's `/metrics` at `at`, keeping the series alert rules read, each labelled
/// with `pod` (the target label Prometheus adds).
///
/// # Errors
/// The request failed or a line is malformed (Prometheus too drops such a scrape whole).
pub async fn scrape(
    http: &reqwest::Client,
    base: &str,
    pod: &str,
    at: SystemTime,
) -> Result<Vec<Sample>, AgentError> {
    let url = format!("{base}/metrics");
    let text = get_text(http, &url).await?;
    let extra: Labels = [("pod".to_owned(), pod.to_owned())].into_iter().collect();
    let wanted = alerts::alert_series();
    alerts::parse_exposition(&text, &extra, at, |name| wanted.contains(&name))
        .map_err(|cause| AgentError::Exposition { url, cause })
}
