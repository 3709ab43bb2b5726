//! `gamelake serve`: the long-running server (Flight SQL for BI tools), and
//! `gamelake hash-password` for its users.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;

use super::Context;
use crate::error::{Error, Result};
use crate::flight::{Access, FlightOptions, Limits, Signer, Tls, auth, hash_password};
use crate::intake::Intake;

/// Flags of `gamelake serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Users come from the config file (--config gamelake.toml):
  [[users]]
  name = \"analyst\"
  password_hash = \"$argon2id$...\"      # from: gamelake hash-password
  role = \"reader\"                      # reader: queries only; admin: also DDL/DML and system.query_log
Log intake tables and sender tokens too:
  [[intake.tokens]]
  name = \"game-servers\"
  token = \"${INTAKE_TOKEN}\"             # ${VAR} reads the environment
  [[intake.tables]]
  name = \"logs.events\"
  time_field = \"time\"                   # rfc3339 by default; time_format = \"epoch_s\" | \"epoch_ms\" | \"epoch_us\"

Examples:
  gamelake --config gamelake.toml serve --flight 0.0.0.0:50051 --tls-cert cert.pem --tls-key key.pem
  gamelake serve --flight 127.0.0.1:50051 --insecure-no-auth      local tryout, no logins
  GAMELAKE_TOKEN_SECRET=... gamelake serve ...                    replicas behind a load balancer share it
  gamelake --config gamelake.toml serve --http 0.0.0.0:8080       log intake for Fluent Bit / Fluentd
  gamelake serve --schedule --metrics 127.0.0.1:9090             scheduled reports/ and pipelines/
  curl -H \"Authorization: Bearer $INTAKE_TOKEN\" --data-binary @events.ndjson http://host:8080/ingest/logs.events

Clients: any Flight SQL driver, e.g. Python ADBC:
  adbc_driver_flightsql.dbapi.connect(\"grpc://host:50051\", db_kwargs={\"username\": \"analyst\", \"password\": \"...\"})"
)]
pub struct ServeArgs {
    /// Serve Flight SQL on this address (host:port; port 0 picks a free one, printed at start).
    #[arg(long, value_name = "ADDR")]
    pub flight: Option<SocketAddr>,

    /// Receive logs over HTTP on this address: POST /ingest/<schema>.<table> (JSON array or
    /// NDJSON, gzip or plain), plus /healthz, /readyz and /metrics. Tables and tokens come from
    /// [intake] in the config.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,

    /// Receive logs in Fluentd's forward protocol (TCP, msgpack; Fluentd `out_forward`, Fluent
    /// Bit `forward`) on this address. Tags map to tables by `tags` in [[intake.tables]].
    #[arg(long, value_name = "ADDR")]
    pub forward: Option<SocketAddr>,

    /// Run the reports and pipelines that have a `schedule` (files in --reports and
    /// --pipelines), each due time once across restarts and replicas: runs are recorded in
    /// <lake>/_schedule/. After downtime only the latest missed run is made up, once.
    #[arg(long)]
    pub schedule: bool,

    /// Folder of report files for --schedule [default: reports, if there is one].
    #[arg(long, env = "GAMELAKE_REPORTS", value_name = "DIR")]
    pub reports: Option<PathBuf>,

    /// Folder of pipeline files for --schedule [default: pipelines, if there is one].
    #[arg(long, env = "GAMELAKE_PIPELINES", value_name = "DIR")]
    pub pipelines: Option<PathBuf>,

    /// How often a scheduled run in progress records that it is alive; a run silent for three
    /// intervals (its process died) is run again by the next process that looks.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub schedule_heartbeat: Duration,

    /// Serve /metrics (Prometheus text: the scheduler's and the intake's) and /healthz on this
    /// address. No login: bind it where only your monitoring reaches.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// TLS certificate chain (PEM); with --tls-key, clients connect with grpc+tls://.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Run without logins (Flight SQL: everyone is a reader named "anonymous"; intake: no
    /// tokens). Only on a loopback address.
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// Key that signs login tokens and tickets. Replicas behind one load balancer must share it;
    /// without it a random key is used and tickets only work on this process.
    #[arg(
        long,
        env = "GAMELAKE_TOKEN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub token_secret: Option<String>,
}

