//! A table's commit history, read from its Delta log, as Arrow rows.
//!
//! delta-rs's `history()` skips commits without `commitInfo` and carries no version numbers, so
//! this reads each commit file itself: the version is the file's, and `txn` markers (pipeline
//! positions) and file counts are shown too.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::DeltaTable;
use serde_json::Value;

use crate::error::{Error, Result};

/// One commit of a table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Commit {
    /// The table version this commit created.
    pub version: u64,
    /// Commit time, milliseconds since the epoch (from `commitInfo`).
    pub timestamp_ms: Option<i64>,
    /// The operation, e.g. `WRITE`, `CREATE TABLE`, `DELETE`, `OPTIMIZE`.
    pub operation: Option<String>,
    /// The operation's parameters, as JSON text.
    pub parameters: Option<String>,
    /// Rows added, when the writer recorded it.
    pub rows_added: Option<i64>,
    /// Data files added.
    pub files_added: i64,
    /// Data files removed.
    pub files_removed: i64,
    /// Application transaction marker `app_id=version` (pipeline position), if any.
    pub txn: Option<String>,
    /// The writer, e.g. `delta-rs:1.1.2` or `Apache-Spark/3.5`.
    pub engine: Option<String>,
}

/// The schema of [`history_batch`].
pub fn history_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("operation", DataType::Utf8, true),
        Field::new("parameters", DataType::Utf8, true),
        Field::new("rows_added", DataType::Int64, true),
        Field::new("files_added", DataType::Int64, false),
        Field::new("files_removed", DataType::Int64, false),
        Field::new("txn", DataType::Utf8, true),
        Field::new("engine", DataType::Utf8, true),
    ]))
}

/// Reads up to `limit` commits, newest first, stopping at the oldest log file still kept.
pub async fn read_history(
    table: &DeltaTable,
    name: &str,
    limit: Option<usize>,
) -> Result<Vec<Commit>> {
    let Some(latest) = table.version() else {
        return Ok(Vec::new());
    };
    let log_store = table.log_store();
    let mut commits = Vec::new();
    let mut next = Some(latest);
    while let Some(version) = next
        && limit.is_none_or(|l| commits.len() < l)
    {
        let Some(bytes) = log_store
            .read_commit_entry(version)
            .await
            .map_err(|e| Error::delta(name, e))?
        else {
            break;
        };
        commits.push(parse_commit(version, &bytes));
        next = version.checked_sub(1);
    }
    Ok(commits)
}

/// Parses one commit file (newline-delimited JSON actions).
fn parse_commit(version: u64, bytes: &[u8]) -> Commit {
    let mut commit = Commit {
        version,
        ..Default::default()
    };
    for line in String::from_utf8_lossy(bytes).lines() {
        let Ok(Value::Object(action)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(info) = action.get("commitInfo") {
            commit.timestamp_ms = info
                .get("inCommitTimestamp")
                .or_else(|| info.get("timestamp"))
                .and_then(Value::as_i64);
            commit.operation = info
                .get("operation")
                .and_then(Value::as_str)
                .map(String::from);
            commit.parameters = info.get("operationParameters").map(Value::to_string);
            commit.engine = info
                .get("engineInfo")
                .or_else(|| info.get("clientVersion"))
                .and_then(Value::as_str)
                .map(String::from);
            commit.rows_added = info.get("operationMetrics").and_then(|m| {
                ["num_added_rows", "numOutputRows", "num_output_rows"]
                    .iter()
                    .find_map(|k| m.get(*k))
                    .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
            });
        } else if action.contains_key("add") {
            commit.files_added += 1;
        } else if action.contains_key("remove") {
            commit.files_removed += 1;
        } else if let Some(txn) = action.get("txn") {
            let app = txn.get("appId").and_then(Value::as_str).unwrap_or("?");
            let v = txn.get("version").and_then(Value::as_i64).unwrap_or(-1);
            commit.txn = Some(format!("{app}={v}"));
        }
    }
    commit
}

/// Commits as a record batch with [`history_schema`].
pub fn history_batch(commits: &[Commit]) -> Result<RecordBatch> {
    let mut version = Int64Builder::new();
    let mut ts = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut op = StringBuilder::new();
    let mut params = StringBuilder::new();
    let mut rows = Int64Builder::new();
    let mut added = Int64Builder::new();
    let mut removed = Int64Builder::new();
    let mut txn = StringBuilder::new();
    let mut engine = StringBuilder::new();
    for c in commits {
        version.append_value(i64::try_from(c.version).unwrap_or(i64::MAX));
        ts.append_option(c.timestamp_ms);
        op.append_option(c.operation.as_deref());
        params.append_option(c.parameters.as_deref());
        rows.append_option(c.rows_added);
        added.append_value(c.files_added);
        removed.append_value(c.files_removed);
        txn.append_option(c.txn.as_deref());
        engine.append_option(c.engine.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(version.finish()),
        Arc::new(ts.finish()),
        Arc::new(op.finish()),
        Arc::new(params.finish()),
        Arc::new(rows.finish()),
        Arc::new(added.finish()),
        Arc::new(removed.finish()),
        Arc::new(txn.finish()),
        Arc::new(engine.finish()),
    ];
    Ok(RecordBatch::try_new(history_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_of_a_commit() {
        let log = br#"{"commitInfo":{"timestamp":1700000000000,"operation":"WRITE","operationParameters":{"mode":"Append"},"operationMetrics":{"num_added_rows":5},"engineInfo":"delta-rs:1"}}
{"txn":{"appId":"oltp","version":7}}
{"add":{"path":"a.parquet"}}
{"add":{"path":"b.parquet"}}
{"remove":{"path":"c.parquet"}}"#;
        let c = parse_commit(3, log);
        assert_eq!(c.version, 3);
        assert_eq!(c.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(c.operation.as_deref(), Some("WRITE"));
        assert_eq!(c.rows_added, Some(5));
        assert_eq!((c.files_added, c.files_removed), (2, 1));
        assert_eq!(c.txn.as_deref(), Some("oltp=7"));
        assert_eq!(history_batch(&[c]).unwrap().num_rows(), 1);
    }
}
