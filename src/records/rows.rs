//! Records → Arrow rows of one table, and the reasons for those that cannot be rows
//! ([`super::rejected`]); column types in [`super::columns`], record parsing in `fields.rs`.
//!
//! Every table gets three columns from the intake: `event_time` (from the configured time
//! field, or the time of receipt), `received_at`, and `day` (the event's day in the table's
//! zone, the partition column). A record's fields become columns of the types declared in the
//! config or already in the table; a new field becomes a nullable column of the type of its
//! first non-null value (objects and arrays are kept as JSON text), unless the table says
//! `new_fields = "reject"`. Hand-built with arrow's builders rather than arrow-json's decoder
//! because each record must be judged alone: arrow-json fails a whole batch on one bad value.
//! Fields are read as raw JSON text (no `serde_json::Value` tree), which keeps the committer
//! ahead of the intake.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::array::timezone::Tz;
use arrow::datatypes::{Field, Schema, SchemaRef};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::value::RawValue;

use super::columns::{Builder, Cell, Kind, parse_rfc3339};
use super::fields::{Fields, shown, unquote};
use super::rejected::Rejected;
use super::rules::{NewFields, RowRules, TimeFormat};
use super::{DAY, EVENT_TIME, RECEIVED_AT};
use crate::error::{Error, Result};

const DAYS_FROM_CE_TO_1970: i32 = 719_163;

struct Column {
    field: Field,
    kind: Kind,
    builder: Builder,
}

/// Turns one table's records into a batch with the table's columns (and any new ones).
pub struct RowBuilder<'a> {
    config: &'a RowRules,
    zone: Tz,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    rows: usize,
    /// The records that could not be rows.
    pub rejected: Vec<Rejected>,
}

