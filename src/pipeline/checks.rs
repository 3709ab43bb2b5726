//! The checks a pipeline file passes before anything runs: each table's mode fits its source
//! or sink, names are plain (`schema.table`, quoted by gamelake), settings are in range. Every
//! mistake names the file, the line and what to write instead.

use std::path::Path;

use super::config::{Mode, PipelineConfig, SourceConfig};
use crate::error::{Error, Result};
use crate::lake::layout::{Codec, zstd_level};
use crate::toml_files::position_of;

/// A `from` is `table` or `schema.table`, names as they are (quoted by gamelake, so no quotes
/// of its own).
fn check_from(from: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = from.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty() || p.contains('"')) {
        return Err(format!(
            "from = \"{from}\": write table or schema.table, the names as they are (gamelake quotes them)"
        ));
    }
    Ok(())
}

impl PipelineConfig {
    /// Checks the tables of a `[sink]` pipeline: PostgreSQL targets filled by lake queries.
    pub(super) fn check_sink(&self, text: &str, path: &Path) -> Result<()> {
        for t in &self.tables {
            let (line, column) = position_of(text, &format!("\"{}\"", t.to));
            let fail = |message: String| Err(Error::config(path, line, column, &message));
            crate::lake::TableRef::parse(&t.to)
                .map_err(|e| Error::config(path, line, column, &e.to_string()))?;
            if let Some(from) = &t.from {
                check_from(from).or_else(fail)?;
            }
            let given = [t.from.is_some(), t.query.is_some(), t.query_file.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                return fail(format!(
                    "table {}: give exactly one of from (a lake table), query or query_file",
                    t.to
                ));
            }
            match t.mode {
                Mode::Replace => {}
                Mode::Upsert if t.key.is_empty() => {
                    return fail(format!(
                        "table {}: upsert needs key = [\"column\", ...] (the target's primary key)",
                        t.to
                    ));
                }
                Mode::Upsert => {}
                _ => {
                    return fail(format!(
                        "table {}: a [sink] table has mode = \"replace\" or \"upsert\"",
                        t.to
                    ));
                }
            }
        }
        Ok(())
    }

    /// A v1.0 migration: a MySQL source, a PostgreSQL sink, every table `mode = "migrate"`.
    pub fn is_migration(&self) -> bool {
        matches!(self.source, SourceConfig::Mysql { .. })
            && self.sink.is_some()
            && self.tables.iter().all(|t| t.mode == Mode::Migrate)
    }

    /// Checks the tables of a migration: each a `from` table, a time column, `hot_after`.
    fn check_migration(&self, text: &str, path: &Path) -> Result<()> {
        if self.schedule.is_some() {
            let (line, column) = position_of(text, "schedule");
            return Err(Error::config(
                path,
                line,
                column,
                "a migration runs once, by `gamelake ingest`: remove schedule",
            ));
        }
        for t in &self.tables {
            let (line, column) = position_of(text, &format!("\"{}\"", t.to));
            let fail = |message: String| Err(Error::config(path, line, column, &message));
            crate::lake::TableRef::parse(&t.to)
                .map_err(|e| Error::config(path, line, column, &e.to_string()))?;
            if let Some(hot) = &t.hot_to {
                crate::lake::TableRef::parse(hot)
                    .map_err(|e| Error::config(path, line, column, &e.to_string()))?;
            }
            match &t.from {
                Some(from) => check_from(from).or_else(fail)?,
                None => {
                    return fail(format!(
                        "table {}: migrate mode reads a whole table: give from = \"table\" (not query)",
                        t.to
                    ));
                }
            }
            if t.query.is_some() || t.time_column.is_none() {
                return fail(format!(
                    "table {}: migrate mode needs from = \"table\", time_column and hot_after (no query)",
                    t.to
                ));
            }
            if let Err(e) = t.hot_after_duration() {
                return fail(e.to_string());
            }
            if t.range_rows == Some(0) {
                return fail(format!("table {}: range_rows must be at least 1", t.to));
            }
        }
        Ok(())
    }

