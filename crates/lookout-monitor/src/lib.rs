//! Lookout's monitoring functions: drift divergences, latency quantile
//! sketches and LLM-evaluator score rollups, as DataFusion functions.
//!
//! This crate depends on DataFusion, Arrow and statrs (the χ² and gamma
//! functions) only, not on storage or the server; [`register`] adds every
//! function to a session. `docs/monitoring.md` documents each one, with its
//! reference implementation and error bound.
//!
//! ```sql
//! SELECT model,
//!        drift_psi(feature_x, ts >= TIMESTAMPTZ '2025-01-07 00:00:00+00') AS psi,
//!        latency_quantile(latency_ms, 0.99) AS p99
//! FROM events
//! WHERE ts >= TIMESTAMPTZ '2025-01-01 00:00:00+00'
//! GROUP BY model;
//! ```

mod docs;
mod drift;
mod embedding;
mod kolmogorov;
mod quantile_bins;
mod rollups;
mod sampling;
mod score;
pub mod sketch;
pub mod stats;
mod udf;

use arrow::datatypes::DataType;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};

pub use docs::FunctionDoc;
pub use score::ScoreState;
pub use sketch::QuantileSketch;

use drift::Measure;
use embedding::EmbeddingOutput;
use rollups::{BYTES, ScoreOutput};
use udf::{Arg, MonitorAggregate, MonitorScalar, Spec};

const fn spec(
    name: &'static str,
    required: &'static [Arg],
    optional: &'static [Arg],
    usage: &'static str,
) -> Spec {
    Spec {
        name,
        required,
        optional,
        usage,
    }
}

const DRIFT_BINNED: &[Arg] = &[Arg::NumberOrText, Arg::Boolean];
const DRIFT_NUMERIC: &[Arg] = &[Arg::Number, Arg::Boolean];
const DRIFT_CATEGORY: &[Arg] = &[Arg::Category, Arg::Boolean];
const BINS: &[Arg] = &[Arg::ConstInteger];
const WEIGHTED_BINNED: &[Arg] = &[Arg::NumberOrText, Arg::Boolean, Arg::Number];
const WEIGHTED_NUMERIC: &[Arg] = &[Arg::Number, Arg::Boolean, Arg::Number];
const DRIFT_EMBEDDING: &[Arg] = &[Arg::Embedding, Arg::Boolean];

