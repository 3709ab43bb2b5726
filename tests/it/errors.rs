//! Bad input: each case gives a one-line error and exit code 1, never a panic, and the other
//! tables stay readable.

use std::path::{Path, PathBuf};

use crate::support::{TempLake, free_port, gamelake_err, gamelake_ok};

fn lake_with_two_tables() -> TempLake {
    let lake = TempLake::new();
    gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "CREATE TABLE shop.orders AS SELECT * FROM (VALUES (1,'a'),(2,'b')) v(id,name)",
            "-c",
            "CREATE TABLE shop.items AS SELECT 7 AS item_id",
        ],
        &[],
    );
    lake
}

fn items_still_readable(lake: &TempLake) {
    let out = gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELECT item_id FROM shop.items",
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(out, "item_id\n7\n");
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
}

#[test]
fn unknown_table_lists_close_names() {
    let lake = lake_with_two_tables();
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELECT * FROM shop.order",
        ],
        &[],
    );
    assert!(
        err.contains("table shop.order does not exist; did you mean shop.orders"),
        "{err}"
    );
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELECT * FROM nothing.here",
        ],
        &[],
    );
    assert!(
        err.contains("tables in the lake: shop.items, shop.orders"),
        "{err}"
    );
}

#[test]
fn bad_sql_is_one_clear_line() {
    let lake = lake_with_two_tables();
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELEC * FROM shop.orders",
        ],
        &[],
    );
    assert!(err.contains("SELEC"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn unreachable_s3_endpoint_names_url_and_variable() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let err = gamelake_err(
        &["--lake", "s3://nobucket/lake", "sql", "-c", "SELECT 1"],
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ],
    );
    assert!(
        err.contains("cannot reach the lake at s3://nobucket/lake/"),
        "{err}"
    );
    assert!(
        err.contains(&format!("AWS_ENDPOINT_URL={endpoint}")),
        "{err}"
    );
    assert!(
        !err.contains("AWS_SECRET_ACCESS_KEY=s"),
        "secrets must not be printed: {err}"
    );
}

#[test]
fn unusable_lake_locations() {
    let err = gamelake_err(&["--lake", "ftp://host/lake", "sql", "-c", "SELECT 1"], &[]);
    assert!(err.contains("unsupported scheme 'ftp://'"), "{err}");
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = gamelake_err(
        &[
            "--lake",
            &file.path().display().to_string(),
            "sql",
            "-c",
            "SELECT 1",
        ],
        &[],
    );
    assert!(err.contains(&file.path().display().to_string()), "{err}");
}

#[test]
fn folder_that_is_not_a_delta_table() {
    let lake = lake_with_two_tables();
    std::fs::create_dir_all(lake.path().join("shop/junk")).unwrap();
    std::fs::write(lake.path().join("shop/junk/notes.txt"), "hello").unwrap();
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELECT * FROM shop.junk",
        ],
        &[],
    );
    assert!(err.contains("shop.junk"), "{err}");
    assert!(err.contains("not a Delta table"), "{err}");
    items_still_readable(&lake);
}

#[test]
fn truncated_parquet_file_fails_that_table_only() {
    let lake = lake_with_two_tables();
    let files = data_files(&lake.path().join("shop/orders"));
    assert!(!files.is_empty());
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &bytes[..bytes.len() / 2]).unwrap();
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELECT * FROM shop.orders",
        ],
        &[],
    );
    assert!(err.to_lowercase().contains("parquet"), "{err}");
    items_still_readable(&lake);
}

#[test]
fn corrupt_checkpoint_fails_that_table_only() {
    let lake = lake_with_two_tables();
    let log = lake.path().join("shop/orders/_delta_log");
    // A checkpoint that is not parquet, announced by _last_checkpoint.
    std::fs::write(
        log.join("00000000000000000000.checkpoint.parquet"),
        b"not parquet at all",
    )
    .unwrap();
    std::fs::write(log.join("_last_checkpoint"), br#"{"version":0,"size":3}"#).unwrap();
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELECT * FROM shop.orders",
        ],
        &[],
    );
    assert!(err.contains("shop.orders"), "{err}");
    items_still_readable(&lake);
}

#[test]
fn malformed_config_names_file_line_and_key() {
    let lake = TempLake::new();
    let config = lake.path().join("gamelake.toml");
    std::fs::write(&config, "lake = \"/tmp/x\"\n[query]\nmemory_limit = 5\n").unwrap();
    let config_s = config.display().to_string();
    let err = gamelake_err(&["--config", &config_s, "sql", "-c", "SELECT 1"], &[]);
    assert!(err.contains(&format!("{config_s}:3:1")), "{err}");
    assert!(err.contains("memory_limit"), "{err}");
}

#[test]
fn parquet_format_without_output_file() {
    let lake = TempLake::new();
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELECT 1",
            "--format",
            "parquet",
        ],
        &[],
    );
    assert!(err.contains("-o FILE"), "{err}");
}
