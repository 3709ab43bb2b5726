//! Change capture (`mode = "cdc"`) against a PostgreSQL cluster of the test's own, started with
//! `wal_level = logical` (the machine's shared server runs with `replica` and is left alone):
//! the copy at the slot's consistent point, then inserts, updates (of keys, of rows with
//! TOASTed values), deletes and TRUNCATE applied exactly once, and kills at any point.

use crate::pipelines::lake_with_pipeline;
use crate::postgres::OwnCluster;
use crate::support::{TempLake, gamelake_err, gamelake_ok, metrics_of, sample, sql_csv};
use gamelake::sources::postgres::connect;

/// A PostgreSQL cluster of the test's own with `wal_level = logical`, trusting local logins.
pub(crate) struct LogicalServer(OwnCluster);

impl LogicalServer {
    pub(crate) fn start() -> Self {
        Self::start_with(false)
    }

    /// With `tls`: a CA (`ca.pem`), a server certificate it signed for `localhost` only, and a
    /// pg_hba.conf that refuses every TCP login without TLS.
    pub(crate) fn start_with(tls: bool) -> Self {
        let mut settings =
            "-c wal_level=logical -c max_replication_slots=8 -c max_wal_senders=8".to_string();
        if tls {
            settings.push_str(
                " -c ssl=on -c ssl_cert_file={dir}/server.pem -c ssl_key_file={dir}/server.key",
            );
        }
        let hba = tls.then_some(
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        );
        let cluster = OwnCluster::start(
            |dir| {
                if tls {
                    make_certificates(dir);
                }
            },
            &["--auth=trust"],
            hba,
            &settings,
        );
        Self(cluster)
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.0.port())
    }

    /// The server's port.
    pub(crate) fn port(&self) -> u16 {
        self.0.port()
    }

    /// A file in the server's folder (e.g. `ca.pem`).
    pub(crate) fn file(&self, name: &str) -> String {
        self.0.dir().join(name).display().to_string()
    }
}

/// `ca.pem`, `other-ca.pem` (a CA that signed nothing here) and `server.pem`/`server.key`
/// (signed by `ca.pem`, for DNS name `localhost` only), made with the machine's openssl.
pub(crate) fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed to make test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for ca in ["ca", "other-ca"] {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=gamelake test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ]);
    }
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

const PIPELINE: &str = r#"name = "shop"
[source]
kind = "postgres"
url = "${PG_URL}"
parallelism = 2
[[table]]
from = "public.players"
to = "game.players"
mode = "cdc"
changelog = true
[[table]]
from = "public.bag"
to = "game.bag"
mode = "cdc"
"#;

/// Every row of `players` as `id,name,score,length(bio)` lines, in key order.
const PLAYERS_PG: &str =
    "SELECT id || '|' || name || '|' || score || '|' || length(bio) FROM players ORDER BY id";
const PLAYERS_LAKE: &str = "SELECT CAST(id AS VARCHAR) || '|' || name || '|' || CAST(score AS VARCHAR) || '|' || CAST(length(bio) AS VARCHAR) AS r FROM game.players ORDER BY id";

async fn source_rows(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.query(sql, &[]).await.unwrap();
    let mut out = String::from("r\n");
    for row in rows {
        out.push_str(&row.get::<_, String>(0));
        out.push('\n');
    }
    out
}

