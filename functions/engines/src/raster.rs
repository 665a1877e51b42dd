//! Raster images with the `image` crate: jpg, png, gif, webp, bmp, tiff, ico, in and out,
//! with resizing.

use crate::EngineLimits;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader};
use runconvert_core::error::codes;
use runconvert_core::formats::{Capability, OptionSpec, OptionType, Registry};
use runconvert_core::ops::EngineOptions;
use runconvert_core::TaskError;
use serde_json::json;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;

pub const ENGINE: &str = "image";
pub const ENGINE_VERSION: &str = "0.25";

/// The raster formats this engine reads and writes.
pub const FORMATS: &[&str] = &["jpg", "png", "gif", "webp", "bmp", "tiff", "ico"];

const FITS: &[&str] = &["max", "crop", "scale", "upscale"];

fn options() -> Vec<OptionSpec> {
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
            kind: OptionType::Enum(FITS),
            default: Some(json!("max")),
            description: "max: fit inside width × height, keeping the aspect ratio, never enlarging; \
                upscale: the same, enlarging if needed; scale: exactly width × height, stretching; \
                crop: cover width × height and cut the overflow from the centre.",
        },
        OptionSpec {
            name: "quality",
            kind: OptionType::Integer { min: 1, max: 100 },
            default: Some(json!(85)),
            description: "JPEG quality (other formats here are lossless and ignore it).",
        },
    ]
}

pub fn register(registry: &mut Registry) {
    for input in FORMATS {
        for output in FORMATS {
            registry.add(Capability {
                operation: "convert",
                input_format: input,
                output_format: output,
                engine: ENGINE,
                engine_version: ENGINE_VERSION.to_string(),
                options: options(),
            });
        }
    }
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
    pub quality: u8,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            width: None,
            height: None,
            fit: Fit::Max,
            quality: 85,
        }
    }
}

impl ImageOptions {
    /// Reads the `options` of a convert task (already checked against [`options`]).
    pub fn from_options(o: &EngineOptions) -> Result<Self, TaskError> {
        let dim = |name: &str| -> Result<Option<u32>, TaskError> {
            match o.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=30_000).contains(n))
                    .map(|n| Some(n as u32))
                    .ok_or_else(|| {
                        TaskError::new(codes::INVALID_DATA, format!("option {name} must be from 1 to 30000"))
                    }),
            }
        };
        let fit = match o.get("fit").and_then(|v| v.as_str()) {
            None | Some("max") => Fit::Max,
            Some("crop") => Fit::Crop,
            Some("scale") => Fit::Scale,
            Some("upscale") => Fit::Upscale,
            Some(other) => {
                return Err(TaskError::new(
                    codes::INVALID_DATA,
                    format!("option fit must be one of {}, got {other:?}", FITS.join(", ")),
                ))
            }
        };
        let quality = match o.get("quality") {
            None => 85,
            Some(v) => v
                .as_u64()
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| TaskError::new(codes::INVALID_DATA, "option quality must be from 1 to 100"))?
                as u8,
        };
        Ok(ImageOptions {
            width: dim("width")?,
            height: dim("height")?,
            fit,
            quality,
        })
    }
}

fn image_format(name: &str) -> Option<ImageFormat> {
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

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "jpg",
        ImageFormat::Png => "png",
        ImageFormat::Gif => "gif",
        ImageFormat::WebP => "webp",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        ImageFormat::Ico => "ico",
        ImageFormat::Avif => "avif",
        ImageFormat::Pnm => "pnm",
        ImageFormat::Tga => "tga",
        ImageFormat::Dds => "dds",
        ImageFormat::Hdr => "hdr",
        ImageFormat::OpenExr => "exr",
        ImageFormat::Farbfeld => "farbfeld",
        ImageFormat::Qoi => "qoi",
        _ => "another image format",
    }
}

/// What a file's first bytes say it is, among the raster formats; `None` if not an image.
pub fn sniff(path: &Path) -> std::io::Result<Option<&'static str>> {
    let mut head = [0u8; 64];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        let read = f.read(&mut head[n..])?;
        if read == 0 {
            break;
        }
        n += read;
    }
    Ok(image::guess_format(&head[..n]).ok().map(format_name))
}

fn invalid(msg: impl Into<String>) -> TaskError {
    TaskError::new(codes::INVALID_FILE, msg)
}

/// Converts `input` (said to be `input_format`) to `output` in `output_format`.
/// `display_name` is the input's file name, for messages.
pub fn convert(
    input: &Path,
    display_name: &str,
    input_format: &str,
    output: &Path,
    output_format: &str,
    opts: &ImageOptions,
    limits: &EngineLimits,
) -> Result<(), TaskError> {
    let io = |e: std::io::Error| TaskError::new(codes::PROCESSING_FAILED, format!("reading {display_name}: {e}"));
    let real = sniff(input).map_err(io)?;
    match real {
        None => {
            return Err(invalid(format!(
                "{display_name} is not a {input_format} image: its content is not an image this server reads"
            )))
        }
        Some(real) if real != input_format => {
            return Err(invalid(format!(
                "{display_name} is said to be {input_format} but its content is {real}"
            )))
        }
        Some(_) => {}
    }
    let in_fmt = image_format(input_format)
        .ok_or_else(|| TaskError::new(codes::UNSUPPORTED_CONVERSION, format!("cannot read {input_format}")))?;
    let out_fmt = image_format(output_format)
        .ok_or_else(|| TaskError::new(codes::UNSUPPORTED_CONVERSION, format!("cannot write {output_format}")))?;

    let open = || -> Result<ImageReader<BufReader<File>>, TaskError> {
        let mut r = ImageReader::new(BufReader::new(File::open(input).map_err(io)?));
        r.set_format(in_fmt);
        Ok(r)
    };
    // The header first: refuse what is too large before allocating for it.
    let (w, h) = open()?
        .into_dimensions()
        .map_err(|e| invalid(format!("{display_name} is not a valid {input_format} image: {e}")))?;
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(TaskError::new(
            codes::LIMIT_EXCEEDED,
            format!(
                "{display_name} is {w}×{h} ({pixels} pixels); this server decodes at most {} pixels",
                limits.max_pixels
            ),
        ));
    }
    let mut reader = open()?;
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(w);
    decode_limits.max_image_height = Some(h);
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(decode_limits);
    let img = reader
        .decode()
        .map_err(|e| invalid(format!("{display_name} could not be decoded as {input_format}: {e}")))?;

    let img = resize(img, opts, out_fmt);
    write(&img, output, out_fmt, opts.quality)
        .map_err(|e| TaskError::new(codes::PROCESSING_FAILED, format!("writing {output_format}: {e}")))
}

