//! A crowd on loopback: 2,000 idle connections (HTTP intake, forward intake, Flight SQL), 200
//! slow senders trickling a byte at a time, and a flood of Flight handshakes with wrong
//! passwords, all at once against one `gamelake serve`. A client already logged in, an HTTP
//! sender and a forward sender must each be answered within a second meanwhile, and the
//! server must stay under its memory limit. Bounded in count and time (about 15 s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use gamelake::serving::hash_password;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::support::{ServeProcess, TempLake};

const TOKEN: &str = "load-test-token-0123456789";

/// The server's memory bound (`[flight] server_memory_mb`), which its whole process must stay
/// under.
const MEMORY_MIB: u64 = 1024;

async fn flight_client(addr: SocketAddr) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// The median of three timed runs of `work`.
async fn median_of_three<F, Fut>(mut work: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        work().await;
        times.push(started.elapsed());
    }
    times.sort();
    times[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_of_idle_slow_and_flooding_clients_leaves_others_answered_within_a_second() {
    let lake = TempLake::new();
    lake.session()
        .await
        .sql(
            "CREATE TABLE game.players AS SELECT * FROM (VALUES (1, 'ana'), (2, 'bo')) v(id, name)",
        )
        .await
        .unwrap();
    let config = lake.path().join("gamelake.toml");
    let mut text = format!(
        "[flight]\nserver_memory_mb = {MEMORY_MIB}\n[intake]\ncommit_interval = \"200ms\"\n[[intake.tokens]]\nname = \"load\"\ntoken = \"{TOKEN}\"\n[[intake.tables]]\nname = \"logs.load\"\ntags = [\"load.**\"]\n"
    );
    for (name, role) in [("ana", "reader"), ("root", "admin")] {
        text.push_str(&format!(
            "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nrole = \"{role}\"\n",
            hash_password("pw").unwrap()
        ));
    }
    std::fs::write(&config, text).unwrap();
    let server = ServeProcess::spawn(
        &lake,
        &config,
        &[
            "--flight",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--forward",
            "127.0.0.1:0",
        ],
        &[],
    );
    let (flight, http, forward) = (
        server.flight_addr(),
        server.http_addr(),
        server.forward_addr(),
    );
    let pid = server.child.id();
    // The normal client logs in before the crowd arrives.
    let mut normal = flight_client(flight).await;
    normal.handshake("root", "pw").await.unwrap();

    // 2,000 idle connections: they connect and say nothing.
    let mut idle = Vec::new();
    for (addr, count) in [(http, 900), (forward, 500), (flight, 600)] {
        for _ in 0..count {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut crowd = Vec::new();
    // 200 slow senders: a byte every half second, of a request's headers or of a PING.
    for (addr, opening) in [
        (
            http,
            &b"POST /ingest/logs.load HTTP/1.1\r\nHost: x\r\nX-Slow: "[..],
        ),
        (forward, &b"\x96\xa4PING"[..]),
    ] {
        for _ in 0..100 {
            let stop = stop.clone();
            crowd.push(tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    return;
                };
                let _ = stream.write_all(opening).await;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if stream.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            }));
        }
    }
    // A handshake flood: wrong passwords for a real user, as fast as the server answers.
    for _ in 0..32 {
        let stop = stop.clone();
        crowd.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut client = flight_client(flight).await;
                let _ = client.handshake("ana", "wrong").await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Meanwhile: a query, an HTTP batch and a forward message, each answered within a second.
    let query = median_of_three(|| {
        let mut normal = normal.clone();
        async move {
            let info = normal
                .execute("SELECT count(*) FROM game.players".into(), None)
                .await
                .unwrap();
            let ticket = info.endpoint[0].ticket.clone().unwrap();
            let batches: Vec<_> = normal
                .do_get(ticket)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(batches[0].num_rows(), 1);
        }
    })
    .await;
    let client = reqwest::Client::new();
    let post = median_of_three(|| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("http://{http}/ingest/logs.load"))
                .bearer_auth(TOKEN)
                .body(r#"{"id": 1}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
    })
    .await;
    let sent = median_of_three(|| async move {
        tokio::task::spawn_blocking(move || {
            let mut stream = crate::intake::forward_connection(forward, TOKEN);
            let record = rmpv::Value::Map(vec![(rmpv::Value::from("id"), rmpv::Value::from(2))]);
            std::io::Write::write_all(
                &mut stream,
                &crate::intake::message("load.events", record, "c"),
            )
            .unwrap();
            let ack = rmpv::decode::read_value(&mut stream).unwrap();
            assert_eq!(ack["ack"].as_str(), Some("c"));
        })
        .await
        .unwrap();
    })
    .await;
    let (now, peak) = (
        crate::support::memory_mib(pid, "VmRSS:"),
        crate::support::memory_mib(pid, "VmHWM:"),
    );
    stop.store(true, Ordering::Relaxed);
    for task in crowd {
        let _ = task.await;
    }
    drop(idle);
    assert!(query < Duration::from_secs(1), "a query took {query:?}");
    assert!(post < Duration::from_secs(1), "an HTTP batch took {post:?}");
    assert!(
        sent < Duration::from_secs(1),
        "a forward message took {sent:?}"
    );
    assert!(
        peak < MEMORY_MIB,
        "the server held {now} MiB, at most {peak} MiB, over its limit of {MEMORY_MIB} MiB"
    );
}
