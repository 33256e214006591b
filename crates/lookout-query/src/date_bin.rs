//! `date_bin` that divides once per bin instead of once per row.
//!
//! DataFusion's `date_bin` divides every value by the stride (two checked
//! divisions and a multiplication a row): a sixth of the CPU of "error rate
//! per 5 minutes over a day". Lookout's files are sorted by time, so
//! neighbouring rows nearly always fall in the same bin: once a value's bin
//! `[start, start + stride)` is known, the next values inside it take the
//! same answer with two comparisons. For nanosecond timestamps binned by a
//! fixed stride (not months) from a constant origin, the answers are
//! DataFusion's own, overflow to NULL included; anything else goes to
//! DataFusion's function.
//!
//! DataFusion's signature lists nanosecond timestamps first, so a
//! microsecond column (as Lookout stores time) was cast to nanoseconds row
//! by row before binning, though a microsecond form of the function exists.
//! Arguments that match one of the signature's forms exactly are now kept
//! as they are (the answer is then in the column's unit), and microsecond
//! rows take the quick path too.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{
    ArrowTimestampType, DataType, FieldRef, TimeUnit, TimestampMicrosecondType,
    TimestampNanosecondType,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::logical_expr::{TIMEZONE_WILDCARD, TypeSignature};

/// DataFusion's `date_bin`, with a quick path for sorted nanosecond and
/// microsecond rows.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BinOncePerBin {
    inner: Arc<ScalarUDF>,
    /// User-defined, so that [`ScalarUDFImpl::coerce_types`] chooses.
    signature: Signature,
}

/// The `date_bin` function sessions use.
pub(crate) fn date_bin() -> ScalarUDF {
    let inner = datafusion::functions::datetime::date_bin();
    let signature = Signature::user_defined(inner.signature().volatility);
    ScalarUDF::new_from_impl(BinOncePerBin { inner, signature })
}

/// The types DataFusion coerces `given` to for `udf`.
fn as_datafusion_coerces(given: &[DataType], udf: &ScalarUDF) -> Result<Vec<DataType>> {
    let fields: Vec<FieldRef> = given
        .iter()
        .map(|t| Arc::new(arrow::datatypes::Field::new("a", t.clone(), true)))
        .collect();
    Ok(fields_with_udf(&fields, udf)?
        .iter()
        .map(|f| f.data_type().clone())
        .collect())
}

/// Whether `given` is one of the forms `form` lists as it is.
fn is_form(form: &[DataType], given: &[DataType]) -> bool {
    form.len() == given.len()
        && form.iter().zip(given).all(|(f, g)| match (f, g) {
            (DataType::Timestamp(fu, Some(ft)), DataType::Timestamp(gu, Some(_)))
                if ft.as_ref() == TIMEZONE_WILDCARD =>
            {
                fu == gu
            }
            _ => f == g,
        })
}

/// The stride in nanoseconds, when it is a positive fixed length.
fn fixed_stride(stride: &ColumnarValue) -> Option<i64> {
    const NANOS_PER_DAY: i64 = 86_400_000_000_000;
    let nanos = match stride {
        ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(v))) if v.months == 0 => {
            i64::from(v.days)
                .checked_mul(NANOS_PER_DAY)?
                .checked_add(v.nanoseconds)?
        }
        ColumnarValue::Scalar(ScalarValue::IntervalDayTime(Some(v))) => i64::from(v.days)
            .checked_mul(NANOS_PER_DAY)?
            .checked_add(i64::from(v.milliseconds).checked_mul(1_000_000)?)?,
        _ => return None,
    };
    (nanos > 0).then_some(nanos)
}

/// The bin of `value`, as DataFusion computes it for a positive stride
/// (`None` where it overflows, which DataFusion answers with NULL).
fn bin_of(value: i64, stride: i64, origin: i64) -> Option<i64> {
    let diff = value.checked_sub(origin)?;
    let mut delta = diff.checked_sub(diff % stride)?;
    if diff < 0 && stride > 1 && delta != diff {
        delta = delta.checked_sub(stride)?;
    }
    origin.checked_add(delta)
}

