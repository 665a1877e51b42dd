//! The tool-backed engines end to end through the HTTP API: OCR (Tesseract), office
//! documents (LibreOffice), audio and video (FFmpeg), and that stopping a task stops
//! its programs.

use runconvert_tests::serde_json::json;
use runconvert_tests::*;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Text of a PDF, by Poppler's pdftotext.
fn pdf_text(bytes: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("rc-text-{}-{}.pdf", std::process::id(), bytes.len()));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("pdftotext")
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils)");
    let _ = std::fs::remove_file(&path);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What ffprobe says of a media file: (format names, duration, codec names).
fn probe(bytes: &[u8], ext: &str) -> (String, f64, String) {
    let path = std::env::temp_dir().join(format!("rc-probe-{}-{}.{ext}", std::process::id(), bytes.len()));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=format_name,duration:stream=codec_name",
            "-of",
            "default=nw=1",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let get = |k: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(k))
            .collect::<Vec<_>>()
            .join(",")
    };
    (
        get("format_name="),
        get("duration=").parse().unwrap_or(0.0),
        get("codec_name="),
    )
}

/// A Word document whose one part unpacks to 600 MB of zeros (a zip bomb).
fn docx_bomb() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        z.start_file("word/document.xml", opts).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..600 {
            z.write_all(&zeros).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

#[tokio::test]
async fn ocr_recovers_the_words_as_text_and_searchable_pdf() {
    let (fx, s) = server_with_fixture().await;
    let expected = std::fs::read_to_string(corpus_file("images/ocr_text.expected.txt")).unwrap();
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("scan", import(&fx, "images/ocr_text_300dpi.png")),
            ("txt", json!({"operation": "ocr", "input": "scan", "language": "eng"})),
            (
                "pdf",
                json!({"operation": "ocr", "input": "scan", "output_format": "pdf"}),
            ),
            (
                "klingon",
                json!({"operation": "ocr", "input": "scan", "language": "tlh", "ignore_error": true}),
            ),
        ]),
        &["txt", "pdf"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let text = String::from_utf8(file(&files, "ocr_text_300dpi.txt").to_vec()).unwrap();
    assert_eq!(words(&text), words(&expected), "OCR text:\n{text}");
    let pdf = file(&files, "ocr_text_300dpi.pdf");
    assert_eq!(pdf_pages(pdf), 1);
    let searchable = pdf_text(pdf);
    for w in ["quick", "Invoice", "1,284.50"] {
        assert!(searchable.contains(w), "the PDF's text layer has {w:?}: {searchable}");
    }
    let k = task(&job, "klingon");
    assert_eq!(
        (k["status"].as_str(), k["code"].as_str()),
        (Some("failed"), Some("invalid_data")),
        "{k}"
    );
    assert!(k["message"].as_str().unwrap().contains("not installed"), "{k}");
}

#[tokio::test]
async fn a_docx_made_here_becomes_a_pdf_with_its_text_and_a_zip_bomb_is_refused() {
    let s = Server::start(&[]).await;
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("doc", json!({"operation": "import/base64", "file": b64(&docx("Hello from a RunConvert test document")), "filename": "letter.docx"})),
            ("pdf", json!({"operation": "convert", "input": "doc", "output_format": "pdf"})),
            ("odt", json!({"operation": "convert", "input": "doc", "output_format": "odt"})),
        ]),
        &["pdf", "odt"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let pdf = file(&files, "letter.pdf");
    assert_eq!(pdf_pages(pdf), 1);
    assert!(pdf_text(pdf).contains("Hello from a RunConvert test document"));
    let odt = file(&files, "letter.odt");
    assert!(odt.starts_with(b"PK") && odt.windows(39).any(|w| w == b"application/vnd.oasis.opendocument.text"));

    // LibreOffice stayed up for the next document (warm), and dies with the server.
    let warm = format!("name=runconvert-{}-", s.pid());
    assert!(!processes_with(&warm).is_empty(), "a warm LibreOffice runs");
    let mut s = s;

    let bomb = docx_bomb();
    assert!(bomb.len() < 1_500_000, "the bomb is small: {}", bomb.len());
    let (job, _) = run_and_download(
        &s,
        tasks(&[
            (
                "doc",
                json!({"operation": "import/base64", "file": b64(&bomb), "filename": "bomb.docx"}),
            ),
            (
                "pdf",
                json!({"operation": "convert", "input": "doc", "output_format": "pdf"}),
            ),
        ]),
        &["pdf"],
    )
    .await;
    let t = task(&job, "pdf");
    assert_eq!(t["code"], "limit_exceeded", "{t}");
    assert!(t["message"].as_str().unwrap().contains("zip bomb"), "{t}");

    s.kill();
    let mut left = processes_with(&warm);
    for _ in 0..40 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = processes_with(&warm);
    }
    assert!(left.is_empty(), "LibreOffice outlived the server: {left:?}");
}

