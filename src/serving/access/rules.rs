//! The access rules file: for readers, which tables they may read, which of their rows (a row
//! filter) and what each column shows (a mask, or NULL for a hidden column). In the spirit of
//! Trino's file-based access control: rules in order, the first that matches both the user and
//! the table decides, and a table no rule matches is not readable. Admins are not subject to
//! rules.
//!
//! ```toml
//! [[rules]]
//! group = "analysts_bj"                       # or user = "ana" (a glob); neither: everyone
//! tables = ["game.players", "game.purchases"] # globs over [catalog.]schema.table
//! filter = "region = user_attribute('region')"
//! hide = ["phone"]
//! mask = { email = "left(email, 2) || '***'" }
//!
//! [[rules]]
//! tables = ["game.*"]                         # everything else in game, unrestricted
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::common::ResolvedTableReference;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use glob::{MatchOptions, Pattern};
use serde::Deserialize;

use super::super::auth::Principal;
use super::quotas::{Quota, QuotaEntry};
use crate::error::{Error, Result};
use crate::query::CATALOG;
use crate::toml_files::{line_column, parse_toml, substitute_env};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<toml::Spanned<RuleEntry>>,
    #[serde(default)]
    quotas: Vec<toml::Spanned<QuotaEntry>>,
}

/// One `[[rules]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    /// A glob over user names (default: every user).
    #[serde(default)]
    user: Option<String>,
    /// A group the user must belong to (`groups` in `[[users]]`).
    #[serde(default)]
    group: Option<String>,
    /// Globs over `catalog.schema.table`; `schema.table` means a lake table.
    tables: Vec<String>,
    /// Whether the tables may be read (default true); `false` denies them.
    #[serde(default = "allowed")]
    allow: bool,
    /// A SQL predicate over the table's columns: only rows where it is true are read.
    #[serde(default)]
    filter: Option<String>,
    /// Column name → SQL expression read in its place.
    #[serde(default)]
    mask: BTreeMap<String, String>,
    /// Columns read as NULL.
    #[serde(default)]
    hide: Vec<String>,
}

fn allowed() -> bool {
    true
}

/// The rules of one file, checked.
#[derive(Debug)]
pub struct Rules {
    path: PathBuf,
    rules: Vec<Rule>,
    quotas: Vec<Quota>,
}

/// One rule, checked: its globs compiled, its SQL parsed once.
#[derive(Debug)]
pub struct Rule {
    /// Its place in the file, for messages and the query log: `access.toml rule 2 (line 7)`.
    pub origin: String,
    user: Pattern,
    group: Option<String>,
    tables: Vec<Pattern>,
    /// Whether the tables may be read.
    pub allow: bool,
    /// The row filter's SQL.
    pub filter: Option<String>,
    /// Masked columns and the SQL read in their place.
    pub masks: BTreeMap<String, String>,
    /// Columns read as NULL.
    pub hidden: Vec<String>,
}

impl Rule {
    /// Whether the rule lets rows or values be read only in part (a filter, a mask, a hidden
    /// column).
    pub fn restricts(&self) -> bool {
        self.filter.is_some() || !self.masks.is_empty() || !self.hidden.is_empty()
    }
}

