//! PostgreSQL's `json` and `jsonb`: columns whose text is checked (json) or
//! normalized (jsonb) on every write, the operators and the functions
//! monitoring queries use on call metadata.
//!
//! - [`value`]: the JSON text itself (parse, print as jsonb, containment).
//! - [`functions`]: the SQL functions, and the column format the storage
//!   engine applies on writes.
//! - [`aggregates`]: `json_agg`, `jsonb_agg` and the `_object_agg` forms.
//! - here: registration, the operator planner and the syntax rewrites
//!   (`::jsonb` casts, set-returning functions as `unnest`).

mod aggregates;
mod functions;
mod value;

use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use crate::pg::dialect::Postgres;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{Expr as PlanExpr, ExprSchemable, ScalarUDF};
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
    Statement, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::SqlState;
use functions::{JsonFunction, Op};
pub use functions::{JsonKind, json_kind};

/// Every JSON function, by name.
static FUNCTIONS: LazyLock<Vec<Arc<ScalarUDF>>> = LazyLock::new(|| {
    use JsonKind::{Json, Jsonb};
    let f =
        |name: &str, op: Op, reads: Option<JsonKind>| Arc::new(JsonFunction::udf(name, op, reads));
    let mut all = vec![
        f("json", Op::Input(Json), None),
        f("jsonb", Op::Input(Jsonb), None),
        f("json_object_field", Op::Get { text: false }, None),
        f("json_object_field_text", Op::Get { text: true }, None),
        f(
            "json_extract_path_op",
            Op::Path {
                text: false,
                variadic: false,
            },
            None,
        ),
        f(
            "json_extract_path_text_op",
            Op::Path {
                text: true,
                variadic: false,
            },
            None,
        ),
        f("jsonb_contains", Op::Contains, Some(Jsonb)),
        f("jsonb_eq", Op::Equal { negated: false }, Some(Jsonb)),
        f("jsonb_ne", Op::Equal { negated: true }, Some(Jsonb)),
        f("jsonb_exists", Op::HasKey, Some(Jsonb)),
        f("jsonb_exists_any", Op::HasKeys { all: false }, Some(Jsonb)),
        f("jsonb_exists_all", Op::HasKeys { all: true }, Some(Jsonb)),
        f("jsonb_concat", Op::Concat, Some(Jsonb)),
        f("text", Op::AsText, None),
    ];
    for kind in [Json, Jsonb] {
        let name = |suffix: &str| format!("{}_{suffix}", kind.name());
        all.extend([
            f(
                &name("extract_path"),
                Op::Path {
                    text: false,
                    variadic: true,
                },
                Some(kind),
            ),
            f(
                &name("extract_path_text"),
                Op::Path {
                    text: true,
                    variadic: true,
                },
                Some(kind),
            ),
            f(&name("typeof"), Op::TypeOf, Some(kind)),
            f(&name("array_length"), Op::ArrayLength, Some(kind)),
            f(&name("build_object"), Op::BuildObject(kind), Some(kind)),
            f(&name("build_array"), Op::BuildArray(kind), Some(kind)),
            f(&format!("to_{}", kind.name()), Op::To(kind), Some(kind)),
            f(
                &name("array_elements_list"),
                Op::Elements { text: false },
                Some(kind),
            ),
            f(
                &name("array_elements_text_list"),
                Op::Elements { text: true },
                Some(kind),
            ),
            f(&name("object_keys_list"), Op::Keys, Some(kind)),
            f(
                &name("each_values_list"),
                Op::Values { text: false },
                Some(kind),
            ),
            f(
                &name("each_text_values_list"),
                Op::Values { text: true },
                Some(kind),
            ),
        ]);
    }
    all
});

/// Set-returning JSON functions, planned as `unnest` of the list function
/// of the same name with `_list` appended.
const SET_RETURNING: &[&str] = &[
    "json_array_elements",
    "json_array_elements_text",
    "json_object_keys",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_object_keys",
];

/// Set-returning JSON functions with two columns (`key`, `value`), read in
/// `FROM` only: planned as two `unnest`s side by side.
const EACH: &[&str] = &[
    "json_each",
    "json_each_text",
    "jsonb_each",
    "jsonb_each_text",
];

fn function(name: &str) -> Option<Arc<ScalarUDF>> {
    FUNCTIONS.iter().find(|f| f.name() == name).cloned()
}

