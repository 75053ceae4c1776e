//! The operator's own AlertRule evaluation and notification: the same meaning as the PromQL in
//! the generated PrometheusRules ([`crate::controller::rules::promql`]), evaluated over samples
//! the operator fetched itself, so alerts work without Prometheus.
//!
//! - [`sample`]: the input, one [`Sample`] per series and scrape, and a parser for the agents'
//!   `/metrics` text ([`parse_exposition`]).
//! - [`eval`]: the pure [`Evaluator`] (clock injected as `now`): PromQL's value of a rule's
//!   expression, Prometheus's pending → firing → resolved life cycle with `for`, and which
//!   transitions Events and webhooks are told about under `debounce`.
//! - [`notify`]: the [`Notifier`] posting an [`Evaluation`] to Alertmanager (`/api/v2/alerts`)
//!   and generic webhooks, only under the allowed URL prefixes.

pub mod eval;
pub mod notify;
pub mod sample;

pub use eval::{
    Alert, AlertState, Change, Evaluation, Evaluator, MonitorRef, Notification, NotificationKind,
    RuleSummary, Transition, annotations, expression_value,
};
pub use notify::{
    DeliveryOutcome, Notifier, NotifierConfig, NotifierError, NotifyCounters, PostableAlert, Target,
    WebhookAlert, WebhookPayload, url_allowed,
};
pub use sample::{ExpositionError, Labels, Sample, alert_series, parse_exposition};
