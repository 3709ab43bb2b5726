//! MySQL and MariaDB as a pipeline [`Source`].
//!
//! Snapshots follow mydumper: a brief `FLUSH TABLES WITH READ LOCK` on a coordinating
//! connection, every reader starts `WITH CONSISTENT SNAPSHOT` while writes wait, then the lock
//! is released; the table is split into primary-key ranges, one per reader (composite and
//! non-integer keys by sampling the key's order). Without the RELOAD privilege, or a key, or
//! when the lock cannot be had within seconds, one reader reads the table in one consistent
//! transaction, with a warning.
//!
//! Changes are read from the last bound on; the next bound is one second before the start of
//! the oldest InnoDB transaction still open that may write (read from `information_schema.INNODB_TRX`, which needs the PROCESS privilege;
//! `READ ONLY` transactions, such as snapshots', cannot commit rows) or before now:
//! a row committed late carries a cursor at or after its transaction's start, so the next run
//! reads it. The bound is read before the rows' snapshot starts.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use futures::TryStreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::tables::{estimated_rows, primary_key, range_filter};
use super::{
    MyKind, SESSION, TypePolicy, connect, describe, my_error, quote_identifier, quote_qualified,
    read_stream, schema_of,
};
use crate::error::{Error, Result};
use crate::sources::{Changes, Read, Snapshot, Source};

/// How far behind the oldest open transaction (and now) an incremental window ends: InnoDB
/// reports transaction starts in whole seconds, refreshes `INNODB_TRX` every 0.1 s, and a
/// statement's `NOW()` can precede its transaction's start by a moment.
const LAG_SECONDS: u32 = 1;

/// An open transaction older than this, holding the incremental window back, is warned about.
const HELD_WARNING_SECONDS: u32 = 600;

/// How long the coordinator waits for the read lock before reading with one connection.
const LOCK_WAIT_SECONDS: u32 = 10;

/// A MySQL or MariaDB database, by URL, read with a type policy.
pub struct MySource {
    url: String,
    policy: TypePolicy,
}

impl MySource {
    /// The database at `url`; nothing connects until a read.
    pub fn new(url: &str, policy: TypePolicy) -> Self {
        Self {
            url: url.to_string(),
            policy,
        }
    }

    async fn session(&self) -> Result<Conn> {
        connect(&self.url, &SESSION).await
    }
}

/// One reader's part of a table: its query and the key bounds it binds.
struct Part {
    query: String,
    params: Vec<Value>,
}

#[async_trait::async_trait]
impl Source for MySource {
    fn select_all(&self, from: &str) -> String {
        format!("SELECT * FROM {}", quote_qualified(from))
    }

    fn quote(&self, column: &str) -> String {
        quote_identifier(column)
    }

    async fn describe(&self, query: &str) -> Result<SchemaRef> {
        let mut conn = self.session().await?;
        let columns = describe(&mut conn, query, self.policy).await?;
        let _ = conn.disconnect().await;
        Ok(schema_of(&columns))
    }

    async fn snapshot(&self, read: &Read, parallelism: usize) -> Result<Snapshot> {
        let mut coordinator = self.session().await?;
        let columns = describe(&mut coordinator, &read.query, self.policy).await?;
        let estimated_rows = match &read.from {
            Some(from) => estimated_rows(&mut coordinator, from).await,
            None => 0,
        };
        let mut parts = match &read.from {
            Some(from) if parallelism > 1 => {
                key_ranges(&mut coordinator, from, parallelism, estimated_rows).await?
            }
            _ => vec![Part {
                query: read.query.clone(),
                params: Vec::new(),
            }],
        };
        let locked = parts.len() > 1 && read_lock(&mut coordinator, &read.target).await;
        if parts.len() > 1 && !locked {
            parts = vec![Part {
                query: read.query.clone(),
                params: Vec::new(),
            }];
        }
        let mut readers = Vec::with_capacity(parts.len());
        for part in parts {
            let mut conn = self.session().await?;
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await
                .map_err(|e| my_error(&read.target, e))?;
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(|e| my_error(&read.target, e))?;
            readers.push((conn, part));
        }
        if locked {
            coordinator
                .query_drop("UNLOCK TABLES")
                .await
                .map_err(|e| my_error(&read.target, e))?;
        }
        let _ = coordinator.disconnect().await;
        tracing::info!(table = %read.target, parts = readers.len(), "snapshot started");
        let parts = readers
            .into_iter()
            .map(|(conn, part)| {
                read_stream(conn, part.query, part.params, columns.clone(), self.policy)
            })
            .collect();
        Ok(Snapshot {
            schema: schema_of(&columns),
            estimated_rows,
            parts,
        })
    }

