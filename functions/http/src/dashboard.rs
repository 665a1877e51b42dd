//! The dashboard at `/dashboard/`: server-rendered pages (askama templates, escaped by
//! default) on the same Router as the API, so the embedded server and the API Lambda both
//! serve it. Links and redirects are relative, so a path prefix in front (an API
//! Gateway stage) changes nothing.
//!
//! A person signs in by pasting an API key. The session is a cookie naming the key by
//! its hash (never the key), until when, signed with the server's session key:
//! stateless, and every request looks the key up again, so a revoked key's session ends
//! at once. What a page may do is what the key's scopes allow. Every state-changing
//! request must come from the dashboard's own pages (`Sec-Fetch-Site: same-origin`, or
//! an `Origin` naming this host); the API never accepts the cookie.

use crate::auth::hash_key;
use crate::error::HttpError;
use crate::keys::{check_new_key, make_key};
use crate::signing::Signer;
use crate::ApiState;
use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use runconvert_core::keys::{ApiKey, Scope, Scopes};
use runconvert_core::model::{JobStatus, User};
use runconvert_core::ports::{JobFilter, Page};
use runconvert_core::webhooks::Signing;
use runconvert_core::Timestamp;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// What [`enter`] gives, or else the page it answers with, returned from the handler.
macro_rules! entered {
    ($enter:expr) => {
        match $enter.await? {
            Ok(entered) => entered,
            Err(page) => return Ok(page),
        }
    };
}

mod convert;

/// How the dashboard's sessions are signed and sent.
#[derive(Clone, Debug, Default)]
pub struct DashboardSettings {
    /// Signs session cookies; None: the dashboard answers that it is not set up.
    pub signer: Option<Signer>,
    /// Cookies carry `Secure` (the server is reached over TLS).
    pub secure_cookies: bool,
    /// Anyone may sign up: a new user and a first key (`--allow-signup`).
    pub allow_signup: bool,
    /// The credits a signed-up user starts with; None: unlimited.
    pub signup_credits: Option<i64>,
}

pub const COOKIE: &str = "rc_session";
/// A session lasts this long (then the person signs in again).
pub const SESSION_SECONDS: i64 = 8 * 3600;
/// Wrong keys at sign-in: this many a minute per client address.
pub const SIGN_IN_ATTEMPTS_PER_MINUTE: u32 = 10;
/// Sign-ups: this many a minute per client address, and this many from everyone.
pub const SIGN_UPS_PER_MINUTE: u32 = 3;
pub const SIGN_UPS_PER_MINUTE_IN_ALL: u32 = 30;
const JOBS_PER_PAGE: u32 = 20;
const STYLE: &str = include_str!("../templates/dashboard/style.css");
const SCRIPT: &str = include_str!("../templates/dashboard/dashboard.js");

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/", get(|| async { see_other("dashboard/") }))
        .route("/dashboard", get(|| async { see_other("dashboard/") }))
        .route("/dashboard/", get(jobs_page))
        .route("/dashboard/style.css", get(style))
        .route("/dashboard/dashboard.js", get(script))
        .route("/dashboard/sign-in", post(sign_in))
        .route("/dashboard/sign-up", post(sign_up))
        .route("/dashboard/sign-out", post(sign_out))
        .route("/dashboard/keys", get(keys_page).post(create_key))
        .route("/dashboard/keys/{id}/revoke", post(revoke_key))
        .route("/dashboard/jobs/{id}", get(job_page))
        .route("/dashboard/jobs/{id}/progress", get(job_progress))
        .route("/dashboard/jobs/{id}/delete", post(delete_job))
        .route(
            "/dashboard/convert",
            get(convert::convert_page).post(convert::start_convert),
        )
        .route("/dashboard/webhooks", get(webhooks_page).post(create_webhook))
        .route("/dashboard/webhooks/{id}", get(deliveries_page))
        .route("/dashboard/webhooks/{id}/delete", post(delete_webhook))
        .route("/dashboard/usage", get(usage_page))
}

// --- sessions ---------------------------------------------------------------------------

/// The cookie's value: `<key hash>.<expiry, unix seconds>.<signature>`.
pub fn issue_session(signer: &Signer, key_hash: &str, now: Timestamp) -> String {
    let expires = (now.seconds() + SESSION_SECONDS).to_string();
    let sig = signer.sign(&["dashboard session v1", key_hash, &expires]);
    format!("{key_hash}.{expires}.{sig}")
}

