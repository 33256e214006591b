//! What a query sees: every execution of a prepared statement, a cursor or a
//! plain query reads the data as of its own start, whatever writes, deletes,
//! flushes, compactions and garbage collection run around it
//! (docs/storage.md, "What a query sees").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookout_query::LookoutOptions;
use lookout_storage::StorageOptions;
use tokio_postgres::types::ToSql;

use crate::harness::{TestServer, connect, error_code, rows, run_on_fresh_server};

fn count(row: &tokio_postgres::Row) -> i64 {
    row.get::<_, i64>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_read_the_data_of_each_execution() {
    let server = TestServer::start().await;
    let writer = server.client().await;
    let reader = server.client().await;
    writer
        .batch_execute("CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, batch BIGINT, x DOUBLE PRECISION)")
        .await
        .expect("create");
    // A named statement, prepared once, as psycopg, pgjdbc, asyncpg and pgx
    // do after a few runs or at once.
    let counted = reader
        .prepare("SELECT count(*) FROM t")
        .await
        .expect("prepare");
    let by_batch = reader
        .prepare("SELECT count(*) FROM t WHERE batch = $1")
        .await
        .expect("prepare");
    let recent = reader
        .prepare("SELECT count(*) FROM t WHERE ts > now() - interval '1 minute'")
        .await
        .expect("prepare");
    assert_eq!(count(&reader.query_one(&counted, &[]).await.expect("q")), 0);
    for batch in 1..=8i64 {
        writer
            .batch_execute(&format!(
                "INSERT INTO t SELECT now(), {batch}, v FROM generate_series(1, 500) AS g(v)"
            ))
            .await
            .expect("insert");
        let n = count(&reader.query_one(&counted, &[]).await.expect("q"));
        assert_eq!(n, 500 * batch, "after batch {batch}");
        let n = count(&reader.query_one(&by_batch, &[&batch]).await.expect("q"));
        assert_eq!(n, 500, "batch {batch} by parameter");
        if batch == 4 {
            // Rows moved from memory to Parquet, then merged: still seen once.
            server.lookout.storage().flush().await.expect("flush");
        }
    }
    server.lookout.storage().compact().await.expect("compact");
    assert_eq!(
        count(&reader.query_one(&counted, &[]).await.expect("q")),
        4000
    );
    writer
        .batch_execute("DELETE FROM t WHERE batch IN (2, 7)")
        .await
        .expect("delete");
    assert_eq!(
        count(&reader.query_one(&counted, &[]).await.expect("q")),
        3000
    );
    let two: i64 = 2;
    assert_eq!(
        count(&reader.query_one(&by_batch, &[&two]).await.expect("q")),
        0
    );
    // now() is the time of each execution, not of the prepare.
    assert_eq!(
        count(&reader.query_one(&recent, &[]).await.expect("q")),
        3000
    );

    // A column added after the prepare: a statement whose result does not
    // change is planned again; one whose `*` would now show the new column
    // is refused, as PostgreSQL refuses it.
    let star = reader
        .prepare("SELECT * FROM t WHERE batch = 1 LIMIT 1")
        .await
        .expect("prepare");
    let all = reader
        .prepare("SELECT batch, x FROM t WHERE batch = 1 ORDER BY x LIMIT 1")
        .await
        .expect("prepare");
    writer
        .batch_execute("ALTER TABLE t ADD COLUMN note TEXT")
        .await
        .expect("alter");
    writer
        .batch_execute("INSERT INTO t VALUES (now(), 9, 1.0, 'new')")
        .await
        .expect("insert");
    let row = reader.query_one(&all, &[]).await.expect("q");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, f64>(1)), (1, 1.0));
    let err = reader.query_one(&star, &[]).await.expect_err("result type");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err:?}");
    let where_new = reader
        .prepare("SELECT count(*) FROM t WHERE note = 'new'")
        .await
        .expect("prepare");
    assert_eq!(
        count(&reader.query_one(&where_new, &[]).await.expect("q")),
        1
    );
    assert_eq!(
        count(&reader.query_one(&counted, &[]).await.expect("q")),
        3001
    );

    // A table dropped and created again with other column types: refused
    // as PostgreSQL refuses a cached plan whose result type changed.
    writer
        .batch_execute("DROP TABLE t; CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, batch TEXT, x TEXT)")
        .await
        .expect("recreate");
    let err = reader.query_one(&all, &[]).await.expect_err("changed type");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err:?}");
    assert_eq!(count(&reader.query_one(&counted, &[]).await.expect("q")), 0);
    writer.batch_execute("DROP TABLE t").await.expect("drop");
    let err = reader.query_one(&counted, &[]).await.expect_err("dropped");
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_reads_the_data_as_of_its_declare() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE c (ts TIMESTAMPTZ NOT NULL, n BIGINT); \
             INSERT INTO c SELECT now(), v FROM generate_series(1, 10) AS g(v); \
             BEGIN; DECLARE cur CURSOR FOR SELECT count(*) FROM c",
        )
        .await
        .expect("declare");
    let other = server.client().await;
    other
        .batch_execute("INSERT INTO c VALUES (now(), 11); DELETE FROM c WHERE n <= 5")
        .await
        .expect("write");
    assert_eq!(
        rows(&client, "FETCH 1 FROM cur").await,
        vec![vec![Some("10".to_string())]]
    );
    client.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(
        rows(&client, "SELECT count(*) FROM c").await,
        vec![vec![Some("6".to_string())]]
    );
    assert_eq!(error_code(&client, "FETCH 1 FROM nowhere").await, "34000");
}

