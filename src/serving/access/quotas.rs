//! Per-user quotas, from `[[quotas]]` in the access rules file: queries running at once,
//! queries waiting for a server slot, queries per minute, a query's memory, rows and bytes of a
//! result and a query's time, for the users and groups a quota matches (first match wins;
//! admins too, when a quota names them). Each refusal names the quota, the user and what to do;
//! a client told to retry later gets SQLSTATE 53300 or gRPC RESOURCE_EXHAUSTED.
//!
//! ```toml
//! [[quotas]]
//! group = "analysts"            # or user = "ana" (a glob); neither: everyone
//! max_concurrent_queries = 2    # more at once are refused, not queued
//! max_queued_queries = 1        # of those, waiting for a server slot at once
//! queries_per_minute = 60
//! query_memory_mb = 512         # at most the server's [flight] query_memory_mb
//! max_result_rows = 1000000
//! max_result_mb = 100
//! query_timeout = "1m"          # at most the server's [flight] query_timeout
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glob::Pattern;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::serving::auth::Principal;

/// One `[[quotas]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaEntry {
    /// A glob over user names (default: every user).
    #[serde(default)]
    pub user: Option<String>,
    /// A group the user must belong to.
    #[serde(default)]
    pub group: Option<String>,
    /// Queries of the user running at once; one more is refused.
    #[serde(default)]
    pub max_concurrent_queries: Option<usize>,
    /// Of the user's queries, those that may wait for a server slot at once; one more is
    /// refused.
    #[serde(default)]
    pub max_queued_queries: Option<usize>,
    /// Queries the user may start in any 60 seconds.
    #[serde(default)]
    pub queries_per_minute: Option<usize>,
    /// Memory one of the user's queries may hold before it spills or fails, in MiB.
    #[serde(default)]
    pub query_memory_mb: Option<usize>,
    /// Rows a result may hold; a query that returns more fails at that row.
    #[serde(default)]
    pub max_result_rows: Option<u64>,
    /// Bytes a result may hold (Arrow, as `system.query_log` counts them), in MiB; a query
    /// that returns more fails at that batch.
    #[serde(default)]
    pub max_result_mb: Option<u64>,
    /// How long one of the user's queries may run.
    #[serde(default, deserialize_with = "crate::toml_files::duration")]
    pub query_timeout: Option<Duration>,
}

/// A quota, checked.
#[derive(Clone, Debug)]
pub struct Quota {
    /// Its place in the file: `access.toml quota 1 (line 9)`.
    pub origin: String,
    /// The entry's user glob.
    user: Pattern,
    /// The entry as written: whose it is and its limits.
    pub entry: QuotaEntry,
}

impl Quota {
    /// Checks an entry (`origin` names it in messages).
    pub(super) fn new(entry: QuotaEntry, origin: String) -> std::result::Result<Self, String> {
        let user = entry.user.as_deref().unwrap_or("*");
        let user = Pattern::new(user).map_err(|e| format!("user '{user}' is not a glob: {e}"))?;
        for (name, value) in [
            ("max_concurrent_queries", entry.max_concurrent_queries),
            ("queries_per_minute", entry.queries_per_minute),
            ("query_memory_mb", entry.query_memory_mb),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "{name} = 0 lets no query run; deny the user's tables with a rule instead"
                ));
            }
        }
        Ok(Self {
            origin,
            user,
            entry,
        })
    }

    /// Whether the quota is `who`'s.
    pub fn matches(&self, who: &Principal) -> bool {
        self.user.matches(&who.user)
            && self
                .entry
                .group
                .as_ref()
                .is_none_or(|g| who.groups.contains(g))
    }

    /// The error of a result that grew past `max_result_rows`.
    pub fn too_many_rows(&self, who: &Principal, max: u64) -> Error {
        Error::Invalid(format!(
            "quota max_result_rows ({max}) of user {} reached ({}): the result has more rows; add a LIMIT or a filter",
            who.user, self.origin
        ))
    }

    /// The error of a result that grew past `max_result_mb`.
    pub fn too_many_bytes(&self, who: &Principal, max_mb: u64) -> Error {
        Error::Invalid(format!(
            "quota max_result_mb ({max_mb}) of user {} reached ({}): the result is larger; select fewer columns, add a LIMIT or a filter",
            who.user, self.origin
        ))
    }

    /// Where `query_memory_mb` comes from, for the memory error of a query past it.
    pub fn memory_origin(&self, who: &Principal) -> String {
        format!(
            "quota query_memory_mb of user {} ({})",
            who.user, self.origin
        )
    }
}

/// What each user is running now and started lately, across reloads of the rules.
#[derive(Debug, Default)]
pub struct Usage {
    users: Mutex<HashMap<String, UserUsage>>,
}

#[derive(Debug, Default)]
struct UserUsage {
    running: usize,
    queued: usize,
    started: VecDeque<Instant>,
}

