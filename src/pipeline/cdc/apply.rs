//! One table's folded changes applied to its lake table: a Delta MERGE by key (deletes,
//! updates that keep values PostgreSQL did not send, inserts), committed with the pipeline's
//! position.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructField, Transaction};

use crate::error::{Error, Result};
use crate::lake::write::{WriteMode, WriteOptions, WriteOutcome, write_batches};
use crate::lake::{TableRef, TableVersion};
use crate::pipeline::config::TableConfig;
use crate::query::Session;
use crate::sources::postgres::changes::{DELETED, KEEP};
use crate::sources::postgres::quote_identifier;

/// Applies one table's folded changes: a TRUNCATE first (all rows deleted), then one MERGE by
/// key; the last commit carries `lsn` as the pipeline's position.
pub(super) async fn apply(
    session: &Session,
    pipeline: &str,
    table: &TableConfig,
    key: &[String],
    batch: Option<RecordBatch>,
    truncated: bool,
    lsn: i64,
) -> Result<WriteOutcome> {
    let target = TableRef::parse(&table.to)?;
    let delta_error = |e| Error::delta(target.to_string(), e);
    let marker = || {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(table.app_id(pipeline), lsn))
    };
    let state = Arc::new(session.write_state());
    session.lake().ensure_safe_commits().await?;
    let mut dt = session
        .lake()
        .open_table(&target, &TableVersion::Latest)
        .await?;
    if truncated {
        let mut delete = dt.delete().with_session_state(state.clone());
        if batch.is_none() {
            delete = delete.with_commit_properties(marker());
        }
        dt = delete.await.map_err(delta_error)?.0;
    }
    let Some(batch) = batch else {
        return Ok(WriteOutcome::Committed {
            version: dt.version().unwrap_or_default(),
            rows: 0,
        });
    };
    let schema = batch.schema();
    let source = session.context().read_table(Arc::new(MemTable::try_new(
        schema.clone(),
        vec![vec![batch]],
    )?))?;
    let predicate = key
        .iter()
        .map(|k| {
            let k = quote_identifier(k);
            format!("target.{k} = source.{k}")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !n.starts_with("_gamelake_"))
        .collect();
    let kept = |n: &str| schema.field_with_name(&format!("{KEEP}{n}")).is_ok();
    let deleted = format!("source.{}", quote_identifier(DELETED));
    let (written, _) = dt
        .merge(source, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_session_state(state)
        .with_commit_properties(marker())
        .when_matched_delete(|d| d.predicate(deleted.clone()))
        .and_then(|m| {
            m.when_matched_update(|u| {
                names.iter().fold(u, |u, n| {
                    let q = quote_identifier(n);
                    let value = if kept(n) {
                        let keep = quote_identifier(&format!("{KEEP}{n}"));
                        format!("CASE WHEN source.{keep} THEN target.{q} ELSE source.{q} END")
                    } else {
                        format!("source.{q}")
                    };
                    u.update(q, value)
                })
            })
        })
        .and_then(|m| {
            m.when_not_matched_insert(|i| {
                names
                    .iter()
                    .fold(i.predicate(format!("NOT {deleted}")), |i, n| {
                        let q = quote_identifier(n);
                        i.set(q.clone(), format!("source.{q}"))
                    })
            })
        })
        .map_err(delta_error)?
        .await
        .map_err(delta_error)?;
    Ok(WriteOutcome::Committed {
        version: written.version().unwrap_or_default(),
        rows: 0,
    })
}

/// Adds columns to the lake table (a metadata-only commit): PostgreSQL gained them.
pub(super) async fn add_columns(
    session: &Session,
    table: &TableConfig,
    fields: Vec<datafusion::arrow::datatypes::Field>,
) -> Result<()> {
    let target = TableRef::parse(&table.to)?;
    let delta_error = |e| Error::delta(target.to_string(), e);
    let fields = fields
        .iter()
        .map(|f| f.try_into_kernel())
        .collect::<std::result::Result<Vec<StructField>, _>>()
        .map_err(|e| delta_error(e.into()))?;
    let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
    session.lake().ensure_safe_commits().await?;
    let dt = session
        .lake()
        .open_table(&target, &TableVersion::Latest)
        .await?;
    dt.add_columns()
        .with_fields(fields)
        .await
        .map_err(delta_error)?;
    tracing::info!(table = %target, columns = ?names, "columns added to follow PostgreSQL");
    Ok(())
}

/// Appends a batch of changes to the table's changelog (created by the first), recording `lsn`
/// in the same commit.
pub(super) async fn append_changelog(
    session: &Session,
    pipeline: &str,
    table: &TableConfig,
    batch: RecordBatch,
    lsn: i64,
) -> Result<()> {
    let target = super::setup::changelog_table(table)?;
    let mode = if session.lake().is_table(&target).await? {
        WriteMode::Append
    } else {
        WriteMode::Create
    };
    let options = WriteOptions {
        mode,
        layout: None,
        transaction: Some((table.app_id(pipeline), lsn)),
        merge_schema: true,
        checkpoint: true,
    };
    write_batches(
        session.lake(),
        &target,
        &session.write_state(),
        vec![batch],
        options,
    )
    .await?;
    session.catalog().note_table(&target, true);
    Ok(())
}
