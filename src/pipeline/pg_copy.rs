//! Arrow batches into PostgreSQL: each column's PostgreSQL type, the table created from them,
//! and binary COPY into a temporary staging table, from which one statement moves the rows into
//! the target — so the target's readers see all of them or none. Used by `[sink]` pipelines and
//! by the v1.0 migration's PostgreSQL side.

use std::time::{Duration, SystemTime};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Schema, TimeUnit, TimestampMicrosecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::sources::postgres::{pg_error, quote_identifier};

/// The temporary table rows are staged in (dropped at commit).
pub(super) const STAGE: &str = "gamelake_stage";

/// How one column is staged and moved: its PostgreSQL type, and how its values travel (dates
/// and decimals as text, cast on the way into the target).
pub(super) struct Column {
    /// The column's name.
    pub name: String,
    /// Its type in the target table.
    pub pg_type: String,
    staged: Staged,
}

impl Column {
    /// Makes the target column `pg_type`, its values staged as text and cast on the way in
    /// (a decimal of more than 38 digits, which Arrow carries as its exact text).
    pub(super) fn cast_text_to(&mut self, pg_type: String) {
        self.pg_type = pg_type;
        self.staged = Staged::CastText;
    }
}

/// The value types staged by binary COPY.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Staged {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Text,
    /// Text cast to the target's type when moved in.
    CastText,
    Bytes,
    TextArray,
    Timestamp,
    TimestampTz,
}

impl Staged {
    fn pg(self) -> Type {
        match self {
            Staged::Bool => Type::BOOL,
            Staged::I16 => Type::INT2,
            Staged::I32 => Type::INT4,
            Staged::I64 => Type::INT8,
            Staged::F32 => Type::FLOAT4,
            Staged::F64 => Type::FLOAT8,
            Staged::Text | Staged::CastText => Type::TEXT,
            Staged::Bytes => Type::BYTEA,
            Staged::TextArray => Type::TEXT_ARRAY,
            Staged::Timestamp => Type::TIMESTAMP,
            Staged::TimestampTz => Type::TIMESTAMPTZ,
        }
    }
}

/// The PostgreSQL columns of `schema`; a type with no PostgreSQL peer is an error that says
/// how to cast it in the query.
pub(super) fn columns(schema: &Schema, table: &str) -> Result<Vec<Column>> {
    schema
        .fields()
        .iter()
        .map(|f| column(f.name(), f.data_type(), table))
        .collect()
}

fn column(name: &str, data_type: &DataType, table: &str) -> Result<Column> {
    let (pg_type, staged) = match data_type {
        DataType::Boolean => ("boolean".to_string(), Staged::Bool),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ("smallint".into(), Staged::I16),
        DataType::Int32 | DataType::UInt16 => ("integer".into(), Staged::I32),
        DataType::Int64 | DataType::UInt32 => ("bigint".into(), Staged::I64),
        DataType::Float32 => ("real".into(), Staged::F32),
        DataType::Float64 => ("double precision".into(), Staged::F64),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ("text".into(), Staged::Text),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            ("bytea".into(), Staged::Bytes)
        }
        DataType::List(item) | DataType::LargeList(item)
            if matches!(
                item.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            ("text[]".into(), Staged::TextArray)
        }
        DataType::Timestamp(_, Some(_)) => ("timestamptz".into(), Staged::TimestampTz),
        DataType::Timestamp(_, None) => ("timestamp".into(), Staged::Timestamp),
        DataType::Date32 | DataType::Date64 => ("date".into(), Staged::CastText),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            (format!("numeric({p},{s})"), Staged::CastText)
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{table}: column {name} is {other}, which has no PostgreSQL type here; cast it in the query (e.g. CAST({name} AS VARCHAR))"
            )));
        }
    };
    Ok(Column {
        name: name.to_string(),
        pg_type,
        staged,
    })
}

/// `"schema"."table"`.
pub(super) fn target_name(target: &TableRef) -> String {
    format!(
        "{}.{}",
        quote_identifier(&target.schema),
        quote_identifier(&target.table)
    )
}

/// Creates the target (and its schema) from `columns` when it does not exist, with `key` as
/// its primary key.
pub(super) fn create_sql(target: &TableRef, columns: &[Column], key: &[String]) -> String {
    let mut create = format!(
        "CREATE SCHEMA IF NOT EXISTS {};\nCREATE TABLE IF NOT EXISTS {} ({}",
        quote_identifier(&target.schema),
        target_name(target),
        columns
            .iter()
            .map(|c| format!("{} {}", quote_identifier(&c.name), c.pg_type))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !key.is_empty() {
        let key: Vec<String> = key.iter().map(|k| quote_identifier(k)).collect();
        create.push_str(&format!(", PRIMARY KEY ({})", key.join(", ")));
    }
    create.push(')');
    create
}

/// `INSERT INTO target (...) SELECT ... FROM gamelake_stage{filter}`: the staged rows moved in,
/// text-staged values cast to the target's types.
pub(super) fn insert_from_stage(target: &TableRef, columns: &[Column], filter: &str) -> String {
    let quoted: Vec<String> = columns.iter().map(|c| quote_identifier(&c.name)).collect();
    let selected: Vec<String> = columns
        .iter()
        .map(|c| match c.staged {
            Staged::CastText => format!("{}::{}", quote_identifier(&c.name), c.pg_type),
            _ => quote_identifier(&c.name),
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM {STAGE}{filter}",
        target_name(target),
        quoted.join(", "),
        selected.join(", ")
    )
}

/// Creates the staging table inside `tx` (dropped at commit).
pub(super) async fn create_stage(
    tx: &Transaction<'_>,
    columns: &[Column],
    context: &str,
) -> Result<()> {
    let staged: Vec<String> = columns
        .iter()
        .map(|c| {
            let ty = if c.staged == Staged::CastText {
                "text"
            } else {
                c.pg_type.as_str()
            };
            format!("{} {ty}", quote_identifier(&c.name))
        })
        .collect();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {STAGE} ({}) ON COMMIT DROP",
        staged.join(", ")
    ))
    .await
    .map_err(|e| pg_error(&format!("{context} (staging table)"), &e))
}

