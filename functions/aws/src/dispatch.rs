//! The Step Functions [`Dispatcher`] and the SQS [`EventSink`].

use async_trait::async_trait;
use runconvert_core::ports::{Dispatcher, Event, EventSink, PortError, PortResult};
use serde_json::json;

/// Starts one execution of the job interpreter per job, named after the job (so a
/// repeated dispatch is a no-op: `ExecutionAlreadyExists`).
pub struct SfnDispatcher {
    pub client: aws_sdk_sfn::Client,
    pub state_machine_arn: String,
}

#[async_trait]
impl Dispatcher for SfnDispatcher {
    async fn dispatch(&self, job_id: &str) -> PortResult<()> {
        // A few tries (throttling, a blip), all within 10 s, well under the API function's
        // timeout: after that the caller ends the job (a function killed mid-way would
        // leave it stored, never started and never ended).
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.start(job_id)).await {
            Ok(r) => r,
            Err(_) => Err(PortError::new(
                "step functions: StartExecution did not answer within 10 s",
            )),
        }
    }

    async fn cancel(&self, job_id: &str) -> PortResult<()> {
        self.stop(job_id).await
    }
}

impl SfnDispatcher {
    async fn start(&self, job_id: &str) -> PortResult<()> {
        let mut pause = std::time::Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            let out = self
                .client
                .start_execution()
                .state_machine_arn(&self.state_machine_arn)
                .name(job_id)
                .input(json!({ "job_id": job_id }).to_string())
                .send()
                .await;
            match out {
                Ok(_) => return Ok(()),
                Err(e) if format!("{e:?}").contains("ExecutionAlreadyExists") => return Ok(()),
                Err(e) => last = format!("{e:?}"),
            }
        }
        Err(PortError::new(format!("step functions: {last}")))
    }

    async fn stop(&self, job_id: &str) -> PortResult<()> {
        let execution = format!(
            "{}:{job_id}",
            self.state_machine_arn.replacen(":stateMachine:", ":execution:", 1)
        );
        match self.client.stop_execution().execution_arn(execution).send().await {
            Ok(_) => Ok(()),
            Err(e) if format!("{e:?}").contains("ExecutionDoesNotExist") => Ok(()),
            Err(e) => Err(PortError::new(format!("step functions: {e:?}"))),
        }
    }
}

/// Sends each event, with its payload, to the webhook queue.
pub struct SqsEvents {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

/// A queue message: the event and the user whose subscriptions get it. The job's final
/// event is sent by the state machine as `{job_id, outcome}` instead.
pub fn event_message(event: &Event, user_id: &str) -> serde_json::Value {
    json!({ "user_id": user_id, "job_id": event.job_id(), "body": event.payload() })
}

#[async_trait]
impl EventSink for SqsEvents {
    async fn publish(&self, event: Event) -> PortResult<()> {
        let user = match &event {
            Event::Job(_, j) => j.user_id.clone(),
            Event::Task(_, _) => String::new(),
        };
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(event_message(&event, &user).to_string())
            // FIFO, one group per job: a job's events reach each receiver in order.
            .message_group_id(event.job_id())
            .send()
            .await
            .map_err(|e| PortError::new(format!("sqs: {e:?}")))?;
        Ok(())
    }
}
