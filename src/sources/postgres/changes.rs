//! Change capture's view of a replication slot: the pgoutput messages of whole transactions,
//! folded per table into the last state of each key (a row to upsert, or a key to delete), and
//! built into Arrow batches that a MERGE applies to the lake table.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanBuilder, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use tokio_postgres::types::Type;

use super::changelog::ChangeLog;
use super::decode::ColumnBuilder;
use super::pgoutput::{Message, Relation, Value, decode};
use super::{PgColumn, PgKind};
use crate::error::{Error, Result};

/// The column of a change batch that says the key was deleted.
pub const DELETED: &str = "_gamelake_deleted";
/// The prefix of the columns that say a TOASTed value was not sent: keep the lake's.
pub const KEEP: &str = "_gamelake_keep_";

/// One captured table.
pub struct CapturedTable {
    /// `schema.table` in PostgreSQL.
    pub source: String,
    /// Its columns, as the lake table has them.
    columns: Vec<PgColumn>,
    /// Indexes of the key columns in `columns`.
    key: Vec<usize>,
    /// End LSN of the last transaction the lake table holds: older ones are skipped.
    pub applied: u64,
    /// The stream's relation id and, per relation column, its index in `columns`.
    relation: Option<(u32, Vec<usize>)>,
    /// The last change of each key since the last batch.
    pending: HashMap<Vec<u8>, Pending>,
    /// A TRUNCATE came since the last batch: the lake table is emptied before `pending`.
    pub truncated: bool,
    /// Changes folded since the last batch (before folding by key).
    pub changes: u64,
    /// Columns the stream added since the lake table last took new ones.
    added: Vec<String>,
    /// Every change, for the table's changelog (`changelog = true`).
    pub log: Option<ChangeLog>,
}

/// The last change of one key, values in `columns` order.
enum Pending {
    Upsert(Vec<Value>),
    Delete(Vec<Value>),
}

