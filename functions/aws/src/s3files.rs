//! The S3 adapter of [`FileStore`]: files at `<job>/<task>/<name>` in one private bucket;
//! downloads are presigned GETs, uploads a presigned POST form (SigV4, signed here: the
//! SDK has no presigned POST) with a size limit, an expiry and `success_action_status` 201.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use runconvert_connectors::sigv4;
use runconvert_core::model::{FileRef, UploadForm};
use runconvert_core::ports::{FileStore, PortError, PortResult};
use runconvert_core::Timestamp;
use serde_json::{Map, Value};
use std::path::Path;

/// Credentials that sign URLs and forms (a Lambda's own, from its environment).
#[derive(Clone)]
pub struct Signing {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub region: String,
}

impl Signing {
    pub fn from_env() -> Signing {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Signing {
            access_key_id: var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            session_token: var("AWS_SESSION_TOKEN"),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
        }
    }

    fn creds(&self) -> sigv4::Credentials<'_> {
        sigv4::Credentials {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            session_token: self.session_token.as_deref(),
        }
    }
}

#[derive(Clone)]
pub struct S3FileStore {
    client: Client,
    bucket: String,
    /// `https://s3.<region>.amazonaws.com`, or the endpoint of an emulator; path-style.
    endpoint: String,
    signing: Signing,
    max_upload_bytes: u64,
    /// Download links through the API (which redirects to a fresh presigned GET), when
    /// the API's URL is known; direct presigned GETs otherwise.
    links: Option<runconvert_http::local_files::UrlSigner>,
}

fn err(e: impl std::fmt::Display) -> PortError {
    PortError::new(format!("s3: {e}"))
}

pub fn object_key(job_id: &str, task_id: &str, filename: &str) -> String {
    format!("{job_id}/{task_id}/{filename}")
}

impl S3FileStore {
    pub fn new(
        client: Client,
        bucket: String,
        endpoint: Option<String>,
        signing: Signing,
        max_upload_bytes: u64,
    ) -> Self {
        let endpoint = endpoint
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", signing.region))
            .trim_end_matches('/')
            .to_string();
        S3FileStore {
            client,
            bucket,
            endpoint,
            signing,
            max_upload_bytes,
            links: None,
        }
    }

    /// Download links become links to the API, signed by `links`, valid as long as asked.
    pub fn with_links(mut self, links: runconvert_http::local_files::UrlSigner) -> Self {
        self.links = Some(links);
        self
    }

    /// A direct presigned GET of a stored file, valid `secs` seconds.
    fn presign(&self, job_id: &str, file: &FileRef, inline: bool, secs: u64) -> String {
        let key = object_key(job_id, &file.task_id, &file.filename);
        let mut url = url::Url::parse(&format!(
            "{}/{}/{}",
            self.endpoint,
            sigv4::uri_encode(&self.bucket, false),
            sigv4::uri_encode(&key, true)
        ))
        .expect("the endpoint is a URL");
        // S3 can set no Content-Security-Policy: active content (HTML, SVG...) is only
        // ever a download there.
        let active = runconvert_core::formats::is_active_content(&file.filename)
            || runconvert_core::formats::format_of_filename(&file.filename)
                .is_some_and(|f| runconvert_core::formats::is_active_mime(runconvert_core::formats::mime_type_of(f)));
        let inline = inline && !active;
        let disposition = if inline { "inline" } else { "attachment" };
        url.query_pairs_mut().append_pair(
            "response-content-disposition",
            &format!("{disposition}; filename=\"{}\"", file.filename.replace('"', "")),
        );
        sigv4::presign_url(
            "GET",
            &url,
            &self.signing.region,
            "s3",
            &self.signing.creds(),
            secs.max(1),
            Timestamp::now().millis() / 1000,
        )
    }
}

impl runconvert_http::local_files::Presigner for S3FileStore {
    fn presigned_get(&self, job_id: &str, file: &FileRef, inline: bool) -> String {
        self.presign(
            job_id,
            file,
            inline,
            runconvert_http::local_files::REDIRECT_LINK_SECONDS,
        )
    }
}

impl S3FileStore {
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The files uploaded for an import/upload task so far: (name, size).
    pub async fn uploaded(&self, job_id: &str, task_id: &str) -> PortResult<Vec<(String, u64)>> {
        let prefix = format!("{job_id}/{task_id}/");
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .send()
            .await
            .map_err(err)?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| {
                let name = o.key()?.strip_prefix(&prefix)?.to_string();
                Some((name, o.size().unwrap_or(0).max(0) as u64))
            })
            .filter(|(n, _)| !n.is_empty() && !n.contains('/'))
            .collect())
    }
}

#[async_trait]
impl FileStore for S3FileStore {
    async fn put(&self, job_id: &str, task_id: &str, filename: &str, src: &Path) -> PortResult<u64> {
        let size = tokio::fs::metadata(src).await.map_err(err)?.len();
        let body = ByteStream::from_path(src).await.map_err(err)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(object_key(job_id, task_id, filename))
            .body(body)
            .send()
            .await
            .map_err(err)?;
        Ok(size)
    }

    async fn fetch(&self, job_id: &str, file: &FileRef, dest: &Path) -> PortResult<()> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(object_key(job_id, &file.task_id, &file.filename))
            .send()
            .await
            .map_err(err)?;
        let mut reader = got.body.into_async_read();
        let mut out = tokio::fs::File::create(dest).await.map_err(err)?;
        tokio::io::copy(&mut reader, &mut out).await.map_err(err)?;
        Ok(())
    }

    async fn delete_job_files(&self, job_id: &str) -> PortResult<()> {
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{job_id}/"))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(err)?;
            let ids: Vec<ObjectIdentifier> = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            if !ids.is_empty() {
                let delete = Delete::builder().set_objects(Some(ids)).build().map_err(err)?;
                self.client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(err)?;
            }
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => return Ok(()),
            }
        }
    }

    fn download_url(&self, job_id: &str, file: &FileRef, expires: Timestamp, inline: bool) -> String {
        match &self.links {
            Some(links) => links.download_url(job_id, file, expires, inline),
            None => self.presign(job_id, file, inline, Timestamp::now().until(expires).as_secs()),
        }
    }

    fn upload_form(&self, job_id: &str, task_id: &str, expires: Timestamp) -> UploadForm {
        let fields = sigv4::presigned_post_fields(
            &self.bucket,
            &format!("{job_id}/{task_id}/"),
            self.max_upload_bytes,
            &self.signing.region,
            &self.signing.creds(),
            expires.millis() / 1000,
            Timestamp::now().millis() / 1000,
        );
        let parameters: Map<String, Value> = fields.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        UploadForm {
            url: format!("{}/{}", self.endpoint, self.bucket),
            parameters,
        }
    }
}
