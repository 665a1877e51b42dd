//! Errors as the API shows them: `{code, message, errors: {field: [..]}}`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An error answered to an API call. `status` is the HTTP status; the rest is the JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Error))]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub errors: BTreeMap<String, Vec<String>>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, codes::INVALID_DATA, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, codes::UNAUTHENTICATED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, codes::FORBIDDEN, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(404, codes::NOT_FOUND, format!("{what} not found"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, codes::INTERNAL, message)
    }

    /// A 400 carrying field errors; the message names the first of them.
    pub fn invalid_fields(errors: BTreeMap<String, Vec<String>>) -> Self {
        let message = match errors.iter().next() {
            Some((field, msgs)) => {
                let first = msgs.first().map(String::as_str).unwrap_or("is invalid");
                let more = errors.values().map(Vec::len).sum::<usize>() - 1;
                if more > 0 {
                    format!("{field}: {first} (and {more} more)")
                } else {
                    format!("{field}: {first}")
                }
            }
            None => "the request is invalid".to_string(),
        };
        ApiError {
            status: 400,
            code: codes::INVALID_DATA.to_string(),
            message,
            errors,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Why a task failed: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub code: String,
    pub message: String,
}

impl TaskError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        TaskError {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for TaskError {}

/// The application codes of the API (the spec's, and those this server adds).
pub mod codes {
    // API errors
    pub const INVALID_DATA: &str = "invalid_data";
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const INTERNAL: &str = "internal_error";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const INSUFFICIENT_CREDITS: &str = "insufficient_credits";

    // Task errors
    pub const UPLOAD_TIMEOUT: &str = "upload_timeout";
    pub const PROCESSING_FAILED: &str = "processing_failed";
    pub const INPUT_TASK_FAILED: &str = "input_task_failed";
    pub const INVALID_FILE: &str = "invalid_file";
    pub const UNSUPPORTED_CONVERSION: &str = "unsupported_conversion";
    pub const LIMIT_EXCEEDED: &str = "limit_exceeded";
    pub const DOWNLOAD_FAILED: &str = "download_failed";
    pub const FORBIDDEN_ADDRESS: &str = "forbidden_address";
    pub const FILE_TOO_LARGE: &str = "file_too_large";
    pub const TIMEOUT: &str = "timeout";
    pub const INTERRUPTED: &str = "interrupted";
    /// The task was cancelled (CloudConvert's `POST /v2/tasks/{id}/cancel`).
    pub const CANCELLED: &str = "cancelled";
    pub const NO_INPUT_FILES: &str = "no_input_files";
    /// The object, blob or remote file named by the task does not exist.
    pub const FILE_NOT_FOUND: &str = "file_not_found";
    /// The bucket or container named by the task does not exist.
    pub const BUCKET_NOT_FOUND: &str = "bucket_not_found";
    /// The storage service refused the task's credentials.
    pub const ACCESS_DENIED: &str = "access_denied";
    /// Writing to the task's destination failed.
    pub const UPLOAD_FAILED: &str = "upload_failed";
    /// The SSH server's host key is not the one the task's `host_key` names.
    pub const HOST_KEY_MISMATCH: &str = "host_key_mismatch";
    /// This server takes SFTP tasks only with a `host_key`, and the task has none.
    pub const HOST_KEY_REQUIRED: &str = "host_key_required";
}
