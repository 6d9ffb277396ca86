//! The device engine: regions, transmits and mailboxes of every node on one fabric, and the
//! rules that make the fabric asymmetric. Sans-IO: completions go to per-node [`Port`]s.

use super::device::{CompKind, Completion, DevStatus, Desc, Op, MAX_FRAGS, SMSG_MAX};
use super::capture::{FabricCapture, FabricEvent, EV_PULL, EV_SMSG, EV_TX_SETUP};
use crate::mem::{Mem, Seg};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::injector::Injector;
pub use super::injector::{EngineStats, FaultConfig};

/// Where the engine posts a node's completions and short messages.
pub trait Port: Send {
    fn complete(&mut self, c: Completion);
    /// Places an SMSG in the node's mailbox and posts its `SmsgRecv`; `Err` when full.
    fn deliver(&mut self, from: u32, data: &[u8]) -> Result<(), DevStatus>;
    /// Retries completions held back because the node's queue was full.
    fn flush(&mut self) {}
    /// Whether peers may write short messages straight into this node's mailbox (only while
    /// the engine has nothing to see or change on them: no faults, capture or cuts).
    fn set_direct(&mut self, _on: bool) {}
    /// Node `addr` is gone for good: whatever it held of this node's (a mailbox lock) is let go.
    fn peer_gone(&mut self, _addr: u32) {}
}

struct Region {
    owner: u32,
    mem: Arc<Mem>,
}

pub(super) struct Tx {
    owner: u32,
    /// The only node that may pull it.
    peer: u32,
    key: u32,
    pub(super) frags: Vec<Seg>,
    len: u64,
    pub(super) tag: u64,
}

/// What the fault injector does to a pull whose bytes moved.
pub(super) enum PullFault {
    None,
    /// Damage one byte, placed by this draw (modulo the bytes it falls among).
    Corrupt(u64),
    /// Fail it at both ends.
    Fail,
}

/// Remembered consumed cookies, so a second pull says "consumed" rather than "unknown".
const CONSUMED_MEMORY: usize = 4096;

pub struct Engine {
    pub(super) ports: HashMap<u32, Box<dyn Port>>,
    regions: HashMap<u32, Region>,
    txs: HashMap<u64, Tx>,
    /// (owner, setup tag) -> cookie, for chained SMSGs.
    by_tag: HashMap<(u32, u64), u64>,
    consumed: VecDeque<u64>,
    consumed_set: HashSet<u64>,
    next_key: u32,
    next_tx: u64,
    secret: u64,
    pub stats: EngineStats,
    /// Fault injection (seeded generators), when configured.
    pub(super) faults: Option<Injector>,
    /// Pairs of addresses the fabric cannot connect (a partition), both orders stored.
    cut: HashSet<(u32, u32)>,
    /// Where the fabric's events are recorded (`--capture`), when asked.
    capture: Option<FabricCapture>,
    /// Short messages may bypass the engine (see [`Port::set_direct`]), unless turned off.
    direct: bool,
    /// Fabric links to the devices of other hosts, and the nodes reached through them.
    pub(super) links: super::remote::Links,
}

/// Attach errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("fabric address {0} is already in use")]
    AddrInUse(u32),
    /// The device is not running (killed and not yet started again).
    #[error("the device is down")]
    DeviceDown,
}

impl Engine {
    /// `secret` keys transmit cookies so they cannot be guessed from others.
    pub fn new(secret: u64) -> Engine {
        Engine {
            ports: HashMap::new(),
            regions: HashMap::new(),
            txs: HashMap::new(),
            by_tag: HashMap::new(),
            consumed: VecDeque::new(),
            consumed_set: HashSet::new(),
            capture: None,
            next_key: 1,
            next_tx: 1,
            secret,
            stats: EngineStats::default(),
            faults: None,
            cut: HashSet::new(),
            direct: true,
            links: Default::default(),
        }
    }

    /// Whether short messages may go straight from node to node now.
    pub fn direct_allowed(&self) -> bool {
        self.direct && self.faults.is_none() && self.capture.is_none() && self.cut.is_empty()
    }

