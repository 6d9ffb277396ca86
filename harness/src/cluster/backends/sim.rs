//! The `sim` backend: the whole cluster in this process on virtual time (lnd's `sim` module),
//! driven only when the harness waits for output, so a seed replays the same run — faults
//! included: nodes paused, killed and rebuilt from the plan, devices killed, wires cut.

use crate::cluster::backend::Backend;
use crate::cluster::control::{Cluster, NodeLine, NodeProc};
use crate::cluster::devfaults;
use crate::cluster::plan::Plan;
use crate::cluster::spec::{ClusterSpec, FaultKind, Role};
use lnd::daemon::control::Controller;
use lnd::dmalnd::DmaLndConfig;
use lnd::node::NodeBuilder;
use lnd::sim::{Sim, Wiring};
use lnd::sock::SockConfig;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Ticks run per pump call before handing control back.
const TICKS_PER_PUMP: usize = 256;
/// While nothing is in flight, virtual time jumps ahead this much per tick (timeouts come sooner).
const IDLE_SKIP: Duration = Duration::from_millis(1);
/// Give up when this many idle ticks (about 2 virtual minutes) pass with nothing printed.
const IDLE_TICKS: usize = 120_000;

struct Shared {
    sim: Sim,
    replies: VecDeque<(usize, NodeLine)>,
    /// Command lines to paused nodes, read when they thaw (a frozen process reads nothing).
    held: Vec<(usize, String)>,
    /// What rebuilding a node needs: the plan, the artifacts directory, restarts per node.
    plan: Plan,
    art: PathBuf,
    restarts: Vec<u64>,
}

impl Shared {
    /// Applies one command line to node `i` (a killed node reads nothing).
    fn apply(&mut self, i: usize, line: &str) {
        if self.sim.nodes[i].paused {
            self.held.push((i, line.to_string()));
        } else if let Some(ctl) = self.sim.nodes[i].ctl.as_mut() {
            let reply = ctl.handle_line(line);
            self.replies.push_back((i, NodeLine::Line(reply)));
        }
    }
}

/// Builds node `i` of `plan` into `sim` as its `generation`-th incarnation (0: the first),
/// attaching it to its fabrics and the virtual network.
fn build_node(sim: &mut Sim, plan: &Plan, i: usize, generation: u64, art: &Path) -> anyhow::Result<(Controller, Wiring)> {
    let n = &plan.nodes[i];
    let incarnation = plan.seed ^ ((i as u64 + 1) << 40) ^ generation.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut b = NodeBuilder::new(lnd::wire::ProcessId::PID_LUSTRE, incarnation);
    b.mem_size(n.mem as usize);
    let mut wiring = Wiring::default();
    // A node on several fabrics registers its one memory with each device.
    let mut node_mem: Option<Arc<lnd::mem::Mem>> = None;
    for (net, nid) in &n.nids {
        if plan.dma_nets.contains(net) {
            let k = sim.fabric_index(net);
            let mut f = sim.fabrics[k].1.clone();
            f.set_mailbox(plan.mailbox_slots(n) as usize);
            // A device that is down (a node restarted during a device restart) gives a dead
            // handle: the node comes up, finds it gone and attaches once it is back.
            let mem = node_mem.clone().unwrap_or_else(|| lnd::mem::Mem::heap(n.mem as usize));
            let dev = f.attach_or_dead(nid.addr(), mem.clone()).map_err(|e| anyhow::anyhow!("attach {nid}: {e}"))?;
            node_mem.get_or_insert(mem);
            wiring.dma(k, *nid, &dev);
            b.dma(*nid, Box::new(dev), DmaLndConfig::default());
        } else {
            let io = sim.net.io();
            wiring.endpoints.push(io.endpoint());
            b.tcp(*nid, Box::new(io), SockConfig::default());
        }
    }
    for (net, gw) in &n.routes {
        b.route(*net, *gw);
    }
    if n.is(Role::Router) {
        b.routing(512, 256, 16);
    }
    b.multi_rail(plan.multi_rail(n));
    if let Some(file) = plan.node_capture(n, art) {
        // Stamped with a count, not the wall clock: the capture replays with its seed too.
        let cap = lnd::sock::pcap::Capture::append_to(&file, false).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        b.capture(Arc::new(Mutex::new(cap)));
    }
    let mut ctl = Controller::new(b.build()?);
    ctl.progress_every = None;
    let net = sim.net.clone();
    ctl.clock = Arc::new(move || net.now());
    // Trace times are virtual time since the simulation began, across restarts too.
    ctl.set_trace_origin(sim.net.start());
    let trace = art.join("traces").join(format!("{}.jsonl", n.name));
    // A node started again goes on with the trace of its first life.
    if generation == 0 { ctl.set_trace(&trace) } else { ctl.append_trace(&trace) }?;
    Ok((ctl, wiring))
}

