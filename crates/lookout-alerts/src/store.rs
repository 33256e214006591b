//! Where the alert engine keeps its state: ordinary Lookout tables in the
//! `lookout` schema, written and read with SQL only.
//!
//! Everything is appended, never updated. One evaluation of one rule is one
//! `INSERT` into `lookout.alert_log` (the state of every instance, the
//! evaluation's outcome and the notifications it queued), so a crash keeps
//! all of it or none of it. The views the users query are defined here.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use lookout_query::Lookout;

use crate::error::{AlertError, Result};
use crate::rule::Micros;

/// Tables, created at start if missing.
pub(crate) const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS lookout.alert_rules (
        ts TIMESTAMPTZ NOT NULL, name TEXT NOT NULL, version BIGINT NOT NULL,
        action TEXT NOT NULL, paused BOOLEAN NOT NULL, definition TEXT NOT NULL,
        every TEXT, for_duration TEXT, keep_firing_for TEXT, severities TEXT,
        recover TEXT, min_samples BIGINT, labels TEXT, delay TEXT, repeat_every TEXT,
        notify TEXT, query TEXT
    ) WITH (time_column = 'ts', partition_column = 'none', bucket = '30 days')",
    "CREATE TABLE IF NOT EXISTS lookout.alert_log (
        ts TIMESTAMPTZ NOT NULL, kind TEXT NOT NULL, rule TEXT NOT NULL,
        rule_version BIGINT NOT NULL, fingerprint TEXT, labels TEXT,
        previous_state TEXT, state TEXT, severity TEXT, value DOUBLE PRECISION,
        n BIGINT, threshold DOUBLE PRECISION, active_at TIMESTAMPTZ,
        fired_at TIMESTAMPTZ, keep_firing_since TIMESTAMPTZ, resolved_at TIMESTAMPTZ,
        last_sent_at TIMESTAMPTZ, missed BIGINT, notification TEXT, target TEXT,
        payload TEXT, detail TEXT, recorded_at TIMESTAMPTZ NOT NULL, baseline_to TIMESTAMPTZ
    ) WITH (time_column = 'ts', partition_column = 'kind', bucket = '1 day', ttl = '{history_ttl}')",
    "CREATE TABLE IF NOT EXISTS lookout.alert_thresholds (
        ts TIMESTAMPTZ NOT NULL, rule TEXT NOT NULL, rule_version BIGINT NOT NULL,
        fingerprint TEXT NOT NULL, labels TEXT NOT NULL, severity TEXT NOT NULL,
        threshold DOUBLE PRECISION, mean DOUBLE PRECISION, stddev DOUBLE PRECISION,
        points BIGINT NOT NULL, baseline_from TIMESTAMPTZ, baseline_to TIMESTAMPTZ
    ) WITH (time_column = 'ts', partition_column = 'none', bucket = '30 days')",
    "CREATE TABLE IF NOT EXISTS lookout.alert_silences (
        ts TIMESTAMPTZ NOT NULL, id BIGINT NOT NULL, action TEXT NOT NULL,
        ends_at TIMESTAMPTZ NOT NULL, matchers TEXT NOT NULL, comment TEXT
    ) WITH (time_column = 'ts', partition_column = 'none', bucket = '30 days')",
];

/// Brings tables created by earlier versions up to date.
const MIGRATIONS: &[&str] =
    &["ALTER TABLE lookout.alert_log ADD COLUMN IF NOT EXISTS baseline_to TIMESTAMPTZ"];

