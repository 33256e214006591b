//! BASELINE thresholds: the rule's own query at past instants, mean ± k·σ
//! per instance.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tracing::warn;

use crate::engine::AlertEngine;
use crate::error::{AlertError, Result};
use crate::evaluation::{full_labels, lock, run_rule_query};
use crate::notify::fingerprint;
use crate::rule::{Micros, RuleDef, Threshold};
use crate::state::Calibrated;
use crate::store::{self, LogRow, float, text, timestamp};

impl AlertEngine {
    /// Calibrates in the background (progress in `lookout.alerts`).
    pub(crate) fn spawn_calibration(&self, name: String, anchor: Micros) {
        let engine = self.clone();
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(e) = engine.calibrate(&name, anchor).await {
                warn!(rule = %name, "baseline calibration failed: {e}");
            }
            engine.done_in_flight();
        });
    }

    /// Calibrates the rule's BASELINE thresholds from its own query run at
    /// past instants ending at `anchor`; records progress and results.
    pub async fn calibrate(&self, name: &str, anchor: Micros) -> Result<()> {
        let (def, version) = {
            let rules = lock(&self.inner.rules);
            let r = rules
                .get(name)
                .ok_or_else(|| AlertError::NotFound(name.to_string()))?;
            (r.def.clone(), r.version)
        };
        let mut plans: Vec<(Micros, Micros)> = Vec::new();
        for tier in &def.tiers {
            if let Threshold::Baseline { over, step, .. } = tier.threshold {
                let step = baseline_step(&def, over, step);
                if !plans.contains(&(over, step)) {
                    plans.push((over, step));
                }
            }
        }
        let total: i64 = plans.iter().map(|(over, step)| (over / step).max(1)).sum();
        self.record_calibration(&def.name, version, anchor, "running", 0.0, None)
            .await?;
        let mut done = 0i64;
        let mut series: HashMap<(Micros, Micros), BaselineSeries> = HashMap::new();
        let mut last_report = std::time::Instant::now();
        for &(over, step) in &plans {
            let points = (over / step).max(1);
            let instants: Vec<Micros> = (0..points)
                .map(|i| anchor - over + step * (i + 1))
                .collect();
            let db = self.inner.db.clone();
            let mut results = futures::stream::iter(instants.into_iter().map(|t| {
                let db = db.clone();
                let def = def.clone();
                async move { run_rule_query(&db, &def, t - def.delay).await }
            }))
            .buffered(self.inner.options.concurrency.max(1));
            let entry = series.entry((over, step)).or_default();
            while let Some(rows) = results.next().await {
                if self.stopped() {
                    // Recorded as running: the next start resumes it.
                    return Ok(());
                }
                match rows {
                    Ok(rows) => {
                        for row in rows {
                            let fp = fingerprint(&full_labels(&def, &row.labels));
                            let e = entry
                                .entry(fp)
                                .or_insert_with(|| (row.labels.clone(), Vec::new()));
                            if let Some(v) = row.value
                                && def
                                    .min_samples
                                    .is_none_or(|m| row.n.is_some_and(|n| n >= m))
                            {
                                e.1.push(v);
                            }
                        }
                    }
                    Err(e) => {
                        self.record_calibration(
                            &def.name,
                            version,
                            anchor,
                            "failed",
                            done as f64 / total as f64,
                            Some(&e.to_string()),
                        )
                        .await?;
                        return Err(e);
                    }
                }
                done += 1;
                // Progress every 2 seconds, and at each tenth.
                let tenth = (done * 10 / total) != ((done - 1) * 10 / total);
                if done < total && (tenth || last_report.elapsed() > Duration::from_secs(2)) {
                    last_report = std::time::Instant::now();
                    self.record_calibration(
                        &def.name,
                        version,
                        anchor,
                        "running",
                        done as f64 / total as f64,
                        None,
                    )
                    .await?;
                }
            }
        }
        let mut calibrated = Calibrated::new();
        let mut values = Vec::new();
        let mut fewest = usize::MAX;
        let now = self.now_micros();
        for tier in &def.tiers {
            let Threshold::Baseline {
                sigmas,
                robust,
                over,
                step,
                margin,
            } = tier.threshold
            else {
                continue;
            };
            let step = baseline_step(&def, over, step);
            let Some(per_fp) = series.get(&(over, step)) else {
                continue;
            };
            for (fp, (labels, points)) in per_fp {
                fewest = fewest.min(points.len());
                let (mean, sd) = if robust {
                    median_mad(points)
                } else {
                    mean_stddev(points)
                };
                let threshold = mean.map(|m| {
                    let distance = (sigmas * sd.unwrap_or(0.0)).max(margin * m.abs());
                    if tier.op.is_upper() {
                        m + distance
                    } else {
                        m - distance
                    }
                });
                if let Some(t) = threshold {
                    calibrated.insert((fp.clone(), tier.severity), t);
                }
                values.push(format!(
                    "({}, {}, {version}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                    timestamp(now),
                    text(&def.name),
                    text(fp),
                    text(&store::labels_json(labels)),
                    text(tier.severity.as_str()),
                    float(threshold),
                    float(mean),
                    float(sd),
                    points.len(),
                    timestamp(anchor - over),
                    timestamp(anchor),
                ));
            }
        }
        if !values.is_empty() {
            self.inner
                .db
                .sql(&format!(
                    "INSERT INTO lookout.alert_thresholds VALUES {}",
                    values.join(", ")
                ))
                .await?;
        }
        let warning = if values.is_empty() {
            Some("the baseline window returned no rows: BASELINE tiers cannot fire".to_string())
        } else if fewest < MIN_BASELINE_POINTS {
            Some(format!(
                "only {fewest} baseline points for some instances (fewer than {MIN_BASELINE_POINTS}): thresholds are unreliable"
            ))
        } else {
            None
        };
        if let Some(w) = &warning {
            warn!(rule = %def.name, "{w}");
        }
        if let Some(r) = lock(&self.inner.rules).get_mut(name)
            && r.version == version
        {
            r.calibrated = calibrated;
        }
        self.record_calibration(&def.name, version, anchor, "done", 1.0, warning.as_deref())
            .await
    }

    /// Records calibration progress with the baseline's end (`anchor`), so a
    /// calibration cut short by a restart resumes with the same window.
    async fn record_calibration(
        &self,
        rule: &str,
        version: Micros,
        anchor: Micros,
        state: &str,
        progress: f64,
        detail: Option<&str>,
    ) -> Result<()> {
        let row = LogRow {
            ts: self.now_micros(),
            kind: "calibration",
            rule,
            rule_version: version,
            state: Some(state),
            value: Some(progress),
            detail,
            recorded_at: self.now_micros(),
            baseline_to: Some(anchor),
            ..Default::default()
        };
        store::append_log(&self.inner.db, &[row]).await
    }
}

