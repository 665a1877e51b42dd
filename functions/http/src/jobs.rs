//! `/v2/process/jobs` and `/v2/process/tasks`.

use crate::auth::AuthUser;
use crate::error::HttpResult;
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use runconvert_core::model::{Job, JobStatus, Task, TaskStatus, User};
use runconvert_core::ports::{Event, EventName, JobFilter, Page, TaskFilter};
use runconvert_core::validate::{validate_job, JobSpec};
use runconvert_core::{new_id, ApiError, Timestamp};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs, create_job))
        .routes(routes!(show_job, delete_job))
        .routes(routes!(wait_job))
        .routes(routes!(list_tasks))
        .routes(routes!(show_task))
}

type Params = Query<HashMap<String, String>>;

fn param_error(field: &str, msg: &str) -> ApiError {
    let mut errors = BTreeMap::new();
    errors.insert(field.to_string(), vec![msg.to_string()]);
    ApiError::invalid_fields(errors)
}

fn reject_unknown_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(param_error(
            k,
            &format!("unknown query parameter; this endpoint takes: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;

fn page(q: &HashMap<String, String>) -> Result<Page, ApiError> {
    let num = |name: &str, default: u32, max: u32| -> Result<u32, ApiError> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| param_error(name, &format!("must be a whole number from 0 to {max}"))),
        }
    };
    Ok(Page {
        limit: num("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
        offset: num("offset", 0, u32::MAX)?,
    })
}

fn list_body(data: Vec<Value>, count: u64, page: &Page) -> Json<Value> {
    Json(json!({"data": data, "meta": {"count": count, "limit": page.limit, "offset": page.offset}}))
}

/// Builds the job a validated request describes: ids, timestamps, upload forms.
fn new_job(state: &ApiState, user_id: &str, spec: JobSpec) -> Job {
    let mut job = spec.into_job(
        user_id,
        Timestamp::now(),
        state.settings.upload_timeout,
        &mut new_id,
        &|job_id, task_id, expires| state.files.upload_form(job_id, task_id, expires),
    );
    job.webhook_secret = job.webhook_url.as_ref().map(|_| crate::webhooks::new_secret());
    job
}

/// Publishes `event`; a sink that fails is logged (the change it reports is stored).
pub(crate) async fn publish(state: &ApiState, event: Event) {
    if let Err(e) = state.events.publish(event).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

/// Moves import/base64 payloads longer than `limit` into the file store (under the task,
/// as [`ImportBase64::PAYLOAD_FILE`]), leaving a stand-in in the task.
async fn store_large_payloads(
    state: &ApiState,
    job: &mut runconvert_core::Job,
    limit: usize,
) -> Result<(), runconvert_core::ports::PortError> {
    use runconvert_core::ops::{ImportBase64, Operation};
    for t in &mut job.tasks {
        let Operation::ImportBase64(o) = &mut t.operation else {
            continue;
        };
        if o.file.len() <= limit {
            continue;
        }
        let tmp = std::env::temp_dir().join(format!("runconvert-payload-{}", t.id));
        tokio::fs::write(&tmp, o.file.as_bytes())
            .await
            .map_err(runconvert_core::ports::PortError::new)?;
        let put = state.files.put(&job.id, &t.id, ImportBase64::PAYLOAD_FILE, &tmp).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        put?;
        o.file = ImportBase64::stored_marker(o.file.len());
    }
    Ok(())
}

#[utoipa::path(post, path = "/v2/process/jobs", tag = "Jobs", operation_id = "createJob",
    summary = "Create a job: its tasks, by name, and what they take",
    request_body(content = Value, content_type = "application/json"),
    responses((status = 201, description = "The job, its tasks waiting or started", body = crate::openapi::schema::Job)))]
