//! COPY in and out, atomic rejection of bad rows, extended-protocol parameters.

use bytes::Bytes;
use futures::{SinkExt, TryStreamExt};

use crate::harness::{TestServer, error_code, rows};

const CREATE: &str = "CREATE TABLE events (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, latency_ms DOUBLE PRECISION)";

async fn copy_in(
    client: &tokio_postgres::Client,
    sql: &str,
    data: &str,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in(sql).await?;
    futures::pin_mut!(sink);
    sink.send(Bytes::from(data.to_string())).await?;
    sink.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_csv_and_text_then_out() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.simple_query(CREATE).await.expect("create");
    let csv =
        "ts,model,latency_ms\n2025-01-01 00:00:00+00,a,1.5\n2025-01-01 00:00:01+00,\"b,c\",\n";
    let n = copy_in(
        &client,
        "COPY events FROM STDIN WITH (FORMAT csv, HEADER true)",
        csv,
    )
    .await
    .expect("csv copy");
    assert_eq!(n, 2);
    let text = "2025-01-01 00:00:02+00\ta\t2.5\n2025-01-01 00:00:03+00\ta\t\\N\n";
    let n = copy_in(&client, "COPY events FROM STDIN", text)
        .await
        .expect("text copy");
    assert_eq!(n, 2);
    let got = rows(
        &client,
        "SELECT model, count(*), sum(latency_ms) FROM events GROUP BY model ORDER BY model",
    )
    .await;
    assert_eq!(
        got,
        vec![
            vec![Some("a".into()), Some("3".into()), Some("4".into())],
            vec![Some("b,c".into()), Some("1".into()), None]
        ]
    );
    let out = client
        .copy_out(
            "COPY (SELECT * FROM events ORDER BY ts) TO STDOUT WITH (FORMAT csv, HEADER true)",
        )
        .await
        .expect("copy out");
    let chunks: Vec<Bytes> = out.try_collect().await.expect("copy data");
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect();
    assert_eq!(
        text,
        "ts,model,latency_ms\n2025-01-01 00:00:00+00,a,1.5\n2025-01-01 00:00:01+00,\"b,c\",\n2025-01-01 00:00:02+00,a,2.5\n2025-01-01 00:00:03+00,a,\n"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_copy_rows_reject_the_whole_copy() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.simple_query(CREATE).await.expect("create");
    let bad_type = "2025-01-01 00:00:00+00,a,1\n2025-01-01 00:00:00+00,a,fast\n";
    let err = copy_in(
        &client,
        "COPY events FROM STDIN WITH (FORMAT csv)",
        bad_type,
    )
    .await
    .unwrap_err();
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "22P02");
    assert!(
        db.message().contains("line 2") && db.message().contains("latency_ms"),
        "{}",
        db.message()
    );
    let null = "2025-01-01 00:00:00+00,,1\n";
    let err = copy_in(&client, "COPY events FROM STDIN WITH (FORMAT csv)", null)
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().expect("db").code().code(), "23502");
    let bad_ts = "yesterday,a,1\n";
    let err = copy_in(&client, "COPY events FROM STDIN WITH (FORMAT csv)", bad_ts)
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().expect("db").code().code(), "22007");
    // The connection survives and nothing of the failed copies is visible.
    assert_eq!(
        rows(&client, "SELECT count(*) FROM events").await,
        vec![vec![Some("0".into())]]
    );
    assert_eq!(
        error_code(&client, "INSERT INTO events VALUES ('2025-01-01', NULL, 1)").await,
        "23502"
    );
    assert_eq!(
        rows(&client, "SELECT count(*) FROM events").await,
        vec![vec![Some("0".into())]]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_parameters_and_binary_results() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.simple_query(CREATE).await.expect("create");
    client
        .simple_query("INSERT INTO events VALUES ('2025-01-01 00:00:00+00', 'a', 10), ('2025-01-01 01:00:00+00', 'b', 20)")
        .await
        .expect("insert");
    // tokio-postgres prepares, binds typed parameters and reads binary results.
    let ts: std::time::SystemTime =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_600);
    let rows = client
        .query(
            "SELECT model, latency_ms, ts FROM events WHERE model = $1 AND ts >= $2",
            &[&"a", &ts],
        )
        .await
        .expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, &str>(0), "a");
    assert_eq!(rows[0].get::<_, f64>(1), 10.0);
    assert_eq!(rows[0].get::<_, std::time::SystemTime>(2), ts);
    let n = client
        .execute(
            "INSERT INTO events VALUES ($1, $2, $3)",
            &[&ts, &"c", &30.5f64],
        )
        .await
        .expect("insert with params");
    assert_eq!(n, 1);
    // A driver-side transaction (BEGIN ... COMMIT) works; statements autocommit.
    let mut client = client;
    let tx = client.transaction().await.expect("begin");
    tx.execute(
        "INSERT INTO events VALUES ($1, $2, $3)",
        &[&ts, &"d", &1.0f64],
    )
    .await
    .expect("insert in transaction");
    tx.commit().await.expect("commit");
    let count: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 4);
    // set_config with bound parameters; the next statement sees the setting.
    let set: String = client
        .query_one(
            "SELECT set_config($1, $2, false)",
            &[&"lookout.now", &"2025-01-01 00:30:00+00"],
        )
        .await
        .expect("set_config")
        .get(0);
    assert_eq!(set, "2025-01-01 00:30:00+00");
    let before: i64 = client
        .query_one("SELECT count(*) FROM events WHERE ts < now()", &[])
        .await
        .expect("count before now()")
        .get(0);
    assert_eq!(before, 3, "the three rows at 00:00");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_a_running_statement() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // Nothing is canceled without a request, however long it takes.
    client
        .simple_query("CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, v INT)")
        .await
        .expect("DDL is not canceled");
    let n: i64 = client
        .query_one("SELECT count(*) FROM generate_series(1, 3000000)", &[])
        .await
        .expect("not canceled")
        .get(0);
    assert_eq!(n, 3_000_000);
    let token = client.cancel_token();
    let canceler = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("send CancelRequest");
    });
    let started = std::time::Instant::now();
    // Seconds of work without the cancel (the simple protocol, as psql's Ctrl-C).
    let err = client
        .simple_query("SELECT count(*) FROM generate_series(1, 5000000000)")
        .await
        .expect_err("canceled");
    canceler.await.expect("canceler");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "57014");
    assert_eq!(db.message(), "canceling statement due to user request");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // The same over the extended protocol; then the connection goes on.
    let token = client.cancel_token();
    let canceler = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let _ = token.cancel_query(tokio_postgres::NoTls).await;
    });
    let err = client
        .query("SELECT count(*) FROM generate_series(1, 5000000000)", &[])
        .await
        .expect_err("canceled");
    canceler.await.expect("canceler");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"));
    let one: i64 = client
        .query_one("SELECT count(*) FROM generate_series(1, 10)", &[])
        .await
        .expect("the session goes on")
        .get(0);
    assert_eq!(one, 10);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_decodes_text_escapes_and_refuses_bad_input_as_postgres_does() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute("CREATE TABLE c (ts TIMESTAMPTZ NOT NULL, s TEXT)")
        .await
        .expect("create");
    let ts = "2025-01-01 00:00:00+00";
    let data = format!(
        "{ts}\t\\101\n{ts}\t\\x41\\x4\n{ts}\t\\303\\251t\\u00e9\n{ts}\ta\\\tb\n{ts}\t\\N\n"
    );
    copy_in(&client, "COPY c FROM STDIN", &data)
        .await
        .expect("escapes decode");
    let got = rows(&client, "SELECT s FROM c").await;
    let want: Vec<Vec<Option<String>>> = [
        Some("A"),
        Some("A\u{4}"),
        Some("\u{e9}tu00e9"),
        Some("a\tb"),
        None,
    ]
    .iter()
    .map(|v| vec![v.map(str::to_string)])
    .collect();
    assert_eq!(got, want);
    for (sql, bad, code) in [
        ("COPY c FROM STDIN", format!("{ts}\t\\000\n"), "22021"),
        ("COPY c FROM STDIN", format!("{ts}\t\\377\n"), "22021"),
        (
            "COPY c FROM STDIN (FORMAT csv)",
            format!("{ts},\"unterminated\n"),
            "22P04",
        ),
    ] {
        let err = copy_in(&client, sql, &bad).await.expect_err("refused");
        assert_eq!(
            err.as_db_error().map(|e| e.code().code()),
            Some(code),
            "{bad:?}"
        );
    }
    assert_eq!(
        rows(&client, "SELECT count(*) FROM c").await,
        vec![vec![Some("5".to_string())]],
        "a refused COPY stores nothing"
    );
}

