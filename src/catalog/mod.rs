//! The lake as a DataFusion catalog: every Delta table at `<lake>/<schema>/<table>/` is
//! `schema.table`, with no registration, including tables other tools wrote.
//!
//! DataFusion asks for names synchronously (`SHOW TABLES`, `information_schema`), so names are
//! cached and refreshed by [`LakeCatalog::refresh`] before each statement; table lookups are
//! async and always see the newest commit. Opened tables are kept and updated incrementally, so
//! the Delta log is not replayed from scratch on every query; whether a kept table is still the
//! newest is one look at its next commit file (see [`fresh`]), and a statement planned inside
//! [`within_statement`] looks at each table once.
//!
//! Special names inside a schema (quote them in SQL):
//! - `"orders@v3"`: the table as of version 3;
//! - `"orders@2026-11-24T08:00:00Z"`: the table as of an instant (RFC 3339);
//! - `"orders$history"`: the table's commits, newest first.

pub mod files_table;
mod fresh;
mod names;
pub mod regions;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DFResult};
use deltalake::DeltaTable;

pub use fresh::within_statement;
pub use names::{TableName, suggest_tables};

use crate::error::{Error, Result};
use crate::lake::history::{history_batch, read_history};
use crate::lake::{Lake, TableRef};

/// How a catalog plans its lake tables. Each is a [`files_table::LakeFilesTable`], a DataFusion
/// Parquet scan over the version's files, unless it uses a Delta feature that scan cannot read:
/// then deltalake's provider reads it here, and a cluster refuses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableScan {
    /// Queries run on a Ballista cluster, which can ship only the files scan.
    pub cluster: bool,
    /// Strings and binaries as plain `Utf8`/`Binary` rather than DataFusion's view types
    /// ([`crate::query::QuerySettings::plain_strings`]).
    pub plain_strings: bool,
}

/// The catalog over a lake. Registered as the session's default catalog.
#[derive(Debug)]
pub struct LakeCatalog {
    lake: Arc<Lake>,
    schemas: RwLock<BTreeMap<String, Arc<LakeSchema>>>,
    /// How tables are planned.
    scan: TableScan,
    /// When the names were last listed.
    refreshed: std::sync::Mutex<Option<std::time::Instant>>,
    /// Schemas a protocol attached that are not folders of the lake (`pg_catalog`); they
    /// hide a lake folder of the same name.
    attached: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl LakeCatalog {
    /// A catalog over a lake; call [`LakeCatalog::refresh`] to load the names.
    pub fn new(lake: Arc<Lake>) -> Self {
        Self::with_scan(lake, TableScan::default())
    }

    /// A catalog whose tables are planned as `scan` says.
    pub fn with_scan(lake: Arc<Lake>, scan: TableScan) -> Self {
        Self {
            lake,
            scan,
            schemas: RwLock::new(BTreeMap::new()),
            refreshed: std::sync::Mutex::new(None),
            attached: RwLock::new(BTreeMap::new()),
        }
    }

    /// Attaches a schema that is not a folder of the lake (such as the PostgreSQL protocol's
    /// `pg_catalog`): `name.table` resolves to it in every session over this catalog.
    pub fn attach_schema(&self, name: &str, schema: Arc<dyn SchemaProvider>) {
        let mut attached = self.attached.write().unwrap_or_else(|p| p.into_inner());
        attached.insert(name.to_string(), schema);
    }

    /// How this catalog plans its lake tables.
    pub fn scan(&self) -> TableScan {
        self.scan
    }

    /// The lake this catalog shows.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// Lists the lake again and updates the cached schema and table names.
    pub async fn refresh(&self) -> Result<()> {
        let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for schema in self.lake.schemas().await? {
            let tables = self.lake.tables(&schema).await?;
            found.insert(schema, tables.into_iter().collect());
        }
        let mut schemas = self.schemas.write().unwrap_or_else(|p| p.into_inner());
        for (name, tables) in &found {
            schemas
                .entry(name.clone())
                .or_insert_with(|| Arc::new(LakeSchema::new(self.lake.clone(), name, self.scan)))
                .set_lake_tables(tables.clone());
        }
        for (name, schema) in schemas.iter() {
            if !found.contains_key(name) {
                schema.set_lake_tables(BTreeSet::new());
            }
        }
        *self.refreshed.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        Ok(())
    }

    /// Lists the lake again unless it was listed less than `ttl` ago (a zero `ttl` always
    /// lists). Tables this process creates or drops are noted without a listing either way.
    pub async fn refresh_within(&self, ttl: std::time::Duration) -> Result<()> {
        let fresh = self
            .refreshed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < ttl);
        if fresh {
            return Ok(());
        }
        self.refresh().await
    }

