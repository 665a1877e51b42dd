//! Job requests: JSON in, a checked [`JobSpec`] out, or a 400 whose `errors` name each
//! bad field (`tasks.convert-1.input`, ...).

use crate::error::ApiError;
use crate::formats::{canonical_format, format_of_filename, Registry};
use crate::model::{Job, JobStatus, Task, TaskResult, TaskStatus, UploadForm};
use crate::ops::{Kind, Operation};
use crate::Timestamp;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Limits that apply when a job is created.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_tasks: usize,
    /// Largest decoded size of an import/base64 file.
    pub max_base64_bytes: usize,
    /// Largest `timeout` a task may ask for, in seconds.
    pub max_task_timeout: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tasks: 100,
            max_base64_bytes: 1_500_000,
            max_task_timeout: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub name: String,
    pub operation: Operation,
    /// Input task names, in the order given.
    pub input: Vec<String>,
    pub ignore_error: bool,
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub tag: Option<String>,
    /// Where this job's job.finished / job.failed go, besides the user's subscriptions.
    pub webhook_url: Option<String>,
    /// Tasks in an order where every task comes after its inputs.
    pub tasks: Vec<TaskSpec>,
}

impl JobSpec {
    /// The job this validated request describes, as it is stored: ids from `new_id` (the
    /// job's first, then each task's), every task waiting, `created_at` = `now`, and for
    /// each import/upload its form (`upload_form(job id, task id, expiry)`) expiring after
    /// `upload_timeout`. A job with a `webhook_url` gets its signing secret from the caller.
    pub fn into_job(
        self,
        user_id: &str,
        now: Timestamp,
        upload_timeout: std::time::Duration,
        new_id: &mut dyn FnMut() -> String,
        upload_form: &dyn Fn(&str, &str, Timestamp) -> UploadForm,
    ) -> Job {
        let job_id = new_id();
        let ids: HashMap<String, String> = self.tasks.iter().map(|t| (t.name.clone(), new_id())).collect();
        let tasks = self
            .tasks
            .into_iter()
            .map(|t| {
                let id = ids[&t.name].clone();
                let (expires_at, result) = match t.operation {
                    Operation::ImportUpload(_) => {
                        let expires = now.plus(upload_timeout);
                        let form = upload_form(&job_id, &id, expires);
                        (
                            Some(expires),
                            Some(TaskResult {
                                form: Some(form),
                                ..TaskResult::default()
                            }),
                        )
                    }
                    _ => (None, None),
                };
                Task {
                    // validate_job checked that every input names a task of the job.
                    depends_on_task_ids: t.input.iter().map(|n| ids[n].clone()).collect(),
                    id,
                    job_id: job_id.clone(),
                    name: t.name,
                    operation: t.operation,
                    input: t.input,
                    ignore_error: t.ignore_error,
                    timeout: t.timeout,
                    status: TaskStatus::Waiting,
                    message: None,
                    code: None,
                    percent: 0,
                    created_at: now,
                    started_at: None,
                    ended_at: None,
                    expires_at,
                    attempts: 0,
                    result,
                }
            })
            .collect();
        Job {
            id: job_id,
            user_id: user_id.to_string(),
            tag: self.tag,
            webhook_secret: None,
            webhook_signing: Default::default(),
            webhook_url: self.webhook_url,
            status: JobStatus::Created,
            created_at: now,
            started_at: None,
            ended_at: None,
            tasks,
        }
    }
}

const MAX_NAME_LEN: usize = 128;
const MAX_TAG_LEN: usize = 256;

pub fn valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Default)]
struct Errors(BTreeMap<String, Vec<String>>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, msg: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(msg.into());
    }
}

/// Checks a job request against the API's rules and what this server can do.
/// A 400 naming the first task name the raw request body gives twice: a JSON object
/// with a repeated key would otherwise keep only the last task of that name, silently.
pub fn check_task_names_unique(body: &[u8]) -> Result<(), ApiError> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Top(Option<String>);
    struct Names(Option<String>);
    impl<'de> serde::Deserialize<'de> for Names {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Names;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("tasks")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Names, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut dup = None;
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<IgnoredAny>()?;
                        if !seen.insert(k.clone()) && dup.is_none() {
                            dup = Some(k);
                        }
                    }
                    Ok(Names(dup))
                }
                fn visit_unit<E>(self) -> Result<Names, E> {
                    Ok(Names(None))
                }
            }
            d.deserialize_any(V)
        }
    }
    impl<'de> serde::Deserialize<'de> for Top {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Top;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a job")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Top, A::Error> {
                    let mut dup = None;
                    while let Some(k) = m.next_key::<String>()? {
                        if k == "tasks" {
                            // Not an object: validation says so; nothing to compare here.
                            let names: Result<Names, _> = m.next_value();
                            dup = dup.or(names.ok().and_then(|n| n.0));
                        } else {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                    Ok(Top(dup))
                }
            }
            d.deserialize_any(V)
        }
    }
    match serde_json::from_slice::<Top>(body) {
        Ok(Top(Some(name))) => {
            let mut errors = BTreeMap::new();
            errors.insert(
                format!("tasks.{name}"),
                vec![format!(
                    "the task name {name:?} is given more than once; each task needs a name of its own"
                )],
            );
            Err(ApiError::invalid_fields(errors))
        }
        _ => Ok(()),
    }
}

