//! One entry point for every processing operation: [`run`] takes the task's operation
//! and its input files in a work directory and writes the outputs there. The worker (in
//! the server and in Lambdas) and the `runconvert` command line both call it.

use crate::media::{self, Ffmpeg};
use crate::ocr::{self, Tesseract};
use crate::office::{self, Office};
use crate::raster::{self, Fit, ImageOptions};
use crate::tools::{Pdftoppm, Tool};
use crate::watermark::{PageSelection, Watermark};
use crate::{archive, pdf, EngineLimits};
use runconvert_core::error::codes;
use runconvert_core::formats::{canonical_format, format_of_filename, Capability, OptionSpec, OptionType, Registry};
use runconvert_core::names::{safe_filename, with_extension};
use runconvert_core::ops::{EngineOptions, Operation};
use runconvert_core::TaskError;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A file an operation reads.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    /// Its file name (shown in messages, basis of output names).
    pub name: String,
    /// The name of the task it came from (the watermark's `image` option names one).
    pub task: Option<String>,
}

/// A file an operation wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    pub path: PathBuf,
    pub name: String,
}

/// Engines found on this host, probed once.
pub struct Host {
    pub pdftoppm: Option<Pdftoppm>,
    pub tesseract: Option<Tesseract>,
    pub ffmpeg: Option<Ffmpeg>,
    pub office: Option<Office>,
}

/// The engines of this host; with `probe_versions`, each tool is run once to learn its
/// version (the server reports it; one-shot commands skip the extra processes).
pub fn probe_host(probe_versions: bool) -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host {
        pdftoppm: Pdftoppm::find(probe_versions),
        tesseract: Tesseract::find(probe_versions),
        ffmpeg: Ffmpeg::find(probe_versions),
        office: Office::find(probe_versions),
    })
}

impl Host {
    /// The engines a deployment declares it runs (in other functions), by tool name:
    /// `pdftoppm`, `tesseract`, `ffmpeg`, `soffice`. Nothing is looked for on this host.
    pub fn declared(tools: &[&str]) -> Host {
        let has = |t: &str| tools.contains(&t);
        Host {
            pdftoppm: has("pdftoppm").then(|| Pdftoppm(Tool::declared("pdftoppm"))),
            tesseract: has("tesseract").then(Tesseract::declared),
            ffmpeg: has("ffmpeg").then(|| Ffmpeg {
                ffmpeg: Tool::declared("ffmpeg"),
                ffprobe: Tool::declared("ffprobe"),
            }),
            office: has("soffice").then(|| Office {
                tool: Tool::declared("soffice"),
            }),
        }
    }
}

pub fn host() -> &'static Host {
    probe_host(true)
}

const THUMB_FITS: &[&str] = &["max", "crop", "scale"];
pub const THUMBNAIL_FORMATS: &[&str] = &["png", "jpg", "webp"];

fn thumbnail_options(output: &str) -> Vec<OptionSpec> {
    let mut o = raster::size_options(THUMB_FITS);
    o[0].default = Some(json!(256));
    o[1].default = Some(json!(256));
    if output != "png" {
        o.push(raster::quality_option(if output == "jpg" { 75 } else { 80 }));
    }
    o
}

const PNG_PROFILES: &[&str] = &["lossless", "lossy"];

fn strip_option() -> OptionSpec {
    OptionSpec {
        name: "strip",
        kind: OptionType::Boolean,
        default: Some(json!(true)),
        description: "Remove metadata (EXIF, XMP, ICC profile, text and other chunks that do not \
            change how the image looks). false keeps it.",
    }
}

fn pdf_render_options(output: &str) -> Vec<OptionSpec> {
    let mut o = vec![
        OptionSpec {
            name: "pages",
            kind: OptionType::Pages,
            default: Some(json!("all")),
            description: "Pages to render: `all`, or a list such as `1-3,5,8-`. Each page is one output file.",
        },
        OptionSpec {
            name: "resolution",
            kind: OptionType::Integer { min: 10, max: 1200 },
            default: Some(json!(150)),
            description: "Dots per inch.",
        },
    ];
    if output == "jpg" {
        o.push(raster::quality_option(85));
    }
    o
}

