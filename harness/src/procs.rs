//! Child processes the harness starts (`dmadev`, `lnetd`): located next to our own binary or run
//! as `lnetlab <daemon>`, killed with us even by SIGKILL, and scratch directories that outlive us.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start one of our daemons: `lnetlab` is multi-call, so its own path works (a program
/// embedding the harness, such as a test, points `LNETLAB_BIN` at an `lnetlab` binary).
/// The daemon dies with us (parent-death signal) and sits in its own process group, so a
/// Ctrl-C at the terminal reaches only us and we tear it down in order.
pub fn daemon_command(name: &str) -> std::io::Result<Command> {
    let me = match std::env::var_os("LNETLAB_BIN") {
        Some(p) => p.into(),
        None => std::env::current_exe()?,
    };
    let mut c = Command::new(me);
    c.arg(name);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (setpgid, prctl, getppid, _exit) between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::setpgid(0, 0);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // We may have died between fork and prctl: then nobody will signal.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    Ok(c)
}

/// A child process that dies with its handle.
pub struct Guard {
    pub child: Child,
    pub what: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dmadev` for fabric directory `dir`, logging to `dir/dmadev.log`, and waits until it
/// accepts connections. Its stdin is a pipe we hold: it exits when that closes.
/// `token`: the run's secret, for a device that links to other hosts' devices (passed in the
/// environment, never on the command line, where `ps` and logs would show it).
pub fn start_dmadev(dir: &Path, timeout: Duration, extra: &[String], token: Option<&str>) -> anyhow::Result<Guard> {
    // Appended to: a restarted device keeps the log (and the faults counted from it).
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dmadev.log"))?;
    let mut cmd = daemon_command("dmadev")?;
    if let Some(t) = token {
        cmd.env(lnd::daemon::endpoint::TOKEN_ENV, t);
    }
    let child = cmd.arg("--fabric").arg(dir).args(extra).arg("--exit-on-stdin-close").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(log).spawn()?;
    let mut g = Guard { child, what: format!("dmadev for {}", dir.display()) };
    let sock: PathBuf = dir.join(lnd::dev::proto::SOCK_NAME);
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if let Some(st) = g.child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("dmadev.log")).unwrap_or_default();
            anyhow::bail!("dmadev exited ({st}) before serving {}:\n{log}", sock.display());
        }
        if t0.elapsed() > timeout {
            anyhow::bail!("dmadev did not serve {} within {timeout:?}", sock.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(g)
}

/// The address a linked `dmadev` (`--link-listen`) accepts links on: it writes it to
/// `dir/link.addr` once it listens.
pub fn link_addr(dir: &Path, timeout: Duration) -> anyhow::Result<String> {
    let t0 = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("link.addr")) {
            return Ok(a.trim().to_string());
        }
        anyhow::ensure!(t0.elapsed() < timeout, "dmadev for {} did not say where it accepts links within {timeout:?}", dir.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the `dmadev` writing statistics to `stats` (`--stats`) has `want` links up.
pub fn wait_links_up(stats: &Path, want: u64, timeout: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let up = std::fs::read(stats).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).and_then(|v| v["links_up"].as_u64());
        if up >= Some(want) {
            return Ok(());
        }
        anyhow::ensure!(t0.elapsed() < timeout, "linked to {} of {want} other hosts within {timeout:?}", up.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh secret for one run (128 bits from the kernel's random source, as hex): what opens
/// its fabric links and control endpoints. Never logged.
pub fn run_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The run's secret: the caller's (`LNETLAB_CONTROL_TOKEN`, a CI secret, say), else a fresh one;
/// `None` only when the kernel's random source cannot be read.
pub fn this_run_token() -> Option<String> {
    lnd::daemon::endpoint::token_from_env().ok().or_else(|| run_token().ok())
}

/// A process as identified by its pid and start time (clock ticks after boot), so a reused
/// pid is never mistaken for the process that had it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

impl ProcId {
    /// This process.
    pub fn me() -> ProcId {
        let pid = std::process::id() as i32;
        ProcId { pid, start: start_time(pid).unwrap_or(0) }
    }

    /// Is the very process that had this identity still there (a zombie counts as gone)?
    pub fn alive(&self) -> bool {
        self.pid > 0 && start_time(self.pid) == Some(self.start)
    }
}

/// The start time of `pid` (field 22 of `/proc/PID/stat`), `None` if there is no such live process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    if f.first() == Some(&"Z") || f.first() == Some(&"X") {
        return None;
    }
    f.get(19)?.parse().ok()
}

/// The mark a scratch directory carries: who owns it.
const OWNER: &str = "lnetlab-owner.json";
/// The prefix of run scratch directories in the temp directory.
pub const SCRATCH_PREFIX: &str = "lnetlab-run-";

/// A scratch directory for a run, marked with our pid and start time (removed on drop; if we
/// are killed first, the next run or `down --all` reaps it).
pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let d = tempfile::Builder::new().prefix(SCRATCH_PREFIX).tempdir()?;
    let mut f = std::fs::File::create(d.path().join(OWNER))?;
    writeln!(f, "{}", serde_json::to_string(&ProcId::me()).map_err(std::io::Error::other)?)?;
    Ok(d)
}

/// Removes the scratch directories in `tmp` whose owner is provably gone (ours are marked;
/// an unmarked or unreadable one is left alone). Returns what was removed.
pub fn reap_scratch(tmp: &Path) -> Vec<PathBuf> {
    let mut gone = Vec::new();
    for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let p = e.path();
        if !e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(p.join(OWNER)) else { continue };
        let Ok(owner) = serde_json::from_str::<ProcId>(text.trim()) else { continue };
        if !owner.alive() && std::fs::remove_dir_all(&p).is_ok() {
            tracing::info!("reaped {} (its run, pid {}, is gone)", p.display(), owner.pid);
            gone.push(p);
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tells_a_live_process_from_a_reused_pid() {
        let me = ProcId::me();
        assert!(me.start > 0 && me.alive());
        assert!(!ProcId { start: me.start + 1, ..me }.alive());
        assert!(!ProcId { pid: i32::MAX, start: 1 }.alive());
    }

    #[test]
    fn reaps_only_scratch_of_gone_owners() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str, owner: Option<ProcId>| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            if let Some(o) = owner {
                std::fs::write(d.join(OWNER), serde_json::to_string(&o).unwrap()).unwrap();
            }
        };
        let me = ProcId::me();
        mk("lnetlab-run-live", Some(me));
        mk("lnetlab-run-dead", Some(ProcId { start: me.start + 7, ..me }));
        mk("lnetlab-run-unmarked", None);
        mk("other-dead", Some(ProcId { start: me.start + 7, ..me }));
        let gone = reap_scratch(tmp.path());
        assert_eq!(gone, vec![tmp.path().join("lnetlab-run-dead")]);
        for d in ["lnetlab-run-live", "lnetlab-run-unmarked", "other-dead"] {
            assert!(tmp.path().join(d).exists(), "{d}");
        }
    }
}
