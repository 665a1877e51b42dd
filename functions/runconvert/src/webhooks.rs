//! The webhook relay: sends what the outbox (the `deliveries` table) holds, in order per
//! job and endpoint, a few at a time; retries with backoff until the policy's horizon;
//! survives restarts because nothing is removed from the outbox before it is recorded as
//! delivered or given up.

use crate::store::{DueDelivery, SqliteStore};
use runconvert_connectors::webhook::Sender;
use runconvert_core::webhooks::{DeliveryStatus, Outcome, RetryPolicy, Signing};
use runconvert_core::Timestamp;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

const IN_FLIGHT: usize = 8;
const IDLE_POLL: Duration = Duration::from_millis(250);

pub struct Relay {
    store: Arc<SqliteStore>,
    sender: Sender,
    policy: RetryPolicy,
    sending: Mutex<HashSet<String>>,
    /// Deliveries attempted since the last outbox read began: that read may have seen
    /// them still pending (stale), so they are not sent again from it.
    finished: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    wake: Notify,
}

impl Relay {
    pub fn new(store: Arc<SqliteStore>, sender: Sender, policy: RetryPolicy) -> Arc<Relay> {
        Arc::new(Relay {
            store,
            sender,
            policy,
            sending: Mutex::new(HashSet::new()),
            finished: Mutex::new(HashSet::new()),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            wake: Notify::new(),
        })
    }

    pub fn spawn(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move { this.run().await });
    }

    async fn run(self: Arc<Self>) {
        loop {
            // Attempts recorded before this read are not pending in it.
            self.finished.lock().unwrap_or_else(|p| p.into_inner()).clear();
            let due = match self.store.due_deliveries(Timestamp::now(), 64).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the webhook outbox");
                    Vec::new()
                }
            };
            for d in due {
                if self.finished.lock().unwrap_or_else(|p| p.into_inner()).contains(&d.id) {
                    continue; // attempted after this read began
                }
                if !self
                    .sending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(d.id.clone())
                {
                    continue; // already on its way
                }
                let Ok(permit) = self.slots.clone().acquire_owned().await else {
                    return;
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.attempt(&d).await;
                    this.finished
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(d.id.clone());
                    drop(permit);
                    this.sending.lock().unwrap_or_else(|p| p.into_inner()).remove(&d.id);
                    this.wake.notify_one();
                });
            }
            let wait = match self.store.next_delivery_due().await {
                Ok(Some(t)) => Timestamp::now().until(t).min(IDLE_POLL),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(20))) => {}
            }
        }
    }

    async fn attempt(&self, d: &DueDelivery) {
        let now = Timestamp::now();
        let outcome = self
            .sender
            .send(
                &d.url,
                d.signing,
                &d.secret,
                &d.event_id,
                &body_for(d),
                now.millis() / 1000,
            )
            .await;
        let attempts = d.attempts + 1;
        let (status, code, error, retry_at, disable) = match outcome {
            Outcome::Delivered(c) => (DeliveryStatus::Delivered, Some(c), None, None, false),
            Outcome::Gone => (
                DeliveryStatus::Failed,
                Some(410),
                Some("the receiver answered 410 Gone; the subscription is disabled".to_string()),
                None,
                true,
            ),
            Outcome::Rejected { status, error } => (DeliveryStatus::Failed, status, Some(error), None, false),
            Outcome::Retry { status, error } => {
                match self.policy.next_attempt(d.event_created_at, now, attempts, jitter()) {
                    Some(at) => (DeliveryStatus::Pending, status, Some(error), Some(at), false),
                    None => (
                        DeliveryStatus::Failed,
                        status,
                        Some(format!("{error}; given up after {attempts} attempts")),
                        None,
                        false,
                    ),
                }
            }
        };
        if status != DeliveryStatus::Delivered {
            tracing::info!(delivery = %d.id, attempts, error = ?error, "webhook delivery not done");
        }
        if let Err(e) = self
            .store
            .record_attempt(d, status, code, error, retry_at, disable)
            .await
        {
            tracing::error!(delivery = %d.id, error = %e, "cannot record a webhook delivery");
        }
    }
}

/// A number in 0..1 for the backoff's jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b) as f64 / u32::MAX as f64
}

/// A delivery's body: the stored payload, shaped as its subscription is signed.
fn body_for(d: &DueDelivery) -> String {
    match d.signing {
        Signing::RunConvert => d.body.clone(),
        other => match serde_json::from_str(&d.body) {
            Ok(v) => other.body(&v).to_string(),
            Err(_) => d.body.clone(),
        },
    }
}