fn lake_commits(loc: &str, table: &str) -> String {
    sql_csv(
        loc,
        &[
            "-c",
            &format!("SELECT max(version) AS v FROM game.\"{table}$history\""),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_copies_then_applies_every_kind_of_change_once() {
    let server = LogicalServer::start();
    let client = connect(&server.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE players (id int PRIMARY KEY, name text NOT NULL, score int NOT NULL, bio text NOT NULL);
             INSERT INTO players SELECT g, 'p' || g, g, repeat('x', 10) FROM generate_series(1, 1000) g;
             -- A value large enough to be TOASTed (and not compressible below the threshold).
             UPDATE players SET bio = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g) WHERE id = 7;
             CREATE TABLE bag (player_id int, item text, n int, PRIMARY KEY (player_id, item));
             INSERT INTO bag SELECT g % 10, 'item' || g, 1 FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    let (_lake, loc, file) = lake_with_pipeline("shop.toml", PIPELINE);
    let url = server.url();
    let env = [("PG_URL", url.as_str())];
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    assert_eq!(
        sql_csv(&loc, &["-c", PLAYERS_LAKE]),
        source_rows(&client, PLAYERS_PG).await
    );

    // Every kind of change, some several times to one key, one transaction over both tables.
    client
        .batch_execute(
            "INSERT INTO players SELECT g, 'new' || g, g, 'b' FROM generate_series(1001, 1010) g;
             UPDATE players SET score = score + 1 WHERE id <= 20;
             UPDATE players SET score = score + 1 WHERE id <= 10;
             DELETE FROM players WHERE id BETWEEN 900 AND 904;
             UPDATE players SET id = 5001 WHERE id = 1;
             UPDATE players SET score = -7 WHERE id = 7;
             BEGIN;
             DELETE FROM players WHERE id = 2;
             TRUNCATE bag;
             INSERT INTO bag VALUES (1, 'sword', 3);
             COMMIT;
             INSERT INTO players VALUES (900, 'back', 1, 'again');",
        )
        .await
        .unwrap();
    let out = gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    assert_eq!(
        sql_csv(&loc, &["-c", PLAYERS_LAKE]),
        source_rows(&client, PLAYERS_PG).await,
        "{out}"
    );
    // The TOASTed value the updates did not send is the lake's own, unchanged.
    assert_eq!(
        sql_csv(
            &loc,
            &[
                "-c",
                "SELECT score, length(bio) AS l FROM game.players WHERE id = 7"
            ]
        ),
        "score,l\n-7,12800\n"
    );
    assert_eq!(
        sql_csv(&loc, &["-c", "SELECT player_id, item, n FROM game.bag"]),
        "player_id,item,n\n1,sword,3\n"
    );
    // The changelog holds every change once: a key change as the old key's delete and the new
    // row, the second update of a row beside the first.
    assert_eq!(
        sql_csv(
            &loc,
            &[
                "-c",
                "SELECT _op, count(*) AS n FROM game.players_changes GROUP BY _op ORDER BY _op"
            ]
        ),
        "_op,n\nD,7\nI,12\nU,31\n"
    );
    assert_eq!(
        sql_csv(
            &loc,
            &[
                "-c",
                "SELECT _op, score FROM game.players_changes WHERE id = 1 ORDER BY _lsn, _seq"
            ]
        ),
        "_op,score\nU,2\nU,3\nD,\n"
    );

    // Nothing new: nothing committed.
    let before = lake_commits(&loc, "players");
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    assert_eq!(lake_commits(&loc, "players"), before);
    // The slot let go of what the lake holds.
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('gamelake_shop', NULL, NULL, 'proto_version', '1', 'publication_names', 'gamelake_shop')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_refuses_what_it_cannot_apply_and_says_how_to_fix_it() {
    // The shared server runs with wal_level = replica.
    let db = crate::postgres::TestDb::new().await;
    let (lake, loc, file) = lake_with_pipeline("shop.toml", PIPELINE);
    let url = db.url();
    let err = gamelake_err(&["--lake", &loc, "ingest", &file], &[("PG_URL", &url)]);
    assert!(err.contains("wal_level = logical"), "{err}");

    let server = LogicalServer::start();
    let client = connect(&server.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE players (id int PRIMARY KEY, name text NOT NULL, score int NOT NULL, bio text NOT NULL);
             ALTER TABLE players REPLICA IDENTITY NOTHING;
             CREATE TABLE bag (player_id int, item text, n int);",
        )
        .await
        .unwrap();
    let url = server.url();
    let env = [("PG_URL", url.as_str())];
    let err = gamelake_err(&["--lake", &loc, "ingest", &file], &env);
    assert!(
        err.contains("REPLICA IDENTITY NOTHING") && err.contains("REPLICA IDENTITY DEFAULT"),
        "{err}"
    );
    client
        .batch_execute("ALTER TABLE players REPLICA IDENTITY DEFAULT")
        .await
        .unwrap();
    let err = gamelake_err(&["--lake", &loc, "ingest", &file], &env);
    assert!(
        err.contains("public.bag has no primary key") && err.contains("ADD PRIMARY KEY"),
        "{err}"
    );
    // Nothing was created on the way: no slot, no lake table.
    let slots: i64 = client
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);
    assert!(!lake.path().join("game/players").exists());
}

const ACCOUNTS: &str = r#"name = "bank"
[source]
kind = "postgres"
url = "${PG_URL}"
[[table]]
from = "public.accounts"
to = "game.accounts"
mode = "cdc"
changelog = true
"#;

/// A cluster of the test's own holding `accounts (id, owner, balance, note)`, filled by `rows`
/// (SQL run after the table is made), and a client on it.
async fn accounts_server(rows: &str) -> (LogicalServer, tokio_postgres::Client) {
    let server = LogicalServer::start();
    let client = connect(&server.url()).await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, owner bigint, balance bigint, note text); {rows}"
        ))
        .await
        .unwrap();
    (server, client)
}