pub fn validate_job(body: &Value, registry: &Registry, limits: &Limits) -> Result<JobSpec, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object with a `tasks` map",
        ));
    };
    let mut errs = Errors::default();
    for key in obj.keys() {
        if key != "tasks" && key != "tag" && key != "webhook_url" {
            errs.add(
                key.as_str(),
                "unknown field (a job takes `tasks`, `tag` and `webhook_url`)",
            );
        }
    }
    let webhook_url = match obj.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if is_http_url(u) && u.len() <= 2048 => Some(u.trim().to_string()),
        Some(_) => {
            errs.add("webhook_url", "must be an http:// or https:// URL");
            None
        }
    };
    let tag = match obj.get("tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_TAG_LEN => Some(s.clone()),
        Some(Value::String(_)) => {
            errs.add("tag", format!("must be at most {MAX_TAG_LEN} bytes long"));
            None
        }
        Some(_) => {
            errs.add("tag", "must be a string");
            None
        }
    };
    let tasks = match obj.get("tasks") {
        Some(Value::Object(m)) if !m.is_empty() => m,
        Some(Value::Object(_)) => return Err(fail(errs, "tasks", "must name at least one task")),
        Some(_) => return Err(fail(errs, "tasks", "must be an object mapping task names to tasks")),
        None => return Err(fail(errs, "tasks", "is required")),
    };
    if tasks.len() > limits.max_tasks {
        return Err(fail(
            errs,
            "tasks",
            &format!(
                "a job may have at most {} tasks, this one has {}",
                limits.max_tasks,
                tasks.len()
            ),
        ));
    }

    let mut specs: BTreeMap<String, TaskSpec> = BTreeMap::new();
    for (name, task) in tasks {
        let field = format!("tasks.{name}");
        if !valid_task_name(name) {
            errs.add(
                &field,
                format!("task names use letters, digits, - and _ only (at most {MAX_NAME_LEN}), got {name:?}"),
            );
            continue;
        }
        if let Some(spec) = parse_task(&field, name, task, registry, limits, &mut errs) {
            specs.insert(name.clone(), spec);
        }
    }

    // References: every input names another task of this job.
    for (name, task) in tasks {
        let Some(list) = task.get("input") else { continue };
        for input in input_names(list).unwrap_or_default() {
            if input == *name {
                errs.add(format!("tasks.{name}.input"), "a task cannot be its own input");
            } else if !tasks.contains_key(&input) {
                errs.add(
                    format!("tasks.{name}.input"),
                    format!("names a task that is not in this job: {input:?}"),
                );
            }
        }
    }
    if !errs.0.is_empty() {
        return Err(ApiError::invalid_fields(errs.0));
    }

    let order = match topological_order(&specs) {
        Ok(order) => order,
        Err(cycle) => {
            let msg = format!("the tasks form a cycle: {}", cycle.join(" → "));
            errs.add("tasks", msg);
            return Err(ApiError::invalid_fields(errs.0));
        }
    };

    // Format pairs, where the input format can be known now.
    for name in &order {
        check_formats(&specs[name], &specs, registry, &mut errs);
    }
    if !errs.0.is_empty() {
        return Err(ApiError::invalid_fields(errs.0));
    }
    let tasks = order
        .iter()
        .map(|n| specs.remove(n).expect("ordered task exists"))
        .collect();
    Ok(JobSpec {
        tag,
        webhook_url,
        tasks,
    })
}

fn fail(mut errs: Errors, field: &str, msg: &str) -> ApiError {
    errs.add(field, msg);
    ApiError::invalid_fields(errs.0)
}

fn input_names(v: &Value) -> Result<Vec<String>, ()> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items.iter().map(|i| i.as_str().map(String::from).ok_or(())).collect(),
        _ => Err(()),
    }
}

