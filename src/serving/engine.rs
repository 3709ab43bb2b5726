//! Planning and running for the BI protocols, kept apart from protocol decoding: what a
//! statement means (checked against the user's role on its logical plan before anything of it
//! runs), what it returns, and the bounded, cancellable, logged stream of its rows.
//!
//! Every statement of every call (planning at GetFlightInfo, a prepared statement, an update,
//! a query's rows) runs the same way: admitted under the concurrency limit, on the query
//! threads, with the user's gate, in a memory pool of its own inside the server's, and stopped
//! at the query timeout whether or not the client reads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::channel::oneshot;
use futures::{Stream, StreamExt};

use super::access::{AccessControl, Applied, scans};
use super::auth::{Principal, Role};
use super::guard::{check_statement, gate_for, is_read, number_question_marks};
use super::limits::Governor;
use super::planned::{Planned, PlannedQueries};
use super::query_log::{QueryLog, QueryRecord};
use super::query_metrics::QueryMetrics;
use super::running::{AbortOnDrop, QueryRuntime, Running, Slot, Timeout, Tracker, timeout_error};
use super::tickets::{QueryTicket, decode_params, done_schema, new_query_id};
use crate::error::{Error, Result};
use crate::plain_types::plain_schema;
use crate::query::{Output, Session};

/// A stream of result batches.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// The query side of the server: one base session, the bounds, the log.
pub struct Engine {
    session: Session,
    governor: Arc<Governor>,
    log: Option<QueryLog>,
    runtime: QueryRuntime,
    access: Arc<AccessControl>,
    metrics: Arc<QueryMetrics>,
    planned: PlannedQueries,
}

/// What GetFlightInfo answers for a statement.
pub struct Described {
    /// The schema clients will receive.
    pub schema: SchemaRef,
    /// The ticket to redeem with DoGet.
    pub ticket: QueryTicket,
}

impl Engine {
    /// An engine over a session (which should not read file paths), with bounds and a log.
    pub fn new(session: Session, governor: Arc<Governor>, log: Option<QueryLog>) -> Result<Self> {
        Ok(Self {
            session,
            governor,
            log,
            runtime: QueryRuntime::new()?,
            access: Arc::default(),
            metrics: Arc::default(),
            planned: PlannedQueries::default(),
        })
    }

    /// The per-user query counters `/metrics` shows.
    pub fn metrics(&self) -> &Arc<QueryMetrics> {
        &self.metrics
    }

    /// The access rules readers' statements are held to (none until a server sets them).
    pub fn access(&self) -> &Arc<AccessControl> {
        &self.access
    }

    /// The base session (for metadata calls).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The bounds and the registry of running queries.
    pub fn governor(&self) -> &Arc<Governor> {
        &self.governor
    }

    /// GetFlightInfo: the result schema and a ticket. A query is only planned here (it runs at
    /// DoGet); an admin's DDL or DML runs now, once, and the ticket carries its summary.
    pub async fn describe(
        &self,
        who: &Principal,
        sql: &str,
        params: Option<String>,
        keep_view_types: bool,
    ) -> Result<Described> {
        let started = (Instant::now(), Utc::now());
        let mut ticket = self.ticket(who, sql, params, keep_view_types);
        let applied = Applied::default();
        let planned = async {
            let session = self.session_for(who, ticket.params.as_deref(), &applied)?;
            let (who, sql) = (who.clone(), sql.to_string());
            self.bounded(async move {
                let read = is_read(&statement(&session, &who, &sql)?);
                Ok(match plan(&session, &who, &sql).await? {
                    Output::Rows(df) if read => {
                        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                        let schema = if keep_view_types {
                            schema
                        } else {
                            plain_schema(&schema)
                        };
                        Ok((schema, df))
                    }
                    Output::Rows(_) => Err("OK".to_string()),
                    Output::Done(summary) => Err(summary),
                })
            })
            .await
        }
        .await;
        // Queries are logged when they run; statements that ran (or failed) here, now.
        let error = match planned {
            Ok(Ok((schema, frame))) => {
                // Kept for the DoGet of this ticket, which then need not plan it again.
                self.planned.keep(&ticket.id, Planned { frame, applied });
                return Ok(Described { schema, ticket });
            }
            Ok(Err(summary)) => {
                ticket.done = Some(summary);
                None
            }
            Err(e) => Some(e),
        };
        self.record_statement(&ticket.id, who, sql, started, error.as_ref(), &applied);
        match error {
            Some(e) => Err(e),
            None => Ok(Described {
                schema: done_schema(),
                ticket,
            }),
        }
    }

