//! The grammar kit of extension statements: a cursor over the tokens of
//! PostgreSQL's lexical rules (sqlparser's tokenizer, so quoting, comments,
//! escapes and numbers are read exactly as in the rest of Lookout's SQL).
//!
//! An extension's grammar is a recursive-descent parser over [`Words`]:
//!
//! ```
//! use lookout_query::ext::Words;
//!
//! let mut w = Words::new("PAUSE QUEUE \"Triage\" FOR '2 hours'").unwrap();
//! assert!(w.eat_words(&["PAUSE", "QUEUE"]));
//! assert_eq!(w.name().unwrap(), "Triage");
//! w.expect_word("FOR").unwrap();
//! assert_eq!(w.duration("FOR").unwrap(), 7_200_000_000);
//! w.expect_end().unwrap();
//! ```

use crate::pg::dialect::Postgres;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{QueryError, Result, SqlState};
use crate::ext::interval::parse_non_negative_duration;

/// One token of an extension statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// A keyword or identifier; `quoted` when written in double quotes
    /// (then `text` is the identifier as written, inner quotes undoubled).
    Word {
        /// The word as written.
        text: String,
        /// Written in double quotes.
        quoted: bool,
    },
    /// A string literal (`'...'`, `E'...'`, `$$...$$`), its value.
    Str(String),
    /// A number as written, unsigned.
    Number(String),
    /// Any other token, as SQL prints it (`(`, `>=`, `::`, `%`).
    Symbol(String),
}

impl Piece {
    /// The piece as an error message shows it.
    pub fn describe(&self) -> String {
        match self {
            Piece::Word { text, .. } => format!("\"{text}\""),
            Piece::Str(s) => format!("'{s}'"),
            Piece::Number(n) => n.clone(),
            Piece::Symbol(s) => format!("\"{s}\""),
        }
    }

    /// Whether this is the unquoted word `word` (any case).
    pub fn is_word(&self, word: &str) -> bool {
        matches!(self, Piece::Word { text, quoted: false } if text.eq_ignore_ascii_case(word))
    }

    /// Whether this is the symbol `symbol`.
    pub fn is_symbol(&self, symbol: &str) -> bool {
        matches!(self, Piece::Symbol(s) if s == symbol)
    }
}

/// The dialect every extension statement is read in.
static DIALECT: Postgres = Postgres;

/// A cursor over the tokens of one statement, each with its byte offset in
/// the text (so a grammar can hand a clause on as SQL text, unparsed).
pub struct Words<'a> {
    sql: &'a str,
    tokens: Vec<(Piece, usize)>,
    /// sqlparser's parser over the same tokens, one per piece, kept in step
    /// with the cursor by [`Words::parse_with`] (so reading many clauses
    /// never copies the statement's tokens).
    parser: Parser<'static>,
    pos: usize,
}

impl std::fmt::Debug for Words<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Words")
            .field("sql", &self.sql)
            .field("pos", &self.pos)
            .finish()
    }
}

fn syntax(message: impl Into<String>) -> QueryError {
    QueryError::new(SqlState::SyntaxError, message)
}

impl<'a> Words<'a> {
    /// Tokenizes `sql`; comments and whitespace are dropped. An unterminated
    /// string, quoted identifier or comment is a syntax error (42601).
    pub fn new(sql: &'a str) -> Result<Words<'a>> {
        let spans = Tokenizer::new(&DIALECT, sql)
            .tokenize_with_location()
            .map_err(|e| syntax(e.to_string()))?;
        let lines = line_starts(sql);
        let mut tokens = Vec::with_capacity(spans.len());
        let mut raw = Vec::with_capacity(spans.len());
        for t in spans {
            let piece = match t.token.clone() {
                Token::Whitespace(_) | Token::EOF => continue,
                Token::Word(w) => Piece::Word {
                    text: w.value,
                    quoted: w.quote_style.is_some(),
                },
                Token::SingleQuotedString(s)
                | Token::EscapedStringLiteral(s)
                | Token::NationalStringLiteral(s) => Piece::Str(s),
                Token::DollarQuotedString(s) => Piece::Str(s.value),
                Token::Number(n, _) => Piece::Number(n),
                other => Piece::Symbol(other.to_string()),
            };
            let at = byte_offset(sql, &lines, t.span.start.line, t.span.start.column);
            tokens.push((piece, at));
            raw.push(t);
        }
        Ok(Words {
            sql,
            tokens,
            parser: Parser::new(&DIALECT).with_tokens_with_locations(raw),
            pos: 0,
        })
    }

    /// The whole statement text.
    pub fn sql(&self) -> &'a str {
        self.sql
    }

    /// The next token.
    pub fn peek(&self) -> Option<&Piece> {
        self.peek_at(0)
    }

    /// The token `k` places after the next one.
    pub fn peek_at(&self, k: usize) -> Option<&Piece> {
        self.tokens.get(self.pos + k).map(|(p, _)| p)
    }

    /// Moves past the next token.
    pub fn advance(&mut self) {
        self.pos = (self.pos + 1).min(self.tokens.len());
    }

