//! Bulk Parquet import and server-side file export.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use lookout_storage::{CreateTable, StorageError};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::properties::WriterProperties;

use crate::Lookout;
use crate::copy::{CopyEncoder, CopyFormat, CopyKind};
use crate::error::SqlState;
use crate::error::{QueryError, Result};

/// Called with the number of rows read so far.
pub type ImportProgress = Arc<dyn Fn(u64) + Send + Sync>;

fn open_error(path: &Path, e: impl std::fmt::Display) -> QueryError {
    QueryError::new(
        SqlState::UndefinedFile,
        format!("could not read Parquet file \"{}\": {e}", path.display()),
    )
}

/// The table a Parquet schema describes: the first timestamp column becomes
/// the (non-null) time column.
fn table_schema_from(file_schema: &Schema) -> Result<(Schema, String)> {
    let time = file_schema
        .fields()
        .iter()
        .find(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
        .map(|f| f.name().clone())
        .ok_or_else(|| {
            QueryError::new(
                SqlState::InvalidTableDefinition,
                "the Parquet file has no timestamp column to use as time column",
            )
        })?;
    let fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| {
            let nullable = f.name() != &time;
            Field::new(f.name(), f.data_type().clone(), nullable)
        })
        .collect();
    Ok((Schema::new(fields), time))
}

