//! The storage engine: write path, flushes, snapshots for scans, DDL,
//! deletes, compaction, retention and garbage collection.

mod changes;
mod ddl;
mod flush;
mod load;
mod maintenance;
mod replica;
mod write;

pub use replica::Replication;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use roaring::RoaringBitmap;
use tokio::sync::{Notify, oneshot};

use crate::batch;
use crate::clock::{Clock, SystemClock};
use crate::error::{Result, StorageError};
use crate::lease::WriterLease;
use crate::manifest::{FileMeta, Garbage, Manifest, TableEntry};
use crate::metrics::StorageMetrics;
use crate::schema::{Derivation, TableDef, Versions};
use crate::wal::{self, Wal};

/// Tunables of the storage engine. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Flush a table's buffer to Parquet once it holds this many bytes.
    pub flush_bytes: usize,
    /// Flush buffered rows at the latest this long after the first arrived.
    pub flush_age: Duration,
    /// Reject rows whose time is further than this in the future.
    pub future_horizon: Duration,
    /// Superseded files are deleted this long after they stop being live.
    pub gc_grace: Duration,
    /// A partition with at least this many files is compacted.
    pub compaction_min_files: usize,
    /// Rows per file written by compaction and bulk loads.
    pub target_file_rows: usize,
    /// Encoded bytes a bulk load holds in files not yet finished; past it the
    /// file written to least recently is finished (a load in time order thus
    /// finishes each day as it moves on).
    pub load_open_bytes: usize,
    /// How often background maintenance (compaction, retention, GC) runs.
    pub maintenance_interval: Duration,
    /// Run the background flush and maintenance task.
    pub background: bool,
    /// Where Parquet files and manifests go; `None` is `<dir>/data` on the local disk.
    pub object_store: Option<Arc<dyn ObjectStore>>,
    /// Where "now" comes from (see [`crate::clock`]).
    pub clock: Arc<dyn Clock>,
    /// Open as a read-only replica: no lock, no WAL, no background work;
    /// the manifest another process commits is followed instead.
    pub read_only: bool,
    /// How often a replica looks for a newer manifest.
    pub follow_interval: Duration,
    /// How long the writer lease on a shared object store lasts unrenewed
    /// (renewed three times within it).
    pub lease_ttl: Duration,
    /// The registry the engine's metrics are registered in.
    pub metrics: lookout_metrics::Registry,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            flush_bytes: 128 * 1024 * 1024,
            flush_age: Duration::from_secs(300),
            future_horizon: Duration::from_secs(86_400),
            gc_grace: Duration::from_secs(3600),
            compaction_min_files: 4,
            target_file_rows: 1_000_000,
            load_open_bytes: 256 * 1024 * 1024,
            maintenance_interval: Duration::from_secs(60),
            background: true,
            object_store: None,
            clock: Arc::new(SystemClock),
            read_only: false,
            follow_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(30),
            metrics: lookout_metrics::Registry::new(),
        }
    }
}

/// Everything a scan needs of a table, taken at one instant.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    /// The table definition.
    pub def: TableDef,
    /// Its Arrow schema.
    pub schema: SchemaRef,
    /// Live Parquet files (shared with the manifest they were taken from).
    pub files: Arc<Vec<FileMeta>>,
    /// Acknowledged rows not yet in Parquet, already fitted to `schema`.
    pub buffered: Vec<RecordBatch>,
    /// Keeps `files` from garbage collection while any clone of the
    /// snapshot (or of this pin) lives, so a query reads every file it
    /// planned even if compaction or retention retires it meanwhile.
    pub pin: Arc<FilePin>,
}

/// How many live snapshots hold each file: by path, and by the shared
/// file lists snapshots take whole (pinning one costs the same for ten
/// files or ten thousand).
#[derive(Debug, Default)]
struct FilePins {
    counts: Mutex<HashMap<String, usize>>,
    /// File lists pinned whole, by address, with how many pins hold each.
    lists: Mutex<HashMap<usize, PinnedList>>,
}

type PinnedList = (Arc<Vec<FileMeta>>, usize);

impl FilePins {
    /// Every path a live pin holds, gathered once for a pass over many
    /// paths (a lookup per path would scan each pinned list again).
    fn pinned(&self) -> HashSet<String> {
        let mut paths: HashSet<String> = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for (files, _) in self
            .lists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            paths.extend(files.iter().map(|f| f.path.clone()));
        }
        paths
    }
}

/// Holds a set of files back from garbage collection until dropped.
#[derive(Debug)]
pub struct FilePin {
    pins: Arc<FilePins>,
    paths: Vec<String>,
    list: Option<Arc<Vec<FileMeta>>>,
}

impl FilePin {
    fn new(pins: &Arc<FilePins>, paths: Vec<String>) -> FilePin {
        let mut counts = pins.counts.lock().unwrap_or_else(|p| p.into_inner());
        for p in &paths {
            *counts.entry(p.clone()).or_default() += 1;
        }
        drop(counts);
        FilePin {
            pins: Arc::clone(pins),
            paths,
            list: None,
        }
    }

    /// Pins every file of a shared list.
    fn list(pins: &Arc<FilePins>, files: &Arc<Vec<FileMeta>>) -> FilePin {
        let mut lists = pins.lists.lock().unwrap_or_else(|p| p.into_inner());
        lists
            .entry(Arc::as_ptr(files) as usize)
            .or_insert_with(|| (Arc::clone(files), 0))
            .1 += 1;
        drop(lists);
        FilePin {
            pins: Arc::clone(pins),
            paths: Vec::new(),
            list: Some(Arc::clone(files)),
        }
    }
}

impl Drop for FilePin {
    fn drop(&mut self) {
        if let Some(files) = &self.list {
            let mut lists = self.pins.lists.lock().unwrap_or_else(|p| p.into_inner());
            let key = Arc::as_ptr(files) as usize;
            if let Some((_, n)) = lists.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    lists.remove(&key);
                }
            }
        }
        let mut counts = self.pins.counts.lock().unwrap_or_else(|p| p.into_inner());
        for p in &self.paths {
            if let Some(n) = counts.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(p);
                }
            }
        }
    }
}

/// Row positions of one table picked for deletion by a transaction that
/// has not committed yet, by file path.
#[derive(Debug, Default, Clone)]
pub struct RowMarks {
    /// The table's id when the rows were picked: a table dropped and made
    /// again meanwhile is not the one they belong to.
    pub table_id: u64,
    /// Marked positions, by file path.
    pub marks: HashMap<String, RoaringBitmap>,
}

impl RowMarks {
    /// Adds the positions of `found` (of the same table).
    pub fn absorb(&mut self, found: &MarkedRows) {
        self.table_id = found.table_id;
        for (path, bitmap) in &found.marks {
            *self.marks.entry(path.clone()).or_default() |= bitmap;
        }
    }
}

/// Rows picked by [`Storage::mark_rows`].
#[derive(Debug)]
pub struct MarkedRows {
    /// The table's id.
    pub table_id: u64,
    /// Picked positions, by file path.
    pub marks: HashMap<String, RoaringBitmap>,
    /// How many rows were picked.
    pub count: u64,
    /// The picked rows, if asked for.
    pub rows: Vec<RecordBatch>,
    /// Keeps compaction off the files until dropped.
    pub hold: FilePin,
}

