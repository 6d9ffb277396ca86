//! `lnetlab up`: a cluster left running by a background copy of lnetlab (detached in its own
//! session, holding the `up` lock), waited on until it has recorded the cluster as up.

use std::path::PathBuf;

/// Brings the cluster of `file` up in the background (or, with `foreground`, is that copy).
pub fn up(file: PathBuf, seed: Option<u64>, artifacts: Option<PathBuf>, backend: String, foreground: bool) -> anyhow::Result<()> {
    let state = crate::state::up_file();
    // Held until this process ends; the background copy takes it for the cluster's life.
    let lock = crate::state::lock_up()?;
    if foreground {
        let _lock = lock;
        crate::interrupt::install_interrupt_handler();
        let opts = crate::cluster::run::RunOpts { file, seed, keep: false, json: false, artifacts, backend, timeout: std::time::Duration::from_secs(120), up_only: Some(state), only: None, capture: false };
        let r = crate::cluster::run::run(&opts)?;
        if let Some(e) = r.error {
            anyhow::bail!("{e}");
        }
        return Ok(());
    }
    // Validate first so errors show here, not in a background log.
    crate::cluster::spec::ClusterSpec::load(&file)?;
    drop(lock);
    // Each `up` its own bring-up log: two at once must not read each other's.
    let log = state.with_file_name(format!("up-{}.log", std::process::id()));
    let mut c = std::process::Command::new(std::env::current_exe()?);
    c.arg("up").arg(&file).arg("--foreground").arg("--backend").arg(&backend);
    if let Some(s) = seed {
        c.arg("--seed").arg(s.to_string());
    }
    if let Some(a) = &artifacts {
        c.arg("--artifacts").arg(a);
    }
    let out = std::fs::File::create(&log)?;
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid in the child only detaches it from our session.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = c.stdin(std::process::Stdio::null()).stdout(out.try_clone()?).stderr(out).spawn()?;
    let t0 = std::time::Instant::now();
    // Ready when our own copy has recorded the cluster (not a stale record of another).
    while crate::state::read(&state).is_none_or(|st| st["pid"] != child.id()) {
        if let Some(st) = child.try_wait()? {
            anyhow::bail!("bring-up failed ({st}):\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        if t0.elapsed() > std::time::Duration::from_secs(120) {
            // Its nodes and devices die with it (parent-death signal); its scratch is
            // reaped by the next run.
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("bring-up did not finish in 120 s; see {}", log.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    print!("{}", std::fs::read_to_string(&log).unwrap_or_default());
    Ok(())
}
