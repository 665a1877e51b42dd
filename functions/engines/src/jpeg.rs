//! JPEG output through mozjpeg: progressive with optimised Huffman tables for pixels
//! (every JPEG this server writes; trellis quantisation too for compress), and a lossless rewrite of a
//! JPEG's own coefficients (what `jpegtran -optimize -progressive` does) for compress.
//!
//! libjpeg reports a fatal error by calling `error_exit`, which must not return: here it
//! unwinds (mozjpeg-sys is built with `-fexceptions`), and every entry point catches that
//! and turns it into the library's message.

use image::metadata::Orientation;
use mozjpeg_sys as ffi;
use std::os::raw::{c_int, c_uint, c_ulong};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The APPn markers a JPEG's metadata lives in: EXIF and XMP (APP1), the ICC profile
/// (APP2), Photoshop/IPTC (APP13), and comments. Written back only when metadata is kept.
const METADATA_MARKERS: &[u8] = &[0xe1, 0xe2, 0xed, 0xfe];

/// One metadata segment: its marker and its bytes (without the length).
pub type Segment = (u8, Vec<u8>);

fn caught<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(unwound(payload)))
}

/// The message of libjpeg's fatal error, from the unwinding it became.
fn unwound(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the JPEG library failed".into())
        .trim_start_matches("libjpeg fatal error: ")
        .to_string()
}

/// Why decoding by rows stopped: the JPEG was bad, or the rows could not be taken.
pub enum RowsError {
    Decode(String),
    Sink(std::io::Error),
}

/// Decodes the JPEG at `path` a band of rows at a time, 8-bit RGB or gray as it is coded:
/// `start(width, height, gray)` is called once, then `rows` with each band in order, so
/// that memory holds a band, not the image (a progressive JPEG's coefficients are held
/// whole by libjpeg: 2 bytes a sample, not the decoded pixels). `Ok(false)` (and nothing called) when its
/// colours are CMYK or YCCK, which libjpeg does not turn into RGB.
pub fn decode_rows<S>(
    path: &std::path::Path,
    start: impl FnOnce(u32, u32, bool) -> std::io::Result<S>,
    mut rows: impl FnMut(&mut S, &[u8]) -> std::io::Result<()>,
    finish: impl FnOnce(S) -> std::io::Result<()>,
) -> Result<bool, RowsError> {
    use mozjpeg::ColorSpace::*;
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let d = mozjpeg::Decompress::new_path(path).map_err(|e| RowsError::Decode(e.to_string()))?;
        let gray = match d.color_space() {
            JCS_GRAYSCALE => true,
            JCS_YCbCr | JCS_RGB => false,
            _ => return Ok(false),
        };
        let mut d = if gray { d.grayscale() } else { d.rgb() }.map_err(|e| RowsError::Decode(e.to_string()))?;
        let (width, height) = (d.width(), d.height());
        let mut sink = start(width as u32, height as u32, gray).map_err(RowsError::Sink)?;
        const BAND: usize = 16;
        let row = width * if gray { 1 } else { 3 };
        let mut band = vec![0u8; row * BAND];
        let mut left = height;
        while left > 0 {
            let n = left.min(BAND);
            let band = d
                .read_scanlines_into(&mut band[..row * n])
                .map_err(|e| RowsError::Decode(e.to_string()))?;
            rows(&mut sink, band).map_err(RowsError::Sink)?;
            left -= n;
        }
        d.finish().map_err(|e| RowsError::Decode(e.to_string()))?;
        finish(sink).map_err(RowsError::Sink)?;
        Ok(true)
    }));
    decoded.unwrap_or_else(|payload| Err(RowsError::Decode(unwound(payload))))
}

/// How hard the encoder works for its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// libjpeg-turbo's speed: progressive with optimised Huffman tables, no trellis (every
    /// conversion's and thumbnail's JPEG).
    Fast,
    /// mozjpeg's trellis quantisation on top (compress of JPEGs and of PDFs' photos, where
    /// the bytes are the point);
    /// its scan-script search is left out, which cost several times the encode for ~1 %.
    Small,
}

