//! RunConvert on AWS: adapters of the core ports over DynamoDB ([`dynamo`]), S3
//! ([`s3files`]), Step Functions and SQS ([`dispatch`]), and the Lambda handlers the
//! state machine and the API run ([`Aws`]'s methods). The binaries in `src/bin` are
//! thin: they read the environment and hand events to these handlers.
//!
//! The state machines (`statemachine/job.asl.json` and `job-express.asl.json`, generated
//! by [`definition`]) run one execution per job, shaped by its graph. Standard: an
//! iteration per task, which waits for its own inputs (a task token released by the job
//! function, [`steps`], or by the function of the input, [`Aws::work`]) and invokes its
//! operation's function. Express (no uploads): the tasks by depth, handed to a standard
//! execution if they outgrow it. The final state sends `{job_id, outcome}` to SQS for the
//! webhook function.

pub mod definition;
pub mod dispatch;
pub mod dynamo;
pub mod s3files;
pub mod steps;

use dispatch::{SfnDispatcher, SqsEvents};
use dynamo::DynamoStore;
use runconvert_connectors::http_import::DownloadLimits;
use runconvert_connectors::webhook::Sender;
use runconvert_core::error::codes;
use runconvert_core::model::{Task, TaskResult, TaskStatus};
use runconvert_core::ports::{Event, EventName, EventSink, JobStore, TaskTransition, WebhookStore};
use runconvert_core::secrets::Sealer;
use runconvert_core::webhooks::{self, Delivery, DeliveryStatus, Outcome};
use runconvert_core::{new_id, TaskError, Timestamp};
use runconvert_engines::{EngineLimits, Progress};
use runconvert_http::{ApiSettings, ApiState};
use runconvert_worker::{Worker, WorkerSettings};
use s3files::{S3FileStore, Signing};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Everything a handler needs, built once per Lambda instance from its environment.
pub struct Aws {
    pub store: Arc<DynamoStore>,
    pub files: Arc<S3FileStore>,
    pub events: Arc<dyn EventSink>,
    pub sfn: aws_sdk_sfn::Client,
    pub worker: Worker,
    pub env: Env,
}

/// The settings of a deployment (environment variables the template sets).
#[derive(Debug, Clone)]
pub struct Env {
    pub table: String,
    pub bucket: String,
    pub state_machine_arn: Option<String>,
    /// The Express state machine jobs with no upload start on (`EXPRESS_STATE_MACHINE_ARN`).
    pub express_state_machine_arn: Option<String>,
    /// Seconds of an Express execution's five minutes its tasks may use; a task that would
    /// start later, or run past them, goes on in a standard execution
    /// (`EXPRESS_BUDGET_SECONDS`).
    pub express_budget: Duration,
    pub queue_url: Option<String>,
    /// An S3-compatible endpoint (an emulator); AWS's own when unset.
    pub endpoint: Option<String>,
    pub allow_private_networks: bool,
    /// SFTP tasks must give `host_key` (`SFTP_REQUIRE_HOST_KEY`).
    pub sftp_require_host_key: bool,
    pub max_file_size: u64,
    pub retention: Duration,
    pub upload_timeout: Duration,
    pub task_timeout: Duration,
    /// The SSM SecureString holding the sealing key (`SEALING_KEY_PARAMETER`), given only
    /// to the functions that open task credentials or webhook secrets, or sign links: the
    /// API, import, export and webhook functions.
    pub sealing_key_parameter: Option<String>,
    /// The sealing key (32 bytes; 64 hex digits in SSM), read from that parameter when the
    /// function starts: seals task credentials and webhook secrets in DynamoDB, and
    /// (derived) signs download links. `None` in the other functions.
    pub sealing_key: Option<[u8; 32]>,
    /// The API's public base URL (`API_URL`): download links go through it.
    pub api_url: Option<String>,
    /// The longest `/wait` (`API_MAX_WAIT_SECONDS`): under the API function's timeout.
    pub max_wait: Duration,
    /// `DEPLOYED_TOOLS`: the tools the deployment's tool functions carry (`pdftoppm`,
    /// `tesseract`, `ffmpeg`, `soffice`, `chromium`). Set on the functions that accept
    /// and route work (API, job), which have none themselves: what they accept is what
    /// the deployment runs. Unset (the workers): the tools on this function's PATH.
    pub deployed_tools: Option<Vec<String>>,
    /// Where Azure Blob and Google Cloud Storage requests go (`AZURE_BLOB_ENDPOINT`, with
    /// `{account}`; `GCS_EMULATOR_URL`): the public services when unset.
    pub stores: runconvert_connectors::buckets::StoreSettings,
    /// How webhook deliveries are retried (`WEBHOOK_FIRST_BACKOFF_SECONDS`,
    /// `WEBHOOK_HORIZON_SECONDS`; 5 s doubling to an hour, for a day, by default).
    pub webhook_retry: webhooks::RetryPolicy,
    /// The dashboard lets anyone sign up (`ALLOW_SIGNUP`), with `SIGNUP_CREDITS` credits
    /// (unlimited when unset).
    pub allow_signup: bool,
    pub signup_credits: Option<i64>,
}

