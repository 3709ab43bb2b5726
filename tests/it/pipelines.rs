//! Pipelines against the real PostgreSQL: parallel snapshots that equal the source, committed
//! with the pipeline's position, and pipeline files with typos refused at the right line.

use crate::postgres::TestDb;
use crate::support::{TempLake, gamelake_err, gamelake_ok, repo_root};
use gamelake::sources::postgres::connect;

/// A fresh lake holding a pipeline file: the lake, its location and the file's path.
pub(crate) fn lake_with_pipeline(name: &str, text: &str) -> (TempLake, String, String) {
    let lake = TempLake::new();
    let file = lake.path().join(name);
    std::fs::write(&file, text).unwrap();
    let (loc, file_s) = (lake.location(), file.display().to_string());
    (lake, loc, file_s)
}

/// Runs `gamelake ingest` on a pipeline and kills it (SIGKILL) after `delay_ms`.
fn ingest_killed_after(loc: &str, file: &str, pg_url: &str, delay_ms: u64) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gamelake"))
        .args(["--lake", loc, "ingest", file])
        .env("PG_URL", pg_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    let _ = child.kill();
    let _ = child.wait();
}

const PIPELINE: &str = r#"name = "test"
[source]
kind = "postgres"
url = "${PG_URL}"
parallelism = 4
[[table]]
from = "public.players"
to = "game.players"
mode = "snapshot"
sort_by = ["player_id"]
bloom_filter_columns = ["player_id"]
[[table]]
query = "SELECT id, label::text AS label FROM public.shapes"
to = "game.shapes"
mode = "snapshot"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_snapshot_equals_the_source_and_records_its_position() {
    // 2,057,143 rows (2.4 M less every seventh, so pages have holes), read by 4 connections.
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE players (player_id bigint PRIMARY KEY, region text, balance numeric(12,2), signup_at timestamptz);
             INSERT INTO players SELECT g, (ARRAY['beijing','shanghai','guangzhou'])[g % 3 + 1], g * 0.01, '2026-01-01'::timestamptz + g * interval '1 minute'
               FROM generate_series(1, 2400000) g;
             DELETE FROM players WHERE player_id % 7 = 0;
             CREATE TABLE shapes (id int, label text);
             INSERT INTO shapes VALUES (1, 'circle'), (2, NULL);
             ANALYZE;",
        )
        .await
        .unwrap();
    let expected = client
        .query_one("SELECT count(*)::text || '|' || sum(player_id)::text || '|' || sum(balance)::text FROM players", &[])
        .await
        .unwrap()
        .get::<_, String>(0);

    let (_lake, loc, file_s) = lake_with_pipeline("test.toml", PIPELINE);
    let url = db.url();
    let env = [("PG_URL", url.as_str())];
    let run = crate::support::gamelake(&["--lake", &loc, "ingest", &file_s], &env);
    let summary = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{summary}");
    // A summary line per table: its rows, and the table version they were committed as.
    let count = expected.split('|').next().unwrap();
    assert!(
        summary.contains(&format!("game.players: {count} rows in "))
            && summary.contains("committed as table version 1"),
        "{summary}"
    );
    let q =
        "SELECT count(*) || '|' || sum(player_id) || '|' || sum(balance) AS v FROM game.players";
    let got = gamelake_ok(&["--lake", &loc, "sql", "-c", q, "--format", "csv"], &[]);
    assert_eq!(got, format!("v\n{expected}\n"));
    let shapes = gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            "SELECT * FROM game.shapes ORDER BY id",
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(shapes, "id,label\n1,circle\n2,\n");

    // A second run replaces the copy and advances the pipeline's position by one.
    client
        .batch_execute("INSERT INTO players VALUES (7, 'tokyo', 1, now())")
        .await
        .unwrap();
    // With RUST_LOG, the run also logs what it did, one plain-text line per event.
    let logged = [("PG_URL", url.as_str()), ("RUST_LOG", "gamelake=info")];
    let run = crate::support::gamelake(&["--lake", &loc, "ingest", &file_s], &logged);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log sent to a pipe: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("snapshot started")
            && l.contains("table=game.players")
            && l.contains("parts=4")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("table ingested")
            && l.contains("table=game.players")
            && l.contains("mode=Snapshot")
            && l.contains("committed as table version 2")),
        "{log}"
    );
    let got = gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            "SELECT count(*) AS n FROM game.players WHERE player_id = 7",
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(got, "n\n1\n");
    let history = gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            "SELECT txn FROM game.\"players$history\" WHERE txn IS NOT NULL ORDER BY version",
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(
        history,
        "txn\ngamelake:test:game.players=1\ngamelake:test:game.players=2\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pipelines_are_refused_before_anything_is_written() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client.batch_execute("CREATE TABLE players (player_id bigint, spot point); CREATE TABLE shapes (id int, label text);").await.unwrap();
    let lake = TempLake::new();
    let loc = lake.location();
    let file = lake.path().join("p.toml");
    let file_s = file.display().to_string();
    let url = db.url();
    let env = [("PG_URL", url.as_str())];

    // A typo: the file, the line and the key.
    std::fs::write(
        &file,
        PIPELINE.replace(
            "mode = \"snapshot\"\nsort_by",
            "mdoe = \"snapshot\"\nsort_by",
        ),
    )
    .unwrap();
    let err = gamelake_err(&["pipeline", "validate", &file_s], &env);
    assert!(
        err.contains(&format!("{file_s}:9:1")) && err.contains("mdoe"),
        "{err}"
    );

    // A missing environment variable is named.
    std::fs::write(&file, PIPELINE).unwrap();
    let err = gamelake_err(&["pipeline", "validate", &file_s], &[]);
    assert!(err.contains("PG_URL is not set"), "{err}");

    // An unsupported column type: the dry run names it and the cast that fixes it.
    let err = gamelake_err(&["--lake", &loc, "ingest", &file_s, "--dry-run"], &env);
    assert!(err.contains("\"spot\"") && err.contains("::text"), "{err}");
    let err = gamelake_err(&["--lake", &loc, "ingest", &file_s], &env);
    assert!(err.contains("\"spot\""), "{err}");
    assert!(
        !lake.path().join("game/players").exists(),
        "nothing may be written"
    );

    // A wrong password never shows the password.
    std::fs::write(
        &file,
        PIPELINE.replace("${PG_URL}", "postgres://nobody:hunter2@127.0.0.1:5432/nodb"),
    )
    .unwrap();
    let err = gamelake_err(&["--lake", &loc, "ingest", &file_s], &[]);
    assert!(!err.contains("hunter2") && err.contains("***"), "{err}");
}

