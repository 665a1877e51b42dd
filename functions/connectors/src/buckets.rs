//! S3, Google Cloud Storage and Azure Blob Storage, through the `object_store` crate.
//!
//! Every request goes through an HTTP client built by the outbound-address guard (the
//! store is handed it as its connector), so a user-chosen endpoint cannot reach the
//! server's own network. Files stream both ways: downloads are written to disk piece by
//! piece, and exports larger than one part go up as multipart uploads, a few parts in
//! flight at a time.

use crate::guard::{Guard, Refused};
use crate::transfer::{
    check_remote_path, numbered_key, scrub, too_large, ByteProgress, Fetched, ToSend, TransferLimits,
};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutPayload,
    RetryConfig, WriteMultipart,
};
use runconvert_core::error::codes;
use runconvert_core::ops::{
    ExportAzureBlob, ExportGoogleCloudStorage, ExportS3, ImportAzureBlob, ImportGoogleCloudStorage, ImportS3,
};
use runconvert_core::TaskError;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Server-wide settings for the object stores (emulators in tests, sovereign clouds).
#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    /// Azure Blob endpoint, `{account}` replaced by the storage account; default
    /// `https://{account}.blob.core.windows.net`.
    pub azure_blob_endpoint: Option<String>,
    /// A Google Cloud Storage emulator's base URL: requests go there, without OAuth.
    pub gcs_emulator: Option<String>,
}

/// Parts of an export upload: S3's smallest part is 5 MiB.
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once: bounds the memory an export uses to about 3 parts.
const PARTS_IN_FLIGHT: usize = 2;
const READ_CHUNK: usize = 1 << 20;

/// One bucket or container, opened with the task's credentials.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`, for messages.
    label: String,
    /// The service's name, for messages.
    service: &'static str,
    secrets: Vec<String>,
}

/// The guard's HTTP client, handed to `object_store` as its connector.
#[derive(Debug)]
struct GuardedConnector {
    guard: Guard,
    limits: TransferLimits,
}

impl object_store::client::HttpConnector for GuardedConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        let client = self
            .guard
            .http_client()
            .connect_timeout(self.limits.connect_timeout)
            .read_timeout(self.limits.read_timeout)
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "connector",
                source: Box::new(e),
            })?;
        Ok(object_store::client::HttpClient::new(client))
    }
}

fn retry() -> RetryConfig {
    // Few and quick: a wrong endpoint or a dead host should fail the task in seconds.
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(30),
    }
}

fn bad_data(msg: impl Into<String>) -> TaskError {
    TaskError::new(codes::INVALID_DATA, msg)
}

/// Checks an endpoint the user chose, before anything is sent to it.
async fn check_endpoint(guard: &Guard, endpoint: &str) -> Result<url::Url, TaskError> {
    let url = url::Url::parse(endpoint.trim()).map_err(|e| bad_data(format!("endpoint {endpoint:?}: {e}")))?;
    guard
        .check_url(&url)
        .map_err(|r| TaskError::new(codes::FORBIDDEN_ADDRESS, r.0))?;
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
    guard
        .resolve(&host, url.port_or_known_default().unwrap_or(443))
        .await
        .map_err(|r| TaskError::new(codes::FORBIDDEN_ADDRESS, r.0))?;
    Ok(url)
}

struct S3Access<'a> {
    bucket: &'a str,
    region: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: Option<&'a str>,
    endpoint: Option<&'a str>,
}

