//! The data of a `COPY ... FROM STDIN`, received as the client sends it.
//!
//! Small copies are held and written as one unit when the client ends
//! them (through the WAL, or into a transaction block). A large one, into a
//! table whose writes derive nothing, streams into a bulk load once it
//! passes [`BULK_ROWS`]: decoding and Parquet encoding then overlap, and the
//! rows held stay bounded by the batches in flight. Nothing is visible
//! before the client ends the copy; a copy that fails or is cut off stores
//! nothing.

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::Stream;
use lookout_storage::StorageError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Session;
use super::copy::BULK_ROWS;
use crate::copy::CopyDecoder;
use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::CopyIn;
use crate::ingest::Ingest;
use crate::transaction::TransactionState;

/// Decoded batches between the client's data and the load that stores
/// them: enough to keep the encoders busy while the next ones decode.
const BATCHES_IN_FLIGHT: usize = 4;

/// What the receiver hands the load.
enum Piece {
    Rows(RecordBatch),
    /// The client ended the copy: the load may commit.
    End,
}

/// A bulk load fed as the client's data arrives.
struct PacedLoad {
    pieces: mpsc::Sender<Piece>,
    load: JoinHandle<Result<u64>>,
}

impl PacedLoad {
    fn start(ingest: &Ingest, table: &str) -> PacedLoad {
        let (pieces, received) = mpsc::channel(BATCHES_IN_FLIGHT);
        let (ingest, table) = (ingest.clone(), table.to_string());
        let load =
            tokio::spawn(async move { ingest.bulk_load_paced(&table, pieces_of(received)).await });
        PacedLoad { pieces, load }
    }

    /// The load's own error once it stopped taking rows.
    async fn stopped(self) -> QueryError {
        drop(self.pieces);
        match self.load.await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => QueryError::new(SqlState::InternalError, "COPY load ended early"),
            Err(e) => QueryError::new(SqlState::InternalError, format!("COPY load failed: {e}")),
        }
    }
}

/// The rows a load reads: a stream that ends only at [`Piece::End`]. If the
/// sender goes away before it (the copy failed, the connection dropped),
/// the stream ends in an error, so the load stores nothing.
fn pieces_of(
    received: mpsc::Receiver<Piece>,
) -> impl Stream<Item = lookout_storage::Result<RecordBatch>> + Send + Unpin + 'static {
    Box::pin(futures::stream::unfold(
        Some(received),
        |received| async move {
            let mut received = received?;
            match received.recv().await {
                Some(Piece::Rows(batch)) => Some((Ok(batch), Some(received))),
                Some(Piece::End) => None,
                None => Some((
                    Err(StorageError::InvalidData(
                        "COPY data ended without the copy being completed".into(),
                    )),
                    None,
                )),
            }
        },
    ))
}

/// The data of one `COPY ... FROM STDIN`, from its first message to its
/// end.
pub struct CopyReceiver {
    table: String,
    decoder: CopyDecoder,
    ingest: Ingest,
    /// Outside a transaction block, into a table whose writes derive
    /// nothing: the rows may stream into a bulk load.
    may_stream: bool,
    held: Vec<RecordBatch>,
    held_rows: u64,
    load: Option<PacedLoad>,
}

impl CopyReceiver {
    /// Takes one message of COPY data.
    pub async fn push(&mut self, chunk: &[u8]) -> Result<()> {
        self.decoder.push(chunk)?;
        for batch in self.decoder.take_batches() {
            self.accept(batch).await?;
        }
        Ok(())
    }

    async fn accept(&mut self, batch: RecordBatch) -> Result<()> {
        if self.load.is_none() {
            self.held_rows += batch.num_rows() as u64;
            self.held.push(batch);
            if !self.may_stream || self.held_rows <= BULK_ROWS {
                return Ok(());
            }

            self.load = Some(PacedLoad::start(&self.ingest, &self.table));
            for batch in std::mem::take(&mut self.held) {
                self.send(Piece::Rows(batch)).await?;
            }
            return Ok(());
        }
        self.send(Piece::Rows(batch)).await
    }

    async fn send(&mut self, piece: Piece) -> Result<()> {
        let Some(load) = &self.load else {
            return Ok(());
        };
        if load.pieces.send(piece).await.is_ok() {
            return Ok(());
        }
        // The load stopped: its error is the copy's.
        match self.load.take() {
            Some(load) => Err(load.stopped().await),
            None => Ok(()),
        }
    }

    /// Ends the copy: stores its rows as one unit and returns their count.
    pub async fn finish(mut self, session: &Session) -> Result<u64> {
        let rest = self.decoder.end()?;
        if self.load.is_none() {
            // Never streamed: written whole, as the table's writes go.
            self.held.extend(rest);
            return session.write_batches(&self.table, self.held).await;
        }
        for batch in rest {
            self.send(Piece::Rows(batch)).await?;
        }
        match self.load.take() {
            Some(load) => {
                if load.pieces.send(Piece::End).await.is_err() {
                    return Err(load.stopped().await);
                }
                drop(load.pieces);
                load.load.await.map_err(|e| {
                    QueryError::new(SqlState::InternalError, format!("COPY load failed: {e}"))
                })?
            }
            None => Err(QueryError::new(
                SqlState::InternalError,
                "COPY load ended early",
            )),
        }
    }

    /// Drops the copy, waiting until a load already started has removed
    /// what it stored.
    pub async fn abandon(mut self) {
        if let Some(load) = self.load.take() {
            let _ = load.stopped().await;
        }
    }
}

impl Session {
    /// Starts receiving the data of a `COPY ... FROM STDIN`.
    pub fn copy_receiver(&self, copy: &CopyIn) -> Result<CopyReceiver> {
        let ingest = self.lookout.ingest().clone();
        let in_block = matches!(self.transaction, TransactionState::Open(_));

        Ok(CopyReceiver {
            decoder: CopyDecoder::new(&copy.table, Arc::clone(&copy.schema), copy.format.clone())?,
            may_stream: !in_block && ingest.is_plain(&copy.table)?,
            table: copy.table.clone(),
            ingest,
            held: Vec::new(),
            held_rows: 0,
            load: None,
        })
    }
}