pub(crate) async fn import_parquet(
    lookout: &Lookout,
    table: &str,
    files: &[PathBuf],
    progress: Option<ImportProgress>,
) -> Result<u64> {
    let opened = files
        .iter()
        .map(|path| {
            std::fs::File::open(path)
                .map(|f| (path.clone(), f))
                .map_err(|e| open_error(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    import_opened(lookout, table, opened, progress).await
}

/// Loads Parquet files already opened (server-side COPY opens them through
/// its path check).
pub(crate) async fn import_opened(
    lookout: &Lookout,
    table: &str,
    files: Vec<(PathBuf, std::fs::File)>,
    progress: Option<ImportProgress>,
) -> Result<u64> {
    let Some((first, file)) = files.first() else {
        return Ok(0);
    };
    let storage = lookout.storage();
    if matches!(storage.table(table), Err(StorageError::TableNotFound(_))) {
        let file = file.try_clone().map_err(|e| open_error(first, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| open_error(first, e))?;
        let (schema, time) = table_schema_from(builder.schema())?;
        let request = CreateTable {
            time_column: Some(time),
            ..CreateTable::default()
        };
        storage.create_table(table, &schema, request, true).await?;
    }
    // Parquet is decoded on a thread of its own while the engine encodes.
    let (mut tx, rx) = mpsc::channel::<lookout_storage::Result<RecordBatch>>(4);
    let reader = std::thread::spawn(move || {
        let mut rows = 0u64;
        for (path, file) in files {
            let opened = reader_metadata(&file)
                .and_then(|metadata| {
                    ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
                        .with_batch_size(128 * 1024)
                        .build()
                })
                .map_err(|e| open_error(&path, e));
            let reader = match opened {
                Ok(r) => r,
                Err(e) => {
                    let _ = futures::executor::block_on(
                        tx.send(Err(StorageError::InvalidData(e.to_string()))),
                    );
                    return;
                }
            };
            for batch in reader {
                let item =
                    batch.map_err(|e| StorageError::InvalidData(open_error(&path, e).to_string()));
                if let Ok(b) = &item {
                    rows += b.num_rows() as u64;
                    if let Some(p) = &progress {
                        p(rows);
                    }
                }
                let failed = item.is_err();
                if futures::executor::block_on(tx.send(item)).is_err() || failed {
                    return;
                }
            }
        }
    });
    let loaded = lookout.ingest().bulk_load(table, rx).await;
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    loaded
}

/// How a file to import is read: as its schema says, except that text
/// columns whose every chunk is dictionary-encoded with a small dictionary
/// are read as Arrow dictionaries. The reader then hands over the file's
/// dictionary and its keys instead of expanding every value, and the load
/// moves keys (see `conform_keeping_dictionaries` in storage); the files it
/// writes hold the text as text.
fn reader_metadata(file: &std::fs::File) -> parquet::errors::Result<ArrowReaderMetadata> {
    let metadata = ArrowReaderMetadata::load(file, ArrowReaderOptions::new())?;
    let parquet = metadata.metadata();
    let columns = parquet.file_metadata().schema_descr();
    let schema = metadata.schema();
    let mut kept = false;
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            let leaf = (0..columns.num_columns())
                .find(|&i| columns.column(i).path().parts() == [field.name().as_str()]);
            let small_dictionaries = |leaf: usize| {
                parquet.num_row_groups() > 0
                    && parquet
                        .row_groups()
                        .iter()
                        .all(|rg| only_small_dictionary(rg.column(leaf)))
            };
            if field.data_type() == &DataType::Utf8 && leaf.is_some_and(small_dictionaries) {
                kept = true;
                let text =
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                field.as_ref().clone().with_data_type(text)
            } else {
                field.as_ref().clone()
            }
        })
        .collect();
    if !kept {
        return Ok(metadata);
    }
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    ArrowReaderMetadata::try_new(
        Arc::clone(parquet),
        ArrowReaderOptions::new().with_schema(Arc::new(schema)),
    )
}

/// Largest dictionary page (compressed, with its header) of a column read
/// as an Arrow dictionary: each slice of a load carries the dictionary with
/// its keys, and past a few thousand values the text is better copied.
const MAX_KEPT_DICTIONARY_BYTES: i64 = 64 * 1024;

/// Whether every data page of a column chunk is dictionary-encoded (the
/// writer never fell back to plain values) and its dictionary is small.
fn only_small_dictionary(chunk: &ColumnChunkMetaData) -> bool {
    let Some(dictionary_at) = chunk.dictionary_page_offset() else {
        return false;
    };
    chunk.page_encoding_stats_mask().is_some_and(|pages| {
        pages.is_only(Encoding::RLE_DICTIONARY) || pages.is_only(Encoding::PLAIN_DICTIONARY)
    }) && chunk
        .data_page_offset()
        .checked_sub(dictionary_at)
        .is_some_and(|bytes| (0..=MAX_KEPT_DICTIONARY_BYTES).contains(&bytes))
}

/// Writes query results to a server-side file; returns the row count.
pub(crate) async fn export_file(
    target: &crate::ServerFile,
    format: &CopyFormat,
    schema: SchemaRef,
    mut stream: SendableRecordBatchStream,
) -> Result<u64> {
    let path = target.path();
    let io = |e: std::io::Error| {
        QueryError::new(
            SqlState::IoError,
            format!("could not write \"{}\": {e}", path.display()),
        )
    };
    let mut rows = 0u64;
    match format.kind {
        CopyKind::Binary => {
            return Err(QueryError::unsupported(
                "COPY TO in binary format is not supported; use text, csv or parquet",
            ));
        }
        CopyKind::Parquet => {
            let file = target.create()?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut writer = ArrowWriter::try_new(file, schema, Some(props))
                .map_err(|e| QueryError::new(SqlState::IoError, e.to_string()))?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer = tokio::task::spawn_blocking(move || writer.write(&batch).map(|_| writer))
                    .await
                    .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))?
                    .map_err(|e| QueryError::new(SqlState::IoError, e.to_string()))?;
            }
            tokio::task::spawn_blocking(move || writer.close())
                .await
                .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))?
                .map_err(|e| QueryError::new(SqlState::IoError, e.to_string()))?;
        }
        CopyKind::Text | CopyKind::Csv => {
            use tokio::io::AsyncWriteExt;
            let mut file = tokio::fs::File::from_std(target.create()?);
            let mut encoder = CopyEncoder::new(format.clone());
            if let Some(h) = encoder.header(&schema) {
                file.write_all(h.as_bytes()).await.map_err(io)?;
            }
            let mut out = String::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                out.clear();
                for row in 0..batch.num_rows() {
                    encoder.encode_row(&batch, row, &mut out);
                }
                rows += batch.num_rows() as u64;
                file.write_all(out.as_bytes()).await.map_err(io)?;
            }
            file.sync_all().await.map_err(io)?;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, AsArray, StringArray, TimestampMicrosecondArray};
    use arrow::compute::{cast, concat_batches};

    use super::*;

    /// Text whose chunks are all dictionary pages with a small dictionary
    /// is read as a dictionary; text the writer stopped encoding with a
    /// dictionary, or with a large one, is read as text; the values are the
    /// same either way.
    #[test]
    fn low_cardinality_text_is_read_as_dictionaries() {
        let rows = 10_000usize;
        let text = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values((0..rows).map(f)))
        };
        let times =
            TimestampMicrosecondArray::from_iter_values(0..rows as i64).with_timezone("UTC");
        let written = RecordBatch::try_from_iter(vec![
            ("ts", Arc::new(times) as ArrayRef),
            (
                "segment",
                text(&|i| ["free", "pro", "team"][i % 3].to_string()),
            ),
            ("request_id", text(&|i| format!("request-{i:08}"))),
            ("prompt", text(&|i| format!("{:0>60}", i % 5_000))),
        ])
        .expect("batch");
        let mut file = tempfile::tempfile().expect("tempfile");
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(4_000))
            .set_column_dictionary_page_size_limit("request_id".into(), 4 * 1024)
            .build();
        let mut writer = ArrowWriter::try_new(
            file.try_clone().expect("clone"),
            written.schema(),
            Some(props),
        )
        .expect("writer");
        writer.write(&written).expect("write");
        writer.close().expect("close");

        let metadata = reader_metadata(&file).expect("metadata");
        let types: Vec<&DataType> = metadata
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type())
            .collect();
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert_eq!(types[1], &dictionary, "few values");
        assert_eq!(
            types[2],
            &DataType::Utf8,
            "the writer fell back to plain pages"
        );
        assert_eq!(types[3], &DataType::Utf8, "a dictionary of 300 KB");

        use std::io::Seek;
        file.rewind().expect("rewind");
        let read: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
                .with_batch_size(3_000)
                .build()
                .expect("reader")
                .collect::<std::result::Result<_, _>>()
                .expect("read");
        let read = concat_batches(&read[0].schema(), &read).expect("concat");
        for (i, column) in written.columns().iter().enumerate() {
            let got = cast(read.column(i), column.data_type()).expect("cast");
            assert_eq!(&got, column, "column {i}");
        }
        assert!(
            read.column(1)
                .as_dictionary_opt::<arrow::datatypes::Int32Type>()
                .is_some()
        );
    }
}
