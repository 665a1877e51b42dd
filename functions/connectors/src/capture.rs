//! capture_website: headless Chromium driven over the DevTools protocol. Chromium reaches
//! the network only through the pinning proxy (`proxy`): it resolves no name itself, and
//! the proxy resolves each host once, checks every address with the outbound guard and
//! connects to the checked one; frames in other processes, WebSocket, preconnects and
//! WebRTC's TCP candidates go through it too. The main page's requests are also paused by
//! the Fetch domain, which refuses other schemes (file:...) and literal inner addresses
//! and serves a converted document from memory. Chromium runs in its own process group
//! with a throwaway profile and is killed when the capture ends, fails, times out or is
//! cancelled.

use crate::guard::Guard;
use crate::proxy::{Pin, PinningProxy};
use futures_util::{SinkExt, StreamExt};
use runconvert_core::error::codes;
use runconvert_core::formats::{OptionSpec, OptionType};
use runconvert_core::ops::EngineOptions;
use runconvert_core::TaskError;
use serde_json::{json, Value};

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

pub const OUTPUTS: &[&str] = &["png", "jpg", "pdf"];
const WAIT_UNTIL: &[&str] = &["load", "domcontentloaded", "networkidle"];
const PAGE_SIZES: &[&str] = &["A4", "A3", "A5", "Letter", "Legal", "Tabloid"];

pub fn options(output: &str) -> Vec<OptionSpec> {
    let mut o = vec![
        OptionSpec {
            name: "wait_until",
            kind: OptionType::Enum(WAIT_UNTIL),
            default: Some(json!("load")),
            description: "When the page counts as loaded: its load event, DOMContentLoaded, or network idle.",
        },
        OptionSpec {
            name: "wait_time",
            kind: OptionType::Integer { min: 0, max: 30_000 },
            default: Some(json!(0)),
            description: "Milliseconds to wait after that, for late scripts.",
        },
        OptionSpec {
            name: "load_timeout",
            kind: OptionType::Integer { min: 1, max: 300 },
            default: Some(json!(30)),
            description: "Seconds the page may take to load before the task fails.",
        },
        OptionSpec {
            name: "viewport_width",
            kind: OptionType::Integer { min: 100, max: 5_000 },
            default: Some(json!(1280)),
            description: "Browser window width in CSS pixels.",
        },
        OptionSpec {
            name: "viewport_height",
            kind: OptionType::Integer { min: 100, max: 5_000 },
            default: Some(json!(800)),
            description: "Browser window height in CSS pixels.",
        },
    ];
    if output == "pdf" {
        o.extend([
            OptionSpec { name: "page_size", kind: OptionType::Enum(PAGE_SIZES), default: Some(json!("A4")), description: "Paper size." },
            OptionSpec { name: "landscape", kind: OptionType::Boolean, default: Some(json!(false)), description: "Landscape orientation." },
            OptionSpec { name: "print_background", kind: OptionType::Boolean, default: Some(json!(true)), description: "Print background colours and images." },
            OptionSpec { name: "margin", kind: OptionType::Integer { min: 0, max: 100 }, default: Some(json!(10)), description: "Margin on every side, in millimetres." },
            OptionSpec { name: "header_template", kind: OptionType::String { max_len: 4096 }, default: None, description: "HTML of the page header (Chromium's print template classes: date, title, url, pageNumber, totalPages)." },
            OptionSpec { name: "footer_template", kind: OptionType::String { max_len: 4096 }, default: None, description: "HTML of the page footer." },
        ]);
    } else {
        o.push(OptionSpec {
            name: "full_page",
            kind: OptionType::Boolean,
            default: Some(json!(false)),
            description: "Capture the whole page, not only the window.",
        });
        if output == "jpg" {
            o.push(OptionSpec {
                name: "quality",
                kind: OptionType::Integer { min: 1, max: 100 },
                default: Some(json!(85)),
                description: "JPEG quality.",
            });
        }
    }
    o
}

/// Chromium, if installed.
#[derive(Debug, Clone)]
pub struct Chromium {
    pub path: PathBuf,
    pub version: String,
}