/// How a user may read a table.
pub enum Access<'a> {
    /// Not at all: the rule that denies it, or None when no rule matches.
    Denied(Option<&'a Rule>),
    /// As the rule says (all of it when the rule restricts nothing).
    Allowed(&'a Rule),
}

/// Glob matching over dotted names: `*` stays inside one part (`game.*` is every table of
/// `game`, not of `game.x.y`).
const DOTTED: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Rules {
    /// Reads and checks a rules file: a mistake is an error naming the file, the line and the
    /// field.
    pub fn load(path: &Path) -> Result<Self> {
        let raw = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&raw, path)
    }

    /// Parses the text of a rules file read from `path`.
    pub fn parse(raw: &str, path: &Path) -> Result<Self> {
        let file: RulesFile = parse_toml(raw, path)?;
        let text = substitute_env(raw, path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let mut rules = Vec::new();
        for (i, spanned) in file.rules.into_iter().enumerate() {
            let span = spanned.span();
            let (line, column) = line_column(&text, span.start);
            let at = |message: String| Error::config(path, line, column, &message);
            // A mistake in a field is reported at the field's line within the rule.
            let at_field = |field: &str, message: String| {
                // The rule's text: from its header to the next table header (toml's span of
                // an array-of-tables element covers only its header).
                let rest = &text[span.start.min(text.len())..];
                let end = rest[1..].find("\n[").map_or(rest.len(), |i| i + 1);
                let within = &rest[..end];
                let (line, column) = within
                    .find(&format!("{field} "))
                    .or_else(|| within.find(field))
                    .map_or((line, column), |offset| {
                        line_column(&text, span.start + offset)
                    });
                Error::config(path, line, column, &message)
            };
            let entry = spanned.into_inner();
            let number = i + 1;
            let user = entry.user.as_deref().unwrap_or("*");
            let user = Pattern::new(user).map_err(|e| {
                at_field(
                    "user",
                    format!("rule {number}: user '{user}' is not a glob: {e}"),
                )
            })?;
            if entry.tables.is_empty() {
                return Err(at_field(
                    "tables",
                    format!(
                        "rule {number}: tables is empty; name the tables it covers, e.g. tables = [\"game.*\"]"
                    ),
                ));
            }
            let tables = entry
                .tables
                .iter()
                .map(|t| {
                    table_pattern(t)
                        .map_err(|e| at_field("tables", format!("rule {number}: tables: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            if !entry.allow
                && (entry.filter.is_some() || !entry.mask.is_empty() || !entry.hide.is_empty())
            {
                return Err(at(format!(
                    "rule {number}: allow = false denies the tables; a filter, mask or hide has nothing to apply to"
                )));
            }
            if let Some(filter) = &entry.filter {
                check_expression(filter).map_err(|e| {
                    at_field(
                        "filter",
                        format!("rule {number}: filter '{filter}' is not a SQL expression: {e}"),
                    )
                })?;
            }
            for (column, mask) in &entry.mask {
                check_expression(mask).map_err(|e| {
                    at_field(
                        column,
                        format!(
                            "rule {number}: mask of {column} '{mask}' is not a SQL expression: {e}"
                        ),
                    )
                })?;
                if entry.hide.contains(column) {
                    return Err(at_field(
                        "hide",
                        format!("rule {number}: {column} is both masked and hidden; keep one"),
                    ));
                }
            }
            rules.push(Rule {
                origin: format!("{name} rule {number} (line {line})"),
                user,
                group: entry.group,
                tables,
                allow: entry.allow,
                filter: entry.filter,
                masks: entry.mask,
                hidden: entry.hide,
            });
        }
        let mut quotas = Vec::new();
        for (i, spanned) in file.quotas.into_iter().enumerate() {
            let (line, column) = line_column(&text, spanned.span().start);
            let origin = format!("{name} quota {} (line {line})", i + 1);
            let quota = Quota::new(spanned.into_inner(), origin.clone())
                .map_err(|e| Error::config(path, line, column, &format!("quota {}: {e}", i + 1)))?;
            quotas.push(quota);
        }
        Ok(Self {
            path: path.to_path_buf(),
            rules,
            quotas,
        })
    }

    /// The file the rules were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the file holds no rule (then no reader may read any table).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The quota `who` runs under, if any matches (the first that does).
    pub fn quota(&self, who: &Principal) -> Option<&Quota> {
        self.quotas.iter().find(|q| q.matches(who))
    }

    /// How `who` may read `table` (a base table's name: no time travel or history suffix).
    pub fn access(&self, who: &Principal, table: &ResolvedTableReference) -> Access<'_> {
        let name = format!("{}.{}.{}", table.catalog, table.schema, table.table);
        let rule = self.rules.iter().find(|rule| {
            rule.user.matches(&who.user)
                && rule.group.as_ref().is_none_or(|g| who.groups.contains(g))
                && rule
                    .tables
                    .iter()
                    .any(|t| t.matches_with(&name.replace('.', "/"), DOTTED))
        });
        match rule {
            Some(rule) if rule.allow => Access::Allowed(rule),
            rule => Access::Denied(rule),
        }
    }
}

/// A table glob as a pattern over `catalog/schema/table`: `*` is every table, `schema.table`
/// a lake table, `catalog.schema.table` any.
fn table_pattern(glob: &str) -> std::result::Result<Pattern, String> {
    let parts: Vec<&str> = glob.split('.').collect();
    let full = match parts.as_slice() {
        ["*"] => "*/*/*".to_string(),
        [schema, table] => format!("{CATALOG}/{schema}/{table}"),
        [catalog, schema, table] => format!("{catalog}/{schema}/{table}"),
        _ => {
            return Err(format!(
                "'{glob}' is neither schema.table nor catalog.schema.table (globs allowed, e.g. game.* or pg.public.*)"
            ));
        }
    };
    Pattern::new(&full).map_err(|e| format!("'{glob}' is not a glob: {e}"))
}

/// Parses a rule's SQL expression (checked when the file is read, so a typo is found before
/// any query runs; the columns it names are checked against each table it is applied to).
fn check_expression(sql: &str) -> std::result::Result<(), String> {
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .map_err(|e| e.to_string())?;
    parser.parse_expr().map_err(|e| e.to_string())?;
    parser
        .expect_token(&datafusion::sql::sqlparser::tokenizer::Token::EOF)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::Role;

    fn rules(text: &str) -> Result<Rules> {
        Rules::parse(text, Path::new("access.toml"))
    }

    fn table(name: &str) -> ResolvedTableReference {
        let mut parts = name.splitn(3, '.');
        ResolvedTableReference {
            catalog: parts.next().unwrap().into(),
            schema: parts.next().unwrap().into(),
            table: parts.next().unwrap().into(),
        }
    }

    fn reader(name: &str, groups: &[&str]) -> Principal {
        let mut who = Principal::new(name, Role::Reader);
        who.groups = groups.iter().map(|g| g.to_string()).collect();
        who
    }

    fn decided_by(rules: &Rules, who: &Principal, name: &str) -> Option<String> {
        match rules.access(who, &table(name)) {
            Access::Allowed(rule) => Some(rule.origin.clone()),
            Access::Denied(_) => None,
        }
    }

    #[test]
    fn the_first_rule_matching_user_and_table_decides() {
        let r = rules(
            "[[rules]]\ngroup = \"bj\"\ntables = [\"game.players\"]\nfilter = \"region = 'bj'\"\n\
             [[rules]]\nuser = \"ops-*\"\ntables = [\"game.*\", \"pg.public.*\"]\n\
             [[rules]]\ntables = [\"game.secret\"]\nallow = false\n\
             [[rules]]\ntables = [\"game.*\"]\n",
        )
        .unwrap();
        let ana = reader("ana", &["bj"]);
        assert_eq!(
            decided_by(&r, &ana, "gamelake.game.players").as_deref(),
            Some("access.toml rule 1 (line 1)")
        );
        assert_eq!(
            decided_by(&r, &ana, "gamelake.game.items").as_deref(),
            Some("access.toml rule 4 (line 11)")
        );
        assert_eq!(decided_by(&r, &ana, "gamelake.game.secret"), None);
        assert_eq!(decided_by(&r, &ana, "pg.public.orders"), None);
        assert_eq!(decided_by(&r, &ana, "gamelake.logs.events"), None);
        let ops = reader("ops-1", &[]);
        assert_eq!(
            decided_by(&r, &ops, "gamelake.game.players").as_deref(),
            Some("access.toml rule 2 (line 5)")
        );
        assert!(decided_by(&r, &ops, "pg.public.orders").is_some());
        // A glob's * stays inside one part of the name.
        assert_eq!(decided_by(&r, &ops, "pg.public.x.y"), None);
    }

    #[test]
    fn mistakes_name_the_line_and_the_field() {
        for (text, expected) in [
            ("[[rules]]\ntables = []\n", "2:1: rule 1: tables is empty"),
            (
                "[[rules]]\ntables = [\"a\"]\n\n[[rules]]\ntables = [\"a.b.c.d\"]\n",
                "rule 1: tables: 'a' is neither",
            ),
            (
                "[[rules]]\ntables = [\"*\"]\nfilter = \"region = \"\n",
                "rule 1: filter 'region = ' is not a SQL expression",
            ),
            (
                "[[rules]]\ntables = [\"*\"]\nmask = { email = \"left(email, 2\" }\n",
                "rule 1: mask of email 'left(email, 2' is not a SQL expression",
            ),
            (
                "[[rules]]\ntables = [\"*\"]\nallow = false\nfilter = \"true\"\n",
                "allow = false denies the tables",
            ),
            (
                "[[rules]]\ntables = [\"*\"]\nrows = \"x\"\n",
                "unknown field `rows`",
            ),
            (
                "[[rules]]\ntables = [\"*\"]\nhide = [\"a\"]\nmask = { a = \"1\" }\n",
                "a is both masked and hidden",
            ),
        ] {
            let err = rules(text).unwrap_err().to_string();
            assert!(err.contains("access.toml"), "{err}");
            assert!(err.contains(expected), "{text}: {err}");
        }
        let err = rules("\n\n[[rules]]\ntables = [\"x.y\"]\nfilter = \"a b c\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("access.toml:5:1"), "{err}");
    }
}
