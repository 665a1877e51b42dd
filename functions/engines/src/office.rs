//! Office documents with LibreOffice. What a document links to is never loaded: the
//! links are removed first (`unlink`), the profile's settings forbid loading and
//! updating linked content, and LibreOffice runs without network (`sandbox`).
//! Two ways, one result:
//! - warm (the default when Debian's python3 has the `uno` module): one LibreOffice stays
//!   running, started by a manager thread with its own fresh profile, and each conversion
//!   is a small UNO client (assets/office_convert.py) that opens the document hidden,
//!   read-only and with macros never executed, and stores it with the output filter.
//!   The instance is replaced (new process, new profile) after 10 conversions and after
//!   any failure or timeout, and dies with the server (parent-death signal).
//! - cold (`soffice --headless --convert-to`): a fresh profile per conversion, used when
//!   warm is not available and to retry a conversion the warm instance failed.

use crate::tools::{run, Slots, Tool};
use crate::EngineLimits;
use runconvert_core::error::codes;
use runconvert_core::TaskError;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

pub const WRITER: &[&str] = &["docx", "doc", "odt", "rtf", "txt"];
pub const WRITER_OUT: &[&str] = &["pdf", "docx", "odt"];
pub const CALC: &[&str] = &["xlsx", "ods"];
pub const CALC_OUT: &[&str] = &["pdf", "xlsx", "ods"];
pub const IMPRESS: &[&str] = &["pptx", "odp"];
pub const IMPRESS_OUT: &[&str] = &["pdf", "pptx", "odp"];

/// Zipped documents larger than this when unpacked are refused (zip bombs).
const MAX_UNPACKED: u64 = 512 << 20;
const MAX_ENTRIES: usize = 10_000;

static SLOTS: Slots = Slots::new(1);

/// The UNO client, written next to each warm instance's profile.
const CLIENT: &str = include_str!("../assets/office_convert.py");
/// Conversions before the warm instance is replaced by a fresh one.
const RESTART_AFTER: u32 = 10;
const SOFFICE_BIN: &str = "/usr/lib/libreoffice/program/soffice.bin";
const UNO_PYTHON: &str = "/usr/bin/python3";

/// The running LibreOffice of the warm mode.
struct Instance {
    pid: i32,
    child: std::process::Child,
    pipe: String,
    dir: PathBuf,
    uses: u32,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the instance's own process group.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Request {
    src: PathBuf,
    dst: PathBuf,
    filter: &'static str,
    import_filter: &'static str,
    limits: EngineLimits,
    reply: std::sync::mpsc::Sender<Result<(), TaskError>>,
}

