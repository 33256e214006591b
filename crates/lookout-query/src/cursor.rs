//! `DECLARE ... CURSOR`, `FETCH`, `CLOSE`: a query's rows read in portions
//! (psql with `FETCH_COUNT`, drivers' server-side cursors).
//!
//! Statements autocommit, so every cursor behaves as `WITH HOLD`: it lives
//! until `CLOSE` or the end of the session. Cursors scan forward only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::{FetchDirection, Value};
use futures::StreamExt;

use crate::error::SqlState;
use crate::error::{QueryError, Result};

/// An open cursor: the rest of its query's rows.
struct Cursor {
    /// The `DECLARE` statement, as `pg_cursors` shows it.
    statement: String,
    holdable: bool,
    /// Declared in the transaction block still open: a `ROLLBACK` closes it
    /// even if it is holdable, as in PostgreSQL.
    uncommitted: bool,
    /// When it was declared, µs since the epoch.
    created: i64,
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
    QueryError::new(
        SqlState::InvalidCursorName,
        format!("cursor \"{name}\" does not exist"),
    )
}

/// How many rows a `FETCH` asks for (`None` = all).
pub(crate) fn fetch_count(direction: &FetchDirection) -> Result<Option<usize>> {
    let count = |v: &Value| match v {
        Value::Number(n, _) => n.parse::<usize>().map_err(|_| {
            QueryError::new(
                SqlState::InvalidParameterValue,
                format!("invalid FETCH count {n}"),
            )
        }),
        other => Err(QueryError::new(
            SqlState::InvalidParameterValue,
            format!("invalid FETCH count {other}"),
        )),
    };
    match direction {
        FetchDirection::Next | FetchDirection::Forward { limit: None } => Ok(Some(1)),
        FetchDirection::Count { limit } | FetchDirection::Forward { limit: Some(limit) } => {
            count(&limit.value).map(Some)
        }
        FetchDirection::All | FetchDirection::ForwardAll => Ok(None),
        other => Err(QueryError::new(
            SqlState::ObjectNotInPrerequisiteState,
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
        statement: String,
        holdable: bool,
        in_block: bool,
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    ) -> Result<()> {
        let mut open = self.lock();
        if open.contains_key(name) {
            return Err(QueryError::new(
                SqlState::DuplicateCursor,
                format!("cursor \"{name}\" already exists"),
            ));
        }
        open.insert(
            name.to_string(),
            Cursor {
                statement,
                holdable,
                uncommitted: in_block,
                created: chrono::Utc::now().timestamp_micros(),
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

    /// Every row left in cursor `name`, as a stream read after this returns
    /// (`FETCH ALL` of a large cursor is not held in memory); the cursor
    /// stays, exhausted.
    pub(crate) fn take_rest(&self, name: &str) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let mut open = self.lock();
        let cursor = open.get_mut(name).ok_or_else(|| not_found(name))?;
        let schema = cursor.schema.clone();
        let empty: SendableRecordBatchStream = Box::pin(
            datafusion::physical_plan::EmptyRecordBatchStream::new(Arc::clone(&schema)),
        );
        let rest = std::mem::replace(&mut cursor.stream, empty);
        let pending = cursor.pending.take().map(Ok);
        let stream = futures::stream::iter(pending).chain(rest);
        Ok((
            Arc::clone(&schema),
            Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream),
            ),
        ))
    }

    /// At the end of a transaction block: cursors without `WITH HOLD`
    /// close; holdable ones stay if it committed, and close if it rolled
    /// back and they were declared in it.
    pub(crate) fn end_transaction(&self, committed: bool) {
        self.lock().retain(|_, c| {
            let keep = c.holdable && (committed || !c.uncommitted);
            c.uncommitted = false;
            keep
        });
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

/// `pg_catalog.pg_cursors`: the session's open cursors, listed when a query
/// scans it (drivers check it before closing a cursor).
#[derive(Debug)]
pub(crate) struct CursorsTable {
    cursors: Arc<Cursors>,
    schema: SchemaRef,
}

impl CursorsTable {
    pub(crate) fn new(cursors: Arc<Cursors>) -> CursorsTable {
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("statement", DataType::Utf8, false),
            Field::new("is_holdable", DataType::Boolean, false),
            Field::new("is_binary", DataType::Boolean, false),
            Field::new("is_scrollable", DataType::Boolean, false),
            Field::new(
                "creation_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        CursorsTable { cursors, schema }
    }

    fn rows(&self) -> Result<RecordBatch> {
        use arrow::array::{ArrayRef, BooleanArray, StringArray, TimestampMicrosecondArray};
        let open = self.cursors.lock();
        let mut listed: Vec<(&String, &Cursor)> = open.iter().collect();
        listed.sort_by_key(|(_, c)| c.created);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                listed.iter().map(|(n, _)| n.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                listed.iter().map(|(_, c)| c.statement.as_str()),
            )),
            Arc::new(BooleanArray::from_iter(
                listed.iter().map(|(_, c)| Some(c.holdable)),
            )),
            Arc::new(BooleanArray::from(vec![false; listed.len()])),
            Arc::new(BooleanArray::from(vec![false; listed.len()])),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(listed.iter().map(|(_, c)| c.created))
                    .with_timezone("UTC"),
            ),
        ];
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))
    }
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for CursorsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        _filters: &[datafusion::logical_expr::Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let rows = self
            .rows()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let source = datafusion::datasource::memory::MemorySourceConfig::try_new(
            &[vec![rows]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(datafusion::datasource::source::DataSourceExec::from_data_source(source))
    }
}
