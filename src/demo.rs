//! Demo data: 7 days of LLM inference events ending now, with the incidents
//! a monitoring system should catch.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int8Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use lookout_query::Lookout;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, LogNormal, Normal};

const MODELS: &[(&str, &[&str], f64, f64)] = &[
    // name, versions, share, median latency ms
    (
        "orion-large",
        &["orion-large@3.0", "orion-large@3.1"],
        0.37,
        1800.0,
    ),
    (
        "orion-mini",
        &["orion-mini@2.4", "orion-mini@2.5"],
        0.18,
        900.0,
    ),
    ("vega-70b", &["vega-70b@1.2"], 0.12, 2400.0),
    ("lyra-pro", &["lyra-pro@5.0", "lyra-pro@5.1"], 0.09, 1500.0),
    ("vega-8b", &["vega-8b@1.1"], 0.07, 450.0),
    ("nova-chat", &["nova-chat@0.9"], 0.06, 1200.0),
    ("lyra-flash", &["lyra-flash@1.0"], 0.06, 600.0),
    ("nova-code", &["nova-code@2.2"], 0.05, 3100.0),
];
const SEGMENTS: &[&str] = &[
    "ent-finance",
    "ent-health",
    "ent-retail",
    "smb",
    "self-serve",
    "internal-eval",
];
const REGIONS: &[&str] = &["us-east", "us-west", "eu-west", "ap-south", "sa-east"];

const CREATE: &str = "CREATE TABLE IF NOT EXISTS events (
    ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, model_version TEXT, segment TEXT, region TEXT,
    request_id TEXT, latency_ms DOUBLE PRECISION, prompt_tokens INT, completion_tokens INT,
    cost_usd DOUBLE PRECISION, status TEXT, feature_x DOUBLE PRECISION, feature_cat TEXT,
    score_relevance DOUBLE PRECISION, score_groundedness DOUBLE PRECISION, feedback SMALLINT)";

