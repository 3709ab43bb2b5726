//! `system.query_log`: one row per Flight SQL query (who, what, when, how long, how much, how
//! it ended), appended to the lake in batches by a background task so that logging never
//! delays a query.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::lake::TableRef;
use crate::lake::layout::TableLayout;
use crate::lake::write::{WriteMode, WriteOptions, write_batches};
use crate::query::Session;

/// The table the log is written to.
pub const QUERY_LOG_TABLE: &str = "system.query_log";

/// How one query went.
#[derive(Clone, Debug)]
pub struct QueryRecord {
    /// The id in the query's ticket (also what CancelFlightInfo names).
    pub query_id: String,
    /// Who ran it.
    pub user: String,
    /// The SQL text.
    pub sql: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it ran until its last row was sent or it failed.
    pub duration: Duration,
    /// Rows sent.
    pub rows: u64,
    /// Bytes of Arrow data sent (in-memory size of the batches).
    pub bytes: u64,
    /// `ok`, `error`, `timeout`, `cancelled` or `refused` (by a quota).
    pub outcome: &'static str,
    /// The error, when it failed.
    pub error: Option<String>,
    /// The access rules applied to the user's tables (see [`super::access`]), when any was.
    pub access: Option<String>,
}

/// A handle to the background writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct QueryLog {
    tx: mpsc::UnboundedSender<QueryRecord>,
}

/// The writer task; [`QueryLogWriter::finish`] writes what is left.
#[derive(Debug)]
pub struct QueryLogWriter {
    task: JoinHandle<()>,
}

impl QueryLog {
    /// Starts the writer: every `interval`, or as soon as `batch` records wait, they are
    /// appended to `system.query_log` in one commit.
    pub fn start(session: &Session, interval: Duration, batch: usize) -> (Self, QueryLogWriter) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(write_loop(session.clone(), rx, interval, batch.max(1)));
        (Self { tx }, QueryLogWriter { task })
    }

    /// Queues a record (never blocks; a stopped writer drops it with a warning).
    pub fn record(&self, record: QueryRecord) {
        if self.tx.send(record).is_err() {
            tracing::warn!("query log writer has stopped; a query record was not kept");
        }
    }
}

impl QueryLogWriter {
    /// Waits until every record queued before all [`QueryLog`] handles were dropped is written.
    pub async fn finish(self) {
        if let Err(e) = self.task.await {
            tracing::warn!("query log writer failed: {e}");
        }
    }
}

async fn write_loop(
    session: Session,
    mut rx: mpsc::UnboundedReceiver<QueryRecord>,
    interval: Duration,
    batch: usize,
) {
    let mut pending = Vec::new();
    loop {
        let open = tokio::select! {
            got = rx.recv() => match got {
                Some(r) => { pending.push(r); true }
                None => false,
            },
            () = tokio::time::sleep(interval), if !pending.is_empty() => true,
        };
        let due = !open
            || pending.len() >= batch
            || pending.first().is_some_and(|first| {
                Utc::now().signed_duration_since(first.started_at + first.duration)
                    >= chrono::Duration::from_std(interval).unwrap_or_default()
            });
        if due && !pending.is_empty() {
            let records = std::mem::take(&mut pending);
            if let Err(e) = append(&session, &records).await {
                tracing::warn!(
                    "could not append {} records to {QUERY_LOG_TABLE}: {e}",
                    records.len()
                );
            }
        }
        if !open {
            return;
        }
    }
}

async fn append(session: &Session, records: &[QueryRecord]) -> Result<()> {
    let table = TableRef::parse(QUERY_LOG_TABLE)?;
    let state = session.write_state();
    let options = WriteOptions {
        layout: Some(TableLayout::partitioned_by(&["day"])),
        // Logs written before a column was added (`access`) take it on.
        merge_schema: true,
        ..WriteOptions::new(WriteMode::Append)
    };
    write_batches(
        session.lake(),
        &table,
        &state,
        vec![to_batch(records)?],
        options,
    )
    .await?;
    session.catalog().note_table(&table, true);
    Ok(())
}

fn to_batch(records: &[QueryRecord]) -> Result<RecordBatch> {
    let utc = Some(Arc::from("UTC"));
    let schema = Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("sql", DataType::Utf8, false),
        Field::new(
            "started_at",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            false,
        ),
        Field::new("duration_ms", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("access", DataType::Utf8, true),
        Field::new("day", DataType::Date32, false),
    ]);
    let text = |f: fn(&QueryRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(records.iter().map(f)))
    };
    let count = |f: fn(&QueryRecord) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(records.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|r| &r.query_id),
        text(|r| &r.user),
        text(|r| &r.sql),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                records.iter().map(|r| r.started_at.timestamp_micros()),
            )
            .with_timezone_opt(utc),
        ),
        count(|r| r.duration.as_millis() as u64),
        count(|r| r.rows),
        count(|r| r.bytes),
        text(|r| r.outcome),
        Arc::new(StringArray::from(
            records.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            records.iter().map(|r| r.access.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(Date32Array::from_iter_values(
            records
                .iter()
                .map(|r| (r.started_at.timestamp().div_euclid(86_400)) as i32),
        )),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}
