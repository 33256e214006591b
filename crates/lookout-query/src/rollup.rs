//! Continuous rollups: per-bucket mergeable states (counts, sums, sketches,
//! score states) of a table's rows, kept in a table of their own and
//! maintained as rows are written.
//!
//! Every write to a table with rollups computes each rollup's delta (one row
//! per bucket and group the write touches) and hands the rows and the deltas
//! to the storage engine as one WAL record, so the statistics of every row
//! are as durable as the rows. Deltas are merged when the rollup's rows are
//! written to Parquet and compacted; queries merge whatever is left with
//! `sum`, `sketch_merge` and `score_merge`, so a late row simply adds to its
//! bucket.

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use lookout_storage::schema::DAY_MICROS;
use lookout_storage::{Combine, CreateTable, Derivation, Storage, StorageError, TableDef};

use crate::error::{QueryError, Result};
use crate::extension::SqlExtension;
use crate::session::{Output, Session, quote_ident as quote};
use crate::transaction::BlockWrites;

/// The time column of every rollup table.
const BUCKET_COLUMN: &str = "bucket";

/// What one rollup column keeps, and how two of its values merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `count(*)`: rows; merged by `sum`.
    Rows,
    /// `count(expr)`: non-NULL values; merged by `sum`.
    Count,
    /// `sum(expr)` as double precision; merged by `sum`.
    Sum,
    /// `min(expr)` as double precision; merged by `min`.
    Min,
    /// `max(expr)` as double precision; merged by `max`.
    Max,
    /// `quantile_sketch(expr)`; merged by `sketch_merge`.
    Sketch,
    /// `score_state(expr [, threshold])`; merged by `score_merge`.
    Score,
}

impl Kind {
    fn from_function(name: &str) -> Option<Kind> {
        Some(match name {
            "count" => Kind::Count,
            "sum" => Kind::Sum,
            "min" => Kind::Min,
            "max" => Kind::Max,
            "quantile_sketch" => Kind::Sketch,
            "score_state" => Kind::Score,
            _ => return None,
        })
    }

    /// The aggregate function computing it from rows.
    fn function(self) -> &'static str {
        match self {
            Kind::Rows | Kind::Count => "count",
            Kind::Sum => "sum",
            Kind::Min => "min",
            Kind::Max => "max",
            Kind::Sketch => "quantile_sketch",
            Kind::Score => "score_state",
        }
    }

    /// The suffix of a column's default name (`latency_ms_sketch`).
    fn suffix(self) -> &'static str {
        match self {
            Kind::Rows | Kind::Count => "count",
            Kind::Sum => "sum",
            Kind::Min => "min",
            Kind::Max => "max",
            Kind::Sketch => "sketch",
            Kind::Score => "state",
        }
    }
}

/// One column of a rollup: what it aggregates and its name.
#[derive(Debug, Clone)]
struct Column {
    kind: Kind,
    /// The aggregated expression, as SQL text (none for `count(*)`).
    arg: Option<String>,
    /// The second argument, as SQL text: `score_state`'s threshold or
    /// `quantile_sketch`'s weight.
    second: Option<String>,
    name: String,
}

impl Column {
    /// The aggregate call with `arg` as its first argument.
    fn call_with(&self, arg: &str) -> String {
        let function = self.kind.function();
        match &self.second {
            Some(second) => format!("{function}({arg}, {second})"),
            None => format!("{function}({arg})"),
        }
    }

    /// As computed from rows: sums and extremes in double precision.
    fn delta_sql(&self) -> String {
        let arg = self.arg.as_deref().unwrap_or("*");
        let arg = match self.kind {
            Kind::Sum | Kind::Min | Kind::Max => format!("CAST({arg} AS DOUBLE PRECISION)"),
            _ => arg.to_string(),
        };
        format!("{} AS {}", self.call_with(&arg), quote(&self.name))
    }

    fn merge_sql(&self) -> String {
        let merge = match self.kind {
            Kind::Rows | Kind::Count | Kind::Sum => "sum",
            Kind::Min => "min",
            Kind::Max => "max",
            Kind::Sketch => "sketch_merge",
            Kind::Score => "score_merge",
        };
        let name = quote(&self.name);
        format!("{merge}({name}) AS {name}")
    }

