//! Rewrites of what PostgreSQL's clients send that DataFusion cannot plan as written, beyond
//! datafusion-pg-catalog's own; each keeps PostgreSQL's answer.
//!
//! - `x LIKE p ESCAPE 'c'` with an escape character other than the backslash (SQLAlchemy
//!   lists schemas with `NOT LIKE 'pg/_%' ESCAPE '/'`): DataFusion only knows the backslash,
//!   so the pattern becomes `replace(replace(p, '\', '\\'), 'c', '\')`: backslashes that
//!   were plain characters stay plain, and `c` escapes as the backslash does. (A doubled `cc`,
//!   an escaped escape character, is not kept; no client seen sends one.)
//! - `pg_indexes` without a schema is `pg_catalog.pg_indexes`, as PostgreSQL finds it
//!   (datafusion-pg-catalog qualifies the tables it has, and it has no `pg_indexes`).
//! - A scalar subquery over `pg_catalog` tables (SQLAlchemy's `get_columns` looks up each
//!   column's default, identity and collation so, inside `CASE`) is written as DataFusion can
//!   decorrelate it: its value aggregated with `max` (DataFusion requires an aggregate; a
//!   catalog lookup by key finds at most one row, where `max` is that row's value — PostgreSQL
//!   would fail on two rows, this takes the larger), and the conditions of its `WHERE` that
//!   name only the outer query's columns moved out of it, into `CASE WHEN cond THEN (subquery)
//!   END` (a subquery with no row is NULL, as the `CASE` without a match). One over tables
//!   that are always empty here ([`ALWAYS_EMPTY`]) is NULL.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, ObjectNamePart, Query, SelectItem, SetExpr,
    Statement, TableFactor, Value, visit_expressions, visit_expressions_mut, visit_relations_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// `statement` with the rewrites applied.
pub fn rewrite(mut statement: Statement) -> Statement {
    let _ = visit_relations_mut(&mut statement, |name| {
        if let [ObjectNamePart::Identifier(table)] = name.0.as_slice()
            && table.value.eq_ignore_ascii_case(super::catalog::PG_INDEXES)
        {
            name.0
                .insert(0, ObjectNamePart::Identifier(Ident::new("pg_catalog")));
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
            && let Some(escape) = escape_char
            && let Value::SingleQuotedString(c) = &escape.value
            && c.chars().count() == 1
            && c != "\\"
            && let Some(rewritten) = parse_expr(&format!(
                "replace(replace({pattern}, '\\', '\\\\'), '{}', '\\')",
                c.replace('\'', "''")
            ))
        {
            **pattern = rewritten;
            *escape_char = None;
        }
        if let Expr::Subquery(query) = expr
            && let Some(rewritten) = catalog_subquery(query)
        {
            *expr = rewritten;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `pg_catalog` tables that hold no row in this server: the lake's columns have no defaults
/// (`pg_attrdef`) and no sequences feed them (`pg_sequence`). A scalar subquery over them is
/// NULL, whatever it names (SQLAlchemy's identity lookup names outer columns in its value,
/// which DataFusion cannot decorrelate).
const ALWAYS_EMPTY: [&str; 2] = ["pg_attrdef", "pg_sequence"];

/// Aggregate functions a catalog subquery's value may already be (it is then left as it is).
const AGGREGATES: [&str; 9] = [
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
];

/// A scalar subquery over `pg_catalog` tables only, as DataFusion can decorrelate it (see the
/// module's comment); None for any other subquery, left as it is.
fn catalog_subquery(query: &Query) -> Option<Expr> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let relations = select
        .from
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)));
    // The names the subquery's own columns are qualified with: each table's name and alias.
    let (mut tables, mut inner) = (Vec::new(), Vec::new());
    for relation in relations {
        let TableFactor::Table { name, alias, .. } = relation else {
            return None;
        };
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.to_string().to_lowercase())
            .collect();
        let in_catalog = match parts.as_slice() {
            [schema, _] => schema == "pg_catalog",
            [table] => table.starts_with("pg_"),
            _ => false,
        };
        if !in_catalog {
            return None;
        }
        tables.extend(parts.last().cloned());
        inner.extend(parts.last().cloned());
        inner.extend(alias.as_ref().map(|a| a.name.value.to_lowercase()));
    }
    if !tables.is_empty() && tables.iter().all(|t| ALWAYS_EMPTY.contains(&t.as_str())) {
        return Some(Expr::Value(Value::Null.with_empty_span()));
    }
    let no_grouping = matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    if inner.is_empty() || !no_grouping || select.having.is_some() || select.projection.len() != 1 {
        return None;
    }
    let mut rewritten = query.clone();
    let SetExpr::Select(select) = rewritten.body.as_mut() else {
        return None;
    };
    let value = match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return None,
    };
    let aggregated = matches!(value, Expr::Function(f)
        if AGGREGATES.contains(&f.name.to_string().to_lowercase().as_str()));
    if !aggregated {
        *value = parse_expr(&format!("max({value})"))?;
    }
    let (mut outer, mut kept) = (Vec::new(), Vec::new());
    if let Some(selection) = select.selection.take() {
        for conjunct in conjuncts(selection) {
            if names_only_outer(&conjunct, &inner) {
                outer.push(conjunct.to_string());
            } else {
                kept.push(conjunct.to_string());
            }
        }
    }
    if !kept.is_empty() {
        select.selection = Some(parse_expr(&kept.join(" AND "))?);
    }
    if outer.is_empty() {
        return Some(Expr::Subquery(Box::new(rewritten)));
    }
    parse_expr(&format!(
        "CASE WHEN {} THEN ({rewritten}) END",
        outer.join(" AND ")
    ))
}

