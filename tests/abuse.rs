//! Limits that hold under abuse, each tried the way an attacker would, against the real
//! server: upload forms (fields, races, deletion, orphans), connections (silence,
//! per-address caps, shedding under a descriptor limit), fairness between users, slow
//! transfers, video and tool limits, Range downloads, private scratch directories and
//! options checked when the job is created.

use runconvert_tests::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BOUNDARY: &str = "runconvert-test-boundary";

/// A multipart body, streamed: `fields`, then a file part of `file` bytes sent in 64 KiB
/// pieces, pausing `pause` after the first piece; `sent` counts what the server took.
fn streamed_form(fields: Vec<(String, String)>, file: Vec<u8>, pause: Duration, sent: Arc<AtomicU64>) -> reqwest::Body {
    let mut head = String::new();
    for (k, v) in fields {
        head += &format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n");
    }
    head += &format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"up.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let mut pieces: Vec<Vec<u8>> = vec![head.into_bytes()];
    pieces.extend(file.chunks(64 * 1024).map(|c| c.to_vec()));
    pieces.push(format!("\r\n--{BOUNDARY}--\r\n").into_bytes());
    let stream = futures_util::stream::unfold((0usize, pieces), move |(i, pieces)| {
        let sent = sent.clone();
        async move {
            if i >= pieces.len() {
                return None;
            }
            if i == 2 {
                tokio::time::sleep(pause).await;
            }
            sent.fetch_add(pieces[i].len() as u64, Ordering::SeqCst);
            let piece = axum::body::Bytes::from(pieces[i].clone());
            Some((Ok::<_, std::io::Error>(piece), (i + 1, pieces)))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

async fn post_form(s: &Server, url: &str, body: reqwest::Body) -> Result<(u16, Value), reqwest::Error> {
    let r = s
        .http
        .post(url)
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body)
        .send()
        .await?;
    Ok(decode(r).await)
}

fn form_fields(task: &Value) -> Vec<(String, String)> {
    task["result"]["form"]["parameters"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Waits (up to 5 s) until exactly one upload is being staged.
async fn staged_upload_appears(s: &Server) {
    let staging = s.data_dir.join("staging");
    for _ in 0..100 {
        if !files_under(&staging).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(files_under(&staging).len(), 1, "the upload never started");
}

async fn upload_job(s: &Server) -> (Value, Value) {
    let job = s
        .create_job(json!({"tasks": {
            "up": {"operation": "import/upload"},
            "out": {"operation": "export/url", "input": "up"},
        }}))
        .await;
    let up = task(&job, "up").clone();
    (job, up)
}

/// A 400 MB field with no key and no form: refused after a few KiB, with the server's
/// memory flat; a form with a wrong signature in its URL is refused before its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_fields_are_capped_and_forms_checked_before_their_body() {
    let s = Server::start(&[]).await;
    let before = s.peak_rss_mib();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let junk = futures_util::stream::unfold(0u64, move |n| {
        let counter = counter.clone();
        async move {
            let piece = if n == 0 {
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"junk\"\r\n\r\n").into_bytes()
            } else if n <= 6400 {
                vec![b'a'; 64 * 1024]
            } else {
                return None;
            };
            counter.fetch_add(piece.len() as u64, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(piece)), n + 1))
        }
    });
    let answer = post_form(
        &s,
        &s.url("/v2/upload/00000000-0000-4000-8000-000000000000"),
        reqwest::Body::wrap_stream(junk),
    )
    .await;
    if let Ok((status, body)) = &answer {
        assert_eq!(*status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains("4096 bytes"), "{body}");
    }
    let taken = sent.load(Ordering::SeqCst);
    assert!(taken < 64 << 20, "the server read {taken} bytes of a 400 MB field");
    let after = s.peak_rss_mib();
    assert!(after < before + 32, "peak RSS went from {before} MiB to {after} MiB");

    // A real form's URL with its signature changed, and a 64 MB field before the file: 403
    // with the field unread (at most the bounded read-on of a refusal).
    let (_, up) = upload_job(&s).await;
    let url = up["result"]["form"]["url"].as_str().unwrap().to_string();
    assert!(url.contains("signature="), "{url}");
    let forged = format!("{}0", url.trim_end_matches(|c: char| c.is_ascii_hexdigit()));
    let sent = Arc::new(AtomicU64::new(0));
    let fields = vec![("junk".to_string(), "j".repeat(64 << 20))];
    let body = streamed_form(fields, vec![7u8; 1 << 20], Duration::ZERO, sent.clone());
    if let Ok((status, body)) = post_form(&s, &forged, body).await {
        assert_eq!(status, 403, "{body}");
    }
    // (hyper may read on and discard the rest of a refused body; nothing of it is kept.)
    assert!(s.peak_rss_mib() < before + 32, "peak RSS {} MiB", s.peak_rss_mib());
    // The control: the genuine form takes the file.
    let (status, body) = s.upload(&up, "a.bin", b"hello".to_vec()).await;
    assert_eq!(status, 201, "{body}");
}

/// Two uploads to one form: the one under way wins, the other is refused before its bytes
/// are kept, a later one is refused too, and only the winner's file exists afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_takes_one_upload_and_nothing_of_the_others_is_kept() {
    let s = Server::start(&[]).await;
    let (job, up) = upload_job(&s).await;
    let url = up["result"]["form"]["url"].as_str().unwrap().to_string();
    let first: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let body = streamed_form(form_fields(&up), first.clone(), Duration::from_secs(2), Arc::default());
    let slow = {
        let (s_http, url) = (s.http.clone(), url.clone());
        tokio::spawn(async move {
            let r = s_http
                .post(url)
                .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
                .body(body)
                .send()
                .await
                .unwrap();
            decode(r).await
        })
    };
    // The first upload holds the form once its file is being staged.
    staged_upload_appears(&s).await;
    let (status, body) = s.upload(&up, "second.bin", vec![9u8; 1_000_000]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("in progress"), "{body}");
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = s.upload(&up, "third.bin", vec![8u8; 1000]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("finished"), "{body}");

    let done = s.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let links = urls(task(&done, "out"));
    let (_, got) = s.download(&links[0].1).await;
    assert!(got == first, "the download is not the first upload's file");
    let job_dir = s.data_dir.join("files").join(job["id"].as_str().unwrap());
    let stored = files_under(&job_dir);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(files_under(&s.data_dir.join("staging")).is_empty());
}

/// Deleting a job ends an upload still arriving, and leaves no file of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_ends_its_upload_and_removes_the_file() {
    let s = Server::start(&[]).await;
    let (job, up) = upload_job(&s).await;
    let url = up["result"]["form"]["url"].as_str().unwrap().to_string();
    let body = streamed_form(
        form_fields(&up),
        vec![1u8; 4 << 20],
        Duration::from_secs(60),
        Arc::default(),
    );
    let started = Instant::now();
    let slow = {
        let (http, url) = (s.http.clone(), url.clone());
        tokio::spawn(async move {
            http.post(url)
                .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    // The upload is under way: its staged file exists.
    staged_upload_appears(&s).await;
    let staging = s.data_dir.join("staging");
    let (status, _) = s
        .delete_as(&s.key, &format!("/v2/process/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert!(status == 200 || status == 204, "{status}");
    let answer = tokio::time::timeout(Duration::from_secs(10), slow).await;
    assert!(answer.is_ok(), "the upload went on after its job was deleted");
    if let Ok(Ok(Ok(status))) = answer {
        assert!(status >= 400, "{status}");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(files_under(&staging).is_empty(), "{:?}", files_under(&staging));
    assert!(!s.data_dir.join("files").join(job["id"].as_str().unwrap()).exists());
}

fn age(path: &std::path::Path, by: Duration) {
    let f = std::fs::File::open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - by).unwrap();
}

/// Files that belong to no job, and abandoned staged uploads, are swept; a live job's
/// files are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_no_job_are_swept() {
    let s = Server::start(&["--retention", "20"]).await;
    let job = s
        .run_job(json!({"tasks": {
            "in": {"operation": "import/base64", "file": b64(b"kept"), "filename": "kept.txt"},
        }}))
        .await;
    let live = s.data_dir.join("files").join(job["id"].as_str().unwrap());
    assert!(live.exists());
    // As old as the orphan: only the job's existence keeps it.
    age(&live, Duration::from_secs(3600));
    let orphan = s.data_dir.join("files").join("6f0c1d2e-0000-4000-8000-000000000000");
    std::fs::create_dir_all(orphan.join("t")).unwrap();
    std::fs::write(orphan.join("t").join("x.bin"), b"orphan").unwrap();
    age(&orphan, Duration::from_secs(3600));
    let stale = s.data_dir.join("staging").join("abandoned-upload");
    std::fs::write(&stale, b"half an upload").unwrap();
    age(&stale, Duration::from_secs(3600));
    let deadline = Instant::now() + Duration::from_secs(30);
    while (orphan.exists() || stale.exists()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!orphan.exists(), "a job directory of no job was kept");
    assert!(!stale.exists(), "an abandoned upload was kept");
    assert!(live.exists(), "a live job's files were swept");
}

async fn connect_from(ip: &str, server: &Server) -> TcpStream {
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until the server closes (true) or `within` passes (false).
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// One raw request; the status line and headers of the answer.
async fn raw_get(conn: &mut TcpStream, path: &str) -> String {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed() {
    let s = Server::start(&["--header-timeout", "2", "--idle-timeout", "2"]).await;
    let mut silent = connect_from("127.0.0.1", &s).await;
    let mut half = connect_from("127.0.0.1", &s).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    // A kept-alive connection answers twice in a row (the control), then goes idle.
    let mut kept = connect_from("127.0.0.1", &s).await;
    assert!(raw_get(&mut kept, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(raw_get(&mut kept, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut silent, Duration::from_secs(8)).await,
        "a silent connection stayed open"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(8)).await,
        "half-sent headers kept it open"
    );
    assert!(
        closed_within(&mut kept, Duration::from_secs(8)).await,
        "an idle keep-alive stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    let s = Server::start(&["--max-connections-per-ip", "5", "--header-timeout", "30"]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from("127.0.0.2", &s).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sixth = connect_from("127.0.0.2", &s).await;
    let answer = raw_get(&mut sixth, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 5"), "{answer}");
    // Another address is served (the cap is per address).
    let mut other = connect_from("127.0.0.1", &s).await;
    let answer = raw_get(&mut other, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
}

/// 300 silent connections against a server under a 256-descriptor limit, from several
/// addresses (each under the per-address cap): the server sheds the excess with 503 and
/// Retry-After instead of running out of descriptors, and recovers once they time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_descriptor_budget_are_shed_with_503() {
    let s = Server::start_with_nofile(256, &["--header-timeout", "4"]).await;
    let (_, limits) = s.get("/v2/limits").await;
    let budget = limits["data"]["max_connections"].as_u64().unwrap();
    assert!(budget < 256, "{limits}");
    let mut held = Vec::new();
    for i in 0..300 {
        let ip = format!("127.0.1.{}", 1 + i / 30);
        held.push(connect_from(&ip, &s).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut probe = connect_from("127.0.0.1", &s).await;
    let answer = raw_get(&mut probe, "/healthz").await;
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.to_ascii_lowercase().contains("retry-after"),
        "{answer}"
    );
    // The silent ones are closed at the header timeout; then the server serves again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut probe = connect_from("127.0.0.1", &s).await;
        if raw_get(&mut probe, "/healthz").await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the server never recovered");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(held);
}

/// By default one user gets half the slots, and a freed slot goes to the next user in
/// turn, not to the one who queued first: with two slots, Alice's four 3 s tasks queued
/// before Bob's, Bob starts with Alice's third (first come, first served would start him
/// after her fourth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_go_round_robin_between_users() {
    let fx = Fixture::start().await;
    let s = Server::start(&["--allow-private-networks", "--concurrency", "4"]).await;
    let (_, l) = s.get("/v2/limits").await;
    assert_eq!(l["data"]["max_concurrent_tasks_per_user"], 2, "{l}");
    drop(s);
    let s = Server::start(&[
        "--allow-private-networks",
        "--concurrency",
        "2",
        // Alice may take every slot; only the turn order lets Bob in.
        "--max-user-tasks",
        "4",
    ])
    .await;
    let slow = |secs: u32| json!({"tasks": {"slow": {"operation": "import/url", "url": fx.url(&format!("/slow/{secs}/images/photo_640x480.jpg"))}}});
    let mut alice = Vec::new();
    for _ in 0..4 {
        alice.push(s.create_job(slow(3)).await["id"].as_str().unwrap().to_string());
    }
    let (status, bob) = s.post_as(&s.other_key, "/v2/process/jobs", &slow(1)).await;
    assert_eq!(status, 201, "{bob}");
    let mut alice_starts = Vec::new();
    for id in &alice {
        let j = s.wait_job(id).await;
        assert_eq!(j["status"], "completed", "{j}");
        alice_starts.push(task(&j, "slow")["started_at"].as_str().unwrap().to_string());
    }
    let (_, bob) = s
        .get_as(
            &s.other_key,
            &format!("/v2/process/jobs/{}/wait?timeout=60", bob["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(bob["status"], "completed", "{bob}");
    let bob_start = task(&bob, "slow")["started_at"].as_str().unwrap().to_string();
    alice_starts.sort();
    // ISO timestamps of one format compare as strings.
    assert!(
        bob_start < alice_starts[3],
        "Bob waited for all of Alice's queue: Bob {bob_start}, Alice {alice_starts:?}"
    );
}

/// A server that trickles a byte a second is cut off at the minimum rate; with the floor
/// off (the control) the same download is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_download_is_cut_off_at_the_minimum_rate() {
    let fx = Fixture::start().await;
    let job = json!({"tasks": {"slow": {"operation": "import/url", "url": fx.url("/trickle")}}});
    let s = Server::start(&[
        "--allow-private-networks",
        "--transfer-timeout",
        "3",
        "--transfer-min-rate",
        "100",
    ])
    .await;
    let started = Instant::now();
    let done = s.run_job(job.clone()).await;
    let t = task(&done, "slow");
    assert_eq!(t["code"], "timeout", "{t}");
    assert!(
        t["message"].as_str().unwrap().contains("minimum of 100 bytes a second"),
        "{t}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    let control = Server::start(&[
        "--allow-private-networks",
        "--transfer-timeout",
        "3",
        "--transfer-min-rate",
        "0",
    ])
    .await;
    let j = control.create_job(job).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, j) = control
        .get(&format!("/v2/process/jobs/{}", j["id"].as_str().unwrap()))
        .await;
    assert_eq!(task(&j, "slow")["status"], "processing", "{j}");
}

fn make_video(w: u32, h: u32, secs: u32) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("rc-abuse-video-{}-{w}x{h}-{secs}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("v.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("color=c=blue:size={w}x{h}:rate=5:duration={secs}"))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_frames_and_length_are_held_to_their_limits() {
    let s = Server::start(&["--max-video-pixels", "1000000", "--max-duration", "5"]).await;
    let big = make_video(2000, 2000, 1);
    let long = make_video(64, 64, 10);
    let fine = make_video(64, 64, 1);
    let job = s
        .run_job(json!({"tasks": {
            "big": {"operation": "import/base64", "file": b64(&big), "filename": "big.mp4"},
            "long": {"operation": "import/base64", "file": b64(&long), "filename": "long.mp4"},
            "fine": {"operation": "import/base64", "file": b64(&fine), "filename": "fine.mp4"},
            "c-big": {"operation": "convert", "input": "big", "output_format": "webm", "ignore_error": true},
            "c-long": {"operation": "convert", "input": "long", "output_format": "webm", "ignore_error": true},
            "c-fine": {"operation": "convert", "input": "fine", "output_format": "webm"},
        }}))
        .await;
    let t = task(&job, "c-big");
    assert_eq!(t["code"], "limit_exceeded", "{t}");
    assert!(t["message"].as_str().unwrap().contains("2000x2000"), "{t}");
    let t = task(&job, "c-long");
    assert_eq!(t["code"], "limit_exceeded", "{t}");
    assert!(t["message"].as_str().unwrap().contains("limit is 5 s"), "{t}");
    assert_eq!(task(&job, "c-fine")["status"], "finished", "{job}");
}

/// pdftoppm under a memory limit of 32 MiB cannot render a 4000×4000 page (48 MB of
/// pixels) and the task says why; without the limit (the control) it renders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_run_within_a_memory_limit() {
    let pdf = pdf_page_pt(2880, 2880);
    let job = json!({"tasks": {
        "in": {"operation": "import/base64", "file": b64(&pdf), "filename": "big.pdf"},
        "png": {"operation": "convert", "input": "in", "output_format": "png", "options": {"resolution": 100}, "ignore_error": true},
    }});
    let limited = Server::start(&["--tool-memory", "32"]).await;
    let j = limited.run_job(job.clone()).await;
    let t = task(&j, "png");
    assert_eq!(t["status"], "failed", "{j}");
    assert_eq!(t["code"], "limit_exceeded", "{t}");
    assert!(t["message"].as_str().unwrap().contains("32 MiB"), "{t}");
    let control = Server::start(&[]).await;
    let j = control.run_job(job).await;
    assert_eq!(task(&j, "png")["status"], "finished", "{j}");
}

fn pdf_page_pt(w: i64, h: i64) -> Vec<u8> {
    one_page_pdf(w, h, b"1 0 0 rg 0 0 100 100 re f", false)
}

#[tokio::test]
async fn downloads_honour_range_and_etag() {
    let s = Server::start(&[]).await;
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 256) as u8).collect();
    let job = s
        .run_job(json!({"tasks": {
            "in": {"operation": "import/base64", "file": b64(&content), "filename": "data.bin"},
            "out": {"operation": "export/url", "input": "in"},
        }}))
        .await;
    let url = urls(task(&job, "out"))[0].1.clone();
    let whole = s.http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let etag = whole.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(whole.bytes().await.unwrap().to_vec(), content);

    let part = s.http.get(&url).header("range", "bytes=100-199").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(part.headers()["content-length"], "100");
    assert_eq!(part.bytes().await.unwrap().to_vec(), content[100..200].to_vec());

    let tail = s.http.get(&url).header("range", "bytes=-10").send().await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().to_vec(), content[9990..].to_vec());

    let past = s.http.get(&url).header("range", "bytes=10000-").send().await.unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], "bytes */10000");

    let same = s.http.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(same.status(), 304);
    // If-Range with another version: the whole file.
    let other = s
        .http
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(other.bytes().await.unwrap().len(), 10_000);
}

/// LibreOffice's profile lives in a private directory inside the data directory, not in
/// the shared /tmp, and a clean stop removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_scratch_directories_are_private_and_removed_at_stop() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Server::start(&[]).await;
    let job = s
        .run_job(json!({"tasks": {
            "in": {"operation": "import/base64", "file": b64(b"Hello from a text file"), "filename": "a.txt"},
            "pdf": {"operation": "convert", "input": "in", "output_format": "pdf"},
        }}))
        .await;
    assert_eq!(task(&job, "pdf")["status"], "finished", "{job}");
    let pid = s.pid();
    let in_tmp: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("runconvert-office-{pid}-"))
        })
        .collect();
    assert!(in_tmp.is_empty(), "{in_tmp:?}");
    let scratch = s.data_dir.join("tmp");
    let mode = std::fs::metadata(&scratch).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let office: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("office-"))
        .collect();
    assert_eq!(office.len(), 1, "{office:?}");
    assert_eq!(office[0].metadata().unwrap().permissions().mode() & 0o777, 0o700);
    for d in ["work", "staging", "files"] {
        let mode = std::fs::metadata(s.data_dir.join(d)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{d}");
    }
    let status = s.terminate();
    assert!(status.success(), "{status}");
    assert!(!scratch.exists(), "the scratch directory outlived a clean stop");
}

