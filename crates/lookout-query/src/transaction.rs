//! Transaction blocks: the writes between `BEGIN` and `COMMIT` are held by
//! the session and committed as one unit (one WAL record, or one manifest
//! version when rows were deleted or updated), so `ROLLBACK`, an error in
//! the block or a disconnect leaves nothing behind.
//!
//! Reads inside the block see its writes: the [`Block`] travels in each
//! statement's configuration, and a table's snapshot is overlaid with the
//! block's rows and the positions it deleted. Deletes pick rows by file
//! position when they run (read committed, as in PostgreSQL), and the files
//! holding them are kept from compaction until the block ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, BooleanArray, RecordBatch};
use lookout_storage::{FilePin, MarkedRows, RowMarks, TableSnapshot};

use crate::error::SqlState;
use crate::error::{QueryError, Result};

/// Uncommitted writes a block may hold, in bytes of Arrow memory; past it
/// the statement fails with `54000` and the block must be split.
pub(crate) const MAX_BLOCK_BYTES: usize = 256 << 20;

/// Rows a block inserts into one table.
#[derive(Debug, Clone)]
pub(crate) struct PendingRows {
    pub(crate) table: String,
    /// In the table's columns, already checked as a write would check them.
    pub(crate) rows: RecordBatch,
    /// New versions of updated rows: they go to the table itself, past
    /// sampling's held area (they were kept already).
    pub(crate) direct: bool,
}

/// What a block commits.
#[derive(Debug, Default)]
pub(crate) struct BlockWrites {
    pub(crate) inserts: Vec<PendingRows>,
    pub(crate) marks: HashMap<String, RowMarks>,
    /// Keeps compaction off the marked files until the commit is done.
    pub(crate) holds: Vec<FilePin>,
}

/// The state of a block when a savepoint was set.
#[derive(Debug)]
struct Savepoint {
    name: String,
    inserts: Vec<PendingRows>,
    marks: HashMap<String, RowMarks>,
    bytes: usize,
}

/// The open transaction block of a session.
#[derive(Debug, Default)]
pub(crate) struct Block {
    writes: Mutex<(BlockWrites, usize)>,
    savepoints: Mutex<Vec<Savepoint>>,
    /// Set when a statement of the block fails while its rows are read,
    /// after the statement itself returned.
    failed: AtomicBool,
}

