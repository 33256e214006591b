//! Row-level work on Arrow batches: fitting input to a table's schema,
//! splitting by partition and time bucket, encoding Parquet, file statistics.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, Float64Array, PrimitiveArray,
    RecordBatch, StringArray, TimestampMicrosecondArray, TypedDictionaryArray, new_null_array,
};
use arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use arrow::compute::{self, take_record_batch};
use arrow::datatypes::ArrowNativeType;
use arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::util::display::FormatOptions;
use bytes::Bytes;
use chrono::DateTime;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::ColumnPath;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::{Result, StorageError};
use crate::file_buffer::FileBuffer;
use crate::manifest::{ColumnStats, StatValue};
use crate::schema::TableDef;

/// Rows per Parquet row group (the same as the bench generator and DuckDB).
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Checks and rewrites the values of columns declared with a type whose
/// text has a format of its own (JSON): the layer that defines the type
/// registers one with [`register_value_format`], and every write passes
/// through it in [`conform`].
pub trait ValueFormat: Send + Sync {
    /// `column` (of the column's Arrow type) as the type `sql_type` keeps it,
    /// or the SQLSTATE and message of the first value it refuses.
    fn conform(
        &self,
        sql_type: &str,
        column: &ArrayRef,
    ) -> std::result::Result<ArrayRef, (&'static str, String)>;
}

static VALUE_FORMAT: std::sync::OnceLock<Box<dyn ValueFormat>> = std::sync::OnceLock::new();

/// Sets the format of declared column types for this process (the first
/// registration stays; it is a pure function of the values).
pub fn register_value_format(format: Box<dyn ValueFormat>) {
    let _ = VALUE_FORMAT.set(format);
}

/// Fits `batch` to the table: columns matched by name, missing nullable
/// columns filled with NULL, values cast to the column types. Errors name the
/// column and the first offending row (1-based).
pub fn conform(batch: &RecordBatch, def: &TableDef, schema: &SchemaRef) -> Result<RecordBatch> {
    conform_to(batch, def, schema, false)
}

/// Like [`conform`], except that a text column given as a small
/// dictionary of text (`Dictionary(Int32, Utf8)`, at most
/// [`MAX_KEPT_DICTIONARY_BYTES`] of values, none NULL) stays one, and the
/// batch's schema says so: a bulk load then moves 4-byte keys where it
/// would copy strings, and the Parquet writer takes the dictionary as the
/// text it stands for. Only for rows bound for [`split_partitions`] and the
/// writer; columns of a type with a [`ValueFormat`] are still checked as
/// text.
pub(crate) fn conform_keeping_dictionaries(
    batch: &RecordBatch,
    def: &TableDef,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    conform_to(batch, def, schema, true)
}

/// Whether `column` is text kept as a dictionary by
/// [`conform_keeping_dictionaries`] for a column declared as `field`.
fn is_kept_dictionary(field: &Field, column: &ArrayRef) -> bool {
    field.data_type() == &DataType::Utf8
        && crate::schema::sql_type_of(field).is_none()
        && column.as_dictionary_opt::<Int32Type>().is_some_and(|d| {
            d.values().data_type() == &DataType::Utf8
                && d.values().null_count() == 0
                && d.values().get_array_memory_size() <= MAX_KEPT_DICTIONARY_BYTES
        })
}

/// The largest dictionary (its values' bytes) a bulk load keeps as one.
/// Every slice split from a batch holds its dictionary and counts it
/// against the load's queue budget, so a dictionary is kept only while
/// that costs little; a larger one, whatever the file's metadata claimed,
/// is cast to text.
const MAX_KEPT_DICTIONARY_BYTES: usize = 64 * 1024;

fn conform_to(
    batch: &RecordBatch,
    def: &TableDef,
    schema: &SchemaRef,
    keep_dictionaries: bool,
) -> Result<RecordBatch> {
    let input = batch.schema();
    for f in input.fields() {
        if schema.field_with_name(f.name()).is_err() {
            return Err(StorageError::Column(format!(
                "column \"{}\" of relation \"{}\" does not exist",
                f.name(),
                def.name
            )));
        }
    }
    let cast_opts = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let mut kept_dictionaries = false;
    for field in schema.fields() {
        let column = match input.index_of(field.name()) {
            Ok(i) => {
                let col = batch.column(i);
                if keep_dictionaries && is_kept_dictionary(field, col) {
                    kept_dictionaries = true;
                    Arc::clone(col)
                } else if col.data_type() == field.data_type() {
                    Arc::clone(col)
                } else {
                    cast_with_options(col, field.data_type(), &cast_opts).map_err(|e| {
                        let row = first_bad_cast_row(col, field.data_type());
                        StorageError::InvalidData(format!(
                            "invalid value for column \"{}\" ({}){}: {e}",
                            field.name(),
                            field.data_type(),
                            row.map(|r| format!(" at row {r}")).unwrap_or_default()
                        ))
                    })?
                }
            }
            Err(_) => new_null_array(field.data_type(), batch.num_rows()),
        };
        let column = match (crate::schema::sql_type_of(field), VALUE_FORMAT.get()) {
            (Some(sql_type), Some(format)) => {
                format
                    .conform(sql_type, &column)
                    .map_err(|(sqlstate, message)| StorageError::InvalidValue {
                        sqlstate,
                        message: format!("{message} (column \"{}\")", field.name()),
                    })?
            }
            _ => column,
        };
        if !field.is_nullable() && column.null_count() > 0 {
            let row = (0..column.len()).find(|i| column.is_null(*i)).unwrap_or(0) + 1;
            return Err(StorageError::NotNull(format!(
                "null value in column \"{}\" of relation \"{}\" violates not-null constraint (row {row})",
                field.name(),
                def.name
            )));
        }
        columns.push(column);
    }
    let schema = if kept_dictionaries {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    } else {
        Arc::clone(schema)
    };
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn first_bad_cast_row(col: &ArrayRef, to: &DataType) -> Option<usize> {
    let opts = CastOptions {
        safe: true,
        format_options: FormatOptions::default(),
    };
    let lenient = cast_with_options(col, to, &opts).ok()?;
    (0..col.len())
        .find(|i| col.is_valid(*i) && lenient.is_null(*i))
        .map(|i| i + 1)
}

/// Fits an older batch (written before `ALTER TABLE ADD COLUMN`) to the
/// current schema by adding NULL columns. Never fails on valid data.
pub fn widen(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.schema().index_of(f.name()) {
            Ok(i) => Arc::clone(batch.column(i)),
            Err(_) => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The time column of a conformed batch.
pub fn time_values<'a>(
    batch: &'a RecordBatch,
    def: &TableDef,
) -> Result<&'a TimestampMicrosecondArray> {
    let col = batch
        .column_by_name(&def.options.time_column)
        .ok_or_else(|| StorageError::Corrupt("time column missing from batch".into()))?;
    col.as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| StorageError::Corrupt("time column is not µs timestamps".into()))
}

/// Start of the bucket holding `t` (µs), for buckets aligned to the epoch.
pub fn bucket_start(t: i64, bucket: i64) -> i64 {
    t.div_euclid(bucket) * bucket
}

/// One partition's share of a batch.
pub struct PartitionSlice {
    /// Partition column value, if the table has a partition column.
    pub partition: Option<String>,
    /// Start of the time bucket (µs).
    pub bucket_start: i64,
    /// The rows, sorted by time.
    pub batch: RecordBatch,
}

/// Splits a conformed batch by (partition value, time bucket), each slice
/// sorted by time. Rows are grouped by hashing, so only each slice's time
/// column is sorted. Slices come in (partition, bucket) order.
pub fn split_partitions(batch: &RecordBatch, def: &TableDef) -> Result<Vec<PartitionSlice>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let bucket = def.options.bucket_micros;
    let times = time_values(batch, def)?;
    let parts = match &def.options.partition_column {
        Some(p) => Some(TextColumn::of(batch.column_by_name(p).ok_or_else(
            || StorageError::Corrupt("partition column missing".into()),
        )?)?),
        None => None,
    };
    // Rows of one partition usually come in runs, so each row is first
    // compared with the previous row's key; a hash lookup finds the others.
    type Key<'a> = (Option<&'a str>, i64);
    let mut index: ahash::AHashMap<Key, usize> = ahash::AHashMap::new();
    let mut groups: Vec<(Key, Vec<u32>)> = Vec::new();
    let mut last: Option<(Key, usize)> = None;
    for (i, t) in times.values().iter().enumerate() {
        let p = parts.as_ref().and_then(|a| a.value(i));
        let key = (p, bucket_start(*t, bucket));
        let g = match last {
            Some((k, g)) if k == key => g,
            _ => *index.entry(key).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            }),
        };
        groups[g].1.push(i as u32);
        last = Some((key, g));
    }
    groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(groups.len());
    for ((p, b), rows) in groups {
        out.push(PartitionSlice {
            partition: p.map(str::to_string),
            bucket_start: b,
            batch: take_in_time_order(batch, times.values(), rows)?,
        });
    }
    Ok(out)
}

