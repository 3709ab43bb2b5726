//! The v1.0 migration (`mode = "migrate"`): each MySQL table split at a cutoff — rows whose
//! `time_column` is older than `hot_after` to the lake (history), the newer ones to PostgreSQL
//! (the last year, for the game) — range by range of its key, every range validated and
//! recorded so that a rerun after a crash finishes the job with each row exactly once.
//!
//! Per range, in one consistent snapshot of v1.0 per run:
//! 1. MariaDB computes the range's row count and checksum ([`checksum`]); gamelake reads the
//!    rows and computes the same over what it decoded: unequal, nothing is written.
//! 2. The newer rows go to PostgreSQL (binary COPY into a staging table, moved in) in the same
//!    transaction that marks the range migrated with v1.0's count and checksum ([`progress`]).
//! 3. The older rows are appended to the lake in one Delta commit carrying the range as the
//!    pipeline's position (`txn`), so it is never appended twice.
//!
//! A rerun skips ranges done on both sides (after checking that v1.0 still has the checksum
//! recorded for them: a range that changed is an error), and finishes a range whose lake commit
//! was missing. At the end, both sides are read back whole and their counts and checksums must
//! add up to v1.0's.

mod checksum;
mod progress;

use std::time::Instant;

use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::kernels::cmp::lt;
use arrow::compute::{filter_record_batch, not, prep_null_mask_filter};
use arrow::datatypes::DataType;
use futures::TryStreamExt;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use checksum::Checksum;

use super::config::{PipelineConfig, SinkConfig, SourceConfig, TableConfig, Tinyint1};
use super::pg_copy;
use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::lake::write::{WriteMode, transaction_version, write_batches};
use crate::query::Session;
use crate::sources::mysql::tables::{boundaries, primary_key, range_filter};
use crate::sources::mysql::{
    MyKind, SESSION, TypePolicy, connect, describe, my_error, quote_qualified, read_batches,
};
use crate::sources::postgres::{self as pg, pg_error};

/// Rows per range when the table does not say.
const RANGE_ROWS: u64 = 100_000;

/// What migrating one table did: the line of the final validation table.
#[derive(Clone, Debug)]
pub struct MigrateReport {
    /// The lake table.
    pub table: String,
    /// The PostgreSQL table.
    pub pg_table: String,
    /// The cutoff, as the time column reads it.
    pub cutoff: String,
    /// Ranges in the plan.
    pub ranges: usize,
    /// Ranges a previous run had finished (checked, not copied again).
    pub resumed: usize,
    /// v1.0's rows (all ranges).
    pub rows: u64,
    /// Rows the lake table holds.
    pub to_lake: u64,
    /// Rows the PostgreSQL table holds.
    pub to_pg: u64,
    /// Zero dates read as NULL in this run.
    pub zero_dates: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// Migrates every table of a migration pipeline.
pub async fn migrate_all(
    session: &Session,
    pipeline: &PipelineConfig,
) -> Result<Vec<MigrateReport>> {
    let (
        SourceConfig::Mysql {
            url,
            tinyint1,
            zero_dates,
            ..
        },
        Some(SinkConfig::Postgres { url: pg_url }),
    ) = (&pipeline.source, &pipeline.sink)
    else {
        return Err(Error::Invalid(format!(
            "pipeline {} is not a migration: it needs [source] kind = \"mysql\" and [sink] kind = \"postgres\"",
            pipeline.name
        )));
    };
    let policy = TypePolicy {
        tinyint1_as_int: *tinyint1 == Tinyint1::Int,
        zero_dates: *zero_dates,
    };
    let mut reports = Vec::new();
    for table in &pipeline.tables {
        let ends = Ends {
            mysql: url.expose(),
            postgres: pg_url.expose(),
            policy,
        };
        reports.push(migrate_table(session, &ends, &pipeline.name, table).await?);
    }
    Ok(reports)
}

/// A range read from v1.0 and verified, on its way to be written.
struct RangeRead<'a> {
    range: &'a progress::Range,
    /// How messages name it.
    name: String,
    /// v1.0's count and checksum of it.
    source: Checksum,
    /// Its rows and zero dates per column; None when both sides hold it already.
    rows: Option<(Vec<RecordBatch>, Vec<u64>)>,
}

