//! The RunConvert HTTP API as one axum [`Router`]. The embedded server serves it with
//! hyper; the API Lambda serves the same router through lambda_http. Everything it
//! needs from the world comes through the core ports in [`ApiState`].

mod auth;
pub mod changes;
pub mod cloudconvert;
mod core_routes;
pub mod dashboard;
mod error;
mod jobs;
pub mod keys;
pub mod local_files;
pub mod openapi;
pub mod signing;
mod users;
mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use runconvert_core::formats::Registry;
use runconvert_core::ports::{Dispatcher, EventSink, FileStore, JobStore, KeyStore, OutboundGuard, WebhookStore};
use runconvert_core::validate::Limits;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;

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
    /// How the dashboard signs and sends its session cookies.
    pub dashboard: dashboard::DashboardSettings,
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
            dashboard: dashboard::DashboardSettings::default(),
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
    /// Wakes the requests waiting for a job when it changes.
    pub changes: Arc<changes::JobChanges>,
}

/// This server's address as the client reached it (`scheme://host`), for links in answers:
/// the proxy's `X-Forwarded-Proto` when there is one (API Gateway), else HTTPS only when
/// the server serves it.
pub(crate) fn base_url(headers: &axum::http::HeaderMap, state: &ApiState) -> String {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let scheme = get("x-forwarded-proto").unwrap_or(if state.settings.dashboard.secure_cookies {
        "https"
    } else {
        "http"
    });
    format!("{scheme}://{}", get("host").unwrap_or("localhost"))
}

/// The whole API: `/healthz`, `/v2/process/*`, `/v2/core/*`, CloudConvert's surface,
/// `/openapi.json` and `/docs`; and the dashboard.
pub fn api_router(state: Arc<ApiState>) -> Router {
    let body_limit = state.settings.max_body_bytes;
    let (api, doc) = documented_routes().split_for_parts();
    api.layer(axum::middleware::from_fn(single_params))
        .merge(openapi::routes(doc))
        .merge(dashboard::routes())
        .fallback(|| async { HttpError(runconvert_core::ApiError::not_found("route")) })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::rate_limit))
        .with_state(state)
}

/// A query parameter given twice (`?status=a&status=b`) is ambiguous: refused, rather than
/// one of them read.
async fn single_params(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(q) = req.uri().query() {
        let mut seen = std::collections::HashSet::new();
        for (k, _) in form_urlencoded::parse(q.as_bytes()) {
            if !seen.insert(k.clone()) {
                let errors = [(k.into_owned(), vec!["is given more than once".to_string()])].into();
                return HttpError(runconvert_core::ApiError::invalid_fields(errors)).into_response();
            }
        }
    }
    next.run(req).await
}

/// Every route `/openapi.json` describes, each registered with its `#[utoipa::path]`.
fn documented_routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .merge(openapi::health_routes())
        .merge(jobs::routes())
        .merge(cloudconvert::routes())
        .merge(core_routes::routes())
        .merge(webhooks::routes())
        .merge(users::routes())
        .merge(keys::routes())
}

/// The OpenAPI document `/openapi.json` serves.
pub fn openapi_document() -> serde_json::Value {
    openapi::document(documented_routes().into_openapi())
}
