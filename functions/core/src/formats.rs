//! The format registry: which operation turns which format into which, with which engine
//! and options. Engines register what they can do at start-up; the API's `/v2/core/*`
//! endpoints, job validation and the executor all read this one registry, so the API
//! never claims what the running build cannot do.

use serde::Serialize;
use serde_json::{json, Map, Value};

/// A file format the project knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FormatInfo {
    pub name: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub aliases: &'static [&'static str],
    #[serde(rename = "type")]
    pub group: &'static str,
    pub mime_type: &'static str,
}

/// Every format name the project knows. Only those some engine handles are shown.
pub const KNOWN_FORMATS: &[FormatInfo] = &[
    FormatInfo {
        name: "jpg",
        aliases: &["jpeg", "jpe", "jfif"],
        group: "image",
        mime_type: "image/jpeg",
    },
    FormatInfo {
        name: "png",
        aliases: &[],
        group: "image",
        mime_type: "image/png",
    },
    FormatInfo {
        name: "gif",
        aliases: &[],
        group: "image",
        mime_type: "image/gif",
    },
    FormatInfo {
        name: "webp",
        aliases: &[],
        group: "image",
        mime_type: "image/webp",
    },
    FormatInfo {
        name: "bmp",
        aliases: &["dib"],
        group: "image",
        mime_type: "image/bmp",
    },
    FormatInfo {
        name: "tiff",
        aliases: &["tif"],
        group: "image",
        mime_type: "image/tiff",
    },
    FormatInfo {
        name: "ico",
        aliases: &[],
        group: "image",
        mime_type: "image/vnd.microsoft.icon",
    },
    FormatInfo {
        name: "pdf",
        aliases: &[],
        group: "document",
        mime_type: "application/pdf",
    },
    FormatInfo {
        name: "txt",
        aliases: &["text"],
        group: "document",
        mime_type: "text/plain",
    },
    FormatInfo {
        name: "zip",
        aliases: &[],
        group: "archive",
        mime_type: "application/zip",
    },
    FormatInfo {
        name: "docx",
        aliases: &[],
        group: "document",
        mime_type: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    },
    FormatInfo {
        name: "doc",
        aliases: &[],
        group: "document",
        mime_type: "application/msword",
    },
    FormatInfo {
        name: "odt",
        aliases: &[],
        group: "document",
        mime_type: "application/vnd.oasis.opendocument.text",
    },
    FormatInfo {
        name: "rtf",
        aliases: &[],
        group: "document",
        mime_type: "application/rtf",
    },
    FormatInfo {
        name: "xlsx",
        aliases: &[],
        group: "spreadsheet",
        mime_type: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    },
    FormatInfo {
        name: "ods",
        aliases: &[],
        group: "spreadsheet",
        mime_type: "application/vnd.oasis.opendocument.spreadsheet",
    },
    FormatInfo {
        name: "pptx",
        aliases: &[],
        group: "presentation",
        mime_type: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    },
    FormatInfo {
        name: "odp",
        aliases: &[],
        group: "presentation",
        mime_type: "application/vnd.oasis.opendocument.presentation",
    },
    FormatInfo {
        name: "html",
        aliases: &["htm"],
        group: "document",
        mime_type: "text/html",
    },
    FormatInfo {
        name: "md",
        aliases: &["markdown"],
        group: "document",
        mime_type: "text/markdown",
    },
    FormatInfo {
        name: "mp4",
        aliases: &["m4v"],
        group: "video",
        mime_type: "video/mp4",
    },
    FormatInfo {
        name: "webm",
        aliases: &[],
        group: "video",
        mime_type: "video/webm",
    },
    FormatInfo {
        name: "mov",
        aliases: &[],
        group: "video",
        mime_type: "video/quicktime",
    },
    FormatInfo {
        name: "mkv",
        aliases: &[],
        group: "video",
        mime_type: "video/x-matroska",
    },
    FormatInfo {
        name: "avi",
        aliases: &[],
        group: "video",
        mime_type: "video/x-msvideo",
    },
    FormatInfo {
        name: "mp3",
        aliases: &[],
        group: "audio",
        mime_type: "audio/mpeg",
    },
    FormatInfo {
        name: "wav",
        aliases: &[],
        group: "audio",
        mime_type: "audio/wav",
    },
    FormatInfo {
        name: "ogg",
        aliases: &["oga"],
        group: "audio",
        mime_type: "audio/ogg",
    },
    FormatInfo {
        name: "flac",
        aliases: &[],
        group: "audio",
        mime_type: "audio/flac",
    },
    FormatInfo {
        name: "aac",
        aliases: &[],
        group: "audio",
        mime_type: "audio/aac",
    },
    FormatInfo {
        name: "m4a",
        aliases: &[],
        group: "audio",
        mime_type: "audio/mp4",
    },
    FormatInfo {
        name: "tar",
        aliases: &[],
        group: "archive",
        mime_type: "application/x-tar",
    },
    FormatInfo {
        name: "tar.gz",
        aliases: &["tgz"],
        group: "archive",
        mime_type: "application/gzip",
    },
];

