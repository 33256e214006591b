//! The SQL dialect Lookout parses: sqlparser's PostgreSQL dialect with two
//! precedences made PostgreSQL's, where sqlparser's gave a different
//! answer, silently:
//!
//! - sqlparser reads the right side of `IS DISTINCT FROM` as a whole
//!   expression, so `a IS DISTINCT FROM b AND c` became `a IS DISTINCT FROM
//!   (b AND c)`, where PostgreSQL reads `(a IS DISTINCT FROM b) AND c`
//!   (`IS` binds tighter than `NOT`, `AND` and `OR`, looser than
//!   comparisons);
//! - sqlparser lets `^` (and `AT TIME ZONE`) bind tighter than a unary
//!   minus, so `-2 ^ 2` was `-(2 ^ 2)` = -4, where PostgreSQL's unary minus
//!   binds tighter than both (only `.`, `::`, `[ ]` and `COLLATE` bind
//!   tighter): `(-2) ^ 2` = 4.

use datafusion::sql::sqlparser::ast::{Expr, UnaryOperator};
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// PostgreSQL as Lookout parses it; see the module's documentation.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Postgres;

/// Forwards methods without arguments to [`PostgreSqlDialect`].
macro_rules! as_postgres {
    ($($name:ident),* $(,)?) => {
        $(fn $name(&self) -> bool {
            PostgreSqlDialect {}.$name()
        })*
    };
}

