//! `dmadev --fabric DIR [--log FILE] [--seed N] [--faults JSON]`: the emulated DMA device
//! process of one fabric (`--faults '{"corrupt":6,"txfail":20,"late":10,"late_ms":50}'`).

use crate::dev::server::DevServer;
use std::path::PathBuf;

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let a = super::parse_args(args, &["fabric", "log", "seed", "corrupt-rate", "faults"], &["exit-on-stdin-close", "probe"])?;
    if a.get("probe").is_some() {
        // Is a device serving this fabric? (Asked from inside a container, where the fabric is.)
        let dir = PathBuf::from(a.get("fabric").ok_or_else(|| anyhow::anyhow!("--fabric DIR is required"))?);
        std::os::unix::net::UnixStream::connect(dir.join(crate::dev::proto::SOCK_NAME)).map_err(|e| anyhow::anyhow!("no device serves {}: {e}", dir.display()))?;
        return Ok(());
    }
    super::init_logging(a.get("log"))?;
    let dir = PathBuf::from(a.get("fabric").ok_or_else(|| anyhow::anyhow!("--fabric DIR is required"))?);
    let seed = match a.get("seed") {
        Some(s) => s.parse().map_err(|_| anyhow::anyhow!("--seed `{s}` is not a number"))?,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64 ^ std::process::id() as u64,
    };
    let server = DevServer::bind(&dir, seed).map_err(|e| anyhow::anyhow!("dmadev: cannot serve {}: {e}", dir.display()))?;
    if let Some(r) = a.get("corrupt-rate") {
        let rate: u32 = r.parse().map_err(|_| anyhow::anyhow!("--corrupt-rate `{r}` is not a number"))?;
        server.engine().lock().unwrap().set_corrupt_rate(rate, seed);
    }
    if let Some(f) = a.get("faults") {
        let cfg: crate::dev::engine::FaultConfig = serde_json::from_str(f).map_err(|e| anyhow::anyhow!("--faults `{f}`: {e} (fields: corrupt, txfail, pullfail, mailbox, late, late_ms, lost)"))?;
        tracing::info!(?cfg, "injecting device faults");
        server.engine().lock().unwrap().set_faults(cfg, seed);
    }
    // Terminate cleanly on SIGTERM/SIGINT so the socket file goes away.
    let path = server.path().to_path_buf();
    install_exit_handler(path);
    if a.get("exit-on-stdin-close").is_some() {
        // Whoever started us holds our stdin: when it goes (even by SIGKILL), so do we.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            tracing::info!("stdin closed; exiting");
            on_signal(0);
        });
    }
    server.run()?;
    Ok(())
}

static SOCK_PATH: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(p) = SOCK_PATH.get() {
        // SAFETY: unlink and _exit are async-signal-safe.
        unsafe { libc::unlink(p.as_ptr()) };
    }
    unsafe { libc::_exit(0) };
}

fn install_exit_handler(path: PathBuf) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        let _ = SOCK_PATH.set(c);
    }
    // SAFETY: installing a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}
