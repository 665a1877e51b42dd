//! Upload and download routes for a server that keeps files on its own disk (the
//! embedded mode). On AWS the same forms and links point at S3 instead, so these routes
//! are not mounted there.
//!
//! - `POST /v2/upload/{task_id}`: multipart form with the form's `parameters` first and
//!   the file last; answers 201 with the task.
//! - `GET /v2/files/{job_id}/{task_id}/{filename}?expires=..&signature=..`: a signed,
//!   expiring download link.

use crate::error::{HttpError, HttpResult};
use crate::signing::{encode_segment, Signer};
use crate::ApiState;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use runconvert_core::error::codes;
use runconvert_core::formats::{format_of_filename, mime_type_of};
use runconvert_core::model::{FileRef, TaskResult, TaskStatus, UploadForm};
use runconvert_core::names::safe_filename;
use runconvert_core::ops::Operation;
use runconvert_core::ports::{Event, EventName, TaskTransition};
use runconvert_core::{ApiError, Timestamp};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How much of a file a download reads at a time. Each read of a tokio file is a trip to
/// the blocking pool: at ReaderStream's default 4 KiB, a 36 MB PNG took 9,000 of them and
/// half a second.
const DOWNLOAD_CHUNK: usize = 256 << 10;

/// Where a disk-backed file store keeps things.
pub trait LocalFiles: Send + Sync {
    /// The path of a stored file.
    fn path_of(&self, job_id: &str, task_id: &str, filename: &str) -> PathBuf;
    /// A directory for files on their way in (on the same file system as the store).
    fn staging_dir(&self) -> PathBuf;
}

/// Builds and checks the signed URLs of a disk-backed store.
#[derive(Debug, Clone)]
pub struct UrlSigner {
    pub signer: Signer,
    /// The base URL clients reach this server at, without a trailing slash.
    pub public_url: String,
    /// Download links carry the file name in the query (`?name=`), not the path: behind
    /// API Gateway the path reaches the function decoded, so a `#` or a `%41` in a
    /// name would no longer match its signature; the query stays as sent.
    pub name_in_query: bool,
}

impl UrlSigner {
    fn upload_parts<'a>(task_id: &'a str, expires: &'a str) -> [&'a str; 3] {
        ["upload", task_id, expires]
    }

    fn download_parts<'a>(
        job_id: &'a str,
        task_id: &'a str,
        filename: &'a str,
        expires: &'a str,
        inline: &'a str,
    ) -> [&'a str; 6] {
        ["download", job_id, task_id, filename, expires, inline]
    }

    pub fn upload_form(&self, task_id: &str, expires: Timestamp) -> UploadForm {
        let exp = expires.seconds().to_string();
        let signature = self.signer.sign(&Self::upload_parts(task_id, &exp));
        let mut parameters = Map::new();
        parameters.insert("expires".into(), Value::String(exp.clone()));
        parameters.insert("signature".into(), Value::String(signature.clone()));
        UploadForm {
            // The signature rides in the URL too, so a form is checked before its body is read.
            url: format!(
                "{}/v2/upload/{}?expires={exp}&signature={signature}",
                self.public_url,
                encode_segment(task_id)
            ),
            parameters,
        }
    }

    /// Checks a download link's signature and expiry (its query: `expires`, `inline`,
    /// `signature`); answers whether it asks for the file inline.
    pub fn check_download(
        &self,
        job_id: &str,
        task_id: &str,
        filename: &str,
        q: &HashMap<String, String>,
    ) -> HttpResult<bool> {
        let expires = q.get("expires").map(String::as_str).unwrap_or_default();
        let inline = q.get("inline").map(String::as_str).unwrap_or("0");
        let signature = q.get("signature").map(String::as_str).unwrap_or_default();
        if !self.signer.verify(
            &Self::download_parts(job_id, task_id, filename, expires, inline),
            signature,
        ) {
            return Err(forbidden("the download link's signature is missing or wrong"));
        }
        check_expiry(expires)?;
        Ok(inline == "1")
    }

    pub fn download_url(&self, job_id: &str, file: &FileRef, expires: Timestamp, inline: bool) -> String {
        let exp = expires.seconds().to_string();
        let inl = if inline { "1" } else { "0" };
        let sig = self
            .signer
            .sign(&Self::download_parts(job_id, &file.task_id, &file.filename, &exp, inl));
        if self.name_in_query {
            return format!(
                "{}/v2/files/{}/{}?name={}&expires={exp}&inline={inl}&signature={sig}",
                self.public_url,
                encode_segment(job_id),
                encode_segment(&file.task_id),
                encode_segment(&file.filename)
            );
        }
        format!(
            "{}/v2/files/{}/{}/{}?expires={exp}&inline={inl}&signature={sig}",
            self.public_url,
            encode_segment(job_id),
            encode_segment(&file.task_id),
            encode_segment(&file.filename)
        )
    }
}

