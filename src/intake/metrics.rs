//! What `/metrics` shows about the intake, in the Prometheus text format (prometheus-client).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels: the table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// `schema.table`.
    pub table: String,
}

/// Labels: the HTTP status of an intake request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// e.g. "200", "413".
    pub status: String,
}

/// The intake's counters.
pub struct Metrics {
    registry: Registry,
    /// Records acknowledged (durable in the write-ahead log), by table.
    pub received: Family<TableLabel, Counter>,
    /// Records committed to their table, by table.
    pub committed: Family<TableLabel, Counter>,
    /// Records rejected (to `<schema>._rejected`), by the table they were sent to.
    pub rejected: Family<TableLabel, Counter>,
    /// Records of retried batches already stored (same idempotency key), acknowledged again
    /// without storing them, by table.
    pub duplicates: Family<TableLabel, Counter>,
    /// Intake requests, by response status.
    pub requests: Family<StatusLabel, Counter>,
    /// Write-ahead log segments committed.
    pub commits: Counter,
    /// Commit rounds that failed (they are retried).
    pub commit_failures: Counter,
    /// Seconds per committed segment.
    pub commit_seconds: Histogram,
    /// Bytes acknowledged and not yet committed.
    pub pending_bytes: Gauge,
    /// Small files replaced by compaction, by table.
    pub compacted_files: Family<TableLabel, Counter>,
    /// Maintenance runs (compaction, vacuum, checkpoint) that failed.
    pub maintenance_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gamelake_intake");
        let metrics = Self {
            received: Family::default(),
            committed: Family::default(),
            rejected: Family::default(),
            duplicates: Family::default(),
            requests: Family::default(),
            commits: Counter::default(),
            commit_failures: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            pending_bytes: Gauge::default(),
            compacted_files: Family::default(),
            maintenance_failures: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records_received",
            "Records acknowledged to senders (durable in the write-ahead log)",
            metrics.received.clone(),
        );
        registry.register(
            "records_committed",
            "Records committed to their Delta table",
            metrics.committed.clone(),
        );
        registry.register(
            "records_rejected",
            "Records written to <schema>._rejected instead, by the table they were sent to",
            metrics.rejected.clone(),
        );
        registry.register(
            "records_duplicate",
            "Records of retried batches (same idempotency key) acknowledged without storing them again",
            metrics.duplicates.clone(),
        );
        registry.register(
            "requests",
            "Intake requests by HTTP status",
            metrics.requests.clone(),
        );
        registry.register(
            "commits",
            "Write-ahead log segments committed to the lake",
            metrics.commits.clone(),
        );
        registry.register(
            "commit_failures",
            "Commit rounds that failed and will be retried",
            metrics.commit_failures.clone(),
        );
        registry.register(
            "commit_seconds",
            "Time to commit one write-ahead log segment",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "wal_pending_bytes",
            "Bytes acknowledged but not yet committed",
            metrics.pending_bytes.clone(),
        );
        registry.register(
            "compacted_files",
            "Small files replaced by compaction",
            metrics.compacted_files.clone(),
        );
        registry.register(
            "maintenance_failures",
            "Compactions, vacuums or checkpoints that failed (retried next round)",
            metrics.maintenance_failures.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Counts `n` on a table's counter.
    pub fn add(family: &Family<TableLabel, Counter>, table: &str, n: usize) {
        family
            .get_or_create(&TableLabel {
                table: table.to_string(),
            })
            .inc_by(n as u64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        crate::metrics::exposition(&[&self.registry])
    }

    /// The registry holding these metrics (to expose it beside others).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
