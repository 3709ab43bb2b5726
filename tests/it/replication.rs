//! `gamelake replicate`, `lake verify` and `lake restore`: a replica is a readable Delta table
//! at every instant, even when its copy is killed, and verify names what is broken.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gamelake::query::Session;

use crate::support::{
    S3Server, TempLake, execute, gamelake, gamelake_err, gamelake_ok, rows, session_at,
};

/// A table written in `appends + 1` versions (one file each), compacted once halfway (a
/// commit that removes files, and a checkpoint).
async fn write_versions(session: &Session, lake: &str, appends: u32, env: &[(&str, &str)]) {
    execute(session, "CREATE TABLE game.scores AS SELECT 0 AS n").await;
    for n in 1..=appends {
        execute(session, &format!("INSERT INTO game.scores VALUES ({n})")).await;
        if n == appends / 2 {
            gamelake_ok(&["--lake", lake, "lake", "optimize", "game.scores"], env);
        }
    }
}

/// The replica's newest version and its sum of `n`, or None before its first commit.
async fn replica_state(url: &str, s3: &S3Server) -> Option<(u64, String)> {
    let replica = session_at(url, s3.options()).await;
    let history = "SELECT max(version) FROM game.\"scores$history\"";
    let version = crate::support::render(&replica.query(history).await.ok()?).pop()?;
    let sum = rows(&replica, "SELECT sum(n) FROM game.scores")
        .await
        .pop()?;
    Some((version.parse().ok()?, sum))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replication_leaves_a_readable_replica_and_resumes() {
    let source = TempLake::new();
    let writer = source.session().await;
    write_versions(&writer, &source.location(), 40, &[]).await;
    let latest: u64 = rows(&writer, "SELECT max(version) FROM game.\"scores$history\"").await[0]
        .parse()
        .unwrap();
    let s3 = S3Server::start();
    let replica = s3.lake_url("replica");
    let env = s3.env();
    let replica_store = gamelake::lake::Lake::open_with_options(&replica, s3.options()).unwrap();
    let commits = || async {
        use futures::TryStreamExt;
        let log = object_store::path::Path::from("game/scores/_delta_log");
        let listed: Vec<_> = replica_store
            .store()
            .list(Some(&log))
            .try_collect()
            .await
            .unwrap();
        listed
            .iter()
            .filter(|m| m.location.as_ref().ends_with(".json"))
            .count()
    };
    let mut killed_mid_copy = 0;
    for round in 0..8usize {
        let before = commits().await;
        let mut child = Command::new(env!("CARGO_BIN_EXE_gamelake"))
            .args(["--lake", &source.location(), "replicate", "--to", &replica])
            .args(["--parallel", "2"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed at a different point each round: while the first round copies data files,
        // later ones once a few more commits have landed (watched, not guessed from timing,
        // so a fast or a loaded machine kills mid-copy alike).
        let started = Instant::now();
        while round > 0
            && commits().await < before + 2 * round
            && child.try_wait().unwrap().is_none()
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if round == 0 {
            std::thread::sleep(Duration::from_millis(150));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Whatever instant the kill hit, the replica's newest version is whole and equal to
        // the source's at that version.
        if let Some((version, sum)) = replica_state(&replica, &s3).await {
            if version < latest {
                killed_mid_copy += 1;
            }
            let then = rows(
                &writer,
                &format!("SELECT sum(n) FROM game.\"scores@v{version}\""),
            )
            .await;
            assert_eq!(
                vec![sum],
                then,
                "replica at version {version}, round {round}"
            );
            let checked = gamelake(
                &["--lake", &replica, "lake", "verify", "game.scores"],
                &env.iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect::<Vec<_>>(),
            );
            assert!(
                checked.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&checked.stdout)
            );
        }
    }
    assert!(
        killed_mid_copy > 0,
        "no kill landed before the replica was complete; the test proves nothing"
    );
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = gamelake_ok(
        &["--lake", &source.location(), "replicate", "--to", &replica],
        &envs,
    );
    assert!(
        out.contains(&format!("game.scores: version {latest} of {latest}")),
        "{out}"
    );
    let (version, sum) = replica_state(&replica, &s3).await.unwrap();
    assert_eq!((version, sum), (latest, (0..=40).sum::<u32>().to_string()));
    // Caught up: a further run copies nothing.
    let again = gamelake_ok(
        &["--lake", &source.location(), "replicate", "--to", &replica],
        &envs,
    );
    assert!(again.contains("0 versions copied"), "{again}");
    let verified = gamelake_ok(&["--lake", &replica, "lake", "verify"], &envs);
    assert!(
        verified.contains("game.scores: versions 0..="),
        "{verified}"
    );
    assert!(verified.contains("all readable"), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_copies_new_commits_until_sigterm() {
    let source = TempLake::new();
    let writer = source.session().await;
    execute(&writer, "CREATE TABLE game.scores AS SELECT 0 AS n").await;
    let target = TempLake::new();
    let child = Command::new(env!("CARGO_BIN_EXE_gamelake"))
        .args(["--lake", &source.location(), "replicate", "--follow"])
        .args(["--interval", "100ms", "--to", &target.location()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for n in 1..=5 {
        execute(&writer, &format!("INSERT INTO game.scores VALUES ({n})")).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let reader = target.session().await;
    let started = Instant::now();
    loop {
        let sum = rows(&reader, "SELECT sum(n) FROM game.scores").await;
        if sum == vec!["15"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the replica did not catch up: {sum:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "SIGTERM ends --follow cleanly");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("game.scores: version 5 of 5"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_in_the_same_bucket_is_copied_server_side_and_verify_names_damage() {
    let s3 = S3Server::start();
    let env = s3.env();
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let source = s3.lake_url("primary");
    let replica = s3.lake_url("backup");
    let writer = session_at(&source, s3.options()).await;
    write_versions(&writer, &source, 6, &envs).await;
    // A saved view, as the archive pipeline saves its hot + cold union.
    let view = gamelake::lake::TableRef::new("game", "best").unwrap();
    writer
        .lake()
        .save_view(&view, "SELECT max(n) AS best FROM game.scores")
        .await
        .unwrap();
    gamelake_ok(&["--lake", &source, "replicate", "--to", &replica], &envs);
    let reader = session_at(&replica, s3.options()).await;
    assert_eq!(
        rows(&reader, "SELECT sum(n) FROM game.scores").await,
        vec!["21"]
    );
    let view = gamelake_ok(
        &[
            "--lake",
            &replica,
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT best FROM game.best",
        ],
        &envs,
    );
    assert_eq!(view, "best\n6\n", "saved views are copied too");

    // Damage the replica: one data file cut short.
    let listed = s3_keys(&s3, "backup/game/scores/");
    for log_entry in ["_delta_log/_last_checkpoint", ".checkpoint.parquet"] {
        assert!(
            listed.iter().any(|k| k.ends_with(log_entry)),
            "the optimize's checkpoint and the pointer to it are copied: {listed:?}"
        );
    }
    let data: Vec<&String> = listed
        .iter()
        .filter(|k| k.ends_with(".parquet") && !k.contains("_delta_log"))
        .collect();
    assert!(data.len() >= 2, "{listed:?}");
    s3.put_object(data[0], "short");
    let err = gamelake_err(&["--lake", &replica, "lake", "verify"], &envs);
    assert!(err.contains("damaged: game.scores"), "{err}");
    let out = gamelake(&["--lake", &replica, "lake", "verify"], &envs);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("BROKEN from version"), "{report}");
    let name = data[0].rsplit('/').next().unwrap();
    assert!(report.contains(name), "{report}");
    assert!(report.contains("5 bytes, the log says"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_brings_a_version_back_and_refuses_vacuumed_ones() {
    let lake = TempLake::new();
    let loc = lake.location();
    let session = lake.session().await;
    // CREATE TABLE ... AS commits twice: the empty table (v0), then its rows (v1).
    execute(&session, "CREATE TABLE game.scores AS SELECT 1 AS n").await; // v1: file a
    execute(&session, "INSERT INTO game.scores VALUES (2)").await; // v2: file b
    let after_v2 = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(20)).await;
    execute(&session, "DELETE FROM game.scores WHERE n = 1").await; // v3: a removed
    let restore = |how: &[&str]| {
        let mut args = vec!["--lake", loc.as_str(), "lake", "restore", "game.scores"];
        args.extend_from_slice(how);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        gamelake(&args, &[])
    };
    let out = run(restore(&["--as-of", &after_v2]));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("version 2 restored as version 4"),
        "{printed}"
    );
    assert_eq!(
        rows(&session, "SELECT sum(n) FROM game.scores").await,
        vec!["3"]
    );
    let err = String::from_utf8_lossy(&run(restore(&["--version", "4"])).stderr).into_owned();
    assert!(err.contains("at version 4 already"), "{err}");

    // v5 removes b; a vacuum that keeps nothing old deletes it, so versions 2 to 4 (which
    // need b) cannot come back, and verify says time travel stops at version 5.
    execute(&session, "DELETE FROM game.scores WHERE n = 2").await; // v5
    gamelake_ok(
        &[
            "--lake",
            &loc,
            "lake",
            "vacuum",
            "game.scores",
            "--retain",
            "0s",
            "--force",
        ],
        &[],
    );
    let refused = run(restore(&["--version", "3"]));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("version 3 cannot be restored"), "{err}");
    assert!(
        err.contains("vacuumed after version 5 removed them"),
        "{err}"
    );
    let verified = gamelake_ok(&["--lake", &loc, "lake", "verify", "game.scores"], &[]);
    assert!(
        verified.contains("readable from version 5 on (older versions' files were vacuumed)"),
        "{verified}"
    );
    let err = gamelake_err(
        &[
            "--lake",
            &loc,
            "lake",
            "restore",
            "game.scores",
            "--as-of",
            "yesterday",
        ],
        &[],
    );
    assert!(
        err.contains("--as-of yesterday: expected an instant"),
        "{err}"
    );
}

/// The keys under a prefix of the test bucket.
fn s3_keys(s3: &S3Server, prefix: &str) -> Vec<String> {
    let out = crate::support::run_python(
        "import boto3, sys; c = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1'); print('\\n'.join(o['Key'] for p in c.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]) for o in p.get('Contents', [])))",
        &[&s3.endpoint, &s3.bucket, prefix],
    );
    out.lines().map(str::to_string).collect()
}

/// `[[replicas]]` in the config: `serve --schedule` keeps the replica following, and /metrics
/// shows what it copied and how far behind it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_a_configured_replica_following() {
    use crate::support::{ServeProcess, metrics_of, sample};

    let source = TempLake::new();
    let writer = source.session().await;
    execute(&writer, "CREATE TABLE game.scores AS SELECT 0 AS n").await;
    execute(&writer, "CREATE TABLE logs.noise AS SELECT 0 AS n").await;
    let backup = TempLake::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gamelake.toml");
    std::fs::write(
        &config,
        format!(
            "[[replicas]]\nname = \"backup\"\nto = \"{}\"\ntables = [\"game.*\"]\ninterval = \"100ms\"\n",
            backup.location()
        ),
    )
    .unwrap();
    let nothing = dir.path().join("nothing");
    std::fs::create_dir(&nothing).unwrap();
    let empty = nothing.to_str().unwrap();
    let serve = ServeProcess::spawn(
        &source,
        &config,
        &[
            "--schedule",
            "--reports",
            empty,
            "--pipelines",
            empty,
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    for n in 1..=4 {
        execute(&writer, &format!("INSERT INTO game.scores VALUES ({n})")).await;
    }
    let reader = backup.session().await;
    let started = Instant::now();
    while rows(&reader, "SELECT sum(n) FROM game.scores").await != vec!["10"] {
        assert!(started.elapsed() < Duration::from_secs(30), "no catch-up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = metrics_of(&serve).await;
    let copied = "gamelake_schedule_replica_versions_total{job=\"replica/backup\"}";
    let versions = rows(&writer, "SELECT count(*) FROM game.\"scores$history\"").await;
    assert_eq!(
        vec![sample(&metrics, copied).to_string()],
        versions,
        "{metrics}"
    );
    assert!(
        metrics.contains("gamelake_schedule_replica_lag_seconds{job=\"replica/backup\"}")
            && metrics
                .contains("gamelake_schedule_replica_versions_behind{job=\"replica/backup\"}"),
        "{metrics}"
    );
    assert!(
        reader.query("SELECT * FROM logs.noise").await.is_err(),
        "tables outside the globs stay out"
    );
    let (status, _) = serve.terminate();
    assert!(status.success());
}

#[test]
fn replication_benchmark_runs_at_a_tiny_scale() {
    let text = crate::support::run_tiny_benchmark(
        "replicate.py",
        &["--scale", "0.02", "--seconds", "3", "--parallel", "4"],
    );
    for row in [
        "plain parallel object copy",
        "| gamelake replicate",
        "passed `lake verify`",
        "Lag with one append a second",
    ] {
        assert!(text.contains(row), "{row} missing from:\n{text}");
    }
}

#[test]
fn replicate_mistakes_are_named() {
    let lake = TempLake::new();
    let loc = lake.location();
    let refused = |flags: &[&str]| {
        let mut args = vec!["--lake", loc.as_str(), "replicate"];
        args.extend_from_slice(flags);
        gamelake_err(&args, &[])
    };
    for (flags, said) in [
        (
            vec!["--to", &loc],
            "--from and --to are the same lake".to_string(),
        ),
        (
            vec!["--to", "s3://bucket/x", "--to-option", "AWS_REGION"],
            "storage option 'AWS_REGION': expected KEY=VALUE".to_string(),
        ),
        (
            vec![
                "--to",
                "s3://bucket/x",
                "--to-option",
                "AWS_SECRET_ACCESS_KEY=$GAMELAKE_TEST_UNSET_SECRET",
            ],
            "variable GAMELAKE_TEST_UNSET_SECRET is not set".to_string(),
        ),
        (
            vec!["--to", "/tmp/x", "--tables", "game.[x"],
            "'game.[x' is not a glob pattern".to_string(),
        ),
    ] {
        let err = refused(&flags);
        assert!(err.contains(&said), "{flags:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_oss_never_has_a_commit_replaced() {
    let source = TempLake::new();
    let s3 = S3Server::start_like_oss();
    let replica = s3.lake_url("replica");
    gamelake_ok(
        &[
            "--lake",
            &source.location(),
            "sql",
            "-c",
            "CREATE TABLE game.scores AS SELECT 1 AS n",
        ],
        &[],
    );
    let mut follower = Command::new(env!("CARGO_BIN_EXE_gamelake"))
        .args(["--lake", &source.location(), "replicate", "--to", &replica])
        .args(["--follow", "--interval", "200ms"])
        .envs(s3.env())
        .env("GAMELAKE_FORBID_OVERWRITE_HEADER", "x-oss-forbid-overwrite")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = "replica/game/scores/_delta_log/";
    let started = Instant::now();
    while !s3_keys(&s3, log).iter().any(|k| k.ends_with("01.json")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "version 1 never replicated"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Something else writes the replica's next version; then the source commits its own.
    let key = format!("{log}00000000000000000002.json");
    let rogue = r#"{"commitInfo":{"operation":"ROGUE"}}"#;
    s3.put_object(&key, rogue);
    gamelake_ok(
        &[
            "--lake",
            &source.location(),
            "sql",
            "-c",
            "INSERT INTO game.scores VALUES (2)",
        ],
        &[],
    );
    // The store ignores If-None-Match; the no-overwrite header makes it refuse, and the
    // follower stops and says why instead of replacing the other writer's commit.
    let started = Instant::now();
    while follower.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = follower.kill();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut said = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut said).unwrap();
    assert!(said.contains("differs from the source's"), "{said}");
    assert_eq!(s3.get_object(&key), rogue);
}
