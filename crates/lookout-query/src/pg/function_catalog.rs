//! Lookout's own functions as the catalogs list them: the view
//! `lookout.functions`, `SHOW FUNCTIONS`, and rows of `pg_catalog.pg_proc`
//! with `pg_get_function_arguments`, `pg_get_function_result` and
//! `obj_description` answering for them, so psql's `\df` and `\df+` find
//! the monitoring functions beside PostgreSQL's.

use std::sync::{Arc, LazyLock};

use crate::pg::dialect::Postgres;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, cast, col, lit,
};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::parser::Parser;
use lookout_monitor::FunctionDoc;

use crate::ext::names::quote_literal;

/// The object id of the first of Lookout's functions in `pg_proc`; the rest
/// follow in name order. Far above the built-in ids (below 16384) and the
/// ids sessions give tables (16384 up, one per table).
const FIRST_OID: u32 = 1_000_000;

/// Lookout's functions in name order; the position gives the object id.
static FUNCTIONS: LazyLock<Vec<FunctionDoc>> = LazyLock::new(lookout_monitor::function_docs);

fn by_oid(oid: i64) -> Option<&'static FunctionDoc> {
    let index = usize::try_from(oid.checked_sub(i64::from(FIRST_OID))?).ok()?;
    FUNCTIONS.get(index)
}

/// The columns of `lookout.functions`.
const COLUMNS: &str = "name, kind, arguments, result, description";

/// The view of Lookout's own functions: `lookout.functions`, which `SHOW
/// FUNCTIONS` reads.
pub(crate) fn functions_view() -> String {
    let rows: Vec<String> = FUNCTIONS
        .iter()
        .map(|f| {
            format!(
                "({}, {}, {}, {}, {})",
                quote_literal(f.name),
                quote_literal(if f.aggregate { "aggregate" } else { "function" }),
                quote_literal(f.arguments),
                quote_literal(f.result),
                quote_literal(f.description)
            )
        })
        .collect();
    format!(
        "SELECT {COLUMNS} FROM (VALUES {}) AS f({COLUMNS})",
        rows.join(", ")
    )
}

/// `SHOW FUNCTIONS [LIKE 'pattern' | WHERE ...]` as a query of
/// `lookout.functions`.
pub(crate) fn show_functions(statement: Statement) -> Statement {
    use datafusion::sql::sqlparser::ast::ShowStatementFilter;
    let Statement::ShowFunctions { filter } = &statement else {
        return statement;
    };
    let condition = match filter {
        None => String::new(),
        Some(ShowStatementFilter::Like(p) | ShowStatementFilter::NoKeyword(p)) => {
            format!(" WHERE name LIKE {}", quote_literal(p))
        }
        Some(ShowStatementFilter::ILike(p)) => {
            format!(" WHERE name ILIKE {}", quote_literal(p))
        }
        Some(ShowStatementFilter::Where(e)) => format!(" WHERE {e}"),
    };
    let sql = format!("SELECT {COLUMNS} FROM lookout.functions{condition} ORDER BY name");
    match Parser::parse_sql(&Postgres, &sql) {
        Ok(mut parsed) if parsed.len() == 1 => parsed.remove(0),
        _ => statement,
    }
}

/// `pg_proc` with a row per Lookout function, in the `lookout` schema:
/// `builtin` is PostgreSQL's, `namespaces` is `pg_namespace`.
pub(crate) fn pg_proc(
    builtin: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
) -> DfResult<Arc<dyn TableProvider>> {
    let own_schema = Arc::new(Schema::new(vec![
        Field::new("f_oid", DataType::UInt32, false),
        Field::new("f_name", DataType::Utf8, false),
        Field::new("f_kind", DataType::Utf8, false),
    ]));
    let oids = (0..FUNCTIONS.len()).map(|i| FIRST_OID + i as u32);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(oids)),
        Arc::new(StringArray::from_iter_values(
            FUNCTIONS.iter().map(|f| f.name),
        )),
        Arc::new(StringArray::from_iter_values(
            FUNCTIONS
                .iter()
                .map(|f| if f.aggregate { "a" } else { "f" }),
        )),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&own_schema), columns)?;
    let own = MemTable::try_new(own_schema, vec![vec![batch]])?;
    let lookout_schema = LogicalPlanBuilder::scan("n", provider_as_source(namespaces), None)?
        .filter(col("nspname").eq(lit("lookout")))?
        .project(vec![col("oid").alias("ns_oid")])?
        .build()?;
    let fields = builtin.schema();
    let projection: Vec<_> = fields
        .fields()
        .iter()
        .map(|f| {
            let value = match f.name().as_str() {
                "oid" => col("f_oid"),
                "proname" => col("f_name"),
                "prokind" => col("f_kind"),
                "pronamespace" => col("ns_oid"),
                "provolatile" => lit("i"),
                "proparallel" => lit("s"),
                "proowner" => lit(10),
                "prolang" => lit(12),
                "prosecdef" | "proretset" | "proisstrict" => lit(false),
                _ => lit(ScalarValue::Null),
            };
            cast(value, column_type(f)).alias(f.name())
        })
        .collect();
    let own_rows = LogicalPlanBuilder::scan("f", provider_as_source(Arc::new(own)), None)?
        .cross_join(lookout_schema)?
        .project(projection)?
        .build()?;
    let plan = LogicalPlanBuilder::scan("pg_proc", provider_as_source(builtin), None)?
        .project(
            fields
                .fields()
                .iter()
                .map(|f| match f.name().as_str() {
                    // No function has grants (psql's `\df+` reads them as an array).
                    "proacl" => cast(lit(ScalarValue::Null), column_type(f)).alias(f.name()),
                    name => col(Column::new_unqualified(name)),
                })
                .collect::<Vec<_>>(),
        )?
        .union(own_rows)?
        .build()?;
    Ok(Arc::new(datafusion::catalog::view::ViewTable::new(
        plan, None,
    )))
}