async fn open_s3(a: S3Access<'_>, guard: Guard, limits: &TransferLimits) -> Result<Remote, TaskError> {
    if a.region.is_empty() || !a.region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(bad_data(format!("region {:?} is not an AWS region name", a.region)));
    }
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(a.bucket)
        .with_region(a.region)
        .with_access_key_id(a.access_key_id)
        .with_secret_access_key(a.secret_access_key)
        .with_retry(retry())
        .with_http_connector(GuardedConnector {
            guard,
            limits: limits.clone(),
        });
    if let Some(t) = a.session_token {
        b = b.with_token(t);
    }
    match a.endpoint {
        Some(e) => {
            let url = check_endpoint(&guard, e).await?;
            // S3-compatible stores (MinIO, R2, moto...) address buckets by path.
            b = b
                .with_endpoint(url.as_str().trim_end_matches('/'))
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false);
        }
        None => {
            // The default endpoint is AWS's; checking it still pins its addresses.
            let host = format!("s3.{}.amazonaws.com", a.region);
            guard
                .resolve(&host, 443)
                .await
                .map_err(|r| TaskError::new(codes::FORBIDDEN_ADDRESS, r.0))?;
        }
    }
    let store = b.build().map_err(|e| bad_data(format!("S3 settings: {e}")))?;
    let mut secrets = vec![a.access_key_id.to_string(), a.secret_access_key.to_string()];
    secrets.extend(a.session_token.map(String::from));
    Ok(Remote {
        store: Arc::new(store),
        label: format!("s3://{}", a.bucket),
        service: "S3",
        secrets,
    })
}

struct GcsAccess<'a> {
    project_id: &'a str,
    bucket: &'a str,
    client_email: &'a str,
    private_key: &'a str,
}

fn open_gcs(
    a: GcsAccess<'_>,
    guard: Guard,
    settings: &StoreSettings,
    limits: &TransferLimits,
) -> Result<Remote, TaskError> {
    let mut key = serde_json::json!({
        "type": "service_account",
        "project_id": a.project_id,
        "private_key_id": "",
        "private_key": a.private_key.replace("\\n", "\n"),
        "client_email": a.client_email,
    });
    if let Some(base) = &settings.gcs_emulator {
        key["gcs_base_url"] = base.trim_end_matches('/').into();
        key["disable_oauth"] = true.into();
    }
    let store = object_store::gcp::GoogleCloudStorageBuilder::new()
        .with_bucket_name(a.bucket)
        .with_service_account_key(key.to_string())
        .with_retry(retry())
        .with_http_connector(GuardedConnector {
            guard,
            limits: limits.clone(),
        })
        .build()
        .map_err(|e| {
            let msg = scrub(&e.to_string(), &[a.private_key, a.client_email]);
            bad_data(format!("Google Cloud Storage settings: {msg}"))
        })?;
    Ok(Remote {
        store: Arc::new(store),
        label: format!("gs://{}", a.bucket),
        service: "Google Cloud Storage",
        secrets: vec![a.private_key.to_string(), a.client_email.to_string()],
    })
}

struct AzureAccess<'a> {
    storage_account: &'a str,
    container: &'a str,
    storage_access_key: Option<&'a str>,
    sas_token: Option<&'a str>,
}

async fn open_azure(
    a: AzureAccess<'_>,
    guard: Guard,
    settings: &StoreSettings,
    limits: &TransferLimits,
) -> Result<Remote, TaskError> {
    if a.storage_account.is_empty() || !a.storage_account.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad_data(format!(
            "storage_account {:?} is not a storage account name (letters and digits only)",
            a.storage_account
        )));
    }
    let endpoint = settings
        .azure_blob_endpoint
        .as_deref()
        .unwrap_or("https://{account}.blob.core.windows.net")
        .replace("{account}", a.storage_account);
    check_endpoint(&guard, &endpoint).await?;
    let mut b = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(a.storage_account)
        .with_container_name(a.container)
        .with_endpoint(endpoint)
        .with_retry(retry())
        .with_http_connector(GuardedConnector {
            guard,
            limits: limits.clone(),
        });
    let mut secrets = Vec::new();
    match (a.storage_access_key, a.sas_token) {
        (Some(k), _) => {
            b = b.with_access_key(k);
            secrets.push(k.to_string());
        }
        (None, Some(sas)) => {
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            secrets.extend(pairs.iter().map(|(_, v)| v.clone()));
            secrets.push(sas.to_string());
            b = b.with_sas_authorization(pairs);
        }
        (None, None) => return Err(bad_data("give storage_access_key or sas_token")),
    }
    let store = b.build().map_err(|e| {
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        bad_data(format!("Azure Blob settings: {}", scrub(&e.to_string(), &refs)))
    })?;
    Ok(Remote {
        store: Arc::new(store),
        label: format!("azure://{}/{}", a.storage_account, a.container),
        service: "Azure Blob Storage",
        secrets,
    })
}

