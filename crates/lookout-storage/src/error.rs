use thiserror::Error;

/// Errors raised by the storage engine.
///
/// The variants are coarse on purpose: callers map them to user-facing error
/// classes (SQLSTATEs in the server), so each one names a kind of failure,
/// not a code path.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The table named does not exist.
    #[error("table \"{0}\" does not exist")]
    TableNotFound(String),
    /// A table of that name exists already.
    #[error("table \"{0}\" already exists")]
    TableExists(String),
    /// A table others are derived from cannot be dropped before them.
    #[error(
        "cannot drop table \"{table}\" because \"{dependent}\" depends on it (drop the rollup, or for a sampled table's held area ALTER TABLE ... RESET SAMPLING, first)"
    )]
    Dependent {
        /// The table asked to drop.
        table: String,
        /// A table derived from it.
        dependent: String,
    },
    /// A column named in a statement does not exist, or exists already.
    #[error("{0}")]
    Column(String),
    /// A NULL in a NOT NULL column.
    #[error("{0}")]
    NotNull(String),
    /// Rows that do not fit the table: wrong type, NULL in a NOT NULL column,
    /// a timestamp beyond the future horizon.
    #[error("{0}")]
    InvalidData(String),
    /// A value its column's declared type refuses (malformed JSON), with the
    /// SQLSTATE that type gives.
    #[error("{message}")]
    InvalidValue {
        /// The SQLSTATE of the refusal.
        sqlstate: &'static str,
        /// What is wrong, naming the column.
        message: String,
    },
    /// A table definition that cannot be stored (bad option, bad time column).
    #[error("{0}")]
    InvalidDefinition(String),
    /// Another process owns the data directory.
    #[error(
        "data directory {path} is in use by another Lookout process ({holder}; lock file {lock})"
    )]
    Locked {
        /// The data directory.
        path: String,
        /// The lock file that could not be taken.
        lock: String,
        /// What the holder wrote into the lock file: its process id and,
        /// for a server, the address it serves.
        holder: String,
    },
    /// A write that raced with a change to its table and was dropped whole;
    /// running it again is safe.
    #[error("{0}")]
    Conflict(String),
    /// A write to a read-only replica; the text says what was refused.
    #[error("cannot {0} on a read-only replica (write to the store's writer)")]
    ReadOnly(String),
    /// This process is no longer the store's writer (another took its lease).
    #[error("{0}")]
    Fenced(String),
    /// The engine is shutting down and takes no more writes.
    #[error("the storage engine is shutting down")]
    ShuttingDown,
    /// Stored data that does not decode: a damaged manifest or file.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Local filesystem error (WAL, lock file).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Object store error (Parquet files, manifest).
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Arrow error while converting or validating batches.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet encoding or decoding error.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// Result type of the storage engine.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
