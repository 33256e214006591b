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
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream,
};
use futures::StreamExt;
use lookout_storage::{FileMeta, StatValue, StorageError, TableDef, TableSnapshot};

use crate::access::authorize;
use crate::error::QueryError;
use crate::error::SqlState;
use crate::ext::Access;
use crate::ingest::Ingest;
use crate::table::cached_scan::{CachedScanExec, ScanFile, kept_rows};
use crate::table::column_cache::ColumnCache;
use crate::table::returning::Returned;
use crate::table::scan_exec::{LookoutScanExec, ScanSummary};
use crate::transaction::Block;

/// The object store URL Lookout's files are registered under.
pub(crate) const STORE_URL: &str = "lookout://data/";

pub(crate) fn storage_err(e: StorageError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn query_err(e: QueryError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A Lookout table as DataFusion sees it. Planning binds only its
/// definition; each execution scans the snapshot it takes when it starts
/// (see [`QuerySnapshots`]), so a plan kept by a prepared statement never
/// answers from the data as it was when it was prepared.
#[derive(Debug)]
pub(crate) struct LookoutTable {
    ingest: Ingest,
    def: TableDef,
    /// The table's columns as planned, all nullable: NOT NULL is enforced
    /// by the storage engine on write, with an error that names the column
    /// and row, rather than by DataFusion's generic batch check.
    schema: SchemaRef,
    /// The columns as declared, NOT NULL included, which the catalog shows.
    declared: SchemaRef,
}

impl LookoutTable {
    pub(crate) fn new(ingest: Ingest, def: TableDef) -> Result<Self> {
        let declared = def.schema().map_err(storage_err)?;
        let fields: Vec<Field> = declared
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Ok(LookoutTable {
            ingest,
            def,
            schema: Arc::new(Schema::new(fields)),
            declared,
        })
    }

    /// The columns as declared (`pg_attribute.attnotnull`, psql's `\d`);
    /// queries plan with [`TableProvider::schema`], all nullable.
    pub(crate) fn declared_schema(&self) -> SchemaRef {
        Arc::clone(&self.declared)
    }

    /// The snapshot this execution reads, and its buffered rows under the
    /// planned columns.
    fn snapshot(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
    ) -> Result<(TableSnapshot, Vec<RecordBatch>)> {
        let storage = self.ingest.storage();
        let snapshot = match state.config().get_extension::<QuerySnapshots>() {
            Some(snapshots) => {
                let block = state.config().get_extension::<Block>();
                snapshots.of(storage, &self.def.name, block.as_deref())?
            }
            None => storage.snapshot(&self.def.name).map_err(storage_err)?,
        };
        let filtered: std::collections::HashSet<&str> = filters
            .iter()
            .flat_map(|f| f.column_refs())
            .map(|c| c.name.as_str())
            .collect();
        let needed = |i: usize| {
            projection.is_none_or(|p| p.contains(&i))
                || filtered.contains(self.schema.field(i).name().as_str())
                || self.schema.field(i).name() == &self.def.options.time_column
        };
        let buffered = fit_to_plan(&snapshot, &self.schema, needed)?;
        Ok((snapshot, buffered))
    }
}

/// The snapshots one statement reads, one per table, each taken when the
/// statement first scans the table: every scan of a table in the statement
/// (self-joins, subqueries, versioned views) sees the same rows. Set in the
/// session configuration of each execution.
#[derive(Debug, Default)]
pub(crate) struct QuerySnapshots {
    tables: std::sync::Mutex<std::collections::HashMap<String, TableSnapshot>>,
}

impl QuerySnapshots {
    fn of(
        &self,
        storage: &lookout_storage::Storage,
        table: &str,
        block: Option<&Block>,
    ) -> Result<TableSnapshot> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = tables.get(table) {
            return Ok(s.clone());
        }
        let mut snapshot = storage.snapshot(table).map_err(storage_err)?;
        if let Some(block) = block {
            block.overlay(&mut snapshot).map_err(query_err)?;
        }
        tables.insert(table.to_string(), snapshot.clone());
        Ok(snapshot)
    }
}

/// Buffered rows with the columns the plan was made for. The table may have
/// gained columns since (the plan does not show them). A column the scan
/// reads (`needed`) that is gone or changed type is refused, as PostgreSQL
/// refuses a cached plan whose result type would change; one it does not
/// read is filled with NULLs.
fn fit_to_plan(
    snapshot: &TableSnapshot,
    planned: &SchemaRef,
    needed: impl Fn(usize) -> bool,
) -> Result<Vec<RecordBatch>> {
    let current = &snapshot.schema;
    let same = current.fields().len() == planned.fields().len()
        && current
            .fields()
            .iter()
            .zip(planned.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    if same {
        return snapshot
            .buffered
            .iter()
            .map(|b| Ok(b.clone().with_schema(Arc::clone(planned))?))
            .collect();
    }
    let mut sources = Vec::with_capacity(planned.fields().len());
    for (i, field) in planned.fields().iter().enumerate() {
        match current.index_of(field.name()) {
            Ok(c) if current.field(c).data_type() == field.data_type() => sources.push(Some(c)),
            _ if !needed(i) => sources.push(None),
            _ => {
                return Err(DataFusionError::External(Box::new(
                    crate::error::QueryError::new(
                        SqlState::FeatureNotSupported,
                        format!(
                            "cached plan must not change result type: column \"{}\" of \"{}\" changed since the statement was prepared; prepare it again",
                            field.name(),
                            snapshot.def.name
                        ),
                    ),
                )));
            }
        }
    }
    snapshot
        .buffered
        .iter()
        .map(|b| {
            let columns = sources
                .iter()
                .zip(planned.fields())
                .map(|(source, field)| match source {
                    Some(c) => Arc::clone(b.column(*c)),
                    None => arrow::array::new_null_array(field.data_type(), b.num_rows()),
                })
                .collect();
            Ok(RecordBatch::try_new(Arc::clone(planned), columns)?)
        })
        .collect()
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

fn scan_file(file: &FileMeta, partition_column: Option<&String>) -> Result<ScanFile> {
    Ok(ScanFile {
        path: file.path.clone(),
        size: file.size,
        rows: file.rows as usize,
        deleted: file.deletion_vector().map_err(storage_err)?.map(Arc::new),
        partition: partition_column.map(|column| (column.clone(), file.partition.clone())),
    })
}

/// The rows (deleted ones included) and bytes of a scan's files: inexact,
/// and enough for the join selection to build its hash table on the
/// smaller side.
fn size_statistics<'a>(files: impl Iterator<Item = &'a FileMeta>, schema: &Schema) -> Statistics {
    let (rows, bytes) = files.fold((0usize, 0usize), |(rows, bytes), f| {
        (rows + f.rows as usize, bytes + f.size as usize)
    });
    let mut stats = Statistics::new_unknown(schema);
    stats.num_rows = Precision::Inexact(rows);
    stats.total_byte_size = Precision::Inexact(bytes);
    stats
}

fn partitioned_file(file: &FileMeta, stats: Statistics) -> Result<PartitionedFile> {
    let mut pf =
        PartitionedFile::new(file.path.clone(), file.size).with_statistics(Arc::new(stats));
    if let Some(deleted) = file.deletion_vector().map_err(storage_err)? {
        pf = pf.with_extension(ParquetRowSelection::new(kept_rows(
            &deleted,
            file.rows as usize,
        )));
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
        let time_column = &self.def.options.time_column;
        Ok(filters
            .iter()
            .map(|f| match time_bounds(f, time_column) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        authorize(state, &self.def.name, Access::Read)?;
        let schema = self.schema();
        let (snapshot, buffered) = self.snapshot(state, projection, filters)?;
        let predicate: Option<Arc<dyn PhysicalExpr>> = match conjunction(filters.to_vec()) {
            Some(expr) => {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                Some(state.create_physical_expr(expr, &df_schema)?)
            }
            None => None,
        };
        let time_column = &self.def.options.time_column;
        let mut exact = Vec::new();
        let mut bounds: Vec<(Operator, i64)> = Vec::new();
        for f in filters {
            if let Some(b) = time_bounds(f, time_column) {
                exact.push(f.clone());
                bounds.extend(b);
            }
        }
        // A file outside the time range is dropped by its recorded time
        // range alone, so a window's planning cost follows the window, not
        // the history. The rest are ruled out by their manifest statistics
        // (computed only for them, and passed on to the Parquet scan).
        let in_window: Vec<&FileMeta> = snapshot
            .files
            .iter()
            .filter(|f| bounds.iter().all(|b| overlaps(f, *b)))
            .collect();
        let set = FileSet {
            stats: in_window
                .iter()
                .map(|f| file_statistics(f, &schema))
                .collect(),
            schema: &schema,
        };
        let keep = set.keep(predicate.as_ref());
        let live: Vec<(&FileMeta, Statistics)> = in_window
            .into_iter()
            .zip(set.stats)
            .zip(keep)
            .filter_map(|(f, k)| k.then_some(f))
            .collect();
        let files_scanned = live.len();

        // Time-range filters were declared exact: files wholly inside the
        // range are read without them (the time column need not even be
        // decoded); files that straddle a bound, and buffered rows, are
        // filtered here.
        let (covered, mut straddling): (Vec<_>, Vec<_>) = live
            .into_iter()
            .partition(|(f, _)| bounds.iter().all(|b| inside(f, *b)));

        let scan = |files: Vec<(&FileMeta, Statistics)>,
                    proj: Option<Vec<usize>>,
                    limit: Option<usize>| {
            self.parquet_exec(state, files, proj, predicate.as_ref(), limit)
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let cache = state
            .config()
            .get_extension::<ColumnCache>()
            .filter(|c| c.enabled() && self.ingest.cached(&self.def));
        if let Some(cache) = &cache {
            // Filters are evaluated on the held columns before rows are
            // copied; the time bounds only where a file straddles them.
            let inexact: Vec<Expr> = filters
                .iter()
                .filter(|f| time_bounds(f, time_column).is_none())
                .cloned()
                .collect();
            let cached =
                |files, filter| self.cached_exec(state, cache, files, projection, filter, limit);
            if !covered.is_empty() {
                inputs.push(cached(covered, conjunction(inexact))?);
            }
            if !straddling.is_empty() {
                let files = std::mem::take(&mut straddling);
                inputs.push(cached(files, conjunction(filters.to_vec()))?);
            }
        } else if !covered.is_empty() {
            inputs.push(scan(covered, projection.cloned(), limit)?);
        }
        let exact_filter = conjunction(exact);
        let needs_filter = |plan: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
            match &exact_filter {
                Some(f) => filter_then_project(state, plan, f, &schema, projection, time_column),
                None => Ok(plan),
            }
        };
        let inner_projection = match exact_filter {
            Some(_) => with_column(projection, &schema, time_column),
            None => projection.cloned(),
        };
        let inner_limit = if exact_filter.is_some() { None } else { limit };
        if !straddling.is_empty() {
            inputs.push(needs_filter(scan(
                straddling,
                inner_projection.clone(),
                inner_limit,
            )?)?);
        }
        if !buffered.is_empty() || inputs.is_empty() {
            let memory = MemorySourceConfig::try_new(
                std::slice::from_ref(&buffered),
                Arc::clone(&schema),
                inner_projection,
            )?
            .with_limit(inner_limit);
            inputs.push(needs_filter(DataSourceExec::from_data_source(memory))?);
        }
        let summary = ScanSummary {
            table: self.def.name.clone(),
            files_total: snapshot.files.len(),
            files_scanned,
            buffered_rows: buffered.iter().map(RecordBatch::num_rows).sum(),
            partition_column: self.def.options.partition_column.clone(),
        };
        Ok(Arc::new(LookoutScanExec::new(
            summary,
            Arc::clone(&snapshot.pin),
            UnionExec::try_new(inputs)?,
        )))
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        authorize(state, &self.def.name, Access::Write)?;
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op} is not supported; Lookout tables take appends only"
            )));
        }
        let sink = LookoutSink {
            ingest: self.ingest.clone(),
            table: self.def.name.clone(),
            schema: self.schema(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        authorize(state, &self.def.name, Access::Write)?;
        count_plan(self.remove_rows(state, filters).await?)
    }

    async fn truncate(&self, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        authorize(state, &self.def.name, Access::Write)?;
        count_plan(self.remove_rows(state, Vec::new()).await?)
    }

    /// `UPDATE`: the old versions of the rows are deleted (by deletion
    /// vector) and their new versions written, in one commit (or with the
    /// transaction block).
    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        authorize(state, &self.def.name, Access::Write)?;
        let table = &self.def.name;
        let storage = self.ingest.storage();
        let derived = self.ingest.derived_from(table).map_err(query_err)?;
        if let Some(first) = derived.first() {
            return Err(query_err(QueryError::unsupported(format!(
                "UPDATE of \"{table}\", from which \"{}\" is derived: derived rows cannot take back the old values; delete and insert instead",
                first.target()
            ))));
        }
        let schema = self.schema();
        let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
        let mut assigned: Vec<Option<Arc<dyn PhysicalExpr>>> = vec![None; schema.fields().len()];
        for (name, expr) in assignments {
            let i = schema.index_of(&name)?;
            assigned[i] = Some(state.create_physical_expr(expr, &df_schema)?);
        }
        let filter = RowFilter::new(state, &schema, filters)?;
        let returned = state.config().get_extension::<Returned>();
        let (block, own) = match state.config().get_extension::<Block>() {
            Some(block) => (block, false),
            None => (Arc::new(Block::default()), true),
        };
        let mut old = block
            .take_pending(table, |b| filter.select(b).map_err(QueryError::from))
            .map_err(query_err)?;
        let mut count: u64 = old.iter().map(|b| b.num_rows() as u64).sum();
        let mut found = storage
            .mark_rows(
                table,
                &block.marks(table),
                |f| filter.prune(f),
                |b| filter.select(b),
                true,
            )
            .await
            .map_err(storage_err)?;
        count += found.count;
        old.append(&mut found.rows);
        block.absorb(table, found);
        let def = storage.table(table).map_err(storage_err)?;
        let stored = def.schema().map_err(storage_err)?;
        for rows in old {
            let mut columns = Vec::with_capacity(schema.fields().len());
            for (i, field) in schema.fields().iter().enumerate() {
                let column = match &assigned[i] {
                    Some(expr) => {
                        let value = expr.evaluate(&rows)?.into_array(rows.num_rows())?;
                        arrow::compute::cast(&value, field.data_type())?
                    }
                    None => Arc::clone(rows.column(i)),
                };
                columns.push(column);
            }
            let new = RecordBatch::try_new(Arc::clone(&schema), columns)?;
            let new = storage.validate(&def, &stored, &new).map_err(storage_err)?;
            if let Some(returned) = &returned {
                returned.keep(new.clone());
            }
            block.insert(table, new, true).map_err(query_err)?;
        }
        if own {
            self.ingest.commit(block.take()).await.map_err(query_err)?;
        }
        count_plan(count)
    }
}

