//! Stateless tickets and prepared-statement handles. Each carries what is needed to run it
//! (SQL text, bound parameters, who asked, expiry), signed with the server key, so any replica
//! that shares the key can serve the DoGet of a GetFlightInfo another replica answered.

use std::io::Cursor;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use super::auth::Principal;
use crate::error::{Error, Result};

/// What a DoGet runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryTicket {
    /// Query id: names the query in the log and in CancelFlightInfo.
    pub id: String,
    /// The SQL text, as the client sent it.
    pub sql: String,
    /// Bound parameter values (Arrow IPC of a one-row batch, base64), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// Who may redeem the ticket.
    pub who: Principal,
    /// Send Arrow view types as they are (the client asked to keep them).
    #[serde(default)]
    pub keep_view_types: bool,
    /// An admin's statement that already ran at GetFlightInfo; DoGet sends this summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<String>,
}

/// A prepared statement: its SQL, its owner and (after DoPut) its parameter values.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreparedHandle {
    /// The SQL text with `?` or `$n` placeholders.
    pub sql: String,
    /// Who prepared it.
    pub who: Principal,
    /// Bound parameter values, as in [`QueryTicket::params`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
}

/// Encodes bound parameters (the first row of `batch`) for a ticket or handle.
pub fn encode_params(batch: &RecordBatch) -> Result<String> {
    if batch.num_rows() != 1 {
        return Err(Error::Invalid(format!(
            "bind exactly one row of parameters (got {}); run the statement once per row",
            batch.num_rows()
        )));
    }
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(STANDARD.encode(bytes))
}

/// The parameter values a ticket or handle carries, in placeholder order (`$1`, `$2`, ...).
pub fn decode_params(encoded: Option<&str>) -> Result<Vec<ScalarValue>> {
    let Some(text) = encoded else {
        return Ok(Vec::new());
    };
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| Error::Invalid(format!("malformed parameters in a ticket: {e}")))?;
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let Some(batch) = reader.next().transpose()? else {
        return Ok(Vec::new());
    };
    batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c.as_ref(), 0).map_err(Error::Query))
        .collect()
}

/// A new query id.
pub fn new_query_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The schema of the one-row answer to a statement that already ran.
pub fn done_schema() -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![Field::new(
        "result",
        DataType::Utf8,
        false,
    )]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn parameters_round_trip() {
        let schema = Schema::new(vec![
            Field::new("0", DataType::Int64, true),
            Field::new("1", DataType::Utf8, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![42])),
                Arc::new(StringArray::from(vec!["cn"])),
            ],
        )
        .unwrap();
        let text = encode_params(&batch).unwrap();
        assert_eq!(
            decode_params(Some(&text)).unwrap(),
            vec![
                ScalarValue::Int64(Some(42)),
                ScalarValue::Utf8(Some("cn".into()))
            ]
        );
        assert!(decode_params(None).unwrap().is_empty());
    }
}
