//! The v1.0 migration against the real MariaDB and PostgreSQL: every type of the policy crosses
//! to both sides with equal checksums, kill -9 during a migration ends with every row exactly
//! once across PostgreSQL ∪ lake, split at the cutoff, and a v1.0 that changes between runs (or
//! a wrong password, or a missing table) is refused with what to do.

use std::time::Duration;

use crate::mysql::MyDb;
use crate::postgres::TestDb;
use crate::support::{
    DUCKDB_DELTA, TempLake, gamelake, gamelake_err, gamelake_ok, run_python, sql_csv,
};
use gamelake::sources::postgres::connect;

/// A migration pipeline of one table (`purchases` → lake `v1.purchases`, PostgreSQL
/// `public.purchases`), written into the lake's folder.
fn migration(lake: &TempLake, from: &str, time_column: &str, range_rows: u64) -> String {
    let file = lake.path().join("v1_migration.toml");
    std::fs::write(
        &file,
        format!(
            r#"name = "v1_migration"
[source]
kind = "mysql"
url = "${{MYSQL_URL}}"
[sink]
kind = "postgres"
url = "${{PG_URL}}"
[[table]]
from = "{from}"
to = "v1.{from}"
hot_to = "public.{from}"
mode = "migrate"
time_column = "{time_column}"
hot_after = "365d"
range_rows = {range_rows}
"#
        ),
    )
    .unwrap();
    file.display().to_string()
}

