//! HTTP intake: the bodies log shippers send become rows, bad records are kept with the
//! reason, and refusals say what is wrong and lose nothing.

use super::*;

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
