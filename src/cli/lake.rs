//! `gamelake lake ...`: table inspection and maintenance.

use clap::Subcommand;

use super::Context;
use std::sync::Arc;

use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::lake::history::{history_batch, read_history};
use crate::lake::maintenance;
use crate::lake::{Lake, TableRef, TableVersion};
use crate::output::{Format, write_stream};

/// Lake subcommands.
#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Show a table's commits, newest first (version, time, operation, rows, files, pipeline marker).
    History {
        /// The table, as schema.table.
        table: String,
        /// How many commits to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// How to print.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Compact a table's small files (e.g. the intake's one-per-second appends) into files of
    /// the table's target size, then checkpoint its log. Safe beside running appends.
    Optimize {
        /// The table, as schema.table.
        table: String,
        /// Only partitions from this day on (tables partitioned by day): a date (2026-11-20)
        /// or an age (2d = since the day before yesterday).
        #[arg(long, value_name = "DATE|AGE")]
        since: Option<String>,
        /// Target file size in MiB (default: the table's, 128).
        #[arg(long, value_name = "MIB")]
        target_size_mb: Option<u64>,
        /// Then count each column's distinct values again, as `ANALYZE schema.table` does (one
        /// scan of the whole table): the planner's estimates age as loads change a table, and a
        /// scheduled optimize is where to keep them fresh.
        #[arg(long)]
        analyze: bool,
    },
    /// Delete data files no version younger than --retain refers to (removed by compaction,
    /// overwrites, deletes). Time travel to older versions stops working.
    Vacuum {
        /// The table, as schema.table.
        table: String,
        /// Keep files that versions of this age need (e.g. 7d, 12h).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        retain: std::time::Duration,
        /// Only list the files that would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Allow a --retain under 1h. Only when nothing writes to the table: a shorter
        /// retention deletes the files of a write in progress, and breaks its commit.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a lake subcommand.
pub async fn run(context: &Context, command: LakeCommand) -> Result<()> {
    match command {
        LakeCommand::History {
            table,
            limit,
            format,
        } => {
            let (table, lake) = open(context, &table).await?;
            let dt = lake.open_table(&table, &TableVersion::Latest).await?;
            let commits = read_history(&dt, &table.to_string(), Some(limit)).await?;
            let batch = history_batch(&commits)?;
            let schema = batch.schema();
            let stream = Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::iter([Ok(batch)]),
                ),
            );
            let mut out = std::io::stdout();
            write_stream(format, stream, &mut out).await?;
            Ok(())
        }
        LakeCommand::Optimize {
            table,
            since,
            target_size_mb,
            analyze,
        } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let (table, lake) = open(context, &table).await?;
            let spinner = crate::progress::bar(0, "", &format!("compacting {table}"));
            let done =
                maintenance::optimize(&lake, &table, since, target_size_mb.map(|mb| mb << 20))
                    .await;
            spinner.finish_and_clear();
            let done = done?;
            match done.version {
                Some(version) => println!(
                    "{table}: {} files compacted into {} in {} partitions (version {version})",
                    done.files_removed, done.files_added, done.partitions
                ),
                None => println!("{table}: nothing to compact"),
            }
            if analyze {
                analyze_table(context, &table).await?;
            }
            Ok(())
        }
        LakeCommand::Vacuum {
            table,
            retain,
            dry_run,
            force,
        } => {
            let (table, lake) = open(context, &table).await?;
            let files = maintenance::vacuum(&lake, &table, retain, dry_run, force).await?;
            for file in &files {
                println!("{file}");
            }
            eprintln!(
                "{table}: {} {} files",
                if dry_run { "would delete" } else { "deleted" },
                files.len()
            );
            Ok(())
        }
    }
}

/// `ANALYZE table` in a session over the lake, with a spinner while it scans; prints how many
/// columns it counted.
async fn analyze_table(context: &Context, table: &TableRef) -> Result<()> {
    let session = context.session().await?;
    let spinner = crate::progress::bar(0, "", &format!("counting distinct values of {table}"));
    let counted = session.query(&format!("ANALYZE {table}")).await;
    spinner.finish_and_clear();
    let columns: usize = counted?.iter().map(|b| b.num_rows()).sum();
    println!("{table}: distinct values of {columns} columns counted for the planner");
    Ok(())
}

/// Parses a table name and opens the lake, checking it can be reached.
async fn open(context: &Context, table: &str) -> Result<(TableRef, Arc<Lake>)> {
    let table = TableRef::parse(table)?;
    let lake = context.lake()?;
    lake.check_reachable().await?;
    Ok((table, lake))
}

/// `--since`: a date, or an age back from today (UTC).
fn parse_since(text: &str) -> Result<NaiveDate> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date);
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        Error::Invalid(format!(
            "--since {text}: expected a date like 2026-11-20 or an age like 2d"
        ))
    })?;
    let age = chrono::Duration::from_std(age)
        .map_err(|e| Error::Invalid(format!("--since {text}: {e}")))?;
    Ok((chrono::Utc::now() - age).date_naive())
}