#[test]
fn shipped_pipelines_are_valid() {
    for entry in std::fs::read_dir(repo_root().join("pipelines")).unwrap() {
        let path = entry.unwrap().path().display().to_string();
        gamelake_ok(
            &["pipeline", "validate", &path],
            &[
                ("PG_URL", "host=127.0.0.1"),
                ("LOG_DIR", "/data/v1-logs"),
                ("MYSQL_URL", "mysql://root@127.0.0.1:3306/v1game"),
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_snapshots_leave_all_or_nothing_and_a_rerun_finishes() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE players (player_id bigint, region text, balance numeric(12,2));
             INSERT INTO players SELECT g, 'r' || (g % 5), g * 0.5 FROM generate_series(1, 300000) g;
             CREATE TABLE shapes (id int, label text);",
        )
        .await
        .unwrap();
    let (_lake, loc, file_s) = lake_with_pipeline("test.toml", PIPELINE);
    let url = db.url();
    let check = "SELECT count(*) || '|' || count(DISTINCT player_id) || '|' || sum(balance) AS v FROM game.players";
    let full = "v\n300000|300000|22500075000.00\n";
    // kill -9 at different moments of the copy and the commit.
    for delay_ms in [150u64, 400, 700, 1000, 1400, 2000] {
        ingest_killed_after(&loc, &file_s, &url, delay_ms);
        // Whatever the moment, the table is absent or a complete snapshot: never partial.
        let out = crate::support::gamelake(
            &["--lake", &loc, "sql", "-c", check, "--format", "csv"],
            &[],
        );
        if out.status.success() {
            let got = String::from_utf8_lossy(&out.stdout).to_string();
            if got != full {
                // The one other state: killed between creating a new table (version 0, no rows)
                // and committing its first rows.
                let versions = gamelake_ok(
                    &[
                        "--lake",
                        &loc,
                        "sql",
                        "-c",
                        "SELECT max(version) AS v FROM game.\"players$history\"",
                        "--format",
                        "csv",
                    ],
                    &[],
                );
                let empty = got == "v\n\"\"\n" || got == "v\n\n";
                assert!(
                    empty && versions == "v\n0\n",
                    "after a kill at {delay_ms} ms: {got} {versions}"
                );
            }
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("does not exist"),
                "after a kill at {delay_ms} ms: {err}"
            );
        }
    }
    gamelake_ok(
        &["--lake", &loc, "ingest", &file_s],
        &[("PG_URL", url.as_str())],
    );
    assert_eq!(
        gamelake_ok(
            &["--lake", &loc, "sql", "-c", check, "--format", "csv"],
            &[]
        ),
        full
    );
}

const INCREMENTAL: &str = r#"name = "inc"
[source]
kind = "postgres"
url = "${PG_URL}"
[[table]]
from = "public.orders"
to = "game.orders"
mode = "incremental"
key = ["order_id"]
cursor = "updated_at"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_merges_changes_and_misses_no_late_commit() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, amount numeric(12,2), tags text[], updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO orders (order_id, amount, tags) SELECT g, g, ARRAY['a', 'b'] FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    let (_lake, loc, file_s) = lake_with_pipeline("inc.toml", INCREMENTAL);
    let url = db.url();
    let env = [("PG_URL", url.as_str())];
    let state = "SELECT count(*) || '|' || count(DISTINCT order_id) || '|' || sum(amount) AS v FROM game.orders";
    gamelake_ok(&["--lake", &loc, "ingest", &file_s], &env);
    assert_eq!(
        gamelake_ok(
            &["--lake", &loc, "sql", "-c", state, "--format", "csv"],
            &[]
        ),
        "v\n1000|1000|500500.00\n"
    );

    // A transaction starts and writes (its rows carry its start time), but commits late...
    let late = connect(&db.url()).await.unwrap();
    late.batch_execute("BEGIN; INSERT INTO orders (order_id, amount) VALUES (5001, 1)")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // ...while later transactions commit first.
    client
        .batch_execute("INSERT INTO orders (order_id, amount) VALUES (5002, 2); UPDATE orders SET amount = 0, updated_at = now() WHERE order_id = 1;")
        .await
        .unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file_s], &env);
    // What has committed is taken; the open transaction's row is not visible yet, and the
    // run's bound stays at or before that transaction's start.
    assert_eq!(
        gamelake_ok(
            &["--lake", &loc, "sql", "-c", state, "--format", "csv"],
            &[]
        ),
        "v\n1001|1001|500501.00\n"
    );
    late.batch_execute("COMMIT").await.unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file_s], &env);
    // Every row once: the late insert, the later insert, the update merged by key.
    assert_eq!(
        gamelake_ok(
            &["--lake", &loc, "sql", "-c", state, "--format", "csv"],
            &[]
        ),
        "v\n1002|1002|500502.00\n"
    );
    // A run with nothing new changes nothing.
    gamelake_ok(&["--lake", &loc, "ingest", &file_s], &env);
    assert_eq!(
        gamelake_ok(
            &["--lake", &loc, "sql", "-c", state, "--format", "csv"],
            &[]
        ),
        "v\n1002|1002|500502.00\n"
    );
}

