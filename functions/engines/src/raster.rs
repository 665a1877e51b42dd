//! Raster images: jpg, png, gif, webp, bmp, tiff, ico in and out; resizing with a SIMD
//! resizer; JPEG decoding at reduced size (DCT scaling) when the output is much smaller.

use crate::detect::sniff;
use crate::EngineLimits;
use fast_image_resize::{FilterType as RsFilter, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::metadata::Orientation;
use image::{DynamicImage, ImageFormat, ImageReader};
use runconvert_core::error::codes;
use runconvert_core::formats::{OptionSpec, OptionType};
use runconvert_core::ops::EngineOptions;
use runconvert_core::TaskError;
use serde_json::json;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

pub const ENGINE: &str = "image";
pub const ENGINE_VERSION: &str = "0.25";

/// The raster formats this engine reads and writes.
pub const FORMATS: &[&str] = &["jpg", "png", "gif", "webp", "bmp", "tiff", "ico"];

pub const FITS: &[&str] = &["max", "crop", "scale", "upscale"];

pub fn size_options(fits: &'static [&'static str]) -> Vec<OptionSpec> {
    vec![
        OptionSpec {
            name: "width",
            kind: OptionType::Integer { min: 1, max: 30_000 },
            default: None,
            description: "Output width in pixels.",
        },
        OptionSpec {
            name: "height",
            kind: OptionType::Integer { min: 1, max: 30_000 },
            default: None,
            description: "Output height in pixels.",
        },
        OptionSpec {
            name: "fit",
            kind: OptionType::Enum(fits),
            default: Some(json!("max")),
            description: "max: fit inside width × height, keeping the aspect ratio, never enlarging; \
                upscale: the same, enlarging if needed; scale: exactly width × height, stretching; \
                crop: cover width × height and cut the overflow from the centre.",
        },
    ]
}

pub fn quality_option(default: u8) -> OptionSpec {
    OptionSpec {
        name: "quality",
        kind: OptionType::Integer { min: 1, max: 100 },
        default: Some(json!(default)),
        description: "Quality of lossy output (JPEG, WebP): 1 (smallest) to 100 (best).",
    }
}

pub fn lossless_option() -> OptionSpec {
    OptionSpec {
        name: "lossless",
        kind: OptionType::Boolean,
        default: Some(json!(false)),
        description: "WebP: encode losslessly (quality is then ignored).",
    }
}

/// The options of a raster → raster conversion to `output`.
pub fn convert_options(output: &str) -> Vec<OptionSpec> {
    let mut o = size_options(FITS);
    match output {
        "jpg" => o.push(quality_option(85)),
        "webp" => {
            o.push(quality_option(80));
            o.push(lossless_option());
        }
        _ => {}
    }
    o
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Max,
    Crop,
    Scale,
    Upscale,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    /// `None`: the format's default.
    pub quality: Option<u8>,
    pub lossless: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            width: None,
            height: None,
            fit: Fit::Max,
            quality: None,
            lossless: false,
        }
    }
}

fn bad_option(msg: String) -> TaskError {
    TaskError::new(codes::INVALID_DATA, msg)
}

/// Reads an integer option within a range.
pub fn int_option(o: &EngineOptions, name: &str, min: i64, max: i64) -> Result<Option<i64>, TaskError> {
    match o.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| bad_option(format!("option {name} must be a whole number from {min} to {max}"))),
    }
}

impl ImageOptions {
    /// Reads `width`, `height`, `fit`, `quality`, `lossless` from task options.
    pub fn from_options(o: &EngineOptions) -> Result<Self, TaskError> {
        let fit = match o.get("fit").and_then(|v| v.as_str()) {
            None | Some("max") => Fit::Max,
            Some("crop") => Fit::Crop,
            Some("scale") => Fit::Scale,
            Some("upscale") => Fit::Upscale,
            Some(other) => {
                return Err(bad_option(format!(
                    "option fit must be one of {}, got {other:?}",
                    FITS.join(", ")
                )))
            }
        };
        Ok(ImageOptions {
            width: int_option(o, "width", 1, 30_000)?.map(|n| n as u32),
            height: int_option(o, "height", 1, 30_000)?.map(|n| n as u32),
            fit,
            quality: int_option(o, "quality", 1, 100)?.map(|n| n as u8),
            lossless: o.get("lossless").and_then(|v| v.as_bool()).unwrap_or(false),
        })
    }
}

