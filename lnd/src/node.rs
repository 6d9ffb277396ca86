//! A node: one LNet core and its LNDs, and the loop that carries the core's actions to them.
//! Still free of I/O policy: the caller decides when to wait and for what.

use crate::lnd::Lnd;
use crate::lnet::{Action, Event, Lnet};

pub struct Node {
    pub lnet: Lnet,
    pub lnds: Vec<Box<dyn Lnd>>,
}

impl Node {
    /// Dispatches queued actions until none are left.
    pub fn run_actions(&mut self) -> bool {
        let mut any = false;
        while let Some(a) = self.lnet.poll_action() {
            any = true;
            match a {
                Action::Send(s) => {
                    let l = self.lnet.ni_lnd(s.ni);
                    self.lnds[l].send(&mut self.lnet, s);
                }
                Action::Recv(r) => {
                    let l = self.lnet.ni_lnd(r.ni);
                    self.lnds[l].recv(&mut self.lnet, r);
                }
            }
        }
        any
    }

    /// Polls every LND and runs the resulting actions until quiet; returns whether anything
    /// happened.
    pub fn step(&mut self) -> bool {
        let mut any = self.run_actions();
        loop {
            let mut progress = false;
            for l in self.lnds.iter_mut() {
                progress |= l.poll(&mut self.lnet);
            }
            progress |= self.run_actions();
            if !progress {
                return any;
            }
            any = true;
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.lnet.poll_event()
    }
}

/// Index of the DMA NI and LND in nodes built by [`Node::with_dma`].
pub const DMA_NI: crate::lnet::NiIdx = 1;

impl Node {
    /// A node with `0@lo` and one DMA NI on `dev` (LND 0 = lo, LND 1 = dma).
    pub fn with_dma<D: crate::dev::DmaDevice + 'static>(dev: D, nid: crate::wire::Nid, pid: u32, incarnation: u64, cfg: crate::dmalnd::DmaLndConfig) -> Node {
        let mut lnet = Lnet::new(pid, incarnation, 0);
        let ni = lnet.add_ni(crate::lnet::NiConfig { nid, lnd: 1, credits: 256, peer_credits: cfg.peer_credits as u32 });
        let lo = crate::lolnd::LoLnd::new(dev.mem().clone());
        let dma = crate::dmalnd::DmaLnd::new(dev, ni, nid, cfg);
        Node { lnet, lnds: vec![Box::new(lo), Box::new(dma)] }
    }

    /// Nothing in flight anywhere: no LNet message, no LND transfer.
    pub fn idle(&self) -> bool {
        self.lnet.msgs_in_flight() == 0 && self.lnds.iter().all(|l| l.busy() == 0)
    }
}
