//! The operations of the API and their typed options.
//!
//! A task is `{ "operation": NAME, "input": ..., "ignore_error": ..., "timeout": ..., ...fields }`.
//! The common fields are read by [`crate::validate`]; the rest is parsed here into the
//! operation's own struct, which rejects unknown fields with a message naming them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Free-form engine options (`options: {...}`), checked against the engine's declared
/// options in the [`crate::formats::Registry`].
pub type EngineOptions = Map<String, Value>;

/// Where a task's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Brings files in; takes no `input`.
    Import,
    /// Transforms the files of its inputs.
    Process,
    /// Makes files without an input (capture_website).
    Create,
    /// Hands files out.
    Export,
}

/// Marker for a value that must never be shown (credentials, passwords, keys).
pub const REDACTED: &str = "[redacted]";

/// Replaces a secret by [`REDACTED`]: a string whole, a map (request headers) value by
/// value, so the names stay visible and the field keeps its type; null stays null.
pub fn redact(v: &mut Value) {
    match v {
        Value::Null => {}
        Value::Object(map) => {
            for value in map.values_mut() {
                *value = Value::String(REDACTED.to_string());
            }
        }
        other => *other = Value::String(REDACTED.to_string()),
    }
}

macro_rules! operations {
    ($( $variant:ident($ty:ident) = $name:literal, $kind:ident, [$($secret:literal),*] ;)*) => {
        /// One operation with its options.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Operation { $( $variant($ty) ),* }

        impl Operation {
            /// Every operation name the API knows, available on this server or not.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            pub fn name(&self) -> &'static str {
                match self { $( Operation::$variant(_) => $name ),* }
            }

            pub fn kind_of(name: &str) -> Option<Kind> {
                match name { $( $name => Some(Kind::$kind), )* _ => None }
            }

            pub fn kind(&self) -> Kind {
                match self { $( Operation::$variant(_) => Kind::$kind ),* }
            }

            /// Parses the operation-specific fields. `Ok(None)`: no such operation.
            pub fn parse(name: &str, fields: Map<String, Value>) -> Result<Option<Operation>, serde_json::Error> {
                match name {
                    $( $name => serde_json::from_value::<$ty>(Value::Object(fields)).map(|o| Some(Operation::$variant(o))), )*
                    _ => Ok(None),
                }
            }

            /// The operation-specific fields, as given (secrets included: for storage only).
            pub fn fields(&self) -> Map<String, Value> {
                let v = match self { $( Operation::$variant(o) => serde_json::to_value(o), )* };
                match v { Ok(Value::Object(m)) => m, _ => Map::new() }
            }

            /// Each operation's own fields as an OpenAPI schema, from its type.
            #[cfg(feature = "openapi")]
            pub fn schemas() -> Vec<(&'static str, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)> {
                vec![$( ($name, <$ty as utoipa::PartialSchema>::schema()) ),*]
            }

            /// Names of the fields that hold secrets.
            pub fn secret_fields(&self) -> &'static [&'static str] {
                match self { $( Operation::$variant(_) => &[$($secret),*] ),* }
            }
        }
    };
}

operations! {
    ImportUrl(ImportUrl) = "import/url", Import, ["headers"];
    ImportUpload(ImportUpload) = "import/upload", Import, [];
    ImportBase64(ImportBase64) = "import/base64", Import, [];
    ImportS3(ImportS3) = "import/s3", Import, ["access_key_id", "secret_access_key", "session_token"];
    ImportGoogleCloudStorage(ImportGoogleCloudStorage) = "import/google-cloud-storage", Import, ["private_key", "client_email"];
    ImportAzureBlob(ImportAzureBlob) = "import/azure/blob", Import, ["storage_access_key", "sas_token"];
    ImportSftp(ImportSftp) = "import/sftp", Import, ["password", "private_key"];
    Convert(Convert) = "convert", Process, [];
    Compress(Compress) = "compress", Process, [];
    Merge(Merge) = "merge", Process, [];
    Archive(Archive) = "archive", Process, [];
    CaptureWebsite(CaptureWebsite) = "capture_website", Create, [];
    Ocr(Ocr) = "ocr", Process, [];
    Watermark(Watermark) = "watermark", Process, [];
    Thumbnail(Thumbnail) = "thumbnail", Process, [];
    ExportUrl(ExportUrl) = "export/url", Export, [];
    ExportS3(ExportS3) = "export/s3", Export, ["access_key_id", "secret_access_key", "session_token"];
    ExportGoogleCloudStorage(ExportGoogleCloudStorage) = "export/google-cloud-storage", Export, ["private_key", "client_email"];
    ExportAzureBlob(ExportAzureBlob) = "export/azure/blob", Export, ["storage_access_key", "sas_token"];
    ExportSftp(ExportSftp) = "export/sftp", Export, ["password", "private_key"];
}

impl Operation {
    /// The fields with every secret replaced by [`REDACTED`]: what the API may show.
    pub fn redacted_fields(&self) -> Map<String, Value> {
        let mut fields = self.fields();
        for name in self.secret_fields() {
            if let Some(v) = fields.get_mut(*name) {
                redact(v);
            }
        }
        fields
    }