impl CapturedTable {
    /// A table `source` (`schema.table`) with its columns and key column names; `lake` names
    /// the lake table's columns when it exists (PostgreSQL's others are new to it).
    pub fn new(
        source: &str,
        columns: Vec<PgColumn>,
        key: &[String],
        applied: u64,
        lake: Option<&[String]>,
    ) -> Result<Self> {
        let key = key
            .iter()
            .map(|k| {
                columns.iter().position(|c| &c.name == k).ok_or_else(|| {
                    Error::Invalid(format!("{source}: key column \"{k}\" is not a column"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if key.is_empty() {
            return Err(Error::Invalid(format!(
                "{source}: change capture needs a key to apply updates and deletes by; add a primary key to the table or set key = [...] on the [[table]]"
            )));
        }
        Ok(Self {
            source: source.to_string(),
            key,
            applied,
            relation: None,
            pending: HashMap::new(),
            truncated: false,
            changes: 0,
            added: lake.map_or_else(Vec::new, |lake| {
                columns
                    .iter()
                    .filter(|c| !lake.contains(&c.name))
                    .map(|c| c.name.clone())
                    .collect()
            }),
            columns,
            log: None,
        })
    }

    /// The key column names.
    pub fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|i| self.columns[*i].name.clone())
            .collect()
    }

    /// Whether anything waits to be applied (to the table or its changelog).
    pub fn has_changes(&self) -> bool {
        self.truncated
            || !self.pending.is_empty()
            || self.log.as_ref().is_some_and(ChangeLog::pending)
    }

    /// The changes for the changelog as one batch, if it is kept and has any.
    pub fn take_log(&mut self) -> Result<Option<RecordBatch>> {
        let Some(log) = self.log.as_ref().filter(|l| l.pending()) else {
            return Ok(None);
        };
        let arrays = self.arrays(log.values())?;
        let fields = self.fields();
        match self.log.as_mut() {
            Some(log) => log.take(fields, arrays),
            None => Ok(None),
        }
    }

    /// Records one change in the changelog: an update of the key as the old key's delete and
    /// the new row's insert.
    fn record(&self, log: &mut ChangeLog, message: &Message, at: (u64, i64)) -> Result<()> {
        match message {
            Message::Insert { new, .. } => log.push("I", at, self.reorder(new.clone())?),
            Message::Update { old, new, .. } => {
                let new = self.reorder(new.clone())?;
                let old = match old {
                    Some(old) => Some(self.reorder(old.clone())?),
                    None => None,
                };
                match old {
                    Some(old) if self.key_of(&old)? != self.key_of(&new)? => {
                        log.push("D", at, old);
                        log.push("I", at, new);
                    }
                    _ => log.push("U", at, new),
                }
            }
            Message::Delete { old, .. } => log.push("D", at, self.reorder(old.clone())?),
            Message::Truncate { .. } => log.push("T", at, Vec::new()),
            _ => {}
        }
        Ok(())
    }

    /// Maps the stream's description of the table onto the lake's columns.
    fn describe(&mut self, relation: &Relation) -> Result<()> {
        let full_refresh = "run `gamelake ingest FILE --full-refresh` to copy the table again";
        let mut positions = Vec::with_capacity(relation.columns.len());
        for column in &relation.columns {
            // Built-in types are compared; others (enums, domains) keep the kind they had.
            let kind =
                Type::from_oid(column.type_oid).and_then(|ty| PgKind::of(&ty, column.typmod));
            match self.columns.iter().position(|c| c.name == column.name) {
                Some(at) => {
                    if kind.as_ref().is_some_and(|k| *k != self.columns[at].kind) {
                        return Err(Error::Unsupported(format!(
                            "{}: column \"{}\" changed type in PostgreSQL; {full_refresh}",
                            self.source, column.name
                        )));
                    }
                    positions.push(at);
                }
                None => {
                    // A column added mid-stream: the lake table gains it before the next batch.
                    let kind = kind.ok_or_else(|| {
                        Error::Unsupported(format!(
                            "{}: column \"{}\" was added with a type change capture cannot map; {full_refresh}",
                            self.source, column.name
                        ))
                    })?;
                    self.columns.push(PgColumn {
                        name: column.name.clone(),
                        kind,
                    });
                    self.added.push(column.name.clone());
                    positions.push(self.columns.len() - 1);
                }
            }
        }
        self.relation = Some((relation.id, positions));
        Ok(())
    }

    /// Columns added in PostgreSQL since the lake table last took new ones, with their Arrow
    /// fields; the list starts over.
    pub fn take_added(&mut self) -> Vec<datafusion::arrow::datatypes::Field> {
        std::mem::take(&mut self.added)
            .iter()
            .filter_map(|name| self.columns.iter().find(|c| &c.name == name))
            .map(PgColumn::field)
            .collect()
    }

    /// A tuple in `columns` order.
    fn reorder(&self, tuple: Vec<Value>) -> Result<Vec<Value>> {
        let Some((_, positions)) = &self.relation else {
            return Err(Error::Invalid(format!(
                "{}: a change before the table's description",
                self.source
            )));
        };
        if tuple.len() != positions.len() {
            return Err(Error::Invalid(format!(
                "{}: a change of {} columns where the stream described {} (a column added or dropped in the transaction that changed rows?); run `gamelake ingest FILE --full-refresh` to copy the table again",
                self.source,
                tuple.len(),
                positions.len()
            )));
        }
        // A column the stream does not describe (dropped in PostgreSQL, or added after the
        // changes it is replaying) keeps the lake's value; a new row gets NULL there.
        let mut row = vec![Value::Unchanged; self.columns.len()];
        for (value, at) in tuple.into_iter().zip(positions) {
            row[*at] = value;
        }
        Ok(row)
    }

    /// The key of a row, as bytes that compare equal when the key does.
    fn key_of(&self, row: &[Value]) -> Result<Vec<u8>> {
        let mut key = Vec::new();
        for at in &self.key {
            match &row[*at] {
                Value::Binary(b) => {
                    key.extend_from_slice(&(b.len() as u32).to_be_bytes());
                    key.extend_from_slice(b);
                }
                Value::Null => key.extend_from_slice(&u32::MAX.to_be_bytes()),
                _ => {
                    return Err(Error::Invalid(format!(
                        "{}: a change whose key column \"{}\" was not sent",
                        self.source, self.columns[*at].name
                    )));
                }
            }
        }
        Ok(key)
    }

    /// Folds one change into the pending state of its key.
    fn fold(&mut self, message: Message) -> Result<()> {
        self.changes += 1;
        match message {
            Message::Insert { new, .. } => {
                let row = self.reorder(new)?;
                self.pending
                    .insert(self.key_of(&row)?, Pending::Upsert(row));
            }
            Message::Update { old, new, .. } => {
                let mut row = self.reorder(new)?;
                let key = self.key_of(&row)?;
                if let Some(old) = old {
                    let old = self.reorder(old)?;
                    let old_key = self.key_of(&old)?;
                    if old_key != key {
                        self.pending.insert(old_key, Pending::Delete(old));
                    }
                }
                // A value the update did not send may have come with an earlier change here.
                if let Some(Pending::Upsert(earlier)) = self.pending.get(&key) {
                    for (value, before) in row.iter_mut().zip(earlier) {
                        if *value == Value::Unchanged {
                            *value = before.clone();
                        }
                    }
                }
                self.pending.insert(key, Pending::Upsert(row));
            }
            Message::Delete { old, .. } => {
                let old = self.reorder(old)?;
                self.pending
                    .insert(self.key_of(&old)?, Pending::Delete(old));
            }
            Message::Truncate { .. } => {
                self.pending.clear();
                self.truncated = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// The pending changes as one batch: the table's columns, [`DELETED`], and a [`KEEP`]
    /// column for each column with a value not sent. The pending state starts over.
    pub fn take_batch(&mut self) -> Result<Option<RecordBatch>> {
        self.truncated = false;
        self.changes = 0;
        if self.pending.is_empty() {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.pending);
        let unsent: Vec<bool> = (0..self.columns.len())
            .map(|i| {
                pending.values().any(|p| match p {
                    Pending::Upsert(row) => row.get(i) == Some(&Value::Unchanged),
                    Pending::Delete(_) => false,
                })
            })
            .collect();
        let mut keeps: Vec<Option<BooleanBuilder>> =
            unsent.iter().map(|u| u.then(BooleanBuilder::new)).collect();
        let mut deleted = BooleanBuilder::new();
        let mut rows = Vec::with_capacity(pending.len());
        for change in pending.values() {
            let (row, is_delete) = match change {
                Pending::Upsert(row) => (row, false),
                Pending::Delete(row) => (row, true),
            };
            deleted.append_value(is_delete);
            for (i, keep) in keeps.iter_mut().enumerate() {
                if let Some(keep) = keep {
                    keep.append_value(row.get(i) == Some(&Value::Unchanged));
                }
            }
            rows.push(row.as_slice());
        }
        let mut fields = self.fields();
        let mut arrays = self.arrays(rows)?;
        fields.push(Field::new(DELETED, DataType::Boolean, false));
        arrays.push(Arc::new(deleted.finish()));
        for (column, keep) in self.columns.iter().zip(keeps.iter_mut()) {
            if let Some(keep) = keep {
                fields.push(Field::new(
                    format!("{KEEP}{}", column.name),
                    DataType::Boolean,
                    false,
                ));
                arrays.push(Arc::new(keep.finish()));
            }
        }
        Ok(Some(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            arrays,
        )?))
    }
}

impl CapturedTable {
    /// The table's columns over `rows`: a value not sent (or a row folded before a column was
    /// added) is NULL.
    fn arrays<'a>(&self, rows: impl IntoIterator<Item = &'a [Value]>) -> Result<Vec<ArrayRef>> {
        let mut builders: Vec<ColumnBuilder> = self
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(&c.kind))
            .collect();
        for row in rows {
            for (i, builder) in builders.iter_mut().enumerate() {
                let bytes = match row.get(i).unwrap_or(&Value::Null) {
                    Value::Binary(b) => Some(b.as_slice()),
                    Value::Null | Value::Unchanged => None,
                    Value::Text(_) => {
                        return Err(Error::Unsupported(format!(
                            "{}: column \"{}\" came as text from the slot; its type has no binary form change capture reads",
                            self.source, self.columns[i].name
                        )));
                    }
                };
                builder.append(bytes)?;
            }
        }
        builders.iter_mut().map(ColumnBuilder::finish).collect()
    }

    /// The Arrow fields of the table's columns.
    fn fields(&self) -> Vec<Field> {
        self.columns.iter().map(PgColumn::field).collect()
    }
}

/// The captured tables of one slot, fed the slot's messages in order.
pub struct ChangeSet {
    /// The tables.
    pub tables: Vec<CapturedTable>,
    /// Relation id → index in `tables`, for the relations the stream described.
    by_relation: HashMap<u32, usize>,
    /// The changes of the transaction being read, applied when it commits.
    open: Vec<(usize, Message)>,
    /// End LSN of the last transaction read.
    pub last_end: Option<u64>,
    /// Commit time (µs since 2000-01-01) of the first transaction read since this was last
    /// reset to None: the one that waited longest.
    pub first_commit_time: Option<i64>,
}

impl ChangeSet {
    /// The tables to capture.
    pub fn new(tables: Vec<CapturedTable>) -> Self {
        Self {
            tables,
            by_relation: HashMap::new(),
            open: Vec::new(),
            last_end: None,
            first_commit_time: None,
        }
    }

    /// Reads one pgoutput message.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        match decode(bytes)? {
            Message::Begin { .. } => self.open.clear(),
            Message::Relation(relation) => {
                let name = format!("{}.{}", relation.schema, relation.name);
                if let Some(i) = self.tables.iter().position(|t| t.source == name) {
                    self.tables[i].describe(&relation)?;
                    self.by_relation.insert(relation.id, i);
                }
            }
            Message::Commit {
                end_lsn,
                commit_time,
            } => {
                let open = std::mem::take(&mut self.open);
                for (i, message) in open {
                    let table = &mut self.tables[i];
                    if let Some(mut log) = table.log.take() {
                        let recorded = if log.applied < end_lsn {
                            table.record(&mut log, &message, (end_lsn, commit_time))
                        } else {
                            Ok(())
                        };
                        table.log = Some(log);
                        recorded?;
                    }
                    if table.applied < end_lsn {
                        table.fold(message)?;
                    }
                }
                self.last_end = Some(end_lsn);
                self.first_commit_time.get_or_insert(commit_time);
            }
            Message::Truncate { relations } => {
                let mut seen = Vec::new();
                for id in relations {
                    if let Some(i) = self.by_relation.get(&id).copied()
                        && !seen.contains(&i)
                    {
                        seen.push(i);
                        let truncate = Message::Truncate {
                            relations: Vec::new(),
                        };
                        self.open.push((i, truncate));
                    }
                }
            }
            message @ (Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. }) => {
                if let Some(i) = self.by_relation.get(&relation).copied() {
                    self.open.push((i, message));
                }
            }
            Message::Other => {}
        }
        Ok(())
    }
}
