//! Lookout's own tables published as Delta Lake tables.
//!
//! The manifest stays the source of truth for Lookout; this module keeps a
//! Delta log beside each table (`<table dir>/_delta_log/`) that lists
//! exactly the manifest's live files and deleted rows, so Spark, Trino,
//! DuckDB, Polars or the `deltalake` package read what Lookout shows.
//!
//! Every commit goes through the Delta kernel. Each pass compares a table's
//! Delta snapshot with the manifest instead of replaying a history of its
//! own: files the manifest no longer lists are removed, new ones added (one
//! commit, so a compaction swaps files atomically for a reader), and
//! changed deletes become new deletion vectors (a second commit). The
//! commits carry a `txn` action, application id `lookout`, version = the
//! manifest version published, which says how far the log has caught up.
//! A crash anywhere in a pass is repaired by the next one, since the diff
//! is taken again from what the log really holds.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, MapBuilder, MapFieldNames, RecordBatch, StringArray,
    StringBuilder, StructArray, new_null_array,
};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::common::ScalarValue;
use delta_kernel::actions::deletion_vector::DeletionVectorDescriptor;
use delta_kernel::actions::deletion_vector_writer::{
    KernelDeletionVector, StreamingDeletionVectorWriter,
};
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_conversion::{TryFromArrow, TryFromKernel};
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::engine_data::FilteredEngineData;
use delta_kernel::schema::{StructField, StructType};
use delta_kernel::table_features::TableFeature;
use delta_kernel::transaction::create_table::create_table;
use delta_kernel::transaction::{CommitResult, Transaction, UpdateTableOperation};
use delta_kernel::{Engine, KernelError, Snapshot, SnapshotRef};
use delta_kernel_default_engine::DefaultEngine;
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use futures::{StreamExt, TryStreamExt};
use lookout_metrics::{Counter, Registry};
use lookout_query::ext::SYSTEM_PREFIX;
use lookout_storage::batch::table_dir;
use lookout_storage::{FileMeta, StatValue, Storage, TableDef, manifest::TableEntry};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode};
use url::Url;

/// The application id of the `txn` action each commit carries.
pub const APP_ID: &str = "lookout";
/// The table property naming the Lookout table a log belongs to, so a log
/// left by a dropped table is never continued by a new one of that name.
const TABLE_ID_PROPERTY: &str = "lookout.tableId";
const ENGINE_INFO: &str = concat!("Lookout/", env!("CARGO_PKG_VERSION"));
/// The Delta domain metadata holding a table's Lookout definition, for
/// tools that want its options, rollup or sampling definition.
pub const DEFINITION_DOMAIN: &str = "lookout.definition";
/// A checkpoint every this many commits keeps opening a table cheap.
const CHECKPOINT_EVERY: u64 = 50;

