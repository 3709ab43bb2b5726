//! Safe Delta commits on object stores without conditional put (Aliyun OSS, some Ceph and older
//! MinIO), with PostgreSQL as the commit coordinator.
//!
//! A Delta commit is "create `_delta_log/<version>.json` only if absent"; a store that ignores
//! `If-None-Match` lets two writers both create version N, and the second silently replaces the
//! first (a lost commit). Here a commit is instead:
//!
//! 1. **ratified**: its bytes are inserted into `gamelake_commits (table_url, version)` in
//!    PostgreSQL, whose primary key lets exactly one writer have each version (the loser hears
//!    "version exists" and retries on the next one, as with any Delta conflict); a version at or
//!    below one already ratified, or whose file is already in the store, is refused too;
//! 2. **written** to the store (a plain put: the bytes are the ratified ones, so writing them
//!    twice is harmless), with `x-oss-forbid-overwrite: true` on OSS as a second guard;
//! 3. marked **written** in PostgreSQL.
//!
//! A writer that died between 1 and 3 left a ratified version that may be missing from the
//! store. Anyone who next opens the table through gamelake, or asks for its latest version
//! before committing, first writes every ratified-but-unwritten version from the bytes kept in
//! PostgreSQL, oldest first. So there are never two different files for one version (the
//! bytes come from the one ratified row), never a lost commit (a ratified commit is completed,
//! not rolled back), and never a gap (version N+1 can only be ratified once N is completed or
//! already in the store). This is the DynamoDB log store of delta-rs (an entry per version,
//! completed by whoever finds it incomplete) with the commit's bytes kept in the coordinator,
//! as Delta's coordinated commits keep unbackfilled commits; unlike the JDBC catalog bug of
//! Iceberg #18743, a writer that cannot tell whether its ratification landed never assumes it
//! failed: it reads the row back.
//!
//! Written rows older than [`KEEP_WRITTEN`] versions are deleted; the newest row of a table is
//! always kept, so the "not below the newest" rule holds.

use std::sync::Arc;

use bytes::Bytes;
use deltalake::kernel::transaction::TransactionError;
use deltalake::logstore::{
    CommitOrBytes, LogStore, LogStoreConfig, LogStoreRef, commit_uri_from_version,
};
use deltalake::{DeltaResult, DeltaTableError};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use tokio::sync::Mutex;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// How many written versions per table stay in PostgreSQL behind the newest.
pub const KEEP_WRITTEN: i64 = 1000;

/// Environment variable a test sets to `after-ratify` to make a writer abort between the
/// ratification of its commit and the write of the commit file (as `kill -9` there would).
pub const CRASH_POINT_VARIABLE: &str = "GAMELAKE_CRASH_POINT";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS gamelake_commits (
    table_url text NOT NULL,
    version bigint NOT NULL,
    body bytea NOT NULL,
    written boolean NOT NULL DEFAULT false,
    ratified_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_url, version))";

/// Opens a PostgreSQL connection, with TLS as the URL asks. Given by the caller: the PostgreSQL
/// source (a layer above the lake) knows how (`sources::postgres::connector`).
pub type Connect =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Result<Client>> + Send + Sync>;

/// A connection to the PostgreSQL database that ratifies commits, shared by every table of a
/// lake (reconnected when the server closed it).
pub struct CommitCoordinator {
    url: Secret,
    connect: Connect,
    client: Mutex<Option<Arc<Client>>>,
    /// A store rooted at the lake that sends a no-overwrite header (OSS's
    /// `x-oss-forbid-overwrite`), for commit files; `None` elsewhere.
    no_overwrite: Option<Arc<dyn ObjectStore>>,
}

impl std::fmt::Debug for CommitCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitCoordinator")
            .field("url", &crate::secret::redact_url(self.url.expose()))
            .field("no_overwrite_header", &self.no_overwrite.is_some())
            .finish()
    }
}

impl CommitCoordinator {
    /// A coordinator at a PostgreSQL URL (`postgres://user@host/db`); connects on first use.
    /// `no_overwrite`: the lake's [`super::LakeLocation::no_overwrite_store`].
    pub fn new(url: Secret, connect: Connect, no_overwrite: Option<Arc<dyn ObjectStore>>) -> Self {
        Self {
            url,
            connect,
            client: Mutex::new(None),
            no_overwrite,
        }
    }

    /// The store rooted at the lake that guards commit files against overwrite, if the store
    /// has such a header.
    pub fn no_overwrite_store(&self) -> Option<&Arc<dyn ObjectStore>> {
        self.no_overwrite.as_ref()
    }

