//! `gamelake serve --pg`: real PostgreSQL clients (psql, psycopg sync and async with a
//! server-side cursor, asyncpg, SQLAlchemy's reflection, psqlODBC, pgjdbc) read the same values `gamelake sql`
//! reads; logins (SCRAM without TLS, a password over TLS, a verifier
//! copied from a real PostgreSQL), a reader's rights, cancel requests and the connection limit.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::postgres::TestDb;
use crate::support::{ServeProcess, TempLake, run_python, sql_csv};
use gamelake::serving::hash_password;
use gamelake::serving::scram::Verifier;
use gamelake::sources::postgres::connect;

const CLIENTS: &str = include_str!("postgres_wire_clients.py");

/// A lake with `game.players`: unicode, decimals, timestamps with a zone, lists, booleans,
/// floats and NULLs in every column.
async fn lake_with_players() -> TempLake {
    let lake = TempLake::new();
    lake.session()
        .await
        .sql(
            "CREATE TABLE game.players AS SELECT player_id, name, spent, \
             arrow_cast(joined, 'Timestamp(Microsecond, Some(\"UTC\"))') AS joined, tags, active, score \
             FROM (VALUES \
             (1, '玩家一', CAST(10.50 AS DECIMAL(12,2)), to_timestamp_micros('2026-01-02T03:04:05.123456Z'), make_array('pvp', 'guild'), true, 1.5), \
             (2, 'Zoë', CAST(0 AS DECIMAL(12,2)), to_timestamp_micros('2025-12-31T23:59:59Z'), make_array('pve'), false, NULL), \
             (3, NULL, NULL, NULL, NULL, NULL, -2.25)) \
             v(player_id, name, spent, joined, tags, active, score)",
        )
        .await
        .unwrap();
    lake
}

/// The rows every client must read from `game.players`, in the clients' canonical form.
fn expected_rows() -> Value {
    json!([
        [
            "1",
            "玩家一",
            "10.50",
            "2026-01-02T03:04:05.123456+00:00",
            ["pvp", "guild"],
            "true",
            "1.5"
        ],
        [
            "2",
            "Zoë",
            "0.00",
            "2025-12-31T23:59:59+00:00",
            ["pve"],
            "false",
            null
        ],
        ["3", null, null, null, null, null, "-2.25"]
    ])
}

/// The same rows as binary-format clients decode them: a numeric zero arrives without its
/// scale (rust_decimal, which arrow-pg encodes with, writes zero as `0`), an equal value.
fn expected_binary_rows() -> Value {
    let mut rows = expected_rows();
    rows[1][2] = json!("0");
    rows
}