/// A text column as [`conform_keeping_dictionaries`] leaves it.
enum TextColumn<'a> {
    Plain(&'a StringArray),
    Dictionary(TypedDictionaryArray<'a, Int32Type, StringArray>),
}

impl<'a> TextColumn<'a> {
    fn of(column: &'a ArrayRef) -> Result<Self> {
        if let Some(text) = column.as_string_opt::<i32>() {
            return Ok(TextColumn::Plain(text));
        }
        column
            .as_dictionary_opt::<Int32Type>()
            .and_then(|d| d.downcast_dict::<StringArray>())
            .map(TextColumn::Dictionary)
            .ok_or_else(|| StorageError::Corrupt("partition column is not text".into()))
    }

    /// The value of row `i`, `None` for NULL.
    fn value(&self, i: usize) -> Option<&'a str> {
        match self {
            TextColumn::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            TextColumn::Dictionary(d) => {
                let key = d.keys().is_valid(i).then(|| d.keys().value(i).as_usize())?;
                d.values().is_valid(key).then(|| d.values().value(key))
            }
        }
    }
}

/// The rows ordered by the time column (stable; a no-op when already sorted).
pub fn sort_by_time(batch: &RecordBatch, def: &TableDef) -> Result<RecordBatch> {
    let t = time_values(batch, def)?.values();
    take_in_time_order(batch, t, (0..t.len() as u32).collect())
}

/// The rows `rows` (ascending row numbers) of `batch`, whose times are `t`,
/// ordered by time in one copy; the batch itself when they are all of it,
/// already in order. Stable (Arrow's `sort_to_indices` is not): rows of
/// equal time keep their arrival order.
fn take_in_time_order(batch: &RecordBatch, t: &[i64], mut rows: Vec<u32>) -> Result<RecordBatch> {
    let sorted = rows
        .windows(2)
        .all(|w| t[w[0] as usize] <= t[w[1] as usize]);
    if sorted && rows.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    if !sorted {
        sort_rows_by_time(&mut rows, t);
    }
    Ok(take_record_batch(
        batch,
        &arrow::array::UInt32Array::from(rows),
    )?)
}

/// Sorts row numbers by their times `t`, stably. A partition's rows
/// usually arrive nearly in time order (senders' clocks a little apart), so
/// an insertion sort moves each row a few places and takes a fraction of a
/// general sort's time; past [`INSERTION_MOVES_PER_ROW`] moves per row it
/// leaves the rest to the general stable sort (the rows it has sorted keep
/// the order of equal times, so the result is the same).
fn sort_rows_by_time(rows: &mut [u32], t: &[i64]) {
    let budget = rows.len().saturating_mul(INSERTION_MOVES_PER_ROW);
    let mut moves = 0usize;
    for i in 1..rows.len() {
        let row = rows[i];
        let time = t[row as usize];
        let mut j = i;
        while j > 0 && t[rows[j - 1] as usize] > time {
            rows[j] = rows[j - 1];
            j -= 1;
        }
        rows[j] = row;
        moves += i - j;
        if moves > budget {
            rows.sort_by_key(|r| t[*r as usize]);
            return;
        }
    }
}

/// Moves per row an insertion sort may make before a general sort takes
/// over.
const INSERTION_MOVES_PER_ROW: usize = 8;

const PATH_UNSAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// The directory of a table's files below the store root: its name,
/// percent-encoded so that any name is one safe path segment.
pub fn table_dir(name: &str) -> String {
    utf8_percent_encode(name, PATH_UNSAFE).to_string()
}

