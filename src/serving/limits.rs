//! Bounds on what queries may take: a memory pool per query inside the server's pool, a
//! limit on concurrent queries with a bounded queue, a timeout, and cancellation. A query that
//! exceeds a bound fails alone; the server keeps serving the others. A query that finds the
//! queue full is refused at once with a retry time estimated from how long queries have lately
//! held their places, so a crowd larger than the server can serve waits at its clients instead
//! of in a queue whose every member would wait longer than it should.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, UnboundedMemoryPool,
};
use futures::channel::oneshot;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// The bounds, from `[flight]` in the config.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Queries that run at once; more wait in a queue.
    pub max_concurrent_queries: usize,
    /// Queries that may wait for a place at once; one more is refused as "busy" with a retry
    /// time.
    pub max_queued_queries: usize,
    /// How long a query may wait in the queue before it is refused as "busy".
    pub queue_timeout: Duration,
    /// How long a query may run (planning to last row).
    pub query_timeout: Duration,
    /// Memory one query may hold before it spills or fails, in bytes.
    pub query_memory: Option<usize>,
    /// Memory all queries together may hold, in bytes.
    pub server_memory: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_queries: 8,
            max_queued_queries: 64,
            queue_timeout: Duration::from_secs(30),
            query_timeout: Duration::from_secs(300),
            query_memory: None,
            server_memory: None,
        }
    }
}

/// The memory this process may use: the machine's (`MemTotal` of `/proc/meminfo`), or its
/// control group's limit when lower (a container). None where neither can be read.
pub fn machine_memory() -> Option<usize> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<usize>()
        .ok()?
        .saturating_mul(1024);
    let group = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<usize>()
            .ok()
    });
    Some(group.map_or(total, |g| g.min(total)))
}

