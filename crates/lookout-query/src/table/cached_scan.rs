//! The scan of a table's Parquet files through the [`ColumnCache`]: a
//! file's columns are decoded once and served from memory afterwards, so
//! repeated dashboard and alert queries over recent data skip zstd and
//! Parquet decoding (what DuckDB's native tables skip by keeping their
//! columns in the buffer pool).
//!
//! Per file, at execution: if every column the plan reads is held, its rows
//! are slices of the held arrays with the file's deletion vector applied;
//! otherwise the missing columns are decoded whole and kept, unless the file
//! would take more than an eighth of the budget, in which case it is
//! streamed from Parquet in batches like an uncached scan, so one very large
//! file neither evicts everything nor sits in memory at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, StringArray,
};
use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::basic::Encoding;
use roaring::RoaringBitmap;

use crate::table::column_cache::{ColumnCache, HeldColumn};
use crate::table::file_filter::{FileFilter, RowFilter};

/// A file may take at most this share of the budget to be kept whole.
const LARGEST_SHARE: usize = 8;

/// One stored file as the scan reads it.
#[derive(Debug, Clone)]
pub(crate) struct ScanFile {
    /// Object path relative to the store root.
    pub(crate) path: String,
    pub(crate) size: u64,
    /// Rows written, deleted ones included.
    pub(crate) rows: usize,
    pub(crate) deleted: Option<Arc<RoaringBitmap>>,
    /// The table's partition column and the one value every row of this
    /// file holds in it (None: NULL), when the table has one. The scan makes
    /// that column from the value instead of reading, caching and copying
    /// it.
    pub(crate) partition: Option<(String, Option<String>)>,
}

impl ScanFile {
    /// The value every row holds in `field`, if `field` is the file's
    /// partition column.
    fn one_value_of(&self, field: &FieldRef) -> Option<&Option<String>> {
        let (column, value) = self.partition.as_ref()?;
        (field.name() == column && *field.data_type() == DataType::Utf8).then_some(value)
    }

    fn live_rows(&self) -> usize {
        let deleted = self.deleted.as_ref().map_or(0, |d| d.len() as usize);
        self.rows.saturating_sub(deleted)
    }
}

