//! The Plan state of the job interpreter.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runconvert_aws::run_json_lambda(|aws, input| async move { aws.plan(input).await }).await
}
