//! The DMA LND: LNet over the asymmetric DMA fabric. Small messages ride inline in one SMSG;
//! large ones are pulled by the receiver from a transmit the sender set up first. Every SMSG is
//! first dispatched as control (TX_READY, NAK, NOOP: LND only) or LND message (`lnet_parse`).
//! Flow control: per-peer SMSG credits, returned in every message header or by NOOP.

mod complete;
mod hstatus;
mod recovery;
pub mod wire;

use crate::dev::{Completion, DevStatus, Desc, DmaDevice, Op};
use crate::lnd::Lnd;
use crate::lnet::slab::Slab;
use crate::lnet::health::HealthStatus;
pub use hstatus::hstatus;
use hstatus::finalize;
use crate::lnet::{errno, Lnet, LndRecv, LndSend, MsgId, NiIdx};
use crate::mem::{iov_len, iov_read, iov_write};
use crate::wire::{HdrRepr, MsgType, Nid};

use std::collections::{HashMap, VecDeque};
use tracing::{debug, warn};
use wire::{Body, MsgRepr, MAX_IMMEDIATE};

/// Descriptor tag of NOOPs (0 is other control messages; slab tags are never either).
const NOOP_TAG: u64 = 1;
/// How long a peer whose SMSG bounced waits before its queue and credits are tried again (a
/// peer across a cut or gone would bounce every try; retrying in the same step would spin).
const BOUNCE_RETRY_MS: u64 = 1;

#[derive(Debug, Clone)]
pub struct DmaLndConfig {
    /// SMSGs we may have in a peer's mailbox at once (and it in ours).
    pub peer_credits: u16,
    /// Payloads up to this size go inline (IMMEDIATE); larger ones are pulled.
    pub max_immediate: usize,
    /// A transfer not done after this long fails with ETIMEDOUT (a completion the device
    /// never posted, a peer that never pulls); 0: never. On the LNet core's clock.
    pub tx_timeout_ms: u64,
}

impl Default for DmaLndConfig {
    fn default() -> Self {
        DmaLndConfig { peer_credits: 8, max_immediate: MAX_IMMEDIATE, tx_timeout_ms: 5000 }
    }
}

/// Which protocol path messages took, and trouble seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DmaLndStats {
    pub immediate: u64,
    pub put_rdma: u64,
    pub get_rdma: u64,
    /// GETs answered with the reply inline (GET_DONE): small replies, nothing staged.
    pub get_immediate: u64,
    pub naks_sent: u64,
    pub naks_received: u64,
    pub noops: u64,
    pub credit_stalls: u64,
    pub bad_msgs: u64,
    pub dev_errors: u64,
    /// Control messages sent again after a full mailbox refused them.
    pub smsg_retries: u64,
    /// Peers that left the fabric (each failed the transfers waiting on it).
    pub peers_down: u64,
    /// Transfers failed for taking longer than `tx_timeout_ms`.
    pub timeouts: u64,
    /// Times the device itself went away (every transfer in flight failed).
    pub device_losses: u64,
}

#[derive(Debug, Default)]
struct Peer {
    /// SMSGs we may still send it.
    credits: u16,
    /// Its SMSGs we consumed and have not yet returned credit for.
    owed: u16,
    /// (tag, message, chained to our transmit with that tag?)
    queue: VecDeque<(u64, Vec<u8>, bool)>,
    /// Credits returned in each SMSG submitted and not yet completed, in order (the device
    /// completes a node's SMSGs in submission order): a refused SMSG gives them back to `owed`.
    /// Control messages (NAK, TX_READY: no tx of ours waits on them) keep their bytes too, to
    /// go again if the mailbox was full.
    returning: VecDeque<(u16, Option<Vec<u8>>)>,
    /// The first this many of `returning` went to an incarnation that left the fabric: their
    /// completions give no credit back (the window started afresh).
    void: usize,
}

