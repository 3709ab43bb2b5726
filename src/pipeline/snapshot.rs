//! Snapshot mode: a consistent point-in-time copy of a source table, read in parts on several
//! connections that see one point in time ([`Source::snapshot`]), committed to the lake in one
//! Delta commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

use super::config::TableConfig;
use crate::error::Result;
use crate::lake::TableRef;
use crate::lake::write::{WriteMode, WriteOutcome, transaction_version, write_streams};
use crate::query::Session;
use crate::sources::Source;

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

/// Copies one table from `source` in at most `parallelism` parts; the commit records
/// `position` as the pipeline's (default: one past the last).
pub async fn snapshot_table(
    session: &Session,
    source: &dyn Source,
    pipeline: &str,
    table: &TableConfig,
    parallelism: usize,
    position: Option<i64>,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let target = TableRef::parse(&table.to)?;
    let snapshot = source.snapshot(&table.read(source), parallelism).await?;
    let bar = crate::progress::bar(
        snapshot.estimated_rows,
        "rows",
        &format!("snapshot {}", table.to),
    );
    // Megabytes decoded so far (Arrow), over all the parts.
    let bytes = Arc::new(AtomicU64::new(0));
    let streams: Vec<SendableRecordBatchStream> = snapshot
        .parts
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
    let schema = snapshot.schema;

    let app_id = table.app_id(pipeline);
    let position = match position {
        Some(p) => p,
        None => {
            transaction_version(session.lake(), &target, &app_id)
                .await?
                .unwrap_or(0)
                + 1
        }
    };
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