/// Why a table could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The kernel refused a read or a commit.
    #[error("Delta kernel: {0}")]
    Kernel(#[from] KernelError),
    /// Building the add actions failed.
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The manifest could not be read.
    #[error("storage: {0}")]
    Storage(#[from] lookout_storage::StorageError),
    /// Writing or removing an object failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Another writer committed the version first.
    #[error("another writer committed version {0} of the Delta log first")]
    Conflict(u64),
    /// A column type Delta cannot describe.
    #[error("{0}")]
    Unsupported(String),
}

type PublishResult<T> = std::result::Result<T, PublishError>;

/// Keeps the Delta logs of a store's tables (a local directory or a
/// bucket) in step with its manifest.
pub struct Publisher {
    storage: Storage,
    /// The store the tables' files are in, rooted at the data directory or
    /// the bucket's prefix.
    store: Arc<dyn ObjectStore>,
    /// Per table name: the definition and file list last published, so an
    /// unchanged table costs nothing.
    published: HashMap<String, (TableDef, Arc<Vec<FileMeta>>)>,
    manifest_version: Option<u64>,
    /// Tables with superseded deletion vector files younger than the grace
    /// period, looked at again on later passes.
    vectors_waiting: HashSet<String>,
    grace: Duration,
    checkpoint_every: u64,
    metrics: Option<PublishMetrics>,
    /// Why each table the last pass could not publish failed.
    failures: HashMap<String, String>,
    /// The directories of the published tables when dropped tables' logs
    /// were last removed.
    live: Option<HashSet<String>>,
}

/// What publishing counts, in the database's metrics registry.
#[derive(Clone)]
struct PublishMetrics {
    commits: Counter,
    failures: Counter,
    published_version: Arc<AtomicI64>,
}

impl PublishMetrics {
    fn register(registry: &Registry, storage: &Storage) -> PublishMetrics {
        let published_version = Arc::new(AtomicI64::new(-1));
        let metrics = PublishMetrics {
            commits: registry.register(
                "delta_commits",
                "Commits written to the tables' Delta logs",
                Counter::default(),
            ),
            failures: registry.register(
                "delta_publish_failures",
                "Tables a publishing pass could not bring in step with the manifest",
                Counter::default(),
            ),
            published_version: Arc::clone(&published_version),
        };
        let storage = storage.clone();
        registry.gauge_fn(
            "delta_lag_versions",
            "Manifest versions the Delta logs are behind (0: every table published)",
            move || {
                let current = storage.manifest().map_or(0, |m| m.version as i64);
                let published = published_version.load(Ordering::Relaxed);
                if published < 0 {
                    current
                } else {
                    (current - published).max(0)
                }
            },
        );
        metrics
    }
}

impl Publisher {
    /// A publisher for `storage`, or `None` for a read-only replica: the
    /// writer publishes, and a replica reads the logs its writer keeps.
    pub fn new(storage: Storage) -> Option<Publisher> {
        if storage.is_read_only() {
            return None;
        }
        Some(Publisher {
            grace: storage.gc_grace(),
            store: storage.object_store(),
            storage,
            published: HashMap::new(),
            manifest_version: None,
            vectors_waiting: HashSet::new(),
            checkpoint_every: CHECKPOINT_EVERY,
            metrics: None,
            failures: HashMap::new(),
            live: None,
        })
    }

    /// The tables the last pass could not publish, and why.
    pub fn failures(&self) -> &HashMap<String, String> {
        &self.failures
    }

    /// Writes a checkpoint at every `every`th version of a log (50 unless
    /// set; at least 1).
    pub fn with_checkpoint_every(mut self, every: u64) -> Publisher {
        self.checkpoint_every = every.max(1);
        self
    }

    /// Counts commits and failures, and reports the lag, in `registry`.
    pub fn with_metrics(mut self, registry: &Registry) -> Publisher {
        self.metrics = Some(PublishMetrics::register(registry, &self.storage));
        self
    }

    /// Publishes every table whose files changed since the last pass, and
    /// removes the logs of dropped tables. Returns how many tables got a
    /// commit. A table that fails is logged and retried on the next pass.
    pub async fn publish(&mut self) -> PublishResult<usize> {
        let manifest = self.storage.manifest()?;
        if self.manifest_version == Some(manifest.version) && self.vectors_waiting.is_empty() {
            return Ok(0);
        }
        let mut committed = 0;
        let mut all_done = true;
        self.failures.clear();
        for (name, entry) in manifest.tables.iter().filter(|(_, e)| is_published(e)) {
            if let Some((def, files)) = self.published.get(name)
                && *def == entry.def
                && Arc::ptr_eq(files, &entry.files)
                && !self.vectors_waiting.contains(name)
            {
                continue;
            }
            // Deletion vector files become garbage only when a commit
            // removes files or replaces vectors; listing the directory on
            // every append would cost an object store LIST per flush.
            let look_for_garbage =
                !self.published.contains_key(name) || self.vectors_waiting.contains(name);
            let table = TableFiles::new(&self.store, &self.storage, name);
            let log_may_exist =
                self.published.contains_key(name) || table.has_log().await.unwrap_or(true);
            let entry_now = entry.clone();
            // The definition is looked up in the log only when it may differ.
            let definition_known = self
                .published
                .get(name)
                .is_some_and(|(def, _)| *def == entry.def);
            let pass = Pass {
                version: manifest.version,
                checkpoint_every: self.checkpoint_every,
                log_may_exist,
                definition_known,
            };
            let published = table.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                publish_table(engine(&published)?.as_ref(), &published, &entry_now, &pass)
            })
            .await
            .map_err(|e| PublishError::Unsupported(e.to_string()))
            .and_then(|outcome| outcome);
            let outcome = match outcome {
                Ok(outcome) if look_for_garbage || outcome.vectors_replaced => table
                    .collect_vectors(&outcome.referenced, self.grace)
                    .await
                    .map(|waiting| (outcome.commits, waiting)),
                Ok(outcome) => Ok((outcome.commits, false)),
                Err(e) => Err(e),
            };
            match outcome {
                Ok((commits, vectors_waiting)) => {
                    committed += commits;
                    if let Some(m) = &self.metrics {
                        m.commits.inc_by(commits as u64);
                    }
                    if vectors_waiting {
                        self.vectors_waiting.insert(name.clone());
                    } else {
                        self.vectors_waiting.remove(name);
                    }
                    self.published
                        .insert(name.clone(), (entry.def.clone(), Arc::clone(&entry.files)));
                }
                Err(e) => {
                    all_done = false;
                    if let Some(m) = &self.metrics {
                        m.failures.inc();
                    }
                    tracing::warn!(table = %name, error = %e, "could not publish the Delta log");
                    self.failures.insert(name.clone(), e.to_string());
                }
            }
        }
        self.vectors_waiting
            .retain(|name| manifest.tables.contains_key(name));
        self.published
            .retain(|name, _| manifest.tables.contains_key(name));
        let live = manifest
            .tables
            .iter()
            .filter(|(_, e)| is_published(e))
            .map(|(n, _)| on_disk(&table_dir(n)))
            .collect::<HashSet<_>>();
        // Only a table leaving the catalog leaves a log behind (and, on
        // the first pass, whatever an earlier process left).
        if self.live.as_ref() != Some(&live) {
            self.remove_dropped(&live).await?;
            self.live = Some(live);
        }
        if all_done {
            self.manifest_version = Some(manifest.version);
            if let Some(m) = &self.metrics {
                m.published_version
                    .store(manifest.version as i64, Ordering::Relaxed);
            }
        }
        Ok(committed)
    }

    /// Deletes the Delta log (and deletion vectors) of every directory
    /// that holds one but is no table any more, so a reader of a dropped
    /// table finds nothing rather than files about to be collected.
    async fn remove_dropped(&self, live: &HashSet<String>) -> PublishResult<()> {
        let top = self.store.list_with_delimiter(None).await?;
        for dir in top.common_prefixes {
            let Some(name) = dir.filename().map(str::to_string) else {
                continue;
            };
            if live.contains(&name) {
                continue;
            }
            let table = TableFiles::at(&self.store, &self.storage, dir);
            if !table.has_log().await? {
                continue;
            }
            let probe = table.clone();
            let ours = tokio::task::spawn_blocking(move || {
                let url = table_root()?;
                Ok::<_, PublishError>(
                    Snapshot::builder_for(url.as_str())
                        .build(engine(&probe)?.as_ref())
                        .is_ok_and(|s| written_for(&s).is_some()),
                )
            })
            .await
            .map_err(|e| PublishError::Unsupported(e.to_string()))??;
            if ours {
                table.remove_log().await?;
            }
        }
        Ok(())
    }
}