/// Encodes 8-bit pixels, RGB (3 bytes a pixel) or gray (1), at `quality` (1-100), with
/// the metadata `segments` written after the header.
pub fn encode(
    pixels: &[u8],
    width: u32,
    height: u32,
    gray: bool,
    quality: u8,
    effort: Effort,
    segments: &[Segment],
) -> Result<Vec<u8>, String> {
    let channels = if gray { 1 } else { 3 };
    if pixels.len() != width as usize * height as usize * channels {
        return Err(format!("{} bytes are not {width}x{height} pixels", pixels.len()));
    }
    caught(|| {
        let mut c = mozjpeg::Compress::new(if gray {
            mozjpeg::ColorSpace::JCS_GRAYSCALE
        } else {
            mozjpeg::ColorSpace::JCS_RGB
        });
        match effort {
            Effort::Fast => {
                c.set_fastest_defaults();
                c.set_optimize_coding(true);
            }
            Effort::Small => c.set_optimize_scans(false),
        }
        c.set_progressive_mode();
        c.set_size(width as usize, height as usize);
        // libjpeg's tables scaled as libjpeg scales them, so that quality 75 means what it
        // means to every other tool (mozjpeg's own tables trade PSNR for its metric).
        let q = f32::from(quality.clamp(1, 100));
        c.set_luma_qtable(&mozjpeg::qtable::AnnexK_Luma.scaled(q, q));
        c.set_chroma_qtable(&mozjpeg::qtable::AnnexK_Chroma.scaled(q, q));
        let capacity = (width as usize * height as usize / 4).max(4096);
        let mut s = c
            .start_compress(Vec::with_capacity(capacity))
            .map_err(|e| e.to_string())?;
        for (marker, data) in segments {
            s.write_marker(marker_of(*marker), data);
        }
        s.write_scanlines(pixels).map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())
    })
}

fn marker_of(code: u8) -> mozjpeg::Marker {
    match code {
        0xfe => mozjpeg::Marker::COM,
        n => mozjpeg::Marker::APP(n - 0xe0),
    }
}

/// The metadata segments of a JPEG (see [`METADATA_MARKERS`]), read up to its first scan.
pub fn metadata(jpeg: &[u8]) -> Vec<Segment> {
    segments(jpeg)
        .filter(|(marker, _)| METADATA_MARKERS.contains(marker))
        .map(|(marker, data)| (marker, data.to_vec()))
        .collect()
}

/// A JPEG's marker segments after its SOI, up to its first scan: each marker with its data
/// (the bytes after the length). Fill bytes are skipped; a segment that runs past the end
/// ends the walk.
fn segments(jpeg: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = if jpeg.starts_with(&[0xff, 0xd8]) { 2 } else { jpeg.len() };
    std::iter::from_fn(move || {
        while at + 4 <= jpeg.len() && jpeg[at] == 0xff {
            let marker = jpeg[at + 1];
            if marker == 0xff {
                at += 1;
                continue;
            }
            let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
            if marker == 0xda || len < 2 || at + 2 + len > jpeg.len() {
                return None;
            }
            let data = &jpeg[at + 4..at + 2 + len];
            at += 2 + len;
            return Some((marker, data));
        }
        None
    })
}

/// The orientation a JPEG's EXIF (APP1) says it is shown in; `None` without one.
pub fn orientation(jpeg: &[u8]) -> Option<Orientation> {
    segments(jpeg).find_map(|(marker, data)| {
        (marker == 0xe1)
            .then(|| data.strip_prefix(b"Exif\0\0"))
            .flatten()
            .and_then(Orientation::from_exif_chunk)
    })
}

/// An EXIF segment that holds only `orientation`: what compress keeps of a photo's
/// stripped metadata, so that a portrait photo still shows upright.
pub fn orientation_segment(orientation: Orientation) -> Segment {
    let mut data = Vec::with_capacity(32);
    data.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08"); // big-endian TIFF, IFD0 at 8
    data.extend_from_slice(&[0, 1]); // one entry: tag 0x0112, SHORT, count 1, the value
    data.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation.to_exif(), 0, 0]);
    data.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    (0xe1, data)
}

/// The most scans a JPEG may have. Each scan of a progressive JPEG passes over the whole
/// image, so a small file of thousands of tiny scans costs minutes to decode; real
/// encoders write at most a few dozen, and the image crate's decoder stops at this many.
pub const MAX_SCANS: usize = 100;

/// What a JPEG's markers say of it, as a decoder meets them.
#[derive(Debug, Default, PartialEq)]
pub struct Outline {
    /// Its scans (SOS markers).
    pub scans: usize,
    /// Its first frame header's marker and sample precision.
    pub frame: Option<(u8, u8)>,
    /// Whether it defines arithmetic-coding conditions (DAC).
    pub arithmetic_tables: bool,
}

