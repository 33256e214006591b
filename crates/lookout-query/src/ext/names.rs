//! Names, strings and expressions as SQL text, for every statement Lookout
//! builds, and relation names as PostgreSQL folds them.

use crate::pg::dialect::Postgres;
use datafusion::sql::sqlparser::ast::{Ident, ObjectName};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::SqlState;
use crate::error::{QueryError, Result};

/// The storage name prefix of the tables in the `lookout` schema (the
/// system tables extensions keep their state in).
pub const SYSTEM_PREFIX: &str = "lookout.";

/// Name of a relation as Postgres folds it: unquoted identifiers lowercase.
pub fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The storage name of a table as SQL names it: `t`, `public.t` and
/// `lookout.public.t` are `t`; `lookout.t` is a system table.
pub fn table_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(ident_name))
        .collect();
    match parts.as_slice() {
        [t] => Ok(t.clone()),
        [s, t] if s == "public" => Ok(t.clone()),
        [c, s, t] if (c == "lookout") && s == "public" => Ok(t.clone()),
        [s, t] | [_, s, t] if s == "lookout" => Ok(format!("{SYSTEM_PREFIX}{t}")),
        _ => Err(QueryError::new(
            SqlState::InvalidSchemaName,
            format!("schema of \"{name}\" does not exist"),
        )),
    }
}

/// A storage table name as SQL that resolves to it.
pub fn quoted_table(name: &str) -> String {
    match name.strip_prefix(SYSTEM_PREFIX) {
        Some(t) => format!("lookout.{}", quote_ident(t)),
        None => quote_ident(name),
    }
}

/// An identifier as SQL text: double-quoted, with inner quotes doubled.
/// Every identifier Lookout pastes into SQL it builds goes through here.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string as an SQL literal: single-quoted, with inner quotes doubled.
/// Every string Lookout pastes into SQL it builds goes through here.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `text` as exactly one SQL expression, printed back from its syntax tree,
/// for pasting into a statement Lookout builds (`SELECT CAST((...) AS
/// timestamptz)`): anything more than one expression (a `)` that closes the
/// surrounding call, a `;` and another statement) is a syntax error (42601).
pub fn one_expression(text: &str) -> Result<String> {
    let invalid = |why: String| QueryError::syntax(format!("not one SQL expression: {why}"));
    let mut parser = Parser::new(&Postgres)
        .try_with_sql(text)
        .map_err(|e| invalid(e.to_string()))?;
    let expr = parser.parse_expr().map_err(|e| invalid(e.to_string()))?;
    match parser.peek_token().token {
        Token::EOF => Ok(expr.to_string()),
        other => Err(invalid(format!("unexpected {other} after it"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote_ident(r#"q"t"#), r#""q""t""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn one_expression_is_one_expression() {
        assert_eq!(
            one_expression("now() - interval '1 day'").expect("valid"),
            "now() - INTERVAL '1 day'"
        );
        for bad in [
            "now()) AS timestamptz); DROP TABLE t; SELECT ((1",
            "1; DROP TABLE t",
            "1 AS x",
            "",
        ] {
            let e = one_expression(bad).expect_err(bad);
            assert_eq!(e.sqlstate(), "42601", "{bad}");
        }
    }
}