    /// As declared.
    fn definition(&self) -> String {
        let arg = self.arg.as_deref().unwrap_or("*");
        format!("{} AS {}", self.call_with(arg), quote(&self.name))
    }
}

/// A rollup as declared by `CREATE ROLLUP`.
#[derive(Debug, Clone)]
pub(crate) struct RollupDef {
    pub(crate) name: String,
    pub(crate) source: String,
    group_by: Vec<String>,
    /// Bucket width, in microseconds.
    every: i64,
    /// The width as written.
    every_text: String,
    columns: Vec<Column>,
}

fn syntax(e: impl std::fmt::Display) -> QueryError {
    QueryError::syntax(e.to_string())
}

/// Whether `sql` starts with `word1 word2` (case-insensitive).
fn starts_with_words(sql: &str, first: &str, second: &str) -> bool {
    let mut words = sql.split_whitespace();
    words.next().is_some_and(|w| w.eq_ignore_ascii_case(first))
        && words.next().is_some_and(|w| w.eq_ignore_ascii_case(second))
}

fn expect_word(parser: &mut Parser<'_>, word: &str) -> Result<()> {
    let token = parser.next_token();
    match &token.token {
        Token::Word(w) if w.value.eq_ignore_ascii_case(word) => Ok(()),
        other => Err(QueryError::syntax(format!(
            "expected {word}, found {other} in CREATE ROLLUP"
        ))),
    }
}

fn parse_name(parser: &mut Parser<'_>) -> Result<String> {
    let name = parser.parse_object_name(false).map_err(syntax)?;
    let table = crate::session::table_name(&name)?;
    if table.starts_with(crate::catalog::SYSTEM_PREFIX) {
        return Err(QueryError::with_code(
            "42501",
            format!("rollups cannot be defined on or in the lookout schema: \"{name}\""),
        ));
    }
    Ok(table)
}

/// `CREATE ROLLUP [IF NOT EXISTS] name ON table [GROUP BY col, ...] EVERY
/// 'interval' AS (aggregate [AS name], ...)`; returns the definition and
/// whether IF NOT EXISTS was given.
pub(crate) fn parse_create(sql: &str) -> Result<(RollupDef, bool)> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    parser.expect_keyword(Keyword::CREATE).map_err(syntax)?;
    expect_word(&mut parser, "rollup")?;
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parse_name(&mut parser)?;
    parser.expect_keyword(Keyword::ON).map_err(syntax)?;
    let source = parse_name(&mut parser)?;
    let mut group_by = Vec::new();
    if parser.parse_keywords(&[Keyword::GROUP, Keyword::BY]) {
        loop {
            let ident = parser.parse_identifier().map_err(syntax)?;
            group_by.push(crate::session::ident_name(&ident));
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
    }
    expect_word(&mut parser, "every")?;
    let every_text = parser.parse_literal_string().map_err(syntax)?;
    let every = crate::interval::parse_duration(&every_text)?;
    parser.expect_keyword(Keyword::AS).map_err(syntax)?;
    parser.expect_token(&Token::LParen).map_err(syntax)?;
    let mut columns = Vec::new();
    loop {
        let expr = parser.parse_expr().map_err(syntax)?;
        let alias = if parser.parse_keyword(Keyword::AS) {
            Some(crate::session::ident_name(
                &parser.parse_identifier().map_err(syntax)?,
            ))
        } else {
            None
        };
        columns.push(column(&expr, alias)?);
        if !parser.consume_token(&Token::Comma) {
            break;
        }
    }
    parser.expect_token(&Token::RParen).map_err(syntax)?;
    if parser.peek_token().token != Token::EOF {
        return Err(QueryError::syntax(format!(
            "unexpected {} after CREATE ROLLUP's column list",
            parser.peek_token().token
        )));
    }
    let def = RollupDef {
        name,
        source,
        group_by,
        every,
        every_text,
        columns,
    };
    def.check_names()?;
    Ok((def, if_not_exists))
}

