//! The one write path: a DataFusion logical plan (or Arrow batches) becomes one Delta commit,
//! laid out for the queries that will read it.
//!
//! Layout (sort order, bloom filters, file size, compression; `super::layout`) is stored in the
//! table's Delta properties under `gamelake.*`, so every later writer — SQL, pipelines,
//! compaction — keeps it.

use std::num::NonZeroU64;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use std::sync::Mutex;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, col};
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::kernel::Transaction;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::create::CreateBuilder;
use deltalake::operations::write::{SchemaMode, WriteBuilder};
use deltalake::protocol::SaveMode;

use super::layout::TableLayout;
use super::{Lake, TableRef};
use crate::error::{Error, Result};

/// What to do with the rows already in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Create the table; fail if it exists.
    Create,
    /// Add rows (creating the table if it does not exist).
    Append,
    /// Replace all rows (and the schema, if it changed).
    Overwrite,
}

/// Options of one write.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Create, append or overwrite.
    pub mode: WriteMode,
    /// Layout for a table this write creates or replaces (`Overwrite`). `None`, and any write
    /// that appends to an existing table, keep the layout the table records.
    pub layout: Option<TableLayout>,
    /// A pipeline position committed atomically with the rows: `(app_id, version)`. If the table
    /// already records this app at this version or later, nothing is written.
    pub transaction: Option<(String, i64)>,
    /// An append may add columns to the table (new columns are nullable; earlier rows read
    /// them as NULL). Without it, an append with other columns fails.
    pub merge_schema: bool,
    /// Let this commit write a log checkpoint when one is due (every 100 versions). Frequent
    /// appenders turn it off and leave checkpoints to maintenance, off their hot path.
    pub checkpoint: bool,
}

impl WriteOptions {
    /// Options for a mode that keep an existing table's layout (the default for a new one), with
    /// no transaction marker.
    pub fn new(mode: WriteMode) -> Self {
        Self {
            mode,
            layout: None,
            transaction: None,
            merge_schema: false,
            checkpoint: true,
        }
    }
}

/// The result of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A new table version was committed.
    Committed {
        /// The version that holds the rows.
        version: u64,
        /// Rows written.
        rows: u64,
    },
    /// The transaction marker shows this write was already committed; nothing was written.
    AlreadyCommitted {
        /// The version the table records for the app.
        recorded: i64,
    },
}

impl std::fmt::Display for WriteOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Committed { version, .. } => write!(f, "committed as table version {version}"),
            Self::AlreadyCommitted { recorded } => write!(
                f,
                "already committed (the table records position {recorded}); nothing written"
            ),
        }
    }
}