/// Most points a baseline is computed from.
const MAX_BASELINE_POINTS: i64 = 1_000;

/// Fewer baseline points than this gives a warning (as NannyML does).
const MIN_BASELINE_POINTS: usize = 6;

/// Baseline values per instance: fingerprint → (labels, values).
type BaselineSeries = HashMap<String, (Vec<(String, String)>, Vec<f64>)>;

/// Spacing of a baseline's points: STEP, else max(EVERY, the query's
/// window), widened so that `over` holds at most 1,000 points.
fn baseline_step(def: &RuleDef, over: Micros, step: Option<Micros>) -> Micros {
    step.unwrap_or_else(|| def.every.max(query_window(&def.query)))
        .max(over / MAX_BASELINE_POINTS)
        .max(1)
}

/// The median and 1.4826·MAD (the standard deviation's robust estimate).
fn median_mad(points: &[f64]) -> (Option<f64>, Option<f64>) {
    fn median(sorted: &[f64]) -> f64 {
        let n = sorted.len();
        if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        }
    }
    if points.is_empty() {
        return (None, None);
    }
    let mut sorted = points.to_vec();
    sorted.sort_by(f64::total_cmp);
    let center = median(&sorted);
    let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - center).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    (
        Some(center),
        Some(1.482_602_218_505_602 * median(&deviations)),
    )
}

pub(crate) fn mean_stddev(points: &[f64]) -> (Option<f64>, Option<f64>) {
    if points.is_empty() {
        return (None, None);
    }
    let n = points.len() as f64;
    let mean = points.iter().fold(0.0, |a, b| a + b) / n;
    if points.len() < 2 {
        return (Some(mean), None);
    }
    let var = points.iter().fold(0.0, |a, v| a + (v - mean).powi(2)) / (n - 1.0);
    (Some(mean), Some(var.sqrt()))
}

/// The query's window: its longest `INTERVAL '...'` literal (0 if none).
pub(crate) fn query_window(query: &str) -> Micros {
    let lower = query.to_ascii_lowercase();
    let mut longest = 0;
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("interval") {
        rest = &rest[at + "interval".len()..];
        let trimmed = rest.trim_start();
        if let Some(body) = trimmed.strip_prefix('\'')
            && let Some(end) = body.find('\'')
            && let Ok(micros) = lookout_query::parse_duration(&body[..end])
        {
            longest = longest.max(micros);
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::next_instant;

    #[test]
    fn windows_and_instants() {
        assert_eq!(
            query_window(
                "SELECT 1 WHERE ts >= now() - INTERVAL '15 minutes' AND x > now() - interval '1 hour'"
            ),
            3_600_000_000
        );
        assert_eq!(query_window("SELECT 1"), 0);
        assert_eq!(next_instant(60, 0), 60);
        assert_eq!(next_instant(60, 59), 60);
        assert_eq!(next_instant(60, 60), 120);
        let (m, s) = mean_stddev(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, Some(2.5));
        assert!((s.unwrap_or_default() - 1.290_994_448_735_805_6).abs() < 1e-12);
        // An outlier moves the mean and σ, hardly the median and MAD.
        let (m, s) = median_mad(&[10.0, 11.0, 9.0, 10.0, 500.0]);
        assert_eq!(m, Some(10.0));
        assert!((s.unwrap_or_default() - 1.482_602_218_505_602).abs() < 1e-12);
        assert_eq!(median_mad(&[1.0, 3.0]).0, Some(2.0));
    }
}
