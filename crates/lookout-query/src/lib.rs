//! Lookout's SQL layer: a DataFusion session over the storage engine.
//!
//! [`Lookout`] is the embeddable database: open a data directory, write Arrow
//! batches, run SQL. [`Session`] is one SQL conversation with its own
//! settings (the server opens one per connection). This crate knows nothing
//! of the wire protocol.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lookout_query::QueryError> {
//! let db = lookout_query::Lookout::open("./lookout-data").await?;
//! db.sql("CREATE TABLE events (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, latency_ms DOUBLE PRECISION)").await?;
//! let batches = db.sql("SELECT model, count(*) FROM events GROUP BY model").await?;
//! # let _ = batches; Ok(()) }
//! ```

mod access;
pub mod copy;
mod cursor;
mod date_bin;
mod date_trunc;
mod error;
mod executor;
pub mod ext;
pub mod format;
mod functions;
mod import;
mod ingest;
mod interrupt;
mod json;
mod metrics;
mod pg;
mod session;
mod table;
mod transaction;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use lookout_storage::{Storage, StorageOptions};

use crate::ext::{DerivedKind, DerivedKinds, IngestHook};

pub use copy::{CopyFormat, CopyKind};
pub use datafusion::common::ScalarValue;
pub use error::{QueryError, Result, SqlState};
pub use ext::{
    Access, Command, CopyIn, ExtStatement, ExternalFormat, Output, SqlExtension, SqlSession,
    parse_duration, parse_non_negative_duration, quote_ident, quote_literal, split_statements,
};
pub use import::ImportProgress;
pub use ingest::Ingest;
pub use json::{JsonKind, json_kind};

/// Registers Lookout's functions (monitoring aggregates, PostgreSQL's
/// functions, JSON) in a context an extension plans its own queries in.
pub fn register_functions(ctx: &datafusion::prelude::SessionContext) {
    crate::functions::register(ctx);
}

/// Parses a `statement_timeout` value as PostgreSQL does (a bare number is
/// milliseconds, otherwise an interval); `None` for 0, no timeout.
pub fn parse_statement_timeout(value: &str) -> Result<Option<std::time::Duration>> {
    interrupt::parse(value)
}
pub use ext::one_expression;
pub use pg::compat::is_oid_field;
pub use session::Session;
pub use session::copy_in::CopyReceiver;
pub use session::plan_cache::{PlanCacheFigures, PlanCacheStats};
pub use session::prepare::Prepared;
pub use table::column_cache::{CacheStats, ColumnCache};

/// Where server-side `COPY ... FROM/TO '<file>'` may read and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAccess {
    /// Any path the process can reach.
    Anywhere,
    /// Only below these directories.
    Only(Vec<PathBuf>),
    /// Server-side file COPY is refused.
    Nowhere,
}

impl FileAccess {
    /// Checks that `path` may be used; returns it made absolute, to be
    /// opened through [`ServerFile`].
    pub fn check(&self, path: &str) -> Result<ServerFile> {
        let confined = matches!(self, FileAccess::Only(_));
        self.resolve(path).map(|path| ServerFile { path, confined })
    }

    fn resolve(&self, path: &str) -> Result<PathBuf> {
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(QueryError::new(
                SqlState::InvalidName,
                format!("relative path not allowed for COPY to or from a file: {path}"),
            ));
        }
        match self {
            FileAccess::Anywhere => Ok(p.to_path_buf()),
            FileAccess::Nowhere => Err(QueryError::new(
                SqlState::InsufficientPrivilege,
                "server-side COPY to or from a file is not allowed on this server; use \\copy (COPY FROM STDIN / TO STDOUT)",
            )),
            FileAccess::Only(dirs) => {
                // Resolve every component, the last one too: a symlink named
                // like a file inside an allowed directory may point anywhere.
                // A file that does not exist yet (COPY TO) is resolved
                // through its parent, and must be a plain name there.
                let resolved = match p.canonicalize() {
                    Ok(r) => r,
                    Err(_) if p.symlink_metadata().is_ok() => {
                        return Err(QueryError::new(
                            SqlState::InsufficientPrivilege,
                            format!("COPY file \"{path}\" is a dangling symbolic link"),
                        ));
                    }
                    Err(_) => {
                        let name = match p.components().next_back() {
                            Some(std::path::Component::Normal(n)) => n,
                            _ => {
                                return Err(QueryError::new(
                                    SqlState::InvalidName,
                                    format!("COPY file \"{path}\" does not name a file"),
                                ));
                            }
                        };
                        let parent = p.parent().unwrap_or(p);
                        parent
                            .canonicalize()
                            .map_err(|e| {
                                QueryError::new(
                                    SqlState::UndefinedFile,
                                    format!("could not access \"{path}\": {e}"),
                                )
                            })?
                            .join(name)
                    }
                };
                let allowed = dirs
                    .iter()
                    .filter_map(|d| d.canonicalize().ok())
                    .any(|d| resolved.starts_with(d));
                if allowed {
                    Ok(resolved)
                } else {
                    Err(QueryError::new(
                        SqlState::InsufficientPrivilege,
                        format!(
                            "COPY file \"{path}\" is outside the configured import/export directories"
                        ),
                    ))
                }
            }
        }
    }
}

