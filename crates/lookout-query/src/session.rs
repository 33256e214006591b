//! One SQL conversation: statements Lookout handles itself (DDL, COPY, SET,
//! SHOW) and everything else planned and run by DataFusion.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    self, AlterTableOperation, ColumnOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget,
    CreateTableOptions, Expr as SqlExpr, Ident, ObjectType, Set, SqlOption, Statement, Value,
};
use futures::StreamExt;
use lookout_storage::{CreateTable, StorageError, TableDef};

use crate::Lookout;
use crate::copy::{CopyDecoder, CopyEncoder, CopyFormat, CopyKind, parse_timestamp_micros};
use crate::error::{QueryError, Result};
use crate::ext::{
    Command, CopyIn, Output, SYSTEM_PREFIX, batches_stream, ident_name, parse_duration,
    quote_ident, quoted_table, split_statements, table_name,
};
use crate::table::catalog::{InformationSchema, LookoutSchema, SystemSchema};
use crate::transaction::{Block, TransactionState};

/// Writes of more rows than this go straight to Parquet (one atomic manifest
/// commit) instead of through the WAL.
const BULK_ROWS: u64 = 256 * 1024;

/// A parsed statement ready to run with parameters (extended protocol).
#[derive(Debug, Clone)]
pub struct Prepared {
    statement: Command,
    plan: Option<LogicalPlan>,
    /// Types of `$1, $2, ...` as far as the planner could infer them.
    pub param_types: Vec<Option<DataType>>,
    /// Result columns, for statements that return rows.
    pub schema: Option<SchemaRef>,
    /// Whether it reads `pg_catalog` or `information_schema`, where integer
    /// lists are lists of object ids (`oid[]`).
    pub catalog: bool,
    /// The Lookout tables the plan reads or writes, with their definitions
    /// when it was made: a plan whose tables changed since is made again.
    tables: Vec<(String, Option<TableDef>)>,
    /// A write's `RETURNING` list, planned over the rows it writes.
    returning: Option<LogicalPlan>,
}

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
    QueryError::with_code(
        "54001",
        format!("statement too complex: {detail}; split it or use IN (...) lists and joins"),
    )
}

