//! The command line: flags, and one file per subcommand that calls the library and prints.

mod bench;
mod cluster;
mod demo;
mod hash_password;
mod ingest;
mod lake;
mod printer;
mod query_servers;
mod repl;
mod replicate;
mod report;
mod serve;
mod serve_args;
mod sql;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::error::Result;
use crate::lake::Lake;
use crate::query::{QuerySettings, Session};
use crate::secret::Secret;

/// gamelake: a lakehouse for game data. Delta Lake tables on a folder or S3, queried with SQL.
///
/// Tables live at <lake>/<schema>/<table>/ and are addressed as schema.table.
#[derive(Debug, Parser)]
#[command(name = "gamelake", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:
  gamelake demo                                  a year of synthetic game data, then showcase queries
  gamelake sql                                   interactive SQL over ./lake
  gamelake --lake /tmp/l sql -c \"SELECT 1\"       one statement
  gamelake --lake s3://bucket/lake sql -f q.sql  a script on S3 (AWS_* variables for the endpoint and keys)
  gamelake lake history shop.orders              commits of a table
  gamelake --config gamelake.toml serve --flight 0.0.0.0:50051   Flight SQL for BI tools
  gamelake --cluster df://127.0.0.1:50050 sql -f q.sql   run on a Ballista cluster (gamelake scheduler/executor)
  PG_URL=postgres://app@db/game gamelake ingest pipelines/oltp_snapshot.toml")]
pub struct Cli {
    /// Where the lake lives: a local folder or s3://bucket/prefix (S3 settings from AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP).
    #[arg(long, global = true, env = "GAMELAKE_LAKE", value_name = "URL")]
    pub lake: Option<String>,

    /// PostgreSQL whose tables SQL sees as pg.<schema>.<table> (live reads through binary COPY).
    #[arg(
        long,
        global = true,
        env = "GAMELAKE_PG_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub pg_url: Option<Secret>,

    /// MySQL or MariaDB (v1.0) whose tables SQL sees as mysql.<database>.<table>, read live
    /// (`mysql://user:password@host:3306/db`, `?ssl-mode=REQUIRED` for TLS).
    #[arg(
        long,
        global = true,
        env = "GAMELAKE_MYSQL_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub mysql_url: Option<Secret>,

    /// Run queries on a Ballista cluster (`gamelake scheduler` + `gamelake executor`) instead
    /// of in this process: df://HOST:PORT. Applies to sql, serve, report and bench.
    #[arg(long, global = true, env = "GAMELAKE_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,

    /// Configuration file (gamelake.toml); see the README for its keys.
    #[arg(long, global = true, env = "GAMELAKE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a year of synthetic game data into the lake, then run showcase queries.
    Demo(demo::DemoArgs),
    /// Run a pipeline file once: PostgreSQL snapshots, incremental merges or archiving into the lake.
    Ingest(ingest::IngestArgs),
    /// Work with pipeline files.
    #[command(subcommand)]
    Pipeline(ingest::PipelineCommand),
    /// Run SQL: a REPL when neither -c nor -f is given.
    Sql(sql::SqlArgs),
    /// Copy a lake's tables into another lake, commit by commit (another region, a backup).
    Replicate(replicate::ReplicateArgs),
    /// Inspect and maintain lake tables.
    #[command(subcommand)]
    Lake(lake::LakeCommand),
    /// Run the server: Flight SQL for BI tools (--flight ADDR), log intake (--http ADDR).
    Serve(serve::ServeArgs),
    /// Reports declared in reports/*.toml: list them, or run one now.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Time query files: several runs each in one warm session, one JSON line per file.
    Bench(bench::BenchArgs),
    /// Run a Ballista scheduler: plans distributed queries for clients using --cluster.
    Scheduler(cluster::SchedulerArgs),
    /// Run a Ballista executor: runs tasks of distributed queries for a scheduler.
    Executor(cluster::ExecutorArgs),
    /// Print a password's argon2 hash and SCRAM-SHA-256 verifier, read from standard input, as
    /// the `password_hash` and `scram_sha256` lines of a [[users]] entry in the config.
    HashPassword,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let location = cli
        .lake
        .clone()
        .or_else(|| config.lake.clone())
        .unwrap_or_else(|| "./lake".to_string());
    let mut settings = config.query_settings();
    if let Some(url) = cli.cluster.as_ref().or(config.query.cluster.as_ref()) {
        settings.cluster = Some(crate::cluster::ClusterUrl::parse(url)?);
    }
    let context = Context {
        location,
        settings,
        pg_url: cli.pg_url.clone(),
        mysql_url: cli.mysql_url.clone(),
        config,
        config_path: cli.config.clone(),
    };
    match cli.command {
        Command::Demo(args) => demo::run(&context, args).await,
        Command::Ingest(args) => ingest::ingest(&context, args).await,
        Command::Pipeline(cmd) => ingest::pipeline(cmd),
        Command::Sql(args) => sql::run(&context, args).await,
        Command::Lake(cmd) => lake::run(&context, cmd).await,
        Command::Replicate(args) => replicate::run(&context, args).await,
        Command::Serve(args) => serve::run(&context, args).await,
        Command::Bench(args) => bench::run(&context, args).await,
        Command::Report(cmd) => report::run(&context, cmd).await,
        Command::Scheduler(args) => cluster::scheduler(args).await,
        Command::Executor(args) => cluster::executor(args).await,
        Command::HashPassword => hash_password::run(),
    }
}

