//! Reading a result column back into Rust values: what extensions do with
//! the rows of the SQL they run on their own tables.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};

use crate::error::{QueryError, Result, SqlState};

fn column_as(batch: &RecordBatch, i: usize, to: &DataType) -> Result<arrow::array::ArrayRef> {
    let column = batch.columns().get(i).ok_or_else(|| {
        QueryError::new(
            SqlState::InternalError,
            format!("no column {i} in the result"),
        )
    })?;
    cast(column, to).map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))
}

/// Column `i` of `batch` as text (cast as SQL casts), NULL as `None`.
pub fn text_values(batch: &RecordBatch, i: usize) -> Result<Vec<Option<String>>> {
    let column = column_as(batch, i, &DataType::Utf8)?;
    let s = column.as_string::<i32>();
    Ok((0..s.len())
        .map(|r| s.is_valid(r).then(|| s.value(r).to_string()))
        .collect())
}

/// Column `i` of `batch` as 64-bit integers (cast as SQL casts), NULL as `None`.
pub fn int_values(batch: &RecordBatch, i: usize) -> Result<Vec<Option<i64>>> {
    let column = column_as(batch, i, &DataType::Int64)?;
    let v = column.as_primitive::<Int64Type>();
    Ok((0..v.len())
        .map(|r| v.is_valid(r).then(|| v.value(r)))
        .collect())
}