/// Views over the tables: (name, query).
pub(crate) const VIEWS: &[(&str, &str)] = &[
    (
        "alerts",
        "SELECT r.name, r.paused, r.every, r.for_duration, r.keep_firing_for, r.severities,
                r.recover, r.min_samples, r.labels, r.delay, r.repeat_every, r.notify,
                r.query, r.ts AS created_at,
                e.ts AS last_evaluation, e.state AS health, e.detail AS last_error,
                e.value AS last_duration_ms,
                c.state AS calibration, c.value AS calibration_progress,
                c.detail AS calibration_warning
         FROM (SELECT *, row_number() OVER (PARTITION BY name ORDER BY ts DESC) AS rn
               FROM lookout.alert_rules) r
         LEFT JOIN (SELECT rule, rule_version, ts, state, detail, value,
                           row_number() OVER (PARTITION BY rule, rule_version ORDER BY ts DESC, recorded_at DESC) AS rn
                    FROM lookout.alert_log WHERE kind = 'evaluation') e
           ON e.rule = r.name AND e.rule_version = r.version AND e.rn = 1
         LEFT JOIN (SELECT rule, rule_version, state, detail, value,
                           row_number() OVER (PARTITION BY rule, rule_version ORDER BY recorded_at DESC) AS rn
                    FROM lookout.alert_log WHERE kind = 'calibration') c
           ON c.rule = r.name AND c.rule_version = r.version AND c.rn = 1
         WHERE r.rn = 1 AND r.action <> 'drop'",
    ),
    (
        "alert_instances",
        "SELECT s.rule, s.fingerprint, s.labels, s.state, s.severity, s.value, s.n,
                s.threshold, s.active_at, s.fired_at, s.resolved_at, s.last_sent_at,
                s.ts AS evaluated_at,
                CASE WHEN s.state IN ('firing', 'recovering') THEN s.fired_at
                     WHEN s.state = 'pending' THEN s.active_at END AS since
         FROM lookout.alert_log s
         JOIN (SELECT rule, rule_version, max(ts) AS ts FROM lookout.alert_log
               WHERE kind = 'evaluation' GROUP BY rule, rule_version) e
           ON s.rule = e.rule AND s.rule_version = e.rule_version AND s.ts = e.ts
         JOIN (SELECT name, version, action,
                      row_number() OVER (PARTITION BY name ORDER BY ts DESC) AS rn
               FROM lookout.alert_rules) r
           ON r.name = s.rule AND r.version = s.rule_version AND r.rn = 1 AND r.action <> 'drop'
         WHERE s.kind = 'state'",
    ),
    (
        "alert_history",
        "SELECT ts, rule, fingerprint, labels, previous_state, state, severity, value, n,
                threshold, notification, recorded_at
         FROM lookout.alert_log WHERE kind = 'state'",
    ),
    (
        "alert_notifications",
        "SELECT q.ts, q.rule, q.target, q.notification, q.payload, q.detail AS id,
                d.recorded_at AS delivered_at, d.state AS delivery
         FROM lookout.alert_log q
         LEFT JOIN (SELECT detail, state, recorded_at FROM lookout.alert_log WHERE kind = 'delivery') d
           ON d.detail = q.detail
         WHERE q.kind = 'notification'",
    ),
];

/// One row of `lookout.alert_log`; fields left at their default are NULL
/// (empty text) or 0.
#[derive(Debug, Default)]
pub(crate) struct LogRow<'a> {
    pub(crate) ts: Micros,
    pub(crate) kind: &'a str,
    pub(crate) rule: &'a str,
    pub(crate) rule_version: Micros,
    pub(crate) fingerprint: Option<&'a str>,
    pub(crate) labels: Option<String>,
    pub(crate) previous_state: Option<&'a str>,
    pub(crate) state: Option<&'a str>,
    pub(crate) severity: Option<&'a str>,
    pub(crate) value: Option<f64>,
    pub(crate) n: Option<i64>,
    pub(crate) threshold: Option<f64>,
    pub(crate) active_at: Option<Micros>,
    pub(crate) fired_at: Option<Micros>,
    pub(crate) keep_firing_since: Option<Micros>,
    pub(crate) resolved_at: Option<Micros>,
    pub(crate) last_sent_at: Option<Micros>,
    pub(crate) missed: Option<i64>,
    pub(crate) notification: Option<&'a str>,
    pub(crate) target: Option<&'a str>,
    pub(crate) payload: Option<&'a str>,
    pub(crate) detail: Option<&'a str>,
    pub(crate) recorded_at: Micros,
    /// Calibration rows: the end of the baseline window.
    pub(crate) baseline_to: Option<Micros>,
}

