//! `[source] kind = "files"`: log files (NDJSON, JSON arrays, or CSV with a header row when
//! named `.csv`; gzip when named `.gz`) on a local disk or S3 go through the same record → row
//! path as the log intake, each file exactly once.
//!
//! Each file is its own commit, marked with the transaction `(gamelake:<pipeline>:file:<path>,
//! 1)`: a rerun skips the files the table records. As in the intake, a file's rejected records
//! are committed to `<schema>._rejected` first (with the same marker), so a crash between the
//! two commits is finished by the rerun without duplicating either.

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::config::TableConfig;
use super::snapshot::SnapshotReport;
use crate::error::{Error, Result};
use crate::lake::layout::TableLayout;
use crate::lake::write::{
    WriteMode, WriteOptions, WriteOutcome, transaction_version, write_batches,
};
use crate::lake::{LakeLocation, REJECTED, TableRef};
use crate::query::Session;
use crate::records::body::{gunzip, lines};
use crate::records::csv::csv_records;
use crate::records::{DAY, Rejected, build_rows, rejected_batch};

/// A decompressed file larger than this is refused (it would be held in memory whole).
const MAX_FILE_BYTES: usize = 2 << 30;

/// Commits every file matching `pattern` that `table` does not record yet.
pub async fn files_table(
    session: &Session,
    pipeline: &str,
    pattern: &str,
    table: &TableConfig,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let target = TableRef::parse(&table.to)?;
    let (store, base, glob) = open(pattern)?;
    let mut files: Vec<StorePath> = store
        .list(None)
        .map_ok(|meta| meta.location)
        .try_filter(|path| {
            let options = glob::MatchOptions {
                require_literal_separator: true,
                ..Default::default()
            };
            futures::future::ready(glob.matches_with(path.as_ref(), options))
        })
        .try_collect()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot list {base}: {e}")))?;
    files.sort();
    let lake = session.lake();
    let state = session.write_state();
    let settings = table.row_rules();
    let bar = crate::progress::bar(
        files.len() as u64,
        "files",
        &format!("{} <- {pattern}", table.to),
    );
    let mut layout = table.layout();
    if layout.partition_by.is_empty() {
        layout.partition_by = vec![DAY.to_string()];
    }
    let (mut rows, mut skipped, mut last) = (0usize, 0usize, None);
    for file in &files {
        bar.inc(1);
        let app_id = format!("gamelake:{pipeline}:file:{base}{file}");
        if transaction_version(lake, &target, &app_id).await?.is_some() {
            skipped += 1;
            continue;
        }
        let bytes = store
            .get(file)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot read {base}{file}: {e}")))?
            .bytes()
            .await
            .map_err(|e| Error::Unavailable(format!("cannot read {base}{file}: {e}")))?;
        let unzipped;
        let text: &[u8] = if file.as_ref().ends_with(".gz") {
            unzipped = gunzip(&bytes, MAX_FILE_BYTES)
                .map_err(|e| Error::Invalid(format!("{base}{file}: {e:?}")))?;
            &unzipped
        } else {
            &bytes
        };
        let existing = lake.table_schema(&target).await?;
        let received_at = chrono::Utc::now().timestamp_micros();
        let csv = file.as_ref().trim_end_matches(".gz").ends_with(".csv");
        let (csv_rows, unreadable) = if csv {
            csv_records(text, &settings.columns)
        } else {
            (Vec::new(), Vec::new())
        };
        let records = if csv {
            csv_rows.iter().map(Vec::as_slice).collect()
        } else {
            split_records(text)
        };
        let records: Vec<(i64, &[u8])> = records.into_iter().map(|r| (received_at, r)).collect();
        let options = |layout| WriteOptions {
            mode: WriteMode::Append,
            layout: Some(layout),
            transaction: Some((app_id.clone(), 1)),
            merge_schema: true,
            checkpoint: true,
        };
        let (batch, mut rejected) = build_rows(&settings, existing.as_deref(), &records)?;
        rejected.extend(unreadable.into_iter().map(|(reason, record)| Rejected {
            table: table.to.clone(),
            received_at,
            reason: format!("{base}{file}: {reason}"),
            record,
        }));
        if !rejected.is_empty() {
            let table = TableRef::new(target.schema.clone(), REJECTED)?;
            let batch = rejected_batch(&rejected)?;
            let layout = TableLayout::partitioned_by(&[DAY]);
            write_batches(lake, &table, &state, vec![batch], options(layout)).await?;
        }
        let Some(batch) = batch else {
            continue;
        };
        let n = batch.num_rows();
        let outcome =
            write_batches(lake, &target, &state, vec![batch], options(layout.clone())).await?;
        if let WriteOutcome::Committed { .. } = outcome {
            rows += n;
        }
        last = Some(outcome);
    }
    bar.finish_and_clear();
    eprintln!(
        "{}: {} files matched, {} already committed, {} new",
        table.to,
        files.len(),
        skipped,
        files.len() - skipped
    );
    Ok(SnapshotReport {
        table: table.to.clone(),
        rows,
        seconds: started.elapsed().as_secs_f64(),
        outcome: last.unwrap_or(WriteOutcome::AlreadyCommitted { recorded: 1 }),
    })
}

/// A file's records, borrowed: the elements of a JSON array, else its non-empty lines (a line
/// that is not a JSON object is rejected with the reason when it is built).
fn split_records(text: &[u8]) -> Vec<&[u8]> {
    let trimmed = text.trim_ascii();
    if trimmed.starts_with(b"[")
        && let Ok(array) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(trimmed)
    {
        return array.iter().map(|r| r.get().as_bytes()).collect();
    }
    lines(text)
}

/// The store holding the files, its URL, and the glob for paths relative to it.
fn open(pattern: &str) -> Result<(Arc<dyn ObjectStore>, String, glob::Pattern)> {
    let magic = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    let cut = pattern[..magic].rfind('/').map(|i| i + 1).unwrap_or(0);
    let (base, relative) = pattern.split_at(cut);
    let base = if base.is_empty() { "." } else { base };
    let location = LakeLocation::parse(base)?;
    let glob = glob::Pattern::new(relative).map_err(|e| {
        Error::Invalid(format!(
            "path = \"{pattern}\" is not a glob ({e}); write e.g. \"/data/logs/*.ndjson.gz\""
        ))
    })?;
    let url = location.url().to_string();
    Ok((location.object_store()?, url, glob))
}
