//! Reading PostgreSQL with `COPY (query) TO STDOUT (FORMAT binary)`, decoded into Arrow batches.

pub mod changelog;
pub mod changes;
mod columns;
mod decode;
pub mod frames;
mod live;
pub mod pgoutput;
mod source;
pub mod tls;
mod wire;

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
pub(crate) use decode::PG_EPOCH_MICROS;
use frames::{Frames, fields};
pub use live::{PgCatalog, PgTable};
pub use source::PgSource;
pub use wire::CopyConnection;
use wire::Drained;

use crate::error::{Error, Result};

/// Rows per Arrow batch.
pub const BATCH_ROWS: usize = 64 * 1024;

/// Connects to PostgreSQL. The connection task runs until the client is dropped. Errors never
/// show the password.
pub async fn connect(url: &str) -> Result<Client> {
    let tls = tls::Tls::of(url).map_err(|e| failed(&redact(url), e))?;
    let fail = |e: tokio_postgres::Error| pg_error(&redact(url), &e);
    let client = match &tls.config {
        None => {
            let (client, connection) = tokio_postgres::connect(&tls.url, NoTls)
                .await
                .map_err(fail)?;
            tokio::spawn(watch(connection));
            client
        }
        Some(config) => {
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((**config).clone());
            let (client, connection) = tokio_postgres::connect(&tls.url, connector)
                .await
                .map_err(fail)?;
            tokio::spawn(watch(connection));
            client
        }
    };
    Ok(client)
}

/// Drives a connection until it closes, logging why.
async fn watch<F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>>(
    connection: F,
) {
    if let Err(e) = connection.await {
        tracing::warn!("postgres connection closed: {e}");
    }
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

/// Runs a query through binary COPY on `client` (inside the client's transaction, if any) and
/// returns its rows as Arrow batches of about [`BATCH_ROWS`] rows.
pub async fn read(client: &Client, query: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut reader = CopyReader::start(client, query).await?;
    let mut batches = Vec::new();
    while let Some(batch) = reader.next_batch().await? {
        batches.push(batch);
    }
    let schema = reader.decoder.schema;
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema.clone()));
    }
    Ok((schema, batches))
}

/// Reads a query's rows as a stream of batches on a connection of its own, which the stream
/// owns: rows flow to the consumer (e.g. the lake writer) without the whole result in memory.
/// `columns` are the query's, as [`describe`] gave them (a bulk read describes once, then
/// reads its parts on several connections).
pub async fn read_stream(
    connection: CopyConnection,
    query: String,
    columns: Vec<PgColumn>,
) -> Result<SendableRecordBatchStream> {
    let reader = CopyReader::start_wire(connection, &query, columns).await?;
    let schema = reader.decoder.schema.clone();
    let batches = futures::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        match reader.next_batch().await {
            Ok(Some(batch)) => Some((Ok(batch), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(e.into_datafusion()), None)),
        }
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}

/// Where a COPY's bytes come from.
enum Source {
    /// tokio-postgres's COPY stream, on a client that runs the caller's other statements too.
    Client(Pin<Box<CopyOutStream>>),
    /// A connection of its own, read below tokio-postgres's message layer (bulk reads).
    Wire(CopyConnection),
}

/// A running binary COPY, decoded batch by batch.
struct CopyReader {
    source: Source,
    decoder: Decoder,
    /// The COPY stream ended (it must not be polled again).
    done: bool,
}

/// The rows of a COPY, decoded into Arrow builders.
struct Decoder {
    query: String,
    columns: Vec<PgColumn>,
    schema: SchemaRef,
    frames: Frames,
    builders: Vec<ColumnBuilder>,
    /// Rows decoded so far (to name a row in errors).
    count: usize,
}

impl CopyReader {
    /// Describes and starts a COPY on a client.
    async fn start(client: &Client, query: &str) -> Result<Self> {
        let columns = describe(client, query).await?;
        let stream = client
            .copy_out(copy_statement(query).as_str())
            .await
            .map_err(|e| pg_error(query, &e))?;
        Ok(Self::new(Source::Client(Box::pin(stream)), query, columns))
    }

    /// Starts a COPY of a described query on a connection of its own.
    async fn start_wire(
        mut connection: CopyConnection,
        query: &str,
        columns: Vec<PgColumn>,
    ) -> Result<Self> {
        let width = connection.copy_out(query).await?;
        if width != columns.len() {
            return Err(failed(
                query,
                format!(
                    "the COPY returns {width} columns where {} were described; did the table change meanwhile? Run again",
                    columns.len()
                ),
            ));
        }
        Ok(Self::new(Source::Wire(connection), query, columns))
    }

    fn new(source: Source, query: &str, columns: Vec<PgColumn>) -> Self {
        let schema = schema_of(&columns);
        let builders = columns
            .iter()
            .map(|c| ColumnBuilder::new(&c.kind))
            .collect();
        Self {
            source,
            decoder: Decoder {
                query: query.to_string(),
                columns,
                schema,
                frames: Frames::default(),
                builders,
                count: 0,
            },
            done: false,
        }
    }

