//! The pinning proxy: the only way Chromium reaches the network. Chromium is started with
//! this proxy for every scheme, with no bypass (not even for loopback) and with a host
//! resolver that resolves nothing, so every connection a page makes (frames in other
//! processes, sub-resources, redirects, fetch, WebSocket, preconnects, WebRTC's TCP
//! candidates) arrives here as `CONNECT host:port` or an absolute-form HTTP request. The
//! host is resolved once, here, each address is checked by the outbound guard, and the
//! connection is made to a checked address: there is no second lookup to rebind.
//! Redirects are not followed here; Chromium follows them, and each hop comes back.

use crate::guard::{Guard, Refused};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where a host may be reached: every address checked. The guard is the one used in the
/// server; tests give one whose answers change from one lookup to the next.
#[async_trait::async_trait]
pub trait Pin: Send + Sync {
    async fn pin(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused>;
}

#[async_trait::async_trait]
impl Pin for Guard {
    async fn pin(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check_ip(ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        self.resolve(bare.trim_end_matches('.'), port).await
    }
}

/// Longest request head accepted from the browser.
const MAX_HEAD: usize = 64 * 1024;

/// A running proxy on 127.0.0.1; it stops when dropped.
pub struct PinningProxy {
    pub addr: SocketAddr,
    refused: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PinningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PinningProxy {
    pub async fn start(pin: Arc<dyn Pin>, connect_timeout: Duration) -> std::io::Result<PinningProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let refused = Arc::new(Mutex::new(Vec::new()));
        let log = refused.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let pin = pin.clone();
                let log = log.clone();
                conns.spawn(async move {
                    if let Err((host, why)) = serve(client, pin.as_ref(), connect_timeout).await {
                        log.lock().unwrap_or_else(|p| p.into_inner()).push((host, why));
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(PinningProxy { addr, refused, task })
    }

    /// Why connections to `host` were refused, if they were.
    pub fn refusal_for(&self, host: &str) -> Option<String> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, why)| why.clone())
    }

    /// Every refusal so far: (host, why).
    pub fn refusals(&self) -> Vec<(String, String)> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One browser connection: one request, or one tunnel. `Err((host, why))` when the
/// guard refused the destination.
async fn serve(mut client: TcpStream, pin: &dyn Pin, connect_timeout: Duration) -> Result<(), (String, String)> {
    let Ok(Ok((head, rest))) = tokio::time::timeout(Duration::from_secs(30), read_head(&mut client)).await else {
        return Ok(());
    };
    let Some((method, target, version, headers)) = parse_head(&head) else {
        let _ = client
            .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            .await;
        return Ok(());
    };
    let (host, port, origin_form) = if method.eq_ignore_ascii_case("CONNECT") {
        let Some((h, p)) = split_host_port(&target, 443) else {
            let _ = client
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
            return Ok(());
        };
        (h, p, None)
    } else {
        // Absolute form: GET http://host:port/path HTTP/1.1 (plain http only; https is CONNECT).
        let Ok(url) = url::Url::parse(&target) else {
            let _ = client
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
            return Ok(());
        };
        if url.scheme() != "http" {
            let _ = client
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
            return Ok(());
        }
        let Some(h) = url.host_str() else {
            return Ok(());
        };
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        (h.to_string(), url.port_or_known_default().unwrap_or(80), Some(path))
    };
    let host = host.to_ascii_lowercase();
    let addrs = match pin.pin(&host, port).await {
        Ok(a) => a,
        Err(Refused(why)) => {
            // The page sees no reason (it would map inner names to addresses); the task's
            // message and the log do.
            let body = "RunConvert refused this connection.\n";
            let _ = client
                .write_all(
                    format!(
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
            return Err((bare, why));
        }
    };
    let mut upstream = None;
    for a in &addrs {
        if let Ok(Ok(s)) = tokio::time::timeout(connect_timeout, TcpStream::connect(a)).await {
            upstream = Some(s);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
            .await;
        return Ok(());
    };
    match &origin_form {
        None => {
            if client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        Some(path) => {
            if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding")) {
                let _ = client
                    .write_all(b"HTTP/1.1 411 Length Required\r\nConnection: close\r\n\r\n")
                    .await;
                return Ok(());
            }
            // One request per connection, so every request is checked on its own.
            let mut out = format!("{method} {path} {version}\r\n");
            for (k, v) in &headers {
                let lower = k.to_ascii_lowercase();
                if lower.starts_with("proxy-") || lower == "connection" || lower == "keep-alive" {
                    continue;
                }
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("Connection: close\r\n\r\n");
            if upstream.write_all(out.as_bytes()).await.is_err() {
                return Ok(());
            }
        }
    }
    if origin_form.is_none() {
        // A tunnel: whatever the two ends say, inside TLS or a WebSocket.
        if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
            return Ok(());
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return Ok(());
    }
    // A plain request: its body (Content-Length bytes) goes up, then nothing more from
    // the browser: a second request on this connection, for whatever host, never reaches
    // this upstream. The answer comes back until the upstream closes.
    let length: u64 = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let (mut up_read, mut up_write) = upstream.split();
    let (client_read, mut client_write) = client.split();
    let send = async {
        let first = rest.len().min(length as usize);
        up_write.write_all(&rest[..first]).await?;
        let mut left = (client_read).take(length - first as u64);
        tokio::io::copy(&mut left, &mut up_write).await?;
        Ok::<(), std::io::Error>(())
    };
    let receive = tokio::io::copy(&mut up_read, &mut client_write);
    let _ = tokio::join!(send, receive);
    Ok(())
}

/// Reads up to the end of the request head; returns it and any bytes after it.
async fn read_head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

type Head = (String, String, String, Vec<(String, String)>);

fn parse_head(head: &str) -> Option<Head> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let version = first.next().unwrap_or("HTTP/1.1").to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Some((method, target, version, headers))
}

/// `host:port`, `[v6]:port` or a bare host.
fn split_host_port(target: &str, default: u16) -> Option<(String, u16)> {
    if let Some(rest) = target.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map(|p| p.parse().ok())
            .unwrap_or(Some(default))?;
        return Some((format!("[{h}]"), port));
    }
    match target.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((target.to_string(), default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_targets() {
        assert_eq!(split_host_port("example.com:443", 1), Some(("example.com".into(), 443)));
        assert_eq!(split_host_port("[::1]:8080", 1), Some(("[::1]".into(), 8080)));
        assert_eq!(split_host_port("example.com", 80), Some(("example.com".into(), 80)));
        assert_eq!(split_host_port("example.com:x", 80), None);
    }

    /// A request through the proxy to a loopback listener is refused (403, recorded, no
    /// connection), and let through with a guard that allows private networks (control).
    #[tokio::test]
    async fn refuses_what_the_guard_refuses() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = target.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = target.accept().await {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            }
        });
        for (allow, want) in [(false, "403"), (true, "200")] {
            let proxy = PinningProxy::start(Arc::new(Guard::new(allow)), Duration::from_secs(2))
                .await
                .unwrap();
            for req in [
                format!("GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
                format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
            ] {
                let mut c = TcpStream::connect(proxy.addr).await.unwrap();
                c.write_all(req.as_bytes()).await.unwrap();
                let mut got = vec![0u8; 64];
                let n = c.read(&mut got).await.unwrap();
                let line = String::from_utf8_lossy(&got[..n]).to_string();
                assert!(line.contains(want), "allow={allow}: {req:?} → {line:?}");
            }
            assert_eq!(proxy.refusals().len(), if allow { 0 } else { 2 });
        }
        // Only the control run reached the listener: its GET, and its tunnel.
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