/// Where a migration reads and writes.
struct Ends<'a> {
    mysql: &'a str,
    postgres: &'a str,
    policy: TypePolicy,
}

/// One table's migration.
async fn migrate_table(
    session: &Session,
    ends: &Ends<'_>,
    pipeline: &str,
    table: &TableConfig,
) -> Result<MigrateReport> {
    let started = Instant::now();
    let (Some(from), Some(time_column)) = (&table.from, &table.time_column) else {
        return Err(Error::Invalid(format!(
            "{}: migrate mode needs from and time_column",
            table.to
        )));
    };
    let lake_table = TableRef::parse(&table.to)?;
    let pg_table = TableRef::parse(table.hot_to.as_deref().unwrap_or(&table.to))?;
    let mut client = pg::connect(ends.postgres).await?;
    progress::prepare(&client, pipeline, &table.to).await?;

    let mut my = connect(ends.mysql, &SESSION).await?;
    let select = format!("SELECT * FROM {}", quote_qualified(from));
    let columns = describe(&mut my, &select, ends.policy).await?;
    let time_index = columns
        .iter()
        .position(|c| c.name == *time_column)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{}: time_column `{time_column}` is not a column of {from}",
                table.to
            ))
        })?;
    let time_kind = columns[time_index].kind.clone();
    let key = if table.key.is_empty() {
        primary_key(&mut my, from).await?
    } else {
        table.key.clone()
    };

    let plan = match progress::load(&client, pipeline, &table.to).await? {
        Some(plan) => plan,
        None => {
            let after = table.hot_after_duration()?;
            let cutoff = cutoff_of(&mut my, &time_kind, after.as_secs(), &table.to).await?;
            let bounds = if key.is_empty() {
                tracing::warn!(
                    "{from} has no primary key: it is migrated as one range (a crash redoes it whole)"
                );
                Vec::new()
            } else {
                let every = table.range_rows.unwrap_or(RANGE_ROWS);
                boundaries(&mut my, from, &key, every).await?
            };
            progress::save(&mut client, pipeline, &table.to, cutoff, &key, &bounds).await?
        }
    };
    if plan.key != key {
        return Err(Error::Invalid(format!(
            "{}: its ranges were cut by ({}) when the migration began, but the key is now ({}); put key = [{}] back in the file, or {}",
            table.to,
            plan.key.join(", "),
            key.join(", "),
            plan.key
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", "),
            start_over(pipeline, &table.to, &pg_table).replacen("Start over", "start over", 1)
        )));
    }
    let cutoff_text = micros_text(plan.cutoff, &time_kind);

    let schema = crate::sources::mysql::schema_of(&columns);
    let mut pg_columns = pg_copy::columns(&schema, &pg_table.to_string())?;
    for (pg_column, column) in pg_columns.iter_mut().zip(&columns) {
        if let MyKind::DecimalText { precision, scale } = column.kind {
            pg_column.cast_text_to(format!("numeric({precision},{scale})"));
        }
    }
    let pg_key = if key.iter().all(|k| columns.iter().any(|c| c.name == *k)) {
        key.clone()
    } else {
        Vec::new()
    };
    client
        .batch_execute(&pg_copy::create_sql(&pg_table, &pg_columns, &pg_key))
        .await
        .map_err(|e| pg_error(&format!("{pg_table} (creating it)"), &e))?;

    let app_id = table.app_id(pipeline);
    let lake_done = transaction_version(session.lake(), &lake_table, &app_id)
        .await?
        .unwrap_or(0);

    my.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(|e| my_error(from, e))?;
    my.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(|e| my_error(from, e))?;
    let estimated = crate::sources::mysql::tables::estimated_rows(&mut my, from).await;
    let bar = crate::progress::bar(estimated, "rows", &format!("migrate {}", table.to));
    let row_text = checksum::mysql_row_text(&columns);
    let (mut resumed, mut bytes) = (0usize, 0u64);
    let mut zero_dates = vec![0u64; columns.len()];
    let mut expected = Checksum::default();
    // Two stages that overlap: v1.0's side (checksum, read, verify) runs one range ahead of
    // the writing side (PostgreSQL, then the lake), which takes the ranges in order through a
    // channel of one, so at most two ranges are in memory.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<RangeRead>(1);
    let read = async {
        let sender = sender;
        for range in &plan.ranges {
            let (filter, params) =
                range_filter(&key, range.lower.as_deref(), range.upper.as_deref());
            let name = range_name(&table.to, range, &key);
            let source = source_checksum(&mut my, from, &row_text, &filter, params.clone()).await?;
            let lake_has_it = lake_done > i64::from(range.no);
            if range.migrated.is_none() && lake_has_it {
                return Err(Error::Invalid(format!(
                    "{name} is in the lake but not marked migrated in gamelake.migration_ranges (was the progress table changed?). {}",
                    start_over(pipeline, &table.to, &pg_table)
                )));
            }
            if let Some(recorded) = range.migrated
                && recorded != source
            {
                return Err(Error::Invalid(format!(
                    "{name} changed in v1.0 after it was migrated ({} rows then, {} now, or the same rows with other values): v1.0 must not be written while it is migrated. {}",
                    recorded.rows,
                    source.rows,
                    start_over(pipeline, &table.to, &pg_table)
                )));
            }
            let rows = if range.migrated.is_some() && lake_has_it {
                None
            } else {
                let query = format!("{select}{filter}");
                let (batches, zeros) =
                    read_batches(&mut my, &query, params, &columns, ends.policy).await?;
                let read = Checksum::of(&batches)?;
                if read != source {
                    return Err(Error::Internal(format!(
                        "{name}: v1.0 has {} rows (checksum {}) but gamelake decoded {} rows (checksum {}); nothing of this range was written. Report this with the table's CREATE TABLE",
                        source.rows, source.sum, read.rows, read.sum
                    )));
                }
                Some((batches, zeros))
            };
            let item = RangeRead {
                range,
                name,
                source,
                rows,
            };
            if sender.send(item).await.is_err() {
                break;
            }
        }
        Ok(())
    };
    let write = async {
        while let Some(RangeRead {
            range,
            name,
            source,
            rows,
        }) = receiver.recv().await
        {
            if let Some(recorded) = range.migrated {
                expected = expected + recorded;
                bar.inc(recorded.rows);
            }
            let Some((batches, zeros)) = rows else {
                resumed += 1;
                continue;
            };
            for (total, zeros) in zero_dates.iter_mut().zip(zeros) {
                *total += zeros;
            }
            let (older, newer) = split(&batches, time_index, plan.cutoff)?;
            let (lake_rows, pg_rows) = (rows_of(&older), rows_of(&newer));
            bytes += batches
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum::<usize>() as u64;
            if range.migrated.is_none() {
                let done = progress::Done {
                    source,
                    lake_rows,
                    pg_rows,
                };
                let mark = progress::Mark {
                    pipeline,
                    table: &table.to,
                    range: range.no,
                };
                let target = (&pg_table, pg_columns.as_slice());
                commit_newer(&mut client, target, &newer, &mark, &done, &name).await?;
                expected = expected + source;
                bar.inc(source.rows);
            }
            let older = if older.is_empty() {
                vec![RecordBatch::new_empty(schema.clone())]
            } else {
                older
            };
            let options =
                table.write_options(WriteMode::Append, app_id.clone(), i64::from(range.no) + 1);
            let state = session.write_state();
            write_batches(session.lake(), &lake_table, &state, older, options).await?;
            tracing::info!(range = %name, rows = source.rows, lake_rows, pg_rows, "range migrated");
            bar.set_message(format!("migrate {}, {} MB", table.to, bytes / 1_000_000));
        }
        Ok::<(), Error>(())
    };
    futures::try_join!(read, write)?;
    let _ = my.query_drop("COMMIT").await;
    let _ = my.disconnect().await;
    bar.finish_and_clear();
    session.catalog().note_table(&lake_table, true);
    crate::sources::mysql::warn_zero_dates(&table.to, &columns, &zero_dates);

    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let in_lake = lake_checksum(session, &lake_table, &names).await?;
    let in_pg = pg_checksum(ends.postgres, &pg_table, &names).await?;
    if in_lake + in_pg != expected {
        return Err(Error::Invalid(format!(
            "{}: v1.0 had {} rows (checksum {}); the lake holds {} and PostgreSQL {} (checksum {} together). Rows were changed, added or removed in {} or {pg_table} outside this migration",
            table.to,
            expected.rows,
            expected.sum,
            in_lake.rows,
            in_pg.rows,
            (in_lake + in_pg).sum,
            table.to
        )));
    }
    Ok(MigrateReport {
        table: table.to.clone(),
        pg_table: pg_table.to_string(),
        cutoff: cutoff_text,
        ranges: plan.ranges.len(),
        resumed,
        rows: expected.rows,
        to_lake: in_lake.rows,
        to_pg: in_pg.rows,
        zero_dates: zero_dates.iter().sum(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Moves a range's newer rows into PostgreSQL (binary COPY into a staging table, one INSERT)
/// and marks the range migrated, in one transaction.
async fn commit_newer(
    client: &mut tokio_postgres::Client,
    (pg_table, pg_columns): (&TableRef, &[pg_copy::Column]),
    newer: &[RecordBatch],
    mark: &progress::Mark<'_>,
    done: &progress::Done,
    name: &str,
) -> Result<()> {
    let tx = client.transaction().await.map_err(|e| pg_error(name, &e))?;
    pg_copy::create_stage(&tx, pg_columns, name).await?;
    pg_copy::copy_to_stage(&tx, pg_columns, newer, name).await?;
    tx.batch_execute(&pg_copy::insert_from_stage(pg_table, pg_columns, ""))
        .await
        .map_err(|e| pg_error(&format!("{name} (into {pg_table})"), &e))?;
    progress::mark_migrated(&tx, mark, done, name).await?;
    tx.commit().await.map_err(|e| pg_error(name, &e))
}

/// How to start a table's migration over.
fn start_over(pipeline: &str, lake_table: &str, pg_table: &TableRef) -> String {
    format!(
        "Start over: DROP TABLE {lake_table} in the lake and {pg_table} in PostgreSQL, and DELETE FROM gamelake.migration_ranges WHERE pipeline = '{pipeline}' AND lake_table = '{lake_table}'"
    )
}

/// `v1.purchases range 3 [(120000), (240000))`: a range as messages name it.
fn range_name(table: &str, range: &progress::Range, key: &[String]) -> String {
    let show = |values: &Option<Vec<mysql_async::Value>>| match values {
        Some(values) => values
            .iter()
            .map(|v| v.as_sql(false))
            .collect::<Vec<_>>()
            .join(", "),
        None => "…".into(),
    };
    format!(
        "{table} range {} [({}) .. ({})) of ({})",
        range.no,
        show(&range.lower),
        show(&range.upper),
        key.join(", ")
    )
}

/// v1.0's count and checksum of a range, computed by MariaDB in the run's snapshot.
async fn source_checksum(
    my: &mut Conn,
    from: &str,
    row_text: &str,
    filter: &str,
    params: Vec<mysql_async::Value>,
) -> Result<Checksum> {
    let sql = format!(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CRC32({row_text})), 0) AS CHAR) FROM {}{filter}",
        quote_qualified(from)
    );
    let (rows, sum): (u64, String) = my
        .exec_first(sql.as_str(), params)
        .await
        .map_err(|e| my_error(&format!("checksum of {from}"), e))?
        .unwrap_or((0, "0".into()));
    Ok(Checksum {
        rows,
        sum: sum
            .parse()
            .map_err(|_| Error::Internal(format!("checksum of {from}: MariaDB returned {sum}")))?,
    })
}

