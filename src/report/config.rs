//! Report files: `reports/NAME.toml`, one report each. Unknown keys and bad values are errors
//! naming the file, line and key; `${VAR}` takes a value from the environment.
//!
//! ```toml
//! title = "Daily KPIs"
//! schedule = "0 8 * * *"          # cron: minute hour day-of-month month day-of-week
//! timezone = "+08:00"             # of the schedule and of relative dates (default +08:00)
//! [params]                        # for every query
//! day = "yesterday"               # today, yesterday, this_week, last_week, this_month,
//!                                 # last_month, today-7d; anything else is taken as written
//! [[query]]
//! file = "../queries/dau_by_region.sql"   # relative to this file
//! title = "DAU by region"
//! chart = { kind = "line", x = "day", y = ["dau"], series = "region" }
//! [[delivery]]
//! kind = "webhook"
//! url = "${KPI_WEBHOOK}"
//! format = "dingtalk"                # json (default), slack, dingtalk, wecom
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::timezone::Tz;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::timing::{DEFAULT_ZONE, Timing, parse_zone};
use crate::toml_files::{parse_toml, position_of};

/// One report: what to run, when, and how to show it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Heading of the report's page and deliveries (default: the file's name).
    pub title: Option<String>,
    /// When it runs inside `gamelake serve`: a cron expression of five fields (minute hour
    /// day-of-month month day-of-week) or six (with seconds first). None: on demand only.
    pub schedule: Option<String>,
    /// Zone of the schedule and of relative dates: `+08:00`, `UTC`, `Asia/Shanghai`
    /// (default `+08:00`, the game's server day).
    pub timezone: Option<String>,
    /// Parameters for every query (`$name` in the SQL); a query's own `params` win.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The queries, in the order they appear on the page.
    #[serde(rename = "query")]
    pub queries: Vec<QueryConfig>,
    /// Where links to a run point: the runs' folder as served over HTTP (e.g.
    /// `https://reports.example.com/_reports/daily_kpis`). Default: the folder's lake path/URL.
    pub link_base: Option<String>,
    /// Where each run is announced (webhooks, email), after its files are written.
    #[serde(default, rename = "delivery")]
    pub deliveries: Vec<super::deliver::DeliveryConfig>,
}

/// `[[query]]`: one result on the report's page.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// The SQL file, relative to the report file (e.g. `../queries/dau_by_region.sql`).
    pub file: PathBuf,
    /// Heading above its chart and table (default: the file's name).
    pub title: Option<String>,
    /// Parameters for this query only.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// A chart of the result above its table (default: the table only).
    pub chart: Option<ChartConfig>,
}

/// How a result is drawn.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartConfig {
    /// `line` (time series such as DAU or revenue per day) or `bar` (breakdowns such as revenue
    /// by region).
    pub kind: ChartKind,
    /// The column along the x axis (its values are labels, in the result's order).
    pub x: String,
    /// The numeric columns drawn (one line or bar per column, or per `series` value).
    pub y: Vec<String>,
    /// A column whose values split the rows into one line (or bar group) each, e.g. `region`.
    pub series: Option<String>,
}

/// The kinds of chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartKind {
    /// Lines over x.
    Line,
    /// Bars per x.
    Bar,
}

/// A report file, read and checked.
#[derive(Clone, Debug)]
pub struct Report {
    /// The report's name: its file name without `.toml`.
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Its settings.
    pub config: ReportConfig,
    /// The time zone of its schedule and relative dates.
    pub zone: Tz,
    /// Its schedule, parsed (None: on demand only).
    pub timing: Option<Timing>,
}

