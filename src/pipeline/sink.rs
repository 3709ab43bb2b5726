//! `[sink] kind = "postgres"`: a query over the lake published into a PostgreSQL table (e.g.
//! friend suggestions the game reads), atomically for the game's readers.
//!
//! The result is loaded with binary COPY into a temporary staging table, then moved into the
//! target in one transaction: `replace` deletes the old rows and inserts the new ones (DELETE,
//! not TRUNCATE, which is not MVCC-safe: a reader's older snapshot would see an empty table);
//! `upsert` inserts or updates by key. A reader sees the old set or the new set, never an empty
//! or partial one. The target is created from the result's columns when it does not exist.

use std::time::{Duration, Instant, SystemTime};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::config::{Mode, TableConfig};
use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::query::Session;
use crate::sources::postgres::{connect, pg_error, quote_identifier};

/// What publishing one table did.
#[derive(Debug)]
pub struct PublishReport {
    /// The PostgreSQL table.
    pub table: String,
    /// Rows it holds from this run.
    pub rows: usize,
    /// Seconds taken (query and load).
    pub seconds: f64,
}

/// How one result column is staged and moved: its PostgreSQL type, and how its values travel
/// (dates and decimals as text, cast on the way into the target).
struct Column {
    name: String,
    pg_type: String,
    staged: Staged,
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
            Staged::Timestamp => Type::TIMESTAMP,
            Staged::TimestampTz => Type::TIMESTAMPTZ,
        }
    }
}