impl Env {
    /// Signs and checks download links (`/v2/files/...` on the API): a key of its own,
    /// derived from the sealing key, so the two never stand in for each other.
    pub fn link_signer(&self, api_url: &str) -> Result<runconvert_http::local_files::UrlSigner, String> {
        let key = self
            .sealing_key
            .ok_or("download links need the sealing key: set SEALING_KEY_PARAMETER")?;
        Ok(runconvert_http::local_files::UrlSigner {
            signer: runconvert_http::signing::Signer::derived(&key, "runconvert download links v1"),
            public_url: api_url.trim_end_matches('/').to_string(),
            // API Gateway hands the function its path decoded.
            name_in_query: true,
        })
    }
}

impl Env {
    pub fn from_env() -> Result<Env, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let need = |k: &str| var(k).ok_or_else(|| format!("{k} is not set"));
        let num = |k: &str, default: u64| var(k).and_then(|v| v.parse().ok()).unwrap_or(default);
        Ok(Env {
            table: need("TABLE_NAME")?,
            bucket: need("BUCKET_NAME")?,
            state_machine_arn: var("STATE_MACHINE_ARN"),
            express_state_machine_arn: var("EXPRESS_STATE_MACHINE_ARN"),
            express_budget: Duration::from_secs(num("EXPRESS_BUDGET_SECONDS", 240).min(280)),
            queue_url: var("QUEUE_URL"),
            endpoint: var("AWS_ENDPOINT_URL"),
            allow_private_networks: var("ALLOW_PRIVATE_NETWORKS").is_some_and(|v| v == "true" || v == "1"),
            sftp_require_host_key: var("SFTP_REQUIRE_HOST_KEY").is_some_and(|v| v == "true" || v == "1"),
            allow_signup: var("ALLOW_SIGNUP").is_some_and(|v| v == "true" || v == "1"),
            signup_credits: var("SIGNUP_CREDITS").and_then(|v| v.parse().ok()),
            max_file_size: num("MAX_FILE_SIZE_BYTES", 1 << 30),
            retention: Duration::from_secs(num("RETENTION_DAYS", 1) * 86_400),
            upload_timeout: Duration::from_secs(num("UPLOAD_TIMEOUT_SECONDS", 3600)),
            task_timeout: Duration::from_secs(num("TASK_TIMEOUT_SECONDS", 840)),
            sealing_key_parameter: var("SEALING_KEY_PARAMETER"),
            sealing_key: None,
            api_url: var("API_URL"),
            max_wait: Duration::from_secs(num("API_MAX_WAIT_SECONDS", 25)),
            deployed_tools: var("DEPLOYED_TOOLS").map(|v| {
                v.split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect()
            }),
            stores: runconvert_connectors::buckets::StoreSettings {
                azure_blob_endpoint: var("AZURE_BLOB_ENDPOINT"),
                gcs_emulator: var("GCS_EMULATOR_URL"),
            },
            webhook_retry: webhooks::RetryPolicy {
                first_backoff: Duration::from_secs(num("WEBHOOK_FIRST_BACKOFF_SECONDS", 5)),
                horizon: Duration::from_secs(num("WEBHOOK_HORIZON_SECONDS", 86_400)),
                ..webhooks::RetryPolicy::default()
            },
        })
    }
}