/// Bins `values` (timestamps of `scale` nanoseconds a unit), dividing only
/// when a value leaves the last bin; `None` if some slot overflows
/// (DataFusion's NULL, left to DataFusion). As DataFusion does, a value is
/// binned in nanoseconds and the bin divided back into the value's unit.
fn bin_sorted<T: ArrowTimestampType>(
    values: &PrimitiveArray<T>,
    scale: i64,
    stride: i64,
    origin: i64,
) -> Option<ArrayRef> {
    // The last bin: values in [start, end) answer `answer`.
    let (mut start, mut end, mut answer) = (0i64, 0i64, 0i64);
    let mut binned = Vec::with_capacity(values.len());
    // Slots under NULL are binned too (their values are arbitrary but
    // harmless), so the pass reads the raw values without a check a slot.
    for &value in values.values() {
        if value >= start && value < end {
            binned.push(answer);
            continue;
        }
        let bin = bin_of(value.checked_mul(scale)?, stride, origin)?;
        // Every value of the bin computes without overflow only if its
        // last one does; the values in it are those whose nanoseconds lie
        // in [bin, bin + stride). Otherwise the next value takes the long
        // way.
        let last = bin.checked_add(stride - 1);
        match last
            .filter(|&last| bin_of(last, stride, origin) == Some(bin))
            .and_then(|last| {
                Some((
                    ceil_div(bin, scale)?,
                    last.div_euclid(scale).checked_add(1)?,
                ))
            }) {
            Some((first, after)) => (start, end, answer) = (first, after, bin / scale),
            None => (start, end) = (0, 0),
        }
        binned.push(bin / scale);
    }
    let binned = PrimitiveArray::<T>::new(binned.into(), values.nulls().cloned());
    Some(Arc::new(
        binned.with_timezone_opt(values.timezone().map(Arc::from)),
    ))
}

/// `a / b` rounded up, for positive `b`.
fn ceil_div(a: i64, b: i64) -> Option<i64> {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 {
        Some(q)
    } else {
        q.checked_add(1)
    }
}