pub struct LocalFilesState {
    pub api: Arc<ApiState>,
    pub urls: UrlSigner,
    pub local: Arc<dyn LocalFiles>,
    pub max_upload_bytes: u64,
    pub uploads: UploadClaims,
}

/// A store that can hand out a short-lived direct link to a file (S3's presigned GET).
pub trait Presigner: Send + Sync {
    fn presigned_get(&self, job_id: &str, file: &FileRef, inline: bool) -> String;
}

struct RedirectState {
    urls: UrlSigner,
    presigner: Arc<dyn Presigner>,
}

/// How long the direct link a download link redirects to lives: only for the redirect.
pub const REDIRECT_LINK_SECONDS: u64 = 300;

/// Download links of a store whose files are elsewhere (S3): the link is this API's,
/// signed and valid for the whole retention period; it answers `302` to a direct link
/// presigned just then, with the credentials the API holds at that moment (so no link
/// dies with the temporary credentials of the function that made it).
pub fn redirect_files_router(urls: UrlSigner, presigner: Arc<dyn Presigner>) -> Router {
    Router::new()
        .route("/v2/files/{job_id}/{task_id}/{filename}", get(redirect_download))
        .route("/v2/files/{job_id}/{task_id}", get(redirect_download_named))
        .with_state(Arc::new(RedirectState { urls, presigner }))
}

/// A link with the file's name in its query (`UrlSigner::name_in_query`).
async fn redirect_download_named(
    state: State<Arc<RedirectState>>,
    Path((job_id, task_id)): Path<(String, String)>,
    q: Query<HashMap<String, String>>,
) -> HttpResult<Response> {
    let filename = q.get("name").cloned().unwrap_or_default();
    redirect_download(state, Path((job_id, task_id, filename)), q).await
}

async fn redirect_download(
    State(state): State<Arc<RedirectState>>,
    Path((job_id, task_id, filename)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResult<Response> {
    let inline = state.urls.check_download(&job_id, &task_id, &filename, &q)?;
    let file = FileRef {
        filename,
        size: 0,
        url: None,
        task_id,
    };
    let target = state.presigner.presigned_get(&job_id, &file, inline);
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&target)
            .map_err(|_| HttpError(ApiError::internal("a presigned link is not a header value")))?,
    );
    // The direct link is a credential for five minutes: not cached, not passed on.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(resp)
}

pub fn local_files_router(state: Arc<LocalFilesState>) -> Router {
    Router::new()
        .route("/v2/upload/{task_id}", post(upload).layer(DefaultBodyLimit::disable()))
        .route("/v2/files/{job_id}/{task_id}/{filename}", get(download))
        .with_state(state)
}

fn forbidden(msg: &str) -> HttpError {
    HttpError(ApiError::forbidden(msg))
}