impl Report {
    /// Reads and checks a report file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses report text; `path` names the file in errors and anchors relative query files.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let config: ReportConfig = parse_toml(text, path)?;
        let fail = |needle: &str, message: String| {
            let (line, column) = position_of(text, needle);
            Error::config(path, line, column, &message)
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let zone_text = config.timezone.as_deref().unwrap_or(DEFAULT_ZONE);
        let zone = parse_zone(zone_text).map_err(|e| fail("timezone", e))?;
        let timing = match &config.schedule {
            None => None,
            Some(text) => Some(Timing::parse(text, zone).map_err(|e| fail("schedule", e))?),
        };
        if config.queries.is_empty() {
            return Err(Error::config(
                path,
                1,
                1,
                "no [[query]]: add at least one with file = \"../queries/NAME.sql\"",
            ));
        }
        let report = Self {
            name,
            path: path.to_path_buf(),
            config,
            zone,
            timing,
        };
        for delivery in &report.config.deliveries {
            delivery.check().map_err(|e| fail("[[delivery]]", e))?;
        }
        for query in &report.config.queries {
            let file = report.query_path(query);
            if !file.is_file() {
                return Err(fail(
                    &query.file.to_string_lossy(),
                    format!(
                        "query file {} does not exist (paths are relative to the report file)",
                        file.display()
                    ),
                ));
            }
            if let Some(chart) = &query.chart
                && chart.y.is_empty()
            {
                return Err(fail(
                    "chart",
                    "chart: y names no column; write e.g. y = [\"dau\"]".to_string(),
                ));
            }
        }
        Ok(report)
    }

    /// The report's heading.
    pub fn title(&self) -> &str {
        self.config.title.as_deref().unwrap_or(&self.name)
    }

    /// Where a query's SQL file is.
    pub fn query_path(&self, query: &QueryConfig) -> PathBuf {
        match self.path.parent() {
            Some(dir) if query.file.is_relative() => dir.join(&query.file),
            _ => query.file.clone(),
        }
    }

    /// The next time the schedule fires after `after`, if it has one.
    pub fn next_run(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.timing.as_ref()?.next_after(after)
    }
}

/// All reports in a folder (`*.toml`), by name.
pub fn load_all(dir: &Path) -> Result<Vec<Report>> {
    crate::toml_files::toml_files(dir)?
        .iter()
        .map(|path| Report::load(path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_report_file_is_read_and_its_schedule_runs_in_its_zone() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "dau.sql", "SELECT 1 AS x");
        let path = write(
            dir.path(),
            "daily.toml",
            "title = \"Daily\"\nschedule = \"0 8 * * *\"\n[[query]]\nfile = \"dau.sql\"\nchart = { kind = \"line\", x = \"day\", y = [\"dau\"] }\n",
        );
        let report = Report::load(&path).unwrap();
        assert_eq!((report.name.as_str(), report.title()), ("daily", "Daily"));
        // 08:00 at +08:00 is 00:00 UTC.
        let after = chrono::DateTime::parse_from_rfc3339("2026-11-25T03:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            report.next_run(after).unwrap().to_rfc3339(),
            "2026-11-26T00:00:00+00:00"
        );
    }

    #[test]
    fn mistakes_name_the_file_line_and_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "q.sql", "SELECT 1");
        let cases = [
            (
                "[[query]]\nfile = \"q.sql\"\ncolour = \"red\"\n",
                "bad.toml:3:",
                "unknown field `colour`",
            ),
            (
                "schedule = \"every day\"\n[[query]]\nfile = \"q.sql\"\n",
                "bad.toml:1:",
                "minute hour day-of-month",
            ),
            (
                "[[query]]\nfile = \"missing.sql\"\n",
                "bad.toml:2:",
                "does not exist",
            ),
            (
                "timezone = \"Mars/Olympus\"\n[[query]]\nfile = \"q.sql\"\n",
                "bad.toml:1:",
                "is not a zone",
            ),
            (
                "[[query]]\nfile = \"q.sql\"\nchart = { kind = \"pie\", x = \"a\", y = [\"b\"] }\n",
                "bad.toml:3:",
                "unknown variant `pie`",
            ),
            (
                "[[query]]\nfile = \"q.sql\"\n[[delivery]]\nkind = \"email\"\nurl = \"smtp://mail\"\nfrom = \"reports\"\nto = [\"ops@example.com\"]\n",
                "bad.toml:3:",
                "'reports' is not an address",
            ),
            (
                "[[query]]\nfile = \"q.sql\"\n[[delivery]]\nkind = \"email\"\nurl = \"http://mail\"\nfrom = \"r@example.com\"\nto = [\"ops@example.com\"]\n",
                "bad.toml:3:",
                "must start with smtp:// or smtps://",
            ),
        ];
        for (text, place, message) in cases {
            let path = write(dir.path(), "bad.toml", text);
            let err = Report::load(&path).unwrap_err().to_string();
            assert!(
                err.contains(place) && err.contains(message),
                "{text}: {err}"
            );
        }
    }
}
