//! Limits and what each costs: rate limits per key (429 with Retry-After and the
//! X-RateLimit headers on every response), credits (402 before any work), the limits the
//! server reports, per-task timeouts; and meanwhile other users are served.

use runconvert_tests::*;
use serde_json::json;
use std::time::Duration;

async fn get_raw(s: &Server, key: &str, path: &str) -> reqwest::Response {
    s.http.get(s.url(path)).bearer_auth(key).send().await.unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn a_key_past_its_rate_limit_gets_429_and_others_are_still_served() {
    let s = Server::start(&[]).await;
    let limited = create_key_with(&s.data_dir, "limited", &["--rate-limit", "5"]);
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = get_raw(&s, &limited, "/v2/process/jobs").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("5"));
        assert!(header(&r, "x-ratelimit-reset").is_some());
        remaining.push(header(&r, "x-ratelimit-remaining").unwrap().parse::<u32>().unwrap());
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let r = get_raw(&s, &limited, "/v2/process/jobs").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
    let (_, body) = decode(r).await;
    assert_eq!(body["code"], "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("5 requests a minute"),
        "{body}"
    );

    // Another key is served meanwhile, with the server's default limit.
    let r = get_raw(&s, &s.key, "/v2/process/jobs").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("1200"));
    let (_, me) = s.get("/v2/users/me").await;
    assert_eq!(me["data"]["rate_limit_per_minute"], 1200);

    // Tokens come back with time: 5 a minute is one every 12 s.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(get_raw(&s, &limited, "/v2/process/jobs").await.status(), 200);
}

