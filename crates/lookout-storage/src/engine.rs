//! The storage engine: write path, flushes, snapshots for scans, DDL,
//! deletes, compaction, retention and garbage collection.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Field, SchemaRef};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use roaring::RoaringBitmap;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;

use crate::batch::{self, PartitionSlice};
use crate::clock::{Clock, SystemClock};
use crate::error::{Result, StorageError};
use crate::manifest::{FileMeta, Garbage, Manifest, TableEntry};
use crate::schema::{ColumnDef, Derivation, TableDef, Versions, normalize_type};
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
    /// How often background maintenance (compaction, retention, GC) runs.
    pub maintenance_interval: Duration,
    /// Run the background flush and maintenance task.
    pub background: bool,
    /// Where Parquet files and manifests go; `None` is `<dir>/data` on the local disk.
    pub object_store: Option<Arc<dyn ObjectStore>>,
    /// Where "now" comes from (see [`crate::clock`]).
    pub clock: Arc<dyn Clock>,
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
            maintenance_interval: Duration::from_secs(60),
            background: true,
            object_store: None,
            clock: Arc::new(SystemClock),
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
    /// Live Parquet files.
    pub files: Vec<FileMeta>,
    /// Acknowledged rows not yet in Parquet, already fitted to `schema`.
    pub buffered: Vec<RecordBatch>,
    /// Keeps `files` from garbage collection while any clone of the
    /// snapshot (or of this pin) lives, so a query reads every file it
    /// planned even if compaction or retention retires it meanwhile.
    pub pin: Arc<FilePin>,
}

/// How many live snapshots hold each file, by path.
#[derive(Debug, Default)]
struct FilePins {
    counts: Mutex<HashMap<String, usize>>,
}

impl FilePins {
    fn is_pinned(&self, path: &str) -> bool {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(path)
    }
}

/// Holds a set of files back from garbage collection until dropped.
#[derive(Debug)]
pub struct FilePin {
    pins: Arc<FilePins>,
    paths: Vec<String>,
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
        }
    }
}

