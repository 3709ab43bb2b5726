//! The forward protocol's messages: Message `[tag, time, record, option?]`, Forward
//! `[tag, [[time, record], ...], option?]`, PackedForward `[tag, bin, option?]` and
//! CompressedPackedForward (gzip), read from msgpack values into records of JSON text; and
//! Fluentd's tag patterns. Every expansion is bounded: decompression stops at the body limit,
//! packed entries are decoded within the message's memory budget.

use chrono::{DateTime, SecondsFormat};
use rmpv::Value;

use super::config::IntakeTable;
use super::msgpack::{ReadError, read_value};
use crate::error::{Error, Result};
use crate::records::TimeFormat;
use crate::records::body::{BodyError, gunzip};

/// How deep a message's arrays and maps may nest (records are rarely more than a few levels).
pub const MAX_DEPTH: usize = 64;

/// The longest chunk id kept as an idempotency key (Fluentd's are 24 base64 characters).
pub const MAX_CHUNK_ID: usize = 128;

/// Why a message was refused.
pub type Failure = String;

/// One decoded message: its tag, entries (event time in µs if given, record), and the chunk id
/// to acknowledge.
pub struct Message {
    /// The tag (picks the table).
    pub tag: String,
    /// Event time in µs since 1970 if the sender gave one, and the record.
    pub entries: Vec<(Option<i64>, Value)>,
    /// The chunk id to acknowledge (and to store once).
    pub chunk: Option<String>,
}

impl Message {
    /// Reads a message's parts: a compressed one inflates to at most `limit` bytes, and packed
    /// entries are decoded within what is left of the message's memory `budget`.
    pub fn parse(
        value: Value,
        limit: usize,
        budget: &mut usize,
    ) -> std::result::Result<Self, Failure> {
        let Value::Array(mut parts) = value else {
            return Err("a forward message is an array [tag, ...]".to_string());
        };
        if parts.len() < 2 {
            return Err("a forward message has at least a tag and entries".to_string());
        }
        let tag = String::from_utf8_lossy(&bytes_of(&parts[0])).into_owned();
        let (entries, option) = match &parts[1] {
            // Message: [tag, time, record, option?]
            Value::Integer(_) | Value::F64(_) | Value::F32(_) | Value::Ext(..) => {
                if parts.len() < 3 {
                    return Err("Message mode needs [tag, time, record]".to_string());
                }
                let option = parts.get(3).cloned();
                let record = parts.swap_remove(2);
                (vec![(event_time(&parts[1]), record)], option)
            }
            // Forward: [tag, [[time, record], ...], option?]
            Value::Array(_) => {
                let option = parts.get(2).cloned();
                let Value::Array(items) = parts.swap_remove(1) else {
                    return Err("unreachable".to_string());
                };
                (
                    items.into_iter().map(entry).collect::<Result<_, _>>()?,
                    option,
                )
            }
            // PackedForward / CompressedPackedForward: [tag, bin, option?]
            Value::Binary(_) | Value::String(_) => {
                let option = parts.get(2).cloned();
                let mut packed = bytes_of(&parts[1]);
                let compressed = option
                    .as_ref()
                    .and_then(|o| option_value(o, "compressed"))
                    .is_some_and(|c| bytes_of(c) == b"gzip");
                if compressed {
                    packed = gunzip(&packed, limit).map_err(|e| match e {
                        BodyError::TooLarge(limit) => format!(
                            "CompressedPackedForward inflates beyond [intake] max_body_mb ({limit} bytes)"
                        ),
                        BodyError::Unreadable(e) => format!("CompressedPackedForward: {e}"),
                    })?;
                }
                let mut rest = packed.as_slice();
                let mut entries = Vec::new();
                while !rest.is_empty() {
                    let item = read_value(&mut rest, budget, MAX_DEPTH).map_err(|e| match e {
                        ReadError::TooLarge => format!("PackedForward entries: {e}"),
                        other => format!("PackedForward entries are not msgpack: {other}"),
                    })?;
                    entries.push(entry(item)?);
                }
                (entries, option)
            }
            other => {
                return Err(format!(
                    "unexpected second element {other} in a forward message"
                ));
            }
        };
        let chunk = option
            .as_ref()
            .and_then(|o| option_value(o, "chunk"))
            .map(|c| String::from_utf8_lossy(&bytes_of(c)).into_owned());
        if let Some(chunk) = &chunk
            && (chunk.len() > MAX_CHUNK_ID || chunk.chars().any(char::is_control))
        {
            return Err(format!(
                "chunk id of {} bytes: at most {MAX_CHUNK_ID} printable characters",
                chunk.len()
            ));
        }
        Ok(Self {
            tag,
            entries,
            chunk,
        })
    }
}

