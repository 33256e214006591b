//! The Postgres protocol handlers of one client connection.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt, StreamExt, stream};
use lookout_query::{Access, CopyReceiver, Lookout, Output, Prepared, QueryError, Session};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_describe_response};
use pgwire::api::results::{
    CopyResponse, DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{
    Describe, Execute, PortalSuspended, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use tokio::sync::Mutex;

use crate::auth::{Admission, RoleLimits};
use crate::cancel::{CancelRegistry, CancelSlot};
use crate::types::{arrow_type_of, decode_param, encode_rows, fields, pg_type};
use lookout_query::SqlState;

/// A `COPY ... FROM STDIN` in progress.
struct CopyState {
    receiver: Option<CopyReceiver>,
    /// The first error; later data is discarded until the client ends the copy.
    error: Option<QueryError>,
}

/// The state of one client connection.
pub(crate) struct Connection {
    session: Arc<Mutex<Session>>,
    copy: Mutex<Option<CopyState>>,
    planner: Arc<Planner>,
    /// Every connection's cancel slot, for CancelRequests.
    registry: Arc<CancelRegistry>,
    /// This connection's.
    cancel: Arc<CancelSlot>,
    /// The process id and secret key the client got, once started.
    key: std::sync::Mutex<Option<(i32, pgwire::messages::startup::SecretKey)>>,
    /// Counts the connection among its user's while it is open.
    admission: std::sync::Mutex<Option<Admission>>,
}

impl Connection {
    pub(crate) fn new(lookout: &Lookout, registry: Arc<CancelRegistry>) -> Arc<Connection> {
        let session = Arc::new(Mutex::new(lookout.session()));
        Arc::new(Connection {
            planner: Arc::new(Planner {
                session: Arc::clone(&session),
            }),
            session,
            copy: Mutex::new(None),
            registry,
            cancel: Arc::default(),
            key: std::sync::Mutex::new(None),
            admission: std::sync::Mutex::new(None),
        })
    }

    /// Lets a CancelRequest stop the statement about to run.
    fn cancelable(&self, session: &mut Session) {
        session.cancel_next_on(self.cancel.next_statement());
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let key = self.key.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((pid, secret)) = key {
            self.registry.unregister(pid, &secret);
        }
    }
}

pub(crate) fn user_error(e: &QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

fn error_info(e: &QueryError) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".to_owned(), e.sqlstate().to_owned(), e.to_string());
    info.hint = e.hint();
    info
}

fn command_tag(tag: &str, rows: Option<u64>) -> Tag {
    let t = Tag::new(tag);
    match (tag, rows) {
        ("INSERT", Some(n)) => t.with_oid(0).with_rows(n as usize),
        (_, Some(n)) => t.with_rows(n as usize),
        (_, None) => t,
    }
}

impl Connection {
    /// Turns an `Output` into a pgwire response; `format` applies to rows.
    async fn respond(&self, output: Output, format: &Format) -> PgWireResult<Response> {
        match output {
            // Drivers track the transaction status from ReadyForQuery.
            Output::Command { tag: "BEGIN", .. } => {
                Ok(Response::TransactionStart(Tag::new("BEGIN")))
            }
            Output::Command {
                tag: tag @ ("COMMIT" | "ROLLBACK"),
                ..
            } => Ok(Response::TransactionEnd(Tag::new(tag))),
            Output::Command {
                tag: "ROLLBACK TO", ..
            } => Ok(Response::Execution(Tag::new("ROLLBACK"))),
            Output::Command { tag, rows } => Ok(Response::Execution(command_tag(tag, rows))),
            Output::Rows { schema, stream } => {
                Ok(Response::Query(query_response(&schema, stream, format)))
            }
            Output::Tagged {
                tag,
                schema,
                stream,
            } => {
                let mut response = query_response(&schema, stream, format);
                // pgwire adds the row count; INSERT's tag carries an oid first.
                response.set_command_tag(if tag == "INSERT" { "INSERT 0" } else { tag });
                Ok(Response::Query(response))
            }
            Output::CopyIn(target) => {
                let columns = target.schema.fields().len();
                let format = match target.format.kind {
                    lookout_query::CopyKind::Binary => 1,
                    _ => 0,
                };
                let receiver = {
                    let session = self.session.lock().await;
                    session.copy_receiver(&target).map_err(|e| user_error(&e))?
                };
                *self.copy.lock().await = Some(CopyState {
                    receiver: Some(receiver),
                    error: None,
                });
                Ok(Response::CopyIn(CopyResponse::new(
                    format,
                    columns,
                    stream::empty(),
                )))
            }
            Output::CopyOut {
                format: copy_format,
                schema,
                stream: rows,
            } => {
                let columns = schema.fields().len();
                let mut encoder = Session::copy_encoder(&copy_format);
                let header = encoder
                    .header(&schema)
                    .map(|h| Ok(CopyData::new(h.into_bytes().into())));
                let body = rows
                    .map(move |batch| match batch {
                        Ok(b) => {
                            let mut out = Vec::with_capacity(b.num_rows());
                            for row in 0..b.num_rows() {
                                let mut line = String::new();
                                encoder.encode_row(&b, row, &mut line);
                                out.push(Ok(CopyData::new(line.into_bytes().into())));
                            }
                            stream::iter(out)
                        }
                        Err(e) => stream::iter(vec![Err(user_error(&QueryError::from(e)))]),
                    })
                    .flatten();
                let all = stream::iter(header).chain(body);
                Ok(Response::CopyOut(CopyResponse::new(0, columns, all)))
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = {
            let session = self.session.lock().await;
            match session.parse(query) {
                Ok(s) => s,
                Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
            }
        };
        if statements.is_empty() {
            // Only whitespace, semicolons or comments: pgx pings with "-- ping".
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for stmt in statements {
            let output = {
                let mut session = self.session.lock().await;
                self.cancelable(&mut session);
                session.execute(stmt).await
            };
            let is_copy_in = matches!(output, Ok(Output::CopyIn(_)));
            match output {
                Ok(out) => responses.push(self.respond(out, &Format::UnifiedText).await?),
                Err(e) => {
                    // Like Postgres: the rest of a multi-statement string is skipped.
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
            if is_copy_in {
                break;
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut copy = self.copy.lock().await;
        if let Some(state) = copy.as_mut()
            && state.error.is_none()
            && let Some(receiver) = state.receiver.as_mut()
            && let Err(e) = receiver.push(&copy_data.data).await
        {
            state.error = Some(e);
            if let Some(receiver) = state.receiver.take() {
                receiver.abandon().await;
            }
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(state) = self.copy.lock().await.take() else {
            return Err(user_error(&QueryError::new(
                SqlState::ProtocolViolation,
                "no COPY in progress",
            )));
        };
        if let Some(e) = state.error {
            return Err(user_error(&e));
        }
        let Some(receiver) = state.receiver else {
            return Err(user_error(&QueryError::new(
                SqlState::ProtocolViolation,
                "no COPY in progress",
            )));
        };
        let rows = {
            let session = self.session.lock().await;
            receiver
                .finish(&session)
                .await
                .map_err(|e| user_error(&e))?
        };
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows as usize).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = self.copy.lock().await.take();
        if let Some(receiver) = state.and_then(|s| s.receiver) {
            receiver.abandon().await;
        }
        user_error(&QueryError::new(
            SqlState::QueryCanceled,
            format!("COPY from stdin failed: {}", fail.message),
        ))
    }
}

/// Plans statements for the extended protocol in the connection's session.
pub(crate) struct Planner {
    session: Arc<Mutex<Session>>,
}

#[async_trait]
impl QueryParser for Planner {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = self.session.lock().await;
        session
            .prepare(sql)
            .await
            .map(|p| p.map(Arc::new))
            .map_err(|e| user_error(&e))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .param_types
            .iter()
            .map(|t| t.as_ref().map_or(Type::UNKNOWN, pg_type))
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &stmt.schema {
            Some(schema) => fields(schema, column_format.unwrap_or(&Format::UnifiedText)),
            None => Vec::new(),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Arc<Prepared>;
    type QueryParser = Planner;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.planner)
    }

    /// A cursor declared in SQL (`DECLARE "c" CURSOR FOR ...`) is a portal
    /// too: psycopg's server-side cursors (and SQLAlchemy's and pandas'
    /// streaming on them) describe it before they `FETCH` from it.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT
            && let Some(Entry::Value(stmt)) = client.portal_store().get_statement(name)
        {
            let response = self.do_describe_statement(client, &stmt).await?;
            if response.fields.is_empty() {
                // A statement with parameters and no result columns (an
                // INSERT) is NoData; an empty RowDescription would tell
                // pgjdbc it returns rows.
                let oids = response.parameters.iter().map(|t| t.oid()).collect();
                client
                    .send(PgWireBackendMessage::ParameterDescription(
                        ParameterDescription::new(oids),
                    ))
                    .await?;
                client
                    .send(PgWireBackendMessage::NoData(NoData::new()))
                    .await?;
                return Ok(());
            }
            return send_describe_response(client, &response).await;
        }
        let cursor = message.target_type == TARGET_TYPE_BYTE_PORTAL
            && client.portal_store().get_portal(name).is_none()
            && name != DEFAULT_NAME
            && !name.is_empty();
        if !cursor {
            return self._on_describe(client, message).await;
        }
        let schema = {
            let session = self.session.lock().await;
            // The name exactly as declared (folded unless quoted), as in PostgreSQL.
            session.cursor_schema(name).map_err(|e| user_error(&e))?
        };
        let response = DescribePortalResponse::new(fields(&schema, &Format::UnifiedText));
        send_describe_response(client, &response).await
    }

    /// Execute of a cursor declared in SQL, as a portal: up to the
    /// message's row limit, then PortalSuspended while rows remain, or
    /// `SELECT n` at the end, as PostgreSQL answers.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // pgwire keeps the unnamed portal under DEFAULT_NAME.
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) if portal.statement.statement.schema.is_some() => {
                return self
                    .execute_streaming(client, portal, message.max_rows)
                    .await;
            }
            Some(_) => return self._on_execute(client, message).await,
            None if name == DEFAULT_NAME || name.is_empty() => {
                return self._on_execute(client, message).await;
            }
            None => {}
        }
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let limit = usize::try_from(message.max_rows).ok().filter(|&n| n > 0);
        let fetched = {
            let mut session = self.session.lock().await;
            if session.cursor_schema(name).is_err() {
                Err(QueryError::new(
                    SqlState::InvalidCursorName,
                    format!("portal \"{name}\" does not exist"),
                ))
            } else {
                self.cancelable(&mut session);
                session.execute_cursor_portal(name, limit).await
            }
        };
        client.set_state(PgWireConnectionState::ReadyForQuery);
        let (schema, batches) = fetched.map_err(|e| user_error(&e))?;
        let fields = fields(&schema, &Format::UnifiedText);
        let mut sent = 0;
        for batch in &batches {
            let mut rows = Vec::with_capacity(batch.num_rows());
            encode_rows(batch, &fields, &mut rows);
            for row in rows {
                client.feed(PgWireBackendMessage::DataRow(row)).await?;
                sent += 1;
            }
        }
        // As PostgreSQL: suspended whenever the limit was reached, even if
        // no row remains (the next Execute then completes with SELECT 0).
        if limit == Some(sent) {
            client
                .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                .await?;
        } else {
            client
                .send(PgWireBackendMessage::CommandComplete(
                    Tag::new("SELECT").with_rows(sent).into(),
                ))
                .await?;
        }
        Ok(())
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &target.statement;
        let params = (0..stmt.param_types.len().max(target.parameter_types.len()))
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|t| *t != Type::UNKNOWN)
                    .or_else(|| {
                        stmt.param_types
                            .get(i)
                            .cloned()
                            .flatten()
                            .map(|t| match pg_type(&t) {
                                Type::INT4_ARRAY if stmt.catalog => Type::OID_ARRAY,
                                ty => ty,
                            })
                    })
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        let fields = match &stmt.schema {
            Some(schema) => fields(schema, &Format::UnifiedText),
            None => Vec::new(),
        };
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = match &portal.statement.statement.schema {
            Some(schema) => fields(schema, &portal.result_column_format),
            None => Vec::new(),
        };
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let mut params = Vec::with_capacity(portal.parameters.len());
        for (i, raw) in portal.parameters.iter().enumerate() {
            let wire = portal
                .statement
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN);
            let planned = prepared.param_types.get(i).cloned().flatten();
            let target = planned
                .or_else(|| wire.as_ref().and_then(arrow_type_of))
                .unwrap_or(arrow::datatypes::DataType::Utf8);
            let wire = wire.unwrap_or_else(|| pg_type(&target));
            let value = decode_param(
                raw.as_deref(),
                portal.parameter_format.is_binary(i),
                &wire,
                &target,
            )
            .map_err(|m| {
                user_error(&QueryError::new(
                    SqlState::InvalidTextRepresentation,
                    format!("parameter ${}: {m}", i + 1),
                ))
            })?;
            params.push(value);
        }
        let output = {
            let mut session = self.session.lock().await;
            self.cancelable(&mut session);
            session
                .execute_prepared(prepared, params)
                .await
                .map_err(|e| user_error(&e))?
        };
        self.respond(output, &portal.result_column_format).await
    }
}

impl Connection {
    /// Execute of a portal whose statement returns rows: its rows go to the
    /// client as the query produces them, up to the message's row limit.
    /// (pgwire's own Execute collects every row of the portal first, which
    /// held a whole result in memory on every extended-protocol query.)
    async fn execute_streaming<C>(
        &self,
        client: &mut C,
        portal: Arc<Portal<Arc<Prepared>>>,
        max_rows: i32,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Arc<Prepared>>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut transaction = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let limit = usize::try_from(max_rows).ok().filter(|&n| n > 0);
        let state = portal.state();
        let mut state = state.lock().await;
        if matches!(*state, PortalExecutionState::Initial) {
            match ExtendedQueryHandler::do_query(self, client, portal.as_ref(), limit.unwrap_or(0))
                .await?
            {
                Response::Query(rows) => *state = PortalExecutionState::Suspended(rows),
                Response::Error(error) => {
                    client
                        .send(PgWireBackendMessage::ErrorResponse((*error).into()))
                        .await?;
                    transaction = transaction.to_error_state();
                    *state = PortalExecutionState::Finished;
                }
                Response::Execution(tag) => {
                    client
                        .send(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                    *state = PortalExecutionState::Finished;
                }
                _ => {
                    return Err(user_error(&QueryError::new(
                        SqlState::InternalError,
                        "a statement that returns rows answered otherwise",
                    )));
                }
            }
            if !matches!(*state, PortalExecutionState::Suspended(_)) {
                client.set_state(PgWireConnectionState::ReadyForQuery);
                client.set_transaction_status(transaction);
                return Ok(());
            }
        }
        let (tag, exhausted, sent) = match &mut *state {
            PortalExecutionState::Suspended(response) => {
                let tag = response.command_tag().to_owned();
                let rows = response.data_rows();
                let mut sent = 0;
                let mut exhausted = false;
                while limit.is_none_or(|n| sent < n) {
                    match rows.next().await {
                        Some(row) => {
                            client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                            sent += 1;
                        }
                        None => {
                            exhausted = true;
                            break;
                        }
                    }
                }
                (tag, exhausted, sent)
            }
            // Read to its end by an earlier Execute.
            _ => ("SELECT".to_string(), true, 0),
        };
        if exhausted {
            *state = PortalExecutionState::Finished;
            client
                .send(PgWireBackendMessage::CommandComplete(
                    Tag::new(&tag).with_rows(sent).into(),
                ))
                .await?;
        } else {
            client
                .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                .await?;
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(transaction);
        Ok(())
    }

    /// Once the client is in: its cancel key works, and the session runs as
    /// its user with `access`.
    pub(crate) async fn started(&self, client: ClientIdentity, access: Access) {
        let ClientIdentity { pid, secret, user } = client;
        self.registry
            .register(pid, &secret, Arc::clone(&self.cancel));
        *self.key.lock().unwrap_or_else(|p| p.into_inner()) = Some((pid, secret));
        self.session.lock().await.set_user(&user, access);
    }

    /// Holds the connection to its user's limits; `admission` counts it
    /// among the user's open connections until it closes.
    pub(crate) async fn held_to(&self, admission: Admission, limits: RoleLimits) {
        *self.admission.lock().unwrap_or_else(|p| p.into_inner()) = Some(admission);
        if let Some(ms) = limits.statement_timeout_ms {
            self.session
                .lock()
                .await
                .limit_statement_time(std::time::Duration::from_millis(ms));
        }
    }
}

/// Who a started client is.
pub(crate) struct ClientIdentity {
    pid: i32,
    secret: pgwire::messages::startup::SecretKey,
    user: String,
}

impl ClientIdentity {
    pub(crate) fn of<C: ClientInfo>(client: &C) -> ClientIdentity {
        let (pid, secret) = client.pid_and_secret_key();
        let user = client
            .metadata()
            .get(pgwire::api::METADATA_USER)
            .cloned()
            .unwrap_or_else(|| "lookout".to_string());
        ClientIdentity { pid, secret, user }
    }
}

impl Connection {
    /// Every connection's cancel slot, for the CancelRequests pgwire hands over.
    pub(crate) fn cancel_registry(&self) -> Arc<CancelRegistry> {
        Arc::clone(&self.registry)
    }
}

/// Rows encoded for the wire as the engine produces them.
fn query_response<S, E>(
    schema: &arrow::datatypes::SchemaRef,
    stream: S,
    format: &Format,
) -> QueryResponse
where
    S: futures::Stream<Item = Result<arrow::array::RecordBatch, E>> + Send + 'static,
    QueryError: From<E>,
{
    let fields = Arc::new(fields(schema, format));
    let row_fields = Arc::clone(&fields);
    let rows = stream
        .map(move |batch| match batch {
            Ok(b) => {
                let mut out = Vec::with_capacity(b.num_rows());
                encode_rows(&b, &row_fields, &mut out);
                stream::iter(out.into_iter().map(Ok).collect::<Vec<_>>())
            }
            Err(e) => stream::iter(vec![Err(user_error(&QueryError::from(e)))]),
        })
        .flatten();
    QueryResponse::new(fields, rows)
}
