//! What the Delta log says of each file (rows, and each column's min, max and null count), as
//! DataFusion statistics: exact bounds per file for skipping files, inexact bounds for the
//! table so they never stand in for values.

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use serde::Deserialize;

use super::FileEntry;
use crate::error::{Error, Result};
use crate::lake::distinct_counts::DistinctCounts;

/// One file's statistics in the scan's column order (file columns, then partition columns), from
/// the log. The bounds are exact bounds, which is what the Parquet opener needs to skip files by
/// them; a timestamp's maximum is rounded up, because the log keeps milliseconds.
pub(super) fn file_statistics(
    file: &FileEntry,
    file_fields: &[FieldRef],
    partition: &[ScalarValue],
) -> Statistics {
    let rows = file.rows.map_or(Precision::Absent, Precision::Exact);
    let logged: Option<LoggedStats> = file
        .stats
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok());
    let mut columns: Vec<ColumnStatistics> = file_fields
        .iter()
        .map(|field| {
            let byte_size = match (field.data_type().primitive_width(), file.rows) {
                (Some(width), Some(rows)) => Precision::Exact(width * rows),
                _ => Precision::Absent,
            };
            let Some(logged) = &logged else {
                return ColumnStatistics {
                    byte_size,
                    ..ColumnStatistics::new_unknown()
                };
            };
            ColumnStatistics {
                null_count: logged
                    .null_count
                    .get(field.name())
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .map_or(Precision::Absent, Precision::Exact),
                min_value: bound(logged.min_values.get(field.name()), field, Bound::Min),
                max_value: bound(logged.max_values.get(field.name()), field, Bound::Max),
                byte_size,
                ..ColumnStatistics::new_unknown()
            }
        })
        .collect();
    for value in partition {
        columns.push(if value.is_null() {
            ColumnStatistics {
                null_count: rows,
                ..ColumnStatistics::new_unknown()
            }
        } else {
            ColumnStatistics {
                null_count: Precision::Exact(0),
                min_value: Precision::Exact(value.clone()),
                max_value: Precision::Exact(value.clone()),
                distinct_count: Precision::Exact(1),
                ..ColumnStatistics::new_unknown()
            }
        });
    }
    Statistics {
        num_rows: rows,
        total_byte_size: Precision::Inexact(usize::try_from(file.size).unwrap_or(usize::MAX)),
        column_statistics: columns,
    }
}

/// The parts of a Delta `stats` JSON this scan uses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoggedStats {
    #[serde(default)]
    min_values: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    max_values: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    null_count: serde_json::Map<String, serde_json::Value>,
}

/// Which end of a column's range a logged value bounds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    Min,
    Max,
}

/// A logged minimum or maximum as a value of the column's type, when the log has one this scan
/// can trust: numbers, dates, timestamps, strings and booleans. Decimals are left out: the log
/// writes them as JSON numbers, which serde reads as `f64`, and a rounded bound is no bound.
fn bound(logged: Option<&serde_json::Value>, field: &Field, end: Bound) -> Precision<ScalarValue> {
    use datafusion::arrow::datatypes::TimeUnit;
    let text = match logged {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::Bool(b)) => b.to_string(),
        _ => return Precision::Absent,
    };
    if matches!(
        field.data_type(),
        DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    ) {
        return Precision::Absent;
    }
    let Ok(value) = ScalarValue::try_from_string(text, field.data_type()) else {
        return Precision::Absent;
    };
    if value.is_null() {
        return Precision::Absent;
    }
    // The log truncates timestamps to milliseconds: the true maximum may be up to a
    // millisecond minus one unit later.
    let value = match (end, field.data_type(), value) {
        (
            Bound::Max,
            DataType::Timestamp(TimeUnit::Microsecond, _),
            ScalarValue::TimestampMicrosecond(Some(v), tz),
        ) => ScalarValue::TimestampMicrosecond(Some(v.saturating_add(999)), tz),
        (
            Bound::Max,
            DataType::Timestamp(TimeUnit::Nanosecond, _),
            ScalarValue::TimestampNanosecond(Some(v), tz),
        ) => ScalarValue::TimestampNanosecond(Some(v.saturating_add(999_999)), tz),
        (_, _, value) => value,
    };
    Precision::Exact(value)
}

