//! The alert engine: keeps the rules, restores them at start, evaluates
//! them on schedule through SQL and records each evaluation in one write.
//! Starting is in `start.rs`, one evaluation's pieces in `evaluation.rs`
//! (the query and the state machine) and `outcome.rs` (what is notified and
//! logged), delivery in `delivery.rs`, baselines in `baseline.rs`,
//! back-tests in `backtest.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lookout_query::Lookout;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{info, warn};

use crate::error::{AlertError, Result};
use crate::evaluation::{apply, lock, next_instant, run_rule_query};
use crate::notify::{self, AlertMessage, Delivery, digest_entry};
use crate::outcome::{self, ALERTMANAGER_RESEND, ChangesByFingerprint, Silence};
use crate::rule::{Micros, RuleDef, Severity};
use crate::state::{Calibrated, Instance, State};
use crate::store::{self, LogRow, Rows};

/// Tunables of the alert engine.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// Rules evaluated at the same time.
    pub concurrency: usize,
    /// Period of the P2 digest.
    pub digest_every: Micros,
    /// Whether to evaluate on schedule (off for one-shot commands).
    pub schedule: bool,
    /// How long the alert log (history, evaluations, deliveries) is kept;
    /// applied when the log table is created.
    pub history_ttl: Micros,
    /// Test failpoint: abort the process between a delivery and its record
    /// (the binary sets it from `LOOKOUT_FAILPOINT=crash-after-delivery`,
    /// for the at-least-once test).
    pub crash_after_delivery: bool,
}

impl Default for AlertOptions {
    fn default() -> Self {
        AlertOptions {
            concurrency: 2,
            digest_every: 7 * 86_400_000_000,
            schedule: true,
            history_ttl: 90 * 86_400_000_000,
            crash_after_delivery: false,
        }
    }
}

#[derive(Debug)]
pub(crate) struct RuleState {
    pub(crate) def: RuleDef,
    pub(crate) version: Micros,
    pub(crate) paused: bool,
    pub(crate) instances: BTreeMap<String, Instance>,
    pub(crate) calibrated: Calibrated,
    next_due: Micros,
    running: bool,
    last_alertmanager_post: Micros,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) db: Lookout,
    pub(crate) options: AlertOptions,
    pub(crate) rules: Mutex<BTreeMap<String, RuleState>>,
    pub(crate) silences: Mutex<Vec<Silence>>,
    pub(crate) outbox: Mutex<VecDeque<Delivery>>,
    pub(crate) outbox_wake: Notify,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) idle: Notify,
    pub(crate) last_version: AtomicI64,
    /// The highest silence id given so far.
    pub(crate) last_silence_id: AtomicI64,
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(crate) metrics: crate::metrics::AlertMetrics,
}

/// The alert engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    pub(crate) inner: Arc<Inner>,
}

impl AlertEngine {
    /// Now, by the database's clock (see `lookout_storage::clock`).
    pub(crate) fn now_micros(&self) -> Micros {
        self.inner.db.storage().clock().now_micros()
    }

