//! Read-only replicas.
//!
//! A replica opens a store another process writes (a local data directory
//! or a shared object store) without its lock and without a WAL, and
//! follows the writer's manifest: every `follow_interval` it looks for a
//! newer version and installs it whole, so a query sees one committed
//! version, never a mix. Rows the writer holds unflushed in its WAL are not
//! visible until the writer flushes them (`flush_age` bounds that). Every
//! write is refused with [`StorageError::ReadOnly`].

use std::path::Path as FsPath;
use std::sync::{Arc, Weak};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

use super::{Inner, State, Storage, Stores, poisoned};
use crate::error::{Result, StorageError};
use crate::manifest::Manifest;

/// What a replica knows of its last look at the store.
#[derive(Debug, Default, Clone)]
pub(super) struct Progress {
    /// When it last found out which version is newest (µs since the epoch).
    checked_micros: i64,
    /// Why its last look failed, if it did.
    error: Option<String>,
}

/// How far a handle has followed the store's writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    /// Whether this handle is a read-only replica (else it is the writer).
    pub read_only: bool,
    /// The manifest version queries read.
    pub manifest_version: u64,
    /// When the writer committed that version (µs since the epoch; 0 if
    /// unknown).
    pub committed_micros: i64,
    /// Until when the replica is known to be current: the last time it found
    /// no newer version (the writer: now).
    pub checked_micros: i64,
    /// Why the replica's last look at the store failed, if it did.
    pub last_error: Option<String>,
}

/// Opens `dir` (or the configured object store) as a replica.
pub(super) async fn open(dir: &FsPath, options: super::StorageOptions) -> Result<Storage> {
    let stores: Stores = match &options.object_store {
        Some(s) => (Arc::clone(s), None),
        None => {
            let data = dir.join("data");
            if !data.is_dir() {
                return Err(StorageError::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no database at {} to follow (a replica never creates one)",
                        dir.display()
                    ),
                )));
            }
            let local = Arc::new(LocalFileSystem::new_with_prefix(&data)?);
            (
                Arc::clone(&local) as Arc<dyn ObjectStore>,
                Some((local, data)),
            )
        }
    };
    let manifest = Manifest::load_latest(stores.0.as_ref()).await?;
    let checked_micros = options.clock.now_micros();
    let background = options.background;
    let inner = Inner::new(
        dir.to_path_buf(),
        stores,
        options,
        State {
            manifest: Arc::new(manifest),
            buffers: Default::default(),
        },
        None,
        None,
    );
    inner.replication.lock().map_err(poisoned)?.checked_micros = checked_micros;
    let storage = Storage { inner };
    if background {
        storage.spawn_abortable(follow)?;
    }
    Ok(storage)
}

/// Installs the writer's newer manifests for as long as the engine exists.
async fn follow(engine: Weak<Inner>) {
    let Some(every) = engine.upgrade().map(|i| i.options.follow_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let storage = Storage { inner };
        if let Err(e) = storage.refresh().await {
            tracing::warn!(error = %e, "following the writer's manifest failed; retrying");
        }
    }
}