    /// Turns the direct path off (or back on, where nothing else forbids it): every short
    /// message then passes through the engine, as a baseline or for debugging.
    pub fn set_direct(&mut self, on: bool) {
        self.direct = on;
        self.tell_direct();
    }

    fn tell_direct(&mut self) {
        let on = self.direct_allowed();
        for p in self.ports.values_mut() {
            p.set_direct(on);
        }
    }

    /// The device restarted: every attachment, region, transmit and mailbox is gone (nobody is
    /// told: each node finds out its device went). Counters, fault injection, partitions and
    /// the key and cookie sequences carry on, so nothing from before is mistaken for new.
    pub fn reset(&mut self) {
        self.ports.clear();
        self.regions.clear();
        self.txs.clear();
        self.by_tag.clear();
    }

    /// Cuts (`on`) or heals the fabric between `a` and `b`, both ways: short messages across
    /// the cut fail at the sender as if nobody were at that address, pulls fail at the puller
    /// (the transmitter hears nothing; its transmit stays set up until cancelled).
    pub fn set_cut(&mut self, a: u32, b: u32, on: bool) {
        for p in [(a, b), (b, a)] {
            if on {
                self.cut.insert(p);
            } else {
                self.cut.remove(&p);
            }
        }
        self.tell_direct();
    }

    pub fn is_cut(&self, a: u32, b: u32) -> bool {
        !self.cut.is_empty() && self.cut.contains(&(a, b))
    }

    pub fn attach(&mut self, addr: u32, mut port: Box<dyn Port>) -> Result<(), AttachError> {
        if self.ports.contains_key(&addr) {
            return Err(AttachError::AddrInUse(addr));
        }
        port.set_direct(self.direct_allowed());
        self.ports.insert(addr, port);
        self.announce(addr, true);
        Ok(())
    }

    /// Forgets a node: its regions and transmits vanish; later pulls of them fail. Every other
    /// node is told (`PeerDown`), after whatever the departed node sent it before.
    pub fn detach(&mut self, addr: u32) {
        if self.ports.remove(&addr).is_none() {
            return;
        }
        self.regions.retain(|_, r| r.owner != addr);
        self.txs.retain(|_, t| t.owner != addr);
        self.by_tag.retain(|k, _| k.0 != addr);
        self.announce(addr, false);
        self.peer_down(addr);
    }

    /// Tells every local node that `addr` is gone (`PeerDown`).
    pub(super) fn peer_down(&mut self, addr: u32) {
        for p in self.ports.values_mut() {
            p.peer_gone(addr);
            p.complete(Completion { kind: CompKind::PeerDown, status: DevStatus::Ok, tag: 0, cookie: 0, len: 0, peer: addr });
        }
    }

    pub fn is_attached(&self, addr: u32) -> bool {
        self.ports.contains_key(&addr)
    }

