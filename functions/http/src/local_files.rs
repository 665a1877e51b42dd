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
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

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
        parameters.insert("expires".into(), Value::String(exp));
        parameters.insert("signature".into(), Value::String(signature));
        UploadForm {
            url: format!("{}/v2/upload/{}", self.public_url, encode_segment(task_id)),
            parameters,
        }
    }

    pub fn download_url(&self, job_id: &str, file: &FileRef, expires: Timestamp, inline: bool) -> String {
        let exp = expires.seconds().to_string();
        let inl = if inline { "1" } else { "0" };
        let sig = self
            .signer
            .sign(&Self::download_parts(job_id, &file.task_id, &file.filename, &exp, inl));
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
    if task.status != TaskStatus::Waiting {
        return Err(HttpError(ApiError::bad_request(format!(
            "this task is {} and takes no more uploads",
            task.status.as_str()
        ))));
    }
    Ok(task)
}

async fn upload(
    State(state): State<Arc<LocalFilesState>>,
    Path(task_id): Path<String>,
    mut form: Multipart,
) -> HttpResult<Response> {
    let bad = |m: String| HttpError(ApiError::bad_request(m));
    let mut params: HashMap<String, String> = HashMap::new();
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("the multipart body is not valid: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name != "file" {
            let text = field.text().await.map_err(|e| bad(format!("form field {name}: {e}")))?;
            params.insert(name, text);
            continue;
        }
        // The file comes last: check the form before taking a byte of it.
        let task = match check_upload(&state, &task_id, &params).await {
            Ok(task) => task,
            Err(e) => {
                // Read (a bounded part of) the file so that the client sees the answer
                // rather than a connection cut off mid-send.
                let mut drained = 0usize;
                while let Ok(Some(chunk)) = field.chunk().await {
                    drained += chunk.len();
                    if drained > 8 << 20 {
                        break;
                    }
                }
                return Err(e);
            }
        };
        let Operation::ImportUpload(op) = &task.operation else {
            unreachable!("checked")
        };
        let api = &state.api;
        let filename = safe_filename(op.filename.as_deref().or(field.file_name()).unwrap_or("file"));

        let staging = state.local.staging_dir();
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(runconvert_core::ports::PortError::new)?;
        let staged = Staged(staging.join(format!("{task_id}-{}", runconvert_core::new_id())));
        let mut out = tokio::fs::File::create(&staged.0)
            .await
            .map_err(runconvert_core::ports::PortError::new)?;
        let mut size: u64 = 0;
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| bad(format!("the upload broke off: {e}")))?
        {
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

        let size = api.files.put(&task.job_id, &task.id, &filename, &staged.0).await?;
        let file = FileRef {
            filename,
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
        return Ok((StatusCode::CREATED, Json(task.to_api_json())).into_response());
    }
    Err(bad("the form has no `file` field".into()))
}

async fn download(
    State(state): State<Arc<LocalFilesState>>,
    Path((job_id, task_id, filename)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResult<Response> {
    let expires = q.get("expires").map(String::as_str).unwrap_or_default();
    let inline = q.get("inline").map(String::as_str).unwrap_or("0");
    let signature = q.get("signature").map(String::as_str).unwrap_or_default();
    if !state.urls.signer.verify(
        &UrlSigner::download_parts(&job_id, &task_id, &filename, expires, inline),
        signature,
    ) {
        return Err(forbidden("the download link's signature is missing or wrong"));
    }
    check_expiry(expires)?;
    let path = state.local.path_of(&job_id, &task_id, &filename);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            return Err(HttpError(ApiError::not_found(
                "file (it may have been deleted after the retention period)",
            )))
        }
    };
    let len = file
        .metadata()
        .await
        .map_err(runconvert_core::ports::PortError::new)?
        .len();
    let mime = format_of_filename(&filename)
        .map(mime_type_of)
        .unwrap_or("application/octet-stream");
    let disposition = format!(
        "{}; filename=\"{}\"; filename*=UTF-8''{}",
        if inline == "1" { "inline" } else { "attachment" },
        filename
            .replace(['"', '\\'], "_")
            .chars()
            .filter(|c| c.is_ascii() && !c.is_control())
            .collect::<String>(),
        encode_segment(&filename)
    );
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
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
    Ok(resp)
}
