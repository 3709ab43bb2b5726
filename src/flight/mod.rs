//! Flight SQL for BI tools and notebooks: `gamelake serve --flight ADDR`.
//!
//! Protocol decoding ([`service`]) is kept apart from planning ([`engine`]); who may do what is
//! in [`auth`] and [`guard`], the bounds in [`limits`] (enforced while a query runs, `running.rs`), what crosses the wire in [`tickets`] (and
//! [`crate::plain_types`]), and the record of every query in [`query_log`].

pub mod access;
pub mod auth;
pub mod engine;
pub mod guard;
pub mod limits;
pub mod metadata;
pub mod query_log;
mod running;
pub mod service;
pub mod tickets;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use access::Access;
pub use auth::{Principal, Role, Signer, User, hash_password};
pub use limits::Limits;

use crate::error::{Error, Result};
use crate::query::Session;

/// A PEM certificate chain and key for TLS.
#[derive(Clone)]
pub struct Tls {
    /// The certificate chain (PEM).
    pub cert: Vec<u8>,
    /// The private key (PEM).
    pub key: Vec<u8>,
}

/// Everything the Flight SQL server needs besides the session.
#[derive(Clone)]
pub struct FlightOptions {
    /// Users, the signing key, token lifetimes.
    pub access: Access,
    /// Bounds on queries.
    pub limits: Limits,
    /// TLS, when given.
    pub tls: Option<Tls>,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// Append every query to `system.query_log`.
    pub query_log: bool,
}

/// Serves Flight SQL on `listener` until `shutdown` completes, then finishes running streams
/// and writes the rest of the query log.
pub async fn serve(
    listener: TcpListener,
    session: Session,
    options: FlightOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let governor = Arc::new(limits::Governor::new(options.limits));
    let (log, writer) = if options.query_log {
        let (log, writer) = query_log::QueryLog::start(&session, Duration::from_secs(1), 1000);
        (Some(log), Some(writer))
    } else {
        (None, None)
    };
    let engine = Arc::new(engine::Engine::new(session, governor, log)?);
    let service = service::FlightSqlServer::new(engine, options.access)?;
    let service = FlightServiceServer::new(service)
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    let mut server = Server::builder();
    if let Some(tls) = options.tls {
        install_tls_provider();
        server = server
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(tls.cert, tls.key)))
            .map_err(|e| Error::Unsupported(format!("TLS certificate or key not usable: {e}")))?;
    }
    server
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(|e| Error::Unsupported(format!("Flight SQL server failed: {e}")))?;
    if let Some(writer) = writer {
        writer.finish().await;
    }
    Ok(())
}

/// Selects rustls' crypto provider for the process (both `ring` and `aws-lc-rs` are linked, so
/// rustls cannot pick one by itself). Safe to call more than once.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
