//! Sending RPCs as ptlrpc does: the node's xids, `pb_last_xid` (every xid below has its reply),
//! the connection count, a reply MD and a bulk MD posted before the request, new bulk match bits
//! for every resend (`ptlrpc_set_mbits`, OBD_CONNECT_BULK_MBITS) so a late transfer of an
//! earlier attempt cannot land in the resend's buffer, and every MD of an attempt unlinked when
//! the attempt ends, used or not (`ptlrpc_unregister_bulk`).

use super::state::{Again, Bulk, Op, Parked, Rpc};
use super::Osc;
use crate::lnet::{opt, Event, EventKind, Insert};
use crate::node::Node;
use crate::ptlrpc::wire::*;
use crate::ptlrpc::at::wire_secs;
use crate::ptlrpc::{alloc, free, pattern_fill, spec, tag_of, user_ptr, TAG_OSC};
use crate::wire::ProcessId;
use std::time::Duration;
use tracing::{debug, warn};

impl Osc {
    /// RPCs whose reply is overdue: as `ptlrpc_expire_one_request`, the timeout fails the
    /// import, which connects again (a higher connection count: the server drops what is left
    /// of the old connection and aborts its bulk transfers); the RPC is then resent.
    pub(super) fn resend_late(&mut self, node: &mut Node) {
        if crate::mutant::active("osc_no_timeout") {
            return;
        }
        let now = (self.clock)();
        let mut late: Vec<u64> = self.rpcs.iter().filter(|(_, r)| now > r.deadline).map(|(id, _)| *id).collect();
        late.sort_unstable(); // a fixed order keeps simulated runs replayable
        for id in late {
            let rpc = self.rpcs.remove(&id).unwrap();
            match rpc.op {
                // A CONNECT is never resent: each attempt is a new one, with a new count.
                Op::Connect { .. } => self.again(node, rpc, "timed out", false),
                Op::Disconnect { .. } => self.again(node, rpc, "timed out", true),
                // Replays and the replay-done ping wait while the target recovers (other
                // clients may be replaying first): sent again, same xid, until answered.
                _ if rpc.replay.is_some() || matches!(rpc.op, Op::ReplayDone { .. }) => {
                    let rpc = self.release(node, rpc);
                    let again = Again { xid: Some(rpc.xid), tries: rpc.tries, replay: rpc.replay };
                    if let Err(e) = self.start(node, rpc.op, Some(again)) {
                        self.fail(format!("{:?}: replayed again: {e}", rpc.op));
                    }
                }
                // A ping is never resent: its timeout fails the import (`ptlrpc_ping`).
                Op::Ping { t } => {
                    self.release(node, rpc);
                    self.fail_import(node, t, "a ping timed out");
                }
                _ => {
                    let Some(rpc) = self.end_attempt(node, rpc, "timed out") else { continue };
                    self.fail_import(node, rpc.t, "a request timed out");
                    self.parked.push(Parked { t: rpc.t, op: rpc.op, tries: rpc.tries, xid: Some(rpc.xid), not_before: None });
                }
            }
        }
    }

    /// Connects to target `t` again unless that is under way (`ptlrpc_fail_import`).
    pub(super) fn fail_import(&mut self, node: &mut Node, t: usize, why: &str) {
        if self.imports[t].reconnecting {
            return;
        }
        debug!(job = %self.job.name, ost = self.job.targets[t].0, "{why}: reconnecting");
        self.imports[t].reconnecting = true;
        self.report.reconnects += 1;
        if let Err(e) = self.start(node, Op::Connect { t }, None) {
            self.imports[t].reconnecting = false;
            self.fail(format!("reconnect: {e}"));
        }
    }

    /// Sends the parked RPCs whose reconnect is over or whose wait has passed.
    pub(super) fn send_parked(&mut self, node: &mut Node) {
        let now = (self.clock)();
        // A CONNECT refused while the target recovers is itself part of the reconnect.
        let (mut ready, wait): (Vec<Parked>, Vec<Parked>) = self.parked.iter().partition(|p| (matches!(p.op, Op::Connect { .. }) || !self.imports[p.t].reconnecting) && p.not_before.is_none_or(|t| now >= t));
        self.parked = wait;
        // Resends in xid order, as `ptlrpc_resend`: each one's `pb_last_xid` must stay below
        // the xids of those not resent yet.
        ready.sort_by_key(|p| p.xid.unwrap_or(u64::MAX));
        for p in ready {
            self.report.resends += 1;

            if let Err(e) = self.start(node, p.op, Some(Again { xid: p.xid, tries: p.tries + 1, replay: None })) {
                self.fail(format!("{:?}: sent again: {e}", p.op));
            }
        }
    }

