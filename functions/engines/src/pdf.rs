//! PDF with lopdf: merging PDFs and images (JPEG embedded as DCT, without re-encoding),
//! compressing (downsampling and re-encoding photos, object streams), watermarking pages.

use crate::process::InputFile;
use crate::raster;
use crate::watermark::Watermark;
use crate::EngineLimits;
use lopdf::{dictionary, Dictionary, Document, Object, ObjectId, Stream};
use runconvert_core::error::codes;
use runconvert_core::formats::{OptionSpec, OptionType};
use runconvert_core::TaskError;
use serde_json::json;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub const ENGINE: &str = "lopdf";
pub const ENGINE_VERSION: &str = "0.47";

fn invalid(msg: impl Into<String>) -> TaskError {
    TaskError::new(codes::INVALID_FILE, msg)
}

fn failed(what: &str, e: impl std::fmt::Display) -> TaskError {
    TaskError::new(codes::PROCESSING_FAILED, format!("{what}: {e}"))
}

/// Opens a PDF, refusing broken, password-protected, empty and over-long ones.
pub fn load(path: &Path, name: &str, limits: &EngineLimits) -> Result<Document, TaskError> {
    raster::check_format(path, name, "pdf")?;
    let mut doc = Document::load(path).map_err(|e| {
        let m = e.to_string();
        let lower = m.to_ascii_lowercase();
        if lower.contains("password") || lower.contains("decrypt") || lower.contains("encrypt") {
            invalid(format!(
                "{name} is encrypted with a password; remove the password and try again"
            ))
        } else {
            invalid(format!("{name} is not a valid PDF: {m}"))
        }
    })?;
    if doc.is_encrypted() {
        if !doc.was_encrypted() {
            return Err(invalid(format!(
                "{name} is encrypted with a password; remove the password and try again"
            )));
        }
        // Opened with the empty user password: what comes out is not encrypted again.
        doc.trailer.remove(b"Encrypt");
    }
    let pages = doc.get_pages().len() as u32;
    if pages == 0 {
        return Err(invalid(format!("{name} has no pages")));
    }
    if pages > limits.max_pages {
        return Err(TaskError::new(
            codes::LIMIT_EXCEEDED,
            format!(
                "{name} has {pages} pages; this server takes at most {}",
                limits.max_pages
            ),
        ));
    }
    check_content_volume(&doc, name, limits)?;
    Ok(doc)
}

