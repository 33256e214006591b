//! The monitoring functions through the server on a large data set
//! (regenerated from a seed), against scipy/numpy/statsmodels computed in
//! the same run: the asymptotic KS path, big sketches and many groups.

use std::path::Path;

use crate::harness::{TestServer, rows};

const ROWS_PER_DATASET: usize = 500_000;

fn number(v: &Option<String>) -> Option<f64> {
    v.as_deref().map(|s| s.parse().expect("number"))
}

fn assert_close(what: &str, got: Option<f64>, want: &serde_json::Value, tolerance: f64) {
    let want = want
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no reference"));
    let got = got.unwrap_or_else(|| panic!("{what}: NULL"));
    assert!(
        (got - want).abs() <= tolerance * want.abs().max(1.0),
        "{what}: got {got}, reference {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_functions_match_scipy_on_a_million_rows() {
    let data = tempfile::tempdir().expect("tempdir");
    let parquet = data.path().join("drift.parquet");
    let expected_path = data.path().join("expected.json");
    let status = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/monitor_references.py"))
        .args(["large", "42", &ROWS_PER_DATASET.to_string()])
        .arg(&parquet)
        .arg(&expected_path)
        .status()
        .expect("python3 (pip install -r tests/requirements.txt)");
    assert!(status.success(), "monitor_references.py failed");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&expected_path).expect("expected")).expect("json");

    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE drift (ts TIMESTAMPTZ NOT NULL, dataset TEXT, value DOUBLE PRECISION, \
             category TEXT, score DOUBLE PRECISION, is_current BOOLEAN)",
        )
        .await
        .expect("create");
    client
        .batch_execute(&format!(
            "COPY drift FROM '{}' WITH (FORMAT parquet)",
            parquet.display()
        ))
        .await
        .expect("copy");

    let got = rows(
        &client,
        "SELECT dataset, drift_psi(value, is_current), drift_kl(value, is_current), drift_js(value, is_current), \
         drift_ks(value, is_current), drift_ks_pvalue(value, is_current), drift_wasserstein(value, is_current), \
         latency_quantile(value, 0.5), latency_quantile(value, 0.99), latency_quantile(value, 0.999) \
         FROM drift GROUP BY dataset ORDER BY dataset",
    )
    .await;
    assert_eq!(got.len(), 2);
    for row in &got {
        let name = row[0].as_deref().expect("dataset");
        let want = &expected[name];
        for (i, key) in ["psi", "kl", "js", "ks", "ks_pvalue", "wasserstein"]
            .iter()
            .enumerate()
        {
            assert_close(
                &format!("{key} on {name}"),
                number(&row[i + 1]),
                &want[key],
                1e-9,
            );
        }
        for (i, q) in ["0.5", "0.99", "0.999"].iter().enumerate() {
            assert_close(
                &format!("p{q} on {name}"),
                number(&row[i + 7]),
                &want["quantiles"][q],
                0.01,
            );
        }
    }

    let got = rows(
        &client,
        "SELECT drift_psi(category, is_current), drift_kl(category, is_current), drift_js(category, is_current), \
         drift_chi2_pvalue(category, is_current), drift_new_category_share(category, is_current), \
         score_pass_rate(score, 0.7), score_pass_rate_low(score, 0.7), score_pass_rate_high(score, 0.7), \
         score_coverage(score), score_state_mean(score_state(score, 0.7)), score_state_stddev(score_state(score, 0.7)) \
         FROM drift WHERE dataset = 'normal'",
    )
    .await;
    let row = &got[0];
    for (i, key) in ["psi", "kl", "js", "chi2_pvalue", "new_category_share"]
        .iter()
        .enumerate()
    {
        assert_close(
            &format!("categorical {key}"),
            number(&row[i]),
            &expected["categories"][key],
            1e-9,
        );
    }
    for (i, key) in [
        "pass_rate",
        "pass_rate_low",
        "pass_rate_high",
        "coverage",
        "mean",
        "stddev",
    ]
    .iter()
    .enumerate()
    {
        assert_close(
            &format!("score {key}"),
            number(&row[i + 5]),
            &expected["scores"][key],
            1e-9,
        );
    }

    // Hourly-style rollup: sketches per slice, merged over the window.
    let got = rows(
        &client,
        "SELECT sketch_quantile(sketch_merge(s), 0.99), sketch_count(sketch_merge(s)) FROM \
         (SELECT quantile_sketch(value) AS s FROM drift WHERE dataset = 'lognormal' GROUP BY category, is_current) r",
    )
    .await;
    assert_close(
        "merged p99",
        number(&got[0][0]),
        &expected["lognormal"]["quantiles"]["0.99"],
        0.01,
    );
    assert_eq!(number(&got[0][1]), Some(ROWS_PER_DATASET as f64));

    // Wrong arguments are a function that does not exist, as PostgreSQL
    // says, with the signature to use as the hint.
    let error = client
        .simple_query("SELECT drift_ks(category, is_current) FROM drift")
        .await
        .expect_err("text into drift_ks");
    let db = error.as_db_error().expect("server error");
    assert_eq!(
        db.message(),
        "function drift_ks(text, boolean) does not exist"
    );
    assert_eq!(
        db.hint(),
        Some("Argument 1 cannot be text; call it as drift_ks(value numeric, is_current boolean).")
    );
    assert_eq!(db.code().code(), "42883");
    // A built-in function's hint lists its signatures, in the first line
    // nothing of the engine's wording.
    let error = client
        .simple_query("SELECT upper(1)")
        .await
        .expect_err("upper of a number");
    let db = error.as_db_error().expect("server error");
    assert_eq!(
        (db.code().code(), db.message()),
        ("42883", "function upper(bigint) does not exist")
    );
    assert!(
        db.hint().is_some_and(|h| h.contains("upper(String)")),
        "{:?}",
        db.hint()
    );
}

