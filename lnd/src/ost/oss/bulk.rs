//! Bulk I/O as `tgt_brw_write` and `tgt_brw_read` do it: WRITE pulls the client's pages with an
//! LNet GET, checksums them, writes them even when the checksum differs and returns its own
//! (the client redoes the write); READ PUTs the bytes that exist (ACK requested) and answers
//! with their count. The transfer waits until the request's deadline (`target_bulk_io`); after a
//! network error or past the deadline there is no reply — the client resends.

use super::mutant::Verdict;
use super::{Oss, Req, Wait};
use crate::lnet::{Event, EventKind, MdHandle};
use crate::node::Node;
use crate::ost::store::Ost;
use crate::ptlrpc::wire::rc::*;
use crate::ptlrpc::wire::*;
use crate::ptlrpc::{alloc, free, spec, user_ptr, TAG_OSS};
use tracing::warn;

impl Oss {
    pub(super) fn brw(&mut self, node: &mut Node, req: Req, body: &PtlrpcBody, obdo: Obdo, ost: u32) {
        let swapped = req.msg.swapped;
        let ioo = match req.msg.buf(2, IOOBJ_LEN) {
            Ok(b) => IoObj::parse(b, swapped),
            Err(_) => return self.error(node, &req, EPROTO),
        };
        let nbs = match req.msg.buf(3, NIOBUF_LEN * ioo.bufcnt as usize) {
            Ok(b) => NioBuf::parse_all(b, swapped)[..ioo.bufcnt as usize].to_vec(),
            Err(_) => return self.error(node, &req, EPROTO),
        };
        let total: u64 = nbs.iter().map(|n| n.len as u64).sum();
        if ioo.bufcnt == 0 || total == 0 || total > crate::wire::LNET_MTU as u64 {
            return self.error(node, &req, EPROTO);
        }
        // Checked before any data moves (`ofd_preprw`): the extents and the object.
        if let Some(e) = nbs.iter().find_map(|n| Ost::extent_end(n.offset, n.len as u64).err()) {
            return self.reply(node, &req, e, vec![obdo.emit()], 0);
        }
        if !self.osts[&ost].exists(ioo.oid) {
            return self.reply(node, &req, ENOENT, vec![obdo.emit()], 0);
        }
        // Each attempt of a request has its own match bits (`ptlrpc_set_mbits`).
        let mbits = if self.export_flags(req.handle) & connect::BULK_MBITS != 0 && body.mbits != 0 { body.mbits } else { req.xid };
        let cksum = (obdo.valid & valid::FLCKSUM != 0).then_some(obdo.cksum);
        let id = self.id();
        if body.opc == opc::OST_WRITE {
            let Ok(buf) = alloc(node, total as usize, None) else {
                return self.reply(node, &req, ENOMEM, vec![obdo.emit()], 0); // the client retries
            };
            let md = node.lnet.md_bind(spec(buf, 0, Some(2), user_ptr(TAG_OSS, id)), true);
            let (peer, key) = (req.peer, (req.handle, req.xid));
            self.waits.insert(id, Wait::BulkIn { req, buf, niobufs: nbs, oid: ioo.oid, ost, cksum, md });
            self.active.insert(key, id);
            if let Err(e) = node.lnet.get(md, peer, portal::OST_BULK, mbits, 0) {
                self.fail_bulk(node, id, md, &e.to_string());
            }
            return;
        }
        // READ: the bytes that exist; a niobuf past the end is short and the rest are empty.
        let o = &self.osts[&ost];
        let mut data = Vec::with_capacity(total as usize);
        for nb in &nbs {
            match o.read(ioo.oid, nb.offset, nb.len as usize) {
                Ok(d) => {
                    let short = d.len() < nb.len as usize;
                    if data.is_empty() {
                        data = d; // one extent (the usual case): no second copy
                    } else {
                        data.extend(d);
                    }
                    if short {
                        break;
                    }
                }
                Err(e) => return self.reply(node, &req, e, vec![obdo.emit()], 0),
            }
        }
        let size = o.size(ioo.oid).unwrap_or(0);
        let mut reply_body = Obdo { valid: valid::FLID | valid::FLGROUP | valid::FLSIZE, oid: ioo.oid, seq: ost as u64, size, ..Default::default() };
        if cksum.is_some() {
            // The client asked for checksums: ours, over the bytes sent.
            reply_body.valid |= valid::FLCKSUM | valid::FLFLAGS;
            reply_body.flags = OBD_FL_CKSUM_CRC32C;
            reply_body.cksum = crc32c(0, &data);
        }
        let nob = data.len() as u32;
        let mut req = req;
        if nob == 0 {
            req.digest = Some(crc32c(0, &data));
            return self.reply(node, &req, 0, vec![reply_body.emit()], 0);
        }
        let Ok(buf) = alloc(node, data.len(), Some(&data)) else {
            return self.reply(node, &req, ENOMEM, vec![obdo.emit()], 0);
        };
        req.digest = Some(crc32c(0, &data));
        let md = node.lnet.md_bind(spec(buf, 0, Some(2), user_ptr(TAG_OSS, id)), true);
        let (peer, key) = (req.peer, (req.handle, req.xid));
        self.waits.insert(id, Wait::BulkOut { req, buf, obdo: reply_body, nob, md });
        self.active.insert(key, id);
        if let Err(e) = node.lnet.put(md, true, peer, portal::OST_BULK, mbits, 0, 0) {
            self.fail_bulk(node, id, md, &e.to_string());
        }
    }

