//! The review queue statements, parsed with sqlparser's tokenizer.

use lookout_query::SqlState;
use lookout_query::{QueryError, Result, parse_duration};

/// One review queue statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Statement {
    /// `CREATE REVIEW QUEUE [IF NOT EXISTS] q ON table KEY column [LABELS INTO table]
    /// [LEASE 'interval'] [ENQUEUE EVERY 'interval' AS <query>]`
    Create {
        name: String,
        if_not_exists: bool,
        source: String,
        key: String,
        labels: String,
        lease: i64,
        /// A rule run on a schedule: (every, query).
        rule: Option<(i64, String)>,
    },
    /// `DROP REVIEW QUEUE [IF EXISTS] q`
    Drop { name: String, if_exists: bool },
    /// `ENQUEUE INTO q <query>`: the query's first column is the item key.
    Enqueue { name: String, query: String },
    /// `CLAIM [n] FROM q [AS 'reviewer']`
    Claim {
        name: String,
        count: usize,
        reviewer: Option<String>,
    },
    /// `SUBMIT REVIEW q 'item' VALUE v [LABEL 'text'] [AS 'reviewer']`
    Submit {
        name: String,
        item: String,
        value: Option<f64>,
        label: Option<String>,
        reviewer: Option<String>,
    },
    /// `RELEASE REVIEW q 'item' [AS 'reviewer']`
    Release {
        name: String,
        item: String,
        reviewer: Option<String>,
    },
    /// `SHOW REVIEW QUEUES`
    Show,
}

/// Default lease of a claimed item.
const DEFAULT_LEASE: i64 = 15 * 60 * 1_000_000;

/// Whether `sql` is a review statement.
pub(crate) fn is_review_statement(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(3)
        .map(str::to_ascii_lowercase)
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["create", "review", "queue"]
            | ["drop", "review", "queue"]
            | ["show", "review", "queues"]
            | ["enqueue", "into", ..]
            | ["claim", ..]
            | ["submit", "review", ..]
            | ["release", "review", ..]
    )
}

/// Words and literals of a statement.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(String),
}

struct Tokens {
    tokens: Vec<Token>,
    at: usize,
    sql: String,
}

fn syntax(message: impl Into<String>) -> QueryError {
    QueryError::syntax(message)
}

impl Tokens {
    /// Splits a statement into words, 'quoted' texts and numbers.
    fn new(sql: &str) -> Result<Tokens> {
        let mut tokens = Vec::new();
        let chars: Vec<char> = sql.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '\'' {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(syntax("unterminated quoted string")),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            text.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            text.push(*ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Text(text));
            } else if c == '"' {
                let end = chars[i + 1..]
                    .iter()
                    .position(|ch| *ch == '"')
                    .ok_or_else(|| syntax("unterminated quoted identifier"))?;
                tokens.push(Token::Word(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            } else if c.is_ascii_digit() || c == '-' || c == '.' {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                tokens.push(Token::Number(chars[start..i].iter().collect()));
            } else if c.is_alphanumeric() || c == '_' {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                tokens.push(Token::Word(word.to_lowercase()));
            } else {
                return Err(syntax(format!("unexpected \"{c}\" in review statement")));
            }
        }
        Ok(Tokens {
            tokens,
            at: 0,
            sql: sql.to_string(),
        })
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w == word)
    }

