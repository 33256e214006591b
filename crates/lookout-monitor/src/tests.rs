//! The SQL functions against the checked-in scipy/numpy references
//! (`fixtures/references.json`, written by `tests/data/monitor_references.py`),
//! under several partitionings and batch sizes, whose results must agree.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde_json::Value;

const REFERENCES: &str = include_str!("../fixtures/references.json");

fn references() -> Value {
    serde_json::from_str(REFERENCES).expect("fixture is JSON")
}

/// (target partitions, batch size, table partitions).
const LAYOUTS: [(usize, usize, usize); 3] = [(1, 8192, 1), (4, 7, 4), (3, 100, 5)];

async fn query(
    batch: &RecordBatch,
    sql: &str,
    layout: (usize, usize, usize),
) -> Vec<Vec<Option<f64>>> {
    let (targets, batch_size, parts) = layout;
    let config = SessionConfig::new()
        .with_target_partitions(targets)
        .with_batch_size(batch_size);
    let ctx = SessionContext::new_with_config(config);
    crate::register(&ctx);
    // Rows dealt round-robin to partitions, in chunks of the batch size.
    let partitions: Vec<Vec<RecordBatch>> = (0..parts)
        .map(|p| {
            let rows: Vec<u32> = (p..batch.num_rows())
                .step_by(parts)
                .map(|r| r as u32)
                .collect();
            let taken =
                arrow::compute::take_record_batch(batch, &UInt32Array::from(rows)).expect("take");
            (0..taken.num_rows())
                .step_by(batch_size.max(1))
                .map(|start| taken.slice(start, batch_size.min(taken.num_rows() - start)))
                .collect()
        })
        .collect();
    let table = MemTable::try_new(batch.schema(), partitions).expect("table");
    ctx.register_table("t", Arc::new(table)).expect("register");
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        let c =
                            arrow::compute::cast(c, &DataType::Float64).expect("numeric result");
                        let f = c.as_any().downcast_ref::<Float64Array>().expect("f64");
                        f.is_valid(r).then(|| f.value(r))
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// Runs `sql` under every layout, checks they agree exactly, returns one.
async fn query_everywhere(batch: &RecordBatch, sql: &str) -> Vec<Vec<Option<f64>>> {
    query_everywhere_within(batch, sql, 0.0).await
}

/// Like [`query_everywhere`], for results built on floating sums (means),
/// whose last bits follow the order rows arrive in: layouts agree within
/// `relative` of each value.
async fn query_everywhere_within(
    batch: &RecordBatch,
    sql: &str,
    relative: f64,
) -> Vec<Vec<Option<f64>>> {
    let first = query(batch, sql, LAYOUTS[0]).await;
    for layout in &LAYOUTS[1..] {
        let other = query(batch, sql, *layout).await;
        let agree = first.len() == other.len()
            && first.iter().zip(&other).all(|(a, b)| {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(x, y)| match (x, y) {
                        (Some(x), Some(y)) => x == y || (x - y).abs() <= relative * x.abs(),
                        _ => x == y,
                    })
            });
        assert!(
            agree,
            "{sql}: results differ between layouts {:?} and {layout:?}:\n{first:?}\n{other:?}",
            LAYOUTS[0]
        );
    }
    first
}

fn assert_matches(what: &str, actual: Option<f64>, expected: &Value) {
    match (actual, expected.as_f64()) {
        (None, None) => {}
        (Some(a), Some(e)) => assert!(
            (a - e).abs() <= 1e-9 * e.abs().max(1.0),
            "{what}: got {a}, reference {e}"
        ),
        (a, _) => panic!("{what}: got {a:?}, reference {expected}"),
    }
}

