//! Scans report their rows and bytes, so that DataFusion's join selection
//! builds a join's hash table on the smaller side, whether the scan reads
//! through the column cache or not.

use arrow::util::pretty::pretty_format_batches;

use crate::{Lookout, LookoutOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_build_their_hash_table_on_the_smaller_table() {
    for cache_memory in [0, 64 << 20] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = LookoutOptions {
            cache_memory: Some(cache_memory),
            ..LookoutOptions::default()
        };
        let db = Lookout::open_with(dir.path(), options).await.expect("open");
        for sql in [
            "CREATE TABLE big (ts TIMESTAMPTZ NOT NULL, k TEXT)",
            "INSERT INTO big SELECT to_timestamp(v), CAST(v AS TEXT) FROM generate_series(1, 50000) AS g(v)",
            "CREATE TABLE small (ts TIMESTAMPTZ NOT NULL, k TEXT)",
            "INSERT INTO small SELECT to_timestamp(v * 7), CAST(v * 7 AS TEXT) FROM generate_series(1, 10) AS g(v)",
        ] {
            db.sql(sql).await.expect(sql);
        }
        db.storage().flush().await.expect("flush");
        let query = "SELECT count(*) FROM big WHERE k IN (SELECT k FROM small)";
        let count = db.sql(query).await.expect("count");
        let count = pretty_format_batches(&count).expect("format").to_string();
        assert!(count.contains("| 10 "), "{count}");
        let plan = db.sql(&format!("EXPLAIN {query}")).await.expect("explain");
        let plan = pretty_format_batches(&plan).expect("format").to_string();
        let physical = &plan[plan.find("physical_plan").expect("a physical plan")..];
        let join = physical.find("HashJoinExec").expect("a hash join");
        // A hash join's first input is its build side.
        let build = physical[join..]
            .find("LookoutScan: table=")
            .map(|at| &physical[join + at..])
            .expect("a scan under the join");
        assert!(
            build.starts_with("LookoutScan: table=small"),
            "cache {cache_memory}: the join builds on the big table:\n{physical}"
        );
        db.close().await.expect("close");
    }
}
