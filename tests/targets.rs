//! One black-box suite, two targets: the embedded server (`runconvert serve`) and the
//! local AWS stack (infra/local/stack.py: every function of template.yaml as its own
//! Lambda process, moto for DynamoDB, S3, SQS and Step Functions). Each target runs the
//! spec's example jobs, one job per operation with its output checked (decoded images,
//! page counts, text, video containers), every import and export against the storage
//! servers of tests/services.sh (moto, Azurite, the GCS emulator, sshd), a failing task,
//! one user's job hidden from another, API keys and their scopes, the dashboard's pages,
//! and CloudConvert's API surface. Only the way a target starts differs.

use runconvert_tests::stores::{self, Stores, GCS_PRIVATE_KEY, S3_SECRET};
use runconvert_tests::*;
use serde_json::{json, Value};

async fn embedded(st: &Stores) -> Server {
    let mut args = st.server_args();
    args.push("--allow-signup".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&refs).await
}

async fn aws(st: &Stores) -> Server {
    let azure = format!("AzureBlobEndpoint={}", st.azure_endpoint);
    let gcs = format!("GcsEndpoint={}", st.gcs_emulator);
    Server::local_stack(&[
        "--allow-private-networks",
        "--parameter",
        &azure,
        "--parameter",
        &gcs,
        "--parameter",
        "AllowSignup=true",
    ])
    .await
}

#[tokio::test]
async fn the_embedded_server_passes_the_suite() {
    let st = Stores::from_env();
    suite(&embedded(&st).await, &st).await;
}

#[tokio::test]
async fn the_local_aws_stack_passes_the_suite() {
    let st = Stores::from_env();
    suite(&aws(&st).await, &st).await;
}

async fn suite(s: &Server, st: &Stores) {
    let fx = Fixture::start().await;
    spec_examples(s, &fx).await;
    operations(s, &fx).await;
    media_and_documents(s, &fx).await;
    each_store(s, st).await;
    failures_and_isolation(s).await;
    keys_and_scopes(s).await;
    dashboard_pages(s).await;
    cloudconvert_surface(s).await;
    openapi_document(s).await;
}

