//! `[sink] kind = "postgres"`: a query over the lake published into a PostgreSQL table (e.g.
//! friend suggestions the game reads), atomically for the game's readers.
//!
//! The result is loaded with binary COPY into a temporary staging table, then moved into the
//! target in one transaction: `replace` deletes the old rows and inserts the new ones (DELETE,
//! not TRUNCATE, which is not MVCC-safe: a reader's older snapshot would see an empty table);
//! `upsert` inserts or updates by key. A reader sees the old set or the new set, never an empty
//! or partial one. The target is created from the result's columns when it does not exist.

use std::time::Instant;

use super::config::{Mode, TableConfig};
use super::pg_copy;
use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::query::Session;
use crate::sources::postgres::{connect, pg_error, quote_identifier};

/// What publishing one table did.
#[derive(Debug)]
pub struct PublishReport {
    /// The PostgreSQL table.
    pub table: String,
    /// Rows it holds from this run.
    pub rows: usize,
    /// Seconds taken (query and load).
    pub seconds: f64,
}

/// Runs `table`'s query over the lake and publishes the result into PostgreSQL at `url`.
pub async fn publish(session: &Session, url: &str, table: &TableConfig) -> Result<PublishReport> {
    let started = Instant::now();
    let target = TableRef::parse(&table.to)?;
    let (schema, batches) = session
        .collect_last(&table.source_query())
        .await?
        .ok_or_else(|| Error::Invalid(format!("{}: the query returns no rows", table.to)))?;
    let columns = pg_copy::columns(&schema, &table.to)?;
    for key in &table.key {
        if !columns.iter().any(|c| c.name == *key) {
            return Err(Error::Invalid(format!(
                "{}: key column {key} is not in the query's result",
                table.to
            )));
        }
    }
    let mut client = connect(url).await?;
    let context = |what: &str| format!("{} ({what})", table.to);
    client
        .batch_execute(&pg_copy::create_sql(&target, &columns, &table.key))
        .await
        .map_err(|e| pg_error(&context("creating it"), &e))?;

    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_error(&context("begin"), &e))?;
    pg_copy::create_stage(&tx, &columns, &table.to).await?;
    // `filter` is "" for the real move, " WHERE false" for the probe below.
    let insert = |filter: &str| pg_copy::insert_from_stage(&target, &columns, filter);
    let upsert = |insert: String| {
        let key: Vec<String> = table.key.iter().map(|k| quote_identifier(k)).collect();
        let updates: Vec<String> = columns
            .iter()
            .filter(|c| !table.key.contains(&c.name))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_identifier(&c.name)))
            .collect();
        let action = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        format!("{insert} ON CONFLICT ({}) {action}", key.join(", "))
    };
    let (probe, statement) = match table.mode {
        Mode::Upsert => (upsert(insert(" WHERE false")), upsert(insert(""))),
        _ => (
            insert(" WHERE false"),
            format!(
                "DELETE FROM {};\n{}",
                pg_copy::target_name(&target),
                insert("")
            ),
        ),
    };
    // The move, planned on no rows before any is loaded: a target whose columns do not fit the
    // result (missing, or of a type the result cannot be assigned to, or no unique key for an
    // upsert) fails here, naming the column, and the transaction leaves the table as it was.
    tx.batch_execute(&probe).await.map_err(|e| {
        pg_error(
            &format!(
                "{}: the table does not fit the query's result; CAST the column in the query, or alter or drop the table (it is created from the result when missing)",
                table.to
            ),
            &e,
        )
    })?;
    let rows = pg_copy::copy_to_stage(&tx, &columns, &batches, &table.to).await?;
    tx.batch_execute(&statement)
        .await
        .map_err(|e| pg_error(&context("moving the staged rows in"), &e))?;
    tx.commit()
        .await
        .map_err(|e| pg_error(&context("commit"), &e))?;
    Ok(PublishReport {
        table: table.to.clone(),
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}
