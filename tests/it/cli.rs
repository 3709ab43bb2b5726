//! The command line as a user runs it: the README's commands, formats, exit codes.

use crate::support::{TempLake, gamelake, gamelake_ok};

const CREATE: &str =
    "CREATE TABLE shop.orders AS SELECT * FROM (VALUES (1,'a',10.5),(2,'b',3.0)) v(id,name,amount)";

#[test]
fn readme_first_session_prints_the_rows_as_csv() {
    let lake = TempLake::new();
    let out = gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            CREATE,
            "-c",
            "SELECT name, amount FROM shop.orders ORDER BY id",
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(out, "name,amount\na,10.5\nb,3.0\n");
    assert!(lake.path().join("shop/orders/_delta_log").is_dir());
}

#[test]
fn formats_json_ndjson_table_and_parquet() {
    let lake = TempLake::new();
    let loc = lake.location();
    gamelake_ok(&["--lake", &loc, "sql", "-c", CREATE], &[]);
    let q = "SELECT id, name FROM shop.orders ORDER BY id";
    let json = gamelake_ok(&["--lake", &loc, "sql", "-c", q, "--format", "json"], &[]);
    assert_eq!(json.trim(), r#"[{"id":1,"name":"a"},{"id":2,"name":"b"}]"#);
    let ndjson = gamelake_ok(&["--lake", &loc, "sql", "-c", q, "--format", "ndjson"], &[]);
    assert_eq!(
        ndjson,
        "{\"id\":1,\"name\":\"a\"}\n{\"id\":2,\"name\":\"b\"}\n"
    );
    let table = gamelake_ok(&["--lake", &loc, "sql", "-c", q], &[]);
    assert!(table.contains("| id | name |"), "{table}");
    assert!(table.contains("| 2  | b    |"), "{table}");
    let file = lake.path().join("out.parquet");
    let file_s = file.display().to_string();
    gamelake_ok(
        &[
            "--lake", &loc, "sql", "-c", q, "--format", "parquet", "-o", &file_s,
        ],
        &[],
    );
    let back = gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            &format!("SELECT count(*) AS n FROM '{file_s}'"),
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(back, "n\n2\n");
}

#[test]
fn script_file_and_environment_lake() {
    let lake = TempLake::new();
    let script = lake.path().join("script.sql");
    std::fs::write(
        &script,
        format!("{CREATE};\nINSERT INTO shop.orders VALUES (3, 'c', 1.0);\nSELECT count(*) AS n FROM shop.orders;\n"),
    )
    .unwrap();
    let out = gamelake_ok(
        &[
            "sql",
            "-f",
            &script.display().to_string(),
            "--format",
            "csv",
        ],
        &[("GAMELAKE_LAKE", &lake.location())],
    );
    assert_eq!(out, "n\n3\n");
}

#[test]
fn lake_history_lists_commits_newest_first() {
    let lake = TempLake::new();
    let loc = lake.location();
    gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            CREATE,
            "-c",
            "INSERT INTO shop.orders VALUES (3,'c',1.0)",
        ],
        &[],
    );
    let out = gamelake_ok(
        &[
            "--lake",
            &loc,
            "lake",
            "history",
            "shop.orders",
            "--format",
            "csv",
        ],
        &[],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("version,timestamp,operation"), "{out}");
    // CREATE TABLE AS is two commits (0: the table and its layout, 1: the rows), then the INSERT.
    assert!(lines[1].starts_with("2,"), "{out}");
    assert!(lines[1].contains(",WRITE,"), "{out}");
    assert!(lines[3].starts_with("0,"), "{out}");
    assert!(lines[3].contains(",CREATE TABLE,"), "{out}");
    assert_eq!(lines.len(), 4, "{out}");
}

