//! What a statement produces, for the wire to send.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;

use crate::copy::CopyFormat;

/// What a statement produced.
pub enum Output {
    /// Rows to send to the client.
    Rows {
        /// Result columns.
        schema: SchemaRef,
        /// The rows, computed as they are pulled.
        stream: SendableRecordBatchStream,
    },
    /// Rows completed with another tag than `SELECT n`: `FETCH n` for the
    /// rows a cursor reads, `INSERT 0 n`/`UPDATE n`/`DELETE n` for the rows
    /// a write's `RETURNING` list computes.
    Tagged {
        /// `FETCH`, `INSERT`, `UPDATE` or `DELETE`; the row count is added.
        tag: &'static str,
        /// Result columns.
        schema: SchemaRef,
        /// The rows, computed as they are pulled.
        stream: SendableRecordBatchStream,
    },
    /// A command that ran; Postgres's completion tag and affected rows.
    Command {
        /// The tag, e.g. `CREATE TABLE`, `INSERT`, `DELETE`, `SET`.
        tag: &'static str,
        /// Rows affected, for tags that carry a count.
        rows: Option<u64>,
    },
    /// `COPY ... FROM STDIN`: the caller streams the data to [`Session`](crate::Session).
    CopyIn(CopyIn),
    /// `COPY ... TO STDOUT`: rows to encode with [`CopyEncoder`](crate::copy::CopyEncoder).
    CopyOut {
        /// Data format.
        format: CopyFormat,
        /// Columns.
        schema: SchemaRef,
        /// The rows.
        stream: SendableRecordBatchStream,
    },
}

impl Output {
    /// Rows already computed.
    pub fn from_batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> Output {
        Output::Rows {
            stream: batches_stream(Arc::clone(&schema), batches),
            schema,
        }
    }
}

/// Rows already computed, as a stream.
pub(crate) fn batches_stream(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> SendableRecordBatchStream {
    Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches.into_iter().map(Ok)),
        ),
    )
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows { schema, .. } => write!(f, "Rows({schema:?})"),
            Output::Tagged { tag, schema, .. } => write!(f, "Tagged({tag}, {schema:?})"),
            Output::Command { tag, rows } => write!(f, "Command({tag}, {rows:?})"),
            Output::CopyIn(c) => write!(f, "CopyIn({})", c.table),
            Output::CopyOut { .. } => write!(f, "CopyOut"),
        }
    }
}

/// A pending `COPY ... FROM STDIN`.
#[derive(Debug, Clone)]
pub struct CopyIn {
    /// Target table.
    pub table: String,
    /// The columns the data carries, in order.
    pub schema: SchemaRef,
    /// Data format.
    pub format: CopyFormat,
}
