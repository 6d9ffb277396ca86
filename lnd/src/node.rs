//! A node: one LNet core, its LNDs and its memory, and the loop that carries the core's actions
//! to the LNDs. [`NodeBuilder`] puts one together from NIs (DMA, TCP), routes and roles.

use crate::dev::DmaDevice;
use crate::dmalnd::{DmaLnd, DmaLndConfig};
use crate::lnd::Lnd;
use crate::lnet::{opt, Action, Event, Insert, Lnet, MdSpec, NiConfig, RouterPools};
use crate::lolnd::LoLnd;
use crate::mem::{Arena, Mem, Seg};
use crate::sock::io::SockIo;
use crate::sock::{SockConfig, SockLnd};
use crate::wire::{LndType, Net, Nid, ProcessId, LNET_MTU};
use std::sync::Arc;

pub struct Node {
    pub lnet: Lnet,
    pub lnds: Vec<Box<dyn Lnd>>,
    /// The memory every MD of this node points into (the DMA device's registered region when
    /// the node has a DMA NI).
    pub mem: Arc<Mem>,
    pub arena: Arena,
    /// The node's ptlrpc xids, one sequence for all its clients (`ptlrpc_last_xid`).
    pub xids: crate::ptlrpc::xid::Xids,
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

    /// The earliest time (ms, the core's clock) something here wants a step without any input:
    /// a held message's release, an LND's retry or deadline.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.lnds.iter().filter_map(|l| l.next_due_ms()).chain(self.lnet.next_release_ms()).min()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.lnet.poll_event()
    }

    /// Nothing in flight anywhere: no LNet message, no LND transfer.
    pub fn idle(&self) -> bool {
        self.lnet.msgs_in_flight() == 0 && self.lnet.held() == 0 && self.lnds.iter().all(|l| l.busy() == 0)
    }

    /// A node with `0@lo` and one DMA NI on `dev` (the shape unit tests use).
    pub fn with_dma<D: DmaDevice + 'static>(dev: D, nid: Nid, pid: u32, incarnation: u64, cfg: DmaLndConfig) -> Node {
        let mut b = NodeBuilder::new(pid, incarnation);
        b.dma(nid, Box::new(dev), cfg);
        b.build().expect("a lone DMA NI always builds")
    }
}

/// A node's DMA LND as [`NodeBuilder`] makes it (on a boxed device).
pub type BoxedDmaLnd = DmaLnd<Box<dyn DmaDevice>>;

/// The DMA LND of NI `nid` among `lnds` (to tell it its device went, or give it a new one).
pub fn dma_lnd(lnds: &mut [Box<dyn Lnd>], nid: Nid) -> Option<&mut BoxedDmaLnd> {
    lnds.iter_mut().find_map(|l| l.as_any_mut().and_then(|a| a.downcast_mut::<BoxedDmaLnd>()).filter(|l| l.nid() == nid))
}

/// Where to find the DMA NI in nodes built by [`Node::with_dma`].
pub const DMA_NI: crate::lnet::NiIdx = 1;

/// Portal 0 ping: match bits of LNet pings (spec §4.4).
pub use crate::lnet::recovery::PING_MATCH_BITS;
const PING_MAGIC: u32 = 0x7069_6E67;
const NI_STATUS_UP: u32 = 0x15aa_c0de;
const NI_STATUS_DOWN: u32 = 0xdead_face;
/// `pi_features` bit: the entries carry NI status (mandatory).
const PING_FEAT_NI_STATUS: u32 = 0x2;

/// A peer's ping info (what a GET on portal 0 returns), decoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PingInfo {
    pub pid: u32,
    pub features: u32,
    /// Its NIs after entry 0 (`0@lo`), with their status (`up`, `down` or the raw value).
    pub nis: Vec<(Nid, String)>,
}

