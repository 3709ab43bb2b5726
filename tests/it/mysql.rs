//! MySQL and MariaDB as a source, against the real MariaDB on 127.0.0.1:3306: every type of the
//! policy read as the `mariadb` client prints it, consistent parallel snapshots while a writer
//! moves money between rows, incremental runs that miss no late commit, and clear errors.

use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use futures::TryStreamExt;
use gamelake::sources::Source;
use gamelake::sources::mysql::{MySource, TypePolicy};
use mysql_async::prelude::Queryable;

use crate::support::{TempLake, gamelake_err, gamelake_ok, render};

/// A database of its own on the local MariaDB, dropped at the end.
pub(crate) struct MyDb {
    name: String,
}

impl MyDb {
    pub(crate) fn new() -> Self {
        let name = format!("gamelake_{}", uuid::Uuid::new_v4().simple());
        mariadb(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"));
        Self { name }
    }

    pub(crate) fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    /// Runs SQL in this database through the `mariadb` client; returns what it prints (tab
    /// separated, no headers).
    pub(crate) fn sql(&self, sql: &str) -> String {
        mariadb_in(&self.name, sql)
    }

    pub(crate) async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::new(mysql_async::Opts::from_url(&self.url()).unwrap())
            .await
            .expect("MariaDB must run on 127.0.0.1:3306 (user root, no password)")
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mariadb")
            .args([
                "-uroot",
                "-h127.0.0.1",
                "-e",
                &format!("DROP DATABASE IF EXISTS {}", self.name),
            ])
            .output();
    }
}

fn mariadb(sql: &str) -> String {
    mariadb_in("test", sql)
}

