//! What the DMA LND does with what the device reports: completions of its descriptors, and
//! each SMSG that arrives, dispatched as control (TX_READY, NAK, NOOP) or LND message.

use super::wire::{self, Body, MsgRepr};
use super::{dev_errno, finalize, DmaLnd, Rx, Tx, BOUNCE_RETRY_MS, NOOP_TAG};
use crate::dev::{CompKind, Completion, Desc, DevStatus, DmaDevice, Op};
use crate::lnet::{errno, Lnet, Parsed};
use crate::mem::iov_write;
use crate::wire::{HdrRepr, MsgType, Nid};
use tracing::{debug, warn};

impl<D: DmaDevice> DmaLnd<D> {
    pub(super) fn on_completion(&mut self, lnet: &mut Lnet, c: Completion, data: &[u8]) {
        if !c.status.is_ok() {
            self.stats.dev_errors += 1;
            debug!(kind = ?c.kind, status = ?c.status, tag = c.tag, "device error completion");
        }
        let st = dev_errno(c.status);
        match c.kind {
            CompKind::SmsgRecv => self.on_smsg(lnet, c.peer, data),
            CompKind::SmsgSent => {
                let p = self.peer(c.peer);
                let (returned, kept) = p.returning.pop_front().unwrap_or_default();
                let stale = p.void > 0;
                p.void = p.void.saturating_sub(1);
                if !c.status.is_ok() && !stale {
                    // It never reached the mailbox: the credits it returned are still owed,
                    // and (unless a NOOP, which costs none) its own credit comes back.
                    if !crate::mutant::active("dmalnd_bounce_leaks_credits") {
                        p.owed = p.owed.saturating_add(returned);
                    }
                    if c.tag != NOOP_TAG {
                        p.credits += 1;
                    }
                    match (kept, c.status) {
                        (Some(b), DevStatus::MailboxFull) => {
                            // A full mailbox is passing: the control message goes again, first.
                            p.queue.push_front((0, b, false));
                            self.stats.smsg_retries += 1;
                        }
                        (Some(b), _) => self.give_back(b),
                        (None, _) => {}
                    }
                    // Not again in this step: a peer across a cut bounces every try.
                    let at = lnet.now_ms() + BOUNCE_RETRY_MS;
                    if !self.bounced.iter().any(|b| b.1 == c.peer) {
                        self.bounced.push((at, c.peer));
                    }
                } else if let Some(b) = kept {
                    self.give_back(b);
                }
                if c.tag == 0 || c.tag == NOOP_TAG {
                    return;
                }
                match self.txs.get(c.tag) {
                    Some(&Tx::Imm { msg, .. }) => {
                        self.txs.remove(c.tag);
                        finalize(lnet, msg, st);
                    }
                    Some(Tx::PutWait { .. } | Tx::ReplyWait { .. } | Tx::GetReq { .. }) if st != 0 => self.fail_tx(lnet, c.tag, st, false),
                    _ => {}
                }
            }
            CompKind::PeerDown => self.on_peer_down(lnet, c.peer),
            CompKind::TxReady => {
                let tag = c.tag;
                if let Some(&Tx::Orphan { done, peer, st }) = self.txs.get(tag) {
                    if c.status.is_ok() {
                        self.cancel(tag, c.cookie);
                        *self.txs.get_mut(tag).expect("just seen") = Tx::Draining { done, peer, st };
                    } else {
                        self.txs.remove(tag);
                        self.finish(lnet, done, st);
                    }
                    return;
                }
                let Some(tx) = self.txs.get_mut(tag) else {
                    warn!(tag, "TxReady for an unknown tag");
                    return;
                };
                // The transmit keeps this tag: the device echoes it in TxDone.
                match *tx {
                    Tx::PutWait { ref mut cookie, .. } if c.status.is_ok() => *cookie = c.cookie,
                    Tx::ReplySetup { msg, peer, get_tag } if c.status.is_ok() => {
                        *tx = Tx::ReplyWait { msg, peer, cookie: c.cookie };
                        self.stats.get_rdma += 1;
                        self.queue(peer, 0, Body::TxReady { get_tag, cookie: c.cookie, target_tag: tag, nob: c.len });
                    }
                    Tx::PutWait { msg, .. } => {
                        // Its chained PUT_REQ will find no transmit and fail harmlessly.
                        self.txs.remove(tag);
                        finalize(lnet, msg, st);
                    }
                    Tx::ReplySetup { msg, peer, get_tag } => {
                        self.txs.remove(tag);
                        finalize(lnet, msg, st);
                        self.nak(peer, get_tag, st);
                    }
                    _ => warn!(tag, "TxReady for a tag not setting up a transmit"),
                }
            }
            CompKind::TxDone => match self.txs.remove_if(c.tag, |t| matches!(t, Tx::PutWait { .. } | Tx::ReplyWait { .. } | Tx::Draining { .. })) {
                // A failed pull fails the transmit too (the puller also NAKs; whichever comes
                // first finalizes).
                Some(Tx::PutWait { msg, .. }) | Some(Tx::ReplyWait { msg, .. }) => finalize(lnet, msg, st),
                Some(Tx::Draining { done, st, .. }) => self.finish(lnet, done, st),
                _ => debug!(tag = c.tag, "TxDone for a tag not waiting for one"),
            },
            CompKind::PullDone => match self.txs.remove_if(c.tag, |t| matches!(t, Tx::PutPull { .. } | Tx::GetPull { .. } | Tx::Draining { .. })) {
                Some(Tx::Draining { done, st, .. }) => self.finish(lnet, done, st),
                Some(Tx::PutPull { msg, peer, src_tag }) => {
                    finalize(lnet, msg, st);
                    if st != 0 {
                        self.nak(peer, src_tag, st);
                    }
                }
                Some(Tx::GetPull { get, reply, peer, target_tag }) => {
                    finalize(lnet, get, st);
                    finalize(lnet, reply, st);
                    if st != 0 {
                        self.nak(peer, target_tag, st);
                    }
                }
                _ => warn!(tag = c.tag, "PullDone for a tag not pulling"),
            },
            // The device let go of a failed transfer's buffers. A cancel that lost the race to a
            // pull (NoSuchTx) waits for that pull's TxDone instead.
            CompKind::TxCancelled | CompKind::Fenced if c.status.is_ok() => {
                if let Some(Tx::Draining { done, st, .. }) = self.txs.remove_if(c.tag, |t| matches!(t, Tx::Draining { .. })) {
                    self.finish(lnet, done, st);
                }
            }
            CompKind::TxCancelled | CompKind::Fenced => debug!(tag = c.tag, status = ?c.status, "cancel found no transmit (being pulled?)"),
        }
    }

