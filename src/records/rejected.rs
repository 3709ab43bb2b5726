//! Records that cannot be rows, and `<schema>._rejected`, the table that keeps them with the
//! reason, so none is dropped.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::{DAY, RECEIVED_AT};
use crate::error::Result;

/// A record that cannot be a row, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// `schema.table` the record was sent to.
    pub table: String,
    /// When it was received, microseconds since 1970.
    pub received_at: i64,
    /// Why it was rejected.
    pub reason: String,
    /// The record as sent (invalid UTF-8 replaced).
    pub record: String,
}

/// `<schema>._rejected`: table, received_at, reason, record, and the UTC day of receipt.
pub fn rejected_batch(records: &[Rejected]) -> Result<RecordBatch> {
    let utc = Some("UTC".into());
    let schema = Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new(
            RECEIVED_AT,
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            false,
        ),
        Field::new("reason", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
        Field::new(DAY, DataType::Date32, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| &r.table),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| r.received_at))
                .with_timezone_opt(utc),
        ),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| &r.reason),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| &r.record),
        )),
        Arc::new(Date32Array::from_iter_values(
            records
                .iter()
                .map(|r| r.received_at.div_euclid(86_400_000_000) as i32),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}
