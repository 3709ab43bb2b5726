//! Commit-consistent replication of a lake's Delta tables into another lake (another region,
//! a backup).
//!
//! For each table, versions are copied in order, in batches: first every data file (and
//! deletion vector) the batch's commits add, then the commit files one by one, then the
//! checkpoints among them. A reader of the replica therefore sees, at every instant, a version
//! whose files are all there. A copy killed at any point resumes from the replica's newest
//! commit: files of the interrupted batch are copied again (an overwrite with the same bytes),
//! commits are created only if absent, and nothing is skipped.
//!
//! The replica must not fall further behind than the source's vacuum retention: a file removed
//! and vacuumed on the source before it was copied cannot be copied any more (the error says
//! how to start over from the newest checkpoint).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use tokio::sync::Mutex;

use super::delta_log::{self, FileRef, LogListing, commit_path, in_table, list_log};
use super::{Lake, TableRef};
use crate::error::{Error, Result};

mod config;

pub use config::{ReplicaConfig, parse_globs};

/// Versions read and copied together: their files first, then their commits in order.
const BATCH_VERSIONS: usize = 100;

/// Files copied at once unless told otherwise.
pub const DEFAULT_PARALLEL: usize = 16;

/// Objects up to this size are copied in one request; larger ones are streamed in parts.
const ONE_REQUEST_BYTES: u64 = 16 << 20;

/// What to replicate and how.
#[derive(Clone, Debug)]
pub struct ReplicateOptions {
    /// Tables to copy, as globs over `schema.table` (`game.*`); every table when empty.
    pub tables: Vec<glob::Pattern>,
    /// How many files are copied at once.
    pub parallel: usize,
    /// Advanced by the bytes copied (hidden when nobody watches).
    pub progress: ProgressBar,
}

impl Default for ReplicateOptions {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            parallel: DEFAULT_PARALLEL,
            progress: ProgressBar::hidden(),
        }
    }
}

/// Where one table's replica stands after a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableStatus {
    /// The table.
    pub table: TableRef,
    /// The source's newest version when the round looked.
    pub source_version: Option<u64>,
    /// Versions the replica lacked when the round looked.
    pub behind: u64,
    /// The replica's newest version after the round.
    pub replica_version: Option<u64>,
    /// Versions this round copied.
    pub versions_copied: u64,
    /// Data files this round copied.
    pub files_copied: u64,
    /// Bytes of data files this round copied.
    pub bytes_copied: u64,
    /// The longest time between a version's commit on the source and its commit on the
    /// replica, among the versions this round copied (zero when it copied none).
    pub lag: Duration,
}

/// Copies tables from one lake to another, remembering how far each replica is between rounds.
pub struct Replicator {
    from: Arc<Lake>,
    to: Arc<Lake>,
    options: ReplicateOptions,
    /// When both lakes live in one store: that store and each lake's prefix in it.
    server_side: Option<(Arc<dyn ObjectStore>, Path, Path)>,
    /// The replica's newest version per table, as last seen or written.
    replica_versions: Mutex<HashMap<TableRef, u64>>,
    /// Set once the replica has taken a probe write (the first round checks).
    writable: tokio::sync::OnceCell<()>,
    /// For a replica on a store with a no-overwrite header (OSS): a store that sends it, for
    /// commit files.
    no_overwrite: Option<Arc<dyn ObjectStore>>,
}

impl Replicator {
    /// A replicator from one lake into another. Refuses a lake replicated into itself.
    pub fn new(from: Arc<Lake>, to: Arc<Lake>, options: ReplicateOptions) -> Result<Self> {
        if from.location().url() == to.location().url() {
            return Err(Error::Invalid(format!(
                "--from and --to are the same lake ({}); give the replica its own URL",
                from.location().url()
            )));
        }
        let server_side = if from.location().same_store(to.location()) {
            let (store, from_prefix) = from.location().root_store()?;
            let (_, to_prefix) = to.location().root_store()?;
            Some((store, from_prefix, to_prefix))
        } else {
            None
        };
        let no_overwrite = to.location().no_overwrite_store()?;
        Ok(Self {
            from,
            to,
            options,
            server_side,
            replica_versions: Mutex::new(HashMap::new()),
            writable: tokio::sync::OnceCell::new(),
            no_overwrite,
        })
    }

    /// The source's tables the options select, in name order.
    pub async fn tables(&self) -> Result<Vec<TableRef>> {
        let mut tables = self.from.all_tables().await?;
        let globs = &self.options.tables;
        tables.retain(|t| globs.is_empty() || globs.iter().any(|p| p.matches(&t.to_string())));
        Ok(tables)
    }