/// The key hash a cookie value names, if its signature holds and it has not expired.
pub fn open_session(signer: &Signer, value: &str, now: Timestamp) -> Option<String> {
    let mut parts = value.split('.');
    let (hash, expires, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || expires.parse::<i64>().ok()? < now.seconds() {
        return None;
    }
    signer
        .verify(&["dashboard session v1", hash, expires], sig)
        .then(|| hash.to_string())
}

fn cookie_header(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/dashboard/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("a cookie of hex digits and dots is a valid header")
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Who is signed in: the key's user and the key.
struct Session {
    user: User,
    key: ApiKey,
}

async fn session(state: &ApiState, headers: &HeaderMap) -> Result<Option<Session>, HttpError> {
    let Some(signer) = &state.settings.dashboard.signer else {
        return Ok(None);
    };
    let Some(hash) = cookie_value(headers).and_then(|v| open_session(signer, v, Timestamp::now())) else {
        return Ok(None);
    };
    Ok(state
        .keys
        .key_by_hash(&hash)
        .await?
        .map(|(user, key)| Session { user, key }))
}

/// What a request to the dashboard is: a page to read, or a form that changes something.
#[derive(Clone, Copy, PartialEq)]
enum Visit {
    Page,
    Form,
}

/// What every page and form checks first: a form must come from the dashboard itself; the
/// visitor must be signed in (else the sign-in page); the key must hold `scope`. The way
/// back to `/dashboard/` and the session, or the page that answers instead.
async fn enter(
    state: &ApiState,
    uri: &Uri,
    headers: &HeaderMap,
    visit: Visit,
    scope: Scope,
) -> Result<Result<(String, Session), Response>, HttpError> {
    let root = root(uri);
    if visit == Visit::Form && !same_origin(headers) {
        return Ok(Err(
            (StatusCode::FORBIDDEN, "cross-site request refused").into_response()
        ));
    }
    let Some(s) = session(state, headers).await? else {
        let status = if visit == Visit::Form {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        return Ok(Err(sign_in_page(root, status, None, state)));
    };
    if !s.key.scopes.has(scope) {
        return Ok(Err(lacks(root, &s, scope)));
    }
    Ok(Ok((root, s)))
}

/// A state-changing request from another site (or one that cannot tell) is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    match get("sec-fetch-site") {
        Some(site) => site == "same-origin",
        None => match (get("origin"), get("host")) {
            (Some(origin), Some(host)) => {
                let bare = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"))
                    .unwrap_or("");
                bare.eq_ignore_ascii_case(host)
            }
            _ => false,
        },
    }
}

// --- pages --------------------------------------------------------------------------------

/// The way from a page's URL back to `/dashboard/`, for relative links.
fn root(uri: &Uri) -> String {
    let below = uri.path().split_once("/dashboard/").map(|(_, rest)| rest).unwrap_or("");
    match below.matches('/').count() {
        0 => "./".to_string(),
        n => "../".repeat(n),
    }
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn page(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => {
            let mut r = (status, Html(html)).into_response();
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
            h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
            h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "a dashboard page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be shown").into_response()
        }
    }
}

/// An RFC 3339 time as the pages show it: `2026-12-02 01:02:03` (UTC).
fn shown_time(rfc3339: &str) -> String {
    rfc3339
        .replace('T', " ")
        .trim_end_matches('Z')
        .chars()
        .take(19)
        .collect()
}

fn when(t: Option<&Value>) -> String {
    t.and_then(Value::as_str).map(shown_time).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "dashboard/sign_in.html")]
struct SignInPage {
    root: String,
    error: Option<String>,
    configured: bool,
    signup: bool,
}

fn sign_in_page(root: String, status: StatusCode, error: Option<String>, state: &ApiState) -> Response {
    page(
        status,
        &SignInPage {
            root,
            error,
            configured: state.settings.dashboard.signer.is_some(),
            signup: state.settings.dashboard.allow_signup,
        },
    )
}

#[derive(Template)]
#[template(path = "dashboard/message.html")]
struct MessagePage {
    root: String,
    user_name: String,
    title: String,
    message: String,
}

fn message(root: String, s: &Session, status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        &MessagePage {
            root,
            user_name: s.user.name.clone(),
            title: title.to_string(),
            message: text.to_string(),
        },
    )
}

