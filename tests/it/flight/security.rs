//! The holes a read of the Flight SQL server as an attacker would read it found, each closed at
//! its mechanism and each with a test here that fails when the protection is removed: writes
//! disguised as reads, updates and prepared statements outside the limits, unbounded
//! parameters, a client that stops reading, tokens of removed users, PostgreSQL's tables for
//! every reader, and logins that tell unknown names apart by their speed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use super::*;

/// Every file under a folder, with its size: the lake's whole state as a reader could change it.
fn listing(dir: &Path) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // The query log is the server's own write, not a reader's.
            if path.to_string_lossy().contains("query_log") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let size = std::fs::metadata(&path).unwrap().len();
                out.insert((path.to_string_lossy().into_owned(), size));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_cannot_write_through_any_statement_shape_or_entry_point() {
    let lake = lake_with_players().await;
    let server = Server::start(&lake, users(), Limits::default(), b"k").await;
    let mut ana = connect(server.addr, Some(("ana", "ana-pw"))).await;
    let before = listing(lake.path());
    let leak = std::env::temp_dir().join(format!("gamelake-leak-{}", uuid::Uuid::new_v4()));
    let leak = leak.to_string_lossy().into_owned();
    let shapes = [
        "SELECT * INTO game.stolen FROM game.players".to_string(),
        "EXPLAIN ANALYZE INSERT INTO game.players VALUES (9, 'x', 'cn', 1.0)".to_string(),
        "WITH x AS (SELECT 9 AS a) INSERT INTO game.players SELECT a, 'x', 'cn', 1.0 FROM x"
            .to_string(),
        format!("COPY (SELECT * FROM game.players) TO '{leak}.csv'"),
        format!("CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{leak}/'"),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "SELECT * FROM '/etc/hostname'".to_string(),
        "ANALYZE game.players".to_string(),
    ];
    for sql in &shapes {
        let refused = |how: &str, outcome: Result<(), String>| {
            let err = outcome.expect_err(&format!("{how}: {sql} was accepted"));
            // Refused for the role, or (a CTE around an INSERT) not something DataFusion plans
            // at all: either way nothing runs.
            assert!(
                err.contains("permission denied")
                    || err.contains("not found")
                    || err.contains("not implemented"),
                "{how}: {sql}: {err}"
            );
        };
        // GetFlightInfo (and DoGet, if a ticket came back).
        let info = ana
            .execute(sql.clone(), None)
            .await
            .map_err(|e| e.to_string());
        let got = match info {
            Ok(info) => fetch(&mut ana, info).await.map(|_| ()),
            Err(e) => Err(e),
        };
        refused("GetFlightInfo", got);
        // DoPut of an update.
        refused(
            "DoPut(update)",
            ana.execute_update(sql.clone(), None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
        // A prepared statement, executed as a query and as an update.
        let prepared = ana.prepare(sql.clone(), None).await;
        let outcome = match prepared {
            Ok(mut statement) => match statement.execute().await {
                Ok(info) => fetch(&mut ana, info).await.map(|_| ()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        refused("prepared query", outcome);
        let prepared = ana.prepare(sql.clone(), None).await;
        let outcome = match prepared {
            Ok(mut statement) => statement
                .execute_update()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        refused("prepared update", outcome);
    }
    assert_eq!(listing(lake.path()), before, "the lake changed");
    assert!(!Path::new(&format!("{leak}.csv")).exists());
    assert!(!Path::new(&leak).exists());
    // The same shapes, for an admin: they run (the protection is the role, not the text).
    let mut root = connect(server.addr, Some(("root", "root-pw"))).await;
    root.execute_update(
        "INSERT INTO game.players SELECT 9, 'x', 'cn', 1.0".into(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        render(
            &query(&mut ana, "SELECT count(*) FROM game.players")
                .await
                .unwrap()
        ),
        ["4"]
    );
    server.shutdown().await;
}

/// A query that keeps a core busy for several seconds.
const SLOW: &str = "SELECT count(*) FROM generate_series(1, 3000000000) AS t(v) WHERE v % 7 = 3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_prepared_statements_wait_for_a_slot_and_stop_at_the_timeout() {
    let lake = lake_with_players().await;
    let limits = Limits {
        max_concurrent_queries: 1,
        queue_timeout: Duration::from_millis(300),
        query_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let server = Server::start(&lake, users(), limits, b"k").await;
    let mut root = connect(server.addr, Some(("root", "root-pw"))).await;
    // An update past the query timeout is stopped, and writes nothing.
    let started = Instant::now();
    let err = root
        .execute_update(
            "INSERT INTO game.players SELECT v, 'x', 'cn', 1.0 FROM generate_series(1, 3000000000) AS t(v) WHERE v % 7 = 3".into(),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        render(
            &query(&mut root, "SELECT count(*) FROM game.players")
                .await
                .unwrap()
        ),
        ["3"]
    );
    // While a query holds the only slot, an update and a prepare wait at most the queue
    // timeout, then are refused as busy.
    let mut holder = connect(server.addr, Some(("root", "root-pw"))).await;
    let info = holder.execute(SLOW.into(), None).await.unwrap();
    let running = tokio::spawn(async move { fetch(&mut holder, info).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = root
        .execute_update(
            "INSERT INTO game.players VALUES (5, 'e', 'eu', 1.0)".into(),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("busy"), "{err}");
    let err = root
        .prepare("SELECT * FROM game.players".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("busy"), "{err}");
    let _ = running.await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_slot_at_the_timeout() {
    let lake = lake_with_players().await;
    let limits = Limits {
        max_concurrent_queries: 1,
        queue_timeout: Duration::from_secs(10),
        query_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let server = Server::start(&lake, users(), limits, b"k").await;
    let mut ana = connect(server.addr, Some(("ana", "ana-pw"))).await;
    // A large result: the client reads one batch, then keeps the stream open without reading.
    let info = ana
        .execute(
            "SELECT v FROM generate_series(1, 100000000) AS t(v)".into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stalled = ana.do_get(ticket).await.unwrap();
    stalled.try_next().await.unwrap();
    // Another client is admitted once the stalled query's timeout has passed, not never.
    let mut bo = connect(server.addr, Some(("bo", "bo-pw"))).await;
    let started = Instant::now();
    let answer = query(&mut bo, "SELECT count(*) FROM game.players")
        .await
        .unwrap();
    assert_eq!(render(&answer), ["3"]);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "waited {:?} for the stalled query's slot",
        started.elapsed()
    );
    drop(stalled);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_parameters_are_bounded_and_handles_belong_to_their_user() {
    use arrow_flight::sql::{
        ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
        ActionCreatePreparedStatementResult, Any, ProstMessageExt,
    };
    use datafusion::arrow::array::StringArray;
    let lake = lake_with_players().await;
    let server = Server::start(&lake, users(), Limits::default(), b"k").await;
    let mut ana = connect(server.addr, Some(("ana", "ana-pw"))).await;
    let mut statement = ana
        .prepare(
            "SELECT count(*) FROM game.players WHERE name = $1".into(),
            None,
        )
        .await
        .unwrap();
    // One value of 2 MiB: more than a row of parameters may send; refused while reading.
    let schema = Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)]));
    let big = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec!["x".repeat(2 << 20)]))],
    )
    .unwrap();
    statement.set_parameters(big).unwrap();
    let err = statement.execute().await.unwrap_err().to_string();
    assert!(err.contains("parameters larger than"), "{err}");
    let one = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["ana"]))]).unwrap();
    statement.set_parameters(one).unwrap();
    let info = statement.execute().await.unwrap();
    assert_eq!(render(&fetch(&mut ana, info).await.unwrap()), ["1"]);
    // Another reader cannot close ana's prepared statement.
    let create = Action {
        r#type: "CreatePreparedStatement".into(),
        body: ActionCreatePreparedStatementRequest {
            query: "SELECT 1".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec()
        .into(),
    };
    let mut created = ana.do_action(create).await.unwrap();
    let created = created.message().await.unwrap().unwrap();
    let created: ActionCreatePreparedStatementResult = Any::decode(&*created.body)
        .unwrap()
        .unpack()
        .unwrap()
        .unwrap();
    let handle = created.prepared_statement_handle;
    let mut bo = connect(server.addr, Some(("bo", "bo-pw"))).await;
    let close = Action {
        r#type: "ClosePreparedStatement".into(),
        body: ActionClosePreparedStatementRequest {
            prepared_statement_handle: handle,
        }
        .as_any()
        .encode_to_vec()
        .into(),
    };
    let err = bo.do_action(close).await.unwrap_err().to_string();
    assert!(err.contains("issued to user ana"), "{err}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_users_token_stops_working_and_a_new_role_applies_at_once() {
    let lake = lake_with_players().await;
    let directory = Arc::new(Directory::new(users()).unwrap());
    let server = Server::with_directory(&lake, directory.clone(), Limits::default(), b"k").await;
    let mut ana = connect(server.addr, Some(("ana", "ana-pw"))).await;
    let mut bo = connect(server.addr, Some(("bo", "bo-pw"))).await;
    query(&mut ana, "SELECT 1").await.unwrap();
    // The users file changes: ana is gone, bo becomes an admin.
    let mut now = users();
    now.retain(|u| u.name != "ana");
    for user in &mut now {
        if user.name == "bo" {
            user.role = Role::Admin;
        }
    }
    directory.replace(now).unwrap();
    let err = query(&mut ana, "SELECT 1").await.unwrap_err();
    assert!(err.contains("no longer allowed"), "{err}");
    bo.execute_update("CREATE TABLE game.by_bo AS SELECT 1 AS a".into(), None)
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_take_as_long_to_refuse_as_wrong_passwords() {
    let lake = lake_with_players().await;
    let server = Server::start(&lake, users(), Limits::default(), b"k").await;
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..7 {
        for (name, times) in [("ana", &mut known), ("nobody", &mut unknown)] {
            let channel = Channel::from_shared(format!("http://{}", server.addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = FlightSqlServiceClient::new(channel);
            let started = Instant::now();
            let err = client
                .handshake(name, "wrong")
                .await
                .unwrap_err()
                .to_string();
            times.push(started.elapsed());
            assert!(err.contains("wrong user name or password"), "{err}");
        }
    }
    let (known, unknown) = (median(known), median(unknown));
    // Both do one argon2 check; without the decoy an unknown name is refused at once.
    assert!(
        unknown * 3 > known,
        "unknown names answer in {unknown:?}, wrong passwords in {known:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_are_hidden_from_readers_unless_granted() {
    let db = crate::postgres::TestDb::new().await;
    let client = gamelake::sources::postgres::connect(&db.url())
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE secrets (id int, card text); INSERT INTO secrets VALUES (1, '4111')",
        )
        .await
        .unwrap();
    let lake = lake_with_players().await;
    let config = lake.path().join("gamelake.toml");
    let mut text = String::new();
    for (name, role, grant) in [
        ("ana", "reader", false),
        ("pg_reader", "reader", true),
        ("root", "admin", false),
    ] {
        text.push_str(&format!(
            "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nrole = \"{role}\"\npostgres = {grant}\n",
            hash_password("pw").unwrap()
        ));
    }
    std::fs::write(&config, text).unwrap();
    let server = ServeProcess::spawn(
        &lake,
        &config,
        &["--flight", "127.0.0.1:0", "--pg-url", &db.url()],
        &[],
    );
    let addr = server.flight_addr();
    let mut ana = connect(addr, Some(("ana", "pw"))).await;
    let err = query(&mut ana, "SELECT * FROM pg.public.secrets")
        .await
        .unwrap_err();
    assert!(
        err.contains("permission denied") && err.contains("postgres = true"),
        "{err}"
    );
    // Not through a view either, and not listed.
    let catalogs = ana.get_catalogs().await.unwrap();
    let listed = render(&fetch(&mut ana, catalogs).await.unwrap());
    assert!(!listed.iter().any(|c| c == "pg"), "{listed:?}");
    for user in ["pg_reader", "root"] {
        let mut client = connect(addr, Some((user, "pw"))).await;
        let rows = query(&mut client, "SELECT card FROM pg.public.secrets")
            .await
            .unwrap();
        assert_eq!(render(&rows), ["4111"], "{user}");
    }
}
