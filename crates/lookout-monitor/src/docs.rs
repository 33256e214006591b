//! What each monitoring function does, in one line, for the function
//! catalog (`lookout.functions`, psql's `\df+`); `docs/monitoring.md` says
//! it at length.

/// A monitoring function as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDoc {
    /// The function's name.
    pub name: &'static str,
    /// Whether it aggregates rows.
    pub aggregate: bool,
    /// Its arguments as PostgreSQL's `pg_get_function_arguments` words
    /// them, optional ones in brackets: `value numeric, q double precision`.
    pub arguments: &'static str,
    /// The PostgreSQL name of its result type.
    pub result: &'static str,
    /// One line on what it computes.
    pub description: &'static str,
}

/// The one-line description of the function `name` (empty when it has none,
/// which a test forbids).
pub(crate) fn description(name: &str) -> &'static str {
    match name {
        "drift_embedding_cosine" => {
            "Cosine distance between the mean embeddings of the baseline and current rows"
        }
        "drift_embedding_mmd" => {
            "Unbiased squared maximum mean discrepancy (Gaussian kernel, median bandwidth) between baseline and current embeddings"
        }
        "drift_embedding_mmd_pvalue" => {
            "p-value of the MMD permutation test between baseline and current embeddings"
        }
        "embedding_state" => "Mergeable state of embeddings (count and sum) for rollups, as BYTEA",
        "embedding_merge" => "Merges embedding states",
        "embedding_state_drift_cosine" => {
            "Cosine distance between the mean embeddings of two embedding states"
        }
        "embedding_state_count" => "Number of embeddings an embedding state holds",
        "drift_psi" => {
            "Population stability index between the baseline (is_current false) and current rows"
        }
        "drift_kl" => {
            "Kullback-Leibler divergence of the current rows' histogram from the baseline's, in nats"
        }
        "drift_js" => {
            "Jensen-Shannon distance (base 2) between the baseline and current histograms"
        }
        "drift_ks" => "Two-sample Kolmogorov-Smirnov statistic between baseline and current values",
        "drift_ks_pvalue" => {
            "Two-sided p-value of the Kolmogorov-Smirnov test between baseline and current values"
        }
        "drift_wasserstein" => {
            "First Wasserstein (earth mover's) distance between baseline and current values"
        }
        "drift_chi2_pvalue" => {
            "p-value of the chi-squared test of homogeneity of baseline and current categories"
        }
        "drift_new_category_share" => {
            "Share of current rows whose category never occurs in the baseline"
        }
        "weighted_drift_psi" => {
            "Population stability index of weighted histograms (sampled tables)"
        }
        "weighted_drift_kl" => {
            "Kullback-Leibler divergence of weighted histograms (sampled tables)"
        }
        "weighted_drift_js" => "Jensen-Shannon distance of weighted histograms (sampled tables)",
        "weighted_drift_ks" => {
            "Kolmogorov-Smirnov statistic of weighted empirical distributions (sampled tables)"
        }
        "weighted_drift_wasserstein" => {
            "Wasserstein distance of weighted empirical distributions (sampled tables)"
        }
        "quantile_sketch" => {
            "Mergeable quantile sketch of the values (each counted weight times), as bytea"
        }
        "sketch_merge" => "Sketch of all the values of the input sketches",
        "latency_quantile" => "q-quantile of the values, read from their quantile sketch",
        "weighted_quantile" => {
            "q-quantile of the values, each counted weight times (sampled tables)"
        }
        "score_pass_rate" => "Share of non-NULL scores at or above the threshold",
        "score_pass_rate_low" => "Lower bound of the Wilson 95% interval of the pass rate",
        "score_pass_rate_high" => "Upper bound of the Wilson 95% interval of the pass rate",
        "score_coverage" => "Share of rows that have a score",
        "score_state" => {
            "Mergeable state of the scores (count, mean, spread, passes), as bytea, for rollups"
        }
        "score_merge" => "Merged score state of the input states",
        "sample_hash" => {
            "Deterministic hash of a key in [0, 1), the one sampling at ingest keeps rows by"
        }
        "sketch_quantile" => "q-quantile read from a quantile sketch",
        "sketch_count" => "How many values (total weight) a quantile sketch holds",
        "sketch_psi" => "Population stability index between two quantile sketches",
        "sketch_js" => "Jensen-Shannon distance between two quantile sketches",
        "sketch_ks" => "Kolmogorov-Smirnov statistic between two quantile sketches",
        "score_state_mean" => "Mean of the scores in a score state",
        "score_state_stddev" => "Sample standard deviation of the scores in a score state",
        "score_state_count" => "Number of scored rows in a score state",
        "score_state_coverage" => "Share of rows with a score in a score state",
        "score_state_pass_rate" => "Pass rate of the scores in a score state",
        "score_state_pass_rate_low" => {
            "Lower bound of the Wilson 95% interval of a score state's pass rate"
        }
        "score_state_pass_rate_high" => {
            "Upper bound of the Wilson 95% interval of a score state's pass rate"
        }
        _ => "",
    }
}
