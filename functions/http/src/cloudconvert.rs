//! CloudConvert's API v2 beside the spec's own `/v2/process/*`: the same jobs, tasks and
//! operations, in CloudConvert's shapes, so its official SDKs work by changing only their
//! base URLs (`endpoint=<base>`, `sync_endpoint=<base>/sync`).
//!
//! What differs from the spec's surface is only the wire form: `{"data": ...}` envelopes
//! with `links` and `meta` on lists (pages by `page` and `per_page`), CloudConvert's
//! statuses (`waiting | processing | finished | error`), `links.self` on each object,
//! 422 for invalid data, and the synchronous API under `/sync`, whose reads block until
//! the job or task ends (for at most the deployment's longest wait).

use crate::auth::AuthUser;
use crate::error::{HttpError, HttpResult};
use crate::jobs::{find_job, find_task, remove_job, until_final};
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use runconvert_core::cloudconvert as cc;
use runconvert_core::error::codes;
use runconvert_core::model::{Job, JobStatus, Task, TaskStatus, User};
use runconvert_core::ops::Operation;
use runconvert_core::ports::{JobFilter, Page, TaskFilter};
use runconvert_core::webhooks::Signing;
use runconvert_core::ApiError;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    let mut r = OpenApiRouter::new()
        .routes(routes!(list_jobs, create_job))
        .routes(routes!(show_job, delete_job))
        .routes(routes!(list_tasks))
        .routes(routes!(show_task, delete_task))
        .routes(routes!(cancel_task))
        .routes(routes!(retry_task))
        .routes(routes!(list_webhooks))
        .routes(routes!(create_job_and_wait))
        .routes(routes!(wait_job))
        .routes(routes!(wait_task));
    // Single-task creation: `POST /v2/import/url`, `POST /v2/convert`, ... (documented by
    // `openapi::document` from the same list).
    for (path, operation) in task_paths() {
        r = r.route(
            &path,
            post(
                move |state: State<Arc<ApiState>>, user: AuthUser, headers: HeaderMap, body: Bytes| {
                    create_task(operation, state, user, headers, body)
                },
            ),
        );
    }
    r
}

/// The paths of single-task creation and their operations: one per operation, and
/// CloudConvert's name `capture-website` too.
pub(crate) fn task_paths() -> impl Iterator<Item = (String, &'static str)> {
    Operation::NAMES
        .iter()
        .map(|n| (format!("/v2/{n}"), *n))
        .chain([("/v2/capture-website".to_string(), "capture_website")])
}

/// The operation a single-task creation path makes (for the scope a key needs).
pub(crate) fn task_operation(path: &str) -> Option<&'static str> {
    task_paths().find(|(p, _)| p == path).map(|(_, op)| op)
}

/// The most objects a list page holds, and how many without `per_page`.
const MAX_PER_PAGE: u32 = 100;
const DEFAULT_PER_PAGE: u32 = 100;

/// A task as CloudConvert shows it.
pub fn task_json(t: &Task, base: &str) -> Value {
    with_link(cc::task(t.to_api_json()), base, "tasks")
}

/// A job as CloudConvert shows it.
pub fn job_json(j: &Job, base: &str) -> Value {
    let mut v = with_link(cc::job(j.to_api_json()), base, "jobs");
    if let Some(Value::Array(tasks)) = v.get_mut("tasks") {
        for t in tasks.iter_mut() {
            *t = with_link(t.take(), base, "tasks");
        }
    }
    v
}

/// An object in CloudConvert's envelope, `{"data": ...}`.
fn data(shown: Value) -> Json<Value> {
    Json(json!({ "data": shown }))
}

/// `links.self`, as CloudConvert's objects carry it.
fn with_link(mut v: Value, base: &str, kind: &str) -> Value {
    let id = v["id"].as_str().unwrap_or_default().to_string();
    v["links"] = json!({"self": format!("{base}/v2/{kind}/{id}")});
    v
}

