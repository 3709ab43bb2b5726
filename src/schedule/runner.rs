//! The scheduler loop: one task per job, each looking at its job's records and its schedule.
//!
//! Policy (also in the README):
//! - A slot (due time) runs once: its first attempt is claimed with a conditional put in the
//!   lake ([`Records`]), so restarts and replicas never run it twice.
//! - After downtime, or a run longer than the interval, only the latest missed slot runs, once,
//!   as soon as the scheduler looks (on start-up); the slots before it are skipped.
//! - A job new to the lake (no record) first runs at its next due time.
//! - Runs of one job never overlap: while its latest attempt is running (here or on a replica)
//!   no later slot starts. A running attempt whose heartbeat stopped for three heartbeat
//!   intervals (its process died), or that was interrupted by a stop, is taken over: the same
//!   slot runs again as the next attempt.
//! - A failed run is recorded and not retried; the job runs again at its next slot. One job
//!   failing (or panicking) does not stop the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::clock::Clock;
use super::follow::Endless;
use super::job::Job;
use super::metrics::Metrics;
use super::state::{Outcome, Record, Records};
use crate::error::{Error, Result};

/// Default interval between a running attempt's heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Runs jobs on their schedules, and followed pipelines without end.
pub struct JobRunner {
    jobs: Vec<Arc<dyn Job>>,
    followers: Vec<Arc<dyn Endless>>,
    records: Records,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    heartbeat: chrono::Duration,
    node: String,
    /// Since when this process has watched the jobs (a job with no record runs slots after it).
    since: DateTime<Utc>,
    /// Per job: when it will look again, or None while it is busy.
    idle: watch::Sender<BTreeMap<String, Option<DateTime<Utc>>>>,
}

/// What one look at a job decided.
enum Step {
    /// Look again at this time.
    At(DateTime<Utc>),
    /// Look again now (something ran; more may be due).
    Again,
    /// The schedule has no further due time.
    Done,
}

impl JobRunner {
    /// A scheduler of `jobs`, recording runs in `records`, on `clock`.
    pub fn new(
        jobs: Vec<Arc<dyn Job>>,
        records: Records,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let since = clock.now();
        Self {
            jobs,
            followers: Vec::new(),
            records,
            clock,
            metrics,
            heartbeat: chrono::Duration::from_std(HEARTBEAT).unwrap_or(chrono::Duration::MAX),
            node: node_name(),
            since,
            idle: watch::Sender::new(BTreeMap::new()),
        }
    }

