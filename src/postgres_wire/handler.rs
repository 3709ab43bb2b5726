//! The simple and extended query protocols over the engine: each statement is parsed with
//! PostgreSQL's dialect (and the rewrites datafusion-pg-catalog makes for what clients send:
//! `::regclass`, `OPERATOR(pg_catalog.~)`, ...), then planned, checked and run by
//! [`Engine`] exactly as a Flight SQL statement is, with the caller's rights as they are now.
//! Rows are encoded by arrow-pg in the text or binary format each column asks for; a portal's
//! row limit suspends the stream (pgwire keeps it) until the client fetches more.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{Sink, StreamExt, stream};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::Bind;
use pgwire::types::format::FormatOptions;

use super::cancel::Registered;
use super::copy_out::{self, CopyOut};
use super::cursors::{self, Cursor, CursorCommand, Cursors};
use super::errors::{to_pg_error, user_error};
use super::session_commands::{self, SessionCommand};
use crate::error::Error;
use crate::serving::auth::Principal;
use crate::serving::engine::BatchStream;
use crate::serving::tickets::encode_params;
use crate::serving::{Directory, Engine};

/// A statement as the extended protocol keeps it between Parse and Execute.
#[derive(Clone, Debug)]
pub enum Parsed {
    /// Answered by the protocol layer.
    Session(SessionCommand),
    /// A cursor's statement, with the schema of the rows a `FETCH` returns.
    Cursor(CursorCommand, Option<SchemaRef>),
    /// Run by the engine.
    Sql(Arc<SqlStatement>),
}

/// A statement for the engine, with what its Parse found out.
#[derive(Debug)]
pub struct SqlStatement {
    /// The statement, as the engine reads it.
    sql: String,
    /// The command tag of a statement that is not a query (`INSERT`, `CREATE TABLE`, ...).
    tag: &'static str,
    /// Types of `$1`, `$2`, ... as the engine inferred them.
    params: Vec<DataType>,
    /// The rows' schema (empty for a write).
    schema: SchemaRef,
}

/// Parses statements and asks the engine what they return.
pub struct Parser {
    engine: Arc<Engine>,
    users: Arc<Directory>,
    dialect: PostgresCompatibilityParser,
}

/// The query handlers of a server.
pub struct Queries {
    engine: Arc<Engine>,
    users: Arc<Directory>,
    parser: Arc<Parser>,
}

impl Queries {
    /// Handlers running statements in `engine` for the users of `users`.
    pub fn new(engine: Arc<Engine>, users: Arc<Directory>) -> Self {
        let parser = Arc::new(Parser {
            engine: engine.clone(),
            users: users.clone(),
            dialect: PostgresCompatibilityParser::new(),
        });
        Self {
            engine,
            users,
            parser,
        }
    }

    /// Runs one statement for `who`: its rows (noted as the session's running query, for
    /// cancel requests), or the summary of a statement that ran.
    async fn execute<C: ClientInfo>(
        &self,
        client: &C,
        who: &Principal,
        sql: &str,
        params: Option<String>,
    ) -> PgWireResult<Ran> {
        // A query is planned once, where it runs; another statement is described first (an
        // admin's write runs there, and has no rows).
        let ticket = if self.engine.is_query(sql) {
            self.engine.ticket(who, sql, params, false)
        } else {
            let described = self
                .engine
                .describe(who, sql, params, false)
                .await
                .map_err(to_pg_error)?;
            if let Some(summary) = described.ticket.done {
                return Ok(Ran::Done(summary));
            }
            described.ticket
        };
        if let Some(session) = client.session_extensions().get::<Registered>() {
            session.running.set(&ticket.id);
        }
        let (schema, batches) = self.engine.run(ticket).await.map_err(to_pg_error)?;
        Ok(Ran::Rows(schema, batches))
    }

    /// Runs one statement and answers with its rows or its tag.
    async fn run<C: ClientInfo>(
        &self,
        client: &C,
        who: &Principal,
        sql: &str,
        tag: &str,
        params: Option<String>,
        format: &Format,
    ) -> PgWireResult<Response> {
        Ok(match self.execute(client, who, sql, params).await? {
            Ran::Done(summary) => Response::Execution(done_tag(tag, &summary)),
            Ran::Rows(schema, batches) => {
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                Response::Query(encode(&schema, batches, format, options)?)
            }
        })
    }