impl Outline {
    /// What of the coding the decoders cannot read: arithmetic coding, lossless coding,
    /// or samples of other than 8 bits; `None` for a baseline or progressive 8-bit JPEG
    /// (and for what has no frame header: the decoder says what is wrong with it).
    pub fn unsupported(&self) -> Option<String> {
        let (marker, precision) = self.frame?;
        if self.arithmetic_tables || matches!(marker, 0xc9..=0xcb | 0xcd..=0xcf) {
            Some("arithmetic-coded".into())
        } else if matches!(marker, 0xc3 | 0xc7) {
            Some("a lossless JPEG".into())
        } else {
            (precision != 8).then(|| format!("a {precision}-bit JPEG"))
        }
    }
}

/// A JPEG's [`Outline`]: its markers walked from the SOI (each segment skipped by its
/// length; after a scan, its coded data, where a 0xFF is followed by 0x00 or a restart
/// marker, up to the next marker) to the first EOI. What follows the image (a phone's
/// motion-photo video, say) and the bytes inside metadata are not read as markers. A file
/// that ends early has what was met before its end; what is no JPEG, nothing.
pub fn outline(r: impl std::io::Read) -> std::io::Result<Outline> {
    use std::io::{BufRead, BufReader, ErrorKind, Read};
    fn byte(r: &mut impl Read) -> std::io::Result<u8> {
        let mut b = [0u8];
        r.read_exact(&mut b)?;
        Ok(b[0])
    }
    /// The code of the next marker: anything before its 0xFF skipped (as libjpeg does,
    /// with a warning), then its fill bytes.
    fn marker(r: &mut impl BufRead) -> std::io::Result<u8> {
        loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            match memchr::memchr(0xff, buf) {
                Some(at) => {
                    r.consume(at + 1);
                    let mut code = byte(r)?;
                    while code == 0xff {
                        code = byte(r)?;
                    }
                    // In coded data: a stuffed 0xFF or a restart marker, not a segment.
                    if code != 0x00 && !(0xd0..=0xd7).contains(&code) {
                        return Ok(code);
                    }
                }
                None => {
                    let n = buf.len();
                    r.consume(n);
                }
            }
        }
    }
    fn walk(r: &mut impl BufRead, outline: &mut Outline) -> std::io::Result<()> {
        if byte(r)? != 0xff || byte(r)? != 0xd8 {
            return Ok(());
        }
        loop {
            match marker(r)? {
                0xd9 => return Ok(()),
                0xd8 | 0x01 => {}
                code => {
                    let len = u16::from_be_bytes([byte(r)?, byte(r)?]);
                    let Some(mut rest) = len.checked_sub(2) else {
                        return Ok(());
                    };
                    let frame = matches!(code, 0xc0..=0xcf) && !matches!(code, 0xc4 | 0xc8 | 0xcc);
                    if frame && outline.frame.is_none() && rest > 0 {
                        outline.frame = Some((code, byte(r)?));
                        rest -= 1;
                    }
                    std::io::copy(&mut (&mut *r).take(u64::from(rest)), &mut std::io::sink())?;
                    outline.arithmetic_tables |= code == 0xcc;
                    outline.scans += usize::from(code == 0xda);
                }
            }
        }
    }
    let mut outline = Outline::default();
    match walk(&mut BufReader::with_capacity(1 << 16, r), &mut outline) {
        Err(e) if e.kind() != ErrorKind::UnexpectedEof => Err(e),
        _ => Ok(outline),
    }
}

/// The quality (1-100, on libjpeg's scale) a JPEG was most likely saved at, from its
/// first luminance quantisation table (id 0; a file may define its chroma table first)
/// against libjpeg's standard one; `None` when it has none.
pub fn estimated_quality(jpeg: &[u8]) -> Option<u8> {
    // The sum of libjpeg's standard luminance table (Annex K; the same in zig-zag order).
    const STANDARD_SUM: u32 = 3688;
    let (_, table) = segments(jpeg).find(|(marker, data)| *marker == 0xdb && data.len() > 64 && data[0] & 0x0f == 0)?;
    let (info, values) = (table[0], &table[1..]);
    let sum: u32 = if info >> 4 == 0 {
        values.iter().take(64).map(|&v| u32::from(v)).sum()
    } else if values.len() >= 128 {
        values[..128]
            .chunks(2)
            .map(|p| u32::from(u16::from_be_bytes([p[0], p[1]])))
            .sum()
    } else {
        return None;
    };
    // libjpeg scales the table by `scale`%: 5000/q below 50, 200 - 2q above.
    let scale = f64::from(sum) * 100.0 / f64::from(STANDARD_SUM);
    let q = if scale <= 100.0 {
        (200.0 - scale) / 2.0
    } else {
        5000.0 / scale
    };
    Some(q.round().clamp(1.0, 100.0) as u8)
}