/// Scans stored files through the column cache, one group of files per
/// output partition.
#[derive(Debug)]
pub(crate) struct CachedScanExec {
    groups: Vec<Vec<ScanFile>>,
    /// The columns read from the files: those produced and those the
    /// filter needs.
    read: SchemaRef,
    /// Rows to keep, over the columns read; evaluated on slices of the
    /// held columns before anything is copied.
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// The columns produced, as positions in `read`.
    output: Vec<usize>,
    /// The columns produced (the plan's projection of the table).
    schema: SchemaRef,
    /// Where the files are, as registered with the runtime.
    store: ObjectStoreUrl,
    cache: Arc<ColumnCache>,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CachedScanExec {
    /// A scan of `groups` (in `store`) reading the columns `read`, keeping
    /// the rows `filter` accepts and producing the columns at positions
    /// `output`.
    pub(crate) fn new(
        store: ObjectStoreUrl,
        groups: Vec<Vec<ScanFile>>,
        read: SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
        output: Vec<usize>,
        cache: Arc<ColumnCache>,
        limit: Option<usize>,
    ) -> Result<Self> {
        let schema = Arc::new(read.project(&output)?);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(groups.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(CachedScanExec {
            store,
            groups,
            read,
            filter,
            output,
            schema,
            cache,
            limit,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for CachedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: usize = self.groups.iter().map(Vec::len).sum();
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "CachedParquetScan: files={files}, groups={}, columns=[{}]",
            self.groups.len(),
            columns.join(", ")
        )?;
        if let Some(filter) = &self.filter {
            write!(f, ", filter={filter}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for CachedScanExec {
    fn name(&self) -> &'static str {
        "CachedParquetScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        match &self.filter {
            Some(filter) => f(filter),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "CachedParquetScan has no children".into(),
            ))
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let files: Vec<&ScanFile> = match partition {
            Some(p) => self.groups.get(p).into_iter().flatten().collect(),
            None => self.groups.iter().flatten().collect(),
        };
        let mut stats = Statistics::new_unknown(&self.schema);
        let rows: usize = files.iter().map(|f| f.live_rows()).sum();
        stats.num_rows = Precision::Inexact(self.limit.map_or(rows, |l| rows.min(l)));
        stats.total_byte_size = Precision::Inexact(files.iter().map(|f| f.size as usize).sum());
        Ok(Arc::new(stats))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let files = self.groups.get(partition).cloned().unwrap_or_default();
        let store = context.runtime_env().object_store(&self.store)?;
        let counters = Counters {
            from_cache: MetricBuilder::new(&self.metrics).counter("columns_from_cache", partition),
            decoded: MetricBuilder::new(&self.metrics).counter("columns_decoded", partition),
            streamed: MetricBuilder::new(&self.metrics).counter("files_streamed", partition),
            from_partition: MetricBuilder::new(&self.metrics)
                .counter("columns_from_partition_value", partition),
            ruled_out: MetricBuilder::new(&self.metrics)
                .counter("files_ruled_out_by_partition_value", partition),
        };
        let reader = FileReader {
            cache: Arc::clone(&self.cache),
            readers: DefaultParquetFileReaderFactory::new(store),
            partition,
            metrics: self.metrics.clone(),
            schema: Arc::clone(&self.read),
            filter: self.filter.clone(),
            output: self.output.clone(),
            produced: Arc::clone(&self.schema),
            repeated: HashMap::new(),
            batch_size: context.session_config().batch_size().max(1),
            counters,
        };
        let state = ReadState {
            reader,
            files: files.into(),
            current: None,
            remaining: self.limit,
        };
        let stream = futures::stream::try_unfold(state, ReadState::next);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

#[derive(Debug)]
struct Counters {
    from_cache: Count,
    decoded: Count,
    streamed: Count,
    /// Partition columns made from the file's one value.
    from_partition: Count,
    /// Files not read: the filter rules out their partition value.
    ruled_out: Count,
}

/// Picks the rows and columns a scan produces from the rows it reads.
struct RowPicker {
    /// The scan's filter as it stands for the file read (`None`: every row).
    filter: Option<RowFilter>,
    output: Vec<usize>,
    schema: SchemaRef,
}

impl RowPicker {
    /// The rows of `batch` that `keep` (if given) marks and the filter
    /// accepts, with the produced columns; copies only when rows are left
    /// out. Deleted rows go first: the filter never sees them, as it never
    /// sees them through a Parquet row selection (`10 / n` must not fail on
    /// a deleted row where `n` is 0).
    ///
    /// `codes[i]` holds column `i`'s codes where the cache has them (see
    /// [`HeldColumn`]); `repeated[i]` says column `i` of `batch` holds one
    /// value in every row: any of its slices is as good as a copy of the
    /// rows kept.
    fn pick(
        &self,
        batch: &RecordBatch,
        codes: &[Option<ArrayRef>],
        repeated: &[bool],
        keep: Option<BooleanArray>,
    ) -> Result<RecordBatch> {
        let (live, live_codes);
        let (batch, codes) = match keep {
            Some(keep) => {
                let columns;
                (columns, live_codes) = keep_rows(batch.columns(), codes, repeated, &keep)?;
                live = RecordBatch::try_new_with_options(
                    batch.schema(),
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(keep.true_count())),
                )?;
                (&live, live_codes.as_slice())
            }
            None => (batch, codes),
        };
        let accepted = match &self.filter {
            Some(filter) => Some(filter.evaluate(batch, codes)?),
            None => None,
        };
        let columns: Vec<ArrayRef> = self
            .output
            .iter()
            .map(|i| Arc::clone(batch.column(*i)))
            .collect();
        let (columns, rows) = match accepted {
            Some(mask) if mask.true_count() < batch.num_rows() => {
                // NULL from the filter leaves the row out, as WHERE does.
                let mask = match mask.null_count() {
                    0 => mask,
                    _ => arrow::compute::prep_null_mask_filter(&mask),
                };
                let repeated: Vec<bool> = self.output.iter().map(|i| repeated[*i]).collect();
                let codes: Vec<Option<ArrayRef>> =
                    self.output.iter().map(|i| codes[*i].clone()).collect();
                let (columns, _) = keep_rows(&columns, &codes, &repeated, &mask)?;
                (columns, mask.true_count())
            }
            _ => (columns, batch.num_rows()),
        };
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

/// The rows of `columns` that `mask` (without NULLs) marks, with the codes
/// of those rows where `codes` has them: a column of one repeated value is
/// sliced, not copied, and a column with codes is made from its kept codes.
fn keep_rows(
    columns: &[ArrayRef],
    codes: &[Option<ArrayRef>],
    repeated: &[bool],
    mask: &BooleanArray,
) -> Result<(Vec<ArrayRef>, Vec<Option<ArrayRef>>)> {
    let kept = mask.true_count();
    let mut builder = arrow::compute::FilterBuilder::new(mask);
    if columns.len() > 1 {
        builder = builder.optimize();
    }
    let predicate = builder.build();
    let mut kept_columns = Vec::with_capacity(columns.len());
    let mut kept_codes = Vec::with_capacity(columns.len());
    for ((column, codes), &one_value) in columns.iter().zip(codes).zip(repeated) {
        let (values, codes) = match (one_value, codes) {
            (true, _) => (column.slice(0, kept), None),
            (false, Some(codes)) => {
                let codes = predicate.filter(codes)?;
                (
                    arrow::compute::cast(&codes, column.data_type())?,
                    Some(codes),
                )
            }
            (false, None) => (predicate.filter(column)?, None),
        };
        kept_columns.push(values);
        kept_codes.push(codes);
    }
    Ok((kept_columns, kept_codes))
}

/// Reads one file at a time into batches of the scan's columns.
struct FileReader {
    cache: Arc<ColumnCache>,
    readers: DefaultParquetFileReaderFactory,
    partition: usize,
    metrics: ExecutionPlanMetricsSet,
    schema: SchemaRef,
    /// The scan's filter over `schema`, made for each file it reads.
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// The columns produced, as positions in `schema`, and their schema.
    output: Vec<usize>,
    produced: SchemaRef,
    batch_size: usize,
    counters: Counters,
    /// Partition columns made so far, by value (see [`FileReader::repeated`]).
    repeated: HashMap<Option<String>, ArrayRef>,
}

/// Where one partition's scan stands.
struct ReadState {
    reader: FileReader,
    files: VecDeque<ScanFile>,
    current: Option<BoxStream<'static, Result<RecordBatch>>>,
    remaining: Option<usize>,
}

impl ReadState {
    async fn next(mut self) -> Result<Option<(RecordBatch, ReadState)>> {
        loop {
            if self.remaining == Some(0) {
                return Ok(None);
            }
            if let Some(current) = self.current.as_mut() {
                match current.next().await {
                    Some(batch) => {
                        let mut batch = batch?;
                        if let Some(remaining) = self.remaining.as_mut() {
                            let rows = batch.num_rows().min(*remaining);
                            *remaining -= rows;
                            batch = batch.slice(0, rows);
                        }
                        if batch.num_rows() > 0 {
                            return Ok(Some((batch, self)));
                        }
                        continue;
                    }
                    None => self.current = None,
                }
            }
            let Some(file) = self.files.pop_front() else {
                return Ok(None);
            };
            self.current = Some(self.reader.open(file).await?);
        }
    }
}

impl FileReader {
    /// The batches of `file`: from memory, decoded into memory, or streamed.
    async fn open(&mut self, file: ScanFile) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let filter = match self.file_filter(&file)? {
            FileFilter::Nothing => {
                self.counters.ruled_out.add(1);
                return Ok(futures::stream::empty().boxed());
            }
            FileFilter::Everything => None,
            FileFilter::Rows(rows) => Some(rows),
        };
        let schema = Arc::clone(&self.schema);
        let fields = schema.fields();
        let mut columns: Vec<Option<HeldColumn>> = fields
            .iter()
            .map(|f| {
                let value = file.one_value_of(f)?;
                Some(HeldColumn::plain(self.repeated(value)))
            })
            .collect();
        let repeated: Vec<bool> = columns.iter().map(Option::is_some).collect();
        for (column, field) in columns.iter_mut().zip(fields.iter()) {
            if column.is_none() {
                *column = self.cache.get(&file.path, field.name(), field.data_type());
            }
        }
        let missing: Vec<usize> = (0..fields.len())
            .filter(|i| columns[*i].is_none())
            .collect();
        let made = repeated.iter().filter(|r| **r).count();
        self.counters.from_partition.add(made);
        self.counters
            .from_cache
            .add(fields.len() - missing.len() - made);
        if !missing.is_empty() {
            let mut input = SendReader(self.readers.create_reader(
                self.partition,
                PartitionedFile::new(file.path.clone(), file.size),
                None,
                &self.metrics,
            )?);
            let metadata = ArrowReaderMetadata::load_async(&mut input, ArrowReaderOptions::new())
                .await
                .map_err(|e| parquet_error(&file, e))?;
            let wanted: Vec<&FieldRef> = missing.iter().map(|i| &fields[*i]).collect();
            let roots = file_roots(metadata.schema(), &wanted);
            let estimate = decoded_size(metadata.metadata(), &roots);
            if estimate > self.cache.budget() / LARGEST_SHARE {
                self.counters.streamed.add(1);
                let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(input, metadata);
                return self.stream(builder, &file, filter);
            }
            let metadata = with_codes(metadata, &wanted).map_err(|e| parquet_error(&file, e))?;
            let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(input, metadata);
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            let mut decoded = builder
                .with_projection(mask)
                .with_batch_size(file.rows.max(1))
                .build()
                .map_err(|e| parquet_error(&file, e))?;
            let mut parts: Vec<RecordBatch> = Vec::new();
            while let Some(batch) = decoded.next().await {
                parts.push(batch.map_err(|e| parquet_error(&file, e))?);
            }
            self.counters.decoded.add(missing.len());
            for i in missing {
                let field = &fields[i];
                let held = whole_column(&parts, field, file.rows)?;
                self.cache.insert(&file.path, field.name(), held.clone());
                columns[i] = Some(held);
            }
        }
        let columns: Vec<HeldColumn> = columns.into_iter().flatten().collect();
        let code_types: Vec<Option<DataType>> = columns
            .iter()
            .map(|c| c.codes.as_ref().map(|codes| codes.data_type().clone()))
            .collect();
        let filter = filter.map(|f| f.with_codes(&code_types)).transpose()?;
        let batches = slices(
            Arc::clone(&self.schema),
            columns,
            repeated,
            file,
            self.batch_size,
            self.picker(filter),
        );
        Ok(futures::stream::iter(batches).boxed())
    }

    /// `value` in `batch_size` rows, made once per value for all the files
    /// this reader reads (batches are slices of it).
    fn repeated(&mut self, value: &Option<String>) -> ArrayRef {
        let rows = self.batch_size;
        let made = self
            .repeated
            .entry(value.clone())
            .or_insert_with(|| match value {
                Some(value) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    value, rows,
                ))),
                None => arrow::array::new_null_array(&DataType::Utf8, rows),
            });
        Arc::clone(made)
    }

    /// The scan's filter as it stands for `file`, whose partition column
    /// holds one value.
    fn file_filter(&self, file: &ScanFile) -> Result<FileFilter> {
        let Some(filter) = &self.filter else {
            return Ok(FileFilter::Everything);
        };
        let partition = file.partition.as_ref().and_then(|(column, value)| {
            let position = self.schema.index_of(column).ok()?;
            (*self.schema.field(position).data_type() == DataType::Utf8)
                .then_some((position, value))
        });
        FileFilter::for_file(filter, &self.schema, partition)
    }

    /// A picker of the produced columns of the rows `filter` keeps.
    fn picker(&self, filter: Option<RowFilter>) -> Arc<RowPicker> {
        Arc::new(RowPicker {
            filter,
            output: self.output.clone(),
            schema: Arc::clone(&self.produced),
        })
    }

    /// `file` read in batches without keeping it, deleted rows skipped.
    fn stream(
        &self,
        builder: ParquetRecordBatchStreamBuilder<SendReader>,
        file: &ScanFile,
        filter: Option<RowFilter>,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let fields: Vec<&FieldRef> = self.schema.fields().iter().collect();
        let roots = file_roots(builder.schema(), &fields);
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut builder = builder
            .with_projection(mask)
            .with_batch_size(self.batch_size);
        if let Some(deleted) = &file.deleted {
            builder = builder.with_row_selection(kept_rows(deleted, file.rows));
        }
        let rows = builder.build().map_err(|e| parquet_error(file, e))?;
        let schema = Arc::clone(&self.schema);
        let picker = self.picker(filter);
        let path = file.path.clone();
        // Streamed columns have no codes and no repeated values.
        let no_codes = vec![None; schema.fields().len()];
        let not_repeated = vec![false; schema.fields().len()];
        Ok(rows
            .map(move |batch| {
                let batch = batch.map_err(|e| {
                    DataFusionError::External(format!("reading {path}: {e}").into())
                })?;
                let columns = schema
                    .fields()
                    .iter()
                    .map(|f| fit_column(std::slice::from_ref(&batch), f, batch.num_rows()))
                    .collect::<Result<Vec<_>>>()?;
                let read = RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                )?;
                picker.pick(&read, &no_codes, &not_repeated, None)
            })
            .filter(|batch| futures::future::ready(!matches!(batch, Ok(b) if b.num_rows() == 0)))
            .boxed())
    }
}

/// DataFusion's file reader as the Parquet stream builder takes it (the
/// builder's own impl is for readers that are not `Send`).
struct SendReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for SendReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        self.0.get_metadata(options)
    }
}