fn drift_table(
    datasets: &serde_json::Map<String, Value>,
    text: bool,
) -> (RecordBatch, Vec<String>) {
    let (mut names, mut values, mut current, mut texts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (name, data) in datasets {
        for (side, key) in [(false, "base"), (true, "cur")] {
            for v in data[key].as_array().expect("values") {
                names.push(name.clone());
                current.push(side);
                if text {
                    texts.push(v.as_str().expect("text").to_string());
                } else {
                    values.push(v.as_f64().expect("number"));
                }
            }
        }
    }
    let value: ArrayRef = if text {
        Arc::new(StringArray::from(texts))
    } else {
        Arc::new(Float64Array::from(values))
    };
    let schema = Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("value", value.data_type().clone(), false),
        Field::new("is_current", DataType::Boolean, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(names)),
            value,
            Arc::new(BooleanArray::from(current)),
        ],
    )
    .expect("batch");
    (batch, datasets.keys().cloned().collect())
}

/// One query per data set: grouped results carry no row for a data set with
/// an empty window only if it has no rows at all, which the fixtures avoid.
async fn check_drift(kind: &str, functions: &[(&str, &str)]) {
    let refs = references();
    let datasets = refs[kind].as_object().expect("datasets");
    let (batch, names) = drift_table(datasets, kind == "categorical");
    let columns: Vec<String> = functions
        .iter()
        .map(|(f, _)| format!("{f}(value, is_current)"))
        .collect();
    let sql = format!(
        "SELECT dataset, {} FROM t GROUP BY dataset ORDER BY dataset",
        columns.join(", ")
    );
    // The first column (dataset) is text and reads as NULL here.
    let rows = query_everywhere(&batch, &sql).await;
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(rows.len(), sorted.len());
    for (row, name) in rows.iter().zip(&sorted) {
        for (i, (function, key)) in functions.iter().enumerate() {
            assert_matches(
                &format!("{function} on {kind} {name}"),
                row[i + 1],
                &datasets[name]["expected"][key],
            );
        }
    }
    // Without GROUP BY (the plain accumulator), on the first data set.
    let first = &sorted[0];
    let sql = format!(
        "SELECT {} FROM t WHERE dataset = '{first}'",
        columns.join(", ")
    );
    let rows = query_everywhere(&batch, &sql).await;
    for (i, (function, key)) in functions.iter().enumerate() {
        assert_matches(
            &format!("{function} on {kind} {first}"),
            rows[0][i],
            &datasets[first]["expected"][key],
        );
    }
}

#[tokio::test]
async fn numeric_drift_matches_scipy() {
    check_drift(
        "numeric",
        &[
            ("drift_psi", "psi"),
            ("drift_kl", "kl"),
            ("drift_js", "js"),
            ("drift_ks", "ks"),
            ("drift_ks_pvalue", "ks_pvalue"),
            ("drift_wasserstein", "wasserstein"),
        ],
    )
    .await;
}

#[tokio::test]
async fn categorical_drift_matches_scipy() {
    check_drift(
        "categorical",
        &[
            ("drift_psi", "psi"),
            ("drift_kl", "kl"),
            ("drift_js", "js"),
            ("drift_chi2_pvalue", "chi2_pvalue"),
            ("drift_new_category_share", "new_category_share"),
        ],
    )
    .await;
}

fn single_column(name: &str, values: Vec<Option<f64>>) -> RecordBatch {
    let n = values.len() as u32;
    let schema = Schema::new(vec![
        Field::new(name, DataType::Float64, true),
        Field::new("i", DataType::UInt32, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Float64Array::from(values)),
            Arc::new(UInt32Array::from_iter_values(0..n)),
        ],
    )
    .expect("batch")
}

#[tokio::test]
async fn score_rollups_match_numpy_and_statsmodels() {
    let refs = references();
    let scores: Vec<Option<f64>> = refs["scores"]["values"]
        .as_array()
        .expect("scores")
        .iter()
        .map(Value::as_f64)
        .collect();
    let expected = &refs["scores"]["expected"];
    let batch = single_column("score", scores);
    let direct = "SELECT score_pass_rate(score, 0.7), score_pass_rate_low(score, 0.7), \
                  score_pass_rate_high(score, 0.7), score_coverage(score) FROM t";
    let row = &query_everywhere(&batch, direct).await[0];
    for (i, key) in ["pass_rate", "pass_rate_low", "pass_rate_high", "coverage"]
        .iter()
        .enumerate()
    {
        assert_matches(key, row[i], &expected[key]);
    }
    // Per-bucket states merged back give the same numbers.
    let merged = "SELECT score_state_pass_rate(s), score_state_pass_rate_low(s), score_state_pass_rate_high(s), \
                  score_state_coverage(s), score_state_mean(s), score_state_stddev(s) \
                  FROM (SELECT score_merge(s) AS s FROM (SELECT score_state(score, 0.7) AS s FROM t GROUP BY i % 17))";
    let row = &query(&batch, merged, LAYOUTS[1]).await[0];
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
        assert_matches(key, row[i], &expected[key]);
    }
}

