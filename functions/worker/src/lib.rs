//! The worker runs one task: it fetches the files of the task's inputs from the file
//! store into a fresh work directory, calls the operation (an engine from
//! `runconvert-engines`, or a connector), and stores what it produced. The embedded
//! executor and the per-operation Lambdas both call [`Worker::run`].
//!
//! Two features choose what is compiled in (both are on but in two AWS binaries):
//! `transfer`, the imports from the network, the remote exports and Chromium's
//! operations (off in the engine functions' binary, which then links none of the
//! connectors' clients), and `engines`, the processing operations (off in the import and
//! export functions' binary, which then links no codec). A task of what is left out is
//! refused with unsupported_conversion.

use base64::Engine as _;
#[cfg(feature = "transfer")]
use runconvert_connectors::buckets;
use runconvert_connectors::buckets::StoreSettings;
use runconvert_connectors::capture::{self, Chromium};
use runconvert_connectors::http_import::DownloadLimits;
#[cfg(feature = "transfer")]
use runconvert_connectors::transfer::{ByteProgress, ToSend, TransferLimits};
#[cfg(feature = "transfer")]
use runconvert_connectors::{http_import, sftp, Guard};
use runconvert_core::error::codes;
use runconvert_core::formats::Registry;
use runconvert_core::formats::{canonical_format, Capability};
use runconvert_core::model::{FileRef, Job, Task, TaskResult, TaskStatus};
use runconvert_core::names::{safe_filename, unique_name};
#[cfg(feature = "transfer")]
use runconvert_core::ops::{CaptureWebsite, ImportUrl};
use runconvert_core::ops::{ImportBase64, Operation};
use runconvert_core::ports::FileStore;
use runconvert_core::{TaskError, Timestamp};
#[cfg(feature = "engines")]
use runconvert_engines::process;
use runconvert_engines::process::InputFile;
#[cfg(feature = "engines")]
use runconvert_engines::Cancel;
use runconvert_engines::{EngineLimits, Progress};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Where work directories are made (one per task run, removed afterwards).
    pub work_root: PathBuf,
    pub allow_private_networks: bool,
    pub download: DownloadLimits,
    pub engine: EngineLimits,
    /// How long exported files stay downloadable.
    pub retention: Duration,
    /// Endpoints of the object stores (emulators, sovereign clouds).
    pub stores: StoreSettings,
    /// SFTP tasks must give `host_key` (else the presented key is trusted and recorded).
    pub require_sftp_host_key: bool,
}

pub struct Worker {
    pub files: Arc<dyn FileStore>,
    pub registry: Arc<Registry>,
    pub settings: WorkerSettings,
}

fn internal(what: &str, e: impl std::fmt::Display) -> TaskError {
    TaskError::new(codes::PROCESSING_FAILED, format!("{what}: {e}"))
}

#[cfg(feature = "engines")]
struct CancelOnDrop(Cancel);

