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