/// Runs `gamelake serve` until Ctrl-C or SIGTERM.
pub async fn run(context: &Context, args: ServeArgs) -> Result<()> {
    if args.flight.is_none() && args.http.is_none() && args.forward.is_none() && !args.schedule {
        return Err(Error::Unsupported(
            "nothing to serve: give --flight ADDR (queries), --http ADDR and/or --forward ADDR (log intake), and/or --schedule (scheduled reports and pipelines), e.g. --flight 127.0.0.1:50051".to_string(),
        ));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    if let Some(addr) = args.flight {
        servers.push(tokio::spawn(
            flight(context, &args, addr, stopped.clone()).await?,
        ));
    }
    let mut exposed = Exposed::default();
    if args.http.is_some() || args.forward.is_some() {
        let (server, metrics) = intake(context, &args, stopped.clone()).await?;
        exposed.intake = Some(metrics);
        servers.push(tokio::spawn(server));
    }
    if args.schedule {
        let (server, metrics) = scheduler(context, &args, stopped.clone()).await?;
        exposed.schedule = Some(metrics);
        servers.push(tokio::spawn(server));
    }
    if let Some(addr) = args.metrics {
        servers.push(tokio::spawn(
            metrics_server(addr, exposed, stopped.clone()).await?,
        ));
    }
    std::io::stdout().flush().ok();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let mut result = Ok(());
    for server in servers {
        let outcome = server
            .await
            .map_err(|e| Error::Unsupported(format!("server task failed: {e}")))
            .and_then(|r| r);
        if result.is_ok() {
            result = outcome;
        }
    }
    result?;
    println!("gamelake serve: stopped");
    Ok(())
}

/// Completes when `stopped` turns true (or its sender is gone).
async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Refuses to run without logins except on loopback with --insecure-no-auth.
fn check_open_access(args: &ServeArgs, addr: SocketAddr, what: &str) -> Result<()> {
    if !args.insecure_no_auth {
        return Err(Error::Unsupported(format!(
            "no {what} in the config: add them, or pass --insecure-no-auth to serve without them on a loopback address"
        )));
    }
    if !addr.ip().is_loopback() {
        return Err(Error::Unsupported(format!(
            "--insecure-no-auth only listens on a loopback address (127.0.0.1 or ::1), not {addr}: configure {what} to serve the network"
        )));
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unsupported(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Unsupported(format!("cannot listen on {addr}: {e}")))?;
    Ok((listener, bound))
}

/// Prepares the Flight SQL server; the returned future serves until `stopped`.
async fn flight(
    context: &Context,
    args: &ServeArgs,
    addr: SocketAddr,
    stopped: watch::Receiver<bool>,
) -> Result<impl Future<Output = Result<()>> + use<>> {
    let config = &context.config;
    auth::check_users(&config.users)?;
    if config.users.is_empty() {
        check_open_access(
            args,
            addr,
            "[[users]] (password hashes from `gamelake hash-password`)",
        )?;
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls {
            cert: std::fs::read(cert).map_err(|e| Error::io(cert, e))?,
            key: std::fs::read(key).map_err(|e| Error::io(key, e))?,
        }),
        _ => None,
    };
    let signer = match &args.token_secret {
        Some(secret) if !secret.is_empty() => Signer::new(secret.as_bytes()),
        _ => Signer::random(),
    };
    let flight = &config.flight;
    let defaults = Limits::default();
    let options = FlightOptions {
        access: Access {
            users: Arc::new(config.users.clone()),
            signer,
            token_ttl: flight.token_ttl.unwrap_or(Duration::from_secs(12 * 3600)),
            ticket_ttl: flight.ticket_ttl.unwrap_or(Duration::from_secs(600)),
        },
        limits: Limits {
            max_concurrent_queries: flight
                .max_concurrent_queries
                .unwrap_or(defaults.max_concurrent_queries),
            queue_timeout: flight.queue_timeout.unwrap_or(defaults.queue_timeout),
            query_timeout: flight.query_timeout.unwrap_or(defaults.query_timeout),
            query_memory: flight.query_memory_mb.map(|mb| mb * 1024 * 1024),
            server_memory: flight.server_memory_mb.map(|mb| mb * 1024 * 1024),
        },
        tls,
        max_message_bytes: flight.max_message_mb.unwrap_or(64) * 1024 * 1024,
        query_log: flight.query_log.unwrap_or(true),
    };
    let mut settings = context.settings.clone();
    settings.deny_file_paths = true;
    // BI clients read plain strings; reading them so saves a cast of every string column.
    settings.plain_strings = true;
    settings.catalog_ttl = flight.catalog_ttl.unwrap_or(Duration::from_secs(5));
    let session = context.session_with(&settings).await?;
    let (listener, bound) = bind(addr).await?;
    let scheme = if options.tls.is_some() {
        "grpc+tls"
    } else {
        "grpc"
    };
    println!(
        "gamelake serve: Flight SQL on {scheme}://{bound} (lake {}, {} users{})",
        context.location,
        config.users.len(),
        if args.token_secret.is_some() {
            ", shared token secret"
        } else {
            ""
        }
    );
    Ok(crate::flight::serve(
        listener,
        session,
        options,
        until(stopped),
    ))
}

/// The metrics that `--metrics` shows.
#[derive(Clone, Default)]
struct Exposed {
    intake: Option<Arc<crate::intake::Metrics>>,
    schedule: Option<Arc<crate::schedule::Metrics>>,
}

impl Exposed {
    fn render(&self) -> String {
        let intake = self.intake.as_ref().map(|m| m.registry());
        let schedule = self.schedule.as_ref().map(|m| m.registry());
        let registries: Vec<_> = intake.into_iter().chain(schedule).collect();
        crate::metrics::exposition(&registries)
    }
}

/// Prepares the `--metrics` listener; the returned future serves until `stopped`.
async fn metrics_server(
    addr: SocketAddr,
    exposed: Exposed,
    stopped: watch::Receiver<bool>,
) -> Result<impl Future<Output = Result<()>> + use<>> {
    use axum::routing::get;
    let (listener, bound) = bind(addr).await?;
    println!("gamelake serve: metrics on http://{bound}/metrics");
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = exposed.render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    Ok(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(until(stopped))
            .await
            .map_err(|e| Error::Unsupported(format!("metrics on {bound} failed: {e}")))
    })
}