fn pick<'a>(rng: &mut StdRng, items: &'a [&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// Loads `rows` demo events into `events`, unless it already holds rows.
pub(crate) async fn load(db: &Lookout, rows: usize) -> anyhow::Result<()> {
    db.sql(CREATE).await?;
    let existing = db.sql("SELECT count(*) FROM events").await?;
    let count = existing
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0);
    if count > 0 {
        tracing::info!(
            rows = count,
            "demo table events already has rows; not generating more"
        );
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp_micros();
    let start = now - 7 * 86_400_000_000;
    let mut rng = StdRng::seed_from_u64(42);
    let unit: Normal<f64> = Normal::new(0.0, 1.0)?;
    let good = Beta::new(8.0, 1.5)?;
    let bad = Beta::new(3.0, 2.5)?;
    let relevance = Beta::new(9.0, 2.0)?;
    let tokens = LogNormal::new(180f64.ln(), 0.6)?;
    let prompt = LogNormal::new(600f64.ln(), 0.8)?;
    let mut batch_rows = Vec::with_capacity(rows);
    for i in 0..rows {
        let ts = start
            + (i as i64) * (7 * 86_400_000_000 / rows as i64)
            + rng.random_range(0..1_000_000);
        let mut u: f64 = rng.random();
        let mut m = 0;
        while m + 1 < MODELS.len() && u > MODELS[m].2 {
            u -= MODELS[m].2;
            m += 1;
        }
        let (model, versions, _, median) = MODELS[m];
        let version = pick(&mut rng, versions);
        let age = now - ts;
        let last_day = age < 86_400_000_000;
        let completion = tokens.sample(&mut rng).clamp(1.0, 8192.0);
        let mut latency =
            median * (completion / 180.0).sqrt() * (0.5 * unit.sample(&mut rng)).exp();
        // Incident: orion-mini regressed 39 hours ago (+40% latency).
        if model == "orion-mini" && age < 39 * 3_600_000_000 {
            latency *= 1.4;
        }
        // Incident: vega-8b rate limited for 30 minutes, 10 hours ago.
        let limited_window =
            (10 * 3_600_000_000 - 1_800_000_000..10 * 3_600_000_000).contains(&age);
        let status = if model == "vega-8b" && limited_window && rng.random::<f64>() < 0.25 {
            "rate_limited"
        } else {
            match rng.random::<f64>() {
                x if x < 0.013 => "error",
                x if x < 0.017 => "timeout",
                x if x < 0.021 => "rate_limited",
                _ => "ok",
            }
        };
        if status == "timeout" {
            latency = 30_000.0;
        }
        // Incident: vega-70b input drift in the last day (+0.5 sd).
        let shift = if model == "vega-70b" && last_day {
            0.5
        } else {
            0.0
        };
        let feature_x = m as f64 * 0.3 + shift + unit.sample(&mut rng);
        let cat = if last_day && rng.random::<f64>() < 0.2 {
            7
        } else {
            rng.random_range(0..10)
        };
        let evaluated = status == "ok" && rng.random::<f64>() < 0.2;
        // Incident: orion-large@3.1 answers got less grounded in the last day.
        let groundedness = evaluated.then(|| {
            if version == "orion-large@3.1" && last_day {
                bad.sample(&mut rng)
            } else {
                good.sample(&mut rng)
            }
        });
        let feedback = (rng.random::<f64>() < 0.03).then(|| {
            let p_up = if status == "ok" { 0.8 } else { 0.3 }
                - if groundedness.is_some_and(|g| g < 0.5) {
                    0.4
                } else {
                    0.0
                };
            if rng.random::<f64>() < p_up {
                1i8
            } else {
                -1i8
            }
        });
        batch_rows.push(DemoRow {
            ts,
            model,
            version,
            segment: pick(&mut rng, SEGMENTS),
            region: pick(&mut rng, REGIONS),
            request_id: format!("{:016x}", rng.random::<u64>()),
            latency_ms: latency.clamp(1.0, 120_000.0),
            prompt_tokens: prompt.sample(&mut rng).clamp(1.0, 128_000.0) as i32,
            completion_tokens: if status == "ok" { completion as i32 } else { 0 },
            status,
            feature_x,
            feature_cat: format!("cat_{cat}"),
            relevance: evaluated.then(|| relevance.sample(&mut rng)),
            groundedness,
            feedback,
        });
    }
    let batch = to_batch(&batch_rows)?;
    let rows = db
        .storage()
        .bulk_load("events", futures::stream::iter([Ok(batch)]))
        .await?;
    tracing::info!(rows, "generated demo events for the 7 days ending now");
    db.sql(GROUND_TRUTH).await?;
    db.sql(ROLLUP).await?;
    db.sql(SAMPLED).await?;
    // Rows are decided a WINDOW after they arrive.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    db.sql("DECIDE SAMPLING ON traces").await?;
    tracing::info!("created the demo's feedback table, hourly rollup and sampled traces");
    Ok(())
}

/// Ground truth for the demo events, in the versioned `feedback` table of
/// docs/ground-truth.md: users' thumbs (a few minutes after the call), the
/// judge's groundedness scores, and reviewers' verdicts on thumbs-down
/// calls, which arrive a day late.
const GROUND_TRUTH: &str = "
CREATE TABLE IF NOT EXISTS feedback (
  ts TIMESTAMPTZ NOT NULL, request_id TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,
  value DOUBLE PRECISION, label TEXT, author TEXT, deleted BOOLEAN
) WITH (key = 'request_id, source, kind', version = 'ts', deleted = 'deleted');
INSERT INTO feedback
SELECT ts + INTERVAL '3 minutes', request_id, 'user', 'thumbs', CAST(feedback AS DOUBLE PRECISION),
       NULL, NULL, NULL
FROM events WHERE feedback IS NOT NULL AND ts < now() - INTERVAL '3 minutes';
INSERT INTO feedback
SELECT ts + INTERVAL '1 minute', request_id, 'judge', 'score', score_groundedness,
       'groundedness', 'judge-v1', NULL
FROM events WHERE score_groundedness IS NOT NULL AND ts < now() - INTERVAL '1 minute';
INSERT INTO feedback
SELECT ts + INTERVAL '1 day', request_id, 'review', 'verdict',
       CASE WHEN status = 'ok' AND coalesce(score_groundedness, 1) >= 0.5 THEN 1.0 ELSE 0.0 END,
       CASE WHEN status <> 'ok' THEN 'failed call' WHEN score_groundedness < 0.5 THEN 'ungrounded' ELSE 'fine' END,
       'reviewer-1', NULL
FROM events WHERE feedback < 0 AND ts < now() - INTERVAL '1 day';
";

/// The hourly statistics the docs read (`events_hourly`), built from the
/// generated rows and kept up to date as rows arrive.
const ROLLUP: &str = "
CREATE ROLLUP IF NOT EXISTS events_hourly ON events GROUP BY model, segment EVERY '1 hour'
  AS (count(*), quantile_sketch(latency_ms), score_state(score_groundedness, 0.7),
      sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors);
";

/// `traces`: the last two days of calls with their prompt sizes, sampled
/// at ingest as docs/sampling.md describes (every failed call, 5 % of the
/// rest with at least 5 per model and hour); `sample_weight` stands for the
/// calls dropped.
const SAMPLED: &str = "
CREATE TABLE IF NOT EXISTS traces (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, request_id TEXT,
  status TEXT, latency_ms DOUBLE PRECISION, prompt_tokens INT, completion_tokens INT);
ALTER TABLE traces SET SAMPLING (KEY request_id, SEGMENT BY (model), RATE 0.05,
  MINIMUM 5 PER HOUR, KEEP WHEN status <> 'ok', WINDOW '1 second');
INSERT INTO traces SELECT ts, model, request_id, status, latency_ms, prompt_tokens, completion_tokens
FROM events WHERE ts >= now() - INTERVAL '2 days';
";

/// A review queue of the calls users rated down (needs the review queues
/// running).
const REVIEW: &str = "
CREATE REVIEW QUEUE IF NOT EXISTS triage ON events KEY request_id;
ENQUEUE INTO triage SELECT request_id FROM feedback
WHERE source = 'user' AND kind = 'thumbs' AND value < 0 ORDER BY ts;
";

/// Creates the demo's review queue and fills it (once: items already
/// queued are skipped).
pub(crate) async fn create_review_queue(db: &Lookout) -> anyhow::Result<()> {
    db.sql(REVIEW).await?;
    Ok(())
}

struct DemoRow {
    ts: i64,
    model: &'static str,
    version: &'static str,
    segment: &'static str,
    region: &'static str,
    request_id: String,
    latency_ms: f64,
    prompt_tokens: i32,
    completion_tokens: i32,
    status: &'static str,
    feature_x: f64,
    feature_cat: String,
    relevance: Option<f64>,
    groundedness: Option<f64>,
    feedback: Option<i8>,
}

fn to_batch(rows: &[DemoRow]) -> anyhow::Result<RecordBatch> {
    let cost = |r: &DemoRow| {
        (r.prompt_tokens as f64 * 1.0 + r.completion_tokens as f64 * 4.0) / 1_000_000.0
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "ts",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.ts))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "model",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.model))),
        ),
        (
            "model_version",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.version),
            )),
        ),
        (
            "segment",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.segment),
            )),
        ),
        (
            "region",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.region))),
        ),
        (
            "request_id",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.request_id.as_str()),
            )),
        ),
        (
            "latency_ms",
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.latency_ms),
            )),
        ),
        (
            "prompt_tokens",
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.prompt_tokens),
            )),
        ),
        (
            "completion_tokens",
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.completion_tokens),
            )),
        ),
        (
            "cost_usd",
            Arc::new(Float64Array::from_iter_values(rows.iter().map(cost))),
        ),
        (
            "status",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.status))),
        ),
        (
            "feature_x",
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.feature_x),
            )),
        ),
        (
            "feature_cat",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.feature_cat.as_str()),
            )),
        ),
        (
            "score_relevance",
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.relevance))),
        ),
        (
            "score_groundedness",
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.groundedness))),
        ),
        (
            "feedback",
            Arc::new(Int8Array::from_iter(rows.iter().map(|r| r.feedback))),
        ),
    ];
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// Alert rules over the demo events (states in `lookout.alert_instances`;
/// no notification targets).
const ALERTS: &str = "
CREATE ALERT IF NOT EXISTS feature_drift EVERY '5 minutes'
  SEVERITY P2 WHEN value > 0.1 MIN SAMPLES 500
