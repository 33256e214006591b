//! `json_agg`, `jsonb_agg`, `json_object_agg` and `jsonb_object_agg`: rows
//! collected into one JSON array or object.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use super::functions::{JsonKind, json_error, sql_error, write_sql_value};
use super::value;
use crate::error::SqlState;

/// One JSON aggregate: an array of values, or an object of key/value pairs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct JsonAggregate {
    name: String,
    kind: JsonKind,
    object: bool,
    signature: Signature,
}

impl JsonAggregate {
    pub(crate) fn new(kind: JsonKind, object: bool) -> JsonAggregate {
        let suffix = if object { "object_agg" } else { "agg" };
        JsonAggregate {
            name: format!("{}_{suffix}", kind.name()),
            kind,
            object,
            signature: Signature::any(if object { 2 } else { 1 }, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for JsonAggregate {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field(&self, _arg_fields: &[FieldRef]) -> Result<FieldRef> {
        Ok(Arc::new(self.kind.field(&self.name)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        // The JSON text of each item so far (`"key" : value` for objects).
        let item = Arc::new(Field::new_list_field(DataType::Utf8, true));
        Ok(vec![Arc::new(Field::new(
            format!("{}_items", args.name),
            DataType::List(item),
            true,
        ))])
    }

    fn order_sensitivity(&self) -> datafusion::logical_expr::utils::AggregateOrderSensitivity {
        // So that an `ORDER BY` inside the call reaches `accumulator`
        // (which refuses it) instead of being dropped.
        datafusion::logical_expr::utils::AggregateOrderSensitivity::HardRequirement
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if !args.order_bys.is_empty() {
            return Err(sql_error(
                SqlState::FeatureNotSupported,
                format!(
                    "{}(... ORDER BY ...) is not supported yet; the items come in the order rows are read",
                    self.name
                ),
            ));
        }
        Ok(Box::new(JsonAccumulator {
            kind: self.kind,
            object: self.object,
            fields: args.expr_fields.to_vec(),
            items: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct JsonAccumulator {
    kind: JsonKind,
    object: bool,
    fields: Vec<FieldRef>,
    items: Vec<String>,
}

impl Accumulator for JsonAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for row in 0..values[0].len() {
            let mut item = String::new();
            if self.object {
                let key = &values[0];
                if key.data_type() == &DataType::Null || key.is_null(row) {
                    return Err(sql_error(
                        SqlState::NullValueNotAllowed,
                        "field name must not be null",
                    ));
                }
                let mut text = String::new();
                crate::format::write_value(key.as_ref(), row, &mut text);
                value::write_string(&text, &mut item);
                item.push_str(" : ");
                write_sql_value(&values[1], self.fields.get(1), row, self.kind, &mut item)?;
            } else {
                write_sql_value(&values[0], self.fields.first(), row, self.kind, &mut item)?;
            }
            self.items.push(item);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                let items = lists.value(i);
                let items = items.as_string::<i32>();
                self.items
                    .extend(items.iter().flatten().map(str::to_string));
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let items: Vec<ScalarValue> = self
            .items
            .iter()
            .map(|i| ScalarValue::Utf8(Some(i.clone())))
            .collect();
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &items,
            &DataType::Utf8,
        ))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.items.is_empty() {
            return Ok(ScalarValue::Utf8(None));
        }
        let (open, close) = if self.object {
            ("{ ", " }")
        } else {
            ("[", "]")
        };
        let raw = format!("{open}{}{close}", self.items.join(", "));
        Ok(ScalarValue::Utf8(Some(match self.kind {
            JsonKind::Json => raw,
            JsonKind::Jsonb => value::normalize(&raw).map_err(json_error)?,
        })))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.items.iter().map(|i| i.capacity() + 24).sum::<usize>()
    }
}
