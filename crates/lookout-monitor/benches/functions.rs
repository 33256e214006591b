//! One Criterion group per function family, on 10 M values:
//! `cargo bench -p lookout-monitor --profile quick-release`.
//! (The per-value cost of a sketch update and the sketch's size are printed.)

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use lookout_monitor::QuantileSketch;

const ROWS: usize = 10_000_000;
const BATCH: usize = 8192;

/// A deterministic log-normal-ish latency, a category, a score and a window flag.
fn table() -> (Vec<RecordBatch>, Vec<f64>) {
    let mut state = 42u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let values: Vec<f64> = (0..ROWS).map(|_| (4.0 + 2.0 * next()).exp()).collect();
    let categories = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let schema = Arc::new(Schema::new(vec![
        Field::new("value", DataType::Float64, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("is_current", DataType::Boolean, false),
    ]));
    let batches = values
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            let start = b * BATCH;
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Float64Array::from(chunk.to_vec())),
                Arc::new(StringArray::from_iter_values(
                    chunk
                        .iter()
                        .map(|v| categories[(*v as usize) % categories.len()]),
                )),
                Arc::new(Float64Array::from_iter_values(
                    chunk.iter().map(|v| v.fract()),
                )),
                Arc::new(BooleanArray::from_iter(
                    (start..start + chunk.len()).map(|i| Some(i >= ROWS * 6 / 7)),
                )),
            ];
            RecordBatch::try_new(schema.clone(), columns).expect("batch")
        })
        .collect();
    (batches, values)
}

fn context(batches: &[RecordBatch]) -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    lookout_monitor::register(&ctx);
    let halves: Vec<Vec<RecordBatch>> = batches
        .chunks(batches.len().div_ceil(2))
        .map(<[RecordBatch]>::to_vec)
        .collect();
    let table = MemTable::try_new(batches[0].schema(), halves).expect("table");
    ctx.register_table("t", Arc::new(table)).expect("register");
    ctx
}

fn run_sql(runtime: &tokio::runtime::Runtime, ctx: &SessionContext, sql: &str) {
    runtime.block_on(async {
        ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
    });
}

fn functions(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (batches, values) = table();
    let ctx = context(&batches);
    let families: [(&str, &[(&str, &str)]); 3] = [
        (
            "drift",
            &[
                (
                    "drift_psi numeric",
                    "SELECT drift_psi(value, is_current) FROM t",
                ),
                (
                    "drift_psi text",
                    "SELECT drift_psi(category, is_current) FROM t",
                ),
                (
                    "drift_ks_pvalue",
                    "SELECT drift_ks_pvalue(value, is_current) FROM t",
                ),
                (
                    "drift_wasserstein",
                    "SELECT drift_wasserstein(value, is_current) FROM t",
                ),
                (
                    "drift_chi2_pvalue",
                    "SELECT drift_chi2_pvalue(category, is_current) FROM t",
                ),
            ],
        ),
        (
            "sketch",
            &[
                (
                    "latency_quantile",
                    "SELECT latency_quantile(value, 0.99) FROM t",
                ),
                (
                    "approx_percentile_cont (t-digest, for scale)",
                    "SELECT approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY value) FROM t",
                ),
                (
                    "sketch_merge of 1000 sketches",
                    "SELECT sketch_quantile(sketch_merge(s), 0.99) FROM \
                     (SELECT quantile_sketch(value) AS s FROM t GROUP BY CAST(value * 1000 AS BIGINT) % 1000)",
                ),
            ],
        ),
        (
            "score",
            &[
                (
                    "score_pass_rate",
                    "SELECT score_pass_rate(score, 0.5) FROM t",
                ),
                ("score_state", "SELECT score_state(score, 0.5) FROM t"),
            ],
        ),
    ];
    for (family, queries) in families {
        let mut group = c.benchmark_group(family);
        group.sample_size(10);
        for (name, sql) in queries {
            group.bench_function(*name, |b| b.iter(|| run_sql(&runtime, &ctx, sql)));
        }
        group.finish();
    }

    let start = Instant::now();
    let mut sketch = QuantileSketch::default();
    values.iter().for_each(|v| sketch.add(*v));
    let elapsed = start.elapsed();
    println!(
        "sketch update: {:.1} ns per value; sketch of {} values: {} bytes",
        elapsed.as_nanos() as f64 / values.len() as f64,
        values.len(),
        sketch.encode().len()
    );
}

criterion_group!(benches, functions);
criterion_main!(benches);
