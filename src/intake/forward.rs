//! Fluentd's forward protocol (v1) on `gamelake serve --forward ADDR`: what Fluentd's
//! `out_forward` and Fluent Bit's `forward` output speak, over TCP in msgpack.
//!
//! Every mode is taken: Message `[tag, time, record, option?]`, Forward
//! `[tag, [[time, record], ...], option?]`, PackedForward `[tag, bin, option?]` (concatenated
//! `[time, record]` entries) and CompressedPackedForward (the same, gzip, with
//! `option.compressed = "gzip"`). When the sender asks for an acknowledgement
//! (`option.chunk`), `{"ack": chunk}` is sent only after the records are durable in the
//! write-ahead log; a chunk resent because its ack was lost is acknowledged again without being
//! stored twice (its id is the idempotency key). With `[[intake.tokens]]` configured, a connection must first pass the
//! protocol's shared-key handshake (HELO/PING/PONG), the shared key being one of the tokens.
//!
//! The tag picks the table (`tags` of `[[intake.tables]]`). The entry's time is written into
//! the table's `time_field` when the record does not carry it. Hand-written on rmpv because no
//! maintained Rust crate implements the server side of this protocol.
//!
//! While more than `max_pending_mb` wait for the lake, connections are not read (TCP pushes
//! back on the sender). Each connection is read by a thread of its own with rmpv's blocking decoder, which reads
//! exactly one message at a time; appends hop onto the async runtime.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use rmpv::Value;
use sha2::{Digest, Sha512};

use super::Intake;
use super::config::{IntakeTable, IntakeToken};
use super::metrics::{Metrics, StatusLabel};
use super::segment::Entry;
use super::wal::Stored;
use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::records::TimeFormat;

/// Accepts connections until `stopped` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Arc<Intake>,
    stopped: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("forward: accept failed: {e}");
                        continue;
                    }
                };
                let intake = intake.clone();
                let runtime = tokio::runtime::Handle::current();
                let stream = stream.into_std().and_then(|s| {
                    s.set_nonblocking(false)?;
                    Ok(s)
                });
                match stream {
                    Ok(stream) => {
                        let spawned = std::thread::Builder::new()
                            .name(format!("forward-{peer}"))
                            .spawn(move || {
                                if let Err(e) = connection(stream, &intake, &runtime) {
                                    tracing::warn!("forward connection from {peer}: {e}");
                                }
                            });
                        if let Err(e) = spawned {
                            tracing::warn!("forward: cannot start a thread for {peer}: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("forward: {peer}: {e}"),
                }
            }
            _ = &mut stopped => return Ok(()),
        }
    }
}

/// Why a connection ended early.
type Failure = String;