fn parquet_error(file: &ScanFile, e: parquet::errors::ParquetError) -> DataFusionError {
    DataFusionError::External(format!("reading {}: {e}", file.path).into())
}

/// The file's top-level columns holding `fields` (those it has; a column
/// added to the table after the file was written is absent and reads as NULL).
fn file_roots(file_schema: &arrow::datatypes::Schema, fields: &[&FieldRef]) -> Vec<usize> {
    let mut roots: Vec<usize> = fields
        .iter()
        .filter_map(|f| file_schema.index_of(f.name()).ok())
        .collect();
    roots.sort_unstable();
    roots.dedup();
    roots
}

/// Bytes the columns `roots` take decoded, estimated from the Parquet
/// metadata: the uncompressed size, or for strings the bytes of their
/// values plus offsets where the writer recorded them (a dictionary-encoded
/// column of repeated strings is small in Parquet and large in Arrow).
fn decoded_size(metadata: &parquet::file::metadata::ParquetMetaData, roots: &[usize]) -> usize {
    metadata
        .row_groups()
        .iter()
        .flat_map(|rg| roots.iter().filter_map(|r| rg.columns().get(*r)))
        .map(|c| {
            let stored = c.uncompressed_size().max(0) as usize;
            let strings = c.unencoded_byte_array_data_bytes().map_or(0, |bytes| {
                bytes.max(0) as usize + 4 * c.num_values().max(0) as usize
            });
            stored.max(strings)
        })
        .sum()
}

