//! CSV log files as records for the intake's record path: each row becomes a JSON object keyed
//! by the header row, so CSV and JSON files share one way to rows, rejections and schema
//! evolution.
//!
//! CSV has no types: a field is sent as a JSON number or boolean when its column is declared
//! `bigint`, `double` or `boolean` (`columns` of the table) and the text is one; otherwise as a
//! string (so a declared number that is not one is rejected with the reason). An empty field
//! is missing (null). Read with the `csv` crate (quoting, escapes, CRLF).

use std::collections::BTreeMap;

use super::columns::Kind;

/// A CSV file's rows as JSON records, and the rows that cannot be records (line, reason, text).
pub fn csv_records(
    text: &[u8],
    columns: &BTreeMap<String, String>,
) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text);
    let mut records = Vec::new();
    let mut bad = Vec::new();
    let header: Vec<(String, Option<Kind>)> = match reader.headers() {
        Ok(h) => h
            .iter()
            .map(|name| {
                let kind = columns.get(name).and_then(|t| Kind::parse(t));
                (name.to_string(), kind)
            })
            .collect(),
        Err(e) => {
            bad.push((format!("the header row cannot be read: {e}"), String::new()));
            return (records, bad);
        }
    };
    for row in reader.records() {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                let line = line_at(text, e.position());
                bad.push((format!("line {line}: {e}"), String::new()));
                continue;
            }
        };
        let line = line_at(text, row.position());
        if row.len() != header.len() {
            bad.push((
                format!(
                    "line {line} has {} fields but the header has {}",
                    row.len(),
                    header.len()
                ),
                row.iter().collect::<Vec<_>>().join(","),
            ));
            continue;
        }
        match json_object(&header, &row) {
            Ok(record) => records.push(record),
            Err(e) => bad.push((format!("line {line}: {e}"), String::new())),
        }
    }
    (records, bad)
}

/// The 1-based line where a record starts. The csv crate puts a record's start after the `\r`
/// of a CRLF, on the `\n` (its line number is one short there), so line ends are skipped first.
fn line_at(text: &[u8], position: Option<&csv::Position>) -> usize {
    let byte = position.map_or(0, |p| p.byte() as usize).min(text.len());
    let ends = text[byte..]
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    text[..byte + ends].iter().filter(|&&b| b == b'\n').count() + 1
}

/// A row as a JSON object, written field by field so the columns keep the header's order.
fn json_object(
    header: &[(String, Option<Kind>)],
    row: &csv::StringRecord,
) -> serde_json::Result<Vec<u8>> {
    let mut object = b"{".to_vec();
    for ((name, kind), value) in header.iter().zip(row.iter()) {
        if value.is_empty() {
            continue;
        }
        if object.len() > 1 {
            object.push(b',');
        }
        serde_json::to_writer(&mut object, name)?;
        object.push(b':');
        serde_json::to_writer(&mut object, &typed(value, *kind))?;
    }
    object.push(b'}');
    Ok(object)
}

/// A CSV field as the JSON value its declared kind expects, when it is one.
fn typed(value: &str, kind: Option<Kind>) -> serde_json::Value {
    use serde_json::Value;
    let trimmed = value.trim();
    let parsed = match kind {
        Some(Kind::Int) => trimmed.parse::<i64>().ok().map(Value::from),
        Some(Kind::Float) => trimmed
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number)),
        Some(Kind::Bool) => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => Some(Value::Bool(true)),
            "false" | "f" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_typed_records_and_ragged_rows_are_refused() {
        let columns = BTreeMap::from([
            ("player_id".to_string(), "bigint".to_string()),
            ("vip".to_string(), "boolean".to_string()),
        ]);
        let text = "time,player_id,event,vip\r\n\
            2026-11-25T08:00:00+08:00,7,\"login, first\",true\r\n\
            2026-11-25T08:00:01+08:00,x8,buy,\r\n\
            2026-11-25T08:00:02+08:00,9\r\n\
            ,010,\"say \"\"hi\"\"\",F\r\n";
        let (records, bad) = csv_records(text.as_bytes(), &columns);
        let records: Vec<String> = records
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        assert_eq!(
            records,
            [
                r#"{"time":"2026-11-25T08:00:00+08:00","player_id":7,"event":"login, first","vip":true}"#,
                r#"{"time":"2026-11-25T08:00:01+08:00","player_id":"x8","event":"buy"}"#,
                r#"{"player_id":10,"event":"say \"hi\"","vip":false}"#,
            ]
        );
        assert_eq!(
            bad,
            [(
                "line 4 has 2 fields but the header has 4".to_string(),
                "2026-11-25T08:00:02+08:00,9".to_string()
            )]
        );
    }
}
