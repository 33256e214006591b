//! Where "now" comes from.
//!
//! Every part of Lookout that compares times with the present (the storage
//! engine's future horizon, retention and garbage collection; the query
//! layer's arrival times for sampling; the alert engine's schedule; review
//! leases) asks one [`Clock`], set in [`crate::StorageOptions`], so a test
//! can put in a [`ManualClock`] and move time by hand, as InfluxDB 3's
//! `TimeProvider` allows. A session's `SET lookout.now` still fixes `now()`
//! in its own queries.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        chrono::Utc::now().timestamp_micros()
    }
}

/// A clock that stands still until it is set or advanced.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `micros` since the Unix epoch.
    pub fn new(micros: i64) -> ManualClock {
        ManualClock(AtomicI64::new(micros))
    }

    /// Shows `micros` from now on.
    pub fn set(&self, micros: i64) {
        self.0.store(micros, Ordering::SeqCst);
    }

    /// Moves the clock forward by `micros`.
    pub fn advance(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
