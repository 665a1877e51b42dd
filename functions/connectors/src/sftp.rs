//! import/sftp and export/sftp over SSH (russh), with the password or private key of the
//! task. The host goes through the outbound-address guard: it is resolved once, and the
//! TCP connection is made to an address the guard allowed. Every step has a deadline, so
//! a server that stalls fails the task instead of holding it.

use crate::guard::Guard;
use crate::transfer::{
    check_remote_path, numbered_key, scrub, too_large, ByteProgress, Fetched, ToSend, TransferLimits,
};
use runconvert_core::error::codes;
use runconvert_core::ops::{ExportSftp, ImportSftp};
use runconvert_core::TaskError;
use russh::client::{self, Handle};
use russh::keys::{decode_secret_key, HashAlg, PrivateKeyWithHashAlg};
use russh_sftp::client::SftpSession;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 256 * 1024;

/// Checks the server's host key against the task's `host_key` (an OpenSSH public key
/// line or a `SHA256:` fingerprint) before anything is sent; without one, the key is
/// accepted (unless the server requires `host_key`) and its fingerprint recorded in the
/// task's result.
struct HostKeyCheck {
    host: String,
    expected: Option<String>,
    /// The fingerprint the server presented, and whether it matched.
    seen: Arc<std::sync::Mutex<Option<(String, bool)>>>,
}

/// The keys a `host_key` value names, one a line: an OpenSSH public key line
/// (`ssh-ed25519 AAAA... comment`), the same with a host name in front (what
/// `ssh-keyscan` prints, several lines for several key types), or a `SHA256:` fingerprint.
fn expected_keys(v: &str) -> Vec<&str> {
    v.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let first = l.split_whitespace().next().unwrap_or("");
            let is_key = first.starts_with("SHA256:")
                || first.starts_with("ssh-")
                || first.starts_with("ecdsa-")
                || first.starts_with("sk-");
            if is_key {
                l
            } else {
                l[first.len()..].trim_start()
            }
        })
        .collect()
}

/// Whether `key` is one that `expected` names.
fn key_matches(expected: &str, key: &russh::keys::PublicKey) -> bool {
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    expected_keys(expected).into_iter().any(|e| {
        if let Some(fp) = e.strip_prefix("SHA256:") {
            // Fingerprints are unpadded base64; some tools print the padding.
            return fingerprint.trim_start_matches("SHA256:") == fp.trim_end_matches('=');
        }
        russh::keys::PublicKey::from_openssh(e).is_ok_and(|k| k.key_data() == key.key_data())
    })
}

/// Whether a `host_key` value is one we can compare with (said at the start, not as a
/// mismatch after connecting).
fn valid_host_key(v: &str) -> bool {
    let keys = expected_keys(v);
    !keys.is_empty()
        && keys.iter().all(|k| {
            k.strip_prefix("SHA256:").is_some_and(|fp| !fp.is_empty())
                || russh::keys::PublicKey::from_openssh(k).is_ok()
        })
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let k = key.public_key();
        let fingerprint = k.fingerprint(HashAlg::Sha256).to_string();
        let ok = self.expected.as_deref().is_none_or(|e| key_matches(e, &k));
        tracing::info!(host = %self.host, key = %fingerprint, matched = ok, "sftp host key");
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((fingerprint, ok));
        Ok(ok)
    }
}

struct Access<'a> {
    host: &'a str,
    port: u16,
    username: &'a str,
    password: Option<&'a str>,
    private_key: Option<&'a str>,
    host_key: Option<&'a str>,
}

struct Session {
    ssh: Handle<HostKeyCheck>,
    /// The SHA-256 fingerprint of the server's host key.
    fingerprint: String,
    sftp: SftpSession,
    host: String,
    secrets: Vec<String>,
    read_timeout: Duration,
}

fn failed(code: &str, msg: String, secrets: &[String]) -> TaskError {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    TaskError::new(code, scrub(&msg, &refs))
}

/// Runs `fut` with a deadline; a stalled server becomes a `timeout` error.
async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    host: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, TaskError> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        TaskError::new(
            codes::TIMEOUT,
            format!("{host} did not answer within {}s while {what}", limit.as_secs()),
        )
    })
}

