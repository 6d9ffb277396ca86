//! Reaching a running cluster from another `lnetlab`: find it (and the node) in the state
//! directory, send one request to its control socket, wait for the reply within a deadline.

use crate::cluster::serve::Request;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("no cluster is up (start one with `lnetlab up SPEC` or `lnetlab run SPEC --keep`)")]
    NoneUp,
    #[error("no node `{node}` in the running cluster(s): {have}")]
    NoNode { node: String, have: String },
    #[error("cluster `{cluster}` has no control socket (its lnetlab, pid {pid}, could not make one: see its log)")]
    NoSocket { cluster: String, pid: Value },
    #[error("cluster `{cluster}`: cannot reach its lnetlab (pid {pid}) at {path}: {err}")]
    Connect { cluster: String, pid: Value, path: String, err: std::io::Error },
    #[error("cluster `{cluster}`: its lnetlab (pid {pid}) did not answer within {secs} s")]
    Timeout { cluster: String, pid: Value, secs: u64 },
    #[error("cluster `{cluster}`: its lnetlab (pid {pid}) ended before answering")]
    Gone { cluster: String, pid: Value },
    #[error("cluster `{cluster}`: {err}")]
    Io { cluster: String, err: String },
    /// The cluster answered with an error (a node's, or a refused request).
    #[error("{0}")]
    Refused(String),
}

/// The state of the running cluster that has `node` (the `up` one first), or of the first
/// running cluster when no node is named.
pub fn find(node: Option<&str>) -> Result<Value, CtlError> {
    let live: Vec<Value> = crate::state::live().into_iter().map(|x| x.1).collect();
    if live.is_empty() {
        return Err(CtlError::NoneUp);
    }
    let Some(node) = node else { return Ok(live[0].clone()) };
    let has = |st: &Value| st["nodes"].as_array().is_some_and(|ns| ns.iter().any(|n| n["name"] == node));
    if let Some(st) = live.iter().find(|st| has(st)) {
        return Ok(st.clone());
    }
    let have = live.iter().map(|st| format!("`{}` has {}", st["cluster"].as_str().unwrap_or("?"), st["nodes"].as_array().into_iter().flatten().filter_map(|n| n["name"].as_str()).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join("; ");
    Err(CtlError::NoNode { node: node.to_string(), have })
}

/// Sends `req` to the cluster `st` describes; the reply, or why there is none, within `within`
/// (the wait also ends as soon as the cluster's lnetlab is gone).
pub fn request(st: &Value, req: &Request, within: Duration) -> Result<Value, CtlError> {
    let cluster = st["cluster"].as_str().unwrap_or("?").to_string();
    let pid = st["pid"].clone();
    let path = st["ctl"].as_str().ok_or_else(|| CtlError::NoSocket { cluster: cluster.clone(), pid: pid.clone() })?;
    let io = |e: std::io::Error| CtlError::Io { cluster: cluster.clone(), err: e.to_string() };
    let stream = UnixStream::connect(path).map_err(|err| CtlError::Connect { cluster: cluster.clone(), pid: pid.clone(), path: path.to_string(), err })?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).map_err(io)?;
    let mut w = &stream;
    writeln!(w, "{}", serde_json::to_string(req).expect("a request serialises")).map_err(io)?;
    // Short reads so a gone owner is noticed; the deadline bounds the whole wait.
    stream.set_read_timeout(Some(Duration::from_millis(250))).map_err(io)?;
    let deadline = Instant::now() + within;
    let mut r = BufReader::new(&stream);
    let mut line = Vec::new();
    loop {
        match r.read_until(b'\n', &mut line) {
            Ok(0) => return Err(CtlError::Gone { cluster, pid }),
            Ok(_) if line.ends_with(b"\n") => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if !crate::state::owner_alive(st) {
                    return Err(CtlError::Gone { cluster, pid });
                }
                if Instant::now() > deadline {
                    return Err(CtlError::Timeout { cluster, pid, secs: within.as_secs() });
                }
            }
            Err(e) => return Err(io(e)),
        }
    }
    let v: Value = serde_json::from_slice(&line).map_err(|e| CtlError::Io { cluster: cluster.clone(), err: format!("bad reply: {e}") })?;
    if v["ok"] != true {
        return Err(CtlError::Refused(v["error"].as_str().unwrap_or("the request failed").replace('\n', " ")));
    }
    Ok(v)
}
