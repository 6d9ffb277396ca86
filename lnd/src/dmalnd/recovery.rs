//! What the DMA LND does when things go wrong: transfers past their deadline, a peer that left
//! the fabric, the device itself going away and coming back.

use super::{DmaLnd, Tx};
use crate::dev::DmaDevice;
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
            // A reply still being staged stays under its tag (the device answers the setup).
            if let Some(t) = self.txs.get_mut(tag) {
                if let Tx::ReplySetup { msg, .. } = *t {
                    *t = Tx::Orphan { msg };
                    continue;
                }
            }
            if let Some(tx) = self.txs.remove(tag) {
                self.fail_tx(lnet, tx, errno::ECONNRESET, true);
            }
        }
        let pc = self.cfg.peer_credits;
        let p = self.peer(peer);
        p.credits = pc;
        p.owed = 0;
        // SMSGs still completing went to the old incarnation: their credits are void.
        for r in p.returning.iter_mut() {
            *r = (0, None);
        }
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

    /// Fails the transfers whose deadline has passed. The emulated device copies before it
    /// completes, so a pull past its deadline has either moved its data or never will.
    pub(super) fn expire(&mut self, lnet: &mut Lnet) {
        let now = lnet.now_ms();
        while self.deadlines.front().is_some_and(|d| d.0 <= now) {
            let (_, tag) = self.deadlines.pop_front().unwrap();
            let Some(tx) = self.txs.remove(tag) else { continue };
            warn!(tag, "transfer timed out: {tx:?}");
            self.stats.timeouts += 1;
            self.fail_tx(lnet, tx, errno::ETIMEDOUT, true);
        }
    }

    /// Fails a transfer taken out of `txs` with `st`: its LNet messages are finalized and, while
    /// the device is there (`device`), its transmit is cancelled and the peer we were pulling
    /// from is told (NAK).
    fn fail_tx(&mut self, lnet: &mut Lnet, tx: Tx, st: i32, device: bool) {
        match tx {
            Tx::PutWait { msg, cookie, .. } | Tx::ReplyWait { msg, cookie, .. } => {
                if device && cookie != 0 {
                    self.cancel(cookie);
                }
                lnet.finalize(msg, st);
            }
            Tx::Imm { msg } | Tx::ReplySetup { msg, .. } | Tx::Orphan { msg } => lnet.finalize(msg, st),
            Tx::PutPull { msg, peer, src_tag } => {
                lnet.finalize(msg, st);
                if device {
                    self.nak(peer, src_tag, st);
                }
            }
            Tx::GetReq { msg, .. } => self.fail_get(lnet, msg, st),
            Tx::GetPull { get, reply, peer, target_tag } => {
                lnet.finalize(get, st);
                lnet.finalize(reply, st);
                if device {
                    self.nak(peer, target_tag, st);
                }
            }
        }
    }

    /// The device went away (its process died): no completion will come for anything handed
    /// to it, so every transfer in flight fails now, receives in progress are dropped and flow
    /// control forgets every peer. Sends fail until [`DmaLnd::set_device`] brings a device back.
    pub fn device_lost(&mut self, lnet: &mut Lnet) {
        warn!("DMA device lost: failing {} transfers in flight", self.txs.len());
        self.stats.device_losses += 1;
        self.dev_down = true;
        for tx in self.txs.drain_where(|_| true) {
            self.fail_tx(lnet, tx, errno::ENETDOWN, false);
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
