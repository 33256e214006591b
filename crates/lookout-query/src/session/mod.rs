//! One SQL conversation: statements Lookout handles itself (DDL, COPY, SET,
//! SHOW) and everything else planned and run by DataFusion.
//!
//! This file holds the session and its dispatch (parsing, access checks,
//! transaction blocks, interrupts); each concern's statements are `impl
//! Session` blocks of their own files: `ddl.rs`, `settings.rs`, `copy.rs`
//! and `copy_in.rs`, `cursors.rs`, `prepare.rs` (prepared statements and plans).

mod copy;
pub(crate) mod copy_in;
mod cursors;
mod ddl;
pub(crate) mod plan_cache;
#[cfg(test)]
mod plan_cache_tests;
pub(crate) mod prepare;
pub(crate) mod settings;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{self, Expr as SqlExpr, Ident, ObjectType, Statement, Value};
use futures::StreamExt;

use crate::Lookout;
use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::{Command, Output, batches_stream, ident_name, split_statements, table_name};
use crate::table::catalog::{InformationSchema, LookoutSchema, SystemSchema};
use crate::transaction::{Block, TransactionState};

/// One SQL session with its own settings (`SET lookout.now`, ...).
pub struct Session {
    lookout: Lookout,
    ctx: SessionContext,
    fixed_now: Option<DateTime<Utc>>,
    settings: BTreeMap<String, String>,
    /// Every setting's current value, as `current_setting()` reads it.
    published: crate::functions::SettingValues,
    /// Completes to cancel the next statement (in a mutex: a session is
    /// shared by reference while views are planned).
    cancel: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
    /// The longest the user's statements may run, whatever the session
    /// sets (`ALTER ROLE ... SET statement_timeout`).
    statement_time_limit: Option<std::time::Duration>,
    /// Open cursors.
    cursors: Arc<crate::cursor::Cursors>,
    /// Who is connected, and what they may do.
    user: String,
    access: crate::ext::Access,
    /// The open (or failed) transaction block, if any.
    transaction: TransactionState,
    /// Plans of the queries this session ran recently.
    plans: std::sync::Mutex<plan_cache::PlanCache>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("fixed_now", &self.fixed_now)
            .finish()
    }
}

fn parse_error(e: impl std::fmt::Display) -> QueryError {
    let msg = e.to_string();
    QueryError::syntax(
        msg.strip_prefix("sql parser error: ")
            .unwrap_or(&msg)
            .to_string(),
    )
}

fn parse_sql(sql: &str) -> Result<Vec<Statement>> {
    check_complexity(sql)?;
    crate::pg::compat::parse_sql(sql).map_err(|e| match e.to_string() {
        m if m.contains("recursion limit exceeded") => too_complex("expressions nested too deeply"),
        _ => parse_error(e),
    })
}

/// The most operators one piece of SQL may hold. Expressions are trees
/// walked recursively by the planner and the executor; this bounds their
/// depth so that every statement under it plans and runs within the stacks
/// the server gives its threads (PostgreSQL's `max_stack_depth`, 54001).
pub(crate) const MAX_OPERATORS: usize = 10_000;

fn too_complex(detail: &str) -> QueryError {
    QueryError::new(
        SqlState::StatementTooComplex,
        format!("statement too complex: {detail}; split it or use IN (...) lists and joins"),
    )
}

