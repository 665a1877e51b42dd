//! `/v2/users/me/keys`: a user's API keys, for scripts (the dashboard and the CLI make
//! them too). A key is shown once, when made; lists show its first characters. A key can
//! only make keys with scopes it holds itself.

use crate::auth::{generate_key, hash_key, AuthKey, AuthUser};
use crate::error::HttpResult;
use crate::webhooks::{invalid, json_object};
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use runconvert_core::keys::{key_id, key_prefix, ApiKey, Scopes};
use runconvert_core::{ApiError, Timestamp};
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// What is shown of a key (never the key).
pub fn shown(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": k.scopes.names(),
        "created_at": k.created_at.to_rfc3339(),
        "last_used_at": k.last_used_at.map(Timestamp::to_rfc3339),
    })
}

#[utoipa::path(get, path = "/v2/users/me/keys", tag = "Account", operation_id = "listKeys",
    summary = "List the user's API keys (their first characters, never the key)",
    responses((status = 200, description = "The keys", body = crate::openapi::schema::DataList)))]
async fn list(State(state): State<Arc<ApiState>>, AuthUser(user): AuthUser) -> HttpResult<Json<Value>> {
    let keys = state.keys.list_keys(&user.id).await?;
    Ok(Json(json!({"data": keys.iter().map(shown).collect::<Vec<_>>()})))
}

/// Makes a key of `user` named `name` with `scopes`; the key and what is shown of it.
pub async fn make_key(
    state: &ApiState,
    user: &runconvert_core::model::User,
    name: &str,
    scopes: Scopes,
) -> HttpResult<(String, ApiKey)> {
    let secret = generate_key();
    let hash = hash_key(&secret);
    let key = ApiKey {
        id: key_id(&hash),
        user_id: user.id.clone(),
        name: name.to_string(),
        prefix: Some(key_prefix(&secret)),
        scopes,
        created_at: Timestamp::now(),
        last_used_at: None,
    };
    state.keys.create_key(user, &hash, &key).await?;
    Ok((secret, key))
}

/// Checks a key's name and the scopes asked for against what the creating key holds.
pub fn check_new_key(name: &str, asked: Scopes, holder: Scopes) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(invalid("name", "must be 1 to 100 characters"));
    }
    if asked.is_empty() {
        return Err(invalid("scopes", "must name at least one scope"));
    }
    if !holder.covers(asked) {
        let missing: Vec<&str> = asked
            .names()
            .into_iter()
            .filter(|n| !holder.names().contains(n))
            .collect();
        return Err(ApiError::forbidden(format!(
            "a key can only make keys with scopes it holds: this one lacks {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v2/users/me/keys", tag = "Account", operation_id = "createKey",
    summary = "Make an API key (shown once), with scopes the calling key holds",
    request_body(content = crate::openapi::schema::KeyRequest, content_type = "application/json"),
    responses((status = 201, description = "The key, shown this once", body = crate::openapi::schema::Data)))]
async fn create(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    AuthKey(holder): AuthKey,
    body: Bytes,
) -> HttpResult<impl IntoResponse> {
    let obj = json_object(&body, &["name", "scopes"], "a key")?;
    let name = match obj.get("name") {
        Some(Value::String(n)) => n.trim().to_string(),
        Some(_) => return Err(invalid("name", "must be a string").into()),
        None => return Err(invalid("name", "is required").into()),
    };
    let scopes = match obj.get("scopes") {
        // The creating key's own scopes.
        None | Some(Value::Null) => holder.scopes,
        Some(Value::Array(names)) => {
            let names: Option<Vec<&str>> = names.iter().map(Value::as_str).collect();
            let names = names.ok_or_else(|| invalid("scopes", "must be a list of scope names"))?;
            Scopes::parse(names).map_err(|e| invalid("scopes", e))?
        }
        Some(_) => return Err(invalid("scopes", "must be a list of scope names").into()),
    };
    check_new_key(&name, scopes, holder.scopes)?;
    let (secret, key) = make_key(&state, &user, &name, scopes).await?;
    let mut data = shown(&key);
    // The only time the key is shown.
    data["key"] = secret.into();
    Ok((StatusCode::CREATED, Json(json!({ "data": data }))))
}

#[utoipa::path(delete, path = "/v2/users/me/keys/{id}", tag = "Account", operation_id = "revokeKey",
    summary = "Revoke an API key", params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked")))]
async fn revoke(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    AuthKey(holder): AuthKey,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    revoke_key(&state, &user.id, holder.scopes, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes one of the user's keys for a key holding `holder` scopes: only a key whose
/// scopes it holds all of (as it could only have made such a key), so a narrow key
/// cannot lock its owner out.
pub async fn revoke_key(state: &ApiState, user_id: &str, holder: Scopes, id: &str) -> HttpResult<()> {
    let keys = state.keys.list_keys(user_id).await?;
    let target = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::not_found("API key"))?;
    if !holder.covers(target.scopes) {
        return Err(
            ApiError::forbidden("a key can only revoke keys whose scopes it holds all of; this one has more").into(),
        );
    }
    if state.keys.revoke_key(user_id, id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("API key").into())
    }
}
