//! Deterministic simulation: whole clusters in one process — nodes with their LNet cores and
//! LNDs, the in-process DMA device and a virtual TCP network — stepped by a seeded scheduler on
//! virtual time. The same seed gives the same run, byte for byte. Faults act here too: nodes
//! paused, killed and revived, devices killed and started, the networks cut.

pub mod net;

use crate::daemon::control::Controller;
use crate::dev::inproc::InProcFabric;
use crate::mem::Mem;
use crate::wire::Nid;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub use crate::rng::Rng;

/// Virtual time per scheduler tick.
pub const TICK: Duration = Duration::from_micros(10);

/// One DMA NI of a node on one of the simulation's fabrics.
pub struct DmaAttach {
    /// Index into [`Sim::fabrics`].
    pub fabric: usize,
    pub nid: Nid,
    /// The node's memory, registered again when the device comes back.
    pub mem: Arc<Mem>,
    /// The device life the NI's handle belongs to.
    epoch: u64,
}

/// How a node is wired into the simulation (to cut, kill and attach it again).
#[derive(Default)]
pub struct Wiring {
    pub dma: Vec<DmaAttach>,
    /// Its endpoints on [`Sim::net`] (one per TCP NI).
    pub endpoints: Vec<usize>,
}

impl Wiring {
    /// Records DMA NI `nid` on fabric `fabric`, whose device handle is `dev`.
    pub fn dma(&mut self, fabric: usize, nid: Nid, dev: &crate::dev::inproc::InProcDevice) {
        use crate::dev::DmaDevice;
        self.dma.push(DmaAttach { fabric, nid, mem: dev.mem().clone(), epoch: dev.epoch() });
    }
}

pub struct SimNode {
    pub name: String,
    /// `None` while the node is killed (until [`Sim::revive`]).
    pub ctl: Option<Controller>,
    /// Frozen: not stepped, so its inputs queue and its timers stand still.
    pub paused: bool,
    pub wiring: Wiring,
}

