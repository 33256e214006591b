//! psql itself: the statements of the quickstart, `\copy` both ways, cursors.

use std::process::Command;

use crate::harness::TestServer;

fn psql(addr: std::net::SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-U",
            "lookout",
            "-d",
            "lookout",
        ])
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-At"])
        .args(args)
        .output()
        .expect("psql (apt-get install postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_quickstart_and_copy() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("events.csv");
    std::fs::write(
        &csv,
        "ts,model,latency_ms\n2025-01-01 00:00:00+00,a,100\n2025-01-01 00:30:00+00,b,300\n",
    )
    .expect("csv");
    let out_csv = dir.path().join("out.csv");
    let out_parquet = dir.path().join("out.parquet");
    let script = format!(
        "CREATE TABLE events (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, latency_ms DOUBLE PRECISION);\n\
         INSERT INTO events VALUES ('2025-01-01 01:00:00+00', 'a', 200);\n\
         \\copy events FROM '{csv}' WITH (FORMAT csv, HEADER true)\n\
         COPY (SELECT * FROM events WHERE model = 'a') TO '{parquet}' WITH (FORMAT parquet);\n\
         COPY events FROM '{parquet}' WITH (FORMAT parquet);\n\
         \\copy (SELECT model, count(*) AS n FROM events GROUP BY model ORDER BY model) TO '{out}' WITH (FORMAT csv, HEADER true)\n\
         SET lookout.now = '2025-01-01 02:00:00+00';\n\
         SELECT model, date_bin(INTERVAL '1 hour', ts) AS hour, avg(latency_ms) FROM events \
         WHERE ts >= now() - INTERVAL '1 day' GROUP BY 1, 2 ORDER BY 1, 2;\n\
         SELECT 'drift', round(drift_psi(latency_ms, model = 'b'), 6), round(latency_quantile(latency_ms, 0.5)) FROM events;\n",
        csv = csv.display(),
        parquet = out_parquet.display(),
        out = out_csv.display()
    );
    let script_path = dir.path().join("script.sql");
    std::fs::write(&script_path, script).expect("script");
    let path = script_path.to_string_lossy().to_string();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || psql(addr, &["-f", &path]))
        .await
        .expect("psql");
    assert!(ok, "psql failed: {stderr}");
    assert!(stdout.contains("a|2025-01-01 00:00:00+00|100"), "{stdout}");
    assert!(stdout.contains("a|2025-01-01 01:00:00+00|200"), "{stdout}");
    assert!(stdout.contains("b|2025-01-01 00:00:00+00|300"), "{stdout}");
    // Monitoring functions from psql: baseline a = {100, 200, 100, 200}, current b = {300}.
    assert!(stdout.contains("drift|4.604318|"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&out_csv).expect("out.csv"),
        "model,n\na,4\nb,1\n"
    );
    // Errors keep the session usable and carry the right code.
    let (ok, _, stderr) =
        tokio::task::spawn_blocking(move || psql(addr, &["-c", "SELECT * FROM missing"]))
            .await
            .expect("psql");
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
    // FETCH_COUNT makes psql read a SELECT through a cursor, two rows at a time.
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        psql(
            addr,
            &[
                "-v",
                "FETCH_COUNT=2",
                "-c",
                "SELECT model, latency_ms FROM events ORDER BY ts, model, latency_ms",
            ],
        )
    })
    .await
    .expect("psql");
    assert!(ok, "psql with FETCH_COUNT failed: {stderr}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    server.stop().await;
}
