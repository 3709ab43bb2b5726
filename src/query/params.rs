//! Query parameters: `--param name=value` binds `$name` in SQL as a typed literal (never by
//! pasting text into the statement, so a value cannot change the query's shape).

use std::collections::HashMap;

use chrono::NaiveDate;
use datafusion::common::ScalarValue;

use crate::error::{Error, Result};

/// Named parameter values for `$name` placeholders.
pub type Params = HashMap<String, ScalarValue>;

/// Parses `name=value`. The value's type is what it looks like: a whole number (BIGINT), a
/// decimal number (DOUBLE), a date `YYYY-MM-DD` (DATE), `true`/`false`, or else text.
pub fn parse_param(text: &str) -> Result<(String, ScalarValue)> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(Error::Invalid(format!(
            "--param '{text}': expected name=value, e.g. --param player_id=42"
        )));
    };
    let name = name.trim().trim_start_matches('$');
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Invalid(format!(
            "--param '{text}': the name must be letters, digits and _"
        )));
    }
    let scalar = if let Ok(i) = value.parse::<i64>() {
        ScalarValue::Int64(Some(i))
    } else if let Ok(f) = value.parse::<f64>() {
        ScalarValue::Float64(Some(f))
    } else if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        ScalarValue::Date32(Some((d - epoch).num_days() as i32))
    } else if let Ok(b) = value.parse::<bool>() {
        ScalarValue::Boolean(Some(b))
    } else {
        ScalarValue::Utf8(Some(value.to_string()))
    };
    Ok((name.to_string(), scalar))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_get_the_type_they_look_like() {
        assert_eq!(
            parse_param("id=42").unwrap(),
            ("id".into(), ScalarValue::Int64(Some(42)))
        );
        assert_eq!(
            parse_param("x=1.5").unwrap().1,
            ScalarValue::Float64(Some(1.5))
        );
        assert_eq!(
            parse_param("d=1970-01-02").unwrap().1,
            ScalarValue::Date32(Some(1))
        );
        assert_eq!(
            parse_param("r=beijing'; DROP TABLE x").unwrap().1,
            ScalarValue::Utf8(Some("beijing'; DROP TABLE x".into()))
        );
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("bad name=1").is_err());
    }
}
