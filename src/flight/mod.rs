//! Flight SQL for BI tools and notebooks: `gamelake serve --flight ADDR`, a thin protocol
//! layer over the serving engine ([`crate::serving`]).
//!
//! [`service`] decodes requests and checks the bearer token on every call ([`access`]),
//! [`metadata`] answers the catalog commands, and [`wire`] encodes batches, schemas and errors
//! for gRPC. Nothing here plans SQL: that is [`crate::serving::Engine`]'s.

pub mod access;
pub mod config;
pub mod metadata;
pub mod prepared;
pub mod service;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use access::Access;
pub use config::FlightConfig;

use crate::error::{Error, Result};
use crate::query::Session;
use crate::serving::{Engine, Limits, Tls, install_tls_provider};

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

/// Serves Flight SQL on `listener` over an engine of its own until `shutdown` completes, then
/// finishes running streams and writes the rest of the query log.
pub async fn serve(
    listener: TcpListener,
    session: Session,
    options: FlightOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (engine, writer) =
        crate::serving::start(session, options.limits.clone(), options.query_log)?;
    serve_engine(listener, engine, options, shutdown).await?;
    if let Some(writer) = writer {
        writer.finish().await;
    }
    Ok(())
}

/// Serves Flight SQL on `listener` over `engine` (which another protocol may share) until
/// `shutdown` completes and running streams finished.
pub async fn serve_engine(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: FlightOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let service = service::FlightSqlServer::new(engine, options.access)?;
    let service = FlightServiceServer::new(service)
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    let mut server = Server::builder();
    if let Some(tls) = options.tls {
        install_tls_provider();
        server = server
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(tls.cert, tls.key)))
            .map_err(|e| Error::Invalid(format!("TLS certificate or key not usable: {e}")))?;
    }
    server
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(|e| Error::Unavailable(format!("Flight SQL server failed: {e}")))?;
    Ok(())
}
