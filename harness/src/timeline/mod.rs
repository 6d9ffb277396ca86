//! `lnetlab timeline RUN_DIR`: one self-contained HTML page of a run — nodes as lanes, LNet
//! messages as arrows, RPCs grouped by xid, fault windows shaded, errors in red.

use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not the artifacts of a run ({why})")]
    NotARun { path: PathBuf, why: String },
    #[error("{path}:{line}: {why}")]
    Line { path: PathBuf, line: usize, why: String },
}

/// A message from one lane to another (`from == to` when its other end was not seen).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Arrow {
    pub t0: u64,
    pub t1: u64,
    pub from: usize,
    pub to: usize,
    /// The LNet message type as the receiver saw it (PUT, GET, REPLY, ACK), or SEND when only
    /// the sender's completion was seen.
    pub kind: String,
    pub portal: i64,
    pub len: i64,
    pub status: i64,
}

/// A point on one lane: an RPC handled or completed, a fault rule's hit, an unlink.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Mark {
    pub t: u64,
    pub lane: usize,
    /// `rpc`, `fault` or `event`.
    pub cat: &'static str,
    pub label: String,
    /// RPCs: `CLIENT:xid`, the same for the client's and the server's line of one RPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub error: bool,
}

/// A fault window (a pause, a partition, a device or node restart), or an instant when it
/// never closed or had no duration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Window {
    pub t0: u64,
    pub t1: u64,
    pub what: String,
    /// The lanes it touches (all of them for a net or a partition).
    pub lanes: Vec<usize>,
}

/// Everything the page draws.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub title: String,
    pub lanes: Vec<String>,
    pub arrows: Vec<Arrow>,
    pub marks: Vec<Mark>,
    pub windows: Vec<Window>,
    pub end_us: u64,
}

const PAGE: &str = include_str!("page.html");

fn read(path: &Path) -> Result<String, TimelineError> {
    std::fs::read_to_string(path).map_err(|source| TimelineError::Io { path: path.into(), source })
}

/// A trace file's lines as JSON objects (a partly written last line, as a killed node leaves,
/// is skipped; any other bad line is an error naming it).
fn lines(path: &Path) -> Result<Vec<Value>, TimelineError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(TimelineError::Io { path: path.into(), source }),
    };
    let n = text.lines().count();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => out.push(v),
            Ok(_) => return Err(TimelineError::Line { path: path.into(), line: i + 1, why: "not a JSON object".into() }),
            Err(_) if i + 1 == n && !text.ends_with('\n') => {}
            Err(e) => return Err(TimelineError::Line { path: path.into(), line: i + 1, why: e.to_string() }),
        }
    }
    Ok(out)
}

/// Reads the run in `dir` (its `nids.json` and `traces/`).
pub fn load(dir: &Path) -> Result<Timeline, TimelineError> {
    let nids_path = dir.join("nids.json");
    if !nids_path.exists() {
        return Err(TimelineError::NotARun { path: dir.into(), why: "no nids.json".into() });
    }
    let nodes: Vec<(String, Vec<String>)> = serde_json::from_str(&read(&nids_path)?).map_err(|e| TimelineError::Line { path: nids_path.clone(), line: e.line(), why: e.to_string() })?;
    let lanes: Vec<String> = nodes.iter().map(|n| n.0.clone()).collect();
    let by_nid: HashMap<&str, usize> = nodes.iter().enumerate().flat_map(|(i, (_, nids))| nids.iter().map(move |x| (x.as_str(), i))).collect();
    // "12345-1@dma" or "1@dma" → its lane.
    let lane_of = |v: &Value| -> Option<usize> {
        let s = v.as_str()?;
        by_nid.get(s.split_once('-').map_or(s, |x| x.1)).copied()
    };
    let mut traces = Vec::new();
    for n in &lanes {
        traces.push(lines(&dir.join("traces").join(format!("{n}.jsonl")))?);
    }
    let num = |v: &Value| v.as_i64().unwrap_or(0);
    let t_of = |v: &Value| v["t_us"].as_u64().unwrap_or(0);
    // Sends not yet matched with their arrival, per (from, to, portal, length), in order.
    let mut sends: HashMap<(usize, usize, i64, i64), Vec<(u64, i64)>> = HashMap::new();
    for (lane, tr) in traces.iter().enumerate() {
        for v in tr.iter().filter(|v| v["ev"] == "SEND") {
            if let Some(to) = lane_of(&v["peer"]) {
                sends.entry((lane, to, num(&v["portal"]), num(&v["mlength"]))).or_default().push((t_of(v), num(&v["status"])));
            }
        }
    }
    let mut arrows = Vec::new();
    let mut marks = Vec::new();
    let mut end_us = 0;
    for (lane, tr) in traces.iter().enumerate() {
        for v in tr {
            let t = t_of(v);
            end_us = end_us.max(t);
            let status = num(&v["status"]);
            if let Some(ev) = v["ev"].as_str() {
                let (portal, len) = (num(&v["portal"]), num(&v["mlength"]));
                match (ev, lane_of(&v["peer"])) {
                    ("SEND", _) => {}
                    ("PUT" | "GET" | "REPLY" | "ACK", Some(from)) => {
                        let sent = sends.get_mut(&(from, lane, portal, len)).and_then(|q| take_nearest(q, t));
                        let t0 = sent.map_or(t, |s| s.0.min(t));
                        let status = if status != 0 { status } else { sent.map_or(0, |s| s.1) };
                        arrows.push(Arrow { t0, t1: t, from, to: lane, kind: ev.into(), portal, len, status });
                    }
                    _ => marks.push(Mark { t, lane, cat: "event", label: format!("{ev} portal={portal} len={len} status={status}"), group: None, error: status < 0 }),
                }
            } else if let Some(rpc) = v["rpc"].as_str() {
                let xid = v["xid"].as_u64().unwrap_or(0);
                // The client's line names the OST; the server's names the client.
                let (client, other) = match v.get("ost") {
                    Some(o) => (lanes[lane].clone(), format!("ost{o}")),
                    None => {
                        let c = lane_of(&v["peer"]).map_or_else(|| v["peer"].as_str().unwrap_or("?").to_string(), |c| lanes[c].clone());
                        (c.clone(), format!("from {c}"))
                    }
                };
                marks.push(Mark { t, lane, cat: "rpc", label: format!("{rpc} x{xid} {other} status={status}"), group: Some(format!("{client}:{xid}")), error: status < 0 });
            } else if let Some(f) = v["fault"].as_str() {
                let msg = v["msg"].as_str().map(|m| format!(" {m}")).unwrap_or_default();
                let src = v["src"].as_str().and_then(|s| by_nid.get(s)).map(|&i| format!(" from {}", lanes[i])).unwrap_or_default();
                marks.push(Mark { t, lane, cat: "fault", label: format!("{f}{msg}{src} portal={}", v["portal"]), group: None, error: false });
            }
        }
    }
    // Sends whose arrival no trace shows (dropped, or the receiver died): stubs on their lane.
    for ((from, to, portal, len), left) in sends {
        for (t, status) in left {
            arrows.push(Arrow { t0: t, t1: t, from, to, kind: "SEND".into(), portal, len, status });
        }
    }
    arrows.sort_by_key(|a| (a.t0, a.t1, a.from, a.to));
    marks.sort_by_key(|m| (m.t, m.lane));
    let windows = windows(&lines(&dir.join("traces").join("faults.jsonl"))?, &lanes, end_us);
    let named = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let title = named.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(Timeline { title, lanes, arrows, marks, windows, end_us })
}

