//! A files pipeline through the intake's record path, each file committed once; and the intake
//! benchmark at a tiny scale.

use super::*;

#[test]
fn files_pipeline_commits_each_file_once_through_the_intake_record_path() {
    use crate::support::{gamelake_err, sql_csv};
    let lake = TempLake::new();
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path();
    std::fs::write(
        dir.join("a.ndjson"),
        "{\"time\":\"2026-11-25T10:00:00+08:00\",\"player\":1}\n{\"time\":\"2026-11-25T10:00:01+08:00\",\"player\":2}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.ndjson.gz"),
        gzip(b"{\"time\":\"2026-11-25T11:00:00+08:00\",\"player\":3}\n{\"player\":4}\nnot json\n"),
    )
    .unwrap();
    std::fs::create_dir(dir.join("old")).unwrap();
    std::fs::write(
        dir.join("old/c.ndjson"),
        "{\"time\":\"2026-11-24T10:00:00+08:00\",\"player\":9}\n",
    )
    .unwrap();
    let pipeline = dir.join("files.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"backfill\"\n[source]\nkind = \"files\"\npath = \"{}/*.ndjson*\"\n[[table]]\nto = \"logs.backfill\"\nmode = \"append\"\ntime_field = \"time\"\ncolumns = {{ player = \"bigint\" }}\n",
            dir.display()
        ),
    )
    .unwrap();
    let lake_arg = lake.location();
    let ingest = || {
        let out = crate::support::gamelake(
            &["--lake", &lake_arg, "ingest", pipeline.to_str().unwrap()],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = ingest();
    assert!(
        first.contains("2 files matched, 0 already committed, 2 new"),
        "{first}"
    );
    let query = |sql: &str| sql_csv(&lake_arg, &["-c", sql]);
    assert_eq!(
        query("SELECT player, CAST(day AS VARCHAR) AS d FROM logs.backfill ORDER BY player"),
        "player,d\n1,2026-11-25\n2,2026-11-25\n3,2026-11-25\n"
    );
    assert_eq!(
        query("SELECT reason FROM logs._rejected ORDER BY reason"),
        "reason\ninvalid JSON: expected ident at line 1 column 2\nmissing time field 'time'\n"
    );
    // A rerun takes nothing twice; a new file is taken alone.
    let again = ingest();
    assert!(
        again.contains("2 files matched, 2 already committed, 0 new"),
        "{again}"
    );
    std::fs::write(
        dir.join("d.ndjson"),
        "{\"time\":\"2026-11-26T10:00:00+08:00\",\"player\":5}\n",
    )
    .unwrap();
    let third = ingest();
    assert!(
        third.contains("3 files matched, 2 already committed, 1 new"),
        "{third}"
    );
    assert_eq!(query("SELECT count(*) AS n FROM logs.backfill"), "n\n4\n");
    assert_eq!(query("SELECT count(*) AS n FROM logs._rejected"), "n\n2\n");

    // CSV files (header row; gzip by name) go the same way; a row that is not one is kept.
    std::fs::write(
        dir.join("e.csv.gz"),
        gzip(b"time,player\n2026-11-26T12:00:00+08:00,6\n2026-11-26T12:00:01+08:00,seven\n2026-11-26T12:00:02+08:00\n"),
    )
    .unwrap();
    let csv_pipeline = dir.join("csv.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&csv_pipeline, text.replace("*.ndjson*", "*.csv*")).unwrap();
    let out = crate::support::gamelake(
        &[
            "--lake",
            &lake_arg,
            "ingest",
            csv_pipeline.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        query("SELECT player FROM logs.backfill WHERE day = DATE '2026-11-26' ORDER BY player"),
        "player\n5\n6\n"
    );
    let reasons = query(
        "SELECT reason, record FROM logs._rejected WHERE reason NOT LIKE 'invalid%' AND reason NOT LIKE 'missing%' ORDER BY reason",
    );
    assert!(
        reasons.contains(
            "e.csv.gz: line 4 has 1 fields but the header has 2,2026-11-26T12:00:02+08:00"
        ) && reasons.contains("expected bigint, got \"\"seven\"\""),
        "{reasons}"
    );

    // A files source only fills append tables.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[source]\nkind = \"files\"\npath = \"/tmp/*.ndjson\"\n[[table]]\nto = \"logs.x\"\nmode = \"snapshot\"\n",
    )
    .unwrap();
    let err = gamelake_err(&["pipeline", "validate", bad.to_str().unwrap()], &[]);
    assert!(
        err.contains("bad.toml:6:") && err.contains("mode = \"append\""),
        "{err}"
    );
}

#[test]
fn intake_benchmark_runs_at_a_tiny_scale() {
    let text = crate::support::run_tiny_benchmark(
        "intake_http.py",
        &["--seconds", "1", "--batch", "100", "--file-events", "2000"],
    );
    for row in [
        "HTTP intake, acknowledged",
        "HTTP intake, committed to Delta",
        "DuckDB read_json -> Parquet",
    ] {
        assert!(text.contains(row), "{row} missing from:\n{text}");
    }
}