#[test]
fn snapshot_benchmark_runs_at_a_tiny_scale() {
    let text = crate::support::run_tiny_benchmark("pg_snapshot.py", &["--rows", "2000"]);
    for row in [
        "raw COPY binary",
        "gamelake ingest",
        "DuckDB postgres extension",
    ] {
        assert!(text.contains(row), "{row} missing from:\n{text}");
    }
}

const ARCHIVE: &str = r#"name = "arc"
[source]
kind = "postgres"
url = "${PG_URL}"
[[table]]
from = "public.purchases"
to = "game.purchases"
mode = "archive"
key = ["purchase_id"]
time_column = "purchased_at"
archive_after = "365d"
view = "game.purchases_all"
"#;

/// PostgreSQL ∪ lake: (rows in PG, rows in the lake, duplicate keys in the lake, keys in both).
async fn archive_state(db: &TestDb, loc: &str) -> (i64, i64, i64, i64) {
    let session = crate::support::session_at(loc, Default::default()).await;
    let pg = gamelake::sources::postgres::PgCatalog::load(&db.url())
        .await
        .unwrap();
    session
        .context()
        .register_catalog("pg", std::sync::Arc::new(pg));
    let pg_rows: i64 = crate::support::rows(&session, "SELECT count(*) FROM pg.public.purchases")
        .await[0]
        .parse()
        .unwrap();
    if !session
        .lake()
        .is_table(&gamelake::lake::TableRef::parse("game.purchases").unwrap())
        .await
        .unwrap()
    {
        return (pg_rows, 0, 0, 0);
    }
    let lake = crate::support::rows(
        &session,
        "SELECT count(*), count(*) - count(DISTINCT purchase_id) FROM game.purchases",
    )
    .await;
    let lake: Vec<i64> = lake[0].split('|').map(|v| v.parse().unwrap()).collect();
    let both: i64 = crate::support::rows(
        &session,
        "SELECT count(*) FROM game.purchases l JOIN pg.public.purchases p ON l.purchase_id = p.purchase_id",
    )
    .await[0]
        .parse()
        .unwrap();
    (pg_rows, lake[0], lake[1], both)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_moves_old_rows_exactly_once_even_when_killed() {
    const ROWS: i64 = 1_000_000;
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    // A million purchases over two years: about half older than 365 days.
    client
        .batch_execute(&format!(
            "CREATE TABLE purchases (purchase_id bigint PRIMARY KEY, amount numeric(12,2), purchased_at timestamptz NOT NULL);
             INSERT INTO purchases SELECT g, g % 100, now() - (g % 730) * interval '1 day' - interval '1 hour' FROM generate_series(1, {ROWS}) g;"
        ))
        .await
        .unwrap();
    let old: i64 = client
        .query_one(
            "SELECT count(*) FROM purchases WHERE purchased_at < now() - interval '365 days'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let total: String = client
        .query_one("SELECT sum(amount)::text FROM purchases", &[])
        .await
        .unwrap()
        .get(0);
    let (lake, loc, file_s) = lake_with_pipeline("arc.toml", ARCHIVE);
    let url = db.url();
    // kill -9 twenty times, at moments spread over reading, committing and deleting.
    for i in 0..20u64 {
        let delay_ms = 150 + i * 170;
        ingest_killed_after(&loc, &file_s, &url, delay_ms);
        // The killed client's server backend may still finish a statement in flight: measure
        // once the database is quiet.
        for _ in 0..100 {
            let busy: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if busy == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (pg, lake_rows, duplicates, both) = archive_state(&db, &loc).await;
        // Nothing lost (every row in PostgreSQL or the lake), nothing doubled in the lake.
        assert_eq!(
            pg + lake_rows - both,
            ROWS,
            "a row was lost after a kill at {delay_ms} ms"
        );
        assert_eq!(
            duplicates, 0,
            "the lake holds a key twice after a kill at {delay_ms} ms"
        );
        // Once the hot + cold view exists, it holds every row exactly once.
        if lake.path().join("_views/game/purchases_all.sql").exists() {
            assert_eq!(
                gamelake_ok(
                    &[
                        "--lake", &loc, "--pg-url", &url, "sql", "-c", VIEW_CHECK, "--format",
                        "csv"
                    ],
                    &[]
                ),
                format!("v\n{ROWS}|{ROWS}|{total}\n"),
                "the view after a kill at {delay_ms} ms"
            );
        }
    }
    gamelake_ok(
        &["--lake", &loc, "ingest", &file_s],
        &[("PG_URL", url.as_str())],
    );
    assert_eq!(archive_state(&db, &loc).await, (ROWS - old, old, 0, 0));
    // A rerun with nothing old left changes nothing.
    gamelake_ok(
        &["--lake", &loc, "ingest", &file_s],
        &[("PG_URL", url.as_str())],
    );
    assert_eq!(archive_state(&db, &loc).await, (ROWS - old, old, 0, 0));
    let view_sql = [
        "--lake", &loc, "--pg-url", &url, "sql", "-c", VIEW_CHECK, "--format", "csv",
    ];
    assert_eq!(
        gamelake_ok(&view_sql, &[]),
        format!("v\n{ROWS}|{ROWS}|{total}\n")
    );
}

/// Names from the pipeline file are taken as written and quoted (mixed case, spaces), a key of
/// two columns tells rows apart that share one of them, and old rows with a NULL in their key
/// stay in PostgreSQL instead of failing every run's verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_quotes_names_and_leaves_rows_without_a_key_in_postgres() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE \"Purchase Log\" (\"Region\" text, \"Id\" bigint, \"BoughtAt\" timestamptz NOT NULL);
             INSERT INTO \"Purchase Log\" SELECT r, g, now() - interval '800 days' FROM generate_series(1, 10) g, unnest(ARRAY['bj', 'sh']) r;
             INSERT INTO \"Purchase Log\" SELECT 'bj', NULL, now() - interval '800 days' FROM generate_series(1, 3);
             INSERT INTO \"Purchase Log\" SELECT 'sh', g, now() FROM generate_series(11, 15) g;",
        )
        .await
        .unwrap();
    let pipeline = r#"name = "odd"
[source]
kind = "postgres"
url = "${PG_URL}"
[[table]]
from = "public.Purchase Log"
to = "game.purchase_log"
mode = "archive"
key = ["Region", "Id"]
time_column = "BoughtAt"
archive_after = "365d"
"#;
    let (_lake, loc, file_s) = lake_with_pipeline("odd.toml", pipeline);
    let url = db.url();
    for _ in 0..2 {
        gamelake_ok(
            &["--lake", &loc, "ingest", &file_s],
            &[("PG_URL", url.as_str())],
        );
    }
    let left: Vec<(Option<i64>,)> = client
        .query("SELECT \"Id\" FROM \"Purchase Log\" ORDER BY \"Id\"", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0),))
        .collect();
    let expected: Vec<(Option<i64>,)> = (11..=15)
        .map(|i| (Some(i),))
        .chain((0..3).map(|_| (None,)))
        .collect();
    assert_eq!(left, expected, "recent rows and rows without a key stay");
    assert_eq!(
        gamelake_ok(
            &[
                "--lake",
                &loc,
                "sql",
                "-c",
                "SELECT count(*) AS n FROM game.purchase_log",
                "--format",
                "csv"
            ],
            &[]
        ),
        "n\n20\n"
    );
}

