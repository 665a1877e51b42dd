//! Hostile files and requests, table-driven: every case ends in a clear error (a 4xx
//! naming what is wrong, or a failed task with a code and a message), and the server is
//! alive and serving afterwards.

use runconvert_tests::*;
use serde_json::{json, Value};

/// What a case must end in.
enum Expect {
    /// The request is refused: status and error code.
    Http(u16, &'static str),
    /// The job is accepted and the named task fails with this code.
    Task(&'static str, &'static str),
    /// Either a 400 or a failed task with this code (when both are right).
    Refused(&'static str),
}

struct Case {
    name: &'static str,
    body: Value,
    expect: Expect,
}

/// A job that imports `bytes` as `filename` and runs `op` on it.
fn file_job(bytes: &[u8], filename: &str, op: Value) -> Value {
    let mut op = op;
    op["input"] = json!("in");
    json!({"tasks": {
        "in": {"operation": "import/base64", "file": b64(bytes), "filename": filename},
        "op": op,
    }})
}

fn convert(to: &str) -> Value {
    json!({"operation": "convert", "output_format": to})
}

/// A PNG whose header claims `w`×`h` (valid signature and IHDR CRC, no image data).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

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

/// A GIF whose logical screen is `w`×`h`.
fn gif_header(w: u16, h: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(b",\x00\x00\x00\x00");
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&[0, 2, 2, 0x44, 0x01, 0, b';']);
    out
}

/// A BMP header claiming `w`×`h` at 24 bits.
fn bmp_header(w: i32, h: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&(54u32).to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out
}

/// A zip whose one entry inflates to `size` zero bytes (a small file, a big promise).
/// An MP4 with a file type box and a movie header, and no track at all.
fn streamless_mp4() -> Vec<u8> {
    let mut ftyp = Vec::new();
    ftyp.extend_from_slice(&24u32.to_be_bytes());
    ftyp.extend_from_slice(b"ftypisom\0\0\x02\0isommp41");
    let mut mvhd = vec![0u8; 100];
    mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes()); // timescale
    mvhd[20..24].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    mvhd[24..26].copy_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    for (i, v) in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000]
        .iter()
        .enumerate()
    {
        mvhd[36 + i * 4..40 + i * 4].copy_from_slice(&v.to_be_bytes()); // identity matrix
    }
    mvhd[96..100].copy_from_slice(&1u32.to_be_bytes()); // next track id
    let mut out = ftyp;
    out.extend_from_slice(&(8 + 8 + 100u32).to_be_bytes());
    out.extend_from_slice(b"moov");
    out.extend_from_slice(&(8 + 100u32).to_be_bytes());
    out.extend_from_slice(b"mvhd");
    out.extend_from_slice(&mvhd);
    out
}

fn zip_bomb(name: &str, size: usize) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file(name, opts).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..size / chunk.len() {
        z.write_all(&chunk).unwrap();
    }
    z.finish().unwrap();
    buf.into_inner()
}