/// What `CREATE TABLE` asks for, before defaults are applied.
#[derive(Debug, Clone, Default)]
pub struct CreateTable {
    /// Time column; default the first non-null timestamp column.
    pub time_column: Option<String>,
    /// Partition column: `None` = default (`model` if present), `Some(None)` = none.
    pub partition_column: Option<Option<String>>,
    /// Bucket width in µs; default a day.
    pub bucket_micros: Option<i64>,
    /// Time to live in µs; default none.
    pub ttl_micros: Option<i64>,
    /// For a derived table: its source and definition.
    pub derived: Option<Derivation>,
    /// For a table of versioned records: key, version and tombstone columns.
    pub versions: Option<Versions>,
}

/// Rewrites rows of a derived table into an equivalent, smaller set of rows
/// (a rollup merges the partial states each bucket has accumulated). The
/// engine calls it on one partition's rows when buffered rows are written to
/// Parquet and when files are compacted; if it fails, the rows are kept as
/// they are.
pub trait Combine: Send + Sync + std::fmt::Debug {
    /// Returns rows with the same schema that stand for all of `rows`.
    fn combine(&self, rows: RecordBatch) -> BoxFuture<'static, Result<RecordBatch>>;
}

/// Rows for one table (by id) of a write.
type TablePart = (u64, RecordBatch);

struct WriteRequest {
    /// Each table's rows; written in one WAL record, made visible together.
    parts: Vec<TablePart>,
    frame: Vec<u8>,
    ack: oneshot::Sender<Result<()>>,
}

#[derive(Default)]
struct TableBuffer {
    batches: Vec<RecordBatch>,
    /// Rows taken by a flush that has not committed yet; still visible to scans.
    flushing: Vec<RecordBatch>,
    bytes: usize,
    since: Option<Instant>,
}

struct State {
    manifest: Arc<Manifest>,
    buffers: HashMap<u64, TableBuffer>,
}

struct Inner {
    dir: PathBuf,
    store: Arc<dyn ObjectStore>,
    /// The store and its directory when it is the local default: files
    /// written there are fsynced before a commit names them.
    local: Option<(Arc<LocalFileSystem>, PathBuf)>,
    options: StorageOptions,
    state: Arc<RwLock<State>>,
    /// Lock order: `wal`, then `state`. `None` on a replica.
    wal: Option<Arc<Mutex<Wal>>>,
    /// Serialises everything that commits a manifest.
    commit: tokio::sync::Mutex<()>,
    writer: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Shared with the background task, which waits on them without
    /// keeping the engine alive.
    flush_wanted: Arc<Notify>,
    shutdown: Arc<Notify>,
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Tasks that may stop anywhere (lease renewal, following the writer),
    /// aborted on close.
    abortable: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Distinguishes this process's file names from a crashed one's.
    run: String,
    /// File numbers within this run; with `run` they make names unique.
    next_file: AtomicU64,
    /// Flushes and bulk loads under way: their files are not orphans yet.
    loads_in_flight: AtomicU64,
    /// Held while the directory is open; released by `close`.
    lock: Mutex<Option<File>>,
    /// The writer lease on a shared object store (see [`crate::lease`]).
    lease: Mutex<Option<Arc<WriterLease>>>,
    /// What a replica has applied of the writer's commits.
    replication: Mutex<replica::Progress>,
    /// Combiners of derived tables, by table id.
    combiners: RwLock<HashMap<u64, Arc<dyn Combine>>>,
    /// Files that snapshots still read.
    pins: Arc<FilePins>,
    /// Files with rows marked by an uncommitted transaction: compaction
    /// leaves them alone, so the marked positions stay valid until commit.
    marked: Arc<FilePins>,
    metrics: StorageMetrics,
}

/// A handle to an open data directory. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// Removes the files `expired` selects from a table's entry, noting their paths.
fn retire_files(
    entry: &mut TableEntry,
    expired: impl Fn(&FileMeta) -> bool,
    dropped: &mut Vec<String>,
) {
    Arc::make_mut(&mut entry.files).retain(|f| {
        let gone = expired(f);
        if gone {
            dropped.push(f.path.clone());
        }
        !gone
    });
}

/// Files no longer in the manifest, deleted once the grace period has passed
/// (running queries may still read them). Returns how many.
fn collect_later(m: &mut Manifest, dropped: Vec<String>, now: i64) -> usize {
    let n = dropped.len();
    m.garbage
        .extend(dropped.into_iter().map(|path| Garbage { path, since: now }));
    n
}

/// Takes the data directory's lock file, or fails naming its holder.
fn take_lock(dir: &FsPath) -> Result<File> {
    let lock_path = dir.join("LOCK");
    let mut lock = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)?;
    if lock.try_lock().is_err() {
        // The holder wrote who it is into the file (see `note_holder`).
        let holder = std::fs::read_to_string(&lock_path)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(StorageError::Locked {
            path: dir.display().to_string(),
            lock: lock_path.display().to_string(),
            holder,
        });
    }
    // Who holds the lock, for the error another process gets; only
    // informative, so a full disk does not stop the open here.
    {
        use std::io::Write as _;
        let _ = lock
            .set_len(0)
            .and_then(|()| writeln!(lock, "process {}", std::process::id()));
    }
    Ok(lock)
}

/// The object store and, when it is the local default, its directory.
type Stores = (
    Arc<dyn ObjectStore>,
    Option<(Arc<LocalFileSystem>, PathBuf)>,
);

impl Inner {
    fn new(
        dir: PathBuf,
        (store, local): Stores,
        options: StorageOptions,
        state: State,
        wal: Option<Arc<Mutex<Wal>>>,
        lock: Option<File>,
    ) -> Arc<Inner> {
        let run = format!("{:x}", options.clock.now_micros());
        let metrics = StorageMetrics::register(&options.metrics);
        let state = Arc::new(RwLock::new(state));
        register_state_gauges(&options.metrics, &state);
        Arc::new(Inner {
            dir,
            store,
            local,
            options,
            state,
            wal,
            commit: tokio::sync::Mutex::new(()),
            writer: Mutex::new(None),
            writer_thread: Mutex::new(None),
            flush_wanted: Arc::new(Notify::new()),
            shutdown: Arc::new(Notify::new()),
            background: Mutex::new(None),
            abortable: Mutex::new(Vec::new()),
            run,
            next_file: AtomicU64::new(1),
            loads_in_flight: AtomicU64::new(0),
            lock: Mutex::new(lock),
            lease: Mutex::new(None),
            replication: Mutex::default(),
            combiners: RwLock::default(),
            pins: Arc::default(),
            marked: Arc::default(),
            metrics,
        })
    }
}

/// Renews the writer lease for as long as the engine exists.
async fn renew_lease(engine: std::sync::Weak<Inner>) {
    let Some(every) = engine
        .upgrade()
        .and_then(|inner| Storage { inner }.lease())
        .map(|l| l.renew_every())
    else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let storage = Storage { inner };
        let Some(lease) = storage.lease() else {
            return;
        };
        match lease
            .renew(
                storage.inner.store.as_ref(),
                storage.inner.options.clock.as_ref(),
            )
            .await
        {
            Ok(()) => {}
            Err(e @ StorageError::Fenced(_)) => {
                tracing::error!(error = %e, "writer lease lost; writes are refused from now on");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "renewing the writer lease failed; retrying"),
        }
    }
}

fn poisoned<T>(_: T) -> StorageError {
    StorageError::Corrupt("internal lock poisoned by an earlier panic".into())
}

