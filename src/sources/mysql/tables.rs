//! What MySQL says about a table: its primary key, its row estimate, and boundaries that cut
//! it into ranges of the key's order (for parallel snapshots and the migration's ranges).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

use super::{my_error, quote_identifier, quote_qualified};
use crate::error::{Error, Result};

/// `db.table` → (Some(db), table); `table` → (None, table), the connection's database.
fn split(from: &str) -> (Option<String>, String) {
    match from.split_once('.') {
        Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
        None => (None, from.to_string()),
    }
}

/// The table statistics' row estimate, 0 when unknown.
pub async fn estimated_rows(conn: &mut Conn, from: &str) -> u64 {
    let (schema, table) = split(from);
    let sql = "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?";
    conn.exec_first::<Option<u64>, _, _>(sql, (schema, table))
        .await
        .ok()
        .flatten()
        .flatten()
        .unwrap_or(0)
}

/// The primary key's columns in order; empty for a table without one. A table that does not
/// exist is an error saying so.
pub async fn primary_key(conn: &mut Conn, from: &str) -> Result<Vec<String>> {
    let (schema, table) = split(from);
    let exists: Option<String> = conn
        .exec_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
            (schema.clone(), table.clone()),
        )
        .await
        .map_err(|e| my_error(from, e))?;
    if exists.is_none() {
        return Err(Error::NotFound(format!(
            "MySQL table {from} does not exist (names are as the server spells them; `db.table` reads another database)"
        )));
    }
    conn.exec(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'
         ORDER BY ORDINAL_POSITION",
        (schema, table),
    )
    .await
    .map_err(|e| my_error(from, e))
}

/// `(a, b)` of quoted key columns, and `(?, ?)` to compare it with.
pub fn key_tuple(key: &[String]) -> (String, String) {
    let columns: Vec<String> = key.iter().map(|k| quote_identifier(k)).collect();
    (
        format!("({})", columns.join(", ")),
        format!("({})", vec!["?"; key.len()].join(", ")),
    )
}

/// Key values that cut `from` into ranges of about `every` rows, in the key's order: walked
/// from one boundary to the next (each step reads `every` index entries), so the whole walk
/// reads the index once.
pub async fn boundaries(
    conn: &mut Conn,
    from: &str,
    key: &[String],
    every: u64,
) -> Result<Vec<Vec<Value>>> {
    let (tuple, placeholders) = key_tuple(key);
    let order = key
        .iter()
        .map(|k| quote_identifier(k))
        .collect::<Vec<_>>()
        .join(", ");
    let source = quote_qualified(from);
    let offset = every.max(1);
    let mut bounds: Vec<Vec<Value>> = Vec::new();
    loop {
        let row: Option<Row> = match bounds.last() {
            None => conn
                .query_first(format!(
                    "SELECT {order} FROM {source} ORDER BY {order} LIMIT 1 OFFSET {offset}"
                ))
                .await
                .map_err(|e| my_error(from, e))?,
            Some(last) => conn
                .exec_first(
                    format!(
                        "SELECT {order} FROM {source} WHERE {tuple} > {placeholders} ORDER BY {order} LIMIT 1 OFFSET {}",
                        offset - 1
                    ),
                    last.clone(),
                )
                .await
                .map_err(|e| my_error(from, e))?,
        };
        match row {
            Some(row) => bounds.push(row.unwrap()),
            None => return Ok(bounds),
        }
    }
}

/// The WHERE clause (and its parameters) of the range `[lower, upper)` of `key`, either end
/// open when None; "" for a range open at both ends.
pub fn range_filter(
    key: &[String],
    lower: Option<&[Value]>,
    upper: Option<&[Value]>,
) -> (String, Vec<Value>) {
    let (tuple, placeholders) = key_tuple(key);
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(lower) = lower {
        conditions.push(format!("{tuple} >= {placeholders}"));
        params.extend(lower.iter().cloned());
    }
    if let Some(upper) = upper {
        conditions.push(format!("{tuple} < {placeholders}"));
        params.extend(upper.iter().cloned());
    }
    if conditions.is_empty() {
        (String::new(), params)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), params)
    }
}

/// A key value as text that [`decode_value`] reads back exactly (kept in the migration's
/// progress table): `i:-5`, `u:7`, `b:<hex>`, `f:<bits>`, `d:y-m-d-h-m-s-us`,
/// `t:neg-days-h-m-s-us`, `n:`.
pub fn encode_value(value: &Value) -> String {
    match value {
        Value::NULL => "n:".into(),
        Value::Int(i) => format!("i:{i}"),
        Value::UInt(u) => format!("u:{u}"),
        Value::Bytes(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("b:{hex}")
        }
        Value::Float(f) => format!("f:{}", f64::from(*f).to_bits()),
        Value::Double(f) => format!("f:{}", f.to_bits()),
        Value::Date(y, mo, d, h, mi, s, us) => format!("d:{y}-{mo}-{d}-{h}-{mi}-{s}-{us}"),
        Value::Time(neg, days, h, m, s, us) => format!("t:{}-{days}-{h}-{m}-{s}-{us}", *neg as u8),
    }
}

/// The value [`encode_value`] wrote; None for text it did not write.
pub fn decode_value(text: &str) -> Option<Value> {
    let (tag, rest) = text.split_once(':')?;
    let numbers = |rest: &str| -> Option<Vec<u64>> {
        rest.split('-').map(|n| n.parse::<u64>().ok()).collect()
    };
    Some(match tag {
        "n" => Value::NULL,
        "i" => Value::Int(rest.parse().ok()?),
        "u" => Value::UInt(rest.parse().ok()?),
        "f" => Value::Double(f64::from_bits(rest.parse().ok()?)),
        "b" => {
            let bytes = (0..rest.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(rest.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Value::Bytes(bytes)
        }
        "d" => match numbers(rest)?.as_slice() {
            [y, mo, d, h, mi, s, us] => Value::Date(
                u16::try_from(*y).ok()?,
                u8::try_from(*mo).ok()?,
                u8::try_from(*d).ok()?,
                u8::try_from(*h).ok()?,
                u8::try_from(*mi).ok()?,
                u8::try_from(*s).ok()?,
                u32::try_from(*us).ok()?,
            ),
            _ => return None,
        },
        "t" => match numbers(rest)?.as_slice() {
            [neg, days, h, m, s, us] => Value::Time(
                *neg == 1,
                u32::try_from(*days).ok()?,
                u8::try_from(*h).ok()?,
                u8::try_from(*m).ok()?,
                u8::try_from(*s).ok()?,
                u32::try_from(*us).ok()?,
            ),
            _ => return None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_survive_their_text() {
        for value in [
            Value::NULL,
            Value::Int(-9_223_372_036_854_775_808),
            Value::UInt(18_446_744_073_709_551_615),
            Value::Bytes(b"bj\x00\xff".to_vec()),
            Value::Double(-0.1),
            Value::Date(2024, 2, 29, 23, 59, 58, 123_456),
            Value::Time(true, 34, 22, 59, 59, 5),
        ] {
            assert_eq!(decode_value(&encode_value(&value)), Some(value.clone()));
        }
        assert_eq!(decode_value("x:1"), None);
        assert_eq!(decode_value("b:0"), None);
    }
}
