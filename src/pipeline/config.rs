//! Pipeline files: `pipelines/NAME.toml`. Unknown keys and bad values are errors naming the
//! file, line and key; `${VAR}` takes a value from the environment.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::lake::layout::{Codec, TableLayout};
use crate::secret::Secret;
use crate::sources::postgres::quote_qualified;
use crate::timing::{Timing, zone_or_default};
use crate::toml_files::{parse_toml, position_of};

/// One pipeline: a source and the tables it fills.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name, used in the lake's transaction markers (`gamelake:NAME:schema.table`).
    pub name: String,
    /// Where rows come from (default: the lake, for a pipeline with a `[sink]`).
    #[serde(default)]
    pub source: SourceConfig,
    /// Where rows go when it is not the lake: query results published to PostgreSQL.
    pub sink: Option<SinkConfig>,
    /// The tables to fill.
    #[serde(rename = "table")]
    pub tables: Vec<TableConfig>,
    /// When `gamelake serve --schedule` runs it: cron fields (minute hour day-of-month month
    /// day-of-week). None: only when `gamelake ingest` is run.
    pub schedule: Option<String>,
    /// Zone of `schedule` (default `+08:00`, the game's server day).
    pub timezone: Option<String>,
    /// A pipeline of `cdc` tables that `gamelake serve --schedule` follows without end,
    /// looking at the replication slot again after this pause when it had nothing ("1s",
    /// "500ms"). One process follows a slot at a time; replicas wait and take over when it
    /// stops. Instead of `schedule`.
    pub follow: Option<String>,
    /// Cdc pipelines followed without end: the shortest time between two commits to a lake
    /// table ("10s"); changes wait and are applied together, so a steady stream makes one
    /// Parquet file per table per interval instead of one per pass. Default: none, each pass
    /// commits as soon as it has read.
    pub commit_interval: Option<String>,
}

/// `[source]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// The lake itself: the tables' queries run over it (a pipeline with a `[sink]`).
    #[default]
    Lake,
    /// A PostgreSQL database.
    Postgres {
        /// Connection URL (`postgres://user:pass@host:5432/db`) or key=value string; use
        /// `${PG_URL}` to keep the password out of the file (never printed).
        url: Secret,
        /// Connections that read one table's snapshot in parallel (default 4).
        #[serde(default = "default_parallelism")]
        parallelism: usize,
        /// Cdc tables: the replication slot to read (default `gamelake_<pipeline name>`),
        /// created when absent; an existing slot is read from its position.
        slot: Option<String>,
        /// Cdc tables: the publication the slot decodes with (default the default slot name),
        /// created when absent; tables it lacks are added (a `FOR ALL TABLES` one lacks none).
        publication: Option<String>,
    },
    /// A MySQL or MariaDB database (the game's v1.0): snapshot and incremental tables.
    Mysql {
        /// `mysql://user:${MYSQL_PASSWORD}@host:3306/db`, with `?ssl-mode=REQUIRED` (or
        /// `VERIFY_CA`, `VERIFY_IDENTITY`) for TLS (never printed).
        url: Secret,
        /// Connections that read one table's snapshot in parallel, over primary-key ranges
        /// (default 4).
        #[serde(default = "default_parallelism")]
        parallelism: usize,
        /// `tinyint(1)` columns as `"bool"` (default) or `"int"`.
        #[serde(default)]
        tinyint1: Tinyint1,
        /// Zero dates (`0000-00-00`, zero months or days) as `"null"` (default, counted in the
        /// log) or an `"error"` naming the column.
        #[serde(default)]
        zero_dates: crate::sources::mysql::ZeroDates,
    },
    /// Log files (NDJSON or JSON arrays, `.gz` decompressed) on a local disk or S3, each
    /// committed once: a rerun takes only files not committed before.
    Files {
        /// A glob: `/data/logs/2025-*/*.ndjson.gz`, `s3://bucket/logs/**/*.json` (S3 settings
        /// from the AWS_* environment variables).
        path: String,
    },
}

/// `[sink]`: where a lake-sourced pipeline publishes.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// A PostgreSQL database: each table's query result replaces (or upserts into) a table.
    Postgres {
        /// Connection URL; use `${PG_URL}` to keep the password out of the file (never
        /// printed).
        url: Secret,
    },
}