/// `<table>/<partition column>=<value>/date=<YYYY-MM-DD>/<file>.parquet`,
/// the Hive layout DuckDB and Spark read directly.
/// `run` tells apart processes, so a file left by a crashed one (written,
/// never committed) never collides with a new name.
pub fn file_path(
    def: &TableDef,
    partition: Option<&str>,
    bucket_start: i64,
    run: &str,
    file_id: u64,
) -> String {
    let table = table_dir(&def.name);
    let date = DateTime::from_timestamp_micros(bucket_start)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "invalid".to_string());
    let file = format!("{bucket_start}-{run}-{file_id:06}.parquet");
    match (&def.options.partition_column, partition) {
        (Some(col), Some(v)) => format!(
            "{table}/{}={}/date={date}/{file}",
            utf8_percent_encode(col, PATH_UNSAFE),
            utf8_percent_encode(v, PATH_UNSAFE)
        ),
        (Some(col), None) => format!(
            "{table}/{}=__NULL__/date={date}/{file}",
            utf8_percent_encode(col, PATH_UNSAFE)
        ),
        (None, _) => format!("{table}/date={date}/{file}"),
    }
}

/// Encodes rows as a zstd Parquet file with page statistics; returns it
/// with its [`column_stats`].
pub fn encode_parquet(batch: &RecordBatch) -> Result<(Vec<u8>, BTreeMap<String, ColumnStats>)> {
    let buf = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(buf, batch.schema(), Some(writer_properties(batch)?))?;
    writer.write(batch)?;
    writer.flush()?;
    let mut stats = WrittenStats::new(batch.schema());
    stats.add(batch);
    let stats = stats.finish(writer.flushed_row_groups());
    Ok((writer.into_inner()?, stats))
}

/// How every data file is written: zstd level 1, row groups of
/// [`ROW_GROUP_ROWS`], page statistics (for the page index), and per
/// column, judged from `first`, the file's first rows: no dictionary where
/// values rarely repeat, and no compression where it would not pay.
///
/// Measurements, latencies, costs, scores and times rarely repeat: their
/// dictionary grew with nearly every value (a row group of doubles stays
/// under the writer's 1 MiB dictionary limit, so it never fell back to
/// plain), and interning every value was a fifth of a load's encoding.
/// Text such as request ids is the same: each row group's dictionary is
/// built until it passes the limit, then dropped, so every value is
/// hashed for nothing.
///
/// Compression was a fifth of a load's CPU, spent on every byte alike.
/// Times are stored as bit-packed deltas: a file is a run of slices sorted
/// by time, so they take fewer bytes than zstd makes of the plain values,
/// and zstd finds nothing more in them. Text without a dictionary keeps its
/// lengths apart from its bytes (`DELTA_LENGTH_BYTE_ARRAY`), so zstd reads
/// fewer bytes and finds more in them. Floating-point columns whose first
/// values zstd cannot shrink by a tenth (noise-like features) are stored
/// uncompressed.
pub fn writer_properties(first: &RecordBatch) -> Result<WriterProperties> {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page);
    for (field, column) in first.schema().fields().iter().zip(first.columns()) {
        let path = || ColumnPath::from(field.name().as_str());
        // (no dictionary, its encoding instead, compressed)
        let (encoding, compressed) = match field.data_type() {
            DataType::Timestamp(_, _) => (Some(Encoding::DELTA_BINARY_PACKED), false),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                (Some(Encoding::PLAIN), zstd_pays(column))
            }
            DataType::Utf8 if mostly_distinct(column.as_string::<i32>()) => {
                (Some(Encoding::DELTA_LENGTH_BYTE_ARRAY), true)
            }
            _ => (None, true),
        };
        if let Some(encoding) = encoding {
            props = props
                .set_column_dictionary_enabled(path(), false)
                .set_column_encoding(path(), encoding);
        }
        if !compressed {
            props = props.set_column_compression(path(), Compression::UNCOMPRESSED);
        }
    }
    Ok(props.build())
}

/// An estimate of the memory held by a Parquet file being written, for a
/// load's bound on its open files: the bytes encoded so far (finished row
/// groups, pages and dictionaries) and, for each dictionary or
/// delta-encoded column, a page's worth of 8-byte values: dictionary keys
/// are kept as 8-byte integers until their page is encoded, and a delta
/// encoder keeps the part of its buffer its largest page touched.
///
/// Not `ArrowWriter::memory_size`: that counts buffers' capacity, and each
/// delta encoder reserves 1 MiB when it is made, of which only a page's
/// bytes are ever touched (a page is at most 20,000 rows), so a file of a
/// few rows counted megabytes and a load of many partitions finished a file
/// per slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterMemory {
    page_bytes_per_row: usize,
    page_rows: usize,
}

impl WriterMemory {
    /// The estimate for files of `schema` written with `props`.
    pub(crate) fn new(schema: &Schema, props: &WriterProperties) -> Self {
        let paged_columns = schema
            .fields()
            .iter()
            .filter(|f| {
                let path = ColumnPath::from(f.name().as_str());
                props.dictionary_enabled(&path)
                    || matches!(
                        props.encoding(&path),
                        Some(
                            Encoding::DELTA_BINARY_PACKED
                                | Encoding::DELTA_LENGTH_BYTE_ARRAY
                                | Encoding::DELTA_BYTE_ARRAY
                        )
                    )
            })
            .count();
        WriterMemory {
            page_bytes_per_row: paged_columns * std::mem::size_of::<u64>(),
            // A page is closed once it reaches its row limit, checked after
            // each write batch.
            page_rows: props.data_page_row_count_limit() + props.write_batch_size(),
        }
    }

    /// The bytes `writer` holds now.
    pub(crate) fn of(&self, writer: &ArrowWriter<FileBuffer>) -> usize {
        let pages = writer.in_progress_rows().min(self.page_rows) * self.page_bytes_per_row;
        writer.inner().len() + writer.in_progress_size() + pages
    }
}

/// Whether zstd level 1 shrinks the first [`COMPRESSION_SAMPLE`] non-null
/// values of a fixed-width column, as Parquet stores them plain, by at
/// least a tenth; too few values to tell, or a failure, keep compression.
fn zstd_pays(column: &ArrayRef) -> bool {
    let data = column.to_data();
    let (Some(width), Some(values)) = (data.data_type().primitive_width(), data.buffers().first())
    else {
        return true;
    };
    let mut plain = Vec::with_capacity(COMPRESSION_SAMPLE * width);
    for row in (0..data.len())
        .filter(|&r| data.is_valid(r))
        .take(COMPRESSION_SAMPLE)
    {
        let at = (data.offset() + row) * width;
        let Some(value) = values.as_slice().get(at..at + width) else {
            return true;
        };
        plain.extend_from_slice(value);
    }
    if plain.len() < COMPRESSION_SAMPLE / 4 * width {
        return true;
    }
    match zstd::bulk::compress(&plain, 1) {
        Ok(packed) => packed.len() * 10 <= plain.len() * 9,
        Err(_) => true,
    }
}