    /// The name of the file this task will produce, when the request tells it
    /// (used to guess an input format before the file exists).
    pub fn declared_filename(&self) -> Option<String> {
        match self {
            Operation::ImportUrl(o) => o.filename.clone().or_else(|| filename_from_url(&o.url)),
            Operation::ImportUpload(o) => o.filename.clone(),
            Operation::ImportBase64(o) => Some(o.filename.clone()),
            Operation::ImportS3(o) => o.filename.clone().or_else(|| o.key.as_deref().map(last_segment)),
            Operation::ImportGoogleCloudStorage(o) => {
                o.filename.clone().or_else(|| o.file.as_deref().map(last_segment))
            }
            Operation::ImportAzureBlob(o) => o.filename.clone().or_else(|| o.blob.as_deref().map(last_segment)),
            Operation::ImportSftp(o) => o
                .filename
                .clone()
                .or_else(|| o.file_string.as_deref().map(last_segment)),
            _ => None,
        }
    }

    /// The output format this task declares, when it has one.
    pub fn output_format(&self) -> Option<&str> {
        match self {
            Operation::Convert(o) => Some(&o.output_format),
            Operation::Merge(o) => Some(&o.output_format),
            Operation::Archive(o) => Some(&o.output_format),
            Operation::CaptureWebsite(o) => Some(&o.output_format),
            Operation::Thumbnail(o) => o.output_format.as_deref(),
            Operation::Compress(o) => o.output_format.as_deref(),
            _ => None,
        }
    }
}

fn last_segment(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// The last path segment of a URL, percent-decoding left alone, when it looks like a file name.
pub fn filename_from_url(url: &str) -> Option<String> {
    let no_query = url.split(['?', '#']).next()?;
    let after_scheme = no_query.split_once("://").map(|(_, r)| r).unwrap_or(no_query);
    let (_, path) = after_scheme.split_once('/')?;
    let name = last_segment(path);
    (!name.is_empty()).then_some(name)
}

// ---- imports ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportUpload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportBase64 {
    pub file: String,
    pub filename: String,
}

/// What stands in `file` for a payload kept in the file store instead (a deployment whose
/// task records are small: DynamoDB's items are at most 400 KB), with its length.
const STORED_PAYLOAD: &str = "runconvert:stored-payload:";

impl ImportBase64 {
    /// The name the payload is kept under, among the task's files.
    pub const PAYLOAD_FILE: &'static str = ".base64-payload";

    /// The stand-in for a payload of `len` characters kept in the file store.
    pub fn stored_marker(len: usize) -> String {
        format!("{STORED_PAYLOAD}{len}")
    }

    /// The length of the payload, if it is kept in the file store.
    pub fn stored_elsewhere(&self) -> Option<usize> {
        self.file.strip_prefix(STORED_PAYLOAD)?.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportS3 {
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportGoogleCloudStorage {
    pub project_id: String,
    pub bucket: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportAzureBlob {
    pub storage_account: String,
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportSftp {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// The server's host key as an OpenSSH public key line (`ssh-ed25519 AAAA...`) or its
    /// SHA-256 fingerprint (`SHA256:...`); another key fails the task before any
    /// credential is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

// ---- processing -------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Convert {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format: Option<String>,
    pub output_format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: EngineOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Compress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: EngineOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Merge {
    pub output_format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: EngineOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Archive {
    pub output_format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: EngineOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CaptureWebsite {
    pub url: String,
    pub output_format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: EngineOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Ocr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: EngineOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Watermark {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: EngineOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Thumbnail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: EngineOptions,
}

// ---- exports ----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportUrl {
    /// Ask browsers to show the file rather than download it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inline: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportS3 {
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportGoogleCloudStorage {
    pub project_id: String,
    pub bucket: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportAzureBlob {
    pub storage_account: String,
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportSftp {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// The server's host key as an OpenSSH public key line (`ssh-ed25519 AAAA...`) or its
    /// SHA-256 fingerprint (`SHA256:...`); another key fails the task before any
    /// credential is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_and_rejects_unknown_fields() {
        let op = Operation::parse("convert", obj(json!({"output_format": "png"})))
            .unwrap()
            .unwrap();
        assert_eq!(op.name(), "convert");
        let err = Operation::parse("convert", obj(json!({"output_format": "png", "colour": 1}))).unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
        assert!(Operation::parse("import/ftp", Map::new()).unwrap().is_none());
    }

    #[test]
    fn redacts_secrets() {
        let op = Operation::parse(
            "import/s3",
            obj(
                json!({"bucket": "b", "region": "r", "access_key_id": "AK", "secret_access_key": "SK", "key": "k.jpg"}),
            ),
        )
        .unwrap()
        .unwrap();
        let shown = Value::Object(op.redacted_fields()).to_string();
        assert!(!shown.contains("SK") && !shown.contains("AK"), "{shown}");
        assert!(shown.contains("k.jpg"));
        assert_eq!(op.declared_filename().as_deref(), Some("k.jpg"));
    }

    #[test]
    fn redacts_request_headers_value_by_value() {
        let op = Operation::parse(
            "import/url",
            obj(json!({"url": "https://e.com/a.jpg", "headers": {"Authorization": "Bearer s3cr3t", "X-Api-Key": "k3y"}})),
        )
        .unwrap()
        .unwrap();
        let shown = Value::Object(op.redacted_fields());
        assert_eq!(
            shown["headers"],
            json!({"Authorization": "[redacted]", "X-Api-Key": "[redacted]"})
        );
        // What is shown still parses as the operation (a stored task after its secrets are erased).
        let fields = shown.as_object().unwrap().clone();
        assert!(Operation::parse("import/url", fields).unwrap().is_some());
    }

    #[test]
    fn filename_from_url_takes_last_segment() {
        assert_eq!(filename_from_url("https://e.com/a/b.jpg?x=1").as_deref(), Some("b.jpg"));
        assert_eq!(filename_from_url("https://e.com/"), None);
        assert_eq!(filename_from_url("https://e.com"), None);
    }
}