fn mariadb_in(db: &str, sql: &str) -> String {
    let out = std::process::Command::new("mariadb")
        .args(["-uroot", "-h127.0.0.1", "-N", "-B", db, "-e", sql])
        .output()
        .expect("the mariadb client (MariaDB must run on 127.0.0.1:3306)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pipeline(lake: &TempLake, name: &str, tables: &str, extra: &str) -> String {
    let file = lake.path().join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!("name = \"{name}\"\n[source]\nkind = \"mysql\"\nurl = \"${{MYSQL_URL}}\"\n{extra}\n{tables}"),
    )
    .unwrap();
    file.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_of_the_policy_reads_as_the_mariadb_client_prints_it() {
    let db = MyDb::new();
    db.sql(
        "SET SESSION sql_mode = '';
         CREATE TABLE t (id int PRIMARY KEY, b tinyint(1), t tinyint, tu tinyint unsigned,
           s smallint unsigned, m mediumint unsigned, i int unsigned, g bigint, gu bigint unsigned,
           d decimal(10,2), dd decimal(65,30), f float, db double, bt bit(1), b9 bit(9),
           c char(5), l varchar(20) CHARACTER SET latin1, vb varbinary(8), bl blob,
           dt date, dtm datetime(6), ts timestamp(6) NULL, tm time(3), y year,
           e enum('low','high'), st set('x','y','z'), j json, geo geometry);
         INSERT INTO t VALUES (1, 1, -128, 255, 65535, 16777215, 4294967295, -9223372036854775808,
           18446744073709551615, -12.34, '-1.000000000000000000000000000001', 1.5, -2.25, b'1', b'100000001',
           'ab', 'café', x'00ff', x'0102', '2024-02-29', '2024-01-02 03:04:05.123456',
           '2024-01-02 03:04:05.654321', '-838:59:59.000', 2024, 'high', 'x,z', '{\"a\": [1, 2]}',
           ST_GeomFromText('POINT(1 2)'));
         INSERT INTO t (id, dt, dtm, tm) VALUES (2, '0000-00-00', '2024-00-10 00:00:00', '100:00:00.5');",
    );
    let lake = TempLake::new();
    let file = pipeline(
        &lake,
        "types",
        "[[table]]\nfrom = \"t\"\nto = \"v1.t\"\nmode = \"snapshot\"\n",
        "",
    );
    gamelake_ok(
        &["--lake", &lake.location(), "ingest", &file],
        &[("MYSQL_URL", &db.url())],
    );
    let session = lake.session().await;
    let schema = session
        .context()
        .table("v1.t")
        .await
        .unwrap()
        .schema()
        .clone();
    // Types as the policy maps them (strings may come back as views, lists under any item name).
    let kind = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => "Utf8".to_string(),
        DataType::BinaryView | DataType::LargeBinary => "Binary".to_string(),
        DataType::List(_) | DataType::LargeList(_) => "List".to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "Timestamp".to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "TimestampUTC".to_string(),
        other => other.to_string(),
    };
    let types: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), kind(f.data_type())))
        .collect();
    assert_eq!(
        types.join(" "),
        "id:Int32 b:Boolean t:Int8 tu:Int16 s:Int32 m:Int64 i:Int64 g:Int64 gu:Decimal128(20, 0) \
         d:Decimal128(10, 2) dd:Utf8 f:Float32 db:Float64 bt:Boolean b9:Int64 c:Utf8 l:Utf8 \
         vb:Binary bl:Binary dt:Date32 dtm:Timestamp ts:TimestampUTC tm:Int64 y:Int16 e:Utf8 \
         st:List j:Utf8 geo:Binary"
    );
    // The values, against what the mariadb client prints for the same row.
    let client = db.sql(
        "SELECT id, b, t, tu, s, m, i, g, gu, d, dd, f, db, c, l, HEX(vb), HEX(bl), dt, dtm, ts, tm, y, e, st, j, bt+0, b9+0
         FROM t WHERE id = 1",
    );
    let client: Vec<&str> = client.trim_end().split('\t').collect();
    let lake_row = render(
        &session
            .query(
                "SELECT id, CASE WHEN b THEN 1 ELSE 0 END, t, tu, s, m, i, g, gu, d, dd, f, db, c, l,
                   upper(encode(vb, 'hex')), upper(encode(bl, 'hex')), dt, dtm, ts, tm, y, e,
                   array_to_string(st, ','), j, CASE WHEN bt THEN 1 ELSE 0 END, b9
                 FROM v1.t WHERE id = 1",
            )
            .await
            .unwrap(),
    );
    let lake_row: Vec<String> = lake_row[0].split('|').map(str::to_string).collect();
    let shown = |i: usize| lake_row[i].clone();
    for (i, expected) in client.iter().enumerate() {
        let got = shown(i);
        let same = match i {
            // Timestamps print with a T; the time column is microseconds.
            18 | 19 => got.replace('T', " ").trim_end_matches('Z') == *expected,
            20 => got == "-3020399000000" && *expected == "-838:59:59.000",
            _ => got == *expected,
        };
        assert!(same, "column {i}: lake {got:?}, mariadb {expected:?}");
    }
    // The geometry is WKB (MySQL's SRID prefix removed): a point's 21 bytes.
    let geo = render(
        &session
            .query("SELECT length(encode(geo, 'hex')) / 2 FROM v1.t WHERE id = 1")
            .await
            .unwrap(),
    );
    assert_eq!(geo, ["21"]);
    // Zero dates and zero parts are NULL; time over 24 hours keeps its hours.
    let row2 = render(
        &session
            .query("SELECT dt IS NULL, dtm IS NULL, tm FROM v1.t WHERE id = 2")
            .await
            .unwrap(),
    );
    assert_eq!(row2, ["true|true|360000500000"]);
    // With zero_dates = "error", the same table is refused with the column named.
    let strict = pipeline(
        &lake,
        "strict",
        "[[table]]\nfrom = \"t\"\nto = \"v1.strict\"\nmode = \"snapshot\"\n",
        "zero_dates = \"error\"\ntinyint1 = \"int\"",
    );
    let err = gamelake_err(
        &["--lake", &lake.location(), "ingest", &strict],
        &[("MYSQL_URL", &db.url())],
    );
    assert!(
        err.contains("column `dt`") && err.contains("zero date"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_snapshot_is_consistent_while_a_writer_moves_money() {
    let db = MyDb::new();
    // 200,000 accounts holding 100 each; a composite key, so ranges split on both columns.
    db.sql(
        "CREATE TABLE accounts (region varchar(8), id int, balance bigint NOT NULL, PRIMARY KEY (region, id)) ENGINE=InnoDB;
         INSERT INTO accounts SELECT IF(seq % 2 = 0, 'bj', 'sh'), seq, 100 FROM seq_1_to_200000;
         ANALYZE TABLE accounts;",
    );
    let total = 200_000 * 100i64;
    let source = MySource::new(&db.url(), TypePolicy::default());
    // A writer moves money between random accounts in transactions, and opens new empty ones.
    let writer_db = db.url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer_stop = stop.clone();
    let writer = tokio::spawn(async move {
        let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&writer_db).unwrap())
            .await
            .unwrap();
        let mut n: u64 = 0;
        while !writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let (a, b) = (n * 7919 % 200_000 + 1, n * 104_729 % 200_000 + 1);
            let region = |id: u64| if id.is_multiple_of(2) { "bj" } else { "sh" };
            let sql = format!(
                "START TRANSACTION;
                 UPDATE accounts SET balance = balance - 5 WHERE region = '{}' AND id = {a};
                 UPDATE accounts SET balance = balance + 5 WHERE region = '{}' AND id = {b};
                 INSERT INTO accounts VALUES ('gz', {}, 0);
                 COMMIT;",
                region(a),
                region(b),
                1_000_000 + n
            );
            conn.query_drop(sql).await.unwrap();
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = gamelake::sources::Read {
        target: "v1.accounts".into(),
        from: Some("accounts".into()),
        query: source.select_all("accounts"),
    };
    let snapshot = source.snapshot(&read, 4).await.unwrap();
    assert_eq!(
        snapshot.parts.len(),
        4,
        "four key ranges on four connections"
    );
    let mut batches = Vec::new();
    for part in snapshot.parts {
        batches.extend(part.try_collect::<Vec<_>>().await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let transfers = writer.await.unwrap();
    assert!(
        transfers > 10,
        "the writer ran during the snapshot ({transfers} transfers)"
    );
    let session = TempLake::new().session().await;
    let table = datafusion::datasource::MemTable::try_new(snapshot.schema, vec![batches]).unwrap();
    session
        .context()
        .register_table("snap", std::sync::Arc::new(table))
        .unwrap();
    let seen = render(
        &session
            .query("SELECT sum(balance), count(*), count(DISTINCT region || '/' || CAST(id AS VARCHAR)), count(*) FILTER (WHERE region = 'gz') FROM snap")
            .await
            .unwrap(),
    );
    let parts: Vec<i64> = seen[0].split('|').map(|v| v.parse().unwrap()).collect();
    // One point in time: the money adds up, no row twice, and every opened account counted.
    assert_eq!(parts[0], total, "money appeared or vanished: {seen:?}");
    assert_eq!(parts[1], parts[2], "a row was read twice: {seen:?}");
    assert_eq!(parts[1], 200_000 + parts[3], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_miss_no_late_commit() {
    let db = MyDb::new();
    db.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, amount int, updated_at datetime(6) NOT NULL) ENGINE=InnoDB;
         INSERT INTO orders SELECT seq, seq, NOW(6) - INTERVAL 1 HOUR FROM seq_1_to_100;",
    );
    let lake = TempLake::new();
    let file = pipeline(
        &lake,
        "inc",
        "[[table]]\nfrom = \"orders\"\nto = \"v1.orders\"\nmode = \"incremental\"\nkey = [\"id\"]\ncursor = \"updated_at\"\n",
        "",
    );
    let run = || {
        gamelake_ok(
            &["--lake", &lake.location(), "ingest", &file],
            &[("MYSQL_URL", &db.url())],
        )
    };
    run();
    // A transaction starts, writes a row stamped with its statement's time, and commits only
    // after the next run has read.
    let mut late = db.conn().await;
    late.query_drop("START TRANSACTION").await.unwrap();
    late.query_drop("INSERT INTO orders VALUES (101, 101, NOW(6))")
        .await
        .unwrap();
    db.sql("UPDATE orders SET amount = 1000, updated_at = NOW(6) WHERE id = 1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run();
    late.query_drop("COMMIT").await.unwrap();
    // Rows stamped in the last second wait for the next run, and any transaction that may write
    // anywhere on the server (other tests run beside this one) holds the window back while it
    // is open: run until the window has passed them. A window that skipped the late row would
    // never show it.
    let expected = [format!(
        "101|{}|101",
        (1..=100).sum::<i64>() - 1 + 1000 + 101
    )];
    let mut seen = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        run();
        let session = lake.session().await;
        seen = render(
            &session
                .query("SELECT count(*), sum(amount), max(id) FROM v1.orders")
                .await
                .unwrap(),
        );
        if seen == expected {
            break;
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_passwords_missing_tables_and_unknown_types_say_what_to_do() {
    let db = MyDb::new();
    db.sql("CREATE TABLE v (id int PRIMARY KEY, x int)");
    let lake = TempLake::new();
    let file = pipeline(
        &lake,
        "bad",
        "[[table]]\nfrom = \"nope\"\nto = \"v1.nope\"\nmode = \"snapshot\"\n",
        "",
    );
    let err = gamelake_err(
        &["--lake", &lake.location(), "ingest", &file],
        &[("MYSQL_URL", &db.url())],
    );
    assert!(
        err.contains("nope") && err.contains("doesn't exist"),
        "{err}"
    );
    let wrong = db.url().replace("root@", "root:not-the-password@");
    let err = gamelake_err(
        &["--lake", &lake.location(), "ingest", &file],
        &[("MYSQL_URL", &wrong)],
    );
    assert!(err.contains("Access denied"), "{err}");
    assert!(
        !err.contains("not-the-password"),
        "the password was printed: {err}"
    );
    assert!(!lake.path().join("v1").exists(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mysql_tables_answer_sql_beside_the_lake_with_safe_filters_pushed_down() {
    let db = MyDb::new();
    db.sql(
        "CREATE TABLE players (id int PRIMARY KEY, name varchar(10), coins decimal(10,2), seen datetime);
         INSERT INTO players SELECT seq, ELT(1 + seq % 4, 'ann', 'Ann', 'bob', 'Bob'), seq / 4,
           '2026-01-01' + INTERVAL seq HOUR FROM seq_1_to_1000;
         INSERT INTO players (id, name) VALUES (0, 'x\\\\y');",
    );
    let lake = TempLake::new();
    let url = db.url();
    let env = [("GAMELAKE_MYSQL_URL", url.as_str())];
    let sql = |q: &str| {
        let out = gamelake_ok(
            &[
                "--lake",
                &lake.location(),
                "sql",
                "--format",
                "csv",
                "-c",
                q,
            ],
            &env,
        );
        out.lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    let table = format!("mysql.{}.players", db.name);
    // Numbers and times filtered in MariaDB agree with the mariadb client.
    assert_eq!(
        sql(&format!(
            "SELECT count(*), sum(coins) FROM {table} WHERE id > 500 AND seen < TIMESTAMP '2026-01-30 00:00:00'"
        )),
        db.sql("SELECT COUNT(*), SUM(coins) FROM players WHERE id > 500 AND seen < '2026-01-30 00:00:00'")
            .trim()
            .replace('\t', ",")
    );
    // Strings compare as DataFusion compares them (MariaDB's collation ignores case): equality
    // is re-checked, and an ordering comparison is not sent at all.
    assert_eq!(
        sql(&format!("SELECT count(*) FROM {table} WHERE name = 'ann'")),
        "250"
    );
    assert_eq!(
        sql(&format!("SELECT count(*) FROM {table} WHERE name < 'b'")),
        "750"
    );
    // A backslash is a character to DataFusion, an escape to MySQL: such a filter stays here.
    assert_eq!(
        sql(&format!("SELECT count(*) FROM {table} WHERE name = 'x\\y'")),
        "1"
    );
    // Compared with the lake in one query.
    sql(&format!(
        "CREATE TABLE v1.players AS SELECT * FROM {table} WHERE id <= 600"
    ));
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FROM {table} m LEFT JOIN v1.players l ON l.id = m.id WHERE l.id IS NULL"
        )),
        "400"
    );
    // What MariaDB is asked: the needed columns and the safe filters only.
    let catalog = gamelake::sources::mysql::MyCatalog::load(&url)
        .await
        .unwrap();
    use datafusion::catalog::CatalogProvider;
    let provider = catalog
        .schema(&db.name)
        .unwrap()
        .table("players")
        .await
        .unwrap()
        .unwrap();
    let my_table = gamelake::sources::mysql::MyTable::from_provider(&provider).unwrap();
    use datafusion::prelude::{col, lit};
    let query = my_table.planned_query(
        Some(&vec![0, 2]),
        &[col("id").gt(lit(500)), col("name").lt(lit("b"))],
        None,
    );
    assert_eq!(
        query,
        format!(
            "SELECT `id`, `coins` FROM `{}`.`players` WHERE (`id` > 500)",
            db.name
        )
    );
}

#[test]
fn mysql_benchmark_runs_at_a_tiny_scale() {
    let text =
        crate::support::run_tiny_benchmark("mysql_snapshot.py", &["--rows", "2000", "--runs", "1"]);
    for row in [
        "gamelake ingest (snapshot",
        "gamelake ingest (migrate",
        "DuckDB mysql extension",
        "mydumper",
        "server CPU s",
    ] {
        assert!(text.contains(row), "{row} missing from:\n{text}");
    }
}
