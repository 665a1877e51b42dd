//! Imports and exports against real storage servers on loopback (moto for S3, Azurite
//! for Azure Blob, the GCS emulator, OpenSSH's sshd for SFTP), started by
//! `tests/services.sh`.

use runconvert_tests::stores::{self, Stores, S3_SECRET};
use runconvert_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn server(st: &Stores, extra: &[&str]) -> Server {
    let mut args: Vec<String> = st.server_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&refs).await
}

#[tokio::test]
async fn credentials_are_sealed_while_a_task_waits_and_survive_a_restart() {
    let st = Stores::from_env();
    let mut s = server(&st, &[]).await;
    let run = unique("sealed");
    let photo = std::fs::read(corpus_file("images/photo_640x480.jpg")).unwrap();
    stores::put(&st.s3("rc-in"), &format!("{run}/a.jpg"), photo.clone()).await;
    // The export waits on an upload that comes after the restart: its credentials sit
    // in the database meanwhile.
    let job = s
        .create_job(json!({"tasks": {
            "up": {"operation": "import/upload"},
            "out": merged(json!({"operation": "export/s3", "input": "up", "key": format!("{run}/b.jpg"),
                                 "acl": "public-read", "content_type": "image/x-test"}),
                          st.s3_fields("rc-out")),
        }}))
        .await;
    assert!(
        !bytes_contain(&database_bytes(&s.data_dir), S3_SECRET),
        "secret stored in clear"
    );
    s.kill_and_restart().await;
    let (status, _) = s.upload(task(&job, "up"), "a.jpg", photo.clone()).await;
    assert_eq!(status, 201);
    let done = s.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(stores::get(&st.s3("rc-out"), &format!("{run}/b.jpg")).await, photo);
    // The canned ACL and the content type were applied.
    let acl = stores::s3_get_acl(&st, "rc-out", &format!("{run}/b.jpg")).await;
    assert!(
        acl.contains("http://acs.amazonaws.com/groups/global/AllUsers") && acl.contains("READ"),
        "{acl}"
    );
    let head = {
        use object_store::ObjectStoreExt;
        st.s3("rc-out")
            .get(&object_store::path::Path::from(format!("{run}/b.jpg")))
            .await
            .unwrap()
    };
    assert_eq!(
        head.attributes
            .get(&object_store::Attribute::ContentType)
            .map(|v| v.to_string()),
        Some("image/x-test".to_string())
    );
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_large_file_round_trips_s3_streaming_with_small_memory() {
    use sha2::Digest;
    let st = Stores::from_env();
    let s = server(&st, &[]).await;
    let run = unique("large");
    // 320 MiB of incompressible bytes, made here, uploaded in parts.
    const SIZE: usize = 320 << 20;
    let src = st.s3("rc-in");
    let mut hasher = sha2::Sha256::new();
    {
        use object_store::ObjectStoreExt;
        let upload = src
            .put_multipart(&object_store::path::Path::from(format!("{run}/big.bin")))
            .await
            .unwrap();
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 16 << 20);
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..(SIZE >> 20) {
            for b in chunk.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b.copy_from_slice(&state.to_le_bytes());
            }
            hasher.update(&chunk);
            w.wait_for_capacity(2).await.unwrap();
            w.write(&chunk);
        }
        w.finish().await.unwrap();
    }
    let want = hex::encode(hasher.finalize());
    let rss_before = peak_rss_kib(s.pid());

    let job = s
        .create_job(json!({"tasks": {
            "in": merged(json!({"operation": "import/s3", "key": format!("{run}/big.bin")}), st.s3_fields("rc-in")),
            "out": merged(json!({"operation": "export/s3", "input": "in", "key": format!("{run}/copy.bin")}),
                          st.s3_fields("rc-out")),
        }}))
        .await;
    // The import's percent moves with the bytes.
    let import_id = task(&job, "in")["id"].as_str().unwrap().to_string();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..600 {
        let (_, t) = s.get(&format!("/v2/process/tasks/{import_id}")).await;
        if let Some(p) = t["percent"].as_u64() {
            seen.insert(p);
        }
        if t["status"] == "finished" || t["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = s.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert!(
        seen.iter().any(|p| (1..100).contains(p)),
        "the import's percent never showed progress between 0 and 100: {seen:?}"
    );

    // The copy is the same bytes.
    use futures_util::StreamExt;
    use object_store::ObjectStoreExt;
    let got = st
        .s3("rc-out")
        .get(&object_store::path::Path::from(format!("{run}/copy.bin")))
        .await
        .unwrap();
    assert_eq!(got.meta.size, SIZE as u64);
    let mut stream = got.into_stream();
    let mut hasher = sha2::Sha256::new();
    while let Some(c) = stream.next().await {
        hasher.update(c.unwrap());
    }
    assert_eq!(hex::encode(hasher.finalize()), want);

    let rss_after = peak_rss_kib(s.pid());
    eprintln!("server peak RSS: {rss_before} KiB before, {rss_after} KiB after a {SIZE}-byte S3 round trip");
    assert!(
        rss_after < 200 * 1024,
        "the server's peak memory reached {rss_after} KiB moving a {} MiB file",
        SIZE >> 20
    );
}

/// One failing task and what its error must say.
struct Bad {
    name: &'static str,
    task: Value,
    code: &'static str,
    says: &'static str,
}