/// `gamelake ingest FILE --follow --interval 100ms` started on its own, its standard error kept.
fn spawn_follower(loc: &str, file: &str, pg_url: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_gamelake"))
        .args([
            "--lake",
            loc,
            "ingest",
            file,
            "--follow",
            "--interval",
            "100ms",
        ])
        .env("PG_URL", pg_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops a follower with SIGTERM; it must exit with success. Returns its standard error.
fn terminate_follower(child: std::process::Child) -> String {
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// Inserts, updates (a few of keys) and deletes in small transactions until `stop`, in the
/// issue's mix: 60% updates, 25% inserts, 15% deletes.
async fn write_mix(url: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u64 {
    let client = connect(&url).await.unwrap();
    let (mut seed, mut next_id, mut statements) = (42u64, 100_001i64, 0u64);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut sql = String::from("BEGIN;");
        for _ in 0..20 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (dice, id) = ((seed >> 33) % 100, (seed >> 40) as i64 % next_id + 1);
            sql.push_str(&match dice {
                0..=54 => format!(
                    "UPDATE accounts SET balance = balance + 1, note = 'u{id}' WHERE id = {id};"
                ),
                55..=59 => format!("UPDATE accounts SET id = {next_id} WHERE id = {id};"),
                60..=84 => format!("INSERT INTO accounts VALUES ({next_id}, {id}, 0, 'new');"),
                _ => format!("DELETE FROM accounts WHERE id = {id};"),
            });
            if (55..=84).contains(&dice) {
                next_id += 1;
            }
            statements += 1;
        }
        sql.push_str("COMMIT;");
        client.batch_execute(&sql).await.unwrap();
    }
    statements
}

/// `gamelake ingest --follow` killed with SIGKILL 20 times while a writer runs, restarted each
/// time: after a last catch-up, the lake table equals the source row for row. Then SIGTERM
/// stops a follower cleanly, with what it applied committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_follow_killed_twenty_times_ends_equal_to_the_source() {
    let (server, client) = accounts_server(
        "INSERT INTO accounts SELECT g, g % 100, 0, 'start' FROM generate_series(1, 100000) g;",
    )
    .await;
    let (_lake, loc, file) = lake_with_pipeline("bank.toml", ACCOUNTS);
    let url = server.url();
    // The copy at the slot's start comes first, so the changelog holds every change the
    // writer makes (a table copied after its slot exists is tested on its own, below).
    gamelake_ok(&["--lake", &loc, "ingest", &file], &[("PG_URL", &url)]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(write_mix(url.clone(), stop.clone()));
    let follow = || spawn_follower(&loc, &file, &url);
    for round in 0..20u64 {
        let mut child = follow();
        tokio::time::sleep(std::time::Duration::from_millis(200 + round * 97 % 1300)).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statements = writer.await.unwrap();
    assert!(statements > 1000, "the writer ran {statements} statements");

    // SIGTERM: the follower finishes its batch and exits with success.
    let child = follow();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let stderr = terminate_follower(child);
    assert!(stderr.contains("stopping"), "{stderr}");

    gamelake_ok(&["--lake", &loc, "ingest", &file], &[("PG_URL", &url)]);
    let source = source_rows(
        &client,
        "SELECT count(*) || '|' || count(DISTINCT id) || '|' || sum(id) || '|' || sum(balance) || '|' || sum(length(note)) FROM accounts",
    )
    .await;
    let lake_side = sql_csv(
        &loc,
        &[
            "-c",
            "SELECT CAST(count(*) AS VARCHAR) || '|' || CAST(count(DISTINCT id) AS VARCHAR) || '|' || CAST(sum(id) AS VARCHAR) || '|' || CAST(sum(balance) AS VARCHAR) || '|' || CAST(sum(length(note)) AS VARCHAR) AS r FROM game.accounts",
        ],
    );
    assert_eq!(lake_side, source);
    // The changelog: no change twice (each (_lsn, _seq) once), none missed (inserts less
    // deletes account for every row beyond the first 100,000).
    let log = sql_csv(
        &loc,
        &[
            "-c",
            "SELECT count(*) - count(DISTINCT CAST(_lsn AS VARCHAR) || '/' || CAST(_seq AS VARCHAR)) AS twice, \
             count(*) FILTER (WHERE _op = 'I') - count(*) FILTER (WHERE _op = 'D') AS net FROM game.accounts_changes",
        ],
    );
    let rows: i64 = client
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(log, format!("twice,net\n0,{}\n", rows - 100_000));
    // Row for row: every key with every column.
    let every =
        "SELECT id || '|' || owner || '|' || balance || '|' || note FROM accounts ORDER BY id";
    let lake_every = "SELECT CAST(id AS VARCHAR) || '|' || CAST(owner AS VARCHAR) || '|' || CAST(balance AS VARCHAR) || '|' || note AS r FROM game.accounts ORDER BY id";
    assert!(sql_csv(&loc, &["-c", lake_every]) == source_rows(&client, every).await);
}

#[test]
fn cdc_benchmark_runs_at_a_tiny_scale() {
    let text = crate::support::run_tiny_benchmark(
        "cdc.py",
        &["--changes", "2000", "--seconds", "2", "--rate", "1000"],
    );
    for row in [
        "pg_recvlogical",
        "gamelake ingest (cdc)",
        "Lag with a writer",
    ] {
        assert!(text.contains(row), "{row} missing from:\n{text}");
    }
}

/// Columns added in PostgreSQL mid-stream are added to the lake table; a dropped column stays in
/// the lake with the values it had; a column added with a DEFAULT (whose values PostgreSQL writes
/// without sending them) is refused with the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_adds_columns_keeps_dropped_ones_and_refuses_defaults() {
    let server = LogicalServer::start();
    let client = connect(&server.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE players (id int PRIMARY KEY, name text, score int);
             INSERT INTO players SELECT g, 'p' || g, g FROM generate_series(1, 10) g;
             CREATE TABLE bag (player_id int, item text, n int, PRIMARY KEY (player_id, item));",
        )
        .await
        .unwrap();
    let (_lake, loc, file) = lake_with_pipeline("shop.toml", PIPELINE);
    let url = server.url();
    let env = [("PG_URL", url.as_str())];
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    // Each statement its own transaction, as schema changes are deployed.
    for statement in [
        "ALTER TABLE players ADD COLUMN level int",
        "UPDATE players SET level = 5 WHERE id <= 3",
        "INSERT INTO players VALUES (11, 'new', 1, 9)",
        "ALTER TABLE players DROP COLUMN score",
        "UPDATE players SET name = 'renamed' WHERE id = 4",
    ] {
        client.batch_execute(statement).await.unwrap();
    }
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    assert_eq!(
        sql_csv(
            &loc,
            &[
                "-c",
                "SELECT id, name, score, level FROM game.players WHERE id IN (1, 4, 5, 11) ORDER BY id"
            ]
        ),
        "id,name,score,level\n1,p1,1,5\n4,renamed,4,\n5,p5,5,\n11,new,1,9\n"
    );
    client
        .batch_execute("ALTER TABLE players ADD COLUMN vip bool DEFAULT false")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO players VALUES (12, 'vip', 1, true)")
        .await
        .unwrap();
    let err = gamelake_err(&["--lake", &loc, "ingest", &file], &env);
    assert!(
        err.contains("\"vip\"") && err.contains("DEFAULT") && err.contains("--full-refresh"),
        "{err}"
    );
    // The fix works: a full refresh copies the table again, with its new column.
    gamelake_ok(&["--lake", &loc, "ingest", &file, "--full-refresh"], &env);
    assert_eq!(
        sql_csv(
            &loc,
            &[
                "-c",
                "SELECT count(*) AS n, count(*) FILTER (WHERE vip) AS v FROM game.players"
            ]
        ),
        "n,v\n12,1\n"
    );
}

/// A table added to a pipeline whose slot already exists is copied, then joins the stream: the
/// changes the slot holds are applied over the copy by key, converging on the source's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_table_added_later_is_copied_then_joins_the_stream() {
    let server = LogicalServer::start();
    let client = connect(&server.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE players (id int PRIMARY KEY, name text, score int, bio text);
             CREATE TABLE bag (player_id int, item text, n int, PRIMARY KEY (player_id, item));
             INSERT INTO bag SELECT g, 'item', g FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    let lake = TempLake::new();
    let file = lake.path().join("shop.toml");
    let players_only = PIPELINE
        .split("[[table]]\nfrom = \"public.bag\"")
        .next()
        .unwrap();
    std::fs::write(&file, players_only).unwrap();
    let (loc, file_s) = (lake.location(), file.display().to_string());
    let url = server.url();
    let env = [("PG_URL", url.as_str())];
    gamelake_ok(&["--lake", &loc, "ingest", &file_s], &env);
    // While bag is not captured, it changes; then it joins and changes again.
    client
        .batch_execute("UPDATE bag SET n = n + 1000 WHERE player_id <= 10; DELETE FROM bag WHERE player_id > 90")
        .await
        .unwrap();
    std::fs::write(&file, PIPELINE).unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file_s], &env);
    client
        .batch_execute(
            "UPDATE bag SET n = -1 WHERE player_id = 1; INSERT INTO bag VALUES (500, 'new', 5)",
        )
        .await
        .unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file_s], &env);
    let pg = source_rows(&client, "SELECT count(*) || '|' || sum(n) FROM bag").await;
    let lake_side = sql_csv(
        &loc,
        &[
            "-c",
            "SELECT CAST(count(*) AS VARCHAR) || '|' || CAST(sum(n) AS VARCHAR) AS r FROM game.bag",
        ],
    );
    assert_eq!(lake_side, pg);
}

