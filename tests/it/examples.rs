//! The example pipelines shipped in `pipelines/` run as a new user would run them: the demo
//! loaded into PostgreSQL (`gamelake demo --to-postgres`), then each file through
//! `gamelake ingest`, its lake tables read back by `gamelake sql`.

use std::io::Write;

use crate::postgres::TestDb;
use crate::support::{TempLake, gamelake_ok, repo_root};
use gamelake::sources::postgres::connect;

/// One number from `gamelake sql` (CSV with a header line).
fn lake_number(lake: &str, pg_url: &str, sql: &str) -> i64 {
    let out = gamelake_ok(
        &[
            "--lake", lake, "--pg-url", pg_url, "sql", "-c", sql, "--format", "csv",
        ],
        &[],
    );
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number from {sql}: {out}"))
}

async fn pg_number(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_pipelines_run_against_the_demo_in_postgres() {
    let db = TestDb::new().await;
    let url = db.url();
    let demo = TempLake::new();
    gamelake_ok(
        &[
            "--lake",
            &demo.location(),
            "demo",
            "--scale",
            "0.01",
            "--years",
            "2",
            "--end",
            "2026-10-31",
            "--no-queries",
            "--to-postgres",
            &url,
        ],
        &[],
    );
    let client = connect(&url).await.unwrap();
    let players = pg_number(&client, "SELECT count(*) FROM public.players").await;
    let friendships = pg_number(&client, "SELECT count(*) FROM public.friendships").await;
    let purchases = pg_number(&client, "SELECT count(*) FROM public.purchases").await;
    let demo_purchases = lake_number(
        &demo.location(),
        &url,
        "SELECT count(*) FROM game.purchases",
    );
    assert!(players > 0 && friendships > 0, "{players} {friendships}");
    assert_eq!(
        purchases, demo_purchases,
        "every demo purchase is in PostgreSQL"
    );

    let lake = TempLake::new();
    let loc = lake.location();
    let file = |name: &str| {
        repo_root()
            .join("pipelines")
            .join(name)
            .display()
            .to_string()
    };
    let env = [("PG_URL", url.as_str())];
    for name in [
        "oltp_snapshot.toml",
        "oltp_incremental.toml",
        "oltp_archive.toml",
    ] {
        gamelake_ok(&["pipeline", "validate", &file(name)], &env);
    }

    gamelake_ok(
        &["--lake", &loc, "ingest", &file("oltp_snapshot.toml")],
        &env,
    );
    assert_eq!(
        lake_number(&loc, &url, "SELECT count(*) FROM game.players"),
        players
    );
    assert_eq!(
        lake_number(&loc, &url, "SELECT count(*) FROM game.friendships"),
        friendships
    );

    // Incremental: everything once, then a changed purchase and a new one merged by key.
    gamelake_ok(
        &["--lake", &loc, "ingest", &file("oltp_incremental.toml")],
        &env,
    );
    client
        .batch_execute(
            "UPDATE public.purchases SET amount = amount + 1, updated_at = now()
               WHERE purchase_id = (SELECT min(purchase_id) FROM public.purchases);
             INSERT INTO public.purchases
               SELECT purchase_id + 1000000000, player_id, item_id, amount, currency, now(),
                      current_date, region, channel
               FROM public.purchases ORDER BY purchase_id LIMIT 1;",
        )
        .await
        .unwrap();
    gamelake_ok(
        &["--lake", &loc, "ingest", &file("oltp_incremental.toml")],
        &env,
    );
    let total = "SELECT count(*) FROM game.purchases";
    assert_eq!(lake_number(&loc, &url, total), purchases + 1);
    let amounts = "CAST(sum(amount) * 100 AS BIGINT)";
    assert_eq!(
        lake_number(&loc, &url, &format!("SELECT {amounts} FROM game.purchases")),
        pg_number(
            &client,
            "SELECT (sum(amount) * 100)::bigint FROM public.purchases"
        )
        .await
    );

    // Archive: rows older than a year leave PostgreSQL for the lake; the view shows each once.
    gamelake_ok(
        &["--lake", &loc, "ingest", &file("oltp_archive.toml")],
        &env,
    );
    let hot = pg_number(&client, "SELECT count(*) FROM public.purchases").await;
    let archived = lake_number(&loc, &url, "SELECT count(*) FROM game.purchases_archive");
    assert!(archived > 0 && hot > 0, "{archived} archived, {hot} hot");
    assert_eq!(archived + hot, purchases + 1);
    assert_eq!(
        lake_number(
            &loc,
            &url,
            "SELECT count(DISTINCT purchase_id) FROM game.purchases_all"
        ),
        purchases + 1
    );

    // Log files: two compressed NDJSON files in, a rerun takes nothing twice.
    let logs = tempfile::tempdir().unwrap();
    for day in 1..=2 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..100 {
            writeln!(
                gz,
                r#"{{"time": "2026-11-0{day}T10:00:{:02}+08:00", "player_id": {i}, "event": "login", "attributes": {{"map": "north"}}}}"#,
                i % 60
            )
            .unwrap();
        }
        std::fs::write(
            logs.path().join(format!("day{day}.ndjson.gz")),
            gz.finish().unwrap(),
        )
        .unwrap();
    }
    let log_env = [("LOG_DIR", logs.path().to_str().unwrap())];
    for _ in 0..2 {
        gamelake_ok(
            &["--lake", &loc, "ingest", &file("log_files.toml")],
            &log_env,
        );
    }
    assert_eq!(
        lake_number(&loc, &url, "SELECT count(*) FROM logs.events"),
        200
    );
}
