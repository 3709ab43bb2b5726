//! Reading MySQL and MariaDB (the game's v1.0 database) into Arrow batches, behind the same
//! [`crate::sources::Source`] contract as PostgreSQL.
//!
//! The client is `mysql_async`: pure Rust and async (no C library to build on a new machine),
//! maintained, rustls for TLS, and it speaks the binary protocol, whose typed values (integers,
//! floats, dates) go straight into Arrow builders without a text round trip ([`decode`]). The
//! type policy is in [`columns`]; consistent parallel snapshots and bounded changes in
//! [`source`].

pub mod columns;
mod decode;
mod live;
mod source;
pub mod tables;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts, Value};

pub use columns::{MyColumn, MyKind, TypePolicy, ZeroDates};
use decode::ColumnBuilder;
pub use live::{MyCatalog, MyTable};
pub use source::MySource;

use crate::error::{Error, Result};

/// Rows per Arrow batch.
pub const BATCH_ROWS: usize = 64 * 1024;

/// The connection options of a `mysql://user:pass@host:3306/db` URL. `ssl-mode` takes MySQL's
/// values: `DISABLED` (default), `REQUIRED` (encrypted, certificate not checked), `VERIFY_CA`
/// (the certificate's chain checked), `VERIFY_IDENTITY` (and its host name); `ssl-ca=PATH` adds
/// a PEM file of roots (a company's own CA) to Mozilla's.
pub fn options(url: &str) -> Result<Opts> {
    let invalid = |why: String| Error::Invalid(format!("MySQL URL {}: {why}", redact(url)));
    let mut parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let (mut mode, mut ca) = (None, None);
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| {
            if k == "ssl-mode" || k == "ssl_mode" {
                mode = Some(v.to_ascii_uppercase());
                None
            } else if k == "ssl-ca" || k == "ssl_ca" {
                ca = Some(std::path::PathBuf::from(v.into_owned()));
                None
            } else {
                Some((k.into_owned(), v.into_owned()))
            }
        })
        .collect();
    parsed.set_query(None);
    if !kept.is_empty() {
        parsed.query_pairs_mut().extend_pairs(kept);
    }
    let opts = Opts::from_url(parsed.as_str()).map_err(|e| invalid(e.to_string()))?;
    let ssl = match mode.as_deref() {
        None | Some("DISABLED") => None,
        Some("REQUIRED") => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        Some("VERIFY_CA") => Some(SslOpts::default().with_danger_skip_domain_validation(true)),
        Some("VERIFY_IDENTITY") => Some(SslOpts::default()),
        Some(other) => {
            return Err(invalid(format!(
                "ssl-mode={other}: use DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
            )));
        }
    };
    let ssl = match (ssl, ca) {
        (Some(ssl), Some(ca)) => Some(ssl.with_root_certs(vec![ca.into()])),
        (None, Some(_)) => {
            return Err(invalid(
                "ssl-ca without ssl-mode: add ssl-mode=VERIFY_CA or VERIFY_IDENTITY".into(),
            ));
        }
        (ssl, None) => ssl,
    };
    if ssl.is_some() {
        // rustls needs one process-wide crypto provider; gamelake's is ring (as for Flight).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Ok(OptsBuilder::from_opts(opts).ssl_opts(ssl).into())
}

/// Connects with `setup` statements run first. Errors never show the password.
pub async fn connect(url: &str, setup: &[&str]) -> Result<Conn> {
    let mut conn = Conn::new(options(url)?)
        .await
        .map_err(|e| my_error(&redact(url), e))?;
    for statement in setup {
        conn.query_drop(*statement)
            .await
            .map_err(|e| my_error(statement, e))?;
    }
    Ok(conn)
}

/// A connection URL without its password (in the user info or a `password` parameter).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => crate::secret::hide_passwords(&parsed, |k| k.contains("pass")),
        Err(_) => "<unreadable MySQL URL>".to_string(),
    }
}

/// A MySQL error with what it concerned, in one line: the server refusing a statement is the
/// statement's (or the file's) mistake; anything else is the server being unavailable.
pub fn my_error(context: &str, err: mysql_async::Error) -> Error {
    match err {
        mysql_async::Error::Server(server) => Error::Invalid(format!(
            "MySQL ({context}): {} (error {})",
            server.message, server.code
        )),
        other => Error::Unavailable(format!("MySQL ({context}): {other}")),
    }
}

/// A MySQL identifier, quoted: as written, case and all.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `table` or `db.table` as a pipeline file writes it, each part quoted.
pub fn quote_qualified(name: &str) -> String {
    name.split('.')
        .map(quote_identifier)
        .collect::<Vec<_>>()
        .join(".")
}

/// The columns a query returns, mapped by `policy` (a prepared statement: nothing runs).
pub async fn describe(conn: &mut Conn, query: &str, policy: TypePolicy) -> Result<Vec<MyColumn>> {
    let statement = conn.prep(query).await.map_err(|e| my_error(query, e))?;
    let columns = statement
        .columns()
        .iter()
        .map(|c| MyColumn::new(c, policy))
        .collect::<Result<Vec<_>>>();
    let _ = conn.close(statement).await;
    columns
}

/// The Arrow schema of described columns.
pub fn schema_of(columns: &[MyColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(MyColumn::field).collect::<Vec<_>>(),
    ))
}

/// Every connection reads instants in UTC (`timestamp` columns) and strings in utf8mb4.
pub const SESSION: [&str; 2] = ["SET time_zone = '+00:00'", "SET NAMES utf8mb4"];

