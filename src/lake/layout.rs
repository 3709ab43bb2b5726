//! How a table's files are laid out: partitions, sort order, bloom filters, file size and
//! compression, stored in the table's Delta properties under `gamelake.*` so that every later
//! writer keeps them, and the Parquet writer settings they become.

use std::collections::HashMap;

use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use deltalake::DeltaTable;

use crate::error::{Error, Result};

/// Table property: comma-separated columns each file is sorted by (after partition columns).
pub const PROP_SORT_BY: &str = "gamelake.sortBy";
/// Table property: comma-separated columns that get parquet bloom filters.
pub const PROP_BLOOM_FILTER_COLUMNS: &str = "gamelake.bloomFilterColumns";
/// Table property: target data file size in bytes.
pub const PROP_TARGET_FILE_SIZE: &str = "gamelake.targetFileSize";
/// Table property: zstd compression level ([`ZSTD_LEVELS`]).
pub const PROP_ZSTD_LEVEL: &str = "gamelake.zstdLevel";
/// Table property: the Parquet codec ([`Codec::name`]); absent means zstd.
pub const PROP_COMPRESSION: &str = "gamelake.compression";
/// The zstd levels a table may ask for (SQL's `zstd_level` option, a pipeline's key).
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// `level` as a table's zstd level, or `zstd_level = N: expected 1 to 22` for the caller to
/// place (a config file's line, a SQL option).
pub fn zstd_level<N>(level: N) -> std::result::Result<i32, String>
where
    N: TryInto<i32> + std::fmt::Display + Copy,
{
    level
        .try_into()
        .ok()
        .filter(|l| ZSTD_LEVELS.contains(l))
        .ok_or_else(|| {
            format!(
                "zstd_level = {level}: expected {} to {}",
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            )
        })
}

/// How a table's Parquet pages are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codec {
    /// zstd at the table's `zstd_level`: the smallest files.
    #[default]
    Zstd,
    /// LZ4 (Parquet's `LZ4_RAW`): files about half again as large as zstd's that decode faster
    /// (TPC-H SF1's lake: 346 MB against 218 MB; Q6 0.08 s against 0.11 s; benches/RESULTS.md).
    /// For tables read far more often than their size costs.
    Lz4,
}

impl Codec {
    /// The codec a table option or property names (`zstd`, `lz4`), or `compression = 'x':
    /// expected ...` for the caller to place.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "zstd" => Ok(Self::Zstd),
            "lz4" | "lz4_raw" => Ok(Self::Lz4),
            _ => Err(format!(
                "compression = '{text}': expected 'zstd' (smallest files, the default) or 'lz4' (faster to read)"
            )),
        }
    }

    /// Its name in table options and properties.
    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
        }
    }
}

/// How a table's files are laid out. New tables take it from the writer; existing tables
/// keep what their properties say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableLayout {
    /// Partition columns (one folder level each), e.g. `["event_date", "region"]`.
    pub partition_by: Vec<String>,
    /// Sort order within files, e.g. `["player_id", "event_time"]`.
    pub sort_by: Vec<String>,
    /// Columns with parquet bloom filters (point lookups, e.g. player ids).
    pub bloom_filter_columns: Vec<String>,
    /// Target size of a data file in bytes.
    pub target_file_size: u64,
    /// Page compression.
    pub compression: Codec,
    /// zstd level (when the codec is zstd).
    pub zstd_level: i32,
}

impl Default for TableLayout {
    fn default() -> Self {
        Self {
            partition_by: Vec::new(),
            sort_by: Vec::new(),
            bloom_filter_columns: Vec::new(),
            target_file_size: 128 * 1024 * 1024,
            compression: Codec::Zstd,
            zstd_level: 3,
        }
    }
}

impl TableLayout {
    /// The default layout, partitioned by `columns`.
    pub fn partitioned_by(columns: &[&str]) -> Self {
        Self {
            partition_by: columns.iter().map(|c| c.to_string()).collect(),
            ..Self::default()
        }
    }

