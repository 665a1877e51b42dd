//! Office documents with LibreOffice (`soffice --headless --convert-to`), one fresh user
//! profile per conversion so no state, macro setting or lock leaks between users.
//! LibreOffice's default macro security (unsigned macros never run) stays in force.

use crate::tools::{run, Slots, Tool};
use crate::EngineLimits;
use runconvert_core::error::codes;
use runconvert_core::TaskError;
use std::path::Path;
use std::process::Command;

pub const WRITER: &[&str] = &["docx", "doc", "odt", "rtf", "txt"];
pub const WRITER_OUT: &[&str] = &["pdf", "docx", "odt"];
pub const CALC: &[&str] = &["xlsx", "ods"];
pub const CALC_OUT: &[&str] = &["pdf", "xlsx", "ods"];
pub const IMPRESS: &[&str] = &["pptx", "odp"];
pub const IMPRESS_OUT: &[&str] = &["pdf", "pptx", "odp"];

/// Zipped documents larger than this when unpacked are refused (zip bombs).
const MAX_UNPACKED: u64 = 512 << 20;
const MAX_ENTRIES: usize = 10_000;

static SLOTS: Slots = Slots::new(1);

#[derive(Debug, Clone)]
pub struct Office {
    pub tool: Tool,
}

impl Office {
    pub fn find(probe_version: bool) -> Option<Self> {
        let pick = |l: &str| l.split_whitespace().nth(1).map(String::from);
        Tool::find("soffice", &["--version"], probe_version, pick).map(|tool| Office { tool })
    }

    /// The output filter LibreOffice needs for a format.
    fn filter(output: &str) -> &'static str {
        match output {
            "pdf" => "pdf",
            "docx" => "docx:MS Word 2007 XML",
            "odt" => "odt",
            "xlsx" => "xlsx:Calc MS Excel 2007 XML",
            "ods" => "ods",
            "pptx" => "pptx:Impress MS PowerPoint 2007 XML",
            _ => "odp",
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn convert(
        &self,
        input: &Path,
        name: &str,
        format: &str,
        out: &Path,
        output: &str,
        work: &Path,
        limits: &EngineLimits,
    ) -> Result<(), TaskError> {
        check_unpacked_size(input, name, format)?;
        let n = std::process::id() as u64
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0));
        let dir = work.join(format!("office-{n:x}"));
        let profile = dir.join("profile");
        let outdir = dir.join("out");
        for d in [&profile, &outdir] {
            std::fs::create_dir_all(d).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?;
        }
        // The profile is given as a file:// URL, which must be absolute.
        let dir = std::fs::canonicalize(&dir).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?;
        let (profile, outdir) = (dir.join("profile"), dir.join("out"));
        // LibreOffice picks its import filter by extension: give it a plain, known name.
        let src = dir.join(format!("document.{format}"));
        std::fs::copy(input, &src).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?;
        let mut cmd = Command::new(&self.tool.path);
        cmd.args([
            "--headless",
            "--norestore",
            "--nologo",
            "--nodefault",
            "--nolockcheck",
            "--nofirststartwizard",
        ])
        .arg(format!("-env:UserInstallation=file://{}", profile.display()))
        .args(["--convert-to", Self::filter(output), "--outdir"])
        .arg(&outdir)
        .arg(&src)
        .env("HOME", &profile)
        .current_dir(&dir);
        let result = {
            let _slot = SLOTS.acquire();
            run(cmd, "LibreOffice", limits)
        };
        let produced = outdir.join(format!("document.{output}"));
        let moved = result.and_then(|()| {
            std::fs::rename(&produced, out).map_err(|_| {
                TaskError::new(
                    codes::INVALID_FILE,
                    format!("LibreOffice could not convert {name} to {output} (is it a valid {format} file?)"),
                )
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
        moved
    }
}

/// Refuses zipped documents that unpack to too much (or too many entries).
fn check_unpacked_size(input: &Path, name: &str, format: &str) -> Result<(), TaskError> {
    if !matches!(format, "docx" | "xlsx" | "pptx" | "odt" | "ods" | "odp") {
        return Ok(());
    }
    let file = std::fs::File::open(input).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| TaskError::new(codes::INVALID_FILE, format!("{name} is not a valid {format} file: {e}")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(TaskError::new(
            codes::LIMIT_EXCEEDED,
            format!("{name} has {} parts; at most {MAX_ENTRIES} are accepted", zip.len()),
        ));
    }
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| TaskError::new(codes::INVALID_FILE, format!("{name}: {e}")))?;
        total = total.saturating_add(entry.size());
    }
    if total > MAX_UNPACKED {
        return Err(TaskError::new(
            codes::LIMIT_EXCEEDED,
            format!("{name} unpacks to {total} bytes (a zip bomb?); at most {MAX_UNPACKED} are accepted"),
        ));
    }
    Ok(())
}
