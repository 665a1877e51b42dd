//! The AWS path on one machine, for tests: moto runs DynamoDB, S3, SQS and Step Functions
//! (executing the project's state machine); this program
//! - creates the table, bucket, queue and state machine in moto (as the template would);
//! - serves a front on `--front`, where moto's Step Functions interpreter sends its
//!   Lambda invocations (moto started with MOTO_PORT = the front's port): it answers
//!   `POST /2015-03-31/functions/{name}/invocations` by calling this crate's handlers
//!   in-process, and passes every other request through to moto;
//! - serves the API (the same router the API Lambda runs) on `--api`;
//! - polls the webhook queue and hands each message to the webhook handler (what the SQS
//!   event source mapping does on AWS).
//!
//! `runconvert-aws-local --moto http://127.0.0.1:27001 --front 127.0.0.1:27004 --api 127.0.0.1:0`
//! prints `API <url>`, `KEY <api key>`, `BUCKET <name>`, `TABLE <name>` and then `READY`.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use runconvert_aws::{Aws, Env};
use runconvert_core::ports::JobStore;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

struct Args {
    moto: String,
    front: String,
    api: String,
    definition: String,
    /// Tasks of this name crash their worker (as a Lambda killed mid-run would), to show
    /// the Catch path.
    crash: Option<String>,
    /// The plan function fails for jobs of this tag (as a crashing Plan would), to show
    /// the FailJob path.
    fail_plan_tag: Option<String>,
    /// Step Functions refuses to start executions of jobs of this tag (as a throttled or
    /// failing StartExecution would), to show that such a job ends.
    fail_start_tag: Option<String>,
    /// The longest `/wait`, in seconds (the API function's is under its timeout).
    max_wait: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        moto: "http://127.0.0.1:27001".into(),
        front: "127.0.0.1:27004".into(),
        api: "127.0.0.1:0".into(),
        definition: "statemachine/job.asl.json".into(),
        crash: None,
        fail_plan_tag: None,
        fail_start_tag: None,
        max_wait: 25,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--moto" => a.moto = v,
            "--front" => a.front = v,
            "--api" => a.api = v,
            "--definition" => a.definition = v,
            "--crash-task" => a.crash = Some(v),
            "--fail-plan-tag" => a.fail_plan_tag = Some(v),
            "--fail-start-tag" => a.fail_start_tag = Some(v),
            "--max-wait" => a.max_wait = v.parse().map_err(|_| "--max-wait takes seconds".to_string())?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
}

