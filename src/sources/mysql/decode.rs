//! MySQL values (the binary protocol's typed values) appended to Arrow builders, one builder per
//! column kind ([`super::columns::MyKind`]); a value that does not fit its column is an error
//! naming the column.

use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use mysql_async::Value;

use super::columns::{MyKind, ZeroDates};

/// The day 1970-01-01 counts from.
const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(d) => d,
    None => unreachable!(),
};

/// Builds one column.
pub enum ColumnBuilder {
    /// Booleans.
    Bool(BooleanBuilder),
    /// 8-bit integers.
    Int8(Int8Builder),
    /// 16-bit integers.
    Int16(Int16Builder),
    /// 32-bit integers.
    Int32(Int32Builder),
    /// 64-bit integers (also `time` in microseconds, and `bit(n)`).
    Int64(Int64Builder, bool),
    /// Decimals of a scale.
    Decimal(Decimal128Builder, i8),
    /// 32-bit floats.
    Float32(Float32Builder),
    /// 64-bit floats.
    Float64(Float64Builder),
    /// Text.
    Utf8(StringBuilder),
    /// Bytes; `true` strips a geometry's SRID.
    Binary(BinaryBuilder, bool),
    /// A `set`'s members.
    Set(ListBuilder<StringBuilder>),
    /// Days since 1970.
    Date(Date32Builder),
    /// Microseconds since 1970 (wall clock for `datetime`, UTC for `timestamp`).
    Timestamp(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    /// A builder for a column kind.
    pub fn new(kind: &MyKind) -> Self {
        match kind {
            MyKind::Bool => Self::Bool(BooleanBuilder::new()),
            MyKind::Int8 => Self::Int8(Int8Builder::new()),
            MyKind::Int16 => Self::Int16(Int16Builder::new()),
            MyKind::Int32 => Self::Int32(Int32Builder::new()),
            MyKind::Int64 => Self::Int64(Int64Builder::new(), false),
            MyKind::Time => Self::Int64(Int64Builder::new(), true),
            MyKind::Decimal(_, scale) => Self::Decimal(
                Decimal128Builder::new().with_data_type(kind.arrow_type()),
                *scale,
            ),
            MyKind::Float32 => Self::Float32(Float32Builder::new()),
            MyKind::Float64 => Self::Float64(Float64Builder::new()),
            MyKind::DecimalText { .. } | MyKind::Utf8 => Self::Utf8(StringBuilder::new()),
            MyKind::Binary { geometry } => Self::Binary(BinaryBuilder::new(), *geometry),
            MyKind::Set => Self::Set(ListBuilder::new(StringBuilder::new())),
            MyKind::Date => Self::Date(Date32Builder::new()),
            MyKind::DateTime => Self::Timestamp(TimestampMicrosecondBuilder::new()),
            MyKind::Timestamp => {
                Self::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    /// Appends one value. Returns whether it was a zero date made NULL (to count them).
    pub fn append(&mut self, value: &Value, zero_dates: ZeroDates) -> Result<bool, String> {
        let wrong = || format!("unexpected value {value:?}");
        match (self, value) {
            (Self::Bool(b), Value::NULL) => b.append_null(),
            (Self::Int8(b), Value::NULL) => b.append_null(),
            (Self::Int16(b), Value::NULL) => b.append_null(),
            (Self::Int32(b), Value::NULL) => b.append_null(),
            (Self::Int64(b, _), Value::NULL) => b.append_null(),
            (Self::Decimal(b, _), Value::NULL) => b.append_null(),
            (Self::Float32(b), Value::NULL) => b.append_null(),
            (Self::Float64(b), Value::NULL) => b.append_null(),
            (Self::Utf8(b), Value::NULL) => b.append_null(),
            (Self::Binary(b, _), Value::NULL) => b.append_null(),
            (Self::Set(b), Value::NULL) => b.append_null(),
            (Self::Date(b), Value::NULL) => b.append_null(),
            (Self::Timestamp(b), Value::NULL) => b.append_null(),
            (Self::Bool(b), v) => b.append_value(integer(v).ok_or_else(wrong)? != 0),
            (Self::Int8(b), v) => b.append_value(narrow(v)?),
            (Self::Int16(b), v) => b.append_value(narrow(v)?),
            (Self::Int32(b), v) => b.append_value(narrow(v)?),
            (Self::Int64(b, false), v) => b.append_value(narrow(v)?),
            (Self::Int64(b, true), Value::Time(negative, days, h, m, s, us)) => {
                let seconds = i64::from(*days) * 86_400
                    + i64::from(*h) * 3_600
                    + i64::from(*m) * 60
                    + i64::from(*s);
                let micros = seconds * 1_000_000 + i64::from(*us);
                b.append_value(if *negative { -micros } else { micros });
            }
            (Self::Decimal(b, scale), Value::Bytes(text)) => {
                b.append_value(decimal(text, *scale).ok_or_else(wrong)?)
            }
            (Self::Decimal(b, _), v) => b.append_value(integer(v).ok_or_else(wrong)?),
            (Self::Float32(b), Value::Float(f)) => b.append_value(*f),
            (Self::Float64(b), Value::Double(f)) => b.append_value(*f),
            (Self::Float64(b), Value::Float(f)) => b.append_value(f64::from(*f)),
            (Self::Utf8(b), Value::Bytes(bytes)) => {
                let text = std::str::from_utf8(bytes).map_err(|e| {
                    format!("bytes that are not valid in its character set ({e}); read it as binary with CAST(... AS BINARY)")
                })?;
                b.append_value(text);
            }
            (Self::Binary(b, geometry), Value::Bytes(bytes)) => {
                let wkb = if *geometry {
                    bytes.get(4..).ok_or_else(wrong)?
                } else {
                    bytes
                };
                b.append_value(wkb);
            }
            (Self::Set(b), Value::Bytes(bytes)) => {
                let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
                for member in text.split(',').filter(|m| !m.is_empty()) {
                    b.values().append_value(member);
                }
                b.append(true);
            }
            (Self::Date(b), Value::Date(y, mo, d, ..)) => match day(*y, *mo, *d) {
                Some(days) => b.append_value(days),
                None => return zero(zero_dates, || b.append_null()),
            },
            (Self::Timestamp(b), Value::Date(y, mo, d, h, mi, s, us)) => {
                match micros(*y, *mo, *d, *h, *mi, *s, *us) {
                    Some(t) => b.append_value(t),
                    None => return zero(zero_dates, || b.append_null()),
                }
            }
            _ => return Err(wrong()),
        }
        Ok(false)
    }

    /// The column built so far, and a new empty builder in its place.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int8(b) => Arc::new(b.finish()),
            Self::Int16(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b, _) => Arc::new(b.finish()),
            Self::Decimal(b, _) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::Binary(b, _) => Arc::new(b.finish()),
            Self::Set(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// A zero date: NULL and counted, or an error, as the policy says.
fn zero(policy: ZeroDates, null: impl FnOnce()) -> Result<bool, String> {
    match policy {
        ZeroDates::Null => {
            null();
            Ok(true)
        }
        ZeroDates::Error => Err(
            "a zero date (0000-00-00, or a zero month or day); set zero_dates = \"null\" in the [source] to read them as NULL"
                .to_string(),
        ),
    }
}

/// An integer value (signed or not; `bit(n)` arrives as big-endian bytes).
fn integer(value: &Value) -> Option<i128> {
    match value {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        Value::Bytes(bytes) if bytes.len() <= 8 => {
            Some(bytes.iter().fold(0i128, |n, b| (n << 8) | i128::from(*b)))
        }
        _ => None,
    }
}

/// An integer value that must fit `T`.
fn narrow<T: TryFrom<i128>>(value: &Value) -> Result<T, String> {
    let n = integer(value).ok_or_else(|| format!("unexpected value {value:?}"))?;
    T::try_from(n).map_err(|_| format!("{n} does not fit the column's type"))
}

/// A decimal's text (`-12.340`) as an integer of `scale` digits after the point.
fn decimal(text: &[u8], scale: i8) -> Option<i128> {
    let text = std::str::from_utf8(text).ok()?;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = usize::try_from(scale).ok()?;
    if fraction.len() > scale
        || !(whole.bytes().chain(fraction.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut value: i128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    for _ in fraction.len()..scale {
        value = value.checked_mul(10)?;
    }
    Some(if negative { -value } else { value })
}

/// Days since 1970 of a date; None for a zero date or a zero part.
fn day(year: u16, month: u8, day: u8) -> Option<i32> {
    let date = NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day))?;
    i32::try_from((date - EPOCH).num_days()).ok()
}

/// Microseconds since 1970 of a date and time; None for a zero date or a zero part.
fn micros(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Option<i64> {
    let date = NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d))?;
    let time = NaiveTime::from_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)?;
    Some(NaiveDateTime::new(date, time).and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_read_exactly() {
        assert_eq!(decimal(b"-12.34", 3), Some(-12_340));
        assert_eq!(
            decimal(b"18446744073709551615", 0),
            Some(18_446_744_073_709_551_615)
        );
        assert_eq!(decimal(b"1.5", 0), None, "more digits than the scale");
        assert_eq!(decimal(b"1e5", 0), None);
    }
}