    /// Sends `rpc` again: with its xid and MSG_RESENT (`resend`), or as a new request (a bulk
    /// redo after a checksum error, as `osc_brw_redo_request`) — or gives up after max_tries.
    pub(super) fn again(&mut self, node: &mut Node, rpc: Rpc, why: &str, resend: bool) {
        let Some(rpc) = self.end_attempt(node, rpc, why) else { return };
        self.report.resends += 1;
        let again = Again { xid: resend.then_some(rpc.xid), tries: rpc.tries + 1, replay: None };
        if let Err(e) = self.start(node, rpc.op, Some(again)) {
            self.fail(format!("{:?}: sent again: {e}", rpc.op));
        }
    }

    /// Sends `rpc` as a new request once `delay` has passed (after -ENOMEM or -EAGAIN).
    pub(super) fn again_later(&mut self, node: &mut Node, rpc: Rpc, why: &str, delay: Duration) {
        let Some(rpc) = self.end_attempt(node, rpc, why) else { return };
        let not_before = Some((self.clock)() + delay);
        self.parked.push(Parked { t: rpc.t, op: rpc.op, tries: rpc.tries, xid: None, not_before });
    }

    /// Ends an attempt (unlinking its MDs); `None` if the RPC has had all its tries (then it
    /// counts as failed because of `why`).
    pub(super) fn end_attempt(&mut self, node: &mut Node, rpc: Rpc, why: &str) -> Option<Rpc> {
        let rpc = self.release(node, rpc);
        if rpc.tries < self.job.max_tries.max(1) {
            return Some(rpc);
        }
        if let Op::Connect { t } = rpc.op {
            self.imports[t].reconnecting = false; // parked RPCs go again and fail on their own
        }
        self.fail(format!("{:?} xid {}: {why}; gave up after {} tries", rpc.op, rpc.xid, rpc.tries));
        None
    }

    /// Unlinks the attempt's reply and bulk MDs whether or not they were used; their buffers go
    /// back to the arena once LNet lets go of them.
    pub(super) fn release(&mut self, node: &mut Node, mut rpc: Rpc) -> Rpc {
        let _ = node.lnet.md_unlink(rpc.reply_md);
        if let Some(b) = rpc.bulk.take() {
            if !b.gone && node.lnet.md_unlink(b.md).is_ok() {
                self.bufs.insert(b.md, b.seg); // freed by its UNLINK event
            } else {
                free(node, b.seg);
            }
        }
        rpc
    }

    /// The server does not know our export (it restarted and lost it): park the RPC, connect
    /// again (once per target), and resend it when connected — Lustre's reconnect.
    pub(super) fn reconnect(&mut self, node: &mut Node, rpc: Rpc) {
        if rpc.replay.is_some() || matches!(rpc.op, Op::ReplayDone { .. }) {
            // The target restarted again while we replayed: recovery starts over.
            let (t, current) = (rpc.t, rpc.handle == self.imports[rpc.t].handle);
            self.release(node, rpc);
            if current {
                self.imports[t].reconnecting = false;
                self.imports[t].recovering = false;
                self.fail_import(node, t, "the target restarted during replay");
            }
            return;
        }
        // A DISCONNECT too: a restarted server still has us among the clients its recovery
        // waits for, so we connect again (and recover) and then say goodbye.
        if let Op::Ping { t } = rpc.op {
            // The server evicted us or restarted: connect again; the ping itself is not resent.
            let current = rpc.handle == self.imports[t].handle;
            self.release(node, rpc);
            if current {
                warn!(job = %self.job.name, ost = self.job.targets[t].0, "ping: the server does not know our export (evicted?)");
                self.fail_import(node, t, "ping refused");
            }
            return;
        }
        let Some(rpc) = self.end_attempt(node, rpc, "not connected") else { return };
        let t = rpc.t;
        // Sent before a reconnect that is now over: it just goes again with the new handle.
        if rpc.handle == self.imports[t].handle && !self.imports[t].reconnecting {
            warn!(job = %self.job.name, ost = self.job.targets[t].0, "server lost our export (restarted?)");
        }
        if rpc.handle == self.imports[t].handle {
            self.fail_import(node, t, "not connected");
        }
        self.parked.push(Parked { t, op: rpc.op, tries: rpc.tries, xid: Some(rpc.xid), not_before: None });
    }

