//! What `/metrics` shows about scheduled runs (prometheus-client).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels: the job (`report/daily_kpis`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    /// The job's name.
    pub job: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

/// The scheduler's counters, by job.
pub struct Metrics {
    registry: Registry,
    /// Runs started by this process.
    pub runs: Family<JobLabel, Counter>,
    /// Runs that ended in an error.
    pub failures: Family<JobLabel, Counter>,
    /// Seconds per finished run.
    pub seconds: Family<JobLabel, Histogram, fn() -> Histogram>,
    /// Unix time of the last run that succeeded.
    pub last_success: Family<JobLabel, Gauge>,
    /// Slots this process found already claimed by another (a replica, or before a restart).
    pub skipped: Family<JobLabel, Counter>,
    /// Followed pipelines: changes applied to the lake by this process.
    pub cdc_changes: Family<JobLabel, Counter>,
    /// Followed pipelines: seconds from the commit in PostgreSQL of the oldest change of the
    /// last pass to its commit in the lake (0 after a pass with nothing new).
    pub cdc_lag_seconds: Family<JobLabel, Gauge<f64, AtomicU64>>,
    /// Followed pipelines: bytes of WAL the replication slot holds after the last pass.
    pub cdc_lag_bytes: Family<JobLabel, Gauge>,
    /// Followed pipelines: 1 while this process reads the slot, 0 while it waits (another
    /// replica reads it, or the source is down).
    pub cdc_following: Family<JobLabel, Gauge>,
    /// Replicas: versions copied by this process.
    pub replica_versions: Family<JobLabel, Counter>,
    /// Replicas: bytes of data files copied by this process.
    pub replica_bytes: Family<JobLabel, Counter>,
    /// Replicas: versions the replica lacked when the last round looked (all tables).
    pub replica_versions_behind: Family<JobLabel, Gauge>,
    /// Replicas: the longest time from a version's commit in the lake to its commit in the
    /// replica, among the last round's (0 after a round with nothing new).
    pub replica_lag_seconds: Family<JobLabel, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gamelake_schedule");
        let metrics = Self {
            runs: Family::default(),
            failures: Family::default(),
            seconds: Family::new_with_constructor(duration_histogram),
            last_success: Family::default(),
            skipped: Family::default(),
            cdc_changes: Family::default(),
            cdc_lag_seconds: Family::default(),
            cdc_lag_bytes: Family::default(),
            cdc_following: Family::default(),
            replica_versions: Family::default(),
            replica_bytes: Family::default(),
            replica_versions_behind: Family::default(),
            replica_lag_seconds: Family::default(),
            registry: Registry::default(),
        };
        registry.register("runs", "Scheduled runs started", metrics.runs.clone());
        registry.register(
            "failures",
            "Scheduled runs that failed",
            metrics.failures.clone(),
        );
        registry.register(
            "run_seconds",
            "Duration of scheduled runs",
            metrics.seconds.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful run",
            metrics.last_success.clone(),
        );
        registry.register(
            "slots_claimed_elsewhere",
            "Due slots already claimed by another process",
            metrics.skipped.clone(),
        );
        registry.register(
            "cdc_changes",
            "Changes applied from PostgreSQL's replication stream",
            metrics.cdc_changes.clone(),
        );
        registry.register(
            "cdc_lag_seconds",
            "Seconds from commit in PostgreSQL to commit in the lake, last pass",
            metrics.cdc_lag_seconds.clone(),
        );
        registry.register(
            "cdc_lag_bytes",
            "Bytes of WAL the replication slot holds",
            metrics.cdc_lag_bytes.clone(),
        );
        registry.register(
            "cdc_following",
            "1 while this process reads the replication slot",
            metrics.cdc_following.clone(),
        );
        registry.register(
            "replica_versions",
            "Table versions copied to the replica",
            metrics.replica_versions.clone(),
        );
        registry.register(
            "replica_bytes",
            "Bytes of data files copied to the replica",
            metrics.replica_bytes.clone(),
        );
        registry.register(
            "replica_versions_behind",
            "Versions the replica lacked when the last round looked",
            metrics.replica_versions_behind.clone(),
        );
        registry.register(
            "replica_lag_seconds",
            "Seconds from commit in the lake to commit in the replica, last round",
            metrics.replica_lag_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The label of a job.
    pub fn label(job: &str) -> JobLabel {
        JobLabel {
            job: job.to_string(),
        }
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
