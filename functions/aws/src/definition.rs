//! The state machines' definitions (`statemachine/job.asl.json`, the standard one, and
//! `statemachine/job-express.asl.json`), generated from [`crate::steps::FUNCTIONS`] so the
//! states and the functions cannot drift apart. The committed files are checked by this
//! module's test, which rewrites them when `RUNCONVERT_WRITE_DEFINITION=1` is set.
//!
//! **Standard**: one execution per job, whose shape is the job's graph. `Start` lists the
//! job's tasks (inputs first); a Map runs one iteration per task, all at once. An
//! iteration waits in `AwaitInputs` (a task token, no polling) until its own inputs have
//! ended, or its upload arrived (the bucket's notification); then it invokes its
//! operation's function, which lets the tasks that waited for it go on when it has
//! recorded its end ([`crate::Aws::work`]). Every state that can fail is caught: a task's
//! by `RecordFailure` (the task fails with a code, the job goes on), the whole by
//! `FailJob` (the job ends failed). `Finish` sets the job's outcome and `Publish` hands it
//! to the webhook queue.
//!
//! **Express** (jobs with no upload, [`crate::dispatch::fits_express`]): priced by
//! duration rather than by state transition, a job costs a hundredth. It has no task
//! tokens: `Start` groups the tasks by depth in the graph, and the depths run one after
//! another, each one's tasks at once. `Ready` tells each task its function and how many
//! of the execution's seconds are left (`EXPRESS_BUDGET_SECONDS`); a task that would not
//! fit, or whose function outlasts them (`States.Timeout`), hands the job to a standard
//! execution of the same name (`Handoff`), which picks up where it is: ended tasks stay
//! ended, running ones are waited for. Express executions send no status events, so
//! `Watch` first arms the watchdog queue: a job still open, and never handed off, when
//! its message comes due is ended failed.

use crate::steps::FUNCTIONS;
use serde_json::{json, Map, Value};

/// Errors of the Lambda service itself (not of the function): retried with backoff.
fn lambda_retry(interval: u64, max_delay: u64) -> Value {
    lambda_retry_at_most(interval, max_delay, 6)
}

fn lambda_retry_at_most(interval: u64, max_delay: u64, attempts: u64) -> Value {
    json!({
        "ErrorEquals": [
            "Lambda.TooManyRequestsException",
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException"
        ],
        "IntervalSeconds": interval,
        "MaxAttempts": attempts,
        "BackoffRate": 2,
        "MaxDelaySeconds": max_delay,
        "JitterStrategy": "FULL"
    })
}

/// A job step's own errors are retried too: every step is safe to repeat.
fn step_retry() -> Value {
    json!({
        "ErrorEquals": ["States.TaskFailed"],
        "IntervalSeconds": 2,
        "MaxAttempts": 3,
        "BackoffRate": 2,
        "JitterStrategy": "FULL"
    })
}

fn catch(next: &str) -> Value {
    json!([{ "ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": next }])
}

fn job_step(step: &str, extra: Value) -> Value {
    let mut payload = json!({ "step": step, "job_id.$": "$.job_id" });
    if let (Some(p), Value::Object(e)) = (payload.as_object_mut(), extra) {
        p.extend(e);
    }
    json!({
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": { "FunctionName": "${JobFunctionArn}", "Payload": payload },
        "Retry": [lambda_retry(1, 30), step_retry()]
    })
}

fn with(mut state: Value, fields: Value) -> Value {
    if let (Some(s), Value::Object(f)) = (state.as_object_mut(), fields) {
        s.extend(f);
    }
    state
}

/// `convert_tools` → `ConvertTools`: the state of a function key.
fn state_name(key: &str) -> String {
    runconvert_core::names::pascal_case(key)
}

