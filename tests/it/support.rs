//! Shared test helpers: temporary lakes, the gamelake binary, the Python peers and a loopback S3
//! server (moto). A helper whose tool is missing panics with what to install: tests never skip.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gamelake::{Lake, QuerySettings, Session};

/// The last day of the tests' demo lakes: fixed, so the reports' and queries' fixed windows
/// (`since=2026-10-01`) find the same rows on any day.
pub const DEMO_END: &str = "2026-10-31";

/// [`DEMO_END`] as a date.
pub fn demo_end() -> chrono::NaiveDate {
    DEMO_END.parse().unwrap()
}

/// A memory figure of a process from `/proc/<pid>/status`, in MiB: `"VmRSS:"` (resident now)
/// or `"VmHWM:"` (the most it has been).
pub fn memory_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb / 1024
}

/// The Python interpreter that has pyarrow, duckdb, deltalake and moto (`GAMELAKE_PYTHON`, set by
/// `.ci/run`; `python3` otherwise).
pub fn python() -> String {
    std::env::var("GAMELAKE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs a Python script and returns its standard output; panics with stderr on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        // Leave without interpreter teardown: pyarrow's and duckdb's thread pools can abort
        // at exit on a busy machine ("terminate called without an active exception") after
        // all output is written.
        .arg(format!("{script}\nimport os, sys\nsys.stdout.flush()\nos._exit(0)\n"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run `bash .ci/run` once to create the venv, or set GAMELAKE_PYTHON", python()));
    assert!(
        out.status.success(),
        "python failed (is the venv from .ci/run active? set GAMELAKE_PYTHON):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path of DuckDB's delta extension shipped by the `duckdb-extension-delta` pip package.
pub const DUCKDB_DELTA: &str = r#"
import duckdb, importlib, pathlib
def duck():
    con = duckdb.connect()
    pkg = importlib.import_module("duckdb_extension_delta")
    ext = next(pathlib.Path(pkg.__file__).parent.rglob("delta.duckdb_extension"))
    con.execute(f"LOAD '{ext}'")
    return con
"#;

/// A lake in a fresh temporary folder.
pub struct TempLake {
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
}

impl TempLake {
    /// A new empty lake folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The lake's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The lake's location as `--lake` takes it.
    pub fn location(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// A session over this lake.
    pub async fn session(&self) -> Session {
        session_at(&self.location(), HashMap::new()).await
    }
}

/// A session over a location with explicit storage options.
pub async fn session_at(location: &str, options: HashMap<String, String>) -> Session {
    let lake = Arc::new(Lake::open_with_options(location, options).expect("lake"));
    Session::new(lake, &QuerySettings::default())
        .await
        .expect("session")
}

/// Runs the gamelake binary with arguments and extra environment.
pub fn gamelake(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gamelake"));
    cmd.args(args)
        .env_remove("GAMELAKE_LAKE")
        .env_remove("GAMELAKE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run gamelake")
}

/// Stdout of a successful run; panics with stderr otherwise.
pub fn gamelake_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = gamelake(args, env);
    assert!(
        out.status.success(),
        "gamelake {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gamelake --lake LAKE sql --format csv ARGS...`: the CSV it printed (panics on failure).
pub fn sql_csv(lake: &str, args: &[&str]) -> String {
    let mut all = vec!["--lake", lake, "sql", "--format", "csv"];
    all.extend_from_slice(args);
    gamelake_ok(&all, &[])
}

/// Stderr of a failed run; panics if it succeeded, crashed, or printed a panic.
pub fn gamelake_err(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = gamelake(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1 for {args:?}; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "panic for {args:?}:\n{stderr}"
    );
    assert!(
        stderr.starts_with("error: "),
        "error line expected for {args:?}:\n{stderr}"
    );
    stderr
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// moto's S3 server on a loopback port, with one bucket; stopped on drop.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created for the test.
    pub bucket: String,
}

impl S3Server {
    /// Starts moto and creates a bucket. Panics (never skips) if moto is not installed.
    pub fn start() -> Self {
        Self::launch(&["-m", "moto.server"])
    }

    /// moto patched to ignore `If-None-Match` on PUT, like S3-compatible stores without
    /// conditional writes (a deliberately broken real server: no such store installs here).
    pub fn start_without_conditional_put() -> Self {
        const PATCHED: &str = r#"
import sys, moto.s3.responses as r
orig = r.S3Response.put_object
def put_object(self):
    self.headers = {k: v for k, v in self.headers.items() if k.lower() != 'if-none-match'}
    return orig(self)
r.S3Response.put_object = put_object
from moto.server import main
main(sys.argv[1:])
"#;
        Self::launch(&["-c", PATCHED])
    }

    /// moto patched to behave like Aliyun OSS: `If-None-Match` ignored, and a PUT with
    /// `x-oss-forbid-overwrite: true` refused (409 FileAlreadyExists) when the key exists.
    pub fn start_like_oss() -> Self {
        const PATCHED: &str = r#"
import sys, moto.s3.responses as r
orig = r.S3Response.put_object
def put_object(self):
    headers = {k.lower(): v for k, v in self.headers.items()}
    self.headers = {k: v for k, v in self.headers.items() if k.lower() != 'if-none-match'}
    if headers.get('x-oss-forbid-overwrite', '').lower() == 'true' and self.backend.get_object(self.bucket_name, self.parse_key_name()) is not None:
        return 409, {}, b'<Error><Code>FileAlreadyExists</Code><Message>The object you specified already exists and can not be overwritten.</Message></Error>'
    return orig(self)
r.S3Response.put_object = put_object
from moto.server import main
main(sys.argv[1:])
"#;
        Self::launch(&["-c", PATCHED])
    }

    fn launch(program: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(python())
            .args(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto with {} ({e}); run .ci/run to create the venv",
                    python()
                )
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start on {endpoint}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let bucket = "gamelake-test".to_string();
        run_python(
            "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket=sys.argv[2])",
            &[&endpoint, &bucket],
        );
        Self {
            child,
            endpoint,
            bucket,
        }
    }

    /// Storage options for gamelake, as `AWS_*` names.
    pub fn options(&self) -> HashMap<String, String> {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// The environment a gamelake process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// A lake URL under a fresh prefix of the bucket.
    pub fn lake_url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Puts an object with boto3, as another writer would, past gamelake.
    pub fn put_object(&self, key: &str, body: &str) {
        run_python(
            &format!(
                "{BOTO3} c.put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=sys.argv[4].encode())"
            ),
            &[&self.endpoint, &self.bucket, key, body],
        );
    }

    /// An object's text, read with boto3.
    pub fn get_object(&self, key: &str) -> String {
        run_python(
            &format!(
                "{BOTO3} print(c.get_object(Bucket=sys.argv[2], Key=sys.argv[3])['Body'].read().decode(), end='')"
            ),
            &[&self.endpoint, &self.bucket, key],
        )
    }
}

/// A boto3 client `c` for the endpoint in `sys.argv[1]`.
const BOTO3: &str = "import boto3, sys; c = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1');";

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository root (for testdata).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a statement that returns no rows to look at (a write, a `SET`), failing the test with
/// the statement and the error.
pub async fn execute(session: &Session, sql: &str) {
    session
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The text of a statement's `EXPLAIN` (logical and physical plan), one line per row.
pub async fn explain(session: &Session, sql: &str) -> String {
    rows(session, &format!("EXPLAIN {sql}")).await.join("\n")
}

/// Collects a query's rows as lines of `|`-separated values (NULL for nulls), in result order.
pub async fn rows(session: &Session, sql: &str) -> Vec<String> {
    let batches = session
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    render(&batches)
}

/// Renders batches as lines of `|`-separated values.
pub fn render(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            lines.push(cells.join("|"));
        }
    }
    lines
}

/// Runs a benchmark script of `benches/` at a tiny scale with this build's binary and returns
/// the results section it wrote (benchmarks are measured by hand; the suite keeps them working).
pub fn run_tiny_benchmark(script: &str, args: &[&str]) -> String {
    let out = tempfile::tempdir().unwrap();
    let results = out.path().join("RESULTS.md");
    let status = Command::new(python())
        .arg(repo_root().join("benches").join(script))
        .args(args)
        .args(["--gamelake", env!("CARGO_BIN_EXE_gamelake")])
        .arg("--results")
        .arg(&results)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "benches/{script} failed");
    std::fs::read_to_string(&results).unwrap()
}

/// `gamelake --lake L --config C serve ARGS...` as a child process, with the addresses it
/// printed at start (`--flight`, `--http`, `--forward` on port 0); killed on drop.
pub struct ServeProcess {
    /// The process.
    pub child: Child,
    flight: Option<std::net::SocketAddr>,
    pg: Option<std::net::SocketAddr>,
    http: Option<std::net::SocketAddr>,
    forward: Option<std::net::SocketAddr>,
    metrics: Option<std::net::SocketAddr>,
}

impl ServeProcess {
    /// Starts the server and waits until it printed one line per server it runs.
    pub fn spawn(lake: &TempLake, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_at(&lake.location(), config, args, env)
    }

    /// Like [`ServeProcess::spawn`], for a lake at any URL.
    pub fn spawn_at(lake: &str, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gamelake"));
        cmd.args(["--lake", lake, "--config"])
            .arg(config)
            .arg("serve")
            .args(args)
            .env_remove("GAMELAKE_LAKE")
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start gamelake serve");
        let expected = args
            .iter()
            .filter(|a| {
                matches!(
                    **a,
                    "--flight" | "--pg" | "--http" | "--forward" | "--schedule" | "--metrics"
                )
            })
            .count();
        let (mut flight, mut pg, mut http, mut forward, mut metrics) =
            (None, None, None, None, None);
        let mut out = std::io::BufReader::new(child.stdout.as_mut().expect("stdout"));
        let address = |line: &str, scheme: &str| -> Option<std::net::SocketAddr> {
            let rest = line.split(scheme).nth(1)?;
            rest.split(|c: char| c == '/' || c.is_whitespace())
                .next()?
                .parse()
                .ok()
        };
        for _ in 0..expected {
            let mut line = String::new();
            out.read_line(&mut line).expect("read serve output");
            if line.contains("scheduler running") {
                continue;
            } else if let Some(a) = address(&line, "PostgreSQL protocol on ") {
                pg = Some(a);
            } else if let Some(a) = address(&line, "metrics on http://") {
                metrics = Some(a);
            } else if let Some(a) =
                address(&line, "grpc://").or_else(|| address(&line, "grpc+tls://"))
            {
                flight = Some(a);
            } else if let Some(a) = address(&line, "http://") {
                http = Some(a);
            } else if let Some(a) = address(&line, "tcp://") {
                forward = Some(a);
            } else {
                panic!("gamelake serve did not print its address: {line:?}");
            }
        }
        Self {
            child,
            flight,
            pg,
            http,
            forward,
            metrics,
        }
    }

    /// The `--metrics` address.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.metrics.expect("started without --metrics")
    }

    /// The Flight SQL address.
    pub fn flight_addr(&self) -> std::net::SocketAddr {
        self.flight.expect("started without --flight")
    }

    /// The PostgreSQL protocol address.
    pub fn pg_addr(&self) -> std::net::SocketAddr {
        self.pg.expect("started without --pg")
    }

    /// The HTTP intake address.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.http.expect("started without --http")
    }

    /// The Fluentd forward address.
    pub fn forward_addr(&self) -> std::net::SocketAddr {
        self.forward.expect("started without --forward")
    }

    /// Sends SIGTERM and returns the exit status and the rest of standard output.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let status = self.child.wait().expect("wait");
        let mut rest = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut rest);
        }
        (status, rest)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The saved queries of `queries/`, by file name.
pub fn saved_queries() -> BTreeMap<String, String> {
    let mut queries = BTreeMap::new();
    for entry in std::fs::read_dir(repo_root().join("queries")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            queries.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    assert!(queries.len() >= 14, "{queries:?}");
    queries
}

/// Values for the saved queries' `$player_id` (the player with most purchases) and `$since`.
pub async fn saved_query_params(session: &Session) -> gamelake::query::Params {
    let player = rows(session, "SELECT player_id FROM game.purchases GROUP BY player_id ORDER BY COUNT(*) DESC, player_id LIMIT 1").await[0].clone();
    gamelake::query::Params::from([
        (
            "player_id".to_string(),
            datafusion::common::ScalarValue::Int64(Some(player.parse().unwrap())),
        ),
        gamelake::query::parse_param("since=2026-10-01").unwrap(),
    ])
}

/// One sample of a `/metrics` page (0 when it is not there yet).
pub fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The `/metrics` page of a server.
pub async fn metrics_of(serve: &ServeProcess) -> String {
    reqwest::get(format!("http://{}/metrics", serve.metrics_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A TCP proxy on a loopback port in front of another: `cut` closes the port and every
/// connection through it (a datacenter lost to the network), `restore` opens the same port
/// again (it comes back, with its data).
pub struct TcpProxy {
    /// The proxy's port.
    pub port: u16,
    target: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding a free port to `target`.
    pub async fn start(target: u16) -> Self {
        let mut proxy = Self {
            port: free_port(),
            target,
            task: None,
        };
        proxy.restore().await;
        proxy
    }

    /// The proxy's `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Opens the port (again).
    pub async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy port");
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Closes the port and every connection through it.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// The demo at the test size, once per test.
pub fn demo_lake() -> TempLake {
    let lake = TempLake::new();
    gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "demo",
            "--scale",
            "0.01",
            "--end",
            DEMO_END,
            "--no-queries",
        ],
        &[],
    );
    lake
}
