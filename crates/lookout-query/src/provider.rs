//! The `TableProvider` over a table's Parquet files and buffered rows.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream,
};
use futures::StreamExt;
use lookout_storage::{FileMeta, StatValue, Storage, StorageError, TableSnapshot};
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

use crate::scan_exec::{LookoutScanExec, ScanSummary};

/// The object store URL Lookout's files are registered under.
pub(crate) const STORE_URL: &str = "lookout://data/";

pub(crate) fn storage_err(e: StorageError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A Lookout table as DataFusion sees it, bound to one snapshot.
#[derive(Debug)]
pub(crate) struct LookoutTable {
    storage: Storage,
    snapshot: TableSnapshot,
    /// The table's columns, all nullable: NOT NULL is enforced by the
    /// storage engine on write, with an error that names the column and
    /// row, rather than by DataFusion's generic batch check.
    schema: SchemaRef,
    /// Buffered rows under `schema`.
    buffered: Vec<RecordBatch>,
}

impl LookoutTable {
    pub(crate) fn new(storage: Storage, snapshot: TableSnapshot) -> Result<Self> {
        let fields: Vec<Field> = snapshot
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let buffered = snapshot
            .buffered
            .iter()
            .map(|b| b.clone().with_schema(Arc::clone(&schema)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(LookoutTable {
            storage,
            snapshot,
            schema,
            buffered,
        })
    }
}

fn scalar(v: &StatValue, dt: &DataType) -> ScalarValue {
    let s = match (v, dt) {
        (StatValue::Int(i), DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
            ScalarValue::TimestampMicrosecond(Some(*i), tz.clone())
        }
        (StatValue::Int(i), _) => ScalarValue::Int64(Some(*i)),
        (StatValue::Float(f), _) => ScalarValue::Float64(Some(*f)),
        (StatValue::Str(s), _) => ScalarValue::Utf8(Some(s.clone())),
        (StatValue::Bool(b), _) => ScalarValue::Boolean(Some(*b)),
    };
    s.cast_to(dt).unwrap_or(ScalarValue::Null)
}

/// File statistics from the manifest, in DataFusion's form (inexact, since
/// deletion vectors may hide rows), so the Parquet opener can skip whole
/// files and report them in `EXPLAIN ANALYZE`.
fn file_statistics(file: &FileMeta, schema: &Schema) -> Statistics {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let Some(s) = file.stats.get(f.name()) else {
                return ColumnStatistics::new_unknown();
            };
            let bound = |v: &Option<StatValue>| match v {
                Some(v) => match scalar(v, f.data_type()) {
                    ScalarValue::Null => Precision::Absent,
                    s => Precision::Inexact(s),
                },
                None => Precision::Absent,
            };
            ColumnStatistics {
                null_count: Precision::Inexact(s.null_count as usize),
                max_value: bound(&s.max),
                min_value: bound(&s.min),
                sum_value: Precision::Absent,
                distinct_count: Precision::Absent,
                byte_size: Precision::Absent,
            }
        })
        .collect();
    Statistics {
        num_rows: Precision::Inexact(file.rows as usize),
        total_byte_size: Precision::Inexact(file.size as usize),
        column_statistics: columns,
    }
}

/// Turns deleted positions into the rows to read.
fn row_selection(deleted: &roaring::RoaringBitmap, rows: u64) -> RowSelection {
    let mut selectors = Vec::new();
    let mut next = 0u64;
    for pos in deleted.iter().map(u64::from).filter(|p| *p < rows) {
        if pos > next {
            selectors.push(RowSelector::select((pos - next) as usize));
            selectors.push(RowSelector::skip(1));
        } else if let Some(last) = selectors.last_mut().filter(|s| s.skip) {
            last.row_count += 1;
        } else {
            selectors.push(RowSelector::skip(1));
        }
        next = pos + 1;
    }
    if next < rows {
        selectors.push(RowSelector::select((rows - next) as usize));
    }
    RowSelection::from(selectors)
}

fn partitioned_file(file: &FileMeta, schema: &Schema) -> Result<PartitionedFile> {
    let mut pf = PartitionedFile::new(file.path.clone(), file.size)
        .with_statistics(Arc::new(file_statistics(file, schema)));
    if let Some(deleted) = file.deletion_vector().map_err(storage_err)? {
        pf = pf.with_extension(ParquetRowSelection::new(row_selection(&deleted, file.rows)));
    }
    Ok(pf)
}

#[async_trait]
impl TableProvider for LookoutTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let predicate: Option<Arc<dyn PhysicalExpr>> = match conjunction(filters.to_vec()) {
            Some(expr) => {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                Some(state.create_physical_expr(expr, &df_schema)?)
            }
            None => None,
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        // Files ruled out by their manifest statistics are never planned.
        let set = FileSet {
            stats: self
                .snapshot
                .files
                .iter()
                .map(|f| file_statistics(f, &schema))
                .collect(),
            schema: &schema,
        };
        let keep = set.keep(predicate.as_ref());
        let live: Vec<&FileMeta> = self
            .snapshot
            .files
            .iter()
            .zip(keep)
            .filter_map(|(f, k)| k.then_some(f))
            .collect();
        tracing::debug!(table = %self.snapshot.def.name, files = self.snapshot.files.len(), scanned = live.len(), "file pruning");
        let files_scanned = live.len();
        if !live.is_empty() {
            let groups_wanted = state.config().target_partitions().max(1);
            let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups_wanted];
            let mut sizes = vec![0u64; groups_wanted];
            let mut files = live;
            files.sort_by_key(|f| std::cmp::Reverse(f.size));
            for f in files {
                let (i, _) = sizes
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| **s)
                    .unwrap_or((0, &0));
                sizes[i] += f.size;
                groups[i].push(partitioned_file(f, &schema)?);
            }
            let mut source = ParquetSource::new(Arc::clone(&schema))
                .with_table_parquet_options(state.table_options().parquet.clone());
            if let Some(p) = &predicate {
                source = source.with_predicate(Arc::clone(p));
            }
            let config =
                FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::new(source))
                    .with_file_groups(
                        groups
                            .into_iter()
                            .filter(|g| !g.is_empty())
                            .map(FileGroup::new)
                            .collect(),
                    )
                    .with_projection_indices(projection.cloned())?
                    .with_limit(limit)
                    .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if !self.buffered.is_empty() || inputs.is_empty() {
            let memory = MemorySourceConfig::try_new(
                std::slice::from_ref(&self.buffered),
                Arc::clone(&schema),
                projection.cloned(),
            )?
            .with_limit(limit);
            inputs.push(DataSourceExec::from_data_source(memory));
        }
        let summary = ScanSummary {
            table: self.snapshot.def.name.clone(),
            files_total: self.snapshot.files.len(),
            files_scanned,
            buffered_rows: self
                .snapshot
                .buffered
                .iter()
                .map(RecordBatch::num_rows)
                .sum(),
        };
        Ok(Arc::new(LookoutScanExec::new(
            summary,
            UnionExec::try_new(inputs)?,
        )))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op} is not supported; Lookout tables take appends only"
            )));
        }
        let sink = LookoutSink {
            storage: self.storage.clone(),
            table: self.snapshot.def.name.clone(),
            schema: self.schema(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
        let predicate = conjunction(filters)
            .map(|e| state.create_physical_expr(e, &df_schema))
            .transpose()?;
        let prune = |file: &FileMeta| -> bool {
            let one = FileSet {
                stats: vec![file_statistics(file, &schema)],
                schema: &schema,
            };
            one.keep(predicate.as_ref())
                .first()
                .copied()
                .unwrap_or(true)
        };
        let select = |batch: &RecordBatch| -> lookout_storage::Result<arrow::array::BooleanArray> {
            let Some(p) = &predicate else {
                return Ok(arrow::array::BooleanArray::from(vec![
                    true;
                    batch.num_rows()
                ]));
            };
            let value = p
                .evaluate(batch)
                .and_then(|v| v.into_array(batch.num_rows()))
                .map_err(|e| StorageError::InvalidData(e.to_string()))?;
            value
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .cloned()
                .ok_or_else(|| StorageError::InvalidData("DELETE condition is not boolean".into()))
        };
        let deleted = self
            .storage
            .delete_rows(&self.snapshot.def.name, prune, select)
            .await
            .map_err(storage_err)?;
        count_plan(deleted)
    }
}