/// Registers the functions and the operator planner in a session.
pub(crate) fn register(ctx: &SessionContext) -> DfResult<()> {
    use datafusion::execution::FunctionRegistry;
    for f in FUNCTIONS.iter() {
        ctx.register_udf(f.as_ref().clone());
    }
    for kind in [JsonKind::Json, JsonKind::Jsonb] {
        for object in [false, true] {
            ctx.register_udaf(datafusion::logical_expr::AggregateUDF::new_from_impl(
                aggregates::JsonAggregate::new(kind, object),
            ));
        }
    }
    ctx.state_ref()
        .write()
        .register_expr_planner(Arc::new(JsonOperators))
}

/// Makes json and jsonb values conform on every write: registered once with
/// the storage engine.
pub(crate) fn register_column_format() {
    lookout_storage::batch::register_value_format(Box::new(functions::JsonColumns));
}

/// Plans the JSON operators on text operands to the functions above.
#[derive(Debug)]
struct JsonOperators;

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        // Typing an operand walks its whole tree, so only the operators
        // JSON gives a meaning pay for it (a chain of 2,000 `+` would
        // otherwise cost quadratic time), and a `||` whose operand is
        // itself a text `||` stays text.
        let chained_concat = |e: &PlanExpr| matches!(e, PlanExpr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::StringConcat);
        let relevant = match expr.op {
            BinaryOperator::StringConcat => {
                !chained_concat(&expr.left) && !chained_concat(&expr.right)
            }
            BinaryOperator::Arrow
            | BinaryOperator::LongArrow
            | BinaryOperator::HashArrow
            | BinaryOperator::HashLongArrow
            | BinaryOperator::AtArrow
            | BinaryOperator::ArrowAt
            | BinaryOperator::Question
            | BinaryOperator::QuestionPipe
            | BinaryOperator::QuestionAnd
            | BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => true,
            _ => false,
        };
        if !relevant {
            return Ok(PlannerResult::Original(expr));
        }
        let field = |e: &PlanExpr| e.to_field(schema).ok().map(|(_, f)| f);
        let (Some(left), Some(right)) = (field(&expr.left), field(&expr.right)) else {
            return Ok(PlannerResult::Original(expr));
        };
        let text = |f: &arrow::datatypes::Field| {
            matches!(
                f.data_type(),
                arrow::datatypes::DataType::Utf8
                    | arrow::datatypes::DataType::LargeUtf8
                    | arrow::datatypes::DataType::Utf8View
            )
        };
        if matches!(
            expr.op,
            BinaryOperator::Lt | BinaryOperator::LtEq | BinaryOperator::Gt | BinaryOperator::GtEq
        ) {
            if let Some(kind) = json_kind(&left).or(json_kind(&right)) {
                return Err(functions::sql_error(
                    SqlState::FeatureNotSupported,
                    format!(
                        "comparing {} values with {} is not supported; compare a typed field, e.g. (meta ->> 'score')::float8 > 0.5",
                        kind.name(),
                        expr.op
                    ),
                ));
            }
            return Ok(PlannerResult::Original(expr));
        }
        // `=` and `<>` with a jsonb operand compare as jsonb does: a text
        // operand (or an untyped parameter, `jsonb_col = $1`) is read as
        // jsonb, keys in any order, numbers as numerics (`1.0` = `1`).
        let untyped = |e: &PlanExpr, f: &arrow::datatypes::Field| {
            matches!(e, PlanExpr::Placeholder(_))
                && f.data_type() == &arrow::datatypes::DataType::Null
        };
        let jsonb_side = |f: &arrow::datatypes::Field| json_kind(f) == Some(JsonKind::Jsonb);
        let operand = |e: &PlanExpr, f: &arrow::datatypes::Field| {
            text(f) && json_kind(f) != Some(JsonKind::Json) || untyped(e, f)
        };
        if matches!(expr.op, BinaryOperator::Eq | BinaryOperator::NotEq)
            && (jsonb_side(&left) || jsonb_side(&right))
            && operand(&expr.left, &left)
            && operand(&expr.right, &right)
            && let Some(udf) = function(if expr.op == BinaryOperator::Eq {
                "jsonb_eq"
            } else {
                "jsonb_ne"
            })
        {
            return Ok(PlannerResult::Planned(PlanExpr::ScalarFunction(
                ScalarFunction::new_udf(udf, vec![expr.left, expr.right]),
            )));
        }
        let (name, swap) = match &expr.op {
            _ if !text(&left) => return Ok(PlannerResult::Original(expr)),
            BinaryOperator::Arrow => ("json_object_field", false),
            BinaryOperator::LongArrow => ("json_object_field_text", false),
            BinaryOperator::HashArrow => ("json_extract_path_op", false),
            BinaryOperator::HashLongArrow => ("json_extract_path_text_op", false),
            BinaryOperator::AtArrow if text(&right) => ("jsonb_contains", false),
            BinaryOperator::ArrowAt if text(&right) => ("jsonb_contains", true),
            BinaryOperator::Question => ("jsonb_exists", false),
            BinaryOperator::QuestionPipe => ("jsonb_exists_any", false),
            BinaryOperator::QuestionAnd => ("jsonb_exists_all", false),
            BinaryOperator::StringConcat
                if json_kind(&left) == Some(JsonKind::Jsonb)
                    || json_kind(&right) == Some(JsonKind::Jsonb) =>
            {
                ("jsonb_concat", false)
            }
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let Some(udf) = function(name) else {
            return Ok(PlannerResult::Original(expr));
        };
        let args = if swap {
            vec![expr.right, expr.left]
        } else {
            vec![expr.left, expr.right]
        };
        Ok(PlannerResult::Planned(PlanExpr::ScalarFunction(
            ScalarFunction::new_udf(udf, args),
        )))
    }
}

