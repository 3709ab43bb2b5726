//! What `/metrics` shows about scheduled runs (prometheus-client).

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
