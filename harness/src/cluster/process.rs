//! The `process` backend: one `dmadev` per DMA net and one `lnetd` per node, all local
//! processes on loopback addresses, driven over their stdin/stdout. Everything is killed and
//! reaped when the cluster handle drops (success, failure, panic or interrupt).

use super::plan::{NodePlan, Plan};
use super::spec::Role;
use crate::procs::{daemon_command, start_dmadev, Guard};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

/// A line from a node, or its end.
pub enum NodeLine {
    Line(Value),
    Exited,
}

pub struct NodeProc {
    pub name: String,
    /// The local process, when the backend runs one (the docker backend's live in containers).
    guard: Option<Guard>,
    stdin: Box<dyn Write + Send>,
    next_id: u64,
}

impl NodeProc {
    /// A node reached through a line-oriented writer (its replies arrive on the cluster channel).
    pub fn remote(name: &str, stdin: Box<dyn Write + Send>) -> NodeProc {
        NodeProc { name: name.to_string(), guard: None, stdin, next_id: 0 }
    }
}

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
    /// waiting on other processes).
    pump: Option<Box<dyn FnMut() -> anyhow::Result<Vec<(usize, NodeLine)>> + Send>>,
    pumped: std::collections::VecDeque<(usize, NodeLine)>,
    /// How a backend counts its devices' injected faults by kind (default: their logs).
    pub device_faults: Option<Box<dyn Fn() -> std::collections::BTreeMap<String, u64> + Send>>,
    /// Nodes frozen by a pause fault.
    pub paused: std::collections::HashSet<usize>,
    /// Nodes a restart fault killed and has not started again (their exit is expected).
    pub down: std::collections::HashSet<usize>,
    /// Starts node `i` again as it was first started (process backend).
    respawn: Option<Box<dyn FnMut(usize) -> anyhow::Result<NodeProc> + Send>>,
    /// The local `dmadev` of each DMA net (process backend): net, fabric directory, extra
    /// arguments, and the process while it runs.
    pub devices: Vec<(String, PathBuf, Vec<String>, Option<Guard>)>,
}

fn socklnd_port() -> u16 {
    if unsafe { libc::geteuid() } == 0 {
        988
    } else {
        10988
    }
}

fn lnetd_args(n: &NodePlan, scratch: &Path, art: &Path, plan: &Plan) -> Vec<String> {
    let mut a = Vec::new();
    for (net, nid) in &n.nids {
        a.extend(["--nid".to_string(), nid.to_string()]);
        if plan.dma_nets.contains(net) {
            a.extend(["--fabric".into(), scratch.join(format!("fabric-{net}")).display().to_string()]);
        }
    }
    for (net, gw) in &n.routes {
        a.extend(["--route".into(), format!("{net} {gw}")]);
    }
    if n.is(Role::Router) {
        a.push("--routing".into());
    }
    a.extend(["--mem".into(), n.mem.to_string(), "--port".into(), socklnd_port().to_string()]);
    a.extend(["--log".into(), art.join("nodes").join(format!("{}.log", n.name)).display().to_string()]);
    a.extend(["--trace".into(), art.join("traces").join(format!("{}.jsonl", n.name)).display().to_string()]);
    a
}

impl Cluster {
    /// Starts every daemon and waits until each node says it is ready.
    pub fn up(plan: &Plan, scratch: &Path, art: &Path, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(art.join("nodes"))?;
        std::fs::create_dir_all(art.join("traces"))?;
        let mut devs = Vec::new();
        for net in &plan.dma_nets {
            let dir = scratch.join(format!("fabric-{net}"));
            std::fs::create_dir_all(&dir)?;
            let extra = super::faults::dmadev_args(plan, net);
            let g = start_dmadev(&dir, timeout, &extra)?;
            // Keep the device log with the artifacts.
            let _ = std::fs::hard_link(dir.join("dmadev.log"), art.join(format!("dmadev-{net}.log")));
            devs.push((net.clone(), dir, extra, Some(g)));
        }
        let (tx, rx) = channel();
        let mut nodes = Vec::new();
        let mut how = Vec::new();
        for (i, n) in plan.nodes.iter().enumerate() {
            let args = lnetd_args(n, scratch, art, plan);
            nodes.push(spawn(i, n, args.clone(), art, tx.clone())?);
            how.push((n.clone(), args));
        }
        let art_dir = art.to_path_buf();
        let respawn = move |i: usize| -> anyhow::Result<NodeProc> {
            let (n, args) = &how[i];
            spawn(i, n, args.clone(), &art_dir, tx.clone())
        };
        let keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        let mut target_dirs = std::collections::HashMap::new();
        for n in &plan.nodes {
            for t in &n.targets {
                target_dirs.insert((n.name.clone(), t.ost), scratch.join("targets").join(&n.name).join(format!("ost{}", t.ost)));
            }
        }
        let mut c = Cluster::assemble(nodes, rx, keep, target_dirs);
        c.respawn = Some(Box::new(respawn));
        c.devices = devs;
        c.wait_ready(timeout, progress, &|name| art.join("nodes").join(format!("{name}.log")).display().to_string())?;
        Ok(c)
    }