/// Values looked at to decide whether a column is compressed.
const COMPRESSION_SAMPLE: usize = 8192;

/// Whether nearly all of the first [`DISTINCT_SAMPLE`] non-null values
/// differ (a dictionary would not pay); too few values to tell keep it.
fn mostly_distinct(text: &StringArray) -> bool {
    let mut seen = ahash::AHashSet::with_capacity(DISTINCT_SAMPLE);
    let mut values = 0;
    for v in text.iter().flatten().take(DISTINCT_SAMPLE) {
        seen.insert(v);
        values += 1;
    }
    values >= DISTINCT_SAMPLE / 4 && seen.len() * 10 >= values * 9
}

/// Values looked at to decide whether a text column gets a dictionary.
const DISTINCT_SAMPLE: usize = 1024;

/// Decodes a whole Parquet file.
pub fn decode_parquet(bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Longest text kept as a statistic; longer values are not recorded, since a
/// truncated maximum would be wrong.
const MAX_STAT_TEXT: usize = 64;

/// Minimum, maximum and null count of each column, computed from the rows:
/// the definition of what a file's statistics say. Files are written with
/// [`WrittenStats`], which reads the same from the Parquet writer; the
/// tests hold the two equal.
pub fn column_stats(batch: &RecordBatch) -> Result<BTreeMap<String, ColumnStats>> {
    let mut out = BTreeMap::new();
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let mut stats = ColumnStats {
            null_count: col.null_count() as u64,
            ..ColumnStats::default()
        };
        let (min, max) = match col.data_type() {
            DataType::Int8 => int_range::<Int8Type>(col),
            DataType::Int16 => int_range::<Int16Type>(col),
            DataType::Int32 => int_range::<Int32Type>(col),
            DataType::Int64 => int_range::<Int64Type>(col),
            DataType::Date32 => int_range::<Date32Type>(col),
            DataType::Timestamp(TimeUnit::Second, _) => int_range::<TimestampSecondType>(col),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                int_range::<TimestampMillisecondType>(col)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                int_range::<TimestampMicrosecondType>(col)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                int_range::<TimestampNanosecondType>(col)
            }
            DataType::Float64 => float_range(col.as_primitive::<Float64Type>()),
            DataType::Float32 => {
                let c = compute::cast(col, &DataType::Float64)?;
                float_range(c.as_primitive::<Float64Type>())
            }
            DataType::Utf8 => {
                let c: &StringArray = col.as_string::<i32>();
                let keep = |v: Option<&str>| {
                    v.filter(|s| s.len() <= MAX_STAT_TEXT)
                        .map(|s| StatValue::Str(s.to_string()))
                };
                let (min, max) = (compute::min_string(c), compute::max_string(c));
                match (keep(min), keep(max)) {
                    (Some(a), Some(b)) => (Some(a), Some(b)),
                    _ => (None, None),
                }
            }
            DataType::Boolean => {
                let c: &BooleanArray = col.as_boolean();
                (
                    compute::min_boolean(c).map(StatValue::Bool),
                    compute::max_boolean(c).map(StatValue::Bool),
                )
            }
            _ => (None, None),
        };
        stats.min = min;
        stats.max = max;
        out.insert(field.name().clone(), stats);
    }
    Ok(out)
}

/// Minimum and maximum of an integer-like column, read in its own width
/// (no widened copy of the column).
fn int_range<T>(col: &ArrayRef) -> (Option<StatValue>, Option<StatValue>)
where
    T: ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    let c = col.as_primitive::<T>();
    (
        compute::min(c).map(|v| StatValue::Int(v.into())),
        compute::max(c).map(|v| StatValue::Int(v.into())),
    )
}

/// Minimum and maximum of a float column; none when it holds a NaN, which
/// makes them meaningless for pruning. Arrow orders floats totally, so a
/// NaN is the maximum (or, with its sign bit set, the minimum) if present.
fn float_range(c: &Float64Array) -> (Option<StatValue>, Option<StatValue>) {
    match (compute::min(c), compute::max(c)) {
        (Some(lo), Some(hi)) if !lo.is_nan() && !hi.is_nan() => {
            (Some(StatValue::Float(lo)), Some(StatValue::Float(hi)))
        }
        _ => (None, None),
    }
}

/// The statistics of a file written batch by batch, equal to
/// [`column_stats`] of all its rows. The ranges are the ones the Parquet
/// writer computed for its column chunks (comparing every value again was a
/// twentieth of a load's work); what Parquet leaves out is counted here:
/// NaN, which its ranges skip but which makes ours unknown.
#[derive(Debug)]
pub struct WrittenStats {
    schema: SchemaRef,
    nulls: Vec<u64>,
    nan: Vec<bool>,
}

impl WrittenStats {
    /// Statistics of a file of rows of `schema`, the writer's schema.
    pub fn new(schema: SchemaRef) -> Self {
        let columns = schema.fields().len();
        WrittenStats {
            schema,
            nulls: vec![0; columns],
            nan: vec![false; columns],
        }
    }

    /// Counts a batch handed to the writer (of the schema given at
    /// [`WrittenStats::new`]).
    pub fn add(&mut self, batch: &RecordBatch) {
        for (i, col) in batch.columns().iter().enumerate().take(self.nulls.len()) {
            self.nulls[i] += col.null_count() as u64;
            self.nan[i] = self.nan[i] || has_nan(col);
        }
    }

    /// The statistics of every row added, given the row groups the writer
    /// flushed (all of them: call after its last flush).
    pub fn finish(self, row_groups: &[RowGroupMetaData]) -> BTreeMap<String, ColumnStats> {
        let mut out = BTreeMap::new();
        for (i, field) in self.schema.fields().iter().enumerate() {
            let nan = self.nan.get(i).copied().unwrap_or(false);
            let (min, max) = if nan {
                (None, None)
            } else {
                chunk_range(field, row_groups).unwrap_or((None, None))
            };
            let stats = ColumnStats {
                min,
                max,
                null_count: self.nulls.get(i).copied().unwrap_or(0),
            };
            out.insert(field.name().clone(), stats);
        }
        out
    }
}

