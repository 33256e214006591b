//! One evaluation of a rule, apart from the engine: the rule's query run as
//! of an instant, its rows read as labelled values, and the instances' state
//! machines stepped with them. Back-tests and baselines use the same pieces.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use lookout_query::Lookout;

use crate::error::{AlertError, Result};
use crate::notify::fingerprint;
use crate::rule::{Micros, RuleDef, Severity};
use crate::state::{Calibrated, Event, Instance, Observation, State, step};
use crate::store::{self, timestamp};

/// Locks `m`, whatever a panicking holder left in it (the engine's state
/// stays usable; every change to it is logged before it is applied).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first multiple of `every` after `after`: rules run at aligned instants.
pub(crate) fn next_instant(every: Micros, after: Micros) -> Micros {
    (after.div_euclid(every) + 1) * every
}

/// Runs a rule's query with `now()` fixed to `at`.
pub(crate) async fn run_rule_query(
    db: &Lookout,
    def: &RuleDef,
    at: Micros,
) -> Result<Vec<ResultRow>> {
    let mut session = db.session();
    session
        .query(&format!("SET lookout.now = {}", timestamp(at)))
        .await?;
    let batches = session.query(&def.query).await?;
    result_rows(&batches)
}

fn result_rows(batches: &[RecordBatch]) -> Result<Vec<ResultRow>> {
    let mut out = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let value_idx = schema
            .fields()
            .iter()
            .position(|f| f.name() == "value")
            .ok_or_else(|| {
                AlertError::InvalidQuery("the rule's query must return a column named value".into())
            })?;
        let value = cast(batch.column(value_idx), &DataType::Float64)
            .map_err(|e| AlertError::InvalidQuery(format!("column value must be numeric: {e}")))?;
        let value = value.as_primitive::<Float64Type>();
        let n = match schema.fields().iter().position(|f| f.name() == "n") {
            Some(i) => Some(cast(batch.column(i), &DataType::Int64).map_err(|e| {
                AlertError::InvalidQuery(format!("column n must be an integer: {e}"))
            })?),
            None => None,
        };
        let mut labels = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if f.name() == "value" || f.name() == "n" {
                continue;
            }
            let col = cast(batch.column(i), &DataType::Utf8).map_err(store::arrow_err)?;
            labels.push((f.name().clone(), col));
        }
        for row in 0..batch.num_rows() {
            let v = value
                .is_valid(row)
                .then(|| value.value(row))
                .filter(|v| v.is_finite());
            let count = n.as_ref().and_then(|c| {
                let c = c.as_primitive::<Int64Type>();
                c.is_valid(row).then(|| c.value(row))
            });
            let row_labels = labels
                .iter()
                .map(|(name, col)| {
                    let col = col.as_string::<i32>();
                    let v = if col.is_valid(row) {
                        col.value(row)
                    } else {
                        ""
                    };
                    (name.clone(), v.to_string())
                })
                .collect();
            out.push(ResultRow {
                labels: row_labels,
                value: v,
                n: count,
            });
        }
    }
    Ok(out)
}

/// All labels of an instance: alertname, the rule's labels, the query's.
pub(crate) fn full_labels(def: &RuleDef, labels: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = vec![("alertname".to_string(), def.name.clone())];
    all.extend(def.labels.iter().cloned());
    all.extend(labels.iter().cloned());
    all
}

/// One instance's part of an evaluation.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) fingerprint: String,
    pub(crate) from: State,
    pub(crate) from_severity: Option<Severity>,
    pub(crate) event: Option<Event>,
}

/// Feeds one evaluation's rows to the instances; forgets instances that are
/// inactive and absent.
pub(crate) fn apply(
    def: &RuleDef,
    calibrated: &Calibrated,
    instances: &mut BTreeMap<String, Instance>,
    rows: Vec<ResultRow>,
    ts: Micros,
) -> Result<Vec<Change>> {
    let mut seen: HashMap<String, ResultRow> = HashMap::new();
    for row in rows {
        let fp = fingerprint(&full_labels(def, &row.labels));
        if seen.contains_key(&fp) {
            return Err(AlertError::InvalidQuery(format!(
                "the query returned two rows with the same labels {}; every label set must be unique",
                store::labels_json(&row.labels)
            )));
        }
        seen.insert(fp, row);
    }
    let mut changes = Vec::new();
    for (fp, row) in &seen {
        instances
            .entry(fp.clone())
            .or_insert_with(|| Instance::new(row.labels.clone()));
    }
    for (fp, inst) in instances.iter_mut() {
        let obs = seen
            .get(fp)
            .and_then(|r| r.value.map(|value| Observation { value, n: r.n }));
        let s = step(def, calibrated, fp, inst, obs, ts);
        changes.push(Change {
            fingerprint: fp.clone(),
            from: s.from,
            from_severity: s.from_severity,
            event: s.event,
        });
    }
    instances.retain(|fp, inst| inst.state != State::Inactive || seen.contains_key(fp));
    Ok(changes)
}

/// One row of a rule's result.
#[derive(Debug, Clone)]
pub(crate) struct ResultRow {
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: Option<f64>,
    pub(crate) n: Option<i64>,
}
