//! Table names as written in SQL: time travel and history suffixes, and "did you mean".

use crate::error::{Error, Result};
use crate::lake::TableVersion;

/// A table name inside a schema, with an optional version or history suffix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName {
    /// The table's folder name.
    pub table: String,
    /// `@v3` or `@<RFC 3339 instant>` / `@<date>`: an older state.
    pub version: Option<TableVersion>,
    /// `$history`: the commit log instead of the rows.
    pub history: bool,
}

impl TableName {
    /// Parses `orders`, `orders@v3`, `orders@2026-11-24T08:00:00Z`, `orders@2026-11-24`,
    /// or `orders$history`.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = |reason: String| Error::TableName {
            name: name.to_string(),
            reason,
        };
        if let Some(table) = name.strip_suffix("$history") {
            return Ok(Self {
                table: table.to_string(),
                version: None,
                history: true,
            });
        }
        let Some((table, at)) = name.split_once('@') else {
            return Ok(Self {
                table: name.to_string(),
                version: None,
                history: false,
            });
        };
        let version = if let Some(v) = at.strip_prefix('v').and_then(|v| v.parse::<u64>().ok()) {
            TableVersion::Version(v)
        } else if let Some(instant) = TableVersion::parse_instant(at) {
            TableVersion::AsOf(instant)
        } else {
            return Err(bad(format!(
                "'@{at}' is neither a version (@v3) nor an instant (@2026-11-24T08:00:00Z)"
            )));
        };
        Ok(Self {
            table: table.to_string(),
            version: Some(version),
            history: false,
        })
    }
}

/// Up to three existing names close to `wanted` (edit distance, case-insensitive).
pub fn suggest_tables(wanted: &str, existing: &[String]) -> Vec<String> {
    let wanted_lc = wanted.to_lowercase();
    let mut scored: Vec<(f64, &String)> = existing
        .iter()
        .map(|name| {
            let name_lc = name.to_lowercase();
            let whole = strsim::jaro_winkler(&wanted_lc, &name_lc);
            // Compare table parts too, so `shop.ordrs` finds `shop.orders` and `orders` finds it.
            let tail = wanted_lc.rsplit('.').next().unwrap_or(&wanted_lc);
            let name_tail = name_lc.rsplit('.').next().unwrap_or(&name_lc);
            (whole.max(strsim::jaro_winkler(tail, name_tail)), name)
        })
        .filter(|(score, _)| *score >= 0.8)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(TableName::parse("orders").unwrap().version, None);
        assert_eq!(
            TableName::parse("orders@v3").unwrap().version,
            Some(TableVersion::Version(3))
        );
        assert!(matches!(
            TableName::parse("orders@2026-11-24T08:00:00Z")
                .unwrap()
                .version,
            Some(TableVersion::AsOf(_))
        ));
        assert!(TableName::parse("orders$history").unwrap().history);
        assert!(TableName::parse("orders@yesterday").is_err());
    }

    #[test]
    fn suggests_close_names() {
        let existing = vec!["shop.orders".to_string(), "game.players".to_string()];
        assert_eq!(suggest_tables("shop.ordrs", &existing), vec!["shop.orders"]);
        assert_eq!(
            suggest_tables("game.player", &existing),
            vec!["game.players"]
        );
        assert!(suggest_tables("zzz.qqq", &existing).is_empty());
    }
}