/// Whether a float column holds a NaN among its valid values.
fn has_nan(col: &ArrayRef) -> bool {
    fn any<T: ArrowPrimitiveType>(c: &PrimitiveArray<T>, nan: impl Fn(&T::Native) -> bool) -> bool {
        // Blocks of values, so that the test vectorises; validity is looked
        // at only in a block holding a NaN (a NULL's slot may hold one).
        const BLOCK: usize = 64;
        c.values().chunks(BLOCK).enumerate().any(|(b, block)| {
            block.iter().fold(false, |found, v| found | nan(v))
                && (block.iter().enumerate()).any(|(i, v)| nan(v) && c.is_valid(b * BLOCK + i))
        })
    }
    match col.data_type() {
        DataType::Float64 => any(col.as_primitive::<Float64Type>(), |v| v.is_nan()),
        DataType::Float32 => any(col.as_primitive::<Float32Type>(), |v| v.is_nan()),
        _ => false,
    }
}

/// A column's minimum and maximum.
type Range = (Option<StatValue>, Option<StatValue>);

/// A column's range over the writer's chunks: `None` when some chunk with
/// values has no exact range (text longer than [`MAX_STAT_TEXT`], a type
/// [`column_stats`] keeps no range for), `(None, None)` when all are NULL.
fn chunk_range(field: &Field, row_groups: &[RowGroupMetaData]) -> Option<Range> {
    let (mut lo, mut hi): Range = (None, None);
    for rg in row_groups {
        let chunk = rg
            .columns()
            .iter()
            .find(|c| c.column_descr().path().parts() == [field.name().as_str()])?;
        let stats = chunk.statistics()?;
        let (Some(min), Some(max)) = (
            chunk_value(field, stats, true)?,
            chunk_value(field, stats, false)?,
        ) else {
            // No range: the chunk must be all NULL.
            if stats.null_count_opt() == Some(chunk.num_values() as u64) {
                continue;
            }
            return None;
        };
        if lo
            .as_ref()
            .is_none_or(|l| stat_order(&min, l) == Some(Ordering::Less))
        {
            lo = Some(min);
        }
        if hi
            .as_ref()
            .is_none_or(|h| stat_order(&max, h) == Some(Ordering::Greater))
        {
            hi = Some(max);
        }
    }
    Some((lo, hi))
}

/// A chunk's minimum (or maximum) as the column's kind of value: `Some(None)`
/// when the chunk records none, `None` when it cannot be used.
fn chunk_value(field: &Field, stats: &Statistics, min: bool) -> Option<Option<StatValue>> {
    fn pick<T>(s: &ValueStatistics<T>, min: bool) -> Option<Option<&T>> {
        let (v, exact) = if min {
            (s.min_opt(), s.min_is_exact())
        } else {
            (s.max_opt(), s.max_is_exact())
        };
        (v.is_none() || exact).then_some(v)
    }
    let value = match (field.data_type(), stats) {
        (DataType::Boolean, Statistics::Boolean(s)) => pick(s, min)?.map(|v| StatValue::Bool(*v)),
        (
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Date32,
            Statistics::Int32(s),
        ) => pick(s, min)?.map(|v| StatValue::Int(i64::from(*v))),
        (DataType::Int64 | DataType::Timestamp(_, _), Statistics::Int64(s)) => {
            pick(s, min)?.map(|v| StatValue::Int(*v))
        }
        (DataType::Float32, Statistics::Float(s)) => {
            pick(s, min)?.map(|v| StatValue::Float(f64::from(*v)))
        }
        (DataType::Float64, Statistics::Double(s)) => pick(s, min)?.map(|v| StatValue::Float(*v)),
        (DataType::Utf8, Statistics::ByteArray(s)) => match pick(s, min)? {
            None => None,
            Some(v) if v.len() > MAX_STAT_TEXT => return None,
            Some(v) => Some(StatValue::Str(
                std::str::from_utf8(v.data()).ok()?.to_string(),
            )),
        },
        _ => return None,
    };
    Some(value)
}

