//! `lookout bench-alerts`: the cost of evaluating many alert rules over the
//! bench events (driven by `benches/alerts.sh`).
//!
//! Creates `rules` rules of five kinds (latency p99, error rate, feature
//! drift, evaluator score, category drift), each filtered to one customer
//! segment, then evaluates all of them at one instant the way the scheduler
//! does (query, state machine, one write per evaluation), and runs the same
//! queries bare for comparison.

use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use lookout_alerts::{AlertEngine, AlertOptions};
use lookout_query::Lookout;

const SEGMENTS: [&str; 20] = [
    "dev-free-tier",
    "dev-pro",
    "ent-finance",
    "ent-healthcare",
    "ent-insurance",
    "ent-manufacturing",
    "ent-media",
    "ent-public-sector",
    "ent-retail",
    "ent-telecom",
    "internal-eval",
    "mid-ecommerce",
    "mid-education",
    "mid-logistics",
    "mid-saas",
    "mid-travel",
    "smb-agency",
    "smb-hospitality",
    "smb-legal",
    "smb-realestate",
];

/// The query of rule `i`.
fn rule_query(i: usize) -> (String, String) {
    let segment = SEGMENTS[i % SEGMENTS.len()];
    let window = ["15 minutes", "1 hour", "6 hours"][(i / SEGMENTS.len()) % 3];
    match i % 5 {
        0 => (
            "SEVERITY P0 WHEN value > 60000, SEVERITY P1 WHEN value > 30000".into(),
            format!(
                "SELECT model, latency_quantile(latency_ms, 0.99) AS value, count(*) AS n FROM events \
                 WHERE ts >= now() - INTERVAL '{window}' AND ts < now() AND segment = '{segment}' GROUP BY model"
            ),
        ),
        1 => (
            "SEVERITY P0 WHEN value > 0.5".into(),
            format!(
                "SELECT model, avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END) AS value, count(*) AS n FROM events \
                 WHERE ts >= now() - INTERVAL '{window}' AND ts < now() AND segment = '{segment}' GROUP BY model"
            ),
        ),
        2 => (
            "SEVERITY P2 WHEN value > 0.25".into(),
            format!(
                "SELECT model, drift_psi(feature_x, ts >= now() - INTERVAL '{window}') AS value, count(*) AS n FROM events \
                 WHERE ts >= now() - INTERVAL '1 day' AND ts < now() AND segment = '{segment}' GROUP BY model"
            ),
        ),
        3 => (
            "SEVERITY P1 WHEN value < 0.3".into(),
            format!(
                "SELECT model_version, avg(score_groundedness) AS value, count(score_groundedness) AS n FROM events \
                 WHERE ts >= now() - INTERVAL '{window}' AND ts < now() AND segment = '{segment}' GROUP BY model_version"
            ),
        ),
        _ => (
            "SEVERITY P2 WHEN value > 0.5".into(),
            format!(
                "SELECT drift_psi(feature_cat, ts >= now() - INTERVAL '{window}') AS value, count(*) AS n FROM events \
                 WHERE ts >= now() - INTERVAL '1 day' AND ts < now() AND segment = '{segment}'"
            ),
        ),
    }
}

pub(crate) async fn run(
    db: &Lookout,
    rules: usize,
    at: &str,
    concurrency: usize,
) -> anyhow::Result<()> {
    let at_micros = lookout_query::copy::parse_timestamp_micros(at)
        .with_context(|| format!("--at {at:?} is not a timestamp"))?;
    let engine = AlertEngine::start(
        db.clone(),
        AlertOptions {
            schedule: false,
            concurrency,
            ..Default::default()
        },
    )
    .await?;
    let mut session = db.session();
    for i in 0..rules {
        let (tiers, query) = rule_query(i);
        session
            .query(&format!(
                "CREATE ALERT IF NOT EXISTS bench_{i:05} EVERY '1 minute' {tiers} MIN SAMPLES 20 AS {query}"
            ))
            .await?;
    }
    let names: Vec<String> = (0..rules).map(|i| format!("bench_{i:05}")).collect();

    // Bare queries first (also warms the file cache for both).
    let started = Instant::now();
    let bare: Vec<anyhow::Result<()>> = futures::stream::iter((0..rules).map(|i| {
        let db = db.clone();
        async move {
            let mut s = db.session();
            s.query(&format!("SET lookout.now = '{at}'")).await?;
            s.query(&rule_query(i).1).await?;
            Ok(())
        }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    bare.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let bare_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let evaluated: Vec<anyhow::Result<usize>> = futures::stream::iter(names.iter().map(|name| {
        let engine = engine.clone();
        async move { Ok(engine.evaluate(name, at_micros).await?) }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    let instances: usize = evaluated
        .into_iter()
        .collect::<anyhow::Result<Vec<usize>>>()?
        .into_iter()
        .sum();
    let eval_secs = started.elapsed().as_secs_f64();

    let firing = session
        .query("SELECT count(*) FROM lookout.alert_instances WHERE state = 'firing' AND rule LIKE 'bench_%'")
        .await?;
    println!(
        "{{\"rules\": {rules}, \"concurrency\": {concurrency}, \"instances\": {instances}, \
         \"evaluate_s\": {eval_secs:.3}, \"evaluations_per_s\": {:.1}, \
         \"bare_queries_s\": {bare_secs:.3}, \"queries_per_s\": {:.1}, \"overhead_ratio\": {:.3}, \
         \"firing\": \"{}\"}}",
        rules as f64 / eval_secs,
        rules as f64 / bare_secs,
        eval_secs / bare_secs,
        arrow::util::pretty::pretty_format_batches(&firing)?
            .to_string()
            .lines()
            .nth(3)
            .unwrap_or("")
            .trim_matches(|c| c == '|' || c == ' '),
    );
    for name in &names {
        session
            .query(&format!("DROP ALERT IF EXISTS {name}"))
            .await?;
    }
    engine.shutdown().await;
    Ok(())
}
