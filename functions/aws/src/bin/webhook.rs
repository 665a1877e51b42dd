//! The webhook function: consumes the event queue (FIFO: one group per job, and one per
//! job and receiver for an event with several receivers, handed on here), delivers, and
//! hands back the messages to try again (partial batch failures), each made visible again
//! when its next attempt is due. A message that comes back holds the later ones of its
//! group behind it: every receiver gets a job's events in order, and one that fails holds
//! back no other.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use runconvert_aws::Deliver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runconvert_aws::init_tracing();
    let aws = Arc::new(runconvert_aws::Aws::from_env().await?);
    let sqs = aws_sdk_sqs::Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await);
    let sender = Arc::new(runconvert_connectors::webhook::Sender::new(
        runconvert_connectors::Guard::new(aws.env.allow_private_networks),
        Duration::from_secs(10),
    )?);
    lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| {
        let (aws, sender, sqs) = (aws.clone(), sender.clone(), sqs.clone());
        async move {
            let mut failures = Vec::new();
            // Groups (jobs) with a message to try again: their later messages wait too.
            let mut held: HashMap<String, Duration> = HashMap::new();
            for record in e.payload.records {
                let group = record.attributes.get("MessageGroupId").cloned().unwrap_or_default();
                let wait = match held.get(&group) {
                    Some(w) => Some(*w),
                    None => match aws.deliver(record.body.as_deref().unwrap_or_default(), &sender).await {
                        Ok(Deliver::Done) => None,
                        Ok(Deliver::Retry(w)) => Some(w),
                        Ok(Deliver::FanOut(messages)) => fan_out(&sqs, aws.env.queue_url.as_deref(), messages).await,
                        Err(why) => {
                            tracing::warn!(error = %why, "webhook message to retry");
                            Some(Duration::from_secs(30))
                        }
                    },
                };
                let Some(wait) = wait else { continue };
                held.entry(group).or_insert(wait);
                if let (Some(queue), Some(receipt)) = (&aws.env.queue_url, &record.receipt_handle) {
                    let secs = wait.as_secs().clamp(1, 43_200) as i32;
                    let _ = sqs
                        .change_message_visibility()
                        .queue_url(queue)
                        .receipt_handle(receipt)
                        .visibility_timeout(secs)
                        .send()
                        .await;
                }
                let mut f = BatchItemFailure::default();
                f.item_identifier = record.message_id.unwrap_or_default();
                failures.push(f);
            }
            let mut out = SqsBatchResponse::default();
            out.batch_item_failures = failures;
            Ok::<_, lambda_runtime::Error>(out)
        }
    }))
    .await
}

/// An event's messages, one per receiver, back on the queue (each receiver's own group);
/// `Some(wait)` if one could not be sent: the event is handed on again later (the queue
/// drops a repeat within five minutes, the delivery records any later one).
async fn fan_out(sqs: &aws_sdk_sqs::Client, queue: Option<&str>, messages: Vec<(String, String)>) -> Option<Duration> {
    let queue = queue?;
    for (group, body) in messages {
        let sent = sqs
            .send_message()
            .queue_url(queue)
            .message_group_id(group)
            .message_body(body)
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = ?e, "webhook fan-out to retry");
            return Some(Duration::from_secs(10));
        }
    }
    None
}
