//! The LNet core (sans-IO): NIs and credits, portals with MEs and MDs, PUT→ACK and GET→REPLY,
//! events. Inputs are user calls and `parse`/`finalize` from LNDs; outputs are [`Action`]s for the
//! driver to hand to LNDs and [`Event`]s for the user. No I/O, threads or clocks inside.

mod attach;
pub mod md;
pub mod msg;
pub mod fault;
pub mod health;
mod forward;
mod inject;
mod parse;
pub mod recovery;
mod resend;
mod router;
pub mod mr;
mod select;
pub mod show;
pub(crate) mod slab;

use crate::mem::{iov_len, iov_slice_into, Seg};
use crate::wire::{HdrBody, HdrRepr, Net, Nid, ProcessId, WireHandle, LNET_MTU};
pub use md::{opt, Insert, MdHandle, MdSpec, MeHandle};
use md::{Md, Me};
pub use msg::{errno, Action, Event, EventKind, LndRecv, LndSend, MsgId, NiIdx};
use slab::Slab;
pub use router::RouterPools;
use router::{Fwd, Router};
use std::collections::{HashMap, VecDeque};
use tracing::{debug, warn};

/// Errors returned to LNet users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LnetError {
    #[error("no such MD (unlinked or never bound)")]
    NoSuchMd,
    #[error("no such ME")]
    NoSuchMe,
    #[error("MD is exhausted (threshold reached)")]
    MdInactive,
    #[error("payload of {0} bytes exceeds LNET_MTU")]
    TooLong(u64),
    #[error("no route to {0}")]
    NoRoute(Nid),
    #[error("MD already attached to this ME")]
    MeBusy,
    #[error("MD is attached to a match entry (a target, not a source or sink)")]
    MdOnMe,
}

/// Why `parse` refused a message outright (the LND should treat the peer as broken).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message for {dest} arrived on NI {ni}: should have gone direct")]
    ShouldBeDirect { dest: Nid, ni: Nid },
    #[error("message for local NID {dest} arrived on NI {ni}")]
    WrongNi { dest: Nid, ni: Nid },
    #[error("RDMA-optimized GET for {0} must not be routed")]
    RoutedRdmaGet(Nid),
    #[error("unknown NI index {0}")]
    BadNi(NiIdx),
}

/// What `parse` did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A [`LndRecv`] for it is queued; the LND's rx context must stay valid until then.
    Recv(Option<MsgId>),
    /// Nothing wanted it (no match, too long, stale handle, not for us): status says why.
    /// The LND releases its rx and, for RDMA requests, tells the peer (NAK).
    Dropped(i32),
}

/// One network interface.
#[derive(Debug, Clone)]
pub struct NiConfig {
    pub nid: Nid,
    /// Index of the LND (in the driver's table) that serves this NI.
    pub lnd: usize,
    /// NI-wide transmit credits.
    pub credits: u32,
    /// Per-peer transmit credits.
    pub peer_credits: u32,
}

#[derive(Debug)]
struct Ni {
    cfg: NiConfig,
    credits: u32,
    peer_credits: HashMap<Nid, u32>,
    /// Sends holding their peer credit, waiting for an NI credit, in order.
    waiting: VecDeque<MsgId>,
    /// Sends waiting for a credit of their peer, in order per peer (`lnet_post_send_locked`
    /// keeps the two queues apart, so one peer short of credits holds back only its own).
    peer_waiting: HashMap<Nid, VecDeque<MsgId>>,
    /// This NI's health, and that of each peer NI it has dealt with (`lnet_ni`, `lnet_peer_ni`).
    health: health::Health,
    peer_ni: HashMap<Nid, health::PeerNi>,
    /// Multi-Rail: selection priority (lower is preferred), sends so far (round robin), what
    /// health counted against it, and messages it carried as resends.
    sel_priority: u32,
    seq: u64,
    stats: health::HealthStats,
    resent: u64,
    /// Messages it sent and received (`lnetctl net show -v` statistics), payload bytes sent,
    /// and the lowest health it fell to.
    sent: u64,
    received: u64,
    sent_bytes: u64,
    lowest: u32,
}

