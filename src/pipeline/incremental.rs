//! Incremental mode: rows whose timestamp cursor moved since the last run
//! ([`Source::changes`]), merged into the lake table by key, with the new watermark (the
//! source's upper bound) committed in the same Delta commit. Late commits are the source's to
//! bound: the next run starts at the upper bound this one committed.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::MemTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;

use super::config::TableConfig;
use super::snapshot::SnapshotReport;
use crate::error::{Error, Result};
use crate::lake::write::{WriteMode, WriteOutcome, transaction_version, write_batches};
use crate::lake::{TableRef, TableVersion};
use crate::query::Session;
use crate::sources::{Changes, Source};

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
    match columns.field_with_name(&cursor).map(|f| f.data_type()) {
        Ok(DataType::Timestamp(..)) => {}
        Ok(other) => {
            return Err(Error::Invalid(format!(
                "{}: cursor column \"{cursor}\" is {other}; incremental mode needs a timestamp or timestamptz cursor (e.g. updated_at set by now())",
                table.to
            )));
        }
        Err(_) => {
            return Err(Error::Invalid(format!(
                "{}: cursor column \"{cursor}\" is not among the source's columns",
                table.to
            )));
        }
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
    } = source.changes(&read, &cursor, watermark).await?;
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