/// Counts the operators of `sql` (outside literals and comments) when it is
/// long enough to hold more than [`MAX_OPERATORS`].
fn check_complexity(sql: &str) -> Result<()> {
    use crate::pg::dialect::Postgres;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    // Every operator needs an operand beside it.
    if sql.len() <= 2 * MAX_OPERATORS {
        return Ok(());
    }
    let Ok(tokens) = Tokenizer::new(&Postgres, sql).tokenize() else {
        return Ok(()); // the parser reports the error
    };
    let operators = tokens
        .iter()
        .filter(|t| match t {
            Token::Word(w) => matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::NOT),
            t => matches!(
                t,
                Token::Plus
                    | Token::Minus
                    | Token::Mul
                    | Token::Div
                    | Token::Mod
                    | Token::StringConcat
                    | Token::Eq
                    | Token::DoubleEq
                    | Token::Neq
                    | Token::Lt
                    | Token::Gt
                    | Token::LtEq
                    | Token::GtEq
                    | Token::Caret
                    | Token::Ampersand
                    | Token::Pipe
                    | Token::DoubleColon
                    | Token::Arrow
                    | Token::LongArrow
            ),
        })
        .count();
    if operators > MAX_OPERATORS {
        return Err(too_complex(&format!(
            "{operators} operators, more than {MAX_OPERATORS}"
        )));
    }
    Ok(())
}

fn option_text(expr: &SqlExpr) -> Option<String> {
    match expr {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            other => Some(other.to_string()),
        },
        SqlExpr::Identifier(i) => Some(i.value.clone()),
        SqlExpr::UnaryOp { op, expr } => option_text(expr).map(|t| format!("{op}{t}")),
        other => Some(other.to_string()),
    }
}

impl Session {
    pub(crate) fn new(lookout: Lookout) -> Session {
        let threads = match lookout.options().query_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let mut config = SessionConfig::new()
            // Our own information_schema (pg_compat) speaks Postgres type names.
            .with_information_schema(false)
            .with_default_catalog_and_schema("lookout", "public")
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(threads)
            .with_extension(Arc::clone(lookout.column_cache()));
        let opts = config.options_mut();
        opts.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        opts.execution.parquet.pushdown_filters = false;
        // now() and casts to timestamptz are in UTC, the zone every timestamp is shown in.
        opts.execution.time_zone = Some("UTC".to_string());
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(lookout.runtime())
            .with_default_features()
            .with_type_planner(crate::pg::compat::type_planner())
            .with_physical_optimizer_rule(Arc::new(
                crate::table::partition_aggregate::PartitionKeyAggregation,
            ))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let catalog = MemoryCatalogProvider::new();
        let user_schemas: Vec<(&'static str, Arc<dyn SchemaProvider>)> = vec![
            ("lookout", Arc::new(SystemSchema::new(lookout.clone()))),
            ("public", Arc::new(LookoutSchema::new(lookout.clone()))),
        ];
        for (name, schema) in &user_schemas {
            // Registering a schema on a fresh in-memory catalog cannot fail.
            let _ = catalog.register_schema(name, Arc::clone(schema));
        }
        let catalog: Arc<dyn CatalogProvider> = Arc::new(catalog);
        ctx.register_catalog("lookout", Arc::clone(&catalog));
        let information_schema = Arc::new(InformationSchema::new(lookout.clone()));
        let published = crate::functions::SettingValues::default();
        let cursors = Arc::new(crate::cursor::Cursors::default());
        if let Err(e) = crate::pg::compat::register(
            &ctx,
            &lookout,
            &catalog,
            user_schemas,
            information_schema,
            published.clone(),
            Arc::clone(&cursors),
        ) {
            // Only the static catalog data can fail to load; plain SQL still works.
            tracing::error!("pg_catalog unavailable: {e}");
        }
        crate::functions::register(&ctx);
        ctx.register_udf(crate::functions::current_setting(published.clone()));
        ctx.register_udf(crate::functions::set_config(published.clone()));
        for udf in crate::functions::session_users(published.clone()) {
            ctx.register_udf(udf);
        }
        let plans =
            plan_cache::PlanCache::new(lookout.options().plan_cache, lookout.plan_cache_stats());
        let session = Session {
            lookout,
            ctx,
            fixed_now: None,
            settings: BTreeMap::new(),
            published,
            cancel: std::sync::Mutex::new(None),
            statement_time_limit: None,
            cursors,
            user: "lookout".to_string(),
            access: crate::ext::Access::Admin,
            transaction: TransactionState::Idle,
            plans: std::sync::Mutex::new(plans),
        };
        session.publish();
        session
    }

