//! Sampling at ingest: a sampled table keeps every row a keep-rule matches
//! and a deterministic sample of the rest, each kept row carrying the weight
//! that makes sums over the kept rows estimate sums over all rows.
//!
//! Rows written to a sampled table `t` go, with their rollups' deltas, to
//! the table's held area `lookout.t_held` (one WAL record), stamped with
//! their arrival. A decision, run by the server every few seconds or by
//! `DECIDE SAMPLING`, works on rows that arrived at least the decision window
//! ago:
//!
//! - a row a keep-rule matches goes to `t` at once with weight 1;
//! - the others wait until their (segment, hour) closes, two windows after
//!   the hour ends. Then the rows with `sample_hash(key) < rate` are kept,
//!   or if they are fewer than the minimum, the `minimum` rows with the
//!   lowest hash; each with weight N/kept of its (segment, hour), so the
//!   weights of a closed hour add up to its row count exactly. (Weight
//!   1/rate for hash-kept rows is unbiased only if the minimum never steps
//!   in; where it may, the hours it skips are those the hash kept more of,
//!   and the sum comes out high: 7 % on a model of the bench data.)
//! - a row of an hour already closed (late) is kept if its hash is below the
//!   rate, with weight 1/rate.
//!
//! Rows not kept stay in the held area for the overflow period; a keep-rule
//! that reads other tables (late feedback, a late judge score) rescues them
//! with weight 1. The kept rows and the decision's counts (`lookout.t_sampling`,
//! which also carries how far decisions have gone) are written as one WAL
//! record or one manifest commit, so a crash repeats a decision or keeps it,
//! never half of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::sql::sqlparser::ast::Expr as SqlExpr;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use futures::StreamExt;
use lookout_storage::{CreateTable, Derivation, Storage, TableDef, time_type};

use crate::error::{QueryError, Result};
use crate::extension::SqlExtension;
use crate::session::{Output, Session, quote_ident as quote, quoted_table};
use crate::{Lookout, catalog::SYSTEM_PREFIX};

const HOUR: i64 = 3_600_000_000;

/// The arrival column of a held area.
const ARRIVED: &str = "arrived_at";

/// Where a sampling policy's definition starts, in its held area's
/// [`Derivation::definition`] (rollups start with `CREATE ROLLUP`).
const DEFINITION_PREFIX: &str = "ALTER TABLE";

/// Nominal rows of a (segment, hour) that was closed before they arrived.
const LATE: &str = "NOT \"_keep\" AND \"_late\"";

/// Kept rows up to which a decision is one WAL record; above, one bulk load.
const WAL_ROWS: usize = 100_000;

/// How often a rescue pass may run in the background.
const RESCUE_EVERY: Duration = Duration::from_secs(60);

/// A table's sampling policy, as `ALTER TABLE ... SET SAMPLING (...)` gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SamplingPolicy {
    pub(crate) table: String,
    key: String,
    segment_by: Vec<String>,
    /// SQL expression for the rate of nominal rows, in [0, 1].
    rate: String,
    /// Rows kept per (segment, hour) at least.
    minimum: u64,
    /// SQL predicates; a row any of them matches is kept.
    keep: Vec<String>,
    window: i64,
    window_text: String,
    overflow: i64,
    overflow_text: String,
    weight: String,
}

fn syntax(e: impl std::fmt::Display) -> QueryError {
    QueryError::syntax(e.to_string())
}

