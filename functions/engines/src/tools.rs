//! External programs, supervised the way Gotenberg supervises its engines: each is found
//! on PATH (or not, and then not offered), runs without a shell in a fresh process group
//! with its own concurrency limit and without network (`sandbox`), and the whole group is
//! killed at the task's timeout or when the task is cancelled. Nothing a program starts
//! outlives it.

use crate::EngineLimits;
use runconvert_core::error::codes;
use runconvert_core::TaskError;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
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

/// A program found on this host.
#[derive(Debug, Clone)]
pub struct Tool {
    pub path: PathBuf,
    pub version: String,
}

impl Tool {
    /// Finds `name`; runs it with `version_args` for its version only if `probe_version`,
    /// and keeps the word of that line that `pick` chooses.
    pub fn find(
        name: &str,
        version_args: &[&str],
        probe_version: bool,
        pick: fn(&str) -> Option<String>,
    ) -> Option<Tool> {
        let path = which(name)?;
        let version = if probe_version {
            version_of(&path, version_args)
                .and_then(|l| pick(&l))
                .unwrap_or_else(|| "unknown".into())
        } else {
            "not probed".into()
        };
        Some(Tool { path, version })
    }
}

impl Tool {
    /// A tool a deployment declares it has elsewhere (the API of a deployment whose
    /// tools live in another function's image): listed, never run from here.
    pub fn declared(name: &str) -> Tool {
        Tool {
            path: PathBuf::from(name),
            version: "declared".into(),
        }
    }
}

/// The last whitespace-separated word of a line.
pub fn last_word(line: &str) -> Option<String> {
    line.split_whitespace().last().map(String::from)
}

/// A counting semaphore: at most `n` runs of one engine at a time.
pub struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    pub const fn new(n: usize) -> Self {
        Slots {
            free: Mutex::new(n),
            cv: Condvar::new(),
        }
    }

    pub fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SlotGuard(self)
    }
}

pub struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// Runs `cmd` to completion within the task's timeout; see [`run_lines`].
pub fn run(cmd: Command, what: &str, limits: &EngineLimits) -> Result<(), TaskError> {
    run_lines(cmd, what, limits, &mut |_| {})
}

/// Runs `cmd`, handing each line it prints on stdout to `on_line`. On timeout or cancel
/// the process group is killed. A failure's message is the tail of stderr.
pub fn run_lines(
    mut cmd: Command,
    what: &str,
    limits: &EngineLimits,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), TaskError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    crate::sandbox::confine(&mut cmd, limits);
    let mut child = cmd
        .spawn()
        .map_err(|e| TaskError::new(codes::PROCESSING_FAILED, format!("cannot start {what}: {e}")))?;
    let pid = child.id() as i32;
    // From here on, whatever happens, the group is killed when this guard goes.
    let _group = KillGroupOnDrop(pid);
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        }
        buf
    });
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out_reader = child.stdout.take().map(|stdout| {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    });
    let started = Instant::now();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            on_line(&line);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if limits.cancel.is_cancelled() => {
                kill_group(pid);
                let _ = child.wait();
                return Err(TaskError::new(
                    codes::PROCESSING_FAILED,
                    format!("{what} was stopped: the task was cancelled"),
                ));
            }
            Ok(None) if started.elapsed() >= limits.tool_timeout => {
                kill_group(pid);
                let _ = child.wait();
                return Err(TaskError::new(
                    codes::TIMEOUT,
                    format!(
                        "{what} did not finish within {} s and was stopped",
                        limits.tool_timeout.as_secs()
                    ),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(TaskError::new(codes::PROCESSING_FAILED, format!("{what}: {e}"))),
        }
    };
    // The tool has exited, but its last lines may still be in the pipe: with the group
    // gone (nothing else holds the pipe), read to its end before looking at them.
    // (Two seconds at most, should something outside the group still hold it.)
    kill_group(pid);
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        on_line(&line);
    }
    drop(out_reader);
    let err = err_reader.join().unwrap_or_default();
    // Some tools (pdftoppm) say they ran out of memory and still exit 0 with a broken file.
    if let Some(e) = limit_failure(what, status, &err, limits) {
        tracing::warn!(tool = what, %status, "tool stopped at a limit");
        return Err(e);
    }
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&err);
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).rev().take(3).collect();
    let detail = tail.into_iter().rev().collect::<Vec<_>>().join("; ");
    // The whole of it goes to the log; the user sees it without this server's paths and
    // memory addresses.
    tracing::warn!(tool = what, %status, detail = %detail, "tool failed");
    let detail = scrub_detail(&detail);
    Err(TaskError::new(
        codes::PROCESSING_FAILED,
        if detail.is_empty() {
            format!("{what} failed ({status})")
        } else {
            format!("{what} failed: {detail}")
        },
    ))
}

