//! A stored job made from bytes → `planner::plan`, checked against the planner's
//! documented rules (`runconvert_fuzz::check_plan`), then driven until it has an outcome.
//!
//! Layout (missing bytes read as 0):
//! - byte 0: task count, 1 + b % 16;
//! - byte 1: `now`, b × 100 ms;
//! - 5 bytes per task:
//!   - kind: bits 0-1 the operation (import/url, import/upload, convert, export/url),
//!     bits 2-3 the stored status (waiting, processing, finished, failed),
//!     bits 4-5 the stored code (none, input_task_failed, upload_timeout, processing_failed);
//!   - two bytes (little endian): which earlier tasks are its inputs (bit j: task j);
//!   - flags: bit 0 ignore_error, bit 1 has an upload window;
//!   - the window's end, b × 100 ms.
//!
//! Inputs always point to earlier tasks: the store keeps tasks inputs-first, as
//! `validate_job` orders them. The stored statuses are otherwise free, so the planner
//! also sees states no executor would leave (a task finished before its input).

#![no_main]

use libfuzzer_sys::fuzz_target;
use runconvert_core::error::codes;
use runconvert_core::model::{Job, JobStatus, Task, TaskStatus};
use runconvert_core::ops::{Convert, ExportUrl, ImportUpload, ImportUrl, Operation};
use runconvert_core::planner;
use runconvert_core::Timestamp;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

fn operation(k: u8) -> Operation {
    match k & 3 {
        0 => Operation::ImportUrl(ImportUrl {
            url: "https://example.com/a.jpg".into(),
            filename: None,
            headers: None,
        }),
        1 => Operation::ImportUpload(ImportUpload {
            filename: None,
            file_size: None,
        }),
        2 => Operation::Convert(Convert {
            input_format: None,
            output_format: "png".into(),
            engine: None,
            filename: None,
            options: Default::default(),
        }),
        _ => Operation::ExportUrl(ExportUrl { inline: false }),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let n = 1 + b.next() as usize % 16;
    let now = Timestamp(b.next() as i64 * 100);
    let mut tasks: Vec<Task> = Vec::with_capacity(n);
    for i in 0..n {
        let kind = b.next();
        let mask = u16::from_le_bytes([b.next(), b.next()]);
        let flags = b.next();
        let window = b.next();
        let deps: Vec<usize> = (0..i).filter(|&j| mask & (1u16 << j) != 0).collect();
        let code = match (kind >> 4) & 3 {
            0 => None,
            1 => Some(codes::INPUT_TASK_FAILED),
            2 => Some(codes::UPLOAD_TIMEOUT),
            _ => Some(codes::PROCESSING_FAILED),
        };
        tasks.push(Task {
            id: format!("t{i}"),
            job_id: "j".into(),
            name: format!("task-{i}"),
            operation: operation(kind),
            input: deps.iter().map(|d| format!("task-{d}")).collect(),
            ignore_error: flags & 1 != 0,
            timeout: None,
            status: TaskStatus::ALL[((kind >> 2) & 3) as usize],
            message: None,
            code: code.map(String::from),
            percent: 0,
            depends_on_task_ids: deps.iter().map(|d| format!("t{d}")).collect(),
            created_at: Timestamp(0),
            started_at: None,
            ended_at: None,
            expires_at: (flags & 2 != 0).then(|| Timestamp(window as i64 * 100)),
            attempts: 0,
            result: None,
        });
    }
    let job = Job {
        id: "j".into(),
        user_id: "u".into(),
        tag: None,
        webhook_url: None,
        webhook_secret: None,
        webhook_signing: Default::default(),
        status: JobStatus::Processing,
        created_at: Timestamp(0),
        started_at: None,
        ended_at: None,
        tasks,
    };

    // The first plan on its own (drive_to_end checks it again, then goes on).
    let p = planner::plan(&job, now);
    runconvert_fuzz::check_plan(&job, now, &p);
    runconvert_fuzz::drive_to_end(job, now, runconvert_fuzz::fnv1a(data));
});
