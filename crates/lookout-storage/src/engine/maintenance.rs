//! Background maintenance: compaction, retention, garbage collection.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::BooleanArray;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{LoadGuard, Storage, collect_later, poisoned, retire_files};
use crate::batch;
use crate::error::Result;
use crate::manifest::{FileMeta, Garbage, Manifest};
use crate::schema::TableDef;

impl Storage {
    /// Merges small files of a partition into time-sorted files and purges
    /// deleted rows. Returns the number of files replaced.
    pub async fn compact(&self) -> Result<usize> {
        let _guard = self.inner.commit.lock().await;
        let _load = LoadGuard::new(&self.inner.loads_in_flight);
        let manifest = self.manifest()?;
        let marked = self.inner.marked.pinned();
        let mut replaced = 0;
        for (name, entry) in &manifest.tables {
            let mut groups: BTreeMap<(Option<String>, i64), Vec<&FileMeta>> = BTreeMap::new();
            for f in entry.files.iter().filter(|f| !marked.contains(&f.path)) {
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
                    let files = Arc::make_mut(&mut e.files);
                    files.retain(|f| !old.contains(&f.path));
                    files.extend(outputs);
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

    pub(super) async fn rewrite(
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
        let pinned = self.inner.pins.pinned();
        let due: Vec<Garbage> = self
            .manifest()?
            .garbage
            .iter()
            .filter(|g| g.since <= cutoff && !pinned.contains(&g.path))
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
                let due: HashSet<&str> = due.iter().map(|d| d.path.as_str()).collect();
                m.garbage.retain(|g| !due.contains(g.path.as_str()));
                before - m.garbage.len()
            })
            .await?;
        Ok(collected + self.remove_orphans(cutoff).await?)
    }

    /// Deletes Parquet files no manifest references (written by a flush or
    /// bulk load that crashed before its commit), once older than the grace
    /// period, so that a load still in progress is never touched.
    pub(super) async fn remove_orphans(&self, cutoff_micros: i64) -> Result<usize> {
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
            // Delta checkpoints are Parquet too, but the table's log owns them.
            if path.ends_with(".parquet")
                && !path.contains("/_delta_log/")
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
    pub(super) async fn commit_if(
        &self,
        change: impl FnOnce(&mut Manifest) -> usize,
    ) -> Result<usize> {
        let _guard = self.inner.commit.lock().await;
        let old = self.manifest()?;
        let mut m = (*old).clone();
        let n = change(&mut m);
        if n > 0 {
            self.write_manifest(&old, &mut m).await?;
            self.inner.state.write().map_err(poisoned)?.manifest = Arc::new(m);
        }
        Ok(n)
    }

    pub(super) fn flush_due(&self) -> bool {
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
        let started = std::time::Instant::now();
        let compacted = self.compact().await?;
        let metrics = &self.inner.metrics;
        metrics
            .compaction
            .observe(lookout_metrics::seconds_since(started));
        metrics.compacted_files.inc_by(compacted as u64);
        let collected = self.collect_garbage().await?;
        if dropped + compacted + collected > 0 {
            tracing::info!(dropped, compacted, collected, "maintenance");
        }
        Ok(())
    }
}
