//! The alert statements: `CREATE ALERT`, `DROP ALERT`, `ALTER ALERT`,
//! `SHOW ALERTS`, `RECALIBRATE ALERT`, `BACKTEST ALERT`, and silences.
//!
//! Clauses are parsed here; the query after `AS` is kept as written and
//! checked by planning it.

use lookout_query::copy::parse_timestamp_micros;
use lookout_query::parse_non_negative_duration;

use crate::error::{AlertError, Result};
use crate::rule::{DEFAULT_REPEAT, Micros, Op, Recover, RuleDef, Severity, Threshold, Tier};

/// A parsed alert statement.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertStatement {
    /// `CREATE ALERT`.
    Create {
        /// The rule.
        rule: RuleDef,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
    },
    /// `DROP ALERT [IF EXISTS] name`.
    Drop {
        /// Rule name.
        name: String,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `ALTER ALERT name PAUSE | RESUME`.
    SetPaused {
        /// Rule name.
        name: String,
        /// Pause (true) or resume.
        paused: bool,
    },
    /// `SHOW ALERTS`.
    Show,
    /// `RECALIBRATE ALERT name`.
    Recalibrate {
        /// Rule name.
        name: String,
    },
    /// `BACKTEST ALERT name FROM time TO time [STEP 'interval']`.
    Backtest {
        /// Rule name.
        name: String,
        /// First instant.
        from: TimeBound,
        /// Last instant (inclusive).
        to: TimeBound,
        /// Spacing; default the rule's EVERY.
        step: Option<Micros>,
    },
    /// `CREATE SILENCE { FOR 'interval' | UNTIL time } WHERE label = 'v'
    /// [AND ...] [COMMENT 'text']`.
    CreateSilence {
        /// When it ends.
        ends: SilenceEnd,
        /// Label equalities that all must hold.
        matchers: Vec<(String, String)>,
        /// Why.
        comment: String,
    },
    /// `DROP SILENCE id`.
    DropSilence {
        /// The silence id.
        id: i64,
    },
}

/// When a silence ends.
#[derive(Debug, Clone, PartialEq)]
pub enum SilenceEnd {
    /// This long after it is created (`FOR '2 hours'`).
    After(Micros),
    /// At this instant (`UNTIL now() + INTERVAL '2 hours'`).
    Until(TimeBound),
}

