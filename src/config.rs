//! `gamelake.toml`: settings shared by every command. Unknown keys are errors that name the
//! file, the line and the key.
//!
//! ```toml
//! lake = "s3://game-lake/prod"     # overridden by --lake / GAMELAKE_LAKE
//! [query]
//! target_partitions = 4             # default: number of cores
//! memory_limit_mb = 4096            # default: unbounded
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::query::QuerySettings;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Lake location (local folder or `s3://bucket/prefix`), used when `--lake` is not given.
    pub lake: Option<String>,
    /// SQL engine settings.
    #[serde(default)]
    pub query: QueryConfig,
}

/// `[query]`: engine settings for every session.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Parallelism of query plans (default: number of cores).
    pub target_partitions: Option<usize>,
    /// Memory per session before operators spill or fail, in MiB (default: unbounded).
    pub memory_limit_mb: Option<usize>,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((1, 1));
            Error::Config {
                file: PathBuf::from(path),
                line,
                column,
                message: e.message().to_string(),
            }
        })
    }

    /// The engine settings this config asks for.
    pub fn query_settings(&self) -> QuerySettings {
        QuerySettings {
            target_partitions: self.query.target_partitions,
            memory_limit: self.query.memory_limit_mb.map(|mb| mb * 1024 * 1024),
        }
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_config() {
        let c = Config::parse(
            "lake = \"s3://b/l\"\n[query]\ntarget_partitions = 2\nmemory_limit_mb = 10\n",
            Path::new("g.toml"),
        )
        .unwrap();
        assert_eq!(c.lake.as_deref(), Some("s3://b/l"));
        assert_eq!(c.query_settings().memory_limit, Some(10 * 1024 * 1024));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = Config::parse(
            "lake = \"x\"\n[query]\ntarget_partitons = 2\n",
            Path::new("g.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("g.toml:3:1:"), "{err}");
        assert!(err.contains("target_partitons"), "{err}");
        assert!(
            err.contains("target_partitions"),
            "expected keys listed: {err}"
        );
    }

    #[test]
    fn wrong_type_says_what_is_expected() {
        let err = Config::parse(
            "[query]\ntarget_partitions = \"many\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("g.toml:2:"), "{err}");
    }
}