    /// Makes the settings as they now are visible to `current_setting()`,
    /// and drops the plans made under the settings before.
    fn publish(&self) {
        self.plan_cache().clear();
        let values = self
            .setting_names()
            .into_iter()
            .filter_map(|n| self.setting(&n).map(|v| (n, v)))
            .collect();
        self.published.replace(values);
    }

    fn plan_cache(&self) -> std::sync::MutexGuard<'_, plan_cache::PlanCache> {
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instant `now()` returns in this session, if fixed by `SET lookout.now`.
    pub fn fixed_now(&self) -> Option<DateTime<Utc>> {
        self.fixed_now
    }

    /// This session's "now" in microseconds since the epoch: `SET
    /// lookout.now` if set, else the clock (for statements that act "now":
    /// leases, alert anchors, sampling decisions).
    pub fn now_micros(&self) -> i64 {
        self.fixed_now.map_or_else(
            || self.lookout.storage().clock().now_micros(),
            |t| t.timestamp_micros(),
        )
    }

    /// Splits SQL text into statements, Lookout's own and those extensions claim.
    pub fn parse(&self, sql: &str) -> Result<Vec<Command>> {
        let extensions = self.lookout.extensions();
        let mut commands = Vec::new();
        for piece in split_statements(sql) {
            let claimed = crate::table::external::parse(&self.lookout, piece)
                .or_else(|| extensions.iter().find_map(|e| e.parse(piece)));
            match claimed {
                Some(statement) => commands.push(Command::Extension(Arc::from(statement?))),
                None => commands.extend(parse_sql(piece)?.into_iter().map(Command::Sql)),
            }
        }
        Ok(commands)
    }

    /// Plans a query without running it (views are planned this way).
    pub async fn logical_plan(&self, sql: &str) -> Result<LogicalPlan> {
        let stmt = parse_sql(sql)?
            .pop()
            .ok_or_else(|| QueryError::syntax("empty view definition"))?;
        Ok(self
            .state()
            .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
            .await?)
    }

    /// Runs a plan made by [`Session::logical_plan`].
    pub async fn execute_logical(
        &self,
        plan: LogicalPlan,
    ) -> Result<datafusion::execution::SendableRecordBatchStream> {
        self.lookout
            .query_runtime()
            .execute(DataFrame::new(self.state(), plan))
            .await
    }

    /// The database this session belongs to.
    pub fn lookout(&self) -> &Lookout {
        &self.lookout
    }

