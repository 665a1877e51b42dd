//! External programs, supervised: found on PATH (or not, and then not offered), run in
//! their own process group with a timeout, and the whole group killed when it runs out.

use runconvert_core::error::codes;
use runconvert_core::TaskError;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The full path of `name` on PATH, if it is there and executable.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The first line a program prints for `args` (its version), if it runs.
pub fn version_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// Runs `cmd` to completion within `timeout`; on timeout the process group is killed.
/// Returns stderr's tail on failure, as the error message.
pub fn run(mut cmd: Command, what: &str, timeout: Duration) -> Result<(), TaskError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| TaskError::new(codes::PROCESSING_FAILED, format!("cannot start {what}: {e}")))?;
    let pid = child.id() as i32;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        }
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(pid);
                let _ = child.wait();
                return Err(TaskError::new(
                    codes::TIMEOUT,
                    format!("{what} did not finish within {} s and was stopped", timeout.as_secs()),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(TaskError::new(codes::PROCESSING_FAILED, format!("{what}: {e}"))),
        }
    };
    // Nothing the program started may outlive it.
    kill_group(pid);
    let err = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&err);
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).rev().take(3).collect();
    let detail = tail.into_iter().rev().collect::<Vec<_>>().join("; ");
    Err(TaskError::new(
        codes::PROCESSING_FAILED,
        if detail.is_empty() {
            format!("{what} failed ({status})")
        } else {
            format!("{what} failed: {detail}")
        },
    ))
}

fn kill_group(pid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Poppler's pdftoppm, if installed.
#[derive(Debug, Clone)]
pub struct Pdftoppm {
    pub path: PathBuf,
    pub version: String,
}

impl Pdftoppm {
    /// Finds the program; its version (one more process to run) only if `probe_version`.
    pub fn find(probe_version: bool) -> Option<Self> {
        let path = which("pdftoppm")?;
        let version = if probe_version {
            version_of(&path, &["-v"])
                .and_then(|l| l.split_whitespace().last().map(String::from))
                .unwrap_or_else(|| "unknown".into())
        } else {
            "not probed".into()
        };
        Some(Pdftoppm { path, version })
    }

    /// Renders pages `first..=last` of `pdf` as `out_prefix-N.{png,jpg}` at `dpi`, or scaled
    /// so the longer side is `scale_to` pixels.
    #[allow(clippy::too_many_arguments)]
    pub fn render(
        &self,
        pdf: &Path,
        out_prefix: &Path,
        format: &str,
        first: u32,
        last: u32,
        dpi: Option<u32>,
        scale_to: Option<u32>,
        quality: u8,
        timeout: Duration,
    ) -> Result<(), TaskError> {
        let mut cmd = Command::new(&self.path);
        match format {
            "png" => {
                cmd.arg("-png");
            }
            "jpg" => {
                cmd.arg("-jpeg").arg("-jpegopt").arg(format!("quality={quality}"));
            }
            other => {
                return Err(TaskError::new(
                    codes::UNSUPPORTED_CONVERSION,
                    format!("cannot render PDF pages as {other}"),
                ))
            }
        }
        cmd.args(["-f", &first.to_string(), "-l", &last.to_string()]);
        if let Some(s) = scale_to {
            cmd.args(["-scale-to", &s.to_string()]);
        } else {
            cmd.args(["-r", &dpi.unwrap_or(150).to_string()]);
        }
        cmd.arg(pdf).arg(out_prefix);
        run(cmd, "pdftoppm", timeout)
    }
}