struct Decompress(Box<ffi::jpeg_decompress_struct>);
impl Drop for Decompress {
    fn drop(&mut self) {
        unsafe { ffi::jpeg_destroy_decompress(&mut self.0) }
    }
}

struct Compress(Box<ffi::jpeg_compress_struct>);
impl Drop for Compress {
    fn drop(&mut self) {
        unsafe { ffi::jpeg_destroy_compress(&mut self.0) }
    }
}

/// The memory `jpeg_mem_dest` allocates (with malloc). `buffer` is the caller's only once
/// `jpeg_finish_compress` has returned: while the output grows, libjpeg frees the buffers
/// it outgrows without updating `buffer`, so after a failure the pointer may be freed
/// already. Only a finished buffer is freed here (a failed rewrite leaks its last buffer,
/// the size of its output so far, rather than freeing one twice).
struct MemDest {
    buffer: *mut u8,
    size: c_ulong,
    finished: bool,
}
impl Drop for MemDest {
    fn drop(&mut self) {
        if self.finished && !self.buffer.is_null() {
            unsafe { libc::free(self.buffer.cast()) }
        }
    }
}

extern "C-unwind" fn unwind_error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let mut buffer = [0u8; 80];
    let msg = unsafe {
        let err = &*cinfo.err;
        match err.format_message {
            // The binding declares the buffer `&[u8; 80]`, but libjpeg writes into it: called
            // as the function it is, taking the buffer mutably.
            Some(format) => {
                type Declared = unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &[u8; 80]);
                type Writes = unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &mut [u8; 80]);
                let format = std::mem::transmute::<Declared, Writes>(format);
                format(cinfo, &mut buffer);
                let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
                String::from_utf8_lossy(&buffer[..end]).into_owned()
            }
            None => format!("libjpeg error {}", err.msg_code),
        }
    };
    std::panic::resume_unwind(Box::new(msg));
}

extern "C-unwind" fn silence(_cinfo: &mut ffi::jpeg_common_struct, _level: c_int) {}

fn error_mgr() -> Box<ffi::jpeg_error_mgr> {
    unsafe {
        let mut err: Box<ffi::jpeg_error_mgr> = Box::new(std::mem::zeroed());
        ffi::jpeg_std_error(&mut err);
        err.error_exit = Some(unwind_error_exit);
        err.emit_message = Some(silence);
        err
    }
}

