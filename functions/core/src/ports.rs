//! The ports: what the core needs from the world, as traits. The embedded server
//! implements them with SQLite, the local disk and tokio; the AWS build with DynamoDB,
//! S3, Step Functions and SQS.

use crate::keys::ApiKey;
use crate::model::{FileRef, Job, JobStatus, Task, TaskResult, TaskStatus, UploadForm, User};
use crate::webhooks::{Delivery, Webhook};
use crate::Timestamp;
use async_trait::async_trait;
use std::path::Path;

/// A failure of a backing service (database, disk, network). Shown to users only as a
/// generic 500; the detail goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortError(pub String);

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PortError {}

impl PortError {
    pub fn new(e: impl std::fmt::Display) -> Self {
        PortError(e.to_string())
    }
}

pub type PortResult<T> = Result<T, PortError>;

#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    /// Only jobs with exactly this tag.
    pub tag: Option<String>,
    pub page: Page,
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub job_id: Option<String>,
    pub status: Option<TaskStatus>,
    /// Only tasks of this operation (`import/url`, `convert`...).
    pub operation: Option<String>,
    pub page: Page,
}

/// A change to a task, applied only if the task is still in `from` (so a retried or
/// late writer never overwrites a newer state).
#[derive(Debug, Clone)]
pub struct TaskTransition {
    pub task_id: String,
    pub from: TaskStatus,
    pub to: TaskStatus,
    pub at: Timestamp,
    pub code: Option<String>,
    pub message: Option<String>,
    pub result: Option<TaskResult>,
}

/// Records a task's end: finished with its result, or failed with the error's code and
/// message, if it is still in `from`. Returns the event that end causes (task.finished or
/// task.failed, with the task as now stored) for the caller to publish, or None when the
/// task had moved on or is gone and nothing was written.
pub async fn end_task(
    jobs: &dyn JobStore,
    task_id: &str,
    from: TaskStatus,
    outcome: Result<TaskResult, crate::error::TaskError>,
) -> PortResult<Option<Event>> {
    let (to, code, message, result, name) = match outcome {
        Ok(r) => (TaskStatus::Finished, None, None, Some(r), EventName::TaskFinished),
        Err(e) => (
            TaskStatus::Failed,
            Some(e.code),
            Some(e.message),
            None,
            EventName::TaskFailed,
        ),
    };
    let t = TaskTransition {
        task_id: task_id.to_string(),
        from,
        to,
        at: Timestamp::now(),
        code,
        message,
        result,
    };
    Ok(jobs
        .transition_task_and_read(&t)
        .await?
        .map(|now| Event::task(name, now)))
}

/// Ends a job that cannot go on (its execution could not start, or died): every task not
/// yet ended fails with `error`, then the job fails. Returns the events that caused, the
/// tasks' first and job.failed last (only if this call was the one to end the job), for
/// the caller to publish. A job already gone or ended gives none.
pub async fn fail_job(jobs: &dyn JobStore, job_id: &str, error: crate::error::TaskError) -> PortResult<Vec<Event>> {
    let Some(job) = jobs.get_job(None, job_id).await? else {
        return Ok(Vec::new());
    };
    if job.status.is_final() {
        return Ok(Vec::new());
    }
    let mut events = Vec::new();
    for t in job.tasks.iter().filter(|t| !t.status.is_final()) {
        if let Some(e) = end_task(jobs, &t.id, t.status, Err(error.clone())).await? {
            events.push(e);
        }
    }
    if jobs
        .set_job_status(job_id, crate::model::JobStatus::Failed, Timestamp::now())
        .await?
    {
        if let Some(job) = jobs.get_job(None, job_id).await? {
            events.push(Event::job(EventName::JobFailed, job));
        }
    }
    Ok(events)
}

/// What a [`TaskTransition`] does to a task, for stores that rewrite the whole record.
pub fn apply_transition(task: &mut Task, t: &TaskTransition) {
    task.status = t.to;
    task.code = t.code.clone();
    task.message = t.message.clone();
    if let Some(r) = &t.result {
        task.result = Some(r.clone());
    }
    if t.to == TaskStatus::Processing {
        task.started_at = Some(t.at);
        task.attempts += 1;
    }
    if t.to.is_final() {
        task.ended_at = Some(t.at);
    }
    if t.to == TaskStatus::Finished {
        task.percent = 100;
    }
}