async fn create_job(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> HttpResult<impl IntoResponse> {
    let job = submit_job(&state, &user, &body, Default::default()).await?;
    Ok((StatusCode::CREATED, Json(shown_once(&job, job.to_api_json()))))
}

/// A new job's answer: `shown` with the secret of its webhook_url, shown this once (it
/// signs the deliveries to that URL).
pub(crate) fn shown_once(job: &Job, mut shown: Value) -> Value {
    if let Some(secret) = &job.webhook_secret {
        shown["webhook_secret"] = secret.clone().into();
    }
    shown
}

/// A job request (the JSON body of `POST /v2/process/jobs`) checked, charged, stored and
/// started for `user`; the job as stored (or as ended, when it could not be started).
/// CloudConvert's `POST /v2/jobs` and the dashboard's Convert page go through here too.
pub(crate) async fn submit_job(
    state: &Arc<ApiState>,
    user: &User,
    body: &[u8],
    signing: runconvert_core::webhooks::Signing,
) -> HttpResult<Job> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    runconvert_core::validate::check_task_names_unique(body)?;
    let spec = validate_job(&value, &state.registry, &state.settings.limits)?;
    if let Some(url) = &spec.webhook_url {
        if let Err(why) = state.guard.check_url(url).await {
            return Err(param_error("webhook_url", &why).into());
        }
    }
    let mut job = new_job(state, &user.id, spec);
    job.webhook_signing = signing;
    // Credits are checked, and taken, before anything is stored or started.
    let cost = runconvert_core::model::job_cost(&job.tasks);
    if cost > 0 {
        if let Err(balance) = state.keys.charge_credits(&user.id, cost).await? {
            return Err(ApiError::new(
                402,
                runconvert_core::error::codes::INSUFFICIENT_CREDITS,
                format!(
                    "this job needs {cost} {} (one per processing task) and {balance} {} left",
                    if cost == 1 { "credit" } else { "credits" },
                    if balance == 1 { "is" } else { "are" }
                ),
            )
            .into());
        }
    }
    // Storing and starting the job run on their own task: a client that hangs up mid-way
    // drops this handler, and must not leave a job stored but never started.
    let (st, mut stored) = (state.clone(), job.clone());
    let ended = tokio::spawn(async move {
        // A job that cannot be stored or started gives its credits back.
        let refund = |st: Arc<ApiState>, user: String| async move {
            if cost > 0 {
                if let Err(e) = st.keys.charge_credits(&user, -cost).await {
                    tracing::error!(user = %user, error = %e, "could not give back the credits of a job that did not run");
                }
            }
        };
        let kept = async {
            if let Some(limit) = st.settings.inline_payload_bytes {
                store_large_payloads(&st, &mut stored, limit).await?;
            }
            st.jobs.create_job(&stored).await
        };
        if let Err(e) = kept.await {
            refund(st.clone(), stored.user_id.clone()).await;
            return Err(e);
        }
        publish(&st, Event::job(EventName::JobCreated, stored.clone())).await;
        for t in &stored.tasks {
            publish(&st, Event::task(EventName::TaskCreated, t.clone())).await;
        }
        if let Err(e) = st.dispatcher.start_job(&stored).await {
            // A dispatcher retries what it can on its own (the embedded one cannot fail);
            // one that gives up leaves a job nothing would run: it ends now, failed, with
            // its events, rather than waiting for ever.
            tracing::error!(job = %stored.id, error = %e, "could not start a new job");
            let why = runconvert_core::TaskError::new(
                runconvert_core::error::codes::PROCESSING_FAILED,
                "the job could not be started (its credits were given back); create it again",
            );
            for event in runconvert_core::ports::fail_job(&*st.jobs, &stored.id, why).await? {
                publish(&st, event).await;
            }
            refund(st.clone(), stored.user_id.clone()).await;
            return st.jobs.get_job(None, &stored.id).await;
        }
        Ok::<Option<runconvert_core::Job>, runconvert_core::ports::PortError>(None)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the job could not be stored: {e}")))??;
    // As stored, or as ended when it could not be started.
    Ok(ended.unwrap_or(job))
}

#[utoipa::path(get, path = "/v2/process/jobs", tag = "Jobs", operation_id = "listJobs",
    summary = "List jobs, newest first", params(crate::openapi::params::JobListQuery, crate::openapi::params::Window),
    responses((status = 200, description = "A page of jobs", body = crate::openapi::schema::JobList)))]
async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Query(q): Params,
) -> HttpResult<Json<Value>> {
    reject_unknown_params(&q, &["status", "tag", "limit", "offset"])?;
    let status = match q.get("status") {
        None => None,
        Some(s) => Some(
            JobStatus::parse(s)
                .ok_or_else(|| param_error("status", "must be one of: created, processing, completed, failed"))?,
        ),
    };
    let filter = JobFilter {
        status,
        tag: q.get("tag").cloned(),
        page: page(&q)?,
    };
    let (jobs, count) = state.jobs.list_jobs(&user.id, &filter).await?;
    Ok(list_body(
        jobs.iter().map(Job::to_api_json).collect(),
        count,
        &filter.page,
    ))
}

/// One of the user's tasks, or 404.
pub(crate) async fn find_task(state: &ApiState, user_id: &str, id: &str) -> HttpResult<Task> {
    Ok(state
        .jobs
        .get_task(Some(user_id), id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?)
}

pub(crate) async fn find_job(state: &ApiState, user_id: &str, id: &str) -> HttpResult<Job> {
    Ok(state
        .jobs
        .get_job(Some(user_id), id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?)
}

#[utoipa::path(get, path = "/v2/process/jobs/{id}", tag = "Jobs", operation_id = "showJob",
    summary = "Show a job and its tasks", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job", body = crate::openapi::schema::Job)))]
async fn show_job(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    Ok(Json(find_job(&state, &user.id, &id).await?.to_api_json()))
}

/// The `timeout` a `/wait` may ask for.
pub const WAIT_RANGE_SECONDS: u64 = 300;

#[utoipa::path(get, path = "/v2/process/jobs/{id}/wait", tag = "Jobs", operation_id = "waitJob",
    summary = "Wait for a job to end, then show it", params(("id" = String, Path, description = "The job's id"), crate::openapi::params::WaitQuery),
    responses((status = 200, description = "The job, ended or as it stands when the wait is over", body = crate::openapi::schema::Job)))]
