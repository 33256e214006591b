//! The evaluator statements, parsed with the core's grammar kit ([`Words`]).

use std::fmt;

use lookout_query::ext::{
    Words, format_duration, leading_words, quote_ident, quote_literal, quoted_table, table_name,
};
use lookout_query::{QueryError, Result, SqlState};
use serde::{Deserialize, Serialize};

/// What an evaluator judges and how it calls its judge. Stored as JSON in
/// `lookout.evaluators`; a change of any field is a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Definition {
    /// The table whose rows are judged.
    pub(crate) source: String,
    /// The column that names a row (a request id).
    pub(crate) key: String,
    /// Which rows: an SQL predicate over the source's columns.
    pub(crate) filter: Option<String>,
    /// The share of matching rows judged, by `sample_hash(key)` (the same
    /// rows sampling at ingest keeps at that rate).
    pub(crate) sample: f64,
    /// An OpenAI-compatible API base URL (`.../v1`).
    pub(crate) endpoint: String,
    pub(crate) model: String,
    /// The environment variable holding the API key (never the key).
    pub(crate) api_key_env: Option<String>,
    /// The rubric, with `{{column}}` placeholders.
    pub(crate) prompt: String,
    pub(crate) score_min: f64,
    pub(crate) score_max: f64,
    /// Calls started per minute at most.
    pub(crate) rate_per_minute: f64,
    pub(crate) concurrency: usize,
    /// One call's time limit, in microseconds.
    pub(crate) timeout: i64,
    /// Dollars per day at most (UTC days); `None`: no limit.
    pub(crate) budget_usd_per_day: Option<f64>,
    /// Dollars per million input and output tokens, for the cost.
    pub(crate) price_per_million: (f64, f64),
}

/// One evaluator statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Statement {
    /// `CREATE EVALUATOR [IF NOT EXISTS] name ON table KEY column ...`
    Create {
        name: String,
        if_not_exists: bool,
        def: Box<Definition>,
    },
    /// `ALTER EVALUATOR name SET PROMPT '...' | MODEL '...' | SAMPLE r | ...`:
    /// a new version.
    Alter { name: String, changes: Vec<Change> },
    /// `DROP EVALUATOR [IF EXISTS] name`
    Drop { name: String, if_exists: bool },
    /// `PAUSE EVALUATOR name` / `RESUME EVALUATOR name`
    Pause { name: String, paused: bool },
    /// `EVALUATE name FROM <timestamptz> TO <timestamptz>`: judges the rows
    /// of a past range (the bounds as SQL expressions).
    Evaluate {
        name: String,
        from: String,
        to: String,
    },
    /// `SHOW EVALUATORS`
    Show,
}

/// One setting an `ALTER EVALUATOR` changes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Prompt(String),
    Model(String),
    Sample(f64),
    Filter(Option<String>),
    Score(f64, f64),
    RateLimit(f64),
    Concurrency(usize),
    Timeout(i64),
    Budget(Option<f64>),
    Price(f64, f64),
}

impl Change {
    pub(crate) fn apply(&self, def: &mut Definition) {
        match self.clone() {
            Change::Prompt(p) => def.prompt = p,
            Change::Model(m) => def.model = m,
            Change::Sample(s) => def.sample = s,
            Change::Filter(f) => def.filter = f,
            Change::Score(lo, hi) => (def.score_min, def.score_max) = (lo, hi),
            Change::RateLimit(r) => def.rate_per_minute = r,
            Change::Concurrency(c) => def.concurrency = c,
            Change::Timeout(t) => def.timeout = t,
            Change::Budget(b) => def.budget_usd_per_day = b,
            Change::Price(i, o) => def.price_per_million = (i, o),
        }
    }
}

/// Whether `sql` is an evaluator statement.
pub(crate) fn is_evaluator_statement(sql: &str) -> bool {
    let words = leading_words(sql, 2);
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        [
            "CREATE" | "ALTER" | "DROP" | "PAUSE" | "RESUME",
            "EVALUATOR"
        ] | ["SHOW", "EVALUATORS"]
            | ["EVALUATE", _]
    )
}

fn syntax(message: impl Into<String>) -> QueryError {
    QueryError::syntax(message)
}

fn invalid(message: String) -> QueryError {
    QueryError::new(SqlState::InvalidParameterValue, message)
}

/// A `WHERE` predicate: one SQL expression, read by the SQL parser (which
/// stops before the next clause's word) and printed back from its syntax
/// tree, so nothing but that expression reaches the evaluator's query.
fn predicate(t: &mut Words<'_>) -> Result<String> {
    if t.at_end() {
        return Err(syntax("WHERE needs a predicate"));
    }
    let expr = t.parse_with(|p| p.parse_expr())?;
    Ok(expr.to_string())
}

