//! Delta Lake tables as Lookout external tables.
//!
//! `CREATE EXTERNAL TABLE t STORED AS DELTA LOCATION '/data/warehouse/t'`
//! reads a Delta table another engine writes (Spark, Databricks, the Python
//! `deltalake` package, Polars), so monitoring data can be joined with the
//! warehouse's. The table's log is read through the Delta kernel
//! (`delta_kernel`, the Delta project's own reader, rather than a log
//! replay of our own): each scan replays the latest version, applies
//! deletion vectors, column mapping and partition values as the protocol
//! says, and refuses tables whose reader features it does not know.

pub mod publish;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use delta_kernel::engine::arrow_conversion::TryFromKernel;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::scan::state::ScanFile;
use delta_kernel::{Engine, KernelError, Snapshot};
use delta_kernel_default_engine::DefaultEngine;
use delta_kernel_default_engine::executor::tokio::TokioBackgroundExecutor;
use lookout_query::ext::{ExternalFormat, SqlState};
use lookout_query::{Lookout, QueryError, Result, ServerFile};
use url::Url;

/// Lets `CREATE EXTERNAL TABLE ... STORED AS DELTA` read Delta tables.
pub fn install(lookout: &Lookout) {
    lookout.register_external_format("delta", Arc::new(DeltaFormat));
}

/// The Delta Lake reader.
#[derive(Debug)]
pub struct DeltaFormat;

#[async_trait]
impl ExternalFormat for DeltaFormat {
    async fn schema(&self, location: &ServerFile) -> Result<SchemaRef> {
        let root = table_url(location.path())?;
        tokio::task::spawn_blocking(move || {
            let engine = engine();
            let snapshot = Snapshot::builder_for(root.as_str())
                .build(&engine)
                .map_err(|e| kernel_error(&root, e))?;
            let schema = arrow::datatypes::Schema::try_from_kernel(snapshot.schema().as_ref())
                .map_err(|e| unreadable(&root, e))?;
            Ok(Arc::new(schema))
        })
        .await
        .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))?
    }

    fn open(&self, location: ServerFile, columns: SchemaRef) -> Result<Arc<dyn TableProvider>> {
        Ok(Arc::new(DeltaTable {
            root: table_url(location.path())?,
            confined: location.confined().then(|| location.path().to_path_buf()),
            columns,
        }))
    }
}

/// One Delta table, read at its latest version by each scan.
#[derive(Debug)]
struct DeltaTable {
    root: Url,
    /// Set when the server confines files to `allowed_dirs`: every data
    /// file must then resolve below this directory.
    confined: Option<PathBuf>,
    columns: SchemaRef,
}

#[async_trait]
impl TableProvider for DeltaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.columns)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let output = match projection {
            Some(p) => Arc::new(self.columns.project(p)?),
            None => Arc::clone(&self.columns),
        };
        let read = DeltaRead {
            root: self.root.clone(),
            confined: self.confined.clone(),
            table: Arc::clone(&self.columns),
            output: Arc::clone(&output),
        };
        let partition: Arc<dyn PartitionStream> = Arc::new(read);
        Ok(Arc::new(StreamingTableExec::try_new(
            output,
            vec![partition],
            None,
            Vec::new(),
            false,
            limit,
        )?))
    }
}

/// One scan of a Delta table: the kernel replays the log and reads the
/// files on a blocking thread, handing batches over a bounded channel.
#[derive(Debug)]
struct DeltaRead {
    root: Url,
    confined: Option<PathBuf>,
    /// The columns recorded when the table was created.
    table: SchemaRef,
    /// The columns this scan returns.
    output: SchemaRef,
}

