//! Where running clusters are recorded, per user and at an absolute place: the `up` cluster
//! (one at a time, held by an exclusive lock), `run --keep` clusters, and the last one to end.

use crate::procs::ProcId;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("a cluster is already up ({what}); `lnetlab down` first")]
    AlreadyUp { what: String },
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
}

/// The state directory: `$LNETLAB_STATE_DIR`, else `$XDG_STATE_HOME/lnetlab`, else
/// `~/.local/state/lnetlab`, else `/tmp/lnetlab-UID`.
pub fn dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(d) = env("LNETLAB_STATE_DIR") {
        return d;
    }
    if let Some(d) = env("XDG_STATE_HOME") {
        return d.join("lnetlab");
    }
    if let Some(h) = env("HOME") {
        return h.join(".local/state/lnetlab");
    }
    PathBuf::from(format!("/tmp/lnetlab-{}", unsafe { libc::geteuid() }))
}

/// The state of the cluster `lnetlab up` keeps.
pub fn up_file() -> PathBuf {
    dir().join("up.json")
}

/// The state of the cluster `run --keep` by process `pid` keeps.
pub fn keep_file(pid: u32) -> PathBuf {
    dir().join(format!("keep-{pid}.json"))
}

/// The state of the last cluster that ended (for `lnetlab logs` after `down`).
pub fn last_file() -> PathBuf {
    dir().join("last.json")
}

fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |err| StateError::Io { path: path.display().to_string(), err }
}

/// Held for the life of an `lnetlab up` cluster: the exclusive lock on `up.lock` (released by
/// the kernel however the holder ends).
pub struct UpLock {
    _file: std::fs::File,
}

/// Takes the `up` lock, or says which cluster holds it.
pub fn lock_up() -> Result<UpLock, StateError> {
    let d = dir();
    std::fs::create_dir_all(&d).map_err(io(&d))?;
    let p = d.join("up.lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&p).map_err(io(&p))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(StateError::Io { path: p.display().to_string(), err });
        }
        let what = match read(&up_file()) {
            Some(v) => format!("cluster `{}`, lnetlab pid {}, artifacts {}", v["cluster"].as_str().unwrap_or("?"), v["pid"], v["artifacts"].as_str().unwrap_or("?")),
            None => "another `lnetlab up` is bringing one up".into(),
        };
        return Err(StateError::AlreadyUp { what });
    }
    Ok(UpLock { _file: f })
}

/// Writes a cluster's state (atomically: readers never see half of it), owned by this process.
pub fn write(path: &std::path::Path, mut st: Value) -> Result<(), StateError> {
    st["owner"] = serde_json::to_value(ProcId::me()).unwrap_or_default();
    st["pid"] = std::process::id().into();
    let d = dir();
    std::fs::create_dir_all(&d).map_err(io(&d))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string_pretty(&st).unwrap_or_default() + "\n").map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// A cluster's state, if the file is there and parses.
pub fn read(path: &std::path::Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Is the process that wrote `st` still the one running?
pub fn owner_alive(st: &Value) -> bool {
    serde_json::from_value::<ProcId>(st["owner"].clone()).is_ok_and(|o| o.alive())
}

/// Ends a cluster's record: it becomes the last cluster.
pub fn retire(path: &std::path::Path) {
    if let Some(mut st) = read(path).filter(|st| st["pid"] == std::process::id()) {
        st["ended"] = true.into();
        let _ = std::fs::write(last_file(), serde_json::to_string_pretty(&st).unwrap_or_default() + "\n");
        let _ = std::fs::remove_file(path);
    }
}

/// The live clusters: the `up` one first, then kept runs (stale records are removed).
pub fn live() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let up = up_file();
    if let Some(st) = read(&up).filter(owner_alive) {
        out.push((up, st));
    }
    for e in std::fs::read_dir(dir()).into_iter().flatten().flatten() {
        let p = e.path();
        if !e.file_name().to_string_lossy().starts_with("keep-") || p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match read(&p).filter(owner_alive) {
            Some(st) => out.push((p, st)),
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_a_gone_process_is_not_alive() {
        let mut st = serde_json::json!({"owner": ProcId::me()});
        assert!(owner_alive(&st));
        st["owner"]["start"] = (ProcId::me().start + 1).into();
        assert!(!owner_alive(&st));
        assert!(!owner_alive(&serde_json::json!({"pid": 1})));
    }
}
