//! AWS Signature Version 4, for the few S3 requests `object_store` does not make (an
//! object's canned ACL) and for presigned forms. <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html>

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// SHA-256 of nothing: the payload hash of a request without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The key that signs requests of `date` (YYYYMMDD) for `region` and `service`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// Hex HMAC-SHA256 of `data` under `key`.
pub fn hex_hmac(key: &[u8], data: &[u8]) -> String {
    hex::encode(hmac(key, data))
}

/// Percent-encodes all but the unreserved characters (and `/` when `keep_slash`).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `20261129T211500Z` and `20261129` for a Unix time.
pub fn amz_dates(unix_seconds: i64) -> (String, String) {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let date = format!("{:04}{:02}{:02}", t.year(), t.month() as u8, t.day());
    let stamp = format!("{date}T{:02}{:02}{:02}Z", t.hour(), t.minute(), t.second());
    (stamp, date)
}

/// Signs a request: returns the headers to add (`x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` when there is one, and `authorization`). `headers` are the
/// other headers to sign, lower-case names, `host` among them; `path` is already
/// URI-encoded; `query` is the canonical query string.
#[allow(clippy::too_many_arguments)]
pub fn sign_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, String)],
    payload_sha256: &str,
    region: &str,
    service: &str,
    creds: &Credentials<'_>,
    unix_seconds: i64,
) -> Vec<(String, String)> {
    let (stamp, date) = amz_dates(unix_seconds);
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    all.push(("x-amz-date".into(), stamp.clone()));
    all.push(("x-amz-content-sha256".into(), payload_sha256.to_string()));
    if let Some(t) = creds.session_token {
        all.push(("x-amz-security-token".into(), t.to_string()));
    }
    all.sort();
    let canonical_headers: String = all.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload_sha256}");
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(creds.secret_access_key, &date, region, service);
    let signature = hex_hmac(&key, to_sign.as_bytes());
    let mut out: Vec<(String, String)> = all
        .into_iter()
        .filter(|(k, _)| k.starts_with("x-amz-") && headers.iter().all(|(h, _)| !h.eq_ignore_ascii_case(k)))
        .collect();
    out.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    out
}

/// A presigned URL (query-string authentication) for `method` on `url`, valid for
/// `expires_secs` from `unix_seconds`. `url`'s path must be URI-encoded already.
pub fn presign_url(
    method: &str,
    url: &url::Url,
    region: &str,
    service: &str,
    creds: &Credentials<'_>,
    expires_secs: u64,
    unix_seconds: i64,
) -> String {
    let (stamp, date) = amz_dates(unix_seconds);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    params.push(("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()));
    params.push(("X-Amz-Credential".into(), format!("{}/{scope}", creds.access_key_id)));
    params.push(("X-Amz-Date".into(), stamp.clone()));
    params.push(("X-Amz-Expires".into(), expires_secs.clamp(1, 604_800).to_string()));
    params.push(("X-Amz-SignedHeaders".into(), "host".into()));
    if let Some(t) = creds.session_token {
        params.push(("X-Amz-Security-Token".into(), t.to_string()));
    }
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    encoded.sort();
    let query: Vec<String> = encoded.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let query = query.join("&");
    let canonical = format!(
        "{method}\n{}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD",
        url.path()
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(creds.secret_access_key, &date, region, service);
    let signature = hex_hmac(&key, to_sign.as_bytes());
    let mut out = url.clone();
    out.set_query(Some(&format!("{query}&X-Amz-Signature={signature}")));
    out.to_string()
}

/// The fields of an S3 browser upload form (POST Object with a SigV4-signed policy):
/// the object key may be anything under `key_prefix` (`${filename}` is the uploaded
/// file's name), at most `max_bytes` long; S3 answers 201 with an XML body.
pub fn presigned_post_fields(
    bucket: &str,
    key_prefix: &str,
    max_bytes: u64,
    region: &str,
    creds: &Credentials<'_>,
    expires_unix: i64,
    unix_seconds: i64,
) -> Vec<(String, String)> {
    use base64::Engine as _;
    let (stamp, date) = amz_dates(unix_seconds);
    let credential = format!("{}/{date}/{region}/s3/aws4_request", creds.access_key_id);
    let expiration = time::OffsetDateTime::from_unix_timestamp(expires_unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut conditions = vec![
        serde_json::json!({"bucket": bucket}),
        serde_json::json!(["starts-with", "$key", key_prefix]),
        serde_json::json!({"success_action_status": "201"}),
        serde_json::json!(["content-length-range", 0, max_bytes]),
        serde_json::json!({"x-amz-algorithm": "AWS4-HMAC-SHA256"}),
        serde_json::json!({"x-amz-credential": credential}),
        serde_json::json!({"x-amz-date": stamp}),
    ];
    if let Some(t) = creds.session_token {
        conditions.push(serde_json::json!({"x-amz-security-token": t}));
    }
    let policy = serde_json::json!({"expiration": expiration, "conditions": conditions});
    let policy = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
    let key = signing_key(creds.secret_access_key, &date, region, "s3");
    let signature = hex_hmac(&key, policy.as_bytes());
    let mut fields = vec![
        ("key".to_string(), format!("{key_prefix}${{filename}}")),
        ("success_action_status".into(), "201".into()),
        ("x-amz-algorithm".into(), "AWS4-HMAC-SHA256".into()),
        ("x-amz-credential".into(), credential),
        ("x-amz-date".into(), stamp),
    ];
    if let Some(t) = creds.session_token {
        fields.push(("x-amz-security-token".into(), t.to_string()));
    }
    fields.push(("policy".into(), policy));
    fields.push(("x-amz-signature".into(), signature));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of AWS's documentation "Example: GET Object" (S3, SigV4 header auth).
    #[test]
    fn matches_the_aws_documentation_example() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: None,
        };
        // 2013-05-24T00:00:00Z
        let h = sign_request(
            "GET",
            "/test.txt",
            "",
            &[
                ("host", "examplebucket.s3.amazonaws.com".into()),
                ("range", "bytes=0-9".into()),
            ],
            EMPTY_SHA256,
            "us-east-1",
            "s3",
            &creds,
            1_369_353_600,
        );
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(
            auth.ends_with("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
            "{auth}"
        );
    }

    #[test]
    fn encodes_like_s3() {
        assert_eq!(uri_encode("a b/c+d~", true), "a%20b/c%2Bd~");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }

    /// AWS's documented example of a presigned GET ("Example: Authenticating Requests:
    /// Using Query Parameters").
    #[test]
    fn presigns_like_the_aws_example() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: None,
        };
        let url = url::Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let signed = presign_url("GET", &url, "us-east-1", "s3", &creds, 86400, 1_369_353_600);
        assert!(
            signed.ends_with("X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
            "{signed}"
        );
    }
}