/// An object key from the user: relative to the bucket, checked.
fn object_path(field: &str, key: &str) -> Result<ObjectPath, TaskError> {
    check_remote_path(field, key)?;
    let trimmed = key.trim_start_matches('/');
    ObjectPath::parse(trimmed).map_err(|e| bad_data(format!("{field} {key:?} is not a valid object name: {e}")))
}

/// Where one source of an import or export points: one key or a prefix.
pub enum Selector<'a> {
    Key(&'a str),
    Prefix(&'a str),
}

fn selector<'a>(
    key_field: &'static str,
    key: Option<&'a str>,
    prefix_field: &'static str,
    prefix: Option<&'a str>,
) -> Result<(&'static str, Selector<'a>), TaskError> {
    match (key, prefix) {
        (Some(k), _) => Ok((key_field, Selector::Key(k))),
        (None, Some(p)) => Ok((prefix_field, Selector::Prefix(p))),
        (None, None) => Err(bad_data(format!("give {key_field} or {prefix_field}"))),
    }
}

impl Remote {
    fn secret_refs(&self) -> Vec<&str> {
        self.secrets.iter().map(String::as_str).collect()
    }

    /// A task error for a failed request, in words, without secrets.
    fn error(&self, doing: &str, what: &str, e: &object_store::Error, fallback: &str) -> TaskError {
        let (code, msg) = classify(e);
        let code = if code == codes::PROCESSING_FAILED {
            fallback
        } else {
            code
        };
        let msg = match code {
            codes::FILE_NOT_FOUND => format!("{what} does not exist in {}", self.label),
            codes::BUCKET_NOT_FOUND => format!("{} does not exist", self.label),
            codes::ACCESS_DENIED => format!(
                "{} refused the credentials for {} while {doing}{}",
                self.service,
                self.label,
                msg.map(|m| format!(" ({m})")).unwrap_or_default()
            ),
            _ => format!(
                "{doing} {what} {} {} failed: {}",
                if doing.starts_with("up") { "to" } else { "from" },
                self.label,
                msg.unwrap_or_else(|| "no answer".into())
            ),
        };
        TaskError::new(code, scrub(&msg, &self.secret_refs()))
    }

