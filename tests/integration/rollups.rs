//! Continuous rollups through the server: bulk loads, WAL writes, flushes,
//! compaction, restarts, retention and writes racing `CREATE ROLLUP`, each
//! checked against the raw rows.

use std::time::Duration;

use lookout_query::LookoutOptions;

use crate::harness::{TestServer, connect, generate_events, rows};

const ROLLUP: &str = "CREATE ROLLUP events_hourly ON events GROUP BY model, segment EVERY '1 hour' \
    AS (count(*), quantile_sketch(latency_ms), score_state(score_groundedness, 0.7), \
    sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors)";

/// Per model: whether the rollup's count, errors, p50, p99, pass rate and
/// mean score equal the raw rows'.
const AGREE: &str = "SELECT r.model, r.n = raw.n, r.errors = raw.errors, r.p50 = raw.p50, r.p99 = raw.p99,
       abs(r.pass - raw.pass) < 1e-12, abs(r.mean - raw.mean) < 1e-9
FROM (SELECT model, sum(count) AS n, sum(errors) AS errors,
             sketch_quantile(sketch_merge(latency_ms_sketch), 0.5) AS p50,
             sketch_quantile(sketch_merge(latency_ms_sketch), 0.99) AS p99,
             score_state_pass_rate(score_merge(score_groundedness_state)) AS pass,
             score_state_mean(score_merge(score_groundedness_state)) AS mean
      FROM events_hourly GROUP BY model) r
FULL JOIN (SELECT model, count(*) AS n, CAST(sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS DOUBLE PRECISION) AS errors,
             latency_quantile(latency_ms, 0.5) AS p50, latency_quantile(latency_ms, 0.99) AS p99,
             score_pass_rate(score_groundedness, 0.7) AS pass, avg(score_groundedness) AS mean
      FROM events GROUP BY model) raw ON r.model = raw.model
ORDER BY 1";

async fn assert_agrees(client: &tokio_postgres::Client, when: &str) {
    let got = rows(client, AGREE).await;
    assert!(got.len() >= 3, "{when}: too few models: {got:?}");
    for row in &got {
        assert!(
            row[1..].iter().all(|v| v.as_deref() == Some("t")),
            "{when}: rollup and rows disagree: {row:?}"
        );
    }
}

fn count(rows: &[Vec<Option<String>>]) -> i64 {
    rows[0][0]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_follow_loads_writes_flushes_compaction_and_restarts() {
    let data = tempfile::tempdir().expect("tempdir");
    let files = generate_events(data.path(), 120_000, 4);
    // Compaction of every partition with two files or more, so that each
    // ends up with one row per bucket and group.
    let mut options = LookoutOptions::default();
    options.storage.compaction_min_files = 2;
    let server =
        TestServer::start_with(tempfile::tempdir().expect("tempdir"), options.clone()).await;
    let client = server.client().await;
    let copy =
        |f: &std::path::Path| format!("COPY events FROM '{}' WITH (FORMAT parquet)", f.display());
    client.simple_query(&copy(&files[0])).await.expect("copy");
    client.simple_query(ROLLUP).await.expect("create rollup");
    assert_agrees(&client, "after the backfill").await;
    for f in &files[1..] {
        client.simple_query(&copy(f)).await.expect("copy");
    }
    assert_agrees(&client, "after bulk loads").await;
    for i in 0..30 {
        client
            .simple_query(&format!(
                "INSERT INTO events (ts, model, segment, latency_ms, status, score_groundedness) \
                 VALUES ('2025-01-03 10:{i:02}:00+00', 'extra', 'web', {}, 'ok', 0.9)",
                100 + i
            ))
            .await
            .expect("insert");
    }
    assert_agrees(&client, "with deltas in the WAL").await;

    // Deltas are merged on the way to Parquet and by compaction: one row
    // per bucket and group is left.
    server.lookout.storage().flush().await.expect("flush");
    server.lookout.storage().compact().await.expect("compact");
    let stored = count(&rows(&client, "SELECT count(*) FROM events_hourly").await);
    let groups = count(
        &rows(
            &client,
            "SELECT count(*) FROM (SELECT DISTINCT date_bin(INTERVAL '1 hour', ts), model, segment FROM events) g",
        )
        .await,
    );
    assert_eq!(stored, groups, "rollup rows after compaction");
    assert_agrees(&client, "after flush and compaction").await;

    // After a restart the rollup is still maintained, and still merged.
    let dir = server.stop().await;
    let server = TestServer::start_with(dir, options).await;
    let client = server.client().await;
    client
        .simple_query(
            "INSERT INTO events (ts, model, segment, latency_ms, status, score_groundedness) \
             VALUES ('2025-01-03 10:59:00+00', 'extra', 'web', 5000, 'error', 0.1)",
        )
        .await
        .expect("insert after restart");
    assert_agrees(&client, "after a restart").await;
    server.lookout.storage().flush().await.expect("flush");
    server.lookout.storage().compact().await.expect("compact");
    let extra = rows(
        &client,
        "SELECT count(*), sum(count), CAST(sum(errors) AS BIGINT) FROM events_hourly WHERE model = 'extra'",
    )
    .await;
    assert_eq!(
        extra,
        vec![vec![
            Some("1".to_string()),
            Some("31".to_string()),
            Some("1".to_string())
        ]]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_of_rows_keeps_rollup_buckets() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE hits (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, latency_ms DOUBLE PRECISION) WITH (ttl = '2 days');
             CREATE ROLLUP hits_daily ON hits GROUP BY model EVERY '1 day' AS (count(*), quantile_sketch(latency_ms));
             INSERT INTO hits SELECT now() - INTERVAL '10 days', 'm', 10 * i FROM generate_series(1, 100) AS g(i);
             INSERT INTO hits SELECT now(), 'm', i FROM generate_series(1, 50) AS g(i);",
        )
        .await
        .expect("setup");
    server.lookout.storage().flush().await.expect("flush");
    let dropped = server
        .lookout
        .storage()
        .enforce_retention()
        .await
        .expect("retention");
    assert!(dropped > 0, "retention dropped nothing");
    assert_eq!(count(&rows(&client, "SELECT count(*) FROM hits").await), 50);
    let rolled = rows(
        &client,
        "SELECT sum(count), sketch_quantile(sketch_merge(latency_ms_sketch), 1.0) FROM hits_daily WHERE bucket < now() - INTERVAL '5 days'",
    )
    .await;
    assert_eq!(
        rolled,
        vec![vec![Some("100".to_string()), Some("1000".to_string())]]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_create_rollup_are_counted_once() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE w (ts TIMESTAMPTZ NOT NULL, writer INT NOT NULL, v DOUBLE PRECISION);
             INSERT INTO w SELECT to_timestamp(1735689600 + i), -1, i FROM generate_series(1, 20000) AS g(i);",
        )
        .await
        .expect("setup");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let (addr, stop) = (server.addr, std::sync::Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let client = connect(addr).await;
            let mut batches = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .simple_query(&format!(
                        "INSERT INTO w SELECT to_timestamp(1735689600 + i * 7), {writer}, i FROM generate_series(1, 10) AS g(i)"
                    ))
                    .await
                    .expect("insert");
                batches += 1;
            }
            batches
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .simple_query(
            "CREATE ROLLUP w_hourly ON w GROUP BY writer EVERY '1 hour' AS (count(*), sum(v))",
        )
        .await
        .expect("create rollup");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.expect("writer");
    }
    assert!(written > 10, "writers made too little progress: {written}");
    let raw = rows(
        &client,
        "SELECT writer, count(*), sum(v) FROM w GROUP BY writer ORDER BY writer",
    )
    .await;
    let rolled = rows(
        &client,
        "SELECT writer, sum(count), sum(v_sum) FROM w_hourly GROUP BY writer ORDER BY writer",
    )
    .await;
    assert_eq!(rolled, raw);
    server.stop().await;
}