/// A query's rows as a stream of batches, read on `conn` (which the stream owns, inside
/// whatever transaction it holds) by a task of its own: the consumer pulls batches as it
/// writes them, so a large table never sits whole in memory.
pub fn read_stream(
    mut conn: Conn,
    query: String,
    params: Vec<Value>,
    columns: Vec<MyColumn>,
    policy: TypePolicy,
) -> SendableRecordBatchStream {
    let schema = schema_of(&columns);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    let task_schema = schema.clone();
    tokio::spawn(async move {
        let read = read_into(
            &mut conn,
            &query,
            params,
            &columns,
            policy,
            task_schema,
            &sender,
        );
        match read.await {
            Ok(zeros) => warn_zero_dates(&query, &columns, &zeros),
            Err(e) => {
                let _ = sender.send(Err(e)).await;
            }
        }
        let _ = conn.disconnect().await;
    });
    let batches = futures::stream::unfold(receiver, |mut receiver| async move {
        let batch = receiver.recv().await?;
        Some((batch.map_err(Error::into_datafusion), receiver))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

/// A query's rows, all of them, read on `conn` (which stays usable, in its transaction), and
/// the zero dates read as NULL per column.
pub async fn read_batches(
    conn: &mut Conn,
    query: &str,
    params: Vec<Value>,
    columns: &[MyColumn],
    policy: TypePolicy,
) -> Result<(Vec<RecordBatch>, Vec<u64>)> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    let read = async {
        let zeros = read_into(
            conn,
            query,
            params,
            columns,
            policy,
            schema_of(columns),
            &sender,
        );
        let zeros = zeros.await;
        drop(sender);
        zeros
    };
    let collect = async {
        let mut batches = Vec::new();
        while let Some(batch) = receiver.recv().await {
            batches.push(batch);
        }
        batches
    };
    let (zeros, batches) = tokio::join!(read, collect);
    let batches = batches.into_iter().collect::<Result<Vec<_>>>()?;
    Ok((batches, zeros?))
}

/// Reads a query's rows into batches sent to `sender`; returns the zero dates read as NULL,
/// per column.
async fn read_into(
    conn: &mut Conn,
    query: &str,
    params: Vec<Value>,
    columns: &[MyColumn],
    policy: TypePolicy,
    schema: SchemaRef,
    sender: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) -> Result<Vec<u64>> {
    let mut builders: Vec<ColumnBuilder> = columns
        .iter()
        .map(|c| ColumnBuilder::new(&c.kind))
        .collect();
    let mut zero_dates = vec![0u64; columns.len()];
    let mut result = conn
        .exec_iter(query, params)
        .await
        .map_err(|e| my_error(query, e))?;
    let (mut in_batch, mut count) = (0usize, 0u64);
    while let Some(row) = result.next().await.map_err(|e| my_error(query, e))? {
        count += 1;
        for (i, value) in row.unwrap().iter().enumerate() {
            let Some(builder) = builders.get_mut(i) else {
                return Err(Error::Invalid(format!(
                    "MySQL ({query}): a row of more columns than described; did the table change meanwhile? Run again"
                )));
            };
            if builder.append(value, policy.zero_dates).map_err(|e| {
                Error::Invalid(format!(
                    "MySQL ({query}): column `{}`, row {count}: {e}",
                    columns[i].name
                ))
            })? {
                zero_dates[i] += 1;
            }
        }
        in_batch += 1;
        if in_batch == BATCH_ROWS {
            let batch = finish(&schema, &mut builders)?;
            if sender.send(Ok(batch)).await.is_err() {
                return Ok(zero_dates);
            }
            in_batch = 0;
        }
    }
    drop(result);
    if in_batch > 0 || count == 0 {
        let batch = finish(&schema, &mut builders)?;
        let _ = sender.send(Ok(batch)).await;
    }
    Ok(zero_dates)
}

/// Warns, per column, of zero dates read as NULL.
pub fn warn_zero_dates(target: &str, columns: &[MyColumn], zero_dates: &[u64]) {
    for (column, zeros) in columns.iter().zip(zero_dates) {
        if *zeros > 0 {
            tracing::warn!(
                table = %target,
                column = %column.name,
                zeros,
                "zero dates read as NULL (the [source]'s zero_dates = \"null\")"
            );
        }
    }
}

fn finish(schema: &SchemaRef, builders: &mut [ColumnBuilder]) -> Result<RecordBatch> {
    let arrays = builders.iter_mut().map(ColumnBuilder::finish).collect();
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_passwords_and_ssl_modes_are_read() {
        assert_eq!(
            redact("mysql://app:s3cret@db:3306/game?password=x&ssl-mode=REQUIRED"),
            "mysql://app:***@db:3306/game?password=***&ssl-mode=REQUIRED"
        );
        assert!(
            options("mysql://u@h/db?ssl-mode=VERIFY_IDENTITY")
                .unwrap()
                .ssl_opts()
                .is_some()
        );
        assert!(options("mysql://u@h/db").unwrap().ssl_opts().is_none());
        let roots = options("mysql://u@h/db?ssl-mode=VERIFY_CA&ssl-ca=/etc/ca.pem").unwrap();
        assert_eq!(roots.ssl_opts().unwrap().root_certs().len(), 1);
        assert!(options("mysql://u@h/db?ssl-ca=/etc/ca.pem").is_err());
        let err = options("mysql://u:pw@h/db?ssl-mode=SOMETIMES")
            .unwrap_err()
            .to_string();
        assert!(err.contains("VERIFY_CA") && !err.contains("pw"), "{err}");
    }
}
