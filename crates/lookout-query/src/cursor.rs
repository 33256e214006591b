//! `DECLARE ... CURSOR`, `FETCH`, `CLOSE`: a query's rows read in portions
//! (psql with `FETCH_COUNT`, drivers' server-side cursors).
//!
//! Statements autocommit, so every cursor behaves as `WITH HOLD`: it lives
//! until `CLOSE` or the end of the session. Cursors scan forward only.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::{FetchDirection, Value};
use futures::StreamExt;

use crate::error::{QueryError, Result};

/// An open cursor: the rest of its query's rows.
struct Cursor {
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    /// Rows read from the stream but not fetched yet.
    pending: Option<RecordBatch>,
}

/// A session's cursors by name. The map is only locked between awaits: a
/// fetched cursor is taken out and put back.
#[derive(Default)]
pub(crate) struct Cursors {
    open: Mutex<HashMap<String, Cursor>>,
}

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursors").finish_non_exhaustive()
    }
}

fn not_found(name: &str) -> QueryError {
    QueryError::with_code("34000", format!("cursor \"{name}\" does not exist"))
}

/// How many rows a `FETCH` asks for (`None` = all).
pub(crate) fn fetch_count(direction: &FetchDirection) -> Result<Option<usize>> {
    let count = |v: &Value| match v {
        Value::Number(n, _) => n
            .parse::<usize>()
            .map_err(|_| QueryError::with_code("22023", format!("invalid FETCH count {n}"))),
        other => Err(QueryError::with_code(
            "22023",
            format!("invalid FETCH count {other}"),
        )),
    };
    match direction {
        FetchDirection::Next | FetchDirection::Forward { limit: None } => Ok(Some(1)),
        FetchDirection::Count { limit } | FetchDirection::Forward { limit: Some(limit) } => {
            count(&limit.value).map(Some)
        }
        FetchDirection::All | FetchDirection::ForwardAll => Ok(None),
        other => Err(QueryError::with_code(
            "55000",
            format!("cursor can only scan forward (FETCH {other} is not supported)"),
        )),
    }
}

impl Cursors {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cursor>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn declare(
        &self,
        name: &str,
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    ) -> Result<()> {
        let mut open = self.lock();
        if open.contains_key(name) {
            return Err(QueryError::with_code(
                "42P03",
                format!("cursor \"{name}\" already exists"),
            ));
        }
        open.insert(
            name.to_string(),
            Cursor {
                schema,
                stream,
                pending: None,
            },
        );
        Ok(())
    }

    /// The columns `FETCH` from `name` returns.
    pub(crate) fn schema(&self, name: &str) -> Result<SchemaRef> {
        self.lock()
            .get(name)
            .map(|c| c.schema.clone())
            .ok_or_else(|| not_found(name))
    }

    /// The next `count` rows (all if `None`) of cursor `name`.
    pub(crate) async fn fetch(
        &self,
        name: &str,
        count: Option<usize>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut cursor = self.lock().remove(name).ok_or_else(|| not_found(name))?;
        let result = read(&mut cursor, count).await;
        let schema = cursor.schema.clone();
        self.lock().insert(name.to_string(), cursor);
        Ok((schema, result?))
    }

    pub(crate) fn close(&self, name: Option<&str>) -> Result<()> {
        let mut open = self.lock();
        match name {
            None => open.clear(),
            Some(n) => {
                open.remove(n).ok_or_else(|| not_found(n))?;
            }
        }
        Ok(())
    }
}

async fn read(cursor: &mut Cursor, count: Option<usize>) -> Result<Vec<RecordBatch>> {
    let mut wanted = count.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    while wanted > 0 {
        let batch = match cursor.pending.take() {
            Some(b) => b,
            None => match cursor.stream.next().await {
                Some(b) => b?,
                None => break,
            },
        };
        if batch.num_rows() > wanted {
            out.push(batch.slice(0, wanted));
            cursor.pending = Some(batch.slice(wanted, batch.num_rows() - wanted));
            wanted = 0;
        } else {
            wanted -= batch.num_rows();
            out.push(batch);
        }
    }
    Ok(out)
}
