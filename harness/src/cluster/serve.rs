//! The control socket of a running cluster (`lnetlab up`, `run --keep`): the lnetlab that owns
//! the nodes' channels serves `lnetlab ctl` and `lnetlab workload` from other invocations over
//! a Unix socket, one JSON request and one JSON reply per connection, one request at a time.

use super::control::{Cluster, NodeLine};
use super::plan::Plan;
use super::spec::ClusterSpec;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest request a client may send (a workload file fits many times over).
pub const MAX_REQUEST: u64 = 1 << 20;
/// How long a client has to send its request once connected.
const READ_REQUEST: Duration = Duration::from_secs(5);

/// What a client asks.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "req", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Send `cmd` to `node`; with `then`, also wait for that node's next line holding key
    /// `then` whose `token` is the reply's (a ping's `ping_done`).
    Node { node: String, cmd: Value, then: Option<String>, timeout_ms: u64 },
    /// Run the spec's workload `name`, or the workloads of a file's text (`workloads:` only).
    Workload { name: Option<String>, file: Option<String>, text: Option<String> },
    /// Apply the fault timeline of a file's text (`faults:` only), windows counted from now.
    Faults { file: String, text: String },
}

/// What a request asks the cluster's owner to run.
pub enum Job<'a> {
    /// The plan's workloads of these names, in order.
    Workloads(&'a [String]),
    /// The plan's faults, as a timeline starting now.
    Faults,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("control socket {path}: {err}")]
    Bind { path: String, err: std::io::Error },
}

/// A cluster's control socket; removed when dropped.
pub struct CtlServer {
    listener: UnixListener,
    pub path: PathBuf,
    /// Nodes whose process or container has gone.
    exited: HashSet<usize>,
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs a job on the cluster: the plan carries the workloads or faults it names.
pub type RunJob<'a> = dyn FnMut(&mut Cluster, &Plan, Job) -> anyhow::Result<Value> + 'a;

impl CtlServer {
    /// Listens at `path` (a stale socket there is replaced: the path is this process's own).
    pub fn bind(path: &Path) -> Result<CtlServer, ServeError> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|err| ServeError::Bind { path: d.display().to_string(), err })?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|err| ServeError::Bind { path: path.display().to_string(), err })?;
        listener.set_nonblocking(true).map_err(|err| ServeError::Bind { path: path.display().to_string(), err })?;
        Ok(CtlServer { listener, path: path.to_path_buf(), exited: HashSet::new() })
    }

    /// Serves requests for about `wait` (returns early after one); lines the nodes sent
    /// meanwhile are dropped, but a node's exit is remembered.
    pub fn serve(&mut self, cluster: &mut Cluster, plan: &Plan, wait: Duration, run: &mut RunJob) {
        self.drain(cluster);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.listener);
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd of a listener we own.
        if unsafe { libc::poll(&mut p, 1, wait.as_millis().min(i32::MAX as u128) as i32) } <= 0 {
            return;
        }
        let Ok((stream, _)) = self.listener.accept() else { return };
        let reply = match read_request(&stream) {
            Ok(req) => self.handle(cluster, plan, req, run).unwrap_or_else(|e| json!({"ok": false, "error": format!("{e:#}")})),
            Err(e) => json!({"ok": false, "error": e}),
        };
        let mut w = &stream;
        let _ = stream.set_write_timeout(Some(READ_REQUEST));
        let _ = writeln!(w, "{reply}");
    }

    fn drain(&mut self, cluster: &mut Cluster) {
        cluster.backlog.clear();
        while let Ok(Some((i, line))) = cluster.next_until(Instant::now()) {
            if let NodeLine::Exited = line {
                self.exited.insert(i);
            }
        }
    }

    fn handle(&mut self, cluster: &mut Cluster, plan: &Plan, req: Request, run: &mut RunJob) -> anyhow::Result<Value> {
        match req {
            Request::Node { node, cmd, then, timeout_ms } => {
                let names = || plan.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
                let i = plan.nodes.iter().position(|n| n.name == node).ok_or_else(|| anyhow::anyhow!("no node `{node}` in cluster `{}` (nodes: {})", plan.spec.name, names()))?;
                if self.exited.contains(&i) || cluster.down.contains(&i) {
                    anyhow::bail!("node {node} is unreachable: its process has exited");
                }
                if cluster.paused.contains(&i) {
                    anyhow::bail!("node {node} is unreachable: a pause fault holds it frozen");
                }
                let timeout = Duration::from_millis(timeout_ms.clamp(1, 600_000));
                let reply = cluster.cmd(i, cmd, timeout).inspect_err(|_| self.drain(cluster))?;
                let then = match then {
                    Some(key) => Some(cluster.wait_line(i, &key, &reply["token"], timeout + Duration::from_secs(2))?),
                    None => None,
                };
                Ok(json!({"ok": true, "reply": reply, "then": then}))
            }
            Request::Workload { name, file, text } => {
                let (p, names) = workload_plan(plan, name.as_deref(), file.as_deref(), text.as_deref())?;
                let report = run(cluster, &p, Job::Workloads(&names))?;
                Ok(json!({"ok": true, "report": report}))
            }
            Request::Faults { file, text } => {
                let p = fault_plan(plan, Path::new(&file), &text)?;
                let applied = run(cluster, &p, Job::Faults)?;
                Ok(json!({"ok": true, "faults": applied}))
            }
        }
    }
}

