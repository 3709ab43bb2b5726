//! `schema.table` names and the folders they map to.

use std::fmt;

use crate::error::{Error, Result};

/// A table in the lake: `<lake>/<schema>/<table>/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    /// The schema (the first folder level).
    pub schema: String,
    /// The table (the second folder level).
    pub table: String,
}

impl TableRef {
    /// Builds a reference from its two parts, checking that each is a valid folder name.
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Result<Self> {
        let (schema, table) = (schema.into(), table.into());
        let name = format!("{schema}.{table}");
        check_part(&name, &schema)?;
        if table != REJECTED {
            check_part(&name, &table)?;
        }
        Ok(Self { schema, table })
    }

    /// Parses `schema.table`.
    pub fn parse(name: &str) -> Result<Self> {
        match name.split_once('.') {
            Some((schema, table)) => Self::new(schema, table),
            None => Err(Error::TableName {
                name: name.into(),
                reason: "expected schema.table, for example game.players".into(),
            }),
        }
    }

    /// The table's folder relative to the lake root, ending in `/`.
    pub fn folder(&self) -> String {
        format!("{}/{}/", self.schema, self.table)
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// The one table name that starts with `_`: `<schema>._rejected` holds the records the log
/// intake could not turn into rows, with the reason.
pub const REJECTED: &str = "_rejected";

/// Whether a folder name under a schema can be a table (a visible folder, or `_rejected`).
pub fn is_table_folder(name: &str) -> bool {
    is_visible_folder(name) || name == REJECTED
}

/// Whether a folder name under the lake can be a schema or table (folders starting with `_` or
/// `.` belong to gamelake or to other tools, e.g. `_reports`, `_delta_log`).
pub fn is_visible_folder(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('_') && !name.starts_with('.')
}

fn check_part(name: &str, part: &str) -> Result<()> {
    let bad = |reason: &str| Error::TableName {
        name: name.into(),
        reason: reason.into(),
    };
    if part.is_empty() {
        return Err(bad("schema and table names cannot be empty"));
    }
    if !is_visible_folder(part) {
        return Err(bad(
            "names cannot start with '_' or '.' (reserved for gamelake's own folders)",
        ));
    }
    if let Some(c) = part
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '.' | '@' | '$') || c.is_control())
    {
        return Err(bad(&format!("names cannot contain {c:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schema_dot_table() {
        let t = TableRef::parse("game.players").unwrap();
        assert_eq!(t.folder(), "game/players/");
        assert_eq!(t.to_string(), "game.players");
    }

    #[test]
    fn rejects_what_cannot_be_a_folder() {
        for bad in [
            "players",
            "game.",
            "_x.y",
            "a.b/c",
            "a.b.c",
            "a.b@v1",
            "a._b",
            "_rejected.x",
        ] {
            assert!(TableRef::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            TableRef::parse("logs._rejected").unwrap().folder(),
            "logs/_rejected/"
        );
    }
}
