//! Scans through the column cache answer what uncached scans answer, after
//! the changes that touch stored files: deletes, updates, added columns,
//! compaction, eviction and files too large to keep.

use arrow::util::pretty::pretty_format_batches;

use crate::{Lookout, LookoutOptions};

/// Statements of one history, each query's answer recorded.
const SCENARIO: &[&str] = &[
    "CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, model TEXT, n BIGINT, label TEXT, tier TEXT)",
    "INSERT INTO t SELECT to_timestamp(1735689600 + v * 17), CASE WHEN v % 3 = 0 THEN 'a' ELSE 'b' END, v, repeat(md5(v::text), 2), CASE WHEN v % 5 = 0 THEN NULL WHEN v % 5 < 3 THEN 'gold' ELSE 'silver' END FROM generate_series(1, 20000) AS g(v)",
    "FLUSH",
    "?SELECT model, count(*), sum(n), min(label), max(ts) FROM t GROUP BY model ORDER BY model",
    "?SELECT model, count(*), sum(n), min(label), max(ts) FROM t GROUP BY model ORDER BY model",
    "?SELECT count(*) FROM t",
    "DELETE FROM t WHERE n % 7 = 0",
    "?SELECT model, count(*), sum(n) FROM t GROUP BY model ORDER BY model",
    "?SELECT * FROM t WHERE n BETWEEN 690 AND 710 ORDER BY n",
    // Text of few values is picked through its codes.
    "?SELECT tier, count(*), sum(n) FROM t WHERE n % 13 = 0 GROUP BY tier ORDER BY tier",
    "?SELECT n, tier, label FROM t WHERE tier IS NULL AND n % 101 = 0 ORDER BY n",
    "UPDATE t SET label = 'changed' WHERE n % 1000 = 1",
    "?SELECT label, count(*), sum(n) FROM t WHERE label = 'changed' GROUP BY label",
    "?SELECT count(*), sum(n) FROM t",
    // A filter that fails on a deleted row must not see it.
    "DELETE FROM t WHERE n = 1",
    "?SELECT count(*) FROM t WHERE 10 / (n - 1) > 0",
    "ALTER TABLE t ADD COLUMN extra DOUBLE PRECISION",
    "INSERT INTO t VALUES (to_timestamp(1735689600), 'a', -1, 'new', 'gold', 2.5)",
    "FLUSH",
    "?SELECT n, extra FROM t WHERE n < 3 ORDER BY n",
    "?SELECT count(extra), count(*) FROM t",
    "?SELECT n, extra FROM t WHERE extra > 1 OR n = 5 ORDER BY n",
    "?SELECT count(*) FROM t WHERE model = 'a' AND label <> 'changed' AND n > 100",
    // The partition column is made from each file's one value.
    "INSERT INTO t VALUES (to_timestamp(1735689700), NULL, -2, 'no model', NULL, NULL)",
    "FLUSH",
    "?SELECT model, label, count(*), sum(n) FROM t WHERE n % 11 = 0 OR n < 0 GROUP BY model, label HAVING count(*) > 1 OR sum(n) < 0 ORDER BY model, label",
    "?SELECT model, n FROM t WHERE n % 997 = 0 OR n < 0 ORDER BY n",
    // Comparisons with the partition column are answered per file, those
    // with text of few values on its codes.
    "?SELECT model, count(*), sum(n) FROM t WHERE model = 'a' GROUP BY model",
    "?SELECT model, tier, count(*), sum(n) FROM t WHERE model <> 'a' AND tier <> 'gold' GROUP BY model, tier ORDER BY model, tier",
    "?SELECT count(*), sum(n) FROM t WHERE (model IS DISTINCT FROM 'a') AND 'silver' = tier",
    "?SELECT count(*), sum(n) FROM t WHERE (model = 'b' OR tier < 'h') AND (tier IS NOT DISTINCT FROM 'gold')",
    "?SELECT n, model, tier FROM t WHERE (model IS NULL OR model = 'zzz') AND (tier IS DISTINCT FROM 'gold') ORDER BY n",
    "?SELECT count(*) FROM t WHERE model = 'zzz' OR tier >= 'silver'",
    "COMPACT",
    "?SELECT model, count(*), sum(n), count(extra) FROM t GROUP BY model ORDER BY model",
    "?SELECT model, tier, count(*), min(n) FROM t WHERE n % 7 = 3 GROUP BY model, tier ORDER BY model, tier",
    "?SELECT n, label FROM t WHERE ts >= TIMESTAMPTZ '2025-01-02 00:00:00+00' AND ts < TIMESTAMPTZ '2025-01-02 01:00:00+00' ORDER BY n LIMIT 5",
    "?SELECT n FROM t ORDER BY ts DESC, n LIMIT 3",
];

