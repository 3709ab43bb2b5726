//! What a reader may run: queries, EXPLAIN, SHOW and DESCRIBE — checked on the parsed statement
//! before anything runs, then again on the plan (DataFusion's `SQLOptions`, and no `system.*`
//! tables such as the query log).

use std::ops::ControlFlow;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Expr, Statement, Value, visit_expressions_mut};

use super::auth::{Principal, Role};
use crate::error::{Error, Result};

/// The schema of tables only admins may read (the query log lives there).
pub const SYSTEM_SCHEMA: &str = "system";

/// Refuses a statement a reader may not run, before it is planned.
pub fn check_statement(who: &Principal, statement: &DFStatement) -> Result<()> {
    if who.role == Role::Admin || is_read(statement) {
        return Ok(());
    }
    let text = statement.to_string();
    let kind: String = text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Err(read_only(who, &kind))
}

/// Whether a statement only reads (a query, EXPLAIN of one, SHOW, DESCRIBE).
pub fn is_read(statement: &DFStatement) -> bool {
    match statement {
        DFStatement::Statement(s) => is_read_sql(s),
        DFStatement::Explain(explain) => is_read(&explain.statement),
        _ => false,
    }
}

fn is_read_sql(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ExplainTable { .. } => true,
        Statement::Explain { statement, .. } => is_read_sql(statement),
        _ => false,
    }
}

fn read_only(who: &Principal, what: &str) -> Error {
    Error::PermissionDenied(format!(
        "permission denied: user {} (role reader) may only run queries; {what} needs an admin",
        who.user
    ))
}

/// Refuses a plan a reader may not run: writes, DDL, SET and other statements, and reads of
/// `system.*` tables.
pub fn check_plan(who: &Principal, plan: &LogicalPlan) -> Result<()> {
    if who.role == Role::Admin {
        return Ok(());
    }
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| read_only(who, &e.to_string()))?;
    let mut system_table = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.schema() == Some(SYSTEM_SCHEMA)
        {
            system_table = Some(scan.table_name.to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match system_table {
        Some(table) => Err(read_only(who, &format!("reading {table}"))),
        None => Ok(()),
    }
}

/// Rewrites JDBC/ODBC-style `?` placeholders to `$1`, `$2`, ... in the order they appear, the
/// form DataFusion binds.
pub fn number_question_marks(statement: &mut DFStatement) {
    let DFStatement::Statement(statement) = statement else {
        return;
    };
    let mut next = 0;
    let _ = visit_expressions_mut(statement.as_mut(), |expr| {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(p) = &mut v.value
            && p == "?"
        {
            next += 1;
            *p = format!("${next}");
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn parse(sql: &str) -> DFStatement {
        DFParser::parse_sql(sql).unwrap().pop_front().unwrap()
    }

    fn reader() -> Principal {
        Principal {
            user: "ana".into(),
            role: Role::Reader,
        }
    }

    #[test]
    fn readers_may_query_and_not_write() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "DESCRIBE game.players",
        ] {
            check_statement(&reader(), &parse(ok)).unwrap();
        }
        for denied in [
            "CREATE TABLE a.b AS SELECT 1",
            "INSERT INTO a.b VALUES (1)",
            "DELETE FROM a.b",
            "DROP TABLE a.b",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/'",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN ANALYZE INSERT INTO a.b VALUES (1)",
        ] {
            let err = check_statement(&reader(), &parse(denied)).unwrap_err();
            assert!(
                err.to_string().contains("permission denied"),
                "{denied}: {err}"
            );
        }
        let admin = Principal {
            user: "root".into(),
            role: Role::Admin,
        };
        check_statement(&admin, &parse("DROP TABLE a.b")).unwrap();
    }

    #[test]
    fn question_marks_become_numbered_placeholders() {
        let mut s = parse("SELECT * FROM t WHERE a = ? AND b IN (?, 'x?')");
        number_question_marks(&mut s);
        assert_eq!(
            s.to_string(),
            "SELECT * FROM t WHERE a = $1 AND b IN ($2, 'x?')"
        );
    }
}