/// Publishes `storage`'s tables every `every` until the storage closes;
/// `None` when the store is not on the local disk.
pub fn spawn(
    storage: Storage,
    registry: &Registry,
    every: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut publisher = Publisher::new(storage)?.with_metrics(registry);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = publisher.publish().await {
                tracing::warn!(error = %e, "Delta publishing pass failed");
            }
        }
    }))
}

/// The table's root as the kernel sees it: the engine's store is rooted at
/// the table's directory, so no directory name (escaped in the store, see
/// [`on_disk`]) is ever decoded from a URL.
fn table_root() -> PublishResult<Url> {
    Url::parse("file:///").map_err(|e| PublishError::Unsupported(e.to_string()))
}

/// One table's directory in the store: the root of the kernel's engine,
/// and where deletion vectors are written and collected.
#[derive(Clone)]
struct TableFiles {
    /// The store rooted at the table's directory.
    store: Arc<dyn ObjectStore>,
    /// The same directory on the local disk, where new files are synced
    /// and emptied directories removed; `None` on an object store.
    local: Option<PathBuf>,
}

impl TableFiles {
    /// The directory of the Lookout table `name`.
    fn new(store: &Arc<dyn ObjectStore>, storage: &Storage, name: &str) -> TableFiles {
        TableFiles::at(store, storage, ObjectPath::from(table_dir(name)))
    }

    /// The directory `dir` of the store.
    fn at(store: &Arc<dyn ObjectStore>, storage: &Storage, dir: ObjectPath) -> TableFiles {
        TableFiles {
            local: storage.local_data_dir().map(|root| root.join(dir.as_ref())),
            store: Arc::new(PrefixStore::new(Arc::clone(store), dir)),
        }
    }

    /// Writes a new file (failing if one is there) from the blocking
    /// thread a table is published on, durably on a local disk.
    fn write_new(&self, path: &ObjectPath, bytes: Vec<u8>) -> PublishResult<()> {
        let put = self
            .store
            .put_opts(path, bytes.into(), PutMode::Create.into());
        tokio::runtime::Handle::current().block_on(put)?;
        if let Some(dir) = &self.local {
            let file = dir.join(path.as_ref());
            std::fs::File::open(&file)
                .and_then(|f| f.sync_all())
                .map_err(|e| PublishError::Unsupported(format!("{}: {e}", file.display())))?;
        }
        Ok(())
    }

