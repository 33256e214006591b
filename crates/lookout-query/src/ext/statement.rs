//! Statements that other crates add to Lookout's SQL (`CREATE ALERT`,
//! `CREATE ROLLUP`, ...).
//!
//! An extension recognises its statements by their text before the SQL
//! parser sees them, so its grammar is its own: it parses a statement once
//! into a typed [`ExtStatement`], which knows the access it needs, the
//! columns it returns and how to run. Whatever it needs from the database it
//! asks for in SQL through the [`SqlSession`] it runs in (as DataFusion's
//! `TableProvider` sees its caller only through the `Session` trait).

use std::fmt::{Debug, Display};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;

use crate::error::Result;
use crate::ext::{Access, Output};

/// The session an extension's statement runs in: its SQL, with the
/// session's user, rights, settings and `now()`.
#[async_trait]
pub trait SqlSession: Send + Sync {
    /// Runs SQL (one or more statements) and returns the rows of the last.
    async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>>;

    /// Plans one query without running it.
    async fn logical_plan(&self, sql: &str) -> Result<LogicalPlan>;

    /// The columns one statement returns, planned as the extended
    /// protocol's Describe plans it (`None`: it returns no rows).
    async fn describe(&self, sql: &str) -> Result<Option<SchemaRef>>;

    /// Runs a plan made by [`SqlSession::logical_plan`].
    async fn execute_logical(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream>;

    /// The session's `now()`, in microseconds since the epoch (`SET
    /// lookout.now` or the database's clock).
    fn now_micros(&self) -> i64;

    /// Who is connected.
    fn user(&self) -> &str;
}

/// A family of statements handled outside the SQL planner.
pub trait SqlExtension: Send + Sync + Debug {
    /// Parses `sql` (one statement, trimmed, without its final semicolon)
    /// if it is one of this extension's statements: `None` hands it on to
    /// the next extension and then to the SQL parser; `Some(Err(_))` is
    /// a statement of this family that does not parse.
    fn parse(&self, sql: &str) -> Option<Result<Box<dyn ExtStatement>>>;
}

/// One statement an extension parsed, ready to run any number of times.
///
/// `Display` prints it back as SQL.
#[async_trait]
pub trait ExtStatement: Send + Sync + Debug + Display {
    /// What a session needs to run it.
    fn access(&self) -> Access;

    /// The columns it returns, if it returns rows (for Describe in the
    /// extended protocol).
    fn schema(&self) -> Option<SchemaRef> {
        None
    }

    /// Runs it in `session`.
    async fn execute(&self, session: &mut dyn SqlSession) -> Result<Output>;
}

/// One statement of a query string, ready to run.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Statements are many and short-lived; boxing each buys nothing.
pub enum Command {
    /// A statement of Lookout's SQL dialect.
    Sql(Statement),
    /// A statement an extension parsed.
    Extension(Arc<dyn ExtStatement>),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Sql(s) => write!(f, "{s}"),
            Command::Extension(s) => write!(f, "{s}"),
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
