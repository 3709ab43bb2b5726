//! SQL cursors: `DECLARE name [BINARY] CURSOR FOR query`, `FETCH [FORWARD] n FROM name`,
//! `CLOSE name`, what psycopg's server-side cursors and other drivers send to read a large
//! result a few rows at a time. The query runs in the engine when declared (holding a query
//! slot, bounded by the query timeout, like any query); each FETCH takes the next rows of its
//! stream. Cursors move forward only (`NO SCROLL`), and belong to their connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::ast::{CloseCursor, FetchDirection, Statement, Value};
use futures::StreamExt;
use pgwire::api::ClientInfo;

use super::errors::user_error;
use crate::serving::engine::BatchStream;
use pgwire::error::PgWireResult;

/// A cursor statement.
#[derive(Clone, Debug)]
pub enum CursorCommand {
    /// `DECLARE name [BINARY] CURSOR FOR query`.
    Declare {
        /// The cursor's name.
        name: String,
        /// The query it reads.
        query: String,
        /// Rows in binary (`BINARY`).
        binary: bool,
    },
    /// `FETCH ...`: up to `count` rows (all with `None`).
    Fetch {
        /// The cursor's name.
        name: String,
        /// How many rows.
        count: Option<usize>,
    },
    /// `CLOSE name` (`None`: `CLOSE ALL`).
    Close(Option<String>),
}

/// The cursor command a statement is, if any (an error for what is not served).
pub fn recognise(statement: &Statement) -> Option<PgWireResult<CursorCommand>> {
    Some(match statement {
        Statement::Declare { stmts } => {
            let [declare] = stmts.as_slice() else {
                return Some(Err(user_error(
                    "0A000",
                    "declare one cursor per statement".to_string(),
                )));
            };
            match (declare.names.first(), &declare.for_query) {
                (Some(name), Some(query)) if declare.scroll != Some(true) => {
                    Ok(CursorCommand::Declare {
                        name: name.value.clone(),
                        query: query.to_string(),
                        binary: declare.binary == Some(true),
                    })
                }
                _ => Err(user_error(
                    "0A000",
                    "only DECLARE name [BINARY] [NO SCROLL] CURSOR FOR query is served".to_string(),
                )),
            }
        }
        Statement::Fetch {
            name, direction, ..
        } => {
            let count = match direction {
                FetchDirection::Next | FetchDirection::Forward { limit: None } => Ok(Some(1)),
                FetchDirection::All | FetchDirection::ForwardAll => Ok(None),
                FetchDirection::Count { limit }
                | FetchDirection::Forward { limit: Some(limit) } => match &limit.value {
                    Value::Number(n, _) => n.parse::<usize>().map(Some).map_err(|_| {
                        user_error("22023", format!("FETCH count {n} is not a row count"))
                    }),
                    other => Err(user_error(
                        "22023",
                        format!("FETCH count {other} is not a row count"),
                    )),
                },
                other => Err(user_error(
                    "0A000",
                    format!("cursors move forward only: FETCH {other} is not served"),
                )),
            };
            count.map(|count| CursorCommand::Fetch {
                name: name.value.clone(),
                count,
            })
        }
        Statement::Close { cursor } => Ok(CursorCommand::Close(match cursor {
            CloseCursor::All => None,
            CloseCursor::Specific { name } => Some(name.value.clone()),
        })),
        _ => return None,
    })
}

/// A declared cursor: its query's stream and the rows of a batch not fetched yet.
pub struct Cursor {
    /// The rows' schema.
    pub schema: SchemaRef,
    /// Rows in binary.
    pub binary: bool,
    batches: BatchStream,
    pending: Option<RecordBatch>,
}

impl Cursor {
    /// A cursor over a query's rows.
    pub fn new(schema: SchemaRef, binary: bool, batches: BatchStream) -> Self {
        Self {
            schema,
            binary,
            batches,
            pending: None,
        }
    }

    /// The next `count` rows (all the rest with `None`).
    pub async fn fetch(&mut self, count: Option<usize>) -> PgWireResult<Vec<RecordBatch>> {
        let mut wanted = count.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        while wanted > 0 {
            let batch = match self.pending.take() {
                Some(batch) => batch,
                None => match self.batches.next().await {
                    Some(batch) => batch.map_err(super::errors::to_pg_error)?,
                    None => break,
                },
            };
            if batch.num_rows() > wanted {
                out.push(batch.slice(0, wanted));
                self.pending = Some(batch.slice(wanted, batch.num_rows() - wanted));
                wanted = 0;
            } else {
                wanted -= batch.num_rows();
                out.push(batch);
            }
        }
        Ok(out)
    }
}

/// The cursors of one connection (in its session extensions).
#[derive(Default)]
pub struct Cursors(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Cursor>>>>);

impl Cursors {
    /// The cursors of `client`'s connection.
    pub fn of<C: ClientInfo>(client: &C) -> Arc<Cursors> {
        client
            .session_extensions()
            .get_or_insert_with(Cursors::default)
    }

    /// Keeps a declared cursor; a name in use is refused, as PostgreSQL does.
    pub fn declare(&self, name: &str, cursor: Cursor) -> PgWireResult<()> {
        let mut cursors = self.lock();
        if cursors.contains_key(name) {
            return Err(user_error(
                "42P03",
                format!("cursor \"{name}\" already exists"),
            ));
        }
        cursors.insert(name.to_string(), Arc::new(tokio::sync::Mutex::new(cursor)));
        Ok(())
    }

    /// A declared cursor.
    pub fn get(&self, name: &str) -> PgWireResult<Arc<tokio::sync::Mutex<Cursor>>> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| user_error("34000", format!("cursor \"{name}\" does not exist")))
    }

    /// Closes one cursor (or all), stopping its query.
    pub fn close(&self, name: Option<&str>) -> PgWireResult<()> {
        let mut cursors = self.lock();
        match name {
            None => cursors.clear(),
            Some(name) => {
                cursors.remove(name).ok_or_else(|| {
                    user_error("34000", format!("cursor \"{name}\" does not exist"))
                })?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Cursor>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
