//! Deletes and transaction blocks: rows found by file position, marked in
//! deletion vectors, committed with the block's inserts.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use roaring::RoaringBitmap;

use super::{FilePin, LoadGuard, MarkedRows, RowMarks, Storage};
use crate::batch;
use crate::error::{Result, StorageError};
use crate::manifest::FileMeta;

impl Storage {
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
                if let Some(f) = Arc::make_mut(&mut entry.files)
                    .iter_mut()
                    .find(|f| &f.path == path)
                {
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

    pub(super) async fn find_rows<P, S>(
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
                    for f in Arc::make_mut(&mut entry.files).iter_mut() {
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
                    Arc::make_mut(&mut entry.files).extend(files);
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
}