/// The embedding fixtures (numpy and scipy references) loaded through COPY
/// text into a `double precision[]` column, and the embedding drift
/// functions read over the Postgres protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_drift_matches_numpy_over_the_protocol() {
    use futures::SinkExt;

    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/lookout-monitor/fixtures/embeddings.json");
    let fixture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
    let datasets = fixture.as_object().expect("datasets");
    let mut copy = String::new();
    for (name, data) in datasets {
        for (key, current) in [("base", "f"), ("cur", "t")] {
            for (i, row) in data[key].as_array().expect("rows").iter().enumerate() {
                let values: Vec<String> = row
                    .as_array()
                    .expect("embedding")
                    .iter()
                    .map(|v| format!("{:?}", v.as_f64().expect("number")))
                    .collect();
                copy.push_str(&format!(
                    "2025-01-01 00:00:{:02}+00\t{name}\t{{{}}}\t{current}\n",
                    i % 60,
                    values.join(",")
                ));
            }
        }
    }
    let server = crate::harness::TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE emb (ts TIMESTAMPTZ NOT NULL, dataset TEXT, e DOUBLE PRECISION[], is_current BOOLEAN)",
        )
        .await
        .expect("create");
    let sink = client.copy_in("COPY emb FROM STDIN").await.expect("copy");
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(copy)).await.expect("send");
    sink.finish().await.expect("finish");
    let got = rows(
        &client,
        "SELECT dataset, drift_embedding_cosine(e, is_current), drift_embedding_mmd(e, is_current), \
         drift_embedding_mmd_pvalue(e, is_current), drift_embedding_mmd(e, is_current, 100), \
         drift_embedding_mmd_pvalue(e, is_current, 50, 100) FROM emb GROUP BY dataset ORDER BY dataset",
    )
    .await;
    assert_eq!(got.len(), datasets.len());
    for row in &got {
        let name = row[0].as_deref().expect("dataset");
        let want = &datasets[name]["expected"];
        for (i, key) in [
            "cosine",
            "mmd",
            "mmd_pvalue",
            "mmd_sample_100",
            "mmd_pvalue_50_sample_100",
        ]
        .iter()
        .enumerate()
        {
            match number(&row[i + 1]) {
                None => assert!(want[*key].is_null(), "{key} on {name}: NULL"),
                got => assert_close(&format!("{key} on {name}"), got, &want[*key], 1e-9),
            }
        }
    }
    server.stop().await;
}
