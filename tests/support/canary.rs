//! A canary: listeners on 127.0.0.1 (and ::1 on the same port when possible), TCP and
//! UDP, that record every connection made to them and the first line each sent. Any
//! connection is a failure of the test that set it up; its control run shows that the
//! canary does see a connection when one is made.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What reached the canary: one entry per TCP connection (its first line, `<nothing>`
/// when it sent nothing, `<binary>` when it was not text) and per UDP datagram (`<udp>`).
pub struct Canary {
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A small magenta PNG, answered to every HTTP request: if it shows up in an output, it
/// came from the canary.
pub fn magenta_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(16, 16, image::Rgb([255, 0, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

impl Canary {
    /// A canary on 127.0.0.1 and ::1, on a free port.
    pub async fn start() -> Canary {
        let v4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let mut listeners = vec![v4];
        if let Ok(v6) = tokio::net::TcpListener::bind(("::1", port)).await {
            listeners.push(v6);
        }
        Self::serve(listeners, "127.0.0.1", port).await
    }

    /// A canary on one loopback address (127.0.0.2, say) and `port`.
    pub async fn start_on(ip: &str, port: u16) -> Canary {
        let l = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
        Self::serve(vec![l], ip, port).await
    }

    async fn serve(listeners: Vec<tokio::net::TcpListener>, udp_ip: &str, port: u16) -> Canary {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let png = Arc::new(magenta_png());
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = listeners
            .into_iter()
            .map(|l| {
                let seen = seen.clone();
                let png = png.clone();
                tokio::spawn(async move {
                    while let Ok((mut c, _)) = l.accept().await {
                        let seen = seen.clone();
                        let png = png.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 4096];
                            let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .unwrap_or(0);
                            let first = &buf[..n];
                            let line = if n == 0 {
                                "<nothing>".to_string()
                            } else {
                                match std::str::from_utf8(first) {
                                    Ok(t) => t.lines().next().unwrap_or_default().to_string(),
                                    Err(_) => "<binary>".to_string(),
                                }
                            };
                            seen.lock().unwrap().push(line);
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
                                png.len()
                            );
                            let _ = c.write_all(head.as_bytes()).await;
                            let _ = c.write_all(&png).await;
                        });
                    }
                })
            })
            .collect();
        if let Ok(udp) = tokio::net::UdpSocket::bind((udp_ip, port)).await {
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while udp.recv_from(&mut buf).await.is_ok() {
                    seen.lock().unwrap().push("<udp>".into());
                }
            }));
        }
        Canary { port, seen, tasks }
    }

    /// Connections and datagrams so far.
    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// What reached it, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether a request line containing `needle` arrived.
    pub fn saw(&self, needle: &str) -> bool {
        self.seen().iter().any(|l| l.contains(needle))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
