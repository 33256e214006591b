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

/// The instant a `timestamptz` SQL expression names (`'2026-01-01'`,
/// `now() - INTERVAL '1 day'`), in microseconds since the epoch: checked
/// to be one expression, then evaluated by `session` (with its `now()` and
/// its rights on what the expression reads). `clause` names it in errors;
/// NULL is 22023.
pub async fn instant(
    session: &mut dyn crate::ext::SqlSession,
    expression: &str,
    clause: &str,
) -> Result<i64> {
    let expression = crate::ext::one_expression(expression)?;
    let batches = session
        .query(&format!("SELECT CAST(({expression}) AS TIMESTAMPTZ)"))
        .await?;
    let invalid = |why: String| QueryError::new(SqlState::InvalidParameterValue, why);
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Err(invalid(format!("{clause} is NULL")));
    };
    let utc = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()));
    let micros = cast(batch.column(0), &utc).map_err(|e| invalid(format!("{clause}: {e}")))?;
    let micros = cast(&micros, &DataType::Int64).map_err(|e| invalid(format!("{clause}: {e}")))?;
    let micros = micros.as_primitive::<Int64Type>();
    if micros.is_null(0) {
        return Err(invalid(format!("{clause} is NULL")));
    }
    Ok(micros.value(0))
}
