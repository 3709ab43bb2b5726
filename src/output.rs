//! Printing query results in the formats `--format` offers, with arrow's own writers.

use std::io::Write;

use clap::ValueEnum;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::plain_types::{plain_schema, to_plain};

/// Output formats of `gamelake sql`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text table (collects the result to size the columns).
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Parquet (needs `-o FILE`).
    Parquet,
}

/// Writes a collected result to `out` in a format, as [`write_stream`] writes a stream.
pub async fn write_batches(
    format: Format,
    schema: datafusion::arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let stream = datafusion::physical_plan::memory::MemoryStream::try_new(batches, schema, None)?;
    write_stream(format, Box::pin(stream), out).await
}

/// Streams a result to `out` in a format; returns the number of rows written.
pub async fn write_stream(
    format: Format,
    mut stream: SendableRecordBatchStream,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let schema = plain_schema(&stream.schema());
    let mut rows = 0u64;
    match format {
        Format::Table => {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = to_plain(batch?, &schema)?;
                rows += batch.num_rows() as u64;
                batches.push(batch);
            }
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
            writeln!(out, "{}", pretty_format_batches(&batches)?).map_err(stdout_err)?;
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            let text_schema = nested_as_text_schema(&schema);
            let mut wrote_any = false;
            while let Some(batch) = stream.next().await {
                let batch = nested_as_text(&to_plain(batch?, &schema)?, &text_schema)?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
                wrote_any = true;
            }
            if !wrote_any {
                writer.write(&RecordBatch::new_empty(text_schema))?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = to_plain(batch?, &schema)?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.finish()?;
            if rows == 0 {
                write!(out, "[]").map_err(stdout_err)?;
            }
            writeln!(out).map_err(stdout_err)?;
        }
        Format::Ndjson => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = to_plain(batch?, &schema)?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.finish()?;
        }
        Format::Parquet => {
            let mut writer = ArrowWriter::try_new(&mut *out, schema.clone(), None)?;
            while let Some(batch) = stream.next().await {
                let batch = to_plain(batch?, &schema)?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.close()?;
        }
    }
    out.flush().map_err(stdout_err)?;
    Ok(rows)
}

/// Lists, structs and maps have no CSV form in arrow's writer: they are written as text, as
/// DuckDB writes them (`[x, z]`, `{a: 1}`).
fn nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::ListView(_)
            | DataType::Struct(_)
            | DataType::Map(..)
    )
}

fn nested_as_text_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match nested(f.data_type()) {
            true => Field::new(f.name(), DataType::Utf8, true),
            false => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn nested_as_text(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let options = FormatOptions::default();
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if !nested(column.data_type()) {
                return Ok(column.clone());
            }
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            Ok(Arc::new(text) as ArrayRef)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn stdout_err(e: std::io::Error) -> Error {
    Error::io("<output>", e)
}
