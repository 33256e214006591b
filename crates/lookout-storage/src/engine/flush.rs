//! Flushing buffered rows to Parquet files, one manifest commit per flush.

use std::sync::Arc;

use arrow::compute::concat_batches;
use tokio::task::JoinSet;

use super::{LoadGuard, Storage, join_result_tagged, poisoned};
use crate::batch::{self, PartitionSlice};
use crate::error::Result;
use crate::manifest::{FileMeta, Garbage};

impl Storage {
    /// Writes every buffered row to Parquet, commits, truncates the WAL.
    pub async fn flush(&self) -> Result<()> {
        let _guard = self.inner.commit.lock().await;
        self.flush_locked().await
    }

    pub(super) async fn flush_locked(&self) -> Result<()> {
        // A replica has no WAL and buffers nothing.
        let Some(wal) = self.inner.wal.as_ref() else {
            return Ok(());
        };
        let _load = LoadGuard::new(&self.inner.loads_in_flight);
        let (closed, work, manifest) = {
            let mut wal = wal.lock().map_err(poisoned)?;
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
        let had_rows = !work.is_empty();
        let started = std::time::Instant::now();
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
                        Arc::make_mut(&mut entry.files).extend(files);
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
        wal.lock().map_err(poisoned)?.remove_through(closed)?;
        if had_rows {
            self.inner
                .metrics
                .flush
                .observe(lookout_metrics::seconds_since(started));
        }
        Ok(())
    }
}
