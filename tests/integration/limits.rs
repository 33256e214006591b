//! One statement or message cannot take the server down: statements too
//! deep to plan, queries over the memory budget and malformed protocol
//! messages fail alone, with PostgreSQL's SQLSTATEs, and the server goes on.

use lookout_query::LookoutOptions;

use crate::harness::{TestServer, error_code, free_port, rows, spawn_server, wait_ready};

fn sum_of_ones(terms: usize) -> String {
    format!("SELECT 1{}", "+1".repeat(terms - 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_too_deep_to_plan_fail_with_54001() {
    // The real binary: its threads have the stacks the limit is sized for.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = spawn_server(dir.path(), port);
    let client = wait_ready(port).await;
    // Deep expressions under the limit are planned and run (a 2,000-term
    // sum once overflowed a worker's stack and aborted the process). 5,000
    // terms, not 9,999: folding the constants of a deep sum takes time
    // quadratic in its depth, 90 s at 9,990 terms in a debug build.
    assert_eq!(
        rows(&client, &sum_of_ones(5_000)).await,
        vec![vec![Some("5000".to_string())]]
    );
    let ors: Vec<String> = (2..4_002).map(|i| format!("x = {i}")).collect();
    let sql = format!(
        "SELECT count(*) FROM (VALUES (1)) v(x) WHERE {}",
        ors.join(" OR ")
    );
    assert_eq!(rows(&client, &sql).await, vec![vec![Some("0".to_string())]]);
    // Over it, or nested too deeply: refused before planning.
    assert_eq!(error_code(&client, &sum_of_ones(10_002)).await, "54001");
    let nested = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
    assert_eq!(error_code(&client, &nested).await, "54001");
    // Long statements without deep expressions are fine.
    let values: Vec<String> = (0..20_000).map(|i| format!("({i})")).collect();
    let sql = format!("SELECT count(*) FROM (VALUES {}) v(x)", values.join(", "));
    assert_eq!(
        rows(&client, &sql).await,
        vec![vec![Some("20000".to_string())]]
    );
    assert_eq!(
        rows(&client, "SELECT 7").await,
        vec![vec![Some("7".to_string())]]
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_budget_fails_alone_with_53200() {
    let options = LookoutOptions {
        query_memory: 64 << 20,
        ..LookoutOptions::default()
    };
    let server = TestServer::start_with(tempfile::tempdir().expect("tempdir"), options).await;
    let client = server.client().await;
    let other = server.client().await;
    // Holds about 160 MB in one accumulator, which cannot spill.
    assert_eq!(
        error_code(
            &client,
            "SELECT array_length(array_agg(value), 1) FROM generate_series(1, 20000000)"
        )
        .await,
        "53200"
    );
    // A grouping over the budget spills to disk and finishes.
    assert_eq!(
        rows(
            &client,
            "SELECT count(*) FROM (SELECT value % 2000000 AS k, count(*) \
             FROM generate_series(1, 4000000) GROUP BY 1) g"
        )
        .await,
        vec![vec![Some("2000000".to_string())]]
    );
    assert_eq!(
        rows(&other, "SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
    assert_eq!(
        rows(&client, "SELECT 2").await,
        vec![vec![Some("2".to_string())]]
    );
}

/// Sends a startup message and reads until the first ReadyForQuery.
async fn started(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let params = b"user\0lookout\0database\0lookout\0\0";
    let mut startup = ((8 + params.len()) as i32).to_be_bytes().to_vec();
    startup.extend(196_608i32.to_be_bytes());
    startup.extend(params);
    socket.write_all(&startup).await.expect("startup");
    let mut seen: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == b"Z\0\0\0\x05I".as_slice()) {
        let n = socket.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed during startup");
        seen.extend(&buf[..n]);
    }
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protocol_messages_get_an_error_not_a_dropped_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut parse_without_nul = vec![b'P'];
    parse_without_nul.extend(9i32.to_be_bytes());
    parse_without_nul.extend(b"abcde");
    let mut bind_too_many_params = vec![b'B'];
    bind_too_many_params.extend(10i32.to_be_bytes());
    bind_too_many_params.extend(b"\0\0");
    bind_too_many_params.extend(0i16.to_be_bytes());
    bind_too_many_params.extend((-1i16).to_be_bytes());
    for message in [parse_without_nul, bind_too_many_params] {
        let mut socket = started(server.addr).await;
        socket.write_all(&message).await.expect("send");
        socket.write_all(b"S\0\0\0\x04").await.expect("sync");
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            socket.read_to_end(&mut answer),
        )
        .await
        .expect("answered and closed")
        .expect("read");
        assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
        assert!(
            answer.windows(6).any(|w| w == b"C08P01"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    let client = server.client().await;
    assert_eq!(
        rows(&client, "SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
}

/// How long after `due` a statement that must be interrupted then ends.
async fn lateness(
    client: &tokio_postgres::Client,
    sql: &str,
    due: std::time::Duration,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    assert_eq!(error_code(client, sql).await, "57014");
    started.elapsed().saturating_sub(due)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_cancels_land_on_time_while_every_core_is_busy() {
    use std::time::Duration;
    let server = TestServer::start().await;
    let data = tempfile::tempdir().expect("tempdir");
    let files = crate::harness::generate_events(data.path(), 1_500_000, 1);
    server
        .lookout
        .import_parquet("events", &files, None)
        .await
        .expect("import");
    // Decoding a large row group and keeping 100,000 rows in order: long
    // stretches of work between two awaits.
    let sort = "SELECT * FROM events ORDER BY latency_ms DESC, request_id LIMIT 10 OFFSET 100000";
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let client = server.client().await;
        let busy = std::sync::Arc::clone(&busy);
        load.spawn(async move {
            while busy.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client.simple_query(sort).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = server.client().await;
    let mut late = Vec::new();
    for due in [300u64, 700, 1100] {
        rows(&client, &format!("SET statement_timeout = {due}")).await;
        late.push(lateness(&client, sort, Duration::from_millis(due)).await);
    }
    rows(&client, "SET statement_timeout = 0").await;
    for after in [300u64, 700, 1100] {
        let token = client.cancel_token();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            let _ = token.cancel_query(tokio_postgres::NoTls).await;
        });
        late.push(lateness(&client, sort, Duration::from_millis(after)).await);
    }
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    // Both once landed seconds late: the queries' work ran on the threads
    // that fire timers and read CancelRequests.
    late.sort();
    assert!(
        late[late.len() / 2] < Duration::from_millis(100),
        "{late:?}"
    );
    assert!(
        late[late.len() - 1] < Duration::from_millis(500),
        "{late:?}"
    );
    server.stop().await;
}

/// A setting below what the server can work with stops it at start, with
/// a message naming the setting, rather than running badly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_memory_below_the_floor_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("lookout.toml");
    std::fs::write(&config, "[storage]\nload_memory = \"1 MiB\"\n").expect("config");
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("LOOKOUT_CONFIG", &config)
        .env("LOOKOUT_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lookout");
    let mut status = None;
    for _ in 0..200 {
        status = server.try_wait().expect("wait");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let Some(status) = status else {
        let _ = server.kill();
        panic!("the server started with load_memory = 1 MiB");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(!status.success());
    assert!(stderr.contains("storage.load_memory"), "{stderr}");
}
