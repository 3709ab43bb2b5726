//! Where pipelines read from, and the contract every source keeps with the pipeline modes.
//!
//! A source ([`Source`]) gives the modes three things, and the modes (`pipeline/snapshot.rs`,
//! `pipeline/incremental.rs`) are written once against them:
//!
//! 1. **A schema**: the columns a query returns, as Arrow fields, by a documented policy per
//!    source type; a type with no mapping is an error that names the column and the cast that
//!    fixes it ([`Source::describe`]).
//! 2. **Consistent parallel reads**: one table read at one point in time, in parts that
//!    several connections read at once, every part seeing the same point
//!    ([`Source::snapshot`]).
//! 3. **A position for exactly-once**: the rows a cursor column says changed since the last
//!    run, up to an upper bound that no transaction still open can commit below
//!    ([`Source::changes`]); the mode commits that bound with the rows, in one Delta commit, so
//!    a rerun starts exactly where the last commit ended.
//!
//! [`postgres`] implements it (binary COPY, exported snapshots, the oldest open transaction);
//! [`mysql`] too, for MySQL and MariaDB (consistent snapshots on N connections over
//! primary-key ranges, the oldest open InnoDB transaction).

pub mod live;
pub mod mysql;
pub mod postgres;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;

use crate::error::Result;

/// What a mode reads from a source.
#[derive(Clone, Debug)]
pub struct Read {
    /// The lake table the rows go to (`schema.table`), named in messages and progress.
    pub target: String,
    /// The source table, when the pipeline names one (`from`): a source may split its reads.
    pub from: Option<String>,
    /// The query that returns the rows (`SELECT * FROM <from>` when only `from` is given).
    pub query: String,
}

/// A consistent read of one table at one point in time.
pub struct Snapshot {
    /// The rows' schema.
    pub schema: SchemaRef,
    /// The source's estimate of the rows (0 when it has none), for progress.
    pub estimated_rows: u64,
    /// The parts: each a stream of batches on a connection of its own, all at the same point.
    pub parts: Vec<SendableRecordBatchStream>,
}

/// The rows whose cursor moved since the last run.
pub struct Changes {
    /// The rows' schema.
    pub schema: SchemaRef,
    /// Every row visible at the read with `since <= cursor`: rows at or after `upper` come
    /// again in the next run, where merging them by key once more changes nothing.
    pub batches: Vec<RecordBatch>,
    /// The position to commit with the rows, and the next run's lower bound: microseconds
    /// since 1970 below which no transaction still open can write a cursor value.
    pub upper: i64,
}

/// A database the pipeline modes read from.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// The query that reads table `from` (`table` or `schema.table`, names as written) whole,
    /// its names quoted the way this source quotes them.
    fn select_all(&self, from: &str) -> String;

    /// A column name quoted the way this source quotes identifiers.
    fn quote(&self, column: &str) -> String;

    /// The columns `query` returns, as Arrow fields.
    async fn describe(&self, query: &str) -> Result<SchemaRef>;

    /// Reads `read` at one point in time in at most `parallelism` parts (a query, or a source
    /// that cannot split, gives one part).
    async fn snapshot(&self, read: &Read, parallelism: usize) -> Result<Snapshot>;

    /// The rows of `read` whose timestamp column `cursor` is at or after `since` (microseconds
    /// since 1970; None: every row), with the bound the next run starts from. The bound is
    /// taken before the rows' snapshot, so no transaction older than it commits unseen.
    async fn changes(&self, read: &Read, cursor: &str, since: Option<i64>) -> Result<Changes>;
}
