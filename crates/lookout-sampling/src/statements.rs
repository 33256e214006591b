//! `ALTER TABLE ... SET SAMPLING`, `RESET SAMPLING`, `SHOW SAMPLING` and
//! `DECIDE SAMPLING`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use lookout_storage::{CreateTable, Derivation, time_type};

use crate::decide::{
    Clock, Decisions, Marks, Plan, ensure_counts_table, missing_column, read_marks,
};
use crate::policy::{
    ARRIVED, HOUR, SamplingPolicy, Statement, counts_table, held_table, is_sampling, parse_decide,
    parse_reset, policy_of, statement,
};
use lookout_query::SqlState;
use lookout_query::ext::{
    Access, ExtStatement, Output, SqlExtension, quote_ident as quote, quoted_table,
};
use lookout_query::{Ingest, QueryError, Result, SqlSession};

/// The sampling statements.
#[derive(Debug)]
pub(crate) struct SamplingStatements {
    pub(crate) decisions: Arc<Decisions>,
}

pub(crate) fn command(tag: &'static str) -> Output {
    Output::Command { tag, rows: None }
}

pub(crate) fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("policy", DataType::Utf8, false),
        Field::new("decided_through", time_type(), true),
        Field::new("hours_closed_before", time_type(), true),
        Field::new("last_error", DataType::Utf8, true),
    ]))
}

pub(crate) fn decide_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("kept", DataType::Int64, false),
        Field::new("dropped", DataType::Int64, false),
        Field::new("rescued", DataType::Int64, false),
    ]))
}

impl SqlExtension for SamplingStatements {
    fn parse(&self, sql: &str) -> Option<Result<Box<dyn ExtStatement>>> {
        let command = match statement(sql)? {
            Statement::Set => SamplingPolicy::parse(sql).map(SamplingStatement::Set),
            Statement::Reset => parse_reset(sql).map(SamplingStatement::Reset),
            Statement::Show => Ok(SamplingStatement::Show),
            Statement::Decide => parse_decide(sql).map(SamplingStatement::Decide),
        };
        Some(command.map(|command| {
            Box::new(Parsed {
                command,
                decisions: Arc::clone(&self.decisions),
            }) as Box<dyn ExtStatement>
        }))
    }
}

/// One sampling statement.
#[derive(Debug)]
pub(crate) enum SamplingStatement {
    /// `ALTER TABLE t SET SAMPLING (...)`.
    Set(SamplingPolicy),
    /// `ALTER TABLE t RESET SAMPLING`.
    Reset(String),
    /// `SHOW SAMPLING`.
    Show,
    /// `DECIDE SAMPLING [ON t]`.
    Decide(Option<String>),
}

/// A sampling statement with the decisions it works on.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) command: SamplingStatement,
    pub(crate) decisions: Arc<Decisions>,
}

impl std::fmt::Display for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            SamplingStatement::Set(policy) => f.write_str(&policy.to_sql()),
            SamplingStatement::Reset(table) => {
                write!(f, "ALTER TABLE {} RESET SAMPLING", quoted_table(table))
            }
            SamplingStatement::Show => f.write_str("SHOW SAMPLING"),
            SamplingStatement::Decide(None) => f.write_str("DECIDE SAMPLING"),
            SamplingStatement::Decide(Some(table)) => {
                write!(f, "DECIDE SAMPLING ON {}", quoted_table(table))
            }
        }
    }
}

