//! Task credentials at rest: a task's fields are stored with its secrets redacted, and
//! the secrets sealed apart with a key of the installation (XChaCha20-Poly1305), so a
//! copy of the database alone reveals none. Both job stores (SQLite, DynamoDB) use this.

use crate::model::Task;
use serde_json::{Map, Value};

/// Seals the credentials of tasks (import/s3 keys, SFTP passwords...) before they are
/// written: the `payload` column holds the fields with secrets redacted, the `secrets`
/// column the secret fields encrypted with XChaCha20-Poly1305 under a key of this server
/// (derived from its signing key), so a copy of the database alone reveals none. They are
/// erased when the task ends.
pub struct Sealer {
    cipher: chacha20poly1305::XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(key: [u8; 32]) -> Self {
        use chacha20poly1305::KeyInit;
        Sealer {
            cipher: chacha20poly1305::XChaCha20Poly1305::new(&key.into()),
        }
    }

    pub fn seal(&self, plain: &[u8]) -> String {
        use base64::Engine as _;
        use chacha20poly1305::aead::{Aead, AeadCore, OsRng};
        let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, plain)
            .expect("sealing in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        use chacha20poly1305::aead::Aead;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|e| format!("sealed secrets: {e}"))?;
        if raw.len() < 24 {
            return Err("sealed secrets are too short".into());
        }
        let (nonce, body) = raw.split_at(24);
        self.cipher
            .decrypt(nonce.into(), body)
            .map_err(|_| "sealed secrets do not open with this server's key".to_string())
    }
}

/// A task's stored payload (secrets redacted) and its sealed secrets, if it has any and
/// there is a key (without one, the task was read with its secrets redacted already).
pub fn stored_task(t: &Task, sealer: Option<&Sealer>) -> (String, Option<String>) {
    let mut payload = t.stored_payload();
    let fields = payload["fields"].as_object_mut().expect("stored payload has fields");
    let mut secrets = serde_json::Map::new();
    for name in t.operation.secret_fields() {
        if let Some(v) = fields.get_mut(*name) {
            if !v.is_null() {
                secrets.insert(name.to_string(), v.clone());
                crate::ops::redact(v);
            }
        }
    }
    let sealed = sealer
        .filter(|_| !secrets.is_empty())
        .map(|sealer| sealer.seal(serde_json::Value::Object(secrets).to_string().as_bytes()));
    (payload.to_string(), sealed)
}

/// Puts the unsealed `secrets` back into a stored payload's fields.
pub fn merge_secrets(payload: &mut Value, sealed: &str, sealer: &Sealer) -> Result<(), String> {
    let plain = sealer.open(sealed)?;
    let secrets: Map<String, Value> = serde_json::from_slice(&plain).map_err(|e| e.to_string())?;
    if let Some(fields) = payload["fields"].as_object_mut() {
        fields.extend(secrets);
    }
    Ok(())
}