/// One value of a PostgreSQL query, as text.
async fn pg_text(url: &str, sql: &str) -> String {
    let client = connect(url).await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_crosses_to_the_lake_and_postgresql_with_equal_checksums() {
    let (my, pg, lake) = (MyDb::new(), TestDb::new().await, TempLake::new());
    my.sql(
        "SET SESSION sql_mode = '';
         CREATE TABLE kinds (id int PRIMARY KEY, b tinyint(1), t tinyint, tu tinyint unsigned,
           s smallint unsigned, m mediumint unsigned, i int unsigned, g bigint, gu bigint unsigned,
           d decimal(10,2), dd decimal(65,30), f float, db double, bt bit(1), b9 bit(9),
           c char(5), l varchar(20) CHARACTER SET latin1, vb varbinary(8), bl blob,
           dt date, made_at datetime(6), ts timestamp(6) NULL, tm time(3), y year,
           e enum('low','high'), st set('x','y','z'), j json, geo geometry);
         INSERT INTO kinds VALUES
          (1, 1, -128, 255, 65535, 16777215, 4294967295, -9223372036854775808,
           18446744073709551615, -12.30, '-1.000000000000000000000000000001', 3.14159, 1e300, b'1', b'100000001',
           'ab', 'café', x'00ff', x'0102', '2024-02-29', NOW(6) - INTERVAL 400 DAY,
           '2024-01-02 03:04:05.654321', '-838:59:59.000', 2024, 'high', 'x,z', '{\"a\": [1, 2]}',
           ST_GeomFromText('POINT(1 2)')),
          (2, 0, 127, 0, 0, 0, 0, 9223372036854775807, 0, 0.00, '0', 1e-5, 1.2345678901234567e-7, b'0', b'0',
           '', '', x'', x'', '0000-00-00', NOW(6) - INTERVAL 10 DAY, NULL, '100:00:00.5', 0, 'low', '', '[]', NULL),
          (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let file = migration(&lake, "kinds", "made_at", 2);
    let env = [("MYSQL_URL", my.url()), ("PG_URL", pg.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = gamelake_ok(&["--lake", &lake.location(), "ingest", &file], &env);
    // Row 1 is older than a year: the lake; rows 2 (ten days old) and 3 (no time): PostgreSQL.
    assert!(out.contains("counts and checksums"), "{out}");
    let line = out.lines().find(|l| l.starts_with("v1.kinds")).unwrap();
    let figures: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&figures[2..6], ["3", "1", "2", "2"], "{out}");
    assert_eq!(figures[7], "1", "one zero date nulled: {out}");
    // PostgreSQL's types, created from the policy, and values as PostgreSQL prints them.
    assert_eq!(
        pg_text(
            &pg.url(),
            "SELECT string_agg(column_name || ':' || data_type, ' ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'kinds'"
        )
        .await,
        "id:integer b:boolean t:smallint tu:smallint s:integer m:bigint i:bigint g:bigint \
         gu:numeric d:numeric dd:numeric f:real db:double precision bt:boolean b9:bigint c:text \
         l:text vb:bytea bl:bytea dt:date made_at:timestamp without time zone \
         ts:timestamp with time zone tm:bigint y:smallint e:text st:ARRAY j:text geo:bytea"
    );
    assert_eq!(
        pg_text(
            &pg.url(),
            "SELECT concat_ws('|', b, t, g, gu, d, dd, f, db, l, dt IS NULL, tm, st::text, j) FROM public.kinds WHERE id = 2"
        )
        .await,
        "f|127|9223372036854775807|0|0.00|0.000000000000000000000000000000|1e-05|1.2345678901234566e-07||t|360000500000|{}|[]"
    );
    // A decimal of 65 digits is PostgreSQL's numeric of as many, every digit kept.
    assert_eq!(
        pg_text(
            &pg.url(),
            "SELECT format_type(atttypid, atttypmod) || ' ' || (SELECT dd + 0.000000000000000000000000000001 FROM public.kinds WHERE id = 2)
             FROM pg_attribute WHERE attrelid = 'public.kinds'::regclass AND attname = 'dd'"
        )
        .await,
        "numeric(65,30) 0.000000000000000000000000000001"
    );
    let lake_row = gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT gu, dd, l, array_to_string(st, ','), tm FROM v1.kinds",
        ],
        &[],
    );
    assert!(
        lake_row.contains(
            "18446744073709551615,-1.000000000000000000000000000001,café,\"x,z\",-3020399000000"
        ) || lake_row.contains(
            "18446744073709551615|-1.000000000000000000000000000001|café|x,z|-3020399000000"
        ),
        "{lake_row}"
    );
}

/// One line the lake answers to `lake_sql` (its column named `v`) and the value PostgreSQL
/// answers to `pg_sql`.
async fn sides(lake: &TempLake, pg: &TestDb, lake_sql: &str, pg_sql: &str) -> (String, String) {
    let lake_side = sql_csv(&lake.location(), &["-c", lake_sql]);
    let lake_side = lake_side.lines().nth(1).unwrap_or("").to_string();
    (lake_side, pg_text(&pg.url(), pg_sql).await)
}

/// Rows, distinct keys, sum of keys and the newest time (as text) in the lake; the same with the
/// oldest time in PostgreSQL.
const LAKE_KEYS: &str = "SELECT count(*) || '|' || count(DISTINCT id) || '|' || coalesce(sum(id), 0) || '|' || coalesce(CAST(max(made_at) AS VARCHAR), '') AS v FROM v1.purchases";
const PG_KEYS: &str = "SELECT count(*) || '|' || count(DISTINCT id) || '|' || coalesce(sum(id), 0) || '|' || coalesce(min(made_at)::text, '') FROM public.purchases";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_during_a_million_row_migration_end_with_every_row_once_split_at_the_cutoff() {
    const ROWS: u64 = 1_000_000;
    let (my, pg, lake) = (MyDb::new(), TestDb::new().await, TempLake::new());
    // Three years of purchases, 12 hours off each day boundary so the cutoff splits cleanly.
    my.sql(&format!(
        "CREATE TABLE purchases (id bigint unsigned PRIMARY KEY, player_id int NOT NULL,
           amount decimal(10,2) NOT NULL, note varchar(20) CHARACTER SET latin1, made_at datetime(6) NOT NULL);
         INSERT INTO purchases SELECT seq, seq % 1000, (seq % 10000) / 100, IF(seq % 7 = 0, NULL, 'déjà vu'),
           NOW(6) - INTERVAL (seq % 1095) DAY - INTERVAL 12 HOUR FROM seq_1_to_{ROWS};"
    ));
    let old: u64 = my
        .sql("SELECT COUNT(*) FROM purchases WHERE made_at < NOW() - INTERVAL 365 DAY")
        .trim()
        .parse()
        .unwrap();
    let file = migration(&lake, "purchases", "made_at", 50_000);
    let (my_url, pg_url) = (my.url(), pg.url());
    let env = [("MYSQL_URL", my_url.as_str()), ("PG_URL", pg_url.as_str())];
    let loc = lake.location();
    let admin = connect(&pg_url).await.unwrap();
    // kill -9 twenty times, at moments spread over planning, reading, checksumming, the
    // PostgreSQL and the lake commits (each run goes on from where the last one stopped).
    for i in 0..20u64 {
        let delay_ms = 250 + (i * 397) % 2000;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gamelake"))
            .args(["--lake", &loc, "ingest", &file])
            .envs(env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // The killed run's PostgreSQL backend (and its lock) goes once the server notices.
        for _ in 0..100 {
            let busy: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let out = gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    let line = out.lines().find(|l| l.starts_with("v1.purchases")).unwrap();
    let figures: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &figures[2..5],
        [ROWS.to_string(), old.to_string(), (ROWS - old).to_string()],
        "{out}"
    );
    let resumed: u64 = figures[6].parse().unwrap();
    assert!(
        resumed > 0,
        "the killed runs committed ranges the last one resumed: {out}"
    );
    let (lake_side, pg_side) = sides(&lake, &pg, LAKE_KEYS, PG_KEYS).await;
    let lake_parts: Vec<&str> = lake_side.split('|').collect();
    let pg_parts: Vec<&str> = pg_side.split('|').collect();
    // Every row exactly once: counts, distinct keys and key sums add up to 1..=ROWS.
    assert_eq!(lake_parts[0], old.to_string(), "lake {lake_side}");
    assert_eq!(
        lake_parts[0], lake_parts[1],
        "the lake holds a key twice: {lake_side}"
    );
    assert_eq!(pg_parts[0], (ROWS - old).to_string(), "postgres {pg_side}");
    let key_sum: u64 = lake_parts[2].parse::<u64>().unwrap() + pg_parts[2].parse::<u64>().unwrap();
    assert_eq!(key_sum, ROWS * (ROWS + 1) / 2);
    // Split at the cutoff: the lake's newest row is older than PostgreSQL's oldest.
    assert!(
        lake_parts[3].replace('T', " ").as_str() < pg_parts[3],
        "{lake_side} / {pg_side}"
    );
    // A rerun finds everything done and checks it again.
    let again = gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    let line = again
        .lines()
        .find(|l| l.starts_with("v1.purchases"))
        .unwrap();
    let figures: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(figures[5], figures[6], "every range resumed: {again}");
    assert_eq!(
        sides(&lake, &pg, LAKE_KEYS, PG_KEYS).await,
        (lake_side, pg_side)
    );
    // DuckDB reads the lake table.
    let table = lake.path().join("v1/purchases").display().to_string();
    let duck = run_python(
        &format!(
            "{DUCKDB_DELTA}\nimport sys\nprint(duck().execute(\"SELECT count(*) FROM delta_scan(?)\", [sys.argv[1]]).fetchone()[0])"
        ),
        &[&table],
    );
    assert_eq!(duck.trim(), old.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_that_changes_between_runs_a_wrong_password_and_a_missing_table_are_refused() {
    let (my, pg, lake) = (MyDb::new(), TestDb::new().await, TempLake::new());
    my.sql(
        "CREATE TABLE purchases (id int PRIMARY KEY, made_at datetime NOT NULL, amount int);
         INSERT INTO purchases SELECT seq, NOW() - INTERVAL seq DAY, seq FROM seq_1_to_1000;",
    );
    let file = migration(&lake, "purchases", "made_at", 100);
    let (my_url, pg_url) = (my.url(), pg.url());
    let env = [("MYSQL_URL", my_url.as_str()), ("PG_URL", pg_url.as_str())];
    let loc = lake.location();
    gamelake_ok(&["--lake", &loc, "ingest", &file], &env);
    let before = sides_of_purchases(&lake, &pg).await;
    // A row of a migrated range changes in v1.0: the rerun stops, names the range, changes
    // nothing.
    my.sql("UPDATE purchases SET amount = amount + 1 WHERE id = 500");
    let err = gamelake_err(&["--lake", &loc, "ingest", &file], &env);
    assert!(
        err.contains("range 4") && err.contains("changed in v1.0 after it was migrated"),
        "{err}"
    );
    assert!(
        err.contains("DELETE FROM gamelake.migration_ranges"),
        "{err}"
    );
    assert_eq!(sides_of_purchases(&lake, &pg).await, before);
    // The ranges were cut by the primary key: another key would cut other ranges.
    let rekeyed = lake.path().join("rekeyed.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&rekeyed, format!("{text}key = [\"amount\"]\n")).unwrap();
    let err = gamelake_err(
        &["--lake", &loc, "ingest", &rekeyed.display().to_string()],
        &env,
    );
    assert!(
        err.contains("cut by (id)") && err.contains("key = [\"id\"]"),
        "{err}"
    );
    // A wrong password: the server's refusal, without the password.
    let wrong = my_url.replace("root@", "root:hunter2@");
    let err = gamelake_err(
        &["--lake", &loc, "ingest", &file],
        &[("MYSQL_URL", wrong.as_str()), ("PG_URL", pg_url.as_str())],
    );
    assert!(
        err.contains("Access denied") && !err.contains("hunter2"),
        "{err}"
    );
    // A table v1.0 does not have.
    let missing = migration(&lake, "refunds", "made_at", 100);
    let err = gamelake_err(&["--lake", &loc, "ingest", &missing], &env);
    assert!(err.contains("refunds") && err.contains("exist"), "{err}");
    let out = gamelake(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            "SELECT count(*) FROM v1.refunds",
        ],
        &[],
    );
    assert!(
        !out.status.success(),
        "nothing of the missing table was created"
    );
}

/// (rows | sum of amounts) of the small purchases table in the lake and in PostgreSQL.
async fn sides_of_purchases(lake: &TempLake, pg: &TestDb) -> (String, String) {
    let lake_sql = "SELECT count(*) || '|' || sum(amount) AS v FROM v1.purchases";
    let pg_sql = "SELECT count(*) || '|' || sum(amount) FROM public.purchases";
    sides(lake, pg, lake_sql, pg_sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_v1_database_migrates_end_to_end_with_the_shipped_pipeline() {
    let (my, pg, lake) = (MyDb::new(), TestDb::new().await, TempLake::new());
    let script = crate::support::repo_root().join("testdata/v1/game.sql");
    my.sql(&std::fs::read_to_string(script).unwrap());
    let file = crate::support::repo_root().join("pipelines/v1_migration.toml");
    let env = [("MYSQL_URL", my.url()), ("PG_URL", pg.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "ingest",
            &file.display().to_string(),
        ],
        &env,
    );
    for (table, time) in [
        ("purchases", "purchased_at"),
        ("players", "last_login"),
        ("friendships", "since"),
        ("login_log", "logged_in_at"),
        ("items", "added_at"),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("v1.{table} ")))
            .unwrap_or_else(|| panic!("no line for {table}: {out}"));
        let figures: Vec<u64> = line
            .split_whitespace()
            .skip(2)
            .take(3)
            .map(|n| n.parse().unwrap())
            .collect();
        let v1: u64 = my
            .sql(&format!("SELECT COUNT(*) FROM {table}"))
            .trim()
            .parse()
            .unwrap();
        // The cutoff the migration fixed (µs, the column's terms; this server's zone is UTC).
        let cutoff = pg_text(
            &pg.url(),
            &format!("SELECT min(cutoff)::text FROM gamelake.migration_ranges WHERE lake_table = 'v1.{table}'"),
        )
        .await;
        let old: u64 = my
            .sql(&format!(
                "SET time_zone = '+00:00'; SELECT COUNT(*) FROM {table} WHERE TIMESTAMPDIFF(MICROSECOND, '1970-01-01', {time}) < {cutoff}"
            ))
            .trim()
            .parse()
            .unwrap();
        assert_eq!(figures, [v1, old, v1 - old], "{table}: {out}");
    }
    assert_eq!(
        out.matches("counts and checksums of the lake and PostgreSQL equal v1.0's")
            .count(),
        5,
        "{out}"
    );
}
