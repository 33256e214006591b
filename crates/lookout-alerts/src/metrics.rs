//! The alert engine's instruments.

use lookout_metrics::{Counter, Family, Histogram, Labels, Registry, seconds_histogram};

/// What the alert engine counts and times.
#[derive(Debug, Clone)]
pub(crate) struct AlertMetrics {
    /// Evaluations by health (ok, nodata, error).
    pub(crate) evaluations: Family<Labels<1>, Counter>,
    /// How long a rule's query and state update took.
    pub(crate) evaluation_seconds: Histogram,
    /// From the instant an evaluation was due to when it was recorded.
    pub(crate) evaluation_lag: Histogram,
    /// Webhook deliveries by outcome (delivered, retried, failed).
    pub(crate) deliveries: Family<Labels<1>, Counter>,
    /// Alertmanager posts by outcome (delivered, failed).
    pub(crate) alertmanager_posts: Family<Labels<1>, Counter>,
}

impl AlertMetrics {
    pub(crate) fn register(registry: &Registry) -> AlertMetrics {
        AlertMetrics {
            evaluations: registry.register(
                "alert_evaluations",
                "Alert rule evaluations, by health (ok, nodata, error)",
                Family::default(),
            ),
            evaluation_seconds: registry.register(
                "alert_evaluation_seconds",
                "Time to run an alert rule's query and update its instances",
                seconds_histogram(),
            ),
            evaluation_lag: registry.register(
                "alert_evaluation_lag_seconds",
                "Time from the instant an evaluation was due until it was recorded",
                seconds_histogram(),
            ),
            deliveries: registry.register(
                "notification_deliveries",
                "Webhook notification attempts, by outcome (delivered, retried, failed: dropped after the last attempt)",
                Family::default(),
            ),
            alertmanager_posts: registry.register(
                "alertmanager_posts",
                "Posts of firing alerts to Alertmanager, by outcome (delivered, failed)",
                Family::default(),
            ),
        }
    }
}

/// The outcome label of a delivery attempt.
pub(crate) fn outcome(ok: bool) -> Labels<1> {
    [("outcome", if ok { "delivered" } else { "failed" })]
}
