//! Skipping whole files by their bloom filters when a query is planned.
//!
//! DataFusion's Parquet opener already skips row groups by bloom filter, but only after it has
//! opened the file: footer first, then the filter. A one-player lookup over years of daily
//! files paid that for every file whose min/max span the player's id, which is nearly all of
//! them, so it slowed down as history grew. Here the planner asks the filters first and the
//! scan opens only the files that may hold the value. The filters are kept across queries and
//! sessions: a Delta data file never changes once written, so a kept filter never goes stale.
//! Written here because DataFusion keeps bloom filters only inside one opened file's scan.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    BloomFilterStatistics, ParquetFileReaderFactory,
};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use datafusion::parquet::errors::Result as ParquetResult;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_optimizer::pruning::PruningPredicate;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

/// Bytes of bloom filters kept; past it the cache starts over (the next queries read the
/// filters they need again).
const CACHE_BYTES: usize = 256 * 1024 * 1024;
/// Files whose filters are read at once when they are not kept yet.
const CONCURRENT_READS: usize = 8;

/// A table version's bloom columns and each file's filters once read. The process-wide cache
/// keeps them across table versions; this keeps them by file index, so a warm query over
/// thousands of files does no lookup by path.
#[derive(Debug)]
pub(super) struct TableBlooms {
    /// The table's `gamelake.bloomFilterColumns`.
    columns: Vec<String>,
    /// Per file of the version, its filters once read.
    files: Vec<OnceLock<Arc<FileBlooms>>>,
}