    async fn changes(&self, read: &Read, cursor: &str, since: Option<i64>) -> Result<Changes> {
        // The window is computed in the server's own time zone, which applications write
        // `datetime` cursors in (and InnoDB reports transaction starts in); rows are then
        // read in UTC.
        let mut conn = connect(&self.url, &["SET NAMES utf8mb4"]).await?;
        let columns = describe(&mut conn, &read.query, self.policy).await?;
        let instant = match columns.iter().find(|c| c.name == cursor).map(|c| &c.kind) {
            Some(MyKind::Timestamp) => true,
            Some(MyKind::DateTime) => false,
            _ => {
                return Err(Error::Invalid(format!(
                    "{}: cursor column `{cursor}` must be a datetime or timestamp column of the source",
                    read.target
                )));
            }
        };
        // The bound is read before the snapshot starts: a transaction that began before the
        // bound has then either committed (the snapshot sees it) or is open (the bound is at or
        // before its start); read after, one committing in between would be lost.
        let (upper, holder): (Option<String>, Option<String>) = conn
            .query_first(format!(
                "SELECT CAST(UNIX_TIMESTAMP(LEAST(NOW(6), COALESCE(CONVERT_TZ(t.started,
                     'SYSTEM', @@session.time_zone), NOW(6))) - INTERVAL {LAG_SECONDS} SECOND) AS CHAR),
                   IF(t.started < NOW() - INTERVAL {HELD_WARNING_SECONDS} SECOND, CONCAT(t.thread, ' since ', t.started), NULL)
                 FROM (SELECT MIN(trx_started) AS started,
                         (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX
                          WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_is_read_only = 0 ORDER BY trx_started LIMIT 1) AS thread
                       FROM information_schema.INNODB_TRX
                       WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_is_read_only = 0) AS t"
            ))
            .await
            .map_err(|e| {
                Error::Invalid(format!(
                    "{}: cannot read the oldest open transaction ({}); the source's user needs the PROCESS privilege",
                    read.target,
                    my_error("INNODB_TRX", e)
                ))
            })?
            .unwrap_or((None, None));
        if let Some(holder) = holder {
            tracing::warn!(
                "{}: transaction of connection {holder} is still open; rows after its start wait for it to end (KILL it on the source if it is stuck)",
                read.target
            );
        }
        let upper = upper
            .as_deref()
            .and_then(micros_of_seconds)
            .ok_or_else(|| {
                Error::Internal(format!("{}: no current time from the server", read.target))
            })?;
        // The window never runs backwards: a bound held behind the last one reads nothing.
        let upper = since.map_or(upper, |since| upper.max(since));
        // The lower bound as the cursor's type compares it: wall-clock text in this session's
        // zone for a datetime cursor, an instant for a timestamp cursor (read after the switch
        // to UTC).
        let lower = match since {
            Some(w) if instant => Some(format!("FROM_UNIXTIME({})", seconds_text(w))),
            Some(w) => Some(wall_clock(&mut conn, w).await?),
            None => None,
        };
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(|e| my_error(&read.target, e))?;
        conn.query_drop("SET time_zone = '+00:00'")
            .await
            .map_err(|e| my_error(&read.target, e))?;
        // Every visible row from the last bound on: rows at or after the new bound come again
        // next run, and merging them by key a second time changes nothing.
        let cursor = quote_identifier(cursor);
        let lower = lower
            .map(|l| format!(" WHERE {cursor} >= {l}"))
            .unwrap_or_default();
        let query = format!("SELECT * FROM ({}) AS src{lower}", read.query);
        tracing::info!(table = %read.target, since = ?since, upper, "incremental range (µs since the epoch)");
        let schema = schema_of(&columns);
        let stream = read_stream(conn, query, Vec::new(), columns, self.policy);
        let batches: Vec<RecordBatch> =
            stream.try_collect().await.map_err(Error::from_datafusion)?;
        Ok(Changes {
            schema,
            batches,
            upper,
        })
    }
}