/// One rollup column from its aggregate call.
fn column(expr: &SqlExpr, alias: Option<String>) -> Result<Column> {
    let unsupported = || {
        QueryError::unsupported(format!(
            "{expr} cannot be kept in a rollup: use count(*), count(x), sum(x), min(x), max(x), quantile_sketch(x) or score_state(x [, threshold]), whose partial results merge (an average is sum(x) / count(x))"
        ))
    };
    let SqlExpr::Function(f) = expr else {
        return Err(unsupported());
    };
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
        return Err(unsupported());
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(unsupported());
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(unsupported());
    }
    let function = f.name.to_string().to_lowercase();
    let mut kind = Kind::from_function(&function).ok_or_else(unsupported)?;
    let mut args = Vec::new();
    for arg in &list.args {
        match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if kind == Kind::Count => {
                kind = Kind::Rows;
            }
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push(e),
            _ => return Err(unsupported()),
        }
    }
    let arity_ok = match kind {
        Kind::Rows => args.is_empty(),
        Kind::Score | Kind::Sketch => (1..=2).contains(&args.len()),
        _ => args.len() == 1,
    };
    if !arity_ok {
        return Err(unsupported());
    }
    let name = match (alias, args.first()) {
        (Some(a), _) => a,
        (None, None) => "count".to_string(),
        (None, Some(SqlExpr::Identifier(i))) => {
            format!("{}_{}", crate::session::ident_name(i), kind.suffix())
        }
        (None, Some(_)) => {
            return Err(QueryError::syntax(format!(
                "name the rollup column {expr} with AS"
            )));
        }
    };
    Ok(Column {
        kind,
        arg: args.first().map(|e| e.to_string()),
        second: args.get(1).map(|e| e.to_string()),
        name,
    })
}