    /// The next batch of about [`BATCH_ROWS`] rows, or `None` at the end.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let decoder = &mut self.decoder;
        let mut in_batch = 0;
        while in_batch < BATCH_ROWS && !self.done {
            match &mut self.source {
                Source::Client(stream) => match stream.next().await {
                    Some(bytes) => {
                        let bytes = bytes.map_err(|e| pg_error(&decoder.query, &e))?;
                        in_batch += decoder.feed(&bytes)?;
                    }
                    None => self.done = true,
                },
                Source::Wire(connection) => {
                    let drained = connection.drain(|piece| {
                        in_batch += decoder.feed(piece)?;
                        Ok(in_batch < BATCH_ROWS)
                    })?;
                    match drained {
                        Drained::NeedMore => connection.fill().await?,
                        Drained::Paused => {}
                        Drained::Done => {
                            connection.finish().await?;
                            connection.terminate().await;
                            self.done = true;
                        }
                    }
                }
            }
        }
        if self.done && !decoder.frames.ended() {
            return Err(failed(&decoder.query, "the COPY ended before its trailer"));
        }
        if in_batch == 0 {
            return Ok(None);
        }
        decoder.finish().map(Some)
    }
}

impl Decoder {
    /// The rows decoded since the last batch, as a batch; the builders start over.
    fn finish(&mut self) -> Result<RecordBatch> {
        let arrays = self
            .builders
            .iter_mut()
            .zip(&self.columns)
            .map(|(builder, column)| {
                builder
                    .finish()
                    .map_err(|e| Error::Internal(format!("column \"{}\": {e}", column.name)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }

    /// Decodes the rows of the stream's next bytes; returns how many.
    fn feed(&mut self, piece: &[u8]) -> Result<usize> {
        let (builders, columns, count) = (&mut self.builders, &self.columns, &mut self.count);
        self.frames
            .feed(builders.len(), piece, |row| {
                *count += 1;
                for (i, (builder, raw)) in builders.iter_mut().zip(fields(row)).enumerate() {
                    builder.append(raw).map_err(|e| {
                        Error::Invalid(format!("column \"{}\", row {count}: {e}", columns[i].name))
                    })?;
                }
                Ok(())
            })
            .map_err(|e| failed(&self.query, e))
    }
}

/// The COPY statement that reads a query in binary.
fn copy_statement(query: &str) -> String {
    format!("COPY ({query}) TO STDOUT (FORMAT binary)")
}

/// [`connect`] as the lake's commit coordinator takes it.
pub fn connector() -> crate::lake::coordinator::Connect {
    std::sync::Arc::new(|url: String| Box::pin(async move { connect(&url).await }))
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
    match err.as_db_error() {
        // The server answered and refused the statement: the query or the table is wrong.
        Some(_) => Error::Invalid(format!("PostgreSQL ({context}): {detail}")),
        None => failed(context, detail),
    }
}

/// A PostgreSQL identifier (schema, table or column name), quoted: as written, case and all.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table name as a pipeline file writes it (`table` or `schema.table`), each part quoted:
/// names are taken as written, and nothing in them is read as SQL. DataFusion quotes names the
/// same way, so this serves for lake tables too.
pub(crate) fn quote_qualified(name: &str) -> String {
    name.split('.')
        .map(quote_identifier)
        .collect::<Vec<_>>()
        .join(".")
}

/// An error from PostgreSQL or its COPY stream, with what it concerned (a query, or the
/// connection string without its password), in one line.
pub(crate) fn failed(context: &str, detail: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("PostgreSQL ({context}): {detail}"))
}

/// The Arrow schema of described columns.
pub fn schema_of(columns: &[PgColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(PgColumn::field).collect::<Vec<_>>(),
    ))
}

/// Connection parameters that are secrets, in either form of a connection string.
const SECRET_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// A connection string without its passwords: in the user info and the query string of a URL
/// (`postgres://u:***@h/db?password=***`), and in a key=value string, quoted or not
/// (`host=h password=***`).
pub fn redact(url: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return match url::Url::parse(url) {
            Ok(parsed) => {
                crate::secret::hide_passwords(&parsed, |k| SECRET_PARAMETERS.contains(&k))
            }
            Err(_) => "<unreadable connection URL>".to_string(),
        };
    }
    redact_key_values(url)
}

/// A libpq key=value string with secret values replaced: `key = value`, values bare or in
/// single quotes with backslash escapes (libpq's own rules).
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            out.push_str(&format!("{key} "));
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            value.push('\'');
            chars.next();
            while let Some(c) = chars.next() {
                value.push(c);
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        let shown = if SECRET_PARAMETERS.contains(&key.as_str()) {
            "***"
        } else {
            value.as_str()
        };
        out.push_str(&format!("{key}={shown} "));
    }
    out.trim_end().to_string()
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
        assert_eq!(
            super::redact("postgresql://u@h/db?sslmode=require&password=secret"),
            "postgresql://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            super::redact("host=h password = 'se cr\\'et' user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(
            super::redact("postgres://u:secret@h/db?password=x"),
            "postgres://u:***@h/db?password=***"
        );
    }
}
