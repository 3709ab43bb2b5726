//! Routes statements: writes to lake tables go through the Delta write path, `ANALYZE` to
//! [`super::analyze`]; everything else runs in DataFusion as usual.

use std::collections::HashSet;

use datafusion::common::{ResolvedTableReference, TableReference};
use datafusion::execution::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{
    CreateMemoryTable, DdlStatement, DmlStatement, DropTable, LogicalPlan, WriteOp,
};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;

use super::table_options::take_layout;
use super::table_refs::lake_table;
use super::{Output, Session, ToRun};
use crate::catalog::{is_lake_schema, is_session_table};
use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::lake::write::{WriteMode, WriteOptions, WriteOutcome, write_plan};

/// Plans and runs one statement.
pub(super) async fn execute(session: &Session, mut statement: DFStatement) -> Result<Output> {
    if let DFStatement::Statement(inner) = &statement
        && let Statement::Analyze(analyze) = inner.as_ref()
    {
        if let Some(gate) = &session.gate {
            gate(ToRun::Analyze)?;
        }
        return super::analyze::run(session, analyze).await;
    }
    let layout = take_layout(&mut statement)?;
    let state = session.ctx.state();
    if let Some(gate) = &session.gate {
        gate(ToRun::Tables(&table_references(&state, &statement)?))?;
    }
    let mut plan = crate::catalog::within_statement(async {
        warm_tables(&state, &statement).await;
        state.statement_to_plan(statement).await
    })
    .await?;
    if !session.params.is_empty() {
        plan = plan.with_param_values((*session.params).clone())?;
    }
    if let Some(gate) = &session.gate {
        gate(ToRun::Plan(&plan))?;
    }
    if let Some(rewrite) = &session.rewrite {
        plan = rewrite(plan, &state)?;
    }
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
            create_table(session, create, layout.unwrap_or_default()).await
        }
        LogicalPlan::Ddl(DdlStatement::DropTable(drop)) if !is_session(session, &drop.name) => {
            drop_table(session, drop).await
        }
        LogicalPlan::Ddl(DdlStatement::CreateCatalogSchema(create)) => Ok(Output::Done(format!(
            "schema {} needs no creation: a schema is a folder of the lake, made by its first table",
            create.schema_name
        ))),
        LogicalPlan::Dml(dml) if session.regional_catalog(&dml.table_name).is_some() => {
            Err(read_only_region(&dml.table_name))
        }
        LogicalPlan::Ddl(DdlStatement::DropTable(drop))
            if session.regional_catalog(&drop.name).is_some() =>
        {
            Err(read_only_region(&drop.name))
        }
        LogicalPlan::Dml(dml) if !is_session(session, &dml.table_name) => {
            write_dml(session, dml).await
        }
        plan @ (LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) => {
            session.ctx.execute_logical_plan(plan).await?;
            Ok(Output::Done("OK".to_string()))
        }
        plan => {
            if session.on_cluster() {
                crate::cluster::check_shippable(&plan)?;
            }
            Ok(Output::Rows(session.ctx.execute_logical_plan(plan).await?))
        }
    }
}

/// The tables a statement names, resolved against the session's default catalog and schema.
/// Calls of table functions (`generate_series(1, 3)`) are named like tables in the statement;
/// they read no table and are left out (the gate checks their scans in the plan, and there is
/// no lake table to warm).
fn table_references(
    state: &SessionState,
    statement: &DFStatement,
) -> Result<Vec<ResolvedTableReference>> {
    let defaults = &state.config_options().catalog;
    Ok(state
        .resolve_table_references(statement)?
        .into_iter()
        .map(|r| r.resolve(&defaults.default_catalog, &defaults.default_schema))
        .filter(|t| {
            !(t.catalog.as_ref() == defaults.default_catalog
                && t.schema.as_ref() == defaults.default_schema
                && state.table_functions().contains_key(t.table.as_ref()))
        })
        .collect())
}

/// Looks up a statement's lake tables all at once, so that DataFusion's own lookups, one table
/// after another, find each checked and ready: a query over five tables waits for one round
/// trip to the store, not five. Only lake tables: they are the ones checked once per statement
/// (a PostgreSQL table's lookup connects and describes it, and would do so twice). A table that
/// fails here fails again, with its error, in DataFusion's lookup.
async fn warm_tables(state: &SessionState, statement: &DFStatement) {
    let Ok(references) = table_references(state, statement) else {
        return;
    };
    let tables: HashSet<ResolvedTableReference> = references.into_iter().collect();
    let lake_tables: Vec<_> = tables
        .into_iter()
        .filter_map(|table| {
            let schema = state.schema_for_ref(table.clone()).ok()?;
            is_lake_schema(schema.as_ref()).then_some((schema, table))
        })
        .collect();
    if lake_tables.len() < 2 {
        return;
    }
    let lookups = lake_tables.iter().map(|(schema, table)| async move {
        let _ = schema.table(&table.table).await;
    });
    futures::future::join_all(lookups).await;
}

/// A write's input: on a cluster, the query runs there and the local writer reads its result.
async fn write_input(session: &Session, input: LogicalPlan) -> Result<LogicalPlan> {
    if session.on_cluster() {
        crate::cluster::check_shippable(&input)?;
        crate::cluster::remote::remote_input(&session.ctx.state(), input).await
    } else {
        Ok(input)
    }
}

