//! Forwarding for other nets: a message for a remote net takes a router buffer, goes on through
//! the next hop, and is resent through another gateway when one fails (the core's half of routing).

use super::router::{Blocked, Buf, Fwd, Router, RouterPools, RxPeer};
use super::{errno, Action, Dir, Lnet, LndRecv, LndSend, Msg, MsgId, NiIdx, Parsed};
use crate::mem::Seg;
use crate::wire::{HdrRepr, Nid, ProcessId};
use tracing::{debug, info};

impl Lnet {
    /// Turns on forwarding for other nodes, with these buffers.
    pub fn enable_routing(&mut self, pools: RouterPools) {
        self.router = Some(Router::new(pools));
    }

    pub fn is_router(&self) -> bool {
        self.router.is_some()
    }

    /// A message for another node arrived on `ni` from `from`: it takes one of that peer's
    /// router credits and a router buffer (`lnet_post_routed_recv_locked`), is received into
    /// the buffer, then sent on with the same header. Short of either it waits, in order, and
    /// its LND keeps the rx (so the peer's own credits stay with us).
    pub(super) fn forward(&mut self, ni: NiIdx, hdr: HdrRepr, from: Nid, private: u64) -> Parsed {
        if self.route(hdr.dest_nid).is_err() {
            return self.drop_msg(&hdr, from, errno::EHOSTUNREACH, "no route to forward");
        }
        let ni_peer_credits = self.nis[ni].cfg.peer_credits;
        let router = self.router.as_mut().expect("routing enabled");
        let limit = router.peer_limit(ni_peer_credits);
        let peer = router.peers.entry((ni, from)).or_default();
        let b = Blocked { ni, hdr, private, from };
        if !peer.waiting.is_empty() || peer.used >= limit {
            debug!(peer = %from, dest = %b.hdr.dest_nid, "peer out of router credits; message waits");
            self.counters.credit_stalls += 1;
            peer.waiting.push_back(b);
            return Parsed::Recv(None);
        }
        peer.used += 1;
        self.post_routed(b)
    }

    /// The buffer half of [`Lnet::forward`]: the message holds its peer's router credit.
    fn post_routed(&mut self, b: Blocked) -> Parsed {
        let router = self.router.as_mut().expect("routing enabled");
        let pool = router.pool(b.hdr.payload_length);
        // Behind earlier messages for the same pool, in order.
        let buf = if router.blocked[pool].is_empty() { router.alloc(b.hdr.payload_length) } else { None };
        match buf {
            Some(buf) => Parsed::Recv(Some(self.start_forward(b, buf))),
            None => {
                debug!(dest = %b.hdr.dest_nid, len = b.hdr.payload_length, "router buffers exhausted; message waits");
                self.counters.credit_stalls += 1;
                router.blocked[pool].push_back(b);
                Parsed::Recv(None)
            }
        }
    }

    fn start_forward(&mut self, b: Blocked, buf: Buf) -> MsgId {
        let Blocked { ni, hdr, private, from } = b;
        let len = hdr.payload_length;
        let iov = match buf {
            Buf::Tiny => Vec::new(),
            Buf::Small(s) | Buf::Large(s) => vec![Seg { off: s.off, len }],
        };
        self.counters.route_count += 1;
        self.counters.route_length += len as u64;
        let fwd = Fwd { buf, hdr, peer: (ni, from) };
        let id = MsgId(self.msgs.insert(Msg { dir: Dir::Recv, md: None, ev: None, ack: None, credit: None, pending: None, fwd: Some(fwd), resend: None, retry: None }));
        self.actions.push_back(Action::Recv(LndRecv { msg: Some(id), ni, private, rdma_req: false, iov, mlen: len as u64, rlen: len as u64 }));
        id
    }

    /// A peer's router credit comes back: its first waiter takes it (`lnet_return_rx_credits_locked`).
    fn return_peer_credit(&mut self, key: RxPeer) {
        let router = self.router.as_mut().expect("routing enabled");
        let Some(peer) = router.peers.get_mut(&key) else { return };
        match peer.waiting.pop_front() {
            Some(b) => {
                self.post_routed(b);
            }
            None => {
                peer.used = peer.used.saturating_sub(1);
                if peer.used == 0 {
                    router.peers.remove(&key);
                }
            }
        }
    }

    /// A forwarded message finished a leg: received (send it on) or sent (free its buffer).
    pub(super) fn forward_done(&mut self, dir: Dir, fwd: Fwd, status: i32) {
        let hdr = fwd.hdr;
        // The `router_drop_get_reply` mutant: a GET's REPLY is received and never sent on.
        let drop_reply = matches!(hdr.body, crate::wire::HdrBody::Reply { .. }) && crate::mutant::active("router_drop_get_reply");
        if dir == Dir::Recv && status == 0 && !drop_reply {
            if let Ok((ni, hop)) = self.route(hdr.dest_nid) {
                let iov = match fwd.buf {
                    Buf::Tiny => Vec::new(),
                    Buf::Small(s) | Buf::Large(s) => vec![Seg { off: s.off, len: hdr.payload_length }],
                };
                let target = ProcessId::new(hdr.dest_nid, hdr.dest_pid);
                let id = self.launch(None, None, ni, hop, target, hdr, iov, None);
                self.msgs.get_mut(id.0).expect("just launched").fwd = Some(fwd);
                return;
            }
        }
        if status != 0 {
            info!(dest = %hdr.dest_nid, src = %hdr.src_nid, status = errno::name(status), "forwarding failed");
        }
        self.router.as_mut().expect("routing enabled").free(fwd.buf);
        for pool in 0..3 {
            loop {
                let router = self.router.as_mut().expect("routing enabled");
                let Some(len) = router.blocked[pool].front().map(|b| b.hdr.payload_length) else { break };
                let Some(buf) = router.alloc(len) else { break };
                let b = router.blocked[pool].pop_front().unwrap();
                self.start_forward(b, buf);
            }
        }
        self.return_peer_credit(fwd.peer);
    }

    /// A routed send failed at its gateway: mark the gateway down and, if another is up, send
    /// the message again through it (once). Returns the message if it stays finalized.
    pub(super) fn try_resend(&mut self, mut msg: Msg, status: i32) -> Option<Msg> {
        if !matches!(status, errno::EHOSTUNREACH | errno::ECONNRESET) {
            return Some(msg);
        }
        let Some(send) = msg.resend.take() else { return Some(msg) };
        self.gw_down.insert(send.next_hop);
        let Ok((ni, hop)) = self.route(send.target.nid) else { return Some(msg) };
        if hop == send.next_hop {
            return Some(msg);
        }
        info!(dest = %send.target.nid, failed = %send.next_hop, via = %hop, "gateway failed; resending through another");
        self.counters.resends += 1;
        let id = MsgId(self.msgs.insert(msg));
        let m = self.msgs.get_mut(id.0).unwrap();
        m.pending = Some(LndSend { msg: id, ni, next_hop: hop, ..send });
        self.post_send(id);
        None
    }
}