    /// The shared client, connecting (and creating the commit table) if there is none or the
    /// last one was closed.
    async fn client(&self) -> Result<Arc<Client>> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = (self.connect)(self.url.expose().to_string()).await?;
        if let Err(e) = client.batch_execute(SCHEMA).await {
            // Two first writers may race to create the table; the loser finds it there.
            if !e.as_db_error().is_some_and(|db| {
                db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    || db.code() == &tokio_postgres::error::SqlState::DUPLICATE_TABLE
            }) {
                return Err(self.error("creating gamelake_commits", &e));
            }
        }
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    fn error(&self, doing: &str, err: &tokio_postgres::Error) -> Error {
        let detail = match err.as_db_error() {
            Some(db) => db.message().to_string(),
            None => err.to_string(),
        };
        Error::Unavailable(format!(
            "commit coordinator {}, {doing}: {detail}",
            crate::secret::redact_url(self.url.expose())
        ))
    }

    /// Ratifies `version` of a table for these bytes. `Ok(false)`: another writer has this
    /// version, or a later one.
    async fn ratify(&self, table: &str, version: i64, body: &[u8]) -> Result<bool> {
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO gamelake_commits (table_url, version, body)
                 SELECT $1::text, $2::bigint, $3::bytea
                 WHERE NOT EXISTS (SELECT 1 FROM gamelake_commits WHERE table_url = $1 AND version >= $2)
                 ON CONFLICT DO NOTHING",
                &[&table, &version, &body],
            )
            .await;
        match inserted {
            Ok(n) => Ok(n == 1),
            Err(e) if e.as_db_error().is_none() => {
                // The answer was lost: whether the row is there, and with our bytes, decides.
                let again = self.client().await?;
                let row = again
                    .query_opt(
                        "SELECT body FROM gamelake_commits WHERE table_url = $1 AND version = $2",
                        &[&table, &version],
                    )
                    .await
                    .map_err(|e| self.error("reading back a ratification", &e))?;
                Ok(row.is_some_and(|r| r.get::<_, Vec<u8>>(0) == body))
            }
            Err(e) => Err(self.error("ratifying a commit", &e)),
        }
    }

    /// Ratified versions of a table whose file may not be in the store yet, oldest first.
    async fn unwritten(&self, table: &str) -> Result<Vec<(i64, Bytes)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT version, body FROM gamelake_commits
                 WHERE table_url = $1 AND NOT written ORDER BY version",
                &[&table],
            )
            .await
            .map_err(|e| self.error("reading unwritten commits", &e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), Bytes::from(r.get::<_, Vec<u8>>(1))))
            .collect())
    }

    /// Notes that a version's file is in the store; now and then forgets old written versions.
    async fn mark_written(&self, table: &str, version: i64) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE gamelake_commits SET written = true WHERE table_url = $1 AND version = $2",
                &[&table, &version],
            )
            .await
            .map_err(|e| self.error("marking a commit written", &e))?;
        if version % 100 == 0 {
            client
                .execute(
                    "DELETE FROM gamelake_commits WHERE table_url = $1 AND written AND version < $2",
                    &[&table, &(version - KEEP_WRITTEN)],
                )
                .await
                .map_err(|e| self.error("forgetting old commits", &e))?;
        }
        Ok(())
    }
}

/// The log store of one table when its lake has a commit coordinator: reads, listings and
/// data files go to the store as usual; commits go through [`CommitCoordinator`].
pub struct CoordinatedLogStore {
    inner: LogStoreRef,
    coordinator: Arc<CommitCoordinator>,
    /// The store rooted at the table, for commit files (carries the no-overwrite header).
    commit_store: Arc<dyn ObjectStore>,
    /// The table's URL: its key in the coordinator.
    key: String,
}

impl CoordinatedLogStore {
    /// Wraps the log store delta-rs built for a table.
    pub fn new(
        inner: LogStoreRef,
        coordinator: Arc<CommitCoordinator>,
        commit_store: Arc<dyn ObjectStore>,
    ) -> Self {
        let key = inner.root_url().to_string();
        Self {
            inner,
            coordinator,
            commit_store,
            key,
        }
    }

    /// Writes every ratified version whose file may be missing, oldest first.
    pub async fn complete_unwritten(&self) -> Result<()> {
        for (version, body) in self.coordinator.unwritten(&self.key).await? {
            self.write_file(version, body).await?;
            self.coordinator.mark_written(&self.key, version).await?;
        }
        Ok(())
    }

