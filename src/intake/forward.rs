//! Fluentd's forward protocol (v1) on `gamelake serve --forward ADDR`: what Fluentd's
//! `out_forward` and Fluent Bit's `forward` output speak, over TCP in msgpack. The messages
//! themselves (every mode, compressed or not) are read in [`super::forward_message`].
//!
//! When the sender asks for an acknowledgement (`option.chunk`), `{"ack": chunk}` is sent only
//! after the records are durable in the write-ahead log; a chunk resent because its ack was
//! lost is acknowledged again without being stored twice (its id, with the sender's token name
//! and the table, is the idempotency key). With `[[intake.tokens]]` configured, a connection
//! must first pass the protocol's shared-key handshake (HELO/PING/PONG), the shared key being
//! one of the tokens, before any message is read. Hand-written because no maintained Rust
//! crate implements the server side of this protocol.
//!
//! Bounds: at most `[intake] max_connections` connections at once (more are closed at
//! accept), the handshake and each message must arrive within `[intake] read_timeout` (a
//! silent, idle or trickling peer is closed), a message is at most `max_body_mb` on the wire
//! and costs at most four times that in memory once decoded, which is checked while its bytes
//! arrive ([`super::msgpack::Scanner`]). While more than `max_pending_mb` wait for the lake,
//! connections are not read (TCP pushes back on the sender). A connection is a task, not a
//! thread: one waiting for bytes costs a few kilobytes; decoding runs off the async workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BufMut;
use rmpv::Value;
use sha2::{Digest, Sha512};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::Intake;
use super::config::IntakeToken;
use super::forward_message::{Failure, MAX_DEPTH, Message, bytes_of, hex, json_record};
use super::metrics::{Metrics, StatusLabel};
use super::msgpack::{Scanner, read_value};
use super::segment::Entry;
use super::wal::Stored;
use crate::error::Result;
use crate::lake::TableRef;

/// The most bytes a handshake's PING may take.
const MAX_PING: usize = 64 * 1024;

/// Accepts connections until `stopped` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Arc<Intake>,
    stopped: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(intake.settings.max_connections));
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("forward: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    count(&intake.metrics, "too_many_connections");
                    tracing::warn!(
                        "forward: {peer} refused, {} connections are open ([intake] max_connections)",
                        intake.settings.max_connections
                    );
                    continue;
                };
                let intake = intake.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = connection(stream, peer, intake).await {
                        tracing::warn!("forward connection from {peer}: {e}");
                    }
                });
            }
            _ = &mut stopped => return Ok(()),
        }
    }
}