/// Refuses a PDF whose drawing instructions (the pages' content streams and form
/// XObjects) inflate past the limit: a few MB of deflated path operators can hold a
/// renderer at full CPU for an hour. Counted by inflating into nothing, never more than
/// the limit; what inflated before a corrupt end counts too (renderers ignore checksums).
fn check_content_volume(doc: &Document, name: &str, limits: &EngineLimits) -> Result<(), TaskError> {
    let cap = limits.max_pdf_content;
    let too_much = || {
        TaskError::new(
            codes::LIMIT_EXCEEDED,
            format!(
                "the drawing instructions of {name} inflate to more than this server's limit of {} MiB",
                cap >> 20
            ),
        )
    };
    let mut ids: Vec<ObjectId> = doc
        .get_pages()
        .values()
        .flat_map(|&page| doc.get_page_contents(page))
        .collect();
    ids.extend(doc.objects.iter().filter_map(|(id, o)| match o {
        Object::Stream(s) if s.dict.get(b"Subtype").and_then(|t| t.as_name()).ok() == Some(b"Form".as_slice()) => {
            Some(*id)
        }
        _ => None,
    }));
    ids.sort();
    ids.dedup();
    let mut total: u64 = 0;
    for id in ids {
        let Ok(Object::Stream(stream)) = doc.get_object(id) else {
            continue;
        };
        let filters: Vec<&[u8]> = match stream.dict.get(b"Filter") {
            Ok(Object::Name(n)) => vec![n.as_slice()],
            Ok(Object::Array(a)) => a.iter().filter_map(|o| o.as_name().ok()).collect(),
            _ => Vec::new(),
        };
        let left = cap.saturating_sub(total) + 1;
        total += match filters.as_slice() {
            [] => stream.content.len() as u64,
            [f] if *f == b"FlateDecode" => inflated_size(&stream.content, left),
            // Chains and other expanding filters are not measured: not rendered either.
            _ => {
                return Err(TaskError::new(
                    codes::LIMIT_EXCEEDED,
                    format!(
                        "{name} has drawing instructions behind filters this server does not measure ({}); save it again with plain compression",
                        filters.iter().map(|f| String::from_utf8_lossy(f)).collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
        };
        if total > cap {
            return Err(too_much());
        }
    }
    Ok(())
}

/// How many bytes `deflated` inflates to, counting at most `cap` (and what came out
/// before an error).
fn inflated_size(deflated: &[u8], cap: u64) -> u64 {
    struct Count(u64);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let mut reader = std::io::Read::take(flate2::read::ZlibDecoder::new(deflated), cap);
    let _ = std::io::copy(&mut reader, &mut count);
    count.0
}

#[cfg(test)]
mod content_tests {
    use super::*;

    #[test]
    fn inflated_size_counts_a_stream_with_a_corrupt_end() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&vec![b'q'; 1 << 20]).unwrap();
        let mut data = z.finish().unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff; // the Adler-32 checksum
                             // All but the last buffer before the error.
        assert!(inflated_size(&data, u64::MAX) > (1 << 20) - (64 << 10));
        assert_eq!(inflated_size(&data, 1000), 1000);
    }
}

pub fn page_count(path: &Path, name: &str, limits: &EngineLimits) -> Result<u32, TaskError> {
    Ok(load(path, name, limits)?.get_pages().len() as u32)
}

/// Each page's size in points (its MediaBox, times its UserUnit), in page order.
pub fn page_sizes(path: &Path, name: &str, limits: &EngineLimits) -> Result<Vec<(f32, f32)>, TaskError> {
    let doc = load(path, name, limits)?;
    Ok(doc
        .get_pages()
        .values()
        .map(|&page| {
            let (x0, y0, x1, y1) = page_box(&doc, page);
            let unit = doc
                .get_dictionary(page)
                .ok()
                .and_then(|d| d.get(b"UserUnit").ok())
                .and_then(|o| number(&doc, o))
                .filter(|u| u.is_finite() && *u > 0.0)
                .unwrap_or(1.0);
            ((x1 - x0) * unit, (y1 - y0) * unit)
        })
        .collect())
}

/// Refuses to rasterise page `n` (of size `pt` in points) at `dpi` when the picture would
/// be larger than the server's pixel limit: a few hundred bytes of PDF can ask for a page
/// of hundreds of megapixels.
pub fn check_render_size(name: &str, n: u32, pt: (f32, f32), dpi: u32, limits: &EngineLimits) -> Result<(), TaskError> {
    let px = |v: f32| ((v.abs() as f64) * dpi as f64 / 72.0).ceil();
    let (w, h) = (px(pt.0), px(pt.1));
    let pixels = w * h;
    // A NaN (an overflowing MediaBox) is refused too.
    if pixels.is_nan() || pixels > limits.max_pixels as f64 {
        return Err(TaskError::new(
            codes::LIMIT_EXCEEDED,
            format!(
                "page {n} of {name} is {:.0}×{:.0} pt, which at {dpi} dpi is {w:.0}×{h:.0} pixels ({:.0} MP); this server renders at most {:.0} MP (ask a lower resolution)",
                pt.0.abs(),
                pt.1.abs(),
                pixels / 1e6,
                limits.max_pixels as f64 / 1e6
            ),
        ));
    }
    Ok(())
}

/// A page attribute, looked up through the page tree as PDF inheritance says.
fn inherited(doc: &Document, page: ObjectId, key: &[u8]) -> Option<Object> {
    let mut node = doc.get_dictionary(page).ok()?;
    for _ in 0..64 {
        if let Ok(v) = node.get(key) {
            return Some(v.clone());
        }
        let parent = node.get(b"Parent").and_then(Object::as_reference).ok()?;
        node = doc.get_dictionary(parent).ok()?;
    }
    None
}

/// Copies inherited attributes onto every page, so pages can leave their tree.
fn flatten_inherited(doc: &mut Document) {
    let pages: Vec<ObjectId> = doc.get_pages().values().copied().collect();
    for page in pages {
        for key in [&b"Resources"[..], b"MediaBox", b"CropBox", b"Rotate"] {
            let has = doc.get_dictionary(page).map(|d| d.has(key)).unwrap_or(true);
            if !has {
                if let Some(v) = inherited(doc, page, key) {
                    if let Ok(d) = doc.get_dictionary_mut(page) {
                        d.set(key.to_vec(), v);
                    }
                }
            }
        }
    }
}

fn number(doc: &Document, o: &Object) -> Option<f32> {
    doc.dereference(o).ok().and_then(|(_, o)| o.as_float().ok())
}

/// The page's MediaBox as (x0, y0, x1, y1), Letter if it has none.
fn page_box(doc: &Document, page: ObjectId) -> (f32, f32, f32, f32) {
    let b = inherited(doc, page, b"MediaBox")
        .and_then(|o| doc.dereference(&o).ok().map(|(_, o)| o.clone()))
        .and_then(|o| o.as_array().ok().cloned())
        .and_then(|a| {
            let v: Vec<f32> = a.iter().filter_map(|o| number(doc, o)).collect();
            (v.len() == 4).then(|| (v[0].min(v[2]), v[1].min(v[3]), v[0].max(v[2]), v[1].max(v[3])))
        });
    b.unwrap_or((0.0, 0.0, 612.0, 792.0))
}

fn page_rotation(doc: &Document, page: ObjectId) -> i64 {
    inherited(doc, page, b"Rotate")
        .and_then(|o| o.as_i64().ok())
        .unwrap_or(0)
        .rem_euclid(360)
}

fn save(doc: &mut Document, output: &Path, modern: bool) -> Result<(), TaskError> {
    let mut f = BufWriter::with_capacity(1 << 20, File::create(output).map_err(|e| failed("writing the PDF", e))?);
    let result = if modern {
        let opts = lopdf::SaveOptions::builder()
            .use_object_streams(true)
            .use_xref_streams(true)
            .build();
        doc.save_with_options(&mut f, opts)
    } else {
        doc.save_to(&mut f)
    };
    result.map_err(|e| failed("writing the PDF", e))?;
    f.flush().map_err(|e| failed("writing the PDF", e))
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::new(6));
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// An image XObject for a raster file, and its size in pixels. JPEGs go in as they are.
fn image_xobject(
    doc: &mut Document,
    f: &InputFile,
    format: &str,
    limits: &EngineLimits,
) -> Result<(ObjectId, u32, u32), TaskError> {
    raster::check_format(&f.path, &f.name, format)?;
    if format == "jpg" {
        let bytes = std::fs::read(&f.path).map_err(|e| failed("reading the image", e))?;
        let mut d = jpeg_decoder::Decoder::new(&bytes[..]);
        if d.read_info().is_ok() {
            if let Some(info) = d.info() {
                limits.check_pixels(&f.name, info.width as u32, info.height as u32)?;
                let cs: Option<(&str, Option<Object>)> = match info.pixel_format {
                    jpeg_decoder::PixelFormat::RGB24 => Some(("DeviceRGB", None)),
                    jpeg_decoder::PixelFormat::L8 => Some(("DeviceGray", None)),
                    // Adobe's CMYK JPEGs store inverted values.
                    jpeg_decoder::PixelFormat::CMYK32 => Some((
                        "DeviceCMYK",
                        Some(Object::Array(
                            [1, 0, 1, 0, 1, 0, 1, 0].iter().map(|n| Object::Integer(*n)).collect(),
                        )),
                    )),
                    _ => None,
                };
                if let Some((cs, decode)) = cs {
                    let (w, h) = (info.width as u32, info.height as u32);
                    let mut dict = dictionary! {
                        "Type" => "XObject",
                        "Subtype" => "Image",
                        "Width" => w as i64,
                        "Height" => h as i64,
                        "ColorSpace" => Object::Name(cs.as_bytes().to_vec()),
                        "BitsPerComponent" => 8,
                        "Filter" => "DCTDecode",
                    };
                    if let Some(decode) = decode {
                        dict.set("Decode", decode);
                    }
                    let id = doc.add_object(Stream::new(dict, bytes).with_compression(false));
                    return Ok((id, w, h));
                }
            }
        }
    }
    let img = raster::decode(&f.path, &f.name, format, limits, None)?;
    let (w, h) = (img.width(), img.height());
    let smask = if img.color().has_alpha() {
        let alpha: Vec<u8> = img.to_rgba8().pixels().map(|p| p[3]).collect();
        let dict = dictionary! {
            "Type" => "XObject", "Subtype" => "Image", "Width" => w as i64, "Height" => h as i64,
            "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8, "Filter" => "FlateDecode",
        };
        Some(doc.add_object(Stream::new(dict, deflate(&alpha)).with_compression(false)))
    } else {
        None
    };
    let (cs, data) = match &img {
        image::DynamicImage::ImageLuma8(g) => ("DeviceGray", g.as_raw().clone()),
        image::DynamicImage::ImageLumaA8(_) => ("DeviceGray", img.to_luma8().into_raw()),
        _ => ("DeviceRGB", img.to_rgb8().into_raw()),
    };
    let mut dict = dictionary! {
        "Type" => "XObject", "Subtype" => "Image", "Width" => w as i64, "Height" => h as i64,
        "ColorSpace" => Object::Name(cs.as_bytes().to_vec()), "BitsPerComponent" => 8, "Filter" => "FlateDecode",
    };
    if let Some(m) = smask {
        dict.set("SMask", m);
    }
    let id = doc.add_object(Stream::new(dict, deflate(&data)).with_compression(false));
    Ok((id, w, h))
}

/// A page showing one image at 72 dpi (one pixel, one point).
fn add_image_page(
    doc: &mut Document,
    parent: ObjectId,
    f: &InputFile,
    format: &str,
    limits: &EngineLimits,
) -> Result<ObjectId, TaskError> {
    let (img, w, h) = image_xobject(doc, f, format, limits)?;
    let content = format!("q {w} 0 0 {h} 0 0 cm /Im0 Do Q").into_bytes();
    let content_id = doc.add_object(Stream::new(dictionary! {}, content));
    let page = dictionary! {
        "Type" => "Page",
        "Parent" => parent,
        "MediaBox" => vec![0.into(), 0.into(), (w as i64).into(), (h as i64).into()],
        "Resources" => dictionary! { "XObject" => dictionary! { "Im0" => img } },
        "Contents" => content_id,
    };
    Ok(doc.add_object(page))
}

fn is_type(o: &Object, t: &[u8]) -> bool {
    let dict = match o {
        Object::Dictionary(d) => d,
        Object::Stream(s) => &s.dict,
        _ => return false,
    };
    dict.get(b"Type")
        .and_then(Object::as_name)
        .map(|n| n == t)
        .unwrap_or(false)
}

/// One PDF of every input's pages, in input order: PDFs page by page, images one per page.
/// Returns the page count.
pub fn merge(inputs: &[(InputFile, &str)], output: &Path, limits: &EngineLimits) -> Result<u32, TaskError> {
    let mut out = Document::with_version("1.7");
    let pages_id = out.new_object_id();
    let mut kids: Vec<ObjectId> = Vec::new();
    for (f, format) in inputs {
        if *format == "pdf" {
            let mut doc = load(&f.path, &f.name, limits)?;
            flatten_inherited(&mut doc);
            doc.renumber_objects_with(out.max_id + 1);
            let page_ids: Vec<ObjectId> = doc.get_pages().values().copied().collect();
            let max = doc.objects.keys().map(|k| k.0).max().unwrap_or(0);
            for (id, obj) in std::mem::take(&mut doc.objects) {
                if is_type(&obj, b"Catalog")
                    || is_type(&obj, b"Pages")
                    || is_type(&obj, b"ObjStm")
                    || is_type(&obj, b"XRef")
                {
                    continue;
                }
                out.objects.insert(id, obj);
            }
            for pid in page_ids {
                if let Some(Object::Dictionary(d)) = out.objects.get_mut(&pid) {
                    d.set("Parent", pages_id);
                    kids.push(pid);
                }
            }
            out.max_id = out.max_id.max(max);
        } else if raster::FORMATS.contains(format) {
            kids.push(add_image_page(&mut out, pages_id, f, format, limits)?);
        } else {
            return Err(TaskError::new(
                codes::UNSUPPORTED_CONVERSION,
                format!("merge takes PDFs and images; {} is {format}", f.name),
            ));
        }
        if kids.len() as u32 > limits.max_pages {
            return Err(TaskError::new(
                codes::LIMIT_EXCEEDED,
                format!("the merged PDF would have more than {} pages", limits.max_pages),
            ));
        }
    }
    let count = kids.len() as u32;
    out.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids.into_iter().map(Object::Reference).collect::<Vec<_>>(),
            "Count" => count as i64,
        }),
    );
    let catalog = out.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    out.trailer.set("Root", catalog);
    save(&mut out, output, false)?;
    Ok(count)
}