/// A one-row, one-column `count` result, as DataFusion's DML plans return.
pub(crate) fn count_plan(count: u64) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(UInt64Array::from(vec![count]))],
    )?;
    Ok(DataSourceExec::from_data_source(
        MemorySourceConfig::try_new(&[vec![batch]], schema, None)?,
    ))
}

/// Manifest statistics of a set of files, for pruning before planning.
struct FileSet<'a> {
    stats: Vec<Statistics>,
    schema: &'a Schema,
}

impl FileSet<'_> {
    fn bound(
        &self,
        column: &datafusion::common::Column,
        max: bool,
    ) -> Option<arrow::array::ArrayRef> {
        let i = self.schema.index_of(&column.name).ok()?;
        let dt = self.schema.field(i).data_type();
        let values = self.stats.iter().map(|s| {
            let c = &s.column_statistics[i];
            match if max { &c.max_value } else { &c.min_value } {
                Precision::Exact(v) | Precision::Inexact(v) => v.clone(),
                Precision::Absent => ScalarValue::try_from(dt).unwrap_or(ScalarValue::Null),
            }
        });
        ScalarValue::iter_to_array(values).ok()
    }

    /// Which files may hold rows matching `predicate`.
    fn keep(&self, predicate: Option<&Arc<dyn PhysicalExpr>>) -> Vec<bool> {
        let all = vec![true; self.stats.len()];
        let Some(p) = predicate else { return all };
        #[allow(deprecated)]
        let Ok(pp) = datafusion::physical_optimizer::pruning::PruningPredicate::try_new(
            Arc::clone(p),
            Arc::new(self.schema.clone()),
        ) else {
            return all;
        };
        pp.prune(self).unwrap_or(all)
    }
}

