//! MySQL and MariaDB column types → Arrow, one explicit policy per type (README "Migrating from
//! v1.0"). The lake is Delta Lake, whose types are signed and whose decimals stop at 38 digits,
//! so unsigned integers widen to the next signed type (`bigint unsigned` to `decimal(20,0)`, never
//! a float), and decimals of more than 38 digits are kept as their exact text.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use mysql_async::consts::{ColumnFlags, ColumnType};

use crate::error::{Error, Result};

/// The character set number MySQL gives binary columns (`binary`, `varbinary`, `blob`).
const BINARY_CHARSET: u16 = 63;

/// How a MySQL column becomes an Arrow column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MyKind {
    /// `tinyint(1)` (MySQL's `bool`), `bit(1)`.
    Bool,
    /// `tinyint`.
    Int8,
    /// `smallint`, `tinyint unsigned`, `year`.
    Int16,
    /// `mediumint`, `int`, `smallint unsigned`.
    Int32,
    /// `bigint`, `int unsigned`, `mediumint unsigned`, `bit(2..63)`.
    Int64,
    /// `decimal(p,s)` with p ≤ 38, `bigint unsigned` and `bit(64)` as `decimal(20,0)`.
    Decimal(u8, i8),
    /// `decimal(p,s)` with p > 38: the exact digits as text (Delta Lake's decimals stop at 38);
    /// PostgreSQL, which holds them, gets `numeric(precision, scale)`.
    DecimalText {
        /// Digits in all.
        precision: u32,
        /// Digits after the point.
        scale: u32,
    },
    /// `float`.
    Float32,
    /// `double`.
    Float64,
    /// `char`, `varchar`, `text` (any character set: the server sends utf8mb4), `enum`, `json`.
    Utf8,
    /// `binary`, `varbinary`, `blob`; `geometry` as WKB (MySQL's 4-byte SRID prefix removed).
    Binary {
        /// Strip the SRID MySQL puts before a geometry's WKB.
        geometry: bool,
    },
    /// `set`: the chosen members, as a list.
    Set,
    /// `date` (zero dates: see [`ZeroDates`]).
    Date,
    /// `datetime(n)`: wall-clock time, microseconds, no zone.
    DateTime,
    /// `timestamp(n)`: an instant, read in UTC.
    Timestamp,
    /// `time`: microseconds, negative and over 24 hours allowed (±838:59:59).
    Time,
}

/// What a zero date (`0000-00-00`, or a zero month or day) becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroDates {
    /// NULL, counted per column in the summary (default).
    #[default]
    Null,
    /// An error naming the column.
    Error,
}

/// The choices a source's type policy leaves to the user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypePolicy {
    /// `tinyint(1)` as an integer rather than a boolean.
    pub tinyint1_as_int: bool,
    /// What zero dates become.
    pub zero_dates: ZeroDates,
}

/// One column of a MySQL result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MyColumn {
    /// The column's name.
    pub name: String,
    /// How it maps to Arrow.
    pub kind: MyKind,
}

