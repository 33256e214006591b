//! Values in PostgreSQL's text form, as `psql`, drivers and `COPY` expect them.

use std::fmt::Write as _;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDate};

/// The Postgres name of the type a column of `dt` is shown as.
pub fn pg_type_name(dt: &DataType) -> &'static str {
    match dt {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::UInt32 => "oid",
        DataType::Int64 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => "numeric",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Interval(_) | DataType::Duration(_) => "interval",
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => "array",
        _ => "text",
    }
}

/// Appends the text form of `array[row]` to `out`; returns false for NULL.
pub fn write_value(array: &dyn Array, row: usize, out: &mut String) -> bool {
    // A NullArray has no validity buffer, so is_null() alone says false.
    if array.is_null(row) || array.data_type() == &DataType::Null {
        return false;
    }
    match array.data_type() {
        DataType::Boolean => out.push(if array.as_boolean().value(row) {
            't'
        } else {
            'f'
        }),
        DataType::Int8 => push_int(out, array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => push_int(out, array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => push_int(out, array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => push_int(out, array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => push_int(out, array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => push_int(out, array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => push_int(out, array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => push_int(out, array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => push_shortest(out, array.as_primitive::<Float32Type>().value(row), 6),
        DataType::Float64 => push_float(out, array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => out.push_str(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => out.push_str(array.as_string::<i64>().value(row)),
        DataType::Utf8View => out.push_str(array.as_string_view().value(row)),
        DataType::Binary => push_hex(out, array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => push_hex(out, array.as_binary::<i64>().value(row)),
        DataType::BinaryView => push_hex(out, array.as_binary_view().value(row)),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            match NaiveDate::from_num_days_from_ce_opt(days + 719_163) {
                Some(d) => {
                    let _ = write!(out, "{}", d.format("%Y-%m-%d"));
                }
                None => push_int(out, days),
            }
        }
        DataType::Timestamp(unit, tz) => {
            let micros = timestamp_micros(array, unit, row);
            push_timestamp(out, micros, tz.is_some());
        }
        DataType::Interval(_) | DataType::Duration(_) => match interval_parts(array, row) {
            Some(parts) => push_interval(out, parts),
            None => out.push('?'),
        },
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let values = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(row),
                DataType::LargeList(_) => array.as_list::<i64>().value(row),
                _ => array.as_fixed_size_list().value(row),
            };
            out.push('{');
            let mut item = String::new();
            for i in 0..values.len() {
                if i > 0 {
                    out.push(',');
                }
                item.clear();
                if write_value(values.as_ref(), i, &mut item) {
                    let needs_quotes = item.is_empty()
                        || item.eq_ignore_ascii_case("null")
                        || item
                            .chars()
                            .any(|c| matches!(c, ',' | '{' | '}' | '"' | '\\' | ' '));
                    if needs_quotes {
                        out.push('"');
                        for c in item.chars() {
                            if c == '"' || c == '\\' {
                                out.push('\\');
                            }
                            out.push(c);
                        }
                        out.push('"');
                    } else {
                        out.push_str(&item);
                    }
                } else {
                    out.push_str("NULL");
                }
            }
            out.push('}');
        }
        _ => {
            let opts = FormatOptions::default();
            match ArrayFormatter::try_new(array, &opts) {
                Ok(f) => {
                    let _ = write!(out, "{}", f.value(row));
                }
                Err(_) => out.push('?'),
            }
        }
    }
    true
}

/// An interval as Postgres keeps it: months, days and microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalParts {
    /// Whole months (a year is 12).
    pub months: i32,
    /// Whole days.
    pub days: i32,
    /// The rest, in microseconds (nanoseconds are truncated).
    pub micros: i64,
}

/// The months, days and microseconds of an interval or duration value.
pub fn interval_parts(array: &dyn Array, row: usize) -> Option<IntervalParts> {
    use arrow::datatypes::{
        DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
        DurationSecondType, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
        IntervalYearMonthType,
    };
    let parts = |months, days, micros| IntervalParts {
        months,
        days,
        micros,
    };
    Some(match array.data_type() {
        DataType::Interval(IntervalUnit::YearMonth) => parts(
            array.as_primitive::<IntervalYearMonthType>().value(row),
            0,
            0,
        ),
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = array.as_primitive::<IntervalDayTimeType>().value(row);
            parts(0, v.days, i64::from(v.milliseconds) * 1000)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            parts(v.months, v.days, v.nanoseconds / 1000)
        }
        DataType::Duration(unit) => {
            let micros = match unit {
                TimeUnit::Second => array
                    .as_primitive::<DurationSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => array
                    .as_primitive::<DurationMillisecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Microsecond => array.as_primitive::<DurationMicrosecondType>().value(row),
                TimeUnit::Nanosecond => {
                    array.as_primitive::<DurationNanosecondType>().value(row) / 1000
                }
            };
            parts(0, 0, micros)
        }
        _ => return None,
    })
}

/// Postgres's default interval style: `1 year 2 mons 3 days 04:05:06.5`.
fn push_interval(out: &mut String, v: IntervalParts) {
    let mut fields: Vec<String> = Vec::new();
    let (years, months) = (v.months / 12, v.months % 12);
    for (n, unit) in [(years, "year"), (months, "mon"), (v.days, "day")] {
        if n != 0 {
            let plural = if n.abs() == 1 { "" } else { "s" };
            fields.push(format!("{n} {unit}{plural}"));
        }
    }
    if v.micros != 0 || fields.is_empty() {
        let sign = if v.micros < 0 { "-" } else { "" };
        let m = v.micros.unsigned_abs();
        let (h, rest) = (m / 3_600_000_000, m % 3_600_000_000);
        let (min, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (sec, frac) = (rest / 1_000_000, rest % 1_000_000);
        let mut time = format!("{sign}{h:02}:{min:02}:{sec:02}");
        if frac != 0 {
            let digits = format!("{frac:06}");
            time.push('.');
            time.push_str(digits.trim_end_matches('0'));
        }
        fields.push(time);
    }
    out.push_str(&fields.join(" "));
}

/// A timestamp value of any unit in microseconds since the Unix epoch.
pub fn timestamp_micros(array: &dyn Array, unit: &TimeUnit, row: usize) -> i64 {
    match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1000),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => array
            .as_primitive::<TimestampNanosecondType>()
            .value(row)
            .div_euclid(1000),
    }
}

fn push_int<T: itoa::Integer>(out: &mut String, v: T) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Shortest text that reads back as the same float, spelled as
/// PostgreSQL's `float8out` spells it: plain digits for decimal exponents
/// from -4 to 14, else `1.5e-07` / `1e+15`; `NaN`, `Infinity`.
pub fn push_float(out: &mut String, v: f64) {
    push_shortest(out, v, 15);
}

/// A float in the shortest text that reads back as the same value of its
/// own width, as PostgreSQL 12+ prints `real` and `double precision`: a
/// `real` 0.1 is `0.1`, not the double nearest to it. As C's `%g` with the
/// type's precision (`digits`: 15 for double, 6 for real), exponents from
/// -4 to `digits - 1` print in plain digits.
fn push_shortest<F>(out: &mut String, value: F, digits: i32)
where
    F: ryu::Float + std::fmt::LowerExp + Into<f64> + Copy,
{
    let v: f64 = value.into();
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let magnitude = v.abs();
    if magnitude == 0.0 || (1e-4..10f64.powi(digits)).contains(&magnitude) {
        // ryu writes this range in plain digits, as PostgreSQL does.
        out.push_str(
            ryu::Buffer::new()
                .format_finite(value)
                .trim_end_matches(".0"),
        );
        return;
    }
    // Rust's `{:e}` is the shortest round-trip form: `-1.2345e3`.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..digits).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exponent.abs());
        return;
    }
    if mantissa.starts_with('-') {
        out.push('-');
    }
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if exponent < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.push_str(&digits);
    } else {
        let point = exponent as usize + 1;
        if digits.len() <= point {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point - digits.len()));
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    out.push_str("\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// `2025-01-07 14:03:05.25+00`: ISO date style, the time zone is always UTC.
pub fn push_timestamp(out: &mut String, micros: i64, with_zone: bool) {
    let Some(dt) = DateTime::from_timestamp_micros(micros) else {
        push_int(out, micros);
        return;
    };
    let _ = write!(out, "{}", dt.format("%Y-%m-%d %H:%M:%S"));
    let frac = micros.rem_euclid(1_000_000);
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    if with_zone {
        out.push_str("+00");
    }
}

/// The elements of a one-dimensional array literal in PostgreSQL's text
/// form (`{a,"b c",NULL}`), `None` for NULL.
pub fn parse_array_text(text: &str) -> Result<Vec<Option<String>>, String> {
    let bad = || format!("malformed array literal: \"{text}\"");
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(bad)?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.push(chars.next().ok_or_else(bad)?),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(bad()),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '}' || c == '"' {
                    return Err(format!(
                        "{}: only one-dimensional arrays are supported",
                        bad()
                    ));
                }
                chars.next();
                if c == '\\' {
                    item.push(chars.next().ok_or_else(bad)?);
                } else {
                    item.push(c);
                }
            }
            item = item.trim_end().to_string();
            if item.is_empty() {
                return Err(bad());
            }
        }
        out.push((quoted || !item.eq_ignore_ascii_case("NULL")).then_some(item));
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(_) => return Err(bad()),
        }
    }
    Ok(out)
}

/// The numbers of an array of floats in PostgreSQL's text form
/// (`{0.1,2,NULL}`) or pgvector's (`[0.1,2]`), `None` for a NULL element.
pub fn parse_float_array(text: &str) -> Result<Vec<Option<f64>>, String> {
    let trimmed = text.trim();
    let items: Vec<Option<String>> =
        match trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(inner) if inner.trim().is_empty() => Vec::new(),
            Some(inner) => inner
                .split(',')
                .map(|v| Some(v.trim().to_string()))
                .collect(),
            None => parse_array_text(trimmed)?,
        };
    items
        .into_iter()
        .map(|item| match item {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "nan" => Ok(Some(f64::NAN)),
                "infinity" | "inf" | "+infinity" => Ok(Some(f64::INFINITY)),
                "-infinity" | "-inf" => Ok(Some(f64::NEG_INFINITY)),
                _ => v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Some)
                    .ok_or_else(|| {
                        format!(
                            "invalid input syntax for type double precision: \"{v}\" in \"{text}\""
                        )
                    }),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, ListArray, TimestampMicrosecondArray};
    use arrow::datatypes::Float64Type;

    use super::*;

    fn text(a: &dyn Array, row: usize) -> Option<String> {
        let mut s = String::new();
        write_value(a, row, &mut s).then_some(s)
    }

    #[test]
    fn floats_and_timestamps_look_like_postgres() {
        let f = Float64Array::from(vec![
            Some(1.0),
            Some(0.1),
            Some(f64::NAN),
            None,
            Some(1234.5),
        ]);
        let shown: Vec<_> = (0..5).map(|i| text(&f, i)).collect();
        assert_eq!(
            shown,
            vec![
                Some("1".into()),
                Some("0.1".into()),
                Some("NaN".into()),
                None,
                Some("1234.5".into())
            ]
        );
        // Values and spellings from PostgreSQL 15.
        for (v, pg) in [
            (1e14, "100000000000000"),
            (1e15, "1e+15"),
            (123456789012345.6, "123456789012345.6"),
            (1234567890123456.7, "1.2345678901234568e+15"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (-2.5e-10, "-2.5e-10"),
            (100.0, "100"),
            (-0.5, "-0.5"),
            (1.0 / 3.0, "0.3333333333333333"),
            (0.0, "0"),
            (-0.0, "-0"),
            (999999999999999.9, "999999999999999.9"),
            (0.00012, "0.00012"),
            (2.5, "2.5"),
        ] {
            let mut shown = String::new();
            super::push_float(&mut shown, v);
            assert_eq!(shown, pg, "{v}");
        }
        let t = TimestampMicrosecondArray::from(vec![1_735_689_600_000_000, 1_735_689_600_250_000])
            .with_timezone("UTC");
        assert_eq!(text(&t, 0).as_deref(), Some("2025-01-01 00:00:00+00"));
        assert_eq!(text(&t, 1).as_deref(), Some("2025-01-01 00:00:00.25+00"));
    }

    #[test]
    fn float_arrays_in_both_notations() {
        assert_eq!(
            parse_float_array("{0.5, -2,NULL}").expect("braces"),
            vec![Some(0.5), Some(-2.0), None]
        );
        assert_eq!(
            parse_float_array(" [1e-3,4] ").expect("brackets"),
            vec![Some(0.001), Some(4.0)]
        );
        assert_eq!(parse_float_array("[]").expect("empty"), vec![]);
        for bad in ["{a}", "[1,,2]", "1,2", "{{1,2}}", "[1e999]", "[NULL]"] {
            assert!(parse_float_array(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reals_print_as_postgres_prints_float4() {
        // PostgreSQL 15: SELECT 0.1::real, 1e-7::real, ... as below.
        let reals = arrow::array::Float32Array::from(vec![
            0.1f32,
            1.0e-7,
            3.4e38,
            -2.5,
            1.0e15,
            123_456.7,
            1_234_567.0,
            0.0001,
        ]);
        let got: Vec<String> = (0..reals.len())
            .map(|i| text(&reals, i).expect("value"))
            .collect();
        assert_eq!(
            got,
            [
                "0.1",
                "1e-07",
                "3.4e+38",
                "-2.5",
                "1e+15",
                "123456.7",
                "1.234567e+06",
                "0.0001"
            ]
        );
    }

    #[test]
    fn arrays_use_braces() {
        let l =
            ListArray::from_iter_primitive::<Float64Type, _, _>(vec![Some(vec![Some(1.5), None])]);
        let l: Arc<dyn Array> = Arc::new(l);
        assert_eq!(text(l.as_ref(), 0).as_deref(), Some("{1.5,NULL}"));
    }

    #[test]
    fn intervals_in_postgres_style() {
        use arrow::array::IntervalMonthDayNanoArray;
        use arrow::datatypes::IntervalMonthDayNano;
        let a = IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(14, 3, 4 * 3_600_000_000_000 + 5_500_000_000),
            IntervalMonthDayNano::new(0, 1, 0),
            IntervalMonthDayNano::new(0, 0, 0),
            IntervalMonthDayNano::new(0, -2, -90_000_000_000),
        ]);
        let shown: Vec<_> = (0..4).map(|i| text(&a, i).unwrap_or_default()).collect();
        assert_eq!(
            shown,
            [
                "1 year 2 mons 3 days 04:00:05.5",
                "1 day",
                "00:00:00",
                "-2 days -00:01:30"
            ]
        );
    }
}