/// The sealing key from its SSM SecureString (64 hex digits), decrypted by SSM.
async fn sealing_key(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<[u8; 32], String> {
    let out = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| format!("cannot read the sealing key from SSM parameter {name}: {e:?}"))?;
    let hex_key = out.parameter().and_then(|p| p.value()).unwrap_or_default();
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut key)
        .map_err(|_| format!("SSM parameter {name} must hold 64 hexadecimal digits"))?;
    Ok(key)
}

/// Events go to SQS when a queue is configured, else only to the log.
struct LogOnly;

#[async_trait::async_trait]
impl EventSink for LogOnly {
    async fn publish(&self, event: Event) -> runconvert_core::ports::PortResult<()> {
        tracing::info!(event = event.name().as_str(), job = event.job_id(), "event");
        Ok(())
    }
}

impl Aws {
    pub async fn from_env() -> Result<Aws, String> {
        Self::with_env(Env::from_env()?).await
    }

    pub async fn with_env(mut env: Env) -> Result<Aws, String> {
        let began = std::time::Instant::now();
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let config_ms = began.elapsed().as_secs_f64() * 1e3;
        if let Some(name) = &env.sealing_key_parameter {
            env.sealing_key = Some(sealing_key(&aws_sdk_ssm::Client::new(&sdk), name).await?);
        }
        tracing::debug!(
            config_ms,
            key_ms = began.elapsed().as_secs_f64() * 1e3 - config_ms,
            "sdk"
        );
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let mut s3conf = aws_sdk_s3::config::Builder::from(&sdk);
        if env.endpoint.is_some() {
            s3conf = s3conf.force_path_style(true);
        }
        let s3 = aws_sdk_s3::Client::from_conf(s3conf.build());
        let sfn = aws_sdk_sfn::Client::new(&sdk);
        let store = Arc::new(DynamoStore::new(
            dynamo,
            env.table.clone(),
            env.sealing_key.map(Sealer::new),
            env.retention,
        ));
        let mut files = S3FileStore::new(
            s3,
            env.bucket.clone(),
            env.endpoint.clone(),
            Signing::from_env(),
            env.max_file_size,
        );
        if let Some(api_url) = &env.api_url {
            files = files.with_links(env.link_signer(api_url)?);
        }
        let files = Arc::new(files);
        let events: Arc<dyn EventSink> = match &env.queue_url {
            Some(q) => Arc::new(SqsEvents {
                client: aws_sdk_sqs::Client::new(&sdk),
                queue_url: q.clone(),
                store: store.clone(),
            }),
            None => Arc::new(LogOnly),
        };
        let work_root = std::env::temp_dir().join("runconvert-work");
        std::fs::create_dir_all(&work_root).map_err(|e| format!("cannot make {}: {e}", work_root.display()))?;
        let worker = Worker {
            files: files.clone(),
            registry: Arc::new(match &env.deployed_tools {
                Some(tools) => {
                    runconvert_worker::registry_declared(&tools.iter().map(String::as_str).collect::<Vec<_>>())
                }
                None => runconvert_worker::registry_with(false),
            }),
            settings: WorkerSettings {
                work_root,
                allow_private_networks: env.allow_private_networks,
                download: DownloadLimits {
                    max_bytes: env.max_file_size,
                    ..DownloadLimits::default()
                },
                engine: EngineLimits {
                    tool_timeout: env.task_timeout,
                    ..EngineLimits::default()
                },
                retention: env.retention,
                stores: env.stores.clone(),
                require_sftp_host_key: env.sftp_require_host_key,
            },
        };
        Ok(Aws {
            store,
            files,
            events,
            sfn,
            worker,
            env,
        })
    }