#[cfg(feature = "engines")]
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A work directory, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(root: &Path, task: &Task) -> Result<Self, TaskError> {
        let dir = root.join(format!("{}-{}", task.id, task.attempts));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("in")).map_err(|e| internal("cannot make a work directory", e))?;
        std::fs::create_dir_all(dir.join("out")).map_err(|e| internal("cannot make a work directory", e))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Worker {
    /// Runs `task` of `job` and returns its result; the caller records it.
    pub async fn run(&self, job: &Job, task: &Task, progress: Progress) -> Result<TaskResult, TaskError> {
        let work = WorkDir::create(&self.settings.work_root, task)?;
        let files = match &task.operation {
            #[cfg(feature = "transfer")]
            Operation::ImportUrl(o) => vec![self.import_url(task, o, &work.0, &progress).await?],
            Operation::ImportBase64(o) => vec![self.import_base64(task, o, &work.0).await?],
            Operation::ImportUpload(_) => {
                return Err(TaskError::new(
                    codes::PROCESSING_FAILED,
                    "an import/upload task finishes when its file is uploaded, not by running it",
                ))
            }
            #[cfg(feature = "engines")]
            Operation::Convert(_)
            | Operation::Thumbnail(_)
            | Operation::Merge(_)
            | Operation::Archive(_)
            | Operation::Compress(_)
            | Operation::Watermark(_)
            | Operation::Ocr(_) => {
                let inputs = self.fetch_inputs(job, task, &work.0).await?;
                match &task.operation {
                    Operation::Convert(c) if self.is_web_document(c, &inputs) => {
                        self.web_document(task, c, inputs, &work.0).await?
                    }
                    _ => self.process(task, inputs, &work.0, progress).await?,
                }
            }
            Operation::ExportUrl(o) => return Ok(self.export_url(job, task, o.inline)),
            #[cfg(feature = "transfer")]
            Operation::ImportS3(_)
            | Operation::ImportGoogleCloudStorage(_)
            | Operation::ImportAzureBlob(_)
            | Operation::ImportSftp(_) => return self.import_remote(task, &work.0, progress).await,
            #[cfg(feature = "transfer")]
            Operation::ExportS3(_)
            | Operation::ExportGoogleCloudStorage(_)
            | Operation::ExportAzureBlob(_)
            | Operation::ExportSftp(_) => return self.export_remote(job, task, &work.0, progress).await,
            #[cfg(feature = "transfer")]
            Operation::CaptureWebsite(o) => vec![self.capture(task, o, &work.0).await?],
            #[cfg(not(all(feature = "transfer", feature = "engines")))]
            other => {
                return Err(TaskError::new(
                    codes::UNSUPPORTED_CONVERSION,
                    format!(
                        "this function is not built to run {} tasks (the deployment routes them to another function)",
                        other.name()
                    ),
                ))
            }
        };
        Ok(TaskResult {
            files,
            ..TaskResult::default()
        })
    }

    /// The files of the task's finished inputs, in input order.
    fn input_files<'a>(&self, job: &'a Job, task: &Task) -> Vec<&'a FileRef> {
        task.depends_on_task_ids
            .iter()
            .filter_map(|id| job.task(id))
            .filter(|t| t.status == TaskStatus::Finished)
            .flat_map(|t| t.result.iter().flat_map(|r| r.files.iter()))
            .collect()
    }

    async fn fetch_inputs(&self, job: &Job, task: &Task, work: &Path) -> Result<Vec<InputFile>, TaskError> {
        let refs = self.input_files(job, task);
        if refs.is_empty() {
            return Err(TaskError::new(
                codes::NO_INPUT_FILES,
                "the input tasks produced no files",
            ));
        }
        let mut inputs = Vec::with_capacity(refs.len());
        for (i, f) in refs.into_iter().enumerate() {
            // A numbered directory per file: two inputs may share a name.
            let dir = work.join("in").join(i.to_string());
            std::fs::create_dir_all(&dir).map_err(|e| internal("cannot make a work directory", e))?;
            let path = dir.join(safe_filename(&f.filename));
            self.files
                .fetch(&job.id, f, &path)
                .await
                .map_err(|e| internal(&format!("cannot read input file {}", f.filename), e))?;
            let source = job.task(&f.task_id).map(|t| t.name.clone());
            inputs.push(InputFile {
                path,
                name: f.filename.clone(),
                task: source,
            });
        }
        Ok(inputs)
    }

    async fn store(&self, task: &Task, filename: &str, path: &Path) -> Result<FileRef, TaskError> {
        let size = self
            .files
            .put(&task.job_id, &task.id, filename, path)
            .await
            .map_err(|e| internal("cannot store the result", e))?;
        Ok(FileRef {
            filename: filename.to_string(),
            size,
            url: None,
            task_id: task.id.clone(),
        })
    }

    #[cfg(feature = "transfer")]
    async fn import_url(
        &self,
        task: &Task,
        o: &ImportUrl,
        work: &Path,
        progress: &Progress,
    ) -> Result<FileRef, TaskError> {
        let dest = work.join("out").join("download");
        let guard = Guard::new(self.settings.allow_private_networks);
        let headers = o.headers.clone().unwrap_or_default();
        let bytes = ByteProgress::new(progress.0.clone(), 0);
        let got = http_import::download(&guard, &o.url, &headers, &dest, &self.settings.download, bytes).await?;
        let name = safe_filename(
            o.filename
                .as_deref()
                .or(got.suggested_name.as_deref())
                .unwrap_or("file"),
        );
        self.store(task, &name, &dest).await
    }

    async fn import_base64(&self, task: &Task, o: &ImportBase64, work: &Path) -> Result<FileRef, TaskError> {
        // A payload too long for the task's record was kept in the file store.
        let kept;
        let file = match o.stored_elsewhere() {
            None => o.file.as_str(),
            Some(_) => {
                let at = work.join("in").join("payload");
                if let Some(dir) = at.parent() {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| internal("cannot write the file", e))?;
                }
                let stored = FileRef {
                    filename: ImportBase64::PAYLOAD_FILE.to_string(),
                    size: 0,
                    url: None,
                    task_id: task.id.clone(),
                };
                self.files
                    .fetch(&task.job_id, &stored, &at)
                    .await
                    .map_err(|e| internal("cannot read the task's stored payload", e))?;
                kept = tokio::fs::read_to_string(&at)
                    .await
                    .map_err(|e| internal("cannot read the task's stored payload", e))?;
                kept.as_str()
            }
        };
        let data = match file.split_once(";base64,") {
            Some((prefix, data)) if prefix.starts_with("data:") => data,
            _ => file,
        };
        let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.as_bytes()))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(compact.as_bytes()))
            .map_err(|e| TaskError::new(codes::INVALID_FILE, format!("the file is not valid base64: {e}")))?;
        let dest = work.join("out").join("decoded");
        tokio::fs::write(&dest, &bytes)
            .await
            .map_err(|e| internal("cannot write the file", e))?;
        self.store(task, &safe_filename(&o.filename), &dest).await
    }

    /// A processing operation: the engines run on a blocking thread.
    #[cfg(feature = "engines")]
    async fn process(
        &self,
        task: &Task,
        inputs: Vec<InputFile>,
        work: &Path,
        progress: Progress,
    ) -> Result<Vec<FileRef>, TaskError> {
        let op = task.operation.clone();
        let out_dir = work.join("out");
        let registry = self.registry.clone();
        let mut limits = self.settings.engine.clone();
        // If this future is dropped (the task was deleted or timed out), the engine's
        // external programs are killed.
        let cancel = Cancel::default();
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        limits.cancel = cancel;
        limits.progress = progress;
        // The task's own timeout bounds its tools too (wall clock and CPU time).
        if let Some(secs) = task.timeout {
            limits.tool_timeout = limits.tool_timeout.min(Duration::from_secs(secs.max(1)));
        }
        let outputs = tokio::task::spawn_blocking(move || process::run(&op, inputs, &out_dir, &registry, &limits))
            .await
            .map_err(|e| internal("the operation stopped", e))??;
        let mut taken = std::collections::HashSet::new();
        let mut files = Vec::with_capacity(outputs.len());
        for o in outputs {
            files.push(self.store(task, &unique_name(&o.name, &mut taken), &o.path).await?);
        }
        Ok(files)
    }

    /// html/md → pdf is Chromium's (a connector, since the page may load what it links).
    #[cfg(feature = "engines")]
    fn is_web_document(&self, c: &runconvert_core::ops::Convert, inputs: &[InputFile]) -> bool {
        canonical_format(&c.output_format) == Some("pdf")
            && inputs
                .iter()
                .all(|f| matches!(process::input_format(f, c.input_format.as_deref()), Ok("html" | "md")))
    }

    #[cfg(all(feature = "transfer", feature = "engines"))]
    async fn web_document(
        &self,
        task: &Task,
        c: &runconvert_core::ops::Convert,
        inputs: Vec<InputFile>,
        work: &Path,
    ) -> Result<Vec<FileRef>, TaskError> {
        let chromium = Chromium::get(true).ok_or_else(|| {
            TaskError::new(
                codes::UNSUPPORTED_CONVERSION,
                "html and md to pdf need Chromium, which is not installed on this server",
            )
        })?;
        let guard = Guard::new(self.settings.allow_private_networks);
        let single = inputs.len() == 1;
        let mut files = Vec::new();
        for (i, f) in inputs.iter().enumerate() {
            let format = process::input_format(f, c.input_format.as_deref())?;
            let dest = work.join("out").join(format!("doc-{i}.pdf"));
            capture::document_to_pdf(chromium, &guard, &f.path, format, &c.options, work, &dest).await?;
            let name = match (&c.filename, single) {
                (Some(n), true) => n.clone(),
                _ => runconvert_core::names::with_extension(&f.name, "pdf"),
            };
            files.push(self.store(task, &safe_filename(&name), &dest).await?);
        }
        Ok(files)
    }

    /// Built without the connectors, there is no Chromium to ask.
    #[cfg(all(not(feature = "transfer"), feature = "engines"))]
    async fn web_document(
        &self,
        _task: &Task,
        _c: &runconvert_core::ops::Convert,
        _inputs: Vec<InputFile>,
        _work: &Path,
    ) -> Result<Vec<FileRef>, TaskError> {
        Err(TaskError::new(
            codes::UNSUPPORTED_CONVERSION,
            "html and md to pdf are Chromium's, which this function does not run",
        ))
    }

    #[cfg(feature = "transfer")]
    async fn capture(&self, task: &Task, o: &CaptureWebsite, work: &Path) -> Result<FileRef, TaskError> {
        let chromium = Chromium::get(true).ok_or_else(|| {
            TaskError::new(
                codes::UNSUPPORTED_CONVERSION,
                "capture_website needs Chromium, which is not installed on this server",
            )
        })?;
        let output = canonical_format(&o.output_format).unwrap_or("png");
        let guard = Guard::new(self.settings.allow_private_networks);
        let dest = work.join("out").join(format!("capture.{output}"));
        capture::capture(chromium, &guard, &o.url, output, &o.options, work, &dest).await?;
        let host = url::Url::parse(o.url.trim())
            .ok()
            .and_then(|u| u.host_str().map(String::from))
            .unwrap_or_else(|| "capture".into());
        let name = o.filename.clone().unwrap_or_else(|| format!("{host}.{output}"));
        self.store(task, &safe_filename(&name), &dest).await
    }

    #[cfg(feature = "transfer")]
    fn transfer_limits(&self) -> TransferLimits {
        TransferLimits {
            max_bytes: self.settings.download.max_bytes,
            connect_timeout: self.settings.download.connect_timeout,
            read_timeout: self.settings.download.read_timeout,
            min_rate: self.settings.download.min_rate,
            require_sftp_host_key: self.settings.require_sftp_host_key,
            ..TransferLimits::default()
        }
    }

    #[cfg(feature = "transfer")]
    /// import/s3, import/google-cloud-storage, import/azure/blob, import/sftp.
    async fn import_remote(&self, task: &Task, work: &Path, progress: Progress) -> Result<TaskResult, TaskError> {
        let guard = Guard::new(self.settings.allow_private_networks);
        let limits = self.transfer_limits();
        let dir = work.join("out");
        let bytes = ByteProgress::new(progress.0.clone(), 0);
        let stores = &self.settings.stores;
        let mut host_key_fingerprint = None;
        let (fetched, rename) = match &task.operation {
            Operation::ImportS3(o) => (
                buckets::import_s3(o, guard, &dir, &limits, bytes).await?,
                o.filename.as_deref(),
            ),
            Operation::ImportGoogleCloudStorage(o) => (
                buckets::import_gcs(o, guard, stores, &dir, &limits, bytes).await?,
                o.filename.as_deref(),
            ),
            Operation::ImportAzureBlob(o) => (
                buckets::import_azure(o, guard, stores, &dir, &limits, bytes).await?,
                o.filename.as_deref(),
            ),
            Operation::ImportSftp(o) => {
                let (fetched, fingerprint) = sftp::import(o, &guard, &dir, &limits, bytes).await?;
                host_key_fingerprint = Some(fingerprint);
                (fetched, o.filename.as_deref())
            }
            _ => unreachable!("import_remote is called for remote imports only"),
        };
        let single = fetched.len() == 1;
        let mut taken = std::collections::HashSet::new();
        let mut files = Vec::with_capacity(fetched.len());
        for f in fetched {
            // `filename` renames a single imported file.
            let name = match (rename, single) {
                (Some(n), true) => safe_filename(n),
                _ => safe_filename(&f.name),
            };
            files.push(self.store(task, &unique_name(&name, &mut taken), &f.path).await?);
        }
        Ok(TaskResult {
            files,
            host_key_fingerprint,
            ..TaskResult::default()
        })
    }

    #[cfg(feature = "transfer")]
    /// export/s3, export/google-cloud-storage, export/azure/blob, export/sftp: the input
    /// files, sent on; the result lists them.
    async fn export_remote(
        &self,
        job: &Job,
        task: &Task,
        work: &Path,
        progress: Progress,
    ) -> Result<TaskResult, TaskError> {
        let inputs = self.fetch_inputs(job, task, work).await?;
        let mut files = Vec::with_capacity(inputs.len());
        for f in &inputs {
            let size = tokio::fs::metadata(&f.path)
                .await
                .map_err(|e| internal("cannot read an input file", e))?
                .len();
            files.push(ToSend {
                name: safe_filename(&f.name),
                path: f.path.clone(),
                size,
            });
        }
        let total = files.iter().map(|f| f.size).sum();
        let bytes = ByteProgress::new(progress.0.clone(), total);
        let guard = Guard::new(self.settings.allow_private_networks);
        let limits = self.transfer_limits();
        let stores = &self.settings.stores;
        let mut host_key_fingerprint = None;
        match &task.operation {
            Operation::ExportS3(o) => buckets::export_s3(o, guard, &files, &limits, bytes).await?,
            Operation::ExportGoogleCloudStorage(o) => {
                buckets::export_gcs(o, guard, stores, &files, &limits, bytes).await?
            }
            Operation::ExportAzureBlob(o) => buckets::export_azure(o, guard, stores, &files, &limits, bytes).await?,
            Operation::ExportSftp(o) => {
                let (targets, fingerprint) = sftp::export(o, &guard, &files, &limits, bytes).await?;
                host_key_fingerprint = Some(fingerprint);
                targets
            }
            _ => unreachable!("export_remote is called for remote exports only"),
        };
        let files = self
            .input_files(job, task)
            .into_iter()
            .map(|f| FileRef { url: None, ..f.clone() })
            .collect();
        Ok(TaskResult {
            files,
            host_key_fingerprint,
            ..TaskResult::default()
        })
    }

    fn export_url(&self, job: &Job, task: &Task, inline: bool) -> TaskResult {
        let expires = Timestamp::now().plus(self.settings.retention);
        let files = self
            .input_files(job, task)
            .into_iter()
            .map(|f| FileRef {
                filename: f.filename.clone(),
                size: f.size,
                url: Some(self.files.download_url(&job.id, f, expires, inline)),
                task_id: f.task_id.clone(),
            })
            .collect();
        TaskResult {
            files,
            ..TaskResult::default()
        }
    }
}

