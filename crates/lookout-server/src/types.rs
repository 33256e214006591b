//! Arrow values on the wire: type OIDs, text and binary encodings, and
//! parameter decoding.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use bytes::{BufMut, BytesMut};
use lookout_query::ScalarValue;
use lookout_query::format::{IntervalParts, interval_parts, timestamp_micros, write_value};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::data::DataRow;

/// Microseconds between the Unix epoch and Postgres's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The Postgres type a column of `dt` is sent as.
pub(crate) fn pg_type(dt: &DataType) -> Type {
    match dt {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        // Unsigned 32-bit is what Postgres's `oid` is.
        DataType::UInt32 => Type::OID,
        DataType::Int64 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => Type::NUMERIC,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Interval(_) | DataType::Duration(_) => Type::INTERVAL,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            match pg_type(f.data_type()) {
                Type::BOOL => Type::BOOL_ARRAY,
                Type::INT2 => Type::INT2_ARRAY,
                Type::INT4 => Type::INT4_ARRAY,
                Type::INT8 => Type::INT8_ARRAY,
                Type::OID => Type::OID_ARRAY,
                Type::FLOAT4 => Type::FLOAT4_ARRAY,
                Type::FLOAT8 => Type::FLOAT8_ARRAY,
                Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
                Type::TIMESTAMP => Type::TIMESTAMP_ARRAY,
                Type::DATE => Type::DATE_ARRAY,
                Type::NUMERIC => Type::NUMERIC_ARRAY,
                _ => Type::TEXT_ARRAY,
            }
        }
        _ => Type::TEXT,
    }
}

/// Whether we can send a column of `dt` in binary; others go as text.
fn binary_capable(dt: &DataType) -> bool {
    match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            binary_capable(f.data_type()) && !matches!(f.data_type(), DataType::List(_))
        }
        DataType::Decimal256(_, _) => false,
        _ => true,
    }
}

/// Row description for a result schema in the requested formats.
pub(crate) fn fields(schema: &arrow::datatypes::Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let wanted = format.format_for(i);
            let fmt = if wanted == FieldFormat::Binary && binary_capable(f.data_type()) {
                FieldFormat::Binary
            } else {
                FieldFormat::Text
            };
            let ty = match pg_type(f.data_type()) {
                Type::TEXT => match lookout_query::json_kind(f) {
                    Some(lookout_query::JsonKind::Json) => Type::JSON,
                    Some(lookout_query::JsonKind::Jsonb) => Type::JSONB,
                    None => Type::TEXT,
                },
                Type::INT4 if lookout_query::is_oid_field(f) => Type::OID,
                Type::INT4_ARRAY if lookout_query::is_oid_field(f) => Type::OID_ARRAY,
                ty => ty,
            };
            FieldInfo::new(f.name().clone(), None, None, ty, fmt)
        })
        .collect()
}

/// Encodes every row of `batch` as a `DataRow`.
pub(crate) fn encode_rows(batch: &RecordBatch, fields: &[FieldInfo], out: &mut Vec<DataRow>) {
    let mut text = String::new();
    for row in 0..batch.num_rows() {
        let mut buf = BytesMut::with_capacity(16 * batch.num_columns());
        for (col, field) in batch.columns().iter().zip(fields) {
            if col.is_null(row) || col.data_type() == &DataType::Null {
                buf.put_i32(-1);
                continue;
            }
            let len_at = buf.len();
            buf.put_i32(0);
            if field.format() == FieldFormat::Binary {
                // jsonb's binary form is a version byte, then the text.
                if field.datatype() == &Type::JSONB {
                    buf.put_u8(1);
                }
                write_binary(
                    col.as_ref(),
                    row,
                    &mut buf,
                    field.datatype() == &Type::OID_ARRAY,
                );
            } else {
                text.clear();
                write_value(col.as_ref(), row, &mut text);
                buf.put_slice(text.as_bytes());
            }
            let len = (buf.len() - len_at - 4) as i32;
            buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        }
        out.push(DataRow::new(buf, batch.num_columns() as i16));
    }
}