fn positive(t: &mut Words<'_>, what: &str) -> Result<f64> {
    let n = t.number(what)?;
    if !(n.is_finite() && n > 0.0) {
        return Err(invalid(format!("{what} must be positive, not {n}")));
    }
    Ok(n)
}

/// One clause of `CREATE`/`ALTER EVALUATOR`, or `None` at the end.
fn clause(t: &mut Words<'_>) -> Result<Option<Change>> {
    let change = if t.eat_word("where") {
        Change::Filter(Some(predicate(t)?))
    } else if t.eat_word("sample") {
        let s = t.number("the share of rows judged (0 to 1)")?;
        if !(s > 0.0 && s <= 1.0) {
            return Err(invalid(format!("SAMPLE must be in (0, 1], not {s}")));
        }
        Change::Sample(s)
    } else if t.eat_word("model") {
        Change::Model(t.string("the judge model in quotes")?)
    } else if t.eat_word("prompt") {
        Change::Prompt(t.string("the prompt in quotes")?)
    } else if t.eat_words(&["score", "between"]) {
        let lo = t.number("the lowest score")?;
        t.expect_word("and")?;
        let hi = t.number("the highest score")?;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(invalid(format!("SCORE BETWEEN {lo} AND {hi} is empty")));
        }
        Change::Score(lo, hi)
    } else if t.eat_words(&["rate", "limit"]) {
        let n = positive(t, "the calls per unit of time")?;
        t.expect_word("per")?;
        let per = if t.eat_word("second") {
            60.0
        } else if t.eat_word("minute") {
            1.0
        } else if t.eat_word("hour") {
            1.0 / 60.0
        } else {
            return Err(t.unexpected("SECOND, MINUTE or HOUR"));
        };
        Change::RateLimit(n * per)
    } else if t.eat_word("concurrency") {
        let n = t.number("the calls at once")?;
        if !(1.0..=64.0).contains(&n) || n.fract() != 0.0 {
            return Err(invalid(format!("CONCURRENCY takes 1 to 64, not {n}")));
        }
        Change::Concurrency(n as usize)
    } else if t.eat_word("timeout") {
        let us = t.duration("TIMEOUT")?;
        if us < 1_000 {
            return Err(invalid("TIMEOUT must be at least 1 millisecond".into()));
        }
        Change::Timeout(us)
    } else if t.eat_word("budget") {
        if t.eat_word("none") {
            Change::Budget(None)
        } else {
            let usd = positive(t, "the budget in dollars")?;
            t.expect_word("usd")?;
            t.expect_word("per")?;
            t.expect_word("day")?;
            Change::Budget(Some(usd))
        }
    } else if t.eat_word("price") {
        let input = t.number("the input price")?;
        t.eat_symbol(",");
        let output = t.number("the output price")?;
        if !(input >= 0.0 && output >= 0.0 && input.is_finite() && output.is_finite()) {
            return Err(invalid("PRICE must be non-negative".into()));
        }
        t.expect_word("usd")?;
        t.expect_word("per")?;
        t.expect_word("million")?;
        t.expect_word("tokens")?;
        Change::Price(input, output)
    } else {
        return Ok(None);
    };
    Ok(Some(change))
}