    /// Stops evaluating; waits for evaluations and the delivery in progress.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        self.inner.outbox_wake.notify_waiters();
        // The loops first: once they have exited, nothing new starts.
        let tasks: Vec<_> = lock(&self.inner.tasks).drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
        loop {
            let idle = self.inner.idle.notified();
            if self.inner.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), idle).await;
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// A strictly increasing clock (µs): rule versions and the order of rule changes.
    pub(crate) fn new_version(&self) -> Micros {
        let now = self.now_micros();
        let prev = self.inner.last_version.fetch_max(now, Ordering::SeqCst);
        if prev >= now {
            self.inner.last_version.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            now
        }
    }

    pub(crate) async fn restore(&self) -> Result<()> {
        let db = &self.inner.db;
        let rows = Rows::query(
            db,
            "SELECT name, version, action, paused, definition FROM lookout.alert_rules ORDER BY ts",
        )
        .await?;
        let mut rules: BTreeMap<String, RuleState> = BTreeMap::new();
        let now = self.now_micros();
        for (b, i) in rows.iter() {
            let name = store::get_text(b, i, "name")?.unwrap_or_default();
            let version = store::get_i64(b, i, "version")?.unwrap_or_default();
            self.inner.last_version.fetch_max(version, Ordering::SeqCst);
            let action = store::get_text(b, i, "action")?.unwrap_or_default();
            if action == "drop" {
                rules.remove(&name);
                continue;
            }
            let definition = store::get_text(b, i, "definition")?.unwrap_or_default();
            let paused = store::get_bool(b, i, "paused")?.unwrap_or(false);
            let def = match crate::grammar::parse(&definition) {
                Ok(crate::grammar::AlertStatement::Create { rule, .. }) => rule,
                other => {
                    warn!(rule = %name, "stored alert definition does not parse: {other:?}");
                    continue;
                }
            };
            let keep = rules.get(&name).filter(|r| r.version == version);
            let (instances, calibrated) = match keep {
                Some(r) => (r.instances.clone(), r.calibrated.clone()),
                None => (BTreeMap::new(), Calibrated::new()),
            };
            rules.insert(
                name,
                RuleState {
                    next_due: next_instant(def.every, now),
                    def,
                    version,
                    paused,
                    instances,
                    calibrated,
                    running: false,
                    last_alertmanager_post: 0,
                },
            );
        }
        let thresholds = Rows::query(
            db,
            "SELECT t.rule, t.rule_version, t.fingerprint, t.severity, t.threshold
             FROM lookout.alert_thresholds t
             JOIN (SELECT rule, rule_version, max(ts) AS ts FROM lookout.alert_thresholds
                   GROUP BY rule, rule_version) l
               ON t.rule = l.rule AND t.rule_version = l.rule_version AND t.ts = l.ts",
        )
        .await?;
        for (b, i) in thresholds.iter() {
            let name = store::get_text(b, i, "rule")?.unwrap_or_default();
            let version = store::get_i64(b, i, "rule_version")?;
            if let Some(r) = rules.get_mut(&name).filter(|r| Some(r.version) == version)
                && let (Some(fp), Some(sev), Some(t)) = (
                    store::get_text(b, i, "fingerprint")?,
                    store::get_text(b, i, "severity")?.and_then(|s| Severity::parse(&s)),
                    store::get_f64(b, i, "threshold")?,
                )
            {
                r.calibrated.insert((fp, sev), t);
            }
        }
        let states = Rows::query(
            db,
            "SELECT s.* FROM lookout.alert_log s
             JOIN (SELECT rule, rule_version, max(ts) AS ts FROM lookout.alert_log
                   WHERE kind = 'evaluation' GROUP BY rule, rule_version) e
               ON s.rule = e.rule AND s.rule_version = e.rule_version AND s.ts = e.ts
             WHERE s.kind = 'state'",
        )
        .await?;
        for (b, i) in states.iter() {
            let name = store::get_text(b, i, "rule")?.unwrap_or_default();
            let version = store::get_i64(b, i, "rule_version")?;
            let Some(r) = rules.get_mut(&name).filter(|r| Some(r.version) == version) else {
                continue;
            };
            let Some(fp) = store::get_text(b, i, "fingerprint")? else {
                continue;
            };
            let labels = store::parse_labels(&store::get_text(b, i, "labels")?.unwrap_or_default());
            let mut inst = Instance::new(labels);
            inst.state = store::get_text(b, i, "state")?
                .and_then(|s| State::parse(&s))
                .unwrap_or(State::Inactive);
            inst.severity = store::get_text(b, i, "severity")?.and_then(|s| Severity::parse(&s));
            inst.value = store::get_f64(b, i, "value")?;
            inst.n = store::get_i64(b, i, "n")?;
            inst.threshold = store::get_f64(b, i, "threshold")?;
            inst.active_at = store::get_ts(b, i, "active_at")?;
            inst.fired_at = store::get_ts(b, i, "fired_at")?;
            inst.keep_firing_since = store::get_ts(b, i, "keep_firing_since")?;
            inst.resolved_at = store::get_ts(b, i, "resolved_at")?;
            inst.last_sent_at = store::get_ts(b, i, "last_sent_at")?;
            inst.missed = store::get_i64(b, i, "missed")?
                .unwrap_or(0)
                .clamp(0, 1 << 20) as u32;
            r.instances.insert(fp, inst);
        }
        let pending = Rows::query(
            db,
            "SELECT detail AS id, target, payload FROM lookout.alert_log
             WHERE kind = 'notification'
               AND detail NOT IN (SELECT detail FROM lookout.alert_log WHERE kind = 'delivery')
             ORDER BY recorded_at, detail",
        )
        .await?;
        let mut outbox = VecDeque::new();
        for (b, i) in pending.iter() {
            if let (Some(id), Some(target), Some(body)) = (
                store::get_text(b, i, "id")?,
                store::get_text(b, i, "target")?,
                store::get_text(b, i, "payload")?,
            ) {
                outbox.push_back(Delivery {
                    id,
                    target,
                    body,
                    attempts: 0,
                    next_at: tokio::time::Instant::now(),
                });
            }
        }
        let calibrations = Rows::query(
            db,
            "SELECT rule, rule_version, state, baseline_to FROM (
                SELECT rule, rule_version, state, baseline_to,
                       row_number() OVER (PARTITION BY rule, rule_version ORDER BY recorded_at DESC) AS rn
                FROM lookout.alert_log WHERE kind = 'calibration') c
             WHERE rn = 1",
        )
        .await?;
        let mut resume: Vec<(String, Micros)> = rules
            .iter()
            .filter(|(_, r)| r.def.has_baseline())
            .map(|(name, _)| (name.clone(), now))
            .collect();
        for (b, i) in calibrations.iter() {
            let name = store::get_text(b, i, "rule")?.unwrap_or_default();
            let version = store::get_i64(b, i, "rule_version")?;
            if rules.get(&name).is_none_or(|r| Some(r.version) != version) {
                continue;
            }
            let state = store::get_text(b, i, "state")?.unwrap_or_default();
            let anchor = store::get_ts(b, i, "baseline_to")?.unwrap_or(now);
            match state.as_str() {
                "running" => {
                    if let Some(entry) = resume.iter_mut().find(|(n, _)| *n == name) {
                        entry.1 = anchor;
                    }
                }
                // Done, or failed (RECALIBRATE retries): nothing to resume.
                _ => resume.retain(|(n, _)| *n != name),
            }
        }
        let silences = Rows::query(
            db,
            "SELECT id, action, ends_at, matchers FROM lookout.alert_silences ORDER BY ts, id",
        )
        .await?;
        let mut active: Vec<Silence> = Vec::new();
        for (b, i) in silences.iter() {
            let id = store::get_i64(b, i, "id")?.unwrap_or_default();
            self.inner.last_silence_id.fetch_max(id, Ordering::SeqCst);
            if store::get_text(b, i, "action")?.as_deref() == Some("drop") {
                active.retain(|s| s.id != id);
                continue;
            }
            active.push(Silence {
                id,
                ends_at: store::get_ts(b, i, "ends_at")?.unwrap_or_default(),
                matchers: store::parse_labels(
                    &store::get_text(b, i, "matchers")?.unwrap_or_default(),
                ),
            });
        }
        if !rules.is_empty() || !outbox.is_empty() {
            info!(
                rules = rules.len(),
                undelivered = outbox.len(),
                "alert rules restored"
            );
        }
        *lock(&self.inner.rules) = rules;
        *lock(&self.inner.outbox) = outbox;
        *lock(&self.inner.silences) = active;
        for (name, anchor) in resume {
            info!(rule = %name, "resuming baseline calibration");
            self.spawn_calibration(name, anchor);
        }
        Ok(())
    }

    pub(crate) fn add_rule(&self, def: RuleDef, version: Micros) {
        let next_due = next_instant(def.every, self.now_micros());
        lock(&self.inner.rules).insert(
            def.name.clone(),
            RuleState {
                def,
                version,
                paused: false,
                instances: BTreeMap::new(),
                calibrated: Calibrated::new(),
                next_due,
                running: false,
                last_alertmanager_post: 0,
            },
        );
    }

    /// Pauses or resumes a rule; a resumed rule starts at its next instant
    /// (instants missed while paused are not caught up).
    pub(crate) fn set_paused(&self, name: &str, paused: bool) {
        if let Some(r) = lock(&self.inner.rules).get_mut(name) {
            r.paused = paused;
            r.next_due = next_instant(r.def.every, self.now_micros());
        }
    }

    pub(crate) async fn schedule_loop(self) {
        let permits = Arc::new(Semaphore::new(self.inner.options.concurrency.max(1)));
        let mut stop = self.inner.stop.subscribe();
        loop {
            if self.stopped() {
                break;
            }
            let now = self.now_micros();
            let mut due = Vec::new();
            let mut next_wake = now + 1_000_000;
            {
                let mut rules = lock(&self.inner.rules);
                for (name, r) in rules.iter_mut() {
                    if r.paused || r.running {
                        continue;
                    }
                    if r.next_due <= now {
                        due.push((name.clone(), r.next_due));
                        r.running = true;
                        // Instants missed while busy or down are skipped, as Prometheus does.
                        r.next_due = next_instant(r.def.every, now);
                    }
                    next_wake = next_wake.min(r.next_due);
                }
            }
            for (name, at) in due {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
                let engine = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = engine.evaluate(&name, at).await {
                        warn!(rule = %name, "alert evaluation not recorded: {e}");
                    }
                    if let Some(r) = lock(&engine.inner.rules).get_mut(&name) {
                        r.running = false;
                    }
                    drop(permit);
                    engine.done_in_flight();
                });
            }
            let wait = (next_wake - self.now_micros()).clamp(1_000, 1_000_000);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_micros(wait as u64)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    pub(crate) fn done_in_flight(&self) {
        if self.inner.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }

    /// Evaluates rule `name` at instant `ts`: runs its query with `now()` =
    /// `ts − DELAY`, advances every instance, records the evaluation in one
    /// write and queues the notifications. Returns the number of instances.
    pub async fn evaluate(&self, name: &str, ts: Micros) -> Result<usize> {
        let (def, version, mut instances, calibrated) = {
            let rules = lock(&self.inner.rules);
            let r = rules
                .get(name)
                .ok_or_else(|| AlertError::NotFound(name.to_string()))?;
            (
                r.def.clone(),
                r.version,
                r.instances.clone(),
                r.calibrated.clone(),
            )
        };
        let started = std::time::Instant::now();
        let outcome = match run_rule_query(&self.inner.db, &def, ts - def.delay).await {
            Ok(rows) => apply(&def, &calibrated, &mut instances, rows, ts),
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed().as_secs_f64();
        let elapsed_ms = elapsed * 1000.0;
        let recorded = self.now_micros();
        let (health, error, changes) = outcome::health(outcome, &mut instances);
        let metrics = &self.inner.metrics;
        metrics
            .evaluations
            .get_or_create(&[("health", health)])
            .inc();
        metrics.evaluation_seconds.observe(elapsed);
        // A back-dated evaluation (tests, `lookout.now`) has no lag to speak of.
        if recorded >= ts {
            metrics.evaluation_lag.observe((recorded - ts) as f64 / 1e6);
        }
        let by_fp: ChangesByFingerprint<'_> = changes
            .iter()
            .map(|c| (c.fingerprint.as_str(), c))
            .collect();
        let silences = lock(&self.inner.silences).clone();
        let mut routed = outcome::route(&def, &mut instances, &by_fp, &silences, ts);
        let alertmanager = self.alertmanager_posts(
            name,
            &def,
            &instances,
            &by_fp,
            &silences,
            !routed.notified.is_empty(),
            ts,
        );
        let deliveries =
            outcome::webhook_deliveries(&def, version, ts, std::mem::take(&mut routed.webhook));
        let digest: Vec<(String, String, String)> = routed
            .digest
            .iter()
            .map(|(url, alert)| (url.clone(), digest_entry(alert), alert.fingerprint.clone()))
            .collect();
        let mut log = outcome::log_rows(
            &def,
            version,
            &instances,
            &by_fp,
            &routed,
            &deliveries,
            &digest,
            (ts, recorded),
        );
        log.push(LogRow {
            ts,
            kind: "evaluation",
            rule: &def.name,
            rule_version: version,
            state: Some(health),
            value: Some(elapsed_ms),
            n: Some(instances.len() as i64),
            detail: error.as_deref(),
            recorded_at: recorded,
            ..Default::default()
        });
        let count = instances.len();
        // A rule dropped or replaced meanwhile keeps its new state.
        let current = lock(&self.inner.rules)
            .get(name)
            .is_some_and(|r| r.version == version);
        if !current {
            return Ok(count);
        }
        store::append_log(&self.inner.db, &log).await?;
        drop(log);
        if let Some(r) = lock(&self.inner.rules).get_mut(name)
            && r.version == version
        {
            r.instances = instances;
        }
        if !deliveries.is_empty() {
            lock(&self.inner.outbox).extend(deliveries.into_iter().map(|(_, d)| d));
            self.inner.outbox_wake.notify_one();
        }
        for (url, alerts) in alertmanager {
            let body = notify::alertmanager_body(&alerts);
            let posts = self.inner.metrics.alertmanager_posts.clone();
            tokio::spawn(async move {
                let result = notify::post(url, body).await;
                posts
                    .get_or_create(&crate::metrics::outcome(result.is_ok()))
                    .inc();
                if let Err(e) = result {
                    warn!("alertmanager push failed (re-sent at the next evaluation): {e}");
                }
            });
        }
        if let Some(e) = error {
            warn!(rule = %name, "alert rule evaluation failed: {e}");
        }
        Ok(count)
    }

    /// The Alertmanager posts of an evaluation: its alerts to each of the
    /// rule's Alertmanager targets when something was notified, else at
    /// most once per `ALERTMANAGER_RESEND` (Alertmanager forgets an alert
    /// not re-posted).
    #[allow(clippy::too_many_arguments)]
    fn alertmanager_posts(
        &self,
        name: &str,
        def: &RuleDef,
        instances: &BTreeMap<String, Instance>,
        changes: &ChangesByFingerprint<'_>,
        silences: &[Silence],
        notified: bool,
        ts: Micros,
    ) -> Vec<(String, Vec<AlertMessage>)> {
        let targets = outcome::alertmanager_targets(def);
        if targets.is_empty() {
            return Vec::new();
        }
        let last_post = lock(&self.inner.rules)
            .get(name)
            .map_or(0, |r| r.last_alertmanager_post);
        if !notified && ts - last_post < ALERTMANAGER_RESEND {
            return Vec::new();
        }
        let alerts = outcome::alertmanager_alerts(def, instances, changes, silences, ts);
        if let Some(r) = lock(&self.inner.rules).get_mut(name) {
            r.last_alertmanager_post = ts;
        }
        if alerts.is_empty() {
            return Vec::new();
        }
        targets
            .into_iter()
            .map(|url| (url, alerts.clone()))
            .collect()
    }
}

/// Displayed form of a tier list.
pub(crate) fn describe_tiers(def: &RuleDef) -> String {
    def.tiers
        .iter()
        .map(|t| {
            format!(
                "{} WHEN value {} {}",
                t.severity.as_str(),
                t.op.as_str(),
                t.threshold
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
