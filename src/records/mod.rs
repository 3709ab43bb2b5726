//! Records → Arrow rows, with a rejected side: what the log intake and the files pipelines
//! share. Records arrive as JSON text ([`body`]: NDJSON or arrays, gzip bounded while
//! inflating; [`csv`]: CSV rows as records); [`rows`] turns one table's records into a batch
//! by the table's [`RowRules`] (column types in [`columns`], field parsing in [`fields`]), and
//! a record that cannot be a row becomes a [`Rejected`] with the reason, kept in
//! `<schema>._rejected` ([`rejected`]), never dropped.

pub mod body;
pub mod columns;
pub mod csv;
mod fields;
pub mod rejected;
pub mod rows;
pub mod rules;

pub use rejected::{Rejected, rejected_batch};
pub use rows::{RowBuilder, build_rows, check_rules};
pub use rules::{NewFields, RowRules, TimeFormat};

/// The event's time (UTC).
pub const EVENT_TIME: &str = "event_time";
/// When gamelake received the record (UTC).
pub const RECEIVED_AT: &str = "received_at";
/// The event's day in the table's zone: the partition column.
pub const DAY: &str = "day";
