//! Reports (`reports/*.toml`, `gamelake report list|run`): a run over a demo lake writes a page
//! whose charts and tables hold the query's numbers, and CSV/Parquet equal to `gamelake sql`.

use std::path::Path;

use crate::support::{demo_lake, gamelake, gamelake_ok, repo_root, sql_csv};

/// The `<td>` texts of each row of the page's tables, table by table.
fn tables(page: &str) -> Vec<Vec<Vec<String>>> {
    page.split("<tbody>")
        .skip(1)
        .map(|t| {
            let body = t.split("</tbody>").next().unwrap();
            body.split("<tr>")
                .skip(1)
                .map(|row| {
                    row.split("<td")
                        .skip(1)
                        .map(|cell| {
                            let text = cell.split_once('>').unwrap().1;
                            text.split("</td>").next().unwrap().to_string()
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The points of the page's plotted series: its polylines two pixels wide (axes and ticks are
/// one pixel wide).
fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
    svg.split("<polyline")
        .skip(1)
        .filter(|p| p.split('>').next().unwrap().contains("stroke-width=\"2\""))
        .map(|p| {
            let points = p
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            points
                .split_whitespace()
                .map(|xy| {
                    let (x, y) = xy.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect::<Vec<(f64, f64)>>()
        })
        .collect()
}

#[test]
fn a_report_run_writes_a_page_with_the_numbers_and_csv_parquet_equal_to_sql() {
    let lake = demo_lake();
    let loc = lake.location();
    let reports = repo_root().join("reports");
    let reports_arg = reports.to_str().unwrap();
    let listed = gamelake_ok(&["report", "list", "--reports", reports_arg], &[]);
    assert!(
        listed.contains("daily_kpis") && listed.contains("0 8 * * *") && listed.contains("+08:00"),
        "{listed}"
    );

    let out = gamelake(
        &[
            "--lake",
            &loc,
            "report",
            "run",
            "daily_kpis",
            "--reports",
            reports_arg,
            "--param",
            "since=2026-10-01",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let page_path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let page_path = page_path.trim_start_matches("file://");
    assert!(page_path.contains("/_reports/daily_kpis/"), "{page_path}");
    let page = std::fs::read_to_string(page_path).unwrap();
    let run_dir = Path::new(page_path).parent().unwrap();

    // The tables hold what `gamelake sql` answers; the CSV files are byte for byte its output.
    let dau_sql = repo_root().join("queries/dau_by_region.sql");
    let dau_csv = sql_csv(&loc, &["-f", dau_sql.to_str().unwrap()]);
    let revenue_sql = repo_root().join("queries/revenue_by_region.sql");
    let revenue_csv = sql_csv(
        &loc,
        &[
            "-f",
            revenue_sql.to_str().unwrap(),
            "--param",
            "since=2026-10-01",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("dau_by_region.csv")).unwrap(),
        dau_csv
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("revenue_by_region.csv")).unwrap(),
        revenue_csv
    );
    let page_tables = tables(&page);
    assert_eq!(page_tables.len(), 2);
    for (table, csv) in page_tables.iter().zip([&dau_csv, &revenue_csv]) {
        let expected: Vec<Vec<String>> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect();
        assert_eq!(table, &expected);
    }
    // The Parquet copies read back as the same rows.
    let parquet = run_dir.join("revenue_by_region.parquet");
    let again = sql_csv(
        &loc,
        &["-c", &format!("SELECT * FROM '{}'", parquet.display())],
    );
    assert_eq!(again, revenue_csv);

    // The line chart: one line per region, one point per day, heights proportional to DAU.
    let dau: Vec<Vec<String>> = page_tables[0].clone();
    let mut regions: Vec<&str> = dau.iter().map(|r| r[1].as_str()).collect();
    regions.dedup();
    regions.sort();
    regions.dedup();
    let svgs: Vec<&str> = page
        .split("<figure>")
        .skip(1)
        .map(|f| f.split("</figure>").next().unwrap())
        .collect();
    assert_eq!(svgs.len(), 2);
    let texts: Vec<&str> = svgs[0]
        .split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split("</text>").next()?.trim()))
        .collect();
    for region in &regions {
        assert!(texts.contains(region), "legend lacks {region}: {texts:?}");
    }
    // A region seen on one day only is a dot (a line needs two points).
    let lines = polylines(svgs[0]);
    let dots = svgs[0].matches("<circle").count();
    let one_day = regions
        .iter()
        .filter(|r| dau.iter().filter(|row| row[1] == **r).count() == 1)
        .count();
    assert_eq!(dots, one_day, "one dot per region seen on one day");
    assert_eq!(lines.len() + dots, regions.len(), "one line per region");
    let beijing: Vec<f64> = dau
        .iter()
        .filter(|r| r[1] == "beijing")
        .map(|r| r[2].parse().unwrap())
        .collect();
    let line = lines
        .iter()
        .find(|l| l.len() == beijing.len() && proportional(l, &beijing))
        .unwrap_or_else(|| panic!("no line plots beijing's DAU {beijing:?}: {lines:?}"));
    assert!(
        line.windows(2).all(|w| w[0].0 < w[1].0),
        "days left to right"
    );

    // The bar chart: a bar per region, heights proportional to revenue.
    let revenue: Vec<f64> = page_tables[1]
        .iter()
        .map(|r| r[1].parse().unwrap())
        .collect();
    let heights: Vec<f64> = svgs[1]
        .split("<rect")
        .skip(1)
        .filter(|r| !r.contains("fill=\"#FFFFFF\""))
        .filter_map(|r| attribute(r, "height"))
        .collect();
    let tallest = revenue.iter().cloned().fold(0.0, f64::max);
    let max_height = heights.iter().cloned().fold(0.0, f64::max);
    for value in &revenue {
        let expected = value / tallest * max_height;
        assert!(
            heights.iter().any(|h| (h - expected).abs() <= 1.5),
            "no bar of height {expected:.1} for revenue {value}: {heights:?}"
        );
    }

    // The index lists the run; a second run is listed first.
    let index = std::fs::read_to_string(run_dir.parent().unwrap().join("index.html")).unwrap();
    let folder = run_dir.file_name().unwrap().to_string_lossy();
    assert!(
        index.contains(&format!("href=\"{folder}/index.html\"")),
        "{index}"
    );
}

/// Whether pixel heights follow values: y = a - b * value with b > 0 (within a pixel).
fn proportional(points: &[(f64, f64)], values: &[f64]) -> bool {
    let (lo, hi) = (0..values.len()).fold((0, 0), |(lo, hi), i| {
        (
            if values[i] < values[lo] { i } else { lo },
            if values[i] > values[hi] { i } else { hi },
        )
    });
    if values[hi] == values[lo] {
        return points.iter().all(|p| (p.1 - points[0].1).abs() <= 1.0);
    }
    let b = (points[lo].1 - points[hi].1) / (values[hi] - values[lo]);
    b > 0.0
        && points
            .iter()
            .zip(values)
            .all(|(p, v)| (p.1 - (points[lo].1 - b * (v - values[lo]))).abs() <= 1.5)
}

fn attribute(element: &str, name: &str) -> Option<f64> {
    element
        .split(&format!(" {name}=\""))
        .nth(1)?
        .split('"')
        .next()?
        .parse()
        .ok()
}

#[test]
fn report_mistakes_say_where_and_what() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("weekly.toml"),
        "title = \"W\"\n[[query]]\nfile = \"nope.sql\"\n",
    )
    .unwrap();
    let arg = dir.path().to_str().unwrap();
    let out = gamelake(&["report", "list", "--reports", arg], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("weekly.toml:3:") && err.contains("nope.sql does not exist"),
        "{err}"
    );
    let out = gamelake(&["report", "run", "monthly", "--reports", arg], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no report 'monthly'"), "{err}");
}

/// Webhook deliveries: a receiver that fails once gets the message on the retry, in the
/// format asked for; a receiver that never answers is recorded as failed after the retries,
/// the command fails, and the run's files are there all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_are_retried_recorded_and_never_lose_the_run() {
    use std::sync::{Arc, Mutex};

    let received: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (received, failures) = (received.clone(), failures.clone());
        axum::Router::new().route(
            "/hook/{name}",
            axum::routing::post(
                move |axum::extract::Path(name): axum::extract::Path<String>, body: String| {
                    let (received, failures) = (received.clone(), failures.clone());
                    async move {
                        // The first request fails, as a busy receiver would.
                        if failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        let body = serde_json::from_str(&body).unwrap();
                        received.lock().unwrap().push((name, body));
                        axum::http::StatusCode::OK
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let lake = demo_lake();
    let dir = tempfile::tempdir().unwrap();
    let query = repo_root().join("queries/dau_by_region.sql");
    let dead = crate::support::free_port();
    let report = format!(
        "title = \"DAU\"\n[[query]]\nfile = \"{}\"\n[[delivery]]\nkind = \"webhook\"\nurl = \"http://{addr}/hook/plain\"\n[[delivery]]\nkind = \"webhook\"\nurl = \"http://{addr}/hook/ding\"\nformat = \"dingtalk\"\n",
        query.display()
    );
    std::fs::write(dir.path().join("dau.toml"), &report).unwrap();
    let reports = dir.path().to_str().unwrap().to_string();
    let run = |reports: String| {
        let loc = lake.location();
        tokio::task::spawn_blocking(move || {
            gamelake(
                &[
                    "--lake",
                    &loc,
                    "report",
                    "run",
                    "dau",
                    "--reports",
                    &reports,
                ],
                &[],
            )
        })
    };
    let out = run(reports.clone()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "plain");
    assert_eq!(got[0].1["title"], "DAU");
    assert_eq!(got[0].1["link"], page.as_str());
    assert!(
        got[0].1["summary"][0].as_str().unwrap().contains("rows"),
        "{got:?}"
    );
    assert_eq!(got[1].0, "ding");
    assert_eq!(got[1].1["msgtype"], "markdown");
    let run_dir = Path::new(page.trim_start_matches("file://"))
        .parent()
        .unwrap()
        .to_path_buf();
    let record = std::fs::read_to_string(run_dir.join("deliveries.json")).unwrap();
    assert!(
        record.contains("\"attempts\": 2") && record.contains("\"outcome\": \"ok\""),
        "{record}"
    );
    // Webhook URLs carry their token in the path (Slack, DingTalk): the record names the host
    // only.
    assert!(
        record.contains(&format!("http://{addr}/…")) && !record.contains("/hook/"),
        "{record}"
    );

    // A receiver that is down: the run is written, the failure recorded, the command fails.
    std::fs::write(
        dir.path().join("dau.toml"),
        report.replace(
            &format!("{addr}/hook/ding"),
            &format!("127.0.0.1:{dead}/hook"),
        ),
    )
    .unwrap();
    let out = run(reports).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is written") && err.contains("failed after 4 attempts"),
        "{err}"
    );
    let runs = std::fs::read_dir(run_dir.parent().unwrap())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("index.html").exists())
        .count();
    assert_eq!(runs, 2, "both runs keep their files");
}

/// Email delivery against a real SMTP server (Python's aiosmtpd, saving to a maildir): the
/// page is the HTML body, a plain-text summary sits beside it, and each result is attached as
/// CSV and Parquet equal to the run's files.
#[test]
fn email_delivery_sends_the_page_inline_and_the_results_attached() {
    use crate::support::{free_port, python, run_python};

    let maildir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut smtp = std::process::Command::new(python())
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("inbox"))
        .spawn()
        .expect("start aiosmtpd (pip install aiosmtpd)");
    let ready = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(ready, "aiosmtpd did not listen on {port}");

    let lake = demo_lake();
    let dir = tempfile::tempdir().unwrap();
    let query = repo_root().join("queries/dau_by_region.sql");
    std::fs::write(
        dir.path().join("dau.toml"),
        format!(
            "title = \"Daily active players\"\nlink_base = \"https://reports.game.example/dau\"\n[[query]]\nfile = \"{}\"\n[[delivery]]\nkind = \"email\"\nurl = \"smtp://127.0.0.1:{port}\"\nfrom = \"Reports <reports@game.example>\"\nto = [\"ops@game.example\", \"cfo@game.example\"]\nattach = [\"csv\", \"parquet\"]\n",
            query.display()
        ),
    )
    .unwrap();
    let out = gamelake(
        &[
            "--lake",
            &lake.location(),
            "report",
            "run",
            "dau",
            "--reports",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let _ = smtp.kill();
    let _ = smtp.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        link.starts_with("https://reports.game.example/dau/") && link.ends_with("/index.html"),
        "{link}"
    );
    let folder = link.split('/').rev().nth(1).unwrap();
    let run_dir = lake.path().join("_reports/dau").join(folder);

    let mail = run_python(
        r#"
import email, email.policy, json, mailbox, sys
box = mailbox.Maildir(sys.argv[1], factory=None, create=False)
out = []
for key in box.keys():
    msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
    parts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        data = part.get_payload(decode=True)
        parts.append({"type": part.get_content_type(), "name": part.get_filename(),
                      "text": data.decode("utf-8", "replace").replace("\r\n", "\n"),
                      "size": len(data)})
    out.append({"subject": msg["subject"], "from": msg["from"], "to": msg["to"], "parts": parts})
print(json.dumps(out))
"#,
        &[maildir.path().join("inbox").to_str().unwrap()],
    );
    let mail: serde_json::Value = serde_json::from_str(&mail).unwrap();
    assert_eq!(mail.as_array().unwrap().len(), 1, "{mail}");
    let mail = &mail[0];
    assert_eq!(mail["subject"], "Daily active players");
    assert_eq!(mail["from"], "Reports <reports@game.example>");
    assert_eq!(mail["to"], "ops@game.example, cfo@game.example");
    let part = |kind: &str| {
        mail["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} part: {mail}"))
            .clone()
    };
    let page = std::fs::read_to_string(run_dir.join("index.html")).unwrap();
    assert_eq!(
        part("text/html")["text"].as_str().unwrap().trim_end(),
        page.trim_end()
    );
    let text = part("text/plain")["text"].as_str().unwrap().to_string();
    assert!(text.contains("rows") && text.contains(&link), "{text}");
    let csv = part("text/csv");
    assert_eq!(csv["name"], "dau_by_region.csv");
    assert_eq!(
        csv["text"].as_str().unwrap(),
        std::fs::read_to_string(run_dir.join("dau_by_region.csv")).unwrap()
    );
    let parquet = part("application/vnd.apache.parquet");
    assert_eq!(parquet["name"], "dau_by_region.parquet");
    assert_eq!(
        parquet["size"].as_u64().unwrap(),
        std::fs::metadata(run_dir.join("dau_by_region.parquet"))
            .unwrap()
            .len()
    );
}
