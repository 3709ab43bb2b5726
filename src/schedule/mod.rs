//! Scheduled runs inside `gamelake serve`: reports and pipelines with a `schedule` run at their
//! due times ([`timing`]), each slot once across restarts and replicas (records in the lake,
//! [`state`]), by the loop in [`runner`], on a [`clock`] tests can move by hand.

pub mod clock;
pub mod job;
pub mod metrics;
pub mod runner;
pub mod state;
pub mod timing;

pub use clock::{Clock, ManualClock, SystemClock};
pub use job::{Job, load_jobs};
pub use metrics::Metrics;
pub use runner::Scheduler;
pub use state::{Outcome, Record, Records};
pub use timing::{Timing, parse_zone};