/// Every aggregate: its spec, result type and how to build it.
fn aggregates() -> Vec<MonitorAggregate> {
    use Measure::*;
    let drift = |name, args, optional, usage, measure: Measure| {
        let build: udf::Build = match measure {
            Psi => |s, a| drift::build(Psi, s, a),
            Kl => |s, a| drift::build(Kl, s, a),
            Js => |s, a| drift::build(Js, s, a),
            Ks => |s, a| drift::build(Ks, s, a),
            KsPvalue => |s, a| drift::build(KsPvalue, s, a),
            Wasserstein => |s, a| drift::build(Wasserstein, s, a),
            Chi2Pvalue => |s, a| drift::build(Chi2Pvalue, s, a),
            NewCategoryShare => |s, a| drift::build(NewCategoryShare, s, a),
        };
        MonitorAggregate::new(spec(name, args, optional, usage), DataType::Float64, build)
    };
    let weighted = |name, args, optional, usage, measure: Measure| {
        let build: udf::Build = match measure {
            Psi => |s, a| drift::build_weighted(Psi, s, a),
            Kl => |s, a| drift::build_weighted(Kl, s, a),
            Js => |s, a| drift::build_weighted(Js, s, a),
            Ks => |s, a| drift::build_weighted(Ks, s, a),
            _ => |s, a| drift::build_weighted(Wasserstein, s, a),
        };
        MonitorAggregate::new(spec(name, args, optional, usage), DataType::Float64, build)
    };
    let score = |name, optional, usage, output: ScoreOutput| {
        let build: udf::Build = match output {
            ScoreOutput::PassRate => |s, a| rollups::build_score(ScoreOutput::PassRate, s, a),
            ScoreOutput::PassRateLow => |s, a| rollups::build_score(ScoreOutput::PassRateLow, s, a),
            ScoreOutput::PassRateHigh => {
                |s, a| rollups::build_score(ScoreOutput::PassRateHigh, s, a)
            }
            ScoreOutput::Coverage => |s, a| rollups::build_score(ScoreOutput::Coverage, s, a),
            ScoreOutput::State => |s, a| rollups::build_score(ScoreOutput::State, s, a),
        };
        let (required, returns): (&'static [Arg], _) = match output {
            ScoreOutput::Coverage => (&[Arg::Score], DataType::Float64),
            ScoreOutput::State => (&[Arg::Score], BYTES),
            _ => (&[Arg::Score, Arg::ConstNumber], DataType::Float64),
        };
        MonitorAggregate::new(spec(name, required, optional, usage), returns, build)
    };
    let embedding = |name, optional, usage, output: EmbeddingOutput| {
        let build: udf::Build = match output {
            EmbeddingOutput::Cosine => |s, a| embedding::build_drift(EmbeddingOutput::Cosine, s, a),
            EmbeddingOutput::Mmd => |s, a| embedding::build_drift(EmbeddingOutput::Mmd, s, a),
            _ => |s, a| embedding::build_drift(EmbeddingOutput::MmdPvalue, s, a),
        };
        MonitorAggregate::new(
            spec(name, DRIFT_EMBEDDING, optional, usage),
            DataType::Float64,
            build,
        )
    };
    vec![
        embedding(
            "drift_embedding_cosine",
            &[],
            "drift_embedding_cosine(embedding real[]|double precision[], is_current boolean)",
            EmbeddingOutput::Cosine,
        ),
        embedding(
            "drift_embedding_mmd",
            BINS,
            "drift_embedding_mmd(embedding real[]|double precision[], is_current boolean [, sample integer])",
            EmbeddingOutput::Mmd,
        ),
        embedding(
            "drift_embedding_mmd_pvalue",
            &[Arg::ConstInteger, Arg::ConstInteger],
            "drift_embedding_mmd_pvalue(embedding real[]|double precision[], is_current boolean [, permutations integer [, sample integer]])",
            EmbeddingOutput::MmdPvalue,
        ),
        MonitorAggregate::new(
            spec(
                "embedding_state",
                &[Arg::Embedding],
                &[],
                "embedding_state(embedding real[]|double precision[])",
            ),
            BYTES,
            embedding::build_state,
        ),
        MonitorAggregate::new(
            spec(
                "embedding_merge",
                &[Arg::Bytes],
                &[],
                "embedding_merge(state bytea)",
            ),
            BYTES,
            embedding::build_merge,
        ),
        drift(
            "drift_psi",
            DRIFT_BINNED,
            BINS,
            "drift_psi(value numeric|text, is_current boolean [, bins integer])",
            Psi,
        ),
        drift(
            "drift_kl",
            DRIFT_BINNED,
            BINS,
            "drift_kl(value numeric|text, is_current boolean [, bins integer])",
            Kl,
        ),
        drift(
            "drift_js",
            DRIFT_BINNED,
            BINS,
            "drift_js(value numeric|text, is_current boolean [, bins integer])",
            Js,
        ),
        drift(
            "drift_ks",
            DRIFT_NUMERIC,
            &[],
            "drift_ks(value numeric, is_current boolean)",
            Ks,
        ),
        drift(
            "drift_ks_pvalue",
            DRIFT_NUMERIC,
            &[],
            "drift_ks_pvalue(value numeric, is_current boolean)",
            KsPvalue,
        ),
        drift(
            "drift_wasserstein",
            DRIFT_NUMERIC,
            &[],
            "drift_wasserstein(value numeric, is_current boolean)",
            Wasserstein,
        ),
        drift(
            "drift_chi2_pvalue",
            DRIFT_CATEGORY,
            &[],
            "drift_chi2_pvalue(category text, is_current boolean)",
            Chi2Pvalue,
        ),
        drift(
            "drift_new_category_share",
            DRIFT_CATEGORY,
            &[],
            "drift_new_category_share(category text, is_current boolean)",
            NewCategoryShare,
        ),
        weighted(
            "weighted_drift_psi",
            WEIGHTED_BINNED,
            BINS,
            "weighted_drift_psi(value numeric|text, is_current boolean, weight numeric [, bins integer])",
            Psi,
        ),
        weighted(
            "weighted_drift_kl",
            WEIGHTED_BINNED,
            BINS,
            "weighted_drift_kl(value numeric|text, is_current boolean, weight numeric [, bins integer])",
            Kl,
        ),
        weighted(
            "weighted_drift_js",
            WEIGHTED_BINNED,
            BINS,
            "weighted_drift_js(value numeric|text, is_current boolean, weight numeric [, bins integer])",
            Js,
        ),
        weighted(
            "weighted_drift_ks",
            WEIGHTED_NUMERIC,
            &[],
            "weighted_drift_ks(value numeric, is_current boolean, weight numeric)",
            Ks,
        ),
        weighted(
            "weighted_drift_wasserstein",
            WEIGHTED_NUMERIC,
            &[],
            "weighted_drift_wasserstein(value numeric, is_current boolean, weight numeric)",
            Wasserstein,
        ),
        MonitorAggregate::new(
            spec(
                "quantile_sketch",
                &[Arg::Number],
                &[Arg::Number],
                "quantile_sketch(value numeric [, weight numeric])",
            ),
            BYTES,
            rollups::build_sketch,
        ),
        MonitorAggregate::new(
            spec(
                "sketch_merge",
                &[Arg::Bytes],
                &[],
                "sketch_merge(sketch bytea)",
            ),
            BYTES,
            rollups::build_sketch_merge,
        ),
        MonitorAggregate::new(
            spec(
                "latency_quantile",
                &[Arg::Number, Arg::ConstNumber],
                &[],
                "latency_quantile(value numeric, q constant double precision)",
            ),
            DataType::Float64,
            rollups::build_latency_quantile,
        ),
        MonitorAggregate::new(
            spec(
                "weighted_quantile",
                &[Arg::Number, Arg::Number, Arg::ConstNumber],
                &[],
                "weighted_quantile(value numeric, weight numeric, q constant double precision)",
            ),
            DataType::Float64,
            rollups::build_weighted_quantile,
        ),
        score(
            "score_pass_rate",
            &[],
            "score_pass_rate(score numeric|boolean, threshold constant)",
            ScoreOutput::PassRate,
        ),
        score(
            "score_pass_rate_low",
            &[],
            "score_pass_rate_low(score numeric|boolean, threshold constant)",
            ScoreOutput::PassRateLow,
        ),
        score(
            "score_pass_rate_high",
            &[],
            "score_pass_rate_high(score numeric|boolean, threshold constant)",
            ScoreOutput::PassRateHigh,
        ),
        score(
            "score_coverage",
            &[],
            "score_coverage(score numeric|boolean)",
            ScoreOutput::Coverage,
        ),
        score(
            "score_state",
            &[Arg::ConstNumber],
            "score_state(score numeric|boolean [, threshold constant])",
            ScoreOutput::State,
        ),
        MonitorAggregate::new(
            spec(
                "score_merge",
                &[Arg::Bytes],
                &[],
                "score_merge(state bytea)",
            ),
            BYTES,
            rollups::build_score_merge,
        ),
    ]
}

