//! One-shot operations from the command line (`runconvert convert IN OUT -o width=400`):
//! the same engines as the server, on local files, with no server, database or job.

use runconvert_core::ops::Operation;
use runconvert_engines::process::{self, InputFile};
use runconvert_engines::EngineLimits;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Parses `key=value` options; values that are JSON (numbers, booleans) are taken as such.
pub fn parse_options(pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("option {p:?} is not key=value"))?;
        let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
        map.insert(k.trim().to_string(), value);
    }
    Ok(map)
}

fn extension_format(path: &Path) -> Result<String, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    runconvert_core::formats::format_of_filename(&name)
        .map(String::from)
        .ok_or_else(|| format!("cannot tell the output format from {}", path.display()))
}

/// Runs `operation` on `inputs`, writing `output` (or, for several results, files named
/// after it: `out-1.png`, `out-2.png`...). Returns the files written.
pub fn run(
    operation: &str,
    inputs: &[PathBuf],
    output: &Path,
    text: Option<String>,
    options: Map<String, Value>,
    limits: &EngineLimits,
) -> Result<Vec<PathBuf>, String> {
    let mut fields = Map::new();
    let out_format = extension_format(output)?;
    match operation {
        "convert" | "thumbnail" | "merge" | "archive" | "ocr" => {
            fields.insert("output_format".into(), Value::String(out_format.clone()));
        }
        _ => {}
    }
    // The free-text argument: watermark text, or OCR language.
    if let Some(t) = text {
        let key = if operation == "ocr" { "language" } else { "text" };
        fields.insert(key.into(), Value::String(t));
    }
    if !options.is_empty() {
        fields.insert("options".into(), Value::Object(options));
    }
    let op = Operation::parse(operation, fields)
        .map_err(|e| format!("{operation}: {e}"))?
        .ok_or_else(|| format!("unknown operation {operation}"))?;
    let registry = runconvert_worker::registry_with(false);
    let work = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(format!(".runconvert-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let files = inputs
        .iter()
        .map(|p| InputFile {
            path: p.clone(),
            name: p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "file".into()),
            task: None,
        })
        .collect();
    let result = process::run(&op, files, &work, &registry, limits);
    let written = result
        .map_err(|e| format!("{}: {}", e.code, e.message))
        .and_then(|outs| {
            let many = outs.len() > 1;
            outs.into_iter()
                .enumerate()
                .map(|(i, o)| {
                    let dest = if many {
                        let stem = output
                            .file_stem()
                            .map(|s| s.to_string_lossy().to_string())
                            .unwrap_or_default();
                        output.with_file_name(format!("{stem}-{}.{out_format}", i + 1))
                    } else {
                        output.to_path_buf()
                    };
                    std::fs::rename(&o.path, &dest)
                        .or_else(|_| std::fs::copy(&o.path, &dest).map(|_| ()))
                        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
                    Ok(dest)
                })
                .collect()
        });
    let _ = std::fs::remove_dir_all(&work);
    written
}
