//! Access rules applied to a logical plan: every scan of a table is replaced by the rows and
//! values its rule lets the user read. The plan is the one place every shape of SQL meets
//! (views are inlined into it, CTEs, subqueries, joins and unions are nodes of it, time travel
//! and history are names of its scans, prepared statements are bound into it), and it is what
//! both protocols, and Ballista, run; so no shape gets around a rule.
//!
//! A scan of a restricted table becomes `Projection(masks, hidden → NULL) ← Filter(row filter)
//! ← Scan(every column)`, whose output has the scan's qualified column names, so the nodes
//! above need no other change than their schemas recomputed (a mask may change a type).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema, ResolvedTableReference, ScalarValue, TableReference};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, Projection, TableScan};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, ExprWithAlias, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
    visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::listings::{self, CATALOG_SCHEMAS};
use super::rules::{Access, Rule, Rules};
use crate::catalog::TableName;
use crate::error::{Error, Result};
use crate::query::{CATALOG, DEFAULT_SCHEMA};
use crate::serving::auth::Principal;

/// The rules one statement applied, for the query log.
#[derive(Clone, Debug, Default)]
pub struct Applied(Arc<Mutex<BTreeSet<String>>>);

impl Applied {
    fn note(&self, table: &ResolvedTableReference, rule: &Rule) {
        let what = if rule.restricts() {
            let mut parts = Vec::new();
            if rule.filter.is_some() {
                parts.push("filter".to_string());
            }
            if !rule.masks.is_empty() {
                parts.push(format!("mask {}", join(rule.masks.keys())));
            }
            if !rule.hidden.is_empty() {
                parts.push(format!("hide {}", join(rule.hidden.iter())));
            }
            parts.join(", ")
        } else {
            "all rows".to_string()
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("{table}: {} ({what})", rule.origin));
    }

    /// What was applied, one table per part (`gamelake.game.players: access.toml rule 1 (line
    /// 1) (filter, mask email)`), or None when no rule was.
    pub fn describe(&self) -> Option<String> {
        let applied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (!applied.is_empty()).then(|| applied.iter().cloned().collect::<Vec<_>>().join("; "))
    }
}

fn join<'a>(items: impl Iterator<Item = &'a String>) -> String {
    items.cloned().collect::<Vec<_>>().join(", ")
}

/// The table a scan reads, resolved, and what the name adds to it (time travel, history).
fn scanned(scan: &TableScan) -> Option<(ResolvedTableReference, TableName)> {
    // A table function's scan (`generate_series(1, 3)`) is named after its call.
    if matches!(&scan.table_name, TableReference::Bare { table } if table.ends_with(')')) {
        return None;
    }
    ruled_table(scan.table_name.clone().resolve(CATALOG, DEFAULT_SCHEMA))
}

/// The catalog schema and table a scan of `information_schema` or `pg_catalog` reads.
fn catalog_table(scan: &TableScan) -> Option<(&'static str, String)> {
    let schema = scan.table_name.schema()?;
    let schema = CATALOG_SCHEMAS.into_iter().find(|s| *s == schema)?;
    Some((schema, scan.table_name.table().to_string()))
}

/// The base table rules decide on for a table as named (`players@v1` and `players$history`
/// are ruled as `players`), with what the name adds; None for the catalog's own schemas.
fn ruled_table(table: ResolvedTableReference) -> Option<(ResolvedTableReference, TableName)> {
    if CATALOG_SCHEMAS.contains(&table.schema.as_ref()) {
        return None;
    }
    let name = TableName::parse(&table.table).unwrap_or(TableName {
        table: table.table.to_string(),
        version: None,
        history: false,
    });
    let base = ResolvedTableReference {
        table: name.table.clone().into(),
        ..table
    };
    Some((base, name))
}

/// Whether `who` may read the table at all (checked before any table is looked up): the error
/// names the rule that denies it, or says no rule allows it.
pub fn check_readable(
    rules: &Rules,
    who: &Principal,
    table: &ResolvedTableReference,
) -> Result<()> {
    let Some((base, _)) = ruled_table(table.clone()) else {
        return Ok(());
    };
    match rules.access(who, &base) {
        Access::Allowed(_) => Ok(()),
        Access::Denied(rule) => Err(denied(rules, who, &base, rule)),
    }
}

fn denied(
    rules: &Rules,
    who: &Principal,
    table: &ResolvedTableReference,
    rule: Option<&Rule>,
) -> Error {
    Error::PermissionDenied(match rule {
        Some(rule) => format!(
            "permission denied: {} denies user {} reading {table}",
            rule.origin, who.user
        ),
        None => format!(
            "permission denied: no rule of {} lets user {} read {table}; an admin can add one",
            rules.path().display(),
            who.user
        ),
    })
}