    /// An event of a bulk transfer in progress.
    pub(super) fn bulk_event(&mut self, node: &mut Node, id: u64, w: Wait, kind: EventKind, ev: &Event) {
        match (w, kind) {
            (w, EventKind::Send) if ev.status == 0 => {
                self.waits.insert(id, w);
            }
            (Wait::BulkIn { mut req, buf, niobufs, oid, ost, cksum, .. }, EventKind::Reply) if ev.status == 0 => {
                if ev.mlength != buf.len as u64 {
                    free(node, buf);
                    return self.drop_request(&req, &format!("truncated bulk ({} of {} bytes)", ev.mlength, buf.len));
                }
                let mut data = node.mem.to_vec(buf.off, buf.len as usize).unwrap_or_default();
                free(node, buf);
                let ours = crc32c(0, &data);
                req.digest = Some(ours);
                if let Some(c) = cksum.filter(|&c| c != ours) {
                    warn!(ost, oid, xid = req.xid, "bulk write checksum mismatch: client {c:#x}, received {ours:#x}; written, the client will redo it");
                }
                let (status, rcs) = match self.mutants.on_write(ost, oid, &niobufs, &mut data, cksum.is_some_and(|c| c != ours)) {
                    Verdict::Drop => (0, vec![0; niobufs.len()]),
                    Verdict::Write => self.write_pages(ost, oid, &niobufs, data),
                };
                let transno = if status == 0 { self.transno(&req, ost) } else { 0 };
                if self.osts[&ost].uncommitted_bytes() > super::CACHE_LIMIT {
                    self.commit(); // a full journal commits early
                }
                let o = &self.osts[&ost];
                let mut body = Obdo { valid: valid::FLID | valid::FLGROUP | valid::FLSIZE, oid, seq: ost as u64, size: o.size(oid).unwrap_or(0), ..Default::default() };
                if cksum.is_some() {
                    body.valid |= valid::FLCKSUM | valid::FLFLAGS;
                    body.flags = OBD_FL_CKSUM_CRC32C;
                    body.cksum = ours;
                }
                let rcs: Vec<u8> = rcs.iter().flat_map(|r| r.to_le_bytes()).collect();
                self.reply(node, &req, status, vec![body.emit(), rcs], transno);
            }
            (Wait::BulkOut { req, buf, obdo, nob, .. }, EventKind::Ack) if ev.status == 0 => {
                free(node, buf);
                if ev.mlength != nob as u64 {
                    return self.drop_request(&req, &format!("truncated bulk ({} of {nob} bytes)", ev.mlength));
                }
                self.reply(node, &req, nob as i32, vec![obdo.emit()], 0);
            }
            (Wait::BulkIn { req, buf, .. } | Wait::BulkOut { req, buf, .. }, k) => {
                // A network error: no reply (`target_bulk_io`); the client resends.
                free(node, buf);
                self.drop_request(&req, &format!("bulk {k:?} failed ({})", crate::lnet::errno::name(ev.status)));
            }
            (w, _) => {
                self.waits.insert(id, w);
            }
        }
    }

    /// Writes the niobufs' pages: per-niobuf return codes (ENOSPC there, with status 0, as
    /// `tgt_brw_write` sets `rcs`), or another error as the status.
    fn write_pages(&mut self, ost: u32, oid: u64, nbs: &[NioBuf], mut data: Vec<u8>) -> (i32, Vec<i32>) {
        let Some(o) = self.osts.get_mut(&ost) else { return (ENODEV, vec![]) };
        let mut rcs = vec![0; nbs.len()];
        let mut at = 0usize;
        for (i, nb) in nbs.iter().enumerate() {
            let n = nb.len as usize;
            // One extent (the usual 1 MiB chunk): the received bytes go to the journal as they are.
            let piece = if nbs.len() == 1 { std::mem::take(&mut data) } else { data[at..at + n].to_vec() };
            match o.write_vec(oid, nb.offset, piece) {
                Ok(()) => {}
                Err(ENOSPC) => rcs[i] = ENOSPC,
                Err(e) => return (e, vec![]),
            }
            at += n;
        }
        (0, rcs)
    }

    /// Abandons bulk transfers past their request's deadline (their GET, data or ACK was lost):
    /// no reply is sent; the client's resend is then served afresh.
    pub fn expire_bulk(&mut self, node: &mut Node) {
        let now = (self.clock)();
        let mut old: Vec<u64> = self.waits.iter().filter(|(_, w)| matches!(w, Wait::BulkIn { req, .. } | Wait::BulkOut { req, .. } if now > req.deadline)).map(|(id, _)| *id).collect();
        old.sort_unstable(); // a fixed order keeps simulated runs replayable
        for id in old {
            self.abandon_bulk(node, id, "bulk transfer past the request's deadline");
        }
    }

    fn fail_bulk(&mut self, node: &mut Node, id: u64, md: MdHandle, why: &str) {
        let _ = node.lnet.md_unlink(md);
        if let Some(Wait::BulkIn { req, buf, .. } | Wait::BulkOut { req, buf, .. }) = self.waits.remove(&id) {
            free(node, buf);
            self.drop_request(&req, &format!("bulk transfer could not start: {why}"));
        }
    }
}
