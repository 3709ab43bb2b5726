//! `[flight]` in `gamelake.toml`: the bounds and lifetimes of the Flight SQL server, and the
//! server's options with their defaults applied ([`FlightConfig::options`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Access, FlightOptions};
use crate::serving::limits::machine_memory;
use crate::serving::{Directory, Limits, Signer, Tls};
use crate::toml_files::duration;

/// `[flight]`: bounds and lifetimes of the Flight SQL server. Durations are written like
/// `"30s"`, `"5m"`, `"12h"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightConfig {
    /// Queries that run at once; more wait in a queue (default 8).
    pub max_concurrent_queries: Option<usize>,
    /// Queries that may wait for a place at once (default 64); one more is refused at once
    /// as busy, with the time to retry in (SQLSTATE 53300, gRPC RESOURCE_EXHAUSTED).
    pub max_queued_queries: Option<usize>,
    /// How long a query waits for a slot before it is refused as busy (default 30s).
    #[serde(default, deserialize_with = "duration")]
    pub queue_timeout: Option<Duration>,
    /// How long a query may run (default 5m).
    #[serde(default, deserialize_with = "duration")]
    pub query_timeout: Option<Duration>,
    /// Memory one query may hold before it spills or fails, in MiB (default: a quarter of
    /// the server's; never more than `[query] memory_limit_mb`).
    pub query_memory_mb: Option<usize>,
    /// Memory all queries together may hold, in MiB (default: half of the machine's, or of the
    /// container's limit).
    pub server_memory_mb: Option<usize>,
    /// Lifetime of a login token and of a prepared statement (default 12h).
    #[serde(default, deserialize_with = "duration")]
    pub token_ttl: Option<Duration>,
    /// Lifetime of a ticket between GetFlightInfo and DoGet (default 10m).
    #[serde(default, deserialize_with = "duration")]
    pub ticket_ttl: Option<Duration>,
    /// Largest gRPC message the server accepts or sends, in MiB (default 64).
    pub max_message_mb: Option<usize>,
    /// How long table names are reused before the lake is listed again (default 5s).
    #[serde(default, deserialize_with = "duration")]
    pub catalog_ttl: Option<Duration>,
    /// Append every query to `system.query_log` (default true).
    pub query_log: Option<bool>,
}

impl FlightConfig {
    /// The server's options: these settings with their defaults, for `users`, signing with
    /// `signer`, over `tls` when given; `session_memory` is `[query] memory_limit_mb` (bytes),
    /// which bounds each query too.
    pub fn options(
        &self,
        users: Arc<Directory>,
        signer: Signer,
        tls: Option<Tls>,
        session_memory: Option<usize>,
    ) -> FlightOptions {
        let defaults = Limits::default();
        let mib = |mb: usize| mb * 1024 * 1024;
        let server_memory = self
            .server_memory_mb
            .map(mib)
            .or_else(|| machine_memory().map(|bytes| bytes / 2));
        // The per-query bound: the smaller of those given, else a quarter of the server's.
        let query_memory = match (self.query_memory_mb.map(mib), session_memory) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b).or(server_memory.map(|bytes| bytes / 4)),
        };
        FlightOptions {
            access: Access {
                users,
                signer,
                token_ttl: self.token_ttl.unwrap_or(Duration::from_secs(12 * 3600)),
                ticket_ttl: self.ticket_ttl.unwrap_or(Duration::from_secs(600)),
            },
            limits: Limits {
                max_concurrent_queries: self
                    .max_concurrent_queries
                    .unwrap_or(defaults.max_concurrent_queries),
                max_queued_queries: self
                    .max_queued_queries
                    .unwrap_or(defaults.max_queued_queries),
                queue_timeout: self.queue_timeout.unwrap_or(defaults.queue_timeout),
                query_timeout: self.query_timeout.unwrap_or(defaults.query_timeout),
                query_memory,
                server_memory,
            },
            tls,
            max_message_bytes: self.max_message_mb.unwrap_or(64) * 1024 * 1024,
            query_log: self.query_log.unwrap_or(true),
        }
    }

    /// How long table names are reused before the lake is listed again.
    pub fn catalog_ttl(&self) -> Duration {
        self.catalog_ttl.unwrap_or(Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(config: &FlightConfig, session_memory: Option<usize>) -> FlightOptions {
        let users = Arc::new(Directory::new(Vec::new()).unwrap());
        config.options(users, Signer::random(), None, session_memory)
    }

    #[test]
    fn a_server_is_bounded_in_memory_by_default_and_honours_the_session_limit() {
        let machine = machine_memory().expect("/proc/meminfo");
        let limits = options(&FlightConfig::default(), None).limits;
        assert_eq!(limits.server_memory, Some(machine / 2));
        assert_eq!(limits.query_memory, Some(machine / 8));
        // [query] memory_limit_mb bounds each query of the server too.
        let limits = options(&FlightConfig::default(), Some(64 << 20)).limits;
        assert_eq!(limits.query_memory, Some(64 << 20));
        let config = FlightConfig {
            query_memory_mb: Some(32),
            server_memory_mb: Some(256),
            ..FlightConfig::default()
        };
        let limits = options(&config, Some(64 << 20)).limits;
        assert_eq!(
            (limits.query_memory, limits.server_memory),
            (Some(32 << 20), Some(256 << 20))
        );
    }
}
