//! Followed pipelines (`follow = "1s"`): change capture that `gamelake serve --schedule` keeps
//! running beside the scheduled jobs, with its progress on `/metrics`.
//!
//! One process reads a replication slot at a time (a PostgreSQL session lock, taken when the
//! capture starts): on a replica the follower looks again every few seconds and takes over
//! when the reading process stops; while the source is down or failing, it tries again after a
//! pause that doubles up to a minute. An error ends the current capture; the next attempt
//! starts from what the lake committed, so nothing is applied twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::metrics::Metrics;
use crate::error::Error;
use crate::pipeline::PipelineConfig;
use crate::query::Session;

/// The first pause after a failed start; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);

/// The longest pause between failed attempts.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The pause of a replica between looks at a slot another process reads: how soon it takes
/// over after that process stops.
const STANDBY: Duration = Duration::from_secs(2);

/// The pauses between failed attempts of work that runs without end: from [`RETRY_MIN`],
/// doubling up to [`RETRY_MAX`], back to the start after a success.
pub(super) struct Backoff(Duration);

impl Backoff {
    /// A backoff at its shortest pause.
    pub(super) fn new() -> Self {
        Self(RETRY_MIN)
    }

    /// After a success: the next failure waits the shortest pause again.
    pub(super) fn reset(&mut self) {
        self.0 = RETRY_MIN;
    }

    /// After a failure: the pause to wait now (the next one doubles).
    pub(super) fn failed(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(RETRY_MAX);
        wait
    }
}

/// Waits `wait`, or less when `stopped` turns true first; answers whether it stopped.
pub(super) async fn wait_or_stop(wait: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stopped.wait_for(|stop| *stop) => true,
    }
}

/// Work `gamelake serve --schedule` keeps running without end beside the scheduled jobs:
/// followed pipelines, replicas.
#[async_trait::async_trait]
pub trait Endless: Send + Sync {
    /// Its name, also its metrics label (`cdc/accounts`, `replica/shanghai`).
    fn name(&self) -> &str;
    /// Runs until `stopped` turns true.
    async fn run(&self, metrics: Arc<Metrics>, stopped: watch::Receiver<bool>);
}

/// A pipeline of `cdc` tables followed without end.
pub struct Follower {
    name: String,
    pipeline: PipelineConfig,
    interval: Duration,
    session: Session,
}

impl Follower {
    /// Follows `pipeline` (its `follow` pause is `interval`) as `name` (`cdc/<file stem>`).
    pub fn new(
        name: String,
        pipeline: PipelineConfig,
        interval: Duration,
        session: Session,
    ) -> Self {
        Self {
            name,
            pipeline,
            interval,
            session,
        }
    }
}

#[async_trait::async_trait]
impl Endless for Follower {
    fn name(&self) -> &str {
        &self.name
    }

    /// Follows until `stopped` turns true: a pass under way then finishes its batch.
    async fn run(&self, metrics: Arc<Metrics>, stopped: watch::Receiver<bool>) {
        let label = Metrics::label(&self.name);
        let stop = Arc::new(AtomicBool::new(false));
        let mut watched = stopped.clone();
        let flag = stop.clone();
        tokio::spawn(async move {
            let _ = watched.wait_for(|stop| *stop).await;
            flag.store(true, Ordering::Relaxed);
        });
        let mut backoff = Backoff::new();
        while !stop.load(Ordering::Relaxed) {
            let mut followed = false;
            let outcome = crate::pipeline::follow(
                &self.session,
                &self.pipeline,
                self.interval,
                &stop,
                |step| {
                    followed = true;
                    metrics.cdc_following.get_or_create(&label).set(1);
                    metrics
                        .cdc_changes
                        .get_or_create(&label)
                        .inc_by(step.changes as u64);
                    metrics
                        .cdc_lag_seconds
                        .get_or_create(&label)
                        .set(step.lag_seconds.unwrap_or(0.0));
                    if let Some(bytes) = step.lag_bytes {
                        metrics.cdc_lag_bytes.get_or_create(&label).set(bytes);
                    }
                    metrics
                        .last_success
                        .get_or_create(&label)
                        .set(chrono::Utc::now().timestamp());
                },
            )
            .await;
            metrics.cdc_following.get_or_create(&label).set(0);
            if followed {
                backoff.reset();
            }
            let wait = match outcome {
                Ok(()) => break,
                Err(Error::Busy(message)) => {
                    tracing::debug!(job = %self.name, "{message}; waiting to take over");
                    STANDBY
                }
                Err(e) => {
                    metrics.failures.get_or_create(&label).inc();
                    tracing::warn!(job = %self.name, error = %e, "change capture stopped; starting again from the lake's position");
                    backoff.failed()
                }
            };
            if wait_or_stop(wait, &mut stopped.clone()).await {
                break;
            }
        }
    }
}
