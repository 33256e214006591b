//! The manifest: the one source of truth for which tables and files exist.
//!
//! Each commit writes a new, complete manifest object
//! `_manifest/<version>.json` with create-if-absent, so a commit is atomic on
//! any object store (no rename, no overwrite) and a crash mid-commit leaves
//! the previous version in force.

use std::collections::BTreeMap;

use base64::Engine as _;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::schema::TableDef;

const MANIFEST_DIR: &str = "_manifest";
/// How many old manifest versions are kept for inspection and backup tools.
const KEEP_VERSIONS: u64 = 20;

/// A minimum or maximum recorded for a column of a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StatValue {
    /// Integers and timestamps (as stored, e.g. microseconds).
    Int(i64),
    /// Floating point.
    Float(f64),
    /// Text.
    Str(String),
    /// Booleans.
    Bool(bool),
}

/// Statistics of one column of one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ColumnStats {
    /// Smallest non-null value.
    pub min: Option<StatValue>,
    /// Largest non-null value.
    pub max: Option<StatValue>,
    /// Number of NULLs.
    pub null_count: u64,
}

/// One live Parquet file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Object path relative to the store root.
    pub path: String,
    /// Value of the partition column shared by every row, if the table has one.
    pub partition: Option<String>,
    /// Start of the time bucket the file belongs to (µs since epoch, UTC).
    pub bucket_start: i64,
    /// Smallest time value in the file (µs).
    pub min_time: i64,
    /// Largest time value in the file (µs).
    pub max_time: i64,
    /// Rows written, including deleted ones.
    pub rows: u64,
    /// Size in bytes.
    pub size: u64,
    /// Per-column statistics, by column name.
    pub stats: BTreeMap<String, ColumnStats>,
    /// Deleted row positions: a serialized roaring bitmap, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<String>,
}

impl FileMeta {
    /// The deleted row positions, if any.
    pub fn deletion_vector(&self) -> Result<Option<RoaringBitmap>> {
        let Some(encoded) = &self.deletes else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| StorageError::Corrupt(format!("deletion vector of {}: {e}", self.path)))?;
        let bitmap = RoaringBitmap::deserialize_from(&bytes[..])
            .map_err(|e| StorageError::Corrupt(format!("deletion vector of {}: {e}", self.path)))?;
        Ok(Some(bitmap))
    }

    /// Records `bitmap` as the deleted positions.
    pub fn set_deletion_vector(&mut self, bitmap: &RoaringBitmap) -> Result<()> {
        let mut bytes = Vec::with_capacity(bitmap.serialized_size());
        bitmap.serialize_into(&mut bytes)?;
        self.deletes = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        Ok(())
    }

    /// Rows still live in the file.
    pub fn live_rows(&self) -> Result<u64> {
        let deleted = self.deletion_vector()?.map_or(0, |b| b.len());
        Ok(self.rows.saturating_sub(deleted))
    }
}

/// A table and its live files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Columns and options.
    pub def: TableDef,
    /// Live files; shared with the snapshots taken of them, copied only
    /// when a commit changes them. Stored as a plain list.
    #[serde(with = "shared_list")]
    pub files: std::sync::Arc<Vec<FileMeta>>,
}

/// A shared list written and read as a plain JSON array.
mod shared_list {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<T: Serialize, S: Serializer>(
        list: &Arc<Vec<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        list.as_slice().serialize(serializer)
    }

    pub(super) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<Vec<T>>, D::Error> {
        Vec::deserialize(deserializer).map(Arc::new)
    }
}

/// An object no longer referenced, deleted once the grace period has passed
/// (queries that started before it was superseded may still read it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Garbage {
    /// Object path.
    pub path: String,
    /// When it stopped being live (µs since epoch).
    pub since: i64,
}

/// The whole catalog at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Manifest {
    /// Version number; the object name.
    pub version: u64,
    /// Next table id to hand out.
    pub next_table_id: u64,
    /// WAL segments numbered up to this one are fully in Parquet files.
    pub wal_flushed_segment: u64,
    /// When the writer committed this version (µs since the epoch; 0 in
    /// manifests written before it was recorded).
    #[serde(default)]
    pub committed_micros: i64,
    /// Tables by name.
    pub tables: BTreeMap<String, TableEntry>,
    /// Superseded objects waiting for garbage collection.
    pub garbage: Vec<Garbage>,
    /// Views by name: the text the SQL layer defined them with, opaque here.
    #[serde(default)]
    pub views: BTreeMap<String, String>,
    /// External tables by name: data another system keeps, read in place.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external: BTreeMap<String, ExternalTable>,
}

