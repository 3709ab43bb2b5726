//! Distributed mode: a real Ballista scheduler and executors (`gamelake scheduler`,
//! `gamelake executor`, child processes on loopback) answer the saved queries and TPC-H exactly
//! as the embedded engine does, on a local lake and on S3; a killed executor does not take the
//! cluster down; unsafe binds and missing schedulers are refused with what to do.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gamelake::cluster::ClusterUrl;
use gamelake::demo::{DemoOptions, generate};
use gamelake::{Lake, QuerySettings, Session};

use crate::support::{
    S3Server, ServeProcess, TempLake, free_port, gamelake_err, gamelake_ok, render, repo_root,
    rows, run_python, saved_queries, saved_query_params,
};

/// A scheduler and executors as child processes; all killed on drop.
struct Cluster {
    scheduler: Child,
    executors: Vec<Child>,
    url: String,
}

impl Cluster {
    /// Starts a scheduler on a free port and `executors` executors, and waits until every
    /// executor listens (it registers with the scheduler before it serves).
    fn start(executors: usize, env: &[(&str, String)]) -> Self {
        let mut scheduler = Command::new(env!("CARGO_BIN_EXE_gamelake"))
            .args([
                "scheduler",
                "--bind",
                "127.0.0.1:0",
                "--executor-timeout",
                "6s",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gamelake scheduler");
        let mut line = String::new();
        std::io::BufReader::new(scheduler.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("scheduler output");
        let address = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("scheduler printed no address: {line:?}"))
            .to_string();
        let mut cluster = Self {
            scheduler,
            executors: Vec::new(),
            url: format!("df://{address}"),
        };
        for _ in 0..executors {
            let (flight, grpc) = (free_port(), free_port());
            let child = Command::new(env!("CARGO_BIN_EXE_gamelake"))
                .args(["executor", "--scheduler", &address, "--bind"])
                .arg(format!("127.0.0.1:{flight}"))
                .args(["--grpc-port", &grpc.to_string()])
                .args(["--concurrency", "2", "--heartbeat", "1s"])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start gamelake executor");
            cluster.executors.push(child);
            for port in [flight, grpc] {
                wait_for_port(port, "executor");
            }
        }
        // Registration is the executor's first step, but give the scheduler a beat to record it.
        std::thread::sleep(Duration::from_millis(500));
        cluster
    }

    fn settings(&self) -> QuerySettings {
        QuerySettings {
            cluster: Some(ClusterUrl::parse(&self.url).expect("cluster url")),
            ..QuerySettings::default()
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain([&mut self.scheduler]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn session(location: &str, options: HashMap<String, String>, s: &QuerySettings) -> Session {
    let lake = Arc::new(Lake::open_with_options(location, options).expect("lake"));
    Session::new(lake, s).await.expect("session")
}

/// A year of demo data at `scale`.
async fn demo(session: &Session, scale: f64, seed: u64) {
    let options = DemoOptions {
        scale,
        seed,
        years: 1,
        end: crate::support::demo_end(),
        replace: false,
    };
    generate(session, &options).await.unwrap();
}

/// Rows equal, numbers within 1e-9 relative (sums of doubles may add in another order when
/// the cluster splits the work differently).
fn assert_same_rows(name: &str, embedded: &[String], cluster: &[String]) {
    assert_eq!(
        embedded.len(),
        cluster.len(),
        "{name}: row counts differ\nembedded: {embedded:?}\ncluster: {cluster:?}"
    );
    for (e, c) in embedded.iter().zip(cluster) {
        let same = e.split('|').zip(c.split('|')).all(|(a, b)| {
            a == b
                || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y))
                    if (x - y).abs() <= 1e-9 * x.abs().max(y.abs()))
        });
        assert!(same, "{name}: rows differ\nembedded: {e}\ncluster:  {c}");
    }
}

async fn run(session: &Session, name: &str, sql: &str) -> Vec<String> {
    let batches = session
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    render(&batches)
}

/// Each query through both sessions; the cluster one must really run on the cluster.
async fn compare(embedded: &Session, cluster: &Session, queries: &BTreeMap<String, String>) {
    for (name, sql) in queries {
        let ours = run(embedded, name, sql).await;
        assert!(!ours.is_empty(), "{name} returned no rows");
        let theirs = run(cluster, name, sql).await;
        assert_same_rows(name, &ours, &theirs);
    }
    let plan = run(
        cluster,
        "explain",
        "EXPLAIN SELECT count(*) FROM game.sessions",
    )
    .await;
    assert!(
        plan.iter().any(|l| l.starts_with("distributed_plan|")),
        "the cluster session planned locally: {plan:?}"
    );
}

/// The 22 TPC-H queries of the benchmark, by name.
fn tpch_queries() -> BTreeMap<String, String> {
    (1..=22)
        .map(|n| {
            let path = repo_root().join(format!("benches/tpch/queries/q{n:02}.sql"));
            (
                format!("tpch q{n:02}"),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect()
}

/// TPC-H at scale 0.01 (DuckDB's dbgen from the pip package) as lake tables in `public`.
async fn load_tpch(session: &Session) {
    let data = tempfile::tempdir().unwrap();
    tpch_files(data.path());
    for table in TPCH_TABLES {
        let path = data.path().join(format!("{table}.parquet"));
        session
            .sql(&format!(
                "CREATE TABLE public.{table} AS SELECT * FROM '{}'",
                path.display()
            ))
            .await
            .unwrap();
    }
}

const TPCH_TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// TPC-H tables at a tiny scale as Parquet files.
fn tpch_files(dir: &std::path::Path) {
    run_python(
        r#"
import duckdb, importlib, pathlib, sys
con = duckdb.connect()
pkg = importlib.import_module("duckdb_extension_tpch")
con.execute(f"LOAD '{next(pathlib.Path(pkg.__file__).parent.rglob('tpch.duckdb_extension'))}'")
con.execute("CALL dbgen(sf=0.01)")
for t in ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]:
    con.execute(f"COPY {t} TO '{sys.argv[1]}/{t}.parquet' (FORMAT parquet)")
"#,
        &[&dir.display().to_string()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_queries_and_tpch_on_a_cluster_equal_embedded() {
    let lake = TempLake::new();
    let embedded = lake.session().await;
    demo(&embedded, 0.02, 42).await;
    load_tpch(&embedded).await;
    let cluster = Cluster::start(2, &[]);
    let params = saved_query_params(&embedded).await;
    let embedded = lake.session().await.with_params(params.clone());
    let on_cluster = session(&lake.location(), HashMap::new(), &cluster.settings())
        .await
        .with_params(params);
    let mut queries = saved_queries();
    queries.extend(tpch_queries());
    compare(&embedded, &on_cluster, &queries).await;

    // The command line: --cluster (and GAMELAKE_CLUSTER) send `gamelake sql` to the cluster.
    let sql =
        "SELECT region, count(*) AS players FROM game.players GROUP BY region ORDER BY region";
    let csv = |env: &[(&str, &str)]| {
        gamelake_ok(
            &[
                "--lake",
                &lake.location(),
                "sql",
                "--format",
                "csv",
                "-c",
                sql,
            ],
            env,
        )
    };
    assert_eq!(csv(&[]), csv(&[("GAMELAKE_CLUSTER", &cluster.url)]));
    let explain = gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "--cluster",
            &cluster.url,
            "sql",
            "-c",
            &format!("EXPLAIN {sql}"),
        ],
        &[],
    );
    assert!(explain.contains("distributed_plan"), "{explain}");

    // Writes read on the cluster and commit here, through the one write path.
    let env = [("GAMELAKE_CLUSTER", cluster.url.as_str())];
    let location = lake.location();
    let write = |sql: &str| gamelake_ok(&["--lake", &location, "sql", "-c", sql], &env);
    write(
        "CREATE TABLE game.spenders AS SELECT player_id, sum(amount) AS spent FROM game.purchases GROUP BY player_id",
    );
    write("INSERT INTO game.spenders SELECT player_id, 0 FROM game.players WHERE player_id <= 3");
    write("DELETE FROM game.spenders WHERE spent = 0");
    assert_eq!(
        crate::support::rows(&embedded, "SELECT count(*), sum(spent) FROM game.spenders").await,
        crate::support::rows(
            &embedded,
            "SELECT count(DISTINCT player_id), sum(amount) FROM game.purchases"
        )
        .await
    );
    // What the cluster cannot read is refused before anything is sent, naming the table.
    let err = gamelake_err(
        &[
            "--lake",
            &location,
            "sql",
            "-c",
            "SELECT * FROM game.spenders$history",
        ],
        &env,
    );
    assert!(
        err.contains("game.spenders$history") && err.contains("without --cluster"),
        "{err}"
    );

    // Flight SQL: `gamelake serve` with GAMELAKE_CLUSTER runs its clients' queries there.
    let config = lake.path().join("serve.toml");
    std::fs::write(&config, "").unwrap();
    let server = ServeProcess::spawn(
        &lake,
        &config,
        &["--flight", "127.0.0.1:0", "--insecure-no-auth"],
        &[("GAMELAKE_CLUSTER", &cluster.url)],
    );
    let (flight_rows, plan) = adbc_rows_and_plan(&server, sql);
    assert_eq!(flight_rows, crate::support::rows(&embedded, sql).await);
    assert!(plan.contains("distributed_plan"), "{plan}");
    drop(server);

    // Access rules hold on the cluster: the plan shipped carries the row filter and the mask.
    let rules = lake.path().join("access.toml");
    std::fs::write(
        &rules,
        "[[rules]]\ntables = [\"game.*\"]\nfilter = \"region = 'beijing'\"\nmask = { region = \"upper(region)\" }\n",
    )
    .unwrap();
    let rules_arg = rules.display().to_string();
    let server = ServeProcess::spawn(
        &lake,
        &config,
        &[
            "--flight",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--access",
            &rules_arg,
        ],
        &[("GAMELAKE_CLUSTER", &cluster.url)],
    );
    let (ruled, plan) = adbc_rows_and_plan(&server, sql);
    let expected = crate::support::rows(
        &embedded,
        "SELECT upper(region) AS region, count(*) AS players FROM game.players WHERE region = 'beijing' GROUP BY region",
    )
    .await;
    assert!(!expected.is_empty());
    assert_eq!(ruled, expected);
    assert!(plan.contains("distributed_plan"), "{plan}");
}

/// A query through ADBC Flight SQL on `server`: its rows joined by `|`, and its EXPLAIN.
fn adbc_rows_and_plan(server: &ServeProcess, sql: &str) -> (Vec<String>, String) {
    let out = run_python(
        ADBC_QUERY,
        &[&format!("grpc://{}", server.flight_addr()), sql],
    );
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    (rows, answer["plan"].as_str().unwrap().to_string())
}

/// A Flight SQL query through ADBC: its rows joined by `|`, and its EXPLAIN.
const ADBC_QUERY: &str = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flightsql
conn = flightsql.connect(sys.argv[1])
cur = conn.cursor()
cur.execute(sys.argv[2])
rows = ["|".join(str(v) for v in r) for r in cur.fetchall()]
cur.execute("EXPLAIN " + sys.argv[2])
plan = "\n".join(str(v) for r in cur.fetchall() for v in r)
print(json.dumps({"rows": rows, "plan": plan}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_queries_on_a_cluster_over_s3_equal_embedded() {
    let s3 = S3Server::start();
    let url = s3.lake_url("cluster");
    let embedded = session(&url, s3.options(), &QuerySettings::default()).await;
    demo(&embedded, 0.01, 7).await;
    load_tpch(&embedded).await;
    // The executors reach the bucket with the AWS_* variables of their own environment.
    let cluster = Cluster::start(2, &s3.env());
    let params = saved_query_params(&embedded).await;
    let embedded = embedded.with_params(params.clone());
    let on_cluster = session(&url, s3.options(), &cluster.settings())
        .await
        .with_params(params);
    // Every TPC-H query (one file per table), and the saved queries over each demo table
    // (a year of daily partitions each: moto answers every request in Python, so all fifteen
    // would take minutes; they all run on the local lake above).
    let mut queries = tpch_queries();
    let saved = saved_queries();
    for name in [
        "friend_recommendations.sql",
        "revenue_by_region.sql",
        "top_spenders.sql",
        "retention_by_cohort.sql",
    ] {
        queries.insert(name.to_string(), saved[name].clone());
    }
    compare(&embedded, &on_cluster, &queries).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executor_fails_or_retries_its_query_and_the_cluster_goes_on() {
    let lake = TempLake::new();
    let embedded = lake.session().await;
    demo(&embedded, 0.01, 1).await;
    // Long enough to be cut: a non-equi self join the cluster evaluates pair by pair.
    let slow = "SELECT count(*) FROM game.sessions a JOIN game.sessions b \
                ON a.player_id < b.player_id AND a.login_at > b.logout_at";
    let quick = "SELECT count(*), sum(amount) FROM game.purchases";
    let expected_quick = crate::support::rows(&embedded, quick).await;
    let mut cluster = Cluster::start(2, &[]);
    let on_cluster = session(&lake.location(), HashMap::new(), &cluster.settings()).await;

    let started = Instant::now();
    let running = {
        let s = on_cluster.clone();
        tokio::spawn(async move { s.query(slow).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !running.is_finished(),
        "the query finished before the executor was killed; make it slower"
    );
    cluster.executors[0].kill().unwrap();
    cluster.executors[0].wait().unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(180), running)
        .await
        .expect("a query whose executor died must end (with an answer or an error)")
        .unwrap();
    match outcome {
        Ok(batches) => {
            eprintln!(
                "killed query retried, answered after {:?}",
                started.elapsed()
            );
            let expected = crate::support::rows(&embedded, slow).await;
            assert_eq!(render(&batches), expected, "retried, but wrong");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            eprintln!(
                "killed query failed after {:?}: {message}",
                started.elapsed()
            );
        }
    }
    // The scheduler is still up and the next queries run on the remaining executor.
    assert!(
        cluster.scheduler.try_wait().unwrap().is_none(),
        "the scheduler exited"
    );
    for _ in 0..3 {
        let batches = tokio::time::timeout(Duration::from_secs(120), on_cluster.query(quick))
            .await
            .expect("query after the kill hung")
            .expect("query after the kill failed");
        assert_eq!(render(&batches), expected_quick);
    }
}

#[test]
fn unsafe_binds_and_missing_schedulers_are_refused_with_what_to_do() {
    let err = gamelake_err(&["scheduler", "--bind", "0.0.0.0:0"], &[]);
    assert!(
        err.contains("no authentication") && err.contains("--private-network"),
        "{err}"
    );
    let err = gamelake_err(
        &[
            "executor",
            "--scheduler",
            "127.0.0.1:1",
            "--bind",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert!(err.contains("--private-network"), "{err}");
    let lake = TempLake::new();
    let nobody = format!("df://127.0.0.1:{}", free_port());
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "--cluster",
            &nobody,
            "sql",
            "-c",
            "SELECT 1",
        ],
        &[],
    );
    assert!(
        err.contains("no Ballista scheduler") && err.contains("gamelake scheduler"),
        "{err}"
    );
    let err = gamelake_err(
        &[
            "--lake",
            &lake.location(),
            "--cluster",
            "http://x:1",
            "sql",
            "-c",
            "SELECT 1",
        ],
        &[],
    );
    assert!(err.contains("df://host:port"), "{err}");
}

#[test]
fn deploy_manifests_reference_each_other_and_their_commands_parse() {
    let out = run_python(
        &std::fs::read_to_string(repo_root().join("testdata/check_deploy.py")).unwrap(),
        &[&repo_root().join("deploy").display().to_string()],
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let errors = report["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "deploy/ is inconsistent: {errors:#?}");
    let commands = report["commands"].as_array().unwrap();
    assert_eq!(
        commands.len(),
        3,
        "scheduler, executor, serve: {commands:?}"
    );
    for command in commands {
        // Every flag and value is parsed by the real binary; --help stops before anything runs.
        let mut args: Vec<&str> = command
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        args.push("--help");
        let out = crate::support::gamelake(&args, &[]);
        assert!(
            out.status.success(),
            "{args:?} does not parse:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `lakes.<schema>.<table>` (the union of the regional lakes) runs on a cluster with the same
/// answer, and a filter on `lake` still leaves the other lake out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regional_lakes_union_runs_on_a_cluster() {
    let (bj, sh, home) = (TempLake::new(), TempLake::new(), TempLake::new());
    for (lake, rows) in [(&bj, "(1, 10.0), (2, 5.0)"), (&sh, "(7, 1.0)")] {
        let writer = lake.session().await;
        let create = format!(
            "CREATE TABLE game.purchases AS SELECT * FROM (VALUES {rows}) v(player_id, amount)"
        );
        writer.sql(&create).await.expect("create");
    }
    let regions = || {
        vec![
            (
                "bj".to_string(),
                Arc::new(Lake::open(&bj.location()).unwrap()),
            ),
            (
                "sh".to_string(),
                Arc::new(Lake::open(&sh.location()).unwrap()),
            ),
        ]
    };
    let by_lake =
        "SELECT lake, sum(amount) AS total FROM lakes.game.purchases GROUP BY lake ORDER BY lake";
    let only_bj = "SELECT count(*) FROM lakes.game.purchases WHERE lake = 'bj'";
    let embedded = session(&home.location(), HashMap::new(), &QuerySettings::default())
        .await
        .with_lakes(regions())
        .await
        .unwrap();
    let cluster = Cluster::start(1, &[]);
    let distributed = session(&home.location(), HashMap::new(), &cluster.settings())
        .await
        .with_lakes(regions())
        .await
        .unwrap();
    for sql in [by_lake, only_bj] {
        assert_eq!(
            rows(&distributed, sql).await,
            rows(&embedded, sql).await,
            "{sql}"
        );
    }
    assert_eq!(rows(&distributed, by_lake).await, vec!["bj|15.0", "sh|1.0"]);
    let plan = crate::support::explain(&distributed, only_bj).await;
    let files = |lake: &TempLake| {
        lake.path()
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string()
    };
    assert!(plan.contains(&files(&bj)), "{plan}");
    assert!(!plan.contains(&files(&sh)), "{plan}");
}