/// A file server-side COPY may read or write, as [`FileAccess::check`]
/// resolved it.
///
/// Under `allowed_dirs` the check and the open are two steps, and a path's
/// components could be swapped for symbolic links in between. The checked
/// path has no links left in it, so it is opened with `openat2` and
/// `RESOLVE_NO_SYMLINKS`: the kernel refuses a link in any component at the
/// moment of the open, before anything is created or truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFile {
    path: PathBuf,
    confined: bool,
}

impl ServerFile {
    /// The resolved path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the server confines files to `allowed_dirs`: then whatever
    /// is read through this path (a directory's files) must stay below it.
    pub fn confined(&self) -> bool {
        self.confined
    }

    /// Opens the file to read.
    pub fn open(&self) -> Result<std::fs::File> {
        use rustix::fs::OFlags;
        self.opened(
            OFlags::RDONLY,
            SqlState::UndefinedFile,
            "could not open file",
        )
    }

    /// Creates (or truncates) the file to write.
    pub fn create(&self) -> Result<std::fs::File> {
        use rustix::fs::OFlags;
        self.opened(
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
            SqlState::IoError,
            "could not write",
        )
    }

    fn opened(
        &self,
        flags: rustix::fs::OFlags,
        code: SqlState,
        what: &str,
    ) -> Result<std::fs::File> {
        use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
        let resolve = if self.confined {
            ResolveFlags::NO_SYMLINKS
        } else {
            ResolveFlags::empty()
        };
        // openat2 takes a mode only with O_CREAT (EINVAL otherwise).
        let mode = if flags.contains(OFlags::CREATE) {
            Mode::from_raw_mode(0o644)
        } else {
            Mode::empty()
        };
        rustix::fs::openat2(CWD, &self.path, flags | OFlags::CLOEXEC, mode, resolve)
            .map(std::fs::File::from)
            .map_err(|e| {
                if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::XDEV {
                    QueryError::new(
                        SqlState::InsufficientPrivilege,
                        format!(
                            "COPY file \"{}\" changed into a symbolic link after it was checked",
                            self.path.display()
                        ),
                    )
                } else {
                    QueryError::new(
                        code,
                        format!(
                            "{what} \"{}\": {}",
                            self.path.display(),
                            std::io::Error::from(e)
                        ),
                    )
                }
            })
    }
}

/// How to open a [`Lookout`] database.
#[derive(Debug, Clone)]
pub struct LookoutOptions {
    /// Storage engine tunables.
    pub storage: StorageOptions,
    /// Server-side file COPY policy.
    pub file_access: FileAccess,
    /// Threads a query may use (DataFusion target partitions); 0 = all cores.
    pub query_threads: usize,
    /// Memory all running queries may hold together for sorts, joins and
    /// aggregations, in bytes; past it they spill to disk where they can,
    /// and a statement that cannot fails alone with SQLSTATE 53200.
    /// 0 = half the machine's memory.
    pub query_memory: usize,
    /// Bytes of decoded table columns kept in memory between queries
    /// (see [`ColumnCache`]); `None` = a quarter of the machine's memory,
    /// `Some(0)` = no cache.
    pub cache_memory: Option<usize>,
    /// Plans of recent queries each session keeps, so a query sent again
    /// is not planned from SQL again (see `lookout.plan_cache`); 0 = none.
    pub plan_cache: usize,
}

impl Default for LookoutOptions {
    fn default() -> Self {
        LookoutOptions {
            storage: StorageOptions::default(),
            file_access: FileAccess::Anywhere,
            query_threads: 0,
            query_memory: 0,
            cache_memory: None,
            plan_cache: DEFAULT_PLAN_CACHE,
        }
    }
}

/// Plans each session keeps by default ([`LookoutOptions::plan_cache`]).
pub const DEFAULT_PLAN_CACHE: usize = 64;

