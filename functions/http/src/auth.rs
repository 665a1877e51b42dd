//! `Authorization: Bearer KEY`. Keys are stored only as SHA-256 hashes (they are long
//! random strings, so a fast hash is the right one).

use crate::error::HttpError;
use crate::ApiState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use runconvert_core::model::User;
use runconvert_core::ApiError;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The user whose key authenticated the request.
pub struct AuthUser(pub User);

impl FromRequestParts<Arc<ApiState>> for AuthUser {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing Authorization header: send `Authorization: Bearer API_KEY`")
        })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer API_KEY`"))?;
        match state.keys.user_for_key_hash(&hash_key(key)).await? {
            Some(user) => Ok(AuthUser(user)),
            None => Err(ApiError::unauthorized("the API key is not valid").into()),
        }
    }
}
