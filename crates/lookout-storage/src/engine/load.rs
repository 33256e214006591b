//! Bulk loads stream rows into Parquet files as they arrive: each
//! partition's rows go to an open Parquet writer, so a load holds encoded
//! bytes (a tenth of the decoded rows) instead of every decoded row until
//! the end, and encoding runs beside decoding instead of after it.
//!
//! Rows are queued per partition, and an idle encoder thread takes the
//! partition whose rows have waited longest, with its open file: one
//! encoder writes a partition at a time, so its rows keep their order, and
//! no thread idles while another has rows waiting. (Partitions tied to one
//! thread each left a core idle at the end of a load while the other worked
//! through its queue.) The queues share one budget of decoded bytes.
//!
//! A file is finished when it reaches the target row count, or, when the
//! open files' bytes pass the memory bound, the file written to least
//! recently is finished first. A file is also finished once the load has
//! moved past its time bucket: when the last two input batches hold no
//! rows of it or of any earlier bucket. Loads in time order (the usual
//! case) then finish each day's files, and the disk writes them back,
//! while the next day is encoded, instead of all at the end. Once all rows
//! are sent, the encoders finish the open files between them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
const MAX_ENCODERS: usize = 16;
/// Decoded bytes queued for the encoders before the caller waits, in KiB.
const QUEUED_KIB: usize = 128 * 1024;

/// Rows queued for a partition, with their share of the queue budget,
/// given back once they are encoded.
type Queued = (RecordBatch, OwnedSemaphorePermit);

/// The encoder threads of one bulk load.
pub(super) struct PartitionSink {
    storage: Storage,
    shared: Arc<Shared>,
    /// The earliest bucket of the last input batch.
    last_earliest: Option<i64>,
    workers: Vec<tokio::task::JoinHandle<EncoderResult>>,
}

/// What the encoders of one load share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when rows are queued, a partition is put back, or the
    /// load ends.
    changed: Condvar,
    /// The queue budget, in KiB of decoded rows; closed when an encoder
    /// fails, so that the caller stops sending.
    room: Arc<Semaphore>,
    /// `[storage] load_open_bytes`.
    open_bytes_limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the load and wakes every encoder. `Abandon` overrides
    /// `Finish` (an encoder failed while the files were being finished).
    fn end(&self, end: End) {
        let mut state = self.lock();
        if state.end != Some(End::Abandon) {
            state.end = Some(end);
        }
        if end == End::Abandon {
            // Their permits go back, and the caller's next send fails.
            for p in state.partitions.values_mut() {
                p.queued.clear();
            }
            state.ready.clear();
            self.room.close();
        }
        drop(state);
        self.changed.notify_all();
    }
}

#[derive(Default)]
struct State {
    partitions: HashMap<PartitionKey, Partition>,
    /// Partitions with rows queued and no encoder on them, longest
    /// waiting first.
    ready: VecDeque<PartitionKey>,
    /// Bytes held by open files, as [`WriterMemory`] counts them.
    open_bytes: usize,
    /// Bytes of finished files not yet stored: they count against the
    /// memory bound with the open files.
    put_bytes: usize,
    /// Ticks at each partition put back, for "written to least recently".
    clock: u64,
    /// Files of buckets starting before this one are finished: the load
    /// has moved past them (`None` until two input batches were sent).
    passed_before: Option<i64>,
    /// A file the load has moved past may be open and free to finish.
    look_for_passed: bool,
    end: Option<End>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// All rows were sent: finish every file.
    Finish,
    /// The load failed or was dropped: keep nothing.
    Abandon,
}

#[derive(Default)]
struct Partition {
    queued: VecDeque<Queued>,
    /// The open file; `None` when none is open, or an encoder holds it.
    file: Option<OpenFile>,
    /// An encoder is writing the partition's rows.
    busy: bool,
    /// The bytes of its open file counted in [`State::open_bytes`].
    bytes: usize,
    last_written: u64,
}

/// What an encoder does next.
enum Task {
    /// Append a partition's queued rows to its file (if one is open).
    Write(PartitionKey, VecDeque<Queued>, Option<OpenFile>),
    /// Finish a file: the memory bound, or the end of the load.
    Finish(PartitionKey, OpenFile),
    /// The load ended and nothing is left to do.
    Stop(End),
}

