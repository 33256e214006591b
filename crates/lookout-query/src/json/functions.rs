//! The `json`/`jsonb` functions and the functions behind the operators
//! (`->`, `->>`, `#>`, `#>>`, `@>`, `<@`, `?`, `?|`, `?&`, `||`).
//!
//! Values are text; a column or expression of type json or jsonb carries
//! the field metadata [`SQL_TYPE_METADATA`], which tells a function how to
//! embed the value (as JSON, not as a string) and the wire which type to
//! announce. Text without it is read as `json`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int32Builder, ListBuilder, StringBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use lookout_storage::{SQL_TYPE_METADATA, sql_type_of};

use super::value::{self, JsonError, Node, Value};
use crate::error::QueryError;
use crate::error::SqlState;

/// Which of PostgreSQL's two JSON types a value has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonKind {
    /// `json`: the text as written.
    Json,
    /// `jsonb`: normalized (keys ordered, last of repeated keys, numbers as numeric prints them).
    Jsonb,
}

impl JsonKind {
    /// The type's SQL name.
    pub fn name(self) -> &'static str {
        match self {
            JsonKind::Json => "json",
            JsonKind::Jsonb => "jsonb",
        }
    }

    fn from_name(name: &str) -> Option<JsonKind> {
        match name {
            "json" => Some(JsonKind::Json),
            "jsonb" => Some(JsonKind::Jsonb),
            _ => None,
        }
    }

    /// A text field of this type.
    pub(crate) fn field(self, name: &str) -> Field {
        Field::new(name, DataType::Utf8, true)
            .with_metadata([(SQL_TYPE_METADATA.to_string(), self.name().to_string())].into())
    }
}

/// The JSON type of a field, if it has one.
pub fn json_kind(field: &Field) -> Option<JsonKind> {
    sql_type_of(field).and_then(JsonKind::from_name)
}

pub(crate) fn json_error(e: JsonError) -> DataFusionError {
    DataFusionError::External(Box::new(QueryError::new(e.sqlstate(), e.to_string())))
}

pub(crate) fn sql_error(state: SqlState, message: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(QueryError::new(state, message)))
}

/// What a [`JsonFunction`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    /// `text::json` / `text::jsonb`.
    Input(JsonKind),
    /// `->` (`text` false) and `->>` (`text` true).
    Get { text: bool },
    /// `#>` and `#>>`; also `jsonb_extract_path[_text]` with variadic keys.
    Path { text: bool, variadic: bool },
    /// `@>`.
    Contains,
    /// jsonb `=` (`negated` false) and `<>` (`negated` true).
    Equal { negated: bool },
    /// `?`.
    HasKey,
    /// `?|` (`all` false) and `?&` (`all` true).
    HasKeys { all: bool },
    /// `jsonb_typeof`.
    TypeOf,
    /// `jsonb_array_length`.
    ArrayLength,
    /// `jsonb_build_object`.
    BuildObject(JsonKind),
    /// `jsonb_build_array`.
    BuildArray(JsonKind),
    /// `to_jsonb`.
    To(JsonKind),
    /// `jsonb || jsonb`.
    Concat,
    /// The elements of an array as a list, for `jsonb_array_elements[_text]`
    /// (which the rewrite unnests).
    Elements { text: bool },
    /// The keys of an object as a list, for `jsonb_object_keys` and the
    /// `key` column of `jsonb_each`.
    Keys,
    /// The values of an object as a list, in the order of [`Op::Keys`], for
    /// the `value` column of `jsonb_each` (`text`: of `jsonb_each_text`).
    Values { text: bool },
    /// `json::text`: the same text, no longer typed as JSON.
    AsText,
}

/// One JSON function; the operators plan to these by name.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct JsonFunction {
    name: String,
    op: Op,
    /// The SQL type a `json_*` function (rather than `jsonb_*`) reads its
    /// first argument as, for functions whose result depends on it.
    reads: Option<JsonKind>,
    signature: Signature,
}

