//! `gamelake lake ...`: table inspection and maintenance.

use clap::Subcommand;

use super::Context;
use std::sync::Arc;

use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::lake::history::{history_batch, read_history};
use crate::lake::maintenance;
use crate::lake::verify::Verification;
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
    /// Check that every file each retained version of a table refers to exists with the size
    /// its log records, and name the first broken version. Every table when none is given.
    /// Exits with 1 when a table's newest version is unreadable or a file is damaged.
    Verify {
        /// The table, as schema.table (default: every table of the lake).
        table: Option<String>,
    },
    /// Bring a table back to an earlier version with a new commit (history stays; readers of
    /// older versions are unaffected). Refuses versions whose files were vacuumed.
    /// Pipeline positions are not rewound: a pipeline does not reload what a restore undid.
    Restore {
        /// The table, as schema.table.
        table: String,
        /// The version to bring back (`gamelake lake history` lists them).
        #[arg(long, required_unless_present = "as_of", conflicts_with = "as_of")]
        version: Option<u64>,
        /// Or the version that was current at this instant: 2026-11-24T08:00:00Z or 2026-11-24.
        #[arg(long, value_name = "INSTANT")]
        as_of: Option<String>,
    },
    /// Make this lake (a replica kept by `gamelake replicate`) the one written to, in place of
    /// the primary it replicates, after losing that primary's datacenter. Records a new epoch
    /// here and fences the old primary (no gamelake writer commits there again) if it answers;
    /// if not, says to run `lake fence` against it before it rejoins. Then stop the replication
    /// into this lake and point the writers here (--lake).
    ///
    /// Example: gamelake --lake s3://sh-lake/lake lake promote --from s3://bj-lake/lake
    Promote {
        /// The old primary's URL.
        #[arg(long, value_name = "URL")]
        from: String,
        /// A storage setting for the old primary, over the environment's `AWS_*` (repeatable;
        /// `$VAR` reads it from the environment).
        #[arg(long = "from-option", value_name = "KEY=VALUE")]
        from_options: Vec<String>,
        /// How long to wait for the old primary to answer.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        reach: std::time::Duration,
    },
    /// Fence this lake, a primary that another lake was promoted in place of: from now on no
    /// gamelake writer commits to it. Run it against the old primary before its datacenter
    /// rejoins, when `lake promote` could not reach it.
    ///
    /// Example: gamelake --lake s3://bj-lake/lake lake fence --promoted-to s3://sh-lake/lake
    Fence {
        /// The promoted lake's URL.
        #[arg(long, value_name = "URL")]
        promoted_to: String,
        /// A storage setting for the promoted lake (repeatable; `$VAR` reads the environment).
        #[arg(long = "to-option", value_name = "KEY=VALUE")]
        to_options: Vec<String>,
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
        LakeCommand::Verify { table } => verify(context, table.as_deref()).await,
        LakeCommand::Restore {
            table,
            version,
            as_of,
        } => {
            let to = match (version, as_of) {
                (Some(v), _) => TableVersion::Version(v),
                (None, Some(text)) => TableVersion::AsOf(
                    TableVersion::parse_instant(&text).ok_or_else(|| {
                        Error::Invalid(format!(
                            "--as-of {text}: expected an instant like 2026-11-24T08:00:00Z or a date like 2026-11-24"
                        ))
                    })?,
                ),
                (None, None) => {
                    return Err(Error::Invalid("give --version N or --as-of INSTANT".into()));
                }
            };
            let (table, lake) = open(context, &table).await?;
            let done = maintenance::restore(&lake, &table, &to).await?;
            println!(
                "{table}: version {} restored as version {} ({} files put back, {} taken out)",
                done.restored, done.version, done.files_restored, done.files_removed
            );
            Ok(())
        }
        LakeCommand::Promote {
            from,
            from_options,
            reach,
        } => {
            let lake = context.lake()?;
            let old = super::replicate::open_lake(&from, &from_options)?;
            let done = lake.promote(&old, reach).await?;
            println!(
                "{} is the primary now (epoch {})",
                lake.location().url(),
                done.epoch
            );
            match done.fenced {
                Ok(()) => println!("{from} is fenced: no gamelake writer commits there any more"),
                Err(why) => eprintln!(
                    "warning: {from} could not be fenced ({why}); before it rejoins, run:\n  {} --lake {from} lake fence --promoted-to {}",
                    super::invoked_as(),
                    lake.location().url()
                ),
            }
            Ok(())
        }
        LakeCommand::Fence {
            promoted_to,
            to_options,
        } => {
            let lake = context.lake()?;
            let primary = super::replicate::open_lake(&promoted_to, &to_options)?;
            let epoch = lake.fence(&primary).await?;
            println!(
                "{} is fenced (epoch {epoch}): writes go to {promoted_to}",
                lake.location().url()
            );
            Ok(())
        }
    }
}

/// `lake verify`: one table, or all; a paragraph each; an error when any is damaged.
async fn verify(context: &Context, table: Option<&str>) -> Result<()> {
    let lake = context.lake()?;
    lake.check_reachable().await?;
    let tables = match table {
        Some(name) => vec![TableRef::parse(name)?],
        None => lake.all_tables().await?,
    };
    let mut damaged = Vec::new();
    for table in &tables {
        let checked = crate::lake::verify::verify_table(&lake, table).await?;
        print!("{}", describe_verification(&checked));
        if !checked.is_healthy() {
            damaged.push(table.to_string());
        }
    }
    if damaged.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "damaged: {} (the broken versions and files are listed above; `gamelake lake restore TABLE --version N` brings back a readable version, or replicate it again from a healthy copy)",
        damaged.join(", ")
    )))
}

/// What `lake verify` prints about one table.
fn describe_verification(checked: &Verification) -> String {
    let mut text = format!(
        "{}: versions {}..={}, {} files ({})",
        checked.table,
        checked.oldest,
        checked.latest,
        checked.files,
        indicatif::HumanBytes(checked.bytes)
    );
    match checked.readable_from() {
        Some(from) if from == checked.oldest => text.push_str(": all readable\n"),
        Some(from) => text.push_str(&format!(
            ": readable from version {from} on (older versions' files were vacuumed)\n"
        )),
        None => text.push_str(&format!(
            ": BROKEN from version {}\n",
            checked.first_broken().unwrap_or(checked.latest)
        )),
    }
    if let Some(version) = checked.missing_commit {
        text.push_str(&format!("  commit file of version {version} is missing\n"));
    }
    for bad in checked.bad.iter().filter(|b| !b.vacuumed()).take(20) {
        let found = bad
            .found
            .map_or("missing".to_string(), |size| format!("{size} bytes"));
        text.push_str(&format!(
            "  {} (added in version {}): {found}, the log says {} bytes\n",
            bad.path, bad.added, bad.expected
        ));
    }
    text
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
