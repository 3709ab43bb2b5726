//! The PostgreSQL reader against the real server on 127.0.0.1:5432: every supported type
//! decoded from binary COPY. Each test works in its own database, dropped afterwards.

use futures::TryStreamExt;
use gamelake::sources::postgres::{CopyConnection, connect, describe, read, read_stream};

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

    /// A role name of this database's own (`<database>_<purpose>`): roles are the cluster's,
    /// so the drop removes every role so named after the database, even when a test failed.
    pub(crate) fn role(&self, purpose: &str) -> String {
        format!("{}_{purpose}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let roles = format!(
            "DO $$DECLARE r text; BEGIN FOR r IN SELECT rolname FROM pg_roles WHERE starts_with(rolname, '{}_') LOOP EXECUTE format('DROP ROLE %I', r); END LOOP; END$$",
            self.name
        );
        for sql in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            roles,
        ] {
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
}

/// Reads a query through a connection of its own (the bulk path), described by `client`.
async fn wire_read(
    url: &str,
    client: &tokio_postgres::Client,
    query: &str,
) -> Vec<datafusion::arrow::array::RecordBatch> {
    let columns = describe(client, query).await.unwrap();
    let connection = CopyConnection::connect(url).await.unwrap();
    read_stream(connection, query.to_string(), columns)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
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
    // Bulk reads (snapshots, live tables) read the same COPY on a connection of their own.
    let wire = wire_read(&db.url(), &client, "SELECT * FROM t ORDER BY id").await;
    assert_eq!(render(&wire), render(&batches));
    let types: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        types.join(" "),
        "id:Int32 b:Boolean s:Int16 l:Int64 f4:Float32 f8:Float64 n:Decimal128(12, 2) nu:Utf8 \
         tx:Utf8 vc:Utf8 ch:Utf8 nm:Utf8 ci:Utf8 by:Binary d:Date32 tm:Int64 ts:Timestamp(µs) \
         tz:Timestamp(µs, \"UTC\") iv:Struct(\"months\": Int32, \"days\": Int32, \"microseconds\": Int64) u:Utf8 j:Utf8 jb:Utf8 e:Utf8 ip:Utf8 \
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
            "49530500000",
            "2026-11-24T08:00:00",
            "2026-11-24T00:00:00Z",
            "{months: 14, days: 3, microseconds: 14706000000}",
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
    // ±infinity become the ends of the range every reader can print (9999-12-31, 0001-01-01).
    assert_eq!(r3[14], "9999-12-31");
    assert_eq!(r3[16], "0001-01-01T00:00:00");
    assert_eq!(r3[17], "9999-12-31T23:59:59.999999Z");
    assert_eq!(r3[18], "{months: 0, days: -1, microseconds: 0}");
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
    // A missing table is named, through tokio-postgres and on the bulk connection alike; the
    // bulk connection is ready for the next statement after the refused COPY.
    let missing = "SELECT * FROM missing_table";
    let mut connection = CopyConnection::connect(&db.url()).await.unwrap();
    for err in [
        read(&client, missing).await.unwrap_err(),
        connection.copy_out(missing).await.unwrap_err(),
    ] {
        let err = err.to_string();
        assert!(
            err.contains("missing_table") && err.contains("does not exist"),
            "{err}"
        );
    }
    connection.execute("SELECT 1").await.unwrap();
    // A query that fails half-way through its COPY, on the bulk connection: the server's error,
    // not a truncated result.
    let query = "SELECT g, 1 / (g - 70000) AS boom FROM generate_series(1, 100000) g";
    let columns = describe(&client, query).await.unwrap();
    let connection = CopyConnection::connect(&db.url()).await.unwrap();
    let stream = read_stream(connection, query.to_string(), columns)
        .await
        .unwrap();
    let err = stream
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("division by zero") && err.contains("generate_series"),
        "{err}"
    );
    // The bulk connection reads the connection string as tokio-postgres does: hostaddr, and
    // the first host that answers.
    let port = crate::support::free_port();
    for url in [
        "hostaddr=127.0.0.1 port=5432 user=postgres dbname=test".to_string(),
        format!("host=127.0.0.1,127.0.0.1 port={port},5432 user=postgres dbname=test"),
    ] {
        let mut connection = CopyConnection::connect(&url).await.unwrap();
        connection.execute("SELECT 1").await.unwrap();
    }
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
            "CREATE TABLE players (player_id bigint, region text, balance numeric(12,2), shift time);
             INSERT INTO players SELECT g, (ARRAY['beijing','shanghai'])[g % 2 + 1], g * 0.5, make_time(g % 24, 0, 0) FROM generate_series(1, 1000) g;",
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

    // A time column is microseconds here but `time` in PostgreSQL: its filters stay in
    // DataFusion, and the answer is PostgreSQL's own.
    let noon = 12 * 3_600_000_000i64;
    let query = table.planned_query(Some(&vec![3]), &[col("shift").gt_eq(lit(noon))]);
    assert_eq!(query, "SELECT \"shift\" FROM \"public\".\"players\"");
    let afternoon: i64 = client
        .query_one("SELECT count(*) FROM players WHERE shift >= '12:00'", &[])
        .await
        .unwrap()
        .get(0);
    let sql = format!("SELECT count(*) AS n FROM pg.public.players WHERE shift >= {noon}");
    let out = crate::support::gamelake_ok(
        &[
            "--lake", &loc, "--pg-url", &url, "sql", "-c", &sql, "--format", "csv",
        ],
        &[],
    );
    assert_eq!(out, format!("n\n{afternoon}\n"));
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Runs a PostgreSQL program as the `postgres` system user; panics with its output on failure.
pub(crate) fn as_postgres(program: &str, args: &[&str]) {
    let out = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")])
        .args(args)
        .output()
        .expect("runuser (util-linux) must exist to start a test PostgreSQL server");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster of the test's own: the machine's `initdb` and `pg_ctl`, run as the
/// `postgres` system user, in a temporary folder, on a free port. Stopped and removed on drop.
pub(crate) struct OwnCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnCluster {
    /// `prepare` writes what the cluster needs into its folder first (a password file,
    /// certificates); `initdb` are the flags beside the folder, the superuser and UTF8 (`{dir}`
    /// in them is the cluster's folder); `hba`
    /// replaces pg_hba.conf; `settings` are more `-c name=value` options of the server (`{dir}`
    /// as in `initdb`).
    pub(crate) fn start(
        prepare: impl FnOnce(&std::path::Path),
        initdb: &[&str],
        hba: Option<&str>,
        settings: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        prepare(dir.path());
        let owned = std::process::Command::new("chown")
            .args(["-R", "postgres:", &path])
            .status()
            .unwrap();
        assert!(owned.success(), "chown of {path} to postgres");
        let data = format!("{path}/data");
        let flags: Vec<String> = initdb.iter().map(|f| f.replace("{dir}", &path)).collect();
        let mut args = vec!["-D", &data, "-U", "postgres", "--no-sync", "-E", "UTF8"];
        args.extend(flags.iter().map(String::as_str));
        args.push("--no-instructions");
        as_postgres("initdb", &args);
        if let Some(hba) = hba {
            std::fs::write(format!("{data}/pg_hba.conf"), hba).unwrap();
        }
        let port = crate::support::free_port();
        let options = format!(
            "-p {port} -k {path} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            settings.replace("{dir}", &path)
        );
        let log = format!("{path}/log");
        as_postgres(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
        Self { dir, port }
    }

    /// The server's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder (its data directory is `data/` in it).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        as_postgres("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

/// A PostgreSQL server of the test's own where every login needs a password: SCRAM-SHA-256
/// for `scram_user`, MD5 for `md5_user`, cleartext for `plain_user`. The shared server on 5432
/// trusts every local connection, so it cannot show that a password logs in.
struct PasswordServer(OwnCluster);

impl PasswordServer {
    fn start() -> Self {
        Self(OwnCluster::start(
            |dir| std::fs::write(dir.join("pw"), "admin-pw\n").unwrap(),
            &["--pwfile={dir}/pw", "--auth=scram-sha-256"],
            Some(
                "host all md5_user 127.0.0.1/32 md5\n\
                 host all plain_user 127.0.0.1/32 password\n\
                 local all all scram-sha-256\n\
                 host all all 127.0.0.1/32 scram-sha-256\n",
            ),
            "",
        ))
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/postgres",
            self.0.port()
        )
    }
}

/// A snapshot pipeline reads with both kinds of connection gamelake opens (tokio-postgres for
/// its statements, its own for the bulk COPY), so it logs in both ways; each way to send a
/// password works, and a wrong one is refused without being shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_log_in_by_scram_md5_and_cleartext() {
    let server = PasswordServer::start();
    let admin = connect(&server.url("postgres", "admin-pw")).await.unwrap();
    admin
        .batch_execute(
            "SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN PASSWORD 'md5-pw';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_user LOGIN PASSWORD 'scram-pw';
             CREATE ROLE plain_user LOGIN PASSWORD 'plain-pw';
             CREATE TABLE scores AS SELECT g AS id, g * 2 AS score FROM generate_series(1, 5000) g;
             GRANT SELECT ON scores TO md5_user, scram_user, plain_user;
             ANALYZE scores;",
        )
        .await
        .unwrap();
    let lake = crate::support::TempLake::new();
    let loc = lake.location();
    let pipeline = lake.path().join("scores.toml");
    for (user, password) in [
        ("scram_user", "scram-pw"),
        ("md5_user", "md5-pw"),
        ("plain_user", "plain-pw"),
    ] {
        std::fs::write(
            &pipeline,
            format!(
                "name = \"scores\"\n[source]\nkind = \"postgres\"\nurl = \"${{PG_URL}}\"\nparallelism = 2\n\
                 [[table]]\nfrom = \"public.scores\"\nto = \"game.{user}\"\nmode = \"snapshot\"\n"
            ),
        )
        .unwrap();
        let file = pipeline.display().to_string();
        let url = server.url(user, password);
        crate::support::gamelake_ok(&["--lake", &loc, "ingest", &file], &[("PG_URL", &url)]);
        let got = crate::support::sql_csv(
            &loc,
            &[
                "-c",
                &format!("SELECT count(*) AS n, sum(score) AS s FROM game.{user}"),
            ],
        );
        assert_eq!(got, "n,s\n5000,25005000\n", "{user}");

        // A live table's scan opens gamelake's own connection alone.
        let live = crate::support::gamelake_ok(
            &[
                "--lake",
                &loc,
                "--pg-url",
                &url,
                "sql",
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS n FROM pg.public.scores WHERE score > 9000",
            ],
            &[],
        );
        assert_eq!(live, "n\n500\n", "{user}");

        let wrong = server.url(user, "not-the-password");
        let err =
            crate::support::gamelake_err(&["--lake", &loc, "ingest", &file], &[("PG_URL", &wrong)]);
        assert!(
            err.contains("password authentication failed"),
            "{user}: {err}"
        );
        assert!(
            !err.contains("not-the-password"),
            "{user}: password shown: {err}"
        );
    }
    // The bulk connection alone: nobody listening, then a wrong password.
    let port = crate::support::free_port();
    let err = CopyConnection::connect(&format!("host=127.0.0.1 port={port} user=x"))
        .await
        .err()
        .expect("nobody listens there")
        .to_string();
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1 port {port}")),
        "{err}"
    );
    let err = CopyConnection::connect(&server.url("scram_user", "wrong-pw"))
        .await
        .err()
        .expect("a wrong password must be refused")
        .to_string();
    assert!(
        err.contains("password authentication failed") && !err.contains("wrong-pw"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numerics_with_all_38_digits_are_read_exactly() {
    let db = TestDb::new().await;
    let client = connect(&db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE n (id int, a numeric(38,10), b numeric(38,0), c numeric(12,2));
             INSERT INTO n VALUES
               (1, 1234567890123456789012345678.1234567890, 99999999999999999999999999999999999999, 12345.67),
               (2, -9999999999999999999999999999.9999999999, -1, -0.05),
               (3, 0.0000000001, 0, 0);",
        )
        .await
        .unwrap();
    let sql = "SELECT a, b, c FROM n ORDER BY id";
    let (_, batches) = read(&client, sql).await.unwrap();
    let wire = wire_read(&db.url(), &client, sql).await;
    assert_eq!(render(&wire), render(&batches));
    // As PostgreSQL prints them.
    let printed: Vec<String> = client
        .query(
            "SELECT a::text || '|' || b::text || '|' || c::text FROM n ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(render(&batches), printed);
}