    /// The objects directly in the directory (none when it is missing).
    async fn objects(&self, dir: Option<&ObjectPath>) -> PublishResult<Vec<ObjectMeta>> {
        match self.store.list_with_delimiter(dir).await {
            Ok(listing) => Ok(listing.objects),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the directory holds a Delta log.
    async fn has_log(&self) -> PublishResult<bool> {
        let log = ObjectPath::from(LOG_DIR);
        match self.store.list(Some(&log)).next().await {
            None | Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Deletes the table's deletion vector files no live file refers to
    /// once they are older than `grace`, as Lookout keeps superseded
    /// Parquet files for readers of an older version. Returns whether some
    /// wait for later.
    async fn collect_vectors(
        &self,
        referenced: &HashSet<ObjectPath>,
        grace: Duration,
    ) -> PublishResult<bool> {
        let mut waiting = false;
        for object in self.objects(None).await? {
            let is_vector = object.location.filename().is_some_and(is_vector_file);
            if !is_vector || referenced.contains(&object.location) {
                continue;
            }
            let age = std::time::SystemTime::from(object.last_modified)
                .elapsed()
                .unwrap_or_default();
            if age >= grace {
                self.delete(&object.location).await?;
            } else {
                waiting = true;
            }
        }
        Ok(waiting)
    }

    /// Removes the Delta log and the deletion vector files.
    async fn remove_log(&self) -> PublishResult<()> {
        let log = ObjectPath::from(LOG_DIR);
        let entries: Vec<ObjectMeta> = self.store.list(Some(&log)).try_collect().await?;
        for entry in entries {
            self.delete(&entry.location).await?;
        }
        for object in self.objects(None).await? {
            if object.location.filename().is_some_and(is_vector_file) {
                self.delete(&object.location).await?;
            }
        }
        if let Some(dir) = &self.local {
            // The store deletes files and leaves their directories.
            match tokio::fs::remove_dir_all(dir.join(LOG_DIR)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(PublishError::Unsupported(format!("{}: {e}", dir.display())));
                }
            }
        }
        Ok(())
    }

    async fn delete(&self, path: &ObjectPath) -> PublishResult<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The directory of a table's Delta log.
const LOG_DIR: &str = "_delta_log";

/// An engine over one table's directory, running its I/O on the server's
/// runtime: writing a checkpoint waits on reads inside reads, which the
/// kernel's background executor cannot do (it deadlocks), so that one
/// serves only a single-threaded runtime, where checkpoints are not
/// written.
fn engine(table: &TableFiles) -> PublishResult<Arc<dyn Engine>> {
    let store = Arc::clone(&table.store);
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        let executor = Arc::new(TokioMultiThreadExecutor::new(handle));
        Ok(Arc::new(
            DefaultEngine::builder(store)
                .with_task_executor(executor)
                .build(),
        ))
    } else {
        Ok(Arc::new(DefaultEngine::builder(store).build()))
    }
}

/// The object a URL below [`table_root`] names in the table's directory.
fn in_table(url: &Url) -> PublishResult<ObjectPath> {
    ObjectPath::from_url_path(url.path()).map_err(|e| PublishError::Unsupported(e.to_string()))
}

/// Whether a table gets a Delta log: users' tables and the tables derived
/// from them (rollups, held rows), not the engine's own catalog tables
/// (`lookout.roles` holds password verifiers, for one).
fn is_published(entry: &TableEntry) -> bool {
    entry.def.derived.is_some() || !entry.def.name.starts_with(SYSTEM_PREFIX)
}

/// What a pass publishes and how.
struct Pass {
    /// The manifest version, recorded in the `txn` action.
    version: u64,
    checkpoint_every: u64,
    /// Whether the table's directory may hold a log. A table seen without
    /// one is created without asking the kernel for a snapshot, which it
    /// reports at ERROR level when missing, once per new table.
    log_may_exist: bool,
    /// Whether the log is known to hold the table's current definition.
    definition_known: bool,
}

/// What one table's pass did.
struct TableOutcome {
    /// Delta commits written.
    commits: usize,
    /// The deletion vector files the live files refer to.
    referenced: HashSet<ObjectPath>,
    /// Whether a commit removed files or replaced deletion vectors, which
    /// can leave vector files no live file refers to.
    vectors_replaced: bool,
}

/// Brings one table's log in step with `entry`.
fn publish_table(
    engine: &dyn Engine,
    table: &TableFiles,
    entry: &TableEntry,
    pass: &Pass,
) -> PublishResult<TableOutcome> {
    let version = pass.version;
    let url = table_root()?;
    let found = if pass.log_may_exist {
        Snapshot::builder_for(url.as_str()).build(engine)
    } else {
        Err(KernelError::EmptyLog)
    };
    let mut snapshot = match found {
        Ok(s) => match written_for(&s) {
            Some(id) if id == entry.def.id.to_string() => Some(s),
            Some(_) => {
                // The log of a dropped table of the same name.
                tokio::runtime::Handle::current().block_on(table.remove_log())?;
                None
            }
            None => {
                return Err(PublishError::Unsupported(format!(
                    "the directory of table {} holds a Delta log Lookout did not write; \
                     it is left alone",
                    entry.def.name
                )));
            }
        },
        Err(e) if is_missing(&e) => None,
        Err(e) => return Err(e.into()),
    };
    let mut commits = 0;
    if snapshot.is_none() {
        snapshot = Some(create(engine, &url, &entry.def, version)?);
        commits += 1;
    }
    let snapshot = snapshot.ok_or_else(|| PublishError::Unsupported("no snapshot".into()))?;
    let first_version = snapshot.version();
    let (mut snapshot, altered) = add_new_columns(engine, snapshot, &entry.def)?;
    commits += usize::from(altered);
    let mut definition = if pass.definition_known {
        None
    } else {
        definition_to_record(engine, &snapshot, &entry.def)?
    };
    let prefix = format!("{}/", on_disk(&table_dir(&entry.def.name)));
    let wanted: HashMap<String, &FileMeta> = entry
        .files
        .iter()
        .map(|f| {
            let path = on_disk(&f.path);
            (log_path(path.strip_prefix(&prefix).unwrap_or(&path)), f)
        })
        .collect();

    // Adds and removes, in one commit. The scan is taken again only after
    // a commit changed the log.
    let mut current = scan_files(&snapshot, engine)?;
    let mut live = live_files(&current)?;
    let adds: Vec<(&String, &FileMeta)> = wanted
        .iter()
        .filter(|(path, _)| !live.contains_key(*path))
        .map(|(p, f)| (p, *f))
        .collect();
    let removing = live.keys().any(|path| !wanted.contains_key(path));
    if !adds.is_empty() || removing {
        let removes: Vec<FilteredEngineData> = current
            .into_iter()
            .map(|files| select_paths(files, |path| !wanted.contains_key(path)))
            .collect::<PublishResult<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut txn = snapshot
            .clone()
            .update_table(UpdateTableOperation::Write, ENGINE_INFO, true)
            .with_transaction_id(APP_ID, version as i64)
            .build(engine, Box::new(FileSystemCommitter::new()))?;
        if let Some(definition) = definition.take() {
            txn = txn.with_domain_metadata(DEFINITION_DOMAIN.into(), definition);
        }
        if !adds.is_empty() {
            let stats_schema = Schema::try_from_kernel(txn.stats_schema()?.as_ref())?;
            txn.add_files(Box::new(ArrowEngineData::new(add_batch(
                &adds,
                &stats_schema,
            )?)));
        }
        for files in removes {
            txn.remove_files(files);
        }
        snapshot = commit(txn, engine)?;
        commits += 1;
        current = scan_files(&snapshot, engine)?;
        live = live_files(&current)?;
    }

    // Deletion vectors of files whose deletes changed.
    let mut updates = Vec::new();
    for (path, file) in &wanted {
        let Some(deleted) = file.deletion_vector()? else {
            continue;
        };
        if live.get(path).copied().unwrap_or(0) != deleted.len() {
            updates.push((path.clone(), deleted));
        }
    }
    if let Some(definition) = definition.take() {
        // A definition changed with no file: a commit of its own.
        let txn = snapshot
            .clone()
            .update_table(UpdateTableOperation::Write, ENGINE_INFO, true)
            .with_transaction_id(APP_ID, version as i64)
            .build(engine, Box::new(FileSystemCommitter::new()))?
            .with_domain_metadata(DEFINITION_DOMAIN.into(), definition);
        snapshot = commit(txn, engine)?;
        commits += 1;
    }
    let vectors_replaced = removing || !updates.is_empty();
    if !updates.is_empty() {
        let mut txn = snapshot
            .clone()
            .update_table(UpdateTableOperation::Delete, ENGINE_INFO, true)
            .with_transaction_id(APP_ID, version as i64)
            .build(engine, Box::new(FileSystemCommitter::new()))?;
        let context = txn.write_state()?.write_context_builder().build()?;
        let mut descriptors = HashMap::new();
        for (path, deleted) in updates {
            let dv_path = context.new_deletion_vector_path(String::new());
            let mut dv = KernelDeletionVector::new();
            dv.add_deleted_row_indexes(deleted.iter().map(u64::from));
            let mut bytes = Vec::new();
            let mut writer = StreamingDeletionVectorWriter::new(&mut bytes);
            let written = writer.write_deletion_vector(dv)?;
            writer.finalize()?;
            table.write_new(&in_table(&dv_path.absolute_path()?)?, bytes)?;
            descriptors.insert(path, written.to_descriptor(&dv_path));
        }
        txn.update_deletion_vectors(descriptors, current.into_iter().map(Ok))?;
        snapshot = commit(txn, engine)?;
        commits += 1;
        current = scan_files(&snapshot, engine)?;
    }
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    // A checkpoint once the log passes a multiple of `checkpoint_every`.
    if multi_threaded
        && snapshot.version() / pass.checkpoint_every > first_version / pass.checkpoint_every
    {
        snapshot.checkpoint(engine, None)?;
    }
    Ok(TableOutcome {
        commits,
        referenced: referenced_vectors(&current, &url)?,
        vectors_replaced,
    })
}

/// The deletion vector files the live files of a snapshot refer to.
fn referenced_vectors(
    scan: &[FilteredEngineData],
    table: &Url,
) -> PublishResult<HashSet<ObjectPath>> {
    let mut referenced = HashSet::new();
    for files in scan {
        let batch = batch_of(files)?;
        let Some(dv) = batch
            .column_by_name("deletionVector")
            .and_then(|c| c.as_any().downcast_ref::<StructArray>())
        else {
            continue;
        };
        let text = |name: &str| {
            dv.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        };
        let (Some(kinds), Some(paths)) = (text("storageType"), text("pathOrInlineDv")) else {
            continue;
        };
        for row in 0..dv.len() {
            if dv.is_null(row) || kinds.is_null(row) || paths.is_null(row) {
                continue;
            }
            let descriptor = DeletionVectorDescriptor::try_new(
                kinds.value(row).parse()?,
                paths.value(row),
                None,
                0,
                0,
            )?;
            if let Some(file) = descriptor.absolute_path(table)? {
                referenced.insert(in_table(&file)?);
            }
        }
    }
    Ok(referenced)
}

fn is_vector_file(name: &str) -> bool {
    name.starts_with("deletion_vector_") && name.ends_with(".bin")
}

/// Whether a missing log (rather than a damaged one) made `e`.
fn is_missing(e: &KernelError) -> bool {
    match e {
        KernelError::Backtraced { source, .. } => is_missing(source),
        KernelError::FileNotFound(_)
        | KernelError::InvalidTableLocation(_)
        | KernelError::EmptyLog
        | KernelError::MissingVersion(_) => true,
        _ => false,
    }
}

/// The Lookout table id a log was written for; `None` for a log another
/// system wrote, which Lookout never changes or deletes.
fn written_for(snapshot: &SnapshotRef) -> Option<String> {
    snapshot
        .table_properties()
        .unknown_properties
        .get(TABLE_ID_PROPERTY)
        .cloned()
}

/// Creates the table's log: its schema, deletion vectors enabled, the
/// Lookout table id as a property.
fn create(
    engine: &dyn Engine,
    url: &Url,
    def: &TableDef,
    version: u64,
) -> PublishResult<SnapshotRef> {
    let schema = delta_schema(def)?;
    let txn = create_table(url.as_str(), Arc::new(schema), ENGINE_INFO, true)
        .with_table_properties([
            ("delta.enableDeletionVectors", "true".to_string()),
            ("delta.feature.domainMetadata", "supported".to_string()),
            (TABLE_ID_PROPERTY, def.id.to_string()),
        ])
        .with_transaction_id(APP_ID, version as i64)
        .build(engine, Box::new(FileSystemCommitter::new()))?;
    match txn.commit(engine)? {
        CommitResult::Committed(done) => done.post_commit_snapshot().cloned().map_or_else(
            || Ok(Snapshot::builder_for(url.as_str()).build(engine)?),
            Ok,
        ),
        CommitResult::Conflicted(c) => Err(PublishError::Conflict(c.conflict_version())),
        CommitResult::Retryable(r) => Err(PublishError::Kernel(r.error)),
    }
}

fn commit(txn: Transaction, engine: &dyn Engine) -> PublishResult<SnapshotRef> {
    match txn.commit(engine)? {
        CommitResult::Committed(done) => match done.post_commit_snapshot() {
            Some(s) => Ok(Arc::clone(s)),
            None => Err(PublishError::Unsupported("no snapshot after commit".into())),
        },
        CommitResult::Conflicted(c) => Err(PublishError::Conflict(c.conflict_version())),
        CommitResult::Retryable(r) => Err(PublishError::Kernel(r.error)),
    }
}

/// The table's definition (columns with their SQL types, time and
/// partition columns, bucket, ttl, a rollup's or sampled table's
/// definition) as the `lookout.definition` domain metadata should hold it,
/// when the log holds another one; `None` when it is up to date, or when
/// the log predates the domain metadata feature (the kernel cannot add a
/// feature to an existing table).
fn definition_to_record(
    engine: &dyn Engine,
    snapshot: &SnapshotRef,
    def: &TableDef,
) -> PublishResult<Option<String>> {
    let supported = snapshot
        .table_configuration()
        .protocol()
        .writer_features()
        .is_some_and(|features| features.contains(&TableFeature::DomainMetadata));
    if !supported {
        return Ok(None);
    }
    let definition =
        serde_json::to_string(def).map_err(|e| PublishError::Unsupported(e.to_string()))?;
    let recorded = snapshot.get_domain_metadata(DEFINITION_DOMAIN, engine)?;
    Ok((recorded.as_deref() != Some(definition.as_str())).then_some(definition))
}

/// Adds the columns `ALTER TABLE ADD COLUMN` gave the table since the log
/// was written (nullable: older files do not have them).
fn add_new_columns(
    engine: &dyn Engine,
    snapshot: SnapshotRef,
    def: &TableDef,
) -> PublishResult<(SnapshotRef, bool)> {
    let wanted = delta_schema(def)?;
    let current = snapshot.schema();
    let missing: Vec<StructField> = wanted
        .fields()
        .filter(|f| current.field(f.name()).is_none())
        .map(|f| StructField::nullable(f.name().clone(), f.data_type().clone()))
        .collect();
    if missing.is_empty() {
        return Ok((snapshot, false));
    }
    let mut builder = snapshot.update_table(UpdateTableOperation::AlterTable, ENGINE_INFO, false);
    for field in missing {
        builder = builder.add_column(field);
    }
    let txn = builder.build(engine, Box::new(FileSystemCommitter::new()))?;
    Ok((commit(txn, engine)?, true))
}

/// The table's columns as a Delta schema. Fixed-size lists (embeddings)
/// are Delta arrays: Parquet stores both as the same list.
fn delta_schema(def: &TableDef) -> PublishResult<StructType> {
    let arrow = def.schema()?;
    let fields: Vec<Field> = arrow
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::FixedSizeList(item, _) => f
                .as_ref()
                .clone()
                .with_data_type(DataType::List(Arc::clone(item)))
                .with_metadata(HashMap::new()),
            _ => f.as_ref().clone().with_metadata(HashMap::new()),
        })
        .collect();
    StructType::try_from_arrow(&Schema::new(fields))
        .map_err(|e| PublishError::Unsupported(format!("table {}: {e}", def.name)))
}

/// The name an object has on the local disk: the store escapes the percent
/// signs of our encoded directory names once more.
fn on_disk(object: &str) -> String {
    object_store::path::Path::from(object).as_ref().to_string()
}

/// The log holds paths as URIs relative to the table, so the percent signs
/// of names on disk are escaped again.
fn log_path(relative: &str) -> String {
    relative.replace('%', "%25")
}

fn scan_files(
    snapshot: &SnapshotRef,
    engine: &dyn Engine,
) -> PublishResult<Vec<FilteredEngineData>> {
    let scan = Arc::clone(snapshot).scan_builder().build()?;
    Ok(scan
        .scan_metadata(engine)?
        .map(|m| m.map(|m| m.scan_files))
        .collect::<Result<Vec<_>, _>>()?)
}

fn batch_of(files: &FilteredEngineData) -> PublishResult<&RecordBatch> {
    files
        .data()
        .any_ref()
        .downcast_ref::<ArrowEngineData>()
        .map(ArrowEngineData::record_batch)
        .ok_or_else(|| PublishError::Unsupported("scan files are not Arrow data".into()))
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> PublishResult<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| PublishError::Unsupported(format!("scan files lack {name}")))
}

