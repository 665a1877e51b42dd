//! Webhooks against a real receiver on loopback: every event once per subscription, in
//! order per job, signed; a receiver that was down gets everything once it is back; a
//! server killed with SIGKILL mid-delivery still delivers every event after a restart.

use runconvert_core::webhooks::verify;
use runconvert_tests::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    signature: String,
    event_id: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn event(&self) -> String {
        self.json()["event"].as_str().unwrap().to_string()
    }

    fn job_id(&self) -> String {
        let v = self.json();
        v["job"]["id"]
            .as_str()
            .or(v["task"]["job_id"].as_str())
            .unwrap()
            .to_string()
    }
}

/// How the receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Status(u16),
    /// Answer 200 after a pause (to be killed mid-delivery).
    Slow(Duration),
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    mode: Arc<Mutex<Mode>>,
}

impl Receiver {
    fn new(mode: Mode) -> Receiver {
        Receiver {
            got: Arc::new(Mutex::new(Vec::new())),
            mode: Arc::new(Mutex::new(mode)),
        }
    }

    /// Serves on `listener` until the returned handle is aborted.
    fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        use axum::http::{HeaderMap, StatusCode, Uri};
        let this = self.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let this = this.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                this.got.lock().unwrap().push(Received {
                    path: uri.path().to_string(),
                    signature: h("runconvert-signature"),
                    event_id: h("runconvert-event-id"),
                    body: body.to_vec(),
                });
                let mode = *this.mode.lock().unwrap();
                match mode {
                    Mode::Ok => StatusCode::OK,
                    Mode::Status(s) => StatusCode::from_u16(s).unwrap(),
                    Mode::Slow(d) => {
                        tokio::time::sleep(d).await;
                        StatusCode::OK
                    }
                }
            }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        })
    }

    fn got(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has received at least `n` distinct events.
    async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        let start = std::time::Instant::now();
        loop {
            let got = self.got(path);
            let mut ids: Vec<&str> = got.iter().map(|r| r.event_id.as_str()).collect();
            ids.sort();
            ids.dedup();
            if ids.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < within,
                "{path} got {} of {n} events: {:?}",
                ids.len(),
                got.iter().map(Received::event).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn listen() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    (l, base)
}

async fn subscribe(s: &Server, url: &str, events: &[&str]) -> (String, String) {
    let (status, body) = s
        .post("/v2/webhooks", &json!({"endpoint_url": url, "events": events}))
        .await;
    assert_eq!(status, 201, "{body}");
    let d = &body["data"];
    (
        d["id"].as_str().unwrap().to_string(),
        d["signing_secret"].as_str().unwrap().to_string(),
    )
}

const ALL: [&str; 6] = [
    "job.created",
    "job.finished",
    "job.failed",
    "task.created",
    "task.finished",
    "task.failed",
];

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Checks signatures, and that each job's events came in the order they happened.
fn check_signed_and_ordered(got: &[Received], secret: &str) {
    for r in got {
        assert!(
            verify(secret, &r.signature, &r.body, now_unix(), Duration::from_secs(300)),
            "bad signature {:?} on {}",
            r.signature,
            r.event()
        );
        assert!(!r.event_id.is_empty());
    }
    let mut jobs: Vec<String> = got.iter().map(Received::job_id).collect();
    jobs.dedup();
    for job in jobs {
        let events: Vec<String> = got.iter().filter(|r| r.job_id() == job).map(Received::event).collect();
        assert_eq!(events.first().map(String::as_str), Some("job.created"), "{events:?}");
        let last = events.last().unwrap();
        assert!(last == "job.finished" || last == "job.failed", "{events:?}");
        let first_end = events
            .iter()
            .position(|e| e == "task.finished" || e == "task.failed")
            .unwrap();
        assert!(
            events[..first_end]
                .iter()
                .all(|e| e == "job.created" || e == "task.created"),
            "{events:?}"
        );
    }
}

fn two_jobs() -> (Value, Value) {
    let ok = json!({"tasks": {
        "in": {"operation": "import/base64", "file": b64(b"hello"), "filename": "a.txt"},
        "out": {"operation": "export/url", "input": "in"},
    }});
    let bad = json!({"tasks": {
        "in": {"operation": "import/base64", "file": "!!! not base64 !!!", "filename": "a.txt"},
    }});
    (ok, bad)
}

#[tokio::test]
async fn every_event_arrives_once_per_subscription_signed_and_in_order() {
    let rx = Receiver::new(Mode::Ok);
    let (l, base) = listen().await;
    let _srv = rx.serve(l);
    let s = Server::start(&["--allow-private-networks"]).await;
    let (all_id, all_secret) = subscribe(&s, &format!("{base}/all"), &ALL).await;
    let (_, fin_secret) = subscribe(&s, &format!("{base}/finished"), &["job.finished"]).await;

    // Another user's subscription never sees this user's events.
    let (status, _) = s
        .post_as(
            &s.other_key,
            "/v2/webhooks",
            &json!({"endpoint_url": format!("{base}/other"), "events": ALL}),
        )
        .await;
    assert_eq!(status, 201);

    let (ok, bad) = two_jobs();
    let mut ok = ok;
    ok["webhook_url"] = json!(format!("{base}/job"));
    let created = s.create_job(ok).await;
    let job_secret = created["webhook_secret"]
        .as_str()
        .expect("the job's webhook secret")
        .to_string();
    let (_, shown) = s
        .get(&format!("/v2/process/jobs/{}", created["id"].as_str().unwrap()))
        .await;
    assert!(shown.get("webhook_secret").is_none(), "the secret is shown only once");
    let done = s.wait_job(created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    let failed = s.run_job(bad).await;
    assert_eq!(failed["status"], "failed");

    // ok: job.created, 2 task.created, 2 task.finished, job.finished;
    // bad: job.created, task.created, task.failed, job.failed.
    let got = rx.wait_for("/all", 10, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = rx.got("/all");
    assert_eq!(
        got_all.len(),
        10,
        "each event once: {:?}",
        got.iter().map(Received::event).collect::<Vec<_>>()
    );
    let mut kinds: Vec<String> = got_all.iter().map(Received::event).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), 6, "every event type: {kinds:?}");
    check_signed_and_ordered(&got_all, &all_secret);
    // The payload is the API's JSON.
    let fin = got_all.iter().find(|r| r.event() == "job.finished").unwrap().json();
    assert_eq!(fin["job"]["id"], created["id"]);
    assert_eq!(fin["job"]["status"], "completed");
    assert!(fin["job"]["tasks"][1]["result"]["files"][0]["url"].is_string(), "{fin}");

    let fins = rx.wait_for("/finished", 1, Duration::from_secs(10)).await;
    assert_eq!(fins.len(), 1);
    assert_eq!(fins[0].event(), "job.finished");
    assert!(verify(
        &fin_secret,
        &fins[0].signature,
        &fins[0].body,
        now_unix(),
        Duration::from_secs(300)
    ));
    assert!(!verify(
        &all_secret,
        &fins[0].signature,
        &fins[0].body,
        now_unix(),
        Duration::from_secs(300)
    ));

    let own = rx.wait_for("/job", 1, Duration::from_secs(10)).await;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].event(), "job.finished");
    assert!(verify(
        &job_secret,
        &own[0].signature,
        &own[0].body,
        now_unix(),
        Duration::from_secs(300)
    ));
    assert!(
        rx.got("/other").is_empty(),
        "another user's webhook got this user's events"
    );

    // The subscriptions and their deliveries, through the API; no secret shown again.
    let (status, list) = s.get("/v2/webhooks").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains(&all_secret));
    let (status, d) = s.get(&format!("/v2/webhooks/{all_id}/deliveries")).await;
    assert_eq!(status, 200);
    let d = d["data"].as_array().unwrap();
    assert_eq!(d.len(), 10);
    assert!(
        d.iter().all(|x| x["status"] == "delivered" && x["attempts"] == 1),
        "{d:?}"
    );
    let (status, _) = s
        .get_as(&s.other_key, &format!("/v2/webhooks/{all_id}/deliveries"))
        .await;
    assert_eq!(status, 404);
    let (status, _) = s.delete_as(&s.other_key, &format!("/v2/webhooks/{all_id}")).await;
    assert_eq!(status, 404);
    let (status, _) = s.delete_as(&s.key, &format!("/v2/webhooks/{all_id}")).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_everything_once_it_is_back() {
    // A port with nothing on it for now.
    let (l, base) = listen().await;
    let addr = l.local_addr().unwrap();
    drop(l);
    let s = Server::start(&["--allow-private-networks", "--webhook-max-backoff", "1"]).await;
    let (id, secret) = subscribe(&s, &format!("{base}/hook"), &ALL).await;
    let (ok, _) = two_jobs();
    let job = s.run_job(ok).await;
    assert_eq!(job["status"], "completed");
    // Tried, failed, waiting to be tried again.
    let mut pending = Value::Null;
    for _ in 0..100 {
        let (_, d) = s.get(&format!("/v2/webhooks/{id}/deliveries")).await;
        if d["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["attempts"].as_u64() >= Some(1))
        {
            pending = d;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = pending["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["attempts"] == 1)
        .unwrap()
        .clone();
    assert_eq!(first["status"], "pending", "{first}");
    assert!(
        first["last_error"].as_str().unwrap().contains("cannot connect"),
        "{first}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rx = Receiver::new(Mode::Ok);
    let _srv = rx.serve(tokio::net::TcpListener::bind(addr).await.unwrap());
    let got = rx.wait_for("/hook", 6, Duration::from_secs(30)).await;
    check_signed_and_ordered(&got, &secret);
    let events: Vec<String> = got.iter().map(Received::event).collect();
    assert_eq!(events.len(), 6, "{events:?}");
}

#[tokio::test]
async fn a_server_killed_mid_delivery_still_delivers_every_event() {
    let rx = Receiver::new(Mode::Slow(Duration::from_millis(1500)));
    let (l, base) = listen().await;
    let _srv = rx.serve(l);
    let mut s = Server::start(&["--allow-private-networks", "--webhook-max-backoff", "1"]).await;
    let (_, secret) = subscribe(&s, &format!("{base}/hook"), &ALL).await;
    let (ok, _) = two_jobs();
    let job = s.create_job(ok).await;
    // Kill the server while the receiver holds the first delivery.
    rx.wait_for("/hook", 1, Duration::from_secs(30)).await;
    s.kill();
    *rx.mode.lock().unwrap() = Mode::Ok;
    s.kill_and_restart().await;
    let done = s.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    let got = rx.wait_for("/hook", 6, Duration::from_secs(60)).await;
    check_signed_and_ordered(&got, &secret);
    // Duplicates carry the same event id and the same event.
    let mut by_id = std::collections::HashMap::new();
    for r in &got {
        let prev = by_id.insert(r.event_id.clone(), r.body.clone());
        if let Some(prev) = prev {
            assert_eq!(prev, r.body, "one event id, two different bodies");
        }
    }
    assert_eq!(by_id.len(), 6);
}

#[tokio::test]
async fn bad_webhooks_get_400s_and_failing_receivers_a_visible_failed_delivery() {
    let guarded = Server::start(&[]).await;
    for (body, field) in [
        (
            json!({"endpoint_url": "ftp://example.com/x", "events": ["job.finished"]}),
            "endpoint_url",
        ),
        (
            json!({"endpoint_url": "https://example.com/x", "events": ["job.done"]}),
            "events",
        ),
        (json!({"endpoint_url": "https://example.com/x"}), "events"),
        (json!({"events": ["job.finished"]}), "endpoint_url"),
        (
            json!({"endpoint_url": "http://127.0.0.1:9/x", "events": ["job.finished"]}),
            "endpoint_url",
        ),
        (
            json!({"endpoint_url": "http://169.254.169.254/latest", "events": ["job.finished"]}),
            "endpoint_url",
        ),
        (
            json!({"endpoint_url": "http://localhost/x", "events": ["job.finished"]}),
            "endpoint_url",
        ),
        (
            json!({"endpoint_url": "https://example.com/x", "events": ["job.finished"], "secret": "x"}),
            "secret",
        ),
    ] {
        let (status, err) = guarded.post("/v2/webhooks", &body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(err["errors"][field].is_array(), "{field}: {err}");
    }
    let (status, err) = guarded
        .post(
            "/v2/process/jobs",
            &json!({"webhook_url": "http://10.0.0.1/x", "tasks": {"i": {"operation": "import/base64", "file": "aGk=", "filename": "a.txt"}}}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["errors"]["webhook_url"].is_array(), "{err}");

    // A receiver that answers 500 forever: retried, then given up at the horizon.
    let rx = Receiver::new(Mode::Status(500));
    let (l, base) = listen().await;
    let _srv = rx.serve(l);
    let s = Server::start(&[
        "--allow-private-networks",
        "--webhook-max-backoff",
        "1",
        "--webhook-retry-horizon",
        "4",
    ])
    .await;
    let (broken, _) = subscribe(&s, &format!("{base}/500"), &["job.created"]).await;
    let gone_rx = Receiver::new(Mode::Status(410));
    let (l2, base2) = listen().await;
    let _srv2 = gone_rx.serve(l2);
    let (gone, _) = subscribe(&s, &format!("{base2}/410"), &["job.created", "job.finished"]).await;
    let redirect_rx = Receiver::new(Mode::Status(307));
    let (l3, base3) = listen().await;
    let _srv3 = redirect_rx.serve(l3);
    let (moved, _) = subscribe(&s, &format!("{base3}/moved"), &["job.created"]).await;
    let (ok, _) = two_jobs();
    s.run_job(ok).await;

    let delivery = |id: String| {
        let s = &s;
        async move {
            let start = std::time::Instant::now();
            loop {
                let (_, d) = s.get(&format!("/v2/webhooks/{id}/deliveries")).await;
                let d = d["data"][0].clone();
                if d["status"] != "pending" || start.elapsed() > Duration::from_secs(30) {
                    return d;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let d = delivery(broken).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["last_status_code"], 500, "{d}");
    assert!(d["attempts"].as_u64().unwrap() >= 2, "{d}");
    assert!(d["last_error"].as_str().unwrap().contains("given up"), "{d}");
    assert!(rx.got("/500").len() >= 2);

    let d = delivery(gone.clone()).await;
    assert_eq!(d["status"], "failed", "{d}");
    let (_, hooks) = s.get("/v2/webhooks").await;
    let hook = hooks["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == gone)
        .unwrap()
        .clone();
    assert!(
        hook["disabled_at"].is_string(),
        "a 410 disables the subscription: {hook}"
    );
    assert_eq!(gone_rx.got("/410").len(), 1, "nothing is sent after a 410");

    let d = delivery(moved).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert!(d["last_error"].as_str().unwrap().contains("redirect"), "{d}");
    assert_eq!(redirect_rx.got("/moved").len(), 1);
}