/// Peer `addr`'s flow-control state, created with `credits` on first use.
fn peer_in(peers: &mut HashMap<u32, Peer>, credits: u16, addr: u32) -> &mut Peer {
    peers.entry(addr).or_insert_with(|| Peer { credits, ..Default::default() })
}

/// The LNet messages a transfer finalizes.
#[derive(Debug, Clone, Copy)]
enum Done {
    One(MsgId),
    /// A GET initiator pulling its reply: the GET and the REPLY.
    Two(MsgId, MsgId),
}

/// What one tag (our descriptor tag) is waiting for.
#[derive(Debug, Clone, Copy)]
enum Tx {
    /// IMMEDIATE queued or sent: finalize when the SMSG is delivered.
    Imm { msg: MsgId, peer: u32 },
    /// Large PUT/REPLY: transmit set up and PUT_REQ chained behind it (the device writes the
    /// cookie into it); waiting for the receiver's pull (TxDone) or a NAK. `cookie` is known
    /// once `TxReady` arrives.
    PutWait { msg: MsgId, peer: u32, cookie: u64 },
    /// GET_REQ sent: waiting for TX_READY or NAK.
    GetReq { msg: MsgId, peer: u32 },
    /// Pulling the reply data of our GET.
    GetPull { get: MsgId, reply: MsgId, peer: u32, target_tag: u64 },
    /// Pulling a PUT's data.
    PutPull { msg: MsgId, peer: u32, src_tag: u64 },
    /// GET target: staging the matched source buffers.
    ReplySetup { msg: MsgId, peer: u32, get_tag: u64 },
    /// GET target: TX_READY sent, waiting for the initiator's pull or NAK.
    ReplyWait { msg: MsgId, peer: u32, cookie: u64 },
    /// Failed with `st` while its transmit is still being set up: the transmit is cancelled
    /// when the device answers the setup, and the transfer drains.
    Orphan { done: Done, peer: u32, st: i32 },
    /// Failed with `st`, but the device may still read or write its buffers: finalized only
    /// when the device lets go of them (transmit cancelled or pulled, pull done, fence passed,
    /// device lost), so LNet never unlinks an MD under a running copy (`kiblnd_tx_done`).
    Draining { done: Done, peer: u32, st: i32 },
}

/// Receive contexts between `lnet_parse` and `recv`.
#[derive(Debug)]
enum Rx {
    Imm { peer: u32, payload: Vec<u8> },
    PutReq { peer: u32, src_tag: u64, cookie: u64 },
    GetReq { peer: u32, get_tag: u64 },
}

pub struct DmaLnd<D: DmaDevice> {
    dev: D,
    ni: NiIdx,
    nid: Nid,
    cfg: DmaLndConfig,
    peers: HashMap<u32, Peer>,
    dirty: Vec<u32>,
    /// (when, peer): peers whose SMSG bounced, to pump again once the core's clock says so.
    bounced: Vec<(u64, u32)>,
    txs: Slab<Tx>,
    rxs: Slab<Rx>,
    backlog: VecDeque<Desc>,
    comps: Vec<(Completion, usize, usize)>,
    comp_bytes: Vec<u8>,
    scratch: Vec<u8>,
    /// The device went away and no new one is attached yet.
    dev_down: bool,
    /// (deadline, tag) of transfers, oldest first; entries of finished ones are skipped.
    deadlines: VecDeque<(u64, u64)>,
    /// Byte buffers for short messages and inline payloads, reused so the steady state does
    /// not allocate per message.
    pool: Vec<Vec<u8>>,
    /// Segment lists of submitted descriptors, on their way back to LNet's pool.
    segs: Vec<Vec<crate::mem::Seg>>,
    pub stats: DmaLndStats,
}

fn dev_errno(s: DevStatus) -> i32 {
    match s {
        DevStatus::Ok => 0,
        // Nobody there, or nobody reachable: the link to its host is down.
        DevStatus::NoSuchPeer | DevStatus::LinkDown => errno::EHOSTUNREACH,
        DevStatus::Cancelled => errno::ECANCELED,
        _ => errno::EIO,
    }
}