    /// Imports one object, or every object under a prefix, into `dir`.
    pub async fn import(
        &self,
        sel: (&'static str, Selector<'_>),
        dir: &Path,
        limits: &TransferLimits,
        progress: ByteProgress,
    ) -> Result<Vec<Fetched>, TaskError> {
        let (field, sel) = sel;
        let objects: Vec<(ObjectPath, Option<u64>)> = match sel {
            Selector::Key(k) => vec![(object_path(field, k)?, None)],
            Selector::Prefix(p) => {
                let prefix = object_path(field, p)?;
                let mut listing = self.store.list(Some(&prefix));
                let mut found = Vec::new();
                while let Some(meta) = listing.next().await {
                    let meta =
                        meta.map_err(|e| self.error("listing", &format!("prefix {p:?}"), &e, codes::DOWNLOAD_FAILED))?;
                    if found.len() == limits.max_files {
                        return Err(TaskError::new(
                            codes::LIMIT_EXCEEDED,
                            format!(
                                "more than {} files under {p:?}; import fewer at a time",
                                limits.max_files
                            ),
                        ));
                    }
                    found.push((meta.location, Some(meta.size)));
                }
                if found.is_empty() {
                    return Err(TaskError::new(
                        codes::FILE_NOT_FOUND,
                        format!("no file under {p:?} in {}", self.label),
                    ));
                }
                found
            }
        };
        let total: u64 = objects.iter().filter_map(|(_, s)| *s).sum();
        if total > limits.max_bytes {
            return Err(too_large(limits.max_bytes));
        }
        let mut progress = progress;
        let mut fetched = Vec::with_capacity(objects.len());
        for (i, (location, _)) in objects.into_iter().enumerate() {
            let name = location.filename().unwrap_or("file").to_string();
            let what = format!("{:?}", location.as_ref());
            let got = self
                .store
                .get(&location)
                .await
                .map_err(|e| self.error("downloading", &what, &e, codes::DOWNLOAD_FAILED))?;
            let size = got.meta.size;
            if size > limits.max_bytes {
                return Err(too_large(limits.max_bytes));
            }
            if total == 0 {
                // One key: its size is known now.
                progress.set_total(size);
            }
            let path = dir.join(format!("{i}"));
            let mut file = tokio::fs::File::create(&path)
                .await
                .map(|f| tokio::io::BufWriter::with_capacity(crate::transfer::WRITE_BUFFER, f))
                .map_err(write_error)?;
            let mut stream = got.into_stream();
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.error("downloading", &what, &e, codes::DOWNLOAD_FAILED))?;
                written += chunk.len() as u64;
                if written > limits.max_bytes {
                    return Err(too_large(limits.max_bytes));
                }
                file.write_all(&chunk).await.map_err(write_error)?;
                progress.add(chunk.len() as u64);
            }
            file.flush().await.map_err(write_error)?;
            fetched.push(Fetched { name, path });
        }
        Ok(fetched)
    }

    /// Exports `files` under one key (several with `%d` in it) or a prefix.
    pub async fn export(
        &self,
        sel: (&'static str, Selector<'_>),
        files: &[ToSend],
        content_type: Option<&str>,
        progress: ByteProgress,
    ) -> Result<Vec<String>, TaskError> {
        let (field, sel) = sel;
        let mut progress = progress;
        let mut keys = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let key = match &sel {
                Selector::Key(k) => numbered_key(field, k, i, files.len())?,
                Selector::Prefix(p) => format!("{}{}", p, f.name),
            };
            let location = object_path(field, &key)?;
            let mut attributes = Attributes::new();
            let ctype = content_type
                .map(String::from)
                .unwrap_or_else(|| content_type_for(&f.name).to_string());
            attributes.insert(Attribute::ContentType, ctype.into());
            self.upload(&location, f, attributes, &mut progress).await?;
            keys.push(location.to_string());
        }
        Ok(keys)
    }

    async fn upload(
        &self,
        location: &ObjectPath,
        f: &ToSend,
        attributes: Attributes,
        progress: &mut ByteProgress,
    ) -> Result<(), TaskError> {
        let what = format!("{:?}", location.as_ref());
        let fail = |e: &object_store::Error| self.error("uploading", &what, e, codes::UPLOAD_FAILED);
        let mut file = tokio::fs::File::open(&f.path).await.map_err(write_error)?;
        if f.size <= PART_SIZE as u64 {
            // One request: small files do not need a multipart upload.
            let mut data = Vec::with_capacity(f.size as usize);
            file.read_to_end(&mut data).await.map_err(write_error)?;
            let opts = object_store::PutOptions {
                attributes,
                ..Default::default()
            };
            self.store
                .put_opts(location, PutPayload::from(data), opts)
                .await
                .map_err(|e| fail(&e))?;
            progress.add(f.size);
            return Ok(());
        }
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let upload = self
            .store
            .put_multipart_opts(location, opts)
            .await
            .map_err(|e| fail(&e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = file.read(&mut buf).await.map_err(write_error)?;
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let err = fail(&e);
                let _ = writer.abort().await;
                return Err(err);
            }
            writer.write(&buf[..n]);
            progress.add(n as u64);
        }
        writer.finish().await.map_err(|e| fail(&e))?;
        Ok(())
    }
}

fn write_error(e: std::io::Error) -> TaskError {
    TaskError::new(codes::PROCESSING_FAILED, format!("cannot write the work file: {e}"))
}

/// A content type from a file name's extension.
pub fn content_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "tif" | "tiff" => "image/tiff",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        "zip" => "application/zip",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

