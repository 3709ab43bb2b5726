//! Snapshot mode: a consistent point-in-time copy of a PostgreSQL table, read by several
//! connections that share one exported snapshot, committed to the lake in one Delta commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;
use futures::future::try_join_all;
use tokio_postgres::Client;

use super::config::TableConfig;
use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::lake::write::{WriteMode, WriteOutcome, transaction_version, write_streams};
use crate::query::Session;
use crate::sources::postgres::{
    CopyConnection, connect, describe, pg_error, read_stream, schema_of,
};

/// What a snapshot did.
#[derive(Clone, Debug)]
pub struct SnapshotReport {
    /// The lake table.
    pub table: String,
    /// Rows copied.
    pub rows: usize,
    /// Seconds taken.
    pub seconds: f64,
    /// The commit's outcome.
    pub outcome: WriteOutcome,
}

/// Copies one table. `from` tables are split by physical page ranges (ctid) across
/// `parallelism` connections, all inside the snapshot the first connection exported, so the
/// copy is consistent even while the table changes; `query` sources use one connection.
pub async fn snapshot_table(
    session: &Session,
    url: &str,
    pipeline: &str,
    table: &TableConfig,
    parallelism: usize,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let target = TableRef::parse(&table.to)?;
    let coordinator = connect(url).await?;
    coordinator
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| pg_error(&table.to, &e))?;
    let snapshot: String = coordinator
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| pg_error(&table.to, &e))?
        .get(0);
    let queries = match &table.from {
        Some(from) if parallelism > 1 => page_ranges(&coordinator, from, parallelism).await?,
        _ => vec![table.source_query()],
    };
    // The parts differ only in their page range: one description serves them all.
    let first = queries
        .first()
        .ok_or_else(|| Error::Unsupported(format!("{}: nothing to read", table.to)))?;
    let columns = describe(&coordinator, first).await?;
    tracing::info!(table = %table.to, parts = queries.len(), snapshot = %snapshot, "snapshot started");
    // Every reader joins the exported snapshot before the coordinator lets it go.
    let readers = queries.into_iter().map(|query| {
        let (snapshot, columns) = (snapshot.clone(), columns.clone());
        async move {
            let mut connection = CopyConnection::connect(url).await?;
            connection
                .execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
                ))
                .await?;
            read_stream(connection, query, columns).await
        }
    });
    let estimate = match &table.from {
        Some(from) => estimated_rows(&coordinator, from).await,
        None => 0,
    };
    let bar = crate::progress::bar(estimate, "rows", &format!("snapshot {}", table.to));
    // Megabytes decoded so far (Arrow), over all the parts.
    let bytes = Arc::new(AtomicU64::new(0));
    let streams: Vec<SendableRecordBatchStream> = try_join_all(readers)
        .await?
        .into_iter()
        .map(|stream| {
            let (bar, schema) = (bar.clone(), stream.schema());
            let (table, bytes) = (table.to.clone(), bytes.clone());
            let counted = stream.inspect_ok(move |b| {
                let size: usize = b
                    .columns()
                    .iter()
                    .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
                    .sum();
                let total = bytes.fetch_add(size as u64, Ordering::Relaxed) + size as u64;
                bar.set_message(format!("snapshot {table}, {} MB", total / 1_000_000));
                bar.inc(b.num_rows() as u64);
            });
            Box::pin(RecordBatchStreamAdapter::new(schema, counted)) as SendableRecordBatchStream
        })
        .collect();
    let _ = coordinator.batch_execute("COMMIT").await;
    let schema = schema_of(&columns);

    let app_id = table.app_id(pipeline);
    let position = transaction_version(session.lake(), &target, &app_id)
        .await?
        .unwrap_or(0)
        + 1;
    let mode = if session.lake().is_table(&target).await? {
        WriteMode::Overwrite
    } else {
        WriteMode::Create
    };
    let options = table.write_options(mode, app_id, position);
    let state = session.write_state();
    let outcome = write_streams(session.lake(), &target, &state, schema, streams, options).await?;
    bar.finish_and_clear();
    let rows = match &outcome {
        WriteOutcome::Committed { rows, .. } => *rows as usize,
        WriteOutcome::AlreadyCommitted { .. } => 0,
    };
    session.catalog().note_table(&target, true);
    Ok(SnapshotReport {
        table: target.to_string(),
        rows,
        seconds: started.elapsed().as_secs_f64(),
        outcome,
    })
}

/// The planner's row estimate of a table (`pg_class.reltuples`), 0 when unknown.
async fn estimated_rows(client: &Client, from: &str) -> u64 {
    client
        .query_one(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::text::regclass",
            &[&from],
        )
        .await
        .map(|row| row.get::<_, i64>(0).max(0) as u64)
        .unwrap_or(0)
}

/// Queries that together read every page of `from` once: `[start, end)` page ranges by ctid,
/// the last one open-ended.
async fn page_ranges(client: &Client, from: &str, parts: usize) -> Result<Vec<String>> {
    let pages: i64 = client
        .query_one(
            "SELECT (pg_relation_size($1::text::regclass) / current_setting('block_size')::int)::bigint",
            &[&from],
        )
        .await
        .map_err(|e| pg_error(from, &e))?
        .get(0);
    let step = (pages / parts as i64).max(1);
    let mut queries = Vec::new();
    let mut start = 0;
    for i in 0..parts {
        let last = i + 1 == parts || start + step >= pages;
        queries.push(if last {
            format!("SELECT * FROM {from} WHERE ctid >= '({start},0)'::tid")
        } else {
            format!(
                "SELECT * FROM {from} WHERE ctid >= '({start},0)'::tid AND ctid < '({},0)'::tid",
                start + step
            )
        });
        if last {
            break;
        }
        start += step;
    }
    Ok(queries)
}