    /// Runs every statement of `sql` and returns the rows of the last one.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut last = Vec::new();
        for stmt in self.parse(sql)? {
            last = match self.execute(stmt).await? {
                Output::Rows { mut stream, .. }
                | Output::Tagged { mut stream, .. }
                | Output::CopyOut { mut stream, .. } => {
                    let mut batches = Vec::new();
                    while let Some(b) = stream.next().await {
                        batches.push(b?);
                    }
                    batches
                }
                Output::Command { .. } => Vec::new(),
                Output::CopyIn(_) => {
                    return Err(QueryError::unsupported(
                        "COPY FROM STDIN needs a client connection",
                    ));
                }
            };
        }
        Ok(last)
    }

    /// The state one statement plans and runs with: it starts now (for
    /// `now()`), reads each table from a snapshot taken when it first scans
    /// it, so a plan kept by a prepared statement or a cursor answers from
    /// the data of its own execution, and carries who runs it, so every
    /// table it touches is checked against the session's rights.
    fn state(&self) -> datafusion::execution::SessionState {
        let mut state = self.ctx.state();
        let config = state.config_mut();
        config.set_extension(Arc::new(crate::table::provider::QuerySnapshots::default()));
        config.set_extension(Arc::new(crate::access::Principal::new(
            &self.user,
            self.access,
            self.lookout.clone(),
        )));
        if let TransactionState::Open(block) = &self.transaction {
            config.set_extension(Arc::clone(block));
        }
        if let Some(t) = self.fixed_now {
            state.execution_props_mut().query_execution_start_time = Some(t);
        }
        state
    }

    /// Refuses what may not run now: anything but `ROLLBACK` in a failed
    /// block, and statements a block cannot hold back (DDL, alert and
    /// review statements, bulk loads), which are refused rather than
    /// applied outside the block.
    fn admit(&mut self, command: &Command) -> Result<()> {
        if let TransactionState::Open(block) = &self.transaction
            && block.has_failed()
        {
            self.transaction = TransactionState::Failed(Arc::clone(block));
        }
        match (&self.transaction, command) {
            (
                TransactionState::Failed(_),
                Command::Sql(Statement::Commit { .. } | Statement::Rollback { .. }),
            ) => Ok(()),
            (TransactionState::Failed(_), _) => Err(crate::transaction::aborted()),
            (TransactionState::Open(block), command) if !fits_in_block(command) => {
                self.transaction = TransactionState::Failed(Arc::clone(block));
                Err(QueryError::unsupported(format!(
                    "{} cannot run inside a transaction block: DDL, alert, review and role statements are not transactional in Lookout; run it outside a block (in autocommit). Inside a block: queries, INSERT, UPDATE, DELETE, TRUNCATE, COPY, cursors, savepoints and settings",
                    command_name(command)
                )))
            }
            _ => Ok(()),
        }
    }

    /// An error inside a block fails the block, as in PostgreSQL.
    fn settle(&mut self, result: Result<Output>) -> Result<Output> {
        let TransactionState::Open(block) = &self.transaction else {
            return result;
        };
        // Rows are read after the statement returns: an error among them
        // fails the block too.
        let watch = |stream: datafusion::execution::SendableRecordBatchStream| {
            let block = Arc::clone(block);
            let schema = stream.schema();
            let watched = stream.inspect(move |item| {
                if item.is_err() {
                    block.fail();
                }
            });
            Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, watched),
            ) as datafusion::execution::SendableRecordBatchStream
        };
        match result {
            Err(e) => {
                self.transaction = TransactionState::Failed(Arc::clone(block));
                Err(e)
            }
            Ok(Output::Rows { schema, stream }) => Ok(Output::Rows {
                schema,
                stream: watch(stream),
            }),
            Ok(Output::CopyOut {
                format,
                schema,
                stream,
            }) => Ok(Output::CopyOut {
                format,
                schema,
                stream: watch(stream),
            }),
            other => other,
        }
    }

    /// The block a savepoint statement works on.
    fn block(&self, statement: &str) -> Result<Arc<Block>> {
        match &self.transaction {
            TransactionState::Open(block) | TransactionState::Failed(block) => {
                Ok(Arc::clone(block))
            }
            TransactionState::Idle => Err(QueryError::new(
                SqlState::NoActiveSqlTransaction,
                format!("{statement} can only be used in transaction blocks"),
            )),
        }
    }

    /// Whether a transaction block is open (or failed and awaiting `ROLLBACK`).
    pub fn in_transaction(&self) -> bool {
        !matches!(self.transaction, TransactionState::Idle)
    }

    /// `COMMIT`: the block's writes become one durable commit.
    async fn commit(&mut self) -> Result<Output> {
        match std::mem::take(&mut self.transaction) {
            TransactionState::Open(block) => {
                let committed = self.lookout.ingest().commit(block.take()).await;
                self.cursors.end_transaction(committed.is_ok());
                committed?;
                Ok(Output::Command {
                    tag: "COMMIT",
                    rows: None,
                })
            }
            // A failed block rolls back, and says so.
            TransactionState::Failed(_) => {
                self.cursors.end_transaction(false);
                Ok(Output::Command {
                    tag: "ROLLBACK",
                    rows: None,
                })
            }
            TransactionState::Idle => Ok(Output::Command {
                tag: "COMMIT",
                rows: None,
            }),
        }
    }

    /// The session's catalog, to check that it is freed with the session.
    #[cfg(test)]
    pub(crate) fn catalog_for_tests(&self) -> std::sync::Weak<dyn CatalogProvider> {
        match self.ctx.catalog("lookout") {
            Some(catalog) => Arc::downgrade(&catalog),
            None => std::sync::Weak::<MemoryCatalogProvider>::new(),
        }
    }

    /// The user the session runs as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// What the session may do.
    pub fn access(&self) -> crate::ext::Access {
        self.access
    }

    /// Runs one statement.
    pub async fn execute(&mut self, command: Command) -> Result<Output> {
        let kind = crate::metrics::statement_kind(&command);
        let started = std::time::Instant::now();
        let result = self.execute_admitted(command).await;
        self.lookout
            .query_metrics()
            .observe(kind, started, result.is_ok());
        result
    }

    async fn execute_admitted(&mut self, command: Command) -> Result<Output> {
        crate::access::check(&self.user, self.access, &command, |t| {
            self.lookout.is_restricted(t)
        })?;
        self.admit(&command)?;
        self.apply_set_config();
        let interrupt = self.interrupt();
        // Boxed: statement futures are large, and extensions nest them.
        let result =
            crate::interrupt::bounded(interrupt, Box::pin(self.execute_command(command))).await;
        self.settle(result)
    }

    async fn execute_command(&mut self, command: Command) -> Result<Output> {
        match command {
            Command::Sql(stmt) => self.execute_statement(stmt).await,
            Command::Extension(statement) => statement.execute(self).await,
        }
    }

    /// What stops the statement about to run: `statement_timeout`, and the
    /// cancel signal given with [`Session::cancel_next_on`].
    fn interrupt(&mut self) -> Option<crate::interrupt::Interrupt> {
        let set = self
            .settings
            .get("statement_timeout")
            .and_then(|v| crate::interrupt::parse(v).ok().flatten());
        let timeout = match (set, self.statement_time_limit) {
            (Some(set), Some(limit)) => Some(set.min(limit)),
            (set, limit) => set.or(limit),
        };
        let cancel = self.cancel.lock().unwrap_or_else(|p| p.into_inner()).take();
        crate::interrupt::interrupt(timeout, cancel)
    }

    /// Cancels the next statement (with SQLSTATE 57014) if `signal`
    /// completes while it runs or while its rows are read; the server passes
    /// a client's CancelRequest this way.
    pub fn cancel_next_on(&mut self, signal: impl Future<Output = ()> + Send + 'static) {
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::pin(signal));
    }

    async fn execute_statement(&mut self, stmt: Statement) -> Result<Output> {
        match stmt {
            Statement::CreateTable(ct) => self.create_table(ct).await,
            Statement::AlterTable(at) => self.alter_table(at).await,
            Statement::CreateView(view) => self.create_view(view).await,
            Statement::Drop {
                object_type: object_type @ (ObjectType::Table | ObjectType::View),
                if_exists,
                names,
                ..
            } => {
                let storage = self.lookout.storage();
                for name in &names {
                    let name = table_name(name)?;
                    match object_type {
                        ObjectType::View => storage.drop_view(&name, if_exists).await?,
                        // DROP TABLE on an external table forgets it, as
                        // DROP EXTERNAL TABLE does; its data is not touched.
                        _ if storage.external_table(&name)?.is_some() => {
                            storage.drop_external_table(&name, if_exists).await?
                        }
                        _ => {
                            self.lookout.ingest().dropping(&name).await?;
                            storage.drop_table(&name, if_exists).await?
                        }
                    };
                }
                Ok(Output::Command {
                    tag: match object_type {
                        ObjectType::View => "DROP VIEW",
                        _ => "DROP TABLE",
                    },
                    rows: None,
                })
            }
            Statement::Comment {
                object_type,
                object_name,
                comment,
                if_exists,
            } => {
                crate::pg::comments::comment_on(
                    &self.lookout,
                    object_type,
                    &object_name,
                    comment,
                    if_exists,
                )
                .await
            }
            Statement::Set(set) => self.set(set),
            Statement::ShowVariable { variable } => self.show(&variable),
            Statement::Reset(r) => {
                match r.reset {
                    ast::Reset::ALL => {
                        self.fixed_now = None;
                        self.settings.clear();
                    }
                    ast::Reset::ConfigurationParameter(name) => {
                        let key = name.to_string().to_lowercase();
                        if key == "lookout.now" {
                            self.fixed_now = None;
                        }
                        self.settings.remove(&key);
                    }
                }
                self.apply_role_settings();
                Ok(Output::Command {
                    tag: "RESET",
                    rows: None,
                })
            }
            // Drivers (psycopg, pgjdbc) clean up with these; prepared
            // statements live in the protocol layer, so there is nothing to drop.
            Statement::Deallocate { .. } => Ok(Output::Command {
                tag: "DEALLOCATE",
                rows: None,
            }),
            // Poolers send it when a connection changes hands: the plans
            // kept go, as PostgreSQL's `DISCARD PLANS` drops its own.
            Statement::Discard { .. } => {
                self.plan_cache().clear();
                Ok(Output::Command {
                    tag: "DISCARD ALL",
                    rows: None,
                })
            }
            Statement::StartTransaction { .. } => {
                // BEGIN inside a block keeps the block, as PostgreSQL does.
                if matches!(self.transaction, TransactionState::Idle) {
                    self.transaction = TransactionState::Open(Arc::default());
                }
                Ok(Output::Command {
                    tag: "BEGIN",
                    rows: None,
                })
            }
            Statement::Commit { .. } => self.commit().await,
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => {
                let block = self.block("ROLLBACK TO SAVEPOINT")?;
                block.rollback_to(&ident_name(&name))?;
                self.transaction = TransactionState::Open(block);
                Ok(Output::Command {
                    // The block goes on; the wire layer reports "ROLLBACK".
                    tag: "ROLLBACK TO",
                    rows: None,
                })
            }
            Statement::Rollback { .. } => {
                if self.in_transaction() {
                    self.cursors.end_transaction(false);
                }
                self.transaction = TransactionState::Idle;
                Ok(Output::Command {
                    tag: "ROLLBACK",
                    rows: None,
                })
            }
            Statement::Savepoint { name } => {
                self.block("SAVEPOINT")?.savepoint(&ident_name(&name));
                Ok(Output::Command {
                    tag: "SAVEPOINT",
                    rows: None,
                })
            }
            Statement::ReleaseSavepoint { name } => {
                self.block("RELEASE SAVEPOINT")?
                    .release(&ident_name(&name))?;
                Ok(Output::Command {
                    tag: "RELEASE",
                    rows: None,
                })
            }
            Statement::Declare { stmts } => {
                for declare in stmts {
                    self.declare_cursor(declare).await?;
                }
                Ok(Output::Command {
                    tag: "DECLARE CURSOR",
                    rows: None,
                })
            }
            Statement::Fetch {
                name, direction, ..
            } => {
                let count = crate::cursor::fetch_count(&direction)?;
                let name = ident_name(&name);
                let (schema, stream) = match count {
                    None => self.cursors.take_rest(&name)?,
                    Some(count) => {
                        let (schema, batches) = self.cursors.fetch(&name, Some(count)).await?;
                        (Arc::clone(&schema), batches_stream(schema, batches))
                    }
                };
                Ok(Output::Tagged {
                    tag: "FETCH",
                    schema,
                    stream,
                })
            }
            Statement::Close { cursor } => {
                match cursor {
                    ast::CloseCursor::All => self.cursors.close(None)?,
                    ast::CloseCursor::Specific { name } => {
                        self.cursors.close(Some(&ident_name(&name)))?
                    }
                }
                Ok(Output::Command {
                    tag: "CLOSE CURSOR",
                    rows: None,
                })
            }
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                self.copy(source, to, target, &options, &legacy_options)
                    .await
            }
            other => {
                let prepared = self.plan(other).await?;
                self.run_plan(&prepared, None).await
            }
        }
    }
}

