//! `[intake]` in `gamelake.toml`: where the write-ahead log lives, how often it is committed,
//! the bounds of a request, who may send, and the tables that receive events.
//!
//! ```toml
//! [intake]
//! wal_dir = "/var/lib/gamelake/wal"   # default: <lake>/_wal for a local lake
//! commit_interval = "1s"              # a Delta commit per table at most this often
//! dedup_window = "1h"                 # a retried batch with the same key is stored once
//! max_connections = 1024              # per listener; more are closed at accept
//! read_timeout = "30s"                # headers, body, forward message, idle keep-alive
//! hold_until_replicated_in = "s3://sh-lake/lake"   # keep segments until the replica has them
//! [[intake.tokens]]
//! name = "game-servers-bj"
//! token = "${INTAKE_TOKEN_BJ}"         # ${VAR} reads the environment
//! tables = ["logs.*"]
//! [[intake.tables]]
//! name = "logs.events"
//! time_field = "time"
//! time_format = "rfc3339"             # or epoch_s, epoch_ms, epoch_us
//! timezone = "+08:00"                 # the day partition is the game's server day
//! columns = { player_id = "bigint", event = "text" }
//! required = ["player_id", "event"]
//! retain = "7d"                       # vacuum: files out of the table are deleted after this
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::records::{NewFields, RowRules, TimeFormat};

/// `[intake]`: the log intake of `gamelake serve --http` (and `--forward`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Folder of the write-ahead log, on a local disk (default `<lake>/_wal` when the lake is a
    /// local folder; required for a lake on S3).
    pub wal_dir: Option<PathBuf>,
    /// Longest time between an acknowledgement and its Delta commit (default 1s).
    #[serde(default, deserialize_with = "crate::toml_files::duration")]
    pub commit_interval: Option<Duration>,
    /// Commit early when this many MiB wait in the log (default 64).
    pub commit_mb: Option<usize>,
    /// Largest request body, in MiB, compressed or not (default 16); larger ones get 413.
    pub max_body_mb: Option<usize>,
    /// When this many MiB are acknowledged but not yet committed (the lake is slow or down),
    /// new requests get 503 with Retry-After (default 1024).
    pub max_pending_mb: Option<usize>,
    /// Connections each listener (HTTP, forward) keeps open at once; more are closed at once
    /// (default 1024).
    pub max_connections: Option<usize>,
    /// How long a peer may take to send a request's headers, its body, a forward message or
    /// the forward handshake, and how long an idle keep-alive connection stays open; a slower
    /// or silent peer is disconnected (default 30s).
    #[serde(default, deserialize_with = "crate::toml_files::duration")]
    pub read_timeout: Option<Duration>,
    /// Name of this intake node; it keys the exactly-once markers in the tables, so two servers
    /// writing the same tables need different names (default "intake").
    pub node: Option<String>,
    /// How often small files of the last two days' partitions are compacted and the log
    /// checkpointed, for every intake table (default 10m; "0s" turns maintenance off).
    #[serde(default, deserialize_with = "crate::toml_files::duration")]
    pub compact_interval: Option<Duration>,
    /// How long a sender's idempotency key (Fluentd forward `chunk`, HTTP `Idempotency-Key`) is
    /// remembered, so that a retry within it is acknowledged without being stored twice
    /// (default 1h; "0s" turns it off).
    #[serde(default, deserialize_with = "crate::toml_files::duration")]
    pub dedup_window: Option<Duration>,
    /// A replica of the lake (the `--to` of `gamelake replicate`): each write-ahead segment
    /// stays on disk until the replica holds its commits too, so promoting the replica after
    /// losing the primary loses no acknowledged record (the intake, pointed at the promoted
    /// lake, commits the held segments there, exactly once by its markers). The log grows
    /// while the replica lags, up to `max_pending_mb`.
    pub hold_until_replicated_in: Option<String>,
    /// Storage settings for that replica, over the environment's `AWS_*`
    /// (`{ AWS_ENDPOINT_URL = "http://..." }`).
    #[serde(default)]
    pub replica_options: std::collections::HashMap<String, String>,
    /// Who may send: bearer tokens and the tables each may write.
    #[serde(default)]
    pub tokens: Vec<IntakeToken>,
    /// The tables that receive events. A request for a table not listed is refused (404).
    #[serde(default)]
    pub tables: Vec<IntakeTable>,
}

/// `[[intake.tokens]]`: one sender's credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeToken {
    /// A name for logs and metrics (never the token itself).
    pub name: String,
    /// The bearer token the sender puts in `Authorization: Bearer ...`.
    pub token: String,
    /// Tables this token may write: `schema.table` or `schema.*` (default: every intake table).
    #[serde(default)]
    pub tables: Vec<String>,
}