fn cases() -> Vec<Case> {
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    // The smallest PDF of the corpus (a request body is capped at 4 MiB).
    let pdf = std::fs::read(corpus_file("pdf/text_20p.pdf")).unwrap();
    let elf = std::fs::read("/bin/true").unwrap();
    let import = |url: &str| json!({"tasks": {"i": {"operation": "import/url", "url": url}}});
    let c = |name, body, expect| Case { name, body, expect };
    use Expect::*;
    vec![
        c(
            "empty file",
            file_job(b"", "empty.jpg", convert("png")),
            Task("op", "invalid_file"),
        ),
        c(
            "random bytes as jpg",
            file_job(&[0x5a; 4096], "noise.jpg", convert("png")),
            Task("op", "invalid_file"),
        ),
        c(
            "truncated png signature",
            file_job(b"\x89PNG\r\n", "cut.png", convert("jpg")),
            Task("op", "invalid_file"),
        ),
        c(
            "jpeg with a broken header",
            file_job(&[&photo[..20], &[0xff; 200][..]].concat(), "broken.jpg", convert("png")),
            Task("op", "invalid_file"),
        ),
        // A PNG header alone (no image data) is not a PNG yet: refused before any decoding.
        c(
            "png header claiming 100000x100000",
            file_job(&png_header(100_000, 100_000), "bomb.png", convert("jpg")),
            Task("op", "invalid_file"),
        ),
        c(
            "png header claiming 2^31 wide",
            file_job(&png_header(0x7fff_ffff, 1), "wide.png", convert("jpg")),
            Refused("invalid_file"),
        ),
        c(
            "gif screen 65535x65535",
            file_job(&gif_header(65535, 65535), "bomb.gif", convert("png")),
            Task("op", "limit_exceeded"),
        ),
        c(
            "bmp header 60000x60000",
            file_job(&bmp_header(60_000, 60_000), "bomb.bmp", convert("png")),
            Task("op", "limit_exceeded"),
        ),
        c(
            "bmp negative width",
            file_job(&bmp_header(-5, 10), "neg.bmp", convert("png")),
            Task("op", "invalid_file"),
        ),
        c(
            "thumbnail of a pixel bomb",
            file_job(
                &gif_header(60_000, 60_000),
                "bomb.gif",
                json!({"operation": "thumbnail", "output_format": "png"}),
            ),
            Task("op", "limit_exceeded"),
        ),
        c(
            "text named .pdf",
            file_job(b"this is not a pdf", "fake.pdf", convert("png")),
            Task("op", "invalid_file"),
        ),
        c(
            "pdf header only",
            file_job(b"%PDF-1.7\n", "stub.pdf", convert("png")),
            Task("op", "invalid_file"),
        ),
        c(
            "pdf cut in half",
            file_job(
                &pdf[..pdf.len() / 2],
                "half.pdf",
                json!({"operation": "merge", "output_format": "pdf"}),
            ),
            Task("op", "invalid_file"),
        ),
        c(
            "pdf named .png",
            file_job(&pdf, "doc.png", convert("jpg")),
            Task("op", "invalid_file"),
        ),
        c(
            "executable named .docx",
            file_job(&elf, "run.docx", convert("pdf")),
            Task("op", "invalid_file"),
        ),
        c(
            "html named .jpg",
            file_job(b"<html><body>hi</body></html>", "page.jpg", convert("png")),
            Task("op", "invalid_file"),
        ),
        c(
            "zip bomb named .docx",
            file_job(&zip_bomb("word/document.xml", 600 << 20), "bomb.docx", convert("pdf")),
            Task("op", "limit_exceeded"),
        ),
        c(
            "hls playlist named .mp4",
            file_job(
                b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
                "list.mp4",
                convert("webm"),
            ),
            Task("op", "invalid_file"),
        ),
        c(
            "mp4 with no movie box",
            file_job(
                &streamless_mp4()[..24]
                    .iter()
                    .copied()
                    .chain([0x5a; 4096])
                    .collect::<Vec<u8>>(),
                "broken.mp4",
                convert("webm"),
            ),
            Task("op", "invalid_file"),
        ),
        c(
            "mp4 with no streams",
            file_job(&streamless_mp4(), "empty.mp4", convert("webm")),
            Task("op", "invalid_file"),
        ),
        c(
            "compress a text file",
            file_job(b"plain text", "a.txt", json!({"operation": "compress"})),
            Refused("unsupported_conversion"),
        ),
        c(
            "watermark with no text or image",
            file_job(&photo, "a.jpg", json!({"operation": "watermark"})),
            Refused("invalid_data"),
        ),
        c(
            "filename with a path",
            file_job(&photo, "../../etc/passwd", convert("png")),
            Http(400, "invalid_data"),
        ),
        c(
            "filename with a control character",
            file_job(&photo, "a\u{7}b.jpg", convert("png")),
            Http(400, "invalid_data"),
        ),
        c(
            "filename of 300 bytes",
            file_job(&photo, &format!("{}.jpg", "a".repeat(300)), convert("png")),
            Http(400, "invalid_data"),
        ),
        c(
            "base64 over the cap",
            json!({"tasks": {"i": {"operation": "import/base64", "file": "A".repeat(2_100_000), "filename": "a.bin"}}}),
            Http(400, "invalid_data"),
        ),
        c(
            "invalid base64",
            json!({"tasks": {"i": {"operation": "import/base64", "file": "!!!!", "filename": "a.txt"}}}),
            Task("i", "invalid_file"),
        ),
        c(
            "unknown operation",
            json!({"tasks": {"i": {"operation": "import/ftp", "url": "ftp://x"}}}),
            Http(400, "invalid_data"),
        ),
        c(
            "unknown field",
            json!({"tasks": {"i": {"operation": "import/url", "url": "https://e.com/a.jpg", "shell": "rm -rf /"}}}),
            Http(400, "invalid_data"),
        ),
        c(
            "a task that is its own input",
            json!({"tasks": {"a": {"operation": "convert", "input": "a", "output_format": "png"}}}),
            Http(400, "invalid_data"),
        ),
        c(
            "a cycle of two",
            json!({"tasks": {"a": {"operation": "convert", "input": "b", "output_format": "png"}, "b": {"operation": "convert", "input": "a", "output_format": "jpg"}}}),
            Http(400, "invalid_data"),
        ),
        c(
            "negative width",
            file_job(
                &photo,
                "a.jpg",
                json!({"operation": "convert", "output_format": "png", "options": {"width": -5}}),
            ),
            Http(400, "invalid_data"),
        ),
        c(
            "width as text",
            file_job(
                &photo,
                "a.jpg",
                json!({"operation": "convert", "output_format": "png", "options": {"width": "wide"}}),
            ),
            Http(400, "invalid_data"),
        ),
        c(
            "ocr language with a path",
            file_job(
                &photo,
                "a.jpg",
                json!({"operation": "ocr", "language": "../../etc/passwd"}),
            ),
            Refused("invalid_data"),
        ),
        c("file URL", import("file:///etc/passwd"), Http(400, "invalid_data")),
        c(
            "metadata address",
            import("http://169.254.169.254/latest/meta-data/"),
            Task("i", "forbidden_address"),
        ),
        c(
            "javascript URL to capture",
            json!({"tasks": {"c": {"operation": "capture_website", "url": "javascript:alert(1)", "output_format": "png"}}}),
            Http(400, "invalid_data"),
        ),
        c(
            "tasks is a list",
            json!({"tasks": [1, 2, 3]}),
            Http(400, "invalid_data"),
        ),
        c("body is a string", json!("tasks"), Http(400, "invalid_data")),
    ]
}