pub fn image_format(name: &str) -> Option<ImageFormat> {
    Some(match name {
        "jpg" => ImageFormat::Jpeg,
        "png" => ImageFormat::Png,
        "gif" => ImageFormat::Gif,
        "webp" => ImageFormat::WebP,
        "bmp" => ImageFormat::Bmp,
        "tiff" => ImageFormat::Tiff,
        "ico" => ImageFormat::Ico,
        _ => return None,
    })
}

fn invalid(msg: impl Into<String>) -> TaskError {
    TaskError::new(codes::INVALID_FILE, msg)
}

fn io_error(what: &str, e: impl std::fmt::Display) -> TaskError {
    TaskError::new(codes::PROCESSING_FAILED, format!("{what}: {e}"))
}

/// Checks that `path` really is `format`; the message names `display_name`.
pub fn check_format(path: &Path, display_name: &str, format: &str) -> Result<(), TaskError> {
    match sniff(path).map_err(|e| io_error(&format!("reading {display_name}"), e))? {
        None => Err(invalid(format!(
            "{display_name} is not a {format} file: its content is not a format this server reads"
        ))),
        Some(real) if !crate::detect::compatible(format, real) => Err(invalid(format!(
            "{display_name} is said to be {format} but its content is {real}"
        ))),
        Some(_) => Ok(()),
    }
}

/// Width and height from the header, refused when over the pixel limit.
pub fn dimensions(
    path: &Path,
    display_name: &str,
    format: &str,
    limits: &EngineLimits,
) -> Result<(u32, u32), TaskError> {
    let fmt = image_format(format)
        .ok_or_else(|| TaskError::new(codes::UNSUPPORTED_CONVERSION, format!("cannot read {format} images")))?;
    if format == "jpg" {
        let outline = File::open(path)
            .and_then(crate::jpeg::outline)
            .map_err(|e| io_error("reading the input", e))?;
        if let Some(why) = outline.unsupported() {
            return Err(TaskError::new(
                codes::UNSUPPORTED_CONVERSION,
                format!("{display_name} is {why}, which this server does not decode; save it as a baseline or progressive 8-bit JPEG"),
            ));
        }
        if outline.scans > crate::jpeg::MAX_SCANS {
            return Err(invalid(format!(
                "{display_name} has {} scans, more than the {} this server decodes (encoders write a few dozen at most)",
                outline.scans,
                crate::jpeg::MAX_SCANS
            )));
        }
        // The header alone (the image crate's JPEG path reads the whole file for this).
        let file = File::open(path).map_err(|e| io_error("reading the input", e))?;
        let mut d = jpeg_decoder::Decoder::new(BufReader::new(file));
        if d.read_info().is_ok() {
            if let Some(info) = d.info() {
                let (w, h) = (info.width as u32, info.height as u32);
                limits.check_pixels(display_name, w, h)?;
                return Ok((w, h));
            }
        }
    }
    let mut r = ImageReader::new(BufReader::new(
        File::open(path).map_err(|e| io_error("reading the input", e))?,
    ));
    r.set_format(fmt);
    let (w, h) = r
        .into_dimensions()
        .map_err(|e| invalid(format!("{display_name} is not a valid {format} image: {e}")))?;
    limits.check_pixels(display_name, w, h)?;
    Ok((w, h))
}

/// Decodes an image (after checking its real format and size). With `target`, a JPEG
/// is decoded at the smallest DCT scale (1/8 .. 1) still at least that large.
pub fn decode(
    path: &Path,
    display_name: &str,
    format: &str,
    limits: &EngineLimits,
    target: Option<(u32, u32)>,
) -> Result<DynamicImage, TaskError> {
    let size = probe(path, display_name, format, limits)?;
    decode_probed(path, display_name, format, size, limits, target)
}

/// Checks the real format and the header's size against the limit; returns the size.
pub fn probe(path: &Path, display_name: &str, format: &str, limits: &EngineLimits) -> Result<(u32, u32), TaskError> {
    check_format(path, display_name, format)?;
    dimensions(path, display_name, format, limits)
}