#[tokio::test]
async fn latency_quantiles_within_one_percent() {
    let refs = references();
    let values: Vec<Option<f64>> = refs["latency"]["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(Value::as_f64)
        .collect();
    let batch = single_column("v", values);
    for (q, exact) in refs["latency"]["expected"].as_object().expect("quantiles") {
        let exact = exact.as_f64().expect("number");
        let sql = format!(
            "SELECT latency_quantile(v, {q}), sketch_quantile(quantile_sketch(v), {q}), \
             (SELECT sketch_quantile(sketch_merge(s), {q}) FROM (SELECT quantile_sketch(v) AS s FROM t GROUP BY i % 24)) FROM t"
        );
        let row = &query_everywhere(&batch, &sql).await[0];
        for estimate in row {
            let estimate = estimate.expect("not empty");
            assert!(
                (estimate - exact).abs() <= 0.01 * exact.abs(),
                "q={q}: {estimate} is not within 1 % of {exact}"
            );
        }
        assert_eq!(row[0], row[1]);
        assert_eq!(row[1], row[2], "merging sketches changes nothing");
    }
}

/// Weighted sketches (sampled rows standing for 1/rate rows) against
/// `numpy.quantile(x, q, weights=w, method='inverted_cdf')`.
#[tokio::test]
async fn weighted_quantiles_within_one_percent_of_numpy() {
    let refs = references();
    let floats = |key: &str| -> Vec<Option<f64>> {
        refs["weighted_latency"][key]
            .as_array()
            .expect("array")
            .iter()
            .map(Value::as_f64)
            .collect()
    };
    let (values, weights) = (floats("values"), floats("weights"));
    let n = values.len() as u32;
    let schema = Schema::new(vec![
        Field::new("v", DataType::Float64, true),
        Field::new("w", DataType::Float64, true),
        Field::new("i", DataType::UInt32, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Float64Array::from(values)),
            Arc::new(Float64Array::from(weights)),
            Arc::new(UInt32Array::from_iter_values(0..n)),
        ],
    )
    .expect("batch");
    let total = refs["weighted_latency"]["total"].as_f64().expect("total");
    let count = query_everywhere(&batch, "SELECT sketch_count(quantile_sketch(v, w)) FROM t").await;
    assert_matches("weighted count", count[0][0], &Value::from(total));
    for (q, exact) in refs["weighted_latency"]["expected"]
        .as_object()
        .expect("quantiles")
    {
        let exact = exact.as_f64().expect("number");
        let sql = format!(
            "SELECT weighted_quantile(v, w, {q}), sketch_quantile(quantile_sketch(v, w), {q}), \
             (SELECT sketch_quantile(sketch_merge(s), {q}) FROM (SELECT quantile_sketch(v, w) AS s FROM t GROUP BY i % 24)) FROM t"
        );
        let row = &query_everywhere(&batch, &sql).await[0];
        for estimate in row {
            let estimate = estimate.expect("not empty");
            assert!(
                (estimate - exact).abs() <= 0.01 * exact.abs(),
                "q={q}: {estimate} is not within 1 % of the weighted {exact}"
            );
        }
        assert_eq!(row[0], row[1]);
        assert_eq!(row[1], row[2], "merging weighted sketches changes nothing");
    }
    // Weight 1 everywhere is the unweighted sketch; NULL and non-positive weights count nothing.
    let same = query_everywhere(
        &batch,
        "SELECT sketch_quantile(quantile_sketch(v, 1), 0.9) - sketch_quantile(quantile_sketch(v), 0.9), \
         sketch_count(quantile_sketch(v, CASE WHEN i < 10 THEN 2.5 WHEN i < 20 THEN NULL ELSE 0 END)) FROM t",
    )
    .await;
    assert_eq!(same[0], vec![Some(0.0), Some(25.0)]);
}

/// A weighted sample (base then current) as a table `t(v, w, cur, i)`.
fn weighted_table(fixture: &Value, text: bool) -> RecordBatch {
    let list = |key: &str| fixture[key].as_array().expect("array").clone();
    let (base, cur) = (list("base"), list("cur"));
    let weights: Vec<f64> = list("base_weights")
        .iter()
        .chain(list("cur_weights").iter())
        .map(|w| w.as_f64().expect("weight"))
        .collect();
    let values: Vec<&Value> = base.iter().chain(cur.iter()).collect();
    let n = values.len();
    let value: ArrayRef = if text {
        Arc::new(StringArray::from_iter_values(
            values.iter().map(|v| v.as_str().expect("text")),
        ))
    } else {
        Arc::new(Float64Array::from_iter_values(
            values.iter().map(|v| v.as_f64().expect("number")),
        ))
    };
    let schema = Schema::new(vec![
        Field::new("v", value.data_type().clone(), false),
        Field::new("w", DataType::Float64, false),
        Field::new("cur", DataType::Boolean, false),
        Field::new("i", DataType::UInt32, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            value,
            Arc::new(Float64Array::from(weights)),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| Some(i >= base.len())),
            )),
            Arc::new(UInt32Array::from_iter_values(0..n as u32)),
        ],
    )
    .expect("batch")
}