fn check_expiry(expires: &str) -> HttpResult<()> {
    let exp: i64 = expires
        .parse()
        .map_err(|_| forbidden("the link's expiry is not valid"))?;
    // Expiry is in whole seconds, rounded down from the deadline: expired from that second on.
    if Timestamp::now().millis() >= exp.saturating_mul(1000) {
        return Err(forbidden("this link has expired"));
    }
    Ok(())
}

/// Removes a staged file unless it was moved away.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The task an upload form is for, if the form is genuine, unexpired and the task waits.
async fn check_upload(
    state: &LocalFilesState,
    task_id: &str,
    params: &HashMap<String, String>,
) -> HttpResult<runconvert_core::Task> {
    let expires = params.get("expires").map(String::as_str).unwrap_or_default();
    let signature = params.get("signature").map(String::as_str).unwrap_or_default();
    if !state
        .urls
        .signer
        .verify(&UrlSigner::upload_parts(task_id, expires), signature)
    {
        return Err(forbidden(
            "the upload form's signature is missing or wrong (send its parameters before the file)",
        ));
    }
    check_expiry(expires)?;
    let task = state
        .api
        .jobs
        .get_task(None, task_id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    if !matches!(task.operation, Operation::ImportUpload(_)) {
        return Err(HttpError(ApiError::bad_request("this task does not take uploads")));
    }
    still_waiting(&task)?;
    Ok(task)
}

fn still_waiting(task: &runconvert_core::Task) -> HttpResult<()> {
    if task.status != TaskStatus::Waiting {
        return Err(HttpError(ApiError::bad_request(format!(
            "this task is {} and takes no more uploads",
            task.status.as_str()
        ))));
    }
    Ok(())
}

/// The longest non-file field of an upload form, and how many there may be.
pub const MAX_FORM_FIELD_BYTES: usize = 4096;
pub const MAX_FORM_FIELDS: usize = 16;
/// How often an upload in progress checks that its task still waits for it.
const UPLOAD_RECHECK: Duration = Duration::from_secs(1);

/// The uploads in progress, one per task at most: a form is single-use.
#[derive(Default)]
pub struct UploadClaims(Mutex<HashSet<String>>);

/// An upload's hold on its form, given up when it ends (whatever the outcome).
struct Claim<'a>(&'a UploadClaims, String);

impl UploadClaims {
    fn claim(&self, task_id: &str) -> Option<Claim<'_>> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(task_id.to_string())
            .then(|| Claim(self, task_id.to_string()))
    }

    /// Whether an upload to this task is under way.
    pub fn in_progress(&self, task_id: &str) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(task_id)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

/// A short form field, read only up to the cap.
async fn small_field(field: &mut axum::extract::multipart::Field<'_>, name: &str) -> HttpResult<String> {
    let bad = |m: String| HttpError(ApiError::bad_request(m));
    let mut text = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| bad(format!("form field {name}: {e}")))?
    {
        if text.len() + chunk.len() > MAX_FORM_FIELD_BYTES {
            return Err(bad(format!(
                "form field {name} is longer than {MAX_FORM_FIELD_BYTES} bytes (only the file may be large)"
            )));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text).map_err(|_| bad(format!("form field {name} is not UTF-8 text")))
}

