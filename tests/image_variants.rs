//! JPEG and PNG variants a photo pipeline meets (progressive, CMYK, arithmetic-coded,
//! 12-bit and truncated JPEGs; 16-bit, palette, transparent-palette and 16-bit RGBA
//! PNGs, and one with a 1.2 MB ancillary chunk (import/base64 takes 1.5 MB); a JPEG of
//! hundreds of scans), each through convert to PNG, JPEG and WebP, through thumbnail and
//! through compress: a correct output (decoded here, of the input's size, or
//! the thumbnail's) or a failed task with a clear code and message. Never a crash: the
//! server answers afterwards. The inputs are made here from the suite's own photo with
//! ImageMagick and jpegtran.

use runconvert_tests::*;
use serde_json::{json, Value};
use std::process::Command;

/// What a variant must give.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// A valid image of the kind: every conversion completes.
    Converts,
    /// Completes correctly, or fails with one of the codes of a file that is not right.
    EitherWay,
    /// A JPEG coding the decoders do not read: refused as such, saying what it is.
    Unsupported(&'static str),
    /// A file made to cost the decoder far more than its size: refused as invalid_file,
    /// the message naming what is wrong.
    Refused(&'static str),
}

fn run(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Where the variants are made (removed when the test ends).
fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rc-variants-{}", std::process::id()))
}

/// ImageMagick 6: `convert SRC ARGS... OUT` (in [`scratch`]), the file it writes.
fn magick(src: &std::path::Path, args: &[&str], out: &str) -> Vec<u8> {
    let dir = scratch();
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join(out.rsplit(':').next().unwrap());
    let mut all = vec![src.to_str().unwrap()];
    all.extend_from_slice(args);
    let target = format!(
        "{}{}",
        out.split_once(':').map_or(String::new(), |(k, _)| format!("{k}:")),
        dest.display()
    );
    all.push(&target);
    run("convert", &all);
    std::fs::read(dest).unwrap()
}

/// A progressive JPEG with its DC refinement scan (a bit a block, under a kilobyte)
/// repeated 600 times, 610 scans in all: libjpeg decodes it with warnings, a pass over
/// the whole image for every scan, so a small file costs far more than its size.
fn many_scans(photo: &std::path::Path) -> Vec<u8> {
    let jpeg = run("jpegtran", &["-progressive", photo.to_str().unwrap()]);
    let end = jpeg.len() - 2; // the EOI marker
    let starts: Vec<usize> = (0..end - 1).filter(|&i| jpeg[i..i + 2] == [0xff, 0xda]).collect();
    let refinement = starts
        .iter()
        .enumerate()
        .find_map(|(n, &at)| {
            // SOS: marker, length, Ns, Ns component selectors, then Ss, Se, Ah|Al.
            let ns = usize::from(jpeg[at + 4]);
            let (ss, ah) = (jpeg[at + 5 + 2 * ns], jpeg[at + 7 + 2 * ns] >> 4);
            (ss == 0 && ah != 0).then(|| &jpeg[at..*starts.get(n + 1).unwrap_or(&end)])
        })
        .expect("jpegtran's progressive script refines the DC coefficients");
    let mut out = jpeg[..end].to_vec();
    for _ in 0..600 {
        out.extend_from_slice(refinement);
    }
    out.extend_from_slice(&[0xff, 0xd9]);
    assert!(out.len() < 1_000_000, "{} bytes", out.len());
    out
}

/// The JPEG with its baseline frame header marked as 12-bit extended sequential (SOF1,
/// precision 12) and nothing else changed: a 12-bit JPEG as far as its header says.
fn twelve_bit(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = out.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline JPEG");
    out[sof + 1] = 0xc1;
    out[sof + 4] = 12;
    out
}

/// The PNG with a private ancillary chunk (`ruNx`) of `len` bytes after its IHDR.
fn with_big_chunk(png: &[u8], len: usize) -> Vec<u8> {
    let ihdr_end = 8 + 4 + 4 + 13 + 4;
    let mut chunk = b"ruNx".to_vec();
    chunk.extend((0..len).map(|i| (i * 31 % 251) as u8));
    let mut crc = flate2::Crc::new();
    crc.update(&chunk);
    let mut out = png[..ihdr_end].to_vec();
    out.extend((len as u32).to_be_bytes());
    out.extend(&chunk);
    out.extend(crc.sum().to_be_bytes());
    out.extend(&png[ihdr_end..]);
    out
}

/// (what it is, its file name, its bytes, its size, what it must give)
type Variant = (&'static str, &'static str, Vec<u8>, (u32, u32), Expect);

/// An operation's task, its output's size from the input's, and the one input type it
/// takes if it does not take every image.
type Operation = (Value, fn((u32, u32)) -> (u32, u32), Option<&'static str>);

fn variants() -> Vec<Variant> {
    use Expect::*;
    let photo = corpus_file("images/photo_640x480.jpg");
    let alpha = corpus_file("images/alpha_2000x2000.png");
    let jpeg = std::fs::read(&photo).unwrap();
    let small_alpha = magick(&alpha, &["-resize", "200x200"], "png32:alpha.png");
    let alpha_path = scratch().join("alpha.png");
    vec![
        (
            "progressive JPEG",
            "p.jpg",
            magick(&photo, &["-interlace", "Plane"], "progressive.jpg"),
            (640, 480),
            Converts,
        ),
        (
            "CMYK JPEG",
            "c.jpg",
            magick(&photo, &["-colorspace", "CMYK"], "cmyk.jpg"),
            (640, 480),
            Converts,
        ),
        (
            "arithmetic-coded JPEG",
            "a.jpg",
            run("jpegtran", &["-arithmetic", photo.to_str().unwrap()]),
            (640, 480),
            Unsupported("arithmetic-coded"),
        ),
        (
            "JPEG of 610 scans",
            "m.jpg",
            many_scans(&photo),
            (640, 480),
            Refused("610 scans"),
        ),
        (
            "12-bit JPEG",
            "t.jpg",
            twelve_bit(&jpeg),
            (640, 480),
            Unsupported("a 12-bit JPEG"),
        ),
        (
            "truncated JPEG (half of it)",
            "h.jpg",
            jpeg[..jpeg.len() / 2].to_vec(),
            (640, 480),
            EitherWay,
        ),
        (
            "16-bit RGB PNG",
            "s.png",
            magick(&photo, &["-depth", "16"], "png48:rgb16.png"),
            (640, 480),
            Converts,
        ),
        (
            "palette PNG",
            "i.png",
            magick(&photo, &["-colors", "64"], "png8:palette.png"),
            (640, 480),
            Converts,
        ),
        (
            "palette PNG with transparency (tRNS)",
            "r.png",
            magick(&alpha_path, &[], "png8:trns.png"),
            (200, 200),
            Converts,
        ),
        (
            "16-bit RGBA PNG",
            "d.png",
            magick(&alpha_path, &["-depth", "16"], "png64:rgba16.png"),
            (200, 200),
            Converts,
        ),
        (
            "PNG with a 1.2 MB ancillary chunk",
            "b.png",
            with_big_chunk(&small_alpha, 1_200_000),
            (200, 200),
            Converts,
        ),
    ]
}

/// The operations each variant goes through: (task, expected size from the input's).
fn operations() -> Vec<Operation> {
    vec![
        (json!({"operation": "convert", "output_format": "png"}), |s| s, None),
        (json!({"operation": "convert", "output_format": "jpg"}), |s| s, None),
        (json!({"operation": "convert", "output_format": "webp"}), |s| s, None),
        (
            json!({"operation": "thumbnail", "output_format": "png", "options": {"width": 100}}),
            |(w, h)| (100, (h * 100 + w / 2) / w),
            None,
        ),
        (json!({"operation": "compress"}), |s| s, Some("jpg")),
        (
            json!({"operation": "compress", "options": {"profile": "lossy"}}),
            |s| s,
            Some("png"),
        ),
    ]
}

#[tokio::test]
async fn jpeg_and_png_variants_convert_or_fail_clearly() {
    let s = Server::start(&[]).await;
    let mut wrong = Vec::new();
    let mut converted = 0;
    for (name, filename, bytes, size, expect) in variants() {
        for (op, expected_size, only) in operations() {
            if only.is_some_and(|ext| !filename.ends_with(ext)) {
                continue;
            }
            let what = format!("{name} → {} {}", op["operation"], op["output_format"]);
            let mut op_task = op.clone();
            op_task["input"] = json!("in");
            let job = s
                .run_job(json!({"tasks": {
                    "in": {"operation": "import/base64", "file": b64(&bytes), "filename": filename},
                    "op": op_task,
                    "out": {"operation": "export/url", "input": "op"},
                }}))
                .await;
            let t = task(&job, "op");
            match (t["status"].as_str(), expect) {
                (Some("finished"), Expect::Converts | Expect::EitherWay) => {
                    let url = task(&job, "out")["result"]["files"][0]["url"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    let (status, out) = s.download(&url).await;
                    let decoded = image::load_from_memory(&out);
                    match decoded {
                        Ok(img) if status == 200 && (img.width(), img.height()) == expected_size(size) => {
                            converted += 1
                        }
                        Ok(img) => wrong.push(format!("{what}: {status}, {}x{}", img.width(), img.height())),
                        Err(e) => wrong.push(format!("{what}: the output does not decode: {e}")),
                    }
                }
                (Some("failed"), Expect::EitherWay) => {
                    let code = t["code"].as_str().unwrap_or_default();
                    let msg = t["message"].as_str().unwrap_or_default();
                    eprintln!("{what}: failed, {code}: {msg}");
                    if !["invalid_file", "unsupported_conversion", "limit_exceeded"].contains(&code) || msg.len() < 10 {
                        wrong.push(format!("{what}: failed unclearly: {code} {msg:?}"));
                    }
                }
                (Some("failed"), Expect::Unsupported(what_it_is)) => {
                    let msg = t["message"].as_str().unwrap_or_default();
                    if t["code"] != "unsupported_conversion" || !msg.contains(what_it_is) {
                        wrong.push(format!("{what}: {} {msg:?}", t["code"]));
                    }
                }
                (Some("failed"), Expect::Refused(needle)) => {
                    let msg = t["message"].as_str().unwrap_or_default();
                    if t["code"] != "invalid_file" || !msg.contains(needle) {
                        wrong.push(format!("{what}: {} {msg:?}", t["code"]));
                    }
                }
                (other, _) => wrong.push(format!("{what}: {other:?} {} {}", t["code"], t["message"])),
            }
        }
    }
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
    // The valid variants (7 of them, 4 operations each, and compress of each) all came out right.
    assert!(converted >= 35, "only {converted} conversions came out");
    let _ = std::fs::remove_dir_all(scratch());
    let (status, _) = s.get("/v2/process/jobs").await;
    assert_eq!(status, 200);
}