fn connection(
    stream: TcpStream,
    intake: &Intake,
    runtime: &tokio::runtime::Handle,
) -> std::result::Result<(), Failure> {
    let peer: SocketAddr = stream.peer_addr().map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let sender = if intake.requires_tokens() {
        Some(handshake(&mut reader, &mut writer, intake)?)
    } else {
        None
    };
    let limit = intake.settings.max_body_bytes as u64;
    loop {
        // Backpressure: while the lake is behind, stop reading; TCP slows the sender down.
        while intake.wal.pending_bytes() > intake.settings.max_pending_bytes {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let mut limited = (&mut reader).take(limit);
        let message = match rmpv::decode::read_value(&mut limited) {
            Ok(v) => v,
            Err(e) if is_clean_eof(&e) => return Ok(()),
            Err(e) => {
                count(&intake.metrics, "bad_message");
                return Err(if limited.limit() == 0 {
                    format!(
                        "a message is larger than [intake] max_body_mb ({limit} bytes); closing"
                    )
                } else {
                    format!("not a forward-protocol message ({e}); closing")
                });
            }
        };
        let message =
            Message::parse(message).inspect_err(|_| count(&intake.metrics, "bad_message"))?;
        let Some((name, table)) = intake.table_for_tag(&message.tag) else {
            count(&intake.metrics, "unknown_tag");
            tracing::warn!(
                "forward from {peer}: no [[intake.tables]] has tag '{}' in its tags; the {} records are not acknowledged",
                message.tag,
                message.entries.len()
            );
            continue;
        };
        if let Some(token) = sender
            && !token.allows(&TableRef::parse(name).map_err(|e| e.to_string())?)
        {
            count(&intake.metrics, "forbidden");
            tracing::warn!(
                "forward from {peer}: token '{}' may not write {name}",
                token.name
            );
            continue;
        }
        let received_at = chrono::Utc::now().timestamp_micros();
        let records: Vec<Vec<u8>> = message
            .entries
            .into_iter()
            .map(|(time, record)| json_record(record, time, table))
            .collect();
        let n = records.len();
        let entry = Entry {
            table: name.to_string(),
            received_at,
            records,
            // Fluentd resends an unacknowledged chunk with the same id.
            key: message
                .chunk
                .as_ref()
                .map(|c| format!("forward:{name}:{c}")),
        };
        let stored = runtime
            .block_on(intake.wal.append(&entry))
            .map_err(|e| format!("could not store records durably ({e}); not acknowledged"))?;
        let counter = match stored {
            Stored::New => &intake.metrics.received,
            Stored::Duplicate => &intake.metrics.duplicates,
        };
        Metrics::add(counter, name, n);
        count(&intake.metrics, "ok");
        if let Some(chunk) = message.chunk {
            let ack = Value::Map(vec![(Value::from("ack"), Value::from(chunk))]);
            send(&mut writer, &ack)?;
        }
    }
}

fn count(metrics: &Metrics, outcome: &str) {
    metrics
        .requests
        .get_or_create(&StatusLabel {
            status: format!("forward_{outcome}"),
        })
        .inc();
}

fn is_clean_eof(error: &rmpv::decode::Error) -> bool {
    matches!(error, rmpv::decode::Error::InvalidMarkerRead(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
}

fn send(writer: &mut TcpStream, value: &Value) -> std::result::Result<(), Failure> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).map_err(|e| e.to_string())?;
    writer.write_all(&bytes).map_err(|e| e.to_string())
}

/// The shared-key handshake: HELO with a nonce, the client's PING with
/// `sha512_hex(salt + hostname + nonce + shared_key)`, our PONG proving we know the key too.
fn handshake<'a>(
    reader: &mut impl Read,
    writer: &mut TcpStream,
    intake: &'a Intake,
) -> std::result::Result<&'a IntakeToken, Failure> {
    let nonce = uuid::Uuid::new_v4().as_bytes().to_vec();
    let helo = Value::Array(vec![
        Value::from("HELO"),
        Value::Map(vec![
            (Value::from("nonce"), Value::Binary(nonce.clone())),
            (Value::from("auth"), Value::from("")),
            (Value::from("keepalive"), Value::Boolean(true)),
        ]),
    ]);
    send(writer, &helo)?;
    let ping = rmpv::decode::read_value(&mut reader.take(64 * 1024))
        .map_err(|e| format!("no PING after HELO ({e})"))?;
    let parts = ping.as_array().cloned().unwrap_or_default();
    let text = |i: usize| parts.get(i).map(bytes_of).unwrap_or_default();
    if text(0) != b"PING" || parts.len() < 4 {
        return Err("expected [\"PING\", hostname, salt, digest, ...] after HELO".to_string());
    }
    let (hostname, salt, digest) = (text(1), text(2), text(3));
    let digest_of = |host: &[u8], key: &str| {
        let mut h = Sha512::new();
        h.update(&salt);
        h.update(host);
        h.update(&nonce);
        h.update(key.as_bytes());
        hex(&h.finalize())
    };
    let server = b"gamelake";
    let found = intake
        .tokens
        .iter()
        .find(|t| digest_of(&hostname, &t.token).as_bytes() == digest.as_slice());
    let pong = |ok: bool, reason: &str, proof: String| {
        Value::Array(vec![
            Value::from("PONG"),
            Value::Boolean(ok),
            Value::from(reason),
            Value::from("gamelake"),
            Value::from(proof),
        ])
    };
    match found {
        Some(token) => {
            send(writer, &pong(true, "", digest_of(server, &token.token)))?;
            Ok(token)
        }
        None => {
            let _ = send(writer, &pong(false, "shared_key mismatch", String::new()));
            Err(format!(
                "{}: shared key is none of [[intake.tokens]]",
                String::from_utf8_lossy(&hostname)
            ))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A string or binary's bytes (old msgpack senders write strings as raw bytes).
fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Binary(b) => b.clone(),
        _ => Vec::new(),
    }
}

/// One decoded message: its tag, entries (event time in µs if given, record), and the chunk id
/// to acknowledge.
struct Message {
    tag: String,
    entries: Vec<(Option<i64>, Value)>,
    chunk: Option<String>,
}

impl Message {
    fn parse(value: Value) -> std::result::Result<Self, Failure> {
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
                    let mut plain = Vec::new();
                    flate2::read::MultiGzDecoder::new(packed.as_slice())
                        .read_to_end(&mut plain)
                        .map_err(|e| format!("CompressedPackedForward is not gzip: {e}"))?;
                    packed = plain;
                }
                let mut cursor = std::io::Cursor::new(packed.as_slice());
                let mut entries = Vec::new();
                while (cursor.position() as usize) < packed.len() {
                    let item = rmpv::decode::read_value(&mut cursor)
                        .map_err(|e| format!("PackedForward entries are not msgpack: {e}"))?;
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

/// Seconds (integer or float) or Fluentd's EventTime (ext type 0: u32 seconds, u32 nanos).
fn event_time(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => i.as_i64().map(|s| s * 1_000_000),
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
fn json_record(record: Value, time: Option<i64>, table: &IntakeTable) -> Vec<u8> {
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
        let message =
            Message::parse(Value::Array(vec![Value::from("x"), t.clone(), record()])).unwrap();
        assert_eq!(message.entries, vec![(Some(10_000_001), record())]);
        let pair = || Value::Array(vec![Value::from(5), record()]);
        let forward = Value::Array(vec![
            Value::from("x"),
            Value::Array(vec![pair(), pair()]),
            Value::Map(vec![(Value::from("chunk"), Value::from("c1"))]),
        ]);
        let message = Message::parse(forward).unwrap();
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
        assert_eq!(Message::parse(compressed).unwrap().entries.len(), 3);
        assert!(Message::parse(Value::from(3)).is_err());
    }
}
