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
        [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => Some("zip"),
        [0x1f, 0x8b, ..] => Some("gzip"),
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => Some("mp4"),
        [0x1a, 0x45, 0xdf, 0xa3, ..] => Some("mkv"),
        [b'I', b'D', b'3', ..] => Some("mp3"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => Some("wav"),
        _ if h.len() > 262 && &h[257..262] == b"ustar" => Some("tar"),
        _ => None,
    })
}
