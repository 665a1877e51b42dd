//! OCR with Tesseract: images (and PDF pages, rendered first) to text or to a searchable PDF.

use crate::tools::{run, Slots, Tool};
use crate::EngineLimits;
use runconvert_core::error::codes;
use runconvert_core::TaskError;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Image formats Tesseract (Leptonica) reads directly; others are converted to PNG first.
pub const DIRECT: &[&str] = &["png", "jpg", "tiff", "bmp", "gif", "webp"];
pub const OUTPUTS: &[&str] = &["txt", "pdf"];

static SLOTS: Slots = Slots::new(2);

#[derive(Debug, Clone)]
pub struct Tesseract {
    pub tool: Tool,
    languages: OnceLock<Vec<String>>,
}

fn tesseract_version(line: &str) -> Option<String> {
    line.split_whitespace().nth(1).map(String::from)
}

impl Tesseract {
    /// Declared, not found: see [`crate::tools::Tool::declared`].
    pub fn declared() -> Self {
        Tesseract {
            tool: Tool::declared("tesseract"),
            languages: OnceLock::new(),
        }
    }

    pub fn find(probe_version: bool) -> Option<Self> {
        Tool::find("tesseract", &["--version"], probe_version, tesseract_version).map(|tool| Tesseract {
            tool,
            languages: OnceLock::new(),
        })
    }

    /// The installed language data (`tesseract --list-langs`).
    pub fn languages(&self) -> &[String] {
        self.languages.get_or_init(|| {
            let out = Command::new(&self.tool.path).arg("--list-langs").output();
            let text = out
                .map(|o| String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).to_string())
                .unwrap_or_default();
            text.lines()
                .skip(1)
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .collect()
        })
    }

    /// Checks a `language` value such as `eng` or `eng+deu` against what is installed.
    pub fn check_language(&self, language: &str) -> Result<(), TaskError> {
        let installed = self.languages();
        for lang in language.split('+') {
            if !installed.iter().any(|l| l == lang) {
                return Err(TaskError::new(
                    codes::INVALID_DATA,
                    format!(
                        "OCR language {lang:?} is not installed on this server; installed: {}",
                        installed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Recognises the text of `pages` (images, in order) into `out` as txt or pdf.
    pub fn recognise(
        &self,
        pages: &[PathBuf],
        language: &str,
        output: &str,
        out: &Path,
        work: &Path,
        limits: &EngineLimits,
    ) -> Result<(), TaskError> {
        self.check_language(language)?;
        let input = if pages.len() == 1 {
            pages[0].clone()
        } else {
            let list = work.join("ocr-pages.txt");
            let text: String = pages.iter().map(|p| format!("{}\n", p.display())).collect();
            std::fs::write(&list, text).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?;
            list
        };
        let base = work.join("ocr-out");
        let mut cmd = Command::new(&self.tool.path);
        cmd.arg(&input).arg(&base).args(["-l", language]).arg(output);
        let _slot = SLOTS.acquire();
        run(cmd, "tesseract", limits)?;
        let produced = base.with_extension(output);
        std::fs::rename(&produced, out)
            .map_err(|e| TaskError::new(codes::PROCESSING_FAILED, format!("tesseract wrote no {output}: {e}")))
    }
}
