//! Background maintenance of intake tables inside `gamelake serve`: every `compact_interval`,
//! the small files the committer leaves (one per table per commit) in the partitions of the
//! last two days are compacted and the log is checkpointed; hourly, files older than the
//! table's `retain` are vacuumed. This task is the only writer of intake tables' checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::config::IntakeTable;
use super::metrics::Metrics;
use crate::error::Result;
use crate::lake::maintenance::{checkpoint, optimize, vacuum};
use crate::lake::{Lake, REJECTED, TableRef, TableVersion};

const VACUUM_EVERY: Duration = Duration::from_secs(3600);
const DEFAULT_RETAIN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Runs maintenance rounds every `every` until `stop` turns true.
pub async fn run(
    lake: Arc<Lake>,
    tables: Arc<BTreeMap<String, IntakeTable>>,
    every: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_vacuum: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let vacuum_due = last_vacuum.is_none_or(|t| t.elapsed() >= VACUUM_EVERY);
        for (table, retain) in maintained(&tables) {
            if let Err(e) = round(&lake, &table, retain, vacuum_due, &metrics).await {
                metrics.maintenance_failures.inc();
                tracing::warn!("maintenance of {table} failed (retried next round): {e}");
            }
        }
        if vacuum_due {
            last_vacuum = Some(Instant::now());
        }
    }
}

/// The intake tables and each schema's `_rejected`, with their retention.
fn maintained(tables: &BTreeMap<String, IntakeTable>) -> Vec<(TableRef, Duration)> {
    let mut out: BTreeMap<TableRef, Duration> = BTreeMap::new();
    for (name, config) in tables {
        let Ok(table) = TableRef::parse(name) else {
            continue;
        };
        let retain = config.retain.unwrap_or(DEFAULT_RETAIN);
        if let Ok(rejected) = TableRef::new(table.schema.clone(), REJECTED) {
            let kept = out.entry(rejected).or_insert(retain);
            *kept = (*kept).max(retain);
        }
        out.insert(table, retain);
    }
    out.into_iter().collect()
}

async fn round(
    lake: &Lake,
    table: &TableRef,
    retain: Duration,
    vacuum_due: bool,
    metrics: &Metrics,
) -> Result<()> {
    if !lake.is_table(table).await? {
        return Ok(());
    }
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    let compaction = optimize(lake, table, Some(yesterday), None).await?;
    if compaction.files_removed > 0 {
        Metrics::add(
            &metrics.compacted_files,
            &table.to_string(),
            compaction.files_removed as usize,
        );
        tracing::info!(
            "{table}: compacted {} files into {}",
            compaction.files_removed,
            compaction.files_added
        );
    } else {
        // Nothing to compact; still keep the log short for readers.
        let dt = lake.open_table(table, &TableVersion::Latest).await?;
        checkpoint(&dt, table).await?;
    }
    if vacuum_due {
        let deleted = vacuum(lake, table, retain, false, false).await?;
        if !deleted.is_empty() {
            tracing::info!("{table}: vacuumed {} files", deleted.len());
        }
    }
    Ok(())
}
