//! The API function: the same axum Router as the embedded server, run by lambda_http.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let began = std::time::Instant::now();
    runconvert_aws::init_tracing();
    let aws = runconvert_aws::Aws::from_env().await?;
    let ready = began.elapsed();
    let router = aws.api_router()?;
    // Init is Lambda's cold start: where it goes, for RUNCONVERT_LOG=debug.
    tracing::debug!(
        adapters_ms = ready.as_secs_f64() * 1e3,
        router_ms = (began.elapsed() - ready).as_secs_f64() * 1e3,
        "init"
    );
    lambda_http::run(router).await
}
