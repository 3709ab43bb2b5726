//! How lake tables are scanned: the log's statistics reach DataFusion's planner and the Parquet
//! opener, so files are skipped by partition values, by the log's bounds and by a join's
//! dynamic filter; and the bounds never stand in for values.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use gamelake::lake::TableRef;
use gamelake::lake::layout::TableLayout;
use gamelake::lake::write::{WriteMode, WriteOptions, write_batches};
use gamelake::query::Session;

use crate::support::{TempLake, execute, explain, rows};

/// `logs.events`: two days, and three writes of 100 players each (1–100, 101–200, 201–300), so
/// six files whose player ranges do not overlap.
async fn events(session: &Session) {
    for (first, last) in [(1, 100), (101, 200), (201, 300)] {
        let select = format!(
            "SELECT CASE WHEN value % 2 = 0 THEN DATE '2026-11-01' ELSE DATE '2026-11-02' END AS day, \
             value AS player_id FROM generate_series({first}, {last})"
        );
        let sql = if first == 1 {
            format!("CREATE TABLE logs.events PARTITIONED BY (day) AS {select}")
        } else {
            format!("INSERT INTO logs.events {select}")
        };
        execute(session, &sql).await;
    }
}

/// How many data files the plan's scan reads.
fn files_in(plan: &str) -> usize {
    plan.matches(".parquet").count()
}

#[tokio::test]
async fn partition_values_and_logged_bounds_skip_files_when_planning() {
    let lake = TempLake::new();
    let session = lake.session().await;
    events(&session).await;
    let all = "SELECT count(*) FROM logs.events WHERE player_id > 0";
    assert_eq!(files_in(&explain(&session, all).await), 6);
    assert_eq!(rows(&session, all).await, ["300"]);

    let one_day = "SELECT count(*) FROM logs.events WHERE day = DATE '2026-11-02'";
    assert_eq!(files_in(&explain(&session, one_day).await), 3);
    assert_eq!(rows(&session, one_day).await, ["150"]);

    // One day and one player range: the log's bounds leave one file.
    let lookup = "SELECT count(*) FROM logs.events \
                  WHERE day = DATE '2026-11-02' AND player_id BETWEEN 120 AND 130";
    assert_eq!(files_in(&explain(&session, lookup).await), 1);
    assert_eq!(rows(&session, lookup).await, ["5"]);

    // Nothing can match: no file is read and the answer is still right.
    let none = "SELECT count(*) FROM logs.events WHERE player_id > 1000";
    assert_eq!(files_in(&explain(&session, none).await), 0);
    assert_eq!(rows(&session, none).await, ["0"]);

    // The session keeps each table's scan between queries; a new version replaces it.
    session
        .sql("INSERT INTO logs.events VALUES (DATE '2026-11-02', 1001)")
        .await
        .unwrap();
    assert_eq!(rows(&session, none).await, ["1"]);
    assert_eq!(rows(&session, all).await, ["301"]);
}

#[tokio::test]
async fn a_joins_dynamic_filter_skips_files_by_their_bounds() {
    let lake = TempLake::new();
    let session = lake.session().await;
    events(&session).await;
    let sql = "SELECT e.player_id, e.day FROM logs.events e \
               JOIN (SELECT 150 AS id) p ON e.player_id = p.id";
    assert_eq!(rows(&session, sql).await, ["150|2026-11-01"]);
    // All six files are planned (the player is not known when planning); the opener skips the
    // ones whose bounds exclude the join's build side.
    let analyzed = rows(&session, &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .join("\n");
    assert!(
        analyzed.contains("files_ranges_pruned_statistics=6 total → 2 matched"),
        "{analyzed}"
    );
}

/// A one-player lookup over files that all span the player ids (each write holds every third
/// player: 0, 3, 6… then 1, 4, 7… then 2, 5, 8…), so min/max skip none: the planner asks the
/// files' bloom filters and the scan opens only the file holding the player.
#[tokio::test]
async fn bloom_filters_skip_files_when_planning() {
    let lake = TempLake::new();
    let session = lake.session().await;
    let table = TableRef::new("game", "lookups").unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "player_id",
        DataType::Int64,
        false,
    )]));
    for first in 0..3 {
        let players: Int64Array = (0..100).map(|i| 3 * i + first).collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(players)]).unwrap();
        let options = WriteOptions {
            layout: Some(TableLayout {
                bloom_filter_columns: vec!["player_id".into()],
                ..Default::default()
            }),
            ..WriteOptions::new(if first == 0 {
                WriteMode::Create
            } else {
                WriteMode::Append
            })
        };
        let state = session.context().state();
        write_batches(session.lake(), &table, &state, vec![batch], options)
            .await
            .unwrap();
    }
    let count = |filter: &str| format!("SELECT count(*) FROM game.lookups WHERE {filter}");
    for (filter, files, found) in [
        ("player_id = 151", 1, "1"),
        ("player_id IN (151, 152)", 2, "2"),
        ("player_id = 151 OR player_id = 3", 2, "2"),
        // Not an equality: bloom filters cannot judge it, min/max keep all three.
        ("player_id > 150", 3, "149"),
    ] {
        let sql = count(filter);
        assert_eq!(files_in(&explain(&session, &sql).await), files, "{sql}");
        assert_eq!(rows(&session, &sql).await, [found], "{sql}");
    }
    // Asked again (the filters are kept now), and after a write adds a file holding 151.
    let lookup = count("player_id = 151");
    assert_eq!(files_in(&explain(&session, &lookup).await), 1);
    session
        .sql("INSERT INTO game.lookups VALUES (151)")
        .await
        .unwrap();
    assert_eq!(files_in(&explain(&session, &lookup).await), 2);
    assert_eq!(rows(&session, &lookup).await, ["2"]);
    // The session setting that turns bloom filters off turns this off too.
    session
        .sql("SET datafusion.execution.parquet.bloom_filter_on_read = false")
        .await
        .unwrap();
    assert_eq!(files_in(&explain(&session, &lookup).await), 4);
    assert_eq!(rows(&session, &lookup).await, ["2"]);
}

