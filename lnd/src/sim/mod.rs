//! Deterministic simulation: whole clusters in one process — nodes with their LNet cores and
//! LNDs, the in-process DMA device and a virtual TCP network — stepped by a seeded scheduler on
//! virtual time. The same seed gives the same run, byte for byte.

pub mod net;

use crate::daemon::control::Controller;
use crate::dev::inproc::InProcFabric;
use serde_json::Value;
use std::time::Duration;

pub use crate::rng::Rng;

/// Virtual time per scheduler tick.
pub const TICK: Duration = Duration::from_micros(10);

pub struct SimNode {
    pub name: String,
    pub ctl: Controller,
}

/// A simulated cluster.
pub struct Sim {
    pub nodes: Vec<SimNode>,
    pub net: net::SimNet,
    pub fabrics: Vec<(String, InProcFabric)>,
    rng: Rng,
    pub ticks: u64,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim { nodes: Vec::new(), net: net::SimNet::new(), fabrics: Vec::new(), rng: Rng::new(seed), ticks: 0 }
    }

    /// The in-process fabric of DMA net `name` (created on first use, seeded).
    pub fn fabric(&mut self, name: &str) -> InProcFabric {
        if let Some((_, f)) = self.fabrics.iter().find(|(n, _)| n == name) {
            return f.clone();
        }
        let f = InProcFabric::new(self.rng.next());
        self.fabrics.push((name.to_string(), f.clone()));
        f
    }

    pub fn add(&mut self, name: &str, ctl: Controller) -> usize {
        self.nodes.push(SimNode { name: name.to_string(), ctl });
        self.nodes.len() - 1
    }

    /// One scheduler tick: every node steps once, in a seeded random order, then a seeded
    /// number of network items is delivered and virtual time moves on. Returns the output lines.
    pub fn tick(&mut self) -> Vec<(usize, Value)> {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i + 1);
            order.swap(i, j);
        }
        let mut out = Vec::new();
        for i in order {
            let n = &mut self.nodes[i];
            n.ctl.node.step();
            for v in n.ctl.drain_events() {
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

    /// Anything left to do anywhere?
    pub fn busy(&self) -> bool {
        self.net.in_flight() > 0 || self.nodes.iter().any(|n| !n.ctl.node.idle())
    }
}
