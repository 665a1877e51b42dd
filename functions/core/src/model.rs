//! Jobs and tasks as stored and as the API shows them.

use crate::ops::{Kind, Operation};
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Created,
    Processing,
    Completed,
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 4] = [
        JobStatus::Created,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Waiting,
    Processing,
    Finished,
    Failed,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 4] = [
        TaskStatus::Waiting,
        TaskStatus::Processing,
        TaskStatus::Finished,
        TaskStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Processing => "processing",
            TaskStatus::Finished => "finished",
            TaskStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Finished | TaskStatus::Failed)
    }
}

/// A file a task produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub filename: String,
    pub size: u64,
    /// A signed, expiring download URL (export/url only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The task that holds the bytes (an export points at its input's files). Stored,
    /// not shown by the API.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_id: String,
}

/// Where and how to upload the file of an import/upload task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadForm {
    pub url: String,
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<UploadForm>,
    /// import/sftp and export/sftp: the SHA-256 fingerprint of the host key the server
    /// presented (checked against `host_key` when the task gave one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub job_id: String,
    pub name: String,
    pub operation: Operation,
    /// Task names of the inputs, in the order given.
    pub input: Vec<String>,
    pub ignore_error: bool,
    /// Seconds this task may run (the `timeout` field), if the request set it.
    pub timeout: Option<u64>,
    pub status: TaskStatus,
    pub message: Option<String>,
    pub code: Option<String>,
    pub percent: u8,
    pub depends_on_task_ids: Vec<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// For import/upload: when the upload window closes.
    pub expires_at: Option<Timestamp>,
    /// How many times the task was started (for restart safety).
    pub attempts: u32,
    pub result: Option<TaskResult>,
}

impl Task {
    pub fn kind(&self) -> Kind {
        self.operation.kind()
    }

    /// The JSON the API shows: no secrets, no internals.
    pub fn to_api_json(&self) -> Value {
        let mut payload = self.operation.redacted_fields();
        // An inline file is echoed by its size only.
        if let Some(Value::String(data)) = payload
            .get_mut("file")
            .filter(|_| self.operation.name() == "import/base64")
        {
            let len = match &self.operation {
                crate::ops::Operation::ImportBase64(o) => o.stored_elsewhere().unwrap_or(data.len()),
                _ => data.len(),
            };
            *data = format!("[{len} characters of base64]");
        }
        let mut result = serde_json::to_value(&self.result).unwrap_or(Value::Null);
        if let Some(files) = result.get_mut("files").and_then(Value::as_array_mut) {
            for f in files {
                if let Some(f) = f.as_object_mut() {
                    f.remove("task_id");
                }
            }
        }
        payload.insert("operation".into(), self.operation.name().into());
        match self.input.len() {
            0 => {}
            1 => {
                payload.insert("input".into(), self.input[0].clone().into());
            }
            _ => {
                payload.insert("input".into(), self.input.clone().into());
            }
        }
        if self.ignore_error {
            payload.insert("ignore_error".into(), true.into());
        }
        if let Some(t) = self.timeout {
            payload.insert("timeout".into(), t.into());
        }
        serde_json::json!({
            "id": self.id,
            "job_id": self.job_id,
            "name": self.name,
            "operation": self.operation.name(),
            "status": self.status,
            "message": self.message,
            "code": self.code,
            "percent": self.percent,
            "depends_on_task_ids": self.depends_on_task_ids,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "payload": payload,
            "result": result,
        })
    }

    /// The stored request of this task: `{operation, input, ignore_error, timeout, ...fields}`.
    pub fn stored_payload(&self) -> Value {
        serde_json::json!({
            "operation": self.operation.name(),
            "fields": self.operation.fields(),
            "input": self.input,
            "ignore_error": self.ignore_error,
            "timeout": self.timeout,
        })
    }

    /// Reads back what [`Task::stored_payload`] wrote. Returns (operation, input, ignore_error, timeout).
    pub fn parse_stored_payload(v: &Value) -> Result<(Operation, Vec<String>, bool, Option<u64>), String> {
        let name = v["operation"].as_str().ok_or("stored task has no operation")?;
        let fields = v["fields"].as_object().cloned().unwrap_or_default();
        let op = Operation::parse(name, fields)
            .map_err(|e| format!("stored task {name}: {e}"))?
            .ok_or_else(|| format!("stored task has unknown operation {name}"))?;
        let input = v["input"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default();
        Ok((
            op,
            input,
            v["ignore_error"].as_bool().unwrap_or(false),
            v["timeout"].as_u64(),
        ))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub user_id: String,
    pub tag: Option<String>,
    /// The job's own webhook (job.finished / job.failed); shown in the API.
    pub webhook_url: Option<String>,
    /// The secret that signs deliveries to `webhook_url`: shown once, when the job is created.
    pub webhook_secret: Option<String>,
    /// How deliveries to `webhook_url` are signed and shaped: CloudConvert's way for a
    /// job made through its surface.
    pub webhook_signing: crate::webhooks::Signing,
    pub status: JobStatus,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub tasks: Vec<Task>,
}

impl Job {
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    pub fn task_by_name(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }

    pub fn to_api_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "tag": self.tag,
            "webhook_url": self.webhook_url,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "tasks": self.tasks.iter().map(Task::to_api_json).collect::<Vec<_>>(),
        })
    }
}

/// The account a key belongs to. Every job, task and file has one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    /// Requests a minute this user's keys may make; the server's default when `None`.
    pub rate_limit: Option<u32>,
    /// Credits left; `None` is unlimited (the default for a self-hosted owner).
    pub credits: Option<i64>,
}

/// The documented price of a job: one credit per processing task (convert, compress,
/// merge, archive, capture_website, ocr, watermark, thumbnail); imports and exports are free.
pub fn job_cost(tasks: &[Task]) -> i64 {
    tasks.iter().map(task_cost).sum()
}

/// A task's credits: one for a processing task, none for an import or export.
pub fn task_cost(task: &Task) -> i64 {
    let n = task.operation.name();
    i64::from(!n.starts_with("import/") && !n.starts_with("export/"))
}