    /// `pb_last_xid` (`ptlrpc_known_replied_xid`): every request to target `t` below this one's
    /// xid has its reply — none in flight or waiting to be resent is below it.
    fn known_replied(&self, t: usize, xid: u64) -> u64 {
        let waiting = self.parked.iter().filter(|p| p.t == t).filter_map(|p| p.xid);
        self.rpcs.values().filter(|r| r.t == t).map(|r| r.xid).chain(waiting).fold(xid, u64::min) - 1
    }

    /// The target an op goes to, when known before it is built.
    pub(super) fn target_of(&self, op: Op) -> Option<usize> {
        match op {
            Op::Connect { t } | Op::Disconnect { t } | Op::Ping { t } | Op::ReplayDone { t } => Some(t),
            Op::Create { file, stripe } => Some(super::stripe_target(file, stripe, self.job.stripe_count, self.job.targets.len())),
            Op::Write { file, chunk } | Op::Read { file, chunk } => self.object(file, self.chunk(chunk).0).ok().map(|x| x.0),
            Op::Sync { file, stripe } | Op::Getattr { file, stripe, .. } | Op::Punch { file, stripe, .. } | Op::Fallocate { file, stripe, .. } | Op::Destroy { file, stripe } => self.object(file, stripe).ok().map(|x| x.0),
        }
    }

    fn uuid(&mut self, node: &mut Node) -> String {
        let name = &self.job.name;
        self.uuid.get_or_insert_with(|| format!("{:.24}-{:012x}", name, (node.xids.next_xid() >> 7) & 0xffff_ffff_ffff)).clone()
    }

    /// The request's target, opcode, portal, buffers and bulk (write?, data, length).
    #[allow(clippy::type_complexity)]
    fn request_of(&mut self, node: &mut Node, op: Op) -> Result<(usize, u32, u32, Vec<Vec<u8>>, Option<(bool, Vec<u8>, u32)>), String> {
        let obdo_of = |oid: u64, t: usize, osc: &Osc| Obdo { valid: valid::FLID | valid::FLGROUP, oid, seq: osc.job.targets[t].0 as u64, ..Default::default() };
        Ok(match op {
            Op::Connect { t } => {
                let mut u = format!("lustre-OST{:04x}_UUID", self.job.targets[t].0).into_bytes();
                u.resize(40, 0);
                let mut c = self.uuid(node).into_bytes();
                c.resize(40, 0);
                let flags = connect::INDEX | connect::VERSION | connect::BRW_SIZE | connect::FULL20 | connect::MAXBYTES | connect::BULK_MBITS | if self.job.checksum { connect::CKSUM } else { 0 };
                let ocd = ConnectData { flags, version: 0x020f_0000, index: self.job.targets[t].0, brw_size: crate::wire::LNET_MTU, cksum_types: OBD_CKSUM_CRC32C, ..Default::default() };
                let h = self.imports[t].handle.to_le_bytes().to_vec();
                (t, opc::OST_CONNECT, portal::OST_REQUEST, vec![u, c, h, ocd.emit()], None)
            }
            Op::Disconnect { t } => (t, opc::OST_DISCONNECT, portal::OST_REQUEST, vec![], None),
            Op::Ping { t } | Op::ReplayDone { t } => (t, opc::OBD_PING, portal::OST_REQUEST, vec![], None),
            Op::Create { .. } => {
                let t = self.target_of(op).expect("a create's target is its stripe's");
                (t, opc::OST_CREATE, portal::OST_CREATE, vec![Obdo { valid: valid::FLGROUP, seq: self.job.targets[t].0 as u64, ..Default::default() }.emit()], None)
            }
            Op::Write { file, chunk } | Op::Read { file, chunk } => {
                let (stripe, obj_off, len) = self.chunk(chunk);
                let (t, oid) = self.object(file, stripe)?;
                let write = matches!(op, Op::Write { .. });
                let mut body = obdo_of(oid, t, self);
                let mut data = Vec::new();
                if write {
                    data = vec![0u8; len as usize];
                    pattern_fill(self.job.seed, file, chunk * self.job.stripe_size as u64, &mut data);
                }
                if self.job.checksum && self.imports[t].cksum {
                    body.valid |= valid::FLCKSUM | valid::FLFLAGS;
                    body.flags = OBD_FL_CKSUM_CRC32C;
                    if write {
                        body.cksum = crc32c(0, &data);
                    }
                }
                let flag = if write { OBD_BRW_WRITE } else { OBD_BRW_READ };
                let bufs = vec![body.emit(), IoObj { oid, seq: body.seq, max_brw: 0, bufcnt: 1 }.emit(), NioBuf { offset: obj_off, len, flags: flag }.emit(), vec![], vec![]];
                (t, if write { opc::OST_WRITE } else { opc::OST_READ }, portal::OST_IO, bufs, Some((write, data, len)))
            }
            Op::Sync { file, stripe } => {
                // As fsync(2) of the whole file: [0, OBD_OBJECT_EOF] in o_size and o_blocks.
                let (t, oid) = self.object(file, stripe)?;
                let o = obdo_of(oid, t, self);
                let b = Obdo { valid: o.valid | valid::FLSIZE | valid::FLBLOCKS, size: 0, blocks: OBD_OBJECT_EOF, ..o };
                (t, opc::OST_SYNC, portal::OST_REQUEST, vec![b.emit()], None)
            }
            Op::Getattr { file, stripe, .. } => {
                let (t, oid) = self.object(file, stripe)?;
                (t, opc::OST_GETATTR, portal::OST_REQUEST, vec![obdo_of(oid, t, self).emit()], None)
            }
            Op::Destroy { file, stripe } => {
                let (t, oid) = self.object(file, stripe)?;
                (t, opc::OST_DESTROY, portal::OST_IO, vec![obdo_of(oid, t, self).emit()], None)
            }
            Op::Fallocate { file, stripe, len } => {
                // `osc_fallocate_base`: [0, len) in o_size and o_blocks, mode 0 in o_nlink.
                let (t, oid) = self.object(file, stripe)?;
                let o = obdo_of(oid, t, self);
                let b = Obdo { valid: o.valid | valid::FLSIZE | valid::FLBLOCKS, size: 0, blocks: len, cksum: 0, ..o };
                (t, opc::OST_FALLOCATE, portal::OST_IO, vec![b.emit()], None)
            }
            Op::Punch { file, stripe, from } => {
                // A truncate: [from, OBD_OBJECT_EOF) in o_size and o_blocks.
                let (t, oid) = self.object(file, stripe)?;
                let o = obdo_of(oid, t, self);
                let b = Obdo { valid: o.valid | valid::FLSIZE | valid::FLBLOCKS, size: from, blocks: OBD_OBJECT_EOF, ..o };
                (t, opc::OST_PUNCH, portal::OST_IO, vec![b.emit()], None)
            }
        })
    }