async fn open(a: Access<'_>, guard: &Guard, limits: &TransferLimits) -> Result<Session, TaskError> {
    let secrets: Vec<String> = a
        .password
        .iter()
        .chain(a.private_key.iter())
        .map(|s| s.to_string())
        .collect();
    let host = a.host.trim().trim_matches(['[', ']']);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(TaskError::new(
            codes::INVALID_DATA,
            format!("host {:?} is not a host name", a.host),
        ));
    }
    match a.host_key {
        Some(k) if !valid_host_key(k) => {
            return Err(TaskError::new(
                codes::INVALID_DATA,
                "host_key must be OpenSSH public key lines (\"ssh-ed25519 AAAA...\", as ssh-keyscan prints them) or a SHA-256 fingerprint (\"SHA256:...\")",
            ))
        }
        None if limits.require_sftp_host_key => {
            return Err(TaskError::new(
                codes::HOST_KEY_REQUIRED,
                format!(
                    "this server connects to SFTP servers only with a known host key: give host_key (what `ssh-keyscan {host}` prints, or a SHA256: fingerprint)"
                ),
            ))
        }
        _ => {}
    }
    let addrs = guard
        .resolve(host, a.port)
        .await
        .map_err(|r| TaskError::new(codes::FORBIDDEN_ADDRESS, r.0))?;
    let addr = addrs[0];
    let label = format!("{host}:{}", a.port);
    let tcp = within(
        limits.connect_timeout,
        "connecting",
        &label,
        tokio::net::TcpStream::connect(addr),
    )
    .await?
    .map_err(|e| TaskError::new(codes::DOWNLOAD_FAILED, format!("cannot connect to {label}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    // Ask first for the kind of host key the task names, so a server with several keys
    // shows the one that can be compared (an RSA key given, say, where ed25519 comes
    // first by default).
    let mut preferred = russh::Preferred::default();
    if let Some(given) = a.host_key {
        let kinds: Vec<russh::keys::Algorithm> = expected_keys(given)
            .into_iter()
            .filter_map(|k| russh::keys::PublicKey::from_openssh(k).ok())
            .map(|k| k.algorithm())
            .collect();
        let same = |x: &russh::keys::Algorithm| {
            kinds
                .iter()
                .any(|k| std::mem::discriminant(k) == std::mem::discriminant(x))
        };
        let mut order: Vec<russh::keys::Algorithm> = preferred.key.iter().filter(|x| same(x)).cloned().collect();
        order.extend(preferred.key.iter().filter(|x| !same(x)).cloned());
        preferred.key = std::borrow::Cow::Owned(order);
    }
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(limits.read_timeout),
        preferred,
        ..Default::default()
    });
    let handshake = limits.connect_timeout + limits.read_timeout;
    let seen = Arc::new(std::sync::Mutex::new(None));
    let handler = HostKeyCheck {
        host: label.clone(),
        expected: a.host_key.map(String::from),
        seen: seen.clone(),
    };
    let connected = within(
        handshake,
        "starting SSH",
        &label,
        client::connect_stream(config, tcp, handler),
    )
    .await?;
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some((fingerprint, false)) = &seen {
        return Err(TaskError::new(
            codes::HOST_KEY_MISMATCH,
            format!("{label} presented host key {fingerprint}, not the host_key of the task; nothing was sent to it"),
        ));
    }
    let mut ssh = connected.map_err(|e| {
        TaskError::new(
            codes::DOWNLOAD_FAILED,
            format!("{label} is not an SSH server we can talk to: {e}"),
        )
    })?;
    let fingerprint = seen.map(|(f, _)| f).unwrap_or_default();
    let auth = match (a.password, a.private_key) {
        (_, Some(pem)) => {
            // Keys pasted into JSON often arrive with literal \n or indented lines.
            let pem: String = pem
                .replace("\\n", "\n")
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n");
            let key = decode_secret_key(&pem, a.password).map_err(|e| {
                failed(
                    codes::INVALID_DATA,
                    format!("private_key is not an SSH private key we can read: {e}"),
                    &secrets,
                )
            })?;
            let hash = if key.algorithm().is_rsa() {
                within(handshake, "authenticating", &label, ssh.best_supported_rsa_hash())
                    .await?
                    .ok()
                    .flatten()
                    .flatten()
            } else {
                None
            };
            within(
                handshake,
                "authenticating",
                &label,
                ssh.authenticate_publickey(a.username, PrivateKeyWithHashAlg::new(Arc::new(key), hash)),
            )
            .await?
        }
        (Some(p), None) => {
            within(
                handshake,
                "authenticating",
                &label,
                ssh.authenticate_password(a.username, p),
            )
            .await?
        }
        (None, None) => return Err(TaskError::new(codes::INVALID_DATA, "give password or private_key")),
    };
    let auth = auth.map_err(|e| failed(codes::DOWNLOAD_FAILED, format!("SSH to {label} failed: {e}"), &secrets))?;
    if !auth.success() {
        return Err(TaskError::new(
            codes::ACCESS_DENIED,
            format!("{label} refused the credentials of user {:?}", a.username),
        ));
    }
    let channel = within(handshake, "opening SFTP", &label, ssh.channel_open_session())
        .await?
        .map_err(|e| failed(codes::DOWNLOAD_FAILED, format!("{label}: {e}"), &secrets))?;
    within(
        handshake,
        "opening SFTP",
        &label,
        channel.request_subsystem(true, "sftp"),
    )
    .await?
    .map_err(|e| failed(codes::DOWNLOAD_FAILED, format!("{label}: {e}"), &secrets))?;
    let sftp = within(
        handshake,
        "opening SFTP",
        &label,
        SftpSession::new(channel.into_stream()),
    )
    .await?
    .map_err(|e| {
        failed(
            codes::DOWNLOAD_FAILED,
            format!("{label} has no SFTP service: {e}"),
            &secrets,
        )
    })?;
    sftp.set_timeout(limits.read_timeout.as_secs().max(1));
    Ok(Session {
        ssh,
        fingerprint,
        sftp,
        host: label,
        secrets,
        read_timeout: limits.read_timeout,
    })
}