fn cap(
    operation: &'static str,
    input: &'static str,
    output: &'static str,
    engine: &'static str,
    version: &str,
    options: Vec<OptionSpec>,
) -> Capability {
    Capability {
        operation,
        input_format: input,
        output_format: output,
        engine,
        engine_version: version.to_string(),
        options,
    }
}

/// Declares every processing capability of this build and host.
pub fn register(r: &mut Registry, probe_versions: bool) {
    register_with_host(r, probe_host(probe_versions));
}

/// Declares every processing capability of this build with the engines of `host`.
pub fn register_with_host(r: &mut Registry, host: &Host) {
    for i in raster::FORMATS {
        for o in raster::FORMATS {
            r.add(cap(
                "convert",
                i,
                o,
                raster::ENGINE,
                raster::ENGINE_VERSION,
                raster::convert_options(o),
            ));
        }
        r.add(cap("convert", i, "pdf", pdf::ENGINE, pdf::ENGINE_VERSION, vec![]));
    }
    if let Some(p) = &host.pdftoppm {
        for o in ["png", "jpg"] {
            r.add(cap("convert", "pdf", o, "poppler", p.version(), pdf_render_options(o)));
        }
    }
    for i in raster::FORMATS.iter().chain(&["pdf"]) {
        r.add(cap("merge", i, "pdf", pdf::ENGINE, pdf::ENGINE_VERSION, vec![]));
    }
    for o in archive::FORMATS {
        r.add(cap("archive", "*", o, "runconvert", env!("CARGO_PKG_VERSION"), vec![]));
    }
    r.add(cap(
        "compress",
        "pdf",
        "pdf",
        "runconvert",
        env!("CARGO_PKG_VERSION"),
        pdf::compress_options(),
    ));
    r.add(cap(
        "compress",
        "jpg",
        "jpg",
        "runconvert",
        env!("CARGO_PKG_VERSION"),
        vec![
            OptionSpec {
                name: "quality",
                kind: OptionType::Integer { min: 1, max: 100 },
                default: Some(json!(75)),
                description: "The most a photo keeps: one saved above this quality is re-encoded at it \
                    (mozjpeg: progressive, trellis quantisation); one saved at or below it is only \
                    rewritten losslessly. The output is never larger than the input.",
            },
            strip_option(),
        ],
    ));
    r.add(cap(
        "compress",
        "png",
        "png",
        "runconvert",
        env!("CARGO_PKG_VERSION"),
        vec![
            OptionSpec {
                name: "profile",
                kind: OptionType::Enum(PNG_PROFILES),
                default: Some(json!("lossless")),
                description: "lossless: the same pixels, stored smaller (oxipng); lossy: a palette of at \
                    most 256 colours with dithering, then the lossless pass (as pngquant does).",
            },
            OptionSpec {
                name: "quality",
                kind: OptionType::Integer { min: 1, max: 100 },
                default: Some(json!(80)),
                description: "The lossy profile's palette: 256 colours at 80 and above, fewer below \
                    (16 at 1). The output is never larger than the input.",
            },
            strip_option(),
        ],
    ));
    for i in raster::FORMATS.iter().filter(|f| **f != "ico") {
        r.add(cap(
            "watermark",
            i,
            i,
            "runconvert",
            env!("CARGO_PKG_VERSION"),
            crate::watermark::options(false),
        ));
    }
    r.add(cap(
        "watermark",
        "pdf",
        "pdf",
        "runconvert",
        env!("CARGO_PKG_VERSION"),
        crate::watermark::options(true),
    ));
    for i in raster::FORMATS {
        for o in THUMBNAIL_FORMATS {
            r.add(cap(
                "thumbnail",
                i,
                o,
                raster::ENGINE,
                raster::ENGINE_VERSION,
                thumbnail_options(o),
            ));
        }
    }
    if let Some(t) = &host.tesseract {
        let pdf: &[&str] = if host.pdftoppm.is_some() { &["pdf"] } else { &[] };
        for i in ocr::DIRECT.iter().chain(pdf) {
            for o in ocr::OUTPUTS {
                r.add(cap("ocr", i, o, "tesseract", &t.tool.version, vec![]));
            }
        }
    }
    if let Some(f) = &host.ffmpeg {
        let v = &f.ffmpeg.version;
        for i in media::VIDEO {
            for o in media::VIDEO.iter().chain(media::AUDIO) {
                r.add(cap("convert", i, o, "ffmpeg", v, media::options(o)));
            }
        }
        for i in media::AUDIO {
            for o in media::AUDIO {
                r.add(cap("convert", i, o, "ffmpeg", v, media::options(o)));
            }
        }
        for i in media::VIDEO.iter().filter(|f| **f != "gif") {
            for o in THUMBNAIL_FORMATS {
                let mut opts = thumbnail_options(o);
                opts.push(OptionSpec {
                    name: "timestamp",
                    kind: OptionType::Integer { min: 0, max: 86_400 },
                    default: None,
                    description:
                        "Second of the video to take the frame from (default: 1, or the middle of a shorter video).",
                });
                r.add(cap("thumbnail", i, o, "ffmpeg", v, opts));
            }
        }
    }
    if let Some(lo) = &host.office {
        for (inputs, outputs) in [
            (office::WRITER, office::WRITER_OUT),
            (office::CALC, office::CALC_OUT),
            (office::IMPRESS, office::IMPRESS_OUT),
        ] {
            for i in inputs {
                for o in outputs.iter().filter(|o| *o != i) {
                    r.add(cap("convert", i, o, "libreoffice", &lo.tool.version, vec![]));
                }
            }
        }
    }
    if let Some(p) = &host.pdftoppm {
        for o in THUMBNAIL_FORMATS {
            r.add(cap("thumbnail", "pdf", o, "poppler", p.version(), thumbnail_options(o)));
        }
    }
}

