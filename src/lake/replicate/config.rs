//! `[[replicas]]` in gamelake.toml: the replicas `gamelake serve --schedule` keeps following.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;

use super::{DEFAULT_PARALLEL, ReplicateOptions, Replicator};
use crate::error::{Error, Result};
use crate::lake::Lake;

/// `[[replicas]]` in gamelake.toml: a replica `gamelake serve --schedule` keeps following.
///
/// ```toml
/// [[replicas]]
/// name = "shanghai"
/// to = "s3://sh-lake/lake"
/// tables = ["game.*", "logs.*"]
/// interval = "1s"
/// [replicas.options]
/// AWS_ENDPOINT_URL = "http://sh-s3.internal:9000"
/// AWS_SECRET_ACCESS_KEY = "${SH_SECRET}"
/// ```
#[derive(Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// Its name: the metrics label `replica/<name>`.
    pub name: String,
    /// Where the replica lives: a local folder or `s3://bucket/prefix`.
    pub to: String,
    /// Only tables matching these globs over `schema.table` (default: every table).
    #[serde(default)]
    pub tables: Vec<String>,
    /// The pause between rounds (default 1s).
    #[serde(default, deserialize_with = "crate::toml_files::duration")]
    pub interval: Option<Duration>,
    /// Files copied at once (default [`DEFAULT_PARALLEL`]).
    pub parallel: Option<usize>,
    /// Storage settings of the replica that differ from the `AWS_*` environment (holds
    /// secrets: `Debug` shows only the names).
    #[serde(default)]
    pub options: HashMap<String, String>,
}

impl std::fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("name", &self.name)
            .field("to", &self.to)
            .field("tables", &self.tables)
            .field("interval", &self.interval)
            .field("parallel", &self.parallel)
            .field("option_names", &crate::secret::option_names(&self.options))
            .finish()
    }
}

impl ReplicaConfig {
    /// The replicator this entry describes, copying from `from`.
    pub fn replicator(&self, from: Arc<Lake>) -> Result<Replicator> {
        let to = Lake::open_with_options(&self.to, self.options.clone())?;
        let options = ReplicateOptions {
            tables: parse_globs(&self.tables)?,
            parallel: self.parallel.unwrap_or(DEFAULT_PARALLEL).max(1),
            progress: ProgressBar::hidden(),
        };
        Replicator::new(from, Arc::new(to), options)
    }
}

/// Table globs (`game.*`), each checked.
pub fn parse_globs(globs: &[String]) -> Result<Vec<glob::Pattern>> {
    globs
        .iter()
        .map(|t| {
            glob::Pattern::new(t)
                .map_err(|e| Error::Invalid(format!("tables: '{t}' is not a glob pattern: {e}")))
        })
        .collect()
}