impl<'a> RowBuilder<'a> {
    /// Starts a batch for `config`'s table, whose current schema is `existing` (None: new table).
    pub fn new(config: &'a RowRules, existing: Option<&Schema>) -> Result<Self> {
        let zone = zone(config)?;
        let mut builder = Self {
            config,
            zone,
            columns: Vec::new(),
            index: HashMap::new(),
            rows: 0,
            rejected: Vec::new(),
        };
        if let Some(schema) = existing {
            for field in schema.fields() {
                let kind = Kind::of_arrow(field.data_type()).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "{}: column {} has type {}, which the log intake cannot write; use bigint, double, text, boolean or timestamp columns",
                        config.name, field.name(), field.data_type()
                    ))
                })?;
                builder.add(field.as_ref().clone(), kind);
            }
        }
        for (name, kind) in [
            (EVENT_TIME, Kind::Timestamp),
            (RECEIVED_AT, Kind::Timestamp),
            (DAY, Kind::Date),
        ] {
            if !builder.index.contains_key(name) {
                builder.add(Field::new(name, kind.arrow(), true), kind);
            }
        }
        for (name, type_name) in &config.columns {
            if !builder.index.contains_key(name) {
                let kind = declared_kind(config, name, type_name)?;
                builder.add(Field::new(name, kind.arrow(), true), kind);
            }
        }
        Ok(builder)
    }

    fn add(&mut self, field: Field, kind: Kind) {
        self.index.insert(field.name().clone(), self.columns.len());
        self.columns.push(Column {
            field,
            kind,
            builder: Builder::new(kind, self.rows),
        });
    }

    /// Adds one record: a row, or a rejection with the reason.
    pub fn push(&mut self, received_at: i64, record: &[u8]) {
        if let Err(reason) = self.try_push(received_at, record) {
            self.rejected.push(Rejected {
                table: self.config.name.clone(),
                received_at,
                reason,
                record: String::from_utf8_lossy(record).into_owned(),
            });
        }
    }

    fn try_push(&mut self, received_at: i64, record: &[u8]) -> std::result::Result<(), String> {
        let fields: Fields = serde_json::from_slice(record).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => format!("not a JSON object: {e}"),
            _ => format!("invalid JSON: {e}"),
        })?;
        let time_field = self.config.time_field.as_deref();
        let event_time = match time_field {
            Some(name) => match fields.get(name).map(RawValue::get) {
                None | Some("null") => return Err(format!("missing time field '{name}'")),
                Some(raw) => parse_time(raw, self.config.time_format).ok_or_else(|| {
                    format!(
                        "time field '{name}': {} is not {}",
                        shown(raw),
                        format_name(self.config.time_format)
                    )
                })?,
            },
            None => received_at,
        };
        for name in &self.config.required {
            if fields.get(name).is_none_or(|v| v.get() == "null") {
                return Err(format!("missing required field '{name}'"));
            }
        }
        let mut cells: Vec<Option<Cell>> = (0..self.columns.len()).map(|_| None).collect();
        let mut new_columns: Vec<(&str, Kind, Cell)> = Vec::new();
        for (name, raw) in &fields.0 {
            let (name, raw) = (name.as_ref(), raw.get());
            if Some(name) == time_field {
                continue;
            }
            if matches!(name, EVENT_TIME | RECEIVED_AT | DAY) {
                return Err(format!(
                    "field '{name}' is reserved (the intake fills it); rename it in the sender"
                ));
            }
            match self.index.get(name) {
                Some(&i) => {
                    cells[i] = self.columns[i]
                        .kind
                        .cell(raw)
                        .map_err(|e| format!("field '{name}': {e}"))?;
                }
                None => {
                    let Some(kind) = Kind::infer(raw) else {
                        continue; // null: no column until a value shows its type
                    };
                    let known = self.index.keys().map(String::as_str);
                    column_name(name, known.chain(new_columns.iter().map(|(n, _, _)| *n)))?;
                    if self.config.new_fields == NewFields::Reject {
                        return Err(format!(
                            "field '{name}' is not a column of {} (its new_fields = \"reject\")",
                            self.config.name
                        ));
                    }
                    if let Ok(Some(cell)) = kind.cell(raw) {
                        new_columns.push((name, kind, cell));
                    }
                }
            }
        }
        cells[self.index[EVENT_TIME]] = Some(Cell::Micros(event_time));
        cells[self.index[RECEIVED_AT]] = Some(Cell::Micros(received_at));
        cells[self.index[DAY]] = Some(Cell::Day(day_in(&self.zone, event_time)));
        for (column, cell) in self.columns.iter_mut().zip(cells) {
            column.builder.push(cell);
        }
        for (name, kind, cell) in new_columns {
            if self.index.contains_key(name) {
                continue; // a duplicate key in the record
            }
            self.add(Field::new(name, kind.arrow(), true), kind);
            if let Some(column) = self.columns.last_mut() {
                column.builder.push(Some(cell));
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows so far (None if every record was rejected), in the table's column types.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut arrays = Vec::with_capacity(self.columns.len());
        for column in &mut self.columns {
            let built = column.builder.finish();
            let array = if built.data_type() == column.field.data_type() {
                built
            } else {
                arrow::compute::cast(&built, column.field.data_type())?
            };
            fields.push(column.field.clone());
            arrays.push(array);
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        Ok(Some(RecordBatch::try_new(schema, arrays)?))
    }
}

/// Turns records `(received_at, JSON text)` into one batch and the rejections, on two threads
/// when there are many. Each half gets its own builder; the halves agree with what one builder
/// would make when their columns came out equal (or one half kept no row: it then learned no
/// column), otherwise the records are built again on one thread.
pub fn build_rows(
    config: &RowRules,
    existing: Option<&Schema>,
    records: &[(i64, &[u8])],
) -> Result<(Option<RecordBatch>, Vec<Rejected>)> {
    let one = |part: &[(i64, &[u8])]| -> Result<(Option<RecordBatch>, Vec<Rejected>)> {
        let mut builder = RowBuilder::new(config, existing)?;
        for (received_at, record) in part {
            builder.push(*received_at, record);
        }
        Ok((builder.finish()?, std::mem::take(&mut builder.rejected)))
    };
    if records.len() < 20_000 {
        return one(records);
    }
    let (first, second) = records.split_at(records.len() / 2);
    let (a, b) = std::thread::scope(|scope| {
        let other = scope.spawn(|| one(second));
        (one(first), other.join())
    });
    let ((x, mut rejected), (y, more)) = match (a, b) {
        (Ok(a), Ok(Ok(b))) => (a, b),
        _ => return one(records),
    };
    rejected.extend(more);
    let batch = match (x, y) {
        (Some(x), Some(y)) if x.schema() == y.schema() => {
            Some(arrow::compute::concat_batches(&x.schema(), [&x, &y])?)
        }
        (Some(_), Some(_)) => return one(records),
        (x, None) => x,
        (None, y) => y,
    };
    Ok((batch, rejected))
}

/// Characters Delta Lake refuses in a column name (without column mapping): Parquet's
/// separators and whitespace.
const REFUSED_IN_NAMES: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '='];

