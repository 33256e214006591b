//! Delivering notifications: the outbox worker (webhooks, in order per
//! target, retried with backoff, each delivery recorded) and the P2 digest.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::warn;

use crate::engine::AlertEngine;
use crate::error::Result;
use crate::evaluation::{lock, next_instant};
use crate::notify::{self, Delivery, fingerprint};
use crate::rule::Micros;
use crate::store::{self, LogRow, Rows, timestamp};

impl AlertEngine {
    pub(crate) async fn delivery_loop(self) {
        let mut stop = self.inner.stop.subscribe();
        loop {
            // Only the first message per target may go; the rest wait for it.
            let next = {
                let outbox = lock(&self.inner.outbox);
                let mut heads: Vec<&str> = Vec::new();
                let mut next = None::<tokio::time::Instant>;
                for d in outbox.iter() {
                    if !heads.contains(&d.target.as_str()) {
                        heads.push(&d.target);
                        next = Some(next.map_or(d.next_at, |n| n.min(d.next_at)));
                    }
                }
                next
            };
            if self.stopped() {
                break;
            }
            let now = tokio::time::Instant::now();
            match next {
                Some(at) if at <= now => {
                    self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
                    self.deliver_due().await;
                    self.done_in_flight();
                }
                other => {
                    let wait = other.map_or(Duration::from_secs(3600), |at| at - now);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.inner.outbox_wake.notified() => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    /// Sends the first due delivery, in queue order per target.
    async fn deliver_due(&self) {
        let now = tokio::time::Instant::now();
        let item = {
            let outbox = lock(&self.inner.outbox);
            let mut blocked: Vec<&str> = Vec::new();
            let mut found = None;
            for d in outbox.iter() {
                if blocked.contains(&d.target.as_str()) {
                    continue;
                }
                if d.next_at <= now {
                    found = Some(d.clone());
                    break;
                }
                // A later message to the same target waits for this one.
                blocked.push(&d.target);
            }
            found
        };
        let Some(item) = item else {
            return;
        };
        let result = notify::post(item.target.clone(), item.body.clone()).await;
        if result.is_ok() && self.inner.options.crash_after_delivery {
            // For the at-least-once test: die between delivery and its record.
            std::process::abort();
        }
        let deliveries = &self.inner.metrics.deliveries;
        match &result {
            Ok(()) => deliveries.get_or_create(&[("outcome", "delivered")]).inc(),
            Err(_) if item.attempts + 1 >= 12 => {
                deliveries.get_or_create(&[("outcome", "failed")]).inc()
            }
            Err(_) => deliveries.get_or_create(&[("outcome", "retried")]).inc(),
        };
        let state = match &result {
            Ok(()) => Some("delivered"),
            Err(e) if item.attempts + 1 >= 12 => {
                warn!(target = %item.target, "notification dropped after 12 attempts: {e}");
                Some("failed")
            }
            Err(e) => {
                warn!(target = %item.target, attempt = item.attempts + 1, "notification not delivered, will retry: {e}");
                None
            }
        };
        match state {
            Some(state) => {
                let detail = result.err().map(|e| e.to_string());
                let now = self.now_micros();
                let row = LogRow {
                    ts: now,
                    kind: "delivery",
                    state: Some(state),
                    target: Some(&item.target),
                    payload: detail.as_deref(),
                    detail: Some(&item.id),
                    recorded_at: now,
                    ..Default::default()
                };
                if let Err(e) = store::append_log(&self.inner.db, &[row]).await {
                    warn!("delivery of {} not recorded: {e}", item.id);
                }
                lock(&self.inner.outbox).retain(|d| d.id != item.id);
            }
            None => {
                let mut outbox = lock(&self.inner.outbox);
                if let Some(d) = outbox.iter_mut().find(|d| d.id == item.id) {
                    d.attempts += 1;
                    // 2 s, 4 s, 8 s ... at most 5 minutes apart.
                    let backoff = Duration::from_secs((1u64 << d.attempts.min(9)).min(300));
                    d.next_at = tokio::time::Instant::now() + backoff;
                }
            }
        }
    }

    /// Sends the P2 digest at every multiple of `digest_every`.
    pub(crate) async fn digest_loop(self) {
        let every = self.inner.options.digest_every.max(1_000_000);
        let mut stop = self.inner.stop.subscribe();
        loop {
            let now = self.now_micros();
            let at = next_instant(every, now);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_micros((at - now).max(0) as u64)) => {}
                _ = stop.changed() => break,
            }
            self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = self.send_digest(at).await {
                warn!("P2 digest not sent: {e}");
            }
            self.done_in_flight();
        }
    }

    /// Queues one digest per target with the P2 alerts recorded since the
    /// previous digest.
    pub async fn send_digest(&self, at: Micros) -> Result<usize> {
        let rows = Rows::query(
            &self.inner.db,
            &format!(
                "SELECT target, payload FROM lookout.alert_log
                 WHERE kind = 'digest' AND ts <= {at}
                   AND ts > (SELECT coalesce(max(ts), TIMESTAMPTZ '1970-01-01 00:00:00+00')
                             FROM lookout.alert_log WHERE kind = 'digest_sent')
                 ORDER BY ts, rule",
                at = timestamp(at)
            ),
        )
        .await?;
        let mut per_target: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for (b, i) in rows.iter() {
            if let (Some(t), Some(p)) = (
                store::get_text(b, i, "target")?,
                store::get_text(b, i, "payload")?,
            ) && let Ok(v) = serde_json::from_str(&p)
            {
                per_target.entry(t).or_default().push(v);
            }
        }
        let recorded = self.now_micros();
        let mut deliveries = Vec::new();
        for (url, alerts) in &per_target {
            let id = format!(
                "digest:{at}:{}",
                fingerprint(&[("target".into(), url.clone())])
            );
            let body = serde_json::json!({
                "version": "4",
                "groupKey": "{}:{severity=\"P2\"}",
                "truncatedAlerts": 0,
                "status": "firing",
                "receiver": "lookout-digest",
                "groupLabels": {"severity": "P2"},
                "commonLabels": {"severity": "P2"},
                "commonAnnotations": {"summary": format!("Lookout P2 digest: {} alerts for review", alerts.len())},
                "externalURL": "",
                "alerts": alerts,
            })
            .to_string();
            deliveries.push(Delivery {
                id,
                target: url.clone(),
                body,
                attempts: 0,
                next_at: tokio::time::Instant::now(),
            });
        }
        if per_target.is_empty() {
            return Ok(0);
        }
        let mut log = vec![LogRow {
            ts: at,
            kind: "digest_sent",
            recorded_at: recorded,
            ..Default::default()
        }];
        log.extend(deliveries.iter().map(|d| LogRow {
            ts: at,
            kind: "notification",
            severity: Some("P2"),
            notification: Some("digest"),
            target: Some(&d.target),
            payload: Some(&d.body),
            detail: Some(&d.id),
            recorded_at: recorded,
            ..Default::default()
        }));
        store::append_log(&self.inner.db, &log).await?;
        drop(log);
        let sent = deliveries.len();
        lock(&self.inner.outbox).extend(deliveries);
        self.inner.outbox_wake.notify_one();
        Ok(sent)
    }
}