    pub fn register(&mut self, owner: u32, mem: Arc<Mem>) -> u32 {
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1).max(1);
        self.regions.insert(key, Region { owner, mem });
        key
    }

    /// Unregisters `key` if `owner` owns it; its transmits are dropped.
    pub fn unregister(&mut self, owner: u32, key: u32) -> Result<(), DevStatus> {
        match self.regions.get(&key) {
            Some(r) if r.owner == owner => {
                self.regions.remove(&key);
                self.txs.retain(|_, t| t.key != key);
                let txs = &self.txs;
                self.by_tag.retain(|_, c| txs.contains_key(c));
                Ok(())
            }
            _ => Err(DevStatus::BadKey),
        }
    }

    pub fn port_mut(&mut self, addr: u32) -> Option<&mut Box<dyn Port>> {
        self.ports.get_mut(&addr)
    }

    fn region(&self, owner: u32, key: u32) -> Result<&Region, DevStatus> {
        match self.regions.get(&key) {
            Some(r) if r.owner == owner => Ok(r),
            _ => Err(DevStatus::BadKey),
        }
    }

    fn check_frags(mem: &Mem, frags: &[Seg]) -> Result<u64, DevStatus> {
        if frags.len() > MAX_FRAGS {
            return Err(DevStatus::TooLong);
        }
        let mut total = 0u64;
        for f in frags {
            mem.check(f.off, f.len as u64).map_err(|_| DevStatus::OutOfBounds)?;
            total += f.len as u64;
        }
        Ok(total)
    }

    pub(super) fn post(&mut self, addr: u32, c: Completion) {
        if !c.status.is_ok() {
            self.stats.errors += 1;
        }
        if let Some(p) = self.ports.get_mut(&addr) {
            p.complete(c);
        }
    }

    /// Executes one descriptor submitted by node `from`. A pull is returned as a job whose copy
    /// the caller runs (outside any lock) before [`Engine::finish_pull`]; see [`Engine::submit_now`].
    #[must_use]
    pub fn submit(&mut self, from: u32, d: Desc) -> Option<PullJob> {
        let comp = |kind, status, cookie, len, peer| Completion { kind, status, tag: d.tag, cookie, len, peer };
        match d.op {
            Op::SmsgTx { dst, mut data, at, tx_tag } => {
                let at = at as usize;
                let status = match self.by_tag.get(&(from, tx_tag)) {
                    None => DevStatus::NoSuchTx,
                    Some(_) if at + 8 > data.len() => DevStatus::BadDesc,
                    Some(&cookie) => {
                        data[at..at + 8].copy_from_slice(&cookie.to_le_bytes());
                        DevStatus::Ok
                    }
                };
                if status.is_ok() {
                    return self.submit(from, Desc { tag: d.tag, op: Op::Smsg { dst, data } });
                }
                self.post(from, comp(CompKind::SmsgSent, status, 0, data.len() as u32, dst));
            }
            Op::Smsg { dst, data } => {
                let status = if data.len() > SMSG_MAX {
                    DevStatus::TooLong
                } else if self.is_cut(from, dst) {
                    DevStatus::NoSuchPeer
                } else {
                    // A node on another host: its device answers (SMSG_DONE) over the link.
                    let host = if self.ports.contains_key(&dst) { None } else { self.links.host_of(dst) };
                    let full = (host.is_some() || self.ports.contains_key(&dst)) && self.faults.as_mut().is_some_and(|f| f.mailbox.fire().is_some());
                    if full {
                        self.stats.mailbox_full += 1;
                        tracing::info!(from, dst, "fault: dma_mailbox SMSG refused (mailbox full)");
                    }
                    match (host, self.ports.get_mut(&dst)) {
                        _ if full => DevStatus::MailboxFull,
                        (Some(host), _) => {
                            self.capture(EV_SMSG, DevStatus::Ok, from, dst, data.len() as u32, 0, &data);
                            self.forward_smsg(host, from, d.tag, dst, &data);
                            return None;
                        }
                        (None, None) => DevStatus::NoSuchPeer,
                        (None, Some(p)) => match p.deliver(from, &data) {
                            Ok(()) => DevStatus::Ok,
                            Err(e) => e,
                        },
                    }
                };
                if status.is_ok() {
                    self.stats.smsgs += 1;
                }
                self.capture(EV_SMSG, status, from, dst, data.len() as u32, 0, &data);
                self.post(from, comp(CompKind::SmsgSent, status, 0, data.len() as u32, dst));
            }
            Op::TxSetup { key, frags, peer } => {
                let mut res = self
                    .region(from, key)
                    .and_then(|r| Self::check_frags(&r.mem, &frags));
                if res.is_ok() && self.faults.as_mut().is_some_and(|f| f.txfail.fire().is_some()) {
                    self.stats.txfails += 1;
                    tracing::info!(from, tag = d.tag, "fault: dma_txfail transmit setup refused");
                    res = Err(DevStatus::Fault);
                }
                match res {
                    Ok(len) => {
                        let cookie = self.new_cookie();
                        self.capture(EV_TX_SETUP, DevStatus::Ok, from, peer, len as u32, cookie, &[]);
                        self.txs.insert(cookie, Tx { owner: from, peer, key, frags, len, tag: d.tag });
                        self.by_tag.insert((from, d.tag), cookie);
                        self.post(from, comp(CompKind::TxReady, DevStatus::Ok, cookie, len as u32, from));
                    }
                    Err(e) => {
                        self.capture(EV_TX_SETUP, e, from, peer, 0, 0, &[]);
                        self.post(from, comp(CompKind::TxReady, e, 0, 0, from));
                    }
                }
            }
            Op::TxCancel { cookie } => {
                let status = match self.txs.get(&cookie) {
                    Some(t) if t.owner == from => {
                        let t = self.txs.remove(&cookie).unwrap();
                        self.by_tag.remove(&(from, t.tag));
                        DevStatus::Ok
                    }
                    _ => DevStatus::NoSuchTx,
                };
                self.post(from, comp(CompKind::TxCancelled, status, cookie, 0, from));
            }
            Op::Pull { src, cookie, .. } if self.is_cut(from, src) => {
                self.capture(EV_PULL, DevStatus::NoSuchPeer, from, src, 0, cookie, &[]);
                self.post(from, comp(CompKind::PullDone, DevStatus::NoSuchPeer, cookie, 0, src));
            }
            Op::Pull { src, cookie, tx_off, key, frags } if self.is_remote(src) => {
                // The transmit's owner is on another host: its device checks and streams it.
                let sink = self.region(from, key).and_then(|r| Ok((r.mem.clone(), Self::check_frags(&r.mem, &frags)?)));
                match sink {
                    Ok((mem, want)) => {
                        self.capture(EV_PULL, DevStatus::Ok, from, src, want as u32, cookie, &[]);
                        self.ask_pull(from, src, cookie, tx_off, d.tag, mem, frags, want);
                    }
                    Err(e) => {
                        self.capture(EV_PULL, e, from, src, 0, cookie, &[]);
                        self.post(from, comp(CompKind::PullDone, e, cookie, 0, src));
                    }
                }
            }
            Op::Pull { src, cookie, tx_off, key, frags } => match self.begin_pull(from, src, cookie, tx_off, key, frags, d.tag) {
                Ok(job) => {
                    self.capture(EV_PULL, DevStatus::Ok, from, src, job.len as u32, cookie, &[]);
                    return Some(job);
                }
                Err(e) => {
                    self.capture(EV_PULL, e, from, src, 0, cookie, &[]);
                    self.post(from, comp(CompKind::PullDone, e, cookie, 0, src));
                }
            },
            // A node's descriptors execute in order, each pull's copy included (the providers
            // finish a pull before taking the next descriptor): reaching this one is the fence.
            Op::Fence => self.post(from, comp(CompKind::Fenced, DevStatus::Ok, 0, 0, from)),
        }
        None
    }

    /// Records from now on every SMSG, transmit setup and pull in `c` (`--capture`).
    pub fn set_capture(&mut self, c: FabricCapture) {
        self.capture = Some(c);
        self.tell_direct();
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn capture(&mut self, event: u8, status: DevStatus, src: u32, dst: u32, nob: u32, cookie: u64, data: &[u8]) {
        if let Some(c) = &mut self.capture {
            c.record(&FabricEvent { event, status: status as u8, src, dst, nob, cookie, data });
        }
    }

    /// A fresh transmit cookie: a keyed hash of a counter (SipHash with the secret as key
    /// material), so cookies seen on the fabric tell nothing about others.
    fn new_cookie(&mut self) -> u64 {
        use std::hash::Hasher;
        loop {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write_u64(self.secret);
            h.write_u64(self.next_tx);
            self.next_tx += 1;
            let cookie = h.finish();
            if cookie != 0 && !self.txs.contains_key(&cookie) && !self.consumed_set.contains(&cookie) {
                return cookie;
            }
        }
    }

    /// Executes one descriptor completely (the copy included).
    pub fn submit_now(&mut self, from: u32, d: Desc) {
        if let Some(job) = self.submit(from, d) {
            let ok = job.copy();
            self.finish_pull(job, ok);
        }
    }

    /// Validates a pull and claims its transmit (so nobody else can pull it); the copy itself
    /// runs outside the engine ([`PullJob::copy`]), then [`Engine::finish_pull`] signals both ends.
    #[allow(clippy::too_many_arguments)]
    fn begin_pull(&mut self, from: u32, src: u32, cookie: u64, tx_off: u64, key: u32, frags: Vec<Seg>, tag: u64) -> Result<PullJob, DevStatus> {
        let sink = self.region(from, key)?;
        let want = Self::check_frags(&sink.mem, &frags)?;
        let sink_mem = sink.mem.clone();
        let (src_mem, tx) = self.claim(from, src, cookie, tx_off, want)?;
        Ok(PullJob { from, src, cookie, tag, tx_tag: tx.tag, tx_off, len: want, src_mem, src_frags: tx.frags, sink_mem, sink_frags: frags })
    }

    /// Checks that `puller` may pull `want` bytes at `tx_off` of `owner`'s transmit `cookie`
    /// (its key, its bounds, not yet consumed) and claims it, so nobody can pull it again.
    pub(super) fn claim(&mut self, puller: u32, owner: u32, cookie: u64, tx_off: u64, want: u64) -> Result<(Arc<Mem>, Tx), DevStatus> {
        let tx = match self.txs.get(&cookie) {
            Some(t) if t.owner == owner && t.peer == puller => t,
            Some(_) => return Err(DevStatus::NoSuchTx),
            None if self.consumed_set.contains(&cookie) => return Err(DevStatus::TxConsumed),
            None => return Err(DevStatus::NoSuchTx),
        };
        match tx_off.checked_add(want) {
            Some(end) if end <= tx.len => {}
            _ => return Err(DevStatus::OutOfBounds),
        }
        let src_mem = self.regions.get(&tx.key).ok_or(DevStatus::NoSuchTx)?.mem.clone();
        let tx = self.txs.remove(&cookie).expect("checked above");
        self.by_tag.remove(&(owner, tx.tag));
        self.consumed.push_back(cookie);
        self.consumed_set.insert(cookie);
        if self.consumed.len() > CONSUMED_MEMORY {
            if let Some(old) = self.consumed.pop_front() {
                self.consumed_set.remove(&old);
            }
        }
        Ok((src_mem, tx))
    }

    /// Fault injection: flip a byte in one of every `rate` pulled transfers (0 turns it off).
    pub fn set_corrupt_rate(&mut self, rate: u32, seed: u64) {
        self.set_faults(FaultConfig { corrupt: rate, ..Default::default() }, seed);
    }

    /// Injects `cfg`'s faults from now on, from generators seeded with `seed`.
    pub fn set_faults(&mut self, cfg: FaultConfig, seed: u64) {
        self.faults = (cfg != FaultConfig::default()).then(|| Injector::new(cfg, seed));
        self.tell_direct();
    }

    /// How late to complete this pull (a fault), if at all: the device's copier sleeps first.
    pub fn pull_delay(&mut self, job: &PullJob) -> Option<std::time::Duration> {
        self.late(job.from, job.src)
    }

    /// `dma_late`: how long the fault injector holds back a pull by `puller` of `owner`'s
    /// transmit, if it does.
    pub(super) fn late(&mut self, puller: u32, owner: u32) -> Option<std::time::Duration> {
        let f = self.faults.as_mut()?;
        f.late.fire()?;
        self.stats.late += 1;
        tracing::info!(from = puller, src = owner, late_ms = f.late_ms, "fault: dma_late completion held back");
        Some(std::time::Duration::from_millis(f.late_ms))
    }

    /// `dma_corrupt`, else `dma_pullfail` (drawn in that order), for a pull of `len` bytes by
    /// `puller` of `owner`'s transmit whose bytes moved: counted and logged here.
    pub(super) fn pull_fault(&mut self, puller: u32, owner: u32, len: u64) -> PullFault {
        let Some(f) = self.faults.as_mut().filter(|_| len > 0) else { return PullFault::None };
        if let Some(x) = f.corrupt.fire() {
            self.stats.corrupted += 1;
            tracing::info!(from = puller, src = owner, "fault: dma_corrupt pulled data damaged");
            return PullFault::Corrupt(x >> 32);
        }
        if f.pullfail.fire().is_some() {
            self.stats.pullfails += 1;
            tracing::info!(from = puller, src = owner, "fault: dma_pullfail pull failed");
            return PullFault::Fail;
        }
        PullFault::None
    }

    /// Posts the completions of a pull whose copy is done (`ok`) or failed.
    pub fn finish_pull(&mut self, job: PullJob, ok: bool) {
        let mut status = if ok { DevStatus::Ok } else { DevStatus::OutOfBounds };
        if ok {
            match self.pull_fault(job.from, job.src, job.len) {
                // A byte of the sink damaged (its first non-empty fragment's, as ever).
                PullFault::Corrupt(x) => {
                    if let Some(fr) = job.sink_frags.iter().find(|f| f.len > 0) {
                        let at = fr.off + x % fr.len as u64;
                        let mut b = [0u8; 1];
                        if job.sink_mem.read(at, &mut b).is_ok() {
                            let _ = job.sink_mem.write(at, &[b[0] ^ 0x40]);
                        }
                    }
                }
                PullFault::Fail => status = DevStatus::Fault,
                PullFault::None => {}
            }
        }
        let ok = status.is_ok();
        let len = if ok { job.len as u32 } else { 0 };
        let lost = ok && self.pulled(job.from, job.src, job.len);
        // Both ends learn of the transfer: the hardware signals receiver and transmitter alike
        // (unless the fault injector lost the receiver's completion).
        if !lost {
            self.post(job.from, Completion { kind: CompKind::PullDone, status, tag: job.tag, cookie: job.cookie, len, peer: job.src });
        }
        self.post(job.src, Completion { kind: CompKind::TxDone, status, tag: job.tx_tag, cookie: job.cookie, len, peer: job.from });
    }

    /// Counts a pull of `len` bytes by `puller` from `owner` that went well; returns whether
    /// the fault injector loses the puller's completion of it (`dma_lost`).
    pub(super) fn pulled(&mut self, puller: u32, owner: u32, len: u64) -> bool {
        self.stats.pulls += 1;
        self.stats.bytes_pulled += len;
        let lost = self.faults.as_mut().is_some_and(|f| f.lost.fire().is_some());
        if lost {
            self.stats.lost += 1;
            tracing::info!(from = puller, src = owner, "fault: dma_lost pull completion lost");
        }
        lost
    }

    /// Transmits currently set up (for leak checks).
    pub fn live_txs(&self) -> usize {
        self.txs.len()
    }
}

