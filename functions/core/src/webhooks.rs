//! Webhooks: subscriptions, the deliveries of each event, and the rules every delivery
//! follows (which events go where, the signature, when to try again). The embedded
//! server and the AWS delivery function both use these; how a request is sent is in
//! `runconvert-connectors`.

use crate::ports::{Event, EventName};
use crate::Timestamp;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use std::time::Duration;

/// How deliveries are signed and shaped: the spec's way, or CloudConvert's for the
/// subscriptions (and jobs) made through its API surface, so its SDKs' `Webhook.verify`
/// accepts them and their receivers read the statuses they know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signing {
    /// `RunConvert-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
    /// and the body as `/v2/process/*` shows jobs and tasks.
    #[default]
    RunConvert,
    /// `CloudConvert-Signature: <lowercase hex HMAC-SHA256 of the raw body>`, and the
    /// body in CloudConvert's shapes (statuses `waiting | processing | finished | error`).
    CloudConvert,
}

impl Signing {
    pub fn as_str(self) -> &'static str {
        match self {
            Signing::RunConvert => "runconvert",
            Signing::CloudConvert => "cloudconvert",
        }
    }

    /// What a store kept; anything else (older rows) is the spec's way.
    pub fn parse(s: Option<&str>) -> Signing {
        match s {
            Some("cloudconvert") => Signing::CloudConvert,
            _ => Signing::RunConvert,
        }
    }

    /// The signature header's name.
    pub fn header_name(self) -> &'static str {
        match self {
            Signing::RunConvert => "RunConvert-Signature",
            Signing::CloudConvert => "CloudConvert-Signature",
        }
    }

    /// The signature header's value for `body`, signed with `secret` at `unix_seconds`.
    pub fn header(self, secret: &str, unix_seconds: i64, body: &[u8]) -> String {
        match self {
            Signing::RunConvert => signature(secret, unix_seconds, body),
            Signing::CloudConvert => hex::encode(hmac(secret, &[body])),
        }
    }

    /// The body of a delivery, from the event's payload as the spec shows it.
    pub fn body(self, payload: &Value) -> Value {
        match self {
            Signing::RunConvert => payload.clone(),
            Signing::CloudConvert => crate::cloudconvert::event(payload),
        }
    }
}

fn hmac(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// A user's subscription to some events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub endpoint_url: String,
    pub events: Vec<String>,
    pub created_at: Timestamp,
    /// Set when the receiver answered 410 Gone (or the user disabled it).
    pub disabled_at: Option<Timestamp>,
    pub disabled_reason: Option<String>,
    /// The signing secret: shown once, in the response that created it.
    #[serde(skip)]
    pub secret: String,
    /// Made through CloudConvert's surface, or the spec's.
    #[serde(skip)]
    pub signing: Signing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// One event sent (or to be sent) to one endpoint, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub event: String,
    pub job_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub next_attempt_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
}