/// `TIMESTAMPTZ '...'` for microseconds since the epoch.
fn ts_literal(micros: i64) -> String {
    let at = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    format!("TIMESTAMPTZ '{}'", at.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

fn floor_hour(micros: i64) -> i64 {
    micros.div_euclid(HOUR) * HOUR
}

/// The held area and the counts table of a sampled table.
pub(crate) fn held_table(table: &str) -> String {
    format!("{SYSTEM_PREFIX}{table}_held")
}

fn counts_table(table: &str) -> String {
    format!("{SYSTEM_PREFIX}{table}_sampling")
}

fn words(sql: &str) -> Vec<String> {
    sql.split_whitespace()
        .take(6)
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

/// `ALTER TABLE t SET SAMPLING (...)`, `ALTER TABLE t RESET SAMPLING`,
/// `SHOW SAMPLING`, `DECIDE SAMPLING [ON t]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Statement {
    Set,
    Reset,
    Show,
    Decide,
}

pub(crate) fn statement(sql: &str) -> Option<Statement> {
    let w = words(sql);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["show", "sampling", ..] => Some(Statement::Show),
        ["decide", "sampling", ..] => Some(Statement::Decide),
        ["alter", "table", _, "set", s, ..] if s.starts_with("sampling") => Some(Statement::Set),
        ["alter", "table", _, "reset", "sampling"] => Some(Statement::Reset),
        _ => None,
    }
}

fn expect_word(parser: &mut Parser<'_>, word: &str) -> Result<()> {
    let token = parser.next_token();
    match &token.token {
        Token::Word(w) if w.value.eq_ignore_ascii_case(word) => Ok(()),
        other => Err(QueryError::syntax(format!(
            "expected {word}, found {other} in a sampling statement"
        ))),
    }
}

fn parse_word(parser: &mut Parser<'_>) -> Result<String> {
    match parser.next_token().token {
        Token::Word(w) => Ok(w.value.to_ascii_lowercase()),
        other => Err(QueryError::syntax(format!(
            "expected a SET SAMPLING clause, found {other}"
        ))),
    }
}

fn parse_table(parser: &mut Parser<'_>) -> Result<String> {
    let name = parser.parse_object_name(false).map_err(syntax)?;
    let table = crate::session::table_name(&name)?;
    if table.starts_with(SYSTEM_PREFIX) {
        return Err(QueryError::with_code(
            "42501",
            format!("tables of the lookout schema cannot be sampled: \"{name}\""),
        ));
    }
    Ok(table)
}

fn parse_column(parser: &mut Parser<'_>) -> Result<String> {
    Ok(crate::session::ident_name(
        &parser.parse_identifier().map_err(syntax)?,
    ))
}

fn expect_end(parser: &mut Parser<'_>, after: &str) -> Result<()> {
    if parser.peek_token().token != Token::EOF {
        return Err(QueryError::syntax(format!(
            "unexpected {} after {after}",
            parser.peek_token().token
        )));
    }
    Ok(())
}

fn duration(parser: &mut Parser<'_>) -> Result<(i64, String)> {
    let text = parser.parse_literal_string().map_err(syntax)?;
    Ok((crate::interval::parse_non_negative_duration(&text)?, text))
}

impl SamplingPolicy {
    /// Parses `ALTER TABLE t SET SAMPLING (clause, ...)`.
    pub(crate) fn parse(sql: &str) -> Result<SamplingPolicy> {
        let dialect = PostgreSqlDialect {};
        let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
        parser.expect_keyword(Keyword::ALTER).map_err(syntax)?;
        parser.expect_keyword(Keyword::TABLE).map_err(syntax)?;
        let table = parse_table(&mut parser)?;
        parser.expect_keyword(Keyword::SET).map_err(syntax)?;
        expect_word(&mut parser, "sampling")?;
        parser.expect_token(&Token::LParen).map_err(syntax)?;
        let mut policy = SamplingPolicy {
            table,
            key: String::new(),
            segment_by: Vec::new(),
            rate: String::new(),
            minimum: 0,
            keep: Vec::new(),
            window: 5 * 60_000_000,
            window_text: "5 minutes".into(),
            overflow: 24 * HOUR,
            overflow_text: "1 day".into(),
            weight: "sample_weight".into(),
        };
        loop {
            match parse_word(&mut parser)?.as_str() {
                "key" => policy.key = parse_column(&mut parser)?,
                "segment" => {
                    parser.expect_keyword(Keyword::BY).map_err(syntax)?;
                    let parenthesized = parser.consume_token(&Token::LParen);
                    loop {
                        policy.segment_by.push(parse_column(&mut parser)?);
                        if !parenthesized || !parser.consume_token(&Token::Comma) {
                            break;
                        }
                    }
                    if parenthesized {
                        parser.expect_token(&Token::RParen).map_err(syntax)?;
                    }
                }
                "rate" => {
                    let expr = parser.parse_expr().map_err(syntax)?;
                    if let Some(rate) = constant_rate(&expr)
                        && !(0.0..=1.0).contains(&rate)
                    {
                        return Err(QueryError::with_code(
                            "22023",
                            format!("a sampling rate is between 0 and 1, not {rate}"),
                        ));
                    }
                    policy.rate = expr.to_string();
                }
                "minimum" => {
                    let n = parser.parse_literal_uint().map_err(syntax)?;
                    if parser.parse_keyword(Keyword::PER) {
                        expect_word(&mut parser, "hour")?;
                    }
                    policy.minimum = n;
                }
                "keep" => {
                    parser.expect_keyword(Keyword::WHEN).map_err(syntax)?;
                    policy
                        .keep
                        .push(parser.parse_expr().map_err(syntax)?.to_string());
                }
                "window" => (policy.window, policy.window_text) = duration(&mut parser)?,
                "overflow" => (policy.overflow, policy.overflow_text) = duration(&mut parser)?,
                "weight" => policy.weight = parse_column(&mut parser)?,
                other => {
                    return Err(QueryError::syntax(format!(
                        "unknown SET SAMPLING clause \"{other}\" (KEY, SEGMENT BY, RATE, MINIMUM, KEEP WHEN, WINDOW, OVERFLOW, WEIGHT)"
                    )));
                }
            }
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen).map_err(syntax)?;
        expect_end(&mut parser, "SET SAMPLING (...)")?;
        if policy.key.is_empty() || policy.rate.is_empty() {
            return Err(QueryError::syntax(
                "SET SAMPLING needs KEY column and RATE (a number or an expression between 0 and 1)",
            ));
        }
        Ok(policy)
    }

    /// The statement that gives this policy, normalised.
    fn to_sql(&self) -> String {
        let mut clauses = vec![format!("KEY {}", quote(&self.key))];
        if !self.segment_by.is_empty() {
            let cols: Vec<String> = self.segment_by.iter().map(|c| quote(c)).collect();
            clauses.push(format!("SEGMENT BY ({})", cols.join(", ")));
        }
        clauses.push(format!("RATE {}", self.rate));
        clauses.push(format!("MINIMUM {} PER HOUR", self.minimum));
        clauses.extend(self.keep.iter().map(|k| format!("KEEP WHEN {k}")));
        clauses.push(format!("WINDOW '{}'", self.window_text.replace('\'', "''")));
        clauses.push(format!(
            "OVERFLOW '{}'",
            self.overflow_text.replace('\'', "''")
        ));
        clauses.push(format!("WEIGHT {}", quote(&self.weight)));
        format!(
            "{DEFINITION_PREFIX} {} SET SAMPLING ({})",
            quoted_table(&self.table),
            clauses.join(", ")
        )
    }

    /// Keep-rules that read other tables (`request_id IN (SELECT ...)`):
    /// only they can match a row later than when it was decided, so only
    /// they rescue rows. DataFusion runs a subquery as a join only in a
    /// WHERE clause, so each is run as a filter of its own.
    fn table_rules(&self) -> Vec<&str> {
        self.keep
            .iter()
            .filter(|k| reads_tables(k))
            .map(String::as_str)
            .collect()
    }

    /// Keep-rules over the row's own columns.
    fn row_rules(&self) -> Vec<&str> {
        self.keep
            .iter()
            .filter(|k| !reads_tables(k))
            .map(String::as_str)
            .collect()
    }

    fn keep_expr(rules: &[&str]) -> String {
        if rules.is_empty() {
            return "FALSE".into();
        }
        let parts: Vec<String> = rules.iter().map(|k| format!("(({k}) IS TRUE)")).collect();
        parts.join(" OR ")
    }
}

fn reads_tables(rule: &str) -> bool {
    rule.to_ascii_uppercase().contains("SELECT ")
}

fn constant_rate(expr: &SqlExpr) -> Option<f64> {
    expr.to_string().parse().ok()
}

/// A table's policy, if it is sampled.
pub(crate) fn policy_of(storage: &Storage, table: &str) -> Result<Option<SamplingPolicy>> {
    let manifest = storage.manifest()?;
    let Ok(entry) = manifest.table(&held_table(table)) else {
        return Ok(None);
    };
    match &entry.def.derived {
        Some(d) if is_sampling(d) => Ok(Some(SamplingPolicy::parse(&d.definition)?)),
        _ => Ok(None),
    }
}

/// Whether a derived table is a held area (not a rollup).
pub(crate) fn is_sampling(derivation: &Derivation) -> bool {
    derivation.definition.starts_with(DEFINITION_PREFIX)
}

/// Rows of a sampled table as its held area stores them: arrival appended.
pub(crate) fn held_rows(rows: &RecordBatch, held: &SchemaRef, arrived: i64) -> Result<RecordBatch> {
    let mut columns = rows.columns().to_vec();
    let stamp = TimestampMicrosecondArray::from(vec![arrived; rows.num_rows()]).with_timezone_opt(
        match held.field(held.fields().len() - 1).data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        },
    );
    columns.push(Arc::new(stamp));
    Ok(RecordBatch::try_new(Arc::clone(held), columns)?)
}

