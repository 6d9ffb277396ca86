//! The `process` backend (the default): one `dmadev` per DMA net and one `lnetd` per node, all
//! local processes on loopback addresses, driven over their stdin/stdout; killed and reaped when
//! the cluster handle drops (success, failure, panic or interrupt). Hosts a spec names are
//! emulated: one `dmadev` per host and net, linked over loopback TCP as real hosts would be.

use crate::cluster::backend::Backend;
use crate::cluster::control::{Cluster, NodeLine, NodeProc};
use crate::cluster::devfaults;
use crate::cluster::plan::{NodePlan, Plan};
use crate::procs::{daemon_command, link_addr, start_dmadev, wait_links_up, Guard};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::time::Duration;

/// A local `dmadev` of a DMA net (of one emulated host): its fabric directory, arguments, and
/// the process while it runs.
struct LocalDevice {
    net: String,
    host: Option<usize>,
    dir: PathBuf,
    args: Vec<String>,
    proc: Option<Guard>,
}

/// Every node a local `lnetd` process on its own loopback address, one `dmadev` per DMA net
/// (and emulated host).
#[derive(Default)]
pub struct ProcessBackend {
    devices: Mutex<Vec<LocalDevice>>,
    /// The run's secret, which opens the devices' fabric links.
    token: std::sync::OnceLock<String>,
}

/// The fabric directory of `net` for node `n` (its host's device).
fn fabric_dir(plan: &Plan, scratch: &Path, net: &str, n: &NodePlan) -> PathBuf {
    device_dir(plan, scratch, net, (!plan.hosts.is_empty()).then_some(n.host))
}

/// The fabric directory of the device of `net` on `host` (`None`: the one machine's).
fn device_dir(plan: &Plan, scratch: &Path, net: &str, host: Option<usize>) -> PathBuf {
    scratch.join(format!("fabric-{}", plan.device_name(net, host)))
}

fn socklnd_port() -> u16 {
    if unsafe { libc::geteuid() } == 0 {
        988
    } else {
        10988
    }
}

