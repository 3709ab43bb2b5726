//! A lake table as a plain DataFusion Parquet scan over one Delta version's files.
//!
//! The table's files, sizes, partition values and per-file statistics (row count, min, max,
//! null count) come from the Delta log; DataFusion's own Parquet `DataSourceExec` reads them.
//! Two reasons to plan it so rather than through deltalake's provider:
//! - **Statistics.** deltalake 1.1's scan passes column statistics only for the columns of the
//!   query's predicate, so join keys have none and DataFusion's join planning guesses (TPC-H Q7
//!   built a hash table from 1.7M rows). Here every column's bounds reach the planner, and each
//!   file's exact bounds reach the Parquet opener, which skips whole files by them, including by
//!   the dynamic filters a hash join pushes into its probe side.
//! - **The cluster.** deltalake's `DeltaScanExec` has no protobuf form, so Ballista cannot send
//!   it to executors; DataFusion's protobuf carries this scan as it is (paths, sizes, partition
//!   values, statistics, projection, limit, predicate), and executors need nothing of Delta.
//!
//! It reads what gamelake writes: Parquet files, partition values and statistics in the log.
//! Tables that use deletion vectors or column mapping (written by another engine) are read by
//! deltalake's provider instead, and refused on a cluster ([`unreadable_feature`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Column, ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, transform_schema_to_view,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DFResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::lake::distinct_counts::{self, DistinctCounts};
use crate::lake::layout::TableLayout;

mod blooms;
mod pruning;
mod stats;
use blooms::TableBlooms;
use pruning::FilesStatistics;
use stats::{file_statistics, table_statistics};

/// What the cluster needs to know of one table version: where its files are, how big, and
/// their partition values. It travels inside the logical plan from the client to the scheduler
/// (as JSON, see [`super::codec`]), so neither needs to read the Delta log again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileList {
    /// The table's root URL (`file:///…/schema/table/` or `s3://bucket/prefix/schema/table/`).
    pub url: Url,
    /// The Delta version the list is from.
    pub version: u64,
    /// Partition columns, in the log's order.
    pub partition_columns: Vec<String>,
    /// The version's data files.
    pub files: Vec<FileEntry>,
    /// Columns whose bloom filters the files hold (the table's `gamelake.bloomFilterColumns`);
    /// the planner skips files by them ([`blooms`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bloom_columns: Vec<String>,
    /// Each column's distinct values as `ANALYZE` last counted them (the table's
    /// `gamelake.distinctCounts`), for the planner's estimates.
    #[serde(default, skip_serializing_if = "DistinctCounts::is_empty")]
    pub distinct_counts: DistinctCounts,
}

/// One data file of a [`FileList`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the table root, not percent-encoded.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Partition values as the log writes them, in `partition_columns` order (None = null).
    pub partition: Vec<Option<String>>,
    /// Rows in the file, when the log's statistics say.
    pub rows: Option<usize>,
    /// The log's statistics of the file as the log holds them (JSON with `minValues`,
    /// `maxValues`, `nullCount`), when it has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
}

impl FileList {
    /// Lists the files of an opened table version. The caller has checked it with
    /// [`unreadable_feature`].
    pub fn of_table(table: &DeltaTable) -> Result<(Self, SchemaRef)> {
        let url = table.table_url().clone();
        let name = url.to_string();
        let state = table.snapshot().map_err(|e| Error::delta(&name, e))?;
        let partition_columns = state.metadata().partition_columns().to_vec();
        let bloom_columns =
            TableLayout::from_properties(state.metadata().configuration()).bloom_filter_columns;
        let distinct_counts = distinct_counts::from_properties(state.metadata().configuration());
        let mut files = Vec::new();
        for file in state.log_data().iter() {
            let mut raw = file.partition_values_map();
            files.push(FileEntry {
                path: file.path().into_owned(),
                size: u64::try_from(file.size()).unwrap_or_default(),
                partition: partition_columns
                    .iter()
                    .map(|c| raw.remove(c).flatten())
                    .collect(),
                rows: file.num_records(),
                stats: file.stats(),
            });
        }
        let list = Self {
            url,
            version: table.version().unwrap_or_default(),
            partition_columns,
            files,
            bloom_columns,
            distinct_counts,
        };
        Ok((list, state.snapshot().arrow_schema()))
    }
}