    /// Every table name currently known, as `schema.table`.
    pub fn known_tables(&self) -> Vec<String> {
        let schemas = self.schemas.read().unwrap_or_else(|p| p.into_inner());
        schemas
            .iter()
            .flat_map(|(s, schema)| {
                schema
                    .table_names()
                    .into_iter()
                    .map(move |t| format!("{s}.{t}"))
            })
            .collect()
    }

    /// Tells the catalog a table was created or dropped by this session (no listing needed).
    pub fn note_table(&self, table: &TableRef, exists: bool) {
        let schema = self.schema_entry(&table.schema);
        let mut names = schema
            .lake_tables
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if exists {
            names.insert(table.table.clone());
        } else {
            names.remove(&table.table);
        }
        schema.forget(&table.table);
    }

    fn schema_entry(&self, name: &str) -> Arc<LakeSchema> {
        let mut schemas = self.schemas.write().unwrap_or_else(|p| p.into_inner());
        schemas
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(LakeSchema::new(self.lake.clone(), name, self.scan)))
            .clone()
    }
}

impl CatalogProvider for LakeCatalog {
    fn schema_names(&self) -> Vec<String> {
        let schemas = self.schemas.read().unwrap_or_else(|p| p.into_inner());
        schemas
            .iter()
            .filter(|(_, s)| !s.table_names().is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let attached = self.attached.read().unwrap_or_else(|p| p.into_inner());
        if let Some(schema) = attached.get(name) {
            return Some(schema.clone());
        }
        if !crate::lake::is_visible_folder(name) || name.contains(['/', '.']) {
            return None;
        }
        Some(self.schema_entry(name))
    }

    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> DFResult<Option<Arc<dyn SchemaProvider>>> {
        // A schema is a folder; it appears with its first table.
        Ok(Some(self.schema_entry(name)))
    }
}

/// One schema (folder) of the lake, plus tables registered in this session only (views,
/// external tables) which live in memory.
#[derive(Debug)]
pub struct LakeSchema {
    lake: Arc<Lake>,
    name: String,
    scan: TableScan,
    lake_tables: RwLock<BTreeSet<String>>,
    session_tables: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    open: RwLock<HashMap<String, fresh::OpenTable>>,
    /// The newest version of each table as a files scan (see [`LakeSchema::files_table`]).
    files: RwLock<HashMap<String, Arc<files_table::LakeFilesTable>>>,
}

impl LakeSchema {
    fn new(lake: Arc<Lake>, name: &str, scan: TableScan) -> Self {
        Self {
            lake,
            name: name.to_string(),
            scan,
            lake_tables: RwLock::default(),
            session_tables: RwLock::default(),
            open: RwLock::default(),
            files: RwLock::default(),
        }
    }

    fn set_lake_tables(&self, names: BTreeSet<String>) {
        *self.lake_tables.write().unwrap_or_else(|p| p.into_inner()) = names;
    }

    fn forget(&self, table: &str) {
        self.open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(table);
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(table);
    }

