//! Log intake: `gamelake serve --http` and `--forward` as child processes, fed the bodies Fluent
//! Bit's `http` output and Fluentd's `out_http` send (Fluent Bit and Fluentd themselves cannot be
//! installed from the registries this machine reaches, so their exact body formats are sent
//! with an HTTP client, and the forward protocol with Python's fluent-logger and msgpack), read
//! back with gamelake and DuckDB's `delta_scan`. By subject: HTTP bodies and refusals
//! ([`http`]), `kill -9` in a steady stream ([`crash`]), the forward protocol ([`forward`]),
//! background maintenance ([`maintenance`]), and files pipelines and the benchmark ([`files`]).

mod crash;
mod files;
mod forward;
mod http;
mod maintenance;
mod security;

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

/// The forward protocol, spoken by hand (msgpack frames over TCP) for tests that need what the
/// Python client does not send.
pub(crate) fn msgpack(value: &rmpv::Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).unwrap();
    bytes
}

/// A forward-protocol connection past the shared-key handshake with `key`.
pub(crate) fn forward_connection(addr: SocketAddr, key: &str) -> std::net::TcpStream {
    use sha2::Digest;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let helo = rmpv::decode::read_value(&mut stream).unwrap();
    let nonce = helo[1]
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_str() == Some("nonce"))
        .map(|(_, v)| v.as_slice().unwrap().to_vec())
        .unwrap();
    let (host, salt) = (b"test-host".to_vec(), b"salt".to_vec());
    let mut digest = sha2::Sha512::new();
    digest.update(&salt);
    digest.update(&host);
    digest.update(&nonce);
    digest.update(key.as_bytes());
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ping = rmpv::Value::Array(vec![
        rmpv::Value::from("PING"),
        rmpv::Value::Binary(host),
        rmpv::Value::Binary(salt),
        rmpv::Value::from(hex),
        rmpv::Value::from(""),
        rmpv::Value::from(""),
    ]);
    stream.write_all(&msgpack(&ping)).unwrap();
    let pong = rmpv::decode::read_value(&mut stream).unwrap();
    assert_eq!(pong[1], rmpv::Value::Boolean(true), "{pong}");
    stream
}

/// A Message-mode entry for `tag` with an acknowledgement asked under `chunk`.
pub(crate) fn message(tag: &str, record: rmpv::Value, chunk: &str) -> Vec<u8> {
    msgpack(&rmpv::Value::Array(vec![
        rmpv::Value::from(tag),
        rmpv::Value::from(1_795_608_000),
        record,
        rmpv::Value::Map(vec![(rmpv::Value::from("chunk"), rmpv::Value::from(chunk))]),
    ]))
}
