//! Bounds over Flight SQL: a query past its limits fails alone, a crowd of cancelled queries
//! leaves the server healthy, and the streaming benchmark runs at a tiny scale.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_fail_one_query_and_the_server_keeps_serving() {
    let lake = lake_with_players().await;
    let slow = "SELECT sum(a.v * b.v) AS s FROM generate_series(1, 100000) a(v) CROSS JOIN generate_series(1, 100000) b(v)";

    // Timeout (a server of its own: on a busy machine a 2 s bound would also cut the other
    // checks short).
    let hasty = Server::start(
        &lake,
        users(),
        Limits {
            query_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        b"k",
    )
    .await;
    let mut on_hasty = connect(hasty.addr, Some(("ana", "ana-pw"))).await;
    let err = query(&mut on_hasty, slow).await.unwrap_err();
    assert!(err.contains("timeout of 2s"), "{err}");
    let answer = query(&mut on_hasty, "SELECT count(*) AS n FROM game.players")
        .await
        .unwrap();
    assert_eq!(render(&answer), ["3"]);
    hasty.shutdown().await;

    let limits = Limits {
        max_concurrent_queries: 1,
        queue_timeout: Duration::from_millis(300),
        query_memory: Some(4 << 20),
        server_memory: Some(64 << 20),
        ..Limits::default()
    };
    let server = Server::start(&lake, users(), limits, b"k").await;
    let mut ana = connect(server.addr, Some(("ana", "ana-pw"))).await;

    // Memory: the build side of this join needs far more than 4 MiB.
    let err = query(
        &mut ana,
        "SELECT count(*) FROM generate_series(1, 3000000) a(v) JOIN generate_series(1, 3000000) b(v) ON a.v = b.v",
    )
    .await
    .unwrap_err();
    assert!(err.contains("memory limit of 4 MiB"), "{err}");

    // Concurrency: a running query holds the only slot; the next one waits, then is refused.
    let info = ana.execute(slow.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let held = ana.do_get(ticket).await.unwrap();
    let err = query(&mut ana, "SELECT 1").await.unwrap_err();
    assert!(err.contains("server busy"), "{err}");
    drop(held);
    // The slot frees once the server sees the client go away.
    let mut freed = false;
    for _ in 0..100 {
        if query(&mut ana, "SELECT 1").await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the slot of a dropped query was never released");

    // Cancellation: CancelFlightInfo stops a running query.
    let info = ana.execute(slow.into(), None).await.unwrap();
    let mut reader = ana.clone();
    let running_info = info.clone();
    let running = tokio::spawn(async move { fetch(&mut reader, running_info).await });
    let mut status = CancelStatus::Unspecified as i32;
    // Until the query is admitted and registered (seconds on a loaded machine).
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let action = Action {
            r#type: "CancelFlightInfo".into(),
            body: CancelFlightInfoRequest {
                info: Some(info.clone()),
            }
            .encode_to_vec()
            .into(),
        };
        let mut results = ana.do_action(action).await.unwrap();
        let result = results.message().await.unwrap().unwrap();
        status = CancelFlightInfoResult::decode(result.body).unwrap().status;
        if status == CancelStatus::Cancelled as i32 {
            break;
        }
    }
    assert_eq!(status, CancelStatus::Cancelled as i32);
    let err = running.await.unwrap().unwrap_err();
    assert!(err.contains("cancelled"), "{err}");

    // And the server still answers.
    let answer = query(&mut ana, "SELECT count(*) AS n FROM game.players")
        .await
        .unwrap();
    assert_eq!(render(&answer), ["3"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_queries_cancelled_mid_stream_leave_the_server_healthy() {
    let lake = lake_with_players().await;
    let server = start_flight(
        &lake,
        "load-test-secret-0123456789abcdef0123",
        "[flight]\nmax_concurrent_queries = 100\n",
    );
    let pid = server.child.id();
    let client = connect(server.flight_addr(), Some(("ana", "ana-pw"))).await;
    let token = client.token().unwrap().clone();
    let sql = "SELECT v, v * 2 AS w, 'row ' || v AS label FROM generate_series(1, 50000000) t(v)";

    // The first burst warms the allocator's arenas and the server's caches; the baseline is
    // taken after it. A leak would show as growth after the second.
    let first_peak = burst(&server, &token, sql).await;
    settle().await;
    let baseline = crate::support::memory_mib(pid, "VmRSS:");
    let second_peak = burst(&server, &token, sql).await;
    let mut after = crate::support::memory_mib(pid, "VmRSS:");
    for _ in 0..50 {
        if after <= baseline + 32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = crate::support::memory_mib(pid, "VmRSS:");
    }
    println!(
        "rss: first burst {first_peak} MiB, baseline {baseline} MiB, second burst {second_peak} MiB, after {after} MiB"
    );
    assert!(
        after <= baseline + 32,
        "memory did not come back: baseline {baseline} MiB, after {after} MiB"
    );
    let mut c = client.clone();
    let batches = query(&mut c, "SELECT count(*) AS n FROM game.players")
        .await
        .unwrap();
    assert_eq!(render(&batches), ["3"]);
}

/// 100 clients at once, each with its own connection (as 100 BI users would be; on one shared
/// HTTP/2 connection, unread streams would hold its flow-control window and stall the cancel
/// calls), each reading three batches; then half cancel with CancelFlightInfo and half hang
/// up. Returns the server's highest resident memory seen meanwhile (MiB).
async fn burst(server: &ServeProcess, token: &str, sql: &'static str) -> u64 {
    use futures::StreamExt;
    let (addr, pid) = (server.flight_addr(), server.child.id());
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let token = token.to_string();
            tokio::spawn(async move {
                let mut c = connect(addr, None).await;
                c.set_token(token);
                let info = c.execute(sql.into(), None).await.unwrap();
                let mut stream = c
                    .do_get(info.endpoint[0].ticket.clone().unwrap())
                    .await
                    .unwrap();
                for _ in 0..3 {
                    stream.next().await.unwrap().unwrap();
                }
                if i % 2 == 0 {
                    let action = Action {
                        r#type: "CancelFlightInfo".into(),
                        body: CancelFlightInfoRequest { info: Some(info) }
                            .encode_to_vec()
                            .into(),
                    };
                    let mut results = c.do_action(action).await.unwrap();
                    let result = results.message().await.unwrap().unwrap();
                    let status = CancelFlightInfoResult::decode(result.body).unwrap().status;
                    assert_eq!(status, CancelStatus::Cancelled as i32);
                }
                drop(stream);
            })
        })
        .collect();
    let mut peak = 0;
    for task in tasks {
        while !task.is_finished() {
            peak = peak.max(crate::support::memory_mib(pid, "VmRSS:"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.await.unwrap();
    }
    peak
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[test]
fn streaming_benchmark_runs_at_a_tiny_scale() {
    let text = crate::support::run_tiny_benchmark("flight_stream.py", &["--rows", "2000"]);
    for row in [
        "gamelake Flight SQL -> ADBC",
        "PostgreSQL SELECT -> psycopg",
    ] {
        assert!(text.contains(row), "{row} missing from:\n{text}");
    }
}
