//! `gamelake report list|run`: the reports declared in `reports/*.toml`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Context;
use crate::error::{Error, Result};
use crate::report::{Destination, Report, load_all, run_report};

/// Subcommands of `gamelake report`.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// List the reports with their schedules and next run times.
    List(ListArgs),
    /// Run one report now: its page, CSV and Parquet go under <lake>/_reports/NAME/ (or --out).
    #[command(after_help = "Examples:
  gamelake report run daily_kpis
  gamelake report run daily_kpis --param day=2026-11-20 --out /tmp/reports")]
    Run(RunArgs),
}

/// Where the report files are.
#[derive(Debug, Args)]
pub struct ReportsDir {
    /// Folder of report files (NAME.toml each).
    #[arg(
        long,
        env = "GAMELAKE_REPORTS",
        default_value = "reports",
        value_name = "DIR"
    )]
    pub reports: PathBuf,
}

/// Flags of `gamelake report list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    dir: ReportsDir,
}

/// Flags of `gamelake report run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The report: its file name without .toml.
    pub name: String,
    #[command(flatten)]
    dir: ReportsDir,
    /// Override a parameter (repeatable): --param day=2026-11-20, or a relative date such as
    /// --param day=yesterday.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Write the run into this local folder (<DIR>/<NAME>/<run time>/) instead of the lake.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `gamelake report ...`.
pub async fn run(context: &Context, command: ReportCommand) -> Result<()> {
    match command {
        ReportCommand::List(args) => {
            let reports = load_all(&args.dir.reports)?;
            let now = chrono::Utc::now();
            println!("{:<24} {:<16} {:<10} next run", "name", "schedule", "zone");
            for report in &reports {
                let next = report
                    .next_run(now)
                    .map(|t| {
                        t.with_timezone(&report.zone)
                            .format("%Y-%m-%d %H:%M %:z")
                            .to_string()
                    })
                    .unwrap_or_else(|| "on demand".to_string());
                println!(
                    "{:<24} {:<16} {:<10} {next}",
                    report.name,
                    report.config.schedule.as_deref().unwrap_or("-"),
                    report
                        .config
                        .timezone
                        .as_deref()
                        .unwrap_or(crate::timing::DEFAULT_ZONE),
                );
            }
            if reports.is_empty() {
                eprintln!("no reports in {}", args.dir.reports.display());
            }
            Ok(())
        }
        ReportCommand::Run(args) => {
            let path = args.dir.reports.join(format!("{}.toml", args.name));
            if !path.is_file() {
                let known: Vec<String> = load_all(&args.dir.reports)
                    .map(|r| r.into_iter().map(|r| r.name).collect())
                    .unwrap_or_default();
                return Err(Error::NotFound(format!(
                    "no report '{}' in {} (there: {}); reports are NAME.toml files, see `gamelake report list`",
                    args.name,
                    args.dir.reports.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            let report = Report::load(&path)?;
            let session = context.session().await?;
            let destination = match args.out {
                Some(dir) => Destination::Folder(dir),
                None => Destination::Lake,
            };
            let summary = run_report(
                &session,
                &report,
                &args.params,
                chrono::Utc::now(),
                &destination,
            )
            .await?;
            for line in &summary.lines {
                eprintln!("  {line}");
            }
            println!("{}", summary.page);
            Ok(())
        }
    }
}