fn unsupported(msg: String) -> TaskError {
    TaskError::new(codes::UNSUPPORTED_CONVERSION, msg)
}

/// The format of an input: as declared by the task, else by its name, else by its content.
pub fn input_format(f: &InputFile, declared: Option<&str>) -> Result<&'static str, TaskError> {
    if let Some(d) = declared {
        return canonical_format(d).ok_or_else(|| unsupported(format!("unknown input format {d:?}")));
    }
    if let Some(f) = format_of_filename(&f.name) {
        return Ok(f);
    }
    crate::detect::sniff(&f.path)
        .ok()
        .flatten()
        .and_then(canonical_format)
        .ok_or_else(|| {
            TaskError::new(
                codes::INVALID_FILE,
                format!("cannot tell the format of {}: give input_format", f.name),
            )
        })
}

/// Finds the capability and checks the options against it.
fn capability<'a>(
    registry: &'a Registry,
    operation: &'a str,
    input: &'a str,
    output: &'a str,
    engine: Option<&str>,
    options: &EngineOptions,
) -> Result<&'a Capability, TaskError> {
    let cap = registry.find(operation, input, output, engine).map_err(unsupported)?;
    if let Some((name, msg)) = cap.check_options(options).into_iter().next() {
        return Err(TaskError::new(codes::INVALID_DATA, format!("option {name}: {msg}")));
    }
    Ok(cap)
}

fn out_name(requested: &Option<String>, single: bool, input: &str, ext: &str) -> String {
    match (requested, single) {
        (Some(name), true) => safe_filename(name),
        _ => safe_filename(&with_extension(input, ext)),
    }
}

