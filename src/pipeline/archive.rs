//! Archive mode: rows older than a cutoff move from PostgreSQL to the lake, exactly once.
//!
//! Each run: take the cutoff C (`now() - archive_after`, on the database's clock); read the
//! rows with `time_column < C` in one snapshot; append to the lake those whose key is not
//! there yet, recording C in the same commit; verify that every key read is now in the lake;
//! only then delete those keys (and only rows still older than C) from PostgreSQL, in batches.
//! A crash anywhere leaves each row in PostgreSQL, in the lake, or (until the next run) in both;
//! the next run skips keys already archived and finishes the deletes. Meant for append-only
//! history (purchases, logs): an update to a row older than the cutoff is not carried over.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::JoinType;
use datafusion::datasource::MemTable;

use super::config::TableConfig;
use super::snapshot::SnapshotReport;
use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::lake::write::{WriteMode, WriteOutcome, write_plan};
use crate::query::Session;
use crate::sources::postgres::{
    connect, describe, pg_error, quote_identifier, quote_qualified, read, schema_of,
};

/// Keys deleted per DELETE statement.
const DELETE_BATCH: usize = 10_000;

/// Runs one archive step for a table.
pub async fn archive_table(
    session: &Session,
    url: &str,
    pipeline: &str,
    table: &TableConfig,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let target = TableRef::parse(&table.to)?;
    let (from, time_column) = match (&table.from, &table.time_column) {
        (Some(f), Some(t)) if !table.key.is_empty() => (f.clone(), t.clone()),
        _ => {
            return Err(Error::Invalid(format!(
                "{}: archive mode needs from = \"schema.table\", time_column, and key = [...]",
                table.to
            )));
        }
    };
    let key = &table.key;
    let after = table.archive_after_duration()?;
    // A spinner through reading and committing; a bar over the deletes, whose count is known.
    let bar = crate::progress::bar(0, "", &format!("archive {}: reading old rows", table.to));
    let client = connect(url).await?;
    // Names as the file writes them, quoted: nothing in them is read as SQL.
    let (source, time) = (quote_qualified(&from), quote_identifier(&time_column));
    let key_columns: Vec<String> = key.iter().map(|k| quote_identifier(k)).collect();
    let key_refs: Vec<&str> = key_columns.iter().map(String::as_str).collect();
    let key_names: Vec<&str> = key.iter().map(String::as_str).collect();
    let any_null = key_columns
        .iter()
        .map(|k| format!("{k} IS NULL"))
        .collect::<Vec<_>>()
        .join(" OR ");
    if session.lake().is_table(&target).await? {
        let columns = describe(&client, &format!("SELECT * FROM {source}")).await?;
        super::check_same_columns(session, &target, &schema_of(&columns)).await?;
    }
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(|e| pg_error(&from, &e))?;
    let cutoff: i64 = client
        .query_one(
            &format!(
                "SELECT (extract(epoch FROM now() - interval '{} seconds') * 1000000)::bigint",
                after.as_secs()
            ),
            &[],
        )
        .await
        .map_err(|e| pg_error(&from, &e))?
        .get(0);
    let bound = format!("(timestamptz 'epoch' + {cutoff} * interval '1 microsecond')");
    // A row without a key could never be matched in the lake nor deleted by key: it stays in
    // PostgreSQL, counted in a warning, and the rest is archived.
    let keyless: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {source} WHERE {time} < {bound} AND ({any_null})"),
            &[],
        )
        .await
        .map_err(|e| pg_error(&from, &e))?
        .get(0);
    if keyless > 0 {
        tracing::warn!(
            "{}: {keyless} rows older than the cutoff have a NULL in their key ({}); they stay in PostgreSQL (give them a key to archive them)",
            table.to,
            key.join(", ")
        );
    }
    let (schema, batches) = read(
        &client,
        &format!("SELECT * FROM {source} WHERE {time} < {bound} AND NOT ({any_null})"),
    )
    .await?;
    let _ = client.batch_execute("COMMIT").await;
    let read_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    bar.set_message(format!(
        "archive {}: {read_rows} rows read, writing them to the lake",
        table.to
    ));
    let ctx = session.context();
    let incoming = ctx.read_table(Arc::new(MemTable::try_new(
        schema.clone(),
        vec![batches.clone()],
    )?))?;
    let app_id = table.app_id(pipeline);
    let lake = session.lake();

    // 1. Append what the lake does not hold yet, with the cutoff as the pipeline's position.
    let exists = lake.is_table(&target).await?;
    let to_append = if exists {
        let archived = ctx
            .table(target.to_string())
            .await?
            .select_columns(&key_names)?;
        incoming
            .clone()
            .join(archived, JoinType::LeftAnti, &key_refs, &key_refs, None)?
    } else {
        incoming.clone()
    };
    let mode = if exists {
        WriteMode::Append
    } else {
        WriteMode::Create
    };
    let options = table.write_options(mode, app_id, cutoff);
    let outcome = write_plan(
        lake,
        &target,
        &session.write_state(),
        to_append.logical_plan().clone(),
        options,
    )
    .await?;
    session.catalog().note_table(&target, true);

    // 2. Verify: every key read from PostgreSQL is in the lake now.
    let archived = ctx
        .table(target.to_string())
        .await?
        .select_columns(&key_names)?;
    let missing = incoming
        .clone()
        .join(archived, JoinType::LeftAnti, &key_refs, &key_refs, None)?
        .count()
        .await?;
    if missing > 0 {
        return Err(Error::Internal(format!(
            "{}: {missing} of {read_rows} archived rows are not in the lake after the commit; nothing was deleted from PostgreSQL",
            table.to
        )));
    }

    // The hot + cold view moves to the new cutoff before any delete: lake rows before it,
    // PostgreSQL rows from it on, so no row is in the view twice or missing.
    if let Some(view) = &table.view {
        let view = TableRef::parse(view)?;
        let qualified = if from.contains('.') {
            from.clone()
        } else {
            format!("public.{from}")
        };
        let instant = chrono::DateTime::from_timestamp_micros(cutoff)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let sql = format!(
            "SELECT * FROM {} WHERE {time} < '{instant}' \
             UNION ALL SELECT * FROM {} WHERE {time} >= '{instant}'",
            quote_qualified(&target.to_string()),
            quote_qualified(&format!("pg.{qualified}")),
        );
        lake.save_view(&view, &sql).await?;
    }

    // 3. Delete the verified keys from PostgreSQL, in batches, each its own transaction. The
    // keys travel as text arrays, one per key column, cast back to the columns' own types so
    // the primary key's index finds them.
    let keys = key
        .iter()
        .map(|k| key_values(&batches, schema.index_of(k)?))
        .collect::<Result<Vec<_>>>()?;
    let types = key_types(&client, &source, key).await?;
    let matches = key_columns
        .iter()
        .zip(&types)
        .enumerate()
        .map(|(i, (column, kind))| format!("t.{column} = u.k{i}::{kind}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let arrays = (1..=key.len())
        .map(|i| format!("${i}::text[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let names = (0..key.len())
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let statement = format!(
        "DELETE FROM {source} AS t USING unnest({arrays}) AS u({names}) WHERE {matches} AND t.{time} < {bound}"
    );
    let total = keys.first().map_or(0, Vec::len);
    bar.finish_and_clear();
    let bar = crate::progress::bar(
        total as u64,
        "rows",
        &format!("archive {}: deleting from PostgreSQL", table.to),
    );
    for start in (0..total).step_by(DELETE_BATCH) {
        let end = (start + DELETE_BATCH).min(total);
        let chunks: Vec<&[String]> = keys.iter().map(|k| &k[start..end]).collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = chunks
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        client
            .execute(&statement, &params)
            .await
            .map_err(|e| pg_error(&from, &e))?;
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    let appended = match &outcome {
        WriteOutcome::Committed { rows, .. } => *rows as usize,
        WriteOutcome::AlreadyCommitted { .. } => 0,
    };
    tracing::info!(table = %target, read_rows, appended, "archived");
    Ok(SnapshotReport {
        table: target.to_string(),
        rows: appended,
        seconds: started.elapsed().as_secs_f64(),
        outcome,
    })
}

/// The key columns' types as PostgreSQL writes them (`bigint`, `character varying(20)`).
async fn key_types(
    client: &tokio_postgres::Client,
    source: &str,
    key: &[String],
) -> Result<Vec<String>> {
    let mut types = Vec::new();
    for column in key {
        let row = client
            .query_opt(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attname = $2 AND NOT attisdropped AND attnum > 0",
                &[&source, column],
            )
            .await
            .map_err(|e| pg_error(source, &e))?
            .ok_or_else(|| Error::Invalid(format!("{source} has no key column {column}")))?;
        types.push(row.get(0));
    }
    Ok(types)
}

/// A key column's values as text (how the DELETE sends them, whatever the key's type).
fn key_values(batches: &[RecordBatch], column: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for batch in batches {
        let array = batch.column(column);
        let text = match array.data_type() {
            DataType::Int64
            | DataType::Int32
            | DataType::Int16
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32 => cast(array, &DataType::Utf8)?,
            other => {
                return Err(Error::Unsupported(format!(
                    "archive keys must be integers, text or dates, not {other}"
                )));
            }
        };
        let strings = text
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Internal("key column did not cast to text".into()))?;
        out.extend(strings.iter().flatten().map(String::from));
    }
    Ok(out)
}
