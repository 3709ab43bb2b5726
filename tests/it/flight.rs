//! Flight SQL: the real server (in-process on port 0, or the `gamelake serve` binary) with
//! real clients — arrow-flight's `FlightSqlServiceClient` and Python's ADBC driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo,
};
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::TryStreamExt;
use gamelake::flight::{Access, FlightOptions, Limits, Role, Signer, User, hash_password};
use gamelake::{QuerySettings, Session};
use prost::Message;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::support::{ServeProcess, TempLake, gamelake_err, render, rows};

/// An in-process Flight SQL server over a lake; stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(lake: &TempLake, users: Vec<User>, limits: Limits, secret: &[u8]) -> Self {
        let options = FlightOptions {
            access: Access {
                users: Arc::new(users),
                signer: Signer::new(secret),
                token_ttl: Duration::from_secs(600),
                ticket_ttl: Duration::from_secs(60),
            },
            limits,
            tls: None,
            max_message_bytes: 16 << 20,
            query_log: true,
        };
        Self::with_options(lake, options).await
    }

    async fn with_options(lake: &TempLake, options: FlightOptions) -> Self {
        let settings = QuerySettings {
            deny_file_paths: true,
            catalog_ttl: Duration::from_millis(200),
            ..QuerySettings::default()
        };
        let lake = Arc::new(gamelake::Lake::open(&lake.location()).unwrap());
        let session = Session::new(lake, &settings).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gamelake::flight::serve(listener, session, options, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has written its query log.
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn users() -> Vec<User> {
    vec![
        User {
            name: "ana".into(),
            password_hash: hash_password("ana-pw").unwrap(),
            role: Role::Reader,
        },
        User {
            name: "bo".into(),
            password_hash: hash_password("bo-pw").unwrap(),
            role: Role::Reader,
        },
        User {
            name: "root".into(),
            password_hash: hash_password("root-pw").unwrap(),
            role: Role::Admin,
        },
    ]
}

async fn lake_with_players() -> TempLake {
    let lake = TempLake::new();
    lake.session()
        .await
        .sql(
            "CREATE TABLE game.players AS SELECT * FROM (VALUES \
             (1, 'ana', 'cn', 10.5), (2, 'bo', 'us', 0.0), (3, 'cy', 'cn', 99.9)) \
             v(player_id, name, region, spent)",
        )
        .await
        .unwrap();
    lake
}

async fn connect(addr: SocketAddr, user: Option<(&str, &str)>) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some((name, password)) = user {
        client.handshake(name, password).await.unwrap();
    }
    client
}

async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, String> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("ticket");
        let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
        batches.extend(
            stream
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(batches)
}

async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    fetch(client, info).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_queries_prepares_and_reads_metadata() {
    let lake = lake_with_players().await;
    let server = Server::start(&lake, users(), Limits::default(), b"k").await;
    let mut client = connect(server.addr, Some(("ana", "ana-pw"))).await;

    let sql = "SELECT player_id, name, region FROM game.players ORDER BY player_id";
    let batches = query(&mut client, sql).await.unwrap();
    let embedded = rows(&lake.session().await, sql).await;
    assert_eq!(
        render(&batches),
        embedded,
        "Flight SQL and the embedded session agree"
    );
    // Strings leave the server as Utf8 (parquet reads them as Utf8View), JDBC-readable.
    let schema = batches[0].schema();
    assert_eq!(
        schema.field_with_name("name").unwrap().data_type(),
        &DataType::Utf8
    );

    // A prepared statement with a JDBC-style ? placeholder, bound through DoPut.
    let mut prepared = client
        .prepare(
            "SELECT name FROM game.players WHERE player_id = ?".to_string(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
    assert_eq!(
        prepared.dataset_schema().unwrap().field(0).data_type(),
        &DataType::Utf8
    );
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![3]))],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(render(&fetch(&mut client, info).await.unwrap()), ["cy"]);
    prepared.close().await.unwrap();

    // Metadata drivers ask for on connect.
    let info = client.get_catalogs().await.unwrap();
    let catalogs = fetch(&mut client, info).await.unwrap();
    assert!(
        render(&catalogs).iter().any(|l| l.contains("gamelake")),
        "{catalogs:?}"
    );
    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("ga%".into()),
        })
        .await
        .unwrap();
    let schemas = fetch(&mut client, info).await.unwrap();
    assert_eq!(render(&schemas), ["gamelake|game"]);
    let info = client
        .get_tables(CommandGetTables {
            catalog: Some("gamelake".into()),
            db_schema_filter_pattern: Some("game".into()),
            table_name_filter_pattern: Some("play%".into()),
            table_types: vec!["TABLE".into()],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut client, info).await.unwrap();
    let tables = &tables[0];
    assert_eq!(tables.num_rows(), 1);
    let names: Vec<String> = tables
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "catalog_name",
            "db_schema_name",
            "table_name",
            "table_type",
            "table_schema"
        ]
    );
    let ipc = tables
        .column(4)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::BinaryArray>()
        .unwrap()
        .value(0)
        .to_vec();
    let table_schema = Schema::try_from(arrow_flight::IpcMessage(ipc.into())).unwrap();
    assert_eq!(
        table_schema.field_with_name("name").unwrap().data_type(),
        &DataType::Utf8
    );
    assert_eq!(table_schema.fields().len(), 4);

    let info = client.get_table_types().await.unwrap();
    let types = fetch(&mut client, info).await.unwrap();
    assert!(render(&types).iter().any(|l| l.contains("VIEW")));
    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let text = render(&fetch(&mut client, info).await.unwrap()).join("\n");
    assert!(text.contains("gamelake"), "{text}");
    let info = client.get_xdbc_type_info(Default::default()).await.unwrap();
    let xdbc = fetch(&mut client, info).await.unwrap();
    let text = render(&xdbc).join("\n");
    assert!(
        text.contains("BIGINT") && text.contains("VARCHAR") && text.contains("TIMESTAMP"),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_needs_a_valid_token_and_tickets_belong_to_their_user() {
    let lake = lake_with_players().await;
    let server = Server::start(&lake, users(), Limits::default(), b"k").await;

    let mut anonymous = connect(server.addr, None).await;
    let err = anonymous
        .execute("SELECT 1".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no bearer token"), "{err}");
    let err = anonymous.get_catalogs().await.unwrap_err().to_string();
    assert!(
        err.contains("Unauthenticated") || err.contains("bearer"),
        "{err}"
    );

    let mut wrong = connect(server.addr, None).await;
    let err = wrong
        .handshake("ana", "nope")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong user name or password"), "{err}");

    let mut ana = connect(server.addr, Some(("ana", "ana-pw"))).await;
    let info = ana
        .execute("SELECT count(*) AS n FROM game.players".into(), None)
        .await
        .unwrap();
    // Without a token, DoGet is refused even with a valid ticket.
    let err = fetch(&mut anonymous, info.clone()).await.unwrap_err();
    assert!(err.contains("no bearer token"), "{err}");
    // Another reader cannot redeem ana's ticket.
    let mut bo = connect(server.addr, Some(("bo", "bo-pw"))).await;
    let err = fetch(&mut bo, info.clone()).await.unwrap_err();
    assert!(err.contains("issued to user ana"), "{err}");
    // A forged token is refused.
    let mut forged = connect(server.addr, None).await;
    forged.set_token(
        "eyJleHAiOjk5OTk5OTk5OTk5LCJib2R5Ijp7InVzZXIiOiJyb290Iiwicm9sZSI6ImFkbWluIn19.AAAA".into(),
    );
    let err = forged
        .execute("SELECT 1".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid token"), "{err}");
    // ana herself can.
    assert_eq!(render(&fetch(&mut ana, info).await.unwrap()), ["3"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_cannot_write_read_files_or_the_query_log_and_admins_can() {
    let lake = lake_with_players().await;
    let server = Server::start(&lake, users(), Limits::default(), b"k").await;
    let mut ana = connect(server.addr, Some(("ana", "ana-pw"))).await;
    for sql in [
        "CREATE TABLE game.x AS SELECT 1 AS a",
        "INSERT INTO game.players VALUES (4, 'di', 'eu', 1.0)",
        "DELETE FROM game.players",
        "DROP TABLE game.players",
        "COPY (SELECT * FROM game.players) TO '/tmp/leak.csv'",
        "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '/etc/'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = ana.execute(sql.into(), None).await.unwrap_err().to_string();
        assert!(err.contains("permission denied"), "{sql}: {err}");
        let err = ana
            .execute_update(sql.into(), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("permission denied"), "{sql}: {err}");
    }
    let err = query(&mut ana, "SELECT * FROM '/etc/hostname'")
        .await
        .unwrap_err();
    assert!(
        err.contains("not found") || err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(
        rows(
            &lake.session().await,
            "SELECT count(*) AS n FROM game.players"
        )
        .await,
        ["3"]
    );

    let mut root = connect(server.addr, Some(("root", "root-pw"))).await;
    root.execute_update(
        "CREATE TABLE game.vip AS SELECT * FROM game.players WHERE spent > 50".into(),
        None,
    )
    .await
    .unwrap();
    // An admin's DDL through a query call runs once, at GetFlightInfo.
    let done = query(
        &mut root,
        "INSERT INTO game.vip SELECT * FROM game.players WHERE player_id = 1",
    )
    .await
    .unwrap();
    assert_eq!(done[0].num_rows(), 1);
    assert_eq!(
        rows(&lake.session().await, "SELECT count(*) AS n FROM game.vip").await,
        ["2"]
    );
    assert_eq!(
        render(
            &query(&mut ana, "SELECT count(*) AS n FROM game.vip")
                .await
                .unwrap()
        ),
        ["2"]
    );

    // The query log: written off the hot path, readable by admins only.
    let mut found = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(b) = query(
            &mut root,
            "SELECT \"user\", outcome, \"rows\" FROM system.query_log WHERE sql LIKE '%count(*) AS n FROM game.vip%'",
        )
        .await
        {
            found = render(&b);
            if !found.is_empty() {
                break;
            }
        }
    }
    assert!(found.iter().any(|l| l == "ana|ok|1"), "{found:?}");
    let err = query(&mut ana, "SELECT * FROM system.query_log")
        .await
        .unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    let denied = query(
        &mut root,
        "SELECT count(*) AS n FROM system.query_log WHERE outcome = 'error' AND \"user\" = 'ana'",
    )
    .await;
    assert!(denied.is_ok());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_fail_one_query_and_the_server_keeps_serving() {
    let lake = lake_with_players().await;
    let slow = "SELECT sum(a.v * b.v) AS s FROM generate_series(1, 100000) a(v) CROSS JOIN generate_series(1, 100000) b(v)";

    // Timeout (a server of its own: on a busy machine a 2 s bound would also cut the other
    // checks short).
    let hasty = Server::start(
        &lake,
        users(),
        Limits {
            query_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        b"k",
    )
    .await;
    let mut on_hasty = connect(hasty.addr, Some(("ana", "ana-pw"))).await;
    let err = query(&mut on_hasty, slow).await.unwrap_err();
    assert!(err.contains("timeout of 2s"), "{err}");
    let answer = query(&mut on_hasty, "SELECT count(*) AS n FROM game.players")
        .await
        .unwrap();
    assert_eq!(render(&answer), ["3"]);
    hasty.shutdown().await;

    let limits = Limits {
        max_concurrent_queries: 1,
        queue_timeout: Duration::from_millis(300),
        query_memory: Some(4 << 20),
        server_memory: Some(64 << 20),
        ..Limits::default()
    };
    let server = Server::start(&lake, users(), limits, b"k").await;
    let mut ana = connect(server.addr, Some(("ana", "ana-pw"))).await;

    // Memory: the build side of this join needs far more than 4 MiB.
    let err = query(
        &mut ana,
        "SELECT count(*) FROM generate_series(1, 3000000) a(v) JOIN generate_series(1, 3000000) b(v) ON a.v = b.v",
    )
    .await
    .unwrap_err();
    assert!(err.contains("memory limit of 4 MiB"), "{err}");

    // Concurrency: a running query holds the only slot; the next one waits, then is refused.
    let info = ana.execute(slow.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let held = ana.do_get(ticket).await.unwrap();
    let err = query(&mut ana, "SELECT 1").await.unwrap_err();
    assert!(err.contains("server busy"), "{err}");
    drop(held);
    // The slot frees once the server sees the client go away.
    let mut freed = false;
    for _ in 0..100 {
        if query(&mut ana, "SELECT 1").await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the slot of a dropped query was never released");

    // Cancellation: CancelFlightInfo stops a running query.
    let info = ana.execute(slow.into(), None).await.unwrap();
    let mut reader = ana.clone();
    let running_info = info.clone();
    let running = tokio::spawn(async move { fetch(&mut reader, running_info).await });
    let mut status = CancelStatus::Unspecified as i32;
    // Until the query is admitted and registered (seconds on a loaded machine).
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let action = Action {
            r#type: "CancelFlightInfo".into(),
            body: CancelFlightInfoRequest {
                info: Some(info.clone()),
            }
            .encode_to_vec()
            .into(),
        };
        let mut results = ana.do_action(action).await.unwrap();
        let result = results.message().await.unwrap().unwrap();
        status = CancelFlightInfoResult::decode(result.body).unwrap().status;
        if status == CancelStatus::Cancelled as i32 {
            break;
        }
    }
    assert_eq!(status, CancelStatus::Cancelled as i32);
    let err = running.await.unwrap().unwrap_err();
    assert!(err.contains("cancelled"), "{err}");

    // And the server still answers.
    let answer = query(&mut ana, "SELECT count(*) AS n FROM game.players")
        .await
        .unwrap();
    assert_eq!(render(&answer), ["3"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_one_flag_away() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    gamelake::flight::install_tls_provider();
    let lake = lake_with_players().await;
    let dir = lake.path().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl must be installed to make a test certificate");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let with_key = |head: &[&'static str], tail: &[&'static str]| -> Vec<&'static str> {
        head.iter()
            .chain(ec.iter())
            .chain(tail.iter())
            .copied()
            .collect()
    };
    openssl(&with_key(
        &["req", "-x509"],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=gamelake test CA",
        ],
    ));
    openssl(&with_key(
        &["req"],
        &[
            "-keyout",
            "key.pem",
            "-out",
            "req.csr",
            "-subj",
            "/CN=localhost",
        ],
    ));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);

    let options = FlightOptions {
        access: Access {
            users: Arc::new(users()),
            signer: Signer::random(),
            token_ttl: Duration::from_secs(600),
            ticket_ttl: Duration::from_secs(60),
        },
        limits: Limits::default(),
        tls: Some(gamelake::flight::Tls {
            cert: std::fs::read(dir.join("cert.pem")).unwrap(),
            key: std::fs::read(dir.join("key.pem")).unwrap(),
        }),
        max_message_bytes: 16 << 20,
        query_log: false,
    };
    let server = Server::with_options(&lake, options).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(dir.join("ca.pem")).unwrap(),
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake("ana", "ana-pw").await.unwrap();
    let batches = query(&mut client, "SELECT count(*) AS n FROM game.players")
        .await
        .unwrap();
    assert_eq!(render(&batches), ["3"]);
    // A plaintext client gets nowhere.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client = FlightSqlServiceClient::new(channel);
        assert!(client.handshake("ana", "ana-pw").await.is_err());
    }
    server.shutdown().await;
}

#[test]
fn serve_refuses_to_start_unsafely() {
    let lake = TempLake::new();
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "serve",
            "--flight",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(err.contains("--insecure-no-auth"), "{err}");
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "serve",
            "--flight",
            "0.0.0.0:0",
            "--insecure-no-auth",
        ],
        &[],
    );
    assert!(err.contains("loopback"), "{err}");
    let config = lake.path().join("g.toml");
    std::fs::write(
        &config,
        "[[users]]\nname = \"a\"\npassword_hash = \"secret\"\n",
    )
    .unwrap();
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--flight",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(err.contains("hash-password"), "{err}");
}

#[test]
fn hash_password_prints_an_argon2_hash_the_server_accepts() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gamelake"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pa ss\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let users = vec![User {
        name: "u".into(),
        password_hash: hash,
        role: Role::Reader,
    }];
    assert!(gamelake::flight::auth::authenticate(&users, "u", "pa ss").is_some());
    assert!(gamelake::flight::auth::authenticate(&users, "u", "pass").is_none());
}

/// `gamelake serve --flight 127.0.0.1:0` as a child process with users ana (reader) and root
/// (admin), signing with `secret`; `extra_config` is prepended to the config (e.g. `[flight]`).
fn start_flight(lake: &TempLake, secret: &str, extra_config: &str) -> ServeProcess {
    let config = lake.path().join("gamelake.toml");
    if !config.exists() {
        let mut text = extra_config.to_string();
        for (name, password, role) in [("ana", "ana-pw", "reader"), ("root", "root-pw", "admin")] {
            text.push_str(&format!(
                "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nrole = \"{role}\"\n",
                hash_password(password).unwrap()
            ));
        }
        std::fs::write(&config, text).unwrap();
    }
    ServeProcess::spawn(
        lake,
        &config,
        &["--flight", "127.0.0.1:0"],
        &[("GAMELAKE_TOKEN_SECRET", secret)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_stateless_across_replicas_sharing_the_key() {
    let lake = lake_with_players().await;
    let a = start_flight(&lake, "shared-secret", "");
    let b = start_flight(&lake, "shared-secret", "");
    let other = start_flight(&lake, "another-secret", "");

    let mut on_a = connect(a.flight_addr(), Some(("ana", "ana-pw"))).await;
    let token = on_a.token().unwrap().clone();
    let sql =
        "SELECT region, count(*) AS players FROM game.players GROUP BY region ORDER BY region";
    let info = on_a.execute(sql.into(), None).await.unwrap();

    // B serves the DoGet of A's GetFlightInfo, with A's token: nothing is kept per process.
    let mut on_b = connect(b.flight_addr(), None).await;
    on_b.set_token(token.clone());
    let from_b = render(&fetch(&mut on_b, info.clone()).await.unwrap());
    assert_eq!(from_b, rows(&lake.session().await, sql).await);

    // A replica with another key accepts neither the token nor the ticket.
    let mut on_other = connect(other.flight_addr(), None).await;
    on_other.set_token(token);
    let err = fetch(&mut on_other, info).await.unwrap_err();
    assert!(err.contains("invalid token"), "{err}");

    // SIGTERM stops a server gracefully.
    let (status, out) = a.terminate();
    assert!(status.success(), "{status:?}");
    assert!(out.contains("stopped"), "{out}");
}

#[test]
fn python_adbc_client_gets_the_same_answers() {
    let lake = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(lake_with_players());
    let server = start_flight(&lake, "s", "");
    let script = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flightsql
uri = sys.argv[1]
out = {}
conn = flightsql.connect(uri, db_kwargs={"username": "ana", "password": "ana-pw"})
cur = conn.cursor()
cur.execute("SELECT player_id, name, spent FROM game.players ORDER BY player_id")
table = cur.fetch_arrow_table()
out["rows"] = [[r["player_id"], r["name"], r["spent"]] for r in table.to_pylist()]
out["types"] = [str(f.type) for f in table.schema]
cur.execute("SELECT name FROM game.players WHERE region = ? AND spent > ? ORDER BY name", parameters=("cn", 5.0))
out["bound"] = [r[0] for r in cur.fetchall()]
cur.execute("""SELECT CAST(12.34 AS DECIMAL(10,2)) AS d,
    arrow_cast(TIMESTAMP '2026-01-01T08:00:00', 'Timestamp(Microsecond, Some("+08:00"))') AS ts,
    make_array('a', 'b') AS l, '{"k": 1}' AS j""")
typed = cur.fetch_arrow_table()
out["typed"] = [str(f.type) for f in typed.schema]
out["typed_values"] = [str(v) for v in typed.to_pylist()[0].values()]
objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
out["tables"] = sorted(
    f'{c["catalog_name"]}.{s["db_schema_name"]}.{t["table_name"]}'
    for c in objects for s in (c["catalog_db_schemas"] or []) for t in (s["db_schema_tables"] or [])
)
out["columns"] = [
    col["column_name"]
    for c in objects if c["catalog_name"] == "gamelake"
    for s in c["catalog_db_schemas"] if s["db_schema_name"] == "game"
    for t in s["db_schema_tables"] if t["table_name"] == "players"
    for col in t["table_columns"]
]
schema = conn.adbc_get_table_schema("players", catalog_filter="gamelake", db_schema_filter="game")
out["schema"] = [f"{f.name}:{f.type}" for f in schema]
try:
    cur.execute("DROP TABLE game.players")
    out["drop"] = "allowed"
except Exception as e:
    out["drop"] = str(e)
try:
    flightsql.connect(uri, db_kwargs={"username": "ana", "password": "wrong"}).cursor().execute("SELECT 1")
    out["wrong_password"] = "accepted"
except Exception as e:
    out["wrong_password"] = str(e)
print(json.dumps(out))
"#;
    let uri = format!("grpc://{}", server.flight_addr());
    let out = crate::support::run_python(script, &[&uri]);
    let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // The same rows `gamelake sql` prints for the same query.
    let cli = crate::support::gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-q",
            "--format",
            "json",
            "-c",
            "SELECT player_id, name, spent FROM game.players ORDER BY player_id",
        ],
        &[],
    );
    let cli: Vec<serde_json::Value> = serde_json::from_str(cli.trim()).unwrap();
    let cli: Vec<serde_json::Value> = cli
        .iter()
        .map(|r| serde_json::json!([r["player_id"], r["name"], r["spent"]]))
        .collect();
    assert_eq!(got["rows"], serde_json::Value::Array(cli));
    assert_eq!(
        got["rows"],
        serde_json::json!([[1, "ana", 10.5], [2, "bo", 0.0], [3, "cy", 99.9]])
    );
    assert_eq!(
        got["types"],
        serde_json::json!(["int64", "string", "double"])
    );
    assert_eq!(got["bound"], serde_json::json!(["ana", "cy"]));
    // Decimals, zoned timestamps, lists and JSON text arrive intact (views become plain).
    assert_eq!(
        got["typed"],
        serde_json::json!([
            "decimal128(10, 2)",
            "timestamp[us, tz=+08:00]",
            "list<item: string>",
            "string"
        ])
    );
    assert_eq!(
        got["typed_values"],
        serde_json::json!([
            "12.34",
            "2026-01-01 08:00:00+08:00",
            "['a', 'b']",
            "{\"k\": 1}"
        ])
    );
    assert!(
        got["tables"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("gamelake.game.players")),
        "{got}"
    );
    assert_eq!(
        got["columns"],
        serde_json::json!(["player_id", "name", "region", "spent"])
    );
    assert_eq!(
        got["schema"],
        serde_json::json!([
            "player_id:int64",
            "name:string",
            "region:string",
            "spent:double"
        ])
    );
    assert!(
        got["drop"].as_str().unwrap().contains("permission denied"),
        "{got}"
    );
    assert!(
        got["wrong_password"]
            .as_str()
            .unwrap()
            .contains("wrong user name or password"),
        "{got}"
    );
}

/// Every RPC a client can make, with a given client; each must fail for a bad token.
async fn every_rpc(
    client: &mut FlightSqlServiceClient<Channel>,
    ticket: arrow_flight::Ticket,
) -> Vec<(String, String)> {
    use arrow_flight::sql::{
        ActionClosePreparedStatementRequest, CommandGetExportedKeys, CommandGetImportedKeys,
        CommandGetPrimaryKeys, CommandPreparedStatementQuery, ProstMessageExt,
    };
    let mut errors = Vec::new();
    let mut note = |name: &str, r: Result<(), String>| {
        errors.push((
            name.to_string(),
            r.err().unwrap_or_else(|| "accepted".to_string()),
        ));
    };
    note(
        "GetFlightInfo(statement)",
        client
            .execute("SELECT 1".into(), None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "DoPut(update)",
        client
            .execute_update("SELECT 1".into(), None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "DoAction(CreatePreparedStatement)",
        client
            .prepare("SELECT 1".into(), None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "GetFlightInfo(catalogs)",
        client
            .get_catalogs()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "GetFlightInfo(schemas)",
        client
            .get_db_schemas(Default::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "GetFlightInfo(tables)",
        client
            .get_tables(Default::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "GetFlightInfo(table types)",
        client
            .get_table_types()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "GetFlightInfo(sql info)",
        client
            .get_sql_info(vec![])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "GetFlightInfo(xdbc types)",
        client
            .get_xdbc_type_info(Default::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "GetFlightInfo(primary keys)",
        client
            .get_primary_keys(CommandGetPrimaryKeys {
                table: "players".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "GetFlightInfo(exported keys)",
        client
            .get_exported_keys(CommandGetExportedKeys {
                table: "players".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    note(
        "GetFlightInfo(imported keys)",
        client
            .get_imported_keys(CommandGetImportedKeys {
                table: "players".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    let get = async {
        let stream = client
            .do_get(ticket.clone())
            .await
            .map_err(|e| e.to_string())?;
        stream
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    note("DoGet", get.await);
    let catalogs_ticket = arrow_flight::Ticket::new(
        arrow_flight::sql::CommandGetCatalogs {}
            .as_any()
            .encode_to_vec(),
    );
    let get = async {
        let stream = client
            .do_get(catalogs_ticket)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    note("DoGet(catalogs)", get.await);
    let close = Action {
        r#type: "ClosePreparedStatement".into(),
        body: ActionClosePreparedStatementRequest {
            prepared_statement_handle: "x".into(),
        }
        .as_any()
        .encode_to_vec()
        .into(),
    };
    note(
        "DoAction(ClosePreparedStatement)",
        client
            .do_action(close)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    let cancel = Action {
        r#type: "CancelFlightInfo".into(),
        body: CancelFlightInfoRequest { info: None }
            .encode_to_vec()
            .into(),
    };
    note(
        "DoAction(CancelFlightInfo)",
        client
            .do_action(cancel)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    let bind = CommandPreparedStatementQuery {
        prepared_statement_handle: "x".into(),
    };
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(bind.as_any().encode_to_vec());
    let put = client
        .do_put(futures::stream::iter([arrow_flight::FlightData {
            flight_descriptor: Some(descriptor),
            ..Default::default()
        }]))
        .await;
    let put = match put {
        Ok(mut results) => results
            .message()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    note("DoPut(bind parameters)", put);
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_missing_bad_and_expired_tokens_and_altered_tickets() {
    let lake = lake_with_players().await;
    let server = Server::start(&lake, users(), Limits::default(), b"k").await;
    let mut ana = connect(server.addr, Some(("ana", "ana-pw"))).await;
    let info = ana
        .execute("SELECT * FROM game.players".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();

    let expired = Signer::new(b"k")
        .sign(
            &gamelake::flight::Principal {
                user: "ana".into(),
                role: Role::Reader,
            },
            Duration::from_secs(1),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let other_key = Signer::new(b"other")
        .sign(
            &gamelake::flight::Principal {
                user: "root".into(),
                role: Role::Admin,
            },
            Duration::from_secs(600),
        )
        .unwrap();
    for (case, token, expected) in [
        ("no token", None, "no bearer token"),
        (
            "token signed with another key",
            Some(other_key),
            "invalid token",
        ),
        ("expired token", Some(expired), "expired"),
    ] {
        let mut client = connect(server.addr, None).await;
        if let Some(token) = token {
            client.set_token(token);
        }
        for (rpc, outcome) in every_rpc(&mut client, ticket.clone()).await {
            assert!(
                outcome.contains(expected),
                "{case}: {rpc} was not refused: {outcome}"
            );
        }
    }

    // A ticket altered by one byte (anywhere) is refused.
    let bytes = ticket.ticket.to_vec();
    for position in [bytes.len() / 2, bytes.len() - 2] {
        let mut altered = bytes.clone();
        altered[position] ^= 0x01;
        let stream = ana.do_get(arrow_flight::Ticket::new(altered)).await;
        let refused = match stream {
            Err(e) => e.to_string(),
            Ok(s) => match s.try_collect::<Vec<_>>().await {
                Err(e) => e.to_string(),
                Ok(_) => "accepted".to_string(),
            },
        };
        assert!(
            refused.contains("invalid")
                || refused.contains("malformed")
                || refused.contains("decode"),
            "altered at {position}: {refused}"
        );
    }
    // The genuine ticket still works for its owner.
    assert_eq!(fetch(&mut ana, info).await.unwrap()[0].num_rows(), 3);
    server.shutdown().await;
}

/// Resident memory of a process, from /proc.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_queries_cancelled_mid_stream_leave_the_server_healthy() {
    let lake = lake_with_players().await;
    let server = start_flight(&lake, "s", "[flight]\nmax_concurrent_queries = 100\n");
    let pid = server.child.id();
    let client = connect(server.flight_addr(), Some(("ana", "ana-pw"))).await;
    let token = client.token().unwrap().clone();
    let sql = "SELECT v, v * 2 AS w, 'row ' || v AS label FROM generate_series(1, 50000000) t(v)";

    // The first burst warms the allocator's arenas and the server's caches; the baseline is
    // taken after it. A leak would show as growth after the second.
    let first_peak = burst(&server, &token, sql).await;
    settle().await;
    let baseline = rss_mib(pid);
    let second_peak = burst(&server, &token, sql).await;
    let mut after = rss_mib(pid);
    for _ in 0..50 {
        if after <= baseline + 32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = rss_mib(pid);
    }
    println!(
        "rss: first burst {first_peak} MiB, baseline {baseline} MiB, second burst {second_peak} MiB, after {after} MiB"
    );
    assert!(
        after <= baseline + 32,
        "memory did not come back: baseline {baseline} MiB, after {after} MiB"
    );
    let mut c = client.clone();
    let batches = query(&mut c, "SELECT count(*) AS n FROM game.players")
        .await
        .unwrap();
    assert_eq!(render(&batches), ["3"]);
}

/// 100 clients at once, each with its own connection (as 100 BI users would be; on one shared
/// HTTP/2 connection, unread streams would hold its flow-control window and stall the cancel
/// calls), each reading three batches; then half cancel with CancelFlightInfo and half hang
/// up. Returns the server's highest resident memory seen meanwhile (MiB).
async fn burst(server: &ServeProcess, token: &str, sql: &'static str) -> u64 {
    use futures::StreamExt;
    let (addr, pid) = (server.flight_addr(), server.child.id());
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let token = token.to_string();
            tokio::spawn(async move {
                let mut c = connect(addr, None).await;
                c.set_token(token);
                let info = c.execute(sql.into(), None).await.unwrap();
                let mut stream = c
                    .do_get(info.endpoint[0].ticket.clone().unwrap())
                    .await
                    .unwrap();
                for _ in 0..3 {
                    stream.next().await.unwrap().unwrap();
                }
                if i % 2 == 0 {
                    let action = Action {
                        r#type: "CancelFlightInfo".into(),
                        body: CancelFlightInfoRequest { info: Some(info) }
                            .encode_to_vec()
                            .into(),
                    };
                    let mut results = c.do_action(action).await.unwrap();
                    let result = results.message().await.unwrap().unwrap();
                    let status = CancelFlightInfoResult::decode(result.body).unwrap().status;
                    assert_eq!(status, CancelStatus::Cancelled as i32);
                }
                drop(stream);
            })
        })
        .collect();
    let mut peak = 0;
    for task in tasks {
        while !task.is_finished() {
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.await.unwrap();
    }
    peak
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[test]
fn streaming_benchmark_runs_at_a_tiny_scale() {
    let text = crate::support::run_tiny_benchmark("flight_stream.py", &["--rows", "2000"]);
    for row in [
        "gamelake Flight SQL -> ADBC",
        "PostgreSQL SELECT -> psycopg",
    ] {
        assert!(text.contains(row), "{row} missing from:\n{text}");
    }
}