impl datafusion::common::pruning::PruningStatistics for FileSet<'_> {
    fn min_values(&self, column: &datafusion::common::Column) -> Option<arrow::array::ArrayRef> {
        self.bound(column, false)
    }

    fn max_values(&self, column: &datafusion::common::Column) -> Option<arrow::array::ArrayRef> {
        self.bound(column, true)
    }

    fn num_containers(&self) -> usize {
        self.stats.len()
    }

    fn null_counts(&self, _column: &datafusion::common::Column) -> Option<arrow::array::ArrayRef> {
        None
    }

    fn row_counts(&self) -> Option<arrow::array::ArrayRef> {
        None
    }

    fn contained(
        &self,
        _column: &datafusion::common::Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<arrow::array::BooleanArray> {
        None
    }
}

/// Receives `INSERT` rows and writes them as one atomic batch.
#[derive(Debug)]
struct LookoutSink {
    storage: Storage,
    table: String,
    schema: SchemaRef,
}

impl DisplayAs for LookoutSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LookoutSink: table={}", self.table)
    }
}

#[async_trait]
impl DataSink for LookoutSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let mut batches = Vec::new();
        while let Some(b) = data.next().await {
            batches.push(b?);
        }
        if batches.is_empty() {
            return Ok(0);
        }
        let schema = batches[0].schema();
        let all = arrow::compute::concat_batches(&schema, &batches)?;
        self.storage
            .write(&self.table, all)
            .await
            .map_err(storage_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_rows_are_skipped_in_the_selection() {
        let mut deleted = roaring::RoaringBitmap::new();
        deleted.insert(0);
        deleted.insert(3);
        deleted.insert(4);
        let sel: Vec<RowSelector> = row_selection(&deleted, 7).into();
        assert_eq!(
            sel,
            vec![
                RowSelector::skip(1),
                RowSelector::select(2),
                RowSelector::skip(2),
                RowSelector::select(2)
            ]
        );
    }
}
