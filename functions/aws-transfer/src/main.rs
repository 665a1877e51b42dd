//! The import and export functions: runs one import/* or export/* task, like the `worker`
//! binary, but built without the engines, which these functions never run.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runconvert_aws::run_json_lambda(|aws, input| async move { aws.work(input).await }).await
}