fn lacks(root: String, s: &Session, scope: Scope) -> Response {
    message(
        root,
        s,
        StatusCode::FORBIDDEN,
        "Not allowed",
        &format!("The key you signed in with lacks the scope {}.", scope.as_str()),
    )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// Who is asking, for the sign-in and sign-up limits: the connection's peer (the embedded
/// server), else the address API Gateway saw, which it appends to `X-Forwarded-For` as
/// the last entry (the entries before it are the client's to write, so never those).
/// An IPv6 client holds a whole /64, so its addresses count as one.
fn client_address(headers: &HeaderMap, extensions: &Extensions) -> String {
    let ip = match extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => Some(peer.ip()),
        None => headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok()),
    };
    match ip.map(|ip| ip.to_canonical()) {
        Some(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(v4) => v4.to_string(),
        None => String::new(),
    }
}

/// The answer that signs the browser in with the key of `key_hash`, showing `then`.
fn signed_in(state: &ApiState, signer: &Signer, key_hash: &str, mut then: Response) -> Response {
    let value = issue_session(signer, key_hash, Timestamp::now());
    then.headers_mut().insert(
        header::SET_COOKIE,
        cookie_header(&value, SESSION_SECONDS, state.settings.dashboard.secure_cookies),
    );
    then
}

