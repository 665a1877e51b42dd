//! What every file transfer shares: progress by bytes moved, size caps, remote path
//! checks, and error messages that never carry a secret.

use runconvert_core::error::codes;
use runconvert_core::TaskError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The buffer a download is written to disk through: a few trips to the blocking pool per
/// megabyte instead of one per network chunk.
pub const WRITE_BUFFER: usize = 256 << 10;

/// Reports a task's percent as bytes move.
#[derive(Clone, Default)]
pub struct ByteProgress {
    report: Option<Arc<dyn Fn(u8) + Send + Sync>>,
    total: u64,
    done: u64,
    last: u8,
}

impl ByteProgress {
    pub fn new(report: Option<Arc<dyn Fn(u8) + Send + Sync>>, total: u64) -> Self {
        ByteProgress {
            report,
            total,
            done: 0,
            last: 0,
        }
    }

    /// Sets the total once it is known (a single file's size, read from its answer).
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.total == 0 {
            return;
        }
        let pct = ((self.done.min(self.total) * 100) / self.total) as u8;
        if pct != self.last {
            self.last = pct;
            if let Some(f) = &self.report {
                f(pct);
            }
        }
    }
}

/// The slowest a transfer may go: over every window of `window`, at least
/// `min_rate × window` bytes, so a peer that trickles a byte now and then cannot hold a
/// task slot until the task's timeout (a per-read timeout alone does not catch it).
#[derive(Debug, Clone)]
pub struct RateFloor {
    min_rate: u64,
    window: Duration,
    window_start: std::time::Instant,
    window_bytes: u64,
}

impl RateFloor {
    /// `min_rate` in bytes a second; 0 turns the floor off.
    pub fn new(min_rate: u64, window: Duration) -> Self {
        RateFloor {
            min_rate,
            window: window.max(Duration::from_secs(1)),
            window_start: std::time::Instant::now(),
            window_bytes: 0,
        }
    }

    /// Counts `n` bytes that just moved; fails once a whole window went by below the floor.
    pub fn add(&mut self, n: u64, peer: &str) -> Result<(), TaskError> {
        self.window_bytes += n;
        let elapsed = self.window_start.elapsed();
        if self.min_rate == 0 || elapsed < self.window {
            return Ok(());
        }
        let needed = self.min_rate.saturating_mul(elapsed.as_secs().max(1));
        if self.window_bytes < needed {
            return Err(TaskError::new(
                codes::TIMEOUT,
                format!(
                    "{peer} sent {} bytes in {} s, slower than this server's minimum of {} bytes a second",
                    self.window_bytes,
                    elapsed.as_secs(),
                    self.min_rate
                ),
            ));
        }
        self.window_start = std::time::Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

/// Limits and timeouts for imports and exports.
#[derive(Debug, Clone)]
pub struct TransferLimits {
    /// Largest file an import may bring in.
    pub max_bytes: u64,
    /// Most files one prefix import may bring in.
    pub max_files: usize,
    pub connect_timeout: Duration,
    /// Longest silence from the other side before the transfer is abandoned.
    pub read_timeout: Duration,
    /// Slowest average rate (bytes a second, over each `read_timeout` window); 0: none.
    pub min_rate: u64,
    /// SFTP tasks without a `host_key` are refused (`host_key_required`) instead of
    /// trusting the key the server presents.
    pub require_sftp_host_key: bool,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            max_bytes: 1 << 30,
            max_files: 1000,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            min_rate: 1024,
            require_sftp_host_key: false,
        }
    }
}

/// A file an import brought in: its name and where it is in the work directory.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub name: String,
    pub path: PathBuf,
}

/// A file to export: its name and where it is in the work directory.
#[derive(Debug, Clone)]
pub struct ToSend {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

pub fn too_large(max: u64) -> TaskError {
    TaskError::new(
        codes::FILE_TOO_LARGE,
        format!("the file is larger than this server's limit of {max} bytes"),
    )
}

/// Replaces every secret that may have slipped into `message` (a server echoing an access
/// key id, a URL carrying a SAS token).
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_string();
    for s in secrets {
        let s = s.trim();
        if s.len() >= 4 {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}

/// Checks a remote key or path given by the user (the rule is the validator's, applied
/// again to names made at run time).
pub fn check_remote_path(field: &str, path: &str) -> Result<(), TaskError> {
    runconvert_core::validate::check_remote_path(path)
        .map_err(|why| TaskError::new(codes::INVALID_DATA, format!("{field} {path:?} {why}")))
}

/// The name for the `index`th (from 0) of `count` files exported under `key`: `%d` in the
/// key becomes the file's number from 1; with several files and no `%d`, an error.
pub fn numbered_key(field: &str, key: &str, index: usize, count: usize) -> Result<String, TaskError> {
    if key.contains("%d") {
        return Ok(key.replace("%d", &(index + 1).to_string()));
    }
    if count > 1 {
        return Err(TaskError::new(
            codes::INVALID_DATA,
            format!(
                "{field} names one file but the input has {count}; use the prefix field, or put %d in {field} for the file's number"
            ),
        ));
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_falls_below_the_floor() {
        let mut floor = RateFloor::new(1024, Duration::from_secs(1));
        floor.window_start -= Duration::from_secs(2);
        let e = floor.add(10, "example.com").unwrap_err();
        assert_eq!(e.code, codes::TIMEOUT);
        let mut fast = RateFloor::new(1024, Duration::from_secs(1));
        fast.window_start -= Duration::from_secs(2);
        assert!(fast.add(4096, "example.com").is_ok());
    }

    #[test]
    fn scrubs_secrets() {
        assert_eq!(scrub("key AKIA123 refused", &["AKIA123", ""]), "key [redacted] refused");
    }

    #[test]
    fn numbers_keys() {
        assert_eq!(numbered_key("key", "a-%d.png", 1, 3).unwrap(), "a-2.png");
        assert_eq!(numbered_key("key", "a.png", 0, 1).unwrap(), "a.png");
        assert!(numbered_key("key", "a.png", 0, 2).is_err());
    }
}
