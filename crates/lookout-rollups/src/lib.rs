//! Continuous rollups for Lookout: per-bucket mergeable states (counts,
//! sums, sketches, score states) of a table's rows, kept in a table of their
//! own and maintained as rows are written.
//!
//! Every write to a table with rollups derives each rollup's delta (one row
//! per bucket and group the write touches) through the core's ingest hook,
//! and the rows and the deltas go to the storage engine as one WAL record,
//! so the statistics of every row are as durable as the rows. Deltas are
//! merged when the rollup's rows are written to Parquet and compacted (the
//! rollup kind's combine function); queries merge whatever is left with
//! `sum`, `sketch_merge` and `score_merge`, so a late row simply adds to its
//! bucket. See `docs/rollups.md`.

mod derive;
mod grammar;
mod statements;

use std::sync::Arc;

use lookout_query::{Lookout, Result};

/// Installs rollups in `lookout`: the rollup kind of derived table (existing
/// rollups get their combine function; one whose `CREATE ROLLUP` did not
/// finish is dropped), the ingest hook that adds deltas to every write, and
/// the statements. Call it before the database takes writes.
pub async fn install(lookout: &Lookout) -> Result<()> {
    lookout
        .register_derived_kind(Arc::new(derive::RollupKind))
        .await?;
    lookout.register_ingest_hook(Arc::new(derive::RollupHook));
    lookout.register_extension(Arc::new(statements::RollupStatements {
        lookout: lookout.clone(),
    }));
    Ok(())
}

/// Entry point for the fuzz targets in `fuzz/`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `sql` with the rollup grammars; errors are expected, panics are bugs.
    pub fn rollup_statement(sql: &str) {
        let _ = crate::grammar::parse_create(sql);
        let _ = crate::grammar::parse_drop(sql);
    }
}