/// Polls until the lake's `game.accounts` answers `expected` to `sql` (60 s at most).
async fn lake_reaches(loc: &str, sql: &str, expected: &str) {
    let mut seen = String::new();
    for _ in 0..240 {
        // Before the first copy commits there is no table: an error, and a look again later.
        let out =
            crate::support::gamelake(&["--lake", loc, "sql", "--format", "csv", "-c", sql], &[]);
        seen = String::from_utf8_lossy(if out.status.success() {
            &out.stdout
        } else {
            &out.stderr
        })
        .into_owned();
        if seen == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("the lake answered {seen:?}, not {expected:?}");
}

/// `gamelake serve --schedule` follows a pipeline with `follow` without end: changes reach the
/// lake and /metrics shows them. A second server beside it (a replica) waits, since one process
/// reads a slot at a time, and takes over when the first stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_follows_a_cdc_pipeline_and_a_replica_takes_over() {
    use crate::support::ServeProcess;

    let (server, client) = accounts_server(
        "INSERT INTO accounts SELECT g, g % 100, 0, 'start' FROM generate_series(1, 1000) g;",
    )
    .await;
    let lake = TempLake::new();
    let loc = lake.location();
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("bank.toml"),
        format!("follow = \"100ms\"\n{ACCOUNTS}"),
    )
    .unwrap();
    let config = dir.path().join("gamelake.toml");
    std::fs::write(&config, "").unwrap();
    let url = server.url();
    let args = [
        "--schedule",
        "--pipelines",
        pipelines.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ];
    let first = ServeProcess::spawn(&lake, &config, &args, &[("PG_URL", &url)]);
    let state = "SELECT count(*) AS n, sum(balance) AS b FROM game.accounts";
    lake_reaches(&loc, state, "n,b\n1000,0\n").await;
    let second = ServeProcess::spawn(&lake, &config, &args, &[("PG_URL", &url)]);

    client
        .batch_execute(
            "INSERT INTO accounts SELECT g, 1, 5, 'new' FROM generate_series(1001, 1500) g;
             UPDATE accounts SET balance = 1 WHERE id <= 10;
             DELETE FROM accounts WHERE id BETWEEN 11 AND 20;",
        )
        .await
        .unwrap();
    lake_reaches(&loc, state, "n,b\n1490,2510\n").await;
    let following = "gamelake_schedule_cdc_following{job=\"cdc/bank\"}";
    let (leader, standby) = (metrics_of(&first).await, metrics_of(&second).await);
    assert_eq!(sample(&leader, following), 1.0, "{leader}");
    assert_eq!(sample(&standby, following), 0.0, "{standby}");
    assert!(
        sample(
            &leader,
            "gamelake_schedule_cdc_changes_total{job=\"cdc/bank\"}"
        ) >= 520.0,
        "{leader}"
    );
    assert!(
        leader.contains("gamelake_schedule_cdc_lag_bytes{job=\"cdc/bank\"}")
            && leader.contains("gamelake_schedule_cdc_lag_seconds{job=\"cdc/bank\"}"),
        "{leader}"
    );

    // The leader stops; the replica takes the slot and carries on from the lake's position.
    let (status, _) = first.terminate();
    assert!(status.success());
    client
        .batch_execute("UPDATE accounts SET balance = balance + 1 WHERE id > 1400")
        .await
        .unwrap();
    lake_reaches(&loc, state, "n,b\n1490,2610\n").await;
    let took_over = metrics_of(&second).await;
    assert_eq!(sample(&took_over, following), 1.0, "{took_over}");
    let (status, _) = second.terminate();
    assert!(status.success());
}

