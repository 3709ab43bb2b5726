//! `gamelake serve`: the long-running server. Its flags, and the composition of the parts
//! each module starts by itself: Flight SQL ([`crate::flight::serve`]), the log intake
//! ([`crate::intake::server::start`]), the scheduler ([`crate::schedule::prepare`]) and
//! `/metrics` ([`crate::metrics::serve`]), all stopped by one signal.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Context;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::serving::{Directory, Signer, Tls};

/// The shortest `--token-secret` accepted: an HMAC-SHA256 key of fewer bytes is guessable.
const MIN_TOKEN_SECRET: usize = 32;

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
    /// Pipelines with `follow` and the config's [[replicas]] run without end beside them.
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

    /// Key that signs login tokens and tickets, at least 32 bytes (e.g. `openssl rand -hex
    /// 32`). Replicas behind one load balancer must share it; without it a random key is used
    /// and tickets only work on this process.
    #[arg(
        long,
        env = "GAMELAKE_TOKEN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub token_secret: Option<Secret>,

    /// Serve Flight SQL without TLS on an address other than loopback although users log in
    /// (their passwords and tokens then cross the network in clear): only behind a proxy that
    /// terminates TLS on the same host or private network.
    #[arg(long)]
    pub insecure_cleartext: bool,
}

/// Runs `gamelake serve` until Ctrl-C or SIGTERM.
pub async fn run(context: &Context, args: ServeArgs) -> Result<()> {
    if args.flight.is_none() && args.http.is_none() && args.forward.is_none() && !args.schedule {
        return Err(Error::Invalid(
            "nothing to serve: give --flight ADDR (queries), --http ADDR and/or --forward ADDR (log intake), and/or --schedule (scheduled reports and pipelines), e.g. --flight 127.0.0.1:50051".to_string(),
        ));
    }
    let (stop, stopped) = watch::channel(false);
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
        let session = context.session().await?;
        let reports = crate::schedule::folder(args.reports.as_deref(), "reports")?;
        let pipelines = crate::schedule::folder(args.pipelines.as_deref(), "pipelines")?;
        let runner = crate::schedule::prepare(
            &session,
            reports.as_deref(),
            pipelines.as_deref(),
            &context.config.replicas,
            args.schedule_heartbeat,
        )?;
        println!(
            "gamelake serve: scheduler running {} (records in {}/_schedule)",
            runner.job_names().join(", "),
            context.location
        );
        exposed.schedule = Some(runner.metrics());
        servers.push(tokio::spawn(Arc::new(runner).run(stopped.clone())));
    }
    if let Some(addr) = args.metrics {
        let (listener, bound) = bind(addr).await?;
        println!("gamelake serve: metrics on http://{bound}/metrics");
        servers.push(tokio::spawn(crate::metrics::serve(
            listener,
            move || exposed.render(),
            until(stopped.clone()),
        )));
    }
    std::io::stdout().flush().ok();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let mut result = Ok(());
    for server in servers {
        let outcome = server
            .await
            .map_err(|e| Error::Internal(format!("server task failed: {e}")))
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
        return Err(Error::Invalid(format!(
            "no {what} in the config: add them, or pass --insecure-no-auth to serve without them on a loopback address"
        )));
    }
    if !addr.ip().is_loopback() {
        return Err(Error::Invalid(format!(
            "--insecure-no-auth only listens on a loopback address (127.0.0.1 or ::1), not {addr}: configure {what} to serve the network"
        )));
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))?;
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
    let users = Arc::new(Directory::new(config.users.clone())?);
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
    if !config.users.is_empty()
        && tls.is_none()
        && !addr.ip().is_loopback()
        && !args.insecure_cleartext
    {
        return Err(Error::Invalid(format!(
            "refusing to serve Flight SQL logins without TLS on {addr}: passwords and tokens would cross the network in clear; give --tls-cert and --tls-key, listen on 127.0.0.1, or pass --insecure-cleartext behind a proxy that terminates TLS"
        )));
    }
    let signer = match &args.token_secret {
        Some(secret) if secret.expose().len() < MIN_TOKEN_SECRET => {
            return Err(Error::Invalid(format!(
                "--token-secret (GAMELAKE_TOKEN_SECRET) is {} bytes; use at least {MIN_TOKEN_SECRET} random bytes, e.g. `openssl rand -hex 32`",
                secret.expose().len()
            )));
        }
        Some(secret) => Signer::new(secret.expose().as_bytes()),
        None => Signer::random(),
    };
    reload_users_on_hangup(context, users.clone());
    let options = config
        .flight
        .options(users, signer, tls, context.settings.memory_limit);
    let mut settings = context.settings.clone();
    settings.deny_file_paths = true;
    // BI clients read plain strings; reading them so saves a cast of every string column.
    settings.plain_strings = true;
    settings.catalog_ttl = config.flight.catalog_ttl();
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

/// Reads `[[users]]` from the config file again on SIGHUP: removed users' tokens stop working
/// at their next call, changed roles and grants apply at once; a file with a mistake keeps the
/// users as they were.
fn reload_users_on_hangup(context: &Context, users: Arc<Directory>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Some(path) = context.config_path.clone() else {
            return;
        };
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let reloaded = crate::config::Config::load(&path)
                    .and_then(|config| users.replace(config.users).map(|()| users.current()));
                match reloaded {
                    Ok(now) => println!(
                        "gamelake serve: users read again from {} ({} users)",
                        path.display(),
                        now.len()
                    ),
                    Err(e) => eprintln!(
                        "gamelake serve: users not reloaded, {} has a mistake: {e}",
                        path.display()
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (context, users);
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

/// Binds the log intake's listeners (refusing open access off loopback) and starts it.
async fn intake(
    context: &Context,
    args: &ServeArgs,
    stopped: watch::Receiver<bool>,
) -> Result<(
    impl Future<Output = Result<()>> + use<>,
    Arc<crate::intake::Metrics>,
)> {
    let config = &context.config.intake;
    let mut listeners = crate::intake::server::Listeners::default();
    for (addr, slot) in [
        (args.http, &mut listeners.http),
        (args.forward, &mut listeners.forward),
    ] {
        if let Some(addr) = addr {
            if config.tokens.is_empty() {
                check_open_access(args, addr, "[[intake.tokens]]")?;
            }
            *slot = Some(bind(addr).await?.0);
        }
    }
    let session = context.session().await?;
    crate::intake::server::start(&session, config, listeners, stopped).await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn secrets_on_the_command_line_never_show_in_debug_output() {
        let secret = "k".repeat(40);
        let cli = super::super::Cli::try_parse_from([
            "gamelake",
            "--pg-url",
            "postgres://u:pg-password@h/db",
            "serve",
            "--flight",
            "127.0.0.1:0",
            "--token-secret",
            &secret,
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(!shown.contains("pg-password"), "{shown}");
    }
}
