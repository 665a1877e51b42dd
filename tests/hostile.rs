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
