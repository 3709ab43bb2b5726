//! The migration's row checksum: every row as one canonical text, CRC-32 of it, summed (not
//! XORed: a doubled row must show). The same text is computed by MariaDB in SQL over v1.0's
//! rows ([`mysql_row_text`]) and by gamelake over Arrow batches ([`Checksum::add_batch`]) —
//! those it is about to write and those it reads back from the lake and from PostgreSQL — so
//! one definition holds for all three, whatever type each side stores a value as.
//!
//! Canonical text of a value: NULL is the record separator (0x1e); booleans `1`/`0`; integers and decimals their
//! digits without trailing fraction zeros (`12.50` → `12.5`); floats MySQL's shortest form
//! (`0.1`, `1e16`, `1.2345678901234568e17`; a `float` as the double it widens to); strings as
//! they are; bytes upper-case hex; dates `YYYY-MM-DD`; date-times `YYYY-MM-DD HH:MM:SS.ffffff`
//! (timestamps in UTC); `time` its microseconds; a `set` its members joined by commas. Columns
//! are joined by the unit separator (0x1f).

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit};

use crate::error::{Error, Result};
use crate::sources::mysql::{MyColumn, MyKind, quote_identifier};

/// Rows and the sum of their CRC-32s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    /// Rows counted.
    pub rows: u64,
    /// Sum of each row's CRC-32 (wide enough for any table).
    pub sum: u128,
}

impl std::ops::Add for Checksum {
    type Output = Checksum;
    fn add(self, other: Checksum) -> Checksum {
        Checksum {
            rows: self.rows + other.rows,
            sum: self.sum + other.sum,
        }
    }
}

impl Checksum {
    /// Adds every row of `batch` (its columns in the order the checksum was defined on).
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut text = String::new();
        for row in 0..batch.num_rows() {
            text.clear();
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    text.push('\u{1f}');
                }
                canonical(column, row, &mut text)?;
            }
            self.rows += 1;
            self.sum += u128::from(crc32fast::hash(text.as_bytes()));
        }
        Ok(())
    }

    /// The checksum of `batches`.
    pub fn of(batches: &[RecordBatch]) -> Result<Checksum> {
        let mut sum = Checksum::default();
        for batch in batches {
            sum.add_batch(batch)?;
        }
        Ok(sum)
    }
}

/// Appends the canonical text of `array[row]`.
fn canonical(array: &ArrayRef, row: usize, out: &mut String) -> Result<()> {
    use std::fmt::Write;
    if array.is_null(row) {
        out.push('\u{1e}');
        return Ok(());
    }
    let unsupported = || {
        Error::Internal(format!(
            "the migration checksum has no canonical text for {}",
            array.data_type()
        ))
    };
    match array.data_type() {
        DataType::Boolean => out.push(if array.as_boolean().value(row) {
            '1'
        } else {
            '0'
        }),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let wide = arrow::compute::cast(&array.slice(row, 1), &DataType::Int64)?;
            let _ = write!(
                out,
                "{}",
                wide.as_primitive::<arrow::datatypes::Int64Type>().value(0)
            );
        }
        DataType::Decimal128(_, scale) => {
            let value = array
                .as_primitive::<arrow::datatypes::Decimal128Type>()
                .value(row);
            out.push_str(&decimal_text(value, *scale));
        }
        DataType::Float32 => out.push_str(&mysql_double(f64::from(
            array
                .as_primitive::<arrow::datatypes::Float32Type>()
                .value(row),
        ))),
        DataType::Float64 => out.push_str(&mysql_double(
            array
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(row),
        )),
        DataType::Utf8 => out.push_str(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => out.push_str(array.as_string::<i64>().value(row)),
        DataType::Utf8View => out.push_str(array.as_string_view().value(row)),
        DataType::Binary => hex(array.as_binary::<i32>().value(row), out),
        DataType::LargeBinary => hex(array.as_binary::<i64>().value(row), out),
        DataType::BinaryView => hex(array.as_binary_view().value(row), out),
        DataType::List(_) | DataType::LargeList(_) => {
            let items = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(row),
                _ => array.as_list::<i64>().value(row),
            };
            for i in 0..items.len() {
                if i > 0 {
                    out.push(',');
                }
                canonical(&items, i, out)?;
            }
        }
        DataType::Date32 => {
            let day = array
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(row);
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(day + 719_163)
                .ok_or_else(unsupported)?;
            let _ = write!(out, "{}", date.format("%Y-%m-%d"));
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let micros = array
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(row);
            let time = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(unsupported)?;
            let _ = write!(out, "{}", time.format("%Y-%m-%d %H:%M:%S%.6f"));
        }
        _ => return Err(unsupported()),
    }
    Ok(())
}

fn hex(bytes: &[u8], out: &mut String) {
    use std::fmt::Write;
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
}