/// The parts of `a AND b AND ...`.
fn conjuncts(expr: Expr) -> Vec<Expr> {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut parts = conjuncts(*left);
            parts.extend(conjuncts(*right));
            parts
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner)
        }
        other => vec![other],
    }
}

/// Whether `expr` names columns, each qualified by a name that is none of `inner` (so it is
/// the outer query's). An unqualified column could be either, and counts as inner.
fn names_only_outer(expr: &Expr, inner: &[String]) -> bool {
    let (mut outer, mut other) = (0, 0);
    let _ = visit_expressions(expr, |e| {
        match e {
            Expr::Identifier(_) => other += 1,
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let qualifier = parts[parts.len() - 2].value.to_lowercase();
                if inner.contains(&qualifier) {
                    other += 1;
                } else {
                    outer += 1;
                }
            }
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => other += 1,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    outer > 0 && other == 0
}

fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(statement).to_string()
    }

    #[test]
    fn like_escape_characters_become_backslashes() {
        assert_eq!(
            rewritten("SELECT n FROM s WHERE n NOT LIKE 'pg/_' || '%' ESCAPE '/'"),
            r"SELECT n FROM s WHERE n NOT LIKE replace(replace('pg/_' || '%', '\', '\\'), '/', '\')"
        );
        assert_eq!(
            rewritten("SELECT indexname FROM pg_indexes"),
            "SELECT indexname FROM pg_catalog.pg_indexes"
        );
        // SQLAlchemy's lookup of a column's collation: aggregated, the outer condition moved
        // out; its lookup of a default reads a table that is always empty here: NULL.
        assert_eq!(
            rewritten(
                "SELECT (SELECT c.collname AS n FROM pg_catalog.pg_collation AS c \
                 WHERE a.attcollation <> 0 AND c.oid = a.attcollation), \
                 (SELECT d.adbin FROM pg_catalog.pg_attrdef AS d WHERE d.adrelid = a.attrelid) \
                 FROM pg_catalog.pg_attribute AS a"
            ),
            "SELECT CASE WHEN a.attcollation <> 0 THEN (SELECT max(c.collname) AS n FROM pg_catalog.pg_collation AS c \
             WHERE c.oid = a.attcollation) END, NULL FROM pg_catalog.pg_attribute AS a"
        );
        // An aggregate stays; a subquery over the lake's tables is left as it is.
        for sql in [
            "SELECT (SELECT count(*) FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid) FROM pg_catalog.pg_attribute AS a",
            "SELECT (SELECT p.name FROM game.players p WHERE p.id = o.player_id) FROM game.orders AS o",
            r"SELECT n FROM s WHERE n LIKE 'a\_%' ESCAPE '\'",
            "SELECT n FROM s WHERE n LIKE 'a%'",
        ] {
            assert_eq!(rewritten(sql), sql);
        }
    }
}
