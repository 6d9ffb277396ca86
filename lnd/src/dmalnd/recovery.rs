//! What the DMA LND does when things go wrong: transfers past their deadline, a peer that left
//! the fabric, the device itself going away and coming back.

use super::{finalize, DmaLnd, Done, Tx};
use crate::dev::{Desc, DmaDevice, Op};
use crate::lnet::{errno, Lnet};
use tracing::warn;

impl<D: DmaDevice> DmaLnd<D> {
    /// The node at `peer` left the fabric: every transfer waiting on it fails now (those the
    /// device will still complete are left to their completions), and flow control starts
    /// afresh for whatever attaches at that address next.
    pub(super) fn on_peer_down(&mut self, lnet: &mut Lnet, peer: u32) {
        warn!(peer, "peer left the fabric; failing the transfers that wait on it");
        self.stats.peers_down += 1;
        let waiting = self.txs.handles_where(|t| matches!(t, Tx::PutWait { peer: p, cookie, .. } | Tx::ReplyWait { peer: p, cookie, .. } if *p == peer && *cookie != 0) || matches!(t, Tx::GetReq { peer: p, .. } | Tx::ReplySetup { peer: p, .. } if *p == peer));
        for tag in waiting {
            self.fail_tx(lnet, tag, errno::ECONNRESET, false);
        }
        let pc = self.cfg.peer_credits;
        let p = self.peer(peer);
        p.credits = pc;
        p.owed = 0;
        // SMSGs still completing went to the old incarnation: their credits are void, and
        // their failures give none back.
        for r in p.returning.iter_mut() {
            *r = (0, None);
        }
        p.void = p.returning.len();
        self.dirty.push(peer);
    }

    /// Starts tracking a transfer: it gets a tag and a deadline.
    pub(super) fn new_tx(&mut self, lnet: &Lnet, tx: Tx) -> u64 {
        let tag = self.txs.insert(tx);
        if self.cfg.tx_timeout_ms > 0 {
            self.deadlines.push_back((lnet.now_ms() + self.cfg.tx_timeout_ms, tag));
            // Finished transfers leave their entries behind: drop them now and then.
            if self.deadlines.len() > 2 * self.txs.len() + 1024 {
                let txs = &self.txs;
                self.deadlines.retain(|d| txs.get(d.1).is_some());
            }
        }
        tag
    }

    /// Fails the transfers whose deadline has passed (those already failing wait for the
    /// device as they are).
    pub(super) fn expire(&mut self, lnet: &mut Lnet) {
        let now = lnet.now_ms();
        while self.deadlines.front().is_some_and(|d| d.0 <= now) {
            let (_, tag) = self.deadlines.pop_front().unwrap();
            match self.txs.get(tag) {
                None | Some(Tx::Draining { .. } | Tx::Orphan { .. }) => continue,
                Some(tx) => warn!(tag, "transfer timed out: {tx:?}"),
            }
            self.stats.timeouts += 1;
            self.fail_tx(lnet, tag, errno::ETIMEDOUT, true);
        }
    }

    /// Finalizes what a transfer was for with `st`.
    pub(super) fn finish(&mut self, lnet: &mut Lnet, done: Done, st: i32) {
        match done {
            Done::One(msg) => finalize(lnet, msg, st),
            Done::Two(get, reply) => {
                finalize(lnet, get, st);
                finalize(lnet, reply, st);
            }
        }
    }

