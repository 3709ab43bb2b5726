//! Plans made to describe a query (Flight SQL's GetFlightInfo), kept for the DoGet that
//! redeems its ticket on this process, so that a query is planned once where a client asks
//! for its schema and then its rows. A DoGet on another replica, or after the plan was
//! dropped, plans again from the ticket as before.
//!
//! A kept plan holds the table versions, the access rules and the memory pool of the moment it
//! was made: the query reads what was current when it was described, and is held to the rules
//! in force then. Few are kept, briefly: clients redeem a ticket at once.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datafusion::dataframe::DataFrame;

use super::access::Applied;

/// Plans kept at once; the oldest goes first.
const KEPT: usize = 256;
/// How long a plan waits for its DoGet.
const TTL: Duration = Duration::from_secs(30);

/// A query's plan, with the rules it applied (for the query log).
pub(super) struct Planned {
    /// The planned query.
    pub frame: DataFrame,
    /// The access rules its planning applied.
    pub applied: Applied,
}

/// Plans waiting for their DoGet, by query id (the ticket's, signed, and redeemed only by the
/// user it was issued to).
#[derive(Default)]
pub(super) struct PlannedQueries {
    kept: Mutex<VecDeque<(String, Instant, Planned)>>,
}

impl PlannedQueries {
    /// Keeps the plan of query `id` for its DoGet.
    pub fn keep(&self, id: &str, planned: Planned) {
        let mut kept = self.lock();
        let now = Instant::now();
        kept.retain(|(_, at, _)| now.duration_since(*at) < TTL);
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back((id.to_string(), now, planned));
    }

    /// The plan of query `id`, if it is still kept (once).
    pub fn take(&self, id: &str) -> Option<Planned> {
        let mut kept = self.lock();
        let at = kept.iter().position(|(kept_id, _, _)| kept_id == id)?;
        let (_, when, planned) = kept.remove(at)?;
        (when.elapsed() < TTL).then_some(planned)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Instant, Planned)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    fn planned() -> Planned {
        Planned {
            frame: SessionContext::new().read_empty().unwrap(),
            applied: Applied::default(),
        }
    }

    #[test]
    fn a_plan_is_taken_once_and_the_oldest_go_first() {
        let kept = PlannedQueries::default();
        kept.keep("a", planned());
        assert!(kept.take("b").is_none());
        assert!(kept.take("a").is_some());
        assert!(kept.take("a").is_none(), "taken twice");
        for i in 0..=KEPT {
            kept.keep(&i.to_string(), planned());
        }
        assert!(kept.take("0").is_none(), "more than {KEPT} kept");
        assert!(kept.take(&KEPT.to_string()).is_some());
    }
}
