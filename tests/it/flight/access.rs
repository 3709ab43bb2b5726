//! Who may do what over Flight SQL: tokens on every call, tickets bound to their user, what a
//! reader may run, TLS, safe start-up and password hashes.

use super::*;

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
async fn tls_is_one_flag_away() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    gamelake::serving::install_tls_provider();
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
            users: Arc::new(Directory::new(users()).unwrap()),
            signer: Signer::random(),
            token_ttl: Duration::from_secs(600),
            ticket_ttl: Duration::from_secs(60),
        },
        limits: Limits::default(),
        tls: Some(gamelake::serving::Tls {
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
    // With real users: no logins in clear off loopback, and no guessable token key.
    std::fs::write(
        &config,
        format!(
            "[[users]]\nname = \"a\"\npassword_hash = \"{}\"\n",
            hash_password("pw").unwrap()
        ),
    )
    .unwrap();
    let location = lake.location();
    let serve = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "--lake",
            &location,
            "--config",
            config.to_str().unwrap(),
            "serve",
        ];
        args.extend_from_slice(flags);
        gamelake_err(&args, env)
    };
    let err = serve(&["--flight", "0.0.0.0:0"], &[]);
    assert!(
        err.contains("without TLS") && err.contains("--insecure-cleartext"),
        "{err}"
    );
    let err = serve(
        &["--flight", "127.0.0.1:0"],
        &[("GAMELAKE_TOKEN_SECRET", "short-secret")],
    );
    assert!(err.contains("at least 32"), "{err}");
    assert!(
        !err.contains("short-secret"),
        "the secret was printed: {err}"
    );
}

#[test]
fn hash_password_prints_the_lines_of_a_user_the_server_accepts() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gamelake"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pa ss\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut user: User = toml::from_str(&format!("name = \"u\"\n{printed}")).unwrap();
    assert!(user.password_hash.starts_with("$argon2id$"), "{printed}");
    let scram = user.scram_sha256.take().unwrap();
    assert!(scram.starts_with("SCRAM-SHA-256$4096:"), "{printed}");
    let users = vec![user];
    gamelake::serving::auth::check_users(&users).unwrap();
    assert!(gamelake::serving::auth::authenticate(&users, "u", "pa ss").is_some());
    assert!(gamelake::serving::auth::authenticate(&users, "u", "pass").is_none());
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
    note("DoGet", do_get_all(client, ticket.clone()).await);
    // DoGet of every metadata command: the ticket is the command itself, so anyone could
    // make one; each must still need a valid token.
    let metadata: [(&str, Vec<u8>); 9] = [
        (
            "catalogs",
            arrow_flight::sql::CommandGetCatalogs {}
                .as_any()
                .encode_to_vec(),
        ),
        (
            "schemas",
            CommandGetDbSchemas::default().as_any().encode_to_vec(),
        ),
        (
            "tables",
            CommandGetTables::default().as_any().encode_to_vec(),
        ),
        (
            "table types",
            arrow_flight::sql::CommandGetTableTypes {}
                .as_any()
                .encode_to_vec(),
        ),
        (
            "sql info",
            arrow_flight::sql::CommandGetSqlInfo::default()
                .as_any()
                .encode_to_vec(),
        ),
        (
            "xdbc types",
            arrow_flight::sql::CommandGetXdbcTypeInfo::default()
                .as_any()
                .encode_to_vec(),
        ),
        (
            "primary keys",
            CommandGetPrimaryKeys::default().as_any().encode_to_vec(),
        ),
        (
            "exported keys",
            CommandGetExportedKeys::default().as_any().encode_to_vec(),
        ),
        (
            "imported keys",
            CommandGetImportedKeys::default().as_any().encode_to_vec(),
        ),
    ];
    for (name, command) in metadata {
        let got = do_get_all(client, arrow_flight::Ticket::new(command)).await;
        note(&format!("DoGet({name})"), got);
    }
    let cancel_query = Action {
        r#type: "CancelQuery".into(),
        body: arrow_flight::sql::ActionCancelQueryRequest {
            info: FlightInfo::new().encode_to_vec().into(),
        }
        .as_any()
        .encode_to_vec()
        .into(),
    };
    note(
        "DoAction(CancelQuery)",
        client
            .do_action(cancel_query)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    let update = arrow_flight::sql::CommandPreparedStatementUpdate {
        prepared_statement_handle: "x".into(),
    };
    let put = do_put_command(client, update.as_any().encode_to_vec()).await;
    note("DoPut(prepared update)", put);
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
    let put = do_put_command(client, bind.as_any().encode_to_vec()).await;
    note("DoPut(bind parameters)", put);
    errors
}

/// DoGet of a ticket, read to its end.
async fn do_get_all(
    client: &mut FlightSqlServiceClient<Channel>,
    ticket: arrow_flight::Ticket,
) -> Result<(), String> {
    let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
    stream
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// DoPut of a command without data, its first answer read.
async fn do_put_command(
    client: &mut FlightSqlServiceClient<Channel>,
    command: Vec<u8>,
) -> Result<(), String> {
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(command);
    let mut results = client
        .do_put(futures::stream::iter([arrow_flight::FlightData {
            flight_descriptor: Some(descriptor),
            ..Default::default()
        }]))
        .await
        .map_err(|e| e.to_string())?;
    results
        .message()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
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
            &gamelake::serving::Principal::new("ana", Role::Reader),
            Duration::from_secs(1),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let other_key = Signer::new(b"other")
        .sign(
            &gamelake::serving::Principal::new("root", Role::Admin),
            Duration::from_secs(600),
        )
        .unwrap();
    // A token a server once signed for a user who is no longer configured.
    let removed_user = Signer::new(b"k")
        .sign(
            &gamelake::serving::Principal::new("ghost", Role::Admin),
            Duration::from_secs(600),
        )
        .unwrap();
    for (case, token, expected) in [
        ("no token", None, "no bearer token"),
        (
            "token of a user no longer configured",
            Some(removed_user),
            "no longer allowed",
        ),
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
