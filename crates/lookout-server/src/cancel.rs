//! CancelRequests: a client (psql's Ctrl-C, a driver's `cancel()`) opens a
//! new connection carrying the process id and secret key it got at startup;
//! the statement running on that connection is stopped with SQLSTATE 57014.
//!
//! pgwire can cancel only while a handler runs; rows are streamed after it
//! returns, so Lookout keeps its own registry and hands each statement a
//! signal that the SQL session watches until its last row is sent.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use pgwire::api::RandomPidSecretKeyGenerator;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use tokio::sync::oneshot;

/// Process ids and cancel keys, one sequence for the whole server (a
/// generator per connection would hand every client the same process id).
pub(crate) static PID_GENERATOR: LazyLock<RandomPidSecretKeyGenerator> =
    LazyLock::new(RandomPidSecretKeyGenerator::default);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cancel signal of one connection's current statement.
#[derive(Debug, Default)]
pub(crate) struct CancelSlot {
    current: Mutex<Option<oneshot::Sender<()>>>,
}

impl CancelSlot {
    /// A signal for the statement about to run; it completes only if that
    /// statement is canceled (a later statement's signal replaces it).
    pub(crate) fn next_statement(&self) -> impl Future<Output = ()> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        *lock(&self.current) = Some(tx);
        async move {
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn cancel(&self) {
        if let Some(tx) = lock(&self.current).take() {
            let _ = tx.send(());
        }
    }
}

/// Every connection's cancel slot by (process id, secret key).
#[derive(Debug, Default)]
pub(crate) struct CancelRegistry {
    slots: Mutex<HashMap<(i32, Bytes), Arc<CancelSlot>>>,
}

impl CancelRegistry {
    pub(crate) fn register(&self, pid: i32, key: &SecretKey, slot: Arc<CancelSlot>) {
        lock(&self.slots).insert((pid, key.to_bytes()), slot);
    }

    pub(crate) fn unregister(&self, pid: i32, key: &SecretKey) {
        lock(&self.slots).remove(&(pid, key.to_bytes()));
    }
}

#[async_trait]
impl CancelHandler for CancelRegistry {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let slot = lock(&self.slots)
            .get(&(request.pid, request.secret_key.to_bytes()))
            .cloned();
        // An unknown key is ignored, as PostgreSQL does.
        if let Some(slot) = slot {
            slot.cancel();
        }
    }
}
