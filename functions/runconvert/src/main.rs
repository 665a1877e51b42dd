//! `runconvert`: the embedded RunConvert server and its command line.
//!
//! Adapters of this binary: SQLite ([`store`]), the local disk ([`files`]), the tokio
//! executor ([`executor`]) and a log event sink ([`events`]). The API itself is the
//! shared router of `runconvert-http`.

mod conn;
mod events;
mod executor;
mod files;
mod oneshot;
mod slots;
mod store;
mod webhooks;

use clap::{Args, Parser, Subcommand};
use runconvert_connectors::http_import::DownloadLimits;
use runconvert_core::ports::{FileStore, JobStore};
use runconvert_core::Timestamp;
use runconvert_engines::EngineLimits;
use runconvert_http::local_files::{local_files_router, LocalFilesState, UrlSigner};
use runconvert_http::signing::Signer;
use runconvert_http::{api_router, ApiSettings, ApiState};
use runconvert_worker::{Worker, WorkerSettings};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "runconvert", version, about = "RunConvert: a file-conversion API server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the API server (SQLite, local disk, in-process executor).
    Serve(Box<ServeArgs>),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// List users (id, credits, rate limit).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Top up a user's credits.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// Convert a file here and now (no server): runconvert convert IN OUT [-o width=400]...
    Convert(OneShot),
    /// Make a thumbnail: runconvert thumbnail IN OUT.png [-o width=400]...
    Thumbnail(OneShot),
    /// Compress a PDF, JPEG or PNG: runconvert compress IN OUT [-o profile=web]...
    Compress(OneShot),
    /// Watermark an image or PDF: runconvert watermark IN OUT --text TEXT [-o opacity=30]...
    Watermark(OneShot),
    /// Recognise text: runconvert ocr IN OUT.txt|OUT.pdf [--language eng]
    Ocr(OneShot),
    /// Merge PDFs and images into one PDF: runconvert merge OUT.pdf IN... (output first)
    Merge(ManyToOne),
    /// Archive files: runconvert archive OUT.zip IN... (output first)
    Archive(ManyToOne),
}

#[derive(Args)]
struct OneShot {
    input: PathBuf,
    output: PathBuf,
    /// An option of the operation, as key=value (repeatable).
    #[arg(short = 'o', long = "option")]
    options: Vec<String>,
    /// Watermark text.
    #[arg(long)]
    text: Option<String>,
    /// OCR language(s), such as eng or eng+deu.
    #[arg(long)]
    language: Option<String>,
    #[command(flatten)]
    limits: OneShotLimits,
}

#[derive(Args)]
struct ManyToOne {
    output: PathBuf,
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[arg(short = 'o', long = "option")]
    options: Vec<String>,
    #[command(flatten)]
    limits: OneShotLimits,
}

#[derive(Args)]
struct OneShotLimits {
    #[arg(long = "max-pixels", env = "RUNCONVERT_MAX_PIXELS", default_value_t = 150_000_000)]
    max_pixels: u64,
    #[arg(long = "max-pages", env = "RUNCONVERT_MAX_PAGES", default_value_t = 2000)]
    max_pages: u32,
}

impl OneShotLimits {
    fn engine(&self) -> EngineLimits {
        EngineLimits {
            max_pixels: self.max_pixels,
            max_pages: self.max_pages,
            ..EngineLimits::default()
        }
    }
}