#[tokio::test]
async fn every_hostile_file_and_request_ends_in_a_clear_error() {
    let s = Server::start(&[]).await;
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let (status, body) = s.post("/v2/process/jobs", &case.body).await;
        let outcome = if status == 201 {
            let job = s.wait_job(body["id"].as_str().unwrap()).await;
            let failed: Vec<(String, String, String)> = job["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["status"] == "failed" && t["code"] != "input_task_failed")
                .map(|t| {
                    (
                        t["name"].as_str().unwrap_or_default().to_string(),
                        t["code"].as_str().unwrap_or_default().to_string(),
                        t["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            match failed.first() {
                Some((task, code, msg)) => {
                    if msg.len() < 10 {
                        wrong.push(format!("{}: message too thin: {msg:?}", case.name));
                    }
                    // No server paths or memory addresses in what a user reads.
                    if msg.contains(&*s.data_dir.to_string_lossy()) || msg.contains("/work/") || msg.contains(" @ 0x") {
                        wrong.push(format!(
                            "{}: the message shows the server's insides: {msg:?}",
                            case.name
                        ));
                    }
                    Some((task.clone(), code.clone()))
                }
                None => {
                    wrong.push(format!(
                        "{}: the job {} without a failed task",
                        case.name, job["status"]
                    ));
                    continue;
                }
            }
        } else {
            if body["message"].as_str().is_none_or(|m| m.len() < 10) {
                wrong.push(format!("{}: {status} without a message: {body}", case.name));
            }
            None
        };
        let ok = match (&case.expect, &outcome) {
            (Expect::Http(st, code), None) => status == *st && body["code"] == *code,
            (Expect::Task(task, code), Some((t, c))) => t == task && c == code,
            (Expect::Refused(code), None) => status == 400 && body["code"] == "invalid_data" || body["code"] == *code,
            (Expect::Refused(code), Some((_, c))) => c == code,
            _ => false,
        };
        if !ok {
            wrong.push(format!("{}: got {status} {body} / {outcome:?}", case.name));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    // Still alive, still serving.
    let (status, _) = s.get("/v2/process/jobs").await;
    assert_eq!(status, 200);
    assert!(std::path::Path::new(&format!("/proc/{}", s.pid())).exists());
}

#[tokio::test]
async fn a_task_name_given_twice_is_refused() {
    let s = Server::start(&[]).await;
    // Raw JSON: a map type would already have dropped the first "c".
    let body = r#"{"tasks": {
        "in": {"operation": "import/base64", "file": "aGVsbG8=", "filename": "a.txt"},
        "c": {"operation": "archive", "input": "in", "output_format": "zip"},
        "c": {"operation": "archive", "input": "in", "output_format": "tar"}
    }}"#;
    let r = s
        .http
        .post(s.url("/v2/process/jobs"))
        .bearer_auth(&s.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, err) = decode(r).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "invalid_data");
    assert!(
        err["errors"]["tasks.c"][0].as_str().unwrap().contains("more than once"),
        "{err}"
    );
    let (_, jobs) = s.get("/v2/process/jobs").await;
    assert_eq!(jobs["meta"]["count"], 0, "nothing was stored: {jobs}");
    // Control: the same job with distinct names is accepted.
    let (status, _) = s
        .post(
            "/v2/process/jobs",
            &serde_json::from_str(&body.replacen(
                "\"c\": {\"operation\": \"archive\", \"input\": \"in\", \"output_format\": \"tar\"}",
                "\"d\": {\"operation\": \"archive\", \"input\": \"in\", \"output_format\": \"tar\"}",
                1,
            ))
            .unwrap(),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn result_names_read_as_they_are() {
    let s = Server::start(&[]).await;
    let job = s
        .run_job(json!({"tasks": {
            "bidi": {"operation": "import/base64", "file": "aGVsbG8=", "filename": "ab\u{202e}gpj.exe"},
            "zw": {"operation": "import/base64", "file": "aGVsbG8=", "filename": "in\u{200b}voice.txt\u{feff}"},
            "dev": {"operation": "import/base64", "file": "aGVsbG8=", "filename": "CON.txt"},
            "dots": {"operation": "import/base64", "file": "aGVsbG8=", "filename": "notes.txt. . "},
            "zip": {"operation": "archive", "input": ["bidi", "zw", "dev", "dots"], "output_format": "zip"},
            "out": {"operation": "export/url", "input": ["bidi", "zw", "dev", "dots", "zip"]},
        }}))
        .await;
    assert_eq!(job["status"], "completed", "{job}");
    let names: Vec<String> = urls(task(&job, "out")).into_iter().map(|(n, _)| n).collect();
    for want in ["abgpj.exe", "invoice.txt", "_CON.txt", "notes.txt"] {
        assert!(names.iter().any(|n| n == want), "{want} not among {names:?}");
    }
    let (_, zip_url) = urls(task(&job, "out"))
        .into_iter()
        .find(|(n, _)| n.ends_with(".zip"))
        .unwrap();
    let (_, bytes) = s.download(&zip_url).await;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut entries: Vec<String> = (0..z.len())
        .map(|i| z.by_index(i).unwrap().name().unwrap().to_string())
        .collect();
    entries.sort();
    assert_eq!(entries, ["_CON.txt", "abgpj.exe", "invoice.txt", "notes.txt"]);
}