#[tokio::test]
async fn bad_connector_input_fails_the_task_clearly_and_without_secrets() {
    let st = Stores::from_env();
    let s = server(&st, &["--transfer-timeout", "3"]).await;
    // A server that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((c, _)) = silent.accept().await {
                held.push(c);
            }
        }
    });
    let run = unique("bad");
    let mut wrong_azure = st.azure_fields("rc-in");
    wrong_azure["storage_access_key"] = json!("d3JvbmcgYnV0IHZhbGlkIGJhc2U2NCBrZXkgd2l0aCBlbm91Z2ggYnl0ZXM=");
    let mut wrong_sftp = st.sftp_password_fields();
    wrong_sftp["password"] = json!("not-the-password-9x");
    let mut stalled_sftp = st.sftp_password_fields();
    stalled_sftp["port"] = json!(silent_port);
    let cases = vec![
        Bad {
            name: "s3-missing-key",
            task: merged(
                json!({"operation": "import/s3", "key": format!("{run}/nothing.jpg")}),
                st.s3_fields("rc-in"),
            ),
            code: "file_not_found",
            says: "does not exist",
        },
        Bad {
            name: "s3-missing-bucket",
            task: merged(
                json!({"operation": "import/s3", "key": "a.jpg"}),
                st.s3_fields("no-such-bucket-runconvert"),
            ),
            code: "bucket_not_found",
            says: "no-such-bucket-runconvert",
        },
        Bad {
            name: "azure-wrong-key",
            task: merged(json!({"operation": "import/azure/blob", "blob": "x.jpg"}), wrong_azure),
            code: "access_denied",
            says: "refused the credentials",
        },
        Bad {
            name: "azure-missing-container",
            task: merged(
                json!({"operation": "import/azure/blob", "blob": "x.jpg"}),
                st.azure_fields("no-such-container"),
            ),
            code: "bucket_not_found",
            says: "does not exist",
        },
        Bad {
            name: "gcs-missing-object",
            task: merged(
                json!({"operation": "import/google-cloud-storage", "file": format!("{run}/none.jpg")}),
                st.gcs_fields("rc-in"),
            ),
            code: "file_not_found",
            says: "does not exist",
        },
        Bad {
            name: "sftp-wrong-password",
            task: merged(json!({"operation": "import/sftp", "file_string": "a.jpg"}), wrong_sftp),
            code: "access_denied",
            says: "refused the credentials",
        },
        Bad {
            name: "sftp-missing-file",
            task: merged(
                json!({"operation": "import/sftp", "file_string": format!("{run}/missing.jpg")}),
                st.sftp_password_fields(),
            ),
            code: "file_not_found",
            says: "no such file",
        },
        Bad {
            name: "sftp-stalls",
            task: merged(
                json!({"operation": "import/sftp", "file_string": "a.jpg"}),
                stalled_sftp,
            ),
            code: "timeout",
            says: "did not answer",
        },
        Bad {
            name: "sftp-nothing-listening",
            task: merged(
                st.sftp_password_fields(),
                json!({"operation": "import/sftp", "file_string": "a.jpg", "port": 1}),
            ),
            code: "download_failed",
            says: "cannot connect",
        },
    ];
    let mut t = serde_json::Map::new();
    for c in &cases {
        t.insert(c.name.to_string(), c.task.clone());
    }
    let started = std::time::Instant::now();
    let job = s.run_job(json!({ "tasks": t })).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(job["status"], "failed");
    for c in &cases {
        let t = task(&job, c.name);
        assert_eq!(t["status"], "failed", "{}: {t:#}", c.name);
        assert_eq!(t["code"], c.code, "{}: {t:#}", c.name);
        let msg = t["message"].as_str().unwrap();
        assert!(msg.contains(c.says), "{}: {msg}", c.name);
        for secret in [S3_SECRET, "not-the-password-9x", "d3JvbmcgYnV0", st.azure_key.as_str()] {
            assert!(!t.to_string().contains(secret), "{}: secret in {t}", c.name);
        }
    }

    // What can be known at creation is a 400 naming the field.
    for (body, field) in [
        (
            merged(
                json!({"operation": "import/sftp", "file_string": "../../etc/passwd"}),
                st.sftp_password_fields(),
            ),
            "file_string",
        ),
        (
            merged(
                json!({"operation": "export/s3", "input": "x", "key": "a/../../b"}),
                st.s3_fields("rc-out"),
            ),
            "key",
        ),
        (merged(json!({"operation": "import/s3"}), st.s3_fields("rc-in")), "key"),
        (
            json!({"operation": "import/azure/blob", "storage_account": "a", "container": "c", "blob": "b"}),
            "storage_access_key",
        ),
        (
            merged(
                st.s3_fields("rc-in"),
                json!({"operation": "import/s3", "key": "k", "endpoint": "file:///etc"}),
            ),
            "endpoint",
        ),
    ] {
        let mut tasks = serde_json::Map::new();
        tasks.insert(
            "x".into(),
            json!({"operation": "import/base64", "file": "aGk=", "filename": "a.txt"}),
        );
        tasks.insert("t".into(), body.clone());
        let (status, err) = s.post("/v2/process/jobs", &json!({ "tasks": tasks })).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(err["errors"][format!("tasks.t.{field}")].is_array(), "{field}: {err}");
        assert!(!err.to_string().contains(S3_SECRET));
    }
}