    /// One round: every selected table brought up to the source's newest version, and the
    /// saved views copied. Returns each table's status.
    pub async fn round(&self) -> Result<Vec<TableStatus>> {
        self.writable
            .get_or_try_init(|| self.to.check_writable())
            .await?;
        if let Some(crate::lake::role::Role::Primary { epoch, since, .. }) = self.to.role().await? {
            return Err(Error::Invalid(format!(
                "{} was promoted at {} (epoch {epoch}): it takes writes now and is no longer a replica, so replicating into it would overwrite its history; replicate from it instead (--from)",
                self.to.location().url(),
                since.to_rfc3339()
            )));
        }
        let mut statuses = Vec::new();
        for table in self.tables().await? {
            statuses.push(self.table(&table).await?);
        }
        self.copy_views().await?;
        Ok(statuses)
    }

    /// Brings one table's replica up to the source's newest version.
    pub async fn table(&self, table: &TableRef) -> Result<TableStatus> {
        let folder = table.folder();
        let known = self.replica_versions.lock().await.get(table).copied();
        let replica_latest = match known {
            Some(v) => Some(v),
            None => latest_version(&list_log(self.to.store().as_ref(), &folder, None).await?),
        };
        // Listed from the replica's newest version on (included, to see it is still there).
        let source = list_log(
            self.from.store().as_ref(),
            &folder,
            replica_latest.and_then(|v| v.checked_sub(1)),
        )
        .await?;
        if let Some(v) = replica_latest
            && !source.commits.contains_key(&v)
            && !source.checkpoints.contains_key(&v)
            && latest_version(&source).is_none_or(|latest| latest < v)
        {
            return Err(Error::Invalid(format!(
                "{table}: the replica is at version {v}, which the source does not have (was the table dropped and created again?); delete the replica's table folder ({}) and replicate again",
                self.to.table_url(table)?
            )));
        }
        let mut status = TableStatus {
            table: table.clone(),
            source_version: latest_version(&source).max(replica_latest),
            behind: 0,
            replica_version: replica_latest,
            versions_copied: 0,
            files_copied: 0,
            bytes_copied: 0,
            lag: Duration::ZERO,
        };
        let mut next = match replica_latest {
            Some(v) => v + 1,
            None if source.commits.contains_key(&0) => 0,
            None => match source.checkpoints.keys().next_back() {
                Some(&checkpoint) => {
                    self.start_from_checkpoint(table, &source, checkpoint, &mut status)
                        .await?;
                    checkpoint + 1
                }
                None => return Ok(status),
            },
        };
        let pending: Vec<u64> = source.commits.range(next..).map(|(v, _)| *v).collect();
        status.behind = status
            .source_version
            .map_or(0, |v| (v + 1).saturating_sub(next));
        for batch in pending.chunks(BATCH_VERSIONS) {
            if let Some(gap) = (next..).zip(batch).find(|(want, have)| want != *have) {
                return Err(Error::NotFound(format!(
                    "{table}: the source no longer holds version {}'s commit (its log was cleaned up while the replica was behind); delete the replica's table folder ({}) and replicate again: it starts over from the newest checkpoint",
                    gap.0,
                    self.to.table_url(table)?
                )));
            }
            self.copy_batch(table, &source, batch, &mut status).await?;
            next = batch[batch.len() - 1] + 1;
        }
        // The checkpoints this round copied: those of the versions after the replica's old newest.
        let first_copied = replica_latest.map_or(0, |v| v + 1);
        let copied = status.replica_version.and_then(|last| {
            (last >= first_copied)
                .then(|| source.checkpoints.range(first_copied..=last).next_back())
                .flatten()
                .map(|(v, _)| *v)
        });
        self.copy_last_checkpoint(table, &source, copied).await?;
        Ok(status)
    }

    /// Copies the versions of one batch: their files, then their commits in order (each
    /// followed by its checkpoint, if the source wrote one).
    async fn copy_batch(
        &self,
        table: &TableRef,
        source: &LogListing,
        versions: &[u64],
        status: &mut TableStatus,
    ) -> Result<()> {
        let folder = table.folder();
        let table_url = self.from.table_url(table)?;
        // The futures are made first and then polled: a stream of closures borrowing `self`
        // is not provably `Send` for every lifetime (rust-lang/rust#102211), which a spawned
        // follower needs.
        let reads: Vec<_> = versions
            .iter()
            .map(|v| self.read_commit(&folder, *v))
            .collect();
        let commits: Vec<(u64, Bytes)> = futures::stream::iter(reads)
            .buffered(self.options.parallel)
            .try_collect()
            .await?;
        let mut files = Vec::new();
        let mut seen = BTreeSet::new();
        let mut times = Vec::new();
        for (version, bytes) in &commits {
            let what = format!("{table} version {version}");
            let parsed = delta_log::parse_commit(bytes, &table_url, &what)?;
            times.push(parsed.timestamp_ms);
            for file in parsed.added {
                if seen.insert(file.path.clone()) {
                    files.push(file);
                }
            }
        }
        self.copy_files(table, &files, status).await?;
        for ((version, bytes), committed_ms) in commits.into_iter().zip(times) {
            self.create_commit(table, version, bytes).await?;
            if let Some(parts) = source.checkpoints.get(&version) {
                for part in parts {
                    self.copy_object(part, None).await?;
                }
            }
            if let Some(ms) = committed_ms {
                let delay = chrono::Utc::now().timestamp_millis().saturating_sub(ms);
                status.lag = status
                    .lag
                    .max(Duration::from_millis(u64::try_from(delay).unwrap_or(0)));
            }
            status.versions_copied += 1;
            self.reached(table, version, status).await;
        }
        Ok(())
    }