/// Admission, memory and cancellation shared by all queries of a server.
#[derive(Debug)]
pub struct Governor {
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Queries waiting for a place now.
    waiting: AtomicUsize,
    /// How long queries have lately held their places.
    held: Arc<HeldTime>,
    server_pool: Arc<dyn MemoryPool>,
    running: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

impl Governor {
    /// A governor enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        let server_pool: Arc<dyn MemoryPool> = match limits.server_memory {
            Some(bytes) => Arc::new(FairSpillPool::new(bytes)),
            None => Arc::new(UnboundedMemoryPool::default()),
        };
        Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrent_queries.max(1))),
            waiting: AtomicUsize::new(0),
            held: Arc::default(),
            limits,
            server_pool,
            running: Mutex::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A place among the queries running at once: at once when one is free, else after a wait
    /// in the queue (at most the queue timeout); refused at once when the queue is full.
    pub async fn admit(&self) -> Result<Admitted> {
        if let Some(admitted) = self.try_admit() {
            return Ok(admitted);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        if ahead >= self.limits.max_queued_queries {
            return Err(Error::Busy(format!(
                "server busy: {} queries are running and {} waiting, the most [flight] max_queued_queries allows; retry in {} ms",
                self.limits.max_concurrent_queries,
                self.limits.max_queued_queries,
                self.retry_after(ahead).as_millis()
            )));
        }
        let waited = tokio::time::timeout(
            self.limits.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await;
        match waited {
            Ok(Ok(permit)) => Ok(self.admitted(permit)),
            _ => Err(Error::Busy(format!(
                "server busy: {} queries are running and the queue wait of {} ran out; retry later",
                self.limits.max_concurrent_queries,
                humantime::format_duration(self.limits.queue_timeout)
            ))),
        }
    }

    /// A free place now, without waiting.
    pub fn try_admit(&self) -> Option<Admitted> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.admitted(permit))
    }

    fn admitted(&self, permit: OwnedSemaphorePermit) -> Admitted {
        Admitted {
            _permit: permit,
            since: Instant::now(),
            held: self.held.clone(),
        }
    }

    /// When a client refused with `ahead` queries queued might find a place: the time the
    /// queue takes to drain at the recent pace, between 10 ms and 10 s (100 ms per place
    /// before any query ended).
    fn retry_after(&self, ahead: usize) -> Duration {
        let per_query = match self.held.micros.load(Ordering::Relaxed) {
            0 => Duration::from_millis(100),
            micros => Duration::from_micros(micros),
        };
        let rounds = (ahead + 1).div_ceil(self.limits.max_concurrent_queries.max(1));
        (per_query * rounds as u32).clamp(Duration::from_millis(10), Duration::from_secs(10))
    }

    /// A memory pool for one query, drawing from the server's: bounded by the smaller of the
    /// per-query limit and `own` (bytes, and what to do about it, which the error of a query
    /// past it says: a user's quota).
    pub fn query_pool(&self, own: Option<(usize, String)>) -> Arc<dyn MemoryPool> {
        let server = self.limits.query_memory.map(|bytes| {
            (
                bytes,
                "ask for a larger [flight] query_memory_mb".to_string(),
            )
        });
        let limit = match (server, own) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        Arc::new(QueryPool {
            server: self.server_pool.clone(),
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Registers a running query; the receiver fires when [`Governor::cancel`] names it.
    pub fn register(&self, query_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(query_id.to_string(), tx);
        rx
    }

    /// Forgets a query that ended.
    pub fn unregister(&self, query_id: &str) {
        self.lock().remove(query_id);
    }

    /// Cancels a running query; false when no query with that id runs here.
    pub fn cancel(&self, query_id: &str) -> bool {
        self.lock()
            .remove(query_id)
            .is_some_and(|tx| tx.send(()).is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A query's place among those running at once, given back when dropped; how long it was
/// held feeds the retry time of refused clients.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    since: Instant,
    held: Arc<HeldTime>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.held.add(self.since.elapsed());
    }
}

/// A moving average of how long places are held (each new time weighs an eighth).
#[derive(Debug, Default)]
struct HeldTime {
    micros: AtomicU64,
}

impl HeldTime {
    fn add(&self, held: Duration) {
        let sample = u64::try_from(held.as_micros()).unwrap_or(u64::MAX).max(1);
        // A lost update between two ending queries only drops one sample of an estimate.
        let old = self.micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.micros.store(new.max(1), Ordering::Relaxed);
    }
}

/// Counts a query out of the queue when it leaves it (admitted, refused or gone).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One query's share of the server pool. DataFusion has one pool per runtime and no nesting,
/// so this small wrapper adds the per-query bound and passes every reservation on to the
/// server's pool (which spills fairly among all queries).
#[derive(Debug)]
struct QueryPool {
    server: Arc<dyn MemoryPool>,
    /// The bound, and what to do about it (its source).
    limit: Option<(usize, String)>,
    used: AtomicUsize,
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query pool ({} bytes used)",
            self.used.load(Ordering::Relaxed)
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "gamelake-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.server.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.server.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.server.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.server.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        if let Some((limit, source)) = &self.limit {
            let used = self.used.load(Ordering::Relaxed);
            if used + additional > *limit {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the query needs more than its memory limit of {} MiB ({} wanted {additional} bytes more); narrow it (filters, LIMIT) or {source}",
                    limit / (1024 * 1024),
                    reservation.consumer().name()
                )));
            }
        }
        self.server.try_grow(reservation, additional)?;
        self.used.fetch_add(additional, Ordering::Relaxed);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        match &self.limit {
            Some((l, _)) => MemoryLimit::Finite(*l),
            None => self.server.memory_limit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_with_a_retry_time() {
        let governor = Arc::new(Governor::new(Limits {
            max_concurrent_queries: 1,
            max_queued_queries: 1,
            ..Limits::default()
        }));
        let running = governor.admit().await.unwrap();
        let queued = tokio::spawn({
            let governor = governor.clone();
            async move { governor.admit().await.map(drop) }
        });
        while governor.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let refused = governor.admit().await.unwrap_err().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused only after waiting"
        );
        // Before any query ended: 100 ms a place, the queued one's and its own.
        assert!(
            refused.contains("1 queries are running and 1 waiting")
                && refused.contains("max_queued_queries allows; retry in 200 ms"),
            "{refused}"
        );
        // The place frees: the queued query runs, the queue empties, and the next refusal's
        // retry time follows how long the places were held.
        drop(running);
        queued.await.unwrap().unwrap();
        assert_eq!(governor.waiting.load(Ordering::SeqCst), 0);
        assert!(governor.held.micros.load(Ordering::Relaxed) > 0);
        let _again = governor.admit().await.unwrap();
    }
}