/// [`decode`] for a file [`probe`] has already checked (its size is `(w, h)`).
pub fn decode_probed(
    path: &Path,
    display_name: &str,
    format: &str,
    (w, h): (u32, u32),
    limits: &EngineLimits,
    target: Option<(u32, u32)>,
) -> Result<DynamicImage, TaskError> {
    if format == "jpg" {
        if let Some((tw, th)) = target {
            if tw.saturating_mul(2) <= w && th.saturating_mul(2) <= h {
                if let Some(img) = decode_jpeg_scaled(path, tw, th) {
                    return Ok(img);
                }
            }
        }
    }
    let mut reader = ImageReader::new(BufReader::new(
        File::open(path).map_err(|e| io_error("reading the input", e))?,
    ));
    reader.set_format(image_format(format).expect("checked by dimensions"));
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(w);
    decode_limits.max_image_height = Some(h);
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(decode_limits);
    reader
        .decode()
        .map_err(|e| invalid(format!("{display_name} could not be decoded as {format}: {e}")))
}

/// JPEG decoding with DCT scaling; `None` if this decoder cannot (the caller falls back).
fn decode_jpeg_scaled(path: &Path, tw: u32, th: u32) -> Option<DynamicImage> {
    // From memory: the decoder reads byte by byte, which is slow through a file reader.
    let bytes = std::fs::read(path).ok()?;
    let mut d = jpeg_decoder::Decoder::new(&bytes[..]);
    d.read_info().ok()?;
    let (w, h) = d
        .scale(tw.min(u16::MAX as u32) as u16, th.min(u16::MAX as u32) as u16)
        .ok()?;
    let info = d.info()?;
    let pixels = d.decode().ok()?;
    let (w, h) = (w as u32, h as u32);
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
        jpeg_decoder::PixelFormat::L8 => image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        _ => None,
    }
}

/// The output size for an input of `w × h`.
pub fn target_size(w: u32, h: u32, width: Option<u32>, height: Option<u32>, fit: Fit) -> (u32, u32) {
    let (w64, h64) = (w as f64, h as f64);
    let proportional = |allow_up: bool| -> (u32, u32) {
        let sx = width.map(|t| t as f64 / w64);
        let sy = height.map(|t| t as f64 / h64);
        let mut s = match (sx, sy) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 1.0,
        };
        if !allow_up {
            s = s.min(1.0);
        }
        (((w64 * s).round() as u32).max(1), ((h64 * s).round() as u32).max(1))
    };
    match (fit, width, height) {
        (_, None, None) => (w, h),
        (Fit::Max, _, _) => proportional(false),
        (Fit::Upscale, _, _) => proportional(true),
        (Fit::Scale | Fit::Crop, Some(tw), Some(th)) => (tw, th),
        (Fit::Scale | Fit::Crop, _, _) => proportional(true),
    }
}

/// Resizes to exactly `tw × th` (Lanczos3, SIMD); with `crop`, covers and cuts the centre.
pub fn resize_exact(img: &DynamicImage, tw: u32, th: u32, crop: bool) -> Result<DynamicImage, TaskError> {
    if (img.width(), img.height()) == (tw, th) {
        return Ok(img.clone());
    }
    // The resizer handles 8-bit gray, gray+alpha, RGB and RGBA; anything else goes through RGBA.
    let src: std::borrow::Cow<DynamicImage> = match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => std::borrow::Cow::Borrowed(img),
        other if other.color().has_alpha() => std::borrow::Cow::Owned(DynamicImage::ImageRgba8(other.to_rgba8())),
        other => std::borrow::Cow::Owned(DynamicImage::ImageRgb8(other.to_rgb8())),
    };
    let mut dst = match src.as_ref() {
        DynamicImage::ImageLuma8(_) => DynamicImage::ImageLuma8(image::GrayImage::new(tw, th)),
        DynamicImage::ImageLumaA8(_) => DynamicImage::ImageLumaA8(image::GrayAlphaImage::new(tw, th)),
        DynamicImage::ImageRgb8(_) => DynamicImage::ImageRgb8(image::RgbImage::new(tw, th)),
        _ => DynamicImage::ImageRgba8(image::RgbaImage::new(tw, th)),
    };
    let mut opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(RsFilter::Lanczos3));
    if crop {
        opts = opts.fit_into_destination(Some((0.5, 0.5)));
    }
    Resizer::new()
        .resize(src.as_ref(), &mut dst, &opts)
        .map_err(|e| io_error("resizing", e))?;
    Ok(dst)
}