    /// The API's state: the same router as the embedded server, over these adapters.
    pub fn api_state(&self) -> Arc<ApiState> {
        Arc::new(ApiState {
            jobs: self.store.clone(),
            keys: self.store.clone(),
            files: self.files.clone(),
            dispatcher: Arc::new(SfnDispatcher {
                client: self.sfn.clone(),
                state_machine_arn: self.env.state_machine_arn.clone().unwrap_or_default(),
                express_arn: self.env.express_state_machine_arn.clone(),
            }),
            events: self.events.clone(),
            webhooks: self.store.clone(),
            guard: Arc::new(runconvert_connectors::Guard::new(self.env.allow_private_networks)),
            registry: self.worker.registry.clone(),
            settings: ApiSettings {
                upload_timeout: self.env.upload_timeout,
                max_wait: self.env.max_wait,
                // DynamoDB items hold at most 400 KB: long payloads go to S3.
                inline_payload_bytes: Some(64 << 10),
                dashboard: runconvert_http::dashboard::DashboardSettings {
                    signer: self
                        .env
                        .sealing_key
                        .map(|k| runconvert_http::signing::Signer::derived(&k, "runconvert dashboard sessions v1")),
                    // API Gateway is reached over HTTPS only.
                    secure_cookies: true,
                    allow_signup: self.env.allow_signup,
                    signup_credits: self.env.signup_credits,
                },
                ..ApiSettings::default()
            },
            // Per Lambda instance: API Gateway's own throttling is the account-wide limit.
            limiter: Default::default(),
            // Tasks end in other functions: nobody here is told (waiters read on a backoff).
            changes: Default::default(),
        })
    }

    /// The API function's router: the API, and the download links that redirect to S3.
    pub fn api_router(&self) -> Result<axum::Router, String> {
        let links = self.env.link_signer(self.env.api_url.as_deref().unwrap_or_default())?;
        Ok(
            runconvert_http::api_router(self.api_state()).merge(runconvert_http::local_files::redirect_files_router(
                links,
                self.files.clone(),
            )),
        )
    }

    async fn end_task(
        &self,
        task: &Task,
        from: TaskStatus,
        outcome: Result<TaskResult, TaskError>,
    ) -> Result<(), String> {
        let ended = runconvert_core::ports::end_task(&*self.store, &task.id, from, outcome)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(event) = ended {
            let _ = self.events.publish(event).await;
        }
        Ok(())
    }

    /// A worker state: `{job_id, task_id}` → runs the task, records its end. A task that
    /// is not waiting any more (a retried invocation) is left alone.
    pub async fn work(&self, input: Value) -> Result<Value, String> {
        let job_id = input["job_id"].as_str().ok_or("no job_id")?;
        let task_id = input["task_id"].as_str().ok_or("no task_id")?;
        let Some(job) = self.store.get_job(None, job_id).await.map_err(|e| e.to_string())? else {
            return Ok(json!({"status": "gone"}));
        };
        let Some(task) = job.task(task_id).cloned() else {
            return Ok(json!({"status": "gone"}));
        };
        let begin = TaskTransition {
            task_id: task.id.clone(),
            from: TaskStatus::Waiting,
            to: TaskStatus::Processing,
            at: Timestamp::now(),
            code: None,
            message: None,
            result: None,
        };
        if !self.store.transition_task(&begin).await.map_err(|e| e.to_string())? {
            return Ok(json!({"status": "already started"}));
        }
        let limit = task.timeout.map(Duration::from_secs).unwrap_or(self.env.task_timeout);
        let outcome = match tokio::time::timeout(limit, self.worker.run(&job, &task, Progress::default())).await {
            Ok(r) => r,
            Err(_) => Err(TaskError::new(
                codes::TIMEOUT,
                format!("the task ran longer than its {} s", limit.as_secs()),
            )),
        };
        let failed = outcome.is_err();
        self.end_task(&task, TaskStatus::Processing, outcome).await?;
        // The tasks waiting for this one may go on (standard executions; an express one
        // has no tokens, and this is one Query). Boxed: the task's future is deep already.
        Box::pin(self.nudge(job_id)).await?;
        Ok(json!({"status": if failed { "failed" } else { "finished" }}))
    }

