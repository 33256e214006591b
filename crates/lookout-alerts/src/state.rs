//! The state machine of one alert instance (one label set of one rule).
//!
//! It follows Prometheus's `rules/alerting.go` for pending/firing and
//! `keep_firing_for`, Grafana's Recovering state, hysteresis and stale
//! series, and treats severity as an attribute of Firing: moving between
//! tiers is an escalation or de-escalation, not a new alert.

use std::collections::HashMap;

use crate::rule::{Micros, RuleDef, Severity, Threshold};

/// Where an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not breaching (Grafana's Normal).
    Inactive,
    /// Breaching, waiting out `FOR`.
    Pending,
    /// Firing at a severity.
    Firing,
    /// Recovered, kept firing for `KEEP FIRING FOR`.
    Recovering,
    /// Was firing; its last evaluation had no usable row. Still firing to
    /// receivers (keep last state) until it resolves as stale.
    NoData,
    /// Was firing; the rule's query failed. Still firing to receivers.
    Error,
    /// Just resolved: shown once, then inactive.
    Resolved,
}

impl State {
    /// Lowercase name, as the system tables show it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Recovering => "recovering",
            State::NoData => "nodata",
            State::Error => "error",
            State::Resolved => "resolved",
        }
    }

    /// Parses [`State::as_str`]'s output.
    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "inactive" => State::Inactive,
            "pending" => State::Pending,
            "firing" => State::Firing,
            "recovering" => State::Recovering,
            "nodata" => State::NoData,
            "error" => State::Error,
            "resolved" => State::Resolved,
            _ => return None,
        })
    }

    /// Whether the outside world sees the alert as firing.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            State::Firing | State::Recovering | State::NoData | State::Error
        )
    }
}

/// A notification an evaluation produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Started firing.
    Firing,
    /// Moved to a more urgent tier.
    Escalated,
    /// Still firing; `REPEAT EVERY` elapsed since the last notification.
    Repeat,
    /// Stopped firing.
    Resolved,
}

impl Event {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Firing => "firing",
            Event::Escalated => "escalated",
            Event::Repeat => "repeat",
            Event::Resolved => "resolved",
        }
    }
}

/// One alert instance and its timers.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Labels from the query's label columns, in column order.
    pub labels: Vec<(String, String)>,
    /// Current state.
    pub state: State,
    /// Tier while pending or firing.
    pub severity: Option<Severity>,
    /// When the current breach began.
    pub active_at: Option<Micros>,
    /// When it started firing (the notification's `startsAt`).
    pub fired_at: Option<Micros>,
    /// When recovery began, while recovering.
    pub keep_firing_since: Option<Micros>,
    /// When it last resolved.
    pub resolved_at: Option<Micros>,
    /// When a webhook notification was last sent.
    pub last_sent_at: Option<Micros>,
    /// Consecutive evaluations without a usable row.
    pub missed: u32,
    /// Last value.
    pub value: Option<f64>,
    /// Last row count.
    pub n: Option<i64>,
    /// The threshold the value was compared with (the breached tier's, or
    /// the least urgent tier's when none breached).
    pub threshold: Option<f64>,
}

impl Instance {
    /// A new instance, not yet breaching.
    pub fn new(labels: Vec<(String, String)>) -> Instance {
        Instance {
            labels,
            state: State::Inactive,
            severity: None,
            active_at: None,
            fired_at: None,
            keep_firing_since: None,
            resolved_at: None,
            last_sent_at: None,
            missed: 0,
            value: None,
            n: None,
            threshold: None,
        }
    }
}

/// One row of the rule's result for an instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The `value` column (NULL rows are not observations).
    pub value: f64,
    /// The `n` column, if the query has one.
    pub n: Option<i64>,
}

/// Calibrated thresholds: (fingerprint, severity) → threshold.
pub type Calibrated = HashMap<(String, Severity), f64>;

/// What one evaluation did to an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// State before.
    pub from: State,
    /// Severity before.
    pub from_severity: Option<Severity>,
    /// Notification to send, if any.
    pub event: Option<Event>,
}