/// Sorts an `object_store` error into a task error code and, when the service said why,
/// its words (an error code such as `InvalidAccessKeyId`).
fn classify(e: &object_store::Error) -> (&'static str, Option<String>) {
    let mut status: Option<u16> = None;
    let mut service_code: Option<String> = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return (codes::FORBIDDEN_ADDRESS, Some(r.0.clone()));
        }
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() {
                return (codes::TIMEOUT, Some("the service did not answer in time".into()));
            }
            if r.is_connect() {
                let mut root: &dyn std::error::Error = r;
                while let Some(next) = root.source() {
                    if let Some(refused) = next.downcast_ref::<Refused>() {
                        return (codes::FORBIDDEN_ADDRESS, Some(refused.0.clone()));
                    }
                    root = next;
                }
                return (codes::PROCESSING_FAILED, Some(format!("cannot connect: {root}")));
            }
        }
        let text = s.to_string();
        if status.is_none() {
            status = status_in(&text);
        }
        if service_code.is_none() {
            service_code = service_code_in(&text);
        }
        source = s.source();
    }
    let named = service_code.as_deref().unwrap_or("");
    if matches!(named, "NoSuchBucket" | "ContainerNotFound" | "ResourceNotFound") {
        return (codes::BUCKET_NOT_FOUND, service_code);
    }
    if matches!(e, object_store::Error::NotFound { .. }) || matches!(named, "NoSuchKey" | "BlobNotFound") {
        return (codes::FILE_NOT_FOUND, service_code);
    }
    if matches!(
        e,
        object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. }
    ) || matches!(status, Some(401 | 403))
    {
        return (codes::ACCESS_DENIED, service_code);
    }
    let said = match (status, service_code) {
        (Some(s), Some(c)) => Some(format!("HTTP {s} {c}")),
        (Some(s), None) => Some(format!("HTTP {s}")),
        (None, c) => c,
    };
    (codes::PROCESSING_FAILED, said)
}

/// `... status code: 404 Not Found ...` → 404.
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text[at..].get(..3)?.parse().ok()
}

/// The service's error code: `<Code>X</Code>` (S3, Azure) or `"reason": "x"` (GCS JSON).
fn service_code_in(text: &str) -> Option<String> {
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = text[start..].find(close)? + start;
        let v = text[start..end].trim();
        (!v.is_empty() && v.len() < 80 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| v.to_string())
    };
    between("<Code>", "</Code>").or_else(|| between("\"reason\": \"", "\""))
}

/// The access fields of a store's task, which its import and export options share
/// (`access!(S3Access, o)` for an `ImportS3` or an `ExportS3`).
macro_rules! access {
    (S3Access, $o:expr) => {
        S3Access {
            bucket: &$o.bucket,
            region: &$o.region,
            access_key_id: &$o.access_key_id,
            secret_access_key: &$o.secret_access_key,
            session_token: $o.session_token.as_deref(),
            endpoint: $o.endpoint.as_deref(),
        }
    };
    (GcsAccess, $o:expr) => {
        GcsAccess {
            project_id: &$o.project_id,
            bucket: &$o.bucket,
            client_email: &$o.client_email,
            private_key: &$o.private_key,
        }
    };
    (AzureAccess, $o:expr) => {
        AzureAccess {
            storage_account: &$o.storage_account,
            container: &$o.container,
            storage_access_key: $o.storage_access_key.as_deref(),
            sas_token: $o.sas_token.as_deref(),
        }
    };
}

// ---- the six tasks ----------------------------------------------------------

pub async fn import_s3(
    o: &ImportS3,
    guard: Guard,
    dir: &Path,
    limits: &TransferLimits,
    progress: ByteProgress,
) -> Result<Vec<Fetched>, TaskError> {
    let remote = open_s3(access!(S3Access, o), guard, limits).await?;
    let sel = selector("key", o.key.as_deref(), "key_prefix", o.key_prefix.as_deref())?;
    remote.import(sel, dir, limits, progress).await
}

pub async fn export_s3(
    o: &ExportS3,
    guard: Guard,
    files: &[ToSend],
    limits: &TransferLimits,
    progress: ByteProgress,
) -> Result<Vec<String>, TaskError> {
    let remote = open_s3(access!(S3Access, o), guard, limits).await?;
    let sel = selector("key", o.key.as_deref(), "key_prefix", o.key_prefix.as_deref())?;
    let keys = remote.export(sel, files, o.content_type.as_deref(), progress).await?;
    if let Some(acl) = &o.acl {
        // object_store sets no ACL: one signed PUT ?acl per object.
        for key in &keys {
            put_object_acl(o, guard, limits, key, acl).await.map_err(|m| {
                TaskError::new(
                    codes::UPLOAD_FAILED,
                    scrub(&m, &[&o.access_key_id, &o.secret_access_key]),
                )
            })?;
        }
    }
    Ok(keys)
}

