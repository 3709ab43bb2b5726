//! Background maintenance: small files compacted while appends continue, then vacuumed.

use super::*;

/// Parquet data files under a table folder (not the log's checkpoints).
fn data_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.ends_with("_delta_log") {
            continue;
        }
        if path.is_dir() {
            n += data_files(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_compacts_small_files_while_appends_continue_then_vacuum_deletes_them() {
    let lake = TempLake::new();
    let server = start(&lake, &config(&lake, "compact_interval = \"1s\""));
    let addr = server.http_addr();
    let client = reqwest::Client::new();
    let metrics = || async {
        client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Appends every 100 ms (a commit every 200 ms) while compaction runs every second.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    loop {
        let body = (0..10)
            .map(|i| format!("{{\"id\":{}}}\n", sent + i))
            .collect::<String>();
        assert_eq!(
            post(
                &client,
                addr,
                "logs.stream",
                Some(TOKEN),
                body.into(),
                false
            )
            .await
            .0,
            200
        );
        sent += 10;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = metrics().await;
        if sent >= 300
            && text.contains("gamelake_intake_compacted_files_total{table=\"logs.stream\"}")
        {
            assert!(
                !text.contains("gamelake_intake_maintenance_failures_total 1"),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no compaction within a minute:\n{text}"
        );
    }
    let (status, out) = server.terminate();
    assert!(status.success(), "{out}");
    let session = lake.session().await;
    assert_eq!(
        rows(
            &session,
            "SELECT count(*), count(DISTINCT id), max(id) FROM logs.stream"
        )
        .await,
        [format!("{sent}|{sent}|{}", sent - 1)]
    );
    let history = crate::support::gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "lake",
            "history",
            "logs.stream",
            "--limit",
            "1000",
            "--format",
            "csv",
        ],
        &[],
    );
    assert!(history.contains("OPTIMIZE"), "{history}");

    // On demand: compact what is left, then vacuum what compaction replaced.
    let out = crate::support::gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "lake",
            "optimize",
            "logs.stream",
        ],
        &[],
    );
    assert!(
        out.contains("compacted") || out.contains("nothing to compact"),
        "{out}"
    );
    let table_dir = lake.path().join("logs/stream");
    let before = data_files(&table_dir);
    let location = lake.location();
    let vacuum = |extra: &[&str]| {
        let mut args = vec![
            "--lake",
            &location,
            "lake",
            "vacuum",
            "logs.stream",
            "--retain",
            "0s",
            "--force",
        ];
        args.extend_from_slice(extra);
        crate::support::gamelake_ok(&args, &[])
    };
    // Below an hour, a vacuum could delete the files of a commit in progress: refused.
    let refused = crate::support::gamelake_err(
        &[
            "--lake",
            &location,
            "lake",
            "vacuum",
            "logs.stream",
            "--retain",
            "10m",
        ],
        &[],
    );
    assert!(
        refused.contains("commit in progress") && refused.contains("--force"),
        "{refused}"
    );
    assert_eq!(
        data_files(&table_dir),
        before,
        "a refused vacuum deletes nothing"
    );
    let listed = vacuum(&["--dry-run"]);
    assert_eq!(data_files(&table_dir), before, "a dry run deletes nothing");
    assert!(listed.lines().count() > 1, "{listed}");
    vacuum(&[]);
    assert_eq!(data_files(&table_dir), before - listed.lines().count());
    let session = lake.session().await;
    let days = rows(&session, "SELECT count(DISTINCT day) FROM logs.stream").await;
    assert_eq!(
        [data_files(&table_dir).to_string()],
        days.as_slice(),
        "one compacted file per day partition; optimize said {out}"
    );
    assert_eq!(
        rows(&session, "SELECT count(*) FROM logs.stream").await,
        [sent.to_string()]
    );
    let err = crate::support::gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "lake",
            "optimize",
            "logs.stream",
            "--since",
            "soon",
        ],
        &[],
    );
    assert!(err.contains("expected a date like 2026-11-20"), "{err}");
}