impl Block {
    fn lock(&self) -> std::sync::MutexGuard<'_, (BlockWrites, usize)> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds rows for `table` until commit.
    pub(crate) fn insert(&self, table: &str, rows: RecordBatch, direct: bool) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let mut guard = self.lock();
        let bytes = guard.1 + rows.get_array_memory_size();
        if bytes > MAX_BLOCK_BYTES {
            return Err(QueryError::new(
                SqlState::ProgramLimitExceeded,
                format!(
                    "transaction block holds more than {} MiB of uncommitted rows; commit in smaller blocks, or load large data outside a block",
                    MAX_BLOCK_BYTES >> 20
                ),
            ));
        }
        guard.1 = bytes;
        guard.0.inserts.push(PendingRows {
            table: table.to_string(),
            rows,
            direct,
        });
        Ok(())
    }

    /// The positions of `table` the block has deleted so far.
    pub(crate) fn marks(&self, table: &str) -> RowMarks {
        self.lock().0.marks.get(table).cloned().unwrap_or_default()
    }

    /// Records rows picked for deletion in committed files.
    pub(crate) fn absorb(&self, table: &str, found: MarkedRows) {
        let mut guard = self.lock();
        guard
            .0
            .marks
            .entry(table.to_string())
            .or_default()
            .absorb(&found);
        guard.0.holds.push(found.hold);
    }

    /// Removes the block's own rows of `table` that `select` picks; returns
    /// them.
    pub(crate) fn take_pending(
        &self,
        table: &str,
        select: impl Fn(&RecordBatch) -> Result<BooleanArray>,
    ) -> Result<Vec<RecordBatch>> {
        let mut guard = self.lock();
        let mut taken = Vec::new();
        for pending in guard.0.inserts.iter_mut().filter(|p| p.table == table) {
            let hits = select(&pending.rows)?;
            let hit = |i: usize| hits.is_valid(i) && hits.value(i);
            let picked: BooleanArray = (0..hits.len()).map(|i| Some(hit(i))).collect();
            let kept: BooleanArray = (0..hits.len()).map(|i| Some(!hit(i))).collect();
            let out = arrow::compute::filter_record_batch(&pending.rows, &picked)?;
            if out.num_rows() > 0 {
                pending.rows = arrow::compute::filter_record_batch(&pending.rows, &kept)?;
                taken.push(out);
            }
        }
        guard.0.inserts.retain(|p| p.rows.num_rows() > 0);
        Ok(taken)
    }

    /// Shows the block's writes in a snapshot of `snapshot.def.name`: its
    /// deleted positions join the files' deletion vectors, its rows join
    /// the buffered ones.
    pub(crate) fn overlay(&self, snapshot: &mut TableSnapshot) -> Result<()> {
        let guard = self.lock();
        let table = &snapshot.def.name;
        if let Some(marked) = guard.0.marks.get(table)
            && marked.table_id == snapshot.def.id
        {
            for file in std::sync::Arc::make_mut(&mut snapshot.files).iter_mut() {
                if let Some(bitmap) = marked.marks.get(&file.path) {
                    let mut all = file.deletion_vector()?.unwrap_or_default();
                    all |= bitmap;
                    file.set_deletion_vector(&all)?;
                }
            }
        }
        for pending in guard.0.inserts.iter().filter(|p| &p.table == table) {
            let rows =
                lookout_storage::batch::conform(&pending.rows, &snapshot.def, &snapshot.schema)?;
            snapshot.buffered.push(rows);
        }
        Ok(())
    }

    /// `SAVEPOINT name`.
    pub(crate) fn savepoint(&self, name: &str) {
        let guard = self.lock();
        let saved = Savepoint {
            name: name.to_string(),
            inserts: guard.0.inserts.clone(),
            marks: guard.0.marks.clone(),
            bytes: guard.1,
        };
        drop(guard);
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(saved);
    }

    /// `ROLLBACK TO SAVEPOINT name`: the block's writes as they were when
    /// it was set (the savepoint stays, later ones go), and the block is
    /// no longer failed.
    pub(crate) fn rollback_to(&self, name: &str) -> Result<()> {
        let mut savepoints = self.savepoints.lock().unwrap_or_else(|p| p.into_inner());
        let at = find_savepoint(&savepoints, name)?;
        savepoints.truncate(at + 1);
        let saved = &savepoints[at];
        let mut guard = self.lock();
        guard.0.inserts = saved.inserts.clone();
        guard.0.marks = saved.marks.clone();
        guard.1 = saved.bytes;
        self.failed.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// `RELEASE SAVEPOINT name`: forgets it and every later one.
    pub(crate) fn release(&self, name: &str) -> Result<()> {
        let mut savepoints = self.savepoints.lock().unwrap_or_else(|p| p.into_inner());
        let at = find_savepoint(&savepoints, name)?;
        savepoints.truncate(at);
        Ok(())
    }

    /// Marks the block failed.
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Whether a statement of the block failed.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Empties the block, handing over what it would commit.
    pub(crate) fn take(&self) -> BlockWrites {
        let mut guard = self.lock();
        guard.1 = 0;
        std::mem::take(&mut guard.0)
    }
}

/// The latest savepoint of that name, as PostgreSQL picks it.
fn find_savepoint(savepoints: &[Savepoint], name: &str) -> Result<usize> {
    savepoints
        .iter()
        .rposition(|s| s.name == name)
        .ok_or_else(|| {
            QueryError::new(
                SqlState::InvalidSavepointSpecification,
                format!("savepoint \"{name}\" does not exist"),
            )
        })
}

/// Where a session stands with respect to transaction blocks.
#[derive(Debug, Default)]
pub(crate) enum TransactionState {
    /// Each statement commits on its own.
    #[default]
    Idle,
    /// Inside `BEGIN`: writes wait for `COMMIT`.
    Open(Arc<Block>),
    /// A statement in the block failed: everything but `ROLLBACK`,
    /// `ROLLBACK TO SAVEPOINT` and `COMMIT` (which rolls back) is refused
    /// with `25P02`.
    Failed(Arc<Block>),
}

/// The error every statement of a failed block gets.
pub(crate) fn aborted() -> QueryError {
    QueryError::new(
        SqlState::InFailedSqlTransaction,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}
