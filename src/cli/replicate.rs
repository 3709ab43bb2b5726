//! `gamelake replicate`: copies a lake's tables into another lake, commit-consistently, once or
//! following new commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::Context;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::replicate::{ReplicateOptions, Replicator, TableStatus};

/// `gamelake replicate` flags.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  gamelake replicate --from s3://bj-lake/lake --to s3://sh-lake/lake
  gamelake replicate --to /backup/lake --tables 'game.*' --follow
  AWS_ENDPOINT_URL=http://bj:9000 SH_KEY=... gamelake replicate --from s3://bj-lake/lake \\
      --to s3://sh-lake/lake --to-option AWS_ENDPOINT_URL=http://sh:9000 \\
      --to-option 'AWS_SECRET_ACCESS_KEY=$SH_KEY'

Each table's versions are copied in order: a version's data files first, its commit file last,
so the replica is a readable Delta table at every instant. A run killed at any point resumes
where the replica stands. The replica must not fall further behind than the source's vacuum
retention (7 days unless changed).")]
pub struct ReplicateArgs {
    /// The lake to copy from (default: --lake).
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// The lake to copy into: a local folder or s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// A storage setting of --from that differs from the AWS_* environment, as KEY=VALUE
    /// (AWS_ENDPOINT_URL=http://...). A VALUE of $NAME is read from variable NAME, so secrets
    /// stay off the command line. Repeatable.
    #[arg(long = "from-option", value_name = "KEY=VALUE")]
    pub from_options: Vec<String>,
    /// A storage setting of --to, as for --from-option. Repeatable.
    #[arg(long = "to-option", value_name = "KEY=VALUE")]
    pub to_options: Vec<String>,
    /// Only tables matching these globs over schema.table (game.*,logs.events). Default: all.
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub tables: Vec<String>,
    /// Keep copying new commits until SIGTERM or Ctrl-C, a line per table per round that
    /// copied something.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: how long to wait between rounds.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Files copied at once.
    #[arg(long, default_value_t = crate::lake::replicate::DEFAULT_PARALLEL)]
    pub parallel: usize,
}

/// Runs `gamelake replicate`.
pub async fn run(context: &Context, args: ReplicateArgs) -> Result<()> {
    let from_url = args.from.as_deref().unwrap_or(&context.location);
    let from = open_lake(from_url, &args.from_options)?;
    let to = open_lake(&args.to, &args.to_options)?;
    from.check_reachable().await?;
    let tables = crate::lake::replicate::parse_globs(&args.tables)?;
    let progress = crate::progress::bytes_bar("replicating");
    let options = ReplicateOptions {
        tables,
        parallel: args.parallel.max(1),
        progress: progress.clone(),
    };
    let replicator = Replicator::new(Arc::new(from), Arc::new(to), options)?;
    if !args.follow {
        let statuses = replicator.round().await;
        progress.finish_and_clear();
        for status in statuses? {
            println!("{}", describe(&status));
        }
        return Ok(());
    }
    progress.finish_and_clear();
    eprintln!(
        "replicating {from_url} into {} (SIGTERM or Ctrl-C stops)",
        args.to
    );
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    loop {
        for status in replicator.round().await? {
            if status.versions_copied > 0 {
                println!("{}", describe(&status));
            }
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(args.interval) => {}
        }
    }
}

/// One line about a table after a round.
fn describe(status: &TableStatus) -> String {
    let version = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    format!(
        "{}: version {} of {}, {} versions copied ({} files, {}), lag {} ms",
        status.table,
        version(status.replica_version),
        version(status.source_version),
        status.versions_copied,
        status.files_copied,
        indicatif::HumanBytes(status.bytes_copied),
        status.lag.as_millis()
    )
}

/// Opens a lake with `KEY=VALUE` settings over the environment's.
pub(crate) fn open_lake(url: &str, settings: &[String]) -> Result<Lake> {
    let mut options = HashMap::new();
    for setting in settings {
        let (key, value) = setting.split_once('=').ok_or_else(|| {
            Error::Invalid(format!(
                "storage option '{setting}': expected KEY=VALUE, e.g. AWS_ENDPOINT_URL=http://127.0.0.1:9000"
            ))
        })?;
        let value = match value.strip_prefix('$') {
            Some(name) => std::env::var(name).map_err(|_| {
                Error::Invalid(format!("storage option {key}: variable {name} is not set"))
            })?,
            None => value.to_string(),
        };
        options.insert(key.to_string(), value);
    }
    Lake::open_with_options(url, options)
}