// ---- compress ----------------------------------------------------------------------

pub const PROFILES: &[&str] = &["web", "print", "max"];

pub fn compress_options() -> Vec<OptionSpec> {
    vec![
        OptionSpec {
            name: "profile",
            kind: OptionType::Enum(PROFILES),
            default: Some(json!("web")),
            description: "web: photos at 150 dpi, JPEG quality 55; print: 300 dpi, quality 85; \
                max: 72 dpi, quality 40. Photos already smaller are only re-encoded when that saves bytes.",
        },
        OptionSpec {
            name: "image_resolution",
            kind: OptionType::Integer { min: 36, max: 1200 },
            default: None,
            description: "Overrides the profile's resolution (dpi) for photos.",
        },
        OptionSpec {
            name: "image_quality",
            kind: OptionType::Integer { min: 1, max: 100 },
            default: None,
            description: "Overrides the profile's JPEG quality for photos.",
        },
    ]
}

#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub dpi: f32,
    pub quality: u8,
}

impl Profile {
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "web" => Profile {
                dpi: 150.0,
                quality: 55,
            },
            "print" => Profile {
                dpi: 300.0,
                quality: 85,
            },
            "max" => Profile { dpi: 72.0, quality: 40 },
            _ => return None,
        })
    }
}

/// What an image stream holds, if it is one this compressor can rewrite.
struct Photo {
    width: u32,
    height: u32,
    gray: bool,
    dct: bool,
}

