//! PostgreSQL as a pipeline [`Source`]: snapshots that several connections read inside one
//! exported snapshot, split by physical page ranges (ctid); changes bounded by the start of the
//! oldest transaction still open.

use futures::future::try_join_all;
use tokio_postgres::Client;

use super::{
    CopyConnection, connect, describe, pg_error, quote_identifier, quote_qualified, read_stream,
    schema_of,
};
use crate::error::{Error, Result};
use crate::sources::{Changes, Read, Snapshot, Source};

/// How far before the oldest open transaction (and now) an incremental window ends: a writer
/// takes its start time when its statement arrives and reports it a moment later.
const MARGIN_SECONDS: u32 = 1;

/// A PostgreSQL database, by its connection URL (or key=value string).
pub struct PgSource {
    url: String,
    /// A snapshot exported elsewhere that snapshots read in (a replication slot's), instead of
    /// one of their own.
    exported: Option<String>,
}

impl PgSource {
    /// The database at `url`; nothing connects until a read.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            exported: None,
        }
    }

    /// The database at `url`, whose snapshots read the exported snapshot `name` (kept alive by
    /// its exporter): change capture copies its tables at its slot's consistent point.
    pub fn in_snapshot(url: &str, name: &str) -> Self {
        Self {
            url: url.to_string(),
            exported: Some(name.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl Source for PgSource {
    fn select_all(&self, from: &str) -> String {
        format!("SELECT * FROM {}", quote_qualified(from))
    }

    fn quote(&self, column: &str) -> String {
        quote_identifier(column)
    }

    async fn describe(&self, query: &str) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        let client = connect(&self.url).await?;
        Ok(schema_of(&describe(&client, query).await?))
    }

    /// `from` tables are split by physical page ranges (ctid) across `parallelism`
    /// connections, all inside the snapshot the first connection exported, so the copy is
    /// consistent even while the table changes; queries use one connection.
    async fn snapshot(&self, read: &Read, parallelism: usize) -> Result<Snapshot> {
        let url = self.url.as_str();
        let coordinator = connect(url).await?;
        coordinator
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| pg_error(&read.target, &e))?;
        let snapshot: String = match &self.exported {
            Some(name) => {
                coordinator
                    .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{name}'"))
                    .await
                    .map_err(|e| pg_error(&read.target, &e))?;
                name.clone()
            }
            None => coordinator
                .query_one("SELECT pg_export_snapshot()", &[])
                .await
                .map_err(|e| pg_error(&read.target, &e))?
                .get(0),
        };
        let queries = match &read.from {
            Some(from) if parallelism > 1 => page_ranges(&coordinator, from, parallelism).await?,
            _ => vec![read.query.clone()],
        };
        // The parts differ only in their page range: one description serves them all.
        let first = queries
            .first()
            .ok_or_else(|| Error::Internal(format!("{}: nothing to read", read.target)))?;
        let columns = describe(&coordinator, first).await?;
        tracing::info!(table = %read.target, parts = queries.len(), snapshot = %snapshot, "snapshot started");
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
        let estimated_rows = match &read.from {
            Some(from) => estimated_rows(&coordinator, from).await,
            None => 0,
        };
        let parts = try_join_all(readers).await?;
        let _ = coordinator.batch_execute("COMMIT").await;
        Ok(Snapshot {
            schema: schema_of(&columns),
            estimated_rows,
            parts,
        })
    }

    /// Late commits: a transaction that started at T and commits later writes cursor values
    /// ≥ T (`now()` is the transaction's start). So the upper bound is the start of the oldest
    /// transaction still open in the database (or now, if none): a row committed late is read
    /// by the run after its commit.
    ///
    /// The bound is read before the snapshot is taken: a transaction that started before the
    /// bound was then either committed (so the snapshot sees it) or open (so the bound is at or
    /// before its start). Read after the snapshot, a writer committing in between would be
    /// neither seen nor waited for, and its rows lost.
    async fn changes(&self, read: &Read, cursor: &str, since: Option<i64>) -> Result<Changes> {
        let client = connect(&self.url).await?;
        // Microseconds since the epoch of the bound: our start or an older open transaction's,
        // less a margin for a writer between receiving its statement and reporting its start.
        let row = client
            .query_one(
                &format!(
                    "SELECT (extract(epoch FROM least(now(), coalesce(
                         (SELECT min(xact_start) FROM pg_stat_activity
                          WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL),
                         now())) - interval '{MARGIN_SECONDS} second') * 1000000)::bigint,
                       (SELECT count(*) FROM pg_stat_activity
                        WHERE datname = current_database() AND query = '<insufficient privilege>'),
                       current_user::text"
                ),
                &[],
            )
            .await
            .map_err(|e| pg_error(&read.target, &e))?;
        let (upper, hidden, user): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
        if hidden > 0 {
            return Err(Error::Invalid(format!(
                "{}: {hidden} session(s) of other users in this database are hidden from {user} in pg_stat_activity, so an incremental run cannot see when their open transactions began and could miss their rows once they commit; run GRANT pg_read_all_stats TO {user}",
                read.target
            )));
        }
        // The window never runs backwards.
        let upper = since.map_or(upper, |since| upper.max(since));
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| pg_error(&read.target, &e))?;
        let bound =
            |micros: i64| format!("(timestamptz 'epoch' + {micros} * interval '1 microsecond')");
        let cursor = quote_identifier(cursor);
        // Every visible row from the last bound on: rows at or after the new bound come again
        // next run, and merging them by key a second time changes nothing.
        let lower = since
            .map(|w| format!(" WHERE {cursor} >= {}", bound(w)))
            .unwrap_or_default();
        let query = format!("SELECT * FROM ({}) AS src{lower}", read.query);
        tracing::info!(table = %read.target, since = ?since, upper, "incremental range (µs since the epoch)");
        let (schema, batches) = super::read(&client, &query).await?;
        let _ = client.batch_execute("COMMIT").await;
        Ok(Changes {
            schema,
            batches,
            upper,
        })
    }
}

/// The planner's row estimate of a table (`pg_class.reltuples`), 0 when unknown.
async fn estimated_rows(client: &Client, from: &str) -> u64 {
    client
        .query_one(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::text::regclass",
            &[&quote_qualified(from)],
        )
        .await
        .map(|row| row.get::<_, i64>(0).max(0) as u64)
        .unwrap_or(0)
}

/// Queries that together read every page of `from` once: `[start, end)` page ranges by ctid,
/// the last one open-ended.
async fn page_ranges(client: &Client, from: &str, parts: usize) -> Result<Vec<String>> {
    let quoted = quote_qualified(from);
    let pages: i64 = client
        .query_one(
            "SELECT (pg_relation_size($1::text::regclass) / current_setting('block_size')::int)::bigint",
            &[&quoted],
        )
        .await
        .map_err(|e| pg_error(from, &e))?
        .get(0);
    let step = (pages / parts as i64).max(1);
    let from = quoted;
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
