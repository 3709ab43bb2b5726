//! The lake: a storage URL holding Delta tables at `<lake>/<schema>/<table>/`.
//!
//! This module knows storage and Delta; it knows nothing of SQL sessions or pipelines.

pub mod coordinator;
pub mod delta_log;
pub mod distinct_counts;
pub mod history;
pub mod layout;
mod location;
pub mod maintenance;
pub mod replicate;
pub mod role;
mod table_ref;
pub mod verify;
pub mod write;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use tokio::sync::OnceCell;

pub use location::LakeLocation;
pub use table_ref::{REJECTED, TableRef, is_table_folder, is_visible_folder};

use crate::error::{Error, Result};

/// Which state of a table to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableVersion {
    /// The newest committed version.
    Latest,
    /// A specific version number.
    Version(u64),
    /// The version that was current at this instant.
    AsOf(DateTime<Utc>),
}

impl TableVersion {
    /// Parses an instant as time travel takes it: RFC 3339 (`2026-11-24T08:00:00Z`) or a
    /// date (`2026-11-24`, its midnight UTC).
    pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
        if let Ok(ts) = DateTime::parse_from_rfc3339(text) {
            return Some(ts.with_timezone(&Utc));
        }
        let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        Some(day.and_hms_opt(0, 0, 0)?.and_utc())
    }
}

/// A handle on the lake: its location and an object store rooted at it.
#[derive(Debug)]
pub struct Lake {
    location: LakeLocation,
    store: Arc<dyn ObjectStore>,
    commits_checked: OnceCell<()>,
    coordinator: Option<Arc<coordinator::CommitCoordinator>>,
}

impl Lake {
    /// Opens the lake at a location (`./lake`, `/abs/path`, `s3://bucket/prefix`). Does no I/O
    /// against remote stores; call [`Lake::check_reachable`] to find out early.
    pub fn open(location: &str) -> Result<Self> {
        Self::at(LakeLocation::parse(location)?)
    }

    /// Opens the lake at a location with storage options that take precedence over the
    /// environment's `AWS_*` (a second region's endpoint and keys).
    pub fn open_with_options(
        location: &str,
        options: std::collections::HashMap<String, String>,
    ) -> Result<Self> {
        Self::at(LakeLocation::parse_with_options(location, options)?)
    }

    /// Opens the lake at a parsed location (e.g. with explicit storage options).
    pub fn at(location: LakeLocation) -> Result<Self> {
        let store = location.object_store()?;
        Ok(Self {
            location,
            store,
            commits_checked: OnceCell::new(),
            coordinator: None,
        })
    }

    /// Ratifies every commit of this lake in PostgreSQL first (see [`coordinator`]): safe
    /// commits on stores that do not honour `If-None-Match` (Aliyun OSS). Every writer of the
    /// lake must use the same coordinator. `connect` opens the PostgreSQL connection
    /// (`sources::postgres::connector()`).
    pub fn with_commit_coordinator(
        mut self,
        url: crate::secret::Secret,
        connect: coordinator::Connect,
    ) -> Result<Self> {
        let no_overwrite = self.location.no_overwrite_store()?;
        self.coordinator = Some(Arc::new(coordinator::CommitCoordinator::new(
            url,
            connect,
            no_overwrite,
        )));
        Ok(self)
    }

    /// A table handle, not loaded, whose commits go through the coordinator if there is one.
    async fn delta_table(&self, table: &TableRef, url: url::Url) -> Result<DeltaTable> {
        let builder = DeltaTableBuilder::from_url(url)
            .map_err(|e| Error::delta(table.to_string(), e))?
            .with_storage_options(self.location.storage_options().clone());
        let Some(coordinator) = &self.coordinator else {
            return builder
                .build()
                .map_err(|e| Error::delta(table.to_string(), e));
        };
        let inner = builder
            .build_storage()
            .map_err(|e| Error::delta(table.to_string(), e))?;
        let commit_store: Arc<dyn ObjectStore> = match coordinator.no_overwrite_store() {
            Some(lake_root) => Arc::new(object_store::prefix::PrefixStore::new(
                lake_root.clone(),
                table.folder().trim_end_matches('/').to_string(),
            )),
            None => inner.object_store(None),
        };
        let store = coordinator::CoordinatedLogStore::new(inner, coordinator.clone(), commit_store);
        // A writer that died between ratifying and writing its commit: complete it before
        // reading. A reader goes on without (it sees the version before) if PostgreSQL is
        // down; a writer completes it before committing anyway.
        if let Err(e) = store.complete_unwritten().await {
            tracing::warn!("{table}: unwritten commits not completed: {e}");
        }
        Ok(DeltaTable::new(Arc::new(store)))
    }

    /// The lake's location.
    pub fn location(&self) -> &LakeLocation {
        &self.location
    }

