//! Flight SQL answers: queries, prepared statements and metadata through the Rust client and
//! Python ADBC, and tickets any replica sharing the key can redeem.

use super::*;

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
async fn tickets_are_stateless_across_replicas_sharing_the_key() {
    let lake = lake_with_players().await;
    let a = start_flight(&lake, "shared-secret-0123456789abcdef0123456789", "");
    let b = start_flight(&lake, "shared-secret-0123456789abcdef0123456789", "");
    let other = start_flight(&lake, "another-secret-0123456789abcdef012345678", "");

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
    let server = start_flight(&lake, "load-test-secret-0123456789abcdef0123", "");
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