/// Rewrites a JPEG without decoding it: the same DCT coefficients (so the same pixels),
/// progressive, with Huffman tables optimised for this image, the metadata only if
/// `keep_metadata`, and the `extra` segments after it.
pub fn optimize_lossless(jpeg: &[u8], keep_metadata: bool, extra: &[Segment]) -> Result<Vec<u8>, String> {
    caught(|| unsafe {
        let mut src_err = error_mgr();
        let mut src = Decompress(Box::new(std::mem::zeroed()));
        src.0.common.err = &mut *src_err;
        ffi::jpeg_create_decompress(&mut *src.0);
        ffi::jpeg_mem_src(&mut src.0, jpeg.as_ptr(), jpeg.len() as c_ulong);
        if keep_metadata {
            for &m in METADATA_MARKERS {
                ffi::jpeg_save_markers(&mut src.0, c_int::from(m), 0xffff);
            }
        }
        ffi::jpeg_read_header(&mut src.0, 1);
        let coefficients = ffi::jpeg_read_coefficients(&mut src.0);
        if coefficients.is_null() {
            return Err("the JPEG's coefficients could not be read".into());
        }

        let mut dst_err = error_mgr();
        let mut dst = Compress(Box::new(std::mem::zeroed()));
        dst.0.common.err = &mut *dst_err;
        ffi::jpeg_create_compress(&mut *dst.0);
        let mut out = MemDest {
            buffer: std::ptr::null_mut(),
            size: 0,
            finished: false,
        };
        ffi::jpeg_mem_dest(&mut dst.0, &mut out.buffer, &mut out.size);
        ffi::jpeg_copy_critical_parameters(&src.0, &mut dst.0);
        dst.0.optimize_coding = 1;
        ffi::jpeg_simple_progression(&mut dst.0);
        ffi::jpeg_write_coefficients(&mut dst.0, coefficients);
        let mut m = src.0.marker_list;
        while !m.is_null() {
            let marker = &*m;
            ffi::jpeg_write_marker(
                &mut dst.0,
                c_int::from(marker.marker),
                marker.data,
                marker.data_length as c_uint,
            );
            m = marker.next;
        }
        for (marker, data) in extra {
            ffi::jpeg_write_marker(&mut dst.0, c_int::from(*marker), data.as_ptr(), data.len() as c_uint);
        }
        ffi::jpeg_finish_compress(&mut dst.0);
        out.finished = true;
        ffi::jpeg_finish_decompress(&mut src.0);
        drop(dst);
        drop(src);
        if out.buffer.is_null() {
            return Err("the JPEG library wrote nothing".into());
        }
        Ok(std::slice::from_raw_parts(out.buffer, out.size as usize).to_vec())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 255 / w) as u8, (y * 255 / h) as u8, ((x + y) % 256) as u8]
            })
            .collect()
    }

    #[test]
    fn encodes_decodes_and_rewrites_without_changing_a_pixel() {
        let (w, h) = (96, 64);
        let comment = (0xfe, b"kept".to_vec());
        let jpeg = encode(
            &gradient(w, h),
            w,
            h,
            false,
            80,
            Effort::Small,
            std::slice::from_ref(&comment),
        )
        .unwrap();
        assert!(jpeg.starts_with(&[0xff, 0xd8]));
        assert!(
            estimated_quality(&jpeg).is_some_and(|q| q.abs_diff(80) <= 1),
            "{:?}",
            estimated_quality(&jpeg)
        );
        assert_eq!(metadata(&jpeg), vec![comment.clone()]);
        let pixels = |j: &[u8]| image::load_from_memory(j).unwrap().to_rgb8().into_raw();

        let stripped = optimize_lossless(&jpeg, false, &[]).unwrap();
        assert_eq!(pixels(&stripped), pixels(&jpeg));
        assert!(metadata(&stripped).is_empty());
        let kept = optimize_lossless(&jpeg, true, &[]).unwrap();
        assert_eq!(metadata(&kept), vec![comment]);
    }

    #[test]
    fn the_quality_of_a_libjpeg_style_encoder_is_read_from_its_tables() {
        let (w, h) = (64, 64);
        for q in [30, 50, 75, 90] {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
                .encode(&gradient(w, h), w, h, image::ExtendedColorType::Rgb8)
                .unwrap();
            let got = estimated_quality(&out).unwrap();
            assert!(got.abs_diff(q) <= 1, "saved at {q}, estimated {got}");
        }
        assert_eq!(estimated_quality(b"not a jpeg"), None);
    }

    #[test]
    fn markers_are_walked_as_a_decoder_meets_them() {
        let baseline = encode(&gradient(64, 48), 64, 48, false, 80, Effort::Fast, &[]).unwrap();
        let scans = outline(&baseline[..]).unwrap().scans;
        assert!(scans > 1, "a progressive JPEG: {scans}");
        // A segment of 0xFF 0xDA bytes and a tail of them after the EOI (a motion photo's
        // video) are not scans.
        let noise: Vec<u8> = [0xff, 0xda].repeat(5000);
        let with_app = [
            &baseline[..2],
            &[0xff, 0xe9, 0x27, 0x12],
            &noise[..10000],
            &baseline[2..],
        ]
        .concat();
        let with_tail = [&baseline[..], &noise[..]].concat();
        assert_eq!(outline(&with_app[..]).unwrap().scans, scans);
        assert_eq!(outline(&with_tail[..]).unwrap().scans, scans);
        // A file cut short has the scans before its end.
        assert!(outline(&baseline[..baseline.len() / 2]).unwrap().scans <= scans);
        assert_eq!(outline(&b"not a jpeg"[..]).unwrap(), Outline::default());
    }

    #[test]
    fn broken_input_is_an_error_not_a_crash() {
        let jpeg = encode(&gradient(32, 32), 32, 32, false, 75, Effort::Fast, &[]).unwrap();
        for broken in [&b"not a jpeg"[..], &jpeg[..40], &[]] {
            assert!(optimize_lossless(broken, false, &[]).is_err(), "{broken:?}");
        }
        assert!(encode(&[0; 10], 32, 32, false, 75, Effort::Fast, &[]).is_err());
    }
}
