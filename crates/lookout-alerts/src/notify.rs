//! Notification targets and payloads: Alertmanager's webhook body (version
//! 4) for webhooks, and its API v2 alert list for a real Alertmanager.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::error::{AlertError, Result};
use crate::rule::Micros;

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `http(s)://...`: a webhook receiver, sent on transitions.
    Webhook(String),
    /// `alertmanager://host:port[/prefix]`: pushed to `/api/v2/alerts`.
    Alertmanager(String),
}

impl Target {
    /// Parses a `NOTIFY` URL.
    pub fn parse(url: &str) -> Result<Target> {
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Target::Webhook(url.to_string()));
        }
        if let Some(rest) = url.strip_prefix("alertmanager://") {
            return Ok(Target::Alertmanager(format!(
                "http://{}/api/v2/alerts",
                rest.trim_end_matches('/')
            )));
        }
        if let Some(rest) = url.strip_prefix("alertmanagers://") {
            return Ok(Target::Alertmanager(format!(
                "https://{}/api/v2/alerts",
                rest.trim_end_matches('/')
            )));
        }
        Err(AlertError::InvalidValue(format!(
            "invalid notification target \"{url}\": expected http(s)://... (webhook) or alertmanager://host:port"
        )))
    }
}

/// One alert as both payloads describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertMessage {
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// All labels, `alertname` and `severity` included.
    pub labels: Vec<(String, String)>,
    /// Value, threshold, summary.
    pub annotations: Vec<(String, String)>,
    /// When it started firing.
    pub starts_at: Micros,
    /// When it resolved, or (Alertmanager) until when it is valid.
    pub ends_at: Option<Micros>,
    /// Hash of the labels without `severity`: stable across escalation.
    pub fingerprint: String,
}

/// 64-bit FNV-1a of the sorted labels, as 16 hex digits.
pub fn fingerprint(labels: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> =
        labels.iter().filter(|(k, _)| k != "severity").collect();
    sorted.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in sorted {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(micros: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

fn object(pairs: &[(String, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<String, Value>>(),
    )
}

fn common(alerts: &[AlertMessage], pick: impl Fn(&AlertMessage) -> &[(String, String)]) -> Value {
    let Some(first) = alerts.first() else {
        return json!({});
    };
    let shared: Vec<(String, String)> = pick(first)
        .iter()
        .filter(|kv| alerts.iter().all(|a| pick(a).contains(kv)))
        .cloned()
        .collect();
    object(&shared)
}

/// The body of a webhook notification, as Alertmanager's webhook receiver
/// sends it (version 4), so existing receivers work unchanged.
pub fn webhook_body(rule: &str, alerts: &[AlertMessage]) -> String {
    let status = if alerts.iter().any(|a| a.status == "firing") {
        "firing"
    } else {
        "resolved"
    };
    let body = json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{rule}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "lookout",
        "groupLabels": {"alertname": rule},
        "commonLabels": common(alerts, |a| &a.labels),
        "commonAnnotations": common(alerts, |a| &a.annotations),
        "externalURL": "",
        "alerts": alerts.iter().map(|a| json!({
            "status": a.status,
            "labels": object(&a.labels),
            "annotations": object(&a.annotations),
            "startsAt": rfc3339(a.starts_at),
            "endsAt": a.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339),
            "generatorURL": "",
            "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
    });
    body.to_string()
}

/// The body of `POST /api/v2/alerts`.
pub fn alertmanager_body(alerts: &[AlertMessage]) -> String {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                let mut alert = json!({
                    "labels": object(&a.labels),
                    "annotations": object(&a.annotations),
                    "startsAt": rfc3339(a.starts_at),
                    "generatorURL": "",
                });
                if let Some(end) = a.ends_at {
                    alert["endsAt"] = Value::String(rfc3339(end));
                }
                alert
            })
            .collect(),
    )
    .to_string()
}

/// POSTs a JSON body; any non-2xx answer is an error.
pub(crate) async fn post(url: String, body: String) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("User-Agent", "lookout")
            .send(body.as_bytes())
            .map(|_| ())
            .map_err(|e| AlertError::Delivery(format!("POST {url}: {e}")))
    })
    .await
    .map_err(|e| AlertError::Delivery(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_order_and_severity() {
        let a = vec![
            ("alertname".to_string(), "x".to_string()),
            ("model".to_string(), "m".to_string()),
            ("severity".to_string(), "P1".to_string()),
        ];
        let mut b = a.clone();
        b.reverse();
        b[0].1 = "P0".into();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(
            fingerprint(&a),
            fingerprint(&[("alertname".to_string(), "y".to_string())])
        );
    }

    #[test]
    fn webhook_body_has_the_alertmanager_fields() {
        let alert = AlertMessage {
            status: "firing",
            labels: vec![
                ("alertname".into(), "p99".into()),
                ("model".into(), "m".into()),
            ],
            annotations: vec![("value".into(), "9000".into())],
            starts_at: 1_735_689_600_000_000,
            ends_at: None,
            fingerprint: "00ff".into(),
        };
        let body: Value = serde_json::from_str(&webhook_body("p99", &[alert])).expect("json");
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["commonLabels"]["model"], "m");
        assert_eq!(body["alerts"][0]["startsAt"], "2025-01-01T00:00:00.000Z");
        assert_eq!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(body["alerts"][0]["fingerprint"], "00ff");
    }
}

/// One notification waiting in the outbox.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) id: String,
    pub(crate) target: String,
    pub(crate) body: String,
    pub(crate) attempts: u32,
    pub(crate) next_at: tokio::time::Instant,
}

/// One alert as an entry of the P2 digest (Alertmanager's alert shape).
pub(crate) fn digest_entry(a: &AlertMessage) -> String {
    let pairs = |p: &[(String, String)]| {
        serde_json::Value::Object(
            p.iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    };
    serde_json::json!({
        "status": a.status,
        "labels": pairs(&a.labels),
        "annotations": pairs(&a.annotations),
        "startsAt": rfc3339(a.starts_at),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": a.fingerprint,
    })
    .to_string()
}
