//! PostgreSQL functions DataFusion lacks or names differently: `age`,
//! `mod`, interval times a number (`interval_mul`, which `interval '1
//! hour' * 2` is rewritten to), and PostgreSQL's names for DataFusion's
//! functions.

use std::sync::Arc;

use crate::error::SqlState;
use arrow::array::{Array, ArrayRef, AsArray, IntervalMonthDayNanoBuilder};
use arrow::datatypes::{
    DataType, Float64Type, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
    TimestampMicrosecondType,
};
use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility, create_udf,
};

const NANOS_PER_DAY: f64 = 86_400e9;

/// Registers the functions in a session.
pub(crate) fn register(ctx: &SessionContext) {
    use datafusion::functions::math;
    ctx.register_udf(math::ceil().as_ref().clone().with_aliases(["ceiling"]));
    ctx.register_udf(math::signum().as_ref().clone().with_aliases(["sign"]));
    ctx.register_udf(
        datafusion::functions_nested::remove::array_remove_all_udf()
            .as_ref()
            .clone()
            .with_aliases(["array_remove"]),
    );
    ctx.register_udaf(
        datafusion::functions_aggregate::bool_and_or::bool_and_udaf()
            .as_ref()
            .clone()
            .with_aliases(["every"]),
    );
    ctx.register_udf(interval_mul());
    ctx.register_udf(ScalarUDF::new_from_impl(Age::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(Mod::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(PgTypeof::new()));
}

/// Runs `f` over rows, keeping a scalar result scalar.
fn per_row(
    args: &[ColumnarValue],
    f: impl Fn(&[ArrayRef]) -> Result<ArrayRef>,
) -> Result<ColumnarValue> {
    let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let out = f(&arrays)?;
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// A one-argument function of a double precision, made once: the checks
/// and the text form the plan rewrites (`pg_rewrite`) put into plans.
fn float_function(
    name: &'static str,
    returns: DataType,
    body: fn(&[ColumnarValue]) -> Result<ColumnarValue>,
) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Float64],
        returns,
        Volatility::Immutable,
        Arc::new(body),
    )
}

/// The smallest magnitude and the smallest value of a double precision
/// argument's non-NULL values, read in place (these checks run on every batch of a division or logarithm).
fn smallest_abs_and_min(arg: &ColumnarValue) -> Option<(f64, f64)> {
    let fold = |acc: Option<(f64, f64)>, v: f64| {
        Some(acc.map_or((v.abs(), v), |(a, m)| (a.min(v.abs()), m.min(v))))
    };
    match arg {
        ColumnarValue::Scalar(ScalarValue::Float64(v)) => v.and_then(|v| fold(None, v)),
        ColumnarValue::Scalar(_) => None,
        ColumnarValue::Array(a) => a
            .as_primitive::<Float64Type>()
            .iter()
            .flatten()
            .fold(None, fold),
    }
}

fn sql_error(state: SqlState, message: &str) -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::QueryError::new(state, message)))
}

/// The divisor of a double precision division, refused when zero with
/// 22012 as PostgreSQL refuses it (DataFusion would answer Infinity or
/// NaN).
pub(crate) fn nonzero_divisor() -> Arc<ScalarUDF> {
    static UDF: std::sync::LazyLock<Arc<ScalarUDF>> = std::sync::LazyLock::new(|| {
        Arc::new(float_function(
            "nonzero_divisor",
            DataType::Float64,
            |args| {
                if smallest_abs_and_min(&args[0]).is_some_and(|(abs, _)| abs == 0.0) {
                    return Err(sql_error(SqlState::DivisionByZero, "division by zero"));
                }
                Ok(args[0].clone())
            },
        ))
    });
    Arc::clone(&UDF)
}

/// The argument of a logarithm, refused with 2201E when zero or negative
/// as PostgreSQL refuses it (DataFusion would answer -Infinity or NaN).
pub(crate) fn log_argument() -> Arc<ScalarUDF> {
    static UDF: std::sync::LazyLock<Arc<ScalarUDF>> =
        std::sync::LazyLock::new(|| {
            Arc::new(float_function("log_argument", DataType::Float64, |args| {
                match smallest_abs_and_min(&args[0]) {
                    Some((_, min)) if min < 0.0 => Err(sql_error(
                        SqlState::InvalidArgumentForLogarithm,
                        "cannot take logarithm of a negative number",
                    )),
                    Some((0.0, _)) => Err(sql_error(
                        SqlState::InvalidArgumentForLogarithm,
                        "cannot take logarithm of zero",
                    )),
                    _ => Ok(args[0].clone()),
                }
            }))
        });
    Arc::clone(&UDF)
}

