//! The review queue statements, parsed with the core's grammar kit
//! ([`Words`]).

use std::fmt;

use lookout_query::SqlState;
use lookout_query::ext::{
    Words, format_duration, leading_words, quote_ident, quote_literal, quoted_table, table_name,
};
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
    let words = leading_words(sql, 3);
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["CREATE", "REVIEW", "QUEUE"]
            | ["DROP", "REVIEW", "QUEUE"]
            | ["SHOW", "REVIEW", "QUEUES"]
            | ["ENQUEUE", "INTO", ..]
            | ["CLAIM", ..]
            | ["SUBMIT", "REVIEW", ..]
            | ["RELEASE", "REVIEW", ..]
    )
}

fn syntax(message: impl Into<String>) -> QueryError {
    QueryError::syntax(message)
}

/// A table as SQL names it (`calls`, `public.calls`, `lookout.labels`),
/// as its storage name.
fn table(t: &mut Words<'_>) -> Result<String> {
    table_name(&t.parse_with(|p| p.parse_object_name(false))?)
}

/// `[AS 'reviewer']` at the end of a statement.
fn reviewer(t: &mut Words<'_>) -> Result<Option<String>> {
    if t.eat_word("as") {
        Ok(Some(t.string("the reviewer in quotes")?))
    } else {
        Ok(None)
    }
}

/// A query that ends the statement (`ENQUEUE INTO q <query>`, `ENQUEUE
/// EVERY ... AS <query>`), kept as written.
fn query(t: &mut Words<'_>, missing: &str) -> Result<String> {
    match t.rest() {
        "" => Err(syntax(missing)),
        q => Ok(q.to_string()),
    }
}