impl<D: DmaDevice> DmaLnd<D> {
    /// An LND for NI `ni` whose NID is `nid` (its address must be the device's).
    /// Our NID on this LND's fabric.
    pub fn nid(&self) -> Nid {
        self.nid
    }

    pub fn new(dev: D, ni: NiIdx, nid: Nid, cfg: DmaLndConfig) -> DmaLnd<D> {
        assert_eq!(nid.addr(), dev.addr(), "DMA NID address must be the device's fabric address");
        DmaLnd {
            dev,
            ni,
            nid,
            cfg,
            peers: HashMap::new(),
            dirty: Vec::new(),
            bounced: Vec::new(),
            txs: Slab::default(),
            rxs: Slab::default(),
            backlog: VecDeque::new(),
            comps: Vec::new(),
            comp_bytes: Vec::new(),
            scratch: Vec::new(),
            dev_down: false,
            deadlines: VecDeque::new(),
            pool: Vec::new(),
            segs: Vec::new(),
            stats: DmaLndStats::default(),
        }
    }

    pub fn dev(&self) -> &D {
        &self.dev
    }
    pub fn dev_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Descriptors and receive contexts outstanding (zero when idle).
    pub fn busy(&self) -> usize {
        self.txs.len() + self.rxs.len() + self.backlog.len()
    }

    /// SMSG credits we hold for the peer at `addr` (None: never talked to it).
    pub fn peer_credits(&self, addr: u32) -> Option<u16> {
        self.peers.get(&addr).map(|p| p.credits)
    }

    fn peer(&mut self, addr: u32) -> &mut Peer {
        peer_in(&mut self.peers, self.cfg.peer_credits, addr)
    }

    fn submit(&mut self, d: Desc) {
        if !self.backlog.is_empty() || self.dev.sq_space() == 0 {
            self.backlog.push_back(d);
            return;
        }
        match self.dev.submit(&d) {
            Ok(()) => self.recycle(d),
            Err(e) => {
                debug!("submit deferred: {e}");
                self.backlog.push_back(d);
            }
        }
    }

    fn flush_backlog(&mut self) {
        while self.dev.sq_space() > 0 {
            let Some(d) = self.backlog.pop_front() else { break };
            if self.dev.submit(&d).is_err() {
                self.backlog.push_front(d);
                break;
            }
            self.recycle(d);
        }
    }