/// An error in CloudConvert's terms: invalid data is 422, as its SDKs expect.
fn cc_error(e: HttpError) -> HttpError {
    let mut e = e.0;
    if e.status == 400 {
        e.status = 422;
    }
    HttpError(e)
}

fn invalid(field: &str, msg: &str) -> HttpError {
    HttpError(ApiError {
        status: 422,
        ..ApiError::invalid_fields(BTreeMap::from([(field.to_string(), vec![msg.to_string()])]))
    })
}

/// `page` and `per_page`, as CloudConvert's lists take them.
fn page_of(q: &HashMap<String, String>) -> HttpResult<(u32, u32)> {
    let num = |k: &str, default: u32, max: u32| match q.get(k) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| invalid(k, &format!("must be a whole number from 1 to {max}"))),
    };
    Ok((
        num("page", 1, u32::MAX / MAX_PER_PAGE)?,
        num("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)?,
    ))
}

/// A list page: `data`, and `links` and `meta` as CloudConvert's lists carry them.
fn list(
    data: Vec<Value>,
    count: u64,
    page: u32,
    per_page: u32,
    path: &str,
    q: &HashMap<String, String>,
) -> Json<Value> {
    let last = count.div_ceil(per_page as u64).max(1);
    let link = |n: u64| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.iter().filter(|(k, _)| k.as_str() != "page") {
            s.append_pair(k, v);
        }
        s.append_pair("page", &n.to_string());
        format!("{path}?{}", s.finish())
    };
    let from = (page as u64 - 1) * per_page as u64 + 1;
    let shown = data.len() as u64;
    Json(json!({
        "data": data,
        "links": {
            "first": link(1),
            "last": link(last),
            "prev": (page > 1).then(|| link(page as u64 - 1)),
            "next": ((page as u64) < last).then(|| link(page as u64 + 1)),
        },
        "meta": {
            "current_page": page,
            "from": (shown > 0).then_some(from),
            "to": (shown > 0).then_some(from + shown - 1),
            "last_page": last,
            "path": path,
            "per_page": per_page,
            "total": count,
        },
    }))
}

