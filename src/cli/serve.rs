//! `gamelake serve`: the long-running server (Flight SQL for BI tools), and
//! `gamelake hash-password` for its users.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::Context;
use crate::error::{Error, Result};
use crate::flight::{Access, FlightOptions, Limits, Signer, Tls, auth, hash_password};

/// Flags of `gamelake serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Users come from the config file (--config gamelake.toml):
  [[users]]
  name = \"analyst\"
  password_hash = \"$argon2id$...\"      # from: gamelake hash-password
  role = \"reader\"                      # reader: queries only; admin: also DDL/DML and system.query_log

Examples:
  gamelake --config gamelake.toml serve --flight 0.0.0.0:50051 --tls-cert cert.pem --tls-key key.pem
  gamelake serve --flight 127.0.0.1:50051 --insecure-no-auth      local tryout, no logins
  GAMELAKE_TOKEN_SECRET=... gamelake serve ...                    replicas behind a load balancer share it

Clients: any Flight SQL driver, e.g. Python ADBC:
  adbc_driver_flightsql.dbapi.connect(\"grpc://host:50051\", db_kwargs={\"username\": \"analyst\", \"password\": \"...\"})"
)]
pub struct ServeArgs {
    /// Serve Flight SQL on this address (host:port; port 0 picks a free one, printed at start).
    #[arg(long, value_name = "ADDR")]
    pub flight: Option<SocketAddr>,

    /// TLS certificate chain (PEM); with --tls-key, clients connect with grpc+tls://.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Run without logins (everyone is a reader named "anonymous"). Only on a loopback address.
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
    let Some(addr) = args.flight else {
        return Err(Error::Unsupported(
            "nothing to serve: give --flight ADDR (e.g. --flight 127.0.0.1:50051)".to_string(),
        ));
    };
    let config = &context.config;
    auth::check_users(&config.users)?;
    if config.users.is_empty() {
        if !args.insecure_no_auth {
            return Err(Error::Unsupported(
                "no [[users]] in the config: add users (password hashes from `gamelake hash-password`), or pass --insecure-no-auth to serve without logins on a loopback address".to_string(),
            ));
        }
        if !addr.ip().is_loopback() {
            return Err(Error::Unsupported(format!(
                "--insecure-no-auth only listens on a loopback address (127.0.0.1 or ::1), not {addr}: configure [[users]] to serve the network"
            )));
        }
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
    settings.catalog_ttl = flight.catalog_ttl.unwrap_or(Duration::from_secs(5));
    let session = context.session_with(&settings).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unsupported(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Unsupported(format!("cannot listen on {addr}: {e}")))?;
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
    std::io::stdout().flush().ok();
    crate::flight::serve(listener, session, options, shutdown_signal()).await?;
    println!("gamelake serve: stopped");
    Ok(())
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