impl RollupDef {
    fn check_names(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for name in std::iter::once(BUCKET_COLUMN)
            .chain(self.group_by.iter().map(String::as_str))
            .chain(self.columns.iter().map(|c| c.name.as_str()))
        {
            if !seen.insert(name) {
                return Err(QueryError::with_code(
                    "42701",
                    format!(
                        "column \"{name}\" appears twice in rollup \"{}\" (\"{BUCKET_COLUMN}\" is the bucket's start)",
                        self.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The definition as stored, parsed back at every open.
    fn to_sql(&self) -> String {
        let group = if self.group_by.is_empty() {
            String::new()
        } else {
            let cols: Vec<String> = self.group_by.iter().map(|g| quote(g)).collect();
            format!(" GROUP BY {}", cols.join(", "))
        };
        let columns: Vec<String> = self.columns.iter().map(Column::definition).collect();
        format!(
            "CREATE ROLLUP {} ON {}{group} EVERY '{}' AS ({})",
            quote(&self.name),
            quote(&self.source),
            self.every_text.replace('\'', "''"),
            columns.join(", ")
        )
    }

    fn group_list(&self) -> String {
        self.group_by
            .iter()
            .map(|g| format!(", {}", quote(g)))
            .collect()
    }

    /// The query computing this rollup's rows from `from`'s rows.
    fn delta_sql(&self, time_column: &str, from: &str) -> String {
        let bucket = format!(
            "date_bin(INTERVAL '{} microseconds', {})",
            self.every,
            quote(time_column)
        );
        let columns: Vec<String> = self.columns.iter().map(Column::delta_sql).collect();
        let group = self.group_list();
        format!(
            "SELECT {bucket} AS {BUCKET_COLUMN}{group}, {} FROM {from} GROUP BY {bucket}{group}",
            columns.join(", ")
        )
    }

    /// The query merging rollup rows of `from` into one row per bucket and group.
    fn merge_sql(&self, from: &str) -> String {
        let columns: Vec<String> = self.columns.iter().map(Column::merge_sql).collect();
        let group = self.group_list();
        format!(
            "SELECT {BUCKET_COLUMN}{group}, {} FROM {from} GROUP BY {BUCKET_COLUMN}{group}",
            columns.join(", ")
        )
    }

    /// Width of the rollup table's time partitions: about 720 buckets
    /// (30 days of an hourly rollup), in whole days. A rollup is small, and
    /// a query over a month should open a handful of files, not one a day.
    fn partition_width(&self) -> i64 {
        let width = self.every.saturating_mul(720);
        (width + DAY_MICROS - 1) / DAY_MICROS * DAY_MICROS
    }
}

/// Runs `sql` over `rows` registered as the table `name` (so errors name
/// the user's table), in a small single-threaded context with Lookout's
/// functions.
async fn run_over(
    name: &str,
    schema: SchemaRef,
    rows: Vec<RecordBatch>,
    sql: &str,
) -> Result<RecordBatch> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    crate::functions::register(&ctx);
    let table = MemTable::try_new(Arc::clone(&schema), vec![rows])?;
    ctx.register_table(
        datafusion::common::TableReference::bare(name.to_string()),
        Arc::new(table),
    )?;
    let frame = ctx.sql(sql).await?;
    let out_schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    Ok(arrow::compute::concat_batches(&out_schema, &batches)?)
}

/// Casts `batch` to `schema` column by column (names and order agree).
fn fit(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

impl RollupDef {
    /// This rollup's rows for `rows` of the source table.
    async fn delta(&self, source: &TableDef, rows: Vec<RecordBatch>) -> Result<RecordBatch> {
        let schema = source.schema()?;
        let from = quote(&source.name);
        let sql = self.delta_sql(&source.options.time_column, &from);
        run_over(&source.name, schema, rows, &sql).await
    }

    /// Merges rollup rows into one row per bucket and group.
    async fn merge(&self, rows: Vec<RecordBatch>, schema: &SchemaRef) -> Result<RecordBatch> {
        let sql = self.merge_sql(&quote(&self.name));
        let merged = run_over(&self.name, Arc::clone(schema), rows, &sql).await?;
        fit(&merged, schema)
    }
}

/// Merges a rollup table's rows when the storage engine flushes or compacts them.
#[derive(Debug)]
struct Combiner {
    rollup: Arc<RollupDef>,
}

impl Combine for Combiner {
    fn combine(
        &self,
        rows: RecordBatch,
    ) -> BoxFuture<'static, lookout_storage::Result<RecordBatch>> {
        let rollup = Arc::clone(&self.rollup);
        Box::pin(async move {
            let schema = rows.schema();
            rollup
                .merge(vec![rows], &schema)
                .await
                .map_err(|e| StorageError::InvalidData(e.to_string()))
        })
    }
}

pub(crate) fn rollups_of(storage: &Storage, table: &str) -> Result<Vec<RollupDef>> {
    let manifest = storage.manifest()?;
    manifest
        .tables
        .values()
        .filter(|t| {
            t.def
                .derived
                .as_ref()
                .is_some_and(|d| d.source == table && !crate::sampling::is_sampling(d))
        })
        .map(|t| {
            let definition = t.def.derived.as_ref().map(|d| d.definition.as_str());
            parse_create(definition.unwrap_or_default()).map(|(def, _)| def)
        })
        .collect()
}

/// The write path of the SQL layer: rows go to storage together with the
/// deltas of the table's rollups.
#[derive(Debug, Clone)]
pub(crate) struct Ingest {
    storage: Storage,
    /// Writes hold it shared; creating a rollup holds it alone while it
    /// commits the rollup and takes the snapshot it backfills from, so every
    /// row is counted once: by the backfill or by its write. A sampling
    /// decision takes it alone for an instant, so that every row that
    /// arrived before that instant has committed.
    pub(crate) gate: Arc<tokio::sync::RwLock<()>>,
}

impl Ingest {
    pub(crate) fn new(storage: Storage) -> Self {
        Ingest {
            storage,
            gate: Arc::default(),
        }
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Writes rows (atomic, durable when this returns) and their rollup
    /// deltas; rows of a sampled table go to its held area.
    pub(crate) async fn write(&self, table: &str, batch: RecordBatch) -> Result<u64> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let _gate = self.gate.read().await;
        let group = self.group_of(table, batch).await?;
        Ok(self.storage.write_group(group).await?)
    }

    /// What writing `batch` to `table` writes: the rows (to the held area
    /// of a sampled table) and the deltas of the table's rollups.
    async fn group_of(
        &self,
        table: &str,
        batch: RecordBatch,
    ) -> Result<Vec<(String, RecordBatch)>> {
        let rollups = rollups_of(&self.storage, table)?;
        let held = self.held_area(table)?;
        if rollups.is_empty() && held.is_none() {
            return Ok(vec![(table.to_string(), batch)]);
        }
        let def = self.storage.table(table)?;
        let rows = self.storage.validate(&def, &def.schema()?, &batch)?;
        let mut group = vec![match &held {
            Some((name, schema)) => (
                name.clone(),
                crate::sampling::held_rows(&rows, schema, self.storage.clock().now_micros())?,
            ),
            None => (table.to_string(), rows.clone()),
        }];
        for rollup in &rollups {
            let delta = rollup.delta(&def, vec![rows.clone()]).await?;
            group.push((rollup.name.clone(), delta));
        }
        Ok(group)
    }

    /// Commits a transaction block's writes as one unit: one WAL record
    /// when it only inserted, one manifest version when it deleted rows.
    pub(crate) async fn commit(&self, writes: BlockWrites) -> Result<()> {
        let _gate = self.gate.read().await;
        let mut group = Vec::new();
        for pending in writes.inserts {
            if pending.direct {
                group.push((pending.table, pending.rows));
            } else {
                group.extend(self.group_of(&pending.table, pending.rows).await?);
            }
        }
        group.retain(|(_, rows)| rows.num_rows() > 0);
        if writes.marks.is_empty() {
            if !group.is_empty() {
                self.storage.write_group(group).await?;
            }
        } else {
            self.storage.commit_changes(&writes.marks, group).await?;
        }
        drop(writes.holds);
        Ok(())
    }

    /// The held area of a sampled table, and its schema.
    fn held_area(&self, table: &str) -> Result<Option<(String, SchemaRef)>> {
        let name = crate::sampling::held_table(table);
        match self.storage.table(&name) {
            Ok(def)
                if def
                    .derived
                    .as_ref()
                    .is_some_and(crate::sampling::is_sampling) =>
            {
                Ok(Some((name, def.schema()?)))
            }
            _ => Ok(None),
        }
    }

    /// Loads many rows straight to Parquet; the rollups' deltas are computed
    /// batch by batch and committed with the rows. Rows of a sampled table
    /// go to its held area.
    pub(crate) async fn bulk_load<S>(&self, table: &str, batches: S) -> Result<u64>
    where
        S: Stream<Item = lookout_storage::Result<RecordBatch>> + Send + Unpin + 'static,
    {
        let _gate = self.gate.read().await;
        let rollups = rollups_of(&self.storage, table)?;
        let held = self.held_area(table)?;
        if rollups.is_empty() && held.is_none() {
            return Ok(self.storage.bulk_load(table, batches).await?);
        }
        let def = self.storage.table(table)?;
        let states: Arc<Vec<PendingDeltas>> = Arc::new(
            rollups
                .into_iter()
                .map(|r| {
                    let schema = self.storage.table(&r.name)?.schema()?;
                    Ok(PendingDeltas {
                        rollup: r,
                        schema,
                        deltas: Mutex::default(),
                    })
                })
                .collect::<Result<_>>()?,
        );
        let schema = def.schema()?;
        let arrived = self.storage.clock().now_micros();
        let storage = self.storage.clone();
        let observed = {
            let states = Arc::clone(&states);
            let def = def.clone();
            let held_schema = held.as_ref().map(|(_, s)| Arc::clone(s));
            batches.then(move |item| {
                let states = Arc::clone(&states);
                let (def, schema) = (def.clone(), Arc::clone(&schema));
                let held_schema = held_schema.clone();
                let storage = storage.clone();
                async move {
                    let batch = item?;
                    // Rows bound for a held area are checked against their
                    // own table now, not when they are decided.
                    let rows = match held_schema {
                        Some(_) => storage.validate(&def, &schema, &batch)?,
                        None => lookout_storage::batch::conform(&batch, &def, &schema)?,
                    };
                    for state in states.iter() {
                        state
                            .add(&def, rows.clone())
                            .await
                            .map_err(|e| StorageError::InvalidData(e.to_string()))?;
                    }
                    match held_schema {
                        Some(held) => crate::sampling::held_rows(&rows, &held, arrived)
                            .map_err(|e| StorageError::InvalidData(e.to_string())),
                        None => Ok(batch),
                    }
                }
            })
        };
        let derived = move || async move {
            let mut out = Vec::new();
            for state in states.iter() {
                if let Some(rows) = state
                    .finish()
                    .await
                    .map_err(|e| StorageError::InvalidData(e.to_string()))?
                {
                    out.push((state.rollup.name.clone(), rows));
                }
            }
            Ok(out)
        };
        let target = held.map_or_else(|| table.to_string(), |(name, _)| name);
        Ok(self
            .storage
            .bulk_load_with(&target, Box::pin(observed), derived)
            .await?)
    }
}

/// A rollup's deltas accumulated during a bulk load.
struct PendingDeltas {
    rollup: RollupDef,
    schema: SchemaRef,
    /// Delta batches, and the row count of the last merge's result.
    deltas: Mutex<(Vec<RecordBatch>, usize)>,
}

/// Delta rows held before they are merged, during a bulk load.
const MERGE_EVERY_ROWS: usize = 50_000;

impl PendingDeltas {
    async fn add(&self, source: &TableDef, rows: RecordBatch) -> Result<()> {
        let delta = fit(&self.rollup.delta(source, vec![rows]).await?, &self.schema)?;
        let full = {
            let mut deltas = self.deltas.lock().unwrap_or_else(|p| p.into_inner());
            deltas.0.push(delta);
            let held: usize = deltas.0.iter().map(RecordBatch::num_rows).sum();
            // Merge when the rows held double since the last merge, so
            // that a load touching many buckets merges O(log n) times.
            let threshold = MERGE_EVERY_ROWS.max(2 * deltas.1);
            (held >= threshold).then(|| std::mem::take(&mut deltas.0))
        };
        if let Some(held) = full {
            let merged = self.rollup.merge(held, &self.schema).await?;
            let mut deltas = self.deltas.lock().unwrap_or_else(|p| p.into_inner());
            deltas.1 = merged.num_rows();
            deltas.0.push(merged);
        }
        Ok(())
    }

    async fn finish(&self) -> Result<Option<RecordBatch>> {
        let held = std::mem::take(&mut self.deltas.lock().unwrap_or_else(|p| p.into_inner()).0);
        if held.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.rollup.merge(held, &self.schema).await?))
    }
}

/// Registers the combiners of every rollup, and drops rollups whose
/// `CREATE ROLLUP` never finished (the process stopped during the backfill).
pub(crate) async fn open_rollups(storage: &Storage) -> Result<()> {
    let manifest = storage.manifest()?;
    for entry in manifest.tables.values() {
        let Some(derived) = entry
            .def
            .derived
            .as_ref()
            .filter(|d| !crate::sampling::is_sampling(d))
        else {
            continue;
        };
        if derived.pending {
            tracing::warn!(
                rollup = entry.def.name,
                "dropping a rollup whose CREATE ROLLUP did not finish"
            );
            storage.drop_table(&entry.def.name, true).await?;
            continue;
        }
        let (rollup, _) = parse_create(&derived.definition)?;
        storage.set_combiner(
            &entry.def.name,
            Arc::new(Combiner {
                rollup: Arc::new(rollup),
            }),
        )?;
    }
    Ok(())
}

/// `CREATE ROLLUP`, `DROP ROLLUP` and `SHOW ROLLUPS`.
#[derive(Debug)]
pub(crate) struct RollupStatements;

fn command(tag: &'static str) -> Output {
    Output::Command { tag, rows: None }
}

fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", arrow::datatypes::DataType::Utf8, false),
        Field::new("source", arrow::datatypes::DataType::Utf8, false),
        Field::new("definition", arrow::datatypes::DataType::Utf8, false),
    ]))
}