/// The cutoff `after_seconds` before now on v1.0's clock, in the time column's terms: an
/// instant (µs since 1970, UTC) for `timestamp`, wall-clock µs in the server's zone for
/// `datetime`, the day's start for `date`.
async fn cutoff_of(my: &mut Conn, kind: &MyKind, after_seconds: u64, table: &str) -> Result<i64> {
    let local = "CONVERT_TZ(NOW(6), @@session.time_zone, @@global.time_zone)";
    let sql = match kind {
        MyKind::Timestamp => {
            format!("SELECT CAST((UNIX_TIMESTAMP(NOW(6)) - {after_seconds}) * 1000000 AS SIGNED)")
        }
        MyKind::DateTime => format!(
            "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01', {local} - INTERVAL {after_seconds} SECOND)"
        ),
        MyKind::Date => format!(
            "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01', DATE({local} - INTERVAL {after_seconds} SECOND))"
        ),
        _ => {
            return Err(Error::Invalid(format!(
                "{table}: time_column must be a date, datetime or timestamp column"
            )));
        }
    };
    let cutoff: Option<i64> = my
        .query_first(sql.as_str())
        .await
        .map_err(|e| my_error("cutoff", e))?
        .flatten();
    cutoff.ok_or_else(|| {
        Error::Invalid(format!(
            "{table}: MariaDB could not compute the cutoff in its time zone (@@global.time_zone); load its time zone tables (mariadb-tzinfo-to-sql) or set a numeric zone"
        ))
    })
}

