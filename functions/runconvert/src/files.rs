//! The local-disk adapter of [`FileStore`]: `DATA/files/{job}/{task}/{filename}`, with
//! signed URLs served by the embedded server itself.

use async_trait::async_trait;
use runconvert_core::model::{FileRef, UploadForm};
use runconvert_core::names::safe_filename;
use runconvert_core::ports::{FileStore, PortError, PortResult};
use runconvert_core::Timestamp;
use runconvert_http::local_files::{LocalFiles, UrlSigner};
use std::path::{Path, PathBuf};

pub struct DiskFileStore {
    root: PathBuf,
    staging: PathBuf,
    urls: UrlSigner,
}

fn err(e: impl std::fmt::Display) -> PortError {
    PortError::new(format!("file store: {e}"))
}

/// Ids are ours (UUIDs), but a path is never built from anything unchecked.
fn segment(s: &str) -> PortResult<&str> {
    if s.is_empty() || s.contains(['/', '\\']) || s == "." || s == ".." {
        return Err(err(format!("bad path segment {s:?}")));
    }
    Ok(s)
}

impl DiskFileStore {
    pub fn new(data_dir: &Path, urls: UrlSigner) -> std::io::Result<Self> {
        let root = data_dir.join("files");
        let staging = data_dir.join("staging");
        use std::os::unix::fs::DirBuilderExt;
        let private = |d: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(d)?;
            // A directory made before (by an older version) is made private too.
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
        };
        private(&root)?;
        // Nothing is being uploaded before the server starts: what is staged is left over.
        let _ = std::fs::remove_dir_all(&staging);
        private(&staging)?;
        Ok(DiskFileStore { root, staging, urls })
    }

    fn job_dir(&self, job_id: &str) -> PortResult<PathBuf> {
        Ok(self.root.join(segment(job_id)?))
    }

    fn file_path(&self, job_id: &str, task_id: &str, filename: &str) -> PortResult<PathBuf> {
        Ok(self
            .job_dir(job_id)?
            .join(segment(task_id)?)
            .join(segment(&safe_filename(filename))?))
    }
}

impl DiskFileStore {
    /// The jobs that have a directory of files, with the time it last changed.
    pub fn job_dirs(&self) -> Vec<(String, std::time::SystemTime)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let modified = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((e.file_name().into_string().ok()?, modified))
            })
            .collect()
    }

    /// Removes staged uploads untouched for `idle` (an upload in progress writes to its
    /// file all the time; one that stalls that long was cut off by the connection's idle
    /// timeout). Returns how many went.
    pub fn sweep_staging(&self, idle: std::time::Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.staging) else {
            return 0;
        };
        let now = std::time::SystemTime::now();
        entries
            .flatten()
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .map(|t| now.duration_since(t).unwrap_or_default() >= idle)
                    .unwrap_or(false)
            })
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }
}

impl LocalFiles for DiskFileStore {
    fn path_of(&self, job_id: &str, task_id: &str, filename: &str) -> PathBuf {
        // A bad segment gives a path that does not exist: the route answers 404.
        self.file_path(job_id, task_id, filename)
            .unwrap_or_else(|_| self.root.join("-missing-"))
    }

    fn staging_dir(&self) -> PathBuf {
        self.staging.clone()
    }
}

#[async_trait]
impl FileStore for DiskFileStore {
    async fn put(&self, job_id: &str, task_id: &str, filename: &str, src: &Path) -> PortResult<u64> {
        let dest = self.file_path(job_id, task_id, filename)?;
        let src = src.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            std::fs::create_dir_all(dest.parent().expect("a file path has a parent"))?;
            // The work and staging directories share the data directory's file system.
            if std::fs::rename(&src, &dest).is_err() {
                std::fs::copy(&src, &dest)?;
            }
            Ok(std::fs::metadata(&dest)?.len())
        })
        .await
        .map_err(err)?
        .map_err(err)
    }

    async fn fetch(&self, job_id: &str, file: &FileRef, dest: &Path) -> PortResult<()> {
        let src = self.file_path(job_id, &file.task_id, &file.filename)?;
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // Engines never write to their inputs, so a hard link is as good as a copy.
            if std::fs::hard_link(&src, &dest).is_err() {
                std::fs::copy(&src, &dest)?;
            }
            Ok(())
        })
        .await
        .map_err(err)?
        .map_err(err)
    }

    async fn delete_job_files(&self, job_id: &str) -> PortResult<()> {
        let dir = self.job_dir(job_id)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    fn download_url(&self, job_id: &str, file: &FileRef, expires: Timestamp, inline: bool) -> String {
        self.urls.download_url(job_id, file, expires, inline)
    }

    fn upload_form(&self, _job_id: &str, task_id: &str, expires: Timestamp) -> UploadForm {
        self.urls.upload_form(task_id, expires)
    }
}