    /// Puts a ratified commit file. A store that refuses (the no-overwrite header) is fine if
    /// the file there holds these very bytes: another writer completed the version first.
    async fn write_file(&self, version: i64, body: Bytes) -> Result<()> {
        let path = commit_path(version)?;
        let options = PutOptions::from(PutMode::Overwrite);
        let Err(err) = self
            .commit_store
            .put_opts(&path, body.clone().into(), options)
            .await
        else {
            return Ok(());
        };
        let there = match self.inner.object_store(None).get(&path).await {
            Ok(found) => found.bytes().await?,
            Err(_) => return Err(err.into()),
        };
        if there == body {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{}: version {version} was written by a writer that does not use the commit coordinator ({err}); every writer of this lake must set the same commit_coordinator",
            self.key
        )))
    }

    /// Ratifies and writes one version. Unwritten versions are not completed here: delta-rs asks
    /// [`LogStore::get_latest_version`] (which completes them) before every attempt, and a
    /// version at or below an unwritten one is refused by the ratification, so the retry that
    /// follows completes it.
    async fn commit(&self, version: i64, body: Bytes) -> Result<bool> {
        let path = commit_path(version)?;
        // A version written before the coordinator was set (or by a writer without it).
        if self.inner.object_store(None).head(&path).await.is_ok() {
            return Ok(false);
        }
        if !self.coordinator.ratify(&self.key, version, &body).await? {
            return Ok(false);
        }
        if std::env::var(CRASH_POINT_VARIABLE).as_deref() == Ok("after-ratify") {
            // A test's kill -9 at the worst moment: ratified, not written.
            std::process::abort();
        }
        self.write_file(version, body).await?;
        self.coordinator.mark_written(&self.key, version).await?;
        Ok(true)
    }
}

/// `_delta_log/<version>.json` (versions are `bigint` in PostgreSQL, `u64` in Delta).
fn commit_path(version: i64) -> Result<object_store::path::Path> {
    let version = u64::try_from(version).map_err(|_| {
        Error::Invalid(format!(
            "negative commit version {version} in gamelake_commits"
        ))
    })?;
    Ok(commit_uri_from_version(Some(version)))
}

fn transaction_error(err: Error) -> TransactionError {
    TransactionError::LogStoreError {
        msg: err.to_string(),
        source: Box::new(err),
    }
}

fn delta_error(err: Error) -> DeltaTableError {
    DeltaTableError::Generic(err.to_string())
}

#[async_trait::async_trait]
impl LogStore for CoordinatedLogStore {
    fn name(&self) -> String {
        "GamelakeCoordinatedLogStore".into()
    }

    async fn read_commit_entry(&self, version: u64) -> DeltaResult<Option<Bytes>> {
        self.inner.read_commit_entry(version).await
    }

    async fn write_commit_entry(
        &self,
        version: u64,
        commit_or_bytes: CommitOrBytes,
        _operation_id: Uuid,
    ) -> std::result::Result<(), TransactionError> {
        let body = match &commit_or_bytes {
            CommitOrBytes::LogBytes(bytes) => bytes.clone(),
            CommitOrBytes::TmpCommit(tmp) => {
                self.inner
                    .object_store(None)
                    .get(tmp)
                    .await?
                    .bytes()
                    .await?
            }
        };
        let version_i64 = i64::try_from(version).map_err(|_| {
            transaction_error(Error::Invalid(format!("version {version} is too large")))
        })?;
        let won = self
            .commit(version_i64, body)
            .await
            .map_err(transaction_error)?;
        if !won {
            // delta-rs retries on the next version with the same temporary file.
            return Err(TransactionError::VersionAlreadyExists(version));
        }
        if let CommitOrBytes::TmpCommit(tmp) = &commit_or_bytes {
            // The bytes are in PostgreSQL and the log now; nobody needs the temporary file.
            let _ = self.inner.object_store(None).delete(tmp).await;
        }
        Ok(())
    }

    async fn abort_commit_entry(
        &self,
        _version: u64,
        commit_or_bytes: CommitOrBytes,
        _operation_id: Uuid,
    ) -> std::result::Result<(), TransactionError> {
        if let CommitOrBytes::TmpCommit(tmp) = commit_or_bytes {
            let _ = self.inner.object_store(None).delete(&tmp).await;
        }
        Ok(())
    }

    async fn get_latest_version(&self, start_version: u64) -> DeltaResult<u64> {
        self.complete_unwritten().await.map_err(delta_error)?;
        self.inner.get_latest_version(start_version).await
    }

    fn object_store(&self, operation_id: Option<Uuid>) -> Arc<dyn ObjectStore> {
        self.inner.object_store(operation_id)
    }

    fn root_object_store(&self, operation_id: Option<Uuid>) -> Arc<dyn ObjectStore> {
        self.inner.root_object_store(operation_id)
    }

    fn config(&self) -> &LogStoreConfig {
        self.inner.config()
    }
}
