//! Sampling at ingest: a sampled table keeps every row a keep-rule matches
//! and a deterministic sample of the rest, each kept row carrying the weight
//! that makes sums over the kept rows estimate sums over all rows.
//!
//! Rows written to a sampled table `t` go, with their rollups' deltas, to
//! the table's held area `lookout.t_held` (one WAL record), stamped with
//! their arrival. A decision, run by the server every few seconds or by
//! `DECIDE SAMPLING`, works on rows that arrived at least the decision window
//! ago:
//!
//! - a row a keep-rule matches goes to `t` at once with weight 1;
//! - the others wait until their (segment, hour) closes, two windows after
//!   the hour ends. Then the rows with `sample_hash(key) < rate` are kept,
//!   or if they are fewer than the minimum, the `minimum` rows with the
//!   lowest hash; each with weight N/kept of its (segment, hour), so the
//!   weights of a closed hour add up to its row count exactly. (Weight
//!   1/rate for hash-kept rows is unbiased only if the minimum never steps
//!   in; where it may, the hours it skips are those the hash kept more of,
//!   and the sum comes out high: 7 % on a model of the bench data.)
//! - a row of an hour already closed (late) is kept if its hash is below the
//!   rate, with weight 1/rate.
//!
//! Rows not kept stay in the held area for the overflow period; a keep-rule
//! that reads other tables (late feedback, a late judge score) rescues them
//! with weight 1. The kept rows and the decision's counts (`lookout.t_sampling`,
//! which also carries how far decisions have gone) are written as one WAL
//! record or one manifest commit, so a crash repeats a decision or keeps it,
//! never half of it.

mod decide;
mod hook;
mod metrics;
mod policy;
mod select;
mod statements;

use std::sync::Arc;
use std::time::Duration;

use lookout_query::{Lookout, Result};

/// How sampling runs.
#[derive(Debug, Clone)]
pub struct SamplingOptions {
    /// How often held rows are decided in the background; `None` decides
    /// only on `DECIDE SAMPLING`.
    pub interval: Option<Duration>,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            interval: Some(Duration::from_secs(10)),
        }
    }
}

/// Installs sampling in `lookout`: the held-area kind of derived table, the
/// ingest hook that sends a sampled table's rows to its held area, the
/// statements, and (with an interval) the background decisions, stopped
/// when the database closes. Call it before the database takes writes.
pub async fn install(lookout: &Lookout, options: SamplingOptions) -> Result<()> {
    let decisions = Arc::new(decide::Decisions::new(lookout.clone()));
    lookout
        .register_derived_kind(Arc::new(policy::SamplingKind))
        .await?;
    lookout.register_ingest_hook(Arc::new(hook::SamplingHook {
        decisions: Arc::clone(&decisions),
    }));
    lookout.register_extension(Arc::new(statements::SamplingStatements {
        decisions: Arc::clone(&decisions),
    }));
    if let Some(interval) = options.interval {
        let task = decide::spawn_decisions(lookout.clone(), decisions, interval);
        lookout.add_background_task(task);
    }
    Ok(())
}