/// The canonical name of a format (`JPEG` → `jpg`), if the project knows it.
pub fn canonical_format(name: &str) -> Option<&'static str> {
    let lower = name.trim().trim_start_matches('.').to_ascii_lowercase();
    KNOWN_FORMATS
        .iter()
        .find(|f| f.name == lower || f.aliases.contains(&lower.as_str()))
        .map(|f| f.name)
}

/// The format a file name's extension names, if known.
pub fn format_of_filename(filename: &str) -> Option<&'static str> {
    if filename.to_ascii_lowercase().ends_with(".tar.gz") {
        return Some("tar.gz");
    }
    let (_, ext) = filename.rsplit_once('.')?;
    canonical_format(ext)
}

/// Whether a browser would run scripts in a file of this name when shown inline: HTML,
/// SVG, XML and their kin. Such files are served as attachments, or under a sandboxing
/// Content-Security-Policy, never as active content on the API's origin.
pub fn is_active_content(filename: &str) -> bool {
    const ACTIVE: &[&str] = &[
        "html", "htm", "xhtml", "xht", "shtml", "svg", "svgz", "xml", "xsl", "xslt", "js", "mjs", "hta", "mht",
        "mhtml", "swf", "rdf", "xul",
    ];
    let lower = filename.to_ascii_lowercase();
    match lower.rsplit_once('.') {
        Some((_, ext)) => ACTIVE.contains(&ext.trim_matches(|c: char| c.is_whitespace() || c == '.')),
        None => false,
    }
}

/// Whether a browser runs scripts in content of this media type.
pub fn is_active_mime(mime: &str) -> bool {
    let m = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    m.contains("html") || m.contains("xml") || m.contains("svg") || m.contains("javascript") || m.contains("ecmascript")
}

pub fn mime_type_of(format: &str) -> &'static str {
    KNOWN_FORMATS
        .iter()
        .find(|f| f.name == format)
        .map(|f| f.mime_type)
        .unwrap_or("application/octet-stream")
}

/// The type of an engine option.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionType {
    Integer {
        min: i64,
        max: i64,
    },
    Enum(&'static [&'static str]),
    Boolean,
    String {
        max_len: usize,
    },
    /// A point in time of a media file: seconds (a number) or `hh:mm:ss[.ms]`.
    Time,
    /// A colour, `#RRGGBB`.
    Color,
    /// A bitrate such as `128k` or `2M`.
    Bitrate,
    /// Pages of a PDF: `all`, or a list such as `1-3,5,8-`.
    Pages,
}

/// An option an engine takes in `options: {...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: OptionType,
    pub default: Option<Value>,
    pub description: &'static str,
}