impl State {
    /// The next task, or `None` to wait for one.
    fn next_task(&mut self, open_bytes_limit: usize) -> Option<Task> {
        match self.end {
            Some(End::Abandon) => return Some(Task::Stop(End::Abandon)),
            Some(End::Finish) if self.ready.is_empty() => {
                return Some(match self.take_file(|_, _| true, |_| ()) {
                    Some((key, file)) => Task::Finish(key, file),
                    None if self.partitions.values().any(|p| p.busy) => return None,
                    None => Task::Stop(End::Finish),
                });
            }
            _ => {}
        }
        if self.open_bytes > open_bytes_limit
            && let Some((key, file)) = self.take_file(|_, _| true, |p| p.last_written)
        {
            return Some(Task::Finish(key, file));
        }
        if self.look_for_passed {
            let before = self.passed_before;
            let passed = |key: &PartitionKey, p: &Partition| {
                before.is_some_and(|b| key.1 < b) && p.queued.is_empty()
            };
            match self.take_file(passed, |p| p.last_written) {
                Some((key, file)) => return Some(Task::Finish(key, file)),
                None => self.look_for_passed = false,
            }
        }
        let key = self.ready.pop_front()?;
        let p = self.partitions.get_mut(&key)?;
        p.busy = true;
        let rows = std::mem::take(&mut p.queued);
        let file = p.file.take();
        Some(Task::Write(key, rows, file))
    }

    /// Takes the open file, of an `eligible` partition no encoder holds,
    /// that `rank` puts first.
    fn take_file<R: Ord>(
        &mut self,
        eligible: impl Fn(&PartitionKey, &Partition) -> bool,
        rank: impl Fn(&Partition) -> R,
    ) -> Option<(PartitionKey, OpenFile)> {
        let (key, p) = self
            .partitions
            .iter_mut()
            .filter(|(key, p)| !p.busy && p.file.is_some() && eligible(key, p))
            .min_by_key(|(_, p)| rank(p))?;
        let file = p.file.take()?;
        self.open_bytes -= p.bytes;
        p.bytes = 0;
        let key = key.clone();
        self.forget_if_idle(&key);
        Some((key, file))
    }

    /// Drops a partition with no open file, no rows queued and no encoder
    /// on it, so that the partitions scanned stay those a load holds.
    fn forget_if_idle(&mut self, key: &PartitionKey) {
        if self
            .partitions
            .get(key)
            .is_some_and(|p| !p.busy && p.file.is_none() && p.queued.is_empty())
        {
            self.partitions.remove(key);
        }
    }

