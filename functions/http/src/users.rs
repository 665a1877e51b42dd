//! `GET /v2/users/me` (the key's user: credits, rate limit) and `GET /v2/limits` (what
//! this server allows).

use crate::auth::AuthUser;
use crate::error::HttpResult;
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(me)).routes(routes!(limits))
}

fn rate(state: &ApiState, own: Option<u32>) -> Value {
    match own.unwrap_or(state.settings.rate_limit_per_minute) {
        0 => Value::Null,
        n => json!(n),
    }
}

#[utoipa::path(get, path = "/v2/users/me", tag = "Account", operation_id = "showUser",
    summary = "The user of the key: id, name, credits",
    responses((status = 200, description = "The user", body = crate::openapi::schema::Data)))]
async fn me(State(state): State<Arc<ApiState>>, AuthUser(user): AuthUser) -> HttpResult<Json<Value>> {
    Ok(Json(json!({"data": {
        "credits": state.keys.credits(&user.id).await?,
        "id": user.id,
        "name": user.name,
        // CloudConvert's name of the same field.
        "username": user.name,
        "rate_limit_per_minute": rate(&state, user.rate_limit),
    }})))
}

#[utoipa::path(get, path = "/v2/limits", tag = "Account", operation_id = "showLimits",
    summary = "This deployment's limits, and the user's rate limit and credits",
    responses((status = 200, description = "The limits", body = crate::openapi::schema::Data)))]
async fn limits(State(state): State<Arc<ApiState>>, AuthUser(user): AuthUser) -> HttpResult<Json<Value>> {
    let l = &state.settings.limits;
    let mut data = json!({
        "rate_limit_per_minute": rate(&state, user.rate_limit),
        "max_tasks_per_job": l.max_tasks,
        "max_base64_bytes": l.max_base64_bytes,
        "max_request_bytes": state.settings.max_body_bytes,
        "upload_timeout_seconds": state.settings.upload_timeout.as_secs(),
        "max_wait_seconds": state.settings.max_wait.as_secs(),
        "credits": state.keys.credits(&user.id).await?,
        "credit_rule": "one credit per processing task (convert, compress, merge, archive, capture_website, ocr, watermark, thumbnail); imports and exports are free",
    });
    if let Some(obj) = data.as_object_mut() {
        obj.extend(state.settings.reported_limits.clone());
    }
    Ok(Json(json!({ "data": data })))
}
