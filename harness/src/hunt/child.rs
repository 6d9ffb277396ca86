//! One `lnetlab run` as a child process with a deadline: its report, or why there is none.

use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The last JSON object a `lnetlab run --json` printed.
pub fn report_of(stdout: &str) -> Option<Value> {
    stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l.trim()).ok().filter(|v| v.get("ok").is_some()))
}

/// Runs `spec` with `seed` on `backend` as a child `lnetlab run`; the report or why there is none.
pub fn run_one(spec: &Path, seed: u64, backend: &str, art: &Path, timeout: Duration, extra: &[String]) -> Result<Value, String> {
    let mut child = crate::procs::daemon_command("run")
        .map_err(|e| e.to_string())?
        .args([spec.as_os_str(), "--seed".as_ref(), seed.to_string().as_ref(), "--backend".as_ref(), backend.as_ref(), "--json".as_ref()])
        .args(["--timeout", &timeout.as_secs().max(1).to_string(), "--artifacts"])
        .arg(art)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start lnetlab run: {e}"))?;
    // Drain both pipes on threads so a chatty child never blocks; kill it if it overstays.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let o = std::thread::spawn(move || std::io::read_to_string(&mut out).unwrap_or_default());
    let e = std::thread::spawn(move || std::io::read_to_string(&mut err).unwrap_or_default());
    let limit = wall_limit(backend, timeout);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(st);
        }
        if Instant::now() > deadline || crate::interrupt::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = o.join().unwrap_or_default();
    let stderr = e.join().unwrap_or_default();
    match (status, report_of(&stdout)) {
        (_, Some(r)) => Ok(r),
        (None, None) => Err(format!("no report within {}s: killed", limit.as_secs())),
        (Some(st), None) => Err(format!("{st}: {}", stderr.trim().lines().last().unwrap_or("no output"))),
    }
}

/// How long a run of `timeout` may take on the wall clock before it is killed. On sim the
/// timeout is virtual time, which a slow build or a loaded machine may take ten times as long
/// to simulate (a debug build under load: 10 s of a stalled cluster took over 40 s): killing it
/// sooner would make a failure that does not replay.
pub fn wall_limit(backend: &str, timeout: Duration) -> Duration {
    let grace = Duration::from_secs(30);
    if backend == "sim" { timeout * 10 + grace } else { timeout + grace }
}

/// Why a report is a failure (None: it passed).
pub fn failure(r: &Value) -> Option<String> {
    if r["ok"] == true {
        return None;
    }
    let msg = r["error"].as_str().map(String::from).or_else(|| r["workloads"].as_array()?.iter().find_map(|w| w["messages"].as_array()?.first()?.as_str().map(String::from)));
    Some(msg.unwrap_or_else(|| "not ok".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_failures() {
        assert!(report_of("progress\n{\"ok\":true}\n").is_some());
        assert!(report_of("{\"other\":1}").is_none());
        let bad = serde_json::json!({"ok": false, "workloads": [{"messages": ["io1@c1: timed out"]}]});
        assert_eq!(failure(&bad).as_deref(), Some("io1@c1: timed out"));
        assert_eq!(failure(&serde_json::json!({"ok": false, "error": "stalled"})).as_deref(), Some("stalled"));
    }
}
