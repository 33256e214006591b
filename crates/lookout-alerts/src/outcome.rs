//! What one evaluation decided, as functions of the rule, its instances and
//! the changes its query brought: which events are notified (webhook now, P2
//! in the digest), what Alertmanager is told, and which rows the alert log
//! gets. The engine (`engine.rs`) runs the query, calls these, then records
//! and sends the result in that order.

use std::collections::{BTreeMap, HashMap};

use crate::evaluation::{Change, full_labels};
use crate::notify::{self, AlertMessage, Delivery, Target, fingerprint};
use crate::rule::{Micros, RuleDef, Severity};
use crate::state::{Event, Instance, State, query_failed};
use crate::store::{self, LogRow};

/// How long a resolved alert keeps being re-sent to Alertmanager.
const RESOLVED_RETENTION: Micros = 15 * 60_000_000;
/// Minimum gap between re-posts of firing alerts to Alertmanager.
pub(crate) const ALERTMANAGER_RESEND: Micros = 60_000_000;

/// The changes are keyed by instance fingerprint.
pub(crate) type ChangesByFingerprint<'a> = HashMap<&'a str, &'a Change>;

/// A silence: instances whose labels hold all its matchers are not
/// notified until it ends.
#[derive(Debug, Clone)]
pub(crate) struct Silence {
    pub(crate) id: i64,
    pub(crate) ends_at: Micros,
    pub(crate) matchers: Vec<(String, String)>,
}

impl Silence {
    pub(crate) fn mutes(&self, labels: &[(String, String)], at: Micros) -> bool {
        at < self.ends_at && self.matchers.iter().all(|m| labels.iter().any(|l| l == m))
    }
}

/// The rule's health (`ok`, `nodata`, `error`), the query's error, and the
/// instances' changes. A failed query changes no instance but counts as a
/// missed evaluation for each.
pub(crate) fn health(
    outcome: crate::error::Result<Vec<Change>>,
    instances: &mut BTreeMap<String, Instance>,
) -> (&'static str, Option<String>, Vec<Change>) {
    match outcome {
        Ok(changes) if instances.is_empty() => ("nodata", None, changes),
        Ok(changes) => ("ok", None, changes),
        Err(e) => {
            let changes = instances
                .iter_mut()
                .map(|(fp, inst)| {
                    let s = query_failed(inst);
                    Change {
                        fingerprint: fp.clone(),
                        from: s.from,
                        from_severity: s.from_severity,
                        event: None,
                    }
                })
                .collect();
            ("error", Some(e.to_string()), changes)
        }
    }
}

/// Notifications of one evaluation's events.
#[derive(Debug, Default)]
pub(crate) struct Routed {
    /// Messages sent now, per webhook target (P1, P3 and P2 resolutions).
    pub(crate) webhook: BTreeMap<String, Vec<AlertMessage>>,
    /// P2 events, per target, for the next digest.
    pub(crate) digest: Vec<(String, AlertMessage)>,
    /// What each instance with an event was told (the event, or `silenced`).
    pub(crate) notified: HashMap<String, &'static str>,
}

/// Routes each instance's event to its severity's webhook targets, unless a
/// silence mutes it; marks the notified instances as sent at `ts`.
pub(crate) fn route(
    def: &RuleDef,
    instances: &mut BTreeMap<String, Instance>,
    changes: &ChangesByFingerprint<'_>,
    silences: &[Silence],
    ts: Micros,
) -> Routed {
    let mut routed = Routed::default();
    for (fp, inst) in instances.iter_mut() {
        let Some(event) = changes.get(fp.as_str()).and_then(|c| c.event) else {
            continue;
        };
        let labels = full_labels(def, &inst.labels);
        if silences.iter().any(|s| s.mutes(&labels, ts)) {
            routed.notified.insert(fp.clone(), "silenced");
            continue;
        }
        let severity = inst.severity.unwrap_or(Severity::P2);
        let message = message(def, inst, fp, ts, None);
        for url in def.targets(severity) {
            if let Ok(Target::Webhook(url)) = Target::parse(url) {
                if severity == Severity::P2 && event != Event::Resolved {
                    routed.digest.push((url, message.clone()));
                } else if severity != Severity::P2 {
                    routed.webhook.entry(url).or_default().push(message.clone());
                }
            }
        }
        inst.last_sent_at = Some(ts);
        routed.notified.insert(fp.clone(), event.as_str());
    }
    routed
}

/// The rule's Alertmanager URLs, over all its tiers.
pub(crate) fn alertmanager_targets(def: &RuleDef) -> Vec<String> {
    all_targets(def)
        .into_iter()
        .filter_map(|t| match Target::parse(&t) {
            Ok(Target::Alertmanager(url)) => Some(url),
            _ => None,
        })
        .collect()
}

/// What Alertmanager is told: every active alert (valid for four periods),
/// alerts resolved in the last `RESOLVED_RETENTION`, and the end of a tier
/// an instance has just left; silenced instances are left out.
pub(crate) fn alertmanager_alerts(
    def: &RuleDef,
    instances: &BTreeMap<String, Instance>,
    changes: &ChangesByFingerprint<'_>,
    silences: &[Silence],
    ts: Micros,
) -> Vec<AlertMessage> {
    let valid_until = ts + 4 * def.every.max(ALERTMANAGER_RESEND);
    let mut alerts = Vec::new();
    for (fp, inst) in instances {
        let labels = full_labels(def, &inst.labels);
        if silences.iter().any(|s| s.mutes(&labels, ts)) {
            continue;
        }
        if inst.state.is_active() {
            alerts.push(message(def, inst, fp, ts, Some(valid_until)));
        } else if inst
            .resolved_at
            .is_some_and(|r| ts - r <= RESOLVED_RETENTION)
        {
            alerts.push(message(def, inst, fp, ts, None));
        }
        // The alert of a tier left behind ends now.
        if let Some(c) = changes.get(fp.as_str())
            && c.from.is_active()
            && c.from_severity.is_some()
            && c.from_severity != inst.severity
        {
            let mut old = inst.clone();
            old.severity = c.from_severity;
            old.state = State::Resolved;
            old.resolved_at = Some(ts);
            alerts.push(message(def, &old, fp, ts, None));
        }
    }
    alerts
}