impl std::fmt::Debug for IntakeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeToken")
            .field("name", &self.name)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl IntakeToken {
    /// Whether this token may write `table`.
    pub fn allows(&self, table: &TableRef) -> bool {
        self.tables.is_empty()
            || self
                .tables
                .iter()
                .any(|pattern| match pattern.strip_suffix(".*") {
                    Some(schema) => schema == table.schema,
                    None => *pattern == table.to_string(),
                })
    }
}

/// `[[intake.tables]]`: one table that receives events.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeTable {
    /// `schema.table` in the lake.
    pub name: String,
    /// The record field holding the event time (default: none, the time of receipt is used).
    pub time_field: Option<String>,
    /// How the time field is written (default rfc3339).
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Zone of the `day` partition: `+08:00`, `UTC` or a name like `Asia/Shanghai`
    /// (default `+08:00`, the game's server day).
    pub timezone: Option<String>,
    /// What happens to a record with a field the table does not have yet: `add` it as a nullable
    /// column (default), or `reject` the record.
    #[serde(default)]
    pub new_fields: NewFields,
    /// Declared columns and their types (`bigint`, `double`, `text`, `boolean`, `timestamp`,
    /// `json`); other columns are inferred from the first records that carry them.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Fields every record must have (non-null); a record without one is rejected.
    #[serde(default)]
    pub required: Vec<String>,
    /// Fluentd tags routed to this table (forward protocol); `*` matches one tag part.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Data files no longer in the table are deleted after this long (vacuum, hourly; default
    /// 7d). Time travel reaches back this far.
    #[serde(default, deserialize_with = "crate::toml_files::duration")]
    pub retain: Option<Duration>,
}

impl IntakeTable {
    /// How this table's records become rows.
    pub fn row_rules(&self) -> RowRules {
        RowRules {
            name: self.name.clone(),
            time_field: self.time_field.clone(),
            time_format: self.time_format,
            timezone: self.timezone.clone(),
            new_fields: self.new_fields,
            columns: self.columns.clone(),
            required: self.required.clone(),
        }
    }
}

/// The settings of the intake, with defaults applied.
#[derive(Clone, Debug)]
pub struct IntakeSettings {
    /// Folder of the write-ahead log.
    pub wal_dir: PathBuf,
    /// Longest time between an acknowledgement and its commit.
    pub commit_interval: Duration,
    /// Commit early at this many bytes waiting.
    pub commit_bytes: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Backpressure threshold.
    pub max_pending_bytes: u64,
    /// Connections per listener.
    pub max_connections: usize,
    /// Deadline for a peer's headers, body, message or handshake, and keep-alive idleness.
    pub read_timeout: Duration,
    /// Exactly-once marker prefix.
    pub node: String,
    /// Maintenance period (zero: off).
    pub compact_interval: Duration,
    /// How long idempotency keys are remembered (zero: off).
    pub dedup_window: Duration,
    /// The replica a segment must reach before it is deleted: URL and storage settings.
    pub hold_until_replicated_in: Option<(String, std::collections::HashMap<String, String>)>,
}

impl IntakeConfig {
    /// The settings with defaults; `local_lake` is the lake folder when the lake is local.
    pub fn settings(&self, local_lake: Option<PathBuf>) -> Result<IntakeSettings> {
        let wal_dir = match (&self.wal_dir, local_lake) {
            (Some(dir), _) => dir.clone(),
            (None, Some(lake)) => lake.join("_wal"),
            (None, None) => {
                return Err(Error::Invalid(
                    "the lake is not a local folder, so the intake needs a local folder for its write-ahead log: set [intake] wal_dir = \"/var/lib/gamelake/wal\" in the config".to_string(),
                ));
            }
        };
        let mb = |v: Option<usize>, default: usize| (v.unwrap_or(default) as u64) * 1024 * 1024;
        Ok(IntakeSettings {
            wal_dir,
            commit_interval: self.commit_interval.unwrap_or(Duration::from_secs(1)),
            commit_bytes: mb(self.commit_mb, 64),
            max_body_bytes: mb(self.max_body_mb, 16) as usize,
            max_pending_bytes: mb(self.max_pending_mb, 1024),
            max_connections: self.max_connections.unwrap_or(1024).max(1),
            read_timeout: self.read_timeout.unwrap_or(Duration::from_secs(30)),
            node: self.node.clone().unwrap_or_else(|| "intake".to_string()),
            compact_interval: self.compact_interval.unwrap_or(Duration::from_secs(600)),
            dedup_window: self.dedup_window.unwrap_or(Duration::from_secs(3600)),
            hold_until_replicated_in: self
                .hold_until_replicated_in
                .clone()
                .map(|url| (url, self.replica_options.clone())),
        })
    }
}