impl Storage {
    /// Adds a line to the lock file saying how to reach this process (e.g.
    /// the address it serves), which another process that finds the
    /// directory locked reports.
    pub fn note_holder(&self, line: &str) -> Result<()> {
        use std::io::Write as _;
        let mut guard = self.inner.lock.lock().map_err(poisoned)?;
        if let Some(file) = guard.as_mut() {
            writeln!(file, "{}", line.trim())?;
        }
        Ok(())
    }

    /// Opens (or creates) a data directory: takes its lock, loads the
    /// manifest, replays the WAL and starts the writer. With
    /// [`StorageOptions::read_only`] it opens a replica instead (see
    /// [`replica`]).
    pub async fn open(dir: impl AsRef<FsPath>, options: StorageOptions) -> Result<Storage> {
        if options.read_only {
            return replica::open(dir.as_ref(), options).await;
        }
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let lock = take_lock(&dir)?;
        let (store, local) = match &options.object_store {
            Some(s) => (Arc::clone(s), None),
            None => {
                let data = dir.join("data");
                std::fs::create_dir_all(&data)?;
                let local = Arc::new(LocalFileSystem::new_with_prefix(&data)?);
                (
                    Arc::clone(&local) as Arc<dyn ObjectStore>,
                    Some((local, data)),
                )
            }
        };
        // The lock file keeps out processes on this machine; an object store
        // shared between machines needs its own lease.
        let lease = match &local {
            Some(_) => None,
            None => Some(Arc::new(
                WriterLease::acquire(
                    store.as_ref(),
                    options.clock.as_ref(),
                    options.lease_ttl,
                    &dir,
                    &store.to_string(),
                )
                .await?,
            )),
        };
        let manifest = Manifest::load_latest(store.as_ref()).await?;
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir)?;
        let replayed = wal::replay(&wal_dir, manifest.wal_flushed_segment)?;
        let mut buffers: HashMap<u64, TableBuffer> = HashMap::new();
        let mut replayed_rows = 0usize;
        for write in replayed {
            let Some(entry) = manifest.table_by_id(write.table_id) else {
                continue; // the table was dropped after the write
            };
            let schema = entry.def.schema()?;
            let buffer = buffers.entry(write.table_id).or_default();
            for b in write.batches {
                let b = batch::widen(&b, &schema)?;
                replayed_rows += b.num_rows();
                buffer.bytes += b.get_array_memory_size();
                buffer.since.get_or_insert_with(Instant::now);
                buffer.batches.push(b);
            }
        }
        if replayed_rows > 0 {
            tracing::info!(rows = replayed_rows, "replayed write-ahead log");
        }
        let wal = Arc::new(Mutex::new(Wal::open(
            &wal_dir,
            manifest.wal_flushed_segment,
        )?));
        let inner = Inner::new(
            dir,
            (store, local),
            options,
            State {
                manifest: Arc::new(manifest),
                buffers,
            },
            Some(Arc::clone(&wal)),
            Some(lock),
        );
        *inner.lease.lock().map_err(poisoned)? = lease;
        let (tx, rx) = mpsc::channel();
        // The writer holds only the WAL and the state, not the engine, so
        // dropping the last handle ends it (and releases the lock file).
        let (state, metrics) = (Arc::clone(&inner.state), inner.metrics.clone());
        let thread = std::thread::Builder::new()
            .name("lookout-wal".into())
            .spawn(move || writer_loop(&wal, &state, &rx, &metrics))?;
        *inner.writer.lock().map_err(poisoned)? = Some(tx);
        *inner.writer_thread.lock().map_err(poisoned)? = Some(thread);
        let storage = Storage { inner };
        if storage.inner.options.background {
            let handle = tokio::spawn(background_loop(Arc::downgrade(&storage.inner)));
            *storage.inner.background.lock().map_err(poisoned)? = Some(handle);
        }
        if storage.lease().is_some() {
            storage.spawn_abortable(renew_lease)?;
        }
        // End of recovery: the replayed rows go to Parquet before anything
        // is served, as PostgreSQL checkpoints after recovery, so a store
        // that cannot take them (a full disk) fails the start with the
        // reason instead of serving rows it cannot flush.
        if replayed_rows > 0 {
            storage.flush().await?;
        }
        Ok(storage)
    }

    /// Runs `task` over a weak handle of the engine until it ends or the
    /// engine closes, which aborts it wherever it is.
    fn spawn_abortable<F>(&self, task: impl FnOnce(std::sync::Weak<Inner>) -> F) -> Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task(Arc::downgrade(&self.inner)));
        self.inner.abortable.lock().map_err(poisoned)?.push(handle);
        Ok(())
    }

    fn lease(&self) -> Option<Arc<WriterLease>> {
        self.inner.lease.lock().ok().and_then(|l| l.clone())
    }

    /// Fails on a read-only replica, and on a writer whose lease another
    /// writer took: nothing may be committed (or acknowledged) then. `what`
    /// names the refused work in the error.
    pub fn check_writable(&self, what: &str) -> Result<()> {
        if self.inner.options.read_only {
            return Err(StorageError::ReadOnly(what.to_string()));
        }
        match self.lease() {
            Some(lease) => lease.check(self.inner.options.clock.as_ref()),
            None => Ok(()),
        }
    }

    /// Whether this handle is a read-only replica.
    pub fn is_read_only(&self) -> bool {
        self.inner.options.read_only
    }

    /// The clock every part of the database reads the present from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.options.clock
    }

    fn now_micros(&self) -> i64 {
        self.inner.options.clock.now_micros()
    }

    /// The data directory.
    pub fn dir(&self) -> &FsPath {
        &self.inner.dir
    }

    /// How long superseded files are kept before they are deleted.
    pub fn gc_grace(&self) -> Duration {
        self.inner.options.gc_grace
    }

    /// The directory holding Parquet files and manifests when the store is
    /// the local default, `None` for any other object store.
    pub fn local_data_dir(&self) -> Option<&FsPath> {
        self.inner.local.as_ref().map(|(_, dir)| dir.as_path())
    }

    /// The object store holding Parquet files and manifests.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.inner.store)
    }

    /// The manifest in force.
    pub fn manifest(&self) -> Result<Arc<Manifest>> {
        Ok(Arc::clone(
            &self.inner.state.read().map_err(poisoned)?.manifest,
        ))
    }

    /// Names of all tables.
    pub fn table_names(&self) -> Result<Vec<String>> {
        Ok(self.manifest()?.tables.keys().cloned().collect())
    }

    /// The definition of a table.
    pub fn table(&self, name: &str) -> Result<TableDef> {
        Ok(self.manifest()?.table(name)?.def.clone())
    }

    /// A consistent view of a table's files and buffered rows, as of now.
    /// Its files stay on storage while the snapshot lives.
    pub fn snapshot(&self, name: &str) -> Result<TableSnapshot> {
        // Pinned under the state lock: a file leaves the live set only by a
        // manifest swap under the write lock, so garbage collection, which
        // runs after that swap, always sees this pin.
        let state = self.inner.state.read().map_err(poisoned)?;
        let entry = state.manifest.table(name)?;
        let schema = entry.def.schema()?;
        let mut buffered = Vec::new();
        if let Some(buf) = state.buffers.get(&entry.def.id) {
            for b in buf.flushing.iter().chain(&buf.batches) {
                buffered.push(batch::widen(b, &schema)?);
            }
        }
        let pin = FilePin::list(&self.inner.pins, &entry.files);
        Ok(TableSnapshot {
            def: entry.def.clone(),
            schema,
            files: Arc::clone(&entry.files),
            buffered,
            pin: Arc::new(pin),
        })
    }

    /// Applies `change` to a copy of the manifest and commits it.
    async fn commit<T>(&self, change: impl FnOnce(&mut Manifest) -> Result<T>) -> Result<T> {
        let _guard = self.inner.commit.lock().await;
        self.commit_locked(change).await
    }

    async fn commit_locked<T>(&self, change: impl FnOnce(&mut Manifest) -> Result<T>) -> Result<T> {
        self.commit_and_install(change, |_| {}).await
    }

    /// Commits a changed manifest, then installs it together with `install`'s
    /// change to the in-memory state, under one lock: a scan sees either the
    /// old manifest and buffers or the new ones, never a mix.
    async fn commit_and_install<T>(
        &self,
        change: impl FnOnce(&mut Manifest) -> Result<T>,
        install: impl FnOnce(&mut State),
    ) -> Result<T> {
        let old = self.manifest()?;
        let mut m = (*old).clone();
        let out = change(&mut m)?;
        // A change that changed nothing (`CREATE TABLE IF NOT EXISTS` of a
        // table that exists, which every start runs for the catalog
        // tables) is no write: it would push history out of the versions
        // kept, and a read-only replica runs it too.
        let write = !m.says_the_same_as(&old);
        if write {
            self.write_manifest(&old, &mut m).await?;
        }
        let mut state = self.inner.state.write().map_err(poisoned)?;
        if write {
            state.manifest = Arc::new(m);
        }
        install(&mut state);
        Ok(out)
    }

    /// Commits `m`, a changed copy of `old`, durably: on the local disk the
    /// files it names for the first time are fsynced (with the directories
    /// that gained them) before it is written, and it is fsynced after, so
    /// neither a commit nor the WAL segments it lets go outlive their data
    /// in a power loss. Object stores acknowledge only durable writes.
    pub(super) async fn write_manifest(&self, old: &Manifest, m: &mut Manifest) -> Result<()> {
        self.check_writable("change the database")?;
        m.committed_micros = self.now_micros();
        let Some((local, root)) = &self.inner.local else {
            return m.commit(self.inner.store.as_ref()).await;
        };
        let on_disk = |path: &str| local.path_to_filesystem(&object_store::path::Path::from(path));
        let known: std::collections::HashSet<&str> = old
            .tables
            .values()
            .flat_map(|t| t.files.iter().map(|f| f.path.as_str()))
            .collect();
        let new = m
            .tables
            .values()
            .flat_map(|t| t.files.iter())
            .filter(|f| !known.contains(f.path.as_str()))
            .map(|f| on_disk(&f.path))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        sync_paths(root, new).await?;
        m.commit(self.inner.store.as_ref()).await?;
        let manifest = on_disk(&Manifest::object_path(m.version))?;
        sync_paths(root, vec![manifest]).await
    }

    /// Stops background work, flushes every buffered row and stops the writer.
    pub async fn close(&self) -> Result<()> {
        self.inner.shutdown.notify_one();
        let bg = self.inner.background.lock().map_err(poisoned)?.take();
        if let Some(handle) = bg {
            let _ = handle.await;
        }
        let tasks = std::mem::take(&mut *self.inner.abortable.lock().map_err(poisoned)?);
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        if self.inner.options.read_only {
            return Ok(());
        }
        self.flush().await?;
        let tx = self.inner.writer.lock().map_err(poisoned)?.take();
        drop(tx);
        let thread = self.inner.writer_thread.lock().map_err(poisoned)?.take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // Closed: another process (or a new handle) may open the directory.
        if let Some(lease) = self.lease()
            && let Err(e) = lease.release(self.inner.store.as_ref()).await
        {
            tracing::warn!(error = %e, "releasing the writer lease failed; it expires");
        }
        self.inner.lock.lock().map_err(poisoned)?.take();
        Ok(())
    }
}

