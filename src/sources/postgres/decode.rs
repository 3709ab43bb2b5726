//! PostgreSQL binary wire values, decoded straight into Arrow builders.
//!
//! The binary formats are PostgreSQL's `*send` functions; written here because no crate decodes
//! them into Arrow (tokio-postgres's `FromSql` targets Rust values, and misses numeric,
//! interval, inet and ±infinity).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListArray, StringArray,
    StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::Field;

use super::columns::{PgKind, interval_fields};
use crate::error::{Error, Result};

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Where `date 'infinity'` and `'-infinity'` land: 9999-12-31 and 0001-01-01 (days since
/// 1970-01-01), the ends of the range Delta, Spark, DuckDB and chrono all read. PostgreSQL sends
/// them as `i32::MAX`/`i32::MIN`, which no date library can print (the lake writer panicked on
/// them before 2026-12-07).
pub const DATE_INFINITY: (i32, i32) = (2_932_896, -719_162);
/// Where timestamp `'infinity'` and `'-infinity'` land: 9999-12-31 23:59:59.999999 and
/// 0001-01-01 00:00:00 (microseconds since 1970-01-01), for the same reason.
pub const TIMESTAMP_INFINITY: (i64, i64) = (253_402_300_799_999_999, -62_135_596_800_000_000);

/// The builders of an interval's three parts.
#[derive(Default)]
pub struct IntervalParts {
    /// Months.
    months: Int32Builder,
    /// Days.
    days: Int32Builder,
    /// Microseconds.
    micros: Int64Builder,
    /// Which intervals are present.
    valid: Vec<bool>,
}

impl IntervalParts {
    /// Appends PostgreSQL's binary interval: microseconds, days, months (big-endian).
    fn append(&mut self, b: [u8; 16]) -> Result<()> {
        let (m, d) = b.split_at(8);
        let (d, mo) = d.split_at(4);
        self.micros.append_value(i64::from_be_bytes(fixed(m)?));
        self.days.append_value(i32::from_be_bytes(fixed(d)?));
        self.months.append_value(i32::from_be_bytes(fixed(mo)?));
        self.valid.push(true);
        Ok(())
    }

    /// Appends a NULL interval; its parts are NULL too, so `lasts['days']` of it is NULL.
    fn append_null(&mut self) {
        self.months.append_null();
        self.days.append_null();
        self.micros.append_null();
        self.valid.push(false);
    }

    /// The intervals so far as a struct array; the builders start over.
    fn finish(&mut self) -> Result<StructArray> {
        Ok(StructArray::try_new(
            interval_fields(),
            vec![
                Arc::new(self.months.finish()),
                Arc::new(self.days.finish()),
                Arc::new(self.micros.finish()),
            ],
            Some(NullBuffer::from(std::mem::take(&mut self.valid))),
        )?)
    }
}

/// A builder for one column.
pub enum ColumnBuilder {
    /// bool
    Bool(BooleanBuilder),
    /// int2
    I16(Int16Builder),
    /// int4
    I32(Int32Builder),
    /// int8
    I64(Int64Builder),
    /// float4
    F32(Float32Builder),
    /// float8
    F64(Float64Builder),
    /// numeric(p, s)
    Decimal(Decimal128Builder, u8, i8),
    /// text-valued kinds sent in a binary form of their own (numeric as text, uuid, inet), with
    /// the function that turns their bytes into text
    Text(StringBuilder, fn(&[u8]) -> Result<String>),
    /// kinds sent as UTF-8 text (text, varchar, char, name, json, enums, ...; jsonb after its
    /// version byte, the `usize` to skip). Collected as bytes and checked as UTF-8 once per
    /// batch, when finished: a check per value cost about 8% of a snapshot's client time.
    Utf8(BinaryBuilder, usize),
    /// bytea
    Bytes(BinaryBuilder),
    /// date
    Date(Date32Builder),
    /// time, as microseconds since midnight (Delta has no time type)
    Time(Int64Builder),
    /// timestamp / timestamptz
    Timestamp(TimestampMicrosecondBuilder, bool),
    /// interval, as PostgreSQL keeps it: months, days and microseconds (Delta has no interval
    /// type; the three parts are exact where one duration would not be, a month not being a
    /// fixed number of days)
    Interval(Box<IntervalParts>),
    /// one-dimensional arrays
    List {
        /// The element field.
        field: Arc<Field>,
        /// Element builder.
        child: Box<ColumnBuilder>,
        /// List offsets.
        offsets: Vec<i32>,
        /// Which lists are present.
        valid: Vec<bool>,
    },
}

impl ColumnBuilder {
    /// A builder for a kind.
    pub fn new(kind: &PgKind) -> Self {
        match kind {
            PgKind::Bool => Self::Bool(BooleanBuilder::new()),
            PgKind::Int2 => Self::I16(Int16Builder::new()),
            PgKind::Int4 => Self::I32(Int32Builder::new()),
            PgKind::Int8 => Self::I64(Int64Builder::new()),
            PgKind::Float4 => Self::F32(Float32Builder::new()),
            PgKind::Float8 => Self::F64(Float64Builder::new()),
            PgKind::Decimal(p, s) => Self::Decimal(Decimal128Builder::new(), *p, *s),
            PgKind::Bytes => Self::Bytes(BinaryBuilder::new()),
            PgKind::Date => Self::Date(Date32Builder::new()),
            PgKind::Time => Self::Time(Int64Builder::new()),
            PgKind::Timestamp => Self::Timestamp(TimestampMicrosecondBuilder::new(), false),
            PgKind::TimestampTz => Self::Timestamp(TimestampMicrosecondBuilder::new(), true),
            PgKind::Interval => Self::Interval(Box::default()),
            PgKind::Array(element) => Self::List {
                field: Arc::new(Field::new("item", element.arrow_type(), true)),
                child: Box::new(Self::new(element)),
                offsets: vec![0],
                valid: Vec::new(),
            },
            PgKind::NumericText => Self::Text(StringBuilder::new(), numeric_to_text),
            PgKind::Uuid => Self::Text(StringBuilder::new(), uuid_text),
            PgKind::Inet => Self::Text(StringBuilder::new(), inet_text),
            PgKind::Jsonb => Self::Utf8(BinaryBuilder::new(), 1),
            _ => Self::Utf8(BinaryBuilder::new(), 0),
        }
    }

    /// Appends one value (`None` is SQL NULL).
    pub fn append(&mut self, raw: Option<&[u8]>) -> Result<()> {
        let Some(b) = raw else {
            self.append_null();
            return Ok(());
        };
        match self {
            Self::Bool(x) => x.append_value(b.first().is_some_and(|v| *v != 0)),
            Self::I16(x) => x.append_value(i16::from_be_bytes(fixed(b)?)),
            Self::I32(x) => x.append_value(i32::from_be_bytes(fixed(b)?)),
            Self::I64(x) => x.append_value(i64::from_be_bytes(fixed(b)?)),
            Self::F32(x) => x.append_value(f32::from_be_bytes(fixed(b)?)),
            Self::F64(x) => x.append_value(f64::from_be_bytes(fixed(b)?)),
            Self::Decimal(x, _, s) => x.append_value(numeric_to_i128(b, *s)?),
            Self::Text(x, text) => x.append_value(text(b)?),
            Self::Utf8(x, skip) => x.append_value(b.get(*skip..).unwrap_or_default()),
            Self::Bytes(x) => x.append_value(b),
            Self::Date(x) => x.append_value(match i32::from_be_bytes(fixed(b)?) {
                i32::MAX => DATE_INFINITY.0,
                i32::MIN => DATE_INFINITY.1,
                d => d.saturating_add(PG_EPOCH_DAYS),
            }),
            Self::Time(x) => x.append_value(i64::from_be_bytes(fixed(b)?)),
            Self::Timestamp(x, _) => x.append_value(match i64::from_be_bytes(fixed(b)?) {
                i64::MAX => TIMESTAMP_INFINITY.0,
                i64::MIN => TIMESTAMP_INFINITY.1,
                t => t.saturating_add(PG_EPOCH_MICROS),
            }),
            Self::Interval(parts) => parts.append(fixed(b)?)?,
            Self::List {
                child,
                offsets,
                valid,
                ..
            } => {
                let count = append_array(child, b)?;
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last + count);
                valid.push(true);
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Self::Bool(x) => x.append_null(),
            Self::I16(x) => x.append_null(),
            Self::I32(x) => x.append_null(),
            Self::I64(x) => x.append_null(),
            Self::F32(x) => x.append_null(),
            Self::F64(x) => x.append_null(),
            Self::Decimal(x, _, _) => x.append_null(),
            Self::Text(x, _) => x.append_null(),
            Self::Utf8(x, _) => x.append_null(),
            Self::Bytes(x) => x.append_null(),
            Self::Date(x) => x.append_null(),
            Self::Time(x) => x.append_null(),
            Self::Timestamp(x, _) => x.append_null(),
            Self::Interval(parts) => parts.append_null(),
            Self::List { offsets, valid, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                valid.push(false);
            }
        }
    }

    /// The column so far as an Arrow array; the builder starts over.
    pub fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            Self::Bool(x) => Arc::new(x.finish()),
            Self::I16(x) => Arc::new(x.finish()),
            Self::I32(x) => Arc::new(x.finish()),
            Self::I64(x) => Arc::new(x.finish()),
            Self::F32(x) => Arc::new(x.finish()),
            Self::F64(x) => Arc::new(x.finish()),
            Self::Decimal(x, p, s) => Arc::new(x.finish().with_precision_and_scale(*p, *s)?),
            Self::Text(x, _) => Arc::new(x.finish()),
            Self::Utf8(x, _) => Arc::new(
                StringArray::try_from_binary(x.finish())
                    .map_err(|e| bad(&format!("text is not UTF-8 ({e})")))?,
            ),
            Self::Bytes(x) => Arc::new(x.finish()),
            Self::Date(x) => Arc::new(x.finish()),
            Self::Time(x) => Arc::new(x.finish()),
            Self::Timestamp(x, tz) => {
                let array = x.finish();
                if *tz {
                    Arc::new(array.with_timezone("UTC"))
                } else {
                    Arc::new(array)
                }
            }
            Self::Interval(parts) => Arc::new(parts.finish()?),
            Self::List {
                field,
                child,
                offsets,
                valid,
            } => {
                let values = child.finish()?;
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(ListArray::try_new(
                    field.clone(),
                    offsets,
                    values,
                    Some(nulls),
                )?)
            }
        })
    }
}