/// How far decisions on a table have gone.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Marks {
    /// Rows that arrived before this are decided, or wait for their hour.
    decided_through: i64,
    /// Hours before this are closed: their rows are decided.
    hours_closed_before: i64,
}

/// What one decision did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Decided {
    pub(crate) kept: u64,
    pub(crate) dropped: u64,
    pub(crate) rescued: u64,
}

/// Per-process state of the decisions: one runs at a time per database,
/// marks advanced past rows that only wait, when the last rescue ran.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    running: tokio::sync::Mutex<()>,
    marks: Mutex<HashMap<String, Marks>>,
    last_rescue: Mutex<HashMap<String, Instant>>,
    /// The error of each table's last decision, when it failed (shown by
    /// `SHOW SAMPLING`; cleared by the next decision that succeeds).
    failures: Mutex<HashMap<String, String>>,
}

/// When a decision runs and what it may close.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// The decision's "now" (the session's `lookout.now`, or the clock).
    pub(crate) now: i64,
    /// Close every hour that has rows (`RESET SAMPLING`).
    pub(crate) close_all: bool,
    /// Run the rescue pass even if it ran less than a minute ago.
    pub(crate) rescue_now: bool,
}

struct Plan<'a> {
    policy: &'a SamplingPolicy,
    def: TableDef,
    marks: Marks,
    cutoff: i64,
    close_before: i64,
}

