//! RunConvert on AWS: adapters of the core ports over DynamoDB ([`dynamo`]), S3
//! ([`s3files`]), Step Functions and SQS ([`dispatch`]), and the Lambda handlers the
//! state machine and the API run ([`Aws`]'s methods). The binaries in `src/bin` are
//! thin: they read the environment and hand events to these handlers.
//!
//! The state machine (`statemachine/job.asl.json`) is one interpreter for every job:
//! Plan → Map over the ready tasks (each to the worker function of its family, a Catch
//! recording a crash as the task's failure) → Plan again, until the job ends → the final
//! state sends `{job_id, outcome}` to SQS for the webhook function.

pub mod dispatch;
pub mod dynamo;
pub mod s3files;

use dispatch::{SfnDispatcher, SqsEvents};
use dynamo::DynamoStore;
use runconvert_connectors::http_import::DownloadLimits;
use runconvert_connectors::webhook::Sender;
use runconvert_core::error::codes;
use runconvert_core::model::{FileRef, JobStatus, Task, TaskResult, TaskStatus};
use runconvert_core::ops::Operation;
use runconvert_core::ports::{Event, EventName, EventSink, JobStore, TaskTransition, WebhookStore};
use runconvert_core::secrets::Sealer;
use runconvert_core::webhooks::{self, Delivery, DeliveryStatus, Outcome};
use runconvert_core::{new_id, planner, TaskError, Timestamp};
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
    /// 32 bytes, hex: seals task credentials and webhook secrets in DynamoDB.
    pub sealing_key: [u8; 32],
    /// The API's public base URL (`API_URL`): download links go through it.
    pub api_url: Option<String>,
    /// The longest `/wait` (`API_MAX_WAIT_SECONDS`): under the API function's timeout.
    pub max_wait: Duration,
    /// `DEPLOYED_TOOLS`: the tools the deployment's tool functions carry (`pdftoppm`,
    /// `tesseract`, `ffmpeg`, `soffice`, `chromium`). Set on the functions that accept
    /// and route work (API, plan), which have none themselves: what they accept is what
    /// the deployment runs. Unset (the workers): the tools on this function's PATH.
    pub deployed_tools: Option<Vec<String>>,
}

impl Env {
    /// Signs and checks download links (`/v2/files/...` on the API): a key of its own,
    /// derived from the sealing key, so the two never stand in for each other.
    pub fn link_signer(&self, api_url: &str) -> runconvert_http::local_files::UrlSigner {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.sealing_key).expect("HMAC takes any key length");
        mac.update(b"runconvert download links v1");
        runconvert_http::local_files::UrlSigner {
            signer: runconvert_http::signing::Signer::new(mac.finalize().into_bytes().to_vec()),
            public_url: api_url.trim_end_matches('/').to_string(),
            // API Gateway hands the function its path decoded.
            name_in_query: true,
        }
    }
}

impl Env {
    pub fn from_env() -> Result<Env, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let need = |k: &str| var(k).ok_or_else(|| format!("{k} is not set"));
        let num = |k: &str, default: u64| var(k).and_then(|v| v.parse().ok()).unwrap_or(default);
        let key_hex = need("SEALING_KEY")?;
        let mut sealing_key = [0u8; 32];
        hex::decode_to_slice(key_hex.trim(), &mut sealing_key)
            .map_err(|_| "SEALING_KEY must be 64 hexadecimal digits".to_string())?;
        Ok(Env {
            table: need("TABLE_NAME")?,
            bucket: need("BUCKET_NAME")?,
            state_machine_arn: var("STATE_MACHINE_ARN"),
            queue_url: var("QUEUE_URL"),
            endpoint: var("AWS_ENDPOINT_URL"),
            allow_private_networks: var("ALLOW_PRIVATE_NETWORKS").is_some_and(|v| v == "true" || v == "1"),
            sftp_require_host_key: var("SFTP_REQUIRE_HOST_KEY").is_some_and(|v| v == "true" || v == "1"),
            max_file_size: num("MAX_FILE_SIZE_BYTES", 1 << 30),
            retention: Duration::from_secs(num("RETENTION_DAYS", 1) * 86_400),
            upload_timeout: Duration::from_secs(num("UPLOAD_TIMEOUT_SECONDS", 3600)),
            task_timeout: Duration::from_secs(num("TASK_TIMEOUT_SECONDS", 840)),
            sealing_key,
            api_url: var("API_URL"),
            max_wait: Duration::from_secs(num("API_MAX_WAIT_SECONDS", 25)),
            deployed_tools: var("DEPLOYED_TOOLS").map(|v| {
                v.split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect()
            }),
        })
    }
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