#[async_trait]
impl SqlExtension for RollupStatements {
    fn claims(&self, sql: &str) -> bool {
        starts_with_words(sql, "create", "rollup")
            || starts_with_words(sql, "drop", "rollup")
            || starts_with_words(sql, "show", "rollups")
    }

    fn describe(&self, sql: &str) -> Result<Option<SchemaRef>> {
        Ok(starts_with_words(sql, "show", "rollups").then(show_schema))
    }

    fn required_access(&self, sql: &str) -> crate::Access {
        if starts_with_words(sql, "show", "rollups") {
            crate::Access::Read
        } else {
            crate::Access::Write
        }
    }

    async fn execute(&self, sql: &str, session: &mut Session) -> Result<Output> {
        let ingest = session.lookout().ingest().clone();
        if starts_with_words(sql, "show", "rollups") {
            return show_rollups(ingest.storage());
        }
        if starts_with_words(sql, "drop", "rollup") {
            return drop_rollup(ingest.storage(), sql).await;
        }
        let (rollup, if_not_exists) = parse_create(sql)?;
        create_rollup(session, &ingest, rollup, if_not_exists).await
    }
}

fn show_rollups(storage: &Storage) -> Result<Output> {
    let manifest = storage.manifest()?;
    let (mut names, mut sources, mut definitions) = (Vec::new(), Vec::new(), Vec::new());
    for entry in manifest.tables.values() {
        if let Some(d) = entry
            .def
            .derived
            .as_ref()
            .filter(|d| !crate::sampling::is_sampling(d))
        {
            names.push(entry.def.name.clone());
            sources.push(d.source.clone());
            definitions.push(d.definition.clone());
        }
    }
    let schema = show_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(arrow::array::StringArray::from(names)),
            Arc::new(arrow::array::StringArray::from(sources)),
            Arc::new(arrow::array::StringArray::from(definitions)),
        ],
    )?;
    Ok(Output::from_batches(schema, vec![batch]))
}