/// How this program was started, for commands printed to paste: `gamelake` when it was found
/// on the PATH, else the path it was started by (`target/release/gamelake`).
pub fn invoked_as() -> String {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let path = std::path::Path::new(&arg0);
    if path.components().count() > 1 {
        path.display().to_string()
    } else {
        "gamelake".to_string()
    }
}

/// What every subcommand needs: where the lake is and how to query it.
pub struct Context {
    /// The lake location.
    pub location: String,
    /// Engine settings.
    pub settings: QuerySettings,
    /// PostgreSQL shown as the `pg` catalog, if any.
    pub pg_url: Option<Secret>,
    /// MySQL shown as the `mysql` catalog, if any.
    pub mysql_url: Option<Secret>,
    /// The whole configuration file (or defaults).
    pub config: Config,
    /// Where the configuration was read from (`serve` reads its users again on SIGHUP).
    pub config_path: Option<PathBuf>,
}

impl Context {
    /// Opens the lake, with its commit coordinator if one is set.
    pub fn lake(&self) -> Result<Arc<Lake>> {
        let lake = Lake::open(&self.location)?;
        let coordinator = std::env::var("GAMELAKE_COMMIT_COORDINATOR")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .map(Secret::new)
            .or_else(|| self.config.commit_coordinator.clone());
        Ok(Arc::new(match coordinator {
            Some(url) => {
                lake.with_commit_coordinator(url, crate::sources::postgres::connector())?
            }
            None => lake,
        }))
    }

    /// Opens a SQL session over the lake.
    pub async fn session(&self) -> Result<Session> {
        self.session_with(&self.settings).await
    }

    /// Opens a SQL session with `--param NAME=VALUE` values bound.
    pub async fn session_with_params(&self, params: &[String]) -> Result<Session> {
        let params = params
            .iter()
            .map(|p| crate::query::parse_param(p))
            .collect::<Result<_>>()?;
        Ok(self.session().await?.with_params(params))
    }

    /// Opens a SQL session over the lake with other engine settings.
    pub async fn session_with(&self, settings: &QuerySettings) -> Result<Session> {
        let session = Session::new(self.lake()?, settings).await?;
        if let Some(url) = &self.pg_url {
            let catalog = crate::sources::postgres::PgCatalog::load(url.expose()).await?;
            session.context().register_catalog("pg", Arc::new(catalog));
        }
        if let Some(url) = &self.mysql_url {
            let catalog = crate::sources::mysql::MyCatalog::load(url.expose()).await?;
            session
                .context()
                .register_catalog("mysql", Arc::new(catalog));
        }
        let lakes = self
            .config
            .lakes
            .iter()
            .map(|(name, entry)| Ok((name.clone(), Arc::new(entry.open()?))))
            .collect::<Result<Vec<_>>>()?;
        let session = session.with_lakes(lakes).await?;
        session.load_views().await?;
        Ok(session)
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