impl MyColumn {
    /// The column of a result's metadata, by `policy`; an unsupported type is an error naming
    /// the column and the cast that reads it.
    pub fn new(column: &mysql_async::Column, policy: TypePolicy) -> Result<Self> {
        let name = column.name_str().into_owned();
        let flags = column.flags();
        let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
        let length = column.column_length();
        let kind = match column.column_type() {
            ColumnType::MYSQL_TYPE_TINY if length == 1 && !policy.tinyint1_as_int && !unsigned => {
                MyKind::Bool
            }
            ColumnType::MYSQL_TYPE_TINY if unsigned => MyKind::Int16,
            ColumnType::MYSQL_TYPE_TINY => MyKind::Int8,
            ColumnType::MYSQL_TYPE_SHORT if unsigned => MyKind::Int32,
            ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR => MyKind::Int16,
            ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG if unsigned => MyKind::Int64,
            ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG => MyKind::Int32,
            ColumnType::MYSQL_TYPE_LONGLONG if unsigned => MyKind::Decimal(20, 0),
            ColumnType::MYSQL_TYPE_LONGLONG => MyKind::Int64,
            ColumnType::MYSQL_TYPE_NEWDECIMAL | ColumnType::MYSQL_TYPE_DECIMAL => {
                let scale = column.decimals();
                // The display length counts a point and (signed) a minus sign.
                let precision = length
                    .saturating_sub(u32::from(scale > 0))
                    .saturating_sub(u32::from(!unsigned));
                match u8::try_from(precision) {
                    Ok(p) if (1..=38).contains(&p) => MyKind::Decimal(p, scale as i8),
                    _ => MyKind::DecimalText {
                        precision,
                        scale: u32::from(scale),
                    },
                }
            }
            ColumnType::MYSQL_TYPE_FLOAT => MyKind::Float32,
            ColumnType::MYSQL_TYPE_DOUBLE => MyKind::Float64,
            ColumnType::MYSQL_TYPE_BIT if length == 1 => MyKind::Bool,
            ColumnType::MYSQL_TYPE_BIT if length <= 63 => MyKind::Int64,
            ColumnType::MYSQL_TYPE_BIT => MyKind::Decimal(20, 0),
            ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => MyKind::Date,
            ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => MyKind::DateTime,
            ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => {
                MyKind::Timestamp
            }
            ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => MyKind::Time,
            ColumnType::MYSQL_TYPE_JSON | ColumnType::MYSQL_TYPE_NULL => MyKind::Utf8,
            ColumnType::MYSQL_TYPE_GEOMETRY => MyKind::Binary { geometry: true },
            ColumnType::MYSQL_TYPE_SET => MyKind::Set,
            ColumnType::MYSQL_TYPE_ENUM => MyKind::Utf8,
            ColumnType::MYSQL_TYPE_STRING
            | ColumnType::MYSQL_TYPE_VAR_STRING
            | ColumnType::MYSQL_TYPE_VARCHAR
            | ColumnType::MYSQL_TYPE_TINY_BLOB
            | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
            | ColumnType::MYSQL_TYPE_LONG_BLOB
            | ColumnType::MYSQL_TYPE_BLOB => {
                if flags.contains(ColumnFlags::SET_FLAG) {
                    MyKind::Set
                } else if flags.contains(ColumnFlags::ENUM_FLAG) {
                    MyKind::Utf8
                } else if column.character_set() == BINARY_CHARSET {
                    MyKind::Binary { geometry: false }
                } else {
                    MyKind::Utf8
                }
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "column `{name}` has MySQL type {other:?}, which gamelake cannot read yet; cast it in the source query, e.g. query = \"SELECT ..., CAST(`{name}` AS CHAR) AS `{name}` FROM ...\""
                )));
            }
        };
        Ok(Self { name, kind })
    }

    /// The Arrow field this column becomes (nullable: MySQL's NOT NULL is not carried over).
    pub fn field(&self) -> Field {
        Field::new(&self.name, self.kind.arrow_type(), true)
    }
}

impl MyKind {
    /// The Arrow type of this kind.
    pub fn arrow_type(&self) -> DataType {
        match self {
            MyKind::Bool => DataType::Boolean,
            MyKind::Int8 => DataType::Int8,
            MyKind::Int16 => DataType::Int16,
            MyKind::Int32 => DataType::Int32,
            MyKind::Int64 | MyKind::Time => DataType::Int64,
            MyKind::Decimal(p, s) => DataType::Decimal128(*p, *s),
            MyKind::Float32 => DataType::Float32,
            MyKind::Float64 => DataType::Float64,
            MyKind::DecimalText { .. } | MyKind::Utf8 => DataType::Utf8,
            MyKind::Binary { .. } => DataType::Binary,
            MyKind::Set => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            MyKind::Date => DataType::Date32,
            MyKind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            MyKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}