    /// A pooled byte buffer (empty).
    fn buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(|| Vec::with_capacity(wire::HDR + 128))
    }

    /// Gives a byte buffer back to the pool (bounded, so a burst does not pin memory).
    fn give_back(&mut self, mut b: Vec<u8>) {
        if self.pool.len() < 256 && b.capacity() <= 8192 {
            b.clear();
            self.pool.push(b);
        }
    }

    /// The device copied a submitted descriptor: its message buffer and segment list can be
    /// used again (segment lists go back to LNet, see [`DmaLnd::return_segs`]).
    fn recycle(&mut self, d: Desc) {
        match d.op {
            Op::Smsg { data, .. } | Op::SmsgTx { data, .. } => self.give_back(data),
            Op::TxSetup { frags, .. } | Op::Pull { frags, .. } if frags.capacity() > 0 => self.segs.push(frags),
            _ => {}
        }
    }

    /// Hands the segment lists of submitted descriptors back to LNet's pool.
    fn return_segs(&mut self, lnet: &mut Lnet) {
        for v in self.segs.drain(..) {
            lnet.recycle_iov(v);
        }
    }

    /// Queues a short message for `peer`; it leaves when credits allow.
    fn queue(&mut self, peer: u32, tag: u64, body: Body<'_>) {
        let mut b = self.buf();
        MsgRepr { credits: 0, src_nid: self.nid, dst_nid: self.nid.net().nid(peer), body }.emit(&mut b);
        if let Body::Nak { .. } = body {
            self.stats.naks_sent += 1;
        }
        self.peer(peer).queue.push_back((tag, b, false));
        self.dirty.push(peer);
    }

    /// Reads `iov` of our memory into the scratch buffer (an inline payload) and gives the
    /// segment list back to LNet: the bytes read, `None` if the memory could not be read.
    fn gather(&mut self, lnet: &mut Lnet, iov: Vec<crate::mem::Seg>) -> Option<usize> {
        self.scratch.clear();
        let ok = iov_read(self.dev.mem(), &iov, &mut self.scratch).is_ok();
        lnet.recycle_iov(iov);
        ok.then_some(self.scratch.len())
    }

    /// Queues a short message whose body carries what [`DmaLnd::gather`] read.
    fn queue_gathered(&mut self, peer: u32, tag: u64, body: impl for<'p> FnOnce(&'p [u8]) -> Body<'p>) {
        let payload = std::mem::take(&mut self.scratch);
        self.queue(peer, tag, body(&payload));
        self.scratch = payload;
    }

    /// Queues a PUT_REQ whose cookie field the device fills in from our transmit `tag`.
    fn queue_chained(&mut self, peer: u32, tag: u64, hdr: HdrRepr) {
        let mut b = self.buf();
        let body = Body::PutReq { hdr, src_tag: tag, cookie: 0, nob: hdr.payload_length };
        MsgRepr { credits: 0, src_nid: self.nid, dst_nid: self.nid.net().nid(peer), body }.emit(&mut b);
        self.peer(peer).queue.push_back((tag, b, true));
        self.dirty.push(peer);
    }

    /// Sends what credits allow. NOOPs only return credits: they cost none and earn none, so
    /// they can always flow (even at 0 credits) and never echo each other.
    fn pump(&mut self) {
        let high_water = (self.cfg.peer_credits / 2).max(1);
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for addr in dirty.drain(..) {
            loop {
                // (Borrowing only `peers`, so the buffer pool stays usable below.)
                let p = peer_in(&mut self.peers, self.cfg.peer_credits, addr);
                if p.queue.is_empty() {
                    break;
                }
                if p.credits == 0 {
                    self.stats.credit_stalls += 1;
                    break;
                }
                let (tag, mut b, chained) = p.queue.pop_front().unwrap();
                MsgRepr::set_credits(&mut b, p.owed);
                let pool = &mut self.pool;
                let keep = (tag == 0).then(|| {
                    let mut k = pool.pop().unwrap_or_default();
                    k.extend_from_slice(&b);
                    k
                });
                p.returning.push_back((std::mem::take(&mut p.owed), keep));
                p.credits -= 1;
                let op = if chained {
                    Op::SmsgTx { dst: addr, data: b, at: wire::PUT_REQ_COOKIE_AT as u16, tx_tag: tag }
                } else {
                    Op::Smsg { dst: addr, data: b }
                };
                self.submit(Desc { tag, op });
            }
            // Credits owed go back in a NOOP when no message can carry them soon: nothing
            // queued, or queued messages stalled for want of credits (the peer may be stalled
            // the same way, waiting for exactly these; `kiblnd_need_noop`).
            let p = self.peer(addr);
            if (p.queue.is_empty() || p.credits == 0) && p.owed >= high_water {
                let owed = std::mem::take(&mut p.owed);
                p.returning.push_back((owed, None));
                let mut b = self.buf();
                MsgRepr { credits: owed, src_nid: self.nid, dst_nid: self.nid.net().nid(addr), body: Body::Noop }.emit(&mut b);
                self.stats.noops += 1;
                self.submit(Desc { tag: NOOP_TAG, op: Op::Smsg { dst: addr, data: b } });
            }
        }
        self.dirty = dirty;
        self.flush_backlog();
        self.dev.doorbell();
    }

    /// LNet is done with an SMSG from `peer` (or it never reached LNet): its credit is owed
    /// back (Lustre returns it when the rx is posted again).
    fn consumed(&mut self, peer: u32) {
        let p = self.peer(peer);
        p.owed = p.owed.saturating_add(1);
        self.dirty.push(peer);
    }

    fn nak(&mut self, peer: u32, tag: u64, status: i32) {
        self.queue(peer, 0, Body::Nak { tag, status });
    }

    /// Withdraws transmit `cookie` of transfer `tag` (`TxCancelled` echoes the tag).
    fn cancel(&mut self, tag: u64, cookie: u64) {
        self.submit(Desc { tag, op: Op::TxCancel { cookie } });
    }

    /// Fails a GET initiator: its SEND and REPLY events both carry `status`.
    fn fail_get(&mut self, lnet: &mut Lnet, msg: MsgId, status: i32) {
        let reply = lnet.create_reply_msg(msg, 0);
        finalize(lnet, msg, status);
        if let Ok((reply, _, _)) = reply {
            finalize(lnet, reply, status);
        }
    }

}