/// µs as the time column shows them.
fn micros_text(micros: i64, kind: &MyKind) -> String {
    let Some(time) = chrono::DateTime::from_timestamp_micros(micros) else {
        return micros.to_string();
    };
    match kind {
        MyKind::Timestamp => time.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string(),
        MyKind::Date => time.format("%Y-%m-%d").to_string(),
        _ => time.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
    }
}

/// The rows older than the cutoff, and the rest (newer, or without a time).
fn split(
    batches: &[RecordBatch],
    time_index: usize,
    cutoff: i64,
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let (mut older, mut newer) = (Vec::new(), Vec::new());
    for batch in batches {
        let time = batch.column(time_index);
        let micros: Int64Array = match time.data_type() {
            DataType::Date32 => {
                let days = arrow::compute::cast(time, &DataType::Int64)?;
                arrow::compute::kernels::numeric::mul(
                    &days,
                    &Int64Array::new_scalar(86_400_000_000),
                )?
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| Error::Internal("day arithmetic".into()))?
            }
            _ => arrow::compute::cast(time, &DataType::Int64)?
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| Error::Internal("time as µs".into()))?,
        };
        let compared = lt(&micros, &Int64Array::new_scalar(cutoff))?;
        // A row without a time is not older (arrow's helper wants a mask that has nulls).
        let is_older: BooleanArray = match compared.nulls() {
            Some(_) => prep_null_mask_filter(&compared),
            None => compared,
        };
        older.push(filter_record_batch(batch, &is_older)?);
        newer.push(filter_record_batch(batch, &not(&is_older)?)?);
    }
    let keep = |b: Vec<RecordBatch>| b.into_iter().filter(|b| b.num_rows() > 0).collect();
    Ok((keep(older), keep(newer)))
}

