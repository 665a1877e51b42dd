//! Watermarks: a line (or lines) of text in the bundled DejaVu Sans font, or an image,
//! placed on a raster image or on PDF pages with a position, margins, opacity, rotation,
//! size and colour.

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::{DynamicImage, Rgba, RgbaImage};
use runconvert_core::error::codes;
use runconvert_core::formats::{OptionSpec, OptionType};
use runconvert_core::ops::EngineOptions;
use runconvert_core::TaskError;
use serde_json::json;

/// DejaVu Sans (Bitstream Vera licence, see assets/DejaVuSans.LICENSE): shipped so
/// output never depends on the fonts of the host.
pub static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

const VERTICAL: &[&str] = &["top", "center", "bottom"];
const HORIZONTAL: &[&str] = &["left", "center", "right"];

pub fn options(pdf: bool) -> Vec<OptionSpec> {
    let mut o = vec![
        OptionSpec {
            name: "image",
            kind: OptionType::String { max_len: 128 },
            default: None,
            description: "Name of an input task whose image is the watermark (instead of, or with, `text`).",
        },
        OptionSpec {
            name: "image_width",
            kind: OptionType::Integer { min: 1, max: 10_000 },
            default: None,
            description: "Width of the watermark image (pixels; points on PDF pages).",
        },
        OptionSpec {
            name: "font_size",
            kind: OptionType::Integer { min: 1, max: 1_000 },
            default: Some(json!(40)),
            description: "Text size (pixels; points on PDF pages).",
        },
        OptionSpec {
            name: "font_color",
            kind: OptionType::Color,
            default: Some(json!("#000000")),
            description: "Text colour as #RRGGBB.",
        },
        OptionSpec {
            name: "opacity",
            kind: OptionType::Integer { min: 0, max: 100 },
            default: Some(json!(50)),
            description: "0 (invisible) to 100 (opaque).",
        },
        OptionSpec {
            name: "rotation",
            kind: OptionType::Integer { min: -360, max: 360 },
            default: Some(json!(0)),
            description: "Counter-clockwise rotation in degrees.",
        },
        OptionSpec {
            name: "position_vertical",
            kind: OptionType::Enum(VERTICAL),
            default: Some(json!("center")),
            description: "Where on the page or image, vertically.",
        },
        OptionSpec {
            name: "position_horizontal",
            kind: OptionType::Enum(HORIZONTAL),
            default: Some(json!("center")),
            description: "Where on the page or image, horizontally.",
        },
        OptionSpec {
            name: "margin_vertical",
            kind: OptionType::Integer { min: 0, max: 10_000 },
            default: Some(json!(25)),
            description: "Distance from the top or bottom edge.",
        },
        OptionSpec {
            name: "margin_horizontal",
            kind: OptionType::Integer { min: 0, max: 10_000 },
            default: Some(json!(25)),
            description: "Distance from the left or right edge.",
        },
    ];
    if pdf {
        o.push(OptionSpec {
            name: "pages",
            kind: OptionType::Pages,
            default: Some(json!("all")),
            description: "Pages to mark: `all`, or a list such as `1-3,5,8-`.",
        });
    } else {
        o.push(crate::raster::quality_option(90));
    }
    o
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Start,
    Center,
    End,
}

#[derive(Debug, Clone)]
pub struct Watermark {
    pub text: Option<String>,
    pub image: Option<DynamicImage>,
    pub image_width: Option<u32>,
    pub font_size: f32,
    pub color: [u8; 3],
    pub opacity: f32,
    pub rotation: f32,
    pub vertical: Place,
    pub horizontal: Place,
    pub margin_vertical: f32,
    pub margin_horizontal: f32,
    pub pages: PageSelection,
    pub quality: Option<u8>,
}

fn bad(msg: String) -> TaskError {
    TaskError::new(codes::INVALID_DATA, msg)
}