impl Chromium {
    /// The Chromium of this host, looked for once; its version (one more browser start)
    /// only if the first caller asks for it.
    pub fn get(probe_version: bool) -> Option<&'static Chromium> {
        static FOUND: std::sync::OnceLock<Option<Chromium>> = std::sync::OnceLock::new();
        FOUND.get_or_init(|| Chromium::find(probe_version)).as_ref()
    }

    pub fn find(probe_version: bool) -> Option<Self> {
        let path = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|n| which(n))?;
        let version = if probe_version {
            std::process::Command::new(&path)
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .nth(1)
                        .map(String::from)
                })
                .unwrap_or_else(|| "unknown".into())
        } else {
            "not probed".into()
        };
        Some(Chromium { path, version })
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn failed(msg: impl Into<String>) -> TaskError {
    TaskError::new(codes::PROCESSING_FAILED, msg)
}

/// Kills Chromium's process group when dropped.
struct Browser {
    child: tokio::process::Child,
    pid: i32,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group created for the browser.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools session: numbered commands, events queued until asked for.
struct Devtools {
    ws: Socket,
    next_id: u64,
    session: Option<String>,
    events: Vec<Value>,
    /// A document served to the page at [`DOCUMENT_URL`] (html/md → pdf).
    document: Option<String>,
}

/// Where a converted document is shown: a name that never resolves, answered from memory.
const DOCUMENT_URL: &str = "http://document.runconvert.invalid/";

impl Devtools {
    async fn send(&mut self, method: &str, params: Value) -> Result<u64, TaskError> {
        self.next_id += 1;
        let mut msg = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|e| failed(format!("Chromium: {e}")))?;
        Ok(self.next_id)
    }

    /// The next message from the browser.
    async fn recv(&mut self) -> Result<Value, TaskError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t).map_err(|e| failed(format!("Chromium: {e}")))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(failed(format!("Chromium: {e}"))),
                None => return Err(failed("Chromium closed the connection")),
            }
        }
    }

    /// Sends a command and waits for its answer; events meanwhile go to `on_event`.
    async fn call(&mut self, method: &str, params: Value, guard: &Guard) -> Result<Value, TaskError> {
        let id = self.send(method, params).await?;
        loop {
            let msg = self.recv().await?;
            if msg["id"].as_u64() == Some(id) {
                if let Some(err) = msg.get("error") {
                    return Err(failed(format!(
                        "Chromium {method}: {}",
                        err["message"].as_str().unwrap_or("error")
                    )));
                }
                return Ok(msg["result"].clone());
            }
            self.on_event(msg, guard).await?;
        }
    }

    /// Answers paused requests at once (through the guard); keeps other events.
    async fn on_event(&mut self, msg: Value, guard: &Guard) -> Result<(), TaskError> {
        if msg["method"] == "Fetch.requestPaused" {
            let p = &msg["params"];
            let request_id = p["requestId"].as_str().unwrap_or_default().to_string();
            let url = p["request"]["url"].as_str().unwrap_or_default().to_string();
            if url == DOCUMENT_URL {
                if let Some(html) = &self.document {
                    use base64::Engine as _;
                    let body = base64::engine::general_purpose::STANDARD.encode(html.as_bytes());
                    let headers = json!([{"name": "Content-Type", "value": "text/html; charset=utf-8"}]);
                    let params =
                        json!({"requestId": request_id, "responseCode": 200, "responseHeaders": headers, "body": body});
                    self.send("Fetch.fulfillRequest", params).await?;
                    return Ok(());
                }
            }
            let verdict = check_request(guard, &url).await;
            match verdict {
                Ok(()) => {
                    self.send("Fetch.continueRequest", json!({"requestId": request_id}))
                        .await?;
                }
                Err(why) => {
                    tracing_refusal(&url, &why);
                    self.send(
                        "Fetch.failRequest",
                        json!({"requestId": request_id, "errorReason": "AccessDenied"}),
                    )
                    .await?;
                    self.events
                        .push(json!({"method": "RunConvert.refused", "params": {"url": url, "why": why}}));
                }
            }
            return Ok(());
        }
        self.events.push(msg);
        Ok(())
    }

    /// Waits for an event named `method` (answering paused requests meanwhile).
    async fn wait_event(&mut self, accept: impl Fn(&Value) -> bool, guard: &Guard) -> Result<Value, TaskError> {
        if let Some(pos) = self.events.iter().position(&accept) {
            return Ok(self.events.remove(pos));
        }
        loop {
            let msg = self.recv().await?;
            if msg.get("id").is_some() {
                continue;
            }
            if msg["method"] == "Fetch.requestPaused" {
                self.on_event(msg, guard).await?;
                continue;
            }
            if accept(&msg) {
                return Ok(msg);
            }
            self.events.push(msg);
        }
    }
}

fn tracing_refusal(url: &str, why: &str) {
    let shown = url.split(['?', '#']).next().unwrap_or(url);
    eprintln!("capture_website: refused {shown}: {why}");
}