/// An instant as this session's wall-clock time, a `datetime(6)` literal.
async fn wall_clock(conn: &mut Conn, micros: i64) -> Result<String> {
    let sql = format!(
        "SELECT DATE_FORMAT(FROM_UNIXTIME({}), '%Y-%m-%d %H:%i:%s.%f')",
        seconds_text(micros)
    );
    let text: Option<String> = conn
        .query_first(sql.as_str())
        .await
        .map_err(|e| my_error(&sql, e))?;
    text.map(|t| format!("CAST('{t}' AS DATETIME(6))"))
        .ok_or_else(|| Error::Internal(format!("no date from the server for {sql}")))
}

/// Seconds with six decimals (`1764000000.123456`) as microseconds.
fn micros_of_seconds(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = format!("{fraction:0<6}");
    Some(whole.parse::<i64>().ok()? * 1_000_000 + fraction.get(..6)?.parse::<i64>().ok()?)
}

/// Microseconds as exact seconds text for FROM_UNIXTIME.
fn seconds_text(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let magnitude = micros.unsigned_abs();
    format!(
        "{sign}{}.{:06}",
        magnitude / 1_000_000,
        magnitude % 1_000_000
    )
}

/// Takes `FLUSH TABLES WITH READ LOCK` for the moment the readers need to start: false (with a
/// warning) without the privilege or when it cannot be had within seconds.
async fn read_lock(conn: &mut Conn, target: &str) -> bool {
    let wait = format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}");
    let locked = match conn.query_drop(wait).await {
        Ok(()) => conn.query_drop("FLUSH TABLES WITH READ LOCK").await,
        Err(e) => Err(e),
    };
    if let Err(e) = &locked {
        tracing::warn!(
            "{target}: no read lock for a consistent parallel snapshot ({e}); one connection reads the table"
        );
    }
    locked.is_ok()
}

/// Queries that together read every row of `from` once: ranges of its primary key, the first
/// and last open-ended. A table without a primary key is read whole by one reader.
async fn key_ranges(conn: &mut Conn, from: &str, parts: usize, rows: u64) -> Result<Vec<Part>> {
    let key = primary_key(conn, from).await?;
    let source = quote_qualified(from);
    let whole = || {
        vec![Part {
            query: format!("SELECT * FROM {source}"),
            params: Vec::new(),
        }]
    };
    if key.is_empty() {
        tracing::warn!("{from} has no primary key: one connection reads it");
        return Ok(whole());
    }
    let order = key
        .iter()
        .map(|k| quote_identifier(k))
        .collect::<Vec<_>>()
        .join(", ");
    // Boundaries where the key's order passes each share of the rows.
    let mut bounds: Vec<Vec<Value>> = Vec::new();
    let step = rows / parts as u64;
    if step == 0 {
        return Ok(whole());
    }
    for i in 1..parts as u64 {
        let sql = format!(
            "SELECT {order} FROM {source} ORDER BY {order} LIMIT 1 OFFSET {}",
            i * step
        );
        let row: Option<mysql_async::Row> = conn
            .query_first(sql.as_str())
            .await
            .map_err(|e| my_error(from, e))?;
        if let Some(row) = row {
            let values = row.unwrap();
            if bounds.last() != Some(&values) {
                bounds.push(values);
            }
        }
    }
    if bounds.is_empty() {
        return Ok(whole());
    }
    Ok((0..=bounds.len())
        .map(|i| {
            let lower = i.checked_sub(1).map(|j| bounds[j].as_slice());
            let (filter, params) = range_filter(&key, lower, bounds.get(i).map(Vec::as_slice));
            Part {
                query: format!("SELECT * FROM {source}{filter}"),
                params,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_microseconds_round_trip() {
        assert_eq!(
            micros_of_seconds("1764000000.123456"),
            Some(1_764_000_000_123_456)
        );
        assert_eq!(
            micros_of_seconds("1764000000.5"),
            Some(1_764_000_000_500_000)
        );
        assert_eq!(micros_of_seconds("1764000000"), Some(1_764_000_000_000_000));
        assert_eq!(seconds_text(1_764_000_000_000_001), "1764000000.000001");
        assert_eq!(seconds_text(-1), "-0.000001");
    }
}