/// Sign-in: a wrong key, an unknown one and a malformed one get the same answer, and
/// each client address may try only so often.
async fn sign_in(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
) -> Response {
    let root = root(&uri);
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    let Some(signer) = state.settings.dashboard.signer.clone() else {
        return sign_in_page(root, StatusCode::SERVICE_UNAVAILABLE, None, &state);
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let key = form.get("key").map(|k| k.trim()).unwrap_or("");
    let hash = hash_key(key);
    let found = match state.keys.key_by_hash(&hash).await {
        Ok(found) => found,
        Err(e) => return HttpError::from(e).into_response(),
    };
    if found.is_none() || key.is_empty() {
        let client = client_address(&headers, &extensions);
        let d = state
            .limiter
            .check(&format!("dashboard-sign-in:{client}"), SIGN_IN_ATTEMPTS_PER_MINUTE);
        let (status, text) = if d.allowed {
            (StatusCode::UNAUTHORIZED, "That API key was not accepted.".to_string())
        } else {
            (
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many attempts: try again in {} s.", d.retry_after_secs),
            )
        };
        return sign_in_page(root, status, Some(text), &state);
    }
    signed_in(&state, &signer, &hash, see_other(&root))
}

#[derive(Template)]
#[template(path = "dashboard/welcome.html")]
struct WelcomePage {
    root: String,
    user_name: String,
    key: String,
}

/// Sign-up (only with `--allow-signup`): a new user, its first key (every scope), shown
/// once, and a session with it.
async fn sign_up(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
) -> Response {
    let root = root(&uri);
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    let Some(signer) = state.settings.dashboard.signer.clone() else {
        return sign_in_page(root, StatusCode::SERVICE_UNAVAILABLE, None, &state);
    };
    if !state.settings.dashboard.allow_signup {
        return sign_in_page(
            root,
            StatusCode::FORBIDDEN,
            Some("Sign-up is off on this server: ask its operator for a key.".into()),
            &state,
        );
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let name = form.get("name").map(|n| n.trim()).unwrap_or("");
    if name.is_empty() || name.chars().count() > 100 {
        return sign_in_page(
            root,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Give a name of 1 to 100 characters.".into()),
            &state,
        );
    }
    let mine = state.limiter.check(
        &format!("dashboard-sign-up:{}", client_address(&headers, &extensions)),
        SIGN_UPS_PER_MINUTE,
    );
    let d = if mine.allowed {
        state
            .limiter
            .check("dashboard-sign-up:everyone", SIGN_UPS_PER_MINUTE_IN_ALL)
    } else {
        mine
    };
    if !d.allowed {
        let text = format!("Too many sign-ups: try again in {} s.", d.retry_after_secs);
        return sign_in_page(root, StatusCode::TOO_MANY_REQUESTS, Some(text), &state);
    }
    let user = User {
        id: runconvert_core::new_id(),
        name: name.to_string(),
        rate_limit: None,
        credits: state.settings.dashboard.signup_credits,
    };
    let made = async {
        state.keys.create_user(&user).await?;
        make_key(&state, &user, "first key", Scopes::all()).await
    };
    match made.await {
        Ok((secret, _)) => {
            let welcome = page(
                StatusCode::CREATED,
                &WelcomePage {
                    root,
                    user_name: user.name.clone(),
                    key: secret.clone(),
                },
            );
            signed_in(&state, &signer, &hash_key(&secret), welcome)
        }
        Err(e) => e.into_response(),
    }
}

async fn sign_out(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    let mut r = see_other(&root(&uri));
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie_header("", 0, state.settings.dashboard.secure_cookies),
    );
    r
}

struct JobRow {
    id: String,
    tag: String,
    status: String,
    created: String,
    tasks: usize,
}

#[derive(Template)]
#[template(path = "dashboard/jobs.html")]
struct JobsPage {
    root: String,
    user_name: String,
    jobs: Vec<JobRow>,
    status: String,
    tag: String,
    statuses: Vec<&'static str>,
    total: u64,
    first: u64,
    last: u64,
    prev: Option<String>,
    next: Option<String>,
}

async fn jobs_page(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Page, Scope::TaskRead));
    let status = q.get("status").and_then(|v| JobStatus::parse(v));
    let tag = q.get("tag").map(|t| t.trim()).filter(|t| !t.is_empty());
    let page_no: u32 = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let filter = JobFilter {
        status,
        tag: tag.map(String::from),
        page: Page {
            limit: JOBS_PER_PAGE,
            offset: (page_no - 1).saturating_mul(JOBS_PER_PAGE),
        },
    };
    let (jobs, total) = state.jobs.list_jobs(&s.user.id, &filter).await?;
    let rows: Vec<JobRow> = jobs
        .iter()
        .map(|j| {
            let v = j.to_api_json();
            JobRow {
                id: j.id.clone(),
                tag: v["tag"].as_str().unwrap_or("").to_string(),
                status: v["status"].as_str().unwrap_or("").to_string(),
                created: when(v.get("created_at")),
                tasks: j.tasks.len(),
            }
        })
        .collect();
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(st) = status {
        query.append_pair("status", st.as_str());
    }
    if let Some(t) = tag {
        query.append_pair("tag", t);
    }
    let status_q = match query.finish() {
        q if q.is_empty() => q,
        q => format!("{q}&"),
    };
    let first = filter.page.offset as u64 + 1;
    let last = filter.page.offset as u64 + rows.len() as u64;
    let link = |n: u32| format!("?{status_q}page={n}");
    Ok(page(
        StatusCode::OK,
        &JobsPage {
            root,
            user_name: s.user.name.clone(),
            status: status.map(|s| s.as_str().to_string()).unwrap_or_default(),
            tag: tag.unwrap_or("").to_string(),
            statuses: vec!["created", "processing", "completed", "failed"],
            total,
            first,
            last,
            prev: (page_no > 1).then(|| link(page_no - 1)),
            next: (last < total).then(|| link(page_no + 1)),
            jobs: rows,
        },
    ))
}

struct FileLink {
    name: String,
    url: String,
}

struct TaskRow {
    name: String,
    operation: String,
    status: String,
    percent: i64,
    depends_on: String,
    code: String,
    message: String,
    files: Vec<FileLink>,
}

#[derive(Template)]
#[template(path = "dashboard/job.html")]
struct JobPage {
    root: String,
    user_name: String,
    id: String,
    tag: String,
    status: String,
    created: String,
    ended: String,
    running: bool,
    tasks: Vec<TaskRow>,
    request: String,
    curl: String,
    can_delete: bool,
}