impl Plan<'_> {
    fn ts(&self) -> String {
        quote(&self.def.options.time_column)
    }

    fn columns(&self) -> Vec<String> {
        self.def.columns.iter().map(|c| quote(&c.name)).collect()
    }

    fn segments(&self) -> String {
        self.policy
            .segment_by
            .iter()
            .map(|c| format!("{}, ", quote(c)))
            .collect()
    }

    /// The rows this decision looks at, with their hour, hash, rate and
    /// whether a keep-rule matches: new arrivals, and the waiting rows of
    /// the hours it closes that are not in the table already.
    fn candidates(&self) -> String {
        let p = self.policy;
        let source = quote(&p.table);
        let held = quoted_table(&held_table(&p.table));
        let table = quoted_table(&p.table);
        let (ts, key) = (self.ts(), quote(&p.key));
        let rules = p.row_rules();
        let (wm, cutoff) = (
            ts_literal(self.marks.decided_through),
            ts_literal(self.cutoff),
        );
        let (hc, hc2) = (
            ts_literal(self.marks.hours_closed_before),
            ts_literal(self.close_before),
        );
        // Rows of closing hours that arrived earlier may be in the table
        // already (kept by a rule); the left join on the table finds them.
        // A (segment, hour) already closed with rows makes a new row late;
        // one never closed (historical rows loaded now) closes with it.
        // The closed hours' segment columns get names of their own, so that
        // an unqualified segment column in the rate or a keep-rule names the
        // row's own column, not an ambiguous one.
        let counts = quoted_table(&counts_table(&p.table));
        let closed_columns: String = p
            .segment_by
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} AS \"_closed{i}\", ", quote(c)))
            .collect();
        let closed_segment: String = p
            .segment_by
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "(k.\"_closed{i}\" IS NOT DISTINCT FROM {source}.{}) AND ",
                    quote(c)
                )
            })
            .collect();
        let (matched, keep) = match self.table_rule_keys(&format!("{ARRIVED} < {cutoff}")) {
            Some(keys) => (
                format!("LEFT JOIN ({keys}) r ON r.\"_matched\" = {source}.{key} "),
                format!(
                    "{} OR r.\"_matched\" IS NOT NULL",
                    SamplingPolicy::keep_expr(&rules)
                ),
            ),
            None => (String::new(), SamplingPolicy::keep_expr(&rules)),
        };
        format!(
            "SELECT {}, date_bin(INTERVAL '1 hour', {source}.{ts}, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS \"_hour\", \
             sample_hash(CAST({source}.{key} AS VARCHAR)) AS \"_h\", \
             least(greatest(coalesce(CAST(({}) AS DOUBLE PRECISION), 0.0), 0.0), 1.0) AS \"_rate\", \
             nullif({keep}, NULL) AS \"_keep\", \
             nullif(k.\"_closed\" IS NOT NULL, NULL) AS \"_late\" \
             FROM {held} AS {source} {matched}\
             LEFT JOIN (SELECT DISTINCT {closed_columns}\"hour\" AS \"_closed\" FROM {counts} WHERE closes_hour) k \
               ON {closed_segment}k.\"_closed\" = date_bin(INTERVAL '1 hour', {source}.{ts}, TIMESTAMPTZ '1970-01-01 00:00:00+00') \
             LEFT JOIN (SELECT DISTINCT {key} AS \"_published\" FROM {table} WHERE {ts} >= {hc} AND {ts} < {hc2}) p \
               ON p.\"_published\" = {source}.{key} \
             WHERE ({ARRIVED} >= {wm} AND {ARRIVED} < {cutoff}) \
                OR ({ARRIVED} < {wm} AND {source}.{ts} >= {hc} AND {source}.{ts} < {hc2} AND p.\"_published\" IS NULL)",
            self.columns()
                .iter()
                .map(|c| format!("{source}.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            p.rate,
        )
    }

    /// `a.col IS NOT DISTINCT FROM b.col AND ` for each segment column.
    fn same_segment(&self, a: &str, b: &str) -> String {
        self.policy
            .segment_by
            .iter()
            .map(|c| {
                let c = quote(c);
                format!("({a}.{c} IS NOT DISTINCT FROM {b}.{c}) AND ")
            })
            .collect()
    }

    /// The table's columns, the weight column given by `weight`.
    fn output_columns(&self, weight: &str) -> Vec<String> {
        self.def
            .columns
            .iter()
            .map(|c| {
                if c.name == self.policy.weight {
                    format!("{weight} AS {}", quote(&c.name))
                } else {
                    quote(&c.name)
                }
            })
            .collect()
    }

    /// Keys of held rows (that `filter` selects) that a table-reading rule
    /// matches, one filter per rule; None without such rules.
    fn table_rule_keys(&self, filter: &str) -> Option<String> {
        let p = self.policy;
        let rules = p.table_rules();
        if rules.is_empty() {
            return None;
        }
        let held = quoted_table(&held_table(&p.table));
        let (source, key) = (quote(&p.table), quote(&p.key));
        let selects: Vec<String> = rules
            .iter()
            .map(|rule| {
                format!(
                    "SELECT {source}.{key} AS \"_matched\" FROM {held} AS {source} WHERE {filter} AND ({rule})"
                )
            })
            .collect();
        Some(selects.join(" UNION "))
    }

    /// Nominal rows whose (segment, hour) this decision closes.
    fn closing(&self) -> String {
        format!(
            "NOT \"_keep\" AND NOT \"_late\" AND \"_hour\" < {}",
            ts_literal(self.close_before)
        )
    }

    /// Per (segment, hour): rows kept by a rule, late rows and those kept of
    /// them, rows of closing hours and those under the rate.
    fn counts_sql(&self) -> String {
        let seg = self.segments();
        let (closing, late) = (self.closing(), LATE);
        format!(
            "WITH c AS ({}) SELECT {seg}\"_hour\", \
             count(*) FILTER (WHERE \"_keep\") AS rule, \
             count(*) FILTER (WHERE {late}) AS late_n, \
             count(*) FILTER (WHERE {late} AND \"_h\" < \"_rate\") AS late_k, \
             count(*) FILTER (WHERE {closing}) AS n, \
             count(*) FILTER (WHERE {closing} AND \"_h\" < \"_rate\") AS k \
             FROM c GROUP BY {seg}\"_hour\"",
            self.candidates()
        )
    }

    /// The kept rows, in the table's columns, the weight column set.
    fn kept_sql(&self) -> String {
        let p = self.policy;
        let seg = self.segments();
        let m = p.minimum;
        let cols = self.columns().join(", ");
        let same_segment = self.same_segment("c", "s");
        let out = self.output_columns("\"_w\"");
        format!(
            "WITH c AS ({candidates}), \
             s AS (SELECT {seg}\"_hour\", count(*) AS \"_n\", count(*) FILTER (WHERE \"_h\" < \"_rate\") AS \"_k\" \
                   FROM c WHERE {closing} GROUP BY {seg}\"_hour\"), \
             d AS (SELECT c.*, s.\"_n\", s.\"_k\" FROM c JOIN s ON {same_segment}c.\"_hour\" = s.\"_hour\" WHERE NOT c.\"_keep\" AND NOT c.\"_late\"), \
             small AS (SELECT *, row_number() OVER (PARTITION BY {seg}\"_hour\" ORDER BY \"_h\", {key}) AS \"_rank\" \
                       FROM d WHERE \"_k\" < {m}) \
             SELECT {out} FROM ( \
               SELECT {cols}, 1.0 AS \"_w\" FROM c WHERE \"_keep\" \
               UNION ALL SELECT {cols}, 1.0 / \"_rate\" AS \"_w\" FROM c WHERE {LATE} AND \"_h\" < \"_rate\" \
               UNION ALL SELECT {cols}, CAST(\"_n\" AS DOUBLE PRECISION) / \"_k\" AS \"_w\" FROM d WHERE \"_k\" >= {m} AND \"_k\" > 0 AND \"_h\" < \"_rate\" \
               UNION ALL SELECT {cols}, CAST(\"_n\" AS DOUBLE PRECISION) / least(\"_n\", {m}) AS \"_w\" FROM small WHERE \"_rank\" <= {m} \
             ) kept",
            candidates = self.candidates(),
            closing = self.closing(),
            key = quote(&p.key),
            out = out.join(", "),
        )
    }

    /// Dropped rows still in the overflow that a rule reading other tables
    /// now matches, and that are not in the table.
    fn rescue_sql(&self, overflow_from: i64) -> Option<String> {
        let p = self.policy;
        let source = quote(&p.table);
        let (ts, key) = (self.ts(), quote(&p.key));
        let out = self.output_columns("1.0");
        let decided = format!(
            "{ARRIVED} < {} AND {ARRIVED} >= {} AND {source}.{ts} < {}",
            ts_literal(self.marks.decided_through),
            ts_literal(overflow_from),
            ts_literal(self.marks.hours_closed_before),
        );
        let matched = self.table_rule_keys(&decided)?;
        Some(format!(
            "SELECT {}, date_bin(INTERVAL '1 hour', {ts}, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS \"_hour\" \
             FROM {} AS {source} WHERE {decided} AND {source}.{key} IN ({matched}) \
             AND {source}.{key} NOT IN (SELECT {key} FROM {} WHERE {key} IS NOT NULL)",
            out.join(", "),
            quoted_table(&held_table(&p.table)),
            quoted_table(&p.table),
        ))
    }
}

/// The counts table's columns for a policy.
fn counts_schema(policy: &SamplingPolicy, def: &TableDef) -> Result<Schema> {
    let source = def.schema()?;
    let mut fields = vec![
        Field::new("decided_at", time_type(), false),
        Field::new("hour", time_type(), true),
    ];
    for c in &policy.segment_by {
        let f = source
            .field_with_name(c)
            .map_err(|_| missing_column(c, &def.name))?;
        fields.push(Field::new(c, f.data_type().clone(), true));
    }
    for name in [
        "seen",
        "kept_by_rule",
        "kept_by_rate",
        "kept_for_minimum",
        "rescued",
        "dropped",
    ] {
        fields.push(Field::new(name, DataType::Int64, false));
    }
    fields.push(Field::new("weight", DataType::Float64, true));
    fields.push(Field::new("closes_hour", DataType::Boolean, false));
    fields.push(Field::new("decided_through", time_type(), false));
    fields.push(Field::new("hours_closed_before", time_type(), false));
    Ok(Schema::new(fields))
}