/// Parses one review statement.
pub(crate) fn parse(sql: &str) -> Result<Statement> {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    let mut t = Words::new(trimmed)?;
    let statement = if t.eat_word("enqueue") {
        t.expect_word("into")?;
        let name = t.name()?;
        let query = query(
            &mut t,
            "ENQUEUE INTO needs a query returning the items' keys",
        )?;
        Statement::Enqueue { name, query }
    } else if t.eat_words(&["create", "review", "queue"]) {
        let if_not_exists = t.eat_words(&["if", "not", "exists"]);
        let name = t.name()?;
        t.expect_word("on")?;
        let source = table(&mut t)?;
        t.expect_word("key")?;
        let key = t.name()?;
        let mut labels = "feedback".to_string();
        let mut lease = DEFAULT_LEASE;
        let mut rule = None;
        loop {
            if t.eat_word("labels") {
                t.expect_word("into")?;
                labels = table(&mut t)?;
            } else if t.eat_word("lease") {
                lease = parse_duration(&t.string("the lease in quotes")?)?;
            } else if t.eat_words(&["enqueue", "every"]) {
                let every =
                    parse_duration(&t.string("an interval in quotes after ENQUEUE EVERY")?)?;
                t.expect_word("as")?;
                let query = query(&mut t, "ENQUEUE EVERY needs AS <query>")?;
                rule = Some((every, query));
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
    } else if t.eat_words(&["drop", "review", "queue"]) {
        let if_exists = t.eat_words(&["if", "exists"]);
        Statement::Drop {
            name: t.name()?,
            if_exists,
        }
    } else if t.eat_words(&["show", "review", "queues"]) {
        Statement::Show
    } else if t.eat_word("claim") {
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
        t.expect_word("from")?;
        let name = t.name()?;
        Statement::Claim {
            name,
            count: count as usize,
            reviewer: reviewer(&mut t)?,
        }
    } else if t.eat_words(&["submit", "review"]) {
        let name = t.name()?;
        let item = t.string("the item in quotes")?;
        let mut value = None;
        let mut label = None;
        loop {
            if t.eat_word("value") {
                value = Some(t.number("the value")?);
            } else if t.eat_word("label") {
                label = Some(t.string("the label in quotes")?);
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
            reviewer: reviewer(&mut t)?,
        }
    } else if t.eat_words(&["release", "review"]) {
        let name = t.name()?;
        let item = t.string("the item in quotes")?;
        Statement::Release {
            name,
            item,
            reviewer: reviewer(&mut t)?,
        }
    } else {
        return Err(syntax(format!("not a review statement: \"{trimmed}\"")));
    };
    t.expect_end()?;
    Ok(statement)
}

/// `[AS 'reviewer']`.
fn as_reviewer(reviewer: &Option<String>) -> String {
    reviewer
        .as_ref()
        .map(|r| format!(" AS {}", quote_literal(r)))
        .unwrap_or_default()
}

/// The statement as SQL that parses back to it.
impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::Create {
                name,
                if_not_exists,
                source,
                key,
                labels,
                lease,
                rule,
            } => {
                let if_not_exists = if *if_not_exists { "IF NOT EXISTS " } else { "" };
                write!(
                    f,
                    "CREATE REVIEW QUEUE {if_not_exists}{} ON {} KEY {} LABELS INTO {} LEASE {}",
                    quote_ident(name),
                    quoted_table(source),
                    quote_ident(key),
                    quoted_table(labels),
                    quote_literal(&format_duration(*lease)),
                )?;
                if let Some((every, query)) = rule {
                    let every = quote_literal(&format_duration(*every));
                    write!(f, " ENQUEUE EVERY {every} AS {query}")?;
                }
                Ok(())
            }
            Statement::Drop { name, if_exists } => {
                let if_exists = if *if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP REVIEW QUEUE {if_exists}{}", quote_ident(name))
            }
            Statement::Enqueue { name, query } => {
                write!(f, "ENQUEUE INTO {} {query}", quote_ident(name))
            }
            Statement::Claim {
                name,
                count,
                reviewer,
            } => write!(
                f,
                "CLAIM {count} FROM {}{}",
                quote_ident(name),
                as_reviewer(reviewer)
            ),
            Statement::Submit {
                name,
                item,
                value,
                label,
                reviewer,
            } => {
                write!(
                    f,
                    "SUBMIT REVIEW {} {}",
                    quote_ident(name),
                    quote_literal(item)
                )?;
                if let Some(v) = value {
                    write!(f, " VALUE {v}")?;
                }
                if let Some(l) = label {
                    write!(f, " LABEL {}", quote_literal(l))?;
                }
                f.write_str(&as_reviewer(reviewer))
            }
            Statement::Release {
                name,
                item,
                reviewer,
            } => write!(
                f,
                "RELEASE REVIEW {} {}{}",
                quote_ident(name),
                quote_literal(item),
                as_reviewer(reviewer)
            ),
            Statement::Show => f.write_str("SHOW REVIEW QUEUES"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_print_back_to_what_they_parse_from() {
        for sql in [
            "CREATE REVIEW QUEUE IF NOT EXISTS \"Support\" ON public.calls KEY request_id LABELS INTO lookout.labels LEASE '10 minutes' ENQUEUE EVERY '5 minutes' AS SELECT request_id FROM calls",
            "CREATE REVIEW QUEUE q ON calls KEY k",
            "DROP REVIEW QUEUE IF EXISTS q",
            "ENQUEUE INTO q SELECT 'a;b'",
            "CLAIM 3 FROM q AS 'ann o''neil'",
            "CLAIM FROM q",
            "SUBMIT REVIEW q 'req-1' VALUE -1.5 LABEL 'wrong' AS 'bo'",
            "SUBMIT REVIEW q 'req-1' LABEL 'ok'",
            "RELEASE REVIEW q 'x'",
            "SHOW REVIEW QUEUES",
        ] {
            let parsed = parse(sql).expect("parses");
            let printed = parsed.to_string();
            assert_eq!(parse(&printed).expect("reparses"), parsed, "{printed}");
        }
    }

    #[test]
    fn tables_are_named_as_sql_resolves_them() {
        match parse("CREATE REVIEW QUEUE q ON public.\"Calls\" KEY k LABELS INTO lookout.verdicts")
        {
            Ok(Statement::Create { source, labels, .. }) => {
                assert_eq!(source, "Calls");
                assert_eq!(labels, "lookout.verdicts");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse("CREATE REVIEW QUEUE q ON nowhere.calls KEY k").is_err());
    }

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