async fn job_page(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Page, Scope::TaskRead));
    let Some(job) = state.jobs.get_job(Some(&s.user.id), &id).await? else {
        return Ok(message(
            root,
            &s,
            StatusCode::NOT_FOUND,
            "Job not found",
            "No job of yours has this id: it may have been deleted, or have expired.",
        ));
    };
    let v = job.to_api_json();
    let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
    let name_of: HashMap<String, String> = tasks
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or("").to_string(),
                t["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut request = serde_json::Map::new();
    if let Some(tag) = v.get("tag").filter(|t| !t.is_null()) {
        request.insert("tag".into(), tag.clone());
    }
    let mut request_tasks = serde_json::Map::new();
    let rows = tasks
        .iter()
        .map(|t| {
            let text = |k: &str| t[k].as_str().unwrap_or("").to_string();
            request_tasks.insert(text("name"), t["payload"].clone());
            TaskRow {
                name: text("name"),
                operation: text("operation"),
                status: text("status"),
                percent: t["percent"].as_i64().unwrap_or(0),
                depends_on: t["depends_on_task_ids"]
                    .as_array()
                    .map(|ids| {
                        ids.iter()
                            .filter_map(|i| name_of.get(i.as_str().unwrap_or("")).cloned())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
                code: text("code"),
                message: text("message"),
                files: t["result"]["files"]
                    .as_array()
                    .map(|fs| {
                        fs.iter()
                            .filter_map(|f| {
                                Some(FileLink {
                                    name: f["filename"].as_str()?.to_string(),
                                    url: f["url"].as_str()?.to_string(),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    request.insert("tasks".into(), Value::Object(request_tasks));
    let request = Value::Object(request);
    let uploads = tasks.iter().filter(|t| t["operation"] == "import/upload").count();
    let curl = curl_command(&api_base(&uri, &headers, &state), &request, uploads);
    let status = v["status"].as_str().unwrap_or("").to_string();
    Ok(page(
        StatusCode::OK,
        &JobPage {
            root,
            user_name: s.user.name.clone(),
            id: job.id.clone(),
            tag: v["tag"].as_str().unwrap_or("").to_string(),
            running: !job.status.is_final(),
            status,
            created: when(v.get("created_at")),
            ended: when(v.get("ended_at")),
            tasks: rows,
            request: serde_json::to_string_pretty(&request).unwrap_or_default(),
            curl,
            can_delete: s.key.scopes.has(Scope::TaskWrite),
        },
    ))
}

/// The API's address as the browser reaches this server: what the page's curl commands use.
fn api_base(uri: &Uri, headers: &HeaderMap, state: &ApiState) -> String {
    let prefix = uri.path().split_once("/dashboard/").map(|(p, _)| p).unwrap_or("");
    format!("{}{prefix}", crate::base_url(headers, state))
}

/// A shell word: single-quoted, with single quotes inside closed and escaped.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The job's request as the curl commands that make it, and send a file to each upload task.
fn curl_command(base: &str, request: &Value, uploads: usize) -> String {
    let mut cmd = format!(
        "curl -X POST {} \\\n  -H \"Authorization: Bearer $RUNCONVERT_API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d {}",
        shell_quote(&format!("{base}/v2/process/jobs")),
        shell_quote(&serde_json::to_string(request).unwrap_or_default())
    );
    if uploads > 0 {
        cmd.push_str(
            "\n\n# then, for each import/upload task, its result.form from the answer: each of its\n\
             # parameters as -F name=value, the file last\n\
             curl -F name=value -F file=@FILE \"$FORM_URL\"",
        );
    }
    cmd
}

/// A job's state for its page's script: status and percent of each task. With `?wait=1`
/// on the embedded server, a job still running is answered when it next changes (a
/// task's or its own end), or after a second with its percents as they are then: the
/// page learns of the end at once.
async fn job_progress(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let answer = |status: StatusCode, body: Value| (status, axum::Json(body)).into_response();
    let s = match session(&state, &headers).await? {
        Some(s) if s.key.scopes.has(Scope::TaskRead) => s,
        Some(_) => {
            return Ok(answer(
                StatusCode::FORBIDDEN,
                serde_json::json!({"message": "the key you signed in with lacks task.read"}),
            ))
        }
        None => {
            return Ok(answer(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"message": "sign in again"}),
            ))
        }
    };
    // Only where changes are told as they happen (not on AWS, where the page asks again
    // a second later instead).
    let wait = state.changes.is_live() && uri.query().is_some_and(|q| q.split('&').any(|p| p == "wait=1"));
    let mut changes = wait.then(|| state.changes.watch(&id));
    let mut job = state.jobs.get_job(Some(&s.user.id), &id).await?;
    if let (Some(changed), Some(j)) = (&mut changes, &job) {
        if !j.status.is_final() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), changed.changed()).await;
            job = state.jobs.get_job(Some(&s.user.id), &id).await?;
        }
    }
    let Some(job) = job else {
        return Ok(answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"message": "no job of yours has this id"}),
        ));
    };
    let v = job.to_api_json();
    let tasks: Vec<Value> = v["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t["name"], "status": t["status"], "percent": t["percent"],
                        "code": t["code"], "message": t["message"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut r = answer(
        StatusCode::OK,
        serde_json::json!({"status": v["status"], "final": job.status.is_final(), "tasks": tasks}),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn delete_job(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Form, Scope::TaskWrite));
    match crate::jobs::remove_job(&state, &s.user.id, &id).await {
        Ok(()) => Ok(see_other(&root)),
        Err(HttpError(e)) if e.status == 404 => Ok(message(
            root,
            &s,
            StatusCode::NOT_FOUND,
            "Job not found",
            "No job of yours has this id.",
        )),
        Err(e) => Err(e),
    }
}

struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    scopes: String,
    created: String,
    last_used: String,
    current: bool,
}

struct ScopeBox {
    name: &'static str,
    allowed: bool,
}

#[derive(Template)]
#[template(path = "dashboard/keys.html")]
struct KeysPage {
    root: String,
    user_name: String,
    keys: Vec<KeyRow>,
    scopes: Vec<ScopeBox>,
    can_write: bool,
    new_key: Option<String>,
    error: Option<String>,
}

async fn render_keys(
    state: &ApiState,
    root: String,
    s: &Session,
    status: StatusCode,
    new_key: Option<String>,
    error: Option<String>,
) -> Result<Response, HttpError> {
    let keys = state.keys.list_keys(&s.user.id).await?;
    Ok(page(
        status,
        &KeysPage {
            root,
            user_name: s.user.name.clone(),
            keys: keys
                .iter()
                .map(|k| KeyRow {
                    id: k.id.clone(),
                    name: k.name.clone(),
                    prefix: k.prefix.clone().map(|p| format!("{p}…")).unwrap_or_else(|| "—".into()),
                    scopes: k.scopes.names().join(" "),
                    created: ts(k.created_at),
                    last_used: k.last_used_at.map(ts).unwrap_or_else(|| "never".into()),
                    current: k.id == s.key.id,
                })
                .collect(),
            scopes: Scope::ALL
                .into_iter()
                .map(|sc| ScopeBox {
                    name: sc.as_str(),
                    allowed: s.key.scopes.has(sc),
                })
                .collect(),
            can_write: s.key.scopes.has(Scope::UserWrite),
            new_key,
            error,
        },
    ))
}

async fn keys_page(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Page, Scope::UserRead));
    render_keys(&state, root, &s, StatusCode::OK, None, None).await
}

async fn create_key(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Form, Scope::UserWrite));
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let name = pairs
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let asked = Scopes::parse(pairs.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()));
    let checked = asked.and_then(|sc| {
        check_new_key(&name, sc, s.key.scopes)
            .map(|_| sc)
            .map_err(|e| e.message)
    });
    match checked {
        Ok(scopes) => {
            let (secret, _) = make_key(&state, &s.user, &name, scopes).await?;
            render_keys(&state, root, &s, StatusCode::CREATED, Some(secret), None).await
        }
        Err(why) => render_keys(&state, root, &s, StatusCode::UNPROCESSABLE_ENTITY, None, Some(why)).await,
    }
}