/// An open Lookout database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Lookout {
    storage: Storage,
    /// The write path: rows with what the ingest hooks derive from them.
    ingest: Ingest,
    /// The kinds of derived tables the installed extensions maintain.
    kinds: DerivedKinds,
    runtime: Arc<RuntimeEnv>,
    /// The threads queries execute on, apart from the connections'.
    query_runtime: Arc<executor::QueryRuntime>,
    options: Arc<LookoutOptions>,
    extensions: Arc<RwLock<Vec<Arc<dyn SqlExtension>>>>,
    views: Arc<RwLock<BTreeMap<String, String>>>,
    /// Readers of external table formats, by lower-case name.
    external_formats: Arc<RwLock<BTreeMap<String, Arc<dyn ExternalFormat>>>>,
    /// Names of `lookout` schema tables only admin sessions may touch.
    restricted: Arc<RwLock<std::collections::BTreeSet<String>>>,
    /// Who may log in, as the server knows it (for `pg_roles`).
    roles: Arc<RwLock<Option<Arc<dyn RoleDirectory>>>>,
    /// Decoded columns of stored files, shared by every session.
    column_cache: Arc<ColumnCache>,
    /// What the sessions' plan caches count.
    plan_cache: Arc<PlanCacheStats>,
    /// Extensions' background tasks, stopped on close.
    background: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    metrics: metrics::QueryMetrics,
}

/// The users who may log in and their access, for `pg_catalog.pg_roles`
/// (psql's `\du`, DBeaver's role list). The server provides it; an embedded
/// database has none.
pub trait RoleDirectory: Send + Sync + std::fmt::Debug {
    /// Every user, with what their sessions may do.
    fn roles(&self) -> Vec<(String, Access)>;
}

/// The machine's memory (from `/proc/meminfo`), or 8 GiB where it cannot
/// be read.
fn machine_memory() -> usize {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        });
    total_kib.map_or(8 << 30, |kib| kib * 1024)
}