/// `DROP ROLLUP [IF EXISTS] name`: the name and whether IF EXISTS was given.
pub(crate) fn parse_drop(sql: &str) -> Result<(String, bool)> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    parser.expect_keyword(Keyword::DROP).map_err(syntax)?;
    expect_word(&mut parser, "rollup")?;
    let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = parse_name(&mut parser)?;
    if parser.peek_token().token != Token::EOF {
        return Err(QueryError::syntax(format!(
            "unexpected {} after DROP ROLLUP {name}",
            parser.peek_token().token
        )));
    }
    Ok((name, if_exists))
}

async fn drop_rollup(storage: &Storage, sql: &str) -> Result<Output> {
    let (name, if_exists) = parse_drop(sql)?;
    match storage.table(&name) {
        Ok(def)
            if def
                .derived
                .as_ref()
                .is_some_and(|d| !crate::sampling::is_sampling(d)) =>
        {
            storage.drop_table(&name, false).await?;
        }
        Ok(_) => {
            return Err(QueryError::with_code(
                "42809",
                format!("\"{name}\" is a table, not a rollup; use DROP TABLE"),
            ));
        }
        Err(StorageError::TableNotFound(_)) if if_exists => {}
        Err(StorageError::TableNotFound(_)) => {
            return Err(QueryError::with_code(
                "42704",
                format!("rollup \"{name}\" does not exist"),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(command("DROP ROLLUP"))
}

async fn create_rollup(
    session: &Session,
    ingest: &Ingest,
    rollup: RollupDef,
    if_not_exists: bool,
) -> Result<Output> {
    let storage = ingest.storage();
    let source = storage.table(&rollup.source)?;
    if source.derived.is_some() {
        return Err(QueryError::unsupported(format!(
            "\"{}\" is a rollup; rollups of rollups are not supported (merge it with a query instead)",
            source.name
        )));
    }
    if rollup.every < 1_000_000 {
        return Err(QueryError::with_code(
            "22023",
            format!(
                "a rollup bucket must be at least a second, not '{}'",
                rollup.every_text
            ),
        ));
    }
    // The rollup table's columns, from the delta query over no rows; this
    // also checks every expression against the source's columns.
    let empty = RecordBatch::new_empty(source.schema()?);
    let shape = rollup.delta(&source, vec![empty]).await?;
    let fields: Vec<Field> = shape
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if f.name() == BUCKET_COLUMN {
                f.with_nullable(false)
            } else {
                f
            }
        })
        .collect();
    let schema = Schema::new(fields);
    let partition = rollup
        .group_by
        .iter()
        .any(|g| Some(g) == source.options.partition_column.as_ref())
        .then(|| source.options.partition_column.clone())
        .flatten();
    let request = CreateTable {
        time_column: Some(BUCKET_COLUMN.to_string()),
        partition_column: Some(partition),
        bucket_micros: Some(rollup.partition_width()),
        ttl_micros: None,
        versions: None,
        derived: Some(Derivation {
            source: rollup.source.clone(),
            definition: rollup.to_sql(),
            pending: true,
        }),
    };
    let rollup = Arc::new(rollup);
    // Alone at the gate: no write is between reading the rollups and
    // committing its rows, so the snapshot below holds exactly the rows
    // written before the rollup existed. A scan takes its snapshot when it
    // is planned physically, so the backfill starts before the gate opens.
    let backfill = {
        let _gate = ingest.gate.write().await;
        if !storage
            .create_table(&rollup.name, &schema, request, if_not_exists)
            .await?
        {
            return Ok(command("CREATE ROLLUP"));
        }
        storage.set_combiner(
            &rollup.name,
            Arc::new(Combiner {
                rollup: Arc::clone(&rollup),
            }),
        )?;
        let sql = rollup.delta_sql(
            &source.options.time_column,
            &crate::session::quoted_table(&source.name),
        );
        match session.logical_plan(&sql).await {
            Ok(plan) => session.execute_logical(plan).await,
            Err(e) => Err(e),
        }
    };
    let filled = match backfill {
        Ok(rows) => backfill_from(storage, &rollup.name, rows).await,
        Err(e) => Err(e),
    };
    if let Err(e) = filled {
        let _ = storage.drop_table(&rollup.name, true).await;
        return Err(e);
    }
    storage.finish_derivation(&rollup.name).await?;
    Ok(command("CREATE ROLLUP"))
}

async fn backfill_from(
    storage: &Storage,
    name: &str,
    stream: datafusion::execution::SendableRecordBatchStream,
) -> Result<()> {
    let target = storage.table(name)?.schema()?;
    let rows = stream.map(move |b| {
        b.map_err(|e| StorageError::InvalidData(e.to_string()))
            .and_then(|b| fit(&b, &target).map_err(|e| StorageError::InvalidData(e.to_string())))
    });
    storage.bulk_load(name, Box::pin(rows)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip_with_default_names() {
        let (def, ine) = parse_create(
            "create rollup IF NOT EXISTS events_hourly on events group by model, segment every '1 hour' \
             as (count(*), quantile_sketch(latency_ms), score_state(score_groundedness, 0.7) as grounded, \
             sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors)",
        )
        .expect("parse");
        assert!(ine);
        assert_eq!(def.every, 3_600_000_000);
        let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["count", "latency_ms_sketch", "grounded", "errors"]);
        let (again, _) = parse_create(&def.to_sql()).expect("reparse");
        assert_eq!(again.to_sql(), def.to_sql());
        assert_eq!(again.group_by, ["model", "segment"]);
    }

    #[test]
    fn aggregates_that_do_not_merge_are_refused() {
        for sql in [
            "CREATE ROLLUP r ON t EVERY '1 hour' AS (avg(x))",
            "CREATE ROLLUP r ON t EVERY '1 hour' AS (count(DISTINCT x))",
            "CREATE ROLLUP r ON t EVERY '1 hour' AS (x + 1)",
        ] {
            let e = parse_create(sql).expect_err(sql);
            assert_eq!(e.sqlstate(), "0A000", "{sql}: {e}");
        }
        let e = parse_create("CREATE ROLLUP r ON t EVERY '1 hour' AS (sum(x * 2))")
            .expect_err("unnamed");
        assert_eq!(e.sqlstate(), "42601");
        let e = parse_create("CREATE ROLLUP r ON t GROUP BY bucket EVERY '1 hour' AS (count(*))")
            .expect_err("bucket");
        assert_eq!(e.sqlstate(), "42701");
        let e = parse_create("CREATE ROLLUP r ON t EVERY 'soon' AS (count(*))").expect_err("every");
        assert_eq!(e.sqlstate(), "22007");
    }
}