#[tokio::test]
async fn credits_are_checked_before_work_and_topped_up_from_the_command_line() {
    let s = Server::start(&[]).await;
    let key = create_key_with(&s.data_dir, "metered", &["--credits", "2"]);
    let two_steps = json!({"tasks": {
        "in": {"operation": "import/base64", "file": b64(b"hello"), "filename": "a.txt"},
        "zip": {"operation": "archive", "input": "in", "output_format": "zip"},
        "tar": {"operation": "archive", "input": "in", "output_format": "tar"},
        "out": {"operation": "export/url", "input": ["zip", "tar"]},
    }});
    let (status, job) = s.post_as(&key, "/v2/process/jobs", &two_steps).await;
    assert_eq!(status, 201, "{job}");
    let (_, me) = s.get_as(&key, "/v2/users/me").await;
    assert_eq!(me["data"]["credits"], 0);

    let (status, err) = s.post_as(&key, "/v2/process/jobs", &two_steps).await;
    assert_eq!(status, 402, "{err}");
    assert_eq!(err["code"], "insufficient_credits");
    assert!(err["message"].as_str().unwrap().contains("needs 2 credits"), "{err}");
    let (_, jobs) = s.get_as(&key, "/v2/process/jobs").await;
    assert_eq!(jobs["meta"]["count"], 1, "a refused job is not stored");

    // Imports and exports alone are free.
    let free = json!({"tasks": {
        "in": {"operation": "import/base64", "file": b64(b"hi"), "filename": "a.txt"},
        "out": {"operation": "export/url", "input": "in"},
    }});
    let (status, _) = s.post_as(&key, "/v2/process/jobs", &free).await;
    assert_eq!(status, 201);
    // Unlimited users are not affected.
    let (status, _) = s.post("/v2/process/jobs", &two_steps).await;
    assert_eq!(status, 201);

    let users = cli(&s.data_dir, &["users", "list"]);
    let id = users
        .lines()
        .find(|l| l.contains("metered"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert_eq!(
        cli(&s.data_dir, &["credits", "add", "--user", &id, "--amount", "5"]).trim(),
        "5"
    );
    let (status, job2) = s.post_as(&key, "/v2/process/jobs", &two_steps).await;
    assert_eq!(status, 201, "{job2}");
    let (_, done) = s
        .get_as(
            &key,
            &format!("/v2/process/jobs/{}/wait?timeout=60", job["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(done["status"], "completed", "{done}");
}

#[tokio::test]
async fn the_server_reports_its_limits_and_enforces_task_timeouts() {
    let (fx, s) = server_with_fixture().await;
    let (status, l) = s.get("/v2/limits").await;
    assert_eq!(status, 200);
    let d = &l["data"];
    for field in [
        "rate_limit_per_minute",
        "max_tasks_per_job",
        "max_file_size_bytes",
        "max_pixels",
        "max_pages",
        "task_timeout_seconds",
        "max_concurrent_tasks_per_user",
        "upload_timeout_seconds",
        "credit_rule",
    ] {
        assert!(!d[field].is_null(), "{field} missing: {l}");
    }
    let max_tasks = d["max_tasks_per_job"].as_u64().unwrap() as usize;
    let mut many = serde_json::Map::new();
    for i in 0..=max_tasks {
        many.insert(
            format!("t{i}"),
            json!({"operation": "import/base64", "file": "aGk=", "filename": "a.txt"}),
        );
    }
    let (status, err) = s.post("/v2/process/jobs", &json!({ "tasks": many })).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains(&format!("at most {max_tasks} tasks")),
        "{err}"
    );

    // A task past its own timeout is stopped and fails with `timeout`; others go on.
    let started = std::time::Instant::now();
    let slow = s
        .create_job(json!({"tasks": {
            "slow": {"operation": "import/url", "url": fx.url("/slow/30/images/photo_640x480.jpg"), "timeout": 1},
        }}))
        .await;
    let quick = s
        .run_job(json!({"tasks": {
            "in": {"operation": "import/base64", "file": b64(b"hi"), "filename": "a.txt"},
            "out": {"operation": "export/url", "input": "in"},
        }}))
        .await;
    assert_eq!(quick["status"], "completed");
    let slow = s.wait_job(slow["id"].as_str().unwrap()).await;
    assert_eq!(slow["status"], "failed");
    assert_eq!(task(&slow, "slow")["code"], "timeout", "{slow:#}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_user_at_their_task_limit_waits_while_others_are_served() {
    let fx = Fixture::start().await;
    let s = Server::start(&[
        "--allow-private-networks",
        "--concurrency",
        "4",
        "--max-user-tasks",
        "1",
    ])
    .await;
    let (_, l) = s.get("/v2/limits").await;
    assert_eq!(l["data"]["max_concurrent_tasks_per_user"], 1, "{l}");
    // Alice's two downloads take 8 s each: with one task at a time, the second waits.
    let slow = json!({"tasks": {
        "slow": {"operation": "import/url", "url": fx.url("/slow/8/images/photo_640x480.jpg")},
    }});
    let first = s.create_job(slow.clone()).await;
    let second = s.create_job(slow).await;
    // Bob is not held up by Alice's limit.
    let (status, bobs) = s
        .post_as(
            &s.other_key,
            "/v2/process/jobs",
            &json!({"tasks": {
                "in": {"operation": "import/base64", "file": b64(b"hi"), "filename": "a.txt"},
                "zip": {"operation": "archive", "input": "in", "output_format": "zip"},
                "out": {"operation": "export/url", "input": "zip"},
            }}),
        )
        .await;
    assert_eq!(status, 201, "{bobs}");
    let (_, bobs) = s
        .get_as(
            &s.other_key,
            &format!("/v2/process/jobs/{}/wait?timeout=30", bobs["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(bobs["status"], "completed", "{bobs}");
    let mut running = 0;
    for j in [&first, &second] {
        let (_, j) = s.get(&format!("/v2/process/jobs/{}", j["id"].as_str().unwrap())).await;
        assert_ne!(
            j["status"], "completed",
            "Alice's 8 s download finished before Bob's job: {j}"
        );
        running += (task(&j, "slow")["status"] == "processing") as usize;
    }
    assert!(running <= 1, "Alice runs {running} tasks at once with a limit of 1");

    // Both of Alice's jobs complete, one after the other.
    let a = s.wait_job(first["id"].as_str().unwrap()).await;
    let b = s.wait_job(second["id"].as_str().unwrap()).await;
    assert_eq!(
        (a["status"].as_str(), b["status"].as_str()),
        (Some("completed"), Some("completed"))
    );
    let (ta, tb) = (task(&a, "slow"), task(&b, "slow"));
    let (first_run, second_run) = if at(&ta["started_at"]) <= at(&tb["started_at"]) {
        (ta, tb)
    } else {
        (tb, ta)
    };
    assert!(
        at(&second_run["started_at"]) >= at(&first_run["ended_at"]),
        "the second started before the first ended: {first_run} {second_run}"
    );
}

/// An API timestamp (`2026-11-30T00:29:21.57Z`, fraction trimmed) made comparable.
fn at(v: &serde_json::Value) -> (String, f64) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let s = s.trim_end_matches('Z');
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    (whole.to_string(), format!("0.{frac}").parse().unwrap())
}

/// A one-page PDF of `w`×`h` points, a few hundred bytes.
fn pdf_of_page(w: i64, h: i64) -> Vec<u8> {
    one_page_pdf(w, h, b"0 0 1 rg 0 0 100 100 re f", false)
}

#[tokio::test]
async fn pages_larger_than_the_pixel_limit_are_not_rasterised() {
    let s = Server::start(&[]).await;
    // 9969 pt square: at the default 150 dpi, 20769×20769 pixels (431 MP, over the
    // default 150 MP); the same page at 10 dpi is 1385×1385 and goes through (the control).
    let huge = pdf_of_page(9969, 9969);
    assert!(huge.len() < 1024, "{} bytes", huge.len());
    let page4000 = pdf_of_page(4000, 4000);
    let job = s
        .run_job(json!({"tasks": {
            "in": {"operation": "import/base64", "file": b64(&huge), "filename": "huge.pdf"},
            "png": {"operation": "convert", "input": "in", "output_format": "png", "ignore_error": true},
            "small": {"operation": "convert", "input": "in", "output_format": "png", "options": {"resolution": 10}},
            "in4000": {"operation": "import/base64", "file": b64(&page4000), "filename": "page4000.pdf"},
            "ocr": {"operation": "ocr", "input": "in4000", "ignore_error": true},
            "thumb": {"operation": "thumbnail", "input": "in", "output_format": "png", "options": {"width": 200, "height": 200}},
            "out": {"operation": "export/url", "input": ["small", "thumb"]},
        }}))
        .await;
    let png = task(&job, "png");
    assert_eq!(png["status"], "failed", "{job}");
    assert_eq!(png["code"], "limit_exceeded", "{png}");
    let msg = png["message"].as_str().unwrap();
    assert!(
        msg.contains("9969×9969 pt") && msg.contains("20769×20769 pixels") && msg.contains("150 MP"),
        "{msg}"
    );
    // OCR renders PDF pages at 300 dpi: a 4000 pt page would be 16667×16667.
    let ocr = task(&job, "ocr");
    assert_eq!(ocr["code"], "limit_exceeded", "{ocr}");
    assert!(ocr["message"].as_str().unwrap().contains("16667×16667"), "{ocr}");
    // The control, and a thumbnail (rendered to its size, not at a resolution), pass.
    assert_eq!(task(&job, "small")["status"], "finished", "{job}");
    assert_eq!(task(&job, "thumb")["status"], "finished", "{job}");
    let files = urls(task(&job, "out"));
    let (_, bytes) = s.download(&files[0].1).await;
    assert_eq!(image_size(&bytes), (1385, 1385));
}
