//! kill -9 of the server during concurrent INSERT and COPY loops: after a
//! restart every acknowledged row is there, no batch is torn, and the
//! table's rollup counts exactly the rows that survived.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use tokio::sync::Mutex;

use crate::harness::{connect, free_port, rows, spawn_server, wait_ready};

const BATCH: i64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = spawn_server(dir.path(), port);
    let client = wait_ready(port).await;
    client
        .simple_query("CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, writer INT NOT NULL, batch BIGINT NOT NULL, i INT NOT NULL)")
        .await
        .expect("create");
    client
        .simple_query(
            "CREATE ROLLUP t_hourly ON t GROUP BY writer EVERY '1 hour' AS (count(*), sum(i))",
        )
        .await
        .expect("create rollup");
    let acked: Arc<Mutex<Vec<(i32, i64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..4i32 {
        let acked = Arc::clone(&acked);
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        writers.push(tokio::spawn(async move {
            let client = connect(addr).await;
            for batch in 0.. {
                let values: Vec<String> = (0..BATCH)
                    .map(|i| format!("('2025-01-01 00:00:00+00', {writer}, {batch}, {i})"))
                    .collect();
                let ok = if writer % 2 == 0 {
                    client
                        .simple_query(&format!("INSERT INTO t VALUES {}", values.join(",")))
                        .await
                        .is_ok()
                } else {
                    let data: String = (0..BATCH)
                        .map(|i| format!("2025-01-01 00:00:00+00\t{writer}\t{batch}\t{i}\n"))
                        .collect();
                    async {
                        let sink = client.copy_in("COPY t FROM STDIN").await?;
                        futures::pin_mut!(sink);
                        sink.send(Bytes::from(data)).await?;
                        sink.finish().await
                    }
                    .await
                    .is_ok()
                };
                if !ok {
                    return;
                }
                acked.lock().await.push((writer, batch));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() > 20,
        "writers made too little progress: {}",
        acked.len()
    );

    let mut child = spawn_server(dir.path(), port);
    let client = wait_ready(port).await;
    let counts = rows(
        &client,
        "SELECT writer, batch, count(*) FROM t GROUP BY writer, batch",
    )
    .await;
    let mut present = std::collections::HashMap::new();
    for r in counts {
        let parse = |v: &Option<String>| {
            v.as_deref()
                .and_then(|s| s.parse::<i64>().ok())
                .expect("number")
        };
        let (w, b, n) = (parse(&r[0]), parse(&r[1]), parse(&r[2]));
        assert_eq!(n, BATCH, "batch {b} of writer {w} is torn: {n} rows");
        present.insert((w as i32, b), n);
    }
    for (w, b) in &acked {
        assert!(
            present.contains_key(&(*w, *b)),
            "acknowledged batch {b} of writer {w} was lost"
        );
    }
    // Rows and their rollup delta are one WAL record: both or neither.
    let raw = rows(
        &client,
        "SELECT writer, count(*), sum(i) FROM t GROUP BY writer ORDER BY writer",
    )
    .await;
    let rolled = rows(
        &client,
        "SELECT writer, sum(count), CAST(sum(i_sum) AS BIGINT) FROM t_hourly GROUP BY writer ORDER BY writer",
    )
    .await;
    assert_eq!(
        rolled, raw,
        "the rollup disagrees with the rows after the crash"
    );
    child.kill().expect("kill");
    let _ = child.wait();
}

/// kill -9 while writers run transaction blocks that insert a batch in two
/// statements and delete a row of their previous batch: after a restart
/// every committed block is whole (its batch and its delete) and nothing of
/// an uncommitted block is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_committed_blocks_whole_and_uncommitted_ones_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = spawn_server(dir.path(), port);
    let client = wait_ready(port).await;
    client
        .simple_query("CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, writer INT NOT NULL, batch BIGINT NOT NULL, i INT NOT NULL)")
        .await
        .expect("create");
    // A block that never commits.
    let open = connect(format!("127.0.0.1:{port}").parse().expect("addr")).await;
    open.simple_query("BEGIN; INSERT INTO t VALUES ('2025-01-01 00:00:00+00', 99, 0, 0)")
        .await
        .expect("open block");
    let acked: Arc<Mutex<Vec<(i32, i64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..3i32 {
        let acked = Arc::clone(&acked);
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        writers.push(tokio::spawn(async move {
            let client = connect(addr).await;
            for batch in 0i64.. {
                let row = |i: i64| format!("('2025-01-01 00:00:00+00', {writer}, {batch}, {i})");
                let block = format!(
                    "BEGIN; INSERT INTO t VALUES {}, {}; INSERT INTO t VALUES {}, {}, {}; \
                     DELETE FROM t WHERE writer = {writer} AND batch = {} AND i = 0; COMMIT",
                    row(0),
                    row(1),
                    row(2),
                    row(3),
                    row(4),
                    batch - 1
                );
                if client.simple_query(&block).await.is_err() {
                    return;
                }
                acked.lock().await.push((writer, batch));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() > 10,
        "writers made too little progress: {}",
        acked.len()
    );

    let mut child = spawn_server(dir.path(), port);
    let client = wait_ready(port).await;
    let counts = rows(
        &client,
        "SELECT writer, batch, count(*) FROM t GROUP BY writer, batch ORDER BY writer, batch",
    )
    .await;
    let parse = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| s.parse::<i64>().ok())
            .expect("number")
    };
    let mut batches: std::collections::BTreeMap<i64, Vec<(i64, i64)>> = Default::default();
    for r in &counts {
        let (w, b, n) = (parse(&r[0]), parse(&r[1]), parse(&r[2]));
        assert_ne!(w, 99, "a block that never committed left rows");
        batches.entry(w).or_default().push((b, n));
    }
    for (w, present) in &batches {
        let last = present.len() as i64 - 1;
        for (k, (b, n)) in present.iter().enumerate() {
            assert_eq!(
                *b, k as i64,
                "writer {w}: batch {k} is missing: {present:?}"
            );
            let whole = if *b == last { 5 } else { 4 };
            assert_eq!(*n, whole, "writer {w}: block {b} is torn: {present:?}");
        }
    }
    for (w, b) in &acked {
        let present = batches.get(&i64::from(*w)).map_or(0, Vec::len) as i64;
        assert!(
            *b < present,
            "acknowledged block {b} of writer {w} was lost"
        );
    }
    child.kill().expect("kill");
    let _ = child.wait();
}