/// Entry point for the fuzz targets in `fuzz/`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `sql` with the sampling grammars; errors are expected, panics are bugs.
    pub fn sampling_statement(sql: &str) {
        let _ = crate::policy::statement(sql);
        let _ = crate::policy::SamplingPolicy::parse(sql);
        let _ = crate::policy::parse_reset(sql);
        let _ = crate::policy::parse_decide(sql);
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::Int64Type;
    use lookout_query::{Lookout, LookoutOptions};

    use super::{SamplingOptions, install};

    fn cached_columns(batches: &[RecordBatch]) -> i64 {
        let column = batches[0].column_by_name("columns").expect("columns");
        arrow::compute::cast(column, &arrow::datatypes::DataType::Int64)
            .expect("cast")
            .as_primitive::<Int64Type>()
            .value(0)
    }

    /// A decision keeping more rows than one WAL record takes streams them
    /// into a bulk load committed with its counts: every kept row stored
    /// once, and the weights of each closed hour adding up to its rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_decision_streams_into_one_bulk_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Lookout::open(dir.path()).await.expect("open");
        install(&db, SamplingOptions { interval: None })
            .await
            .expect("install");
        let mut session = db.session();
        let rows = 160_000;
        for sql in [
            "CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, model TEXT, request_id TEXT, n BIGINT)"
                .to_string(),
            "ALTER TABLE t SET SAMPLING (KEY request_id, SEGMENT BY (model), RATE 0.5, \
             MINIMUM 2 PER HOUR, KEEP WHEN n % 4 <> 0, WINDOW '0 seconds')"
                .to_string(),
            format!(
                "INSERT INTO t SELECT to_timestamp(v), 'm' || CAST(v % 3 AS TEXT), 'r' || CAST(v AS TEXT), v \
                 FROM generate_series(1, {rows}) AS g(v)"
            ),
            "SET lookout.now = '2030-01-01 00:00:00+00'".to_string(),
            "DECIDE SAMPLING".to_string(),
        ] {
            session.query(&sql).await.expect(&sql);
        }
        let number = |batches: &[RecordBatch], column: usize| -> f64 {
            let values = arrow::compute::cast(
                batches[0].column(column),
                &arrow::datatypes::DataType::Float64,
            )
            .expect("cast");
            values
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(0)
        };
        let table = session
            .query("SELECT count(*), sum(sample_weight), count(DISTINCT request_id) FROM t")
            .await
            .expect("table");
        let counts = session
            .query(
                "SELECT sum(kept_by_rule + kept_by_rate + kept_for_minimum), sum(kept_by_rule), \
                 sum(seen) FROM lookout.t_sampling",
            )
            .await
            .expect("counts");
        assert_eq!(number(&counts, 2), f64::from(rows));
        assert_eq!(number(&counts, 1), 120_000.0);
        assert_eq!(number(&table, 0), number(&counts, 0));
        assert_eq!(number(&table, 2), number(&table, 0), "a row stored twice");
        assert!(number(&table, 0) > 100_000.0, "not past one WAL record");
        assert!((number(&table, 1) - f64::from(rows)).abs() < 1e-6);
        db.close().await.expect("close");
    }

    /// Decisions read the held rows once and drop them: they must not fill
    /// the column cache (and evict what dashboards read), while scans of
    /// the table itself still do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decisions_leave_the_column_cache_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = LookoutOptions {
            cache_memory: Some(8 << 20),
            ..LookoutOptions::default()
        };
        let db = Lookout::open_with(dir.path(), options).await.expect("open");
        install(&db, SamplingOptions { interval: None })
            .await
            .expect("install");
        let mut session = db.session();
        for sql in [
            "CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, model TEXT, request_id TEXT, n BIGINT)",
            "ALTER TABLE t SET SAMPLING (KEY request_id, SEGMENT BY (model), RATE 0.5, \
             MINIMUM 1 PER HOUR, WINDOW '0 seconds')",
            "INSERT INTO t SELECT to_timestamp(v), 'm', CAST(v AS TEXT), v FROM generate_series(1, 1000) AS g(v)",
        ] {
            session.query(sql).await.expect(sql);
        }
        db.storage().flush().await.expect("flush");
        session
            .query("SET lookout.now = '2030-01-01 00:00:00+00'")
            .await
            .expect("set");
        session.query("DECIDE SAMPLING").await.expect("decide");
        let stats = "SELECT columns FROM lookout.column_cache";
        assert_eq!(
            cached_columns(&session.query(stats).await.expect("stats")),
            0
        );
        db.storage().flush().await.expect("flush");
        let kept = session.query("SELECT sum(n) FROM t").await.expect("sum");
        assert!(kept[0].column(0).is_valid(0), "the decision kept no rows");
        assert!(cached_columns(&session.query(stats).await.expect("stats")) > 0);
        db.close().await.expect("close");
    }
}
