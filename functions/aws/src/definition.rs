//! The state machine's definition (`statemachine/job.asl.json`), generated from
//! [`crate::steps::FUNCTIONS`] so the states and the functions cannot drift apart. The
//! committed file is checked by this module's test, which rewrites it when
//! `RUNCONVERT_WRITE_DEFINITION=1` is set.
//!
//! One execution per job, whose shape is the job's graph: `Start` lists the job's tasks
//! (inputs first); a Map runs one iteration per task, all at once. An iteration waits in
//! `AwaitInputs` (a task token, no polling) until its own inputs have ended, or its upload
//! arrived (the bucket's notification); then it invokes its operation's function, and
//! `Ended` lets the tasks that waited for it go on. Every state that can fail is caught:
//! a task's by `RecordFailure` (the task fails with a code, the job goes on), the whole
//! by `FailJob` (the job ends failed). `Finish` sets the job's outcome and `Publish`
//! hands it to the webhook queue.

use crate::steps::FUNCTIONS;
use serde_json::{json, Map, Value};

/// Errors of the Lambda service itself (not of the function): retried with backoff.
fn lambda_retry(interval: u64, max_delay: u64) -> Value {
    json!({
        "ErrorEquals": [
            "Lambda.TooManyRequestsException",
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException"
        ],
        "IntervalSeconds": interval,
        "MaxAttempts": 6,
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
    key.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
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
    let mut choices = vec![json!({ "Variable": "$.ready.run", "BooleanEquals": false, "Next": "Done" })];
    for (key, _) in FUNCTIONS {
        choices.push(json!({ "Variable": "$.ready.function", "StringEquals": key, "Next": state_name(key) }));
    }
    iteration.insert(
        "Route".into(),
        json!({
            "Comment": "To the function of the task's operation (convert and thumbnail: the tools image when their engine is a tool).",
            "Type": "Choice",
            "Choices": choices,
            "Default": "UnknownFunction"
        }),
    );
    iteration.insert(
        "UnknownFunction".into(),
        json!({
            "Comment": "A function this definition does not know fails the task, not the job.",
            "Type": "Pass",
            "Result": {
                "Error": "RunConvert.UnknownFunction",
                "Cause": "the job function named a function with no state"
            },
            "ResultPath": "$.error",
            "Next": "RecordFailure"
        }),
    );
    for (key, function) in FUNCTIONS {
        iteration.insert(
            state_name(key),
            json!({
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {
                    "FunctionName": format!("${{{function}Arn}}"),
                    "Payload": { "job_id.$": "$.job_id", "task_id.$": "$.task_id" }
                },
                "ResultPath": null,
                "Retry": [lambda_retry(2, 60)],
                "Catch": catch("RecordFailure"),
                "Next": "Ended"
            }),
        );
    }
    iteration.insert(
        "Ended".into(),
        with(
            job_step("ended", json!({})),
            json!({
                "Comment": "The task ended (its function recorded how): the tasks waiting for it may go on.",
                "ResultPath": null,
                "End": true
            }),
        ),
    );
    iteration.insert(
        "RecordFailure".into(),
        with(
            job_step("failed", json!({ "task_id.$": "$.task_id", "error.$": "$.error" })),
            json!({
                "Comment": "The task's function failed without recording it (crashed, killed, past its Timeout, retries spent) or its upload never came: the task fails with a code, and the tasks waiting for it are told.",
                "ResultPath": null,
                "End": true
            }),
        ),
    );
    iteration.insert("Done".into(), json!({ "Type": "Succeed" }));

    json!({
        "Comment": "RunConvert: one execution per job, shaped by its graph. Input {\"job_id\": \"...\"}; only ids travel in the state, the job lives in DynamoDB. Generated by functions/aws/src/definition.rs (do not edit by hand); the dollar-brace names are DefinitionSubstitutions from template.yaml.",
        "StartAt": "Start",
        "States": {
            "Start": with(
                job_step("start", json!({})),
                json!({
                    "Comment": "The job's tasks, inputs first, each with how long it may wait; the job is processing.",
                    "ResultSelector": { "tasks.$": "$.Payload.tasks" },
                    "ResultPath": "$.start",
                    "Catch": catch("FailJob"),
                    "Next": "Tasks"
                }),
            ),
            "Tasks": {
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
            },
            "Finish": with(
                job_step("finish", json!({})),
                json!({
                    "Comment": "Every task has ended: the job's outcome (null if it had ended already).",
                    "ResultSelector": { "outcome.$": "$.Payload.outcome" },
                    "ResultPath": "$.plan",
                    "Catch": catch("FailJob"),
                    "Next": "Publish"
                }),
            ),
            "FailJob": with(
                job_step("fail_job", json!({ "error.$": "$.error" })),
                json!({
                    "Comment": "A step of the job failed after its retries: the job ends failed, every open task with a code. If this fails too, the execution fails, and the EventBridge rule on failed executions ends the job.",
                    "ResultSelector": { "outcome.$": "$.Payload.outcome" },
                    "ResultPath": "$.plan",
                    "Next": "Publish"
                }),
            ),
            "Publish": {
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
            },
            "Finished": { "Type": "Succeed" }
        }
    })
}

/// The definition as committed: pretty JSON and a final newline.
pub fn rendered() -> String {
    serde_json::to_string_pretty(&definition()).expect("a JSON value") + "\n"
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_definition_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../statemachine/job.asl.json");
        let want = super::rendered();
        if std::env::var("RUNCONVERT_WRITE_DEFINITION").as_deref() == Ok("1") {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "statemachine/job.asl.json is not what functions/aws/src/definition.rs generates: \
             run RUNCONVERT_WRITE_DEFINITION=1 cargo test -p runconvert-aws definition"
        );
    }
}