impl JsonFunction {
    pub(crate) fn new(name: &str, op: Op, reads: Option<JsonKind>) -> JsonFunction {
        JsonFunction {
            name: name.to_string(),
            op,
            reads,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// The error of a function over object members given something else,
    /// worded as PostgreSQL words it.
    fn not_an_object(&self, j: &Node<'_>, canonical: bool) -> DataFusionError {
        let kind = self.reads.unwrap_or(JsonKind::Jsonb).name();
        let message = match self.op {
            Op::Values { .. } if !canonical && matches!(j.value, Value::Array(_)) => {
                "cannot deconstruct an array as an object".to_string()
            }
            Op::Values { text } => format!(
                "cannot call {kind}_each{} on a non-object",
                if text { "_text" } else { "" }
            ),
            _ => format!("cannot call jsonb_object_keys on {}", a_kind(j)),
        };
        sql_error(SqlState::InvalidParameterValue, message)
    }

    pub(crate) fn udf(name: &str, op: Op, reads: Option<JsonKind>) -> ScalarUDF {
        ScalarUDF::new_from_impl(JsonFunction::new(name, op, reads))
    }

    /// The kind the JSON operand (argument 0) is read as.
    fn operand_kind(&self, field: Option<&FieldRef>) -> JsonKind {
        field
            .and_then(|f| json_kind(f))
            .or(self.reads)
            .unwrap_or(JsonKind::Json)
    }
}

fn is_text(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

fn is_integer(dt: &DataType) -> bool {
    dt.is_integer()
}

impl ScalarUDFImpl for JsonFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let wrong = || {
            DataFusionError::Plan(format!(
                "function {}({}) does not exist",
                self.name,
                arg_types
                    .iter()
                    .map(crate::format::pg_type_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        let text_list = || DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
        let json_arg = |dt: &DataType| {
            if is_text(dt) {
                Ok(DataType::Utf8)
            } else {
                Err(wrong())
            }
        };
        match self.op {
            Op::BuildObject(_) | Op::BuildArray(_) | Op::To(_) => Ok(arg_types.to_vec()),
            Op::Input(_)
            | Op::TypeOf
            | Op::ArrayLength
            | Op::Elements { .. }
            | Op::Keys
            | Op::Values { .. }
            | Op::AsText => match arg_types {
                [a] => Ok(vec![json_arg(a)?]),
                _ => Err(wrong()),
            },
            Op::Get { .. } => match arg_types {
                [a, k] if is_integer(k) => Ok(vec![json_arg(a)?, DataType::Int64]),
                [a, k] if is_text(k) => Ok(vec![json_arg(a)?, DataType::Utf8]),
                _ => Err(wrong()),
            },
            Op::Path { variadic: true, .. } => match arg_types.split_first() {
                Some((a, keys)) if keys.iter().all(is_text) => {
                    let mut out = vec![json_arg(a)?];
                    out.extend(keys.iter().map(|_| DataType::Utf8));
                    Ok(out)
                }
                _ => Err(wrong()),
            },
            Op::Path { .. } | Op::HasKeys { .. } => match arg_types {
                [a, p] if is_text(p) => Ok(vec![json_arg(a)?, DataType::Utf8]),
                [a, DataType::List(f)] if is_text(f.data_type()) => {
                    Ok(vec![json_arg(a)?, text_list()])
                }
                _ => Err(wrong()),
            },
            Op::Contains | Op::Equal { .. } | Op::Concat | Op::HasKey => match arg_types {
                [a, b] => Ok(vec![json_arg(a)?, json_arg(b)?]),
                _ => Err(wrong()),
            },
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.op {
            Op::Contains | Op::Equal { .. } | Op::HasKey | Op::HasKeys { .. } => DataType::Boolean,
            Op::ArrayLength => DataType::Int32,
            Op::Elements { .. } | Op::Keys | Op::Values { .. } => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
            }
            _ => DataType::Utf8,
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let data_type = self.return_type(&types)?;
        let operand = self.operand_kind(args.arg_fields.first());
        let kind = match self.op {
            Op::Input(kind) | Op::BuildObject(kind) | Op::BuildArray(kind) | Op::To(kind) => {
                Some(kind)
            }
            Op::Get { text: false } | Op::Path { text: false, .. } => Some(operand),
            Op::Concat => Some(JsonKind::Jsonb),
            _ => None,
        };
        if let (Op::Elements { text: false }, DataType::List(item)) = (self.op, &data_type) {
            let item = operand.field(item.name());
            return Ok(Arc::new(Field::new(
                self.name(),
                DataType::List(Arc::new(item)),
                true,
            )));
        }
        Ok(Arc::new(match kind {
            Some(kind) => kind.field(self.name()),
            None => Field::new(self.name(), data_type, true),
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let operand = self.operand_kind(args.arg_fields.first());
        let out = match self.op {
            Op::BuildObject(kind) | Op::BuildArray(kind) | Op::To(kind) => {
                build(self.op, kind, &arrays, &args.arg_fields, rows)?
            }
            Op::AsText => arrow::compute::cast(&arrays[0], &DataType::Utf8)?,
            _ => self.per_row(operand, &arrays, rows)?,
        };
        Ok(if scalar {
            match out.data_type() {
                // `try_from_array` would drop the list field's metadata.
                DataType::List(_) => {
                    ColumnarValue::Scalar(ScalarValue::List(Arc::new(out.as_list::<i32>().clone())))
                }
                _ => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
            }
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// The text of `array[row]`, or None for NULL.
fn text_at(array: &ArrayRef, row: usize) -> Option<&str> {
    if array.is_null(row) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(array.as_string_view().value(row)),
        _ => None,
    }
}

/// The keys of a path or key-list argument: a `text[]` value or its text
/// form (`'{a,b}'`).
fn keys_at(array: &ArrayRef, row: usize) -> Result<Option<Vec<Option<String>>>> {
    if array.is_null(row) {
        return Ok(None);
    }
    match array.data_type() {
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            Ok(Some(
                (0..list.len())
                    .map(|i| text_at(&list, i).map(str::to_string))
                    .collect(),
            ))
        }
        _ => match text_at(array, row) {
            Some(text) => crate::format::parse_array_text(text)
                .map(Some)
                .map_err(|e| sql_error(SqlState::InvalidTextRepresentation, e)),
            None => Ok(None),
        },
    }
}

impl JsonFunction {
    fn per_row(&self, operand: JsonKind, arrays: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
        let canonical = operand == JsonKind::Jsonb;
        let parse = |row: usize| -> Result<Option<Node<'_>>> {
            match text_at(&arrays[0], row) {
                Some(text) => value::parse(text, canonical).map(Some).map_err(json_error),
                None => Ok(None),
            }
        };
        match self.op {
            Op::Input(kind) => {
                let mut out = StringBuilder::with_capacity(rows, 0);
                for row in 0..rows {
                    match text_at(&arrays[0], row) {
                        None => out.append_null(),
                        Some(text) => match kind {
                            JsonKind::Jsonb => {
                                out.append_value(value::normalize(text).map_err(json_error)?)
                            }
                            JsonKind::Json => {
                                value::parse(text, false).map_err(json_error)?;
                                out.append_value(text);
                            }
                        },
                    }
                }
                Ok(Arc::new(out.finish()))
            }
            Op::Get { text } | Op::Path { text, .. } => {
                let mut out = StringBuilder::with_capacity(rows, 0);
                for row in 0..rows {
                    let found = match parse(row)? {
                        None => None,
                        Some(j) => {
                            let target = match self.op {
                                Op::Get { .. } => {
                                    let key = &arrays[1];
                                    if key.is_null(row) {
                                        None
                                    } else if let DataType::Int64 = key.data_type() {
                                        let index = key
                                            .as_primitive::<arrow::datatypes::Int64Type>()
                                            .value(row);
                                        match j.value {
                                            // jsonb keeps a scalar as an array of one.
                                            Value::Array(_) | Value::Object(_) => j.element(index),
                                            _ if canonical && (index == 0 || index == -1) => {
                                                Some(&j)
                                            }
                                            _ => None,
                                        }
                                    } else {
                                        text_at(key, row).and_then(|k| j.field(k))
                                    }
                                }
                                Op::Path { variadic: true, .. } => {
                                    let steps: Vec<Option<&str>> =
                                        arrays[1..].iter().map(|a| text_at(a, row)).collect();
                                    j.path(&steps)
                                }
                                _ => match keys_at(&arrays[1], row)? {
                                    Some(keys) => {
                                        let steps: Vec<Option<&str>> =
                                            keys.iter().map(|k| k.as_deref()).collect();
                                        j.path(&steps)
                                    }
                                    None => None,
                                },
                            };
                            match target {
                                Some(node) if text => node.as_text(canonical),
                                Some(node) => Some(node.to_text(canonical)),
                                None => None,
                            }
                        }
                    };
                    out.append_option(found);
                }
                Ok(Arc::new(out.finish()))
            }
            Op::Contains | Op::Equal { .. } | Op::HasKey | Op::HasKeys { .. } => {
                let mut out = BooleanBuilder::with_capacity(rows);
                for row in 0..rows {
                    let Some(j) = parse(row)? else {
                        out.append_null();
                        continue;
                    };
                    let answer = match self.op {
                        Op::Contains => match text_at(&arrays[1], row) {
                            Some(text) => Some(value::contains(
                                &j,
                                &value::parse(text, true).map_err(json_error)?,
                            )),
                            None => None,
                        },
                        Op::Equal { negated } => match text_at(&arrays[1], row) {
                            Some(text) => Some(
                                value::equal(&j, &value::parse(text, true).map_err(json_error)?)
                                    != negated,
                            ),
                            None => None,
                        },
                        Op::HasKey => text_at(&arrays[1], row).map(|k| value::has_key(&j, k)),
                        Op::HasKeys { all } => keys_at(&arrays[1], row)?.map(|keys| {
                            let mut present = keys.iter().flatten().map(|k| value::has_key(&j, k));
                            if all {
                                present.all(|p| p)
                            } else {
                                present.any(|p| p)
                            }
                        }),
                        _ => None,
                    };
                    out.append_option(answer);
                }
                Ok(Arc::new(out.finish()))
            }
            Op::TypeOf => {
                let mut out = StringBuilder::with_capacity(rows, 0);
                for row in 0..rows {
                    out.append_option(parse(row)?.map(|j| j.type_name()));
                }
                Ok(Arc::new(out.finish()))
            }
            Op::ArrayLength => {
                let mut out = Int32Builder::with_capacity(rows);
                for row in 0..rows {
                    match parse(row)? {
                        None => out.append_null(),
                        Some(Node {
                            value: Value::Array(items),
                            ..
                        }) => out.append_value(i32::try_from(items.len()).unwrap_or(i32::MAX)),
                        Some(j) => {
                            return Err(sql_error(
                                SqlState::InvalidParameterValue,
                                format!(
                                    "cannot get array length of a {}",
                                    match j.value {
                                        Value::Object(_) => "non-array",
                                        _ => "scalar",
                                    }
                                ),
                            ));
                        }
                    }
                }
                Ok(Arc::new(out.finish()))
            }
            Op::Elements { text } => {
                let mut out = ListBuilder::new(StringBuilder::new());
                if !text {
                    // The elements are json/jsonb values, as the return field says.
                    out = out.with_field(Arc::new(operand.field("item")));
                }
                for row in 0..rows {
                    match parse(row)? {
                        None => out.append_null(),
                        Some(Node {
                            value: Value::Array(items),
                            ..
                        }) => {
                            for item in &items {
                                if text {
                                    out.values().append_option(item.as_text(canonical));
                                } else {
                                    out.values().append_value(item.to_text(canonical));
                                }
                            }
                            out.append(true);
                        }
                        Some(j) => {
                            return Err(sql_error(
                                SqlState::InvalidParameterValue,
                                format!(
                                    "cannot extract elements from {}",
                                    match j.value {
                                        Value::Object(_) => "an object",
                                        _ => "a scalar",
                                    }
                                ),
                            ));
                        }
                    }
                }
                Ok(Arc::new(out.finish()))
            }
            Op::Keys | Op::Values { .. } => {
                // One list item per member: its key, or its value (as text
                // for the `_text` forms), in the order the type keeps them.
                let item = |key: &str, node: &Node<'_>| match self.op {
                    Op::Values { text: true } => node.as_text(canonical),
                    Op::Values { text: false } => Some(node.to_text(canonical)),
                    _ => Some(key.to_string()),
                };
                let mut out = ListBuilder::new(StringBuilder::new());
                for row in 0..rows {
                    match parse(row)? {
                        None => out.append_null(),
                        Some(Node {
                            value: Value::Object(members),
                            ..
                        }) => {
                            let members: Vec<(&str, &Node<'_>)> = if canonical {
                                value::jsonb_members(&members)
                            } else {
                                members.iter().map(|(k, n)| (k.as_ref(), n)).collect()
                            };
                            for (key, node) in members {
                                out.values().append_option(item(key, node));
                            }
                            out.append(true);
                        }
                        Some(j) => return Err(self.not_an_object(&j, canonical)),
                    }
                }
                Ok(Arc::new(out.finish()))
            }
            Op::Concat => {
                let mut out = StringBuilder::with_capacity(rows, 0);
                for row in 0..rows {
                    let (Some(a), Some(b)) = (text_at(&arrays[0], row), text_at(&arrays[1], row))
                    else {
                        out.append_null();
                        continue;
                    };
                    let a = value::parse(a, true).map_err(json_error)?;
                    let b = value::parse(b, true).map_err(json_error)?;
                    out.append_value(concat(&a, &b));
                }
                Ok(Arc::new(out.finish()))
            }
            Op::BuildObject(_) | Op::BuildArray(_) | Op::To(_) | Op::AsText => Err(
                DataFusionError::Internal("computed in invoke_with_args".into()),
            ),
        }
    }
}

fn a_kind(j: &Node<'_>) -> &'static str {
    match j.value {
        Value::Array(_) => "an array",
        _ => "a scalar",
    }
}

/// `a || b` for jsonb: objects merge (right wins), arrays concatenate, a
/// scalar joins an array as an element.
fn concat(a: &Node<'_>, b: &Node<'_>) -> String {
    let mut out = String::new();
    match (&a.value, &b.value) {
        (Value::Object(x), Value::Object(y)) => {
            let mut members = x.clone();
            members.extend(y.iter().cloned());
            let merged = Node {
                value: Value::Object(members),
                text: "",
            };
            value::write_jsonb(&merged, &mut out);
        }
        _ => {
            let as_items = |n: &Node<'_>| -> Vec<String> {
                match &n.value {
                    Value::Array(items) => items.iter().map(|i| i.to_text(true)).collect(),
                    _ => vec![n.to_text(true)],
                }
            };
            let items: Vec<String> = as_items(a).into_iter().chain(as_items(b)).collect();
            out.push('[');
            out.push_str(&items.join(", "));
            out.push(']');
        }
    }
    out
}

/// Appends the JSON form of `array[row]` (a SQL value of any type) to `out`:
/// `kind` is the type being built, `field` says whether the value is JSON.
pub(crate) fn write_sql_value(
    array: &ArrayRef,
    field: Option<&FieldRef>,
    row: usize,
    kind: JsonKind,
    out: &mut String,
) -> Result<()> {
    if array.data_type() == &DataType::Null || array.is_null(row) {
        out.push_str("null");
        return Ok(());
    }
    if let Some(source) = field.and_then(|f| json_kind(f)) {
        let text = text_at(array, row).unwrap_or("null");
        if source == JsonKind::Json && kind == JsonKind::Json {
            out.push_str(text);
        } else {
            value::write_jsonb(&value::parse(text, true).map_err(json_error)?, out);
        }
        return Ok(());
    }
    let mut text = String::new();
    match array.data_type() {
        DataType::Boolean => out.push_str(if array.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        dt if dt.is_integer() => {
            crate::format::write_value(array.as_ref(), row, &mut text);
            out.push_str(&text);
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            crate::format::write_value(array.as_ref(), row, &mut text);
            if text.parse::<f64>().is_ok_and(f64::is_finite) {
                out.push_str(&text);
            } else {
                value::write_string(&text, out);
            }
        }
        DataType::Timestamp(unit, zone) => {
            let micros = crate::format::timestamp_micros(array.as_ref(), unit, row);
            value::write_string(&iso_timestamp(micros, zone.is_some()), out);
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let items = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(row),
                _ => array.as_list::<i64>().value(row),
            };
            out.push('[');
            for i in 0..items.len() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_sql_value(&items, None, i, kind, out)?;
            }
            out.push(']');
        }
        _ => {
            crate::format::write_value(array.as_ref(), row, &mut text);
            value::write_string(&text, out);
        }
    }
    Ok(())
}

/// A timestamp as `to_json` writes it: ISO 8601 with a `T`, and the zone
/// (UTC, the sessions' zone) for `timestamptz`.
fn iso_timestamp(micros: i64, with_zone: bool) -> String {
    let mut text = String::new();
    crate::format::push_timestamp(&mut text, micros, false);
    let mut iso = text.replacen(' ', "T", 1);
    if with_zone {
        iso.push_str("+00:00");
    }
    iso
}

/// `jsonb_build_object`, `jsonb_build_array` and `to_jsonb` over rows.
fn build(
    op: Op,
    kind: JsonKind,
    arrays: &[ArrayRef],
    fields: &[FieldRef],
    rows: usize,
) -> Result<ArrayRef> {
    if let Op::BuildObject(_) = op
        && !arrays.len().is_multiple_of(2)
    {
        return Err(sql_error(
            SqlState::InvalidParameterValue,
            "argument list must have even number of elements: the arguments of json_build_object() must consist of alternating keys and values",
        ));
    }
    let mut out = StringBuilder::with_capacity(rows, 0);
    let mut text = String::new();
    for row in 0..rows {
        text.clear();
        match op {
            Op::To(_) => match arrays.first() {
                Some(a) if a.data_type() == &DataType::Null || a.is_null(row) => {
                    out.append_null();
                    continue;
                }
                Some(a) => {
                    let mut raw = String::new();
                    write_sql_value(a, fields.first(), row, kind, &mut raw)?;
                    text = reprint(&raw, kind)?;
                }
                None => {
                    return Err(sql_error(
                        SqlState::UndefinedFunction,
                        "to_jsonb takes one argument",
                    ));
                }
            },
            Op::BuildArray(_) => {
                let mut raw = String::from("[");
                for (i, a) in arrays.iter().enumerate() {
                    if i > 0 {
                        raw.push_str(", ");
                    }
                    write_sql_value(a, fields.get(i), row, kind, &mut raw)?;
                }
                raw.push(']');
                text = reprint(&raw, kind)?;
            }
            _ => {
                let mut raw = String::from("{");
                for (pair, kv) in arrays.chunks(2).enumerate() {
                    let key = &kv[0];
                    if key.is_null(row) {
                        return Err(sql_error(
                            SqlState::NullValueNotAllowed,
                            format!(
                                "null value not allowed for object key (argument {})",
                                pair * 2 + 1
                            ),
                        ));
                    }
                    if pair > 0 {
                        raw.push_str(", ");
                    }
                    let mut key_text = String::new();
                    crate::format::write_value(key.as_ref(), row, &mut key_text);
                    value::write_string(&key_text, &mut raw);
                    raw.push_str(" : ");
                    write_sql_value(&kv[1], fields.get(pair * 2 + 1), row, kind, &mut raw)?;
                }
                raw.push('}');
                text = reprint(&raw, kind)?;
            }
        }
        out.append_value(&text);
    }
    Ok(Arc::new(out.finish()))
}

/// Built JSON text as the type prints it: `json` keeps it, `jsonb`
/// normalizes it.
fn reprint(raw: &str, kind: JsonKind) -> Result<String> {
    match kind {
        JsonKind::Json => Ok(raw.to_string()),
        JsonKind::Jsonb => value::normalize(raw).map_err(json_error),
    }
}

/// Checks and normalizes the values of json and jsonb columns on every
/// write (registered with the storage engine).
pub(crate) struct JsonColumns;

impl lookout_storage::batch::ValueFormat for JsonColumns {
    fn conform(
        &self,
        sql_type: &str,
        column: &ArrayRef,
    ) -> std::result::Result<ArrayRef, (&'static str, String)> {
        let Some(kind) = JsonKind::from_name(sql_type) else {
            return Ok(Arc::clone(column));
        };
        let mut out = StringBuilder::with_capacity(column.len(), 0);
        for row in 0..column.len() {
            match text_at(column, row) {
                None => out.append_null(),
                Some(text) => match kind {
                    JsonKind::Json => {
                        value::parse(text, false)
                            .map_err(|e| (e.sqlstate().code(), e.to_string()))?;
                        out.append_value(text);
                    }
                    JsonKind::Jsonb => out.append_value(
                        value::normalize(text).map_err(|e| (e.sqlstate().code(), e.to_string()))?,
                    ),
                },
            }
        }
        Ok(Arc::new(out.finish()))
    }
}
