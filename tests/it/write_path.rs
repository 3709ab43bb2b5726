//! The shared write path: layout in files and table properties, transaction markers for
//! exactly-once pipelines, and failed writes that leave the table as it was.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use gamelake::lake::layout::{Codec, TableLayout};
use gamelake::lake::write::{
    WriteMode, WriteOptions, WriteOutcome, transaction_version, write_batches,
};
use gamelake::lake::{TableRef, TableVersion};

use crate::support::{TempLake, rows};

fn events(players: &[i64], day: &str) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("player_id", DataType::Int64, false),
        Field::new("event_date", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(players.to_vec())),
            Arc::new(StringArray::from(vec![day; players.len()])),
            Arc::new(StringArray::from(vec!["login"; players.len()])),
        ],
    )
    .unwrap()
}

fn layout() -> TableLayout {
    TableLayout {
        partition_by: vec!["event_date".into()],
        sort_by: vec!["player_id".into()],
        bloom_filter_columns: vec!["player_id".into()],
        ..Default::default()
    }
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with("_delta_log") {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Checks one data file: zstd, page index, a bloom filter on player_id, rows sorted by player_id.
fn assert_laid_out(file: &Path) {
    let reader = SerializedFileReader::new(File::open(file).unwrap()).unwrap();
    let meta = reader.metadata();
    let mut last = i64::MIN;
    for rg in meta.row_groups() {
        for col in rg.columns() {
            assert!(
                matches!(col.compression(), Compression::ZSTD(_)),
                "{file:?}: {:?}",
                col.compression()
            );
            assert!(
                col.column_index_offset().is_some(),
                "{file:?}: no column index (page statistics)"
            );
            assert!(
                col.offset_index_offset().is_some(),
                "{file:?}: no offset index"
            );
        }
        let player = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "player_id")
            .unwrap();
        assert!(
            player.bloom_filter_offset().is_some(),
            "{file:?}: no bloom filter on player_id"
        );
        let other = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "event_type")
            .unwrap();
        assert!(
            other.bloom_filter_offset().is_none(),
            "{file:?}: unexpected bloom filter on event_type"
        );
    }
    let batches = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
        File::open(file).unwrap(),
        1024,
    )
    .unwrap();
    for batch in batches {
        let batch = batch.unwrap();
        let ids = batch
            .column_by_name("player_id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        for id in ids.values() {
            assert!(*id >= last, "{file:?} not sorted by player_id");
            last = *id;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_reaches_files_and_is_kept_by_later_writers() {
    let lake = TempLake::new();
    let session = lake.session().await;
    let table = TableRef::parse("logs.events").unwrap();
    let options = WriteOptions {
        layout: Some(layout()),
        ..WriteOptions::new(WriteMode::Create)
    };
    let batches = vec![
        events(&[5, 3, 9, 1], "2026-11-01"),
        events(&[4, 2], "2026-11-02"),
    ];
    let outcome = write_batches(
        session.lake(),
        &table,
        &session.context().state(),
        batches,
        options,
    )
    .await
    .unwrap();
    // Version 0 creates the table with its layout, version 1 holds the rows.
    assert_eq!(
        outcome,
        WriteOutcome::Committed {
            version: 1,
            rows: 6
        }
    );

    // A later SQL writer (which knows nothing of the layout) keeps it: it is in the table.
    session
        .sql("INSERT INTO logs.events VALUES (8, '2026-11-01', 'buy'), (6, '2026-11-01', 'buy')")
        .await
        .unwrap();
    let dt = session
        .lake()
        .open_table(&table, &TableVersion::Latest)
        .await
        .unwrap();
    assert_eq!(TableLayout::of_table(&dt).unwrap(), layout());

    let files = parquet_files(&lake.path().join("logs/events"));
    assert!(files.len() >= 3, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.to_string_lossy().contains("event_date=")),
        "{files:?}"
    );
    for f in &files {
        assert_laid_out(f);
    }
    assert_eq!(
        rows(
            &session,
            "SELECT event_date, count(*) FROM logs.events GROUP BY 1 ORDER BY 1"
        )
        .await,
        vec!["2026-11-01|6", "2026-11-02|2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_marker_makes_a_rerun_write_nothing() {
    let lake = TempLake::new();
    let session = lake.session().await;
    let table = TableRef::parse("game.logins").unwrap();
    let state = session.context().state();
    let write = |players: Vec<i64>, version: i64| {
        let options = WriteOptions {
            transaction: Some(("pipeline-a".to_string(), version)),
            ..WriteOptions::new(WriteMode::Append)
        };
        let batch = events(&players, "2026-11-01");
        let (lake, table, state) = (session.lake().clone(), table.clone(), state.clone());
        async move {
            write_batches(&lake, &table, &state, vec![batch], options)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        write(vec![1, 2], 1).await,
        WriteOutcome::Committed {
            version: 1,
            rows: 2
        }
    );
    // A crash after the commit, then a rerun of the same batch: nothing is written twice.
    assert_eq!(
        write(vec![1, 2], 1).await,
        WriteOutcome::AlreadyCommitted { recorded: 1 }
    );
    assert_eq!(
        write(vec![3], 2).await,
        WriteOutcome::Committed {
            version: 2,
            rows: 1
        }
    );
    assert_eq!(
        transaction_version(session.lake(), &table, "pipeline-a")
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        transaction_version(session.lake(), &table, "other")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        rows(&session, "SELECT count(*) FROM game.logins").await,
        vec!["3"]
    );
    assert_eq!(
        rows(
            &session,
            "SELECT version, txn FROM game.\"logins$history\" ORDER BY version"
        )
        .await,
        vec!["0|NULL", "1|pipeline-a=1", "2|pipeline-a=2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_statements_leave_tables_as_they_were() {
    let lake = TempLake::new();
    let session = lake.session().await;
    session
        .sql("CREATE TABLE shop.t AS SELECT * FROM (VALUES ('1'), ('2')) v(x)")
        .await
        .unwrap();
    // Fails at run time, after the plan started: casting 'oops' to an integer.
    let err = session
        .sql("INSERT INTO shop.t SELECT x FROM (VALUES ('3'), ('oops')) v(x) WHERE CAST(x AS INT) > 0")
        .await;
    assert!(err.is_err());
    assert_eq!(
        rows(&session, "SELECT count(*) FROM shop.t").await,
        vec!["2"]
    );
    assert_eq!(
        rows(&session, "SELECT max(version) FROM shop.\"t$history\"").await,
        vec!["1"]
    );
    // A CREATE TABLE AS that fails leaves no table and no folder behind.
    let err = session
        .sql("CREATE TABLE shop.u AS SELECT CAST(x AS INT) AS y FROM (VALUES ('1'), ('x')) v(x)")
        .await;
    assert!(err.is_err());
    assert!(!lake.path().join("shop/u").exists());
    assert_eq!(
        rows(
            &session,
            "SELECT table_name FROM information_schema.tables WHERE table_schema='shop'"
        )
        .await,
        vec!["t"]
    );
}

#[tokio::test]
async fn lz4_tables_keep_their_codec_through_later_writes() {
    let lake = TempLake::new();
    let session = lake.session().await;
    for sql in [
        "CREATE TABLE logs.hot WITH (compression = 'lz4') AS SELECT value AS player_id FROM generate_series(1, 1000)",
        "INSERT INTO logs.hot SELECT value FROM generate_series(1001, 1500)",
    ] {
        session
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let dt = session
        .lake()
        .open_table(&TableRef::parse("logs.hot").unwrap(), &TableVersion::Latest)
        .await
        .unwrap();
    assert_eq!(TableLayout::of_table(&dt).unwrap().compression, Codec::Lz4);
    let files = parquet_files(&lake.path().join("logs/hot"));
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let reader = SerializedFileReader::new(File::open(f).unwrap()).unwrap();
        for rg in reader.metadata().row_groups() {
            for col in rg.columns() {
                assert_eq!(col.compression(), Compression::LZ4_RAW, "{f:?}");
            }
        }
    }
    assert_eq!(
        rows(&session, "SELECT count(*), sum(player_id) FROM logs.hot").await,
        ["1500|1125750"]
    );
}

/// A partitioned table written again with `CREATE OR REPLACE` (the log then records the
/// writer's non-null columns) still answers aggregates over its partition column: the scan's
/// partition columns and the table's agree that they may be null.
#[tokio::test]
async fn a_replaced_partitioned_table_answers_aggregates() {
    let lake = TempLake::new();
    let session = lake.session().await;
    let create = "TABLE shop.sales PARTITIONED BY (day) AS \
                  SELECT value AS id, CAST(value % 3 AS VARCHAR) AS day FROM generate_series(1, 30)";
    for sql in [
        format!("CREATE {create}"),
        format!("CREATE OR REPLACE {create}"),
    ] {
        session
            .sql(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_eq!(
        rows(
            &session,
            "SELECT day, count(*), max(day) FROM shop.sales GROUP BY day ORDER BY day"
        )
        .await,
        ["0|10|0", "1|10|1", "2|10|2"]
    );
    assert_eq!(
        rows(&session, "SELECT approx_distinct(day) FROM shop.sales").await,
        ["3"]
    );
}
