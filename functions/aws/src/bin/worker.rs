//! A worker state: runs one task (deployed once per operation family).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runconvert_aws::run_json_lambda(|aws, input| async move { aws.work(input).await }).await
}
