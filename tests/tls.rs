//! HTTPS: the embedded server serves TLS itself (rustls) with --tls-cert/--tls-key and
//! sends HSTS; it refuses plain HTTP on a non-loopback address unless told it is behind
//! a proxy (--allow-plain-http).

use runconvert_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The server's "RunConvert listening on ..." line (None if it exits first).
fn listening_line(child: &mut Child) -> Option<String> {
    BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("RunConvert listening on "))
}

fn data_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("runconvert-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn serves_https_with_hsts_and_refuses_plain_http_off_loopback() {
    let dir = data_dir("https");
    // A throwaway certificate for 127.0.0.1.
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success());
    let api_key = create_key(&dir, "tls");
    let mut child = Command::new(bin_path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--header-timeout", "2"])
        .env("RUNCONVERT_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = listening_line(&mut child).unwrap();
    let base = line["RunConvert listening on ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{line}");

    // curl, trusting only the throwaway certificate, is the client.
    let curl = |extra: &[&str], url: &str| {
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "-D", "-", "-o", "/dev/null"])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl")
    };
    let mut head = String::new();
    for _ in 0..50 {
        let out = curl(
            &[
                "--cacert",
                cert.to_str().unwrap(),
                "-H",
                &format!("Authorization: Bearer {api_key}"),
            ],
            &format!("{base}/v2/process/jobs"),
        );
        if out.status.success() {
            head = String::from_utf8_lossy(&out.stdout).to_lowercase();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(head.starts_with("http/") && head.contains(" 200"), "{head}");
    assert!(head.contains("strict-transport-security: max-age=31536000"), "{head}");
    // A client that does not trust the certificate gets no answer, and plain HTTP to
    // the TLS port gets no API.
    assert!(!curl(&[], &format!("{base}/healthz")).status.success());
    let plain = base.replacen("https://", "http://", 1);
    let out = curl(&[], &format!("{plain}/healthz"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(" 200"));
    // A connection that never finishes its TLS handshake is closed at the header timeout.
    {
        use std::io::Read;
        let addr = base.trim_start_matches("https://");
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let read = silent.read(&mut buf);
        // Closed (EOF or reset) well before the client's own 10 s read timeout.
        assert!(
            started.elapsed() < Duration::from_secs(8) && !matches!(read, Ok(n) if n > 0),
            "a silent TLS connection stayed open: {read:?} after {:?}",
            started.elapsed()
        );
    }
    let _ = child.kill();
    let _ = child.wait();

    // Plain HTTP on every interface: refused with a reason, unless behind a proxy.
    let out = Command::new(bin_path())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&dir)
        .env("RUNCONVERT_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve plain HTTP") && err.contains("--allow-plain-http"),
        "{err}"
    );
    let mut proxied = Command::new(bin_path())
        .args(["serve", "--listen", "0.0.0.0:0", "--allow-plain-http", "--data-dir"])
        .arg(&dir)
        .env("RUNCONVERT_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = listening_line(&mut proxied);
    assert!(line.is_some_and(|l| l.contains("http://0.0.0.0:")));
    let _ = proxied.kill();
    let _ = proxied.wait();
}
