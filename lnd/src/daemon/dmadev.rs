//! `dmadev --fabric DIR [--log FILE] [--seed N] [--faults JSON] [--pcap FILE]`: the emulated DMA device
//! process of one fabric (`--faults '{"corrupt":6,"txfail":20,"late":10,"late_ms":50}'`); with
//! `--host N [--link-listen ADDR] [--link H=ADDR]...` one of several hosts' devices of a fabric,
//! linked over TCP (the run's token from `LNETLAB_CONTROL_TOKEN` opens each link). On an
//! orchestrator, `--host IP --link-dns NAME:PORT`: the host is numbered by its address and
//! links to every device NAME resolves to (those numbered below it dial, the rest are dialled).

use crate::dev::server::DevServer;
use std::path::PathBuf;

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let a = super::parse_args(args, &["fabric", "log", "seed", "corrupt-rate", "faults", "pcap", "cut", "control", "host", "link-listen", "link", "link-dns", "link-cut", "stats", "probe-links"], &["exit-on-stdin-close", "probe"])?;
    if let Some(c) = a.get("cut") {
        // Cut or heal two addresses of the device serving this fabric (from inside a container).
        let dir = PathBuf::from(a.get("fabric").ok_or_else(|| anyhow::anyhow!("--fabric DIR is required"))?);
        let Command::Cut(x, y, on) = parse_command(&format!("cut {c}")).map_err(|e| anyhow::anyhow!("--cut `{c}`: {e}"))?;
        return crate::dev::client::cut(&dir, x, y, on).map_err(|e| anyhow::anyhow!("--cut `{c}`: {e}"));
    }
    if let Some(c) = a.get("link-cut") {
        // Cut or restore this device's link to another host's device (from inside a container).
        let dir = PathBuf::from(a.get("fabric").ok_or_else(|| anyhow::anyhow!("--fabric DIR is required"))?);
        let (host, on) = parse_link_cut(c).map_err(|e| anyhow::anyhow!("--link-cut `{c}`: {e}"))?;
        return crate::dev::client::cut_link(&dir, host, on).map_err(|e| anyhow::anyhow!("--link-cut `{c}`: {e}"));
    }
    if let Some(n) = a.get("probe-links") {
        // Has the device writing `--stats FILE` this many links up? (Asked inside a container.)
        let want: u64 = n.parse().map_err(|_| anyhow::anyhow!("--probe-links `{n}` is not a number"))?;
        let f = a.get("stats").ok_or_else(|| anyhow::anyhow!("--probe-links needs --stats FILE (the device's)"))?;
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f).map_err(|e| anyhow::anyhow!("{f}: {e}"))?)?;
        let up = v["links_up"].as_u64().unwrap_or(0);
        anyhow::ensure!(up >= want, "{up} of {want} links up");
        return Ok(());
    }
    if a.get("probe").is_some() {
        // Is a device serving this fabric? (Asked from inside a container, where the fabric is.)
        let dir = PathBuf::from(a.get("fabric").ok_or_else(|| anyhow::anyhow!("--fabric DIR is required"))?);
        std::os::unix::net::UnixStream::connect(dir.join(crate::dev::proto::SOCK_NAME)).map_err(|e| anyhow::anyhow!("no device serves {}: {e}", dir.display()))?;
        return Ok(());
    }
    super::init_logging(a.get("log"))?;
    let dir = PathBuf::from(a.get("fabric").ok_or_else(|| anyhow::anyhow!("--fabric DIR is required"))?);
    let seed = match a.get("seed") {
        Some(s) => Some(s.parse().map_err(|_| anyhow::anyhow!("--seed `{s}` is not a number"))?),
        None => None,
    };
    let seed = device_secret(seed)?;
    let mut server = DevServer::bind(&dir, seed).map_err(|e| anyhow::anyhow!("dmadev: cannot serve {}: {e}", dir.display()))?;
    if let Some(r) = a.get("corrupt-rate") {
        let rate: u32 = r.parse().map_err(|_| anyhow::anyhow!("--corrupt-rate `{r}` is not a number"))?;
        server.engine().lock().unwrap().set_corrupt_rate(rate, seed);
    }
    if let Some(p) = a.get("pcap") {
        let c = crate::dev::capture::FabricCapture::append_to(std::path::Path::new(p), true).map_err(|e| anyhow::anyhow!("--pcap {p}: {e}"))?;
        server.engine().lock().unwrap().set_capture(c);
    }
    if let Some(f) = a.get("faults") {
        let cfg: crate::dev::engine::FaultConfig = serde_json::from_str(f).map_err(|e| anyhow::anyhow!("--faults `{f}`: {e} (fields: corrupt, txfail, pullfail, mailbox, late, late_ms, lost)"))?;
        tracing::info!(?cfg, "injecting device faults");
        server.engine().lock().unwrap().set_faults(cfg, seed);
    }
    if let Some(cfg) = link_config(&a)? {
        let bound = server.link(cfg).map_err(|e| anyhow::anyhow!("--link-listen: {e}"))?;
        if let Some(b) = bound {
            // Where the harness (and other hosts' devices) find this one's links.
            std::fs::write(dir.join("link.addr"), b.to_string())?;
        }
    }
    if let Some(f) = a.get("stats") {
        write_stats(server.engine(), PathBuf::from(f));
    }
    if let Some(addr) = a.get("control") {
        // Commands (`cut A B on|off`) over TCP from the run's harness on another host.
        let token = super::endpoint::token_from_env()?;
        let remote = super::endpoint::Remote::default();
        let (engine, out) = (server.engine(), remote.clone());
        let bound = super::endpoint::serve(addr, token, remote, move |l| {
            let reply = match parse_command(&l) {
                Ok(Command::Cut(x, y, on)) => {
                    tracing::info!(x, y, on, "fabric cut (control endpoint)");
                    engine.lock().unwrap().set_cut(x, y, on);
                    serde_json::json!({"ok": l.trim()})
                }
                Err(e) => serde_json::json!({"error": e}),
            };
            super::endpoint::copy_to(&out, &reply.to_string());
            true
        })?;
        println!("{}", serde_json::json!({"control": bound.to_string()}));
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

/// `--host`, `--link-listen` and `--link H=ADDR`: this device's place in a fabric across hosts.
fn link_config(a: &super::Args) -> anyhow::Result<Option<crate::dev::linkio::LinkConfig>> {
    let Some(h) = a.get("host") else {
        if a.get("link-listen").is_some() || !a.all("link").is_empty() || a.get("link-dns").is_some() {
            anyhow::bail!("--link-listen, --link and --link-dns need --host N (this device's host number, or its IPv4 address)");
        }
        return Ok(None);
    };
    let discover = a.get("link-dns").map(|d| -> anyhow::Result<String> {
        let (name, port) = d.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("--link-dns `{d}`: expected NAME:PORT"))?;
        port.parse::<u16>().map_err(|_| anyhow::anyhow!("--link-dns `{d}`: `{port}` is not a port"))?;
        anyhow::ensure!(!name.is_empty(), "--link-dns `{d}`: empty NAME");
        Ok(d.to_string())
    });
    let discover = discover.transpose()?;
    let host: u32 = match (h.parse::<u32>(), h.parse::<std::net::Ipv4Addr>()) {
        (Ok(n), _) => n,
        (_, Ok(ip)) => u32::from(ip),
        // Numbered by the address of ours the other devices find (`tasks.SERVICE` on a swarm).
        _ if h == "auto" => match discover.as_deref() {
            Some(d) => u32::from(crate::dev::linkio::own_address_among(d, std::time::Duration::from_secs(60)).map_err(|e| anyhow::anyhow!("--host auto: {e}"))?),
            None => anyhow::bail!("--host auto needs --link-dns NAME:PORT (the name the devices find each other by)"),
        },
        _ => anyhow::bail!("--host `{h}` is neither a host number, an IPv4 address nor `auto`"),
    };
    let mut dial = Vec::new();
    for l in a.all("link") {
        let (n, addr) = l.split_once('=').ok_or_else(|| anyhow::anyhow!("--link `{l}`: expected HOST=ADDR:PORT"))?;
        let n: u32 = n.parse().map_err(|_| anyhow::anyhow!("--link `{l}`: `{n}` is not a host number"))?;
        addr.parse::<std::net::SocketAddr>().map_err(|e| anyhow::anyhow!("--link `{l}`: `{addr}`: {e}"))?;
        if n == host {
            anyhow::bail!("--link `{l}`: host {n} is this device's own");
        }
        dial.push((n, addr.to_string()));
    }
    let token = super::endpoint::token_from_env().map_err(|_| anyhow::anyhow!("fabric links need the run's token in {} (at least 16 characters)", super::endpoint::TOKEN_ENV))?;
    Ok(Some(crate::dev::linkio::LinkConfig { host, listen: a.get("link-listen").map(str::to_owned), dial, discover, token }))
}

