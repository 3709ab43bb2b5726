//! Scheduled runs inside `gamelake serve`: reports and pipelines with a `schedule` run at their
//! due times ([`crate::timing`]), each slot once across restarts and replicas (records in the lake,
//! [`state`]), by the loop in [`runner`], on a [`clock`] tests can move by hand; pipelines with
//! `follow` run without end beside them ([`follow`]).

pub mod clock;
pub mod follow;
pub mod job;
pub mod metrics;
pub mod runner;
pub mod state;

pub use clock::{Clock, ManualClock, SystemClock};
pub use follow::Follower;
pub use job::{Job, Loaded, load_jobs};
pub use metrics::Metrics;
pub use runner::JobRunner;
pub use state::{Outcome, Record, Records};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::query::Session;

/// Loads the scheduled jobs of `reports` and `pipelines` (folders; either may be absent) into
/// the runner of `gamelake serve --schedule`, which records runs in `<lake>/_schedule/`. No job
/// with a schedule is an error that says where it looked.
pub fn prepare(
    session: &Session,
    reports: Option<&Path>,
    pipelines: Option<&Path>,
    heartbeat: Duration,
) -> Result<JobRunner> {
    let Loaded { jobs, followers } = load_jobs(session, reports, pipelines)?;
    if jobs.is_empty() && followers.is_empty() {
        let shown = |dir: Option<&Path>, none: &str| {
            dir.map_or(none.to_string(), |d| d.display().to_string())
        };
        return Err(Error::Invalid(format!(
            "--schedule: no report or pipeline has a schedule or follow (looked in {} and {}); add schedule = \"0 8 * * *\" to one, or give --reports/--pipelines",
            shown(reports, "no reports folder"),
            shown(pipelines, "no pipelines folder"),
        )));
    }
    let records = Records::new(session.lake().location().object_store()?, "_schedule");
    let metrics = Arc::new(Metrics::default());
    Ok(
        JobRunner::new(jobs, records, Arc::new(SystemClock), metrics)
            .with_heartbeat(heartbeat)
            .with_followers(followers),
    )
}

/// A folder given on the command line (it must exist), or `default` when there is one.
pub fn folder(given: Option<&Path>, default: &str) -> Result<Option<PathBuf>> {
    match given {
        Some(dir) if !dir.is_dir() => Err(Error::NotFound(format!(
            "{} is not a folder",
            dir.display()
        ))),
        Some(dir) => Ok(Some(dir.to_path_buf())),
        None => Ok(Some(PathBuf::from(default)).filter(|d| d.is_dir())),
    }
}
