//! The tests' own view of the storage servers that `tests/services.sh` starts (moto for
//! S3, Azurite, the GCS emulator, OpenSSH's sshd): where they are, the credentials, and
//! direct access for putting inputs in place and reading outputs back.

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{json, Value};
use std::sync::Arc;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the storage servers with `bash tests/services.sh start` and source target/test-services/env.sh (tests/run-all.sh does both)")
    })
}

pub const S3_ACCESS_KEY: &str = "AKIARUNCONVERTTEST01";
pub const S3_SECRET: &str = "s3-secret-never-shown-7Qm2";
pub const GCS_EMAIL: &str = "tests@runconvert-tests.iam.gserviceaccount.com";
/// Not a real key: the emulator does not check it (OAuth is off for emulators).
pub const GCS_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDtestkeyNeverShown\n-----END PRIVATE KEY-----\n";

pub struct Stores {
    pub s3_endpoint: String,
    pub azure_endpoint: String,
    pub azure_account: String,
    pub azure_key: String,
    pub gcs_emulator: String,
    pub sftp_port: u16,
    pub sftp_user: String,
    pub sftp_password: String,
    pub sftp_key: String,
    pub sftp_home: String,
}

impl Stores {
    pub fn from_env() -> Stores {
        Stores {
            s3_endpoint: env("RUNCONVERT_TEST_S3_ENDPOINT"),
            azure_endpoint: env("RUNCONVERT_TEST_AZURE_ENDPOINT"),
            azure_account: env("RUNCONVERT_TEST_AZURE_ACCOUNT"),
            azure_key: env("RUNCONVERT_TEST_AZURE_KEY"),
            gcs_emulator: env("RUNCONVERT_TEST_GCS_EMULATOR"),
            sftp_port: env("RUNCONVERT_TEST_SFTP_PORT").parse().unwrap(),
            sftp_user: env("RUNCONVERT_TEST_SFTP_USER"),
            sftp_password: env("RUNCONVERT_TEST_SFTP_PASSWORD"),
            sftp_key: std::fs::read_to_string(env("RUNCONVERT_TEST_SFTP_KEY")).unwrap(),
            sftp_home: env("RUNCONVERT_TEST_SFTP_HOME"),
        }
    }

    /// The server arguments that point it at the emulators (which live on loopback).
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--allow-private-networks".into(),
            "--azure-blob-endpoint".into(),
            self.azure_endpoint.clone(),
            "--gcs-emulator".into(),
            self.gcs_emulator.clone(),
        ]
    }

    /// Task fields of each store (credentials and bucket), without the object's name.
    pub fn s3_fields(&self, bucket: &str) -> Value {
        json!({"bucket": bucket, "region": "us-east-1", "access_key_id": S3_ACCESS_KEY,
               "secret_access_key": S3_SECRET, "endpoint": self.s3_endpoint})
    }

    pub fn gcs_fields(&self, bucket: &str) -> Value {
        json!({"bucket": bucket, "project_id": "runconvert-tests", "client_email": GCS_EMAIL,
               "private_key": GCS_PRIVATE_KEY})
    }

    pub fn azure_fields(&self, container: &str) -> Value {
        json!({"storage_account": self.azure_account, "container": container,
               "storage_access_key": self.azure_key})
    }

    pub fn sftp_password_fields(&self) -> Value {
        json!({"host": "127.0.0.1", "port": self.sftp_port, "username": self.sftp_user,
               "password": self.sftp_password})
    }

    pub fn sftp_key_fields(&self) -> Value {
        json!({"host": "127.0.0.1", "port": self.sftp_port, "username": self.sftp_user,
               "private_key": self.sftp_key})
    }

    pub fn s3(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id(S3_ACCESS_KEY)
                .with_secret_access_key(S3_SECRET)
                .with_endpoint(&self.s3_endpoint)
                .with_allow_http(true)
                .build()
                .unwrap(),
        )
    }

    pub fn azure(&self, container: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            object_store::azure::MicrosoftAzureBuilder::new()
                .with_account(&self.azure_account)
                .with_access_key(&self.azure_key)
                .with_container_name(container)
                .with_endpoint(self.azure_endpoint.replace("{account}", &self.azure_account))
                .with_allow_http(true)
                .build()
                .unwrap(),
        )
    }

    pub fn gcs(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let key = json!({"private_key": GCS_PRIVATE_KEY, "private_key_id": "", "client_email": GCS_EMAIL,
                         "gcs_base_url": self.gcs_emulator, "disable_oauth": true});
        Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket)
                .with_service_account_key(key.to_string())
                .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
                .build()
                .unwrap(),
        )
    }
}

pub async fn put(store: &Arc<dyn ObjectStore>, key: &str, bytes: Vec<u8>) {
    store.put(&ObjectPath::from(key), bytes.into()).await.unwrap();
}

pub async fn get(store: &Arc<dyn ObjectStore>, key: &str) -> Vec<u8> {
    let r = store
        .get(&ObjectPath::from(key))
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    r.bytes().await.unwrap().to_vec()
}

/// Keys under `prefix`, sorted.
pub async fn list(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    use futures_util::StreamExt;
    let prefix = ObjectPath::from(prefix);
    let mut keys: Vec<String> = store
        .list(Some(&prefix))
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    keys.sort();
    keys
}

/// An S3 object's ACL document (GET ?acl, signed with SigV4).
pub async fn s3_get_acl(st: &Stores, bucket: &str, key: &str) -> String {
    use runconvert_connectors::sigv4;
    let base = url::Url::parse(&st.s3_endpoint).unwrap();
    let host = format!("{}:{}", base.host_str().unwrap(), base.port().unwrap());
    let path = format!("/{bucket}/{}", sigv4::uri_encode(key, true));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let creds = sigv4::Credentials {
        access_key_id: S3_ACCESS_KEY,
        secret_access_key: S3_SECRET,
        session_token: None,
    };
    let headers = sigv4::sign_request(
        "GET",
        &path,
        "acl=",
        &[("host", host)],
        sigv4::EMPTY_SHA256,
        "us-east-1",
        "s3",
        &creds,
        now,
    );
    let mut req = reqwest::Client::new().get(format!("{}{path}?acl", st.s3_endpoint));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "GET ?acl: {}", resp.status());
    resp.text().await.unwrap()
}