/// An instant a statement names: a timestamp in quotes, or an SQL
/// expression the session evaluates when the statement runs (`now() -
/// interval '1 day'`, `date_trunc('day', now())`).
#[derive(Debug, Clone, PartialEq)]
pub enum TimeBound {
    /// A timestamp literal, in microseconds since the epoch.
    At(Micros),
    /// An expression of type `timestamptz`, as written.
    Expression(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
}

struct Lexed {
    tokens: Vec<(Token, usize)>,
}

fn lex(sql: &str) -> Result<Lexed> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            match sql[i + 2..].find("*/") {
                Some(end) => i += end + 4,
                None => return Err(AlertError::syntax("unterminated comment")),
            }
        } else if c == b'\'' {
            let mut text = String::new();
            i += 1;
            loop {
                match sql[i..].find('\'') {
                    None => return Err(AlertError::syntax("unterminated quoted string")),
                    Some(q) => {
                        text.push_str(&sql[i..i + q]);
                        i += q + 1;
                        if bytes.get(i) == Some(&b'\'') {
                            text.push('\'');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            tokens.push((Token::Str(text), start));
        } else if c == b'"' {
            match sql[i + 1..].find('"') {
                Some(q) => {
                    tokens.push((
                        Token::Word(format!("\"{}\"", &sql[i + 1..i + 1 + q])),
                        start,
                    ));
                    i += q + 2;
                }
                None => return Err(AlertError::syntax("unterminated quoted identifier")),
            }
        } else if c.is_ascii_digit()
            || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.' || bytes[i] == b'_')
            {
                // An exponent's sign belongs to the number.
                if (bytes[i] == b'e' || bytes[i] == b'E')
                    && matches!(bytes.get(i + 1), Some(b'-') | Some(b'+'))
                {
                    i += 1;
                }
                i += 1;
            }
            let text = &sql[start..i];
            let n = text
                .replace('_', "")
                .parse::<f64>()
                .map_err(|_| AlertError::syntax(format!("invalid number \"{text}\"")))?;
            tokens.push((Token::Num(n), start));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &sql[start..i];
            tokens.push((Token::Word(word.to_string()), start));
            // The query after AS is SQL, not ours to lex.
            if word.eq_ignore_ascii_case("AS") {
                break;
            }
        } else {
            let two = sql.get(i..i + 2).unwrap_or("");
            let sym = match two {
                ">=" => Some(">="),
                "<=" => Some("<="),
                _ => None,
            };
            let sym = match sym {
                Some(s) => {
                    i += 2;
                    s
                }
                None => {
                    i += 1;
                    match c {
                        b'>' => ">",
                        b'<' => "<",
                        b'=' => "=",
                        b',' => ",",
                        b'(' => "(",
                        b')' => ")",
                        b'-' => "-",
                        b'%' => "%",
                        // Only inside time expressions, which are SQL.
                        b'+' => "+",
                        b'*' => "*",
                        b'/' => "/",
                        b':' => ":",
                        b'.' => ".",
                        b';' => ";",
                        _ => {
                            let ch = sql[start..].chars().next().unwrap_or('?');
                            return Err(AlertError::syntax(format!(
                                "unexpected character \"{ch}\" in alert statement"
                            )));
                        }
                    }
                }
            };
            tokens.push((Token::Sym(sym), start));
        }
    }
    Ok(Lexed { tokens })
}

/// Whether `sql` is an alert statement (so Lookout's SQL parser never sees it).
pub fn is_alert_statement(sql: &str) -> bool {
    let words: Vec<String> = leading_words(sql, 4);
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["CREATE", "ALERT", ..]
            | ["DROP", "ALERT", ..]
            | ["ALTER", "ALERT", ..]
            | ["SHOW", "ALERTS"]
            | ["RECALIBRATE", "ALERT", ..]
            | ["BACKTEST", "ALERT", ..]
            | ["CREATE", "SILENCE", ..]
            | ["DROP", "SILENCE", ..]
            | ["SHOW", "SILENCES"]
    )
}

/// The first `max` words of `sql` in upper case, after comments.
fn leading_words(sql: &str, max: usize) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = sql;
    while words.len() < max {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            words.push(rest[..end].to_ascii_uppercase());
            rest = &rest[end..];
        }
    }
    words
}

struct Parser<'a> {
    sql: &'a str,
    tokens: Vec<(Token, usize)>,
    pos: usize,
}

/// Parses one alert statement.
pub fn parse(sql: &str) -> Result<AlertStatement> {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    let mut p = Parser {
        sql,
        tokens: lex(sql)?.tokens,
        pos: 0,
    };
    let stmt = p.statement()?;
    if let Some((t, _)) = p.tokens.get(p.pos) {
        return Err(AlertError::syntax(format!(
            "unexpected {} at the end of the statement",
            describe(t)
        )));
    }
    Ok(stmt)
}