async fn upload(
    State(state): State<Arc<LocalFilesState>>,
    Path(task_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    mut form: Multipart,
) -> HttpResult<Response> {
    let bad = |m: String| HttpError(ApiError::bad_request(m));
    // A refusal reads on (a bounded part of) the body, without keeping it, so that the
    // client sees the answer rather than a connection cut off mid-send.
    let mut budget = REFUSAL_DRAIN;
    // The form's URL carries its signature: a forged or stale form is refused before a
    // byte of the body is taken.
    let mut checked = if query.contains_key("signature") {
        match check_upload(&state, &task_id, &query).await {
            Ok(task) => Some(task),
            Err(e) => {
                let _ = tokio::time::timeout(REFUSAL_DRAIN_TIME, drain_form(&mut form, budget)).await;
                return Err(e);
            }
        }
    } else {
        None
    };
    let mut params: HashMap<String, String> = HashMap::new();
    let mut fields = 0usize;
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return Err(bad("the form has no `file` field".into())),
            Err(e) => return Err(bad(format!("the multipart body is not valid: {e}"))),
        };
        let name = field.name().unwrap_or_default().to_string();
        let result = if name != "file" {
            fields += 1;
            if fields > MAX_FORM_FIELDS {
                Err(bad(format!("the form has more than {MAX_FORM_FIELDS} fields")))
            } else {
                match small_field(&mut field, &name).await {
                    Ok(text) => {
                        params.insert(name, text);
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
        } else {
            take_file(&state, &task_id, &query, &params, checked.take(), &mut field).await
        };
        if result.is_err() {
            let _ = tokio::time::timeout(REFUSAL_DRAIN_TIME, drain_field(&mut field, &mut budget)).await;
            drop(field);
            let _ = tokio::time::timeout(REFUSAL_DRAIN_TIME, drain_form(&mut form, budget)).await;
        }
        return result;
    }
}

/// The file name a form part's `Content-Disposition` gives, as clients write it: quoted
/// (`filename="a b.jpg"`, with `\"` inside), in RFC 5987 form (`filename*=UTF-8''a%20b.jpg`,
/// preferred when both are there), or bare, as CloudConvert's Node SDK sends it
/// (`filename=a b (1).jpg`: the rest of the header, spaces and all).
pub fn part_filename(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(axum::http::header::CONTENT_DISPOSITION)?;
    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let lower = text.to_ascii_lowercase();
    // A parameter starts the value or follows a `;` (not inside another one's quotes).
    let param = |name: &str| {
        lower
            .match_indices(name)
            .map(|(i, _)| i)
            .find(|&i| lower[..i].trim_end().ends_with(';'))
    };
    if let Some(at) = param("filename*=") {
        let rest = &text[at + "filename*=".len()..];
        let rest = rest.split(';').next().unwrap_or("").trim().trim_matches('"');
        if let Some((_, encoded)) = rest.split_once("''") {
            let bytes: Vec<u8> = percent_decode(encoded);
            if let Ok(name) = String::from_utf8(bytes) {
                return Some(name);
            }
        }
    }
    let at = param("filename=")?;
    let rest = text[at + "filename=".len()..].trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => name.extend(chars.next()),
                '"' => return Some(html_form_unescape(&name)),
                c => name.push(c),
            }
        }
        return Some(html_form_unescape(&name));
    }
    // Bare: up to a `;` that starts another parameter (`; name="file"`) or ends the
    // header; a `;` inside the name stays.
    let end = rest
        .match_indices(';')
        .map(|(i, _)| i)
        .find(|&i| {
            let after = rest[i + 1..].trim_start();
            after.is_empty()
                || after.split_once('=').is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "*-_".contains(c))
                })
        })
        .unwrap_or(rest.len());
    Some(rest[..end].trim_end().to_string()).filter(|n| !n.is_empty())
}