/// Weighted drift of a sampled table against numpy's weighted quantiles
/// and histograms and scipy's weighted Wasserstein distance.
#[tokio::test]
async fn weighted_drift_matches_numpy_and_scipy() {
    let refs = references();
    let numeric = &refs["weighted_drift"]["numeric"];
    let batch = weighted_table(numeric, false);
    let got = query_everywhere(
        &batch,
        "SELECT weighted_drift_psi(v, cur, w), weighted_drift_kl(v, cur, w), weighted_drift_js(v, cur, w), \
         weighted_drift_ks(v, cur, w), weighted_drift_wasserstein(v, cur, w) FROM t",
    )
    .await;
    for (i, key) in ["psi", "kl", "js", "ks", "wasserstein"].iter().enumerate() {
        assert_matches(
            &format!("weighted {key}"),
            got[0][i],
            &numeric["expected"][*key],
        );
    }
    let categorical = &refs["weighted_drift"]["categorical"];
    let batch = weighted_table(categorical, true);
    let got = query_everywhere(
        &batch,
        "SELECT weighted_drift_psi(v, cur, w), weighted_drift_kl(v, cur, w), weighted_drift_js(v, cur, w) FROM t",
    )
    .await;
    for (i, key) in ["psi", "kl", "js"].iter().enumerate() {
        assert_matches(
            &format!("weighted categorical {key}"),
            got[0][i],
            &categorical["expected"][*key],
        );
    }
    // Weight 1 everywhere: KS and Wasserstein are the unweighted ones (the
    // binned measures differ: weighted edges are inverted-CDF quantiles);
    // rows without a positive weight count for nothing.
    let batch = weighted_table(numeric, false);
    let same = query_everywhere(
        &batch,
        "SELECT weighted_drift_ks(v, cur, 1) - drift_ks(v, cur), \
         weighted_drift_wasserstein(v, cur, 1) - drift_wasserstein(v, cur), \
         weighted_drift_wasserstein(v, cur, CASE WHEN i % 2 = 0 THEN 3 WHEN i % 4 = 1 THEN 0 ELSE NULL END) \
           - drift_wasserstein(v, cur) FILTER (WHERE i % 2 = 0) FROM t",
    )
    .await;
    for (i, d) in same[0].iter().enumerate() {
        assert!(d.expect("a value").abs() < 1e-9, "column {i}: {same:?}");
    }
}

