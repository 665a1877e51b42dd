//! The webhook function: consumes the event queue, delivers to subscribers, and reports
//! the messages to try again (partial batch failures; the dead-letter queue after five).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runconvert_aws::init_tracing();
    let aws = Arc::new(runconvert_aws::Aws::from_env().await?);
    let sender = Arc::new(runconvert_connectors::webhook::Sender::new(
        runconvert_connectors::Guard::new(aws.env.allow_private_networks),
        Duration::from_secs(10),
    )?);
    lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| {
        let (aws, sender) = (aws.clone(), sender.clone());
        async move {
            let mut failures = Vec::new();
            for record in e.payload.records {
                let body = record.body.unwrap_or_default();
                if let Err(why) = aws.deliver(&body, &sender).await {
                    tracing::warn!(error = %why, "webhook delivery to retry");
                    let mut f = BatchItemFailure::default();
                    f.item_identifier = record.message_id.unwrap_or_default();
                    failures.push(f);
                }
            }
            let mut out = SqsBatchResponse::default();
            out.batch_item_failures = failures;
            Ok::<_, lambda_runtime::Error>(out)
        }
    }))
    .await
}
