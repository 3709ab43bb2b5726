//! What goes back over gRPC: result batches as Flight data, schemas as IPC bytes, gamelake
//! errors as the status codes clients act on, and the (empty) key listings.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, IpcMessage, SchemaAsIpc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::TryStreamExt;
use prost::bytes::Bytes;
use tonic::{Response, Status};

use crate::error::Error;
use crate::serving::engine::BatchStream;

/// The stream type of DoGet answers.
pub type DoGetStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Maps gamelake errors to the gRPC codes clients act on.
pub fn to_status(err: Error) -> Status {
    let message = err.to_string();
    match err {
        Error::PermissionDenied(_) => Status::permission_denied(message),
        Error::Busy(_) => Status::resource_exhausted(message),
        Error::Limit(_) => Status::resource_exhausted(message),
        Error::TableNotFound { .. } => Status::not_found(message),
        Error::Query(datafusion::error::DataFusionError::ResourcesExhausted(_)) => {
            Status::resource_exhausted(message)
        }
        Error::Query(_) | Error::Invalid(_) | Error::TableName { .. } | Error::Config { .. } => {
            Status::invalid_argument(message)
        }
        Error::Unsupported(_) => Status::unimplemented(message),
        Error::NotFound(_) => Status::not_found(message),
        Error::Unavailable(_) => Status::unavailable(message),
        Error::Cancelled(_) => Status::cancelled(message),
        _ => Status::internal(message),
    }
}

pub fn encode(schema: SchemaRef, batches: BatchStream) -> DoGetStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches.map_err(|e| FlightError::Tonic(Box::new(to_status(e)))))
        .map_err(Status::from);
    Box::pin(stream)
}

pub fn one_batch(batch: Result<RecordBatch, FlightError>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    let schema = batch.schema();
    Ok(Response::new(encode(
        schema,
        Box::pin(futures::stream::iter([Ok(batch)])),
    )))
}

pub fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

/// Result schemas of the key commands (gamelake tables have no declared keys, so these are
/// always empty, with the columns the spec names).
pub mod keys {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// Columns of GetPrimaryKeys.
    pub fn primary() -> Schema {
        Schema::new(vec![
            Field::new("catalog_name", DataType::Utf8, true),
            Field::new("db_schema_name", DataType::Utf8, true),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("column_name", DataType::Utf8, false),
            Field::new("key_name", DataType::Utf8, true),
            Field::new("key_sequence", DataType::Int32, false),
        ])
    }

    /// Columns of GetExportedKeys and GetImportedKeys.
    pub fn foreign() -> Schema {
        Schema::new(vec![
            Field::new("pk_catalog_name", DataType::Utf8, true),
            Field::new("pk_db_schema_name", DataType::Utf8, true),
            Field::new("pk_table_name", DataType::Utf8, false),
            Field::new("pk_column_name", DataType::Utf8, false),
            Field::new("fk_catalog_name", DataType::Utf8, true),
            Field::new("fk_db_schema_name", DataType::Utf8, true),
            Field::new("fk_table_name", DataType::Utf8, false),
            Field::new("fk_column_name", DataType::Utf8, false),
            Field::new("key_sequence", DataType::Int32, false),
            Field::new("fk_key_name", DataType::Utf8, true),
            Field::new("pk_key_name", DataType::Utf8, true),
            Field::new("update_rule", DataType::UInt8, false),
            Field::new("delete_rule", DataType::UInt8, false),
        ])
    }
}