    /// Takes the SMSG of transfer `tag` off `peer`'s queue if it has not left yet.
    fn unqueue(&mut self, peer: u32, tag: u64) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else { return false };
        let Some(i) = p.queue.iter().position(|q| q.0 == tag) else { return false };
        let (_, b, _) = p.queue.remove(i).expect("found");
        self.give_back(b);
        true
    }

    /// Fails transfer `tag` with `st`. An SMSG of it not yet sent never leaves (its sender is
    /// told it failed: it must not arrive later). Buffers the device may still touch are
    /// released first: its transmit is cancelled, a pull is fenced, and it drains
    /// ([`Tx::Draining`]). `tell_peer`: NAK the peer we were pulling from or staging for.
    pub(super) fn fail_tx(&mut self, lnet: &mut Lnet, tag: u64, st: i32, tell_peer: bool) {
        let Some(&tx) = self.txs.get(tag) else { return };
        let next = match tx {
            Tx::Imm { msg, peer } => {
                if !self.unqueue(peer, tag) {
                    // Already with the device: its completion says whether it was delivered.
                    return;
                }
                self.txs.remove(tag);
                finalize(lnet, msg, st);
                return;
            }
            Tx::GetReq { msg, peer } => {
                self.unqueue(peer, tag);
                self.txs.remove(tag);
                self.fail_get(lnet, msg, st);
                return;
            }
            Tx::PutWait { msg, peer, cookie } | Tx::ReplyWait { msg, peer, cookie } => {
                self.unqueue(peer, tag);
                if cookie == 0 {
                    Tx::Orphan { done: Done::One(msg), peer, st }
                } else {
                    self.cancel(tag, cookie);
                    Tx::Draining { done: Done::One(msg), peer, st }
                }
            }
            Tx::ReplySetup { msg, peer, get_tag } => {
                if tell_peer {
                    self.nak(peer, get_tag, st);
                }
                Tx::Orphan { done: Done::One(msg), peer, st }
            }
            Tx::PutPull { msg, peer, src_tag } => {
                if tell_peer {
                    self.nak(peer, src_tag, st);
                }
                self.fence(tag);
                Tx::Draining { done: Done::One(msg), peer, st }
            }
            Tx::GetPull { get, reply, peer, target_tag } => {
                if tell_peer {
                    self.nak(peer, target_tag, st);
                }
                self.fence(tag);
                Tx::Draining { done: Done::Two(get, reply), peer, st }
            }
            Tx::Orphan { .. } | Tx::Draining { .. } => return,
        };
        *self.txs.get_mut(tag).expect("seen above") = next;
        self.pump();
    }

    /// Asks the device to confirm (`Fenced` with `tag`) that what we submitted so far is done.
    fn fence(&mut self, tag: u64) {
        self.submit(Desc { tag, op: Op::Fence });
    }

    /// The device went away (its process died): no completion will come for anything handed
    /// to it, so every transfer in flight fails now, receives in progress are dropped and flow
    /// control forgets every peer. Sends fail until [`DmaLnd::set_device`] brings a device back.
    pub fn device_lost(&mut self, lnet: &mut Lnet) {
        warn!("DMA device lost: failing {} transfers in flight", self.txs.len());
        self.stats.device_losses += 1;
        self.dev_down = true;
        for tx in self.txs.drain_where(|_| true) {
            let done = match tx {
                Tx::Imm { msg, .. } | Tx::PutWait { msg, .. } | Tx::ReplyWait { msg, .. } | Tx::ReplySetup { msg, .. } | Tx::PutPull { msg, .. } => Done::One(msg),
                Tx::GetReq { msg, .. } => {
                    self.fail_get(lnet, msg, errno::ENETDOWN);
                    continue;
                }
                Tx::GetPull { get, reply, .. } => Done::Two(get, reply),
                Tx::Orphan { done, .. } | Tx::Draining { done, .. } => done,
            };
            self.finish(lnet, done, errno::ENETDOWN);
        }
        // Receives LNet still holds (lazy or delayed) find no rx and are refused when it
        // gets to them; their senders' transfers failed with the device too.
        self.rxs.drain_where(|_| true);
        self.backlog.clear();
        self.peers.clear();
        self.dirty.clear();
        self.deadlines.clear();
    }

    /// A device again (the device process restarted and we attached afresh, same memory).
    pub fn set_device(&mut self, dev: D) {
        self.dev = dev;
        self.backlog.clear();
        self.dev_down = false;
        tracing::info!(key = self.dev.key(), "DMA device back");
    }

    /// Is the device gone (lost and not yet replaced)?
    pub fn device_down(&self) -> bool {
        self.dev_down
    }
}
