//! The Step Functions [`Dispatcher`] and the SQS [`EventSink`].

use async_trait::async_trait;
use runconvert_core::ops::Operation;
use runconvert_core::ports::{Dispatcher, Event, EventSink, PortError, PortResult};
use runconvert_core::Job;
use serde_json::json;

/// Starts one execution per job, named after the job (so a repeated dispatch of a
/// standard one is a no-op: `ExecutionAlreadyExists`). A job with no upload to wait for
/// starts on the Express state machine when there is one (it hands the job to the
/// standard one if it runs long, see [`crate::definition`]); the others on the standard.
pub struct SfnDispatcher {
    pub client: aws_sdk_sfn::Client,
    pub state_machine_arn: String,
    pub express_arn: Option<String>,
}

/// The ARN of a job's execution of `machine` (executions are named after their job).
pub fn execution_arn(machine: &str, job_id: &str) -> String {
    format!("{}:{job_id}", machine.replacen(":stateMachine:", ":execution:", 1))
}

/// Whether a job can start as an Express execution: nothing in it waits for a client
/// (an upload), which only a standard execution's task token can.
pub fn fits_express(job: &Job) -> bool {
    !job.tasks
        .iter()
        .any(|t| matches!(t.operation, Operation::ImportUpload(_)))
}

#[async_trait]
impl Dispatcher for SfnDispatcher {
    async fn dispatch(&self, job_id: &str) -> PortResult<()> {
        self.start_on(&self.state_machine_arn, job_id).await
    }

    async fn start_job(&self, job: &Job) -> PortResult<()> {
        match &self.express_arn {
            Some(express) if fits_express(job) => self.start_on(express, &job.id).await,
            _ => self.dispatch(&job.id).await,
        }
    }

    async fn cancel(&self, job_id: &str) -> PortResult<()> {
        self.stop(job_id).await
    }
}

impl SfnDispatcher {
    async fn start_on(&self, machine: &str, job_id: &str) -> PortResult<()> {
        // A few tries (throttling, a blip), all within 10 s, well under the API function's
        // timeout: after that the caller ends the job (a function killed mid-way would
        // leave it stored, never started and never ended).
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.start(machine, job_id)).await {
            Ok(r) => r,
            Err(_) => Err(PortError::new(
                "step functions: StartExecution did not answer within 10 s",
            )),
        }
    }

    async fn start(&self, machine: &str, job_id: &str) -> PortResult<()> {
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
                .state_machine_arn(machine)
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
        let execution = execution_arn(&self.state_machine_arn, job_id);
        match self.client.stop_execution().execution_arn(execution).send().await {
            Ok(_) => Ok(()),
            Err(e) if format!("{e:?}").contains("ExecutionDoesNotExist") => Ok(()),
            Err(e) => Err(PortError::new(format!("step functions: {e:?}"))),
        }
    }
}

/// Sends each event, with its payload, to the webhook queue: only a job's whose events
/// someone receives ([`crate::dynamo::DynamoStore::notifies`]).
pub struct SqsEvents {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub store: std::sync::Arc<crate::dynamo::DynamoStore>,
}

/// A queue message: the event and the user whose subscriptions get it. The job's final
/// event is sent by the state machine as `{job_id, outcome}` instead.
pub fn event_message(event: &Event, user_id: &str) -> serde_json::Value {
    json!({ "user_id": user_id, "job_id": event.job_id(), "body": event.payload() })
}

#[async_trait]
impl EventSink for SqsEvents {
    async fn publish(&self, event: Event) -> PortResult<()> {
        if !self.store.notifies(event.job_id()).await? {
            return Ok(());
        }
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
