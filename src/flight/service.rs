//! The Flight SQL protocol: decodes requests, checks the bearer token on every call, and hands
//! the work to [`Engine`]. Nothing here plans SQL.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use futures::Stream;
use prost::Message;
use prost::bytes::Bytes;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use super::access::{Access, owned_by};
use super::metadata;
use super::prepared::{Bound, one_row_of_parameters};
use super::wire::{DoGetStream, encode, keys, one_batch, schema_bytes, to_status};
use crate::serving::Engine;
use crate::serving::auth::{Principal, Role, TokenError};
use crate::serving::tickets::{PreparedHandle, QueryTicket, encode_params};

/// The request header with which a client keeps Arrow view types (`gamelake-view-types: keep`).
pub const KEEP_VIEW_TYPES_HEADER: &str = "gamelake-view-types";

/// The action name of Flight's CancelFlightInfo.
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// The Flight SQL service of `gamelake serve`.
pub struct FlightSqlServer {
    engine: Arc<Engine>,
    access: Access,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
    /// Parameters bound to a handle, for clients that keep using the handle they prepared
    /// instead of the one DoPut returns (the returned one carries the values and works on any
    /// replica): bounded per user, expiring with the handle.
    bound: Bound,
}

impl FlightSqlServer {
    /// A service over an engine.
    pub fn new(engine: Arc<Engine>, access: Access) -> crate::Result<Self> {
        let read_only = !access.users.current().iter().any(|u| u.role == Role::Admin);
        Ok(Self {
            engine,
            sql_info: metadata::sql_info(read_only)?,
            xdbc: metadata::xdbc_types()?,
            bound: Bound::new(access.token_ttl),
            access,
        })
    }

    #[allow(clippy::result_large_err)]
    fn sign<T: serde::Serialize>(&self, body: &T, ttl: Duration) -> Result<Bytes, Status> {
        self.access
            .signer
            .sign(body, ttl)
            .map(Bytes::from)
            .map_err(to_status)
    }

    /// Checks a prepared-statement handle and that `who` owns it.
    #[allow(clippy::result_large_err)]
    fn prepared(&self, who: &Principal, handle: &Bytes) -> Result<PreparedHandle, Status> {
        let handle = self
            .bound
            .get(&who.user, handle)
            .unwrap_or_else(|| handle.clone());
        let text = std::str::from_utf8(&handle)
            .map_err(|_| Status::invalid_argument("malformed prepared statement handle"))?;
        let prepared: PreparedHandle = self.access.signer.verify(text).map_err(|e| match e {
            TokenError::Expired => {
                Status::invalid_argument("the prepared statement has expired: prepare it again")
            }
            TokenError::Invalid => Status::invalid_argument("invalid prepared statement handle"),
        })?;
        owned_by(who, &prepared.who)?;
        Ok(prepared)
    }

