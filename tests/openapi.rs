//! The OpenAPI document against the real binary: the committed copy
//! (`docs/openapi.json`) is the one the server serves, it passes openapi-spec-validator and
//! Redocly's lint (each with a control that shows it can fail), the docs page shows every
//! operation with nothing from elsewhere, and schemathesis, driving the running server from
//! the document with every check on, finds nothing.
//!
//! `RUNCONVERT_UPDATE_OPENAPI=1 cargo test -p runconvert-tests --test openapi` rewrites the
//! committed copy after a change to the API.

use runconvert_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

fn tool(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run `bash tests/services.sh start` and `source target/test-services/env.sh`")
    })
}

/// Runs `program args`: whether it succeeded, and what it printed.
fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    // In a directory of its own: schemathesis and Hypothesis keep their caches where they run.
    let dir = std::env::temp_dir().join(unique("openapi-run"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(program)
        .current_dir(&dir)
        .args(args)
        .envs(envs.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn served(s: &Server) -> Value {
    let r = s.http.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_committed_document_is_the_served_one_and_the_docs_page_shows_it() {
    let s = Server::start(&[]).await;
    let doc = served(&s).await;
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var("RUNCONVERT_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(committed(), &text).unwrap();
    }
    let on_disk = std::fs::read_to_string(committed()).unwrap_or_default();
    assert!(
        on_disk == text,
        "docs/openapi.json is not what the server serves: run \
         `RUNCONVERT_UPDATE_OPENAPI=1 cargo test -p runconvert-tests --test openapi` and commit it"
    );

    // What the document says, in a few places a client relies on.
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v2/process/jobs",
        "/v2/process/jobs/{id}/wait",
        "/v2/jobs",
        "/v2/tasks/{id}/retry",
        "/sync/v2/jobs",
        "/v2/import/upload",
        "/v2/capture-website",
        "/v2/core/operations",
        "/v2/webhooks",
        "/v2/users/me/keys",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    let schemas = &doc["components"]["schemas"];
    let convert = &schemas["Task_convert"];
    assert_eq!(convert["additionalProperties"], false);
    assert!(convert["required"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "output_format"));
    assert!(convert["properties"]["output_format"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "webp"));
    assert_eq!(
        doc["paths"]["/v2/process/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/JobRequest"
    );
    // Every operation the server has is a task of the document.
    let names: Vec<String> = schemas["TaskRequest"]["discriminator"]["mapping"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(names.len(), 20, "{names:?}");

    // Every path answers as routed (not the fallback's "route not found").
    for (path, item) in paths {
        let p = path.replace("{id}", "00000000-0000-0000-0000-000000000000");
        for method in item.as_object().unwrap().keys() {
            let r = s
                .http
                .request(method.to_uppercase().parse().unwrap(), s.url(&format!("{p}?timeout=0")))
                .bearer_auth(&s.key)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            assert!(
                !body.contains("route not found") && status != 405,
                "{method} {path}: {status} {body}"
            );
        }
    }

    // The docs page: every operation, readable, with nothing from elsewhere.
    let r = s.http.get(s.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let page = r.text().await.unwrap();
    for (path, item) in paths {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            assert!(page.contains(&format!("id=\"{id}\"")), "{id} is not on /docs");
        }
        assert!(page.contains(&format!("<code>{path}</code>")), "{path}");
    }
    assert!(!page.contains("<script") && !page.contains("src=\"http") && !page.contains("href=\"http"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_passes_openapi_spec_validator_and_redocly() {
    let doc = committed().display().to_string();
    let redocly_config = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/redocly.yaml");
    let redocly_config = redocly_config.display().to_string();
    let lint = |file: &str| {
        let v = run(&tool("RC_SPEC_VALIDATOR"), &[file], &[]);
        let r = run(
            &tool("RC_REDOCLY"),
            &["lint", "--config", &redocly_config, file],
            &[("REDOCLY_TELEMETRY", "off"), ("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")],
        );
        (v, r)
    };
    let ((v_ok, v_out), (r_ok, r_out)) = lint(&doc);
    assert!(v_ok, "openapi-spec-validator:\n{v_out}");
    assert!(r_ok, "redocly lint:\n{r_out}");
    assert!(r_out.contains("Your API description is valid"), "{r_out}");

    // Control: a copy with a broken reference and an operation without answers fails both.
    let mut broken: Value = serde_json::from_str(&std::fs::read_to_string(committed()).unwrap()).unwrap();
    broken["paths"]["/v2/process/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] =
        "#/components/schemas/NoSuchSchema".into();
    broken["paths"]["/v2/limits"]["get"]["responses"] = Value::Null;
    let dir = std::env::temp_dir().join(unique("openapi-control"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.json");
    std::fs::write(&file, broken.to_string()).unwrap();
    let ((v_ok, v_out), (r_ok, r_out)) = lint(&file.display().to_string());
    assert!(!v_ok, "the validator took a broken document:\n{v_out}");
    assert!(!r_ok, "redocly took a broken document:\n{r_out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing() {
    // Waits held at most 2 s (the wait endpoints answer the job as it stands then), no rate
    // limit (schemathesis sends thousands of requests), the outbound guard as deployed.
    let s = Server::start(&["--max-wait", "2", "--rate-limit", "0", "--upload-timeout", "60"]).await;
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/schemathesis.toml");
    let url = s.url("/openapi.json");
    let base = s.url("");
    let key = s.key.clone();
    let program = tool("RC_SCHEMATHESIS");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run(
            &program,
            &[
                "--config-file",
                &config.display().to_string(),
                "run",
                &url,
                "--url",
                base.trim_end_matches('/'),
                "--checks",
                "all",
                "--seed",
                "20261202",
            ],
            &[("RC_KEY", &key)],
        )
    })
    .await
    .unwrap();
    let summary = out.lines().rev().take(40).collect::<Vec<_>>();
    assert!(ok, "schemathesis found something:\n{out}");
    assert!(
        out.contains("No issues found") || out.contains("passed"),
        "{}",
        summary.join("\n")
    );
    // It reached the API: every operation was tested, and jobs were made.
    let (_, jobs) = decode(
        s.http
            .get(s.url("/v2/process/jobs"))
            .bearer_auth(&s.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(jobs["meta"]["count"].as_u64().unwrap() > 0, "{jobs}");
}