    fn keyword(&mut self, word: &str) -> bool {
        let found = self.peek_word(word);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(syntax(format!(
                "expected {} in \"{}\"",
                word.to_uppercase(),
                self.sql
            )))
        }
    }

    fn name(&mut self, what: &str) -> Result<String> {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) => {
                self.at += 1;
                Ok(w.clone())
            }
            _ => Err(syntax(format!("expected {what} in \"{}\"", self.sql))),
        }
    }

    fn text(&mut self, what: &str) -> Result<String> {
        match self.tokens.get(self.at) {
            Some(Token::Text(t)) => {
                self.at += 1;
                Ok(t.clone())
            }
            _ => Err(syntax(format!(
                "expected {what} as a quoted string in \"{}\"",
                self.sql
            ))),
        }
    }

    fn number(&mut self, what: &str) -> Result<f64> {
        match self.tokens.get(self.at) {
            Some(Token::Number(n)) => {
                self.at += 1;
                n.parse().map_err(|_| {
                    QueryError::new(
                        SqlState::InvalidTextRepresentation,
                        format!("invalid {what}: {n}"),
                    )
                })
            }
            _ => Err(syntax(format!("expected {what} in \"{}\"", self.sql))),
        }
    }

    fn reviewer(&mut self) -> Result<Option<String>> {
        if self.keyword("as") {
            Ok(Some(self.text("reviewer")?))
        } else {
            Ok(None)
        }
    }

    fn end(&self) -> Result<()> {
        match self.tokens.get(self.at) {
            None => Ok(()),
            Some(t) => Err(syntax(format!(
                "unexpected {t:?} at the end of \"{}\"",
                self.sql
            ))),
        }
    }
}

/// Parses one review statement.
pub(crate) fn parse(sql: &str) -> Result<Statement> {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    let lowered = trimmed.to_ascii_lowercase();
    if lowered.starts_with("enqueue") {
        // ENQUEUE INTO q <query>: only the head is ours.
        let mut words = trimmed.splitn(4, char::is_whitespace);
        let (_, into, name, query) = (words.next(), words.next(), words.next(), words.next());
        if !into.is_some_and(|w| w.eq_ignore_ascii_case("into")) {
            return Err(syntax("expected ENQUEUE INTO queue <query>"));
        }
        let name = name.ok_or_else(|| syntax("expected a queue name after ENQUEUE INTO"))?;
        let query = query
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .ok_or_else(|| syntax("ENQUEUE INTO needs a query returning the items' keys"))?;
        return Ok(Statement::Enqueue {
            name: name.trim_matches('"').to_lowercase(),
            query: query.to_string(),
        });
    }
    // A scheduled rule ends CREATE REVIEW QUEUE with a query, which is not ours to tokenize.
    let (head, rule) = match lowered.find(" enqueue every ") {
        Some(at) if lowered.starts_with("create") => (
            &trimmed[..at],
            Some(parse_rule(&trimmed[at + " enqueue every ".len()..])?),
        ),
        _ => (trimmed, None),
    };
    let mut t = Tokens::new(head)?;
    let statement = if t.keyword("create") {
        t.expect("review")?;
        t.expect("queue")?;
        let if_not_exists = t.keyword("if");
        if if_not_exists {
            t.expect("not")?;
            t.expect("exists")?;
        }
        let name = t.name("a queue name")?;
        t.expect("on")?;
        let source = t.name("the table reviewed")?;
        t.expect("key")?;
        let key = t.name("the key column")?;
        let mut labels = "feedback".to_string();
        let mut lease = DEFAULT_LEASE;
        loop {
            if t.keyword("labels") {
                t.expect("into")?;
                labels = t.name("the labels table")?;
            } else if t.keyword("lease") {
                lease = parse_duration(&t.text("the lease")?)?;
            } else {
                break;
            }
        }
        Statement::Create {
            name,
            if_not_exists,
            source,
            key,
            labels,
            lease,
            rule,
        }
    } else if t.keyword("drop") {
        t.expect("review")?;
        t.expect("queue")?;
        let if_exists = t.keyword("if");
        if if_exists {
            t.expect("exists")?;
        }
        Statement::Drop {
            name: t.name("a queue name")?,
            if_exists,
        }
    } else if t.keyword("show") {
        t.expect("review")?;
        t.expect("queues")?;
        Statement::Show
    } else if t.keyword("claim") {
        let count = if t.peek_word("from") {
            1.0
        } else {
            t.number("the number of items")?
        };
        if count < 1.0 || count.fract() != 0.0 || count > 10_000.0 {
            return Err(QueryError::new(
                SqlState::InvalidParameterValue,
                format!("CLAIM takes 1 to 10000 items, not {count}"),
            ));
        }
        t.expect("from")?;
        let name = t.name("a queue name")?;
        Statement::Claim {
            name,
            count: count as usize,
            reviewer: t.reviewer()?,
        }
    } else if t.keyword("submit") {
        t.expect("review")?;
        let name = t.name("a queue name")?;
        let item = t.text("the item")?;
        let mut value = None;
        let mut label = None;
        loop {
            if t.keyword("value") {
                value = Some(t.number("the value")?);
            } else if t.keyword("label") {
                label = Some(t.text("the label")?);
            } else {
                break;
            }
        }
        if value.is_none() && label.is_none() {
            return Err(syntax("SUBMIT REVIEW needs a VALUE, a LABEL or both"));
        }
        Statement::Submit {
            name,
            item,
            value,
            label,
            reviewer: t.reviewer()?,
        }
    } else if t.keyword("release") {
        t.expect("review")?;
        let name = t.name("a queue name")?;
        let item = t.text("the item")?;
        Statement::Release {
            name,
            item,
            reviewer: t.reviewer()?,
        }
    } else {
        return Err(syntax(format!("not a review statement: \"{trimmed}\"")));
    };
    t.end()?;
    Ok(statement)
}