/// Flushes when due and runs maintenance, for as long as the engine exists.
async fn background_loop(engine: std::sync::Weak<Inner>) {
    let (shutdown, flush_wanted) = match engine.upgrade() {
        Some(inner) => (Arc::clone(&inner.shutdown), Arc::clone(&inner.flush_wanted)),
        None => return,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_maintenance = Instant::now();
    loop {
        // Only a weak reference is held while waiting, so dropping the last
        // handle releases the engine (and its lock file) at once.
        tokio::select! {
            _ = shutdown.notified() => return,
            _ = tick.tick() => {}
            _ = flush_wanted.notified() => {}
        }
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let storage = Storage { inner };
        if storage.flush_due()
            && let Err(e) = storage.flush().await
        {
            tracing::error!(error = %e, "flush failed; rows stay in the WAL and are retried");
        }
        if last_maintenance.elapsed() >= storage.inner.options.maintenance_interval {
            last_maintenance = Instant::now();
            if let Err(e) = storage.maintain().await {
                tracing::error!(error = %e, "maintenance failed");
            }
        }
    }
}

/// Fsyncs files under `root`, then every directory from theirs up to `root`.
async fn sync_paths(root: &FsPath, files: Vec<PathBuf>) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for file in &files {
            File::open(file)?.sync_all()?;
            let mut dir = file.parent();
            while let Some(d) = dir.filter(|d| d.starts_with(&root)) {
                if !dirs.insert(d.to_path_buf()) {
                    break;
                }
                dir = d.parent();
            }
        }
        for dir in dirs {
            File::open(&dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| StorageError::Corrupt(format!("fsync task failed: {e}")))?
}

/// Counts a flush or bulk load as under way for as long as it lives.
struct LoadGuard<'a>(&'a AtomicU64);

impl<'a> LoadGuard<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        LoadGuard(counter)
    }
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn offset_error(e: StorageError, offset: u64) -> StorageError {
    match e {
        StorageError::InvalidData(m) if offset > 0 => StorageError::InvalidData(format!(
            "{m} (rows counted from {} in this load)",
            offset + 1
        )),
        StorageError::NotNull(m) if offset > 0 => StorageError::NotNull(format!(
            "{m} (rows counted from {} in this load)",
            offset + 1
        )),
        other => other,
    }
}

fn join_result_tagged(
    done: std::result::Result<(u64, Result<Vec<FileMeta>>), tokio::task::JoinError>,
) -> Result<(u64, Vec<FileMeta>)> {
    let (id, files) = done.map_err(|e| StorageError::Corrupt(format!("write task failed: {e}")))?;
    Ok((id, files?))
}

/// The group-commit loop: takes every queued write, appends them all, fsyncs
/// once, makes the rows visible, then acknowledges each.
fn check_versions(def: &TableDef, versions: &Versions) -> Result<()> {
    let bad = |m: String| Err(StorageError::InvalidDefinition(m));
    if versions.key.is_empty() {
        return bad("a versioned table needs at least one key column".into());
    }
    let column = |name: &str| def.columns.iter().find(|c| c.name == name);
    for name in versions.key.iter().chain([&versions.version]) {
        if column(name).is_none() {
            return bad(format!(
                "column \"{name}\" of the versions option does not exist"
            ));
        }
    }
    if let Some(deleted) = &versions.deleted {
        match column(deleted) {
            Some(c) if c.data_type == "Boolean" => {}
            Some(_) => return bad(format!("deleted column \"{deleted}\" must be boolean")),
            None => return bad(format!("deleted column \"{deleted}\" does not exist")),
        }
    }
    Ok(())
}