/// The rows a `DELETE` or `UPDATE` condition picks.
struct RowFilter<'a> {
    predicate: Option<Arc<dyn PhysicalExpr>>,
    schema: &'a SchemaRef,
}

impl<'a> RowFilter<'a> {
    fn new(state: &dyn Session, schema: &'a SchemaRef, filters: Vec<Expr>) -> Result<Self> {
        let df_schema = DFSchema::try_from(Arc::clone(schema))?;
        let predicate = conjunction(filters)
            .map(|e| state.create_physical_expr(e, &df_schema))
            .transpose()?;
        Ok(RowFilter { predicate, schema })
    }

    /// Whether a file may hold picked rows, by its statistics.
    fn prune(&self, file: &FileMeta) -> bool {
        let one = FileSet {
            stats: vec![file_statistics(file, self.schema)],
            schema: self.schema,
        };
        one.keep(self.predicate.as_ref())
            .first()
            .copied()
            .unwrap_or(true)
    }

    /// Which rows of `batch` are picked.
    fn select(&self, batch: &RecordBatch) -> lookout_storage::Result<arrow::array::BooleanArray> {
        let Some(p) = &self.predicate else {
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
            .ok_or_else(|| StorageError::InvalidData("the condition is not boolean".into()))
    }
}

impl LookoutTable {
    /// Deletes the rows `filters` pick (all rows without filters): at once,
    /// or, inside a transaction block, when it commits. Returns how many.
    async fn remove_rows(&self, state: &dyn Session, filters: Vec<Expr>) -> Result<u64> {
        let table = &self.def.name;
        let schema = self.schema();
        let filter = RowFilter::new(state, &schema, filters)?;
        let storage = self.ingest.storage();
        let returned = state.config().get_extension::<Returned>();
        let (block, own_block) = match (state.config().get_extension::<Block>(), &returned) {
            (Some(block), _) => (block, false),
            // Rows to return are found, then deleted, in a block of its own.
            (None, Some(_)) => (Arc::new(Block::default()), true),
            (None, None) => {
                return storage
                    .delete_rows(table, |f| filter.prune(f), |b| filter.select(b))
                    .await
                    .map_err(storage_err);
            }
        };
        let own = block
            .take_pending(table, |b| filter.select(b).map_err(QueryError::from))
            .map_err(query_err)?;
        let mut found = storage
            .mark_rows(
                table,
                &block.marks(table),
                |f| filter.prune(f),
                |b| filter.select(b),
                returned.is_some(),
            )
            .await
            .map_err(storage_err)?;
        let count = found.count + own.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        if let Some(returned) = &returned {
            own.into_iter()
                .chain(std::mem::take(&mut found.rows))
                .for_each(|rows| returned.keep(rows));
        }
        block.absorb(table, found);
        if own_block {
            self.ingest.commit(block.take()).await.map_err(query_err)?;
        }
        Ok(count)
    }
}

impl LookoutTable {
    /// A Parquet scan of `files`, balanced over the session's partitions.
    fn parquet_exec(
        &self,
        state: &dyn Session,
        files: Vec<(&FileMeta, Statistics)>,
        projection: Option<Vec<usize>>,
        predicate: Option<&Arc<dyn PhysicalExpr>>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let total = size_statistics(files.iter().map(|(f, _)| *f), &schema);
        let groups = balance(files, state.config().target_partitions())
            .into_iter()
            .map(|g| {
                let stats = size_statistics(g.iter().map(|(f, _)| *f), &schema);
                g.into_iter()
                    .map(|(f, stats)| partitioned_file(f, stats))
                    .collect::<Result<Vec<_>>>()
                    .map(|files| FileGroup::new(files).with_statistics(Arc::new(stats)))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut source = ParquetSource::new(Arc::clone(&schema))
            .with_table_parquet_options(state.table_options().parquet.clone());
        if let Some(p) = predicate {
            source = source.with_predicate(Arc::clone(p));
        }
        let config =
            FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::new(source))
                .with_file_groups(groups)
                .with_projection_indices(projection)?
                .with_limit(limit)
                .with_statistics(total)
                .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

impl LookoutTable {
    /// A scan of `files` through the column cache producing `projection`
    /// of the rows `filter` accepts.
    fn cached_exec(
        &self,
        state: &dyn Session,
        cache: &Arc<ColumnCache>,
        files: Vec<(&FileMeta, Statistics)>,
        projection: Option<&Vec<usize>>,
        filter: Option<Expr>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let mut read: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let output: Vec<usize> = (0..read.len()).collect();
        if let Some(filter) = &filter {
            for column in filter.column_refs() {
                let i = schema.index_of(&column.name)?;
                if !read.contains(&i) {
                    read.push(i);
                }
            }
        }
        let read = Arc::new(schema.project(&read)?);
        let predicate = match filter {
            Some(filter) => {
                let df_schema = DFSchema::try_from(Arc::clone(&read))?;
                Some(state.create_physical_expr(filter, &df_schema)?)
            }
            None => None,
        };
        let groups = balance(files, state.config().target_partitions())
            .into_iter()
            .map(|g| {
                g.into_iter()
                    .map(|(f, _)| scan_file(f, self.def.options.partition_column.as_ref()))
                    .collect()
            })
            .collect::<Result<Vec<Vec<ScanFile>>>>()?;
        Ok(Arc::new(CachedScanExec::new(
            ObjectStoreUrl::parse(STORE_URL)?,
            groups,
            read,
            predicate,
            output,
            Arc::clone(cache),
            limit,
        )?))
    }
}

/// `files` in at most `partitions` groups of about the same bytes.
fn balance(
    mut files: Vec<(&FileMeta, Statistics)>,
    partitions: usize,
) -> Vec<Vec<(&FileMeta, Statistics)>> {
    let wanted = partitions.max(1);
    let mut groups: Vec<Vec<(&FileMeta, Statistics)>> = Vec::new();
    groups.resize_with(wanted, Vec::new);
    let mut sizes = vec![0u64; wanted];
    files.sort_by_key(|(f, _)| std::cmp::Reverse(f.size));
    for file in files {
        let (i, _) = sizes
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| **s)
            .unwrap_or((0, &0));
        sizes[i] += file.0.size;
        groups[i].push(file);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// Microseconds of a timestamp literal, if exactly representable.
fn literal_micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampSecond(Some(x), _) => x.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(x), _) => x.checked_mul(1000),
        ScalarValue::TimestampMicrosecond(Some(x), _) => Some(*x),
        ScalarValue::TimestampNanosecond(Some(x), _) if x % 1000 == 0 => Some(x / 1000),
        _ => None,
    }
}

/// The bounds a filter puts on the time column, if it is nothing but a
/// comparison of that column with a timestamp literal (or a BETWEEN).
fn time_bounds(expr: &Expr, time_column: &str) -> Option<Vec<(Operator, i64)>> {
    let is_time = |e: &Expr| matches!(e, Expr::Column(c) if c.name == time_column);
    match expr {
        Expr::BinaryExpr(b) => {
            let op = match b.op {
                Operator::Gt | Operator::GtEq | Operator::Lt | Operator::LtEq => b.op,
                _ => return None,
            };
            match (b.left.as_ref(), b.right.as_ref()) {
                (l, Expr::Literal(v, _)) if is_time(l) => Some(vec![(op, literal_micros(v)?)]),
                (Expr::Literal(v, _), r) if is_time(r) => {
                    Some(vec![(op.swap()?, literal_micros(v)?)])
                }
                _ => None,
            }
        }
        Expr::Between(b) if !b.negated && is_time(&b.expr) => {
            match (b.low.as_ref(), b.high.as_ref()) {
                (Expr::Literal(lo, _), Expr::Literal(hi, _)) => Some(vec![
                    (Operator::GtEq, literal_micros(lo)?),
                    (Operator::LtEq, literal_micros(hi)?),
                ]),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether some row of `file` may satisfy `time <op> bound`.
fn overlaps(file: &FileMeta, (op, bound): (Operator, i64)) -> bool {
    match op {
        Operator::GtEq => file.max_time >= bound,
        Operator::Gt => file.max_time > bound,
        Operator::Lt => file.min_time < bound,
        Operator::LtEq => file.min_time <= bound,
        _ => true,
    }
}

/// Whether every row of `file` satisfies `time <op> bound`.
fn inside(file: &FileMeta, (op, bound): (Operator, i64)) -> bool {
    match op {
        Operator::GtEq => file.min_time >= bound,
        Operator::Gt => file.min_time > bound,
        Operator::Lt => file.max_time < bound,
        Operator::LtEq => file.max_time <= bound,
        _ => false,
    }
}

/// The projection plus the time column (needed to filter on it).
fn with_column(
    projection: Option<&Vec<usize>>,
    schema: &Schema,
    column: &str,
) -> Option<Vec<usize>> {
    let mut p = projection?.clone();
    if let Ok(i) = schema.index_of(column)
        && !p.contains(&i)
    {
        p.push(i);
    }
    Some(p)
}

/// Applies the exact time filter to `plan` (whose columns are the projection
/// plus the time column), then narrows back to the projection.
fn filter_then_project(
    state: &dyn Session,
    plan: Arc<dyn ExecutionPlan>,
    filter: &Expr,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
    time_column: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    let input_schema = plan.schema();
    let df_schema = DFSchema::try_from(Arc::clone(&input_schema))?;
    let predicate = state.create_physical_expr(filter.clone(), &df_schema)?;
    let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, plan)?);
    let wanted = match projection {
        Some(p) => p.len(),
        None => schema.fields().len(),
    };
    if input_schema.fields().len() == wanted {
        return Ok(filtered);
    }
    // The time column was appended last; keep the others.
    debug_assert_eq!(input_schema.field(wanted).name(), time_column);
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = input_schema
        .fields()
        .iter()
        .take(wanted)
        .enumerate()
        .map(|(i, f)| {
            (
                Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                f.name().clone(),
            )
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, filtered)?))
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
        let pruning = predicate.and_then(|p| {
            PruningPredicateBuilder::new()
                .with_file_schema(Arc::new(self.schema.clone()))
                .build(Arc::clone(p))
        });
        match pruning {
            Some(pp) => pp.prune(self).unwrap_or(all),
            None => all,
        }
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
    ingest: Ingest,
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
        context: &Arc<TaskContext>,
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
        let returned = context.session_config().get_extension::<Returned>();
        let block = context.session_config().get_extension::<Block>();
        if block.is_some() || returned.is_some() {
            let rows = all.num_rows() as u64;
            let storage = self.ingest.storage();
            let def = storage.table(&self.table).map_err(storage_err)?;
            let checked = storage
                .validate(&def, &def.schema().map_err(storage_err)?, &all)
                .map_err(storage_err)?;
            if let Some(returned) = returned {
                returned.keep(checked.clone());
            }
            if let Some(block) = block {
                block
                    .insert(&self.table, checked, false)
                    .map_err(query_err)?;
                return Ok(rows);
            }
        }
        self.ingest
            .write(&self.table, all)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }
}