fn missing_column(column: &str, table: &str) -> QueryError {
    QueryError::with_code(
        "42703",
        format!("column \"{column}\" of relation \"{table}\" does not exist"),
    )
}

/// One row of the counts table.
#[derive(Debug, Default, Clone)]
struct Count {
    hour: Option<i64>,
    /// The segment's values, as one-row arrays of the segment columns.
    segment: Vec<ArrayRef>,
    seen: i64,
    kept_by_rule: i64,
    kept_by_rate: i64,
    kept_for_minimum: i64,
    rescued: i64,
    dropped: i64,
    weight: Option<f64>,
    /// Whether this decision closed the (segment, hour).
    closes_hour: bool,
}

fn counts_batch(
    schema: &SchemaRef,
    segments: usize,
    counts: &[Count],
    decided_at: i64,
    marks: Marks,
) -> Result<RecordBatch> {
    let n = counts.len();
    let stamp = |v: i64| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(vec![v; n])) };
    let mut columns: Vec<ArrayRef> = vec![
        stamp(decided_at),
        Arc::new(TimestampMicrosecondArray::from(
            counts.iter().map(|c| c.hour).collect::<Vec<_>>(),
        )),
    ];
    for i in 0..segments {
        let field = schema.field(2 + i);
        let parts: Vec<ArrayRef> = counts
            .iter()
            .map(|c| {
                c.segment
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| arrow::array::new_null_array(field.data_type(), 1))
            })
            .collect();
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        columns.push(if refs.is_empty() {
            arrow::array::new_empty_array(field.data_type())
        } else {
            arrow::compute::concat(&refs)?
        });
    }
    let ints = |f: fn(&Count) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(counts.iter().map(f).collect::<Vec<_>>()))
    };
    columns.push(ints(|c| c.seen));
    columns.push(ints(|c| c.kept_by_rule));
    columns.push(ints(|c| c.kept_by_rate));
    columns.push(ints(|c| c.kept_for_minimum));
    columns.push(ints(|c| c.rescued));
    columns.push(ints(|c| c.dropped));
    columns.push(Arc::new(Float64Array::from(
        counts.iter().map(|c| c.weight).collect::<Vec<_>>(),
    )));
    columns.push(Arc::new(BooleanArray::from(
        counts.iter().map(|c| c.closes_hour).collect::<Vec<_>>(),
    )));
    columns.push(stamp(marks.decided_through));
    columns.push(stamp(marks.hours_closed_before));
    // The time columns' time zone comes from the schema.
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(&c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

fn int_at(batch: &RecordBatch, name: &str, row: usize) -> Result<i64> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| QueryError::with_code("XX000", format!("no column {name}")))?;
    let column = arrow::compute::cast(column, &DataType::Int64)?;
    let column = column.as_primitive::<Int64Type>();
    Ok(if column.is_null(row) {
        0
    } else {
        column.value(row)
    })
}

/// Timestamps (of any unit) as microseconds since the epoch.
fn micros(column: &ArrayRef) -> Result<ArrayRef> {
    let unit = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None);
    Ok(arrow::compute::cast(
        &arrow::compute::cast(column, &unit)?,
        &DataType::Int64,
    )?)
}

/// Reads the counts query's groups into counts-table rows.
fn counts_from(batch: &RecordBatch, policy: &SamplingPolicy) -> Result<Vec<Count>> {
    let segments = policy.segment_by.len();
    let hours = micros(batch.column(segments))?;
    let hours = hours.as_primitive::<Int64Type>();
    let m = policy.minimum as i64;
    let mut out = Vec::new();
    for row in 0..batch.num_rows() {
        let get = |name| int_at(batch, name, row);
        let (rule, late_n, late_k, n, k) = (
            get("rule")?,
            get("late_n")?,
            get("late_k")?,
            get("n")?,
            get("k")?,
        );
        if rule + late_n + n == 0 {
            continue;
        }
        let small = n > 0 && k < m;
        let for_minimum = if small { n.min(m) } else { 0 };
        let by_rate = late_k + if small { 0 } else { k };
        let sampled = if small { n.min(m) } else { k };
        let weight = (sampled > 0).then(|| n as f64 / sampled as f64);
        out.push(Count {
            hour: hours.is_valid(row).then(|| hours.value(row)),
            segment: (0..segments)
                .map(|i| batch.column(i).slice(row, 1))
                .collect(),
            seen: rule + late_n + n,
            kept_by_rule: rule,
            kept_by_rate: by_rate,
            kept_for_minimum: for_minimum,
            rescued: 0,
            dropped: late_n - late_k + n - sampled,
            weight,
            closes_hour: n > 0,
        });
    }
    Ok(out)
}

/// Creates (or widens) the counts table for a policy.
async fn ensure_counts_table(storage: &Storage, policy: &SamplingPolicy) -> Result<()> {
    let def = storage.table(&policy.table)?;
    let schema = counts_schema(policy, &def)?;
    let name = counts_table(&policy.table);
    let request = CreateTable {
        time_column: Some("decided_at".into()),
        partition_column: Some(None),
        bucket_micros: Some(30 * 24 * HOUR),
        ttl_micros: None,
        versions: None,
        derived: None,
    };
    if !storage.create_table(&name, &schema, request, true).await? {
        for field in schema.fields().iter().skip(2).take(policy.segment_by.len()) {
            storage.add_column(&name, field, true).await?;
        }
    }
    Ok(())
}

async fn read_marks(session: &mut Session, table: &str) -> Result<Marks> {
    let sql = format!(
        "SELECT CAST(max(decided_through) AS BIGINT), CAST(max(hours_closed_before) AS BIGINT) FROM {}",
        quoted_table(&counts_table(table))
    );
    let batches = session.query(&sql).await?;
    let first = |i: usize| -> i64 {
        batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .map(|b| b.column(i).as_primitive::<Int64Type>())
            .filter(|c| c.is_valid(0))
            .map(|c| c.value(0))
            .unwrap_or(0)
    };
    Ok(Marks {
        decided_through: first(0),
        hours_closed_before: first(1),
    })
}