/// A double precision as text, spelled as PostgreSQL spells it (`1`, not
/// `1.0`; `1e+20`): what `x::text`, `||` and `concat` print.
pub(crate) fn float8_text() -> Arc<ScalarUDF> {
    static UDF: std::sync::LazyLock<Arc<ScalarUDF>> = std::sync::LazyLock::new(|| {
        Arc::new(float_function("float8_text", DataType::Utf8, |args| {
            per_row(args, |arrays| {
                let mut out = arrow::array::StringBuilder::new();
                let mut text = String::new();
                for v in arrays[0].as_primitive::<Float64Type>().iter() {
                    match v {
                        Some(v) => {
                            text.clear();
                            crate::format::push_float(&mut text, v);
                            out.append_value(&text);
                        }
                        None => out.append_null(),
                    }
                }
                Ok(Arc::new(out.finish()))
            })
        }))
    });
    Arc::clone(&UDF)
}

/// A value of type `input` as text, spelled as PostgreSQL's output function
/// spells it ([`crate::format::write_value`]): a `real` 0.1 is `0.1` and an
/// array `{0.1,2}`, where Arrow's cast prints `0.10000000149011612` and
/// `[0.1, 2.0]`.
pub(crate) fn value_text(input: DataType) -> ScalarUDF {
    create_udf(
        "pg_text",
        vec![input],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            per_row(args, |arrays| {
                let values = arrays[0].as_ref();
                let mut out = arrow::array::StringBuilder::new();
                let mut text = String::new();
                for row in 0..values.len() {
                    text.clear();
                    if values.is_valid(row) && crate::format::write_value(values, row, &mut text) {
                        out.append_value(&text);
                    } else {
                        out.append_null();
                    }
                }
                Ok(Arc::new(out.finish()))
            })
        }),
    )
}

/// An interval times a factor, as PostgreSQL's `interval_mul` computes it:
/// fractions of a month spill into days (of 30), fractions of a day into
/// time.
fn multiply(v: IntervalMonthDayNano, factor: f64) -> IntervalMonthDayNano {
    let months = f64::from(v.months) * factor;
    let whole_months = months.trunc();
    let days = f64::from(v.days) * factor + (months - whole_months) * 30.0;
    let whole_days = days.trunc();
    let nanos = v.nanoseconds as f64 * factor + (days - whole_days) * NANOS_PER_DAY;
    IntervalMonthDayNano::new(
        whole_months as i32,
        whole_days as i32,
        (nanos / 1000.0).round() as i64 * 1000,
    )
}

fn interval_mul() -> ScalarUDF {
    create_udf(
        "interval_mul",
        vec![
            DataType::Interval(IntervalUnit::MonthDayNano),
            DataType::Float64,
        ],
        DataType::Interval(IntervalUnit::MonthDayNano),
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            per_row(args, |arrays| {
                let intervals = arrays[0].as_primitive::<IntervalMonthDayNanoType>();
                let factors = arrays[1].as_primitive::<Float64Type>();
                let mut out = IntervalMonthDayNanoBuilder::with_capacity(intervals.len());
                for i in 0..intervals.len() {
                    if intervals.is_null(i) || factors.is_null(i) {
                        out.append_null();
                    } else {
                        out.append_value(multiply(intervals.value(i), factors.value(i)));
                    }
                }
                Ok(Arc::new(out.finish()))
            })
        }),
    )
}

/// `age(a, b)`: `a - b` in years, months and days as PostgreSQL counts
/// them (field by field, borrowing), and `age(a)` from today's midnight.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Age {
    signature: Signature,
}

impl Age {
    fn new() -> Self {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Age {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![tz.clone(), tz.clone()]),
                    TypeSignature::Exact(vec![ts.clone(), ts.clone()]),
                    TypeSignature::Exact(vec![tz]),
                    TypeSignature::Exact(vec![ts]),
                ],
                Volatility::Stable,
            ),
        }
    }
}

fn days_in_month(year: i32, month: u32) -> i64 {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    chrono::NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.pred_opt())
        .map_or(30, |d| i64::from(d.day()))
}

/// PostgreSQL's `timestamp_age`: the field-wise difference, borrowing from
/// the next field up, and a day borrow worth the days of the earlier
/// date's month.
fn age(a: NaiveDateTime, b: NaiveDateTime) -> IntervalMonthDayNano {
    let sign = if a < b { -1 } else { 1 };
    let field = |x: u32, y: u32| sign * (i64::from(x) - i64::from(y));
    let mut micros = field(a.nanosecond() / 1000, b.nanosecond() / 1000);
    let mut sec = field(a.second(), b.second());
    let mut min = field(a.minute(), b.minute());
    let mut hour = field(a.hour(), b.hour());
    let mut day = field(a.day(), b.day());
    let mut month = field(a.month(), b.month());
    let mut year = sign * (i64::from(a.year()) - i64::from(b.year()));
    while micros < 0 {
        micros += 1_000_000;
        sec -= 1;
    }
    while sec < 0 {
        sec += 60;
        min -= 1;
    }
    while min < 0 {
        min += 60;
        hour -= 1;
    }
    while hour < 0 {
        hour += 24;
        day -= 1;
    }
    let earlier = if a < b { a } else { b };
    while day < 0 {
        day += days_in_month(earlier.year(), earlier.month());
        month -= 1;
    }
    while month < 0 {
        month += 12;
        year -= 1;
    }
    let nanos = (((hour * 60 + min) * 60 + sec) * 1_000_000 + micros) * 1000;
    IntervalMonthDayNano::new(
        (sign * (year * 12 + month)) as i32,
        (sign * day) as i32,
        sign * nanos,
    )
}

