//! `ANALYZE [TABLE] schema.table [(column, ...)]`: counts each column's distinct values in one
//! scan of the table and records them in the table's properties
//! ([`crate::lake::distinct_counts`]), where the planner finds them for its estimates.
//!
//! DataFusion has no ANALYZE of its own (its parser reads the statement, its planner refuses
//! it), so it is run here. Counting uses DataFusion's `approx_distinct` (a HyperLogLog sketch,
//! within a few percent, in fixed memory): an estimate is all the planner needs, and an exact
//! `count(DISTINCT ...)` of every column would hold every value in memory.

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::approx_distinct;
use datafusion::prelude::ident;
use datafusion::sql::sqlparser::ast::Analyze;

use super::table_refs::lake_table;
use super::{CATALOG, Output, Session};
use crate::error::{Error, Result};
use crate::lake::TableVersion;
use crate::lake::distinct_counts::{DistinctCounts, record};

/// Runs an `ANALYZE` statement: counts, records, and returns one row per column counted.
pub(super) async fn run(session: &Session, analyze: &Analyze) -> Result<Output> {
    let Some(name) = &analyze.table_name else {
        return Err(Error::Invalid(
            "ANALYZE needs a table: ANALYZE schema.table, or ANALYZE schema.table (column, ...)"
                .into(),
        ));
    };
    if analyze.noscan || analyze.partitions.is_some() {
        return Err(Error::Unsupported(
            "ANALYZE counts whole tables: NOSCAN and PARTITION (...) are not supported".into(),
        ));
    }
    let table = lake_table(&TableReference::parse_str(&name.to_string()))?;
    let lake = session.lake();
    if !lake.is_table(&table).await? {
        return Err(session.table_not_found(&table.to_string()));
    }
    let reference = TableReference::full(CATALOG, table.schema.as_str(), table.table.as_str());
    let scan = session.ctx.table(reference).await?;
    let schema = scan.schema().as_arrow().clone();
    let columns: Vec<&Field> = if analyze.columns.is_empty() {
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref())
            .filter(|f| countable(f.data_type()))
            .collect()
    } else {
        analyze
            .columns
            .iter()
            .map(|column| named_column(&schema, &table, &column.value))
            .collect::<Result<_>>()?
    };
    if columns.is_empty() {
        return Err(Error::Unsupported(format!(
            "{table} has no column whose distinct values ANALYZE can count \
             (numbers, strings, dates, times and binaries)"
        )));
    }
    let values = count_distinct(scan, &table, &columns).await?;
    let names: Vec<&str> = columns.iter().map(|f| f.name().as_str()).collect();
    let counts: DistinctCounts = names
        .iter()
        .map(|n| n.to_string())
        .zip(values.iter().copied())
        .collect();
    lake.ensure_safe_commits().await?;
    let dt = lake.open_table(&table, &TableVersion::Latest).await?;
    record(&dt, &table, &counts).await?;
    session.catalog.note_table(&table, true);
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("column_name", DataType::Utf8, false),
            Field::new("distinct_values", DataType::UInt64, false),
        ])),
        vec![
            Arc::new(StringArray::from(names)),
            Arc::new(UInt64Array::from(values)),
        ],
    )?;
    Ok(Output::Rows(session.ctx.read_batch(batch)?))
}

/// A column named in `ANALYZE t (column, ...)`: it must exist and be countable.
fn named_column<'a>(
    schema: &'a Schema,
    table: &crate::lake::TableRef,
    name: &str,
) -> Result<&'a Field> {
    let field = schema.field_with_name(name).map_err(|_| {
        let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        Error::Invalid(format!(
            "{table} has no column '{name}' (its columns: {})",
            known.join(", ")
        ))
    })?;
    if !countable(field.data_type()) {
        return Err(Error::Unsupported(format!(
            "ANALYZE cannot count the distinct values of {table}.{name} ({}): only numbers, \
             strings, dates, times and binaries",
            field.data_type()
        )));
    }
    Ok(field)
}

/// Whether `approx_distinct` counts this type. Floats and nested types are left out: neither
/// is what queries compare for equality or join on.
fn countable(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Decimal32(..)
            | Decimal64(..)
            | Decimal128(..)
            | Decimal256(..)
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(..)
            | Duration(_)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | FixedSizeBinary(_)
    )
}

/// One scan of the table counting every column's distinct values, in the columns' order.
async fn count_distinct(
    scan: DataFrame,
    table: &crate::lake::TableRef,
    columns: &[&Field],
) -> Result<Vec<u64>> {
    let counters = columns
        .iter()
        .map(|f| approx_distinct(ident(f.name())))
        .collect();
    let batches = scan.aggregate(vec![], counters)?.collect().await?;
    let row = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| Error::Internal(format!("{table}: counting gave no row")))?;
    columns
        .iter()
        .enumerate()
        .map(|(i, field)| {
            row.column(i)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .filter(|a| a.is_valid(0))
                .map(|a| a.value(0))
                .ok_or_else(|| {
                    Error::Internal(format!("{table}.{}: counting gave no count", field.name()))
                })
        })
        .collect()
}