    /// Whether every token has been read.
    pub fn at_end(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    /// Byte offset of the next token in the text (its length at the end).
    pub fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.sql.len(), |&(_, at)| at)
    }

    /// Whether the next token is the unquoted word `word` (any case).
    pub fn peek_word(&self, word: &str) -> bool {
        self.peek().is_some_and(|p| p.is_word(word))
    }

    /// Whether the next tokens are the unquoted words `words`.
    pub fn peek_words(&self, words: &[&str]) -> bool {
        words
            .iter()
            .enumerate()
            .all(|(k, w)| self.peek_at(k).is_some_and(|p| p.is_word(w)))
    }

    /// Reads the word `word` if it is next.
    pub fn eat_word(&mut self, word: &str) -> bool {
        self.eat_words(&[word])
    }

    /// Reads the words `words` if they are next, all of them or none.
    pub fn eat_words(&mut self, words: &[&str]) -> bool {
        let found = self.peek_words(words);
        if found {
            self.pos += words.len();
        }
        found
    }

    /// Reads the word `word`, or fails naming it.
    pub fn expect_word(&mut self, word: &str) -> Result<()> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.unexpected(word))
        }
    }

    /// Reads the symbol `symbol` if it is next.
    pub fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = self.peek().is_some_and(|p| p.is_symbol(symbol));
        if found {
            self.pos += 1;
        }
        found
    }

    /// Reads the symbol `symbol`, or fails naming it.
    pub fn expect_symbol(&mut self, symbol: &str) -> Result<()> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{symbol}\"")))
        }
    }

    /// A syntax error (42601): `expected <wanted>, found <next token>`.
    pub fn unexpected(&self, wanted: &str) -> QueryError {
        match self.peek() {
            Some(p) => syntax(format!("expected {wanted}, found {}", p.describe())),
            None => syntax(format!("expected {wanted} at the end of the statement")),
        }
    }

    /// An identifier as PostgreSQL folds it: unquoted lowercase, quoted as
    /// written.
    pub fn name(&mut self) -> Result<String> {
        match self.peek() {
            Some(Piece::Word { text, quoted }) => {
                let name = if *quoted {
                    text.clone()
                } else {
                    text.to_lowercase()
                };
                self.pos += 1;
                Ok(name)
            }
            _ => Err(self.unexpected("a name")),
        }
    }

    /// A dotted name (`lookout.triage`), each part folded as [`Words::name`]
    /// folds it, joined with dots.
    pub fn dotted_name(&mut self) -> Result<String> {
        let mut parts = vec![self.name()?];
        while self.peek().is_some_and(|p| p.is_symbol("."))
            && matches!(self.peek_at(1), Some(Piece::Word { .. }))
        {
            self.pos += 1;
            parts.push(self.name()?);
        }
        Ok(parts.join("."))
    }

    /// A string literal's value; `what` names it in the error.
    pub fn string(&mut self, what: &str) -> Result<String> {
        match self.peek() {
            Some(Piece::Str(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    /// A number, with an optional leading minus; `what` names it in the
    /// error.
    pub fn number(&mut self, what: &str) -> Result<f64> {
        let start = self.pos;
        let negative = self.eat_symbol("-");
        let Some(Piece::Number(text)) = self.peek() else {
            self.pos = start;
            return Err(self.unexpected(what));
        };
        let n = text
            .replace('_', "")
            .parse::<f64>()
            .map_err(|_| syntax(format!("invalid number \"{text}\"")))?;
        self.pos += 1;
        Ok(if negative { -n } else { n })
    }

    /// A non-negative interval in quotes (`'5 minutes'`) in microseconds;
    /// `clause` names where it stands in the error.
    pub fn duration(&mut self, clause: &str) -> Result<i64> {
        let text = self.string(&format!("an interval in quotes after {clause}"))?;
        parse_non_negative_duration(&text)
    }

    /// The rest of the statement as written, from the next token on, with
    /// the cursor moved to the end.
    pub fn rest(&mut self) -> &'a str {
        let at = self.offset();
        self.pos = self.tokens.len();
        self.sql[at..].trim()
    }

    /// The text from the next token up to the first token outside
    /// parentheses for which `stop` holds, or the end, as written; the
    /// cursor moves there. The text is not checked: a grammar that pastes
    /// it into SQL checks it is one expression (`one_expression`).
    pub fn text_until(&mut self, stop: impl Fn(&Piece) -> bool) -> &'a str {
        let start = self.offset();
        let mut depth = 0i32;
        while let Some(p) = self.peek() {
            if depth <= 0 && stop(p) {
                break;
            }
            if p.is_symbol("(") {
                depth += 1;
            } else if p.is_symbol(")") {
                depth -= 1;
            }
            self.pos += 1;
        }
        self.sql[start..self.offset()].trim()
    }

    /// Reads one production of sqlparser's grammar from the next token on
    /// (an expression, an identifier, a literal) and moves past it: a
    /// grammar's clauses that are SQL are parsed as SQL.
    pub fn parse_with<T>(
        &mut self,
        production: impl FnOnce(&mut Parser<'_>) -> std::result::Result<T, ParserError>,
    ) -> Result<T> {
        // The cursor moves on its own between clauses; bring the parser to
        // it (there is no whitespace among these tokens, so one step is one
        // token either way).
        while self.parser.index() < self.pos {
            self.parser.advance_token();
        }
        while self.parser.index() > self.pos {
            self.parser.prev_token();
        }
        let value = production(&mut self.parser).map_err(|e| syntax(e.to_string()))?;
        self.pos = self.parser.index().min(self.tokens.len());
        Ok(value)
    }

    /// Fails unless every token has been read.
    pub fn expect_end(&self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(p) => Err(syntax(format!(
                "unexpected {} at the end of the statement",
                p.describe()
            ))),
        }
    }
}

/// The first `max` unquoted words of `sql` in upper case, after comments
/// and whitespace; stops at the first token that is not such a word. For
/// an extension's `parse` to decide cheaply whether a statement is its own.
pub fn leading_words(sql: &str, max: usize) -> Vec<String> {
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

/// Byte offsets at which the lines of `sql` start.
fn line_starts(sql: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// The byte offset of a tokenizer location (1-based line, 1-based column
/// counted in characters).
fn byte_offset(sql: &str, lines: &[usize], line: u64, column: u64) -> usize {
    let Some(&start) = usize::try_from(line)
        .ok()
        .and_then(|l| l.checked_sub(1))
        .and_then(|l| lines.get(l))
    else {
        return sql.len();
    };
    let skip = usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX);
    sql[start..]
        .char_indices()
        .nth(skip)
        .map_or(sql.len(), |(i, _)| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_lines_and_multibyte_characters() {
        let sql = "CREATE ALERT 'é'\n  AS SELECT 1";
        let mut w = Words::new(sql).expect("tokenizes");
        assert!(w.eat_words(&["create", "alert"]));
        assert_eq!(w.string("a string").expect("string"), "é");
        assert!(w.peek_word("AS"));
        assert_eq!(&sql[w.offset()..w.offset() + 2], "AS");
        w.advance();
        assert_eq!(w.rest(), "SELECT 1");
        assert!(w.at_end());
    }

    #[test]
    fn names_fold_as_postgres_does() {
        let mut w = Words::new("Abc \"Abc\" lookout.\"Q\" -2.5e1 'it''s'").expect("tokenizes");
        assert_eq!(w.name().expect("name"), "abc");
        assert_eq!(w.name().expect("name"), "Abc");
        assert_eq!(w.dotted_name().expect("dotted"), "lookout.Q");
        assert_eq!(w.number("a number").expect("number"), -25.0);
        assert_eq!(w.string("a string").expect("string"), "it's");
        w.expect_end().expect("end");
    }

    #[test]
    fn errors_name_what_was_expected() {
        let mut w = Words::new("FROM x").expect("tokenizes");
        let e = w.expect_word("TO").expect_err("not TO");
        assert_eq!(e.sqlstate(), "42601");
        assert_eq!(e.to_string(), "expected TO, found \"FROM\"");
        assert!(w.eat_word("from"));
        assert!(w.number("a count").is_err());
        assert_eq!(w.name().expect("x"), "x");
        assert_eq!(
            w.string("a label").expect_err("end").to_string(),
            "expected a label at the end of the statement"
        );
        assert_eq!(
            Words::new("'open").expect_err("unterminated").sqlstate(),
            "42601"
        );
    }

    #[test]
    fn text_runs_to_a_stop_outside_parentheses() {
        let mut w =
            Words::new("now() - interval '1 day' TO date_trunc('hour', now()) STEP '1 hour'")
                .expect("tokenizes");
        assert_eq!(
            w.text_until(|p| p.is_word("TO")),
            "now() - interval '1 day'"
        );
        assert!(w.eat_word("TO"));
        assert_eq!(
            w.text_until(|p| p.is_word("STEP")),
            "date_trunc('hour', now())"
        );
        assert!(w.eat_word("STEP"));
        let mut w = Words::new("f(a TO b) TO c").expect("tokenizes");
        assert_eq!(w.text_until(|p| p.is_word("TO")), "f(a TO b)");
    }

    #[test]
    fn sql_clauses_are_parsed_by_sqlparser() {
        let mut w = Words::new("KEEP WHEN a > 1 AND b, WEIGHT w").expect("tokenizes");
        assert!(w.eat_words(&["keep", "when"]));
        let expr = w.parse_with(|p| p.parse_expr()).expect("expression");
        assert_eq!(expr.to_string(), "a > 1 AND b");
        w.expect_symbol(",").expect("comma");
        assert!(w.eat_word("weight"));
        assert_eq!(w.name().expect("name"), "w");
        w.expect_end().expect("end");
        let mut w = Words::new("KEEP WHEN )").expect("tokenizes");
        w.advance();
        w.advance();
        assert_eq!(
            w.parse_with(|p| p.parse_expr())
                .expect_err("no expression")
                .sqlstate(),
            "42601"
        );
    }

    #[test]
    fn leading_words_skip_comments() {
        assert_eq!(
            leading_words("-- note\n/* x */ show  alerts;", 4),
            vec!["SHOW", "ALERTS"]
        );
    }
}