/// Live file path → rows its deletion vector removes.
fn live_files(scan: &[FilteredEngineData]) -> PublishResult<HashMap<String, u64>> {
    let mut live = HashMap::new();
    for files in scan {
        let batch = batch_of(files)?;
        let paths = string_column(batch, "path")?;
        let cardinality = batch
            .column_by_name("deletionVector")
            .and_then(|c| c.as_any().downcast_ref::<StructArray>())
            .and_then(|dv| dv.column_by_name("cardinality"))
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
        let selected = files.selection_vector();
        for row in 0..batch.num_rows() {
            if !selected.get(row).copied().unwrap_or(true) || paths.is_null(row) {
                continue;
            }
            let deleted = cardinality
                .filter(|c| c.is_valid(row))
                .map_or(0, |c| c.value(row).max(0) as u64);
            live.insert(paths.value(row).to_string(), deleted);
        }
    }
    Ok(live)
}

/// The same scan files with only the live ones `keep` picks selected, or
/// `None` when it picks none.
fn select_paths(
    files: FilteredEngineData,
    keep: impl Fn(&str) -> bool,
) -> PublishResult<Option<FilteredEngineData>> {
    let batch = batch_of(&files)?;
    let paths = string_column(batch, "path")?;
    let selected = files.selection_vector();
    let picks: Vec<bool> = (0..batch.num_rows())
        .map(|row| {
            selected.get(row).copied().unwrap_or(true)
                && paths.is_valid(row)
                && keep(paths.value(row))
        })
        .collect();
    if !picks.contains(&true) {
        return Ok(None);
    }
    let (data, _) = files.into_parts();
    Ok(Some(FilteredEngineData::try_new(data, picks)?))
}

