//! `Authorization: Bearer KEY`. Keys are stored only as SHA-256 hashes (they are long
//! random strings, so a fast hash is the right one).

use crate::error::HttpError;
use crate::ApiState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use runconvert_core::keys::{ApiKey, Scope, LAST_USED_EVERY_MS};
use runconvert_core::model::User;
use runconvert_core::ApiError;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new API key: `rc_` and 40 random letters and digits.
pub fn generate_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut key = String::from("rc_");
    while key.len() < 43 {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf).expect("the OS has randomness");
        // Rejection sampling keeps every character equally likely.
        for b in buf {
            if (b as usize) < ALPHABET.len() * 4 && key.len() < 43 {
                key.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    key
}

/// The user whose key authenticated the request.
pub struct AuthUser(pub User);

/// The key that authenticated the request (its id and scopes).
pub struct AuthKey(pub ApiKey);

impl FromRequestParts<Arc<ApiState>> for AuthKey {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        // Put there by the middleware, which found the key.
        match parts.extensions.get::<ApiKey>() {
            Some(key) => Ok(AuthKey(key.clone())),
            None => {
                Err(ApiError::unauthorized("missing Authorization header: send `Authorization: Bearer API_KEY`").into())
            }
        }
    }
}

/// The scope a request needs: reads and writes of jobs and tasks, webhooks, and the
/// user (its keys too). None: the route needs no scope (formats, downloads by link).
pub fn required_scope(method: &axum::http::Method, path: &str) -> Option<Scope> {
    let write = !matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD);
    let (read, written) = if path.starts_with("/v2/process/")
        || path.starts_with("/sync/v2/")
        || ["/v2/jobs", "/v2/tasks"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        || crate::cloudconvert::task_operation(path).is_some()
    {
        (Scope::TaskRead, Scope::TaskWrite)
    } else if path == "/v2/webhooks" || path.starts_with("/v2/webhooks/") || path == "/v2/users/me/webhooks" {
        (Scope::WebhookRead, Scope::WebhookWrite)
    } else if path == "/v2/users/me" || path.starts_with("/v2/users/") || path == "/v2/limits" {
        (Scope::UserRead, Scope::UserWrite)
    } else {
        return None;
    };
    Some(if write { written } else { read })
}

impl FromRequestParts<Arc<ApiState>> for AuthUser {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        // Found already by the rate limiter.
        if let Some(user) = parts.extensions.get::<User>() {
            return Ok(AuthUser(user.clone()));
        }
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

/// The key of a `Bearer` Authorization header, if there is one.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Token buckets, one per user: `limit` requests a minute, refilled continuously.
#[derive(Default)]
pub struct RateLimiter {
    buckets: std::sync::Mutex<std::collections::HashMap<String, Bucket>>,
    /// When this process last recorded each key's use (so that a key's `last_used_at`
    /// costs a write a minute at most, not one a request).
    touched: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

struct Bucket {
    tokens: f64,
    last: std::time::Instant,
}

/// What the limiter decided, and the numbers of the `X-RateLimit-*` headers.
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until one request is allowed (when refused).
    pub retry_after_secs: u64,
}

impl RateLimiter {
    /// Whether the key's use is to be recorded now (not within the last minute here).
    pub fn should_touch(&self, key_id: &str) -> bool {
        let now = std::time::Instant::now();
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        if touched.len() > 4096 {
            touched.retain(|_, at| now.duration_since(*at).as_millis() < LAST_USED_EVERY_MS as u128);
        }
        match touched.get(key_id) {
            Some(at) if now.duration_since(*at).as_millis() < LAST_USED_EVERY_MS as u128 => false,
            _ => {
                touched.insert(key_id.to_string(), now);
                true
            }
        }
    }

    pub fn check(&self, user_id: &str, limit: u32) -> Decision {
        let now = std::time::Instant::now();
        let per_sec = limit as f64 / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 4096 {
            // A bucket idle for a minute is full again: the same as none.
            buckets.retain(|_, b| now.duration_since(b.last).as_secs() < 60);
        }
        let b = buckets.entry(user_id.to_string()).or_insert(Bucket {
            tokens: limit as f64,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(limit as f64);
        b.last = now;
        let allowed = b.tokens >= 1.0;
        if allowed {
            b.tokens -= 1.0;
        }
        let missing = limit as f64 - b.tokens;
        Decision {
            allowed,
            limit,
            remaining: b.tokens.floor().max(0.0) as u32,
            reset_secs: (missing / per_sec).ceil() as u64,
            retry_after_secs: if allowed {
                0
            } else {
                ((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64
            },
        }
    }
}

fn rate_headers(h: &mut axum::http::HeaderMap, d: &Decision) {
    let mut set = |name: &'static str, v: String| {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    set("x-ratelimit-limit", d.limit.to_string());
    set("x-ratelimit-remaining", d.remaining.to_string());
    set("x-ratelimit-reset", d.reset_secs.to_string());
    if !d.allowed {
        set("retry-after", d.retry_after_secs.to_string());
    }
}

/// Middleware: finds the key's user once, applies the user's rate limit (429 with
/// `Retry-After` when spent) and puts `X-RateLimit-Limit / -Remaining / -Reset` on the
/// response. Requests without a valid key go on (the route answers 401).
pub async fn rate_limit(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let found = match bearer(req.headers()).map(hash_key) {
        Some(hash) => match state.keys.key_by_hash(&hash).await {
            Ok(found) => found.map(|f| (hash, f)),
            Err(e) => return HttpError::from(e).into_response(),
        },
        None => None,
    };
    let Some((hash, (user, key))) = found else {
        return next.run(req).await;
    };
    if let Some(scope) = required_scope(req.method(), req.uri().path()) {
        if !key.scopes.has(scope) {
            return HttpError(ApiError::forbidden(format!(
                "this API key lacks the scope {} (it has: {})",
                scope.as_str(),
                match key.scopes.names() {
                    n if n.is_empty() => "none".to_string(),
                    n => n.join(", "),
                }
            )))
            .into_response();
        }
    }
    if state.limiter.should_touch(&key.id) {
        // Best effort: a failed write of when a key was last used fails no request.
        if let Err(e) = state
            .keys
            .touch_key(&hash, &key, runconvert_core::Timestamp::now())
            .await
        {
            tracing::warn!(error = %e, "cannot record a key's use");
        }
    }
    req.extensions_mut().insert(key);
    let limit = user.rate_limit.unwrap_or(state.settings.rate_limit_per_minute);
    if limit == 0 {
        req.extensions_mut().insert(user);
        return next.run(req).await;
    }
    let d = state.limiter.check(&user.id, limit);
    if !d.allowed {
        let err = ApiError::new(
            429,
            runconvert_core::error::codes::RATE_LIMITED,
            format!(
                "too many requests: this key may make {limit} requests a minute; try again in {} s",
                d.retry_after_secs
            ),
        );
        let mut resp = HttpError(err).into_response();
        rate_headers(resp.headers_mut(), &d);
        return resp;
    }
    req.extensions_mut().insert(user);
    let mut resp = next.run(req).await;
    rate_headers(resp.headers_mut(), &d);
    resp
}
