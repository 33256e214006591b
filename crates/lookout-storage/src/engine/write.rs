//! Writes: rows validated, appended to the WAL in groups and buffered; bulk
//! loads straight to Parquet files committed in one manifest version.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use futures::{Stream, StreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tokio::sync::oneshot;

use super::load::PartitionSink;
use super::{Combine, LoadGuard, Storage, TablePart, WriteRequest, offset_error, poisoned};
use crate::batch;
use crate::error::{Result, StorageError};
use crate::manifest::FileMeta;
use crate::manifest::put_new;
use crate::schema::TableDef;
use crate::wal;

impl Storage {
    pub(super) fn check_horizon(&self, def: &TableDef, b: &RecordBatch) -> Result<()> {
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
        self.check_writable("write rows")?;
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

    pub(super) fn combiner(&self, table_id: u64) -> Option<Arc<dyn Combine>> {
        self.inner
            .combiners
            .read()
            .ok()
            .and_then(|c| c.get(&table_id).cloned())
    }

    /// Runs the table's combiner, if any, keeping the rows as they are if it fails.
    pub(super) async fn combine(&self, table_id: u64, rows: Vec<RecordBatch>) -> Vec<RecordBatch> {
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
        self.check_writable("load rows")?;
        let _load = LoadGuard::new(&self.inner.loads_in_flight);
        let (def, schema) = {
            let m = self.manifest()?;
            let def = m.table(table)?.def.clone();
            let schema = def.schema()?;
            (def, schema)
        };
        let mut sink = PartitionSink::new(self, &def, Arc::clone(&schema));
        let mut rows = 0u64;
        let streamed: Result<()> = async {
            while let Some(next) = batches.next().await {
                let input = next?;
                let b = batch::conform_keeping_dictionaries(&input, &def, &schema)
                    .map_err(|e| offset_error(e, rows))?;
                self.check_horizon(&def, &b)
                    .map_err(|e| offset_error(e, rows))?;
                rows += b.num_rows() as u64;
                let slices = batch::split_partitions(&b, &def)?;
                let earliest = slices.iter().map(|s| s.bucket_start).min();
                for slice in slices {
                    sink.send((slice.partition, slice.bucket_start), slice.batch)
                        .await?;
                }
                if let Some(earliest) = earliest {
                    sink.batch_sent(earliest);
                }
            }
            Ok(())
        }
        .await;
        drop(batches);
        let written = match streamed {
            Ok(()) => sink.finish().await?,
            // An encoder's own failure is why a send was refused.
            Err(e) => return Err(sink.abandon().await.unwrap_or(e)),
        };
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
                        Arc::make_mut(&mut entry.files).extend(files);
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
        self.inner.metrics.rows_via_bulk_load.inc_by(rows);
        Ok(rows)
    }

    /// Writes derived tables' rows as Parquet files, not yet committed.
    pub(super) async fn write_derived(
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

    /// Hands out file numbers without committing; gaps are harmless.
    pub(super) fn reserve_file_ids(&self, n: u64) -> u64 {
        self.inner.next_file.fetch_add(n, Ordering::Relaxed)
    }

    /// Concatenates one partition's rows, sorts them by time and writes them
    /// as one or more Parquet files (not yet committed).
    pub(super) async fn write_slices(
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
                let (bytes, stats) = batch::encode_parquet(&all)?;
                let times = batch::time_values(&all, &def)?;
                let meta = FileMeta {
                    path: path.clone(),
                    partition: key.0.clone(),
                    bucket_start: key.1,
                    min_time: arrow::compute::min(times).unwrap_or(0),
                    max_time: arrow::compute::max(times).unwrap_or(0),
                    rows: all.num_rows() as u64,
                    size: bytes.len() as u64,
                    stats,
                    deletes: None,
                };
                Ok(vec![(path, bytes, meta)])
            })
            .await
            .map_err(|e| StorageError::Corrupt(format!("encode task failed: {e}")))??;
        let mut out = Vec::new();
        for (path, bytes, meta) in encoded {
            put_new(self.inner.store.as_ref(), &Path::from(path.as_str()), bytes).await?;
            out.push(meta);
        }
        Ok(out)
    }
}