/// Parses one evaluator statement.
pub(crate) fn parse(sql: &str) -> Result<Statement> {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    let mut t = Words::new(trimmed)?;
    let statement = if t.eat_words(&["create", "evaluator"]) {
        let if_not_exists = t.eat_words(&["if", "not", "exists"]);
        let name = t.name()?;
        t.expect_word("on")?;
        let source = table_name(&t.parse_with(|p| p.parse_object_name(false))?)?;
        t.expect_word("key")?;
        let key = t.name()?;
        let mut endpoint = None;
        let mut api_key_env = None;
        let mut changes = Vec::new();
        loop {
            if t.eat_word("endpoint") {
                endpoint = Some(t.string("the endpoint URL in quotes")?);
            } else if t.eat_words(&["api", "key", "env"]) {
                api_key_env = Some(t.string("the environment variable's name in quotes")?);
            } else if let Some(change) = clause(&mut t)? {
                changes.push(change);
            } else {
                break;
            }
        }
        let endpoint = endpoint.ok_or_else(|| syntax("CREATE EVALUATOR needs ENDPOINT 'url'"))?;
        check_endpoint(&endpoint)?;
        let mut def = Definition {
            source,
            key,
            filter: None,
            sample: 1.0,
            endpoint,
            model: String::new(),
            api_key_env,
            prompt: String::new(),
            score_min: 0.0,
            score_max: 1.0,
            rate_per_minute: 60.0,
            concurrency: 4,
            timeout: 30_000_000,
            budget_usd_per_day: None,
            price_per_million: (0.0, 0.0),
        };
        for change in &changes {
            change.apply(&mut def);
        }
        if def.model.is_empty() {
            return Err(syntax("CREATE EVALUATOR needs MODEL 'name'"));
        }
        if def.prompt.is_empty() {
            return Err(syntax("CREATE EVALUATOR needs PROMPT '...'"));
        }
        Statement::Create {
            name,
            if_not_exists,
            def: Box::new(def),
        }
    } else if t.eat_words(&["alter", "evaluator"]) {
        let name = t.name()?;
        t.expect_word("set")?;
        let mut changes = Vec::new();
        while let Some(change) = clause(&mut t)? {
            changes.push(change);
        }
        if changes.is_empty() {
            return Err(t.unexpected("a setting (PROMPT, MODEL, SAMPLE, WHERE, ...)"));
        }
        Statement::Alter { name, changes }
    } else if t.eat_words(&["drop", "evaluator"]) {
        let if_exists = t.eat_words(&["if", "exists"]);
        Statement::Drop {
            name: t.name()?,
            if_exists,
        }
    } else if t.eat_words(&["pause", "evaluator"]) {
        Statement::Pause {
            name: t.name()?,
            paused: true,
        }
    } else if t.eat_words(&["resume", "evaluator"]) {
        Statement::Pause {
            name: t.name()?,
            paused: false,
        }
    } else if t.eat_words(&["show", "evaluators"]) {
        Statement::Show
    } else if t.eat_word("evaluate") {
        let name = t.name()?;
        t.expect_word("from")?;
        // Each bound is one SQL expression of type timestamptz, evaluated
        // by the session (`'2026-12-01'`, `now() - INTERVAL '1 day'`).
        // FROM runs to the first TO outside parentheses (the SQL parser
        // would read `INTERVAL '1 day' TO ...` as an interval's range).
        let from = t.text_until(|p| p.is_word("to"));
        let from = lookout_query::one_expression(from)?;
        t.expect_word("to")?;
        let to = t.parse_with(|p| p.parse_expr())?.to_string();
        Statement::Evaluate { name, from, to }
    } else {
        return Err(syntax(format!("not an evaluator statement: \"{trimmed}\"")));
    };
    t.expect_end()?;
    Ok(statement)
}

/// An endpoint is an http(s) URL; anything else (a file, a socket) is refused.
fn check_endpoint(endpoint: &str) -> Result<()> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| invalid(format!("ENDPOINT {endpoint:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!(
            "ENDPOINT must be an http or https URL, not {endpoint:?}"
        )));
    }
    Ok(())
}

impl Definition {
    /// The clauses that recreate this definition, as SQL.
    pub(crate) fn clauses(&self) -> String {
        let mut sql = String::new();
        if let Some(filter) = &self.filter {
            sql.push_str(&format!(" WHERE {filter}"));
        }
        sql.push_str(&format!(
            " SAMPLE {} ENDPOINT {} MODEL {}",
            self.sample,
            quote_literal(&self.endpoint),
            quote_literal(&self.model)
        ));
        if let Some(env) = &self.api_key_env {
            sql.push_str(&format!(" API KEY ENV {}", quote_literal(env)));
        }
        sql.push_str(&format!(
            " PROMPT {} SCORE BETWEEN {} AND {} RATE LIMIT {} PER MINUTE CONCURRENCY {} TIMEOUT {}",
            quote_literal(&self.prompt),
            self.score_min,
            self.score_max,
            self.rate_per_minute,
            self.concurrency,
            quote_literal(&format_duration(self.timeout)),
        ));
        match self.budget_usd_per_day {
            Some(b) => sql.push_str(&format!(" BUDGET {b} USD PER DAY")),
            None => sql.push_str(" BUDGET NONE"),
        }
        let (i, o) = self.price_per_million;
        sql.push_str(&format!(" PRICE {i}, {o} USD PER MILLION TOKENS"));
        sql
    }
}

