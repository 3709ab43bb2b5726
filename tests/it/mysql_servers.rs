//! Servers configured unlike the machine's, each a MariaDB of the test's own: one with TLS
//! required (reached with `ssl-mode=REQUIRED`, and with `VERIFY_IDENTITY` against the test's own
//! certificate authority — and refused without it), one whose `sql_mode` has the quirks that
//! change how SQL reads (ANSI_QUOTES, NO_BACKSLASH_ESCAPES, PAD_CHAR_TO_FULL_LENGTH).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{TempLake, free_port, gamelake_err, gamelake_ok, sql_csv};

/// A private MariaDB on a free port, its data in a temporary folder.
struct PrivateMariaDb {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .expect("mariadb-install-db and openssl must be installed");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateMariaDb {
    /// With `tls`, it requires TLS with a certificate for 127.0.0.1 from a CA of the test's own.
    fn start(tls: bool, options: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        run(Command::new("mariadb-install-db").args([
            "--no-defaults",
            &format!("--datadir={}", at("data")),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]));
        // A CA of the test's own, and a server certificate for 127.0.0.1 signed by it.
        run(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=gamelake test CA",
            "-keyout",
            &at("ca.key"),
            "-out",
            &at("ca.pem"),
        ]));
        run(Command::new("openssl").args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &at("server.key"),
            "-out",
            &at("server.csr"),
        ]));
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(Command::new("openssl").args([
            "x509",
            "-req",
            "-in",
            &at("server.csr"),
            "-CA",
            &at("ca.pem"),
            "-CAkey",
            &at("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &at("ext.cnf"),
            "-out",
            &at("server.pem"),
        ]));
        let port = free_port();
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", at("data")),
            "--user=root".into(),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", at("sock")),
            format!("--pid-file={}", at("pid")),
            "--skip-name-resolve".into(),
        ];
        if tls {
            args.extend([
                format!("--ssl-cert={}", at("server.pem")),
                format!("--ssl-key={}", at("server.key")),
                format!("--ssl-ca={}", at("ca.pem")),
                "--require-secure-transport=ON".into(),
            ]);
        }
        args.extend(options.iter().map(|o| o.to_string()));
        let child = Command::new("mariadbd")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        let server = Self {
            child,
            port,
            dir,
            tls,
        };
        for _ in 0..100 {
            if server.client("CREATE DATABASE IF NOT EXISTS game").is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the private MariaDB did not start on port {port}");
    }

    /// Runs SQL with the mariadb client over TLS.
    fn client(&self, sql: &str) -> Result<String, String> {
        let port = format!("-P{}", self.port);
        let ssl = if self.tls { "--ssl" } else { "--skip-ssl" };
        let out = Command::new("mariadb")
            .args(["-uroot", "-h127.0.0.1", &port, ssl, "-N", "-B", "-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn snapshot_pipeline(lake: &Path) -> String {
    let file = lake.join("tls.toml");
    std::fs::write(
        &file,
        "name = \"tls\"\n[source]\nkind = \"mysql\"\nurl = \"${MYSQL_URL}\"\n[[table]]\nfrom = \"purchases\"\nto = \"v1.purchases\"\nmode = \"snapshot\"\n",
    )
    .unwrap();
    file.display().to_string()
}

#[test]
fn tls_is_used_when_asked_and_verified_against_the_given_authority() {
    let server = PrivateMariaDb::start(true, &[]);
    server
        .client("USE game; CREATE TABLE game.purchases (id int PRIMARY KEY, amount int); INSERT INTO game.purchases SELECT seq, seq FROM seq_1_to_100;")
        .unwrap();
    let lake = TempLake::new();
    let file = snapshot_pipeline(lake.path());
    let base = format!("mysql://root@127.0.0.1:{}/game", server.port);
    let loc = lake.location();
    let args = ["--lake", loc.as_str(), "ingest", file.as_str()];
    // A successful snapshot leaves the 100 rows in the lake.
    let run_ok = |url: &str| {
        gamelake_ok(&args, &[("MYSQL_URL", url)]);
        sql_csv(&loc, &["-c", "SELECT count(*) AS n FROM v1.purchases"]) == "n\n100\n"
    };
    let run_err = |url: &str| gamelake_err(&args, &[("MYSQL_URL", url)]);
    // Without TLS the server refuses.
    let err = run_err(&base);
    assert!(err.contains("MySQL"), "{err}");
    // Encrypted, certificate not checked.
    assert!(run_ok(&format!("{base}?ssl-mode=REQUIRED")));
    // Verified against the test's CA, and the certificate names 127.0.0.1.
    let verified = format!("{base}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}", server.ca());
    assert!(run_ok(&verified));
    // Verification without that CA fails: the certificate's issuer is unknown.
    let err = run_err(&format!("{base}?ssl-mode=VERIFY_IDENTITY"));
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_sql_mode_quirks_migrates_with_equal_checksums() {
    let server = PrivateMariaDb::start(
        false,
        &["--sql-mode=ANSI_QUOTES,NO_BACKSLASH_ESCAPES,PAD_CHAR_TO_FULL_LENGTH,STRICT_ALL_TABLES"],
    );
    // Under NO_BACKSLASH_ESCAPES a backslash is itself; under ANSI_QUOTES "..." names a column.
    server
        .client(
            r"USE game; CREATE TABLE notes (id int PRIMARY KEY, code char(5), body text, made_at datetime);
            INSERT INTO notes VALUES (1, 'ab', 'C:\games\v1 ''quoted''', NOW() - INTERVAL 400 DAY),
                                     (2, 'x', 'new', NOW() - INTERVAL 1 DAY);",
        )
        .unwrap();
    let pg = crate::postgres::TestDb::new().await;
    let lake = TempLake::new();
    let file = lake.path().join("quirks.toml");
    std::fs::write(
        &file,
        "name = \"quirks\"\n[source]\nkind = \"mysql\"\nurl = \"${MYSQL_URL}\"\n[sink]\nkind = \"postgres\"\nurl = \"${PG_URL}\"\n[[table]]\nfrom = \"notes\"\nto = \"v1.notes\"\nmode = \"migrate\"\ntime_column = \"made_at\"\nhot_after = \"365d\"\n",
    )
    .unwrap();
    let my_url = format!("mysql://root@127.0.0.1:{}/game", server.port);
    let pg_url = pg.url();
    let out = gamelake_ok(
        &[
            "--lake",
            &lake.location(),
            "ingest",
            &file.display().to_string(),
        ],
        &[("MYSQL_URL", my_url.as_str()), ("PG_URL", pg_url.as_str())],
    );
    assert!(out.contains("counts and checksums"), "{out}");
    // The lake holds the old row as MariaDB gives it: the backslashes kept, the char padded.
    assert_eq!(
        sql_csv(
            &lake.location(),
            &["-c", "SELECT code || '|' || body AS v FROM v1.notes"]
        ),
        "v\nab   |C:\\games\\v1 'quoted'\n"
    );
}

#[test]
fn timestamps_are_read_in_utc_whatever_the_servers_time_zone() {
    let server = PrivateMariaDb::start(false, &["--default-time-zone=+08:00"]);
    // Written in the server's zone (UTC+8): the timestamp is an instant, the datetime a wall
    // clock reading.
    server
        .client(
            "USE game; CREATE TABLE purchases (id int PRIMARY KEY, paid_at timestamp(6) NULL, local_at datetime(6));
             INSERT INTO purchases VALUES (1, '2026-01-02 08:00:00.5', '2026-01-02 08:00:00.5');",
        )
        .unwrap();
    let lake = TempLake::new();
    let file = snapshot_pipeline(lake.path());
    let url = format!("mysql://root@127.0.0.1:{}/game", server.port);
    gamelake_ok(
        &["--lake", &lake.location(), "ingest", &file],
        &[("MYSQL_URL", url.as_str())],
    );
    assert_eq!(
        sql_csv(
            &lake.location(),
            &[
                "-c",
                "SELECT CAST(paid_at AS VARCHAR) AS paid, CAST(local_at AS VARCHAR) AS local FROM v1.purchases"
            ]
        ),
        "paid,local\n2026-01-02T00:00:00.500Z,2026-01-02T08:00:00.500\n"
    );
}
