//! Commits on an S3 store that ignores `If-None-Match` (Aliyun OSS, some Ceph): concurrent
//! writers lose commits without the PostgreSQL commit coordinator and none with it; a writer
//! killed between ratifying and writing its commit leaves a readable table with no gap; a
//! commit file written outside the coordinator is never overwritten where the store has a
//! no-overwrite header.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use gamelake::lake::write::{WriteMode, WriteOptions, write_batches};
use gamelake::lake::{Lake, TableRef};
use gamelake::query::{QuerySettings, Session};
use gamelake::secret::Secret;

use crate::postgres::TestDb;
use crate::support::{S3Server, gamelake, gamelake_ok, rows, session_at};

const WRITERS: i64 = 4;

/// Appends per writer: 50 in CI (each append reopens the table through moto, whose one Python
/// process is the bottleneck); `GAMELAKE_RACE_APPENDS=200` for the issue's 4 × 200.
fn appends() -> i64 {
    std::env::var("GAMELAKE_RACE_APPENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn row(writer: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("writer", DataType::Int64, false),
        Field::new("n", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![writer])),
            Arc::new(Int64Array::from(vec![n])),
        ],
    )
    .unwrap()
}

/// `WRITERS` tasks append `APPENDS` one-row commits each to `game.race`; returns how many
/// appends were acknowledged (returned Ok).
async fn race(lake: Lake) -> i64 {
    let lake = Arc::new(lake);
    let session = Session::new(lake.clone(), &QuerySettings::default())
        .await
        .unwrap();
    let table = TableRef::parse("game.race").unwrap();
    let state = session.write_state();
    write_batches(
        &lake,
        &table,
        &state,
        vec![row(-1, -1)],
        WriteOptions::new(WriteMode::Create),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (lake, table, state) = (lake.clone(), table.clone(), state.clone());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = 0;
            for n in 0..appends() {
                let options = WriteOptions::new(WriteMode::Append);
                match write_batches(&lake, &table, &state, vec![row(writer, n)], options).await {
                    Ok(_) => acknowledged += 1,
                    Err(e) => eprintln!("writer {writer}, append {n}: {e}"),
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = 0;
    for task in tasks {
        acknowledged += task.await.unwrap();
    }
    acknowledged
}

/// `gamelake --lake URL sql -c STATEMENT`, which must succeed.
fn sql_ok(url: &str, env: &[(&str, &str)], statement: &str) -> String {
    gamelake_ok(&["--lake", url, "sql", "-c", statement], env)
}

/// Every `(writer, n)` row the table holds, with how often.
async fn held(url: &str, s3: &S3Server) -> BTreeMap<(i64, i64), usize> {
    let reader = session_at(url, s3.options()).await;
    let mut found = BTreeMap::new();
    for line in rows(&reader, "SELECT writer, n FROM game.race WHERE writer >= 0").await {
        let (w, n) = line.split_once('|').unwrap();
        *found
            .entry((w.trim().parse().unwrap(), n.trim().parse().unwrap()))
            .or_default() += 1;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_lose_commits_without_the_coordinator_and_none_with_it() {
    let s3 = S3Server::start_without_conditional_put();
    let db = TestDb::new().await;
    // SAFETY: set before any other thread of this test process reads the environment
    // (nextest runs each test in its own process).
    unsafe { std::env::set_var("GAMELAKE_ALLOW_UNSAFE_WRITES", "true") };

    let unsafe_url = s3.lake_url("unsafe");
    let lake = Lake::open_with_options(&unsafe_url, s3.options()).unwrap();
    let acknowledged = race(lake).await;
    let found = held(&unsafe_url, &s3).await;
    let kept: usize = found.values().sum();
    assert!(
        (kept as i64) < acknowledged,
        "without a coordinator, racing writers on this store should lose commits: {kept} rows kept of {acknowledged} acknowledged"
    );
    eprintln!(
        "without the coordinator: {} of {acknowledged} acknowledged appends lost",
        acknowledged - kept as i64
    );

    let safe_url = s3.lake_url("coordinated");
    let lake = Lake::open_with_options(&safe_url, s3.options())
        .unwrap()
        .with_commit_coordinator(
            Secret::new(db.url()),
            gamelake::sources::postgres::connector(),
        )
        .unwrap();
    let acknowledged = race(lake).await;
    let found = held(&safe_url, &s3).await;
    assert_eq!(
        acknowledged,
        WRITERS * appends(),
        "every append acknowledged"
    );
    assert_eq!(found.len() as i64, WRITERS * appends(), "every append kept");
    assert!(found.values().all(|&n| n == 1), "no append doubled");
    let env: Vec<(&str, String)> = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let verified = gamelake_ok(&["--lake", &safe_url, "lake", "verify", "game.race"], &env);
    assert!(verified.contains("all readable"), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_between_ratify_and_write_leaves_no_gap() {
    let s3 = S3Server::start_without_conditional_put();
    let db = TestDb::new().await;
    let url = s3.lake_url("lake");
    let coordinator = db.url();
    let mut env: Vec<(&str, String)> = s3.env();
    env.push(("GAMELAKE_COMMIT_COORDINATOR", coordinator.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sql_ok(
        &url,
        &env,
        "CREATE TABLE game.race AS SELECT 0 AS writer, 0 AS n",
    );
    let count = |env: &[(&str, &str)]| {
        gamelake_ok(
            &[
                "--lake",
                &url,
                "sql",
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS c FROM game.race",
            ],
            env,
        )
    };
    let plain: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| *k != "GAMELAKE_COMMIT_COORDINATOR")
        .copied()
        .collect();
    for killed in 1..=3 {
        let mut crashing = env.clone();
        crashing.push(("GAMELAKE_CRASH_POINT", "after-ratify"));
        let insert = format!("INSERT INTO game.race VALUES ({killed}, {killed})");
        let out = gamelake(&["--lake", &url, "sql", "-c", &insert], &crashing);
        assert!(
            !out.status.success(),
            "the writer should have died between ratify and write"
        );
        // A reader that knows nothing of the coordinator (DuckDB, Spark, an old gamelake)
        // reads the table as it was: no gap, no half commit.
        assert_eq!(count(&plain), format!("c\n{killed}\n"), "kill {killed}");
        // A reader with the coordinator completes the ratified commit first: nothing lost.
        assert_eq!(count(&env), format!("c\n{}\n", killed + 1), "kill {killed}");
    }
    sql_ok(&url, &env, "INSERT INTO game.race VALUES (9, 9)");
    assert_eq!(count(&plain), "c\n5\n");
    let verified = gamelake_ok(&["--lake", &url, "lake", "verify", "game.race"], &plain);
    assert!(verified.contains("all readable"), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_file_written_outside_the_coordinator_is_never_overwritten() {
    let s3 = S3Server::start_like_oss();
    let db = TestDb::new().await;
    let url = s3.lake_url("lake");
    let mut env: Vec<(&str, String)> = s3.env();
    env.push(("GAMELAKE_COMMIT_COORDINATOR", db.url()));
    env.push((
        "GAMELAKE_FORBID_OVERWRITE_HEADER",
        "x-oss-forbid-overwrite".into(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sql_ok(
        &url,
        &env,
        "CREATE TABLE game.race AS SELECT 0 AS writer, 0 AS n",
    );
    let mut crashing = env.clone();
    crashing.push(("GAMELAKE_CRASH_POINT", "after-ratify"));
    let out = gamelake(
        &[
            "--lake",
            &url,
            "sql",
            "-c",
            "INSERT INTO game.race VALUES (1, 1)",
        ],
        &crashing,
    );
    assert!(!out.status.success());
    // A writer without the coordinator takes the ratified version's file first.
    let key = "lake/game/race/_delta_log/00000000000000000002.json";
    let rogue = r#"{"commitInfo":{"operation":"ROGUE"}}"#;
    s3.put_object(key, rogue);
    // The next writer completes the ratified version first, and the store refuses to replace
    // the file there: the writer stops and says why.
    let out = gamelake(
        &[
            "--lake",
            &url,
            "sql",
            "-c",
            "INSERT INTO game.race VALUES (2, 2)",
        ],
        &env,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("version 2 was written by a writer that does not use the commit coordinator"),
        "{stderr}"
    );
    assert_eq!(s3.get_object(key), rogue, "the store kept the file it had");
}