/// Query parameters outside `allowed` are refused, so a misspelt filter is not ignored.
fn only(q: &HashMap<String, String>, allowed: &[&str]) -> HttpResult<()> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(
            k,
            &format!("is not a parameter of this list; it takes {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `include` names what a list adds to its objects: only `allowed` (comma-separated).
fn includes(q: &HashMap<String, String>, allowed: &[&str]) -> HttpResult<()> {
    match q.get("include") {
        Some(v) if !v.split(',').all(|p| allowed.contains(&p.trim())) => Err(invalid(
            "include",
            &format!("takes {} (comma-separated)", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

fn parse_job_status(v: &str) -> HttpResult<JobStatus> {
    match v {
        "waiting" => Ok(JobStatus::Created),
        "processing" => Ok(JobStatus::Processing),
        "finished" => Ok(JobStatus::Completed),
        "error" => Ok(JobStatus::Failed),
        _ => Err(invalid(
            "filter[status]",
            "must be one of: waiting, processing, finished, error",
        )),
    }
}

fn parse_task_status(v: &str) -> HttpResult<TaskStatus> {
    match v {
        "error" => Ok(TaskStatus::Failed),
        "waiting" | "processing" | "finished" => Ok(TaskStatus::parse(v).expect("a task status")),
        _ => Err(invalid(
            "filter[status]",
            "must be one of: waiting, processing, finished, error",
        )),
    }
}

/// The job body as the spec's validation takes it: CloudConvert's `redirect` (a
/// synchronous job's answer) is taken off; the rest is the same.
fn job_body(body: &[u8]) -> HttpResult<(Vec<u8>, bool)> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", &format!("the request body is not valid JSON: {e}")))?;
    let redirect = match value.as_object_mut().and_then(|o| o.remove("redirect")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(invalid("redirect", "must be true or false")),
    };
    Ok((serde_json::to_vec(&value).unwrap_or_default(), redirect))
}

#[utoipa::path(post, path = "/v2/jobs", tag = "CloudConvert", operation_id = "createCcJob",
    summary = "Create a job (CloudConvert)", request_body(content = Value, content_type = "application/json"),
    responses((status = 201, description = "The job", body = crate::openapi::schema::CcData)))]
async fn create_job(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let (body, _) = job_body(&body)?;
    let job = crate::jobs::submit_job(&state, &user, &body, Signing::CloudConvert)
        .await
        .map_err(cc_error)?;
    let shown = crate::jobs::shown_once(&job, job_json(&job, &crate::base_url(&headers, &state)));
    Ok((StatusCode::CREATED, data(shown)).into_response())
}

#[utoipa::path(get, path = "/v2/jobs", tag = "CloudConvert", operation_id = "listCcJobs",
    summary = "List jobs (CloudConvert)", params(crate::openapi::params::CcJobListQuery, crate::openapi::params::CcPage),
    responses((status = 200, description = "A page of jobs", body = crate::openapi::schema::CcList)))]
async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResult<Json<Value>> {
    only(&q, &["filter[status]", "filter[tag]", "include", "per_page", "page"])?;
    includes(&q, &["tasks"])?;
    let (page, per_page) = page_of(&q)?;
    let status = q.get("filter[status]").map(|s| parse_job_status(s)).transpose()?;
    let filter = JobFilter {
        status,
        tag: q.get("filter[tag]").cloned(),
        page: Page {
            limit: per_page,
            offset: (page - 1) * per_page,
        },
    };
    let (jobs, count) = state.jobs.list_jobs(&user.id, &filter).await?;
    let base = crate::base_url(&headers, &state);
    // Tasks only with `include=tasks`, as CloudConvert lists jobs.
    let with_tasks = q
        .get("include")
        .is_some_and(|i| i.split(',').any(|p| p.trim() == "tasks"));
    let data = jobs
        .iter()
        .map(|j| {
            let mut v = job_json(j, &base);
            if let Some(o) = v.as_object_mut().filter(|_| !with_tasks) {
                o.remove("tasks");
            }
            v
        })
        .collect();
    Ok(list(data, count, page, per_page, &format!("{base}/v2/jobs"), &q))
}

#[utoipa::path(get, path = "/v2/jobs/{id}", tag = "CloudConvert", operation_id = "showCcJob",
    summary = "Show a job (CloudConvert)", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job", body = crate::openapi::schema::CcData)))]
async fn show_job(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    let job = find_job(&state, &user.id, &id).await?;
    Ok(data(job_json(&job, &crate::base_url(&headers, &state))))
}

#[utoipa::path(delete, path = "/v2/jobs/{id}", tag = "CloudConvert", operation_id = "deleteCcJob",
    summary = "Delete a job (CloudConvert)", params(("id" = String, Path, description = "The job's id")),
    responses((status = 204, description = "Deleted")))]
async fn delete_job(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    remove_job(&state, &user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v2/tasks", tag = "CloudConvert", operation_id = "listCcTasks",
    summary = "List tasks (CloudConvert)", params(crate::openapi::params::CcTaskListQuery, crate::openapi::params::CcPage),
    responses((status = 200, description = "A page of tasks", body = crate::openapi::schema::CcList)))]
async fn list_tasks(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResult<Json<Value>> {
    only(
        &q,
        &[
            "filter[job_id]",
            "filter[status]",
            "filter[operation]",
            "include",
            "per_page",
            "page",
        ],
    )?;
    includes(&q, &["payload", "job"])?;
    if let Some(op) = q
        .get("filter[operation]")
        .filter(|o| !Operation::NAMES.contains(&o.as_str()))
    {
        return Err(invalid(
            "filter[operation]",
            &format!(
                "{op:?} is not an operation; the operations are {}",
                Operation::NAMES.join(", ")
            ),
        ));
    }
    let (page, per_page) = page_of(&q)?;
    let status = q.get("filter[status]").map(|s| parse_task_status(s)).transpose()?;
    let base = crate::base_url(&headers, &state);
    let filter = TaskFilter {
        job_id: q.get("filter[job_id]").cloned(),
        status,
        operation: q.get("filter[operation]").cloned(),
        page: Page {
            limit: per_page,
            offset: (page - 1) * per_page,
        },
    };
    let (tasks, count) = state.jobs.list_tasks(&user.id, &filter).await?;
    let data = tasks.iter().map(|t| task_json(t, &base)).collect();
    Ok(list(data, count, page, per_page, &format!("{base}/v2/tasks"), &q))
}

#[utoipa::path(get, path = "/v2/tasks/{id}", tag = "CloudConvert", operation_id = "showCcTask",
    summary = "Show a task (CloudConvert)", params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, description = "The task", body = crate::openapi::schema::CcData)))]