/// Registers what this worker can run: the engines' conversions and the connectors.
pub fn registry() -> Registry {
    registry_with(true)
}

/// The registry, with or without running each tool once for its version.
pub fn registry_with(probe_versions: bool) -> Registry {
    let host = runconvert_engines::process::probe_host(probe_versions);
    let chromium = Chromium::get(probe_versions).map(|c| c.version.clone());
    registry_of(host, chromium.as_deref())
}

/// The registry of a deployment whose tools run in other functions (the API and plan
/// functions on AWS, which have none): what the tools named in `tools` (`pdftoppm`,
/// `tesseract`, `ffmpeg`, `soffice`, `chromium`) can do, with nothing looked for here.
pub fn registry_declared(tools: &[&str]) -> Registry {
    let host = runconvert_engines::process::Host::declared(tools);
    registry_of(&host, tools.contains(&"chromium").then_some("declared"))
}

fn registry_of(host: &runconvert_engines::process::Host, chromium: Option<&str>) -> Registry {
    let mut r = Registry::new();
    for op in [
        "import/url",
        "import/upload",
        "import/base64",
        "import/s3",
        "import/google-cloud-storage",
        "import/azure/blob",
        "import/sftp",
        "export/url",
        "export/s3",
        "export/google-cloud-storage",
        "export/azure/blob",
        "export/sftp",
    ] {
        r.add_operation(op);
    }
    runconvert_engines::process::register_with_host(&mut r, host);
    if let Some(version) = chromium {
        for i in ["html", "md"] {
            r.add(Capability {
                operation: "convert",
                input_format: i,
                output_format: "pdf",
                engine: "chromium",
                engine_version: version.to_string(),
                options: capture::options("pdf"),
            });
        }
        for o in capture::OUTPUTS {
            r.add(Capability {
                operation: "capture_website",
                input_format: "url",
                output_format: o,
                engine: "chromium",
                engine_version: version.to_string(),
                options: capture::options(o),
            });
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API and plan functions on AWS carry no tool: what they accept and route comes
    /// from the deployment's declaration, not from their own PATH.
    #[test]
    fn a_declared_registry_lists_what_the_deployment_runs() {
        let all = registry_declared(&["pdftoppm", "tesseract", "ffmpeg", "soffice", "chromium"]);
        let none = registry_declared(&[]);
        for (op, i, o) in [
            ("convert", "docx", "pdf"),
            ("convert", "pdf", "png"),
            ("convert", "mp4", "webm"),
            ("ocr", "png", "txt"),
            ("capture_website", "url", "png"),
            ("convert", "html", "pdf"),
        ] {
            let found: Vec<_> = all.query(Some(op), Some(i), Some(o)).collect();
            assert!(!found.is_empty(), "{op} {i} → {o} is not declared");
            assert!(found.iter().all(|c| c.engine_version == "declared"), "{found:?}");
            assert!(
                none.query(Some(op), Some(i), Some(o)).next().is_none(),
                "{op} {i} → {o} without its tool"
            );
        }
        // What needs no tool is there either way.
        assert!(none.query(Some("convert"), Some("png"), Some("jpg")).next().is_some());
    }
}