/// The pieces of `field` in the decoded `parts` as one array of the type
/// read; None when the file has no such column.
fn concatenated(parts: &[RecordBatch], field: &FieldRef) -> Result<Option<ArrayRef>> {
    let pieces: Vec<&ArrayRef> = parts
        .iter()
        .filter_map(|b| b.column_by_name(field.name()))
        .collect();
    if pieces.len() < parts.len() || parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(match pieces.as_slice() {
        [one] => Arc::clone(one),
        many => {
            let refs: Vec<&dyn Array> = many.iter().map(|a| a.as_ref()).collect();
            arrow::compute::concat(&refs)?
        }
    }))
}

/// The column for `field` over the decoded `parts`: concatenated, cast to
/// the table's type where the file holds another, NULL where it has none.
fn fit_column(parts: &[RecordBatch], field: &FieldRef, rows: usize) -> Result<ArrayRef> {
    fit(concatenated(parts, field)?, field, rows)
}

/// `read` (a file's column, if it has one) as `rows` rows of the table's type.
fn fit(read: Option<ArrayRef>, field: &FieldRef, rows: usize) -> Result<ArrayRef> {
    match read {
        None => Ok(arrow::array::new_null_array(field.data_type(), rows)),
        Some(values) if values.data_type() == field.data_type() => Ok(values),
        Some(values) => Ok(arrow::compute::cast(&values, field.data_type())?),
    }
}

