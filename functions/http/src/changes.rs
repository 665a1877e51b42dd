//! Wakes the requests waiting for a job (`/wait`, the synchronous API, the dashboard's
//! job page) when it changes, instead of letting them find out at their next read.
//!
//! The embedded server publishes every task's and job's end in this process, so its
//! event sink is wrapped in [`Notifying`]. On AWS the ends are recorded by other
//! functions: nothing here is told, and waiters read the job again on a short backoff.

use async_trait::async_trait;
use runconvert_core::ports::{Event, EventSink, PortResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One watch channel per job somebody waits for.
#[derive(Default)]
pub struct JobChanges {
    watched: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Whether this process is told of every change (the embedded server); `false` (the
    /// default) on AWS.
    live: bool,
}

impl JobChanges {
    /// Changes this process is told of, every one ([`Notifying`] publishes them all).
    pub fn live() -> JobChanges {
        JobChanges {
            live: true,
            ..JobChanges::default()
        }
    }

    /// Whether a change is told here as it happens: worth waiting for.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// A receiver that sees every change of the job from now on.
    pub fn watch(&self, job_id: &str) -> watch::Receiver<u64> {
        let mut watched = self.watched.lock().expect("not poisoned");
        // Jobs nobody waits for any more are forgotten here, not on their change.
        watched.retain(|_, tx| tx.receiver_count() > 0);
        watched
            .entry(job_id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// The job changed (a task or the job itself ended): its waiters read it again.
    pub fn changed(&self, job_id: &str) {
        if let Some(tx) = self.watched.lock().expect("not poisoned").get(job_id) {
            tx.send_modify(|n| *n += 1);
        }
    }
}

/// An event sink that tells [`JobChanges`] of each event's job, then passes it on.
pub struct Notifying {
    pub inner: Arc<dyn EventSink>,
    pub changes: Arc<JobChanges>,
}

#[async_trait]
impl EventSink for Notifying {
    async fn publish(&self, event: Event) -> PortResult<()> {
        self.changes.changed(event.job_id());
        self.inner.publish(event).await
    }
}