/// A sender's completion may come a little after the arrival it caused (a pulled PUT completes
/// once the receiver has the data); one later than this belongs to another message.
const SEND_AFTER_ARRIVAL_US: u64 = 2_000;

/// Takes the unmatched send nearest in time to an arrival at `t` (a send dropped on the way
/// stays unmatched instead of shifting every later pair of its kind).
fn take_nearest(q: &mut Vec<(u64, i64)>, t: u64) -> Option<(u64, i64)> {
    let i = q.iter().enumerate().filter(|(_, s)| s.0 <= t + SEND_AFTER_ARRIVAL_US).min_by_key(|(_, s)| s.0.abs_diff(t))?.0;
    Some(q.remove(i))
}

/// Fault windows from `faults.jsonl`: an opening record (paused, killed, rules added, fabric cut)
/// closed by the matching closing one (resumed, started again, rules removed, fabric healed) of
/// the same subject.
pub fn windows(records: &[Value], lanes: &[String], end_us: u64) -> Vec<Window> {
    let lane = |n: &str| lanes.iter().position(|l| l == n);
    let all: Vec<usize> = (0..lanes.len()).collect();
    let mut open: Vec<(String, u64, String, Vec<usize>)> = Vec::new();
    let mut out = Vec::new();
    for r in records {
        let Some(t) = r["t_us"].as_u64() else { continue };
        let action = r["action"].as_str().unwrap_or("");
        let fault = r["fault"].as_str().unwrap_or("?");
        let what = r["what"].as_str().map(|w| w.trim_start_matches("heal ").to_string());
        let subject = r["node"].as_str().or(r["net"].as_str()).map(String::from).or(what.clone()).unwrap_or_else(|| fault.to_string());
        let lanes_hit = r["node"].as_str().and_then(lane).map_or_else(|| all.clone(), |l| vec![l]);
        match action {
            "paused" | "killed" | "rules added" | "fabric cut" => open.push((subject, t, what.unwrap_or_else(|| format!("{fault} {}", r["node"].as_str().or(r["net"].as_str()).unwrap_or(""))), lanes_hit)),
            "resumed" | "started again" | "rules removed" | "fabric healed" => match open.iter().position(|o| o.0 == subject) {
                Some(i) => {
                    let (_, t0, what, lanes) = open.remove(i);
                    out.push(Window { t0, t1: t, what, lanes });
                }
                None => out.push(Window { t0: t, t1: t, what: format!("{fault} {action}"), lanes: lanes_hit }),
            },
            // A standing rule (added at install, for the whole run): an instant.
            _ => out.push(Window { t0: t, t1: t, what: format!("{fault} {action}"), lanes: lanes_hit }),
        }
    }
    for (_, t0, what, lanes) in open {
        out.push(Window { t0, t1: end_us.max(t0), what: format!("{what} (not closed)"), lanes });
    }
    out.sort_by_key(|w| w.t0);
    out
}

/// The page of `t`: the template with the data inlined (nothing fetched from elsewhere).
pub fn render(t: &Timeline) -> String {
    // `</` inside a script element would end it: JSON escapes it harmlessly as `<\/`.
    let data = serde_json::to_string(t).expect("timeline serializes").replace("</", "<\\/");
    PAGE.replacen("/*DATA*/null", &data, 1).replace("<!--TITLE-->", &html_escape(&t.title))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Writes the page of the run in `dir` to `out` (default `dir/timeline.html`); returns its path.
pub fn write(dir: &Path, out: Option<&Path>) -> Result<(PathBuf, Timeline), TimelineError> {
    let t = load(dir)?;
    let path = out.map_or_else(|| dir.join("timeline.html"), Path::to_path_buf);
    std::fs::write(&path, render(&t)).map_err(|source| TimelineError::Io { path: path.clone(), source })?;
    Ok((path, t))
}

#[cfg(test)]
mod tests;
