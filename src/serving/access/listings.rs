//! The catalog as a reader under access rules sees it: `information_schema` and `pg_catalog`
//! (what psql's `\dt` and `\d`, SQLAlchemy's reflection, DBeaver and Grafana read) leave out
//! the tables no rule lets the reader read, so their names and columns do not leak.
//!
//! The catalog's tables are shared by every session (their object ids must stay the same from
//! one statement to the next: psql looks a table's oid up, then asks for its columns by it), so
//! they are filtered in each statement's plan, like a rule's row filter: a scan of
//! `information_schema.tables`, `.columns` or `.views` or of `pg_catalog.pg_tables` keeps the
//! rows naming a readable table; `pg_class` is joined with `pg_namespace` for each row's schema
//! name first; `pg_attribute` keeps the columns of the classes `pg_class` shows.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, ResolvedTableReference, TableReference};
use datafusion::execution::SessionState;
use datafusion::logical_expr::logical_plan::{TableScan, TableScanBuilder};
use datafusion::logical_expr::{
    ColumnarValue, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, ScalarUDF, TableSource,
    Volatility, create_udf, lit,
};
use futures::FutureExt;

use super::rules::{Access, Rules};
use crate::error::{Error, Result};
use crate::query::CATALOG;
use crate::serving::auth::Principal;
use crate::serving::guard::may_see;

/// Schemas that describe the catalog rather than hold data: readable by every user (their
/// listings filtered here), never subject to rules.
pub const CATALOG_SCHEMAS: [&str; 2] = ["information_schema", "pg_catalog"];

/// The name of the namespaces joined to `pg_class` (not a name a statement can use).
const NAMESPACES: &str = "__gamelake_namespaces";
/// The name of the classes `pg_attribute` is joined with.
const CLASSES: &str = "__gamelake_classes";

/// `scan` of a catalog table (`schema`.`table`) as `who` may see it under `rules`: unchanged
/// when the table lists no lake table, else the rows naming tables `who` may not read removed.
pub fn listed(
    scan: TableScan,
    (schema, table): (&str, &str),
    state: &SessionState,
    rules: &Arc<Rules>,
    who: &Principal,
) -> Result<Transformed<LogicalPlan>> {
    let readable = readable(rules, who);
    let q = scan.table_name.clone();
    let full = || {
        Ok::<_, Error>(LogicalPlanBuilder::from(LogicalPlan::TableScan(full_scan(
            &scan,
        )?)))
    };
    // The rows of `catalog`.`schema`.`table` that `who` may read.
    let readable_rows = |catalog: Expr, schema: &str, table: &str| {
        readable.call(vec![catalog, col(&q, schema), col(&q, table)])
    };
    let plan =
        match (schema, table.to_ascii_lowercase().as_str()) {
            ("information_schema", "tables" | "views" | "columns") => full()?.filter(
                readable_rows(col(&q, "table_catalog"), "table_schema", "table_name"),
            )?,
            ("pg_catalog", "pg_tables") => {
                full()?.filter(readable_rows(lit(CATALOG), "schemaname", "tablename"))?
            }
            ("pg_catalog", "pg_class") => classes(full()?, &q, state, &readable)?,
            ("pg_catalog", "pg_attribute") => {
                let pg_class = catalog_table(state, "pg_class")?;
                let shown = classes(
                    LogicalPlanBuilder::scan(CLASSES, pg_class, None)?,
                    &TableReference::bare(CLASSES),
                    state,
                    &readable,
                )?
                .project([col(&TableReference::bare(CLASSES), "oid")])?
                .build()?;
                full()?.join(
                    shown,
                    JoinType::LeftSemi,
                    (
                        vec![Column::new(Some(q.clone()), "attrelid")],
                        vec![Column::new(Some(TableReference::bare(CLASSES)), "oid")],
                    ),
                    None,
                )?
            }
            _ => return Ok(Transformed::no(LogicalPlan::TableScan(scan))),
        };
    // Back to the columns the scan gave, under its name, for the nodes above.
    let columns: Vec<Expr> = scan
        .projected_schema
        .iter()
        .map(|(_, field)| col(&q, field.name()))
        .collect();
    Ok(Transformed::yes(plan.project(columns)?.build()?))
}