/// `gamelake serve --pg 127.0.0.1:0` over `lake` with `config` (users) and extra flags.
fn serve(lake: &TempLake, config: &str, flags: &[&str]) -> ServeProcess {
    let path = lake.path().join("gamelake.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--pg", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    ServeProcess::spawn(lake, &path, &args, &[])
}

fn dsn(server: &ServeProcess, user: &str, password: &str, tail: &str) -> String {
    let addr = server.pg_addr();
    format!(
        "postgresql://{user}:{password}@127.0.0.1:{}/gamelake{tail}",
        addr.port()
    )
}

fn client(name: &str, dsn: &str) -> Value {
    let out = run_python(CLIENTS, &[name, dsn]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{name} printed {out:?}: {e}"))
}

/// psql with a connection string and commands; its output, or its error.
fn psql(conninfo: &str, password: &str, commands: &[&str]) -> Output {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-v", "ON_ERROR_STOP=1", "-d", conninfo])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.output()
        .expect("psql must be installed (Debian package postgresql-client)")
}

fn psql_ok(conninfo: &str, password: &str, commands: &[&str]) -> String {
    let out = psql(conninfo, password, commands);
    assert!(
        out.status.success(),
        "psql {commands:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn psql_err(conninfo: &str, password: &str, commands: &[&str]) -> String {
    let out = psql(conninfo, password, commands);
    assert!(!out.status.success(), "psql {commands:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_reads_the_values_gamelake_sql_reads() {
    let lake = lake_with_players().await;
    let server = serve(&lake, "", &["--insecure-no-auth"]);
    let dsn = dsn(&server, "anyone", "x", "?sslmode=disable");

    // gamelake sql itself, for the same rows.
    let csv = sql_csv(
        &lake.location(),
        &[
            "-c",
            "SELECT player_id, name, spent, joined, score FROM game.players ORDER BY player_id",
        ],
    );
    assert!(
        csv.contains("1,玩家一,10.50,2026-01-02T03:04:05.123456Z,1.5"),
        "{csv}"
    );
    assert!(csv.contains("2,Zoë,0.00,2025-12-31T23:59:59Z,"), "{csv}");
    assert!(csv.contains("3,,,,-2.25"), "{csv}");

    let psycopg = client("psycopg", &dsn);
    assert_eq!(psycopg["rows"], expected_rows(), "psycopg, text results");
    assert_eq!(
        psycopg["binary"],
        expected_binary_rows(),
        "psycopg, binary results"
    );
    assert_eq!(psycopg["param"], json!([["玩家一"]]), "psycopg, parameters");
    assert_eq!(
        psycopg["cursor_sum"],
        json!(5050),
        "psycopg, server-side cursor"
    );
    let version = psycopg["version"].as_str().unwrap();
    assert!(
        version.starts_with("PostgreSQL 15.0 (gamelake"),
        "{version}"
    );
    assert_eq!(psycopg["server_version"], json!(150000));

    assert_eq!(
        client("psycopg-async", &dsn)["rows"],
        expected_rows(),
        "psycopg async"
    );

    let asyncpg = client("asyncpg", &dsn);
    assert_eq!(
        asyncpg["rows"],
        expected_binary_rows(),
        "asyncpg (binary results)"
    );
    assert_eq!(asyncpg["param"], json!([["玩家一"]]), "asyncpg, parameters");
    assert_eq!(
        asyncpg["counted"],
        json!([3, 1]),
        "asyncpg, one statement run twice"
    );

    let sqlalchemy = client("sqlalchemy", &dsn);
    assert_eq!(sqlalchemy["tables"], json!(["players"]), "{sqlalchemy}");
    assert_eq!(
        sqlalchemy["columns"],
        json!([
            "player_id",
            "name",
            "spent",
            "joined",
            "tags",
            "active",
            "score"
        ]),
        "{sqlalchemy}"
    );
    // Reflection as Superset and Metabase-like tools do it: each column's name, type (numeric
    // without its precision and scale, see the README), nullability and default.
    assert_eq!(
        sqlalchemy["reflected"],
        json!([
            ["player_id", "BIGINT", true, null],
            ["name", "TEXT", true, null],
            ["spent", "NUMERIC", true, null],
            ["joined", "TIMESTAMP", true, null],
            ["tags", "ARRAY", true, null],
            ["active", "BOOLEAN", true, null],
            ["score", "DOUBLE PRECISION", true, null]
        ]),
        "{sqlalchemy}"
    );
    assert!(
        sqlalchemy["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!("game")),
        "{sqlalchemy}"
    );
    assert_eq!(sqlalchemy["rows"], expected_rows(), "SQLAlchemy");

    // psqlODBC, the driver of Excel and Power BI, through pyodbc: its catalog calls and a
    // prepared query. It reads booleans as 1/0 and arrays and zoneless times as PostgreSQL
    // prints them (its defaults), the same values.
    let odbc = client("odbc", &dsn);
    assert_eq!(odbc["tables"], json!(["players"]), "{odbc}");
    assert_eq!(odbc["columns"], sqlalchemy["columns"], "{odbc}");
    assert_eq!(
        odbc["rows"],
        json!([
            [
                "1",
                "玩家一",
                "10.50",
                "naive 2026-01-02T03:04:05.123456",
                "{pvp,guild}",
                "1",
                "1.5"
            ],
            [
                "2",
                "Zoë",
                "0.00",
                "naive 2025-12-31T23:59:59",
                "{pve}",
                "0",
                null
            ],
            ["3", null, null, null, null, null, "-2.25"]
        ]),
        "psqlODBC"
    );

    // pgjdbc, the driver of DBeaver, DataGrip and Metabase: metadata, then a prepared query,
    // in a JVM whose zone is not UTC (a timestamptz is one instant wherever it is read).
    let server_port = server.pg_addr().port();
    let jdbc = Command::new("java")
        .args([
            "-Duser.timezone=Asia/Shanghai",
            "-cp",
            "/usr/share/java/postgresql.jar",
        ])
        .arg(crate::support::repo_root().join("tests/it/PgJdbcProbe.java"))
        .arg(format!(
            "jdbc:postgresql://127.0.0.1:{server_port}/gamelake?sslmode=disable"
        ))
        .output()
        .expect("java must be installed; .ci/run installs the driver (libpostgresql-jdbc-java)");
    let printed = String::from_utf8_lossy(&jdbc.stdout);
    assert!(
        jdbc.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&jdbc.stderr)
    );
    for line in [
        "product|PostgreSQL|15.0 (gamelake",
        "table|game.players",
        "column|spent|numeric",
        "column|joined|timestamptz",
        "column|tags|_text",
        "row|1|玩家一|10.50|2026-01-02T03:04:05.123456Z|[pvp, guild]|true|1.5",
        "row|2|Zoë|0.00|2025-12-31T23:59:59Z|[pve]|false|null",
        "row|3|null|null|null|null|null|-2.25",
    ] {
        assert!(
            printed.contains(line),
            "pgjdbc printed no {line:?}:\n{printed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_lists_describes_queries_and_copies() {
    let lake = lake_with_players().await;
    let server = serve(&lake, "", &["--insecure-no-auth"]);
    let conninfo = format!(
        "host=127.0.0.1 port={} user=anyone dbname=gamelake sslmode=disable",
        server.pg_addr().port()
    );
    let listed = psql_ok(&conninfo, "", &["\\dt game.*"]);
    assert!(listed.contains("game|players|table"), "{listed}");
    let described = psql_ok(&conninfo, "", &["\\d game.players"]);
    for column in [
        "player_id|bigint",
        "name|text",
        "spent|numeric",
        "joined|timestamp",
        "tags|text[]",
        "active|boolean",
        "score|double precision",
    ] {
        assert!(described.contains(column), "{column} not in:\n{described}");
    }
    let rows = psql_ok(
        &conninfo,
        "",
        &["SELECT player_id, name, spent FROM game.players ORDER BY 1"],
    );
    assert!(rows.contains("1|玩家一|10.50\n2|Zoë|0.00\n3||\n"), "{rows}");
    let file = lake.path().join("out.csv");
    psql_ok(
        &conninfo,
        "",
        &[&format!(
            "\\copy (SELECT player_id, name FROM game.players ORDER BY 1) TO '{}' WITH (FORMAT csv)",
            file.display()
        )],
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "1,玩家一\n2,Zoë\n3,\n"
    );
    // Session commands tools send are answered; transactions around reads are no-ops.
    let answered = psql_ok(
        &conninfo,
        "",
        &[
            "SET application_name = 'grafana'",
            "SHOW application_name",
            "BEGIN",
            "SELECT 1 AS one",
            "COMMIT",
        ],
    );
    assert!(answered.contains("grafana"), "{answered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_checked_and_readers_only_read() {
    let lake = lake_with_players().await;
    let dir = lake.path().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    crate::cdc::make_certificates(&dir);
    // A verifier made by a real PostgreSQL for a role of the test's own (dropped with its
    // database, even when the test fails).
    let db = TestDb::new().await;
    let role = db.role("scram");
    let pg = connect(&db.url()).await.unwrap();
    pg.batch_execute(&format!(
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD 'pencil'"
    ))
    .await
    .unwrap();
    let copied: String = pg
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    pg.batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
    assert!(copied.starts_with("SCRAM-SHA-256$"), "{copied}");

    let mut config = String::new();
    for (name, password, role_name, scram) in [
        (
            "ana",
            "ana-pw",
            "reader",
            Some(Verifier::new("ana-pw").to_string()),
        ),
        (
            "root",
            "root-pw",
            "admin",
            Some(Verifier::new("root-pw").to_string()),
        ),
        ("copied", "pencil", "reader", Some(copied)),
        ("plain", "plain-pw", "reader", None),
    ] {
        config.push_str(&format!(
            "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nrole = \"{role_name}\"\n",
            hash_password(password).unwrap()
        ));
        if let Some(scram) = scram {
            config.push_str(&format!("scram_sha256 = \"{scram}\"\n"));
        }
    }
    let cert = dir.join("server.pem").display().to_string();
    let key = dir.join("server.key").display().to_string();
    let server = serve(&lake, &config, &["--tls-cert", &cert, "--tls-key", &key]);
    let port = server.pg_addr().port();
    let conninfo = |user: &str, ssl: &str| {
        format!("host=127.0.0.1 port={port} user={user} dbname=gamelake sslmode={ssl}")
    };
    let count = "SELECT count(*) FROM game.players";

    // Without TLS: SCRAM, with verifiers from gamelake and from PostgreSQL.
    assert!(psql_ok(&conninfo("ana", "disable"), "ana-pw", &[count]).contains("\n3\n"));
    assert!(psql_ok(&conninfo("copied", "disable"), "pencil", &[count]).contains("\n3\n"));
    let wrong = psql_err(&conninfo("ana", "disable"), "not-it", &[count]);
    assert!(
        wrong.contains("password authentication failed for user \"ana\""),
        "{wrong}"
    );
    let unknown = psql_err(&conninfo("nobody", "disable"), "x", &[count]);
    assert!(
        unknown.contains("password authentication failed for user \"nobody\""),
        "{unknown}"
    );
    // A user with only an argon2 hash cannot log in without TLS, and can with it.
    let plain = psql_err(&conninfo("plain", "disable"), "plain-pw", &[count]);
    assert!(plain.contains("scram_sha256"), "{plain}");
    assert!(psql_ok(&conninfo("plain", "require"), "plain-pw", &[count]).contains("\n3\n"));
    let wrong_tls = psql_err(&conninfo("plain", "require"), "nope", &[count]);
    assert!(
        wrong_tls.contains("password authentication failed"),
        "{wrong_tls}"
    );

    // A reader reads; it cannot write or read the query log, whichever protocol path it takes.
    let denied = psql_err(
        &conninfo("ana", "disable"),
        "ana-pw",
        &["CREATE TABLE game.x AS SELECT 1 AS a"],
    );
    assert!(denied.contains("permission denied"), "{denied}");
    let denied = psql_err(
        &conninfo("ana", "disable"),
        "ana-pw",
        &["SELECT * FROM system.query_log"],
    );
    assert!(denied.contains("permission denied"), "{denied}");
    let dsn_ana = dsn(&server, "ana", "ana-pw", "?sslmode=disable");
    let out = run_python(
        "import psycopg, sys\n\
         with psycopg.connect(sys.argv[1]) as c:\n\
         \x20   try:\n\
         \x20       c.execute('DELETE FROM game.players WHERE player_id = %s', (1,))\n\
         \x20       print('deleted')\n\
         \x20   except psycopg.Error as e:\n\
         \x20       print(e.sqlstate, e)\n",
        &[&dsn_ana],
    );
    assert!(out.starts_with("42501 permission denied"), "{out}");
    // The admin writes, and sees every statement in the query log.
    psql_ok(
        &conninfo("root", "disable"),
        "root-pw",
        &["CREATE TABLE game.made AS SELECT 1 AS a"],
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The query log exists now, and pg_catalog does not list it, even to the admin.
    let listed = psql_ok(
        &conninfo("root", "disable"),
        "root-pw",
        &["SELECT relname FROM pg_catalog.pg_class ORDER BY 1"],
    );
    assert!(listed.contains("players"), "{listed}");
    assert!(!listed.contains("query_log"), "{listed}");
    let log = psql_ok(
        &conninfo("root", "disable"),
        "root-pw",
        &[
            "SELECT user, outcome FROM system.query_log WHERE sql LIKE '%count(*)%' ORDER BY started_at",
        ],
    );
    assert!(log.contains("ana|ok"), "{log}");
    assert!(log.contains("copied|ok"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_a_running_query_and_connections_are_bounded() {
    let lake = lake_with_players().await;
    let server = serve(
        &lake,
        "",
        &["--insecure-no-auth", "--pg-max-connections", "2"],
    );
    let dsn = dsn(&server, "anyone", "x", "?sslmode=disable");
    let out = run_python(
        "import psycopg, sys, threading, time\n\
         conn = psycopg.connect(sys.argv[1])\n\
         threading.Timer(1.0, conn.cancel).start()\n\
         started = time.monotonic()\n\
         try:\n\
         \x20   conn.execute('SELECT count(*) FROM generate_series(1, 100000000000) AS t(g) WHERE g % 7 = 3')\n\
         \x20   print('finished')\n\
         except psycopg.Error as e:\n\
         \x20   print(e.sqlstate, round(time.monotonic() - started))\n\
         # The cancel request came on a connection of its own, which ends at once: wait for it.\n\
         for attempt in range(50):\n\
         \x20   try:\n\
         \x20       other = psycopg.connect(sys.argv[1])\n\
         \x20       break\n\
         \x20   except psycopg.OperationalError:\n\
         \x20       time.sleep(0.1)\n\
         else:\n\
         \x20   raise SystemExit('the second connection was refused')\n\
         try:\n\
         \x20   psycopg.connect(sys.argv[1])\n\
         \x20   print('third connected')\n\
         except psycopg.OperationalError as e:\n\
         \x20   print('refused', 'too many connections' in str(e))\n\
         print(conn.execute('SELECT 41 + 1').fetchone()[0])\n",
        &[&dsn],
    );
    let lines: Vec<&str> = out.lines().collect();
    let (code, seconds) = lines[0].split_once(' ').unwrap();
    assert_eq!(code, "57014", "{out}");
    assert!(seconds.parse::<u64>().unwrap() < 30, "{out}");
    assert_eq!(lines[1], "refused True", "{out}");
    assert_eq!(lines[2], "42", "the cancelled session goes on: {out}");
}