#[tokio::test]
async fn every_option_is_checked_when_the_job_is_created() {
    let s = Server::start(&[]).await;
    let with = |options: Value| {
        json!({"tasks": {
            "in": {"operation": "import/base64", "file": b64(b"x"), "filename": "a.png"},
            "w": {"operation": "watermark", "input": "in", "text": "hi", "options": options},
        }})
    };
    let job_with = |filename: &str, task: Value| {
        json!({"tasks": {
            "in": {"operation": "import/base64", "file": b64(b"x"), "filename": filename},
            "t": task,
        }})
    };
    for (job, field) in [
        (with(json!({"font_color": "zzzzzzz"})), "font_color"),
        (with(json!({"font_color": "#12345"})), "font_color"),
        (
            job_with(
                "a.pdf",
                json!({"operation": "convert", "input": "in", "output_format": "png", "options": {"pages": "3-1"}}),
            ),
            "pages",
        ),
        (
            job_with(
                "a.mp4",
                json!({"operation": "convert", "input": "in", "output_format": "webm", "options": {"video_bitrate": "fast"}}),
            ),
            "video_bitrate",
        ),
    ] {
        let (status, body) = s.post("/v2/process/jobs", &job).await;
        assert_eq!(status, 400, "{job}: {body}");
        assert!(body.to_string().contains(field), "{body}");
    }
    // The control: good values are taken.
    let (status, body) = s
        .post("/v2/process/jobs", &with(json!({"font_color": "#ff0000"})))
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A one-page PDF whose content stream is `inflated` bytes of `q Q` pairs, deflated.
fn pdf_with_content(inflated: usize) -> Vec<u8> {
    let raw: Vec<u8> = b"q Q\n".iter().copied().cycle().take(inflated).collect();
    one_page_pdf(200, 200, &raw, true)
}

/// A PDF of a few hundred KB whose drawing instructions inflate to 40 MiB is refused
/// before a renderer spends its CPU on it; one of 8 MiB (the control) renders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_whose_content_inflates_past_the_limit_is_refused() {
    let s = Server::start(&["--max-pdf-content", "16"]).await;
    let bomb = pdf_with_content(40 << 20);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let fine = pdf_with_content(8 << 20);
    let job = s
        .run_job(json!({"tasks": {
            "bomb": {"operation": "import/base64", "file": b64(&bomb), "filename": "bomb.pdf"},
            "fine": {"operation": "import/base64", "file": b64(&fine), "filename": "fine.pdf"},
            "png-bomb": {"operation": "convert", "input": "bomb", "output_format": "png", "options": {"resolution": 10}, "ignore_error": true},
            "png-fine": {"operation": "convert", "input": "fine", "output_format": "png", "options": {"resolution": 10}},
        }}))
        .await;
    let t = task(&job, "png-bomb");
    assert_eq!(t["code"], "limit_exceeded", "{t}");
    assert!(t["message"].as_str().unwrap().contains("16 MiB"), "{t}");
    assert_eq!(task(&job, "png-fine")["status"], "finished", "{job}");
}