impl Watermark {
    /// Reads the options (the image, if any, is set by the caller).
    pub fn from_options(text: Option<&str>, o: &EngineOptions) -> Result<Self, TaskError> {
        use crate::raster::int_option;
        let color = match o.get("font_color").and_then(|v| v.as_str()) {
            None => [0, 0, 0],
            Some(s) => parse_color(s).ok_or_else(|| bad(format!("option font_color must be #RRGGBB, got {s:?}")))?,
        };
        let place = |name: &str, values: &[&str]| -> Result<Place, TaskError> {
            match o.get(name).and_then(|v| v.as_str()) {
                None => Ok(Place::Center),
                Some(v) => match values.iter().position(|x| *x == v) {
                    Some(0) => Ok(Place::Start),
                    Some(1) => Ok(Place::Center),
                    Some(_) => Ok(Place::End),
                    None => Err(bad(format!("option {name} must be one of {}", values.join(", ")))),
                },
            }
        };
        let pages = match o.get("pages").and_then(|v| v.as_str()) {
            None => PageSelection::All,
            Some(s) => PageSelection::parse(s).map_err(bad)?,
        };
        Ok(Watermark {
            text: text.map(String::from).filter(|t| !t.is_empty()),
            image: None,
            image_width: int_option(o, "image_width", 1, 10_000)?.map(|n| n as u32),
            font_size: int_option(o, "font_size", 1, 1000)?.unwrap_or(40) as f32,
            color,
            opacity: int_option(o, "opacity", 0, 100)?.unwrap_or(50) as f32 / 100.0,
            rotation: int_option(o, "rotation", -360, 360)?.unwrap_or(0) as f32,
            vertical: place("position_vertical", VERTICAL)?,
            horizontal: place("position_horizontal", HORIZONTAL)?,
            margin_vertical: int_option(o, "margin_vertical", 0, 10_000)?.unwrap_or(25) as f32,
            margin_horizontal: int_option(o, "margin_horizontal", 0, 10_000)?.unwrap_or(25) as f32,
            pages,
            quality: int_option(o, "quality", 1, 100)?.map(|n| n as u8),
        })
    }

    /// The overlay, unrotated, with opacity applied: text or image at `scale` pixels per
    /// unit (1 for raster images; more for PDF pages, for sharpness).
    pub fn layer(&self, scale: f32) -> Result<RgbaImage, TaskError> {
        let mut layer = match (&self.image, &self.text) {
            (Some(img), _) => {
                let mut rgba = img.to_rgba8();
                if let Some(w) = self.image_width {
                    let tw = ((w as f32) * scale).round().max(1.0) as u32;
                    let th = ((rgba.height() as f32 * tw as f32 / rgba.width() as f32).round() as u32).max(1);
                    rgba = crate::raster::resize_exact(&DynamicImage::ImageRgba8(rgba), tw, th, false)?.to_rgba8();
                } else if scale != 1.0 {
                    let tw = ((rgba.width() as f32 * scale).round() as u32).max(1);
                    let th = ((rgba.height() as f32 * scale).round() as u32).max(1);
                    rgba = crate::raster::resize_exact(&DynamicImage::ImageRgba8(rgba), tw, th, false)?.to_rgba8();
                }
                rgba
            }
            (None, Some(text)) => render_text(text, self.font_size * scale, self.color)?,
            (None, None) => return Err(bad("a watermark needs `text` or the `image` option".into())),
        };
        for p in layer.pixels_mut() {
            p[3] = (p[3] as f32 * self.opacity).round() as u8;
        }
        Ok(layer)
    }

    /// Top-left corner of a `lw × lh` overlay in a `w × h` area (y down).
    pub fn position(&self, w: f32, h: f32, lw: f32, lh: f32) -> (f32, f32) {
        let x = match self.horizontal {
            Place::Start => self.margin_horizontal,
            Place::Center => (w - lw) / 2.0,
            Place::End => w - lw - self.margin_horizontal,
        };
        let y = match self.vertical {
            Place::Start => self.margin_vertical,
            Place::Center => (h - lh) / 2.0,
            Place::End => h - lh - self.margin_vertical,
        };
        (x, y)
    }
}

