//! The failover drill: a primary lake on loopback S3 (behind a proxy that can cut it off),
//! written by a log intake and a PostgreSQL pipeline, followed by `replicate --follow` into a
//! second lake on another S3 server. The primary is cut off mid-replication; readers of the
//! replica see a whole version; the replica is promoted and the writers moved to it; no
//! acknowledged log record and no pipeline row is lost or doubled across the switch; the old
//! primary, back, is fenced and refuses the old writers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::postgres::TestDb;
use crate::support::{
    S3Server, ServeProcess, TcpProxy, TempLake, gamelake, gamelake_err, gamelake_ok, rows,
    session_at,
};

const PIPELINE: &str = r#"name = "players"
[source]
kind = "postgres"
url = "${PG_URL}"
[[table]]
from = "public.players"
to = "game.players"
mode = "incremental"
key = ["id"]
cursor = "id"
cursor_overlap = 1000
"#;

const BATCH: usize = 20;

/// An intake config: `logs.events` with an id, committed every 200 ms, its write-ahead log in
/// `wal`, segments held until `replica` holds them.
fn intake_config(
    dir: &Path,
    name: &str,
    wal: &Path,
    replica: Option<&(String, String)>,
) -> PathBuf {
    let hold = replica.map_or(String::new(), |(url, endpoint)| {
        format!(
            "hold_until_replicated_in = \"{url}\"\nreplica_options = {{ AWS_ENDPOINT_URL = \"{endpoint}\" }}\n"
        )
    });
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[intake]\nwal_dir = \"{}\"\ncommit_interval = \"200ms\"\ncompact_interval = \"0s\"\n{hold}[[intake.tables]]\nname = \"logs.events\"\ncolumns = {{ id = \"bigint\" }}\nrequired = [\"id\"]\n",
            wal.display()
        ),
    )
    .unwrap();
    path
}

/// `gamelake --lake URL ...` with S3 settings pointing at `endpoint`.
fn run_at(
    url: &str,
    endpoint: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> std::process::Output {
    let mut all = vec!["--lake", url];
    all.extend_from_slice(args);
    let mut env = s3_env(endpoint);
    env.extend_from_slice(extra);
    gamelake(&all, &env)
}

fn s3_env(endpoint: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ALLOW_HTTP", "true"),
    ]
}