/// A simulated cluster.
pub struct Sim {
    pub nodes: Vec<SimNode>,
    pub net: net::SimNet,
    pub fabrics: Vec<(String, InProcFabric)>,
    rng: Rng,
    pub ticks: u64,
    /// Node pairs cut apart by a partition (lower index first).
    cuts: BTreeSet<(usize, usize)>,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim { nodes: Vec::new(), net: net::SimNet::new(), fabrics: Vec::new(), rng: Rng::new(seed), ticks: 0, cuts: BTreeSet::new() }
    }

    /// The index of the in-process fabric of DMA net `name` (created on first use, seeded,
    /// holding late completions back on virtual time).
    pub fn fabric_index(&mut self, name: &str) -> usize {
        if let Some(k) = self.fabrics.iter().position(|(n, _)| n == name) {
            return k;
        }
        let net = self.net.clone();
        let f = InProcFabric::new(self.rng.next()).with_clock(Arc::new(move || net.now()));
        self.fabrics.push((name.to_string(), f));
        self.fabrics.len() - 1
    }

    /// The in-process fabric of DMA net `name` (see [`Sim::fabric_index`]).
    pub fn fabric(&mut self, name: &str) -> InProcFabric {
        let k = self.fabric_index(name);
        self.fabrics[k].1.clone()
    }

    pub fn add(&mut self, name: &str, ctl: Controller) -> usize {
        self.add_wired(name, ctl, Wiring::default())
    }

    /// Adds a node wired as `wiring` says (so it can be cut, killed and revived).
    pub fn add_wired(&mut self, name: &str, ctl: Controller, wiring: Wiring) -> usize {
        self.nodes.push(SimNode { name: name.to_string(), ctl: Some(ctl), paused: false, wiring });
        self.nodes.len() - 1
    }

    /// Freezes or thaws node `i`.
    pub fn pause(&mut self, i: usize, paused: bool) {
        self.nodes[i].paused = paused;
    }

    /// Kills node `i` as SIGKILL would: it stops, its TCP connections are reset and its
    /// listeners go. Its controller is handed back, still attached to the fabrics: dropping
    /// it is the process's end (its devices detach, the peers hear `PeerDown`); whatever the
    /// caller does first (a store losing what it had not committed) happens inside the death.
    pub fn kill(&mut self, i: usize) -> Option<Controller> {
        let n = &mut self.nodes[i];
        n.paused = false;
        let ctl = n.ctl.take()?;
        self.net.kill_endpoints(&n.wiring.endpoints);
        Some(ctl)
    }

    /// Brings killed node `i` back as `ctl` (a new incarnation built afresh), wired as
    /// `wiring`; partitions that hold it are applied to its new wiring.
    pub fn revive(&mut self, i: usize, ctl: Controller, wiring: Wiring) {
        self.nodes[i].ctl = Some(ctl);
        self.nodes[i].wiring = wiring;
        let cuts: Vec<_> = self.cuts.iter().copied().filter(|&(a, b)| a == i || b == i).collect();
        for (a, b) in cuts {
            self.apply_cut(a, b, true);
        }
    }

    /// Kills the device of DMA net `name` (every transmit and mailbox is lost; each node finds
    /// its device gone when next stepped, as the DMA LND sees a lost `dmadev`).
    pub fn kill_device(&mut self, name: &str) -> bool {
        self.fabrics.iter().find(|(n, _)| n == name).map(|(_, f)| f.kill()).is_some()
    }

    /// Starts the device of DMA net `name` again; nodes attach to it when next stepped.
    pub fn start_device(&mut self, name: &str) -> bool {
        self.fabrics.iter().find(|(n, _)| n == name).map(|(_, f)| f.start()).is_some()
    }

    /// Cuts (`on`) or heals the DMA fabric `name` alone between addresses `a` and `b` (their
    /// other nets still connect them).
    pub fn cut_fabric(&mut self, name: &str, a: u32, b: u32, on: bool) -> bool {
        self.fabrics.iter().find(|(n, _)| n == name).map(|(_, f)| f.engine().lock().unwrap().set_cut(a, b, on)).is_some()
    }

    /// Cuts (`on`) or heals everything between nodes `a` and `b`: their TCP endpoints and their
    /// addresses on every fabric they share, both ways.
    pub fn cut(&mut self, a: usize, b: usize, on: bool) {
        let key = (a.min(b), a.max(b));
        if on {
            self.cuts.insert(key);
        } else {
            self.cuts.remove(&key);
        }
        self.apply_cut(a, b, on);
    }

    fn apply_cut(&self, a: usize, b: usize, on: bool) {
        let (wa, wb) = (&self.nodes[a].wiring, &self.nodes[b].wiring);
        for &ea in &wa.endpoints {
            for &eb in &wb.endpoints {
                self.net.set_cut(ea, eb, on);
            }
        }
        for da in &wa.dma {
            for db in wb.dma.iter().filter(|d| d.fabric == da.fabric) {
                self.fabrics[da.fabric].1.engine().lock().unwrap().set_cut(da.nid.addr(), db.nid.addr(), on);
            }
        }
    }

    /// A node about to step notices a device that died (its DMA LND fails what was in flight)
    /// and attaches to one that runs again (same memory, new registration).
    fn check_devices(ctl: &mut Controller, wiring: &mut Wiring, fabrics: &[(String, InProcFabric)]) {
        for a in &mut wiring.dma {
            let f = &fabrics[a.fabric].1;
            if f.epoch() == a.epoch {
                continue;
            }
            let node = &mut ctl.node;
            let Some(l) = crate::node::dma_lnd(&mut node.lnds, a.nid) else { continue };
            if !l.device_down() {
                l.device_lost(&mut node.lnet);
            }
            if let Ok(dev) = f.attach_mem(a.nid.addr(), a.mem.clone()) {
                l.set_device(Box::new(dev));
                a.epoch = f.epoch();
            }
        }
    }

    /// One scheduler tick: every running node steps once, in a seeded random order, then a
    /// seeded number of network items is delivered and virtual time moves on. Returns the
    /// output lines.
    pub fn tick(&mut self) -> Vec<(usize, Value)> {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i + 1);
            order.swap(i, j);
        }
        let mut out = Vec::new();
        for i in order {
            let n = &mut self.nodes[i];
            let Some(ctl) = n.ctl.as_mut().filter(|_| !n.paused) else { continue };
            Self::check_devices(ctl, &mut n.wiring, &self.fabrics);
            ctl.node.step();
            for v in ctl.drain_events() {
                out.push((i, v));
            }
        }
        let pending = self.net.in_flight();
        if pending > 0 {
            let k = 1 + self.rng.below(pending);
            self.net.deliver(k);
        }
        self.net.advance(TICK);
        self.ticks += 1;
        out
    }

    /// Anything left to do anywhere (paused and killed nodes have nothing to do)?
    pub fn busy(&self) -> bool {
        self.net.in_flight() > 0 || self.nodes.iter().any(|n| !n.paused && n.ctl.as_ref().is_some_and(|c| !c.node.idle()))
    }
}