/// Counters, as `lnetctl stats show` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub send_count: u64,
    pub recv_count: u64,
    pub drop_count: u64,
    pub send_length: u64,
    pub recv_length: u64,
    pub drop_length: u64,
    pub errors: u64,
    pub credit_stalls: u64,
    /// Sends that failed for a reason health counts (a NAK is not one).
    pub health_failures: u64,
    pub route_count: u64,
    pub route_length: u64,
    /// Messages sent again over another path (another gateway, or another NI pair of a
    /// Multi-Rail peer).
    pub resends: u64,
    /// ACKs and REPLYs that did not come within the transaction timeout.
    pub response_timeouts: u64,
    /// Recovery pings sent for NIs and peer NIs below full health.
    pub recovery_pings: u64,
    /// Messages dropped by fault rules.
    pub faults_dropped: u64,
    /// Messages held back by delay rules.
    pub faults_delayed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Send,
    Recv,
}

#[derive(Debug)]
struct Msg {
    dir: Dir,
    md: Option<MdHandle>,
    ev: Option<Event>,
    /// For a received PUT: the ACK to send once it has landed.
    ack: Option<HdrRepr>,
    /// Credits held while with the LND: (NI, peer).
    credit: Option<(NiIdx, Nid)>,
    /// A send waiting for credits.
    pending: Option<LndSend>,
    /// A forwarded message and its router buffer.
    fwd: Option<Fwd>,
    /// For a routed send: a copy to resend through another gateway if this one fails.
    resend: Option<LndSend>,
    /// For a send to a Multi-Rail peer: how to send it again over another path (boxed: a
    /// single-rail message carries only the pointer).
    retry: Option<Box<mr::Retry>>,
}

/// The LNet instance of one node.
pub struct Lnet {
    pid: u32,
    incarnation: u64,
    nis: Vec<Ni>,
    routes: Vec<(Net, Nid)>,
    /// Gateways that recently failed a send; avoided while others are up.
    gw_down: std::collections::HashSet<Nid>,
    router: Option<Router>,
    lazy: std::collections::HashSet<u32>,
    fault_rules: Vec<fault::ActiveRule>,
    delayed: std::collections::BTreeMap<u32, VecDeque<(NiIdx, HdrRepr, Nid, u64)>>,
    /// Messages a delay rule holds: (release time, ni, hdr, from, LND rx, rdma_req).
    held: VecDeque<(u64, NiIdx, HdrRepr, Nid, u64, bool)>,
    /// What the fault rules did, for the node's trace.
    fault_log: VecDeque<fault::FaultRecord>,
    fault_hits: std::collections::BTreeMap<String, u64>,
    /// Segment vectors for the iovecs handed to LNDs, reused (LNDs give them back with
    /// [`Lnet::recycle_iov`]) so the steady state does not allocate per message.
    iov_pool: Vec<Vec<Seg>>,
    /// Milliseconds on the driver's clock (see [`Lnet::set_time_ms`]).
    now_ms: u64,
    portals: HashMap<u32, Vec<MeHandle>>,
    mes: Slab<Me>,
    mds: Slab<Md>,
    msgs: Slab<Msg>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    pub counters: Counters,
    /// Health, resend and recovery parameters (`lnet_health_sensitivity`, `lnet_retry_count`,
    /// `lnet_transaction_timeout`, ...).
    pub tunables: health::Tunables,
    /// This node says it is Multi-Rail in its ping info.
    pub multi_rail: bool,
    mr: mr::MrPeers,
    /// Reused by path selection.
    cand_buf: Vec<mr::PathCand>,
    recovery: health::Recovery,
    /// Some fault rule fails sends with a health status; sends it failed, to finalize.
    has_send_rules: bool,
    injected: VecDeque<(MsgId, health::HealthStatus)>,
}

/// The loopback NI every node has, index 0.
pub const LO_NI: NiIdx = 0;

