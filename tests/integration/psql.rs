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

/// psql's describe commands run its own catalog queries, which differ by psql
/// version: these are psql 15's (Debian's postgresql-client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describe_commands() {
    let server = TestServer::start().await;
    let _alerts = crate::harness::alert_statements(&server.lookout).await;
    let addr = server.addr;
    server
        .client()
        .await
        .batch_execute(
            "CREATE TABLE notes (ts TIMESTAMPTZ NOT NULL, model TEXT, value DOUBLE PRECISION, \
             n BIGINT, ok BOOLEAN, meta JSONB, raw JSON)",
        )
        .await
        .expect("create");
    let run = |args: Vec<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let mut full = vec!["-P", "pager=off"];
            full.extend(args);
            psql(addr, &full)
        })
    };
    let (ok, out, err) = run(vec!["-c", "\\dt"]).await.expect("psql");
    assert!(ok, "\\dt: {err}");
    assert!(out.contains("public|notes|table|"), "{out}");
    assert!(out.contains("lookout|alert_rules|table|"), "{out}");

    let (ok, out, err) = run(vec!["-c", "\\d notes"]).await.expect("psql");
    assert!(ok, "\\d notes: {err}");
    let columns: Vec<&str> = out.lines().collect();
    assert_eq!(
        columns,
        [
            "ts|timestamp with time zone||not null|",
            "model|text|||",
            "value|double precision|||",
            "n|bigint|||",
            "ok|boolean|||",
            "meta|jsonb|||",
            "raw|json|||",
        ],
        "{out}"
    );

    let (ok, out, err) = run(vec!["-c", "\\d+ notes"]).await.expect("psql");
    assert!(ok, "\\d+ notes: {err}");
    assert!(out.contains("value|double precision||||plain|||"), "{out}");

    // Comments are kept and shown where psql shows them.
    let (ok, out, err) = run(vec![
        "-c",
        "COMMENT ON TABLE notes IS 'free-text notes on calls'",
        "-c",
        "COMMENT ON COLUMN notes.value IS 'judge score, 0 to 1'",
        "-c",
        "\\d+ notes",
        "-c",
        "\\dt+ notes",
    ])
    .await
    .expect("psql");
    assert!(ok, "COMMENT ON: {err}");
    assert!(
        out.contains("value|double precision||||plain|||judge score, 0 to 1"),
        "{out}"
    );
    assert!(out.contains("|free-text notes on calls"), "{out}");

    let (ok, out, err) = run(vec!["-c", "\\dv lookout.*"]).await.expect("psql");
    assert!(ok, "\\dv: {err}");
    assert!(out.contains("lookout|alerts|view|"), "{out}");

    // The monitoring functions are found as PostgreSQL's are: `\df` lists
    // them with their arguments, `\df+` with a description.
    let (ok, out, err) = run(vec!["-c", "\\df drift_k*"]).await.expect("psql");
    assert!(ok, "\\df: {err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "lookout|drift_kl|double precision|value numeric|text, is_current boolean [, bins integer]|agg",
            "lookout|drift_ks|double precision|value numeric, is_current boolean|agg",
            "lookout|drift_ks_pvalue|double precision|value numeric, is_current boolean|agg",
        ],
        "{out}"
    );
    let (ok, out, err) = run(vec!["-c", "\\df+ latency_quantile"])
        .await
        .expect("psql");
    assert!(ok, "\\df+: {err}");
    assert!(
        out.contains("|q-quantile of the values, read from their quantile sketch"),
        "{out}"
    );
    let (ok, out, err) = run(vec!["-c", "\\df"]).await.expect("psql");
    assert!(ok, "\\df: {err}");
    assert!(
        out.contains("lookout|sample_hash|double precision|key text|func"),
        "{out}"
    );
    assert!(!out.contains("pg_catalog|"), "{out}");
    let (ok, out, err) = run(vec!["-c", "SHOW FUNCTIONS LIKE 'score_state_m%'"])
        .await
        .expect("psql");
    assert!(ok, "SHOW FUNCTIONS: {err}");
    assert_eq!(
        out.trim(),
        "score_state_mean|function|state bytea|double precision|Mean of the scores in a score state"
    );

    for command in [
        "\\l",
        "\\dn",
        "\\dt+",
        "\\du",
        "\\d lookout.alerts",
        "\\df+",
    ] {
        let (ok, _, err) = run(vec!["-c", command]).await.expect("psql");
        assert!(ok, "{command}: {err}");
    }
    let (_, out, _) = run(vec!["-c", "\\dn"]).await.expect("psql");
    assert!(out.contains("lookout|") && out.contains("public|"), "{out}");
}
