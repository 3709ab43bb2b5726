//! What drivers and tools send to set up a connection, answered by the protocol layer without
//! the engine: `SET` and `SHOW` of client settings, and transactions, which are no-ops around
//! reads (every query reads the newest committed version of each table it names; an admin's
//! write commits when it runs, so `ROLLBACK` after a write does not undo it — said in the
//! README).

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{Set, Statement};
use futures::stream;
use pgwire::api::ClientInfo;
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};

use super::login::SERVER_VERSION;

/// A statement answered by the protocol layer.
#[derive(Clone, Debug)]
pub enum SessionCommand {
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`: inside a no-op transaction, no-ops too.
    Savepoint(&'static str),
    /// `SET name = value` (remembered for `SHOW`, otherwise without effect).
    Set {
        /// The setting, lower case.
        name: Option<String>,
        /// Its value as written, quotes removed.
        value: String,
    },
    /// `SHOW name`.
    Show(String),
    /// `DISCARD ALL`, `DEALLOCATE`, `RESET`, `UNLISTEN`: nothing to do; the tag to answer.
    Nothing(&'static str),
}

/// The command a statement is, if the protocol layer answers it.
pub fn recognise(statement: &Statement) -> Option<SessionCommand> {
    Some(match statement {
        Statement::StartTransaction { .. } => SessionCommand::Begin,
        Statement::Commit { .. } => SessionCommand::Commit,
        Statement::Rollback {
            savepoint: Some(_), ..
        } => SessionCommand::Savepoint("ROLLBACK"),
        Statement::Rollback { .. } => SessionCommand::Rollback,
        Statement::Savepoint { .. } => SessionCommand::Savepoint("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => SessionCommand::Savepoint("RELEASE"),
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => SessionCommand::Set {
            name: Some(variable.to_string().to_ascii_lowercase()),
            value: values
                .iter()
                .map(|v| v.to_string().trim_matches('\'').to_string())
                .collect::<Vec<_>>()
                .join(", "),
        },
        Statement::Set(Set::SetTimeZone { value, .. }) => SessionCommand::Set {
            name: Some("timezone".to_string()),
            value: value.to_string().trim_matches('\'').to_string(),
        },
        Statement::Set(_) => SessionCommand::Set {
            name: None,
            value: String::new(),
        },
        Statement::ShowVariable { variable } => SessionCommand::Show(
            variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Statement::Discard { .. } => SessionCommand::Nothing("DISCARD ALL"),
        Statement::Deallocate { .. } => SessionCommand::Nothing("DEALLOCATE"),
        Statement::Reset(_) => SessionCommand::Nothing("RESET"),
        Statement::UNLISTEN { .. } => SessionCommand::Nothing("UNLISTEN"),
        _ => return None,
    })
}

/// The columns a command answers with (only `SHOW` has one).
pub fn fields(command: &SessionCommand) -> Vec<FieldInfo> {
    match command {
        SessionCommand::Show(name) => vec![FieldInfo::new(
            name.clone(),
            None,
            None,
            Type::TEXT,
            FieldFormat::Text,
        )],
        _ => Vec::new(),
    }
}

/// Answers a command for `client`.
pub fn answer<C: ClientInfo>(client: &mut C, command: &SessionCommand) -> PgWireResult<Response> {
    Ok(match command {
        SessionCommand::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        SessionCommand::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
        SessionCommand::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
        SessionCommand::Savepoint(tag) => Response::Execution(Tag::new(tag)),
        SessionCommand::Set { name, value } => {
            if let Some(name) = name {
                client
                    .metadata_mut()
                    .insert(format!("set:{name}"), value.clone());
            }
            Response::Execution(Tag::new("SET"))
        }
        SessionCommand::Show(name) => {
            let value = client
                .metadata()
                .get(&format!("set:{name}"))
                .cloned()
                .or_else(|| setting(client, name))
                .ok_or_else(|| {
                    PgWireError::UserError(Box::new(ErrorInfo::new(
                        "ERROR".to_string(),
                        "42704".to_string(),
                        format!("unrecognized configuration parameter \"{name}\""),
                    )))
                })?;
            let fields = Arc::new(fields(command));
            let mut row = DataRowEncoder::new(fields.clone());
            row.encode_field(&Some(value))?;
            let rows = stream::iter([Ok(row.take_row())]);
            Response::Query(QueryResponse::new(fields, rows))
        }
        SessionCommand::Nothing(tag) => Response::Execution(Tag::new(tag)),
    })
}

/// The value of a setting nobody `SET`: what the session started with, or the server's.
fn setting<C: ClientInfo>(client: &C, name: &str) -> Option<String> {
    let started = |key: &str| client.metadata().get(key).cloned();
    Some(match name {
        "server_version" => SERVER_VERSION.to_string(),
        "server_version_num" => "150000".to_string(),
        "server_encoding" | "client_encoding" => "UTF8".to_string(),
        "application_name" => started("application_name").unwrap_or_default(),
        "timezone" | "time zone" => started("TimeZone").unwrap_or_else(|| "UTC".to_string()),
        "datestyle" => "ISO, MDY".to_string(),
        "intervalstyle" => "postgres".to_string(),
        "search_path" => "public".to_string(),
        "standard_conforming_strings" | "integer_datetimes" => "on".to_string(),
        "transaction_isolation"
        | "default_transaction_isolation"
        | "transaction isolation level" => "read committed".to_string(),
        "transaction_read_only" | "default_transaction_read_only" | "is_superuser" => {
            "off".to_string()
        }
        "max_identifier_length" => "63".to_string(),
        "lc_collate" | "lc_ctype" => "C".to_string(),
        "statement_timeout" | "lock_timeout" => "0".to_string(),
        "extra_float_digits" => "1".to_string(),
        _ => return None,
    })
}