#[async_trait]
impl ExtStatement for Parsed {
    fn access(&self) -> Access {
        match self.command {
            SamplingStatement::Show => Access::Read,
            SamplingStatement::Decide(_) => Access::Write,
            _ => Access::Admin,
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        match self.command {
            SamplingStatement::Show => Some(show_schema()),
            SamplingStatement::Decide(_) => Some(decide_schema()),
            _ => None,
        }
    }

    async fn execute(&self, session: &mut dyn SqlSession) -> Result<Output> {
        let decisions = &self.decisions;
        match &self.command {
            SamplingStatement::Set(policy) => {
                set_sampling(session, decisions, policy.clone()).await
            }
            SamplingStatement::Reset(table) => reset_sampling(session, decisions, table).await,
            SamplingStatement::Show => show_sampling(session, decisions).await,
            SamplingStatement::Decide(table) => {
                decide_sampling(session, decisions, table.as_deref()).await
            }
        }
    }
}

pub(crate) async fn set_sampling(
    session: &mut dyn SqlSession,
    decisions: &Decisions,
    policy: SamplingPolicy,
) -> Result<Output> {
    let lookout = decisions.lookout.clone();
    let storage = lookout.storage();
    let def = storage.table(&policy.table)?;
    if def.derived.is_some() || def.options.versions.is_some() {
        return Err(QueryError::unsupported(format!(
            "\"{}\" is a rollup or a versioned table; only tables of events can be sampled",
            def.name
        )));
    }
    let schema = def.schema()?;
    for column in std::iter::once(&policy.key).chain(&policy.segment_by) {
        if schema.field_with_name(column).is_err() {
            return Err(missing_column(column, &def.name));
        }
    }
    match schema.field_with_name(&policy.weight) {
        Ok(f) if f.data_type() != &DataType::Float64 => {
            return Err(QueryError::new(
                SqlState::DatatypeMismatch,
                format!(
                    "the weight column \"{}\" must be double precision, not {}",
                    policy.weight,
                    f.data_type()
                ),
            ));
        }
        Ok(_) => {}
        Err(_) => {
            // Checked before the column is added, so a bad policy changes nothing.
            check_expressions(session, &policy, None).await?;
            storage
                .add_column(
                    &def.name,
                    &Field::new(&policy.weight, DataType::Float64, true),
                    true,
                )
                .await?;
        }
    }
    check_expressions(session, &policy, Some(&policy.weight)).await?;
    let counts_existed = storage.table(&counts_table(&policy.table)).is_ok();
    ensure_counts_table(storage, &policy).await?;
    let held = held_table(&policy.table);
    let _gate = lookout.ingest().gate().write().await;
    if let Ok(old) = storage.table(&held) {
        storage.redefine(&held, &policy.to_sql()).await?;
        if let Err(e) = check_decisions(session, decisions, &policy).await {
            if let Some(old) = old.derived {
                storage.redefine(&held, &old.definition).await?;
            }
            return Err(e);
        }
        decisions.forget_failure(&policy.table);
        return Ok(command("ALTER TABLE"));
    }
    let def = storage.table(&policy.table)?;
    let mut fields: Vec<Field> = def
        .schema()?
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(ARRIVED, time_type(), false));
    let request = CreateTable {
        time_column: Some(ARRIVED.into()),
        partition_column: Some(def.options.partition_column.clone()),
        bucket_micros: Some(HOUR),
        ttl_micros: None,
        versions: None,
        derived: Some(Derivation {
            source: policy.table.clone(),
            definition: policy.to_sql(),
            pending: false,
            kind: Some(crate::policy::KIND.to_string()),
        }),
    };
    storage
        .create_table(&held, &Schema::new(fields), request, false)
        .await?;
    if let Err(e) = check_decisions(session, decisions, &policy).await {
        storage.drop_table(&held, true).await?;
        if !counts_existed {
            storage
                .drop_table(&counts_table(&policy.table), true)
                .await?;
        }
        return Err(e);
    }
    Ok(command("ALTER TABLE"))
}

/// Plans the queries a decision runs, over the real tables, so a policy
/// that could never decide (a name its joins make ambiguous, say) is
/// refused when it is set instead of failing every decision after.
pub(crate) async fn check_decisions(
    session: &mut dyn SqlSession,
    decisions: &Decisions,
    policy: &SamplingPolicy,
) -> Result<()> {
    let plan = Plan {
        policy,
        def: decisions.lookout.storage().table(&policy.table)?,
        marks: Marks::default(),
        cutoff: 0,
        close_before: 0,
    };
    let mut queries = vec![
        plan.narrow_candidates(),
        plan.candidates(),
        plan.closed_sql(),
    ];
    queries.extend(plan.matched_sql());
    queries.extend(plan.rescue_sql(0));
    for sql in queries {
        session.logical_plan(&sql).await.map_err(|e| {
            QueryError::new(
                e.state(),
                format!("this sampling policy could not decide: {e}"),
            )
        })?;
    }
    Ok(())
}

/// Plans every expression of the policy over the table, so a wrong column
/// or type is refused when the policy is set, not at its first decision.
pub(crate) async fn check_expressions(
    session: &mut dyn SqlSession,
    policy: &SamplingPolicy,
    weight: Option<&str>,
) -> Result<()> {
    let table = quoted_table(&policy.table);
    let mut exprs = vec![
        format!("sample_hash(CAST({} AS VARCHAR))", quote(&policy.key)),
        format!("CAST(({}) AS DOUBLE PRECISION)", policy.rate),
    ];
    exprs.extend(
        policy
            .row_rules()
            .iter()
            .map(|k| format!("(({k}) IS TRUE)")),
    );
    if let Some(w) = weight {
        exprs.push(quote(w));
    }
    let sql = format!("SELECT {} FROM {table} WHERE FALSE", exprs.join(", "));
    session.logical_plan(&sql).await?;
    // A rule that reads other tables runs as a filter of its own; running
    // it once shows whether DataFusion can (a subquery under OR it cannot).
    for rule in policy.table_rules() {
        let sql = format!("SELECT 1 FROM {table} WHERE ({rule}) LIMIT 1");
        session.query(&sql).await.map_err(|e| {
            QueryError::new(
                e.state(),
                format!(
                    "keep-rule {rule}: {e} (a rule reading another table is a condition such as \
                     key IN (SELECT ...) or EXISTS (...), ANDed with conditions on the row)"
                ),
            )
        })?;
    }
    Ok(())
}

