//! What a file really is, from its first bytes: never from its name or a client's word.

use std::fs::File;
use std::io::Read;
use std::path::Path;

fn head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut f = File::open(path)?;
    let mut got = 0;
    while got < n {
        let r = f.read(&mut buf[got..])?;
        if r == 0 {
            break;
        }
        got += r;
    }
    buf.truncate(got);
    Ok(buf)
}

fn image_format_name(f: image::ImageFormat) -> &'static str {
    use image::ImageFormat as F;
    match f {
        F::Jpeg => "jpg",
        F::Png => "png",
        F::Gif => "gif",
        F::WebP => "webp",
        F::Bmp => "bmp",
        F::Tiff => "tiff",
        F::Ico => "ico",
        F::Avif => "avif",
        F::Pnm => "pnm",
        F::Tga => "tga",
        F::Dds => "dds",
        F::Hdr => "hdr",
        F::OpenExr => "exr",
        F::Farbfeld => "farbfeld",
        F::Qoi => "qoi",
        _ => "another image format",
    }
}

/// The format a file's content shows (`jpg`, `png`, ..., `pdf`, `zip`, `gzip`, `mp4`...),
/// or `None` when it is none this server knows.
pub fn sniff(path: &Path) -> std::io::Result<Option<&'static str>> {
    let h = head(path, 1024)?;
    if h.is_empty() {
        return Ok(None);
    }
    // PDF readers accept the header anywhere in the first KiB.
    if h.windows(5).any(|w| w == b"%PDF-") {
        return Ok(Some("pdf"));
    }
    if let Ok(f) = image::guess_format(&h) {
        return Ok(Some(image_format_name(f)));
    }
    Ok(match &h[..] {
        [_, _, _, _, b'f', b't', b'y', b'p', b'q', b't', ..] => Some("mov"),
        [_, _, _, _, b'f', b't', b'y', b'p', b'M', b'4', b'A', ..] => Some("m4a"),
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => Some("mp4"),
        [0x1a, 0x45, 0xdf, 0xa3, ..] => Some(if h.windows(4).take(64).any(|w| w == b"webm") {
            "webm"
        } else {
            "mkv"
        }),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => Some("wav"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'A', b'V', b'I', b' ', ..] => Some("avi"),
        [b'O', b'g', b'g', b'S', ..] => Some("ogg"),
        [b'f', b'L', b'a', b'C', ..] => Some("flac"),
        [b'I', b'D', b'3', ..] => Some("mp3"),
        // ADTS AAC: sync word and layer 00; MPEG audio: sync word and a non-zero layer.
        [0xff, b, ..] if b & 0xf6 == 0xf0 => Some("aac"),
        [0xff, b, ..] if b & 0xe0 == 0xe0 && b & 0x06 != 0 => Some("mp3"),
        [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => Some(zip_kind(path)),
        [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1, ..] => Some("ole"),
        [b'{', b'\\', b'r', b't', b'f', ..] => Some("rtf"),
        [0x1f, 0x8b, ..] => Some("gzip"),
        _ if h.len() > 262 && &h[257..262] == b"ustar" => Some("tar"),
        _ => text_kind(&h),
    })
}

/// Office Open XML and OpenDocument files are zips: tell them apart by their entries.
fn zip_kind(path: &Path) -> &'static str {
    let Ok(file) = File::open(path) else { return "zip" };
    let Ok(mut zip) = zip::ZipArchive::new(std::io::BufReader::new(file)) else {
        return "zip";
    };
    let has = |zip: &zip::ZipArchive<_>, prefix: &str| zip.file_names().any(|n| n.is_ok_and(|n| n.starts_with(prefix)));
    if has(&zip, "word/") {
        return "docx";
    }
    if has(&zip, "xl/") {
        return "xlsx";
    }
    if has(&zip, "ppt/") {
        return "pptx";
    }
    if let Ok(mut m) = zip.by_name("mimetype") {
        let mut mime = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(&mut m, 128), &mut mime);
        return match mime.trim() {
            "application/vnd.oasis.opendocument.text" => "odt",
            "application/vnd.oasis.opendocument.spreadsheet" => "ods",
            "application/vnd.oasis.opendocument.presentation" => "odp",
            _ => "zip",
        };
    }
    "zip"
}

/// Text: valid UTF-8 (allowing a cut-off last character) with no NUL and few controls.
fn text_kind(h: &[u8]) -> Option<&'static str> {
    let valid = match std::str::from_utf8(h) {
        Ok(s) => s,
        Err(e) if e.valid_up_to() + 4 >= h.len() => std::str::from_utf8(&h[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    if valid
        .chars()
        .any(|c| c == '\0' || (c.is_control() && !c.is_whitespace()))
    {
        return None;
    }
    let lower = valid.trim_start().to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
        return Some("html");
    }
    Some("txt")
}

/// Whether content sniffed as `real` may be a file of the `declared` format.
pub fn compatible(declared: &str, real: &str) -> bool {
    declared == real
        || matches!(
            (declared, real),
            ("doc" | "xls" | "ppt", "ole")
                | ("md" | "csv" | "html", "txt")
                | ("m4a", "mp4")
                | ("mp4", "m4a" | "mov")
                | ("mov", "mp4")
                | ("mkv", "webm")
        )
}
