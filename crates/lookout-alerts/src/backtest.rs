//! BACKTEST: a rule replayed over history with fresh state.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;

use crate::engine::AlertEngine;
use crate::error::{AlertError, Result};
use crate::evaluation::{apply, lock, run_rule_query};
use crate::rule::{Micros, Severity};
use crate::state::{Event, Instance, State};

impl AlertEngine {
    /// Replays rule `name` over `[from, to]` with fresh state and returns
    /// every transition and notification it would have produced.
    pub async fn backtest(
        &self,
        name: &str,
        from: Micros,
        to: Micros,
        step_by: Option<Micros>,
    ) -> Result<Vec<BacktestRow>> {
        let (def, calibrated) = {
            let rules = lock(&self.inner.rules);
            let r = rules
                .get(name)
                .ok_or_else(|| AlertError::NotFound(name.to_string()))?;
            (r.def.clone(), r.calibrated.clone())
        };
        let step_by = step_by.unwrap_or(def.every);
        let count = (to - from) / step_by + 1;
        if count > 1_000_000 {
            return Err(AlertError::InvalidValue(format!(
                "BACKTEST would evaluate {count} instants; use a larger STEP (at most 1,000,000)"
            )));
        }
        let db = self.inner.db.clone();
        let mut results = futures::stream::iter((0..count).map(|i| {
            let db = db.clone();
            let def = def.clone();
            let ts = from + i * step_by;
            async move { (ts, run_rule_query(&db, &def, ts - def.delay).await) }
        }))
        .buffered(self.inner.options.concurrency.max(1));
        let mut instances = BTreeMap::new();
        let mut out = Vec::new();
        let mut sent = 0i64;
        while let Some((ts, rows)) = results.next().await {
            // Instances that go quiet are forgotten by `apply`; keep their labels.
            let before: HashMap<String, Vec<(String, String)>> = instances
                .iter()
                .map(|(fp, i): (&String, &Instance)| (fp.clone(), i.labels.clone()))
                .collect();
            let changes = apply(&def, &calibrated, &mut instances, rows?, ts)?;
            for c in changes {
                let inst = instances.get_mut(&c.fingerprint);
                let (state, severity, value, n, threshold, labels) = match &inst {
                    Some(i) => (
                        i.state,
                        i.severity,
                        i.value,
                        i.n,
                        i.threshold,
                        i.labels.clone(),
                    ),
                    None => (
                        State::Inactive,
                        None,
                        None,
                        None,
                        None,
                        before.get(&c.fingerprint).cloned().unwrap_or_default(),
                    ),
                };
                if let (Some(_), Some(i)) = (c.event, inst) {
                    i.last_sent_at = Some(ts);
                    sent += 1;
                }
                if c.from != state
                    || c.event.is_some()
                    || c.from_severity != severity && state.is_active()
                {
                    out.push(BacktestRow {
                        ts,
                        labels,
                        from: c.from,
                        to: state,
                        severity,
                        value,
                        n,
                        threshold,
                        notification: c.event,
                        notifications: sent,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// One line of a back-test.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestRow {
    /// Evaluation instant.
    pub ts: Micros,
    /// The instance's labels.
    pub labels: Vec<(String, String)>,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Severity after.
    pub severity: Option<Severity>,
    /// Value.
    pub value: Option<f64>,
    /// Row count.
    pub n: Option<i64>,
    /// Threshold compared with.
    pub threshold: Option<f64>,
    /// Notification this step sent.
    pub notification: Option<Event>,
    /// Notifications sent so far in the back-test.
    pub notifications: i64,
}
