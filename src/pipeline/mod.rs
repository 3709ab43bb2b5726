//! Pipelines: declarative files that copy a source into lake tables, exactly once per run
//! (each commit carries the pipeline's position as a Delta transaction marker).

mod archive;
mod cdc;
mod checks;
pub mod config;
mod files;
mod incremental;
mod migrate;
mod pg_copy;
mod sink;
mod snapshot;
mod sql_files;

pub use archive::archive_table;
pub use cdc::{Step as CdcStep, follow, slot_name};
pub use config::{Mode, PipelineConfig, SinkConfig, SourceConfig, TableConfig, Tinyint1};
pub use incremental::incremental_table;
pub use migrate::{MigrateReport, migrate_all};
pub use sink::{PublishReport, publish};
pub use snapshot::{SnapshotReport, snapshot_table};

use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::query::Session;
use crate::sources::Source;
use crate::sources::mysql::{MySource, TypePolicy};
use crate::sources::postgres::{PgSource, connect};

/// Runs every table of a pipeline once. `full_refresh` copies incremental tables from scratch
/// (e.g. after the source's columns changed); archive tables cannot be refreshed (their old rows
/// are no longer in PostgreSQL).
pub async fn run(
    session: &Session,
    pipeline: &PipelineConfig,
    full_refresh: bool,
) -> Result<Vec<SnapshotReport>> {
    if let SourceConfig::Files { path } = &pipeline.source {
        let mut reports = Vec::new();
        for table in &pipeline.tables {
            reports.push(files::files_table(session, &pipeline.name, path, table).await?);
        }
        return Ok(reports);
    }
    let Some((source, parallelism)) = database(&pipeline.source) else {
        return Err(Error::Invalid(format!(
            "pipeline {} publishes from the lake: run it with publish_all",
            pipeline.name
        )));
    };
    let source = source.as_ref();
    let mut reports = Vec::new();
    // The cdc tables share one slot: they run together, before the others.
    if pipeline.tables.iter().any(|t| t.mode == Mode::Cdc) {
        reports.extend(cdc::cdc_tables(session, pipeline, full_refresh).await?);
    }
    for table in &pipeline.tables {
        let report = match table.mode {
            Mode::Cdc => continue,
            Mode::Incremental => {
                incremental_table(session, source, &pipeline.name, table, full_refresh).await?
            }
            Mode::Archive if full_refresh => {
                return Err(Error::Invalid(format!(
                    "{}: --full-refresh cannot rebuild an archive (its rows were deleted from PostgreSQL); run without it",
                    table.to
                )));
            }
            Mode::Archive => match &pipeline.source {
                SourceConfig::Postgres { url, .. } => {
                    archive_table(session, url.expose(), &pipeline.name, table).await?
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "{}: archive mode is for PostgreSQL sources",
                        table.to
                    )));
                }
            },
            Mode::Snapshot => {
                snapshot_table(session, source, &pipeline.name, table, parallelism, None).await?
            }
            Mode::Migrate => {
                return Err(Error::Invalid(format!(
                    "{}: a migration pipeline runs with migrate_all",
                    table.to
                )));
            }
            Mode::Append | Mode::Replace | Mode::Upsert => {
                return Err(Error::Invalid(format!(
                    "{}: append needs a files source; replace and upsert a [sink]",
                    table.to
                )));
            }
        };
        tracing::info!(
            pipeline = %pipeline.name,
            table = %report.table,
            mode = ?table.mode,
            rows = report.rows,
            seconds = report.seconds,
            outcome = %report.outcome,
            "table ingested"
        );
        reports.push(report);
    }
    Ok(reports)
}