/// What MySQL's `tinyint(1)` (its `bool`) becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tinyint1 {
    /// A boolean.
    #[default]
    Bool,
    /// A small integer, for columns that hold more than 0 and 1.
    Int,
}

fn default_parallelism() -> usize {
    4
}

/// How a table is kept in sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A consistent full copy, replacing the lake table in one commit.
    #[default]
    Snapshot,
    /// New and changed rows by a timestamp cursor column, merged by key.
    Incremental,
    /// Rows older than `archive_after`, moved from PostgreSQL to the lake.
    Archive,
    /// Records of new files appended (files sources), like the log intake's.
    Append,
    /// `[sink]` pipelines: the target's rows are replaced by the result in one transaction.
    Replace,
    /// `[sink]` pipelines: the result's rows are inserted or updated by `key`.
    Upsert,
    /// The v1.0 migration (a MySQL `[source]`, a PostgreSQL `[sink]`): rows older than
    /// `hot_after` to the lake, the rest to PostgreSQL, range by range, validated by checksums,
    /// resumable.
    Migrate,
    /// Change capture from PostgreSQL's logical replication stream: inserts, updates and
    /// deletes applied by key (the primary key, or `key`), each commit carrying its LSN.
    Cdc,
}

/// `[[table]]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Source table, `schema.table` (or use `query`).
    pub from: Option<String>,
    /// Source query, for a transform or a cast of unsupported types (or use `from`).
    pub query: Option<String>,
    /// `[sink]` pipelines: a file holding the query (relative to the pipeline file), e.g.
    /// `../queries/friend_suggestions.sql`.
    pub query_file: Option<std::path::PathBuf>,
    /// `[sink]` pipelines: SQL files run over the lake before this table's query, in order
    /// (relative to the pipeline file), e.g. the saved queries that refresh the lake tables it
    /// publishes: `run = ["../queries/reco/player_interests.sql"]`.
    #[serde(default)]
    pub run: Vec<std::path::PathBuf>,
    /// The text of each `run` file, read when the pipeline is loaded.
    #[serde(skip)]
    pub run_sql: Vec<String>,
    /// `[sink]` pipelines: values of the `$name` placeholders of `run` and the query, e.g.
    /// `params = { as_of = "today" }`; relative dates (`today`, `yesterday`, `today-7d`, ...)
    /// are resolved on the day of the run in the pipeline's `timezone`.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Lake table, `schema.table`.
    pub to: String,
    /// Sync mode.
    pub mode: Mode,
    /// Key columns (required for incremental).
    #[serde(default)]
    pub key: Vec<String>,
    /// Cursor column for incremental mode: a timestamp set by `now()` when a row is written
    /// (`updated_at`), or an integer from a sequence (`id`, for tables rows are only added to).
    pub cursor: Option<String>,
    /// Incremental mode with an integer cursor: how many values below the highest one read
    /// are read again by the next run, so a transaction that took its ids before others but
    /// committed after them is still seen (default 10000; size it as ids per second × the
    /// longest writing transaction's seconds). Rows read twice are merged by key once.
    pub cursor_overlap: Option<u64>,
    /// Time column for archive mode.
    pub time_column: Option<String>,
    /// Age after which rows are archived, e.g. "365d".
    pub archive_after: Option<String>,
    /// Migrate mode: rows whose `time_column` is at least this old go to the lake, the newer
    /// ones (and those without a time) to PostgreSQL, e.g. "365d". The cutoff is fixed by the
    /// first run (`now() - hot_after` on the source's clock) and kept by every rerun.
    pub hot_after: Option<String>,
    /// Migrate mode: the PostgreSQL table of the newer rows, `schema.table` (default: `to`).
    pub hot_to: Option<String>,
    /// Migrate mode: rows per validated, resumable range of the key (default 100000).
    pub range_rows: Option<u64>,
    /// Cdc mode: also append every change, unfolded, to `<to>_changes` with `_op` (I, U, D,
    /// T), `_lsn`, `_seq` and `_commit_time`: each version of each row, for "as of" questions.
    #[serde(default)]
    pub changelog: bool,
    /// Archive mode: a view `schema.name` over the lake's history and PostgreSQL's hot rows,
    /// split at the archive cutoff (needs `--pg-url` when queried).
    pub view: Option<String>,
    /// Partition columns of the lake table.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Sort order within files.
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// Columns with bloom filters.
    #[serde(default)]
    pub bloom_filter_columns: Vec<String>,
    /// zstd level of the lake table's Parquet files: 1 (least CPU to write) to 22 (smallest
    /// files); default 3.
    pub zstd_level: Option<i32>,
    /// Codec of a new lake table's Parquet files: "zstd" (the default, smallest files) or "lz4"
    /// (half again as large, faster to read). An existing table keeps its own.
    pub compression: Option<String>,
    /// Files sources: the record field with the event time (as in `[[intake.tables]]`).
    pub time_field: Option<String>,
    /// Files sources: how the time field is written (rfc3339, epoch_s, epoch_ms, epoch_us).
    pub time_format: Option<crate::records::TimeFormat>,
    /// Files sources: zone of the `day` partition (default +08:00).
    pub timezone: Option<String>,
    /// Files sources: declared column types (bigint, double, text, boolean, timestamp, json).
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, String>,
    /// Files sources: fields every record must have.
    #[serde(default)]
    pub required: Vec<String>,
    /// Files sources: `add` new fields as columns (default) or `reject` the record.
    pub new_fields: Option<crate::records::NewFields>,
}

