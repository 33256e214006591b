//! A sampling policy: its grammar, its definition as stored, and the held
//! area its table's rows wait in.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::sql::sqlparser::ast::Expr as SqlExpr;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use lookout_query::ext::DerivedKind;
use lookout_storage::{Combine, Derivation, Storage, TableDef};

use lookout_query::SqlState;
use lookout_query::ext::{SYSTEM_PREFIX, quote_ident as quote, quoted_table};
use lookout_query::{QueryError, Result};

pub(crate) const HOUR: i64 = 3_600_000_000;

/// The arrival column of a held area.
pub(crate) const ARRIVED: &str = "arrived_at";

/// Where a sampling policy's definition starts, in its held area's
/// [`Derivation::definition`] (rollups start with `CREATE ROLLUP`).
pub(crate) const DEFINITION_PREFIX: &str = "ALTER TABLE";

/// Nominal rows of a (segment, hour) that was closed before they arrived.
pub(crate) const LATE: &str = "NOT \"_keep\" AND \"_late\"";

/// Kept rows up to which a decision is one WAL record; above, one bulk load.
pub(crate) const WAL_ROWS: usize = 100_000;

/// How often a rescue pass may run in the background.
pub(crate) const RESCUE_EVERY: Duration = Duration::from_secs(60);

/// A table's sampling policy, as `ALTER TABLE ... SET SAMPLING (...)` gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SamplingPolicy {
    pub(crate) table: String,
    pub(crate) key: String,
    pub(crate) segment_by: Vec<String>,
    /// SQL expression for the rate of nominal rows, in [0, 1].
    pub(crate) rate: String,
    /// Rows kept per (segment, hour) at least.
    pub(crate) minimum: u64,
    /// SQL predicates; a row any of them matches is kept.
    pub(crate) keep: Vec<String>,
    pub(crate) window: i64,
    pub(crate) window_text: String,
    pub(crate) overflow: i64,
    pub(crate) overflow_text: String,
    pub(crate) weight: String,
}

pub(crate) fn syntax(e: impl std::fmt::Display) -> QueryError {
    QueryError::syntax(e.to_string())
}

/// `TIMESTAMPTZ '...'` for microseconds since the epoch.
pub(crate) fn ts_literal(micros: i64) -> String {
    let at = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    format!("TIMESTAMPTZ '{}'", at.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

pub(crate) fn floor_hour(micros: i64) -> i64 {
    micros.div_euclid(HOUR) * HOUR
}

/// The held area and the counts table of a sampled table.
pub(crate) fn held_table(table: &str) -> String {
    format!("{SYSTEM_PREFIX}{table}_held")
}

pub(crate) fn counts_table(table: &str) -> String {
    format!("{SYSTEM_PREFIX}{table}_sampling")
}

pub(crate) fn words(sql: &str) -> Vec<String> {
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

pub(crate) fn expect_word(parser: &mut Parser<'_>, word: &str) -> Result<()> {
    let token = parser.next_token();
    match &token.token {
        Token::Word(w) if w.value.eq_ignore_ascii_case(word) => Ok(()),
        other => Err(QueryError::syntax(format!(
            "expected {word}, found {other} in a sampling statement"
        ))),
    }
}

pub(crate) fn parse_word(parser: &mut Parser<'_>) -> Result<String> {
    match parser.next_token().token {
        Token::Word(w) => Ok(w.value.to_ascii_lowercase()),
        other => Err(QueryError::syntax(format!(
            "expected a SET SAMPLING clause, found {other}"
        ))),
    }
}

pub(crate) fn parse_table(parser: &mut Parser<'_>) -> Result<String> {
    let name = parser.parse_object_name(false).map_err(syntax)?;
    let table = lookout_query::ext::table_name(&name)?;
    if table.starts_with(SYSTEM_PREFIX) {
        return Err(QueryError::new(
            SqlState::InsufficientPrivilege,
            format!("tables of the lookout schema cannot be sampled: \"{name}\""),
        ));
    }
    Ok(table)
}

pub(crate) fn parse_column(parser: &mut Parser<'_>) -> Result<String> {
    Ok(lookout_query::ext::ident_name(
        &parser.parse_identifier().map_err(syntax)?,
    ))
}

pub(crate) fn expect_end(parser: &mut Parser<'_>, after: &str) -> Result<()> {
    if parser.peek_token().token != Token::EOF {
        return Err(QueryError::syntax(format!(
            "unexpected {} after {after}",
            parser.peek_token().token
        )));
    }
    Ok(())
}

pub(crate) fn duration(parser: &mut Parser<'_>) -> Result<(i64, String)> {
    let text = parser.parse_literal_string().map_err(syntax)?;
    Ok((
        lookout_query::ext::parse_non_negative_duration(&text)?,
        text,
    ))
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
                        return Err(QueryError::new(
                            SqlState::InvalidParameterValue,
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
    pub(crate) fn to_sql(&self) -> String {
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
    pub(crate) fn table_rules(&self) -> Vec<&str> {
        self.keep
            .iter()
            .filter(|k| reads_tables(k))
            .map(String::as_str)
            .collect()
    }

    /// Keep-rules over the row's own columns.
    pub(crate) fn row_rules(&self) -> Vec<&str> {
        self.keep
            .iter()
            .filter(|k| !reads_tables(k))
            .map(String::as_str)
            .collect()
    }

    pub(crate) fn keep_expr(rules: &[&str]) -> String {
        if rules.is_empty() {
            return "FALSE".into();
        }
        let parts: Vec<String> = rules.iter().map(|k| format!("(({k}) IS TRUE)")).collect();
        parts.join(" OR ")
    }
}

pub(crate) fn reads_tables(rule: &str) -> bool {
    rule.to_ascii_uppercase().contains("SELECT ")
}

pub(crate) fn constant_rate(expr: &SqlExpr) -> Option<f64> {
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

/// The name recorded in a held area's definition.
pub(crate) const KIND: &str = "sampling";

/// Held areas as a kind of derived table.
#[derive(Debug)]
pub(crate) struct SamplingKind;

impl DerivedKind for SamplingKind {
    fn name(&self) -> &'static str {
        KIND
    }

    /// Before kinds were recorded, a held area's definition was its `ALTER
    /// TABLE ... SET SAMPLING` statement.
    fn recognises(&self, definition: &str) -> bool {
        definition.starts_with(DEFINITION_PREFIX)
    }

    /// Held rows are decided, not combined.
    fn combiner(&self, _table: &TableDef) -> Result<Option<Arc<dyn Combine>>> {
        Ok(None)
    }
}

/// Whether a derived table is a held area.
pub(crate) fn is_sampling(derivation: &Derivation) -> bool {
    SamplingKind.defines(derivation)
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
