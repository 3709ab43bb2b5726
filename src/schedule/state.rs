//! Each scheduled run is recorded in the lake, under `_schedule/<job>/<slot>/attempt-<n>.json`.
//! An attempt is claimed by creating its file with a conditional put (create only if absent),
//! so of all the processes that see a slot due (restarts, replicas behind a load balancer)
//! exactly one runs it. The winner rewrites its file as it goes: a heartbeat while running,
//! then the outcome. A `running` attempt whose heartbeat stopped (the process died) is taken
//! over by claiming the next attempt number.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Slots kept per job; older slot folders are deleted after each run.
const KEPT_SLOTS: usize = 100;

/// What a run's file says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Claimed and not finished (or its process died: see `heartbeat`).
    Running,
    /// Finished without error.
    Ok,
    /// Finished with an error.
    Failed,
    /// Stopped with its process (`gamelake serve` shut down); the next start runs it again.
    Interrupted,
}

/// One attempt at one slot of one job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The due time this run is for.
    pub slot: DateTime<Utc>,
    /// 1 for the first claim; more when a dead process's run was taken over.
    pub attempt: u32,
    /// The process that claimed it (host and process id).
    pub node: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// Last sign of life of a running attempt.
    pub heartbeat: DateTime<Utc>,
    /// Where it stands.
    pub outcome: Outcome,
    /// Seconds it took, once finished.
    pub seconds: Option<f64>,
    /// What it produced (e.g. the report's page), or its error.
    pub detail: Option<String>,
}

/// The records of every job, in a store (the lake's).
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn ObjectStore>,
    base: String,
}

/// The folder name of a slot: sorts in time order.
fn slot_name(slot: DateTime<Utc>) -> String {
    slot.format("%Y-%m-%dT%H-%M-%SZ").to_string()
}

impl Records {
    /// Records under `base` (e.g. `_schedule`) in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, base: &str) -> Self {
        Self {
            store,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn path(&self, job: &str, slot: DateTime<Utc>, attempt: u32) -> StorePath {
        StorePath::from(format!(
            "{}/{job}/{}/attempt-{attempt}.json",
            self.base,
            slot_name(slot)
        ))
    }

    /// The newest attempt of the newest slot of `job`, if it ever ran.
    pub async fn latest(&self, job: &str) -> Result<Option<Record>> {
        let Some(slot) = self.slots(job).await?.pop() else {
            return Ok(None);
        };
        let listing = self.list(&format!("{job}/{slot}")).await?;
        let newest = listing
            .objects
            .iter()
            .filter_map(|o| {
                let name = o.location.filename()?;
                let n: u32 = name
                    .strip_prefix("attempt-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((n, o.location.clone()))
            })
            .max_by_key(|(n, _)| *n);
        let Some((_, location)) = newest else {
            return Ok(None);
        };
        let bytes = self
            .store
            .get(&location)
            .await
            .map_err(|e| store_error(&location, e))?
            .bytes()
            .await
            .map_err(|e| store_error(&location, e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("schedule record {location}: {e}")))
    }

    /// What is directly under `<base>/<folder>`.
    async fn list(&self, folder: &str) -> Result<object_store::ListResult> {
        let prefix = StorePath::from(format!("{}/{folder}", self.base));
        self.store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| store_error(&prefix, e))
    }

    /// The job's slot folders, oldest first.
    async fn slots(&self, job: &str) -> Result<Vec<String>> {
        let listing = self.list(job).await?;
        let mut slots: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        slots.sort();
        Ok(slots)
    }

    /// Claims an attempt: true if this call created its record (the caller runs it), false if
    /// another process holds it.
    pub async fn claim(&self, job: &str, record: &Record) -> Result<bool> {
        let path = self.path(job, record.slot, record.attempt);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.store.put_opts(&path, payload(record)?, options).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error(&path, e)),
        }
    }

    /// Rewrites a claimed attempt's record (heartbeat, outcome).
    pub async fn update(&self, job: &str, record: &Record) -> Result<()> {
        let path = self.path(job, record.slot, record.attempt);
        self.store
            .put(&path, payload(record)?)
            .await
            .map_err(|e| store_error(&path, e))?;
        Ok(())
    }

    /// Deletes all but the newest slots of `job`.
    pub async fn prune(&self, job: &str) -> Result<()> {
        let slots = self.slots(job).await?;
        let old = slots.len().saturating_sub(KEPT_SLOTS);
        for slot in &slots[..old] {
            for object in self.list(&format!("{job}/{slot}")).await?.objects {
                self.store
                    .delete(&object.location)
                    .await
                    .map_err(|e| store_error(&object.location, e))?;
            }
        }
        Ok(())
    }
}

fn payload(record: &Record) -> Result<PutPayload> {
    serde_json::to_vec_pretty(record)
        .map(PutPayload::from)
        .map_err(|e| Error::Internal(format!("schedule record: {e}")))
}

fn store_error(path: &StorePath, e: object_store::Error) -> Error {
    Error::Unavailable(format!("schedule record {path}: {e}"))
}
