//! Change capture (`mode = "cdc"`): PostgreSQL's logical replication stream (the `pgoutput`
//! plugin) applied to lake tables by key, inserts, updates and deletes alike.
//!
//! The `cdc` tables of a pipeline share one publication and one replication slot, both named
//! `gamelake_<pipeline>` and created when absent. The slot is created with an exported snapshot:
//! every table is copied in that snapshot (the existing parallel snapshot reader) and committed
//! with the slot's consistent point as its position, so the stream starts exactly where the
//! copy ends. Then each run reads whole transactions from the slot up to the server's WAL end at
//! the run's start, folds them per key, and applies each table's changes with one MERGE whose
//! Delta commit carries the end LSN of the last transaction it holds. Only after every table's
//! commit is durable does the slot advance. A crash in between replays transactions the slot
//! still holds; each table skips those at or below its own committed LSN, so every change lands
//! exactly once.
//!
//! The slot is read with `pg_logical_slot_peek_binary_changes` on an ordinary connection, in
//! batches of whole transactions, rather than over a walsender connection: a run needs no
//! keepalives, holds no slot open between runs, and stops at a known LSN.

mod apply;
mod setup;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio_postgres::Client;

use super::config::{Mode, PipelineConfig, SourceConfig, TableConfig};
use super::snapshot::{SnapshotReport, snapshot_table};
use crate::error::{Error, Result};
use crate::lake::write::WriteOutcome;
use crate::query::Session;
use crate::sources::postgres::changes::ChangeSet;
use crate::sources::postgres::{
    CopyConnection, PG_EPOCH_MICROS, PgSource, connect, pg_error, quote_identifier,
};
use apply::{add_columns, append_changelog, apply};
pub use setup::slot_name;
use setup::{capture, check_no_defaults, format_lsn, parse_lsn, publish};

/// How long a capture waits for another process to let go of its slot.
const LOCK_WAIT_SECONDS: u32 = 10;

/// Messages asked of the slot per batch (whole transactions: a batch may hold more).
const BATCH_MESSAGES: i32 = 200_000;

/// Runs every `cdc` table of a pipeline once: copies tables the lake does not have yet, then
/// applies the slot's changes up to the WAL end at the start.
pub async fn cdc_tables(
    session: &Session,
    pipeline: &PipelineConfig,
    full_refresh: bool,
) -> Result<Vec<SnapshotReport>> {
    let (mut capture, mut reports) = Capture::start(session, pipeline, full_refresh).await?;
    let step = capture.step(session, &AtomicBool::new(false)).await?;
    reports.extend(step.tables);
    Ok(reports)
}

/// What one pass over the slot applied.
pub struct Step {
    /// Per table: changes applied (before folding by key) and the last commit.
    pub tables: Vec<SnapshotReport>,
    /// Changes applied, over all tables.
    pub changes: usize,
    /// Seconds from the commit in PostgreSQL of the oldest transaction this pass applied to
    /// now, when all of it is in the lake: the longest any of its changes waited.
    pub lag_seconds: Option<f64>,
    /// Bytes of WAL the slot still holds after the pass (from its confirmed position to the
    /// server's current one), when the server says.
    pub lag_bytes: Option<i64>,
}

/// A pipeline's capture: its slot, its tables and what each holds.
pub struct Capture {
    client: Client,
    slot: String,
    publication: String,
    pipeline: String,
    tables: Vec<TableConfig>,
    set: ChangeSet,
}