/// Applies `rules` to every scan of `plan` for `who`: denied tables are an error, restricted
/// ones are read through their filter and masks, the catalog's listings leave out what `who`
/// may not read. Rules applied are noted in `applied`.
pub fn apply(
    plan: LogicalPlan,
    state: &SessionState,
    rules: &Arc<Rules>,
    who: &Principal,
    applied: &Applied,
) -> Result<LogicalPlan> {
    // A restricted table's scan changes types (a mask's) and hides values; a listing's only
    // drops rows. The nodes above either need their schemas computed again.
    let (mut restricted, mut changed) = (false, false);
    let rewritten = plan
        .transform_up_with_subqueries(|node| {
            let scan = match node {
                LogicalPlan::TableScan(scan) => scan,
                // Counts of the rows a filter removed would show in EXPLAIN ANALYZE's metrics.
                LogicalPlan::Analyze(_) if restricted => {
                    return Err(Error::PermissionDenied(format!(
                        "permission denied: EXPLAIN ANALYZE reads tables whose access rules restrict user {}; run EXPLAIN without ANALYZE",
                        who.user
                    ))
                    .into_datafusion());
                }
                node if changed => return Ok(Transformed::yes(node.recompute_schema()?)),
                node => return Ok(Transformed::no(node)),
            };
            if let Some((schema, table)) = catalog_table(&scan) {
                let listed = listings::listed(scan, (schema, &table), state, rules, who)
                    .map_err(Error::into_datafusion)?;
                changed |= listed.transformed;
                return Ok(listed);
            }
            let Some((table, name)) = scanned(&scan) else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            let rule = match rules.access(who, &table) {
                Access::Allowed(rule) => rule,
                Access::Denied(rule) => {
                    return Err(denied(rules, who, &table, rule).into_datafusion());
                }
            };
            applied.note(&table, rule);
            if !rule.restricts() {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            }
            if name.history {
                return Err(Error::PermissionDenied(format!(
                    "permission denied: {} restricts user {} to part of {table}, whose $history describes all of it",
                    rule.origin, who.user
                ))
                .into_datafusion());
            }
            (restricted, changed) = (true, true);
            restrict(scan, rule, state, who, &table)
                .map(Transformed::yes)
                .map_err(Error::into_datafusion)
        })
        .map_err(Error::from_datafusion)?;
    Ok(rewritten.data)
}

/// A scan read through its rule: the row filter over all the table's columns, then each
/// column the scan read, masked, hidden or as it is, under the scan's own name.
fn restrict(
    scan: TableScan,
    rule: &Rule,
    state: &SessionState,
    who: &Principal,
    table: &ResolvedTableReference,
) -> Result<LogicalPlan> {
    let qualifier = scan.table_name.clone();
    let full = listings::full_scan(&scan)?;
    let all: Arc<DFSchema> = full.projected_schema.clone();
    let mut input = LogicalPlan::TableScan(full);
    if let Some(filter) = &rule.filter {
        let predicate = rule_expression(filter, &all, state, who)
            .map_err(|e| rule_error(rule, "filter", table, e))?;
        input = LogicalPlan::Filter(
            Filter::try_new(predicate, Arc::new(input))
                .map_err(|e| rule_error(rule, "filter", table, Error::from_datafusion(e)))?,
        );
    }
    let columns = scan
        .projected_schema
        .iter()
        .map(|(_, field)| {
            let name = field.name();
            let value = if rule.hidden.contains(name) {
                Expr::Literal(ScalarValue::try_from(field.data_type())?, None)
            } else if let Some(mask) = rule.masks.get(name) {
                rule_expression(mask, &all, state, who)
                    .map_err(|e| rule_error(rule, &format!("mask of {name}"), table, e))?
            } else {
                Expr::Column(Column::new(Some(qualifier.clone()), name))
            };
            Ok(value.alias_qualified(Some(qualifier.clone()), name))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(LogicalPlan::Projection(Projection::try_new(
        columns,
        Arc::new(input),
    )?))
}

fn rule_error(rule: &Rule, part: &str, table: &ResolvedTableReference, e: Error) -> Error {
    Error::Invalid(format!(
        "{}: its {part} cannot be applied to {table}: {e}; an admin must fix the rule",
        rule.origin
    ))
}

/// A rule's SQL as an expression over the table's columns, with `current_user` and
/// `user_attribute('name')` replaced by the user's values (an attribute the user lacks is
/// NULL, so a filter comparing it keeps no row).
fn rule_expression(
    sql: &str,
    schema: &DFSchema,
    state: &SessionState,
    who: &Principal,
) -> Result<Expr> {
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut expr = parser
        .parse_expr()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let _ = visit_expressions_mut(&mut expr, |e| {
        if let Some(value) = user_value(e, who) {
            *e = SqlExpr::Value(value.with_empty_span());
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    let expr = ExprWithAlias { expr, alias: None };
    state
        .create_logical_expr_from_sql_expr(expr, schema)
        .map_err(Error::from_datafusion)
}

/// The value of `current_user` or `user_attribute('name')` for `who`, if `expr` is one.
fn user_value(expr: &SqlExpr, who: &Principal) -> Option<Value> {
    let SqlExpr::Function(function) = expr else {
        return None;
    };
    let name = function.name.to_string().to_ascii_lowercase();
    match name.as_str() {
        "current_user" | "session_user" => Some(Value::SingleQuotedString(who.user.clone())),
        "user_attribute" => {
            let FunctionArguments::List(list) = &function.args else {
                return Some(Value::Null);
            };
            let [FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))] =
                list.args.as_slice()
            else {
                return Some(Value::Null);
            };
            let Value::SingleQuotedString(key) = &v.value else {
                return Some(Value::Null);
            };
            Some(
                who.attributes
                    .get(key)
                    .map_or(Value::Null, |v| Value::SingleQuotedString(v.clone())),
            )
        }
        _ => None,
    }
}