    /// Notes that the replica of `table` holds `version` now (for this round's status and the
    /// next round's listing).
    async fn reached(&self, table: &TableRef, version: u64, status: &mut TableStatus) {
        status.replica_version = Some(version);
        self.replica_versions
            .lock()
            .await
            .insert(table.clone(), version);
    }

    /// An empty replica of a table whose early commits the source has cleaned up: the files
    /// active at the newest checkpoint, then the checkpoint (and its commit, if still there).
    async fn start_from_checkpoint(
        &self,
        table: &TableRef,
        source: &LogListing,
        checkpoint: u64,
        status: &mut TableStatus,
    ) -> Result<()> {
        let files = delta_log::files_at(&self.from, table, checkpoint).await?;
        self.copy_files(table, &files, status).await?;
        for part in source.checkpoints.get(&checkpoint).into_iter().flatten() {
            self.copy_object(part, None).await?;
        }
        if source.commits.contains_key(&checkpoint) {
            let path = commit_path(&table.folder(), checkpoint);
            self.create_commit(table, checkpoint, self.read(&path).await?)
                .await?;
        }
        self.reached(table, checkpoint, status).await;
        Ok(())
    }

    /// Copies data files in parallel, checking each against the size the log gives.
    async fn copy_files(
        &self,
        table: &TableRef,
        files: &[FileRef],
        status: &mut TableStatus,
    ) -> Result<()> {
        let folder = table.folder();
        let copies: Vec<_> = files.iter().map(|f| self.copy_file(&folder, f)).collect();
        let copied: Vec<u64> = futures::stream::iter(copies)
            .buffer_unordered(self.options.parallel)
            .try_collect()
            .await?;
        status.files_copied += copied.len() as u64;
        status.bytes_copied += copied.iter().sum::<u64>();
        Ok(())
    }

    /// Reads one commit file of the source.
    async fn read_commit(&self, folder: &str, version: u64) -> Result<(u64, Bytes)> {
        Ok((version, self.read(&commit_path(folder, version)).await?))
    }

    /// Copies one data file of a table; answers its size.
    async fn copy_file(&self, folder: &str, file: &FileRef) -> Result<u64> {
        self.copy_object(&in_table(folder, &file.path), Some(file))
            .await?;
        self.options.progress.inc(file.size);
        Ok(file.size)
    }

    /// Copies one object to the same path in the replica (server-side when both lakes share a
    /// store). With `expected`, checks its size against the log's. A data file the source no
    /// longer has is fine if an earlier run copied it already.
    async fn copy_object(&self, path: &Path, expected: Option<&FileRef>) -> Result<()> {
        match self.copy_object_once(path, expected).await {
            Err(Error::NotFound(message)) => {
                if let Some(file) = expected
                    && let Ok(meta) = self.to.store().head(path).await
                    && check_size(path, meta.size, file).is_ok()
                {
                    return Ok(());
                }
                Err(Error::NotFound(message))
            }
            other => other,
        }
    }

