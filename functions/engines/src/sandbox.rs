//! No network for the tools. Every external program an engine runs (LibreOffice and its
//! UNO client, Poppler, Tesseract, FFmpeg) starts in a network namespace of its own, which
//! has nothing but a loopback interface that is down: a document that names a URL, or the
//! Lambda runtime API on 127.0.0.1, cannot be reached from it, whatever the tool does.
//!
//! Making the namespace needs root (`CAP_SYS_ADMIN`) or unprivileged user namespaces; the
//! way that works is found once, by starting `/bin/true` with each. Where neither works
//! (AWS Lambda has neither), the tools run with the host's network, and what they may load
//! is bounded by the other layers only (the documents' links removed, LibreOffice's own
//! settings, FFmpeg's protocol list): docs/security.md says which.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// How tools are kept off the network on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A network namespace of their own (the server has the privilege).
    NetworkNamespace,
    /// A user namespace and in it a network namespace (unprivileged user namespaces).
    UserNetworkNamespace,
    /// Neither could be made: tools share the host's network.
    None,
}

impl Isolation {
    fn flags(self) -> Option<libc::c_int> {
        match self {
            Isolation::NetworkNamespace => Some(libc::CLONE_NEWNET),
            Isolation::UserNetworkNamespace => Some(libc::CLONE_NEWUSER | libc::CLONE_NEWNET),
            Isolation::None => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Isolation::NetworkNamespace => "a network namespace of their own (no network)",
            Isolation::UserNetworkNamespace => "a user and network namespace of their own (no network)",
            Isolation::None => "the host's network (no namespace could be made here)",
        }
    }
}

/// The isolation this host allows, found once.
pub fn isolation() -> Isolation {
    static FOUND: OnceLock<Isolation> = OnceLock::new();
    *FOUND.get_or_init(|| {
        for mode in [Isolation::NetworkNamespace, Isolation::UserNetworkNamespace] {
            let mut probe = Command::new("/bin/true");
            probe.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            apply(&mut probe, mode);
            if probe.status().map(|s| s.success()).unwrap_or(false) {
                return mode;
            }
        }
        Isolation::None
    })
}

/// Makes `cmd` start without network, the way [`isolation`] found. If the namespace
/// cannot be made at start (it could when probed), the program does not start at all.
pub fn no_network(cmd: &mut Command) {
    apply(cmd, isolation());
}

/// Starts `cmd` without network and within the task's limits: CPU time (`RLIMIT_CPU`:
/// the tool timeout times the CPUs, since CPU time adds up over a tool's threads; past it
/// the kernel stops the program) and memory (`RLIMIT_DATA`, which counts the heap and
/// private mappings but not the address space a program merely reserves). Neither is
/// raised above a hard limit the server was given.
pub fn confine(cmd: &mut Command, limits: &crate::EngineLimits) {
    no_network(cmd);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let cpu = limits.tool_timeout.as_secs().max(1).saturating_mul(cpus);
    let memory = limits.tool_memory;
    // SAFETY: getrlimit/setrlimit(2) between fork and exec affect only the child and
    // allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            let lower = |resource, soft: u64, hard: u64| {
                let mut cur = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(resource, &mut cur) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // rlim_t is u64 on Linux.
                let max: u64 = cur.rlim_max;
                let lim = libc::rlimit {
                    rlim_cur: soft.min(max),
                    rlim_max: hard.min(max),
                };
                if libc::setrlimit(resource, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            // SIGXCPU at the soft limit; the hard one a little later is a SIGKILL.
            lower(libc::RLIMIT_CPU, cpu, cpu.saturating_add(5))?;
            if memory > 0 {
                lower(libc::RLIMIT_DATA, memory, memory)?;
            }
            Ok(())
        });
    }
}

fn apply(cmd: &mut Command, mode: Isolation) {
    if let Some(flags) = mode.flags() {
        // SAFETY: unshare(2) between fork and exec touches only the child's own namespaces
        // and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(flags) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program started through `no_network` cannot connect to a listener of this process
    /// on loopback; the same program started plainly can (the control).
    #[test]
    fn tools_cannot_reach_loopback() {
        if isolation() == Isolation::None {
            eprintln!("no namespace can be made on this host; nothing to test");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
        let run = |isolate: bool| {
            let mut cmd = Command::new("bash");
            cmd.args(["-c", &script]).stderr(Stdio::null());
            if isolate {
                no_network(&mut cmd);
            }
            String::from_utf8_lossy(&cmd.output().unwrap().stdout).to_string()
        };
        assert_eq!(
            run(false).trim(),
            "connected",
            "control: without the namespace it connects"
        );
        assert_eq!(run(true).trim(), "", "inside the namespace nothing is reachable");
    }
}