fn parse_task(
    field: &str,
    name: &str,
    task: &Value,
    registry: &Registry,
    limits: &Limits,
    errs: &mut Errors,
) -> Option<TaskSpec> {
    let Some(obj) = task.as_object() else {
        errs.add(field, "must be an object with an `operation`");
        return None;
    };
    let mut fields: Map<String, Value> = obj.clone();
    let op_name = match fields.remove("operation") {
        Some(Value::String(s)) => s,
        Some(_) => {
            errs.add(format!("{field}.operation"), "must be a string");
            return None;
        }
        None => {
            errs.add(format!("{field}.operation"), "is required");
            return None;
        }
    };
    let Some(kind) = Operation::kind_of(&op_name) else {
        errs.add(
            format!("{field}.operation"),
            format!(
                "unknown operation {op_name:?}; operations: {}",
                Operation::NAMES.join(", ")
            ),
        );
        return None;
    };
    if !registry.is_available(&op_name) {
        errs.add(
            format!("{field}.operation"),
            format!(
                "operation {op_name:?} is not available on this server; available: {}",
                registry.operations().join(", ")
            ),
        );
        return None;
    }

    let input = match fields.remove("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => match input_names(&v) {
            Ok(list) => list,
            Err(()) => {
                errs.add(format!("{field}.input"), "must be a task name or a list of task names");
                return None;
            }
        },
    };
    let mut unique = BTreeSet::new();
    if input.iter().any(|i| !unique.insert(i)) {
        errs.add(format!("{field}.input"), "names the same task twice");
    }
    match kind {
        Kind::Import | Kind::Create if !input.is_empty() => {
            errs.add(format!("{field}.input"), format!("{op_name} takes no input"));
        }
        Kind::Process | Kind::Export if input.is_empty() => {
            errs.add(
                format!("{field}.input"),
                format!("{op_name} needs an input: the name of another task"),
            );
        }
        _ => {}
    }

    let ignore_error = match fields.remove("ignore_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            errs.add(format!("{field}.ignore_error"), "must be true or false");
            false
        }
    };
    let timeout = match fields.remove("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(t) if t >= 1 && t <= limits.max_task_timeout => Some(t),
            _ => {
                errs.add(
                    format!("{field}.timeout"),
                    format!(
                        "must be a whole number of seconds from 1 to {}",
                        limits.max_task_timeout
                    ),
                );
                None
            }
        },
    };

    if matches!(kind, Kind::Process | Kind::Create) {
        lift_options(field, &op_name, &mut fields, registry, errs);
    }
    let operation = match Operation::parse(&op_name, fields) {
        Ok(Some(op)) => op,
        Ok(None) => unreachable!("kind_of knew the operation"),
        Err(e) => {
            errs.add(field, format!("{op_name}: {e}"));
            return None;
        }
    };
    check_operation_fields(field, &operation, limits, errs);
    Some(TaskSpec {
        name: name.to_string(),
        operation,
        input,
        ignore_error,
        timeout,
    })
}

/// CloudConvert puts a task's options beside `operation` (`"width": 400`); the spec puts
/// them in `options`. Both are taken: a field named as one of the operation's options is
/// moved into `options` (a name given both ways is an error).
fn lift_options(field: &str, op_name: &str, fields: &mut Map<String, Value>, registry: &Registry, errs: &mut Errors) {
    let names: BTreeSet<&str> = registry
        .query(Some(op_name), None, None)
        .flat_map(|c| c.options.iter().map(|o| o.name))
        .collect();
    let top: Vec<String> = fields.keys().filter(|k| names.contains(k.as_str())).cloned().collect();
    if top.is_empty() {
        return;
    }
    let mut options = match fields.remove("options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        // Not an object: the operation's own parsing says so.
        Some(other) => {
            fields.insert("options".into(), other);
            return;
        }
    };
    for name in top {
        let value = fields.remove(&name).unwrap_or(Value::Null);
        if options.contains_key(&name) {
            errs.add(
                format!("{field}.{name}"),
                "is given both beside `operation` and in `options`: give it once",
            );
        } else {
            options.insert(name, value);
        }
    }
    fields.insert("options".into(), Value::Object(options));
}

fn is_http_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")) && lower.len() > "https://".len()
}

