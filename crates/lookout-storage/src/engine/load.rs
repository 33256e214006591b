//! Bulk loads stream rows into Parquet files as they arrive: each
//! partition's rows go to an open Parquet writer, so a load holds encoded
//! bytes (a tenth of the decoded rows) instead of every decoded row until
//! the end, and encoding runs beside decoding instead of after it.
//!
//! Partitions are spread over encoder threads, so each writer is owned by
//! one thread and rows of one partition keep their order. The threads'
//! queues share one budget of decoded bytes: a thread behind on a busy
//! partition does not stop the caller from feeding the others, which an
//! equal cap per queue did (partitions' traffic is skewed, so one queue
//! filled while the other thread idled).
//!
//! A file is finished when it reaches the target row count, or, when the
//! open files' bytes pass the memory bound, the file written to least
//! recently is finished first: loads in time order (the usual case) then
//! finish each day's files as the load moves past that day.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Storage;
use crate::batch::{self, WriterMemory, WrittenStats};
use crate::error::{Result, StorageError};
use crate::file_buffer::FileBuffer;
use crate::manifest::FileMeta;
use crate::manifest::put_new;
use crate::schema::TableDef;

/// A partition: its column's value and the start of its time bucket.
pub(super) type PartitionKey = (Option<String>, i64);

/// Encoder threads: one per core, at least two, at most [`MAX_ENCODERS`].
/// Each holds its partitions' open files within its share of
/// `[storage] load_memory`, so more threads than cores would finish files
/// of partitions still being written (four threads on two cores made 69
/// files of the bench load where two made 56), for no gain once the queues
/// share a budget.
const MAX_ENCODERS: usize = 16;
/// Decoded bytes queued for all encoders before the caller waits, in KiB.
const QUEUED_KIB: usize = 128 * 1024;

enum Job {
    /// A partition's rows, and their share of the queue budget, given back
    /// once they are encoded.
    Rows(PartitionKey, RecordBatch, OwnedSemaphorePermit),
    /// All rows were sent: finish every file and report.
    Finish,
}

/// The encoder threads of one bulk load.
pub(super) struct PartitionSink {
    storage: Storage,
    senders: Vec<mpsc::UnboundedSender<Job>>,
    /// The queue budget, in KiB of decoded rows.
    room: Arc<Semaphore>,
    /// The encoder of each partition seen, and the rows sent to each encoder.
    lanes: HashMap<PartitionKey, usize>,
    sent: Vec<u64>,
    workers: Vec<tokio::task::JoinHandle<EncoderResult>>,
}

/// What an encoder stored, and the first error that stopped it.
struct EncoderResult {
    stored: Vec<FileMeta>,
    failed: Option<StorageError>,
}

impl PartitionSink {
    /// A sink for rows of `def`, whose files are written with `schema`
    /// (the table's: text sent as a dictionary is written as text).
    pub(super) fn new(storage: &Storage, def: &TableDef, schema: SchemaRef) -> Self {
        let encoders = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(2, MAX_ENCODERS);
        let mut senders = Vec::with_capacity(encoders);
        let mut workers = Vec::with_capacity(encoders);
        for _ in 0..encoders {
            let (tx, rx) = mpsc::unbounded_channel();
            let encoder = Encoder {
                storage: storage.clone(),
                def: def.clone(),
                schema: Arc::clone(&schema),
                open: HashMap::new(),
                open_bytes: 0,
                open_bytes_limit: storage.inner.options.load_open_bytes / encoders,
                put_bytes: 0,
                clock: 0,
                stored: Vec::new(),
                puts: VecDeque::new(),
                runtime: tokio::runtime::Handle::current(),
            };
            senders.push(tx);
            workers.push(tokio::task::spawn_blocking(move || encoder.run(rx)));
        }
        PartitionSink {
            storage: storage.clone(),
            room: Arc::new(Semaphore::new(QUEUED_KIB)),
            sent: vec![0; senders.len()],
            senders,
            lanes: HashMap::new(),
            workers,
        }
    }