/// Runs `table`'s query over the lake and publishes the result into PostgreSQL at `url`.
pub async fn publish(session: &Session, url: &str, table: &TableConfig) -> Result<PublishReport> {
    let started = Instant::now();
    let target = TableRef::parse(&table.to)?;
    let (schema, batches) = session
        .collect_last(&table.source_query())
        .await?
        .ok_or_else(|| Error::Invalid(format!("{}: the query returns no rows", table.to)))?;
    let columns = schema
        .fields()
        .iter()
        .map(|f| column(f.name(), f.data_type(), &table.to))
        .collect::<Result<Vec<_>>>()?;
    for key in &table.key {
        if !columns.iter().any(|c| c.name == *key) {
            return Err(Error::Invalid(format!(
                "{}: key column {key} is not in the query's result",
                table.to
            )));
        }
    }
    let mut client = connect(url).await?;
    let context = |what: &str| format!("{} ({what})", table.to);
    let quoted: Vec<String> = columns.iter().map(|c| quote_identifier(&c.name)).collect();
    let target_name = format!(
        "{}.{}",
        quote_identifier(&target.schema),
        quote_identifier(&target.table)
    );
    let mut create = format!(
        "CREATE SCHEMA IF NOT EXISTS {};\nCREATE TABLE IF NOT EXISTS {target_name} ({}",
        quote_identifier(&target.schema),
        columns
            .iter()
            .map(|c| format!("{} {}", quote_identifier(&c.name), c.pg_type))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !table.key.is_empty() {
        let key: Vec<String> = table.key.iter().map(|k| quote_identifier(k)).collect();
        create.push_str(&format!(", PRIMARY KEY ({})", key.join(", ")));
    }
    create.push(')');
    client
        .batch_execute(&create)
        .await
        .map_err(|e| pg_error(&context("creating it"), &e))?;

    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_error(&context("begin"), &e))?;
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
        "CREATE TEMP TABLE gamelake_stage ({}) ON COMMIT DROP",
        staged.join(", ")
    ))
    .await
    .map_err(|e| pg_error(&context("staging table"), &e))?;

    let selected: Vec<String> = columns
        .iter()
        .map(|c| match c.staged {
            Staged::CastText => format!("{}::{}", quote_identifier(&c.name), c.pg_type),
            _ => quote_identifier(&c.name),
        })
        .collect();
    // `filter` is "" for the real move, " WHERE false" for the probe below.
    let insert = |filter: &str| {
        format!(
            "INSERT INTO {target_name} ({}) SELECT {} FROM gamelake_stage{filter}",
            quoted.join(", "),
            selected.join(", ")
        )
    };
    let upsert = |insert: String| {
        let key: Vec<String> = table.key.iter().map(|k| quote_identifier(k)).collect();
        let updates: Vec<String> = columns
            .iter()
            .filter(|c| !table.key.contains(&c.name))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_identifier(&c.name)))
            .collect();
        let action = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        format!("{insert} ON CONFLICT ({}) {action}", key.join(", "))
    };
    let (probe, statement) = match table.mode {
        Mode::Upsert => (upsert(insert(" WHERE false")), upsert(insert(""))),
        _ => (
            insert(" WHERE false"),
            format!("DELETE FROM {target_name};\n{}", insert("")),
        ),
    };
    // The move, planned on no rows before any is loaded: a target whose columns do not fit the
    // result (missing, or of a type the result cannot be assigned to, or no unique key for an
    // upsert) fails here, naming the column, and the transaction leaves the table as it was.
    tx.batch_execute(&probe).await.map_err(|e| {
        pg_error(
            &format!(
                "{}: the table does not fit the query's result; CAST the column in the query, or alter or drop the table (it is created from the result when missing)",
                table.to
            ),
            &e,
        )
    })?;
    let sink = tx
        .copy_in(&format!(
            "COPY gamelake_stage ({}) FROM STDIN (FORMAT binary)",
            quoted.join(", ")
        ))
        .await
        .map_err(|e| pg_error(&context("COPY"), &e))?;
    let types: Vec<Type> = columns.iter().map(|c| c.staged.pg()).collect();
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    let mut rows = 0usize;
    for batch in &batches {
        let values = row_values(batch, &columns)?;
        for row in 0..batch.num_rows() {
            let refs: Vec<&(dyn ToSql + Sync)> = values
                .iter()
                .map(|column| column[row].as_ref() as &(dyn ToSql + Sync))
                .collect();
            writer
                .as_mut()
                .write(&refs)
                .await
                .map_err(|e| pg_error(&context("COPY"), &e))?;
            rows += 1;
        }
    }
    writer
        .finish()
        .await
        .map_err(|e| pg_error(&context("COPY"), &e))?;

    tx.batch_execute(&statement)
        .await
        .map_err(|e| pg_error(&context("moving the staged rows in"), &e))?;
    tx.commit()
        .await
        .map_err(|e| pg_error(&context("commit"), &e))?;
    Ok(PublishReport {
        table: table.to.clone(),
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A result column's PostgreSQL type; a type with no PostgreSQL peer is an error that says how
/// to cast it in the query.
fn column(name: &str, data_type: &DataType, table: &str) -> Result<Column> {
    let (pg_type, staged) = match data_type {
        DataType::Boolean => ("boolean".to_string(), Staged::Bool),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ("smallint".into(), Staged::I16),
        DataType::Int32 | DataType::UInt16 => ("integer".into(), Staged::I32),
        DataType::Int64 | DataType::UInt32 => ("bigint".into(), Staged::I64),
        DataType::Float32 => ("real".into(), Staged::F32),
        DataType::Float64 => ("double precision".into(), Staged::F64),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ("text".into(), Staged::Text),
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

/// One batch's values, column by column, as what binary COPY writes.
fn row_values(
    batch: &RecordBatch,
    columns: &[Column],
) -> Result<Vec<Vec<Box<dyn ToSql + Sync + Send>>>> {
    let options = FormatOptions::default();
    let mut out = Vec::with_capacity(columns.len());
    for (array, column) in batch.columns().iter().zip(columns) {
        let array = array.as_ref();
        let values: Vec<Box<dyn ToSql + Sync + Send>> = match column.staged {
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
) -> Result<Vec<Box<dyn ToSql + Sync + Send>>> {
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