fn check_operation_fields(field: &str, op: &Operation, limits: &Limits, errs: &mut Errors) {
    let check_filename = |name: &Option<String>, errs: &mut Errors| {
        if let Some(n) = name {
            if let Err(e) = check_filename(n) {
                errs.add(format!("{field}.filename"), e);
            }
        }
    };
    match op {
        Operation::ImportUrl(o) => {
            if !is_http_url(&o.url) {
                errs.add(format!("{field}.url"), "must be an http:// or https:// URL");
            }
            check_filename(&o.filename, errs);
        }
        Operation::ImportUpload(o) => check_filename(&o.filename, errs),
        Operation::ImportBase64(o) => {
            check_filename(&Some(o.filename.clone()), errs);
            let data = o.file.split_once(";base64,").map(|(_, d)| d).unwrap_or(&o.file);
            let decoded = data.trim_end_matches('=').len() * 3 / 4;
            if decoded > limits.max_base64_bytes {
                errs.add(
                    format!("{field}.file"),
                    format!("is {decoded} bytes decoded; import/base64 takes at most {} bytes (use import/upload for larger files)", limits.max_base64_bytes),
                );
            }
            if o.stored_elsewhere().is_some() || o.file.starts_with("runconvert:") {
                errs.add(
                    format!("{field}.file"),
                    "must be base64 (or a data: URL), not a RunConvert stand-in",
                );
            }
            if o.file.starts_with("data:") && !o.file.contains(";base64,") {
                errs.add(
                    format!("{field}.file"),
                    "a data URL must be base64-encoded (data:<type>;base64,<data>)",
                );
            }
        }
        Operation::Convert(o) => check_filename(&o.filename, errs),
        Operation::CaptureWebsite(o) => {
            if !is_http_url(&o.url) {
                errs.add(format!("{field}.url"), "must be an http:// or https:// URL");
            }
            check_filename(&o.filename, errs);
        }
        _ => check_connector_fields(field, op, errs),
    }
}

/// The canned ACLs S3 takes in `x-amz-acl`.
pub const S3_CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

/// import/export to S3, Google Cloud Storage, Azure Blob and SFTP: what can be checked
/// before connecting (the addresses are checked by the guard when the task runs).
fn check_connector_fields(field: &str, op: &Operation, errs: &mut Errors) {
    let mut one_of = |a: (&str, bool), b: (&str, bool)| {
        if !a.1 && !b.1 {
            errs.add(format!("{field}.{}", a.0), format!("give {} or {}", a.0, b.0));
        }
    };
    type Fields<'a> = (
        Vec<(&'a str, &'a Option<String>)>,
        Option<&'a String>,
        &'a Option<String>,
    );
    let (paths, endpoint, filename): Fields = match op {
        Operation::ImportS3(o) => {
            one_of(("key", o.key.is_some()), ("key_prefix", o.key_prefix.is_some()));
            (
                vec![("key", &o.key), ("key_prefix", &o.key_prefix)],
                o.endpoint.as_ref(),
                &o.filename,
            )
        }
        Operation::ExportS3(o) => {
            one_of(("key", o.key.is_some()), ("key_prefix", o.key_prefix.is_some()));
            if let Some(acl) = o.acl.as_deref().filter(|a| !S3_CANNED_ACLS.contains(a)) {
                errs.add(
                    format!("{field}.acl"),
                    format!("{acl:?} is not an S3 canned ACL ({})", S3_CANNED_ACLS.join(", ")),
                );
            }
            (
                vec![("key", &o.key), ("key_prefix", &o.key_prefix)],
                o.endpoint.as_ref(),
                &None,
            )
        }
        Operation::ImportGoogleCloudStorage(o) => {
            one_of(("file", o.file.is_some()), ("file_prefix", o.file_prefix.is_some()));
            (
                vec![("file", &o.file), ("file_prefix", &o.file_prefix)],
                None,
                &o.filename,
            )
        }
        Operation::ExportGoogleCloudStorage(o) => {
            one_of(("file", o.file.is_some()), ("file_prefix", o.file_prefix.is_some()));
            (vec![("file", &o.file), ("file_prefix", &o.file_prefix)], None, &None)
        }
        Operation::ImportAzureBlob(o) => {
            one_of(("blob", o.blob.is_some()), ("blob_prefix", o.blob_prefix.is_some()));
            one_of(
                ("storage_access_key", o.storage_access_key.is_some()),
                ("sas_token", o.sas_token.is_some()),
            );
            (
                vec![("blob", &o.blob), ("blob_prefix", &o.blob_prefix)],
                None,
                &o.filename,
            )
        }
        Operation::ExportAzureBlob(o) => {
            one_of(("blob", o.blob.is_some()), ("blob_prefix", o.blob_prefix.is_some()));
            one_of(
                ("storage_access_key", o.storage_access_key.is_some()),
                ("sas_token", o.sas_token.is_some()),
            );
            (vec![("blob", &o.blob), ("blob_prefix", &o.blob_prefix)], None, &None)
        }
        Operation::ImportSftp(o) => {
            one_of(("file_string", o.file_string.is_some()), ("path", o.path.is_some()));
            one_of(
                ("password", o.password.is_some()),
                ("private_key", o.private_key.is_some()),
            );
            (
                vec![("file_string", &o.file_string), ("path", &o.path)],
                None,
                &o.filename,
            )
        }
        Operation::ExportSftp(o) => {
            one_of(("file_string", o.file_string.is_some()), ("path", o.path.is_some()));
            one_of(
                ("password", o.password.is_some()),
                ("private_key", o.private_key.is_some()),
            );
            (vec![("file_string", &o.file_string), ("path", &o.path)], None, &None)
        }
        _ => return,
    };
    for (name, value) in paths {
        if let Some(v) = value {
            if let Err(e) = check_remote_path(v) {
                errs.add(format!("{field}.{name}"), e);
            }
        }
    }
    if let Some(e) = endpoint {
        if !is_http_url(e) {
            errs.add(format!("{field}.endpoint"), "must be an http:// or https:// URL");
        }
    }
    if let Some(n) = filename {
        if let Err(e) = check_filename(n) {
            errs.add(format!("{field}.filename"), e);
        }
    }
}