/// A failure caused by the limits [`crate::sandbox::confine`] sets: the CPU time (the
/// kernel's SIGXCPU) or the memory (an allocation refused: the tool says so, or aborts).
fn limit_failure(
    what: &str,
    status: std::process::ExitStatus,
    stderr: &[u8],
    limits: &EngineLimits,
) -> Option<TaskError> {
    use std::os::unix::process::ExitStatusExt;
    if status.signal() == Some(libc::SIGXCPU) {
        return Some(TaskError::new(
            codes::TIMEOUT,
            format!(
                "{what} used more CPU time than its task's timeout of {} s allows and was stopped",
                limits.tool_timeout.as_secs()
            ),
        ));
    }
    if limits.tool_memory == 0 {
        return None;
    }
    // Only what the tool says: a crash on a malformed file is not a memory limit.
    let text = String::from_utf8_lossy(stderr).to_ascii_lowercase();
    let said = [
        "out of memory",
        "bad_alloc",
        "cannot allocate memory",
        "memory allocation failed",
    ]
    .iter()
    .any(|m| text.contains(m));
    said.then(|| {
        TaskError::new(
            codes::LIMIT_EXCEEDED,
            format!(
                "{what} needed more than this server's limit of {} MiB of memory for this file",
                limits.tool_memory >> 20
            ),
        )
    })
}

/// A tool's message without what it says of this server: absolute paths become their
/// last segment (`/data/work/<task>/in/0/x.mp4` → `x.mp4`), and `@ 0x55fc…` addresses
/// (FFmpeg's) go.
pub fn scrub_detail(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(" @ 0x") {
            let hex = after.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(after.len());
            rest = &after[hex..];
            continue;
        }
        let at_word_start = out.is_empty() || out.ends_with([' ', '\'', '"', '(', '[', '=', ':', ',']);
        if at_word_start && rest.starts_with('/') {
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | ')' | ']' | ',' | ';'))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(':');
            let shown = path.rsplit('/').find(|p| !p.is_empty()).unwrap_or("");
            out.push_str(shown);
            rest = &rest[path.len()..];
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group made for the child.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Poppler's pdftoppm.
#[derive(Debug, Clone)]
pub struct Pdftoppm(pub Tool);

static PDFTOPPM_SLOTS: Slots = Slots::new(2);

impl Pdftoppm {
    pub fn find(probe_version: bool) -> Option<Self> {
        Tool::find("pdftoppm", &["-v"], probe_version, last_word).map(Pdftoppm)
    }

    pub fn version(&self) -> &str {
        &self.0.version
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
        limits: &EngineLimits,
    ) -> Result<(), TaskError> {
        let mut cmd = Command::new(&self.0.path);
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
        let _slot = PDFTOPPM_SLOTS.acquire();
        run(cmd, "pdftoppm", limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_paths_and_addresses() {
        assert_eq!(
            scrub_detail("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55fc3a1b2c40] moov atom not found; /srv/data/work/1234-abcd/in/0/x.mp4: Invalid data"),
            "[mov,mp4,m4a,3gp,3g2,mj2] moov atom not found; x.mp4: Invalid data"
        );
        assert_eq!(scrub_detail("Error opening '/tmp/x/c.pdf'"), "Error opening 'c.pdf'");
        assert_eq!(scrub_detail("ratio 1/2 kept"), "ratio 1/2 kept");
    }
}
