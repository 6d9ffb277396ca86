//! The engine's side of fabric links (`dev::link`): nodes on other hosts are addresses reached
//! through a link. Their SMSGs are forwarded and answered; their transmits are pulled by asking
//! the owner's device, which checks and streams them exactly as it serves a local pull.
//! Sans-IO: frames leave through each link's [`LinkPort`], in order.

use super::capture::EV_SMSG;
use super::device::{CompKind, Completion, DevStatus};
use super::engine::{Engine, PullFault};
use super::link::{pull_data_head, LinkFrame, CHUNK};
use super::remote::{Asked, Forwarded, LinkOut, LinkPort, PullReq, Served};
use crate::mem::{iov_slice, iov_write, Mem, Seg};
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    /// Links to other hosts' devices that are up (HELLOs exchanged).
    pub fn links_up(&self) -> usize {
        self.links.greeted.len()
    }

    /// Is `addr` a node on another host (reached over a link)?
    pub fn is_remote(&self, addr: u32) -> bool {
        !self.ports.contains_key(&addr) && self.links.host_of(addr).is_some()
    }

    /// A link to `host`'s device is up: it gets our HELLO (this host `me`, our nodes), then
    /// hears of every node attaching or leaving here.
    pub fn link_up(&mut self, me: u32, host: u32, port: Box<dyn LinkPort>) {
        let mut addrs: Vec<u32> = self.ports.keys().copied().collect();
        addrs.sort_unstable();
        self.links.ports.insert(host, port);
        self.links.send(host, &LinkFrame::Hello { host: me, addrs });
    }

    /// `host`'s HELLO: the nodes it serves are reachable from now on.
    pub fn link_hello(&mut self, host: u32, addrs: &[u32]) {
        self.links.greeted.insert(host);
        for &a in addrs {
            self.remote_up(host, a);
        }
    }

    fn remote_up(&mut self, host: u32, addr: u32) {
        if self.ports.contains_key(&addr) {
            tracing::warn!(addr, host, "host announces a fabric address attached here; ignored");
            return;
        }
        self.links.remote.insert(addr, host);
    }

    fn remote_down(&mut self, addr: u32) {
        if self.links.remote.remove(&addr).is_some() {
            self.peer_down(addr);
        }
    }

    /// Tells every link a node attached here (`up`) or left.
    pub(super) fn announce(&mut self, addr: u32, up: bool) {
        let f = if up { LinkFrame::AddrUp { addr } } else { LinkFrame::AddrDown { addr } };
        let hosts: Vec<u32> = self.links.ports.keys().copied().collect();
        for h in hosts {
            self.links.send(h, &f);
        }
    }

    /// The link to `host` is gone: what was crossing it fails (`LinkDown`) and its nodes are
    /// reported gone (`PeerDown`); a link that comes back announces them again.
    pub fn link_down(&mut self, host: u32) {
        self.links.ports.remove(&host);
        if self.links.greeted.remove(&host) {
            self.stats.link_downs += 1;
            tracing::warn!(host, "fabric link down");
        }
        let smsgs: Vec<u64> = self.links.smsgs.iter().filter(|(_, f)| f.host == host).map(|(&k, _)| k).collect();
        for k in smsgs {
            let f = self.links.smsgs.remove(&k).expect("listed");
            self.post(f.from, Completion { kind: CompKind::SmsgSent, status: DevStatus::LinkDown, tag: f.tag, cookie: 0, len: f.len, peer: f.dst });
        }
        let pulls: Vec<u64> = self.links.pulls.iter().filter(|(_, p)| p.host == host).map(|(&k, _)| k).collect();
        for k in pulls {
            let p = self.links.pulls.remove(&k).expect("listed");
            self.post(p.puller, Completion { kind: CompKind::PullDone, status: DevStatus::LinkDown, tag: p.tag, cookie: p.cookie, len: 0, peer: p.owner });
        }
        let gone: Vec<u32> = self.links.remote.iter().filter(|(_, &h)| h == host).map(|(&a, _)| a).collect();
        for a in gone {
            self.remote_down(a);
        }
    }

    pub(super) fn forward_smsg(&mut self, host: u32, from: u32, tag: u64, dst: u32, data: &[u8]) {
        let seq = self.links.seq();
        self.links.smsgs.insert(seq, Forwarded { host, from, dst, tag, len: data.len() as u32 });
        self.stats.link_smsgs += 1;
        self.links.send(host, &LinkFrame::Smsg { seq, src: from, dst, data });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn ask_pull(&mut self, puller: u32, owner: u32, cookie: u64, tx_off: u64, tag: u64, sink: Arc<Mem>, frags: Vec<Seg>, want: u64) {
        let host = self.links.host_of(owner).expect("checked by the caller");
        let id = self.links.seq();
        self.links.pulls.insert(id, Asked { host, puller, owner, cookie, tag, sink, frags, want, got: 0 });
        self.links.send(host, &LinkFrame::Pull { id, puller, owner, cookie, tx_off, len: want });
    }

    /// One frame from `host` (HELLO and CREDIT belong to the link itself). A PULL whose
    /// completion the fault injector delays comes back to be served later ([`Engine::serve_pull`]).
    pub fn link_frame(&mut self, host: u32, f: LinkFrame<'_>) -> Option<(Duration, PullReq)> {
        match f {
            LinkFrame::Hello { addrs, .. } => self.link_hello(host, &addrs),
            LinkFrame::AddrUp { addr } => self.remote_up(host, addr),
            LinkFrame::AddrDown { addr } => {
                if self.links.host_of(addr) == Some(host) {
                    self.remote_down(addr);
                }
            }
            LinkFrame::Smsg { seq, src, dst, data } => {
                let status = if self.is_cut(src, dst) || self.links.host_of(src) != Some(host) {
                    DevStatus::NoSuchPeer
                } else {
                    match self.ports.get_mut(&dst) {
                        None => DevStatus::NoSuchPeer,
                        Some(p) => p.deliver(src, data).err().unwrap_or(DevStatus::Ok),
                    }
                };
                if status.is_ok() {
                    self.stats.smsgs += 1;
                }
                self.capture(EV_SMSG, status, src, dst, data.len() as u32, 0, data);
                self.links.send(host, &LinkFrame::SmsgDone { seq, status });
            }
            LinkFrame::SmsgDone { seq, status } => match self.links.smsgs.remove(&seq) {
                Some(f) if f.host == host => self.post(f.from, Completion { kind: CompKind::SmsgSent, status, tag: f.tag, cookie: 0, len: f.len, peer: f.dst }),
                Some(f) => {
                    self.links.smsgs.insert(seq, f);
                }
                None => {}
            },
            LinkFrame::Pull { id, puller, owner, cookie, tx_off, len } => return self.serve_pull(PullReq { host, id, puller, owner, cookie, tx_off, len }, true),
            LinkFrame::PullData { id, off, data } => {
                if let Some((mem, segs)) = self.pull_sink(host, id, off, data.len()) {
                    if iov_write(&mem, &segs, data).is_ok() {
                        self.pull_got(id, data.len());
                    }
                }
            }
            LinkFrame::PullEnd { id, status } => self.pull_end(host, id, status),
            LinkFrame::Credit { .. } => {}
        }
        None
    }

    /// Where `n` bytes at `off` of pull `id` go (the puller's memory), if that pull is
    /// waiting on `host` and they fit in it.
    pub fn pull_sink(&self, host: u32, id: u64, off: u64, n: usize) -> Option<(Arc<Mem>, Vec<Seg>)> {
        let p = self.links.pulls.get(&id).filter(|p| p.host == host)?;
        let end = off.checked_add(n as u64)?;
        (end <= p.want).then(|| (p.sink.clone(), iov_slice(&p.frags, off, n as u64)))
    }

    /// `n` more bytes of pull `id` have landed.
    pub fn pull_got(&mut self, id: u64, n: usize) {
        if let Some(p) = self.links.pulls.get_mut(&id) {
            p.got += n as u64;
        }
    }

    /// The owner's device says how pull `id` ended: the puller hears (unless the fault
    /// injector loses its completion, as for a local pull).
    pub fn pull_end(&mut self, host: u32, id: u64, mut status: DevStatus) {
        let Some(p) = self.links.pulls.remove(&id) else { return };
        if p.host != host {
            self.links.pulls.insert(id, p);
            return;
        }
        if status.is_ok() && p.got != p.want {
            tracing::warn!(id, got = p.got, want = p.want, "remote pull ended short");
            status = DevStatus::OutOfBounds;
        }
        let ok = status.is_ok();
        if ok {
            self.stats.link_pulls += 1;
            self.stats.link_bytes += p.want;
            if self.pulled(p.puller, p.owner, p.want) {
                return;
            }
        }
        self.post(p.puller, Completion { kind: CompKind::PullDone, status, tag: p.tag, cookie: p.cookie, len: if ok { p.want as u32 } else { 0 }, peer: p.owner });
    }

    /// Serves a remote pull of a local transmit: checked (key, bounds, consumed) and claimed as
    /// a local pull is, then its bytes queued on the link in chunks, from the owner's pages.
    /// `Some`: the fault injector holds it back this long; serve it then with `may_delay` off.
    pub fn serve_pull(&mut self, r: PullReq, may_delay: bool) -> Option<(Duration, PullReq)> {
        let claimed = if !self.ports.contains_key(&r.owner) || self.is_cut(r.puller, r.owner) || self.links.host_of(r.puller) != Some(r.host) {
            Err(DevStatus::NoSuchPeer)
        } else if let Some(d) = may_delay.then(|| self.late(r.puller, r.owner)).flatten() {
            return Some((d, r));
        } else {
            self.claim(r.puller, r.owner, r.cookie, r.tx_off, r.len)
        };
        let (mem, tx) = match claimed {
            Ok(c) => c,
            Err(status) => {
                self.links.send(r.host, &LinkFrame::PullEnd { id: r.id, status });
                return None;
            }
        };
        let served = Served { host: r.host, id: r.id, owner: r.owner, puller: r.puller, cookie: r.cookie, tx_tag: tx.tag, len: r.len };
        let corrupt = match self.pull_fault(r.puller, r.owner, r.len) {
            PullFault::Corrupt(x) => Some(x % r.len),
            PullFault::Fail => {
                self.finish_served(served, DevStatus::Fault);
                return None;
            }
            PullFault::None => None,
        };
        let Some(port) = self.links.ports.get_mut(&r.host) else {
            self.finish_served(served, DevStatus::LinkDown);
            return None;
        };
        let mut off = 0u64;
        while off < r.len {
            let n = (r.len - off).min(CHUNK as u64);
            let segs = iov_slice(&tx.frags, r.tx_off + off, n);
            let hit = corrupt.filter(|c| (off..off + n).contains(c)).map(|c| c - off);
            port.send(LinkOut::Data { head: pull_data_head(r.id, off, n as usize), mem: mem.clone(), segs, corrupt: hit });
            off += n;
        }
        port.send(LinkOut::Served(served));
        None
    }

    /// A served pull's bytes are all sent (`Ok`), or will never be: the owner's transmit is
    /// done (`TxDone`) and the puller's device hears how it ended (PULL_END).
    pub fn finish_served(&mut self, s: Served, status: DevStatus) {
        let ok = status.is_ok();
        self.post(s.owner, Completion { kind: CompKind::TxDone, status, tag: s.tx_tag, cookie: s.cookie, len: if ok { s.len as u32 } else { 0 }, peer: s.puller });
        self.links.send(s.host, &LinkFrame::PullEnd { id: s.id, status });
    }
}