    /// Queues one partition's rows (sorted by time); waits while the rows
    /// queued for all encoders fill the budget. An error means an encoder
    /// stopped; its cause comes from [`PartitionSink::finish`].
    pub(super) async fn send(&mut self, key: PartitionKey, rows: RecordBatch) -> Result<()> {
        let n = rows.num_rows() as u64;
        let lane = match self.lanes.get(&key) {
            Some(lane) => *lane,
            None => {
                // A new partition goes to the encoder that was sent the
                // fewest rows, which keeps both busy when few partitions
                // are active at a time (a load in time order).
                let lane = (0..self.sent.len())
                    .min_by_key(|i| self.sent[*i])
                    .unwrap_or(0);
                self.lanes.insert(key.clone(), lane);
                lane
            }
        };
        self.sent[lane] += n;
        // A slice larger than the whole budget waits for all of it.
        let kib = (rows.get_array_memory_size() / 1024).clamp(1, QUEUED_KIB) as u32;
        let permit = Arc::clone(&self.room)
            .acquire_many_owned(kib)
            .await
            .map_err(|_| StorageError::Corrupt("a bulk-load queue closed".into()))?;
        self.senders[lane]
            .send(Job::Rows(key, rows, permit))
            .map_err(|_| StorageError::Corrupt("a bulk-load encoder stopped".into()))
    }

    /// Finishes every file and returns the stored files, not yet
    /// committed. On an error the files stored so far are deleted.
    pub(super) async fn finish(mut self) -> Result<Vec<FileMeta>> {
        for tx in &self.senders {
            // A closed channel means that encoder failed; its error follows.
            let _ = tx.send(Job::Finish);
        }
        let (stored, failed) = self.join().await;
        match failed {
            None => Ok(stored),
            Some(e) => {
                // Nothing refers to these files yet.
                for f in &stored {
                    let _ = self
                        .storage
                        .inner
                        .store
                        .delete(&Path::from(f.path.as_str()))
                        .await;
                }
                Err(e)
            }
        }
    }

    /// Drops the load: every encoder deletes what it stored. Returns the
    /// error an encoder stopped with, if one did.
    pub(super) async fn abandon(mut self) -> Option<StorageError> {
        self.join().await.1
    }

    /// Closes the queues and waits for the encoders: what they stored,
    /// and the first error (an encoder whose queue closed before `Finish`
    /// deletes its files and reports nothing).
    async fn join(&mut self) -> (Vec<FileMeta>, Option<StorageError>) {
        self.senders.clear();
        let mut stored = Vec::new();
        let mut failed = None;
        for worker in self.workers.drain(..) {
            match worker.await {
                Ok(r) => {
                    stored.extend(r.stored);
                    if failed.is_none() {
                        failed = r.failed;
                    }
                }
                Err(e) => {
                    failed.get_or_insert(StorageError::Corrupt(format!("encoder failed: {e}")));
                }
            }
        }
        (stored, failed)
    }
}

/// One file being written.
struct OpenFile {
    writer: ArrowWriter<FileBuffer>,
    /// How the bytes it holds are counted.
    memory: WriterMemory,
    file_id: u64,
    rows: u64,
    min_time: i64,
    max_time: i64,
    stats: WrittenStats,
    /// Bytes held, as `memory` counts them.
    bytes: usize,
    last_written: u64,
}

struct Encoder {
    storage: Storage,
    def: TableDef,
    /// The schema files are written with.
    schema: SchemaRef,
    open: HashMap<PartitionKey, OpenFile>,
    open_bytes: usize,
    open_bytes_limit: usize,
    clock: u64,
    /// Files handed to the store (their writes may still be under way).
    stored: Vec<FileMeta>,
    /// File writes under way, oldest first, with their sizes.
    puts: VecDeque<(PutTask, usize)>,
    /// Bytes of finished files not yet written: they count against the
    /// memory bound with the open files.
    put_bytes: usize,
    runtime: tokio::runtime::Handle,
}

type PutTask = tokio::task::JoinHandle<object_store::Result<object_store::PutResult>>;