#[tokio::test]
async fn logged_bounds_never_replace_values() {
    let lake = TempLake::new();
    let session = lake.session().await;
    // The log keeps timestamps in milliseconds and the Parquet writer truncates long strings'
    // statistics: neither may change an answer.
    let long = "x".repeat(80);
    session
        .sql(&format!(
            "CREATE TABLE game.moments AS SELECT * FROM (VALUES \
             (TIMESTAMP '2026-01-01 10:00:00.123456', '{long}b'), \
             (TIMESTAMP '2026-01-01 09:00:00.000001', 'a')) v(at, name)"
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(
            &session,
            "SELECT max(at), min(at), max(name) = repeat('x', 80) || 'b' FROM game.moments"
        )
        .await,
        ["2026-01-01T10:00:00.123456|2026-01-01T09:00:00.000001|true"]
    );
    for filter in [
        "at > TIMESTAMP '2026-01-01 10:00:00.1234'",
        "at = TIMESTAMP '2026-01-01 10:00:00.123456'",
        "name > repeat('x', 80) || 'a'",
        "name = repeat('x', 80) || 'b'",
    ] {
        let sql = format!("SELECT count(*) FROM game.moments WHERE {filter}");
        assert_eq!(rows(&session, &sql).await, ["1"], "{sql}");
    }
}

#[tokio::test]
async fn null_partitions_and_columns_added_later_are_read() {
    let lake = TempLake::new();
    let session = lake.session().await;
    session
        .sql(
            "CREATE TABLE game.players PARTITIONED BY (region) AS SELECT * FROM (VALUES \
             (1, 'bj'), (2, CAST(NULL AS VARCHAR))) v(id, region)",
        )
        .await
        .unwrap();
    assert_eq!(
        rows(&session, "SELECT id FROM game.players WHERE region IS NULL").await,
        ["2"]
    );
    assert_eq!(
        rows(&session, "SELECT id FROM game.players WHERE region = 'bj'").await,
        ["1"]
    );
    assert_eq!(
        rows(
            &session,
            "SELECT id FROM game.players WHERE region IS NOT NULL"
        )
        .await,
        ["1"]
    );

    // A later write adds a column (as intake does): older files have no statistics for it and
    // no values; they read as NULL and are not skipped by it.
    let table = TableRef::new("game", "scores").unwrap();
    let write = |columns: Vec<(&str, i64)>| {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, _)| Field::new(*name, DataType::Int64, true))
                .collect::<Vec<_>>(),
        ));
        let arrays = columns
            .iter()
            .map(|(_, v)| Arc::new(Int64Array::from(vec![*v])) as _)
            .collect();
        RecordBatch::try_new(schema, arrays).unwrap()
    };
    for batch in [
        write(vec![("id", 1)]),
        write(vec![("id", 2), ("level", 5)]),
        write(vec![("id", 3), ("level", 9)]),
    ] {
        let options = WriteOptions {
            merge_schema: true,
            ..WriteOptions::new(WriteMode::Append)
        };
        write_batches(
            session.lake(),
            &table,
            &session.context().state(),
            vec![batch],
            options,
        )
        .await
        .unwrap();
    }
    assert_eq!(
        rows(&session, "SELECT id, level FROM game.scores ORDER BY id").await,
        ["1|NULL", "2|5", "3|9"]
    );
    assert_eq!(
        rows(&session, "SELECT id FROM game.scores WHERE level IS NULL").await,
        ["1"]
    );
    assert_eq!(
        rows(&session, "SELECT id FROM game.scores WHERE level = 5").await,
        ["2"]
    );

    // The file without bounds on `level` is kept; the one whose bounds exclude 9 is not, so a
    // file written before a column existed does not stop pruning by it.
    let nine = "SELECT id FROM game.scores WHERE level = 9";
    assert_eq!(files_in(&explain(&session, nine).await), 2);
    assert_eq!(rows(&session, nine).await, ["3"]);
}

/// A sorted table's files are written in small pages, so a lookup of the sort key decodes
/// the page holding it, not the whole file: the page index prunes the rest.
#[tokio::test]
async fn a_sorted_tables_lookup_reads_one_page_of_the_file() {
    let lake = TempLake::new();
    let session = lake.session().await;
    execute(
        &session,
        "CREATE TABLE game.sorted CLUSTER BY player_id AS \
         SELECT (value * 7919) % 20000 AS player_id, value AS n FROM generate_series(0, 19999)",
    )
    .await;
    let lookup = "SELECT n FROM game.sorted WHERE player_id = 12345";
    assert_eq!(rows(&session, lookup).await, ["7255"]);
    let analyzed = rows(&session, &format!("EXPLAIN ANALYZE {lookup}"))
        .await
        .join("\n");
    // "page_index_pages_pruned=5 total → 1 matched": the file's pages, and those decoded.
    let pages: Vec<usize> = analyzed
        .split("page_index_pages_pruned=")
        .nth(1)
        .map(|rest| {
            rest.split(" matched")
                .next()
                .unwrap_or("")
                .split(" total → ")
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let want = 20_000usize.div_ceil(gamelake::lake::layout::SORTED_PAGE_ROWS);
    assert_eq!(pages, [want, 1], "{analyzed}");
}
