//! `date_trunc` with arithmetic for UTC timestamps.
//!
//! Every `timestamptz` Lookout stores is in UTC (`+00:00`). DataFusion's
//! `date_trunc` truncates a timestamp that carries a zone value by value
//! through chrono's time zone conversion, even when the zone is UTC: about
//! 150 ns a row, the largest cost of grouping by `date_trunc('hour', ts)`
//! over a day of calls. In UTC an hour and a day are fixed lengths, and
//! DataFusion already truncates zone-less timestamps by arithmetic; so a UTC
//! timestamp is handed over as zone-less (the same values: UTC instants and
//! UTC wall-clock times coincide) and the zone put back on the result.
//! Other zones go to DataFusion's function as they are.

use std::sync::Arc;

use arrow::array::{ArrayRef, make_array};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// DataFusion's `date_trunc`, given UTC timestamps as zone-less ones.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

/// The `date_trunc` function sessions use.
pub(crate) fn date_trunc() -> ScalarUDF {
    ScalarUDF::new_from_impl(UtcDateTrunc {
        inner: datafusion::functions::datetime::date_trunc(),
    })
}

/// Whether a zone name means UTC.
fn is_utc(zone: &str) -> bool {
    matches!(zone, "+00:00" | "+00" | "+0000" | "UTC" | "Z" | "Etc/UTC")
}

/// The UTC zone a timestamp type carries, if it carries UTC.
fn utc_zone(data_type: &DataType) -> Option<Arc<str>> {
    match data_type {
        DataType::Timestamp(_, Some(zone)) if is_utc(zone) => Some(Arc::clone(zone)),
        _ => None,
    }
}

/// `data_type` with its zone replaced by `zone`.
fn with_zone(data_type: &DataType, zone: Option<Arc<str>>) -> DataType {
    match data_type {
        DataType::Timestamp(unit, _) => DataType::Timestamp(*unit, zone),
        other => other.clone(),
    }
}

/// The same values under another timestamp zone, without copying them.
fn rezone(value: ColumnarValue, zone: Option<Arc<str>>) -> Result<ColumnarValue> {
    Ok(match value {
        ColumnarValue::Array(array) => {
            let data_type = with_zone(array.data_type(), zone);
            let data = array
                .to_data()
                .into_builder()
                .data_type(data_type)
                .build()?;
            ColumnarValue::Array(make_array(data) as ArrayRef)
        }
        ColumnarValue::Scalar(scalar) => ColumnarValue::Scalar(match scalar {
            ScalarValue::TimestampSecond(v, _) => ScalarValue::TimestampSecond(v, zone),
            ScalarValue::TimestampMillisecond(v, _) => ScalarValue::TimestampMillisecond(v, zone),
            ScalarValue::TimestampMicrosecond(v, _) => ScalarValue::TimestampMicrosecond(v, zone),
            ScalarValue::TimestampNanosecond(v, _) => ScalarValue::TimestampNanosecond(v, zone),
            other => other,
        }),
    })
}

fn rezone_field(field: &FieldRef, zone: Option<Arc<str>>) -> FieldRef {
    let data_type = with_zone(field.data_type(), zone);
    Arc::new(Field::clone(field).with_data_type(data_type))
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let zone = args.args.get(1).and_then(|v| utc_zone(&v.data_type()));
        let Some(zone) = zone else {
            return self.inner.invoke_with_args(args);
        };
        let value = args.args.remove(1);
        args.args.insert(1, rezone(value, None)?);
        if let Some(field) = args.arg_fields.get_mut(1) {
            *field = rezone_field(field, None);
        }
        args.return_field = rezone_field(&args.return_field, None);
        let truncated = self.inner.invoke_with_args(args)?;
        rezone(truncated, Some(zone))
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
    use arrow::array::{Array, TimestampMicrosecondArray};
    use arrow::datatypes::TimeUnit;
    use datafusion::config::ConfigOptions;

    fn truncate(udf: &ScalarUDF, unit: &str, values: &TimestampMicrosecondArray) -> ArrayRef {
        let array: ArrayRef = Arc::new(values.clone());
        let return_field: FieldRef = Arc::new(Field::new("t", array.data_type().clone(), true));
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(unit.to_string()))),
                ColumnarValue::Array(Arc::clone(&array)),
            ],
            arg_fields: vec![
                Arc::new(Field::new("u", DataType::Utf8, false)),
                Arc::clone(&return_field),
            ],
            number_rows: array.len(),
            return_field,
            config_options: Arc::new(ConfigOptions::default()),
        };
        udf.invoke_with_args(args)
            .and_then(|v| v.into_array(array.len()))
            .expect("date_trunc")
    }

    #[test]
    fn utc_timestamps_truncate_as_datafusion_truncates_them() {
        let ours = date_trunc();
        let theirs = datafusion::functions::datetime::date_trunc();
        // Around the epoch, leap days, before 1970 and far ahead.
        let micros: Vec<Option<i64>> = [
            -86_400_000_001,
            -1,
            0,
            1,
            951_782_400_000_000 + 3_599_999_999,
            1_735_689_599_999_999,
            1_735_689_600_000_000,
            4_102_444_800_123_456,
        ]
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
        for zone in ["+00:00", "UTC"] {
            let values = TimestampMicrosecondArray::from(micros.clone()).with_timezone(zone);
            for unit in [
                "microsecond",
                "millisecond",
                "second",
                "minute",
                "hour",
                "day",
                "week",
                "month",
                "quarter",
                "year",
            ] {
                let got = truncate(&ours, unit, &values);
                let expected = truncate(&theirs, unit, &values);
                assert_eq!(got.as_ref(), expected.as_ref(), "{unit} in {zone}");
                assert_eq!(
                    got.data_type(),
                    &DataType::Timestamp(TimeUnit::Microsecond, Some(zone.into()))
                );
            }
        }
    }

    #[test]
    fn other_zones_are_left_to_datafusion() {
        let values = TimestampMicrosecondArray::from(vec![Some(1_735_700_000_000_000)])
            .with_timezone("America/New_York");
        let ours = truncate(&date_trunc(), "day", &values);
        let theirs = truncate(
            &datafusion::functions::datetime::date_trunc(),
            "day",
            &values,
        );
        assert_eq!(ours.as_ref(), theirs.as_ref());
    }
}