fn bad(what: &str) -> Error {
    Error::Invalid(format!("malformed PostgreSQL binary value: {what}"))
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N]> {
    b.try_into()
        .map_err(|_| bad(&format!("expected {N} bytes, got {}", b.len())))
}

fn be_i16(b: &[u8], at: usize) -> Result<i16> {
    Ok(i16::from_be_bytes(fixed(
        b.get(at..at + 2).ok_or_else(|| bad("short numeric"))?,
    )?))
}

/// Appends the elements of a one-dimensional array; returns how many.
fn append_array(child: &mut ColumnBuilder, b: &[u8]) -> Result<i32> {
    let int = |at: usize| -> Result<i32> {
        Ok(i32::from_be_bytes(fixed(
            b.get(at..at + 4).ok_or_else(|| bad("short array"))?,
        )?))
    };
    let ndim = int(0)?;
    if ndim == 0 {
        return Ok(0);
    }
    if ndim != 1 {
        return Err(Error::Unsupported(format!(
            "arrays of {ndim} dimensions are not supported; unnest them or cast to text in the source query"
        )));
    }
    let count = int(12)?;
    let mut at = 20;
    for _ in 0..count {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            child.append(None)?;
        } else {
            let end = at + len as usize;
            child.append(Some(
                b.get(at..end).ok_or_else(|| bad("short array element"))?,
            ))?;
            at = end;
        }
    }
    Ok(count)
}

