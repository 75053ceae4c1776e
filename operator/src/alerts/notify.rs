//! Sends evaluations to Alertmanager and to generic webhooks.
//!
//! **Alertmanager** (`POST <alertmanagerUrl>/api/v2/alerts`, a JSON array of postable alerts), as
//! Prometheus's notifier does, so the operator's alerts and the PrometheusRule's deduplicate:
//! - every firing alert at every evaluation: `labels` (exactly the PrometheusRule alert's, plus
//!   the configured external labels), `annotations` (`summary`, `description`), `startsAt` = when
//!   it started firing, `endsAt` = now + 4 × max(evaluation interval, 1 min) (Prometheus's
//!   `ValidUntil`), so Alertmanager resolves it by itself if the operator stops sending;
//! - once, at the evaluation that resolved it: the same alert with `endsAt` = the resolve time;
//! - `generatorURL` from the configured template, when set.
//!
//! **Webhook** (`POST <webhookUrl>`), only the debounced [`Evaluation::notify`] list, one request
//! per URL and evaluation, body (version `1`):
//! ```json
//! {"version": "1", "sender": "flmon", "monitor": "fl/mnist",
//!  "alerts": [{"status": "firing", "rule": "flmon-system/high-global-loss",
//!              "alertname": "HighGlobalLoss", "severity": "warning", "monitor": "fl/mnist",
//!              "labels": {…}, "annotations": {"summary": …, "description": …},
//!              "value": 2.31, "startsAt": "2025-01-01T10:10:00.000Z", "endsAt": null,
//!              "generatorURL": "…"}]}
//! ```
//! `status` is `firing` or `resolved`; `value` is null when not finite; `endsAt` is set on
//! resolved alerts only.
//!
//! **Safety.** A URL is used only when it starts with an allowed prefix at a boundary (the prefix
//! ends with `/`, or the URL continues with `/`, `?`, `#` or nothing: `http://am:9093` allows
//! `http://am:9093/x` but not `http://am:90931` nor `http://am:9093@evil`). Redirects are not
//! followed (they could leave the allowed prefixes). Each request has a timeout. Failures are
//! logged and counted ([`NotifyCounters`]), never returned as errors: alerting goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::eval::{Alert, Evaluation, NotificationKind};
use super::sample::Labels;

/// Prometheus's minimum resend delay: `endsAt` is at least 4 × this ahead.
const MIN_RESEND_INTERVAL: Duration = Duration::from_secs(60);

/// How the notifier behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifierConfig {
    /// URL prefixes notifications may go to (the same list AlertRule validation checks
    /// `spec.notify` against); nothing is sent when empty.
    pub allowed_prefixes: Vec<String>,
    /// How often the operator evaluates a monitor; sets `endsAt` of firing alerts.
    pub evaluation_interval: Duration,
    /// Labels added to every alert posted to Alertmanager, e.g. the external labels of the
    /// Prometheus that evaluates the same PrometheusRules, so both send identical label sets.
    pub external_labels: Labels,
    /// `generatorURL` of each alert; `{namespace}` and `{name}` are replaced by the monitor's,
    /// e.g. `http://flmon-operator.flmon-system:8080/monitors/{namespace}/{name}`.
    pub generator_url: Option<String>,
    /// Timeout of each request.
    pub timeout: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            allowed_prefixes: Vec::new(),
            evaluation_interval: Duration::from_secs(30),
            external_labels: Labels::new(),
            generator_url: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The notifier could not be built.
#[derive(Debug, thiserror::Error)]
#[error("failed to build the notification HTTP client: {0}")]
pub struct NotifierError(#[from] reqwest::Error);

/// Which kind of receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Alertmanager's `/api/v2/alerts`.
    Alertmanager,
    /// A generic webhook.
    Webhook,
}

impl Target {
    /// `alertmanager` or `webhook` (a metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Alertmanager => "alertmanager",
            Target::Webhook => "webhook",
        }
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// The receiver kind.
    pub target: Target,
    /// The URL requested (or refused).
    pub url: String,
    /// Alerts in the request.
    pub alerts: usize,
    /// `Ok` when the receiver answered 2xx; else what went wrong (refused URL, connection, status).
    pub result: Result<(), String>,
}

/// Totals since start, for the operator's metrics (`target`, `outcome` labels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyCounters {
    /// Requests Alertmanager accepted.
    pub alertmanager_sent: u64,
    /// Requests to Alertmanager that failed.
    pub alertmanager_failed: u64,
    /// Requests a webhook accepted.
    pub webhook_sent: u64,
    /// Requests to a webhook that failed.
    pub webhook_failed: u64,
    /// Requests not made because the URL is not under an allowed prefix.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    alertmanager_sent: AtomicU64,
    alertmanager_failed: AtomicU64,
    webhook_sent: AtomicU64,
    webhook_failed: AtomicU64,
    refused: AtomicU64,
}

