//! The embedded event sink: events go to the log (webhook delivery comes later).

use async_trait::async_trait;
use runconvert_core::ports::{Event, EventSink, PortResult};

pub struct LogEvents;

#[async_trait]
impl EventSink for LogEvents {
    async fn publish(&self, event: Event) -> PortResult<()> {
        match &event {
            Event::Job(name, job) => {
                tracing::info!(event = name.as_str(), job = %job.id, status = job.status.as_str(), "job event")
            }
            Event::Task(name, task) => tracing::info!(
                event = name.as_str(),
                job = %task.job_id,
                task = %task.name,
                status = task.status.as_str(),
                code = task.code.as_deref().unwrap_or(""),
                "task event"
            ),
        }
        Ok(())
    }
}
