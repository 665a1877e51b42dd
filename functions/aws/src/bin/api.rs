//! The API function: the same axum Router as the embedded server, run by lambda_http.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    runconvert_aws::init_tracing();
    let aws = runconvert_aws::Aws::from_env().await?;
    lambda_http::run(aws.api_router()?).await
}
