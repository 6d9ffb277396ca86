//! A running cluster, whichever backend started it: each node's control channel (JSON lines in,
//! JSON lines out), commands and replies, readiness, and starting a node's server roles.

use super::devfaults::device_counts_from_logs;
use super::plan::Plan;
use super::spec::Role;
use crate::procs::Guard;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// A line from a node, or its end.
pub enum NodeLine {
    Line(Value),
    Exited,
}

/// Reads node `i`'s JSON lines from `out` on a thread of its own and sends them to `tx`, then
/// says it exited when `out` ends.
pub fn forward_lines(i: usize, out: impl std::io::BufRead + Send + 'static, tx: std::sync::mpsc::Sender<(usize, NodeLine)>) {
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { break };
            match serde_json::from_str(&l) {
                Ok(v) => {
                    if tx.send((i, NodeLine::Line(v))).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("node {i} sent non-JSON `{l}`: {e}"),
            }
        }
        let _ = tx.send((i, NodeLine::Exited));
    });
}

pub struct NodeProc {
    pub name: String,
    /// The local process, when the backend runs one (the docker backend's live in containers).
    guard: Option<Guard>,
    stdin: Box<dyn Write + Send>,
    next_id: u64,
    /// Where the node's own log is, when the harness can read it (quoted when the node exits).
    log: Option<PathBuf>,
}

impl NodeProc {
    /// A node reached through a line-oriented writer (its replies arrive on the cluster channel).
    pub fn remote(name: &str, stdin: Box<dyn Write + Send>) -> NodeProc {
        NodeProc { name: name.to_string(), guard: None, stdin, next_id: 0, log: None }
    }

    /// A node that is a local process (killed and reaped with its guard) logging to `log`.
    pub fn local(name: &str, guard: Guard, stdin: Box<dyn Write + Send>, log: PathBuf) -> NodeProc {
        NodeProc { name: name.to_string(), guard: Some(guard), stdin, next_id: 0, log: Some(log) }
    }

    /// Why the node ended, as far as its log says: its last lines (empty when there is no log).
    pub fn last_words(&self) -> String {
        let Some(text) = self.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) else { return String::new() };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; the end of its log:\n  {tail}")
        }
    }
}

/// What drives a simulated cluster: runs it until lines come or the clock passes the instant.
pub type Pump = Box<dyn FnMut(Instant) -> anyhow::Result<Vec<(usize, NodeLine)>> + Send>;

/// A running cluster.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub rx: Receiver<(usize, NodeLine)>,
    /// Lines that arrived while waiting for something else.
    pub backlog: Vec<(usize, Value)>,
    /// Whatever must live as long as the cluster (device processes, containers...).
    _keep: Vec<Box<dyn std::any::Any + Send>>,
    /// Where each OSS keeps OST `n`, as the node sees the path.
    pub target_dirs: std::collections::HashMap<(String, u32), PathBuf>,
    /// For simulated clusters: produces the next lines by running the simulation (instead of
    /// waiting on other processes), until lines come or the cluster's clock passes the instant
    /// it is given.
    pump: Option<Pump>,
    /// The clock deadlines are measured on (`None`: the wall clock; virtual under simulation,
    /// so timeouts and fault windows fall at the same point of every replay).
    clock: Option<lnd::Clock>,
    pumped: std::collections::VecDeque<(usize, NodeLine)>,
    /// How a backend counts its devices' injected faults by kind (default: their logs).
    pub device_faults: Option<Box<dyn Fn() -> std::collections::BTreeMap<String, u64> + Send>>,
    /// Brings the nodes' logs and traces into the artifacts directory now, for a backend whose
    /// nodes write them elsewhere (containers); `None`: they are there already.
    pub sync_artifacts: Option<Box<dyn Fn() + Send>>,
    /// Nodes frozen by a pause fault.
    pub paused: std::collections::HashSet<usize>,
    /// Nodes a restart fault killed and has not started again (their exit is expected).
    pub down: std::collections::HashSet<usize>,
    /// When the run began, on the cluster's clock: node traces count `t_us` from it.
    trace_t0: Option<Instant>,
    /// Starts node `i` again as it was first started (set by backends that can).
    respawn: Option<Box<dyn FnMut(usize) -> anyhow::Result<NodeProc> + Send>>,
}