fn read_request(stream: &UnixStream) -> Result<Request, String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(READ_REQUEST)).map_err(|e| e.to_string())?;
    let mut line = String::new();
    let n = BufReader::new(stream.take(MAX_REQUEST)).read_line(&mut line).map_err(|e| format!("reading the request: {e}"))?;
    if n == 0 || !line.ends_with('\n') {
        return Err("the request was cut short (one JSON line, at most 1 MiB)".into());
    }
    serde_json::from_str(&line).map_err(|e| format!("bad request: {e}"))
}


/// Waits for node `i`'s line holding `key` with this `token` (kept lines are searched first).
/// The plan with the workloads to run: the spec's `name`, or those of `text` (a file holding
/// only `workloads:`), checked against the running cluster as if they were in its spec; errors
/// point into the file.
pub fn workload_plan(plan: &Plan, name: Option<&str>, file: Option<&str>, text: Option<&str>) -> anyhow::Result<(Plan, Vec<String>)> {
    match (name, text) {
        (Some(n), None) => {
            let w = plan.spec.workloads.iter().find(|w| w.name == n).ok_or_else(|| anyhow::anyhow!("cluster `{}` has no workload `{n}` (workloads: {})", plan.spec.name, plan.spec.workloads.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", ")))?;
            if let Some(src) = &w.read_back {
                anyhow::bail!("workload `{n}` reads back what `{src}` wrote: run both from a file (`lnetlab workload FILE`)");
            }
            Ok((plan.clone(), vec![n.to_string()]))
        }
        (None, Some(text)) => {
            let file = file.unwrap_or("workloads.yaml");
            let spec = merged_spec(&plan.spec, text, Path::new(file), "workloads")?;
            let mut p = plan.clone();
            let names = spec.workloads.iter().map(|w| w.name.clone()).collect();
            p.spec.workloads = spec.workloads;
            Ok((p, names))
        }
        _ => anyhow::bail!("give a workload name or a file (one of them)"),
    }
}

/// The plan with the faults of `text` (a file holding only `faults:`), checked against the
/// running cluster as if they were in its spec. Device faults that act on every transfer are
/// set when a device starts: a running cluster cannot take them, so they are refused.
pub fn fault_plan(plan: &Plan, file: &Path, text: &str) -> anyhow::Result<Plan> {
    let spec = merged_spec(&plan.spec, text, file, "faults")?;
    if spec.faults.is_empty() {
        anyhow::bail!("{}: no faults to apply", file.display());
    }
    if let Some((k, f)) = spec.faults.iter().enumerate().find(|(_, f)| f.kind.is_device()) {
        anyhow::bail!("{}: fault {} (`{}`) acts on every transfer of a device and is set when the device starts: put it in the cluster's spec (live: lnet_drop, lnet_delay, link, partition, pause, restart, crash, device_restart)", file.display(), k + 1, f.kind.name());
    }
    let mut p = plan.clone();
    p.spec.faults = spec.faults;
    Ok(p)
}

/// `text` (only `workloads:`) with the running spec's other keys after it, validated whole, so
/// file:line:col of an error in the workloads is the file's own.
fn merged_spec(running: &ClusterSpec, text: &str, file: &Path, key: &str) -> anyhow::Result<ClusterSpec> {
    let f = file.display();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| anyhow::anyhow!("{f}: {e}"))?;
    let keys: Vec<String> = v.as_mapping().map(|m| m.keys().map(|k| k.as_str().unwrap_or("?").to_string()).collect()).unwrap_or_default();
    if keys != [key] {
        let what = if key == "workloads" { "workload" } else { "fault" };
        anyhow::bail!("{f}: a {what} file holds only `{key}:` (a list, as in a spec); it has {}", if keys.is_empty() { "no mapping".into() } else { keys.join(", ") });
    }
    let mut rest = serde_yaml_ng::to_value(running)?;
    if let Some(m) = rest.as_mapping_mut() {
        for k in ["workloads", "faults", "source"] {
            m.remove(k);
        }
        if key == "faults" {
            // The spec must still name a workload: the running one's, which the faults ignore.
            m.insert("workloads".into(), serde_yaml_ng::to_value(&running.workloads)?);
        }
    }
    let merged = format!("{}\n{}", text.trim_end(), serde_yaml_ng::to_string(&rest)?);
    Ok(ClusterSpec::parse(&merged, file)?)
}
