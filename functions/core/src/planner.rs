//! The planner: given a job as stored, what happens next.
//!
//! It is a pure function, so the embedded executor and the AWS state machine's Plan step
//! make the same decisions:
//! - a waiting task starts once every input is final and its inputs gave it something to
//!   work on;
//! - a task whose input failed fails with `input_task_failed` (unless the failed inputs
//!   were `ignore_error` and another input finished: then it runs with what there is);
//! - an import/upload that is still waiting when its window closes fails with `upload_timeout`;
//! - once every task is final the job is `completed`, or `failed` if a task failed and
//!   that failure was not ignored (`ignore_error` on it, or on what it depended on).

use crate::error::{codes, TaskError};
use crate::model::{Job, JobStatus, Task, TaskStatus};
use crate::ops::Operation;
use crate::Timestamp;
use std::collections::HashMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Task ids that may start now.
    pub start: Vec<String>,
    /// Task ids that must fail now, with why.
    pub fail: Vec<(String, TaskError)>,
    /// Set when, with `fail` applied, every task is final.
    pub outcome: Option<JobStatus>,
    /// The earliest time the plan may change without any task ending (an upload window closing).
    pub next_deadline: Option<Timestamp>,
}

#[derive(Clone, Copy, PartialEq)]
struct State {
    status: TaskStatus,
    /// For failed tasks: whether the job may still complete.
    ignorable: bool,
}