/// Runs a processing operation over `inputs`, writing into `out_dir`.
pub fn run(
    op: &Operation,
    inputs: Vec<InputFile>,
    out_dir: &Path,
    registry: &Registry,
    limits: &EngineLimits,
) -> Result<Vec<OutputFile>, TaskError> {
    if inputs.is_empty() {
        return Err(TaskError::new(
            codes::NO_INPUT_FILES,
            "the input tasks produced no files",
        ));
    }
    let single = inputs.len() == 1;
    let mut outputs = Vec::new();
    let mut counter = 0usize;
    let mut next_path = |ext: &str| {
        counter += 1;
        out_dir.join(format!("out-{counter}.{}", ext.replace('.', "-")))
    };
    match op {
        Operation::Convert(c) => {
            let output = canonical_format(&c.output_format)
                .ok_or_else(|| unsupported(format!("unknown output format {}", c.output_format)))?;
            for f in &inputs {
                let input = input_format(f, c.input_format.as_deref())?;
                let cap = capability(registry, "convert", input, output, c.engine.as_deref(), &c.options)?;
                match (cap.engine, input, output) {
                    ("poppler", "pdf", _) => {
                        let rendered = render_pdf(f, output, &c.options, out_dir, limits)?;
                        let many = rendered.len() > 1 || !single;
                        for (page, path) in rendered {
                            let name = if many {
                                let stem = with_extension(&f.name, "x");
                                format!("{}-{page}.{output}", stem.trim_end_matches(".x"))
                            } else {
                                out_name(&c.filename, single, &f.name, output)
                            };
                            outputs.push(OutputFile {
                                path,
                                name: safe_filename(&name),
                            });
                        }
                    }
                    ("ffmpeg", _, _) => {
                        let tool = host()
                            .ffmpeg
                            .as_ref()
                            .ok_or_else(|| unsupported("FFmpeg is not installed on this server".into()))?;
                        crate::raster::check_format(&f.path, &f.name, input)?;
                        let path = next_path(output);
                        tool.convert(&f.path, &f.name, &path, output, &c.options, limits)?;
                        outputs.push(OutputFile {
                            path,
                            name: out_name(&c.filename, single, &f.name, output),
                        });
                    }
                    ("libreoffice", _, _) => {
                        let tool = host()
                            .office
                            .as_ref()
                            .ok_or_else(|| unsupported("LibreOffice is not installed on this server".into()))?;
                        crate::raster::check_format(&f.path, &f.name, input)?;
                        let path = next_path(output);
                        tool.convert(&f.path, &f.name, input, &path, output, out_dir, limits)?;
                        outputs.push(OutputFile {
                            path,
                            name: out_name(&c.filename, single, &f.name, output),
                        });
                    }
                    (_, _, "pdf") => {
                        let path = next_path("pdf");
                        pdf::merge(&[(f.clone(), input)], &path, limits)?;
                        outputs.push(OutputFile {
                            path,
                            name: out_name(&c.filename, single, &f.name, "pdf"),
                        });
                    }
                    _ => {
                        let path = next_path(output);
                        let opts = ImageOptions::from_options(&c.options)?;
                        raster::convert(&f.path, &f.name, input, &path, output, &opts, limits)?;
                        outputs.push(OutputFile {
                            path,
                            name: out_name(&c.filename, single, &f.name, output),
                        });
                    }
                }
            }
        }
        Operation::Thumbnail(t) => {
            let output = match &t.output_format {
                Some(o) => canonical_format(o).ok_or_else(|| unsupported(format!("unknown output format {o}")))?,
                None => "png",
            };
            for f in &inputs {
                let input = input_format(f, t.input_format.as_deref())?;
                let engine = capability(registry, "thumbnail", input, output, t.engine.as_deref(), &t.options)?.engine;
                let path = next_path(output);
                thumbnail(f, input, engine, &path, output, &t.options, out_dir, limits)?;
                outputs.push(OutputFile {
                    path,
                    name: out_name(&t.filename, single, &f.name, output),
                });
            }
        }
        Operation::Merge(m) => {
            let output = canonical_format(&m.output_format).unwrap_or("");
            let mut typed = Vec::with_capacity(inputs.len());
            for f in &inputs {
                let input = input_format(f, None)?;
                capability(registry, "merge", input, output, m.engine.as_deref(), &m.options).map_err(|e| {
                    unsupported(format!(
                        "merge takes PDFs and images; {} is {input} ({})",
                        f.name, e.message
                    ))
                })?;
                typed.push((f.clone(), input));
            }
            let path = next_path("pdf");
            pdf::merge(&typed, &path, limits)?;
            let name = m
                .filename
                .clone()
                .unwrap_or_else(|| with_extension(&inputs[0].name, "pdf"));
            outputs.push(OutputFile {
                path,
                name: safe_filename(&name),
            });
        }
        Operation::Archive(a) => {
            let output = a.output_format.trim().to_ascii_lowercase();
            let output = if output == "tgz" { "tar.gz".to_string() } else { output };
            capability(registry, "archive", "*", &output, None, &a.options)?;
            let path = next_path(&output);
            archive::create(&inputs, &path, &output)?;
            let name = a.filename.clone().unwrap_or_else(|| format!("archive.{output}"));
            outputs.push(OutputFile {
                path,
                name: safe_filename(&name),
            });
        }
        Operation::Compress(c) => {
            for f in &inputs {
                let input = input_format(f, c.input_format.as_deref())?;
                let output = c.output_format.as_deref().and_then(canonical_format).unwrap_or(input);
                capability(registry, "compress", input, output, c.engine.as_deref(), &c.options)?;
                let path = next_path(output);
                compress(f, input, &path, &c.options, limits)?;
                outputs.push(OutputFile {
                    path,
                    name: out_name(&c.filename, single, &f.name, output),
                });
            }
        }
        Operation::Watermark(w) => {
            let mut wm = Watermark::from_options(w.text.as_deref(), &w.options)?;
            let image_task = w.options.get("image").and_then(|v| v.as_str());
            let (marks, docs): (Vec<&InputFile>, Vec<&InputFile>) = inputs
                .iter()
                .partition(|f| image_task.is_some() && f.task.as_deref() == image_task);
            if let Some(task) = image_task {
                let mark = marks.first().ok_or_else(|| {
                    TaskError::new(
                        codes::INVALID_DATA,
                        format!("option image names task {task:?}, which is not an input with a file"),
                    )
                })?;
                let fmt = input_format(mark, None)?;
                if !raster::FORMATS.contains(&fmt) {
                    return Err(TaskError::new(
                        codes::INVALID_DATA,
                        format!("the watermark image {} is {fmt}, not an image", mark.name),
                    ));
                }
                wm.image = Some(raster::decode(&mark.path, &mark.name, fmt, limits, None)?);
            }
            if docs.is_empty() {
                return Err(TaskError::new(
                    codes::NO_INPUT_FILES,
                    "there is no file to watermark besides the watermark image",
                ));
            }
            let single = docs.len() == 1;
            for f in docs {
                let input = input_format(f, w.input_format.as_deref())?;
                capability(registry, "watermark", input, input, w.engine.as_deref(), &w.options)?;
                let path = next_path(input);
                if input == "pdf" {
                    pdf::watermark(&f.path, &f.name, &path, &wm, limits)?;
                } else {
                    let img = raster::decode(&f.path, &f.name, input, limits, None)?;
                    let marked = crate::watermark::apply_to_image(&img, &wm)?;
                    raster::encode(&marked, &path, input, wm.quality.or(Some(90)), false)?;
                }
                outputs.push(OutputFile {
                    path,
                    name: out_name(&w.filename, single, &f.name, input),
                });
            }
        }
        Operation::Ocr(o) => {
            let tess = host()
                .tesseract
                .as_ref()
                .ok_or_else(|| unsupported("OCR (Tesseract) is not installed on this server".into()))?;
            let output = match &o.output_format {
                Some(f) => canonical_format(f).ok_or_else(|| unsupported(format!("unknown output format {f}")))?,
                None => "txt",
            };
            let language = o.language.as_deref().unwrap_or("eng");
            tess.check_language(language)?;
            for f in &inputs {
                let input = input_format(f, o.input_format.as_deref())?;
                capability(registry, "ocr", input, output, o.engine.as_deref(), &o.options)?;
                let pages: Vec<PathBuf> = if input == "pdf" {
                    let mut opts = EngineOptions::new();
                    opts.insert("resolution".into(), json!(300));
                    render_pdf(f, "png", &opts, out_dir, limits)?
                        .into_iter()
                        .map(|(_, p)| p)
                        .collect()
                } else {
                    raster::probe(&f.path, &f.name, input, limits)?;
                    vec![f.path.clone()]
                };
                let path = next_path(output);
                tess.recognise(&pages, language, output, &path, out_dir, limits)?;
                outputs.push(OutputFile {
                    path,
                    name: out_name(&o.filename, single, &f.name, output),
                });
            }
        }
        other => {
            return Err(unsupported(format!(
                "operation {} does not process files on this server",
                other.name()
            )));
        }
    }
    Ok(outputs)
}

