//! The PostgreSQL wire protocol for BI tools and drivers (`gamelake serve --pg ADDR`): psql,
//! Grafana, Metabase, Superset through SQLAlchemy, JDBC, ODBC, psycopg, asyncpg. A thin
//! protocol layer over the serving engine ([`crate::serving`]), the same one Flight SQL uses:
//! the same users, guard, limits and query log.
//!
//! [`login`] checks who connects (SCRAM-SHA-256, or a password over TLS), [`handler`] decodes
//! the simple and extended query protocols and hands each statement to
//! [`crate::serving::Engine`], [`session_commands`] answers what a driver sends to set up its
//! connection (`SET`, `SHOW`, `BEGIN`), and [`catalog`] adds the `pg_catalog` clients read to
//! list tables and columns. Nothing here plans SQL itself.

pub mod cancel;
pub mod catalog;
pub mod copy_out;
pub mod cursors;
pub mod errors;
pub mod handler;
pub mod login;
pub mod rewrite;
pub mod session_commands;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pgwire::api::PgWireServerHandlers;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::serving::{Directory, Engine, Tls, install_tls_provider};

/// Connections served at once unless `--pg-max-connections` says otherwise; more are refused
/// with PostgreSQL's "too many connections".
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;

/// Everything the PostgreSQL protocol server needs besides the engine.
#[derive(Clone)]
pub struct PgOptions {
    /// Who may connect (none: anyone, as the reader `anonymous`, only on loopback).
    pub users: Arc<Directory>,
    /// TLS, when given: clients that ask for it get it, and passwords may then be sent as they
    /// are (checked against the argon2 hash).
    pub tls: Option<Tls>,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves the PostgreSQL protocol on `listener` until `shutdown` completes; then the open
/// connections are closed (PostgreSQL's "fast" shutdown: a client idle for hours must not keep
/// the server, and its query log, from stopping).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: PgOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let acceptor = match &options.tls {
        Some(tls) => Some(tls_acceptor(tls)?),
        None => None,
    };
    let sessions = Arc::new(cancel::Sessions::default());
    let handlers = Arc::new(Handlers {
        login: Arc::new(login::Login::new(options.users.clone(), sessions.clone())),
        queries: Arc::new(handler::Queries::new(engine.clone(), options.users.clone())),
        cancel: Arc::new(cancel::Cancel { sessions, engine }),
    });
    let open = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => {
                connections.shutdown().await;
                return Ok(());
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("PostgreSQL protocol: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (handlers, acceptor) = (handlers.clone(), acceptor.clone());
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tokio::spawn(refuse_too_many(socket));
            continue;
        };
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await {
                tracing::debug!("PostgreSQL protocol connection from {peer} ended: {e}");
            }
        });
    }
}

/// Answers a connection over the limit with PostgreSQL's own error (SQLSTATE 53300), which
/// drivers report as "too many connections", and closes it.
async fn refuse_too_many(mut socket: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let message = b"too many connections to gamelake: retry later, or raise --pg-max-connections";
    // An ErrorResponse: 'E', length, then fields (severity, code, message), each a type byte
    // and a zero-terminated string, and a final zero.
    let mut fields = Vec::new();
    for (kind, value) in [
        (b'S', &b"FATAL"[..]),
        (b'V', b"FATAL"),
        (b'C', b"53300"),
        (b'M', message),
    ] {
        fields.push(kind);
        fields.extend_from_slice(value);
        fields.push(0);
    }
    fields.push(0);
    let mut frame = vec![b'E'];
    frame.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    frame.extend_from_slice(&fields);
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.write_all(&frame)).await;
}

fn tls_acceptor(tls: &Tls) -> Result<pgwire::tokio::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    install_tls_provider();
    let bad = |e: String| Error::Invalid(format!("TLS certificate or key not usable: {e}"));
    let certs = CertificateDer::pem_slice_iter(&tls.cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key).map_err(|e| bad(e.to_string()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(e.to_string()))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// The handlers of one server, shared by every connection.
struct Handlers {
    login: Arc<login::Login>,
    queries: Arc<handler::Queries>,
    cancel: Arc<cancel::Cancel>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.login.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}