    /// Sets the heartbeat interval (a dead process's run is taken over after three).
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        self
    }

    /// Adds work to run without end (change capture, replicas), beside the scheduled jobs.
    pub fn with_followers(mut self, followers: Vec<Arc<dyn Endless>>) -> Self {
        self.followers = followers;
        self
    }

    /// The counters of its runs, for `/metrics`.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The jobs' names, then those of the work that runs without end.
    pub fn job_names(&self) -> Vec<String> {
        self.jobs
            .iter()
            .map(|j| j.name().to_string())
            .chain(self.followers.iter().map(|f| f.name().to_string()))
            .collect()
    }

    /// Completes when every job is waiting for a time after the clock's present (nothing is
    /// running or about to run). Tests use it after moving a manual clock.
    pub async fn settled(&self) {
        let mut idle = self.idle.subscribe();
        let count = self.jobs.len();
        let clock = self.clock.clone();
        let _ = idle
            .wait_for(|idle| {
                let now = clock.now();
                idle.len() == count && idle.values().all(|at| at.is_some_and(|at| at > now))
            })
            .await;
    }

    /// Runs every job until `stopped` turns true. A run in progress at the stop is interrupted
    /// (recorded so; the next start runs that slot again).
    pub async fn run(self: Arc<Self>, stopped: watch::Receiver<bool>) -> Result<()> {
        let mut tasks = Vec::new();
        for job in &self.jobs {
            let this = self.clone();
            let job = job.clone();
            let stopped = stopped.clone();
            tasks.push(tokio::spawn(async move { this.drive(job, stopped).await }));
        }
        for follower in &self.followers {
            let (follower, metrics) = (follower.clone(), self.metrics.clone());
            let stopped = stopped.clone();
            tasks.push(tokio::spawn(
                async move { follower.run(metrics, stopped).await },
            ));
        }
        for task in tasks {
            task.await
                .map_err(|e| Error::Internal(format!("scheduler task failed: {e}")))?;
        }
        Ok(())
    }

    fn set_idle(&self, job: &str, at: Option<DateTime<Utc>>) {
        self.idle.send_modify(|idle| {
            idle.insert(job.to_string(), at);
        });
    }

    /// One job's loop.
    async fn drive(&self, job: Arc<dyn Job>, mut stopped: watch::Receiver<bool>) {
        let name = job.name().to_string();
        tracing::info!(job = %name, schedule = %job.timing().text, "scheduled");
        loop {
            if *stopped.borrow() {
                break;
            }
            let now = self.clock.now();
            let step = match self.step(&job, now, &mut stopped).await {
                Ok(step) => step,
                Err(e) => {
                    // The records could not be read or written (store down): look again soon.
                    tracing::warn!(job = %name, error = %e, "schedule records unavailable; retrying");
                    Step::At(now + self.heartbeat)
                }
            };
            let wake = match step {
                Step::Again => continue,
                Step::Done => break,
                Step::At(at) => at,
            };
            self.set_idle(&name, Some(wake));
            tokio::select! {
                _ = self.clock.sleep_until(wake) => {}
                _ = stop_requested(&mut stopped) => break,
            }
            self.set_idle(&name, None);
        }
        self.set_idle(&name, Some(DateTime::<Utc>::MAX_UTC));
    }

    /// Looks at a job once: runs (or takes over) what is due, and says when to look again.
    async fn step(
        &self,
        job: &Arc<dyn Job>,
        now: DateTime<Utc>,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<Step> {
        let name = job.name();
        let latest = self.records.latest(name).await?;
        let due = job.timing().latest_due(now);
        let claim = match (&latest, due) {
            (Some(r), _) if r.outcome == Outcome::Interrupted => Some((r.slot, r.attempt + 1)),
            (Some(r), _) if r.outcome == Outcome::Running => {
                if now - r.heartbeat >= self.heartbeat * 3 {
                    tracing::warn!(job = %name, slot = %r.slot, node = %r.node, "a run's process stopped answering; running its slot again");
                    Some((r.slot, r.attempt + 1))
                } else {
                    // Running here or on a replica: never start another run beside it.
                    return Ok(Step::At(now + self.heartbeat));
                }
            }
            (Some(r), Some(due)) if due > r.slot => Some((due, 1)),
            (None, Some(due)) if due > self.since => Some((due, 1)),
            _ => None,
        };
        if let Some((slot, attempt)) = claim {
            self.attempt(job, slot, attempt, stopped).await?;
            return Ok(Step::Again);
        }
        Ok(match job.timing().next_after(now) {
            Some(at) => Step::At(at),
            None => Step::Done,
        })
    }

    /// Claims and runs one attempt at a slot, keeping its record's heartbeat fresh.
    async fn attempt(
        &self,
        job: &Arc<dyn Job>,
        slot: DateTime<Utc>,
        attempt: u32,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let name = job.name();
        let label = Metrics::label(name);
        let now = self.clock.now();
        let mut record = Record {
            slot,
            attempt,
            node: self.node.clone(),
            started: now,
            heartbeat: now,
            outcome: Outcome::Running,
            seconds: None,
            detail: None,
        };
        if !self.records.claim(name, &record).await? {
            self.metrics.skipped.get_or_create(&label).inc();
            tracing::info!(job = %name, %slot, attempt, "slot claimed by another process");
            return Ok(());
        }
        self.metrics.runs.get_or_create(&label).inc();
        tracing::info!(job = %name, %slot, attempt, "scheduled run started");
        let started = Instant::now();
        // Its own task: a panic in the job ends this run only, as a failure.
        let running = {
            let job = job.clone();
            tokio::spawn(async move { job.run(slot).await })
        };
        let abort = running.abort_handle();
        tokio::pin!(running);
        let result = loop {
            tokio::select! {
                joined = &mut running => {
                    break joined.map_err(|e| Error::Internal(format!("the run panicked: {e}"))).and_then(|r| r);
                }
                _ = self.clock.sleep_until(record.heartbeat + self.heartbeat) => {
                    record.heartbeat = self.clock.now();
                    if let Err(e) = self.records.update(name, &record).await {
                        tracing::warn!(job = %name, error = %e, "cannot record a heartbeat");
                    }
                }
                _ = stop_requested(stopped) => {
                    abort.abort();
                    record.outcome = Outcome::Interrupted;
                    record.detail = Some("stopped while running; runs again at the next start".to_string());
                    self.records.update(name, &record).await?;
                    tracing::warn!(job = %name, %slot, "scheduled run interrupted by the stop");
                    return Ok(());
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.seconds.get_or_create(&label).observe(seconds);
        record.seconds = Some(seconds);
        record.heartbeat = self.clock.now();
        match result {
            Ok(detail) => {
                tracing::info!(job = %name, %slot, seconds, %detail, "scheduled run finished");
                record.outcome = Outcome::Ok;
                record.detail = Some(detail);
                self.metrics
                    .last_success
                    .get_or_create(&label)
                    .set(Utc::now().timestamp());
            }
            Err(e) => {
                tracing::error!(job = %name, %slot, seconds, error = %e, "scheduled run failed");
                self.metrics.failures.get_or_create(&label).inc();
                record.outcome = Outcome::Failed;
                record.detail = Some(e.to_string());
            }
        }
        self.records.update(name, &record).await?;
        if let Err(e) = self.records.prune(name).await {
            tracing::warn!(job = %name, error = %e, "cannot delete old schedule records");
        }
        Ok(())
    }
}

/// Completes when `stopped` turns true (or its sender is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // The guard wait_for answers is not Send; drop it here.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// This process, as named in records: host and process id.
fn node_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gamelake".to_string());
    format!("{host}:{}", std::process::id())
}