/// A key, blob name or remote path: no `.` or `..` segments (no climbing out of the
/// place the user named), no control characters.
pub fn check_remote_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 1024 {
        return Err("must be 1 to 1024 bytes long".into());
    }
    if path.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if path.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err("must not contain '.' or '..' segments".into());
    }
    Ok(())
}

/// A file name a user may choose: no path, no control characters, not too long.
pub fn check_filename(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("must be 1 to 255 bytes long".into());
    }
    if name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err("must be a file name, not a path".into());
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Kahn's algorithm; ties broken by name so the order is stable. On a cycle, returns
/// the tasks on it.
fn topological_order(specs: &BTreeMap<String, TaskSpec>) -> Result<Vec<String>, Vec<String>> {
    let mut indegree: HashMap<&str, usize> = specs.keys().map(|k| (k.as_str(), 0)).collect();
    for s in specs.values() {
        *indegree.get_mut(s.name.as_str()).expect("known") = s.input.len();
    }
    let mut ready: BTreeSet<&str> = indegree.iter().filter(|(_, d)| **d == 0).map(|(k, _)| *k).collect();
    let mut order = Vec::with_capacity(specs.len());
    while let Some(next) = ready.pop_first() {
        order.push(next.to_string());
        for s in specs.values().filter(|s| s.input.iter().any(|i| i == next)) {
            let d = indegree.get_mut(s.name.as_str()).expect("known");
            *d -= 1;
            if *d == 0 {
                ready.insert(s.name.as_str());
            }
        }
    }
    if order.len() == specs.len() {
        return Ok(order);
    }
    // Walk back from any blocked task through blocked inputs until a name repeats.
    let blocked: BTreeSet<&str> = indegree.iter().filter(|(_, d)| **d > 0).map(|(k, _)| *k).collect();
    let mut path: Vec<String> = Vec::new();
    let mut at = *blocked.iter().next().expect("a blocked task");
    loop {
        if let Some(pos) = path.iter().position(|p| p == at) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(at.to_string());
            return Err(cycle);
        }
        path.push(at.to_string());
        at = specs[at]
            .input
            .iter()
            .find(|i| blocked.contains(i.as_str()))
            .map(String::as_str)
            .expect("a blocked task has a blocked input");
    }
}

/// The format a task's single output will have, if it can be known before running.
fn output_format_of(spec: &TaskSpec, specs: &BTreeMap<String, TaskSpec>) -> Option<&'static str> {
    if let Some(f) = spec.operation.output_format() {
        return canonical_format(f);
    }
    if let Some(name) = spec.operation.declared_filename() {
        return format_of_filename(&name);
    }
    // Pass-through operations keep their input's format.
    match spec.operation.kind() {
        Kind::Process if spec.input.len() == 1 => output_format_of(&specs[&spec.input[0]], specs),
        _ => None,
    }
}

/// The format, engine and options fields of a processing task.
struct ProcessFields<'a> {
    operation: &'static str,
    input_format: Option<&'a str>,
    /// `None`: the same as the input's.
    output_format: Option<&'a str>,
    engine: Option<&'a str>,
    options: &'a Map<String, Value>,
}

