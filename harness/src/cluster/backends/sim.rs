//! The `sim` backend: the whole cluster in this process on virtual time (lnd's `sim` module),
//! driven only when the harness waits for output, so a seed replays the same run.

use crate::cluster::backend::Backend;
use crate::cluster::control::{Cluster, NodeLine, NodeProc};
use crate::cluster::devfaults;
use crate::cluster::plan::Plan;
use crate::cluster::spec::{ClusterSpec, FaultKind, Role};
use lnd::daemon::control::Controller;
use lnd::dmalnd::DmaLndConfig;
use lnd::node::NodeBuilder;
use lnd::sim::Sim;
use lnd::sock::SockConfig;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
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
            let mut g = self.shared.lock().unwrap();
            let reply = g.sim.nodes[self.node].ctl.handle_line(line.trim());
            g.replies.push_back((self.node, NodeLine::Line(reply)));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct SimBackend;

impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn virtual_time(&self) -> bool {
        true
    }

    /// Windows open on the wall clock, which a simulated run does not follow; frozen processes
    /// and late copies need real ones.
    fn can_inject(&self, kind: FaultKind, timed: bool) -> bool {
        use FaultKind::*;
        // A crash on sim is a restart whose OSS first drops what it had not committed (the
        // node op `crash`); it comes with the sim's restart.
        !timed && !matches!(kind, Pause | Partition | Restart | Crash | DeviceRestart | DmaLate)
    }

    fn tcp_addressing(&self, _spec: &ClusterSpec) -> anyhow::Result<Option<Box<dyn Fn(usize, &str, usize) -> Ipv4Addr>>> {
        // Counted, not wrapped: a net with more than 253 nodes goes on into the next /24.
        Ok(Some(Box::new(|k, _, pos| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 99, k as u8, 0)) + pos as u32 + 2))))
    }

    fn up(&self, plan: &Plan, scratch: &Path, art: &Path, _timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(art.join("traces"))?;
        let mut seed = plan.seed;
        if lnd::mutant::active("sim_wall_clock") {
            seed ^= std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        }
        let mut sim = Sim::new(seed);
        let mut target_dirs = HashMap::new();
        for (i, n) in plan.nodes.iter().enumerate() {
            let mut b = NodeBuilder::new(lnd::wire::ProcessId::PID_LUSTRE, plan.seed ^ ((i as u64 + 1) << 40));
            b.mem_size(n.mem as usize);
            // A node on several fabrics registers its one memory with each device.
            let mut node_mem: Option<Arc<lnd::mem::Mem>> = None;
            for (net, nid) in &n.nids {
                if plan.dma_nets.contains(net) {
                    let dev = match &node_mem {
                        None => sim.fabric(net).attach(nid.addr(), n.mem as usize)?,
                        Some(m) => sim.fabric(net).attach_mem(nid.addr(), m.clone())?,
                    };
                    node_mem.get_or_insert_with(|| lnd::dev::DmaDevice::mem(&dev).clone());
                    b.dma(*nid, Box::new(dev), DmaLndConfig::default());
                } else {
                    b.tcp(*nid, Box::new(sim.net.io()), SockConfig::default());
                }
            }
            for (net, gw) in &n.routes {
                b.route(*net, *gw);
            }
            if n.is(Role::Router) {
                b.routing(512, 256, 16);
            }
            let mut ctl = Controller::new(b.build()?);
            ctl.progress_every = None;
            let net = sim.net.clone();
            ctl.clock = Arc::new(move || net.now());
            ctl.set_trace(&art.join("traces").join(format!("{}.jsonl", n.name)))?;
            sim.add(&n.name, ctl);
            for t in &n.targets {
                target_dirs.insert((n.name.clone(), t.ost), scratch.join("targets").join(&n.name).join(format!("ost{}", t.ost)));
            }
        }
        for net in &plan.dma_nets {
            // Late completions need a device with its own copier thread: not simulated.
            if let Some(cfg) = devfaults::device_config(plan, net) {
                sim.fabric(net).engine().lock().unwrap().set_faults(lnd::dev::engine::FaultConfig { late: 0, ..cfg }, plan.seed);
            }
        }
        let fabrics: Vec<_> = sim.fabrics.iter().map(|(_, f)| f.clone()).collect();
        let shared = Arc::new(Mutex::new(Shared { sim, replies: VecDeque::new() }));
        let nodes = plan.nodes.iter().enumerate().map(|(i, n)| NodeProc::remote(&n.name, Box::new(SimWriter { shared: shared.clone(), node: i, buf: Vec::new() }))).collect();
        let (_tx, rx) = std::sync::mpsc::channel();
        let mut c = Cluster::assemble(nodes, rx, vec![Box::new(shared.clone())], target_dirs);
        {
            let mut g = shared.lock().unwrap();
            for (i, n) in plan.nodes.iter().enumerate() {
                let nids: Vec<String> = n.nids.iter().map(|x| x.1.to_string()).collect();
                g.replies.push_back((i, NodeLine::Line(serde_json::json!({"ready": true, "nids": nids}))));
            }
        }
        let sh = shared.clone();
        let mut idle = 0usize;
        c.set_pump(Box::new(move || {
            let mut g = sh.lock().unwrap();
            if !g.replies.is_empty() {
                return Ok(g.replies.drain(..).collect());
            }
            let mut out = Vec::new();
            for _ in 0..TICKS_PER_PUMP {
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
        }));
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
}