/// Rows, distinct keys and the amount total of the hot + cold view.
const VIEW_CHECK: &str = "SELECT count(*) || '|' || count(DISTINCT purchase_id) || '|' || sum(amount) AS v FROM game.purchases_all";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_schema_changes_between_runs_fail_clearly_and_commit_nothing() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, amount numeric(12,2), updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO orders (order_id, amount) SELECT g, g FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    let (_lake, loc, file_s) = lake_with_pipeline("inc.toml", INCREMENTAL);
    let url = db.url();
    let env = [("PG_URL", url.as_str())];
    gamelake_ok(&["--lake", &loc, "ingest", &file_s], &env);
    let versions = "SELECT max(version) AS v FROM game.\"orders$history\"";
    let before = gamelake_ok(
        &["--lake", &loc, "sql", "-c", versions, "--format", "csv"],
        &[],
    );

    // A dropped column, then a changed type: each run fails with the column named.
    client
        .batch_execute(
            "ALTER TABLE orders DROP COLUMN amount; INSERT INTO orders (order_id) VALUES (101);",
        )
        .await
        .unwrap();
    let err = gamelake_err(&["--lake", &loc, "ingest", &file_s], &env);
    assert!(err.contains("amount"), "{err}");
    client
        .batch_execute("ALTER TABLE orders ADD COLUMN amount text; UPDATE orders SET amount = 'x', updated_at = now();")
        .await
        .unwrap();
    let err = gamelake_err(&["--lake", &loc, "ingest", &file_s], &env);
    assert!(err.contains("amount"), "{err}");
    assert!(err.contains("--full-refresh"), "{err}");
    // Nothing was committed by the failed runs.
    assert_eq!(
        gamelake_ok(
            &["--lake", &loc, "sql", "-c", versions, "--format", "csv"],
            &[]
        ),
        before
    );
    // A full refresh copies the table again, with its new columns.
    gamelake_ok(&["--lake", &loc, "ingest", &file_s, "--full-refresh"], &env);
    let out = gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            "SELECT count(*) AS n, min(amount) AS a FROM game.orders",
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(out, "n,a\n101,x\n");
}

