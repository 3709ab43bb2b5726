//! The log intake as an attacker would try it, each protection with a test that fails when it
//! is removed: decompression bombs (HTTP and forward), idempotency keys that could corrupt the
//! write-ahead log, bodies read before the sender is known, peers that send slowly or hold
//! connections, one sender's chunk ids suppressing another's, and field names that would stop
//! the committer.

use std::io::Read;
use std::net::TcpStream;

use rmpv::Value;

use super::*;

/// A gzip stream that inflates to `mib` MiB of zeros from about a thousandth of that: one
/// member of 64 MiB, repeated (readers inflate concatenated members one after another).
fn bomb(mib: usize) -> Vec<u8> {
    let member = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 64 << 20]).unwrap();
        gz.finish().unwrap()
    };
    member.repeat(mib / 64)
}

/// Whether the peer closed the connection (a read gives nothing) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A config whose forward tables take tags `game.**`, with two senders allowed on them.
fn forward_and_http_config(lake: &TempLake, extra: &str) -> PathBuf {
    config(
        lake,
        &format!(
            "{extra}\n[[intake.tokens]]\nname = \"eu\"\ntoken = \"eu-game-servers-0123456789\"\ntables = [\"logs.*\"]\n[[intake.tables]]\nname = \"logs.game\"\ntags = [\"game.**\"]\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_stop_at_the_body_limit_while_inflating() {
    let lake = TempLake::new();
    let config = config(&lake, "max_body_mb = 4");
    let server = ServeProcess::spawn(
        &lake,
        &config,
        &["--http", "127.0.0.1:0", "--forward", "127.0.0.1:0"],
        &[],
    );
    let pid = server.child.id();
    let baseline = crate::support::memory_mib(pid, "VmHWM:");
    // 1 GiB once inflated, 1 MiB on the wire.
    let body = bomb(1024);
    let client = reqwest::Client::new();
    let (status, text) = post(
        &client,
        server.http_addr(),
        "logs.events",
        Some(TOKEN),
        body.clone(),
        true,
    )
    .await;
    assert_eq!(status, 413, "{text}");
    let mut stream = forward_connection(server.forward_addr(), TOKEN);
    let packed = Value::Array(vec![
        Value::from("game.events"),
        Value::Binary(body),
        Value::Map(vec![
            (Value::from("compressed"), Value::from("gzip")),
            (Value::from("chunk"), Value::from("bomb")),
        ]),
    ]);
    stream.write_all(&msgpack(&packed)).unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(20)),
        "no ack, and closed"
    );
    let peak = crate::support::memory_mib(pid, "VmHWM:");
    assert!(
        peak < baseline + 256,
        "the server's memory peaked at {peak} MiB (from {baseline} MiB) on a 1 GiB bomb"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_bounded_and_a_bad_one_never_costs_others_their_records() {
    let lake = TempLake::new();
    let config = forward_and_http_config(&lake, "");
    let server = ServeProcess::spawn(
        &lake,
        &config,
        &["--http", "127.0.0.1:0", "--forward", "127.0.0.1:0"],
        &[],
    );
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{}/ingest/logs.stream", server.http_addr()))
        .bearer_auth(TOKEN)
        .header("idempotency-key", "k".repeat(200))
        .body(r#"{"id": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // A chunk id of 80,000 bytes of non-ASCII text: refused, not stored (its length would not
    // fit the log's format, and a cut would have cost the records after it).
    let mut bad = forward_connection(server.forward_addr(), TOKEN);
    let record = Value::Map(vec![(Value::from("id"), Value::from(1))]);
    bad.write_all(&message("game.events", record, &"é".repeat(40_000)))
        .unwrap();
    assert!(closed_within(&mut bad, Duration::from_secs(10)));
    let mut good = forward_connection(server.forward_addr(), TOKEN);
    let record = Value::Map(vec![(Value::from("id"), Value::from(2))]);
    good.write_all(&message("game.events", record, "c-2"))
        .unwrap();
    let ack = rmpv::decode::read_value(&mut good).unwrap();
    assert_eq!(ack["ack"].as_str(), Some("c-2"));
    wait_for(&lake, "SELECT CAST(id AS VARCHAR) FROM logs.game", &["2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_senders_chunk_ids_do_not_suppress_anothers() {
    let lake = TempLake::new();
    let config = forward_and_http_config(&lake, "");
    let server = ServeProcess::spawn(&lake, &config, &["--forward", "127.0.0.1:0"], &[]);
    for (key, id) in [(TOKEN, 1), ("eu-game-servers-0123456789", 2)] {
        let mut stream = forward_connection(server.forward_addr(), key);
        let record = Value::Map(vec![(Value::from("id"), Value::from(id))]);
        stream
            .write_all(&message("game.events", record, "same-chunk-id"))
            .unwrap();
        let ack = rmpv::decode::read_value(&mut stream).unwrap();
        assert_eq!(ack["ack"].as_str(), Some("same-chunk-id"));
    }
    wait_for(
        &lake,
        "SELECT CAST(id AS VARCHAR) AS i FROM logs.game ORDER BY i",
        &["1", "2"],
    )
    .await;
}

/// Sends raw bytes and returns the first line the server answers within `within` (empty when
/// it closed without answering).
fn first_line(addr: SocketAddr, request: &[u8], within: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.contains(&b'\n') {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_senders_are_refused_before_their_body_and_slow_peers_are_cut_off() {
    let lake = TempLake::new();
    let config = forward_and_http_config(&lake, "read_timeout = \"2s\"\nmax_connections = 3");
    let server = ServeProcess::spawn(
        &lake,
        &config,
        &["--http", "127.0.0.1:0", "--forward", "127.0.0.1:0"],
        &[],
    );
    let http = server.http_addr();
    // A body of 100 MB announced and never sent: a wrong token is answered at once.
    let announced = b"POST /ingest/logs.events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 100000000\r\n\r\n";
    let line = first_line(http, announced, Duration::from_secs(3));
    assert!(line.contains("401"), "{line:?}");
    // The right token, and a body that never comes: 408 after the read timeout.
    let stalled = format!(
        "POST /ingest/logs.stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{\"id\":"
    );
    let line = first_line(http, stalled.as_bytes(), Duration::from_secs(6));
    assert!(line.contains("408"), "{line:?}");
    // Headers a byte at a time: the connection is closed once the read timeout has passed.
    let mut slow = TcpStream::connect(http).unwrap();
    slow.write_all(b"POST /ingest/logs.stream HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut cut = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        if slow.write_all(b"X").is_err() {
            cut = true;
            break;
        }
    }
    let cut = cut || closed_within(&mut slow, Duration::from_millis(100));
    assert!(
        cut && started.elapsed() < Duration::from_secs(8),
        "slow headers were not cut off"
    );
    // Forward: three connections at most; a fourth is closed at once. A peer that never
    // answers HELO is closed after the read timeout.
    let forward = server.forward_addr();
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(forward).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = TcpStream::connect(forward).unwrap();
    assert!(closed_within(&mut fourth, Duration::from_secs(1)));
    let started = Instant::now();
    assert!(closed_within(&mut idle[0], Duration::from_secs(6)));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_names_delta_refuses_go_to_rejected_and_later_records_commit() {
    let lake = TempLake::new();
    let config = config(&lake, "");
    let server = start(&lake, &config);
    let client = reqwest::Client::new();
    for body in [
        r#"{"id": 1, "bad name": 2}"#,
        r#"{"id": 2, "Id": 3}"#,
        r#"{"id": 3}"#,
    ] {
        let (status, text) = post(
            &client,
            server.http_addr(),
            "logs.stream",
            Some(TOKEN),
            body.into(),
            false,
        )
        .await;
        assert_eq!(status, 200, "{text}");
    }
    wait_for(&lake, "SELECT CAST(id AS VARCHAR) FROM logs.stream", &["3"]).await;
    wait_for(
        &lake,
        "SELECT count(*) FROM logs._rejected WHERE reason LIKE '%cannot be a column%' OR reason LIKE '%only in case%'",
        &["2"],
    )
    .await;
}

/// A tmpfs of a few MiB mounted for one test (root only, as CI runs); unmounted on drop.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(dir: &std::path::Path, mib: usize) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount (this test needs root to mount a tmpfs)");
        assert!(
            status.success(),
            "mount -t tmpfs failed: this test needs root"
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_loses_no_acknowledged_record() {
    let lake = TempLake::new();
    let wal = lake.path().join("wal");
    let _disk = TinyDisk::mount(&wal, 4);
    let config = config(
        &lake,
        &format!("wal_dir = \"{}\"\ncommit_interval = \"2s\"", wal.display()),
    );
    let server = start(&lake, &config);
    let client = reqwest::Client::new();
    // Batches of ~200 KB each until the log's disk is full.
    let mut acknowledged = 0u64;
    let mut refused = 0;
    for batch in 0..200u64 {
        let body: String = (0..2_000)
            .map(|i| {
                format!(
                    "{{\"id\":{},\"pad\":\"{}\"}}\n",
                    batch * 2_000 + i,
                    "x".repeat(80)
                )
            })
            .collect();
        let (status, text) = post(
            &client,
            server.http_addr(),
            "logs.stream",
            Some(TOKEN),
            body.into(),
            false,
        )
        .await;
        match status {
            200 => acknowledged += 2_000,
            503 => {
                refused += 1;
                assert!(text.contains("durably"), "{text}");
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("{other}: {text}"),
        }
    }
    assert!(refused > 0, "the disk never filled");
    assert!(acknowledged > 0);
    // Every acknowledged record reaches the lake once; the committed segments free the disk.
    wait_for(
        &lake,
        "SELECT count(*) = count(DISTINCT id) AND count(*) >= 1 FROM logs.stream",
        &["true"],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let session = lake.session().await;
        let n: u64 = rows(&session, "SELECT count(*) FROM logs.stream").await[0]
            .parse()
            .unwrap();
        if n >= acknowledged {
            assert_eq!(
                n, acknowledged,
                "records committed that were never acknowledged"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {acknowledged} acknowledged records in the lake"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, text) = post(
        &client,
        server.http_addr(),
        "logs.stream",
        Some(TOKEN),
        br#"{"id": -1}"#.to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 200, "the disk has room again: {text}");
}