/// Applies `width`, `height` and `fit`.
pub fn resize(img: DynamicImage, opts: &ImageOptions) -> Result<DynamicImage, TaskError> {
    let (tw, th) = target_size(img.width(), img.height(), opts.width, opts.height, opts.fit);
    if (tw, th) == (img.width(), img.height()) {
        return Ok(img);
    }
    resize_exact(&img, tw, th, opts.fit == Fit::Crop)
}

/// Writes `img` as `format`.
pub fn encode(
    img: &DynamicImage,
    output: &Path,
    format: &str,
    quality: Option<u8>,
    lossless: bool,
) -> Result<(), TaskError> {
    let fail = |e: &dyn std::fmt::Display| io_error(&format!("writing {format}"), e);
    let mut out = BufWriter::new(File::create(output).map_err(|e| fail(&e))?);
    let result: image::ImageResult<()> = match format {
        "jpg" => {
            let bytes = jpeg_bytes(img, quality.unwrap_or(85), crate::jpeg::Effort::Fast, &[])?;
            out.write_all(&bytes).map_err(image::ImageError::IoError)
        }
        "webp" => {
            let (w, h) = (img.width(), img.height());
            let mem = if img.color().has_alpha() {
                let rgba = img.to_rgba8();
                let enc = webp::Encoder::from_rgba(rgba.as_raw(), w, h);
                if lossless {
                    enc.encode_lossless()
                } else {
                    enc.encode(quality.unwrap_or(80) as f32)
                }
            } else {
                let rgb = img.to_rgb8();
                let enc = webp::Encoder::from_rgb(rgb.as_raw(), w, h);
                if lossless {
                    enc.encode_lossless()
                } else {
                    enc.encode(quality.unwrap_or(80) as f32)
                }
            };
            out.write_all(&mem).map_err(image::ImageError::IoError)
        }
        "png" => {
            let enc = PngEncoder::new_with_quality(&mut out, CompressionType::Default, PngFilter::Adaptive);
            img.write_with_encoder(enc)
        }
        "ico" => {
            let icon = if img.width() > 256 || img.height() > 256 {
                let (w, h) = target_size(img.width(), img.height(), Some(256), Some(256), Fit::Max);
                resize_exact(img, w, h, false)?
            } else {
                img.clone()
            };
            DynamicImage::ImageRgba8(icon.to_rgba8()).write_to(&mut out, ImageFormat::Ico)
        }
        "gif" => DynamicImage::ImageRgba8(img.to_rgba8()).write_to(&mut out, ImageFormat::Gif),
        "bmp" => {
            if img.color().has_alpha() {
                DynamicImage::ImageRgba8(img.to_rgba8()).write_to(&mut out, ImageFormat::Bmp)
            } else {
                DynamicImage::ImageRgb8(img.to_rgb8()).write_to(&mut out, ImageFormat::Bmp)
            }
        }
        "tiff" => img.write_to(&mut out, ImageFormat::Tiff),
        other => {
            return Err(TaskError::new(
                codes::UNSUPPORTED_CONVERSION,
                format!("cannot write {other} images"),
            ))
        }
    };
    result.map_err(|e| fail(&e))?;
    out.flush().map_err(|e| fail(&e))
}

/// `img` as a JPEG (mozjpeg) at `quality`, with the metadata `segments`: gray stays gray,
/// and what has alpha is flattened onto white (JPEG has none).
pub fn jpeg_bytes(
    img: &DynamicImage,
    quality: u8,
    effort: crate::jpeg::Effort,
    segments: &[crate::jpeg::Segment],
) -> Result<Vec<u8>, TaskError> {
    let (w, h) = (img.width(), img.height());
    let encode = |pixels: &[u8], gray| crate::jpeg::encode(pixels, w, h, gray, quality, effort, segments);
    let encoded = match img {
        DynamicImage::ImageLuma8(g) => encode(g.as_raw(), true),
        _ if img.color().has_alpha() => encode(flatten_on_white(img).as_raw(), false),
        DynamicImage::ImageRgb8(rgb) => encode(rgb.as_raw(), false),
        _ if !img.color().has_color() => encode(img.to_luma8().as_raw(), true),
        _ => encode(img.to_rgb8().as_raw(), false),
    };
    encoded.map_err(|e| io_error("writing jpg", e))
}