impl Lookout {
    /// Opens the database in `dir` with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Lookout> {
        Self::open_with(dir, LookoutOptions::default()).await
    }

    /// Opens the database in `dir`.
    pub async fn open_with(dir: impl AsRef<Path>, options: LookoutOptions) -> Result<Lookout> {
        json::register_column_format();
        let storage = Storage::open(dir, options.storage.clone()).await?;
        let budget = match options.query_memory {
            0 => machine_memory() / 2,
            n => n,
        };
        // Fair shares between spilling operators; an error names the
        // largest consumers.
        let pool = datafusion::execution::memory_pool::TrackConsumersPool::new(
            datafusion::execution::memory_pool::FairSpillPool::new(budget),
            std::num::NonZeroUsize::MIN.saturating_add(2),
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()?;
        let url = url::Url::parse(table::provider::STORE_URL)
            .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))?;
        runtime.register_object_store(&url, storage.object_store());
        let kinds = DerivedKinds::default();
        let column_cache = Arc::new(ColumnCache::new(
            options.cache_memory.unwrap_or_else(|| machine_memory() / 4),
        ));
        let metrics = metrics::QueryMetrics::register(&options.storage.metrics, &column_cache);
        let lookout = Lookout {
            metrics,
            column_cache,
            plan_cache: Arc::default(),
            ingest: Ingest::new(storage.clone(), kinds.clone()),
            kinds,
            storage,
            runtime,
            query_runtime: Arc::new(executor::QueryRuntime::new(options.query_threads)?),
            options: Arc::new(options),
            extensions: Arc::default(),
            views: Arc::default(),
            external_formats: Arc::default(),
            restricted: Arc::default(),
            roles: Arc::default(),
            background: Arc::default(),
        };
        lookout.register_view("functions", &pg::function_catalog::functions_view());
        Ok(lookout)
    }

    /// A new SQL session.
    pub fn session(&self) -> Session {
        Session::new(self.clone())
    }

    /// Runs SQL (one or more statements) in a fresh session and returns the
    /// rows of the last one.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.session().query(sql).await
    }

    /// Writes a batch to a table: durable and visible when this returns,
    /// together with what the ingest hooks derive from it.
    pub async fn write(&self, table: &str, batch: RecordBatch) -> Result<u64> {
        self.ingest.write(table, batch).await
    }

    pub(crate) fn query_runtime(&self) -> &executor::QueryRuntime {
        &self.query_runtime
    }

    /// The write path every table's rows take.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// Adds a hook to the write path of every table.
    pub fn register_ingest_hook(&self, hook: Arc<dyn IngestHook>) {
        self.ingest.add_hook(hook);
    }

    /// Installs a kind of derived table: existing tables of the kind get
    /// its combine function, and those whose derivation never finished (the
    /// process stopped while it filled them) are dropped.
    pub async fn register_derived_kind(&self, kind: Arc<dyn DerivedKind>) -> Result<()> {
        self.kinds.register(Arc::clone(&kind));
        let manifest = self.storage.manifest()?;
        for entry in manifest.tables.values() {
            let Some(derived) = entry.def.derived.as_ref().filter(|d| kind.defines(d)) else {
                continue;
            };
            // A replica leaves the writer's unfinished derivations to it.
            if derived.pending && !self.storage.is_read_only() {
                tracing::warn!(
                    table = entry.def.name,
                    kind = kind.name(),
                    "dropping a derived table whose definition did not finish"
                );
                self.storage.drop_table(&entry.def.name, true).await?;
                continue;
            }
            if let Some(combiner) = kind.combiner(&entry.def)? {
                self.storage.set_combiner(&entry.def.name, combiner)?;
            }
        }
        Ok(())
    }

    /// The installed kinds of derived tables.
    pub fn derived_kinds(&self) -> &DerivedKinds {
        &self.kinds
    }

    /// Runs `task` until the database closes.
    pub fn add_background_task(&self, task: tokio::task::JoinHandle<()>) {
        self.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// Imports Parquet files into `table`, creating it from the first file's
    /// schema if it does not exist. Atomic: all rows or none.
    pub async fn import_parquet(
        &self,
        table: &str,
        files: &[PathBuf],
        progress: Option<ImportProgress>,
    ) -> Result<u64> {
        import::import_parquet(self, table, files, progress).await
    }

    /// Adds statements handled by `extension` to every session, present and future.
    pub fn register_extension(&self, extension: Arc<dyn SqlExtension>) {
        if let Ok(mut list) = self.extensions.write() {
            list.push(extension);
        }
    }

    /// Lets `CREATE EXTERNAL TABLE ... STORED AS <name>` read `format`.
    pub fn register_external_format(&self, name: &str, format: Arc<dyn ExternalFormat>) {
        if let Ok(mut formats) = self.external_formats.write() {
            formats.insert(name.to_lowercase(), format);
        }
    }

    pub(crate) fn external_format(&self, name: &str) -> Option<Arc<dyn ExternalFormat>> {
        self.external_formats
            .read()
            .ok()
            .and_then(|f| f.get(&name.to_lowercase()).cloned())
    }

    /// Lists `directory`'s users in `pg_roles`.
    pub fn set_role_directory(&self, directory: Arc<dyn RoleDirectory>) {
        if let Ok(mut roles) = self.roles.write() {
            *roles = Some(directory);
        }
    }

    pub(crate) fn roles(&self) -> Vec<(String, Access)> {
        let directory = self.roles.read().ok().and_then(|r| r.clone());
        let mut roles = directory.map(|d| d.roles()).unwrap_or_default();
        roles.sort();
        roles
    }

    /// Makes `lookout.<name>` readable and writable by admin sessions only
    /// (it holds secrets, such as password verifiers).
    pub fn restrict_to_admin(&self, name: &str) {
        if let Ok(mut restricted) = self.restricted.write() {
            restricted.insert(name.to_lowercase());
        }
    }

    pub(crate) fn is_restricted(&self, name: &str) -> bool {
        self.restricted
            .read()
            .map(|r| r.contains(name))
            .unwrap_or(true)
    }

    /// Defines `lookout.<name>` as a view over `sql`, planned afresh at each
    /// query that reads it. Views live as long as this handle; whoever
    /// defines them does so at each open.
    pub fn register_view(&self, name: &str, sql: &str) {
        if let Ok(mut views) = self.views.write() {
            views.insert(name.to_lowercase(), sql.to_string());
        }
    }

    pub(crate) fn extensions(&self) -> Vec<Arc<dyn SqlExtension>> {
        self.extensions
            .read()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    pub(crate) fn view(&self, name: &str) -> Option<String> {
        self.views.read().ok().and_then(|v| v.get(name).cloned())
    }

    pub(crate) fn view_names(&self) -> Vec<String> {
        self.views
            .read()
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The storage engine. Writes made directly to it pass no ingest hook.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Flushes buffered rows and stops background work.
    pub async fn close(&self) -> Result<()> {
        let tasks = std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
        Ok(self.storage.close().await?)
    }

    pub(crate) fn runtime(&self) -> Arc<RuntimeEnv> {
        Arc::clone(&self.runtime)
    }

    /// The cache of decoded columns every scan reads through.
    pub fn column_cache(&self) -> &Arc<ColumnCache> {
        &self.column_cache
    }

    /// How the sessions' plan caches are used (`lookout.plan_cache`).
    pub fn plan_cache_stats(&self) -> Arc<PlanCacheStats> {
        Arc::clone(&self.plan_cache)
    }

    pub(crate) fn options(&self) -> &LookoutOptions {
        &self.options
    }

    /// The registry every part of this database registers its metrics in
    /// (the one given in the storage options).
    pub fn metrics(&self) -> &lookout_metrics::Registry {
        &self.options.storage.metrics
    }

    pub(crate) fn query_metrics(&self) -> &metrics::QueryMetrics {
        &self.metrics
    }
}

#[cfg(test)]
mod file_access_tests {
    use super::*;

    #[test]
    fn every_component_is_resolved_before_the_allowed_dirs_check() {
        let root = tempfile::tempdir().expect("tempdir");
        let allowed = root.path().join("allowed");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&allowed).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "x").expect("write");
        std::fs::write(allowed.join("data.csv"), "x").expect("write");
        std::os::unix::fs::symlink(outside.join("secret"), allowed.join("link.csv"))
            .expect("symlink");
        std::os::unix::fs::symlink(&outside, allowed.join("dir")).expect("symlink");
        std::os::unix::fs::symlink(outside.join("gone"), allowed.join("dangling.csv"))
            .expect("symlink");
        let access = FileAccess::Only(vec![allowed.clone()]);
        let path = |p: &Path| p.display().to_string();
        let code = |p: &Path| access.check(&path(p)).map(|_| ()).unwrap_err().sqlstate();
        let resolved = |p: &Path| access.check(&path(p)).map(|f| f.path().to_path_buf());

        let canonical = allowed.canonicalize().expect("canonical");
        assert_eq!(
            resolved(&allowed.join("data.csv")).expect("inside"),
            canonical.join("data.csv")
        );
        assert_eq!(
            resolved(&allowed.join("new.parquet")).expect("new file"),
            canonical.join("new.parquet")
        );
        for (refused, why) in [
            ("link.csv", "symlink as the file"),
            ("dir/secret", "symlinked directory"),
            ("dir/new.csv", "new file via symlink"),
            ("dangling.csv", "dangling symlink"),
            ("../outside/secret", ".."),
            ("..", "the parent itself"),
        ] {
            assert_eq!(code(&allowed.join(refused)), "42501", "{why}");
        }
        assert_eq!(code(Path::new("relative.csv")), "42602");
    }

    /// What a swap between the check and the open would do, done by hand:
    /// the checked file becomes a link out, or its directory does.
    #[test]
    fn a_file_swapped_for_a_link_after_the_check_is_not_opened() {
        let root = tempfile::tempdir().expect("tempdir");
        let allowed = root.path().join("allowed");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(allowed.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "secret").expect("write");
        std::fs::write(allowed.join("data.csv"), "x").expect("write");
        std::fs::write(allowed.join("sub/data.csv"), "x").expect("write");
        let access = FileAccess::Only(vec![allowed.clone()]);
        let checked = |p: &Path| access.check(&p.display().to_string()).expect("allowed");

        let file = checked(&allowed.join("data.csv"));
        assert!(file.open().is_ok());
        std::fs::remove_file(allowed.join("data.csv")).expect("rm");
        std::os::unix::fs::symlink(outside.join("secret"), allowed.join("data.csv"))
            .expect("symlink");
        assert_eq!(file.open().map(|_| ()).unwrap_err().sqlstate(), "42501");
        assert_eq!(file.create().map(|_| ()).unwrap_err().sqlstate(), "42501");

        let nested = checked(&allowed.join("sub/data.csv"));
        std::fs::remove_dir_all(allowed.join("sub")).expect("rm");
        std::fs::copy(outside.join("secret"), outside.join("data.csv")).expect("cp");
        std::os::unix::fs::symlink(&outside, allowed.join("sub")).expect("symlink");
        assert_eq!(nested.open().map(|_| ()).unwrap_err().sqlstate(), "42501");
        // Refused before anything is created or truncated.
        assert_eq!(nested.create().map(|_| ()).unwrap_err().sqlstate(), "42501");
        assert_eq!(
            std::fs::read_to_string(outside.join("data.csv")).expect("read"),
            "secret",
            "the file outside was not truncated"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).expect("read"),
            "secret",
            "nothing outside was written"
        );
        // Anywhere (loopback without allowed_dirs) follows links as before.
        let anywhere = FileAccess::Anywhere
            .check(&allowed.join("data.csv").display().to_string())
            .expect("anywhere");
        assert!(anywhere.open().is_ok());
    }
}