/// Writes the device's statistics (and `links_up`, its fabric links up) as JSON to `path`
/// whenever they change (checked every 50 ms), replacing the file whole, so a reader never
/// sees half of it.
fn write_stats(engine: std::sync::Arc<std::sync::Mutex<crate::dev::engine::Engine>>, path: PathBuf) {
    std::thread::spawn(move || {
        let mut last = None;
        loop {
            let now = {
                let e = engine.lock().unwrap();
                (e.stats, e.links_up())
            };
            if last != Some(now) {
                let tmp = path.with_extension("tmp");
                let mut v = serde_json::to_value(now.0).expect("plain struct");
                v["links_up"] = now.1.into();
                if std::fs::write(&tmp, v.to_string()).and_then(|_| std::fs::rename(&tmp, &path)).is_err() {
                    tracing::warn!(path = %path.display(), "cannot write device statistics");
                }
                last = Some(now);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
}

fn parse_link_cut(c: &str) -> Result<(u32, bool), String> {
    match c.split_whitespace().collect::<Vec<_>>().as_slice() {
        [h, on] => Ok((h.parse().map_err(|_| format!("`{h}` is not a host number"))?, on_off(on)?)),
        _ => Err("expected `HOST on|off`".into()),
    }
}

/// `on` (cut) or `off` (heal).
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        x => Err(format!("`{x}`: expected on or off")),
    }
}

/// What `--cut` asks.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// Cut (`on`) or heal the fabric between two addresses: each side's sends to the other fail
    /// as if nobody were there, pulls fail at the puller.
    Cut(u32, u32, bool),
}

fn parse_command(line: &str) -> Result<Command, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let addr = |s: &str| s.parse::<u32>().map_err(|_| format!("`{s}` is not a fabric address"));
    match w.as_slice() {
        ["cut", a, b, on] => Ok(Command::Cut(addr(a)?, addr(b)?, on_off(on)?)),
        _ => Err("expected `cut A B on|off`".into()),
    }
}