fn rows_of(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

/// `SELECT "a", "b" FROM "schema"."table"`: DataFusion and PostgreSQL quote names alike.
fn select_columns(table: &TableRef, columns: &[&str]) -> String {
    let quoted: Vec<String> = columns.iter().map(|c| pg::quote_identifier(c)).collect();
    format!(
        "SELECT {} FROM {}",
        quoted.join(", "),
        pg_copy::target_name(table)
    )
}

/// The lake table's rows, read back, as one checksum.
async fn lake_checksum(session: &Session, table: &TableRef, columns: &[&str]) -> Result<Checksum> {
    let sql = select_columns(table, columns);
    let frame = session.context().sql(&sql).await?;
    let mut stream = frame.execute_stream().await?;
    let mut sum = Checksum::default();
    while let Some(batch) = stream.try_next().await? {
        sum.add_batch(&batch)?;
    }
    Ok(sum)
}

/// The PostgreSQL table's rows, read back, as one checksum.
async fn pg_checksum(url: &str, table: &TableRef, columns: &[&str]) -> Result<Checksum> {
    let sql = select_columns(table, columns);
    let client = pg::connect(url).await?;
    let described = pg::describe(&client, &sql).await?;
    let connection = pg::CopyConnection::connect(url).await?;
    let mut stream = pg::read_stream(connection, sql, described).await?;
    let mut sum = Checksum::default();
    while let Some(batch) = stream.try_next().await.map_err(Error::from_datafusion)? {
        sum.add_batch(&batch)?;
    }
    Ok(sum)
}
