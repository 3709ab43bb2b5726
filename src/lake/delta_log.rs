//! A table's Delta log read as files: which commits and checkpoints `_delta_log/` holds, and
//! which data files each commit brings in or takes out. Replication and `lake verify` work on
//! this level (objects and their sizes), below delta-rs' snapshots, because they must see every
//! version rather than one state.
//!
//! The actions themselves are decoded by delta-rs' own types (`Add`, `AddCDCFile`, `Remove`);
//! only the folder's naming scheme (PROTOCOL.md, "Delta Log Entries") is parsed here.

use std::collections::BTreeMap;

use bytes::Bytes;
use deltalake::kernel::{Add, AddCDCFile, Remove};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use url::Url;

use super::{Lake, TableRef, TableVersion};
use crate::error::{Error, Result};

/// What a table's `_delta_log/` folder holds.
#[derive(Debug, Default)]
pub struct LogListing {
    /// Commit files by version.
    pub commits: BTreeMap<u64, Path>,
    /// Checkpoint files (one, or the parts of a multi-part checkpoint) by version.
    pub checkpoints: BTreeMap<u64, Vec<Path>>,
    /// `_last_checkpoint`, if present.
    pub last_checkpoint: Option<Path>,
}

impl LogListing {
    /// The newest committed version, if any.
    pub fn latest(&self) -> Option<u64> {
        self.commits.keys().next_back().copied()
    }

    /// The newest checkpoint at or below `version`.
    pub fn checkpoint_at_or_below(&self, version: u64) -> Option<(u64, &[Path])> {
        self.checkpoints
            .range(..=version)
            .next_back()
            .map(|(v, parts)| (*v, parts.as_slice()))
    }
}

/// The log folder of a table folder (`schema/table/`).
pub fn log_folder(table_folder: &str) -> Path {
    Path::from(format!("{}_delta_log", table_folder))
}

/// The path of version `version`'s commit file under a table folder.
pub fn commit_path(table_folder: &str, version: u64) -> Path {
    Path::from(format!("{table_folder}_delta_log/{version:020}.json"))
}

/// Lists a table's log. With `after`, only entries that sort after that version's commit file
/// (a follower asks for what is new without listing a month of commits again).
pub async fn list_log(
    store: &dyn ObjectStore,
    table_folder: &str,
    after: Option<u64>,
) -> Result<LogListing> {
    let prefix = log_folder(table_folder);
    let entries: Vec<_> = match after {
        Some(version) => {
            let offset = commit_path(table_folder, version);
            store
                .list_with_offset(Some(&prefix), &offset)
                .try_collect()
                .await?
        }
        None => store.list(Some(&prefix)).try_collect().await?,
    };
    let mut listing = LogListing::default();
    for meta in entries {
        let Some(name) = meta.location.filename() else {
            continue;
        };
        match LogEntry::parse(name) {
            Some(LogEntry::Commit(v)) => {
                listing.commits.insert(v, meta.location);
            }
            Some(LogEntry::Checkpoint(v)) => {
                listing
                    .checkpoints
                    .entry(v)
                    .or_default()
                    .push(meta.location);
            }
            Some(LogEntry::LastCheckpoint) => listing.last_checkpoint = Some(meta.location),
            None => {}
        }
    }
    Ok(listing)
}

/// The kinds of `_delta_log/` entries replication and verification care about (CRC files,
/// temporary files and log compactions are derived or private, and skipped).
#[derive(Debug, PartialEq, Eq)]
enum LogEntry {
    Commit(u64),
    Checkpoint(u64),
    LastCheckpoint,
}

impl LogEntry {
    fn parse(name: &str) -> Option<Self> {
        if name == "_last_checkpoint" {
            return Some(Self::LastCheckpoint);
        }
        let (digits, rest) = name.split_at_checked(20)?;
        let version = digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())??;
        if rest == ".json" {
            Some(Self::Commit(version))
        } else if rest.starts_with(".checkpoint.") && rest.ends_with(".parquet") {
            Some(Self::Checkpoint(version))
        } else {
            None
        }
    }
}