/// The key of the device's transmit cookies (and the seed of its fault generators): `--seed`
/// when given, so a run replays; otherwise fresh from the OS, never from the clock or pid.
fn device_secret(seed: Option<u64>) -> std::io::Result<u64> {
    match seed {
        Some(s) => Ok(s),
        None => os_random_u64(),
    }
}

/// Eight bytes from the kernel's random source (`getrandom(2)`, else `/dev/urandom`).
fn os_random_u64() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    // SAFETY: the kernel writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    }
    Ok(u64::from_ne_bytes(b))
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

#[cfg(test)]
mod tests {
    use super::{parse_command, Command};

    #[test]
    fn stdin_commands_parse_and_bad_ones_say_why() {
        assert_eq!(parse_command("cut 1 2 on"), Ok(Command::Cut(1, 2, true)));
        assert_eq!(parse_command("  cut 3 4 off "), Ok(Command::Cut(3, 4, false)));
        assert!(parse_command("cut 1 x on").unwrap_err().contains("`x` is not a fabric address"));
        assert!(parse_command("cut 1 2 maybe").unwrap_err().contains("on or off"));
        assert!(parse_command("reboot").unwrap_err().contains("expected"));
    }

    use super::device_secret;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn nanos() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
    }

    /// Issue 19: a device started without `--seed` keys its cookies from the OS random source:
    /// two such devices differ, and the key is no function of our pid and the time it started.
    #[test]
    fn without_a_seed_the_secret_is_random() {
        let pid = std::process::id() as u64;
        let before = nanos();
        let a = device_secret(None).unwrap();
        let b = device_secret(None).unwrap();
        let after = nanos();
        assert_ne!(a, b, "two devices started without a seed share a secret");
        for s in [a, b] {
            // Same pid, a start time inside [before, after]: a clock-and-pid key lands in there.
            let t = s ^ pid;
            assert!(!(before..=after).contains(&t), "secret {s:#x} is the start time {t} xor the pid");
        }
    }

    #[test]
    fn a_seed_gives_the_same_secret_every_time() {
        assert_eq!(device_secret(Some(7)).unwrap(), 7);
        assert_eq!(device_secret(Some(7)).unwrap(), device_secret(Some(7)).unwrap());
    }
}