    /// The object store rooted at the lake root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The URL of a table's folder.
    pub fn table_url(&self, table: &TableRef) -> Result<url::Url> {
        self.location.join(&table.folder())
    }

    /// Lists the lake root once, turning any failure into an error that names the URL and the
    /// settings to check.
    pub async fn check_reachable(&self) -> Result<()> {
        self.store
            .list_with_delimiter(None)
            .await
            .map(|_| ())
            .map_err(|e| self.location.unreachable(&e))
    }

    /// Schemas: visible folders directly under the root.
    pub async fn schemas(&self) -> Result<Vec<String>> {
        self.child_folders(None, is_visible_folder).await
    }

    /// Tables of a schema: its visible sub-folders that hold a `_delta_log/`.
    pub async fn tables(&self, schema: &str) -> Result<Vec<String>> {
        let candidates = self
            .child_folders(Some(&Path::from(schema)), is_table_folder)
            .await?;
        let checks = futures::stream::iter(candidates)
            .map(|name| async move {
                let table = TableRef::new(schema, name.as_str())?;
                Ok::<_, Error>(self.is_table(&table).await?.then_some(name))
            })
            .buffered(16);
        let mut tables: Vec<String> = checks
            .try_filter_map(|t| async move { Ok(t) })
            .try_collect()
            .await?;
        tables.sort();
        Ok(tables)
    }