async fn revoke_key(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Form, Scope::UserWrite));
    match crate::keys::revoke_key(&state, &s.user.id, s.key.scopes, &id).await {
        Ok(()) => Ok(see_other(&format!("{root}keys"))),
        Err(HttpError(e)) if e.status == 404 => Ok(message(
            root,
            &s,
            StatusCode::NOT_FOUND,
            "Key not found",
            "No key of yours has this id.",
        )),
        Err(HttpError(e)) if e.status == 403 => Ok(message(
            root,
            &s,
            StatusCode::FORBIDDEN,
            "Not allowed",
            "The key you signed in with can only revoke keys whose scopes it holds all of.",
        )),
        Err(e) => Err(e),
    }
}

struct HookRow {
    id: String,
    endpoint_url: String,
    events: String,
    created: String,
    state: String,
}

struct EventBox {
    name: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard/webhooks.html")]
struct WebhooksPage {
    root: String,
    user_name: String,
    hooks: Vec<HookRow>,
    events: Vec<EventBox>,
    can_write: bool,
    new_secret: Option<String>,
    error: Option<String>,
}

async fn render_webhooks(
    state: &ApiState,
    root: String,
    s: &Session,
    status: StatusCode,
    new_secret: Option<String>,
    error: Option<String>,
) -> Result<Response, HttpError> {
    let hooks = state.webhooks.list_webhooks(&s.user.id).await?;
    Ok(page(
        status,
        &WebhooksPage {
            root,
            user_name: s.user.name.clone(),
            hooks: hooks
                .iter()
                .map(|h| HookRow {
                    id: h.id.clone(),
                    endpoint_url: h.endpoint_url.clone(),
                    events: h.events.join(" "),
                    created: ts(h.created_at),
                    state: match (&h.disabled_at, &h.disabled_reason) {
                        (None, _) => "enabled".into(),
                        (Some(_), Some(why)) => format!("disabled: {why}"),
                        (Some(_), None) => "disabled".into(),
                    },
                })
                .collect(),
            events: runconvert_core::ports::EventName::ALL
                .iter()
                .map(|e| EventBox { name: e.as_str() })
                .collect(),
            can_write: s.key.scopes.has(Scope::WebhookWrite),
            new_secret,
            error,
        },
    ))
}

fn ts(t: Timestamp) -> String {
    shown_time(&t.to_rfc3339())
}

async fn webhooks_page(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Page, Scope::WebhookRead));
    render_webhooks(&state, root, &s, StatusCode::OK, None, None).await
}