/// The warm manager: a thread that lives as long as the server and owns the instance
/// (the instance's parent-death signal is tied to this thread). `None` if warm mode
/// cannot work on this host.
fn warm() -> Option<&'static Mutex<std::sync::mpsc::Sender<Request>>> {
    static WARM: OnceLock<Option<Mutex<std::sync::mpsc::Sender<Request>>>> = OnceLock::new();
    WARM.get_or_init(|| {
        let usable = Path::new(SOFFICE_BIN).exists()
            && Command::new(UNO_PYTHON)
                .args(["-c", "import uno"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
        if !usable {
            return None;
        }
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("office-warm".into())
            .spawn(move || {
                let mut instance: Option<Instance> = None;
                let mut started = 0u64;
                for req in rx {
                    if instance.is_none() {
                        started += 1;
                        instance = start_instance(started).ok();
                    }
                    let result = match &mut instance {
                        Some(inst) => {
                            let mut cmd = Command::new(UNO_PYTHON);
                            own_env(&mut cmd, &inst.dir.join("profile"));
                            cmd.arg(inst.dir.join("convert.py"))
                                .arg(&inst.pipe)
                                .arg(&req.src)
                                .arg(&req.dst)
                                .arg(req.filter)
                                .arg(req.import_filter);
                            let r = run(cmd, "LibreOffice", &req.limits);
                            inst.uses += 1;
                            r
                        }
                        None => Err(TaskError::new(
                            codes::PROCESSING_FAILED,
                            "LibreOffice could not be started",
                        )),
                    };
                    if result.is_err() || instance.as_ref().is_some_and(|i| i.uses >= RESTART_AFTER) {
                        instance = None; // killed; a fresh one next time
                    }
                    let _ = req.reply.send(result);
                }
            })
            .ok()?;
        Some(Mutex::new(tx))
    })
    .as_ref()
}

fn start_instance(n: u64) -> std::io::Result<Instance> {
    // Private (0700, an unguessable name) under the server's data directory, not in the
    // shared /tmp; removed when the instance goes, and with its root at a clean stop.
    let dir = crate::scratch::private_dir("office")?;
    std::fs::create_dir_all(dir.join("profile"))?;
    write_settings(&dir.join("profile"))?;
    std::fs::write(dir.join("convert.py"), CLIENT)?;
    // The pipe's name is as unguessable as the directory's.
    let pipe = format!(
        "runconvert-{}-{n}-{}",
        std::process::id(),
        dir.file_name().and_then(|f| f.to_str()).unwrap_or_default()
    );
    let profile_url = format!("-env:UserInstallation=file://{}", dir.join("profile").display());
    // A new profile is set up by a first start that ends by itself (soffice.bin would
    // otherwise exit asking for a restart, which only the `soffice` wrapper handles).
    let mut init = Command::new(SOFFICE_BIN);
    own_env(&mut init, &dir.join("profile"));
    init.args(["--headless", "--norestore", "--terminate_after_init"])
        .arg(&profile_url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    crate::sandbox::no_network(&mut init);
    let mut init = init.spawn()?;
    let started = std::time::Instant::now();
    while init.try_wait()?.is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = init.kill();
            let _ = init.wait();
            return Err(std::io::Error::other("LibreOffice did not set up its profile"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut cmd = Command::new(SOFFICE_BIN);
    own_env(&mut cmd, &dir.join("profile"));
    cmd.args([
        "--headless",
        "--invisible",
        "--norestore",
        "--nologo",
        "--nodefault",
        "--nolockcheck",
        "--nofirststartwizard",
    ])
    .arg(format!("--accept=pipe,name={pipe};urp;"))
    .arg(&profile_url)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .process_group(0);
    crate::sandbox::no_network(&mut cmd);
    // SAFETY: prctl in the child before exec; it only sets the parent-death signal so
    // the instance dies with the thread that started it (which lives as long as the server).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(Instance {
        pid: child.id() as i32,
        child,
        pipe,
        dir,
        uses: 0,
    })
}

#[derive(Debug, Clone)]
pub struct Office {
    pub tool: Tool,
}

impl Office {
    pub fn find(probe_version: bool) -> Option<Self> {
        let pick = |l: &str| l.split_whitespace().nth(1).map(String::from);
        Tool::find("soffice", &["--version"], probe_version, pick).map(|tool| Office { tool })
    }

    /// The output filter LibreOffice needs for a format.
    fn filter(output: &str) -> &'static str {
        match output {
            "pdf" => "pdf",
            "docx" => "docx:MS Word 2007 XML",
            "odt" => "odt",
            "xlsx" => "xlsx:Calc MS Excel 2007 XML",
            "ods" => "ods",
            "pptx" => "pptx:Impress MS PowerPoint 2007 XML",
            _ => "odp",
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn convert(
        &self,
        input: &Path,
        name: &str,
        format: &str,
        out: &Path,
        output: &str,
        work: &Path,
        limits: &EngineLimits,
    ) -> Result<(), TaskError> {
        check_unpacked_size(input, name, format)?;
        let n = std::process::id() as u64
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0));
        let dir = work.join(format!("office-{n:x}"));
        let profile = dir.join("profile");
        let outdir = dir.join("out");
        for d in [&profile, &outdir] {
            std::fs::create_dir_all(d).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?;
        }
        // The profile is given as a file:// URL, which must be absolute.
        let dir = std::fs::canonicalize(&dir).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?;
        let (profile, outdir) = (dir.join("profile"), dir.join("out"));
        // A plain, known name; the document without its links to outside content.
        let src = dir.join(format!("document.{format}"));
        crate::unlink::strip(input, format, &src, name)?;
        let mut cmd = Command::new(&self.tool.path);
        own_env(&mut cmd, &profile);
        cmd.args([
            "--headless",
            "--norestore",
            "--nologo",
            "--nodefault",
            "--nolockcheck",
            "--nofirststartwizard",
        ])
        .arg(format!("-env:UserInstallation=file://{}", profile.display()))
        // The import filter of the declared format: content is never re-detected as
        // another type (HTML, say, which would load its images).
        .arg(format!("--infilter={}", import_filter(format)))
        .args(["--convert-to", Self::filter(output), "--outdir"])
        .arg(&outdir)
        .arg(&src)
        .current_dir(&dir);
        let warm_result = warm().map(|manager| {
            let (reply, answer) = std::sync::mpsc::channel();
            let req = Request {
                src: src.clone(),
                dst: outdir.join(format!("document.{output}")),
                filter: uno_filter(format, output),
                import_filter: import_filter(format),
                limits: limits.clone(),
                reply,
            };
            let sent = manager.lock().map(|tx| tx.send(req).is_ok()).unwrap_or(false);
            if sent {
                answer
                    .recv()
                    .unwrap_or_else(|_| Err(TaskError::new(codes::PROCESSING_FAILED, "LibreOffice manager stopped")))
            } else {
                Err(TaskError::new(codes::PROCESSING_FAILED, "LibreOffice manager stopped"))
            }
        });
        let result = match warm_result {
            Some(Ok(())) => Ok(()),
            // Cold, with a fresh profile: the answer the user gets if this fails too.
            _ => {
                let _slot = SLOTS.acquire();
                // The cold profile gets the same settings as the warm one's, only when used.
                write_settings(&profile)
                    .map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))
                    .and_then(|()| run(cmd, "LibreOffice", limits))
            }
        };
        let produced = outdir.join(format!("document.{output}"));
        let moved = result.and_then(|()| {
            std::fs::rename(&produced, out).map_err(|_| {
                TaskError::new(
                    codes::INVALID_FILE,
                    format!("LibreOffice could not convert {name} to {output} (is it a valid {format} file?)"),
                )
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
        moved
    }
}

/// The import filter of each accepted format, so LibreOffice never picks another by
/// looking at the content.
fn import_filter(format: &str) -> &'static str {
    match format {
        "docx" => "MS Word 2007 XML",
        "doc" => "MS Word 97",
        "odt" => "writer8",
        "rtf" => "Rich Text Format",
        "txt" => "Text (encoded):UTF8",
        "xlsx" => "Calc MS Excel 2007 XML",
        "ods" => "calc8",
        "pptx" => "Impress MS PowerPoint 2007 XML",
        _ => "impress8",
    }
}

/// LibreOffice and its UNO client start with an environment of their own: nothing of the
/// server's (credentials in the environment, as on Lambda, cannot be read out through a
/// document's fields or URLs).
fn own_env(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("TMPDIR", home);
}

/// LibreOffice's settings in a fresh profile: links in documents are never updated or
/// followed, nothing is loaded from outside, macros never run, formulas are not
/// recalculated on load (WEBSERVICE and external references keep their cached values).
const SETTINGS: &str = include_str!("../assets/registrymodifications.xcu");

fn write_settings(profile: &Path) -> std::io::Result<()> {
    let user = profile.join("user");
    std::fs::create_dir_all(&user)?;
    std::fs::write(user.join("registrymodifications.xcu"), SETTINGS)
}

/// The UNO export filter for a conversion.
fn uno_filter(input: &str, output: &str) -> &'static str {
    match output {
        "pdf" if CALC.contains(&input) => "calc_pdf_Export",
        "pdf" if IMPRESS.contains(&input) => "impress_pdf_Export",
        "pdf" => "writer_pdf_Export",
        "docx" => "MS Word 2007 XML",
        "odt" => "writer8",
        "xlsx" => "Calc MS Excel 2007 XML",
        "ods" => "calc8",
        "pptx" => "Impress MS PowerPoint 2007 XML",
        _ => "impress8",
    }
}

/// Refuses zipped documents that unpack to too much (or too many entries).
fn check_unpacked_size(input: &Path, name: &str, format: &str) -> Result<(), TaskError> {
    if !matches!(format, "docx" | "xlsx" | "pptx" | "odt" | "ods" | "odp") {
        return Ok(());
    }
    let file = std::fs::File::open(input).map_err(|e| TaskError::new(codes::PROCESSING_FAILED, e.to_string()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| TaskError::new(codes::INVALID_FILE, format!("{name} is not a valid {format} file: {e}")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(TaskError::new(
            codes::LIMIT_EXCEEDED,
            format!("{name} has {} parts; at most {MAX_ENTRIES} are accepted", zip.len()),
        ));
    }
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| TaskError::new(codes::INVALID_FILE, format!("{name}: {e}")))?;
        total = total.saturating_add(entry.size());
    }
    if total > MAX_UNPACKED {
        return Err(TaskError::new(
            codes::LIMIT_EXCEEDED,
            format!("{name} unpacks to {total} bytes (a zip bomb?); at most {MAX_UNPACKED} are accepted"),
        ));
    }
    Ok(())
}
