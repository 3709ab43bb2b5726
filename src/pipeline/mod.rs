//! Pipelines: declarative files that copy a source into lake tables, exactly once per run
//! (each commit carries the pipeline's position as a Delta transaction marker).

mod archive;
pub mod config;
mod incremental;
mod snapshot;

pub use archive::archive_table;
pub use config::{Mode, PipelineConfig, SourceConfig, TableConfig};
pub use incremental::incremental_table;
pub use snapshot::{SnapshotReport, snapshot_table};

use crate::error::Result;
use crate::query::Session;
use crate::sources::postgres::{connect, describe};

/// Runs every table of a pipeline once.
pub async fn run(session: &Session, pipeline: &PipelineConfig) -> Result<Vec<SnapshotReport>> {
    let SourceConfig::Postgres { url, parallelism } = &pipeline.source;
    let mut reports = Vec::new();
    for table in &pipeline.tables {
        reports.push(match table.mode {
            Mode::Incremental => incremental_table(session, url, &pipeline.name, table).await?,
            Mode::Archive => archive_table(session, url, &pipeline.name, table).await?,
            Mode::Snapshot => {
                snapshot_table(session, url, &pipeline.name, table, *parallelism).await?
            }
        });
    }
    Ok(reports)
}

/// Checks a pipeline against its source without writing: connects, and maps every column of
/// every table to Arrow (unsupported types are reported with the cast that fixes them).
pub async fn dry_run(pipeline: &PipelineConfig) -> Result<Vec<(String, usize)>> {
    let SourceConfig::Postgres { url, .. } = &pipeline.source;
    let client = connect(url).await?;
    let mut out = Vec::new();
    for table in &pipeline.tables {
        let columns = describe(&client, &table.source_query()).await?;
        out.push((table.to.clone(), columns.len()));
    }
    Ok(out)
}