impl Session {
    fn error(&self, code: &str, doing: &str, path: &str, e: russh_sftp::client::error::Error) -> TaskError {
        use russh_sftp::client::error::Error as E;
        use russh_sftp::protocol::StatusCode;
        let (code, why) = match &e {
            E::Status(s) if s.status_code == StatusCode::NoSuchFile => (codes::FILE_NOT_FOUND, "no such file".into()),
            E::Status(s) if s.status_code == StatusCode::PermissionDenied => {
                (codes::ACCESS_DENIED, "permission denied".into())
            }
            E::Timeout => (codes::TIMEOUT, "the server did not answer in time".into()),
            _ => (code, e.to_string()),
        };
        failed(
            code,
            format!("{doing} {path:?} on {} failed: {why}", self.host),
            &self.secrets,
        )
    }

    async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = self.ssh.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }

    async fn download(
        &self,
        remote: &str,
        local: &Path,
        limits: &TransferLimits,
        progress: &mut ByteProgress,
    ) -> Result<u64, TaskError> {
        let mut rf = self
            .sftp
            .open(remote)
            .await
            .map_err(|e| self.error(codes::DOWNLOAD_FAILED, "opening", remote, e))?;
        let mut lf = tokio::fs::File::create(local).await.map_err(io_error)?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        let mut floor = crate::transfer::RateFloor::new(limits.min_rate, self.read_timeout);
        loop {
            let n = within(self.read_timeout, "reading", &self.host, rf.read(&mut buf))
                .await?
                .map_err(|e| {
                    failed(
                        codes::DOWNLOAD_FAILED,
                        format!("reading {remote:?}: {e}"),
                        &self.secrets,
                    )
                })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > limits.max_bytes {
                return Err(too_large(limits.max_bytes));
            }
            floor.add(n as u64, &self.host)?;
            lf.write_all(&buf[..n]).await.map_err(io_error)?;
            progress.add(n as u64);
        }
        lf.flush().await.map_err(io_error)?;
        let _ = rf.shutdown().await;
        Ok(total)
    }

    async fn upload(&self, local: &Path, remote: &str, progress: &mut ByteProgress) -> Result<(), TaskError> {
        if let Some((parent, _)) = remote.rsplit_once('/') {
            if !parent.is_empty() {
                self.mkdir_p(parent).await?;
            }
        }
        let mut lf = tokio::fs::File::open(local).await.map_err(io_error)?;
        let mut wf = self
            .sftp
            .create(remote)
            .await
            .map_err(|e| self.error(codes::UPLOAD_FAILED, "creating", remote, e))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = lf.read(&mut buf).await.map_err(io_error)?;
            if n == 0 {
                break;
            }
            within(self.read_timeout, "writing", &self.host, wf.write_all(&buf[..n]))
                .await?
                .map_err(|e| failed(codes::UPLOAD_FAILED, format!("writing {remote:?}: {e}"), &self.secrets))?;
            progress.add(n as u64);
        }
        // Writes are pipelined: the server's verdict on them arrives at shutdown.
        within(self.read_timeout, "writing", &self.host, wf.shutdown())
            .await?
            .map_err(|e| failed(codes::UPLOAD_FAILED, format!("writing {remote:?}: {e}"), &self.secrets))?;
        Ok(())
    }

    async fn mkdir_p(&self, dir: &str) -> Result<(), TaskError> {
        let mut cur = if dir.starts_with('/') {
            String::from("/")
        } else {
            String::new()
        };
        for part in dir.split('/').filter(|c| !c.is_empty()) {
            if !cur.is_empty() && !cur.ends_with('/') {
                cur.push('/');
            }
            cur.push_str(part);
            let exists = self
                .sftp
                .try_exists(cur.as_str())
                .await
                .map_err(|e| self.error(codes::UPLOAD_FAILED, "checking", &cur, e))?;
            if !exists {
                if let Err(e) = self.sftp.create_dir(cur.as_str()).await {
                    if !self.sftp.try_exists(cur.as_str()).await.unwrap_or(false) {
                        return Err(self.error(codes::UPLOAD_FAILED, "making directory", &cur, e));
                    }
                }
            }
        }
        Ok(())
    }
}