#[tokio::test]
async fn video_becomes_webm_mp3_a_trimmed_clip_and_a_thumbnail() {
    let (fx, s) = server_with_fixture().await;
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("video", import(&fx, "video/testsrc_10s_720p.mp4")),
            ("webm", json!({"operation": "convert", "input": "video", "output_format": "webm", "options": {"width": 320}})),
            ("mp3", json!({"operation": "convert", "input": "video", "output_format": "mp3", "options": {"audio_bitrate": "96k"}})),
            ("clip", json!({"operation": "convert", "input": "video", "output_format": "mp4", "filename": "clip.mp4", "options": {"trim_start": 2, "trim_end": 5, "height": 180}})),
            ("thumb", json!({"operation": "thumbnail", "input": "video", "output_format": "jpg", "options": {"width": 320, "timestamp": 3}})),
        ]),
        &["webm", "mp3", "clip", "thumb"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    for t in ["webm", "mp3", "clip"] {
        assert_eq!(task(&job, t)["percent"], 100);
    }
    let (fmt, dur, codecs) = probe(file(&files, "testsrc_10s_720p.webm"), "webm");
    assert!(fmt.contains("webm") && codecs.contains("vp9"), "{fmt} {codecs}");
    assert!((dur - 10.0).abs() < 0.5, "{dur}");
    let (fmt, dur, codecs) = probe(file(&files, "testsrc_10s_720p.mp3"), "mp3");
    assert!(
        fmt.contains("mp3") && codecs.contains("mp3") && !codecs.contains("h264"),
        "{fmt} {codecs}"
    );
    assert!((dur - 10.0).abs() < 0.5, "{dur}");
    let (_, dur, codecs) = probe(file(&files, "clip.mp4"), "mp4");
    assert!((dur - 3.0).abs() < 0.5 && codecs.contains("h264"), "{dur} {codecs}");
    let thumb = image::load_from_memory(file(&files, "testsrc_10s_720p.jpg")).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (320, 180));
}

#[tokio::test]
async fn corrupt_media_fails_clearly() {
    let (fx, s) = server_with_fixture().await;
    let video = std::fs::read(corpus_file("video/testsrc_10s_720p.mp4")).unwrap();
    let mut broken = video[..4096].to_vec();
    broken.extend(std::iter::repeat_n(0u8, 8192));
    let playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n";
    let (job, _) = run_and_download(
        &s,
        tasks(&[
            (
                "bad",
                json!({"operation": "import/base64", "file": b64(&broken), "filename": "broken.mp4"}),
            ),
            (
                "hls",
                json!({"operation": "import/base64", "file": b64(playlist), "filename": "movie.mp4"}),
            ),
            ("img", import(&fx, "images/photo_640x480.jpg")),
            (
                "c1",
                json!({"operation": "convert", "input": "bad", "output_format": "webm"}),
            ),
            (
                "c2",
                json!({"operation": "convert", "input": "hls", "output_format": "webm"}),
            ),
        ]),
        &["img"],
    )
    .await;
    let c1 = task(&job, "c1");
    assert_eq!(c1["status"], "failed");
    assert!(
        matches!(c1["code"].as_str(), Some("invalid_file" | "processing_failed")),
        "{c1}"
    );
    let c2 = task(&job, "c2");
    assert_eq!(c2["code"], "invalid_file", "{c2}");
    assert!(c2["message"].as_str().unwrap().contains("movie.mp4"), "{c2}");
}

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && !cmd.contains("runconvert serve") {
                found.push(cmd);
            }
        }
    }
    found
}