fn lnetd_args(n: &NodePlan, scratch: &Path, art: &Path, plan: &Plan) -> Vec<String> {
    let mut a = plan.lnetd_args(n, &|net| fabric_dir(plan, scratch, net, n).display().to_string());
    a.extend(["--port".into(), socklnd_port().to_string()]);
    if socklnd_port() != 988 {
        // Without root no node can bind a reserved port: the explicit unprivileged test mode.
        a.extend(["--tcp-ports".into(), "unprivileged".into()]);
    }
    a.extend(["--log".into(), art.join("nodes").join(format!("{}.log", n.name)).display().to_string()]);
    a.extend(["--trace".into(), art.join("traces").join(format!("{}.jsonl", n.name)).display().to_string()]);
    a.extend(["--t0".into(), plan.t0_unix_us.to_string()]);
    if let Some(f) = plan.node_capture(n, art) {
        a.extend(["--pcap".into(), f.display().to_string()]);
    }
    a
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    /// Starts every daemon and waits until each node says it is ready.
    fn up(&self, plan: &Plan, scratch: &Path, art: &Path, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster> {
        super::rlimits::ensure(plan)?;
        std::fs::create_dir_all(art.join("nodes"))?;
        std::fs::create_dir_all(art.join("traces"))?;
        // The run's secret: the caller's (a CI secret, say) or a fresh one.
        let token = self.token.get_or_init(|| crate::procs::this_run_token().unwrap_or_default());
        let mut devs = Vec::new();
        for net in &plan.dma_nets {
            // Hosts dial those before them: each device's link address, once it listens.
            let mut links: Vec<(usize, String)> = Vec::new();
            for host in plan.devices_of(net) {
                let name = plan.device_name(net, host);
                let dir = device_dir(plan, scratch, net, host);
                std::fs::create_dir_all(&dir)?;
                let mut extra = devfaults::dmadev_args(plan, net);
                if let Some(f) = plan.fabric_capture(&name, art) {
                    extra.extend(["--pcap".into(), f.display().to_string()]);
                }
                if let Some(h) = host {
                    let stats = art.join(devfaults::stats_file(&name));
                    extra.extend(["--host".into(), h.to_string(), "--link-listen".into(), "127.0.0.1:0".into(), "--stats".into(), stats.display().to_string()]);
                    extra.extend(links.iter().flat_map(|(j, a)| ["--link".to_string(), format!("{j}={a}")]));
                }
                let g = start_dmadev(&dir, timeout, &extra, host.map(|_| token.as_str()))?;
                if let Some(h) = host {
                    let addr = link_addr(&dir, timeout)?;
                    // Started again (device_restart), it listens where the others dial.
                    if let Some(x) = extra.iter_mut().find(|x| *x == "127.0.0.1:0") {
                        *x = addr.clone();
                    }
                    links.push((h, addr));
                }
                // Keep the device log with the artifacts.
                let _ = std::fs::hard_link(dir.join("dmadev.log"), art.join(format!("dmadev-{name}.log")));
                devs.push(LocalDevice { net: net.clone(), host, dir, args: extra, proc: Some(g) });
            }
            if links.len() > 1 {
                progress(&format!("linking the {} hosts of {net}", links.len()));
                wait_linked(plan, net, art, links.len() as u64 - 1, timeout)?;
            }
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
        c.set_respawn(Box::new(respawn));
        *self.devices.lock().unwrap() = devs;
        c.wait_ready(timeout, progress, &|name| art.join("nodes").join(format!("{name}.log")).display().to_string())?;
        Ok(c)
    }

    /// Kills the `dmadev` of DMA net `net` (every host's) with SIGKILL and waits until it is gone.
    fn kill_device(&self, _cluster: &mut Cluster, net: &str) -> anyhow::Result<()> {
        let mut devs = self.devices.lock().unwrap();
        let mine: Vec<&mut LocalDevice> = devs.iter_mut().filter(|d| d.net == net).collect();
        if mine.is_empty() {
            anyhow::bail!("no local device for net {net}");
        }
        for d in mine {
            drop(d.proc.take()); // the guard kills and reaps it
        }
        Ok(())
    }

    /// Starts the `dmadev` of `net` again (same fabric directory and arguments; every host's,
    /// which link again on their own).
    fn start_device(&self, _cluster: &mut Cluster, net: &str, timeout: Duration) -> anyhow::Result<()> {
        let mut devs = self.devices.lock().unwrap();
        let token = self.token.get().map(String::as_str);
        let mut found = false;
        for d in devs.iter_mut().filter(|d| d.net == net) {
            found = true;
            if d.proc.is_none() {
                d.proc = Some(start_dmadev(&d.dir, timeout, &d.args, d.host.and(token))?);
            }
        }
        anyhow::ensure!(found, "no local device for net {net}");
        Ok(())
    }

    fn can_cut_link(&self) -> bool {
        true
    }

    /// Asks `net`'s device on host `a` to cut (or restore) its link to host `b`'s.
    fn cut_link(&self, _cluster: &mut Cluster, net: &str, a: usize, b: usize, on: bool) -> anyhow::Result<()> {
        let devs = self.devices.lock().unwrap();
        let d = devs.iter().find(|d| d.net == net && d.host == Some(a)).ok_or_else(|| anyhow::anyhow!("no device of {net} on host {a}"))?;
        if d.proc.is_none() {
            return Ok(());
        }
        lnd::dev::client::cut_link(&d.dir, b as u32, on).map_err(|e| anyhow::anyhow!("dmadev of {net} on host {a}: {e}"))
    }

    fn can_cut_fabric(&self) -> bool {
        true
    }

    /// Asks the `dmadev` of `net`, on its socket, to cut or heal two addresses.
    fn cut_fabric(&self, _cluster: &mut Cluster, net: &str, a: u32, b: u32, on: bool) -> anyhow::Result<()> {
        let devs = self.devices.lock().unwrap();
        // Every host's device: each applies the cut to what its own nodes send and pull.
        // A device that is down has no cut to make; the one started again has none either.
        for d in devs.iter().filter(|d| d.net == net && d.proc.is_some()) {
            lnd::dev::client::cut(&d.dir, a, b, on).map_err(|e| anyhow::anyhow!("dmadev for {net}: {e}"))?;
        }
        Ok(())
    }

    fn signal_kill(&self, cluster: &Cluster, i: usize) -> anyhow::Result<()> {
        signal(cluster, i, libc::SIGKILL, "kill")
    }

    fn freeze_node(&self, cluster: &Cluster, i: usize, frozen: bool) -> anyhow::Result<()> {
        if frozen {
            signal(cluster, i, libc::SIGSTOP, "pause")
        } else {
            signal(cluster, i, libc::SIGCONT, "resume")
        }
    }
}

/// Waits until every device of `net` reports `want` links up (from its statistics file).
fn wait_linked(plan: &Plan, net: &str, art: &Path, want: u64, timeout: Duration) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    for host in plan.devices_of(net) {
        let name = plan.device_name(net, host);
        let file = art.join(devfaults::stats_file(&name));
        let left = timeout.saturating_sub(t0.elapsed());
        wait_links_up(&file, want, left).map_err(|e| anyhow::anyhow!("the {name} device: {e}; see {}", art.join(format!("dmadev-{name}.log")).display()))?;
    }
    Ok(())
}

/// Sends `sig` to node `i`'s local process (`what` names the action in errors).
fn signal(cluster: &Cluster, i: usize, sig: libc::c_int, what: &str) -> anyhow::Result<()> {
    let name = &cluster.nodes[i].name;
    let pid = cluster.pids()[i].ok_or_else(|| anyhow::anyhow!("node {name} has no local process to {what}"))?;
    // SAFETY: signalling a child process we started and have not reaped.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        anyhow::bail!("cannot {what} node {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn spawn(i: usize, n: &NodePlan, args: Vec<String>, art: &Path, tx: Sender<(usize, NodeLine)>) -> anyhow::Result<NodeProc> {
    let log_path = art.join("nodes").join(format!("{}.log", n.name));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let mut child = daemon_command("lnetd")?.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log).spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let out = BufReader::new(child.stdout.take().expect("piped"));
    crate::cluster::control::forward_lines(i, out, tx);
    Ok(NodeProc::local(&n.name, Guard { child, what: n.name.clone() }, Box::new(stdin), log_path))
}