/// A `pg_proc` column's type: the static table's, except the access list,
/// which is an array in PostgreSQL and text there.
fn column_type(field: &Field) -> DataType {
    match field.name().as_str() {
        "proacl" => DataType::new_list(DataType::Utf8, true),
        _ => field.data_type().clone(),
    }
}

/// What a catalog function reports of one of Lookout's functions.
/// The description of the Lookout function with object id `oid`, which
/// `obj_description(oid, 'pg_proc')` shows.
pub(crate) fn description(oid: i64) -> Option<&'static str> {
    by_oid(oid).map(|f| f.description)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Describe {
    Arguments,
    Result,
}

/// `pg_get_function_arguments(oid)`, `pg_get_function_identity_arguments(oid)`
/// and `pg_get_function_result(oid)`: the text for Lookout's functions,
/// NULL for every other object (which Lookout has no definitions of).
#[derive(Debug, PartialEq, Eq, Hash)]
struct FunctionText {
    name: &'static str,
    describe: Describe,
    signature: Signature,
}

/// The catalog functions that describe Lookout's functions.
pub(crate) fn describing_functions() -> Vec<ScalarUDF> {
    [
        ("pg_get_function_arguments", Describe::Arguments),
        ("pg_get_function_identity_arguments", Describe::Arguments),
        ("pg_get_function_result", Describe::Result),
    ]
    .into_iter()
    .map(|(name, describe)| {
        ScalarUDF::new_from_impl(FunctionText {
            name,
            describe,
            signature: Signature::variadic_any(Volatility::Stable),
        })
    })
    .collect()
}

impl FunctionText {
    fn text(&self, oid: Option<i64>) -> Option<&'static str> {
        let f = by_oid(oid?)?;
        Some(match self.describe {
            Describe::Arguments => f.arguments,
            Describe::Result => f.result,
        })
    }
}

impl ScalarUDFImpl for FunctionText {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        text_by_oid(args, |oid, _| self.text(Some(oid)).map(str::to_string))
    }
}

/// Evaluates a catalog function whose first argument is an object id and
/// whose optional second one is read as text, with `text(oid, second)` per
/// row; NULL where an argument is NULL or `text` has nothing.
pub(crate) fn text_by_oid(
    args: ScalarFunctionArgs,
    text: impl Fn(i64, Option<&str>) -> Option<String>,
) -> DfResult<ColumnarValue> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;
    let rows = args.number_rows;
    let arrays = ColumnarValue::values_to_arrays(&args.args)?;
    let oids = arrays
        .first()
        .map(|a| datafusion::arrow::compute::cast(a, &DataType::Int64))
        .transpose()?;
    let seconds = arrays
        .get(1)
        .map(|a| datafusion::arrow::compute::cast(a, &DataType::Utf8))
        .transpose()?;
    let out: StringArray = (0..rows)
        .map(|row| {
            let oid = oids
                .as_ref()
                .map(|a| a.as_primitive::<Int64Type>())
                .filter(|a| a.is_valid(row))?
                .value(row);
            let second = match &seconds {
                None => None,
                Some(a) => {
                    let a = a.as_string::<i32>();
                    if a.is_null(row) {
                        return None;
                    }
                    Some(a.value(row))
                }
            };
            text(oid, second)
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_name_lookout_functions_in_order() {
        let first = by_oid(i64::from(FIRST_OID)).expect("a function");
        assert_eq!(first.name, FUNCTIONS[0].name);
        assert!(by_oid(i64::from(FIRST_OID) - 1).is_none());
        assert!(by_oid(i64::from(FIRST_OID) + FUNCTIONS.len() as i64).is_none());
        let describe = |d| FunctionText {
            name: "x",
            describe: d,
            signature: Signature::variadic_any(Volatility::Stable),
        };
        let oid = Some(i64::from(FIRST_OID));
        assert_eq!(
            describe(Describe::Arguments).text(oid),
            Some(first.arguments)
        );
        assert_eq!(description(i64::from(FIRST_OID)), Some(first.description));
        assert_eq!(describe(Describe::Result).text(Some(16384)), None);
    }
}