async fn collect(session: &mut Session, sql: &str) -> Result<RecordBatch> {
    let plan = session.logical_plan(sql).await?;
    let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    let batches: Vec<RecordBatch> = session
        .execute_logical(plan)
        .await?
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<std::result::Result<_, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// Writes kept rows and counts together: one WAL record, or for many rows
/// one bulk load committed with the counts.
async fn commit(
    storage: &Storage,
    table: &str,
    kept: RecordBatch,
    counts: (String, RecordBatch),
) -> Result<()> {
    if kept.num_rows() <= WAL_ROWS {
        storage
            .write_group(vec![counts, (table.to_string(), kept)])
            .await?;
    } else {
        let rows = futures::stream::iter(
            (0..kept.num_rows())
                .step_by(WAL_ROWS)
                .map(move |i| Ok(kept.slice(i, WAL_ROWS.min(kept.num_rows() - i))))
                .collect::<Vec<_>>(),
        );
        storage
            .bulk_load_with(table, rows, move || async move { Ok(vec![counts]) })
            .await?;
    }
    Ok(())
}

impl Decisions {
    /// Decides what is due in every sampled table.
    pub(crate) async fn decide_all(&self, lookout: &Lookout, clock: Clock) -> Result<Decided> {
        let mut total = Decided::default();
        let names: Vec<String> = lookout
            .storage()
            .manifest()?
            .tables
            .values()
            .filter_map(|e| e.def.derived.as_ref().filter(|d| is_sampling(d)))
            .map(|d| d.source.clone())
            .collect();
        // One table's failure (a keep-rule reading a dropped table) does not
        // hold up the others; the first error is returned after all ran.
        let mut first_error = None;
        for table in names {
            match self.decide(lookout, &table, clock).await {
                Ok(d) => {
                    total.kept += d.kept;
                    total.dropped += d.dropped;
                    total.rescued += d.rescued;
                }
                Err(e) => {
                    tracing::warn!(table, error = %e, "sampling decision failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(total), Err)
    }

    /// Decides what is due in one sampled table.
    pub(crate) async fn decide(
        &self,
        lookout: &Lookout,
        table: &str,
        clock: Clock,
    ) -> Result<Decided> {
        // Every write that took its arrival time before this has committed.
        let real = {
            let _gate = lookout.ingest().gate.write().await;
            lookout.storage().clock().now_micros()
        };
        let result = self.decide_at(lookout, table, clock, real).await;
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => failures.remove(table),
            Err(e) => failures.insert(table.to_string(), e.to_string()),
        };
        result
    }

    /// Forgets `table`'s last error (its policy was set anew or reset).
    fn forget_failure(&self, table: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(table);
    }

    /// The error of `table`'s last decision, if it failed.
    fn failure(&self, table: &str) -> Option<String> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(table).cloned()
    }

    /// Decides what is due in one sampled table, for rows that arrived
    /// before `real` (all of which have committed).
    async fn decide_at(
        &self,
        lookout: &Lookout,
        table: &str,
        clock: Clock,
        real: i64,
    ) -> Result<Decided> {
        let _running = self.running.lock().await;
        let storage = lookout.storage();
        let Some(policy) = policy_of(storage, table)? else {
            return Err(QueryError::with_code(
                "55000",
                format!("table \"{table}\" is not sampled"),
            ));
        };
        let mut session = lookout.session();
        let stored = read_marks(&mut session, table).await?;
        // Marks this process advanced past rows that only wait for their
        // hour (nothing written); after a restart those rows are looked at
        // again, which decides nothing twice.
        let marks = {
            let cached = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            match cached.get(table) {
                Some(m)
                    if m.decided_through >= stored.decided_through
                        && m.hours_closed_before >= stored.hours_closed_before =>
                {
                    *m
                }
                _ => stored,
            }
        };
        let def = storage.table(table)?;
        let mut cutoff = (clock.now - policy.window).min(real);
        let mut close_before = floor_hour(clock.now - 2 * policy.window);
        if clock.close_all {
            cutoff = real;
            let sql = format!(
                "SELECT CAST(max({}) AS BIGINT) FROM {}",
                quote(&def.options.time_column),
                quoted_table(&held_table(table))
            );
            let last = collect(&mut session, &sql).await?;
            let last = last.column(0).as_primitive::<Int64Type>();
            if last.is_valid(0) {
                close_before = close_before.max(floor_hour(last.value(0)) + HOUR);
            }
        }
        let plan = Plan {
            policy: &policy,
            def,
            marks,
            cutoff: cutoff.max(marks.decided_through),
            close_before: close_before.max(marks.hours_closed_before),
        };
        let mut decided = Decided::default();
        let advanced = Marks {
            decided_through: plan.cutoff,
            hours_closed_before: plan.close_before,
        };
        if advanced != marks {
            let counts = counts_from(&collect(&mut session, &plan.counts_sql()).await?, &policy)?;
            if counts.is_empty() {
                // Nothing decided: only rows waiting for their hour arrived.
                self.marks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(table.to_string(), advanced);
            } else {
                let kept = collect(&mut session, &plan.kept_sql()).await?;
                let schema = storage.table(&counts_table(table))?.schema()?;
                let batch =
                    counts_batch(&schema, policy.segment_by.len(), &counts, real, advanced)?;
                decided.kept = kept.num_rows() as u64;
                decided.dropped = counts.iter().map(|c| c.dropped as u64).sum();
                let expected: i64 = counts
                    .iter()
                    .map(|c| c.kept_by_rule + c.kept_by_rate + c.kept_for_minimum)
                    .sum();
                if expected != kept.num_rows() as i64 {
                    return Err(QueryError::with_code(
                        "XX000",
                        format!(
                            "sampling of \"{table}\": {} rows selected but {expected} counted; nothing was written",
                            kept.num_rows()
                        ),
                    ));
                }
                commit(storage, table, kept, (counts_table(table), batch)).await?;
                self.marks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(table.to_string(), advanced);
            }
        }
        let plan = Plan {
            marks: advanced,
            ..plan
        };
        decided.rescued = self
            .rescue(lookout, &mut session, &plan, real, clock)
            .await?;
        self.collect_held(storage, &plan, real).await?;
        Ok(decided)
    }

    async fn rescue(
        &self,
        lookout: &Lookout,
        session: &mut Session,
        plan: &Plan<'_>,
        real: i64,
        clock: Clock,
    ) -> Result<u64> {
        let policy = plan.policy;
        let Some(sql) = plan.rescue_sql(real - policy.overflow) else {
            return Ok(0);
        };
        {
            let mut last = self.last_rescue.lock().unwrap_or_else(|p| p.into_inner());
            let due = clock.rescue_now
                || last
                    .get(&policy.table)
                    .is_none_or(|t| t.elapsed() >= RESCUE_EVERY);
            if !due {
                return Ok(0);
            }
            last.insert(policy.table.clone(), Instant::now());
        }
        let found = collect(session, &sql).await?;
        if found.num_rows() == 0 {
            return Ok(0);
        }
        // Counts of rescued rows per (segment, hour).
        let segments = policy.segment_by.len();
        let hour_col = found.num_columns() - 1;
        let mut counts: Vec<Count> = Vec::new();
        let hours = micros(found.column(hour_col))?;
        let hours = hours.as_primitive::<Int64Type>();
        let seg_cols: Vec<ArrayRef> = policy
            .segment_by
            .iter()
            .map(|c| {
                found
                    .column_by_name(c)
                    .cloned()
                    .ok_or_else(|| missing_column(c, &policy.table))
            })
            .collect::<Result<_>>()?;
        for row in 0..found.num_rows() {
            let segment: Vec<ArrayRef> = seg_cols.iter().map(|c| c.slice(row, 1)).collect();
            let hour = hours.is_valid(row).then(|| hours.value(row));
            let same = |c: &&mut Count| {
                c.hour == hour
                    && c.segment
                        .iter()
                        .zip(&segment)
                        .all(|(a, b)| a.to_data() == b.to_data())
            };
            match counts.iter_mut().find(same) {
                Some(c) => {
                    c.rescued += 1;
                    c.dropped -= 1;
                }
                None => counts.push(Count {
                    hour,
                    segment,
                    rescued: 1,
                    dropped: -1,
                    ..Count::default()
                }),
            }
        }
        let storage = lookout.storage();
        let kept = found.project(&(0..hour_col).collect::<Vec<_>>())?;
        let schema = storage.table(&counts_table(&policy.table))?.schema()?;
        let batch = counts_batch(&schema, segments, &counts, real, plan.marks)?;
        let n = kept.num_rows() as u64;
        commit(
            storage,
            &policy.table,
            kept,
            (counts_table(&policy.table), batch),
        )
        .await?;
        Ok(n)
    }

    /// Drops held files whose rows are all decided and past the overflow.
    async fn collect_held(&self, storage: &Storage, plan: &Plan<'_>, real: i64) -> Result<()> {
        let expired_before = plan.marks.decided_through.min(real - plan.policy.overflow);
        let closed = plan.marks.hours_closed_before;
        let ts = plan.def.options.time_column.clone();
        storage
            .drop_files(&held_table(&plan.policy.table), |f| {
                let decided = matches!(
                    f.stats.get(&ts).and_then(|s| s.max.as_ref()),
                    Some(lookout_storage::StatValue::Int(max)) if *max < closed
                );
                decided && f.max_time < expired_before
            })
            .await?;
        Ok(())
    }
}

/// Runs decisions every `interval` until the database closes.
pub(crate) fn spawn_decisions(lookout: Lookout, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let clock = Clock {
                now: lookout.storage().clock().now_micros(),
                close_all: false,
                rescue_now: false,
            };
            // Failures are logged per table; the next tick retries.
            let _ = lookout.decisions().decide_all(&lookout, clock).await;
        }
    })
}

