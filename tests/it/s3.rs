//! The lake on a real S3-compatible server (moto on loopback): the README session, and
//! concurrent writers that must not lose or corrupt commits.

use std::sync::Arc;

use gamelake::lake::LakeLocation;
use gamelake::{Lake, QuerySettings, Session};

use crate::support::{S3Server, gamelake_ok, rows};

#[test]
fn readme_session_on_s3() {
    let s3 = S3Server::start();
    let env: Vec<(&str, String)> = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let lake = s3.lake_url("lake");
    let out = gamelake_ok(
        &[
            "--lake",
            &lake,
            "sql",
            "-c",
            "CREATE TABLE shop.orders AS SELECT * FROM (VALUES (1,'a',10.5),(2,'b',3.0)) v(id,name,amount)",
            "-c",
            "SELECT name, amount FROM shop.orders ORDER BY id",
            "--format",
            "csv",
        ],
        &env,
    );
    assert_eq!(out, "name,amount\na,10.5\nb,3.0\n");
    // A new process that only reads (as a BI server or a report would).
    let out = gamelake_ok(
        &[
            "--lake",
            &lake,
            "sql",
            "-c",
            "SELECT sum(amount) AS total FROM shop.orders",
            "--format",
            "csv",
        ],
        &env,
    );
    assert_eq!(out, "total\n13.5\n");
    let history = gamelake_ok(
        &[
            "--lake",
            &lake,
            "lake",
            "history",
            "shop.orders",
            "--format",
            "csv",
        ],
        &env,
    );
    assert_eq!(
        history.lines().count(),
        3,
        "header, rows commit, create commit: {history}"
    );
}

async fn session(s3: &S3Server, prefix: &str) -> Session {
    let location = LakeLocation::parse_with_options(&s3.lake_url(prefix), s3.options()).unwrap();
    Session::new(
        Arc::new(Lake::at(location).unwrap()),
        &QuerySettings::default(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_s3_lose_nothing() {
    let s3 = S3Server::start();
    let first = session(&s3, "concurrent").await;
    first
        .sql("CREATE TABLE game.hits AS SELECT 0 AS writer, 0 AS n")
        .await
        .unwrap();
    // Separate sessions and lakes, as separate processes would have.
    let mut tasks = Vec::new();
    for writer in 1..=3 {
        let s = session(&s3, "concurrent").await;
        tasks.push(tokio::spawn(async move {
            for n in 1..=4 {
                s.sql(&format!("INSERT INTO game.hits VALUES ({writer}, {n})"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        rows(
            &first,
            "SELECT count(*), count(DISTINCT writer * 10 + n) FROM game.hits"
        )
        .await,
        vec!["13|13"]
    );
    // Every commit is its own version: 0 (create), 1 (first rows) + 12 inserts, none twice.
    assert_eq!(
        rows(
            &first,
            "SELECT count(*), min(version), max(version) FROM game.\"hits$history\""
        )
        .await,
        vec!["14|0|13"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_enforces_conditional_put() {
    let s3 = S3Server::start();
    let location = LakeLocation::parse_with_options(&s3.lake_url("probe"), s3.options()).unwrap();
    let lake = Lake::at(location).unwrap();
    lake.ensure_safe_commits()
        .await
        .expect("moto enforces If-None-Match");
}

#[test]
fn store_without_conditional_put_is_refused_unless_allowed() {
    let s3 = S3Server::start_without_conditional_put();
    let env: Vec<(&str, String)> = s3.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let lake = s3.lake_url("unsafe");
    let create = "CREATE TABLE shop.t AS SELECT 1 AS x";
    let err = crate::support::gamelake_err(&["--lake", &lake, "sql", "-c", create], &env);
    assert!(err.contains("does not enforce conditional writes"), "{err}");
    assert!(err.contains("GAMELAKE_ALLOW_UNSAFE_WRITES"), "{err}");
    // Reading still works, and nothing was written.
    let out = gamelake_ok(
        &[
            "--lake",
            &lake,
            "sql",
            "-c",
            "SHOW TABLES",
            "--format",
            "csv",
        ],
        &env,
    );
    assert!(!out.contains("shop"), "{out}");
    // A single writer may opt in.
    env.push(("GAMELAKE_ALLOW_UNSAFE_WRITES", "true"));
    gamelake_ok(&["--lake", &lake, "sql", "-c", create], &env);
}