#[test]
fn lake_optimize_compacts_and_with_analyze_counts_distinct_values_again() {
    let lake = TempLake::new();
    let loc = lake.location();
    gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            CREATE,
            "-c",
            "INSERT INTO shop.orders VALUES (3,'c',1.0)",
            "-c",
            "INSERT INTO shop.orders VALUES (4,'c',2.0)",
        ],
        &[],
    );
    let out = gamelake_ok(
        &[
            "--lake",
            &loc,
            "lake",
            "optimize",
            "shop.orders",
            "--analyze",
        ],
        &[],
    );
    assert!(
        out.contains("shop.orders: 3 files compacted into 1"),
        "{out}"
    );
    assert!(
        out.contains("shop.orders: distinct values of 2 columns counted for the planner"),
        "{out}"
    );
    // The last commit records the counts over the four rows: four ids, three names (the
    // float amounts are not counted).
    let last = gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            "SELECT operation, parameters FROM shop.\"orders$history\" LIMIT 1",
            "--format",
            "ndjson",
        ],
        &[],
    );
    let commit: serde_json::Value = serde_json::from_str(&last).expect(&last);
    assert_eq!(commit["operation"], "SET TBLPROPERTIES", "{last}");
    // Each level holds the next as JSON text: parameters, their properties, the counts.
    let inner = |value: &serde_json::Value, key: &str| -> serde_json::Value {
        serde_json::from_str(value[key].as_str().expect(&last)).expect(&last)
    };
    let properties = inner(&inner(&commit, "parameters"), "properties");
    let counts = inner(&properties, "gamelake.distinctCounts");
    assert_eq!(counts, serde_json::json!({"id": 4, "name": 3}), "{last}");
}

#[test]
fn help_and_version_teach() {
    let help = gamelake_ok(&["--help"], &[]);
    for word in ["sql", "lake", "--lake", "GAMELAKE_LAKE", "Examples"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let version = gamelake_ok(&["--version"], &[]);
    assert_eq!(
        version.trim(),
        format!("gamelake {}", env!("CARGO_PKG_VERSION"))
    );
    let sql_help = gamelake_ok(&["sql", "--help"], &[]);
    assert!(sql_help.contains("--format"), "{sql_help}");
}

#[test]
fn repl_runs_multiline_statements_and_backslash_commands() {
    use std::io::Write;
    let lake = TempLake::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gamelake"))
        .args(["--lake", &lake.location(), "sql"])
        .env("HOME", lake.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"CREATE TABLE t.a AS\n  SELECT 42 AS answer;\n\\d\nSELECT answer\nFROM t.a;\n\\q\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| t      | a    |"),
        "\\d should list t.a:\n{stdout}"
    );
    assert!(stdout.contains("| 42     |"), "{stdout}");
    assert!(
        stdout.contains("1 rows in "),
        "timing line expected:\n{stdout}"
    );
}

#[test]
fn failing_statement_stops_the_script_with_exit_code_1() {
    let lake = TempLake::new();
    let out = gamelake(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELEC 1",
            "-c",
            CREATE,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !lake.path().join("shop").exists(),
        "statements after the failure must not run"
    );
}

#[test]
fn params_bind_typed_values_and_missing_ones_are_named() {
    let lake = TempLake::new();
    let loc = lake.location();
    gamelake_ok(&["--lake", &loc, "sql", "-c", CREATE], &[]);
    let q = "SELECT name FROM shop.orders WHERE id = $id OR name = $name ORDER BY name";
    let out = gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            q,
            "--param",
            "id=1",
            "--param",
            "name=b' OR '1'='1",
            "--format",
            "csv",
        ],
        &[],
    );
    // The text value is one literal, not SQL: it matches no name.
    assert_eq!(out, "name\na\n");
    let err =
        crate::support::gamelake_err(&["--lake", &loc, "sql", "-c", q, "--param", "id=1"], &[]);
    assert!(err.contains("--param name=VALUE"), "{err}");
}

#[test]
fn csv_prints_lists_and_structs_as_text() {
    let lake = crate::support::TempLake::new();
    let out = crate::support::sql_csv(
        &lake.location(),
        &[
            "-c",
            "SELECT make_array('x', 'z') AS l, named_struct('a', 1) AS s, CAST(NULL AS INT[]) AS n",
        ],
    );
    assert_eq!(out, "l,s,n\n\"[x, z]\",{a: 1},\n");
}