impl OptionSpec {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), self.name.into());
        let ty = match &self.kind {
            OptionType::Integer { min, max } => {
                m.insert("min".into(), (*min).into());
                m.insert("max".into(), (*max).into());
                "integer"
            }
            OptionType::Enum(values) => {
                m.insert("possible_values".into(), json!(values));
                "enum"
            }
            OptionType::Boolean => "boolean",
            OptionType::String { .. } => "string",
            OptionType::Time => "time",
            OptionType::Color => "color",
            OptionType::Bitrate => "bitrate",
            OptionType::Pages => "pages",
        };
        m.insert("type".into(), ty.into());
        if let Some(d) = &self.default {
            m.insert("default".into(), d.clone());
        }
        m.insert("description".into(), self.description.into());
        Value::Object(m)
    }

    fn check(&self, v: &Value) -> Result<(), String> {
        match &self.kind {
            OptionType::Integer { min, max } => match v.as_i64() {
                Some(n) if n >= *min && n <= *max => Ok(()),
                Some(n) => Err(format!("must be between {min} and {max}, got {n}")),
                None => Err(format!("must be an integer between {min} and {max}")),
            },
            OptionType::Enum(values) => match v.as_str() {
                Some(s) if values.contains(&s) => Ok(()),
                _ => Err(format!("must be one of: {}", values.join(", "))),
            },
            OptionType::Boolean => v.as_bool().map(|_| ()).ok_or_else(|| "must be true or false".into()),
            OptionType::Time => match v {
                Value::Number(n) if n.as_f64().is_some_and(|f| f >= 0.0) => Ok(()),
                Value::String(s)
                    if !s.is_empty()
                        && s.len() <= 16
                        && s.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '.') =>
                {
                    Ok(())
                }
                _ => Err("must be seconds (a number) or hh:mm:ss".into()),
            },
            OptionType::Color => match v.as_str() {
                Some(s) if is_hex_color(s) => Ok(()),
                _ => Err(format!("must be a colour as #RRGGBB, got {v}")),
            },
            OptionType::Bitrate => match v.as_str() {
                Some(s) if is_bitrate(s) => Ok(()),
                _ => Err(format!("must look like 128k or 2M, got {v}")),
            },
            OptionType::Pages => match v.as_str() {
                Some(s) if s.len() <= 200 => crate::pages::PageSelection::parse(s).map(|_| ()),
                Some(_) => Err("must be at most 200 bytes long".into()),
                None => Err("must be a string such as `all` or `1-3,5,8-`".into()),
            },
            OptionType::String { max_len } => match v.as_str() {
                Some(s) if s.len() <= *max_len => Ok(()),
                Some(_) => Err(format!("must be at most {max_len} bytes long")),
                None => Err("must be a string".into()),
            },
        }
    }
}

/// `#RRGGBB`.
pub fn is_hex_color(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit())
}

/// `128k`, `2M`, `1.5M`, `96000`.
pub fn is_bitrate(s: &str) -> bool {
    let digits = s.strip_suffix(['k', 'K', 'm', 'M']).unwrap_or(s);
    s.len() <= 8
        && !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits.parse::<f64>().is_ok_and(|f| f > 0.0)
}

/// One thing an engine can do: `operation` from `input_format` to `output_format`.
#[derive(Debug, Clone, PartialEq)]
pub struct Capability {
    pub operation: &'static str,
    pub input_format: &'static str,
    pub output_format: &'static str,
    pub engine: &'static str,
    pub engine_version: String,
    pub options: Vec<OptionSpec>,
}

impl Capability {
    pub fn to_json(&self) -> Value {
        json!({
            "operation": self.operation,
            "input_format": self.input_format,
            "output_format": self.output_format,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "options": self.options.iter().map(OptionSpec::to_json).collect::<Vec<_>>(),
        })
    }

    /// Checks `options` against this engine's declared ones: unknown names and bad values
    /// give one message each, keyed by option name.
    pub fn check_options(&self, options: &Map<String, Value>) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (name, value) in options {
            match self.options.iter().find(|o| o.name == name) {
                Some(spec) => {
                    if let Err(e) = spec.check(value) {
                        errors.push((name.clone(), e));
                    }
                }
                None => {
                    let known: Vec<_> = self.options.iter().map(|o| o.name).collect();
                    let hint = if known.is_empty() {
                        "this engine takes no options".to_string()
                    } else {
                        format!(
                            "options of {} for {} → {}: {}",
                            self.engine,
                            self.input_format,
                            self.output_format,
                            known.join(", ")
                        )
                    };
                    errors.push((name.clone(), format!("unknown option ({hint})")));
                }
            }
        }
        errors
    }
}

/// The input format of a capability that takes any file (archive).
pub const ANY: &str = "*";

