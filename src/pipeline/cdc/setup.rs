//! What change capture sets up in PostgreSQL before it reads: each table checked (its key and
//! replica identity), the pipeline's publication, and the names and positions (LSNs) it uses.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::lake::write::transaction_version;
use crate::pipeline::config::TableConfig;
use crate::query::Session;
use crate::sources::postgres::changelog::ChangeLog;
use crate::sources::postgres::changes::CapturedTable;
use crate::sources::postgres::{describe, pg_error, quote_identifier, quote_qualified};

/// The slot and publication of a pipeline: `gamelake_` and its name in lower-case letters,
/// digits and underscores (PostgreSQL's rule for slot names), at most 63 bytes.
pub fn slot_name(pipeline: &str) -> String {
    let mut name: String = format!("gamelake_{pipeline}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(63);
    name
}

/// A table to capture, its columns and key checked against PostgreSQL, with its committed
/// position; `true` when the lake does not hold it yet.
pub(super) async fn capture(
    session: &Session,
    client: &Client,
    pipeline: &str,
    table: &TableConfig,
    full_refresh: bool,
) -> Result<(CapturedTable, bool)> {
    let from = table.from.as_deref().ok_or_else(|| {
        Error::Invalid(format!(
            "{}: cdc mode reads a table: set from = \"schema.table\"",
            table.to
        ))
    })?;
    let quoted = quote_qualified(from);
    let row = client
        .query_one(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text,
                    coalesce((SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
                      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                      WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = $1::text::regclass",
            &[&quoted],
        )
        .await
        .map_err(|e| pg_error(from, &e))?;
    let (schema, name, identity, primary): (String, String, String, Vec<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let source = format!("{schema}.{name}");
    match identity.as_str() {
        "n" => {
            return Err(Error::Invalid(format!(
                "{source} has REPLICA IDENTITY NOTHING: PostgreSQL does not say which row an update or delete touched, so the lake cannot apply them; run ALTER TABLE {quoted} REPLICA IDENTITY DEFAULT (it has to have a primary key) or REPLICA IDENTITY FULL"
            )));
        }
        "d" if primary.is_empty() => {
            return Err(Error::Invalid(format!(
                "{source} has no primary key: PostgreSQL cannot say which row an update or delete touched; add one (ALTER TABLE {quoted} ADD PRIMARY KEY (...)) or run ALTER TABLE {quoted} REPLICA IDENTITY FULL and set key = [...] on the [[table]]"
            )));
        }
        _ => {}
    }
    let key = if table.key.is_empty() {
        primary
    } else {
        table.key.clone()
    };
    let columns = describe(client, &format!("SELECT * FROM {quoted}")).await?;
    let target = TableRef::parse(&table.to)?;
    let applied = if full_refresh {
        None
    } else {
        transaction_version(session.lake(), &target, &table.app_id(pipeline)).await?
    };
    // Columns PostgreSQL has and the lake table lacks (added while nobody followed) are added
    // to the lake before the next batch.
    let lake: Option<Vec<String>> = match applied {
        Some(_) => {
            let frame = session.context().table(target.to_string()).await?;
            Some(
                frame
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            )
        }
        None => None,
    };
    let mut captured = CapturedTable::new(
        &source,
        columns,
        &key,
        applied.unwrap_or(0) as u64,
        lake.as_deref(),
    )?;
    if table.changelog {
        let changes = changelog_table(table)?;
        let logged = transaction_version(session.lake(), &changes, &table.app_id(pipeline)).await?;
        captured.log = Some(ChangeLog::new(logged.unwrap_or(0) as u64));
    }
    Ok((captured, applied.is_none()))
}

/// The changelog table of a cdc table: `<to>_changes`.
pub(super) fn changelog_table(table: &TableConfig) -> Result<TableRef> {
    TableRef::parse(&format!("{}_changes", table.to))
}

/// Refuses columns added with a default: PostgreSQL fills the rows that exist without a change
/// the stream would carry, so the lake could not know their values.
pub(super) async fn check_no_defaults(
    client: &Client,
    source: &str,
    added: &[datafusion::arrow::datatypes::Field],
) -> Result<()> {
    for field in added {
        let filled: bool = client
            .query_one(
                "SELECT coalesce(bool_or(atthasmissing OR atthasdef), false) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attname = $2 AND NOT attisdropped",
                &[&quote_qualified(source), field.name()],
            )
            .await
            .map_err(|e| pg_error(source, &e))?
            .get(0);
        if filled {
            return Err(Error::Unsupported(format!(
                "{source}: column \"{}\" was added with a DEFAULT, which PostgreSQL writes into the existing rows without sending them; run `gamelake ingest FILE --full-refresh` to copy the table again",
                field.name()
            )));
        }
    }
    Ok(())
}

/// Creates the publication of the captured tables, or adds the ones it lacks.
pub(super) async fn publish(
    client: &Client,
    name: &str,
    tables: &[(CapturedTable, bool)],
) -> std::result::Result<(), tokio_postgres::Error> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await?
        .is_some();
    let quoted: Vec<String> = tables
        .iter()
        .map(|(t, _)| quote_qualified(&t.source))
        .collect();
    if !exists {
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_identifier(name),
            quoted.join(", ")
        );
        return client.batch_execute(&sql).await;
    }
    for (table, quoted) in tables.iter().zip(&quoted) {
        let (schema, relation) = table.0.source.split_once('.').unwrap_or(("public", ""));
        let member = client
            .query_opt(
                "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&name, &schema, &relation],
            )
            .await?
            .is_some();
        if !member {
            let sql = format!(
                "ALTER PUBLICATION {} ADD TABLE {quoted}",
                quote_identifier(name)
            );
            client.batch_execute(&sql).await?;
        }
    }
    Ok(())
}

/// An LSN as PostgreSQL writes it (`16/B374D848`) as a number.
pub(super) fn parse_lsn(text: &str) -> Result<i64> {
    let parsed = text.split_once('/').and_then(|(hi, lo)| {
        Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
    });
    parsed
        .and_then(|l| i64::try_from(l).ok())
        .ok_or_else(|| Error::Invalid(format!("not an LSN: {text}")))
}

/// An LSN as PostgreSQL writes it.
pub(super) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_slot_names() {
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert!(parse_lsn("nonsense").is_err());
        assert_eq!(slot_name("Shop-CDC v2"), "gamelake_shop_cdc_v2");
        assert_eq!(slot_name(&"x".repeat(100)).len(), 63);
    }
}
