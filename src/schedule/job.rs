//! What the scheduler runs: reports (`reports/*.toml`) and pipelines (`pipelines/*.toml`) that
//! have a `schedule`.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::follow::{Endless, Follower};
use crate::error::{Error, Result};
use crate::pipeline::{PipelineConfig, publish_all, run as run_pipeline};
use crate::query::Session;
use crate::report::{Destination, Report, run_report};
use crate::timing::Timing;

/// A scheduled job.
#[async_trait::async_trait]
pub trait Job: Send + Sync {
    /// Its name: a path-safe `kind/name` (`report/daily_kpis`), also its metrics label.
    fn name(&self) -> &str;
    /// When it is due.
    fn timing(&self) -> &Timing;
    /// Runs it for the due time `slot`; answers one line on what it produced.
    async fn run(&self, slot: DateTime<Utc>) -> Result<String>;
}

/// A report run into the lake (`_reports/NAME/<slot>/`); relative dates are resolved on the
/// slot's day, so a late run (after downtime) reports on the day it was due for.
pub struct ReportJob {
    name: String,
    report: Report,
    timing: Timing,
    session: Session,
}

#[async_trait::async_trait]
impl Job for ReportJob {
    fn name(&self) -> &str {
        &self.name
    }

    fn timing(&self) -> &Timing {
        &self.timing
    }

    async fn run(&self, slot: DateTime<Utc>) -> Result<String> {
        let summary =
            run_report(&self.session, &self.report, &[], slot, &Destination::Lake).await?;
        Ok(summary.page)
    }
}

/// A pipeline run once: a `[sink]` pipeline publishes to PostgreSQL, others ingest.
pub struct PipelineJob {
    name: String,
    pipeline: PipelineConfig,
    timing: Timing,
    session: Session,
}

#[async_trait::async_trait]
impl Job for PipelineJob {
    fn name(&self) -> &str {
        &self.name
    }

    fn timing(&self) -> &Timing {
        &self.timing
    }

    async fn run(&self, _slot: DateTime<Utc>) -> Result<String> {
        let lines: Vec<String> = if self.pipeline.sink.is_some() {
            publish_all(&self.session, &self.pipeline)
                .await?
                .iter()
                .map(|r| format!("{}: {} rows published", r.table, r.rows))
                .collect()
        } else {
            run_pipeline(&self.session, &self.pipeline, false)
                .await?
                .iter()
                .map(|r| format!("{}: {} rows", r.table, r.rows))
                .collect()
        };
        Ok(lines.join("; "))
    }
}

/// What `serve --schedule` runs.
pub struct Loaded {
    /// Reports and pipelines with a `schedule`.
    pub jobs: Vec<std::sync::Arc<dyn Job>>,
    /// Pipelines with `follow`, run without end.
    pub followers: Vec<std::sync::Arc<dyn Endless>>,
}

/// The scheduled jobs in a reports folder and a pipelines folder (either may be absent), and
/// the pipelines followed without end (`follow`): files with neither `schedule` nor `follow`
/// are skipped. A file with a mistake is an error naming it.
pub fn load_jobs(
    session: &Session,
    reports: Option<&Path>,
    pipelines: Option<&Path>,
) -> Result<Loaded> {
    let mut jobs: Vec<std::sync::Arc<dyn Job>> = Vec::new();
    let mut followers: Vec<std::sync::Arc<dyn Endless>> = Vec::new();
    if let Some(dir) = reports {
        for report in crate::report::load_all(dir)? {
            if let Some(timing) = report.timing.clone() {
                jobs.push(std::sync::Arc::new(ReportJob {
                    name: format!("report/{}", report.name),
                    report,
                    timing,
                    session: session.clone(),
                }));
            }
        }
    }
    if let Some(dir) = pipelines {
        for path in crate::toml_files::toml_files(dir)? {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            if !runs_on_its_own(&text) {
                // Neither scheduled nor followed: not loaded, so its ${VAR}s need not be set
                // for the server.
                continue;
            }
            let pipeline = PipelineConfig::parse(&text, &path)?;
            let timing = pipeline
                .timing()
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(interval) = pipeline.follow_interval()? {
                followers.push(std::sync::Arc::new(Follower::new(
                    format!("cdc/{stem}"),
                    pipeline,
                    interval,
                    session.clone(),
                )));
            } else if let Some(timing) = timing {
                jobs.push(std::sync::Arc::new(PipelineJob {
                    name: format!("pipeline/{stem}"),
                    pipeline,
                    timing,
                    session: session.clone(),
                }));
            }
        }
    }
    Ok(Loaded { jobs, followers })
}

/// Whether a pipeline file's text sets `schedule` or `follow` at its top level (read before
/// `${VAR}` substitution; text that does not parse counts, so loading it reports the error).
fn runs_on_its_own(text: &str) -> bool {
    match text.parse::<toml::Table>() {
        Ok(table) => table.contains_key("schedule") || table.contains_key("follow"),
        Err(_) => true,
    }
}
