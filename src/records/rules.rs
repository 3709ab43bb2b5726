//! How one table's records become rows: the rules a log intake table (`[[intake.tables]]`) and
//! a files pipeline's table (`[[table]]` of a files source) both give.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The rules of one table: where the event time is, which fields must be there, the declared
/// column types, and what a new field does.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowRules {
    /// `schema.table` in the lake (named in rejections and errors).
    pub name: String,
    /// The record field holding the event time (none: the time of receipt is used).
    pub time_field: Option<String>,
    /// How the time field is written.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Zone of the `day` partition (default [`crate::timing::DEFAULT_ZONE`]).
    pub timezone: Option<String>,
    /// What happens to a record with a field the table does not have yet.
    #[serde(default)]
    pub new_fields: NewFields,
    /// Declared columns and their types (`bigint`, `double`, `text`, `boolean`, `timestamp`,
    /// `json`); other columns are inferred from the first records that carry them.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Fields every record must have (non-null); a record without one is rejected.
    #[serde(default)]
    pub required: Vec<String>,
}

/// How an event time is written in a record.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// `2026-11-25T08:00:00.123+08:00` (also `Z`, and a space for `T`).
    #[default]
    Rfc3339,
    /// Seconds since 1970, integer or fractional (Fluent Bit's `json_date_format double`).
    EpochS,
    /// Milliseconds since 1970.
    EpochMs,
    /// Microseconds since 1970.
    EpochUs,
}

/// What to do with a field a table does not have.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NewFields {
    /// Add it as a nullable column (schema evolution).
    #[default]
    Add,
    /// Reject the record (to `<schema>._rejected`).
    Reject,
}
