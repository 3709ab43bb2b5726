//! The benchmark harnesses of `benches/` that are not tied to one feature, run at a tiny scale so
//! they keep working (the full runs are documented commands, not tests).

/// The per-query rows of a results table: neither its header nor its sum.
fn query_rows(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| query") && !l.starts_with("| **"))
        .collect()
}

/// TPC-H at scale 0.01 through gamelake, DuckDB and DataFusion: every query runs on every engine
/// and every answer equals DuckDB's (the script exits non-zero otherwise). Loaded with
/// `--layout by-date`, so the sorted load (`sort_by`) is exercised too (the default layout is
/// the same load without it), in two rounds of the four engines.
#[test]
fn tpch_harness_runs_all_22_queries_with_answers_equal_to_duckdb() {
    let work = tempfile::tempdir().unwrap();
    let text = crate::support::run_tiny_benchmark(
        "tpch.py",
        &[
            "--scale",
            "0.01",
            "--runs",
            "1",
            "--rounds",
            "2",
            "--layout",
            "by-date",
            "--work",
            work.path().to_str().unwrap(),
        ],
    );
    assert!(
        text.contains("## TPC-H SF0.01, tables sorted by date"),
        "{text}"
    );
    assert!(text.contains("--layout by-date`"), "{text}");
    assert!(
        text.contains("best of 1 runs in each of 2 rounds (the engines alternating)"),
        "{text}"
    );
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| Q")).collect();
    assert_eq!(rows.len(), 22, "{text}");
    for row in rows {
        assert!(row.ends_with("| ok |"), "{row}");
    }
    assert!(
        text.contains("| **sum** |") && text.contains("all 22 ran"),
        "{text}"
    );

    // benches/ab.py on the same lake: two variants of a setting, each query timed under both.
    let threshold = "SET datafusion.execution.perfect_hash_join_small_build_threshold";
    let out = std::process::Command::new(crate::support::python())
        .arg(crate::support::repo_root().join("benches/ab.py"))
        .args(["--lake", work.path().join("lake").to_str().unwrap()])
        .args(["--rounds", "2", "--runs", "1", "--only", "q03,q05"])
        .arg(format!("--variant=datafusion={threshold} = 1024"))
        .arg(format!("--variant=gamelake={threshold} = 8388608"))
        .args(["--gamelake", env!("CARGO_BIN_EXE_gamelake")])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.starts_with("| query | datafusion s | gamelake s | gamelake / datafusion |"),
        "{table}"
    );
    let queries: Vec<&str> = query_rows(&table)
        .iter()
        .map(|row| row.split(" | ").next().unwrap())
        .collect();
    assert_eq!(queries, ["| q03", "| q05"], "{table}");
}

/// History growth at a tiny scale: every size and query is measured, and the one-week query
/// reads only its week's partitions (pruning is what keeps it flat as history grows).
#[test]
fn history_growth_harness_measures_each_size_and_shows_pruning() {
    let work = tempfile::tempdir().unwrap();
    let text = crate::support::run_tiny_benchmark(
        "history.py",
        &[
            "--scale",
            "0.01",
            "--years",
            "1,2",
            "--runs",
            "1",
            "--work",
            work.path().to_str().unwrap(),
        ],
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 6, "{text}");
    for row in rows.iter().filter(|r| r[3] == "week") {
        let (scanned, total) = row[5].split_once(" / ").unwrap();
        let (scanned, total): (usize, usize) = (scanned.parse().unwrap(), total.parse().unwrap());
        assert!((1..=14).contains(&scanned) && total > 300, "{text}");
    }
    assert!(text.contains("Growth from 1 to 2 years"), "{text}");
}

/// Embedded vs cluster at a tiny scale: every saved query runs both ways on a real scheduler
/// and two executors, and every answer is the same.
#[test]
fn cluster_harness_runs_every_saved_query_both_ways_with_equal_answers() {
    let work = tempfile::tempdir().unwrap();
    let text = crate::support::run_tiny_benchmark(
        "cluster.py",
        &[
            "--scale",
            "0.01",
            "--runs",
            "1",
            "--work",
            work.path().to_str().unwrap(),
        ],
    );
    assert!(text.contains("## Embedded vs cluster (Ballista)"), "{text}");
    let rows = query_rows(&text);
    assert!(rows.len() >= 14, "{text}");
    for row in rows {
        assert!(row.ends_with("| equal |"), "{row}");
    }
}

/// The game workload at a tiny scale: every saved query runs through gamelake and through
/// DuckDB's `delta_scan` over the same Delta tables, and every answer is equal (the script
/// exits non-zero otherwise).
#[test]
fn game_workload_harness_runs_every_saved_query_on_both_engines() {
    let work = tempfile::tempdir().unwrap();
    let text = crate::support::run_tiny_benchmark(
        "game.py",
        &[
            "--scale",
            "0.01",
            "--runs",
            "1",
            "--work",
            work.path().to_str().unwrap(),
        ],
    );
    assert!(text.contains("## Game workload"), "{text}");
    let rows = query_rows(&text);
    let saved = crate::support::saved_queries().len();
    assert_eq!(rows.len(), saved, "{text}");
    for row in rows {
        assert!(row.ends_with("| equal |"), "{row}");
    }
    assert!(text.contains("all ran"), "{text}");
}

/// The crowd of BI clients at a tiny scale: both protocols and both mixes at 4 and 16 clients,
/// PostgreSQL as the anchor, every lookup answer compared with PostgreSQL's first. With one
/// query at a time and a queue of two, the 16 clients are partly refused, each refusal with a
/// retry time, and nothing else fails (the script exits non-zero on any other error).
#[test]
fn crowd_harness_serves_both_protocols_and_refuses_the_excess_with_a_retry_time() {
    let work = tempfile::tempdir().unwrap();
    let text = crate::support::run_tiny_benchmark(
        "crowd.py",
        &[
            "--scale",
            "0.01",
            "--clients",
            "4,16",
            "--seconds",
            "2",
            "--max-concurrent",
            "1",
            "--max-queued",
            "2",
            "--work",
            work.path().to_str().unwrap(),
        ],
    );
    assert!(text.contains("## A crowd of clients"), "{text}");
    assert!(text.contains("both answered the same for"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| gamelake") || l.starts_with("| PostgreSQL"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    // 2 protocols x 2 mixes x 2 crowds, and the anchor at each crowd.
    assert_eq!(rows.len(), 10, "{text}");
    let number = |cell: &str| cell.replace(',', "").parse::<f64>().unwrap();
    for row in &rows {
        // | label | queries/s | lookups/s | ... | refused | errors | ...
        assert!(number(row[3]) > 0.0, "no lookup ran: {row:?}");
        assert_eq!(row[9], "0", "errors: {row:?}");
    }
    let refused: f64 = rows
        .iter()
        .filter(|r| r[1].starts_with("gamelake") && r[1].ends_with(", 16"))
        .map(|r| number(r[8]))
        .sum();
    assert!(
        refused > 0.0,
        "16 clients against 1 running and 2 queued: {text}"
    );
    assert!(text.contains("retry in"), "{text}");
}