/// What the checker knows of the batches: written by a statement that has
/// returned (acknowledged), or deleted by one.
#[derive(Default)]
struct History {
    /// Batch id to its row count, once its INSERT returned.
    acked: BTreeMap<i64, i64>,
    /// Batches whose DELETE has started (they may vanish at any moment).
    deleting: BTreeSet<i64>,
    /// Batches whose DELETE returned.
    deleted: BTreeSet<i64>,
}

#[derive(Default)]
struct Tally {
    reads: u64,
    batches_checked: u64,
    anomalies: Vec<String>,
}

/// One read's result against what was known before it started and after
/// it ended.
fn check_read(
    seen: &BTreeMap<i64, i64>,
    before: &History,
    after: &History,
    sizes: &BTreeMap<i64, i64>,
    tally: &mut Tally,
    reader: &str,
) {
    tally.reads += 1;
    for (batch, n) in &before.acked {
        if before.deleted.contains(batch) {
            if seen.contains_key(batch) {
                tally.anomalies.push(format!(
                    "{reader}: batch {batch} deleted before the read, seen"
                ));
            }
            continue;
        }
        tally.batches_checked += 1;
        match seen.get(batch) {
            Some(m) if m == n => {}
            None if after.deleting.contains(batch) => {}
            other => tally.anomalies.push(format!(
                "{reader}: batch {batch} acknowledged before the read with {n} rows, seen {other:?}"
            )),
        }
    }
    for (batch, m) in seen {
        match sizes.get(batch) {
            Some(n) if n == m => {}
            n => tally.anomalies.push(format!(
                "{reader}: batch {batch} seen with {m} rows, written with {n:?}"
            )),
        }
    }
}