/// Counts the operators of `sql` (outside literals and comments) when it is
/// long enough to hold more than [`MAX_OPERATORS`].
fn check_complexity(sql: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    // Every operator needs an operand beside it.
    if sql.len() <= 2 * MAX_OPERATORS {
        return Ok(());
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
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

/// The storage names of the Lookout tables `plan` scans or writes,
/// subqueries included.
fn tables_of(plan: &LogicalPlan) -> Vec<String> {
    use datafusion::common::TableReference;
    use datafusion::common::tree_node::TreeNodeRecursion;
    let storage_name = |r: &TableReference| match r.schema() {
        None | Some("public") => Some(r.table().to_string()),
        Some("lookout") => Some(format!("{SYSTEM_PREFIX}{}", r.table())),
        Some(_) => None,
    };
    let mut names = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        let named = match node {
            LogicalPlan::TableScan(scan) => storage_name(&scan.table_name),
            LogicalPlan::Dml(dml) => storage_name(&dml.table_name),
            _ => None,
        };
        if let Some(name) = named
            && !names.contains(&name)
        {
            names.push(name);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names
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

/// Arrow type for a SQL column type, as Lookout stores it.
fn arrow_type(dt: &ast::DataType) -> Result<DataType> {
    let text = dt.to_string().to_ascii_lowercase();
    let base = text.split('(').next().unwrap_or("").trim();
    Ok(match base {
        "text" | "varchar" | "character varying" | "char" | "character" | "string" | "uuid"
        | "json" | "jsonb" | "name" => DataType::Utf8,
        "smallint" | "int2" => DataType::Int16,
        "int" | "integer" | "int4" => DataType::Int32,
        "bigint" | "int8" => DataType::Int64,
        "tinyint" => DataType::Int8,
        "real" | "float4" => DataType::Float32,
        "double precision" | "double" | "float8" | "float" | "numeric" | "decimal" => {
            DataType::Float64
        }
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "bytea" => DataType::Binary,
        b if b.starts_with("timestamp") => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        _ => {
            return Err(QueryError::with_code(
                "42704",
                format!("type \"{text}\" is not supported"),
            ));
        }
    })
}

fn column_field(col: &ast::ColumnDef) -> Result<Field> {
    let not_null = col.options.iter().any(|o| {
        matches!(o.option, ColumnOption::NotNull)
            || matches!(&o.option, ColumnOption::PrimaryKey(_))
    });
    let field = Field::new(
        ident_name(&col.name),
        arrow_type(&col.data_type)?,
        !not_null,
    );
    // json and jsonb are text the storage engine checks on every write.
    let text = col.data_type.to_string().to_ascii_lowercase();
    Ok(match text.as_str() {
        "json" | "jsonb" => {
            field.with_metadata([(lookout_storage::SQL_TYPE_METADATA.to_string(), text)].into())
        }
        _ => field,
    })
}

fn text_rows(name: &str, values: Vec<String>) -> Result<Output> {
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(StringArray::from(values))],
    )
    .map_err(|e| QueryError::with_code("XX000", e.to_string()))?;
    Ok(Output::from_batches(schema, vec![batch]))
}

/// Refuses values Lookout cannot take: a `lookout.now` that is not a
/// timestamp, a time zone other than UTC.
pub(crate) fn check_setting(key: &str, value: &str) -> Result<()> {
    let is_default = value.eq_ignore_ascii_case("default") || value.is_empty();
    match key {
        "lookout.now" if !is_default && parse_timestamp_micros(value).is_none() => {
            Err(QueryError::with_code(
                "22007",
                format!("invalid value for lookout.now: \"{value}\" (expected a timestamp)"),
            ))
        }
        "statement_timeout" => crate::interrupt::parse(value).map(|_| ()),
        "time zone" | "timezone" => {
            let utc = [
                "utc",
                "etc/utc",
                "gmt",
                "z",
                "+00",
                "+00:00",
                "0",
                "zulu",
                "universal",
                "default",
            ];
            if utc.contains(&value.to_ascii_lowercase().as_str()) {
                Ok(())
            } else {
                Err(QueryError::with_code(
                    "22023",
                    format!(
                        "Lookout shows every timestamp in UTC; time zone \"{value}\" is not supported"
                    ),
                ))
            }
        }
        _ => Ok(()),
    }
}

/// Settings every Postgres client may ask for, with the values Lookout has.
const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("server_version", crate::pg::compat::SERVER_VERSION),
    ("server_version_num", "160006"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("timezone", "UTC"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
    ("transaction_isolation", "read committed"),
    ("default_transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
    ("max_identifier_length", "63"),
    ("max_index_keys", "32"),
    ("session_authorization", "lookout"),
    ("is_superuser", "on"),
    ("search_path", "\"$user\", public"),
    ("application_name", ""),
    ("extra_float_digits", "1"),
    ("statement_timeout", "0"),
    // libpq's PQencryptPasswordConn (psql's \password) asks for it.
    ("password_encryption", "scram-sha-256"),
];

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
            .with_target_partitions(threads);
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
        };
        session.publish();
        session
    }

    /// Makes the settings as they now are visible to `current_setting()`.
    fn publish(&self) {
        let values = self
            .setting_names()
            .into_iter()
            .filter_map(|n| self.setting(&n).map(|v| (n, v)))
            .collect();
        self.published.replace(values);
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
        if extensions.is_empty() {
            return Ok(parse_sql(sql)?.into_iter().map(Command::Sql).collect());
        }
        let mut commands = Vec::new();
        for piece in split_statements(sql) {
            match extensions.iter().find_map(|e| e.parse(piece)) {
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
            TransactionState::Idle => Err(QueryError::with_code(
                "25P01",
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

    /// Applies what `set_config()` set during earlier statements.
    fn apply_set_config(&mut self) {
        for (key, value) in self.published.take_assignments() {
            if let Err(e) = self.set_variable(&key, &value) {
                tracing::warn!("set_config({key}) not applied: {e}");
            }
        }
    }

    /// Sets who the session runs as and what it may do (by default the
    /// `lookout` user with [`Access::Admin`](crate::Access::Admin)).
    pub fn set_user(&mut self, user: &str, access: crate::ext::Access) {
        self.user = user.to_string();
        self.access = access;
        self.apply_role_settings();
    }

    /// The settings that follow from who the session runs as, which
    /// `RESET` returns to.
    fn apply_role_settings(&mut self) {
        self.settings
            .insert("session_authorization".to_string(), self.user.clone());
        self.settings.insert(
            "is_superuser".to_string(),
            if self.access == crate::ext::Access::Admin {
                "on"
            } else {
                "off"
            }
            .to_string(),
        );
        if let Some(limit) = self.statement_time_limit {
            self.settings.insert(
                "statement_timeout".to_string(),
                limit.as_millis().to_string(),
            );
        }
        self.publish();
    }

    /// Holds every statement of this session to `limit` (the user's role
    /// limit): it becomes the session's `statement_timeout`, and a `SET` of
    /// a longer one (or of none) is refused with 42501.
    pub fn limit_statement_time(&mut self, limit: std::time::Duration) {
        self.statement_time_limit = Some(limit);
        self.apply_role_settings();
    }

    /// Refuses a `statement_timeout` above the role's limit.
    fn check_statement_time(&self, value: &str) -> Result<()> {
        let Some(limit) = self.statement_time_limit else {
            return Ok(());
        };
        match crate::interrupt::parse(value)? {
            Some(asked) if asked <= limit => Ok(()),
            _ => Err(QueryError::with_code(
                "42501",
                format!(
                    "statement_timeout is limited to {} ms for role \"{}\"",
                    limit.as_millis(),
                    self.user
                ),
            )),
        }
    }

    /// Up to `count` rows (all if `None`) of the cursor `name`, as the
    /// extended protocol's Execute of it as a portal returns them.
    pub async fn execute_cursor_portal(
        &mut self,
        name: &str,
        count: Option<usize>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let interrupt = self.interrupt();
        let cursors = Arc::clone(&self.cursors);
        let fetch = cursors.fetch(name, count);
        match interrupt {
            None => fetch.await,
            Some(interrupt) => tokio::select! {
                fetched = fetch => fetched,
                reason = interrupt => Err(crate::interrupt::canceled(reason)),
            },
        }
    }

    /// The columns of the cursor `name` declared with SQL `DECLARE`, which
    /// the extended protocol may describe as a portal, as in PostgreSQL.
    pub fn cursor_schema(&self, name: &str) -> Result<SchemaRef> {
        self.cursors.schema(name)
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
            Statement::Discard { .. } => Ok(Output::Command {
                tag: "DISCARD ALL",
                rows: None,
            }),
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

    /// Parses and plans one statement for later execution with parameters.
    pub async fn prepare(&self, sql: &str) -> Result<Option<Prepared>> {
        let mut stmts = self.parse(sql)?;
        if stmts.len() > 1 {
            return Err(QueryError::syntax(
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let stmt = match stmts.pop() {
            None => return Ok(None),
            Some(Command::Sql(stmt)) => stmt,
            Some(Command::Extension(statement)) => {
                let schema = statement.schema();
                return Ok(Some(Prepared {
                    statement: Command::Extension(statement),
                    plan: None,
                    param_types: Vec::new(),
                    schema,
                    catalog: false,
                    tables: Vec::new(),
                    returning: None,
                }));
            }
        };
        if handled_here(&stmt) {
            let schema = match &stmt {
                Statement::Fetch { name, .. } => Some(self.cursors.schema(&ident_name(name))?),
                Statement::ShowVariable { variable } => {
                    Some(Arc::new(Schema::new(vec![Field::new(
                        show_column(variable),
                        DataType::Utf8,
                        true,
                    )])))
                }
                _ => None,
            };
            return Ok(Some(Prepared {
                statement: Command::Sql(stmt),
                plan: None,
                param_types: Vec::new(),
                schema,
                catalog: false,
                tables: Vec::new(),
                returning: None,
            }));
        }
        self.plan(stmt).await.map(Some)
    }

    async fn plan(&self, stmt: Statement) -> Result<Prepared> {
        let storage = self.lookout.storage();
        let mut stmt = crate::pg::compat::name_insert_columns(stmt, |name| {
            let def = storage.table(&table_name(name).ok()?).ok()?;
            Some(def.columns.into_iter().map(|c| c.name).collect())
        });
        // Kept as written: a plan made again starts from it.
        let written = stmt.clone();
        let returning = crate::table::returning::split(&mut stmt)?;
        // Named from the statement as written, before the rewrites below.
        let names = crate::pg::rewrite::output_names(&stmt);
        crate::pg::rewrite::rewrite_statement(&mut stmt)?;
        let state = self.state();
        let plan = match state
            .statement_to_plan(DFStatement::Statement(Box::new(stmt.clone())))
            .await
        {
            // PostgreSQL lets output names repeat (`SELECT v::text, v::int`);
            // DataFusion does not, so such a query is planned with distinct
            // aliases, and the client sees PostgreSQL's names all the same.
            Err(e)
                if e.to_string().contains("unique expression names")
                    && !names.is_empty()
                    && crate::pg::rewrite::alias_output_columns(&mut stmt) =>
            {
                state
                    .statement_to_plan(DFStatement::Statement(Box::new(stmt.clone())))
                    .await?
            }
            planned => planned?,
        };
        let plan = crate::pg::rewrite::rewrite_plan(plan)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .verify_plan(&plan)
            .map_err(|_| {
                QueryError::unsupported(format!("statement not supported by Lookout: {stmt}"))
            })?;
        let returning = match (returning, &plan) {
            (Some(select), LogicalPlan::Dml(dml)) => Some(self.plan_returning(select, dml).await?),
            _ => None,
        };
        let mut types = plan.get_parameter_types()?;
        if let Some((returning, _)) = &returning {
            for (id, data_type) in returning.get_parameter_types()? {
                let slot = types.entry(id).or_insert(None);
                if slot.is_none() {
                    *slot = data_type;
                }
            }
        }
        // `$1::type` fixes the parameter's type where the planner left it open.
        for (id, data_type) in cast_placeholders(&plan) {
            if let Some(slot @ None) = types.get_mut(&id) {
                *slot = Some(data_type);
            }
        }
        let mut param_types: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(k, v)| {
                k.trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .map(|i| (i, v))
            })
            .collect();
        param_types.sort_by_key(|(i, _)| *i);
        let count = param_types.last().map_or(0, |(i, _)| *i);
        let mut ordered = vec![None; count];
        for (i, t) in param_types {
            ordered[i - 1] = t;
        }
        let mut schema = match (&plan, &returning) {
            (LogicalPlan::Dml(_), Some((_, named))) => Some(Arc::clone(named)),
            (LogicalPlan::Dml(_), None) => None,
            (p, _) => Some(with_names(Arc::new(p.schema().as_arrow().clone()), &names)),
        };
        let catalog = crate::pg::compat::reads_catalog(&stmt);
        if catalog {
            // Integer lists in catalog queries are lists of object ids.
            schema = schema.map(|s| crate::pg::compat::mark_oid_lists(&s));
        }
        let tables = tables_of(&plan)
            .into_iter()
            .map(|name| {
                let def = storage.table(&name).ok();
                (name, def)
            })
            .collect();
        Ok(Prepared {
            statement: Command::Sql(if returning.is_some() { written } else { stmt }),
            plan: Some(plan),
            param_types: ordered,
            schema,
            catalog,
            tables,
            returning: returning.map(|(plan, _)| plan),
        })
    }

    /// Plans a write's `RETURNING` list (made a query by
    /// [`crate::table::returning::split`]) over the rows of the written table;
    /// returns the plan and its columns, named as PostgreSQL names them.
    async fn plan_returning(
        &self,
        mut select: Statement,
        dml: &DmlStatement,
    ) -> Result<(LogicalPlan, SchemaRef)> {
        let names = crate::pg::rewrite::output_names(&select);
        crate::pg::rewrite::rewrite_statement(&mut select)?;
        let columns = Arc::new(dml.target.schema().as_ref().clone());
        let state = crate::table::returning::planning_state(&self.state(), columns);
        let plan = state
            .statement_to_plan(DFStatement::Statement(Box::new(select)))
            .await?;
        let plan = crate::pg::rewrite::rewrite_plan(plan)?;
        let schema = with_names(Arc::new(plan.schema().as_arrow().clone()), &names);
        Ok((plan, schema))
    }

    /// The plan to run `prepared` with: its own, or, when a table it uses
    /// was altered, dropped or created again since, a new one, as
    /// PostgreSQL re-plans a cached statement after DDL. A new plan whose
    /// result columns differ is refused, as PostgreSQL refuses it (0A000).
    async fn current_plan<'a>(
        &self,
        prepared: &'a Prepared,
    ) -> Result<std::borrow::Cow<'a, Prepared>> {
        let storage = self.lookout.storage();
        let unchanged = prepared
            .tables
            .iter()
            .all(|(name, def)| storage.table(name).ok().as_ref() == def.as_ref());
        if unchanged {
            return Ok(std::borrow::Cow::Borrowed(prepared));
        }
        let Command::Sql(stmt) = &prepared.statement else {
            return Ok(std::borrow::Cow::Borrowed(prepared));
        };
        let replanned = self.plan(stmt.clone()).await?;
        let shape = |s: &Option<SchemaRef>| {
            s.as_ref().map(|s| {
                s.fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect::<Vec<_>>()
            })
        };
        if shape(&replanned.schema) != shape(&prepared.schema) {
            return Err(QueryError::with_code(
                "0A000",
                "cached plan must not change result type: a table the statement reads changed \
                 since it was prepared; prepare it again",
            ));
        }
        Ok(std::borrow::Cow::Owned(replanned))
    }

    /// Runs a prepared statement with parameter values.
    pub async fn execute_prepared(
        &mut self,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
    ) -> Result<Output> {
        crate::access::check(&self.user, self.access, &prepared.statement, |t| {
            self.lookout.is_restricted(t)
        })?;
        self.admit(&prepared.statement)?;
        self.apply_set_config();
        let interrupt = self.interrupt();
        let result = match &prepared.plan {
            None => {
                crate::interrupt::bounded(
                    interrupt,
                    Box::pin(self.execute_command(prepared.statement.clone())),
                )
                .await
            }
            Some(_) => {
                let run = async {
                    let current = self.current_plan(prepared).await?;
                    self.run_plan(&current, Some(params)).await
                };
                crate::interrupt::bounded(interrupt, Box::pin(run)).await
            }
        };
        self.settle(result)
    }

    async fn run_plan(
        &self,
        prepared: &Prepared,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<Output> {
        let Some(plan) = prepared.plan.clone() else {
            return Err(QueryError::with_code("XX000", "statement has no plan"));
        };
        let with_params = |plan: LogicalPlan| match &params {
            Some(p) if !p.is_empty() => plan.with_param_values(ParamValues::List(
                p.iter().cloned().map(Into::into).collect(),
            )),
            _ => Ok(plan),
        };
        let plan = with_params(plan)?;
        let dml = match &plan {
            LogicalPlan::Dml(DmlStatement { op, .. }) => Some(match op {
                WriteOp::Insert(_) => "INSERT",
                WriteOp::Delete => "DELETE",
                WriteOp::Update => "UPDATE",
                WriteOp::Truncate => "TRUNCATE TABLE",
                _ => "MERGE",
            }),
            _ => None,
        };
        // What the provider would be handed is checked on the plan as
        // optimized with the parameters' values (`WHERE $1` may fold away).
        let plan = match dml {
            Some(tag @ ("DELETE" | "UPDATE")) => {
                let optimized = self.state().optimize(&plan)?;
                if crate::table::write_check::check(&optimized)?
                    == crate::table::write_check::WriteShape::Nothing
                {
                    return Ok(match &prepared.schema {
                        Some(schema) if prepared.returning.is_some() => Output::Tagged {
                            tag,
                            schema: Arc::clone(schema),
                            stream: batches_stream(Arc::clone(schema), Vec::new()),
                        },
                        _ => Output::Command { tag, rows: Some(0) },
                    });
                }
                optimized
            }
            _ => plan,
        };
        if let (Some(tag), Some(returning)) = (dml, &prepared.returning) {
            let returning = with_params(returning.clone())?;
            return self.run_returning(tag, plan, returning, prepared).await;
        }
        let df = DataFrame::new(self.state(), plan);
        if let Some(tag) = dml {
            let batches = self.lookout.query_runtime().collect(df).await?;
            let rows = batches
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::UInt64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or(0);
            return Ok(Output::Command {
                tag,
                // PostgreSQL's TRUNCATE reports no row count.
                rows: (tag != "TRUNCATE TABLE").then_some(rows),
            });
        }
        let planned = Arc::new(df.schema().as_arrow().clone());
        // The prepared schema carries the column names PostgreSQL would give.
        let schema = match &prepared.schema {
            Some(named)
                if named.fields().len() == planned.fields().len()
                    && named
                        .fields()
                        .iter()
                        .zip(planned.fields())
                        .all(|(a, b)| a.data_type() == b.data_type()) =>
            {
                Arc::clone(named)
            }
            _ => planned,
        };
        let stream = self.lookout.query_runtime().execute(df).await?;
        Ok(Output::Rows { schema, stream })
    }

    /// Runs a write whose table provider hands the rows it writes to a
    /// collector, then its `RETURNING` plan over those rows.
    async fn run_returning(
        &self,
        tag: &'static str,
        write: LogicalPlan,
        returning: LogicalPlan,
        prepared: &Prepared,
    ) -> Result<Output> {
        let mut state = self.state();
        state
            .config_mut()
            .set_extension(Arc::new(crate::table::returning::Returned::default()));
        let runtime = self.lookout.query_runtime();
        runtime
            .collect(DataFrame::new(state.clone(), write))
            .await?;
        let stream = runtime.execute(DataFrame::new(state, returning)).await?;
        let schema = prepared.schema.clone().unwrap_or_else(|| stream.schema());
        Ok(Output::Tagged {
            tag,
            schema,
            stream,
        })
    }

    async fn declare_cursor(&mut self, declare: ast::Declare) -> Result<()> {
        let statement = ast::Statement::Declare {
            stmts: vec![declare.clone()],
        }
        .to_string();
        let (Some(query), [name]) = (declare.for_query, declare.names.as_slice()) else {
            return Err(QueryError::unsupported(
                "DECLARE supports cursors: DECLARE name CURSOR FOR query",
            ));
        };
        if declare.scroll == Some(true) {
            return Err(QueryError::unsupported(
                "SCROLL cursors are not supported; cursors scan forward only",
            ));
        }
        let holdable = declare.hold == Some(true);
        if !holdable && !self.in_transaction() {
            return Err(QueryError::with_code(
                "25P01",
                "DECLARE CURSOR can only be used in transaction blocks (or declare it WITH HOLD)",
            ));
        }
        let prepared = self.plan(Statement::Query(query)).await?;
        let Output::Rows { schema, stream } = self.run_plan(&prepared, None).await? else {
            return Err(QueryError::syntax(
                "a cursor needs a query that returns rows",
            ));
        };
        let in_block = self.in_transaction();
        self.cursors.declare(
            &ident_name(name),
            statement,
            holdable,
            in_block,
            schema,
            stream,
        )
    }

    async fn create_table(&mut self, ct: ast::CreateTable) -> Result<Output> {
        if ct.query.is_some() {
            return Err(QueryError::unsupported(
                "CREATE TABLE AS is not supported; create the table, then INSERT INTO ... SELECT",
            ));
        }
        let name = table_name(&ct.name)?;
        let fields = ct
            .columns
            .iter()
            .map(column_field)
            .collect::<Result<Vec<_>>>()?;
        let schema = Schema::new(fields);
        let mut request = CreateTable::default();
        let (mut record_key, mut version, mut deleted) = (None, None, None);
        let options: &[SqlOption] = match &ct.table_options {
            CreateTableOptions::With(o) | CreateTableOptions::Options(o) => o,
            _ => &[],
        };
        for opt in options {
            let SqlOption::KeyValue { key, value } = opt else {
                return Err(QueryError::syntax(format!(
                    "unsupported table option {opt}"
                )));
            };
            let v = option_text(value).unwrap_or_default();
            match key.value.to_lowercase().as_str() {
                "time_column" => request.time_column = Some(v.to_lowercase()),
                "partition_column" => {
                    request.partition_column = Some(match v.to_lowercase().as_str() {
                        "" | "none" => None,
                        p => Some(p.to_string()),
                    })
                }
                "bucket" => request.bucket_micros = Some(parse_duration(&v)?),
                "key" => {
                    record_key = Some(
                        v.split(',')
                            .map(|c| c.trim().to_lowercase())
                            .filter(|c| !c.is_empty())
                            .collect::<Vec<_>>(),
                    )
                }
                "version" => version = Some(v.trim().to_lowercase()),
                "deleted" => deleted = Some(v.trim().to_lowercase()),
                "ttl" => {
                    request.ttl_micros = match v.to_lowercase().as_str() {
                        "" | "none" => None,
                        t => Some(parse_duration(t)?),
                    }
                }
                other => {
                    return Err(QueryError::with_code(
                        "22023",
                        format!(
                            "unrecognized table option \"{other}\" (known: time_column, partition_column, bucket, ttl, key, version, deleted)"
                        ),
                    ));
                }
            }
        }
        request.versions = match (record_key, version, deleted) {
            (None, None, None) => None,
            (Some(key), Some(version), deleted) => Some(lookout_storage::Versions {
                key,
                version,
                deleted,
            }),
            _ => {
                return Err(QueryError::with_code(
                    "22023",
                    "a versioned table needs both key and version options (deleted is optional)",
                ));
            }
        };
        self.lookout
            .storage()
            .create_table(&name, &schema, request, ct.if_not_exists)
            .await?;
        Ok(Output::Command {
            tag: "CREATE TABLE",
            rows: None,
        })
    }

    /// `CREATE [OR REPLACE] VIEW name [(columns)] AS query`: the query is
    /// planned now (so a view that cannot run is refused) and kept as text,
    /// planned again at each use; reads through it are checked against the
    /// rights of whoever queries it.
    async fn create_view(&mut self, view: ast::CreateView) -> Result<Output> {
        if view.materialized || view.temporary {
            return Err(QueryError::unsupported(
                "only plain views are supported (no MATERIALIZED or TEMPORARY)",
            ));
        }
        let name = table_name(&view.name)?;
        if name.starts_with(SYSTEM_PREFIX) || name.contains('.') {
            return Err(QueryError::with_code(
                "42501",
                format!("views are created in the public schema, not as \"{name}\""),
            ));
        }
        let query = view.query.to_string();
        let plan = self.logical_plan(&query).await?;
        let definition = if view.columns.is_empty() {
            query
        } else {
            let planned = plan.schema().fields();
            if view.columns.len() > planned.len() {
                return Err(QueryError::with_code(
                    "42601",
                    "CREATE VIEW specifies more column names than columns",
                ));
            }
            let renamed: Vec<String> = planned
                .iter()
                .zip(
                    view.columns
                        .iter()
                        .map(|c| ident_name(&c.name))
                        .chain(std::iter::repeat(String::new())),
                )
                .map(|(field, alias)| {
                    let source = quote_ident(field.name());
                    if alias.is_empty() {
                        source
                    } else {
                        format!("{source} AS {}", quote_ident(&alias))
                    }
                })
                .collect();
            format!("SELECT {} FROM ({query}) AS view_body", renamed.join(", "))
        };
        self.logical_plan(&definition).await?;
        let storage = self.lookout.storage();
        let previous = storage.view(&name)?;
        storage
            .create_view(&name, &definition, view.or_replace)
            .await?;
        // A replaced view may now read itself through others: refuse it
        // and put the old definition back.
        if let Err(e) = self
            .logical_plan(&format!("SELECT * FROM {}", quote_ident(&name)))
            .await
        {
            match previous {
                Some(old) => storage.create_view(&name, &old, true).await?,
                None => {
                    storage.drop_view(&name, true).await?;
                }
            }
            return Err(e);
        }
        Ok(Output::Command {
            tag: "CREATE VIEW",
            rows: None,
        })
    }

    async fn alter_table(&mut self, at: ast::AlterTable) -> Result<Output> {
        let name = table_name(&at.name)?;
        for op in at.operations {
            match op {
                AlterTableOperation::AddColumn {
                    if_not_exists,
                    column_def,
                    ..
                } => {
                    let field = column_field(&column_def)?;
                    match self
                        .lookout
                        .storage()
                        .add_column(&name, &field, if_not_exists)
                        .await
                    {
                        Err(StorageError::TableNotFound(_)) if at.if_exists => {}
                        other => {
                            other?;
                        }
                    }
                }
                other => {
                    return Err(QueryError::unsupported(format!(
                        "ALTER TABLE {other} is not supported (ADD COLUMN is)"
                    )));
                }
            }
        }
        Ok(Output::Command {
            tag: "ALTER TABLE",
            rows: None,
        })
    }

    fn set(&mut self, set: Set) -> Result<Output> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let key = variable.to_string().to_lowercase();
                let value = values.first().and_then(option_text).unwrap_or_default();
                self.set_variable(&key, &value)?;
            }
            Set::SetTimeZone { value, .. } => {
                let v = option_text(&value).unwrap_or_default();
                self.set_variable("timezone", &v)?;
            }
            _ => {}
        }
        Ok(Output::Command {
            tag: "SET",
            rows: None,
        })
    }

    fn set_variable(&mut self, key: &str, value: &str) -> Result<()> {
        let is_default = value.eq_ignore_ascii_case("default");
        check_setting(key, value)?;
        if key == "statement_timeout" && !is_default {
            self.check_statement_time(value)?;
        }
        match key {
            "lookout.now" => {
                self.fixed_now = if is_default || value.is_empty() {
                    None
                } else {
                    parse_timestamp_micros(value).and_then(DateTime::from_timestamp_micros)
                };
            }
            k if k.starts_with("datafusion.") => {
                let state = self.ctx.state_ref();
                let mut state = state.write();
                state
                    .config_mut()
                    .options_mut()
                    .set(k, value)
                    .map_err(|e| QueryError::with_code("22023", e.to_string()))?;
            }
            _ => {}
        }
        let key = if key == "time zone" { "timezone" } else { key };
        if is_default {
            self.settings.remove(key);
        } else {
            self.settings.insert(key.to_string(), value.to_string());
        }
        self.publish();
        Ok(())
    }

    /// Every setting `SHOW ALL` lists, sorted.
    fn setting_names(&self) -> Vec<String> {
        let mut names: Vec<String> = DEFAULT_SETTINGS
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        names.extend(self.settings.keys().cloned());
        names.push("lookout.now".into());
        names.sort();
        names.dedup();
        names
    }

    /// The current value of a setting, as `SHOW` and `current_setting` give it.
    pub fn setting(&self, key: &str) -> Option<String> {
        let key = key.to_lowercase();
        if key == "lookout.now" {
            return Some(self.fixed_now.map_or_else(String::new, |t| {
                let mut s = String::new();
                crate::format::push_timestamp(&mut s, t.timestamp_micros(), true);
                s
            }));
        }
        if key == "timezone" {
            return Some("UTC".to_string());
        }
        self.settings.get(&key).cloned().or_else(|| {
            DEFAULT_SETTINGS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    fn show(&self, variable: &[Ident]) -> Result<Output> {
        let key = show_key(variable);
        if key.eq_ignore_ascii_case("all") {
            let values = self
                .setting_names()
                .iter()
                .map(|n| format!("{n} = {}", self.setting(n).unwrap_or_default()))
                .collect();
            return text_rows("setting", values);
        }
        match self.setting(&key) {
            Some(v) => text_rows(&show_column(variable), vec![v]),
            None => Err(QueryError::with_code(
                "42704",
                format!("unrecognized configuration parameter \"{key}\""),
            )),
        }
    }

    async fn copy(
        &mut self,
        source: CopySource,
        to: bool,
        target: CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<Output> {
        let format = copy_format(options, legacy)?;
        if to {
            let sql = match &source {
                CopySource::Table {
                    table_name: t,
                    columns,
                } => {
                    let cols = if columns.is_empty() {
                        "*".to_string()
                    } else {
                        columns
                            .iter()
                            .map(|c| quote_ident(&ident_name(c)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    format!("SELECT {cols} FROM {}", quoted_table(&table_name(t)?))
                }
                CopySource::Query(q) => q.to_string(),
            };
            let stmt = parse_sql(&sql)?
                .pop()
                .ok_or_else(|| QueryError::syntax("empty COPY query"))?;
            let prepared = self.plan(stmt).await?;
            let Output::Rows { schema, stream } = self.run_plan(&prepared, None).await? else {
                return Err(QueryError::syntax(
                    "COPY (...) TO needs a query that returns rows",
                ));
            };
            return match target {
                CopyTarget::Stdout => {
                    if format.kind == CopyKind::Parquet {
                        return Err(QueryError::unsupported(
                            "COPY TO STDOUT supports text and csv; write Parquet to a server-side file",
                        ));
                    }
                    Ok(Output::CopyOut {
                        format,
                        schema,
                        stream,
                    })
                }
                CopyTarget::File { filename } => {
                    let file = self.lookout.options().file_access.check(&filename)?;
                    let rows = crate::import::export_file(&file, &format, schema, stream).await?;
                    Ok(Output::Command {
                        tag: "COPY",
                        rows: Some(rows),
                    })
                }
                _ => Err(QueryError::unsupported("COPY TO PROGRAM is not supported")),
            };
        }
        let CopySource::Table {
            table_name: t,
            columns,
        } = source
        else {
            return Err(QueryError::syntax("COPY FROM needs a table"));
        };
        let table = table_name(&t)?;
        if let (CopyTarget::File { filename }, CopyKind::Parquet) = (&target, format.kind) {
            if self.in_transaction() {
                return Err(QueryError::unsupported(
                    "COPY FROM a Parquet file cannot run inside a transaction block; it commits on its own",
                ));
            }
            // Parquet carries its schema: a missing table is created from it.
            let file = self.lookout.options().file_access.check(filename)?;
            let opened = vec![(file.path().to_path_buf(), file.open()?)];
            let rows = crate::import::import_opened(&self.lookout, &table, opened, None).await?;
            return Ok(Output::Command {
                tag: "COPY",
                rows: Some(rows),
            });
        }
        let def = self.lookout.storage().table(&table)?;
        let full = def.schema()?;
        let schema = if columns.is_empty() {
            full
        } else {
            let fields = columns
                .iter()
                .map(|c| {
                    let n = ident_name(c);
                    full.field_with_name(&n).cloned().map_err(|_| {
                        QueryError::with_code(
                            "42703",
                            format!("column \"{n}\" of relation \"{table}\" does not exist"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Arc::new(Schema::new(fields))
        };
        match target {
            CopyTarget::Stdin => {
                if format.kind == CopyKind::Parquet {
                    return Err(QueryError::unsupported(
                        "COPY FROM STDIN supports text and csv; load Parquet from a server-side file",
                    ));
                }
                Ok(Output::CopyIn(CopyIn {
                    table,
                    schema,
                    format,
                }))
            }
            CopyTarget::File { filename } => {
                let file = self.lookout.options().file_access.check(&filename)?;
                let mut bytes = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(
                    &mut tokio::fs::File::from_std(file.open()?),
                    &mut bytes,
                )
                .await
                .map_err(|e| {
                    QueryError::with_code(
                        "58P01",
                        format!("could not read file \"{filename}\": {e}"),
                    )
                })?;
                let mut decoder = CopyDecoder::new(&table, schema, format)?;
                decoder.push(&bytes)?;
                let rows = self.write_batches(&table, decoder.finish()?).await?;
                Ok(Output::Command {
                    tag: "COPY",
                    rows: Some(rows),
                })
            }
            _ => Err(QueryError::unsupported(
                "COPY FROM PROGRAM is not supported",
            )),
        }
    }

    /// Starts decoding the data of a `COPY ... FROM STDIN`.
    pub fn copy_decoder(&self, copy: &CopyIn) -> Result<CopyDecoder> {
        CopyDecoder::new(&copy.table, Arc::clone(&copy.schema), copy.format.clone())
    }

    /// Commits decoded rows as one unit: small loads through the WAL, large
    /// ones straight to Parquet. Returns the row count.
    pub async fn write_batches(&self, table: &str, batches: Vec<RecordBatch>) -> Result<u64> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if rows == 0 {
            return Ok(0);
        }
        let ingest = self.lookout.ingest();
        if let TransactionState::Open(block) = &self.transaction {
            let storage = self.lookout.storage();
            let def = storage.table(table)?;
            let schema = def.schema()?;
            for batch in batches {
                block.insert(table, storage.validate(&def, &schema, &batch)?, false)?;
            }
            return Ok(rows);
        }
        if rows <= BULK_ROWS {
            let schema = batches[0].schema();
            let all = arrow::compute::concat_batches(&schema, &batches)
                .map_err(|e| QueryError::with_code("XX000", e.to_string()))?;
            ingest.write(table, all).await
        } else {
            let stream = futures::stream::iter(batches.into_iter().map(Ok));
            ingest.bulk_load(table, stream).await
        }
    }

    /// An encoder for `COPY ... TO STDOUT` rows.
    pub fn copy_encoder(format: &CopyFormat) -> CopyEncoder {
        CopyEncoder::new(format.clone())
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

/// Placeholders cast to a type (`$1::oid[]`), with that type.
fn cast_placeholders(plan: &LogicalPlan) -> Vec<(String, DataType)> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Cast, Expr, ExprSchemable, TryCast};
    let mut found = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) = e
                    && let Expr::Placeholder(p) = expr.as_ref()
                {
                    found.push((p.id.clone(), field.data_type().clone()));
                }
                // `x = ANY($1)`: the parameter is a list of x's type.
                if let Expr::ScalarFunction(f) = e
                    && f.name() == "array_has"
                    && let [Expr::Placeholder(p), element] = f.args.as_slice()
                    && let Some(input) = node.inputs().first()
                    && let Ok(item) = element.get_type(input.schema())
                {
                    let field = Arc::new(Field::new("item", item, true));
                    found.push((p.id.clone(), DataType::List(field)));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// `schema` with the output column names PostgreSQL gives (see
/// [`crate::pg::rewrite::output_names`]).
fn with_names(schema: SchemaRef, names: &[Option<String>]) -> SchemaRef {
    let width = schema.fields().len();
    // A `None` stands for the columns of a `*`, however many they are.
    let names: Vec<&Option<String>> = match names.iter().position(Option::is_none) {
        Some(star) if width + 1 >= names.len() => {
            let expanded = width + 1 - names.len();
            names[..star]
                .iter()
                .chain(std::iter::repeat_n(&None, expanded))
                .chain(&names[star + 1..])
                .collect()
        }
        _ => names.iter().collect(),
    };
    if names.len() != width || names.iter().all(|n| n.is_none()) {
        return schema;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, name)| match name {
            Some(name) => f.as_ref().clone().with_name(name.clone()),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
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

fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyFormat> {
    let mut kind = CopyKind::Text;
    for o in options {
        if let CopyOption::Format(f) = o {
            kind = match f.value.to_lowercase().as_str() {
                "text" => CopyKind::Text,
                "csv" => CopyKind::Csv,
                "parquet" => CopyKind::Parquet,
                "binary" => {
                    return Err(QueryError::unsupported(
                        "COPY binary format is not supported; use text, csv or parquet",
                    ));
                }
                other => {
                    return Err(QueryError::with_code(
                        "22023",
                        format!("COPY format \"{other}\" not recognized"),
                    ));
                }
            };
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(_) => kind = CopyKind::Csv,
            CopyLegacyOption::Binary => {
                return Err(QueryError::unsupported(
                    "COPY binary format is not supported; use text, csv or parquet",
                ));
            }
            _ => {}
        }
    }
    let mut format = CopyFormat::new(kind);
    for o in options {
        match o {
            CopyOption::Header(h) => format.header = *h,
            CopyOption::Delimiter(c) => format.delimiter = single_byte(*c)?,
            CopyOption::Null(n) => format.null = n.clone(),
            CopyOption::Quote(c) => format.quote = single_byte(*c)?,
            CopyOption::Escape(c) => format.escape = single_byte(*c)?,
            _ => {}
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Delimiter(c) => format.delimiter = single_byte(*c)?,
            CopyLegacyOption::Null(n) => format.null = n.clone(),
            CopyLegacyOption::Header => format.header = true,
            CopyLegacyOption::Csv(opts) => {
                for co in opts {
                    match co {
                        ast::CopyLegacyCsvOption::Header => format.header = true,
                        ast::CopyLegacyCsvOption::Quote(c) => format.quote = single_byte(*c)?,
                        ast::CopyLegacyCsvOption::Escape(c) => format.escape = single_byte(*c)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(format)
}

fn single_byte(c: char) -> Result<u8> {
    u8::try_from(c as u32)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| {
            QueryError::with_code(
                "22023",
                "COPY delimiter, quote and escape must be single ASCII characters",
            )
        })
}
