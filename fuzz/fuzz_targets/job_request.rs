//! A job request body → `validate_job` → (when valid) the job `new_job` would store →
//! the planner, driven until the job has an outcome. Nothing may panic, and every plan
//! must keep the planner's documented rules (see `runconvert_fuzz::check_plan`).
//!
//! Seeds: fuzz/seeds/job_request/*.json (run.sh copies them into fuzz/corpus/job_request).

#![no_main]

use libfuzzer_sys::fuzz_target;
use runconvert_core::formats::{Capability, OptionSpec, OptionType, Registry};
use runconvert_core::model::{Job, Task, UploadForm};
use runconvert_core::ops::{Kind, Operation};
use runconvert_core::validate::{validate_job, JobSpec, Limits};
use runconvert_core::Timestamp;
use serde_json::Value;
use std::sync::OnceLock;
use std::time::Duration;

/// As the unit tests of functions/core/src/validate.rs build it (imports, exports,
/// convert jpg→png, png→jpg, jpg→webp with a `width` option), plus what this build's
/// engines register (`register_all` without probing tool versions: tool-backed
/// capabilities appear only where pdftoppm, tesseract, ffmpeg, soffice are on PATH).
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::new();
        for &op in Operation::NAMES {
            if matches!(Operation::kind_of(op), Some(Kind::Import | Kind::Export)) {
                r.add_operation(op);
            }
        }
        for (i, o) in [("jpg", "png"), ("png", "jpg"), ("jpg", "webp")] {
            r.add(Capability {
                operation: "convert",
                input_format: i,
                output_format: o,
                engine: "image",
                engine_version: "1".into(),
                options: vec![OptionSpec {
                    name: "width",
                    kind: OptionType::Integer { min: 1, max: 10000 },
                    default: None,
                    description: "",
                }],
            });
        }
        runconvert_engines::process::register(&mut r, false);
        r
    })
}

/// What functions/http/src/jobs.rs `new_job` stores (the same `JobSpec::into_job`), with
/// ids from a counter and a fixed upload form.
fn new_job(spec: JobSpec, now: Timestamp) -> Job {
    let mut n = 0;
    let mut job = spec.into_job(
        "user-0",
        now,
        Duration::from_secs(3600),
        &mut || {
            n += 1;
            format!("id-{n}")
        },
        &|job_id, task_id, _| UploadForm {
            url: format!("http://127.0.0.1:8080/v2/upload/{job_id}/{task_id}"),
            parameters: serde_json::Map::new(),
        },
    );
    job.webhook_secret = job.webhook_url.as_ref().map(|_| "secret".to_string());
    job
}

fuzz_target!(|data: &[u8]| {
    // The HTTP layer answers 400 to a body that is not JSON: nothing more to test then.
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let spec = match validate_job(&value, registry(), &Limits::default()) {
        Ok(spec) => spec,
        Err(e) => {
            assert_eq!(e.status, 400, "validate_job refused with status {}: {e:?}", e.status);
            return;
        }
    };
    assert!(!spec.tasks.is_empty(), "a valid job has a task");
    // Tasks come after their inputs (the planner relies on it).
    for (i, t) in spec.tasks.iter().enumerate() {
        for input in &t.input {
            assert!(
                spec.tasks[..i].iter().any(|s| &s.name == input),
                "task {:?} comes before its input {input:?}",
                t.name
            );
        }
    }

    let now = Timestamp(0);
    let job = new_job(spec, now);

    // What the API shows and what the store keeps must come back as given.
    let _ = job.to_api_json();
    for t in &job.tasks {
        let stored = t.stored_payload();
        let (op, input, ignore_error, timeout) = Task::parse_stored_payload(&stored)
            .unwrap_or_else(|e| panic!("task {:?} cannot be read back from the store: {e}", t.name));
        assert_eq!(op, t.operation, "task {:?}: the stored operation changes", t.name);
        assert_eq!(input, t.input, "task {:?}: the stored input changes", t.name);
        assert_eq!(ignore_error, t.ignore_error);
        assert_eq!(timeout, t.timeout);
    }

    runconvert_fuzz::drive_to_end(job, now, runconvert_fuzz::fnv1a(data));
});
