//! `to_char` with PostgreSQL's template patterns, for timestamps, dates,
//! intervals and numbers. DataFusion's `to_char` takes chrono's `%Y`
//! patterns and would print a PostgreSQL template back unchanged: a silently
//! wrong answer, so this one replaces it under the same name.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, IntervalMonthDayNanoType, IntervalUnit, TimeUnit};
use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The `to_char` function.
pub(crate) fn to_char() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToChar {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToChar {
    signature: Signature,
}

fn unsupported(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::QueryError::unsupported(message)))
}

const MICROS: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        "to_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [value, template] = args else {
            return Err(DataFusionError::Plan(
                "to_char takes a value and a template".into(),
            ));
        };
        let value = match value {
            DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            DataType::Date32 | DataType::Date64 => MICROS,
            DataType::Interval(_) | DataType::Duration(_) => {
                DataType::Interval(IntervalUnit::MonthDayNano)
            }
            DataType::Null => MICROS,
            t if t.is_numeric() => DataType::Float64,
            other => {
                return Err(DataFusionError::Plan(format!(
                    "function to_char({}, text) does not exist",
                    crate::format::pg_type_name(other)
                )));
            }
        };
        if !matches!(
            template,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        ) {
            return Err(DataFusionError::Plan(
                "to_char's template must be text".into(),
            ));
        }
        Ok(vec![value, DataType::Utf8])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (values, templates) = (&arrays[0], arrays[1].as_string::<i32>());
        let mut out = StringBuilder::new();
        for i in 0..rows.max(values.len()) {
            if values.is_null(i) || templates.is_null(i) {
                out.append_null();
                continue;
            }
            let template = templates.value(i);
            let text = match values.data_type() {
                DataType::Timestamp(_, _) => {
                    let micros = values
                        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                        .value(i);
                    let at = DateTime::from_timestamp_micros(micros)
                        .ok_or_else(|| DataFusionError::Execution("timestamp out of range".into()))?
                        .naive_utc();
                    format_fields(&Fields::of_timestamp(at), template)
                }
                DataType::Interval(IntervalUnit::MonthDayNano) => {
                    let v = values.as_primitive::<IntervalMonthDayNanoType>().value(i);
                    format_fields(
                        &Fields::of_interval(v.months, v.days, v.nanoseconds),
                        template,
                    )
                }
                DataType::Float64 => format_number(
                    values
                        .as_primitive::<arrow::datatypes::Float64Type>()
                        .value(i),
                    template,
                )?,
                other => {
                    return Err(DataFusionError::Internal(format!(
                        "to_char got {other} after coercion"
                    )));
                }
            };
            out.append_value(text);
        }
        let array: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&array, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(array))
        }
    }
}

/// What a date/time template can print.
struct Fields {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    micros: i64,
    day_of_year: i64,
    /// 1 = Sunday, as `D` prints it.
    weekday: i64,
    iso_year: i64,
    iso_week: i64,
    julian: i64,
    is_interval: bool,
}

impl Fields {
    fn of_timestamp(t: NaiveDateTime) -> Fields {
        let iso = t.iso_week();
        Fields {
            year: i64::from(t.year()),
            month: i64::from(t.month()),
            day: i64::from(t.day()),
            hour: i64::from(t.hour()),
            minute: i64::from(t.minute()),
            second: i64::from(t.second()),
            micros: i64::from(t.nanosecond() / 1000),
            day_of_year: i64::from(t.ordinal()),
            weekday: i64::from(t.weekday().num_days_from_sunday()) + 1,
            iso_year: i64::from(iso.year()),
            iso_week: i64::from(iso.week()),
            julian: i64::from(t.date().num_days_from_ce()) + 1_721_425,
            is_interval: false,
        }
    }