/// Decodes ping info as the pinger checks it: the magic (either byte order), NI status, at least
/// one entry, entry 0 `0@lo`; entries the buffer cut short are left out.
pub fn parse_ping_info(b: &[u8]) -> Result<PingInfo, String> {
    if b.len() < 16 {
        return Err(format!("ping info of {} bytes is shorter than its 16-byte header", b.len()));
    }
    let magic = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
    let swap = match magic {
        PING_MAGIC => false,
        m if m.swap_bytes() == PING_MAGIC => true,
        m => return Err(format!("bad ping magic {m:#010x}")),
    };
    let u32_at = |o: usize| {
        let v = u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        if swap { v.swap_bytes() } else { v }
    };
    let (features, pid, nnis) = (u32_at(4), u32_at(8), u32_at(12) as usize);
    if features & PING_FEAT_NI_STATUS == 0 {
        return Err(format!("ping info without NI status (features {features:#x})"));
    }
    if nnis == 0 {
        return Err("ping info with no NI".into());
    }
    let have = ((b.len() - 16) / 16).min(nnis);
    let mut nis = Vec::new();
    for k in 0..have {
        let o = 16 + 16 * k;
        let raw = u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let nid = Nid(if swap { raw.swap_bytes() } else { raw });
        if k == 0 {
            if nid != Nid::LO_0 {
                return Err(format!("ping info entry 0 is {nid}, not 0@lo"));
            }
            continue;
        }
        let status = match u32_at(o + 8) {
            NI_STATUS_UP => "up".to_string(),
            NI_STATUS_DOWN => "down".to_string(),
            s => format!("{s:#x}"),
        };
        nis.push((nid, status));
    }
    Ok(PingInfo { pid, features, nis })
}

enum NiSpec {
    Dma { nid: Nid, dev: Box<dyn DmaDevice>, cfg: DmaLndConfig },
    Tcp { nid: Nid, io: Box<dyn SockIo>, cfg: SockConfig },
}

/// Errors building a node.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("DMA NIs {0} and {1} register different memory: every DMA NI of a node must register the node's one memory")]
    DmaMemDiffers(Nid, Nid),
    #[error("{0}: {1}")]
    Sock(Nid, std::io::Error),
    #[error("node memory of {0} bytes is too small for its router buffers ({1} bytes) and ping data; give it more (e.g. --mem)")]
    NoMemory(u64, u64),
    #[error("route to {net} via {gw}: the gateway is not on any of this node's nets")]
    BadRoute { net: Net, gw: Nid },
    #[error("Multi-Rail: {0}")]
    Peer(String),
}

/// Puts a node together.
pub struct NodeBuilder {
    pid: u32,
    incarnation: u64,
    nis: Vec<NiSpec>,
    routes: Vec<(Net, Nid)>,
    routing: Option<(usize, usize, usize)>,
    peer_buffer_credits: u32,
    mem_size: usize,
    capture: Option<Arc<std::sync::Mutex<crate::sock::pcap::Capture>>>,
    mr: MultiRail,
}

/// A node's Multi-Rail and health configuration: its Multi-Rail peers (`lnetctl peer add`), NI
/// selection priorities (`lnetctl net set --priority`) and the health module parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MultiRail {
    /// (primary NID, all the peer's NIDs).
    pub peers: Vec<(Nid, Vec<Nid>)>,
    /// (our NID, priority; lower is preferred).
    pub priorities: Vec<(Nid, u32)>,
    pub tunables: crate::lnet::health::Tunables,
    /// Say in our ping info that we are Multi-Rail (`LNET_PING_FEAT_MULTI_RAIL`), so peers that
    /// discover us take all our NIs.
    pub announce: bool,
}

/// `LNET_PING_FEAT_MULTI_RAIL`: the node is Multi-Rail (discovery takes all its NIs).
pub const PING_FEAT_MULTI_RAIL: u32 = 1 << 3;

impl NodeBuilder {
    pub fn new(pid: u32, incarnation: u64) -> NodeBuilder {
        NodeBuilder { pid, incarnation, nis: Vec::new(), routes: Vec::new(), routing: None, peer_buffer_credits: 0, mem_size: 16 << 20, capture: None, mr: MultiRail::default() }
    }

    /// Multi-Rail peers, NI priorities and health parameters.
    pub fn multi_rail(&mut self, mr: MultiRail) -> &mut Self {
        self.mr = mr;
        self
    }

    pub fn dma(&mut self, nid: Nid, dev: Box<dyn DmaDevice>, cfg: DmaLndConfig) -> &mut Self {
        self.nis.push(NiSpec::Dma { nid, dev, cfg });
        self
    }

    pub fn tcp(&mut self, nid: Nid, io: Box<dyn SockIo>, cfg: SockConfig) -> &mut Self {
        self.nis.push(NiSpec::Tcp { nid, io, cfg });
        self
    }

