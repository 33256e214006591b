//! Statements that other crates add to Lookout's SQL (`CREATE ALERT`, ...).
//!
//! An extension claims a statement by its text before the SQL parser sees it,
//! so its grammar is its own; whatever it needs from the database it asks for
//! in SQL through the [`Session`] it is given.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::sql::sqlparser::ast::Statement;

use crate::error::Result;
use crate::session::{Output, Session};

/// A family of statements handled outside the SQL planner.
#[async_trait]
pub trait SqlExtension: Send + Sync + Debug {
    /// Whether this extension handles `sql`: one statement, trimmed, without
    /// its final semicolon.
    fn claims(&self, sql: &str) -> bool;

    /// The columns the statement returns, if it returns rows (for Describe
    /// in the extended protocol).
    fn describe(&self, sql: &str) -> Result<Option<SchemaRef>>;

    /// What a session needs to run the statement (by default, admin).
    fn required_access(&self, _sql: &str) -> crate::Access {
        crate::Access::Admin
    }

    /// Runs the statement in `session`.
    async fn execute(&self, sql: &str, session: &mut Session) -> Result<Output>;
}

/// One statement of a query string, ready to run.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Statements are many and short-lived; boxing each buys nothing.
pub enum Command {
    /// A statement of Lookout's SQL dialect.
    Sql(Statement),
    /// A statement an extension claimed.
    Extension {
        /// The statement's text.
        sql: String,
        /// Who runs it.
        extension: Arc<dyn SqlExtension>,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Sql(s) => write!(f, "{s}"),
            Command::Extension { sql, .. } => f.write_str(sql),
        }
    }
}

/// Splits SQL text at top-level semicolons, respecting quotes, dollar quotes
/// and comments. Pieces are trimmed; empty ones are dropped.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                let quote = bytes[i];
                // E'...' strings escape with backslashes.
                let escapes = quote == b'\''
                    && i > 0
                    && matches!(bytes[i - 1], b'e' | b'E')
                    && (i < 2 || !(bytes[i - 2].is_ascii_alphanumeric() || bytes[i - 2] == b'_'));
                i += 1;
                while i < bytes.len() {
                    if escapes && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == quote {
                        // A doubled quote is an escaped one.
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                // $tag$ ... $tag$
                let tag_end = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map(|p| i + 1 + p);
                if let Some(end) = tag_end
                    && bytes[end] == b'$'
                    && !bytes[i + 1..end].first().is_some_and(u8::is_ascii_digit)
                {
                    let tag = &sql[i..=end];
                    match sql[end + 1..].find(tag) {
                        Some(close) => i = end + 1 + close + tag.len() - 1,
                        None => i = bytes.len(),
                    }
                }
            }
            b';' => {
                let piece = sql[start..i].trim();
                if !piece.is_empty() {
                    pieces.push(piece);
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let piece = sql.get(start..).unwrap_or("").trim();
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let sql = "SELECT 'a;b'; -- c;d\nSELECT \"x;\" FROM t; /* ; */ SELECT $$;$$ ;; SELECT $1";
        assert_eq!(
            split_statements(sql),
            vec![
                "SELECT 'a;b'",
                "-- c;d\nSELECT \"x;\" FROM t",
                "/* ; */ SELECT $$;$$",
                "SELECT $1"
            ]
        );
        assert_eq!(split_statements("  ;  "), Vec::<&str>::new());
        assert_eq!(split_statements("SELECT 'it''s;'"), vec!["SELECT 'it''s;'"]);
        assert_eq!(
            split_statements("SELECT E'it\\'s;'; SELECT 1"),
            vec!["SELECT E'it\\'s;'", "SELECT 1"]
        );
    }
}