/// Statistics of a set of files: the row count (exact when every file knows its own) and each
/// column's bounds over them. Column statistics are made inexact here: the log's bounds bound
/// the values but are not always values (timestamps rounded to milliseconds, long strings
/// truncated by the Parquet writer), and DataFusion answers `MIN`/`MAX` from exact statistics
/// without reading. Columns `ANALYZE` counted get their distinct values, never more than the
/// files' rows (the count may be from a larger version).
pub(super) fn table_statistics(
    files: &[PartitionedFile],
    schema: &SchemaRef,
    distinct: &DistinctCounts,
) -> Result<Statistics> {
    if files.is_empty() {
        return Ok(Statistics::new_unknown(schema).with_num_rows(Precision::Exact(0)));
    }
    let unknown = Statistics::new_unknown(schema);
    let mut stats = Statistics::try_merge_iter(
        files
            .iter()
            .map(|f| f.statistics.as_deref().unwrap_or(&unknown)),
        schema,
    )
    .map_err(Error::from_datafusion)?;
    stats.column_statistics = stats
        .column_statistics
        .into_iter()
        .map(ColumnStatistics::to_inexact)
        .collect();
    for (field, column) in schema.fields().iter().zip(&mut stats.column_statistics) {
        if let Some(count) = distinct.get(field.name()) {
            let count = usize::try_from(*count).unwrap_or(usize::MAX);
            let count = match stats.num_rows.get_value() {
                Some(rows) => count.min(*rows),
                None => count,
            };
            column.distinct_count = Precision::Inexact(count);
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::Schema;

    use super::*;

    fn entry(stats: &str) -> FileEntry {
        FileEntry {
            path: "part-0.parquet".into(),
            size: 1000,
            partition: vec![],
            rows: Some(10),
            stats: Some(stats.into()),
        }
    }

    #[test]
    fn logged_bounds_become_typed_exact_bounds() {
        use datafusion::arrow::datatypes::{DataType, TimeUnit};
        let fields: Vec<FieldRef> = vec![
            Arc::new(Field::new("id", DataType::Int64, false)),
            Arc::new(Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            )),
            Arc::new(Field::new("day", DataType::Date32, true)),
            Arc::new(Field::new("name", DataType::Utf8View, true)),
            Arc::new(Field::new("price", DataType::Decimal128(10, 2), true)),
            Arc::new(Field::new("unlogged", DataType::Float64, true)),
        ];
        let file = entry(
            r#"{"numRecords":10,"minValues":{"id":-3,"at":"2026-01-01T00:00:00.000Z","day":"2026-01-01","name":"ann","price":1.5},
                "maxValues":{"id":9007199254740993,"at":"2026-01-02T10:00:00.123Z","day":"2026-01-31","name":"zed","price":99.99},
                "nullCount":{"id":0,"at":2,"day":0,"name":1,"price":0}}"#,
        );
        let stats = file_statistics(&file, &fields, &[]);
        assert_eq!(stats.num_rows, Precision::Exact(10));
        let c = &stats.column_statistics;
        assert_eq!(
            c[0].min_value,
            Precision::Exact(ScalarValue::Int64(Some(-3)))
        );
        // Integers beyond f64's precision stay exact.
        assert_eq!(
            c[0].max_value,
            Precision::Exact(ScalarValue::Int64(Some(9007199254740993)))
        );
        assert_eq!(c[0].byte_size, Precision::Exact(80));
        // 10:00:00.123 was logged in milliseconds: the bound covers up to .123999.
        let max_at = "2026-01-02T10:00:00.123999Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap();
        assert_eq!(
            c[1].max_value,
            Precision::Exact(ScalarValue::TimestampMicrosecond(
                Some(max_at.timestamp_micros()),
                Some("UTC".into())
            ))
        );
        assert_eq!(c[1].null_count, Precision::Exact(2));
        assert_eq!(
            c[2].max_value
                .get_value()
                .map(ToString::to_string)
                .as_deref(),
            Some("2026-01-31")
        );
        assert_eq!(
            c[3].min_value,
            Precision::Exact(ScalarValue::Utf8View(Some("ann".into())))
        );
        assert_eq!(
            c[4].min_value,
            Precision::Absent,
            "decimals are not trusted from JSON"
        );
        assert_eq!(c[4].null_count, Precision::Exact(0));
        assert_eq!(c[5].min_value, Precision::Absent);
        assert_eq!(c[5].null_count, Precision::Absent);
    }

    #[test]
    fn partition_columns_are_exact_and_a_null_partition_is_all_nulls() {
        let fields: Vec<FieldRef> = vec![];
        let day = ScalarValue::Utf8(Some("2026-01-01".into()));
        let stats = file_statistics(
            &entry("{}"),
            &fields,
            &[day.clone(), ScalarValue::Utf8(None)],
        );
        assert_eq!(
            stats.column_statistics[0].min_value,
            Precision::Exact(day.clone())
        );
        assert_eq!(stats.column_statistics[0].max_value, Precision::Exact(day));
        assert_eq!(stats.column_statistics[0].null_count, Precision::Exact(0));
        assert_eq!(stats.column_statistics[1].null_count, Precision::Exact(10));
        assert_eq!(stats.column_statistics[1].min_value, Precision::Absent);
    }

    #[test]
    fn table_statistics_keep_exact_rows_and_inexact_bounds() {
        use datafusion::arrow::datatypes::DataType;
        let fields: Vec<FieldRef> = vec![Arc::new(Field::new("id", DataType::Int64, false))];
        let schema: SchemaRef = Arc::new(Schema::new(fields.clone()));
        let files: Vec<PartitionedFile> = [(1, 5), (7, 20)]
            .iter()
            .map(|(lo, hi)| {
                let json = format!(r#"{{"minValues":{{"id":{lo}}},"maxValues":{{"id":{hi}}},"nullCount":{{"id":0}}}}"#);
                let mut f = PartitionedFile::new("f", 1000);
                f.statistics = Some(Arc::new(file_statistics(&entry(&json), &fields, &[])));
                f
            })
            .collect();
        let stats = table_statistics(&files, &schema, &DistinctCounts::new()).unwrap();
        assert_eq!(stats.num_rows, Precision::Exact(20));
        assert_eq!(
            stats.column_statistics[0].min_value,
            Precision::Inexact(ScalarValue::Int64(Some(1)))
        );
        assert_eq!(
            stats.column_statistics[0].max_value,
            Precision::Inexact(ScalarValue::Int64(Some(20)))
        );
        assert_eq!(
            table_statistics(&[], &schema, &DistinctCounts::new())
                .unwrap()
                .num_rows,
            Precision::Exact(0)
        );
        assert_eq!(stats.column_statistics[0].distinct_count, Precision::Absent);
        // Counted columns get their count, at most the files' rows.
        for (counted, expected) in [(12, 12), (500, 20)] {
            let distinct = DistinctCounts::from([("id".to_string(), counted)]);
            let stats = table_statistics(&files, &schema, &distinct).unwrap();
            assert_eq!(
                stats.column_statistics[0].distinct_count,
                Precision::Inexact(expected)
            );
        }
    }
}
