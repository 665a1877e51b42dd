//! Test support: start the real `runconvert` binary on a loopback port with its own data
//! directory, talk to it over HTTP, and serve fixture files from a loopback server.

pub mod canary;
pub mod stores;

pub use canary::{magenta_png, Canary};

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use reqwest;
pub use serde_json;

/// The `runconvert` binary cargo built next to this test (or `RUNCONVERT_BIN`).
pub fn bin_path() -> PathBuf {
    if let Ok(p) = std::env::var("RUNCONVERT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join("runconvert");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p runconvert` first",
        bin.display()
    );
    bin
}

/// The tests' input files: `RUNCONVERT_CORPUS` if set, else the fixtures the repository
/// makes for itself (`tests/fixtures/make.sh` into `target/test-fixtures`, run once; the
/// script is idempotent and holds a lock, so test binaries running at once share it).
pub fn corpus() -> PathBuf {
    if let Ok(p) = std::env::var("RUNCONVERT_CORPUS") {
        return PathBuf::from(p);
    }
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = root.join("target").join("test-fixtures");
        let status = Command::new("bash")
            .arg(root.join("tests/fixtures/make.sh"))
            .arg(&dir)
            .status()
            .expect("run tests/fixtures/make.sh");
        assert!(
            status.success(),
            "tests/fixtures/make.sh failed (see its message above)"
        );
        dir
    })
    .clone()
}

pub fn corpus_file(rel: &str) -> PathBuf {
    let p = corpus().join(rel);
    assert!(p.exists(), "corpus file {} is missing", p.display());
    p
}

fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "runconvert-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A variable `tests/services.sh` exports (in target/test-services/env.sh).
fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run `bash tests/services.sh start` (it installs the clients the \
             tests drive) and `source target/test-services/env.sh`"
        )
    })
}

/// Runs one of the suite's scripts (`tests/<script>`) with `program` and `env`; the script
/// prints `ok - ...` for each check that held and exits 1 at the first that did not.
/// Fails unless it succeeded and all `checks` ran.
async fn script_checks(mut cmd: Command, script: &str, env: Vec<(&'static str, String)>, checks: usize) {
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script)).envs(env);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the script"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    let passed = stdout.lines().filter(|l| l.starts_with("ok - ")).count();
    assert_eq!(passed, checks, "not every check of {script} ran:\n{stdout}\n{stderr}");
}

