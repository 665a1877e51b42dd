//! One black-box suite, two targets: the embedded server (`runconvert serve`) and the
//! local AWS stack (infra/local/stack.py: every function of template.yaml as its own
//! Lambda process, moto for DynamoDB, S3, SQS and Step Functions). Each target runs the
//! spec's example jobs, one job per operation with its output checked (decoded images,
//! page counts, text, video containers), every import and export against the storage
//! servers of tests/services.sh (moto, Azurite, the GCS emulator, sshd), a failing task,
//! and one user's job hidden from another. Only the way a target starts differs.

use runconvert_tests::stores::{self, Stores, GCS_PRIVATE_KEY, S3_SECRET};
use runconvert_tests::*;
use serde_json::json;

async fn embedded(st: &Stores) -> Server {
    let args = st.server_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&refs).await
}

async fn aws(st: &Stores) -> Server {
    let azure = format!("AzureBlobEndpoint={}", st.azure_endpoint);
    let gcs = format!("GcsEndpoint={}", st.gcs_emulator);
    Server::local_stack(&["--allow-private-networks", "--parameter", &azure, "--parameter", &gcs]).await
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
