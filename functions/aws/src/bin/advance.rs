//! The Catch of a worker state: records a crashed or timed-out worker as its task's failure.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runconvert_aws::run_json_lambda(|aws, input| async move { aws.advance(input).await }).await
}
