//! Where DataFusion would answer a statement differently from PostgreSQL,
//! the statement is rewritten before planning (on the syntax tree) or after
//! (on the typed plan) so that it answers as PostgreSQL does, or refused
//! with `0A000`. Each rewrite is checked by the differential test against a
//! real PostgreSQL (tests/differential).

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::pg::dialect::Postgres;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchemaRef, Result as DfResult};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    BinaryExpr, Cast, Expr as PlanExpr, ExprSchemable, LogicalPlan, Operator,
};
use datafusion::sql::sqlparser::ast::{
    self, Expr, Statement, TableAlias, TableAliasColumnDef, TableFactor, Value, Visit, VisitMut,
    Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{QueryError, Result};

/// Rewrites a statement's syntax tree before planning.
pub(crate) fn rewrite_statement(stmt: &mut Statement) -> Result<()> {
    refuse_silent_differences(stmt)?;
    name_function_columns(stmt);
    crate::json::rewrite_statement(stmt);
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
        if let LogicalPlan::Sort(sort) = &node {
            crate::json::refuse_json_order(sort.expr.iter().map(|s| &s.expr), &schema)?;
        }
        // Rewritten expressions keep their names, which the nodes above
        // refer to (`ORDER BY 1` sorts by the projected name).
        let names = NamePreserver::new(&node);
        let rewritten = node.map_expressions(|e| {
            let saved = names.save(&e);
            Ok(e.transform_up(|e| typed_rewrite(e, &schema))?
                .update_data(|e| saved.restore(e)))
        })?;
        // Recomputed even when only a child changed: a rewrite below can
        // change a column's type metadata (a JSON value cast to text).
        rewritten.map_data(|n| n.recompute_schema())
    })
    .map(|t| t.data)
}