/// A validated pull: the transmit is claimed, the memory pinned; only the copy is left.
pub struct PullJob {
    from: u32,
    src: u32,
    cookie: u64,
    tag: u64,
    tx_tag: u64,
    tx_off: u64,
    len: u64,
    src_mem: Arc<Mem>,
    src_frags: Vec<Seg>,
    sink_mem: Arc<Mem>,
    sink_frags: Vec<Seg>,
}

impl PullJob {
    /// The one memcpy (scatter-gather); false if a range went out of bounds.
    pub fn copy(&self) -> bool {
        copy_frags(&self.src_mem, &self.src_frags, self.tx_off, &self.sink_mem, &self.sink_frags).is_ok()
    }
}

/// Scatter-gather copy from `src` fragments (starting `src_off` bytes in) into `dst` fragments:
/// every byte is copied exactly once.
fn copy_frags(src: &Mem, sfr: &[Seg], mut src_off: u64, dst: &Mem, dfr: &[Seg]) -> Result<(), crate::mem::OutOfBounds> {
    let mut si = 0usize;
    while si < sfr.len() && src_off >= sfr[si].len as u64 {
        src_off -= sfr[si].len as u64;
        si += 1;
    }
    let mut s_pos = src_off;
    for d in dfr {
        let mut d_pos = 0u64;
        while d_pos < d.len as u64 {
            let s = sfr.get(si).ok_or(crate::mem::OutOfBounds { off: 0, len: 0, size: 0 })?;
            let n = (s.len as u64 - s_pos).min(d.len as u64 - d_pos);
            dst.copy_from(d.off + d_pos, src, s.off + s_pos, n)?;
            d_pos += n;
            s_pos += n;
            if s_pos == s.len as u64 {
                si += 1;
                s_pos = 0;
            }
        }
    }
    Ok(())
}