    /// Answers a `COPY ... TO STDOUT` with its query's rows.
    async fn copy<C: ClientInfo>(
        &self,
        client: &C,
        who: &Principal,
        copy: &CopyOut,
    ) -> PgWireResult<Response> {
        match self.execute(client, who, &copy.query, None).await? {
            Ran::Rows(schema, batches) => copy.response(&schema, batches),
            Ran::Done(_) => Err(user_error(
                "0A000",
                "COPY ... TO STDOUT copies the rows of a query".to_string(),
            )),
        }
    }
}

impl Queries {
    /// Runs a cursor's statement: `DECLARE` starts its query, `FETCH` answers with its next
    /// rows (in `format`, else as the cursor was declared), `CLOSE` stops it.
    async fn cursor<C: ClientInfo>(
        &self,
        client: &C,
        who: &Principal,
        command: &CursorCommand,
        format: Option<&Format>,
    ) -> PgWireResult<Response> {
        let cursors = Cursors::of(client);
        Ok(match command {
            CursorCommand::Declare {
                name,
                query,
                binary,
            } => match self.execute(client, who, query, None).await? {
                Ran::Rows(schema, batches) => {
                    cursors.declare(name, Cursor::new(schema, *binary, batches))?;
                    Response::Execution(Tag::new("DECLARE CURSOR"))
                }
                Ran::Done(_) => {
                    return Err(user_error(
                        "42P11",
                        "a cursor reads the rows of a query".to_string(),
                    ));
                }
            },
            CursorCommand::Fetch { name, count } => {
                let cursor = cursors.get(name)?;
                let mut cursor = cursor.lock().await;
                let batches = cursor.fetch(*count).await?;
                let declared = if cursor.binary {
                    Format::UnifiedBinary
                } else {
                    Format::UnifiedText
                };
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                let rows: BatchStream = Box::pin(stream::iter(batches.into_iter().map(Ok)));
                let mut response =
                    encode(&cursor.schema, rows, format.unwrap_or(&declared), options)?;
                response.set_command_tag("FETCH");
                Response::Query(response)
            }
            CursorCommand::Close(name) => {
                cursors.close(name.as_deref())?;
                Response::Execution(Tag::new("CLOSE CURSOR"))
            }
        })
    }
}

/// What a statement gave.
enum Ran {
    /// A query's rows, streaming.
    Rows(SchemaRef, BatchStream),
    /// A statement that ran, with its summary.
    Done(String),
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let who = principal(client, &self.users)?;
        let statements = self.parser.parse(query)?;
        let count = statements.len();
        let mut responses = Vec::with_capacity(count);
        for (i, statement) in statements.into_iter().enumerate() {
            if let Some(command) = session_commands::recognise(&statement) {
                responses.push(session_commands::answer(client, &command)?);
                continue;
            }
            if let Some(copy) = copy_out::recognise(&statement) {
                responses.push(self.copy(client, &who, &copy?).await?);
                continue;
            }
            if let Some(command) = cursors::recognise(&statement) {
                responses.push(self.cursor(client, &who, &command?, None).await?);
                continue;
            }
            let sql = statement.to_string();
            let response = self
                .run(
                    client,
                    &who,
                    &sql,
                    command_tag(&statement),
                    None,
                    &Format::UnifiedText,
                )
                .await?;
            // Rows stream after this returns; all but the last statement's are read now, so
            // no statement holds a query slot while the next one waits for one.
            let response = match response {
                Response::Query(rows) if i + 1 < count => Response::Query(drained(rows).await?),
                other => other,
            };
            responses.push(response);
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Parsed;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let who = principal(client, &self.users)?;
        let statement = match &portal.statement.statement {
            Parsed::Session(command) => return session_commands::answer(client, command),
            Parsed::Cursor(command, _) => {
                let format = &portal.result_column_format;
                let response = self.cursor(client, &who, command, Some(format)).await?;
                as_portal(client, command).await?;
                return Ok(response);
            }
            Parsed::Sql(statement) => statement.clone(),
        };
        let params = bound_parameters(portal, &statement.params)?;
        self.run(
            client,
            &who,
            &statement.sql,
            statement.tag,
            params,
            &portal.result_column_format,
        )
        .await
    }
}