/// One alert as Alertmanager's v2 API takes it (`postableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostableAlert {
    /// Identifying labels.
    pub labels: Labels,
    /// `summary` and `description`.
    pub annotations: Labels,
    /// When it started firing (RFC 3339).
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// When it ends: a few intervals ahead while firing, the resolve time once resolved.
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    /// Link to where the alert comes from.
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// The webhook request body (module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookPayload {
    /// Body format version, `1`.
    pub version: &'static str,
    /// Always `flmon`.
    pub sender: &'static str,
    /// `namespace/name` of the monitor.
    pub monitor: String,
    /// The notifications.
    pub alerts: Vec<WebhookAlert>,
}

/// One notification in a webhook body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// `namespace/name` of the AlertRule.
    pub rule: String,
    /// The alert name.
    pub alertname: String,
    /// `info`, `warning` or `critical`.
    pub severity: &'static str,
    /// `namespace/name` of the monitor.
    pub monitor: String,
    /// The alert's labels.
    pub labels: Labels,
    /// `summary` and `description`.
    pub annotations: Labels,
    /// The expression's value in the rule's unit; null when not finite.
    pub value: Option<f64>,
    /// When it started firing (RFC 3339).
    pub starts_at: String,
    /// When it resolved; null while firing.
    pub ends_at: Option<String>,
    /// Link to where the alert comes from.
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// Whether `url` is under one of `prefixes`, at a boundary (module docs, "Safety").
pub fn url_allowed(url: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|prefix| {
        !prefix.is_empty()
            && url.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
            })
    })
}

/// `scheme://host[:port]` of a URL, without user info, path or query.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

/// RFC 3339 with milliseconds, UTC.
fn rfc3339(time: SystemTime) -> String {
    let timestamp = Timestamp::try_from(time).unwrap_or(Timestamp::UNIX_EPOCH);
    format!("{timestamp:.3}")
}

/// Sends evaluations to Alertmanager and webhooks; cheap to clone (shares client and counters).
#[derive(Debug, Clone)]
pub struct Notifier {
    client: reqwest::Client,
    config: Arc<NotifierConfig>,
    counters: Arc<Counters>,
}