/// A file a version refers to, relative to the table folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// The object's path relative to the table folder.
    pub path: Path,
    /// Its size as the log records it (deletion vector files: the least size the log implies).
    pub size: u64,
    /// Whether the size is exact (data files) or a lower bound (deletion vector files).
    pub exact: bool,
}

impl FileRef {
    /// Whether an object of `actual` bytes is this file as the log records it.
    pub fn fits(&self, actual: u64) -> bool {
        if self.exact {
            actual == self.size
        } else {
            actual >= self.size
        }
    }
}

/// Every file the table's version `version` refers to (its data files and their deletion
/// vectors), as delta-rs loads that version (from a checkpoint when the log has one).
pub async fn files_at(lake: &Lake, table: &TableRef, version: u64) -> Result<Vec<FileRef>> {
    let dt = lake
        .open_table(table, &TableVersion::Version(version))
        .await?;
    let state = dt
        .snapshot()
        .map_err(|e| Error::delta(table.to_string(), e))?;
    let table_url = lake.table_url(table)?;
    let what = format!("{table} version {version}");
    let mut files = Vec::new();
    for file in state.log_data().iter() {
        files.push(FileRef {
            path: file.object_store_path(),
            size: u64::try_from(file.size()).unwrap_or_default(),
            exact: true,
        });
        if let Some(dv) = file.deletion_vector_descriptor() {
            files.extend(deletion_vector_file(dv, &table_url, &what)?);
        }
    }
    Ok(files)
}

/// What one commit does to the table's files.
#[derive(Debug, Default)]
pub struct CommitFiles {
    /// Files the commit adds (data files, change-data files, deletion vectors).
    pub added: Vec<FileRef>,
    /// Data files it removes from the table (they stay until vacuumed).
    pub removed: Vec<Path>,
    /// When it was committed (commitInfo.timestamp, milliseconds since the epoch).
    pub timestamp_ms: Option<i64>,
}

/// Decodes a commit file: its add, cdc and remove actions, and its time.
pub fn parse_commit(bytes: &Bytes, table_url: &Url, what: &str) -> Result<CommitFiles> {
    let bad = |reason: String| Error::Invalid(format!("{what}: {reason}"));
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let mut files = CommitFiles::default();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let action: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| bad(format!("line {}: {e}", number + 1)))?;
        for (kind, value) in action {
            let decode_failed =
                |e: serde_json::Error| bad(format!("line {}: {kind}: {e}", number + 1));
            match kind.as_str() {
                "add" => {
                    let add: Add = serde_json::from_value(value).map_err(decode_failed)?;
                    files.added.push(data_file(&add.path, add.size, what)?);
                    if let Some(dv) = add.deletion_vector {
                        files
                            .added
                            .extend(deletion_vector_file(dv, table_url, what)?);
                    }
                }
                "cdc" => {
                    let cdc: AddCDCFile = serde_json::from_value(value).map_err(decode_failed)?;
                    files.added.push(data_file(&cdc.path, cdc.size, what)?);
                }
                "remove" => {
                    let remove: Remove = serde_json::from_value(value).map_err(decode_failed)?;
                    files.removed.push(object_path(&remove.path));
                }
                "commitInfo" => {
                    files.timestamp_ms = value.get("timestamp").and_then(|t| t.as_i64());
                }
                _ => {}
            }
        }
    }
    Ok(files)
}

/// A data file of an add or cdc action.
fn data_file(path: &str, size: i64, what: &str) -> Result<FileRef> {
    if path.contains("://") {
        return Err(Error::Unsupported(format!(
            "{what}: data file {path} lives outside the table's folder (a shallow clone?); only files under the table are copied and checked"
        )));
    }
    Ok(FileRef {
        path: object_path(path),
        size: u64::try_from(size).unwrap_or_default(),
        exact: true,
    })
}

