//! Log intake over HTTP: `gamelake serve --http` as a child process, fed the bodies Fluent Bit's
//! `http` output and Fluentd's `out_http` send (Fluent Bit and Fluentd themselves cannot be
//! installed from the registries this machine reaches, so their exact body formats are sent
//! with an HTTP client), read back with gamelake and DuckDB's `delta_scan`; and `kill -9` in
//! the middle of a steady stream.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{DUCKDB_DELTA, ServeProcess, TempLake, rows, run_python};

const TOKEN: &str = "bj-game-servers-0123456789";
const OTHER_TOKEN: &str = "shop-servers-0123456789ab";

/// A config with two tokens (one for `logs.*`, one for `shop.*` only) and four tables.
fn config(lake: &TempLake, extra: &str) -> PathBuf {
    let path = lake.path().join("gamelake.toml");
    let interval = if extra.contains("commit_interval") {
        ""
    } else {
        "commit_interval = \"200ms\""
    };
    let text = format!(
        r#"[intake]
{interval}
{extra}
[[intake.tokens]]
name = "bj"
token = "{TOKEN}"
tables = ["logs.*"]
[[intake.tokens]]
name = "shop"
token = "{OTHER_TOKEN}"
tables = ["shop.*"]
[[intake.tables]]
name = "logs.events"
time_field = "time"
timezone = "+08:00"
columns = {{ player = "bigint", event = "text" }}
required = ["player"]
[[intake.tables]]
name = "logs.fluentbit"
time_field = "date"
time_format = "epoch_s"
[[intake.tables]]
name = "logs.strict"
new_fields = "reject"
columns = {{ id = "bigint" }}
[[intake.tables]]
name = "logs.stream"
columns = {{ id = "bigint" }}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start(lake: &TempLake, config: &std::path::Path) -> ServeProcess {
    ServeProcess::spawn(lake, config, &["--http", "127.0.0.1:0"], &[])
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// POSTs a body; returns the status and the response text.
async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    table: &str,
    token: Option<&str>,
    body: Vec<u8>,
    gzipped: bool,
) -> (u16, String) {
    let mut request = client
        .post(format!("http://{addr}/ingest/{table}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if gzipped {
        request = request.header("content-encoding", "gzip");
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Waits until `sql` over the lake returns `expected` (the committer runs every 200 ms).
async fn wait_for(lake: &TempLake, sql: &str, expected: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let session = lake.session().await;
        let got = match session.query(sql).await {
            Ok(batches) => crate::support::render(&batches),
            Err(e) => vec![format!("error: {e}")],
        };
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: still {got:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluent_bit_and_fluentd_bodies_become_rows_and_bad_records_are_kept_with_the_reason() {
    let lake = TempLake::new();
    let server = start(&lake, &config(&lake, ""));
    let addr = server.http_addr();
    let client = reqwest::Client::new();

    // Fluent Bit `format json`: a JSON array; its `date` key is seconds as a double.
    let fluent_bit = r#"[{"date":1795608000.5,"log":"player 1 joined","level":"info"},
                         {"date":1795611600.25,"log":"player 2 left","level":"warn","stats":{"hp":3}}]"#;
    assert_eq!(
        post(
            &client,
            addr,
            "logs.fluentbit",
            Some(TOKEN),
            fluent_bit.into(),
            false
        )
        .await
        .0,
        200
    );
    // Fluentd out_http (and Fluent Bit `json_lines`) with gzip: one JSON object per line.
    // 2026-11-25T20:00:00Z is already the 26th in the game's UTC+8 day.
    let ndjson = r#"{"time":"2026-11-25T20:00:00Z","player":1,"event":"login"}
{"time":"2026-11-25T10:00:00+08:00","player":2,"event":"buy"}
{"time":"2026-11-25T10:00:01+08:00","player":"three","event":"buy"}
{"time":"2026-11-25T10:00:02+08:00","event":"buy"}
{"player":4,"event":"no time"}
{"time":"2026-11-25T10:00:03+08:00","player":5,"event":
"#;
    let (status, text) = post(
        &client,
        addr,
        "logs.events",
        Some(TOKEN),
        gzip(ndjson.as_bytes()),
        true,
    )
    .await;
    assert_eq!((status, text.as_str()), (200, r#"{"received":6}"#));
    // Fluent Bit `json_stream`: objects one after another.
    let stream = r#"{"time":"2026-11-26T01:00:00+08:00","player":6,"event":"login","map":"desert"}{"time":"2026-11-26T01:00:00+08:00","player":7}"#;
    assert_eq!(
        post(
            &client,
            addr,
            "logs.events",
            Some(TOKEN),
            stream.into(),
            false
        )
        .await
        .0,
        200
    );
    // A table that takes no new fields.
    let strict = "{\"id\":1}\n{\"id\":2,\"surprise\":true}\n";
    assert_eq!(
        post(
            &client,
            addr,
            "logs.strict",
            Some(TOKEN),
            strict.into(),
            false
        )
        .await
        .0,
        200
    );

    wait_for(&lake, "SELECT count(*) FROM logs.events", &["4"]).await;
    wait_for(&lake, "SELECT count(*) FROM logs._rejected", &["5"]).await;
    wait_for(&lake, "SELECT count(*) FROM logs.strict", &["1"]).await;
    let session = lake.session().await;
    assert_eq!(
        rows(
            &session,
            "SELECT player, event, map, CAST(day AS VARCHAR) AS d, CAST(event_time AS VARCHAR) AS t FROM logs.events ORDER BY player"
        )
        .await,
        [
            "1|login|NULL|2026-11-26|2026-11-25T20:00:00Z",
            "2|buy|NULL|2026-11-25|2026-11-25T02:00:00Z",
            "6|login|desert|2026-11-26|2026-11-25T17:00:00Z",
            "7|NULL|NULL|2026-11-26|2026-11-25T17:00:00Z",
        ]
    );
    assert_eq!(
        rows(&session, "SELECT log, level, stats, CAST(event_time AS VARCHAR) AS t FROM logs.fluentbit ORDER BY event_time").await,
        [
            "player 1 joined|info|NULL|2026-11-25T12:00:00.500Z",
            "player 2 left|warn|{\"hp\":3}|2026-11-25T13:00:00.250Z",
        ]
    );
    // Every record is somewhere: accepted + rejected = received, each rejection with its reason
    // and the record as sent.
    let rejected = rows(
        &session,
        "SELECT \"table\", reason, record FROM logs._rejected ORDER BY \"table\", reason",
    )
    .await;
    let expected = [
        (
            "logs.events",
            "field 'player': expected bigint, got \"three\"",
            "\"player\":\"three\"",
        ),
        (
            "logs.events",
            "invalid JSON: EOF while parsing a value",
            "\"player\":5",
        ),
        ("logs.events", "missing required field 'player'", "10:00:02"),
        ("logs.events", "missing time field 'time'", "\"no time\""),
        (
            "logs.strict",
            "field 'surprise' is not a column of logs.strict",
            "\"surprise\":true",
        ),
    ];
    assert_eq!(rejected.len(), expected.len(), "{rejected:#?}");
    for (line, (table, reason, record)) in rejected.iter().zip(expected) {
        let parts: Vec<&str> = line.splitn(3, '|').collect();
        assert_eq!(parts[0], table, "{line}");
        assert!(parts[1].starts_with(reason), "{line}");
        assert!(parts[2].contains(record), "{line}");
    }
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gamelake_intake_records_received_total{table=\"logs.events\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gamelake_intake_records_rejected_total{table=\"logs.events\"} 4"),
        "{metrics}"
    );

    // DuckDB reads the same tables through its delta extension.
    let lake_path = lake.location();
    let duck = run_python(
        &format!(
            "{DUCKDB_DELTA}\nimport sys\ncon = duck()\nprint(con.execute(f\"SELECT count(*), sum(player) FROM delta_scan('{{sys.argv[1]}}/logs/events')\").fetchone())"
        ),
        &[&lake_path],
    );
    assert_eq!(duck.trim(), "(4, 16)");

    // A retried request with the same Idempotency-Key is acknowledged, not stored again.
    let retried = |key: &'static str| {
        client
            .post(format!("http://{addr}/ingest/logs.events"))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .body(r#"{"time":"2026-11-26T02:00:00+08:00","player":100}"#)
            .send()
    };
    let first = retried("batch-1").await.unwrap().text().await.unwrap();
    let second = retried("batch-1").await.unwrap().text().await.unwrap();
    let other = retried("batch-2").await.unwrap().text().await.unwrap();
    assert_eq!(first, r#"{"received":1}"#);
    assert_eq!(second, r#"{"duplicate":true,"received":1}"#);
    assert_eq!(other, r#"{"received":1}"#);
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gamelake_intake_records_duplicate_total{table=\"logs.events\"} 1"),
        "{metrics}"
    );

    // SIGTERM: a clean stop.
    let (status, out) = server.terminate();
    assert!(status.success(), "{out}");
    assert!(out.contains("stopped"), "{out}");
    let session = lake.session().await;
    assert_eq!(
        rows(
            &session,
            "SELECT count(*) FROM logs.events WHERE player = 100"
        )
        .await,
        ["2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_is_wrong_and_lose_nothing() {
    let lake = TempLake::new();
    let server = start(&lake, &config(&lake, "max_body_mb = 1"));
    let addr = server.http_addr();
    let client = reqwest::Client::new();
    let one = br#"{"id":1}"#.to_vec();
    let mut truncated = gzip(br#"{"id":1}"#);
    truncated.truncate(truncated.len() - 6);
    let bomb = gzip(&vec![b' '; 20 * 1024 * 1024]); // 20 MiB of spaces in a few KiB
    assert!(bomb.len() < 100_000);
    // (table, token, body, gzip, status, what the answer says)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, bool, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "logs.strict",
            None,
            one.clone(),
            false,
            401,
            "Authorization: Bearer",
        ),
        (
            "logs.strict",
            Some("wrong-token-0123456789"),
            one.clone(),
            false,
            401,
            "unknown token",
        ),
        (
            "logs.strict",
            Some(OTHER_TOKEN),
            one.clone(),
            false,
            403,
            "may not write logs.strict",
        ),
        (
            "logs.nope",
            Some(TOKEN),
            one,
            false,
            404,
            "[[intake.tables]]",
        ),
        (
            "logs.strict",
            Some(TOKEN),
            b"hello".to_vec(),
            false,
            400,
            "no JSON record",
        ),
        (
            "logs.strict",
            Some(TOKEN),
            b"[{\"id\":1},".to_vec(),
            false,
            400,
            "not a JSON array",
        ),
        (
            "logs.strict",
            Some(TOKEN),
            b"not gzip".to_vec(),
            true,
            400,
            "not valid gzip",
        ),
        (
            "logs.strict",
            Some(TOKEN),
            truncated,
            true,
            400,
            "not valid gzip",
        ),
        (
            "logs.strict",
            Some(TOKEN),
            vec![b' '; 2 << 20],
            false,
            413,
            "",
        ),
        ("logs.strict", Some(TOKEN), bomb, true, 413, "larger than"),
    ];
    for (table, token, body, gzipped, status, says) in cases {
        let (got, text) = post(&client, addr, table, token, body, gzipped).await;
        assert_eq!(got, status, "{table} {token:?}: {text}");
        assert!(text.contains(says), "{table} {token:?}: {text}");
    }
    // Deeply nested (10,000 levels): no crash, no recursion; the value is kept as JSON text.
    let deep = format!(
        "{{\"id\":2,\"x\":{}{}}}\n{{\"id\":1}}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(
        post(
            &client,
            addr,
            "logs.stream",
            Some(TOKEN),
            deep.into(),
            false
        )
        .await
        .0,
        200
    );
    wait_for(
        &lake,
        "SELECT id, length(x) FROM logs.stream ORDER BY id",
        &["1|NULL", "2|20000"],
    )
    .await;

    for (path, expected) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let response = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.text().await.unwrap(), expected);
    }
    drop(server);

    // Backpressure: with the lake far behind (a commit interval of an hour and no room for
    // pending bytes), the second request is told to come back later.
    let lake = TempLake::new();
    let server = start(
        &lake,
        &config(&lake, "max_pending_mb = 0\ncommit_interval = \"1h\""),
    );
    let addr = server.http_addr();
    let body = br#"{"id":1}"#.to_vec();
    assert_eq!(
        post(
            &client,
            addr,
            "logs.strict",
            Some(TOKEN),
            body.clone(),
            false
        )
        .await
        .0,
        200
    );
    let response = client
        .post(format!("http://{addr}/ingest/logs.strict"))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    // SIGTERM commits what was acknowledged, even before its interval.
    let (status, out) = server.terminate();
    assert!(status.success(), "{out}");
    let session = lake.session().await;
    assert_eq!(rows(&session, "SELECT id FROM logs.strict").await, ["1"]);
}

/// Ids per sender: room for ten million batches, more than a sender sends in a test.
const SENDER_IDS: usize = 1_000_000_000;

/// One sender's batches: ids `sender * SENDER_IDS + batch * 100 + i`.
fn batch_body(sender: usize, batch: usize, size: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..size {
        let id = sender * SENDER_IDS + batch * 100 + i;
        writeln!(body, "{{\"id\":{id},\"payload\":\"{}\"}}", "x".repeat(200)).unwrap();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_steady_stream_loses_no_acknowledged_record_and_commits_none_twice() {
    let lake = TempLake::new();
    let config = config(&lake, "");
    let server = Arc::new(Mutex::new(Some(start(&lake, &config))));
    let addr = Arc::new(Mutex::new(
        server.lock().unwrap().as_ref().unwrap().http_addr(),
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    const SENDERS: usize = 4;
    const BATCH: usize = 50;

    // Senders retry a batch until it is acknowledged, like Fluent Bit and Fluentd do, with the
    // same Idempotency-Key: a batch stored by an attempt whose answer was lost to the kill is
    // not stored again by the retry. Every acknowledged batch must be there exactly once.
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (addr, stop) = (addr.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut attempts: Vec<usize> = Vec::new();
                let mut batch = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    attempts.push(0);
                    loop {
                        attempts[batch] += 1;
                        let target = *addr.lock().unwrap();
                        let sent = client
                            .post(format!("http://{target}/ingest/logs.stream"))
                            .bearer_auth(TOKEN)
                            .header("Idempotency-Key", format!("{sender}-{batch}"))
                            .body(batch_body(sender, batch, BATCH))
                            .send()
                            .await;
                        if matches!(&sent, Ok(r) if r.status().as_u16() == 200) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    batch += 1;
                }
                attempts
            })
        })
        .collect();

    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300 + rand_ms())).await;
        let mut slot = server.lock().unwrap();
        if let Some(mut running) = slot.take() {
            running.child.kill().unwrap(); // SIGKILL
            running.child.wait().unwrap();
        }
        let next = start(&lake, &config);
        *addr.lock().unwrap() = next.http_addr();
        *slot = Some(next);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut attempts = Vec::new();
    for sender in senders {
        attempts.push(sender.await.unwrap());
    }
    let last = server.lock().unwrap().take().unwrap();
    let (status, out) = last.terminate();
    assert!(status.success(), "{out}");

    let session = lake.session().await;
    let copies: HashMap<usize, usize> = rows(
        &session,
        &format!(
            "SELECT id / 100, count(*) / {BATCH}, count(DISTINCT id) FROM logs.stream GROUP BY 1"
        ),
    )
    .await
    .into_iter()
    .map(|line| {
        let parts: Vec<usize> = line.split('|').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts[2], BATCH, "batch {} is incomplete: {line}", parts[0]);
        (parts[0], parts[1])
    })
    .collect();
    let mut acknowledged = 0;
    for (sender, tries) in attempts.iter().enumerate() {
        for (batch, tries) in tries.iter().enumerate() {
            let key = sender * (SENDER_IDS / 100) + batch;
            let n = copies.get(&key).copied().unwrap_or(0);
            assert_eq!(
                n, 1,
                "acknowledged batch {batch} of sender {sender} is there {n} times after {tries} attempts"
            );
            acknowledged += 1;
        }
    }
    let retried: usize = attempts.iter().flatten().map(|t| t - 1).sum();
    eprintln!("{acknowledged} batches acknowledged, {retried} retries over 20 kills");
    assert!(
        acknowledged > 20 * SENDERS,
        "only {acknowledged} batches were sent"
    );
    assert_eq!(copies.len(), acknowledged, "rows of batches never sent");
    assert!(
        !lake.path().join("logs/_rejected").exists(),
        "no record was malformed, so none may be rejected"
    );
}

/// A pseudo-random delay below 500 ms (no rand dependency for one number).
fn rand_ms() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos % 500)
}

/// A forward-protocol client in Python: fluent-logger for Message mode, msgpack frames for the
/// modes it does not send, with the shared-key handshake when a key is given.
const FORWARD_CLIENT: &str = r#"
import gzip, hashlib, socket, sys, time
import msgpack
from fluent import sender

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t = 1795608000  # 2026-11-25T12:00:00Z

if not key:
    # Message mode from the real client library; one event with nanosecond EventTime.
    plain = sender.FluentSender("game", host=host, port=port)
    assert plain.emit_with_time("events", t, {"player": 1, "event": "login"}), plain.last_error
    precise = sender.FluentSender("game", host=host, port=port, nanosecond_precision=True)
    assert precise.emit_with_time("events", t + 0.5, {"player": 2, "event": "buy"}), precise.last_error
    plain.close(); precise.close()

s = socket.create_connection((host, port))
unpacker = msgpack.Unpacker(raw=False)
def receive():
    while True:
        for obj in unpacker:
            return obj
        data = s.recv(65536)
        assert data, "connection closed"
        unpacker.feed(data)

if key:
    helo = receive()
    assert helo[0] == "HELO", helo
    nonce = helo[1]["nonce"]
    salt = b"salt-123"
    def digest(host_name, shared_key):
        return hashlib.sha512(salt + host_name + nonce + shared_key.encode()).hexdigest()
    s.sendall(msgpack.packb(["PING", "gameserver-1", salt, digest(b"gameserver-1", key), "", ""]))
    pong = receive()
    print("pong", pong[1], pong[2])
    if not pong[1]:
        sys.exit(0)
    assert pong[4] == digest(pong[3].encode(), key), "the server proved it knows the key"

def entry(i):
    return [t + i, {"player": 10 + i, "event": "forward"}]
# Forward mode, with an acknowledgement asked for.
s.sendall(msgpack.packb(["game.events", [entry(0), entry(1)], {"chunk": "c-forward", "size": 2}]))
print("ack", receive()["ack"])
# PackedForward.
packed = b"".join(msgpack.packb(entry(i)) for i in range(2, 5))
s.sendall(msgpack.packb(["game.events", packed, {"chunk": "c-packed", "size": 3}]))
print("ack", receive()["ack"])
# CompressedPackedForward.
s.sendall(msgpack.packb(["game.events", gzip.compress(packed.replace(b"forward", b"gzipped")), {"chunk": "c-gzip", "compressed": "gzip"}]))
print("ack", receive()["ack"])
s.close()
"#;

fn forward_config(lake: &TempLake, tokens: &str) -> PathBuf {
    let path = lake.path().join("forward.toml");
    std::fs::write(
        &path,
        format!(
            "[intake]\ncommit_interval = \"200ms\"\n{tokens}\n[[intake.tables]]\nname = \"logs.game\"\ntags = [\"game.**\"]\ntime_field = \"time\"\n"
        ),
    )
    .unwrap();
    path
}

/// Starts `serve --forward` without tokens and runs the forward client against it; every
/// chunk it sends must be acknowledged.
fn serve_and_send_forward(lake: &TempLake, config: &std::path::Path) -> ServeProcess {
    let server = ServeProcess::spawn(
        lake,
        config,
        &["--forward", "127.0.0.1:0", "--insecure-no-auth"],
        &[],
    );
    let addr = server.forward_addr();
    let out = run_python(
        FORWARD_CLIENT,
        &[&addr.ip().to_string(), &addr.port().to_string(), ""],
    );
    assert_eq!(out, "ack c-forward\nack c-packed\nack c-gzip\n");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluentd_forward_protocol_every_mode_acknowledged_after_durable() {
    let lake = TempLake::new();
    let config = forward_config(&lake, "");
    let server = serve_and_send_forward(&lake, &config);
    wait_for(&lake, "SELECT count(*) FROM logs.game", &["10"]).await;
    let session = lake.session().await;
    assert_eq!(
        rows(
            &session,
            "SELECT player, event, CAST(event_time AS VARCHAR) AS t FROM logs.game WHERE event <> 'gzipped' AND (player < 12 OR player = 14) ORDER BY player"
        )
        .await,
        [
            "1|login|2026-11-25T12:00:00Z",
            "2|buy|2026-11-25T12:00:00.500Z",
            "10|forward|2026-11-25T12:00:00Z",
            "11|forward|2026-11-25T12:00:01Z",
            "14|forward|2026-11-25T12:00:04Z",
        ]
    );
    assert_eq!(
        rows(
            &session,
            "SELECT count(*) FROM logs.game WHERE event = 'gzipped'"
        )
        .await,
        ["3"]
    );
    let (status, out) = server.terminate();
    assert!(status.success(), "{out}");

    // After a restart, chunks resent with the same ids (their acks lost, say) are acknowledged
    // again but not stored twice; fluent-logger's Message-mode events carry no chunk id.
    let server = serve_and_send_forward(&lake, &config);
    // Message mode asks no ack: wait until its two events are in, then stop (which commits
    // everything acknowledged, so resent chunks stored again would show now).
    wait_for(&lake, "SELECT count(*) FROM logs.game", &["12"]).await;
    let (status, out) = server.terminate();
    assert!(status.success(), "{out}");
    let session = lake.session().await;
    assert_eq!(
        rows(&session, "SELECT count(*) FROM logs.game").await,
        ["12"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluentd_forward_shared_key_handshake() {
    let lake = TempLake::new();
    let tokens = format!("[[intake.tokens]]\nname = \"bj\"\ntoken = \"{TOKEN}\"\n");
    let config = forward_config(&lake, &tokens);
    let server = ServeProcess::spawn(&lake, &config, &["--forward", "127.0.0.1:0"], &[]);
    let addr = server.forward_addr();
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let out = run_python(FORWARD_CLIENT, &[&host, &port, "not-the-key-0123456789"]);
    assert_eq!(out, "pong False shared_key mismatch\n");
    let out = run_python(FORWARD_CLIENT, &[&host, &port, TOKEN]);
    assert_eq!(out, "pong True \nack c-forward\nack c-packed\nack c-gzip\n");
    wait_for(&lake, "SELECT count(*) FROM logs.game", &["8"]).await;
}

#[test]
fn intake_benchmark_runs_at_a_tiny_scale() {
    let text = crate::support::run_tiny_benchmark(
        "intake_http.py",
        &["--seconds", "1", "--batch", "100", "--file-events", "2000"],
    );
    for row in [
        "HTTP intake, acknowledged",
        "HTTP intake, committed to Delta",
        "DuckDB read_json -> Parquet",
    ] {
        assert!(text.contains(row), "{row} missing from:\n{text}");
    }
}

/// Parquet data files under a table folder (not the log's checkpoints).
fn data_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.ends_with("_delta_log") {
            continue;
        }
        if path.is_dir() {
            n += data_files(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_compacts_small_files_while_appends_continue_then_vacuum_deletes_them() {
    let lake = TempLake::new();
    let server = start(&lake, &config(&lake, "compact_interval = \"1s\""));
    let addr = server.http_addr();
    let client = reqwest::Client::new();
    let metrics = || async {
        client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Appends every 100 ms (a commit every 200 ms) while compaction runs every second.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    loop {
        let body = (0..10)
            .map(|i| format!("{{\"id\":{}}}\n", sent + i))
            .collect::<String>();
        assert_eq!(
            post(
                &client,
                addr,
                "logs.stream",
                Some(TOKEN),
                body.into(),
                false
            )
            .await
            .0,
            200
        );
        sent += 10;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = metrics().await;
        if sent >= 300
            && text.contains("gamelake_intake_compacted_files_total{table=\"logs.stream\"}")
        {
            assert!(
                !text.contains("gamelake_intake_maintenance_failures_total 1"),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no compaction within a minute:\n{text}"
        );
    }
    let (status, out) = server.terminate();
    assert!(status.success(), "{out}");
    let session = lake.session().await;
    assert_eq!(
        rows(
            &session,
            "SELECT count(*), count(DISTINCT id), max(id) FROM logs.stream"
        )
        .await,
        [format!("{sent}|{sent}|{}", sent - 1)]
    );
    let history = crate::support::gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "lake",
            "history",
            "logs.stream",
            "--limit",
            "1000",
            "--format",
            "csv",
        ],
        &[],
    );
    assert!(history.contains("OPTIMIZE"), "{history}");

    // On demand: compact what is left, then vacuum what compaction replaced.
    let out = crate::support::gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "lake",
            "optimize",
            "logs.stream",
        ],
        &[],
    );
    assert!(
        out.contains("compacted") || out.contains("nothing to compact"),
        "{out}"
    );
    let table_dir = lake.path().join("logs/stream");
    let before = data_files(&table_dir);
    let location = lake.location();
    let vacuum = |extra: &[&str]| {
        let mut args = vec![
            "--lake",
            &location,
            "lake",
            "vacuum",
            "logs.stream",
            "--retain",
            "0s",
        ];
        args.extend_from_slice(extra);
        crate::support::gamelake_ok(&args, &[])
    };
    let listed = vacuum(&["--dry-run"]);
    assert_eq!(data_files(&table_dir), before, "a dry run deletes nothing");
    assert!(listed.lines().count() > 1, "{listed}");
    vacuum(&[]);
    assert_eq!(data_files(&table_dir), before - listed.lines().count());
    let session = lake.session().await;
    let days = rows(&session, "SELECT count(DISTINCT day) FROM logs.stream").await;
    assert_eq!(
        [data_files(&table_dir).to_string()],
        days.as_slice(),
        "one compacted file per day partition; optimize said {out}"
    );
    assert_eq!(
        rows(&session, "SELECT count(*) FROM logs.stream").await,
        [sent.to_string()]
    );
    let err = crate::support::gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "lake",
            "optimize",
            "logs.stream",
            "--since",
            "soon",
        ],
        &[],
    );
    assert!(err.contains("expected a date like 2026-11-20"), "{err}");
}

#[test]
fn files_pipeline_commits_each_file_once_through_the_intake_record_path() {
    use crate::support::{gamelake_err, sql_csv};
    let lake = TempLake::new();
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path();
    std::fs::write(
        dir.join("a.ndjson"),
        "{\"time\":\"2026-11-25T10:00:00+08:00\",\"player\":1}\n{\"time\":\"2026-11-25T10:00:01+08:00\",\"player\":2}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.ndjson.gz"),
        gzip(b"{\"time\":\"2026-11-25T11:00:00+08:00\",\"player\":3}\n{\"player\":4}\nnot json\n"),
    )
    .unwrap();
    std::fs::create_dir(dir.join("old")).unwrap();
    std::fs::write(
        dir.join("old/c.ndjson"),
        "{\"time\":\"2026-11-24T10:00:00+08:00\",\"player\":9}\n",
    )
    .unwrap();
    let pipeline = dir.join("files.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"backfill\"\n[source]\nkind = \"files\"\npath = \"{}/*.ndjson*\"\n[[table]]\nto = \"logs.backfill\"\nmode = \"append\"\ntime_field = \"time\"\ncolumns = {{ player = \"bigint\" }}\n",
            dir.display()
        ),
    )
    .unwrap();
    let lake_arg = lake.location();
    let ingest = || {
        let out = crate::support::gamelake(
            &["--lake", &lake_arg, "ingest", pipeline.to_str().unwrap()],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = ingest();
    assert!(
        first.contains("2 files matched, 0 already committed, 2 new"),
        "{first}"
    );
    let query = |sql: &str| sql_csv(&lake_arg, &["-c", sql]);
    assert_eq!(
        query("SELECT player, CAST(day AS VARCHAR) AS d FROM logs.backfill ORDER BY player"),
        "player,d\n1,2026-11-25\n2,2026-11-25\n3,2026-11-25\n"
    );
    assert_eq!(
        query("SELECT reason FROM logs._rejected ORDER BY reason"),
        "reason\ninvalid JSON: expected ident at line 1 column 2\nmissing time field 'time'\n"
    );
    // A rerun takes nothing twice; a new file is taken alone.
    let again = ingest();
    assert!(
        again.contains("2 files matched, 2 already committed, 0 new"),
        "{again}"
    );
    std::fs::write(
        dir.join("d.ndjson"),
        "{\"time\":\"2026-11-26T10:00:00+08:00\",\"player\":5}\n",
    )
    .unwrap();
    let third = ingest();
    assert!(
        third.contains("3 files matched, 2 already committed, 1 new"),
        "{third}"
    );
    assert_eq!(query("SELECT count(*) AS n FROM logs.backfill"), "n\n4\n");
    assert_eq!(query("SELECT count(*) AS n FROM logs._rejected"), "n\n2\n");

    // CSV files (header row; gzip by name) go the same way; a row that is not one is kept.
    std::fs::write(
        dir.join("e.csv.gz"),
        gzip(b"time,player\n2026-11-26T12:00:00+08:00,6\n2026-11-26T12:00:01+08:00,seven\n2026-11-26T12:00:02+08:00\n"),
    )
    .unwrap();
    let csv_pipeline = dir.join("csv.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&csv_pipeline, text.replace("*.ndjson*", "*.csv*")).unwrap();
    let out = crate::support::gamelake(
        &[
            "--lake",
            &lake_arg,
            "ingest",
            csv_pipeline.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        query("SELECT player FROM logs.backfill WHERE day = DATE '2026-11-26' ORDER BY player"),
        "player\n5\n6\n"
    );
    let reasons = query(
        "SELECT reason, record FROM logs._rejected WHERE reason NOT LIKE 'invalid%' AND reason NOT LIKE 'missing%' ORDER BY reason",
    );
    assert!(
        reasons.contains(
            "e.csv.gz: line 4 has 1 fields but the header has 2,2026-11-26T12:00:02+08:00"
        ) && reasons.contains("expected bigint, got \"\"seven\"\""),
        "{reasons}"
    );

    // A files source only fills append tables.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[source]\nkind = \"files\"\npath = \"/tmp/*.ndjson\"\n[[table]]\nto = \"logs.x\"\nmode = \"snapshot\"\n",
    )
    .unwrap();
    let err = gamelake_err(&["pipeline", "validate", bad.to_str().unwrap()], &[]);
    assert!(
        err.contains("bad.toml:6:") && err.contains("mode = \"append\""),
        "{err}"
    );
}