/// Loads `batches` into the staging table with binary COPY; returns the rows loaded.
pub(super) async fn copy_to_stage(
    tx: &Transaction<'_>,
    columns: &[Column],
    batches: &[RecordBatch],
    context: &str,
) -> Result<usize> {
    let copy_error = |e: tokio_postgres::Error| pg_error(&format!("{context} (COPY)"), &e);
    let quoted: Vec<String> = columns.iter().map(|c| quote_identifier(&c.name)).collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {STAGE} ({}) FROM STDIN (FORMAT binary)",
            quoted.join(", ")
        ))
        .await
        .map_err(copy_error)?;
    let types: Vec<Type> = columns.iter().map(|c| c.staged.pg()).collect();
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    let mut rows = 0usize;
    for batch in batches {
        let values = row_values(batch, columns)?;
        for row in 0..batch.num_rows() {
            let refs: Vec<&(dyn ToSql + Sync)> = values
                .iter()
                .map(|column| column[row].as_ref() as &(dyn ToSql + Sync))
                .collect();
            writer.as_mut().write(&refs).await.map_err(copy_error)?;
            rows += 1;
        }
    }
    writer.finish().await.map_err(copy_error)?;
    Ok(rows)
}

type Values = Vec<Box<dyn ToSql + Sync + Send>>;

/// One batch's values, column by column, as what binary COPY writes.
fn row_values(batch: &RecordBatch, columns: &[Column]) -> Result<Vec<Values>> {
    let options = FormatOptions::default();
    let mut out = Vec::with_capacity(columns.len());
    for (array, column) in batch.columns().iter().zip(columns) {
        let array = array.as_ref();
        let values: Values = match column.staged {
            Staged::CastText => {
                let formatter = ArrayFormatter::try_new(array, &options)?;
                (0..array.len())
                    .map(|i| boxed(array.is_valid(i).then(|| formatter.value(i).to_string())))
                    .collect()
            }
            Staged::Bool => array.as_boolean().iter().map(boxed).collect(),
            Staged::I16 => primitive::<Int16Type, _>(array, DataType::Int16, |v| v)?,
            Staged::I32 => primitive::<Int32Type, _>(array, DataType::Int32, |v| v)?,
            Staged::I64 => primitive::<Int64Type, _>(array, DataType::Int64, |v| v)?,
            Staged::F32 => primitive::<Float32Type, _>(array, DataType::Float32, |v| v)?,
            Staged::F64 => primitive::<Float64Type, _>(array, DataType::Float64, |v| v)?,
            Staged::Text => {
                let text = arrow::compute::cast(array, &DataType::Utf8)?;
                let text = text.as_string::<i32>();
                text.iter().map(|v| boxed(v.map(str::to_string))).collect()
            }
            Staged::Bytes => {
                let bytes = arrow::compute::cast(array, &DataType::Binary)?;
                let bytes = bytes.as_binary::<i32>();
                bytes.iter().map(|v| boxed(v.map(<[u8]>::to_vec))).collect()
            }
            Staged::TextArray => {
                let item =
                    std::sync::Arc::new(arrow::datatypes::Field::new("item", DataType::Utf8, true));
                let lists = arrow::compute::cast(array, &DataType::List(item))?;
                let lists = lists.as_list::<i32>();
                lists
                    .iter()
                    .map(|list| {
                        boxed(list.map(|items| {
                            let items = items.as_string::<i32>();
                            items
                                .iter()
                                .map(|v| v.map(str::to_string))
                                .collect::<Vec<Option<String>>>()
                        }))
                    })
                    .collect()
            }
            // Microseconds since 1970 (UTC), sent as SystemTime.
            Staged::Timestamp | Staged::TimestampTz => primitive::<TimestampMicrosecondType, _>(
                array,
                DataType::Timestamp(TimeUnit::Microsecond, None),
                system_time,
            )?,
        };
        out.push(values);
    }
    Ok(out)
}

/// A column cast to `T`'s type, each value converted (NULL kept) and boxed for binary COPY.
fn primitive<T: ArrowPrimitiveType, V: ToSql + Sync + Send + 'static>(
    array: &dyn Array,
    to: DataType,
    convert: impl Fn(T::Native) -> V,
) -> Result<Values> {
    let cast = arrow::compute::cast(array, &to)?;
    Ok(cast
        .as_primitive::<T>()
        .iter()
        .map(|v| boxed(v.map(&convert)))
        .collect())
}

fn boxed<T: ToSql + Sync + Send + 'static>(value: Option<T>) -> Box<dyn ToSql + Sync + Send> {
    Box::new(value)
}

fn system_time(micros: i64) -> SystemTime {
    let offset = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH + offset
    } else {
        SystemTime::UNIX_EPOCH - offset
    }
}