/// Commands written to a simulated node are applied at once, in the harness's order.
struct SimWriter {
    shared: Arc<Mutex<Shared>>,
    node: usize,
    buf: Vec<u8>,
}

impl Write for SimWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        while let Some(p) = self.buf.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=p).collect();
            let line = String::from_utf8_lossy(&line).to_string();
            self.shared.lock().unwrap().apply(self.node, line.trim());
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct SimBackend;

/// The simulation a sim cluster runs on.
fn shared(cluster: &Cluster) -> anyhow::Result<Arc<Mutex<Shared>>> {
    cluster.kept::<Arc<Mutex<Shared>>>().cloned().ok_or_else(|| anyhow::anyhow!("not a simulated cluster"))
}

impl SimBackend {
    /// Kills simulated node `i` as SIGKILL would (no goodbye; its connections reset, its
    /// devices detached), after `last` has seen its controller — the first half of a restart,
    /// for any fault that kills a node (`last` may make its store lose what it had not
    /// committed). Its exit line follows; [`SimBackend::revive`] is the second half.
    pub fn kill_with(&self, cluster: &Cluster, i: usize, last: &mut dyn FnMut(&mut Controller)) -> anyhow::Result<()> {
        let sh = shared(cluster)?;
        let mut g = sh.lock().unwrap();
        let mut ctl = g.sim.kill(i).ok_or_else(|| anyhow::anyhow!("simulated node {} is not running", cluster.nodes[i].name))?;
        last(&mut ctl);
        ctl.flush_trace();
        drop(ctl);
        g.held.retain(|(j, _)| *j != i);
        g.replies.push_back((i, NodeLine::Exited));
        Ok(())
    }

    /// Builds killed node `i` again from the plan — a new incarnation with nothing of the
    /// old in memory (LNet, LNDs, MDs, roles), its OSTs on disk as they were — and waits until
    /// it is ready. Its roles are the caller's to start (`Cluster::start_roles`).
    pub fn revive(&self, cluster: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let sh = shared(cluster)?;
        {
            let mut g = sh.lock().unwrap();
            let gen = g.restarts[i] + 1;
            let (plan, art) = (g.plan.clone(), g.art.clone());
            let (ctl, wiring) = build_node(&mut g.sim, &plan, i, gen, &art).map_err(|e| anyhow::anyhow!("starting simulated node {} again: {e}", cluster.nodes[i].name))?;
            g.restarts[i] = gen;
            g.sim.revive(i, ctl, wiring);
            let nids: Vec<String> = plan.nodes[i].nids.iter().map(|x| x.1.to_string()).collect();
            g.replies.push_back((i, NodeLine::Line(serde_json::json!({"ready": true, "nids": nids}))));
        }
        cluster.wait_node_ready(i, timeout)
    }
}

impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn virtual_time(&self) -> bool {
        true
    }

    /// Every kind, timed or not: windows open and close on virtual time.
    fn can_inject(&self, _kind: FaultKind, _timed: bool) -> bool {
        true
    }

    fn tcp_addressing(&self, _spec: &ClusterSpec) -> anyhow::Result<Option<Box<dyn Fn(usize, &str, usize) -> Ipv4Addr>>> {
        // Counted, not wrapped: a net with more than 253 nodes goes on into the next /24.
        Ok(Some(Box::new(|k, _, pos| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 99, k as u8, 0)) + pos as u32 + 2))))
    }

    fn up(&self, plan: &Plan, scratch: &Path, art: &Path, _timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(art.join("traces"))?;
        // Each node's counters land here at the end (`nodes/NAME.stats.json`).
        std::fs::create_dir_all(art.join("nodes"))?;
        let mut seed = plan.seed;
        if lnd::mutant::active("sim_wall_clock") {
            seed ^= std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        }
        let mut sim = Sim::new(seed);
        let mut target_dirs = HashMap::new();
        for (i, n) in plan.nodes.iter().enumerate() {
            let (ctl, wiring) = build_node(&mut sim, plan, i, 0, art).map_err(|e| anyhow::anyhow!("{}: {e}", n.name))?;
            sim.add_wired(&n.name, ctl, wiring);
            for t in &n.targets {
                target_dirs.insert((n.name.clone(), t.ost), scratch.join("targets").join(&n.name).join(format!("ost{}", t.ost)));
            }
        }
        for net in &plan.dma_nets {
            // Late completions are held back on virtual time by the in-process device.
            if let Some(cfg) = devfaults::device_config(plan, net) {
                sim.fabric(net).engine().lock().unwrap().set_faults(cfg, plan.seed);
            }
            if let Some(file) = plan.fabric_capture(net, art) {
                let cap = lnd::dev::capture::FabricCapture::append_to(&file, false).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                sim.fabric(net).engine().lock().unwrap().set_capture(cap);
            }
        }
        let fabrics: Vec<_> = sim.fabrics.iter().map(|(_, f)| f.clone()).collect();
        let net = sim.net.clone();
        let restarts = vec![0; plan.nodes.len()];
        let shared = Arc::new(Mutex::new(Shared { sim, replies: VecDeque::new(), held: Vec::new(), plan: plan.clone(), art: art.to_path_buf(), restarts }));
        let nodes = plan.nodes.iter().enumerate().map(|(i, n)| NodeProc::remote(&n.name, Box::new(SimWriter { shared: shared.clone(), node: i, buf: Vec::new() }))).collect();
        let (_tx, rx) = std::sync::mpsc::channel();
        let mut c = Cluster::assemble(nodes, rx, vec![Box::new(shared.clone())], target_dirs);
        c.set_trace_t0(net.start());
        {
            let mut g = shared.lock().unwrap();
            for (i, n) in plan.nodes.iter().enumerate() {
                let nids: Vec<String> = n.nids.iter().map(|x| x.1.to_string()).collect();
                g.replies.push_back((i, NodeLine::Line(serde_json::json!({"ready": true, "nids": nids}))));
            }
        }
        let sh = shared.clone();
        let mut idle = 0usize;
        c.set_pump(
            Box::new(move |until| {
                let mut g = sh.lock().unwrap();
                if !g.replies.is_empty() {
                    return Ok(g.replies.drain(..).collect());
                }
                let mut out = Vec::new();
                for _ in 0..TICKS_PER_PUMP {
                    if g.sim.net.now() > until {
                        break;
                    }
                    let lines = g.sim.tick();
                    out.extend(lines.into_iter().map(|(i, v)| (i, NodeLine::Line(v))));
                    if !out.is_empty() {
                        idle = 0;
                        break;
                    }
                    if !g.sim.busy() {
                        idle += 1;
                        g.sim.net.advance(IDLE_SKIP);
                    }
                }
                if out.is_empty() && idle > IDLE_TICKS {
                    anyhow::bail!("simulation stalled: nothing in flight and nothing happening after {} ticks", g.sim.ticks);
                }
                Ok(out)
            }),
            Arc::new(move || net.now()),
        );
        c.device_faults = Some(Box::new(move || {
            let mut by_kind = std::collections::BTreeMap::new();
            for f in &fabrics {
                for (k, n) in f.engine().lock().unwrap().stats.fault_counts() {
                    *by_kind.entry(k.to_string()).or_default() += n;
                }
            }
            by_kind
        }));
        c.wait_ready(Duration::from_secs(5), progress, &|n| format!("(simulated node {n})"))?;
        Ok(c)
    }

    fn signal_kill(&self, cluster: &Cluster, i: usize) -> anyhow::Result<()> {
        self.kill_with(cluster, i, &mut |_| {})
    }

    fn launch_again(&self, cluster: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
        self.revive(cluster, i, timeout)
    }

    fn freeze_node(&self, cluster: &Cluster, i: usize, frozen: bool) -> anyhow::Result<()> {
        let sh = shared(cluster)?;
        let mut g = sh.lock().unwrap();
        g.sim.pause(i, frozen);
        if !frozen {
            // What it was told while frozen, it reads now, in order.
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut g.held).into_iter().partition(|(j, _)| *j == i);
            g.held = rest;
            for (_, line) in mine {
                g.apply(i, &line);
            }
        }
        Ok(())
    }

    fn kill_device(&self, cluster: &mut Cluster, net: &str) -> anyhow::Result<()> {
        let sh = shared(cluster)?;
        anyhow::ensure!(sh.lock().unwrap().sim.kill_device(net), "no simulated device on {net}");
        Ok(())
    }

    fn start_device(&self, cluster: &mut Cluster, net: &str, _timeout: Duration) -> anyhow::Result<()> {
        let sh = shared(cluster)?;
        anyhow::ensure!(sh.lock().unwrap().sim.start_device(net), "no simulated device on {net}");
        Ok(())
    }

    fn cut(&self, cluster: &mut Cluster, a: usize, b: usize, on: bool) -> anyhow::Result<()> {
        shared(cluster)?.lock().unwrap().sim.cut(a, b, on);
        Ok(())
    }

    fn can_cut_fabric(&self) -> bool {
        true
    }

    fn cut_fabric(&self, cluster: &mut Cluster, net: &str, a: u32, b: u32, on: bool) -> anyhow::Result<()> {
        anyhow::ensure!(shared(cluster)?.lock().unwrap().sim.cut_fabric(net, a, b, on), "no simulated device on {net}");
        Ok(())
    }
}
