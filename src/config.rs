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

use std::path::{Path, PathBuf};

use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    /// Flight SQL server settings (`gamelake serve --flight`).
    #[serde(default)]
    pub flight: FlightConfig,
    /// Who may log in to the Flight SQL server.
    #[serde(default)]
    pub users: Vec<crate::flight::User>,
    /// Log intake settings (`gamelake serve --http`).
    #[serde(default)]
    pub intake: crate::intake::IntakeConfig,
}

/// `[flight]`: bounds and lifetimes of the Flight SQL server. Durations are written like
/// `"30s"`, `"5m"`, `"12h"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightConfig {
    /// Queries that run at once; more wait in a queue (default 8).
    pub max_concurrent_queries: Option<usize>,
    /// How long a query waits for a slot before it is refused as busy (default 30s).
    #[serde(default, deserialize_with = "duration")]
    pub queue_timeout: Option<Duration>,
    /// How long a query may run (default 5m).
    #[serde(default, deserialize_with = "duration")]
    pub query_timeout: Option<Duration>,
    /// Memory one query may hold before it spills or fails, in MiB (default: the server's).
    pub query_memory_mb: Option<usize>,
    /// Memory all queries together may hold, in MiB (default: unbounded).
    pub server_memory_mb: Option<usize>,
    /// Lifetime of a login token and of a prepared statement (default 12h).
    #[serde(default, deserialize_with = "duration")]
    pub token_ttl: Option<Duration>,
    /// Lifetime of a ticket between GetFlightInfo and DoGet (default 10m).
    #[serde(default, deserialize_with = "duration")]
    pub ticket_ttl: Option<Duration>,
    /// Largest gRPC message the server accepts or sends, in MiB (default 64).
    pub max_message_mb: Option<usize>,
    /// How long table names are reused before the lake is listed again (default 5s).
    #[serde(default, deserialize_with = "duration")]
    pub catalog_ttl: Option<Duration>,
    /// Append every query to `system.query_log` (default true).
    pub query_log: Option<bool>,
}

/// Reads a human duration such as `"30s"` or `"5m"`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration ({e}); write e.g. \"30s\", \"5m\" or \"12h\""
        ))
    })
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

/// Parses a TOML file's text after `${VAR}` substitution (gamelake.toml, pipelines, reports):
/// a bad key or value is an error naming the file, line and column.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let text = &substitute_env(text, path)?;
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| line_column(text, s.start))
            .unwrap_or((1, 1));
        Error::config(path, line, column, e.message())
    })
}

/// Replaces `${NAME}` with the environment variable's value; a missing one is an error at its line.
pub(crate) fn substitute_env(text: &str, path: &Path) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        // `${` in a comment is prose, not a reference.
        let (code, comment) = line.split_at(comment_start(line));
        let mut rest = code;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let at = offset + (code.len() - rest.len()) + start;
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                let (line, column) = line_column(text, at);
                return Err(Error::config(path, line, column, "unclosed ${"));
            };
            let name = &after[..end];
            match std::env::var(name) {
                Ok(value) => out.push_str(&value),
                Err(_) => {
                    let (line, column) = line_column(text, at);
                    return Err(Error::config(
                        path,
                        line,
                        column,
                        &format!(
                            "environment variable {name} is not set (the file uses ${{{name}}})"
                        ),
                    ));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
        offset += line.len();
    }
    Ok(out)
}

/// Where a TOML line's comment starts: the first `#` outside a quoted string (or the end).
fn comment_start(line: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return i,
            None => {}
        }
    }
    line.len()
}

/// 1-based line and column of a byte offset.
/// Line and column of the first `needle` in a file's text, for errors about a value (1:1 when
/// it is not there).
pub(crate) fn position_of(text: &str, needle: &str) -> (usize, usize) {
    text.find(needle)
        .map(|offset| line_column(text, offset))
        .unwrap_or((1, 1))
}

pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The `*.toml` files of a folder (reports, pipelines), sorted by name.
pub fn toml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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
    fn reads_flight_settings_and_users() {
        let c = Config::parse(
            "[flight]\nquery_timeout = \"2m\"\n[[users]]\nname = \"ana\"\npassword_hash = \"$argon2id$x\"\nrole = \"admin\"\n",
            Path::new("g.toml"),
        )
        .unwrap();
        assert_eq!(c.flight.query_timeout, Some(Duration::from_secs(120)));
        assert_eq!(c.users[0].role, crate::flight::Role::Admin);
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