/// The definition, with `${<Function>Arn}` and `${WebhookQueueUrl}` for the template's
/// DefinitionSubstitutions.
pub fn definition() -> Value {
    let mut iteration = Map::new();
    iteration.insert(
        "AwaitInputs".into(),
        json!({
            "Comment": "Waits, without polling, until this task's own inputs have ended (an import/upload: until its file is in S3, at most until its form expires). The job function keeps the token and answers {run, function}: run false if the task ended without running (an input failed, the upload came, the job is gone).",
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
            "Parameters": {
                "FunctionName": "${JobFunctionArn}",
                "Payload": {
                    "step": "await",
                    "job_id.$": "$.job_id",
                    "task_id.$": "$.task_id",
                    "token.$": "$$.Task.Token"
                }
            },
            "TimeoutSecondsPath": "$.wait_seconds",
            "ResultPath": "$.ready",
            "Retry": [lambda_retry(1, 30)],
            "Catch": catch("RecordFailure"),
            "Next": "Route"
        }),
    );
    task_states(
        &mut iteration,
        "To the function of the task's operation (convert and thumbnail: the tools image when their engine is a tool).",
        vec![json!({ "Variable": "$.ready.run", "BooleanEquals": false, "Next": "Done" })],
        json!({ "Retry": [lambda_retry(2, 60)], "Catch": catch("RecordFailure") }),
    );

    let mut states = Map::new();
    states.insert(
        "Start".into(),
        with(
            job_step("start", json!({})),
            json!({
                "Comment": "The job's tasks, inputs first, each with how long it may wait; the job is processing.",
                "ResultSelector": { "tasks.$": "$.Payload.tasks" },
                "ResultPath": "$.start",
                "Catch": catch("FailJob"),
                "Next": "Tasks"
            }),
        ),
    );
    states.insert(
        "Tasks".into(),
        json!({
            "Comment": "One iteration per task of the job, all at once (inputs come first, so a full map never waits on an iteration it has not started).",
            "Type": "Map",
            "ItemsPath": "$.start.tasks",
            "MaxConcurrency": 40,
            "ItemSelector": {
                "job_id.$": "$.job_id",
                "task_id.$": "$$.Map.Item.Value.task_id",
                "name.$": "$$.Map.Item.Value.name",
                "wait_seconds.$": "$$.Map.Item.Value.wait_seconds"
            },
            "ItemProcessor": {
                "ProcessorConfig": { "Mode": "INLINE" },
                "StartAt": "AwaitInputs",
                "States": Value::Object(iteration)
            },
            "ResultPath": null,
            "Catch": catch("FailJob"),
            "Next": "Finish"
        }),
    );
    states.extend(ending(json!({})));
    json!({
        "Comment": "RunConvert: one execution per job, shaped by its graph. Input {\"job_id\": \"...\"}; only ids travel in the state, the job lives in DynamoDB. Generated by functions/aws/src/definition.rs (do not edit by hand); the dollar-brace names are DefinitionSubstitutions from template.yaml.",
        "StartAt": "Start",
        "States": Value::Object(states)
    })
}

/// The Catch of a task's states: the task fails with a code, the job goes on.
fn record_failure() -> Value {
    with(
        job_step("failed", json!({ "task_id.$": "$.task_id", "error.$": "$.error" })),
        json!({
            "Comment": "The task's function failed without recording it (crashed, killed, past its Timeout, retries spent) or its upload never came: the task fails with a code, and the tasks waiting for it are told.",
            "ResultPath": null,
            "End": true
        }),
    )
}

/// The states after the tasks, the same in both machines: `Finish`, `FailJob`, `Publish`.
fn ending(finish: Value) -> Map<String, Value> {
    let mut states = Map::new();
    states.insert(
        "Finish".into(),
        with(
            job_step("finish", finish),
            json!({
                "Comment": "Every task has ended: the job's outcome (null if it had ended already), and whether anyone receives its events.",
                "ResultSelector": { "outcome.$": "$.Payload.outcome", "notify.$": "$.Payload.notify" },
                "ResultPath": "$.plan",
                "Catch": catch("FailJob"),
                "Next": "Notify"
            }),
        ),
    );
    states.insert(
        "FailJob".into(),
        with(
            job_step("fail_job", json!({ "error.$": "$.error" })),
            json!({
                "Comment": "A step of the job failed after its retries: the job ends failed, every open task with a code. If this fails too, the execution fails, and the job is ended by the EventBridge rule on failed executions (standard) or by the watchdog (express).",
                "ResultSelector": { "outcome.$": "$.Payload.outcome", "notify.$": "$.Payload.notify" },
                "ResultPath": "$.plan",
                "Next": "Notify"
            }),
        ),
    );
    states.insert(
        "Notify".into(),
        json!({
            "Comment": "The final event only when someone receives it (a webhook_url, or a subscription of the owner's when the job was created) and this execution ended the job.",
            "Type": "Choice",
            "Choices": [{ "Variable": "$.plan.notify", "BooleanEquals": true, "Next": "Publish" }],
            "Default": "Finished"
        }),
    );
    states.insert(
        "Publish".into(),
        json!({
            "Comment": "The job is over: its outcome to the webhook queue (job.finished or job.failed).",
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage",
            "Parameters": {
                "QueueUrl": "${WebhookQueueUrl}",
                "MessageGroupId.$": "$.job_id",
                "MessageBody": { "job_id.$": "$.job_id", "outcome.$": "$.plan.outcome" }
            },
            "ResultPath": null,
            "Retry": [{
                "ErrorEquals": ["States.TaskFailed"],
                "IntervalSeconds": 1,
                "MaxAttempts": 5,
                "BackoffRate": 2,
                "JitterStrategy": "FULL"
            }],
            "Next": "Finished"
        }),
    );
    states.insert("Finished".into(), json!({ "Type": "Succeed" }));
    states
}