/// `n` CSV rows of `events`, one a second from `first`; row `bad` (1-based),
/// if any, has a latency that is not a number.
fn csv_events(first: usize, n: usize, bad: Option<usize>) -> Vec<String> {
    (0..n)
        .map(|i| {
            let s = first + i;
            let latency = if Some(i + 1) == bad {
                "fast".to_string()
            } else {
                (s % 1000).to_string()
            };
            format!(
                "2025-01-{:02} {:02}:{:02}:{:02}.5+00,m{},{latency}\n",
                1 + s / 86_400,
                s / 3600 % 24,
                s / 60 % 60,
                s % 60,
                s % 3
            )
        })
        .collect()
}

/// Sends `lines` in messages of 5,000 lines.
async fn send_lines(
    sink: &mut std::pin::Pin<&mut tokio_postgres::CopyInSink<Bytes>>,
    lines: &[String],
) -> Result<(), tokio_postgres::Error> {
    for chunk in lines.chunks(5_000) {
        sink.send(Bytes::from(chunk.concat())).await?;
    }
    Ok(())
}

/// Parquet files under the data directory.
fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

async fn count_and_sum(client: &tokio_postgres::Client) -> Vec<Vec<Option<String>>> {
    rows(
        client,
        "SELECT count(*), sum(latency_ms)::BIGINT FROM events",
    )
    .await
}

