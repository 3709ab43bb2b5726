//! Other Delta readers and writers: DuckDB's delta extension and Python `deltalake` read what
//! gamelake writes, and gamelake reads what Python `deltalake` writes.

use crate::support::{DUCKDB_DELTA, TempLake, gamelake_ok, run_python};

const ROWS: &str = "SELECT * FROM (VALUES \
    (1, 'ann', 10.5, DATE '2026-11-01', true), \
    (2, NULL, 3.0, DATE '2026-11-01', false), \
    (3, 'cy', -7.25, DATE '2026-11-02', NULL)) v(id, name, amount, day, paid)";

const EXPECTED: &str = r#"[[1, "ann", 10.5, "2026-11-01", true], [2, null, 3.0, "2026-11-01", false], [3, "cy", -7.25, "2026-11-02", null]]"#;

#[test]
fn duckdb_and_python_deltalake_read_what_gamelake_wrote() {
    let lake = TempLake::new();
    gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            &format!("CREATE TABLE shop.pay PARTITIONED BY (day) AS {ROWS}"),
        ],
        &[],
    );
    // A second commit, so readers must replay the log.
    gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "INSERT INTO shop.pay VALUES (4, 'dee', 1.0, DATE '2026-11-03', true)",
        ],
        &[],
    );
    let table = lake.path().join("shop/pay").display().to_string();
    let duck = run_python(
        &format!(
            "{DUCKDB_DELTA}\nimport json, sys\nrows = duck().execute(\"SELECT id, name, amount, day, paid FROM delta_scan(?) ORDER BY id\", [sys.argv[1]]).fetchall()\nprint(json.dumps([list(r) for r in rows], default=str))"
        ),
        &[&table],
    );
    let py = run_python(
        "import json, sys\nfrom deltalake import DeltaTable\nrows = sorted(DeltaTable(sys.argv[1]).to_pyarrow_table().to_pylist(), key=lambda r: r['id'])\nprint(json.dumps([[r['id'], r['name'], r['amount'], r['day'], r['paid']] for r in rows], default=str))",
        &[&table],
    );
    let expected = EXPECTED.replace("]]", r#"], [4, "dee", 1.0, "2026-11-03", true]]"#);
    assert_eq!(duck.trim(), expected, "DuckDB delta_scan");
    assert_eq!(py.trim(), expected, "Python deltalake");
}

#[test]
fn gamelake_reads_what_python_deltalake_wrote() {
    let lake = TempLake::new();
    let table = lake.path().join("py/scores").display().to_string();
    run_python(
        "import sys, pyarrow as pa\nfrom deltalake import write_deltalake\n\
t = pa.table({'player_id': pa.array([1, 2, 3], pa.int64()), 'region': ['beijing', 'shanghai', 'beijing'], 'score': [1.5, 2.5, None]})\n\
write_deltalake(sys.argv[1], t, partition_by=['region'])\n\
write_deltalake(sys.argv[1], pa.table({'player_id': pa.array([4], pa.int64()), 'region': ['guangzhou'], 'score': [4.0]}), mode='append')",
        &[&table],
    );
    let out = gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELECT player_id, region, score FROM py.scores ORDER BY player_id",
            "-c",
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'py'",
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(
        out,
        "player_id,region,score\n1,beijing,1.5\n2,shanghai,2.5\n3,beijing,\n4,guangzhou,4.0\ntable_name\nscores\n"
    );
    // gamelake can append to it, and Python sees the new rows.
    gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "INSERT INTO py.scores VALUES (5, 'beijing', 5.0)",
        ],
        &[],
    );
    let count = run_python(
        "import sys\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).to_pyarrow_table().num_rows)",
        &[&table],
    );
    assert_eq!(count.trim(), "5");
}