/// A folder given on the command line (it must exist), or `default` when there is one.
fn folder(given: Option<&PathBuf>, default: &str) -> Result<Option<PathBuf>> {
    match given {
        Some(dir) if !dir.is_dir() => Err(Error::Unsupported(format!(
            "{} is not a folder",
            dir.display()
        ))),
        Some(dir) => Ok(Some(dir.clone())),
        None => Ok(Some(PathBuf::from(default)).filter(|d| d.is_dir())),
    }
}

/// Prepares the scheduler of `--schedule`; the returned future runs it until `stopped`.
async fn scheduler(
    context: &Context,
    args: &ServeArgs,
    stopped: watch::Receiver<bool>,
) -> Result<(
    impl Future<Output = Result<()>> + use<>,
    Arc<crate::schedule::Metrics>,
)> {
    use crate::schedule::{Records, Scheduler, SystemClock, load_jobs};
    let session = context.session().await?;
    let reports = folder(args.reports.as_ref(), "reports")?;
    let pipelines = folder(args.pipelines.as_ref(), "pipelines")?;
    let jobs = load_jobs(&session, reports.as_deref(), pipelines.as_deref())?;
    if jobs.is_empty() {
        return Err(Error::Unsupported(format!(
            "--schedule: no report or pipeline has a schedule (looked in {} and {}); add schedule = \"0 8 * * *\" to one, or give --reports/--pipelines",
            reports.map_or("no reports folder".to_string(), |d| d.display().to_string()),
            pipelines.map_or("no pipelines folder".to_string(), |d| d
                .display()
                .to_string()),
        )));
    }
    let records = Records::new(session.lake().location().object_store()?, "_schedule");
    let metrics = Arc::new(crate::schedule::Metrics::default());
    let scheduler = Scheduler::new(jobs, records, Arc::new(SystemClock), metrics.clone())
        .with_heartbeat(args.schedule_heartbeat);
    println!(
        "gamelake serve: scheduler running {} (records in {}/_schedule)",
        scheduler.job_names().join(", "),
        context.location
    );
    Ok((Arc::new(scheduler).run(stopped), metrics))
}