async fn show_task(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    let task = find_task(&state, &user.id, &id).await?;
    Ok(data(task_json(&task, &crate::base_url(&headers, &state))))
}

/// `POST /v2/{operation}`: one task, in a job of its own (named `task`), answered as the
/// task. It takes no `input`: tasks are chained in a job (`POST /v2/jobs`).
async fn create_task(
    operation: &'static str,
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| invalid("body", &format!("the request body is not valid JSON: {e}")))?
    };
    let Value::Object(mut fields) = value else {
        return Err(invalid("body", "must be a JSON object of the task's fields"));
    };
    if fields.contains_key("input") {
        return Err(invalid(
            "input",
            "a task made on its own takes no input here; chain tasks in a job (POST /v2/jobs), \
             where `input` names the tasks before",
        ));
    }
    match fields.get("operation") {
        None => {}
        Some(Value::String(o)) if o == operation => {}
        Some(_) => {
            return Err(invalid(
                "operation",
                &format!("is given by the path: this creates a {operation} task"),
            ))
        }
    }
    fields.insert("operation".into(), operation.into());
    let job_body = json!({"tasks": {"task": fields}}).to_string();
    let job = crate::jobs::submit_job(&state, &user, job_body.as_bytes(), Signing::CloudConvert)
        .await
        .map_err(|e| cc_error(tasks_prefix_off(e)))?;
    let task = job
        .tasks
        .first()
        .ok_or_else(|| ApiError::internal("a job of one task has none"))?;
    let shown = task_json(task, &crate::base_url(&headers, &state));
    Ok((StatusCode::CREATED, data(shown)).into_response())
}

/// A single task's errors name its fields, not `tasks.task.<field>`.
fn tasks_prefix_off(mut e: HttpError) -> HttpError {
    e.0.errors = std::mem::take(&mut e.0.errors)
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("tasks.task.").map(String::from).unwrap_or(k), v))
        .collect();
    e
}

/// `POST /v2/tasks/{id}/cancel`: a waiting or processing task ends as failed, code
/// `cancelled`; the tasks that need it fail and the job ends as its planner says.
#[utoipa::path(post, path = "/v2/tasks/{id}/cancel", tag = "CloudConvert", operation_id = "cancelCcTask",
    summary = "Cancel a waiting or processing task", params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, description = "The task, ended", body = crate::openapi::schema::CcData)))]
async fn cancel_task(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    let task = find_task(&state, &user.id, &id).await?;
    if task.status.is_final() {
        return Err(invalid(
            "task",
            &format!(
                "has ended already ({}); only a waiting or processing task can be cancelled",
                cc::task_status(task.status.as_str())
            ),
        ));
    }
    let why = runconvert_core::TaskError::new(codes::CANCELLED, "the task was cancelled");
    if let Some(event) = runconvert_core::ports::end_task(&*state.jobs, &task.id, task.status, Err(why)).await? {
        crate::jobs::publish(&state, event).await;
    }
    state.dispatcher.dispatch(&task.job_id).await?;
    let task = find_task(&state, &user.id, &id).await?;
    Ok(data(task_json(&task, &crate::base_url(&headers, &state))))
}

