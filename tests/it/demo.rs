//! The demo lake: deterministic, refuses bad input, and every saved query in `queries/` gives
//! the same answer as DuckDB reading the same Delta tables (an independent engine as the oracle).

use std::collections::BTreeMap;

use gamelake::demo::{DemoOptions, TABLES, generate};

use crate::support::{
    DUCKDB_DELTA, TempLake, demo_end, gamelake_err, gamelake_ok, render, rows, run_python,
    saved_queries, saved_query_params,
};

fn options(seed: u64) -> DemoOptions {
    DemoOptions {
        scale: 0.01,
        seed,
        years: 1,
        end: demo_end(),
        replace: false,
    }
}

async fn table_contents(lake: &TempLake) -> Vec<Vec<String>> {
    let session = lake.session().await;
    let mut all = Vec::new();
    for table in TABLES {
        // Every column, in a total order, so equal tables render equally.
        let batches = session
            .query(&format!("SELECT * FROM {table}"))
            .await
            .unwrap();
        let mut lines = render(&batches);
        lines.sort();
        all.push(lines);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_rows_other_seed_other_rows() {
    let (a, b, c) = (TempLake::new(), TempLake::new(), TempLake::new());
    for (lake, seed) in [(&a, 7), (&b, 7), (&c, 8)] {
        generate(&lake.session().await, &options(seed))
            .await
            .unwrap();
    }
    let (ta, tb, tc) = (
        table_contents(&a).await,
        table_contents(&b).await,
        table_contents(&c).await,
    );
    for (i, table) in TABLES.iter().enumerate() {
        assert!(!ta[i].is_empty(), "{table} is empty");
        assert_eq!(
            ta[i], tb[i],
            "{table} differs between two runs with the same seed"
        );
    }
    assert_ne!(ta[3], tc[3], "another seed should give other purchases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_data_has_the_shape_analysts_expect() {
    let lake = TempLake::new();
    generate(
        &lake.session().await,
        &DemoOptions {
            scale: 0.05,
            ..options(42)
        },
    )
    .await
    .unwrap();
    let s = lake.session().await;
    // Each table's last commit records its distinct counts (ANALYZE) for the planner.
    for table in TABLES {
        let (schema, name) = table.split_once('.').unwrap();
        let last = rows(
            &s,
            &format!("SELECT operation, parameters FROM {schema}.\"{name}$history\" LIMIT 1"),
        )
        .await;
        assert!(
            last[0].starts_with("SET TBLPROPERTIES|")
                && last[0].contains("gamelake.distinctCounts"),
            "{table}: {last:?}"
        );
    }
    // Friendships are symmetric.
    assert_eq!(
        rows(&s, "SELECT count(*) FROM game.friendships f LEFT JOIN game.friendships g ON g.player_id = f.friend_id AND g.friend_id = f.player_id WHERE g.player_id IS NULL").await,
        vec!["0"]
    );
    // Retention falls: D1 > D7 > D30 over all players.
    let r = rows(&s, "SELECT SUM(d1), SUM(d7), SUM(d30) FROM (SELECT p.player_id, MAX(CASE WHEN s.session_date = p.signup_date + INTERVAL '1 day' THEN 1 ELSE 0 END) d1, MAX(CASE WHEN s.session_date = p.signup_date + INTERVAL '7 days' THEN 1 ELSE 0 END) d7, MAX(CASE WHEN s.session_date = p.signup_date + INTERVAL '30 days' THEN 1 ELSE 0 END) d30 FROM game.players p LEFT JOIN game.sessions s ON s.player_id = p.player_id GROUP BY p.player_id)").await;
    let v: Vec<i64> = r[0].split('|').map(|x| x.parse().unwrap()).collect();
    assert!(
        v[0] > v[1] && v[1] > v[2] && v[2] > 0,
        "retention D1/D7/D30 = {v:?}"
    );
    // Spending is heavy-tailed: the top 1% of payers bring well over 10% of revenue.
    let share = rows(&s, "WITH t AS (SELECT player_id, SUM(amount) AS spent FROM game.purchases WHERE currency = 'CNY' GROUP BY player_id), r AS (SELECT spent, ROW_NUMBER() OVER (ORDER BY spent DESC) AS rk, COUNT(*) OVER () AS n FROM t) SELECT CAST(SUM(CASE WHEN rk <= GREATEST(1, n / 100) THEN spent ELSE 0 END) / SUM(spent) AS DOUBLE) FROM r").await;
    let share: f64 = share[0].parse().unwrap();
    assert!(share > 0.10, "top 1% revenue share {share}");
    // Evenings are busier than early mornings (server time, UTC+8).
    let hours = rows(&s, "SELECT SUM(CASE WHEN h BETWEEN 19 AND 22 THEN 1 ELSE 0 END), SUM(CASE WHEN h BETWEEN 3 AND 6 THEN 1 ELSE 0 END) FROM (SELECT EXTRACT(HOUR FROM login_at + INTERVAL '8 hours') AS h FROM game.sessions)").await;
    let h: Vec<i64> = hours[0].split('|').map(|x| x.parse().unwrap()).collect();
    assert!(h[0] > 4 * h[1], "evening vs early-morning logins {h:?}");
    // Overseas regions open later than the launch regions.
    let firsts = rows(
        &s,
        "SELECT region, MIN(signup_date) FROM game.players GROUP BY region ORDER BY 2, 1",
    )
    .await;
    assert!(
        firsts[0].starts_with("beijing|")
            || firsts[0].starts_with("shanghai|")
            || firsts[0].starts_with("guangzhou|"),
        "{firsts:?}"
    );
    assert!(firsts.iter().any(|l| l.starts_with("tokyo|")), "{firsts:?}");
}

/// Cells equal as text, or as numbers within rounding (engines round halves differently).
fn same_cell(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 0.011_f64.max(1e-9 * x.abs()),
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_saved_query_agrees_with_duckdb() {
    let lake = TempLake::new();
    generate(
        &lake.session().await,
        &DemoOptions {
            scale: 0.02,
            ..options(42)
        },
    )
    .await
    .unwrap();
    let player = rows(&lake.session().await, "SELECT player_id FROM game.purchases GROUP BY player_id ORDER BY COUNT(*) DESC, player_id LIMIT 1").await[0].clone();
    let session = lake.session().await;
    let session = session
        .clone()
        .with_params(saved_query_params(&session).await);
    let queries = saved_queries();
    let script = format!(
        "{DUCKDB_DELTA}
import datetime, json, re, sys
lake, queries = sys.argv[1], json.loads(sys.argv[2])
given = {{'player_id': int(sys.argv[3]), 'since': datetime.date(2026, 10, 1)}}
con = duck()
out = {{}}
for name, sql in queries.items():
    sql = re.sub(r'\\b(game|logs)\\.([a-z_]+)\\b', lambda m: f\"delta_scan('{{lake}}/{{m.group(1)}}/{{m.group(2)}}')\", sql)
    params = {{k: v for k, v in given.items() if '$' + k in sql}}
    rows = (con.execute(sql, params) if params else con.execute(sql)).fetchall()
    out[name] = ['|'.join('NULL' if v is None else str(v) for v in r) for r in rows]
print(json.dumps(out))"
    );
    let json = serde_json::to_string(&queries).unwrap();
    let duck: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&run_python(&script, &[&lake.location(), &json, &player])).unwrap();
    for (name, sql) in &queries {
        let ours = rows(&session, sql).await;
        let theirs = &duck[name];
        assert!(!ours.is_empty(), "{name} returned no rows");
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{name}: row counts differ\nours: {ours:?}\nduckdb: {theirs:?}"
        );
        for (o, t) in ours.iter().zip(theirs) {
            let (oc, tc): (Vec<&str>, Vec<&str>) = (o.split('|').collect(), t.split('|').collect());
            assert!(
                oc.len() == tc.len() && oc.iter().zip(&tc).all(|(a, b)| same_cell(a, b)),
                "{name}: rows differ\nours:   {o}\nduckdb: {t}"
            );
        }
    }
}

#[test]
fn bad_scales_and_existing_tables_are_refused() {
    let lake = TempLake::new();
    let loc = lake.location();
    for (scale, says) in [
        ("0", "not a positive number"),
        ("-1", "not a positive number"),
        ("1e9", "too large"),
        ("nan", "not a positive number"),
    ] {
        let err = gamelake_err(&["--lake", &loc, "demo", "--scale", scale], &[]);
        assert!(err.contains(says), "--scale {scale}: {err}");
    }
    assert!(
        !lake.path().join("game").exists(),
        "a refused demo must write nothing"
    );
    gamelake_ok(
        &["--lake", &loc, "demo", "--scale", "0.001", "--no-queries"],
        &[],
    );
    let err = gamelake_err(&["--lake", &loc, "demo", "--scale", "0.001"], &[]);
    assert!(
        err.contains("already holds demo tables") && err.contains("--replace"),
        "{err}"
    );
    gamelake_ok(
        &[
            "--lake",
            &loc,
            "demo",
            "--scale",
            "0.001",
            "--seed",
            "9",
            "--replace",
            "--no-queries",
        ],
        &[],
    );
    let out = gamelake_ok(
        &[
            "--lake",
            &loc,
            "sql",
            "-c",
            "SELECT count(*) AS n FROM game.players",
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(out, "n\n100\n");
}

#[test]
fn unwritable_lake_is_a_clear_error() {
    let err = gamelake_err(
        &["--lake", "/proc/gamelake-demo", "demo", "--scale", "0.001"],
        &[],
    );
    assert!(err.contains("/proc/gamelake-demo"), "{err}");
}

#[test]
fn demo_prints_results_and_next_steps_that_work_as_printed() {
    let lake = TempLake::new();
    let yesterday = || {
        let today = gamelake::timing::server_today();
        today.pred_opt().unwrap().to_string()
    };
    let before = yesterday();
    let out = gamelake_ok(
        &["--lake", &lake.location(), "demo", "--scale", "0.01"],
        &[],
    );
    let after = yesterday();
    assert!(out.contains("queries/retention_by_cohort.sql"), "{out}");
    assert!(out.contains("| cohort_month |"), "{out}");
    // The next steps name the program as it was started (not a `gamelake` that may not be on
    // the PATH), and the first one runs as printed.
    let binary = env!("CARGO_BIN_EXE_gamelake");
    let next = out
        .lines()
        .find(|l| {
            l.trim_start().starts_with(&format!("{binary} --lake")) && l.contains(" lake history ")
        })
        .unwrap_or_else(|| panic!("no runnable next step naming {binary}:\n{out}"));
    let words: Vec<&str> = next.split_whitespace().collect();
    let history = std::process::Command::new(words[0])
        .args(&words[1..])
        .output()
        .unwrap();
    assert!(history.status.success(), "{next}: {history:?}");
    // By default the data ends yesterday (server day), so reports on recent days find rows.
    let last = gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "sql",
            "-c",
            "SELECT CAST(max(session_date) AS VARCHAR) AS d FROM game.sessions",
            "--format",
            "csv",
        ],
        &[],
    );
    let last = last.lines().nth(1).unwrap().to_string();
    assert!(
        last == before || last == after,
        "data ends {last}, yesterday is {before}"
    );
}