    /// Folder names directly under `parent` (the root when `None`) that pass `keep`, sorted.
    async fn child_folders(
        &self,
        parent: Option<&Path>,
        keep: fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let listing = self
            .store
            .list_with_delimiter(parent)
            .await
            .map_err(|e| self.location.unreachable(&e))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| keep(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// A table's current columns, or None if it does not exist yet.
    pub async fn table_schema(
        &self,
        table: &TableRef,
    ) -> Result<Option<datafusion::arrow::datatypes::SchemaRef>> {
        if !self.is_table(table).await? {
            return Ok(None);
        }
        let dt = self.open_table(table, &TableVersion::Latest).await?;
        let snapshot = dt
            .snapshot()
            .map_err(|e| Error::delta(table.to_string(), e))?;
        Ok(Some(snapshot.snapshot().arrow_schema()))
    }

    /// Every table of every schema, in name order.
    pub async fn all_tables(&self) -> Result<Vec<TableRef>> {
        let mut all = Vec::new();
        for schema in self.schemas().await? {
            for name in self.tables(&schema).await? {
                all.push(TableRef::new(schema.as_str(), name)?);
            }
        }
        Ok(all)
    }

    /// Whether a table's folder holds a Delta log. The first entry answers: a log keeps a
    /// month of commits (tens of thousands of files for a table written every few seconds), and
    /// listing them all for every table, as each statement's name refresh did, cost a request
    /// per thousand files on S3.
    pub async fn is_table(&self, table: &TableRef) -> Result<bool> {
        let log = Path::from(format!("{}_delta_log", table.folder()));
        let first = self
            .store
            .list(Some(&log))
            .next()
            .await
            .transpose()
            .map_err(|e| self.location.unreachable(&e))?;
        Ok(first.is_some())
    }

    /// Whether anything at all is stored under a table's folder.
    pub async fn folder_exists(&self, table: &TableRef) -> Result<bool> {
        let prefix = Path::from(table.folder());
        let mut listing = self.store.list(Some(&prefix));
        Ok(listing.next().await.transpose()?.is_some())
    }

    /// Opens a Delta table at a version. A missing table is [`Error::TableNotFound`]; a folder
    /// without a Delta log is [`Error::NotADeltaTable`].
    pub async fn open_table(&self, table: &TableRef, version: &TableVersion) -> Result<DeltaTable> {
        let url = self.table_url(table)?;
        if !self.is_table(table).await? {
            return Err(if self.folder_exists(table).await? {
                Error::NotADeltaTable {
                    name: table.to_string(),
                    url: url.to_string(),
                }
            } else {
                Error::TableNotFound {
                    name: table.to_string(),
                    suggestion: String::new(),
                }
            });
        }
        let mut loaded = self.delta_table(table, url).await?;
        match version {
            TableVersion::Latest => loaded.load().await,
            TableVersion::Version(v) => loaded.load_version(*v).await,
            TableVersion::AsOf(ts) => loaded.load_with_datetime(*ts).await,
        }
        .map_err(|e| Error::delta(table.to_string(), e))?;
        if let TableVersion::AsOf(instant) = version {
            // delta-rs answers an instant before the first commit with version 0; a reader
            // asking for the table as it was then must hear that it did not exist.
            let commits = history::read_history(&loaded, &table.to_string(), Some(1)).await?;
            if let Some(first) = commits.first().and_then(|c| c.timestamp_ms)
                && first > instant.timestamp_millis()
                && loaded.version() == Some(0)
            {
                let created = chrono::DateTime::from_timestamp_millis(first).unwrap_or_default();
                return Err(Error::TableName {
                    name: format!("{table}@{}", instant.to_rfc3339()),
                    reason: format!(
                        "the table did not exist yet; its first version was committed at {}",
                        created.to_rfc3339()
                    ),
                });
            }
        }
        Ok(loaded)
    }

    /// A handle on a table location that may not hold a table yet (for creating one).
    pub async fn table_for_write(&self, table: &TableRef) -> Result<DeltaTable> {
        let url = self.table_url(table)?;
        if let Ok(path) = url.to_file_path() {
            // delta-rs wants a local table folder to exist before the first commit.
            std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        let mut dt = self.delta_table(table, url).await?;
        if self.is_table(table).await? {
            dt.load()
                .await
                .map_err(|e| Error::delta(table.to_string(), e))?;
        }
        Ok(dt)
    }

    /// Deletes a table: first its log (so readers stop seeing it at once), then its files.
    pub async fn drop_table(&self, table: &TableRef) -> Result<()> {
        let log = Path::from(format!("{}_delta_log", table.folder()));
        self.delete_prefix(&log).await?;
        self.delete_prefix(&Path::from(table.folder())).await?;
        self.remove_local_folder(table)
    }

    /// On a local lake, removes a table's (now empty) folder tree; object stores have no folders.
    pub fn remove_local_folder(&self, table: &TableRef) -> Result<()> {
        if let Ok(path) = self.table_url(table)?.to_file_path()
            && path.exists()
        {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// Saves a view definition (SQL text) under `_views/<schema>/<name>.sql`.
    pub async fn save_view(&self, view: &TableRef, sql: &str) -> Result<()> {
        let path = Path::from(format!("_views/{}/{}.sql", view.schema, view.table));
        self.store.put(&path, sql.to_string().into()).await?;
        Ok(())
    }

    /// Every saved view and its SQL.
    pub async fn saved_views(&self) -> Result<Vec<(TableRef, String)>> {
        let mut views = Vec::new();
        let listing: Vec<_> = self
            .store
            .list(Some(&Path::from("_views")))
            .try_collect()
            .await
            .map_err(|e| self.location.unreachable(&e))?;
        for meta in listing {
            let text = meta.location.to_string();
            let Some(rest) = text
                .strip_prefix("_views/")
                .and_then(|r| r.strip_suffix(".sql"))
            else {
                continue;
            };
            let Some((schema, name)) = rest.split_once('/') else {
                continue;
            };
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            views.push((
                TableRef::new(schema, name)?,
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        Ok(views)
    }

    /// Deletes every object under a prefix.
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<()> {
        let locations = self.store.list(Some(prefix)).map_ok(|m| m.location).boxed();
        self.store
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Writes and deletes a probe object, so a read-only lake is reported before any work.
    pub async fn check_writable(&self) -> Result<()> {
        let probe = Path::from(format!("_gamelake/write-probe-{}", uuid::Uuid::new_v4()));
        self.store
            .put(&probe, "probe".into())
            .await
            .map_err(|e| Error::LakeUnreachable {
                url: self.location.url().to_string(),
                message: format!("not writable: {e}"),
                hint: "check the folder's permissions (or the S3 credentials' write access), or choose another --lake".into(),
            })?;
        let _ = self.store.delete(&probe).await;
        Ok(())
    }

    /// Before each write: refuses a fenced lake ([`role`]), and makes sure the store rejects a
    /// second create of the same object (conditional put), which Delta commits rely on to never
    /// overwrite each other. Local folders always do; S3-compatible servers are probed once per
    /// process; a lake with a commit coordinator does not need it.
    pub async fn ensure_safe_commits(&self) -> Result<()> {
        self.check_not_fenced().await?;
        if self.location.is_local()
            || self.coordinator.is_some()
            || env_flag("GAMELAKE_ALLOW_UNSAFE_WRITES")
        {
            return Ok(());
        }
        self.commits_checked
            .get_or_try_init(|| async {
                let probe = Path::from(format!("_gamelake/commit-probe/{}", uuid::Uuid::new_v4()));
                let create = PutOptions::from(PutMode::Create);
                self.store
                    .put_opts(&probe, "probe".into(), create.clone())
                    .await
                    .map_err(|e| self.location.unreachable(&e))?;
                let second = self.store.put_opts(&probe, "probe".into(), create).await;
                let _ = self.store.delete(&probe).await;
                match second {
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                    Ok(_) => Err(Error::UnsafeCommits {
                        url: self.location.url().to_string(),
                    }),
                    Err(e) => Err(self.location.unreachable(&e)),
                }
            })
            .await
            .map(|_| ())
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}
