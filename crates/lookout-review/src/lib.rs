//! Human review queues for Lookout: items (predictions, by their key) are
//! enqueued by SQL rules (on demand or on a schedule), claimed by reviewers with a lease, and a
//! submitted verdict becomes a label in a versioned feedback table.
//!
//! Like the alert engine, this crate talks to the database only through
//! SQL: its state is an append-only log in `lookout.review_items`, and its
//! statements (`CREATE REVIEW QUEUE`, `ENQUEUE INTO`, `CLAIM`, `SUBMIT
//! REVIEW`, ...) are a statement extension. What a claim needs, an atomic
//! read-modify-write, comes from serialising every change to a queue behind
//! one lock and appending it as one durable `INSERT` before it is applied
//! in memory: two reviewers never get the same item, and a crash loses no
//! acknowledged claim or verdict. See `docs/review.md`.

mod grammar;
mod queues;

pub use queues::ReviewQueues;

/// Entry point for the fuzz targets in `fuzz/`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `sql` as a review statement; errors are expected, panics are bugs.
    pub fn review_statement(sql: &str) {
        let _ = crate::grammar::parse(sql);
    }
}