    /// Puts back a partition an encoder wrote to, with its open file.
    fn put_back(&mut self, key: PartitionKey, file: Option<OpenFile>) {
        self.clock += 1;
        let Some(p) = self.partitions.get_mut(&key) else {
            return;
        };
        let bytes = file.as_ref().map_or(0, |f| f.bytes);
        self.open_bytes = self.open_bytes - p.bytes + bytes;
        p.bytes = bytes;
        p.file = file;
        p.busy = false;
        p.last_written = self.clock;
        if p.queued.is_empty() {
            self.look_for_passed |=
                p.file.is_some() && self.passed_before.is_some_and(|b| key.1 < b);
            self.forget_if_idle(&key);
        } else {
            self.ready.push_back(key);
        }
    }
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
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            room: Arc::new(Semaphore::new(QUEUED_KIB)),
            open_bytes_limit: storage.inner.options.load_open_bytes,
        });
        let workers = (0..encoders)
            .map(|_| {
                let encoder = Encoder {
                    storage: storage.clone(),
                    def: def.clone(),
                    schema: Arc::clone(&schema),
                    shared: Arc::clone(&shared),
                    stored: Vec::new(),
                    puts: VecDeque::new(),
                    syncs: Vec::new(),
                    runtime: tokio::runtime::Handle::current(),
                };
                tokio::task::spawn_blocking(move || encoder.run())
            })
            .collect();
        PartitionSink {
            storage: storage.clone(),
            shared,
            last_earliest: None,
            workers,
        }
    }

    /// Queues one partition's rows (sorted by time); waits while the rows
    /// queued for the encoders fill the budget. An error means an encoder
    /// stopped; its cause comes from [`PartitionSink::finish`].
    pub(super) async fn send(&mut self, key: PartitionKey, rows: RecordBatch) -> Result<()> {
        let stopped = || StorageError::Corrupt("a bulk-load encoder stopped".into());
        // A slice larger than the whole budget waits for all of it.
        let kib = (rows.get_array_memory_size() / 1024).clamp(1, QUEUED_KIB) as u32;
        let permit = Arc::clone(&self.shared.room)
            .acquire_many_owned(kib)
            .await
            .map_err(|_| stopped())?;
        let mut state = self.shared.lock();
        if state.end.is_some() {
            return Err(stopped());
        }
        let p = state.partitions.entry(key.clone()).or_default();
        p.queued.push_back((rows, permit));
        if !p.busy && p.queued.len() == 1 {
            state.ready.push_back(key);
        }
        drop(state);
        self.shared.changed.notify_one();
        Ok(())
    }

    /// Marks the end of an input batch whose earliest rows fall in the
    /// bucket starting at `earliest`: files of buckets before the earliest
    /// of the last two batches are finished. (Two, so that rows a little
    /// out of order at a bucket's end do not each start a new file.)
    pub(super) fn batch_sent(&mut self, earliest: i64) {
        let passed_before = self.last_earliest.map(|last| last.min(earliest));
        self.last_earliest = Some(earliest);
        let mut state = self.shared.lock();
        let rose = passed_before > state.passed_before;
        state.passed_before = passed_before;
        state.look_for_passed |= rose;
        drop(state);
        if rose {
            self.shared.changed.notify_one();
        }
    }

    /// Finishes every file and returns the stored files, not yet
    /// committed. On an error the files stored so far are deleted.
    pub(super) async fn finish(mut self) -> Result<Vec<FileMeta>> {
        self.shared.end(End::Finish);
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
        self.shared.end(End::Abandon);
        self.join().await.1
    }

    /// Waits for the encoders: what they stored, and the first error (an
    /// encoder stopped by an abandoned load deletes its files and reports
    /// nothing).
    async fn join(&mut self) -> (Vec<FileMeta>, Option<StorageError>) {
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

impl Drop for PartitionSink {
    /// A load dropped before its end (its caller went away) keeps nothing,
    /// and its encoders stop.
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.shared.end(End::Abandon);
        }
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
}

/// One encoder thread.
struct Encoder {
    storage: Storage,
    def: TableDef,
    /// The schema files are written with.
    schema: SchemaRef,
    shared: Arc<Shared>,
    /// Files handed to the store (their writes may still be under way).
    stored: Vec<FileMeta>,
    /// File writes under way, oldest first, with their sizes.
    puts: VecDeque<(PutTask, usize)>,
    /// Fsyncs of stored files under way.
    syncs: Vec<SyncTask>,
    runtime: tokio::runtime::Handle,
}

/// A file write: its bytes to the store, then, on the local disk, the
/// start of its fsync.
type PutTask = tokio::task::JoinHandle<Result<Option<SyncTask>>>;
type SyncTask = tokio::task::JoinHandle<std::io::Result<()>>;

