//! CloudConvert's wire form of jobs and tasks, from the spec's (`to_api_json`): its
//! statuses (`waiting | processing | finished | error`), a task's `credits` and
//! `retry_of_task_id`. CloudConvert's API surface answers in it, and its webhooks'
//! deliveries carry it, so receivers written for CloudConvert read what they know.

use serde_json::Value;

/// A job's status as CloudConvert names it.
pub fn job_status(spec: &str) -> &str {
    match spec {
        "created" => "waiting",
        "completed" => "finished",
        "failed" => "error",
        other => other,
    }
}

/// A task's status as CloudConvert names it (`failed` is `error`; the rest are the same).
pub fn task_status(spec: &str) -> &str {
    match spec {
        "failed" => "error",
        other => other,
    }
}

/// A task (the spec's JSON) in CloudConvert's form.
pub fn task(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if let Some(s) = o.get("status").and_then(Value::as_str).map(task_status) {
            o.insert("status".into(), s.to_string().into());
        }
        let op = o.get("operation").and_then(Value::as_str).unwrap_or_default();
        let credits = u8::from(!op.starts_with("import/") && !op.starts_with("export/"));
        o.insert("credits".into(), credits.into());
        o.entry("retry_of_task_id").or_insert(Value::Null);
    }
    v
}

/// A job (the spec's JSON, with its tasks) in CloudConvert's form.
pub fn job(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if let Some(s) = o.get("status").and_then(Value::as_str).map(job_status) {
            o.insert("status".into(), s.to_string().into());
        }
        if let Some(Value::Array(tasks)) = o.get_mut("tasks") {
            for t in tasks.iter_mut() {
                *t = task(t.take());
            }
        }
    }
    v
}

/// An event's payload (`{event, job}` or `{event, task}`) in CloudConvert's form.
pub fn event(payload: &Value) -> Value {
    let mut v = payload.clone();
    if let Some(o) = v.as_object_mut() {
        if let Some(j) = o.get_mut("job") {
            *j = job(j.take());
        }
        if let Some(t) = o.get_mut("task") {
            *t = task(t.take());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_and_credits_as_cloudconvert_shows_them() {
        let spec = json!({"event": "job.failed", "job": {"id": "j", "status": "failed", "tasks": [
            {"operation": "import/url", "status": "finished"},
            {"operation": "convert", "status": "failed"},
        ]}});
        let cc = event(&spec);
        assert_eq!(cc["job"]["status"], "error");
        assert_eq!(cc["job"]["tasks"][0]["status"], "finished");
        assert_eq!(cc["job"]["tasks"][0]["credits"], 0);
        assert_eq!(cc["job"]["tasks"][1]["status"], "error");
        assert_eq!(cc["job"]["tasks"][1]["credits"], 1);
        assert!(cc["job"]["tasks"][1]["retry_of_task_id"].is_null());
        assert_eq!(job(json!({"status": "created"}))["status"], "waiting");
        assert_eq!(job(json!({"status": "completed"}))["status"], "finished");
    }
}