/// The setting `SHOW` names; multi-word forms (`SHOW TRANSACTION ISOLATION
/// LEVEL`) parse as one identifier per word.
#[async_trait::async_trait]
impl crate::ext::SqlSession for Session {
    async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        Session::query(self, sql).await
    }

    async fn logical_plan(&self, sql: &str) -> Result<LogicalPlan> {
        Session::logical_plan(self, sql).await
    }

    async fn describe(&self, sql: &str) -> Result<Option<SchemaRef>> {
        Ok(self.prepare(sql).await?.and_then(|p| p.schema))
    }

    async fn execute_logical(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        Session::execute_logical(self, plan).await
    }

    fn now_micros(&self) -> i64 {
        Session::now_micros(self)
    }

    fn user(&self) -> &str {
        Session::user(self)
    }
}

fn show_key(variable: &[Ident]) -> String {
    let key = variable
        .iter()
        .map(|i| i.value.clone())
        .collect::<Vec<_>>()
        .join(".");
    match key.to_lowercase().as_str() {
        "time.zone" => "timezone".to_string(),
        "transaction.isolation.level" => "transaction_isolation".to_string(),
        "session.authorization" => "session_authorization".to_string(),
        _ => key,
    }
}

/// The column `SHOW` returns, named after the setting as in Postgres.
fn show_column(variable: &[Ident]) -> String {
    show_key(variable).to_lowercase()
}