fn rewritable(doc: &Document, s: &Stream) -> Option<Photo> {
    let d = &s.dict;
    if d.get(b"Subtype").and_then(Object::as_name).ok()? != b"Image" {
        return None;
    }
    if d.has(b"ImageMask") || d.has(b"Decode") || d.has(b"Mask") {
        return None;
    }
    let bpc = d.get(b"BitsPerComponent").and_then(Object::as_i64).ok()?;
    if bpc != 8 {
        return None;
    }
    let width = d.get(b"Width").and_then(Object::as_i64).ok()? as u32;
    let height = d.get(b"Height").and_then(Object::as_i64).ok()? as u32;
    let cs = doc.dereference(d.get(b"ColorSpace").ok()?).ok()?.1;
    let components = match cs {
        Object::Name(n) if n == b"DeviceRGB" => 3,
        Object::Name(n) if n == b"DeviceGray" => 1,
        Object::Array(a) if a.first().and_then(|o| o.as_name().ok()) == Some(b"ICCBased") => {
            let icc = doc.dereference(a.get(1)?).ok()?.1.as_stream().ok()?;
            icc.dict.get(b"N").and_then(Object::as_i64).ok()?
        }
        _ => return None,
    };
    if components != 1 && components != 3 {
        return None;
    }
    let filters = s.filters().ok()?;
    let dct = match filters.as_slice() {
        [f] if *f == b"DCTDecode" => true,
        [f] if *f == b"FlateDecode" && !d.has(b"DecodeParms") => false,
        _ => return None,
    };
    Some(Photo {
        width,
        height,
        gray: components == 1,
        dct,
    })
}

