//! Running a report: its queries with resolved parameters, then the run's files (a page, and a
//! CSV and a Parquet copy of each result) in the run's folder, and the report's index of runs.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::config::{QueryConfig, Report};
use super::deliver::{AttachKind, Message, deliver_all};
use super::html::{Section, index_page, run_page};
use crate::error::{Error, Result};
use crate::output::{Format, write_batches};
use crate::query::dates::resolve;
use crate::query::{Params, Session, parse_param};

/// Attempts per delivery (waits of 1, 2, 4 s between them).
const DELIVERY_ATTEMPTS: u32 = 4;

/// Where a report's runs go.
pub enum Destination {
    /// `<lake>/_reports/<name>/` (local or S3, through the lake's store).
    Lake,
    /// A local folder given with `--out`.
    Folder(std::path::PathBuf),
}

/// What a run produced.
#[derive(Debug)]
pub struct RunSummary {
    /// The run's page (a path or URL).
    pub page: String,
    /// One line per query: its title and row count.
    pub lines: Vec<String>,
}

/// Runs a report now: `overrides` (`name=value`) win over the file's parameters; `at` is the run
/// time (relative dates are resolved on its day in the report's zone).
pub async fn run_report(
    session: &Session,
    report: &Report,
    overrides: &[String],
    at: DateTime<Utc>,
    destination: &Destination,
) -> Result<RunSummary> {
    let today = at.with_timezone(&report.zone).date_naive();
    let (store, base, shown_base) = open(session, report, destination)?;
    let folder = at.format("%Y-%m-%dT%H-%M-%SZ").to_string();
    let run_path = |file: &str| StorePath::from(format!("{base}/{folder}/{file}"));
    let mut results: Vec<(String, SchemaRef, Vec<RecordBatch>)> = Vec::new();
    let mut used_params = Vec::new();
    for query in &report.config.queries {
        let params = params_for(report, query, overrides, today, &mut used_params)?;
        let path = report.query_path(query);
        let (schema, batches) = run_query(&session.clone().with_params(params), &path).await?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "query".to_string());
        let mut slug = stem.clone();
        let mut n = 2;
        while results.iter().any(|(s, _, _)| *s == slug) {
            slug = format!("{stem}-{n}");
            n += 1;
        }
        results.push((slug, schema, batches));
    }

    let mut sections = Vec::new();
    let mut lines = Vec::new();
    let mut files = Vec::new();
    for (query, (slug, schema, batches)) in report.config.queries.iter().zip(&results) {
        let title = query
            .title
            .clone()
            .unwrap_or_else(|| slug.replace('_', " "));
        let mut csv = Vec::new();
        let rows = write_batches(Format::Csv, schema.clone(), batches.clone(), &mut csv).await?;
        let mut parquet = Vec::new();
        write_batches(
            Format::Parquet,
            schema.clone(),
            batches.clone(),
            &mut parquet,
        )
        .await?;
        // Bytes: the files below share these buffers with the store's writes, no copy.
        let (csv, parquet) = (Bytes::from(csv), Bytes::from(parquet));
        put(&store, &run_path(&format!("{slug}.csv")), csv.clone()).await?;
        put(
            &store,
            &run_path(&format!("{slug}.parquet")),
            parquet.clone(),
        )
        .await?;
        files.push((format!("{slug}.csv"), csv, AttachKind::Csv));
        files.push((format!("{slug}.parquet"), parquet, AttachKind::Parquet));
        // An empty result gets no (empty) chart; its table says "0 rows".
        let svg = match &query.chart {
            Some(chart) if rows > 0 => Some(
                super::chart::svg(batches, chart)
                    .map_err(|e| Error::Invalid(format!("report {}, {title}: {e}", report.name)))?,
            ),
            _ => None,
        };
        lines.push(format!("{title}: {rows} rows"));
        sections.push((title, svg, slug, schema, batches));
    }
    let sections: Vec<Section> = sections
        .iter()
        .map(|(title, svg, slug, schema, batches)| Section {
            title,
            svg: svg.clone(),
            batches,
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            files: (format!("{slug}.csv"), format!("{slug}.parquet")),
        })
        .collect();
    let local = at.with_timezone(&report.zone);
    let meta = if used_params.is_empty() {
        format!("Run at {}", local.format("%Y-%m-%d %H:%M:%S %:z"))
    } else {
        format!(
            "Run at {}; parameters: {}",
            local.format("%Y-%m-%d %H:%M:%S %:z"),
            used_params.join(", ")
        )
    };
    let page = run_page(report.title(), &meta, &sections)?;
    put(&store, &run_path("index.html"), page.clone()).await?;
    write_index(&store, &base, report).await?;
    let link = match &report.config.link_base {
        Some(link_base) => format!("{}/{folder}/index.html", link_base.trim_end_matches('/')),
        None => format!("{shown_base}/{folder}/index.html"),
    };
    if !report.config.deliveries.is_empty() {
        let message = Message {
            title: report.title(),
            lines: &lines,
            link: &link,
            html: &page,
            files: &files,
        };
        let records = deliver_all(
            &report.config.deliveries,
            &message,
            DELIVERY_ATTEMPTS,
            Duration::from_secs(1),
        )
        .await?;
        let json = serde_json::to_vec_pretty(&records)
            .map_err(|e| Error::Internal(format!("deliveries.json: {e}")))?;
        put(&store, &run_path("deliveries.json"), json).await?;
        if let Some(failed) = records.iter().find(|r| r.outcome != "ok") {
            return Err(Error::Unavailable(format!(
                "report {} is written ({link}), but its delivery to {} failed after {} attempts: {} (recorded in deliveries.json)",
                report.name, failed.target, failed.attempts, failed.outcome
            )));
        }
    }
    Ok(RunSummary { page: link, lines })
}

