//! The flags of `gamelake serve`, and what its servers share: binding a listener, the loopback
//! rule for serving without logins, and the signal to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Flags of `gamelake serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Users come from the config file (--config gamelake.toml):
  [[users]]
  name = \"analyst\"
  password_hash = \"$argon2id$...\"      # both lines from: gamelake hash-password
  scram_sha256 = \"SCRAM-SHA-256$...\"  # PostgreSQL protocol logins without TLS
  role = \"reader\"                      # reader: queries only; admin: also DDL/DML and system.query_log
  groups = [\"analysts_bj\"]              # names access rules (--access) may use
  attributes = { region = \"bj\" }        # user_attribute('region') in a rule's filter or mask
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
  gamelake --config gamelake.toml serve --pg 0.0.0.0:5433         psql \"host=... port=5433 user=analyst\"
  GAMELAKE_TOKEN_SECRET=... gamelake serve ...                    replicas behind a load balancer share it
  gamelake --config gamelake.toml serve --pg 0.0.0.0:5433 --access access.toml   readers see only what rules allow
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

    /// Serve the PostgreSQL wire protocol on this address (psql, Grafana, Metabase, Superset,
    /// JDBC/ODBC and every PostgreSQL driver): the same users, limits and query log as
    /// --flight. Without TLS users log in with SCRAM-SHA-256 (scram_sha256 in [[users]]).
    #[arg(long, value_name = "ADDR")]
    pub pg: Option<SocketAddr>,

    /// Access rules for readers (both protocols): which tables each user or group may read, a
    /// row filter and column masks per table, first matching rule wins, tables no rule allows
    /// are denied (README "Access rules"); per-user quotas ([[quotas]]) in the same file. Read
    /// again within a second of any change; a change with a mistake is reported and the rules
    /// before it stay.
    #[arg(long, env = "GAMELAKE_ACCESS", value_name = "FILE")]
    pub access: Option<PathBuf>,

    /// PostgreSQL protocol connections served at once; more are refused with "too many
    /// connections" (SQLSTATE 53300).
    #[arg(long, value_name = "N", default_value_t = crate::postgres_wire::DEFAULT_MAX_CONNECTIONS)]
    pub pg_max_connections: usize,

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

    /// Serve /metrics (Prometheus text: the scheduler's, the intake's, and the queries of
    /// --flight/--pg by user) and /healthz on this
    /// address. No login: bind it where only your monitoring reaches.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// TLS certificate chain (PEM); with --tls-key, Flight SQL clients connect with grpc+tls://
    /// and PostgreSQL clients with sslmode=require.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Run without logins (Flight SQL and PostgreSQL protocol: everyone is a reader named
    /// "anonymous"; intake: no tokens). Only on a loopback address.
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

/// Completes when `stopped` turns true (or its sender is gone).
pub(super) async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Refuses to run without logins except on loopback with --insecure-no-auth.
pub(super) fn check_open_access(args: &ServeArgs, addr: SocketAddr, what: &str) -> Result<()> {
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

pub(super) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))?;
    Ok((listener, bound))
}
