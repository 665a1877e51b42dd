//! The RunConvert HTTP API as one axum [`Router`]. The embedded server serves it with
//! hyper; the API Lambda serves the same router through lambda_http. Everything it
//! needs from the world comes through the core ports in [`ApiState`].

mod auth;
mod core_routes;
mod error;
mod jobs;
pub mod local_files;
pub mod signing;
mod users;
mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use runconvert_core::formats::Registry;
use runconvert_core::ports::{Dispatcher, EventSink, FileStore, JobStore, KeyStore, OutboundGuard, WebhookStore};
use runconvert_core::validate::Limits;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{generate_key, hash_key};
pub use error::HttpError;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub limits: Limits,
    /// How long an import/upload task waits for its file.
    pub upload_timeout: Duration,
    /// The longest `/wait` a client may ask for.
    pub max_wait: Duration,
    /// Largest JSON body (a job with an import/base64 file is the largest).
    pub max_body_bytes: usize,
    /// import/base64 payloads longer than this are kept in the file store, not in the
    /// task's record (on AWS, whose DynamoDB items hold at most 400 KB); None: inline.
    pub inline_payload_bytes: Option<usize>,
    /// Requests a minute per user when the key sets none (0: no limit).
    pub rate_limit_per_minute: u32,
    /// What `GET /v2/limits` reports besides the API's own limits (file size, pixels,
    /// pages, timeouts, concurrency: the worker's settings).
    pub reported_limits: serde_json::Map<String, serde_json::Value>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            limits: Limits::default(),
            upload_timeout: Duration::from_secs(3600),
            max_wait: Duration::from_secs(300),
            inline_payload_bytes: None,
            max_body_bytes: 4 << 20,
            rate_limit_per_minute: 1200,
            reported_limits: serde_json::Map::new(),
        }
    }
}

/// The ports and settings the API runs on.
pub struct ApiState {
    pub jobs: Arc<dyn JobStore>,
    pub keys: Arc<dyn KeyStore>,
    pub files: Arc<dyn FileStore>,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub events: Arc<dyn EventSink>,
    pub webhooks: Arc<dyn WebhookStore>,
    pub guard: Arc<dyn OutboundGuard>,
    pub registry: Arc<Registry>,
    pub settings: ApiSettings,
    pub limiter: auth::RateLimiter,
}

/// The whole API: `/healthz`, `/v2/process/*`, `/v2/core/*`.
pub fn api_router(state: Arc<ApiState>) -> Router {
    let body_limit = state.settings.max_body_bytes;
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(jobs::routes())
        .merge(core_routes::routes())
        .merge(webhooks::routes())
        .merge(users::routes())
        .fallback(|| async { HttpError(runconvert_core::ApiError::not_found("route")) })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::rate_limit))
        .with_state(state)
}
