//! A sampling policy: its grammar, its definition as stored, and the held
//! area its table's rows wait in.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::sql::sqlparser::ast::Expr as SqlExpr;
use lookout_query::SqlState;
use lookout_query::ext::{
    DerivedKind, Piece, SYSTEM_PREFIX, Words, leading_words, quote_ident as quote, quoted_table,
};
use lookout_query::{QueryError, Result};
use lookout_storage::{Combine, Derivation, Storage, TableDef};

pub(crate) const HOUR: i64 = 3_600_000_000;

/// The arrival column of a held area.
pub(crate) const ARRIVED: &str = "arrived_at";

/// Where a sampling policy's definition starts, in its held area's
/// [`Derivation::definition`] (rollups start with `CREATE ROLLUP`).
pub(crate) const DEFINITION_PREFIX: &str = "ALTER TABLE";

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
    let first = leading_words(sql, 2);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    match first.as_slice() {
        ["SHOW", "SAMPLING"] => Some(Statement::Show),
        ["DECIDE", "SAMPLING"] => Some(Statement::Decide),
        ["ALTER", "TABLE"] => {
            let mut w = Words::new(sql).ok()?;
            w.eat_words(&["alter", "table"]);
            w.dotted_name().ok()?;
            if w.peek_words(&["set", "sampling"]) {
                Some(Statement::Set)
            } else if w.peek_words(&["reset", "sampling"]) {
                Some(Statement::Reset)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A table that may be sampled: not one of the `lookout` schema.
fn parse_table(w: &mut Words<'_>) -> Result<String> {
    let name = w.parse_with(|p| p.parse_object_name(false))?;
    let table = lookout_query::ext::table_name(&name)?;
    if table.starts_with(SYSTEM_PREFIX) {
        return Err(QueryError::new(
            SqlState::InsufficientPrivilege,
            format!("tables of the lookout schema cannot be sampled: \"{name}\""),
        ));
    }
    Ok(table)
}

/// A non-negative interval in quotes, with its text.
fn duration(w: &mut Words<'_>, clause: &str) -> Result<(i64, String)> {
    let text = w.string(&format!("an interval in quotes after {clause}"))?;
    Ok((
        lookout_query::ext::parse_non_negative_duration(&text)?,
        text,
    ))
}

impl SamplingPolicy {
    /// Parses `ALTER TABLE t SET SAMPLING (clause, ...)`.
    pub(crate) fn parse(sql: &str) -> Result<SamplingPolicy> {
        let mut w = Words::new(sql.trim().trim_end_matches(';'))?;
        w.expect_word("alter")?;
        w.expect_word("table")?;
        let table = parse_table(&mut w)?;
        w.expect_word("set")?;
        w.expect_word("sampling")?;
        w.expect_symbol("(")?;
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
            let clause = match w.peek() {
                Some(Piece::Word { text, .. }) => text.to_ascii_lowercase(),
                _ => return Err(w.unexpected("a SET SAMPLING clause")),
            };
            w.advance();
            match clause.as_str() {
                "key" => policy.key = w.name()?,
                "segment" => {
                    w.expect_word("by")?;
                    let parenthesized = w.eat_symbol("(");
                    loop {
                        policy.segment_by.push(w.name()?);
                        if !parenthesized || !w.eat_symbol(",") {
                            break;
                        }
                    }
                    if parenthesized {
                        w.expect_symbol(")")?;
                    }
                }
                "rate" => {
                    let expr = w.parse_with(|p| p.parse_expr())?;
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
                    let n = w.parse_with(|p| p.parse_literal_uint())?;
                    if w.eat_word("per") {
                        w.expect_word("hour")?;
                    }
                    policy.minimum = n;
                }
                "keep" => {
                    w.expect_word("when")?;
                    policy
                        .keep
                        .push(w.parse_with(|p| p.parse_expr())?.to_string());
                }
                "window" => (policy.window, policy.window_text) = duration(&mut w, "WINDOW")?,
                "overflow" => {
                    (policy.overflow, policy.overflow_text) = duration(&mut w, "OVERFLOW")?
                }
                "weight" => policy.weight = w.name()?,
                other => {
                    return Err(QueryError::syntax(format!(
                        "unknown SET SAMPLING clause \"{other}\" (KEY, SEGMENT BY, RATE, MINIMUM, KEEP WHEN, WINDOW, OVERFLOW, WEIGHT)"
                    )));
                }
            }
            if !w.eat_symbol(",") {
                break;
            }
        }
        w.expect_symbol(")")?;
        w.expect_end()?;
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

    /// Held rows are read by decisions and then dropped: caching them
    /// would only push hot columns out.
    fn cached(&self) -> bool {
        false
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

/// `ALTER TABLE t RESET SAMPLING`: the table.
pub(crate) fn parse_reset(sql: &str) -> Result<String> {
    let mut w = Words::new(sql.trim().trim_end_matches(';'))?;
    w.expect_word("alter")?;
    w.expect_word("table")?;
    let table = parse_table(&mut w)?;
    w.expect_word("reset")?;
    w.expect_word("sampling")?;
    w.expect_end()?;
    Ok(table)
}

/// `DECIDE SAMPLING [ON t]`: the table, if one is named.
pub(crate) fn parse_decide(sql: &str) -> Result<Option<String>> {
    let mut w = Words::new(sql.trim().trim_end_matches(';'))?;
    w.expect_word("decide")?;
    w.expect_word("sampling")?;
    let table = if w.eat_word("on") {
        Some(parse_table(&mut w)?)
    } else {
        None
    };
    w.expect_end()?;
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