/// One Delta version of a table, as a file list DataFusion scans directly.
#[derive(Debug)]
pub struct LakeFilesTable {
    /// Where the files are (what the codec sends).
    list: FileList,
    /// Columns in the table's order, partition columns where the table has them.
    schema: SchemaRef,
    /// Non-partition columns first, then partition columns: the order the Parquet scan produces.
    scan_schema: TableSchema,
    /// For each column of `schema`, its index in the scan's order.
    scan_index: Vec<usize>,
    /// The object store all files are in.
    store: ObjectStoreUrl,
    /// The files as DataFusion scans them: full path in the store, size, typed partition values.
    files: Vec<PartitionedFile>,
    /// The version's statistics in the scan's column order: row count (exact when every file's
    /// is known) and each column's bounds over all files (inexact, see [`table_statistics`]).
    statistics: Statistics,
    /// Each file's bounds as the arrays a pruning predicate asks for, kept for the version.
    file_statistics: FilesStatistics,
    /// The bloom columns and each file's filters once read.
    blooms: TableBlooms,
}

impl LakeFilesTable {
    /// Lists a table version's files from the Delta log (check [`unreadable_feature`] first).
    /// Strings and binaries are read as DataFusion's view types unless `plain_strings`.
    pub fn try_new(table: &DeltaTable, plain_strings: bool) -> Result<Self> {
        let (list, schema) = FileList::of_table(table)?;
        let schema = if plain_strings {
            schema
        } else {
            Arc::new(transform_schema_to_view(&schema))
        };
        Self::from_list(list, schema)
    }

