//! What `/metrics` shows about the queries of the BI doors, by user (prometheus-client): queries
//! by how they ended (`refused` is a quota's refusal), rows sent, queries running now. One
//! series per configured user, so the label stays small.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels: the user and how the query ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserOutcome {
    /// The user's name.
    pub user: String,
    /// `ok`, `error`, `timeout`, `cancelled` or `refused`.
    pub outcome: String,
}

/// Labels: the user.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabel {
    /// The user's name.
    pub user: String,
}

/// The query counters of a server, by user.
#[derive(Debug)]
pub struct QueryMetrics {
    registry: Registry,
    /// Queries that ended, by user and outcome.
    pub queries: Family<UserOutcome, Counter>,
    /// Rows sent, by user.
    pub rows: Family<UserLabel, Counter>,
    /// Queries running now, by user.
    pub running: Family<UserLabel, Gauge>,
}

impl Default for QueryMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gamelake_query");
        let metrics = Self {
            queries: Family::default(),
            rows: Family::default(),
            running: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "queries",
            "Queries of the Flight SQL and PostgreSQL doors that ended, by user and outcome",
            metrics.queries.clone(),
        );
        registry.register("rows", "Rows sent, by user", metrics.rows.clone());
        registry.register(
            "running",
            "Queries running now, by user",
            metrics.running.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl QueryMetrics {
    /// The registry `/metrics` encodes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a query of `user` that ended with `outcome` after sending `rows`.
    pub fn ended(&self, user: &str, outcome: &str, rows: u64) {
        self.queries
            .get_or_create(&UserOutcome {
                user: user.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.rows
            .get_or_create(&UserLabel {
                user: user.to_string(),
            })
            .inc_by(rows);
    }

    /// The gauge of `user`'s running queries.
    pub fn running_of(&self, user: &str) -> Gauge {
        self.running
            .get_or_create(&UserLabel {
                user: user.to_string(),
            })
            .clone()
    }
}