/// A whole file's column as the cache holds it, checked against the row
/// count the manifest holds: with codes when it was read as a dictionary
/// (see [`with_codes`]).
fn whole_column(parts: &[RecordBatch], field: &FieldRef, rows: usize) -> Result<HeldColumn> {
    let held = match concatenated(parts, field)? {
        Some(read) if matches!(read.data_type(), DataType::Dictionary(..)) => coded(&read, field)?,
        read => HeldColumn::plain(fit(read, field, rows)?),
    };
    let values = &held.values;
    if values.len() != rows {
        return Err(DataFusionError::External(
            format!(
                "column \"{}\" has {} rows in its file, the manifest says {rows}",
                field.name(),
                values.len()
            )
            .into(),
        ));
    }
    Ok(held)
}

/// The type text columns are read in when [`with_codes`] asks for their
/// dictionaries.
fn read_code_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// `metadata` reading as dictionaries those text columns among `fields`
/// whose data pages are all dictionary-encoded in every row group (few
/// distinct values in the file): their keys then come from the file, with
/// no hashing of strings. Files written without page encoding statistics
/// read as before.
fn with_codes(
    metadata: ArrowReaderMetadata,
    fields: &[&FieldRef],
) -> parquet::errors::Result<ArrowReaderMetadata> {
    let parquet = metadata.metadata();
    let leaves = parquet.file_metadata().schema_descr();
    let all_dictionary_encoded = |root: usize| {
        let mut leaf_of_root =
            (0..leaves.num_columns()).filter(|l| leaves.get_column_root_idx(*l) == root);
        let (Some(leaf), None) = (leaf_of_root.next(), leaf_of_root.next()) else {
            return false;
        };
        parquet.row_groups().iter().all(|group| {
            let chunk = group.column(leaf);
            chunk.dictionary_page_offset().is_some()
                && chunk.page_encoding_stats_mask().is_some_and(|mask| {
                    mask.is_only(Encoding::RLE_DICTIONARY)
                        || mask.is_only(Encoding::PLAIN_DICTIONARY)
                })
        })
    };
    let mut hinted = false;
    let file_fields: Vec<FieldRef> = metadata
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(root, field)| {
            let text = |f: &FieldRef| *f.data_type() == DataType::Utf8;
            let wanted = fields.iter().any(|w| w.name() == field.name() && text(w));
            if wanted && text(field) && all_dictionary_encoded(root) {
                hinted = true;
                Arc::new(field.as_ref().clone().with_data_type(read_code_type()))
            } else {
                Arc::clone(field)
            }
        })
        .collect();
    if !hinted {
        return Ok(metadata);
    }
    let schema = arrow::datatypes::Schema::new_with_metadata(
        file_fields,
        metadata.schema().metadata().clone(),
    );
    ArrowReaderMetadata::try_new(
        Arc::clone(parquet),
        ArrowReaderOptions::new().with_schema(Arc::new(schema)),
    )
}

