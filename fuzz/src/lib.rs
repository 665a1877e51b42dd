//! What the fuzz targets share: the planner's invariants, a small executor that drives a
//! job to its end the way `functions/runconvert/src/executor.rs` does, and scratch files.
//!
//! The invariants are the ones `functions/core/src/planner.rs` documents:
//! - a waiting task starts once every input is final and its inputs gave it something;
//! - a task whose input failed fails with `input_task_failed` (unless ...);
//! - an import/upload still waiting when its window closes fails with `upload_timeout`;
//! - `Plan::outcome` is set when, with `fail` applied, every task is final;
//! - `Plan::next_deadline` is the earliest time the plan may change without a task ending.

use runconvert_core::error::codes;
use runconvert_core::model::{Job, JobStatus, Task, TaskStatus};
use runconvert_core::ops::Operation;
use runconvert_core::planner::{plan, Plan};
use runconvert_core::Timestamp;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// FNV-1a: a stable seed from the input, for the choices the bytes do not spell out.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A per-process scratch path in the temp directory (`runconvert-fuzz-<target>-<pid>-<what>`).
pub fn scratch_path(target: &str, what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("runconvert-fuzz-{target}-{}-{what}", std::process::id()))
}

/// Writes the fuzz input to this process's scratch file and returns its path.
pub fn scratch_file(target: &str, data: &[u8]) -> PathBuf {
    let path = scratch_path(target, "input");
    std::fs::write(&path, data).expect("writing the fuzz input to a scratch file");
    path
}

fn is_upload(t: &Task) -> bool {
    matches!(t.operation, Operation::ImportUpload(_))
}

/// Whether the job is one an executor following the planner can have stored: every task
/// that left `waiting` did so after all its inputs were final.
pub fn is_consistent(job: &Job) -> bool {
    let status: HashMap<&str, TaskStatus> = job.tasks.iter().map(|t| (t.id.as_str(), t.status)).collect();
    job.tasks.iter().all(|t| {
        t.status == TaskStatus::Waiting
            || t.depends_on_task_ids
                .iter()
                .all(|d| status.get(d.as_str()).is_some_and(|s| s.is_final()))
    })
}

/// Panics when `p`, the plan for `job` at `now`, breaks one of the planner's documented rules.
pub fn check_plan(job: &Job, now: Timestamp, p: &Plan) {
    let by_id: HashMap<&str, &Task> = job.tasks.iter().map(|t| (t.id.as_str(), t)).collect();

    let mut started: HashSet<&str> = HashSet::new();
    for id in &p.start {
        let t = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("the plan starts {id:?}, which is not a task of the job"));
        assert!(started.insert(id.as_str()), "the plan starts {id:?} twice");
        assert_eq!(
            t.status,
            TaskStatus::Waiting,
            "the plan starts {id:?}, which is {:?}, not waiting",
            t.status
        );
        // Uploads end when their file arrives, never by the planner's say.
        assert!(!is_upload(t), "the plan starts the import/upload {id:?}");
    }

    let mut failed: HashMap<&str, &str> = HashMap::new();
    for (id, err) in &p.fail {
        let t = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("the plan fails {id:?}, which is not a task of the job"));
        assert!(
            failed.insert(id.as_str(), err.code.as_str()).is_none(),
            "the plan fails {id:?} twice"
        );
        assert!(!started.contains(id.as_str()), "the plan both starts and fails {id:?}");
        assert_eq!(
            t.status,
            TaskStatus::Waiting,
            "the plan fails {id:?}, which is {:?}, not waiting",
            t.status
        );
        assert!(
            err.code == codes::INPUT_TASK_FAILED || err.code == codes::UPLOAD_TIMEOUT,
            "the plan fails {id:?} with an unexpected code {:?}",
            err.code
        );
    }

    // Each task's status once `fail` is applied.
    let after = |t: &Task| -> TaskStatus {
        if failed.contains_key(t.id.as_str()) {
            TaskStatus::Failed
        } else {
            t.status
        }
    };
    let dep_states = |t: &Task| -> Vec<TaskStatus> {
        t.depends_on_task_ids
            .iter()
            .map(|d| {
                after(
                    *by_id
                        .get(d.as_str())
                        .expect("the generators only name tasks of the job"),
                )
            })
            .collect()
    };

    let mut expected_deadline: Option<Timestamp> = None;
    for t in &job.tasks {
        let id = t.id.as_str();
        if t.status != TaskStatus::Waiting {
            continue;
        }
        if is_upload(t) {
            match t.expires_at {
                Some(d) if d <= now => assert_eq!(
                    failed.get(id).copied(),
                    Some(codes::UPLOAD_TIMEOUT),
                    "the upload window of {id:?} closed at {d:?} (now {now:?}) but it did not fail with upload_timeout"
                ),
                Some(d) => {
                    assert!(
                        !failed.contains_key(id),
                        "{id:?} failed though its upload window is open"
                    );
                    expected_deadline = Some(expected_deadline.map_or(d, |e| e.min(d)));
                }
                None => assert!(!failed.contains_key(id), "{id:?} (an upload with no window) failed"),
            }
            continue;
        }
        let deps = dep_states(t);
        let all_final = deps.iter().all(|s| s.is_final());
        let any_failed = deps.iter().any(|s| *s == TaskStatus::Failed);
        if started.contains(id) {
            assert!(all_final, "{id:?} starts before all its inputs are final: {deps:?}");
        }
        if let Some(code) = failed.get(id) {
            assert_eq!(
                *code,
                codes::INPUT_TASK_FAILED,
                "{id:?} is not an upload but failed with {code}"
            );
            assert!(
                all_final && any_failed,
                "{id:?} failed with input_task_failed, its inputs are {deps:?}"
            );
        }
        if all_final {
            assert!(
                started.contains(id) || failed.contains_key(id),
                "{id:?} waits though every input is final ({deps:?})"
            );
        }
        if all_final && !any_failed {
            assert!(
                started.contains(id),
                "{id:?} has every input finished ({deps:?}) but does not start"
            );
        }
    }
    assert_eq!(
        p.next_deadline, expected_deadline,
        "next_deadline is not the earliest open upload window"
    );

    let all_final = job.tasks.iter().all(|t| after(t).is_final());
    let any_failed = job.tasks.iter().any(|t| after(t) == TaskStatus::Failed);
    assert_eq!(
        p.outcome.is_some(),
        all_final,
        "outcome {:?}, yet with `fail` applied every task final = {all_final}",
        p.outcome
    );
    if p.outcome == Some(JobStatus::Failed) {
        assert!(any_failed, "the job fails but no task failed");
    }
    if all_final && !any_failed {
        assert_eq!(
            p.outcome,
            Some(JobStatus::Completed),
            "no task failed, yet the job does not complete"
        );
    }
    if let Some(o) = p.outcome {
        assert!(o.is_final(), "outcome {o:?} is not a final job status");
    }
}

