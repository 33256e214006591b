//! Lookout's storage engine.
//!
//! Rows arrive as Arrow batches, are appended to a write-ahead log and
//! fsynced (concurrent writers share one fsync), then held in memory where
//! queries see them at once. Buffers are flushed to zstd Parquet files on an
//! [`object_store`], laid out by partition value and time bucket, and
//! recorded in a versioned manifest committed with create-if-absent. Deletes
//! are deletion vectors; compaction merges small files and purges deleted
//! rows; retention drops whole expired buckets.
//!
//! This crate knows nothing of SQL or the wire protocol.

pub mod batch;
pub mod clock;
mod engine;
mod error;
mod file_buffer;
mod lease;
pub mod manifest;
mod metrics;
pub mod schema;
mod wal;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{
    Combine, CreateTable, FilePin, MarkedRows, Replication, RowMarks, Storage, StorageOptions,
    TableSnapshot,
};
pub use error::{Result, StorageError};
pub use manifest::{ColumnStats, ExternalTable, FileMeta, Manifest, StatValue};
pub use schema::{
    ColumnDef, Derivation, SQL_TYPE_METADATA, TableDef, TableOptions, Versions, schema_of,
    sql_type_of, time_type,
};