/// Checks the events a subscription asks for; returns them in the spec's order.
pub fn parse_events(v: &Value) -> Result<Vec<String>, String> {
    let arr = v
        .as_array()
        .ok_or("must be a list of event names, such as [\"job.finished\"]")?;
    if arr.is_empty() {
        return Err("must name at least one event".into());
    }
    let known: Vec<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
    let mut out = Vec::new();
    for e in arr {
        let name = e.as_str().ok_or("every event must be a string")?;
        if !known.contains(&name) {
            return Err(format!("unknown event {name:?}; the events are {}", known.join(", ")));
        }
        if !out.iter().any(|x: &String| x == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Whether `hook` wants `event`.
pub fn wants(hook: &Webhook, event: EventName) -> bool {
    hook.disabled_at.is_none() && hook.events.iter().any(|e| e == event.as_str())
}

/// The events a job's own `webhook_url` receives.
pub fn job_url_wants(event: EventName) -> bool {
    matches!(event, EventName::JobFinished | EventName::JobFailed)
}

/// The body of a delivery, with its event id: `{event, job}` or `{event, task}`, as the
/// API shows them.
pub fn body(event: &Event) -> Value {
    event.payload()
}

/// The `RunConvert-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<raw body>" under the subscription's secret>`. Receivers recompute it and
/// reject old timestamps, so a captured delivery cannot be replayed later.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mac = hmac(secret, &[unix_seconds.to_string().as_bytes(), b".", body]);
    format!("t={unix_seconds},v1={}", hex::encode(mac))
}

/// Checks a signature header against `body`, allowing `tolerance` between the header's
/// time and `now` (what a receiver does; used by the tests and documented in docs/api.md).
pub fn verify(secret: &str, header: &str, body: &[u8], now_unix: i64, tolerance: Duration) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if (now_unix - t).unsigned_abs() > tolerance.as_secs() {
        return false;
    }
    let expected = signature(secret, t, body);
    let expected_v1 = expected.rsplit_once("v1=").map(|(_, v)| v).unwrap_or_default();
    // Compare in constant time.
    expected_v1.len() == v1.len()
        && expected_v1
            .bytes()
            .zip(v1.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered(u16),
    /// Network error, timeout, 5xx, 429 or 408: try again later.
    Retry { status: Option<u16>, error: String },
    /// 410 Gone: the receiver wants no more; the subscription is disabled.
    Gone,
    /// Another answer (a 4xx, a refused address): trying again would not help.
    Rejected { status: Option<u16>, error: String },
}

/// Classifies an HTTP status of a delivery.
pub fn outcome_of_status(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered(status),
        410 => Outcome::Gone,
        408 | 429 | 500..=599 => Outcome::Retry {
            status: Some(status),
            error: format!("the receiver answered HTTP {status}"),
        },
        _ => Outcome::Rejected {
            status: Some(status),
            error: format!("the receiver answered HTTP {status}"),
        },
    }
}

/// Retry settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// After this long since the event, a delivery is given up.
    pub horizon: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            horizon: Duration::from_secs(86_400),
        }
    }
}

impl RetryPolicy {
    /// When to try again after `attempts` failed attempts, or `None` once past the horizon.
    /// Exponential, with "equal jitter": half the delay fixed, half random (`jitter` in 0..1).
    pub fn next_attempt(&self, created: Timestamp, now: Timestamp, attempts: u32, jitter: f64) -> Option<Timestamp> {
        let exp = self
            .first_backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let delay = exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        let at = now.plus(delay);
        (at <= created.plus(self.horizon)).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let body = br#"{"event":"job.finished"}"#;
        let h = signature("whsec", 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify("whsec", &h, body, 1_700_000_100, Duration::from_secs(300)));
        assert!(!verify("other", &h, body, 1_700_000_100, Duration::from_secs(300)));
        assert!(!verify("whsec", &h, b"{}", 1_700_000_100, Duration::from_secs(300)));
        assert!(
            !verify("whsec", &h, body, 1_700_001_000, Duration::from_secs(300)),
            "replayed late"
        );
    }

    #[test]
    fn checks_event_names() {
        assert_eq!(
            parse_events(&serde_json::json!(["job.finished", "job.finished", "task.failed"])).unwrap(),
            ["job.finished", "task.failed"]
        );
        assert!(parse_events(&serde_json::json!(["job.done"]))
            .unwrap_err()
            .contains("job.done"));
        assert!(parse_events(&serde_json::json!([])).is_err());
        assert!(parse_events(&serde_json::json!("job.finished")).is_err());
    }

    #[test]
    fn backs_off_exponentially_up_to_the_horizon() {
        let p = RetryPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            horizon: Duration::from_secs(100),
        };
        let t0 = Timestamp(0);
        assert_eq!(p.next_attempt(t0, t0, 1, 1.0), Some(Timestamp(1000)));
        assert_eq!(p.next_attempt(t0, t0, 3, 1.0), Some(Timestamp(4000)));
        assert_eq!(p.next_attempt(t0, t0, 3, 0.0), Some(Timestamp(2000)));
        assert_eq!(p.next_attempt(t0, t0, 30, 1.0), Some(Timestamp(60_000)));
        assert_eq!(p.next_attempt(t0, Timestamp(90_000), 30, 1.0), None);
        assert!(matches!(outcome_of_status(503), Outcome::Retry { .. }));
        assert_eq!(outcome_of_status(410), Outcome::Gone);
        assert!(matches!(outcome_of_status(404), Outcome::Rejected { .. }));
    }
}
