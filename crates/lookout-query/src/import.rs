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
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
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
            let opened = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| open_error(&path, e))
                .and_then(|b| {
                    b.with_batch_size(128 * 1024)
                        .build()
                        .map_err(|e| open_error(&path, e))
                });
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