    /// A ticket for `who`'s statement, not yet planned: for [`Engine::run`] when the statement
    /// is known to be a query ([`Engine::is_query`]), which then is planned once, where it
    /// runs, instead of once more by [`Engine::describe`].
    pub fn ticket(
        &self,
        who: &Principal,
        sql: &str,
        params: Option<String>,
        keep_view_types: bool,
    ) -> QueryTicket {
        QueryTicket {
            id: new_query_id(),
            sql: sql.to_string(),
            params,
            who: who.clone(),
            keep_view_types,
            done: None,
        }
    }

    /// Whether `sql` is one query (SELECT, WITH, VALUES...): rows to stream, nothing that runs
    /// when described. False for anything else, or what does not parse (describe says why).
    pub fn is_query(&self, sql: &str) -> bool {
        matches!(
            self.session.parse(sql).as_deref(),
            Ok([DFStatement::Statement(s)]) if matches!(**s, SqlStatement::Query(_))
        )
    }

    /// The dataset and parameter schemas of a statement to prepare (empty for an admin's write,
    /// which runs when executed, not now).
    pub async fn prepare(&self, who: &Principal, sql: &str) -> Result<(SchemaRef, SchemaRef)> {
        let session = self.session_for(who, None, &Applied::default())?;
        let (who, sql) = (who.clone(), sql.to_string());
        self.bounded(async move {
            let statement = statement(&session, &who, &sql)?;
            let empty = || (Arc::new(Schema::empty()), Arc::new(Schema::empty()));
            if !is_read(&statement) {
                return Ok(empty());
            }
            let Output::Rows(df) = session.execute(statement).await? else {
                return Ok(empty());
            };
            let mut params: Vec<(usize, Option<DataType>)> = df
                .logical_plan()
                .get_parameter_types()?
                .into_iter()
                .filter_map(|(name, t)| Some((name.strip_prefix('$')?.parse().ok()?, t)))
                .collect();
            params.sort_by_key(|(i, _)| *i);
            let parameter_schema = Schema::new(
                params
                    .into_iter()
                    .map(|(i, t)| Field::new(format!("${i}"), t.unwrap_or(DataType::Null), true))
                    .collect::<Vec<_>>(),
            );
            let dataset = plain_schema(df.schema().as_arrow());
            Ok((dataset, Arc::new(parameter_schema)))
        })
        .await
    }

    /// Runs a statement sent as an update (DoPut): an admin's write; readers get a permission
    /// error before anything runs.
    pub async fn update(&self, who: &Principal, sql: &str, params: Option<&str>) -> Result<()> {
        let started = (Instant::now(), Utc::now());
        let applied = Applied::default();
        let result = async {
            let session = self.session_for(who, params, &applied)?;
            let (who, sql) = (who.clone(), sql.to_string());
            self.bounded(async move {
                match plan(&session, &who, &sql).await? {
                    Output::Done(_) => Ok(()),
                    Output::Rows(df) => df
                        .collect()
                        .await
                        .map(|_| ())
                        .map_err(Error::from_datafusion),
                }
            })
            .await
        }
        .await;
        self.record_statement(
            &new_query_id(),
            who,
            sql,
            started,
            result.as_ref().err(),
            &applied,
        );
        result
    }

