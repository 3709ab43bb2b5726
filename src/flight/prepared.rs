//! Prepared statements' parameters: one row read from a DoPut stream, bounded while it is read
//! (not collected first), and the handles bound to values for clients that keep using the
//! handle they prepared, kept per user, bounded and expiring.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use datafusion::arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use prost::bytes::Bytes;
use tonic::Status;

/// The most bytes of Flight data a DoPut of parameters may send (one row of values).
pub const MAX_PARAMETER_BYTES: usize = 1 << 20;

/// The most bound handles kept per user; binding more forgets that user's oldest.
pub const BOUND_PER_USER: usize = 256;

/// Reads exactly one row of parameter values from a DoPut stream: refused as soon as a second
/// row arrives or more than [`MAX_PARAMETER_BYTES`] were sent, without reading the rest.
#[allow(clippy::result_large_err)]
pub async fn one_row_of_parameters(data: PeekableFlightDataStream) -> Result<RecordBatch, Status> {
    let mut sent = 0usize;
    // The peeked first message carries the schema: read the peekable stream, not its inner.
    let counted = data.map(move |message| {
        let message = message.map_err(FlightError::from)?;
        sent += message.data_header.len() + message.data_body.len() + message.app_metadata.len();
        if sent > MAX_PARAMETER_BYTES {
            return Err(FlightError::ProtocolError(format!(
                "parameters larger than {MAX_PARAMETER_BYTES} bytes"
            )));
        }
        Ok(message)
    });
    let mut batches = FlightRecordBatchStream::new_from_flight_data(counted);
    let mut row: Option<RecordBatch> = None;
    while let Some(batch) = batches
        .try_next()
        .await
        .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?
    {
        let rows = batch.num_rows() + row.as_ref().map_or(0, RecordBatch::num_rows);
        if rows > 1 {
            return Err(Status::invalid_argument(
                "bind exactly one row of parameters per execution",
            ));
        }
        if batch.num_rows() == 1 {
            row = Some(batch);
        }
    }
    row.ok_or_else(|| Status::invalid_argument("bind exactly one row of parameters per execution"))
}

/// One user's bound handles: (the handle prepared, the handle bound to values, when), oldest first.
type UserBound = VecDeque<(Bytes, Bytes, Instant)>;

/// Handles bound to parameter values, per user: at most [`BOUND_PER_USER`] each, each kept as
/// long as a handle is valid.
pub struct Bound {
    ttl: Duration,
    users: Mutex<HashMap<String, UserBound>>,
}

impl Bound {
    /// An empty map whose entries expire after `ttl` (the handles' lifetime).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            users: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserBound>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handle `user` bound to `prepared`, if it has not expired.
    pub fn get(&self, user: &str, prepared: &Bytes) -> Option<Bytes> {
        let users = self.lock();
        let (_, bound, at) = users.get(user)?.iter().find(|(p, _, _)| p == prepared)?;
        (at.elapsed() < self.ttl).then(|| bound.clone())
    }

    /// Binds `prepared` to `bound` for `user`, forgetting expired entries and, past the bound,
    /// the user's oldest.
    pub fn insert(&self, user: &str, prepared: Bytes, bound: Bytes) {
        let mut users = self.lock();
        let entries = users.entry(user.to_string()).or_default();
        entries.retain(|(p, _, at)| *p != prepared && at.elapsed() < self.ttl);
        while entries.len() >= BOUND_PER_USER {
            entries.pop_front();
        }
        entries.push_back((prepared, bound, Instant::now()));
    }

    /// Forgets what `user` bound to `prepared`.
    pub fn remove(&self, user: &str, prepared: &Bytes) {
        if let Some(entries) = self.lock().get_mut(user) {
            entries.retain(|(p, _, _)| p != prepared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_handles_are_per_user_bounded_and_expire() {
        let bound = Bound::new(Duration::from_millis(200));
        let key = |i: usize| Bytes::from(format!("h{i}"));
        for i in 0..BOUND_PER_USER + 10 {
            bound.insert("ana", key(i), key(i + 1000));
        }
        // The oldest ten are forgotten, the rest kept; another user sees none of them.
        assert_eq!(bound.get("ana", &key(0)), None);
        assert_eq!(bound.get("ana", &key(10)), Some(key(1010)));
        assert_eq!(bound.get("bo", &key(10)), None);
        bound.remove("ana", &key(10));
        assert_eq!(bound.get("ana", &key(10)), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(bound.get("ana", &key(11)), None, "expired");
    }
}