    pub(super) fn check(&self, text: &str, path: &Path) -> Result<()> {
        let at = |needle: &str| position_of(text, needle);
        if self.tables.is_empty() {
            return Err(Error::config(path, 1, 1, "no [[table]]: add at least one"));
        }
        if self.commit_interval.is_some() {
            let (line, column) = at("commit_interval");
            let fail = |message: &str| Err(Error::config(path, line, column, message));
            if self.tables.iter().any(|t| t.mode != Mode::Cdc) {
                return fail("commit_interval is for cdc pipelines: it spaces their commits");
            }
            if let Err(e) = self.commit_interval() {
                return fail(&e.to_string());
            }
        }
        if self.follow.is_some() {
            let (line, column) = at("follow");
            let fail = |message: &str| Err(Error::config(path, line, column, message));
            if self.schedule.is_some() {
                return fail(
                    "follow and schedule: a followed pipeline runs without end; keep one of them",
                );
            }
            if let Some(t) = self.tables.iter().find(|t| t.mode != Mode::Cdc) {
                return fail(&format!(
                    "follow is for pipelines of cdc tables, and {} is not one; put it in a pipeline of its own",
                    t.to
                ));
            }
            if let Err(e) = self.follow_interval() {
                return fail(&e.to_string());
            }
        }
        match (&self.source, &self.sink) {
            (SourceConfig::Lake, None) => {
                return Err(Error::config(
                    path,
                    1,
                    1,
                    "no [source] (kind = \"postgres\" or \"files\") and no [sink] (kind = \"postgres\"): add one",
                ));
            }
            (SourceConfig::Lake, Some(_)) => return self.check_sink(text, path),
            (SourceConfig::Mysql { .. }, Some(_)) if self.is_migration() => {
                return self.check_migration(text, path);
            }
            (_, Some(_)) => {
                let (line, column) = at("[sink]");
                return Err(Error::config(
                    path,
                    line,
                    column,
                    "a pipeline with a [sink] reads the lake: remove its [source]",
                ));
            }
            _ => {}
        }
        for t in &self.tables {
            let (line, column) = at(&format!("\"{}\"", t.to));
            let fail = |message: String| Err(Error::config(path, line, column, &message));
            crate::lake::TableRef::parse(&t.to)
                .map_err(|e| Error::config(path, line, column, &e.to_string()))?;
            if !t.run.is_empty() || !t.params.is_empty() {
                let (line, column) = at(if t.run.is_empty() { "params" } else { "run" });
                let message = format!(
                    "table {}: run and params are for [sink] pipelines (queries over the lake published to PostgreSQL)",
                    t.to
                );
                return Err(Error::config(path, line, column, &message));
            }
            if let Some(Err(expected)) = t.zstd_level.map(zstd_level) {
                let (line, column) = at("zstd_level");
                let message = format!("table {}: {expected}", t.to);
                return Err(Error::config(path, line, column, &message));
            }
            if let Some(Err(expected)) = t.compression.as_deref().map(Codec::parse) {
                let (line, column) = at("compression");
                let message = format!("table {}: {expected}", t.to);
                return Err(Error::config(path, line, column, &message));
            }
            let files = matches!(self.source, SourceConfig::Files { .. });
            if files {
                if t.mode != Mode::Append || t.from.is_some() || t.query.is_some() {
                    return fail(format!(
                        "table {}: a files source fills tables with mode = \"append\" and no from/query",
                        t.to
                    ));
                }
                if let Err(e) = crate::records::check_rules(&t.row_rules()) {
                    return fail(e.to_string());
                }
                continue;
            }
            if t.time_field.is_some()
                || t.time_format.is_some()
                || t.timezone.is_some()
                || !t.columns.is_empty()
                || !t.required.is_empty()
                || t.new_fields.is_some()
            {
                return fail(format!(
                    "table {}: time_field, time_format, timezone, columns, required and new_fields are for files sources",
                    t.to
                ));
            }
            if let Some(from) = &t.from {
                check_from(from).or_else(fail)?;
            }
            if t.from.is_some() == t.query.is_some() {
                return fail(format!(
                    "table {}: give exactly one of `from` (a table) or `query`",
                    t.to
                ));
            }
            if t.changelog && t.mode != Mode::Cdc {
                return fail(format!(
                    "table {}: changelog = true is for cdc tables (it records the replication stream's changes)",
                    t.to
                ));
            }
            if t.cursor_overlap.is_some() && t.mode != Mode::Incremental {
                return fail(format!(
                    "table {}: cursor_overlap is for incremental tables with an integer cursor",
                    t.to
                ));
            }
            match t.mode {
                Mode::Snapshot => {}
                Mode::Incremental if t.key.is_empty() || t.cursor.is_none() => {
                    return fail(format!(
                        "table {}: incremental mode needs key = [...] and cursor = \"column\"",
                        t.to
                    ));
                }
                Mode::Incremental => {}
                Mode::Cdc if !matches!(self.source, SourceConfig::Postgres { .. }) => {
                    return fail(format!(
                        "table {}: cdc mode reads PostgreSQL's logical replication stream: it needs [source] kind = \"postgres\"",
                        t.to
                    ));
                }
                Mode::Cdc if t.from.is_none() => {
                    return fail(format!(
                        "table {}: cdc mode captures a table: set from = \"schema.table\" instead of query",
                        t.to
                    ));
                }
                Mode::Cdc => {}
                Mode::Archive if matches!(self.source, SourceConfig::Mysql { .. }) => {
                    return fail(format!(
                        "table {}: archive mode is for PostgreSQL sources; a MySQL source has snapshot and incremental tables",
                        t.to
                    ));
                }
                Mode::Archive => {
                    if t.from.is_none() || t.key.is_empty() || t.time_column.is_none() {
                        return fail(format!(
                            "table {}: archive mode needs from = \"schema.table\", key = [...] and time_column",
                            t.to
                        ));
                    }
                    if let Err(e) = t.archive_after_duration() {
                        return fail(e.to_string());
                    }
                }
                Mode::Append => {
                    return fail(format!(
                        "table {}: mode = \"append\" is for files sources; PostgreSQL tables use snapshot, incremental or archive",
                        t.to
                    ));
                }
                Mode::Replace | Mode::Upsert => {
                    return fail(format!(
                        "table {}: replace and upsert are for [sink] pipelines; PostgreSQL tables use snapshot, incremental or archive",
                        t.to
                    ));
                }
                Mode::Migrate => {
                    return fail(format!(
                        "table {}: migrate mode needs [source] kind = \"mysql\" and a [sink] kind = \"postgres\" for the newer rows",
                        t.to
                    ));
                }
            }
        }
        if let SourceConfig::Postgres {
            slot: Some(slot), ..
        } = &self.source
            && (slot.is_empty()
                || slot.len() > 63
                || !slot
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        {
            let (line, column) = at("slot");
            return Err(Error::config(
                path,
                line,
                column,
                &format!(
                    "slot = \"{slot}\": a replication slot's name is 1 to 63 lower-case letters, digits and underscores"
                ),
            ));
        }
        if let SourceConfig::Postgres { parallelism, .. } | SourceConfig::Mysql { parallelism, .. } =
            &self.source
            && !(1..=64).contains(parallelism)
        {
            let (line, column) = at("parallelism");
            return Err(Error::config(
                path,
                line,
                column,
                "parallelism must be 1 to 64",
            ));
        }
        Ok(())
    }
}