    fn of_interval(months: i32, days: i32, nanos: i64) -> Fields {
        let micros = nanos / 1000;
        Fields {
            year: i64::from(months / 12),
            month: i64::from(months % 12),
            day: i64::from(days),
            hour: micros / 3_600_000_000,
            minute: micros / 60_000_000 % 60,
            second: micros / 1_000_000 % 60,
            micros: micros % 1_000_000,
            day_of_year: 0,
            weekday: 0,
            iso_year: 0,
            iso_week: 0,
            julian: 0,
            is_interval: true,
        }
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Template patterns, longest first so `HH24` wins over `HH`, and `SSSS`
/// over `SS`.
const PATTERNS: &[&str] = &[
    "A.M.", "a.m.", "P.M.", "p.m.", "HH24", "HH12", "SSSSS", "SSSS", "YYYY", "IYYY", "MONTH",
    "Month", "month", "YYY", "MON", "Mon", "mon", "DAY", "Day", "day", "DDD", "HH", "MI", "SS",
    "MS", "US", "AM", "am", "PM", "pm", "YY", "MM", "DY", "Dy", "dy", "DD", "ID", "IW", "WW", "CC",
    "TZ", "tz", "OF", "Y", "D", "Q", "J",
];

fn case_of(word: &str, like: &str) -> String {
    if like.chars().all(|c| !c.is_lowercase()) {
        word.to_uppercase()
    } else if like.chars().all(|c| !c.is_uppercase()) {
        word.to_lowercase()
    } else {
        word.to_string()
    }
}

fn ordinal(n: i64, upper: bool) -> &'static str {
    let suffix = match (n % 100, n % 10) {
        (11..=13, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    };
    match (upper, suffix) {
        (false, s) => s,
        (true, "st") => "ST",
        (true, "nd") => "ND",
        (true, "rd") => "RD",
        (true, _) => "TH",
    }
}

/// Prints `fields` by a PostgreSQL template.
fn format_fields(f: &Fields, template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    let mut fill = false;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            let mut chars = rest[1..].char_indices();
            let mut end = rest.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            out.push(next);
                        }
                    }
                    '"' => {
                        end = i + 2;
                        break;
                    }
                    c => out.push(c),
                }
            }
            rest = &rest[end.min(rest.len())..];
            continue;
        }
        if c == '\\' {
            let mut chars = rest.chars();
            chars.next();
            if let Some(next) = chars.next() {
                out.push(next);
            }
            rest = chars.as_str();
            continue;
        }
        if rest.len() >= 2 && rest[..2].eq_ignore_ascii_case("FM") {
            fill = true;
            rest = &rest[2..];
            continue;
        }
        let Some(pattern) = PATTERNS.iter().find(|p| {
            rest.get(..p.len()).is_some_and(|head| {
                // Names print in the case they are written; numbers match any case.
                if p.chars().any(char::is_alphabetic)
                    && [
                        "MONTH", "MON", "DAY", "DY", "AM", "PM", "A.M.", "P.M.", "TZ",
                    ]
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(p))
                {
                    head == **p
                } else {
                    head.eq_ignore_ascii_case(p)
                }
            })
        }) else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        rest = &rest[pattern.len()..];
        let number = |value: i64, width: usize| -> String {
            if fill {
                value.to_string()
            } else if value < 0 {
                format!("-{:0width$}", -value, width = width)
            } else {
                format!("{value:0width$}")
            }
        };
        let hour12 = match f.hour % 12 {
            0 if !f.is_interval => 12,
            h => h,
        };
        let meridiem = if f.hour >= 12 { "PM" } else { "AM" };
        let (text, value) = match pattern.to_ascii_uppercase().as_str() {
            "HH24" => (number(f.hour, 2), Some(f.hour)),
            "HH12" | "HH" => (number(hour12, 2), Some(hour12)),
            "MI" => (number(f.minute, 2), Some(f.minute)),
            "SS" => (number(f.second, 2), Some(f.second)),
            "SSSS" | "SSSSS" => {
                let s = f.hour * 3600 + f.minute * 60 + f.second;
                (s.to_string(), Some(s))
            }
            "MS" => (number(f.micros / 1000, 3), Some(f.micros / 1000)),
            "US" => (number(f.micros, 6), Some(f.micros)),
            "AM" | "PM" => (case_of(meridiem, pattern), None),
            "A.M." | "P.M." => (
                case_of(if f.hour >= 12 { "P.M." } else { "A.M." }, pattern),
                None,
            ),
            "YYYY" => (number(f.year, 4), Some(f.year)),
            "IYYY" => (number(f.iso_year, 4), Some(f.iso_year)),
            "YYY" => (number(f.year % 1000, 3), Some(f.year % 1000)),
            "YY" => (number(f.year % 100, 2), Some(f.year % 100)),
            "Y" => (number(f.year % 10, 1), Some(f.year % 10)),
            "MM" => (number(f.month, 2), Some(f.month)),
            "DD" => (number(f.day, 2), Some(f.day)),
            "DDD" => (number(f.day_of_year, 3), Some(f.day_of_year)),
            "D" => (number(f.weekday, 1), Some(f.weekday)),
            "ID" => {
                let iso = (f.weekday + 5) % 7 + 1;
                (number(iso, 1), Some(iso))
            }
            "IW" => (number(f.iso_week, 2), Some(f.iso_week)),
            "WW" => {
                let w = (f.day_of_year - 1) / 7 + 1;
                (number(w, 2), Some(w))
            }
            "Q" => {
                let q = (f.month - 1) / 3 + 1;
                (number(q, 1), Some(q))
            }
            "CC" => {
                let cc = if f.year > 0 {
                    (f.year - 1) / 100 + 1
                } else {
                    f.year / 100 - 1
                };
                (number(cc, 2), Some(cc))
            }
            "J" => (f.julian.to_string(), Some(f.julian)),
            "TZ" => (case_of("UTC", pattern), None),
            "OF" => ("+00".to_string(), None),
            "MONTH" | "MON" | "DAY" | "DY" if f.is_interval => (String::new(), None),
            "MONTH" => {
                let name = case_of(MONTHS[(f.month - 1).clamp(0, 11) as usize], pattern);
                (pad_name(name, fill), None)
            }
            "MON" => (
                case_of(&MONTHS[(f.month - 1).clamp(0, 11) as usize][..3], pattern),
                None,
            ),
            "DAY" => {
                let name = case_of(DAYS[(f.weekday - 1).clamp(0, 6) as usize], pattern);
                (pad_name(name, fill), None)
            }
            "DY" => (
                case_of(&DAYS[(f.weekday - 1).clamp(0, 6) as usize][..3], pattern),
                None,
            ),
            _ => (pattern.to_string(), None),
        };
        out.push_str(&text);
        if let Some(v) = value
            && rest.len() >= 2
            && rest[..2].eq_ignore_ascii_case("TH")
        {
            out.push_str(ordinal(v, &rest[..2] == "TH"));
            rest = &rest[2..];
        }
        fill = false;
    }
    out
}