/// The work family of a task: which worker function runs it.
pub fn family(task: &Task, registry: &runconvert_core::formats::Registry, job: &runconvert_core::Job) -> &'static str {
    const TOOLS: [&str; 5] = ["tesseract", "libreoffice", "ffmpeg", "chromium", "pdftoppm"];
    match &task.operation {
        op if op.name().starts_with("import/") || op.name().starts_with("export/") => "import_export",
        Operation::Ocr(_) | Operation::CaptureWebsite(_) => "tools",
        op => {
            // The engine that would take the first input decides.
            let input = task
                .depends_on_task_ids
                .iter()
                .filter_map(|id| job.task(id))
                .flat_map(|t| t.result.iter().flat_map(|r| r.files.iter()))
                .next()
                .and_then(|f| f.filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()));
            let output = op.output_format().map(str::to_ascii_lowercase);
            let uses_tool = registry
                .query(Some(op.name()), input.as_deref(), output.as_deref())
                .next()
                .is_some_and(|c| TOOLS.contains(&c.engine));
            if uses_tool {
                "tools"
            } else {
                "process"
            }
        }
    }
}

impl Aws {
    pub async fn from_env() -> Result<Aws, String> {
        Self::with_env(Env::from_env()?).await
    }

    pub async fn with_env(env: Env) -> Result<Aws, String> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
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
            Sealer::new(env.sealing_key),
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
            files = files.with_links(env.link_signer(api_url));
        }
        let files = Arc::new(files);
        let events: Arc<dyn EventSink> = match &env.queue_url {
            Some(q) => Arc::new(SqsEvents {
                client: aws_sdk_sqs::Client::new(&sdk),
                queue_url: q.clone(),
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
                stores: Default::default(),
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
                ..ApiSettings::default()
            },
            // Per Lambda instance: API Gateway's own throttling is the account-wide limit.
            limiter: Default::default(),
        })
    }

    /// The API function's router: the API, and the download links that redirect to S3.
    pub fn api_router(&self) -> axum::Router {
        let links = self.env.link_signer(self.env.api_url.as_deref().unwrap_or_default());
        runconvert_http::api_router(self.api_state()).merge(runconvert_http::local_files::redirect_files_router(
            links,
            self.files.clone(),
        ))
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

    /// The Plan state: `{job_id}` → `{done, outcome, tasks: [{task_id, family}]}`.
    pub async fn plan(&self, input: Value) -> Result<Value, String> {
        let job_id = input["job_id"].as_str().ok_or("no job_id")?.to_string();
        let Some(job) = self.store.get_job(None, &job_id).await.map_err(|e| e.to_string())? else {
            // Deleted while running: nothing more to do, nothing to announce.
            return Ok(json!({"done": true, "outcome": null, "tasks": []}));
        };
        if job.status.is_final() {
            return Ok(json!({"done": true, "outcome": job.status.as_str(), "tasks": []}));
        }
        // Uploads land in S3 directly: an import/upload task finishes when its file is there.
        for t in job.tasks.iter().filter(|t| t.status == TaskStatus::Waiting) {
            if let Operation::ImportUpload(_) = t.operation {
                let uploaded = self.files.uploaded(&job.id, &t.id).await.map_err(|e| e.to_string())?;
                if !uploaded.is_empty() {
                    let files = uploaded
                        .into_iter()
                        .map(|(filename, size)| FileRef {
                            filename,
                            size,
                            url: None,
                            task_id: t.id.clone(),
                        })
                        .collect();
                    self.end_task(
                        t,
                        TaskStatus::Waiting,
                        Ok(TaskResult {
                            files,
                            ..TaskResult::default()
                        }),
                    )
                    .await?;
                }
            }
        }
        let job = self
            .store
            .get_job(None, &job_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("job vanished")?;
        let plan = planner::plan(&job, Timestamp::now());
        for (task_id, e) in plan.fail {
            if let Some(t) = job.task(&task_id) {
                self.end_task(t, TaskStatus::Waiting, Err(e)).await?;
            }
        }
        if let Some(outcome) = plan.outcome {
            self.store
                .set_job_status(&job.id, outcome, Timestamp::now())
                .await
                .map_err(|e| e.to_string())?;
            return Ok(json!({"done": true, "outcome": outcome.as_str(), "tasks": []}));
        }
        if !plan.start.is_empty() && job.status == JobStatus::Created {
            self.store
                .set_job_status(&job.id, JobStatus::Processing, Timestamp::now())
                .await
                .map_err(|e| e.to_string())?;
        }
        let tasks: Vec<Value> = plan
            .start
            .iter()
            .filter_map(|id| job.task(id))
            .map(|t| json!({"task_id": t.id, "family": family(t, &self.worker.registry, &job)}))
            .collect();
        Ok(json!({"done": false, "outcome": null, "tasks": tasks}))
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
        Ok(json!({"status": if failed { "failed" } else { "finished" }}))
    }

    /// The advance function, three callers:
    /// - the Catch of a worker state: the worker crashed or timed out; its task fails
    ///   with `processing_failed` (if it has not ended already);
    /// - `FailJob`, the Catch of Plan and of the task map (`{job_id, error, fail_job}`):
    ///   the job cannot go on; its open tasks fail and the job fails (the Publish state
    ///   that follows announces job.failed);
    /// - the EventBridge rule on executions that fail, time out or are aborted anyway
    ///   (`{detail: {status, input}}`): the same, and job.failed is published here.
    pub async fn advance(&self, input: Value) -> Result<Value, String> {
        if let Some(detail) = input.get("detail") {
            let status = detail["status"].as_str().unwrap_or("ended");
            let execution: Value = detail["input"]
                .as_str()
                .and_then(|i| serde_json::from_str(i).ok())
                .unwrap_or(Value::Null);
            let Some(job_id) = execution["job_id"].as_str() else {
                return Ok(json!({"status": "not a job"}));
            };
            let why = TaskError::new(
                codes::PROCESSING_FAILED,
                format!(
                    "the job's execution ended ({}) before the job did",
                    status.to_ascii_lowercase()
                ),
            );
            return self.fail_job(job_id, why, true).await;
        }
        if input["fail_job"].as_bool() == Some(true) {
            let job_id = input["job_id"].as_str().ok_or("no job_id")?;
            let what = input["error"]["Error"].as_str().unwrap_or("an error");
            let why = TaskError::new(
                codes::PROCESSING_FAILED,
                format!("the job could not go on: a step of its execution failed ({what})"),
            );
            return self.fail_job(job_id, why, false).await;
        }
        let task_id = input["task_id"].as_str().ok_or("no task_id")?;
        let Some(task) = self.store.get_task(None, task_id).await.map_err(|e| e.to_string())? else {
            return Ok(json!({"status": "gone"}));
        };
        let what = input["error"]["Error"].as_str().unwrap_or("an error");
        let e = TaskError::new(
            codes::PROCESSING_FAILED,
            format!("the worker stopped before finishing the task ({what})"),
        );
        for from in [TaskStatus::Processing, TaskStatus::Waiting] {
            if task.status == from {
                self.end_task(&task, from, Err(e.clone())).await?;
            }
        }
        Ok(json!({"status": "failed"}))
    }

    /// Ends a job that cannot go on ([`runconvert_core::ports::fail_job`]); publishes the
    /// tasks' events, and job.failed too unless the state machine's Publish state will.
    async fn fail_job(&self, job_id: &str, why: TaskError, announce_job: bool) -> Result<Value, String> {
        let events = runconvert_core::ports::fail_job(&*self.store, job_id, why)
            .await
            .map_err(|e| e.to_string())?;
        // Whether this call ended the job: only then is there an end to announce.
        let ended = events.iter().any(|e| e.name() == EventName::JobFailed);
        for event in events {
            if announce_job || event.name() != EventName::JobFailed {
                let _ = self.events.publish(event).await;
            }
        }
        Ok(json!({"status": "failed", "outcome": if ended { Value::from("failed") } else { Value::Null }}))
    }

    /// One webhook queue message: delivers it to every subscription of the job's owner
    /// that wants it (and to the job's own webhook_url for its final event). Err asks
    /// SQS to deliver the message again later (retries, then the dead-letter queue).
    pub async fn deliver(&self, message: &str, sender: &Sender) -> Result<(), String> {
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
            _ => return Ok(()), // the job was deleted
        };
        let event = body["event"].as_str().unwrap_or_default().to_string();
        let Some(name) = EventName::ALL.into_iter().find(|n| n.as_str() == event) else {
            return Err(format!("unknown event {event:?}"));
        };
        let mut targets: Vec<(Option<String>, String, String)> = self
            .store
            .list_webhooks(&user_id)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|h| webhooks::wants(h, name))
            .map(|h| (Some(h.id), h.endpoint_url, h.secret))
            .collect();
        if let Some(job) = &job {
            if let (Some(url), Some(secret), true) =
                (&job.webhook_url, &job.webhook_secret, webhooks::job_url_wants(name))
            {
                targets.push((None, url.clone(), secret.clone()));
            }
        }
        let event_id = format!("{job_id}:{event}:{}", body["task"]["id"].as_str().unwrap_or(""));
        let raw = body.to_string();
        let mut retry = Vec::new();
        for (hook, url, secret) in targets {
            let now = Timestamp::now();
            let outcome = sender.send(&url, &secret, &event_id, &raw, now.millis() / 1000).await;
            let (status, code, error) = match &outcome {
                Outcome::Delivered(c) => (DeliveryStatus::Delivered, Some(*c), None),
                Outcome::Retry { status, error } => {
                    retry.push(error.clone());
                    (DeliveryStatus::Pending, *status, Some(error.clone()))
                }
                Outcome::Gone => (DeliveryStatus::Failed, Some(410), Some("410 Gone".to_string())),
                Outcome::Rejected { status, error } => (DeliveryStatus::Failed, *status, Some(error.clone())),
            };
            if let Some(id) = hook {
                let d = Delivery {
                    id: new_id(),
                    event_id: event_id.clone(),
                    event: event.clone(),
                    job_id: job_id.to_string(),
                    status,
                    attempts: 1,
                    last_status_code: code,
                    last_error: error,
                    created_at: now,
                    next_attempt_at: None,
                    delivered_at: (status == DeliveryStatus::Delivered).then_some(now),
                };
                let _ = self.store.record_delivery(&id, &d).await;
            }
        }
        if retry.is_empty() {
            Ok(())
        } else {
            Err(retry.join("; "))
        }
    }
}

/// Logs to stderr (CloudWatch on Lambda), `RUST_LOG`-style filter from `RUNCONVERT_LOG`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNCONVERT_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