/// A demo lake at the test size, a fresh PostgreSQL database, and a connection to it.
pub(crate) async fn demo_lake_and_database() -> (TempLake, TestDb, tokio_postgres::Client) {
    let lake = crate::support::demo_lake();
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    (lake, db, client)
}

/// The day the tests compute recommendations as of: the day after the demo lake's last (the
/// pipeline's `today` would find nobody who played lately in the fixed demo data).
pub(crate) const RECO_AS_OF: &str = "2026-11-01";

/// `pipelines/recommendations.toml` as the tests run it, written into `dir`: as of
/// [`RECO_AS_OF`], its SQL files found in this checkout, then `edit` applied to its text.
pub(crate) fn recommendations_pipeline(
    dir: &std::path::Path,
    edit: impl Fn(String) -> String,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("pipelines/recommendations.toml"))
        .unwrap()
        .replace("as_of = \"today\"", &format!("as_of = \"{RECO_AS_OF}\""))
        .replace(
            "\"../queries/",
            &format!("\"{}/queries/", repo_root().display()),
        );
    assert!(text.contains(RECO_AS_OF) && !text.contains("../queries"));
    let path = dir.join("recommendations.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// The rows of a query over the lake at `loc` (through `gamelake sql`), as CSV lines.
pub(crate) fn lake_rows(loc: &str, sql: &str) -> Vec<String> {
    let csv = crate::support::sql_csv(loc, &["-c", sql]);
    csv.lines().skip(1).map(str::to_string).collect()
}

/// PostgreSQL tables the game is reading: seven rows of an earlier set in each.
const EARLIER_SUGGESTIONS: &str = "CREATE SCHEMA reco;
     CREATE TABLE reco.item_suggestions (player_id bigint, item_id integer, rank integer, score double precision, reason text, computed_at date, PRIMARY KEY (player_id, item_id));
     INSERT INTO reco.item_suggestions SELECT g, 1, 1, 1.0, 'interests', '2026-01-01' FROM generate_series(1, 7) g;
     CREATE TABLE reco.friend_suggestions (player_id bigint, suggested_id bigint, rank integer, score double precision, mutual_friends integer, shared_interests double precision, computed_at date, PRIMARY KEY (player_id, suggested_id));
     INSERT INTO reco.friend_suggestions SELECT g, g + 1, 1, 1.0, 1, 0.0, '2026-01-01' FROM generate_series(1, 7) g;";

/// `[sink] kind = "postgres"`: `pipelines/recommendations.toml` recomputes the suggestions in
/// the lake from the saved queries and publishes them into real PostgreSQL tables; a reader
/// polling during the refresh sees the old set or the new one in each table, never an empty or
/// partial one; the rows equal the lake's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_pipeline_publishes_suggestions_atomically() {
    use crate::support::gamelake;

    let (lake, db, client) = demo_lake_and_database().await;
    let (loc, url) = (lake.location(), db.url());
    let dir = tempfile::tempdir().unwrap();
    let pipeline = recommendations_pipeline(dir.path(), |t| t);
    client.batch_execute(EARLIER_SUGGESTIONS).await.unwrap();

    // A reader in a loop on its own connection while the pipeline runs (twice).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let client = connect(&url).await.unwrap();
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let row = client
                    .query_one(
                        "SELECT (SELECT count(*) FROM reco.item_suggestions), (SELECT count(*) FROM reco.friend_suggestions)",
                        &[],
                    )
                    .await
                    .unwrap();
                seen.insert((row.get::<_, i64>(0), row.get::<_, i64>(1)));
            }
            seen
        })
    };
    let mut counts = Vec::new();
    for _ in 0..2 {
        let out = gamelake(
            &["--lake", &loc, "ingest", pipeline.to_str().unwrap()],
            &[("PG_URL", &url)],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let count = |table: &str| -> i64 {
            lake_rows(&loc, &format!("SELECT count(*) FROM {table}"))[0]
                .parse()
                .unwrap()
        };
        let (items, friends) = (
            count("reco.item_suggestions"),
            count("reco.friend_suggestions"),
        );
        assert!(items > 1000 && friends > 100, "{items} {friends}");
        for (table, n) in [
            ("reco.item_suggestions", items),
            ("reco.friend_suggestions", friends),
        ] {
            assert!(
                stderr.contains(&format!("{table}: {n} rows published")),
                "{stderr}"
            );
        }
        counts.push((items, friends));
    }
    assert_eq!(
        counts[0], counts[1],
        "the same day gives the same suggestions"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.unwrap();
    let (items, friends) = counts[0];
    assert!(
        seen.iter()
            .all(|&(i, f)| (i == 7 || i == items) && (f == 7 || f == friends)),
        "the reader saw {seen:?}"
    );
    assert!(seen.contains(&(items, friends)), "the reader saw {seen:?}");

    // The tables hold exactly the lake's rows, computed as of the pipeline's day.
    let published = client
        .query(
            "SELECT player_id, item_id, rank, score, reason, computed_at::text FROM reco.item_suggestions ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let published: Vec<String> = published
        .iter()
        .map(|r| {
            format!(
                "{},{},{},{:?},{},{}",
                r.get::<_, i64>(0),
                r.get::<_, i32>(1),
                r.get::<_, i32>(2),
                r.get::<_, f64>(3),
                r.get::<_, String>(4),
                r.get::<_, String>(5)
            )
        })
        .collect();
    let ours = lake_rows(
        &loc,
        "SELECT player_id, item_id, rank, score, reason, computed_at FROM reco.item_suggestions ORDER BY 1, 2",
    );
    assert_eq!(published, ours);
    assert!(ours.iter().all(|l| l.ends_with(RECO_AS_OF)), "{ours:?}");
    let friends_published = client
        .query(
            "SELECT player_id, suggested_id FROM reco.friend_suggestions ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let friends_published: Vec<String> = friends_published
        .iter()
        .map(|r| format!("{},{}", r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .collect();
    assert_eq!(
        friends_published,
        lake_rows(
            &loc,
            "SELECT player_id, suggested_id FROM reco.friend_suggestions ORDER BY 1, 2"
        )
    );
}

/// A `[sink]` whose PostgreSQL table does not fit the query's result (a column of another type,
/// a column missing) fails before any row is loaded, naming the column, and the game keeps
/// reading the old rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_into_a_table_that_does_not_fit_fails_and_keeps_the_old_rows() {
    let (lake, db, client) = demo_lake_and_database().await;
    let (loc, url) = (lake.location(), db.url());
    let dir = tempfile::tempdir().unwrap();
    let pipeline = recommendations_pipeline(dir.path(), |t| t);
    let cases = [
        (
            "player_id bigint, item_id integer, rank integer, score uuid, reason text, computed_at date",
            "\"score\" is of type uuid",
        ),
        (
            "player_id bigint, item_id integer, rank integer, score double precision, reason text",
            "column \"computed_at\" of relation \"item_suggestions\" does not exist",
        ),
    ];
    for (columns, expected) in cases {
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS reco CASCADE; CREATE SCHEMA reco;
                 CREATE TABLE reco.item_suggestions ({columns});
                 INSERT INTO reco.item_suggestions (player_id, item_id) SELECT g, 1 FROM generate_series(1, 7) g;"
            ))
            .await
            .unwrap();
        let stderr = gamelake_err(
            &["--lake", &loc, "ingest", pipeline.to_str().unwrap()],
            &[("PG_URL", &url)],
        );
        assert!(
            stderr.contains("reco.item_suggestions: the table does not fit the query's result")
                && stderr.contains(expected)
                && stderr.contains("CAST"),
            "{columns}: {stderr}"
        );
        let kept: i64 = client
            .query_one("SELECT count(*) FROM reco.item_suggestions", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, 7, "{columns}: the old rows stay");
    }
}

/// Incremental runs killed (SIGKILL) at any point while a writer inserts and updates: after a
/// last run, the lake holds every source row once, in its last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_incremental_runs_leave_every_row_once() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, amount numeric(12,2), tags text[], updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO orders (order_id, amount) SELECT g, g FROM generate_series(1, 200000) g;",
        )
        .await
        .unwrap();
    let (_lake, loc, file_s) = lake_with_pipeline("inc.toml", INCREMENTAL);
    let url = db.url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let client = connect(&url).await.unwrap();
            let mut next = 200_001i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .batch_execute(&format!(
                        "INSERT INTO orders (order_id, amount) SELECT g, 1 FROM generate_series({next}, {}) g;
                         UPDATE orders SET amount = amount + 1, updated_at = now() WHERE order_id % 997 = {};",
                        next + 99,
                        next % 997
                    ))
                    .await
                    .unwrap();
                next += 100;
            }
        })
    };
    for round in 0..10u64 {
        let (loc, file, url) = (loc.clone(), file_s.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            ingest_killed_after(&loc, &file, &url, 150 + round * 173 % 900)
        })
        .await
        .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    gamelake_ok(
        &["--lake", &loc, "ingest", &file_s],
        &[("PG_URL", url.as_str())],
    );
    let expected: String = client
        .query_one(
            "SELECT count(*) || '|' || count(DISTINCT order_id) || '|' || sum(amount) FROM orders",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let state = "SELECT CAST(count(*) AS VARCHAR) || '|' || CAST(count(DISTINCT order_id) AS VARCHAR) || '|' || CAST(sum(amount) AS VARCHAR) AS v FROM game.orders";
    assert_eq!(
        gamelake_ok(
            &["--lake", &loc, "sql", "-c", state, "--format", "csv"],
            &[]
        ),
        format!("v\n{expected}\n")
    );
}

