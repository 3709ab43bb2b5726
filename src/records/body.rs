//! A request body → its records: a JSON array of records (Fluent Bit `format json`, Fluentd
//! `json_array true`), or records one after another (NDJSON: Fluent Bit `json_lines` and
//! `json_stream`, Fluentd `out_http`'s default), plain or gzip.
//!
//! Records are kept as the sender wrote them; whether each one is a valid record of its table is
//! decided when it is committed (a bad one goes to the rejected table, so none is lost). Only a
//! body with no record at all in it is refused here.

use std::io::Read;

use serde_json::value::RawValue;

/// Why a body was refused as a whole.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Bigger than the limit (after decompression too): HTTP 413.
    TooLarge(usize),
    /// Not gzip although it says so, or no JSON record in it: HTTP 400.
    Unreadable(String),
}

/// Decompresses a gzip body, refusing to produce more than `limit` bytes (a gzip bomb).
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Unreadable(format!("the body is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge(limit));
    }
    Ok(out)
}

/// Splits a body into records.
pub fn records(body: &[u8]) -> Result<Vec<Vec<u8>>, BodyError> {
    let text = body.trim_ascii();
    if text.is_empty() {
        return Err(BodyError::Unreadable("the body is empty".to_string()));
    }
    if text.starts_with(b"[") {
        let array: Vec<&RawValue> = serde_json::from_slice(text).map_err(|e| {
            BodyError::Unreadable(format!(
                "the body starts with '[' but is not a JSON array: {e}"
            ))
        })?;
        return Ok(array.iter().map(|r| r.get().as_bytes().to_vec()).collect());
    }
    // Records one after another, with or without newlines between them.
    let stream: Result<Vec<&RawValue>, _> = serde_json::Deserializer::from_slice(text)
        .into_iter::<&RawValue>()
        .collect();
    if let Ok(values) = stream {
        return Ok(values.iter().map(|r| r.get().as_bytes().to_vec()).collect());
    }
    // Some lines are not JSON: keep every line (the bad ones will be rejected with the reason),
    // unless none is JSON, in which case the body is not what the endpoint takes.
    let lines = lines(text);
    if !lines
        .iter()
        .any(|l| serde_json::from_slice::<&RawValue>(l).is_ok())
    {
        let first = String::from_utf8_lossy(&lines[0][..lines[0].len().min(60)]).into_owned();
        return Err(BodyError::Unreadable(format!(
            "no JSON record in the body (send a JSON array of objects or one JSON object per line); it starts with {first:?}"
        )));
    }
    Ok(lines.into_iter().map(<[u8]>::to_vec).collect())
}

/// The non-empty lines of a text, trimmed.
pub fn lines(text: &[u8]) -> Vec<&[u8]> {
    text.split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &str) -> Vec<String> {
        records(body.as_bytes())
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect()
    }

    #[test]
    fn splits_arrays_lines_and_streams() {
        assert_eq!(texts(r#"[{"a":1}, {"a":2}]"#), [r#"{"a":1}"#, r#"{"a":2}"#]);
        assert_eq!(
            texts("{\"a\":1}\n{\"a\":2}\n"),
            [r#"{"a":1}"#, r#"{"a":2}"#]
        );
        assert_eq!(texts(r#"{"a":1}{"a":2}"#), [r#"{"a":1}"#, r#"{"a":2}"#]);
    }

    #[test]
    fn keeps_bad_lines_for_the_rejected_table() {
        assert_eq!(
            texts("{\"a\":1}\n{\"a\":\n{\"a\":3}"),
            [r#"{"a":1}"#, r#"{"a":"#, r#"{"a":3}"#]
        );
    }

    #[test]
    fn refuses_bodies_without_records() {
        assert!(matches!(
            records(b"hello world"),
            Err(BodyError::Unreadable(_))
        ));
        assert!(matches!(
            records(b"[{\"a\":1},"),
            Err(BodyError::Unreadable(_))
        ));
        assert!(matches!(records(b"  "), Err(BodyError::Unreadable(_))));
    }

    #[test]
    fn gzip_is_bounded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&vec![b' '; 1_000_000]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 10_000);
        assert_eq!(gunzip(&bomb, 100_000), Err(BodyError::TooLarge(100_000)));
        assert_eq!(gunzip(&bomb, 1_000_000).unwrap().len(), 1_000_000);
        assert!(matches!(
            gunzip(b"not gzip", 100),
            Err(BodyError::Unreadable(_))
        ));
    }
}