#[tokio::test]
async fn empty_windows_and_nulls_give_null() {
    let batch = single_column("v", vec![Some(1.0), None, Some(f64::NAN), Some(3.0)]);
    let sql = "SELECT drift_psi(v, i > 100), drift_ks(v, i > 100), latency_quantile(v, 0.5), \
               score_pass_rate(v, 2), score_coverage(v) FROM t WHERE v IS NULL OR v = v";
    let row = &query(&batch, sql, LAYOUTS[0]).await[0];
    assert_eq!(row[0], None);
    assert_eq!(row[1], None);
    assert_eq!(row[2], Some(1.0));
    assert_eq!(row[3], Some(0.5));
    assert_eq!(row[4], Some(0.5), "NULL and NaN scores are not covered");
    let sql = "SELECT latency_quantile(v, 0.5), score_pass_rate(v, 1), sketch_count(quantile_sketch(v)) FROM t WHERE i > 100";
    assert_eq!(
        query(&batch, sql, LAYOUTS[1]).await[0],
        vec![None, None, None]
    );
}

#[tokio::test]
async fn wrong_arguments_name_the_function_and_its_signature() {
    let ctx = SessionContext::new();
    crate::register(&ctx);
    let cases = [
        (
            "SELECT drift_psi(1.0)",
            "function drift_psi(double precision) does not exist: it takes 2 to 3 arguments; expected drift_psi(value numeric|text, is_current boolean [, bins integer])",
        ),
        (
            "SELECT drift_ks('a', true)",
            "function drift_ks(text, boolean) does not exist: argument 1 cannot be text",
        ),
        (
            "SELECT drift_psi(v, v > 1, 1) FROM (VALUES (1.0)) t(v)",
            "bins must be an integer from 2 to 1000",
        ),
        (
            "SELECT drift_psi(v, v > 1, v) FROM (VALUES (1)) t(v)",
            "argument 3 must be a constant",
        ),
        (
            "SELECT latency_quantile(v, 1.5) FROM (VALUES (1.0)) t(v)",
            "q must be between 0 and 1",
        ),
        (
            "SELECT sketch_quantile('x'::bytea, 0.5)",
            "invalid quantile sketch",
        ),
        (
            "SELECT score_pass_rate(v) FROM (VALUES (1.0)) t(v)",
            "score_pass_rate(double precision) does not exist: it takes 2 arguments",
        ),
    ];
    for (sql, message) in cases {
        let error = match ctx.sql(sql).await {
            Ok(df) => df.collect().await.expect_err(sql),
            Err(e) => e,
        };
        assert!(error.to_string().contains(message), "{sql}: {error}");
    }
}

#[test]
fn every_function_is_described_in_the_catalog() {
    let docs = crate::function_docs();
    assert!(docs.len() >= 36, "{}", docs.len());
    for doc in &docs {
        assert!(
            !doc.description.is_empty(),
            "{} has no description",
            doc.name
        );
        assert!(!doc.arguments.is_empty(), "{} has no arguments", doc.name);
    }
    let psi = docs
        .iter()
        .find(|d| d.name == "drift_psi")
        .expect("drift_psi");
    assert_eq!(
        (psi.aggregate, psi.arguments, psi.result),
        (
            true,
            "value numeric|text, is_current boolean [, bins integer]",
            "double precision"
        )
    );
}

const EMBEDDINGS: &str = include_str!("../fixtures/embeddings.json");

/// The embedding fixtures as rows (dataset, part, embedding, is_current);
/// `part` deals each window's rows into three slices.
fn embedding_table(datasets: &serde_json::Map<String, Value>) -> RecordBatch {
    use arrow::array::{Float64Builder, Int64Array, ListBuilder};
    let (mut names, mut parts, mut current) = (Vec::new(), Vec::new(), Vec::new());
    let mut embeddings = ListBuilder::new(Float64Builder::new());
    for (name, data) in datasets {
        for (side, key) in [(false, "base"), (true, "cur")] {
            for (i, row) in data[key].as_array().expect("rows").iter().enumerate() {
                names.push(name.clone());
                parts.push(i as i64 % 3);
                current.push(side);
                let values = row.as_array().expect("embedding");
                embeddings.append_value(values.iter().map(Value::as_f64));
            }
        }
    }
    let embeddings = embeddings.finish();
    let schema = Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("part", DataType::Int64, false),
        Field::new("e", embeddings.data_type().clone(), true),
        Field::new("c", DataType::Boolean, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(names)),
            Arc::new(Int64Array::from(parts)),
            Arc::new(embeddings),
            Arc::new(BooleanArray::from(current)),
        ],
    )
    .expect("batch")
}