/// A query's parameters: the report's, the query's own, then `--param` overrides, relative
/// dates resolved on `today`. Each `name=value` used is added to `used` (for the page).
fn params_for(
    report: &Report,
    query: &QueryConfig,
    overrides: &[String],
    today: chrono::NaiveDate,
    used: &mut Vec<String>,
) -> Result<Params> {
    let mut values = report.config.params.clone();
    values.extend(query.params.clone());
    for given in overrides {
        let (name, value) = given
            .split_once('=')
            .ok_or_else(|| Error::Invalid(format!("--param '{given}': expected name=value")))?;
        values.insert(name.trim().to_string(), value.to_string());
    }
    let mut params = Params::new();
    for (name, value) in &values {
        let binding = format!("{name}={}", resolve(value, today));
        let (name, scalar) = parse_param(&binding)?;
        if !used.contains(&binding) {
            used.push(binding);
        }
        params.insert(name, scalar);
    }
    Ok(params)
}

/// Runs a query file; answers its last statement's result.
async fn run_query(
    session: &Session,
    path: &std::path::Path,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let sql = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    session.collect_last(&sql).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "{} returns no rows (its last statement must be a query)",
            path.display()
        ))
    })
}

/// The store holding the runs, the runs' folder in it, and that folder as shown to users.
fn open(
    session: &Session,
    report: &Report,
    destination: &Destination,
) -> Result<(Arc<dyn ObjectStore>, String, String)> {
    match destination {
        Destination::Lake => {
            let location = session.lake().location();
            let base = format!("_reports/{}", report.name);
            let shown = format!("{}/{base}", location.url().as_str().trim_end_matches('/'));
            Ok((location.object_store()?, base, shown))
        }
        Destination::Folder(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| Error::Unavailable(format!("{}: {e}", dir.display())))?;
            let shown = dir.join(&report.name).display().to_string();
            Ok((Arc::new(store), report.name.clone(), shown))
        }
    }
}

async fn put(
    store: &Arc<dyn ObjectStore>,
    path: &StorePath,
    bytes: impl Into<Bytes>,
) -> Result<()> {
    store
        .put(path, PutPayload::from(bytes.into()))
        .await
        .map_err(|e| Error::Unavailable(format!("cannot write {path}: {e}")))?;
    Ok(())
}

/// Rewrites the report's index page from the run folders that exist, newest first.
async fn write_index(store: &Arc<dyn ObjectStore>, base: &str, report: &Report) -> Result<()> {
    let prefix = StorePath::from(base);
    let listing = store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| Error::Unavailable(format!("cannot list {base}: {e}")))?;
    let mut runs: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect();
    runs.sort();
    runs.reverse();
    let entries: Vec<(String, String)> = runs
        .into_iter()
        .map(|folder| (folder.clone(), format!("run of {folder}")))
        .collect();
    let page = index_page(&format!("{} — runs", report.title()), &entries);
    put(
        store,
        &StorePath::from(format!("{base}/index.html")),
        page.into_bytes(),
    )
    .await
}
