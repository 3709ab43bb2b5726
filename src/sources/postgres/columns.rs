//! PostgreSQL column types and the Arrow types they become.
//!
//! | PostgreSQL | Arrow |
//! |---|---|
//! | bool | Boolean |
//! | int2 / int4 / int8 | Int16 / Int32 / Int64 |
//! | float4 / float8 (NaN, ±Infinity kept) | Float32 / Float64 |
//! | numeric(p, s) | Decimal128(p, s) (p ≤ 38) |
//! | numeric without precision | Utf8, the exact digits (no Arrow decimal holds every value) |
//! | text, varchar, char, name, citext, enums, unknown | Utf8 |
//! | bytea | Binary |
//! | date | Date32 (±infinity → 9999-12-31 / 0001-01-01) |
//! | time | Int64, microseconds since midnight (Delta has no time type) |
//! | timestamp / timestamptz | Timestamp(µs) / Timestamp(µs, UTC) (±infinity → 9999-12-31 23:59:59.999999 / 0001-01-01) |
//! | interval | Struct(months Int32, days Int32, microseconds Int64), exactly PostgreSQL's parts |
//! | uuid | Utf8 (canonical text) |
//! | json / jsonb | Utf8 (JSON text) |
//! | inet / cidr | Utf8 (`addr/bits` text) |
//! | one-dimensional arrays of the above | List |
//! | domains | their base type |
//!
//! Anything else is an error naming the column, with the fix: cast it in the source query.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use tokio_postgres::types::{Kind, Type};

use crate::error::{Error, Result};

/// How the bytes of one column are decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgKind {
    /// bool
    Bool,
    /// int2
    Int2,
    /// int4
    Int4,
    /// int8
    Int8,
    /// float4
    Float4,
    /// float8
    Float8,
    /// numeric with precision and scale
    Decimal(u8, i8),
    /// numeric without precision, as text
    NumericText,
    /// UTF-8 text as sent (text, varchar, enums, citext, json)
    Text,
    /// jsonb: a version byte, then JSON text
    Jsonb,
    /// bytea
    Bytes,
    /// date
    Date,
    /// time
    Time,
    /// timestamp (without zone)
    Timestamp,
    /// timestamptz
    TimestampTz,
    /// interval
    Interval,
    /// uuid
    Uuid,
    /// inet / cidr
    Inet,
    /// a one-dimensional array of an element kind
    Array(Box<PgKind>),
}

impl PgKind {
    /// The kind for a PostgreSQL type and its modifier, or `None` if unsupported.
    pub fn of(ty: &Type, typmod: i32) -> Option<Self> {
        match ty.kind() {
            Kind::Enum(_) => return Some(Self::Text),
            Kind::Domain(base) => return Self::of(base, typmod),
            Kind::Array(element) => {
                return Self::of(element, -1)
                    .filter(|k| !matches!(k, Self::Array(_)))
                    .map(|k| Self::Array(Box::new(k)));
            }
            _ => {}
        }
        Some(match ty.name() {
            "bool" => Self::Bool,
            "int2" => Self::Int2,
            "int4" => Self::Int4,
            "int8" => Self::Int8,
            "float4" => Self::Float4,
            "float8" => Self::Float8,
            "numeric" => match numeric_precision(typmod) {
                Some((p, s)) if p <= 38 => Self::Decimal(p, s),
                _ => Self::NumericText,
            },
            "text" | "varchar" | "bpchar" | "name" | "citext" | "json" | "unknown" | "xml" => {
                Self::Text
            }
            "jsonb" => Self::Jsonb,
            "bytea" => Self::Bytes,
            "date" => Self::Date,
            "time" => Self::Time,
            "timestamp" => Self::Timestamp,
            "timestamptz" => Self::TimestampTz,
            "interval" => Self::Interval,
            "uuid" => Self::Uuid,
            "inet" | "cidr" => Self::Inet,
            _ => return None,
        })
    }

    /// Whether the lake holds this kind in a form PostgreSQL cannot compare with the same
    /// literal (time as microseconds, interval as a struct), so a filter on it stays in DataFusion.
    pub fn differs_in_arrow(&self) -> bool {
        match self {
            Self::Time | Self::Interval => true,
            Self::Array(element) => element.differs_in_arrow(),
            _ => false,
        }
    }

    /// The Arrow type this kind becomes.
    pub fn arrow_type(&self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int2 => DataType::Int16,
            Self::Int4 => DataType::Int32,
            Self::Int8 | Self::Time => DataType::Int64,
            Self::Float4 => DataType::Float32,
            Self::Float8 => DataType::Float64,
            Self::Decimal(p, s) => DataType::Decimal128(*p, *s),
            Self::NumericText | Self::Text | Self::Jsonb | Self::Uuid | Self::Inet => {
                DataType::Utf8
            }
            Self::Bytes => DataType::Binary,
            Self::Date => DataType::Date32,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Interval => DataType::Struct(interval_fields()),
            Self::Array(element) => {
                DataType::List(Arc::new(Field::new("item", element.arrow_type(), true)))
            }
        }
    }
}

/// The parts of an interval in the lake: `months`, `days`, `microseconds`.
pub fn interval_fields() -> Fields {
    Fields::from(vec![
        Field::new("months", DataType::Int32, true),
        Field::new("days", DataType::Int32, true),
        Field::new("microseconds", DataType::Int64, true),
    ])
}

/// A source column: its name and how its PostgreSQL type is decoded.
#[derive(Clone, Debug)]
pub struct PgColumn {
    /// Column name.
    pub name: String,
    /// How to decode it.
    pub kind: PgKind,
}

impl PgColumn {
    /// Maps a column, or explains what to do when its type is not supported.
    pub fn new(name: &str, pg_type: &Type, typmod: i32) -> Result<Self> {
        let kind = PgKind::of(pg_type, typmod).ok_or_else(|| {
            Error::Unsupported(format!(
                "column \"{name}\" has PostgreSQL type {}, which gamelake cannot read yet; cast it in the source query, e.g. query = \"SELECT ..., {name}::text AS {name} FROM ...\"",
                pg_type.name()
            ))
        })?;
        Ok(Self {
            name: name.to_string(),
            kind,
        })
    }

    /// The Arrow field of this column (always nullable: PostgreSQL can change constraints).
    pub fn field(&self) -> Field {
        Field::new(&self.name, self.kind.arrow_type(), true)
    }
}

/// Precision and scale from a numeric type modifier (`-1` when unconstrained).
fn numeric_precision(typmod: i32) -> Option<(u8, i8)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    let precision = ((t >> 16) & 0xFFFF) as u8;
    let scale = (t & 0xFFFF) as i16 as i8;
    (precision > 0).then_some((precision, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_modifiers() {
        // numeric(12,2) has typmod ((12 << 16) | 2) + 4.
        assert_eq!(numeric_precision((12 << 16 | 2) + 4), Some((12, 2)));
        assert_eq!(numeric_precision(-1), None);
        assert_eq!(PgKind::of(&Type::NUMERIC, -1), Some(PgKind::NumericText));
        assert_eq!(
            PgKind::of(&Type::NUMERIC, (50 << 16 | 2) + 4),
            Some(PgKind::NumericText)
        );
    }

    #[test]
    fn arrays_and_unsupported_types() {
        assert_eq!(
            PgKind::of(&Type::INT4_ARRAY, -1),
            Some(PgKind::Array(Box::new(PgKind::Int4)))
        );
        let err = PgColumn::new("loc", &Type::POINT, -1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"loc\"") && err.contains("point") && err.contains("::text"),
            "{err}"
        );
    }
}