/// Whether a new field can be a column of the table: Delta refuses some characters, and names
/// that differ from a column only in case (its names are case-insensitive). A field that
/// cannot is a rejected record, so it never reaches (and stops) the commit.
fn column_name<'a>(
    name: &str,
    mut columns: impl Iterator<Item = &'a str>,
) -> std::result::Result<(), String> {
    if name.is_empty() || name.contains(REFUSED_IN_NAMES) || name.chars().any(char::is_control) {
        return Err(format!(
            "field name {name:?} cannot be a column (Delta Lake refuses empty names, control characters and any of {:?}); rename it in the sender",
            REFUSED_IN_NAMES.iter().collect::<String>()
        ));
    }
    if let Some(column) = columns.find(|c| c.eq_ignore_ascii_case(name)) {
        return Err(format!(
            "field '{name}' differs from column '{column}' only in case (column names are case-insensitive); rename it in the sender"
        ));
    }
    Ok(())
}

/// Checks a table's rules (zone, declared types) without data.
pub fn check_rules(config: &RowRules) -> Result<()> {
    zone(config)?;
    for (name, type_name) in &config.columns {
        declared_kind(config, name, type_name)?;
    }
    Ok(())
}

fn declared_kind(config: &RowRules, name: &str, type_name: &str) -> Result<Kind> {
    if matches!(name, EVENT_TIME | RECEIVED_AT | DAY) {
        return Err(Error::Invalid(format!(
            "[[intake.tables]] {}: column {name} is filled by the intake; remove it from columns",
            config.name
        )));
    }
    Kind::parse(type_name).ok_or_else(|| {
        Error::Invalid(format!(
            "[[intake.tables]] {}: column {name} has type '{type_name}'; use bigint, double, text, boolean, timestamp or json",
            config.name
        ))
    })
}

fn zone(config: &RowRules) -> Result<Tz> {
    crate::timing::zone_or_default(config.timezone.as_deref())
        .map_err(|e| Error::Invalid(format!("[[intake.tables]] {}: {e}", config.name)))
}

/// The day (since 1970) that `micros` falls on in `zone`.
fn day_in(zone: &Tz, micros: i64) -> i32 {
    let utc = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
    let local = zone.from_utc_datetime(&utc.naive_utc());
    chrono::Datelike::num_days_from_ce(&local.date_naive()) - DAYS_FROM_CE_TO_1970
}

/// An event time (the field's JSON text) in microseconds since 1970.
fn parse_time(raw: &str, format: TimeFormat) -> Option<i64> {
    let number = || match unquote(raw) {
        Some(text) => text.trim().parse::<f64>().ok(),
        None => raw.parse::<f64>().ok(),
    };
    let micros = match format {
        TimeFormat::Rfc3339 => return unquote(raw).and_then(|s| parse_rfc3339(&s)),
        TimeFormat::EpochS => number()? * 1e6,
        TimeFormat::EpochMs => number()? * 1e3,
        TimeFormat::EpochUs => number()?,
    };
    // Beyond ±290,000 years a microsecond count overflows.
    (micros.is_finite() && micros.abs() < 9.2e18).then(|| micros.round() as i64)
}