/// What browsers and Python's requests (urllib3) escape in a quoted form file name, as the
/// HTML standard says: `"` as `%22`, back as it was (`safe_filename` then makes it `_`).
fn html_form_unescape(name: &str) -> String {
    name.replace("%22", "\"")
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// What a refused upload reads on before it answers, at most, and for how long.
const REFUSAL_DRAIN: usize = 8 << 20;
const REFUSAL_DRAIN_TIME: Duration = Duration::from_secs(2);

async fn drain_field(field: &mut axum::extract::multipart::Field<'_>, budget: &mut usize) {
    while *budget > 0 {
        match field.chunk().await {
            Ok(Some(chunk)) => *budget = budget.saturating_sub(chunk.len()),
            _ => return,
        }
    }
}

/// Reads the rest of a form, field by field (each to its end, so nothing is skipped
/// unmeasured), until `budget` bytes are gone.
async fn drain_form(form: &mut Multipart, mut budget: usize) {
    while budget > 0 {
        let Ok(Some(mut field)) = form.next_field().await else {
            return;
        };
        drain_field(&mut field, &mut budget).await;
    }
}

/// The file of an upload: the form checked, claimed, the file staged while the task is
/// rechecked, stored, and the task finished.
async fn take_file(
    state: &LocalFilesState,
    task_id: &str,
    query: &HashMap<String, String>,
    params: &HashMap<String, String>,
    checked: Option<runconvert_core::Task>,
    field: &mut axum::extract::multipart::Field<'_>,
) -> HttpResult<Response> {
    let bad = |m: String| HttpError(ApiError::bad_request(m));
    // The file comes last: check the form before taking a byte of it. Parameters sent in
    // the body as well as the URL must be the URL's.
    let task = match checked {
        Some(task) => {
            for k in ["expires", "signature"] {
                if params.get(k).is_some_and(|v| Some(v) != query.get(k)) {
                    return Err(forbidden("the upload form's parameters do not match its URL"));
                }
            }
            task
        }
        None => check_upload(state, task_id, params).await?,
    };
    let Some(_claim) = state.uploads.claim(&task.id) else {
        return Err(bad(
            "another upload to this form is in progress (a form takes one file, once)".into(),
        ));
    };
    // A form used up between the check and the claim.
    let api = &state.api;
    let current = |id: String| async move {
        match api.jobs.get_task(None, &id).await? {
            Some(t) => still_waiting(&t),
            None => Err(HttpError(ApiError::not_found("task (its job was deleted)"))),
        }
    };
    current(task.id.clone()).await?;
    let Operation::ImportUpload(op) = &task.operation else {
        unreachable!("checked")
    };
    let sent = part_filename(field.headers());
    let filename = safe_filename(op.filename.as_deref().or(sent.as_deref()).unwrap_or("file"));

    let staging = state.local.staging_dir();
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(runconvert_core::ports::PortError::new)?;
    let staged = Staged(staging.join(format!("{task_id}-{}", runconvert_core::new_id())));
    // Buffered: a form's file arrives a few KiB at a time, and each write of a tokio file
    // is a trip to the blocking pool.
    let mut out = tokio::fs::File::create(&staged.0)
        .await
        .map(|f| tokio::io::BufWriter::with_capacity(DOWNLOAD_CHUNK, f))
        .map_err(runconvert_core::ports::PortError::new)?;
    let mut size: u64 = 0;
    let mut recheck = tokio::time::interval(UPLOAD_RECHECK);
    recheck.tick().await;
    loop {
        let chunk = tokio::select! {
            chunk = field.chunk() => chunk.map_err(|e| bad(format!("the upload broke off: {e}")))?,
            _ = recheck.tick() => {
                // A deleted job (or a task that timed out) ends its upload now.
                current(task.id.clone()).await?;
                continue;
            }
        };
        let Some(chunk) = chunk else { break };
        size += chunk.len() as u64;
        if size > state.max_upload_bytes {
            return Err(HttpError(ApiError::new(
                413,
                codes::PAYLOAD_TOO_LARGE,
                format!(
                    "the file is larger than this server's limit of {} bytes",
                    state.max_upload_bytes
                ),
            )));
        }
        out.write_all(&chunk)
            .await
            .map_err(runconvert_core::ports::PortError::new)?;
    }
    out.flush().await.map_err(runconvert_core::ports::PortError::new)?;
    drop(out);
    current(task.id.clone()).await?;

    let size = api.files.put(&task.job_id, &task.id, &filename, &staged.0).await?;
    let file = FileRef {
        filename: filename.clone(),
        size,
        url: None,
        task_id: task.id.clone(),
    };
    let done = api
        .jobs
        .transition_task(&TaskTransition {
            task_id: task.id.clone(),
            from: TaskStatus::Waiting,
            to: TaskStatus::Finished,
            at: Timestamp::now(),
            code: None,
            message: None,
            result: Some(TaskResult {
                files: vec![file],
                ..TaskResult::default()
            }),
        })
        .await?;
    if !done {
        // Deleted or timed out while the file was being stored: keep nothing of it.
        let _ = tokio::fs::remove_file(state.local.path_of(&task.job_id, &task.id, &filename)).await;
        if api.jobs.get_job(None, &task.job_id).await?.is_none() {
            let _ = api.files.delete_job_files(&task.job_id).await;
        }
        return Err(bad(
            "this task stopped waiting for its file (it timed out or was deleted)".into(),
        ));
    }
    let task = api
        .jobs
        .get_task(None, &task.id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    if let Err(e) = api
        .events
        .publish(Event::task(EventName::TaskFinished, task.clone()))
        .await
    {
        tracing::warn!(error = %e, "could not publish an event");
    }
    if let Err(e) = api.dispatcher.dispatch(&task.job_id).await {
        tracing::error!(job = %task.job_id, error = %e, "could not dispatch after an upload");
    }
    Ok((StatusCode::CREATED, Json(task.to_api_json())).into_response())
}

async fn download(
    State(state): State<Arc<LocalFilesState>>,
    Path((job_id, task_id, filename)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> HttpResult<Response> {
    let inline = state.urls.check_download(&job_id, &task_id, &filename, &q)?;
    let path = state.local.path_of(&job_id, &task_id, &filename);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            return Err(HttpError(ApiError::not_found(
                "file (it may have been deleted after the retention period)",
            )))
        }
    };
    let meta = file.metadata().await.map_err(runconvert_core::ports::PortError::new)?;
    let len = meta.len();
    // Stored files never change in place: size and time of storing name a version.
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let etag = format!("\"{len:x}-{modified:x}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        // Weak comparison, as If-None-Match asks (RFC 9110 §13.1.2).
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        })
    {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp.headers_mut()
            .insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex and quotes"));
        return Ok(resp);
    }
    // A Range is honoured unless If-Range names another version.
    let range_wanted = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if range_wanted => match byte_range(r, len) {
            RangeAsk::Whole => None,
            RangeAsk::Part(a, b) => Some((a, b)),
            RangeAsk::Unsatisfiable => {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                resp.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).expect("digits"),
                );
                return Ok(resp);
            }
        },
        _ => None,
    };
    let mime = format_of_filename(&filename)
        .map(mime_type_of)
        .unwrap_or("application/octet-stream");
    let disposition = format!(
        "{}; filename=\"{}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        filename
            .replace(['"', '\\'], "_")
            .chars()
            .filter(|c| c.is_ascii() && !c.is_control())
            .collect::<String>(),
        encode_segment(&filename)
    );
    let mut file = file;
    use tokio_util::io::ReaderStream;
    let (body, sent) = match range {
        Some((a, b)) => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            file.seek(std::io::SeekFrom::Start(a))
                .await
                .map_err(runconvert_core::ports::PortError::new)?;
            let part = file.take(b - a + 1);
            (
                Body::from_stream(ReaderStream::with_capacity(part, DOWNLOAD_CHUNK)),
                b - a + 1,
            )
        }
        None => (
            Body::from_stream(ReaderStream::with_capacity(file, DOWNLOAD_CHUNK)),
            len,
        ),
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(sent));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex and quotes"));
    if let Some((a, b)) = range {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")).expect("digits"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A user's file never runs as a page of this origin: scripts of an HTML or SVG file
    // shown inline run in a sandbox with a unique origin, and load nothing.
    if runconvert_core::formats::is_active_content(&filename) || runconvert_core::formats::is_active_mime(mime) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"),
        );
    }
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}