/// Waits until the data directory holds files besides `before`: a load
/// streaming as the data arrives has stored some.
async fn files_appear(dir: &std::path::Path, before: &[std::path::PathBuf]) {
    for _ in 0..200 {
        if parquet_files(dir).iter().any(|f| !before.contains(f)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no file was stored while the copy streamed");
}

/// Past the bulk threshold, COPY FROM STDIN streams into Parquet as the
/// data arrives; it still stores all or nothing, and only once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_copy_streams_and_stores_all_or_nothing() {
    // Small files, so a streaming load stores some before the copy ends.
    let options = lookout_query::LookoutOptions {
        storage: lookout_storage::StorageOptions {
            target_file_rows: 10_000,
            ..lookout_storage::StorageOptions::default()
        },
        ..lookout_query::LookoutOptions::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().expect("tempdir"), options).await;
    let dir = server.dir.path().to_path_buf();
    let client = server.client().await;
    let other = server.client().await;
    client.simple_query(CREATE).await.expect("create");
    const COPY: &str = "COPY events FROM STDIN WITH (FORMAT csv)";

    // Streamed: files are stored as rows arrive, yet nothing is visible
    // until the copy ends.
    let lines = csv_events(0, 400_000, None);
    let sink = client.copy_in(COPY).await.expect("copy");
    futures::pin_mut!(sink);
    send_lines(&mut sink, &lines).await.expect("send");
    files_appear(&dir, &[]).await;
    assert_eq!(
        count_and_sum(&other).await,
        vec![vec![Some("0".into()), None]]
    );
    assert_eq!(sink.finish().await.expect("finish"), 400_000);
    let expected: u64 = (0..400_000u64).map(|s| s % 1000).sum();
    let stored = vec![vec![Some("400000".to_string()), Some(expected.to_string())]];
    assert_eq!(count_and_sum(&other).await, stored);
    let files = parquet_files(&dir);

    // A bad row well past the point where the rows began streaming: the
    // copy is refused whole, naming the row, and leaves no file behind.
    let bad = csv_events(400_000, 400_000, Some(390_001));
    let sink = client.copy_in(COPY).await.expect("copy");
    futures::pin_mut!(sink);
    let sent = send_lines(&mut sink, &bad).await;
    let err = match sent {
        Ok(()) => sink.finish().await.unwrap_err(),
        Err(e) => e,
    };
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "22P02");
    assert!(db.message().contains("line 390001"), "{}", db.message());
    assert_eq!(count_and_sum(&client).await, stored);
    assert_eq!(parquet_files(&dir), files);

    // A client that gives up midway (CopyFail) stores nothing.
    {
        let sink = client.copy_in(COPY).await.expect("copy");
        futures::pin_mut!(sink);
        send_lines(&mut sink, &csv_events(800_000, 400_000, None))
            .await
            .expect("send");
        files_appear(&dir, &files).await;
    }
    assert_eq!(count_and_sum(&client).await, stored);
    assert_eq!(parquet_files(&dir), files);

    // A connection cut off midway stores nothing either.
    let conn_str = format!(
        "host={} port={} user=lookout dbname=lookout",
        server.addr.ip(),
        server.addr.port()
    );
    let (cut, connection) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let connection = tokio::spawn(connection);
    let sink = cut.copy_in(COPY).await.expect("copy");
    futures::pin_mut!(sink);
    send_lines(&mut sink, &csv_events(800_000, 400_000, None))
        .await
        .expect("send");
    files_appear(&dir, &files).await;
    connection.abort();
    let mut left = Vec::new();
    for _ in 0..100 {
        left = parquet_files(&dir);
        if left == files {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, files, "a cut-off copy's files are removed");
    assert_eq!(count_and_sum(&client).await, stored);

    // A rollup created while the rows stream would miss them: the copy is
    // refused with 40001 (run it again), and a retry stores it.
    let more = csv_events(800_000, 400_000, None);
    let sink = client.copy_in(COPY).await.expect("copy");
    futures::pin_mut!(sink);
    send_lines(&mut sink, &more).await.expect("send");
    files_appear(&dir, &files).await;
    other
        .simple_query(
            "CREATE ROLLUP events_daily ON events GROUP BY model EVERY '1 day' AS (count(*))",
        )
        .await
        .expect("create rollup");
    let err = sink.finish().await.unwrap_err();
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("40001"),
        "{err:?}"
    );
    assert_eq!(count_and_sum(&client).await, stored);
    // Not streamed now (the table derives rows): loaded whole, rollup too.
    assert_eq!(
        copy_in(&client, COPY, &more.concat()).await.expect("retry"),
        400_000
    );
    assert_eq!(
        rows(&client, "SELECT sum(count)::BIGINT FROM events_daily").await,
        vec![vec![Some("800000".into())]]
    );
    server.stop().await;
}