/// The lake's `game.accounts` has the source's rows: count, key sum and balance sum.
async fn assert_accounts_match(client: &tokio_postgres::Client, loc: &str) {
    assert_eq!(
        sql_csv(loc, &["-c", ACCOUNTS_LAKE]),
        source_rows(client, ACCOUNTS_PG).await
    );
}

/// `accounts` in PostgreSQL and `game.accounts` in the lake as `rows|sum of ids|sum of balances`.
const ACCOUNTS_PG: &str = "SELECT count(*) || '|' || sum(id) || '|' || sum(balance) FROM accounts";
const ACCOUNTS_LAKE: &str = "SELECT CAST(count(*) AS VARCHAR) || '|' || CAST(sum(id) AS VARCHAR) || '|' || CAST(sum(balance) AS VARCHAR) AS r FROM game.accounts";

/// One transaction of a million rows (inserts, then updates and deletes of some of them, in
/// the same transaction) lands whole, in one batch, each row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_applies_a_million_row_transaction_whole() {
    let (server, client) =
        accounts_server("INSERT INTO accounts VALUES (0, 0, 7, 'before');").await;
    let (_lake, loc, file) = lake_with_pipeline("bank.toml", ACCOUNTS);
    let url = server.url();
    gamelake_ok(&["--lake", &loc, "ingest", &file], &[("PG_URL", &url)]);
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO accounts SELECT g, g % 100, 1, 'bulk' FROM generate_series(1, 1000000) g;
             UPDATE accounts SET balance = 2 WHERE id % 10 = 0;
             DELETE FROM accounts WHERE id % 100 = 1;
             COMMIT;",
        )
        .await
        .unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file], &[("PG_URL", &url)]);
    assert_accounts_match(&client, &loc).await;
    // The changelog holds each change of the transaction once, at one LSN.
    assert_eq!(
        sql_csv(
            &loc,
            &[
                "-c",
                "SELECT count(*) AS n, count(DISTINCT _lsn) AS lsns, count(DISTINCT _seq) AS seqs FROM game.accounts_changes",
            ],
        ),
        "n,lsns,seqs\n1110001,1,1110001\n"
    );
}