impl Lnet {
    /// A new instance with the loopback NI `0@lo` served by LND index `lo_lnd`.
    /// `incarnation` identifies this instance in wire handles (a restart changes it).
    pub fn new(pid: u32, incarnation: u64, lo_lnd: usize) -> Lnet {
        let mut l = Lnet {
            pid,
            incarnation,
            nis: Vec::new(),
            routes: Vec::new(),
            gw_down: Default::default(),
            router: None,
            lazy: Default::default(),
            fault_rules: Vec::new(),
            delayed: Default::default(),
            held: VecDeque::new(),
            fault_log: VecDeque::new(),
            fault_hits: Default::default(),
            iov_pool: Vec::new(),
            now_ms: 0,
            portals: HashMap::new(),
            mes: Slab::default(),
            mds: Slab::default(),
            msgs: Slab::default(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            tunables: Default::default(),
            multi_rail: false,
            mr: Default::default(),
            cand_buf: Vec::new(),
            recovery: Default::default(),
            has_send_rules: false,
            injected: VecDeque::new(),
        };
        l.add_ni(NiConfig { nid: Nid::LO_0, lnd: lo_lnd, credits: u32::MAX, peer_credits: u32::MAX });
        l
    }

    /// This instance's incarnation (a restarted node has a new one).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn add_ni(&mut self, cfg: NiConfig) -> NiIdx {
        let ni = Ni { credits: cfg.credits, cfg, peer_credits: HashMap::new(), waiting: VecDeque::new(), peer_waiting: HashMap::new(), health: Default::default(), peer_ni: HashMap::new(), sel_priority: mr::LOWEST_PRIORITY, seq: 0, stats: Default::default(), resent: 0, sent: 0, received: 0, sent_bytes: 0, lowest: health::MAX_HEALTH };
        self.nis.push(ni);
        self.nis.len() - 1
    }

    pub fn ni_nid(&self, ni: NiIdx) -> Nid {
        self.nis[ni].cfg.nid
    }

    pub fn ni_lnd(&self, ni: NiIdx) -> usize {
        self.nis[ni].cfg.lnd
    }

    /// Our NIDs, loopback excluded.
    pub fn nids(&self) -> Vec<Nid> {
        self.nis.iter().skip(1).map(|n| n.cfg.nid).collect()
    }

    /// Adds a route: messages for `net` go via `gateway`.
    pub fn add_route(&mut self, net: Net, gateway: Nid) {
        self.routes.push((net, gateway));
    }

    fn is_local(&self, nid: Nid) -> bool {
        self.nis.iter().any(|n| n.cfg.nid == nid)
    }

    fn wire_handle(&self, md: MdHandle) -> WireHandle {
        WireHandle { interface_cookie: self.incarnation, object_cookie: md.0 }
    }

    fn md_by_wire(&self, wh: WireHandle) -> Option<MdHandle> {
        (wh.interface_cookie == self.incarnation && self.mds.get(wh.object_cookie).is_some()).then_some(MdHandle(wh.object_cookie))
    }

    // ----- initiating -----

    fn event(&self, kind: EventKind, md: MdHandle, peer: ProcessId, portal: u32, bits: u64, rlen: u64, mlen: u64, offset: u64, hdr_data: u64) -> Event {
        let user_ptr = self.mds.get(md.0).map(|m| m.spec.user_ptr).unwrap_or(0);
        Event { kind, md, user_ptr, peer, portal, match_bits: bits, rlength: rlen, mlength: mlen, offset, hdr_data, status: 0, unlinked: false }
    }

    /// A live MD bound with `md_bind`: what `put`/`get` send from or into, and what ACKs and
    /// REPLYs land on. An MD on an ME is a target only (Lustre refuses `md_me != NULL` here).
    fn live_md(&self, h: MdHandle) -> Result<&Md, LnetError> {
        let md = self.mds.get(h.0).ok_or(LnetError::NoSuchMd)?;
        if md.threshold == Some(0) {
            return Err(LnetError::MdInactive);
        }
        if md.me.is_some() {
            return Err(LnetError::MdOnMe);
        }
        Ok(md)
    }