fn one_shot(
    operation: &str,
    inputs: &[PathBuf],
    output: &Path,
    text: Option<String>,
    options: &[String],
    limits: &OneShotLimits,
) -> Result<(), String> {
    let options = oneshot::parse_options(options)?;
    oneshot::run(operation, inputs, output, text, options, &limits.engine()).map(|_| ())
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a user with a new API key and print the key (only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Requests a minute for this key (default: the server's --rate-limit).
        #[arg(long = "rate-limit")]
        rate_limit: Option<u32>,
        /// Credits of the new user (default: unlimited). One credit per processing task.
        #[arg(long)]
        credits: Option<i64>,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Every user with their credits and rate limit.
    List {
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Add AMOUNT credits to a user (prints the new balance).
    Add {
        #[arg(long)]
        user: String,
        #[arg(long)]
        amount: i64,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Args, Clone)]
struct DataDir {
    /// Where the database and files live.
    #[arg(long = "data-dir", env = "RUNCONVERT_DATA_DIR", default_value = "runconvert-data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "RUNCONVERT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    data: DataDir,
    /// Base URL of upload forms and download links (default: http://LISTEN-ADDRESS).
    #[arg(long = "public-url", env = "RUNCONVERT_PUBLIC_URL")]
    public_url: Option<String>,
    /// Let import/url and other outbound connections reach loopback and private addresses.
    #[arg(long = "allow-private-networks", env = "RUNCONVERT_ALLOW_PRIVATE_NETWORKS")]
    allow_private_networks: bool,
    /// Refuse import/sftp and export/sftp tasks that give no `host_key` (by default the key
    /// the server presents is trusted and its fingerprint recorded in the task's result).
    #[arg(long = "sftp-require-host-key", env = "RUNCONVERT_SFTP_REQUIRE_HOST_KEY")]
    sftp_require_host_key: bool,
    /// Seconds an import/upload task waits for its file.
    #[arg(long = "upload-timeout", env = "RUNCONVERT_UPLOAD_TIMEOUT", default_value_t = 3600)]
    upload_timeout: u64,
    /// The longest a `/wait` or synchronous (`/sync/v2/*`) request is held, in seconds; a
    /// job still running then is answered as it stands, and the caller waits again.
    #[arg(long = "max-wait", env = "RUNCONVERT_MAX_WAIT", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    max_wait: u64,
    /// Seconds files and finished jobs are kept (and download links stay valid).
    #[arg(long, env = "RUNCONVERT_RETENTION", default_value_t = 86400)]
    retention: u64,
    /// Tasks run at once (default: the number of CPUs).
    #[arg(long, env = "RUNCONVERT_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Seconds a task may run when it does not set `timeout` itself.
    #[arg(long = "task-timeout", env = "RUNCONVERT_TASK_TIMEOUT", default_value_t = 3600)]
    task_timeout: u64,
    /// Times a task that was running when the server died is started again after a
    /// restart; past that it fails with `interrupted` (a file that kills the server
    /// cannot crash-loop it).
    #[arg(long = "task-restarts", env = "RUNCONVERT_TASK_RESTARTS", default_value_t = 2)]
    task_restarts: u32,
    /// Largest image (width × height) decoded.
    #[arg(long = "max-pixels", env = "RUNCONVERT_MAX_PIXELS", default_value_t = 150_000_000)]
    max_pixels: u64,
    /// Most pages a PDF may have.
    #[arg(long = "max-pages", env = "RUNCONVERT_MAX_PAGES", default_value_t = 2000)]
    max_pages: u32,
    /// Largest file an import may bring in, in bytes.
    #[arg(long = "max-file-size", env = "RUNCONVERT_MAX_FILE_SIZE", default_value_t = 1 << 30)]
    max_file_size: u64,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long = "tls-cert", env = "RUNCONVERT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", env = "RUNCONVERT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (behind a reverse proxy that does TLS).
    #[arg(long = "allow-plain-http", env = "RUNCONVERT_ALLOW_PLAIN_HTTP")]
    allow_plain_http: bool,
    /// Requests a minute per key when the key sets none (0: unlimited).
    #[arg(long = "rate-limit", env = "RUNCONVERT_RATE_LIMIT", default_value_t = 1200)]
    rate_limit: u32,
    /// Tasks one user may run at once (default: half of --concurrency, at least one).
    #[arg(long = "max-user-tasks", env = "RUNCONVERT_MAX_USER_TASKS")]
    max_user_tasks: Option<usize>,
    /// Seconds an import or export may wait on a silent server (connecting, or between two
    /// pieces of data) before it fails with `timeout`.
    #[arg(long = "transfer-timeout", env = "RUNCONVERT_TRANSFER_TIMEOUT", default_value_t = 30)]
    transfer_timeout: u64,
    /// Slowest an import may go, in bytes a second averaged over each --transfer-timeout
    /// window (a server that trickles data cannot hold a task slot); 0 for no floor.
    #[arg(
        long = "transfer-min-rate",
        env = "RUNCONVERT_TRANSFER_MIN_RATE",
        default_value_t = 1024
    )]
    transfer_min_rate: u64,
    /// Most memory, in MiB, each external tool (pdftoppm, Tesseract, FFmpeg, the
    /// LibreOffice of a cold conversion) may take; 0 for no limit.
    #[arg(long = "tool-memory", env = "RUNCONVERT_TOOL_MEMORY", default_value_t = 4096)]
    tool_memory: u64,
    /// Largest video frame (width × height) FFmpeg is given.
    #[arg(long = "max-video-pixels", env = "RUNCONVERT_MAX_VIDEO_PIXELS", default_value_t = 7680 * 4320)]
    max_video_pixels: u64,
    /// Most MiB a PDF's drawing instructions (content streams and forms, not images) may
    /// inflate to.
    #[arg(long = "max-pdf-content", env = "RUNCONVERT_MAX_PDF_CONTENT", default_value_t = 256)]
    max_pdf_content: u64,
    /// Longest audio or video input, in seconds.
    #[arg(long = "max-duration", env = "RUNCONVERT_MAX_DURATION", default_value_t = 4 * 3600)]
    max_duration: u64,
    /// Seconds a client has to send a request's headers, from the moment the connection
    /// opens or its previous answer went out (so also how long a kept-alive connection
    /// may sit idle); over HTTPS, the time to finish the TLS handshake.
    #[arg(long = "header-timeout", env = "RUNCONVERT_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Seconds an answer may go without a byte leaving (a client that stops reading it)
    /// before the connection is closed.
    #[arg(long = "idle-timeout", env = "RUNCONVERT_IDLE_TIMEOUT", default_value_t = 60)]
    idle_timeout: u64,
    /// Connections one client address may hold open at once (429 past it; 0: no cap).
    /// Behind a reverse proxy every client has the proxy's address: raise it, or give 0
    /// and let the proxy cap them.
    #[arg(
        long = "max-connections-per-ip",
        env = "RUNCONVERT_MAX_CONNECTIONS_PER_IP",
        default_value_t = 256
    )]
    max_connections_per_ip: usize,
    /// Connections open at once before new ones are shed with 503 (default: from the
    /// descriptor limit, leaving a quarter of it for files and tools).
    #[arg(long = "max-connections", env = "RUNCONVERT_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Lets anyone sign up in the dashboard: a new user and a first key (off by default:
    /// keys come from `runconvert keys create`).
    #[arg(long = "allow-signup", env = "RUNCONVERT_ALLOW_SIGNUP")]
    allow_signup: bool,
    /// The credits a signed-up user starts with (default: unlimited).
    #[arg(long = "signup-credits", env = "RUNCONVERT_SIGNUP_CREDITS")]
    signup_credits: Option<i64>,
    /// Seconds a webhook delivery keeps being retried after its event (default: a day).
    #[arg(
        long = "webhook-retry-horizon",
        env = "RUNCONVERT_WEBHOOK_RETRY_HORIZON",
        default_value_t = 86_400
    )]
    webhook_retry_horizon: u64,
    /// Longest wait, in seconds, between two attempts of a webhook delivery.
    #[arg(
        long = "webhook-max-backoff",
        env = "RUNCONVERT_WEBHOOK_MAX_BACKOFF",
        default_value_t = 3600
    )]
    webhook_max_backoff: u64,
    /// Azure Blob endpoint for import/azure/blob and export/azure/blob, `{account}` standing
    /// for the storage account (Azurite: http://127.0.0.1:10000/{account}).
    #[arg(long = "azure-blob-endpoint", env = "RUNCONVERT_AZURE_BLOB_ENDPOINT")]
    azure_blob_endpoint: Option<String>,
    /// A Google Cloud Storage emulator's base URL (requests go there without OAuth).
    #[arg(long = "gcs-emulator", env = "RUNCONVERT_GCS_EMULATOR")]
    gcs_emulator: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNCONVERT_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Keys {
            command:
                KeysCommand::Create {
                    name,
                    rate_limit,
                    credits,
                    data,
                },
        } => create_key(&name, rate_limit, credits, &data.data_dir),
        Command::Users {
            command: UsersCommand::List { data },
        } => list_users(&data.data_dir),
        Command::Credits {
            command: CreditsCommand::Add { user, amount, data },
        } => add_credits(&user, amount, &data.data_dir),
        Command::Convert(a) => one_shot("convert", &[a.input], &a.output, a.text, &a.options, &a.limits),
        Command::Thumbnail(a) => one_shot("thumbnail", &[a.input], &a.output, a.text, &a.options, &a.limits),
        Command::Compress(a) => one_shot("compress", &[a.input], &a.output, a.text, &a.options, &a.limits),
        Command::Watermark(a) => one_shot("watermark", &[a.input], &a.output, a.text, &a.options, &a.limits),
        Command::Ocr(a) => one_shot("ocr", &[a.input], &a.output, a.language, &a.options, &a.limits),
        Command::Merge(a) => one_shot("merge", &a.inputs, &a.output, None, &a.options, &a.limits),
        Command::Archive(a) => one_shot("archive", &a.inputs, &a.output, None, &a.options, &a.limits),
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
            .and_then(|rt| rt.block_on(serve(*args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runconvert: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_store(data_dir: &Path) -> Result<store::SqliteStore, String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let sealer = runconvert_core::secrets::Sealer::new(secrets_key(&signing_key(data_dir)?));
    store::SqliteStore::open(&data_dir.join("runconvert.db"), sealer).map_err(|e| e.to_string())
}

/// The key that seals task credentials at rest, derived from the signing key.
fn secrets_key(signing_key: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_key).expect("HMAC takes any key length");
    mac.update(b"runconvert task secrets v1");
    mac.finalize().into_bytes().into()
}

fn list_users(data_dir: &Path) -> Result<(), String> {
    let store = open_store(data_dir)?;
    println!("{:<36}  {:<20}  {:>10}  {:>12}", "id", "name", "credits", "rate/minute");
    for u in store.list_users().map_err(|e| e.to_string())? {
        let credits = u.credits.map(|c| c.to_string()).unwrap_or_else(|| "unlimited".into());
        let rate = u.rate_limit.map(|r| r.to_string()).unwrap_or_else(|| "default".into());
        println!("{:<36}  {:<20}  {credits:>10}  {rate:>12}", u.id, u.name);
    }
    Ok(())
}

fn add_credits(user: &str, amount: i64, data_dir: &Path) -> Result<(), String> {
    let store = open_store(data_dir)?;
    match store.add_credits(user, amount).map_err(|e| e.to_string())? {
        Some(balance) => {
            println!("{balance}");
            Ok(())
        }
        None => Err(format!("no user {user} (see `runconvert users list`)")),
    }
}

fn create_key(name: &str, rate_limit: Option<u32>, credits: Option<i64>, data_dir: &Path) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("--name must not be empty".into());
    }
    let store = open_store(data_dir)?;
    let (_, key) = store
        .create_user_with_key(name, rate_limit, credits)
        .map_err(|e| e.to_string())?;
    println!("{key}");
    Ok(())
}