fn s3_options(endpoint: &str) -> std::collections::HashMap<String, String> {
    s3_env(endpoint)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Each id a lake table holds, with how often.
async fn ids(url: &str, endpoint: &str, sql: &str) -> BTreeMap<i64, usize> {
    let reader = session_at(url, s3_options(endpoint)).await;
    let mut found = BTreeMap::new();
    for line in rows(&reader, sql).await {
        *found
            .entry(line.trim().parse::<i64>().unwrap())
            .or_default() += 1;
    }
    found
}

fn spawn_replication(from: &str, from_endpoint: &str, to: &str, to_endpoint: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gamelake"))
        .args([
            "--lake",
            from,
            "replicate",
            "--to",
            to,
            "--follow",
            "--interval",
            "200ms",
        ])
        .args(["--to-option", &format!("AWS_ENDPOINT_URL={to_endpoint}")])
        .envs(s3_env(from_endpoint))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_drill_loses_no_record_and_fences_the_old_primary() {
    let primary_server = S3Server::start();
    let replica_server = S3Server::start();
    let mut cut = TcpProxy::start(
        primary_server
            .endpoint
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap(),
    )
    .await;
    let primary_endpoint = cut.endpoint();
    let replica_endpoint = replica_server.endpoint.clone();
    let primary = primary_server.lake_url("bj");
    let replica = replica_server.lake_url("sh");
    let work = TempLake::new();
    let wal = work.path().join("wal");

    // The v2 PostgreSQL the pipeline reads, written all through the drill.
    let db = TestDb::new().await;
    let pg = gamelake::sources::postgres::connect(&db.url())
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE players (id bigint PRIMARY KEY, name text)")
        .await
        .unwrap();
    let pipeline = work.path().join("players.toml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    let pipeline = pipeline.display().to_string();
    let pg_url = db.url();
    let stop = Arc::new(AtomicBool::new(false));
    let players = {
        let stop = stop.clone();
        let url = db.url();
        tokio::spawn(async move {
            let pg = gamelake::sources::postgres::connect(&url).await.unwrap();
            let mut id = 0i64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                pg.execute("INSERT INTO players VALUES ($1, 'p')", &[&id])
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            id
        })
    };
    // The pipeline runs every 300 ms against whichever lake is the primary now.
    let writing_to = Arc::new(Mutex::new((primary.clone(), primary_endpoint.clone())));
    let pipeline_runs = {
        let (stop, writing_to, pipeline, pg_url) = (
            stop.clone(),
            writing_to.clone(),
            pipeline.clone(),
            pg_url.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (url, endpoint) = writing_to.lock().unwrap().clone();
                // A run stuck on the lost primary's retries is killed after 5 s: a crash the
                // next run recovers from, exactly once.
                let mut run = Command::new(env!("CARGO_BIN_EXE_gamelake"))
                    .args(["--lake", &url, "ingest", &pipeline])
                    .envs(s3_env(&endpoint))
                    .env("PG_URL", &pg_url)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let started = Instant::now();
                while run.try_wait().unwrap().is_none() {
                    if started.elapsed() > Duration::from_secs(5) {
                        let _ = run.kill();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // The intake on the primary, holding each segment until the replica has it.
    let hold = (replica.clone(), replica_endpoint.clone());
    let config = intake_config(work.path(), "bj.toml", &wal, Some(&hold));
    let intake = ServeProcess::spawn_at(
        &primary,
        &config,
        &["--http", "127.0.0.1:0", "--insecure-no-auth"],
        &s3_env(&primary_endpoint),
    );
    let intake_addr = Arc::new(Mutex::new(intake.http_addr()));
    // One sender, retrying each batch with its key until it is acknowledged (as Fluent Bit).
    let sender = {
        let (stop, addr) = (stop.clone(), intake_addr.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut acknowledged = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let batch = acknowledged;
                let mut body = Vec::new();
                for i in 0..BATCH {
                    writeln!(body, "{{\"id\":{}}}", batch * BATCH + i).unwrap();
                }
                loop {
                    let target = *addr.lock().unwrap();
                    let sent = client
                        .post(format!("http://{target}/ingest/logs.events"))
                        .header("Idempotency-Key", batch.to_string())
                        .body(body.clone())
                        .send()
                        .await;
                    if matches!(&sent, Ok(r) if r.status().as_u16() == 200) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                acknowledged += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            acknowledged
        })
    };
    let mut follower = spawn_replication(&primary, &primary_endpoint, &replica, &replica_endpoint);
    tokio::time::sleep(Duration::from_secs(6)).await;

    // The primary's datacenter is lost, mid-replication: replication stalls first (the WAN
    // slows), so the primary holds commits the replica lacks when it goes.
    let paused = Command::new("kill")
        .args(["-STOP", &follower.id().to_string()])
        .status()
        .unwrap();
    assert!(paused.success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    cut.cut().await;
    let lost_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = follower.kill();
    let _ = follower.wait();
    // Readers of the replica see a whole version of each table.
    for table in ["logs.events", "game.players"] {
        let out = run_at(&replica, &replica_endpoint, &["lake", "verify", table], &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("all readable"),
            "{table}: {text}"
        );
    }
    let seen = ids(&replica, &replica_endpoint, "SELECT id FROM logs.events").await;
    assert!(
        !seen.is_empty() && seen.values().all(|&n| n == 1),
        "replica before promotion"
    );

    // Promotion: the replica takes writes; the old primary cannot be reached to be fenced.
    let promoted = run_at(
        &replica,
        &replica_endpoint,
        &[
            "lake",
            "promote",
            "--from",
            &primary,
            "--from-option",
            &format!("AWS_ENDPOINT_URL={primary_endpoint}"),
            "--reach",
            "2s",
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&promoted.stderr);
    assert!(promoted.status.success(), "{said}");
    assert!(
        said.contains("could not be fenced") && said.contains("lake fence --promoted-to"),
        "{said}"
    );
    // The writers move: the intake restarts on the promoted lake with the same write-ahead log
    // (its held segments are committed there, exactly once by their markers), the pipeline
    // runs against it from the position replicated with its rows.
    let mut intake = intake;
    let _ = intake.child.kill();
    let _ = intake.child.wait();
    let moved = intake_config(work.path(), "sh.toml", &wal, None);
    let intake = ServeProcess::spawn_at(
        &replica,
        &moved,
        &["--http", "127.0.0.1:0", "--insecure-no-auth"],
        &s3_env(&replica_endpoint),
    );
    *intake_addr.lock().unwrap() = intake.http_addr();
    *writing_to.lock().unwrap() = (replica.clone(), replica_endpoint.clone());
    let failover = lost_at.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;

    stop.store(true, Ordering::Relaxed);
    let acknowledged = sender.await.unwrap();
    let inserted = players.await.unwrap();
    pipeline_runs.join().unwrap();
    gamelake_ok(
        &["--lake", &replica, "ingest", &pipeline],
        &[s3_env(&replica_endpoint), vec![("PG_URL", pg_url.as_str())]].concat(),
    );
    let (status, _) = intake.terminate();
    assert!(status.success());

    let logs = ids(&replica, &replica_endpoint, "SELECT id FROM logs.events").await;
    assert_eq!(
        logs.len(),
        acknowledged * BATCH,
        "every acknowledged record is in the promoted lake"
    );
    assert!(logs.values().all(|&n| n == 1), "no record twice");
    assert_eq!(
        logs.keys().last().copied(),
        Some((acknowledged * BATCH) as i64 - 1)
    );
    let rows_in = ids(&replica, &replica_endpoint, "SELECT id FROM game.players").await;
    assert_eq!(
        rows_in.len() as i64,
        inserted,
        "every PostgreSQL row is in the promoted lake"
    );
    assert!(rows_in.values().all(|&n| n == 1), "no row twice");
    eprintln!(
        "failover drill: {acknowledged} batches, {inserted} rows; writers moved {failover:?} after the loss"
    );

    // The old primary comes back. Before it rejoins it is fenced, as promote said; then its
    // old writers are refused, and nothing replicates into the promoted lake any more.
    cut.restore().await;
    let fence = run_at(
        &primary,
        &primary_endpoint,
        &[
            "lake",
            "fence",
            "--promoted-to",
            &replica,
            "--to-option",
            &format!("AWS_ENDPOINT_URL={replica_endpoint}"),
        ],
        &[],
    );
    assert!(
        fence.status.success(),
        "{}",
        String::from_utf8_lossy(&fence.stderr)
    );
    let mut env = s3_env(&primary_endpoint);
    env.push(("PG_URL", &pg_url));
    let refused = gamelake_err(&["--lake", &primary, "ingest", &pipeline], &env);
    assert!(
        refused.contains("was fenced") && refused.contains(&replica),
        "{refused}"
    );
    let refused = gamelake_err(
        &[
            "--lake",
            &primary,
            "sql",
            "-c",
            "INSERT INTO logs.events (id) VALUES (-1)",
        ],
        &env,
    );
    assert!(refused.contains("was fenced"), "{refused}");
    let out = run_at(
        &primary,
        &primary_endpoint,
        &[
            "replicate",
            "--to",
            &replica,
            "--to-option",
            &format!("AWS_ENDPOINT_URL={replica_endpoint}"),
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("was promoted"),
        "{said}"
    );
}

#[test]
fn promote_fences_a_reachable_primary_at_once() {
    let old = TempLake::new();
    let new = TempLake::new();
    gamelake_ok(
        &[
            "--lake",
            &old.location(),
            "sql",
            "-c",
            "CREATE TABLE game.t AS SELECT 1 AS n",
        ],
        &[],
    );
    let said = gamelake_ok(
        &[
            "--lake",
            &new.location(),
            "lake",
            "promote",
            "--from",
            &old.location(),
        ],
        &[],
    );
    assert!(
        said.contains("epoch 1") && said.contains("is fenced"),
        "{said}"
    );
    let refused = gamelake_err(
        &[
            "--lake",
            &old.location(),
            "sql",
            "-c",
            "INSERT INTO game.t VALUES (2)",
        ],
        &[],
    );
    assert!(
        refused.contains("was fenced")
            && refused.contains(&new.location().trim_end_matches('/').to_string()),
        "{refused}"
    );
    // Reads go on: a fenced lake is a consistent, older copy.
    let read = gamelake_ok(
        &[
            "--lake",
            &old.location(),
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT n FROM game.t",
        ],
        &[],
    );
    assert_eq!(read, "n\n1\n");
    // A second promotion (failing back) gets a larger epoch.
    let said = gamelake_ok(
        &[
            "--lake",
            &old.location(),
            "lake",
            "promote",
            "--from",
            &new.location(),
        ],
        &[],
    );
    assert!(said.contains("epoch 2"), "{said}");
    gamelake_ok(
        &[
            "--lake",
            &old.location(),
            "sql",
            "-c",
            "INSERT INTO game.t VALUES (3)",
        ],
        &[],
    );
    let wrong = gamelake_err(
        &[
            "--lake",
            &new.location(),
            "lake",
            "fence",
            "--promoted-to",
            &TempLake::new().location(),
        ],
        &[],
    );
    assert!(wrong.contains("was not promoted in place of"), "{wrong}");
}
