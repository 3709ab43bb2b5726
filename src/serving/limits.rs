//! Bounds on what queries may take: a memory pool per query inside the server's pool, a
//! limit on concurrent queries with a queue, a timeout, and cancellation. A query that
//! exceeds a bound fails alone; the server keeps serving the others.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
            limits,
            server_pool,
            running: Mutex::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Waits for a free slot (at most the queue timeout).
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit> {
        let waited = tokio::time::timeout(
            self.limits.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await;
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::Busy(format!(
                "server busy: {} queries are running and the queue wait of {} ran out; retry later",
                self.limits.max_concurrent_queries,
                humantime::format_duration(self.limits.queue_timeout)
            ))),
        }
    }

    /// A memory pool for one query: bounded by the per-query limit, drawing from the server's.
    pub fn query_pool(&self) -> Arc<dyn MemoryPool> {
        Arc::new(QueryPool {
            server: self.server_pool.clone(),
            limit: self.limits.query_memory,
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

/// One query's share of the server pool. DataFusion has one pool per runtime and no nesting,
/// so this small wrapper adds the per-query bound and passes every reservation on to the
/// server's pool (which spills fairly among all queries).
#[derive(Debug)]
struct QueryPool {
    server: Arc<dyn MemoryPool>,
    limit: Option<usize>,
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
        if let Some(limit) = self.limit {
            let used = self.used.load(Ordering::Relaxed);
            if used + additional > limit {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the query needs more than its memory limit of {} MiB ({} wanted {additional} bytes more); narrow it (filters, LIMIT) or ask for a larger [flight] query_memory_mb",
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
        match self.limit {
            Some(l) => MemoryLimit::Finite(l),
            None => self.server.memory_limit(),
        }
    }
}
