//! Large results stream through every driver's streaming interface: each
//! reads a table whose text is about 150 MB and checks every row, while the
//! test watches the server process's resident memory. A server that
//! buffered a result whole would grow by more than the table.

use std::time::Duration;

use crate::harness::{free_port, spawn_server, spawn_server_with, wait_ready};

/// Rows of the table; each label is 256 bytes.
const ROWS: u64 = 500_000;

/// How far the server's RSS may grow while one client reads the table:
/// well under the result's size, so buffering it would show.
const GROWTH_LIMIT_MIB: u64 = 96;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `cmd` to success and returns the server's peak RSS growth (KiB)
/// over its run, sampled every 10 ms.
async fn growth_while(pid: u32, mut cmd: std::process::Command, what: &str) -> u64 {
    let before = rss_kib(pid);
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut output = tokio::task::spawn_blocking(move || child.wait_with_output());
    let mut peak = before;
    let out = loop {
        tokio::select! {
            out = &mut output => break out.expect("join").expect("wait"),
            () = tokio::time::sleep(Duration::from_millis(10)) => peak = peak.max(rss_kib(pid)),
        }
    };
    assert!(
        out.status.success(),
        "{what}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    peak.saturating_sub(before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_driver_streams_a_large_table_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = spawn_server(dir.path(), port);
    let client = wait_ready(port).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE big (ts TIMESTAMPTZ NOT NULL, n BIGINT NOT NULL, label TEXT NOT NULL);
             INSERT INTO big SELECT to_timestamp(1735689600 + v), v, repeat(md5(v::text), 8)
               FROM generate_series(1, {ROWS}) AS g(v);"
        ))
        .await
        .expect("load");
    // A clean stop flushes the rows to Parquet, where a month of history
    // lives; the readers then stream from files, not from the write buffer.
    drop(client);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(server.wait().expect("wait").success(), "clean shutdown");
    // The column cache keeps decoded columns by design, up to its budget;
    // a small one keeps the measure about what streaming holds (files
    // larger than an eighth of the budget are streamed, not kept).
    let config_dir = tempfile::tempdir().expect("tempdir");
    let config = config_dir.path().join("lookout.toml");
    std::fs::write(&config, "[cache]\nmemory = \"32 MiB\"\n").expect("config");
    let config = config.to_string_lossy().into_owned();
    let mut server = spawn_server_with(dir.path(), port, &[("LOOKOUT_CONFIG", &config)]);
    let pid = server.id();
    let client = wait_ready(port).await;
    let port_arg = port.to_string();
    let python = |interface: &str| {
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["streaming.py", &port_arg, interface]);
        cmd
    };
    let mut node = std::process::Command::new("node");
    node.args(["streaming.js", &port_arg]);
    let mut java = std::process::Command::new("java");
    java.args([
        "-Xmx128m",
        "-cp",
        "/usr/share/java/postgresql.jar",
        "Streaming.java",
        &port_arg,
    ]);
    let readers = [
        ("psycopg named cursor, text", python("psycopg-text")),
        ("psycopg named cursor, binary", python("psycopg-binary")),
        ("psycopg COPY TO STDOUT", python("psycopg-copy")),
        (
            "SQLAlchemy stream_results + pandas chunks",
            python("pandas-chunks"),
        ),
        ("asyncpg cursor", python("asyncpg-cursor")),
        ("node-postgres pg-cursor", node),
        ("pgjdbc setFetchSize", java),
    ];
    let mut report = Vec::new();
    for (what, cmd) in readers {
        let grown = growth_while(pid, cmd, what).await;
        report.push(format!("{what}: +{} MiB", grown / 1024));
        assert!(
            grown / 1024 <= GROWTH_LIMIT_MIB,
            "{what}: the server grew by {} MiB while streaming {ROWS} rows",
            grown / 1024
        );
    }
    eprintln!(
        "server RSS growth while streaming {ROWS} rows: {}",
        report.join("; ")
    );
    drop(client);
    let _ = server.kill();
    let _ = server.wait();
}
