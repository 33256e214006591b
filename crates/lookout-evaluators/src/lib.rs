//! LLM-as-evaluator, run by the database: an evaluator judges the rows of a
//! table as they arrive (a sample of them, by `sample_hash(key)`, so the
//! judged calls are the ones sampling at ingest keeps), fills a rubric from
//! each row's columns, asks an OpenAI-compatible Chat Completions endpoint
//! for a structured `{score, reason}`, and records the verdict as a version
//! of a record in the versioned table `judge_scores`, where score
//! functions, label joins, rollups and alert rules read it.
//!
//! Like the alert engine and the review queues, this crate reaches the core
//! only through SQL and the statement extension; its definitions are a log
//! in `lookout.evaluators`. See `docs/evaluators.md`.

mod grammar;
mod judge;
mod metrics;
mod runner;

pub use runner::{EvaluatorOptions, Evaluators};

/// Entry point for the fuzz targets in `fuzz/`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `sql` as an evaluator statement; errors are expected, panics are bugs.
    pub fn evaluator_statement(sql: &str) {
        let _ = crate::grammar::parse(sql);
    }
}
