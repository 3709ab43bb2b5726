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

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectNamePart, Statement, Value, visit_expressions_mut, visit_relations_mut,
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
        ControlFlow::<()>::Continue(())
    });
    statement
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
        for sql in [
            r"SELECT n FROM s WHERE n LIKE 'a\_%' ESCAPE '\'",
            "SELECT n FROM s WHERE n LIKE 'a%'",
        ] {
            assert_eq!(rewritten(sql), sql);
        }
    }
}