/// [`script_checks`] of a Python script, in the tests' venv (`RC_TEST_PYTHON`).
pub async fn python_checks(script: &str, env: Vec<(&'static str, String)>, checks: usize) {
    script_checks(Command::new(service_env("RC_TEST_PYTHON")), script, env, checks).await
}

/// [`script_checks`] of a Node script, with the tests' npm tree (`RC_TEST_NODE_PATH`).
pub async fn node_checks(script: &str, env: Vec<(&'static str, String)>, checks: usize) {
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", service_env("RC_TEST_NODE_PATH"));
    script_checks(cmd, script, env, checks).await
}

/// `runconvert keys create --name NAME --data-dir DIR`: the key it prints.
pub fn create_key(data_dir: &Path, name: &str) -> String {
    create_key_with(data_dir, name, &[])
}

/// `runconvert` with `args` and `--data-dir DIR`: its stdout (it must succeed).
pub fn cli(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin_path())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUNCONVERT_LOG", "warn")
        .output()
        .expect("run runconvert");
    assert!(
        out.status.success(),
        "runconvert {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `keys create` with extra flags (`--rate-limit N`, `--credits N`).
pub fn create_key_with(data_dir: &Path, name: &str, extra: &[&str]) -> String {
    let out = Command::new(bin_path())
        .args(["keys", "create", "--name", name])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUNCONVERT_LOG", "warn")
        .output()
        .expect("run runconvert keys create");
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        key.starts_with("rc_") && !key.contains(char::is_whitespace),
        "unexpected key output {key:?}"
    );
    key
}

/// A server the tests start: its log level from `RUNCONVERT_LOG` (warn by default), its
/// stdout read by the test, its stderr the test's.
fn as_test_child(cmd: &mut Command) -> &mut Command {
    cmd.env(
        "RUNCONVERT_LOG",
        std::env::var("RUNCONVERT_LOG").unwrap_or_else(|_| "warn".into()),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
}

/// A running `runconvert serve`, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub base: String,
    pub key: String,
    pub other_key: String,
    args: Vec<String>,
    listen: String,
    pub http: reqwest::Client,
    /// What the server printed on stdout before it was ready.
    pub banner: Vec<String>,
    /// The descriptor limit it runs under (through `prlimit`), if one was set.
    nofile: Option<u64>,
    /// The local AWS stack instead of `runconvert serve`: what it printed (`BUCKET`,
    /// `TABLE`, `FRONT`...), by name.
    pub stack: Option<std::collections::HashMap<String, String>>,
}

impl Server {
    /// Starts a server with `args` added to `serve`; makes two users' keys first.
    pub async fn start(args: &[&str]) -> Server {
        let data_dir = unique_dir("data");
        let key = create_key(&data_dir, "alice");
        let other_key = create_key(&data_dir, "bob");
        Self::launch(data_dir, key, other_key, args).await
    }

    /// Starts a server on an empty data directory (no key made beforehand).
    pub async fn start_fresh(args: &[&str]) -> Server {
        Self::launch(unique_dir("fresh"), String::new(), String::new(), args).await
    }

    async fn launch(data_dir: PathBuf, key: String, other_key: String, args: &[&str]) -> Server {
        Self::launch_limited(data_dir, key, other_key, args, None).await
    }

    async fn launch_limited(
        data_dir: PathBuf,
        key: String,
        other_key: String,
        args: &[&str],
        nofile: Option<u64>,
    ) -> Server {
        let mut s = Server {
            child: None,
            data_dir,
            base: String::new(),
            key,
            other_key,
            args: args.iter().map(|s| s.to_string()).collect(),
            listen: "127.0.0.1:0".into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            banner: Vec::new(),
            nofile,
            stack: None,
        };
        s.spawn().await;
        s
    }

    /// Starts the local AWS stack (infra/local/stack.py: every function of template.yaml
    /// as its own process through the Lambda Runtime API, moto for the AWS services), with
    /// `args` added; the same helpers then drive it. It needs moto's venv
    /// (`bash tests/services.sh install moto`).
    pub async fn local_stack(args: &[&str]) -> Server {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let python = root.join("target/test-services/venv/bin/python");
        assert!(
            python.exists(),
            "moto's venv is missing: run `bash tests/services.sh install moto`"
        );
        let state = unique_dir("stack");
        let mut cmd = Command::new(&python);
        cmd.arg(root.join("infra/local/stack.py"))
            .arg("--bin-dir")
            .arg(bin_path().parent().unwrap())
            .arg("--state")
            .arg(&state)
            .args(args);
        let mut child = as_test_child(&mut cmd)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = std::collections::HashMap::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line == "READY" {
                break;
            }
            if let Some((k, v)) = line.split_once(' ') {
                printed.insert(k.to_string(), v.to_string());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let base = printed.get("API").cloned().expect("the local stack did not start");
        Server {
            child: Some(child),
            data_dir: state,
            base,
            key: printed["KEY"].clone(),
            other_key: printed["KEY2"].clone(),
            args: Vec::new(),
            listen: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            banner: Vec::new(),
            nofile: None,
            stack: Some(printed),
        }
    }

    /// What the local stack printed under `name` (`BUCKET`, `TABLE`, `FRONT`).
    pub fn stack_value(&self, name: &str) -> String {
        self.stack
            .as_ref()
            .and_then(|s| s.get(name))
            .cloned()
            .unwrap_or_default()
    }

    /// Starts a server (two users' keys made first) under a descriptor limit of `nofile`.
    pub async fn start_with_nofile(nofile: u64, args: &[&str]) -> Server {
        let data_dir = unique_dir("data");
        let key = create_key(&data_dir, "alice");
        let other_key = create_key(&data_dir, "bob");
        Self::launch_limited(data_dir, key, other_key, args, Some(nofile)).await
    }

    /// Stops the server as a user does (SIGTERM) and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running server");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().unwrap()
    }

    /// The server's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/<pid>/status")
            / 1024
    }

    async fn spawn(&mut self) {
        let mut cmd = match self.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin_path());
                c
            }
            None => Command::new(bin_path()),
        };
        cmd.arg("serve")
            .args(["--listen", &self.listen, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.args);
        let mut child = as_test_child(&mut cmd).spawn().expect("start runconvert serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut banner = Vec::new();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                banner.push(line.clone());
                if let Some(rest) = line.strip_prefix("RunConvert listening on ") {
                    let url = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send((url, banner.clone()));
                    break;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let (base, banner) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start within 30 s");
        self.base = base;
        self.banner = banner;
        self.child = Some(child);
        self.wait_healthy().await;
    }

    async fn wait_healthy(&self) {
        for _ in 0..100 {
            if let Ok(r) = self.http.get(self.url("/healthz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server never became healthy");
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Kills the server with SIGKILL (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.stack.is_some() {
                // SIGTERM: the stack stops every process it started (within 10 s).
                let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
                for _ in 0..150 {
                    if matches!(c.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = c.kill();
            } else {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }

    /// SIGKILL, then start again on the same address, data directory and arguments
    /// (links handed out before stay valid).
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.listen = self.base.trim_start_matches("http://").to_string();
        self.spawn().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get_as(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(key).send().await.unwrap();
        decode(r).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(&self.key, path).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap();
        decode(r).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_as(&self.key, path, body).await
    }

    pub async fn delete_as(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.delete(self.url(path)).bearer_auth(key).send().await.unwrap();
        decode(r).await
    }

    /// Creates a job and expects 201.
    pub async fn create_job(&self, body: Value) -> Value {
        let (status, job) = self.post("/v2/process/jobs", &body).await;
        assert_eq!(status, 201, "job creation failed: {job}");
        job
    }

    /// Waits (through `/wait`) until the job is final.
    pub async fn wait_job(&self, id: &str) -> Value {
        for _ in 0..10 {
            let (status, job) = self.get(&format!("/v2/process/jobs/{id}/wait?timeout=30")).await;
            assert_eq!(status, 200, "{job}");
            if matches!(job["status"].as_str(), Some("completed" | "failed")) {
                return job;
            }
        }
        panic!("job {id} did not end within 300 s");
    }

    /// Polls the job (every 20 ms, 5 s at most) until its task `name` is in `status`;
    /// false if it never was.
    pub async fn task_becomes(&self, job_id: &str, name: &str, status: &str) -> bool {
        for _ in 0..250 {
            let (_, j) = self.get(&format!("/v2/process/jobs/{job_id}")).await;
            if task(&j, name)["status"] == status {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub async fn run_job(&self, body: Value) -> Value {
        let job = self.create_job(body).await;
        self.wait_job(job["id"].as_str().unwrap()).await
    }

    /// Downloads a URL (a signed link) and returns status and bytes.
    pub async fn download(&self, url: &str) -> (u16, Vec<u8>) {
        let r = self.http.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    }

    /// Uploads `bytes` as `filename` through an import/upload task's form.
    pub async fn upload(&self, task: &Value, filename: &str, bytes: Vec<u8>) -> (u16, Value) {
        let form = &task["result"]["form"];
        let mut multipart = reqwest::multipart::Form::new();
        for (k, v) in form["parameters"].as_object().expect("form parameters") {
            multipart = multipart.text(k.clone(), v.as_str().unwrap().to_string());
        }
        multipart = multipart.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(filename.to_string()),
        );
        let r = self
            .http
            .post(form["url"].as_str().unwrap())
            .multipart(multipart)
            .send()
            .await
            .unwrap();
        decode(r).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub async fn decode(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(json!({"raw": text}))
    };
    (status, value)
}

/// The task of `job` called `name`.
pub fn task<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {job}"))
}

/// The file URLs of an export task.
pub fn urls(task: &Value) -> Vec<(String, String)> {
    task["result"]["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files in {task}"))
        .iter()
        .map(|f| {
            (
                f["filename"].as_str().unwrap().to_string(),
                f["url"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A loopback HTTP server for import/url: files of the corpus at `/corpus/...`, plus
/// misbehaving routes.
pub struct Fixture {
    pub base: String,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Fixture {
    pub async fn start() -> Fixture {
        use axum::extract::Path as AxPath;
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Redirect};
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/corpus/{*path}",
                get(|AxPath(p): AxPath<String>| async move {
                    if p.contains("..") {
                        return StatusCode::BAD_REQUEST.into_response();
                    }
                    match std::fs::read(corpus().join(&p)) {
                        Ok(bytes) => bytes.into_response(),
                        Err(_) => StatusCode::NOT_FOUND.into_response(),
                    }
                }),
            )
            .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
            .route(
                "/page",
                get(|| async {
                    axum::response::Html(
                        "<!doctype html><html><head><title>RunConvert test page</title><style>body{margin:0;background:#fff}\
                         #box{position:absolute;left:0;top:0;width:200px;height:100px;background:rgb(255,0,0)}\
                         p{position:absolute;top:150px;left:20px;font:24px sans-serif}</style></head>\
                         <body><div id=box></div><p>Captured by RunConvert</p></body></html>",
                    )
                }),
            )
            .route("/hang", get(|| async { std::future::pending::<()>().await }))
            .route(
                "/redirect-to/{*target}",
                get(|AxPath(t): AxPath<String>| async move { Redirect::temporary(&format!("/{t}")) }),
            )
            .route(
                "/slow/{secs}/{*path}",
                get(|AxPath((secs, p)): AxPath<(u64, String)>| async move {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    std::fs::read(corpus().join(p))
                        .map(|b| b.into_response())
                        .unwrap_or_else(|_| StatusCode::NOT_FOUND.into_response())
                }),
            )
            .route(
                "/trickle",
                get(|| async {
                    // A byte a second, for ever: never silent long enough for a read timeout.
                    let stream = futures_util::stream::unfold(0u64, |n| async move {
                        if n > 0 {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Some((Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"x")), n + 1))
                    });
                    axum::body::Body::from_stream(stream)
                }),
            )
            .route(
                "/endless",
                get(|| async {
                    let chunk = axum::body::Bytes::from(vec![0u8; 64 * 1024]);
                    let stream = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                    axum::body::Body::from_stream(stream)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fixture {
            base: format!("http://{addr}"),
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// Decodes image bytes and returns (width, height).
pub fn image_size(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).expect("the file decodes as an image");
    (img.width(), img.height())
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs a job with the given tasks plus an `export` of `export_from`, waits for it, and
/// returns the job and the downloaded files (name → bytes) of the export.
pub async fn run_and_download(
    s: &Server,
    mut tasks: serde_json::Map<String, Value>,
    export_from: &[&str],
) -> (Value, Vec<(String, Vec<u8>)>) {
    tasks.insert(
        "export".into(),
        json!({"operation": "export/url", "input": export_from, "ignore_error": true}),
    );
    let job = s.run_job(json!({"tasks": tasks})).await;
    let mut files = Vec::new();
    if task(&job, "export")["status"] == "finished" {
        for (name, url) in urls(task(&job, "export")) {
            let (status, bytes) = s.download(&url).await;
            assert_eq!(status, 200, "{name}");
            files.push((name, bytes));
        }
    }
    (job, files)
}

/// The SQLite database of a server's data directory, with its write-ahead log.
pub fn database_bytes(data_dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["runconvert.db", "runconvert.db-wal"] {
        if let Ok(b) = std::fs::read(data_dir.join(name)) {
            all.extend(b);
        }
    }
    all
}

/// Whether `needle` stands anywhere in `hay`.
pub fn bytes_contain(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Page count of a PDF.
pub fn pdf_pages(bytes: &[u8]) -> usize {
    lopdf::Document::load_mem(bytes).expect("a valid PDF").get_pages().len()
}

/// Renders page `page` of a PDF to RGB pixels with Poppler's pdftoppm at `dpi`.
pub fn render_page(bytes: &[u8], page: u32, dpi: u32) -> image::RgbImage {
    let dir = unique_dir("render");
    let pdf = dir.join("in.pdf");
    std::fs::write(&pdf, bytes).unwrap();
    let status = Command::new("pdftoppm")
        .args([
            "-png",
            "-r",
            &dpi.to_string(),
            "-f",
            &page.to_string(),
            "-l",
            &page.to_string(),
            "-singlefile",
        ])
        .arg(&pdf)
        .arg(dir.join("page"))
        .status()
        .expect("pdftoppm (poppler-utils) is installed");
    assert!(status.success());
    let img = image::open(dir.join("page.png")).unwrap().to_rgb8();
    let _ = std::fs::remove_dir_all(&dir);
    img
}

/// The mean absolute difference of two same-sized RGB images over a rectangle.
pub fn mean_diff(a: &image::RgbImage, b: &image::RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in y0..y1.min(a.height()) {
        for x in x0..x1.min(a.width()) {
            let (p, q) = (a.get_pixel(x, y), b.get_pixel(x, y));
            for i in 0..3 {
                sum += (p[i] as i32 - q[i] as i32).unsigned_abs() as u64;
            }
            n += 3;
        }
    }
    sum as f64 / n.max(1) as f64
}

/// An import/url task of a corpus file served by `fixture`.
pub fn import(fixture: &Fixture, rel: &str) -> Value {
    json!({"operation": "import/url", "url": fixture.url(&format!("/corpus/{rel}"))})
}

/// A tasks map from (name, task) pairs.
pub fn tasks(pairs: &[(&str, Value)]) -> serde_json::Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// The bytes of the downloaded file called `name`.
pub fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no file {name} in {:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>()))
        .1
}

/// The names `/v2/core/formats` lists.
pub async fn format_names(s: &Server) -> Vec<String> {
    let (status, formats) = s.get_as("", "/v2/core/formats").await;
    assert_eq!(status, 200);
    formats["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

/// A loopback fixture and a server allowed to reach it.
pub async fn server_with_fixture() -> (Fixture, Server) {
    (
        Fixture::start().await,
        Server::start(&["--allow-private-networks"]).await,
    )
}

/// A one-page PDF of `w`×`h` points drawing `content` (deflated when `deflate`).
pub fn one_page_pdf(w: i64, h: i64, content: &[u8], deflate: bool) -> Vec<u8> {
    use lopdf::{dictionary, Document, Object, Stream};
    use std::io::Write;
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let stream = if deflate {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(content).unwrap();
        Stream::new(dictionary! {"Filter" => "FlateDecode"}, z.finish().unwrap()).with_compression(false)
    } else {
        Stream::new(dictionary! {}, content.to_vec())
    };
    let content = doc.add_object(stream);
    let page = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content,
        "MediaBox" => vec![0.into(), 0.into(), Object::Integer(w), Object::Integer(h)],
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {"Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1}),
    );
    let catalog = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// A minimal Word document, written here, whose text is `text`.
pub fn docx(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("[Content_Types].xml", opts).unwrap();
        z.write_all(br#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#).unwrap();
        z.start_file("_rels/.rels", opts).unwrap();
        z.write_all(br#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#).unwrap();
        z.start_file("word/document.xml", opts).unwrap();
        write!(z, r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>"#).unwrap();
        z.finish().unwrap();
    }
    buf.into_inner()
}

/// A name no other run uses: `tag`, the process and the time.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// `base` with the fields of `extra` added.
pub fn merged(base: Value, extra: Value) -> Value {
    let mut m = base.as_object().unwrap().clone();
    m.extend(extra.as_object().unwrap().clone());
    Value::Object(m)
}

/// What a [`hook_receiver`] got: (event, raw body, signature header) per delivery.
pub type Got = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>, String)>>>;

/// A loopback receiver for webhooks, keeping each delivery's event, raw body and the
/// value of the signature header `signature` (empty when absent); its URL.
pub async fn hook_receiver(signature: &'static str) -> (String, Got) {
    let got: Got = Default::default();
    let g = got.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let g = g.clone();
        async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let sig = headers
                .get(signature)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            g.lock()
                .unwrap()
                .push((v["event"].as_str().unwrap_or_default().to_string(), body.to_vec(), sig));
            "ok"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, got)
}

/// HMAC-SHA256 of `body` under `key`, in lowercase hex: written out here (RFC 2104) so a
/// test checks the server's signatures against a computation of its own.
pub fn hmac_sha256_hex(key: &[u8], body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(body).finalize();
    hex::encode(Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize())
}