#[tokio::test]
async fn deleting_a_running_job_leaves_no_process_behind() {
    let (fx, s) = server_with_fixture().await;
    // A slow encode: the 10 s clip upscaled, at 60 fps, losslessly.
    let job = s
        .create_job(json!({"tasks": {
            "video": import(&fx, "video/testsrc_10s_720p.mp4"),
            "slow": {"operation": "convert", "input": "video", "output_format": "mkv", "options": {"width": 3840, "fps": 60, "crf": 0}}
        }}))
        .await;
    let id = job["id"].as_str().unwrap();
    let work = s.data_dir.join("work").to_string_lossy().to_string();
    let mut seen = false;
    for _ in 0..300 {
        if processes_with(&work).iter().any(|c| c.contains("ffmpeg")) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "ffmpeg started");
    let key = s.key.clone();
    let (status, _) = s.delete_as(&key, &format!("/v2/process/jobs/{id}")).await;
    assert_eq!(status, 204);
    let mut left = processes_with(&work);
    for _ in 0..40 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = processes_with(&work);
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
    // The server is fine.
    let (status, _) = s.get("/v2/process/jobs").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_registry_lists_the_engines_of_this_host() {
    let s = Server::start(&[]).await;
    let (_, ops) = s
        .get_as("", "/v2/core/operations?input_format=docx&output_format=pdf")
        .await;
    assert_eq!(ops["data"][0]["engine"], "libreoffice", "{ops}");
    assert!(
        ops["data"][0]["engine_version"].as_str().unwrap().starts_with('7'),
        "{ops}"
    );
    let (_, ops) = s
        .get_as("", "/v2/core/operations?input_format=mp4&output_format=webm")
        .await;
    assert_eq!(ops["data"][0]["engine"], "ffmpeg");
    let (_, ops) = s
        .get_as(
            "",
            "/v2/core/operations?operation=ocr&input_format=png&output_format=txt",
        )
        .await;
    assert_eq!(ops["data"][0]["engine"], "tesseract");
    let names = format_names(&s).await;
    for f in ["mp4", "webm", "mp3", "docx", "xlsx", "pptx", "txt"] {
        assert!(names.iter().any(|n| n == f), "{f} missing from {names:?}");
    }
}

#[tokio::test]
async fn capture_website_as_png_and_pdf_and_a_page_that_never_loads_times_out() {
    let (fx, s) = server_with_fixture().await;
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("shot", json!({"operation": "capture_website", "url": fx.url("/page"), "output_format": "png", "filename": "shot.png",
                "options": {"viewport_width": 800, "viewport_height": 600}})),
            ("print", json!({"operation": "capture_website", "url": fx.url("/page"), "output_format": "pdf", "filename": "print.pdf"})),
            ("hang", json!({"operation": "capture_website", "url": fx.url("/hang"), "output_format": "png",
                "options": {"load_timeout": 2}, "ignore_error": true})),
        ]),
        &["shot", "print"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let shot = image::load_from_memory(file(&files, "shot.png")).unwrap().to_rgb8();
    assert_eq!(shot.dimensions(), (800, 600));
    assert_eq!(
        shot.get_pixel(100, 50).0,
        [255, 0, 0],
        "the red box is drawn at the top left"
    );
    assert_eq!(shot.get_pixel(600, 50).0, [255, 255, 255], "white beside it");
    let pdf = file(&files, "print.pdf");
    assert_eq!(pdf_pages(pdf), 1);
    assert!(pdf_text(pdf).contains("Captured by RunConvert"));
    let hang = task(&job, "hang");
    assert_eq!(
        (hang["status"].as_str(), hang["code"].as_str()),
        (Some("failed"), Some("timeout")),
        "{hang}"
    );
    assert!(
        hang["message"].as_str().unwrap().contains("did not finish loading"),
        "{hang}"
    );
    // Chromium is gone once the tasks end.
    let work = s.data_dir.join("work").to_string_lossy().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(processes_with(&work).is_empty(), "{:?}", processes_with(&work));

    // Without private networks the loopback page is refused before Chromium loads it.
    let strict = Server::start(&[]).await;
    let (job, _) = run_and_download(
        &strict,
        tasks(&[(
            "shot",
            json!({"operation": "capture_website", "url": fx.url("/page"), "output_format": "png"}),
        )]),
        &["shot"],
    )
    .await;
    let t = task(&job, "shot");
    assert_eq!(t["code"], "forbidden_address", "{t}");
}

#[tokio::test]
async fn html_and_markdown_become_pdf_through_chromium() {
    let s = Server::start(&[]).await;
    let md = "# Quarterly report\n\nRevenue grew by **12 %** in the quarter.\n\n- one\n- two\n";
    let html = "<!doctype html><html><body><h1>Hello HTML</h1><img src='http://127.0.0.1:9/x.png'><p>Rendered by Chromium</p></body></html>";
    let (job, files) = run_and_download(
        &s,
        tasks(&[
            ("md", json!({"operation": "import/base64", "file": b64(md.as_bytes()), "filename": "report.md"})),
            ("html", json!({"operation": "import/base64", "file": b64(html.as_bytes()), "filename": "page.html"})),
            ("md-pdf", json!({"operation": "convert", "input": "md", "output_format": "pdf"})),
            ("html-pdf", json!({"operation": "convert", "input": "html", "output_format": "pdf", "options": {"page_size": "Letter"}})),
        ]),
        &["md-pdf", "html-pdf"],
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let text = pdf_text(file(&files, "report.pdf"));
    assert!(
        text.contains("Quarterly report") && text.contains("Revenue grew by 12 %"),
        "{text}"
    );
    let page = file(&files, "page.pdf");
    assert!(pdf_text(page).contains("Rendered by Chromium"));
    // Letter paper: 612 × 792 points.
    let doc = lopdf::Document::load_mem(page).unwrap();
    let mb: Vec<f32> = doc
        .get_dictionary(doc.get_pages()[&1])
        .unwrap()
        .get(b"MediaBox")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_float().unwrap())
        .collect();
    assert!((mb[2] - 612.0).abs() < 1.0 && (mb[3] - 792.0).abs() < 1.0, "{mb:?}");
}
