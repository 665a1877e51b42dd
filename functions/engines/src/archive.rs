//! zip, tar and tar.gz archives of any number of files, streamed to disk, with safe and
//! unique entry names.

use crate::process::InputFile;
use runconvert_core::error::codes;
use runconvert_core::names::{safe_filename, unique_name};
use runconvert_core::TaskError;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub const FORMATS: &[&str] = &["zip", "tar", "tar.gz"];

/// Formats already compressed: stored as they are in a zip.
const COMPRESSED: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "webp", "zip", "gz", "tgz", "mp4", "mp3", "webm", "mkv", "mov", "ogg", "flac", "aac",
    "m4a", "docx", "xlsx", "pptx", "odt", "ods", "odp", "7z", "rar", "bz2", "xz", "avif", "heic",
];

fn fail(e: impl std::fmt::Display) -> TaskError {
    TaskError::new(codes::PROCESSING_FAILED, format!("writing the archive: {e}"))
}

/// Entry names: the file names made safe, `name (2).ext` for repeats.
pub fn entry_names(inputs: &[InputFile]) -> Vec<String> {
    let mut seen = HashSet::new();
    inputs
        .iter()
        .map(|f| unique_name(&safe_filename(&f.name), &mut seen))
        .collect()
}

pub fn create(inputs: &[InputFile], output: &Path, format: &str) -> Result<(), TaskError> {
    let names = entry_names(inputs);
    let out = BufWriter::with_capacity(1 << 20, File::create(output).map_err(fail)?);
    match format {
        "zip" => {
            let mut zip = zip::ZipWriter::new(out);
            for (f, name) in inputs.iter().zip(&names) {
                let mut src = File::open(&f.path).map_err(fail)?;
                let size = src.metadata().map_err(fail)?.len();
                let ext = name
                    .rsplit_once('.')
                    .map(|(_, e)| e.to_ascii_lowercase())
                    .unwrap_or_default();
                let method = if COMPRESSED.contains(&ext.as_str()) {
                    zip::CompressionMethod::Stored
                } else {
                    zip::CompressionMethod::Deflated
                };
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(method)
                    .large_file(size >= u32::MAX as u64)
                    .unix_permissions(0o644);
                zip.start_file(name.as_str(), opts).map_err(fail)?;
                std::io::copy(&mut src, &mut zip).map_err(fail)?;
            }
            let mut out = zip.finish().map_err(fail)?;
            out.flush().map_err(fail)
        }
        "tar" => {
            let mut w = write_tar(out, inputs, &names)?;
            w.flush().map_err(fail)
        }
        "tar.gz" => {
            let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            let gz = write_tar(gz, inputs, &names)?;
            let mut out = gz.finish().map_err(fail)?;
            out.flush().map_err(fail)
        }
        other => Err(TaskError::new(
            codes::UNSUPPORTED_CONVERSION,
            format!("cannot make {other} archives; formats: {}", FORMATS.join(", ")),
        )),
    }
}

fn write_tar<W: Write>(out: W, inputs: &[InputFile], names: &[String]) -> Result<W, TaskError> {
    let mut tar = tar::Builder::new(out);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (f, name) in inputs.iter().zip(names) {
        let src = File::open(&f.path).map_err(fail)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(src.metadata().map_err(fail)?.len());
        header.set_mode(0o644);
        header.set_mtime(now);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, src).map_err(fail)?;
    }
    tar.into_inner().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_unique() {
        let f = |n: &str| InputFile {
            path: "/dev/null".into(),
            name: n.into(),
            task: None,
        };
        let names = entry_names(&[f("a.jpg"), f("../a.jpg"), f("A.JPG"), f("/etc/passwd"), f("")]);
        assert_eq!(names, ["a.jpg", "a (2).jpg", "A (3).JPG", "passwd", "file"]);
    }
}