    /// FlightInfo for a statement: plans it and signs a ticket for DoGet.
    async fn flight_info_for(
        &self,
        who: &Principal,
        sql: &str,
        params: Option<String>,
        metadata: &MetadataMap,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let keep = metadata
            .get(KEEP_VIEW_TYPES_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("keep"));
        let described = self
            .engine
            .describe(who, sql, params, keep)
            .await
            .map_err(to_status)?;
        let handle = self.sign(&described.ticket, self.access.ticket_ttl)?;
        let ticket = TicketStatementQuery {
            statement_handle: handle,
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&described.schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// FlightInfo for a metadata command: the ticket is the command itself.
    #[allow(clippy::result_large_err)]
    fn metadata_info(
        &self,
        command: impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// Cancels the query a FlightInfo's ticket names.
    fn cancel(&self, who: &Principal, info: &FlightInfo) -> bool {
        let tickets = info.endpoint.iter().filter_map(|e| e.ticket.as_ref());
        let mut cancelled = false;
        for ticket in tickets {
            let Ok(any) = Any::decode(ticket.ticket.clone()) else {
                continue;
            };
            let Ok(Some(statement)) = any.unpack::<TicketStatementQuery>() else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(&statement.statement_handle) else {
                continue;
            };
            if let Ok(query) = self.access.signer.verify::<QueryTicket>(text)
                && owned_by(who, &query.who).is_ok()
            {
                cancelled |= self.engine.governor().cancel(&query.id);
            }
        }
        cancelled
    }
}

type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let principal = self.access.login(request.metadata()).await?;
        let token = self
            .access
            .signer
            .sign(&principal, self.access.token_ttl)
            .map_err(to_status)?;
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| Status::internal(e.to_string()))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(token),
        };
        let mut response: Response<HandshakeStream> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = self.access.caller(request.metadata())?;
        let metadata = request.metadata().clone();
        self.flight_info_for(&who, &query.query, None, &metadata, request.into_inner())
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = self.access.caller(request.metadata())?;
        let prepared = self.prepared(&who, &query.prepared_statement_handle)?;
        let metadata = request.metadata().clone();
        self.flight_info_for(
            &who,
            &prepared.sql,
            prepared.params,
            &metadata,
            request.into_inner(),
        )
        .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = self.access.caller(request.metadata())?;
        let text = std::str::from_utf8(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("malformed ticket"))?;
        let query: QueryTicket = self.access.signer.verify(text).map_err(|e| match e {
            TokenError::Expired => Status::invalid_argument(
                "the ticket has expired: call GetFlightInfo again and redeem the ticket sooner",
            ),
            TokenError::Invalid => Status::invalid_argument(
                "invalid ticket (not signed with this server's key: replicas must share --token-secret)",
            ),
        })?;
        owned_by(&who, &query.who)?;
        let (schema, batches) = self.engine.run(query).await.map_err(to_status)?;
        Ok(Response::new(encode(schema, batches)))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.access.caller(request.metadata())?;
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = self.access.caller(request.metadata())?;
        let ctx = self.engine.session().context();
        one_batch(metadata::catalogs(ctx, &who, query.into_builder()).build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.access.caller(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = self.access.caller(request.metadata())?;
        self.engine
            .session()
            .catalog()
            .refresh()
            .await
            .map_err(to_status)?;
        let ctx = self.engine.session().context();
        one_batch(metadata::schemas(ctx, &who, query.into_builder()).build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.access.caller(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = self.access.caller(request.metadata())?;
        self.engine
            .session()
            .catalog()
            .refresh()
            .await
            .map_err(to_status)?;
        let ctx = self.engine.session().context();
        let rules = self.engine.access().current();
        let builder = metadata::tables(ctx, &who, rules.as_deref(), query.into_builder())
            .await
            .map_err(to_status)?;
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.access.caller(request.metadata())?;
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.access.caller(request.metadata())?;
        let mut builder = query.into_builder();
        for kind in metadata::TABLE_TYPES {
            builder.append(kind);
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.access.caller(request.metadata())?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.access.caller(request.metadata())?;
        one_batch(query.into_builder(&self.sql_info).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.access.caller(request.metadata())?;
        let schema = query.into_builder(&self.xdbc).schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.access.caller(request.metadata())?;
        one_batch(query.into_builder(&self.xdbc).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.access.caller(request.metadata())?;
        self.metadata_info(query, &keys::primary(), request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.access.caller(request.metadata())?;
        one_batch(Ok(RecordBatch::new_empty(Arc::new(keys::primary()))))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.access.caller(request.metadata())?;
        self.metadata_info(query, &keys::foreign(), request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.access.caller(request.metadata())?;
        one_batch(Ok(RecordBatch::new_empty(Arc::new(keys::foreign()))))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.access.caller(request.metadata())?;
        self.metadata_info(query, &keys::foreign(), request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.access.caller(request.metadata())?;
        one_batch(Ok(RecordBatch::new_empty(Arc::new(keys::foreign()))))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let who = self.access.caller(request.metadata())?;
        self.engine
            .update(&who, &command.query, None)
            .await
            .map_err(to_status)?;
        Ok(-1)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let who = self.access.caller(request.metadata())?;
        let mut prepared = self.prepared(&who, &query.prepared_statement_handle)?;
        let batch = one_row_of_parameters(request.into_inner()).await?;
        prepared.params = Some(encode_params(&batch).map_err(to_status)?);
        let handle = self.sign(&prepared, self.access.token_ttl)?;
        self.bound
            .insert(&who.user, query.prepared_statement_handle, handle.clone());
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let who = self.access.caller(request.metadata())?;
        let prepared = self.prepared(&who, &query.prepared_statement_handle)?;
        self.engine
            .update(&who, &prepared.sql, prepared.params.as_deref())
            .await
            .map_err(to_status)?;
        Ok(-1)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let who = self.access.caller(request.metadata())?;
        let (dataset, parameters) = self
            .engine
            .prepare(&who, &query.query)
            .await
            .map_err(to_status)?;
        let handle = PreparedHandle {
            sql: query.query,
            who,
            params: None,
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.sign(&handle, self.access.token_ttl)?,
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let who = self.access.caller(request.metadata())?;
        // Only its owner (or an admin) may close a handle; a handle that no longer verifies
        // (expired) has nothing left to close.
        let handle = &query.prepared_statement_handle;
        match self.prepared(&who, handle) {
            Ok(_) => {
                self.bound.remove(&who.user, handle);
                Ok(())
            }
            Err(status) if status.code() == tonic::Code::PermissionDenied => Err(status),
            Err(_) => Ok(()),
        }
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let who = self.access.caller(request.metadata())?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("malformed FlightInfo: {e}")))?;
        // ActionCancelQueryResult.CancelResult numbers its values as CancelStatus does
        // (arrow-flight does not export the nested enum).
        let result = if self.cancel(&who, &info) {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        };
        Ok(ActionCancelQueryResult {
            result: result as i32,
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        if request.get_ref().r#type != CANCEL_FLIGHT_INFO {
            return Err(Status::invalid_argument(format!(
                "unknown action {}",
                request.get_ref().r#type
            )));
        }
        let who = self.access.caller(request.metadata())?;
        let cancel = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .map_err(|e| Status::invalid_argument(format!("malformed CancelFlightInfo: {e}")))?;
        let info = cancel
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo without a FlightInfo"))?;
        let status = if self.cancel(&who, &info) {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        };
        let body = CancelFlightInfoResult {
            status: status as i32,
        }
        .encode_to_vec();
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: CANCEL_FLIGHT_INFO.to_string(),
            description: "Cancels a running query: body CancelFlightInfoRequest".to_string(),
        })])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