/// A scan of every column of the table `scan` reads, under its name, for access rules to
/// filter: the catalog's listings here, a restricted table's rows in [`super::scans`].
pub(super) fn full_scan(scan: &TableScan) -> Result<TableScan> {
    if !scan.filters.is_empty() || scan.fetch.is_some() {
        // SQL planning makes scans without either; reading them first would read rows the
        // rules filter out.
        return Err(Error::Internal(format!(
            "a scan of {} already holds filters or a limit; the access rules cannot be applied to it",
            scan.table_name
        )));
    }
    Ok(TableScanBuilder::new(scan.table_name.clone(), scan.source.clone()).build()?)
}

/// `pg_class` rows (`classes`, named `q`) but those of tables `readable` refuses: each row's
/// schema is its `relnamespace`'s name in `pg_namespace`.
fn classes(
    classes: LogicalPlanBuilder,
    q: &TableReference,
    state: &SessionState,
    readable: &ScalarUDF,
) -> Result<LogicalPlanBuilder> {
    let namespaces = TableReference::bare(NAMESPACES);
    let scan = LogicalPlanBuilder::scan(
        namespaces.clone(),
        catalog_table(state, "pg_namespace")?,
        None,
    )?
    .build()?;
    Ok(classes
        .join(
            scan,
            JoinType::Left,
            (
                vec![Column::new(Some(q.clone()), "relnamespace")],
                vec![Column::new(Some(namespaces.clone()), "oid")],
            ),
            None,
        )?
        .filter(readable.call(vec![
            lit(CATALOG),
            col(&namespaces, "nspname"),
            col(q, "relname"),
        ]))?)
}

fn col(q: &TableReference, name: &str) -> Expr {
    Expr::Column(Column::new(Some(q.clone()), name))
}

/// A table of `pg_catalog`, as a scan's source.
fn catalog_table(state: &SessionState, name: &str) -> Result<Arc<dyn TableSource>> {
    let missing = || Error::Internal(format!("pg_catalog.{name} is not installed"));
    let schema = state
        .catalog_list()
        .catalog(CATALOG)
        .and_then(|c| c.schema("pg_catalog"))
        .ok_or_else(missing)?;
    // pg_catalog's providers are built in memory: the lookup is ready at once and never waits.
    let table = schema
        .table(name)
        .now_or_never()
        .ok_or_else(missing)?
        .map_err(Error::from_datafusion)?
        .ok_or_else(missing)?;
    Ok(datafusion::datasource::provider_as_source(table))
}

/// `readable(catalog, schema, table)`: whether `who` may read the table under `rules` (true
/// for a row that names no table: a NULL part).
fn readable(rules: &Arc<Rules>, who: &Principal) -> ScalarUDF {
    let (rules, who) = (rules.clone(), who.clone());
    create_udf(
        "gamelake_readable",
        vec![DataType::Utf8, DataType::Utf8, DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let text = |i: usize| {
                arrays[i]
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| {
                        datafusion::error::DataFusionError::Internal(format!(
                            "gamelake_readable takes text, not {}",
                            arrays[i].data_type()
                        ))
                    })
            };
            let (catalogs, schemas, tables) = (text(0)?, text(1)?, text(2)?);
            let shown: BooleanArray = (0..catalogs.len())
                .map(|i| {
                    if catalogs.is_null(i) || schemas.is_null(i) || tables.is_null(i) {
                        return Some(true);
                    }
                    if CATALOG_SCHEMAS.contains(&schemas.value(i)) {
                        return Some(true);
                    }
                    let table = ResolvedTableReference {
                        catalog: catalogs.value(i).into(),
                        schema: schemas.value(i).into(),
                        table: tables.value(i).into(),
                    };
                    Some(
                        may_see(&who, &table.catalog, &table.schema)
                            && !matches!(rules.access(&who, &table), Access::Denied(_)),
                    )
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(shown)))
        }),
    )
}