/// Evaluations an instance may miss before a firing one resolves as stale.
pub const STALE_AFTER: u32 = 2;

/// The most urgent tier `value` breaches, and the threshold compared with.
pub fn breach(
    rule: &RuleDef,
    calibrated: &Calibrated,
    fingerprint: &str,
    value: f64,
) -> (Option<Severity>, Option<f64>) {
    let mut last = None;
    for tier in &rule.tiers {
        let threshold = match tier.threshold {
            Threshold::Fixed(t) => Some(t),
            Threshold::Baseline { .. } => calibrated
                .get(&(fingerprint.to_string(), tier.severity))
                .copied(),
        };
        let Some(threshold) = threshold else {
            continue;
        };
        if tier.op.holds(value, threshold) {
            return (Some(tier.severity), Some(threshold));
        }
        last = Some(threshold);
    }
    (None, last)
}

/// Advances `inst` by one evaluation at `ts`; `obs` is `None` when the
/// instance had no row (or a NULL value).
pub fn step(
    rule: &RuleDef,
    calibrated: &Calibrated,
    fingerprint: &str,
    inst: &mut Instance,
    obs: Option<Observation>,
    ts: Micros,
) -> Step {
    let from = inst.state;
    let from_severity = inst.severity;
    let mut event = None;
    if inst.state == State::Resolved {
        inst.state = State::Inactive;
    }
    let usable = obs.filter(|o| match (rule.min_samples, o.n) {
        (Some(min), Some(n)) => n >= min,
        (Some(_), None) => false,
        (None, _) => true,
    });
    if let Some(o) = obs {
        inst.value = Some(o.value);
        inst.n = o.n;
    } else {
        inst.value = None;
        inst.n = None;
    }
    match usable {
        None => {
            inst.missed += 1;
            match inst.state {
                State::Pending => {
                    inst.state = State::Inactive;
                    inst.severity = None;
                    inst.active_at = None;
                }
                s if s.is_active() && inst.missed >= STALE_AFTER => {
                    resolve(inst, ts);
                    event = Some(Event::Resolved);
                }
                s if s.is_active() => inst.state = State::NoData,
                _ => {}
            }
        }
        Some(o) => {
            inst.missed = 0;
            // Data again: carry on from where the alert was.
            if matches!(inst.state, State::NoData | State::Error) {
                inst.state = if inst.keep_firing_since.is_some() {
                    State::Recovering
                } else {
                    State::Firing
                };
            }
            let (breached, threshold) = breach(rule, calibrated, fingerprint, o.value);
            inst.threshold = threshold;
            let recovered = match rule.recover {
                Some(r) => r.op.holds(o.value, r.value),
                None => breached.is_none(),
            };
            match (inst.state, breached) {
                (State::Inactive, Some(sev)) => {
                    inst.active_at = Some(ts);
                    inst.severity = Some(sev);
                    inst.state = State::Pending;
                    if rule.for_ == 0 {
                        fire(inst, ts);
                        event = Some(Event::Firing);
                    }
                }
                (State::Inactive, None) => {}
                (State::Pending, Some(sev)) => {
                    inst.severity = Some(sev);
                    if ts - inst.active_at.unwrap_or(ts) >= rule.for_ {
                        fire(inst, ts);
                        event = Some(Event::Firing);
                    }
                }
                (State::Pending, None) => {
                    inst.state = State::Inactive;
                    inst.severity = None;
                    inst.active_at = None;
                }
                (State::Firing | State::Recovering, Some(sev)) => {
                    let escalated = inst.severity.is_none_or(|s| sev.more_urgent_than(s));
                    inst.severity = Some(sev);
                    inst.state = State::Firing;
                    inst.keep_firing_since = None;
                    if escalated {
                        event = Some(Event::Escalated);
                    }
                }
                (State::Firing, None) if recovered => {
                    if rule.keep_firing_for > 0 {
                        inst.state = State::Recovering;
                        inst.keep_firing_since = Some(ts);
                    } else {
                        resolve(inst, ts);
                        event = Some(Event::Resolved);
                    }
                }
                (State::Recovering, None)
                    if ts - inst.keep_firing_since.unwrap_or(ts) >= rule.keep_firing_for =>
                {
                    resolve(inst, ts);
                    event = Some(Event::Resolved);
                }
                // Inside the hysteresis band, or still inside KEEP FIRING FOR.
                (State::Firing | State::Recovering, None) => {}
                (State::NoData | State::Error | State::Resolved, _) => {}
            }
        }
    }
    if event.is_none()
        && inst.state.is_active()
        && inst
            .last_sent_at
            .is_some_and(|sent| ts - sent >= rule.repeat_every)
    {
        event = Some(Event::Repeat);
    }
    Step {
        from,
        from_severity,
        event,
    }
}

