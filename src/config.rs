//! `gamelake.toml`: settings shared by every command. Unknown keys are errors that name the
//! file, the line and the key; `${VAR}` takes a value from the environment.
//!
//! ```toml
//! lake = "s3://game-lake/prod"     # overridden by --lake / GAMELAKE_LAKE
//! [query]
//! target_partitions = 4             # default: number of cores
//! memory_limit_mb = 4096            # default: unbounded
//! [flight]                          # gamelake serve --flight
//! query_timeout = "5m"
//! [[users]]                         # Flight SQL logins
//! name = "analyst"
//! password_hash = "$argon2id$v=19$..."   # gamelake hash-password
//! role = "reader"                   # or "admin"
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::query::QuerySettings;
use crate::toml_files::parse_toml;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Lake location (local folder or `s3://bucket/prefix`), used when `--lake` is not given.
    pub lake: Option<String>,
    /// SQL engine settings.
    #[serde(default)]
    pub query: QueryConfig,
    /// Flight SQL server settings (`gamelake serve --flight`).
    #[serde(default)]
    pub flight: crate::flight::FlightConfig,
    /// Who may log in to the Flight SQL server.
    #[serde(default)]
    pub users: Vec<crate::serving::User>,
    /// Log intake settings (`gamelake serve --http`).
    #[serde(default)]
    pub intake: crate::intake::IntakeConfig,
    /// Replicas of the lake that `gamelake serve --schedule` keeps following.
    #[serde(default)]
    pub replicas: Vec<crate::lake::replicate::ReplicaConfig>,
    /// Regional lakes every SQL session sees, by name: `bj = "s3://bj-lake/lake"`, or
    /// `sh = { url = "s3://sh-lake/lake", options = { AWS_ENDPOINT_URL = "..." } }`.
    #[serde(default)]
    pub lakes: std::collections::BTreeMap<String, LakeEntry>,
    /// PostgreSQL that ratifies every commit to the lake before it is written
    /// (`postgres://user@host/db`): safe commits on stores without conditional put, such as
    /// Aliyun OSS. Overridden by `GAMELAKE_COMMIT_COORDINATOR`.
    pub commit_coordinator: Option<crate::secret::Secret>,
}

/// One `[lakes]` entry: a URL, or a URL with its own storage settings.
#[derive(Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a lake URL (\"s3://bucket/prefix\" or a folder), or { url = \"...\", options = { AWS_ENDPOINT_URL = \"...\" } }"
)]
pub enum LakeEntry {
    /// Reached with the `AWS_*` environment.
    Url(String),
    /// Reached with these settings over the environment's.
    WithOptions {
        /// The lake's URL.
        url: String,
        /// Storage settings (`AWS_*` names) that differ from the environment.
        #[serde(default)]
        options: std::collections::HashMap<String, String>,
    },
}

impl std::fmt::Debug for LakeEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(url) => f.debug_tuple("Url").field(url).finish(),
            Self::WithOptions { url, options } => f
                .debug_struct("WithOptions")
                .field("url", url)
                .field("option_names", &crate::secret::option_names(options))
                .finish(),
        }
    }
}

impl LakeEntry {
    /// Opens the lake this entry names.
    pub fn open(&self) -> Result<crate::lake::Lake> {
        match self {
            Self::Url(url) => crate::lake::Lake::open(url),
            Self::WithOptions { url, options } => {
                crate::lake::Lake::open_with_options(url, options.clone())
            }
        }
    }
}

/// `[query]`: engine settings for every session.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Parallelism of query plans (default: number of cores).
    pub target_partitions: Option<usize>,
    /// Memory per session before operators spill or fail, in MiB (default: unbounded).
    pub memory_limit_mb: Option<usize>,
    /// Run queries on this Ballista cluster, `df://host:port` (`--cluster` wins).
    pub cluster: Option<String>,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        parse_toml(text, path)
    }

    /// The engine settings this config asks for.
    pub fn query_settings(&self) -> QuerySettings {
        QuerySettings {
            target_partitions: self.query.target_partitions,
            memory_limit: self.query.memory_limit_mb.map(|mb| mb * 1024 * 1024),
            ..QuerySettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

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
    fn reads_lakes_as_urls_or_with_options_and_hides_secrets() {
        let c = Config::parse(
            "[lakes]\nbj = \"/tmp/bj\"\nsh = { url = \"s3://sh-lake/l\", options = { AWS_SECRET_ACCESS_KEY = \"hunter2\" } }\n",
            Path::new("g.toml"),
        )
        .unwrap();
        assert!(matches!(&c.lakes["bj"], LakeEntry::Url(u) if u == "/tmp/bj"));
        let shown = format!("{c:?}");
        assert!(
            shown.contains("AWS_SECRET_ACCESS_KEY") && !shown.contains("hunter2"),
            "{shown}"
        );
        let err = Config::parse("[lakes]\nbj = 3\n", Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("g.toml:2:"), "{err}");
        assert!(err.contains("a lake URL"), "{err}");
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
    fn reads_flight_settings_and_users() {
        let c = Config::parse(
            "[flight]\nquery_timeout = \"2m\"\n[[users]]\nname = \"ana\"\npassword_hash = \"$argon2id$x\"\nrole = \"admin\"\n",
            Path::new("g.toml"),
        )
        .unwrap();
        assert_eq!(c.flight.query_timeout, Some(Duration::from_secs(120)));
        assert_eq!(c.users[0].role, crate::serving::Role::Admin);
        let err = Config::parse("[flight]\nquery_timeout = \"soon\"\n", Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("g.toml:2:"), "{err}");
        assert!(err.contains("30s"), "{err}");
        let err = Config::parse(
            "[[users]]\nname = \"a\"\npassword_hash = \"h\"\nrole = \"root\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("g.toml:4:"), "{err}");
    }

    #[test]
    fn reads_intake_settings_with_environment_values() {
        // SAFETY: tests in this module set distinct variables.
        unsafe { std::env::set_var("GAMELAKE_TEST_INTAKE_TOKEN", "from-the-environment") };
        let c = Config::parse(
            "[intake]\ncommit_interval = \"250ms\"\n[[intake.tokens]]\nname = \"bj\"\ntoken = \"${GAMELAKE_TEST_INTAKE_TOKEN}\"\n[[intake.tables]]\nname = \"logs.events\"\ntime_format = \"epoch_ms\"\n",
            Path::new("g.toml"),
        )
        .unwrap();
        assert_eq!(c.intake.tokens[0].token, "from-the-environment");
        let settings = c.intake.settings(Some(PathBuf::from("/lake"))).unwrap();
        assert_eq!(settings.commit_interval, Duration::from_millis(250));
        assert_eq!(settings.wal_dir, PathBuf::from("/lake/_wal"));
        assert!(
            c.intake
                .settings(None)
                .unwrap_err()
                .to_string()
                .contains("wal_dir")
        );
        let err = Config::parse(
            "[intake]\n[[intake.tables]]\nname = \"logs.events\"\ntime_format = \"epoch_ns\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("g.toml:4:"), "{err}");
        assert!(err.contains("epoch_ms"), "{err}");
        let err = Config::parse(
            "[intake]\nnode = \"${GAMELAKE_TEST_UNSET_VAR}\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("g.toml:2:"), "{err}");
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