/// Postgres binary encoding of a non-null value.
fn write_binary(array: &dyn Array, row: usize, buf: &mut BytesMut, oid_elements: bool) {
    match array.data_type() {
        DataType::Boolean => buf.put_u8(u8::from(array.as_boolean().value(row))),
        DataType::Int8 => buf.put_i16(i16::from(array.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => buf.put_i16(array.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => buf.put_i16(i16::from(array.as_primitive::<UInt8Type>().value(row))),
        DataType::Int32 => buf.put_i32(array.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => buf.put_i32(i32::from(array.as_primitive::<UInt16Type>().value(row))),
        DataType::Int64 => buf.put_i64(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => buf.put_u32(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => buf.put_i64(array.as_primitive::<UInt64Type>().value(row) as i64),
        DataType::Float32 => buf.put_f32(array.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => buf.put_f64(array.as_primitive::<Float64Type>().value(row)),
        DataType::Date32 => {
            buf.put_i32(array.as_primitive::<Date32Type>().value(row) - PG_EPOCH_DAYS)
        }
        DataType::Timestamp(unit, _) => {
            buf.put_i64(timestamp_micros(array, unit, row) - PG_EPOCH_MICROS)
        }
        DataType::Binary => buf.put_slice(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => buf.put_slice(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => buf.put_slice(array.as_binary_view().value(row)),
        DataType::Interval(_) | DataType::Duration(_) => {
            let v = interval_parts(array, row).unwrap_or(IntervalParts {
                months: 0,
                days: 0,
                micros: 0,
            });
            buf.put_i64(v.micros);
            buf.put_i32(v.days);
            buf.put_i32(v.months);
        }
        DataType::Decimal128(_, scale) => write_numeric(
            array.as_primitive::<Decimal128Type>().value(row),
            *scale,
            buf,
        ),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let values: ArrayRef = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(row),
                DataType::LargeList(_) => array.as_list::<i64>().value(row),
                _ => array.as_fixed_size_list().value(row),
            };
            let elem = match pg_type(values.data_type()) {
                Type::INT4 if oid_elements => Type::OID,
                t => t,
            };
            buf.put_i32(1);
            buf.put_i32(i32::from(values.null_count() > 0));
            buf.put_u32(elem.oid());
            buf.put_i32(values.len() as i32);
            buf.put_i32(1);
            for i in 0..values.len() {
                if values.is_null(i) || values.data_type() == &DataType::Null {
                    buf.put_i32(-1);
                    continue;
                }
                let at = buf.len();
                buf.put_i32(0);
                write_binary(values.as_ref(), i, buf, false);
                let len = (buf.len() - at - 4) as i32;
                buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        _ => {
            let mut s = String::new();
            write_value(array, row, &mut s);
            buf.put_slice(s.as_bytes());
        }
    }
}

/// Postgres's binary numeric: base-10000 digits, most significant first, with
/// the weight of the first digit and the display scale.
fn write_numeric(value: i128, scale: i8, buf: &mut BytesMut) {
    let (value, scale) = if scale < 0 {
        (
            value.saturating_mul(10i128.pow(u32::from(scale.unsigned_abs()))),
            0,
        )
    } else {
        (value, scale as usize)
    };
    let digits = value.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int_part, frac_part) = digits.split_at(digits.len() - scale);
    // Pad to whole groups of four: the integer part on the left, the fraction on the right.
    let int_part = format!(
        "{int_part:0>width$}",
        width = int_part.len().div_ceil(4) * 4
    );
    let frac_part = format!(
        "{frac_part:0<width$}",
        width = frac_part.len().div_ceil(4) * 4
    );
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
            .collect()
    };
    let mut groups = group(&int_part);
    let mut weight = groups.len() as i16 - 1;
    groups.extend(group(&frac_part));
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    buf.put_i16(groups.len() as i16);
    buf.put_i16(weight);
    buf.put_u16(if value < 0 { 0x4000 } else { 0 });
    buf.put_i16(scale as i16);
    for g in groups {
        buf.put_i16(g);
    }
}

/// The value of a binary numeric parameter, as a float.
fn read_numeric(bytes: &[u8]) -> Result<f64, String> {
    let field = |i: usize| -> Result<i16, String> {
        Ok(i16::from_be_bytes(be(bytes
            .get(i..i + 2)
            .unwrap_or_default())?))
    };
    let (ndigits, weight, sign) = (field(0)?, field(2)?, field(4)? as u16);
    if sign == 0xC000 {
        return Ok(f64::NAN);
    }
    let mut value = 0f64;
    for i in 0..ndigits.max(0) as usize {
        let digit = f64::from(field(8 + 2 * i)?);
        value += digit * 10000f64.powi(i32::from(weight) - i as i32);
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

/// A one-dimensional binary array parameter of integers, floats or text.
fn read_array(bytes: &[u8]) -> Result<ScalarValue, String> {
    let mut at = 0usize;
    let mut next = |n: usize| -> Result<&[u8], String> {
        let s = bytes
            .get(at..at + n)
            .ok_or_else(|| "truncated binary array".to_string())?;
        at += n;
        Ok(s)
    };
    let ndim = i32::from_be_bytes(be(next(4)?)?);
    let _has_nulls = next(4)?;
    let elem = Type::from_oid(u32::from_be_bytes(be(next(4)?)?)).unwrap_or(Type::TEXT);
    let len = match ndim {
        0 => 0,
        1 => {
            let len = i32::from_be_bytes(be(next(4)?)?);
            let _lower_bound = next(4)?;
            len.max(0) as usize
        }
        _ => return Err("multi-dimensional array parameters are not supported".into()),
    };
    let elem_type = match elem {
        Type::OID => DataType::UInt32,
        ref t => arrow_type_of(t).unwrap_or(DataType::Utf8),
    };
    let mut values = Vec::with_capacity(len);
    for _ in 0..len {
        let n = i32::from_be_bytes(be(next(4)?)?);
        let value = if n < 0 {
            ScalarValue::try_from(&elem_type).map_err(|e| e.to_string())?
        } else {
            let raw = next(n as usize)?;
            match elem {
                Type::OID => ScalarValue::UInt32(Some(u32::from_be_bytes(be(raw)?))),
                ref t => decode_param(Some(raw), true, t, &elem_type)?,
            }
        };
        values.push(value);
    }
    Ok(ScalarValue::List(ScalarValue::new_list_nullable(
        &values, &elem_type,
    )))
}

/// The Arrow type a parameter of Postgres type `ty` is decoded as.
pub(crate) fn arrow_type_of(ty: &Type) -> Option<DataType> {
    Some(match *ty {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 | Type::OID => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 | Type::NUMERIC => DataType::Float64,
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::JSON
        | Type::JSONB => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        ref array => match array.kind() {
            postgres_types::Kind::Array(element) => {
                let item = arrow_type_of(element)?;
                DataType::List(Arc::new(arrow::datatypes::Field::new("item", item, true)))
            }
            _ => return None,
        },
    })
}

fn be<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("binary parameter of {} bytes, expected {N}", bytes.len()))
}

/// Decodes one bound parameter into a value of `target` (the type the
/// planner wants), given the wire type the client declared.
pub(crate) fn decode_param(
    bytes: Option<&[u8]>,
    binary: bool,
    wire: &Type,
    target: &DataType,
) -> Result<ScalarValue, String> {
    let Some(bytes) = bytes else {
        return ScalarValue::try_from(target).map_err(|e| e.to_string());
    };
    let value = if binary {
        match *wire {
            Type::BOOL => ScalarValue::Boolean(Some(bytes.first().copied().unwrap_or(0) != 0)),
            Type::INT2 => ScalarValue::Int16(Some(i16::from_be_bytes(be(bytes)?))),
            Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(be(bytes)?))),
            Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(be(bytes)?))),
            Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(be(bytes)?))),
            Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(be(bytes)?))),
            Type::DATE => ScalarValue::Date32(Some(i32::from_be_bytes(be(bytes)?) + PG_EPOCH_DAYS)),
            Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
                Some(i64::from_be_bytes(be(bytes)?) + PG_EPOCH_MICROS),
                Some(Arc::from("UTC")),
            ),
            Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
                Some(i64::from_be_bytes(be(bytes)?) + PG_EPOCH_MICROS),
                None,
            ),
            Type::BYTEA => ScalarValue::Binary(Some(bytes.to_vec())),
            Type::NUMERIC => ScalarValue::Float64(Some(read_numeric(bytes)?)),
            _ if wire.name().starts_with('_') => read_array(bytes)?,
            Type::OID => ScalarValue::Int64(Some(i64::from(u32::from_be_bytes(be(bytes)?)))),
            // jsonb's binary form is a version byte, then the text.
            Type::JSONB => ScalarValue::Utf8(Some(
                String::from_utf8(bytes.get(1..).unwrap_or_default().to_vec())
                    .map_err(|e| e.to_string())?,
            )),
            _ => ScalarValue::Utf8(Some(
                String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?,
            )),
        }
    } else {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        // Embeddings: PostgreSQL's `{0.1,0.2}` or pgvector's `[0.1,0.2]`,
        // into a list or a fixed-size list (whose length the cast checks).
        if let DataType::List(item) | DataType::FixedSizeList(item, _) = target
            && matches!(item.data_type(), DataType::Float32 | DataType::Float64)
        {
            let values: Vec<ScalarValue> = lookout_query::format::parse_float_array(text)?
                .into_iter()
                .map(ScalarValue::Float64)
                .collect();
            return ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Float64))
                .cast_to(target)
                .map_err(|_| {
                    format!(
                        "invalid input syntax for type {}: \"{text}\" does not fit",
                        lookout_query::format::pg_type_name(target)
                    )
                });
        }
        if let DataType::List(item) = target {
            let element = match wire.kind() {
                postgres_types::Kind::Array(element) => element.clone(),
                _ => pg_type(item.data_type()),
            };
            let values = lookout_query::format::parse_array_text(text)?
                .into_iter()
                .map(|v| {
                    decode_param(
                        v.as_deref().map(str::as_bytes),
                        false,
                        &element,
                        item.data_type(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                &values,
                item.data_type(),
            )));
        }
        if matches!(target, DataType::Timestamp(_, _)) {
            let micros = lookout_query::copy::parse_timestamp_micros(text)
                .ok_or_else(|| format!("invalid input syntax for type timestamp: \"{text}\""))?;
            let tz = match target {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            };
            return ScalarValue::TimestampMicrosecond(Some(micros), tz)
                .cast_to(target)
                .map_err(|e| e.to_string());
        }
        if matches!(target, DataType::Boolean) {
            return match text.to_ascii_lowercase().as_str() {
                "t" | "true" | "1" | "yes" | "on" | "y" => Ok(ScalarValue::Boolean(Some(true))),
                "f" | "false" | "0" | "no" | "off" | "n" => Ok(ScalarValue::Boolean(Some(false))),
                _ => Err(format!("invalid input syntax for type boolean: \"{text}\"")),
            };
        }
        ScalarValue::Utf8(Some(text.to_string()))
    };
    if &value.data_type() == target || matches!(target, DataType::Null) {
        return Ok(value);
    }
    value.cast_to(target).map_err(|_| {
        format!(
            "invalid input syntax for type {}: parameter does not fit",
            lookout_query::format::pg_type_name(target)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(value: i128, scale: i8) -> Vec<i16> {
        let mut buf = BytesMut::new();
        write_numeric(value, scale, &mut buf);
        buf.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn array_literals_parse_as_postgres_writes_them() {
        assert_eq!(
            lookout_query::format::parse_array_text(r#"{a, "b c",NULL,"NULL","q\"x",d\,e}"#)
                .unwrap(),
            vec![
                Some("a".into()),
                Some("b c".into()),
                None,
                Some("NULL".into()),
                Some("q\"x".into()),
                Some("d,e".into())
            ]
        );
        assert_eq!(
            lookout_query::format::parse_array_text("{}").unwrap(),
            Vec::<Option<String>>::new()
        );
        for bad in ["a,b", "{a,,b}", "{{1,2},{3,4}}", "{\"a}", "{a,}"] {
            assert!(
                lookout_query::format::parse_array_text(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn numeric_binary_matches_postgres() {
        // 12.25: digits [12, 2500], weight 0, scale 2.
        assert_eq!(numeric(1225, 2), vec![2, 0, 0, 2, 12, 2500]);
        // -123456.7: [12, 3456, 7000], weight 1, negative, scale 1.
        assert_eq!(
            numeric(-1_234_567, 1),
            vec![3, 1, 0x4000, 1, 12, 3456, 7000]
        );
        // 0.0001: [1], weight -1.
        assert_eq!(numeric(1, 4), vec![1, -1, 0, 4, 1]);
        // 0 and 5e3 (scale -3).
        assert_eq!(numeric(0, 2), vec![0, 0, 0, 2]);
        assert_eq!(numeric(5, -3), vec![1, 0, 0, 0, 5000]);
        for (v, s) in [(1225, 2), (-1_234_567, 1), (1, 4)] {
            let mut buf = BytesMut::new();
            write_numeric(v, s, &mut buf);
            let back = read_numeric(&buf).expect("decodes");
            assert!((back - v as f64 / 10f64.powi(i32::from(s))).abs() < 1e-9);
        }
    }
}