impl Storage {
    /// On a replica, installs the newest manifest the writer committed and
    /// returns whether there was one. The writer's handle has nothing to do.
    pub async fn refresh(&self) -> Result<bool> {
        if !self.inner.options.read_only {
            return Ok(false);
        }
        let found = async {
            let current = self.manifest()?.version;
            let latest = Manifest::latest_version(self.inner.store.as_ref()).await?;
            if latest <= current {
                return Ok(None);
            }
            Manifest::load_version(self.inner.store.as_ref(), latest)
                .await
                .map(Some)
        }
        .await;
        let now = self.now_micros();
        let mut progress = self.inner.replication.lock().map_err(poisoned)?;
        match found {
            Ok(newer) => {
                progress.checked_micros = now;
                progress.error = None;
                let Some(newer) = newer else {
                    return Ok(false);
                };
                let mut state = self.inner.state.write().map_err(poisoned)?;
                // Never backwards, should two refreshes race.
                if newer.version > state.manifest.version {
                    state.manifest = Arc::new(newer);
                }
                Ok(true)
            }
            Err(e) => {
                progress.error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// How far this handle has followed the store's writer.
    pub fn replication(&self) -> Result<Replication> {
        let manifest = self.manifest()?;
        let progress = self.inner.replication.lock().map_err(poisoned)?.clone();
        let read_only = self.inner.options.read_only;
        Ok(Replication {
            read_only,
            manifest_version: manifest.version,
            committed_micros: manifest.committed_micros,
            checked_micros: if read_only {
                progress.checked_micros
            } else {
                self.now_micros()
            },
            last_error: progress.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::memory::InMemory;

    use super::*;
    use crate::clock::ManualClock;
    use crate::engine::tests::{batch, live_rows, quiet, schema};
    use crate::engine::{CreateTable, StorageOptions};

    #[tokio::test]
    async fn a_replica_follows_the_writers_commits_and_refuses_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Storage::open(dir.path(), quiet()).await.expect("open");
        writer
            .create_table("t", &schema(), CreateTable::default(), false)
            .await
            .expect("create");
        let replica_options = StorageOptions {
            read_only: true,
            ..quiet()
        };
        let replica = Storage::open(dir.path(), replica_options)
            .await
            .expect("replica");
        writer
            .write("t", batch(&[1, 2, 3], "a"))
            .await
            .expect("write");
        assert!(!replica.refresh().await.expect("refresh"));
        assert_eq!(
            live_rows(&replica, "t"),
            0,
            "unflushed rows stay with the writer"
        );
        writer.flush().await.expect("flush");
        assert!(replica.refresh().await.expect("refresh"));
        assert_eq!(live_rows(&replica, "t"), 3);
        let status = replica.replication().expect("status");
        assert!(status.read_only && status.last_error.is_none());
        assert_eq!(
            status.manifest_version,
            writer.manifest().expect("m").version
        );
        assert!(status.committed_micros > 0);
        for refused in [
            replica.write("t", batch(&[4], "a")).await.map(|_| ()),
            replica
                .create_table("u", &schema(), CreateTable::default(), false)
                .await
                .map(|_| ()),
            replica.drop_table("t", false).await.map(|_| ()),
        ] {
            assert!(
                matches!(refused, Err(StorageError::ReadOnly(_))),
                "{refused:?}"
            );
        }
        replica.close().await.expect("close replica");
        writer.close().await.expect("close writer");
    }

    #[tokio::test]
    async fn a_replica_never_creates_a_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StorageOptions {
            read_only: true,
            ..quiet()
        };
        let err = Storage::open(dir.path().join("nothing"), options)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no database"), "{err}");
        assert!(!dir.path().join("nothing").exists());
    }

    /// Two writers on one object store: the second is refused while the
    /// first's lease lives, takes over once it expires, and the first then
    /// commits nothing more.
    #[tokio::test]
    async fn one_writer_per_object_store() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = Arc::new(ManualClock::new(1_000_000_000_000));
        let options = || StorageOptions {
            object_store: Some(Arc::clone(&store)),
            clock: Arc::clone(&clock) as _,
            ..quiet()
        };
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let a = Storage::open(dir_a.path(), options()).await.expect("a");
        a.create_table("t", &schema(), CreateTable::default(), false)
            .await
            .expect("create");
        let err = Storage::open(dir_b.path(), options()).await.unwrap_err();
        let StorageError::Locked { holder, .. } = &err else {
            panic!("{err}")
        };
        assert!(
            holder.contains(&dir_a.path().display().to_string()),
            "{holder}"
        );
        clock.advance(Duration::from_secs(31).as_micros() as i64);
        let b = Storage::open(dir_b.path(), options())
            .await
            .expect("takes over");
        let lost = a.lease().expect("lease");
        assert!(matches!(
            lost.renew(store.as_ref(), clock.as_ref()).await,
            Err(StorageError::Fenced(_))
        ));
        assert!(matches!(
            a.write("t", batch(&[1], "a")).await,
            Err(StorageError::Fenced(_))
        ));
        assert!(matches!(
            a.flush().await,
            Ok(()) | Err(StorageError::Fenced(_))
        ));
        b.write("t", batch(&[1, 2], "a"))
            .await
            .expect("the new writer writes");
        b.close().await.expect("close");
        // Released on close: the next writer need not wait.
        let dir_c = tempfile::tempdir().expect("c");
        let c = Storage::open(dir_c.path(), options())
            .await
            .expect("after release");
        assert_eq!(live_rows(&c, "t"), 2);
    }

    /// A writer that died holding the lease is replaced at once by a process
    /// that takes the same local directory (the lock file proves it dead).
    #[tokio::test]
    async fn a_dead_writers_directory_takes_its_lease_over_at_once() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let options = || StorageOptions {
            object_store: Some(Arc::clone(&store)),
            ..quiet()
        };
        let dir = tempfile::tempdir().expect("dir");
        {
            let a = Storage::open(dir.path(), options()).await.expect("a");
            a.create_table("t", &schema(), CreateTable::default(), false)
                .await
                .expect("create");
            a.write("t", batch(&[1, 2, 3], "a")).await.expect("write");
            // Dropped without close, as after kill -9: the lease stays.
        }
        let again = Storage::open(dir.path(), options()).await.expect("reopen");
        assert_eq!(live_rows(&again, "t"), 3, "the WAL is replayed");
    }
}