/// `'interval' AS <query>` after `ENQUEUE EVERY`.
fn parse_rule(text: &str) -> Result<(i64, String)> {
    let text = text.trim_start();
    let bad = || syntax("expected ENQUEUE EVERY 'interval' AS <query>");
    let quoted = text.strip_prefix('\'').ok_or_else(bad)?;
    let end = quoted.find('\'').ok_or_else(bad)?;
    let every = parse_duration(&quoted[..end])?;
    let rest = quoted[end + 1..].trim_start();
    let query = rest
        .get(..2)
        .filter(|w| w.eq_ignore_ascii_case("as"))
        .and_then(|_| rest.get(2..))
        .filter(|q| q.starts_with(char::is_whitespace))
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .ok_or_else(bad)?;
    Ok((every, query.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_parse() {
        assert_eq!(
            parse("create review queue support on calls key request_id lease '10 minutes'").ok(),
            Some(Statement::Create {
                name: "support".into(),
                if_not_exists: false,
                source: "calls".into(),
                key: "request_id".into(),
                labels: "feedback".into(),
                lease: 600_000_000,
                rule: None,
            })
        );
        match parse(
            "CREATE REVIEW QUEUE q ON calls KEY request_id ENQUEUE EVERY '5 minutes' AS SELECT request_id FROM f WHERE v < 0",
        ) {
            Ok(Statement::Create { rule, .. }) => assert_eq!(
                rule,
                Some((
                    300_000_000,
                    "SELECT request_id FROM f WHERE v < 0".to_string()
                ))
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse("CLAIM 5 FROM support AS 'ann'").ok(),
            Some(Statement::Claim {
                name: "support".into(),
                count: 5,
                reviewer: Some("ann".into()),
            })
        );
        assert_eq!(
            parse("SUBMIT REVIEW support 'req-1' VALUE -1 LABEL 'it''s wrong'").ok(),
            Some(Statement::Submit {
                name: "support".into(),
                item: "req-1".into(),
                value: Some(-1.0),
                label: Some("it's wrong".into()),
                reviewer: None,
            })
        );
        assert_eq!(
            parse("ENQUEUE INTO support SELECT request_id FROM calls WHERE x = 'a;b'").ok(),
            Some(Statement::Enqueue {
                name: "support".into(),
                query: "SELECT request_id FROM calls WHERE x = 'a;b'".into(),
            })
        );
        for bad in [
            "CLAIM 0 FROM q",
            "CLAIM 2.5 FROM q",
            "SUBMIT REVIEW q 'x'",
            "CREATE REVIEW QUEUE q ON t",
            "RELEASE REVIEW q 'x' extra",
            "ENQUEUE INTO q",
            "CREATE REVIEW QUEUE q ON t KEY k ENQUEUE EVERY '1 minute' SELECT 1",
            "CREATE REVIEW QUEUE q ON t KEY k ENQUEUE EVERY 'soon' AS SELECT 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(is_review_statement("claim 3 from q"));
        assert!(!is_review_statement("create table q (x int)"));
    }
}