/// The add-file metadata the kernel expects: path, partition values (none:
/// the Delta table is unpartitioned, Lookout's directories are only a
/// layout), size, modification time and statistics.
fn add_batch(adds: &[(&String, &FileMeta)], stats_schema: &Schema) -> PublishResult<RecordBatch> {
    let paths = StringArray::from_iter_values(adds.iter().map(|(p, _)| p.as_str()));
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut partitions = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for _ in adds {
        partitions.append(true)?;
    }
    let partitions = partitions.finish();
    let sizes = Int64Array::from_iter_values(adds.iter().map(|(_, f)| f.size as i64));
    let times = Int64Array::from_iter_values(adds.iter().map(|(_, f)| f.max_time.div_euclid(1000)));
    let stats = stats_array(adds, stats_schema.fields())?;
    let schema = Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("partitionValues", partitions.data_type().clone(), false),
        Field::new("size", DataType::Int64, false),
        Field::new("modificationTime", DataType::Int64, false),
        Field::new("stats", stats.data_type().clone(), true),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(paths),
            Arc::new(partitions),
            Arc::new(sizes),
            Arc::new(times),
            Arc::new(stats),
        ],
    )?)
}

/// `stats` as the table's stats schema asks: record counts, and the null
/// counts, minimums and maximums the manifest keeps for pruning.
fn stats_array(adds: &[(&String, &FileMeta)], fields: &Fields) -> PublishResult<StructArray> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.len());
    for field in fields {
        let column: ArrayRef = match (field.name().as_str(), field.data_type()) {
            ("numRecords", _) => Arc::new(Int64Array::from_iter_values(
                adds.iter().map(|(_, f)| f.rows as i64),
            )),
            ("tightBounds", _) => Arc::new(BooleanArray::from_iter(
                adds.iter().map(|(_, f)| Some(f.deletes.is_none())),
            )),
            (kind @ ("nullCount" | "minValues" | "maxValues"), DataType::Struct(columns)) => {
                Arc::new(column_stats(adds, columns, kind)?)
            }
            (_, other) => new_null_array(other, adds.len()),
        };
        columns.push(column);
    }
    Ok(StructArray::try_new(fields.clone(), columns, None)?)
}