fn process_fields(op: &Operation) -> Option<ProcessFields<'_>> {
    Some(match op {
        Operation::Convert(c) => ProcessFields {
            operation: "convert",
            input_format: c.input_format.as_deref(),
            output_format: Some(&c.output_format),
            engine: c.engine.as_deref(),
            options: &c.options,
        },
        Operation::Thumbnail(t) => ProcessFields {
            operation: "thumbnail",
            input_format: t.input_format.as_deref(),
            output_format: Some(t.output_format.as_deref().unwrap_or("png")),
            engine: t.engine.as_deref(),
            options: &t.options,
        },
        Operation::Merge(m) => ProcessFields {
            operation: "merge",
            input_format: None,
            output_format: Some(&m.output_format),
            engine: m.engine.as_deref(),
            options: &m.options,
        },
        Operation::Archive(a) => ProcessFields {
            operation: "archive",
            input_format: Some(crate::formats::ANY),
            output_format: Some(&a.output_format),
            engine: None,
            options: &a.options,
        },
        Operation::Compress(c) => ProcessFields {
            operation: "compress",
            input_format: c.input_format.as_deref(),
            output_format: c.output_format.as_deref(),
            engine: c.engine.as_deref(),
            options: &c.options,
        },
        Operation::CaptureWebsite(c) => ProcessFields {
            operation: "capture_website",
            input_format: Some("url"),
            output_format: Some(&c.output_format),
            engine: c.engine.as_deref(),
            options: &c.options,
        },
        Operation::Ocr(o) => ProcessFields {
            operation: "ocr",
            input_format: o.input_format.as_deref(),
            output_format: Some(o.output_format.as_deref().unwrap_or("txt")),
            engine: o.engine.as_deref(),
            options: &o.options,
        },
        Operation::Watermark(w) => ProcessFields {
            operation: "watermark",
            input_format: w.input_format.as_deref(),
            output_format: None,
            engine: w.engine.as_deref(),
            options: &w.options,
        },
        _ => return None,
    })
}

fn sorted_unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = items.collect();
    v.sort();
    v.dedup();
    v
}