#[tokio::test]
async fn embedding_drift_matches_numpy_and_scipy() {
    let refs: Value = serde_json::from_str(EMBEDDINGS).expect("fixture is JSON");
    let datasets = refs.as_object().expect("datasets");
    let batch = embedding_table(datasets);
    let rows = query_everywhere_within(
        &batch,
        "SELECT dataset, drift_embedding_cosine(e, c), drift_embedding_mmd(e, c), \
         drift_embedding_mmd_pvalue(e, c), drift_embedding_mmd(e, c, 100), \
         drift_embedding_mmd_pvalue(e, c, 50, 100) FROM t GROUP BY dataset ORDER BY dataset",
        1e-12,
    )
    .await;
    // The mean states of slices, merged, give the same cosine distance.
    let merged = query_everywhere_within(
        &batch,
        "SELECT dataset, embedding_state_drift_cosine(embedding_merge(s) FILTER (WHERE NOT c), \
         embedding_merge(s) FILTER (WHERE c)), embedding_state_count(embedding_merge(s)) \
         FROM (SELECT dataset, c, part, embedding_state(e) AS s FROM t GROUP BY dataset, c, part) \
         GROUP BY dataset ORDER BY dataset",
        1e-12,
    )
    .await;
    let mut names: Vec<&String> = datasets.keys().collect();
    names.sort();
    assert_eq!(rows.len(), names.len());
    for ((row, states), name) in rows.iter().zip(&merged).zip(names) {
        let expected = &datasets[name]["expected"];
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
            assert_matches(&format!("{key} on {name}"), row[i + 1], &expected[*key]);
        }
        assert_matches(
            &format!("state cosine on {name}"),
            states[1],
            &expected["cosine"],
        );
        let count = datasets[name]["base"].as_array().map_or(0, Vec::len)
            + datasets[name]["cur"].as_array().map_or(0, Vec::len);
        assert_eq!(states[2], Some(count as f64), "{name}");
    }
}

#[tokio::test]
async fn embeddings_of_different_dimensions_are_an_error() {
    let ctx = SessionContext::new();
    crate::register(&ctx);
    for (sql, message) in [
        (
            "SELECT drift_embedding_cosine(e, c) FROM (VALUES (ARRAY[1.0, 2.0], false), (ARRAY[1.0, 2.0, 3.0], true)) t(e, c)",
            "embedding dimensions differ: 2 and 3",
        ),
        (
            "SELECT drift_embedding_mmd(e, c) FROM (VALUES (ARRAY[1.0, NULL], false)) t(e, c)",
            "must not contain NULL elements",
        ),
        (
            "SELECT drift_embedding_mmd(e, c, 1) FROM (VALUES (ARRAY[1.0], false)) t(e, c)",
            "sample must be an integer from 2 to 1000",
        ),
        (
            "SELECT drift_embedding_mmd_pvalue(e, c, 5000) FROM (VALUES (ARRAY[1.0], false)) t(e, c)",
            "permutations must be an integer from 2 to 2000",
        ),
        (
            "SELECT embedding_merge(s) FROM (VALUES (X'0102')) t(s)",
            "invalid embedding state",
        ),
        (
            "SELECT drift_embedding_cosine(e, c) FROM (VALUES (1.0, false)) t(e, c)",
            "argument 1 cannot be double precision",
        ),
    ] {
        let result = match ctx.sql(sql).await {
            Ok(df) => df.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let error = result.expect_err(sql);
        assert!(error.to_string().contains(message), "{sql}: {error}");
    }
}