impl<D: DmaDevice + 'static> Lnd for DmaLnd<D> {
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn name(&self) -> &'static str {
        "dma"
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::to_value(self.stats).unwrap_or_default()
    }

    fn path_counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![("bad_msgs", s.bad_msgs), ("credit_stalls", s.credit_stalls), ("dev_errors", s.dev_errors), ("get_immediate", s.get_immediate), ("get_rdma", s.get_rdma), ("immediate", s.immediate), ("naks_received", s.naks_received), ("naks_sent", s.naks_sent), ("put_rdma", s.put_rdma)]
    }

    fn busy(&self) -> usize {
        DmaLnd::busy(self)
    }

    fn next_due_ms(&self) -> Option<u64> {
        let retry = self.bounced.iter().map(|b| b.0).min();
        retry.into_iter().chain(self.deadlines.front().map(|d| d.0)).min()
    }

    fn send(&mut self, lnet: &mut Lnet, m: LndSend) {
        if m.next_hop.net() != self.nid.net() {
            finalize(lnet, m.msg, errno::EHOSTUNREACH);
            return;
        }
        if self.dev_down {
            finalize(lnet, m.msg, errno::ENETDOWN);
            return;
        }
        let peer = m.next_hop.addr();
        let len = m.hdr.payload_length as usize;
        match m.get_sink {
            Some(sink) if m.hdr.msg_type() == MsgType::Get => {
                // Every GET to a direct peer is staged by the target (so a miss is NAKed).
                lnet.recycle_iov(sink);
                let tag = self.new_tx(lnet, Tx::GetReq { msg: m.msg, peer });
                self.queue(peer, tag, Body::GetReq { hdr: m.hdr, get_tag: tag });
            }
            _ if len <= self.cfg.max_immediate => {
                if self.gather(lnet, m.iov) != Some(len) {
                    lnet.finalize_hs(m.msg, errno::EIO, HealthStatus::LocalError);
                    return;
                }
                let tag = self.new_tx(lnet, Tx::Imm { msg: m.msg, peer });
                let hdr = m.hdr;
                self.queue_gathered(peer, tag, |payload| Body::Immediate { hdr, payload });
            }
            _ => {
                // Set up the transmit, then (chained, same doorbell) tell the receiver to pull.
                let tag = self.new_tx(lnet, Tx::PutWait { msg: m.msg, peer, cookie: 0 });
                let key = self.dev.key();
                self.submit(Desc { tag, op: Op::TxSetup { key, frags: m.iov, peer } });
                self.stats.put_rdma += 1;
                self.queue_chained(peer, tag, m.hdr);
            }
        }
        self.pump();
        self.return_segs(lnet);
    }

    fn recv(&mut self, lnet: &mut Lnet, m: LndRecv) {
        let Some(rx) = self.rxs.remove(m.private) else {
            // Dropped with a lost device: the message fails rather than waiting forever.
            warn!(private = m.private, "recv for unknown rx");
            if let Some(msg) = m.msg {
                finalize(lnet, msg, errno::ENETDOWN);
            }
            return;
        };
        let (Rx::Imm { peer, .. } | Rx::PutReq { peer, .. } | Rx::GetReq { peer, .. }) = rx;
        self.consumed(peer);
        match rx {
            Rx::Imm { payload, .. } => {
                if let Some(msg) = m.msg {
                    let n = (m.mlen as usize).min(payload.len());
                    match iov_write(self.dev.mem(), &m.iov, &payload[..n]) {
                        Ok(_) => lnet.finalize(msg, 0),
                        Err(_) => lnet.finalize_hs(msg, errno::EIO, HealthStatus::LocalError),
                    }
                }
                lnet.recycle_iov(m.iov);
                self.give_back(payload);
            }
            Rx::PutReq { peer, src_tag, cookie } => match m.msg {
                Some(msg) if m.mlen > 0 => {
                    let tag = self.new_tx(lnet, Tx::PutPull { msg, peer, src_tag });
                    let key = self.dev.key();
                    self.submit(Desc { tag, op: Op::Pull { src: peer, cookie, tx_off: 0, key, frags: m.iov } });
                }
                Some(msg) => {
                    // Matched with nothing to take: done without a pull.
                    finalize(lnet, msg, 0);
                    self.nak(peer, src_tag, 0);
                }
                None => self.nak(peer, src_tag, errno::ENODATA),
            },
            Rx::GetReq { peer, get_tag } => match m.msg {
                Some(msg) if m.rdma_req && iov_len(&m.iov) as usize <= self.cfg.max_immediate => {
                    // A small reply goes inline: nothing to stage, nothing for the initiator
                    // to pull (`kiblnd` sends small replies as immediate messages too).
                    if self.gather(lnet, m.iov).is_none() {
                        lnet.finalize_hs(msg, errno::EIO, HealthStatus::LocalError);
                        self.nak(peer, get_tag, errno::EIO);
                    } else {
                        // Sent as a control message (as TX_READY is): a full mailbox sends it
                        // again. The bytes are in the message, so the MD is free now.
                        self.stats.get_immediate += 1;
                        self.queue_gathered(peer, 0, |payload| Body::GetDone { get_tag, payload });
                        finalize(lnet, msg, 0);
                    }
                }
                Some(msg) if m.rdma_req => {
                    let tag = self.new_tx(lnet, Tx::ReplySetup { msg, peer, get_tag });
                    let key = self.dev.key();
                    self.submit(Desc { tag, op: Op::TxSetup { key, frags: m.iov, peer } });
                }
                Some(msg) => {
                    finalize(lnet, msg, errno::EPROTO);
                    self.nak(peer, get_tag, errno::EPROTO);
                }
                None => self.nak(peer, get_tag, errno::ENODATA),
            },
        }
        self.pump();
        self.return_segs(lnet);
    }

    fn poll(&mut self, lnet: &mut Lnet) -> bool {
        self.flush_backlog();
        let now = lnet.now_ms();
        let retried = self.bounced.iter().any(|b| b.0 <= now);
        if retried {
            let dirty = &mut self.dirty;
            self.bounced.retain(|&(at, peer)| at > now || {
                dirty.push(peer);
                false
            });
        }
        let mut comps = std::mem::take(&mut self.comps);
        let mut bytes = std::mem::take(&mut self.comp_bytes);
        comps.clear();
        bytes.clear();
        self.dev.poll(&mut |c, d| {
            let start = bytes.len();
            bytes.extend_from_slice(d);
            comps.push((*c, start, bytes.len()));
        });
        let n = comps.len();
        for &(c, s, e) in &comps {
            self.on_completion(lnet, c, &bytes[s..e]);
        }
        // Failing a transfer may submit to the device (cancel, fence): that is progress too.
        let expired = self.deadlines.front().is_some_and(|d| d.0 <= lnet.now_ms());
        if expired {
            self.expire(lnet);
        }
        self.return_segs(lnet);
        self.comps = comps;
        self.comp_bytes = bytes;
        if n > 0 || !self.dirty.is_empty() {
            self.pump();
        }
        n > 0 || expired || retried
    }
}