pub fn parse_color(s: &str) -> Option<[u8; 3]> {
    let hex = s.strip_prefix('#')?;
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

/// Renders `text` (lines split on `\n`) at `px` pixels in `color`, on transparency.
pub fn render_text(text: &str, px: f32, color: [u8; 3]) -> Result<RgbaImage, TaskError> {
    let font =
        FontRef::try_from_slice(FONT).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, format!("font: {e}")))?;
    let mut missing: Vec<char> = text
        .chars()
        .filter(|c| !c.is_whitespace() && font.glyph_id(*c).0 == 0)
        .collect();
    if !missing.is_empty() {
        missing.dedup();
        let shown: String = missing
            .iter()
            .take(10)
            .map(|c| format!("{c:?} (U+{:04X}) ", *c as u32))
            .collect();
        return Err(TaskError::new(
            codes::INVALID_DATA,
            format!(
                "the watermark font (DejaVu Sans) has no glyph for: {}",
                shown.trim_end()
            ),
        ));
    }
    if text.chars().count() > 1000 {
        return Err(bad("watermark text is limited to 1000 characters".into()));
    }
    let scale = PxScale::from(px);
    let sf = font.as_scaled(scale);
    let line_height = sf.height() + sf.line_gap();
    let mut glyphs = Vec::new();
    let mut width: f32 = 0.0;
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let baseline = sf.ascent() + i as f32 * line_height;
        let mut x = 0.0f32;
        let mut prev = None;
        for c in line.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                x += sf.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(scale, point(x, baseline)));
            x += sf.h_advance(id);
            prev = Some(id);
        }
        width = width.max(x);
    }
    let w = (width.ceil() as u32 + 2).max(1);
    let h = ((lines.len() as f32 * line_height).ceil() as u32 + 2).max(1);
    if w as u64 * h as u64 > 400_000_000 {
        return Err(bad("the watermark text would be too large at this font size".into()));
    }
    let mut img = RgbaImage::new(w, h);
    for g in glyphs {
        if let Some(og) = font.outline_glyph(g) {
            let b = og.px_bounds();
            og.draw(|gx, gy, cov| {
                let x = gx as i32 + b.min.x as i32;
                let y = gy as i32 + b.min.y as i32;
                if x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
                    let p = img.get_pixel_mut(x as u32, y as u32);
                    let a = (cov.clamp(0.0, 1.0) * 255.0).round() as u8;
                    if a > p[3] {
                        *p = Rgba([color[0], color[1], color[2], a]);
                    }
                }
            });
        }
    }
    Ok(img)
}

/// Rotates counter-clockwise by `degrees` into a canvas that holds the whole result.
pub fn rotate(img: &RgbaImage, degrees: f32) -> RgbaImage {
    let r = degrees.rem_euclid(360.0);
    if r == 0.0 {
        return img.clone();
    }
    let (sin, cos) = (-r.to_radians()).sin_cos();
    let (w, h) = (img.width() as f32, img.height() as f32);
    let nw = (w * cos.abs() + h * sin.abs() - 1e-3).ceil().max(1.0) as u32;
    let nh = (w * sin.abs() + h * cos.abs() - 1e-3).ceil().max(1.0) as u32;
    let (cx, cy) = (w / 2.0, h / 2.0);
    let (ncx, ncy) = (nw as f32 / 2.0, nh as f32 / 2.0);
    RgbaImage::from_fn(nw, nh, |x, y| {
        // Inverse mapping: where in the source this pixel's centre comes from.
        let dx = x as f32 + 0.5 - ncx;
        let dy = y as f32 + 0.5 - ncy;
        let sx = dx * cos + dy * sin + cx - 0.5;
        let sy = -dx * sin + dy * cos + cy - 0.5;
        bilinear(img, sx, sy)
    })
}

