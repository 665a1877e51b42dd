//! RunConvert's core: the model every adapter shares.
//!
//! - [`model`]: jobs, tasks, their statuses and results.
//! - [`ops`]: the typed options of every operation of the API.
//! - [`validate`]: a job request (JSON) → a checked [`validate::JobSpec`], or a 400 that says what is wrong.
//! - [`planner`]: which tasks of a job can start, which must fail, and when the job is over.
//! - [`formats`]: the format registry behind `/v2/core/*` and the executor alike.
//! - [`ports`]: the traits the adapters implement (job store, key store, file store, dispatcher, event sink).
//! - [`error`]: the API error and the task error.
//! - [`cloudconvert`]: jobs and tasks in CloudConvert's wire form (its surface, its webhooks).
//!
//! Nothing here knows HTTP, SQLite or AWS.

pub mod cloudconvert;
pub mod error;
pub mod formats;
pub mod keys;
pub mod model;
pub mod names;
pub mod ops;
pub mod pages;
pub mod planner;
pub mod ports;
pub mod secrets;
pub mod timestamp;
pub mod validate;
pub mod webhooks;

pub use error::{ApiError, TaskError};
pub use model::{Job, JobStatus, Task, TaskResult, TaskStatus};
pub use timestamp::Timestamp;

/// A fresh random identifier (UUID v4, hyphenated), used for jobs, tasks, users and webhooks.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