/// PUT /bucket/key?acl with `x-amz-acl`, signed with SigV4.
async fn put_object_acl(
    o: &ExportS3,
    guard: Guard,
    limits: &TransferLimits,
    key: &str,
    acl: &str,
) -> Result<(), String> {
    use crate::sigv4;
    let base = o
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", o.region));
    let base = url::Url::parse(base.trim()).map_err(|e| format!("endpoint: {e}"))?;
    let host = match base.port() {
        Some(p) => format!("{}:{p}", base.host_str().unwrap_or_default()),
        None => base.host_str().unwrap_or_default().to_string(),
    };
    let prefix = base.path().trim_end_matches('/');
    let path = format!(
        "{prefix}/{}/{}",
        sigv4::uri_encode(&o.bucket, false),
        sigv4::uri_encode(key, true)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let creds = sigv4::Credentials {
        access_key_id: &o.access_key_id,
        secret_access_key: &o.secret_access_key,
        session_token: o.session_token.as_deref(),
    };
    let signed = sigv4::sign_request(
        "PUT",
        &path,
        "acl=",
        &[("host", host), ("x-amz-acl", acl.to_string())],
        sigv4::EMPTY_SHA256,
        &o.region,
        "s3",
        &creds,
        now,
    );
    let client = guard
        .http_client()
        .connect_timeout(limits.connect_timeout)
        .read_timeout(limits.read_timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let mut url = base.clone();
    url.set_path(&path);
    url.set_query(Some("acl"));
    let mut req = client.put(url).header("x-amz-acl", acl);
    for (k, v) in signed {
        req = req.header(k, v);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("setting the ACL of {key:?} failed: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let code = service_code_in(&body).unwrap_or_default();
    Err(format!("setting the ACL of {key:?} failed: HTTP {status} {code}"))
}

pub async fn import_gcs(
    o: &ImportGoogleCloudStorage,
    guard: Guard,
    settings: &StoreSettings,
    dir: &Path,
    limits: &TransferLimits,
    progress: ByteProgress,
) -> Result<Vec<Fetched>, TaskError> {
    let remote = open_gcs(access!(GcsAccess, o), guard, settings, limits)?;
    let sel = selector("file", o.file.as_deref(), "file_prefix", o.file_prefix.as_deref())?;
    remote.import(sel, dir, limits, progress).await
}

pub async fn export_gcs(
    o: &ExportGoogleCloudStorage,
    guard: Guard,
    settings: &StoreSettings,
    files: &[ToSend],
    limits: &TransferLimits,
    progress: ByteProgress,
) -> Result<Vec<String>, TaskError> {
    let remote = open_gcs(access!(GcsAccess, o), guard, settings, limits)?;
    let sel = selector("file", o.file.as_deref(), "file_prefix", o.file_prefix.as_deref())?;
    remote.export(sel, files, None, progress).await
}

pub async fn import_azure(
    o: &ImportAzureBlob,
    guard: Guard,
    settings: &StoreSettings,
    dir: &Path,
    limits: &TransferLimits,
    progress: ByteProgress,
) -> Result<Vec<Fetched>, TaskError> {
    let remote = open_azure(access!(AzureAccess, o), guard, settings, limits).await?;
    let sel = selector("blob", o.blob.as_deref(), "blob_prefix", o.blob_prefix.as_deref())?;
    remote.import(sel, dir, limits, progress).await
}

pub async fn export_azure(
    o: &ExportAzureBlob,
    guard: Guard,
    settings: &StoreSettings,
    files: &[ToSend],
    limits: &TransferLimits,
    progress: ByteProgress,
) -> Result<Vec<String>, TaskError> {
    let remote = open_azure(access!(AzureAccess, o), guard, settings, limits).await?;
    let sel = selector("blob", o.blob.as_deref(), "blob_prefix", o.blob_prefix.as_deref())?;
    remote.export(sel, files, None, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_service_words() {
        assert_eq!(
            status_in("Server returned non-2xx status code: 403 Forbidden: <x>"),
            Some(403)
        );
        assert_eq!(
            service_code_in("<Error><Code>InvalidAccessKeyId</Code><Message>m</Message>").as_deref(),
            Some("InvalidAccessKeyId")
        );
        assert_eq!(service_code_in("<Code>a b</Code>"), None);
    }
}