/// Runs every table of a `[sink]` pipeline once: its `run` files over the lake, then its query,
/// whose result is published to its PostgreSQL table; `params` bound in both.
pub async fn publish_all(
    session: &Session,
    pipeline: &PipelineConfig,
) -> Result<Vec<PublishReport>> {
    let Some(SinkConfig::Postgres { url }) = &pipeline.sink else {
        return Err(Error::Invalid(format!(
            "pipeline {} has no [sink]",
            pipeline.name
        )));
    };
    let zone =
        crate::timing::zone_or_default(pipeline.timezone.as_deref()).map_err(Error::Invalid)?;
    let today = chrono::Utc::now().with_timezone(&zone).date_naive();
    let mut reports = Vec::new();
    for table in &pipeline.tables {
        let mut params = crate::query::Params::new();
        for (name, value) in &table.params {
            let value = crate::query::dates::resolve(value, today);
            let (name, scalar) = crate::query::parse_param(&format!("{name}={value}"))?;
            params.insert(name, scalar);
        }
        let session = session.clone().with_params(params);
        for (file, sql) in table.run.iter().zip(&table.run_sql) {
            tracing::info!(pipeline = %pipeline.name, file = %file.display(), "running");
            session.collect_last(sql).await?;
        }
        reports.push(publish(&session, url.expose(), table).await?);
    }
    Ok(reports)
}

/// Checks a pipeline against its source without writing: connects, and maps every column of
/// every table to Arrow (unsupported types are reported with the cast that fixes them).
pub async fn dry_run(pipeline: &PipelineConfig) -> Result<Vec<(String, usize)>> {
    if let Some(SinkConfig::Postgres { url }) = &pipeline.sink {
        connect(url.expose()).await?;
        if !pipeline.is_migration() {
            return Ok(pipeline.tables.iter().map(|t| (t.to.clone(), 0)).collect());
        }
    }
    if let SourceConfig::Files { .. } = &pipeline.source {
        return Ok(pipeline.tables.iter().map(|t| (t.to.clone(), 0)).collect());
    }
    let Some((source, _)) = database(&pipeline.source) else {
        return Err(Error::Invalid(format!(
            "pipeline {} has no [source] and no [sink]",
            pipeline.name
        )));
    };
    let mut out = Vec::new();
    for table in &pipeline.tables {
        let columns = source.describe(&table.read(source.as_ref()).query).await?;
        out.push((table.to.clone(), columns.fields().len()));
    }
    Ok(out)
}

/// The database a pipeline reads and its snapshot parallelism; None for the lake and files.
fn database(config: &SourceConfig) -> Option<(Box<dyn Source>, usize)> {
    match config {
        SourceConfig::Postgres {
            url, parallelism, ..
        } => Some((Box::new(PgSource::new(url.expose())), *parallelism)),
        SourceConfig::Mysql {
            url,
            parallelism,
            tinyint1,
            zero_dates,
        } => {
            let policy = TypePolicy {
                tinyint1_as_int: *tinyint1 == Tinyint1::Int,
                zero_dates: *zero_dates,
            };
            Some((Box::new(MySource::new(url.expose(), policy)), *parallelism))
        }
        SourceConfig::Lake | SourceConfig::Files { .. } => None,
    }
}

/// The source must still have the lake table's columns with the same types; a dropped, renamed,
/// added or retyped column is an error naming it (before anything is written).
pub(crate) async fn check_same_columns(
    session: &Session,
    target: &TableRef,
    source: &datafusion::arrow::datatypes::Schema,
) -> Result<()> {
    use datafusion::arrow::datatypes::DataType;
    // What a type means, not how it is laid out: Delta reads strings back as views and renames
    // a list's item field ("element"), neither of which is a change of the source.
    fn plain(t: &DataType) -> DataType {
        match t {
            DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
            DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
            DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) => {
                DataType::new_list(plain(item.data_type()), true)
            }
            other => other.clone(),
        }
    }
    let lake = session.context().table(target.to_string()).await?;
    let fix = "the source's columns changed; run `gamelake ingest FILE --full-refresh` to copy the table again, or cast in a `query`";
    for field in lake.schema().fields() {
        match source.field_with_name(field.name()).ok() {
            None => {
                return Err(Error::Invalid(format!(
                    "{target}: column \"{}\" is in the lake table but no longer in the source; {fix}",
                    field.name()
                )));
            }
            Some(c) if plain(c.data_type()) != plain(field.data_type()) => {
                return Err(Error::Invalid(format!(
                    "{target}: column \"{}\" is {} in the lake table but {} in the source; {fix}",
                    field.name(),
                    field.data_type(),
                    c.data_type()
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = source
        .fields()
        .iter()
        .find(|c| lake.schema().field_with_unqualified_name(c.name()).is_err())
    {
        return Err(Error::Invalid(format!(
            "{target}: column \"{}\" is new in the source; {fix}",
            extra.name()
        )));
    }
    Ok(())
}