impl TableConfig {
    /// `archive_after` as a duration ("365d", "90 days", "12h").
    pub fn archive_after_duration(&self) -> Result<std::time::Duration> {
        let text = self.archive_after.as_deref().unwrap_or_default();
        humantime::parse_duration(text).map_err(|e| {
            Error::Invalid(format!(
                "table {}: archive_after = \"{text}\" is not a duration ({e}); write e.g. \"365d\"",
                self.to
            ))
        })
    }

    /// `hot_after` as a duration.
    pub fn hot_after_duration(&self) -> Result<std::time::Duration> {
        let text = self.hot_after.as_deref().unwrap_or_default();
        humantime::parse_duration(text).map_err(|e| {
            Error::Invalid(format!(
                "table {}: hot_after = \"{text}\" is not a duration ({e}); write e.g. \"365d\"",
                self.to
            ))
        })
    }

    /// The name under which the lake table records this pipeline's position (Delta `txn` appId).
    pub fn app_id(&self, pipeline: &str) -> String {
        format!("gamelake:{pipeline}:{}", self.to)
    }

    /// Options of a write to this table: its layout, and the pipeline position in the commit.
    pub fn write_options(
        &self,
        mode: crate::lake::write::WriteMode,
        app_id: String,
        position: i64,
    ) -> crate::lake::write::WriteOptions {
        crate::lake::write::WriteOptions {
            mode,
            layout: Some(self.layout()),
            transaction: Some((app_id, position)),
            merge_schema: false,
            checkpoint: true,
        }
    }

    /// The lake table's layout this table asks for.
    pub fn layout(&self) -> TableLayout {
        let default = TableLayout::default();
        TableLayout {
            partition_by: self.partition_by.clone(),
            sort_by: self.sort_by.clone(),
            bloom_filter_columns: self.bloom_filter_columns.clone(),
            zstd_level: self.zstd_level.unwrap_or(default.zstd_level),
            // Checked by `PipelineConfig::parse`.
            compression: self
                .compression
                .as_deref()
                .and_then(|c| Codec::parse(c).ok())
                .unwrap_or_default(),
            ..default
        }
    }

    /// How records of a files source become rows.
    pub fn row_rules(&self) -> crate::records::RowRules {
        crate::records::RowRules {
            name: self.to.clone(),
            time_field: self.time_field.clone(),
            time_format: self.time_format.unwrap_or_default(),
            timezone: self.timezone.clone(),
            new_fields: self.new_fields.unwrap_or_default(),
            columns: self.columns.clone(),
            required: self.required.clone(),
        }
    }

