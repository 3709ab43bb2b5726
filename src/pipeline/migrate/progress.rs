//! The migration's progress, kept beside the newer rows in the target PostgreSQL database
//! (`gamelake.migration_ranges`): the first run plans a table — its cutoff and the boundaries of
//! its key ranges — and each range is marked migrated, with v1.0's row count and checksum, in
//! the same transaction that moves its newer rows in. A rerun reads the plan back, so the
//! cutoff and the ranges never move between runs.

use mysql_async::Value;
use tokio_postgres::{Client, Transaction};

use super::checksum::Checksum;
use crate::error::{Error, Result};
use crate::sources::mysql::tables::{decode_value, encode_value};
use crate::sources::postgres::pg_error;

/// The progress table, created when missing.
const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS gamelake;
CREATE TABLE IF NOT EXISTS gamelake.migration_ranges (
    pipeline text NOT NULL,
    lake_table text NOT NULL,
    range_no integer NOT NULL,
    lower_bound text[],
    upper_bound text[],
    cutoff bigint NOT NULL,
    key_columns text[] NOT NULL,
    source_rows bigint,
    source_sum numeric,
    lake_rows bigint,
    pg_rows bigint,
    migrated_at timestamptz,
    PRIMARY KEY (pipeline, lake_table, range_no)
)";

/// One range of a table's key: `[lower, upper)`, either end open when None.
#[derive(Clone, Debug)]
pub struct Range {
    /// Its number, from 0, in key order.
    pub no: i32,
    /// The first key value it holds.
    pub lower: Option<Vec<Value>>,
    /// The first key value it no longer holds.
    pub upper: Option<Vec<Value>>,
    /// Set once its newer rows are in PostgreSQL: v1.0's rows and checksum of the range.
    pub migrated: Option<Checksum>,
}

/// A table's plan: the cutoff (µs, in the time column's own terms), the key and its ranges.
#[derive(Debug)]
pub struct Plan {
    /// Rows with a time before it go to the lake.
    pub cutoff: i64,
    /// The columns the ranges cut (empty: one range).
    pub key: Vec<String>,
    /// The ranges, in key order.
    pub ranges: Vec<Range>,
}

/// Creates the progress table if needed and takes the table's migration lock for this
/// connection's life: a second run of the same table at the same time is refused.
pub async fn prepare(client: &Client, pipeline: &str, table: &str) -> Result<()> {
    client
        .batch_execute(CREATE)
        .await
        .map_err(|e| pg_error("gamelake.migration_ranges", &e))?;
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('gamelake.migrate:' || $1 || ':' || $2))",
            &[&pipeline, &table],
        )
        .await
        .map_err(|e| pg_error("advisory lock", &e))?
        .get(0);
    if !locked {
        return Err(Error::Invalid(format!(
            "{table}: another run of pipeline {pipeline} is migrating it now; wait for it to end"
        )));
    }
    Ok(())
}

/// The plan a run recorded for the table, if any.
pub async fn load(client: &Client, pipeline: &str, table: &str) -> Result<Option<Plan>> {
    let rows = client
        .query(
            "SELECT range_no, lower_bound, upper_bound, cutoff, source_rows, source_sum::text, key_columns
             FROM gamelake.migration_ranges WHERE pipeline = $1 AND lake_table = $2 ORDER BY range_no",
            &[&pipeline, &table],
        )
        .await
        .map_err(|e| pg_error("gamelake.migration_ranges", &e))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let cutoff: i64 = first.get(3);
    let key: Vec<String> = first.get(6);
    let bound = |texts: Option<Vec<String>>| -> Result<Option<Vec<Value>>> {
        texts
            .map(|texts| {
                texts
                    .iter()
                    .map(|t| {
                        decode_value(t).ok_or_else(|| {
                            Error::Invalid(format!(
                                "{table}: gamelake.migration_ranges holds a key value it did not write ({t}); was it edited?"
                            ))
                        })
                    })
                    .collect()
            })
            .transpose()
    };
    let mut ranges = Vec::with_capacity(rows.len());
    for row in &rows {
        let rows_done: Option<i64> = row.get(4);
        let sum: Option<String> = row.get(5);
        let migrated = match (rows_done, sum) {
            (Some(rows), Some(sum)) => Some(Checksum {
                rows: rows as u64,
                sum: sum.parse().map_err(|_| {
                    Error::Invalid(format!(
                        "{table}: a checksum in gamelake.migration_ranges is not a number"
                    ))
                })?,
            }),
            _ => None,
        };
        ranges.push(Range {
            no: row.get(0),
            lower: bound(row.get(1))?,
            upper: bound(row.get(2))?,
            migrated,
        });
    }
    Ok(Some(Plan {
        cutoff,
        key,
        ranges,
    }))
}

/// Records a new plan: ranges cut at `bounds` (none: one range holding every row).
pub async fn save(
    client: &mut Client,
    pipeline: &str,
    table: &str,
    cutoff: i64,
    key: &[String],
    bounds: &[Vec<Value>],
) -> Result<Plan> {
    let encode = |values: &Vec<Value>| values.iter().map(encode_value).collect::<Vec<_>>();
    let ranges: Vec<Range> = (0..=bounds.len())
        .map(|i| Range {
            no: i as i32,
            lower: i.checked_sub(1).map(|j| bounds[j].clone()),
            upper: bounds.get(i).cloned(),
            migrated: None,
        })
        .collect();
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_error("gamelake.migration_ranges", &e))?;
    for range in &ranges {
        tx.execute(
            "INSERT INTO gamelake.migration_ranges (pipeline, lake_table, range_no, lower_bound, upper_bound, cutoff, key_columns)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &pipeline,
                &table,
                &range.no,
                &range.lower.as_ref().map(encode),
                &range.upper.as_ref().map(encode),
                &cutoff,
                &key,
            ],
        )
        .await
        .map_err(|e| pg_error("gamelake.migration_ranges", &e))?;
    }
    tx.commit()
        .await
        .map_err(|e| pg_error("gamelake.migration_ranges", &e))?;
    Ok(Plan {
        cutoff,
        key: key.to_vec(),
        ranges,
    })
}

/// Which range is being marked.
pub struct Mark<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The lake table.
    pub table: &'a str,
    /// The range's number.
    pub range: i32,
}

/// What a migrated range holds.
pub struct Done {
    /// v1.0's rows and checksum of the range.
    pub source: Checksum,
    /// Rows that went to the lake.
    pub lake_rows: u64,
    /// Rows that went to PostgreSQL.
    pub pg_rows: u64,
}

/// Marks a range migrated, inside the transaction that moves its newer rows in; an error if
/// another run marked it meanwhile.
pub async fn mark_migrated(
    tx: &Transaction<'_>,
    mark: &Mark<'_>,
    done: &Done,
    name: &str,
) -> Result<()> {
    let marked = tx
        .execute(
            "UPDATE gamelake.migration_ranges
             SET source_rows = $4, source_sum = $5::text::numeric, lake_rows = $6, pg_rows = $7, migrated_at = now()
             WHERE pipeline = $1 AND lake_table = $2 AND range_no = $3 AND migrated_at IS NULL",
            &[
                &mark.pipeline,
                &mark.table,
                &mark.range,
                &(done.source.rows as i64),
                &done.source.sum.to_string(),
                &(done.lake_rows as i64),
                &(done.pg_rows as i64),
            ],
        )
        .await
        .map_err(|e| pg_error(name, &e))?;
    if marked != 1 {
        return Err(Error::Invalid(format!(
            "{name} was marked migrated by another run meanwhile; run again"
        )));
    }
    Ok(())
}