fn typed_rewrite(expr: PlanExpr, schema: &DFSchemaRef) -> DfResult<Transformed<PlanExpr>> {
    if let Some(text) = crate::json::typed_rewrite(&expr, schema) {
        return Ok(Transformed::yes(text));
    }
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
        // PostgreSQL evaluates `x AND y` from the left and stops at a false
        // `x` (at a true one for OR), so `d <> 0 AND n / d > 1` never divides
        // by zero; DataFusion evaluates both sides on every row. So the
        // operands that can fail on the right side (divisors, logarithms'
        // arguments) are masked to NULL on the rows the left side decides.
        // The conjunction stays a conjunction (the left side still prunes
        // and pushes down), and a boolean CASE around the right side would
        // not do: the simplifier turns it back into AND/OR.
        PlanExpr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::And | Operator::Or) && can_fail_per_row(right) =>
        {
            let guard = match op {
                Operator::And => left.as_ref().clone().is_not_false(),
                _ => left.as_ref().clone().is_not_true(),
            };
            let masked = right
                .as_ref()
                .clone()
                .transform_up(|e| mask_failing_operands(e, &guard))?;
            Ok(Transformed::yes(PlanExpr::BinaryExpr(BinaryExpr::new(
                left.clone(),
                *op,
                Box::new(masked.data),
            ))))
        }
        // PostgreSQL refuses to divide a double precision by zero (22012);
        // DataFusion answers Infinity or NaN.
        PlanExpr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Divide | Operator::Modulo)
                && matches!(
                    (left.get_type(schema), right.get_type(schema)),
                    (Ok(l), Ok(r)) if (l.is_floating() || r.is_floating())
                        && (l.is_floating() || l.is_integer())
                        && (r.is_floating() || r.is_integer())
                ) =>
        {
            let checked =
                PlanExpr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                    crate::pg::functions::nonzero_divisor(),
                    vec![right.as_ref().clone()],
                ));
            Ok(Transformed::yes(PlanExpr::BinaryExpr(BinaryExpr::new(
                left.clone(),
                *op,
                Box::new(checked),
            ))))
        }
        // A double precision becomes text as PostgreSQL prints it (`1`,
        // not arrow's `1.0`): in casts, `||` and `concat`.
        PlanExpr::Cast(Cast { expr: inner, field })
            if matches!(
                field.data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            ) && inner.get_type(schema).is_ok_and(|t| t == DataType::Float64) =>
        {
            Ok(Transformed::yes(PlanExpr::Cast(Cast {
                expr: Box::new(float_text(inner)),
                field: Arc::clone(field),
            })))
        }
        // Reals and arrays too (`{0.1,2}`, not arrow's `[0.1, 2.0]`).
        PlanExpr::Cast(Cast { expr: inner, field })
            if matches!(
                field.data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            ) && inner.get_type(schema).is_ok_and(|t| {
                matches!(
                    t,
                    DataType::Float32
                        | DataType::List(_)
                        | DataType::LargeList(_)
                        | DataType::FixedSizeList(_, _)
                )
            }) =>
        {
            let input = inner.get_type(schema)?;
            let text =
                PlanExpr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                    Arc::new(crate::pg::functions::value_text(input)),
                    vec![inner.as_ref().clone()],
                ));
            Ok(Transformed::yes(PlanExpr::Cast(Cast {
                expr: Box::new(text),
                field: Arc::clone(field),
            })))
        }
        PlanExpr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::StringConcat,
            right,
        }) if [left, right]
            .iter()
            .any(|e| e.get_type(schema).is_ok_and(|t| t == DataType::Float64)) =>
        {
            let text = |e: &PlanExpr| match e.get_type(schema) {
                Ok(DataType::Float64) => float_text(e),
                _ => e.clone(),
            };
            Ok(Transformed::yes(PlanExpr::BinaryExpr(BinaryExpr::new(
                Box::new(text(left)),
                Operator::StringConcat,
                Box::new(text(right)),
            ))))
        }
        PlanExpr::ScalarFunction(f)
            if matches!(f.name(), "concat" | "concat_ws")
                && f.args
                    .iter()
                    .any(|e| e.get_type(schema).is_ok_and(|t| t == DataType::Float64)) =>
        {
            let mut texts = f.clone();
            texts.args = f
                .args
                .iter()
                .map(|e| match e.get_type(schema) {
                    Ok(DataType::Float64) => float_text(e),
                    _ => e.clone(),
                })
                .collect();
            Ok(Transformed::yes(PlanExpr::ScalarFunction(texts)))
        }
        // PostgreSQL refuses the logarithm of zero or of a negative number
        // (2201E); DataFusion answers -Infinity or NaN.
        PlanExpr::ScalarFunction(f)
            if matches!(f.name(), "ln" | "log" | "log10" | "log2")
                && !f.args.iter().any(is_log_argument) =>
        {
            let mut checked = f.clone();
            checked.args = f
                .args
                .iter()
                .map(|a| {
                    PlanExpr::ScalarFunction(
                        datafusion::logical_expr::expr::ScalarFunction::new_udf(
                            crate::pg::functions::log_argument(),
                            vec![a.clone()],
                        ),
                    )
                })
                .collect();
            Ok(Transformed::yes(PlanExpr::ScalarFunction(checked)))
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

fn float_text(expr: &PlanExpr) -> PlanExpr {
    PlanExpr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
        crate::pg::functions::float8_text(),
        vec![expr.clone()],
    ))
}

/// Whether evaluating `expr` can fail on some rows and not others: a
/// division or remainder (by zero), a logarithm's or division's check.
fn can_fail_per_row(expr: &PlanExpr) -> bool {
    expr.exists(|e| {
        Ok(match e {
            PlanExpr::BinaryExpr(b) => matches!(b.op, Operator::Divide | Operator::Modulo),
            PlanExpr::ScalarFunction(f) => {
                matches!(f.name(), "log_argument" | "mod")
            }
            _ => false,
        })
    })
    .unwrap_or(false)
}