/// A reader that cannot see other users' sessions in pg_stat_activity cannot bound its window
/// by their open transactions: the run refuses, naming the grant, instead of risking rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_refuses_a_reader_blind_to_other_sessions() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    let (reader, writer) = (db.role("reader"), db.role("writer"));
    client
        .batch_execute(&format!(
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, amount numeric(12,2), tags text[], updated_at timestamptz NOT NULL DEFAULT now());
             CREATE ROLE {reader} LOGIN; CREATE ROLE {writer} LOGIN;
             GRANT SELECT ON orders TO {reader}; GRANT ALL ON orders TO {writer};"
        ))
        .await
        .unwrap();
    let as_role = |role: &str| db.url().replace("user=postgres", &format!("user={role}"));
    let open = connect(&as_role(&writer)).await.unwrap();
    open.batch_execute("BEGIN; INSERT INTO orders (order_id, amount) VALUES (1, 1)")
        .await
        .unwrap();
    let (_lake, loc, file) = lake_with_pipeline("inc.toml", INCREMENTAL);
    let reader_url = as_role(&reader);
    let err = gamelake_err(
        &["--lake", &loc, "ingest", &file],
        &[("PG_URL", reader_url.as_str())],
    );
    assert!(
        err.contains(&format!("GRANT pg_read_all_stats TO {reader}")),
        "{err}"
    );
    client
        .batch_execute(&format!("GRANT pg_read_all_stats TO {reader}"))
        .await
        .unwrap();
    gamelake_ok(
        &["--lake", &loc, "ingest", &file],
        &[("PG_URL", reader_url.as_str())],
    );
    open.batch_execute("COMMIT").await.unwrap();
}

