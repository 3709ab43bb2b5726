//! A lake table as the cluster reads it: one Delta version's files, scanned by DataFusion's own
//! Parquet scan.
//!
//! deltalake's provider plans a `DeltaScanExec`, a node with no protobuf form (deltalake 1.1
//! ships no physical codec for it), so its plans cannot travel from Ballista's scheduler to the
//! executors. This provider lists the same files from the Delta log and plans a plain
//! `DataSourceExec` over Parquet, which DataFusion's protobuf carries as it is: file paths,
//! sizes, partition values, projection, limit and the pushed-down predicate. Executors then need
//! nothing of Delta, only the object store.
//!
//! It reads what gamelake writes: Parquet files, partition values in the log. A table that uses
//! deletion vectors or column mapping (written by another engine) is refused with a clear error
//! rather than read wrongly.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DFResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};

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
}

impl FileList {
    /// Lists the files of an opened table version.
    pub fn of_table(table: &DeltaTable) -> Result<(Self, SchemaRef)> {
        let url = table.table_url().clone();
        let name = url.to_string();
        let state = table.snapshot().map_err(|e| Error::delta(&name, e))?;
        let metadata = state.metadata();
        if let Some(mode) = metadata.configuration().get("delta.columnMapping.mode")
            && mode != "none"
        {
            return Err(unsupported(&name, "column mapping"));
        }
        let partition_columns = metadata.partition_columns().to_vec();
        let mut files = Vec::new();
        for file in state.log_data().iter() {
            if file.deletion_vector_descriptor().is_some() {
                return Err(unsupported(&name, "deletion vectors"));
            }
            let mut raw = file.partition_values_map();
            files.push(FileEntry {
                path: file.path().into_owned(),
                size: u64::try_from(file.size()).unwrap_or_default(),
                partition: partition_columns
                    .iter()
                    .map(|c| raw.remove(c).flatten())
                    .collect(),
                rows: file.num_records(),
            });
        }
        let list = Self {
            url,
            version: table.version().unwrap_or_default(),
            partition_columns,
            files,
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
    /// Rows in the version, when every file's statistics say.
    rows: Option<usize>,
}

impl LakeFilesTable {
    /// Opens a table version for the cluster: lists its files from the Delta log.
    pub fn try_new(table: &DeltaTable) -> Result<Self> {
        let (list, schema) = FileList::of_table(table)?;
        Self::from_list(list, schema)
    }

    /// Rebuilds the table from its file list and columns (on the scheduler).
    pub fn from_list(list: FileList, schema: SchemaRef) -> Result<Self> {
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
                        Error::Unsupported(format!(
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
                Ok(
                    PartitionedFile::new(format!("{prefix}{}", file.path), file.size)
                        .with_partition_values(values),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: Option<usize> = list.files.iter().map(|f| f.rows).sum();
        let scan_schema = TableSchema::builder(Arc::new(Schema::new(file_fields)))
            .with_table_partition_cols(
                partition_fields
                    .iter()
                    .map(|f| Arc::new(Field::new(f.name(), f.data_type().clone(), true)))
                    .collect::<Vec<FieldRef>>(),
            )
            .build();
        Ok(Self {
            list,
            schema,
            scan_schema,
            scan_index,
            store,
            files,
            rows,
        })
    }

    /// Statistics over `columns` that know only the row count (from the log), when it is known.
    fn row_statistics(&self, columns: &Schema) -> Statistics {
        let mut stats = Statistics::new_unknown(columns);
        if let Some(rows) = self.rows {
            stats.num_rows = Precision::Exact(rows);
        }
        stats
    }

    /// The file list this table was built from.
    pub fn file_list(&self) -> &FileList {
        &self.list
    }
}

fn unsupported(table: &str, feature: &str) -> Error {
    Error::Unsupported(format!(
        "table {table} uses {feature}, which the cluster cannot read; query it without --cluster"
    ))
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
            Error::Unsupported(format!(
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
        Some(self.row_statistics(&self.schema))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let columns: Vec<usize> = match projection {
            Some(p) => p.iter().map(|i| self.scan_index[*i]).collect(),
            None => self.scan_index.clone(),
        };
        if self.files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(self.scan_schema.clone());
        let groups = file_groups(&self.files, state.config().target_partitions());
        let stats = self.row_statistics(self.scan_schema.table_schema());
        let config = FileScanConfigBuilder::new(self.store.clone(), source)
            .with_file_groups(groups)
            .with_statistics(stats)
            .with_projection_indices(Some(columns))?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

/// Spreads files over `n` groups, largest first onto the smallest group, so each partition
/// reads about the same number of bytes. (DataFusion splits large files into byte ranges
/// afterwards when the plan wants more partitions.)
fn file_groups(files: &[PartitionedFile], n: usize) -> Vec<FileGroup> {
    let n = n.clamp(1, files.len().max(1));
    let mut sorted: Vec<&PartitionedFile> = files.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n];
    for file in sorted {
        if let Some(smallest) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            smallest.0 += file.object_meta.size;
            smallest.1.push(file.clone());
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
        let groups = file_groups(&files, 2);
        let bytes: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|f| f.object_meta.size).sum())
            .collect();
        assert_eq!(bytes, vec![105, 101]);
        assert_eq!(file_groups(&files[..1], 8).len(), 1);
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
