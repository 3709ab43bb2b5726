//! A query while it runs: the threads it computes on, the stream that carries its rows to the
//! client (cast, counted, stopped by the timeout or a cancel), and the record it leaves in the
//! query log however it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use futures::Stream;
use futures::channel::oneshot;

use super::limits::{Admitted, Governor};
use super::query_log::{QueryLog, QueryRecord};
use crate::error::{Error, Result};
use crate::plain_types::to_plain;

/// The threads queries compute on, apart from the threads that serve gRPC: a CPU-bound query
/// must not starve the timers, queue waits and other clients of the server.
pub(super) struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    pub(super) fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("gamelake-query")
            .enable_all()
            .build()
            .map_err(|e| Error::io("<query runtime>", e))?;
        Ok(Self(Some(runtime)))
    }

    pub(super) fn spawn<F>(&self, work: F) -> Result<tokio::task::JoinHandle<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(runtime) => Ok(runtime.spawn(work)),
            None => Err(Error::Unavailable(
                "the server is shutting down".to_string(),
            )),
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's context would block; let it wind down.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A query's place under the concurrency limit, held both by its computation and by the stream
/// that carries its rows: given back as soon as either ends (the computation done, failed or
/// stopped at the deadline; the stream dropped by a client that went away or cancelled).
#[derive(Clone)]
pub(super) struct Slot(Arc<std::sync::Mutex<Option<Admitted>>>);

impl Slot {
    pub(super) fn new(permit: Admitted) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(permit))))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Aborts a spawned task when dropped (a query whose client went away stops computing).
pub(super) struct AbortOnDrop<T>(pub(super) tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Waits for the task's output (still aborting it if this wait is dropped).
    pub(super) async fn join(mut self) -> std::result::Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A query's time limit and what sets it: the server's `[flight] query_timeout`, or a user's
/// quota (then named in the error).
#[derive(Clone, Debug)]
pub(super) struct Timeout {
    pub(super) after: std::time::Duration,
    pub(super) quota: Option<String>,
}

impl Timeout {
    /// The error of a query stopped at this limit.
    pub(super) fn error(&self) -> Error {
        match &self.quota {
            None => timeout_error(self.after),
            Some(quota) => Error::Limit(format!(
                "the query ran longer than the timeout of {} that {quota} sets, and was stopped; narrow it, or ask an admin for a larger query_timeout in the quota",
                humantime::format_duration(self.after)
            )),
        }
    }
}

pub(super) fn timeout_error(timeout: std::time::Duration) -> Error {
    Error::Limit(format!(
        "the query ran longer than the timeout of {} and was stopped; narrow it or ask for a larger [flight] query_timeout",
        humantime::format_duration(timeout)
    ))
}

/// Logs a query's end exactly once, however it ends (including the client going away).
pub(super) struct Tracker {
    pub(super) record: QueryRecord,
    pub(super) started: Instant,
    pub(super) log: Option<QueryLog>,
    pub(super) governor: Arc<Governor>,
    pub(super) metrics: Arc<super::query_metrics::QueryMetrics>,
    /// The user's running-queries gauge, raised while this query lives.
    pub(super) running: prometheus_client::metrics::gauge::Gauge,
}

impl Tracker {
    pub(super) fn fail(&mut self, outcome: &'static str, error: Error) -> Error {
        self.record.outcome = outcome;
        self.record.error = Some(error.to_string());
        error
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.governor.unregister(&self.record.query_id);
        self.running.dec();
        self.metrics
            .ended(&self.record.user, self.record.outcome, self.record.rows);
        self.record.duration = self.started.elapsed();
        if let Some(log) = &self.log {
            log.record(self.record.clone());
        }
    }
}

/// A running query's rows: cast for the client, counted, stopped by the timeout or a cancel.
pub(super) struct Running {
    pub(super) inner: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
    pub(super) _task: AbortOnDrop<()>,
    pub(super) schema: SchemaRef,
    pub(super) deadline: Pin<Box<tokio::time::Sleep>>,
    pub(super) timeout: Timeout,
    pub(super) cancel: oneshot::Receiver<()>,
    pub(super) tracker: Tracker,
    pub(super) finished: bool,
    /// The user's quota of result rows, and the error past it.
    pub(super) max_rows: Option<(u64, Error)>,
    /// The user's quota of result bytes, and the error past it.
    pub(super) max_bytes: Option<(u64, Error)>,
    pub(super) _slot: Slot,
    /// The query's place in its user's quota of queries at once.
    pub(super) _quota: Option<super::access::quotas::QuotaPermit>,
}

impl Running {
    fn end(&mut self, outcome: &'static str, error: Error) -> Poll<Option<Result<RecordBatch>>> {
        self.finished = true;
        Poll::Ready(Some(Err(self.tracker.fail(outcome, error))))
    }
}

impl Stream for Running {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Poll::Ready(Ok(())) = Pin::new(&mut self.cancel).poll(cx) {
            return self.end(
                "cancelled",
                Error::Cancelled("the query was cancelled by the client".to_string()),
            );
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let error = self.timeout.error();
            return self.end("timeout", error);
        }
        match self.inner.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            // The producer stops at the same deadline and closes the channel; its timer may
            // fire before this stream's (another runtime's clock driver), so a channel closed
            // at or after the deadline is the timeout, not an empty answer.
            Poll::Ready(None) if self.deadline.deadline() <= tokio::time::Instant::now() => {
                let error = self.timeout.error();
                self.end("timeout", error)
            }
            Poll::Ready(None) => {
                self.finished = true;
                self.tracker.record.outcome = "ok";
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => self.end("error", e),
            Poll::Ready(Some(Ok(batch))) => {
                let schema = self.schema.clone();
                match to_plain(batch, &schema) {
                    Ok(batch) => {
                        let rows = self.tracker.record.rows + batch.num_rows() as u64;
                        let bytes =
                            self.tracker.record.bytes + batch.get_array_memory_size() as u64;
                        if let Some(error) = past(&mut self.max_rows, rows) {
                            return self.end("error", error);
                        }
                        if let Some(error) = past(&mut self.max_bytes, bytes) {
                            return self.end("error", error);
                        }
                        self.tracker.record.rows = rows;
                        self.tracker.record.bytes = bytes;
                        Poll::Ready(Some(Ok(batch)))
                    }
                    Err(e) => self.end("error", Error::Arrow(e)),
                }
            }
        }
    }
}

/// The error of a result bound (`max`, error) once `value` is past it, given once.
fn past(bound: &mut Option<(u64, Error)>, value: u64) -> Option<Error> {
    if bound.as_ref().is_some_and(|(max, _)| value > *max) {
        bound.take().map(|(_, error)| error)
    } else {
        None
    }
}
