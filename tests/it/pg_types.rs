//! Ordinary PostgreSQL columns that Delta has no type for (`time`, `interval`) or whose values no
//! date library prints (`'infinity'`): `gamelake ingest` lands them, incremental runs keep
//! merging them, and `gamelake sql` in every format and DuckDB read them back.

use crate::pipelines::lake_with_pipeline;
use crate::postgres::TestDb;
use crate::support::{DUCKDB_DELTA, gamelake_ok, run_python, sql_csv};
use gamelake::sources::postgres::connect;

const PIPELINE: &str = r#"name = "odd_types"
[source]
kind = "postgres"
url = "${PG_URL}"
[[table]]
from = "public.shifts"
to = "game.shifts"
mode = "incremental"
key = ["id"]
cursor = "updated_at"
"#;

/// The columns as `gamelake sql --format csv` prints them, in key order.
const QUERY: &str = "SELECT id, starts, lasts, lasts['days'] AS days, opened, seen, seen_at, \
                     tags FROM game.shifts ORDER BY id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_interval_and_infinity_land_and_read_back_everywhere() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE shifts (id int PRIMARY KEY, starts time, lasts interval, opened date,
               seen timestamp, seen_at timestamptz, tags text[],
               updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO shifts (id, starts, lasts, opened, seen, seen_at, tags) VALUES
               (1, '13:45:30.5', '1 year 2 mons 3 days 04:05:06', '2026-11-24',
                '2026-11-24 08:00:00', '2026-11-24 08:00:00+00', '{a,b}'),
               (2, '00:00', '-1 day', 'infinity', '-infinity', 'infinity', '{}'),
               (3, NULL, NULL, '-infinity', 'infinity', '-infinity', NULL);",
        )
        .await
        .unwrap();
    let (lake, loc, file) = lake_with_pipeline("odd.toml", PIPELINE);
    let url = db.url();
    let env = [("PG_URL", url.as_str())];
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);

    let expected = "id,starts,lasts,days,opened,seen,seen_at,tags\n\
        1,49530500000,\"{months: 14, days: 3, microseconds: 14706000000}\",3,2026-11-24,2026-11-24T08:00:00,2026-11-24T08:00:00Z,\"[a, b]\"\n\
        2,0,\"{months: 0, days: -1, microseconds: 0}\",-1,9999-12-31,0001-01-01T00:00:00,9999-12-31T23:59:59.999999Z,[]\n\
        3,,,,0001-01-01,9999-12-31T23:59:59.999999,0001-01-01T00:00:00Z,\n";
    assert_eq!(sql_csv(&loc, &["-c", QUERY]), expected);

    // An incremental run merges a changed row: the lake's types still match the source's.
    client
        .batch_execute(
            "UPDATE shifts SET lasts = '2 hours', starts = '23:59:59.999999', updated_at = now() + interval '1 ms' WHERE id = 3",
        )
        .await
        .unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    let row3 = "SELECT starts, lasts['microseconds'] AS us FROM game.shifts WHERE id = 3";
    assert_eq!(
        sql_csv(&loc, &["-c", row3]),
        "starts,us\n86399999999,7200000000\n"
    );

    // Every output format prints every column.
    for format in ["table", "json", "ndjson"] {
        let out = gamelake_ok(
            &["--lake", &loc, "sql", "--format", format, "-c", QUERY],
            &[],
        );
        assert!(
            out.contains("9999-12-31") && out.contains("0001-01-01") && out.contains("14706000000"),
            "{format}: {out}"
        );
    }
    let parquet = lake.path().join("out.parquet");
    let parquet = parquet.display().to_string();
    gamelake_ok(
        &[
            "--lake", &loc, "sql", "--format", "parquet", "-o", &parquet, "-c", QUERY,
        ],
        &[],
    );
    let read = run_python(
        "import pyarrow.parquet as pq, sys\nt = pq.read_table(sys.argv[1])\nprint(t.num_rows, t.column('lasts')[0].as_py())",
        &[&parquet],
    );
    assert_eq!(
        read.trim(),
        "3 {'months': 14, 'days': 3, 'microseconds': 14706000000}"
    );

    // DuckDB reads the Delta table: the infinities as the ends of its date range.
    let table = lake.path().join("game/shifts").display().to_string();
    let duck = run_python(
        &format!(
            "{DUCKDB_DELTA}\nimport sys\nprint(duck().execute(\"SELECT CAST(opened AS VARCHAR), epoch_us(seen_at), lasts.days FROM delta_scan(?) WHERE id = 2\", [sys.argv[1]]).fetchone())"
        ),
        &[&table],
    );
    assert_eq!(duck.trim(), "('9999-12-31', 253402300799999999, -1)");
}