impl TableBlooms {
    /// Nothing read yet for a version of `files` files whose bloom columns are `columns`.
    pub(super) fn new(columns: Vec<String>, files: usize) -> Self {
        Self {
            columns,
            files: (0..files).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Whether `pruning` compares a bloom column with literals (else filters cannot help).
    pub(super) fn can_prune(&self, pruning: &PruningPredicate) -> bool {
        pruning
            .literal_columns()
            .iter()
            .any(|c| self.columns.contains(c))
    }

    /// The files of `candidates` (indexes into `files`, the version's files) that may hold
    /// rows matching `pruning`, judged by the bloom filters: a file goes when, for a column the
    /// predicate compares with literals, every row group's filter says none of the literals is
    /// there. A file whose filters cannot be read is kept. `reader` opens the files (the
    /// scan's own, so footers read here are the ones its metadata cache keeps).
    pub(super) async fn skip_files(
        &self,
        reader: &dyn ParquetFileReaderFactory,
        store_url: &ObjectStoreUrl,
        pruning: &PruningPredicate,
        files: &[PartitionedFile],
        candidates: Vec<usize>,
    ) -> Vec<usize> {
        // Boxed, so the scan's future stays `Send` (a stream mapped by a closure over borrowed
        // files is not, for the compiler).
        let missing: Vec<BoxFuture<'_, ()>> = candidates
            .iter()
            .filter_map(|i| Some((files.get(*i)?, self.files.get(*i)?)))
            .filter(|(_, kept)| kept.get().is_none())
            .map(|(file, kept)| {
                async move {
                    if let Some(blooms) = blooms_of(reader, store_url, file, &self.columns).await {
                        let _ = kept.set(blooms);
                    }
                }
                .boxed()
            })
            .collect();
        futures::stream::iter(missing)
            .buffer_unordered(CONCURRENT_READS)
            .collect::<()>()
            .await;
        let blooms = candidates
            .iter()
            .map(|i| self.files.get(*i).and_then(|kept| kept.get().cloned()))
            .collect();
        match pruning.prune(&FilesBlooms(blooms)) {
            Ok(keep) => candidates
                .into_iter()
                .zip(keep)
                .filter_map(|(file, keep)| keep.then_some(file))
                .collect(),
            Err(e) => {
                tracing::debug!("files not pruned by bloom filters: {e}");
                candidates
            }
        }
    }
}

/// One file's bloom filters of the table's bloom columns, one entry per row group.
#[derive(Debug)]
struct FileBlooms {
    row_groups: Vec<BloomFilterStatistics>,
    /// Bytes of filter held.
    bytes: usize,
}

/// Files' filters by `store URL + path + size`.
#[derive(Default)]
struct Cache {
    files: HashMap<String, Arc<FileBlooms>>,
    bytes: usize,
}

/// One cache for the process: paths are unique to a file's content, whichever session or
/// table version reads it.
fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// A file's filters, from the cache or read from the file (then kept). `None` when they cannot
/// be read.
async fn blooms_of(
    reader: &dyn ParquetFileReaderFactory,
    store_url: &ObjectStoreUrl,
    file: &PartitionedFile,
    columns: &[String],
) -> Option<Arc<FileBlooms>> {
    let key = format!(
        "{}{}#{}",
        store_url.as_str(),
        file.object_meta.location,
        file.object_meta.size
    );
    let kept = cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .files
        .get(&key)
        .cloned();
    if kept.is_some() {
        return kept;
    }
    let blooms = match read_blooms(reader, file.clone(), columns).await {
        Ok(blooms) => Arc::new(blooms),
        Err(e) => {
            tracing::debug!("bloom filters of {key} not read: {e}");
            return None;
        }
    };
    let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
    if cache.bytes + blooms.bytes > CACHE_BYTES {
        cache.files.clear();
        cache.bytes = 0;
    }
    cache.bytes += blooms.bytes;
    cache.files.insert(key, blooms.clone());
    Some(blooms)
}

/// Reads the footer and then each row group's filter of `columns` (those the file has).
async fn read_blooms(
    reader: &dyn ParquetFileReaderFactory,
    file: PartitionedFile,
    columns: &[String],
) -> datafusion::error::Result<FileBlooms> {
    let reader = reader.create_reader(0, file, None, &ExecutionPlanMetricsSet::new())?;
    let mut builder = ParquetRecordBatchStreamBuilder::new(SendReader(reader)).await?;
    let schema = builder.parquet_schema();
    let wanted: Vec<_> = columns
        .iter()
        .filter_map(|name| {
            let index = schema
                .columns()
                .iter()
                .position(|c| c.path().string() == *name)?;
            let column = schema.column(index);
            Some((
                name.clone(),
                index,
                column.physical_type(),
                column.type_length(),
            ))
        })
        .collect();
    let mut blooms = FileBlooms {
        row_groups: Vec::new(),
        bytes: 0,
    };
    for row_group in 0..builder.metadata().num_row_groups() {
        let mut filters = BloomFilterStatistics::with_capacity(wanted.len());
        for (name, index, physical_type, type_length) in &wanted {
            if let Some(filter) = builder
                .get_row_group_column_bloom_filter(row_group, *index)
                .await?
            {
                // A split-block filter is made of 32-byte blocks.
                blooms.bytes += filter.num_blocks() * 32;
                filters.insert(name, filter, *physical_type, *type_length);
            }
        }
        blooms.row_groups.push(filters);
    }
    Ok(blooms)
}

/// The factory's reader as the stream builder takes it (parquet implements its trait for a
/// boxed reader without `Send` only).
struct SendReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for SendReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        self.0.get_metadata(options)
    }
}

/// Files as the pruning predicate's containers: only the filters' verdicts are known.
struct FilesBlooms(Vec<Option<Arc<FileBlooms>>>);

impl PruningStatistics for FilesBlooms {
    fn min_values(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }

    fn max_values(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }

    fn num_containers(&self) -> usize {
        self.0.len()
    }

    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        None
    }

    /// `false` for a file when every row group's filter says none of `values` is there;
    /// unknown otherwise (a filter never proves a value present).
    #[allow(clippy::mutable_key_type)] // ScalarValue is a hash key by the trait's design
    fn contained(&self, column: &Column, values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        let absent = |filters: &BloomFilterStatistics| {
            filters.contained(column, values).is_some_and(|verdict| {
                verdict.len() == 1 && verdict.is_valid(0) && !verdict.value(0)
            })
        };
        Some(
            self.0
                .iter()
                .map(|file| {
                    let file = file.as_ref()?;
                    let all_absent =
                        !file.row_groups.is_empty() && file.row_groups.iter().all(absent);
                    if all_absent { Some(false) } else { None }
                })
                .collect(),
        )
    }
}