/// The output size for an input of `w × h` under `opts`.
pub fn target_size(w: u32, h: u32, opts: &ImageOptions) -> (u32, u32) {
    let (w64, h64) = (w as f64, h as f64);
    let proportional = |tw: Option<u32>, th: Option<u32>, allow_up: bool| -> (u32, u32) {
        let sx = tw.map(|t| t as f64 / w64);
        let sy = th.map(|t| t as f64 / h64);
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
    match (opts.fit, opts.width, opts.height) {
        (_, None, None) => (w, h),
        (Fit::Max, tw, th) => proportional(tw, th, false),
        (Fit::Upscale, tw, th) => proportional(tw, th, true),
        (Fit::Scale | Fit::Crop, Some(tw), Some(th)) => (tw, th),
        (Fit::Scale | Fit::Crop, tw, th) => proportional(tw, th, true),
    }
}

fn resize(img: DynamicImage, opts: &ImageOptions, out: ImageFormat) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let (tw, th) = target_size(w, h, opts);
    let mut img = if (tw, th) == (w, h) {
        img
    } else {
        match opts.fit {
            Fit::Crop => img.resize_to_fill(tw, th, FilterType::CatmullRom),
            Fit::Scale => img.resize_exact(tw, th, FilterType::CatmullRom),
            Fit::Max | Fit::Upscale => img.resize_exact(tw, th, FilterType::CatmullRom),
        }
    };
    // An icon holds at most 256 × 256.
    if out == ImageFormat::Ico && (img.width() > 256 || img.height() > 256) {
        img = img.resize(256, 256, FilterType::CatmullRom);
    }
    img
}

fn write(img: &DynamicImage, output: &Path, fmt: ImageFormat, quality: u8) -> image::ImageResult<()> {
    let mut out = BufWriter::new(File::create(output)?);
    match fmt {
        ImageFormat::Jpeg => {
            // JPEG has no alpha: flatten onto white.
            let rgb = if img.color().has_alpha() {
                flatten_on_white(img)
            } else {
                img.to_rgb8()
            };
            JpegEncoder::new_with_quality(&mut out, quality).encode_image(&rgb)?;
        }
        ImageFormat::WebP => {
            let rgba = img.to_rgba8();
            WebPEncoder::new_lossless(&mut out).encode(
                rgba.as_raw(),
                rgba.width(),
                rgba.height(),
                image::ExtendedColorType::Rgba8,
            )?;
        }
        ImageFormat::Gif | ImageFormat::Ico => DynamicImage::ImageRgba8(img.to_rgba8()).write_to(&mut out, fmt)?,
        ImageFormat::Bmp => {
            let converted = if img.color().has_alpha() {
                DynamicImage::ImageRgba8(img.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(img.to_rgb8())
            };
            converted.write_to(&mut out, fmt)?
        }
        _ => img.write_to(&mut out, fmt)?,
    }
    use std::io::Write;
    out.flush()?;
    Ok(())
}

fn flatten_on_white(img: &DynamicImage) -> image::RgbImage {
    let rgba = img.to_rgba8();
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        let mix = |c: u8| ((c as u32 * a + 255 * (255 - a)) / 255) as u8;
        image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(w: Option<u32>, h: Option<u32>, fit: Fit) -> ImageOptions {
        ImageOptions {
            width: w,
            height: h,
            fit,
            quality: 85,
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(target_size(6000, 4000, &opts(Some(400), None, Fit::Max)), (400, 267));
        assert_eq!(
            target_size(6000, 4000, &opts(Some(400), Some(400), Fit::Max)),
            (400, 267)
        );
        assert_eq!(target_size(600, 400, &opts(Some(1200), None, Fit::Max)), (600, 400));
        assert_eq!(
            target_size(600, 400, &opts(Some(1200), None, Fit::Upscale)),
            (1200, 800)
        );
        assert_eq!(
            target_size(600, 400, &opts(Some(100), Some(100), Fit::Crop)),
            (100, 100)
        );
        assert_eq!(
            target_size(600, 400, &opts(Some(100), Some(300), Fit::Scale)),
            (100, 300)
        );
        assert_eq!(target_size(600, 400, &opts(None, None, Fit::Scale)), (600, 400));
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
        for fmt in FORMATS {
            let out = dir.join(format!("out.{fmt}"));
            convert(
                &src,
                "src.png",
                "png",
                &out,
                fmt,
                &opts(Some(32), None, Fit::Max),
                &limits,
            )
            .unwrap();
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
        let small = EngineLimits { max_pixels: 1000 };
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
