//! PostgreSQL over TLS: a cluster of the test's own that refuses TCP logins without TLS, with a
//! certificate its own CA signed for `localhost`. Every kind of connection gamelake opens
//! (statements, bulk COPY, live `pg.*` tables, the replication session of change capture)
//! gets in with `sslmode=verify-full` and that CA, and is refused with another CA, the wrong
//! name, or no TLS.

use crate::cdc::LogicalServer;
use crate::pipelines::lake_with_pipeline;
use crate::support::{gamelake, gamelake_ok, sql_csv};
use gamelake::sources::postgres::connect;

const PIPELINE: &str = r#"name = "tls"
[source]
kind = "postgres"
url = "${PG_URL}"
parallelism = 2
[[table]]
from = "public.scores"
to = "game.scores"
mode = "snapshot"
[[table]]
from = "public.players"
to = "game.players"
mode = "cdc"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_verifies_the_server_and_refuses_the_wrong_one() {
    let server = LogicalServer::start_with(true);
    let port = server.port();
    let (ca, other) = (server.file("ca.pem"), server.file("other-ca.pem"));
    let url = |host: &str, tail: &str| format!("postgres://postgres@{host}:{port}/postgres?{tail}");
    // Encrypted, unchecked: statements through tokio-postgres.
    let client = connect(&url("127.0.0.1", "sslmode=require")).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE scores AS SELECT g AS id, g * 2 AS score FROM generate_series(1, 5000) g;
             CREATE TABLE players (id int PRIMARY KEY, name text);
             INSERT INTO players SELECT g, 'p' || g FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();

    // verify-full with the CA: snapshot (statements and bulk COPY) and change capture (its
    // replication session too).
    let (_lake, loc, file) = lake_with_pipeline("tls.toml", PIPELINE);
    let good = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    gamelake_ok(&["--lake", &loc, "ingest", &file], &[("PG_URL", &good)]);
    client
        .batch_execute("DELETE FROM players WHERE id <= 10")
        .await
        .unwrap();
    gamelake_ok(&["--lake", &loc, "ingest", &file], &[("PG_URL", &good)]);
    assert_eq!(
        sql_csv(
            &loc,
            &[
                "-c",
                "SELECT (SELECT count(*) FROM game.scores) AS s, (SELECT count(*) FROM game.players) AS p"
            ]
        ),
        "s,p\n5000,90\n"
    );
    // Live tables; verify-ca checks the chain but not the name (the certificate is for
    // localhost, the address is 127.0.0.1).
    let by_address = url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let out = gamelake_ok(
        &[
            "--lake",
            &loc,
            "--pg-url",
            &by_address,
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT sum(score) AS s FROM pg.public.scores",
        ],
        &[],
    );
    assert_eq!(out, "s\n25005000\n");

    // Refused: another CA, the wrong name under verify-full, and no TLS at all.
    for (bad, expected) in [
        (
            url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other}"),
            ),
            "UnknownIssuer",
        ),
        (
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "not valid for name",
        ),
        (url("127.0.0.1", "sslmode=disable"), "no encryption"),
    ] {
        let out = gamelake(&["--lake", &loc, "ingest", &file], &[("PG_URL", &bad)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expected),
            "{bad}: {err}"
        );
        assert!(
            !err.contains("sslrootcert=/"),
            "the error repeats the connection string: {err}"
        );
        let out = gamelake(
            &[
                "--lake",
                &loc,
                "--pg-url",
                &bad,
                "sql",
                "-c",
                "SELECT count(*) FROM pg.public.scores",
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expected),
            "{bad}: {err}"
        );
    }
}
