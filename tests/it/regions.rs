//! `[lakes]` in the config: each regional lake as a catalog of its own name, and all of them as
//! `lakes.<schema>.<table>` with a `lake` column that a filter prunes to one lake.

use crate::support::{S3Server, TempLake, execute, gamelake, session_at};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regional_lakes_are_catalogs_and_one_union_pruned_by_lake() {
    // Beijing on a local folder, Shanghai on S3 with its settings only in the config.
    let bj = TempLake::new();
    execute(
        &bj.session().await,
        "CREATE TABLE game.purchases AS SELECT * FROM (VALUES (1, 10.0), (2, 5.0)) v(player_id, amount)",
    )
    .await;
    let s3 = S3Server::start();
    let sh_url = s3.lake_url("sh");
    execute(
        &session_at(&sh_url, s3.options()).await,
        "CREATE TABLE game.purchases AS SELECT * FROM (VALUES (7, 1.0, 'promo')) v(player_id, amount, channel)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gamelake.toml");
    let options: Vec<String> = s3
        .env()
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\""))
        .collect();
    std::fs::write(
        &config,
        format!(
            "[lakes]\nbj = \"{}\"\nsh = {{ url = \"{sh_url}\", options = {{ {} }} }}\n",
            bj.location(),
            options.join(", ")
        ),
    )
    .unwrap();
    let home = TempLake::new();
    let (home_url, config_path) = (home.location(), config.to_str().unwrap().to_string());
    // `gamelake --lake HOME --config CONFIG sql -c STATEMENT` (CSV), its whole output.
    let run = |statement: &str| {
        let args = [
            "--lake",
            &home_url,
            "--config",
            &config_path,
            "sql",
            "--format",
            "csv",
            "-c",
            statement,
        ];
        gamelake(&args, &[])
    };
    let sql = |statement: &str| {
        let out = run(statement);
        assert!(
            out.status.success(),
            "{statement}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(sql("SELECT count(*) AS n FROM sh.game.purchases"), "n\n1\n");
    assert_eq!(
        sql("SELECT lake, player_id, channel FROM lakes.game.purchases ORDER BY player_id"),
        "lake,player_id,channel\nbj,1,\nbj,2,\nsh,7,promo\n",
        "a union by column name: a column one lake lacks is NULL there"
    );
    assert_eq!(
        sql(
            "SELECT lake, sum(amount) AS total FROM lakes.game.purchases GROUP BY lake ORDER BY lake"
        ),
        "lake,total\nbj,15.0\nsh,1.0\n"
    );
    // A filter on the lake column leaves the other lake's scan out of the plan.
    let plan = sql("EXPLAIN SELECT sum(amount) FROM lakes.game.purchases WHERE lake = 'bj'");
    let bj_files = bj
        .path()
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    assert!(
        plan.contains(&format!("{bj_files}/game/purchases/")),
        "{plan}"
    );
    assert!(!plan.contains("sh/game/purchases"), "{plan}");
    assert_eq!(
        sql("SELECT sum(amount) AS total FROM lakes.game.purchases WHERE lake = 'bj'"),
        "total\n15.0\n"
    );

    // Regional lakes are read-only here: writes go to each region's own gamelake.
    let out = run("INSERT INTO sh.game.purchases VALUES (8, 2.0, 'x')");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("regional lakes of [lakes] are read-only"),
        "{err}"
    );

    // A lake named like another catalog is refused with the rule.
    std::fs::write(&config, format!("[lakes]\npg = \"{}\"\n", bj.location())).unwrap();
    let out = run("SELECT 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("[lakes] pg: a lake's name is a catalog name"),
        "{err}"
    );
}
