//! Incremental mode: rows whose cursor moved since the last run, merged into the lake table by
//! key, with the new watermark committed in the same Delta commit. A timestamp cursor's late
//! commits are the source's to bound ([`Source::changes`]): the next run starts at the bound
//! this one committed. An integer cursor (a sequence id) re-reads an overlap below the highest
//! id read ([`sequence_changes`]).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::datasource::MemTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use futures::TryStreamExt;

use super::config::TableConfig;
use super::snapshot::SnapshotReport;
use crate::error::{Error, Result};
use crate::lake::write::{WriteMode, WriteOutcome, transaction_version, write_batches};
use crate::lake::{TableRef, TableVersion};
use crate::query::Session;
use crate::sources::{Changes, Read, Source};

/// Runs one incremental step for a table.
pub async fn incremental_table(
    session: &Session,
    source: &dyn Source,
    pipeline: &str,
    table: &TableConfig,
    full_refresh: bool,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let target = TableRef::parse(&table.to)?;
    let cursor = table.cursor.clone().unwrap_or_default();
    let read = table.read(source);
    let columns = source.describe(&read.query).await?;
    let kind = match columns.field_with_name(&cursor).map(|f| f.data_type()) {
        Ok(DataType::Timestamp(..)) => CursorKind::Time,
        Ok(t) if t.is_integer() || matches!(t, DataType::Decimal128(_, 0)) => CursorKind::Sequence,
        Ok(other) => {
            return Err(Error::Invalid(format!(
                "{}: cursor column \"{cursor}\" is {other}; incremental mode needs a timestamp cursor (e.g. updated_at set by now()) or an integer one (a sequence id)",
                table.to
            )));
        }
        Err(_) => {
            return Err(Error::Invalid(format!(
                "{}: cursor column \"{cursor}\" is not among the source's columns",
                table.to
            )));
        }
    };
    if kind == CursorKind::Time && table.cursor_overlap.is_some() {
        return Err(Error::Invalid(format!(
            "{}: cursor_overlap is for integer cursors; a timestamp cursor's window is bounded by the source's open transactions: remove it",
            table.to
        )));
    }
    let app_id = table.app_id(pipeline);
    let exists = session.lake().is_table(&target).await?;
    let watermark = if full_refresh || !exists {
        None
    } else {
        super::check_same_columns(session, &target, &columns).await?;
        transaction_version(session.lake(), &target, &app_id).await?
    };
    let bar = crate::progress::bar(0, "", &format!("incremental {}: reading changes", table.to));
    let Changes {
        schema,
        batches,
        upper,
    } = match kind {
        CursorKind::Time => source.changes(&read, &cursor, watermark).await?,
        CursorKind::Sequence => {
            let overlap = table.cursor_overlap.unwrap_or(DEFAULT_OVERLAP);
            sequence_changes(source, read, &cursor, watermark, overlap).await?
        }
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    bar.set_message(format!("incremental {}: merging {rows} rows", table.to));

    let outcome = if !exists || full_refresh {
        let mode = if exists {
            WriteMode::Overwrite
        } else {
            WriteMode::Create
        };
        let options = table.write_options(mode, app_id, upper);
        let batches = if batches.is_empty() {
            vec![RecordBatch::new_empty(schema)]
        } else {
            batches
        };
        write_batches(
            session.lake(),
            &target,
            &session.write_state(),
            batches,
            options,
        )
        .await?
    } else {
        merge(
            session, &target, schema, batches, &table.key, &app_id, upper,
        )
        .await?
    };
    bar.finish_and_clear();
    session.catalog().note_table(&target, true);
    Ok(SnapshotReport {
        table: target.to_string(),
        rows,
        seconds: started.elapsed().as_secs_f64(),
        outcome,
    })
}

/// What a cursor column is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CursorKind {
    /// A timestamp set by `now()`: the source bounds the window by its open transactions.
    Time,
    /// An integer from a sequence: the window re-reads an overlap below the highest id read.
    Sequence,
}

/// Ids below the highest one read that the next run reads again, unless `cursor_overlap` says.
const DEFAULT_OVERLAP: u64 = 10_000;

/// The rows of `read` whose integer `cursor` is above `since - overlap` (every row on the
/// first run), read in one consistent snapshot; the bound committed with them is the highest
/// cursor read (or `since`, when nothing newer came). A sequence hands out ids before their
/// transactions commit, so a late commit holds ids below ones already read: the overlap reads
/// them again, and the merge by key makes the rows read twice count once.
async fn sequence_changes(
    source: &dyn Source,
    read: Read,
    cursor: &str,
    since: Option<i64>,
    overlap: u64,
) -> Result<Changes> {
    let query = match since {
        Some(since) => format!(
            "SELECT * FROM ({}) AS src WHERE {} > {}",
            read.query,
            source.quote(cursor),
            since.saturating_sub(i64::try_from(overlap).unwrap_or(i64::MAX))
        ),
        None => read.query.clone(),
    };
    let read = Read {
        query,
        from: None,
        ..read
    };
    let snapshot = source.snapshot(&read, 1).await?;
    let mut batches = Vec::new();
    for part in snapshot.parts {
        batches.extend(
            part.try_collect::<Vec<_>>()
                .await
                .map_err(Error::from_datafusion)?,
        );
    }
    let mut upper = since.unwrap_or(i64::MIN);
    for batch in &batches {
        let column = batch.column_by_name(cursor).ok_or_else(|| {
            Error::Internal(format!(
                "{}: no column {cursor} in the rows read",
                read.target
            ))
        })?;
        let ids = cast(column, &DataType::Int64).map_err(|e| {
            Error::Invalid(format!(
                "{}: cursor column {cursor} holds a value beyond 64-bit integers ({e})",
                read.target
            ))
        })?;
        if let Some(max) = max(ids.as_primitive::<Int64Type>()) {
            upper = upper.max(max);
        }
    }
    Ok(Changes {
        schema: snapshot.schema,
        batches,
        upper,
    })
}

/// Upserts rows by key, recording the watermark in the same commit.
async fn merge(
    session: &Session,
    target: &TableRef,
    schema: datafusion::arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
    key: &[String],
    app_id: &str,
    upper: i64,
) -> Result<WriteOutcome> {
    session.lake().ensure_safe_commits().await?;
    let dt = session
        .lake()
        .open_table(target, &TableVersion::Latest)
        .await?;
    let source = session
        .context()
        .read_table(Arc::new(MemTable::try_new(schema.clone(), vec![batches])?))?;
    let predicate = key
        .iter()
        .map(|k| format!("target.\"{k}\" = source.\"{k}\""))
        .collect::<Vec<_>>()
        .join(" AND ");
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let (written, _) = dt
        .merge(source, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_session_state(Arc::new(session.write_state()))
        .with_commit_properties(
            CommitProperties::default()
                .with_application_transaction(Transaction::new(app_id, upper)),
        )
        .when_matched_update(|u| {
            names.iter().fold(u, |u, n| {
                u.update(format!("\"{n}\""), format!("source.\"{n}\""))
            })
        })
        .and_then(|m| {
            m.when_not_matched_insert(|i| {
                names.iter().fold(i, |i, n| {
                    i.set(format!("\"{n}\""), format!("source.\"{n}\""))
                })
            })
        })
        .map_err(|e| Error::delta(target.to_string(), e))?
        .await
        .map_err(|e| Error::delta(target.to_string(), e))?;
    Ok(WriteOutcome::Committed {
        version: written.version().unwrap_or_default(),
        rows: 0,
    })
}