impl Notifier {
    /// A notifier with its own HTTP client.
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS roots).
    pub fn new(config: NotifierConfig) -> Result<Self, NotifierError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("flmon-operator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Notifier {
            client,
            config: Arc::new(config),
            counters: Arc::new(Counters::default()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NotifierConfig {
        &self.config
    }

    /// Totals since start.
    pub fn counters(&self) -> NotifyCounters {
        let c = &self.counters;
        NotifyCounters {
            alertmanager_sent: c.alertmanager_sent.load(Ordering::Relaxed),
            alertmanager_failed: c.alertmanager_failed.load(Ordering::Relaxed),
            webhook_sent: c.webhook_sent.load(Ordering::Relaxed),
            webhook_failed: c.webhook_failed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    fn generator_url(&self, alert: &Alert) -> Option<String> {
        let (namespace, name) = alert.monitor.split_once('/').unwrap_or(("", &alert.monitor));
        self.config
            .generator_url
            .as_ref()
            .map(|template| template.replace("{namespace}", namespace).replace("{name}", name))
    }

    /// The Alertmanager requests of an evaluation: per Alertmanager base URL, its firing and
    /// just-resolved alerts (pure; [`Notifier::send`] posts them).
    pub fn alertmanager_requests(&self, evaluation: &Evaluation) -> Vec<(String, Vec<PostableAlert>)> {
        let valid_until = evaluation.at
            + self
                .config
                .evaluation_interval
                .max(MIN_RESEND_INTERVAL)
                .saturating_mul(4);
        let mut requests: Vec<(String, Vec<PostableAlert>)> = Vec::new();
        let alerts = evaluation.firing.iter().map(|a| (a, valid_until)).chain(
            evaluation
                .resolved
                .iter()
                .map(|a| (a, a.resolved_at.unwrap_or(evaluation.at))),
        );
        for (alert, ends_at) in alerts {
            let Some(url) = &alert.notify.alertmanager_url else {
                continue;
            };
            let mut labels = self.config.external_labels.clone();
            labels.extend(alert.labels.clone());
            let postable = PostableAlert {
                labels,
                annotations: alert.annotations.clone(),
                starts_at: rfc3339(alert.fired_at.unwrap_or(alert.active_at)),
                ends_at: rfc3339(ends_at),
                generator_url: self.generator_url(alert),
            };
            match requests.iter_mut().find(|(u, _)| u == url) {
                Some((_, batch)) => batch.push(postable),
                None => requests.push((url.clone(), vec![postable])),
            }
        }
        requests
    }

    /// The webhook requests of an evaluation: per webhook URL, its debounced notifications (pure).
    pub fn webhook_requests(&self, evaluation: &Evaluation) -> Vec<(String, WebhookPayload)> {
        let mut requests: Vec<(String, WebhookPayload)> = Vec::new();
        for notification in &evaluation.notify {
            let alert = &notification.alert;
            let Some(url) = &alert.notify.webhook_url else {
                continue;
            };
            let resolved = notification.kind == NotificationKind::Resolved;
            let entry = WebhookAlert {
                status: if resolved { "resolved" } else { "firing" },
                rule: alert.rule.clone(),
                alertname: alert.alertname().to_owned(),
                severity: alert.severity.as_str(),
                monitor: alert.monitor.clone(),
                labels: alert.labels.clone(),
                annotations: alert.annotations.clone(),
                value: alert.value.is_finite().then_some(alert.value),
                starts_at: rfc3339(alert.fired_at.unwrap_or(alert.active_at)),
                ends_at: resolved.then(|| rfc3339(alert.resolved_at.unwrap_or(evaluation.at))),
                generator_url: self.generator_url(alert),
            };
            match requests.iter_mut().find(|(u, _)| u == url) {
                Some((_, payload)) => payload.alerts.push(entry),
                None => requests.push((
                    url.clone(),
                    WebhookPayload {
                        version: "1",
                        sender: "flmon",
                        monitor: evaluation.monitor.clone(),
                        alerts: vec![entry],
                    },
                )),
            }
        }
        requests
    }

    /// Posts an evaluation to its Alertmanagers and webhooks, concurrently; failures are logged
    /// and counted, and reported in the outcomes.
    pub async fn send(&self, evaluation: &Evaluation) -> Vec<DeliveryOutcome> {
        let mut posts = Vec::new();
        for (base, alerts) in self.alertmanager_requests(evaluation) {
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            posts.push(self.post(
                Target::Alertmanager,
                base,
                url,
                alerts.len(),
                serde_json::to_value(alerts),
            ));
        }
        for (url, payload) in self.webhook_requests(evaluation) {
            let count = payload.alerts.len();
            posts.push(self.post(
                Target::Webhook,
                url.clone(),
                url,
                count,
                serde_json::to_value(payload),
            ));
        }
        join_all(posts).await
    }

    async fn post(
        &self,
        target: Target,
        configured: String,
        url: String,
        alerts: usize,
        body: Result<serde_json::Value, serde_json::Error>,
    ) -> DeliveryOutcome {
        let result = if !url_allowed(&configured, &self.config.allowed_prefixes) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            Err("URL is not under an allowed prefix (--notify-url-prefixes)".to_owned())
        } else {
            let sent = match body {
                Ok(body) => self
                    .client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map(drop)
                    .map_err(|e| e.without_url().to_string()),
                Err(e) => Err(format!("cannot encode the body: {e}")),
            };
            let (ok, failed) = match target {
                Target::Alertmanager => (
                    &self.counters.alertmanager_sent,
                    &self.counters.alertmanager_failed,
                ),
                Target::Webhook => (&self.counters.webhook_sent, &self.counters.webhook_failed),
            };
            match &sent {
                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
            sent
        };
        // Only the origin is logged: webhook paths often carry a token.
        let origin = origin(&url);
        match &result {
            Ok(()) => tracing::debug!(target = target.as_str(), %origin, alerts, "notification sent"),
            Err(error) => {
                tracing::warn!(target = target.as_str(), %origin, alerts, %error, "notification failed")
            }
        }
        DeliveryOutcome {
            target,
            url,
            alerts,
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_url_is_allowed_only_under_a_prefix_at_a_boundary() {
        let allowed = prefixes(&[
            "http://alertmanager.monitoring:9093",
            "https://hooks.example.com/flmon/",
        ]);
        for url in [
            "http://alertmanager.monitoring:9093",
            "http://alertmanager.monitoring:9093/",
            "http://alertmanager.monitoring:9093/sub?x=1",
            "https://hooks.example.com/flmon/team-a",
        ] {
            assert!(url_allowed(url, &allowed), "{url}");
        }
        for url in [
            "http://alertmanager.monitoring:90931",
            "http://alertmanager.monitoring:9093@evil.example/",
            "http://alertmanager.monitoring:9093.evil.example/",
            "https://hooks.example.com/flmonx",
            "https://evil.example/",
        ] {
            assert!(!url_allowed(url, &allowed), "{url}");
        }
        assert!(!url_allowed("http://x", &[]));
        assert!(!url_allowed("http://x", &prefixes(&[""])));
    }

    #[test]
    fn only_the_origin_of_a_url_is_logged() {
        assert_eq!(
            origin("https://hooks.example.com/services/T0/B0/secret"),
            "https://hooks.example.com"
        );
        assert_eq!(origin("http://am:9093"), "http://am:9093");
        assert_eq!(origin("http://user:pw@am:9093/x?y"), "http://am:9093");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(time), "2023-11-14T22:13:20.123Z");
    }
}
