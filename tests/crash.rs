//! Crash safety: the server is killed with SIGKILL at random moments while clients create
//! jobs and the executor runs them; after each restart it carries on. Every job the server
//! accepted (answered 201) is still there and completes with the right output, and no job
//! at all (not even one whose 201 was lost with the connection) is left unfinished.
//!
//! The moments come from a seeded generator; the seed is printed, and `CRASH_SEED=<n>`
//! replays a run's kill moments (the clients' timing is not replayed).

use runconvert_tests::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// xorshift64*: enough randomness for kill moments, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The job kinds clients create: the output format and width, and the size it must come out.
const KINDS: &[(&str, u32, (u32, u32))] = &[
    ("png", 160, (160, 120)),
    ("webp", 320, (320, 240)),
    ("bmp", 600, (600, 450)),
];

fn job_body(photo_b64: &str, kind: usize) -> Value {
    let (format, width, _) = KINDS[kind];
    json!({
        "tag": format!("kind-{kind}"),
        "tasks": {
            "in": {"operation": "import/base64", "file": photo_b64, "filename": "photo.jpg"},
            "c": {"operation": "convert", "input": "in", "output_format": format,
                  "options": {"width": width}},
            "out": {"operation": "export/url", "input": "c"}
        }
    })
}

#[derive(Default)]
struct Tally {
    accepted: Mutex<Vec<(String, usize)>>,
    /// Requests that got no answer (the server died under them).
    unanswered: AtomicUsize,
    /// Answers other than 201: each one is a failure of this test.
    unexpected: Mutex<Vec<String>>,
}

async fn client(base: String, key: String, photo_b64: Arc<String>, n: usize, stop: Arc<AtomicBool>, t: Arc<Tally>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut i = n;
    while !stop.load(Ordering::Relaxed) {
        let kind = i % KINDS.len();
        i += 1;
        let sent = http
            .post(format!("{base}/v2/process/jobs"))
            .bearer_auth(&key)
            .json(&job_body(&photo_b64, kind))
            .send()
            .await;
        let r = match sent {
            Ok(r) => r,
            Err(_) => {
                t.unanswered.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
        };
        let status = r.status().as_u16();
        if status != 201 {
            let body = r.text().await.unwrap_or_else(|e| format!("(body cut off: {e})"));
            t.unexpected.lock().unwrap().push(format!("{status} {body}"));
            continue;
        }
        match r.json::<Value>().await {
            Ok(body) => {
                let id = body["id"].as_str().expect("a created job has an id").to_string();
                t.accepted.lock().unwrap().push((id, kind));
            }
            // The body was cut off: the server died while answering 201.
            Err(_) => {
                t.unanswered.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_no_accepted_job() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1; // xorshift never leaves 0
    println!("crash schedule seed: CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    // Rate limit raised so 429s do not thin out the traffic this test wants; restarts of an
    // interrupted task unbounded, since here the kills, not the files, stop the tasks (the
    // bound is the next test's subject).
    let mut s = Server::start(&["--rate-limit", "1000000", "--task-restarts", "1000"]).await;
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let photo_b64 = Arc::new(b64(&photo));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..4)
        .map(|n| {
            tokio::spawn(client(
                s.base.clone(),
                s.key.clone(),
                photo_b64.clone(),
                n,
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();

    const KILLS: usize = 8;
    let mut moments = Vec::new();
    for _ in 0..KILLS {
        // Anywhere from right after the restart (recovery still running) to well into work.
        let wait = Duration::from_millis(rng.below(900));
        moments.push(wait.as_millis());
        tokio::time::sleep(wait).await;
        s.kill_and_restart().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let accepted = tally.accepted.lock().unwrap().clone();
    println!(
        "{KILLS} kills after {moments:?} ms; {} jobs accepted, {} requests cut off",
        accepted.len(),
        tally.unanswered.load(Ordering::Relaxed)
    );
    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "answers other than 201: {unexpected:?}");
    assert!(
        accepted.len() >= 20,
        "too little traffic to test anything: {}",
        accepted.len()
    );

    // Every accepted job completes, with one output of the right size.
    let started = Instant::now();
    for (id, kind) in &accepted {
        let job = s.wait_job(id).await;
        assert_eq!(job["status"], "completed", "job {id} after the kills: {job}");
        let files = urls(task(&job, "out"));
        assert_eq!(files.len(), 1, "job {id} exported {files:?}");
        let (status, bytes) = s.download(&files[0].1).await;
        assert_eq!(status, 200, "job {id}: its file is gone");
        assert_eq!(image_size(&bytes), KINDS[*kind].2, "job {id} ({})", KINDS[*kind].0);
    }
    println!(
        "all accepted jobs completed {:?} after the last restart",
        started.elapsed()
    );

    // No job at all is left unfinished: not even those whose 201 never reached the client.
    let mut offset = 0;
    let mut seen = 0;
    loop {
        let (status, page) = s.get(&format!("/v2/process/jobs?limit=100&offset={offset}")).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap().clone();
        if data.is_empty() {
            break;
        }
        for job in &data {
            let id = job["id"].as_str().unwrap();
            let status = if matches!(job["status"].as_str(), Some("completed" | "failed")) {
                job["status"].clone()
            } else {
                s.wait_job(id).await["status"].clone()
            };
            assert_eq!(
                status, "completed",
                "job {id} (its creation may have been cut off): {job}"
            );
        }
        seen += data.len();
        offset += 100;
    }
    assert!(
        seen >= accepted.len(),
        "listed {seen} jobs, {} were accepted",
        accepted.len()
    );
    println!("{seen} jobs stored, every one completed");

    // And the server still works.
    let job = s.run_job(job_body(&photo_b64, 0)).await;
    assert_eq!(job["status"], "completed", "{job}");
}

async fn wait_task_status(s: &Server, job: &str, name: &str, status: &str) {
    assert!(
        s.task_becomes(job, name, status).await,
        "task {name} of job {job} never became {status}"
    );
}

#[tokio::test]
async fn a_task_running_at_every_crash_stops_being_restarted() {
    let fixture = Fixture::start().await;
    let mut s = Server::start(&["--allow-private-networks", "--task-restarts", "1"]).await;
    let (_, limits) = s.get("/v2/limits").await;
    assert_eq!(limits["data"]["task_restarts"], 1, "{limits}");
    // A download that takes 2 minutes, so it is running whenever the server is killed.
    let job = s
        .create_job(json!({"tasks": {
            "slow": {"operation": "import/url", "url": fixture.url("/slow/120/images/photo_640x480.jpg")},
            "e": {"operation": "export/url", "input": "slow"}
        }}))
        .await;
    let id = job["id"].as_str().unwrap();
    wait_task_status(&s, id, "slow", "processing").await;
    s.kill_and_restart().await; // started again: its one restart
    wait_task_status(&s, id, "slow", "processing").await;
    s.kill_and_restart().await; // running at a second crash: not started a third time

    let done = s.wait_job(id).await;
    assert_eq!(done["status"], "failed", "{done}");
    let slow = task(&done, "slow");
    assert_eq!(slow["code"], "interrupted", "{slow}");
    assert_eq!(
        slow["message"],
        "the server stopped while this task was running, 2 times; it is not tried again"
    );
    assert_eq!(task(&done, "e")["code"], "input_task_failed");

    // Other work goes on.
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    let ok = s.run_job(job_body(&b64(&photo), 0)).await;
    assert_eq!(ok["status"], "completed", "{ok}");
}