    /// One webhook queue message: its event to every subscription of the job's owner that
    /// wants it, and to the job's own webhook_url for its final event. With more than one
    /// receiver, the event is handed on as one message per receiver
    /// ([`Deliver::FanOut`], each in a message group of its job and receiver), so a
    /// receiver that fails holds back only its own later events. Each receiver's attempts
    /// are recorded (`Delivery`, also what `/v2/webhooks/{id}/deliveries` shows): a
    /// receiver that answered is not sent the event again, one that failed is tried again
    /// with [`webhooks::RetryPolicy`]'s backoff until its horizon, and a 410 disables the
    /// subscription. [`Deliver::Retry`]: the receiver is to be tried again after the wait
    /// (the message comes back then; the queue is FIFO per group, so its later events wait
    /// behind it and each receiver gets a job's events in order).
    pub async fn deliver(&self, message: &str, sender: &Sender) -> Result<Deliver, String> {
        let m: Value = serde_json::from_str(message).map_err(|e| format!("bad message: {e}"))?;
        let job_id = m["job_id"].as_str().ok_or("no job_id")?;
        let job = self.store.get_job(None, job_id).await.map_err(|e| e.to_string())?;
        let (body, user_id) = match (&m["body"], m["outcome"].as_str(), &job) {
            (b, _, Some(job)) if b.is_object() => (b.clone(), job.user_id.clone()),
            (_, Some(outcome), Some(job)) => {
                let name = if outcome == "completed" {
                    EventName::JobFinished
                } else {
                    EventName::JobFailed
                };
                (Event::job(name, job.clone()).payload(), job.user_id.clone())
            }
            _ => return Ok(Deliver::Done), // the job was deleted, or its end was announced already
        };
        let event = body["event"].as_str().unwrap_or_default().to_string();
        let Some(name) = EventName::ALL.into_iter().find(|n| n.as_str() == event) else {
            return Err(format!("unknown event {event:?}"));
        };
        // (subscription id or the job's own key, the user's subscription id, url, secret,
        // signing)
        let mut targets: Vec<(String, Option<String>, String, String, webhooks::Signing)> = self
            .store
            .list_webhooks(&user_id)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|h| webhooks::wants(h, name))
            .map(|h| (h.id.clone(), Some(h.id), h.endpoint_url, h.secret, h.signing))
            .collect();
        if let Some(job) = &job {
            if let (Some(url), Some(secret), true) =
                (&job.webhook_url, &job.webhook_secret, webhooks::job_url_wants(name))
            {
                let signing = job.webhook_signing;
                targets.push((format!("JOB-{job_id}"), None, url.clone(), secret.clone(), signing));
            }
        }
        match m["receiver"].as_str() {
            Some(one) => targets.retain(|t| t.0 == one),
            None if targets.len() > 1 => {
                return Ok(Deliver::FanOut(
                    targets
                        .iter()
                        .map(|t| {
                            let m = json!({ "job_id": job_id, "body": body, "receiver": t.0 });
                            (format!("{job_id}:{}", t.0), m.to_string())
                        })
                        .collect(),
                ))
            }
            None => {}
        }
        let event_id = format!("{job_id}:{event}:{}", body["task"]["id"].as_str().unwrap_or(""));
        let mut again: Option<Duration> = None;
        for (key, hook, url, secret, signing) in targets {
            let now = Timestamp::now();
            let before = self
                .store
                .find_delivery(&key, &event_id)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(d) = &before {
                match (d.status, d.next_attempt_at) {
                    (DeliveryStatus::Delivered | DeliveryStatus::Failed, _) => continue,
                    (DeliveryStatus::Pending, Some(next)) if next > now => {
                        again = Some(sooner(again, next, now));
                        continue;
                    }
                    _ => {}
                }
            }
            let attempts = before.as_ref().map_or(0, |d| d.attempts) + 1;
            let created_at = before.as_ref().map_or(now, |d| d.created_at);
            let raw = signing.body(&body).to_string();
            let outcome = sender
                .send(&url, signing, &secret, &event_id, &raw, now.millis() / 1000)
                .await;
            let jitter = (now.millis() % 1000) as f64 / 1000.0;
            let (status, code, error, next) = match &outcome {
                Outcome::Delivered(c) => (DeliveryStatus::Delivered, Some(*c), None, None),
                Outcome::Retry { status, error } => {
                    match self.env.webhook_retry.next_attempt(created_at, now, attempts, jitter) {
                        Some(at) => (DeliveryStatus::Pending, *status, Some(error.clone()), Some(at)),
                        None => (
                            DeliveryStatus::Failed,
                            *status,
                            Some(format!("{error}; given up after {attempts} attempts")),
                            None,
                        ),
                    }
                }
                Outcome::Gone => (
                    DeliveryStatus::Failed,
                    Some(410),
                    Some("the receiver answered 410 Gone; the subscription is disabled".to_string()),
                    None,
                ),
                Outcome::Rejected { status, error } => (DeliveryStatus::Failed, *status, Some(error.clone()), None),
            };
            if let (Outcome::Gone, Some(id)) = (&outcome, &hook) {
                self.store
                    .disable_webhook(&user_id, id, "the receiver answered 410 Gone")
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if let Some(at) = next {
                again = Some(sooner(again, at, now));
            }
            let d = Delivery {
                id: before.as_ref().map_or_else(new_id, |d| d.id.clone()),
                event_id: event_id.clone(),
                event: event.clone(),
                job_id: job_id.to_string(),
                status,
                attempts,
                last_status_code: code,
                last_error: error,
                created_at,
                next_attempt_at: next,
                delivered_at: (status == DeliveryStatus::Delivered).then_some(now),
            };
            self.store.record_delivery(&key, &d).await.map_err(|e| e.to_string())?;
        }
        Ok(again.map_or(Deliver::Done, Deliver::Retry))
    }
}