/// The key that signs upload forms and download links: made once, kept in the data directory.
fn signing_key(data_dir: &Path) -> Result<Vec<u8>, String> {
    let path = data_dir.join("signing.key");
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() >= 32 {
            return Ok(bytes);
        }
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness: {e}"))?;
    let tmp = data_dir.join("signing.key.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(&key)
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(key)
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let data_dir = args.data.data_dir.clone();
    let store = Arc::new(open_store(&data_dir)?);
    if store.key_count().map_err(|e| e.to_string())? == 0 {
        let (_, key) = store
            .create_user_with_key("default", None, None)
            .map_err(|e| e.to_string())?;
        println!("Created the first API key (it is shown only this once; keep it): {key}");
    }

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = args.tls_cert.is_some();
    if !tls && !addr.ip().is_loopback() && !args.allow_plain_http {
        return Err(format!(
            "refusing to serve plain HTTP on {addr}: API keys would cross the network in clear. \
             Give --tls-cert and --tls-key, or, behind a reverse proxy that terminates TLS, --allow-plain-http"
        ));
    }
    let scheme = if tls { "https" } else { "http" };
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"))
        .trim_end_matches('/')
        .to_string();

    let urls = UrlSigner {
        signer: Signer::new(signing_key(&data_dir)?),
        public_url: public_url.clone(),
        name_in_query: false,
    };
    let files = Arc::new(files::DiskFileStore::new_checked(&data_dir, urls.clone())?);
    let registry = Arc::new(runconvert_worker::registry());
    tracing::info!(
        network = runconvert_engines::sandbox::isolation().describe(),
        "external tools (LibreOffice, Poppler, Tesseract, FFmpeg) run in"
    );
    let work_root = data_dir.join("work");
    // Work directories and scratch state left by a crash are of no use now.
    let _ = std::fs::remove_dir_all(&work_root);
    let scratch = data_dir.join("tmp");
    let _ = std::fs::remove_dir_all(&scratch);
    for dir in [&work_root, &scratch] {
        private_dir(dir)?;
    }
    runconvert_engines::scratch::set_root(&scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let retention = Duration::from_secs(args.retention);
    let worker = Arc::new(Worker {
        files: files.clone(),
        registry: registry.clone(),
        settings: WorkerSettings {
            work_root,
            allow_private_networks: args.allow_private_networks,
            download: DownloadLimits {
                max_bytes: args.max_file_size,
                connect_timeout: Duration::from_secs(args.transfer_timeout.clamp(1, 10)),
                read_timeout: Duration::from_secs(args.transfer_timeout.max(1)),
                min_rate: args.transfer_min_rate,
                deadline: Duration::from_secs(args.task_timeout.max(1)),
            },
            engine: EngineLimits {
                max_pixels: args.max_pixels,
                max_pages: args.max_pages,
                tool_timeout: Duration::from_secs(args.task_timeout),
                tool_memory: args.tool_memory << 20,
                max_video_pixels: args.max_video_pixels,
                max_duration: Duration::from_secs(args.max_duration),
                max_pdf_content: args.max_pdf_content << 20,
                ..EngineLimits::default()
            },
            retention,
            stores: runconvert_connectors::buckets::StoreSettings {
                azure_blob_endpoint: args.azure_blob_endpoint.clone(),
                gcs_emulator: args.gcs_emulator.clone(),
            },
            require_sftp_host_key: args.sftp_require_host_key,
        },
    });
    // Every task's and job's end is published here: it also wakes those waiting for it.
    let changes = Arc::new(runconvert_http::changes::JobChanges::live());
    let events: Arc<dyn runconvert_core::ports::EventSink> = Arc::new(runconvert_http::changes::Notifying {
        inner: Arc::new(events::LogEvents),
        changes: changes.clone(),
    });
    let concurrency = args
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let per_user = args.max_user_tasks.unwrap_or((concurrency / 2).max(1));
    let max_connections = args.max_connections.unwrap_or_else(conn::connection_budget);
    let executor = executor::Executor::new(
        store.clone(),
        events.clone(),
        worker,
        concurrency,
        per_user,
        Duration::from_secs(args.task_timeout),
        args.task_restarts,
    );

    let api = Arc::new(ApiState {
        jobs: store.clone(),
        keys: store.clone(),
        files: files.clone(),
        dispatcher: executor.clone(),
        events,
        webhooks: store.clone(),
        guard: Arc::new(runconvert_connectors::Guard::new(args.allow_private_networks)),
        registry,
        settings: ApiSettings {
            upload_timeout: Duration::from_secs(args.upload_timeout),
            max_wait: Duration::from_secs(args.max_wait),
            rate_limit_per_minute: args.rate_limit,
            reported_limits: serde_json::json!({
                "max_file_size_bytes": args.max_file_size,
                "max_pixels": args.max_pixels,
                "max_pages": args.max_pages,
                "task_timeout_seconds": args.task_timeout,
                "task_restarts": args.task_restarts,
                "transfer_timeout_seconds": args.transfer_timeout,
                "concurrent_tasks": concurrency,
                "transfer_min_rate_bytes_per_second": args.transfer_min_rate,
                "tool_memory_mib": args.tool_memory,
                "max_video_pixels": args.max_video_pixels,
                "max_duration_seconds": args.max_duration,
                "max_pdf_content_mib": args.max_pdf_content,
                "max_media_streams": EngineLimits::default().max_streams,
                "max_upload_form_fields": runconvert_http::local_files::MAX_FORM_FIELDS,
                "max_upload_form_field_bytes": runconvert_http::local_files::MAX_FORM_FIELD_BYTES,
                "header_timeout_seconds": args.header_timeout,
                "stalled_answer_timeout_seconds": args.idle_timeout,
                "max_connections_per_ip": args.max_connections_per_ip,
                "max_connections": max_connections,
                "max_concurrent_tasks_per_user": per_user,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
            dashboard: runconvert_http::dashboard::DashboardSettings {
                signer: Some(Signer::derived(
                    &signing_key(&data_dir)?,
                    "runconvert dashboard sessions v1",
                )),
                secure_cookies: tls || public_url.starts_with("https://"),
                allow_signup: args.allow_signup,
                signup_credits: args.signup_credits,
            },
            ..ApiSettings::default()
        },
        limiter: Default::default(),
        changes,
    });
    let local = Arc::new(LocalFilesState {
        api: api.clone(),
        urls,
        local: files.clone(),
        max_upload_bytes: args.max_file_size,
        uploads: Default::default(),
    });
    let app = api_router(api).merge(local_files_router(local));

    let sender = runconvert_connectors::webhook::Sender::new(
        runconvert_connectors::Guard::new(args.allow_private_networks),
        Duration::from_secs(10),
    )?;
    let max_backoff = Duration::from_secs(args.webhook_max_backoff.max(1));
    webhooks::Relay::new(
        store.clone(),
        sender,
        runconvert_core::webhooks::RetryPolicy {
            first_backoff: Duration::from_secs(5).min(max_backoff),
            max_backoff,
            horizon: Duration::from_secs(args.webhook_retry_horizon),
        },
    )
    .spawn();

    let resumed = executor
        .resume()
        .await
        .map_err(|e| format!("cannot resume jobs: {e}"))?;
    if resumed > 0 {
        tracing::info!(jobs = resumed, "resumed unfinished jobs");
    }
    executor.spawn_sweep(Duration::from_secs(10));
    tokio::spawn(sweep_expired(store.clone(), files.clone(), retention));

    let limits = conn::ConnLimits {
        per_ip: args.max_connections_per_ip,
        total: max_connections.max(1),
        idle: Duration::from_secs(args.idle_timeout.max(1)),
        busy: Duration::from_secs(args.idle_timeout.max(1)).max(CONNECTION_BUSY_SILENCE),
        tls,
    };
    let header_timeout = Duration::from_secs(args.header_timeout.max(1));
    let handle = axum_server::Handle::new();
    let stop = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let std_listener = listener.into_std().map_err(|e| e.to_string())?;
    let served = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
            .await
            .map_err(|e| format!("cannot use {} and {}: {e}", cert.display(), key.display()))?;
        // HTTP/1.1 only, offered as such: the connection guard's timers follow one
        // request at a time (a client offered h2 would take it and find no server).
        let mut tls_config = (*config.get_inner()).clone();
        tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.reload_from_config(Arc::new(tls_config));
        // Browsers (and clients that honour it) stay on HTTPS for a year.
        let app = app.layer(axum::middleware::map_response(
            |mut resp: axum::response::Response| async move {
                resp.headers_mut().insert(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static("max-age=31536000"),
                );
                resp
            },
        ));
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
            .handshake_timeout(header_timeout)
            .acceptor(conn::Guarded::new(limits));
        let mut server = axum_server::from_tcp(std_listener)
            .map_err(|e| e.to_string())?
            .acceptor(acceptor)
            .first_request_timeout(header_timeout)
            // HTTP/1 only: the connection guard's timers follow one request at a time.
            .http1_only()
            .handle(handle);
        server.http_builder().http1().header_read_timeout(header_timeout);
        println!(
            "RunConvert listening on https://{addr} (public URL {public_url}, data in {})",
            data_dir.display()
        );
        server
            .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .await
    } else {
        let mut server = axum_server::from_tcp(std_listener)
            .map_err(|e| e.to_string())?
            .acceptor(conn::Guarded::new(limits))
            .first_request_timeout(header_timeout)
            // HTTP/1 only: the connection guard's timers follow one request at a time.
            .http1_only()
            .handle(handle);
        server.http_builder().http1().header_read_timeout(header_timeout);
        println!(
            "RunConvert listening on http://{addr} (public URL {public_url}, data in {})",
            data_dir.display()
        );
        server
            .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .await
    };
    // A clean stop leaves no scratch state behind (LibreOffice's profiles).
    runconvert_engines::scratch::remove_all();
    served.map_err(|e| format!("server error: {e}"))
}

/// How long a connection with a request open may go without a byte either way: longer
/// than the longest wait an API call holds (`/wait` up to 300 s).
const CONNECTION_BUSY_SILENCE: Duration = Duration::from_secs(600);

/// Makes `dir` (and its parents) with mode 0700: tasks' files are nobody else's to read.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

impl files::DiskFileStore {
    fn new_checked(data_dir: &Path, urls: UrlSigner) -> Result<Self, String> {
        files::DiskFileStore::new(data_dir, urls).map_err(|e| format!("cannot prepare {}: {e}", data_dir.display()))
    }
}

/// Deletes finished jobs and their files once the retention period has passed.
async fn sweep_expired(jobs: Arc<store::SqliteStore>, files: Arc<files::DiskFileStore>, retention: Duration) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        let cutoff = Timestamp(Timestamp::now().millis() - retention.as_millis() as i64);
        match jobs.jobs_ended_before(cutoff).await {
            Ok(expired) => {
                for (job_id, user_id) in expired {
                    if let Err(e) = files.delete_job_files(&job_id).await {
                        tracing::warn!(job = %job_id, error = %e, "could not delete expired files");
                        continue;
                    }
                    let _ = jobs.delete_job(&user_id, &job_id).await;
                    tracing::info!(job = %job_id, "deleted after the retention period");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
        sweep_orphans(&jobs, &files).await;
        if let Err(e) = jobs.prune_outbox(cutoff).await {
            tracing::warn!(error = %e, "could not prune the webhook outbox");
        }
        tokio::time::sleep(every).await;
    }
}

/// Removes files that belong to no job: a job's directory made by an upload or a task
/// that ended after its job was deleted, and staged uploads that were abandoned.
async fn sweep_orphans(jobs: &store::SqliteStore, files: &files::DiskFileStore) {
    use runconvert_core::ports::JobStore;
    // A directory younger than this may belong to a job being created right now.
    const SETTLE: Duration = Duration::from_secs(60);
    let now = std::time::SystemTime::now();
    for (job_id, modified) in files.job_dirs() {
        if now.duration_since(modified).unwrap_or_default() < SETTLE {
            continue;
        }
        if let Ok(None) = jobs.get_job(None, &job_id).await {
            if files.delete_job_files(&job_id).await.is_ok() {
                tracing::info!(job = %job_id, "removed files of a job that no longer exists");
            }
        }
    }
    let staged = files.sweep_staging(STAGING_IDLE);
    if staged > 0 {
        tracing::info!(files = staged, "removed abandoned uploads");
    }
}

/// How long a staged upload may go unwritten before it counts as abandoned.
/// Longer than a connection may stay silent with a request open (CONNECTION_BUSY_SILENCE).
const STAGING_IDLE: Duration = Duration::from_secs(1200);

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