impl Capture {
    /// Checks the server and the tables, creates the publication and slot when absent, and
    /// copies the tables the lake does not hold yet (all of them, with a new slot).
    pub async fn start(
        session: &Session,
        config: &PipelineConfig,
        full_refresh: bool,
    ) -> Result<(Self, Vec<SnapshotReport>)> {
        let SourceConfig::Postgres {
            url,
            parallelism,
            slot,
            publication,
        } = &config.source
        else {
            return Err(Error::Invalid(format!(
                "pipeline {}: cdc tables follow PostgreSQL's replication stream; they need [source] kind = \"postgres\"",
                config.name
            )));
        };
        let (url, parallelism, pipeline) = (url.expose(), *parallelism, config.name.as_str());
        let tables: Vec<&TableConfig> = config
            .tables
            .iter()
            .filter(|t| t.mode == Mode::Cdc)
            .collect();
        let client = connect(url).await?;
        let context = format!("pipeline {pipeline}");
        let sql_error = |e: tokio_postgres::Error| pg_error(&context, &e);
        let wal_level: String = client
            .query_one("SHOW wal_level", &[])
            .await
            .map_err(sql_error)?
            .get(0);
        if wal_level != "logical" {
            return Err(Error::Invalid(format!(
                "{context}: PostgreSQL runs with wal_level = {wal_level}; change capture needs wal_level = logical (set it in postgresql.conf and restart PostgreSQL)"
            )));
        }
        let slot = slot.clone().unwrap_or_else(|| slot_name(pipeline));
        let publication = publication.clone().unwrap_or_else(|| slot_name(pipeline));
        // One process at a time reads a slot: the lock is this session's, so it goes with the
        // connection when the process stops, however it stops. A process killed a moment ago
        // may hold it until its server session notices: wait a little before giving up.
        client
            .batch_execute(&format!("SET lock_timeout = '{LOCK_WAIT_SECONDS}s'"))
            .await
            .map_err(sql_error)?;
        let locked = client
            .execute(
                "SELECT pg_advisory_lock(hashtext('gamelake cdc'), hashtext($1))",
                &[&slot],
            )
            .await;
        match locked {
            Ok(_) => {}
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(Error::Busy(format!(
                    "{context}: another gamelake is reading replication slot {slot} (a replica of `serve --schedule`, or an `ingest` run), and did not stop within {LOCK_WAIT_SECONDS} s; it holds the slot until it stops"
                )));
            }
            Err(e) => return Err(sql_error(e)),
        }
        client
            .batch_execute("RESET lock_timeout")
            .await
            .map_err(sql_error)?;
        if full_refresh {
            client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .map_err(sql_error)?;
        }
        let mut captured = Vec::new();
        for table in &tables {
            captured.push(capture(session, &client, pipeline, table, full_refresh).await?);
        }
        publish(&client, &publication, &captured)
            .await
            .map_err(sql_error)?;