impl LogRow<'_> {
    /// The rows as named columns of `lookout.alert_log`.
    fn columns(rows: &[LogRow<'_>]) -> Vec<(&'static str, ArrayRef)> {
        fn texts<'b>(values: impl Iterator<Item = Option<&'b str>>) -> ArrayRef {
            Arc::new(values.collect::<StringArray>())
        }
        fn times(values: impl Iterator<Item = Option<Micros>>) -> ArrayRef {
            Arc::new(values.collect::<TimestampMicrosecondArray>())
        }
        fn ints(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
            Arc::new(values.collect::<Int64Array>())
        }
        fn floats(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
            Arc::new(values.collect::<Float64Array>())
        }
        let r = || rows.iter();
        vec![
            ("ts", times(r().map(|r| Some(r.ts)))),
            ("kind", texts(r().map(|r| Some(r.kind)))),
            ("rule", texts(r().map(|r| Some(r.rule)))),
            ("rule_version", ints(r().map(|r| Some(r.rule_version)))),
            ("fingerprint", texts(r().map(|r| r.fingerprint))),
            ("labels", texts(r().map(|r| r.labels.as_deref()))),
            ("previous_state", texts(r().map(|r| r.previous_state))),
            ("state", texts(r().map(|r| r.state))),
            ("severity", texts(r().map(|r| r.severity))),
            ("value", floats(r().map(|r| r.value))),
            ("n", ints(r().map(|r| r.n))),
            ("threshold", floats(r().map(|r| r.threshold))),
            ("active_at", times(r().map(|r| r.active_at))),
            ("fired_at", times(r().map(|r| r.fired_at))),
            ("keep_firing_since", times(r().map(|r| r.keep_firing_since))),
            ("resolved_at", times(r().map(|r| r.resolved_at))),
            ("last_sent_at", times(r().map(|r| r.last_sent_at))),
            ("missed", ints(r().map(|r| r.missed))),
            ("notification", texts(r().map(|r| r.notification))),
            ("target", texts(r().map(|r| r.target))),
            ("payload", texts(r().map(|r| r.payload))),
            ("detail", texts(r().map(|r| r.detail))),
            ("recorded_at", times(r().map(|r| Some(r.recorded_at)))),
            ("baseline_to", times(r().map(|r| r.baseline_to))),
        ]
    }
}

/// Appends rows to `lookout.alert_log` in one write: all or none survive a
/// crash. Written as a batch, not an `INSERT`: every evaluation appends, and
/// parsing and planning a statement was a fifth of an evaluation's time.
pub(crate) async fn append_log(db: &Lookout, rows: &[LogRow<'_>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let schema = db
        .storage()
        .table(LOG_TABLE)
        .and_then(|def| def.schema())
        .map_err(|e| AlertError::Query(e.into()))?;
    let columns = LogRow::columns(rows);
    let arrays = schema
        .fields()
        .iter()
        .map(
            |field| match columns.iter().find(|(name, _)| name == field.name()) {
                Some((_, values)) => cast(values, field.data_type()).map_err(arrow_err),
                None => Ok(arrow::array::new_null_array(field.data_type(), rows.len())),
            },
        )
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(schema, arrays).map_err(arrow_err)?;
    db.write(LOG_TABLE, batch).await?;
    Ok(())
}

/// Where evaluations, transitions and deliveries are logged.
const LOG_TABLE: &str = "lookout.alert_log";

/// Creates the tables and registers the views.
pub(crate) async fn install(db: &Lookout, history_ttl: Micros) -> Result<()> {
    let mut session = db.session();
    let ttl = format!("{} seconds", (history_ttl / 1_000_000).max(1));
    for sql in TABLES {
        session.query(&sql.replace("{history_ttl}", &ttl)).await?;
    }
    // Columns added since the table was first created.
    for sql in MIGRATIONS {
        session.query(sql).await?;
    }
    for (name, sql) in VIEWS {
        db.register_view(name, sql);
    }
    Ok(())
}

/// A SQL string literal.
pub(crate) fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL string literal or NULL.
pub(crate) fn opt_text(s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".into(), text)
}

/// A timestamptz literal.
pub(crate) fn timestamp(micros: Micros) -> String {
    let mut s = String::new();
    lookout_query::format::push_timestamp(&mut s, micros, true);
    format!("'{s}'")
}

/// A float literal, or NULL for NULL, NaN and infinities.
pub(crate) fn float(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:?}"),
        _ => "NULL".into(),
    }
}

