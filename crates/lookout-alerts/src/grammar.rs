//! The alert statements: `CREATE ALERT`, `DROP ALERT`, `ALTER ALERT`,
//! `SHOW ALERTS`, `RECALIBRATE ALERT`, `BACKTEST ALERT`, and silences.
//!
//! Clauses are parsed here with the core's grammar kit ([`Words`]); the
//! query after `AS` is kept as written and checked by planning it.

use std::fmt;

use lookout_query::copy::parse_timestamp_micros;
use lookout_query::ext::{Piece, Words, leading_words, one_expression, quote_ident, quote_literal};

use crate::error::{AlertError, Result};
use crate::rule::{
    DEFAULT_REPEAT, Micros, Op, Recover, RuleDef, Severity, Threshold, Tier, format_duration,
};

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

/// The alert grammar over the statement's words.
struct Parser<'a> {
    w: Words<'a>,
}

/// Parses one alert statement.
pub fn parse(sql: &str) -> Result<AlertStatement> {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    let mut p = Parser {
        w: Words::new(sql)?,
    };
    let stmt = p.statement()?;
    p.w.expect_end()?;
    Ok(stmt)
}

impl Parser<'_> {
    fn unexpected(&self, wanted: &str) -> AlertError {
        self.w.unexpected(wanted).into()
    }

    fn timestamp(&mut self, clause: &str) -> Result<Micros> {
        let text = self
            .w
            .string(&format!("a timestamp in quotes after {clause}"))?;
        parse_timestamp_micros(&text).ok_or_else(|| {
            AlertError::InvalidDatetime(format!("invalid timestamp after {clause}: \"{text}\""))
        })
    }

    /// A timestamp in quotes, or the SQL text up to the first of `stops`
    /// outside parentheses (or the end), checked to be one expression and
    /// kept as written.
    fn time_bound(&mut self, clause: &str, stops: &[&str]) -> Result<TimeBound> {
        let is_stop = |p: &Piece| stops.iter().any(|s| p.is_word(s));
        if matches!(self.w.peek(), Some(Piece::Str(_))) && self.w.peek_at(1).is_none_or(is_stop) {
            return self.timestamp(clause).map(TimeBound::At);
        }
        if self.w.peek().is_none_or(is_stop) {
            return Err(self.unexpected(&format!("a time after {clause}")));
        }
        let text = self.w.text_until(is_stop);
        one_expression(text).map_err(|e| {
            AlertError::syntax(format!(
                "the time after {clause} is not one expression ({e})"
            ))
        })?;
        Ok(TimeBound::Expression(text.to_string()))
    }

    fn op(&mut self) -> Result<Op> {
        let op = match self.w.peek() {
            Some(Piece::Symbol(s)) => match s.as_str() {
                ">" => Op::Gt,
                ">=" => Op::Ge,
                "<" => Op::Lt,
                "<=" => Op::Le,
                _ => return Err(self.unexpected("a comparison (>, >=, <, <=)")),
            },
            _ => return Err(self.unexpected("a comparison (>, >=, <, <=)")),
        };
        self.w.advance();
        Ok(op)
    }

    fn targets(&mut self) -> Result<Vec<String>> {
        let mut targets = vec![self.w.string("a notification URL in quotes")?];
        while matches!(self.w.peek_at(1), Some(Piece::Str(_))) && self.w.eat_symbol(",") {
            targets.push(self.w.string("a notification URL")?);
        }
        for t in &targets {
            crate::notify::Target::parse(t)?;
        }
        Ok(targets)
    }

    fn statement(&mut self) -> Result<AlertStatement> {
        if self.w.eat_words(&["CREATE", "ALERT"]) {
            let if_not_exists = self.w.eat_words(&["IF", "NOT", "EXISTS"]);
            let rule = self.create_body()?;
            return Ok(AlertStatement::Create {
                rule,
                if_not_exists,
            });
        }
        if self.w.eat_words(&["DROP", "ALERT"]) {
            let if_exists = self.w.eat_words(&["IF", "EXISTS"]);
            let name = self.w.name()?;
            return Ok(AlertStatement::Drop { name, if_exists });
        }
        if self.w.eat_words(&["ALTER", "ALERT"]) {
            let name = self.w.name()?;
            let paused = if self.w.eat_word("PAUSE") {
                true
            } else if self.w.eat_word("RESUME") {
                false
            } else {
                return Err(self.unexpected("PAUSE or RESUME"));
            };
            return Ok(AlertStatement::SetPaused { name, paused });
        }
        if self.w.eat_words(&["SHOW", "ALERTS"]) {
            return Ok(AlertStatement::Show);
        }
        if self.w.eat_words(&["RECALIBRATE", "ALERT"]) {
            let name = self.w.name()?;
            return Ok(AlertStatement::Recalibrate { name });
        }
        if self.w.eat_words(&["BACKTEST", "ALERT"]) {
            let name = self.w.name()?;
            self.w.expect_word("FROM")?;
            let from = self.time_bound("FROM", &["TO"])?;
            self.w.expect_word("TO")?;
            let to = self.time_bound("TO", &["STEP"])?;
            let step = if self.w.eat_word("STEP") {
                Some(self.w.duration("STEP")?)
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
        if self.w.eat_words(&["CREATE", "SILENCE"]) {
            let ends = if self.w.eat_word("UNTIL") {
                SilenceEnd::Until(self.time_bound("UNTIL", &["WHERE"])?)
            } else {
                self.w
                    .expect_word("FOR")
                    .map_err(|_| self.unexpected("FOR or UNTIL"))?;
                SilenceEnd::After(self.w.duration("FOR")?)
            };
            self.w.expect_word("WHERE")?;
            let mut matchers = Vec::new();
            loop {
                let label = self.w.name()?;
                self.w.expect_symbol("=")?;
                let value = self.w.string("a label value in quotes")?;
                matchers.push((label, value));
                if !self.w.eat_word("AND") {
                    break;
                }
            }
            let comment = if self.w.eat_word("COMMENT") {
                self.w.string("a comment in quotes")?
            } else {
                String::new()
            };
            return Ok(AlertStatement::CreateSilence {
                ends,
                matchers,
                comment,
            });
        }
        if self.w.eat_words(&["DROP", "SILENCE"]) {
            let id = self.w.number("a silence id")?;
            if id.fract() != 0.0 || id < 0.0 {
                return Err(AlertError::InvalidValue(format!("invalid silence id {id}")));
            }
            return Ok(AlertStatement::DropSilence { id: id as i64 });
        }
        Err(AlertError::syntax("not an alert statement"))
    }

    fn create_body(&mut self) -> Result<RuleDef> {
        let name = self.w.name()?;
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
            if self.w.eat_word("EVERY") {
                every = Some(self.w.duration("EVERY")?);
            } else if self.w.eat_words(&["KEEP", "FIRING", "FOR"]) {
                rule.keep_firing_for = self.w.duration("KEEP FIRING FOR")?;
            } else if self.w.eat_word("FOR") {
                rule.for_ = self.w.duration("FOR")?;
            } else if self.w.eat_word("SEVERITY") {
                loop {
                    rule.tiers.push(self.tier()?);
                    if !(self.w.peek_words(&["SEVERITY"])
                        || (self.w.peek().is_some_and(|p| p.is_symbol(","))
                            && self.w.peek_at(1).is_some_and(|p| p.is_word("SEVERITY"))))
                    {
                        break;
                    }
                    self.w.eat_symbol(",");
                    self.w.expect_word("SEVERITY")?;
                }
            } else if self.w.eat_words(&["RECOVER", "WHEN"]) {
                self.w.expect_word("value")?;
                let op = self.op()?;
                let value = self.w.number("a number")?;
                rule.recover = Some(Recover { op, value });
            } else if self.w.eat_words(&["MIN", "SAMPLES"]) {
                let n = self.w.number("a row count")?;
                if n < 0.0 || n.fract() != 0.0 {
                    return Err(AlertError::InvalidValue(format!(
                        "MIN SAMPLES must be a whole number, not {n}"
                    )));
                }
                rule.min_samples = Some(n as i64);
            } else if self.w.eat_word("LABELS") {
                self.w.expect_symbol("(")?;
                loop {
                    let key = self.w.name()?;
                    self.w.expect_symbol("=")?;
                    let value = self.w.string("a label value in quotes")?;
                    if key == "alertname" || key == "severity" {
                        return Err(AlertError::InvalidValue(format!(
                            "label \"{key}\" is set by Lookout"
                        )));
                    }
                    rule.labels.push((key, value));
                    if !self.w.eat_symbol(",") {
                        break;
                    }
                }
                self.w.expect_symbol(")")?;
            } else if self.w.eat_word("DELAY") {
                rule.delay = self.w.duration("DELAY")?;
            } else if self.w.eat_words(&["REPEAT", "EVERY"]) {
                rule.repeat_every = self.w.duration("REPEAT EVERY")?;
            } else if self.w.eat_word("NOTIFY") {
                rule.notify.extend(self.targets()?);
            } else if self.w.eat_word("AS") {
                rule.query = self.w.rest().to_string();
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
        let severity = match self.w.peek() {
            Some(Piece::Word { text, .. }) => Severity::parse(text),
            _ => None,
        }
        .ok_or_else(|| self.unexpected("P0, P1 or P2"))?;
        self.w.advance();
        self.w.expect_word("WHEN")?;
        self.w.expect_word("value")?;
        let op = self.op()?;
        let threshold = if self.w.eat_word("BASELINE") {
            self.w.expect_symbol("(")?;
            let sigmas = self.w.number("a number of standard deviations")?;
            let robust = if self.w.eat_word("MAD") {
                true
            } else {
                self.w.expect_word("SIGMA")?;
                false
            };
            self.w.expect_word("OVER")?;
            let over = self.w.duration("OVER")?;
            let step = if self.w.eat_word("STEP") {
                Some(self.w.duration("STEP")?)
            } else {
                None
            };
            let margin = if self.w.eat_word("MARGIN") {
                let m = self.w.number("a relative margin")?;
                if self.w.eat_symbol("%") { m / 100.0 } else { m }
            } else {
                0.0
            };
            self.w.expect_symbol(")")?;
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
            Threshold::Fixed(self.w.number("a number or BASELINE(...)")?)
        };
        let notify = if self.w.eat_word("NOTIFY") {
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

/// An interval as a literal the grammar reads back.
fn interval(micros: Micros) -> String {
    quote_literal(&format_duration(micros))
}

/// An instant as a literal, or the expression as written.
fn time_bound(bound: &TimeBound) -> String {
    match bound {
        TimeBound::At(micros) => quote_literal(
            &chrono::DateTime::from_timestamp_micros(*micros)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
                .unwrap_or_default(),
        ),
        TimeBound::Expression(text) => text.clone(),
    }
}

/// Notification targets as a list of literals.
fn targets(urls: &[String]) -> String {
    urls.iter()
        .map(|u| quote_literal(u))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `name = 'value'` pairs.
fn label_pairs(labels: &[(String, String)], separator: &str) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{} = {}", quote_ident(k), quote_literal(v)))
        .collect::<Vec<_>>()
        .join(separator)
}

/// A rule's clauses after `CREATE ALERT [IF NOT EXISTS]`, in the grammar's
/// order, defaults left out.
fn write_rule(f: &mut fmt::Formatter<'_>, rule: &RuleDef) -> fmt::Result {
    write!(
        f,
        "{} EVERY {}",
        quote_ident(&rule.name),
        interval(rule.every)
    )?;
    if rule.for_ > 0 {
        write!(f, " FOR {}", interval(rule.for_))?;
    }
    if rule.keep_firing_for > 0 {
        write!(f, " KEEP FIRING FOR {}", interval(rule.keep_firing_for))?;
    }
    for tier in &rule.tiers {
        write!(
            f,
            " SEVERITY {} WHEN value {} {}",
            tier.severity.as_str(),
            tier.op.as_str(),
            tier.threshold
        )?;
        if !tier.notify.is_empty() {
            write!(f, " NOTIFY {}", targets(&tier.notify))?;
        }
    }
    if let Some(r) = &rule.recover {
        write!(f, " RECOVER WHEN value {} {}", r.op.as_str(), r.value)?;
    }
    if let Some(n) = rule.min_samples {
        write!(f, " MIN SAMPLES {n}")?;
    }
    if !rule.labels.is_empty() {
        write!(f, " LABELS ({})", label_pairs(&rule.labels, ", "))?;
    }
    if rule.delay > 0 {
        write!(f, " DELAY {}", interval(rule.delay))?;
    }
    if rule.repeat_every != DEFAULT_REPEAT {
        write!(f, " REPEAT EVERY {}", interval(rule.repeat_every))?;
    }
    if !rule.notify.is_empty() {
        write!(f, " NOTIFY {}", targets(&rule.notify))?;
    }
    write!(f, " AS {}", rule.query)
}

/// The statement as SQL that parses back to it.
impl fmt::Display for AlertStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertStatement::Create {
                rule,
                if_not_exists,
            } => {
                f.write_str("CREATE ALERT ")?;
                if *if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                write_rule(f, rule)
            }
            AlertStatement::Drop { name, if_exists } => {
                let if_exists = if *if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP ALERT {if_exists}{}", quote_ident(name))
            }
            AlertStatement::SetPaused { name, paused } => {
                let verb = if *paused { "PAUSE" } else { "RESUME" };
                write!(f, "ALTER ALERT {} {verb}", quote_ident(name))
            }
            AlertStatement::Show => f.write_str("SHOW ALERTS"),
            AlertStatement::Recalibrate { name } => {
                write!(f, "RECALIBRATE ALERT {}", quote_ident(name))
            }
            AlertStatement::Backtest {
                name,
                from,
                to,
                step,
            } => {
                write!(
                    f,
                    "BACKTEST ALERT {} FROM {} TO {}",
                    quote_ident(name),
                    time_bound(from),
                    time_bound(to)
                )?;
                if let Some(step) = step {
                    write!(f, " STEP {}", interval(*step))?;
                }
                Ok(())
            }
            AlertStatement::CreateSilence {
                ends,
                matchers,
                comment,
            } => {
                match ends {
                    SilenceEnd::After(micros) => {
                        write!(f, "CREATE SILENCE FOR {}", interval(*micros))?
                    }
                    SilenceEnd::Until(bound) => {
                        write!(f, "CREATE SILENCE UNTIL {}", time_bound(bound))?
                    }
                }
                write!(f, " WHERE {}", label_pairs(matchers, " AND "))?;
                if !comment.is_empty() {
                    write!(f, " COMMENT {}", quote_literal(comment))?;
                }
                Ok(())
            }
            AlertStatement::DropSilence { id } => write!(f, "DROP SILENCE {id}"),
        }
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
    fn statements_print_back_to_what_they_parse_from() {
        for sql in [
            "CREATE ALERT IF NOT EXISTS \"P99\" EVERY '1 minute' FOR '5 minutes' KEEP FIRING FOR '10 minutes'
               SEVERITY P0 WHEN value > 8000, SEVERITY P1 WHEN value >= -4000.5 NOTIFY 'http://a/b'
               RECOVER WHEN value < 3500 MIN SAMPLES 50 LABELS (team = 'it''s', \"Env\" = 'x')
               DELAY '1 minute 30 seconds' REPEAT EVERY '0' NOTIFY 'http://c/d', 'alertmanager://e:9093'
               AS SELECT 1 AS value -- trailing comment",
            "CREATE ALERT d EVERY '1 hour' SEVERITY P2 WHEN value < BASELINE(3.5 MAD OVER '14 days' STEP '1 day' MARGIN 10%) AS SELECT 1 AS value",
            "CREATE ALERT e EVERY '2 seconds 500 microseconds' SEVERITY P1 WHEN value <= BASELINE(2 SIGMA OVER '1 day') AS SELECT 1 AS value",
            "DROP ALERT IF EXISTS x",
            "ALTER ALERT \"A b\" RESUME",
            "SHOW ALERTS",
            "RECALIBRATE ALERT a",
            "BACKTEST ALERT a FROM '2025-01-01 00:00:00.000001' TO now() - interval '1 hour' STEP '5 minutes'",
            "CREATE SILENCE UNTIL '2025-01-02' WHERE model = 'x' AND alertname = 'a' COMMENT 'deploy ''7'' today'",
            "CREATE SILENCE FOR '2 hours' WHERE model = 'x'",
            "DROP SILENCE 12",
        ] {
            let parsed = parse(sql).expect("parses");
            let printed = parsed.to_string();
            assert_eq!(parse(&printed).expect("reparses"), parsed, "{printed}");
        }
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
        assert!(err("BACKTEST ALERT a FROM now()) TO now()").contains("one SQL expression"));
        assert!(err("BACKTEST ALERT a FROM (now() TO now()").contains("one SQL expression"));
        assert!(
            err("BACKTEST ALERT a FROM now(); DROP TABLE t TO now()")
                .contains("one SQL expression")
        );
        assert!(err("BACKTEST ALERT a FROM TO now()").contains("a time after FROM"));
    }
}