/// Decides every held row (closing every hour that has rows), then drops
/// the held area; later writes go to the table unsampled.
pub(crate) async fn reset_sampling(
    session: &mut dyn SqlSession,
    decisions: &Decisions,
    table: &str,
) -> Result<Output> {
    let table = table.to_string();
    let lookout = decisions.lookout.clone();
    if policy_of(lookout.storage(), &table)?.is_none() {
        return Ok(command("ALTER TABLE"));
    }
    let clock = Clock {
        now: session.now_micros(),
        close_all: true,
        rescue_now: true,
    };
    // Alone at the gate: no row arrives between the last decision and the
    // drop of the held area.
    let _gate = lookout.ingest().gate().write().await;
    // The held rows are decided one last time; while that fails, the
    // policy stays (keeping every held row would skew the weights of the
    // rows already sampled).
    decisions
        .decide_at(&lookout, &table, clock, lookout.storage().clock().now_micros())
        .await
        .map_err(|e| {
            QueryError::new(
                e.state(),
                format!(
                    "RESET SAMPLING decides the rows \"{table}\" holds one last time, and that failed: {e}; \
                     fix its cause and try again, or DROP TABLE to discard the table with its held rows"
                ),
            )
        })?;
    lookout
        .storage()
        .drop_table(&held_table(&table), false)
        .await?;
    decisions.forget_failure(&table);
    Ok(command("ALTER TABLE"))
}

/// Before `DROP TABLE` of a sampled table: drops its held area and counts,
/// whose undecided rows go with the table, so no decision has to run (one
/// that keeps failing does not stop the drop). A rollup on the table still
/// stops it, before anything is dropped.
pub(crate) async fn drop_sampling_of(
    ingest: &Ingest,
    decisions: &Decisions,
    table: &str,
) -> Result<()> {
    let storage = ingest.storage();
    let manifest = storage.manifest()?;
    let held = held_table(table);
    if manifest.table(&held).is_err() {
        return Ok(());
    }
    if let Some(rollup) = manifest.tables.values().find(|t| {
        t.def
            .derived
            .as_ref()
            .is_some_and(|d| d.source == table && !is_sampling(d))
    }) {
        return Err(lookout_storage::StorageError::Dependent {
            table: table.to_string(),
            dependent: rollup.def.name.clone(),
        }
        .into());
    }
    let _gate = ingest.gate().write().await;
    let _running = decisions.running.lock().await;
    storage.drop_table(&held, true).await?;
    storage.drop_table(&counts_table(table), true).await?;
    decisions.forget_failure(table);
    Ok(())
}

pub(crate) async fn decide_sampling(
    session: &mut dyn SqlSession,
    decisions: &Decisions,
    table: Option<&str>,
) -> Result<Output> {
    let lookout = decisions.lookout.clone();
    let clock = Clock {
        now: session.now_micros(),
        close_all: false,
        rescue_now: true,
    };
    let decided = match table {
        Some(t) => decisions.decide(&lookout, t, clock).await?,
        None => decisions.decide_all(&lookout, clock).await?,
    };
    let schema = decide_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![decided.kept as i64])),
            Arc::new(Int64Array::from(vec![decided.dropped as i64])),
            Arc::new(Int64Array::from(vec![decided.rescued as i64])),
        ],
    )?;
    Ok(Output::from_batches(schema, vec![batch]))
}

pub(crate) async fn show_sampling(
    session: &mut dyn SqlSession,
    decisions: &Decisions,
) -> Result<Output> {
    let storage = decisions.lookout.storage().clone();
    let manifest = storage.manifest()?;
    let policies: Vec<(String, String)> = manifest
        .tables
        .values()
        .filter_map(|e| e.def.derived.as_ref().filter(|d| is_sampling(d)))
        .map(|d| (d.source.clone(), d.definition.clone()))
        .collect();
    let (mut tables, mut texts, mut through, mut closed, mut errors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (table, definition) in policies {
        let marks = read_marks(session, &table).await?;
        errors.push(decisions.failure(&table));
        tables.push(table);
        texts.push(definition);
        through.push((marks.decided_through > 0).then_some(marks.decided_through));
        closed.push((marks.hours_closed_before > 0).then_some(marks.hours_closed_before));
    }
    let schema = show_schema();
    let stamps = |v: Vec<Option<i64>>| -> Result<ArrayRef> {
        Ok(arrow::compute::cast(
            &TimestampMicrosecondArray::from(v),
            &time_type(),
        )?)
    };
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(arrow::array::StringArray::from(tables)),
            Arc::new(arrow::array::StringArray::from(texts)),
            stamps(through)?,
            stamps(closed)?,
            Arc::new(arrow::array::StringArray::from(errors)),
        ],
    )?;
    Ok(Output::from_batches(schema, vec![batch]))
}