/// The version a table records for a pipeline (`app_id`), if any; None too when there is no
/// table yet. Only reads: a missing table's folder is not created.
pub async fn transaction_version(
    lake: &Lake,
    table: &TableRef,
    app_id: &str,
) -> Result<Option<i64>> {
    match lake
        .open_table(table, &crate::lake::TableVersion::Latest)
        .await
    {
        Ok(dt) => recorded_version(&dt, table, app_id).await,
        Err(Error::TableNotFound { .. } | Error::NotADeltaTable { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn recorded_version(dt: &DeltaTable, table: &TableRef, app_id: &str) -> Result<Option<i64>> {
    match dt.snapshot() {
        Ok(state) => state
            .transaction_version(dt.log_store().as_ref(), app_id)
            .await
            .map_err(|e| Error::delta(table.to_string(), e)),
        Err(_) => Ok(None),
    }
}

/// Writes Arrow batches (all with the same schema) to a table in one commit.
pub async fn write_batches(
    lake: &Lake,
    table: &TableRef,
    session: &SessionState,
    batches: Vec<RecordBatch>,
    options: WriteOptions,
) -> Result<WriteOutcome> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Err(Error::Internal(format!(
            "write to {table}: no batches given (an empty write needs a schema; use write_plan)"
        )));
    };
    let mem = MemTable::try_new(schema, vec![batches])?;
    let plan = scan_of("input", Arc::new(mem))?;
    write_plan(lake, table, session, plan, options).await
}

/// Commits the rows of record batch streams (all with one schema, e.g. one per source
/// connection) to a table in one commit, without holding them all in memory (unless the layout
/// sorts them, which DataFusion does with its memory pool).
pub async fn write_streams(
    lake: &Lake,
    table: &TableRef,
    session: &SessionState,
    schema: SchemaRef,
    streams: Vec<SendableRecordBatchStream>,
    options: WriteOptions,
) -> Result<WriteOutcome> {
    let partitions: Vec<Arc<dyn PartitionStream>> = streams
        .into_iter()
        .map(|s| Arc::new(OneShot::new(s)) as Arc<dyn PartitionStream>)
        .collect();
    let source = StreamingTable::try_new(schema, partitions)?;
    let plan = scan_of("input", Arc::new(source))?;
    write_plan(lake, table, session, plan, options).await
}

/// Runs a logical plan and commits its rows to a table: partitioned, sorted within files by the
/// layout's sort columns, zstd with page statistics and bloom filters, in one atomic commit.
/// A failed run commits nothing, so the table stays as it was.
pub async fn write_plan(
    lake: &Lake,
    table: &TableRef,
    session: &SessionState,
    plan: LogicalPlan,
    options: WriteOptions,
) -> Result<WriteOutcome> {
    lake.ensure_safe_commits().await?;
    let dt = lake.table_for_write(table).await?;
    let exists = dt.version().is_some();
    if exists && options.mode == WriteMode::Create {
        return Err(Error::TableExists {
            name: table.to_string(),
        });
    }
    if let Some((app_id, version)) = &options.transaction
        && let Some(recorded) = recorded_version(&dt, table, app_id).await?
        && recorded >= *version
    {
        return Ok(WriteOutcome::AlreadyCommitted { recorded });
    }
    let layout = match &options.layout {
        Some(new) if !exists || options.mode == WriteMode::Overwrite => new.clone(),
        _ if exists => TableLayout::of_table(&dt)?,
        _ => TableLayout::default(),
    };
    check_columns(table, &plan, &layout)?;
    let sorted = sort_for_layout(session, plan, &layout).await?;

    // New tables are created first (their own commit, with the layout in their properties: the
    // write operation would reject non-`delta.*` properties); if the write then fails, the new
    // table is removed again, so a failed CREATE TABLE AS leaves nothing behind.
    let created_new = !exists;
    let dt = if created_new {
        create_empty(&dt, table, sorted.schema().as_arrow(), &layout).await?
    } else {
        dt
    };
    let result = run_write(&dt, table, session, sorted, &layout, &options).await;
    let written = match result {
        Ok(t) => t,
        Err(e) => {
            if created_new {
                let _ = lake.drop_table(table).await;
            }
            return Err(e);
        }
    };
    if exists && options.mode == WriteMode::Overwrite && TableLayout::of_table(&written)? != layout
    {
        record_layout(&written, table, &layout).await?;
    }
    let version = written.version().unwrap_or_default();
    let commits = super::history::read_history(&written, &table.to_string(), Some(1)).await?;
    let rows = commits
        .first()
        .and_then(|c| c.rows_added)
        .unwrap_or_default()
        .max(0) as u64;
    Ok(WriteOutcome::Committed { version, rows })
}

/// Creates an empty table with the input's columns (all nullable, as CREATE TABLE AS makes
/// them in Spark and Trino) and the layout in its properties.
async fn create_empty(
    dt: &DeltaTable,
    table: &TableRef,
    schema: &datafusion::arrow::datatypes::Schema,
    layout: &TableLayout,
) -> Result<DeltaTable> {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let nullable = datafusion::arrow::datatypes::Schema::new(fields);
    let delta_schema: StructType = (&nullable).try_into_kernel().map_err(|e| {
        Error::Unsupported(format!(
            "{table}: a column type has no Delta equivalent: {e}"
        ))
    })?;
    CreateBuilder::new()
        .with_log_store(dt.log_store())
        .with_columns(delta_schema.fields().cloned())
        .with_partition_columns(layout.partition_by.clone())
        .with_configuration(layout.to_properties())
        .with_raise_if_key_not_exists(false)
        .with_table_name(table.to_string())
        .with_save_mode(SaveMode::ErrorIfExists)
        .await
        .map_err(|e| Error::delta(table.to_string(), e))
}

/// The write itself: one commit with the rows (and the transaction marker, if any).
async fn run_write(
    dt: &DeltaTable,
    table: &TableRef,
    session: &SessionState,
    input: LogicalPlan,
    layout: &TableLayout,
    options: &WriteOptions,
) -> Result<DeltaTable> {
    let mut commit = CommitProperties::default().with_create_checkpoint(options.checkpoint);
    if let Some((app_id, version)) = &options.transaction {
        commit = commit.with_application_transaction(Transaction::new(app_id, *version));
    }
    let snapshot = dt
        .snapshot()
        .map_err(|e| Error::delta(table.to_string(), e))?
        .snapshot()
        .clone();
    // One output stream keeps the sort: delta-rs hash-splits several streams across writers,
    // which would interleave runs within a file.
    let mut state = session.clone();
    if !layout.sort_by.is_empty() {
        state.config_mut().options_mut().execution.target_partitions = 1;
    }
    let mut builder = WriteBuilder::new(dt.log_store(), Some(snapshot))
        .with_input_plan(input)
        .with_session_state(Arc::new(state))
        .with_save_mode(match options.mode {
            WriteMode::Overwrite => SaveMode::Overwrite,
            WriteMode::Create | WriteMode::Append => SaveMode::Append,
        })
        .with_writer_properties(layout.writer_properties()?)
        .with_target_file_size(NonZeroU64::new(layout.target_file_size))
        .with_commit_properties(commit);
    if options.mode == WriteMode::Overwrite {
        builder = builder
            .with_schema_mode(SchemaMode::Overwrite)
            .with_partition_columns(layout.partition_by.clone());
    } else if options.merge_schema {
        builder = builder.with_schema_mode(SchemaMode::Merge);
    }
    builder
        .await
        .map_err(|e| Error::delta(table.to_string(), e))
}

/// Records a layout in an existing table's properties (after CREATE OR REPLACE).
async fn record_layout(dt: &DeltaTable, table: &TableRef, layout: &TableLayout) -> Result<()> {
    let props = layout
        .to_properties()
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    dt.clone()
        .set_tbl_properties()
        .with_properties(props)
        .with_raise_if_not_exists(false)
        .await
        .map_err(|e| Error::delta(table.to_string(), e))?;
    Ok(())
}

/// Every layout column must be a column of the input.
fn check_columns(table: &TableRef, plan: &LogicalPlan, layout: &TableLayout) -> Result<()> {
    let schema = plan.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for (what, cols) in [
        ("partition", &layout.partition_by),
        ("sort", &layout.sort_by),
        ("bloom filter", &layout.bloom_filter_columns),
    ] {
        if let Some(missing) = cols.iter().find(|c| !names.contains(&c.as_str())) {
            return Err(Error::Invalid(format!(
                "{table}: {what} column '{missing}' is not among the columns written ({})",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// Sorts by partition columns then sort columns, so each file holds runs ordered by the keys
/// queries filter on (better min/max statistics and page pruning).
///
/// DataFusion drops an ORDER BY below other operators (the writer wraps its input), so the
/// sort runs here, as the top of its own plan, and the writer reads its single sorted stream.
async fn sort_for_layout(
    session: &SessionState,
    plan: LogicalPlan,
    layout: &TableLayout,
) -> Result<LogicalPlan> {
    if layout.sort_by.is_empty() {
        return Ok(plan);
    }
    let keys: Vec<_> = layout
        .partition_by
        .iter()
        .chain(layout.sort_by.iter())
        .map(|c| col(datafusion::common::Column::new_unqualified(c)).sort(true, false))
        .collect();
    let sorted = LogicalPlanBuilder::from(plan).sort(keys)?.build()?;
    let physical = session.create_physical_plan(&sorted).await?;
    let stream = execute_stream(physical, session.task_ctx())?;
    let table = StreamingTable::try_new(stream.schema(), vec![Arc::new(OneShot::new(stream))])?;
    scan_of("sorted_input", Arc::new(table))
}

/// A plan that reads a table provider (batches in memory, streams), for the writer's input.
fn scan_of(
    name: &str,
    provider: Arc<dyn datafusion::catalog::TableProvider>,
) -> Result<LogicalPlan> {
    Ok(LogicalPlanBuilder::scan(name, provider_as_source(provider), None)?.build()?)
}

/// A stream that can be read once, as a table the writer scans.
struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl OneShot {
    fn new(stream: SendableRecordBatchStream) -> Self {
        Self {
            schema: stream.schema(),
            stream: Mutex::new(Some(stream)),
        }
    }
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneShot").finish_non_exhaustive()
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().unwrap_or_else(|p| p.into_inner()).take();
        taken.unwrap_or_else(|| {
            let error = DataFusionError::Internal("sorted write input was read twice".into());
            Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async move { Err(error) }),
            ))
        })
    }
}