    /// `LNetPut`: sends the whole MD to `target`'s `portal`; an ACK is requested if `ack`.
    #[allow(clippy::too_many_arguments)]
    pub fn put(&mut self, md: MdHandle, ack: bool, target: ProcessId, portal: u32, match_bits: u64, offset: u32, hdr_data: u64) -> Result<MsgId, LnetError> {
        let m = self.live_md(md)?;
        let len = m.length;
        if len > LNET_MTU as u64 {
            return Err(LnetError::TooLong(len));
        }
        let p = self.select(target.nid, None)?;
        let mut iov = self.iov_pool.pop().unwrap_or_default();
        iov.extend_from_slice(&self.mds.get(md.0).expect("live").spec.iov);
        let ack_wmd = if ack { self.wire_handle(md) } else { WireHandle::NONE };
        let to = ProcessId::new(p.dest, target.pid);
        let hdr = self.hdr_to(p.ni, to, len as u32, HdrBody::Put { ack_wmd, match_bits, hdr_data, ptl_index: portal, offset });
        let ev = self.event(EventKind::Send, md, target, portal, match_bits, len, len, offset as u64, hdr_data);
        self.attach_md(md);
        let retry = self.retry_for(target, &hdr, md);
        if ack {
            self.track_response(md, p.hop);
        }
        let id = self.launch(Some(md), Some(ev), p.ni, p.hop, to, hdr, iov, None);
        self.set_retry(id, retry);
        Ok(id)
    }

    /// `LNetGet`: asks `target` for up to the MD's length from its `portal`; the data lands in
    /// the MD (REPLY event).
    pub fn get(&mut self, md: MdHandle, target: ProcessId, portal: u32, match_bits: u64, offset: u32) -> Result<MsgId, LnetError> {
        let sink_len = self.live_md(md)?.length.min(LNET_MTU as u64);
        let p = self.select(target.nid, None)?;
        let mut sink = self.iov_pool.pop().unwrap_or_default();
        sink.extend_from_slice(&self.mds.get(md.0).expect("live").spec.iov);
        let body = HdrBody::Get { return_wmd: self.wire_handle(md), match_bits, ptl_index: portal, src_offset: offset, sink_length: sink_len as u32 };
        let to = ProcessId::new(p.dest, target.pid);
        let hdr = self.hdr_to(p.ni, to, 0, body);
        let ev = self.event(EventKind::Send, md, target, portal, match_bits, 0, 0, offset as u64, 0);
        self.attach_md(md);
        let retry = self.retry_for(target, &hdr, md);
        self.track_response(md, p.hop);
        // Only the last hop may take the RDMA shortcut: through a router the GET travels as is.
        let get_sink = (p.hop == p.dest).then_some(sink);
        let id = self.launch(Some(md), Some(ev), p.ni, p.hop, to, hdr, Vec::new(), get_sink);
        self.set_retry(id, retry);
        Ok(id)
    }

    /// The header of a message this node starts towards `target`, leaving through `ni`.
    fn hdr_to(&self, ni: NiIdx, target: ProcessId, payload_length: u32, body: HdrBody) -> HdrRepr {
        HdrRepr { dest_nid: target.nid, src_nid: self.src_nid(ni, target.nid), dest_pid: target.pid, src_pid: self.pid, payload_length, body }
    }

    /// The header of an ACK or REPLY answering `req`: addressed back to its sender, from the
    /// NID the request was sent to.
    fn answer_hdr(&self, req: &HdrRepr, payload_length: u32, body: HdrBody) -> HdrRepr {
        HdrRepr { dest_nid: req.src_nid, src_nid: req.dest_nid, dest_pid: req.src_pid, src_pid: self.pid, payload_length, body }
    }

