//! A scan's filter made for one file. Two things are known per file that
//! the plan does not know:
//!
//! - the one value of the table's partition column in every row (`model`):
//!   a comparison with it is true or false for the whole file, so it is
//!   answered once instead of once a row, and a file it rules out is not
//!   read at all;
//! - which text columns the column cache holds with codes (see
//!   [`HeldColumn`](super::column_cache::HeldColumn)): a comparison of such
//!   a column with a constant compares the few distinct values once and maps
//!   the answers through the codes, instead of comparing every row's text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::simplifier::PhysicalExprSimplifier;
use datafusion::physical_expr::split_conjunction;

/// What a scan's filter asks of one file's rows.
#[derive(Debug, Clone)]
pub(crate) enum FileFilter {
    /// Every row is kept.
    Everything,
    /// No row can be kept: the file need not be read.
    Nothing,
    /// Rows are kept where the expression is true.
    Rows(RowFilter),
}

/// A filter evaluated on batches of the scan's read columns, with the codes
/// of some of them appended.
#[derive(Debug, Clone)]
pub(crate) struct RowFilter {
    expr: Arc<dyn PhysicalExpr>,
    /// Columns (positions in the read schema) whose codes follow the read
    /// columns in the evaluated batch, in this order.
    coded: Vec<usize>,
    /// The read schema and, after it, one field per entry of `coded`.
    schema: SchemaRef,
}

impl FileFilter {
    /// `filter` over `read` as it stands for one file: `partition` is the
    /// position in `read` of the table's partition column and the value the
    /// file holds in it.
    pub(crate) fn for_file(
        filter: &Arc<dyn PhysicalExpr>,
        read: &SchemaRef,
        partition: Option<(usize, &Option<String>)>,
    ) -> Result<FileFilter> {
        let mut expr = Arc::clone(filter);
        if let Some((position, value)) = partition {
            expr = with_value(expr, position, value)?;
            expr = PhysicalExprSimplifier::new(read).simplify(expr)?;
            expr = fold_logic(expr)?;
            if let Some(literal) = expr.downcast_ref::<Literal>() {
                return Ok(match literal.value() {
                    ScalarValue::Boolean(Some(true)) => FileFilter::Everything,
                    _ => FileFilter::Nothing,
                });
            }
            // One constant that is not TRUE among the ANDed conditions (a
            // NULL partition value compared) keeps no row.
            if split_conjunction(&expr)
                .iter()
                .any(|c| c.downcast_ref::<Literal>().is_some())
            {
                return Ok(FileFilter::Nothing);
            }
        }
        Ok(FileFilter::Rows(RowFilter::new(expr, Arc::clone(read))))
    }
}

impl RowFilter {
    /// `expr` over batches of `read`.
    pub(crate) fn new(expr: Arc<dyn PhysicalExpr>, read: SchemaRef) -> RowFilter {
        RowFilter {
            expr,
            coded: Vec::new(),
            schema: read,
        }
    }

