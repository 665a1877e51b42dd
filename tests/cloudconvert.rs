//! The CloudConvert-compatible surface driven by CloudConvert's official SDKs, unchanged,
//! against the real binary: `tests/cloudconvert/python_sdk.py` (PyPI `cloudconvert`) and
//! `tests/cloudconvert/node_sdk.js` (npm `cloudconvert`, base URLs set by overriding its
//! public `callWithBase`).

use runconvert_tests::*;

fn sdk_env(s: &Server, fx: &Fixture) -> Vec<(&'static str, String)> {
    vec![
        ("RC_URL", s.url("")),
        ("RC_KEY", s.key.clone()),
        (
            "RC_PHOTO",
            corpus_file("images/photo_640x480.jpg").display().to_string(),
        ),
        ("RC_FILE_URL", fx.url("/corpus/images/photo_640x480.jpg")),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_sdk() {
    let s = Server::start(&["--allow-private-networks"]).await;
    let fx = Fixture::start().await;
    python_checks("cloudconvert/python_sdk.py", sdk_env(&s, &fx), 11).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_node_sdk() {
    let s = Server::start(&["--allow-private-networks"]).await;
    let fx = Fixture::start().await;
    node_checks("cloudconvert/node_sdk.js", sdk_env(&s, &fx), 5).await;
}

/// The bad input of CloudConvert's surface: each gets a clear answer in its terms (422
/// naming the field, or the page as it stands), nothing crashes, and JSON bodies on GET and
/// DELETE (the Python SDK sends a JSON content type on every request) change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_on_the_cloudconvert_surface() {
    let s = Server::start(&[]).await;
    for (query, field) in [
        ("filter[colour]=red", "filter[colour]"),
        ("per_page=0", "per_page"),
        ("per_page=1000000", "per_page"),
        ("page=0", "page"),
        ("filter[status]=done", "filter[status]"),
        ("include=everything", "include"),
        ("status=waiting&status=error", "status"),
    ] {
        let (status, body) = s.get(&format!("/v2/jobs?{query}")).await;
        assert!(status == 422 || status == 400, "{query}: {status} {body}");
        assert!(body["errors"][field].is_array(), "{query}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    // A page past the end: no objects, and where the pages are.
    let (status, page) = s.get("/v2/jobs?page=500&per_page=10").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"], serde_json::json!([]));
    assert_eq!(page["meta"]["current_page"], 500);
    assert_eq!(page["meta"]["last_page"], 1);

    // A redirecting job with no export: the job as it ended, not a redirect to nothing.
    let (status, job) = s
        .post(
            "/sync/v2/jobs",
            &serde_json::json!({"redirect": true, "tasks": {"in": {"operation": "import/base64", "file": b64(b"hello"), "filename": "a.txt"}}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["data"]["status"], "finished", "{job}");

    // A finished task is not retried, nor cancelled.
    let task = job["data"]["tasks"][0]["id"].as_str().unwrap().to_string();
    for action in ["retry", "cancel"] {
        let (status, body) = s
            .post(&format!("/v2/tasks/{task}/{action}"), &serde_json::json!({}))
            .await;
        assert_eq!(status, 422, "{action}: {body}");
        assert!(body["errors"]["task"].is_array(), "{body}");
    }

    // Another user sees none of it, and cannot delete it.
    let (status, _) = s.get_as(&s.other_key, &format!("/v2/tasks/{task}")).await;
    assert_eq!(status, 404);
    let (status, _) = s
        .delete_as(
            &s.other_key,
            &format!("/v2/jobs/{}", job["data"]["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 404);

    // JSON bodies on GET and DELETE are read past.
    let job_id = job["data"]["id"].as_str().unwrap().to_string();
    let r = s
        .http
        .get(s.url(&format!("/v2/jobs/{job_id}")))
        .bearer_auth(&s.key)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .delete(s.url(&format!("/v2/jobs/{job_id}")))
        .bearer_auth(&s.key)
        .header("content-type", "application/json")
        .body(r#"{"anything": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = s.get(&format!("/v2/jobs/{job_id}")).await;
    assert_eq!(status, 404);
}