/// The statement as SQL that parses back to it.
impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::Create {
                name,
                if_not_exists,
                def,
            } => {
                let ine = if *if_not_exists { "IF NOT EXISTS " } else { "" };
                write!(
                    f,
                    "CREATE EVALUATOR {ine}{} ON {} KEY {}{}",
                    quote_ident(name),
                    quoted_table(&def.source),
                    quote_ident(&def.key),
                    def.clauses()
                )
            }
            Statement::Alter { name, .. } => {
                write!(f, "ALTER EVALUATOR {} SET ...", quote_ident(name))
            }
            Statement::Drop { name, if_exists } => {
                let ie = if *if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP EVALUATOR {ie}{}", quote_ident(name))
            }
            Statement::Pause { name, paused } => {
                let verb = if *paused { "PAUSE" } else { "RESUME" };
                write!(f, "{verb} EVALUATOR {}", quote_ident(name))
            }
            Statement::Evaluate { name, from, to } => {
                write!(f, "EVALUATE {} FROM {from} TO {to}", quote_ident(name))
            }
            Statement::Show => write!(f, "SHOW EVALUATORS"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: &str = "CREATE EVALUATOR groundedness ON llm_calls KEY request_id
        WHERE status = 'ok' AND model <> 'x' SAMPLE 0.05
        ENDPOINT 'http://127.0.0.1:8000/v1' MODEL 'judge-small' API KEY ENV 'JUDGE_API_KEY'
        PROMPT 'Rate {{question}} {{answer}}'
        SCORE BETWEEN 0 AND 1
        RATE LIMIT 60 PER MINUTE CONCURRENCY 4 TIMEOUT '30 seconds' BUDGET 5 USD PER DAY
        PRICE 0.15, 0.6 USD PER MILLION TOKENS";

    #[test]
    fn create_parses_and_prints_back() {
        let Statement::Create { name, def, .. } = parse(CREATE).expect("parse") else {
            panic!("not a create")
        };
        assert_eq!(name, "groundedness");
        assert_eq!(
            def.filter.as_deref(),
            Some("status = 'ok' AND model <> 'x'")
        );
        assert_eq!(def.sample, 0.05);
        assert_eq!(def.api_key_env.as_deref(), Some("JUDGE_API_KEY"));
        assert_eq!(def.budget_usd_per_day, Some(5.0));
        assert_eq!(def.timeout, 30_000_000);
        assert_eq!(def.price_per_million, (0.15, 0.6));
        let again = parse(&parse(CREATE).expect("parse").to_string()).expect("reparse");
        assert_eq!(again, parse(CREATE).expect("parse"));
    }

    #[test]
    fn evaluate_takes_timestamp_expressions() {
        let parsed = parse("EVALUATE e FROM now() - INTERVAL '1 day' TO '2026-12-05 00:00:00+00'")
            .expect("parse");
        let Statement::Evaluate { from, to, .. } = &parsed else {
            panic!("not EVALUATE: {parsed:?}")
        };
        assert_eq!(from, "now() - INTERVAL '1 day'");
        assert_eq!(to, "'2026-12-05 00:00:00+00'");
        assert_eq!(parse(&parsed.to_string()).expect("reparse"), parsed);
    }

    #[test]
    fn bad_clauses_are_refused_with_their_sqlstate() {
        for (sql, code) in [
            (
                "CREATE EVALUATOR e ON t KEY k MODEL 'm' PROMPT 'p'",
                "42601",
            ),
            (
                "CREATE EVALUATOR e ON t KEY k ENDPOINT 'file:///etc/passwd' MODEL 'm' PROMPT 'p'",
                "22023",
            ),
            (
                "CREATE EVALUATOR e ON t KEY k ENDPOINT 'http://h/v1' MODEL 'm' PROMPT 'p' SAMPLE 2",
                "22023",
            ),
            (
                "CREATE EVALUATOR e ON t KEY k ENDPOINT 'http://h/v1' MODEL 'm' PROMPT 'p' CONCURRENCY 0",
                "22023",
            ),
            (
                "CREATE EVALUATOR e ON t KEY k ENDPOINT 'http://h/v1' MODEL 'm' PROMPT 'p' SCORE BETWEEN 1 AND 0",
                "22023",
            ),
            (
                "CREATE EVALUATOR e ON t KEY k ENDPOINT 'http://h/v1' MODEL 'm' PROMPT 'p' WHERE a = 1; DROP TABLE t",
                "42601",
            ),
            ("ALTER EVALUATOR e SET", "42601"),
            ("EVALUATE e FROM '2026-01-01'", "42601"),
            (
                "EVALUATE e FROM '2026-01-01' TO now(); DROP TABLE t",
                "42601",
            ),
        ] {
            let err = parse(sql).expect_err(sql);
            assert_eq!(err.sqlstate(), code, "{sql}: {err}");
        }
    }
}
