//! Errors as PostgreSQL's clients read them: a SQLSTATE code they act on, and the message.

use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::Error;

/// An error with a SQLSTATE, for the client.
pub fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

/// An engine error with the SQLSTATE clients act on.
pub fn to_pg_error(error: Error) -> PgWireError {
    let code = match &error {
        Error::PermissionDenied(_) => "42501",
        Error::Busy(_) => "53300",
        Error::Limit(_) => "54000",
        Error::Query(datafusion::error::DataFusionError::ResourcesExhausted(_)) => "53200",
        Error::TableNotFound { .. } => "42P01",
        Error::Cancelled(_) => "57014",
        Error::Unsupported(_) => "0A000",
        Error::Unavailable(_) => "08006",
        Error::Query(_) | Error::Invalid(_) | Error::TableName { .. } => "42601",
        _ => "XX000",
    };
    user_error(code, error.to_string())
}
