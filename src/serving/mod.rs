//! The serving engine behind every door for BI tools and notebooks (Flight SQL and the
//! PostgreSQL wire protocol): who may connect ([`auth`], [`directory`]), who may run what, decided on the
//! parsed statement and its logical plan before anything runs ([`guard`]), admission, memory
//! and timeouts ([`limits`], enforced while a query runs in `running.rs`), what a client
//! carries between calls ([`tickets`], and [`crate::plain_types`] at the boundary), and the
//! record of every query ([`query_log`]). A protocol decodes its requests, calls [`Engine`],
//! and encodes the answers; it never plans SQL itself, so no door can skip a rule another
//! enforces. Readers' access rules ([`access`]) rewrite each statement's plan the same way for
//! every door.

pub mod access;
pub mod auth;
pub mod directory;
pub mod engine;
pub mod guard;
pub mod limits;
mod planned;
pub mod query_log;
pub mod query_metrics;
mod running;
pub mod scram;
pub mod tickets;

use std::sync::Arc;
use std::time::Duration;

pub use auth::{Principal, Role, Signer, User, hash_password};
pub use directory::Directory;
pub use engine::Engine;
pub use limits::Limits;
pub use query_log::QueryLogWriter;

use crate::error::Result;
use crate::query::Session;

/// A PEM certificate chain and key for TLS.
#[derive(Clone)]
pub struct Tls {
    /// The certificate chain (PEM).
    pub cert: Vec<u8>,
    /// The private key (PEM).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// Starts the engine over `session` with `limits`; with `query_log`, every query is appended
/// to `system.query_log` by a background writer, which the caller finishes after its server
/// stopped (so the last queries are kept).
pub fn start(
    session: Session,
    limits: Limits,
    query_log: bool,
) -> Result<(Arc<Engine>, Option<QueryLogWriter>)> {
    let governor = Arc::new(limits::Governor::new(limits));
    let (log, writer) = if query_log {
        let (log, writer) = query_log::QueryLog::start(&session, Duration::from_secs(1), 1000);
        (Some(log), Some(writer))
    } else {
        (None, None)
    };
    Ok((Arc::new(Engine::new(session, governor, log)?), writer))
}

/// Selects rustls' crypto provider for the process (both `ring` and `aws-lc-rs` are linked, so
/// rustls cannot pick one by itself). Safe to call more than once.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
