//! The job function: the state machine's steps about the job (start, await inputs, a
//! task ended or failed, finish, fail the job) and the EventBridge events (an upload's
//! object created, an execution that died): `runconvert_aws::steps`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runconvert_aws::run_json_lambda(|aws, input| async move { aws.job_step(input).await }).await
}