    pub(super) fn start(&mut self, node: &mut Node, op: Op, again: Option<Again>) -> Result<(), String> {
        let (t, opc, portal, mut bufs, mut bulk) = self.request_of(node, op)?;
        let replay = again.and_then(|a| a.replay);
        if let Some(transno) = replay {
            self.replay_request(t, transno, &mut bufs, &mut bulk);
        }
        let nid = self.job.targets[t].1;
        let server = ProcessId::new(nid, ProcessId::PID_LUSTRE);
        let resend = again.is_some_and(|a| a.xid.is_some());
        let xid = match again.and_then(|a| a.xid) {
            Some(x) => x,
            None => node.xids.next_xid(),
        };
        let tries = again.map_or(1, |a| a.tries);
        // A first send uses its xid as bulk match bits, a resend new ones.
        let mbits = if resend && bulk.is_some() { node.xids.next_xid() } else { xid };
        if let Op::Connect { .. } = op {
            self.imports[t].conn_cnt += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        let up = user_ptr(TAG_OSC, id);
        let timeout = self.rpc_timeout(t);
        let imp = &self.imports[t];
        let version = if opc == opc::OBD_PING { LUSTRE_OBD_VERSION } else { LUSTRE_OST_VERSION };
        let mut flags = if resend { MSG_RESENT } else { 0 };
        if replay.is_some() {
            flags |= MSG_REPLAY;
        }
        if let Op::ReplayDone { .. } = op {
            flags |= MSG_REQ_REPLAY_DONE | MSG_LOCK_REPLAY_DONE;
        }
        let body = PtlrpcBody { msg_type: PTL_RPC_MSG_REQUEST, version, opc, handle: imp.handle, flags, transno: replay.unwrap_or(0), last_xid: self.known_replied(t, xid), conn_cnt: imp.conn_cnt, timeout: wire_secs(timeout).max(1), mbits, ..Default::default() };
        let mut all = vec![body.emit()];
        all.extend(bufs);
        let mut req = LustreMsg::new(0, all);
        if self.job.at.is_some() {
            req.flags |= MSGHDR_AT_SUPPORT;
        }
        let req = req.emit();
        // Reply buffer first, then bulk, then the request (Lustre's order).
        let reply = alloc(node, 4096, None)?;
        let me = node.lnet.me_attach(portal::OSC_REPLY, ProcessId::new(nid, ProcessId::PID_ANY), xid, 0, true, Insert::Tail).map_err(|e| e.to_string())?;
        // With adaptive timeouts early replies land at offset 0 and the reply after them.
        let threshold = if self.job.at.is_some() { None } else { Some(1) };
        let reply_md = node.lnet.md_attach(me, spec(reply, opt::OP_PUT | opt::MANAGE_REMOTE | opt::TRUNCATE, threshold, up)).map_err(|e| e.to_string())?;
        self.bufs.insert(reply_md, reply);
        let mut rpc_bulk = None;
        let mut cksum = None;
        let mut kept = None;
        if let Some((write, data, len)) = bulk {
            let seg = alloc(node, len as usize, if write { Some(&data) } else { None })?;
            let me = node.lnet.me_attach(portal::OST_BULK, ProcessId::new(nid, ProcessId::PID_ANY), mbits, 0, true, Insert::Tail).map_err(|e| e.to_string())?;
            let ops = if write { opt::OP_GET } else { opt::OP_PUT };
            let md = node.lnet.md_attach(me, spec(seg, ops, Some(1), up)).map_err(|e| e.to_string())?;
            rpc_bulk = Some(super::rpc::Bulk { md, seg, got: None, gone: false });
            cksum = (write && self.job.checksum && self.imports[t].cksum).then(|| crc32c(0, &data));
            kept = write.then_some(data);
        }
        let rseg = alloc(node, req.len(), Some(&req))?;
        let qmd = node.lnet.md_bind(spec(rseg, 0, Some(1), up), true);
        self.bufs.insert(qmd, rseg);
        node.lnet.put(qmd, false, server, portal, xid, 0, 0).map_err(|e| e.to_string())?;
        self.report.rpcs += 1;
        self.imports[t].last_sent = Some((self.clock)());
        let handle = self.imports[t].handle;
        let sent_at = (self.clock)();
        let deadline = self.deadline(t, sent_at, timeout);
        self.rpcs.insert(id, Rpc { op, t, xid, reply_md, bulk: rpc_bulk, tries, sent_at, deadline, handle, cksum, data: kept, replay });
        Ok(())
    }

    /// Handles an event of one of our MDs; false if it is not ours.
    pub fn on_event(&mut self, node: &mut Node, ev: &Event) -> bool {
        if tag_of(ev) != TAG_OSC {
            return false;
        }
        let id = ev.user_ptr & ((1 << 56) - 1);
        let mut reply_bytes = None;
        if let Some(rpc) = self.rpcs.get_mut(&id) {
            // A reply is read before its buffer goes back to the arena; an early reply (offset
            // 0 when the reply goes after it) only moves the deadline.
            if ev.md == rpc.reply_md && ev.status == 0 && ev.kind == EventKind::Put && ev.match_bits == rpc.xid {
                let bytes = self.bufs.get(&ev.md).map(|s| node.mem.to_vec(s.off + ev.offset, ev.mlength as usize).unwrap_or_default());
                if self.job.at.is_some() && ev.offset < EARLY_REPLY_SIZE {
                    if let Some(b) = bytes {
                        self.early_reply(id, &b);
                    }
                    return true;
                }
                reply_bytes = bytes;
            }
            if let Some(b) = rpc.bulk.as_mut().filter(|b| b.md == ev.md) {
                if ev.kind == EventKind::Put && ev.status == 0 {
                    b.got = Some(ev.mlength);
                }
                b.gone |= ev.unlinked;
            }
        }
        if ev.unlinked {
            if let Some(seg) = self.bufs.remove(&ev.md) {
                free(node, seg);
            }
        }
        let Some(rpc) = self.rpcs.get(&id) else { return true };
        if ev.status != 0 {
            // The request did not get out, or a bulk transfer or the reply failed: the server
            // sends no reply after a bulk error, so the RPC timeout sends it again (resending
            // at once would only spin, and the server may still be working on the first try).
            debug!(job = %self.job.name, op = ?rpc.op, xid = rpc.xid, "{:?} failed with {}; resending after the timeout", ev.kind, crate::lnet::errno::name(ev.status));
            return true;
        }
        let Some(bytes) = reply_bytes else { return true };
        let rpc = self.rpcs.remove(&id).unwrap();
        self.finish(node, rpc, &bytes);
        self.pump(node);
        true
    }
}