/// A data directory written before derived tables recorded their kind
/// opens as before: each kind recognises its own definitions. A database
/// opened without the rollups extension refuses writes to a table with a
/// rollup (55000) rather than leaving the rollup behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_tables_without_a_recorded_kind_still_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sampling = lookout_sampling::SamplingOptions { interval: None };
    let db =
        crate::harness::open_lookout(dir.path(), LookoutOptions::default(), sampling.clone()).await;
    db.sql(
        "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, id TEXT, latency_ms DOUBLE PRECISION); \
         CREATE ROLLUP calls_hourly ON calls GROUP BY model EVERY '1 hour' AS (count(*)); \
         CREATE TABLE sampled (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, id TEXT); \
         ALTER TABLE sampled SET SAMPLING (KEY id, RATE 0.5); \
         INSERT INTO calls VALUES (now(), 'a', 'r1', 1.0)",
    )
    .await
    .expect("setup");
    db.close().await.expect("close");
    drop(db);

    // As the previous release wrote them: no "kind" in any definition.
    let manifests = dir.path().join("data").join("_manifest");
    let mut rewritten = 0;
    for entry in std::fs::read_dir(&manifests).expect("manifests") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let old = text
            .replace(r#","kind":"rollup""#, "")
            .replace(r#","kind":"sampling""#, "");
        if old != text {
            rewritten += 1;
            std::fs::write(&path, old).expect("write");
        }
    }
    assert!(rewritten > 0, "no manifest carried a kind");

    let bare = lookout_query::Lookout::open(dir.path())
        .await
        .expect("open");
    let refused = bare
        .sql("INSERT INTO calls VALUES (now(), 'a', 'r2', 2.0)")
        .await
        .expect_err("a write that would skip the rollup");
    assert_eq!(refused.sqlstate(), "55000", "{refused}");
    bare.close().await.expect("close");
    drop(bare);

    let db = crate::harness::open_lookout(dir.path(), LookoutOptions::default(), sampling).await;
    db.sql(
        "INSERT INTO calls VALUES (now(), 'a', 'r2', 2.0), (now(), 'b', 'r3', 3.0); \
         INSERT INTO sampled VALUES (now(), 'a', 'k1')",
    )
    .await
    .expect("writes");
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            let batches = db.sql(sql).await.expect(sql);
            arrow::util::pretty::pretty_format_batches(&batches)
                .expect("format")
                .to_string()
        }
    };
    let rollup = count("SELECT CAST(sum(count) AS BIGINT) AS n FROM calls_hourly").await;
    assert!(rollup.contains("| 3 |"), "{rollup}");
    let held = count("SELECT count(*) AS n FROM lookout.sampled_held").await;
    assert!(held.contains("| 1 |"), "{held}");
    let shown = count("SHOW SAMPLING").await;
    assert!(shown.contains("sampled"), "{shown}");
    db.close().await.expect("close");
}