/// `/openapi.json` is the committed document on this deployment too (the API function
/// serves the same router), and `/docs` shows it.
async fn openapi_document(s: &Server) {
    let r = s.http.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let served: Value = r.json().await.unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json")).unwrap();
    let committed: Value = serde_json::from_str(&committed).unwrap();
    assert!(served == committed, "/openapi.json differs from docs/openapi.json");
    let r = s.http.get(s.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<code>/v2/process/jobs</code>"));
}

/// CloudConvert's paths and shapes over the same jobs: `{"data": ...}`, its statuses, an
/// option beside `operation`, the blocking sync API, lists with filters and pages,
/// `links.self`, 422 for invalid data.
async fn cloudconvert_surface(s: &Server) {
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let (status, made) = s
        .post(
            "/v2/jobs",
            &json!({"tag": "cc-surface", "tasks": {
                "in": {"operation": "import/base64", "file": b64(&photo), "filename": "photo.jpg"},
                "small": {"operation": "convert", "input": "in", "output_format": "png", "width": 80},
                "out": {"operation": "export/url", "input": "small"},
            }}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let id = made["data"]["id"].as_str().unwrap().to_string();
    assert!(made["data"]["links"]["self"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/v2/jobs/{id}")));
    let (status, done) = s.get(&format!("/sync/v2/jobs/{id}")).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["data"]["status"], "finished", "{done}");
    let out = done["data"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "out")
        .unwrap();
    let (status, png) = s.download(out["result"]["files"][0]["url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(image_size(&png), (80, 60));
    let (_, listed) = s
        .get("/v2/jobs?filter[tag]=cc-surface&filter[status]=finished&per_page=1")
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert_eq!(listed["meta"]["per_page"], 1);
    let (_, tasks) = s
        .get(&format!("/v2/tasks?filter[job_id]={id}&filter[operation]=convert"))
        .await;
    assert_eq!(tasks["data"][0]["name"], "small", "{tasks}");
    let (status, bad) = s
        .post(
            "/v2/jobs",
            &json!({"tasks": {"c": {"operation": "convert", "output_format": "png"}}}),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad["errors"]["tasks.c.input"].is_array(), "{bad}");
    // The synchronous create: the job as it ended, or with `redirect` the file itself.
    let sync_job = |redirect: bool| {
        json!({"redirect": redirect, "tasks": {
            "in": {"operation": "import/base64", "file": b64(&photo), "filename": "photo.jpg"},
            "out": {"operation": "export/url", "input": "in"},
        }})
    };
    let (status, ended) = s.post("/sync/v2/jobs", &sync_job(false)).await;
    assert_eq!(status, 201, "{ended}");
    assert_eq!(ended["data"]["status"], "finished", "{ended}");
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(s.url("/sync/v2/jobs"))
        .bearer_auth(&s.key)
        .json(&sync_job(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (status, file) = s.download(&location).await;
    assert_eq!((status, file == photo), (200, true));
    let (status, _) = s.delete_as(&s.key, &format!("/v2/jobs/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = s.get(&format!("/v2/jobs/{id}")).await;
    assert_eq!(status, 404);

    // A task on its own (POST /v2/{operation}), waited for on the sync API, then deleted;
    // a waiting upload cancelled, and refused a second time.
    let (status, one) = s
        .post(
            "/v2/import/base64",
            &json!({"file": b64(&photo), "filename": "one.jpg"}),
        )
        .await;
    assert_eq!(status, 201, "{one}");
    let one_id = one["data"]["id"].as_str().unwrap().to_string();
    let (_, one) = s.get(&format!("/sync/v2/tasks/{one_id}")).await;
    assert_eq!(one["data"]["status"], "finished", "{one}");
    assert_eq!(one["data"]["result"]["files"][0]["filename"], "one.jpg", "{one}");
    let (status, up) = s.post("/v2/import/upload", &json!({})).await;
    assert_eq!(status, 201, "{up}");
    let cancel = format!("/v2/tasks/{}/cancel", up["data"]["id"].as_str().unwrap());
    let (status, cancelled) = s.post(&cancel, &json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(
        (&cancelled["data"]["status"], &cancelled["data"]["code"]),
        (&json!("error"), &json!("cancelled")),
        "{cancelled}"
    );
    let (status, again) = s.post(&cancel, &json!({})).await;
    assert_eq!(status, 422, "{again}");
    let (status, _) = s.delete_as(&s.key, &format!("/v2/tasks/{one_id}")).await;
    assert_eq!(status, 204);
    let (status, _) = s.get(&format!("/v2/tasks/{one_id}")).await;
    assert_eq!(status, 404);

    // A webhook made with CloudConvert's `url`: the delivery carries CloudConvert-Signature,
    // the hex HMAC-SHA256 of the raw body under its secret (recomputed here), and the job
    // in CloudConvert's statuses.
    let (hook_url, got) = hook_receiver("cloudconvert-signature").await;
    let (status, hook) = s
        .post("/v2/webhooks", &json!({"url": hook_url, "events": ["job.finished"]}))
        .await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["data"]["signing_secret"].as_str().unwrap().to_string();
    let (_, job) = s.post("/sync/v2/jobs", &sync_job(false)).await;
    assert_eq!(job["data"]["status"], "finished", "{job}");
    let job_id = job["data"]["id"].as_str().unwrap().to_string();
    let start = std::time::Instant::now();
    let (body, signature) = loop {
        let found = got.lock().unwrap().iter().find_map(|(_, body, sig)| {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            (v["job"]["id"] == job_id.as_str()).then(|| (body.clone(), sig.clone()))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "no delivery to the CloudConvert webhook"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(signature, hmac_sha256_hex(secret.as_bytes(), &body));
    assert_ne!(signature, hmac_sha256_hex(b"another secret", &body), "the control");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&v["event"], &v["job"]["status"]),
        (&json!("job.finished"), &json!("finished"))
    );
    let hook_id = hook["data"]["id"].as_str().unwrap();
    let (status, _) = s.delete_as(&s.key, &format!("/v2/webhooks/{hook_id}")).await;
    assert_eq!(status, 204);
}

/// The dashboard's pages load on the target: sign-in, the jobs list with a job of this
/// suite, a job's page, the keys page, the Convert page and its steps (the job, the
/// upload, the result), the tag filter, sign-up; the cookie works on the target's own URLs.
async fn dashboard_pages(s: &Server) {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser.get(s.url("/dashboard/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(r#"<label for="key">API key</label>"#));
    let r = browser
        .post(s.url("/dashboard/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(format!("key={}", s.key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = |path: &str| {
        let req = browser.get(s.url(path)).header("cookie", &cookie);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, jobs) = page("/dashboard/").await;
    assert_eq!(status, 200, "{jobs}");
    let id = jobs
        .split("href=\"./jobs/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the suite's jobs are listed")
        .to_string();
    let (status, job) = page(&format!("/dashboard/jobs/{id}")).await;
    assert_eq!(status, 200, "{job}");
    assert!(job.contains("The request"), "{job}");
    let (status, keys) = page("/dashboard/keys").await;
    assert_eq!(status, 200, "{keys}");
    assert!(keys.contains("(this session)"), "{keys}");
    let (status, css) = page("/dashboard/style.css").await;
    assert_eq!((status, css.contains("body")), (200, true));
    let (status, script) = page("/dashboard/dashboard.js").await;
    assert_eq!((status, script.contains("data-progress")), (200, true));
    let (status, convert) = page("/dashboard/convert").await;
    assert_eq!(status, 200, "{convert}");
    assert!(convert.contains(r#"<option value="png">png</option>"#), "{convert}");
    // The Convert page's steps as its script takes them: the job made by the dashboard,
    // the file sent to the upload task's form (on AWS, S3's), the result downloaded.
    let r = browser
        .post(s.url("/dashboard/convert"))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("filename=photo.jpg&output_format=png&width=160&tag=dashboard")
        .send()
        .await
        .unwrap();
    let (status, made) = decode(r).await;
    assert_eq!(status, 201, "{made}");
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let (status, body) = s
        .upload(&json!({"result": {"form": made["form"]}}), "photo.jpg", photo)
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let job = s.wait_job(made["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["tag"], "dashboard");
    let (_, url) = urls(task(&job, "export")).remove(0);
    let (status, png) = s.download(&url).await;
    assert_eq!(status, 200);
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
    assert_eq!((img.width(), img.height()), (160, 120));
    let (status, progress) = page(&format!(
        "/dashboard/jobs/{}/progress",
        made["job_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(status, 200, "{progress}");
    assert!(progress.contains(r#""final":true"#), "{progress}");
    // The tag filter, in the API and on the jobs page: only the job tagged so.
    let (status, tagged) = s.get("/v2/process/jobs?tag=dashboard").await;
    assert_eq!(status, 200, "{tagged}");
    assert_eq!(tagged["meta"]["count"], 1, "{tagged}");
    assert_eq!(tagged["data"][0]["id"], made["job_id"]);
    let (_, none) = s.get("/v2/process/jobs?tag=no%20such%20tag").await;
    assert_eq!(none["meta"]["count"], 0, "{none}");
    let (_, listed) = page("/dashboard/?tag=dashboard").await;
    assert!(listed.contains(made["job_id"].as_str().unwrap()), "{listed}");
    assert!(!listed.contains(&id), "a job with another tag is listed: {listed}");
    // Sign-up (allowed on both targets here): a new user whose first key works and who
    // sees none of the suite's jobs.
    let r = browser
        .post(s.url("/dashboard/sign-up"))
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=dora")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let welcome = r.text().await.unwrap();
    let key = welcome
        .split(r#"id="new-key" readonly value=""#)
        .nth(1)
        .and_then(|v| v.split('"').next())
        .expect("the new key is shown")
        .to_string();
    let (status, me) = s.get_as(&key, "/v2/users/me").await;
    assert_eq!((status, me["data"]["name"].as_str()), (200, Some("dora")), "{me}");
    let (_, jobs) = s.get_as(&key, "/v2/process/jobs").await;
    assert_eq!(jobs["meta"]["count"], 0, "{jobs}");
}

/// Keys made through the API: shown once, listed by their first characters, limited to
/// their scopes (a read-only key gets 403 on creating a job, and cannot make a key with
/// more scopes than it has), revoked at once, and never another user's.
async fn keys_and_scopes(s: &Server) {
    let (status, made) = s
        .post(
            "/v2/users/me/keys",
            &json!({"name": "<b>reader</b>", "scopes": ["task.read"]}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let reader = made["data"]["key"].as_str().unwrap().to_string();
    let id = made["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(made["data"]["scopes"], json!(["task.read"]));
    assert_eq!(made["data"]["prefix"], json!(reader[..7]));

    // Listed with its name as given and its first characters, never the key.
    let (status, list) = s.get("/v2/users/me/keys").await;
    assert_eq!(status, 200, "{list}");
    let listed = list["data"].as_array().unwrap();
    let mine = listed
        .iter()
        .find(|k| k["id"] == json!(id))
        .expect("the new key is listed");
    assert_eq!(mine["name"], "<b>reader</b>");
    assert!(!list.to_string().contains(&reader), "a key is shown only once: {list}");
    assert!(listed.len() >= 2, "the first key is listed too: {list}");

    // What the scope allows, and what it does not.
    let (status, _) = s.get_as(&reader, "/v2/process/jobs").await;
    assert_eq!(status, 200);
    let job = json!({"tasks": {"i": {"operation": "import/base64", "file": "aGk=", "filename": "a.txt"}}});
    let (status, body) = s.post_as(&reader, "/v2/process/jobs", &job).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    assert!(body["message"].as_str().unwrap().contains("task.write"), "{body}");
    // Control: the same request with the full key is allowed.
    let (status, body) = s.post("/v2/process/jobs", &job).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = s.get_as(&reader, "/v2/webhooks").await;
    assert_eq!(status, 403);
    let (status, body) = s
        .post_as(
            &reader,
            "/v2/users/me/keys",
            &json!({"name": "more", "scopes": ["task.write"]}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = s
        .post("/v2/users/me/keys", &json!({"name": "x", "scopes": ["jobs.write"]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("jobs.write"), "{body}");

    // Another user can neither see nor revoke it.
    let (_, theirs) = s.get_as(&s.other_key, "/v2/users/me/keys").await;
    assert!(!theirs.to_string().contains(&id), "{theirs}");
    let (status, _) = s.delete_as(&s.other_key, &format!("/v2/users/me/keys/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = s.get_as(&reader, "/v2/process/jobs").await;
    assert_eq!(status, 200);

    // Revoked: its next request fails.
    let (status, _) = s.delete_as(&s.key, &format!("/v2/users/me/keys/{id}")).await;
    assert_eq!(status, 204);
    let (status, body) = s.get_as(&reader, "/v2/process/jobs").await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = s.delete_as(&s.key, &format!("/v2/users/me/keys/{id}")).await;
    assert_eq!(status, 404);

    // A key may revoke only keys whose scopes it holds: a user-only key cannot revoke the
    // owner's full key, and can (the control) revoke a key it could have made.
    let (_, made) = s
        .post(
            "/v2/users/me/keys",
            &json!({"name": "keys only", "scopes": ["user.read", "user.write"]}),
        )
        .await;
    let narrow = made["data"]["key"].as_str().unwrap().to_string();
    let (_, list) = s.get("/v2/users/me/keys").await;
    let full = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scopes"].as_array().is_some_and(|sc| sc.len() == 6))
        .expect("the full key is listed")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = s.delete_as(&narrow, &format!("/v2/users/me/keys/{full}")).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = s.get("/v2/process/jobs").await;
    assert_eq!(status, 200, "the full key still works");
    let (_, made) = s
        .post_as(
            &narrow,
            "/v2/users/me/keys",
            &json!({"name": "smaller", "scopes": ["user.read"]}),
        )
        .await;
    let smaller = made["data"]["id"].as_str().unwrap().to_string();
    let (status, _) = s.delete_as(&narrow, &format!("/v2/users/me/keys/{smaller}")).await;
    assert_eq!(status, 204);
}

/// What the target keeps of jobs: the embedded server's database files; the stack's
/// DynamoDB table, every item (moto checks no signature).
async fn stored_bytes(s: &Server) -> Vec<u8> {
    if s.stack.is_none() {
        return database_bytes(&s.data_dir);
    }
    let r = s
        .http
        .post(s.stack_value("FRONT"))
        .header("x-amz-target", "DynamoDB_20120810.Scan")
        .header("content-type", "application/x-amz-json-1.0")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(json!({"TableName": s.stack_value("TABLE")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

/// The spec's example (import/url → convert → export/url) and an upload.
async fn spec_examples(s: &Server, fx: &Fixture) {
    let job = s
        .run_job(json!({"tag": "spec", "tasks": {
            "import-1": {"operation": "import/url", "url": fx.url("/corpus/images/photo_640x480.jpg")},
            "convert-1": {"operation": "convert", "input": "import-1", "output_format": "png", "options": {"width": 200}},
            "export-1": {"operation": "export/url", "input": "convert-1"},
        }}))
        .await;
    assert_eq!(job["status"], "completed", "{job:#}");
    let links = urls(task(&job, "export-1"));
    let (status, png) = s.download(&links[0].1).await;
    assert_eq!(status, 200);
    assert_eq!(image_size(&png), (200, 150));

    let created = s
        .create_job(json!({"tasks": {
            "up": {"operation": "import/upload"},
            "thumb": {"operation": "thumbnail", "input": "up", "output_format": "jpg", "options": {"width": 64}},
            "out": {"operation": "export/url", "input": "thumb"},
        }}))
        .await;
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let (status, answer) = s.upload(task(&created, "up"), "upload.jpg", photo).await;
    assert!(status == 201 || status == 204, "upload: {status} {answer}");
    let job = s.wait_job(created["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(task(&job, "up")["result"]["files"][0]["filename"], "upload.jpg");
    let (_, thumb) = s.download(&urls(task(&job, "out"))[0].1).await;
    assert_eq!(image_size(&thumb).0, 64);
}

/// merge, compress, watermark, archive, thumbnail, ocr and capture_website, outputs checked.
async fn operations(s: &Server, fx: &Fixture) {
    let (job, files) = run_and_download(
        s,
        tasks(&[
            ("photo", import(fx, "images/photo_640x480.jpg")),
            ("big", import(fx, "images/photo_3000x2000.jpg")),
            ("pdf4", import(fx, "pdf/photos_4p.pdf")),
            ("pdf20", import(fx, "pdf/text_20p.pdf")),
            ("scan", import(fx, "images/ocr_text_300dpi.png")),
            ("merge", json!({"operation": "merge", "input": ["pdf4", "pdf20"], "output_format": "pdf", "filename": "merged.pdf"})),
            ("compress", json!({"operation": "compress", "input": "big", "output_format": "jpg", "filename": "small.jpg"})),
            ("watermark", json!({"operation": "watermark", "input": "photo", "text": "CONFIDENTIAL", "filename": "marked.jpg"})),
            ("archive", json!({"operation": "archive", "input": ["photo", "pdf4"], "output_format": "zip", "filename": "bundle.zip"})),
            ("thumb", json!({"operation": "thumbnail", "input": "pdf20", "output_format": "png", "options": {"width": 120}, "filename": "page.png"})),
            ("ocr", json!({"operation": "ocr", "input": "scan", "output_format": "txt", "filename": "text.txt"})),
            ("capture", json!({"operation": "capture_website", "url": fx.url("/page"), "output_format": "png", "filename": "page-shot.png"})),
        ]),
        &["merge", "compress", "watermark", "archive", "thumb", "ocr", "capture"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(pdf_pages(file(&files, "merged.pdf")), 24);
    let original = std::fs::read(corpus_file("images/photo_3000x2000.jpg")).unwrap();
    let small = file(&files, "small.jpg");
    assert!(
        small.len() < original.len(),
        "compress: {} of {}",
        small.len(),
        original.len()
    );
    assert_eq!(image_size(small), (3000, 2000));
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let marked = file(&files, "marked.jpg");
    assert_eq!(image_size(marked), (640, 480));
    let a = image::load_from_memory(&photo).unwrap().to_rgb8();
    let b = image::load_from_memory(marked).unwrap().to_rgb8();
    assert!(mean_diff(&a, &b, 0, 0, 640, 480) > 0.5, "the watermark changed nothing");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(file(&files, "bundle.zip").to_vec())).unwrap();
    let mut names: Vec<String> = (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().name().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["photo_640x480.jpg", "photos_4p.pdf"]);
    assert_eq!(image_size(file(&files, "page.png")).0, 120);
    let text = String::from_utf8_lossy(file(&files, "text.txt")).to_lowercase();
    let expected = std::fs::read_to_string(corpus_file("images/ocr_text.expected.txt")).unwrap();
    let words: Vec<String> = expected
        .split_whitespace()
        .map(|w| w.to_lowercase())
        .filter(|w| w.len() > 3)
        .collect();
    let found = words.iter().filter(|w| text.contains(w.as_str())).count();
    assert!(
        found * 10 >= words.len() * 8,
        "ocr found {found} of {} words: {text}",
        words.len()
    );
    // The test page draws a red box at its top left.
    let shot = image::load_from_memory(file(&files, "page-shot.png"))
        .unwrap()
        .to_rgb8();
    let p = shot.get_pixel(20, 20);
    assert!(p[0] > 200 && p[1] < 60 && p[2] < 60, "capture: {p:?} at (20, 20)");
}

/// docx → pdf (LibreOffice), mp4 → webm and a video thumbnail (FFmpeg).
async fn media_and_documents(s: &Server, fx: &Fixture) {
    let (job, files) = run_and_download(
        s,
        tasks(&[
            ("doc", json!({"operation": "import/base64", "file": b64(&docx("Hello from both targets")), "filename": "letter.docx"})),
            ("video", import(fx, "video/testsrc_10s_720p.mp4")),
            ("pdf", json!({"operation": "convert", "input": "doc", "output_format": "pdf"})),
            ("webm", json!({"operation": "convert", "input": "video", "output_format": "webm", "options": {"width": 320}})),
            ("still", json!({"operation": "thumbnail", "input": "video", "output_format": "png", "options": {"width": 160}, "filename": "still.png"})),
        ]),
        &["pdf", "webm", "still"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job:#}");
    let pdf = file(&files, "letter.pdf");
    assert_eq!(pdf_pages(pdf), 1);
    let page = render_page(pdf, 1, 50);
    assert!(page.pixels().any(|p| p[0] < 100), "the PDF has no text on its page");
    let webm = file(&files, "testsrc_10s_720p.webm");
    assert_eq!(&webm[..4], &[0x1a, 0x45, 0xdf, 0xa3], "not a WebM (EBML) file");
    assert_eq!(image_size(file(&files, "still.png")).0, 160);
}

/// A task that fails says why; one user's job is not another's.
async fn failures_and_isolation(s: &Server) {
    let job = s
        .run_job(json!({"tasks": {"bad": {"operation": "import/base64", "file": "%%% not base64 %%%", "filename": "x.txt"}}}))
        .await;
    assert_eq!(job["status"], "failed");
    assert_eq!(task(&job, "bad")["code"], "invalid_file", "{job:#}");
    assert!(!task(&job, "bad")["message"].as_str().unwrap_or_default().is_empty());
    let id = job["id"].as_str().unwrap();
    let (status, _) = s.get_as(&s.other_key, &format!("/v2/process/jobs/{id}")).await;
    assert_eq!(status, 404);
    let (status, list) = s.get_as(&s.other_key, "/v2/process/jobs").await;
    assert_eq!(status, 200);
    assert!(!list.to_string().contains(id), "{list}");
}

/// A job imports from each store, converts, and exports to each; no credential shows in
/// the API's answers or sits in clear in what the target stores.
async fn each_store(s: &Server, st: &Stores) {
    let run = unique("all");
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();

    // The same photo, under a different name, in each store.
    stores::put(&st.s3("rc-in"), &format!("{run}/s3.jpg"), photo.clone()).await;
    stores::put(&st.gcs("rc-in"), &format!("{run}/gcs.jpg"), photo.clone()).await;
    stores::put(&st.azure("rc-in"), &format!("{run}/azure.jpg"), photo.clone()).await;
    let sftp_in = format!("{}/{run}", st.sftp_home);
    std::fs::create_dir_all(&sftp_in).unwrap();
    std::fs::write(format!("{sftp_in}/sftp.jpg"), &photo).unwrap();

    let mut t = serde_json::Map::new();
    t.insert(
        "in-s3".into(),
        merged(
            json!({"operation": "import/s3", "key": format!("{run}/s3.jpg")}),
            st.s3_fields("rc-in"),
        ),
    );
    t.insert(
        "in-gcs".into(),
        merged(
            json!({"operation": "import/google-cloud-storage", "file": format!("{run}/gcs.jpg")}),
            st.gcs_fields("rc-in"),
        ),
    );
    t.insert(
        "in-azure".into(),
        merged(
            json!({"operation": "import/azure/blob", "blob": format!("{run}/azure.jpg")}),
            st.azure_fields("rc-in"),
        ),
    );
    t.insert(
        "in-sftp".into(),
        merged(
            json!({"operation": "import/sftp", "file_string": format!("{sftp_in}/sftp.jpg")}),
            st.sftp_password_fields(),
        ),
    );
    let converts = ["c-s3", "c-gcs", "c-azure", "c-sftp"];
    for (c, i) in converts.iter().zip(["in-s3", "in-gcs", "in-azure", "in-sftp"]) {
        t.insert(
            c.to_string(),
            json!({"operation": "convert", "input": i, "output_format": "png"}),
        );
    }
    let out = format!("{run}/out/");
    t.insert(
        "out-s3".into(),
        merged(
            json!({"operation": "export/s3", "input": converts, "key_prefix": out}),
            st.s3_fields("rc-out"),
        ),
    );
    t.insert(
        "out-gcs".into(),
        merged(
            json!({"operation": "export/google-cloud-storage", "input": converts, "file_prefix": out}),
            st.gcs_fields("rc-out"),
        ),
    );
    t.insert(
        "out-azure".into(),
        merged(
            json!({"operation": "export/azure/blob", "input": converts, "blob_prefix": out}),
            st.azure_fields("rc-out"),
        ),
    );
    let sftp_out = format!("{}/{run}-out/nested", st.sftp_home);
    t.insert(
        "out-sftp".into(),
        merged(
            json!({"operation": "export/sftp", "input": converts, "path": sftp_out}),
            st.sftp_key_fields(),
        ),
    );
    let created = s.create_job(json!({ "tasks": t })).await;
    // What the API shows of the job never includes a credential.
    let shown = created.to_string();
    for secret in [
        S3_SECRET,
        &st.azure_key,
        &st.sftp_password,
        "BEGIN PRIVATE KEY",
        "BEGIN OPENSSH",
    ] {
        assert!(!shown.contains(secret), "a secret shows in the job: {secret}");
    }
    assert_eq!(
        task(&created, "in-s3")["payload"]["secret_access_key"],
        "[redacted]",
        "{created}"
    );
    let job = s.wait_job(created["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job:#}");

    let names = ["azure.png", "gcs.png", "s3.png", "sftp.png"];
    let check = |what: &str, bytes: &[u8]| {
        let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
            .unwrap_or_else(|e| panic!("{what} is not a PNG: {e}"));
        assert_eq!((img.width(), img.height()), (640, 480), "{what}");
    };
    let expected: Vec<String> = names.iter().map(|n| format!("{out}{n}")).collect();
    for (label, store) in [
        ("s3", st.s3("rc-out")),
        ("gcs", st.gcs("rc-out")),
        ("azure", st.azure("rc-out")),
    ] {
        assert_eq!(stores::list(&store, &out).await, expected, "{label}");
        for key in &expected {
            check(&format!("{label}:{key}"), &stores::get(&store, key).await);
        }
    }
    for n in names {
        check(&format!("sftp:{n}"), &std::fs::read(format!("{sftp_out}/{n}")).unwrap());
    }
    // The export tasks list the files they sent.
    let exported: Vec<&str> = task(&job, "out-s3")["result"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(exported, ["s3.png", "gcs.png", "azure.png", "sftp.png"]);

    // Nothing secret in the API's answers or in the database, now that the job is over.
    let (_, tasks) = s
        .get(&format!("/v2/process/tasks?job_id={}", job["id"].as_str().unwrap()))
        .await;
    let db = stored_bytes(s).await;
    for secret in [
        S3_SECRET,
        st.azure_key.as_str(),
        st.sftp_password.as_str(),
        GCS_PRIVATE_KEY.lines().nth(1).unwrap(),
    ] {
        assert!(!job.to_string().contains(secret) && !tasks.to_string().contains(secret));
        assert!(
            !bytes_contain(&db, secret),
            "the store holds a secret in clear: {secret}"
        );
    }
    let key_line = st.sftp_key.lines().nth(1).unwrap();
    assert!(!bytes_contain(&db, key_line), "the store holds the SFTP private key");
}
