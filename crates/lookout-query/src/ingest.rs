//! The write path of every table: rows go to storage with whatever the
//! installed [`IngestHook`]s make of them, in one WAL record (or one
//! manifest commit for bulk loads and transaction blocks with deletes).
//!
//! A hook may send a table's rows elsewhere ([`Redirect`]: a sampled table's
//! held area) and derive rows of other tables from them ([`Derive`]: a
//! rollup's deltas). Both are committed with the rows, so derived rows are
//! exactly as durable as the rows they come from.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use futures::{Stream, StreamExt};
use lookout_storage::{Storage, StorageError, TableDef};

use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::table::derived::DerivedKinds;
use crate::transaction::BlockWrites;

/// Takes part in every write to every table (as DataFusion's
/// `ExtensionPlanner` takes part in every plan): it answers, per table,
/// whether the rows go elsewhere and which rows derive from them.
#[async_trait]
pub trait IngestHook: Send + Sync + Debug {
    /// Where rows written to `table` go instead of the table itself.
    fn redirect(&self, storage: &Storage, table: &str) -> Result<Option<Arc<dyn Redirect>>> {
        let _ = (storage, table);
        Ok(None)
    }

    /// The derived tables whose rows follow from each write to `table`.
    fn derive(&self, storage: &Storage, table: &str) -> Result<Vec<Arc<dyn Derive>>> {
        let _ = (storage, table);
        Ok(Vec::new())
    }

    /// Runs before `DROP TABLE table`, to take down what the hook keeps for
    /// it (an error stops the drop).
    async fn dropping(&self, ingest: &Ingest, table: &str) -> Result<()> {
        let _ = (ingest, table);
        Ok(())
    }
}

/// Rows of one table stored in another, reshaped for it.
pub trait Redirect: Send + Sync + Debug {
    /// The table that stores them.
    fn target(&self) -> &str;

    /// `rows` (validated against the source table) as `target` stores
    /// them; `arrived` is when the write arrived, in microseconds.
    fn rows(&self, rows: &RecordBatch, arrived: i64) -> Result<RecordBatch>;
}

/// A table whose rows are computed from another's as they are written.
#[async_trait]
pub trait Derive: Send + Sync + Debug {
    /// The derived table.
    fn target(&self) -> &str;

    /// The derived rows for `rows` of `source`, in the target's schema.
    async fn rows(&self, source: &TableDef, rows: RecordBatch) -> Result<RecordBatch>;

    /// Derived rows merged into fewer that stand for all of them (a bulk
    /// load merges as it goes, so its deltas stay small).
    async fn merge(&self, rows: Vec<RecordBatch>) -> Result<RecordBatch>;
}

/// What a write to one table writes, as the hooks decide.
#[derive(Debug, Default)]
struct WritePlan {
    redirect: Option<Arc<dyn Redirect>>,
    derive: Vec<Arc<dyn Derive>>,
}

impl WritePlan {
    fn is_plain(&self) -> bool {
        self.redirect.is_none() && self.derive.is_empty()
    }
}