fn format_name(format: TimeFormat) -> &'static str {
    match format {
        TimeFormat::Rfc3339 => "an RFC 3339 time such as \"2026-11-25T08:00:00+08:00\"",
        TimeFormat::EpochS => "seconds since 1970",
        TimeFormat::EpochMs => "milliseconds since 1970",
        TimeFormat::EpochUs => "microseconds since 1970",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    use arrow::datatypes::{Date32Type, Int64Type};

    fn table(extra: &str) -> RowRules {
        toml::from_str(&format!(
            "name = \"logs.events\"\ntime_field = \"time\"\nrequired = [\"player\"]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn rows_get_event_time_day_in_zone_and_new_columns() {
        let config = table("columns = { player = \"bigint\" }");
        let mut rows = RowBuilder::new(&config, None).unwrap();
        // 2026-11-25T20:00:00Z is already the 26th in UTC+8.
        rows.push(1, br#"{"time":"2026-11-25T20:00:00Z","player":7}"#);
        rows.push(
            2,
            br#"{"time":"2026-11-25T10:00:00+08:00","player":8,"map":"desert","stats":{"hp":3}}"#,
        );
        assert!(rows.rejected.is_empty(), "{:?}", rows.rejected);
        let batch = rows.finish().unwrap().unwrap();
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["event_time", "received_at", "day", "player", "map", "stats"]
        );
        let day = batch.column(2).as_primitive::<Date32Type>();
        assert_eq!(day.value(0) - day.value(1), 1);
        assert_eq!(
            batch.column(3).as_primitive::<Int64Type>().values(),
            &[7, 8]
        );
        let map = batch.column(4).as_string::<i32>();
        assert!(map.is_null(0));
        assert_eq!(map.value(1), "desert");
        assert_eq!(batch.column(5).as_string::<i32>().value(1), r#"{"hp":3}"#);
    }

    #[test]
    fn field_names_delta_refuses_are_rejected_records() {
        let config = table("columns = { player = \"bigint\" }");
        let mut rows = RowBuilder::new(&config, None).unwrap();
        rows.push(1, br#"{"time":"2026-11-25T20:00:00Z","player":1,"a b":2}"#);
        rows.push(
            2,
            br#"{"time":"2026-11-25T20:00:00Z","player":2,"Player":3}"#,
        );
        rows.push(
            3,
            br#"{"time":"2026-11-25T20:00:00Z","player":3,"x":1,"X":2}"#,
        );
        rows.push(
            4,
            br#"{"time":"2026-11-25T20:00:00Z","player":4,"ok":true}"#,
        );
        let reasons: Vec<&str> = rows.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("cannot be a column"), "{reasons:?}");
        assert!(reasons[1].contains("only in case"), "{reasons:?}");
        assert!(reasons[2].contains("only in case"), "{reasons:?}");
        let batch = rows.finish().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 1);
    }

    #[test]
    fn bad_records_are_rejected_with_the_reason_and_the_rest_kept() {
        let config = table("columns = { player = \"bigint\" }\nnew_fields = \"reject\"");
        let mut rows = RowBuilder::new(&config, None).unwrap();
        let cases: [(&[u8], &str); 7] = [
            (br#"{"time":"2026-11-25T20:00:00Z","player":1}"#, ""),
            (
                br#"{"time":"2026-11-25T20:00:00Z","player":"one"}"#,
                "field 'player': expected bigint, got \"one\"",
            ),
            (br#"{"player":1}"#, "missing time field 'time'"),
            (
                br#"{"time":"yesterday","player":1}"#,
                "time field 'time': \"yesterday\" is not an RFC 3339",
            ),
            (
                br#"{"time":"2026-11-25T20:00:00Z"}"#,
                "missing required field 'player'",
            ),
            (
                br#"{"time":"2026-11-25T20:00:00Z","player":1,"extra":true}"#,
                "field 'extra' is not a column",
            ),
            (
                br#"{"time":"2026-11-25T20:00:00Z","player":1"#,
                "invalid JSON",
            ),
        ];
        for (record, _) in &cases {
            rows.push(5, record);
        }
        let batch = rows.finish().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(rows.rejected.len(), cases.len() - 1);
        for (rejected, (record, reason)) in rows.rejected.iter().zip(&cases[1..]) {
            assert!(
                rejected.reason.starts_with(reason),
                "{} vs {reason}",
                rejected.reason
            );
            assert_eq!(rejected.record.as_bytes(), *record);
            assert_eq!(rejected.received_at, 5);
        }
    }

    #[test]
    fn epoch_times_and_existing_column_types() {
        let config = table("time_format = \"epoch_s\"\ntimezone = \"UTC\"");
        let existing = Schema::new(vec![
            Field::new("event_time", Kind::Timestamp.arrow(), true),
            Field::new("received_at", Kind::Timestamp.arrow(), true),
            Field::new("day", DataType::Date32, true),
            Field::new("player", DataType::Int32, true),
        ]);
        let mut rows = RowBuilder::new(&config, Some(&existing)).unwrap();
        rows.push(0, br#"{"time":1764100800.25,"player":3}"#);
        let batch = rows.finish().unwrap().unwrap();
        assert_eq!(batch.schema().field(3).data_type(), &DataType::Int32);
        let time = batch
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(time.value(0), 1_764_100_800_250_000);
    }

    #[test]
    fn escapes_numbers_and_non_objects() {
        let config = table("timezone = \"UTC\"");
        let mut rows = RowBuilder::new(&config, None).unwrap();
        rows.push(0, br#"{"time":"2026-11-25T20:00:00Z","player":1,"say":"a \"quote\" \u00e9","ratio":2,"tags":[1, 2]}"#);
        rows.push(
            0,
            br#"{"time":"2026-11-25T20:00:00Z","player":2,"say":null,"ratio":2.5}"#,
        );
        rows.push(0, br#"[1,2]"#);
        rows.push(
            0,
            br#"{"time":"2026-11-25T20:00:00Z","player":3,"ratio":"high"}"#,
        );
        let reasons: Vec<&str> = rows.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        // ratio was inferred as bigint from its first value; 2.5 and "high" are not bigints.
        assert_eq!(reasons[0], "field 'ratio': expected bigint, got 2.5");
        assert!(reasons[1].starts_with("not a JSON object"), "{reasons:?}");
        assert_eq!(reasons[2], "field 'ratio': expected bigint, got \"high\"");
        let batch = rows.finish().unwrap().unwrap();
        let say = batch.column_by_name("say").unwrap().as_string::<i32>();
        assert_eq!(say.value(0), "a \"quote\" \u{e9}");
        let tags = batch.column_by_name("tags").unwrap().as_string::<i32>();
        assert_eq!(tags.value(0), "[1, 2]");
        assert_eq!(batch.num_rows(), 1);
    }

    #[test]
    fn two_threads_build_what_one_builder_builds() {
        let config = table("timezone = \"UTC\"");
        let one = |records: &[(i64, &[u8])]| {
            let mut b = RowBuilder::new(&config, None).unwrap();
            for (t, r) in records {
                b.push(*t, r);
            }
            (b.finish().unwrap(), b.rejected)
        };
        let texts: Vec<String> = (0..30_000)
            .map(|i| match i {
                // The second half first sees `x` as text, the first half as a number.
                15_000 => r#"{"time":"2026-11-25T20:00:00Z","player":1,"x":"text"}"#.to_string(),
                10 => r#"{"time":"2026-11-25T20:00:00Z","player":1,"x":5}"#.to_string(),
                7 => "not json".to_string(),
                _ => format!(r#"{{"time":"2026-11-25T20:00:00Z","player":{i}}}"#),
            })
            .collect();
        let records: Vec<(i64, &[u8])> = texts.iter().map(|t| (0, t.as_bytes())).collect();
        for part in [&records[..], &records[..14_000], &records[16_000..]] {
            let (batch, rejected) = build_rows(&config, None, part).unwrap();
            let (expected, expected_rejected) = one(part);
            assert_eq!(batch, expected);
            assert_eq!(rejected, expected_rejected);
        }
        let (batch, rejected) = build_rows(&config, None, &records).unwrap();
        assert_eq!(batch.unwrap().num_rows(), 29_998);
        assert_eq!(
            rejected.len(),
            2,
            "the bad line, and x as text after x as bigint"
        );
        // Halves with equal columns are joined: the same rows in the same order.
        let uniform: Vec<(i64, &[u8])> = records[16_000..]
            .iter()
            .chain(&records[16_000..])
            .copied()
            .collect();
        let (batch, rejected) = build_rows(&config, None, &uniform).unwrap();
        assert_eq!((batch, rejected), one(&uniform));
    }

    #[test]
    fn settings_are_checked() {
        assert!(check_rules(&table("timezone = \"Mars/Olympus\"")).is_err());
        assert!(check_rules(&table("columns = { day = \"text\" }")).is_err());
        assert!(check_rules(&table("columns = { x = \"varchar(3)\" }")).is_err());
        assert!(check_rules(&table("timezone = \"Asia/Shanghai\"")).is_ok());
    }
}
