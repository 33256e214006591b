//! Sampling at ingest on the bench data, through the server: every non-ok
//! call kept, every (model, segment, hour) at its minimum, weighted counts
//! within their sampling error of the true counts, decisions that survive a
//! restart without being repeated, and decisions made by the server on its
//! own schedule.

use std::time::Duration;

use lookout_query::LookoutOptions;

use crate::harness::{TestServer, connect, error_code, generate_events, rows};

const RATE: f64 = 0.02;
const MINIMUM: i64 = 3;

fn number(rows: &[Vec<Option<String>>], row: usize, column: usize) -> f64 {
    rows[row][column]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a number at {row},{column}: {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_bench_data_keeps_errors_minimums_and_unbiased_counts() {
    let data = tempfile::tempdir().expect("tempdir");
    let files = generate_events(data.path(), 600_000, 2);
    let sampling = lookout_sampling::SamplingOptions {
        interval: Some(Duration::from_secs(3600)),
    };
    let server = TestServer::start_sampling(
        tempfile::tempdir().expect("tempdir"),
        LookoutOptions::default(),
        sampling.clone(),
    )
    .await;
    let client = server.client().await;
    let copy = |table: &str, f: &std::path::Path| {
        format!("COPY {table} FROM '{}' WITH (FORMAT parquet)", f.display())
    };
    // The truth: every row. The sampled table starts as an empty copy of it.
    for f in &files {
        client.simple_query(&copy("truth", f)).await.expect("copy");
    }
    client
        .simple_query(&copy("events", &files[0]))
        .await
        .expect("copy");
    client
        .simple_query("DELETE FROM events")
        .await
        .expect("empty it");
    client
        .simple_query(&format!(
            "ALTER TABLE events SET SAMPLING (KEY request_id, SEGMENT BY (model, segment), \
             RATE {RATE}, MINIMUM {MINIMUM} PER HOUR, KEEP WHEN status <> 'ok')"
        ))
        .await
        .expect("set sampling");
    for f in &files {
        client.simple_query(&copy("events", f)).await.expect("copy");
    }
    client
        .simple_query("SET lookout.now = '2030-01-01 00:00:00+00'")
        .await
        .expect("set now");
    let decided = rows(&client, "DECIDE SAMPLING ON events").await;
    let total = number(&rows(&client, "SELECT count(*) FROM truth").await, 0, 0);
    let kept = number(&rows(&client, "SELECT count(*) FROM events").await, 0, 0);
    assert_eq!(number(&decided, 0, 0), kept, "{decided:?}");
    assert_eq!(number(&decided, 0, 1), total - kept, "{decided:?}");
    assert!(kept < 0.2 * total, "sampling kept {kept} of {total} rows");

    // 100 % of non-ok calls are kept, with weight 1.
    let errors = rows(
        &client,
        "SELECT (SELECT count(*) FROM truth WHERE status <> 'ok') AS errors, \
                (SELECT count(*) FROM events WHERE status <> 'ok' AND sample_weight = 1) AS kept, \
                (SELECT count(*) FROM truth t WHERE status <> 'ok' \
                   AND request_id NOT IN (SELECT request_id FROM events)) AS lost",
    )
    .await;
    assert!(number(&errors, 0, 0) > 1000.0, "{errors:?}");
    assert_eq!(number(&errors, 0, 0), number(&errors, 0, 1), "{errors:?}");
    assert_eq!(number(&errors, 0, 2), 0.0, "{errors:?}");

    // Every (model, segment, hour) keeps at least its minimum of nominal calls.
    let short = rows(
        &client,
        &format!(
            "SELECT t.model, t.segment, t.h, t.n, coalesce(e.n, 0) FROM \
             (SELECT model, segment, date_bin(INTERVAL '1 hour', ts) AS h, count(*) AS n \
                FROM truth WHERE status = 'ok' GROUP BY 1, 2, 3) t \
             LEFT JOIN (SELECT model, segment, date_bin(INTERVAL '1 hour', ts) AS h, count(*) AS n \
                FROM events WHERE status = 'ok' GROUP BY 1, 2, 3) e \
             ON t.model = e.model AND t.segment = e.segment AND t.h = e.h \
             WHERE coalesce(e.n, 0) < least(t.n, {MINIMUM})"
        ),
    )
    .await;
    assert!(short.is_empty(), "strata under their minimum: {short:?}");

    // Weighted counts per model within 5 %.
    let per_model = rows(
        &client,
        "SELECT t.model, t.n, e.w FROM (SELECT model, count(*) AS n FROM truth GROUP BY 1) t \
         JOIN (SELECT model, sum(sample_weight) AS w FROM events GROUP BY 1) e ON t.model = e.model ORDER BY 1",
    )
    .await;
    assert!(per_model.len() >= 3, "{per_model:?}");
    for (i, row) in per_model.iter().enumerate() {
        let (n, w) = (number(&per_model, i, 1), number(&per_model, i, 2));
        assert!(
            (w - n).abs() <= 0.05 * n,
            "model {row:?}: weighted {w} vs {n}"
        );
    }

    // Per model × segment within 4·√((1−p)/(p·N))·N; in fact exact, since
    // the weights of each closed (segment, hour) add up to its row count.
    let per_segment = rows(
        &client,
        "SELECT t.model, t.segment, t.n, coalesce(e.w, 0) FROM \
         (SELECT model, segment, count(*) AS n FROM truth GROUP BY 1, 2) t \
         LEFT JOIN (SELECT model, segment, sum(sample_weight) AS w FROM events GROUP BY 1, 2) e \
         ON t.model = e.model AND t.segment = e.segment ORDER BY 1, 2",
    )
    .await;
    assert!(per_segment.len() >= 10, "{per_segment:?}");
    for (i, row) in per_segment.iter().enumerate() {
        let (n, w) = (number(&per_segment, i, 2), number(&per_segment, i, 3));
        let bound = 4.0 * ((1.0 - RATE) / (RATE * n)).sqrt() * n;
        assert!(
            (w - n).abs() <= bound,
            "{row:?}: weighted {w} vs {n} (bound {bound:.1})"
        );
    }

    // Weighted rates and quantiles on the sample estimate the truth's: the
    // error rate per model exactly (every error is kept with weight 1, and
    // the weights of each closed hour add up to its row count), latency
    // quantiles within 5 %.
    let rates = rows(
        &client,
        "SELECT t.model, t.rate, e.rate FROM \
         (SELECT model, avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END) AS rate FROM truth GROUP BY 1) t \
         JOIN (SELECT model, sum(sample_weight) FILTER (WHERE status <> 'ok') / sum(sample_weight) AS rate \
               FROM events GROUP BY 1) e ON t.model = e.model ORDER BY 1",
    )
    .await;
    for (i, row) in rates.iter().enumerate() {
        let (truth, estimate) = (number(&rates, i, 1), number(&rates, i, 2));
        assert!((truth - estimate).abs() < 1e-9, "error rate {row:?}");
    }
    let quantiles = rows(
        &client,
        "SELECT (SELECT latency_quantile(latency_ms, 0.5) FROM truth) AS p50, \
                (SELECT weighted_quantile(latency_ms, sample_weight, 0.5) FROM events) AS wp50, \
                (SELECT latency_quantile(latency_ms, 0.9) FROM truth) AS p90, \
                (SELECT weighted_quantile(latency_ms, sample_weight, 0.9) FROM events) AS wp90",
    )
    .await;
    for pair in [(0, 1), (2, 3)] {
        let (truth, estimate) = (number(&quantiles, 0, pair.0), number(&quantiles, 0, pair.1));
        assert!(
            (truth - estimate).abs() <= 0.05 * truth,
            "latency quantiles {quantiles:?}"
        );
    }

    // The counts table adds up: seen = every row, kept + dropped = seen.
    let counts = rows(
        &client,
        "SELECT sum(seen), sum(kept_by_rule + kept_by_rate + kept_for_minimum), sum(dropped) \
         FROM lookout.events_sampling",
    )
    .await;
    assert_eq!(number(&counts, 0, 0), total, "{counts:?}");
    assert_eq!(number(&counts, 0, 1), kept, "{counts:?}");
    assert_eq!(number(&counts, 0, 2), total - kept, "{counts:?}");

    // A restart keeps the decisions, and deciding again repeats none.
    let dir = server.stop().await;
    let server = TestServer::start_sampling(dir, LookoutOptions::default(), sampling).await;
    let client = server.client().await;
    client
        .simple_query("SET lookout.now = '2030-01-01 00:00:00+00'")
        .await
        .expect("set now");
    let again = rows(&client, "DECIDE SAMPLING ON events").await;
    assert_eq!(
        again,
        vec![vec![Some("0".into()), Some("0".into()), Some("0".into())]]
    );
    let after = number(&rows(&client, "SELECT count(*) FROM events").await, 0, 0);
    assert_eq!(after, kept);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_decides_on_its_own_schedule() {
    let sampling = lookout_sampling::SamplingOptions {
        interval: Some(Duration::from_millis(200)),
    };
    let server = TestServer::start_sampling(
        tempfile::tempdir().expect("tempdir"),
        LookoutOptions::default(),
        sampling,
    )
    .await;
    let client = connect(server.addr).await;
    client
        .batch_execute(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT, request_id TEXT, status TEXT);
             ALTER TABLE calls SET SAMPLING (KEY request_id, SEGMENT BY (model), RATE 0.5, \
               KEEP WHEN status <> 'ok', WINDOW '1 second');
             INSERT INTO calls SELECT now(), 'm', 'now-' || i, CASE WHEN i < 3 THEN 'error' ELSE 'ok' END \
               FROM generate_series(0, 99) t(i);
             INSERT INTO calls SELECT TIMESTAMPTZ '2025-01-01 00:00:00+00', 'm', 'old-' || i, 'ok' \
               FROM generate_series(0, 99) t(i);",
        )
        .await
        .expect("setup");
    // Errors of the current hour are kept once the window passes; the
    // current hour's nominal calls wait for it to close; an old hour is
    // closed, so its calls are sampled at once.
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = rows(
            &client,
            "SELECT count(*) FILTER (WHERE request_id LIKE 'now-%'), \
                    count(*) FILTER (WHERE request_id LIKE 'old-%'), \
                    sum(sample_weight) FILTER (WHERE request_id LIKE 'old-%') FROM calls",
        )
        .await;
        if seen[0][0].as_deref() == Some("3") && seen[0][1].as_deref() != Some("0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen[0][0].as_deref(), Some("3"), "{seen:?}");
    let old = number(&seen, 0, 1);
    assert!((20.0..=80.0).contains(&old), "{seen:?}");
    assert!((number(&seen, 0, 2) - 100.0).abs() < 1e-9, "{seen:?}");

    // A decision that keeps failing in the background shows in SHOW
    // SAMPLING (here the table a keep-rule reads was dropped), and clears
    // once decisions succeed again.
    client
        .batch_execute(
            "CREATE TABLE flags (ts TIMESTAMPTZ NOT NULL, request_id TEXT);
             CREATE TABLE flagged (ts TIMESTAMPTZ NOT NULL, request_id TEXT);
             ALTER TABLE flagged SET SAMPLING (KEY request_id, RATE 0.5, \
               KEEP WHEN request_id IN (SELECT request_id FROM flags), WINDOW '1 second');
             DROP TABLE flags;
             INSERT INTO flagged VALUES (now(), 'a');",
        )
        .await
        .expect("a policy reading a dropped table");
    let last_error = || async {
        let shown = rows(&client, "SHOW SAMPLING").await;
        shown
            .into_iter()
            .find(|r| r[0].as_deref() == Some("flagged"))
            .and_then(|r| r[4].clone())
    };
    // The last error once it is there (or gone), within 10 s.
    let last_error = &last_error;
    let settled = |failing: bool| async move {
        let mut error = None;
        for _ in 0..100 {
            error = last_error().await;
            if error.is_some() == failing {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        error
    };
    let error = settled(true)
        .await
        .expect("the failing decision shows in SHOW SAMPLING");
    assert!(error.contains("flags"), "{error}");
    client
        .batch_execute("CREATE TABLE flags (ts TIMESTAMPTZ NOT NULL, request_id TEXT)")
        .await
        .expect("flags again");
    assert_eq!(
        settled(false).await,
        None,
        "the error clears once a decision succeeds"
    );

    // While its decisions fail, the sampled table can still be dropped:
    // its undecided held rows go with it.
    client
        .batch_execute("DROP TABLE flags; INSERT INTO flagged VALUES (now(), 'b')")
        .await
        .expect("fail again");
    assert!(settled(true).await.is_some(), "decisions fail again");
    let reset = client
        .batch_execute("ALTER TABLE flagged RESET SAMPLING")
        .await
        .expect_err("RESET SAMPLING needs a last decision");
    let reset = reset.as_db_error().map(|e| e.message().to_string());
    assert!(
        reset
            .as_deref()
            .is_some_and(|m| m.contains("flags") && m.contains("DROP TABLE")),
        "{reset:?}"
    );
    client
        .batch_execute("DROP TABLE flagged")
        .await
        .expect("DROP TABLE while decisions fail");
    let manifest = server.lookout.storage().manifest().expect("manifest");
    let left: Vec<&String> = manifest
        .tables
        .keys()
        .filter(|n| n.contains("flagged"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(last_error().await, None);
    // A rollup still stops a drop, before the sampling state is touched.
    client
        .batch_execute(
            "CREATE TABLE kept (ts TIMESTAMPTZ NOT NULL, request_id TEXT);
             ALTER TABLE kept SET SAMPLING (KEY request_id, RATE 0.5);
             CREATE ROLLUP kept_hourly ON kept EVERY '1 hour' AS (count(*))",
        )
        .await
        .expect("kept");
    assert_eq!(error_code(&client, "DROP TABLE kept").await, "2BP01");
    assert!(
        rows(&client, "SHOW SAMPLING")
            .await
            .iter()
            .any(|r| r[0].as_deref() == Some("kept"))
    );
    server.stop().await;
}

/// kill -9 while writers insert into a sampled table and a client decides
/// over and over: after a restart every acknowledged row is held, no row
/// was kept twice, the counts agree with the kept rows, and a last decision
/// decides every held row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_decisions_keeps_each_decision_whole() {
    use std::sync::Arc;
    use tokio::sync::Mutex;

    use crate::harness::{free_port, spawn_server, wait_ready};

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = spawn_server(dir.path(), port);
    let client = wait_ready(port).await;
    client
        .batch_execute(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, model TEXT, request_id TEXT, status TEXT);
             ALTER TABLE calls SET SAMPLING (KEY request_id, SEGMENT BY (model), RATE 0.1, \
               MINIMUM 2 PER HOUR, KEEP WHEN status <> 'ok', WINDOW '0 seconds');",
        )
        .await
        .expect("setup");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for writer in 0..2 {
        let acked = Arc::clone(&acked);
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        tasks.push(tokio::spawn(async move {
            let client = connect(addr).await;
            for batch in 0.. {
                let values: Vec<String> = (0..5)
                    .map(|i| {
                        format!(
                            "('2025-01-01 {:02}:{:02}:00+00', 'm{}', 'w{writer}-{batch}-{i}', '{}')",
                            batch % 24,
                            i,
                            i % 2,
                            if i == 0 { "error" } else { "ok" }
                        )
                    })
                    .collect();
                let sql = format!("INSERT INTO calls VALUES {}", values.join(","));
                if client.simple_query(&sql).await.is_err() {
                    return;
                }
                acked
                    .lock()
                    .await
                    .extend((0..5).map(|i| format!("w{writer}-{batch}-{i}")));
            }
        }));
    }
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    tasks.push(tokio::spawn(async move {
        let client = connect(addr).await;
        let _ = client
            .simple_query("SET lookout.now = '2030-01-01 00:00:00+00'")
            .await;
        while client.simple_query("DECIDE SAMPLING").await.is_ok() {}
    }));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() > 50, "too little progress: {}", acked.len());

    let mut child = spawn_server(dir.path(), port);
    let client = wait_ready(port).await;
    let lost = rows(
        &client,
        &format!(
            "SELECT count(*) FROM (VALUES {}) a(id) WHERE id NOT IN (SELECT request_id FROM lookout.calls_held)",
            acked
                .iter()
                .map(|k| format!("('{k}')"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    )
    .await;
    assert_eq!(lost[0][0].as_deref(), Some("0"), "acknowledged rows lost");
    let check = "SELECT (SELECT count(*) FROM calls) AS kept, \
                        (SELECT count(DISTINCT request_id) FROM calls) AS distinct_kept, \
                        (SELECT sum(kept_by_rule + kept_by_rate + kept_for_minimum + rescued) FROM lookout.calls_sampling) AS counted";
    let before = rows(&client, check).await;
    eprintln!(
        "acknowledged {} rows; after the crash: {before:?}",
        acked.len()
    );
    assert_ne!(
        before[0][0].as_deref(),
        Some("0"),
        "no decision was made before the kill"
    );
    assert_eq!(
        before[0][0], before[0][1],
        "a row was kept twice: {before:?}"
    );
    assert_eq!(
        before[0][0].as_deref(),
        before[0][2].as_deref().or(Some("0")),
        "{before:?}"
    );
    client
        .batch_execute("SET lookout.now = '2030-01-01 00:00:00+00'; DECIDE SAMPLING ON calls")
        .await
        .expect("decide");
    let after = rows(&client, check).await;
    assert_eq!(after[0][0], after[0][1], "a row was kept twice: {after:?}");
    assert_eq!(after[0][0], after[0][2], "{after:?}");
    let all = rows(
        &client,
        "SELECT (SELECT count(*) FROM lookout.calls_held) AS held, \
                (SELECT sum(seen) FROM lookout.calls_sampling) AS seen, \
                (SELECT count(*) FROM lookout.calls_held WHERE status <> 'ok') AS errors, \
                (SELECT count(*) FROM calls WHERE status <> 'ok') AS kept_errors",
    )
    .await;
    assert_eq!(all[0][0], all[0][1], "every held row decided once: {all:?}");
    assert_eq!(all[0][2], all[0][3], "every error kept: {all:?}");
    child.kill().expect("kill");
    let _ = child.wait();
}
