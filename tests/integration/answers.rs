//! The monitoring queries through the server, checked against DuckDB's
//! answers on the same Parquet files, computed in the same run.

use std::path::Path;

use crate::harness::{TestServer, generate_events, rows};

fn close(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_queries_match_duckdb() {
    let data = tempfile::tempdir().expect("tempdir");
    let files = generate_events(data.path(), 200_000, 3);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/queries");
    let mut names: Vec<String> = std::fs::read_dir(root.join("postgres"))
        .expect("queries")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .collect();
    names.sort();
    let output = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/duckdb_answers.py"))
        .arg(data.path().join("*.parquet"))
        .args(names.iter().map(|n| root.join("duckdb").join(n)))
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");

    let server = TestServer::start().await;
    let client = server.client().await;
    for f in &files {
        client
            .simple_query(&format!(
                "COPY events FROM '{}' WITH (FORMAT parquet)",
                f.display()
            ))
            .await
            .expect("copy parquet");
    }
    for name in &names {
        let sql = std::fs::read_to_string(root.join("postgres").join(name)).expect("query");
        let got = rows(&client, &sql).await;
        let want = expected[name].as_array().expect("rows");
        assert_eq!(got.len(), want.len(), "{name}: row count");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let w: Vec<Option<String>> = w
                .as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect();
            assert_eq!(g.len(), w.len(), "{name} row {i}: columns");
            for (c, (gv, wv)) in g.iter().zip(&w).enumerate() {
                let same = match (gv, wv) {
                    (Some(a), Some(b)) => close(a, b),
                    (None, None) => true,
                    _ => false,
                };
                assert!(same, "{name} row {i} column {c}: got {gv:?}, DuckDB {wv:?}");
            }
        }
    }
    // Files of other models and days are never opened, and EXPLAIN says so.
    let plan: String = rows(
        &client,
        "EXPLAIN SELECT count(*) FROM events WHERE model = 'vega-8b' AND ts >= TIMESTAMPTZ '2025-01-07 00:00:00+00'",
    )
    .await
    .into_iter()
    .flatten()
    .flatten()
    .collect();
    let scan = plan
        .split('\n')
        .find(|l| l.contains("LookoutScan: table=events"))
        .unwrap_or_else(|| panic!("no LookoutScan in {plan}"));
    assert!(scan.contains("files=1 of "), "{scan}");
    server.stop().await;
}