/// Month and day names take nine characters unless `FM` is given.
fn pad_name(name: String, fill: bool) -> String {
    if fill { name } else { format!("{name:<9}") }
}

/// Prints a number by a template of `9`, `0`, `.`/`D`, `,`/`G`, with `FM`
/// and `S`/`MI` (other number patterns are refused).
fn format_number(value: f64, template: &str) -> Result<String> {
    let mut fill = false;
    let mut body = template;
    if body.len() >= 2 && body[..2].eq_ignore_ascii_case("FM") {
        fill = true;
        body = &body[2..];
    }
    let (sign_first, sign_last) = {
        let upper = body.to_ascii_uppercase();
        (
            upper.starts_with('S'),
            upper.ends_with('S') || upper.ends_with("MI"),
        )
    };
    let core = body
        .trim_start_matches(['S', 's'])
        .trim_end_matches(['S', 's'])
        .trim_end_matches("MI")
        .trim_end_matches("mi");
    if core.is_empty()
        || !core
            .chars()
            .all(|c| matches!(c, '9' | '0' | '.' | 'D' | 'd' | ',' | 'G' | 'g'))
        || core
            .chars()
            .filter(|c| matches!(c, '.' | 'D' | 'd'))
            .count()
            > 1
    {
        return Err(unsupported(format!(
            "to_char number template \"{template}\": Lookout supports 9, 0, . or D, , or G, FM, S and MI"
        )));
    }
    let (int_part, frac_part) = match core.find(['.', 'D', 'd']) {
        Some(i) => (&core[..i], Some(&core[i + 1..])),
        None => (core, None),
    };
    let frac_digits = frac_part.map_or(0, |f| f.chars().filter(|c| matches!(c, '9' | '0')).count());
    let int_slots: Vec<char> = int_part.chars().collect();
    let int_digits = int_slots.iter().filter(|c| matches!(c, '9' | '0')).count();
    let negative = value < 0.0;
    let text = format!("{:.*}", frac_digits, value.abs());
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w.to_string(), f.to_string()),
        None => (text, String::new()),
    };
    let whole = whole.trim_start_matches('0');
    let sign = if negative {
        "-"
    } else if sign_first || sign_last {
        "+"
    } else if fill {
        ""
    } else {
        " "
    };
    if whole.len() > int_digits {
        let hashes: String = core
            .chars()
            .map(|c| match c {
                '9' | '0' => '#',
                '.' | 'D' | 'd' => '.',
                _ => ',',
            })
            .collect();
        return Ok(format!("{}{hashes}", if fill { "" } else { " " }));
    }
    // Integer part, right-aligned in its slots: digits, zeros from the first
    // `0` slot on, spaces before (dropped with FM).
    let first_zero = int_slots.iter().position(|c| *c == '0');
    let mut digits = whole.chars().rev();
    let mut printed = Vec::new();
    let mut slot_from_right = 0usize;
    let digit_slots = int_digits;
    let mut started_at = None;
    for (i, slot) in int_slots.iter().enumerate().rev() {
        match slot {
            '9' | '0' => {
                slot_from_right += 1;
                let forced = first_zero.is_some_and(|z| i >= z)
                    || (whole.is_empty() && slot_from_right == 1 && frac_digits == 0);
                match digits.next() {
                    Some(d) => {
                        printed.push(d);
                        started_at = Some(i);
                    }
                    None if forced => {
                        printed.push('0');
                        started_at = Some(i);
                    }
                    None => printed.push(' '),
                }
            }
            _ => printed.push(','),
        }
    }
    let _ = digit_slots;
    printed.reverse();
    let mut int_text = String::new();
    for (i, c) in printed.iter().enumerate() {
        let before_start = started_at.is_none_or(|s| i < s);
        if before_start {
            if !fill {
                int_text.push(' ');
            }
        } else {
            int_text.push(*c);
        }
    }
    let mut out = String::new();
    if sign_last {
        out.push_str(&int_text);
    } else {
        // The sign sits just before the first digit.
        let lead = int_text.len() - int_text.trim_start().len();
        out.push_str(&int_text[..lead]);
        out.push_str(sign);
        out.push_str(&int_text[lead..]);
    }
    if let Some(frac_template) = frac_part {
        out.push('.');
        let mut frac: Vec<char> = fraction.chars().collect();
        if fill {
            let slots: Vec<char> = frac_template
                .chars()
                .filter(|c| matches!(c, '9' | '0'))
                .collect();
            while let (Some('0'), Some('9')) = (frac.last(), slots.get(frac.len().wrapping_sub(1)))
            {
                frac.pop();
            }
        }
        out.extend(frac);
    }
    if sign_last {
        out.push_str(if negative {
            "-"
        } else if body.to_ascii_uppercase().ends_with("MI") {
            if fill { "" } else { " " }
        } else {
            "+"
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Fields {
        Fields::of_timestamp(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap())
    }

    #[test]
    fn timestamps_print_as_postgres_prints_them() {
        let t = at("2025-03-07 14:05:09.123456");
        for (template, expected) in [
            ("YYYY-MM-DD HH24:MI", "2025-03-07 14:05"),
            ("YYYY-MM-DD\"T\"HH24:MI:SS.MS", "2025-03-07T14:05:09.123"),
            ("HH12:MI AM", "02:05 PM"),
            ("FMHH12:MI pm", "2:05 pm"),
            ("Month DD, YYYY", "March     07, 2025"),
            ("FMMonth FMDDth", "March 7th"),
            ("Dy Mon DD", "Fri Mar 07"),
            ("DAY", "FRIDAY   "),
            ("IYYY-\"W\"IW-ID", "2025-W10-5"),
            ("Q DDD D US", "1 066 6 123456"),
            ("yyyy/mm/dd hh24", "2025/03/07 14"),
        ] {
            assert_eq!(format_fields(&t, template), expected, "{template}");
        }
    }

    #[test]
    fn intervals_print_their_fields() {
        let f = Fields::of_interval(0, 1, 30 * 3_600_000_000_000 + 5 * 60_000_000_000);
        assert_eq!(format_fields(&f, "DD HH24:MI:SS"), "01 30:05:00");
    }

    #[test]
    fn numbers_print_as_postgres_prints_them() {
        for (value, template, expected) in [
            (123.456, "999.99", " 123.46"),
            (-5.0, "999", "  -5"),
            (5.0, "000", " 005"),
            (1.5, "FM999.99", "1.5"),
            (1234567.0, "9,999,999", " 1,234,567"),
            (12.0, "9,999", "    12"),
            (0.5, "0.99", " 0.50"),
            (0.0, "999", "   0"),
            (1000.0, "99", " ##"),
            (-12.5, "FM999.0", "-12.5"),
        ] {
            assert_eq!(
                format_number(value, template).unwrap(),
                expected,
                "{value} {template}"
            );
        }
        assert!(format_number(1.0, "9.99EEEE").is_err());
    }
}
