//! The HTTP side of `gamelake serve --http`: `POST /ingest/{schema}.{table}` for log shippers
//! (Fluent Bit's `http` output, Fluentd's `out_http`, curl), and `/healthz`, `/readyz`,
//! `/metrics`.
//!
//! A 200 means the records are fsynced in the write-ahead log: they will be committed even if
//! the server dies now. Shippers retry anything else; 503 and 429 carry `Retry-After`. A sender
//! that sets `Idempotency-Key` on a request gets its retries of that request acknowledged
//! without the records being stored again (within `[intake] dedup_window`).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::json;

use super::Intake;
use super::metrics::{Metrics, StatusLabel};
use super::segment::Entry;
use super::wal::Stored;
use crate::lake::TableRef;
use crate::records::body::{BodyError, gunzip, records};

/// The request header naming a batch, so that its retries are stored once.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest `Idempotency-Key` accepted (a UUID is 36 characters).
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The routes, over one intake.
pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/ingest/{table}", post(ingest))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        // The limit is enforced while reading (read_body), so the 413 reaches the sender.
        .layer(DefaultBodyLimit::disable())
        .with_state(intake)
}

/// An answer with a JSON body, counted by status.
fn answer(metrics: &Metrics, status: StatusCode, body: serde_json::Value) -> Response {
    metrics
        .requests
        .get_or_create(&StatusLabel {
            status: status.as_u16().to_string(),
        })
        .inc();
    (status, axum::Json(body)).into_response()
}

fn refuse(metrics: &Metrics, status: StatusCode, message: String) -> Response {
    let mut response = answer(metrics, status, json!({ "error": message }));
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

async fn ingest(
    State(intake): State<Arc<Intake>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = &intake.metrics;
    // Who sends, where to, and with which key are settled before a byte of the body is read.
    let table = match TableRef::parse(&name) {
        Ok(t) => t,
        Err(e) => return refuse(metrics, StatusCode::NOT_FOUND, e.to_string()),
    };
    let sender = match intake.check_sender(bearer(&headers), &table) {
        Ok(sender) => sender,
        Err((status, message)) => return refuse(metrics, status, message),
    };
    let key = match idempotency_key(&headers) {
        Ok(key) => key.map(|k| format!("http:{sender}:{name}:{k}")),
        Err(message) => return refuse(metrics, StatusCode::BAD_REQUEST, message),
    };
    if !intake.tables.contains_key(&name) {
        return refuse(
            metrics,
            StatusCode::NOT_FOUND,
            format!(
                "{name} is not an intake table: add [[intake.tables]] name = \"{name}\" to the config"
            ),
        );
    }
    let pending = intake.wal.pending_bytes();
    if pending > intake.settings.max_pending_bytes {
        return refuse(
            metrics,
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{pending} bytes wait to be committed to the lake (limit [intake] max_pending_mb); retry later"
            ),
        );
    }
    let limit = intake.settings.max_body_bytes;
    let timeout = intake.settings.read_timeout;
    let body = match tokio::time::timeout(timeout, read_body(body, limit)).await {
        Ok(Some(body)) => body,
        Ok(None) => return body_error(metrics, BodyError::TooLarge(limit)),
        Err(_) => {
            return refuse(
                metrics,
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within [intake] read_timeout ({})",
                    humantime::format_duration(timeout)
                ),
            );
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let decoded;
    let body: &[u8] = if gzip {
        match gunzip(&body, intake.settings.max_body_bytes) {
            Ok(plain) => {
                decoded = plain;
                &decoded
            }
            Err(e) => return body_error(metrics, e),
        }
    } else {
        &body
    };
    let records = match records(body) {
        Ok(r) => r,
        Err(e) => return body_error(metrics, e),
    };
    let count = records.len();
    let entry = Entry {
        table: name.clone(),
        received_at: chrono::Utc::now().timestamp_micros(),
        records,
        key,
    };
    match intake.wal.append(&entry).await {
        Ok(Stored::New) => {
            Metrics::add(&metrics.received, &name, count);
            answer(metrics, StatusCode::OK, json!({ "received": count }))
        }
        Ok(Stored::Duplicate) => {
            Metrics::add(&metrics.duplicates, &name, count);
            answer(
                metrics,
                StatusCode::OK,
                json!({ "received": count, "duplicate": true }),
            )
        }
        Err(e) => {
            tracing::error!("intake: write-ahead log append failed: {e}");
            refuse(
                metrics,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("could not store the records durably ({e}); retry"),
            )
        }
    }
}

/// Reads a body of at most `limit` bytes. A larger one is read on (and dropped) up to four times
/// the limit before the answer, so that a sender still writing it can read the 413 instead of a
/// reset connection; beyond that the connection is dropped.
async fn read_body(body: Body, limit: usize) -> Option<Bytes> {
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        total += chunk.len();
        if total <= limit {
            kept.extend_from_slice(&chunk);
        } else if total > limit.saturating_mul(4) {
            break;
        }
    }
    (total <= limit).then(|| Bytes::from(kept))
}

fn body_error(metrics: &Metrics, error: BodyError) -> Response {
    match error {
        BodyError::TooLarge(limit) => refuse(
            metrics,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than {limit} bytes (uncompressed); send smaller batches or raise [intake] max_body_mb"
            ),
        ),
        BodyError::Unreadable(message) => refuse(metrics, StatusCode::BAD_REQUEST, message),
    }
}

/// The request's `Idempotency-Key`: at most [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters
/// (it is stored with the records; a sender's key is its own, namespaced by the caller).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, String> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters (e.g. a UUID)"
        ));
    }
    Ok(Some(key))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn ready(State(intake): State<Arc<Intake>>) -> Response {
    let pending = intake.wal.pending_bytes();
    if pending > intake.settings.max_pending_bytes {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {pending} bytes wait to be committed\n"),
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics(State(intake): State<Arc<Intake>>) -> Response {
    intake
        .metrics
        .pending_bytes
        .set(intake.wal.pending_bytes() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        intake.metrics.render(),
    )
        .into_response()
}