fn check_formats(spec: &TaskSpec, specs: &BTreeMap<String, TaskSpec>, registry: &Registry, errs: &mut Errors) {
    let field = format!("tasks.{}", spec.name);
    if let Operation::Watermark(w) = &spec.operation {
        let image = w.options.get("image").and_then(Value::as_str);
        if w.text.as_deref().unwrap_or("").is_empty() && image.is_none() {
            errs.add(
                format!("{field}.text"),
                "a watermark needs `text` or the `image` option",
            );
        }
        if let Some(task) = image {
            if !spec.input.iter().any(|i| i == task) {
                errs.add(
                    format!("{field}.options.image"),
                    format!("names {task:?}, which is not one of this task's inputs"),
                );
            }
        }
    }
    let Some(p) = process_fields(&spec.operation) else {
        return;
    };
    let op = p.operation;
    let output = match p.output_format {
        Some(o) => {
            let canonical = if op == "archive" {
                Some(o.trim()).filter(|o| !o.is_empty())
            } else {
                canonical_format(o)
            };
            match canonical.filter(|f| {
                registry
                    .query(Some(op), None, Some(canonical_format(f).unwrap_or(f)))
                    .next()
                    .is_some()
            }) {
                Some(f) => Some(canonical_format(f).unwrap_or(f)),
                None => {
                    let outputs = sorted_unique(registry.query(Some(op), None, None).map(|c| c.output_format));
                    errs.add(
                        format!("{field}.output_format"),
                        format!(
                            "{op} cannot make {o:?} on this server; it makes: {}",
                            outputs.join(", ")
                        ),
                    );
                    return;
                }
            }
        }
        None => None,
    };
    if let Some(engine) = p.engine {
        if registry.query(Some(op), None, output).all(|c| c.engine != engine) {
            let engines = sorted_unique(registry.query(Some(op), None, output).map(|c| c.engine));
            errs.add(
                format!("{field}.engine"),
                format!(
                    "{op} has no engine {engine:?} on this server; available: {}",
                    engines.join(", ")
                ),
            );
            return;
        }
    }
    let input = match p.input_format {
        Some(crate::formats::ANY) => Some(crate::formats::ANY),
        Some("url") => Some("url"),
        Some(f) => match canonical_format(f) {
            Some(f) => Some(f),
            None => {
                errs.add(format!("{field}.input_format"), format!("unknown format {f:?}"));
                return;
            }
        },
        None if spec.input.len() == 1 && op != "merge" => output_format_of(&specs[&spec.input[0]], specs),
        None => None,
    };
    if op == "merge" {
        for name in &spec.input {
            if let Some(f) = output_format_of(&specs[name], specs) {
                if registry.find(op, f, output.unwrap_or("pdf"), p.engine).is_err() {
                    let takes = sorted_unique(registry.query(Some(op), None, None).map(|c| c.input_format));
                    errs.add(
                        format!("{field}.input"),
                        format!("{name} gives {f}; merge takes: {}", takes.join(", ")),
                    );
                }
            }
        }
    }
    match input {
        Some(input) if op != "merge" => match registry.find(op, input, output.unwrap_or(input), p.engine) {
            Ok(cap) => {
                for (name, msg) in cap.check_options(p.options) {
                    errs.add(format!("{field}.options.{name}"), msg);
                }
            }
            Err(msg) => errs.add(format!("{field}.output_format"), msg),
        },
        // The input format is known only once the file is there: options must at least
        // be known to some engine of the operation.
        _ => {
            let known: Vec<&str> = registry
                .query(Some(op), None, output)
                .flat_map(|c| c.options.iter().map(|o| o.name))
                .collect();
            for name in p.options.keys() {
                if !known.contains(&name.as_str()) {
                    errs.add(
                        format!("{field}.options.{name}"),
                        format!(
                            "unknown option; {op} takes: {}",
                            sorted_unique(known.iter().copied()).join(", ")
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{Capability, OptionSpec, OptionType};
    use serde_json::json;

    fn registry() -> Registry {
        let mut r = Registry::new();
        for op in [
            "import/url",
            "import/upload",
            "import/base64",
            "import/s3",
            "import/sftp",
            "export/url",
        ] {
            r.add_operation(op);
        }
        for (i, o) in [("jpg", "png"), ("png", "jpg"), ("jpg", "webp")] {
            r.add(Capability {
                operation: "convert",
                input_format: i,
                output_format: o,
                engine: "image",
                engine_version: "1".into(),
                options: vec![OptionSpec {
                    name: "width",
                    kind: OptionType::Integer { min: 1, max: 10000 },
                    default: None,
                    description: "",
                }],
            });
        }
        r
    }

    fn check(v: Value) -> Result<JobSpec, ApiError> {
        validate_job(&v, &registry(), &Limits::default())
    }

    fn field_error(v: Value, field: &str) -> String {
        let e = check(v).unwrap_err();
        assert_eq!(e.status, 400);
        e.errors
            .get(field)
            .unwrap_or_else(|| panic!("no error for {field}: {e:?}"))
            .join("; ")
    }

    #[test]
    fn accepts_the_spec_example_and_orders_it() {
        let spec = check(json!({
            "tag": "my-job",
            "tasks": {
                "export-1": {"operation": "export/url", "input": "convert-1"},
                "convert-1": {"operation": "convert", "input": "import-1", "output_format": "png", "options": {"width": 10}},
                "import-1": {"operation": "import/url", "url": "https://example.com/file.jpg"}
            }
        }))
        .unwrap();
        let names: Vec<_> = spec.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["import-1", "convert-1", "export-1"]);
        assert_eq!(spec.tag.as_deref(), Some("my-job"));
    }

    #[test]
    fn rejects_bad_names_unknown_ops_and_missing_inputs() {
        let m = field_error(
            json!({"tasks": {"bad name": {"operation": "import/url", "url": "https://a/b"}}}),
            "tasks.bad name",
        );
        assert!(m.contains("letters, digits"), "{m}");
        let m = field_error(
            json!({"tasks": {"a": {"operation": "import/ftp"}}}),
            "tasks.a.operation",
        );
        assert!(m.contains("unknown operation"), "{m}");
        let m = field_error(
            json!({"tasks": {"a": {"operation": "ocr", "input": "a"}}}),
            "tasks.a.operation",
        );
        assert!(m.contains("not available"), "{m}");
        let m = field_error(
            json!({"tasks": {"e": {"operation": "export/url", "input": "nope"}}}),
            "tasks.e.input",
        );
        assert!(m.contains("not in this job"), "{m}");
        let m = field_error(
            json!({"tasks": {"i": {"operation": "import/url", "url": "https://a/b.jpg", "input": "x"}, "x": {"operation": "import/upload"}}}),
            "tasks.i.input",
        );
        assert!(m.contains("takes no input"), "{m}");
        let m = field_error(json!({"tasks": {"e": {"operation": "export/url"}}}), "tasks.e.input");
        assert!(m.contains("needs an input"), "{m}");
        let m = field_error(
            json!({"tasks": {"i": {"operation": "import/url", "url": "ftp://a/b"}}}),
            "tasks.i.url",
        );
        assert!(m.contains("http"), "{m}");
        let m = field_error(
            json!({"tasks": {"i": {"operation": "import/url", "url": "https://a/b", "colour": 1}}}),
            "tasks.i",
        );
        assert!(m.contains("unknown field `colour`"), "{m}");
        let m = field_error(json!({"tasks": {}}), "tasks");
        assert!(m.contains("at least one"), "{m}");
        let m = field_error(json!({"tasks": {"i": {"operation": "import/upload"}}, "x": 1}), "x");
        assert!(m.contains("unknown field"), "{m}");
    }

    #[test]
    fn checks_connector_fields() {
        let s3 = json!({"tasks": {"i": {"operation": "import/s3", "bucket": "b", "region": "us-east-1",
            "access_key_id": "a", "secret_access_key": "s"}}});
        assert!(field_error(s3, "tasks.i.key").contains("give key or key_prefix"));
        let s3 = json!({"tasks": {"i": {"operation": "import/s3", "bucket": "b", "region": "us-east-1",
            "access_key_id": "a", "secret_access_key": "s", "key": "a/../b.jpg"}}});
        assert!(field_error(s3, "tasks.i.key").contains(".."));
        let sftp = json!({"tasks": {"i": {"operation": "import/sftp", "host": "h", "username": "u",
            "file_string": "/home/u/in.jpg"}}});
        assert!(field_error(sftp, "tasks.i.password").contains("give password or private_key"));
    }

    #[test]
    fn finds_cycles() {
        let e = check(json!({"tasks": {
            "a": {"operation": "convert", "input": "c", "output_format": "png"},
            "b": {"operation": "convert", "input": "a", "output_format": "png"},
            "c": {"operation": "convert", "input": "b", "output_format": "png"},
            "i": {"operation": "import/upload"}
        }}))
        .unwrap_err();
        let m = e.errors["tasks"].join("");
        assert!(
            m.contains("cycle") && m.contains('a') && m.contains('b') && m.contains('c'),
            "{m}"
        );
    }

    #[test]
    fn checks_format_pairs_and_options_when_known() {
        let m = field_error(
            json!({"tasks": {
                "i": {"operation": "import/url", "url": "https://e.com/x.png"},
                "c": {"operation": "convert", "input": "i", "output_format": "webp"}
            }}),
            "tasks.c.output_format",
        );
        assert!(m.contains("from png it gives: jpg"), "{m}");
        let m = field_error(
            json!({"tasks": {
                "i": {"operation": "import/upload", "filename": "x.jpg"},
                "c": {"operation": "convert", "input": "i", "output_format": "png", "options": {"width": 0}}
            }}),
            "tasks.c.options.width",
        );
        assert!(m.contains("between 1"), "{m}");
        let m = field_error(
            json!({"tasks": {"i": {"operation": "import/upload"}, "c": {"operation": "convert", "input": "i", "output_format": "docx"}}}),
            "tasks.c.output_format",
        );
        assert!(m.contains("convert cannot make"), "{m}");
        // Unknown input format until the file arrives: accepted now, checked when it runs.
        assert!(check(json!({"tasks": {"i": {"operation": "import/upload"}, "c": {"operation": "convert", "input": "i", "output_format": "png"}}})).is_ok());
    }

    #[test]
    fn options_beside_operation_move_into_options() {
        let spec = check(json!({"tasks": {
            "i": {"operation": "import/upload", "filename": "x.jpg"},
            "c": {"operation": "convert", "input": "i", "output_format": "png", "width": 10}
        }}))
        .unwrap();
        let c = spec.tasks.iter().find(|t| t.name == "c").unwrap();
        assert_eq!(c.operation.fields()["options"], json!({"width": 10}));
        // Checked as options are: a bad value is named where it was given.
        let m = field_error(
            json!({"tasks": {
                "i": {"operation": "import/upload", "filename": "x.jpg"},
                "c": {"operation": "convert", "input": "i", "output_format": "png", "width": 0}
            }}),
            "tasks.c.options.width",
        );
        assert!(m.contains("between 1"), "{m}");
        let m = field_error(
            json!({"tasks": {
                "i": {"operation": "import/upload", "filename": "x.jpg"},
                "c": {"operation": "convert", "input": "i", "output_format": "png", "width": 10, "options": {"width": 20}}
            }}),
            "tasks.c.width",
        );
        assert!(m.contains("give it once"), "{m}");
        // A name that is no option stays where it was, and is refused as before.
        let e = check(json!({"tasks": {
            "i": {"operation": "import/upload", "filename": "x.jpg"},
            "c": {"operation": "convert", "input": "i", "output_format": "png", "widht": 10}
        }}))
        .unwrap_err();
        assert!(format!("{e:?}").contains("widht"), "{e:?}");
    }

    #[test]
    fn base64_cap_and_filenames() {
        let big = "A".repeat(2_100_000);
        let m = field_error(
            json!({"tasks": {"b": {"operation": "import/base64", "file": big, "filename": "x.png"}}}),
            "tasks.b.file",
        );
        assert!(m.contains("at most 1500000"), "{m}");
        let m = field_error(
            json!({"tasks": {"b": {"operation": "import/base64", "file": "AAAA", "filename": "../x.png"}}}),
            "tasks.b.filename",
        );
        assert!(m.contains("not a path"), "{m}");
    }
}
