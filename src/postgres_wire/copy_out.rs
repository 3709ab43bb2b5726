//! `COPY (query) TO STDOUT` and `COPY table TO STDOUT`, what psql's `\copy ... to` and drivers'
//! bulk exports send: the query runs in the engine like any other, and its rows go out as
//! COPY data in text, CSV or binary, encoded by arrow-pg. `COPY ... FROM` and copies to the
//! server's files are refused (the lake is written by SQL and pipelines).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use futures::{StreamExt, stream};
use pgwire::api::portal::Format;
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, FieldInfo, Response,
};
use pgwire::error::PgWireResult;
use pgwire::messages::copy::CopyData;

use super::errors::{to_pg_error, user_error};
use crate::serving::engine::BatchStream;

/// A `COPY ... TO STDOUT`: the query to run and how to write its rows.
#[derive(Clone, Debug)]
pub struct CopyOut {
    /// The query whose rows are copied.
    pub query: String,
    format: Kind,
    header: bool,
    delimiter: Option<char>,
    null: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Csv,
    Binary,
}

/// The copy a statement asks for, if it is a `COPY` (an error for the kinds refused).
pub fn recognise(statement: &Statement) -> Option<PgWireResult<CopyOut>> {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    if !to || *target != CopyTarget::Stdout {
        return Some(Err(user_error(
            "0A000",
            "only COPY ... TO STDOUT is served (psql: \\copy ... to 'file'); write to the lake with SQL or a pipeline".to_string(),
        )));
    }
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table {
            table_name,
            columns,
        } => format!(
            "SELECT {} FROM {table_name}",
            columns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut copy = CopyOut {
        query,
        format: Kind::Text,
        header: false,
        delimiter: None,
        null: None,
    };
    for option in options {
        match option {
            CopyOption::Format(name) => {
                copy.format = match name.value.to_ascii_lowercase().as_str() {
                    "text" => Kind::Text,
                    "csv" => Kind::Csv,
                    "binary" => Kind::Binary,
                    other => {
                        return Some(Err(user_error(
                            "22023",
                            format!("COPY format \"{other}\" not recognized"),
                        )));
                    }
                }
            }
            CopyOption::Header(header) => copy.header = *header,
            CopyOption::Delimiter(c) => copy.delimiter = Some(*c),
            CopyOption::Null(null) => copy.null = Some(null.clone()),
            _ => {}
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Csv(_) => copy.format = Kind::Csv,
            CopyLegacyOption::Binary => copy.format = Kind::Binary,
            CopyLegacyOption::Header => copy.header = true,
            CopyLegacyOption::Delimiter(c) => copy.delimiter = Some(*c),
            CopyLegacyOption::Null(null) => copy.null = Some(null.clone()),
            _ => {}
        }
    }
    Some(Ok(copy))
}

impl CopyOut {
    /// The copy's answer: `batches` as COPY data.
    pub fn response(&self, schema: &SchemaRef, batches: BatchStream) -> PgWireResult<Response> {
        let format = match self.format {
            Kind::Binary => Format::UnifiedBinary,
            _ => Format::UnifiedText,
        };
        let fields = Arc::new(arrow_pg::datatypes::arrow_schema_to_pg_fields(
            schema, &format, None,
        )?);
        let columns = fields.len();
        let header = (self.header && self.format == Kind::Csv).then(|| {
            let names: Vec<String> = fields.iter().map(|f| csv_quote(f.name())).collect();
            let delimiter = self.delimiter.unwrap_or(',').to_string();
            CopyData::new(format!("{}\n", names.join(&delimiter)).into_bytes().into())
        });
        // One encoder for the whole copy: binary COPY has one header, before the first row.
        let mut encoder = self.encoder(&fields);
        let rows = batches
            .map(move |batch| match batch {
                Ok(batch) => stream::iter(encode(&mut encoder, &fields, &batch)).left_stream(),
                Err(e) => stream::iter(vec![Err(to_pg_error(e))]).right_stream(),
            })
            .flatten();
        let data = stream::iter(header.map(Ok)).chain(rows);
        let code = if self.format == Kind::Binary { 1 } else { 0 };
        Ok(Response::CopyOut(CopyResponse::new(code, columns, data)))
    }

    fn encoder(&self, fields: &Arc<Vec<FieldInfo>>) -> CopyEncoder {
        match self.format {
            Kind::Binary => CopyEncoder::new_binary(fields.clone()),
            Kind::Csv => {
                let mut options = CopyCsvOptions::default();
                if let Some(d) = self.delimiter {
                    options.delimiter = d.to_string().into();
                }
                if let Some(null) = &self.null {
                    options.null_string = null.as_str().into();
                }
                CopyEncoder::new_csv(fields.clone(), options)
            }
            Kind::Text => {
                let mut options = CopyTextOptions::default();
                if let Some(d) = self.delimiter {
                    options.delimiter = d.to_string().into();
                }
                if let Some(null) = &self.null {
                    options.null_string = null.as_str().into();
                }
                CopyEncoder::new_text(fields.clone(), options)
            }
        }
    }
}

/// One COPY data message per row of `batch`.
fn encode(
    encoder: &mut CopyEncoder,
    fields: &Arc<Vec<FieldInfo>>,
    batch: &RecordBatch,
) -> Vec<PgWireResult<CopyData>> {
    {
        let schema = batch.schema();
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            for (column, array) in batch.columns().iter().enumerate() {
                if let Err(e) = arrow_pg::encoder::encode_value(
                    encoder,
                    array,
                    row,
                    schema.field(column),
                    &fields[column],
                ) {
                    out.push(Err(e));
                    return out;
                }
            }
            out.push(Ok(encoder.take_copy()));
        }
        out
    }
}

/// A CSV header cell, quoted when it must be.
fn csv_quote(name: &str) -> String {
    if name.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name.to_string()
    }
}