fn option_value<'a>(option: &'a Value, key: &str) -> Option<&'a Value> {
    option
        .as_map()?
        .iter()
        .find(|(k, _)| bytes_of(k) == key.as_bytes())
        .map(|(_, v)| v)
}

fn entry(item: Value) -> std::result::Result<(Option<i64>, Value), Failure> {
    match item {
        Value::Array(mut pair) if pair.len() == 2 => {
            let record = pair.pop().unwrap_or(Value::Nil);
            Ok((event_time(&pair[0]), record))
        }
        other => Err(format!("an entry is [time, record], not {other}")),
    }
}

/// Seconds (integer or float) or Fluentd's EventTime (ext type 0: u32 seconds, u32 nanos), as
/// microseconds; a time beyond what microseconds hold (a hostile sender's) is no time.
fn event_time(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => i.as_i64().and_then(|s| s.checked_mul(1_000_000)),
        Value::F64(f) => Some((f * 1e6) as i64),
        Value::F32(f) => Some((f64::from(*f) * 1e6) as i64),
        Value::Ext(0, data) if data.len() == 8 => {
            let secs = u32::from_be_bytes(data[..4].try_into().ok()?);
            let nanos = u32::from_be_bytes(data[4..].try_into().ok()?);
            Some(i64::from(secs) * 1_000_000 + i64::from(nanos / 1000))
        }
        _ => None,
    }
}

/// The record as JSON text, with the event time in the table's time field if it lacks one.
pub fn json_record(record: Value, time: Option<i64>, table: &IntakeTable) -> Vec<u8> {
    let mut json = to_json(record);
    if let (Some(field), Some(micros), serde_json::Value::Object(map)) =
        (&table.time_field, time, &mut json)
        && !map.contains_key(field)
    {
        let value = match table.time_format {
            TimeFormat::Rfc3339 => DateTime::from_timestamp_micros(micros)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into())
                .unwrap_or_default(),
            TimeFormat::EpochS => serde_json::json!(micros as f64 / 1e6),
            TimeFormat::EpochMs => serde_json::json!(micros / 1000),
            TimeFormat::EpochUs => serde_json::json!(micros),
        };
        map.insert(field.clone(), value);
    }
    serde_json::to_vec(&json).unwrap_or_default()
}

