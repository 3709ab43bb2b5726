//! The log's statistics of one table version's files as the arrays a pruning predicate asks
//! for: each column's minimums, maximums and null counts, one entry per file.
//!
//! DataFusion's `PrunableStatistics` builds those arrays from the files' `Statistics` on every
//! call; at 7,300 files (ten years of daily partitions of two tables) that was most of a
//! query's planning, and it grew with the history. Here each array is built once, the first
//! time a query names the column, and kept with the table version (which never changes).
//! A file without a bound is a null in the array (DataFusion's conversion gives up on the whole
//! column then, so one file written without statistics stopped all pruning by that column).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::pruning::{PrunableStatistics, PruningStatistics};
use datafusion::common::stats::Precision;
use datafusion::common::{Column, ColumnStatistics, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;

/// One column's arrays, one entry per file (`None` when no file knows the value).
#[derive(Debug)]
struct ColumnArrays {
    min: Option<ArrayRef>,
    max: Option<ArrayRef>,
    null_counts: Option<ArrayRef>,
}

/// The files' statistics in the scan's column order, with each column's arrays kept once built.
pub(super) struct FilesStatistics {
    /// Each file's statistics.
    files: Vec<Arc<Statistics>>,
    /// Null and row counts are built by DataFusion's own conversion from `files`.
    source: PrunableStatistics,
    /// The scan's columns (file columns, then partition columns).
    schema: SchemaRef,
    /// Per column of `schema`, its arrays once a query has asked for them.
    columns: Vec<OnceLock<ColumnArrays>>,
    /// Rows per file, once asked for.
    row_counts: OnceLock<Option<ArrayRef>>,
}

impl std::fmt::Debug for FilesStatistics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesStatistics")
            .field("files", &self.source.num_containers())
            .field("columns", &self.columns)
            .finish()
    }
}

impl FilesStatistics {
    /// The statistics of `files` (a file without any counts as unknown), columns as `schema`.
    pub(super) fn new(files: &[PartitionedFile], schema: &SchemaRef) -> Self {
        let unknown = Arc::new(Statistics::new_unknown(schema));
        let stats: Vec<Arc<Statistics>> = files
            .iter()
            .map(|f| f.statistics.clone().unwrap_or_else(|| unknown.clone()))
            .collect();
        Self {
            source: PrunableStatistics::new(stats.clone(), schema.clone()),
            files: stats,
            schema: schema.clone(),
            columns: (0..schema.fields().len())
                .map(|_| OnceLock::new())
                .collect(),
            row_counts: OnceLock::new(),
        }
    }

    /// The column's arrays, built on first use; `None` for a column the scan does not have.
    fn column(&self, column: &Column) -> Option<&ColumnArrays> {
        let index = self.schema.index_of(column.name()).ok()?;
        let slot = self.columns.get(index)?;
        Some(slot.get_or_init(|| ColumnArrays {
            min: self.bounds(index, |c| &c.min_value),
            max: self.bounds(index, |c| &c.max_value),
            null_counts: self.source.null_counts(column),
        }))
    }

    /// One bound of column `index` over the files, a typed null where a file's is not exact;
    /// `None` when no file has one.
    fn bounds(
        &self,
        index: usize,
        bound: impl Fn(&ColumnStatistics) -> &Precision<ScalarValue>,
    ) -> Option<ArrayRef> {
        let data_type = self.schema.field(index).data_type();
        let null = ScalarValue::try_from(data_type).ok()?;
        let mut known = false;
        let values =
            self.files
                .iter()
                .map(|file| match file.column_statistics.get(index).map(&bound) {
                    Some(Precision::Exact(value)) if value.data_type() == *data_type => {
                        known = true;
                        value.clone()
                    }
                    _ => null.clone(),
                });
        let array = ScalarValue::iter_to_array(values).ok()?;
        known.then_some(array)
    }
}

impl PruningStatistics for FilesStatistics {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.column(column)?.min.clone()
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.column(column)?.max.clone()
    }

    fn num_containers(&self) -> usize {
        self.source.num_containers()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        self.column(column)?.null_counts.clone()
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        self.row_counts
            .get_or_init(|| self.source.row_counts())
            .clone()
    }

    #[allow(clippy::mutable_key_type)] // ScalarValue is a hash key by the trait's design
    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn file(min: i64, max: i64, rows: usize) -> PartitionedFile {
        let mut file = PartitionedFile::new(format!("f{min}"), 10);
        file.statistics = Some(Arc::new(Statistics {
            num_rows: Precision::Exact(rows),
            total_byte_size: Precision::Absent,
            column_statistics: vec![ColumnStatistics {
                min_value: Precision::Exact(ScalarValue::Int64(Some(min))),
                max_value: Precision::Exact(ScalarValue::Int64(Some(max))),
                null_count: Precision::Exact(0),
                ..ColumnStatistics::new_unknown()
            }],
        }));
        file
    }

    #[test]
    fn arrays_hold_a_null_for_a_file_without_bounds_and_are_built_once() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let mut files = vec![file(1, 10, 5), file(11, 20, 6)];
        files.push(PartitionedFile::new("no-stats", 10));
        let stats = FilesStatistics::new(&files, &schema);
        let id = Column::new_unqualified("id");
        let min = stats.min_values(&id).unwrap();
        let min = min.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            min.iter().collect::<Vec<_>>(),
            vec![Some(1), Some(11), None]
        );
        let max = stats.max_values(&id).unwrap();
        assert!(Arc::ptr_eq(&max, &stats.max_values(&id).unwrap()));
        assert_eq!(stats.row_counts().unwrap().len(), 3);
        assert_eq!(stats.num_containers(), 3);
        assert!(stats.min_values(&Column::new_unqualified("nope")).is_none());
    }
}