impl Encoder {
    fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) -> EncoderResult {
        // `None` when the load was abandoned (an error elsewhere, or the
        // caller went away): nothing of this encoder's is kept, and the
        // error that abandoned it is the caller's to report.
        let outcome = loop {
            match jobs.blocking_recv() {
                Some(Job::Rows(key, rows, _room)) => {
                    if let Err(e) = self.append(key, &rows) {
                        break Some(Err(e));
                    }
                }
                Some(Job::Finish) => {
                    break Some(self.finish_all().and_then(|()| self.await_puts()));
                }
                None => break None,
            }
        };
        match outcome {
            Some(Ok(())) => EncoderResult {
                stored: std::mem::take(&mut self.stored),
                failed: None,
            },
            failed => {
                self.delete_stored();
                EncoderResult {
                    stored: Vec::new(),
                    failed: failed.and_then(Result::err),
                }
            }
        }
    }

    fn append(&mut self, key: PartitionKey, rows: &RecordBatch) -> Result<()> {
        self.clock += 1;
        let times = batch::time_values(rows, &self.def)?;
        let (lo, hi) = (
            arrow::compute::min(times).unwrap_or(0),
            arrow::compute::max(times).unwrap_or(0),
        );
        let file = match self.open.get_mut(&key) {
            Some(f) => f,
            None => {
                let props = batch::writer_properties(rows)?;
                let memory = WriterMemory::new(&self.schema, &props);
                let writer =
                    ArrowWriter::try_new(FileBuffer::new(), Arc::clone(&self.schema), Some(props))?;
                self.open.entry(key.clone()).or_insert(OpenFile {
                    writer,
                    memory,
                    file_id: self.storage.reserve_file_ids(1),
                    rows: 0,
                    min_time: lo,
                    max_time: hi,
                    stats: WrittenStats::new(Arc::clone(&self.schema)),
                    bytes: 0,
                    last_written: 0,
                })
            }
        };
        file.writer.write(rows)?;
        file.stats.add(rows);
        file.rows += rows.num_rows() as u64;
        file.min_time = file.min_time.min(lo);
        file.max_time = file.max_time.max(hi);
        file.last_written = self.clock;
        let bytes = file.memory.of(&file.writer);
        self.open_bytes = self.open_bytes + bytes - file.bytes;
        file.bytes = bytes;
        if file.rows >= self.storage.inner.options.target_file_rows as u64 {
            self.finish_file(&key)?;
        }
        while self.open_bytes > self.open_bytes_limit && !self.open.is_empty() {
            let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, f)| f.last_written)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.finish_file(&oldest)?;
        }
        Ok(())
    }

    fn finish_all(&mut self) -> Result<()> {
        let keys: Vec<PartitionKey> = self.open.keys().cloned().collect();
        for key in keys {
            self.finish_file(&key)?;
        }
        Ok(())
    }

    /// Writes the footer and stores the file (not yet committed).
    fn finish_file(&mut self, key: &PartitionKey) -> Result<()> {
        let Some(file) = self.open.remove(key) else {
            return Ok(());
        };
        self.open_bytes -= file.bytes;
        let mut writer = file.writer;
        writer.flush()?;
        let stats = file.stats.finish(writer.flushed_row_groups());
        // Writes the footer.
        let bytes = writer.into_inner()?;
        let path = batch::file_path(
            &self.def,
            key.0.as_deref(),
            key.1,
            &self.storage.inner.run,
            file.file_id,
        );
        let meta = FileMeta {
            path: path.clone(),
            partition: key.0.clone(),
            bucket_start: key.1,
            min_time: file.min_time,
            max_time: file.max_time,
            rows: file.rows,
            size: bytes.len() as u64,
            stats,
            deletes: None,
        };
        // Stored on the runtime while this thread goes on encoding.
        let store = std::sync::Arc::clone(&self.storage.inner.store);
        let size = bytes.len();
        let payload = bytes.into_payload();
        let put = self.runtime.spawn(async move {
            put_new(store.as_ref(), &Path::from(path.as_str()), payload).await
        });
        self.puts.push_back((put, size));
        self.put_bytes += size;
        self.stored.push(meta);
        // On a slow store, writes waiting to finish would hold their bytes
        // past the bound: encoding waits for the oldest ones first.
        while let Some((oldest, _)) = self.puts.front()
            && (oldest.is_finished() || self.open_bytes + self.put_bytes > self.open_bytes_limit)
        {
            self.await_oldest_put()?;
        }
        Ok(())
    }

    /// Waits for the oldest file write.
    fn await_oldest_put(&mut self) -> Result<()> {
        let Some((put, size)) = self.puts.pop_front() else {
            return Ok(());
        };
        self.put_bytes -= size;
        match self.runtime.block_on(put) {
            Ok(r) => r.map(|_| ()).map_err(StorageError::from),
            Err(e) => Err(StorageError::Corrupt(format!("file write failed: {e}"))),
        }
    }

    /// Waits for every file write; the first error is the load's.
    fn await_puts(&mut self) -> Result<()> {
        let mut outcome = Ok(());
        while !self.puts.is_empty() {
            let done = self.await_oldest_put();
            if outcome.is_ok() {
                outcome = done;
            }
        }
        outcome
    }

    fn delete_stored(&mut self) {
        // Writes still under way finish before their files are deleted.
        let _ = self.await_puts();
        let store = &self.storage.inner.store;
        for f in &self.stored {
            let _ = self
                .runtime
                .block_on(store.delete(&Path::from(f.path.as_str())));
        }
    }
}
