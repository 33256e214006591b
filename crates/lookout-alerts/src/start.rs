//! Starting the engine: the alert tables, rules and state restored, the
//! statements added to the database's SQL, and the scheduled tasks.

use std::sync::atomic::{AtomicI64, AtomicUsize};
use std::sync::{Arc, Mutex};

use lookout_query::Lookout;
use tokio::sync::{Notify, watch};

use crate::engine::{AlertEngine, AlertOptions, Inner};
use crate::error::Result;
use crate::evaluation::lock;
use crate::store;

impl AlertEngine {
    /// Creates the alert tables if missing, restores rules and state, adds
    /// the alert statements to `db`'s SQL, and (with `options.schedule`)
    /// starts evaluating.
    pub async fn start(db: Lookout, options: AlertOptions) -> Result<AlertEngine> {
        store::install(&db, options.history_ttl).await?;
        let (stop, _) = watch::channel(false);
        let engine = AlertEngine {
            inner: Arc::new(Inner {
                db: db.clone(),
                options,
                rules: Mutex::default(),
                silences: Mutex::default(),
                outbox: Mutex::default(),
                outbox_wake: Notify::new(),
                stop,
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                last_version: AtomicI64::new(0),
                last_silence_id: AtomicI64::new(0),
                tasks: Mutex::default(),
                metrics: crate::metrics::AlertMetrics::register(db.metrics()),
            }),
        };
        engine.restore().await?;
        db.register_extension(Arc::new(crate::extension::AlertStatements::new(
            engine.clone(),
        )));
        if engine.inner.options.schedule {
            let scheduler = tokio::spawn(engine.clone().schedule_loop());
            let deliverer = tokio::spawn(engine.clone().delivery_loop());
            let digests = tokio::spawn(engine.clone().digest_loop());
            lock(&engine.inner.tasks).extend([scheduler, deliverer, digests]);
        } else if db.storage().is_read_only() {
            let follower = tokio::spawn(engine.clone().follow_writer());
            lock(&engine.inner.tasks).push(follower);
        }
        Ok(engine)
    }

    /// On a read-only replica: reads the rules again after each manifest
    /// version the replica installs, so back-tests and `SHOW ALERTS` there
    /// know the rules the writer has now.
    async fn follow_writer(self) {
        let version = |db: &Lookout| db.storage().manifest().map_or(0, |m| m.version);
        let mut read = version(&self.inner.db);
        let mut stop = self.inner.stop.subscribe();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
            if self.stopped() {
                return;
            }
            let now = version(&self.inner.db);
            if now == read {
                continue;
            }
            match self.restore().await {
                Ok(()) => read = now,
                Err(e) => tracing::warn!(error = %e, "re-reading the alert rules failed; retrying"),
            }
        }
    }
}
