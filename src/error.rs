//! The one error type of gamelake. Every message says what went wrong, where, and what to do;
//! the variant says whose mistake it is (the input's, a missing feature, a missing thing, an
//! unavailable service, gamelake's own), so each protocol maps it to its own code.

use std::path::PathBuf;

use datafusion::error::DataFusionError;
use deltalake::DeltaTableError;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in gamelake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--lake` value (or `GAMELAKE_LAKE`) is not a usable location.
    #[error("invalid lake location '{url}': {reason}")]
    LakeUrl {
        /// The location as the user gave it.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// The lake's storage could not be reached or listed.
    #[error("cannot reach the lake at {url}: {message}\n  hint: {hint}")]
    LakeUnreachable {
        /// The lake URL (no secrets).
        url: String,
        /// The storage error, in one line.
        message: String,
        /// What the user should check.
        hint: String,
    },

    /// A table name is not of the form `schema.table` or holds characters a folder cannot.
    #[error("invalid table name '{name}': {reason}")]
    TableName {
        /// The name as written.
        name: String,
        /// Why it is not valid.
        reason: String,
    },

    /// A table that does not exist was referenced.
    #[error("table {name} does not exist{suggestion}")]
    TableNotFound {
        /// The name as written.
        name: String,
        /// ", did you mean ...?" or a list of existing tables, or empty.
        suggestion: String,
    },

    /// A table that already exists was created again.
    #[error("table {name} already exists (use CREATE OR REPLACE TABLE, or IF NOT EXISTS)")]
    TableExists {
        /// The table name.
        name: String,
    },

    /// A folder under the lake is there but holds no Delta log.
    #[error(
        "{name} at {url} is a folder but not a Delta table (it has no _delta_log/); remove it or write a Delta table there"
    )]
    NotADeltaTable {
        /// The table name.
        name: String,
        /// The folder's URL.
        url: String,
    },

    /// A Delta table could not be read or written.
    #[error("Delta table {name}: {source}")]
    Delta {
        /// The table name (or URL) the operation was about.
        name: String,
        /// The underlying delta-rs error.
        #[source]
        source: Box<DeltaTableError>,
    },

    /// The object store refuses conditional writes, so concurrent commits could overwrite each other.
    #[error(
        "refusing to write to {url}: the store does not enforce conditional writes (If-None-Match), so two writers could overwrite each other's commit. Use a store that supports it (AWS S3, MinIO, moto, R2), set commit_coordinator = \"postgres://...\" in gamelake.toml (or GAMELAKE_COMMIT_COORDINATOR) so PostgreSQL ratifies each commit, or set GAMELAKE_ALLOW_UNSAFE_WRITES=true if exactly one process ever writes to this lake"
    )]
    UnsafeCommits {
        /// The lake URL.
        url: String,
    },
    /// The lake was fenced: a replica was promoted in its place, and writes go there now.
    #[error(
        "refusing to write to {url}: it was fenced at {since} when {promoted_to} was promoted in its place (epoch {epoch}); point this writer at {promoted_to} (--lake), whose pipeline positions and intake markers carry on from the replicated ones"
    )]
    Fenced {
        /// The fenced lake.
        url: String,
        /// The lake that takes writes now.
        promoted_to: String,
        /// The promotion's epoch.
        epoch: u64,
        /// When it was fenced (RFC 3339).
        since: String,
    },

    /// SQL planning or execution failed.
    #[error("{}", strip_datafusion_prefixes(.0))]
    Query(#[from] DataFusionError),

    /// The user's role does not allow the statement (e.g. a reader sending DDL over Flight SQL).
    #[error("{0}")]
    PermissionDenied(String),

    /// Taken by another: the server at its limit of concurrent queries (the queue wait ran
    /// out), or a replication slot that another process reads.
    #[error("{0}")]
    Busy(String),

    /// A query exceeded a bound (time, memory) and was stopped.
    #[error("{0}")]
    Limit(String),

    /// The input is wrong (a flag, a file, a value, a request, a statement): the user's or the
    /// client's mistake. The message says what is expected.
    #[error("{0}")]
    Invalid(String),

    /// Something gamelake does not do (yet), with what to do instead.
    #[error("{0}")]
    Unsupported(String),

    /// Something named does not exist (a report, a folder).
    #[error("{0}")]
    NotFound(String),

    /// Something gamelake needs is not there or stopped: a port to listen on, a source
    /// database, a store, a server shutting down. Trying again later may work.
    #[error("{0}")]
    Unavailable(String),

    /// The work was cancelled by whoever asked for it.
    #[error("{0}")]
    Cancelled(String),

    /// gamelake's own fault: a state that should not happen (a task that panicked, an encoding
    /// that cannot fail). Worth a bug report with the message.
    #[error("{0}")]
    Internal(String),

    /// Distributed mode: a bad `--cluster` address, an unreachable scheduler, an unsafe bind.
    #[error("cluster: {0}")]
    Cluster(String),

    /// The configuration file is malformed.
    #[error("{file}:{line}:{column}: {message}")]
    Config {
        /// The config file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what is expected.
        message: String,
    },

    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Arrow failed to encode or decode data.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// Parquet failed to encode or decode data.
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    /// Flight (gRPC) encoding or decoding failed.
    #[error("flight: {0}")]
    Flight(#[from] arrow_flight::error::FlightError),

    /// An object-store operation failed.
    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),
}

impl Error {
    /// Wraps a delta-rs error with the table it concerns.
    pub fn delta(name: impl Into<String>, source: DeltaTableError) -> Self {
        Error::Delta {
            name: name.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A problem in a config or pipeline file, at a 1-based line and column.
    pub fn config(path: &std::path::Path, line: usize, column: usize, message: &str) -> Self {
        Error::Config {
            file: PathBuf::from(path),
            line,
            column,
            message: message.to_string(),
        }
    }

    /// Converts into a DataFusion error, for code that runs inside DataFusion (catalogs, providers).
    pub fn into_datafusion(self) -> DataFusionError {
        match self {
            Error::Query(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }

    /// Unwraps a DataFusion error that carries a gamelake error back into it.
    pub fn from_datafusion(err: DataFusionError) -> Self {
        match err {
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::Query(DataFusionError::External(other)),
            },
            DataFusionError::Context(ctx, inner) => match Error::from_datafusion(*inner) {
                Error::Query(e) => Error::Query(DataFusionError::Context(ctx, Box::new(e))),
                ours => ours,
            },
            DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
                Ok(inner) => Error::from_datafusion(inner),
                Err(shared) => Error::Query(DataFusionError::Shared(shared)),
            },
            other => Error::Query(other),
        }
    }
}

/// DataFusion nests prefixes such as "External error: " and "Error during planning: "; users
/// need the message, not the layers.
fn strip_datafusion_prefixes(err: &DataFusionError) -> String {
    let text = err.to_string();
    let mut rest = text.as_str();
    loop {
        let before = rest;
        for prefix in [
            "External error: ",
            "Execution error: ",
            "Arrow error: ",
            "ObjectStore error: ",
        ] {
            if let Some(stripped) = rest.strip_prefix(prefix) {
                rest = stripped;
            }
        }
        if before == rest {
            break;
        }
    }
    rest.trim_end().to_string()
}