/// Embedding columns through COPY (text, CSV, binary), bound parameters in
/// both formats and binary results, with their dimensions checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_through_copy_and_parameters() {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;

    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .simple_query(
            "CREATE TABLE emb (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, e REAL[], v vector(3))",
        )
        .await
        .expect("create");
    let text =
        "2025-01-01 00:00:00+00\ta\t{0.1,0.2}\t[1,2,3]\n2025-01-01 00:00:01+00\ta\t\\N\t{4,5,6}\n";
    assert_eq!(
        copy_in(&client, "COPY emb FROM STDIN", text)
            .await
            .expect("text"),
        2
    );
    let csv = "2025-01-01 00:00:02+00,b,\"{7,NULL}\",\"[7,8,9]\"\n";
    assert_eq!(
        copy_in(&client, "COPY emb FROM STDIN WITH (FORMAT csv)", csv)
            .await
            .expect("csv"),
        1
    );
    // A vector(3) value of two dimensions refuses the whole COPY.
    let short = "2025-01-01 00:00:03+00\tc\t{1}\t[1,2]\n";
    let err = copy_in(&client, "COPY emb FROM STDIN", short)
        .await
        .expect_err("two dimensions into vector(3)");
    assert_eq!(sqlstate(&err), "22P02", "{err}");

    let sink = client
        .copy_in("COPY emb FROM STDIN WITH (FORMAT binary)")
        .await
        .expect("binary copy");
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::FLOAT4_ARRAY,
            Type::FLOAT4_ARRAY,
        ],
    );
    futures::pin_mut!(writer);
    let ts = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_610);
    writer
        .as_mut()
        .write(&[&ts, &"d", &vec![0.5f32, -1.5], &vec![1f32, 0.0, 0.25]])
        .await
        .expect("binary row");
    assert_eq!(writer.finish().await.expect("binary finish"), 1);

    // Parameters: binary float4[] as tokio-postgres sends them, and text.
    let n = client
        .execute(
            "INSERT INTO emb VALUES ($1, 'e', $2, $3)",
            &[&ts, &vec![2.5f32], &vec![3f32, 2.0, 1.0]],
        )
        .await
        .expect("binary parameters");
    assert_eq!(n, 1);
    let err = client
        .execute(
            "INSERT INTO emb VALUES ($1, 'e', $2, $3)",
            &[&ts, &vec![2.5f32], &vec![3f32, 2.0]],
        )
        .await
        .expect_err("two dimensions into vector(3)");
    assert!(sqlstate(&err).starts_with("22"), "{err}");

    let got = rows(&client, "SELECT model, e, v FROM emb ORDER BY ts, model").await;
    let text = |v: &str| Some(v.to_string());
    assert_eq!(
        got,
        vec![
            vec![text("a"), text("{0.1,0.2}"), text("{1,2,3}")],
            vec![text("a"), None, text("{4,5,6}")],
            vec![text("b"), text("{7,NULL}"), text("{7,8,9}")],
            vec![text("d"), text("{0.5,-1.5}"), text("{1,0,0.25}")],
            vec![text("e"), text("{2.5}"), text("{3,2,1}")],
        ]
    );
    // Binary results: real[] read back as Vec<f32>.
    let row = client
        .query_one("SELECT e, v FROM emb WHERE model = 'd'", &[])
        .await
        .expect("binary results");
    assert_eq!(row.get::<_, Vec<f32>>(0), vec![0.5, -1.5]);
    assert_eq!(row.get::<_, Vec<f32>>(1), vec![1.0, 0.0, 0.25]);
    server.stop().await;
}

fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no code: {err:?}"))
}