impl Parser {
    /// The statements of `sql` in PostgreSQL's dialect, rewritten where clients send what
    /// DataFusion does not read.
    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        let statements = self
            .dialect
            .parse(sql)
            .map_err(|e| user_error("42601", format!("syntax error: {e}")))?;
        Ok(statements
            .into_iter()
            .map(|s| super::rewrite::rewrite(self.dialect.rewrite(s)))
            .collect())
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Parsed;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Parsed>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.parse(sql)?;
        let statement = match statements.len() {
            0 => return Ok(None),
            1 => statements.remove(0),
            n => {
                return Err(user_error(
                    "42601",
                    format!("cannot insert multiple commands into a prepared statement (got {n})"),
                ));
            }
        };
        if let Some(command) = session_commands::recognise(&statement) {
            return Ok(Some(Parsed::Session(command)));
        }
        if let Some(command) = cursors::recognise(&statement) {
            let command = command?;
            let schema = match &command {
                CursorCommand::Fetch { name, .. } => {
                    let cursor = Cursors::of(client).get(name)?;
                    let schema = cursor.lock().await.schema.clone();
                    Some(schema)
                }
                _ => None,
            };
            return Ok(Some(Parsed::Cursor(command, schema)));
        }
        if copy_out::recognise(&statement).is_some() {
            return Err(user_error(
                "0A000",
                "COPY is served in the simple query protocol only".to_string(),
            ));
        }
        let who = principal(client, &self.users)?;
        let sql = statement.to_string();
        let (schema, params) = self.engine.prepare(&who, &sql).await.map_err(to_pg_error)?;
        Ok(Some(Parsed::Sql(Arc::new(SqlStatement {
            tag: command_tag(&statement),
            params: params
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
            schema,
            sql,
        }))))
    }

    fn get_parameter_types(&self, statement: &Parsed) -> PgWireResult<Vec<Type>> {
        match statement {
            Parsed::Session(_) | Parsed::Cursor(..) => Ok(Vec::new()),
            Parsed::Sql(statement) => statement
                .params
                .iter()
                .map(|t| match t {
                    DataType::Null => Ok(Type::UNKNOWN),
                    t => arrow_pg::datatypes::into_pg_type(t),
                })
                .collect(),
        }
    }

    fn get_result_schema(
        &self,
        statement: &Parsed,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match statement {
            Parsed::Session(command) => Ok(session_commands::fields(command)),
            Parsed::Cursor(_, None) => Ok(Vec::new()),
            Parsed::Cursor(_, Some(schema)) => arrow_pg::datatypes::arrow_schema_to_pg_fields(
                schema,
                format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            Parsed::Sql(statement) => arrow_pg::datatypes::arrow_schema_to_pg_fields(
                &statement.schema,
                format.unwrap_or(&Format::UnifiedText),
                None,
            ),
        }
    }
}

/// A cursor is also a portal of the protocol, as in PostgreSQL: clients describe it (psycopg
/// does, for the columns of its server-side cursors) and may execute it with a row limit.
async fn as_portal<C>(client: &C, command: &CursorCommand) -> PgWireResult<()>
where
    C: ClientInfo + ClientPortalStore,
    C::PortalStore: PortalStore<Statement = Parsed>,
{
    match command {
        CursorCommand::Declare { name, .. } => {
            let schema = Cursors::of(client).get(name)?.lock().await.schema.clone();
            let fetch = CursorCommand::Fetch {
                name: name.clone(),
                count: None,
            };
            let statement = StoredStatement::new(
                name.clone(),
                Parsed::Cursor(fetch, Some(schema)),
                Vec::new(),
            );
            let bind = Bind::new(Some(name.clone()), None, Vec::new(), Vec::new(), Vec::new());
            let portal = Portal::try_new(&bind, Arc::new(statement))?;
            client.portal_store().put_portal(Arc::new(portal));
        }
        CursorCommand::Close(Some(name)) => client.portal_store().rm_portal(name),
        CursorCommand::Close(None) | CursorCommand::Fetch { .. } => {}
    }
    Ok(())
}

