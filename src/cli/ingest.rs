//! `gamelake ingest PIPELINE.toml` and `gamelake pipeline validate FILE`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Context;
use crate::error::Result;
use crate::pipeline::{PipelineConfig, dry_run, run as run_pipeline};

/// Flags of `gamelake ingest`.
#[derive(Debug, Args)]
#[command(after_help = "Example:
  PG_URL=postgres://app@127.0.0.1/game gamelake ingest pipelines/oltp_snapshot.toml")]
pub struct IngestArgs {
    /// The pipeline file (see pipelines/ for examples).
    pub file: PathBuf,
    /// Check the file and the source (connection, tables, column types) without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// Start over: copy incremental tables again from scratch (e.g. after the source's columns
    /// changed). Snapshots are always full; archives cannot be refreshed.
    #[arg(long)]
    pub full_refresh: bool,
    /// Keep following PostgreSQL's replication stream (pipelines of `cdc` tables): apply each
    /// batch of changes as it arrives, until SIGTERM or Ctrl-C, which finish the batch under
    /// way (committed, then confirmed to PostgreSQL) and exit.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: how long to wait when the stream has nothing new (e.g. 500ms, 2s).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
}

/// Pipeline subcommands.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Check a pipeline file (keys, values, environment variables) without connecting.
    Validate {
        /// The pipeline file.
        file: PathBuf,
    },
}

/// Runs `gamelake ingest`.
pub async fn ingest(context: &Context, args: IngestArgs) -> Result<()> {
    let pipeline = PipelineConfig::load(&args.file)?;
    if args.dry_run {
        for (table, columns) in dry_run(&pipeline).await? {
            eprintln!("{table}: {columns} columns readable");
        }
        eprintln!("dry run: nothing written");
        return Ok(());
    }
    let session = context.session().await?;
    if pipeline.is_migration() {
        let reports = crate::pipeline::migrate_all(&session, &pipeline).await?;
        print_migration(&reports);
        return Ok(());
    }
    if pipeline.sink.is_some() {
        for report in crate::pipeline::publish_all(&session, &pipeline).await? {
            eprintln!(
                "{}: {} rows published to PostgreSQL in {:.1}s",
                report.table, report.rows, report.seconds
            );
        }
        return Ok(());
    }
    if args.follow {
        return follow(&session, &pipeline, args.interval).await;
    }
    for report in run_pipeline(&session, &pipeline, args.full_refresh).await? {
        eprintln!(
            "{}: {} rows in {:.1}s ({:.0} rows/s), {}",
            report.table,
            report.rows,
            report.seconds,
            report.rows as f64 / report.seconds.max(1e-9),
            report.outcome
        );
    }
    Ok(())
}

/// `--follow`: change capture until SIGTERM or Ctrl-C, a line per batch applied.
async fn follow(
    session: &crate::query::Session,
    pipeline: &PipelineConfig,
    interval: std::time::Duration,
) -> Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        eprintln!("stopping: finishing the batch under way");
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    eprintln!("following {} (SIGTERM or Ctrl-C stops)", pipeline.name);
    crate::pipeline::follow(session, pipeline, interval, &stop, |step| {
        if step.changes == 0 {
            return;
        }
        let seconds = step.tables.first().map_or(0.0, |t| t.seconds);
        eprintln!(
            "{} changes in {:.1}s ({:.0}/s), lag {}, {} of WAL held by the slot",
            step.changes,
            seconds,
            step.changes as f64 / seconds.max(1e-9),
            step.lag_seconds
                .map_or("-".to_string(), |l| format!("{l:.1}s")),
            step.lag_bytes.map_or("-".to_string(), |b| {
                indicatif::HumanBytes(b.max(0) as u64).to_string()
            })
        );
    })
    .await
}

/// The migration's validation table: per table, v1.0's rows and where they went.
fn print_migration(reports: &[crate::pipeline::MigrateReport]) {
    println!(
        "{:<24} {:<24} {:>10} {:>10} {:>10} {:>8} {:>9} {:>10} {:>8}",
        "table",
        "postgresql",
        "v1 rows",
        "to lake",
        "to pg",
        "ranges",
        "resumed",
        "zero dates",
        "seconds"
    );
    for r in reports {
        println!(
            "{:<24} {:<24} {:>10} {:>10} {:>10} {:>8} {:>9} {:>10} {:>8.1}",
            r.table,
            r.pg_table,
            r.rows,
            r.to_lake,
            r.to_pg,
            r.ranges,
            r.resumed,
            r.zero_dates,
            r.seconds
        );
    }
    for r in reports {
        println!(
            "{}: split at {} (older to the lake); counts and checksums of the lake and PostgreSQL equal v1.0's",
            r.table, r.cutoff
        );
    }
}

/// Runs `gamelake pipeline ...`.
pub fn pipeline(command: PipelineCommand) -> Result<()> {
    match command {
        PipelineCommand::Validate { file } => {
            let p = PipelineConfig::load(&file)?;
            println!(
                "{}: pipeline {} with {} table(s) is valid",
                file.display(),
                p.name,
                p.tables.len()
            );
            Ok(())
        }
    }
}