#[derive(Debug, PartialEq)]
enum RangeAsk {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range of a file of `len` bytes (RFC 9110 §14.1.2). Several ranges, or
/// a header this does not read, get the whole file, which the RFC allows.
fn byte_range(header: &str, len: u64) -> RangeAsk {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.is_empty(), last.is_empty()) {
        // The last N bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(n) if len > 0 => RangeAsk::Part(len.saturating_sub(n), len - 1),
            Some(_) => RangeAsk::Unsatisfiable,
            None => RangeAsk::Whole,
        },
        (false, _) => {
            let Some(a) = parse(first) else { return RangeAsk::Whole };
            let b = if last.is_empty() { Some(u64::MAX) } else { parse(last) };
            match b {
                None => RangeAsk::Whole,
                Some(b) if b < a => RangeAsk::Whole,
                Some(_) if a >= len => RangeAsk::Unsatisfiable,
                Some(b) => RangeAsk::Part(a, b.min(len - 1)),
            }
        }
        (true, true) => RangeAsk::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_byte_ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), RangeAsk::Part(0, 9));
        assert_eq!(byte_range("bytes=90-", 100), RangeAsk::Part(90, 99));
        assert_eq!(byte_range("bytes=-10", 100), RangeAsk::Part(90, 99));
        assert_eq!(byte_range("bytes=-500", 100), RangeAsk::Part(0, 99));
        assert_eq!(byte_range("bytes=50-500", 100), RangeAsk::Part(50, 99));
        assert_eq!(byte_range("bytes=100-", 100), RangeAsk::Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 100), RangeAsk::Unsatisfiable);
        assert_eq!(byte_range("bytes=0-1,5-6", 100), RangeAsk::Whole);
        assert_eq!(byte_range("items=0-1", 100), RangeAsk::Whole);
        assert_eq!(byte_range("bytes=9-3", 100), RangeAsk::Whole);
        assert_eq!(byte_range("bytes=+5-9", 100), RangeAsk::Whole);
    }
}