/// The image XObjects a page's resources name: name → object id.
fn page_images(doc: &Document, page: ObjectId) -> HashMap<Vec<u8>, ObjectId> {
    let mut out = HashMap::new();
    let Some(res) = inherited(doc, page, b"Resources") else {
        return out;
    };
    let Ok((_, res)) = doc.dereference(&res) else {
        return out;
    };
    let Ok(res) = res.as_dict() else { return out };
    let Ok(xobjects) = res
        .get(b"XObject")
        .and_then(|x| doc.dereference(x))
        .and_then(|(_, x)| x.as_dict())
    else {
        return out;
    };
    for (name, v) in xobjects.iter() {
        if let Ok(id) = v.as_reference() {
            let is_image = doc
                .get_object(id)
                .and_then(Object::as_stream)
                .map(|s| {
                    s.dict
                        .get(b"Subtype")
                        .and_then(Object::as_name)
                        .map(|n| n == b"Image")
                        .unwrap_or(false)
                })
                .unwrap_or(false);
            if is_image {
                out.insert(name.clone(), id);
            }
        }
    }
    out
}

/// For each image drawn on the page, the longer side it is drawn at, in points: the
/// image fills the unit square under the current transformation matrix at its `Do`.
fn drawn_sizes(doc: &Document, page: ObjectId, names: &HashMap<Vec<u8>, ObjectId>) -> HashMap<Vec<u8>, f32> {
    let mut sizes: HashMap<Vec<u8>, f32> = HashMap::new();
    if names.is_empty() {
        return sizes;
    }
    let Ok(bytes) = doc.get_page_content_with_limit(page, 64 << 20) else {
        return sizes;
    };
    let Ok(content) = lopdf::content::Content::decode(&bytes) else {
        return sizes;
    };
    let mut ctm = [1f32, 0.0, 0.0, 1.0, 0.0, 0.0];
    let mut stack: Vec<[f32; 6]> = Vec::new();
    for op in content.operations {
        match op.operator.as_str() {
            "q" => stack.push(ctm),
            "Q" => ctm = stack.pop().unwrap_or([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
            "cm" if op.operands.len() == 6 => {
                let m: Vec<f32> = op.operands.iter().map(|o| o.as_float().unwrap_or(0.0)).collect();
                // new CTM = m × CTM
                ctm = [
                    m[0] * ctm[0] + m[1] * ctm[2],
                    m[0] * ctm[1] + m[1] * ctm[3],
                    m[2] * ctm[0] + m[3] * ctm[2],
                    m[2] * ctm[1] + m[3] * ctm[3],
                    m[4] * ctm[0] + m[5] * ctm[2] + ctm[4],
                    m[4] * ctm[1] + m[5] * ctm[3] + ctm[5],
                ];
            }
            "Do" => {
                if let Some(Ok(name)) = op.operands.first().map(Object::as_name) {
                    if names.contains_key(name) {
                        let w = (ctm[0] * ctm[0] + ctm[1] * ctm[1]).sqrt();
                        let h = (ctm[2] * ctm[2] + ctm[3] * ctm[3]).sqrt();
                        let e = sizes.entry(name.to_vec()).or_insert(0.0);
                        *e = e.max(w.max(h));
                    }
                }
            }
            _ => {}
        }
    }
    sizes
}

/// A re-encoded photo: JPEG bytes, width, height.
type Recompressed = (Vec<u8>, u32, u32);

/// Decodes, downsamples and re-encodes one photo; `None` when that would not save bytes.
fn recompress(s: &Stream, p: &Photo, max_long_side: u32, quality: u8, limits: &EngineLimits) -> Option<Recompressed> {
    limits.check_pixels("an embedded image", p.width, p.height).ok()?;
    let long = p.width.max(p.height);
    let scale = (max_long_side as f64 / long as f64).min(1.0);
    let (tw, th) = (
        ((p.width as f64 * scale).round() as u32).max(1),
        ((p.height as f64 * scale).round() as u32).max(1),
    );
    let img: image::DynamicImage = if p.dct {
        // A photo of too many scans (a pass over it each) is left as it is.
        if crate::jpeg::outline(&s.content[..]).ok()?.scans > crate::jpeg::MAX_SCANS {
            return None;
        }
        let mut d = jpeg_decoder::Decoder::new(&s.content[..]);
        d.read_info().ok()?;
        let (w, h) = d.scale(tw.min(65535) as u16, th.min(65535) as u16).ok()?;
        let info = d.info()?;
        let px = d.decode().ok()?;
        match info.pixel_format {
            jpeg_decoder::PixelFormat::RGB24 => {
                image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(w as u32, h as u32, px)?)
            }
            jpeg_decoder::PixelFormat::L8 => {
                image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(w as u32, h as u32, px)?)
            }
            _ => return None,
        }
    } else {
        let expected = p.width as usize * p.height as usize * if p.gray { 1 } else { 3 };
        let raw = s.decompressed_content_with_limit(expected + 16).ok()?;
        if raw.len() < expected {
            return None;
        }
        let raw = raw[..expected].to_vec();
        if p.gray {
            image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(p.width, p.height, raw)?)
        } else {
            image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(p.width, p.height, raw)?)
        }
    };
    let img = if (img.width(), img.height()) != (tw, th) {
        raster::resize_exact(&img, tw, th, false).ok()?
    } else {
        img
    };
    let out = raster::jpeg_bytes(&img, quality, crate::jpeg::Effort::Small, &[]).ok()?;
    (out.len() < s.content.len()).then_some((out, tw, th))
}