fn io_error(e: std::io::Error) -> TaskError {
    TaskError::new(codes::PROCESSING_FAILED, format!("cannot use the work file: {e}"))
}

fn last_segment(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .to_string()
}

/// The connection fields, which import/sftp and export/sftp share.
macro_rules! access {
    ($o:expr) => {
        Access {
            host: &$o.host,
            port: $o.port.unwrap_or(22),
            username: &$o.username,
            password: $o.password.as_deref(),
            private_key: $o.private_key.as_deref(),
            host_key: $o.host_key.as_deref(),
        }
    };
}

/// import/sftp: `file_string` names one file; `path` a directory whose files are all imported.
pub async fn import(
    o: &ImportSftp,
    guard: &Guard,
    dir: &Path,
    limits: &TransferLimits,
    progress: ByteProgress,
) -> Result<(Vec<Fetched>, String), TaskError> {
    let (field, remote) = match (&o.file_string, &o.path) {
        (Some(f), _) => ("file_string", f.as_str()),
        (None, Some(p)) => ("path", p.as_str()),
        (None, None) => return Err(TaskError::new(codes::INVALID_DATA, "give file_string or path")),
    };
    check_remote_path(field, remote)?;
    let s = open(access!(o), guard, limits).await?;
    let result = import_on(&s, field, remote, dir, limits, progress).await;
    let fingerprint = s.fingerprint.clone();
    s.close().await;
    result.map(|files| (files, fingerprint))
}

async fn import_on(
    s: &Session,
    field: &str,
    remote: &str,
    dir: &Path,
    limits: &TransferLimits,
    mut progress: ByteProgress,
) -> Result<Vec<Fetched>, TaskError> {
    let files: Vec<(String, u64)> = if field == "file_string" {
        let meta = s
            .sftp
            .metadata(remote)
            .await
            .map_err(|e| s.error(codes::DOWNLOAD_FAILED, "reading", remote, e))?;
        if meta.is_dir() {
            return Err(TaskError::new(
                codes::INVALID_DATA,
                format!("{remote:?} is a directory; give it as path to import the files in it"),
            ));
        }
        vec![(remote.to_string(), meta.size.unwrap_or(0))]
    } else {
        let listing = s
            .sftp
            .read_dir(remote)
            .await
            .map_err(|e| s.error(codes::DOWNLOAD_FAILED, "listing", remote, e))?;
        let base = remote.trim_end_matches('/');
        let mut files: Vec<(String, u64)> = listing
            .filter(|e| e.file_type().is_file())
            .map(|e| (format!("{base}/{}", e.file_name()), e.metadata().len()))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(TaskError::new(
                codes::FILE_NOT_FOUND,
                format!("no file in {remote:?} on {}", s.host),
            ));
        }
        if files.len() > limits.max_files {
            return Err(TaskError::new(
                codes::LIMIT_EXCEEDED,
                format!("more than {} files in {remote:?}", limits.max_files),
            ));
        }
        files
    };
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    if total > limits.max_bytes {
        return Err(too_large(limits.max_bytes));
    }
    progress.set_total(total);
    let mut out = Vec::with_capacity(files.len());
    for (i, (path, _)) in files.iter().enumerate() {
        let local = dir.join(i.to_string());
        s.download(path, &local, limits, &mut progress).await?;
        out.push(Fetched {
            name: last_segment(path),
            path: local,
        });
    }
    Ok(out)
}

/// export/sftp: to `file_string` (`%d` numbering several files), or into directory `path`.
pub async fn export(
    o: &ExportSftp,
    guard: &Guard,
    files: &[ToSend],
    limits: &TransferLimits,
    progress: ByteProgress,
) -> Result<(Vec<String>, String), TaskError> {
    let mut targets = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let target = match (&o.file_string, &o.path) {
            (Some(file), _) => {
                check_remote_path("file_string", file)?;
                numbered_key("file_string", file, i, files.len())?
            }
            (None, Some(dir)) => {
                check_remote_path("path", dir)?;
                format!("{}/{}", dir.trim_end_matches('/'), f.name)
            }
            (None, None) => return Err(TaskError::new(codes::INVALID_DATA, "give file_string or path")),
        };
        targets.push(target);
    }
    let s = open(access!(o), guard, limits).await?;
    let mut progress = progress;
    let mut result = Ok(());
    for (f, target) in files.iter().zip(&targets) {
        result = s.upload(&f.path, target, &mut progress).await;
        if result.is_err() {
            break;
        }
    }
    let fingerprint = s.fingerprint.clone();
    s.close().await;
    result.map(|()| (targets, fingerprint))
}
