//! The evaluators' instruments.

use lookout_metrics::{Counter, Family, Histogram, Labels, Registry, seconds_histogram};
use prometheus_client::metrics::counter::Counter as FloatCounter;

/// What judge calls count and cost.
#[derive(Debug, Clone)]
pub(crate) struct EvaluatorMetrics {
    /// Calls by outcome (scored, malformed, out_of_range, refused, unavailable).
    pub(crate) calls: Family<Labels<1>, Counter>,
    /// One call, its retries and waits included.
    pub(crate) call_seconds: Histogram,
    /// Dollars spent, by the evaluators' prices.
    pub(crate) cost_usd: FloatCounter<f64, std::sync::atomic::AtomicU64>,
    /// Tokens by direction (input, output).
    pub(crate) tokens: Family<Labels<1>, Counter>,
}

impl EvaluatorMetrics {
    pub(crate) fn register(registry: &Registry) -> EvaluatorMetrics {
        EvaluatorMetrics {
            calls: registry.register(
                "evaluator_calls",
                "Judge calls of LLM evaluators, by outcome (scored, malformed, out_of_range, refused, unavailable: not finished, retried later)",
                Family::default(),
            ),
            call_seconds: registry.register(
                "evaluator_call_seconds",
                "Time of one judge call, retries and waits included",
                seconds_histogram(),
            ),
            cost_usd: registry.register(
                "evaluator_cost_usd",
                "Dollars spent on judge calls, by the evaluators' prices",
                FloatCounter::default(),
            ),
            tokens: registry.register(
                "evaluator_tokens",
                "Tokens of judge calls, by direction (input, output)",
                Family::default(),
            ),
        }
    }
}
