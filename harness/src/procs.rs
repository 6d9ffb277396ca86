//! Child processes the harness starts (`dmadev`, `lnetd`): located next to our own binary or run
//! as `lnetlab <daemon>`, killed and reaped on drop so nothing is left running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start one of our daemons: `lnetlab` is multi-call, so its own path works (a program
/// embedding the harness, such as a test, points `LNETLAB_BIN` at an `lnetlab` binary).
pub fn daemon_command(name: &str) -> std::io::Result<Command> {
    let me = match std::env::var_os("LNETLAB_BIN") {
        Some(p) => p.into(),
        None => std::env::current_exe()?,
    };
    let mut c = Command::new(me);
    c.arg(name);
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
/// accepts connections.
pub fn start_dmadev(dir: &Path, timeout: Duration, extra: &[String]) -> anyhow::Result<Guard> {
    // Appended to: a restarted device keeps the log (and the faults counted from it).
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dmadev.log"))?;
    let child = daemon_command("dmadev")?.arg("--fabric").arg(dir).args(extra).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?;
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