/// The sampling statements.
#[derive(Debug)]
pub(crate) struct SamplingStatements;

fn command(tag: &'static str) -> Output {
    Output::Command { tag, rows: None }
}

fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("policy", DataType::Utf8, false),
        Field::new("decided_through", time_type(), true),
        Field::new("hours_closed_before", time_type(), true),
        Field::new("last_error", DataType::Utf8, true),
    ]))
}

fn decide_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("kept", DataType::Int64, false),
        Field::new("dropped", DataType::Int64, false),
        Field::new("rescued", DataType::Int64, false),
    ]))
}

#[async_trait]
impl SqlExtension for SamplingStatements {
    fn claims(&self, sql: &str) -> bool {
        statement(sql).is_some()
    }

    fn describe(&self, sql: &str) -> Result<Option<SchemaRef>> {
        Ok(match statement(sql) {
            Some(Statement::Show) => Some(show_schema()),
            Some(Statement::Decide) => Some(decide_schema()),
            _ => None,
        })
    }

    fn required_access(&self, sql: &str) -> crate::Access {
        match statement(sql) {
            Some(Statement::Show) => crate::Access::Read,
            Some(Statement::Decide) => crate::Access::Write,
            _ => crate::Access::Admin,
        }
    }

    async fn execute(&self, sql: &str, session: &mut Session) -> Result<Output> {
        match statement(sql) {
            Some(Statement::Set) => set_sampling(session, SamplingPolicy::parse(sql)?).await,
            Some(Statement::Reset) => reset_sampling(session, sql).await,
            Some(Statement::Show) => show_sampling(session).await,
            Some(Statement::Decide) => decide_sampling(session, sql).await,
            None => Err(QueryError::syntax("not a sampling statement")),
        }
    }
}

async fn set_sampling(session: &mut Session, policy: SamplingPolicy) -> Result<Output> {
    let lookout = session.lookout().clone();
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
            return Err(QueryError::with_code(
                "42804",
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
    let _gate = lookout.ingest().gate.write().await;
    if let Ok(old) = storage.table(&held) {
        storage.redefine(&held, &policy.to_sql()).await?;
        if let Err(e) = check_decisions(session, &policy).await {
            if let Some(old) = old.derived {
                storage.redefine(&held, &old.definition).await?;
            }
            return Err(e);
        }
        lookout.decisions().forget_failure(&policy.table);
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
        }),
    };
    storage
        .create_table(&held, &Schema::new(fields), request, false)
        .await?;
    if let Err(e) = check_decisions(session, &policy).await {
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
async fn check_decisions(session: &mut Session, policy: &SamplingPolicy) -> Result<()> {
    let plan = Plan {
        policy,
        def: session.lookout().storage().table(&policy.table)?,
        marks: Marks::default(),
        cutoff: 0,
        close_before: 0,
    };
    let mut queries = vec![plan.counts_sql(), plan.kept_sql()];
    queries.extend(plan.rescue_sql(0));
    for sql in queries {
        session.logical_plan(&sql).await.map_err(|e| {
            QueryError::with_code(
                e.sqlstate(),
                format!("this sampling policy could not decide: {e}"),
            )
        })?;
    }
    Ok(())
}

/// Plans every expression of the policy over the table, so a wrong column
/// or type is refused when the policy is set, not at its first decision.
async fn check_expressions(
    session: &mut Session,
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
            QueryError::with_code(
                e.sqlstate(),
                format!(
                    "keep-rule {rule}: {e} (a rule reading another table is a condition such as \
                     key IN (SELECT ...) or EXISTS (...), ANDed with conditions on the row)"
                ),
            )
        })?;
    }
    Ok(())
}