/// In a typed plan: a cast of a json value to text keeps the text but not
/// the type (DataFusion drops a cast between two text types, and the JSON
/// type would go on to the client).
pub(crate) fn typed_rewrite(expr: &PlanExpr, schema: &DFSchema) -> Option<PlanExpr> {
    let PlanExpr::Cast(cast) = expr else {
        return None;
    };
    if !matches!(
        cast.field.data_type(),
        arrow::datatypes::DataType::Utf8
            | arrow::datatypes::DataType::LargeUtf8
            | arrow::datatypes::DataType::Utf8View
    ) || json_kind(&cast.field).is_some()
    {
        return None;
    }
    let (_, inner) = cast.expr.to_field(schema).ok()?;
    json_kind(&inner)?;
    Some(PlanExpr::ScalarFunction(ScalarFunction::new_udf(
        function("text")?,
        vec![cast.expr.as_ref().clone()],
    )))
}

/// Refuses to order by a json or jsonb value: the text order of the values
/// is not PostgreSQL's jsonb order (numbers by value, objects after arrays),
/// and a silently different order is worse than an error.
pub(crate) fn refuse_json_order<'a>(
    exprs: impl Iterator<Item = &'a PlanExpr>,
    schema: &DFSchema,
) -> DfResult<()> {
    for expr in exprs {
        if let Ok((_, field)) = expr.to_field(schema)
            && let Some(kind) = json_kind(&field)
        {
            return Err(functions::sql_error(
                SqlState::FeatureNotSupported,
                format!(
                    "ordering by a {} value is not supported; order by its text or a typed field, e.g. ORDER BY (meta ->> 'score')::float8",
                    kind.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Rewrites the syntax JSON needs before planning: casts to json/jsonb
/// become the checking functions, and set-returning JSON functions become
/// `unnest` of a list.
pub(crate) fn rewrite_statement(stmt: &mut Statement) {
    let _ = stmt.visit(&mut JsonSyntax);
}

struct JsonSyntax;

fn call(name: &str, args: Vec<FunctionArg>) -> Expr {
    Expr::Function(ast::Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args,
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

fn unnamed(expr: Expr) -> FunctionArg {
    FunctionArg::Unnamed(FunctionArgExpr::Expr(expr))
}

fn json_type(data_type: &ast::DataType) -> Option<&'static str> {
    match data_type {
        ast::DataType::JSON => Some("json"),
        ast::DataType::JSONB => Some("jsonb"),
        _ => None,
    }
}

/// The list function behind a set-returning JSON function, and the JSON
/// type of its elements (none for the `_text` forms and object keys).
fn set_returning(name: &ObjectName) -> Option<(String, Option<&'static str>)> {
    let [part] = name.0.as_slice() else {
        return None;
    };
    let ident = part.as_ident()?;
    let lower = ident.value.to_ascii_lowercase();
    if !SET_RETURNING.contains(&lower.as_str()) {
        return None;
    }
    let element_type = match lower.as_str() {
        "json_array_elements" => Some("json"),
        "jsonb_array_elements" => Some("jsonb"),
        _ => None,
    };
    Some((format!("{lower}_list"), element_type))
}

impl VisitorMut for JsonSyntax {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let replaced = match expr {
            Expr::Cast {
                expr: inner,
                data_type,
                ..
            } => json_type(data_type).map(|name| call(name, vec![unnamed(inner.as_ref().clone())])),
            Expr::TypedString(typed) => json_type(&typed.data_type)
                .map(|name| call(name, vec![unnamed(Expr::Value(typed.value.clone()))])),
            Expr::Function(f) => set_returning(&f.name).map(|(list, element_type)| {
                let mut inner = f.clone();
                inner.name = ObjectName::from(vec![Ident::new(list)]);
                let each = call("unnest", vec![unnamed(Expr::Function(inner))]);
                // unnest loses the elements' type; they are json values again.
                match element_type {
                    Some(kind) => call(kind, vec![unnamed(each)]),
                    None => each,
                }
            }),
            _ => None,
        };
        if let Some(replaced) = replaced {
            *expr = replaced;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
        lateral_from(query);
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // `FROM jsonb_array_elements(...) AS e` reads from
        // `(SELECT jsonb(unnest(jsonb_array_elements_list(...))) AS value) AS e`.
        let Some((name, args, alias)) = function_in_from(factor) else {
            return ControlFlow::Continue(());
        };
        let Some(columns) = from_columns(name, args, alias) else {
            return ControlFlow::Continue(());
        };
        let function = name.to_string().to_ascii_lowercase();
        if let Ok(query) = Parser::new(&Postgres)
            .try_with_sql(&format!("SELECT {columns}"))
            .and_then(|mut p| p.parse_query())
        {
            let mut alias = alias.cloned().unwrap_or_else(|| alias_named(&function));
            alias.columns.clear();
            *factor = TableFactor::Derived {
                lateral: false,
                subquery: query,
                alias: Some(alias),
                sample: None,
            };
        }
        ControlFlow::Continue(())
    }
}

fn alias_named(name: &str) -> ast::TableAlias {
    ast::TableAlias {
        explicit: true,
        name: Ident::new(name),
        columns: Vec::new(),
        at: None,
    }
}

/// A set-returning JSON function read in `FROM`: its name, arguments and
/// alias.
fn function_in_from(
    factor: &TableFactor,
) -> Option<(&ObjectName, &[FunctionArg], Option<&ast::TableAlias>)> {
    let (name, args, alias) = match factor {
        TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } => (name, args.args.as_slice(), alias),
        TableFactor::Function {
            name, args, alias, ..
        } => (name, args.as_slice(), alias),
        _ => return None,
    };
    let [part] = name.0.as_slice() else {
        return None;
    };
    let lower = part.as_ident()?.value.to_ascii_lowercase();
    (SET_RETURNING.contains(&lower.as_str()) || EACH.contains(&lower.as_str())).then_some((
        name,
        args,
        alias.as_ref(),
    ))
}

/// The select list that computes a set-returning JSON function's rows,
/// its columns named by the alias's column list or as PostgreSQL names
/// them (`value`; the function's name for `_object_keys`; `key`, `value`
/// for `_each`).
fn from_columns(
    name: &ObjectName,
    args: &[FunctionArg],
    alias: Option<&ast::TableAlias>,
) -> Option<String> {
    let function = name.to_string().to_ascii_lowercase();
    let named = |i: usize, default: &str| match alias.and_then(|a| a.columns.get(i)) {
        Some(c) => c.name.to_string(),
        None => crate::ext::quote_ident(default),
    };
    let args = args
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if EACH.contains(&function.as_str()) {
        let kind = if function.starts_with("jsonb") {
            "jsonb"
        } else {
            "json"
        };
        let text = function.ends_with("_text");
        let keys = format!("unnest({kind}_object_keys_list({args}))");
        let values = if text {
            format!("unnest({kind}_each_text_values_list({args}))")
        } else {
            format!("{kind}(unnest({kind}_each_values_list({args})))")
        };
        return Some(format!(
            "{keys} AS {}, {values} AS {}",
            named(0, "key"),
            named(1, "value")
        ));
    }
    let (list, element_type) = set_returning(name)?;
    let each = format!("unnest({list}({args}))");
    let each = match element_type {
        Some(kind) => format!("{kind}({each})"),
        None => each,
    };
    // `_object_keys` returns a bare set of text, so its alias names its
    // column too (`AS k`); the others' column is their OUT parameter `value`.
    let default = match alias {
        _ if !function.ends_with("object_keys") => "value".to_string(),
        Some(a) if a.columns.is_empty() => crate::ext::quote_ident(&a.name.value),
        _ => crate::ext::quote_ident(&function),
    };
    let column = match alias.and_then(|a| a.columns.first()) {
        Some(c) => c.name.to_string(),
        None => default,
    };
    Some(format!("{each} AS {column}"))
}

/// `FROM t [AS a], jsonb_each(a.meta) [AS x]` (also with `LATERAL` or
/// `CROSS JOIN`) calls the function once per row of `t`, as PostgreSQL's
/// implicit lateral join does. DataFusion plans no lateral references, so
/// the pair becomes one derived table, `(SELECT a.*, <the function's
/// columns> FROM t AS a) AS a`, and `x.column` becomes `a.column`.
fn lateral_from(query: &mut ast::Query) {
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    // The two shapes: `FROM t, f(...)` and `FROM t CROSS JOIN f(...)`.
    let (outer, function) = match select.from.as_slice() {
        [outer, function] if outer.joins.is_empty() && function.joins.is_empty() => {
            (&outer.relation, &function.relation)
        }
        [only] => match only.joins.as_slice() {
            [join]
                if matches!(
                    join.join_operator,
                    ast::JoinOperator::CrossJoin(_) | ast::JoinOperator::CrossApply
                ) =>
            {
                (&only.relation, &join.relation)
            }
            _ => return,
        },
        _ => return,
    };
    let Some((name, args, alias)) = function_in_from(function) else {
        return;
    };
    // Arguments that name no column are computed once, as before.
    if !reads_a_column(args) {
        return;
    }
    let outer_name = match outer {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => match alias {
            Some(a) => a.name.clone(),
            None => match name.0.last().and_then(|p| p.as_ident()) {
                Some(last) => last.clone(),
                None => return,
            },
        },
        _ => return,
    };
    let function_alias = alias
        .map(|a| a.name.value.clone())
        .unwrap_or_else(|| name.to_string());
    // A one-column function's alias alone stands for its value (`AS t`,
    // then `t`), as for PostgreSQL's functions that return a bare set.
    let function_name = name.to_string().to_ascii_lowercase();
    let whole_row = (SET_RETURNING.contains(&function_name.as_str())
        && !function_name.ends_with("object_keys"))
    .then(|| {
        alias
            .filter(|a| a.columns.is_empty())
            .map(|a| a.name.value.clone())
    })
    .flatten();
    let Some(columns) = from_columns(name, args, alias) else {
        return;
    };
    let sql = format!("SELECT {outer_name}.*, {columns} FROM {outer}");
    let Ok(inner) = Parser::new(&Postgres)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
    else {
        return;
    };
    select.from = vec![ast::TableWithJoins {
        relation: TableFactor::Derived {
            lateral: false,
            subquery: inner,
            alias: Some(ast::TableAlias {
                explicit: true,
                name: outer_name.clone(),
                columns: Vec::new(),
                at: None,
            }),
            sample: None,
        },
        joins: Vec::new(),
    }];
    let mut requalify = Requalify {
        from: function_alias,
        to: outer_name,
        whole_row,
    };
    let _ = query.visit(&mut requalify);
}

/// Whether the arguments name a column (rather than being literals).
fn reads_a_column(args: &[FunctionArg]) -> bool {
    args.iter().any(|arg| {
        ast::visit_expressions(arg, |e| match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .is_break()
    })
}

/// Renames the qualifier `from` to `to` in `from.column` references, and
/// reads a bare `whole_row` name as `to.value`.
struct Requalify {
    from: String,
    to: Ident,
    whole_row: Option<String>,
}

impl VisitorMut for Requalify {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::CompoundIdentifier(parts) = expr
            && let [qualifier, _] = parts.as_mut_slice()
            && qualifier.value.eq_ignore_ascii_case(&self.from)
        {
            *qualifier = self.to.clone();
        }
        if let Expr::Identifier(ident) = expr
            && self
                .whole_row
                .as_ref()
                .is_some_and(|w| ident.value.eq_ignore_ascii_case(w))
        {
            *expr = Expr::CompoundIdentifier(vec![self.to.clone(), Ident::new("value")]);
        }
        ControlFlow::Continue(())
    }
}
