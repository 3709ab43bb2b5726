//! Who may run what, decided before anything runs. A reader may run queries, `EXPLAIN`, `SHOW`
//! and `DESCRIBE`; never a write, a DDL, a `SET`, a `COPY`, a file's contents, the `system.*`
//! tables (the query log), or the PostgreSQL catalog `pg.*` unless the user is granted it.
//!
//! Checked twice: on the parsed statement, for a clear early message ([`check_statement`]), and
//! by the session's gate ([`gate_for`]) on the tables it names before any lookup and on its
//! logical plan before anything of it runs, whatever the SQL's shape (`SELECT ... INTO`, a CTE
//! around an `INSERT`, `EXPLAIN ANALYZE` of a write). The gate is the authority; the statement
//! check only explains sooner.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Expr, Statement, Value, visit_expressions_mut};

use super::access::Rules;
use super::access::scans::check_readable;
use super::auth::{Principal, Role};
use crate::error::{Error, Result};
use crate::query::{CATALOG, Gate, ToRun};

/// The schema of tables only admins may read (the query log lives there).
pub const SYSTEM_SCHEMA: &str = "system";

/// The catalog `--pg-url` registers: PostgreSQL's tables, live.
pub const POSTGRES_CATALOG: &str = "pg";

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

/// Whether a statement only reads (a query, EXPLAIN of one, SHOW, DESCRIBE), by its shape: a
/// query may still plan to a write (`SELECT ... INTO`, a CTE around an `INSERT`), which the
/// gate refuses on its plan.
pub fn is_read(statement: &DFStatement) -> bool {
    match statement {
        DFStatement::Statement(s) => is_read_sql(s),
        DFStatement::Explain(explain) => is_read(&explain.statement),
        _ => false,
    }
}

fn is_read_sql(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_) => true,
        Statement::ShowTables { .. }
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

/// Whether `who` may see (list or read) the tables of `catalog`.`schema`.
pub fn may_see(who: &Principal, catalog: &str, schema: &str) -> bool {
    who.role == Role::Admin
        || match catalog {
            POSTGRES_CATALOG => who.postgres,
            CATALOG => schema != SYSTEM_SCHEMA,
            _ => true,
        }
}

/// The gate of `who`'s sessions: none for an admin; for a reader, a check of the tables a
/// statement names (before any lookup; with access `rules`, each must be allowed by one) and
/// of its logical plan (before anything runs).
pub fn gate_for(who: &Principal, rules: Option<Arc<Rules>>) -> Option<Gate> {
    if who.role == Role::Admin {
        return None;
    }
    let who = who.clone();
    Some(Arc::new(move |to_run: ToRun<'_>| match to_run {
        ToRun::Tables(tables) => {
            if let Some(table) = tables
                .iter()
                .find(|t| !may_see(&who, &t.catalog, &t.schema))
            {
                return Err(not_visible(&who, &table.to_string()));
            }
            match &rules {
                Some(rules) => tables
                    .iter()
                    .try_for_each(|table| check_readable(rules, &who, table)),
                None => Ok(()),
            }
        }
        ToRun::Plan(plan) => check_plan(&who, plan),
        ToRun::Analyze => Err(read_only(&who, "ANALYZE")),
    }))
}

fn not_visible(who: &Principal, table: &str) -> Error {
    if table.starts_with(&format!("{POSTGRES_CATALOG}.")) {
        Error::PermissionDenied(format!(
            "permission denied: user {} may not read PostgreSQL's tables ({table}); an admin can grant it with postgres = true in the user's [[users]] entry",
            who.user
        ))
    } else {
        read_only(who, &format!("reading {table}"))
    }
}

/// Refuses a plan a reader may not run: writes, DDL, `SET` and other statements anywhere in
/// it, and scans of tables the reader may not see.
fn check_plan(who: &Principal, plan: &LogicalPlan) -> Result<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| read_only(who, &e.to_string()))?;
    let mut hidden = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.clone().resolve(CATALOG, "");
            if !may_see(who, &name.catalog, &name.schema) {
                hidden = Some(scan.table_name.to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match hidden {
        Some(table) => Err(not_visible(who, &table)),
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
        Principal::new("ana", Role::Reader)
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
        let admin = Principal::new("root", Role::Admin);
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