/// The held form of a text column read as a dictionary: its values as text,
/// and the dictionary again with the narrowest keys its values fit in (none
/// past 65,536 distinct values, where codes would save little).
fn coded(read: &ArrayRef, field: &FieldRef) -> Result<HeldColumn> {
    let values = arrow::compute::cast(read, field.data_type())?;
    let distinct = read.as_any_dictionary().values().len();
    let key = match distinct {
        0..=256 => DataType::UInt8,
        257..=65_536 => DataType::UInt16,
        _ => return Ok(HeldColumn::plain(values)),
    };
    let codes = arrow::compute::cast(
        read,
        &DataType::Dictionary(Box::new(key), Box::new(field.data_type().clone())),
    )?;
    Ok(HeldColumn {
        values,
        codes: Some(codes),
    })
}

/// The file's rows as batches of `batch_size` slices of the whole columns,
/// its deleted rows and those `picker` leaves out left out; each batch is
/// made when it is asked for, so a scan that stops early (a LIMIT) copies
/// no more than it reads.
fn slices(
    schema: SchemaRef,
    columns: Vec<HeldColumn>,
    repeated: Vec<bool>,
    file: ScanFile,
    batch_size: usize,
    picker: Arc<RowPicker>,
) -> impl Iterator<Item = Result<RecordBatch>> + Send + 'static {
    (0..file.rows)
        .step_by(batch_size.max(1))
        .map(move |start| {
            let len = batch_size.min(file.rows - start);
            let batch = RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                columns
                    .iter()
                    .zip(&repeated)
                    .map(|(c, &one_value)| c.values.slice(if one_value { 0 } else { start }, len))
                    .collect(),
                &RecordBatchOptions::new().with_row_count(Some(len)),
            )?;
            let codes: Vec<Option<ArrayRef>> = columns
                .iter()
                .map(|c| c.codes.as_ref().map(|codes| codes.slice(start, len)))
                .collect();
            let keep = match &file.deleted {
                Some(deleted) => kept_in(deleted, start, len)?,
                None => None,
            };
            picker.pick(&batch, &codes, &repeated, keep)
        })
        .filter(|batch| !matches!(batch, Ok(b) if b.num_rows() == 0))
}