/// A slot and a publication that exist already (a `FOR ALL TABLES` one, as an administrator
/// might make) are named in `[source]` and used: the tables are copied, then the slot's
/// changes applied; gamelake creates no slot or publication of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_reads_a_named_existing_slot_and_publication() {
    let (server, client) = accounts_server(
        "INSERT INTO accounts SELECT g, g, 1, 'start' FROM generate_series(1, 100) g;
             CREATE PUBLICATION everything FOR ALL TABLES;",
    )
    .await;
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('ops_slot', 'pgoutput')")
        .await
        .unwrap();
    let pipeline = ACCOUNTS.replace(
        "url = \"${PG_URL}\"",
        "url = \"${PG_URL}\"\nslot = \"ops_slot\"\npublication = \"everything\"",
    );
    let (_lake, loc, file) = lake_with_pipeline("bank.toml", &pipeline);
    let url = server.url();
    gamelake_ok(&["--lake", &loc, "ingest", &file], &[("PG_URL", &url)]);
    client
        .batch_execute(
            "UPDATE accounts SET balance = 5 WHERE id <= 10; DELETE FROM accounts WHERE id > 90;
             INSERT INTO accounts VALUES (1000, 1, 1, 'late');",
        )
        .await
        .unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file], &[("PG_URL", &url)]);
    assert_accounts_match(&client, &loc).await;
    let own: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'gamelake%')
                  + (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'gamelake%')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(own, 0, "no slot or publication of gamelake's own");

    // A slot name PostgreSQL would refuse is a mistake in the file, named with its line.
    let bad = pipeline.replace("ops_slot", "Ops-Slot");
    let (_lake2, loc2, file2) = lake_with_pipeline("bank.toml", &bad);
    let err = gamelake_err(&["--lake", &loc2, "ingest", &file2], &[("PG_URL", &url)]);
    assert!(
        err.contains("bank.toml:5") && err.contains("lower-case"),
        "{err}"
    );
}