/// What this build can do: available operations and their format pairs.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    operations: Vec<&'static str>,
    capabilities: Vec<Capability>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares an operation that takes no format pair (imports, exports).
    pub fn add_operation(&mut self, operation: &'static str) {
        if !self.operations.contains(&operation) {
            self.operations.push(operation);
        }
    }

    /// Declares a format pair. The first engine registered for a pair is its default.
    pub fn add(&mut self, cap: Capability) {
        self.add_operation(cap.operation);
        self.capabilities.push(cap);
    }

    pub fn is_available(&self, operation: &str) -> bool {
        self.operations.contains(&operation)
    }

    pub fn operations(&self) -> &[&'static str] {
        &self.operations
    }

    pub fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }

    /// Formats that some capability reads or writes.
    pub fn formats(&self) -> Vec<FormatInfo> {
        KNOWN_FORMATS
            .iter()
            .filter(|f| {
                self.capabilities
                    .iter()
                    .any(|c| c.input_format == f.name || c.output_format == f.name)
            })
            .copied()
            .collect()
    }

    /// Capabilities filtered by operation and formats (each `None` matches all).
    pub fn query<'a>(
        &'a self,
        operation: Option<&'a str>,
        input_format: Option<&'a str>,
        output_format: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Capability> + 'a {
        self.capabilities.iter().filter(move |c| {
            operation.is_none_or(|o| c.operation == o)
                && input_format.is_none_or(|f| c.input_format == f || c.input_format == ANY)
                && output_format.is_none_or(|f| c.output_format == f)
        })
    }

    /// The capability for a pair: the named engine, or the default one. The error says
    /// what is possible instead.
    pub fn find<'a>(
        &'a self,
        operation: &'a str,
        input_format: &'a str,
        output_format: &'a str,
        engine: Option<&str>,
    ) -> Result<&'a Capability, String> {
        let input = if input_format == ANY {
            ANY
        } else {
            canonical_format(input_format).unwrap_or(input_format)
        };
        let output = canonical_format(output_format).unwrap_or(output_format);
        let mut pair = self.query(Some(operation), Some(input), Some(output)).peekable();
        if pair.peek().is_none() {
            let outputs: Vec<_> = self
                .query(Some(operation), Some(input), None)
                .map(|c| c.output_format)
                .collect();
            return Err(if outputs.is_empty() {
                format!("{operation} from {input} is not supported by this server")
            } else {
                let mut outputs = outputs;
                outputs.sort();
                outputs.dedup();
                format!(
                    "{operation} from {input} to {output} is not supported; from {input} it gives: {}",
                    outputs.join(", ")
                )
            });
        }
        let candidates: Vec<_> = pair.collect();
        match engine {
            None => Ok(candidates[0]),
            Some(name) => candidates.iter().find(|c| c.engine == name).copied().ok_or_else(|| {
                let names: Vec<_> = candidates.iter().map(|c| c.engine).collect();
                format!(
                    "engine `{name}` cannot do {operation} from {input} to {output}; available: {}",
                    names.join(", ")
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        let mut r = Registry::new();
        r.add(Capability {
            operation: "convert",
            input_format: "jpg",
            output_format: "png",
            engine: "image",
            engine_version: "1".into(),
            options: vec![OptionSpec {
                name: "width",
                kind: OptionType::Integer { min: 1, max: 100 },
                default: None,
                description: "",
            }],
        });
        r
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_format("JPEG"), Some("jpg"));
        assert_eq!(canonical_format(".tif"), Some("tiff"));
        assert_eq!(canonical_format("xyz"), None);
        assert_eq!(format_of_filename("a.b.JPG"), Some("jpg"));
        assert_eq!(format_of_filename("x.tar.gz"), Some("tar.gz"));
        assert_eq!(canonical_format("tgz"), Some("tar.gz"));
    }

    #[test]
    fn find_explains_misses() {
        let r = reg();
        assert!(r.find("convert", "jpeg", "png", None).is_ok());
        let e = r.find("convert", "jpg", "gif", None).unwrap_err();
        assert!(e.contains("from jpg it gives: png"), "{e}");
        let e = r.find("convert", "jpg", "png", Some("magick")).unwrap_err();
        assert!(e.contains("available: image"), "{e}");
        assert_eq!(r.formats().iter().map(|f| f.name).collect::<Vec<_>>(), ["jpg", "png"]);
    }

    #[test]
    fn options_are_checked() {
        let r = reg();
        let cap = r.find("convert", "jpg", "png", None).unwrap();
        let opts = serde_json::json!({"width": 1000, "depth": 3});
        let errs = cap.check_options(opts.as_object().unwrap());
        assert_eq!(errs.len(), 2);
        assert!(errs
            .iter()
            .any(|(n, m)| n == "width" && m.contains("between 1 and 100")));
        assert!(errs.iter().any(|(n, m)| n == "depth" && m.contains("unknown option")));
    }
}