/// One of a user's queries counted against a quota (running, or waiting for a server slot)
/// until it is dropped.
#[derive(Debug)]
pub struct QuotaPermit {
    usage: Arc<Usage>,
    user: String,
    /// The count it is in.
    count: fn(&mut UserUsage) -> &mut usize,
}

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        let mut users = self.usage.lock();
        if let Some(usage) = users.get_mut(&self.user) {
            let count = (self.count)(usage);
            *count = count.saturating_sub(1);
        }
    }
}

/// The window of `queries_per_minute`.
const MINUTE: Duration = Duration::from_secs(60);

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserUsage>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more query of `who` under `quota`, or refuses it naming the quota.
    pub fn admit(self: &Arc<Self>, who: &Principal, quota: &Quota) -> Result<QuotaPermit> {
        let now = Instant::now();
        let mut users = self.lock();
        let usage = users.entry(who.user.clone()).or_default();
        while usage
            .started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            usage.started.pop_front();
        }
        if let Some(max) = quota.entry.max_concurrent_queries
            && usage.running >= max
        {
            return Err(Error::Busy(format!(
                "quota max_concurrent_queries ({max}) of user {} reached ({}): {} of the user's queries are running; retry when one ends",
                who.user, quota.origin, usage.running
            )));
        }
        if let Some(max) = quota.entry.queries_per_minute
            && usage.started.len() >= max
        {
            let wait = usage.started.front().map_or(MINUTE, |first| {
                MINUTE.saturating_sub(now.duration_since(*first))
            });
            return Err(Error::Busy(format!(
                "quota queries_per_minute ({max}) of user {} reached ({}): retry in {} s",
                who.user,
                quota.origin,
                wait.as_secs() + 1
            )));
        }
        usage.running += 1;
        usage.started.push_back(now);
        Ok(QuotaPermit {
            usage: self.clone(),
            user: who.user.clone(),
            count: |u| &mut u.running,
        })
    }

    /// Counts one of `who`'s queries as waiting for a server slot, or refuses it when
    /// `max_queued_queries` of the user's already wait.
    pub fn queue(self: &Arc<Self>, who: &Principal, quota: &Quota) -> Result<QuotaPermit> {
        let mut users = self.lock();
        let usage = users.entry(who.user.clone()).or_default();
        if let Some(max) = quota.entry.max_queued_queries
            && usage.queued >= max
        {
            return Err(Error::Busy(format!(
                "quota max_queued_queries ({max}) of user {} reached ({}): the server is busy and {} of the user's queries wait for a place; retry when one starts",
                who.user, quota.origin, usage.queued
            )));
        }
        usage.queued += 1;
        Ok(QuotaPermit {
            usage: self.clone(),
            user: who.user.clone(),
            count: |u| &mut u.queued,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::Role;

    fn quota(concurrent: Option<usize>, per_minute: Option<usize>) -> Quota {
        Quota::new(
            QuotaEntry {
                user: None,
                group: None,
                max_concurrent_queries: concurrent,
                max_queued_queries: Some(1),
                queries_per_minute: per_minute,
                query_memory_mb: None,
                max_result_rows: None,
                max_result_mb: None,
                query_timeout: None,
            },
            "access.toml quota 1 (line 1)".to_string(),
        )
        .unwrap()
    }

    #[test]
    fn concurrent_queries_are_counted_until_they_end() {
        let usage = Arc::new(Usage::default());
        let (ana, bo) = (
            Principal::new("ana", Role::Reader),
            Principal::new("bo", Role::Reader),
        );
        let q = quota(Some(2), None);
        let first = usage.admit(&ana, &q).unwrap();
        let _second = usage.admit(&ana, &q).unwrap();
        let refused = usage.admit(&ana, &q).unwrap_err().to_string();
        assert!(
            refused.contains("quota max_concurrent_queries (2) of user ana")
                && refused.contains("retry when one ends"),
            "{refused}"
        );
        // Another user has a count of their own.
        usage.admit(&bo, &q).unwrap();
        drop(first);
        usage.admit(&ana, &q).unwrap();
    }

    #[test]
    fn queries_per_minute_are_counted_whether_they_ended_or_not() {
        let usage = Arc::new(Usage::default());
        let ana = Principal::new("ana", Role::Reader);
        let q = quota(None, Some(3));
        for _ in 0..3 {
            drop(usage.admit(&ana, &q).unwrap());
        }
        let refused = usage.admit(&ana, &q).unwrap_err().to_string();
        assert!(
            refused.contains("quota queries_per_minute (3) of user ana")
                && refused.contains("retry in"),
            "{refused}"
        );
    }

    #[test]
    fn queued_queries_are_counted_per_user_until_they_leave_the_queue() {
        let usage = Arc::new(Usage::default());
        let (ana, bo) = (
            Principal::new("ana", Role::Reader),
            Principal::new("bo", Role::Reader),
        );
        let q = quota(None, None);
        let waiting = usage.queue(&ana, &q).unwrap();
        let refused = usage.queue(&ana, &q).unwrap_err().to_string();
        assert!(
            refused.contains("quota max_queued_queries (1) of user ana")
                && refused.contains("retry when one starts"),
            "{refused}"
        );
        usage.queue(&bo, &q).unwrap();
        drop(waiting);
        usage.queue(&ana, &q).unwrap();
    }
}