/// A table whose data lives outside the store, in a format an installed
/// reader understands (`CREATE EXTERNAL TABLE ... STORED AS DELTA`). The
/// engine keeps only its definition; it never writes or deletes its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalTable {
    /// The format's name, lower case (`delta`).
    pub format: String,
    /// Where the data is, as given to the format's reader.
    pub location: String,
    /// The columns as they were when the table was created, so listing
    /// the catalog never has to reach the data.
    pub columns: Vec<crate::schema::ColumnDef>,
}

fn version_path(version: u64) -> Path {
    Path::from(format!("{MANIFEST_DIR}/{version:020}.json"))
}

impl Manifest {
    /// Whether this copy of `old`, changed by a commit, says the same as
    /// `old`: such a commit (`CREATE TABLE IF NOT EXISTS` of a table that
    /// exists) is no write. Cheap: file lists are compared by pointer, as a
    /// change that touches a table's files replaces its list, so a list
    /// rebuilt with the same files counts as a change (a needless commit,
    /// never a lost one).
    pub fn says_the_same_as(&self, old: &Manifest) -> bool {
        // Destructured so that a field added to the manifest must be
        // compared here (or said to be set by the commit itself).
        let Manifest {
            version: _,
            committed_micros: _,
            next_table_id,
            wal_flushed_segment,
            tables,
            garbage,
            views,
            external,
        } = self;
        *next_table_id == old.next_table_id
            && *wal_flushed_segment == old.wal_flushed_segment
            && *garbage == old.garbage
            && *views == old.views
            && *external == old.external
            && tables.len() == old.tables.len()
            && tables
                .iter()
                .zip(&old.tables)
                .all(|((name, t), (old_name, o))| {
                    name == old_name && std::sync::Arc::ptr_eq(&t.files, &o.files) && t.def == o.def
                })
    }

    /// Loads the newest manifest, or an empty one for a new store.
    pub async fn load_latest(store: &dyn ObjectStore) -> Result<Manifest> {
        let latest = Self::latest_version(store).await?;
        Self::load_version(store, latest).await
    }

    /// The newest committed version, 0 for a new store.
    pub async fn latest_version(store: &dyn ObjectStore) -> Result<u64> {
        let prefix = Path::from(MANIFEST_DIR);
        let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        let mut latest = listed
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        // A listing may lag behind a write; the next versions are probed directly.
        while store.head(&version_path(latest + 1)).await.is_ok() {
            latest += 1;
        }
        Ok(latest)
    }

    /// Loads version `latest` (0: an empty manifest for a new store).
    pub async fn load_version(store: &dyn ObjectStore, latest: u64) -> Result<Manifest> {
        if latest == 0 {
            return Ok(Manifest {
                next_table_id: 1,
                ..Manifest::default()
            });
        }
        let bytes = store.get(&version_path(latest)).await?.bytes().await?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| StorageError::Corrupt(format!("manifest version {latest}: {e}")))?;
        Ok(manifest)
    }

    /// Where version `version` is stored, relative to the store root.
    pub fn object_path(version: u64) -> String {
        version_path(version).to_string()
    }

    /// Writes `self` as the next version; fails if that version exists.
    pub async fn commit(&mut self, store: &dyn ObjectStore) -> Result<()> {
        let next = self.version + 1;
        let mut to_write = self.clone();
        to_write.version = next;
        let bytes = serde_json::to_vec(&to_write)
            .map_err(|e| StorageError::Corrupt(format!("manifest encoding: {e}")))?;
        put_new(store, &version_path(next), bytes).await?;
        self.version = next;
        if next > KEEP_VERSIONS {
            // Old versions are history only; failing to delete one is harmless.
            let _ = store.delete(&version_path(next - KEEP_VERSIONS)).await;
        }
        Ok(())
    }

    /// The table named, or a not-found error.
    pub fn table(&self, name: &str) -> Result<&TableEntry> {
        self.tables
            .get(name)
            .ok_or_else(|| StorageError::TableNotFound(name.to_string()))
    }

    /// The table named, mutable.
    pub fn table_mut(&mut self, name: &str) -> Result<&mut TableEntry> {
        self.tables
            .get_mut(name)
            .ok_or_else(|| StorageError::TableNotFound(name.to_string()))
    }

    /// The table with this id, if it still exists.
    pub fn table_by_id(&self, id: u64) -> Option<&TableEntry> {
        self.tables.values().find(|t| t.def.id == id)
    }
}

/// Writes `bytes` at `path`, failing if anything is there already: every
/// object Lookout writes (a file of this run, a manifest version) is new,
/// so a clash means another writer, never something to overwrite.
pub(crate) async fn put_new(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: impl Into<PutPayload>,
) -> object_store::Result<object_store::PutResult> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    store.put_opts(path, bytes.into(), opts).await
}