/// An integer literal or NULL.
pub(crate) fn int(v: Option<i64>) -> String {
    v.map_or_else(|| "NULL".into(), |v| v.to_string())
}

/// Labels as a JSON object, keys in the query's order.
pub(crate) fn labels_json(labels: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Labels back from [`labels_json`].
pub(crate) fn parse_labels(json: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Column access by name over query results, NULL-aware.
pub(crate) struct Rows {
    batches: Vec<RecordBatch>,
}

impl Rows {
    pub(crate) async fn query(db: &Lookout, sql: &str) -> Result<Rows> {
        Ok(Rows {
            batches: db.sql(sql).await?,
        })
    }

    /// Every row as (batch, index).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&RecordBatch, usize)> {
        self.batches
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(move |i| (b, i)))
    }
}

/// Row `i` of column `name` as a one-row array of `to`: a cast of one
/// value, not of the column, since rows are read one at a time.
fn cell(batch: &RecordBatch, i: usize, name: &str, to: &DataType) -> Result<ArrayRef> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| AlertError::InvalidQuery(format!("missing column {name}")))?;
    cast(&column.slice(i, 1), to).map_err(arrow_err)
}

pub(crate) fn get_text(batch: &RecordBatch, i: usize, name: &str) -> Result<Option<String>> {
    let col = cell(batch, i, name, &DataType::Utf8)?;
    let col = col.as_string::<i32>();
    Ok(col.is_valid(0).then(|| col.value(0).to_string()))
}

pub(crate) fn get_f64(batch: &RecordBatch, i: usize, name: &str) -> Result<Option<f64>> {
    let col = cell(batch, i, name, &DataType::Float64)?;
    let col = col.as_primitive::<Float64Type>();
    Ok(col.is_valid(0).then(|| col.value(0)))
}

pub(crate) fn get_i64(batch: &RecordBatch, i: usize, name: &str) -> Result<Option<i64>> {
    let col = cell(batch, i, name, &DataType::Int64)?;
    let col = col.as_primitive::<Int64Type>();
    Ok(col.is_valid(0).then(|| col.value(0)))
}

pub(crate) fn get_bool(batch: &RecordBatch, i: usize, name: &str) -> Result<Option<bool>> {
    let col = cell(batch, i, name, &DataType::Boolean)?;
    let col = col.as_boolean();
    Ok(col.is_valid(0).then(|| col.value(0)))
}

pub(crate) fn get_ts(batch: &RecordBatch, i: usize, name: &str) -> Result<Option<Micros>> {
    let col = cell(
        batch,
        i,
        name,
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )?;
    let col = col.as_primitive::<TimestampMicrosecondType>();
    Ok(col.is_valid(0).then(|| col.value(0)))
}

pub(crate) fn arrow_err(e: arrow::error::ArrowError) -> AlertError {
    AlertError::InvalidQuery(e.to_string())
}