async fn create_webhook(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Form, Scope::WebhookWrite));
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let mut obj = serde_json::Map::new();
    if let Some((_, url)) = pairs.iter().find(|(k, _)| k == "endpoint_url") {
        obj.insert("endpoint_url".into(), Value::String(url.trim().to_string()));
    }
    let events: Vec<Value> = pairs
        .iter()
        .filter(|(k, _)| k == "event")
        .map(|(_, v)| Value::String(v.clone()))
        .collect();
    obj.insert("events".into(), Value::Array(events));
    match crate::webhooks::new_webhook(&state, &s.user.id, &obj, Signing::RunConvert).await {
        Ok(hook) => render_webhooks(&state, root, &s, StatusCode::CREATED, Some(hook.secret), None).await,
        Err(HttpError(e)) if e.status < 500 => {
            render_webhooks(
                &state,
                root,
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(e.message),
            )
            .await
        }
        Err(e) => Err(e),
    }
}

async fn delete_webhook(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Form, Scope::WebhookWrite));
    if state.webhooks.delete_webhook(&s.user.id, &id).await? {
        Ok(see_other(&format!("{root}webhooks")))
    } else {
        Ok(message(
            root,
            &s,
            StatusCode::NOT_FOUND,
            "Webhook not found",
            "No webhook of yours has this id.",
        ))
    }
}

struct DeliveryRow {
    event: String,
    job_id: String,
    status: String,
    attempts: u32,
    last_status: String,
    last_error: String,
    created: String,
}

#[derive(Template)]
#[template(path = "dashboard/deliveries.html")]
struct DeliveriesPage {
    root: String,
    user_name: String,
    endpoint_url: String,
    deliveries: Vec<DeliveryRow>,
}

async fn deliveries_page(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Page, Scope::WebhookRead));
    let hook = state
        .webhooks
        .list_webhooks(&s.user.id)
        .await?
        .into_iter()
        .find(|h| h.id == id);
    let (Some(hook), Some(list)) = (hook, state.webhooks.list_deliveries(&s.user.id, &id, 100).await?) else {
        return Ok(message(
            root,
            &s,
            StatusCode::NOT_FOUND,
            "Webhook not found",
            "No webhook of yours has this id.",
        ));
    };
    Ok(page(
        StatusCode::OK,
        &DeliveriesPage {
            root,
            user_name: s.user.name.clone(),
            endpoint_url: hook.endpoint_url,
            deliveries: list
                .iter()
                .map(|d| DeliveryRow {
                    event: d.event.clone(),
                    job_id: d.job_id.clone(),
                    status: serde_json::to_value(d.status)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    attempts: d.attempts,
                    last_status: d.last_status_code.map(|c| c.to_string()).unwrap_or_default(),
                    last_error: d.last_error.clone().unwrap_or_default(),
                    created: ts(d.created_at),
                })
                .collect(),
        },
    ))
}

struct DayBar {
    day: String,
    jobs: u64,
    /// Of the busiest day's, in percent (the bar's length).
    share: u64,
}