/// Gauges read from the engine's state at each scrape; they hold it weakly,
/// so a closed database reads as empty rather than being kept alive.
fn register_state_gauges(registry: &lookout_metrics::Registry, state: &Arc<RwLock<State>>) {
    let weak = Arc::downgrade(state);
    registry.gauge_fn(
        "buffered_bytes",
        "Bytes of acknowledged rows held in memory until the next flush",
        move || {
            weak.upgrade()
                .and_then(|s| {
                    s.read()
                        .ok()
                        .map(|s| s.buffers.values().map(|b| b.bytes as i64).sum())
                })
                .unwrap_or(0)
        },
    );
    let weak = Arc::downgrade(state);
    registry.gauge_fn(
        "parquet_files",
        "Live Parquet files of every table",
        move || {
            weak.upgrade()
                .and_then(|s| {
                    s.read().ok().map(|s| {
                        s.manifest
                            .tables
                            .values()
                            .map(|t| t.files.len() as i64)
                            .sum()
                    })
                })
                .unwrap_or(0)
        },
    );
}

fn writer_loop(
    wal: &Mutex<Wal>,
    state: &RwLock<State>,
    rx: &mpsc::Receiver<WriteRequest>,
    metrics: &StorageMetrics,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let mut bytes = group[0].frame.len();
        while bytes < 64 * 1024 * 1024 {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.frame.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let result = commit_group(wal, state, &mut group, metrics);
        for req in group {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StorageError::Io(std::io::Error::other(e.to_string()))),
            };
            let _ = req.ack.send(r);
        }
    }
}

