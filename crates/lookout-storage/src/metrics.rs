//! The storage engine's instruments in the database's metrics registry.

use lookout_metrics::{Counter, Family, Histogram, Labels, Registry, seconds_histogram};

/// What the engine counts and times.
#[derive(Debug, Clone)]
pub(crate) struct StorageMetrics {
    /// Rows acknowledged through the WAL (derived rows included); the
    /// family's series resolved once here, not at every group commit.
    pub(crate) rows_via_wal: Counter,
    /// Rows bulk loads committed straight to Parquet.
    pub(crate) rows_via_bulk_load: Counter,
    /// One WAL group commit: the write and its fsync.
    pub(crate) wal_sync: Histogram,
    /// One flush of buffered rows to Parquet, commit included.
    pub(crate) flush: Histogram,
    /// One compaction pass over every table.
    pub(crate) compaction: Histogram,
    /// Files compaction replaced.
    pub(crate) compacted_files: Counter,
}

impl StorageMetrics {
    pub(crate) fn register(registry: &Registry) -> StorageMetrics {
        let rows_written: Family<Labels<1>, Counter> = registry.register(
            "rows_written",
            "Rows acknowledged by storage, by path (wal: inserts and COPY through the write-ahead log; bulk_load: loads committed straight to Parquet)",
            Family::default(),
        );
        // Each series in its own statement: `get_or_create` hands back a read
        // guard, and a second call while it lives would wait on itself.
        let rows_via_wal = rows_written.get_or_create(&[("via", "wal")]).clone();
        let rows_via_bulk_load = rows_written.get_or_create(&[("via", "bulk_load")]).clone();
        StorageMetrics {
            rows_via_wal,
            rows_via_bulk_load,
            wal_sync: registry.register(
                "wal_sync_seconds",
                "Time to append one group commit to the write-ahead log and fsync it",
                seconds_histogram(),
            ),
            flush: registry.register(
                "flush_seconds",
                "Time to flush buffered rows to Parquet files and commit them",
                seconds_histogram(),
            ),
            compaction: registry.register(
                "compaction_seconds",
                "Time of one compaction pass over every table",
                seconds_histogram(),
            ),
            compacted_files: registry.register(
                "compacted_files",
                "Parquet files compaction merged or rewrote",
                Counter::default(),
            ),
        }
    }
}