    /// DoGet: runs a ticket's query within the server's bounds and streams its rows.
    pub async fn run(&self, ticket: QueryTicket) -> Result<(SchemaRef, BatchStream)> {
        if let Some(summary) = &ticket.done {
            let schema = done_schema();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(vec![summary.as_str()]))],
            )?;
            return Ok((schema, Box::pin(futures::stream::iter([Ok(batch)]))));
        }
        let started = Instant::now();
        let mut tracker = Tracker {
            record: QueryRecord {
                query_id: ticket.id.clone(),
                user: ticket.who.user.clone(),
                sql: ticket.sql.clone(),
                started_at: Utc::now(),
                duration: Default::default(),
                rows: 0,
                bytes: 0,
                outcome: "cancelled",
                error: None,
                access: None,
            },
            started,
            log: self.log.clone(),
            governor: self.governor.clone(),
            metrics: self.metrics.clone(),
            running: self.metrics.running_of(&ticket.who.user),
        };
        tracker.running.inc();
        // The user's quota, counted before a server slot is waited for: a user over quota is
        // refused at once, and holds no slot others could use.
        let quota = self
            .access
            .current()
            .and_then(|rules| rules.quota(&ticket.who).cloned());
        let quota_permit = match &quota {
            Some(q) => match self.access.usage().admit(&ticket.who, q) {
                Ok(permit) => Some(permit),
                Err(e) => return Err(tracker.fail("refused", e)),
            },
            None => None,
        };
        // A place among the queries running at once: free now, or after a wait in the
        // server's queue, where a quota may bound how many of the user's queries wait.
        let admitted = match self.governor.try_admit() {
            Some(admitted) => admitted,
            None => {
                let _queued = match &quota {
                    Some(q) => match self.access.usage().queue(&ticket.who, q) {
                        Ok(permit) => Some(permit),
                        Err(e) => return Err(tracker.fail("refused", e)),
                    },
                    None => None,
                };
                match self.governor.admit().await {
                    Ok(admitted) => admitted,
                    Err(e @ Error::Busy(_)) => return Err(tracker.fail("refused", e)),
                    Err(e) => return Err(tracker.fail("error", e)),
                }
            }
        };
        let slot = Slot::new(admitted);
        let cancel = self.governor.register(&ticket.id);
        let server_timeout = self.governor.limits().query_timeout;
        let timeout = match quota
            .as_ref()
            .and_then(|q| Some((q.entry.query_timeout?, q)))
        {
            Some((after, q)) if after < server_timeout => Timeout {
                after,
                quota: Some(format!(
                    "quota query_timeout of user {} ({})",
                    ticket.who.user, q.origin
                )),
            },
            _ => Timeout {
                after: server_timeout,
                quota: None,
            },
        };
        let deadline = tokio::time::Instant::from_std(started + timeout.after);
        // The plan describing the ticket made, when this process made it; else planned here.
        let (source, applied) = match self.planned.take(&ticket.id) {
            Some(planned) => (Source::Kept(planned.frame), planned.applied),
            None => {
                let applied = Applied::default();
                match self.session_for(&ticket.who, ticket.params.as_deref(), &applied) {
                    Ok(session) => (Source::Plan(session), applied),
                    Err(e) => return Err(tracker.fail("error", e)),
                }
            }
        };
        // Plan and compute on the query runtime; batches come back through a small channel, so
        // a client that reads slowly holds back the computation. The task owns the slot and
        // ends at the deadline, so a client that stops reading cannot keep the slot.
        let (batches_tx, batches) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let (schema_tx, schema_rx) = oneshot::channel::<Result<SchemaRef>>();
        let query = ticket.clone();
        let task_slot = slot.clone();
        let task = self.runtime.spawn(async move {
            let _slot = task_slot;
            let work = async move {
                let planned = async {
                    let output = match source {
                        Source::Kept(frame) => Output::Rows(frame),
                        Source::Plan(session) => plan(&session, &query.who, &query.sql).await?,
                    };
                    match output {
                        Output::Rows(df) => {
                            // The schema GetFlightInfo announced is the logical one; batches
                            // are relabelled to it (the physical plan may differ in
                            // nullability, and clients such as ADBC check that every endpoint
                            // matches).
                            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                            let stream =
                                df.execute_stream().await.map_err(Error::from_datafusion)?;
                            Ok((schema, stream))
                        }
                        Output::Done(_) => Err(Error::Invalid(
                            "this ticket is for a query, but the statement is not one".to_string(),
                        )),
                    }
                };
                let (schema, mut stream) = match planned.await {
                    Ok(planned) => planned,
                    Err(e) => {
                        let _ = schema_tx.send(Err(e));
                        return;
                    }
                };
                if schema_tx.send(Ok(schema)).is_err() {
                    return;
                }
                while let Some(batch) = stream.next().await {
                    let failed = batch.is_err();
                    if batches_tx
                        .send(batch.map_err(Error::from_datafusion))
                        .await
                        .is_err()
                        || failed
                    {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout_at(deadline, work).await;
        });
        let task = match task {
            Ok(task) => AbortOnDrop(task),
            Err(e) => return Err(tracker.fail("error", e)),
        };
        let planned = tokio::time::timeout_at(deadline, schema_rx).await;
        tracker.record.access = applied.describe();
        let schema = match planned {
            Ok(Ok(Ok(schema))) => schema,
            Ok(Ok(Err(e))) => return Err(tracker.fail("error", e)),
            Ok(Err(_)) => return Err(tracker.fail("timeout", timeout.error())),
            Err(_) => return Err(tracker.fail("timeout", timeout.error())),
        };
        let schema = if ticket.keep_view_types {
            schema
        } else {
            plain_schema(&schema)
        };
        let running = Running {
            inner: batches,
            _task: task,
            schema: schema.clone(),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            cancel,
            tracker,
            finished: false,
            max_rows: quota.as_ref().and_then(|q| {
                let max = q.entry.max_result_rows?;
                Some((max, q.too_many_rows(&ticket.who, max)))
            }),
            max_bytes: quota.as_ref().and_then(|q| {
                let max = q.entry.max_result_mb?;
                Some((max * 1024 * 1024, q.too_many_bytes(&ticket.who, max)))
            }),
            _slot: slot,
            _quota: quota_permit,
        };
        Ok((schema, Box::pin(running)))
    }

    /// The session one of `who`'s statements runs in: the user's gate and access rules (the
    /// rules it applies noted in `applied`), a memory pool of the statement's own inside the
    /// server's, and the bound parameter values.
    fn session_for(
        &self,
        who: &Principal,
        params: Option<&str>,
        applied: &Applied,
    ) -> Result<Session> {
        let rules = self.access.current();
        let own_memory = rules.as_ref().and_then(|r| {
            let quota = r.quota(who)?;
            let mb = quota.entry.query_memory_mb?;
            Some((
                mb * 1024 * 1024,
                format!("ask an admin to raise the {}", quota.memory_origin(who)),
            ))
        });
        let mut session = self
            .session
            .with_memory_pool(self.governor.query_pool(own_memory))?;
        if let Some(gate) = gate_for(who, rules.clone()) {
            session = session.with_gate(gate);
        }
        if let Some(rules) = rules
            && who.role != Role::Admin
        {
            let (who, applied) = (who.clone(), applied.clone());
            session = session.with_rewrite(Arc::new(move |plan, state| {
                scans::apply(plan, state, &rules, &who, &applied)
            }));
        }
        let values = decode_params(params)?;
        if !values.is_empty() {
            session = session.with_params(numbered(values));
        }
        Ok(session)
    }

    /// Runs `work` as one statement of the server: admitted under the concurrency limit (at
    /// most the queue wait), on the query threads, stopped at the query timeout; a caller that
    /// goes away stops it.
    async fn bounded<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let permit = self.governor.admit().await?;
        let timeout = self.governor.limits().query_timeout;
        let task = AbortOnDrop(self.runtime.spawn(async move {
            let _slot = permit;
            tokio::time::timeout(timeout, work).await
        })?);
        match task.join().await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(timeout_error(timeout)),
            Err(e) => Err(Error::Internal(format!("a statement's task failed: {e}"))),
        }
    }

    /// Logs a statement that ran (or failed) outside DoGet: no rows were streamed.
    fn record_statement(
        &self,
        query_id: &str,
        who: &Principal,
        sql: &str,
        started: (Instant, chrono::DateTime<Utc>),
        error: Option<&Error>,
        applied: &Applied,
    ) {
        if let Some(log) = &self.log {
            log.record(QueryRecord {
                query_id: query_id.to_string(),
                user: who.user.clone(),
                sql: sql.to_string(),
                started_at: started.1,
                duration: started.0.elapsed(),
                rows: 0,
                bytes: 0,
                outcome: if error.is_some() { "error" } else { "ok" },
                error: error.map(ToString::to_string),
                access: applied.describe(),
            });
        }
    }
}

/// Positional parameter values as the session binds them: `$1`, `$2`, ...
fn numbered(values: Vec<ScalarValue>) -> crate::query::Params {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| ((i + 1).to_string(), v))
        .collect()
}

/// Parses a statement and checks that `who` may run it; `?` placeholders become `$n`.
fn statement(session: &Session, who: &Principal, sql: &str) -> Result<DFStatement> {
    let mut statements = session.parse(sql)?;
    if statements.len() != 1 {
        return Err(Error::Invalid(format!(
            "send one statement per request (got {})",
            statements.len()
        )));
    }
    let mut statement = statements.remove(0);
    number_question_marks(&mut statement);
    check_statement(who, &statement)?;
    Ok(statement)
}

/// Where the query [`Engine::run`] streams comes from.
enum Source {
    /// The plan made when the ticket was described.
    Kept(datafusion::dataframe::DataFrame),
    /// Planned now, in this session.
    Plan(Session),
}

/// Plans (and, for an admin's writes, runs) one statement in `session`, whose gate decides on
/// its logical plan before anything of it runs.
async fn plan(session: &Session, who: &Principal, sql: &str) -> Result<Output> {
    let statement = statement(session, who, sql)?;
    session.execute(statement).await
}
