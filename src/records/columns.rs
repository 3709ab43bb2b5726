//! The column types a record's field can become (bigint, double, text, boolean, timestamp; and
//! the `day` date), how a field's JSON text turns into a value of one, and the arrow builders
//! that collect them.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::DateTime;

use super::fields::{shown, unquote};

/// The value types a record's field can have as a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 64-bit integer.
    Int,
    /// 64-bit float.
    Float,
    /// Text; objects and arrays are stored as their JSON text.
    Text,
    /// true/false.
    Bool,
    /// An RFC 3339 string, stored as a UTC timestamp.
    Timestamp,
    /// A day (only the `day` column).
    Date,
}

impl Kind {
    /// A declared type name (`bigint`, `double`, `text`, `boolean`, `timestamp`, `json`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "bigint" | "int" | "integer" | "long" | "int64" => Kind::Int,
            "double" | "float" | "real" | "float64" => Kind::Float,
            "text" | "string" | "varchar" | "json" => Kind::Text,
            "boolean" | "bool" => Kind::Bool,
            "timestamp" | "timestamptz" => Kind::Timestamp,
            _ => return None,
        })
    }

    pub(super) fn of_arrow(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Kind::Int,
            DataType::Float32 | DataType::Float64 => Kind::Float,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
            DataType::Boolean => Kind::Bool,
            DataType::Timestamp(_, _) => Kind::Timestamp,
            DataType::Date32 => Kind::Date,
            _ => return None,
        })
    }

    /// The kind of a field's first non-null value (None for null).
    pub(super) fn infer(raw: &str) -> Option<Self> {
        Some(match raw.as_bytes().first() {
            None | Some(b'n') => return None,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'"' | b'{' | b'[') => Kind::Text,
            _ if raw.parse::<i64>().is_ok() => Kind::Int,
            _ => Kind::Float,
        })
    }

    pub(super) fn arrow(self) -> DataType {
        match self {
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Text => DataType::Utf8,
            Kind::Bool => DataType::Boolean,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Date => DataType::Date32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Int => "bigint",
            Kind::Float => "double",
            Kind::Text => "text",
            Kind::Bool => "boolean",
            Kind::Timestamp => "timestamp",
            Kind::Date => "date",
        }
    }

    /// A field's value (its JSON text) as a cell of this kind, or why it cannot be one.
    pub(super) fn cell(self, raw: &str) -> std::result::Result<Option<Cell<'_>>, String> {
        let first = raw.as_bytes().first().copied().unwrap_or(b'n');
        let number = first == b'-' || first.is_ascii_digit();
        let cell = match (self, first) {
            (_, b'n') => return Ok(None),
            (Kind::Int, _) if number => raw.parse().ok().map(Cell::Int),
            (Kind::Float, _) if number => raw.parse().ok().map(Cell::Float),
            (Kind::Text, b'"') => unquote(raw).map(Cell::Text),
            // Objects and arrays are kept as the JSON text they were sent as.
            (Kind::Text, b'{' | b'[') => Some(Cell::Text(Cow::Borrowed(raw))),
            (Kind::Bool, b't' | b'f') => Some(Cell::Bool(first == b't')),
            (Kind::Timestamp, b'"') => unquote(raw)
                .and_then(|s| parse_rfc3339(&s))
                .map(Cell::Micros),
            _ => None,
        };
        cell.map(Some)
            .ok_or_else(|| format!("expected {}, got {}", self.name(), shown(raw)))
    }
}

/// One value of a row.
pub(super) enum Cell<'a> {
    Int(i64),
    Float(f64),
    Text(Cow<'a, str>),
    Bool(bool),
    Micros(i64),
    Day(i32),
}

/// Collects one column's values.
pub(super) enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
}

impl Builder {
    pub(super) fn new(kind: Kind, nulls: usize) -> Self {
        let mut builder = match kind {
            Kind::Int => Builder::Int(Int64Builder::new()),
            Kind::Float => Builder::Float(Float64Builder::new()),
            Kind::Text => Builder::Text(StringBuilder::new()),
            Kind::Bool => Builder::Bool(BooleanBuilder::new()),
            Kind::Timestamp => {
                Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            Kind::Date => Builder::Date(Date32Builder::new()),
        };
        for _ in 0..nulls {
            builder.push(None);
        }
        builder
    }

    pub(super) fn push(&mut self, cell: Option<Cell<'_>>) {
        match (self, cell) {
            (Builder::Int(b), Some(Cell::Int(v))) => b.append_value(v),
            (Builder::Float(b), Some(Cell::Float(v))) => b.append_value(v),
            (Builder::Text(b), Some(Cell::Text(v))) => b.append_value(v.as_ref()),
            (Builder::Bool(b), Some(Cell::Bool(v))) => b.append_value(v),
            (Builder::Timestamp(b), Some(Cell::Micros(v))) => b.append_value(v),
            (Builder::Date(b), Some(Cell::Day(v))) => b.append_value(v),
            (Builder::Int(b), _) => b.append_null(),
            (Builder::Float(b), _) => b.append_null(),
            (Builder::Text(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Timestamp(b), _) => b.append_null(),
            (Builder::Date(b), _) => b.append_null(),
        }
    }

    pub(super) fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
        }
    }
}

/// An RFC 3339 time in microseconds since 1970.
pub(super) fn parse_rfc3339(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}
