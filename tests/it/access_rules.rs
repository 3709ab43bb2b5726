//! Access rules (`serve --access FILE`): a regional analyst reads only their region's rows,
//! with contact columns masked or hidden, through every shape of SQL (CTEs, subqueries, joins,
//! UNION, an admin's view, time travel, `$history`, live `pg.*` tables, prepared statements)
//! and over both protocols; a table no rule allows is refused; admins see everything; the
//! query log records the rule; a changed rules file applies without a restart, a broken one
//! leaves the rules before it.

use std::time::{Duration, Instant};

use gamelake::lake::TableRef;
use gamelake::serving::hash_password;
use gamelake::serving::scram::Verifier;
use gamelake::sources::postgres::connect as connect_postgres;

use crate::postgres::TestDb;
use crate::support::{ServeProcess, TempLake, metrics_of, render, sample};

const RULES: &str = r#"
[[rules]]
group = "analysts"
tables = ["game.players", "game.all_players"]
filter = "region = user_attribute('region')"
mask = { email = "left(email, 2) || '***'" }
hide = ["phone"]

[[rules]]
group = "analysts"
tables = ["game.purchases"]

[[rules]]
group = "analysts"
tables = ["pg.*.customers"]
filter = "region = user_attribute('region')"
mask = { email = "'***'" }
"#;

/// A lake whose `game.players` has two versions (v1: players 1-3, v2 adds player 4), and an
/// admin's saved view over it.
async fn regional_lake() -> TempLake {
    let lake = TempLake::new();
    let session = lake.session().await;
    session
        .sql(
            "CREATE TABLE game.players AS SELECT * FROM (VALUES \
             (1, 'bj', 'ann@bj.example', '+86 10 1'), \
             (2, 'sh', 'bo@sh.example', '+86 21 2'), \
             (3, 'bj', 'cy@bj.example', NULL)) v(player_id, region, email, phone)",
        )
        .await
        .unwrap();
    session
        .sql("INSERT INTO game.players VALUES (4, 'gz', 'di@gz.example', '+86 20 4')")
        .await
        .unwrap();
    session
        .sql(
            "CREATE TABLE game.purchases AS SELECT * FROM (VALUES \
             (1, 10), (1, 5), (2, 7), (3, 1), (4, 100)) v(player_id, amount)",
        )
        .await
        .unwrap();
    session
        .sql("CREATE TABLE game.secret AS SELECT 42 AS answer")
        .await
        .unwrap();
    session
        .lake()
        .save_view(
            &TableRef::parse("game.all_players").unwrap(),
            "SELECT * FROM game.players",
        )
        .await
        .unwrap();
    lake
}

/// A PostgreSQL database of its own (dropped with it) with a `customers` table.
async fn postgres_customers() -> TestDb {
    let db = TestDb::new().await;
    connect_postgres(&db.url())
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, region text, email text); \
             INSERT INTO customers VALUES (1, 'bj', 'x@bj'), (2, 'sh', 'y@sh'), (3, 'bj', 'z@bj')",
        )
        .await
        .unwrap();
    db
}

fn config() -> String {
    let mut config = String::new();
    for (name, role, extra) in [
        (
            "ana",
            "reader",
            "groups = [\"analysts\"]\nattributes = { region = \"bj\" }\npostgres = true\n",
        ),
        ("nobody", "reader", ""),
        ("root", "admin", ""),
    ] {
        config.push_str(&format!(
            "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nscram_sha256 = \"{}\"\nrole = \"{role}\"\n{extra}",
            hash_password(&format!("{name}-pw")).unwrap(),
            Verifier::new(&format!("{name}-pw"))
        ));
    }
    config
}

/// `gamelake serve --pg 127.0.0.1:0 --access access.toml` with `rules` and the users of
/// [`config`], plus `flags` and `env`; the server and the rules file's path.
fn serve_with_rules(
    lake: &TempLake,
    rules: &str,
    flags: &[&str],
    env: &[(&str, &str)],
) -> (ServeProcess, std::path::PathBuf) {
    let rules_path = lake.path().join("access.toml");
    std::fs::write(&rules_path, rules).unwrap();
    let config_path = lake.path().join("gamelake.toml");
    std::fs::write(&config_path, config()).unwrap();
    let rules_arg = rules_path.display().to_string();
    let mut args = vec!["--pg", "127.0.0.1:0", "--access", &rules_arg];
    args.extend_from_slice(flags);
    (
        ServeProcess::spawn(lake, &config_path, &args, env),
        rules_path,
    )
}

