//! `/v2/webhooks`: a user's subscriptions to job and task events, and their deliveries.

use crate::auth::AuthUser;
use crate::error::HttpResult;
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use runconvert_core::webhooks::{parse_events, Signing, Webhook};
use runconvert_core::{new_id, ApiError, Timestamp};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
        .routes(routes!(deliveries))
}

/// A signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    format!("whsec_{}", hex::encode(bytes))
}

/// A request body that is to be a JSON object of the `fields` only (what `what` takes).
pub(crate) fn json_object(
    body: &[u8],
    fields: &[&str],
    what: &str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !fields.contains(&k.as_str())) {
        let takes: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
        return Err(invalid(
            k,
            format!("unknown field ({what} takes {})", takes.join(" and ")),
        ));
    }
    Ok(obj)
}

pub(crate) fn invalid(field: &str, msg: impl Into<String>) -> ApiError {
    let mut errors = BTreeMap::new();
    errors.insert(field.to_string(), vec![msg.into()]);
    ApiError::invalid_fields(errors)
}

fn is_http(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn shown(h: &Webhook) -> Value {
    serde_json::to_value(h).expect("a webhook serialises")
}

/// `POST /v2/webhooks`: the spec's (`endpoint_url`), or CloudConvert's (`url`), whose
/// deliveries are then signed and shaped as CloudConvert's.
#[utoipa::path(post, path = "/v2/webhooks", tag = "Webhooks", operation_id = "createWebhook",
    summary = "Subscribe a URL to job events (its signing secret is shown once)",
    request_body(content = crate::openapi::schema::WebhookRequest, content_type = "application/json"),
    responses((status = 201, description = "The webhook, with its signing secret", body = crate::openapi::schema::Data)))]
async fn create(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> HttpResult<axum::response::Response> {
    let cloudconvert =
        serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.get("url").is_some() && v.get("endpoint_url").is_none());
    if cloudconvert {
        return crate::cloudconvert::create_webhook(&state, &user, &headers, &body).await;
    }
    let obj = json_object(&body, &["endpoint_url", "events"], "a webhook")?;
    let hook = new_webhook(&state, &user.id, &obj, Signing::RunConvert).await?;
    let mut data = shown(&hook);
    // The only time the secret is shown.
    data["signing_secret"] = hook.secret.clone().into();
    Ok((StatusCode::CREATED, Json(json!({ "data": data }))).into_response())
}

/// Checks a subscription's `endpoint_url` (`url` on CloudConvert's surface; and that the
/// server would connect to it) and `events`, and stores it for the user.
pub(crate) async fn new_webhook(
    state: &ApiState,
    user_id: &str,
    obj: &serde_json::Map<String, Value>,
    signing: Signing,
) -> HttpResult<Webhook> {
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut fail = |field: &str, msg: String| errors.entry(field.to_string()).or_default().push(msg);
    let field = match signing {
        Signing::RunConvert => "endpoint_url",
        Signing::CloudConvert => "url",
    };
    let url = match obj.get(field) {
        Some(Value::String(u)) if u.len() <= 2048 && is_http(u) => Some(u.trim().to_string()),
        Some(_) => {
            fail(field, "must be an http:// or https:// URL".into());
            None
        }
        None => {
            fail(field, "is required".into());
            None
        }
    };
    if let Some(u) = &url {
        if let Err(why) = state.guard.check_url(u).await {
            fail(field, why);
        }
    }
    let events = match parse_events(obj.get("events").unwrap_or(&Value::Null)) {
        Ok(e) => e,
        Err(e) => {
            fail("events", e);
            Vec::new()
        }
    };
    let Some(url) = url.filter(|_| errors.is_empty()) else {
        return Err(ApiError::invalid_fields(errors).into());
    };
    let hook = Webhook {
        id: new_id(),
        user_id: user_id.to_string(),
        endpoint_url: url,
        events,
        created_at: Timestamp::now(),
        disabled_at: None,
        disabled_reason: None,
        secret: new_secret(),
        signing,
    };
    state.webhooks.create_webhook(&hook).await?;
    Ok(hook)
}

#[utoipa::path(get, path = "/v2/webhooks", tag = "Webhooks", operation_id = "listWebhooks",
    summary = "List webhooks",
    responses((status = 200, description = "The webhooks", body = crate::openapi::schema::DataList)))]
async fn list(State(state): State<Arc<ApiState>>, AuthUser(user): AuthUser) -> HttpResult<Json<Value>> {
    let hooks = state.webhooks.list_webhooks(&user.id).await?;
    Ok(Json(json!({"data": hooks.iter().map(shown).collect::<Vec<_>>()})))
}

#[utoipa::path(delete, path = "/v2/webhooks/{id}", tag = "Webhooks", operation_id = "deleteWebhook",
    summary = "Delete a webhook", params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 204, description = "Deleted")))]
async fn remove(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    if state.webhooks.delete_webhook(&user.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook").into())
    }
}

#[utoipa::path(get, path = "/v2/webhooks/{id}/deliveries", tag = "Webhooks", operation_id = "listDeliveries",
    summary = "A webhook's recent deliveries: status, attempts, last error", params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 200, description = "The deliveries", body = crate::openapi::schema::DataList)))]
async fn deliveries(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    let list = state
        .webhooks
        .list_deliveries(&user.id, &id, 100)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(Json(json!({ "data": list })))
}