/// With `commit_interval = "2s"`, a follower under a steady writer commits to the lake table at
/// most once per two seconds (one Parquet file per interval, not one per pass), and ends equal
/// to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_interval_spaces_a_followers_commits() {
    let (server, client) = accounts_server(
        "INSERT INTO accounts SELECT g, g % 100, 0, 'start' FROM generate_series(1, 1000) g;",
    )
    .await;
    let (_lake, loc, file) = lake_with_pipeline(
        "bank.toml",
        &format!("commit_interval = \"2s\"\n{ACCOUNTS}"),
    );
    let url = server.url();
    let follower = spawn_follower(&loc, &file, &url);
    lake_reaches(&loc, "SELECT count(*) AS n FROM game.accounts", "n\n1000\n").await;
    let version = || -> u64 {
        let csv = lake_commits(&loc, "accounts");
        csv.lines().nth(1).unwrap().parse().unwrap()
    };
    let copied = version();
    let writing = std::time::Instant::now();
    let mut next = 1001;
    while writing.elapsed() < std::time::Duration::from_secs(6) {
        client
            .batch_execute(&format!(
                "INSERT INTO accounts VALUES ({next}, 1, 1, 'new'); UPDATE accounts SET balance = balance + 1 WHERE id = {};",
                next % 1000 + 1
            ))
            .await
            .unwrap();
        next += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_accounts_match_soon(&client, &loc).await;
    terminate_follower(follower);
    let last = version();
    // About 8 s of following at one commit per 2 s at most, each pass's own commit included.
    assert!(
        last - copied <= 6,
        "{} commits while following a writer for 6 s with commit_interval = 2s",
        last - copied
    );
    assert_accounts_match(&client, &loc).await;
}

/// Polls until the lake's accounts match the source's (60 s at most).
async fn assert_accounts_match_soon(client: &tokio_postgres::Client, loc: &str) {
    let expected = source_rows(client, ACCOUNTS_PG).await;
    lake_reaches(loc, ACCOUNTS_LAKE, &expected).await;
}
