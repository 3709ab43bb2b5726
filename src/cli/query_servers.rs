//! The query doors of `gamelake serve`: Flight SQL (`--flight`) and the PostgreSQL wire
//! protocol (`--pg`), over one engine, so both share the users, the limits (one pool of query
//! slots and memory) and the query log.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use super::Context;
use super::serve_args::{ServeArgs, bind, check_open_access, until};
use crate::error::{Error, Result};
use crate::postgres_wire::PgOptions;
use crate::serving::{Directory, Signer, Tls};

/// The shortest `--token-secret` accepted: an HMAC-SHA256 key of fewer bytes is guessable.
const MIN_TOKEN_SECRET: usize = 32;

type Server = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Binds the query servers `args` ask for; the returned future serves until `stopped`, then
/// writes the rest of the query log. Also returns the per-user query counters for `/metrics`.
pub async fn start(
    context: &Context,
    args: &ServeArgs,
    stopped: watch::Receiver<bool>,
) -> Result<(
    impl Future<Output = Result<()>> + use<>,
    Arc<crate::serving::query_metrics::QueryMetrics>,
)> {
    let config = &context.config;
    let users = Arc::new(Directory::new(config.users.clone())?);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls {
            cert: std::fs::read(cert).map_err(|e| Error::io(cert, e))?,
            key: std::fs::read(key).map_err(|e| Error::io(key, e))?,
        }),
        _ => None,
    };
    for addr in [args.flight, args.pg].into_iter().flatten() {
        if config.users.is_empty() {
            check_open_access(
                args,
                addr,
                "[[users]] (password hashes from `gamelake hash-password`)",
            )?;
        }
    }
    if let Some(addr) = args.flight {
        check_flight_cleartext(args, addr, tls.is_some(), !config.users.is_empty())?;
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
    let options = config.flight.options(
        users.clone(),
        signer,
        tls.clone(),
        context.settings.memory_limit,
    );
    let mut settings = context.settings.clone();
    settings.deny_file_paths = true;
    // BI clients read plain strings; reading them so saves a cast of every string column.
    settings.plain_strings = true;
    settings.catalog_ttl = config.flight.catalog_ttl();
    let session = context.session_with(&settings).await?;
    if args.pg.is_some() {
        crate::postgres_wire::catalog::install(&session)?;
    }
    let (engine, writer) =
        crate::serving::start(session, options.limits.clone(), options.query_log)?;
    if let Some(rules) = &args.access {
        engine.access().watch(rules)?;
    }
    let metrics = engine.metrics().clone();
    let mut servers: Vec<Server> = Vec::new();
    if let Some(addr) = args.flight {
        let (listener, bound) = bind(addr).await?;
        let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
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
        servers.push(Box::pin(crate::flight::serve_engine(
            listener,
            engine.clone(),
            options,
            until(stopped.clone()),
        )));
    }
    if let Some(addr) = args.pg {
        let (listener, bound) = bind(addr).await?;
        println!(
            "gamelake serve: PostgreSQL protocol on {bound} (lake {}, {} users, {})",
            context.location,
            config.users.len(),
            match (tls.is_some(), config.users.is_empty()) {
                (_, true) => "no logins",
                (true, false) => "TLS offered",
                (false, false) => "no TLS: SCRAM logins",
            }
        );
        let pg = PgOptions {
            users,
            tls,
            max_connections: args.pg_max_connections,
        };
        servers.push(Box::pin(crate::postgres_wire::serve(
            listener,
            engine,
            pg,
            until(stopped),
        )));
    }
    let serving = async move {
        let outcomes = futures::future::join_all(servers).await;
        if let Some(writer) = writer {
            writer.finish().await;
        }
        outcomes
            .into_iter()
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    };
    Ok((serving, metrics))
}

/// Flight SQL sends passwords and tokens in every call: without TLS only on loopback, or
/// behind a proxy that terminates TLS (`--insecure-cleartext`).
fn check_flight_cleartext(
    args: &ServeArgs,
    addr: SocketAddr,
    tls: bool,
    logins: bool,
) -> Result<()> {
    if logins && !tls && !addr.ip().is_loopback() && !args.insecure_cleartext {
        return Err(Error::Invalid(format!(
            "refusing to serve Flight SQL logins without TLS on {addr}: passwords and tokens would cross the network in clear; give --tls-cert and --tls-key, listen on 127.0.0.1, or pass --insecure-cleartext behind a proxy that terminates TLS"
        )));
    }
    Ok(())
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
