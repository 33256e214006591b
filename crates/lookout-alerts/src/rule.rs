//! What an alert rule is: the parsed form of `CREATE ALERT`.

pub use lookout_query::ext::format_duration;
use serde::{Deserialize, Serialize};

/// Microseconds, the unit of every duration and instant here.
pub type Micros = i64;

/// Severity tier. `P0` pages now, `P1` is for the same day, `P2` for the
/// weekly review (sent in a digest, never paging).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Immediate.
    P0,
    /// Same day.
    P1,
    /// Weekly review.
    P2,
}

impl Severity {
    /// `P0`, `P1` or `P2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P0 => "P0",
            Severity::P1 => "P1",
            Severity::P2 => "P2",
        }
    }

    /// Parses `P0`, `P1`, `P2` (any case).
    pub fn parse(text: &str) -> Option<Severity> {
        match text.to_ascii_uppercase().as_str() {
            "P0" => Some(Severity::P0),
            "P1" => Some(Severity::P1),
            "P2" => Some(Severity::P2),
            _ => None,
        }
    }

    /// Whether `self` is more urgent than `other`.
    pub fn more_urgent_than(self, other: Severity) -> bool {
        self < other
    }
}

/// A comparison of `value` with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Op {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }

    /// The operator as SQL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    /// Whether breaching means going up.
    pub fn is_upper(self) -> bool {
        matches!(self, Op::Gt | Op::Ge)
    }
}

/// Where a tier's threshold comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Threshold {
    /// A number written in the rule.
    Fixed(f64),
    /// `BASELINE(k { SIGMA | MAD } OVER 'window' [STEP 'step'] [MARGIN m])`:
    /// per instance, mean ± k·stddev (or median ± k·1.4826·MAD) of the rule's
    /// own values over the window, at least `margin`·|center| away from it.
    Baseline {
        /// Number of standard deviations (or scaled MADs).
        sigmas: f64,
        /// Median and MAD instead of mean and standard deviation.
        robust: bool,
        /// Length of the baseline window.
        over: Micros,
        /// Spacing of baseline points; default max(EVERY, query window).
        step: Option<Micros>,
        /// Relative floor of the distance from the mean (0.1 = 10 %).
        margin: f64,
    },
}

/// The threshold as the grammar writes it (`8000`, `BASELINE(3 SIGMA OVER
/// '14 days' STEP '1 day' MARGIN 0.1)`).
impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Fixed(v) => write!(f, "{v}"),
            Threshold::Baseline {
                sigmas,
                robust,
                over,
                step,
                margin,
            } => {
                let unit = if *robust { "MAD" } else { "SIGMA" };
                write!(
                    f,
                    "BASELINE({sigmas} {unit} OVER '{}'",
                    format_duration(*over)
                )?;
                if let Some(step) = step {
                    write!(f, " STEP '{}'", format_duration(*step))?;
                }
                if *margin > 0.0 {
                    write!(f, " MARGIN {margin}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// One `SEVERITY Px WHEN value op threshold [NOTIFY ...]` clause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tier {
    /// The tier.
    pub severity: Severity,
    /// Comparison.
    pub op: Op,
    /// Threshold.
    pub threshold: Threshold,
    /// Targets of this tier; empty = the rule's.
    pub notify: Vec<String>,
}

/// `RECOVER WHEN value op number`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recover {
    /// Comparison.
    pub op: Op,
    /// Threshold.
    pub value: f64,
}

/// A parsed `CREATE ALERT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleDef {
    /// Rule name (the `alertname` label).
    pub name: String,
    /// Evaluation cadence.
    pub every: Micros,
    /// Pending period before firing.
    pub for_: Micros,
    /// How long a recovered alert keeps firing.
    pub keep_firing_for: Micros,
    /// Tiers, most urgent first.
    pub tiers: Vec<Tier>,
    /// Hysteresis; `None` = recovered when no tier breaches.
    pub recover: Option<Recover>,
    /// Instances with `n` below this never fire.
    pub min_samples: Option<i64>,
    /// Labels added to every instance.
    pub labels: Vec<(String, String)>,
    /// How far before the scheduled instant the query's `now()` is set.
    pub delay: Micros,
    /// Re-notification interval of a still-firing alert (webhooks).
    pub repeat_every: Micros,
    /// Notification targets (URLs).
    pub notify: Vec<String>,
    /// The query, as written.
    pub query: String,
}

/// Default `REPEAT EVERY`: four hours, as Alertmanager's repeat_interval.
pub const DEFAULT_REPEAT: Micros = 4 * 3_600_000_000;

impl RuleDef {
    /// Targets of a tier: its own, else the rule's.
    pub fn targets(&self, severity: Severity) -> &[String] {
        match self.tiers.iter().find(|t| t.severity == severity) {
            Some(t) if !t.notify.is_empty() => &t.notify,
            _ => &self.notify,
        }
    }

    /// Whether any tier is calibrated from a baseline.
    pub fn has_baseline(&self) -> bool {
        self.tiers
            .iter()
            .any(|t| matches!(t.threshold, Threshold::Baseline { .. }))
    }
}
