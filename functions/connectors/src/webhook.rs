//! Sending one webhook delivery: a signed POST through the outbound-address guard. The
//! embedded server's relay and the AWS delivery function both call [`Sender::send`]; what
//! to do with the outcome (retry, give up, disable) is the core's `webhooks` module.

use crate::guard::{Guard, Refused};
use runconvert_core::webhooks::{outcome_of_status, Outcome, Signing};
use std::time::Duration;

pub const EVENT_ID_HEADER: &str = "RunConvert-Event-Id";

pub struct Sender {
    client: reqwest::Client,
}

impl Sender {
    /// A sender whose requests pass the guard; redirects are not followed (a receiver
    /// that redirects gets a failed delivery that says so).
    pub fn new(guard: Guard, timeout: Duration) -> Result<Sender, String> {
        let client = guard
            .http_client()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .user_agent("RunConvert-Webhooks/2")
            .build()
            .map_err(|e| format!("cannot set up the webhook client: {e}"))?;
        Ok(Sender { client })
    }

    /// POSTs `body` (the raw JSON of the event) to `url`, signed with `secret` in the
    /// `signing` style.
    pub async fn send(
        &self,
        url: &str,
        signing: Signing,
        secret: &str,
        event_id: &str,
        body: &str,
        now_unix: i64,
    ) -> Outcome {
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                return Outcome::Rejected {
                    status: None,
                    error: format!("the endpoint URL is not valid: {e}"),
                }
            }
        };
        if let Err(r) = Guard::check_url(&Guard::new(true), &parsed) {
            return Outcome::Rejected {
                status: None,
                error: r.0,
            };
        }
        let sent = self
            .client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing.header_name(), signing.header(secret, now_unix, body.as_bytes()))
            .header(EVENT_ID_HEADER, event_id)
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if (300..400).contains(&status) {
                    return Outcome::Rejected {
                        status: Some(status),
                        error: format!("the receiver answered HTTP {status}; redirects are not followed"),
                    };
                }
                outcome_of_status(status)
            }
            Err(e) => describe(e),
        }
    }
}

fn describe(e: reqwest::Error) -> Outcome {
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return Outcome::Rejected {
                status: None,
                error: r.0.clone(),
            };
        }
        source = s.source();
    }
    let what = if e.is_timeout() {
        "the receiver did not answer in time".to_string()
    } else if e.is_connect() {
        let mut root: &dyn std::error::Error = &e;
        while let Some(s) = root.source() {
            root = s;
        }
        format!("cannot connect to the receiver: {root}")
    } else {
        format!("sending failed: {e}")
    };
    Outcome::Retry {
        status: None,
        error: what,
    }
}
