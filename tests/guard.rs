//! The outbound-address guard, end to end: every hostile address form, through every
//! caller that connects to a host the user chose, against a canary listener on loopback.
//! None may reach it; the same job on a server started with --allow-private-networks
//! does reach it (so the canary can see a connection when one happens).

use runconvert_tests::*;
use serde_json::{json, Value};

/// Host forms that all mean "this machine" or another inner network, as a URL host.
const URL_HOSTS: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "LocalHost",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0.0.0.0",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.0.1",
    "100.64.0.1",
    "[fd00::1]",
    "[fe80::1]",
    "224.0.0.1",
];

fn callers(host: &str, port: u16) -> Vec<(String, Value)> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let url = format!("http://{host}:{port}/x.jpg");
    let upper = format!("HTTP://{host}:{port}/x.jpg");
    let s3 = |op: &str| {
        let mut v = json!({"operation": op, "bucket": "b", "region": "us-east-1",
            "access_key_id": "AKIAEXAMPLE", "secret_access_key": "secret", "key": "k.jpg",
            "endpoint": format!("http://{host}:{port}")});
        if op.starts_with("export") {
            v["input"] = json!("src");
        }
        v
    };
    let sftp = |op: &str| {
        let mut v = json!({"operation": op, "host": bare, "port": port, "username": "u", "password": "p",
            "file_string": "k.jpg"});
        if op.starts_with("export") {
            v["input"] = json!("src");
        }
        v
    };
    vec![
        ("url".into(), json!({"operation": "import/url", "url": url})),
        ("url-upper".into(), json!({"operation": "import/url", "url": upper})),
        (
            "capture".into(),
            json!({"operation": "capture_website", "url": url, "output_format": "png"}),
        ),
        ("s3-in".into(), s3("import/s3")),
        ("s3-out".into(), s3("export/s3")),
        ("sftp-in".into(), sftp("import/sftp")),
        ("sftp-out".into(), sftp("export/sftp")),
    ]
}

/// One job per caller, with every host form as a task (plus the source for the exports).
fn hostile_jobs(port: u16) -> Vec<(Value, Vec<String>)> {
    let kinds = callers("127.0.0.1", port).len();
    (0..kinds)
        .map(|k| {
            let mut tasks = serde_json::Map::new();
            tasks.insert(
                "src".into(),
                json!({"operation": "import/base64", "file": "aGVsbG8=", "filename": "a.txt"}),
            );
            let mut names = Vec::new();
            for (i, host) in URL_HOSTS.iter().enumerate() {
                let (caller, task) = callers(host, port).swap_remove(k);
                let name = format!("{caller}-{i}");
                tasks.insert(name.clone(), task);
                names.push(name);
            }
            (json!({ "tasks": tasks }), names)
        })
        .collect()
}

#[tokio::test]
async fn no_hostile_address_form_reaches_loopback_through_any_caller() {
    let canary = Canary::start().await;
    let s = Server::start(&["--transfer-timeout", "5"]).await;
    let mut wrong = Vec::new();
    for (body, names) in hostile_jobs(canary.port) {
        let job = s.run_job(body).await;
        for name in &names {
            let t = task(&job, name);
            if t["status"] != "failed" || t["code"] != "forbidden_address" {
                wrong.push(format!("{name} ({}): {} {}", t["payload"], t["code"], t["message"]));
            }
        }
    }
    // Webhooks: a subscription's endpoint and a job's webhook_url are refused when created.
    for host in URL_HOSTS {
        let url = format!("http://{host}:{}/hook", canary.port);
        let (status, err) = s
            .post(
                "/v2/webhooks",
                &json!({"endpoint_url": url, "events": ["job.finished"]}),
            )
            .await;
        if status != 400 || !err["errors"]["endpoint_url"].is_array() {
            wrong.push(format!("webhook {url}: {status} {err}"));
        }
        let job = json!({"webhook_url": url, "tasks": {"t": {"operation": "import/base64", "file": "aGk=", "filename": "a.txt"}}});
        let (status, err) = s.post("/v2/process/jobs", &job).await;
        if status != 400 || !err["errors"]["webhook_url"].is_array() {
            wrong.push(format!("job webhook_url {url}: {status} {err}"));
        }
    }
    assert!(wrong.is_empty(), "not refused by the guard:\n{}", wrong.join("\n"));
    assert_eq!(canary.hits(), 0, "a connection reached the canary");

    // Schemes other than http(s) are refused when the job is created.
    for url in [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1:70/",
        "dict://127.0.0.1:11211/",
    ] {
        for op in [
            json!({"operation": "import/url", "url": url}),
            json!({"operation": "capture_website", "url": url, "output_format": "png"}),
        ] {
            let (status, err) = s.post("/v2/process/jobs", &json!({"tasks": {"t": op}})).await;
            assert_eq!(status, 400, "{url}: {err}");
        }
    }
    assert_eq!(canary.hits(), 0);
}

#[tokio::test]
async fn with_private_networks_allowed_the_same_callers_do_reach_loopback() {
    // The control: proves the canary counts what gets through.
    let canary = Canary::start().await;
    let s = Server::start(&["--allow-private-networks", "--transfer-timeout", "3"]).await;
    let mut tasks = serde_json::Map::new();
    tasks.insert(
        "src".into(),
        json!({"operation": "import/base64", "file": "aGVsbG8=", "filename": "a.txt"}),
    );
    for (caller, task) in callers("127.0.0.1", canary.port) {
        if caller != "capture" {
            tasks.insert(caller, task);
        }
    }
    let before = canary.hits();
    let job = s.run_job(json!({ "tasks": tasks })).await;
    for name in ["url", "url-upper", "s3-in", "s3-out", "sftp-in", "sftp-out"] {
        assert_ne!(task(&job, name)["code"], "forbidden_address", "{name}");
    }
    assert!(
        canary.hits() >= before + 6,
        "only {} connections reached the canary",
        canary.hits() - before
    );
}
