//! The Convert page: a file, an output format and a few options, converted through the
//! public API's own steps. The page's script asks this server to create the job
//! (`import/upload` → `convert` → `export/url`, through the same path as `POST /v2/jobs`),
//! sends the file to the upload task's form as any client would, then opens the job's
//! page, which shows its progress, the result and the same job as JSON and as curl.

use super::{enter, page, Session, Visit};
use crate::error::HttpError;
use crate::ApiState;
use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use runconvert_core::formats::{format_of_filename, Registry, KNOWN_FORMATS};
use runconvert_core::keys::Scope;
use runconvert_core::Timestamp;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The options the page offers, as the form names them; only those a conversion takes
/// are sent (the page's script hides the others).
const OPTIONS: &[&str] = &["width", "height", "quality", "pages"];

#[derive(Template)]
#[template(path = "dashboard/convert.html")]
struct ConvertPage {
    root: String,
    user_name: String,
    /// Every format something converts to (the list before a file is picked).
    outputs: Vec<&'static str>,
    /// For the script: input format (and its aliases) → output format → option names.
    table: String,
}

/// What converts to what, and with which of [`OPTIONS`], keyed by every name of the input
/// format (`jpeg` as well as `jpg`).
fn conversions(registry: &Registry) -> BTreeMap<&'static str, BTreeMap<&'static str, Vec<&'static str>>> {
    let mut by_input: BTreeMap<&'static str, BTreeMap<&'static str, Vec<&'static str>>> = BTreeMap::new();
    for c in registry.query(Some("convert"), None, None) {
        let options = c
            .options
            .iter()
            .map(|o| o.name)
            .filter(|n| OPTIONS.contains(n))
            .collect();
        by_input
            .entry(c.input_format)
            .or_default()
            .entry(c.output_format)
            .or_insert(options);
    }
    for f in KNOWN_FORMATS {
        if let Some(outputs) = by_input.get(f.name).cloned() {
            for alias in f.aliases {
                by_input.entry(alias).or_insert_with(|| outputs.clone());
            }
        }
    }
    by_input
}

pub(super) async fn convert_page(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let (root, s) = entered!(enter(&state, &uri, &headers, Visit::Page, Scope::TaskWrite));
    let table = conversions(&state.registry);
    let outputs: BTreeSet<&'static str> = table.values().flat_map(|o| o.keys().copied()).collect();
    let mut r = page(
        StatusCode::OK,
        &ConvertPage {
            root,
            user_name: s.user.name.clone(),
            outputs: outputs.into_iter().collect(),
            // In a `<script type="application/json">` block: `<` escaped so no text ends it.
            table: serde_json::to_string(&table)
                .unwrap_or_default()
                .replace('<', "\\u003c"),
        },
    );
    // The file goes to the upload form, which on AWS is S3's: the page may send it there.
    let probe = state.files.upload_form("probe", "probe", Timestamp::now());
    let upload_origin = origin(&probe.url);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self' {upload_origin}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    Ok(r)
}

/// `scheme://host[:port]` of a URL (empty when it has none).
fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or("")),
        None => String::new(),
    }
}

/// The job the Convert form describes, as a client would post it to `/v2/jobs`.
fn job_request(form: &HashMap<String, String>) -> Result<Value, String> {
    let field = |k: &str| form.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let output = field("output_format").ok_or("choose the format to convert to")?;
    let mut convert = Map::new();
    convert.insert("operation".into(), "convert".into());
    convert.insert("input".into(), "upload".into());
    if let Some(input) = field("filename").and_then(format_of_filename) {
        convert.insert("input_format".into(), input.into());
    }
    convert.insert("output_format".into(), output.into());
    let mut options = Map::new();
    for name in OPTIONS {
        if let Some(v) = field(name) {
            // Numbers as numbers; anything else (a page range) as given.
            let value = v.parse::<i64>().map(Value::from).unwrap_or_else(|_| v.into());
            options.insert((*name).into(), value);
        }
    }
    if !options.is_empty() {
        convert.insert("options".into(), Value::Object(options));
    }
    let mut job = json!({"tasks": {
        "upload": {"operation": "import/upload"},
        "convert": convert,
        "export": {"operation": "export/url", "input": "convert"},
    }});
    if let Some(tag) = field("tag") {
        job["tag"] = tag.into();
    }
    Ok(job)
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"message": message}))).into_response()
}

/// The Convert form, sent by the page's script: the job is created, and the answer tells
/// the script where to send the file and which page to open then.
pub(super) async fn start_convert(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    // The page's script reads the answer as JSON, refusals too.
    let s: Session = match enter(&state, &uri, &headers, Visit::Form, Scope::TaskWrite).await? {
        Ok((_, s)) => s,
        Err(page) => {
            let why = match page.status() {
                StatusCode::UNAUTHORIZED => "your session has ended: sign in again",
                StatusCode::FORBIDDEN => "refused: reload the page (a cross-site request, or a key without task.write)",
                _ => "refused: reload the page",
            };
            return Ok(refusal(page.status(), why));
        }
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let request = match job_request(&form) {
        Ok(r) => r,
        Err(why) => return Ok(refusal(StatusCode::UNPROCESSABLE_ENTITY, &why)),
    };
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let job = match crate::jobs::submit_job(&state, &s.user, &body, Default::default()).await {
        Ok(job) => job,
        Err(HttpError(e)) if e.status < 500 => {
            let fields: Vec<String> = e.errors.values().flatten().cloned().collect();
            let text = if fields.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.message, fields.join("; "))
            };
            return Ok(refusal(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                &text,
            ));
        }
        Err(e) => return Err(e),
    };
    let form = job
        .tasks
        .iter()
        .find(|t| t.name == "upload")
        .and_then(|t| t.result.as_ref())
        .and_then(|r| r.form.as_ref());
    Ok((
        StatusCode::CREATED,
        Json(json!({"job_id": job.id, "page": format!("jobs/{}", job.id), "form": form})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_a_job_of_three_tasks() {
        let form = HashMap::from([
            ("filename".to_string(), "Photo.JPEG".to_string()),
            ("output_format".to_string(), "png".to_string()),
            ("width".to_string(), "400".to_string()),
            ("height".to_string(), " ".to_string()),
            ("pages".to_string(), "1-2".to_string()),
            ("tag".to_string(), "<b>x</b>".to_string()),
        ]);
        let job = job_request(&form).unwrap();
        assert_eq!(job["tag"], "<b>x</b>");
        let c = &job["tasks"]["convert"];
        assert_eq!(c["input_format"], "jpg");
        assert_eq!(c["options"], json!({"width": 400, "pages": "1-2"}));
        assert_eq!(job["tasks"]["export"]["input"], "convert");
        assert!(job_request(&HashMap::new()).is_err());
        assert_eq!(origin("https://b.s3.amazonaws.com/?x=1"), "https://b.s3.amazonaws.com");
        assert_eq!(
            origin("http://127.0.0.1:8080/v2/upload/t?sig=1"),
            "http://127.0.0.1:8080"
        );
    }
}