fn render_pdf(
    f: &InputFile,
    output: &str,
    o: &EngineOptions,
    out_dir: &Path,
    limits: &EngineLimits,
) -> Result<Vec<(u32, PathBuf)>, TaskError> {
    let tool = host()
        .pdftoppm
        .as_ref()
        .ok_or_else(|| unsupported("PDF rendering (pdftoppm) is not installed on this server".into()))?;
    let sizes = pdf::page_sizes(&f.path, &f.name, limits)?;
    let count = sizes.len() as u32;
    let selection = match o.get("pages").and_then(|v| v.as_str()) {
        None => PageSelection::All,
        Some(s) => PageSelection::parse(s).map_err(|e| TaskError::new(codes::INVALID_DATA, e))?,
    };
    let pages = selection.pages(count);
    if pages.is_empty() {
        return Err(TaskError::new(
            codes::INVALID_DATA,
            format!("option pages selects none of the {count} pages of {}", f.name),
        ));
    }
    let dpi = raster::int_option(o, "resolution", 10, 1200)?.unwrap_or(150) as u32;
    for &n in &pages {
        pdf::check_render_size(&f.name, n, sizes[(n - 1) as usize], dpi, limits)?;
    }
    let quality = raster::int_option(o, "quality", 1, 100)?.unwrap_or(85) as u8;
    let dir = out_dir.join(format!("pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?;
    // One run per contiguous range of selected pages.
    let mut start = 0;
    while start < pages.len() {
        let mut end = start;
        while end + 1 < pages.len() && pages[end + 1] == pages[end] + 1 {
            end += 1;
        }
        tool.render(
            &f.path,
            &dir.join("p"),
            output,
            pages[start],
            pages[end],
            Some(dpi),
            None,
            quality,
            limits,
        )?;
        start = end + 1;
    }
    let mut rendered: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let num = name.strip_prefix("p-")?.split('.').next()?.parse::<u32>().ok()?;
            Some((num, e.path()))
        })
        .collect();
    rendered.sort();
    if rendered.len() != pages.len() {
        return Err(TaskError::new(
            codes::PROCESSING_FAILED,
            format!(
                "pdftoppm rendered {} of {} pages of {}",
                rendered.len(),
                pages.len(),
                f.name
            ),
        ));
    }
    Ok(rendered)
}