/// The answers of [`SCENARIO`] on a fresh database with the given cache.
async fn answers(cache_memory: usize) -> (Vec<String>, crate::CacheStats) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LookoutOptions {
        cache_memory: Some(cache_memory),
        ..LookoutOptions::default()
    };
    let db = Lookout::open_with(dir.path(), options).await.expect("open");
    let mut out = Vec::new();
    for step in SCENARIO {
        match *step {
            "FLUSH" => db.storage().flush().await.expect("flush"),
            "COMPACT" => {
                db.storage().compact().await.expect("compact");
            }
            sql => match sql.strip_prefix('?') {
                Some(query) => {
                    let batches = db.sql(query).await.expect(query);
                    let text = pretty_format_batches(&batches).expect("format");
                    out.push(format!("{query}\n{text}"));
                }
                None => {
                    db.sql(sql).await.expect(sql);
                }
            },
        }
    }
    let stats = db.column_cache().stats();
    db.close().await.expect("close");
    (out, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_scans_answer_as_uncached_ones() {
    let (expected, off) = answers(0).await;
    assert_eq!(off.columns + off.hits + off.misses, 0, "the cache is off");
    // Large enough to keep everything; small enough that most files are
    // streamed and what is kept is evicted.
    for budget in [64 << 20, 96 << 10] {
        let (got, stats) = answers(budget).await;
        for (e, g) in expected.iter().zip(&got) {
            assert_eq!(e, g, "budget {budget}");
        }
        assert_eq!(expected.len(), got.len());
        assert!(stats.used_bytes <= budget as u64, "{stats:?}");
        assert!(stats.misses > 0, "{stats:?}");
        if budget == 64 << 20 {
            assert!(stats.hits > 0, "{stats:?}");
            assert_eq!(stats.evictions, 0, "{stats:?}");
        } else {
            assert!(stats.evictions > 0, "{stats:?}");
        }
    }
}

#[tokio::test]
async fn the_cache_shows_in_a_system_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LookoutOptions {
        cache_memory: Some(8 << 20),
        ..LookoutOptions::default()
    };
    let db = Lookout::open_with(dir.path(), options).await.expect("open");
    db.sql("CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, n BIGINT)")
        .await
        .expect("create");
    db.sql("INSERT INTO t SELECT to_timestamp(v), v FROM generate_series(1, 1000) AS g(v)")
        .await
        .expect("insert");
    db.storage().flush().await.expect("flush");
    for _ in 0..3 {
        db.sql("SELECT sum(n) FROM t").await.expect("sum");
    }
    let batches = db
        .sql("SELECT budget_bytes, columns, files, hits, misses, hit_ratio FROM lookout.column_cache")
        .await
        .expect("stats");
    let text = pretty_format_batches(&batches).expect("format").to_string();
    assert!(
        text.contains("| 8388608      | 1       | 1     | 2    | 1      | 0.6666666666666666 |"),
        "{text}"
    );
    db.close().await.expect("close");
}

/// Time bounds that fall exactly on a file's first or last row: files are
/// dropped by their time range before anything else, and a bound equal to
/// a file's edge must keep the file where the comparison admits that row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_bounds_on_file_edges_keep_the_edge_rows() {
    // Hourly rows over three days, one file per day: the first day's last
    // row is 2025-01-01 23:00, the second day's first is 2025-01-02 00:00.
    let last = "TIMESTAMPTZ '2025-01-01 23:00:00+00'";
    let first = "TIMESTAMPTZ '2025-01-02 00:00:00+00'";
    let cases = [
        (format!("ts >= {first}"), 48, 2),
        (format!("ts > {first}"), 47, 2),
        (format!("ts < {first}"), 24, 1),
        (format!("ts <= {first}"), 25, 2),
        (format!("ts >= {last}"), 49, 3),
        (format!("ts > {last}"), 48, 2),
        (format!("ts < {last}"), 23, 1),
        (format!("ts <= {last}"), 24, 1),
        (format!("{first} > ts"), 24, 1),
        (format!("ts BETWEEN {last} AND {first}"), 2, 2),
        (format!("ts > {first} AND ts < {first}"), 0, 0),
    ];
    for cache_memory in [0, 64 << 20] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = LookoutOptions {
            cache_memory: Some(cache_memory),
            ..LookoutOptions::default()
        };
        let db = Lookout::open_with(dir.path(), options).await.expect("open");
        for sql in [
            "CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, n BIGINT) WITH (bucket = '1 day')",
            "INSERT INTO t SELECT to_timestamp(1735689600 + v * 3600), v FROM generate_series(0, 71) AS g(v)",
        ] {
            db.sql(sql).await.expect(sql);
        }
        db.storage().flush().await.expect("flush");
        for (filter, rows, files) in &cases {
            let query = format!("SELECT count(*) FROM t WHERE {filter}");
            let batches = db.sql(&query).await.expect(&query);
            let text = pretty_format_batches(&batches).expect("format").to_string();
            assert!(
                text.contains(&format!("| {rows} ")),
                "{query} (cache {cache_memory}):\n{text}"
            );
            let explain = format!("EXPLAIN SELECT n FROM t WHERE {filter}");
            let batches = db.sql(&explain).await.expect(&explain);
            let plan = pretty_format_batches(&batches).expect("format").to_string();
            assert!(
                plan.contains(&format!("files={files} of 3")),
                "{explain}:\n{plan}"
            );
        }
        db.close().await.expect("close");
    }
}