pub fn flatten_on_white(img: &DynamicImage) -> image::RgbImage {
    let rgba = img.to_rgba8();
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        let mix = |c: u8| ((c as u32 * a + 255 * (255 - a)) / 255) as u8;
        image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])])
    })
}

/// The size to decode at for the given options (for reduced JPEG decoding).
fn decode_target(w: u32, h: u32, opts: &ImageOptions) -> Option<(u32, u32)> {
    if opts.width.is_none() && opts.height.is_none() {
        return None;
    }
    let (tw, th) = target_size(w, h, opts.width, opts.height, opts.fit);
    if opts.fit == Fit::Crop {
        // Covering needs the larger of the two scales.
        let s = (tw as f64 / w as f64).max(th as f64 / h as f64);
        return Some(((w as f64 * s).ceil() as u32, (h as f64 * s).ceil() as u32));
    }
    Some((tw, th))
}

/// Converts `input` (said to be `input_format`) to `output` in `output_format`.
pub fn convert(
    input: &Path,
    display_name: &str,
    input_format: &str,
    output: &Path,
    output_format: &str,
    opts: &ImageOptions,
    limits: &EngineLimits,
) -> Result<(), TaskError> {
    let probed = probe_oriented(input, display_name, input_format, limits)?;
    let as_is = opts.width.is_none() && opts.height.is_none() && probed.orientation == Orientation::NoTransforms;
    if input_format == "jpg" && output_format == "png" && as_is && jpeg_to_png_by_rows(input, output)? {
        return Ok(());
    }
    let img = decode_upright(input, display_name, input_format, &probed, opts, limits)?;
    encode(&img, output, output_format, opts.quality, opts.lossless)
}

/// A JPEG to a PNG a band of rows at a time (the same PNG [`encode`] writes): memory holds
/// a band and the compressor, not the picture. `false` (and no output) when this decoder
/// does not take the JPEG: colours it does not turn into RGB (CMYK), or an error of
/// libjpeg's; the whole-image decoder then has its say.
fn jpeg_to_png_by_rows(input: &Path, output: &Path) -> Result<bool, TaskError> {
    // The PNG's last chunks are written when its writer is dropped, errors unseen: the
    // file notes whether every write reached it.
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let file = Noted {
        inner: BufWriter::new(File::create(output).map_err(|e| io_error("writing png", e))?),
        failed: failed.clone(),
    };
    let streamed = crate::jpeg::decode_rows(
        input,
        move |w, h, gray| png_stream(file, w, h, gray),
        |png, band| png.write_all(band),
        |png| png.finish().map_err(std::io::Error::other),
    );
    let written = !failed.load(std::sync::atomic::Ordering::Relaxed);
    match streamed {
        Ok(true) if written => Ok(true),
        Ok(true) => Err(io_error("writing png", "the file could not be written")),
        Ok(false) | Err(crate::jpeg::RowsError::Decode(_)) => {
            let _ = std::fs::remove_file(output);
            Ok(false)
        }
        Err(crate::jpeg::RowsError::Sink(e)) => Err(io_error("writing png", e)),
    }
}