        let mut reports = Vec::new();
        let existing: Option<String> = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
                &[&slot],
            )
            .await
            .map_err(sql_error)?
            .map(|row| row.get(0));
        match existing {
            None => {
                // A new slot: every table is copied in the slot's own snapshot, which its
                // session exports and holds until the copies are done.
                let mut replication = CopyConnection::connect_replication(url).await?;
                let row = replication
                    .query_row(&format!(
                        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                        quote_identifier(&slot)
                    ))
                    .await?;
                let (Some(Some(point)), Some(Some(snapshot))) = (row.get(1), row.get(2)) else {
                    return Err(Error::Internal(format!(
                        "{context}: CREATE_REPLICATION_SLOT answered {row:?}"
                    )));
                };
                let lsn = parse_lsn(point)?;
                tracing::info!(slot = %slot, lsn = %point, "replication slot created; copying its snapshot");
                let source = PgSource::in_snapshot(url, snapshot);
                for (table, captured) in tables.iter().zip(captured.iter_mut()) {
                    let report =
                        snapshot_table(session, &source, pipeline, table, parallelism, Some(lsn))
                            .await?;
                    captured.0.applied = lsn as u64;
                    reports.push(report);
                }
                replication.terminate().await;
            }
            Some(point) => {
                // Tables the lake does not hold yet join an existing slot: copied now, then
                // every change the slot still holds is applied over the copy by key, which
                // converges on the source's rows (a change the copy already shows is applied
                // again, to the same result).
                let lsn = parse_lsn(&point)?;
                let source = PgSource::new(url);
                for (table, captured) in tables.iter().zip(captured.iter_mut()) {
                    if captured.1 {
                        let report = snapshot_table(
                            session,
                            &source,
                            pipeline,
                            table,
                            parallelism,
                            Some(lsn),
                        )
                        .await?;
                        captured.0.applied = lsn as u64;
                        reports.push(report);
                    }
                }
            }
        }
        let capture = Self {
            client,
            slot,
            publication,
            pipeline: pipeline.to_string(),
            tables: tables.iter().map(|t| (*t).clone()).collect(),
            set: ChangeSet::new(captured.into_iter().map(|(t, _)| t).collect()),
        };
        Ok((capture, reports))
    }

    /// Applies the slot's transactions up to the WAL end at the call, in batches; between
    /// batches, returns early once `stop` is set. Each batch is committed to every table before
    /// the slot advances past it.
    pub async fn step(&mut self, session: &Session, stop: &AtomicBool) -> Result<Step> {
        let started = Instant::now();
        self.set.first_commit_time = None;
        let slot = self.slot.as_str();
        let sql_error = |e: tokio_postgres::Error| pg_error(slot, &e);
        let end: String = self
            .client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(sql_error)?
            .get(0);
        let peek = self
            .client
            .prepare(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3,
                   'proto_version', '1', 'publication_names', $4, 'binary', 'true')",
            )
            .await
            .map_err(sql_error)?;
        // Until a batch commits: nothing new, the table holds what it recorded.
        let mut applied: Vec<(usize, WriteOutcome)> = self
            .set
            .tables
            .iter()
            .map(|t| {
                let recorded = t.applied as i64;
                (0, WriteOutcome::AlreadyCommitted { recorded })
            })
            .collect();
        let bar = crate::progress::bar(0, "changes", &format!("cdc {}", self.pipeline));
        while !stop.load(Ordering::Relaxed) {
            let rows = self
                .client
                .query(&peek, &[&slot, &end, &BATCH_MESSAGES, &self.publication])
                .await
                .map_err(sql_error)?;
            let before = self.set.last_end;
            for row in &rows {
                self.set.feed(row.get::<_, &[u8]>(0))?;
            }
            let Some(lsn) = self.set.last_end.filter(|l| Some(*l) != before) else {
                break;
            };
            for (i, table) in self.tables.iter().enumerate() {
                let captured = &mut self.set.tables[i];
                if !captured.has_changes() {
                    continue;
                }
                let added = captured.take_added();
                if !added.is_empty() {
                    check_no_defaults(&self.client, &captured.source, &added).await?;
                    add_columns(session, table, added).await?;
                }
                // The changelog first: a crash before the table's commit replays the batch
                // into the table, and the changelog skips it by its own position.
                if let Some(log) = captured.take_log()? {
                    append_changelog(session, &self.pipeline, table, log, lsn as i64).await?;
                    if let Some(log) = captured.log.as_mut() {
                        log.applied = lsn;
                    }
                }
                let changes = captured.changes as usize;
                let truncated = captured.truncated;
                let key = captured.key_names();
                let batch = captured.take_batch()?;
                let outcome = apply(
                    session,
                    &self.pipeline,
                    table,
                    &key,
                    batch,
                    truncated,
                    lsn as i64,
                )
                .await?;
                captured.applied = lsn;
                bar.inc(changes as u64);
                applied[i].0 += changes;
                applied[i].1 = outcome;
            }
            // Every table holds the batch: the slot may let go of it.
            self.client
                .execute(
                    "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                    &[&slot, &format_lsn(lsn)],
                )
                .await
                .map_err(sql_error)?;
            tracing::info!(slot, lsn = %format_lsn(lsn), messages = rows.len(), "changes applied");
        }
        bar.finish_and_clear();
        let lag_bytes: Option<i64> = self
            .client
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(sql_error)?
            .and_then(|row| row.get(0));
        let seconds = started.elapsed().as_secs_f64();
        let changes = applied.iter().map(|a| a.0).sum();
        let lag_seconds = self.set.first_commit_time.map(|t| {
            let commit = PG_EPOCH_MICROS + t;
            let now = chrono::Utc::now().timestamp_micros();
            (now - commit).max(0) as f64 / 1e6
        });
        let tables = self
            .tables
            .iter()
            .zip(applied)
            .map(|(table, (rows, outcome))| SnapshotReport {
                table: table.to.clone(),
                rows,
                seconds,
                outcome,
            })
            .collect();
        Ok(Step {
            tables,
            changes,
            lag_seconds,
            lag_bytes,
        })
    }
}

/// Runs the `cdc` tables of a pipeline until `stop` is set: a pass over the slot, then a pause of
/// `interval` when it had nothing (or what is left of the pipeline's `commit_interval` when it
/// committed), again; `on_step` hears of every pass, idle ones too.
/// A pass under way when `stop` is set finishes its batch (committed, then confirmed).
pub async fn follow(
    session: &Session,
    pipeline: &PipelineConfig,
    interval: std::time::Duration,
    stop: &AtomicBool,
    mut on_step: impl FnMut(&Step),
) -> Result<()> {
    if let Some(other) = pipeline.tables.iter().find(|t| t.mode != Mode::Cdc) {
        return Err(Error::Invalid(format!(
            "pipeline {}: --follow runs cdc tables, and {} is {:?}; put it in a pipeline of its own (or give it a schedule)",
            pipeline.name, other.to, other.mode
        )));
    }
    let spacing = pipeline.commit_interval()?.unwrap_or_default();
    let (mut capture, reports) = Capture::start(session, pipeline, false).await?;
    for report in &reports {
        tracing::info!(table = %report.table, rows = report.rows, "copied before following the slot");
    }
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let step = capture.step(session, stop).await?;
        on_step(&step);
        // After a pass that committed, the next waits out `commit_interval`; after an empty
        // one, the poll interval.
        let pause = if step.changes > 0 {
            spacing.saturating_sub(started.elapsed())
        } else {
            interval
        };
        let paused = Instant::now();
        while paused.elapsed() < pause && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(pause.min(std::time::Duration::from_millis(100))).await;
        }
    }
    Ok(())
}