impl Encoder {
    fn run(mut self) -> EncoderResult {
        let outcome = loop {
            let task = {
                let mut state = self.shared.lock();
                loop {
                    if let Some(task) = state.next_task(self.shared.open_bytes_limit) {
                        break task;
                    }
                    state = self
                        .shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
            };
            let done = match task {
                Task::Write(key, rows, file) => match self.write(&key, rows, file) {
                    Ok(file) => {
                        self.shared.lock().put_back(key, file);
                        self.shared.changed.notify_all();
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                Task::Finish(key, file) => self.finish_file(&key, file),
                Task::Stop(end) => break Ok(end),
            };
            if let Err(e) = done {
                break Err(e);
            }
        };
        // `Abandon` when the load failed elsewhere or its caller went away:
        // nothing of this encoder's is kept, and the error is not its own.
        let failed = match outcome {
            Ok(End::Finish) => match self.await_puts() {
                Ok(()) => {
                    return EncoderResult {
                        stored: std::mem::take(&mut self.stored),
                        failed: None,
                    };
                }
                Err(e) => Some(e),
            },
            Ok(End::Abandon) => None,
            Err(e) => Some(e),
        };
        if failed.is_some() {
            self.shared.end(End::Abandon);
        }
        self.delete_stored();
        EncoderResult {
            stored: Vec::new(),
            failed,
        }
    }

    /// Appends rows to a partition's file, opening one if none is, and
    /// finishing it when it reaches the target row count. Returns the file
    /// left open.
    fn write(
        &mut self,
        key: &PartitionKey,
        rows: VecDeque<Queued>,
        mut file: Option<OpenFile>,
    ) -> Result<Option<OpenFile>> {
        for (rows, room) in rows {
            let mut open = match file.take() {
                Some(f) => f,
                None => self.open_file(&rows)?,
            };
            let times = batch::time_values(&rows, &self.def)?;
            if let (Some(lo), Some(hi)) = (arrow::compute::min(times), arrow::compute::max(times)) {
                open.min_time = open.min_time.min(lo);
                open.max_time = open.max_time.max(hi);
            }
            open.writer.write(&rows)?;
            open.stats.add(&rows);
            open.rows += rows.num_rows() as u64;
            open.bytes = open.memory.of(&open.writer);
            drop(room);
            if open.rows >= self.storage.inner.options.target_file_rows as u64 {
                self.finish_file(key, open)?;
            } else {
                file = Some(open);
            }
        }
        Ok(file)
    }

    /// A new file for rows like `first`.
    fn open_file(&self, first: &RecordBatch) -> Result<OpenFile> {
        let props = batch::writer_properties(first)?;
        let memory = WriterMemory::new(&self.schema, &props);
        let writer =
            ArrowWriter::try_new(FileBuffer::new(), Arc::clone(&self.schema), Some(props))?;
        Ok(OpenFile {
            writer,
            memory,
            file_id: self.storage.reserve_file_ids(1),
            rows: 0,
            min_time: i64::MAX,
            max_time: i64::MIN,
            stats: WrittenStats::new(Arc::clone(&self.schema)),
            bytes: 0,
        })
    }

    /// Writes the footer and stores the file (not yet committed).
    fn finish_file(&mut self, key: &PartitionKey, file: OpenFile) -> Result<()> {
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
        let object = Path::from(path.as_str());
        let meta = FileMeta {
            path,
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
        let store = Arc::clone(&self.storage.inner.store);
        let on_disk = match &self.storage.inner.local {
            Some((local, _)) => Some(local.path_to_filesystem(&object)?),
            None => None,
        };
        let size = bytes.len();
        let payload = bytes.into_payload();
        let put = self.runtime.spawn(async move {
            put_new(store.as_ref(), &object, payload).await?;
            // Written back while the load goes on encoding: the commit
            // fsyncs every new file again, then with little left to write,
            // instead of waiting for all of a load's bytes at its end.
            Ok(on_disk.map(|file| {
                tokio::task::spawn_blocking(move || std::fs::File::open(file)?.sync_all())
            }))
        });
        self.puts.push_back((put, size));
        self.shared.lock().put_bytes += size;
        self.stored.push(meta);
        // On a slow store, writes waiting to finish would hold their bytes
        // past the bound: encoding waits for the oldest ones first.
        while let Some((oldest, _)) = self.puts.front() {
            let over = {
                let state = self.shared.lock();
                state.open_bytes + state.put_bytes > self.shared.open_bytes_limit
            };
            if !(oldest.is_finished() || over) {
                break;
            }
            self.await_oldest_put()?;
        }
        Ok(())
    }

    /// Waits for the oldest file write.
    fn await_oldest_put(&mut self) -> Result<()> {
        let Some((put, size)) = self.puts.pop_front() else {
            return Ok(());
        };
        self.shared.lock().put_bytes -= size;
        match self.runtime.block_on(put) {
            Ok(r) => {
                self.syncs.extend(r?);
                Ok(())
            }
            Err(e) => Err(StorageError::Corrupt(format!("file write failed: {e}"))),
        }
    }

    /// Waits for every file write and fsync; the first error is the load's
    /// (a failed fsync too: the kernel may not report it again at commit).
    fn await_puts(&mut self) -> Result<()> {
        let mut outcome = Ok(());
        while !self.puts.is_empty() {
            let done = self.await_oldest_put();
            if outcome.is_ok() {
                outcome = done;
            }
        }
        for sync in self.syncs.drain(..) {
            let done = match self.runtime.block_on(sync) {
                Ok(r) => r.map_err(StorageError::from),
                Err(e) => Err(StorageError::Corrupt(format!("file fsync failed: {e}"))),
            };
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