/// A file that notes a failed write, and flushes when dropped, noting that too.
struct Noted {
    inner: BufWriter<File>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Noted {
    fn note<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        if r.is_err() {
            self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl Write for Noted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(r)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}

impl Drop for Noted {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A PNG writer of `w × h` 8-bit RGB or gray rows, at [`encode`]'s settings.
fn png_stream<W: Write>(out: W, w: u32, h: u32, gray: bool) -> std::io::Result<png::StreamWriter<'static, W>> {
    let mut enc = png::Encoder::new(out, w, h);
    enc.set_color(if gray {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Balanced);
    enc.set_filter(png::Filter::Adaptive);
    enc.write_header()?.into_stream_writer().map_err(std::io::Error::other)
}

/// An input checked by [`probe`]: its size, and how its EXIF says it is shown.
pub struct Probed {
    pub size: (u32, u32),
    pub orientation: Orientation,
}

/// [`probe`], and a JPEG's EXIF orientation read from its header.
pub fn probe_oriented(
    path: &Path,
    display_name: &str,
    format: &str,
    limits: &EngineLimits,
) -> Result<Probed, TaskError> {
    let size = probe(path, display_name, format, limits)?;
    let orientation = if format == "jpg" {
        // The EXIF segment comes before the first scan, in the first 64 KiB or so.
        use std::io::Read;
        let mut head = Vec::new();
        File::open(path)
            .and_then(|f| f.take(256 << 10).read_to_end(&mut head))
            .map_err(|e| io_error("reading the input", e))?;
        crate::jpeg::orientation(&head).unwrap_or(Orientation::NoTransforms)
    } else {
        Orientation::NoTransforms
    };
    Ok(Probed { size, orientation })
}

/// Decodes a probed input at the size `opts` ask for, upright: the EXIF orientation is
/// applied (outputs carry no EXIF to say it), and a width and height are the upright
/// picture's.
pub fn decode_upright(
    path: &Path,
    display_name: &str,
    format: &str,
    probed: &Probed,
    opts: &ImageOptions,
    limits: &EngineLimits,
) -> Result<DynamicImage, TaskError> {
    use Orientation::*;
    let (w, h) = probed.size;
    let mut stored = opts.clone();
    if matches!(
        probed.orientation,
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH
    ) {
        std::mem::swap(&mut stored.width, &mut stored.height);
    }
    let img = decode_probed(path, display_name, format, (w, h), limits, decode_target(w, h, &stored))?;
    let mut img = resize_scaled(img, (w, h), &stored)?;
    img.apply_orientation(probed.orientation);
    Ok(img)
}

/// Resizes an image that may have been decoded smaller than `original` to the size the
/// options give for `original`.
pub fn resize_scaled(img: DynamicImage, original: (u32, u32), opts: &ImageOptions) -> Result<DynamicImage, TaskError> {
    let (tw, th) = target_size(original.0, original.1, opts.width, opts.height, opts.fit);
    if (img.width(), img.height()) == (tw, th) {
        return Ok(img);
    }
    resize_exact(&img, tw, th, opts.fit == Fit::Crop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(target_size(6000, 4000, Some(400), None, Fit::Max), (400, 267));
        assert_eq!(target_size(6000, 4000, Some(400), Some(400), Fit::Max), (400, 267));
        assert_eq!(target_size(600, 400, Some(1200), None, Fit::Max), (600, 400));
        assert_eq!(target_size(600, 400, Some(1200), None, Fit::Upscale), (1200, 800));
        assert_eq!(target_size(600, 400, Some(100), Some(100), Fit::Crop), (100, 100));
        assert_eq!(target_size(600, 400, Some(100), Some(300), Fit::Scale), (100, 300));
        assert_eq!(target_size(600, 400, None, None, Fit::Scale), (600, 400));
    }

    #[test]
    fn round_trips_every_format_and_refuses_lies() {
        let dir = std::env::temp_dir().join(format!("rc-raster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.png");
        image::RgbaImage::from_fn(64, 48, |x, y| image::Rgba([x as u8 * 4, y as u8 * 5, 100, 255]))
            .save(&src)
            .unwrap();
        let limits = EngineLimits::default();
        let opts = ImageOptions {
            width: Some(32),
            ..Default::default()
        };
        for fmt in FORMATS {
            let out = dir.join(format!("out.{fmt}"));
            convert(&src, "src.png", "png", &out, fmt, &opts, &limits).unwrap();
            assert_eq!(sniff(&out).unwrap(), Some(*fmt));
            let img = image::open(&out).unwrap();
            assert_eq!((img.width(), img.height()), (32, 24), "{fmt}");
        }
        let e = convert(
            &src,
            "src.jpg",
            "jpg",
            &dir.join("x.png"),
            "png",
            &ImageOptions::default(),
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_file");
        assert!(e.message.contains("its content is png"), "{}", e.message);
        let small = EngineLimits {
            max_pixels: 1000,
            ..Default::default()
        };
        let e = convert(
            &src,
            "src.png",
            "png",
            &dir.join("y.png"),
            "png",
            &ImageOptions::default(),
            &small,
        )
        .unwrap_err();
        assert_eq!(e.code, "limit_exceeded");
        std::fs::remove_dir_all(&dir).ok();
    }
}