/// One delivery per webhook target, with an id stable across retries (rule,
/// version, instant, target), tagged `firing` or `resolved`.
pub(crate) fn webhook_deliveries(
    def: &RuleDef,
    version: Micros,
    ts: Micros,
    webhook: BTreeMap<String, Vec<AlertMessage>>,
) -> Vec<(&'static str, Delivery)> {
    webhook
        .into_iter()
        .map(|(url, alerts)| {
            let id = format!(
                "{}:{version}:{ts}:{}",
                def.name,
                fingerprint(&[("target".into(), url.clone())])
            );
            let body = notify::webhook_body(&def.name, &alerts);
            let firing = alerts.iter().any(|a| a.status == "firing");
            let delivery = Delivery {
                id,
                target: url,
                body,
                attempts: 0,
                next_at: tokio::time::Instant::now(),
            };
            (if firing { "firing" } else { "resolved" }, delivery)
        })
        .collect()
}

/// The same evaluation's log: `state` rows, then `notification` and
/// `digest` rows. Quiet instances (inactive, unchanged) are most of them
/// and say nothing: only the others are recorded, which is also all a
/// restart needs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn log_rows<'a>(
    def: &'a RuleDef,
    version: Micros,
    instances: &'a BTreeMap<String, Instance>,
    changes: &ChangesByFingerprint<'_>,
    routed: &'a Routed,
    deliveries: &'a [(&'static str, Delivery)],
    digest: &'a [(String, String, String)],
    (ts, recorded): (Micros, Micros),
) -> Vec<LogRow<'a>> {
    let mut log = Vec::new();
    for (fp, inst) in instances {
        let change = changes.get(fp.as_str());
        let quiet =
            inst.state == State::Inactive && change.is_none_or(|c| c.from == State::Inactive);
        if quiet {
            continue;
        }
        log.push(LogRow {
            ts,
            kind: "state",
            rule: &def.name,
            rule_version: version,
            fingerprint: Some(fp),
            labels: Some(store::labels_json(&inst.labels)),
            previous_state: Some(change.map_or(inst.state, |c| c.from).as_str()),
            state: Some(inst.state.as_str()),
            severity: inst.severity.map(Severity::as_str),
            value: inst.value,
            n: inst.n,
            threshold: inst.threshold,
            active_at: inst.active_at,
            fired_at: inst.fired_at,
            keep_firing_since: inst.keep_firing_since,
            resolved_at: inst.resolved_at,
            last_sent_at: inst.last_sent_at,
            missed: Some(i64::from(inst.missed)),
            notification: routed.notified.get(fp).copied(),
            recorded_at: recorded,
            ..Default::default()
        });
    }
    for (kind, d) in deliveries {
        log.push(LogRow {
            ts,
            kind: "notification",
            rule: &def.name,
            rule_version: version,
            notification: Some(kind),
            target: Some(&d.target),
            payload: Some(&d.body),
            detail: Some(&d.id),
            recorded_at: recorded,
            ..Default::default()
        });
    }
    for (url, entry, fp) in digest {
        log.push(LogRow {
            ts,
            kind: "digest",
            rule: &def.name,
            rule_version: version,
            fingerprint: Some(fp),
            severity: Some("P2"),
            target: Some(url),
            payload: Some(entry),
            recorded_at: recorded,
            ..Default::default()
        });
    }
    log
}

pub(crate) fn all_targets(def: &RuleDef) -> Vec<String> {
    let mut all: Vec<String> = def.notify.clone();
    for t in &def.tiers {
        all.extend(t.notify.iter().cloned());
    }
    all.sort();
    all.dedup();
    all
}

pub(crate) fn message(
    def: &RuleDef,
    inst: &Instance,
    fp: &str,
    ts: Micros,
    valid_until: Option<Micros>,
) -> AlertMessage {
    let mut labels = full_labels(def, &inst.labels);
    let severity = inst.severity.map_or("none", Severity::as_str);
    labels.insert(1, ("severity".to_string(), severity.to_string()));
    let firing = inst.state.is_active();
    let mut annotations = vec![(
        "summary".to_string(),
        format!(
            "{}: value {} (threshold {}, n = {})",
            def.name,
            inst.value.map_or("-".to_string(), |v| format!("{v}")),
            inst.threshold.map_or("-".to_string(), |v| format!("{v}")),
            inst.n.map_or("-".to_string(), |v| v.to_string()),
        ),
    )];
    if let Some(v) = inst.value {
        annotations.push(("value".to_string(), format!("{v}")));
    }
    if let Some(t) = inst.threshold {
        annotations.push(("threshold".to_string(), format!("{t}")));
    }
    if let Some(n) = inst.n {
        annotations.push(("n".to_string(), n.to_string()));
    }
    AlertMessage {
        status: if firing { "firing" } else { "resolved" },
        labels,
        annotations,
        starts_at: inst.fired_at.unwrap_or(ts),
        ends_at: if firing {
            valid_until
        } else {
            inst.resolved_at.or(Some(ts))
        },
        fingerprint: fp.to_string(),
    }
}