/// The write path of the SQL layer.
#[derive(Debug, Clone)]
pub struct Ingest {
    storage: Storage,
    hooks: Arc<RwLock<Vec<Arc<dyn IngestHook>>>>,
    kinds: DerivedKinds,
    /// Writes hold it shared; an extension holds it alone while the set of
    /// derived tables changes or while it takes a consistent cut (creating
    /// a rollup commits it and takes the snapshot it backfills from, so every
    /// row is counted once; a sampling decision waits for every row that
    /// arrived before its instant to commit).
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl Ingest {
    /// Whether scans of `def`'s rows keep decoded columns in the column
    /// cache (see [`crate::table::derived::DerivedKind::cached`]).
    pub(crate) fn cached(&self, def: &TableDef) -> bool {
        def.derived
            .as_ref()
            .and_then(|d| self.kinds.kind_of(d))
            .is_none_or(|kind| kind.cached())
    }

    pub(crate) fn new(storage: Storage, kinds: DerivedKinds) -> Self {
        Ingest {
            storage,
            hooks: Arc::default(),
            kinds,
            gate: Arc::default(),
        }
    }

    /// The storage engine below.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The gate every write passes shared; hold it exclusively to change
    /// what writes derive, or to wait for the writes in flight.
    pub fn gate(&self) -> &tokio::sync::RwLock<()> {
        &self.gate
    }

    pub(crate) fn add_hook(&self, hook: Arc<dyn IngestHook>) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    fn hooks(&self) -> Vec<Arc<dyn IngestHook>> {
        self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lets every hook take down what it keeps for `table` before it is dropped.
    pub(crate) async fn dropping(&self, table: &str) -> Result<()> {
        for hook in self.hooks() {
            hook.dropping(self, table).await?;
        }
        Ok(())
    }

    /// The tables derived from each write to `table`.
    pub(crate) fn derived_from(&self, table: &str) -> Result<Vec<Arc<dyn Derive>>> {
        Ok(self.plan(table)?.derive)
    }

    /// What the hooks make of a write to `table`. A table with a derived
    /// table of a kind no installed extension handles is not written: its
    /// derived rows would silently go missing.
    fn plan(&self, table: &str) -> Result<WritePlan> {
        let manifest = self.storage.manifest()?;
        for entry in manifest.tables.values() {
            let Some(derivation) = entry.def.derived.as_ref().filter(|d| d.source == table) else {
                continue;
            };
            if self.kinds.kind_of(derivation).is_none() {
                return Err(QueryError::new(
                    SqlState::ObjectNotInPrerequisiteState,
                    format!(
                        "\"{}\" is derived from \"{table}\" by an extension this database was opened without ({}); writes to \"{table}\" are refused until it is installed",
                        entry.def.name,
                        derivation
                            .kind
                            .as_deref()
                            .unwrap_or("a definition of an earlier release"),
                    ),
                ));
            }
        }
        let mut plan = WritePlan::default();
        for hook in self.hooks() {
            if let Some(redirect) = hook.redirect(&self.storage, table)? {
                plan.redirect = Some(redirect);
            }
            plan.derive.extend(hook.derive(&self.storage, table)?);
        }
        Ok(plan)
    }

    /// Writes rows (atomic, durable when this returns) with what the hooks
    /// derive from them.
    pub async fn write(&self, table: &str, batch: RecordBatch) -> Result<u64> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let _gate = self.gate.read().await;
        let group = self.group_of(table, batch).await?;
        Ok(self.storage.write_group(group).await?)
    }

    /// What writing `batch` to `table` writes, table by table.
    async fn group_of(
        &self,
        table: &str,
        batch: RecordBatch,
    ) -> Result<Vec<(String, RecordBatch)>> {
        let plan = self.plan(table)?;
        if plan.is_plain() {
            return Ok(vec![(table.to_string(), batch)]);
        }
        let def = self.storage.table(table)?;
        let rows = self.storage.validate(&def, &def.schema()?, &batch)?;
        let mut group = vec![match &plan.redirect {
            Some(redirect) => (
                redirect.target().to_string(),
                redirect.rows(&rows, self.storage.clock().now_micros())?,
            ),
            None => (table.to_string(), rows.clone()),
        }];
        for derive in &plan.derive {
            let rows = derive.rows(&def, rows.clone()).await?;
            group.push((derive.target().to_string(), rows));
        }
        Ok(group)
    }

    /// Commits a transaction block's writes as one unit: one WAL record
    /// when it only inserted, one manifest version when it deleted rows.
    pub(crate) async fn commit(&self, writes: BlockWrites) -> Result<()> {
        let _gate = self.gate.read().await;
        let mut group = Vec::new();
        for pending in writes.inserts {
            if pending.direct {
                group.push((pending.table, pending.rows));
            } else {
                group.extend(self.group_of(&pending.table, pending.rows).await?);
            }
        }
        group.retain(|(_, rows)| rows.num_rows() > 0);
        if writes.marks.is_empty() {
            if !group.is_empty() {
                self.storage.write_group(group).await?;
            }
        } else {
            self.storage.commit_changes(&writes.marks, group).await?;
        }
        drop(writes.holds);
        Ok(())
    }

    /// Loads many rows straight to Parquet; derived rows are computed batch
    /// by batch, merged as they grow, and committed with the rows.
    pub async fn bulk_load<S>(&self, table: &str, batches: S) -> Result<u64>
    where
        S: Stream<Item = lookout_storage::Result<RecordBatch>> + Send + Unpin + 'static,
    {
        let _gate = self.gate.read().await;
        let plan = self.plan(table)?;
        if plan.is_plain() {
            return Ok(self.storage.bulk_load(table, batches).await?);
        }
        let def = self.storage.table(table)?;
        let pending: Arc<Vec<PendingRows>> = Arc::new(
            plan.derive
                .into_iter()
                .map(|derive| PendingRows {
                    derive,
                    rows: Mutex::default(),
                })
                .collect(),
        );
        let schema = def.schema()?;
        let arrived = self.storage.clock().now_micros();
        let storage = self.storage.clone();
        let redirect = plan.redirect.clone();
        let observed = {
            let pending = Arc::clone(&pending);
            let def = def.clone();
            batches.then(move |item| {
                let pending = Arc::clone(&pending);
                let (def, schema) = (def.clone(), Arc::clone(&schema));
                let redirect = redirect.clone();
                let storage = storage.clone();
                async move {
                    let batch = item?;
                    // Rows bound for another table are checked against
                    // their own table now.
                    let rows = match redirect {
                        Some(_) => storage.validate(&def, &schema, &batch)?,
                        None => lookout_storage::batch::conform(&batch, &def, &schema)?,
                    };
                    for derived in pending.iter() {
                        derived.add(&def, rows.clone()).await.map_err(invalid)?;
                    }
                    match redirect {
                        Some(redirect) => redirect.rows(&rows, arrived).map_err(invalid),
                        None => Ok(batch),
                    }
                }
            })
        };
        let derived = move || async move {
            let mut out = Vec::new();
            for derived in pending.iter() {
                if let Some(rows) = derived.finish().await.map_err(invalid)? {
                    out.push((derived.derive.target().to_string(), rows));
                }
            }
            Ok(out)
        };
        let target = plan
            .redirect
            .map_or_else(|| table.to_string(), |r| r.target().to_string());
        Ok(self
            .storage
            .bulk_load_with(&target, Box::pin(observed), derived)
            .await?)
    }

    /// Whether writes to `table` store exactly the rows written (no
    /// redirect, nothing derived): such a table can take
    /// [`Ingest::bulk_load_paced`].
    pub fn is_plain(&self, table: &str) -> Result<bool> {
        Ok(self.plan(table)?.is_plain())
    }

    /// Loads rows that arrive at a client's pace (`COPY FROM STDIN`)
    /// straight to Parquet, into a table whose writes derive nothing.
    ///
    /// Unlike [`Ingest::bulk_load`], the write gate is held only from the
    /// stream's end to the commit: a client that sends slowly, or stops,
    /// holds up no rollup creation or sampling decision (nor the writes
    /// that queue behind those). If the table came to derive rows in the
    /// meantime, its rows would miss the derived tables, so the load is
    /// dropped whole with `40001` and may be run again.
    pub async fn bulk_load_paced<S>(&self, table: &str, batches: S) -> Result<u64>
    where
        S: Stream<Item = lookout_storage::Result<RecordBatch>> + Send + Unpin + 'static,
    {
        let conflict = |table: &str| {
            StorageError::Conflict(format!(
                "COPY into \"{table}\" was dropped: the table came to derive rows (a rollup or sampling) while the rows arrived; run it again"
            ))
        };
        if !self.is_plain(table)? {
            return Err(conflict(table).into());
        }
        let held: Arc<Mutex<Option<tokio::sync::OwnedRwLockReadGuard<()>>>> = Arc::default();
        let at_commit = {
            let (held, gate) = (Arc::clone(&held), Arc::clone(&self.gate));
            let this = self.clone();
            let table = table.to_string();
            move || async move {
                let guard = gate.read_owned().await;
                if !this.is_plain(&table).map_err(invalid)? {
                    return Err(conflict(&table));
                }
                *held.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
                Ok(Vec::new())
            }
        };
        let loaded = self.storage.bulk_load_with(table, batches, at_commit).await;
        // The gate is released only once the load has committed.
        drop(held);
        Ok(loaded?)
    }
}

fn invalid(e: QueryError) -> StorageError {
    StorageError::InvalidData(e.to_string())
}

/// One derived table's rows accumulated during a bulk load.
struct PendingRows {
    derive: Arc<dyn Derive>,
    /// Derived batches, and the row count of the last merge's result.
    rows: Mutex<(Vec<RecordBatch>, usize)>,
}

/// Derived rows held before they are merged, during a bulk load.
const MERGE_EVERY_ROWS: usize = 50_000;

impl PendingRows {
    async fn add(&self, source: &TableDef, rows: RecordBatch) -> Result<()> {
        let derived = self.derive.rows(source, rows).await?;
        let full = {
            let mut held = self.rows.lock().unwrap_or_else(|p| p.into_inner());
            held.0.push(derived);
            let count: usize = held.0.iter().map(RecordBatch::num_rows).sum();
            // Merge when the rows held double since the last merge, so
            // that a load touching many buckets merges O(log n) times.
            let threshold = MERGE_EVERY_ROWS.max(2 * held.1);
            (count >= threshold).then(|| std::mem::take(&mut held.0))
        };
        if let Some(rows) = full {
            let merged = self.derive.merge(rows).await?;
            let mut held = self.rows.lock().unwrap_or_else(|p| p.into_inner());
            held.1 = merged.num_rows();
            held.0.push(merged);
        }
        Ok(())
    }

    async fn finish(&self) -> Result<Option<RecordBatch>> {
        let held = std::mem::take(&mut self.rows.lock().unwrap_or_else(|p| p.into_inner()).0);
        if held.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.derive.merge(held).await?))
    }
}