const SEQUENCE: &str = r#"name = "seq"
[source]
kind = "postgres"
url = "${PG_URL}"
[[table]]
from = "public.events"
to = "game.events"
mode = "incremental"
key = ["id"]
cursor = "id"
cursor_overlap = 100
"#;

/// An integer cursor (a sequence id) on an insert-only table: a transaction that took its id
/// before others but commits after a run read theirs is still taken, by the overlap, and the
/// rows read twice are in the lake once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_cursor_takes_late_ids_within_the_overlap() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE events (id bigserial PRIMARY KEY, v int, updated_at timestamptz DEFAULT now());
             INSERT INTO events (v) SELECT g FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    let (_lake, loc, file) = lake_with_pipeline("seq.toml", SEQUENCE);
    let url = db.url();
    let env = [("PG_URL", url.as_str())];
    let state = "SELECT CAST(count(*) AS VARCHAR) || '|' || CAST(count(DISTINCT id) AS VARCHAR) || '|' || CAST(sum(v) AS VARCHAR) AS v FROM game.events";
    let lake_state = || {
        gamelake_ok(
            &["--lake", &loc, "sql", "-c", state, "--format", "csv"],
            &[],
        )
    };
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    assert_eq!(lake_state(), "v\n1000|1000|500500\n");
    let late = connect(&db.url()).await.unwrap();
    late.batch_execute("BEGIN; INSERT INTO events (v) VALUES (7)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO events (v) SELECT 1 FROM generate_series(1, 50)")
        .await
        .unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    assert_eq!(lake_state(), "v\n1050|1050|500550\n");
    late.batch_execute("COMMIT").await.unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    assert_eq!(lake_state(), "v\n1051|1051|500557\n");

    // An overlap on a timestamp cursor is a mistake the run names.
    let (_lake2, loc2, file2) = lake_with_pipeline(
        "seq.toml",
        &SEQUENCE.replace("cursor = \"id\"", "cursor = \"updated_at\""),
    );
    let err = gamelake_err(&["--lake", &loc2, "ingest", &file2], &env);
    assert!(
        err.contains("cursor_overlap is for integer cursors"),
        "{err}"
    );
}