fn commit_group(
    wal: &Mutex<Wal>,
    state: &RwLock<State>,
    group: &mut [WriteRequest],
    metrics: &StorageMetrics,
) -> Result<()> {
    let frames: Vec<Vec<u8>> = group
        .iter_mut()
        .map(|r| std::mem::take(&mut r.frame))
        .collect();
    let mut wal = wal.lock().map_err(poisoned)?;
    let started = Instant::now();
    wal.append(&frames)?;
    metrics
        .wal_sync
        .observe(lookout_metrics::seconds_since(started));
    let rows: usize = group
        .iter()
        .flat_map(|r| &r.parts)
        .map(|(_, b)| b.num_rows())
        .sum();
    metrics.rows_via_wal.inc_by(rows as u64);
    let mut state = state.write().map_err(poisoned)?;
    for (table_id, batch) in group.iter().flat_map(|r| &r.parts) {
        let buf = state.buffers.entry(*table_id).or_default();
        buf.bytes += batch.get_array_memory_size();
        buf.since.get_or_insert_with(Instant::now);
        buf.batches.push(batch.clone());
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Schema};

    use super::*;
    use crate::schema::DAY_MICROS;
    use arrow::array::{Array, AsArray, BooleanArray};
    use arrow::datatypes::Field;
    use object_store::ObjectStoreExt;
    use object_store::path::Path;

    pub(super) fn schema() -> Schema {
        crate::schema::test_schema()
    }

    pub(super) fn batch(ts: &[i64], model: &str) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(schema()),
            vec![
                Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![model; ts.len()])),
                Arc::new(Float64Array::from_iter_values(ts.iter().map(|t| *t as f64))),
            ],
        )
        .expect("batch")
    }

    /// A storage in `dir` opened with `options`, holding the empty table
    /// `t` of [`schema`].
    pub(super) async fn with_table_t(dir: &std::path::Path, options: StorageOptions) -> Storage {
        let s = Storage::open(dir, options).await.expect("open");
        s.create_table("t", &schema(), CreateTable::default(), false)
            .await
            .expect("create");
        s
    }

    pub(super) fn quiet() -> StorageOptions {
        StorageOptions {
            background: false,
            ..StorageOptions::default()
        }
    }

    /// Every row of a data file of a storage in `dir` on the local disk.
    fn file_rows(dir: &std::path::Path, f: &FileMeta) -> RecordBatch {
        let bytes = std::fs::read(dir.join("data").join(&f.path)).expect("read");
        let parts = batch::decode_parquet(bytes::Bytes::from(bytes)).expect("decode");
        arrow::compute::concat_batches(&parts[0].schema(), &parts).expect("concat")
    }

    pub(super) fn live_rows(s: &Storage, table: &str) -> u64 {
        let snap = s.snapshot(table).expect("snapshot");
        let files: u64 = snap
            .files
            .iter()
            .map(|f| f.live_rows().expect("rows"))
            .sum();
        files
            + snap
                .buffered
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum::<u64>()
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_reopen_without_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Storage::open(dir.path(), quiet()).await.expect("open");
            s.create_table("t", &schema(), CreateTable::default(), false)
                .await
                .expect("create");
            s.write("t", batch(&[1, 2, 3], "a")).await.expect("write");
            s.write("t", batch(&[4], "b")).await.expect("write");
            // Dropped without close: as after a crash, only the WAL has the rows.
        }
        let s = Storage::open(dir.path(), quiet()).await.expect("reopen");
        assert_eq!(live_rows(&s, "t"), 4);
        // The end of recovery flushed the replayed rows.
        let snap = s.snapshot("t").expect("snap");
        assert!(snap.buffered.is_empty());
        assert_eq!(snap.files.len(), 2, "one file per model");
        let version = s.manifest().expect("manifest").version;
        s.create_table("t", &schema(), CreateTable::default(), true)
            .await
            .expect("create if not exists");
        assert_eq!(
            s.manifest().expect("manifest").version,
            version,
            "a change that changes nothing commits no version"
        );
        s.close().await.expect("close");
        let s = Storage::open(dir.path(), quiet()).await.expect("reopen");
        assert_eq!(live_rows(&s, "t"), 4, "flushed rows are not replayed twice");
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _s = Storage::open(dir.path(), quiet()).await.expect("open");
        _s.note_holder("serving 127.0.0.1:5433").expect("note");
        let err = Storage::open(dir.path(), quiet()).await.unwrap_err();
        let StorageError::Locked { holder, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            holder,
            &format!("process {}, serving 127.0.0.1:5433", std::process::id())
        );
    }

    #[tokio::test]
    async fn future_timestamps_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path(), quiet()).await.expect("open");
        s.create_table("t", &schema(), CreateTable::default(), false)
            .await
            .expect("create");
        let far = crate::SystemClock.now_micros() + 30 * DAY_MICROS;
        let err = s.write("t", batch(&[1, far], "a")).await.unwrap_err();
        assert!(
            err.to_string().contains("row 2") && err.to_string().contains("future horizon"),
            "{err}"
        );
        assert_eq!(live_rows(&s, "t"), 0);
    }

    #[tokio::test]
    async fn compaction_merges_small_files_and_purges_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path(), quiet()).await.expect("open");
        s.create_table("t", &schema(), CreateTable::default(), false)
            .await
            .expect("create");
        for i in 0..4 {
            // Late data too: later flushes carry earlier times.
            s.write("t", batch(&[100 - i, 200 - i], "a"))
                .await
                .expect("write");
            s.flush().await.expect("flush");
        }
        assert_eq!(s.snapshot("t").expect("snap").files.len(), 4);
        let deleted = s
            .delete_rows(
                "t",
                |_| true,
                |b| {
                    let x = b
                        .column(2)
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .expect("x");
                    Ok(BooleanArray::from_iter(
                        x.iter().map(|v| Some(v == Some(100.0))),
                    ))
                },
            )
            .await
            .expect("delete");
        assert_eq!(deleted, 1);
        assert_eq!(live_rows(&s, "t"), 7);
        let replaced = s.compact().await.expect("compact");
        assert_eq!(replaced, 4);
        let snap = s.snapshot("t").expect("snap");
        assert_eq!(snap.files.len(), 1);
        assert_eq!(snap.files[0].rows, 7, "deleted row purged");
        assert!(snap.files[0].deletes.is_none());
        assert_eq!(snap.files[0].min_time, 97);
        let garbage = s.manifest().expect("manifest").garbage.len();
        assert_eq!(garbage, 4, "superseded files wait for the grace period");
    }

    #[tokio::test]
    async fn retention_drops_expired_buckets_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StorageOptions {
            gc_grace: Duration::ZERO,
            ..quiet()
        };
        let s = Storage::open(dir.path(), opts).await.expect("open");
        let request = CreateTable {
            ttl_micros: Some(7 * DAY_MICROS),
            ..CreateTable::default()
        };
        s.create_table("t", &schema(), request, false)
            .await
            .expect("create");
        let now = crate::SystemClock.now_micros();
        s.write(
            "t",
            batch(&[now - 30 * DAY_MICROS, now - 3_600_000_000], "a"),
        )
        .await
        .expect("write");
        s.flush().await.expect("flush");
        assert_eq!(s.snapshot("t").expect("snap").files.len(), 2);
        assert_eq!(s.enforce_retention().await.expect("retention"), 1);
        let snap = s.snapshot("t").expect("snap");
        assert_eq!(snap.files.len(), 1);
        assert!(snap.files[0].max_time > now - DAY_MICROS);
        // A file left by a load that never committed is an orphan.
        let orphan = dir.path().join("data/t/model=a/orphan.parquet");
        std::fs::write(&orphan, b"PAR1").expect("orphan");
        assert_eq!(s.collect_garbage().await.expect("gc"), 2);
        assert!(!orphan.exists());
        let parquet_files = walk(dir.path())
            .into_iter()
            .filter(|p| p.ends_with(".parquet"))
            .count();
        assert_eq!(parquet_files, 1, "the expired file is deleted");
    }

    /// The horizon and retention read the clock in the options, so a test
    /// can move time by hand.
    #[tokio::test]
    async fn a_manual_clock_moves_the_horizon_and_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = 1_577_836_800_000_000; // 2020-01-01
        let clock = Arc::new(crate::ManualClock::new(start));
        let opts = StorageOptions {
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            ..quiet()
        };
        let s = Storage::open(dir.path(), opts).await.expect("open");
        let request = CreateTable {
            ttl_micros: Some(7 * DAY_MICROS),
            ..CreateTable::default()
        };
        s.create_table("t", &schema(), request, false)
            .await
            .expect("create");
        let later = start + 2 * DAY_MICROS;
        let err = s.write("t", batch(&[later], "a")).await.unwrap_err();
        assert!(err.to_string().contains("future horizon"), "{err}");
        s.write(
            "t",
            batch(&[start - 30 * DAY_MICROS, start - 3_600_000_000], "a"),
        )
        .await
        .expect("write");
        s.flush().await.expect("flush");
        assert_eq!(s.enforce_retention().await.expect("retention"), 1);
        assert_eq!(live_rows(&s, "t"), 1);
        clock.advance(8 * DAY_MICROS);
        s.write("t", batch(&[later], "a"))
            .await
            .expect("no longer ahead");
        s.flush().await.expect("flush");
        assert_eq!(s.enforce_retention().await.expect("retention"), 1);
        assert_eq!(live_rows(&s, "t"), 1);
    }

    #[tokio::test]
    async fn files_a_snapshot_reads_outlive_compaction_until_it_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StorageOptions {
            gc_grace: Duration::ZERO,
            ..quiet()
        };
        let s = Storage::open(dir.path(), opts).await.expect("open");
        s.create_table("t", &schema(), CreateTable::default(), false)
            .await
            .expect("create");
        for i in 0..4 {
            s.write("t", batch(&[10 + i], "a")).await.expect("write");
            s.flush().await.expect("flush");
        }
        let running = s.snapshot("t").expect("snap");
        let clone = running.clone();
        assert_eq!(s.compact().await.expect("compact"), 4);
        assert_eq!(s.collect_garbage().await.expect("gc"), 0, "all pinned");
        let store = s.object_store();
        for f in running.files.iter() {
            store
                .head(&Path::from(f.path.as_str()))
                .await
                .expect("a pinned file is still there");
        }
        drop(running);
        assert_eq!(
            s.collect_garbage().await.expect("gc"),
            0,
            "a clone pins too"
        );
        drop(clone);
        assert_eq!(s.collect_garbage().await.expect("gc"), 4);
        assert_eq!(live_rows(&s, "t"), 4);
    }

    #[tokio::test]
    async fn rows_a_transaction_marked_stay_put_until_it_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path(), quiet()).await.expect("open");
        s.create_table("t", &schema(), CreateTable::default(), false)
            .await
            .expect("create");
        for i in 0..4 {
            s.write("t", batch(&[10 + i, 20 + i], "a"))
                .await
                .expect("write");
            s.flush().await.expect("flush");
        }
        // Pick the rows with ts >= 20: one per file.
        let pick = |b: &RecordBatch| -> Result<BooleanArray> {
            let ts = arrow::array::AsArray::as_primitive::<
                arrow::datatypes::TimestampMicrosecondType,
            >(b.column(0));
            Ok(ts
                .iter()
                .map(|t| Some(t.is_some_and(|t| t >= 20)))
                .collect())
        };
        let found = s
            .mark_rows("t", &RowMarks::default(), |_| true, pick, true)
            .await
            .expect("mark");
        assert_eq!(found.count, 4);
        assert_eq!(
            found.rows.iter().map(RecordBatch::num_rows).sum::<usize>(),
            4
        );
        assert_eq!(live_rows(&s, "t"), 8, "nothing is deleted before commit");
        assert_eq!(
            s.compact().await.expect("compact"),
            0,
            "marked files are held"
        );
        let mut marks = RowMarks::default();
        marks.absorb(&found);
        // Picking again with the marks counts nothing twice.
        let again = s
            .mark_rows("t", &marks, |_| true, pick, false)
            .await
            .expect("mark again");
        assert_eq!(again.count, 0);
        s.commit_changes(
            &HashMap::from([("t".to_string(), marks)]),
            vec![("t".to_string(), batch(&[99], "b"))],
        )
        .await
        .expect("commit");
        assert_eq!(live_rows(&s, "t"), 5, "4 kept, 1 added");
        drop(found);
        drop(again);
        // The four files of model a; model b's new file is alone in its partition.
        assert_eq!(
            s.compact().await.expect("compact"),
            4,
            "released after commit"
        );
        assert_eq!(live_rows(&s, "t"), 5);
    }

    #[tokio::test]
    async fn added_columns_read_as_null_in_old_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path(), quiet()).await.expect("open");
        s.create_table("t", &schema(), CreateTable::default(), false)
            .await
            .expect("create");
        s.write("t", batch(&[1], "a")).await.expect("write");
        s.add_column("t", &Field::new("n", DataType::Int64, true), false)
            .await
            .expect("add");
        let snap = s.snapshot("t").expect("snap");
        assert_eq!(snap.buffered[0].num_columns(), 4);
        assert!(snap.buffered[0].column(3).is_null(0));
        let with_n = RecordBatch::try_from_iter(vec![
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![2]).with_timezone("UTC")) as _,
            ),
            ("model", Arc::new(StringArray::from(vec!["a"])) as _),
            ("n", Arc::new(Int64Array::from(vec![5])) as _),
        ])
        .expect("batch");
        s.write("t", with_n).await.expect("write");
        s.flush().await.expect("flush");
        assert_eq!(live_rows(&s, "t"), 2);
        let err = s
            .add_column("t", &Field::new("m", DataType::Int64, false), false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot be NOT NULL"), "{err}");
    }

    #[tokio::test]
    async fn bulk_load_is_atomic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path(), quiet()).await.expect("open");
        s.create_table("t", &schema(), CreateTable::default(), false)
            .await
            .expect("create");
        let bad = RecordBatch::try_from_iter(vec![
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![3]).with_timezone("UTC")) as _,
            ),
            (
                "model",
                Arc::new(StringArray::from(vec![None::<&str>])) as _,
            ),
        ])
        .expect("batch");
        let input = futures::stream::iter(vec![Ok(batch(&[1, 2], "a")), Ok(bad)]);
        let err = s.bulk_load("t", input).await.unwrap_err();
        assert!(matches!(err, StorageError::NotNull(_)), "{err}");
        assert_eq!(live_rows(&s, "t"), 0);
        let ok =
            futures::stream::iter(vec![Ok(batch(&[1, 2], "a")), Ok(batch(&[DAY_MICROS], "b"))]);
        assert_eq!(s.bulk_load("t", ok).await.expect("load"), 3);
        assert_eq!(s.snapshot("t").expect("snap").files.len(), 2);
    }

    /// Text given as dictionaries (as an import reads low-cardinality
    /// columns) is loaded as the text it stands for, mixed in one file
    /// with text given plainly; the files say text, and a dictionary with
    /// NULL among its values, or a NULL key in a NOT NULL column, is
    /// handled as the same text would be.
    #[tokio::test]
    async fn bulk_load_takes_text_given_as_dictionaries() {
        use arrow::array::{ArrayRef, DictionaryArray, Int32Array};
        use arrow::datatypes::Int32Type;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::open(dir.path(), quiet()).await.expect("open");
        let table = Arc::new(Schema::new(vec![
            Field::new("ts", crate::schema::time_type(), false),
            Field::new("model", DataType::Utf8, false),
            Field::new("tag", DataType::Utf8, true),
        ]));
        s.create_table("d", &table, CreateTable::default(), false)
            .await
            .expect("create");
        let dictionary = |keys: Vec<Option<i32>>, values: Vec<Option<&str>>| -> ArrayRef {
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(
                    Int32Array::from(keys),
                    Arc::new(StringArray::from(values)),
                )
                .expect("dictionary"),
            )
        };
        let rows = |ts: Vec<i64>, model: ArrayRef, tag: ArrayRef| -> Result<RecordBatch> {
            let ts = Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC"));
            Ok(RecordBatch::try_from_iter(vec![
                ("ts", ts as ArrayRef),
                ("model", model),
                ("tag", tag),
            ])?)
        };
        let load = vec![
            rows(
                vec![4, 1, 3, 2],
                dictionary(
                    vec![Some(0), Some(1), Some(1), Some(0)],
                    vec![Some("b"), Some("a")],
                ),
                dictionary(
                    vec![Some(1), None, Some(0), Some(1)],
                    vec![Some("x"), Some("y")],
                ),
            ),
            rows(
                vec![5, 6],
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(StringArray::from(vec![Some("z"), None])),
            ),
            rows(
                vec![7, 8],
                dictionary(vec![Some(0), Some(0)], vec![Some("a")]),
                dictionary(vec![Some(0), Some(1)], vec![None, Some("w")]),
            ),
        ];
        assert_eq!(
            s.bulk_load("d", futures::stream::iter(load))
                .await
                .expect("load"),
            8
        );
        let snap = s.snapshot("d").expect("snapshot");
        assert_eq!(snap.files.len(), 2, "one file per model");
        let mut loaded = Vec::new();
        for f in snap.files.iter() {
            let all = file_rows(dir.path(), f);
            assert_eq!(all.schema(), table, "files hold text as text");
            assert_eq!(batch::column_stats(&all).expect("stats"), f.stats);
            let ts = all
                .column(0)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let (model, tag) = (
                all.column(1).as_string::<i32>(),
                all.column(2).as_string::<i32>(),
            );
            for r in 0..all.num_rows() {
                let tag = tag.is_valid(r).then(|| tag.value(r).to_string());
                loaded.push((ts.value(r), model.value(r).to_string(), tag));
            }
        }
        loaded.sort();
        let text = |v: &str| Some(v.to_string());
        let expected = vec![
            (1, "a".to_string(), None),
            (2, "b".to_string(), text("y")),
            (3, "a".to_string(), text("x")),
            (4, "b".to_string(), text("y")),
            (5, "a".to_string(), text("z")),
            (6, "b".to_string(), None),
            (7, "a".to_string(), None),
            (8, "a".to_string(), text("w")),
        ];
        assert_eq!(loaded, expected);
        let null_model = rows(
            vec![9],
            dictionary(vec![None], vec![Some("a")]),
            Arc::new(StringArray::from(vec![Some("v")])),
        );
        let err = s
            .bulk_load("d", futures::stream::iter(vec![null_model]))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::NotNull(_)), "{err}");
        assert_eq!(live_rows(&s, "d"), 8);
    }

    /// A store that refuses data files once `allowed` have been stored.
    #[derive(Debug)]
    struct RefusingStore {
        inner: object_store::memory::InMemory,
        allowed: std::sync::atomic::AtomicUsize,
    }

    impl std::fmt::Display for RefusingStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "RefusingStore")
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for RefusingStore {
        async fn put_opts(
            &self,
            location: &Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            use std::sync::atomic::Ordering::SeqCst;
            let data_file = location.as_ref().ends_with(".parquet");
            if data_file
                && self
                    .allowed
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_err()
            {
                return Err(object_store::Error::Generic {
                    store: "RefusingStore",
                    source: "the disk is full".into(),
                });
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// A file the store refuses in the middle of a load, while the caller
    /// is still sending: the load fails with the store's error, instead of
    /// waiting for room in the encoders' queues, and leaves no data file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_load_stops_when_the_store_refuses_a_file() {
        use futures::TryStreamExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(RefusingStore {
            inner: object_store::memory::InMemory::new(),
            allowed: 3.into(),
        });
        let s = with_table_t(
            dir.path(),
            StorageOptions {
                object_store: Some(Arc::clone(&store) as Arc<dyn ObjectStore>),
                target_file_rows: 100,
                ..quiet()
            },
        )
        .await;
        let models = ["a", "b", "c", "d", "e"];
        let slices = (0..2_000i64).map(move |i| {
            let ts: Vec<i64> = (0..50i64).map(|r| (i * 50 + r) * 1_000).collect();
            Ok(batch(&ts, models[(i % 5) as usize]))
        });
        let load = s.bulk_load("t", futures::stream::iter(slices));
        let err = tokio::time::timeout(std::time::Duration::from_secs(60), load)
            .await
            .expect("the load ends")
            .unwrap_err();
        assert!(err.to_string().contains("the disk is full"), "{err}");
        assert_eq!(live_rows(&s, "t"), 0);
        let files: Vec<_> = store.list(None).try_collect().await.expect("list");
        let data = files
            .iter()
            .filter(|f| f.location.as_ref().ends_with(".parquet"))
            .count();
        assert_eq!(data, 0, "{files:?}");
    }

    /// Hundreds of partitions written in turns, well within the bound: each
    /// keeps one file open to the end (what an open file holds is its
    /// encoded bytes, not the buffers its encoders reserve).
    #[tokio::test]
    async fn bulk_load_keeps_many_small_partitions_in_one_file_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = with_table_t(
            dir.path(),
            StorageOptions {
                load_open_bytes: 64 * 1024 * 1024,
                ..quiet()
            },
        )
        .await;
        let models: Vec<String> = (0..300).map(|m| format!("model-{m:03}")).collect();
        let slices: Vec<Result<RecordBatch>> = (0..4i64)
            .flat_map(|turn| {
                models.iter().map(move |m| {
                    let ts: Vec<i64> = (0..50i64).map(|r| (turn * 50 + r) * 1_000_000).collect();
                    Ok(batch(&ts, m))
                })
            })
            .collect();
        let loaded = s
            .bulk_load("t", futures::stream::iter(slices))
            .await
            .expect("load");
        assert_eq!(loaded, 300 * 200);
        let snap = s.snapshot("t").expect("snapshot");
        let rows: Vec<u64> = snap.files.iter().map(|f| f.rows).collect();
        assert_eq!(rows.len(), 300, "{rows:?}");
        assert!(rows.iter().all(|r| *r == 200), "{rows:?}");
    }

    /// A load of many partitions, out of time order, through a bound so
    /// small that files are finished early: every row lands once, each file
    /// holds one partition with its true time range and statistics, and a
    /// later bad row removes every file already stored.
    #[tokio::test]
    async fn bulk_load_streams_partitions_under_a_memory_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = with_table_t(
            dir.path(),
            StorageOptions {
                // The bound holds for the whole load (not a share per
                // encoder): under it, a few of the 15 partitions' files fit.
                load_open_bytes: 8 * 1024,
                target_file_rows: 700,
                ..quiet()
            },
        )
        .await;
        let models = ["a", "b", "c", "d", "e"];
        let make = |round: i64| -> Vec<Result<RecordBatch>> {
            (0..40i64)
                .map(|i| {
                    // Mostly in time order, then late rows of the first day.
                    let day = if i >= 37 { 0 } else { (i / 13 + round) % 3 };
                    let ts: Vec<i64> = (0..50i64)
                        .map(|r| day * DAY_MICROS + ((r * 37 + i * 11) % 997) * 1_000_000)
                        .collect();
                    Ok(batch(&ts, models[(i % 5) as usize]))
                })
                .collect()
        };
        // Rows arrive over time, as from a reader, so that the encoders
        // meet the bound while the load goes on (all rows queued at once
        // would each be written in one turn, then finished at the end).
        let paced = futures::StreamExt::then(futures::stream::iter(make(0)), |b| async move {
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            b
        });
        let paced = Box::pin(paced);
        let loaded = s.bulk_load("t", paced).await.expect("load");
        assert_eq!(loaded, 2000);
        assert_eq!(live_rows(&s, "t"), 2000);
        let snap = s.snapshot("t").expect("snapshot");
        // 15 partitions; finished early, some more than once; most files
        // hold several input batches of 50 rows.
        let rows: Vec<u64> = snap.files.iter().map(|f| f.rows).collect();
        assert!(snap.files.len() > 15, "{rows:?}");
        assert!(rows.iter().filter(|r| **r > 50).count() > 5, "{rows:?}");
        for f in snap.files.iter() {
            let all = file_rows(dir.path(), f);
            assert_eq!(all.num_rows() as u64, f.rows);
            assert_eq!(batch::column_stats(&all).expect("stats"), f.stats);
            let times = all
                .column(0)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            assert_eq!(arrow::compute::min(times), Some(f.min_time));
            assert_eq!(arrow::compute::max(times), Some(f.max_time));
            assert_eq!(batch::bucket_start(f.min_time, DAY_MICROS), f.bucket_start);
            assert_eq!(batch::bucket_start(f.max_time, DAY_MICROS), f.bucket_start);
            let model = all.column(1).as_string::<i32>();
            assert!(model.iter().all(|m| m == f.partition.as_deref()));
        }
        let before = walk(dir.path()).len();
        let mut failing = make(1);
        failing.push(Err(StorageError::InvalidData("the source failed".into())));
        let err = s
            .bulk_load("t", futures::stream::iter(failing))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the source failed"), "{err}");
        assert_eq!(live_rows(&s, "t"), 2000);
        assert_eq!(
            walk(dir.path()).len(),
            before,
            "files of the failed load were left"
        );
    }

    /// Partition values that file names must escape: flushes and loads
    /// commit (their files fsynced under the escaped names) and reopen whole.
    #[tokio::test]
    async fn escaped_partition_values_commit_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let odd = "b,c /%é";
        {
            let s = Storage::open(dir.path(), quiet()).await.expect("open");
            s.create_table("t", &schema(), CreateTable::default(), false)
                .await
                .expect("create");
            s.write("t", batch(&[1, 2], odd)).await.expect("write");
            s.flush().await.expect("flush");
            let load = futures::stream::iter(vec![Ok(batch(&[3], odd))]);
            assert_eq!(s.bulk_load("t", load).await.expect("load"), 1);
            s.close().await.expect("close");
        }
        let s = Storage::open(dir.path(), quiet()).await.expect("reopen");
        assert_eq!(live_rows(&s, "t"), 3);
        let snap = s.snapshot("t").expect("snapshot");
        assert!(
            snap.files
                .iter()
                .all(|f| f.partition.as_deref() == Some(odd))
        );
    }

    /// A load in time order finishes a day's file once two input batches
    /// have held only later days, while it goes on: the first day's file
    /// is on disk before the load's last rows are sent, and each day still
    /// has one file.
    #[tokio::test]
    async fn bulk_load_finishes_the_days_it_has_moved_past() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = with_table_t(dir.path(), quiet()).await;
        let day = |d: i64| -> Result<RecordBatch> {
            let ts: Vec<i64> = (0..50i64).map(|r| d * DAY_MICROS + r * 1_000_000).collect();
            Ok(batch(&ts, "a"))
        };
        let root = dir.path().to_path_buf();
        let first_day_stored = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&first_day_stored);
        // Holds back the last rows until the first day's file is stored,
        // for at most 20 s.
        let gate = async move {
            for _ in 0..2000 {
                let stored = walk(&root)
                    .iter()
                    .any(|p| p.contains("date=1970-01-01") && p.ends_with(".parquet"));
                if stored {
                    seen.store(true, Ordering::SeqCst);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            day(1)
        };
        let batches = futures::stream::iter([day(0), day(0), day(1), day(1)])
            .chain(futures::stream::once(gate))
            .chain(futures::stream::iter([day(2)]));
        let loaded = s.bulk_load("t", Box::pin(batches)).await.expect("load");
        assert_eq!(loaded, 300);
        assert!(
            first_day_stored.load(Ordering::SeqCst),
            "the first day's file was stored only at the load's end"
        );
        let snap = s.snapshot("t").expect("snapshot");
        let mut files: Vec<(i64, u64)> = snap
            .files
            .iter()
            .map(|f| (f.bucket_start, f.rows))
            .collect();
        files.sort();
        assert_eq!(files, [(0, 100), (DAY_MICROS, 150), (2 * DAY_MICROS, 50)]);
    }

    fn walk(dir: &FsPath) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
        out
    }
}
