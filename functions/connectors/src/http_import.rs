//! import/url: a streamed, size-capped download through the guard.

use crate::guard::Guard;
use runconvert_core::error::codes;
use runconvert_core::TaskError;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone)]
pub struct DownloadLimits {
    pub max_bytes: u64,
    pub connect_timeout: Duration,
    /// Longest pause between two pieces of the body.
    pub read_timeout: Duration,
    /// Slowest average rate, in bytes a second over each `read_timeout` window (0: none).
    pub min_rate: u64,
    /// Longest a whole download may take, however it goes.
    pub deadline: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            max_bytes: 1 << 30,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            min_rate: 1024,
            deadline: Duration::from_secs(3600),
        }
    }
}

/// What a download gave.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub size: u64,
    /// The file name the server suggested (Content-Disposition), or the URL's last segment.
    pub suggested_name: Option<String>,
}

fn failed(msg: impl Into<String>) -> TaskError {
    TaskError::new(codes::DOWNLOAD_FAILED, msg)
}

/// Downloads `url` into `dest`, refusing what the guard refuses and stopping at the size
/// cap, the minimum rate or the deadline; `progress` follows the bytes against the
/// answer's Content-Length (when it gives one).
pub async fn download(
    guard: &Guard,
    url: &str,
    headers: &BTreeMap<String, String>,
    dest: &Path,
    limits: &DownloadLimits,
    progress: crate::transfer::ByteProgress,
) -> Result<Downloaded, TaskError> {
    let within = download_within(guard, url, headers, dest, limits, progress);
    match tokio::time::timeout(limits.deadline, within).await {
        Ok(result) => result,
        Err(_) => {
            let _ = tokio::fs::remove_file(dest).await;
            Err(TaskError::new(
                codes::TIMEOUT,
                format!(
                    "the download took longer than this server's limit of {} s",
                    limits.deadline.as_secs()
                ),
            ))
        }
    }
}

async fn download_within(
    guard: &Guard,
    url: &str,
    headers: &BTreeMap<String, String>,
    dest: &Path,
    limits: &DownloadLimits,
    mut progress: crate::transfer::ByteProgress,
) -> Result<Downloaded, TaskError> {
    let parsed = url::Url::parse(url.trim()).map_err(|e| failed(format!("{url:?} is not a valid URL: {e}")))?;
    guard
        .check_url(&parsed)
        .map_err(|r| TaskError::new(codes::FORBIDDEN_ADDRESS, r.0))?;
    // Redirects are followed here, not by the client: the task's headers are credentials
    // (Authorization, Cookie, X-Api-Key, anything) and go only to the origin they were
    // given for, never to another host a redirect names.
    let client = guard
        .http_client()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(limits.connect_timeout)
        .read_timeout(limits.read_timeout)
        .build()
        .map_err(|e| failed(format!("cannot set up the HTTP client: {e}")))?;
    let mut current = parsed.clone();
    let mut redirects = 0;
    let mut resp = loop {
        let mut req = client.get(current.clone());
        if same_origin(&current, &parsed) {
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let resp = req.send().await.map_err(|e| describe(&current, e))?;
        if !resp.status().is_redirection() {
            break resp;
        }
        let Some(next) = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| current.join(l).ok())
        else {
            break resp;
        };
        redirects += 1;
        if redirects > crate::guard::MAX_REDIRECTS {
            return Err(failed(format!(
                "{} redirected more than {} times",
                host_of(&parsed),
                crate::guard::MAX_REDIRECTS
            )));
        }
        guard
            .check_url(&next)
            .map_err(|r| TaskError::new(codes::FORBIDDEN_ADDRESS, format!("a redirect was refused: {}", r.0)))?;
        current = next;
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(failed(format!("{} answered HTTP {status}", host_of(&current))));
    }
    if let Some(len) = resp.content_length() {
        if len > limits.max_bytes {
            return Err(too_large(limits.max_bytes));
        }
        progress.set_total(len);
    }
    let suggested_name = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(content_disposition_filename)
        .or_else(|| runconvert_core::ops::filename_from_url(resp.url().as_str()));
    // Buffered: each write of a tokio file is a trip to the blocking pool, and the
    // network hands over a few KiB at a time.
    let mut file = tokio::fs::File::create(dest)
        .await
        .map(|f| tokio::io::BufWriter::with_capacity(crate::transfer::WRITE_BUFFER, f))
        .map_err(|e| TaskError::new(codes::PROCESSING_FAILED, format!("cannot write the download: {e}")))?;
    let mut size: u64 = 0;
    let mut floor = crate::transfer::RateFloor::new(limits.min_rate, limits.read_timeout);
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&current, e))? {
        size += chunk.len() as u64;
        if let Err(e) = floor.add(chunk.len() as u64, &host_of(&current)) {
            drop(file);
            let _ = tokio::fs::remove_file(dest).await;
            return Err(e);
        }
        if size > limits.max_bytes {
            drop(file);
            let _ = tokio::fs::remove_file(dest).await;
            return Err(too_large(limits.max_bytes));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| TaskError::new(codes::PROCESSING_FAILED, format!("cannot write the download: {e}")))?;
        progress.add(chunk.len() as u64);
    }
    file.flush()
        .await
        .map_err(|e| TaskError::new(codes::PROCESSING_FAILED, format!("cannot write the download: {e}")))?;
    Ok(Downloaded { size, suggested_name })
}

/// Same scheme, host and port: where the task's own headers may go.
fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme() && a.host() == b.host() && a.port_or_known_default() == b.port_or_known_default()
}

fn too_large(max: u64) -> TaskError {
    TaskError::new(
        codes::FILE_TOO_LARGE,
        format!("the file is larger than this server's limit of {max} bytes"),
    )
}

fn host_of(url: &url::Url) -> String {
    url.host_str().unwrap_or("the server").to_string()
}

/// Turns a client error into a message without the URL's query (which may hold a token).
fn describe(url: &url::Url, e: reqwest::Error) -> TaskError {
    // A refusal by the guard (in the resolver or the redirect policy) is in the source chain.
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<crate::guard::Refused>() {
            return TaskError::new(codes::FORBIDDEN_ADDRESS, r.0.clone());
        }
        source = s.source();
    }
    let host = host_of(url);
    let what = if e.is_timeout() {
        format!("{host} did not answer in time")
    } else if e.is_connect() {
        format!("cannot connect to {host}")
    } else if e.is_redirect() {
        format!("{host} redirected too often")
    } else {
        format!("downloading from {host} failed")
    };
    // The innermost cause says the most (DNS failure, connection refused, ...).
    let mut root: &dyn std::error::Error = &e;
    while let Some(s) = root.source() {
        root = s;
    }
    failed(format!("{what}: {}", root).replace(url.as_str(), &host))
}

/// The `filename` of a Content-Disposition header, if plain.
fn content_disposition_filename(v: &str) -> Option<String> {
    v.split(';')
        .find_map(|part| {
            let (k, val) = part.trim().split_once('=')?;
            (k.eq_ignore_ascii_case("filename")).then(|| val.trim().trim_matches('"').to_string())
        })
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_disposition() {
        assert_eq!(
            content_disposition_filename("attachment; filename=\"a b.jpg\"").as_deref(),
            Some("a b.jpg")
        );
        assert_eq!(content_disposition_filename("inline"), None);
    }
}
