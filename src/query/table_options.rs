//! Layout clauses of `CREATE TABLE`, taken out of the statement before DataFusion plans it
//! (DataFusion rejects them; they describe the Delta table, not the query):
//!
//! ```sql
//! CREATE TABLE logs.events
//!   PARTITIONED BY (event_date, region)        -- or PARTITION BY (event_date, region)
//!   WITH (bloom_filter_columns = 'player_id', target_file_size = 134217728, zstd_level = 3,
//!         compression = 'zstd')             -- or 'lz4'
//!   CLUSTER BY player_id, event_time            -- sort order within files
//! AS SELECT ...
//! ```

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr, HiveDistributionStyle, SqlOption, Statement, Value, WrappedCollection,
};

use crate::error::{Error, Result};
use crate::lake::layout::{Codec, TableLayout, zstd_level};

/// Removes the layout clauses from a `CREATE TABLE` statement and returns them as a layout.
/// Other statements are left alone and give `None`.
pub fn take_layout(stmt: &mut DFStatement) -> Result<Option<TableLayout>> {
    let DFStatement::Statement(inner) = stmt else {
        return Ok(None);
    };
    let Statement::CreateTable(ct) = inner.as_mut() else {
        return Ok(None);
    };
    let mut layout = TableLayout::default();
    if let HiveDistributionStyle::PARTITIONED { columns } =
        std::mem::replace(&mut ct.hive_distribution, HiveDistributionStyle::NONE)
    {
        layout.partition_by = columns.into_iter().map(|c| c.name.value).collect();
    }
    if let Some(expr) = ct.partition_by.take() {
        layout
            .partition_by
            .extend(column_names(&expr, "PARTITION BY")?);
    }
    if let Some(cluster) = ct.cluster_by.take() {
        let exprs = match cluster {
            WrappedCollection::NoWrapping(e) | WrappedCollection::Parentheses(e) => e,
        };
        for e in exprs {
            layout.sort_by.extend(column_names(&e, "CLUSTER BY")?);
        }
    }
    match std::mem::take(&mut ct.table_options) {
        CreateTableOptions::With(options) | CreateTableOptions::TableProperties(options) => {
            for option in options {
                apply_option(&mut layout, option)?;
            }
        }
        CreateTableOptions::None => {}
        other => ct.table_options = other,
    }
    Ok(Some(layout))
}

fn column_names(expr: &Expr, clause: &str) -> Result<Vec<String>> {
    match expr {
        Expr::Identifier(id) => Ok(vec![id.value.clone()]),
        Expr::Nested(inner) => column_names(inner, clause),
        Expr::Tuple(items) => items
            .iter()
            .map(|e| column_names(e, clause))
            .collect::<Result<Vec<_>>>()
            .map(|v| v.concat()),
        other => Err(Error::Invalid(format!(
            "{clause} takes column names, not '{other}'"
        ))),
    }
}

fn apply_option(layout: &mut TableLayout, option: SqlOption) -> Result<()> {
    let SqlOption::KeyValue { key, value } = option else {
        return Err(Error::Invalid(format!(
            "table option '{option}' is not of the form key = value"
        )));
    };
    let text = match &value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(id) => id.value.clone(),
        other => other.to_string(),
    };
    let list = || {
        text.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    };
    let number = |what: &str| {
        text.parse::<u64>().map_err(|_| {
            Error::Invalid(format!(
                "table option {what} = '{text}': expected a whole number"
            ))
        })
    };
    match key.value.to_ascii_lowercase().as_str() {
        "sort_by" => layout.sort_by = list(),
        "bloom_filter_columns" => layout.bloom_filter_columns = list(),
        "partition_by" => layout.partition_by = list(),
        "target_file_size" => layout.target_file_size = number("target_file_size")?,
        "compression" => {
            layout.compression = Codec::parse(&text)
                .map_err(|expected| Error::Invalid(format!("table option {expected}")))?;
        }
        "zstd_level" => {
            layout.zstd_level = zstd_level(number("zstd_level")?)
                .map_err(|expected| Error::Invalid(format!("table option {expected}")))?;
        }
        other => {
            return Err(Error::Invalid(format!(
                "unknown table option '{other}'; known: sort_by, bloom_filter_columns, partition_by, target_file_size, compression, zstd_level"
            )));
        }
    }
    Ok(())
}
