//! Scheduled runs inside `gamelake serve`: reports and pipelines with a `schedule` run at their
//! due times ([`crate::timing`]), each slot once across restarts and replicas (records in the lake,
//! [`state`]), by the loop in [`runner`], on a [`clock`] tests can move by hand; pipelines with
//! `follow` run without end beside them ([`follow`]), and so do replicas ([`replica`]).

pub mod clock;
pub mod follow;
pub mod job;
pub mod metrics;
pub mod replica;
pub mod runner;
pub mod state;

pub use clock::{Clock, ManualClock, SystemClock};
pub use follow::{Endless, Follower};
pub use job::{Job, Loaded, load_jobs};
pub use metrics::Metrics;
pub use replica::ReplicaFollower;
pub use runner::JobRunner;
pub use state::{Outcome, Record, Records};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::lake::replicate::ReplicaConfig;
use crate::query::Session;

/// Loads the scheduled jobs of `reports` and `pipelines` (folders; either may be absent), and
/// the `replicas` to follow, into the runner of `gamelake serve --schedule`, which records runs
/// in `<lake>/_schedule/`. Nothing to run is an error that says where it looked.
pub fn prepare(
    session: &Session,
    reports: Option<&Path>,
    pipelines: Option<&Path>,
    replicas: &[ReplicaConfig],
    heartbeat: Duration,
) -> Result<JobRunner> {
    let Loaded {
        jobs,
        mut followers,
    } = load_jobs(session, reports, pipelines)?;
    for replica in replicas {
        let replicator = replica.replicator(session.lake().clone())?;
        followers.push(Arc::new(ReplicaFollower::new(
            format!("replica/{}", replica.name),
            replicator,
            replica.interval.unwrap_or(Duration::from_secs(1)),
        )));
    }
    if jobs.is_empty() && followers.is_empty() {
        let shown = |dir: Option<&Path>, none: &str| {
            dir.map_or(none.to_string(), |d| d.display().to_string())
        };
        return Err(Error::Invalid(format!(
            "--schedule: no report or pipeline has a schedule or follow (looked in {} and {}), and the config has no [[replicas]]; add schedule = \"0 8 * * *\" to one, or give --reports/--pipelines",
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