/// The caller of a connection, with the rights its user has now (a user removed from the
/// config since it logged in is refused).
fn principal<C: ClientInfo>(client: &C, users: &Directory) -> PgWireResult<Principal> {
    let who = client
        .session_extensions()
        .get::<Principal>()
        .ok_or_else(|| user_error("28000", "not logged in".to_string()))?;
    if users.is_empty() {
        return Ok((*who).clone());
    }
    users.principal(&who).ok_or_else(|| {
        user_error(
            "28000",
            format!(
                "user {} is no longer allowed on this server: connect again",
                who.user
            ),
        )
    })
}

/// The values a portal binds, as the engine's tickets carry them.
fn bound_parameters<S: Clone>(
    portal: &Portal<S>,
    types: &[DataType],
) -> PgWireResult<Option<String>> {
    if portal.parameter_len() == 0 {
        return Ok(None);
    }
    let inferred: Vec<Option<&DataType>> = types
        .iter()
        .map(|t| (!matches!(t, DataType::Null)).then_some(t))
        .collect();
    let values = arrow_pg::datatypes::df::deserialize_parameters(portal, &inferred)?;
    let values = match values {
        ParamValues::List(values) => values,
        ParamValues::Map(_) => {
            return Err(user_error(
                "08P01",
                "named parameters are not supported".to_string(),
            ));
        }
    };
    let mut fields = Vec::with_capacity(values.len());
    let mut columns = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let value = value.value;
        let array = value.to_array().map_err(|e| to_pg_error(Error::Query(e)))?;
        fields.push(Field::new(
            format!("${}", i + 1),
            array.data_type().clone(),
            true,
        ));
        columns.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| to_pg_error(Error::Arrow(e)))?;
    encode_params(&batch).map(Some).map_err(to_pg_error)
}

/// Rows of `batches` as PostgreSQL data rows, each column in the format asked for.
fn encode(
    schema: &SchemaRef,
    batches: BatchStream,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_pg::datatypes::arrow_schema_to_pg_fields(
        schema,
        format,
        Some(options),
    )?);
    let row_fields = fields.clone();
    let rows = batches
        .map(move |batch| match batch {
            Ok(batch) => stream::iter(arrow_pg::datatypes::encode_recordbatch(
                row_fields.clone(),
                batch,
            ))
            .left_stream(),
            Err(e) => stream::iter([Err(to_pg_error(e))]).right_stream(),
        })
        .flatten();
    Ok(QueryResponse::new(fields, rows))
}

/// A response whose rows are read now (and kept in memory).
async fn drained(mut rows: QueryResponse) -> PgWireResult<QueryResponse> {
    let fields = rows.row_schema();
    let mut kept = Vec::new();
    while let Some(row) = rows.data_rows().next().await {
        kept.push(Ok(row?));
    }
    Ok(QueryResponse::new(fields, stream::iter(kept)))
}

/// The command tag of a statement that is not a query.
fn command_tag(statement: &Statement) -> &'static str {
    match statement {
        Statement::Insert(_) => "INSERT",
        Statement::Delete(_) => "DELETE",
        Statement::Update(_) => "UPDATE",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::CreateSchema { .. } => "CREATE SCHEMA",
        Statement::Drop { .. } => "DROP TABLE",
        Statement::Analyze(_) => "ANALYZE",
        _ => "SELECT",
    }
}

/// The tag of a statement that ran: with its row count where the summary gives one
/// (`DELETE FROM game.players: 3 rows`), as drivers read it for their row count.
fn done_tag(tag: &str, summary: &str) -> Tag {
    let rows = summary
        .rsplit_once(": ")
        .and_then(|(_, tail)| tail.split_whitespace().next()?.parse::<usize>().ok());
    let tag = match tag {
        "INSERT" => Tag::new(tag).with_oid(0),
        _ => Tag::new(tag),
    };
    match rows {
        Some(n) => tag.with_rows(n),
        None => tag,
    }
}