impl Cluster {
    /// A cluster from nodes a backend started; `keep` lives until teardown.
    pub fn assemble(nodes: Vec<NodeProc>, rx: Receiver<(usize, NodeLine)>, keep: Vec<Box<dyn std::any::Any + Send>>, target_dirs: std::collections::HashMap<(String, u32), PathBuf>) -> Cluster {
        Cluster { nodes, rx, backlog: Vec::new(), _keep: keep, target_dirs, pump: None, clock: None, pumped: Default::default(), device_faults: None, sync_artifacts: None, paused: Default::default(), down: Default::default(), trace_t0: None, respawn: None }
    }

    /// Lets [`Cluster::respawn`] start node `i` again with `f`.
    pub fn set_respawn(&mut self, f: Box<dyn FnMut(usize) -> anyhow::Result<NodeProc> + Send>) {
        self.respawn = Some(f);
    }

    /// Makes `next` drive `pump` for its lines, with deadlines on `clock` (simulation backend).
    pub fn set_pump(&mut self, pump: Pump, clock: lnd::Clock) {
        self.pump = Some(pump);
        self.clock = Some(clock);
    }

    /// Sets when the run began on the cluster's clock (the origin of the nodes' trace times).
    pub fn set_trace_t0(&mut self, t: Instant) {
        self.trace_t0 = Some(t);
    }

    /// Microseconds since the run began, as the nodes' trace lines count them (`None` until a
    /// backend or the runner set the origin).
    pub fn trace_us(&self) -> Option<u64> {
        self.trace_t0.map(|t0| self.now().saturating_duration_since(t0).as_micros() as u64)
    }

    /// Now, on the cluster's clock (virtual under simulation).
    pub fn now(&self) -> Instant {
        self.clock.as_ref().map_or_else(Instant::now, |c| c())
    }