#[allow(clippy::too_many_arguments)]
fn thumbnail(
    f: &InputFile,
    input: &str,
    engine: &str,
    out: &Path,
    output: &str,
    o: &EngineOptions,
    work: &Path,
    limits: &EngineLimits,
) -> Result<(), TaskError> {
    let mut opts = ImageOptions::from_options(o)?;
    if opts.width.is_none() && opts.height.is_none() {
        opts.width = Some(256);
        opts.height = Some(256);
    }
    if opts.fit == Fit::Upscale {
        opts.fit = Fit::Max;
    }
    if engine == "ffmpeg" {
        let tool = host()
            .ffmpeg
            .as_ref()
            .ok_or_else(|| unsupported("FFmpeg is not installed on this server".into()))?;
        raster::check_format(&f.path, &f.name, input)?;
        let at = raster::int_option(o, "timestamp", 0, 86_400)?.map(|t| t as f64);
        let fit = match opts.fit {
            Fit::Crop => "crop",
            Fit::Scale => "scale",
            _ => "max",
        };
        let quality = opts.quality.unwrap_or(if output == "jpg" { 75 } else { 80 });
        let still = media::Still {
            out,
            output,
            size: (opts.width, opts.height),
            fit,
            quality,
        };
        return tool.thumbnail(&f.path, &f.name, at, &still, limits);
    }
    let img = if input == "pdf" {
        let tool = host()
            .pdftoppm
            .as_ref()
            .ok_or_else(|| unsupported("PDF rendering (pdftoppm) is not installed on this server".into()))?;
        pdf::page_count(&f.path, &f.name, limits)?;
        // Render the first page a little larger than needed, then resize exactly.
        let long = opts.width.unwrap_or(0).max(opts.height.unwrap_or(0)).max(16) * 2;
        let prefix = work.join(format!("thumb-{}", std::process::id()));
        tool.render(&f.path, &prefix, "png", 1, 1, None, Some(long), 85, limits)?;
        let page = std::fs::read_dir(work)
            .ok()
            .and_then(|d| {
                d.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy()
                            .starts_with(&format!("thumb-{}-", std::process::id()))
                    })
                })
            })
            .ok_or_else(|| TaskError::new(codes::PROCESSING_FAILED, "pdftoppm produced no page"))?;
        let img = raster::decode(&page, &f.name, "png", limits, None)?;
        let dims = (img.width(), img.height());
        raster::resize_scaled(img, dims, &opts)?
    } else {
        let probed = raster::probe_oriented(&f.path, &f.name, input, limits)?;
        raster::decode_upright(&f.path, &f.name, input, &probed, &opts, limits)?
    };
    let quality = opts.quality.or(Some(if output == "jpg" { 75 } else { 80 }));
    raster::encode(&img, out, output, quality, false)
}