/// How two recorded values of one column compare (`None` across kinds).
fn stat_order(a: &StatValue, b: &StatValue) -> Option<Ordering> {
    match (a, b) {
        (StatValue::Int(a), StatValue::Int(b)) => Some(a.cmp(b)),
        (StatValue::Float(a), StatValue::Float(b)) => a.partial_cmp(b),
        (StatValue::Str(a), StatValue::Str(b)) => Some(a.cmp(b)),
        (StatValue::Bool(a), StatValue::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;
    use crate::schema::DAY_MICROS;

    /// The insertion sort and its hand-over give what the general stable
    /// sort gives: on rows nearly in order, on rows in no order (past the
    /// budget), and with many equal times (stability).
    #[test]
    fn rows_sort_by_time_as_a_stable_sort_does() {
        let mut seed = 42u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as i64
        };
        let nearly: Vec<i64> = (0..5000).map(|i| i * 60 + next() % 1000).collect();
        let random: Vec<i64> = (0..5000).map(|_| next() % 1_000_000).collect();
        let ties: Vec<i64> = (0..5000).map(|i| i / 7 * 10 - next() % 3 * 10).collect();
        let reversed: Vec<i64> = (0..5000).rev().collect();
        for t in [nearly, random, ties, reversed] {
            // Every third row, as one partition's share of a batch.
            let rows: Vec<u32> = (0..t.len() as u32).filter(|r| r % 3 != 1).collect();
            let mut expected = rows.clone();
            expected.sort_by_key(|r| t[*r as usize]);
            let mut got = rows;
            sort_rows_by_time(&mut got, &t);
            assert_eq!(got, expected);
        }
    }

    /// A NaN counts where its row is valid, in any block of values, and
    /// not in a NULL's slot.
    #[test]
    fn nan_is_found_only_among_valid_values() {
        let values = |nan_at: usize, null_at: Option<usize>| -> ArrayRef {
            let v: Vec<Option<f64>> = (0..300)
                .map(|i| {
                    if Some(i) == null_at {
                        None
                    } else if i == nan_at {
                        Some(f64::NAN)
                    } else {
                        Some(i as f64)
                    }
                })
                .collect();
            Arc::new(Float64Array::from(v))
        };
        assert!(has_nan(&values(0, None)));
        assert!(has_nan(&values(200, Some(3))));
        assert!(!has_nan(&values(400, Some(3))));
        // A NULL whose slot holds a NaN.
        let nulls = arrow::buffer::NullBuffer::from((0..300).map(|i| i != 130).collect::<Vec<_>>());
        let slots: Vec<f64> = (0..300)
            .map(|i| if i == 130 { f64::NAN } else { 1.0 })
            .collect();
        let hidden: ArrayRef = Arc::new(Float64Array::new(slots.into(), Some(nulls)));
        assert!(!has_nan(&hidden));
        let sliced = hidden.slice(100, 100);
        assert!(!has_nan(&sliced));
        let shown: ArrayRef = Arc::new(Float64Array::from(vec![1.0, f64::NAN]).slice(1, 1));
        assert!(has_nan(&shown));
    }

    /// Statistics taken from the writer's chunks, batch by batch and over
    /// several row groups, equal those of all rows at once, whatever the
    /// split: NaN (either sign) and text longer than the limit make a
    /// column's range unknown from the batch that has them on; all-NULL
    /// batches and row groups add only NULLs; every type keeps its range.
    #[test]
    fn written_stats_equal_whole_stats() {
        let long = "x".repeat(MAX_STAT_TEXT + 1);
        let edge = "y".repeat(MAX_STAT_TEXT);
        type Case<'a> = (Vec<Option<f64>>, Vec<Option<&'a str>>);
        let cases: Vec<Case> = vec![
            (
                vec![Some(3.0), None, Some(-1.0), Some(7.5), None, Some(2.0)],
                vec![Some("m"), Some("b"), None, Some("z"), Some("a"), None],
            ),
            (
                vec![None, None, Some(1.0), Some(f64::NAN), Some(0.5), None],
                vec![None, None, Some("c"), Some(long.as_str()), Some("d"), None],
            ),
            (
                vec![
                    Some(-f64::NAN),
                    None,
                    Some(0.0),
                    Some(-0.0),
                    Some(1.0),
                    None,
                ],
                vec![
                    None,
                    Some(edge.as_str()),
                    Some("é"),
                    Some(""),
                    None,
                    Some("~"),
                ],
            ),
            (
                vec![None, None, None, None, None, None],
                vec![None, None, None, None, None, None],
            ),
        ];
        for (floats, texts) in cases {
            let n = floats.len();
            let int = |i: usize| (texts[i].is_some()).then_some(i as i64 * 37 - 100);
            let whole = RecordBatch::try_from_iter(vec![
                (
                    "f",
                    Arc::new(Float64Array::from(floats.clone())) as ArrayRef,
                ),
                (
                    "f32",
                    Arc::new(arrow::array::Float32Array::from(
                        floats
                            .iter()
                            .map(|v| v.map(|v| v as f32))
                            .collect::<Vec<_>>(),
                    )) as ArrayRef,
                ),
                ("s", Arc::new(StringArray::from(texts.clone())) as ArrayRef),
                (
                    "i8",
                    Arc::new(arrow::array::Int8Array::from_iter(
                        (0..n).map(|i| int(i).map(|v| (v % 100) as i8)),
                    )) as ArrayRef,
                ),
                (
                    "i16",
                    Arc::new(arrow::array::Int16Array::from_iter(
                        (0..n).map(|i| int(i).map(|v| v as i16)),
                    )) as ArrayRef,
                ),
                (
                    "i32",
                    Arc::new(arrow::array::Int32Array::from_iter(
                        (0..n).map(|i| int(i).map(|v| v as i32)),
                    )) as ArrayRef,
                ),
                (
                    "i64",
                    Arc::new(arrow::array::Int64Array::from_iter((0..n).map(int))) as ArrayRef,
                ),
                (
                    "d",
                    Arc::new(arrow::array::Date32Array::from_iter(
                        (0..n).map(|i| int(i).map(|v| v as i32)),
                    )) as ArrayRef,
                ),
                (
                    "ts",
                    Arc::new(TimestampMicrosecondArray::from_iter((0..n).map(int))) as ArrayRef,
                ),
                (
                    "tss",
                    Arc::new(arrow::array::TimestampSecondArray::from_iter(
                        (0..n).map(int),
                    )) as ArrayRef,
                ),
                (
                    "tsn",
                    Arc::new(arrow::array::TimestampNanosecondArray::from_iter(
                        (0..n).map(int),
                    )) as ArrayRef,
                ),
                (
                    "b",
                    Arc::new(BooleanArray::from_iter(
                        (0..n).map(|i| int(i).map(|v| v % 3 == 0)),
                    )) as ArrayRef,
                ),
                (
                    "bin",
                    Arc::new(arrow::array::BinaryArray::from_iter(
                        texts.iter().map(|t| t.map(str::as_bytes)),
                    )) as ArrayRef,
                ),
            ])
            .expect("batch");
            let expected = column_stats(&whole).expect("stats");
            for cut in [[1, 2], [2, 4], [3, 3], [0, 5]] {
                for group_rows in [2, 3, 1024] {
                    let props = writer_properties(&whole)
                        .expect("properties")
                        .into_builder()
                        .set_max_row_group_row_count(Some(group_rows))
                        .build();
                    let mut writer = ArrowWriter::try_new(Vec::new(), whole.schema(), Some(props))
                        .expect("writer");
                    let mut stats = WrittenStats::new(whole.schema());
                    let mut at = 0;
                    for end in [cut[0], cut[1], whole.num_rows()] {
                        let part = whole.slice(at, end - at);
                        writer.write(&part).expect("write");
                        stats.add(&part);
                        at = end;
                    }
                    writer.flush().expect("flush");
                    let got = stats.finish(writer.flushed_row_groups());
                    assert_eq!(
                        got, expected,
                        "cut at {cut:?}, groups of {group_rows}, {floats:?} {texts:?}"
                    );
                }
            }
        }
    }

    /// A NaN anywhere (either sign, first, last or among NULLs) leaves a
    /// float column's range out, so pruning never skips a file holding a
    /// value that compares greater than every number; integers of every
    /// width and timestamps keep their range.
    #[test]
    fn ranges_of_each_type_and_nan_anywhere() {
        let stats = |col: ArrayRef| {
            let b = RecordBatch::try_from_iter(vec![("c", col)]).expect("batch");
            let s = column_stats(&b)
                .expect("stats")
                .remove("c")
                .expect("column");
            (s.min, s.max)
        };
        let neg_nan = -f64::NAN;
        for values in [
            vec![Some(f64::NAN), Some(1.0), Some(2.0)],
            vec![Some(1.0), Some(2.0), Some(f64::NAN)],
            vec![None, Some(neg_nan), Some(2.0)],
            vec![Some(f64::NAN)],
        ] {
            assert_eq!(
                stats(Arc::new(Float64Array::from(values.clone()))),
                (None, None),
                "{values:?}"
            );
        }
        assert_eq!(
            stats(Arc::new(Float64Array::from(vec![
                Some(2.0),
                None,
                Some(-0.5),
                Some(f64::INFINITY)
            ]))),
            (
                Some(StatValue::Float(-0.5)),
                Some(StatValue::Float(f64::INFINITY))
            )
        );
        assert_eq!(
            stats(Arc::new(arrow::array::Float32Array::from(vec![
                1.5f32,
                f32::NAN
            ]))),
            (None, None)
        );
        assert_eq!(
            stats(Arc::new(arrow::array::Int16Array::from(vec![
                Some(-7i16),
                None,
                Some(300)
            ]))),
            (Some(StatValue::Int(-7)), Some(StatValue::Int(300)))
        );
        assert_eq!(
            stats(Arc::new(arrow::array::Int32Array::from(vec![i32::MIN, 0]))),
            (
                Some(StatValue::Int(i64::from(i32::MIN))),
                Some(StatValue::Int(0))
            )
        );
        assert_eq!(
            stats(Arc::new(
                TimestampMicrosecondArray::from(vec![5, -3]).with_timezone("UTC")
            )),
            (Some(StatValue::Int(-3)), Some(StatValue::Int(5)))
        );
    }

    fn def() -> TableDef {
        let schema = crate::schema::test_schema();
        TableDef::new(1, "events", &schema, None, None, None, None).expect("def")
    }

    fn batch(def: &TableDef, ts: Vec<i64>, models: Vec<&str>) -> RecordBatch {
        let n = ts.len();
        RecordBatch::try_new(
            def.schema().expect("schema"),
            vec![
                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
                Arc::new(StringArray::from(models)),
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            ],
        )
        .expect("batch")
    }

    /// Each slice's partition, time bucket and row count.
    fn slice_keys(slices: &[PartitionSlice]) -> Vec<(Option<&str>, i64, usize)> {
        slices
            .iter()
            .map(|s| (s.partition.as_deref(), s.bucket_start, s.batch.num_rows()))
            .collect()
    }

    #[test]
    fn splits_by_model_and_day_sorted_by_time() {
        let def = def();
        let b = batch(
            &def,
            vec![DAY_MICROS + 5, 3, 1, 2],
            vec!["a", "b", "a", "a"],
        );
        let parts = split_partitions(&b, &def).expect("split");
        assert_eq!(
            slice_keys(&parts),
            [
                (Some("a"), 0, 2),
                (Some("a"), DAY_MICROS, 1),
                (Some("b"), 0, 1)
            ]
        );
        let first = time_values(&parts[0].batch, &def).expect("times");
        assert_eq!(first.values().to_vec(), vec![1, 2]);
    }

    /// Rows out of time order within a partition come out sorted, rows of
    /// equal time in the order they arrived.
    #[test]
    fn split_sorts_each_slice_stably() {
        let def = def();
        let b = batch(&def, vec![5, 3, 5, 1, 4], vec!["a", "b", "a", "a", "b"]);
        let order = |p: &PartitionSlice| {
            let arrival = p
                .batch
                .column(2)
                .as_primitive::<Float64Type>()
                .values()
                .to_vec();
            let times = time_values(&p.batch, &def)
                .expect("times")
                .values()
                .to_vec();
            (times, arrival)
        };
        let parts = split_partitions(&b, &def).expect("split");
        assert_eq!(order(&parts[0]), (vec![1, 5, 5], vec![3.0, 0.0, 2.0]));
        assert_eq!(order(&parts[1]), (vec![3, 4], vec![1.0, 4.0]));
        let one = batch(&def, vec![5, 1, 5, 1], vec!["a"; 4]);
        let parts = split_partitions(&one, &def).expect("split");
        assert_eq!(
            order(&parts[0]),
            (vec![1, 1, 5, 5], vec![1.0, 3.0, 0.0, 2.0])
        );
    }

    #[test]
    fn paths_are_hive_style_and_percent_encoded() {
        let def = def();
        let p = file_path(&def, Some("orion/large=1"), 0, "r1", 3);
        assert_eq!(
            p,
            "events/model=orion%2Flarge%3D1/date=1970-01-01/0-r1-000003.parquet"
        );
    }

    #[test]
    fn conform_names_the_null_row() {
        let def = def();
        let input = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new(
                    "ts",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true,
                ),
                Field::new("model", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![1, 2]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .expect("batch");
        let err = conform(&input, &def, &def.schema().expect("schema")).unwrap_err();
        assert!(err.to_string().contains("\"model\""), "{err}");
        assert!(err.to_string().contains("row 2"), "{err}");
    }

    /// A small dictionary of text stays one for a bulk load (and splits as
    /// its text would); a large one is cast to text, and so is one with
    /// NULL among its values, whose NULL rows then meet NOT NULL.
    #[test]
    fn loads_keep_only_small_dictionaries_of_text() {
        use arrow::array::{DictionaryArray, Int32Array};
        let def = def();
        let schema = def.schema().expect("schema");
        let with_model = |values: StringArray| {
            let keys = Int32Array::from(vec![0, 1, 0]);
            let model =
                DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).expect("dictionary");
            let ts = TimestampMicrosecondArray::from(vec![3, 2, DAY_MICROS]).with_timezone("UTC");
            let b = RecordBatch::try_from_iter(vec![
                ("ts", Arc::new(ts) as ArrayRef),
                ("model", Arc::new(model) as ArrayRef),
            ])
            .expect("batch");
            conform_keeping_dictionaries(&b, &def, &schema)
        };
        let small = with_model(StringArray::from(vec!["a", "b"])).expect("small");
        assert!(matches!(
            small.schema().field(1).data_type(),
            DataType::Dictionary(_, _)
        ));
        let slices = split_partitions(&small, &def).expect("split");
        assert_eq!(
            slice_keys(&slices),
            [
                (Some("a"), 0, 1),
                (Some("a"), DAY_MICROS, 1),
                (Some("b"), 0, 1)
            ]
        );

        let long = |i: usize| format!("{i:0>100}");
        let large = with_model(StringArray::from_iter_values((0..1_000).map(long))).expect("large");
        assert_eq!(large.schema().field(1).data_type(), &DataType::Utf8);
        assert_eq!(large.column(1).as_string::<i32>().value(1), long(1));
        let null_value = with_model(StringArray::from(vec![Some("a"), None])).unwrap_err();
        assert!(
            matches!(&null_value, StorageError::NotNull(m) if m.contains("row 2")),
            "{null_value}"
        );
    }

    /// The Parquet writer (patched, vendor/parquet/LOOKOUT.md) writes text
    /// given as a dictionary byte for byte as the same text given plain:
    /// unused and unordered values, NULL keys, several pages per chunk,
    /// page statistics, bloom filters, and dictionaries larger than a
    /// mini-batch (the writer's own per-row path).
    #[test]
    fn the_writer_writes_dictionaries_of_text_as_their_text() {
        use arrow::array::{DictionaryArray, Int32Array};
        use arrow::compute::cast;
        let rows = 5_000;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % n
        };
        let dictionary = |distinct: usize, keys: Vec<Option<i32>>| {
            let values =
                StringArray::from_iter_values((0..distinct).rev().map(|i| format!("v{}", i * 7)));
            let array =
                DictionaryArray::<Int32Type>::try_new(Int32Array::from(keys), Arc::new(values))
                    .expect("dictionary");
            Arc::new(array) as ArrayRef
        };
        let few: Vec<_> = (0..rows)
            .map(|_| (next(10) != 0).then(|| next(12) as i32))
            .collect();
        let many: Vec<_> = (0..rows).map(|_| Some(next(3_000) as i32)).collect();
        let constant = vec![Some(3); rows];
        let columns = [
            dictionary(40, few),
            dictionary(3_000, many),
            dictionary(5, constant),
        ];
        let names = ["few", "many", "constant"];
        let text_schema = Arc::new(Schema::new(
            names.map(|n| Field::new(n, DataType::Utf8, true)).to_vec(),
        ));
        let as_text: Vec<ArrayRef> = columns
            .iter()
            .map(|c| cast(c, &DataType::Utf8).expect("cast"))
            .collect();
        let dict_fields = names.map(|n| Field::new(n, columns[0].data_type().clone(), true));
        let batches = [
            RecordBatch::try_new(
                Arc::new(Schema::new(dict_fields.to_vec())),
                columns.to_vec(),
            ),
            RecordBatch::try_new(Arc::clone(&text_schema), as_text),
        ]
        .map(|b| b.expect("batch"));
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_data_page_row_count_limit(700)
            .set_write_batch_size(512)
            .set_bloom_filter_enabled(true)
            .build();
        let files = batches.map(|batch| {
            let mut writer =
                ArrowWriter::try_new(Vec::new(), Arc::clone(&text_schema), Some(props.clone()))
                    .expect("writer");
            for start in (0..rows).step_by(1_500) {
                let len = 1_500.min(rows - start);
                writer.write(&batch.slice(start, len)).expect("write");
            }
            writer.into_inner().expect("close")
        });
        assert!(files[0].len() > 10_000);
        assert!(files[0] == files[1], "the files differ");
    }

    /// Text whose values nearly all differ is written without a dictionary;
    /// text that repeats, and text too short to judge, keeps one.
    #[test]
    fn dictionaries_only_for_text_that_repeats() {
        let n = 2000;
        let ids: StringArray = (0..n).map(|i| Some(format!("req-{i}"))).collect();
        let models: StringArray = (0..n).map(|i| Some(format!("m{}", i % 5))).collect();
        let few: StringArray = (0..10)
            .map(|i| Some(format!("x{i}")))
            .chain((10..n).map(|_| None))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("request_id", DataType::Utf8, true),
            Field::new("model", DataType::Utf8, true),
            Field::new("few", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(models), Arc::new(few)])
            .expect("batch");
        let props = writer_properties(&b).expect("properties");
        let dict = |c: &str| props.dictionary_enabled(&ColumnPath::from(c));
        assert!(!dict("request_id"));
        assert!(dict("model"));
        assert!(dict("few"));
    }

    /// Times are bit-packed deltas without zstd, distinct text keeps its
    /// lengths apart; floating-point noise is stored uncompressed, rounded
    /// measurements compressed; all read back as written.
    #[test]
    fn compression_only_where_it_pays() {
        let n: usize = 20_000;
        let mut state = 42u64;
        let mut noise = || {
            // splitmix64: every mantissa bit varies.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as f64 / u64::MAX as f64
        };
        let noisy: Float64Array = (0..n).map(|_| Some(noise())).collect();
        let rounded: Float64Array = (0..n)
            .map(|i| Some(((i * 7919) % 5000) as f64 / 10.0))
            .collect();
        let few: Float64Array = (0..n).map(|i| (i < 100).then(&mut noise)).collect();
        let ts = TimestampMicrosecondArray::from_iter_values((0..n as i64).map(|i| i * 1_000_003));
        let ids: StringArray = (0..n)
            .map(|i| (i % 7 != 0).then(|| format!("{:016x}", i * 2_654_435_761)))
            .collect();
        let b = RecordBatch::try_from_iter(vec![
            ("noisy", Arc::new(noisy) as ArrayRef),
            ("rounded", Arc::new(rounded) as ArrayRef),
            ("few", Arc::new(few) as ArrayRef),
            ("ts", Arc::new(ts) as ArrayRef),
            ("id", Arc::new(ids) as ArrayRef),
        ])
        .expect("batch");
        let props = writer_properties(&b).expect("properties");
        let compression = |c: &str| props.compression(&ColumnPath::from(c));
        assert_eq!(compression("noisy"), Compression::UNCOMPRESSED);
        assert!(matches!(compression("rounded"), Compression::ZSTD(_)));
        assert!(matches!(compression("few"), Compression::ZSTD(_)));
        assert_eq!(compression("ts"), Compression::UNCOMPRESSED);
        assert_eq!(
            props.encoding(&ColumnPath::from("ts")),
            Some(Encoding::DELTA_BINARY_PACKED)
        );
        let (bytes, _) = encode_parquet(&b).expect("encode");
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let file = SerializedFileReader::new(Bytes::from(bytes.clone())).expect("file");
        let chunk = |i: usize| file.metadata().row_group(0).column(i).clone();
        assert_eq!(chunk(0).compression(), Compression::UNCOMPRESSED);
        assert!(
            chunk(3)
                .encodings()
                .any(|e| e == Encoding::DELTA_BINARY_PACKED)
        );
        assert!(
            chunk(4)
                .encodings()
                .any(|e| e == Encoding::DELTA_LENGTH_BYTE_ARRAY)
        );
        // Deltas of regular times take a fraction of the plain 8 bytes.
        assert!(chunk(3).compressed_size() < (n * 8 / 4) as i64);
        let back = decode_parquet(Bytes::from(bytes)).expect("decode");
        assert_eq!(
            compute::concat_batches(&b.schema(), &back).expect("concat"),
            b
        );
    }
}