    /// Builds the table from its file list and columns (on the scheduler: as the client sent
    /// them).
    pub fn from_list(list: FileList, schema: SchemaRef) -> Result<Self> {
        // A partition value may be null whatever the log says of its column (an overwrite
        // records the writer's non-null columns): partition columns are nullable, in the
        // table's columns and the scan's alike (DataFusion refuses plans whose logical and
        // physical schemas differ, such as an aggregate over the column).
        let schema = Arc::new(Schema::new_with_metadata(
            schema
                .fields()
                .iter()
                .map(|f| {
                    if list.partition_columns.contains(f.name()) {
                        Arc::new(f.as_ref().clone().with_nullable(true))
                    } else {
                        Arc::clone(f)
                    }
                })
                .collect::<Vec<FieldRef>>(),
            schema.metadata().clone(),
        ));
        let (file_fields, partition_fields): (Vec<FieldRef>, Vec<FieldRef>) = schema
            .fields()
            .iter()
            .cloned()
            .partition(|f| !list.partition_columns.contains(f.name()));
        // Partition fields in the order of the log's partitionColumns.
        let partition_fields: Vec<FieldRef> = list
            .partition_columns
            .iter()
            .map(|c| {
                partition_fields
                    .iter()
                    .find(|f| f.name() == c)
                    .cloned()
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "partition column {c} of {} is not among its columns",
                            list.url
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        let scan_order: Vec<&FieldRef> = file_fields.iter().chain(&partition_fields).collect();
        let scan_index = schema
            .fields()
            .iter()
            .map(|f| {
                scan_order
                    .iter()
                    .position(|s| s.name() == f.name())
                    .unwrap_or_default()
            })
            .collect();
        let (store, prefix) = store_and_prefix(&list.url)?;
        let files = list
            .files
            .iter()
            .map(|file| {
                let values = partition_fields
                    .iter()
                    .zip(&file.partition)
                    .map(|(field, raw)| partition_value(raw.clone(), field))
                    .collect::<Result<Vec<_>>>()?;
                let stats = file_statistics(file, &file_fields, &values);
                let mut scanned = PartitionedFile::new(format!("{prefix}{}", file.path), file.size)
                    .with_partition_values(values);
                scanned.statistics = Some(Arc::new(stats));
                Ok(scanned)
            })
            .collect::<Result<Vec<_>>>()?;
        let scan_schema = TableSchema::builder(Arc::new(Schema::new(file_fields)))
            .with_table_partition_cols(partition_fields)
            .build();
        let statistics =
            table_statistics(&files, scan_schema.table_schema(), &list.distinct_counts)?;
        let file_statistics = FilesStatistics::new(&files, scan_schema.table_schema());
        let blooms = TableBlooms::new(list.bloom_columns.clone(), files.len());
        Ok(Self {
            file_statistics,
            blooms,
            list,
            schema,
            scan_schema,
            scan_index,
            store,
            files,
            statistics,
        })
    }

    /// The file list this table was built from.
    pub fn file_list(&self) -> &FileList {
        &self.list
    }
}

/// The Delta feature of a table version this scan cannot read, if it uses one: column mapping
/// (Parquet columns named apart from the table's) or deletion vectors (rows deleted outside the
/// files). gamelake writes neither; other engines may.
pub fn unreadable_feature(table: &DeltaTable) -> Result<Option<&'static str>> {
    let state = table
        .snapshot()
        .map_err(|e| Error::delta(table.table_url().as_str(), e))?;
    if let Some(mode) = state
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        && mode != "none"
    {
        return Ok(Some("column mapping"));
    }
    if state
        .log_data()
        .iter()
        .any(|file| file.deletion_vector_descriptor().is_some())
    {
        return Ok(Some("deletion vectors"));
    }
    Ok(None)
}

/// The object store URL (`file://` or `s3://bucket`) and the path prefix of the table's files
/// inside it (ending in `/`).
fn store_and_prefix(table: &Url) -> Result<(ObjectStoreUrl, String)> {
    let bad = |reason: String| Error::LakeUrl {
        url: table.to_string(),
        reason,
    };
    let root = match table.host_str() {
        Some(host) if table.scheme() != "file" => format!("{}://{host}", table.scheme()),
        _ => "file://".to_string(),
    };
    let store = ObjectStoreUrl::parse(&root).map_err(|e| bad(e.to_string()))?;
    let path =
        object_store::path::Path::from_url_path(table.path()).map_err(|e| bad(e.to_string()))?;
    let mut prefix = path.to_string();
    if !prefix.is_empty() {
        prefix.push('/');
    }
    Ok((store, prefix))
}

/// A partition value from the log's string form, typed as the column (Delta writes
/// `__HIVE_DEFAULT_PARTITION__`-free nulls as a missing value).
fn partition_value(raw: Option<String>, field: &Field) -> Result<ScalarValue> {
    match raw {
        None => ScalarValue::try_from(field.data_type()).map_err(Error::from_datafusion),
        Some(text) => ScalarValue::try_from_string(text.clone(), field.data_type()).map_err(|e| {
            Error::Invalid(format!(
                "partition value '{text}' of column {} is not a {}: {e}",
                field.name(),
                field.data_type()
            ))
        }),
    }
}

#[async_trait]
impl TableProvider for LakeFilesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        // The Parquet scan prunes files (partition values), row groups and pages with them;
        // the filter itself stays above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    fn statistics(&self) -> Option<Statistics> {
        // The provider's columns are in the table's order; the statistics in the scan's.
        let mut stats = self.statistics.clone();
        stats.column_statistics = self
            .scan_index
            .iter()
            .map(|i| {
                self.statistics
                    .column_statistics
                    .get(*i)
                    .cloned()
                    .unwrap_or_else(ColumnStatistics::new_unknown)
            })
            .collect();
        Some(stats)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let columns: Vec<usize> = match projection {
            Some(p) => p.iter().map(|i| self.scan_index[*i]).collect(),
            None => self.scan_index.clone(),
        };
        let pruning = self.pruning_predicate(state, filters).unwrap_or_else(|e| {
            tracing::debug!("files of {} not pruned: {e}", self.list.url);
            None
        });
        let mut chosen = self.matching_files(pruning.as_deref());
        if let Some(pruning) = &pruning
            && self.blooms.can_prune(pruning)
            && state
                .config_options()
                .execution
                .parquet
                .bloom_filter_on_read
            && let Ok(store) = state.runtime_env().object_store(&self.store)
        {
            let metadata = state.runtime_env().cache_manager.get_file_metadata_cache();
            let reader = CachedParquetFileReaderFactory::new(store, metadata);
            chosen = self
                .blooms
                .skip_files(&reader, &self.store, pruning, &self.files, chosen)
                .await;
        }
        let all = chosen.len() == self.files.len();
        let files: Vec<PartitionedFile> = chosen
            .into_iter()
            .filter_map(|i| self.files.get(i).cloned())
            .collect();
        if files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        // Read strings as the table's columns say, whatever the session's default.
        let mut options = state.table_options().parquet.clone();
        options.global.schema_force_view_types = self
            .schema
            .fields()
            .iter()
            .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView));
        let format = ParquetFormat::default().with_options(options);
        let source = format.file_source(self.scan_schema.clone());
        let stats = if all {
            self.statistics.clone()
        } else {
            table_statistics(
                &files,
                self.scan_schema.table_schema(),
                &self.list.distinct_counts,
            )
            .map_err(Error::into_datafusion)?
        };
        let groups = file_groups(files, state.config().target_partitions());
        let config = FileScanConfigBuilder::new(self.store.clone(), source)
            .with_file_groups(groups)
            .with_statistics(stats)
            .with_projection_indices(Some(columns))?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