    /// [`Replicator::copy_object`] without the second look at the replica.
    async fn copy_object_once(&self, path: &Path, expected: Option<&FileRef>) -> Result<()> {
        let missing = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => Error::NotFound(format!(
                "{path} is gone from the source lake {}: a file is vacuumed once no version younger than the retention needs it, and the replica fell further behind than that (or the source is damaged: `gamelake lake verify` tells). Delete the replica's table folder and replicate again to start over from the newest checkpoint",
                self.from.location().url()
            )),
            other => self.from.location().unreachable(&other),
        };
        if let Some((store, from_prefix, to_prefix)) = &self.server_side {
            if let Some(file) = expected {
                let meta = self.from.store().head(path).await.map_err(missing)?;
                check_size(path, meta.size, file)?;
            }
            let source = Path::from_iter(from_prefix.parts().chain(path.parts()));
            let target = Path::from_iter(to_prefix.parts().chain(path.parts()));
            return store
                .copy(&source, &target)
                .await
                .map_err(|e| self.to.location().unreachable(&e));
        }
        let got = self.from.store().get(path).await.map_err(missing)?;
        if let Some(file) = expected {
            check_size(path, got.meta.size, file)?;
        }
        let write_failed = |e: object_store::Error| self.to.location().unreachable(&e);
        if got.meta.size <= ONE_REQUEST_BYTES {
            let bytes = got.bytes().await.map_err(missing)?;
            self.to
                .store()
                .put(path, bytes.into())
                .await
                .map_err(write_failed)?;
            return Ok(());
        }
        let mut writer =
            object_store::buffered::BufWriter::new(Arc::clone(self.to.store()), path.clone());
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(missing)?;
            if let Err(e) = writer.put(chunk).await {
                let _ = writer.abort().await;
                return Err(write_failed(e));
            }
        }
        tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .map_err(|e| Error::Unavailable(format!("writing {path} to the replica: {e}")))
    }

    /// Writes a commit file to the replica if it is not there yet. One already there must hold
    /// the same bytes (a rerun after a kill); different bytes mean something else writes to
    /// the replica. On a store without conditional put but with a no-overwrite header (OSS),
    /// the header refuses the second write instead of `If-None-Match`.
    async fn create_commit(&self, table: &TableRef, version: u64, bytes: Bytes) -> Result<()> {
        let path = commit_path(&table.folder(), version);
        let written = match &self.no_overwrite {
            Some(guarded) => {
                let overwrite = PutOptions::from(PutMode::Overwrite);
                guarded
                    .put_opts(&path, bytes.clone().into(), overwrite)
                    .await
            }
            None => {
                let create = PutOptions::from(PutMode::Create);
                self.to
                    .store()
                    .put_opts(&path, bytes.clone().into(), create)
                    .await
            }
        };
        let refused = match written {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let there = match self.to.store().get(&path).await {
            Ok(found) => found.bytes().await?,
            Err(_) => return Err(self.to.location().unreachable(&refused)),
        };
        if there == bytes {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{table}: the replica's version {version} differs from the source's: something else commits to the replica ({}); a promoted replica is a primary now, and replicating into it again needs a new, empty replica",
            self.to.location().url()
        )))
    }

    /// Copies the source's `_last_checkpoint` when it names the newest checkpoint this round
    /// copied (`copied`): never one the replica lacks, and not again in rounds that copied none.
    async fn copy_last_checkpoint(
        &self,
        table: &TableRef,
        source: &LogListing,
        copied: Option<u64>,
    ) -> Result<()> {
        let (Some(path), Some(copied)) = (&source.last_checkpoint, copied) else {
            return Ok(());
        };
        let bytes = self.read(path).await?;
        let named = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
        if named == Some(copied) {
            self.to.store().put(path, bytes.into()).await.map_err(|e| {
                Error::Unavailable(format!("{table}: writing _last_checkpoint: {e}"))
            })?;
        }
        Ok(())
    }

    /// Copies saved views (`_views/`) that are missing or different in the replica.
    async fn copy_views(&self) -> Result<()> {
        let prefix = Path::from("_views");
        let theirs: HashMap<Path, u64> = self
            .to
            .store()
            .list(Some(&prefix))
            .map_ok(|m| (m.location, m.size))
            .try_collect()
            .await?;
        let ours: Vec<_> = self.from.store().list(Some(&prefix)).try_collect().await?;
        for meta in ours {
            if theirs.get(&meta.location) != Some(&meta.size) {
                self.copy_object(&meta.location, None).await?;
            }
        }
        Ok(())
    }

    /// Reads a whole object from the source.
    async fn read(&self, path: &Path) -> Result<Bytes> {
        let got = self
            .from
            .store()
            .get(path)
            .await
            .map_err(|e| self.from.location().unreachable(&e))?;
        Ok(got.bytes().await?)
    }
}

/// The newest version a log listing holds (commit or checkpoint).
fn latest_version(listing: &LogListing) -> Option<u64> {
    listing
        .latest()
        .max(listing.checkpoints.keys().next_back().copied())
}

/// A source file whose size is not the one the log records is damaged: copying it would
/// hand the replica the same damage.
fn check_size(path: &Path, actual: u64, file: &FileRef) -> Result<()> {
    if file.fits(actual) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{path} has {actual} bytes in the source lake, but its table's log says {}: the source is damaged (`gamelake lake verify` lists what else is); nothing of this version was copied",
            file.size
        )))
    }
}
