//! One writer per object store.
//!
//! On the local disk the lock file keeps a second process out. Servers on
//! different machines sharing one bucket have no common file system, so the
//! writer holds a lease object in the store instead, taken and renewed with
//! conditional puts (`If-None-Match: *` to create, `If-Match: <etag>` to
//! renew). Whoever renews or takes it over changes its ETag, so a writer
//! that lost it learns so at its next renewal and stops committing. The
//! manifest's create-if-absent commit is the second fence: two writers can
//! never both commit one version.
//!
//! A lease names the machine and local directory (WAL and lock file) of its
//! holder. A process that takes that same directory's lock file knows the
//! holder is gone (the lock dies with its process) and takes the lease
//! over at once instead of waiting for it to expire.

use std::sync::Mutex;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::{Result, StorageError};

/// Where the lease lives, relative to the store root.
pub(crate) const LEASE_PATH: &str = "_lookout/writer-lease.json";

/// What the lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseBody {
    /// Who holds it, for the error a second writer gets.
    holder: String,
    /// The holder's machine.
    host: String,
    /// The holder's local directory (WAL and lock file).
    local_dir: String,
    /// Until when it holds (µs since the epoch); 0 once released.
    expires_micros: i64,
}

/// The writer lease this process holds on an object store.
#[derive(Debug)]
pub(crate) struct WriterLease {
    body: Mutex<LeaseBody>,
    /// The version of the lease object we last wrote; renewing needs it.
    version: Mutex<UpdateVersion>,
    ttl: Duration,
    /// Set when another writer took the lease over.
    lost: Mutex<Option<String>>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

fn update_version(result: &object_store::PutResult) -> UpdateVersion {
    UpdateVersion {
        e_tag: result.e_tag.clone(),
        version: result.version.clone(),
    }
}

impl WriterLease {
    /// Takes the lease, or fails with [`StorageError::Locked`] naming the
    /// live holder. `local_dir` is this process's locked local directory.
    pub(crate) async fn acquire(
        store: &dyn ObjectStore,
        clock: &dyn Clock,
        ttl: Duration,
        local_dir: &std::path::Path,
        store_name: &str,
    ) -> Result<WriterLease> {
        let path = Path::from(LEASE_PATH);
        let host = host_name();
        let local_dir = std::fs::canonicalize(local_dir)
            .unwrap_or_else(|_| local_dir.to_path_buf())
            .display()
            .to_string();
        let body = LeaseBody {
            holder: format!(
                "process {} on {host}, local directory {local_dir}",
                std::process::id()
            ),
            host,
            local_dir,
            expires_micros: clock.now_micros() + ttl.as_micros() as i64,
        };
        let locked = |holder: String| StorageError::Locked {
            path: store_name.to_string(),
            lock: LEASE_PATH.to_string(),
            holder,
        };
        let mode = match store.get(&path).await {
            Ok(found) => {
                let current = UpdateVersion {
                    e_tag: found.meta.e_tag.clone(),
                    version: found.meta.version.clone(),
                };
                let bytes = found.bytes().await?;
                // A lease that does not decode is taken over, not trusted.
                if let Ok(held) = serde_json::from_slice::<LeaseBody>(&bytes) {
                    let ours = held.host == body.host && held.local_dir == body.local_dir;
                    if !ours && held.expires_micros > clock.now_micros() {
                        return Err(locked(held.holder));
                    }
                }
                PutMode::Update(current)
            }
            Err(object_store::Error::NotFound { .. }) => PutMode::Create,
            Err(e) => return Err(e.into()),
        };
        let result = put(store, &body, mode).await.map_err(|e| match e {
            StorageError::ObjectStore(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => locked("another writer that took the lease at the same moment".into()),
            e => e,
        })?;
        Ok(WriterLease {
            version: Mutex::new(update_version(&result)),
            body: Mutex::new(body),
            ttl,
            lost: Mutex::new(None),
        })
    }

    /// How often the lease is renewed: three times within its lifetime.
    pub(crate) fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Extends the lease. Once another writer has taken it, this and every
    /// later [`WriterLease::check`] fail.
    pub(crate) async fn renew(&self, store: &dyn ObjectStore, clock: &dyn Clock) -> Result<()> {
        if let Some(message) = self.lost.lock().map_err(|_| poisoned())?.clone() {
            return Err(StorageError::Fenced(message));
        }
        let mut body = self.body.lock().map_err(|_| poisoned())?.clone();
        body.expires_micros = clock.now_micros() + self.ttl.as_micros() as i64;
        let version = self.version.lock().map_err(|_| poisoned())?.clone();
        match put(store, &body, PutMode::Update(version)).await {
            Ok(result) => {
                *self.version.lock().map_err(|_| poisoned())? = update_version(&result);
                *self.body.lock().map_err(|_| poisoned())? = body;
                Ok(())
            }
            Err(StorageError::ObjectStore(object_store::Error::Precondition { .. })) => {
                let message = "another Lookout server took over this store's writer lease; \
                               this server no longer writes"
                    .to_string();
                *self.lost.lock().map_err(|_| poisoned())? = Some(message.clone());
                Err(StorageError::Fenced(message))
            }
            Err(e) => Err(e),
        }
    }

    /// Fails unless the lease is still ours and unexpired, so no commit is
    /// made after another writer may have started.
    pub(crate) fn check(&self, clock: &dyn Clock) -> Result<()> {
        if let Some(message) = self.lost.lock().map_err(|_| poisoned())?.clone() {
            return Err(StorageError::Fenced(message));
        }
        let expires = self.body.lock().map_err(|_| poisoned())?.expires_micros;
        if clock.now_micros() >= expires {
            return Err(StorageError::Fenced(
                "this server's writer lease expired before it could be renewed \
                 (the object store did not answer); it writes again once renewed"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Gives the lease up, so the next writer need not wait for it to expire.
    pub(crate) async fn release(&self, store: &dyn ObjectStore) -> Result<()> {
        let mut body = self.body.lock().map_err(|_| poisoned())?.clone();
        body.expires_micros = 0;
        let version = self.version.lock().map_err(|_| poisoned())?.clone();
        put(store, &body, PutMode::Update(version))
            .await
            .map(|_| ())
    }
}

fn poisoned() -> StorageError {
    StorageError::Corrupt("writer lease lock poisoned by an earlier panic".into())
}

async fn put(
    store: &dyn ObjectStore,
    body: &LeaseBody,
    mode: PutMode,
) -> Result<object_store::PutResult> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| StorageError::Corrupt(format!("writer lease encoding: {e}")))?;
    let opts = PutOptions {
        mode,
        ..PutOptions::default()
    };
    Ok(store
        .put_opts(&Path::from(LEASE_PATH), PutPayload::from(bytes), opts)
        .await?)
}