/// `POST /v2/tasks/{id}/retry`: a failed task made again, with the tasks it needs, in a
/// new job (same tag); the answer is the new task, with `retry_of_task_id`.
#[utoipa::path(post, path = "/v2/tasks/{id}/retry", tag = "CloudConvert", operation_id = "retryCcTask",
    summary = "Run a failed task again, with the tasks it needs, in a new job", params(("id" = String, Path, description = "The task's id")),
    responses((status = 201, description = "The new task", body = crate::openapi::schema::CcData)))]
async fn retry_task(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult<Response> {
    let task = find_task(&state, &user.id, &id).await?;
    if task.status != TaskStatus::Failed {
        return Err(invalid(
            "task",
            &format!(
                "is {}; only a task that ended with an error can be retried",
                cc::task_status(task.status.as_str())
            ),
        ));
    }
    let job = find_job(&state, &user.id, &task.job_id).await?;
    // The task and, before it, every task it needs, by name as the job had them.
    let mut wanted = vec![task.id.clone()];
    let mut i = 0;
    while i < wanted.len() {
        if let Some(t) = job.task(&wanted[i]) {
            for d in &t.depends_on_task_ids {
                if !wanted.contains(d) {
                    wanted.push(d.clone());
                }
            }
        }
        i += 1;
    }
    let name_of = |tid: &str| job.task(tid).map(|t| t.name.clone()).unwrap_or_default();
    let mut tasks = serde_json::Map::new();
    for t in job.tasks.iter().filter(|t| wanted.contains(&t.id)) {
        let mut fields = t.operation.fields();
        fields.insert("operation".into(), t.operation.name().into());
        let input: Vec<String> = t.depends_on_task_ids.iter().map(|d| name_of(d)).collect();
        if !input.is_empty() {
            fields.insert("input".into(), input.into());
        }
        if t.ignore_error {
            fields.insert("ignore_error".into(), true.into());
        }
        if let Some(s) = t.timeout {
            fields.insert("timeout".into(), s.into());
        }
        tasks.insert(t.name.clone(), Value::Object(fields));
    }
    let body = json!({"tag": job.tag, "tasks": tasks}).to_string();
    let made = crate::jobs::submit_job(&state, &user, body.as_bytes(), job.webhook_signing)
        .await
        .map_err(cc_error)?;
    let again = made
        .task_by_name(&task.name)
        .ok_or_else(|| ApiError::internal("the retried task is not in its job"))?;
    let mut shown = task_json(again, &crate::base_url(&headers, &state));
    shown["retry_of_task_id"] = task.id.clone().into();
    Ok((StatusCode::CREATED, data(shown)).into_response())
}

/// `DELETE /v2/tasks/{id}`: a task alone in its job (made by `POST /v2/{operation}` or a
/// retry) goes with its job and files; a task of a larger job is deleted with its job.
#[utoipa::path(delete, path = "/v2/tasks/{id}", tag = "CloudConvert", operation_id = "deleteCcTask",
    summary = "Delete a task that is alone in its job", params(("id" = String, Path, description = "The task's id")),
    responses((status = 204, description = "Deleted")))]
async fn delete_task(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    let task = find_task(&state, &user.id, &id).await?;
    let job = find_job(&state, &user.id, &task.job_id).await?;
    if job.tasks.len() > 1 {
        return Err(invalid(
            "task",
            &format!(
                "is one of the {} tasks of job {}; delete the job (DELETE /v2/jobs/{})",
                job.tasks.len(),
                job.id,
                job.id
            ),
        ));
    }
    remove_job(&state, &user.id, &job.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- webhooks -----------------------------------------------------------------------

/// A webhook as CloudConvert shows it.
fn webhook_json(h: &runconvert_core::webhooks::Webhook, base: &str) -> Value {
    json!({
        "id": h.id,
        "url": h.endpoint_url,
        "events": h.events,
        "created_at": h.created_at,
        "disabled_at": h.disabled_at,
        "links": {"self": format!("{base}/v2/webhooks/{}", h.id)},
    })
}

/// `POST /v2/webhooks` with CloudConvert's `url`: its deliveries are signed with
/// `CloudConvert-Signature` and carry CloudConvert's shapes; the secret is shown once.
pub(crate) async fn create_webhook(
    state: &ApiState,
    user: &User,
    headers: &HeaderMap,
    body: &[u8],
) -> HttpResult<Response> {
    let obj = crate::webhooks::json_object(body, &["url", "events"], "a webhook").map_err(|e| cc_error(e.into()))?;
    let hook = crate::webhooks::new_webhook(state, &user.id, &obj, Signing::CloudConvert)
        .await
        .map_err(cc_error)?;
    let mut shown = webhook_json(&hook, &crate::base_url(headers, state));
    shown["signing_secret"] = hook.secret.clone().into();
    Ok((StatusCode::CREATED, data(shown)).into_response())
}

/// `GET /v2/users/me/webhooks` (`filter[url]`, pages).
#[utoipa::path(get, path = "/v2/users/me/webhooks", tag = "CloudConvert", operation_id = "listCcWebhooks",
    summary = "List webhooks (CloudConvert)", params(crate::openapi::params::CcWebhookListQuery, crate::openapi::params::CcPage),
    responses((status = 200, description = "A page of webhooks", body = crate::openapi::schema::CcList)))]