/// Reads one whole msgpack value from the peer, scanned as its bytes arrive: within `limit`
/// bytes, its memory `budget` and the `deadline`. Bytes read past it stay in `buffer` for the
/// next one. None when the peer closed between values.
async fn read_message(
    reader: &mut OwnedReadHalf,
    buffer: &mut Vec<u8>,
    limit: usize,
    budget: usize,
    deadline: Instant,
) -> std::result::Result<Option<Vec<u8>>, Failure> {
    let mut scanner = Scanner::new(budget, MAX_DEPTH);
    let mut scanned = 0;
    loop {
        if scanned < buffer.len() {
            match scanner.feed(&buffer[scanned..]) {
                Ok(Some(n)) => {
                    let rest = buffer.split_off(scanned + n);
                    return Ok(Some(std::mem::replace(buffer, rest)));
                }
                Ok(None) => scanned = buffer.len(),
                Err(e) => return Err(format!("not a forward-protocol message ({e}); closing")),
            }
        }
        if buffer.len() > limit {
            return Err(format!(
                "a message is larger than [intake] max_body_mb ({limit} bytes); closing"
            ));
        }
        let room = (limit + 1 - buffer.len()).min(64 * 1024);
        let mut room = (&mut *buffer).limit(room);
        match tokio::time::timeout_at(deadline, reader.read_buf(&mut room)).await {
            Err(_) => {
                return Err("no whole message within [intake] read_timeout; closing".to_string());
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(0)) if buffer.is_empty() => return Ok(None),
            Ok(Ok(0)) => return Err("the peer closed in the middle of a message".to_string()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    intake: Arc<Intake>,
) -> std::result::Result<(), Failure> {
    let timeout = intake.settings.read_timeout;
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer = Vec::new();
    let sender = if intake.requires_tokens() {
        Some(handshake(&mut reader, &mut writer, &mut buffer, &intake).await?)
    } else {
        None
    };
    let limit = intake.settings.max_body_bytes;
    loop {
        // Backpressure: while the lake is behind, stop reading; TCP slows the sender down.
        while intake.wal.pending_bytes() > intake.settings.max_pending_bytes {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // What the message may cost once decoded: four times its bytes on the wire.
        let budget = limit.saturating_mul(4);
        let deadline = Instant::now() + timeout;
        let bytes = match read_message(&mut reader, &mut buffer, limit, budget, deadline).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(()),
            Err(e) => {
                count(&intake.metrics, "bad_message");
                return Err(e);
            }
        };
        // Decoding, inflating and turning records into JSON is CPU work: off the async workers.
        let (decoding, token) = (intake.clone(), sender.cloned());
        let decoded = tokio::task::spawn_blocking(move || {
            decode(&decoding, token.as_ref(), &bytes, limit, budget)
        })
        .await
        .map_err(|e| format!("decoding failed: {e}"))?;
        let (name, entries, chunk) = match decoded {
            Decoded::Entries(name, entries, chunk) => (name, entries, chunk),
            Decoded::Refused(why) => {
                tracing::warn!("forward from {peer}: {why}");
                continue;
            }
            Decoded::Bad(e) => {
                count(&intake.metrics, "bad_message");
                return Err(e);
            }
        };
        let n = entries.len();
        let entry = Entry {
            table: name.clone(),
            received_at: chrono::Utc::now().timestamp_micros(),
            records: entries,
            // Fluentd resends an unacknowledged chunk with the same id; the key is the
            // sender's own (its token's name), so one sender cannot suppress another's.
            key: chunk.as_ref().map(|c| {
                let who = sender.map_or("", |t| t.name.as_str());
                format!("forward:{who}:{name}:{c}")
            }),
        };
        let stored = intake
            .wal
            .append(&entry)
            .await
            .map_err(|e| format!("could not store records durably ({e}); not acknowledged"))?;
        let counter = match stored {
            Stored::New => &intake.metrics.received,
            Stored::Duplicate => &intake.metrics.duplicates,
        };
        Metrics::add(counter, &name, n);
        count(&intake.metrics, "ok");
        if let Some(chunk) = chunk {
            let ack = Value::Map(vec![(Value::from("ack"), Value::from(chunk))]);
            send(&mut writer, &ack, timeout).await?;
        }
    }
}

/// What one message came to.
enum Decoded {
    /// Records (JSON text) for a table, and the chunk id to acknowledge.
    Entries(String, Vec<Vec<u8>>, Option<String>),
    /// A message for no table, or one the sender may not write: skipped, not acknowledged.
    Refused(String),
    /// Not a forward message: the connection is closed.
    Bad(Failure),
}

/// Decodes a gathered message into its table's records.
fn decode(
    intake: &Intake,
    sender: Option<&IntakeToken>,
    bytes: &[u8],
    limit: usize,
    mut budget: usize,
) -> Decoded {
    let value = match read_value(&mut &bytes[..], &mut budget, MAX_DEPTH) {
        Ok(value) => value,
        Err(e) => return Decoded::Bad(format!("not a forward-protocol message ({e}); closing")),
    };
    let message = match Message::parse(value, limit, &mut budget) {
        Ok(message) => message,
        Err(e) => return Decoded::Bad(e),
    };
    let Some((name, table)) = intake.table_for_tag(&message.tag) else {
        count(&intake.metrics, "unknown_tag");
        return Decoded::Refused(format!(
            "no [[intake.tables]] has tag '{}' in its tags; the {} records are not acknowledged",
            message.tag,
            message.entries.len()
        ));
    };
    if let Some(token) = sender {
        match TableRef::parse(name) {
            Ok(table) if token.allows(&table) => {}
            _ => {
                count(&intake.metrics, "forbidden");
                return Decoded::Refused(format!("token '{}' may not write {name}", token.name));
            }
        }
    }
    let records = message
        .entries
        .into_iter()
        .map(|(time, record)| json_record(record, time, table))
        .collect();
    Decoded::Entries(name.to_string(), records, message.chunk)
}

fn count(metrics: &Metrics, outcome: &str) {
    metrics
        .requests
        .get_or_create(&StatusLabel {
            status: format!("forward_{outcome}"),
        })
        .inc();
}

/// Writes a value to the peer, within `timeout` (a peer that does not read is dropped).
async fn send(
    writer: &mut OwnedWriteHalf,
    value: &Value,
    timeout: Duration,
) -> std::result::Result<(), Failure> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, writer.write_all(&bytes)).await {
        Ok(written) => written.map_err(|e| e.to_string()),
        Err(_) => Err("the peer does not read its answers; closing".to_string()),
    }
}

/// The shared-key handshake: HELO with a nonce, the client's PING with
/// `sha512_hex(salt + hostname + nonce + shared_key)`, our PONG proving we know the key too.
/// Nothing else is read before it succeeds, and it must finish within the read timeout.
async fn handshake<'a>(
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    buffer: &mut Vec<u8>,
    intake: &'a Intake,
) -> std::result::Result<&'a IntakeToken, Failure> {
    let timeout = intake.settings.read_timeout;
    let nonce = uuid::Uuid::new_v4().as_bytes().to_vec();
    let helo = Value::Array(vec![
        Value::from("HELO"),
        Value::Map(vec![
            (Value::from("nonce"), Value::Binary(nonce.clone())),
            (Value::from("auth"), Value::from("")),
            (Value::from("keepalive"), Value::Boolean(true)),
        ]),
    ]);
    send(writer, &helo, timeout).await?;
    let deadline = Instant::now() + timeout;
    let ping = read_message(reader, buffer, MAX_PING, MAX_PING * 4, deadline)
        .await
        .map_err(|e| format!("no PING after HELO ({e})"))?
        .ok_or_else(|| "the peer closed before its PING".to_string())?;
    let mut budget = MAX_PING * 4;
    let ping = read_value(&mut &ping[..], &mut budget, MAX_DEPTH)
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
            send(
                writer,
                &pong(true, "", digest_of(server, &token.token)),
                timeout,
            )
            .await?;
            Ok(token)
        }
        None => {
            let _ = send(
                writer,
                &pong(false, "shared_key mismatch", String::new()),
                timeout,
            )
            .await;
            Err(format!(
                "{}: shared key is none of [[intake.tokens]]",
                String::from_utf8_lossy(&hostname)
            ))
        }
    }
}