/// What became of a webhook queue message ([`Aws::deliver`]).
#[derive(Debug)]
pub enum Deliver {
    /// Every receiver has had it (or has been given up).
    Done,
    /// A receiver is to be tried again after this long.
    Retry(Duration),
    /// To be sent on as these messages, (message group, body), one per receiver.
    FanOut(Vec<(String, String)>),
}

/// The sooner of `wait` and the time from `now` until `at`.
fn sooner(wait: Option<Duration>, at: Timestamp, now: Timestamp) -> Duration {
    let until = Duration::from_millis((at.millis() - now.millis()).max(0) as u64);
    wait.map_or(until, |w| w.min(until))
}

/// Logs to stderr (CloudWatch on Lambda), `RUST_LOG`-style filter from `RUNCONVERT_LOG`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNCONVERT_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // CloudWatch stamps each line and shows no colours.
        .with_ansi(false)
        .without_time()
        .try_init();
}

/// Runs a JSON-in, JSON-out handler of [`Aws`] as a Lambda function.
pub async fn run_json_lambda<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Arc<Aws>, Value) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, String>> + Send,
{
    init_tracing();
    let aws = Arc::new(Aws::from_env().await?);
    let handler = Arc::new(handler);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |e: lambda_runtime::LambdaEvent<Value>| {
            let (aws, handler) = (aws.clone(), handler.clone());
            async move { handler(aws, e.payload).await.map_err(lambda_runtime::Error::from) }
        },
    ))
    .await
}
