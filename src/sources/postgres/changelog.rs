//! The changelog of a captured table: every change as a row (not folded by key), with what it
//! was (`_op`), the transaction it came in (`_lsn`, its end LSN, and `_seq`, its place in the
//! transaction) and when that committed (`_commit_time`). Analysts rebuild any day's state from
//! it; `(_lsn, _seq)` is unique, so a change applied twice would show.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::PG_EPOCH_MICROS;
use super::pgoutput::Value;
use crate::error::Result;

/// One change as the changelog keeps it.
struct LogRow {
    /// `I` insert, `U` update (the new row), `D` delete (the old key, or the old row under
    /// REPLICA IDENTITY FULL), `T` truncate; an update of the key is `D` of the old key then
    /// `I` of the new row.
    op: &'static str,
    lsn: u64,
    seq: u32,
    commit_time: i64,
    values: Vec<Value>,
}

/// Changes waiting to be appended to a table's changelog.
#[derive(Default)]
pub struct ChangeLog {
    /// End LSN of the last transaction the changelog table holds: older ones are skipped.
    pub applied: u64,
    rows: Vec<LogRow>,
    /// The transaction being recorded and the `_seq` of its next row.
    next: (u64, u32),
}

impl ChangeLog {
    /// A changelog that holds transactions up to `applied`.
    pub fn new(applied: u64) -> Self {
        Self {
            applied,
            rows: Vec::new(),
            next: (0, 0),
        }
    }

    /// Whether changes wait to be appended.
    pub fn pending(&self) -> bool {
        !self.rows.is_empty()
    }

    /// Records one row of a transaction that committed at `lsn`; a transaction's rows are
    /// numbered in its order (the same on every replay).
    pub fn push(&mut self, op: &'static str, (lsn, commit_time): (u64, i64), values: Vec<Value>) {
        if self.next.0 != lsn {
            self.next = (lsn, 0);
        }
        self.rows.push(LogRow {
            op,
            lsn,
            seq: self.next.1,
            commit_time,
            values,
        });
        self.next.1 += 1;
    }

    /// The recorded rows' values, in order, for the table's columns (built by the caller).
    pub fn values(&self) -> impl Iterator<Item = &[Value]> {
        self.rows.iter().map(|r| r.values.as_slice())
    }

    /// The recorded changes as one batch: `columns` (the table's, over [`Self::values`]), then
    /// `_op`, `_lsn`, `_seq`, `_commit_time`; the log starts over.
    pub fn take(
        &mut self,
        mut fields: Vec<Field>,
        mut arrays: Vec<ArrayRef>,
    ) -> Result<Option<RecordBatch>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.rows);
        fields.extend([
            Field::new("_op", DataType::Utf8, false),
            Field::new("_lsn", DataType::Int64, false),
            Field::new("_seq", DataType::Int32, false),
            Field::new(
                "_commit_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]);
        let extra: [ArrayRef; 4] = [
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.op))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.lsn as i64),
            )),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.seq as i32),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.commit_time + PG_EPOCH_MICROS),
                )
                .with_timezone("UTC"),
            ),
        ];
        arrays.extend(extra);
        Ok(Some(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            arrays,
        )?))
    }
}
