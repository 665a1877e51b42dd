//! RunConvert's operations as plain functions over files in a work directory.
//!
//! No HTTP, no database, no cloud SDK: the embedded executor, the `runconvert` command
//! line and the per-operation Lambdas call the very same functions. Each engine
//! registers what it can do in the core [`Registry`], which is what the API reports and
//! what [`process::run`] consults.
//!
//! - [`raster`]: decode, resize, encode raster images (the `image` crate, libwebp).
//! - [`pdf`]: merge, images → PDF, compress, watermark (lopdf).
//! - [`archive`]: zip, tar, tar.gz.
//! - [`watermark`]: text and image overlays (the bundled DejaVu Sans font).
//! - [`tools`]: external programs (Poppler's pdftoppm), supervised with a timeout.
//! - [`process`]: one entry point for every processing operation.

pub mod archive;
pub mod detect;
pub mod jpeg;
pub mod media;
pub mod ocr;
pub mod office;
pub mod pdf;
pub mod png;
pub mod process;
pub mod raster;
pub mod sandbox;
pub mod scratch;
pub mod tools;
pub mod unlink;
pub mod watermark;

use runconvert_core::error::codes;
use runconvert_core::TaskError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Cancels a running operation: external programs are killed within milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Cancel(pub Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Receives an operation's progress, 0 to 100.
#[derive(Clone, Default)]
pub struct Progress(pub Option<Arc<dyn Fn(u8) + Send + Sync>>);

impl Progress {
    pub fn report(&self, percent: u8) {
        if let Some(f) = &self.0 {
            f(percent.min(100));
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// Limits every engine honours, and the controls of the task it works for.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// Largest image (width × height) an engine will decode.
    pub max_pixels: u64,
    /// Most pages a PDF may have.
    pub max_pages: u32,
    /// How long an external program may run.
    pub tool_timeout: Duration,
    /// Most memory (data segment, bytes) an external program may take; 0 for no limit.
    pub tool_memory: u64,
    /// Largest video frame (width × height) FFmpeg is given.
    pub max_video_pixels: u64,
    /// Longest audio or video input.
    pub max_duration: Duration,
    /// Most streams a media file may have.
    pub max_streams: usize,
    /// Most bytes a PDF's drawing instructions (all but images) may inflate to.
    pub max_pdf_content: u64,
    /// Set when the task is cancelled (deleted, timed out).
    pub cancel: Cancel,
    pub progress: Progress,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_pixels: 150_000_000,
            max_pages: 2_000,
            tool_timeout: Duration::from_secs(300),
            tool_memory: 0,
            max_video_pixels: 7680 * 4320,
            max_duration: Duration::from_secs(4 * 3600),
            max_streams: 32,
            max_pdf_content: 256 << 20,
            cancel: Cancel::default(),
            progress: Progress::default(),
        }
    }
}

impl EngineLimits {
    pub fn check_pixels(&self, display_name: &str, w: u32, h: u32) -> Result<(), TaskError> {
        let pixels = w as u64 * h as u64;
        if pixels > self.max_pixels {
            return Err(TaskError::new(
                codes::LIMIT_EXCEEDED,
                format!(
                    "{display_name} is {w}×{h} ({pixels} pixels); this server decodes at most {} pixels",
                    self.max_pixels
                ),
            ));
        }
        Ok(())
    }
}