impl LakeFilesTable {
    /// The scan's filters as a predicate over file statistics, `None` when there are none or
    /// none can be judged by statistics.
    fn pruning_predicate(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> DFResult<Option<Arc<PruningPredicate>>> {
        // The filters name the table's columns qualified by how the query named the table;
        // the pruning schema is unqualified.
        let unqualified = filters
            .iter()
            .cloned()
            .map(|filter| {
                filter
                    .transform_up(|e| match e {
                        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(
                            Column::new_unqualified(c.name),
                        ))),
                        other => Ok(Transformed::no(other)),
                    })
                    .data()
            })
            .collect::<DFResult<Vec<_>>>()?;
        let Some(predicate) = conjunction(unqualified) else {
            return Ok(None);
        };
        let schema = self.scan_schema.table_schema();
        let columns = DFSchema::try_from(schema.as_ref().clone())?;
        let predicate = state.create_physical_expr(predicate, &columns)?;
        Ok(PruningPredicateBuilder::new()
            .with_file_schema(schema.clone())
            .build(predicate))
    }

    /// The files (indexes into `files`) that may hold rows matching `pruning`, judged at
    /// planning time by their partition values and the log's bounds (the Parquet opener judges
    /// again, with dynamic filters, and then row groups and pages). Without a predicate, every
    /// file.
    fn matching_files(&self, pruning: Option<&PruningPredicate>) -> Vec<usize> {
        let every = || (0..self.files.len()).collect();
        let Some(pruning) = pruning else {
            return every();
        };
        match pruning.prune(&self.file_statistics) {
            Ok(keep) => keep
                .into_iter()
                .enumerate()
                .filter_map(|(i, keep)| keep.then_some(i))
                .collect(),
            Err(e) => {
                tracing::debug!("files of {} not pruned: {e}", self.list.url);
                every()
            }
        }
    }
}

/// Spreads files over `n` groups, largest first onto the smallest group, so each partition
/// reads about the same number of bytes. (DataFusion splits large files into byte ranges
/// afterwards when the plan wants more partitions.)
fn file_groups(mut files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    let n = n.clamp(1, files.len().max(1));
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n];
    for file in files {
        if let Some(smallest) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            smallest.0 += file.object_meta.size;
            smallest.1.push(file);
        }
    }
    groups
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_prefix_of_local_and_s3_tables() {
        let (store, prefix) =
            store_and_prefix(&Url::parse("file:///tmp/my%20lake/game/events/").unwrap()).unwrap();
        assert_eq!(store.as_str(), "file:///");
        assert_eq!(prefix, "tmp/my lake/game/events/");
        let (store, prefix) =
            store_and_prefix(&Url::parse("s3://bucket/lake/game/events").unwrap()).unwrap();
        assert_eq!(store.as_str(), "s3://bucket/");
        assert_eq!(prefix, "lake/game/events/");
    }

    #[test]
    fn files_are_spread_by_size() {
        let files: Vec<PartitionedFile> = [100, 90, 10, 5, 1]
            .iter()
            .enumerate()
            .map(|(i, size)| PartitionedFile::new(format!("f{i}"), *size))
            .collect();
        let groups = file_groups(files.clone(), 2);
        let bytes: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|f| f.object_meta.size).sum())
            .collect();
        assert_eq!(bytes, vec![105, 101]);
        assert_eq!(file_groups(files[..1].to_vec(), 8).len(), 1);
    }

    #[test]
    fn partition_values_are_typed_and_nulls_kept() {
        let field = Field::new("day", datafusion::arrow::datatypes::DataType::Date32, true);
        let value = partition_value(Some("2024-02-29".into()), &field).unwrap();
        assert_eq!(value.to_string(), "2024-02-29");
        assert!(partition_value(None, &field).unwrap().is_null());
        let err = partition_value(Some("yesterday".into()), &field).unwrap_err();
        assert!(err.to_string().contains("day"), "{err}");
    }
}