/// Applies a plan the way the executor does: failures recorded, started tasks processing.
pub fn apply(job: &mut Job, p: &Plan, now: Timestamp) {
    for (id, err) in &p.fail {
        if let Some(t) = job.tasks.iter_mut().find(|t| &t.id == id) {
            t.status = TaskStatus::Failed;
            t.code = Some(err.code.clone());
            t.message = Some(err.message.clone());
            t.ended_at = Some(now);
        }
    }
    for id in &p.start {
        if let Some(t) = job.tasks.iter_mut().find(|t| &t.id == id) {
            t.status = TaskStatus::Processing;
            t.started_at = Some(now);
            t.attempts += 1;
        }
    }
    if !p.start.is_empty() && job.status == JobStatus::Created {
        job.status = JobStatus::Processing;
        job.started_at = Some(now);
    }
}

/// Plans, checks, applies and plans again (nothing may change), then lets one thing happen
/// (a running task ends, a file is uploaded, time reaches the next deadline) until the job
/// has an outcome. `seed` picks whether a task fails or finishes, and whether uploads come.
/// Panics if a rule is broken or the job gets stuck.
pub fn drive_to_end(mut job: Job, mut now: Timestamp, mut seed: u64) -> JobStatus {
    let rounds = 3 * job.tasks.len() + 8;
    for _ in 0..rounds {
        let p = plan(&job, now);
        check_plan(&job, now, &p);
        let consistent = is_consistent(&job);
        apply(&mut job, &p, now);

        // Planning again at the same time, with the plan applied, decides nothing new.
        let again = plan(&job, now);
        check_plan(&job, now, &again);
        assert!(
            again.start.is_empty() && again.fail.is_empty(),
            "planning again right after applying a plan starts {:?} and fails {:?}",
            again.start,
            again.fail.iter().map(|(id, _)| id).collect::<Vec<_>>()
        );
        if consistent {
            assert_eq!(
                again.outcome, p.outcome,
                "the outcome changes once its failures are stored"
            );
        }
        if let Some(outcome) = p.outcome {
            return outcome;
        }

        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        now = Timestamp(now.0.saturating_add(1));
        if let Some(t) = job.tasks.iter_mut().find(|t| t.status == TaskStatus::Processing) {
            if seed & 1 == 0 {
                t.status = TaskStatus::Finished;
            } else {
                t.status = TaskStatus::Failed;
                t.code = Some(codes::PROCESSING_FAILED.to_string());
                t.message = Some("the fuzzer failed it".into());
            }
            t.ended_at = Some(now);
            continue;
        }
        let waiting_upload = job
            .tasks
            .iter()
            .position(|t| t.status == TaskStatus::Waiting && is_upload(t));
        let upload_arrives = |job: &mut Job, i: usize, now: Timestamp| {
            let t = &mut job.tasks[i];
            t.status = TaskStatus::Finished;
            t.ended_at = Some(now);
        };
        match (waiting_upload, p.next_deadline) {
            // An upload with no window can only end by its file arriving.
            (Some(i), None) => upload_arrives(&mut job, i, now),
            (Some(i), Some(_)) if seed & 2 == 0 => upload_arrives(&mut job, i, now),
            // Else time runs to the next window's end: the next plan fails that upload.
            (_, Some(d)) => now = now.max(d),
            (None, None) => panic!(
                "the job is stuck: nothing runs, nothing starts, no deadline and no outcome: {:?}",
                job.tasks
                    .iter()
                    .map(|t| (&t.id, t.status, &t.depends_on_task_ids))
                    .collect::<Vec<_>>()
            ),
        }
    }
    panic!("no outcome after {rounds} rounds for {} tasks", job.tasks.len());
}