    /// What the backend keeps with the cluster, of type `T` (a backend finding its own state).
    pub fn kept<T: 'static>(&self) -> Option<&T> {
        self._keep.iter().find_map(|k| k.downcast_ref::<T>())
    }

    /// Faults the DMA devices injected, by kind (counted from their logs, or from the hook a
    /// backend set).
    pub fn device_faults(&self, art: &Path) -> std::collections::BTreeMap<String, u64> {
        match &self.device_faults {
            Some(f) => f(),
            None => device_counts_from_logs(art),
        }
    }

    /// Makes the artifacts directory hold what the nodes wrote so far (see `sync_artifacts`).
    pub fn sync_artifacts(&self) {
        if let Some(f) = &self.sync_artifacts {
            f();
        }
    }

    /// The local processes of the nodes (none for containers or simulated nodes).
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.nodes.iter().map(|n| n.guard.as_ref().map(|g| g.child.id())).collect()
    }

    /// Starts node `i`'s process again (after a kill) and waits until it is ready.
    pub fn respawn(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let f = self.respawn.as_mut().ok_or_else(|| anyhow::anyhow!("this cluster cannot start node {} again", self.nodes[i].name))?;
        let n = f(i)?;
        self.nodes[i] = NodeProc { next_id: self.nodes[i].next_id + 1000, ..n };
        self.wait_node_ready(i, timeout)
    }

    /// Waits for node `i`'s ready line (other lines are kept).
    pub fn wait_node_ready(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = self.now() + timeout;
        loop {
            let (j, line) = self.next(deadline)?;
            match line {
                NodeLine::Line(v) if j == i && v["ready"] == true => return Ok(()),
                NodeLine::Line(v) => self.backlog.push((j, v)),
                NodeLine::Exited if self.down.contains(&j) && j != i => {}
                NodeLine::Exited => anyhow::bail!("node {} exited while node {} was starting{}", self.nodes[j].name, self.nodes[i].name, self.nodes[j].last_words()),
            }
        }
    }

    /// Waits until node `i`'s process (or container) has gone (other lines are kept).
    pub fn wait_node_exit(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = self.now() + timeout;
        loop {
            let (j, line) = self.next(deadline)?;
            match line {
                NodeLine::Exited if j == i => return Ok(()),
                NodeLine::Line(v) => self.backlog.push((j, v)),
                NodeLine::Exited if self.down.contains(&j) => {}
                NodeLine::Exited => anyhow::bail!("node {} exited{}", self.nodes[j].name, self.nodes[j].last_words()),
            }
        }
    }

    /// Points node `i`'s commands at a new writer (its process or container was restarted).
    pub fn replace_writer(&mut self, i: usize, w: Box<dyn Write + Send>) {
        self.nodes[i].stdin = w;
        self.nodes[i].next_id += 1000;
    }

    /// Waits until every node has printed its ready line.
    pub fn wait_ready(&mut self, timeout: Duration, progress: &dyn Fn(&str), log_of: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
        let c = self;
        let deadline = c.now() + timeout;
        let mut ready = 0;
        // A line per node for a small cluster; a bar (or a line every 2 s) for a large one.
        let few = c.nodes.len() <= 16;
        let mut bar = (!few).then(|| crate::progress::Progress::new("up", c.nodes.len() as u64, crate::progress::Unit::Nodes, Duration::from_secs(2), progress));
        while ready < c.nodes.len() {
            let (i, line) = c.next(deadline)?;
            match line {
                NodeLine::Line(v) if v["ready"] == true => {
                    ready += 1;
                    match bar.as_mut() {
                        Some(b) => b.set(ready as u64, &format!("nodes ready (last: {})", c.nodes[i].name)),
                        None => progress(&format!("up: {ready}/{} nodes ready ({} is {})", c.nodes.len(), c.nodes[i].name, v["nids"])),
                    }
                }
                NodeLine::Line(v) => c.backlog.push((i, v)),
                NodeLine::Exited => anyhow::bail!("node {} exited during start-up; see {}{}", c.nodes[i].name, log_of(&c.nodes[i].name), c.nodes[i].last_words()),
            }
        }
        Ok(())
    }

    /// The next line from any node, before `deadline`.
    pub fn next(&mut self, deadline: Instant) -> anyhow::Result<(usize, NodeLine)> {
        match self.next_until(deadline)? {
            Some(x) => Ok(x),
            None if self.pump.is_some() => anyhow::bail!("timed out waiting for the simulated nodes"),
            None => anyhow::bail!("timed out waiting for the nodes"),
        }
    }

    /// The next line from any node, or `None` once `until` has passed.
    pub fn next_until(&mut self, until: Instant) -> anyhow::Result<Option<(usize, NodeLine)>> {
        let deadline = until;
        if crate::interrupt::interrupted() {
            anyhow::bail!("interrupted");
        }
        if self.pump.is_some() {
            loop {
                if let Some(x) = self.pumped.pop_front() {
                    return Ok(Some(x));
                }
                if self.now() > deadline {
                    return Ok(None);
                }
                let lines = (self.pump.as_mut().expect("checked"))(deadline)?;
                self.pumped.extend(lines);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
        match self.rx.recv_timeout(left) {
            Ok(x) => Ok(Some(x)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => self.next_until(deadline),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("every node has exited"),
        }
    }

    /// Sends a command to node `i` and waits for its reply (other lines are kept).
    pub fn cmd(&mut self, i: usize, mut c: Value, timeout: Duration) -> anyhow::Result<Value> {
        let n = &mut self.nodes[i];
        n.next_id += 1;
        let id = n.next_id;
        c["id"] = json!(id);
        writeln!(n.stdin, "{c}").map_err(|e| anyhow::anyhow!("node {}: {e}", n.name))?;
        let deadline = self.now() + timeout;
        loop {
            let Some((j, line)) = self.next_until(deadline)? else {
                anyhow::bail!("node {} did not answer {} within {timeout:?}", self.nodes[i].name, c["op"]);
            };
            match line {
                NodeLine::Line(v) if j == i && v["id"] == json!(id) => {
                    if v["ok"] != true {
                        let why = v["error"].as_str().map_or_else(|| v["error"].to_string(), String::from);
                        anyhow::bail!("node {}: {} failed: {why}", self.nodes[i].name, c["op"].as_str().unwrap_or("?"));
                    }
                    return Ok(v);
                }
                NodeLine::Line(v) => self.backlog.push((j, v)),
                NodeLine::Exited => anyhow::bail!("node {} exited{}", self.nodes[j].name, self.nodes[j].last_words()),
            }
        }
    }

    /// Asks every node to quit, then makes sure none is left.
    pub fn down(mut self) {
        for n in &mut self.nodes {
            let _ = writeln!(n.stdin, "{}", json!({"op": "quit"}));
        }
        let t0 = Instant::now();
        for n in &mut self.nodes {
            let Some(g) = n.guard.as_mut() else { continue };
            while t0.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = g.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Guards kill and reap whatever is still running.
    }

    /// Waits for node `i`'s next line holding key `key` whose `token` is `token` (the answer
    /// of a ping or a discovery); other lines meanwhile are dropped, as between requests.
    pub fn wait_line(&mut self, i: usize, key: &str, token: &Value, timeout: Duration) -> anyhow::Result<Value> {
        let name = self.nodes[i].name.clone();
        let ours = |j: usize, v: &Value| j == i && v[key]["token"] == *token;
        if let Some(k) = self.backlog.iter().position(|(j, v)| ours(*j, v)) {
            return Ok(self.backlog.remove(k).1[key].take());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_until(deadline)? {
                None => anyhow::bail!("node {name} did not report its {key} within {timeout:?}"),
                Some((j, NodeLine::Line(mut v))) if ours(j, &v) => return Ok(v[key].take()),
                Some((_, NodeLine::Line(_))) => {}
                Some((j, NodeLine::Exited)) if j == i => anyhow::bail!("node {name} exited{}", self.nodes[i].last_words()),
                Some((_, NodeLine::Exited)) => {}
            }
        }
    }

    /// Starts node `i`'s server roles (the OSS with its targets); with `lnet: {discovery:
    /// true}`, first has it discover its Multi-Rail peers.
    pub fn start_roles(&mut self, plan: &Plan, i: usize, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        let n = &plan.nodes[i];
        if plan.spec.lnet.as_ref().is_some_and(|l| l.discovery) {
            for (primary, _) in &n.peers {
                let reply = self.cmd(i, json!({"op": "discover", "nid": primary.to_string(), "timeout_ms": timeout.as_millis() as u64}), timeout)?;
                let done = self.wait_line(i, "ping_done", &reply["token"], timeout + Duration::from_secs(2))?;
                match done.get("error") {
                    Some(e) => say(&format!("{}: discovery of {primary} failed ({}): it stays a single-rail peer", n.name, e.as_str().unwrap_or("?"))),
                    None => say(&format!("{}: discovered {primary}: {}", n.name, done["info"]["discovered"])),
                }
            }
        }
        if n.is(Role::Oss) {
            let targets: Vec<Value> = n.targets.iter().map(|t| json!({"index": t.ost, "dir": self.target_dirs[&(n.name.clone(), t.ost)], "size": t.size.0})).collect();
            let spec = plan.spec.nodes.iter().find(|s| s.name == n.name);
            let interval = spec.and_then(|s| s.commit_interval.as_deref()).map(|c| super::spec::parse_duration(c).map(|d| d.as_millis() as u64)).transpose().map_err(anyhow::Error::msg)?;
            self.cmd(i, json!({"op": "oss_start", "targets": targets, "commit_interval_ms": interval}), timeout)?;
            say(&format!("oss {}: {} OSTs", n.name, n.targets.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_exits_is_quoted_from_the_end_of_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("oss1.log");
        let lines: String = (1..=8).map(|i| format!("line {i}\n")).collect::<String>() + "error: attach 1@dma0: refused\n\n";
        std::fs::write(&log, lines).unwrap();
        let child = std::process::Command::new("true").spawn().unwrap();
        let n = NodeProc::local("oss1", Guard { child, what: "oss1".into() }, Box::new(std::io::sink()), log.clone());
        let w = n.last_words();
        assert!(w.ends_with("line 5\n  line 6\n  line 7\n  line 8\n  error: attach 1@dma0: refused"), "{w}");
        assert!(!w.contains("line 4"), "{w}");
        std::fs::remove_file(&log).unwrap();
        assert_eq!(n.last_words(), "", "no log, nothing quoted");
        assert_eq!(NodeProc::remote("c1", Box::new(std::io::sink())).last_words(), "");
    }
}