/// Whether the page may load `url`: its scheme and a literal address. Host names are
/// resolved and checked by the pinning proxy alone, where the connection is made.
pub async fn check_request(guard: &Guard, url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("data:") || lower.starts_with("blob:") || lower == "about:blank" {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    guard.check_url(&parsed).map_err(|r| r.0)
}

/// The flags that leave Chromium no way to the network but `proxy`: every scheme through
/// it, no implicit bypass for loopback, a resolver that resolves nothing (the proxy's own
/// address is a literal), WebRTC without UDP (its TCP candidates go through the proxy),
/// no QUIC, no DNS-over-HTTPS (it would bypass the proxy), no background traffic.
pub fn network_flags(proxy: std::net::SocketAddr) -> Vec<String> {
    vec![
        format!("--proxy-server=http://{proxy}"),
        "--proxy-bypass-list=<-loopback>".into(),
        format!("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {}", proxy.ip()),
        "--webrtc-ip-handling-policy=disable_non_proxied_udp".into(),
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp".into(),
        "--disable-quic".into(),
        "--disable-features=DnsOverHttps,NetworkPrediction,MediaRouter,OptimizationHints,Translate".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-domain-reliability".into(),
        "--no-pings".into(),
    ]
}

fn paper(size: &str) -> (f64, f64) {
    match size {
        "A3" => (11.69, 16.54),
        "A5" => (5.83, 8.27),
        "Letter" => (8.5, 11.0),
        "Legal" => (8.5, 14.0),
        "Tabloid" => (11.0, 17.0),
        _ => (8.27, 11.69),
    }
}

/// Renders an HTML or Markdown file to PDF in Chromium (its sub-requests pass the guard).
pub async fn document_to_pdf(
    chromium: &Chromium,
    guard: &Guard,
    input: &Path,
    format: &str,
    o: &EngineOptions,
    work: &Path,
    out: &Path,
) -> Result<(), TaskError> {
    let text = tokio::fs::read(input).await.map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8_lossy(&text).to_string();
    let html = if format == "md" {
        let mut body = String::new();
        pulldown_cmark::html::push_html(
            &mut body,
            pulldown_cmark::Parser::new_ext(&text, pulldown_cmark::Options::all()),
        );
        format!("<!doctype html><html><head><meta charset=utf-8><style>body{{font-family:sans-serif;max-width:46em;margin:auto;line-height:1.5}}pre,code{{background:#f4f4f4}}</style></head><body>{body}</body></html>")
    } else {
        text
    };
    document_to_pdf_pinned(chromium, guard, Arc::new(*guard), html, o, work, out).await
}

/// [`document_to_pdf`] of an HTML text, with the proxy's resolution and checks given by
/// `pin` (the guard in the server; tests give one whose answers change).
#[allow(clippy::too_many_arguments)]
pub async fn document_to_pdf_pinned(
    chromium: &Chromium,
    guard: &Guard,
    pin: Arc<dyn Pin>,
    html: String,
    o: &EngineOptions,
    work: &Path,
    out: &Path,
) -> Result<(), TaskError> {
    run(chromium, guard, pin, None, Some(html), "pdf", o, work, out).await
}

/// Loads `url` in a fresh headless Chromium and writes a screenshot or PDF to `out`.
pub async fn capture(
    chromium: &Chromium,
    guard: &Guard,
    url: &str,
    output: &str,
    o: &EngineOptions,
    work: &Path,
    out: &Path,
) -> Result<(), TaskError> {
    run(chromium, guard, Arc::new(*guard), Some(url), None, output, o, work, out).await
}

#[allow(clippy::too_many_arguments)]
async fn run(
    chromium: &Chromium,
    guard: &Guard,
    pin: Arc<dyn Pin>,
    url: Option<&str>,
    document: Option<String>,
    output: &str,
    o: &EngineOptions,
    work: &Path,
    out: &Path,
) -> Result<(), TaskError> {
    let url = url.unwrap_or(DOCUMENT_URL);
    let serving_document = document.is_some();
    let parsed = url::Url::parse(url.trim())
        .map_err(|e| TaskError::new(codes::INVALID_DATA, format!("{url:?} is not a valid URL: {e}")))?;
    guard
        .check_url(&parsed)
        .map_err(|r| TaskError::new(codes::FORBIDDEN_ADDRESS, r.0))?;
    if document.is_some() {
        // Served from memory: nothing to resolve.
    } else if let Some(url::Host::Domain(host)) = parsed.host() {
        guard
            .resolve(host, parsed.port_or_known_default().unwrap_or(80))
            .await
            .map_err(|r| TaskError::new(codes::FORBIDDEN_ADDRESS, r.0))?;
    }
    let int = |name: &str, default: i64| o.get(name).and_then(Value::as_i64).unwrap_or(default);
    let boolean = |name: &str, default: bool| o.get(name).and_then(Value::as_bool).unwrap_or(default);
    let load_timeout = Duration::from_secs(int("load_timeout", 30) as u64);

    let proxy = PinningProxy::start(pin, Duration::from_secs(10))
        .await
        .map_err(|e| failed(format!("cannot start the browser's proxy: {e}")))?;
    let profile = work.join("chromium-profile");
    std::fs::create_dir_all(&profile).map_err(|e| failed(e.to_string()))?;
    let mut cmd = tokio::process::Command::new(&chromium.path);
    cmd.args(network_flags(proxy.addr));
    cmd.args([
        "--headless=new",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--mute-audio",
        "--hide-scrollbars",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg("about:blank")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    // Chromium's own sandbox needs unprivileged user namespaces: as root it refuses to
    // start with it, and where they cannot be made (AWS Lambda, which does not run as
    // root either) it cannot start at all. The tools' other walls (the pinning proxy, no
    // resolver, a private profile) stay.
    if unsafe { libc::geteuid() } == 0 || !user_namespaces_work() {
        cmd.arg("--no-sandbox");
    }
    cmd.as_std_mut().process_group(0);
    let mut child = cmd.spawn().map_err(|e| failed(format!("cannot start Chromium: {e}")))?;
    let pid = child.id().unwrap_or(0) as i32;
    let stderr = child.stderr.take();
    let browser = Browser { child, pid };
    let mut lines = BufReader::new(stderr.ok_or_else(|| failed("Chromium has no stderr"))?).lines();
    // What Chromium said last, for the message if it never gets going.
    let mut said: Vec<String> = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("DevTools listening on ").nth(1) {
                return Some(rest.trim().to_string());
            }
            if said.len() == 3 {
                said.remove(0);
            }
            said.push(line.chars().take(300).collect());
        }
        None
    })
    .await;
    let ws_url = match found {
        Ok(Some(url)) => url,
        Ok(None) => {
            return Err(failed(format!(
                "Chromium exited before it started its DevTools endpoint: {}",
                said.join(" / ")
            )))
        }
        Err(_) => return Err(failed("Chromium did not start its DevTools endpoint within 20 s")),
    };
    // Keep draining stderr so Chromium never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .map_err(|e| failed(format!("DevTools: {e}")))?;
    let mut dt = Devtools {
        ws,
        next_id: 0,
        session: None,
        events: Vec::new(),
        document,
    };
    let target = dt
        .call("Target.createTarget", json!({"url": "about:blank"}), guard)
        .await?;
    let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
    let attached = dt
        .call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            guard,
        )
        .await?;
    dt.session = attached["sessionId"].as_str().map(String::from);
    dt.call("Fetch.enable", json!({"patterns": [{"urlPattern": "*"}]}), guard)
        .await?;
    dt.call("Page.enable", json!({}), guard).await?;
    dt.call("Page.setLifecycleEventsEnabled", json!({"enabled": true}), guard)
        .await?;
    let (vw, vh) = (int("viewport_width", 1280), int("viewport_height", 800));
    dt.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": vw, "height": vh, "deviceScaleFactor": 1, "mobile": false}),
        guard,
    )
    .await?;

    let wait_until = o
        .get("wait_until")
        .and_then(Value::as_str)
        .unwrap_or("load")
        .to_string();
    let loaded = tokio::time::timeout(load_timeout, async {
        let nav = dt.call("Page.navigate", json!({"url": parsed.as_str()}), guard).await?;
        if let Some(err) = nav["errorText"].as_str() {
            let refused: Vec<String> = dt
                .events
                .iter()
                .filter(|e| e["method"] == "RunConvert.refused")
                .map(|e| e["params"]["why"].as_str().unwrap_or("").to_string())
                .collect();
            if let Some(why) = refused.first() {
                return Err(TaskError::new(codes::FORBIDDEN_ADDRESS, why.clone()));
            }
            return Err(TaskError::new(
                codes::DOWNLOAD_FAILED,
                format!("the page could not be loaded: {err}"),
            ));
        }
        let want = match wait_until.as_str() {
            "domcontentloaded" => "DOMContentLoaded",
            "networkidle" => "networkIdle",
            _ => "load",
        };
        // The events of this navigation, not of the blank page before it.
        let loader = nav["loaderId"].clone();
        dt.wait_event(
            |m| {
                m["method"] == "Page.lifecycleEvent" && m["params"]["name"] == want && m["params"]["loaderId"] == loader
            },
            guard,
        )
        .await?;
        Ok::<(), TaskError>(())
    })
    .await;
    // The page's own host refused at the proxy (it resolved to an inner address there).
    if !serving_document {
        if let Some(why) = parsed.host_str().and_then(|h| proxy.refusal_for(h)) {
            return Err(TaskError::new(codes::FORBIDDEN_ADDRESS, why));
        }
    }
    match loaded {
        Ok(r) => r?,
        Err(_) => {
            return Err(TaskError::new(
                codes::TIMEOUT,
                format!(
                    "the page did not finish loading ({wait_until}) within {} s",
                    load_timeout.as_secs()
                ),
            ))
        }
    }
    let wait = int("wait_time", 0).clamp(0, 30_000) as u64;
    if wait > 0 {
        // Late requests still pass the guard while we wait.
        let _ = tokio::time::timeout(Duration::from_millis(wait), dt.wait_event(|_| false, guard)).await;
    }

    let data = if output == "pdf" {
        let (w, h) = paper(o.get("page_size").and_then(Value::as_str).unwrap_or("A4"));
        let margin_in = int("margin", 10) as f64 / 25.4;
        let header = o.get("header_template").and_then(Value::as_str);
        let footer = o.get("footer_template").and_then(Value::as_str);
        let r = dt
            .call(
                "Page.printToPDF",
                json!({
                    "paperWidth": w, "paperHeight": h, "landscape": boolean("landscape", false),
                    "printBackground": boolean("print_background", true),
                    "marginTop": margin_in, "marginBottom": margin_in, "marginLeft": margin_in, "marginRight": margin_in,
                    "displayHeaderFooter": header.is_some() || footer.is_some(),
                    "headerTemplate": header.unwrap_or("<span></span>"), "footerTemplate": footer.unwrap_or("<span></span>"),
                }),
                guard,
            )
            .await?;
        r["data"].as_str().unwrap_or_default().to_string()
    } else {
        let mut params = json!({"format": if output == "jpg" { "jpeg" } else { "png" }});
        if output == "jpg" {
            params["quality"] = json!(int("quality", 85));
        }
        if boolean("full_page", false) {
            let m = dt.call("Page.getLayoutMetrics", json!({}), guard).await?;
            let height = m["cssContentSize"]["height"]
                .as_f64()
                .unwrap_or(vh as f64)
                .min(16_384.0)
                .ceil() as i64;
            dt.call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": vw, "height": height, "deviceScaleFactor": 1, "mobile": false}),
                guard,
            )
            .await?;
        }
        let r = dt.call("Page.captureScreenshot", params, guard).await?;
        r["data"].as_str().unwrap_or_default().to_string()
    };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| failed(format!("Chromium sent bad data: {e}")))?;
    if bytes.is_empty() {
        return Err(failed("Chromium produced an empty capture"));
    }
    tokio::fs::write(out, bytes).await.map_err(|e| failed(e.to_string()))?;
    drop(browser);
    Ok(())
}

/// Whether this process may make a user namespace (what Chromium's sandbox needs), found
/// once by starting `/bin/true` in one.
fn user_namespaces_work() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        use std::os::unix::process::CommandExt;
        let mut probe = std::process::Command::new("/bin/true");
        probe
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: unshare(2) between fork and exec touches only the child's namespaces.
        unsafe {
            probe.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        probe.status().map(|s| s.success()).unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn page_requests_pass_the_guard() {
        let g = Guard::new(false);
        for bad in [
            "http://127.0.0.1/x.png",
            "http://169.254.169.254/latest",
            "file:///etc/passwd",
            "http://[::1]/",
            "ftp://example.com/",
        ] {
            assert!(check_request(&g, bad).await.is_err(), "{bad}");
        }
        assert!(check_request(&g, "data:image/png;base64,AAAA").await.is_ok());
        // Names are resolved and refused where the browser's connection is made: the proxy.
        use crate::proxy::Pin;
        assert!(g.pin("localhost", 8080).await.is_err());
        assert!(g.pin("[::1]", 80).await.is_err());
        assert!(Guard::new(true).pin("localhost", 8080).await.is_ok());
        assert!(check_request(&Guard::new(true), "http://127.0.0.1/x.png").await.is_ok());
    }
}