    /// The layout recorded in an existing table (its partition columns and `gamelake.*` properties).
    pub fn of_table(table: &DeltaTable) -> Result<Self> {
        let name = table.table_url().to_string();
        let snapshot = table.snapshot().map_err(|e| Error::delta(&name, e))?;
        let metadata = snapshot.metadata();
        let mut layout = Self::from_properties(metadata.configuration());
        layout.partition_by = metadata.partition_columns().to_vec();
        Ok(layout)
    }

    /// Reads the `gamelake.*` properties (unknown or malformed values fall back to defaults).
    pub fn from_properties(props: &HashMap<String, String>) -> Self {
        let list = |key: &str| -> Vec<String> {
            props
                .get(key)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        let default = Self::default();
        Self {
            partition_by: Vec::new(),
            sort_by: list(PROP_SORT_BY),
            bloom_filter_columns: list(PROP_BLOOM_FILTER_COLUMNS),
            target_file_size: props
                .get(PROP_TARGET_FILE_SIZE)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default.target_file_size),
            compression: props
                .get(PROP_COMPRESSION)
                .and_then(|v| Codec::parse(v).ok())
                .unwrap_or(default.compression),
            zstd_level: props
                .get(PROP_ZSTD_LEVEL)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default.zstd_level),
        }
    }

    /// The `gamelake.*` properties that record this layout in the table (empty lists are left
    /// out: Delta readers reject empty property values).
    pub fn to_properties(&self) -> HashMap<String, Option<String>> {
        let mut props = HashMap::from([
            (
                PROP_TARGET_FILE_SIZE.to_string(),
                Some(self.target_file_size.to_string()),
            ),
            (
                PROP_COMPRESSION.to_string(),
                Some(self.compression.name().to_string()),
            ),
            (
                PROP_ZSTD_LEVEL.to_string(),
                Some(self.zstd_level.to_string()),
            ),
        ]);
        for (key, list) in [
            (PROP_SORT_BY, &self.sort_by),
            (PROP_BLOOM_FILTER_COLUMNS, &self.bloom_filter_columns),
        ] {
            if !list.is_empty() {
                props.insert(key.to_string(), Some(list.join(",")));
            }
        }
        props
    }

    /// Parquet settings: the codec, page-level statistics (column and offset indexes), bloom
    /// filters, dictionaries for low-cardinality columns only ([`DICTIONARY_PAGE_LIMIT`]), and
    /// for a sorted table pages of at most [`SORTED_PAGE_ROWS`] rows.
    pub fn writer_properties(&self) -> Result<WriterProperties> {
        let compression = match self.compression {
            Codec::Zstd => Compression::ZSTD(ZstdLevel::try_new(self.zstd_level)?),
            Codec::Lz4 => Compression::LZ4_RAW,
        };
        let mut builder = WriterProperties::builder()
            .set_compression(compression)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(1024 * 1024))
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_LIMIT);
        if !self.sort_by.is_empty() {
            builder = builder.set_data_page_row_count_limit(SORTED_PAGE_ROWS);
        }
        for column in &self.bloom_filter_columns {
            let path = ColumnPath::from(column.as_str());
            builder = builder
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path, 0.01);
        }
        Ok(builder.build())
    }
}

/// Rows in a data page of a sorted table. Parquet's writer closes a page at 1 MiB, so a day's
/// file of a few ten thousand rows was one page per column, and a lookup of one player (the
/// sort key) decompressed and decoded every row of it. With pages this small, the page index
/// (each page's min/max, written for every table) lets the reader decode only the page that
/// holds the player: measured in benches/RESULTS.md ("A crowd of clients").
pub const SORTED_PAGE_ROWS: usize = 4096;

/// Bytes of a column chunk's dictionary before the writer falls back to plain values. Parquet's
/// default (1 MiB) keeps hashing every value of columns with up to ~100,000 distinct values
/// (player ids, amounts): a quarter of a PostgreSQL snapshot's CPU. At 64 KiB, low-cardinality
/// columns (regions, currencies, item ids) keep their dictionaries and the rest are plain values
/// under zstd; measured (benches/RESULTS.md): the snapshot 4.0 -> 3.0 s for 5 M rows and 13%
/// smaller, TPC-H SF1's lake 3% smaller and its queries no slower.
const DICTIONARY_PAGE_LIMIT: usize = 64 * 1024;