async fn list_webhooks(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResult<Json<Value>> {
    only(&q, &["filter[url]", "per_page", "page"])?;
    let (page, per_page) = page_of(&q)?;
    let base = crate::base_url(&headers, &state);
    let hooks: Vec<_> = state
        .webhooks
        .list_webhooks(&user.id)
        .await?
        .into_iter()
        .filter(|h| q.get("filter[url]").is_none_or(|u| *u == h.endpoint_url))
        .collect();
    let data = hooks
        .iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .map(|h| webhook_json(h, &base))
        .collect();
    Ok(list(
        data,
        hooks.len() as u64,
        page,
        per_page,
        &format!("{base}/v2/users/me/webhooks"),
        &q,
    ))
}

// --- the synchronous API ------------------------------------------------------------

#[utoipa::path(get, path = "/sync/v2/jobs/{id}", tag = "CloudConvert", operation_id = "waitCcJob",
    summary = "Wait for a job to end (synchronous API)", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job", body = crate::openapi::schema::CcData)))]
async fn wait_job(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    let job = until_final(&state, state.settings.max_wait, || find_job(&state, &user.id, &id)).await?;
    Ok(data(job_json(&job, &crate::base_url(&headers, &state))))
}

#[utoipa::path(get, path = "/sync/v2/tasks/{id}", tag = "CloudConvert", operation_id = "waitCcTask",
    summary = "Wait for a task to end (synchronous API)", params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, description = "The task", body = crate::openapi::schema::CcData)))]
async fn wait_task(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    let task = until_final(&state, state.settings.max_wait, || find_task(&state, &user.id, &id)).await?;
    Ok(data(task_json(&task, &crate::base_url(&headers, &state))))
}

/// `POST /sync/v2/jobs`: the job made, then waited for; with `"redirect": true`, the
/// answer is a redirect to the first exported file.
#[utoipa::path(post, path = "/sync/v2/jobs", tag = "CloudConvert", operation_id = "createSyncJob",
    summary = "Create a job and wait for it to end (synchronous API)", request_body(content = Value, content_type = "application/json"),
    responses((status = 201, description = "The job, ended or as it stands when the wait is over", body = crate::openapi::schema::CcData),
        (status = 302, description = "With `redirect`: the exported file")))]
async fn create_job_and_wait(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let (body, redirect) = job_body(&body)?;
    let made = crate::jobs::submit_job(&state, &user, &body, Signing::CloudConvert)
        .await
        .map_err(cc_error)?;
    let job = until_final(&state, state.settings.max_wait, || find_job(&state, &user.id, &made.id)).await?;
    let shown = job_json(&job, &crate::base_url(&headers, &state));
    if redirect {
        let url = shown["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["operation"] == "export/url")
            .find_map(|t| t["result"]["files"][0]["url"].as_str().map(String::from));
        if let Some(url) = url {
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return Ok(r);
        }
    }
    Ok((StatusCode::CREATED, data(shown)).into_response())
}