    fn src_nid(&self, ni: NiIdx, dest: Nid) -> Nid {
        if ni == LO_NI {
            dest
        } else {
            self.nis[ni].cfg.nid
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(&mut self, md: Option<MdHandle>, ev: Option<Event>, ni: NiIdx, next_hop: Nid, target: ProcessId, hdr: HdrRepr, iov: Vec<Seg>, get_sink: Option<Vec<Seg>>) -> MsgId {
        let id = MsgId(self.msgs.insert(Msg { dir: Dir::Send, md, ev, ack: None, credit: None, pending: None, fwd: None, resend: None, retry: None }));
        let send = LndSend { msg: id, ni, target, next_hop, hdr, iov, get_sink };
        let m = self.msgs.get_mut(id.0).unwrap();
        if next_hop != target.nid && self.routes.iter().filter(|r| r.0 == target.nid.net()).count() > 1 {
            m.resend = Some(send.clone());
        }
        m.pending = Some(send);
        self.post_send(id);
        id
    }

    /// `lnet_post_send_locked`: a send takes a credit of its peer, then one of its NI, and
    /// goes to its LND. Short of either, it waits in that queue, behind earlier sends (so
    /// sends to one peer keep their order, and a peer short of credits holds back only its own).
    fn post_send(&mut self, id: MsgId) {
        let Some(send) = self.msgs.get(id.0).and_then(|m| m.pending.as_ref()) else { return };
        let (ni_idx, hop) = (send.ni, send.next_hop);
        let ni = &mut self.nis[ni_idx];
        let pc = ni.cfg.peer_credits;
        let peer = ni.peer_credits.entry(hop).or_insert(pc);
        let queue = ni.peer_waiting.get(&hop).is_some_and(|q| !q.is_empty());
        if queue || *peer == 0 {
            self.counters.credit_stalls += 1;
            debug!(msg = id.0, peer = %hop, "waiting for peer credits");
            ni.peer_waiting.entry(hop).or_default().push_back(id);
            return;
        }
        *peer -= 1;
        self.post_ni(ni_idx, id);
    }

    /// The NI half of [`Lnet::post_send`]: the send holds its peer credit.
    fn post_ni(&mut self, ni_idx: NiIdx, id: MsgId) {
        let ni = &mut self.nis[ni_idx];
        if !ni.waiting.is_empty() || ni.credits == 0 {
            self.counters.credit_stalls += 1;
            debug!(msg = id.0, "waiting for NI credits");
            ni.waiting.push_back(id);
            return;
        }
        ni.credits -= 1;
        self.hand_to_lnd(id);
    }

    /// A send with both credits goes to its LND — unless a fault rule with a health status
    /// fails it first, as the LND would have (`lnet_send_error_simulation`).
    fn hand_to_lnd(&mut self, id: MsgId) {
        let msg = self.msgs.get_mut(id.0).expect("sending message");
        let send = msg.pending.take().expect("pending send");
        msg.credit = Some((send.ni, send.next_hop));
        self.counters.send_count += 1;
        self.counters.send_length += send.hdr.payload_length as u64;
        let ni = &mut self.nis[send.ni];
        ni.sent += 1;
        ni.sent_bytes += send.hdr.payload_length as u64;
        if self.has_send_rules {
            if let Some(hs) = self.send_fault(&send.hdr) {
                self.injected.push_back((id, hs));
                self.recycle_iov(send.iov);
                if let Some(sink) = send.get_sink {
                    self.recycle_iov(sink);
                }
                return;
            }
        }
        self.actions.push_back(Action::Send(send));
    }

    /// A send finished: its peer credit passes to that peer's first waiter (which then needs
    /// an NI credit), its NI credit to the NI's first waiter (`lnet_return_tx_credits_locked`).
    fn return_credits(&mut self, ni_idx: NiIdx, hop: Nid) {
        let ni = &mut self.nis[ni_idx];
        ni.credits = ni.credits.saturating_add(1);
        let next = ni.peer_waiting.get_mut(&hop).and_then(|q| q.pop_front());
        if ni.peer_waiting.get(&hop).is_some_and(|q| q.is_empty()) {
            ni.peer_waiting.remove(&hop);
        }
        match next {
            Some(id) => self.post_ni(ni_idx, id),
            None => {
                if let Some(p) = ni.peer_credits.get_mut(&hop) {
                    *p = p.saturating_add(1);
                }
            }
        }
        loop {
            let ni = &mut self.nis[ni_idx];
            if ni.credits == 0 {
                break;
            }
            let Some(id) = ni.waiting.pop_front() else { break };
            ni.credits -= 1;
            self.hand_to_lnd(id);
        }
    }

    /// `lnet_finalize`: the LND is done with `msg`; `status` is 0 or a negative errno, whose
    /// health class is read the way ksocklnd sorts its errors ([`health::HealthStatus::of_errno`]).
    pub fn finalize(&mut self, id: MsgId, status: i32) {
        self.finalize_hs(id, status, health::HealthStatus::of_errno(status));
    }

    /// `lnet_finalize` with the health class the LND gives the failure (`msg_health_status`).
    pub fn finalize_hs(&mut self, id: MsgId, status: i32, hs: health::HealthStatus) {
        let Some(msg) = self.msgs.remove(id.0) else {
            warn!(msg = id.0, "finalize of unknown message");
            return;
        };
        let hs = if status == 0 { health::HealthStatus::Ok } else { hs };
        if let Some((ni, hop)) = msg.credit {
            self.return_credits(ni, hop);
            if msg.dir == Dir::Send {
                self.health_check(ni, hop, hs, msg.ev.as_ref().is_some_and(|e| self.recovery.is_ping(e.md)));
            }
        }
        let msg = match self.try_mr_resend(msg, hs) {
            Some(m) => m,
            None => return,
        };
        let msg = match self.try_resend(msg, status) {
            Some(m) => m,
            None => return,
        };
        if status != 0 {
            self.counters.errors += 1;
        }
        if let Some(fwd) = msg.fwd {
            self.forward_done(msg.dir, fwd, status);
            return;
        }
        if msg.dir == Dir::Recv && status == 0 {
            if let Some(ack) = msg.ack {
                let target = ProcessId::new(ack.dest_nid, ack.dest_pid);
                if let Ok((ni, hop)) = self.route(ack.dest_nid) {
                    self.launch(None, None, ni, hop, target, ack, Vec::new(), None);
                }
            }
        }
        if let Some(mut ev) = msg.ev {
            ev.status = status;
            if status != 0 && ev.kind != EventKind::Send {
                ev.mlength = 0;
            }
            if status != 0 && ev.kind == EventKind::Send {
                self.untrack_response(ev.md);
            }
            if let Some(md) = msg.md {
                ev.unlinked = self.release_md(md);
            }
            if self.recovery.is_ping(ev.md) {
                self.ping_event(&ev);
                return;
            }
            self.events.push_back(ev);
        } else if let Some(md) = msg.md {
            self.release_md(md);
        }
    }

    /// Are LND calls waiting to be made?
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty() || !self.injected.is_empty()
    }

    /// Next LND call for the driver to make. Sends a fault rule failed are finalized first.
    pub fn poll_action(&mut self) -> Option<Action> {
        while let Some((id, hs)) = self.injected.pop_front() {
            self.finalize_hs(id, hs.errno(), hs);
        }
        self.actions.pop_front()
    }

    /// Next user event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The segments of `md`'s iovec from `offset`, `len` bytes long, in a pooled vector.
    pub(super) fn iov_of(&mut self, md: MdHandle, offset: u64, len: u64) -> Vec<Seg> {
        let mut v = self.iov_pool.pop().unwrap_or_default();
        if let Some(m) = self.mds.get(md.0) {
            iov_slice_into(&m.spec.iov, offset, len, &mut v);
        }
        v
    }

    /// Gives back an iovec an LND is done with (from an [`LndSend`] or [`LndRecv`]).
    pub fn recycle_iov(&mut self, mut v: Vec<Seg>) {
        if self.iov_pool.len() < 512 && v.capacity() <= 64 {
            v.clear();
            self.iov_pool.push(v);
        }
    }

    /// Sink length of an MD (for tests and tools).
    pub fn md_len(&self, h: MdHandle) -> Option<u64> {
        self.mds.get(h.0).map(|m| iov_len(&m.spec.iov))
    }
}
