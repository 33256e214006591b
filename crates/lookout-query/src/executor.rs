//! Query execution on threads of its own.
//!
//! DataFusion's operators run on whatever tokio runtime polls them, and a
//! sort or an aggregation can keep a thread busy for a long time between
//! two awaits. On the runtime that also serves connections and fires timers,
//! that made `statement_timeout` and CancelRequests land seconds late while
//! the workers were busy. Queries therefore run on a runtime of their own
//! (as InfluxDB 3's dedicated executor does); the connection's runtime only
//! receives their batches through a small channel, so the interrupt is seen
//! at once and a client that reads slowly still slows the query down.

use std::panic::AssertUnwindSafe;

use arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::error::SqlState;
use crate::error::{QueryError, Result};

/// Stack of every query thread: plans and expressions are evaluated by
/// recursive tree walks, bounded by the statement size limit.
const QUERY_THREAD_STACK: usize = 64 << 20;

/// Batches a running query may have ready ahead of its reader.
const BATCHES_AHEAD: usize = 2;

/// The runtime queries execute on; shut down (without waiting) when the
/// database is dropped.
pub(crate) struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRuntime").finish_non_exhaustive()
    }
}

impl QueryRuntime {
    /// A runtime with `threads` workers (0 = one per core).
    pub(crate) fn new(threads: usize) -> Result<QueryRuntime> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("lookout-query")
            .thread_stack_size(QUERY_THREAD_STACK)
            .enable_all()
            .build()
            .map_err(|e| QueryError::new(SqlState::InternalError, format!("query threads: {e}")))?;
        Ok(QueryRuntime {
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> Result<&tokio::runtime::Handle> {
        self.runtime.as_ref().map(|r| r.handle()).ok_or_else(|| {
            QueryError::new(SqlState::AdminShutdown, "the database is shutting down")
        })
    }

    /// Plans `frame` physically and runs it on the query threads. Its rows
    /// come back as a stream; dropping the stream stops the query at its
    /// next await.
    pub(crate) async fn execute(&self, frame: DataFrame) -> Result<SendableRecordBatchStream> {
        let (rows, received) = mpsc::channel(BATCHES_AHEAD);
        let (started, schema) = oneshot::channel::<Result<SchemaRef>>();
        self.handle()?.spawn(async move {
            let run = async {
                let mut stream = match frame.execute_stream().await {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = started.send(Err(e.into()));
                        return;
                    }
                };
                if started.send(Ok(stream.schema())).is_err() {
                    return;
                }
                while let Some(batch) = stream.next().await {
                    if rows.send(batch).await.is_err() {
                        return;
                    }
                }
            };
            // A reader that went away (dropped stream, interrupt) stops the
            // work even while no batch is ready; a panic ends the rows with
            // an error rather than a silently short result.
            let work = AssertUnwindSafe(run).catch_unwind();
            tokio::select! {
                finished = work => {
                    if let Err(panic) = finished {
                        let what = panic_message(panic.as_ref());
                        let _ = rows
                            .send(Err(DataFusionError::Execution(format!("query failed: {what}"))))
                            .await;
                    }
                }
                () = rows.closed() => {}
            }
        });
        let schema = match schema.await {
            Ok(schema) => schema?,
            Err(_) => {
                return Err(QueryError::new(
                    SqlState::InternalError,
                    "the query stopped before it started (see the server log)",
                ));
            }
        };
        let mut received = received;
        let batches = futures::stream::poll_fn(move |cx| received.poll_recv(cx));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    /// Runs `frame` on the query threads and collects its rows.
    pub(crate) async fn collect(&self, frame: DataFrame) -> Result<Vec<arrow::array::RecordBatch>> {
        let stream = self.execute(frame).await?;
        Ok(datafusion::physical_plan::common::collect(stream).await?)
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's task would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}