/// Jobs and their tasks. Reads that take a `user_id` see only that user's records.
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn create_job(&self, job: &Job) -> PortResult<()>;
    /// `user_id: None` reads any job (for the executor).
    async fn get_job(&self, user_id: Option<&str>, job_id: &str) -> PortResult<Option<Job>>;
    /// The page asked for, and how many match in all.
    async fn list_jobs(&self, user_id: &str, filter: &JobFilter) -> PortResult<(Vec<Job>, u64)>;
    /// Deletes the job and its tasks; false if there was none.
    async fn delete_job(&self, user_id: &str, job_id: &str) -> PortResult<bool>;
    async fn get_task(&self, user_id: Option<&str>, task_id: &str) -> PortResult<Option<Task>>;
    async fn list_tasks(&self, user_id: &str, filter: &TaskFilter) -> PortResult<(Vec<Task>, u64)>;
    /// Applies `t` if the task is in `t.from`; returns whether it did. Entering
    /// `processing` sets `started_at` and counts an attempt; a final status sets `ended_at`.
    async fn transition_task(&self, t: &TaskTransition) -> PortResult<bool>;
    /// [`JobStore::transition_task`], then the task as it is now if it was applied (a
    /// store that has it at hand answers without reading it again).
    async fn transition_task_and_read(&self, t: &TaskTransition) -> PortResult<Option<Task>> {
        if !self.transition_task(t).await? {
            return Ok(None);
        }
        self.get_task(None, &t.task_id).await
    }
    async fn set_task_percent(&self, task_id: &str, percent: u8) -> PortResult<()>;
    /// Sets the job's status (`processing` sets `started_at`, a final one `ended_at`),
    /// if the job is not final already; returns whether it did.
    async fn set_job_status(&self, job_id: &str, status: JobStatus, at: Timestamp) -> PortResult<bool>;
    /// Jobs not yet final, oldest first (for resuming after a restart).
    async fn unfinished_jobs(&self) -> PortResult<Vec<String>>;
    /// Final jobs that ended before `before` (for the retention sweep).
    async fn jobs_ended_before(&self, before: Timestamp) -> PortResult<Vec<(String, String)>>;
    /// Puts a task that was `processing` back to `waiting` (after a restart).
    async fn requeue_task(&self, task_id: &str) -> PortResult<bool>;
}

/// API keys, stored only as hashes, and their users' credits.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The key with this hash and its user: what authenticates a request (one read).
    async fn key_by_hash(&self, key_hash: &str) -> PortResult<Option<(User, ApiKey)>>;
    async fn user_for_key_hash(&self, key_hash: &str) -> PortResult<Option<User>> {
        Ok(self.key_by_hash(key_hash).await?.map(|(user, _)| user))
    }
    /// Stores a new user (with no key yet: [`KeyStore::create_key`] gives it one).
    async fn create_user(&self, user: &User) -> PortResult<()>;
    /// A user's keys, oldest first.
    async fn list_keys(&self, user_id: &str) -> PortResult<Vec<ApiKey>>;
    /// Stores a new key of `user` (its hash and what is shown of it).
    async fn create_key(&self, user: &User, key_hash: &str, key: &ApiKey) -> PortResult<()>;
    /// Deletes one of the user's keys; false when the user has no key of that id. Its
    /// requests fail from then on.
    async fn revoke_key(&self, user_id: &str, key_id: &str) -> PortResult<bool>;
    /// Records that the key was used (at most every [`crate::keys::LAST_USED_EVERY_MS`]).
    async fn touch_key(&self, key_hash: &str, key: &ApiKey, at: Timestamp) -> PortResult<()>;
    /// Takes `amount` credits from the user, atomically, if the balance covers it.
    /// `Ok(Err(balance))` when it does not; unlimited users always pass. A negative
    /// amount gives credits back (a job that could not run).
    async fn charge_credits(&self, user_id: &str, amount: i64) -> PortResult<Result<Option<i64>, i64>>;
    /// The user's credit balance now; None: unlimited. (A store may leave
    /// `User::credits` of [`KeyStore::user_for_key_hash`] empty to keep that lookup to one
    /// read; what shows a balance asks here.)
    async fn credits(&self, user_id: &str) -> PortResult<Option<i64>>;
}

