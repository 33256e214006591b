//! Where DataFusion would answer a statement differently from PostgreSQL,
//! the statement is rewritten before planning (on the syntax tree) or after
//! (on the typed plan) so that it answers as PostgreSQL does, or refused
//! with `0A000`. Each rewrite is checked by the differential test against a
//! real PostgreSQL (tests/differential).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchemaRef, Result as DfResult};
use datafusion::logical_expr::{
    BinaryExpr, Cast, Expr as PlanExpr, ExprSchemable, LogicalPlan, Operator,
};
use datafusion::sql::sqlparser::ast::{
    self, Expr, Statement, TableAlias, TableAliasColumnDef, TableFactor, Value, Visit, VisitMut,
    Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{QueryError, Result};

/// Rewrites a statement's syntax tree before planning.
pub(crate) fn rewrite_statement(stmt: &mut Statement) -> Result<()> {
    refuse_silent_differences(stmt)?;
    name_function_columns(stmt);
    let _ = stmt.visit(&mut Literals);
    Ok(())
}

/// Rewrites a typed plan: casts of fractions to integers round, and a date
/// plus an interval is a timestamp.
pub(crate) fn rewrite_plan(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let schema: DFSchemaRef = match node.inputs().as_slice() {
            [input] => Arc::clone(input.schema()),
            _ => Arc::clone(node.schema()),
        };
        let rewritten = node.map_expressions(|e| e.transform_up(|e| typed_rewrite(e, &schema)))?;
        if rewritten.transformed {
            rewritten.map_data(|n| n.recompute_schema())
        } else {
            Ok(rewritten)
        }
    })
    .map(|t| t.data)
}

fn typed_rewrite(expr: PlanExpr, schema: &DFSchemaRef) -> DfResult<Transformed<PlanExpr>> {
    match &expr {
        // PostgreSQL rounds a fraction cast to an integer; DataFusion
        // truncates (3.7::int is 4, not 3).
        PlanExpr::Cast(Cast { expr: inner, field })
            if field.data_type().is_integer()
                && inner.get_type(schema).is_ok_and(|t| {
                    t.is_floating()
                        || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..))
                }) =>
        {
            let rounded = datafusion::functions::math::round().call(vec![inner.as_ref().clone()]);
            Ok(Transformed::yes(PlanExpr::Cast(Cast {
                expr: Box::new(rounded),
                field: Arc::clone(field),
            })))
        }
        // date ± interval is a timestamp in PostgreSQL; DataFusion keeps
        // the date and drops the time of day.
        PlanExpr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Plus | Operator::Minus)
                && left
                    .get_type(schema)
                    .is_ok_and(|t| matches!(t, DataType::Date32 | DataType::Date64))
                && right
                    .get_type(schema)
                    .is_ok_and(|t| matches!(t, DataType::Interval(_))) =>
        {
            let at_midnight = PlanExpr::Cast(Cast::new(
                left.clone(),
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ));
            Ok(Transformed::yes(PlanExpr::BinaryExpr(BinaryExpr::new(
                Box::new(at_midnight),
                *op,
                right.clone(),
            ))))
        }
        _ => Ok(Transformed::no(expr)),
    }
}

/// Timestamp literals in every form PostgreSQL reads (`'2025-01-01
/// 01:00+00'`, without seconds), and interval times a number.
struct Literals;

fn timestamp_type(data_type: &ast::DataType) -> Option<bool> {
    match data_type {
        ast::DataType::Timestamp(_, tz) => Some(!matches!(
            tz,
            ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone
        )),
        _ => None,
    }
}

/// The text of a timestamp in the one form DataFusion's parser reads.
fn canonical_timestamp(text: &str, with_zone: bool) -> Option<String> {
    let micros = crate::copy::parse_timestamp_micros(text)?;
    let at = chrono::DateTime::from_timestamp_micros(micros)?;
    Some(if with_zone {
        at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    })
}

fn is_interval(expr: &Expr) -> bool {
    match expr {
        Expr::Interval(_) => true,
        Expr::TypedString(t) => matches!(t.data_type, ast::DataType::Interval { .. }),
        Expr::Cast { data_type, .. } => matches!(data_type, ast::DataType::Interval { .. }),
        Expr::Nested(inner) => is_interval(inner),
        Expr::Function(f) => f.name.to_string().eq_ignore_ascii_case("interval_mul"),
        Expr::BinaryOp { left, op, right } => {
            matches!(op, ast::BinaryOperator::Plus | ast::BinaryOperator::Minus)
                && (is_interval(left) && is_interval(right))
        }
        _ => false,
    }
}