fn column_stats(
    adds: &[(&String, &FileMeta)],
    columns: &Fields,
    kind: &str,
) -> PublishResult<StructArray> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for column in columns {
        let target = column.data_type();
        let values = adds.iter().map(|(_, f)| {
            let stats = f.stats.get(column.name());
            let value = match kind {
                "nullCount" => stats.map(|s| ScalarValue::Int64(Some(s.null_count as i64))),
                "minValues" => stats.and_then(|s| s.min.as_ref()).map(scalar),
                _ => stats.and_then(|s| s.max.as_ref()).map(scalar),
            };
            value
                .and_then(|v| v.cast_to(target).ok())
                .map_or_else(|| ScalarValue::try_from(target), Ok)
        });
        let values = values.collect::<Result<Vec<_>, _>>();
        let array = match values {
            Ok(v) if matches!(target, DataType::Struct(_)) || v.is_empty() => {
                new_null_array(target, adds.len())
            }
            Ok(v) => {
                ScalarValue::iter_to_array(v).unwrap_or_else(|_| new_null_array(target, adds.len()))
            }
            Err(_) => new_null_array(target, adds.len()),
        };
        arrays.push(array);
    }
    Ok(StructArray::try_new(columns.clone(), arrays, None)?)
}

fn scalar(value: &StatValue) -> ScalarValue {
    match value {
        StatValue::Int(v) => ScalarValue::Int64(Some(*v)),
        StatValue::Float(v) => ScalarValue::Float64(Some(*v)),
        StatValue::Str(v) => ScalarValue::Utf8(Some(v.clone())),
        StatValue::Bool(v) => ScalarValue::Boolean(Some(*v)),
    }
}