pub(crate) fn parse_reset(sql: &str) -> Result<String> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    parser.expect_keyword(Keyword::ALTER).map_err(syntax)?;
    parser.expect_keyword(Keyword::TABLE).map_err(syntax)?;
    let table = parse_table(&mut parser)?;
    parser.expect_keyword(Keyword::RESET).map_err(syntax)?;
    expect_word(&mut parser, "sampling")?;
    expect_end(&mut parser, "RESET SAMPLING")?;
    Ok(table)
}

/// Decides every held row (closing every hour that has rows), then drops
/// the held area; later writes go to the table unsampled.
async fn reset_sampling(session: &mut Session, sql: &str) -> Result<Output> {
    let table = parse_reset(sql)?;
    let lookout = session.lookout().clone();
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
    let _gate = lookout.ingest().gate.write().await;
    // The held rows are decided one last time; while that fails, the
    // policy stays (keeping every held row would skew the weights of the
    // rows already sampled).
    lookout
        .decisions()
        .decide_at(&lookout, &table, clock, lookout.storage().clock().now_micros())
        .await
        .map_err(|e| {
            QueryError::with_code(
                e.sqlstate(),
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
    lookout.decisions().forget_failure(&table);
    Ok(command("ALTER TABLE"))
}

/// Before `DROP TABLE` of a sampled table: drops its held area and counts,
/// whose undecided rows go with the table, so no decision has to run (one
/// that keeps failing does not stop the drop). A rollup on the table still
/// stops it, before anything is dropped.
pub(crate) async fn drop_sampling_of(lookout: &Lookout, table: &str) -> Result<()> {
    let storage = lookout.storage();
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
    let _gate = lookout.ingest().gate.write().await;
    let _running = lookout.decisions().running.lock().await;
    storage.drop_table(&held, true).await?;
    storage.drop_table(&counts_table(table), true).await?;
    lookout.decisions().forget_failure(table);
    Ok(())
}

/// `DECIDE SAMPLING [ON t]`: the table, if one is named.
pub(crate) fn parse_decide(sql: &str) -> Result<Option<String>> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    expect_word(&mut parser, "decide")?;
    expect_word(&mut parser, "sampling")?;
    let table = if parser.parse_keyword(Keyword::ON) {
        Some(parse_table(&mut parser)?)
    } else {
        None
    };
    expect_end(&mut parser, "DECIDE SAMPLING")?;
    Ok(table)
}

async fn decide_sampling(session: &mut Session, sql: &str) -> Result<Output> {
    let table = parse_decide(sql)?;
    let lookout = session.lookout().clone();
    let clock = Clock {
        now: session.now_micros(),
        close_all: false,
        rescue_now: true,
    };
    let decided = match table {
        Some(t) => lookout.decisions().decide(&lookout, &t, clock).await?,
        None => lookout.decisions().decide_all(&lookout, clock).await?,
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

async fn show_sampling(session: &mut Session) -> Result<Output> {
    let storage = session.lookout().storage().clone();
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
        errors.push(session.lookout().decisions().failure(&table));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip() {
        let p = SamplingPolicy::parse(
            "alter table events set sampling (key request_id, segment by (model, segment), \
             rate CASE WHEN segment = 'enterprise' THEN 0.1 ELSE 0.02 END, minimum 5 per hour, \
             keep when status <> 'ok', keep when latency_ms > 2000, window '1 minute', weight w)",
        )
        .expect("parse");
        assert_eq!(p.segment_by, ["model", "segment"]);
        assert_eq!(p.minimum, 5);
        assert_eq!(p.keep.len(), 2);
        assert_eq!(p.window, 60_000_000);
        assert_eq!(p.overflow, 24 * HOUR);
        let again = SamplingPolicy::parse(&p.to_sql()).expect("reparse");
        assert_eq!(again, p);
        assert!(p.table_rules().is_empty());
        assert_eq!(p.row_rules().len(), 2);
    }

    #[test]
    fn bad_policies_are_refused() {
        for (sql, code) in [
            ("ALTER TABLE t SET SAMPLING (RATE 0.1)", "42601"),
            ("ALTER TABLE t SET SAMPLING (KEY k, RATE 1.5)", "22023"),
            (
                "ALTER TABLE t SET SAMPLING (KEY k, RATE 0.1, FOO 1)",
                "42601",
            ),
            (
                "ALTER TABLE t SET SAMPLING (KEY k, RATE 0.1, WINDOW 'soon')",
                "22007",
            ),
            (
                "ALTER TABLE lookout.x SET SAMPLING (KEY k, RATE 0.1)",
                "42501",
            ),
        ] {
            let e = SamplingPolicy::parse(sql).expect_err(sql);
            assert_eq!(e.sqlstate(), code, "{sql}: {e}");
        }
    }

    #[test]
    fn statements_are_recognised() {
        assert_eq!(
            statement("ALTER TABLE events SET SAMPLING (KEY k, RATE 0.1)"),
            Some(Statement::Set)
        );
        assert_eq!(
            statement("alter table events reset sampling"),
            Some(Statement::Reset)
        );
        assert_eq!(statement("ALTER TABLE events ADD COLUMN x int"), None);
        assert_eq!(
            statement("DECIDE SAMPLING ON events"),
            Some(Statement::Decide)
        );
        assert_eq!(statement("show sampling"), Some(Statement::Show));
    }
}
