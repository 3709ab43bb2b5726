//! Replicas (`[[replicas]]` in gamelake.toml) that `gamelake serve --schedule` keeps following:
//! a round of [`Replicator`] every `interval`, its lag on `/metrics`. A failed round (the
//! replica's store down, say) is retried after a pause that doubles up to a minute; each round
//! starts from what the replica holds, so nothing is skipped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::follow::{Backoff, Endless, wait_or_stop};
use super::metrics::Metrics;
use crate::lake::replicate::Replicator;

/// A replica followed without end.
pub struct ReplicaFollower {
    name: String,
    replicator: Replicator,
    interval: Duration,
}

impl ReplicaFollower {
    /// Follows with `replicator` as `name` (`replica/<name>`), a round every `interval`.
    pub fn new(name: String, replicator: Replicator, interval: Duration) -> Self {
        Self {
            name,
            replicator,
            interval,
        }
    }
}

#[async_trait::async_trait]
impl Endless for ReplicaFollower {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, metrics: Arc<Metrics>, mut stopped: watch::Receiver<bool>) {
        let label = Metrics::label(&self.name);
        let mut backoff = Backoff::new();
        loop {
            let wait = match self.replicator.round().await {
                Ok(statuses) => {
                    backoff.reset();
                    let behind: u64 = statuses.iter().map(|s| s.behind).sum();
                    let copied: u64 = statuses.iter().map(|s| s.versions_copied).sum();
                    let bytes: u64 = statuses.iter().map(|s| s.bytes_copied).sum();
                    let lag = statuses.iter().map(|s| s.lag).max().unwrap_or_default();
                    metrics
                        .replica_versions_behind
                        .get_or_create(&label)
                        .set(i64::try_from(behind).unwrap_or(i64::MAX));
                    metrics
                        .replica_versions
                        .get_or_create(&label)
                        .inc_by(copied);
                    metrics.replica_bytes.get_or_create(&label).inc_by(bytes);
                    metrics
                        .replica_lag_seconds
                        .get_or_create(&label)
                        .set(lag.as_secs_f64());
                    metrics
                        .last_success
                        .get_or_create(&label)
                        .set(chrono::Utc::now().timestamp());
                    self.interval
                }
                Err(e) => {
                    metrics.failures.get_or_create(&label).inc();
                    tracing::warn!(job = %self.name, error = %e, "replication round failed; trying again");
                    backoff.failed()
                }
            };
            if wait_or_stop(wait, &mut stopped).await {
                break;
            }
        }
    }
}