fn to_json(value: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(v), _) => J::from(v),
            (None, Some(v)) => J::from(v),
            _ => J::Null,
        },
        Value::F32(f) => serde_json::Number::from_f64(f64::from(f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => J::String(String::from_utf8_lossy(&b).into_owned()),
        Value::Array(items) => J::Array(items.into_iter().map(to_json).collect()),
        Value::Map(pairs) => J::Object(
            pairs
                .into_iter()
                .map(|(k, v)| {
                    let key = match &k {
                        Value::String(_) | Value::Binary(_) => {
                            String::from_utf8_lossy(&bytes_of(&k)).into_owned()
                        }
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(_, data) => J::String(hex(&data)),
    }
}

/// A string or binary's bytes (old msgpack senders write strings as raw bytes).
pub fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Binary(b) => b.clone(),
        _ => Vec::new(),
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a Fluentd tag matches a pattern: `*` is one part, `**` any number of parts.
pub fn tag_matches(pattern: &str, tag: &str) -> bool {
    fn go(pattern: &[&str], tag: &[&str]) -> bool {
        match (pattern.first(), tag.first()) {
            (None, None) => true,
            (Some(&"**"), _) => {
                go(&pattern[1..], tag) || (!tag.is_empty() && go(pattern, &tag[1..]))
            }
            (Some(p), Some(t)) => (*p == "*" || p == t) && go(&pattern[1..], &tag[1..]),
            _ => false,
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let tag: Vec<&str> = tag.split('.').collect();
    go(&pattern, &tag)
}

/// Checks that no tag pattern is empty.
pub fn check_tags(table: &IntakeTable) -> Result<()> {
    if let Some(bad) = table
        .tags
        .iter()
        .find(|t| t.is_empty() || t.split('.').any(str::is_empty))
    {
        return Err(Error::Invalid(format!(
            "[[intake.tables]] {}: tag pattern '{bad}' has an empty part; write e.g. \"game.events\", \"game.*\" or \"game.**\"",
            table.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn budget() -> usize {
        1 << 20
    }

    #[test]
    fn a_time_beyond_microseconds_is_no_time() {
        assert_eq!(
            event_time(&Value::from(1_795_608_000)),
            Some(1_795_608_000_000_000)
        );
        assert_eq!(event_time(&Value::from(i64::MAX)), None);
        assert_eq!(event_time(&Value::from(i64::MIN)), None);
    }

    #[test]
    fn tags_match_like_fluentd() {
        assert!(tag_matches("game.events", "game.events"));
        assert!(tag_matches("game.*", "game.events"));
        assert!(!tag_matches("game.*", "game.events.bj"));
        assert!(tag_matches("game.**", "game.events.bj"));
        assert!(tag_matches("game.**", "game"));
        assert!(!tag_matches("game.*", "shop.events"));
    }

    #[test]
    fn every_mode_parses() {
        let record = || Value::Map(vec![(Value::from("a"), Value::from(1))]);
        let t = Value::Ext(0, [0, 0, 0, 10, 0, 0, 0x03, 0xe8].to_vec());
        let message = Message::parse(
            Value::Array(vec![Value::from("x"), t.clone(), record()]),
            1 << 20,
            &mut budget(),
        )
        .unwrap();
        assert_eq!(message.entries, vec![(Some(10_000_001), record())]);
        let pair = || Value::Array(vec![Value::from(5), record()]);
        let forward = Value::Array(vec![
            Value::from("x"),
            Value::Array(vec![pair(), pair()]),
            Value::Map(vec![(Value::from("chunk"), Value::from("c1"))]),
        ]);
        let message = Message::parse(forward, 1 << 20, &mut budget()).unwrap();
        assert_eq!(
            (message.entries.len(), message.chunk.as_deref()),
            (2, Some("c1"))
        );
        let mut packed = Vec::new();
        for _ in 0..3 {
            rmpv::encode::write_value(&mut packed, &pair()).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&packed).unwrap();
        let compressed = Value::Array(vec![
            Value::from("x"),
            Value::Binary(gz.finish().unwrap()),
            Value::Map(vec![(Value::from("compressed"), Value::from("gzip"))]),
        ]);
        assert_eq!(
            Message::parse(compressed, 1 << 20, &mut budget())
                .unwrap()
                .entries
                .len(),
            3
        );
        assert!(Message::parse(Value::from(3), 1 << 20, &mut budget()).is_err());
    }

    #[test]
    fn chunk_ids_are_bounded_and_bombs_stop_at_the_limit() {
        let record = Value::Map(vec![(Value::from("a"), Value::from(1))]);
        let with_chunk = |chunk: String| {
            Value::Array(vec![
                Value::from("x"),
                Value::from(5),
                record.clone(),
                Value::Map(vec![(Value::from("chunk"), Value::from(chunk))]),
            ])
        };
        let err = Message::parse(with_chunk("é".repeat(40_000)), 1 << 20, &mut budget())
            .err()
            .unwrap();
        assert!(err.contains("chunk id"), "{err}");
        assert!(
            Message::parse(with_chunk("c".repeat(MAX_CHUNK_ID)), 1 << 20, &mut budget()).is_ok()
        );
        // 8 MiB of zeros from a few kilobytes: refused at the limit.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 8 << 20]).unwrap();
        let bomb = Value::Array(vec![
            Value::from("x"),
            Value::Binary(gz.finish().unwrap()),
            Value::Map(vec![(Value::from("compressed"), Value::from("gzip"))]),
        ]);
        let err = Message::parse(bomb, 1 << 20, &mut budget()).err().unwrap();
        assert!(err.contains("inflates beyond"), "{err}");
    }
}
