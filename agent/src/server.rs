//! The HTTP routes. The metrics listener (`flmon-metrics`) serves read-only data: `/metrics`,
//! `/v1/history`, `/healthz`, `/readyz`. The ingest listener (loopback only, so no other pod can
//! forge metrics) takes training events and librdkafka statistics.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::app::Shared;
use crate::events::MAX_ERRORS;
use crate::training::Source;

/// Largest `limit` of one history page.
pub const MAX_HISTORY_LIMIT: usize = 10_000;
/// Content type of the text exposition format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Routes of the metrics listener.
pub fn metrics_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/history", get(history))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

/// Routes of the loopback ingest listener; bodies over `max_body_bytes` get 413.
pub fn ingest_router(shared: Arc<Shared>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/v1/events",
            post(move |state, body| post_events(state, body, max_body_bytes)),
        )
        .route(
            "/v1/librdkafka-stats",
            post(move |state, body| post_stats(state, body, max_body_bytes)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], shared.snapshot.body()).into_response()
}

fn bad_parameter(name: &str, value: &str, expected: &str) -> Response {
    let body = json!({"errors": [{"parameter": name, "value": value, "expected": expected}]});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn history(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let since = match params.get("since") {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => n,
            Err(_) => return bad_parameter("since", v, "a sequence number (an integer >= 0)"),
        },
    };
    let limit = match params.get("limit") {
        None => MAX_HISTORY_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_HISTORY_LIMIT).contains(&n) => n,
            _ => return bad_parameter("limit", v, "an integer from 1 to 10000"),
        },
    };
    Json(shared.history_page(since, limit)).into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first sample of every collector\n",
        )
            .into_response()
    }
}

fn switched_off(what: &str) -> Response {
    let body = json!({"error": format!("the {what} collector is switched off (--collectors)")});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// A body that could not be read: over the limit (413, saying the limit), or cut off.
fn unreadable_body(rejection: &BytesRejection, max_body_bytes: usize) -> Response {
    let status = rejection.status();
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!(
            "the body is larger than the limit of {max_body_bytes} bytes (--max-body-bytes): \
             send the events in smaller batches"
        )
    } else {
        format!("the body could not be read: {}", rejection.body_text())
    };
    (
        status,
        Json(json!({"error": error, "limitBytes": max_body_bytes})),
    )
        .into_response()
}

async fn post_events(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
    max_body_bytes: usize,
) -> Response {
    if !shared.events_enabled() {
        return switched_off("events");
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable_body(&rejection, max_body_bytes),
    };
    // Parsed in place: a 4 MiB batch takes milliseconds, and extra threads would each keep a
    // malloc arena of their own (resident memory matters more in a sidecar).
    match shared.ingest_events(&body, Source::Http) {
        Ok(applied) => Json(json!({
            "accepted": applied.new + applied.replaced + applied.ignored,
            "new": applied.new,
            "duplicates": applied.ignored,
            "replaced": applied.replaced,
        }))
        .into_response(),
        Err(errors) => {
            let mut body = json!({ "errors": errors });
            if errors.len() >= MAX_ERRORS {
                body["truncated"] = json!(format!(
                    "only the first {MAX_ERRORS} errors are listed; the batch was not read further"
                ));
            }
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    }
}

async fn post_stats(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
    max_body_bytes: usize,
) -> Response {
    if !shared.librdkafka_enabled() {
        return switched_off("librdkafka");
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable_body(&rejection, max_body_bytes),
    };
    match shared.ingest_stats(&body) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response(),
    }
}
