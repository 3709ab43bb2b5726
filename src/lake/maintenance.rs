//! Table maintenance: compaction of small files (optimize), removal of files no version needs
//! any more (vacuum), and checkpoints of the Delta log. Run on demand by `gamelake lake
//! optimize|vacuum`, and in the background by `gamelake serve` for intake tables, whose
//! appends every second leave many small files.
//!
//! Both run beside concurrent appends: an append only adds files, so delta-rs' conflict checker
//! lets the append and the compaction both commit; if a compaction loses anyway, it is retried
//! at its next round and the append stands.

use std::num::NonZeroU64;
use std::time::Duration;

use chrono::NaiveDate;
use deltalake::DeltaTable;
use deltalake::kernel::schema::partitions::{FilterOp, FilterValue};
use deltalake::operations::vacuum::VacuumMode;

use super::layout::TableLayout;
use super::{Lake, TableRef, TableVersion};
use crate::error::{Error, Result};

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Small files replaced.
    pub files_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
    /// Partitions that had files compacted.
    pub partitions: u64,
    /// The table version after it (None: nothing to do, no commit).
    pub version: Option<u64>,
}

/// Compacts a table's small files into files of its target size (its layout's, or
/// `target_size`), keeping its compression; with `since`, only partitions `day >= since` (for
/// tables partitioned by `day`). Writes a checkpoint of the log afterwards.
pub async fn optimize(
    lake: &Lake,
    table: &TableRef,
    since: Option<NaiveDate>,
    target_size: Option<u64>,
) -> Result<Compaction> {
    lake.ensure_safe_commits().await?;
    let dt = lake.open_table(table, &TableVersion::Latest).await?;
    let layout = TableLayout::of_table(&dt)?;
    let since_text = since.map(|d| d.format("%Y-%m-%d").to_string());
    let mut filters = Vec::new();
    if let Some(day) = &since_text {
        if !layout.partition_by.iter().any(|c| c == "day") {
            return Err(Error::Invalid(format!(
                "{table} is not partitioned by day, so --since cannot pick partitions; leave it out to compact the whole table"
            )));
        }
        filters.push(("day", FilterOp::Ge, FilterValue::Scalar(day.as_str())));
    }
    let target = target_size.unwrap_or(layout.target_file_size);
    let (optimized, metrics) = dt
        .optimize()
        .with_filters(&filters)
        .with_target_size(NonZeroU64::new(target).unwrap_or(NonZeroU64::MIN))
        .with_writer_properties(layout.writer_properties()?)
        .await
        .map_err(|e| Error::delta(table.to_string(), e))?;
    let committed = metrics.num_files_removed > 0;
    if committed {
        checkpoint(&optimized, table).await?;
    }
    Ok(Compaction {
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
        partitions: metrics.partitions_optimized,
        version: if committed { optimized.version() } else { None },
    })
}

/// The shortest retention a vacuum takes unless forced: a writer's files sit in the table's
/// folder, referenced by no version, from the moment they are written until their commit; a
/// vacuum with a shorter retention could delete them and break that commit. An hour covers
/// the longest write gamelake makes (a large snapshot) with room to spare.
pub const VACUUM_FLOOR: Duration = Duration::from_secs(3600);

/// Deletes data files that no table version younger than `retain` refers to, and files older
/// than that which no version ever referenced (time travel to older versions stops working).
/// With `dry_run`, only lists them. Returns the files. A `retain` under [`VACUUM_FLOOR`] is
/// refused unless `force` (when nothing writes to the table).
pub async fn vacuum(
    lake: &Lake,
    table: &TableRef,
    retain: Duration,
    dry_run: bool,
    force: bool,
) -> Result<Vec<String>> {
    if retain < VACUUM_FLOOR && !force {
        return Err(Error::Invalid(format!(
            "{table}: a retention of {} could delete the files of a commit in progress (written, not yet committed); use at least {}, or --force when nothing writes to the table",
            humantime::format_duration(retain),
            humantime::format_duration(VACUUM_FLOOR)
        )));
    }
    if !dry_run {
        lake.ensure_safe_commits().await?;
    }
    let dt = lake.open_table(table, &TableVersion::Latest).await?;
    let retain = chrono::Duration::from_std(retain)
        .map_err(|e| Error::Invalid(format!("retention {retain:?} is too long: {e}")))?;
    let (_, metrics) = dt
        .vacuum()
        .with_retention_period(retain)
        .with_enforce_retention_duration(false)
        // Full: also files no commit ever referenced (left by a write that failed or lost a
        // conflict), not only those a commit removed.
        .with_mode(VacuumMode::Full)
        .with_dry_run(dry_run)
        .await
        .map_err(|e| Error::delta(table.to_string(), e))?;
    Ok(metrics.files_deleted)
}

/// Writes a checkpoint of the table's log at its current version, so readers replay a few
/// commits instead of all of them.
pub async fn checkpoint(dt: &DeltaTable, table: &TableRef) -> Result<()> {
    deltalake::checkpoints::create_checkpoint(dt, None)
        .await
        .map_err(|e| Error::delta(table.to_string(), e))
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The version brought back.
    pub restored: u64,
    /// The new version, equal in content to `restored`.
    pub version: u64,
    /// Files taken out of the table (added after `restored`).
    pub files_removed: usize,
    /// Files put back (removed after `restored`).
    pub files_restored: usize,
}

/// Brings a table back to an earlier version, or to the version current at an instant, with a
/// new commit (Delta's RESTORE): history stays, and readers of older versions are unaffected.
/// Refuses a version whose files were vacuumed, naming the oldest version that can be restored.
pub async fn restore(lake: &Lake, table: &TableRef, to: &TableVersion) -> Result<Restored> {
    lake.ensure_safe_commits().await?;
    let target = lake
        .open_table(table, to)
        .await?
        .version()
        .unwrap_or_default();
    let dt = lake.open_table(table, &TableVersion::Latest).await?;
    let latest = dt.version().unwrap_or_default();
    if target >= latest {
        return Err(Error::Invalid(format!(
            "{table} is at version {latest} already; restore takes an earlier version (`gamelake lake history {table}` lists them)"
        )));
    }
    let checked = super::verify::verify_table(lake, table).await?;
    let vacuumed: Vec<_> = checked
        .bad
        .iter()
        .filter(|b| b.added <= target && b.removed.is_some_and(|r| r > target))
        .collect();
    if let Some(first) = vacuumed.first() {
        let oldest = checked
            .readable_from()
            .map(|v| format!("every version from {v} on is whole"))
            .unwrap_or_else(|| {
                "its newest version is damaged too (`gamelake lake verify` lists what)".to_string()
            });
        return Err(Error::Invalid(format!(
            "{table}: version {target} cannot be restored: {} of its files are gone (vacuumed after version {} removed them), e.g. {}; {oldest}",
            vacuumed.len(),
            first.removed.unwrap_or_default(),
            first.path,
        )));
    }
    let (restored, metrics) = dt
        .restore()
        .with_version_to_restore(target)
        .await
        .map_err(|e| Error::delta(table.to_string(), e))?;
    Ok(Restored {
        restored: target,
        version: restored.version().unwrap_or_default(),
        files_removed: metrics.num_removed_file,
        files_restored: metrics.num_restored_file,
    })
}
