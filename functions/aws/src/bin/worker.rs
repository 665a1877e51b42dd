//! An operation's function: runs one task (the same binary for every operation; the
//! template deploys it once per operation, each with its own memory, timeout and policy).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runconvert_aws::run_json_lambda(|aws, input| async move { aws.work(input).await }).await
}
