//! A bounded in-memory cache of decoded Parquet columns.
//!
//! A stored file never changes once written: new rows, compaction and
//! retention write files under new names (see `lookout_storage::file_path`)
//! and deletes live in the manifest's deletion vectors, applied when rows are
//! served. So a decoded column stays right for as long as its file is read,
//! and nothing needs invalidating: the columns of a file that compaction or
//! retention removed are never asked for again and are the first to leave
//! when the budget is reached (least recently used first).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::DataType;

/// Decoded columns of stored files, at most `budget` bytes of them.
#[derive(Debug)]
pub struct ColumnCache {
    budget: usize,
    state: Mutex<CacheState>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<ColumnKey, CachedColumn>,
    /// Entries by when they were last used, oldest first.
    recency: BTreeMap<u64, ColumnKey>,
    clock: u64,
    bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ColumnKey {
    file: String,
    column: String,
}

#[derive(Debug)]
struct CachedColumn {
    held: HeldColumn,
    bytes: usize,
    used: u64,
}

/// One file's decoded column as the cache holds it.
#[derive(Debug, Clone)]
pub(crate) struct HeldColumn {
    /// Every row's value, in the table's type.
    pub(crate) values: ArrayRef,
    /// For text of few distinct values, the same rows again as a dictionary
    /// array with one- or two-byte keys. Picking a few rows then copies
    /// their keys and strings from a small dictionary, where picking them
    /// from `values` reaches into a large buffer once per row (a cache miss
    /// each, most of a selective scan's time).
    pub(crate) codes: Option<ArrayRef>,
}

impl HeldColumn {
    /// A column held without codes.
    pub(crate) fn plain(values: ArrayRef) -> Self {
        HeldColumn {
            values,
            codes: None,
        }
    }

    fn memory_size(&self) -> usize {
        self.values.get_array_memory_size()
            + self.codes.as_ref().map_or(0, |c| c.get_array_memory_size())
    }
}

/// What the cache holds and how well it serves, for `lookout.column_cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// The configured budget in bytes (0: the cache is off).
    pub budget_bytes: u64,
    /// Bytes of decoded columns held.
    pub used_bytes: u64,
    /// Columns held (one file's column each).
    pub columns: u64,
    /// Distinct files with at least one column held.
    pub files: u64,
    /// Column reads served from memory.
    pub hits: u64,
    /// Column reads that decoded the file.
    pub misses: u64,
    /// Columns dropped to make room.
    pub evictions: u64,
}

impl ColumnCache {
    /// A cache holding at most `budget` bytes; 0 turns it off.
    pub fn new(budget: usize) -> Self {
        ColumnCache {
            budget,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Whether scans go through the cache.
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// The most bytes the cache holds.
    pub fn budget(&self) -> usize {
        self.budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // The state is consistent between statements; a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The decoded `column` of `file` if held with `data_type`, marked as
    /// just used. Counts a hit or a miss.
    pub(crate) fn get(&self, file: &str, column: &str, data_type: &DataType) -> Option<HeldColumn> {
        let mut state = self.lock();
        let key = ColumnKey {
            file: file.to_string(),
            column: column.to_string(),
        };
        state.clock += 1;
        let now = state.clock;
        let found = match state.entries.get_mut(&key) {
            Some(entry) if entry.held.values.data_type() == data_type => {
                let before = std::mem::replace(&mut entry.used, now);
                Some((before, entry.held.clone()))
            }
            _ => None,
        };
        match found {
            Some((before, values)) => {
                state.recency.remove(&before);
                state.recency.insert(now, key);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(values)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps `held` as the decoded `column` of `file`, making room by
    /// dropping the least recently used columns. A column larger than the
    /// whole budget is not kept.
    pub(crate) fn insert(&self, file: &str, column: &str, held: HeldColumn) {
        let bytes = held.memory_size();
        if bytes > self.budget {
            return;
        }
        let mut state = self.lock();
        let key = ColumnKey {
            file: file.to_string(),
            column: column.to_string(),
        };
        if let Some(old) = state.entries.remove(&key) {
            state.recency.remove(&old.used);
            state.bytes -= old.bytes;
        }
        while state.bytes + bytes > self.budget {
            let Some((_, oldest)) = state.recency.pop_first() else {
                break;
            };
            if let Some(gone) = state.entries.remove(&oldest) {
                state.bytes -= gone.bytes;
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        state.clock += 1;
        let used = state.clock;
        state.recency.insert(used, key.clone());
        state.bytes += bytes;
        state
            .entries
            .insert(key, CachedColumn { held, bytes, used });
    }

    /// What the cache holds now and its counters since the database opened.
    pub fn stats(&self) -> CacheStats {
        let state = self.lock();
        let files: std::collections::HashSet<&str> =
            state.entries.keys().map(|k| k.file.as_str()).collect();
        CacheStats {
            budget_bytes: self.budget as u64,
            used_bytes: state.bytes as u64,
            columns: state.entries.len() as u64,
            files: files.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;

    use super::*;

    fn column(rows: usize) -> HeldColumn {
        HeldColumn::plain(Arc::new(Int64Array::from_iter_values(0..rows as i64)))
    }

    #[test]
    fn least_recently_used_columns_leave_first() {
        let size = column(1000).memory_size();
        let cache = ColumnCache::new(size * 2 + size / 2);
        cache.insert("a.parquet", "x", column(1000));
        cache.insert("b.parquet", "x", column(1000));
        // Reading a makes b the oldest.
        assert!(cache.get("a.parquet", "x", &DataType::Int64).is_some());
        cache.insert("c.parquet", "x", column(1000));
        assert!(cache.get("b.parquet", "x", &DataType::Int64).is_none());
        assert!(cache.get("a.parquet", "x", &DataType::Int64).is_some());
        assert!(cache.get("c.parquet", "x", &DataType::Int64).is_some());
        let stats = cache.stats();
        assert_eq!(stats.columns, 2);
        assert_eq!(stats.files, 2);
        assert_eq!(stats.used_bytes, 2 * size as u64);
        assert_eq!(stats.evictions, 1);
        assert_eq!((stats.hits, stats.misses), (3, 1));
    }

    #[test]
    fn a_column_is_served_only_with_the_type_asked_for() {
        let cache = ColumnCache::new(1 << 20);
        cache.insert("a.parquet", "x", column(10));
        assert!(cache.get("a.parquet", "x", &DataType::Float64).is_none());
        assert!(cache.get("a.parquet", "y", &DataType::Int64).is_none());
        assert!(cache.get("a.parquet", "x", &DataType::Int64).is_some());
    }

    #[test]
    fn replacing_a_column_keeps_the_accounting_exact() {
        let cache = ColumnCache::new(1 << 20);
        cache.insert("a.parquet", "x", column(10));
        cache.insert("a.parquet", "x", column(100));
        let stats = cache.stats();
        assert_eq!(stats.columns, 1);
        assert_eq!(stats.used_bytes, column(100).memory_size() as u64);
    }

    #[test]
    fn nothing_is_kept_past_the_budget() {
        let cache = ColumnCache::new(100);
        cache.insert("a.parquet", "x", column(1000));
        assert_eq!(cache.stats().columns, 0);
        assert_eq!(cache.stats().used_bytes, 0);
    }
}