impl Dialect for Postgres {
    /// The parser asks which dialect it reads in places; the answer is
    /// PostgreSQL's, so every such place reads as it does for PostgreSQL.
    fn dialect(&self) -> std::any::TypeId {
        std::any::TypeId::of::<PostgreSqlDialect>()
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        let op = match parser.peek_token_ref().token {
            Token::Minus => UnaryOperator::Minus,
            Token::Plus => UnaryOperator::Plus,
            _ => return None,
        };
        parser.next_token();
        Some(
            parser
                .parse_subexpr(self.prec_value(Precedence::AtTz))
                .map(|operand| Expr::UnaryOp {
                    op,
                    expr: Box::new(operand),
                }),
        )
    }

    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &Expr,
        _precedence: u8,
    ) -> Option<Result<Expr, ParserError>> {
        let negated = if parser.parse_keywords(&[Keyword::IS, Keyword::DISTINCT, Keyword::FROM]) {
            false
        } else if parser.parse_keywords(&[
            Keyword::IS,
            Keyword::NOT,
            Keyword::DISTINCT,
            Keyword::FROM,
        ]) {
            true
        } else {
            return None;
        };
        let right = match parser.parse_subexpr(self.prec_value(Precedence::Is)) {
            Ok(right) => Box::new(right),
            Err(e) => return Some(Err(e)),
        };
        let left = Box::new(expr.clone());
        Some(Ok(match negated {
            false => Expr::IsDistinctFrom(left, right),
            true => Expr::IsNotDistinctFrom(left, right),
        }))
    }

    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        PostgreSqlDialect {}.identifier_quote_style(identifier)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        PostgreSqlDialect {}.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        PostgreSqlDialect {}.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        PostgreSqlDialect {}.is_identifier_part(ch)
    }

    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        PostgreSqlDialect {}.is_reserved_for_identifier(kw)
    }

    fn is_custom_operator_part(&self, ch: char) -> bool {
        PostgreSqlDialect {}.is_custom_operator_part(ch)
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        PostgreSqlDialect {}.get_next_precedence(parser)
    }

    fn prec_value(&self, prec: Precedence) -> u8 {
        PostgreSqlDialect {}.prec_value(prec)
    }

    as_postgres!(
        supports_unicode_string_literal,
        supports_filter_during_aggregation,
        supports_group_by_expr,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_create_index_with_clause,
        supports_explain_with_utility_options,
        supports_listen_notify,
        supports_factorial_operator,
        supports_bitwise_shift_operators,
        supports_comment_on,
        supports_load_extension,
        supports_named_fn_args_with_colon_operator,
        supports_named_fn_args_with_expr_name,
        supports_empty_projections,
        supports_nested_comments,
        supports_string_escape_constant,
        supports_numeric_literal_underscores,
        supports_array_typedef_with_brackets,
        supports_geometric_types,
        supports_set_names,
        supports_alter_column_type_using,
        supports_notnull_operator,
        supports_interval_options,
        supports_insert_table_alias,
        supports_create_table_like_parenthesized,
        supports_select_wildcard_with_alias,
        supports_comma_separated_trim,
        supports_xml_expressions,
        supports_comment_optimizer_hint,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str, dialect: &dyn Dialect) -> String {
        Parser::parse_sql(dialect, sql)
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    /// The tree of `sql`'s one statement with its parentheses dropped.
    fn tree(sql: &str) -> String {
        use datafusion::sql::sqlparser::ast::visit_expressions_mut;
        let mut statements = Parser::parse_sql(&Postgres, sql).expect(sql);
        let _ = visit_expressions_mut(&mut statements, |expr| {
            while let Expr::Nested(inner) = expr {
                *expr = inner.as_ref().clone();
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        // Positions differ with the parentheses; everything else must not.
        let text = format!("{statements:?}");
        text.split("Location(")
            .map(|piece| piece.split_once(')').map_or(piece, |(_, rest)| rest))
            .collect()
    }

    #[test]
    fn operators_bind_as_in_postgres() {
        for (sql, same_as) in [
            (
                "SELECT a IS DISTINCT FROM b AND c",
                "SELECT (a IS DISTINCT FROM b) AND c",
            ),
            (
                "SELECT a IS NOT DISTINCT FROM b OR c AND d",
                "SELECT (a IS NOT DISTINCT FROM b) OR (c AND d)",
            ),
            (
                "SELECT x AND a IS DISTINCT FROM b OR c",
                "SELECT (x AND (a IS DISTINCT FROM b)) OR c",
            ),
            (
                "SELECT a IS DISTINCT FROM b + 1 = c",
                "SELECT a IS DISTINCT FROM ((b + 1) = c)",
            ),
            (
                "SELECT NOT a IS DISTINCT FROM b",
                "SELECT NOT (a IS DISTINCT FROM b)",
            ),
            (
                "SELECT a = b IS NOT DISTINCT FROM c",
                "SELECT (a = b) IS NOT DISTINCT FROM c",
            ),
            ("SELECT -2 ^ 2", "SELECT (-2) ^ 2"),
            ("SELECT - a ^ b * c", "SELECT ((-a) ^ b) * c"),
            ("SELECT -a::int ^ 2", "SELECT (-(a::int)) ^ 2"),
            ("SELECT -a[1] + b", "SELECT (-(a[1])) + b"),
            ("SELECT +a ^ 2 - -b", "SELECT ((+a) ^ 2) - (-b)"),
        ] {
            assert_eq!(tree(sql), tree(same_as), "{sql}");
            assert_ne!(tree(sql), tree(&sql.replace("SELECT ", "SELECT 0 + ")));
        }
    }

    #[test]
    fn everything_else_parses_as_with_postgres() {
        for sql in [
            "SELECT a::int, b->>'k', c @> d, e ~ 'x' FROM t WHERE f IS NULL AND g NOTNULL",
            "SELECT \"Mixed\", $1, E'\\n', U&'\\0041', 1_000 FROM t",
            "SELECT count(*) FILTER (WHERE x > 1) FROM t GROUP BY ROLLUP (a)",
            "COMMENT ON TABLE t IS 'x'",
            "LISTEN ch",
            "SELECT x COLLATE \"C\", arr[1], 5 !, 1 << 2",
        ] {
            assert_eq!(
                parsed(sql, &Postgres),
                parsed(sql, &PostgreSqlDialect {}),
                "{sql}"
            );
        }
    }
}