impl ScalarUDFImpl for BinOncePerBin {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if let TypeSignature::OneOf(forms) = &self.inner.signature().type_signature
            && forms.iter().any(|form| match form {
                TypeSignature::Exact(form) => is_form(form, arg_types),
                _ => false,
            })
        {
            return Ok(arg_types.to_vec());
        }
        as_datafusion_coerces(arg_types, &self.inner)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let origin = match args.args.get(2) {
            None => Some(0),
            Some(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(Some(v), _))) => Some(*v),
            Some(_) => None,
        };
        if let (Some(stride), Some(origin), Some(ColumnarValue::Array(values))) = (
            args.args.first().and_then(fixed_stride),
            origin,
            args.args.get(1),
        ) {
            let binned = match values.data_type() {
                DataType::Timestamp(TimeUnit::Nanosecond, _) => bin_sorted(
                    values.as_primitive::<TimestampNanosecondType>(),
                    1,
                    stride,
                    origin,
                ),
                DataType::Timestamp(TimeUnit::Microsecond, _) => bin_sorted(
                    values.as_primitive::<TimestampMicrosecondType>(),
                    1_000,
                    stride,
                    origin,
                ),
                _ => None,
            };
            if let Some(binned) = binned {
                return Ok(ColumnarValue::Array(binned));
            }
        }
        self.inner.invoke_with_args(args)
    }

    fn simplify(
        &self,
        args: Vec<datafusion::logical_expr::Expr>,
        info: &SimplifyContext,
    ) -> Result<datafusion::logical_expr::simplify::ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        IntervalMonthDayNanoArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    };
    use arrow::datatypes::{Field, IntervalDayTime, IntervalMonthDayNano};
    use datafusion::config::ConfigOptions;

    fn bin(udf: &ScalarUDF, args: Vec<ColumnarValue>, rows: usize) -> Result<ArrayRef> {
        let arg_fields = args
            .iter()
            .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
            .collect();
        let return_field = Arc::new(Field::new("t", args[1].data_type(), true));
        udf.invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields,
            number_rows: rows,
            return_field,
            config_options: Arc::new(ConfigOptions::default()),
        })
        .and_then(|v| v.into_array(rows))
    }

    /// Sorted and shuffled values, near zero, before the origin, and at the
    /// edges of i64 where DataFusion answers NULL, for strides of every
    /// form: each answer is DataFusion's.
    #[test]
    fn bins_are_datafusion_bins() {
        let ours = date_bin();
        let theirs = datafusion::functions::datetime::date_bin();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut values: Vec<Option<i64>> = (0..4_000)
            .map(|i| Some(1_735_689_600_000_000_000 + i * 7_919_000_000))
            .collect();
        values.extend(
            (0..2_000).map(|_| Some((next() % 20_000_000_000_000) as i64 - 10_000_000_000_000)),
        );
        values.extend([None, Some(-1), Some(0), Some(1)]);
        let mut shuffled = values.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        // Values whose bins overflow: DataFusion answers NULL for them.
        let mut extremes = values.clone();
        extremes.extend([
            Some(i64::MIN),
            Some(i64::MIN + 1),
            Some(i64::MAX),
            Some(i64::MAX - 1),
        ]);
        let strides = [
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
                0,
                0,
                300_000_000_000,
            ))),
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 1, 1))),
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 0, 1))),
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 0, 7))),
            ScalarValue::IntervalDayTime(Some(IntervalDayTime::new(0, 60_000))),
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(1, 0, 0))),
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
                0,
                0,
                -60_000_000_000,
            ))),
        ];
        let origins = [
            None,
            Some(0),
            Some(946_684_800_000_000_000),
            Some(1_735_689_600_000_000_123),
            Some(i64::MAX),
            Some(i64::MIN),
        ];
        let arrays = |rows: &Vec<Option<i64>>, zone: Option<&str>| -> [ArrayRef; 2] {
            [
                Arc::new(TimestampNanosecondArray::from(rows.clone()).with_timezone_opt(zone)),
                Arc::new(TimestampMicrosecondArray::from(rows.clone()).with_timezone_opt(zone)),
            ]
        };
        for rows in [&values, &shuffled, &extremes] {
            for (zone, array) in [None, Some("+00:00")]
                .into_iter()
                .flat_map(|zone| arrays(rows, zone).map(|a| (zone, a)))
            {
                for stride in &strides {
                    for origin in origins {
                        let mut args = vec![
                            ColumnarValue::Scalar(stride.clone()),
                            ColumnarValue::Array(Arc::clone(&array)),
                        ];
                        if let Some(o) = origin {
                            args.push(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(
                                Some(o),
                                zone.map(Arc::from),
                            )));
                        }
                        let got = bin(&ours, args.clone(), array.len());
                        let expected = bin(&theirs, args, array.len());
                        match (got, expected) {
                            (Ok(got), Ok(expected)) => assert_eq!(
                                got.as_ref(),
                                expected.as_ref(),
                                "{stride:?} from {origin:?} ({})",
                                array.data_type()
                            ),
                            (got, expected) => assert_eq!(
                                got.is_err(),
                                expected.is_err(),
                                "{stride:?} from {origin:?} ({})",
                                array.data_type()
                            ),
                        }
                    }
                }
            }
        }
        // A stride given as an array is DataFusion's to refuse.
        let strides: ArrayRef = Arc::new(IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(0, 0, 1_000),
        ]));
        let args = vec![
            ColumnarValue::Array(strides),
            ColumnarValue::Array(Arc::new(TimestampNanosecondArray::from(vec![Some(5)]))),
        ];
        assert!(bin(&ours, args, 1).is_err());
    }

    /// Arguments of one of DataFusion's forms stay as they are; others are
    /// coerced as DataFusion coerces them.
    #[test]
    fn exact_forms_are_not_cast() {
        let udf = date_bin();
        let stride = DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano);
        let micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let origin = DataType::Timestamp(TimeUnit::Nanosecond, Some("+00".into()));
        let given = vec![stride.clone(), micros.clone(), origin.clone()];
        assert_eq!(udf.coerce_types(&given).unwrap(), given);
        let given = vec![stride.clone(), micros.clone()];
        assert_eq!(udf.coerce_types(&given).unwrap(), given);
        let theirs = datafusion::functions::datetime::date_bin();
        for given in [
            vec![stride.clone(), DataType::Utf8, origin.clone()],
            vec![
                stride.clone(),
                DataType::Timestamp(TimeUnit::Microsecond, None),
                origin.clone(),
            ],
            vec![stride, DataType::Date32],
        ] {
            assert_eq!(
                udf.coerce_types(&given).ok(),
                as_datafusion_coerces(&given, &theirs).ok(),
                "{given:?}"
            );
        }
    }
}