struct LimitRow {
    name: String,
    value: String,
}

#[derive(Template)]
#[template(path = "dashboard/usage.html")]
struct UsagePage {
    root: String,
    user_name: String,
    credits: String,
    rate_limit: String,
    days: Vec<DayBar>,
    busiest: u64,
    counted_all: bool,
    limits: Vec<LimitRow>,
}

/// The most jobs the usage page reads to count the last 30 days.
const USAGE_MAX_JOBS: u32 = 5000;

async fn usage_page(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Page, Scope::UserRead));
    const DAY_MS: i64 = 86_400_000;
    let today = Timestamp::now().millis() / DAY_MS;
    let mut counts = [0u64; 30];
    let mut offset = 0u32;
    let mut counted_all = true;
    'pages: loop {
        let filter = JobFilter {
            page: Page { limit: 500, offset },
            ..JobFilter::default()
        };
        let (jobs, _) = state.jobs.list_jobs(&s.user.id, &filter).await?;
        for j in &jobs {
            let age = today - j.created_at.millis() / DAY_MS;
            if !(0..30).contains(&age) {
                // Newest first: the rest are older still.
                break 'pages;
            }
            counts[29 - age as usize] += 1;
        }
        offset += jobs.len() as u32;
        if (jobs.len() as u32) < filter.page.limit {
            break;
        }
        if offset >= USAGE_MAX_JOBS {
            counted_all = false;
            break;
        }
    }
    let most = counts.iter().copied().max().unwrap_or(0);
    let busiest = most.max(1);
    let days = counts
        .iter()
        .enumerate()
        .map(|(i, n)| DayBar {
            day: ts(Timestamp((today - 29 + i as i64) * DAY_MS))
                .chars()
                .take(10)
                .collect(),
            jobs: *n,
            share: n * 100 / busiest,
        })
        .collect();
    let credits = match state.keys.credits(&s.user.id).await? {
        Some(n) => n.to_string(),
        None => "unlimited".into(),
    };
    let rate_limit = match s.user.rate_limit.unwrap_or(state.settings.rate_limit_per_minute) {
        0 => "none".to_string(),
        n => format!("{n} requests a minute"),
    };
    let l = &state.settings.limits;
    let mut limits = vec![
        ("tasks in a job".to_string(), l.max_tasks.to_string()),
        ("import/base64 file, bytes".to_string(), l.max_base64_bytes.to_string()),
        (
            "request body, bytes".to_string(),
            state.settings.max_body_bytes.to_string(),
        ),
        (
            "upload wait, seconds".to_string(),
            state.settings.upload_timeout.as_secs().to_string(),
        ),
        (
            "longest /wait, seconds".to_string(),
            state.settings.max_wait.as_secs().to_string(),
        ),
    ];
    limits.extend(
        state
            .settings
            .reported_limits
            .iter()
            .map(|(k, v)| (k.replace('_', " "), v.to_string().trim_matches('"').to_string())),
    );
    Ok(page(
        StatusCode::OK,
        &UsagePage {
            root,
            user_name: s.user.name.clone(),
            credits,
            rate_limit,
            days,
            busiest: most,
            counted_all,
            limits: limits
                .into_iter()
                .map(|(name, value)| LimitRow { name, value })
                .collect(),
        },
    ))
}

#[cfg(test)]
mod client_address_tests {
    use super::client_address;
    use axum::extract::ConnectInfo;
    use axum::http::{Extensions, HeaderMap, HeaderValue};
    use std::net::SocketAddr;

    fn forwarded(xff: &str) -> String {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        client_address(&h, &Extensions::new())
    }

    #[test]
    fn the_last_forwarded_address_and_ipv6_by_64() {
        // The entry API Gateway appended, not the one the client wrote.
        assert_eq!(forwarded("198.51.100.7, 203.0.113.9"), "203.0.113.9");
        // One IPv6 client, one bucket, whichever of its addresses it uses.
        assert_eq!(forwarded("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(forwarded("2001:db8:1:2:ffff::9"), "2001:db8:1:2::/64");
        assert_eq!(forwarded("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(forwarded("not an address"), "");
        // The connection's own address comes first.
        let mut ext = Extensions::new();
        ext.insert(ConnectInfo("192.0.2.1:4000".parse::<SocketAddr>().unwrap()));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(client_address(&h, &ext), "192.0.2.1");
    }
}