AS SELECT model, drift_psi(feature_x, ts >= now() - INTERVAL '1 day') AS value, count(*) AS n
   FROM events WHERE ts >= now() - INTERVAL '2 days' AND ts < now() GROUP BY model;
CREATE ALERT IF NOT EXISTS groundedness EVERY '1 minute' FOR '5 minutes'
  SEVERITY P1 WHEN value < 0.7 RECOVER WHEN value > 0.75 MIN SAMPLES 30
AS SELECT model_version, avg(score_groundedness) AS value, count(score_groundedness) AS n
   FROM events WHERE ts >= now() - INTERVAL '6 hours' AND ts < now() GROUP BY model_version;
CREATE ALERT IF NOT EXISTS rate_limited EVERY '1 minute'
  SEVERITY P0 WHEN value > 0.1 MIN SAMPLES 20
AS SELECT model, avg(CASE WHEN status = 'rate_limited' THEN 1.0 ELSE 0.0 END) AS value, count(*) AS n
   FROM events WHERE ts >= now() - INTERVAL '15 minutes' AND ts < now() GROUP BY model;
";

/// Creates the demo's alert rules (once).
pub(crate) async fn create_alerts(db: &Lookout) -> anyhow::Result<()> {
    db.sql(ALERTS).await?;
    Ok(())
}