    pub fn route(&mut self, net: Net, gateway: Nid) -> &mut Self {
        self.routes.push((net, gateway));
        self
    }

    /// Forward for others, with `small` 4 KiB and `large` 1 MiB buffers and `tiny` zero-byte slots.
    pub fn routing(&mut self, tiny: usize, small: usize, large: usize) -> &mut Self {
        self.routing = Some((tiny, small, large));
        self
    }

    /// Router buffers one peer may hold at once (Lustre's `peer_buffer_credits`; by default
    /// the NI's per-peer credits).
    pub fn peer_buffer_credits(&mut self, n: u32) -> &mut Self {
        self.peer_buffer_credits = n;
        self
    }

    /// Memory for a node without a DMA NI (with DMA NIs, the region their devices registered).
    pub fn mem_size(&mut self, bytes: usize) -> &mut Self {
        self.mem_size = bytes;
        self
    }

    /// Records every socklnd write of this node in a pcap capture.
    pub fn capture(&mut self, c: Arc<std::sync::Mutex<crate::sock::pcap::Capture>>) -> &mut Self {
        self.capture = Some(c);
        self
    }

    pub fn build(self) -> Result<Node, BuildError> {
        // Every MD points into one node memory, so each DMA device (one per fabric) must have
        // registered that same memory.
        let dmas: Vec<(Nid, &Arc<Mem>)> = self
            .nis
            .iter()
            .filter_map(|n| match n {
                NiSpec::Dma { nid, dev, .. } => Some((*nid, dev.mem())),
                _ => None,
            })
            .collect();
        if let Some((b, _)) = dmas.iter().find(|(_, m)| !Arc::ptr_eq(m, dmas[0].1)) {
            return Err(BuildError::DmaMemDiffers(dmas[0].0, *b));
        }
        let mem = self
            .nis
            .iter()
            .find_map(|n| match n {
                NiSpec::Dma { dev, .. } => Some(dev.mem().clone()),
                _ => None,
            })
            .unwrap_or_else(|| Mem::heap(self.mem_size));
        let mut arena = Arena::new(mem.len() as u64, 64);
        let mut lnet = Lnet::new(self.pid, self.incarnation, 0);
        let mut lnds: Vec<Box<dyn Lnd>> = vec![Box::new(LoLnd::new(mem.clone()))];
        for spec in self.nis {
            let lnd_idx = lnds.len();
            match spec {
                NiSpec::Dma { nid, dev, cfg } => {
                    let ni = lnet.add_ni(NiConfig { nid, lnd: lnd_idx, credits: 256, peer_credits: cfg.peer_credits as u32 });
                    lnds.push(Box::new(DmaLnd::new(dev, ni, nid, cfg)));
                }
                NiSpec::Tcp { nid, io, cfg } => {
                    let ni = lnet.add_ni(NiConfig { nid, lnd: lnd_idx, credits: 256, peer_credits: 8 });
                    let mut l = SockLnd::new(io, ni, nid, self.pid, self.incarnation, cfg, mem.clone()).map_err(|e| BuildError::Sock(nid, e))?;
                    if let Some(c) = &self.capture {
                        l.set_capture(c.clone());
                    }
                    lnds.push(Box::new(l));
                }
            }
        }
        lnet.tunables = self.mr.tunables;
        lnet.multi_rail = self.mr.announce;
        for (primary, nids) in &self.mr.peers {
            lnet.add_peer(*primary, nids).map_err(BuildError::Peer)?;
        }
        for (nid, p) in &self.mr.priorities {
            let ni = (1..=lnet.nids().len()).find(|&i| lnet.ni_nid(i) == *nid).ok_or(BuildError::Peer(format!("priority for {nid}, which is not one of this node's NIDs")))?;
            lnet.set_ni_priority(ni, *p);
        }
        let local_nets: Vec<Net> = lnet.nids().iter().map(|n| n.net()).collect();
        for (net, gw) in self.routes {
            if !local_nets.contains(&gw.net()) {
                return Err(BuildError::BadRoute { net, gw });
            }
            lnet.add_route(net, gw);
        }
        let size = mem.len() as u64;
        if let Some((tiny, small, large)) = self.routing {
            let need = small as u64 * 4096 + large as u64 * LNET_MTU as u64;
            let mut alloc = |n: usize, len: u32| -> Result<Vec<Seg>, BuildError> {
                (0..n).map(|_| arena.alloc_top(len as u64).map(|off| Seg { off, len }).ok_or(BuildError::NoMemory(size, need))).collect()
            };
            let small = alloc(small, 4096)?;
            let large = alloc(large, LNET_MTU)?;
            lnet.enable_routing(RouterPools { tiny, small, small_size: 4096, large, peer_buffer_credits: self.peer_buffer_credits });
        }
        let xids = crate::ptlrpc::xid::Xids::new(self.incarnation);
        let mut node = Node { lnet, lnds, mem, arena, xids };
        node.install_ping_responder().map_err(|_| BuildError::NoMemory(size, 0))?;
        Ok(node)
    }
}