/// The file a deletion vector is stored in, when it is not inline in the log.
fn deletion_vector_file(
    dv: deltalake::kernel::DeletionVectorDescriptor,
    table_url: &Url,
    what: &str,
) -> Result<Option<FileRef>> {
    let least_size = u64::try_from(dv.offset.unwrap_or(0)).unwrap_or_default()
        + u64::try_from(dv.size_in_bytes).unwrap_or_default();
    let dv = delta_kernel::actions::deletion_vector::DeletionVectorDescriptor::try_from(dv)
        .map_err(|e| Error::Invalid(format!("{what}: deletion vector: {e}")))?;
    let Some(url) = dv
        .absolute_path(table_url)
        .map_err(|e| Error::Invalid(format!("{what}: deletion vector: {e}")))?
    else {
        return Ok(None);
    };
    match table_url.make_relative(&url) {
        Some(relative) if !relative.starts_with("../") => Ok(Some(FileRef {
            path: object_path(&relative),
            size: least_size,
            exact: false,
        })),
        _ => Err(Error::Unsupported(format!(
            "{what}: deletion vector {url} lives outside the table's folder; only files under the table are copied and checked"
        ))),
    }
}

/// An object path from a path as the log writes it (percent-encoded), decoded and re-encoded
/// the way delta-rs' readers open the file.
pub fn object_path(raw: &str) -> Path {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    Path::parse(decoded.as_ref()).unwrap_or_else(|_| Path::from(decoded.as_ref()))
}

/// Joins a path relative to a table folder onto the folder.
pub fn in_table(table_folder: &str, relative: &Path) -> Path {
    Path::from_iter(Path::from(table_folder).parts().chain(relative.parts()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_are_told_apart() {
        let v = "00000000000000000012";
        assert_eq!(
            LogEntry::parse(&format!("{v}.json")),
            Some(LogEntry::Commit(12))
        );
        assert_eq!(
            LogEntry::parse(&format!("{v}.checkpoint.parquet")),
            Some(LogEntry::Checkpoint(12))
        );
        assert_eq!(
            LogEntry::parse(&format!("{v}.checkpoint.0000000001.0000000002.parquet")),
            Some(LogEntry::Checkpoint(12))
        );
        assert_eq!(
            LogEntry::parse("_last_checkpoint"),
            Some(LogEntry::LastCheckpoint)
        );
        assert_eq!(LogEntry::parse(&format!("{v}.crc")), None);
        assert_eq!(LogEntry::parse(&format!(".{v}.json.tmp")), None);
        assert_eq!(LogEntry::parse("0000000000000000001x.json"), None);
    }

    #[test]
    fn commits_name_their_files_and_time() {
        let url = Url::parse("s3://bucket/lake/game/t/").unwrap();
        let commit = Bytes::from(concat!(
            r#"{"commitInfo":{"timestamp":1700000000000,"operation":"WRITE"}}"#,
            "\n",
            r#"{"add":{"path":"day=2026-01-01/part%20one.parquet","partitionValues":{"day":"2026-01-01"},"size":123,"modificationTime":1,"dataChange":true}}"#,
            "\n",
            r#"{"remove":{"path":"day=2025-12-31/old.parquet","dataChange":true}}"#,
            "\n",
            r#"{"txn":{"appId":"p","version":3}}"#,
        ));
        let files = parse_commit(&commit, &url, "v1").unwrap();
        assert_eq!(files.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(files.added.len(), 1);
        assert_eq!(files.added[0].size, 123);
        assert_eq!(
            files.added[0].path.as_ref(),
            "day=2026-01-01/part one.parquet"
        );
        assert_eq!(files.removed[0].as_ref(), "day=2025-12-31/old.parquet");
        let err = parse_commit(&Bytes::from("{not json"), &url, "v2")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("v2: line 1"), "{err}");
    }
}
