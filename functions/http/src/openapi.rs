//! The OpenAPI 3.1 document of both surfaces (the spec's `/v2/process/*` and
//! CloudConvert's `/v2/jobs`, `/v2/tasks`, `/sync/v2/*`), served at `/openapi.json`, and
//! a docs page at `/docs` rendered here from the same document (no script, nothing from a
//! CDN).
//!
//! Where it comes from:
//! - the paths from the routes themselves: each module registers its handlers through
//!   utoipa-axum's `routes!`, which takes a handler together with its `#[utoipa::path]`;
//! - task bodies from the operations' own types (`runconvert_core::ops`, one schema per
//!   operation), formats from the format table, statuses and errors from the model;
//! - the single-task paths (`POST /v2/convert`, ...) from the list the router uses.
//!
//! The document depends on nothing but the code: every deployment serves the same one, and
//! `docs/openapi.json` is a committed copy that a test keeps current.

use crate::ApiState;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use runconvert_core::formats::KNOWN_FORMATS;
use runconvert_core::ops::{Kind, Operation};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

/// The parts of the document no route carries: its description, the bearer scheme and the
/// schemas the routes' annotations name.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "RunConvert API",
        description = "File conversion jobs: a graph of named tasks that import files, process them and export the results. Two surfaces on one server: the RunConvert API v2 (`/v2/process/*`) and CloudConvert's API v2 (`/v2/jobs`, `/v2/tasks`, `/v2/{operation}`, `/sync/v2/*`), so CloudConvert's SDKs work by changing their base URL. Every call takes an API key as `Authorization: Bearer <key>`.",
        license(name = "Apache-2.0", url = "https://www.apache.org/licenses/LICENSE-2.0"),
    ),
    servers((url = "/", description = "this server")),
    security(("bearer" = [])),
    modifiers(&Bearer),
    components(schemas(
        runconvert_core::ApiError,
        runconvert_core::model::JobStatus,
        runconvert_core::model::TaskStatus,
        schema::Job,
        schema::Task,
        schema::JobList,
        schema::TaskList,
        schema::ListMeta,
        schema::Data,
        schema::DataList,
        schema::CcStatus,
        schema::CcData,
        schema::CcList,
        schema::KeyRequest,
        schema::WebhookRequest,
        schema::Health,
    )),
    tags(
        (name = "Jobs", description = "The RunConvert API: jobs and their tasks"),
        (name = "CloudConvert", description = "CloudConvert's API v2, as its SDKs call it"),
        (name = "Files", description = "Uploads to import/upload tasks"),
        (name = "Formats", description = "What this deployment converts"),
        (name = "Webhooks", description = "Subscriptions to job events"),
        (name = "Account", description = "The user, its limits and its API keys"),
    )
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer <key>`"))
                    .build(),
            ),
        );
    }
}

/// The shapes of the answers, as the handlers build them (documentation only: the
/// handlers answer `serde_json` values made by the model's `to_api_json`).
#[allow(dead_code)]
pub(crate) mod schema {
    use runconvert_core::model::{JobStatus, TaskStatus};
    use serde::Serialize;
    use serde_json::Value;
    use std::collections::BTreeMap;
    use utoipa::ToSchema;

    /// A job of the RunConvert API.
    #[derive(Serialize, ToSchema)]
    pub struct Job {
        pub id: String,
        pub tag: Option<String>,
        pub webhook_url: Option<String>,
        /// Shown once, in the answer that creates a job with a `webhook_url`.
        pub webhook_secret: Option<String>,
        pub status: JobStatus,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub started_at: Option<String>,
        #[schema(format = DateTime)]
        pub ended_at: Option<String>,
        pub tasks: Vec<Task>,
    }

    /// A task of the RunConvert API.
    #[derive(Serialize, ToSchema)]
    pub struct Task {
        pub id: String,
        pub job_id: String,
        pub name: String,
        pub operation: String,
        pub status: TaskStatus,
        /// Why the task failed, for people.
        pub message: Option<String>,
        /// Why the task failed, for programs.
        pub code: Option<String>,
        #[schema(maximum = 100)]
        pub percent: u8,
        pub depends_on_task_ids: Vec<String>,
        #[schema(format = DateTime)]
        pub created_at: String,
        #[schema(format = DateTime)]
        pub started_at: Option<String>,
        #[schema(format = DateTime)]
        pub ended_at: Option<String>,
        /// The task as it was asked for, secrets redacted.
        pub payload: BTreeMap<String, Value>,
        /// What the task made: `files` (with their signed `url`s) for an export/url, the
        /// upload `form` for an import/upload.
        pub result: Option<Value>,
    }

    #[derive(Serialize, ToSchema)]
    pub struct ListMeta {
        pub count: u64,
        pub limit: u32,
        pub offset: u32,
    }

    #[derive(Serialize, ToSchema)]
    pub struct JobList {
        pub data: Vec<Job>,
        pub meta: ListMeta,
    }

    #[derive(Serialize, ToSchema)]
    pub struct TaskList {
        pub data: Vec<Task>,
        pub meta: ListMeta,
    }

    /// One object in an envelope.
    #[derive(Serialize, ToSchema)]
    pub struct Data {
        pub data: BTreeMap<String, Value>,
    }

    /// Objects in an envelope.
    #[derive(Serialize, ToSchema)]
    pub struct DataList {
        pub data: Vec<BTreeMap<String, Value>>,
    }

    /// CloudConvert's statuses of jobs and tasks.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum CcStatus {
        Waiting,
        Processing,
        Finished,
        Error,
    }

    /// A CloudConvert job or task in its envelope.
    #[derive(Serialize, ToSchema)]
    pub struct CcData {
        pub data: CcObject,
    }

    #[derive(Serialize, ToSchema)]
    pub struct CcObject {
        pub id: String,
        pub status: CcStatus,
        pub links: BTreeMap<String, Value>,
    }

    /// A page of a CloudConvert list.
    #[derive(Serialize, ToSchema)]
    pub struct CcList {
        pub data: Vec<BTreeMap<String, Value>>,
        pub links: BTreeMap<String, Option<String>>,
        pub meta: BTreeMap<String, Value>,
    }

    /// A new API key.
    #[derive(Serialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct KeyRequest {
        #[schema(max_length = 100, pattern = "^\\S(.{0,98}\\S)?$")]
        pub name: String,
        /// What the key may do; by default, what the key that makes it may do.
        #[schema(min_items = 1)]
        pub scopes: Option<Vec<Scope>>,
    }

    #[derive(Serialize, ToSchema)]
    pub enum Scope {
        #[serde(rename = "task.read")]
        TaskRead,
        #[serde(rename = "task.write")]
        TaskWrite,
        #[serde(rename = "webhook.read")]
        WebhookRead,
        #[serde(rename = "webhook.write")]
        WebhookWrite,
        #[serde(rename = "user.read")]
        UserRead,
        #[serde(rename = "user.write")]
        UserWrite,
    }

    /// A webhook subscription: the spec's `endpoint_url`, or CloudConvert's `url`.
    #[derive(Serialize, ToSchema)]
    pub struct WebhookRequest {
        #[schema(pattern = "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")]
        pub endpoint_url: String,
        pub events: Vec<Event>,
    }

    #[derive(Serialize, ToSchema)]
    pub enum Event {
        #[serde(rename = "job.created")]
        JobCreated,
        #[serde(rename = "job.finished")]
        JobFinished,
        #[serde(rename = "job.failed")]
        JobFailed,
        #[serde(rename = "task.finished")]
        TaskFinished,
        #[serde(rename = "task.failed")]
        TaskFailed,
    }

    #[derive(Serialize, ToSchema)]
    pub struct Health {
        pub status: String,
    }
}

/// Query parameters, as the handlers read them.
#[allow(dead_code)]
pub(crate) mod params {
    use super::*;

    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct JobListQuery {
        /// Only jobs of this status.
        #[param(inline)]
        pub status: Option<runconvert_core::model::JobStatus>,
        /// Only jobs with this tag.
        pub tag: Option<String>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct TaskListQuery {
        /// Only tasks of this job.
        pub job_id: Option<String>,
        /// Only tasks of this status.
        #[param(inline)]
        pub status: Option<runconvert_core::model::TaskStatus>,
    }

    /// The window of the RunConvert API's lists.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct Window {
        /// Objects per page.
        #[param(minimum = 0, maximum = 1000)]
        pub limit: Option<u32>,
        /// Objects to skip.
        #[param(minimum = 0, maximum = 4294967295.0)]
        pub offset: Option<u32>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct WaitQuery {
        /// Seconds to wait for the job to end (the deployment may answer sooner, with the
        /// job as it stands: wait again).
        #[param(minimum = 0, maximum = 300)]
        pub timeout: Option<u32>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct CcJobListQuery {
        #[param(rename = "filter[status]", inline)]
        pub status: Option<super::schema::CcStatus>,
        #[param(rename = "filter[tag]")]
        pub tag: Option<String>,
        /// `tasks` to list each job's tasks.
        #[param(pattern = "^tasks$")]
        pub include: Option<String>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct CcTaskListQuery {
        #[param(rename = "filter[job_id]")]
        pub job_id: Option<String>,
        #[param(rename = "filter[status]", inline)]
        pub status: Option<super::schema::CcStatus>,
        #[param(rename = "filter[operation]")]
        pub operation: Option<String>,
        #[param(pattern = "^(payload|job)(,(payload|job))*$")]
        pub include: Option<String>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct CcWebhookListQuery {
        #[param(rename = "filter[url]")]
        pub url: Option<String>,
    }

    /// The pages of CloudConvert's lists.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct CcPage {
        /// Objects per page.
        #[param(minimum = 1, maximum = 100)]
        pub per_page: Option<u32>,
        /// The page, from 1.
        #[param(minimum = 1, maximum = 42949672)]
        pub page: Option<u32>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct FormatQuery {
        /// A format name or alias (`jpg`, `jpeg`, ...).
        pub input_format: Option<String>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct OperationQuery {
        pub input_format: Option<String>,
        pub output_format: Option<String>,
        pub operation: Option<String>,
    }
}

#[utoipa::path(get, path = "/healthz", tag = "Account", operation_id = "health",
    summary = "Whether the server answers", security(()),
    responses((status = 200, description = "The server answers", body = schema::Health)))]
async fn health() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// The health route, documented with the API.
pub(crate) fn health_routes() -> utoipa_axum::router::OpenApiRouter<Arc<ApiState>> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(health))
}

/// Error answers every API call may give, added to each operation that does not name them.
const ERRORS: &[(&str, &str)] = &[
    ("400", "The request is not valid: `errors` names each field"),
    ("401", "No API key, or not a valid one"),
    ("403", "The key lacks the scope this call needs"),
    ("404", "No such object of this user"),
    ("413", "The request body is larger than this deployment takes"),
    (
        "422",
        "The request is not valid (CloudConvert's surface): `errors` names each field",
    ),
    ("429", "Too many requests: retry after `Retry-After` seconds"),
];

/// The operations that create jobs (and the single-task ones, `createTask...`): they may
/// also answer 402 when the user's credits do not cover the job.
const CREATES_JOBS: &[&str] = &["createJob", "createCcJob", "createSyncJob"];

/// The document of everything `documented` routes, completed with what no annotation can
/// say: each operation's task schema, the job bodies, the single-task paths, the errors.
pub fn document(documented: utoipa::openapi::OpenApi) -> Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(documented);
    let mut v = serde_json::to_value(&doc).expect("the document serialises");
    complete(&mut v);
    v
}

fn format_names() -> Vec<Value> {
    let mut names: Vec<&str> = KNOWN_FORMATS
        .iter()
        .flat_map(|f| std::iter::once(f.name).chain(f.aliases.iter().copied()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().map(Value::from).collect()
}

/// The schema of one task of `operation`: the common fields and the operation's own.
fn task_schema(operation: &str, own: &Value, formats: &[Value], with_input: bool) -> Value {
    let mut properties = own
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut required: Vec<Value> = own
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Whole numbers as the server reads them (u64, u16), bounded by their minimum and
    // maximum, not by an int32/int64 format.
    for p in properties.values_mut().filter_map(Value::as_object_mut) {
        if p.get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| f.starts_with("int"))
        {
            p.remove("format");
        }
    }
    for f in ["input_format", "output_format"] {
        if let Some(p) = properties.get_mut(f).and_then(Value::as_object_mut) {
            p.insert("enum".into(), Value::Array(formats.to_vec()));
            p.remove("type");
        }
    }
    properties.insert("operation".into(), json!({"const": operation}));
    if with_input {
        required.insert(0, "operation".into());
    }
    let kind = Operation::kind_of(operation);
    if with_input && matches!(kind, Some(Kind::Process | Kind::Export)) {
        properties.insert(
            "input".into(),
            json!({
                "description": "The names of the tasks whose files this task takes",
                "oneOf": [
                    {"$ref": "#/components/schemas/TaskName"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/TaskName"}, "minItems": 1}
                ]
            }),
        );
        required.insert(1.min(required.len()), "input".into());
    } else if with_input {
        properties.insert(
            "input".into(),
            json!({"type": "null", "description": "Imports and capture_website take no input"}),
        );
    }
    properties.insert(
        "ignore_error".into(),
        json!({"type": ["boolean", "null"], "description": "Let the tasks that depend on this one run even when it fails"}),
    );
    properties.insert(
        "timeout".into(),
        json!({"type": ["integer", "null"], "minimum": 1, "maximum": runconvert_core::validate::Limits::default().max_task_timeout, "description": "Seconds this task may run (at most what this deployment allows)"}),
    );
    json!({
        "type": "object",
        "title": operation,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn schema_name(operation: &str) -> String {
    let mut name = String::from("Task_");
    name.extend(
        operation
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    name
}

fn complete(doc: &mut Value) {
    let formats = format_names();
    let schemas = doc["components"]["schemas"].as_object_mut().expect("components");
    let mut one_of = Vec::new();
    let mut mapping = Map::new();
    let mut single = Vec::new();
    for (name, own) in Operation::schemas() {
        let own = serde_json::to_value(own).expect("a schema");
        let key = schema_name(name);
        schemas.insert(key.clone(), task_schema(name, &own, &formats, true));
        one_of.push(json!({"$ref": format!("#/components/schemas/{key}")}));
        mapping.insert(name.into(), format!("#/components/schemas/{key}").into());
        // A single task is a job of one task: it names no `input`.
        single.push((name, task_schema(name, &own, &formats, false)));
    }
    schemas.insert(
        "TaskName".into(),
        json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}),
    );
    schemas.insert(
        "TaskRequest".into(),
        json!({"oneOf": one_of, "discriminator": {"propertyName": "operation", "mapping": mapping}}),
    );
    let tasks = json!({
        "type": "object",
        "description": "The tasks of the job, by name",
        "minProperties": 1,
        "maxProperties": 100,
        "propertyNames": {"$ref": "#/components/schemas/TaskName"},
        "additionalProperties": {"$ref": "#/components/schemas/TaskRequest"},
    });
    let job = |redirect: bool| {
        let mut p = json!({
            "tasks": tasks,
            "tag": {"type": ["string", "null"], "maxLength": 256, "description": "Yours, to find the job again"},
            "webhook_url": {"type": ["string", "null"], "format": "uri", "pattern": "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", "description": "Where this job's events are sent"},
        });
        if redirect {
            p["redirect"] = json!({"type": ["boolean", "null"], "description": "Answer 302 to the exported file (synchronous API)"});
        }
        json!({"type": "object", "properties": p, "required": ["tasks"], "additionalProperties": false})
    };
    schemas.insert("JobRequest".into(), job(false));
    schemas.insert("CcJobRequest".into(), job(true));

    let paths = doc["paths"].as_object_mut().expect("paths");
    // The single-task paths: one per operation, and CloudConvert's `capture-website`.
    for (path, operation) in crate::cloudconvert::task_paths() {
        let body = single
            .iter()
            .find(|(n, _)| *n == operation)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        let alias = if path.ends_with("capture-website") { "Alias" } else { "" };
        paths.insert(
            path.clone(),
            json!({"post": {
                "tags": ["CloudConvert"],
                "operationId": format!("createTask{}{alias}", runconvert_core::names::pascal_case(operation)),
                "summary": format!("Create a {operation} task (a job of one task)"),
                // No body is an empty task: enough for an import/upload.
                "requestBody": {"required": false, "content": {"application/json": {"schema": body}}},
                "responses": {"201": {"description": "The task", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CcData"}}}}},
                "security": [{"bearer": []}],
            }}),
        );
    }
    for (path, item) in paths.iter_mut() {
        for op in item.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
            let Some(op) = op.as_object_mut() else { continue };
            // Query parameters are absent or a value: never `null`; formats and operations
            // are the ones the code knows.
            for p in op
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                match p["name"].as_str() {
                    Some("input_format" | "output_format") => p["schema"] = json!({"type": "string", "enum": formats}),
                    Some("operation" | "filter[operation]") => {
                        p["schema"] = json!({"type": "string", "enum": Operation::NAMES})
                    }
                    _ => {}
                }
                // The server reads whole numbers up to their documented maximum, not int32.
                if let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut) {
                    schema.remove("format");
                }
                if let Some(Value::Array(types)) = p.pointer_mut("/schema/type") {
                    types.retain(|t| t != "null");
                    if types.len() == 1 {
                        let t = types[0].clone();
                        p["schema"]["type"] = t;
                    }
                }
            }
            if path == "/healthz" {
                continue;
            }
            let id = op.get("operationId").and_then(Value::as_str).unwrap_or("").to_string();
            let body = match id.as_str() {
                "createJob" => Some("JobRequest"),
                "createCcJob" | "createSyncJob" => Some("CcJobRequest"),
                _ => None,
            };
            if let Some(b) = body {
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}}),
                );
            }
            let id = id.as_str();
            let responses = op.entry("responses").or_insert_with(|| json!({}));
            for (status, description) in ERRORS {
                if responses.get(*status).is_none() {
                    responses[*status] = json!({
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    });
                }
            }
            let creates = CREATES_JOBS.contains(&id) || id.starts_with("createTask");
            if creates && responses.get("402").is_none() {
                responses["402"] = json!({
                    "description": "Not enough credits for the job",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                });
            }
        }
    }
}

/// The document and its page, made on the first request for either (not when the router
/// is built: the API function's start-up stays as short as it was).
struct Served {
    documented: utoipa::openapi::OpenApi,
    made: std::sync::OnceLock<(Value, String)>,
}

impl Served {
    fn get(&self) -> &(Value, String) {
        self.made.get_or_init(|| {
            let doc = document(self.documented.clone());
            let page = docs_page(&doc);
            (doc, page)
        })
    }
}

/// `GET /openapi.json` and `GET /docs`, of the routes `documented` describes.
pub fn routes(documented: utoipa::openapi::OpenApi) -> Router<Arc<ApiState>> {
    let served = Arc::new(Served {
        documented,
        made: Default::default(),
    });
    let for_page = served.clone();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let served = served.clone();
                async move {
                    (
                        [(header::CACHE_CONTROL, "no-cache")],
                        axum::Json(served.get().0.clone()),
                    )
                }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let served = for_page.clone();
                async move {
                    (
                        [(
                            header::CONTENT_SECURITY_POLICY,
                            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
                        )],
                        Html(served.get().1.clone()),
                    )
                        .into_response()
                }
            }),
        )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The docs page: every operation by tag, with its parameters, body and answers, and a
/// link to the document itself. Server-rendered; readable without a script.
fn docs_page(doc: &Value) -> String {
    let mut by_tag: Vec<(String, Vec<String>)> = Vec::new();
    let tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or("").to_string(),
                t["description"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (name, _) in &tags {
        by_tag.push((name.clone(), Vec::new()));
    }
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let tag = op["tags"][0].as_str().unwrap_or("").to_string();
            let mut html = format!(
                "<section class=\"op\" id=\"{id}\"><h3><span class=\"m {m}\">{M}</span> <code>{p}</code></h3><p>{s}</p>",
                id = esc(op["operationId"].as_str().unwrap_or("")),
                m = esc(method),
                M = esc(&method.to_uppercase()),
                p = esc(path),
                s = esc(op["summary"].as_str().or(op["description"].as_str()).unwrap_or("")),
            );
            if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                html.push_str("<table><caption>Parameters</caption><tr><th scope=\"col\">Name</th><th scope=\"col\">In</th><th scope=\"col\">Schema</th><th scope=\"col\">Description</th></tr>");
                for p in params {
                    html.push_str(&format!(
                        "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                        esc(p["name"].as_str().unwrap_or("")),
                        esc(p["in"].as_str().unwrap_or("")),
                        esc(&p["schema"].to_string()),
                        esc(p["description"].as_str().unwrap_or("")),
                    ));
                }
                html.push_str("</table>");
            }
            if let Some(schema) = op["requestBody"]["content"].as_object().and_then(|c| c.iter().next()) {
                html.push_str(&format!(
                    "<p>Body ({}): <code>{}</code></p>",
                    esc(schema.0),
                    esc(&schema.1["schema"].to_string())
                ));
            }
            html.push_str("<ul class=\"responses\">");
            for (status, r) in op["responses"].as_object().into_iter().flatten() {
                html.push_str(&format!(
                    "<li><strong>{}</strong> {}</li>",
                    esc(status),
                    esc(r["description"].as_str().unwrap_or(""))
                ));
            }
            html.push_str("</ul></section>");
            match by_tag.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, list)) => list.push(html),
                None => by_tag.push((tag, vec![html])),
            }
        }
    }
    let mut body = String::new();
    let mut nav = String::new();
    for (tag, ops) in &by_tag {
        if ops.is_empty() {
            continue;
        }
        let description = tags
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, d)| d.as_str())
            .unwrap_or("");
        let anchor: String = tag.chars().filter(char::is_ascii_alphanumeric).collect();
        nav.push_str(&format!("<li><a href=\"#{anchor}\">{}</a></li>", esc(tag)));
        body.push_str(&format!(
            "<h2 id=\"{anchor}\">{}</h2><p>{}</p>{}",
            esc(tag),
            esc(description),
            ops.concat()
        ));
    }
    let mut schemas = String::new();
    for (name, s) in doc["components"]["schemas"].as_object().into_iter().flatten() {
        schemas.push_str(&format!(
            "<details id=\"schema-{n}\"><summary><code>{n}</code></summary><pre>{}</pre></details>",
            esc(&serde_json::to_string_pretty(s).unwrap_or_default()),
            n = esc(name)
        ));
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>RunConvert API</title><style>{STYLE}</style></head><body><header><h1>{title} <small>{version}</small></h1><p>{description}</p><p>The machine-readable document: <a href=\"openapi.json\">openapi.json</a> (OpenAPI {openapi}).</p><nav aria-label=\"Sections\"><ul>{nav}<li><a href=\"#schemas\">Schemas</a></li></ul></nav></header><main>{body}<h2 id=\"schemas\">Schemas</h2>{schemas}</main></body></html>",
        title = esc(doc["info"]["title"].as_str().unwrap_or("")),
        version = esc(doc["info"]["version"].as_str().unwrap_or("")),
        description = esc(doc["info"]["description"].as_str().unwrap_or("")),
        openapi = esc(doc["openapi"].as_str().unwrap_or("")),
    )
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:70rem;margin:0 auto;padding:1rem;color:#1a1a1a;background:#fff}\
code,pre{font:14px ui-monospace,monospace}pre{white-space:pre-wrap;background:#f4f4f4;padding:.5rem}\
.op{border-top:1px solid #ccc;padding:.5rem 0}.m{display:inline-block;min-width:4.5rem;padding:0 .4rem;border-radius:3px;color:#fff;text-align:center}\
.get{background:#1d5e9e}.post{background:#1e6b34}.delete{background:#a11d1d}\
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}\
a{color:#0b4f8a}a:focus,summary:focus{outline:3px solid #f0a000}";