impl PartitionStream for DeltaRead {
    fn schema(&self) -> &SchemaRef {
        &self.output
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(Arc::clone(&self.output), 2);
        let tx = builder.tx();
        let read = DeltaRead {
            root: self.root.clone(),
            confined: self.confined.clone(),
            table: Arc::clone(&self.table),
            output: Arc::clone(&self.output),
        };
        builder.spawn_blocking(move || {
            let to_df = |e: QueryError| DataFusionError::External(Box::new(e));
            for batch in read.batches().map_err(to_df)? {
                let batch = batch.map_err(to_df)?;
                if tx.blocking_send(Ok(batch)).is_err() {
                    // The query stopped reading (LIMIT, cancel, client gone).
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}

impl DeltaRead {
    /// The scan's batches in the output columns.
    fn batches(&self) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
        let engine: Arc<dyn Engine> = Arc::new(engine());
        let root = self.root.clone();
        let snapshot = Snapshot::builder_for(root.as_str())
            .build(engine.as_ref())
            .map_err(|e| kernel_error(&root, e))?;
        let current = arrow::datatypes::Schema::try_from_kernel(snapshot.schema().as_ref())
            .map_err(|e| unreadable(&root, e))?;
        self.check_columns(&current)?;
        // Read the output columns. The kernel needs at least one column
        // stored in the files (partition values live in the log): a scan of
        // none (count(*)) or of partition columns only also reads the first
        // stored column, and `conform` drops it again.
        let wanted: Vec<String> = self
            .output
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let build = |names: &[String]| -> Result<delta_kernel::scan::Scan> {
            let read_schema = snapshot
                .schema()
                .project(names)
                .map_err(|e| kernel_error(&root, e))?;
            Arc::clone(&snapshot)
                .scan_builder()
                .with_schema(read_schema)
                .build()
                .map_err(|e| kernel_error(&root, e))
        };
        let mut scan = None;
        if !wanted.is_empty() {
            let candidate = build(&wanted)?;
            if candidate.physical_schema().fields().len() > 0 {
                scan = Some(candidate);
            }
        }
        for extra in self.table.fields() {
            if scan.is_some() {
                break;
            }
            if wanted.contains(extra.name()) {
                continue;
            }
            let mut names = wanted.clone();
            names.push(extra.name().clone());
            let candidate = build(&names)?;
            if candidate.physical_schema().fields().len() > 0 {
                scan = Some(candidate);
            }
        }
        let scan = scan.ok_or_else(|| {
            QueryError::new(
                SqlState::FeatureNotSupported,
                format!("the Delta table at {root} stores no columns in its data files"),
            )
        })?;
        if let Some(dir) = &self.confined {
            check_confined(&scan, engine.as_ref(), &root, dir)?;
        }
        let output = Arc::clone(&self.output);
        let batches = scan
            .execute(Arc::clone(&engine))
            .map_err(|e| kernel_error(&root, e))?;
        Ok(batches.map(move |data| {
            let data = data.map_err(|e| kernel_error(&root, e))?;
            let batch: RecordBatch = ArrowEngineData::try_from_engine_data(data)
                .map_err(|e| kernel_error(&root, e))?
                .record_batch()
                .clone();
            conform(batch, &output).map_err(|e| unreadable(&root, e))
        }))
    }

    /// The table's current schema must still hold every recorded column
    /// with its type: another writer may have changed it since `CREATE
    /// EXTERNAL TABLE`, and answering with other types would be wrong.
    fn check_columns(&self, current: &Schema) -> Result<()> {
        for field in self.table.fields() {
            match current.field_with_name(field.name()) {
                Ok(now) if now.data_type() == field.data_type() => {}
                Ok(now) => {
                    return Err(QueryError::new(
                        SqlState::DatatypeMismatch,
                        format!(
                            "column \"{}\" of the Delta table at {} is now {}, not {}; drop and create the external table again",
                            field.name(),
                            self.root,
                            now.data_type(),
                            field.data_type()
                        ),
                    ));
                }
                Err(_) => {
                    return Err(QueryError::new(
                        SqlState::UndefinedColumn,
                        format!(
                            "column \"{}\" no longer exists in the Delta table at {}; drop and create the external table again",
                            field.name(),
                            self.root
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `batch` with the output's columns (by name) and field definitions; no
/// columns at all keeps the row count.
fn conform(
    batch: RecordBatch,
    output: &SchemaRef,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let columns = output
        .fields()
        .iter()
        .map(|f| {
            batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!(
                    "column {} missing from the scan",
                    f.name()
                ))
            })
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(output), columns, &options)
}

/// Refuses a scan whose files resolve outside `dir`: a Delta log may name
/// files by absolute URL or with `..`, and a file may be a symbolic link;
/// under `allowed_dirs` neither may reach beyond the table's directory.
fn check_confined(
    scan: &delta_kernel::scan::Scan,
    engine: &dyn Engine,
    root: &Url,
    dir: &Path,
) -> Result<()> {
    fn collect(paths: &mut Vec<String>, file: ScanFile) {
        paths.push(file.path);
    }
    let mut paths = Vec::new();
    for metadata in scan
        .scan_metadata(engine)
        .map_err(|e| kernel_error(root, e))?
    {
        let metadata = metadata.map_err(|e| kernel_error(root, e))?;
        paths = metadata
            .visit_scan_files(paths, collect)
            .map_err(|e| kernel_error(root, e))?;
    }
    for path in paths {
        let inside = root
            .join(&path)
            .ok()
            .filter(|url| url.scheme() == "file")
            .and_then(|url| url.to_file_path().ok())
            .and_then(|file| file.canonicalize().ok())
            .is_some_and(|file| file.starts_with(dir));
        if !inside {
            return Err(QueryError::new(
                SqlState::InsufficientPrivilege,
                format!(
                    "the Delta table at {root} names a data file outside its directory ({path}), which this server's allowed_dirs do not permit"
                ),
            ));
        }
    }
    Ok(())
}

/// The table directory as the URL the kernel takes (a trailing slash, so
/// relative file paths join below it).
fn table_url(path: &Path) -> Result<Url> {
    Url::from_directory_path(path).map_err(|()| {
        QueryError::new(
            SqlState::InvalidName,
            format!("\"{}\" is not an absolute directory path", path.display()),
        )
    })
}

/// An engine over the local file system; the kernel runs its I/O on a
/// background runtime of its own, so this is called on a blocking thread.
fn engine() -> DefaultEngine<TokioBackgroundExecutor> {
    let store = Arc::new(delta_kernel::object_store::local::LocalFileSystem::new());
    DefaultEngine::builder(store).build()
}

/// A kernel error as the SQLSTATE a client can act on: no table there,
/// a table using features the kernel does not read, or a damaged one.
fn kernel_error(root: &Url, e: KernelError) -> QueryError {
    fn kind(e: &KernelError) -> (SqlState, &'static str) {
        match e {
            KernelError::Backtraced { source, .. } => kind(source),
            KernelError::FileNotFound(_)
            | KernelError::InvalidTableLocation(_)
            | KernelError::EmptyLog
            | KernelError::MissingVersion(_) => (SqlState::UndefinedFile, "is not a Delta table"),
            KernelError::Unsupported(_) => (
                SqlState::FeatureNotSupported,
                "uses a Delta feature Lookout cannot read",
            ),
            _ => (SqlState::DataCorrupted, "could not be read"),
        }
    }
    let (state, what) = kind(&e);
    QueryError::new(state, format!("the Delta table at {root} {what}: {e}"))
}

fn unreadable(root: &Url, e: impl std::fmt::Display) -> QueryError {
    QueryError::new(
        SqlState::FeatureNotSupported,
        format!("the Delta table at {root} could not be read: {e}"),
    )
}