    /// Opens (or updates the cached copy of) the newest version of a table.
    async fn latest(&self, table: &TableRef) -> Result<DeltaTable> {
        let cached = self
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&table.table)
            .cloned();
        let open = match cached {
            Some(open) if open.checked_in_this_statement() => return Ok(open.table),
            Some(open) => match open.refreshed().await {
                Some(open) => open,
                None => {
                    // Dropped, or written again from scratch: its kept scan is of files gone.
                    self.forget(&table.table);
                    fresh::OpenTable::open(&self.lake, table).await?
                }
            },
            None => fresh::OpenTable::open(&self.lake, table).await?,
        };
        let newest = open.table.clone();
        self.open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.table.clone(), open);
        Ok(newest)
    }

    /// The table version as a files scan, or `None` when it uses a Delta feature that scan
    /// cannot read (deltalake's provider reads it then; a cluster refuses it). The newest
    /// version's scan is kept until the table changes: parsing every file's statistics is most
    /// of the work, and a server asks for the same tables all day.
    fn files_table(
        &self,
        name: &str,
        dt: &DeltaTable,
        latest: bool,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let version = dt.version().unwrap_or_default();
        if latest
            && let Some(kept) = self
                .files
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .filter(|t| t.file_list().version == version)
        {
            return Ok(Some(kept.clone()));
        }
        if let Some(feature) = files_table::unreadable_feature(dt)? {
            if !self.scan.cluster {
                return Ok(None);
            }
            return Err(Error::Unsupported(format!(
                "table {} uses {feature}, which the cluster cannot read; query it without --cluster",
                dt.table_url()
            )));
        }
        let table = Arc::new(files_table::LakeFilesTable::try_new(
            dt,
            self.scan.plain_strings,
        )?);
        if latest {
            self.files
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), table.clone());
        }
        Ok(Some(table))
    }

    async fn resolve(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        // Names that cannot be folders (file paths, URLs) are not lake tables; DataFusion's
        // file-path tables get their turn.
        if name.contains(['/', '.', '\\']) {
            return Ok(None);
        }
        let parsed = TableName::parse(name)?;
        let table = TableRef::new(&self.name, &parsed.table)?;
        let result = match &parsed.version {
            None if parsed.history => {
                let dt = self.latest(&table).await?;
                let commits = read_history(&dt, &table.to_string(), None).await?;
                let batch = history_batch(&commits)?;
                let mem = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
                return Ok(Some(Arc::new(mem)));
            }
            None => self.latest(&table).await,
            Some(version) => self.lake.open_table(&table, version).await,
        };
        let dt = match result {
            Ok(dt) => dt,
            Err(Error::TableNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(files) = self.files_table(&table.table, &dt, parsed.version.is_none())? {
            return Ok(Some(files));
        }
        let provider = dt
            .table_provider()
            .with_session(delta_scan_settings())
            .await
            .map_err(Error::from_datafusion)?;
        Ok(Some(provider))
    }
}

/// What deltalake's scans (tables the files scan cannot read) are built with. deltalake reads
/// its scan settings from a session; this one exists only for them. Parquet pushdown is off *in
/// deltalake*: it would hand the scan's filters to the Parquet reader itself, and then
/// DataFusion's own filter pushdown (the query session's `pushdown_filters`) adds the same
/// filters again, so every predicate was evaluated twice per row. deltalake still skips files by
/// their statistics; DataFusion gives the Parquet reader the predicate once.
fn delta_scan_settings() -> Arc<datafusion::execution::SessionState> {
    static SETTINGS: std::sync::OnceLock<Arc<datafusion::execution::SessionState>> =
        std::sync::OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            let mut config = datafusion::prelude::SessionConfig::new();
            let parquet = &mut config.options_mut().execution.parquet;
            parquet.pushdown_filters = false;
            parquet.schema_force_view_types = true;
            Arc::new(
                datafusion::execution::SessionStateBuilder::new()
                    .with_config(config)
                    .build(),
            )
        })
        .clone()
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self
            .lake_tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        names.extend(
            self.session_tables
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
        names.into_iter().collect()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let local = self
            .session_tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        if local.is_some() {
            return Ok(local);
        }
        self.resolve(name).await.map_err(Error::into_datafusion)
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if self.table_exist(&name) {
            return Err(DataFusionError::Plan(format!(
                "table {}.{name} already exists",
                self.name
            )));
        }
        Ok(self
            .session_tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .session_tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.lake_tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
            || self
                .session_tables
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(name)
    }
}

/// Whether a schema is a folder of the lake (not PostgreSQL's, not `information_schema`).
pub fn is_lake_schema(schema: &dyn SchemaProvider) -> bool {
    schema.downcast_ref::<LakeSchema>().is_some()
}

/// Whether a provider is one registered only in this session (a view or external table).
pub fn is_session_table(schema: &dyn SchemaProvider, name: &str) -> bool {
    schema.downcast_ref::<LakeSchema>().is_some_and(|s| {
        s.session_tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    })
}