/// `CASE WHEN guard THEN operand END` for each operand that can fail: the
/// divisor of a division or remainder, the arguments of a logarithm's check
/// and of `mod`. Only the rows the guard keeps are evaluated (DataFusion's
/// CASE evaluates its branch on those rows only).
fn mask_failing_operands(expr: PlanExpr, guard: &PlanExpr) -> DfResult<Transformed<PlanExpr>> {
    let mask = |e: &PlanExpr| datafusion::logical_expr::when(guard.clone(), e.clone()).end();
    Ok(match &expr {
        PlanExpr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Divide | Operator::Modulo) =>
        {
            Transformed::yes(PlanExpr::BinaryExpr(BinaryExpr::new(
                left.clone(),
                *op,
                Box::new(mask(right)?),
            )))
        }
        PlanExpr::ScalarFunction(f) if matches!(f.name(), "log_argument" | "mod") => {
            let mut masked = f.clone();
            masked.args = f.args.iter().map(mask).collect::<DfResult<_>>()?;
            Transformed::yes(PlanExpr::ScalarFunction(masked))
        }
        _ => Transformed::no(expr),
    })
}

fn is_log_argument(expr: &PlanExpr) -> bool {
    matches!(expr, PlanExpr::ScalarFunction(f) if f.name() == "log_argument")
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
    Parser::new(&Postgres)
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
            "RETURNING is supported on a top-level INSERT, UPDATE or DELETE only",
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

/// The name PostgreSQL gives an unaliased output column, where DataFusion
/// would name it differently (`count(*)` is `count`, `1 + 1` is
/// `?column?`); `None` keeps DataFusion's name (plain columns).
fn output_name(expr: &Expr) -> Option<String> {
    const ANONYMOUS: &str = "?column?";
    let name = match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => return None,
        Expr::Function(f) => {
            let last = f.name.0.last()?.as_ident()?;
            match last.value.to_lowercase() {
                // Not PostgreSQL functions: the rewrites of `x = ANY(array)`
                // (made when the statement is parsed) and of `interval * n`
                // (seen again when a prepared statement is planned anew).
                name if name == "array_contains" || name == "interval_mul" => ANONYMOUS.to_string(),
                _ if last.quote_style.is_some() => last.value.clone(),
                name => name,
            }
        }
        Expr::CompoundFieldAccess { root, .. } => match root.as_ref() {
            Expr::Identifier(id) => ident_text(id),
            other => output_name(other).or_else(|| column_name(other))?,
        },
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => match inner.as_ref() {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => return None,
            // A cast takes its operand's name, unless the operand has none
            // (an operator, a literal) or only a weak one (another cast, a
            // CASE): then the type's.
            Expr::Cast { .. } | Expr::TypedString(_) | Expr::Case { .. } => type_name(data_type)?,
            _ => match output_name(inner) {
                Some(name) if name != ANONYMOUS => name,
                _ => type_name(data_type)?,
            },
        },
        Expr::Nested(inner) => output_name(inner).unwrap_or_else(|| ANONYMOUS.to_string()),
        Expr::Collate { expr: inner, .. } => return output_name(inner),
        Expr::TypedString(t) => type_name(&t.data_type)?,
        Expr::Case { .. } => "case".to_string(),
        Expr::Extract { .. } => "extract".to_string(),
        Expr::Exists { .. } => "exists".to_string(),
        Expr::Array(_) => "array".to_string(),
        Expr::Interval(_) => "interval".to_string(),
        Expr::Ceil { .. } => "ceil".to_string(),
        Expr::Floor { .. } => "floor".to_string(),
        Expr::Position { .. } => "position".to_string(),
        Expr::Substring {
            shorthand: true, ..
        } => "substr".to_string(),
        Expr::Substring { .. } => "substring".to_string(),
        Expr::Trim { .. } => "btrim".to_string(),
        Expr::Overlay { .. } => "overlay".to_string(),
        Expr::AtTimeZone { .. } => "timezone".to_string(),
        Expr::Subquery(q) => match q.body.as_ref() {
            ast::SetExpr::Select(select) => match select.projection.first()? {
                ast::SelectItem::ExprWithAlias { alias, .. } => ident_text(alias),
                ast::SelectItem::UnnamedExpr(Expr::Identifier(id)) => ident_text(id),
                ast::SelectItem::UnnamedExpr(e) => output_name(e)?,
                _ => return None,
            },
            _ => return None,
        },
        Expr::Value(_)
        | Expr::BinaryOp { .. }
        | Expr::UnaryOp { .. }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNotFalse(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::InList { .. }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::AnyOp { .. }
        | Expr::AllOp { .. } => ANONYMOUS.to_string(),
        _ => return None,
    };
    Some(name)
}

/// PostgreSQL's name of a type, as it names a cast's column.
fn type_name(data_type: &ast::DataType) -> Option<String> {
    use ast::DataType as T;
    Some(
        match data_type {
            T::Int(_) | T::Integer(_) | T::Int4(_) => "int4",
            T::BigInt(_) | T::Int8(_) => "int8",
            T::SmallInt(_) | T::Int2(_) => "int2",
            T::DoublePrecision | T::Float8 | T::Double(_) => "float8",
            T::Real | T::Float4 => "float4",
            T::Text | T::Varchar(_) | T::String(_) => "text",
            T::Boolean | T::Bool => "bool",
            T::Date => "date",
            T::Numeric(_) | T::Decimal(_) => "numeric",
            T::Interval { .. } => "interval",
            T::JSON => "json",
            T::JSONB => "jsonb",
            T::Timestamp(_, tz) => match tz {
                ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone => "timestamp",
                _ => "timestamptz",
            },
            _ => return None,
        }
        .to_string(),
    )
}

/// A top-level SELECT's projection (of the first branch of a set
/// operation), if the statement is a query.
fn projection_mut(stmt: &mut Statement) -> Option<&mut Vec<ast::SelectItem>> {
    let Statement::Query(query) = stmt else {
        return None;
    };
    let mut body = query.body.as_mut();
    while let ast::SetExpr::SetOperation { left, .. } = body {
        body = left.as_mut();
    }
    match body {
        ast::SetExpr::Select(select) => Some(&mut select.projection),
        _ => None,
    }
}

/// Gives every output column of a query a distinct alias, for statements
/// DataFusion refuses because two columns would get the same name (`SELECT
/// v::text, v::int`, `SELECT 1 AS a, 2 AS a`); the client still sees
/// PostgreSQL's names, from [`output_names`] of the statement as written.
/// `false` if the statement is not such a query.
pub(crate) fn alias_output_columns(stmt: &mut Statement) -> bool {
    let Some(items) = projection_mut(stmt) else {
        return false;
    };
    for (i, item) in items.iter_mut().enumerate() {
        let expr = match item {
            ast::SelectItem::UnnamedExpr(expr) | ast::SelectItem::ExprWithAlias { expr, .. } => {
                expr.clone()
            }
            _ => continue,
        };
        *item = ast::SelectItem::ExprWithAlias {
            expr,
            alias: ast::Ident::with_quote('"', format!("?column{i}?")),
        };
    }
    true
}

/// The names PostgreSQL gives a query's output columns, one per select
/// item: `None` for one `*` or `t.*`, whose columns keep their names; empty
/// when the columns are not known from the syntax (two `*`s). They may
/// repeat (`SELECT 1, 2` has two `?column?`), which DataFusion's plans do
/// not allow, so they are applied to the schema sent to the client only.
pub(crate) fn output_names(stmt: &Statement) -> Vec<Option<String>> {
    let Statement::Query(query) = stmt else {
        return Vec::new();
    };
    let mut body = query.body.as_ref();
    // A set operation's columns are named by its first branch.
    while let ast::SetExpr::SetOperation { left, .. } = body {
        body = left.as_ref();
    }
    let ast::SetExpr::Select(select) = body else {
        return Vec::new();
    };
    let mut names = Vec::with_capacity(select.projection.len());
    for item in &select.projection {
        match item {
            ast::SelectItem::UnnamedExpr(e) => names.push(Some(
                output_name(e)
                    .or_else(|| column_name(e))
                    .unwrap_or_else(|| "?column?".to_string()),
            )),
            ast::SelectItem::ExprWithAlias { alias, .. } => names.push(Some(ident_text(alias))),
            // One `*` or `t.*` keeps the names of the columns it stands for.
            _ if !names.contains(&None) => names.push(None),
            _ => return Vec::new(),
        }
    }
    names
}

/// An identifier as PostgreSQL reads it: folded to lower case unless quoted.
fn ident_text(id: &ast::Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_lowercase(),
    }
}

/// The name of a plain column, or of a cast of one.
fn column_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(id) => Some(ident_text(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(ident_text),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => column_name(expr),
        _ => None,
    }
}