/// A decimal's digits without trailing fraction zeros (`1250, 2` → `12.5`; `0, 2` → `0`).
fn decimal_text(value: i128, scale: i8) -> String {
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    if scale <= 0 {
        let zeros = "0".repeat(usize::from(scale.unsigned_abs()));
        return if value == 0 {
            "0".into()
        } else {
            format!("{sign}{digits}{zeros}")
        };
    }
    let scale = usize::from(scale.unsigned_abs());
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

/// A double as MySQL and MariaDB print it: the shortest digits that read back as the same
/// double, in fixed notation when the decimal point falls within -14..=15 places of them
/// (MySQL's `my_gcvt`, `MAX_DECPT_FOR_F_FORMAT`), else `1.5e17` / `1e-38`.
pub fn mysql_double(value: f64) -> String {
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: `d.ddde±x`.
    let scientific = format!("{:e}", value.abs());
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return scientific;
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let len = digits.len() as i32;
    // The decimal point's place relative to the digits: value = 0.DIGITS × 10^decpt.
    let decpt = exponent + 1;
    let sign = if value < 0.0 { "-" } else { "" };
    let fixed = decpt >= -14 && (decpt <= 15 || len > decpt);
    if !fixed {
        return format!("{sign}{mantissa}e{exponent}");
    }
    if decpt <= 0 {
        format!(
            "{sign}0.{}{digits}",
            "0".repeat(decpt.unsigned_abs() as usize)
        )
    } else if decpt >= len {
        format!("{sign}{digits}{}", "0".repeat((decpt - len) as usize))
    } else {
        let (whole, fraction) = digits.split_at(decpt as usize);
        format!("{sign}{whole}.{fraction}")
    }
}

/// MariaDB's SQL for one row's canonical text, over `columns` as the source query names them.
pub fn mysql_row_text(columns: &[MyColumn]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|c| format!("IFNULL({}, CHAR(30))", mysql_value_text(c)))
        .collect();
    format!("CONCAT_WS(CHAR(31), {})", parts.join(", "))
}

/// One column's canonical text in MariaDB's SQL (NULL for NULL).
fn mysql_value_text(column: &MyColumn) -> String {
    let c = quote_identifier(&column.name);
    // A zero date (or zero month/day) is NULL in what gamelake writes (with zero_dates =
    // "error" the read stops first).
    let unless_zero =
        |text: String| format!("IF(MONTH({c}) = 0 OR DAYOFMONTH({c}) = 0, NULL, {text})");
    let trimmed = |x: String| {
        format!(
            "IF(LOCATE('.', {x}) > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {x})), {x})"
        )
    };
    match &column.kind {
        MyKind::Bool => format!("CASE WHEN {c} <> 0 THEN '1' WHEN {c} = 0 THEN '0' END"),
        MyKind::Int8 | MyKind::Int16 | MyKind::Int32 | MyKind::Int64 => {
            format!("CAST({c} + 0 AS CHAR)")
        }
        MyKind::Decimal(_, _) => trimmed(format!("CAST({c} + 0 AS CHAR)")),
        MyKind::DecimalText { .. } | MyKind::Utf8 | MyKind::Set => {
            format!("CONVERT({c} USING utf8mb4)")
        }
        MyKind::Float32 => format!("CAST({c} + 0e0 AS CHAR)"),
        MyKind::Float64 => format!("CAST({c} AS CHAR)"),
        MyKind::Binary { geometry: false } => format!("HEX({c})"),
        MyKind::Binary { geometry: true } => format!("HEX(ST_AsBinary({c}))"),
        MyKind::Date => unless_zero(format!("DATE_FORMAT({c}, '%Y-%m-%d')")),
        MyKind::DateTime | MyKind::Timestamp => {
            unless_zero(format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')"))
        }
        MyKind::Time => format!("CAST(ROUND(TIME_TO_SEC({c}) * 1000000) AS SIGNED)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_as_mysql_prints_them() {
        // What MariaDB 10.11's CAST(d AS CHAR) printed for each.
        for (value, mysql) in [
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.1, "0.1"),
            (1e300, "1e300"),
            (1.2345678901234567e-7, "0.00000012345678901234566"),
            (123456789012345678.0, "1.2345678901234568e17"),
            (2.5e15, "2.5e15"),
            (1e16, "1e16"),
            (1e15, "1e15"),
            (100000.0, "100000"),
            (123456792.0, "123456792"),
            (f64::from(1.1f32), "1.100000023841858"),
            (f64::from(1.17549e-38f32), "1.1754900067970481e-38"),
            (f64::from(1e-5f32), "0.000009999999747378752"),
        ] {
            assert_eq!(mysql_double(value), mysql, "{value}");
        }
    }

    #[test]
    fn decimals_lose_trailing_zeros_only() {
        assert_eq!(decimal_text(1250, 2), "12.5");
        assert_eq!(decimal_text(-1234, 2), "-12.34");
        assert_eq!(decimal_text(5, 3), "0.005");
        assert_eq!(decimal_text(0, 2), "0");
        assert_eq!(decimal_text(1200, 0), "1200");
    }
}