/// Rewrites the photos of a PDF at the profile's resolution and quality, compresses
/// what is uncompressed, drops unused objects and writes object streams.
pub fn compress(
    input: &Path,
    name: &str,
    output: &Path,
    profile: Profile,
    limits: &EngineLimits,
) -> Result<(), TaskError> {
    let mut doc = load(input, name, limits)?;
    // The largest a photo can usefully be: the size it is drawn at, at the profile's dpi
    // (from the page's content stream); where that cannot be told, the page's longer side.
    let mut budget: HashMap<ObjectId, u32> = HashMap::new();
    for page in doc.get_pages().values().copied() {
        let (x0, y0, x1, y1) = page_box(&doc, page);
        let page_long_px = (((x1 - x0).max(y1 - y0) / 72.0).max(0.1) * profile.dpi).ceil() as u32;
        let names = page_images(&doc, page);
        let drawn = drawn_sizes(&doc, page, &names);
        for (name, id) in &names {
            let px = match drawn.get(name) {
                Some(long_pt) => ((long_pt / 72.0) * profile.dpi).ceil().max(16.0) as u32,
                None => page_long_px,
            };
            let e = budget.entry(*id).or_insert(0);
            *e = (*e).max(px);
        }
    }
    let ids: Vec<ObjectId> = budget.keys().copied().collect();
    let jobs: Vec<(ObjectId, Photo, u32)> = ids
        .into_iter()
        .filter_map(|id| {
            let s = doc.get_object(id).ok()?.as_stream().ok()?;
            rewritable(&doc, s).map(|p| (id, p, budget[&id]))
        })
        .collect();
    // Photos are independent: rewrite them on all cores.
    let results: Vec<(ObjectId, Option<Recompressed>)> = std::thread::scope(|scope| {
        let doc = &doc;
        let handles: Vec<_> = jobs
            .iter()
            .map(|(id, p, max)| {
                scope.spawn(move || {
                    let s = doc.get_object(*id).ok().and_then(|o| o.as_stream().ok());
                    (*id, s.and_then(|s| recompress(s, p, *max, profile.quality, limits)))
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (id, result) in results {
        let Some((bytes, w, h)) = result else { continue };
        if let Ok(Object::Stream(s)) = doc.get_object_mut(id) {
            s.dict.set("Width", w as i64);
            s.dict.set("Height", h as i64);
            s.dict.set("Filter", "DCTDecode");
            s.dict.set("BitsPerComponent", 8);
            s.dict.remove(b"DecodeParms");
            s.set_content(bytes);
            s.allows_compression = false;
        }
    }
    doc.compress();
    doc.prune_objects();
    save(&mut doc, output, true)
}

// ---- watermark ---------------------------------------------------------------------

/// Layer pixels per PDF point: text is rendered at 4× for sharpness when zoomed.
const LAYER_SCALE: f32 = 4.0;
const WATERMARK_NAME: &str = "RcWatermark";

pub fn watermark(
    input: &Path,
    name: &str,
    output: &Path,
    wm: &Watermark,
    limits: &EngineLimits,
) -> Result<u32, TaskError> {
    let mut doc = load(input, name, limits)?;
    flatten_inherited(&mut doc);
    let pages = doc.get_pages();
    let selected: Vec<(u32, ObjectId)> = pages
        .iter()
        .filter(|(n, _)| wm.pages.contains(**n))
        .map(|(n, id)| (*n, *id))
        .collect();
    if selected.is_empty() {
        return Err(TaskError::new(
            codes::INVALID_DATA,
            format!("option pages selects none of the {} pages of {name}", pages.len()),
        ));
    }
    let layer = wm.layer(LAYER_SCALE)?;
    let (lw, lh) = (layer.width() as f32 / LAYER_SCALE, layer.height() as f32 / LAYER_SCALE);
    let rgb: Vec<u8> = layer.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
    let alpha: Vec<u8> = layer.pixels().map(|p| p[3]).collect();
    let (w, h) = (layer.width() as i64, layer.height() as i64);
    let smask = doc.add_object(
        Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => w, "Height" => h,
            "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8, "Filter" => "FlateDecode" },
            deflate(&alpha),
        )
        .with_compression(false),
    );
    let image = doc.add_object(
        Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => w, "Height" => h,
            "ColorSpace" => "DeviceRGB", "BitsPerComponent" => 8, "Filter" => "FlateDecode", "SMask" => smask },
            deflate(&rgb),
        )
        .with_compression(false),
    );
    let open = doc.add_object(Stream::new(dictionary! {}, b"q\n".to_vec()));
    for (_, page) in &selected {
        let (x0, y0, x1, y1) = page_box(&doc, *page);
        let (pw, ph) = (x1 - x0, y1 - y0);
        // A rotated page is shown turned clockwise: turn the mark back so it reads upright.
        let theta = (wm.rotation + page_rotation(&doc, *page) as f32).to_radians();
        let (sin, cos) = theta.sin_cos();
        let (bw, bh) = (lw * cos.abs() + lh * sin.abs(), lw * sin.abs() + lh * cos.abs());
        let (px, py) = wm.position(pw, ph, bw, bh);
        let (cx, cy) = (x0 + px + bw / 2.0, y1 - py - bh / 2.0);
        let e = cx - (lw / 2.0) * cos + (lh / 2.0) * sin;
        let f = cy - (lw / 2.0) * sin - (lh / 2.0) * cos;
        let ops = format!(
            "Q\nq {:.4} {:.4} {:.4} {:.4} {:.4} {:.4} cm /{WATERMARK_NAME} Do Q\n",
            lw * cos,
            lw * sin,
            -lh * sin,
            lh * cos,
            e,
            f
        );
        let close = doc.add_object(Stream::new(dictionary! {}, ops.into_bytes()));
        add_xobject(&mut doc, *page, image)?;
        let page_dict = doc.get_dictionary_mut(*page).map_err(|e| failed("reading a page", e))?;
        let mut contents = vec![Object::Reference(open)];
        match page_dict.get(b"Contents") {
            Ok(Object::Array(a)) => contents.extend(a.iter().cloned()),
            Ok(other) => contents.push(other.clone()),
            Err(_) => {}
        }
        contents.push(Object::Reference(close));
        page_dict.set("Contents", contents);
    }
    save(&mut doc, output, false)?;
    Ok(selected.len() as u32)
}

/// Adds the watermark image to a page's resources (which may be shared or indirect).
fn add_xobject(doc: &mut Document, page: ObjectId, image: ObjectId) -> Result<(), TaskError> {
    let res = doc
        .get_dictionary(page)
        .ok()
        .and_then(|d| d.get(b"Resources").ok().cloned());
    let res_dict: &mut Dictionary = match res {
        Some(Object::Reference(id)) => doc
            .get_dictionary_mut(id)
            .map_err(|e| failed("reading page resources", e))?,
        Some(Object::Dictionary(_)) => {
            let page_dict = doc.get_dictionary_mut(page).map_err(|e| failed("reading a page", e))?;
            page_dict
                .get_mut(b"Resources")
                .and_then(Object::as_dict_mut)
                .map_err(|e| failed("reading page resources", e))?
        }
        _ => {
            let page_dict = doc.get_dictionary_mut(page).map_err(|e| failed("reading a page", e))?;
            page_dict.set("Resources", Dictionary::new());
            page_dict
                .get_mut(b"Resources")
                .and_then(Object::as_dict_mut)
                .map_err(|e| failed("reading page resources", e))?
        }
    };
    match res_dict.get(b"XObject").ok().cloned() {
        Some(Object::Reference(xid)) => {
            doc.get_dictionary_mut(xid)
                .map_err(|e| failed("reading page resources", e))?
                .set(WATERMARK_NAME, image);
        }
        Some(Object::Dictionary(mut d)) => {
            d.set(WATERMARK_NAME, image);
            res_dict.set("XObject", d);
        }
        _ => res_dict.set("XObject", dictionary! { WATERMARK_NAME => image }),
    }
    Ok(())
}