#[cfg(test)]
mod part_filename_tests {
    use super::part_filename;
    use axum::http::{header, HeaderMap, HeaderValue};

    fn name(disposition: &str) -> Option<String> {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(disposition).unwrap());
        part_filename(&h)
    }

    #[test]
    fn quoted_bare_and_encoded_names() {
        assert_eq!(
            name(r#"form-data; name="file"; filename="a b.jpg""#).as_deref(),
            Some("a b.jpg")
        );
        assert_eq!(
            name(r#"form-data; name="file"; filename="say \"hi\".jpg""#).as_deref(),
            Some("say \"hi\".jpg")
        );
        // As browsers and Python's requests escape a quote (the HTML standard's form encoding).
        assert_eq!(
            name(r#"form-data; name="file"; filename="say %22hi%22.jpg""#).as_deref(),
            Some("say \"hi\".jpg")
        );
        assert_eq!(
            name(r#"form-data;name="file";filename=my photo (1).jpg"#).as_deref(),
            Some("my photo (1).jpg")
        );
        assert_eq!(
            name(r#"form-data; name="file"; filename="fallback.jpg"; filename*=UTF-8''%C3%A9t%C3%A9.jpg"#).as_deref(),
            Some("été.jpg")
        );
        assert_eq!(
            name(r#"form-data; filename=a.jpg; name="file""#).as_deref(),
            Some("a.jpg")
        );
        assert_eq!(
            name(r#"form-data; name="file"; filename=a;b.jpg;"#).as_deref(),
            Some("a;b.jpg")
        );
        assert_eq!(
            name(r#"form-data; name="x filename=evil.sh"; filename="ok.jpg""#).as_deref(),
            Some("ok.jpg")
        );
        assert_eq!(name(r#"form-data; name="file""#), None);
        assert_eq!(name(r#"form-data; name="file"; filename="#), None);
    }
}