/// Where files live between tasks. A file is addressed by its job, task and name.
#[async_trait]
pub trait FileStore: Send + Sync {
    /// Stores the local file `src` (which it may move) as the task's `filename`; returns its size.
    async fn put(&self, job_id: &str, task_id: &str, filename: &str, src: &Path) -> PortResult<u64>;
    /// Copies a stored file to the local path `dest`.
    async fn fetch(&self, job_id: &str, file: &FileRef, dest: &Path) -> PortResult<()>;
    /// Removes every file of a job.
    async fn delete_job_files(&self, job_id: &str) -> PortResult<()>;
    /// A signed download URL valid until `expires`.
    fn download_url(&self, job_id: &str, file: &FileRef, expires: Timestamp, inline: bool) -> String;
    /// A signed upload form for an import/upload task, valid until `expires`.
    fn upload_form(&self, job_id: &str, task_id: &str, expires: Timestamp) -> UploadForm;
}

/// Runs jobs: the in-process executor, or a Step Functions execution.
#[async_trait]
pub trait Dispatcher: Send + Sync {
    /// Something changed for this job (created, a file uploaded): plan and run what is ready.
    async fn dispatch(&self, job_id: &str) -> PortResult<()>;
    /// A job was just created: start it. A dispatcher that runs jobs of different shapes
    /// differently (on AWS, an Express execution for a job with no upload to wait for)
    /// looks at the job here.
    async fn start_job(&self, job: &Job) -> PortResult<()> {
        self.dispatch(&job.id).await
    }
    /// Stop the job's running tasks (it is being deleted).
    async fn cancel(&self, job_id: &str) -> PortResult<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventName {
    JobCreated,
    JobFinished,
    JobFailed,
    TaskCreated,
    TaskFinished,
    TaskFailed,
}

impl EventName {
    pub const ALL: [EventName; 6] = [
        EventName::JobCreated,
        EventName::JobFinished,
        EventName::JobFailed,
        EventName::TaskCreated,
        EventName::TaskFinished,
        EventName::TaskFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventName::JobCreated => "job.created",
            EventName::JobFinished => "job.finished",
            EventName::JobFailed => "job.failed",
            EventName::TaskCreated => "task.created",
            EventName::TaskFinished => "task.finished",
            EventName::TaskFailed => "task.failed",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Job(EventName, Box<Job>),
    Task(EventName, Box<Task>),
}

impl Event {
    pub fn name(&self) -> EventName {
        match self {
            Event::Job(n, _) | Event::Task(n, _) => *n,
        }
    }

    pub fn job(name: EventName, job: Job) -> Self {
        Event::Job(name, Box::new(job))
    }

    pub fn task(name: EventName, task: Task) -> Self {
        Event::Task(name, Box::new(task))
    }

    pub fn job_id(&self) -> &str {
        match self {
            Event::Job(_, j) => &j.id,
            Event::Task(_, t) => &t.job_id,
        }
    }

    /// The webhook payload: `{event, job}` or `{event, task}`, as the API shows them.
    pub fn payload(&self) -> serde_json::Value {
        match self {
            Event::Job(n, j) => serde_json::json!({"event": n.as_str(), "job": j.to_api_json()}),
            Event::Task(n, t) => serde_json::json!({"event": n.as_str(), "task": t.to_api_json()}),
        }
    }
}

/// Webhook subscriptions and their deliveries. A store that keeps jobs also records, in
/// the same write as each state change, the event it causes and a delivery for every
/// subscription that wants it (the outbox): an event cannot be lost between the change
/// and its sending.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, hook: &Webhook) -> PortResult<()>;
    async fn list_webhooks(&self, user_id: &str) -> PortResult<Vec<Webhook>>;
    /// False if the user has no such webhook.
    async fn delete_webhook(&self, user_id: &str, id: &str) -> PortResult<bool>;
    /// The most recent deliveries of a webhook, newest first; `None` if the user has no
    /// such webhook.
    async fn list_deliveries(&self, user_id: &str, webhook_id: &str, limit: u32) -> PortResult<Option<Vec<Delivery>>>;
}

/// The outbound-address guard, as the API needs it: to refuse, when a webhook is created,
/// an endpoint the server would never connect to.
#[async_trait]
pub trait OutboundGuard: Send + Sync {
    /// `Err(why)` if `url` is not http(s) or its host is (or resolves to) an address the
    /// server does not connect to.
    async fn check_url(&self, url: &str) -> Result<(), String>;
}

/// Where job and task events go (webhooks, logs).
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn publish(&self, event: Event) -> PortResult<()>;
}
