//! Alert rules for Lookout: SQL queries evaluated on a schedule.
//!
//! A rule is a query that returns one row per alert instance (label columns,
//! a numeric `value`, optionally a count `n`), severity tiers with fixed or
//! baseline-calibrated thresholds, and timers (`FOR`, `KEEP FIRING FOR`,
//! `REPEAT EVERY`). [`AlertEngine`] evaluates each rule at aligned instants
//! with `now()` fixed to the instant (`SET lookout.now`), advances a state
//! machine per instance (inactive → pending → firing → recovering →
//! resolved), records every evaluation in the database and sends webhook
//! (Alertmanager webhook format) and Alertmanager API v2 notifications.
//!
//! The engine talks to the database only through SQL: it creates and reads
//! its own tables in the `lookout` schema, and adds its statements
//! (`CREATE ALERT`, `BACKTEST ALERT`, ...) to Lookout's SQL as an extension.
//! See `docs/alerts.md`.

mod backtest;
mod baseline;
mod delivery;
mod engine;
mod error;
mod evaluation;
mod extension;
pub mod grammar;
mod metrics;
pub mod notify;
mod outcome;
pub mod rule;
mod start;
pub mod state;
mod store;

pub use backtest::BacktestRow;
pub use engine::{AlertEngine, AlertOptions};
pub use error::{AlertError, Result};