/// Several writers with unique batch ids, a deleter removing whole batches,
/// readers on long-lived connections (a prepared statement and plain
/// queries), and flushes, compactions and garbage collection forced to run
/// all the time. Every read must see each batch acknowledged before it
/// started whole and once, and none deleted before it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stay_consistent_under_writes_deletes_and_maintenance() {
    let seconds: u64 = std::env::var("LOOKOUT_CONSISTENCY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let options = LookoutOptions {
        storage: StorageOptions {
            flush_bytes: 32 * 1024,
            flush_age: Duration::from_millis(200),
            maintenance_interval: Duration::from_millis(250),
            compaction_min_files: 2,
            // Superseded files are deleted as soon as no query reads them.
            gc_grace: Duration::ZERO,
            ..StorageOptions::default()
        },
        ..LookoutOptions::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(dir, options).await;
    server
        .client()
        .await
        .batch_execute(
            "CREATE TABLE j (ts TIMESTAMPTZ NOT NULL, model TEXT, batch BIGINT, i BIGINT)",
        )
        .await
        .expect("create");

    let history = Arc::new(Mutex::new(History::default()));
    let sizes = Arc::new(Mutex::new(BTreeMap::<i64, i64>::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();

    for w in 0..3i64 {
        let (client, history, sizes) = (
            connect(server.addr).await,
            Arc::clone(&history),
            Arc::clone(&sizes),
        );
        tasks.spawn(async move {
            let mut k = 0i64;
            let mut failures = Vec::new();
            while Instant::now() < deadline {
                let batch = k * 3 + w + 1;
                let n = 20 + (batch * 37) % 180;
                sizes.lock().expect("sizes").insert(batch, n);
                // Sent with the extended protocol, as drivers do.
                let insert = format!(
                    "INSERT INTO j SELECT now(), 'm{}', {batch}, v FROM generate_series(1, {n}) AS g(v)",
                    batch % 3
                );
                match client.execute(&insert, &[]).await {
                    Ok(_) => {
                        history.lock().expect("history").acked.insert(batch, n);
                    }
                    Err(e) => failures.push(format!("insert {batch}: {e:?}")),
                }
                k += 1;
            }
            failures
        });
    }

    {
        let (client, history) = (connect(server.addr).await, Arc::clone(&history));
        tasks.spawn(async move {
            let delete = client
                .prepare("DELETE FROM j WHERE batch = $1")
                .await
                .expect("prepare delete");
            let mut failures = Vec::new();
            let mut turn = 0usize;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let victim = {
                    let mut h = history.lock().expect("history");
                    let live: Vec<i64> = h
                        .acked
                        .keys()
                        .filter(|b| !h.deleting.contains(b))
                        .copied()
                        .collect();
                    turn += 1;
                    let Some(v) = live.get(turn * 7919 % live.len().max(1)).copied() else {
                        continue;
                    };
                    h.deleting.insert(v);
                    v
                };
                match client.execute(&delete, &[&victim]).await {
                    Ok(_) => {
                        history.lock().expect("history").deleted.insert(victim);
                    }
                    Err(e) => failures.push(format!("delete {victim}: {e:?}")),
                }
            }
            failures
        });
    }

    let tally = Arc::new(Mutex::new(Tally::default()));
    for r in 0..2 {
        let (client, history, sizes, tally) = (
            connect(server.addr).await,
            Arc::clone(&history),
            Arc::clone(&sizes),
            Arc::clone(&tally),
        );
        tasks.spawn(async move {
            let sql = "SELECT batch, count(*) FROM j GROUP BY batch";
            let prepared = client.prepare(sql).await.expect("prepare read");
            let mut failures = Vec::new();
            let mut turn = 0u64;
            while Instant::now() < deadline {
                turn += 1;
                let snapshot = |h: &History| History {
                    acked: h.acked.clone(),
                    deleting: h.deleting.clone(),
                    deleted: h.deleted.clone(),
                };
                let before = snapshot(&history.lock().expect("history"));
                // Reader 0 reuses its prepared statement; reader 1 alternates
                // it with the same text as a simple query.
                let seen: Result<BTreeMap<i64, i64>, String> = if r == 1 && turn.is_multiple_of(2) {
                    client
                        .simple_query(sql)
                        .await
                        .map(|msgs| {
                            msgs.into_iter()
                                .filter_map(|m| match m {
                                    tokio_postgres::SimpleQueryMessage::Row(row) => Some((
                                        row.get(0).and_then(|s| s.parse().ok()).unwrap_or(-1),
                                        row.get(1).and_then(|s| s.parse().ok()).unwrap_or(-1),
                                    )),
                                    _ => None,
                                })
                                .collect()
                        })
                        .map_err(|e| format!("{e:?}"))
                } else {
                    let params: &[&(dyn ToSql + Sync)] = &[];
                    client
                        .query(&prepared, params)
                        .await
                        .map(|rows| {
                            rows.iter()
                                .map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1)))
                                .collect()
                        })
                        .map_err(|e| format!("{e:?}"))
                };
                let after = snapshot(&history.lock().expect("history"));
                match seen {
                    Ok(seen) => {
                        let sizes = sizes.lock().expect("sizes").clone();
                        let mut t = tally.lock().expect("tally");
                        check_read(
                            &seen,
                            &before,
                            &after,
                            &sizes,
                            &mut t,
                            &format!("reader {r}"),
                        );
                    }
                    Err(e) => failures.push(format!("reader {r}: {e}")),
                }
            }
            failures
        });
    }

    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failures.extend(done.expect("task"));
    }
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    let h = std::mem::take(&mut *history.lock().expect("history"));
    eprintln!(
        "consistency: {} reads, {} batch checks, {} batches written, {} deleted, {} anomalies",
        tally.reads,
        tally.batches_checked,
        h.acked.len(),
        h.deleted.len(),
        tally.anomalies.len()
    );
    assert!(failures.is_empty(), "statements failed: {failures:#?}");
    assert!(
        tally.anomalies.is_empty(),
        "{} anomalies, first: {:#?}",
        tally.anomalies.len(),
        &tally.anomalies[..tally.anomalies.len().min(10)]
    );
    assert!(tally.reads >= 20, "too few reads: {}", tally.reads);
    assert!(!h.deleted.is_empty(), "the deleter deleted nothing");

    // The final state: every acknowledged batch not deleted, whole.
    let client = server.client().await;
    let final_rows = client
        .query("SELECT batch, count(*) FROM j GROUP BY batch", &[])
        .await
        .expect("final read");
    let seen: BTreeMap<i64, i64> = final_rows
        .iter()
        .map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1)))
        .collect();
    let expected: BTreeMap<i64, i64> = h
        .acked
        .iter()
        .filter(|(b, _)| !h.deleted.contains(b))
        .map(|(b, n)| (*b, *n))
        .collect();
    assert_eq!(seen, expected, "final state");
    // Maintenance really ran: rows reached Parquet and files were merged.
    let files = server
        .lookout
        .storage()
        .snapshot("j")
        .expect("snapshot")
        .files
        .len();
    assert!(files > 0, "no flush ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_asyncpg_prepared_reads_are_fresh() {
    run_on_fresh_server(
        "python3",
        &["fresh_reads.py"],
        "fresh_reads.py (pip install -r tests/requirements.txt)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_prepared_reads_are_fresh() {
    run_on_fresh_server(
        "java",
        &["-cp", "/usr/share/java/postgresql.jar", "FreshReads.java"],
        "FreshReads.java (apt-get install default-jdk-headless libpostgresql-jdbc-java)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_statements_are_fresh() {
    run_on_fresh_server(
        "node",
        &["fresh_reads.js"],
        "fresh_reads.js (npm ci in tests/clients)",
    )
    .await;
}