/// Statements a transaction block can hold back until `COMMIT`, or that
/// change nothing stored.
fn fits_in_block(command: &Command) -> bool {
    match command {
        Command::Extension(statement) => statement.access() == crate::ext::Access::Read,
        Command::Sql(stmt) => matches!(
            stmt,
            Statement::Query(_)
                | Statement::Insert(_)
                | Statement::Delete(_)
                | Statement::Update { .. }
                | Statement::Truncate(_)
                | Statement::Copy { .. }
                | Statement::Set(_)
                | Statement::ShowVariable { .. }
                | Statement::Reset(_)
                | Statement::Declare { .. }
                | Statement::Fetch { .. }
                | Statement::Close { .. }
                | Statement::Deallocate { .. }
                | Statement::StartTransaction { .. }
                | Statement::Commit { .. }
                | Statement::Rollback { .. }
                | Statement::Savepoint { .. }
                | Statement::ReleaseSavepoint { .. }
                | Statement::Explain { .. }
        ),
    }
}

/// A statement's name for messages: its first words.
fn command_name(command: &Command) -> String {
    let text = match command {
        Command::Extension(statement) => statement.to_string(),
        Command::Sql(stmt) => stmt.to_string(),
    };
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    words.join(" ").to_uppercase()
}

/// Statements Lookout runs itself rather than through DataFusion.
fn handled_here(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::CreateTable(_)
            | Statement::CreateView(_)
            | Statement::Drop {
                object_type: ObjectType::View,
                ..
            }
            | Statement::AlterTable(_)
            | Statement::Comment { .. }
            | Statement::Drop {
                object_type: ObjectType::Table,
                ..
            }
            | Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::Reset(_)
            | Statement::StartTransaction { .. }
            | Statement::Deallocate { .. }
            | Statement::Discard { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Copy { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
    )
}