#[tokio::main]
async fn main() -> Result<(), String> {
    runconvert_aws::init_tracing();
    let a = args()?;
    let run = format!("rc{}", std::process::id());
    // The SDK clients go through the front, which passes them on to moto.
    let front_url = format!("http://{}", a.front);
    for (k, v) in [
        ("AWS_ENDPOINT_URL", front_url.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
    ] {
        // Set before any thread reads the environment.
        std::env::set_var(k, v);
    }
    let http = reqwest::Client::new();
    http.post(format!("{}/moto-api/config", a.moto))
        .json(&json!({"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}))
        .send()
        .await
        .map_err(|e| format!("moto at {}: {e}", a.moto))?;

    let front_listener = tokio::net::TcpListener::bind(&a.front)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.front))?;
    // The front must answer before resources can be created through it.
    let aws_cell: Arc<tokio::sync::OnceCell<Arc<Aws>>> = Arc::new(tokio::sync::OnceCell::new());
    let state = FrontState {
        moto: a.moto.clone(),
        http: http.clone(),
        aws: aws_cell.clone(),
        crash: a.crash.clone(),
        fail_plan_tag: a.fail_plan_tag.clone(),
        fail_start_tag: a.fail_start_tag.clone(),
    };
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(front).with_state(Arc::new(state));
        axum::serve(front_listener, app).await.unwrap();
    });

    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table = format!("{run}-jobs");
    let bucket = format!("{run}-files");
    create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await?;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .map_err(|e| format!("bucket: {e:?}"))?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{run}-webhooks"))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "2")
        .send()
        .await
        .map_err(|e| format!("queue: {e:?}"))?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    let definition = std::fs::read_to_string(&a.definition).map_err(|e| format!("{}: {e}", a.definition))?;
    let definition = definition
        .replace("${PlanFunctionArn}", &function_arn("plan"))
        .replace("${ImportExportFunctionArn}", &function_arn("worker-import-export"))
        .replace("${ProcessFunctionArn}", &function_arn("worker-process"))
        .replace("${ToolsFunctionArn}", &function_arn("worker-tools"))
        .replace("${AdvanceFunctionArn}", &function_arn("advance"))
        .replace("${WebhookQueueUrl}", &queue_url);
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let machine = sfn
        .create_state_machine()
        .name(format!("{run}-jobs"))
        .definition(definition)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/runconvert-states"))
        .send()
        .await
        .map_err(|e| format!("state machine: {e:?}"))?
        .state_machine_arn()
        .to_string();

    let mut key = [0u8; 32];
    key.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i as u8).wrapping_mul(37) ^ 0x5a);
    // Bound first: its URL is the base of the download links the workers make.
    let api = tokio::net::TcpListener::bind(&a.api)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.api))?;
    let api_addr = api.local_addr().map_err(|e| e.to_string())?;
    let env = Env {
        table,
        bucket: bucket.clone(),
        state_machine_arn: Some(machine),
        queue_url: Some(queue_url.clone()),
        endpoint: Some(front_url.clone()),
        allow_private_networks: true,
        sftp_require_host_key: false,
        max_file_size: 1 << 30,
        retention: Duration::from_secs(86_400),
        upload_timeout: Duration::from_secs(600),
        task_timeout: Duration::from_secs(600),
        sealing_key: key,
        api_url: Some(format!("http://{api_addr}")),
        max_wait: Duration::from_secs(a.max_wait),
        // One process plays every function here, workers included: its own tools.
        deployed_tools: None,
    };
    let aws = Arc::new(Aws::with_env(env).await?);
    let _ = aws_cell.set(aws.clone());

    let api_key = format!("rc_local{}", runconvert_core::new_id().replace('-', ""));
    aws.store
        .create_user_with_key("local", &api_key, None, None)
        .await
        .map_err(|e| e.to_string())?;
    let router = aws.api_router();
    tokio::spawn(async move {
        axum::serve(api, router).await.unwrap();
    });

    // The SQS event source mapping of the webhook function.
    let sender =
        runconvert_connectors::webhook::Sender::new(runconvert_connectors::Guard::new(true), Duration::from_secs(10))?;
    let poller = aws.clone();
    tokio::spawn(async move {
        loop {
            let got = sqs
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await;
            let Ok(got) = got else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            for m in got.messages() {
                match poller.deliver(m.body().unwrap_or_default(), &sender).await {
                    Ok(()) => {
                        let _ = sqs
                            .delete_message()
                            .queue_url(&queue_url)
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .send()
                            .await;
                    }
                    Err(e) => tracing::warn!(error = %e, "webhook message left for a retry"),
                }
            }
        }
    });

    println!("API http://{api_addr}");
    println!("KEY {api_key}");
    println!("BUCKET {bucket}");
    println!("TABLE {}", aws.env.table);
    println!("READY");
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
        ScalarAttributeType,
    };
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("name and type given")
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .expect("name and type given")
    };
    let all = Projection::builder().projection_type(ProjectionType::All).build();
    let gsi1 = GlobalSecondaryIndex::builder()
        .index_name("gsi1")
        .key_schema(key("gsi1pk", KeyType::Hash))
        .key_schema(key("gsi1sk", KeyType::Range))
        .projection(all.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let gsi2 = GlobalSecondaryIndex::builder()
        .index_name("gsi2")
        .key_schema(key("gsi2pk", KeyType::Hash))
        .projection(all)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr("gsi1pk"))
        .attribute_definitions(attr("gsi1sk"))
        .attribute_definitions(attr("gsi2pk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(gsi1)
        .global_secondary_indexes(gsi2)
        .send()
        .await
        .map_err(|e| format!("table: {e:?}"))?;
    Ok(())
}

struct FrontState {
    moto: String,
    http: reqwest::Client,
    aws: Arc<tokio::sync::OnceCell<Arc<Aws>>>,
    crash: Option<String>,
    fail_plan_tag: Option<String>,
    fail_start_tag: Option<String>,
}

fn lambda_answer(result: Result<Value, String>) -> Response {
    let request_id = runconvert_core::new_id();
    match result {
        Ok(v) => (StatusCode::OK, [("x-amzn-RequestId", request_id)], axum::Json(v)).into_response(),
        Err(e) => (
            StatusCode::OK,
            [
                ("x-amzn-RequestId", request_id),
                ("X-Amz-Function-Error", "Unhandled".to_string()),
            ],
            axum::Json(json!({"errorType": "RunConvertError", "errorMessage": e})),
        )
            .into_response(),
    }
}

async fn front(
    axum::extract::State(st): axum::extract::State<Arc<FrontState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/2015-03-31/functions/") {
        if let Some(name) = rest.strip_suffix("/invocations") {
            let name = url::form_urlencoded::parse(format!("n={name}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let name = name.rsplit(':').next().unwrap_or_default().to_string();
            let Some(aws) = st.aws.get().cloned() else {
                return lambda_answer(Err("not ready".into()));
            };
            let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let result = match name.as_str() {
                "plan" => {
                    let job = aws
                        .store
                        .get_job(None, input["job_id"].as_str().unwrap_or_default())
                        .await;
                    let tag = job.ok().flatten().and_then(|j| j.tag);
                    if tag.is_some() && tag == st.fail_plan_tag {
                        Err("Runtime.ExitError: the plan process exited".to_string())
                    } else {
                        aws.plan(input).await
                    }
                }
                "advance" => aws.advance(input).await,
                n if n.starts_with("worker") => {
                    let task = aws
                        .store
                        .get_task(None, input["task_id"].as_str().unwrap_or_default())
                        .await;
                    let name = task.ok().flatten().map(|t| t.name);
                    if name.is_some() && name == st.crash {
                        Err("Runtime.ExitError: the worker process exited".to_string())
                    } else {
                        aws.work(input).await
                    }
                }
                other => Err(format!("no function {other}")),
            };
            return lambda_answer(result);
        }
    }
    if headers.get("x-amz-target").and_then(|v| v.to_str().ok()) == Some("AWSStepFunctions.StartExecution") {
        if let (Some(tag), Some(aws)) = (&st.fail_start_tag, st.aws.get()) {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let input: Value = req["input"]
                .as_str()
                .and_then(|i| serde_json::from_str(i).ok())
                .unwrap_or(Value::Null);
            let job = aws
                .store
                .get_job(None, input["job_id"].as_str().unwrap_or_default())
                .await;
            if job.ok().flatten().and_then(|j| j.tag).as_ref() == Some(tag) {
                return (
                    StatusCode::BAD_REQUEST,
                    [("content-type", "application/x-amz-json-1.0")],
                    r#"{"__type":"com.amazonaws.swf.service.v2.model#ServiceUnavailable","message":"refused by the test harness"}"#,
                )
                    .into_response();
            }
        }
    }
    // Everything else is moto's.
    let target = format!("{}{}", st.moto, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut req = st.http.request(
        reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET),
        target,
    );
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            req = req.header(k.as_str(), v.as_bytes());
        }
    }
    match req.body(body).send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut out = axum::http::Response::builder().status(status);
            for (k, v) in resp.headers() {
                if k != "transfer-encoding" && k != "content-length" && k != "connection" {
                    out = out.header(k.as_str(), v.as_bytes());
                }
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            out.body(axum::body::Body::from(bytes))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