/// The Express definition, with `${<Function>Arn}`, `${WebhookQueueUrl}` and
/// `${WatchdogQueueUrl}` for the template's DefinitionSubstitutions.
pub fn express_definition() -> Value {
    // Lambda's own errors, retried briefly: the whole execution has five minutes.
    let retry = || lambda_retry_at_most(1, 5, 3);
    let mut iteration = Map::new();
    iteration.insert(
        "Ready".into(),
        with(
            job_step("ready", json!({ "task_id.$": "$.task_id", "started.$": "$.started" })),
            json!({
                "Comment": "{run, function, budget}: run false if the task ended without running (an input failed, the job is gone); budget, the seconds of the execution left to it (0: it goes on in a standard execution).",
                "ResultSelector": {
                    "run.$": "$.Payload.run",
                    "function.$": "$.Payload.function",
                    "budget.$": "$.Payload.budget"
                },
                "ResultPath": "$.ready",
                "Catch": catch("RecordFailure"),
                "Next": "Route"
            }),
        ),
    );
    task_states(
        &mut iteration,
        "To the function of the task's operation, if the execution has time left for it.",
        vec![
            json!({ "Variable": "$.ready.run", "BooleanEquals": false, "Next": "Done" }),
            json!({ "Variable": "$.ready.budget", "NumericLessThan": 1, "Next": "OutOfTime" }),
        ],
        json!({
            "TimeoutSecondsPath": "$.ready.budget",
            "Retry": [retry()],
            "Catch": [
                { "ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "OutOfTime" },
                { "ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "RecordFailure" }
            ]
        }),
    );
    iteration.insert(
        "OutOfTime".into(),
        json!({
            "Comment": "The execution has no time left for this task: the job goes on in a standard execution.",
            "Type": "Fail",
            "Error": "RunConvert.Handoff",
            "Cause": "the task does not fit in what is left of the express execution"
        }),
    );

    let mut states = Map::new();
    states.insert(
        "Watch".into(),
        json!({
            "Comment": "Arms the watchdog: express executions send no status events, so a job this execution leaves open (and never handed off) is ended failed when the message comes due.",
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage",
            "Parameters": {
                "QueueUrl": "${WatchdogQueueUrl}",
                "MessageBody": { "job_id.$": "$.job_id" }
            },
            "ResultPath": null,
            "Retry": [{
                "ErrorEquals": ["States.TaskFailed"],
                "IntervalSeconds": 1,
                "MaxAttempts": 3,
                "BackoffRate": 2,
                "JitterStrategy": "FULL"
            }],
            "Catch": [{ "ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Handoff" }],
            "Next": "Start"
        }),
    );
    states.insert(
        "Start".into(),
        with(
            job_step("start", json!({ "express": true })),
            json!({
                "Comment": "The job's tasks grouped by depth in its graph (a task's inputs are all in earlier groups); the job is processing.",
                "ResultSelector": { "levels.$": "$.Payload.levels" },
                "ResultPath": "$.start",
                "Catch": catch("FailJob"),
                "Next": "Levels"
            }),
        ),
    );
    states.insert(
        "Levels".into(),
        json!({
            "Comment": "The depths one after another; each one's tasks at once.",
            "Type": "Map",
            "ItemsPath": "$.start.levels",
            "MaxConcurrency": 1,
            "ItemSelector": {
                "job_id.$": "$.job_id",
                "started.$": "$$.Execution.StartTime",
                "tasks.$": "$$.Map.Item.Value"
            },
            "ItemProcessor": {
                "ProcessorConfig": { "Mode": "INLINE" },
                "StartAt": "Level",
                "States": {
                    "Level": {
                        "Type": "Map",
                        "ItemsPath": "$.tasks",
                        "MaxConcurrency": 40,
                        "ItemSelector": {
                            "job_id.$": "$.job_id",
                            "started.$": "$.started",
                            "task_id.$": "$$.Map.Item.Value"
                        },
                        "ItemProcessor": {
                            "ProcessorConfig": { "Mode": "INLINE" },
                            "StartAt": "Ready",
                            "States": Value::Object(iteration)
                        },
                        "ResultPath": null,
                        "End": true
                    }
                }
            },
            "ResultPath": null,
            "Catch": [
                { "ErrorEquals": ["RunConvert.Handoff"], "ResultPath": "$.error", "Next": "Handoff" },
                { "ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "FailJob" }
            ],
            "Next": "Finish"
        }),
    );
    states.insert(
        "Handoff".into(),
        with(
            job_step("handoff", json!({})),
            json!({
                "Comment": "The job goes on in a standard execution named after it (which finishes and publishes it); this one ends.",
                "ResultPath": null,
                "Catch": catch("FailJob"),
                "Next": "HandedOff"
            }),
        ),
    );
    states.insert("HandedOff".into(), json!({ "Type": "Succeed" }));
    states.extend(ending(json!({ "express": true })));
    json!({
        "Comment": "RunConvert, express: a job with no upload, priced by duration; a job that outgrows the five minutes goes on in the standard machine. Input {\"job_id\": \"...\"}. Generated by functions/aws/src/definition.rs (do not edit by hand); the dollar-brace names are DefinitionSubstitutions from template.yaml.",
        "StartAt": "Watch",
        "TimeoutSeconds": 300,
        "States": Value::Object(states)
    })
}

/// The states an iteration of either machine shares after its task is ready: `Route`
/// (`first` choices, then one per function), every function's state (with `fields`:
/// its retries, catches, timeout), `UnknownFunction`, `RecordFailure` and `Done`.
fn task_states(iteration: &mut Map<String, Value>, comment: &str, first: Vec<Value>, fields: Value) {
    let mut choices = first;
    for (key, function) in FUNCTIONS {
        choices.push(json!({ "Variable": "$.ready.function", "StringEquals": key, "Next": state_name(key) }));
        iteration.insert(state_name(key), function_state(function, fields.clone()));
    }
    iteration.insert(
        "Route".into(),
        json!({ "Comment": comment, "Type": "Choice", "Choices": choices, "Default": "UnknownFunction" }),
    );
    iteration.insert("UnknownFunction".into(), unknown_function());
    iteration.insert("RecordFailure".into(), record_failure());
    iteration.insert("Done".into(), json!({ "Type": "Succeed" }));
}

/// A task's operation: its function invoked with `{job_id, task_id}`.
fn function_state(function: &str, fields: Value) -> Value {
    with(
        json!({
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
                "FunctionName": format!("${{{function}Arn}}"),
                "Payload": { "job_id.$": "$.job_id", "task_id.$": "$.task_id" }
            },
            "ResultPath": null,
            "Next": "Done"
        }),
        fields,
    )
}

fn unknown_function() -> Value {
    json!({
        "Comment": "A function this definition does not know fails the task, not the job.",
        "Type": "Pass",
        "Result": {
            "Error": "RunConvert.UnknownFunction",
            "Cause": "the job function named a function with no state"
        },
        "ResultPath": "$.error",
        "Next": "RecordFailure"
    })
}

/// The committed files: (path from the repository's root, contents as pretty JSON with a
/// final newline).
pub fn rendered() -> [(&'static str, String); 2] {
    let pretty = |v: Value| serde_json::to_string_pretty(&v).expect("a JSON value") + "\n";
    [
        ("statemachine/job.asl.json", pretty(definition())),
        ("statemachine/job-express.asl.json", pretty(express_definition())),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_definitions_are_current() {
        for (file, want) in super::rendered() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(file);
            if std::env::var("RUNCONVERT_WRITE_DEFINITION").as_deref() == Ok("1") {
                std::fs::write(&path, &want).unwrap();
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                have == want,
                "{file} is not what functions/aws/src/definition.rs generates: \
                 run RUNCONVERT_WRITE_DEFINITION=1 cargo test -p runconvert-aws definition"
            );
        }
    }
}