    /// This filter with its comparisons of coded columns with text
    /// constants made on the codes: `code_types[i]` is the type of the codes
    /// the file has for column `i`, if it has them.
    pub(crate) fn with_codes(self, code_types: &[Option<DataType>]) -> Result<RowFilter> {
        let read = self.schema;
        let mut coded: Vec<usize> = self.coded;
        let expr = self
            .expr
            .transform_up(|node| {
                let Some((position, binary)) = coded_comparison(&node, code_types) else {
                    return Ok(Transformed::no(node));
                };
                let slot = match coded.iter().position(|c| *c == position) {
                    Some(slot) => slot,
                    None => {
                        coded.push(position);
                        coded.len() - 1
                    }
                };
                let codes: Arc<dyn PhysicalExpr> = Arc::new(Column::new(
                    &format!("{} codes", read.field(position).name()),
                    read.fields().len() + slot,
                ));
                let is_left = binary.left().downcast_ref::<Column>().is_some();
                let (left, right) = match is_left {
                    true => (codes, Arc::clone(binary.right())),
                    false => (Arc::clone(binary.left()), codes),
                };
                Ok(Transformed::yes(
                    Arc::new(BinaryExpr::new(left, *binary.op(), right)) as Arc<dyn PhysicalExpr>,
                ))
            })?
            .data;
        if coded.is_empty() {
            return Ok(RowFilter {
                expr,
                coded,
                schema: read,
            });
        }
        let mut fields: Vec<Field> = read.fields().iter().map(|f| f.as_ref().clone()).collect();
        for position in &coded {
            let data_type = code_types[*position].clone().ok_or_else(|| {
                DataFusionError::Internal("a coded comparison without codes".into())
            })?;
            fields.push(Field::new(
                format!("{} codes", read.field(*position).name()),
                data_type,
                true,
            ));
        }
        Ok(RowFilter {
            expr,
            coded,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// Which rows of `batch` (the read columns) the filter accepts, given
    /// `codes[i]` for every coded column `i`; NULL where the filter is NULL.
    pub(crate) fn evaluate(
        &self,
        batch: &RecordBatch,
        codes: &[Option<ArrayRef>],
    ) -> Result<BooleanArray> {
        let rows = batch.num_rows();
        let value = if self.coded.is_empty() {
            self.expr.evaluate(batch)?
        } else {
            let mut columns = batch.columns().to_vec();
            for position in &self.coded {
                let codes = codes.get(*position).cloned().flatten().ok_or_else(|| {
                    DataFusionError::Internal("codes missing for a coded comparison".into())
                })?;
                columns.push(codes);
            }
            let with_codes = RecordBatch::try_new_with_options(
                Arc::clone(&self.schema),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )?;
            self.expr.evaluate(&with_codes)?
        };
        let value = value.into_array(rows)?;
        match value.as_boolean_opt() {
            Some(mask) => Ok(mask.clone()),
            None => Err(DataFusionError::Internal(format!(
                "filter is not boolean: {}",
                value.data_type()
            ))),
        }
    }
}

/// `expr` with the column at `position` replaced by the text `value`.
fn with_value(
    expr: Arc<dyn PhysicalExpr>,
    position: usize,
    value: &Option<String>,
) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(expr
        .transform_up(|node| match node.downcast_ref::<Column>() {
            Some(column) if column.index() == position => Ok(Transformed::yes(Arc::new(
                Literal::new(ScalarValue::Utf8(value.clone())),
            )
                as Arc<dyn PhysicalExpr>)),
            _ => Ok(Transformed::no(node)),
        })?
        .data)
}

/// `expr` with `AND` and `OR` of a TRUE or FALSE constant reduced, by
/// identities that hold in three-valued logic: `TRUE AND x` is `x`, `FALSE
/// AND x` is `FALSE`, `TRUE OR x` is `TRUE`, `FALSE OR x` is `x`.
fn fold_logic(expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(expr
        .transform_up(|node| {
            let Some(binary) = node.downcast_ref::<BinaryExpr>() else {
                return Ok(Transformed::no(node));
            };
            let constant = |side: &Arc<dyn PhysicalExpr>| match side.downcast_ref::<Literal>() {
                Some(literal) => match literal.value() {
                    ScalarValue::Boolean(Some(b)) => Some(*b),
                    _ => None,
                },
                None => None,
            };
            let (left, right) = (binary.left(), binary.right());
            let folded = match (binary.op(), constant(left), constant(right)) {
                (Operator::And, Some(true), _) => Arc::clone(right),
                (Operator::And, _, Some(true)) => Arc::clone(left),
                (Operator::And, Some(false), _) | (Operator::And, _, Some(false)) => {
                    Arc::new(Literal::new(ScalarValue::Boolean(Some(false))))
                }
                (Operator::Or, Some(false), _) => Arc::clone(right),
                (Operator::Or, _, Some(false)) => Arc::clone(left),
                (Operator::Or, Some(true), _) | (Operator::Or, _, Some(true)) => {
                    Arc::new(Literal::new(ScalarValue::Boolean(Some(true))))
                }
                _ => return Ok(Transformed::no(node)),
            };
            Ok(Transformed::yes(folded))
        })?
        .data)
}

/// The column of `node` if `node` compares a column that has codes with a
/// text constant.
fn coded_comparison<'a>(
    node: &'a Arc<dyn PhysicalExpr>,
    code_types: &[Option<DataType>],
) -> Option<(usize, &'a BinaryExpr)> {
    let binary = node.downcast_ref::<BinaryExpr>()?;
    if !matches!(
        binary.op(),
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    ) {
        return None;
    }
    let text = |side: &Arc<dyn PhysicalExpr>| {
        side.downcast_ref::<Literal>()
            .is_some_and(|l| matches!(l.value(), ScalarValue::Utf8(Some(_))))
    };
    let column = match (
        binary.left().downcast_ref::<Column>(),
        binary.right().downcast_ref::<Column>(),
    ) {
        (Some(column), None) if text(binary.right()) => column,
        (None, Some(column)) if text(binary.left()) => column,
        _ => return None,
    };
    code_types
        .get(column.index())?
        .as_ref()
        .map(|_| (column.index(), binary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, StringArray};
    use arrow::datatypes::UInt8Type;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    fn read() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("model", DataType::Utf8, true),
            Field::new("status", DataType::Utf8, true),
        ]))
    }

    fn text_eq(column: &str, op: Operator, value: &str) -> Arc<dyn PhysicalExpr> {
        let schema = read();
        binary(col(column, &schema).unwrap(), op, lit(value), &schema).unwrap()
    }

    fn and(l: Arc<dyn PhysicalExpr>, r: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(l, Operator::And, r))
    }

    fn batch() -> (RecordBatch, Vec<Option<ArrayRef>>) {
        let status = ["ok", "error", "ok", "timeout", "ok"];
        let mut statuses: Vec<Option<&str>> = status.iter().map(|s| Some(*s)).collect();
        statuses.push(None);
        let codes: DictionaryArray<UInt8Type> = statuses.iter().copied().collect();
        let batch = RecordBatch::try_new(
            read(),
            vec![
                Arc::new(StringArray::from(vec!["a"; 6])),
                Arc::new(StringArray::from(statuses)),
            ],
        )
        .unwrap();
        (batch, vec![None, Some(Arc::new(codes) as ArrayRef)])
    }

    #[test]
    fn the_partition_value_answers_its_comparisons_for_the_whole_file() {
        let filter = and(
            text_eq("model", Operator::Eq, "a"),
            text_eq("status", Operator::NotEq, "ok"),
        );
        let value = Some("b".to_string());
        let other = FileFilter::for_file(&filter, &read(), Some((0, &value)));
        assert!(matches!(other, Ok(FileFilter::Nothing)));
        let null = FileFilter::for_file(&filter, &read(), Some((0, &None)));
        assert!(matches!(null, Ok(FileFilter::Nothing)));
        let value = Some("a".to_string());
        let only_model = text_eq("model", Operator::Eq, "a");
        let all = FileFilter::for_file(&only_model, &read(), Some((0, &value)));
        assert!(matches!(all, Ok(FileFilter::Everything)));
        let Ok(FileFilter::Rows(rows)) = FileFilter::for_file(&filter, &read(), Some((0, &value)))
        else {
            panic!("a filter on status is left");
        };
        assert_eq!(rows.expr.to_string(), "status@1 != ok");
    }

    #[test]
    fn comparisons_on_coded_columns_read_the_codes_and_agree_with_the_text() {
        let (batch, codes) = batch();
        let code_types = [None, Some(codes[1].as_ref().unwrap().data_type().clone())];
        for op in [
            Operator::Eq,
            Operator::NotEq,
            Operator::Lt,
            Operator::GtEq,
            Operator::IsDistinctFrom,
            Operator::IsNotDistinctFrom,
        ] {
            let filter = and(
                text_eq("status", op, "ok"),
                text_eq("model", Operator::Eq, "a"),
            );
            let plain = RowFilter::new(filter, read());
            let coded = plain.clone().with_codes(&code_types).unwrap();
            assert_eq!(coded.coded, vec![1], "{op}");
            assert!(coded.expr.to_string().contains("status codes@2"), "{op}");
            assert_eq!(
                coded.evaluate(&batch, &codes).unwrap(),
                plain.evaluate(&batch, &codes).unwrap(),
                "{op}"
            );
        }
    }

    #[test]
    fn or_keeps_what_an_unknown_side_decides() {
        let filter: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            text_eq("model", Operator::Eq, "a"),
            Operator::Or,
            text_eq("status", Operator::Eq, "ok"),
        ));
        let value = Some("a".to_string());
        let kept = FileFilter::for_file(&filter, &read(), Some((0, &value)));
        assert!(matches!(kept, Ok(FileFilter::Everything)));
        let value = Some("b".to_string());
        let Ok(FileFilter::Rows(rows)) = FileFilter::for_file(&filter, &read(), Some((0, &value)))
        else {
            panic!("the status comparison decides");
        };
        assert_eq!(rows.expr.to_string(), "status@1 = ok");
    }
}