fn describe(t: &Token) -> String {
    match t {
        Token::Word(w) => format!("\"{w}\""),
        Token::Str(s) => format!("'{s}'"),
        Token::Num(n) => n.to_string(),
        Token::Sym(s) => format!("\"{s}\""),
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(t, _)| t)
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn peek_words(&self, words: &[&str]) -> bool {
        words.iter().enumerate().all(|(k, word)| {
            matches!(self.tokens.get(self.pos + k), Some((Token::Word(w), _)) if w.eq_ignore_ascii_case(word))
        })
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.peek_word(word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_words(&mut self, words: &[&str]) -> bool {
        if self.peek_words(words) {
            self.pos += words.len();
            true
        } else {
            false
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<()> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.unexpected(word))
        }
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Token::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<()> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{sym}\"")))
        }
    }

    fn unexpected(&self, wanted: &str) -> AlertError {
        match self.peek() {
            Some(t) => AlertError::syntax(format!("expected {wanted}, found {}", describe(t))),
            None => AlertError::syntax(format!("expected {wanted} at the end of the statement")),
        }
    }

    fn name(&mut self) -> Result<String> {
        match self.peek().cloned() {
            Some(Token::Word(w)) => {
                self.pos += 1;
                Ok(
                    match w.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                        Some(quoted) => quoted.to_string(),
                        None => w.to_lowercase(),
                    },
                )
            }
            _ => Err(self.unexpected("a name")),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        match self.peek().cloned() {
            Some(Token::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn duration(&mut self, clause: &str) -> Result<Micros> {
        let text = self.string(&format!("an interval in quotes after {clause}"))?;
        let micros = parse_non_negative_duration(&text)?;
        if micros < 0 {
            return Err(AlertError::InvalidValue(format!(
                "{clause} must not be negative"
            )));
        }
        Ok(micros)
    }

    fn timestamp(&mut self, clause: &str) -> Result<Micros> {
        let text = self.string(&format!("a timestamp in quotes after {clause}"))?;
        parse_timestamp_micros(&text).ok_or_else(|| {
            AlertError::InvalidDatetime(format!("invalid timestamp after {clause}: \"{text}\""))
        })
    }

    /// A timestamp in quotes, or the SQL expression up to the first of
    /// `stops` outside parentheses (or the end). The expression is checked
    /// to be one expression: parentheses balanced, no `;`.
    fn time_bound(&mut self, clause: &str, stops: &[&str]) -> Result<TimeBound> {
        let is_stop = |t: Option<&(Token, usize)>| match t {
            None => true,
            Some((Token::Word(w), _)) => stops.iter().any(|s| w.eq_ignore_ascii_case(s)),
            _ => false,
        };
        if matches!(self.peek(), Some(Token::Str(_))) && is_stop(self.tokens.get(self.pos + 1)) {
            return self.timestamp(clause).map(TimeBound::At);
        }
        let Some(&(_, start)) = self.tokens.get(self.pos) else {
            return Err(self.unexpected(&format!("a time after {clause}")));
        };
        let mut depth = 0i32;
        while !(depth == 0 && is_stop(self.tokens.get(self.pos))) {
            match self.peek() {
                None => break,
                Some(Token::Sym("(")) => depth += 1,
                Some(Token::Sym(")")) => depth -= 1,
                Some(Token::Sym(";")) => depth = -1,
                Some(_) => {}
            }
            if depth < 0 {
                break;
            }
            self.pos += 1;
        }
        if depth != 0 {
            return Err(AlertError::syntax(format!(
                "the time after {clause} is not one expression (check its parentheses)"
            )));
        }
        let end = self
            .tokens
            .get(self.pos)
            .map_or(self.sql.len(), |&(_, at)| at);
        if end == start {
            return Err(self.unexpected(&format!("a time after {clause}")));
        }
        Ok(TimeBound::Expression(
            self.sql[start..end].trim().to_string(),
        ))
    }

    fn number(&mut self, what: &str) -> Result<f64> {
        let negative = self.eat_sym("-");
        match self.peek().cloned() {
            Some(Token::Num(n)) => {
                self.pos += 1;
                Ok(if negative { -n } else { n })
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn op(&mut self) -> Result<Op> {
        let op = match self.peek() {
            Some(Token::Sym(">")) => Op::Gt,
            Some(Token::Sym(">=")) => Op::Ge,
            Some(Token::Sym("<")) => Op::Lt,
            Some(Token::Sym("<=")) => Op::Le,
            _ => return Err(self.unexpected("a comparison (>, >=, <, <=)")),
        };
        self.pos += 1;
        Ok(op)
    }

    fn targets(&mut self) -> Result<Vec<String>> {
        let mut targets = vec![self.string("a notification URL in quotes")?];
        while matches!(self.tokens.get(self.pos + 1), Some((Token::Str(_), _))) && self.eat_sym(",")
        {
            targets.push(self.string("a notification URL")?);
        }
        for t in &targets {
            crate::notify::Target::parse(t)?;
        }
        Ok(targets)
    }

    fn statement(&mut self) -> Result<AlertStatement> {
        if self.eat_words(&["CREATE", "ALERT"]) {
            let if_not_exists = self.eat_words(&["IF", "NOT", "EXISTS"]);
            let rule = self.create_body()?;
            return Ok(AlertStatement::Create {
                rule,
                if_not_exists,
            });
        }
        if self.eat_words(&["DROP", "ALERT"]) {
            let if_exists = self.eat_words(&["IF", "EXISTS"]);
            let name = self.name()?;
            return Ok(AlertStatement::Drop { name, if_exists });
        }
        if self.eat_words(&["ALTER", "ALERT"]) {
            let name = self.name()?;
            let paused = if self.eat_word("PAUSE") {
                true
            } else if self.eat_word("RESUME") {
                false
            } else {
                return Err(self.unexpected("PAUSE or RESUME"));
            };
            return Ok(AlertStatement::SetPaused { name, paused });
        }
        if self.eat_words(&["SHOW", "ALERTS"]) {
            return Ok(AlertStatement::Show);
        }
        if self.eat_words(&["RECALIBRATE", "ALERT"]) {
            let name = self.name()?;
            return Ok(AlertStatement::Recalibrate { name });
        }
        if self.eat_words(&["BACKTEST", "ALERT"]) {
            let name = self.name()?;
            self.expect_word("FROM")?;
            let from = self.time_bound("FROM", &["TO"])?;
            self.expect_word("TO")?;
            let to = self.time_bound("TO", &["STEP"])?;
            let step = if self.eat_word("STEP") {
                Some(self.duration("STEP")?)
            } else {
                None
            };
            if let (TimeBound::At(from), TimeBound::At(to)) = (&from, &to)
                && to < from
            {
                return Err(AlertError::InvalidValue(
                    "BACKTEST: TO is before FROM".into(),
                ));
            }
            if step == Some(0) {
                return Err(AlertError::InvalidValue(
                    "BACKTEST: STEP must be positive".into(),
                ));
            }
            return Ok(AlertStatement::Backtest {
                name,
                from,
                to,
                step,
            });
        }
        if self.eat_words(&["CREATE", "SILENCE"]) {
            let ends = if self.eat_word("UNTIL") {
                SilenceEnd::Until(self.time_bound("UNTIL", &["WHERE"])?)
            } else {
                self.expect_word("FOR")
                    .map_err(|_| self.unexpected("FOR or UNTIL"))?;
                SilenceEnd::After(self.duration("FOR")?)
            };
            self.expect_word("WHERE")?;
            let mut matchers = Vec::new();
            loop {
                let label = self.name()?;
                self.expect_sym("=")?;
                let value = self.string("a label value in quotes")?;
                matchers.push((label, value));
                if !self.eat_word("AND") {
                    break;
                }
            }
            let comment = if self.eat_word("COMMENT") {
                self.string("a comment in quotes")?
            } else {
                String::new()
            };
            return Ok(AlertStatement::CreateSilence {
                ends,
                matchers,
                comment,
            });
        }
        if self.eat_words(&["DROP", "SILENCE"]) {
            let id = self.number("a silence id")?;
            if id.fract() != 0.0 || id < 0.0 {
                return Err(AlertError::InvalidValue(format!("invalid silence id {id}")));
            }
            return Ok(AlertStatement::DropSilence { id: id as i64 });
        }
        Err(AlertError::syntax("not an alert statement"))
    }

    fn create_body(&mut self) -> Result<RuleDef> {
        let name = self.name()?;
        let mut rule = RuleDef {
            name,
            every: 0,
            for_: 0,
            keep_firing_for: 0,
            tiers: Vec::new(),
            recover: None,
            min_samples: None,
            labels: Vec::new(),
            delay: 0,
            repeat_every: DEFAULT_REPEAT,
            notify: Vec::new(),
            query: String::new(),
        };
        let mut every = None;
        loop {
            if self.eat_word("EVERY") {
                every = Some(self.duration("EVERY")?);
            } else if self.eat_words(&["KEEP", "FIRING", "FOR"]) {
                rule.keep_firing_for = self.duration("KEEP FIRING FOR")?;
            } else if self.eat_word("FOR") {
                rule.for_ = self.duration("FOR")?;
            } else if self.eat_word("SEVERITY") {
                loop {
                    rule.tiers.push(self.tier()?);
                    if !(self.peek_words(&["SEVERITY"])
                        || (matches!(self.peek(), Some(Token::Sym(",")))
                            && matches!(self.tokens.get(self.pos + 1), Some((Token::Word(w), _)) if w.eq_ignore_ascii_case("SEVERITY"))))
                    {
                        break;
                    }
                    self.eat_sym(",");
                    self.expect_word("SEVERITY")?;
                }
            } else if self.eat_words(&["RECOVER", "WHEN"]) {
                self.expect_word("value")?;
                let op = self.op()?;
                let value = self.number("a number")?;
                rule.recover = Some(Recover { op, value });
            } else if self.eat_words(&["MIN", "SAMPLES"]) {
                let n = self.number("a row count")?;
                if n < 0.0 || n.fract() != 0.0 {
                    return Err(AlertError::InvalidValue(format!(
                        "MIN SAMPLES must be a whole number, not {n}"
                    )));
                }
                rule.min_samples = Some(n as i64);
            } else if self.eat_word("LABELS") {
                self.expect_sym("(")?;
                loop {
                    let key = self.name()?;
                    self.expect_sym("=")?;
                    let value = self.string("a label value in quotes")?;
                    if key == "alertname" || key == "severity" {
                        return Err(AlertError::InvalidValue(format!(
                            "label \"{key}\" is set by Lookout"
                        )));
                    }
                    rule.labels.push((key, value));
                    if !self.eat_sym(",") {
                        break;
                    }
                }
                self.expect_sym(")")?;
            } else if self.eat_word("DELAY") {
                rule.delay = self.duration("DELAY")?;
            } else if self.eat_words(&["REPEAT", "EVERY"]) {
                rule.repeat_every = self.duration("REPEAT EVERY")?;
            } else if self.eat_word("NOTIFY") {
                rule.notify.extend(self.targets()?);
            } else if self.peek_word("AS") {
                let (_, at) = self.tokens[self.pos];
                rule.query = self.sql[at + 2..].trim().to_string();
                self.pos = self.tokens.len();
                break;
            } else {
                return Err(self.unexpected(
                    "EVERY, FOR, KEEP FIRING FOR, SEVERITY, RECOVER WHEN, MIN SAMPLES, LABELS, DELAY, REPEAT EVERY, NOTIFY or AS",
                ));
            }
        }
        rule.every =
            every.ok_or_else(|| AlertError::syntax("CREATE ALERT needs EVERY '<interval>'"))?;
        if rule.every < 1_000_000 {
            return Err(AlertError::InvalidValue(
                "EVERY must be at least 1 second".into(),
            ));
        }
        if rule.tiers.is_empty() {
            return Err(AlertError::syntax(
                "CREATE ALERT needs at least one SEVERITY Px WHEN value <op> <threshold>",
            ));
        }
        if rule.query.is_empty() {
            return Err(AlertError::syntax("CREATE ALERT needs AS <query>"));
        }
        rule.tiers.sort_by_key(|t| t.severity);
        if rule
            .tiers
            .windows(2)
            .any(|w| w[0].severity == w[1].severity)
        {
            return Err(AlertError::InvalidValue(
                "each severity may appear once".into(),
            ));
        }
        Ok(rule)
    }

    fn tier(&mut self) -> Result<Tier> {
        let severity = match self.peek().cloned() {
            Some(Token::Word(w)) => Severity::parse(&w),
            _ => None,
        }
        .ok_or_else(|| self.unexpected("P0, P1 or P2"))?;
        self.pos += 1;
        self.expect_word("WHEN")?;
        self.expect_word("value")?;
        let op = self.op()?;
        let threshold = if self.eat_word("BASELINE") {
            self.expect_sym("(")?;
            let sigmas = self.number("a number of standard deviations")?;
            let robust = if self.eat_word("MAD") {
                true
            } else {
                self.expect_word("SIGMA")?;
                false
            };
            self.expect_word("OVER")?;
            let over = self.duration("OVER")?;
            let step = if self.eat_word("STEP") {
                Some(self.duration("STEP")?)
            } else {
                None
            };
            let margin = if self.eat_word("MARGIN") {
                let m = self.number("a relative margin")?;
                if self.eat_sym("%") { m / 100.0 } else { m }
            } else {
                0.0
            };
            self.expect_sym(")")?;
            if over <= 0 || sigmas < 0.0 || margin < 0.0 || step == Some(0) {
                return Err(AlertError::InvalidValue(
                    "BASELINE needs k >= 0 SIGMA (or MAD) OVER a positive window (and a positive STEP)"
                        .into(),
                ));
            }
            Threshold::Baseline {
                sigmas,
                robust,
                over,
                step,
                margin,
            }
        } else {
            Threshold::Fixed(self.number("a number or BASELINE(...)")?)
        };
        let notify = if self.eat_word("NOTIFY") {
            self.targets()?
        } else {
            Vec::new()
        };
        Ok(Tier {
            severity,
            op,
            threshold,
            notify,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let sql = "CREATE ALERT IF NOT EXISTS p99_latency
  EVERY '1 minute' FOR '5 minutes' KEEP FIRING FOR '10 minutes'
  SEVERITY P0 WHEN value > 8000,
  SEVERITY P1 WHEN value > 4000
  RECOVER WHEN value < 3500
  MIN SAMPLES 50
  LABELS (team = 'llm-platform')
  DELAY '1 minute'
  REPEAT EVERY '4 hours'
  NOTIFY 'http://127.0.0.1:9000/hook', 'alertmanager://127.0.0.1:9093'
AS SELECT model, latency_quantile(latency_ms, 0.99) AS value, count(*) AS n
   FROM events WHERE ts >= now() - INTERVAL '15 minutes' GROUP BY model;";
        assert!(is_alert_statement(sql));
        let AlertStatement::Create {
            rule,
            if_not_exists,
        } = parse(sql).expect("parses")
        else {
            panic!("not a CREATE");
        };
        assert!(if_not_exists);
        assert_eq!(rule.name, "p99_latency");
        assert_eq!(rule.every, 60_000_000);
        assert_eq!(rule.for_, 300_000_000);
        assert_eq!(rule.keep_firing_for, 600_000_000);
        assert_eq!(rule.tiers.len(), 2);
        assert_eq!(rule.tiers[0].severity, Severity::P0);
        assert_eq!(rule.tiers[1].threshold, Threshold::Fixed(4000.0));
        assert_eq!(
            rule.recover,
            Some(Recover {
                op: Op::Lt,
                value: 3500.0
            })
        );
        assert_eq!(rule.min_samples, Some(50));
        assert_eq!(rule.labels, vec![("team".into(), "llm-platform".into())]);
        assert_eq!(rule.delay, 60_000_000);
        assert_eq!(rule.notify.len(), 2);
        assert!(rule.query.starts_with("SELECT model, latency_quantile"));
        assert!(rule.query.ends_with("GROUP BY model"));
    }

    #[test]
    fn parses_baselines_and_per_tier_targets() {
        let sql = "CREATE ALERT drift EVERY '1 hour'
            SEVERITY P1 WHEN value > 0.25 NOTIFY 'http://a/b'
            SEVERITY P2 WHEN value > BASELINE(3 SIGMA OVER '14 days' STEP '1 day' MARGIN 10%)
            AS SELECT 1 AS value";
        let AlertStatement::Create { rule, .. } = parse(sql).expect("parses") else {
            panic!("not a CREATE");
        };
        assert_eq!(rule.tiers[0].notify, vec!["http://a/b".to_string()]);
        assert_eq!(
            rule.tiers[1].threshold,
            Threshold::Baseline {
                sigmas: 3.0,
                robust: false,
                over: 14 * 86_400_000_000,
                step: Some(86_400_000_000),
                margin: 0.1
            }
        );
    }

    #[test]
    fn robust_baselines_use_mad() {
        let sql = "CREATE ALERT r EVERY '1 hour' SEVERITY P1 WHEN value < BASELINE(4 MAD OVER '7 days') AS SELECT 1 AS value";
        let AlertStatement::Create { rule, .. } = parse(sql).expect("parses") else {
            panic!("not a CREATE");
        };
        assert!(matches!(
            rule.tiers[0].threshold,
            Threshold::Baseline { robust: true, sigmas, .. } if sigmas == 4.0
        ));
    }

    #[test]
    fn other_statements() {
        assert_eq!(
            parse("drop alert if exists X").expect("drop"),
            AlertStatement::Drop {
                name: "x".into(),
                if_exists: true
            }
        );
        assert_eq!(
            parse("ALTER ALERT a PAUSE").expect("pause"),
            AlertStatement::SetPaused {
                name: "a".into(),
                paused: true
            }
        );
        assert_eq!(
            parse("BACKTEST ALERT a FROM '2025-01-01' TO '2025-01-02' STEP '5 minutes'")
                .expect("backtest"),
            AlertStatement::Backtest {
                name: "a".into(),
                from: TimeBound::At(1_735_689_600_000_000),
                to: TimeBound::At(1_735_776_000_000_000),
                step: Some(300_000_000)
            }
        );
        assert_eq!(
            parse("BACKTEST ALERT a FROM now() - interval '1 day' TO date_trunc('hour', now()) STEP '1 hour'")
                .expect("backtest"),
            AlertStatement::Backtest {
                name: "a".into(),
                from: TimeBound::Expression("now() - interval '1 day'".into()),
                to: TimeBound::Expression("date_trunc('hour', now())".into()),
                step: Some(3_600_000_000)
            }
        );
        assert_eq!(
            parse("BACKTEST ALERT a FROM '2025-01-01'::timestamptz TO now()").expect("backtest"),
            AlertStatement::Backtest {
                name: "a".into(),
                from: TimeBound::Expression("'2025-01-01'::timestamptz".into()),
                to: TimeBound::Expression("now()".into()),
                step: None
            }
        );
        assert_eq!(
            parse("CREATE SILENCE FOR '2 hours' WHERE model = 'x' AND alertname = 'a' COMMENT 'deploy'")
                .expect("silence"),
            AlertStatement::CreateSilence {
                ends: SilenceEnd::After(7_200_000_000),
                matchers: vec![("model".into(), "x".into()), ("alertname".into(), "a".into())],
                comment: "deploy".into()
            }
        );
        assert_eq!(
            parse("CREATE SILENCE UNTIL now() + INTERVAL '2 hours' WHERE model = 'x'")
                .expect("silence"),
            AlertStatement::CreateSilence {
                ends: SilenceEnd::Until(TimeBound::Expression("now() + INTERVAL '2 hours'".into())),
                matchers: vec![("model".into(), "x".into())],
                comment: String::new()
            }
        );
        assert!(!is_alert_statement("SELECT 1"));
        assert!(!is_alert_statement("CREATE TABLE alert (x int)"));
        assert!(is_alert_statement("-- note\nshow alerts"));
    }

    #[test]
    fn errors_name_what_was_expected() {
        let err = |sql: &str| parse(sql).expect_err("must fail").to_string();
        assert!(err("CREATE ALERT a SEVERITY P0 WHEN value > 1 AS SELECT 1").contains("EVERY"));
        assert!(err("CREATE ALERT a EVERY '1 minute' AS SELECT 1").contains("SEVERITY"));
        assert!(
            err("CREATE ALERT a EVERY 'soon' SEVERITY P0 WHEN value > 1 AS SELECT 1")
                .contains("invalid interval")
        );
        assert!(
            err("CREATE ALERT a EVERY '1 minute' SEVERITY P5 WHEN value > 1 AS SELECT 1")
                .contains("P0, P1 or P2")
        );
        assert!(err("CREATE ALERT a EVERY '1 minute' SEVERITY P0 WHEN value > 1 NOTIFY 'ftp://x' AS SELECT 1")
            .contains("notification target"));
        assert!(err("BACKTEST ALERT a FROM '2025-01-02' TO '2025-01-01'").contains("before"));
        // An expression is one expression: nothing can follow it as SQL.
        assert!(err("BACKTEST ALERT a FROM now()) TO now()").contains("one expression"));
        assert!(err("BACKTEST ALERT a FROM (now() TO now()").contains("one expression"));
        assert!(
            err("BACKTEST ALERT a FROM now(); DROP TABLE t TO now()").contains("one expression")
        );
        assert!(err("BACKTEST ALERT a FROM TO now()").contains("a time after FROM"));
    }
}