fn bilinear(img: &RgbaImage, x: f32, y: f32) -> Rgba<u8> {
    let (w, h) = (img.width() as i32, img.height() as i32);
    let (x0, y0) = (x.floor() as i32, y.floor() as i32);
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let px = |xx: i32, yy: i32| -> [f32; 4] {
        if xx < 0 || yy < 0 || xx >= w || yy >= h {
            [0.0; 4]
        } else {
            let p = img.get_pixel(xx as u32, yy as u32).0;
            // Premultiplied, so transparent neighbours do not darken edges.
            let a = p[3] as f32 / 255.0;
            [p[0] as f32 * a, p[1] as f32 * a, p[2] as f32 * a, p[3] as f32]
        }
    };
    let (a, b, c, d) = (px(x0, y0), px(x0 + 1, y0), px(x0, y0 + 1), px(x0 + 1, y0 + 1));
    let mut out = [0f32; 4];
    for i in 0..4 {
        out[i] = a[i] * (1.0 - fx) * (1.0 - fy) + b[i] * fx * (1.0 - fy) + c[i] * (1.0 - fx) * fy + d[i] * fx * fy;
    }
    let alpha = out[3];
    if alpha <= 0.0 {
        return Rgba([0, 0, 0, 0]);
    }
    let un = 255.0 / alpha;
    Rgba([
        (out[0] * un).round().clamp(0.0, 255.0) as u8,
        (out[1] * un).round().clamp(0.0, 255.0) as u8,
        (out[2] * un).round().clamp(0.0, 255.0) as u8,
        alpha.round().clamp(0.0, 255.0) as u8,
    ])
}

/// Draws `layer` over `base` with its top-left corner at (x, y).
pub fn blend(base: &mut RgbaImage, layer: &RgbaImage, x: i64, y: i64) {
    for (lx, ly, p) in layer.enumerate_pixels() {
        let a = p[3] as u32;
        if a == 0 {
            continue;
        }
        let (bx, by) = (x + lx as i64, y + ly as i64);
        if bx < 0 || by < 0 || bx >= base.width() as i64 || by >= base.height() as i64 {
            continue;
        }
        let b = base.get_pixel_mut(bx as u32, by as u32);
        let ba = b[3] as u32;
        let out_a = a + ba * (255 - a) / 255;
        for i in 0..3 {
            let c = (p[i] as u32 * a + b[i] as u32 * ba * (255 - a) / 255) / out_a.max(1);
            b[i] = c.min(255) as u8;
        }
        b[3] = out_a.min(255) as u8;
    }
}

/// Watermarks a decoded raster image in place.
pub fn apply_to_image(img: &DynamicImage, wm: &Watermark) -> Result<DynamicImage, TaskError> {
    let had_alpha = img.color().has_alpha();
    let mut base = img.to_rgba8();
    let layer = rotate(&wm.layer(1.0)?, wm.rotation);
    let (x, y) = wm.position(
        base.width() as f32,
        base.height() as f32,
        layer.width() as f32,
        layer.height() as f32,
    );
    blend(&mut base, &layer, x.round() as i64, y.round() as i64);
    Ok(if had_alpha {
        DynamicImage::ImageRgba8(base)
    } else {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(base).to_rgb8())
    })
}

pub use runconvert_core::pages::PageSelection;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse() {
        let p = PageSelection::parse("1-3, 5,8-").unwrap();
        assert_eq!(p.pages(10), [1, 2, 3, 5, 8, 9, 10]);
        assert_eq!(PageSelection::parse("all").unwrap().pages(2), [1, 2]);
        assert!(PageSelection::parse("0").is_err());
        assert!(PageSelection::parse("3-1").is_err());
        assert!(PageSelection::parse("x").is_err());
    }

    #[test]
    fn text_renders_and_missing_glyphs_are_named() {
        let img = render_text("Confidential", 40.0, [255, 0, 0]).unwrap();
        assert!(
            img.width() > 150 && img.height() > 30,
            "{}x{}",
            img.width(),
            img.height()
        );
        assert!(img.pixels().any(|p| p[3] == 255 && p[0] == 255));
        let e = render_text("snow ☃ 🦀", 40.0, [0, 0, 0]).unwrap_err();
        assert!(e.message.contains("U+1F980"), "{}", e.message);
    }

    #[test]
    fn rotation_keeps_the_content() {
        let img = render_text("AB", 40.0, [0, 0, 0]).unwrap();
        let r = rotate(&img, 90.0);
        assert_eq!((r.width(), r.height()), (img.height(), img.width()));
        let sum = |i: &RgbaImage| i.pixels().map(|p| p[3] as u64).sum::<u64>();
        let (a, b) = (sum(&img) as f64, sum(&r) as f64);
        assert!((a - b).abs() / a < 0.05, "{a} vs {b}");
    }
}