fn compress(f: &InputFile, input: &str, out: &Path, o: &EngineOptions, limits: &EngineLimits) -> Result<(), TaskError> {
    match input {
        "pdf" => {
            let name = o.get("profile").and_then(|v| v.as_str()).unwrap_or("web");
            let mut profile = pdf::Profile::named(name).ok_or_else(|| {
                TaskError::new(
                    codes::INVALID_DATA,
                    format!("option profile must be one of {}", pdf::PROFILES.join(", ")),
                )
            })?;
            if let Some(dpi) = raster::int_option(o, "image_resolution", 36, 1200)? {
                profile.dpi = dpi as f32;
            }
            if let Some(q) = raster::int_option(o, "image_quality", 1, 100)? {
                profile.quality = q as u8;
            }
            pdf::compress(&f.path, &f.name, out, profile, limits)
        }
        "jpg" => compress_jpeg(f, out, o, limits),
        "png" => compress_png(f, out, o, limits),
        other => Err(unsupported(format!("compress does not take {other}"))),
    }
}

/// PNG compress: `profile` lossless (oxipng) or lossy (a dithered palette of as many
/// colours as `quality` asks for, then oxipng); the original when nothing is smaller.
fn compress_png(f: &InputFile, out: &Path, o: &EngineOptions, limits: &EngineLimits) -> Result<(), TaskError> {
    let failed = |e: String| TaskError::new(codes::PROCESSING_FAILED, e);
    let strip = bool_option(o, "strip", true)?;
    let lossy = match o.get("profile").and_then(|v| v.as_str()).unwrap_or("lossless") {
        "lossless" => false,
        "lossy" => true,
        _ => {
            return Err(TaskError::new(
                codes::INVALID_DATA,
                format!("option profile must be one of {}", PNG_PROFILES.join(", ")),
            ))
        }
    };
    let quality = raster::int_option(o, "quality", 1, 100)?.unwrap_or(80) as u8;
    let dims = raster::probe(&f.path, &f.name, "png", limits)?;
    let original = std::fs::read(&f.path).map_err(|e| failed(format!("reading {}: {e}", f.name)))?;
    let quantised;
    let source: &[u8] = if lossy {
        let img = raster::decode_probed(&f.path, &f.name, "png", dims, limits, None)?.to_rgba8();
        let palette = crate::png::quantize(&img, crate::png::colours_for(quality)).map_err(failed)?;
        quantised = crate::png::with_descriptive_chunks(&palette, &original);
        &quantised
    } else {
        &original
    };
    let best = crate::png::optimize_lossless(source, strip, limits.tool_timeout)
        .map_err(|e| TaskError::new(codes::INVALID_FILE, format!("{} is not a readable PNG: {e}", f.name)))?;
    write_smaller(out, &best, &original)
}