impl Drop for FilePin {
    fn drop(&mut self) {
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
    options: StorageOptions,
    state: Arc<RwLock<State>>,
    /// Lock order: `wal`, then `state`.
    wal: Arc<Mutex<Wal>>,
    /// Serialises everything that commits a manifest.
    commit: tokio::sync::Mutex<()>,
    writer: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Shared with the background task, which waits on them without
    /// keeping the engine alive.
    flush_wanted: Arc<Notify>,
    shutdown: Arc<Notify>,
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Distinguishes this process's file names from a crashed one's.
    run: String,
    /// File numbers within this run; with `run` they make names unique.
    next_file: AtomicU64,
    /// Flushes and bulk loads under way: their files are not orphans yet.
    loads_in_flight: AtomicU64,
    /// Held while the directory is open; released by `close`.
    lock: Mutex<Option<File>>,
    /// Combiners of derived tables, by table id.
    combiners: RwLock<HashMap<u64, Arc<dyn Combine>>>,
    /// Files that snapshots still read.
    pins: Arc<FilePins>,
    /// Files with rows marked by an uncommitted transaction: compaction
    /// leaves them alone, so the marked positions stay valid until commit.
    marked: Arc<FilePins>,
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
    entry.files.retain(|f| {
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
    /// manifest, replays the WAL and starts the writer.
    pub async fn open(dir: impl AsRef<FsPath>, options: StorageOptions) -> Result<Storage> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
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
        let store: Arc<dyn ObjectStore> = match &options.object_store {
            Some(s) => Arc::clone(s),
            None => {
                let data = dir.join("data");
                std::fs::create_dir_all(&data)?;
                Arc::new(LocalFileSystem::new_with_prefix(&data)?)
            }
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
        let wal = Wal::open(&wal_dir, manifest.wal_flushed_segment)?;
        let run = format!("{:x}", options.clock.now_micros());
        let inner = Arc::new(Inner {
            dir,
            store,
            options,
            state: Arc::new(RwLock::new(State {
                manifest: Arc::new(manifest),
                buffers,
            })),
            wal: Arc::new(Mutex::new(wal)),
            commit: tokio::sync::Mutex::new(()),
            writer: Mutex::new(None),
            writer_thread: Mutex::new(None),
            flush_wanted: Arc::new(Notify::new()),
            shutdown: Arc::new(Notify::new()),
            background: Mutex::new(None),
            run,
            next_file: AtomicU64::new(1),
            loads_in_flight: AtomicU64::new(0),
            lock: Mutex::new(Some(lock)),
            combiners: RwLock::default(),
            pins: Arc::default(),
            marked: Arc::default(),
        });
        let (tx, rx) = mpsc::channel();
        // The writer holds only the WAL and the state, not the engine, so
        // dropping the last handle ends it (and releases the lock file).
        let (wal, state) = (Arc::clone(&inner.wal), Arc::clone(&inner.state));
        let thread = std::thread::Builder::new()
            .name("lookout-wal".into())
            .spawn(move || writer_loop(&wal, &state, &rx))?;
        *inner.writer.lock().map_err(poisoned)? = Some(tx);
        *inner.writer_thread.lock().map_err(poisoned)? = Some(thread);
        let storage = Storage { inner };
        if storage.inner.options.background {
            let handle = tokio::spawn(background_loop(Arc::downgrade(&storage.inner)));
            *storage.inner.background.lock().map_err(poisoned)? = Some(handle);
        }
        Ok(storage)
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
        let pin = FilePin::new(
            &self.inner.pins,
            entry.files.iter().map(|f| f.path.clone()).collect(),
        );
        Ok(TableSnapshot {
            def: entry.def.clone(),
            schema,
            files: entry.files.clone(),
            buffered,
            pin: Arc::new(pin),
        })
    }

    /// Creates a table from an Arrow schema.
    pub async fn create_table(
        &self,
        name: &str,
        schema: &arrow::datatypes::Schema,
        request: CreateTable,
        if_not_exists: bool,
    ) -> Result<bool> {
        self.commit(|m| {
            if m.tables.contains_key(name) || m.views.contains_key(name) {
                return if if_not_exists {
                    Ok(false)
                } else {
                    Err(StorageError::TableExists(name.to_string()))
                };
            }
            let def = TableDef::new(
                m.next_table_id,
                name,
                schema,
                request.time_column.as_deref(),
                request.partition_column.as_ref().map(|p| p.as_deref()),
                request.bucket_micros,
                request.ttl_micros,
            )?;
            let mut def = def;
            if let Some(versions) = &request.versions {
                check_versions(&def, versions)?;
                def.options.versions = Some(versions.clone());
            }
            if let Some(derived) = &request.derived {
                if !m.tables.contains_key(&derived.source) {
                    return Err(StorageError::TableNotFound(derived.source.clone()));
                }
                def.derived = Some(derived.clone());
            }
            m.next_table_id += 1;
            m.tables.insert(
                name.to_string(),
                TableEntry {
                    def,
                    files: Vec::new(),
                },
            );
            Ok(true)
        })
        .await
    }

    /// Defines a view: `definition` is kept as given (the SQL layer's text)
    /// and committed with the catalog. A table or, unless `replace`, a view
    /// of that name is an error.
    pub async fn create_view(&self, name: &str, definition: &str, replace: bool) -> Result<()> {
        self.commit(|m| {
            if m.tables.contains_key(name) || (m.views.contains_key(name) && !replace) {
                return Err(StorageError::TableExists(name.to_string()));
            }
            m.views.insert(name.to_string(), definition.to_string());
            Ok(())
        })
        .await
    }

    /// Drops a view; `false` if there was none and `if_exists`.
    pub async fn drop_view(&self, name: &str, if_exists: bool) -> Result<bool> {
        self.commit(|m| match m.views.remove(name) {
            Some(_) => Ok(true),
            None if if_exists => Ok(false),
            None => Err(StorageError::TableNotFound(name.to_string())),
        })
        .await
    }

    /// A view's definition.
    pub fn view(&self, name: &str) -> Result<Option<String>> {
        Ok(self.manifest()?.views.get(name).cloned())
    }

    /// The names of the views.
    pub fn view_names(&self) -> Result<Vec<String>> {
        Ok(self.manifest()?.views.keys().cloned().collect())
    }

    /// Drops a table; its files are collected after the grace period.
    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        let dropped = self
            .commit(|m| {
                if let Some(dependent) = m
                    .tables
                    .values()
                    .find(|t| t.def.derived.as_ref().is_some_and(|d| d.source == name))
                {
                    return Err(StorageError::Dependent {
                        table: name.to_string(),
                        dependent: dependent.def.name.clone(),
                    });
                }
                let Some(entry) = m.tables.remove(name) else {
                    return if if_exists {
                        Ok(None)
                    } else {
                        Err(StorageError::TableNotFound(name.to_string()))
                    };
                };
                let since = self.now_micros();
                m.garbage.extend(entry.files.iter().map(|f| Garbage {
                    path: f.path.clone(),
                    since,
                }));
                Ok(Some(entry.def.id))
            })
            .await?;
        if let Some(id) = dropped {
            self.inner
                .state
                .write()
                .map_err(poisoned)?
                .buffers
                .remove(&id);
        }
        Ok(dropped.is_some())
    }

    /// Marks a derived table as complete (see [`Derivation::pending`]).
    pub async fn finish_derivation(&self, name: &str) -> Result<()> {
        self.commit(|m| {
            if let Some(d) = m.table_mut(name)?.def.derived.as_mut() {
                d.pending = false;
            }
            Ok(())
        })
        .await
    }

    /// Replaces the definition of a derived table (see [`Derivation::definition`]).
    pub async fn redefine(&self, name: &str, definition: &str) -> Result<()> {
        self.commit(|m| {
            match m.table_mut(name)?.def.derived.as_mut() {
                Some(d) => d.definition = definition.to_string(),
                None => {
                    return Err(StorageError::InvalidDefinition(format!(
                        "\"{name}\" is not a derived table"
                    )));
                }
            }
            Ok(())
        })
        .await
    }

    /// Sets (or, with `None`, removes) the comment of a table, or of one of
    /// its columns.
    pub async fn set_comment(
        &self,
        table: &str,
        column: Option<&str>,
        comment: Option<&str>,
    ) -> Result<()> {
        self.commit(|m| {
            let def = &mut m.table_mut(table)?.def;
            let slot = match column {
                None => &mut def.comment,
                Some(column) => match def.columns.iter_mut().find(|c| c.name == column) {
                    Some(c) => &mut c.comment,
                    None => {
                        return Err(StorageError::Column(format!(
                            "column \"{column}\" of relation \"{table}\" does not exist"
                        )));
                    }
                },
            };
            *slot = comment.map(str::to_string);
            Ok(())
        })
        .await
    }

    /// Adds a nullable column; existing files are not rewritten (they read as NULL).
    pub async fn add_column(
        &self,
        table: &str,
        field: &Field,
        if_not_exists: bool,
    ) -> Result<bool> {
        self.commit(|m| {
            let entry = m.table_mut(table)?;
            if entry.def.columns.iter().any(|c| c.name == *field.name()) {
                return if if_not_exists {
                    Ok(false)
                } else {
                    Err(StorageError::Column(format!(
                        "column \"{}\" of relation \"{table}\" already exists",
                        field.name()
                    )))
                };
            }
            if !field.is_nullable() {
                return Err(StorageError::InvalidDefinition(format!(
                    "column \"{}\" cannot be NOT NULL: existing rows have no value for it",
                    field.name()
                )));
            }
            entry.def.columns.push(ColumnDef {
                name: field.name().clone(),
                data_type: normalize_type(field.data_type()).to_string(),
                nullable: true,
                sql_type: crate::schema::sql_type_of(field).map(str::to_string),
                comment: None,
            });
            Ok(true)
        })
        .await
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
        let mut m = (*self.manifest()?).clone();
        let out = change(&mut m)?;
        m.commit(self.inner.store.as_ref()).await?;
        let mut state = self.inner.state.write().map_err(poisoned)?;
        state.manifest = Arc::new(m);
        install(&mut state);
        Ok(out)
    }

    fn check_horizon(&self, def: &TableDef, b: &RecordBatch) -> Result<()> {
        let times = batch::time_values(b, def)?;
        let horizon = self.now_micros() + self.inner.options.future_horizon.as_micros() as i64;
        if let Some(i) = times.values().iter().position(|t| *t > horizon) {
            let shown = chrono::DateTime::from_timestamp_micros(times.value(i))
                .map(|d| d.to_rfc3339())
                .unwrap_or_default();
            return Err(StorageError::InvalidData(format!(
                "row {}: \"{}\" = {shown} is beyond the future horizon ({}s from now); fix the clock of the writer or raise future_horizon",
                i + 1,
                def.options.time_column,
                self.inner.options.future_horizon.as_secs()
            )));
        }
        Ok(())
    }

    /// Checks rows as a write to the table `def` (with its `schema`) would
    /// (columns, types, NOT NULL, the future horizon) without writing them;
    /// returns them in the table's schema. For a layer that holds rows before they reach
    /// `table`, so a bad row is refused when it arrives, not later.
    pub fn validate(
        &self,
        def: &TableDef,
        schema: &SchemaRef,
        input: &RecordBatch,
    ) -> Result<RecordBatch> {
        let b = batch::conform(input, def, schema)?;
        self.check_horizon(def, &b)?;
        Ok(b)
    }

    /// Writes a batch: validated, appended to the WAL, fsynced (shared with
    /// concurrent writers) and buffered. Returns once the rows are durable and
    /// visible to queries. The batch is atomic.
    pub async fn write(&self, table: &str, input: RecordBatch) -> Result<u64> {
        self.write_group(vec![(table.to_string(), input)]).await
    }

    /// Writes batches to several tables as one WAL record: after a crash
    /// all of them are there or none, and queries see all or none. Returns
    /// the rows written to the first table.
    pub async fn write_group(&self, writes: Vec<(String, RecordBatch)>) -> Result<u64> {
        let Some(rows) = writes.first().map(|(_, b)| b.num_rows() as u64) else {
            return Ok(0);
        };
        if rows == 0 {
            return Ok(0);
        }
        let targets = {
            let m = self.manifest()?;
            writes
                .iter()
                .map(|(table, _)| {
                    let def = m.table(table)?.def.clone();
                    let schema = def.schema()?;
                    Ok((def, schema))
                })
                .collect::<Result<Vec<_>>>()?
        };
        let (parts, frame) = tokio::task::spawn_blocking({
            let this = self.clone();
            move || -> Result<(Vec<TablePart>, Vec<u8>)> {
                let mut parts = Vec::with_capacity(writes.len());
                for ((def, schema), (_, input)) in targets.iter().zip(writes) {
                    if input.num_rows() == 0 {
                        continue;
                    }
                    let b = batch::conform(&input, def, schema)?;
                    this.check_horizon(def, &b)?;
                    parts.push((def.id, b));
                }
                let refs: Vec<(u64, &RecordBatch)> = parts.iter().map(|(id, b)| (*id, b)).collect();
                let frame = wal::encode_frame(&refs)?;
                Ok((parts, frame))
            }
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("write task failed: {e}")))??;
        let ids: Vec<u64> = parts.iter().map(|(id, _)| *id).collect();
        let (ack, done) = oneshot::channel();
        {
            let writer = self.inner.writer.lock().map_err(poisoned)?;
            let tx = writer.as_ref().ok_or(StorageError::ShuttingDown)?;
            tx.send(WriteRequest { parts, frame, ack })
                .map_err(|_| StorageError::ShuttingDown)?;
        }
        done.await.map_err(|_| StorageError::ShuttingDown)??;
        let over = {
            let state = self.inner.state.read().map_err(poisoned)?;
            ids.iter().any(|id| {
                state
                    .buffers
                    .get(id)
                    .is_some_and(|b| b.bytes >= self.inner.options.flush_bytes)
            })
        };
        if over {
            self.inner.flush_wanted.notify_one();
        }
        Ok(rows)
    }

    /// Sets how rows of the derived table `table` are combined when written
    /// to Parquet and compacted.
    pub fn set_combiner(&self, table: &str, combiner: Arc<dyn Combine>) -> Result<()> {
        let id = self.table(table)?.id;
        self.inner
            .combiners
            .write()
            .map_err(poisoned)?
            .insert(id, combiner);
        Ok(())
    }

    fn combiner(&self, table_id: u64) -> Option<Arc<dyn Combine>> {
        self.inner
            .combiners
            .read()
            .ok()
            .and_then(|c| c.get(&table_id).cloned())
    }

    /// Runs the table's combiner, if any, keeping the rows as they are if it fails.
    async fn combine(&self, table_id: u64, rows: Vec<RecordBatch>) -> Vec<RecordBatch> {
        let Some(combiner) = self.combiner(table_id) else {
            return rows;
        };
        let Some(schema) = rows.first().map(RecordBatch::schema) else {
            return rows;
        };
        let all = match concat_batches(&schema, &rows) {
            Ok(all) => all,
            Err(_) => return rows,
        };
        match combiner.combine(all).await {
            Ok(combined) if combined.schema() == schema => vec![combined],
            Ok(_) => {
                tracing::warn!(
                    table_id,
                    "combiner changed the schema; rows kept as they are"
                );
                rows
            }
            Err(e) => {
                tracing::warn!(table_id, error = %e, "combining rows failed; kept as they are");
                rows
            }
        }
    }

    /// Loads many rows at once, bypassing the WAL: rows are partitioned,
    /// written as Parquet files and committed in one manifest version, so the
    /// whole load is atomic. Returns the row count.
    pub async fn bulk_load<S>(&self, table: &str, batches: S) -> Result<u64>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin,
    {
        self.bulk_load_with(table, batches, || async { Ok(Vec::new()) })
            .await
    }

    /// Like [`Storage::bulk_load`], and once `batches` is drained, also loads
    /// the rows `derived` returns for other tables (the rollup deltas of the
    /// loaded rows), all committed in the same manifest version.
    pub async fn bulk_load_with<S, D, F>(
        &self,
        table: &str,
        mut batches: S,
        derived: D,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin,
        D: FnOnce() -> F,
        F: Future<Output = Result<Vec<(String, RecordBatch)>>>,
    {
        let _load = LoadGuard::new(&self.inner.loads_in_flight);
        let (def, schema) = {
            let m = self.manifest()?;
            let def = m.table(table)?.def.clone();
            let schema = def.schema()?;
            (def, schema)
        };
        let target = self.inner.options.target_file_rows;
        // Rows held back to fill whole files before the largest partition is
        // written early (about 1.5 GiB of the bench schema).
        let max_pending_rows = target * 16;
        let mut pending: BTreeMap<(Option<String>, i64), Vec<RecordBatch>> = BTreeMap::new();
        let mut pending_rows: BTreeMap<(Option<String>, i64), usize> = BTreeMap::new();
        let mut total_pending = 0usize;
        let mut writes = JoinSet::new();
        let mut written: Vec<FileMeta> = Vec::new();
        let mut rows = 0u64;
        let mut row_offset = 0u64;
        while let Some(next) = batches.next().await {
            let input = next?;
            let b =
                batch::conform(&input, &def, &schema).map_err(|e| offset_error(e, row_offset))?;
            self.check_horizon(&def, &b)
                .map_err(|e| offset_error(e, row_offset))?;
            row_offset += b.num_rows() as u64;
            rows += b.num_rows() as u64;
            for slice in batch::split_partitions(&b, &def)? {
                let key = (slice.partition, slice.bucket_start);
                let n = slice.batch.num_rows();
                pending.entry(key.clone()).or_default().push(slice.batch);
                *pending_rows.entry(key).or_default() += n;
                total_pending += n;
            }
            // Write out full partitions, and the largest ones while memory is tight.
            loop {
                let pick = pending_rows
                    .iter()
                    .filter(|(_, n)| **n >= target || total_pending > max_pending_rows)
                    .max_by_key(|(_, n)| **n)
                    .map(|(k, _)| k.clone());
                let Some(key) = pick else { break };
                let n = pending_rows.remove(&key).unwrap_or(0);
                total_pending -= n;
                let parts = pending.remove(&key).unwrap_or_default();
                self.spawn_file_write(&mut writes, &mut written, &def, key, parts)
                    .await?;
            }
        }
        for (key, parts) in std::mem::take(&mut pending) {
            self.spawn_file_write(&mut writes, &mut written, &def, key, parts)
                .await?;
        }
        drop(batches);
        while let Some(done) = writes.join_next().await {
            written.extend(join_result(done)?);
        }
        if written.is_empty() {
            return Ok(0);
        }
        // Each table's new files, the loaded table first.
        let mut loads: Vec<(String, u64, Vec<FileMeta>)> =
            vec![(table.to_string(), def.id, written)];
        let derived_rows = derived().await;
        let derived_files = match derived_rows {
            Ok(rows) => self.write_derived(rows).await,
            Err(e) => Err(e),
        };
        let failed = match derived_files {
            Ok(files) => {
                loads.extend(files);
                None
            }
            Err(e) => Some(e),
        };
        let orphaned: Vec<String> = loads
            .iter()
            .flat_map(|(_, _, files)| files.iter().map(|f| f.path.clone()))
            .collect();
        let committed = match failed {
            Some(e) => Err(e),
            None => {
                self.commit(move |m| {
                    for (name, id, files) in loads {
                        let entry = m.table_mut(&name)?;
                        if entry.def.id != id {
                            return Err(StorageError::TableNotFound(name));
                        }
                        entry.files.extend(files);
                    }
                    Ok(())
                })
                .await
            }
        };
        if let Err(e) = committed {
            for path in orphaned {
                let _ = self.inner.store.delete(&Path::from(path.as_str())).await;
            }
            return Err(e);
        }
        Ok(rows)
    }

    /// Writes derived tables' rows as Parquet files, not yet committed.
    async fn write_derived(
        &self,
        rows: Vec<(String, RecordBatch)>,
    ) -> Result<Vec<(String, u64, Vec<FileMeta>)>> {
        let mut out = Vec::new();
        for (name, input) in rows {
            let def = self.table(&name)?;
            let schema = def.schema()?;
            let b = batch::conform(&input, &def, &schema)?;
            let mut files = Vec::new();
            for slice in batch::split_partitions(&b, &def)? {
                let first = self.reserve_file_ids(1);
                files.extend(
                    self.clone()
                        .write_slices(
                            def.clone(),
                            (slice.partition, slice.bucket_start),
                            vec![slice.batch],
                            first,
                            true,
                        )
                        .await?,
                );
            }
            out.push((name, def.id, files));
        }
        Ok(out)
    }

    /// Starts writing one partition's rows as a file, with at most two
    /// encodes in flight (one per core); finished writes land in `written`.
    async fn spawn_file_write(
        &self,
        writes: &mut JoinSet<Result<Vec<FileMeta>>>,
        written: &mut Vec<FileMeta>,
        def: &TableDef,
        key: (Option<String>, i64),
        parts: Vec<RecordBatch>,
    ) -> Result<()> {
        while writes.len() >= 2 {
            if let Some(done) = writes.join_next().await {
                written.extend(join_result(done)?);
            }
        }
        let file_id = self.reserve_file_ids(1);
        writes.spawn(
            self.clone()
                .write_slices(def.clone(), key, parts, file_id, true),
        );
        Ok(())
    }

    /// Hands out file numbers without committing; gaps are harmless.
    fn reserve_file_ids(&self, n: u64) -> u64 {
        self.inner.next_file.fetch_add(n, Ordering::Relaxed)
    }

    /// Concatenates one partition's rows, sorts them by time and writes them
    /// as one or more Parquet files (not yet committed).
    async fn write_slices(
        self,
        def: TableDef,
        key: (Option<String>, i64),
        parts: Vec<RecordBatch>,
        first_id: u64,
        resort: bool,
    ) -> Result<Vec<FileMeta>> {
        let run = self.inner.run.clone();
        let encoded =
            tokio::task::spawn_blocking(move || -> Result<Vec<(String, Vec<u8>, FileMeta)>> {
                let schema = def.schema()?;
                let mut all = concat_batches(&schema, &parts)?;
                drop(parts);
                if resort {
                    all = batch::sort_by_time(&all, &def)?;
                }
                let path = batch::file_path(&def, key.0.as_deref(), key.1, &run, first_id);
                let bytes = batch::encode_parquet(&all)?;
                let times = batch::time_values(&all, &def)?;
                let meta = FileMeta {
                    path: path.clone(),
                    partition: key.0.clone(),
                    bucket_start: key.1,
                    min_time: arrow::compute::min(times).unwrap_or(0),
                    max_time: arrow::compute::max(times).unwrap_or(0),
                    rows: all.num_rows() as u64,
                    size: bytes.len() as u64,
                    stats: batch::column_stats(&all)?,
                    deletes: None,
                };
                Ok(vec![(path, bytes, meta)])
            })
            .await
            .map_err(|e| StorageError::Corrupt(format!("encode task failed: {e}")))??;
        let mut out = Vec::new();
        for (path, bytes, meta) in encoded {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            self.inner
                .store
                .put_opts(&Path::from(path.as_str()), PutPayload::from(bytes), opts)
                .await?;
            out.push(meta);
        }
        Ok(out)
    }

    /// Writes every buffered row to Parquet, commits, truncates the WAL.
    pub async fn flush(&self) -> Result<()> {
        let _guard = self.inner.commit.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> Result<()> {
        let _load = LoadGuard::new(&self.inner.loads_in_flight);
        let (closed, work, manifest) = {
            let mut wal = self.inner.wal.lock().map_err(poisoned)?;
            let closed = wal.rotate()?;
            let mut state = self.inner.state.write().map_err(poisoned)?;
            let mut work = Vec::new();
            for (id, buf) in state.buffers.iter_mut() {
                buf.flushing.append(&mut buf.batches);
                buf.bytes = 0;
                buf.since = None;
                if !buf.flushing.is_empty() {
                    work.push((*id, buf.flushing.clone()));
                }
            }
            (closed, work, Arc::clone(&state.manifest))
        };
        let mut new_files: Vec<(u64, Vec<FileMeta>)> = Vec::new();
        // Rows of tables dropped since they were written: nothing to flush.
        let mut dropped_tables: Vec<u64> = Vec::new();
        let mut tasks = JoinSet::new();
        for (table_id, batches) in work {
            let Some(entry) = manifest.table_by_id(table_id) else {
                dropped_tables.push(table_id);
                continue;
            };
            let def = entry.def.clone();
            let schema = def.schema()?;
            let widened = batches
                .iter()
                .map(|b| batch::widen(b, &schema))
                .collect::<Result<Vec<_>>>()?;
            let all = concat_batches(&schema, &widened)?;
            let mut slices = batch::split_partitions(&all, &def)?;
            if self.combiner(table_id).is_some() {
                for slice in &mut slices {
                    let rows = vec![slice.batch.clone()];
                    if let [combined] = self.combine(table_id, rows).await.as_slice() {
                        slice.batch = combined.clone();
                    }
                }
            }
            let first = self.reserve_file_ids(slices.len() as u64);
            for (
                i,
                PartitionSlice {
                    partition,
                    bucket_start,
                    batch,
                },
            ) in slices.into_iter().enumerate()
            {
                while tasks.len() >= 2 {
                    if let Some(done) = tasks.join_next().await {
                        let (id, files) = join_result_tagged(done)?;
                        new_files.push((id, files));
                    }
                }
                let this = self.clone();
                let def = def.clone();
                tasks.spawn(async move {
                    let files = this
                        .write_slices(
                            def,
                            (partition, bucket_start),
                            vec![batch],
                            first + i as u64,
                            false,
                        )
                        .await;
                    (table_id, files)
                });
            }
        }
        while let Some(done) = tasks.join_next().await {
            new_files.push(join_result_tagged(done)?);
        }
        let flushed_ids: Vec<u64> = new_files
            .iter()
            .map(|(id, _)| *id)
            .chain(dropped_tables)
            .collect();
        self.commit_and_install(
            |m| {
                for (table_id, files) in new_files {
                    if let Some(entry) = m.tables.values_mut().find(|t| t.def.id == table_id) {
                        entry.files.extend(files);
                    } else {
                        let since = self.now_micros();
                        m.garbage.extend(files.into_iter().map(|f| Garbage {
                            path: f.path,
                            since,
                        }));
                    }
                }
                m.wal_flushed_segment = closed;
                Ok(())
            },
            |state| {
                for id in flushed_ids {
                    if let Some(buf) = state.buffers.get_mut(&id) {
                        buf.flushing.clear();
                    }
                }
                state
                    .buffers
                    .retain(|_, b| !b.batches.is_empty() || !b.flushing.is_empty());
            },
        )
        .await?;
        self.inner
            .wal
            .lock()
            .map_err(poisoned)?
            .remove_through(closed)?;
        Ok(())
    }

    /// Marks rows deleted. `select` returns, for a batch of a file's live rows
    /// in file order, which rows to delete; `prune` may skip whole files.
    /// Buffered rows are flushed first so every row has a file position.
    pub async fn delete_rows<P, S>(&self, table: &str, prune: P, select: S) -> Result<u64>
    where
        P: Fn(&FileMeta) -> bool,
        S: Fn(&RecordBatch) -> Result<BooleanArray>,
    {
        let _guard = self.inner.commit.lock().await;
        self.flush_locked().await?;
        let entry = self.manifest()?.table(table)?.clone();
        let found = self
            .find_rows(&entry, &RowMarks::default(), prune, select, false)
            .await?;
        if found.count == 0 {
            return Ok(0);
        }
        let changed = found.marks;
        self.commit_locked(|m| {
            let entry = m.table_mut(table)?;
            for (path, bitmap) in &changed {
                if let Some(f) = entry.files.iter_mut().find(|f| &f.path == path) {
                    let mut all = f.deletion_vector()?.unwrap_or_default();
                    all |= bitmap;
                    f.set_deletion_vector(&all)?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(found.count)
    }

    /// Finds the rows `select` picks among a table's live rows (buffered
    /// rows are flushed first, so each has a file position) without
    /// deleting them: for a transaction, which deletes them when it
    /// commits. `already` holds positions the transaction marked before;
    /// they count as deleted. With `keep_rows`, the picked rows are
    /// returned too (an UPDATE writes their new versions). Until the
    /// returned [`MarkedRows`] is dropped, compaction leaves their files
    /// alone, so the positions stay valid.
    pub async fn mark_rows<P, S>(
        &self,
        table: &str,
        already: &RowMarks,
        prune: P,
        select: S,
        keep_rows: bool,
    ) -> Result<MarkedRows>
    where
        P: Fn(&FileMeta) -> bool,
        S: Fn(&RecordBatch) -> Result<BooleanArray>,
    {
        let _guard = self.inner.commit.lock().await;
        self.flush_locked().await?;
        let entry = self.manifest()?.table(table)?.clone();
        self.find_rows(&entry, already, prune, select, keep_rows)
            .await
    }

    async fn find_rows<P, S>(
        &self,
        entry: &crate::manifest::TableEntry,
        already: &RowMarks,
        prune: P,
        select: S,
        keep_rows: bool,
    ) -> Result<MarkedRows>
    where
        P: Fn(&FileMeta) -> bool,
        S: Fn(&RecordBatch) -> Result<BooleanArray>,
    {
        let schema = entry.def.schema()?;
        let mut found = MarkedRows {
            table_id: entry.def.id,
            marks: HashMap::new(),
            count: 0,
            rows: Vec::new(),
            hold: FilePin::new(&self.inner.marked, Vec::new()),
        };
        for file in entry.files.iter().filter(|f| prune(f)) {
            let mut gone = file.deletion_vector()?.unwrap_or_default();
            if let Some(marked) = already.marks.get(&file.path) {
                gone |= marked;
            }
            let bytes = self
                .inner
                .store
                .get(&Path::from(file.path.as_str()))
                .await?
                .bytes()
                .await?;
            let mut bitmap = RoaringBitmap::new();
            let mut position = 0u32;
            for b in batch::decode_parquet(bytes)? {
                let b = batch::widen(&b, &schema)?;
                let hits = select(&b)?;
                let mut keep = Vec::with_capacity(b.num_rows());
                for i in 0..b.num_rows() {
                    let pos = position + i as u32;
                    let hit = hits.is_valid(i) && hits.value(i) && !gone.contains(pos);
                    if hit {
                        bitmap.insert(pos);
                    }
                    keep.push(hit);
                }
                if keep_rows && keep.iter().any(|k| *k) {
                    let picked =
                        arrow::compute::filter_record_batch(&b, &BooleanArray::from(keep))?;
                    found.rows.push(picked);
                }
                position += b.num_rows() as u32;
            }
            if !bitmap.is_empty() {
                found.count += bitmap.len();
                found.marks.insert(file.path.clone(), bitmap);
            }
        }
        found.hold = FilePin::new(&self.inner.marked, found.marks.keys().cloned().collect());
        Ok(found)
    }

    /// Commits a transaction's changes as one manifest version: the rows
    /// it marked (by [`Storage::mark_rows`]) become deleted, and `inserts`
    /// are written as Parquet files. After a crash all of it is there or
    /// none. A marked file that retention dropped meanwhile has nothing
    /// left to delete.
    pub async fn commit_changes(
        &self,
        marks: &HashMap<String, RowMarks>,
        inserts: Vec<(String, RecordBatch)>,
    ) -> Result<()> {
        let _guard = self.inner.commit.lock().await;
        let _load = LoadGuard::new(&self.inner.loads_in_flight);
        let inserts = inserts
            .into_iter()
            .filter(|(_, b)| b.num_rows() > 0)
            .collect();
        let written = self.write_derived(inserts).await?;
        let orphaned: Vec<String> = written
            .iter()
            .flat_map(|(_, _, files)| files.iter().map(|f| f.path.clone()))
            .collect();
        let committed = self
            .commit_locked(|m| {
                for (table, marked) in marks {
                    let entry = m.table_mut(table)?;
                    if entry.def.id != marked.table_id {
                        return Err(StorageError::TableNotFound(table.clone()));
                    }
                    for f in entry.files.iter_mut() {
                        if let Some(bitmap) = marked.marks.get(&f.path) {
                            let mut all = f.deletion_vector()?.unwrap_or_default();
                            all |= bitmap;
                            f.set_deletion_vector(&all)?;
                        }
                    }
                }
                for (name, id, files) in written {
                    let entry = m.table_mut(&name)?;
                    if entry.def.id != id {
                        return Err(StorageError::TableNotFound(name));
                    }
                    entry.files.extend(files);
                }
                Ok(())
            })
            .await;
        if committed.is_err() {
            for path in orphaned {
                let _ = self.inner.store.delete(&Path::from(path.as_str())).await;
            }
        }
        committed
    }

    /// Merges small files of a partition into time-sorted files and purges
    /// deleted rows. Returns the number of files replaced.
    pub async fn compact(&self) -> Result<usize> {
        let _guard = self.inner.commit.lock().await;
        let _load = LoadGuard::new(&self.inner.loads_in_flight);
        let manifest = self.manifest()?;
        let mut replaced = 0;
        for (name, entry) in &manifest.tables {
            let mut groups: BTreeMap<(Option<String>, i64), Vec<&FileMeta>> = BTreeMap::new();
            for f in entry
                .files
                .iter()
                .filter(|f| !self.inner.marked.is_pinned(&f.path))
            {
                groups
                    .entry((f.partition.clone(), f.bucket_start))
                    .or_default()
                    .push(f);
            }
            let target = self.inner.options.target_file_rows as u64;
            for (key, files) in groups {
                let small: Vec<&FileMeta> =
                    files.iter().copied().filter(|f| f.rows < target).collect();
                let with_deletes = files.iter().any(|f| f.deletes.is_some());
                let inputs: Vec<&FileMeta> =
                    if small.len() >= self.inner.options.compaction_min_files {
                        small
                    } else if with_deletes {
                        files
                            .iter()
                            .copied()
                            .filter(|f| f.deletes.is_some())
                            .collect()
                    } else {
                        continue;
                    };
                let outputs = self.rewrite(&entry.def, &key, &inputs).await?;
                let old: Vec<String> = inputs.iter().map(|f| f.path.clone()).collect();
                replaced += old.len();
                self.commit_locked(|m| {
                    let e = m.table_mut(name)?;
                    e.files.retain(|f| !old.contains(&f.path));
                    e.files.extend(outputs);
                    let since = self.now_micros();
                    m.garbage.extend(old.iter().map(|p| Garbage {
                        path: p.clone(),
                        since,
                    }));
                    Ok(())
                })
                .await?;
            }
        }
        Ok(replaced)
    }

    async fn rewrite(
        &self,
        def: &TableDef,
        key: &(Option<String>, i64),
        inputs: &[&FileMeta],
    ) -> Result<Vec<FileMeta>> {
        let schema = def.schema()?;
        let mut live = Vec::new();
        for f in inputs {
            let bytes = self
                .inner
                .store
                .get(&Path::from(f.path.as_str()))
                .await?
                .bytes()
                .await?;
            let deletes = f.deletion_vector()?;
            let mut position = 0u32;
            for b in batch::decode_parquet(bytes)? {
                let b = batch::widen(&b, &schema)?;
                let n = b.num_rows();
                let b = match &deletes {
                    Some(d) => {
                        let keep = BooleanArray::from_iter(
                            (0..n).map(|i| Some(!d.contains(position + i as u32))),
                        );
                        arrow::compute::filter_record_batch(&b, &keep)?
                    }
                    None => b,
                };
                position += n as u32;
                if b.num_rows() > 0 {
                    live.push(b);
                }
            }
        }
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let live = self.combine(def.id, live).await;
        let first = self.reserve_file_ids(1);
        self.clone()
            .write_slices(def.clone(), key.clone(), live, first, true)
            .await
    }

    /// Drops files whose whole bucket is older than the table's TTL.
    /// Returns the number of files dropped.
    pub async fn enforce_retention(&self) -> Result<usize> {
        let now = self.now_micros();
        self.commit_if(|m| {
            let mut dropped = Vec::new();
            for entry in m.tables.values_mut() {
                let Some(ttl) = entry.def.options.ttl_micros else {
                    continue;
                };
                let bucket = entry.def.options.bucket_micros;
                let cutoff = now - ttl;
                retire_files(entry, |f| f.bucket_start + bucket <= cutoff, &mut dropped);
            }
            collect_later(m, dropped, now)
        })
        .await
    }

    /// Drops the files of `table` that `expired` selects, as retention does:
    /// one manifest commit, the files collected as garbage after the grace
    /// period. Rows still in memory are not files and are never dropped.
    pub async fn drop_files(
        &self,
        table: &str,
        expired: impl Fn(&FileMeta) -> bool,
    ) -> Result<usize> {
        let now = self.now_micros();
        let id = self.table(table)?.id;
        self.commit_if(|m| {
            let mut dropped = Vec::new();
            if let Some(entry) = m.tables.values_mut().find(|e| e.def.id == id) {
                retire_files(entry, expired, &mut dropped);
            }
            collect_later(m, dropped, now)
        })
        .await
    }

    /// Deletes superseded files whose grace period has passed and that no
    /// snapshot still reads.
    pub async fn collect_garbage(&self) -> Result<usize> {
        let cutoff = self.now_micros() - self.inner.options.gc_grace.as_micros() as i64;
        let due: Vec<Garbage> = self
            .manifest()?
            .garbage
            .iter()
            .filter(|g| g.since <= cutoff && !self.inner.pins.is_pinned(&g.path))
            .cloned()
            .collect();
        for g in &due {
            match self.inner.store.delete(&Path::from(g.path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let collected = self
            .commit_if(|m| {
                let before = m.garbage.len();
                m.garbage.retain(|g| !due.iter().any(|d| d.path == g.path));
                before - m.garbage.len()
            })
            .await?;
        Ok(collected + self.remove_orphans(cutoff).await?)
    }

    /// Deletes Parquet files no manifest references (written by a flush or
    /// bulk load that crashed before its commit), once older than the grace
    /// period, so that a load still in progress is never touched.
    async fn remove_orphans(&self, cutoff_micros: i64) -> Result<usize> {
        if self.inner.loads_in_flight.load(Ordering::SeqCst) > 0 {
            return Ok(0);
        }
        let manifest = self.manifest()?;
        let known: std::collections::HashSet<&str> = manifest
            .tables
            .values()
            .flat_map(|t| t.files.iter().map(|f| f.path.as_str()))
            .chain(manifest.garbage.iter().map(|g| g.path.as_str()))
            .collect();
        let mut listing = self.inner.store.list(None);
        let mut orphans = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let path = meta.location.as_ref();
            if path.ends_with(".parquet")
                && !known.contains(path)
                && meta.last_modified.timestamp_micros() <= cutoff_micros
            {
                orphans.push(meta.location);
            }
        }
        for path in &orphans {
            match self.inner.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !orphans.is_empty() {
            tracing::info!(
                files = orphans.len(),
                "removed files of an interrupted write"
            );
        }
        Ok(orphans.len())
    }

    /// Commits only if `change` reports that it changed something.
    async fn commit_if(&self, change: impl FnOnce(&mut Manifest) -> usize) -> Result<usize> {
        let _guard = self.inner.commit.lock().await;
        let mut m = (*self.manifest()?).clone();
        let n = change(&mut m);
        if n > 0 {
            m.commit(self.inner.store.as_ref()).await?;
            self.inner.state.write().map_err(poisoned)?.manifest = Arc::new(m);
        }
        Ok(n)
    }

    fn flush_due(&self) -> bool {
        let Ok(state) = self.inner.state.read() else {
            return false;
        };
        let opts = &self.inner.options;
        state.buffers.values().any(|b| {
            b.bytes >= opts.flush_bytes || b.since.is_some_and(|s| s.elapsed() >= opts.flush_age)
        })
    }

    /// Runs retention, compaction and garbage collection once.
    pub async fn maintain(&self) -> Result<()> {
        let dropped = self.enforce_retention().await?;
        let compacted = self.compact().await?;
        let collected = self.collect_garbage().await?;
        if dropped + compacted + collected > 0 {
            tracing::info!(dropped, compacted, collected, "maintenance");
        }
        Ok(())
    }

    /// Stops background work, flushes every buffered row and stops the writer.
    pub async fn close(&self) -> Result<()> {
        self.inner.shutdown.notify_one();
        let bg = self.inner.background.lock().map_err(poisoned)?.take();
        if let Some(handle) = bg {
            let _ = handle.await;
        }
        self.flush().await?;
        let tx = self.inner.writer.lock().map_err(poisoned)?.take();
        drop(tx);
        let thread = self.inner.writer_thread.lock().map_err(poisoned)?.take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // Closed: another process (or a new handle) may open the directory.
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

fn join_result(
    done: std::result::Result<Result<Vec<FileMeta>>, tokio::task::JoinError>,
) -> Result<Vec<FileMeta>> {
    done.map_err(|e| StorageError::Corrupt(format!("write task failed: {e}")))?
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

fn writer_loop(wal: &Mutex<Wal>, state: &RwLock<State>, rx: &mpsc::Receiver<WriteRequest>) {
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
        let result = commit_group(wal, state, &mut group);
        for req in group {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StorageError::Io(std::io::Error::other(e.to_string()))),
            };
            let _ = req.ack.send(r);
        }
    }
}

fn commit_group(wal: &Mutex<Wal>, state: &RwLock<State>, group: &mut [WriteRequest]) -> Result<()> {
    let frames: Vec<Vec<u8>> = group
        .iter_mut()
        .map(|r| std::mem::take(&mut r.frame))
        .collect();
    let mut wal = wal.lock().map_err(poisoned)?;
    wal.append(&frames)?;
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
mod tests {
    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Schema};

    use super::*;
    use crate::schema::DAY_MICROS;

    fn schema() -> Schema {
        crate::schema::test_schema()
    }

    fn batch(ts: &[i64], model: &str) -> RecordBatch {
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

    fn quiet() -> StorageOptions {
        StorageOptions {
            background: false,
            ..StorageOptions::default()
        }
    }

    fn live_rows(s: &Storage, table: &str) -> u64 {
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
        assert!(s.snapshot("t").expect("snap").files.is_empty());
        s.flush().await.expect("flush");
        let snap = s.snapshot("t").expect("snap");
        assert!(snap.buffered.is_empty());
        assert_eq!(snap.files.len(), 2, "one file per model");
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
        for f in &running.files {
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
