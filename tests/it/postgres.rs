//! The PostgreSQL reader against the real server on 127.0.0.1:5432: every supported type
//! decoded from binary COPY. Each test works in its own database, dropped afterwards.

use gamelake::sources::postgres::{connect, read};

use crate::support::render;

/// A fresh database, dropped on drop.
pub(crate) struct TestDb {
    name: String,
}

const ADMIN_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

impl TestDb {
    pub(crate) async fn new() -> Self {
        let name = format!("gamelake_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(ADMIN_URL)
            .await
            .expect("PostgreSQL must run on 127.0.0.1:5432 (user postgres, trust auth)");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self { name }
    }

    pub(crate) fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.name
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-c",
                &sql,
            ])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_type_round_trips() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE EXTENSION citext;
             CREATE TYPE mood AS ENUM ('sad', 'happy');
             CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
             CREATE TABLE t (id int4, b bool, s int2, l int8, f4 float4, f8 float8,
               n numeric(12,2), nu numeric, tx text, vc varchar(10), ch char(3), nm name, ci citext,
               by bytea, d date, tm time, ts timestamp, tz timestamptz, iv interval, u uuid,
               j json, jb jsonb, e mood, ip inet, cd cidr, arr int4[], tarr text[], dom posint);
             SET TIME ZONE 'Asia/Shanghai';
             INSERT INTO t VALUES
               (1, true, -2, 9000000000, 1.5, -2.25, 12345.67, 123456789012345678901234567890.123456789,
                'héllo', 'vc', 'ab', 'nm', 'MiXeD', '\\x00ff', '2026-11-24', '13:45:30.5',
                '2026-11-24 08:00:00', '2026-11-24 08:00:00+08', '1 year 2 mons 3 days 04:05:06',
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": 1}', '{\"b\": [1, 2]}', 'happy',
                '192.168.0.1', '10.0.0.0/8', '{1,NULL,3}', '{x,y}', 7),
               (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
               (3, false, 0, 0, 'NaN', 'Infinity', -0.05, 'NaN', '', '', '', '', '', '', 'infinity', '00:00',
                '-infinity', 'infinity', '-1 day', '00000000-0000-0000-0000-000000000000', 'null', '[]',
                'sad', '::1', '2001:db8::/32', '{}', '{NULL}', 1);",
        )
        .await
        .unwrap();
    let (schema, batches) = read(&client, "SELECT * FROM t ORDER BY id").await.unwrap();
    let types: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        types.join(" "),
        "id:Int32 b:Boolean s:Int16 l:Int64 f4:Float32 f8:Float64 n:Decimal128(12, 2) nu:Utf8 \
         tx:Utf8 vc:Utf8 ch:Utf8 nm:Utf8 ci:Utf8 by:Binary d:Date32 tm:Time64(µs) ts:Timestamp(µs) \
         tz:Timestamp(µs, \"UTC\") iv:Interval(MonthDayNano) u:Utf8 j:Utf8 jb:Utf8 e:Utf8 ip:Utf8 \
         cd:Utf8 arr:List(Int32) tarr:List(Utf8) dom:Int32"
    );
    let rows = render(&batches);
    let cells = |row: usize| -> Vec<String> { rows[row].split('|').map(String::from).collect() };
    let r1 = cells(0);
    assert_eq!(
        r1,
        vec![
            "1",
            "true",
            "-2",
            "9000000000",
            "1.5",
            "-2.25",
            "12345.67",
            "123456789012345678901234567890.123456789",
            "héllo",
            "vc",
            "ab ",
            "nm",
            "MiXeD",
            "00ff",
            "2026-11-24",
            "13:45:30.500",
            "2026-11-24T08:00:00",
            "2026-11-24T00:00:00Z",
            "14 mons 3 days 4 hours 5 mins 6.000000000 secs",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{\"a\": 1}",
            "{\"b\": [1, 2]}",
            "happy",
            "192.168.0.1",
            "10.0.0.0/8",
            "[1, NULL, 3]",
            "[x, y]",
            "7",
        ]
    );
    assert!(cells(1)[1..].iter().all(|c| c == "NULL"), "{:?}", cells(1));
    let r3 = cells(2);
    assert_eq!(r3[4], "NaN");
    assert_eq!(r3[5], "inf");
    assert_eq!(r3[6], "-0.05");
    assert_eq!(r3[7], "NaN");
    assert_eq!(r3[8], "", "empty text is not NULL");
    // ±infinity become the largest and smallest representable values.
    let d = &batches[0].column(14);
    let d = d
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Date32Array>()
        .unwrap();
    assert_eq!(d.value(2), i32::MAX);
    let ts = batches[0]
        .column(16)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(ts.value(2), i64::MIN);
    let tz = batches[0]
        .column(17)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(tz.value(2), i64::MAX);
    assert_eq!(r3[18], "-1 days");
    assert_eq!(r3[23], "::1");
    assert_eq!(r3[24], "2001:db8::/32");
    assert_eq!(r3[25], "[]");
    assert_eq!(r3[26], "[NULL]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_types_and_bad_connections_say_what_to_do() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute("CREATE TABLE geo (id int, p point)")
        .await
        .unwrap();
    let err = read(&client, "SELECT * FROM geo")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"p\"") && err.contains("point") && err.contains("::text"),
        "{err}"
    );
    // The suggested cast works.
    read(&client, "SELECT id, p::text AS p FROM geo")
        .await
        .unwrap();
    let err = read(&client, "SELECT * FROM missing_table")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing_table") && err.contains("does not exist"),
        "{err}"
    );
    let err = connect("postgres://nobody:secret@127.0.0.1:5432/nodb")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("secret"), "password leaked: {err}");
    assert!(err.contains("nobody") || err.contains("nodb"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tables_answer_sql_with_filters_pushed_down() {
    use datafusion::prelude::{col, lit};
    use gamelake::sources::postgres::{PgCatalog, PgTable};

    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE players (player_id bigint, region text, balance numeric(12,2));
             INSERT INTO players SELECT g, (ARRAY['beijing','shanghai'])[g % 2 + 1], g * 0.5 FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    let expected: String = client
        .query_one(
            "SELECT count(*)::text || ',' || sum(balance)::text FROM players WHERE region = 'beijing' AND player_id > 100",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // Through the CLI, beside a lake table, in one query.
    let lake = crate::support::TempLake::new();
    let (loc, url) = (lake.location(), db.url());
    let sql = "SELECT count(*) AS n, sum(balance) AS s FROM pg.public.players WHERE region = 'beijing' AND player_id > 100";
    let out = crate::support::gamelake_ok(
        &[
            "--lake", &loc, "--pg-url", &url, "sql", "-c", sql, "--format", "csv",
        ],
        &[],
    );
    assert_eq!(out, format!("n,s\n{expected}\n"));
    crate::support::gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            "CREATE TABLE game.old AS SELECT 5000 AS player_id",
        ],
        &[],
    );
    let union = "SELECT count(*) AS n FROM (SELECT player_id FROM game.old UNION ALL SELECT player_id FROM pg.public.players)";
    let out = crate::support::gamelake_ok(
        &["--lake", &loc, "sql", "-c", union, "--format", "csv"],
        &[("GAMELAKE_PG_URL", &url)],
    );
    assert_eq!(out, "n\n1001\n");

    // The filters and columns reach PostgreSQL's query.
    let catalog = PgCatalog::load(&url).await.unwrap();
    let provider = datafusion::catalog::CatalogProvider::schema(&catalog, "public")
        .unwrap()
        .table("players")
        .await
        .unwrap()
        .unwrap();
    let table = PgTable::from_provider(&provider).unwrap();
    let query = table.planned_query(
        Some(&vec![2]),
        &[
            col("region").eq(lit("beijing")),
            col("player_id").gt(lit(100i64)),
        ],
    );
    assert_eq!(
        query,
        "SELECT \"balance\" FROM \"public\".\"players\" WHERE (\"region\" = 'beijing') AND (\"player_id\" > 100)"
    );
}