/// Writes `best` to `out`, or `original` when `best` is not smaller: compress never makes
/// a file larger.
fn write_smaller(out: &Path, best: &[u8], original: &[u8]) -> Result<(), TaskError> {
    let kept = if best.len() < original.len() { best } else { original };
    std::fs::write(out, kept).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, format!("writing the output: {e}")))
}

fn bool_option(o: &EngineOptions, name: &str, default: bool) -> Result<bool, TaskError> {
    match o.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| TaskError::new(codes::INVALID_DATA, format!("option {name} must be true or false"))),
    }
}

/// JPEG compress, as `jpegoptim --max=quality` does it: a photo saved above `quality` is
/// re-encoded at it (mozjpeg); a lossless rewrite (progressive, optimised tables) is the
/// other candidate, made beside the re-encode, unless the photo was saved so far above
/// `quality` that the re-encode is sure to be smaller; the smallest of those and the
/// original is kept. Metadata goes unless `strip` is false.
fn compress_jpeg(f: &InputFile, out: &Path, o: &EngineOptions, limits: &EngineLimits) -> Result<(), TaskError> {
    let failed = |e: String| TaskError::new(codes::PROCESSING_FAILED, e);
    let q = raster::int_option(o, "quality", 1, 100)?.unwrap_or(75) as u8;
    let strip = bool_option(o, "strip", true)?;
    // Header, pixel limit and the formats the decoder refuses, before anything is read.
    let dims = raster::probe(&f.path, &f.name, "jpg", limits)?;
    let original = std::fs::read(&f.path).map_err(|e| failed(format!("reading {}: {e}", f.name)))?;
    // Stripped, a photo keeps its orientation (its pixels are not turned here).
    let orientation: Vec<_> = crate::jpeg::orientation(&original)
        .filter(|o| strip && *o != image::metadata::Orientation::NoTransforms)
        .map(crate::jpeg::orientation_segment)
        .into_iter()
        .collect();
    let saved = crate::jpeg::estimated_quality(&original);
    let reencode = saved.is_none_or(|saved| saved > q);
    let rewrite = saved.is_none_or(|saved| saved < q.saturating_add(10));
    let lossless = || {
        rewrite
            .then(|| crate::jpeg::optimize_lossless(&original, !strip, &orientation))
            .transpose()
            .map_err(|e| TaskError::new(codes::INVALID_FILE, format!("{} is not a readable JPEG: {e}", f.name)))
    };
    let lossy = || -> Result<Option<Vec<u8>>, TaskError> {
        if !reencode {
            return Ok(None);
        }
        let img = raster::decode_probed(&f.path, &f.name, "jpg", dims, limits, None)?;
        let segments = if strip {
            orientation.clone()
        } else {
            crate::jpeg::metadata(&original)
        };
        raster::jpeg_bytes(&img, q, crate::jpeg::Effort::Small, &segments).map(Some)
    };
    let (lossless, lossy) = std::thread::scope(|s| {
        let other = s.spawn(lossless);
        let lossy = lossy();
        (
            other
                .join()
                .unwrap_or_else(|_| Err(failed("the lossless rewrite failed".into()))),
            lossy,
        )
    });
    let best = [lossless?, lossy?].into_iter().flatten().min_by_key(Vec::len);
    write_smaller(out, best.as_deref().unwrap_or(&original), &original)
}