    /// A cluster from nodes a backend started; `keep` lives until teardown.
    pub fn assemble(nodes: Vec<NodeProc>, rx: Receiver<(usize, NodeLine)>, keep: Vec<Box<dyn std::any::Any + Send>>, target_dirs: std::collections::HashMap<(String, u32), PathBuf>) -> Cluster {
        Cluster { nodes, rx, backlog: Vec::new(), _keep: keep, target_dirs, pump: None, pumped: Default::default(), device_faults: None, paused: Default::default(), down: Default::default(), respawn: None, devices: Vec::new() }
    }

    /// Makes `next` drive `pump` for its lines (simulation backend).
    pub fn set_pump(&mut self, pump: Box<dyn FnMut() -> anyhow::Result<Vec<(usize, NodeLine)>> + Send>) {
        self.pump = Some(pump);
    }

    /// Faults the DMA devices injected, by kind (counted from their logs, or from the hook a
    /// backend set).
    pub fn device_faults(&self, art: &Path) -> std::collections::BTreeMap<String, u64> {
        match &self.device_faults {
            Some(f) => f(),
            None => super::faults::device_counts_from_logs(art),
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
        let deadline = Instant::now() + timeout;
        loop {
            let (j, line) = self.next(deadline)?;
            match line {
                NodeLine::Line(v) if j == i && v["ready"] == true => return Ok(()),
                NodeLine::Line(v) => self.backlog.push((j, v)),
                NodeLine::Exited if self.down.contains(&j) && j != i => {}
                NodeLine::Exited => anyhow::bail!("node {} exited while node {} was starting", self.nodes[j].name, self.nodes[i].name),
            }
        }
    }

    /// Waits until node `i`'s process (or container) has gone (other lines are kept).
    pub fn wait_node_exit(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let (j, line) = self.next(deadline)?;
            match line {
                NodeLine::Exited if j == i => return Ok(()),
                NodeLine::Line(v) => self.backlog.push((j, v)),
                NodeLine::Exited if self.down.contains(&j) => {}
                NodeLine::Exited => anyhow::bail!("node {} exited", self.nodes[j].name),
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
        let deadline = Instant::now() + timeout;
        let mut ready = 0;
        while ready < c.nodes.len() {
            let (i, line) = c.next(deadline)?;
            match line {
                NodeLine::Line(v) if v["ready"] == true => {
                    ready += 1;
                    progress(&format!("up: {ready}/{} nodes ready ({} is {})", c.nodes.len(), c.nodes[i].name, v["nids"]));
                }
                NodeLine::Line(v) => c.backlog.push((i, v)),
                NodeLine::Exited => anyhow::bail!("node {} exited during start-up; see {}", c.nodes[i].name, log_of(&c.nodes[i].name)),
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
        if crate::interrupted() {
            anyhow::bail!("interrupted");
        }
        if let Some(pump) = self.pump.as_mut() {
            loop {
                if let Some(x) = self.pumped.pop_front() {
                    return Ok(Some(x));
                }
                if Instant::now() > deadline {
                    return Ok(None);
                }
                let lines = pump()?;
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
        let deadline = Instant::now() + timeout;
        loop {
            let (j, line) = self.next(deadline)?;
            match line {
                NodeLine::Line(v) if j == i && v["id"] == json!(id) => {
                    if v["ok"] != true {
                        anyhow::bail!("node {}: {} failed: {}", self.nodes[i].name, c["op"], v["error"]);
                    }
                    return Ok(v);
                }
                NodeLine::Line(v) => self.backlog.push((j, v)),
                NodeLine::Exited => anyhow::bail!("node {} exited", self.nodes[j].name),
            }
        }
    }

    /// Kills the `dmadev` of DMA net `net` (SIGKILL) and waits until it is gone.
    pub fn kill_device(&mut self, net: &str) -> anyhow::Result<()> {
        let d = self.devices.iter_mut().find(|d| d.0 == net).ok_or_else(|| anyhow::anyhow!("no local device for net {net}"))?;
        drop(d.3.take()); // the guard kills and reaps it
        Ok(())
    }

    /// Starts the `dmadev` of `net` again (same fabric directory and arguments).
    pub fn start_device(&mut self, net: &str, timeout: Duration) -> anyhow::Result<()> {
        let d = self.devices.iter_mut().find(|d| d.0 == net).ok_or_else(|| anyhow::anyhow!("no local device for net {net}"))?;
        if d.3.is_none() {
            d.3 = Some(start_dmadev(&d.1, timeout, &d.2)?);
        }
        Ok(())
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
}

fn spawn(i: usize, n: &NodePlan, args: Vec<String>, art: &Path, tx: Sender<(usize, NodeLine)>) -> anyhow::Result<NodeProc> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(art.join("nodes").join(format!("{}.log", n.name)))?;
    let mut child = daemon_command("lnetd")?.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log).spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let out = BufReader::new(child.stdout.take().expect("piped"));
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { break };
            match serde_json::from_str(&l) {
                Ok(v) => {
                    if tx.send((i, NodeLine::Line(v))).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("node {i} printed non-JSON `{l}`: {e}"),
            }
        }
        let _ = tx.send((i, NodeLine::Exited));
    });
    Ok(NodeProc { name: n.name.clone(), guard: Some(Guard { child, what: n.name.clone() }), stdin: Box::new(stdin), next_id: 0 })
}
