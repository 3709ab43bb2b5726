//! Whether a kept table is still the newest version, and how often to ask.
//!
//! A query must see the latest write, so each lookup of a kept table asks the store whether the
//! table moved on. deltalake's `update_incremental` answers by listing the log and building a
//! new snapshot; that is most of a small query's planning (TPC-H Q2 over five tables spent a
//! sixth of its time there). A Delta commit always writes the next numbered JSON file, so two
//! `HEAD` requests, made together, answer the same question: the next commit file is absent
//! (nothing new) and the current one is still the file we read (the table was not dropped and
//! written again). Only when a newer commit exists does deltalake update the table.
//!
//! A statement planned inside [`within_statement`] asks once per table: a lookup finds a table
//! checked since the statement began and takes it as it is, so warming a statement's tables
//! concurrently and DataFusion's own lookups one after another cost one check each.

use std::future::Future;
use std::time::Instant;

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::error::Result;
use crate::lake::{Lake, TableRef, TableVersion};

tokio::task_local! {
    /// When the statement being planned in this task began.
    static STATEMENT_START: Instant;
}

/// Runs a statement's planning so that each lake table is checked for newer commits at most once
/// in it. Every table it reads is at least as new as the moment planning began.
pub async fn within_statement<F: Future>(planning: F) -> F::Output {
    STATEMENT_START.scope(Instant::now(), planning).await
}

/// A table kept open between queries.
#[derive(Clone, Debug)]
pub(super) struct OpenTable {
    /// The table at the newest version seen.
    pub table: DeltaTable,
    /// When the table was last known to be the newest (taken before asking).
    checked: Instant,
    /// Which file the current version's commit is; another file under the same name later
    /// means the table was dropped and written again. `None` when the store could not say.
    commit: Option<CommitFile>,
}

/// What tells two writes of one commit file apart: the store's ETag (a content hash on S3,
/// inode, time and size on a local disk) and the write time. The time alone is not enough: S3
/// reports it in whole seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CommitFile {
    e_tag: Option<String>,
    written: DateTime<Utc>,
}

impl From<ObjectMeta> for CommitFile {
    fn from(meta: ObjectMeta) -> Self {
        Self {
            e_tag: meta.e_tag,
            written: meta.last_modified,
        }
    }
}

impl OpenTable {
    /// Opens the newest version of a table.
    pub async fn open(lake: &Lake, table: &TableRef) -> Result<Self> {
        let checked = Instant::now();
        let table = lake.open_table(table, &TableVersion::Latest).await?;
        let commit = current_commit(&table).await;
        Ok(Self {
            table,
            checked,
            commit,
        })
    }

    /// Whether the table was checked since the statement being planned began.
    pub fn checked_in_this_statement(&self) -> bool {
        STATEMENT_START
            .try_with(|start| self.checked >= *start)
            .unwrap_or(false)
    }

    /// The table brought up to date: as it is when no newer commit exists, updated by deltalake
    /// when one does. `None` when it must be opened anew: its commit file is gone or is another
    /// file now, or the store could not say (opening reports why).
    pub async fn refreshed(mut self) -> Option<Self> {
        let checked = Instant::now();
        let version = self.table.version()?;
        let (current, next) = futures::join!(
            commit_file(&self.table, version),
            commit_file(&self.table, version + 1)
        );
        let current = CommitFile::from(current.ok()?);
        if self.commit.as_ref() != Some(&current) {
            return None;
        }
        match next {
            Err(object_store::Error::NotFound { .. }) => {}
            Ok(next) => {
                self.table.update_incremental(None).await.ok()?;
                // One new commit (the usual case): its file is the one just asked about.
                self.commit = if self.table.version() == Some(version + 1) {
                    Some(CommitFile::from(next))
                } else {
                    current_commit(&self.table).await
                };
            }
            Err(_) => return None,
        }
        self.checked = checked;
        Some(self)
    }
}

/// The commit file of the table's current version, as the store describes it now.
async fn current_commit(table: &DeltaTable) -> Option<CommitFile> {
    let version = table.version()?;
    commit_file(table, version).await.ok().map(CommitFile::from)
}

/// Asks the store about a version's commit file (`_delta_log/<version>.json`).
async fn commit_file(table: &DeltaTable, version: u64) -> object_store::Result<ObjectMeta> {
    let store = table.log_store();
    let path = store.log_path().clone().join(format!("{version:020}.json"));
    store.object_store(None).head(&path).await
}