/// A write to a regional lake's table, which sessions see read-only.
fn read_only_region(name: &TableReference) -> Error {
    Error::Invalid(format!(
        "{name}: the regional lakes of [lakes] are read-only in this session; write to that lake with --lake set to its URL"
    ))
}

/// Whether a name is a view or external table registered in this session (not a lake table).
fn is_session(session: &Session, name: &TableReference) -> bool {
    let Ok(table) = lake_table(name) else {
        return true;
    };
    datafusion::catalog::CatalogProvider::schema(session.catalog.as_ref(), &table.schema)
        .is_some_and(|s| is_session_table(s.as_ref(), &table.table))
}

async fn create_table(
    session: &Session,
    create: CreateMemoryTable,
    layout: crate::lake::layout::TableLayout,
) -> Result<Output> {
    if create.temporary {
        return Err(Error::Unsupported(
            "CREATE TEMPORARY TABLE is not supported; use CREATE VIEW for a session-only name"
                .into(),
        ));
    }
    let table = lake_table(&create.name)?;
    let lake = session.lake();
    let exists = lake.is_table(&table).await?;
    if exists && create.if_not_exists {
        return Ok(Output::Done(format!("table {table} exists; nothing done")));
    }
    let mode = if create.or_replace {
        WriteMode::Overwrite
    } else {
        WriteMode::Create
    };
    if exists && mode == WriteMode::Create {
        return Err(Error::TableExists {
            name: table.to_string(),
        });
    }
    let options = WriteOptions {
        layout: Some(layout),
        ..WriteOptions::new(mode)
    };
    let outcome = match write_input(session, (*create.input).clone()).await {
        Ok(input) => write_plan(lake, &table, &session.write_state(), input, options).await,
        Err(e) => Err(e),
    };
    session
        .catalog
        .note_table(&table, lake.is_table(&table).await.unwrap_or(false));
    Ok(Output::Done(summary("CREATE TABLE", &table, outcome?)))
}

async fn drop_table(session: &Session, drop: DropTable) -> Result<Output> {
    let table = lake_table(&drop.name)?;
    let lake = session.lake();
    if !lake.is_table(&table).await? {
        if drop.if_exists {
            return Ok(Output::Done(format!(
                "table {table} does not exist; nothing done"
            )));
        }
        return Err(session.table_not_found(&table.to_string()));
    }
    lake.drop_table(&table).await?;
    session.catalog.note_table(&table, false);
    Ok(Output::Done(format!("DROP TABLE {table}")))
}

async fn write_dml(session: &Session, dml: DmlStatement) -> Result<Output> {
    let table = lake_table(&dml.table_name)?;
    let lake = session.lake();
    match dml.op {
        WriteOp::Insert(op) => {
            let mode = match op {
                InsertOp::Append => WriteMode::Append,
                InsertOp::Overwrite | InsertOp::Replace => WriteMode::Overwrite,
            };
            // INSERT (OVERWRITE) keeps the table's layout.
            let options = WriteOptions::new(mode);
            let input = write_input(session, (*dml.input).clone()).await?;
            let outcome = write_plan(lake, &table, &session.write_state(), input, options).await?;
            session.catalog.note_table(&table, true);
            let verb = if mode == WriteMode::Overwrite {
                "INSERT OVERWRITE"
            } else {
                "INSERT INTO"
            };
            Ok(Output::Done(summary(verb, &table, outcome)))
        }
        WriteOp::Delete => {
            lake.ensure_safe_commits().await?;
            let predicate = delete_predicate(&dml.input)?;
            let dt = lake
                .open_table(&table, &crate::lake::TableVersion::Latest)
                .await?;
            let mut builder = dt
                .delete()
                .with_session_state(std::sync::Arc::new(session.write_state()));
            if let Some(p) = predicate {
                builder = builder.with_predicate(p);
            }
            let (_, metrics) = builder
                .await
                .map_err(|e| Error::delta(table.to_string(), e))?;
            session.catalog.note_table(&table, true);
            let deleted = metrics
                .num_deleted_rows
                .map_or_else(|| "some".to_string(), |n| n.to_string());
            Ok(Output::Done(format!("DELETE FROM {table}: {deleted} rows")))
        }
        other => Err(Error::Unsupported(format!(
            "{other} on lake tables is not supported yet; rewrite the table with CREATE OR REPLACE TABLE {table} AS SELECT ..."
        ))),
    }
}

/// DELETE's plan is `Filter(predicate, TableScan)` or a bare scan (delete everything).
fn delete_predicate(input: &LogicalPlan) -> Result<Option<datafusion::prelude::Expr>> {
    match input {
        LogicalPlan::Filter(filter) => Ok(Some(unnormalize_col(filter.predicate.clone()))),
        LogicalPlan::TableScan(scan) if scan.filters.is_empty() => Ok(None),
        LogicalPlan::TableScan(scan) => Ok(Some(unnormalize_col(
            datafusion::logical_expr::utils::conjunction(scan.filters.clone())
                .unwrap_or_else(|| datafusion::prelude::lit(true)),
        ))),
        other => Err(Error::Unsupported(format!(
            "DELETE with this condition is not supported (plan: {})",
            other.display()
        ))),
    }
}

fn summary(verb: &str, table: &TableRef, outcome: WriteOutcome) -> String {
    match outcome {
        WriteOutcome::Committed { version, rows } => {
            format!("{verb} {table}: {rows} rows (version {version})")
        }
        WriteOutcome::AlreadyCommitted { recorded } => {
            format!("{verb} {table}: already committed at position {recorded}; nothing written")
        }
    }
}