impl Node {
    /// Answers LNet pings (GET on portal 0) with our ping info, as every Lustre peer expects.
    fn install_ping_responder(&mut self) -> Result<(), ()> {
        let b = self.ping_info();
        let off = self.arena.alloc_top(b.len() as u64).ok_or(())?;
        self.mem.write(off, &b).map_err(|_| ())?;
        let me = self.lnet.me_attach(0, ProcessId::ANY, PING_MATCH_BITS, 0, false, Insert::Tail).map_err(|_| ())?;
        let spec = MdSpec { iov: vec![Seg { off, len: b.len() as u32 }], options: opt::OP_GET | opt::TRUNCATE | opt::MANAGE_REMOTE, threshold: None, max_size: 0, user_ptr: 0 };
        self.lnet.md_attach(me, spec).map_err(|_| ())?;
        Ok(())
    }

    /// Our ping info, as the responder serves it.
    pub fn ping_info(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let nids = self.lnet.nids();
        let features: u32 = if self.lnet.is_router() { 0x3 } else { 0x7 } | if self.lnet.multi_rail { PING_FEAT_MULTI_RAIL } else { 0 };
        for v in [PING_MAGIC, features, self.lnet.pid(), nids.len() as u32 + 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        // Entry 0 is always 0@lo, its status a sequence number.
        for (nid, status) in std::iter::once((Nid::LO_0, 1u32)).chain(nids.iter().map(|n| (*n, NI_STATUS_UP))) {
            b.extend_from_slice(&nid.0.to_le_bytes());
            b.extend_from_slice(&status.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        b
    }

    /// Does this node have a TCP NI?
    pub fn has_tcp(&self) -> bool {
        self.lnet.nids().iter().any(|n| n.net().lnd() == LndType::SOCKLND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_info_decodes_as_served_and_bad_info_is_refused() {
        let fabric = crate::dev::inproc::InProcFabric::new(1);
        let nid: Nid = "3@dma0".parse().unwrap();
        let node = Node::with_dma(fabric.attach(3, 4 << 20).unwrap(), nid, 12345, 1, DmaLndConfig::default());
        let info = node.ping_info();
        let p = parse_ping_info(&info).unwrap();
        assert_eq!((p.pid, p.features), (12345, 0x7));
        let mut node = node;
        node.lnet.multi_rail = true;
        assert_eq!(parse_ping_info(&node.ping_info()).unwrap().features, 0x7 | PING_FEAT_MULTI_RAIL, "a Multi-Rail node says so");
        assert_eq!(p.nis, vec![(nid, "up".to_string())]);
        // Byte-swapped from a big-endian peer.
        let mut sw = info.clone();
        for w in [0usize, 4, 8, 12, 24, 40] {
            sw[w..w + 4].reverse();
        }
        sw[16..24].reverse();
        sw[32..40].reverse();
        assert_eq!(parse_ping_info(&sw).unwrap(), p);
        let mut bad = info.clone();
        bad[0] ^= 1;
        assert!(parse_ping_info(&bad).unwrap_err().contains("magic"));
        let mut bad = info.clone();
        bad[4] = 0x1;
        assert!(parse_ping_info(&bad).unwrap_err().contains("NI status"));
        let mut bad = info.clone();
        bad[16] = 9;
        assert!(parse_ping_info(&bad).unwrap_err().contains("not 0@lo"));
        assert!(parse_ping_info(&info[..10]).is_err());
        // A short buffer keeps the entries that fit.
        assert!(parse_ping_info(&info[..32]).unwrap().nis.is_empty());
    }
}
