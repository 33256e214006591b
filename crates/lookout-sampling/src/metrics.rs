//! Sampling decisions' instruments.

use lookout_metrics::{Counter, Family, Histogram, Labels, Registry, seconds_histogram};

/// What sampling decisions count and time.
#[derive(Debug, Clone)]
pub(crate) struct SamplingMetrics {
    /// Decisions of one table, by outcome (ok, error).
    pub(crate) decisions: Family<Labels<1>, Counter>,
    /// Time of one table's decision.
    pub(crate) decision_seconds: Histogram,
    /// Held rows decided, by what became of them (kept, dropped, rescued).
    pub(crate) rows: Family<Labels<1>, Counter>,
}

impl SamplingMetrics {
    pub(crate) fn register(registry: &Registry) -> SamplingMetrics {
        SamplingMetrics {
            decisions: registry.register(
                "sampling_decisions",
                "Sampling decisions of one table, by outcome (ok, error)",
                Family::default(),
            ),
            decision_seconds: registry.register(
                "sampling_decision_seconds",
                "Time of one sampled table's decision",
                seconds_histogram(),
            ),
            rows: registry.register(
                "sampling_rows",
                "Held rows of sampled tables decided, by result (kept, dropped, rescued: kept late because a keep-rule matched)",
                Family::default(),
            ),
        }
    }
}