fn scalars() -> Vec<MonitorScalar> {
    let f64 = DataType::Float64;
    let state = |name, usage, eval| {
        MonitorScalar::new(
            spec(name, &[Arg::Bytes], &[], usage),
            DataType::Float64,
            eval,
        )
    };
    vec![
        MonitorScalar::new(
            spec(
                "embedding_state_drift_cosine",
                &[Arg::Bytes, Arg::Bytes],
                &[],
                "embedding_state_drift_cosine(baseline bytea, current bytea)",
            ),
            f64.clone(),
            embedding::state_drift_cosine,
        ),
        MonitorScalar::new(
            spec(
                "embedding_state_count",
                &[Arg::Bytes],
                &[],
                "embedding_state_count(state bytea)",
            ),
            f64.clone(),
            embedding::state_count,
        ),
        MonitorScalar::new(
            spec(
                "sample_hash",
                &[Arg::Category],
                &[],
                "sample_hash(key text)",
            ),
            f64.clone(),
            sampling::sample_hash,
        ),
        MonitorScalar::new(
            spec(
                "sketch_quantile",
                &[Arg::Bytes, Arg::Number],
                &[],
                "sketch_quantile(sketch bytea, q double precision)",
            ),
            f64.clone(),
            rollups::sketch_quantile,
        ),
        MonitorScalar::new(
            spec(
                "sketch_count",
                &[Arg::Bytes],
                &[],
                "sketch_count(sketch bytea)",
            ),
            f64.clone(),
            rollups::sketch_count,
        ),
        MonitorScalar::new(
            spec(
                "sketch_psi",
                &[Arg::Bytes, Arg::Bytes],
                BINS,
                "sketch_psi(baseline bytea, current bytea [, bins integer])",
            ),
            f64.clone(),
            rollups::sketch_psi,
        ),
        MonitorScalar::new(
            spec(
                "sketch_js",
                &[Arg::Bytes, Arg::Bytes],
                BINS,
                "sketch_js(baseline bytea, current bytea [, bins integer])",
            ),
            f64.clone(),
            rollups::sketch_js,
        ),
        MonitorScalar::new(
            spec(
                "sketch_ks",
                &[Arg::Bytes, Arg::Bytes],
                &[],
                "sketch_ks(baseline bytea, current bytea)",
            ),
            f64,
            rollups::sketch_ks,
        ),
        state(
            "score_state_mean",
            "score_state_mean(state bytea)",
            rollups::score_state_mean,
        ),
        state(
            "score_state_stddev",
            "score_state_stddev(state bytea)",
            rollups::score_state_stddev,
        ),
        state(
            "score_state_count",
            "score_state_count(state bytea)",
            rollups::score_state_count,
        ),
        state(
            "score_state_coverage",
            "score_state_coverage(state bytea)",
            rollups::score_state_coverage,
        ),
        state(
            "score_state_pass_rate",
            "score_state_pass_rate(state bytea)",
            rollups::score_state_pass_rate,
        ),
        state(
            "score_state_pass_rate_low",
            "score_state_pass_rate_low(state bytea)",
            rollups::score_state_pass_rate_low,
        ),
        state(
            "score_state_pass_rate_high",
            "score_state_pass_rate_high(state bytea)",
            rollups::score_state_pass_rate_high,
        ),
    ]
}

/// Every monitoring function as the function catalog lists it, by name.
pub fn function_docs() -> Vec<FunctionDoc> {
    let mut docs: Vec<FunctionDoc> = aggregates()
        .iter()
        .map(MonitorAggregate::doc)
        .chain(scalars().iter().map(MonitorScalar::doc))
        .collect();
    docs.sort_by_key(|d| d.name);
    docs
}

/// Registers every monitoring function in a session.
pub fn register(ctx: &SessionContext) {
    for aggregate in aggregates() {
        ctx.register_udaf(AggregateUDF::from(aggregate));
    }
    for scalar in scalars() {
        ctx.register_udf(ScalarUDF::from(scalar));
    }
}

#[cfg(test)]
mod tests;