async fn connect(server: &ServeProcess, user: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={user} password={user}-pw dbname=gamelake",
            server.pg_addr().port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
    tokio::spawn(connection);
    client
}

/// A query's rows in the simple protocol, columns joined by `|`, NULL as `NULL`.
async fn rows(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>, String> {
    let messages = client.simple_query(sql).await.map_err(|e| {
        e.as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_string())
    })?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect())
}

/// A query of `user`'s, on a connection of its own, that runs until a timeout stops it.
async fn endless_query(
    server: &ServeProcess,
    user: &str,
) -> tokio::task::JoinHandle<Result<Vec<String>, String>> {
    let client = connect(server, user).await;
    tokio::spawn(async move {
        rows(
            &client,
            "SELECT count(*) FROM generate_series(1, 100000000000)",
        )
        .await
    })
}

async fn ok(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn refused(client: &tokio_postgres::Client, sql: &str) -> String {
    match rows(client, sql).await {
        Ok(rows) => panic!(
            "{sql} returned {} rows: {:?}",
            rows.len(),
            &rows[..rows.len().min(5)]
        ),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regional_analyst_reads_only_their_rows_through_every_shape_of_sql() {
    let lake = regional_lake().await;
    let pg = postgres_customers().await;
    let (server, rules_path) = serve_with_rules(
        &lake,
        RULES,
        &["--flight", "127.0.0.1:0"],
        &[("GAMELAKE_PG_URL", &pg.url())],
    );
    let ana = connect(&server, "ana").await;
    let root = connect(&server, "root").await;

    // The rows of her region, the email masked, the phone hidden.
    let own = vec!["1|bj|an***|NULL".to_string(), "3|bj|cy***|NULL".to_string()];
    let select = "SELECT player_id, region, email, phone FROM game.players ORDER BY player_id";
    assert_eq!(ok(&ana, select).await, own);
    // The same through each shape of SQL.
    for (sql, expected) in [
        (
            "WITH p AS (SELECT * FROM game.players) SELECT player_id, region, email, phone FROM p ORDER BY 1",
            own.clone(),
        ),
        (
            "SELECT player_id, region, email, phone FROM (SELECT * FROM game.players WHERE player_id > 0) s ORDER BY 1",
            own.clone(),
        ),
        (
            "SELECT player_id, region, email, phone FROM game.all_players ORDER BY 1",
            own.clone(),
        ),
        (
            "SELECT sum(amount) FROM game.purchases WHERE player_id IN (SELECT player_id FROM game.players)",
            vec!["16".to_string()],
        ),
        (
            "SELECT count(*), sum(u.amount) FROM game.purchases u JOIN game.players p ON u.player_id = p.player_id",
            vec!["3|16".to_string()],
        ),
        (
            "SELECT email FROM game.players UNION SELECT email FROM game.all_players ORDER BY 1",
            vec!["an***".to_string(), "cy***".to_string()],
        ),
        (
            "SELECT player_id, email FROM game.\"players@v1\" ORDER BY 1",
            vec!["1|an***".to_string(), "3|cy***".to_string()],
        ),
        (
            // A predicate over a masked or hidden column sees the mask, never the value.
            "SELECT count(*) FROM game.players WHERE email = 'ann@bj.example' OR phone IS NOT NULL",
            vec!["0".to_string()],
        ),
        (
            "SELECT (SELECT count(*) FROM game.players), (SELECT max(player_id) FROM game.players)",
            vec!["2|3".to_string()],
        ),
        (
            "SELECT id, region, email FROM pg.public.customers ORDER BY id",
            vec!["1|bj|***".to_string(), "3|bj|***".to_string()],
        ),
    ] {
        assert_eq!(ok(&ana, sql).await, expected, "{sql}");
    }
    // Catalog browsing shows what a rule lets ana read, and nothing else: psql lists and
    // describes game.players, and neither lists nor describes game.secret.
    let psql = |commands: &[&str]| {
        let mut psql = std::process::Command::new("psql");
        psql.args(["-X", "-A", "-d"]).arg(format!(
            "host=127.0.0.1 port={} user=ana dbname=gamelake sslmode=disable",
            server.pg_addr().port()
        ));
        for command in commands {
            psql.args(["-c", command]);
        }
        let out = psql
            .env("PGPASSWORD", "ana-pw")
            .output()
            .expect("psql must be installed (Debian package postgresql-client)");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok_listed, listed) = psql(&["\\dt game.*", "\\d game.players"]);
    assert!(
        ok_listed && listed.contains("players") && listed.contains("email"),
        "{listed}"
    );
    assert!(!listed.contains("secret"), "{listed}");
    let (_, described) = psql(&["\\d game.secret"]);
    assert!(
        described.contains("Did not find any relation") && !described.contains("answer"),
        "{described}"
    );
    for sql in [
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'game' ORDER BY 1",
        "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = 'game' ORDER BY 1",
        "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'game' ORDER BY 1",
        "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
         ON n.oid = c.relnamespace WHERE n.nspname = 'game' ORDER BY 1",
        "SELECT DISTINCT c.relname FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE a.attname = 'answer'",
    ] {
        let names = ok(&ana, sql).await;
        assert!(
            !names.iter().any(|n| n.contains("secret")),
            "{sql}: {names:?}"
        );
        // An admin sees everything: the same query lists game.secret.
        let all = ok(&root, sql).await;
        assert!(all.iter().any(|n| n == "secret"), "{sql}: {all:?}");
        if !sql.contains("answer") {
            assert!(names.iter().any(|n| n == "players"), "{sql}: {names:?}");
        }
    }
    // A prepared statement in the extended protocol, with a parameter.
    let prepared = ana
        .prepare("SELECT email FROM game.players WHERE player_id = $1")
        .await
        .unwrap();
    let emails = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    assert_eq!(
        emails(ana.query(&prepared, &[&3i64]).await.unwrap()),
        ["cy***"]
    );
    assert!(ana.query(&prepared, &[&2i64]).await.unwrap().is_empty());

    // What the rules do not allow is refused, naming why.
    let secret = refused(&ana, "SELECT * FROM game.secret").await;
    assert!(
        secret.contains("no rule of") && secret.contains("ana") && secret.contains("game.secret"),
        "{secret}"
    );
    let joined = refused(
        &ana,
        "SELECT * FROM game.players p JOIN game.secret s ON true",
    )
    .await;
    assert!(joined.contains("game.secret"), "{joined}");
    let described = refused(&ana, "DESCRIBE game.secret").await;
    assert!(described.contains("game.secret"), "{described}");
    let history = refused(&ana, "SELECT * FROM game.\"players$history\"").await;
    assert!(
        history.contains("access.toml rule 1") && history.contains("$history"),
        "{history}"
    );
    let analyze = refused(&ana, "EXPLAIN ANALYZE SELECT * FROM game.players").await;
    assert!(analyze.contains("EXPLAIN ANALYZE"), "{analyze}");
    // A reader in no group matches no rule: nothing is readable.
    let nobody = connect(&server, "nobody").await;
    let none = refused(&nobody, "SELECT count(*) FROM game.purchases").await;
    assert!(none.contains("no rule of"), "{none}");

    // Flight SQL applies the same rules.
    let flight = crate::flight::connect(server.flight_addr(), Some(("ana", "ana-pw"))).await;
    let mut flight = flight;
    let batches = crate::flight::query(&mut flight, select).await.unwrap();
    let text = render(&batches).join("\n");
    assert!(
        text.contains("an***")
            && text.contains("cy***")
            && !text.contains("bo")
            && !text.contains("+86"),
        "{text}"
    );
    // GetTables lists only what a rule lets ana read: not game.secret.
    let info = flight
        .get_tables(arrow_flight::sql::CommandGetTables {
            db_schema_filter_pattern: Some("game".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let listed = render(&crate::flight::fetch(&mut flight, info).await.unwrap());
    assert!(
        listed.iter().any(|t| t.contains("|players|"))
            && !listed.iter().any(|t| t.contains("secret")),
        "{listed:?}"
    );

    // Admins see everything; the query log names the rule applied to ana's query.
    assert_eq!(
        ok(&root, "SELECT count(*), count(phone) FROM game.players").await,
        ["4|3"]
    );
    let logged = wait_for(|| async {
        // The log is appended within a second or so; until then it may not exist.
        let logged = rows(
            &root,
            "SELECT access FROM system.query_log WHERE \"user\" = 'ana' AND sql LIKE 'SELECT player_id, region, email, phone FROM game.players%'",
        )
        .await
        .unwrap_or_default();
        (!logged.is_empty()).then_some(logged)
    })
    .await;
    assert!(
        logged[0].contains(
            "gamelake.game.players: access.toml rule 1 (line 2) (filter, mask email, hide phone)"
        ),
        "{logged:?}"
    );

    // A changed file applies within seconds, without a restart.
    std::fs::write(
        &rules_path,
        RULES.replace("user_attribute('region')", "'gz'"),
    )
    .unwrap();
    let changed = wait_for(|| async {
        let now = ok(&ana, "SELECT player_id FROM game.players").await;
        (now == ["4"]).then_some(now)
    })
    .await;
    assert_eq!(changed, ["4"]);
    // A broken one is reported, and the rules before it stay.
    std::fs::write(
        &rules_path,
        "[[rules]]\ntables = [\"game.*\"]\nfilter = \"region = \"\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ok(&ana, "SELECT player_id FROM game.players").await, ["4"]);
    // The server stops although clients are still connected, and says what it did.
    let (_, stdout) = server.terminate();
    assert!(
        stdout.contains("access rules read again")
            && stdout.contains("access rules not reloaded")
            && stdout.contains("access.toml:3"),
        "{stdout}"
    );
}

/// Polls `probe` until it yields a value, for at most 15 seconds.
async fn wait_for<T, F, Fut>(probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no result within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_what_is_over_them_naming_the_quota() {
    let lake = regional_lake().await;
    let (server, _) = serve_with_rules(
        &lake,
        "[[rules]]\ntables = [\"game.*\"]\n\n[[quotas]]\nuser = \"ana\"\nmax_concurrent_queries = 1\nqueries_per_minute = 6\nmax_result_rows = 2\nquery_timeout = \"3s\"\n",
        &["--metrics", "127.0.0.1:0"],
        &[],
    );
    let ana = connect(&server, "ana").await;
    let root = connect(&server, "root").await;

    // Rows: a result past max_result_rows fails at that row; a smaller one is read.
    let rows_refused = refused(&ana, "SELECT * FROM game.purchases").await;
    assert!(
        rows_refused.contains("quota max_result_rows (2) of user ana")
            && rows_refused.contains("access.toml quota 1 (line 4)"),
        "{rows_refused}"
    );
    assert_eq!(
        ok(
            &ana,
            "SELECT amount FROM game.purchases ORDER BY amount LIMIT 2"
        )
        .await,
        ["1", "5"]
    );
    // Queries at once: a second while one runs is refused; the running one stops at the
    // quota's timeout, not the server's five minutes.
    let long = endless_query(&server, "ana").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = refused(&ana, "SELECT 1").await;
    assert!(
        second.contains("quota max_concurrent_queries (1) of user ana")
            && second.contains("retry when one ends"),
        "{second}"
    );
    let started = Instant::now();
    let stopped = long.await.unwrap().unwrap_err();
    assert!(
        stopped.contains("timeout of 3s that quota query_timeout of user ana"),
        "{stopped}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Queries per minute: six started (the one refused above was not), then refusals with a
    // wait.
    assert_eq!(ok(&ana, "SELECT 1").await, ["1"]);
    assert_eq!(ok(&ana, "SELECT 2").await, ["2"]);
    assert_eq!(ok(&ana, "SELECT 3").await, ["3"]);
    let rate = refused(&ana, "SELECT 4").await;
    assert!(
        rate.contains("quota queries_per_minute (6) of user ana") && rate.contains("retry in"),
        "{rate}"
    );
    // Users the quota does not name are not held to it.
    assert_eq!(
        ok(&root, "SELECT count(*) FROM game.purchases").await,
        ["5"]
    );
    for _ in 0..8 {
        ok(&root, "SELECT 1").await;
    }

    // /metrics counts each user's queries by outcome, their rows, and what runs now.
    wait_for(|| async {
        let page = metrics_of(&server).await;
        let ana = |outcome: &str| {
            sample(
                &page,
                &format!("gamelake_query_queries_total{{user=\"ana\",outcome=\"{outcome}\"}}"),
            )
        };
        let counted = [
            ana("ok"),
            ana("error"),
            ana("timeout"),
            ana("refused"),
            sample(&page, "gamelake_query_rows_total{user=\"ana\"}"),
            sample(
                &page,
                "gamelake_query_queries_total{user=\"root\",outcome=\"ok\"}",
            ),
            sample(&page, "gamelake_query_running{user=\"ana\"}"),
        ];
        // ok, error (rows), timeout, refused (at once, per minute); rows; root's; running.
        (counted == [4.0, 1.0, 1.0, 2.0, 5.0, 9.0, 0.0]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_bound_a_users_memory_result_bytes_and_waiting_queries() {
    let lake = regional_lake().await;
    let rules_path = lake.path().join("access.toml");
    std::fs::write(
        &rules_path,
        "[[rules]]\ntables = [\"game.*\"]\n\n[[quotas]]\nuser = \"ana\"\nmax_queued_queries = 1\nquery_memory_mb = 4\nmax_result_mb = 1\n",
    )
    .unwrap();
    // One query at a time, stopped after 6 s: a query of root's fills the server.
    let config_path = lake.path().join("gamelake.toml");
    std::fs::write(
        &config_path,
        format!(
            "{}\n[flight]\nmax_concurrent_queries = 1\nquery_timeout = \"6s\"\n",
            config()
        ),
    )
    .unwrap();
    let rules_arg = rules_path.display().to_string();
    let server = ServeProcess::spawn(
        &lake,
        &config_path,
        &["--pg", "127.0.0.1:0", "--access", &rules_arg],
        &[],
    );
    let ana = connect(&server, "ana").await;
    let root = connect(&server, "root").await;

    // Memory: the build side of this join needs far more than the user's 4 MiB; root's
    // server-wide bound is larger, and the same join runs for root.
    let join = "SELECT count(*) FROM generate_series(1, 2000000) a(v) JOIN generate_series(1, 2000000) b(v) ON a.v = b.v";
    let memory = refused(&ana, join).await;
    assert!(
        memory.contains("memory limit of 4 MiB")
            && memory.contains("quota query_memory_mb of user ana (access.toml quota 1 (line 4))"),
        "{memory}"
    );
    assert_eq!(ok(&root, join).await, ["2000000"]);

    // Result bytes: eight bytes a row, a million rows, past 1 MiB; a smaller result is read.
    let bytes = refused(&ana, "SELECT v FROM generate_series(1, 1000000) t(v)").await;
    assert!(
        bytes.contains("quota max_result_mb (1) of user ana")
            && bytes.contains("select fewer columns"),
        "{bytes}"
    );
    assert_eq!(
        ok(
            &ana,
            "SELECT count(*) FROM generate_series(1, 1000000) t(v)"
        )
        .await,
        ["1000000"]
    );

    // Waiting: root's query holds the only slot; one of ana's waits, a second is refused at
    // once; the waiting one runs when root's stops (at the server's 6 s).
    let long = endless_query(&server, "root").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let waiting = connect(&server, "ana").await;
    let queued = tokio::spawn(async move { rows(&waiting, "SELECT 42").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let second = refused(&ana, "SELECT 43").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused only after waiting"
    );
    assert!(
        second.contains("quota max_queued_queries (1) of user ana")
            && second.contains("retry when one starts"),
        "{second}"
    );
    assert!(long.await.unwrap().unwrap_err().contains("timeout of 6s"));
    assert_eq!(queued.await.unwrap().unwrap(), ["42"]);
}
