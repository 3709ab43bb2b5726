//! The TOML toolkit every file of gamelake is read with (`gamelake.toml`, pipelines, reports):
//! `${VAR}` taken from the environment, errors that name the file, the line and the column, the
//! `*.toml` files of a folder, and durations written like `"30s"`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// Reads a human duration such as `"30s"` or `"5m"`.
pub fn duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration ({e}); write e.g. \"30s\", \"5m\" or \"12h\""
        ))
    })
}

/// Parses a TOML file's text after `${VAR}` substitution (gamelake.toml, pipelines, reports):
/// a bad key or value is an error naming the file, line and column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
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
pub fn substitute_env(text: &str, path: &Path) -> Result<String> {
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

/// Line and column of the first `needle` in a file's text, for errors about a value (1:1 when
/// it is not there).
pub fn position_of(text: &str, needle: &str) -> (usize, usize) {
    text.find(needle)
        .map(|offset| line_column(text, offset))
        .unwrap_or((1, 1))
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
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