async fn wait_job(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Query(q): Params,
) -> HttpResult<Json<Value>> {
    reject_unknown_params(&q, &["timeout"])?;
    let max = state.settings.max_wait.as_secs();
    // Any timeout of the API's range is taken; past this deployment's longest wait (on
    // AWS, under the API function's timeout) the job is answered as it stands then, and
    // the caller waits again.
    let timeout = match q.get("timeout") {
        None => 60,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|t| *t <= WAIT_RANGE_SECONDS)
            .ok_or_else(|| {
                param_error(
                    "timeout",
                    &format!("must be a whole number of seconds from 0 to {WAIT_RANGE_SECONDS}"),
                )
            })?,
    }
    .min(max);
    let job = until_final(&state, Duration::from_secs(timeout), || find_job(&state, &user.id, &id)).await?;
    Ok(Json(job.to_api_json()))
}

/// Reads a job or task with `read` until it has ended or `longest` has passed; the last
/// reading either way. It reads again as soon as its job changes
/// ([`crate::changes::JobChanges`]: at once on the embedded server), and otherwise after a
/// pause that backs off from 50 ms to 200 ms (on AWS, where the end is recorded by
/// another function: a read of the job costs far less than the wait it saves).
pub(crate) async fn until_final<T: Ended, F, Fut>(state: &ApiState, longest: Duration, mut read: F) -> HttpResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = HttpResult<T>>,
{
    let deadline = tokio::time::Instant::now() + longest;
    let mut pause = Duration::from_millis(50);
    let mut changes = None;
    loop {
        let now = read().await?;
        if now.ended() || tokio::time::Instant::now() >= deadline {
            return Ok(now);
        }
        // Watched from the first reading on: a change before it is in that reading, one
        // between the two is caught by the pause.
        let changed = changes.get_or_insert_with(|| state.changes.watch(now.job_id()));
        let _ = tokio::time::timeout_at((tokio::time::Instant::now() + pause).min(deadline), changed.changed()).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// What [`until_final`] waits for.
pub(crate) trait Ended {
    fn ended(&self) -> bool;
    fn job_id(&self) -> &str;
}

impl Ended for Job {
    fn ended(&self) -> bool {
        self.status.is_final()
    }
    fn job_id(&self) -> &str {
        &self.id
    }
}

impl Ended for Task {
    fn ended(&self) -> bool {
        self.status.is_final()
    }
    fn job_id(&self) -> &str {
        &self.job_id
    }
}

#[utoipa::path(delete, path = "/v2/process/jobs/{id}", tag = "Jobs", operation_id = "deleteJob",
    summary = "Delete a job, its tasks and its files", params(("id" = String, Path, description = "The job's id")),
    responses((status = 204, description = "Deleted")))]
async fn delete_job(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    remove_job(&state, &user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes one of the user's jobs: its records, its running tasks, its files.
pub(crate) async fn remove_job(state: &ApiState, user_id: &str, id: &str) -> HttpResult<()> {
    let job = find_job(state, user_id, id).await?;
    state.jobs.delete_job(user_id, &job.id).await?;
    state.dispatcher.cancel(&job.id).await?;
    state.files.delete_job_files(&job.id).await?;
    Ok(())
}

#[utoipa::path(get, path = "/v2/process/tasks", tag = "Jobs", operation_id = "listTasks",
    summary = "List tasks", params(crate::openapi::params::TaskListQuery, crate::openapi::params::Window),
    responses((status = 200, description = "A page of tasks", body = crate::openapi::schema::TaskList)))]
async fn list_tasks(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Query(q): Params,
) -> HttpResult<Json<Value>> {
    reject_unknown_params(&q, &["job_id", "status", "limit", "offset"])?;
    let status = match q.get("status") {
        None => None,
        Some(s) => Some(
            TaskStatus::parse(s)
                .ok_or_else(|| param_error("status", "must be one of: waiting, processing, finished, failed"))?,
        ),
    };
    let filter = TaskFilter {
        job_id: q.get("job_id").cloned(),
        status,
        operation: None,
        page: page(&q)?,
    };
    let (tasks, count) = state.jobs.list_tasks(&user.id, &filter).await?;
    Ok(list_body(
        tasks.iter().map(Task::to_api_json).collect(),
        count,
        &filter.page,
    ))
}

#[utoipa::path(get, path = "/v2/process/tasks/{id}", tag = "Jobs", operation_id = "showTask",
    summary = "Show a task", params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, description = "The task", body = crate::openapi::schema::Task)))]
async fn show_task(
    State(state): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> HttpResult<Json<Value>> {
    Ok(Json(find_task(&state, &user.id, &id).await?.to_api_json()))
}