pub fn plan(job: &Job, now: Timestamp) -> Plan {
    let by_id: HashMap<&str, &Task> = job.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut state: HashMap<&str, State> = HashMap::new();
    // Stored failures: ignorable if the task said so, or if it failed only because of
    // inputs whose failures were ignorable. Tasks are stored inputs-first, so one pass works.
    for t in &job.tasks {
        let ignorable = t.status == TaskStatus::Failed
            && (t.ignore_error
                || (t.code.as_deref() == Some(codes::INPUT_TASK_FAILED)
                    && t.depends_on_task_ids.iter().all(|d| {
                        state
                            .get(d.as_str())
                            .is_none_or(|s| s.status != TaskStatus::Failed || s.ignorable)
                    })));
        state.insert(
            &t.id,
            State {
                status: t.status,
                ignorable,
            },
        );
    }

    let mut plan = Plan::default();
    // Failing a task can make its dependants fail too: repeat until nothing changes.
    loop {
        let mut changed = false;
        for t in &job.tasks {
            if state[t.id.as_str()].status != TaskStatus::Waiting || plan.start.contains(&t.id) {
                continue;
            }
            if let Operation::ImportUpload(_) = t.operation {
                match t.expires_at {
                    Some(deadline) if deadline <= now => {
                        let err = TaskError::new(
                            codes::UPLOAD_TIMEOUT,
                            "no file was uploaded to this task before its upload form expired",
                        );
                        fail(&mut plan, &mut state, t, err, t.ignore_error);
                        changed = true;
                    }
                    Some(deadline) => {
                        plan.next_deadline = Some(plan.next_deadline.map_or(deadline, |d| d.min(deadline)));
                    }
                    None => {}
                }
                continue;
            }
            let deps: Vec<State> = t.depends_on_task_ids.iter().map(|d| state[d.as_str()]).collect();
            if deps.iter().any(|d| !d.status.is_final()) {
                continue;
            }
            let failed: Vec<(&str, State)> = t
                .depends_on_task_ids
                .iter()
                .map(|d| (d.as_str(), state[d.as_str()]))
                .filter(|(_, s)| s.status == TaskStatus::Failed)
                .collect();
            let any_finished = deps.iter().any(|d| d.status == TaskStatus::Finished);
            let all_ignorable = failed.iter().all(|(_, s)| s.ignorable);
            if failed.is_empty() || (all_ignorable && any_finished) {
                plan.start.push(t.id.clone());
            } else {
                let names: Vec<String> = failed
                    .iter()
                    .map(|(id, _)| format!("`{}`", by_id.get(id).map_or(*id, |t| t.name.as_str())))
                    .collect();
                let what = if names.len() == 1 { "input task" } else { "input tasks" };
                let err = TaskError::new(codes::INPUT_TASK_FAILED, format!("{what} {} failed", names.join(", ")));
                fail(&mut plan, &mut state, t, err, t.ignore_error || all_ignorable);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }

    let pending = job
        .tasks
        .iter()
        .any(|t| !state[t.id.as_str()].status.is_final() || plan.start.contains(&t.id));
    if !pending {
        let failed = state.values().any(|s| s.status == TaskStatus::Failed && !s.ignorable);
        plan.outcome = Some(if failed {
            JobStatus::Failed
        } else {
            JobStatus::Completed
        });
        plan.next_deadline = None;
    }
    plan
}

fn fail<'a>(plan: &mut Plan, state: &mut HashMap<&'a str, State>, t: &'a Task, err: TaskError, ignorable: bool) {
    plan.fail.push((t.id.clone(), err));
    state.insert(
        &t.id,
        State {
            status: TaskStatus::Failed,
            ignorable,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Convert, ExportUrl, ImportUpload, ImportUrl};
    use crate::Timestamp;

    fn task(name: &str, op: Operation, deps: &[&str]) -> Task {
        Task {
            id: name.to_string(),
            job_id: "j".into(),
            name: name.to_string(),
            operation: op,
            input: deps.iter().map(|d| d.to_string()).collect(),
            ignore_error: false,
            timeout: None,
            status: TaskStatus::Waiting,
            message: None,
            code: None,
            percent: 0,
            depends_on_task_ids: deps.iter().map(|d| d.to_string()).collect(),
            created_at: Timestamp(0),
            started_at: None,
            ended_at: None,
            expires_at: None,
            attempts: 0,
            result: None,
        }
    }

    fn url() -> Operation {
        Operation::ImportUrl(ImportUrl {
            url: "https://e.com/a.jpg".into(),
            filename: None,
            headers: None,
        })
    }

    fn convert() -> Operation {
        Operation::Convert(Convert {
            input_format: None,
            output_format: "png".into(),
            engine: None,
            filename: None,
            options: Default::default(),
        })
    }

    fn export() -> Operation {
        Operation::ExportUrl(ExportUrl { inline: false })
    }

    fn job(tasks: Vec<Task>) -> Job {
        Job {
            webhook_url: None,
            webhook_secret: None,
            webhook_signing: Default::default(),
            id: "j".into(),
            user_id: "u".into(),
            tag: None,
            status: JobStatus::Created,
            created_at: Timestamp(0),
            started_at: None,
            ended_at: None,
            tasks,
        }
    }

    fn set(j: &mut Job, name: &str, status: TaskStatus, code: Option<&str>) {
        let t = j.tasks.iter_mut().find(|t| t.name == name).unwrap();
        t.status = status;
        t.code = code.map(String::from);
    }

    #[test]
    fn runs_a_chain_in_order() {
        let mut j = job(vec![
            task("i", url(), &[]),
            task("c", convert(), &["i"]),
            task("e", export(), &["c"]),
        ]);
        assert_eq!(plan(&j, Timestamp(0)).start, ["i"]);
        set(&mut j, "i", TaskStatus::Processing, None);
        let p = plan(&j, Timestamp(0));
        assert!(p.start.is_empty() && p.outcome.is_none());
        set(&mut j, "i", TaskStatus::Finished, None);
        assert_eq!(plan(&j, Timestamp(0)).start, ["c"]);
        set(&mut j, "c", TaskStatus::Finished, None);
        set(&mut j, "e", TaskStatus::Finished, None);
        assert_eq!(plan(&j, Timestamp(0)).outcome, Some(JobStatus::Completed));
    }

    #[test]
    fn a_failure_cascades_and_fails_the_job() {
        let mut j = job(vec![
            task("i", url(), &[]),
            task("c", convert(), &["i"]),
            task("e", export(), &["c"]),
            task("i2", url(), &[]),
        ]);
        set(&mut j, "i", TaskStatus::Failed, Some("download_failed"));
        let p = plan(&j, Timestamp(0));
        assert_eq!(p.start, ["i2"]);
        let failed: Vec<_> = p.fail.iter().map(|(id, e)| (id.as_str(), e.code.as_str())).collect();
        assert_eq!(failed, [("c", "input_task_failed"), ("e", "input_task_failed")]);
        assert!(p.fail[0].1.message.contains("`i`"));
        assert_eq!(p.outcome, None, "i2 still runs");
        set(&mut j, "c", TaskStatus::Failed, Some("input_task_failed"));
        set(&mut j, "e", TaskStatus::Failed, Some("input_task_failed"));
        set(&mut j, "i2", TaskStatus::Finished, None);
        assert_eq!(plan(&j, Timestamp(0)).outcome, Some(JobStatus::Failed));
    }

    #[test]
    fn ignore_error_lets_the_job_go_on() {
        let mut j = job(vec![
            task("a", url(), &[]),
            task("b", url(), &[]),
            task("e", export(), &["a", "b"]),
            task("c", convert(), &["a"]),
        ]);
        j.tasks[0].ignore_error = true;
        set(&mut j, "a", TaskStatus::Failed, Some("download_failed"));
        set(&mut j, "b", TaskStatus::Finished, None);
        let p = plan(&j, Timestamp(0));
        assert_eq!(p.start, ["e"], "e runs with b's files");
        assert_eq!(p.fail.len(), 1);
        assert_eq!(p.fail[0].0, "c");
        set(&mut j, "c", TaskStatus::Failed, Some("input_task_failed"));
        set(&mut j, "e", TaskStatus::Finished, None);
        assert_eq!(plan(&j, Timestamp(0)).outcome, Some(JobStatus::Completed));
    }

    #[test]
    fn uploads_wait_then_time_out() {
        let mut up = task(
            "u",
            Operation::ImportUpload(ImportUpload {
                filename: None,
                file_size: None,
            }),
            &[],
        );
        up.expires_at = Some(Timestamp(1000));
        let j = job(vec![up, task("c", convert(), &["u"])]);
        let p = plan(&j, Timestamp(500));
        assert!(p.start.is_empty() && p.fail.is_empty());
        assert_eq!(p.next_deadline, Some(Timestamp(1000)));
        let p = plan(&j, Timestamp(1000));
        assert_eq!(p.fail[0].1.code, "upload_timeout");
        assert_eq!(p.fail[1].1.code, "input_task_failed");
        assert_eq!(p.outcome, Some(JobStatus::Failed));
    }
}
