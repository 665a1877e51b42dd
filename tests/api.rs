//! Black-box tests of the API: they start the real `runconvert` binary and drive every
//! endpoint over HTTP, errors and cross-user access included.

use runconvert_tests::serde_json::{json, Value};
use runconvert_tests::*;
use std::time::Duration;

fn photo() -> Vec<u8> {
    std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap()
}

fn base64_job(output: &str) -> Value {
    json!({
        "tag": "t1",
        "tasks": {
            "import-1": {"operation": "import/base64", "file": format!("data:image/jpeg;base64,{}", b64(&photo())), "filename": "photo.jpg"},
            "convert-1": {"operation": "convert", "input": "import-1", "output_format": output, "options": {"width": 64}},
            "export-1": {"operation": "export/url", "input": "convert-1"}
        }
    })
}

#[tokio::test]
async fn health_and_first_key() {
    let s = Server::start_fresh(&[]).await;
    let (status, body) = s.get_as("", "/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    // A first start with no key makes one and prints it once.
    let line = s
        .banner
        .iter()
        .find(|l| l.contains("rc_"))
        .expect("the first key is printed");
    let key = line
        .split_whitespace()
        .find(|w| w.starts_with("rc_"))
        .unwrap()
        .to_string();
    let (status, body) = s.get_as(&key, "/v2/process/jobs").await;
    assert_eq!(status, 200, "{body}");
    // ...and only once.
    let mut s = s;
    s.kill_and_restart().await;
    assert!(!s.banner.iter().any(|l| l.contains("rc_")), "{:?}", s.banner);
    // The key is stored as a hash only.
    let db = std::fs::read(s.data_dir.join("runconvert.db")).unwrap();
    assert!(
        !db.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key is in the database in clear"
    );
}

#[tokio::test]
async fn authentication_is_required_and_checked() {
    let s = Server::start(&[]).await;
    let r = s.http.get(s.url("/v2/process/jobs")).send().await.unwrap();
    let (status, body) = decode(r).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthenticated");
    assert!(body["message"].as_str().unwrap().contains("Authorization"));
    let (status, body) = s.get_as("rc_not_a_key", "/v2/process/jobs").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthenticated")));
    let r = s
        .http
        .get(s.url("/v2/process/jobs"))
        .header("Authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Format discovery is public.
    let (status, _) = s.get_as("", "/v2/core/formats").await;
    assert_eq!(status, 200);
    let (status, body) = s.get("/v2/nothing-here").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn a_job_runs_and_its_file_downloads() {
    let s = Server::start(&[]).await;
    let job = s.create_job(base64_job("png")).await;
    assert_eq!(job["tag"], "t1");
    assert!(matches!(job["status"].as_str(), Some("created" | "processing")));
    assert_eq!(job["tasks"].as_array().unwrap().len(), 3);
    let convert = task(&job, "convert-1");
    assert_eq!(convert["depends_on_task_ids"], json!([task(&job, "import-1")["id"]]));
    assert!(task(&job, "import-1")["payload"]["file"]
        .as_str()
        .unwrap()
        .contains("characters of base64"));

    let done = s.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    for key in ["created_at", "started_at", "ended_at"] {
        assert!(done[key].is_string(), "{key} in {done}");
    }
    for t in done["tasks"].as_array().unwrap() {
        assert_eq!(t["status"], "finished", "{t}");
        assert_eq!(t["percent"], 100);
        assert!(t["ended_at"].is_string());
    }
    let files = urls(task(&done, "export-1"));
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "photo.png");
    let (status, bytes) = s.download(&files[0].1).await;
    assert_eq!(status, 200);
    assert_eq!(image_size(&bytes), (64, 48));
    assert_eq!(task(&done, "export-1")["result"]["files"][0]["size"], bytes.len());

    // A tampered or expired link is refused.
    let tampered = files[0].1.replace("expires=", "expires=9");
    assert_eq!(s.download(&tampered).await.0, 403);
    let other_file = files[0].1.replace("photo.png", "photo.jpg");
    assert_eq!(s.download(&other_file).await.0, 403);
}

#[tokio::test]
async fn listing_jobs_and_tasks_with_filters_and_pages() {
    let s = Server::start(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = s.run_job(base64_job("png")).await;
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // A job that fails: a URL import of a loopback address (refused by default).
    let failed = s
        .run_job(json!({"tasks": {"i": {"operation": "import/url", "url": "http://127.0.0.1:9/x.jpg"}}}))
        .await;
    assert_eq!(failed["status"], "failed");

    let (status, list) = s.get("/v2/process/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(list["meta"]["count"], 4);
    assert_eq!(list["data"].as_array().unwrap().len(), 4);
    assert_eq!(list["data"][0]["id"], failed["id"], "newest first");

    let (_, list) = s.get("/v2/process/jobs?status=completed").await;
    assert_eq!(list["meta"]["count"], 3);
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["status"] == "completed"));
    let (_, list) = s.get("/v2/process/jobs?status=failed").await;
    assert_eq!(list["meta"]["count"], 1);

    let (_, page) = s.get("/v2/process/jobs?limit=2&offset=1").await;
    assert_eq!(page["meta"]["count"], 4);
    let got: Vec<_> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, vec![ids[2].clone(), ids[1].clone()]);

    let (status, err) = s.get("/v2/process/jobs?status=done").await;
    assert_eq!(status, 400);
    assert!(err["errors"]["status"][0]
        .as_str()
        .unwrap()
        .contains("created, processing, completed, failed"));
    let (status, _) = s.get("/v2/process/jobs?limit=-1").await;
    assert_eq!(status, 400);
    let (status, _) = s.get("/v2/process/jobs?colour=red").await;
    assert_eq!(status, 400);

    // Tasks: by job and by status.
    let (status, tasks) = s.get(&format!("/v2/process/tasks?job_id={}", ids[0])).await;
    assert_eq!(status, 200);
    assert_eq!(tasks["meta"]["count"], 3);
    assert!(tasks["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["job_id"] == ids[0].as_str()));
    let (_, failed_tasks) = s.get("/v2/process/tasks?status=failed").await;
    assert_eq!(failed_tasks["meta"]["count"], 1);
    assert_eq!(failed_tasks["data"][0]["code"], "forbidden_address");
    let (_, all) = s.get("/v2/process/tasks").await;
    assert_eq!(all["meta"]["count"], 10);
    let task_id = all["data"][0]["id"].as_str().unwrap();
    let (status, one) = s.get(&format!("/v2/process/tasks/{task_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], task_id);
    let (status, _) = s.get("/v2/process/tasks?status=done").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn other_users_see_nothing() {
    let s = Server::start(&[]).await;
    let job = s.run_job(base64_job("jpg")).await;
    let id = job["id"].as_str().unwrap();
    let task_id = task(&job, "convert-1")["id"].as_str().unwrap();
    let bob = s.other_key.clone();

    let (status, body) = s.get_as(&bob, &format!("/v2/process/jobs/{id}")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(
        s.get_as(&bob, &format!("/v2/process/jobs/{id}/wait?timeout=0")).await.0,
        404
    );
    assert_eq!(s.get_as(&bob, &format!("/v2/process/tasks/{task_id}")).await.0, 404);
    let (_, list) = s.get_as(&bob, "/v2/process/jobs").await;
    assert_eq!(list["meta"]["count"], 0);
    let (_, tasks) = s.get_as(&bob, &format!("/v2/process/tasks?job_id={id}")).await;
    assert_eq!(tasks["meta"]["count"], 0);
    assert_eq!(s.delete_as(&bob, &format!("/v2/process/jobs/{id}")).await.0, 404);
    // The owner still has it.
    assert_eq!(s.get(&format!("/v2/process/jobs/{id}")).await.0, 200);
}

#[tokio::test]
async fn deleting_a_job_removes_it_and_its_files() {
    let s = Server::start(&[]).await;
    let job = s.run_job(base64_job("png")).await;
    let id = job["id"].as_str().unwrap();
    let (_, url) = urls(task(&job, "export-1")).remove(0);
    assert_eq!(s.download(&url).await.0, 200);
    let key = s.key.clone();
    let (status, _) = s.delete_as(&key, &format!("/v2/process/jobs/{id}")).await;
    assert_eq!(status, 204);
    assert_eq!(s.get(&format!("/v2/process/jobs/{id}")).await.0, 404);
    assert_eq!(s.download(&url).await.0, 404);
    let (_, tasks) = s.get(&format!("/v2/process/tasks?job_id={id}")).await;
    assert_eq!(tasks["meta"]["count"], 0);
    assert_eq!(s.delete_as(&key, &format!("/v2/process/jobs/{id}")).await.0, 404);
}

#[tokio::test]
async fn wait_returns_at_its_timeout_for_a_job_that_is_not_done() {
    let s = Server::start(&[]).await;
    let job = s
        .create_job(json!({"tasks": {"up": {"operation": "import/upload"}}}))
        .await;
    let id = job["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    let (status, body) = s.get(&format!("/v2/process/jobs/{id}/wait?timeout=1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "created");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let (status, body) = s.get(&format!("/v2/process/jobs/{id}/wait?timeout=100000")).await;
    assert_eq!(status, 400, "{body}");
}

async fn expect_invalid(s: &Server, body: Value, field: &str, needle: &str) {
    let (status, err) = s.post("/v2/process/jobs", &body).await;
    assert_eq!(status, 400, "{body} → {err}");
    assert_eq!(err["code"], "invalid_data", "{err}");
    let msgs = err["errors"][field]
        .as_array()
        .unwrap_or_else(|| panic!("no error for {field}: {err}"));
    let text = msgs.iter().map(|m| m.as_str().unwrap()).collect::<Vec<_>>().join("; ");
    assert!(text.contains(needle), "{field}: {text:?} should mention {needle:?}");
    assert!(err["message"].as_str().unwrap().contains(field), "{err}");
}

#[tokio::test]
async fn bad_job_requests_get_clear_400s() {
    let s = Server::start(&[]).await;
    let r = s
        .http
        .post(s.url("/v2/process/jobs"))
        .bearer_auth(&s.key)
        .body("{\"tasks\": ")
        .send()
        .await
        .unwrap();
    let (status, err) = decode(r).await;
    assert_eq!(status, 400);
    assert_eq!(err["code"], "invalid_data");
    assert!(err["message"].as_str().unwrap().contains("not valid JSON"), "{err}");

    let up = json!({"operation": "import/upload"});
    expect_invalid(
        &s,
        json!({"tasks": {"imp": {"operation": "import/ftp"}}}),
        "tasks.imp.operation",
        "unknown operation",
    )
    .await;
    expect_invalid(
        &s,
        json!({"tasks": {"bad name!": up}}),
        "tasks.bad name!",
        "letters, digits",
    )
    .await;
    expect_invalid(
        &s,
        json!({"tasks": {"c": {"operation": "convert", "input": "nope", "output_format": "png"}}}),
        "tasks.c.input",
        "not in this job",
    )
    .await;
    expect_invalid(
        &s,
        json!({"tasks": {
            "a": {"operation": "convert", "input": "b", "output_format": "png"},
            "b": {"operation": "convert", "input": "a", "output_format": "png"}
        }}),
        "tasks",
        "cycle",
    )
    .await;
    expect_invalid(&s, json!({"tasks": {"u": up, "i": {"operation": "import/base64", "file": "AAAA", "filename": "a.png", "input": "u"}}}), "tasks.i.input", "takes no input").await;
    expect_invalid(
        &s,
        json!({"tasks": {"e": {"operation": "export/url"}}}),
        "tasks.e.input",
        "needs an input",
    )
    .await;
    expect_invalid(
        &s,
        json!({"tasks": {"u": {"operation": "import/upload", "filename": "a.jpg"}, "c": {"operation": "convert", "input": "u", "output_format": "psd"}}}),
        "tasks.c.output_format",
        "convert cannot make",
    )
    .await;
    expect_invalid(
        &s,
        json!({"tasks": {"u": {"operation": "import/upload", "filename": "a.jpg"}, "c": {"operation": "convert", "input": "u", "output_format": "jpg", "options": {"quality": 500}}}}),
        "tasks.c.options.quality",
        "between 1 and 100",
    )
    .await;
    expect_invalid(
        &s,
        json!({"tasks": {"u": {"operation": "import/upload", "filename": "a.jpg"}, "c": {"operation": "convert", "input": "u", "output_format": "png", "options": {"dpi": 3}}}}),
        "tasks.c.options.dpi",
        "unknown option",
    )
    .await;
    expect_invalid(
        &s,
        json!({"tasks": {"u": {"operation": "import/upload", "size": 1}}}),
        "tasks.u",
        "unknown field `size`",
    )
    .await;
    expect_invalid(
        &s,
        json!({"tasks": {"i": {"operation": "import/url", "url": "file:///etc/passwd"}}}),
        "tasks.i.url",
        "http",
    )
    .await;
    expect_invalid(&s, json!({"tasks": {}}), "tasks", "at least one").await;
    expect_invalid(
        &s,
        json!({"tasks": {"u": up}, "priority": 1}),
        "priority",
        "unknown field",
    )
    .await;
    expect_invalid(
        &s,
        json!({"tasks": {"o": {"operation": "import/s3", "bucket": "b", "region": "us-east-1", "access_key_id": "AKIA", "secret_access_key": "s"}}}),
        "tasks.o.key",
        "give key or key_prefix",
    )
    .await;
    let big = "A".repeat(2_100_000);
    expect_invalid(
        &s,
        json!({"tasks": {"b": {"operation": "import/base64", "file": big, "filename": "x.png"}}}),
        "tasks.b.file",
        "at most 1500000",
    )
    .await;
    // Nothing was created by any of these.
    let (_, list) = s.get("/v2/process/jobs").await;
    assert_eq!(list["meta"]["count"], 0);
}

#[tokio::test]
async fn core_endpoints_report_what_the_build_does() {
    let s = Server::start(&[]).await;
    let names = format_names(&s).await;
    for f in ["jpg", "png", "gif", "webp", "bmp", "tiff", "ico"] {
        assert!(names.iter().any(|n| n == f), "{f} missing from {names:?}");
    }
    // Every format listed is one some engine of this host reads or writes.
    let (_, all_ops) = s.get_as("", "/v2/core/operations").await;
    for f in &names {
        let used = all_ops["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["input_format"] == *f || o["output_format"] == *f);
        assert!(used, "{f} is listed but no operation handles it");
    }

    let (status, outputs) = s.get_as("", "/v2/core/outputs?input_format=jpeg").await;
    assert_eq!(status, 200);
    let outs: Vec<&str> = outputs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["operation"] == "convert")
        .map(|o| o["output_format"].as_str().unwrap())
        .collect();
    assert_eq!(outs, ["jpg", "png", "gif", "webp", "bmp", "tiff", "ico", "pdf"]);
    let (status, err) = s.get_as("", "/v2/core/outputs?input_format=xyz").await;
    assert_eq!(status, 400, "{err}");

    let (status, ops) = s
        .get_as(
            "",
            "/v2/core/operations?input_format=jpg&output_format=webp&operation=convert",
        )
        .await;
    assert_eq!(status, 200);
    let op = &ops["data"][0];
    assert_eq!(op["operation"], "convert");
    assert_eq!(op["engine"], "image");
    let opts: Vec<&str> = op["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(opts, ["width", "height", "fit", "quality", "lossless"]);
    let (_, all) = s.get_as("", "/v2/core/operations").await;
    let names: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    for op in [
        "import/url",
        "import/upload",
        "import/base64",
        "import/s3",
        "import/google-cloud-storage",
        "import/azure/blob",
        "import/sftp",
        "export/url",
        "export/s3",
        "export/google-cloud-storage",
        "export/azure/blob",
        "export/sftp",
        "convert",
    ] {
        assert!(names.contains(&op), "{op} missing");
    }
}

#[tokio::test]
async fn upload_form_takes_a_file_and_the_job_goes_on() {
    let s = Server::start(&[]).await;
    let job = s
        .create_job(json!({"tasks": {
            "up": {"operation": "import/upload", "filename": "mine.jpg", "file_size": 102400},
            "c": {"operation": "convert", "input": "up", "output_format": "webp", "options": {"width": 100}},
            "e": {"operation": "export/url", "input": "c"}
        }}))
        .await;
    let up = task(&job, "up");
    assert_eq!(up["status"], "waiting");
    let form = &up["result"]["form"];
    assert!(form["url"].as_str().unwrap().starts_with(&s.base));
    assert!(form["parameters"]["signature"].is_string());

    // A wrong signature is refused before the file is taken.
    let mut forged = up.clone();
    forged["result"]["form"]["parameters"]["signature"] = json!("00");
    let (status, err) = s.upload(&forged, "x.jpg", photo()).await;
    assert_eq!((status, err["code"].as_str()), (403, Some("forbidden")));

    let (status, body) = s.upload(up, "ignored-name.jpg", photo()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "finished");
    assert_eq!(body["result"]["files"][0]["filename"], "mine.jpg");
    assert_eq!(body["result"]["files"][0]["size"], photo().len());

    // A second upload to the same task is refused.
    let (status, _) = s.upload(up, "again.jpg", photo()).await;
    assert_eq!(status, 400);

    let done = s.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (name, url) = urls(task(&done, "e")).remove(0);
    assert_eq!(name, "mine.webp");
    let bytes = s.download(&url).await.1;
    assert_eq!(image_size(&bytes), (100, 75));
}

#[tokio::test]
async fn an_upload_that_never_comes_times_out() {
    let s = Server::start(&["--upload-timeout", "1"]).await;
    let job = s
        .run_job(json!({"tasks": {
            "up": {"operation": "import/upload"},
            "c": {"operation": "convert", "input": "up", "output_format": "png"}
        }}))
        .await;
    assert_eq!(job["status"], "failed");
    let up = task(&job, "up");
    assert_eq!(up["status"], "failed");
    assert_eq!(up["code"], "upload_timeout");
    let c = task(&job, "c");
    assert_eq!(c["code"], "input_task_failed");
    assert!(c["message"].as_str().unwrap().contains("`up`"), "{c}");
    // The form has expired too.
    let (status, err) = s.upload(up, "late.jpg", photo()).await;
    assert_eq!(status, 403, "{err}");
}

#[tokio::test]
async fn import_url_is_guarded_and_size_capped() {
    let fixture = Fixture::start().await;
    // Default: loopback is refused, and the message says why.
    let s = Server::start(&[]).await;
    let job = s
        .run_job(json!({"tasks": {"i": {"operation": "import/url", "url": fixture.url("/corpus/images/photo_640x480.jpg")}}}))
        .await;
    let i = task(&job, "i");
    assert_eq!(i["code"], "forbidden_address", "{i}");
    assert!(i["message"].as_str().unwrap().contains("loopback"), "{i}");
    for url in [
        "http://localhost:1/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:1/x",
        "http://0x7f.1/x",
    ] {
        let job = s
            .run_job(json!({"tasks": {"i": {"operation": "import/url", "url": url}}}))
            .await;
        assert_eq!(task(&job, "i")["code"], "forbidden_address", "{url}: {job}");
    }
    drop(s);

    // Allowed for private networks, and capped in size.
    let s = Server::start(&["--allow-private-networks", "--max-file-size", "1000000"]).await;
    let job = s
        .run_job(json!({"tasks": {
            "i": {"operation": "import/url", "url": fixture.url("/corpus/images/photo_640x480.jpg")},
            "big": {"operation": "import/url", "url": fixture.url("/endless"), "ignore_error": true},
            "gone": {"operation": "import/url", "url": fixture.url("/missing"), "ignore_error": true},
            "e": {"operation": "export/url", "input": ["i", "big", "gone"]}
        }}))
        .await;
    assert_eq!(job["status"], "completed", "ignore_error lets the job complete: {job}");
    assert_eq!(task(&job, "i")["result"]["files"][0]["filename"], "photo_640x480.jpg");
    assert_eq!(task(&job, "big")["code"], "file_too_large");
    assert_eq!(task(&job, "gone")["code"], "download_failed");
    assert!(task(&job, "gone")["message"].as_str().unwrap().contains("404"));
    let files = urls(task(&job, "e"));
    assert_eq!(files.len(), 1, "only the file that came in is exported");
    assert_eq!(s.download(&files[0].1).await.1, photo());
}

/// A PNG whose header claims `w × h`, with a tiny (wrong) body.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[tokio::test]
async fn hostile_files_fail_their_task_and_the_server_goes_on() {
    let s = Server::start(&[]).await;
    let alpha = std::fs::read(corpus_file("images/alpha_2000x2000.png")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "text.jpg",
            b"this is not a picture at all".to_vec(),
            "invalid_file",
            "text.jpg is said to be jpg but its content is txt",
        ),
        (
            "png-named.jpg",
            alpha[..4096].to_vec(),
            "invalid_file",
            "its content is png",
        ),
        (
            "truncated.png",
            alpha[..alpha.len() / 3].to_vec(),
            "invalid_file",
            "could not be decoded",
        ),
        (
            "huge.png",
            png_claiming(100_000, 100_000),
            "limit_exceeded",
            "100000×100000",
        ),
        ("empty.gif", Vec::new(), "invalid_file", "not a gif file"),
    ];
    let mut tasks = serde_json::Map::new();
    for (i, (name, bytes, _, _)) in cases.iter().enumerate() {
        tasks.insert(
            format!("in{i}"),
            json!({"operation": "import/base64", "file": b64(bytes), "filename": name}),
        );
        tasks.insert(
            format!("c{i}"),
            json!({"operation": "convert", "input": format!("in{i}"), "output_format": "png"}),
        );
    }
    tasks.insert(
        "bad64".into(),
        json!({"operation": "import/base64", "file": "%%%not base64%%%", "filename": "x.png"}),
    );
    let job = s.run_job(json!({"tasks": tasks})).await;
    assert_eq!(job["status"], "failed");
    for (i, (name, _, code, needle)) in cases.iter().enumerate() {
        let t = task(&job, &format!("c{i}"));
        assert_eq!(t["status"], "failed", "{name}: {t}");
        assert_eq!(t["code"], *code, "{name}: {t}");
        assert!(t["message"].as_str().unwrap().contains(needle), "{name}: {t}");
    }
    let bad = task(&job, "bad64");
    assert_eq!(
        (bad["code"].as_str(), bad["status"].as_str()),
        (Some("invalid_file"), Some("failed"))
    );

    // The server still works for everyone.
    let ok = s.run_job(base64_job("gif")).await;
    assert_eq!(ok["status"], "completed", "{ok}");
}

#[tokio::test]
async fn jobs_and_files_survive_a_restart_and_interrupted_work_resumes() {
    let fixture = Fixture::start().await;
    let mut s = Server::start(&["--allow-private-networks"]).await;
    let finished = s.run_job(base64_job("png")).await;
    let waiting = s
        .create_job(json!({"tasks": {
            "up": {"operation": "import/upload", "filename": "later.jpg"},
            "c": {"operation": "convert", "input": "up", "output_format": "bmp", "options": {"width": 32}},
            "e": {"operation": "export/url", "input": "c"}
        }}))
        .await;
    // A task that is running when the server dies: a download that takes 3 s.
    let running = s
        .create_job(json!({"tasks": {
            "slow": {"operation": "import/url", "url": fixture.url("/slow/3/images/photo_640x480.jpg")},
            "e": {"operation": "export/url", "input": "slow"}
        }}))
        .await;
    let running_id = running["id"].as_str().unwrap();
    // Killed once it runs.
    s.task_becomes(running_id, "slow", "processing").await;
    s.kill_and_restart().await;

    // The finished job and its file are still there.
    let (status, again) = s
        .get(&format!("/v2/process/jobs/{}", finished["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, again["status"].as_str()), (200, Some("completed")));
    let (_, url) = urls(task(&again, "export-1")).remove(0);
    assert_eq!(image_size(&s.download(&url).await.1), (64, 48));

    // The interrupted download ran again and its job completed.
    let resumed = s.wait_job(running_id).await;
    assert_eq!(resumed["status"], "completed", "{resumed}");
    let (_, url) = urls(task(&resumed, "e")).remove(0);
    assert_eq!(s.download(&url).await.1, photo());

    // The job waiting for an upload still takes it.
    let (status, _) = s.upload(task(&waiting, "up"), "later.jpg", photo()).await;
    assert_eq!(status, 201);
    let done = s.wait_job(waiting["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (name, url) = urls(task(&done, "e")).remove(0);
    assert_eq!(name, "later.bmp");
    assert_eq!(image_size(&s.download(&url).await.1), (32, 24));
}

#[tokio::test]
async fn keys_command_prints_only_the_key() {
    let dir = std::env::temp_dir().join(format!("runconvert-keys-{}", std::process::id()));
    let out = std::process::Command::new(bin_path())
        .args(["keys", "create", "--name", "ci"])
        .env("RUNCONVERT_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    assert!(stdout.starts_with("rc_") && stdout.trim().len() == 43, "{stdout:?}");
    let out = std::process::Command::new(bin_path())
        .args(["keys", "create", "--name", ""])
        .env("RUNCONVERT_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::remove_dir_all(&dir).ok();
}