fn parse_expr(text: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .ok()?
        .parse_expr()
        .ok()
}

impl VisitorMut for Literals {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::TypedString(typed) => {
                if let Some(with_zone) = timestamp_type(&typed.data_type)
                    && let Value::SingleQuotedString(text) = &mut typed.value.value
                    && let Some(canonical) = canonical_timestamp(text, with_zone)
                {
                    *text = canonical;
                }
            }
            Expr::Cast {
                expr: inner,
                data_type,
                ..
            } => {
                if let Some(with_zone) = timestamp_type(data_type)
                    && let Expr::Value(v) = inner.as_mut()
                    && let Value::SingleQuotedString(text) = &mut v.value
                    && let Some(canonical) = canonical_timestamp(text, with_zone)
                {
                    *text = canonical;
                }
            }
            Expr::BinaryOp { left, op, right } => {
                let call = match op {
                    ast::BinaryOperator::Multiply if is_interval(left) && !is_interval(right) => {
                        Some(format!("interval_mul({left}, {right})"))
                    }
                    ast::BinaryOperator::Multiply if is_interval(right) && !is_interval(left) => {
                        Some(format!("interval_mul({right}, {left})"))
                    }
                    ast::BinaryOperator::Divide if is_interval(left) && !is_interval(right) => {
                        Some(format!(
                            "interval_mul({left}, 1.0 / CAST({right} AS DOUBLE PRECISION))"
                        ))
                    }
                    _ => None,
                };
                if let Some(rewritten) = call.as_deref().and_then(parse_expr) {
                    *expr = rewritten;
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Functions in `FROM` that return one column, which PostgreSQL names
/// after the function's alias: `unnest(a) AS x` and
/// `generate_series(0, 23) AS g` have a column `x` and `g`.
const ONE_COLUMN_FUNCTIONS: &[&str] = &["unnest", "generate_series", "range"];

/// Gives a one-column function in `FROM` with an alias but no column list
/// its alias as the column's name, as PostgreSQL does.
fn name_function_columns(stmt: &mut Statement) {
    fn name_column(alias: &mut Option<TableAlias>) {
        if let Some(alias) = alias
            && alias.columns.is_empty()
        {
            alias.columns = vec![TableAliasColumnDef::from_name(alias.name.value.clone())];
        }
    }

    struct Namer;
    impl VisitorMut for Namer {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            match factor {
                TableFactor::UNNEST {
                    alias,
                    array_exprs,
                    with_offset: false,
                    with_ordinality: false,
                    ..
                } if array_exprs.len() == 1 => name_column(alias),
                TableFactor::Table {
                    name,
                    args: Some(_),
                    alias,
                    ..
                } if name.0.len() == 1
                    && ONE_COLUMN_FUNCTIONS
                        .iter()
                        .any(|f| name.to_string().eq_ignore_ascii_case(f)) =>
                {
                    name_column(alias)
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Namer);
}

/// Refuses what Lookout would otherwise answer differently from
/// PostgreSQL without a word: `TABLESAMPLE` (DataFusion reads every row).
fn refuse_silent_differences(stmt: &Statement) -> Result<()> {
    let returning = match stmt {
        Statement::Insert(insert) if insert.on.is_some() => {
            return Err(QueryError::unsupported(
                "INSERT ... ON CONFLICT is not supported; Lookout tables take appends only",
            ));
        }
        Statement::Insert(insert) => insert.returning.is_some(),
        Statement::Update(update) => update.returning.is_some(),
        Statement::Delete(delete) => delete.returning.is_some(),
        _ => false,
    };
    if returning {
        return Err(QueryError::unsupported(
            "RETURNING is not supported; query the rows after the write",
        ));
    }
    struct Finder;
    impl Visitor for Finder {
        type Break = &'static str;
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<&'static str> {
            match factor {
                TableFactor::Table {
                    sample: Some(_), ..
                } => ControlFlow::Break(
                    "TABLESAMPLE is not supported; sample with WHERE sample_hash(key) < fraction, or random() < fraction",
                ),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    match stmt.visit(&mut Finder) {
        ControlFlow::Break(message) => Err(QueryError::unsupported(message)),
        ControlFlow::Continue(()) => Ok(()),
    }
}
