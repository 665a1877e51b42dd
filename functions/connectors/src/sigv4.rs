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
}