/// Prepares the log intake (HTTP and/or forward listeners, and the committer); the returned
/// future serves until `stopped`, then commits what was acknowledged.
async fn intake(
    context: &Context,
    args: &ServeArgs,
    stopped: watch::Receiver<bool>,
) -> Result<(
    impl Future<Output = Result<()>> + use<>,
    Arc<crate::intake::Metrics>,
)> {
    let config = &context.config.intake;
    let session = context.session().await?;
    let location = session.lake().location();
    let local = location
        .is_local()
        .then(|| location.url().to_file_path().ok())
        .flatten();
    let settings = config.settings(local)?;
    let interval = settings.commit_interval;
    let compact_interval = settings.compact_interval;
    let wal_dir = settings.wal_dir.clone();
    let (intake, committer) = Intake::open(&session, config, settings).await?;
    let maintenance = (!compact_interval.is_zero()).then(|| {
        crate::intake::maintenance::run(
            session.lake().clone(),
            intake.tables.clone(),
            compact_interval,
            intake.metrics.clone(),
            stopped.clone(),
        )
    });
    let mut listeners = Vec::new();
    for addr in [args.http, args.forward].into_iter().flatten() {
        if !intake.requires_tokens() {
            check_open_access(args, addr, "[[intake.tokens]]")?;
        }
        listeners.push(bind(addr).await?);
    }
    let mut listeners = listeners.into_iter();
    let mut servers: Vec<tokio::task::JoinHandle<Result<()>>> = Vec::new();
    if args.http.is_some()
        && let Some((listener, bound)) = listeners.next()
    {
        println!(
            "gamelake serve: log intake on http://{bound}/ingest/<schema>.<table> ({} tables, write-ahead log in {})",
            intake.tables.len(),
            wal_dir.display()
        );
        let router = crate::intake::http::router(intake.clone());
        let stopped = stopped.clone();
        servers.push(tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(until(stopped))
                .await
                .map_err(|e| Error::Unsupported(format!("log intake on {bound} failed: {e}")))
        }));
    }
    if args.forward.is_some()
        && let Some((listener, bound)) = listeners.next()
    {
        println!(
            "gamelake serve: Fluentd forward intake on tcp://{bound} ({} tables, write-ahead log in {})",
            intake.tables.len(),
            wal_dir.display()
        );
        servers.push(tokio::spawn(crate::intake::forward::serve(
            listener,
            intake.clone(),
            until(stopped.clone()),
        )));
    }
    let metrics = intake.metrics.clone();
    let server = async move {
        let (commit_stop, commit_stopped) = watch::channel(false);
        let committing = tokio::spawn(committer.run(interval, commit_stopped));
        let maintaining = maintenance.map(tokio::spawn);
        let mut result = Ok(());
        for server in servers {
            let outcome = server
                .await
                .map_err(|e| Error::Unsupported(format!("log intake failed: {e}")))
                .and_then(|r| r);
            if result.is_ok() {
                result = outcome;
            }
        }
        // Every acknowledged request is in the log now; commit it before stopping.
        let _ = commit_stop.send(true);
        let _ = committing.await;
        if let Some(task) = maintaining {
            let _ = task.await;
        }
        result
    };
    Ok((server, metrics))
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
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

/// Runs `gamelake hash-password`: reads a password (first line of standard input) and prints
/// its argon2 hash for a `[[users]]` entry.
pub fn hash_password_command() -> Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io("<stdin>", e))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(Error::Unsupported(
            "empty password: type it on standard input, e.g. `printf '%s' \"$PW\" | gamelake hash-password`".to_string(),
        ));
    }
    println!("{}", hash_password(password)?);
    Ok(())
}
