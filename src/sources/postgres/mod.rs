//! Reading PostgreSQL with `COPY (query) TO STDOUT (FORMAT binary)`, decoded into Arrow batches.

mod columns;
mod decode;
mod frames;
mod live;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use std::pin::Pin;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use tokio_postgres::{Client, CopyOutStream, NoTls};

pub use columns::{PgColumn, PgKind};
use decode::ColumnBuilder;
use frames::{Frame, Frames, fields};
pub use live::{PgCatalog, PgTable};

use crate::error::{Error, Result};

/// Rows per Arrow batch.
pub const BATCH_ROWS: usize = 64 * 1024;

/// Connects to PostgreSQL. The connection task runs until the client is dropped. Errors never
/// show the password.
pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| pg_error(&redact(url), &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgres connection closed: {e}");
        }
    });
    Ok(client)
}

/// The columns a query returns, mapped to Arrow (errors name unsupported columns).
pub async fn describe(client: &Client, query: &str) -> Result<Vec<PgColumn>> {
    let statement = client
        .prepare(query)
        .await
        .map_err(|e| pg_error(query, &e))?;
    statement
        .columns()
        .iter()
        .map(|c| PgColumn::new(c.name(), c.type_(), c.type_modifier()))
        .collect()
}

/// Runs a query through binary COPY and returns its rows as Arrow batches of up to
/// [`BATCH_ROWS`] rows.
pub async fn read(client: &Client, query: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut reader = CopyReader::start(client, query).await?;
    let mut batches = Vec::new();
    while let Some(batch) = reader.next_batch().await? {
        batches.push(batch);
    }
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(reader.schema.clone()));
    }
    Ok((reader.schema, batches))
}

/// Like [`read`], as a stream of batches that owns its connection: rows flow to the consumer
/// (e.g. the lake writer) without the whole result in memory.
pub async fn read_stream(client: Client, query: String) -> Result<SendableRecordBatchStream> {
    let reader = CopyReader::start(&client, &query).await?;
    let schema = reader.schema.clone();
    let batches = futures::stream::unfold(Some((client, reader)), |state| async move {
        let (client, mut reader) = state?;
        match reader.next_batch().await {
            Ok(Some(batch)) => Some((Ok(batch), Some((client, reader)))),
            Ok(None) => None,
            Err(e) => Some((Err(e.into_datafusion()), None)),
        }
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}

/// A running binary COPY, decoded batch by batch.
struct CopyReader {
    query: String,
    columns: Vec<PgColumn>,
    schema: SchemaRef,
    rows: Pin<Box<CopyOutStream>>,
    frames: Frames,
    builders: Vec<ColumnBuilder>,
    count: usize,
    /// The COPY stream ended (it must not be polled again).
    done: bool,
}

impl CopyReader {
    async fn start(client: &Client, query: &str) -> Result<Self> {
        let columns = describe(client, query).await?;
        let schema: SchemaRef = Arc::new(Schema::new(
            columns.iter().map(PgColumn::field).collect::<Vec<_>>(),
        ));
        let copy = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
        let stream = client
            .copy_out(copy.as_str())
            .await
            .map_err(|e| pg_error(query, &e))?;
        let builders = columns
            .iter()
            .map(|c| ColumnBuilder::new(&c.kind))
            .collect();
        Ok(Self {
            query: query.to_string(),
            columns,
            schema,
            rows: Box::pin(stream),
            frames: Frames::default(),
            builders,
            count: 0,
            done: false,
        })
    }

    /// The next batch of up to [`BATCH_ROWS`] rows, or `None` at the end.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut in_batch = 0;
        while in_batch < BATCH_ROWS && !self.done {
            let (builders, columns, count) = (&mut self.builders, &self.columns, self.count);
            let frame = self
                .frames
                .next(builders.len(), |row| {
                    for (i, (builder, raw)) in builders.iter_mut().zip(fields(row)).enumerate() {
                        builder.append(raw).map_err(|e| {
                            Error::Unsupported(format!(
                                "column \"{}\", row {}: {e}",
                                columns[i].name,
                                count + 1
                            ))
                        })?;
                    }
                    Ok(())
                })
                .map_err(|e| Error::Unsupported(format!("PostgreSQL ({}): {e}", self.query)))?;
            match frame {
                Some(Frame::Row) => {
                    self.count += 1;
                    in_batch += 1;
                }
                Some(Frame::End) => {
                    // Let the COPY complete, so the connection can run its next statement.
                    while let Some(rest) = self.rows.next().await {
                        rest.map_err(|e| pg_error(&self.query, &e))?;
                    }
                    self.done = true;
                }
                None => match self.rows.next().await {
                    Some(bytes) => self
                        .frames
                        .push(bytes.map_err(|e| pg_error(&self.query, &e))?),
                    None => {
                        return Err(Error::Unsupported(format!(
                            "PostgreSQL ({}): the COPY ended before its trailer",
                            self.query
                        )));
                    }
                },
            }
        }
        if in_batch == 0 {
            return Ok(None);
        }
        finish(&self.schema, &self.columns, &mut self.builders).map(Some)
    }
}

fn finish(
    schema: &SchemaRef,
    columns: &[PgColumn],
    builders: &mut [ColumnBuilder],
) -> Result<RecordBatch> {
    let arrays = builders
        .iter_mut()
        .zip(columns)
        .map(|(builder, column)| {
            builder
                .finish()
                .map_err(|e| Error::Unsupported(format!("column \"{}\": {e}", column.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

/// A PostgreSQL error with what it concerned, in one line.
pub fn pg_error(context: &str, err: &tokio_postgres::Error) -> Error {
    let detail = err
        .as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        });
    Error::Unsupported(format!("PostgreSQL ({context}): {detail}"))
}

/// A connection string without its password.
pub fn redact(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("***"));
        }
        return parsed.to_string();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            super::redact("host=h user=u password=secret"),
            "host=h user=u password=***"
        );
    }
}
