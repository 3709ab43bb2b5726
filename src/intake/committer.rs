//! Turns sealed write-ahead log segments into Delta commits, exactly once.
//!
//! Segment `n` becomes at most one commit per table it touches, each carrying the transaction
//! marker `(gamelake-intake:<node>, n)`. A table that already records `n` (the server died
//! after committing it, before deleting the segment) is skipped on the rerun. The rejected
//! records of a schema are committed before the tables' rows, so a rerun that skips a table
//! finds its rejections already committed as well. The segment is deleted only after all its
//! commits.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::execution::SessionState;
use tokio::sync::watch;

use super::config::IntakeTable;
use super::metrics::Metrics;
use super::segment::{Entry, read_segment};
use super::wal::Wal;
use crate::error::Result;
use crate::lake::layout::TableLayout;
use crate::lake::write::{WriteMode, WriteOptions, WriteOutcome, write_batches};
use crate::lake::{Lake, REJECTED, TableRef};
use crate::records::{DAY, Rejected, build_rows, rejected_batch};

/// Everything a commit needs.
#[derive(Clone)]
pub struct Committer {
    /// The lake the tables are in.
    pub lake: Arc<Lake>,
    /// A replica each segment's commits must reach before the segment is deleted.
    pub replica: Option<Arc<Lake>>,
    /// The session state writes plan with.
    pub state: SessionState,
    /// The log to commit.
    pub wal: Wal,
    /// Intake tables by `schema.table`.
    pub tables: Arc<BTreeMap<String, IntakeTable>>,
    /// The transaction marker's app id: `gamelake-intake:<node>`.
    pub app_id: String,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl Committer {
    /// Commits every `interval` (or sooner when the log is full) until `stop` turns true, then
    /// commits what is left. Failures are logged and retried with backoff; the records stay in
    /// the log meanwhile.
    pub async fn run(self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        // The first round, at once, commits what an earlier run left in the log.
        let mut delay = Duration::ZERO;
        let mut stop_dropped = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.wal.full().notified() => {}
                changed = stop.changed(), if !stop_dropped => stop_dropped = changed.is_err(),
            }
            let stopping = stop_dropped || *stop.borrow();
            match self.commit_all().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    self.metrics.commit_failures.inc();
                    tracing::error!(
                        "intake commit failed (retrying; the records stay in the write-ahead log): {e}"
                    );
                    if stopping {
                        eprintln!(
                            "gamelake serve: could not commit the write-ahead log before stopping ({e}); it is committed at the next start"
                        );
                    }
                }
            }
            if stopping {
                return;
            }
            delay = if failures == 0 {
                interval
            } else {
                (interval * 2u32.saturating_pow(failures.min(5))).min(Duration::from_secs(30))
            };
        }
    }

    /// Seals the open segment and commits every sealed one, oldest first. Returns how many.
    pub async fn commit_all(&self) -> Result<usize> {
        let below = self.wal.seal().await?;
        let segments = self.wal.sealed(below)?;
        for (seq, path) in &segments {
            let started = Instant::now();
            let (keys, written) = self.commit_segment(*seq, path).await?;
            if !self.replicated(&written, *seq).await? {
                // Committed, not yet on the replica: kept, committed again next round (a no-op
                // by the markers), deleted once the replica holds it.
                continue;
            }
            let keys: Vec<(i64, &str)> = keys.iter().map(|(at, k)| (*at, k.as_str())).collect();
            self.wal.remove(path, &keys)?;
            self.metrics.commits.inc();
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(segments.len())
    }

    /// Whether the replica (if any) records segment `seq` in every table it was written to.
    async fn replicated(&self, written: &[TableRef], seq: u64) -> Result<bool> {
        let Some(replica) = &self.replica else {
            return Ok(true);
        };
        for table in written {
            let recorded =
                crate::lake::write::transaction_version(replica, table, &self.app_id).await?;
            if recorded < Some(seq as i64) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Commits one segment; returns the idempotency keys of its entries (received at, key) and
    /// the tables that record it.
    async fn commit_segment(
        &self,
        seq: u64,
        path: &Path,
    ) -> Result<(Vec<(i64, String)>, Vec<TableRef>)> {
        let owned = path.to_path_buf();
        let (entries, torn) = blocking(move || read_segment(&owned)).await?;
        if torn > 0 {
            tracing::warn!(
                "{}: ignored a torn tail of {torn} bytes (written by a crash before its fsync; never acknowledged)",
                path.display()
            );
        }
        let version = seq as i64;
        let mut by_table: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, entry) in entries.iter().enumerate() {
            by_table.entry(entry.table.clone()).or_default().push(i);
        }
        let entries = Arc::new(entries);
        let mut rejected: BTreeMap<String, Vec<Rejected>> = BTreeMap::new();
        let mut rows = Vec::new();
        let mut written = Vec::new();
        for (name, indices) in by_table {
            let table = TableRef::parse(&name)?;
            let Some(rules) = self.tables.get(&name).map(IntakeTable::row_rules) else {
                // The table left the config between receipt and commit.
                let reason = format!("{name} is not in [[intake.tables]] of the config");
                let mine: Vec<&Entry> = indices.iter().map(|&i| &entries[i]).collect();
                let n = mine.iter().map(|e| e.records.len()).sum();
                Metrics::add(&self.metrics.rejected, &name, n);
                rejected
                    .entry(table.schema.clone())
                    .or_default()
                    .extend(rejections(&name, &mine, &reason));
                continue;
            };
            if self.recorded(&table).await? >= Some(version) {
                written.push(table);
                continue;
            }
            let existing = self.lake.table_schema(&table).await?;
            // Turning records into rows is CPU work: off the async workers that answer senders.
            let shared = entries.clone();
            let (batch, mut refused) = blocking(move || {
                let records: Vec<(i64, &[u8])> = indices
                    .iter()
                    .map(|&i| &shared[i])
                    .flat_map(|e| e.records.iter().map(|r| (e.received_at, r.as_slice())))
                    .collect();
                build_rows(&rules, existing.as_deref(), &records)
            })
            .await?;
            if let Some(batch) = batch {
                rows.push((table.clone(), batch));
            }
            if !refused.is_empty() {
                Metrics::add(&self.metrics.rejected, &name, refused.len());
                rejected
                    .entry(table.schema.clone())
                    .or_default()
                    .append(&mut refused);
            }
        }
        for (schema, records) in rejected {
            let table = TableRef::new(schema, REJECTED)?;
            self.write(&table, rejected_batch(&records)?, version)
                .await?;
            written.push(table);
        }
        for (table, batch) in rows {
            let n = batch.num_rows();
            if let WriteOutcome::Committed { .. } = self.write(&table, batch, version).await? {
                Metrics::add(&self.metrics.committed, &table.to_string(), n);
            }
            written.push(table);
        }
        let keys = entries
            .iter()
            .filter_map(|e| Some((e.received_at, e.key.clone()?)))
            .collect();
        Ok((keys, written))
    }

    async fn write(
        &self,
        table: &TableRef,
        batch: RecordBatch,
        version: i64,
    ) -> Result<WriteOutcome> {
        let options = WriteOptions {
            mode: WriteMode::Append,
            layout: Some(TableLayout::partitioned_by(&[DAY])),
            transaction: Some((self.app_id.clone(), version)),
            merge_schema: true,
            // Checkpoints are maintenance's job (src/intake/maintenance.rs), off this hot path.
            checkpoint: false,
        };
        write_batches(&self.lake, table, &self.state, vec![batch], options).await
    }

    /// The segment number a table last committed from this node.
    async fn recorded(&self, table: &TableRef) -> Result<Option<i64>> {
        crate::lake::write::transaction_version(&self.lake, table, &self.app_id).await
    }
}

/// Runs CPU or file work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| crate::error::Error::Internal(format!("intake commit task failed: {e}")))?
}

/// Every record of `entries`, rejected for one reason.
fn rejections(table: &str, entries: &[&Entry], reason: &str) -> Vec<Rejected> {
    entries
        .iter()
        .flat_map(|entry| {
            entry.records.iter().map(|record| Rejected {
                table: table.to_string(),
                received_at: entry.received_at,
                reason: reason.to_string(),
                record: String::from_utf8_lossy(record).into_owned(),
            })
        })
        .collect()
}