    /// What the table reads from `source`: its query, or its `from` table whole (named the
    /// source's way).
    pub fn read(&self, source: &dyn crate::sources::Source) -> crate::sources::Read {
        let query = match (&self.query, &self.from) {
            (Some(q), _) => q.trim().trim_end_matches(';').to_string(),
            (None, Some(from)) => source.select_all(from),
            (None, None) => String::new(),
        };
        crate::sources::Read {
            target: self.to.clone(),
            from: self.from.clone(),
            query,
        }
    }

    /// The query that reads the rows of a lake-side table (a `[sink]` pipeline's), names
    /// quoted as DataFusion (and PostgreSQL) quote them.
    pub fn source_query(&self) -> String {
        match (&self.query, &self.from) {
            (Some(q), _) => q.trim().trim_end_matches(';').to_string(),
            (None, Some(from)) => format!("SELECT * FROM {}", quote_qualified(from)),
            (None, None) => String::new(),
        }
    }
}

impl PipelineConfig {
    /// Reads a pipeline file: env substitution, then strict parsing and checks.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses pipeline text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut config: Self = parse_toml(text, path)?;
        config.check(text, path)?;
        config.timing().map_err(|e| {
            let (line, column) = position_of(text, "schedule");
            Error::config(path, line, column, &e)
        })?;
        config.read_sql_files(text, path)?;
        Ok(config)
    }

    /// `follow`'s pause as a duration (None: not followed).
    pub fn follow_interval(&self) -> Result<Option<std::time::Duration>> {
        self.duration("follow", self.follow.as_deref())
    }

    /// `commit_interval` as a duration (None: commit after every pass).
    pub fn commit_interval(&self) -> Result<Option<std::time::Duration>> {
        self.duration("commit_interval", self.commit_interval.as_deref())
    }

    fn duration(&self, field: &str, text: Option<&str>) -> Result<Option<std::time::Duration>> {
        text.map(|text| {
            humantime::parse_duration(text).map_err(|e| {
                Error::Invalid(format!(
                    "pipeline {}: {field} = \"{text}\" is not a duration ({e}); write e.g. \"1s\"",
                    self.name
                ))
            })
        })
        .transpose()
    }

    /// Its schedule, parsed (None: run on demand only).
    pub fn timing(&self) -> std::result::Result<Option<Timing>, String> {
        let zone = zone_or_default(self.timezone.as_deref())?;
        match &self.schedule {
            Some(text) => Timing::parse(text, zone).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name = "oltp"
[source]
kind = "postgres"
url = "host=localhost"
[[table]]
from = "public.players"
to = "game.players"
mode = "snapshot"
"#;

    #[test]
    fn parses_a_pipeline() {
        let p = PipelineConfig::parse(GOOD, Path::new("p.toml")).unwrap();
        assert_eq!(
            p.tables[0].source_query(),
            "SELECT * FROM \"public\".\"players\""
        );
        assert!(matches!(
            p.source,
            SourceConfig::Postgres { parallelism: 4, .. }
        ));
    }

    #[test]
    fn typo_names_file_line_and_key() {
        let bad = GOOD.replace("mode = ", "mdoe = ");
        let err = PipelineConfig::parse(&bad, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p.toml:8:1:") && err.contains("mdoe"),
            "{err}"
        );
    }

    #[test]
    fn missing_environment_variable_is_named() {
        let bad = GOOD.replace("host=localhost", "${GAMELAKE_TEST_SURELY_UNSET}");
        let err = PipelineConfig::parse(&bad, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p.toml:4:") && err.contains("GAMELAKE_TEST_SURELY_UNSET"),
            "{err}"
        );
    }

    #[test]
    fn incomplete_modes_and_bad_tables_are_refused() {
        let err = PipelineConfig::parse(
            &GOOD.replace("\"snapshot\"", "\"archive\""),
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("archive mode needs"), "{err}");
        let err = PipelineConfig::parse(
            &GOOD.replace("game.players", "players"),
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("schema.table"), "{err}");
    }

    #[test]
    fn follow_is_for_cdc_pipelines_alone() {
        let cdc = GOOD.replace("\"snapshot\"", "\"cdc\"");
        let refused = |text: String| {
            PipelineConfig::parse(&text, Path::new("p.toml"))
                .unwrap_err()
                .to_string()
        };
        let p =
            PipelineConfig::parse(&format!("follow = \"2s\"\n{cdc}"), Path::new("p.toml")).unwrap();
        assert_eq!(
            p.follow_interval().unwrap(),
            Some(std::time::Duration::from_secs(2))
        );
        let err = refused(format!("follow = \"1s\"\n{GOOD}"));
        assert!(
            err.starts_with("p.toml:1:1:") && err.contains("game.players is not one"),
            "{err}"
        );
        let err = refused(format!("follow = \"1s\"\nschedule = \"0 * * * *\"\n{cdc}"));
        assert!(err.contains("keep one of them"), "{err}");
        let err = refused(format!("follow = \"soon\"\n{cdc}"));
        assert!(err.contains("is not a duration"), "{err}");
        let err = refused(format!("commit_interval = \"10s\"\n{GOOD}"));
        assert!(err.contains("commit_interval is for cdc"), "{err}");
    }

    #[test]
    fn compression_reaches_the_layout_and_is_checked() {
        let p = PipelineConfig::parse(
            &format!("{GOOD}compression = \"lz4\"\n"),
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(p.tables[0].layout().compression, Codec::Lz4);
        let p = PipelineConfig::parse(GOOD, Path::new("p.toml")).unwrap();
        assert_eq!(p.tables[0].layout().compression, Codec::Zstd);
        let err = PipelineConfig::parse(
            &format!("{GOOD}compression = \"gzip\"\n"),
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("p.toml:9:1:") && err.contains("expected 'zstd'"),
            "{err}"
        );
    }

    #[test]
    fn zstd_level_reaches_the_layout_and_is_checked() {
        let p =
            PipelineConfig::parse(&format!("{GOOD}zstd_level = 1\n"), Path::new("p.toml")).unwrap();
        assert_eq!(p.tables[0].layout().zstd_level, 1);
        let p = PipelineConfig::parse(GOOD, Path::new("p.toml")).unwrap();
        assert_eq!(p.tables[0].layout().zstd_level, 3);
        let err = PipelineConfig::parse(&format!("{GOOD}zstd_level = 30\n"), Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p.toml:9:1:") && err.contains("expected 1 to 22"),
            "{err}"
        );
    }

    #[test]
    fn sink_pipelines_are_checked() {
        let sink = "name = \"reco\"\n[sink]\nkind = \"postgres\"\nurl = \"host=db\"\n[[table]]\nto = \"reco.s\"\nmode = \"replace\"\nquery = \"SELECT 1 AS a\"\n";
        let ok = PipelineConfig::parse(sink, Path::new("p.toml")).unwrap();
        assert!(matches!(ok.source, SourceConfig::Lake) && ok.sink.is_some());
        let cases = [
            (
                sink.replace("\"replace\"", "\"upsert\""),
                "p.toml:6:",
                "upsert needs key",
            ),
            (
                sink.replace("\"replace\"", "\"snapshot\""),
                "p.toml:6:",
                "\"replace\" or \"upsert\"",
            ),
            (
                sink.replace("query = ", "from = \"a.b\"\nquery = "),
                "p.toml:6:",
                "exactly one of",
            ),
            (
                sink.replace(
                    "[sink]",
                    "[source]\nkind = \"files\"\npath = \"/x/*\"\n[sink]",
                ),
                "p.toml:",
                "remove its [source]",
            ),
            (
                sink.replace("[sink]\nkind = \"postgres\"\nurl = \"host=db\"\n", ""),
                "p.toml:1:",
                "no [source]",
            ),
            (
                sink.replace("query = \"SELECT 1 AS a\"", "query_file = \"nope.sql\""),
                "p.toml:",
                "query_file nope.sql",
            ),
            (
                sink.replace("mode = ", "run = [\"nope.sql\"]\nmode = "),
                "p.toml:7:",
                "run nope.sql",
            ),
            (
                GOOD.replace("[[table]]\n", "[[table]]\nparams = { day = \"today\" }\n"),
                "p.toml:6:",
                "run and params are for [sink] pipelines",
            ),
        ];
        for (text, place, message) in cases {
            let err = PipelineConfig::parse(&text, Path::new("p.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(place) && err.contains(message),
                "{text}\n{err}"
            );
        }
    }
}