/// The rule's query failed at `ts`: firing instances show `error` and keep
/// firing (Grafana's keep-last-state); the others are left as they are.
pub fn query_failed(inst: &mut Instance) -> Step {
    let from = inst.state;
    if inst.state.is_active() {
        inst.state = State::Error;
    }
    Step {
        from,
        from_severity: inst.severity,
        event: None,
    }
}

fn fire(inst: &mut Instance, ts: Micros) {
    inst.state = State::Firing;
    inst.fired_at = Some(ts);
    inst.keep_firing_since = None;
    inst.resolved_at = None;
}

fn resolve(inst: &mut Instance, ts: Micros) {
    inst.state = State::Resolved;
    inst.resolved_at = Some(ts);
    inst.keep_firing_since = None;
    inst.active_at = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::{AlertStatement, parse};

    fn rule(clauses: &str) -> RuleDef {
        let sql = format!("CREATE ALERT r EVERY '1 minute' {clauses} AS SELECT 1 AS value");
        match parse(&sql).expect("parses") {
            AlertStatement::Create { rule, .. } => rule,
            other => panic!("{other:?}"),
        }
    }

    const MIN: Micros = 60_000_000;

    /// Feeds values one minute apart; returns (state, severity, event) per step.
    fn run(
        rule: &RuleDef,
        values: &[Option<f64>],
    ) -> Vec<(State, Option<Severity>, Option<Event>)> {
        let mut inst = Instance::new(vec![]);
        let cal = Calibrated::new();
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let ts = i as i64 * MIN;
                let s = step(
                    rule,
                    &cal,
                    "f",
                    &mut inst,
                    v.map(|value| Observation {
                        value,
                        n: Some(100),
                    }),
                    ts,
                );
                if s.event.is_some() {
                    inst.last_sent_at = Some(ts);
                }
                (inst.state, inst.severity, s.event)
            })
            .collect()
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let r = rule("FOR '2 minutes' SEVERITY P1 WHEN value > 10");
        let got = run(
            &r,
            &[Some(1.0), Some(11.0), Some(12.0), Some(13.0), Some(5.0)],
        );
        assert_eq!(
            got,
            vec![
                (State::Inactive, None, None),
                (State::Pending, Some(Severity::P1), None),
                (State::Pending, Some(Severity::P1), None),
                (State::Firing, Some(Severity::P1), Some(Event::Firing)),
                (State::Resolved, Some(Severity::P1), Some(Event::Resolved)),
            ]
        );
    }

    #[test]
    fn pending_that_stops_breaching_is_dropped_silently() {
        let r = rule("FOR '5 minutes' SEVERITY P1 WHEN value > 10");
        let got = run(&r, &[Some(11.0), Some(1.0), Some(11.0)]);
        assert_eq!(got[1], (State::Inactive, None, None));
        assert_eq!(got[2], (State::Pending, Some(Severity::P1), None));
    }

    #[test]
    fn escalation_notifies_and_de_escalation_does_not() {
        let r = rule("SEVERITY P0 WHEN value > 100, SEVERITY P1 WHEN value > 10");
        let got = run(&r, &[Some(50.0), Some(150.0), Some(50.0), Some(1.0)]);
        assert_eq!(
            got,
            vec![
                (State::Firing, Some(Severity::P1), Some(Event::Firing)),
                (State::Firing, Some(Severity::P0), Some(Event::Escalated)),
                (State::Firing, Some(Severity::P1), None),
                (State::Resolved, Some(Severity::P1), Some(Event::Resolved)),
            ]
        );
    }

    #[test]
    fn hysteresis_keeps_firing_inside_the_band() {
        let r = rule("SEVERITY P1 WHEN value > 10 RECOVER WHEN value < 5");
        let got = run(&r, &[Some(11.0), Some(8.0), Some(7.0), Some(4.0)]);
        let states: Vec<State> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            states,
            vec![State::Firing, State::Firing, State::Firing, State::Resolved]
        );
    }

    #[test]
    fn keep_firing_for_and_back_to_firing_without_notification() {
        let r = rule("KEEP FIRING FOR '2 minutes' SEVERITY P1 WHEN value > 10");
        let got = run(
            &r,
            &[
                Some(11.0),
                Some(1.0),
                Some(12.0),
                Some(1.0),
                Some(1.0),
                Some(1.0),
            ],
        );
        assert_eq!(
            got.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(),
            vec![
                (State::Firing, Some(Event::Firing)),
                (State::Recovering, None),
                (State::Firing, None),
                (State::Recovering, None),
                (State::Recovering, None),
                (State::Resolved, Some(Event::Resolved)),
            ]
        );
    }

    #[test]
    fn missing_series_is_nodata_then_resolves_after_two_evaluations() {
        let r = rule("SEVERITY P1 WHEN value > 10");
        let got = run(&r, &[Some(11.0), None, None]);
        assert_eq!(got[1], (State::NoData, Some(Severity::P1), None));
        assert_eq!(
            got[2],
            (State::Resolved, Some(Severity::P1), Some(Event::Resolved))
        );
        // Data back in time: firing again, without a new notification.
        let got = run(&r, &[Some(11.0), None, Some(12.0)]);
        assert_eq!(got[2], (State::Firing, Some(Severity::P1), None));
    }

    #[test]
    fn a_failed_query_keeps_firing_instances_firing_as_error() {
        let r = rule("SEVERITY P1 WHEN value > 10");
        let mut inst = Instance::new(vec![]);
        let cal = Calibrated::new();
        let obs = |value| Some(Observation { value, n: None });
        step(&r, &cal, "f", &mut inst, obs(11.0), 0);
        query_failed(&mut inst);
        assert_eq!(inst.state, State::Error);
        assert!(inst.state.is_active());
        let s = step(&r, &cal, "f", &mut inst, obs(11.0), MIN);
        assert_eq!((inst.state, s.event), (State::Firing, None));
        let s = step(&r, &cal, "f", &mut inst, obs(1.0), 2 * MIN);
        assert_eq!(
            (inst.state, s.event),
            (State::Resolved, Some(Event::Resolved))
        );
        let mut quiet = Instance::new(vec![]);
        query_failed(&mut quiet);
        assert_eq!(quiet.state, State::Inactive);
    }

    #[test]
    fn too_few_samples_never_fire() {
        let r = rule("MIN SAMPLES 500 SEVERITY P1 WHEN value > 10");
        let got = run(&r, &[Some(11.0), Some(11.0)]);
        assert!(got.iter().all(|g| g.0 == State::Inactive));
    }

    #[test]
    fn repeats_after_repeat_every() {
        let r = rule("REPEAT EVERY '3 minutes' SEVERITY P1 WHEN value > 10");
        let got = run(&r, &[Some(11.0); 7]);
        let events: Vec<Option<Event>> = got.iter().map(|g| g.2).collect();
        assert_eq!(
            events,
            vec![
                Some(Event::Firing),
                None,
                None,
                Some(Event::Repeat),
                None,
                None,
                Some(Event::Repeat)
            ]
        );
    }
}