/// numeric header: (digit count, weight, sign, display scale).
fn numeric_header(b: &[u8]) -> Result<(usize, i16, u16, u16)> {
    Ok((
        be_i16(b, 0)?.max(0) as usize,
        be_i16(b, 2)?,
        be_i16(b, 4)? as u16,
        be_i16(b, 6)? as u16,
    ))
}

/// 10^0 ..= 10^38, every power of ten an i128 holds.
const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// numeric as an integer scaled by 10^scale (for Decimal128).
fn numeric_to_i128(b: &[u8], scale: i8) -> Result<i128> {
    let (n, weight, sign, _) = numeric_header(b)?;
    if sign & 0xC000 == 0xC000 {
        return Err(Error::Unsupported(
            "NaN or infinite numeric cannot be stored in a decimal column; filter it or cast the column to text in the source query".into(),
        ));
    }
    // Each base-10000 digit group i is worth digit × 10^(4·(weight − i) + scale). Summing the
    // groups' own terms keeps every step within the result's magnitude (accumulating whole
    // groups first overflowed i128 for 38-digit values whose last group pads the scale).
    let mut scaled: i128 = 0;
    for i in 0..n {
        let digit = i128::from(be_i16(b, 8 + 2 * i)?);
        let exponent = 4 * (i32::from(weight) - i as i32) + i32::from(scale);
        let overflow = || bad("numeric does not fit its declared precision");
        let term = if digit == 0 {
            0
        } else if exponent >= 0 {
            POW10
                .get(exponent as usize)
                .and_then(|m| digit.checked_mul(*m))
                .ok_or_else(overflow)?
        } else {
            // Below the scale (in a numeric(p,s) column only the last group's padding zeros):
            // cut off, as a cast to fewer decimals does; a scale no i128 holds is an error.
            let divisor = POW10
                .get(exponent.unsigned_abs() as usize)
                .ok_or_else(overflow)?;
            // A group is below 10000: 64-bit division (i128's is a library call, 1-2% of a
            // snapshot's CPU in `perf`).
            match (i64::try_from(digit), i64::try_from(*divisor)) {
                (Ok(d), Ok(v)) => i128::from(d / v),
                _ => 0,
            }
        };
        scaled = scaled.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(if sign == 0x4000 { -scaled } else { scaled })
}

/// numeric as its exact decimal text, as PostgreSQL prints it.
fn numeric_to_text(b: &[u8]) -> Result<String> {
    let (n, weight, sign, dscale) = numeric_header(b)?;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digit = |i: i32| -> Result<i16> {
        if i >= 0 && (i as usize) < n {
            be_i16(b, 8 + 2 * i as usize)
        } else {
            Ok(0)
        }
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for w in 0..=i32::from(weight) {
            let d = digit(w)?;
            if w == 0 {
                text.push_str(&d.to_string());
            } else {
                text.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        text.push('.');
        let mut fraction = String::new();
        let mut i = i32::from(weight) + 1;
        while fraction.len() < dscale as usize {
            fraction.push_str(&format!("{:04}", digit(i)?));
            i += 1;
        }
        fraction.truncate(dscale as usize);
        text.push_str(&fraction);
    }
    Ok(text)
}

fn uuid_text(b: &[u8]) -> Result<String> {
    let bytes: [u8; 16] = fixed(b)?;
    let hex: String = bytes.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn inet_text(b: &[u8]) -> Result<String> {
    let (family, bits, is_cidr) = (
        *b.first().ok_or_else(|| bad("short inet"))?,
        *b.get(1).ok_or_else(|| bad("short inet"))?,
        b.get(2).is_some_and(|c| *c != 0),
    );
    let addr = b.get(4..).unwrap_or_default();
    let (text, full) = if family == 2 {
        let a: [u8; 4] = fixed(addr)?;
        (std::net::Ipv4Addr::from(a).to_string(), 32)
    } else {
        let a: [u8; 16] = fixed(addr)?;
        (std::net::Ipv6Addr::from(a).to_string(), 128)
    };
    Ok(if is_cidr || bits != full {
        format!("{text}/{bits}")
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [digits.len() as i16, weight, sign as i16, dscale as i16] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn text_is_checked_as_utf8_when_the_batch_is_finished() {
        let mut text = ColumnBuilder::new(&PgKind::Text);
        for value in [Some(&b"beijing"[..]), None, Some("上海".as_bytes())] {
            text.append(value).unwrap();
        }
        let array = text.finish().unwrap();
        let array = array.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            array.iter().collect::<Vec<_>>(),
            [Some("beijing"), None, Some("上海")]
        );
        let mut jsonb = ColumnBuilder::new(&PgKind::Jsonb);
        jsonb.append(Some(b"\x01{}")).unwrap();
        let array = jsonb.finish().unwrap();
        assert_eq!(
            array
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            "{}"
        );
        // Half of a three-byte character is refused, not passed on.
        let mut text = ColumnBuilder::new(&PgKind::Text);
        text.append(Some(&"上".as_bytes()[..2])).unwrap();
        assert!(text.finish().unwrap_err().to_string().contains("not UTF-8"));
    }

    #[test]
    fn numeric_values() {
        // 12345.678 = [1, 2345, 6780] with weight 1
        let v = numeric(1, 0, 3, &[1, 2345, 6780]);
        assert_eq!(numeric_to_text(&v).unwrap(), "12345.678");
        assert_eq!(numeric_to_i128(&v, 3).unwrap(), 12_345_678);
        // -0.05 = [500] with weight -1
        let v = numeric(-1, 0x4000, 2, &[500]);
        assert_eq!(numeric_to_text(&v).unwrap(), "-0.05");
        assert_eq!(numeric_to_i128(&v, 2).unwrap(), -5);
        // 20000 = [2] with weight 1, no fraction
        let v = numeric(1, 0, 0, &[2]);
        assert_eq!(numeric_to_text(&v).unwrap(), "20000");
        assert_eq!(numeric_to_i128(&v, 2).unwrap(), 2_000_000);
        assert_eq!(numeric_to_text(&numeric(0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(numeric_to_i128(&numeric(0, 0xC000, 0, &[]), 2).is_err());
        // Past 64 bits the division is i128's; a scale no i128 can hold is an error, no panic.
        let big = numeric(4, 0, 4, &[1234, 5678, 9012, 3456, 7890, 1234]);
        assert_eq!(
            numeric_to_i128(&big, 0).unwrap(),
            12_345_678_901_234_567_890
        );
        assert!(numeric_to_i128(&numeric(-30, 0, 0, &[1]), 2).is_err());
        assert!(numeric_to_i128(&numeric(30, 0, 0, &[1]), 2).is_err());
    }

    #[test]
    fn uuid_and_inet_text() {
        let u: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            uuid_text(&u).unwrap(),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
        assert_eq!(inet_text(&[2, 32, 0, 4, 10, 0, 0, 1]).unwrap(), "10.0.0.1");
        assert_eq!(
            inet_text(&[2, 24, 1, 4, 10, 0, 0, 0]).unwrap(),
            "10.0.0.0/24"
        );
    }
}