/// Which of the file's `len` rows from `start` are not deleted; `None` when
/// none is.
fn kept_in(deleted: &RoaringBitmap, start: usize, len: usize) -> Result<Option<BooleanArray>> {
    let (Ok(lo), Ok(hi)) = (u32::try_from(start), u32::try_from(start + len)) else {
        return Err(DataFusionError::Internal(
            "a file holds more rows than deletion vectors address".into(),
        ));
    };
    if deleted.range_cardinality(lo..hi) == 0 {
        return Ok(None);
    }
    let mut keep = vec![true; len];
    for pos in deleted.range(lo..hi) {
        keep[(pos - lo) as usize] = false;
    }
    Ok(Some(BooleanArray::from(keep)))
}

/// The rows of a file to read, its deleted ones skipped.
pub(crate) fn kept_rows(deleted: &RoaringBitmap, rows: usize) -> RowSelection {
    use parquet::arrow::arrow_reader::RowSelector;
    let mut selectors = Vec::new();
    let mut next = 0usize;
    for pos in deleted.iter().map(|p| p as usize).filter(|p| *p < rows) {
        if pos > next {
            selectors.push(RowSelector::select(pos - next));
            selectors.push(RowSelector::skip(1));
        } else if let Some(last) = selectors.last_mut().filter(|s| s.skip) {
            last.row_count += 1;
        } else {
            selectors.push(RowSelector::skip(1));
        }
        next = pos + 1;
    }
    if next < rows {
        selectors.push(RowSelector::select(rows - next));
    }
    RowSelection::from(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::RowSelector;

    fn everything(schema: &SchemaRef) -> Arc<RowPicker> {
        Arc::new(RowPicker {
            filter: None,
            output: (0..schema.fields().len()).collect(),
            schema: Arc::clone(schema),
        })
    }

    #[test]
    fn deleted_rows_are_skipped_in_the_selection() {
        let deleted = RoaringBitmap::from_iter([0u32, 3, 4]);
        let sel: Vec<RowSelector> = kept_rows(&deleted, 7).into();
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

    #[test]
    fn slices_leave_out_deleted_rows_across_batches() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let column: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10));
        let file = ScanFile {
            path: "t/x.parquet".into(),
            size: 0,
            rows: 10,
            deleted: Some(Arc::new(RoaringBitmap::from_iter([1u32, 4, 5, 9]))),
            partition: None,
        };
        let batches: Vec<RecordBatch> = slices(
            Arc::clone(&schema),
            vec![HeldColumn::plain(column)],
            vec![false],
            file.clone(),
            4,
            everything(&schema),
        )
        .collect::<Result<_>>()
        .unwrap();
        let kept: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(kept, vec![0, 2, 3, 6, 7, 8]);
        assert_eq!(file.live_rows(), 6);
    }

    #[test]
    fn a_projection_without_columns_still_counts_rows() {
        let schema = Arc::new(Schema::empty());
        let file = ScanFile {
            path: "t/x.parquet".into(),
            size: 0,
            rows: 5,
            deleted: Some(Arc::new(RoaringBitmap::from_iter([2u32]))),
            partition: None,
        };
        let batches: Vec<RecordBatch> = slices(
            Arc::clone(&schema),
            Vec::new(),
            Vec::new(),
            file,
            2,
            everything(&schema),
        )
        .collect::<Result<_>>()
        .unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 4);
    }

    #[test]
    fn repeated_strings_are_estimated_at_their_decoded_size() {
        let schema = Arc::new(Schema::new(vec![Field::new("model", DataType::Utf8, true)]));
        let models = arrow::array::StringArray::from_iter_values(
            (0..100_000).map(|i| if i % 2 == 0 { "vega-8b" } else { "orion-large" }),
        );
        let decoded = models.get_array_memory_size();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(models)]).unwrap();
        let bytes = bytes::Bytes::from(lookout_storage::batch::encode_parquet(&batch).unwrap().0);
        let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .unwrap();
        let estimate = decoded_size(&metadata, &[0]);
        // Dictionary encoding stores a few bytes; Arrow holds every string.
        assert!(estimate * 10 >= decoded * 8, "{estimate} vs {decoded}");
        assert!(estimate <= decoded * 2, "{estimate} vs {decoded}");
    }

    #[test]
    fn few_distinct_strings_are_held_with_codes_and_picked_from_them() {
        let rows = 70_000;
        let tiers: StringArray = (0..rows)
            .map(|i| ["gold", "silver", "bronze-and-a-long-name"].get(i % 4))
            .map(|t| t.copied())
            .collect();
        let ids = StringArray::from_iter_values((0..rows).map(|i| format!("request-{i}")));
        let schema = Arc::new(Schema::new(vec![
            Field::new("tier", DataType::Utf8, true),
            Field::new("id", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(tiers.clone()), Arc::new(ids)],
        )
        .unwrap();
        let bytes = bytes::Bytes::from(lookout_storage::batch::encode_parquet(&batch).unwrap().0);
        let metadata = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()).unwrap();
        let fields: Vec<&FieldRef> = schema.fields().iter().collect();
        let metadata = with_codes(metadata, &fields).unwrap();
        let parts: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::new_with_metadata(
                bytes, metadata,
            )
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        let tier = whole_column(&parts, &schema.fields()[0], rows).unwrap();
        assert_eq!(tier.values.as_ref(), &tiers as &dyn Array);
        let codes = tier.codes.clone().expect("few distinct values have codes");
        assert_eq!(
            codes.data_type(),
            &DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8))
        );
        // Unique strings (70,000 of them) are held as text alone.
        let id = whole_column(&parts, &schema.fields()[1], rows).unwrap();
        assert!(id.codes.is_none());

        // Picking rows through the codes gives the rows the values give,
        // after deleted rows and again after the filter.
        let read = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::clone(&tier.values), Arc::clone(&id.values)],
        )
        .unwrap();
        use datafusion::logical_expr::Operator;
        use datafusion::physical_expr::expressions::{binary, col, lit};
        let compare = |column: &str, op: Operator, value: &str| {
            binary(col(column, &schema).unwrap(), op, lit(value), &schema).unwrap()
        };
        // The comparison on `tier` is made on its codes, that on `id` on text.
        let filter = binary(
            compare("id", Operator::LtEq, "request-2"),
            Operator::And,
            compare("tier", Operator::NotEq, "gold"),
            &schema,
        )
        .unwrap();
        let filter = RowFilter::new(filter, Arc::clone(&schema));
        let code_types = [Some(codes.data_type().clone()), None];
        let picker = RowPicker {
            filter: Some(filter.clone().with_codes(&code_types).unwrap()),
            output: vec![0, 1],
            schema: Arc::clone(&schema),
        };
        let text_picker = RowPicker {
            filter: Some(filter),
            output: vec![0, 1],
            schema: Arc::clone(&schema),
        };
        let keep = BooleanArray::from_iter((0..rows).map(|i| Some(i % 3 != 0)));
        let picked = picker
            .pick(
                &read,
                &[tier.codes.clone(), None],
                &[false, false],
                Some(keep.clone()),
            )
            .unwrap();
        let plain = text_picker
            .pick(&read, &[None, None], &[false, false], Some(keep))
            .unwrap();
        assert_eq!(picked, plain);
        assert!(picked.num_rows() > 1000 && picked.num_rows() < rows / 2);
        assert_eq!(picked.column(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn a_column_the_file_lacks_reads_as_null() {
        let parts = vec![
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)])),
                vec![Arc::new(Int64Array::from(vec![1, 2]))],
            )
            .unwrap(),
        ];
        let added: FieldRef = Arc::new(Field::new("b", DataType::Utf8, true));
        let column = whole_column(&parts, &added, 2).unwrap().values;
        assert_eq!(column.null_count(), 2);
        let kept: FieldRef = Arc::new(Field::new("a", DataType::Float64, true));
        let column = whole_column(&parts, &kept, 2).unwrap().values;
        assert_eq!(column.data_type(), &DataType::Float64);
        assert!(whole_column(&parts, &kept, 3).is_err());
    }
}