    fn on_smsg(&mut self, lnet: &mut Lnet, from: u32, data: &[u8]) {
        let credits_max = self.cfg.peer_credits;
        let m = MsgRepr::parse(data);
        // Everything but a NOOP took one of the sender's credits: owe it back now, except for
        // an LND message LNet takes: that credit is owed once LNet is done with its rx
        // ([`DmaLnd::consumed`]), so messages LNet parks hold their sender back.
        let lnd_msg = matches!(&m, Ok(r) if !wire::is_control(r.body.ty()));
        if !matches!(m, Ok(MsgRepr { body: Body::Noop, .. })) && !lnd_msg {
            self.consumed(from);
        }
        self.dirty.push(from);
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                self.stats.bad_msgs += 1;
                warn!(peer = from, "dropping malformed DMA LND message: {e}");
                return;
            }
        };
        let expect_src = self.nid.net().nid(from);
        if m.src_nid != expect_src || m.dst_nid != self.nid {
            self.stats.bad_msgs += 1;
            warn!(peer = from, src = %m.src_nid, dst = %m.dst_nid, "dropping message: NIDs do not match fabric addresses");
            if lnd_msg {
                self.consumed(from);
            }
            return;
        }
        {
            let p = self.peer(from);
            p.credits = p.credits.saturating_add(m.credits);
            if p.credits > credits_max {
                warn!(peer = from, credits = p.credits, "peer returned more credits than it was given");
                p.credits = credits_max;
            }
        }
        if wire::is_control(m.body.ty()) {
            self.on_control(lnet, from, m.body);
        } else {
            self.on_lnd_msg(lnet, from, m.src_nid, m.body);
        }
    }

    fn on_control(&mut self, lnet: &mut Lnet, from: u32, body: Body<'_>) {
        match body {
            Body::Noop => {}
            Body::TxReady { get_tag, cookie, target_tag, nob } => match self.txs.remove_if(get_tag, |t| matches!(t, Tx::GetReq { peer, .. } if *peer == from)) {
                Some(Tx::GetReq { msg, peer }) => match lnet.create_reply_msg(msg, nob as u64) {
                    Ok((reply, iov, _mlen)) => {
                        let tag = self.new_tx(lnet, Tx::GetPull { get: msg, reply, peer, target_tag });
                        let key = self.dev.key();
                        self.submit(Desc { tag, op: Op::Pull { src: peer, cookie, tx_off: 0, key, frags: iov } });
                    }
                    Err(e) => {
                        finalize(lnet, msg, e);
                        self.nak(from, target_tag, e);
                    }
                },
                other => {
                    self.stats.bad_msgs += 1;
                    warn!(peer = from, get_tag, "TX_READY for no GET of ours ({other:?})");
                    self.nak(from, target_tag, errno::EPROTO);
                }
            },
            Body::GetDone { get_tag, payload } => match self.txs.remove_if(get_tag, |t| matches!(t, Tx::GetReq { peer, .. } if *peer == from)) {
                Some(Tx::GetReq { msg, .. }) => match lnet.create_reply_msg(msg, payload.len() as u64) {
                    Ok((reply, iov, mlen)) => {
                        let n = (mlen as usize).min(payload.len());
                        let st = match iov_write(self.dev.mem(), &iov, &payload[..n]) {
                            Ok(_) => 0,
                            Err(_) => errno::EIO,
                        };
                        lnet.recycle_iov(iov);
                        finalize(lnet, msg, 0);
                        finalize(lnet, reply, st);
                    }
                    Err(e) => finalize(lnet, msg, e),
                },
                other => {
                    self.stats.bad_msgs += 1;
                    warn!(peer = from, get_tag, "GET_DONE for no GET of ours ({other:?})");
                }
            },
            Body::Nak { tag, status } => {
                self.stats.naks_received += 1;
                match self.txs.get(tag) {
                    // The transmit is withdrawn and the transfer drains (the NAK may race a pull).
                    Some(Tx::PutWait { peer, .. } | Tx::ReplyWait { peer, .. }) if *peer == from => self.fail_tx(lnet, tag, status.min(0), false),
                    Some(&Tx::GetReq { msg, peer }) if peer == from => {
                        self.txs.remove(tag);
                        self.fail_get(lnet, msg, if status < 0 { status } else { errno::ENODATA });
                    }
                    Some(Tx::Draining { peer, .. } | Tx::Orphan { peer, .. }) if *peer == from => debug!(peer = from, tag, "NAK for a transfer already failing"),
                    _ => {
                        self.stats.bad_msgs += 1;
                        debug!(peer = from, tag, "NAK for no transfer of ours with that peer; ignored");
                    }
                }
            }
            _ => unreachable!("control dispatch"),
        }
    }

    fn on_lnd_msg(&mut self, lnet: &mut Lnet, from: u32, from_nid: Nid, body: Body<'_>) {
        match body {
            Body::Immediate { hdr, payload } => {
                self.stats.immediate += 1;
                let mut copy = self.buf();
                copy.extend_from_slice(payload);
                let rx = self.rxs.insert(Rx::Imm { peer: from, payload: copy });
                match lnet.parse(self.ni, hdr, from_nid, rx, false) {
                    Ok(Parsed::Recv(_)) => {}
                    Ok(Parsed::Dropped(_)) => {
                        self.rxs.remove(rx);
                        self.consumed(from);
                    }
                    Err(e) => {
                        self.rxs.remove(rx);
                        self.consumed(from);
                        self.stats.bad_msgs += 1;
                        warn!(peer = from, "lnet_parse refused IMMEDIATE: {e}");
                    }
                }
            }
            Body::PutReq { hdr, src_tag, cookie, nob } => {
                let ok = nob == hdr.payload_length && matches!(hdr.msg_type(), MsgType::Put | MsgType::Reply);
                self.parse_request(lnet, from, from_nid, hdr, ok, src_tag, Rx::PutReq { peer: from, src_tag, cookie }, false);
            }
            Body::GetReq { hdr, get_tag } => {
                let ok = hdr.msg_type() == MsgType::Get;
                self.parse_request(lnet, from, from_nid, hdr, ok, get_tag, Rx::GetReq { peer: from, get_tag }, true);
            }
            _ => unreachable!("LND dispatch"),
        }
    }

    /// Hands a PUT_REQ/GET_REQ to `lnet_parse`; anything refused or unmatched is NAKed with
    /// `nak_tag` so the initiator finalizes instead of waiting.
    #[allow(clippy::too_many_arguments)]
    fn parse_request(&mut self, lnet: &mut Lnet, from: u32, from_nid: Nid, hdr: HdrRepr, consistent: bool, nak_tag: u64, rx: Rx, rdma_req: bool) {
        if !consistent {
            self.stats.bad_msgs += 1;
            warn!(peer = from, "{rx:?} with an inconsistent LNet header ({:?}, {} bytes)", hdr.msg_type(), hdr.payload_length);
            self.consumed(from);
            self.nak(from, nak_tag, errno::EPROTO);
            return;
        }
        let rx = self.rxs.insert(rx);
        match lnet.parse(self.ni, hdr, from_nid, rx, rdma_req) {
            Ok(Parsed::Recv(_)) => {}
            Ok(Parsed::Dropped(st)) => {
                self.rxs.remove(rx);
                self.consumed(from);
                self.nak(from, nak_tag, st);
            }
            Err(e) => {
                self.rxs.remove(rx);
                self.consumed(from);
                warn!(peer = from, "lnet_parse refused a request: {e}");
                self.nak(from, nak_tag, errno::EPROTO);
            }
        }
    }
}
