//! Rows flushed to Parquet at shutdown, read back after a restart: schema
//! evolution over old files and deletes through deletion vectors.

use crate::harness::{TestServer, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_columns_and_deletes_over_parquet_files() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .simple_query(
            "CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, v DOUBLE PRECISION);
             INSERT INTO t VALUES ('2025-01-01 00:00:00+00', 'a', 1), ('2025-01-01 00:00:01+00', 'b', 2),
                                  ('2025-01-01 00:00:02+00', 'a', 4)",
        )
        .await
        .expect("setup");
    drop(client);
    // Closing flushes the buffered rows to Parquet files.
    let dir = server.stop().await;
    let parquet = std::fs::read_dir(dir.path().join("data/t"))
        .expect("table dir")
        .count();
    assert_eq!(parquet, 2, "one directory per model");

    let server = TestServer::start_in(dir).await;
    let client = server.client().await;
    client
        .simple_query(
            "ALTER TABLE t ADD COLUMN region TEXT;
             INSERT INTO t VALUES ('2025-01-02 00:00:00+00', 'a', 3, 'eu')",
        )
        .await
        .expect("alter");
    assert_eq!(
        rows(&client, "SELECT model, v, region FROM t ORDER BY ts").await,
        vec![
            vec![Some("a".into()), Some("1".into()), None],
            vec![Some("b".into()), Some("2".into()), None],
            vec![Some("a".into()), Some("4".into()), None],
            vec![Some("a".into()), Some("3".into()), Some("eu".into())],
        ]
    );
    // A time range that covers one file, cuts through another and the
    // buffered rows: only the rows inside count, with or without the time
    // column in the output.
    let since = "ts >= TIMESTAMPTZ '2025-01-01 00:00:01+00'";
    assert_eq!(
        rows(
            &client,
            &format!("SELECT count(*), sum(v) FROM t WHERE {since}")
        )
        .await,
        vec![vec![Some("3".into()), Some("9".into())]]
    );
    assert_eq!(
        rows(&client, &format!("SELECT model FROM t WHERE {since} AND ts < TIMESTAMPTZ '2025-01-02 00:00:00+00' ORDER BY model")).await,
        vec![vec![Some("a".into())], vec![Some("b".into())]]
    );
    let deleted = client
        .simple_query("DELETE FROM t WHERE region IS NULL AND model = 'a'")
        .await
        .expect("delete");
    let affected = deleted.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    assert_eq!(affected, Some(2));
    assert_eq!(
        rows(&client, "SELECT model, v FROM t ORDER BY ts").await,
        vec![
            vec![Some("b".into()), Some("2".into())],
            vec![Some("a".into()), Some("3".into())]
        ]
    );
    server.stop().await;
}