impl ScalarUDFImpl for Age {
    fn name(&self) -> &str {
        "age"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // Sessions run in UTC.
        let midnight = chrono::Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default();
        let at = |a: &ArrayRef, i: usize| -> Result<NaiveDateTime> {
            let micros = a.as_primitive::<TimestampMicrosecondType>().value(i);
            DateTime::from_timestamp_micros(micros)
                .map(|d| d.naive_utc())
                .ok_or_else(|| DataFusionError::Execution("timestamp out of range".into()))
        };
        per_row(&args.args, |arrays| {
            let n = arrays[0].len();
            let mut out = IntervalMonthDayNanoBuilder::with_capacity(n);
            for i in 0..n {
                if arrays.iter().any(|a| a.is_null(i)) {
                    out.append_null();
                    continue;
                }
                let value = match arrays {
                    [a, b] => age(at(a, i)?, at(b, i)?),
                    [a] => age(midnight, at(a, i)?),
                    _ => {
                        return Err(DataFusionError::Plan(
                            "age takes one or two timestamps".into(),
                        ));
                    }
                };
                out.append_value(value);
            }
            Ok(Arc::new(out.finish()))
        })
    }
}

/// `mod(a, b)`: the remainder, with the sign of `a`, of integers or
/// numbers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod {
    signature: Signature,
}

impl Mod {
    fn new() -> Self {
        Mod {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Int64, DataType::Int64]),
                    TypeSignature::Exact(vec![DataType::Float64, DataType::Float64]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Int64))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        per_row(&args.args, |arrays| {
            if arrays[1].data_type().is_integer() {
                let divisors = arrays[1].as_primitive::<arrow::datatypes::Int64Type>();
                if divisors.iter().any(|d| d == Some(0)) {
                    return Err(sql_error(SqlState::DivisionByZero, "division by zero"));
                }
            }
            Ok(arrow::compute::kernels::numeric::rem(
                &arrays[0], &arrays[1],
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn age_counts_like_postgres() {
        // Values from PostgreSQL 15.
        let v = age(at("2025-03-01 00:00:00"), at("2025-01-15 12:00:00"));
        assert_eq!(
            (v.months, v.days, v.nanoseconds),
            (1, 16, 12 * 3_600_000_000_000)
        );
        let v = age(at("2025-03-01 00:00:00"), at("2024-02-29 00:00:00"));
        assert_eq!((v.months, v.days, v.nanoseconds), (12, 1, 0));
        let v = age(at("2024-02-29 00:00:00"), at("2025-03-01 00:00:00"));
        assert_eq!((v.months, v.days), (-12, -1));
    }

    #[test]
    fn interval_times_a_number_spills_like_postgres() {
        let hour = IntervalMonthDayNano::new(0, 0, 3_600_000_000_000);
        assert_eq!(multiply(hour, 2.0).nanoseconds, 7_200_000_000_000);
        let v = multiply(IntervalMonthDayNano::new(1, 0, 0), 0.5);
        assert_eq!((v.months, v.days, v.nanoseconds), (0, 15, 0));
        let v = multiply(IntervalMonthDayNano::new(0, 1, 0), 0.25);
        assert_eq!((v.days, v.nanoseconds), (0, 6 * 3_600_000_000_000));
    }
}

/// `pg_typeof(value)`: the name of the argument's type, as PostgreSQL
/// prints a `regtype` (`integer`, `text[]`, `jsonb`, `unknown` for NULL).
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: Signature,
}

impl PgTypeof {
    fn new() -> Self {
        PgTypeof {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// The PostgreSQL name of a column's type, json and jsonb included.
fn type_name_of(field: &arrow::datatypes::Field) -> String {
    if let Some(kind) = crate::json::json_kind(field) {
        return kind.name().to_string();
    }
    match field.data_type() {
        DataType::Null => "unknown".to_string(),
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            format!("{}[]", type_name_of(item))
        }
        other => crate::format::pg_type_name(other).to_string(),
    }
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = args.arg_fields.first().map(|f| type_name_of(f));
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(name)))
    }
}
