//! An engine operation's function (convert, thumbnail, compress, merge, archive,
//! watermark of the built-in engines): runs one task, like the `worker` binary, but is
//! built without the imports, remote exports and Chromium, which these functions never
//! run (the template deploys it once per operation, each with its own memory and timeout).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runconvert_aws::run_json_lambda(|aws, input| async move { aws.work(input).await }).await
}
