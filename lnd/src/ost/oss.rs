//! The OSS service: request buffers on the OST portals, the OST opcodes, and bulk I/O — WRITE
//! pulls the client's pages with an LNet GET, READ PUTs them (ACK requested) — then the reply PUT.

use super::store::Ost;
use crate::lnet::{errno, opt, Event, EventKind, MdHandle};
use crate::mem::Seg;
use crate::node::Node;
use crate::ptlrpc::wire::*;
use crate::ptlrpc::{alloc, free, spec, tag_of, user_ptr, TAG_OSS};
use crate::wire::ProcessId;
use serde_json::json;
use std::collections::HashMap;
use tracing::{debug, warn};

const REQ_BUF: usize = 16 << 10;
const REQ_BUFS: usize = 16;
const EBADMSG: i32 = -74;
const ENOTCONN: i32 = -107;

/// A request being served.
struct Req {
    peer: ProcessId,
    xid: u64,
    opc: u32,
    msg: LustreMsg,
    /// CRC32C of the bulk data moved, for the trace.
    digest: Option<u32>,
}

enum Wait {
    /// WRITE: our GET of the client's pages into `buf`.
    BulkIn { req: Req, buf: Seg, niobufs: Vec<NioBuf>, oid: u64, ost: u32, cksum: Option<u32>, md: MdHandle, since: std::time::Instant },
    /// READ: our PUT of the pages; reply once ACKed.
    BulkOut { req: Req, buf: Seg, obdo: Obdo, digest: u32, md: MdHandle, since: std::time::Instant },
    /// A reply being sent.
    Reply { buf: Seg },
    /// A posted request buffer.
    ReqBuf { buf: Seg, portal: u32 },
}

pub struct Oss {
    osts: HashMap<u32, Ost>,
    /// export handle -> (client, OST index)
    exports: HashMap<u64, (ProcessId, u32)>,
    next_export: u64,
    waits: HashMap<u64, Wait>,
    next_id: u64,
    /// One JSON object per served RPC, for the node's trace.
    pub trace: Vec<serde_json::Value>,
    pub rpcs: u64,
    /// Requests being served: a resend of one of these is ignored (the reply will come).
    active: std::collections::HashSet<(ProcessId, u64)>,
    /// Replies already sent, by (client, xid): a resent request gets its reply again and is
    /// never applied twice.
    replies: HashMap<(ProcessId, u64), Vec<u8>>,
    reply_order: std::collections::VecDeque<(ProcessId, u64)>,
    pub resent_replies: u64,
    pub bulk_timeouts: u64,
    /// The clock bulk timeouts use (virtual under simulation).
    pub clock: crate::Clock,
}

const REPLY_CACHE: usize = 8192;

/// Export handles of one OSS instance start from its LNet incarnation, so a restarted OSS never
/// hands out a handle an old connection still uses.
fn export_base(incarnation: u64) -> u64 {
    (incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xffff_ffff_0000_0000) | 0x4f53_0000
}

impl Oss {
    /// Opens the OSTs and posts request buffers on OST_REQUEST and OST_IO.
    pub fn start(node: &mut Node, osts: Vec<Ost>) -> Result<Oss, String> {
        let mut s = Oss { osts: osts.into_iter().map(|o| (o.index, o)).collect(), exports: HashMap::new(), next_export: export_base(node.lnet.incarnation()), waits: HashMap::new(), next_id: 1, trace: Vec::new(), rpcs: 0, active: Default::default(), replies: HashMap::new(), reply_order: Default::default(), resent_replies: 0, bulk_timeouts: 0, clock: crate::wall_clock() };
        for portal in [portal::OST_REQUEST, portal::OST_IO] {
            node.lnet.set_lazy(portal);
            for _ in 0..REQ_BUFS {
                let buf = alloc(node, REQ_BUF, None)?;
                s.post_reqbuf(node, buf, portal)?;
            }
        }
        Ok(s)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn post_reqbuf(&mut self, node: &mut Node, buf: Seg, portal: u32) -> Result<(), String> {
        let id = self.id();
        let me = node.lnet.me_attach(portal, ProcessId::ANY, 0, u64::MAX, true, crate::lnet::Insert::Tail).map_err(|e| e.to_string())?;
        node.lnet.md_attach(me, spec(buf, opt::OP_PUT | opt::TRUNCATE, Some(1), user_ptr(TAG_OSS, id))).map_err(|e| e.to_string())?;
        self.waits.insert(id, Wait::ReqBuf { buf, portal });
        Ok(())
    }

    /// Handles an event of one of our MDs; false if it is not ours.
    pub fn on_event(&mut self, node: &mut Node, ev: &Event) -> bool {
        if tag_of(ev) != TAG_OSS {
            return false;
        }
        let id = ev.user_ptr & ((1 << 56) - 1);
        let Some(w) = self.waits.remove(&id) else { return true };
        match (w, ev.kind) {
            (Wait::ReqBuf { buf, portal }, EventKind::Put) => {
                let bytes = node.mem.to_vec(buf.off, ev.mlength as usize).unwrap_or_default();
                if let Err(e) = self.post_reqbuf(node, buf, portal) {
                    warn!("cannot repost request buffer: {e}");
                }
                if ev.rlength > ev.mlength {
                    warn!(peer = %ev.peer, "request of {} bytes truncated; dropped", ev.rlength);
                    return true;
                }
                self.request(node, ev.peer, ev.match_bits, &bytes);
            }
            (Wait::BulkIn { mut req, buf, niobufs, oid, ost, cksum, .. }, EventKind::Reply) => {
                let st = if ev.status != 0 {
                    errno::EIO
                } else {
                    let data = node.mem.to_vec(buf.off, buf.len as usize).unwrap_or_default();
                    req.digest = Some(crc32c(0, &data));
                    self.write_pages(ost, oid, &niobufs, &data, cksum)
                };
                free(node, buf);
                let rcs: Vec<u8> = niobufs.iter().flat_map(|_| (st.min(0) as u32).to_le_bytes()).collect();
                let size = self.osts.get(&ost).and_then(|o| o.size(oid).ok()).unwrap_or(0);
                let body = Obdo { valid: valid::FLID | valid::FLSIZE, oid, seq: ost as u64, size, ..Default::default() };
                self.reply(node, &req, st, vec![body.emit(), rcs]);
            }
            (w @ Wait::BulkIn { .. }, EventKind::Send) => {
                if ev.status != 0 {
                    if let Wait::BulkIn { req, buf, .. } = w {
                        free(node, buf);
                        self.reply(node, &req, errno::EIO, vec![Obdo::default().emit()]);
                    }
                } else {
                    self.waits.insert(id, w);
                }
            }
            (w @ Wait::BulkOut { .. }, EventKind::Send) if ev.status == 0 => {
                self.waits.insert(id, w);
            }
            (Wait::BulkOut { mut req, buf, obdo, digest, .. }, k) => {
                free(node, buf);
                req.digest = Some(digest);
                let st = if k == EventKind::Ack && ev.status == 0 { 0 } else { errno::EIO };
                self.reply(node, &req, st, vec![obdo.emit()]);
            }
            (Wait::Reply { buf }, _) => free(node, buf),
            (w, k) => {
                debug!(?k, "unexpected OSS event");
                self.waits.insert(id, w);
            }
        }
        true
    }

    fn write_pages(&mut self, ost: u32, oid: u64, nbs: &[NioBuf], data: &[u8], cksum: Option<u32>) -> i32 {
        if let Some(c) = cksum {
            let got = crc32c(0, data);
            if got != c {
                warn!(ost, oid, "bulk checksum mismatch: client {c:#x}, received {got:#x}");
                return EBADMSG;
            }
        }
        let Some(o) = self.osts.get_mut(&ost) else { return ENOTCONN };
        let mut at = 0usize;
        for nb in nbs {
            let n = nb.len as usize;
            if let Err(e) = o.write(oid, nb.offset, &data[at..at + n]) {
                return e;
            }
            at += n;
        }
        0
    }

    fn request(&mut self, node: &mut Node, peer: ProcessId, xid: u64, bytes: &[u8]) {
        let msg = match LustreMsg::parse(bytes) {
            Ok(m) => m,
            Err(e) => return warn!(%peer, xid, "bad request: {e}"),
        };
        let body = match msg.body() {
            Ok(b) => b,
            Err(e) => return warn!(%peer, xid, "bad ptlrpc_body: {e}"),
        };
        let key = (peer, xid);
        if self.active.contains(&key) {
            // The client re-posted its bulk buffer for the resend, so a bulk transfer still
            // running for the first attempt can only fail: drop it and serve the resend now.
            let bulk = self.waits.iter().find(|(_, w)| matches!(w, Wait::BulkIn { req, .. } | Wait::BulkOut { req, .. } if (req.peer, req.xid) == key)).map(|(id, _)| *id);
            match bulk {
                Some(id) => {
                    debug!(%peer, xid, "resent request: the first attempt's bulk transfer is abandoned");
                    self.abandon_bulk(node, id);
                }
                None => {
                    debug!(%peer, xid, "resent request still being served; ignored");
                    return;
                }
            }
        }
        if let Some(bytes) = self.replies.get(&key).cloned() {
            // Done before: send the same reply again, do not apply the request twice.
            self.resent_replies += 1;
            self.send_reply(node, peer, xid, &bytes);
            return;
        }
        self.active.insert(key);
        self.rpcs += 1;
        let req = Req { peer, xid, opc: body.opc, msg, digest: None };
        let st = self.serve(node, &req, &body);
        if let Err((st, bufs)) = st {
            self.reply(node, &req, st, bufs);
        }
    }

    /// Serves a request; `Err((status, reply buffers))` answers at once, `Ok` means a bulk
    /// transfer is under way and the reply follows it.
    fn serve(&mut self, node: &mut Node, req: &Req, body: &PtlrpcBody) -> Result<(), (i32, Vec<Vec<u8>>)> {
        let swapped = req.msg.swapped;
        if body.opc == opc::OST_CONNECT {
            let uuid = req.msg.buf(1, 0).map(|b| String::from_utf8_lossy(b).trim_end_matches('\0').to_string()).unwrap_or_default();
            let idx = uuid.strip_prefix("lustre-OST").and_then(|s| s.get(..4)).and_then(|h| u32::from_str_radix(h, 16).ok());
            let Some(idx) = idx.filter(|i| self.osts.contains_key(i)) else {
                return Err((-19, vec![])); // ENODEV: no such target here
            };
            self.next_export += 1;
            self.exports.insert(self.next_export, (req.peer, idx));
            return Err((0, vec![vec![0u8; 192]]));
        }
        if body.opc == opc::OBD_PING {
            return Err((0, vec![]));
        }
        // A handle this instance never gave out, or gave to another client, is no connection:
        // after a restart the client must connect again (its old handle must not alias a new one).
        let ost = match self.exports.get(&body.handle) {
            Some(&(peer, ost)) if peer == req.peer => ost,
            _ => return Err((ENOTCONN, vec![Obdo::default().emit()])),
        };
        if body.opc == opc::OST_DISCONNECT {
            self.exports.remove(&body.handle);
            return Err((0, vec![]));
        }
        let obdo = req.msg.buf(1, OBDO_LEN).and_then(|b| Obdo::parse(b, swapped)).map_err(|e| {
            warn!("{}: {e}", opc::name(body.opc));
            (errno::EPROTO, vec![])
        })?;
        let o = self.osts.get_mut(&ost).expect("exports name our OSTs");
        let reply = |r: Result<Obdo, i32>| match r {
            Ok(b) => Err((0, vec![b.emit()])),
            Err(e) => Err((e, vec![obdo.emit()])),
        };
        let attr = |o: &Ost, oid| o.size(oid).map(|size| Obdo { valid: valid::FLID | valid::FLSIZE, oid, seq: ost as u64, size, ..Default::default() });
        match body.opc {
            opc::OST_CREATE => reply(o.create().map(|oid| Obdo { valid: valid::FLID | valid::FLGROUP, oid, seq: ost as u64, ..Default::default() })),
            opc::OST_DESTROY => reply(o.destroy(obdo.oid).map(|_| obdo)),
            opc::OST_GETATTR => reply(attr(o, obdo.oid)),
            opc::OST_SETATTR => {
                let r = if obdo.valid & valid::FLSIZE != 0 { o.truncate(obdo.oid, obdo.size) } else { Ok(()) };
                reply(r.and_then(|_| attr(o, obdo.oid)))
            }
            opc::OST_PUNCH => reply(o.punch(obdo.oid, obdo.size, obdo.blocks).and_then(|_| attr(o, obdo.oid))),
            opc::OST_SYNC => reply(o.sync().and_then(|_| attr(o, obdo.oid))),
            opc::OST_WRITE | opc::OST_READ => self.brw(node, req, body, obdo, ost),
            other => {
                warn!(opc = other, "unsupported opcode");
                Err((-95, vec![])) // EOPNOTSUPP
            }
        }
    }

    fn brw(&mut self, node: &mut Node, req: &Req, body: &PtlrpcBody, obdo: Obdo, ost: u32) -> Result<(), (i32, Vec<Vec<u8>>)> {
        let swapped = req.msg.swapped;
        let bad = |e: PtlrpcError| (errno::EPROTO, vec![e.to_string().into_bytes()]);
        let ioo = IoObj::parse(req.msg.buf(2, IOOBJ_LEN).map_err(bad)?, swapped);
        let nbs = NioBuf::parse_all(req.msg.buf(3, NIOBUF_LEN * ioo.bufcnt as usize).map_err(bad)?, swapped);
        let total: u64 = nbs.iter().map(|n| n.len as u64).sum();
        if ioo.bufcnt == 0 || total > crate::wire::LNET_MTU as u64 {
            return Err((errno::EINVAL, vec![obdo.emit()]));
        }
        let mbits = if body.mbits != 0 { body.mbits } else { req.xid };
        let buf = alloc(node, total as usize, None).map_err(|_| (errno::ENOMEM, vec![obdo.emit()]))?;
        let id = self.id();
        let client = req.peer;
        let send_req = Req { peer: req.peer, xid: req.xid, opc: req.opc, msg: LustreMsg::new(0, vec![]), digest: None };
        if body.opc == opc::OST_WRITE {
            let cksum = (obdo.valid & valid::FLCKSUM != 0).then_some(obdo.cksum);
            let md = node.lnet.md_bind(spec(buf, 0, Some(2), user_ptr(TAG_OSS, id)), true);
            self.waits.insert(id, Wait::BulkIn { req: send_req, buf, niobufs: nbs, oid: ioo.oid, ost, cksum, md, since: (self.clock)() });
            if let Err(e) = node.lnet.get(md, client, portal::OST_BULK, mbits, 0) {
                self.fail_bulk(node, id, md, &e.to_string());
            }
        } else {
            let o = &self.osts[&ost];
            let mut data = Vec::with_capacity(total as usize);
            for nb in &nbs {
                match o.read(ioo.oid, nb.offset, nb.len as usize) {
                    Ok(d) => data.extend(d),
                    Err(e) => {
                        free(node, buf);
                        return Err((e, vec![obdo.emit()]));
                    }
                }
            }
            node.mem.write(buf.off, &data).expect("buffer sized for the data");
            let size = o.size(ioo.oid).unwrap_or(0);
            let mut reply_body = Obdo { valid: valid::FLID | valid::FLSIZE, oid: ioo.oid, seq: ost as u64, size, ..Default::default() };
            if obdo.valid & valid::FLCKSUM != 0 {
                // The client asked for checksums: send ours.
                reply_body.valid |= valid::FLCKSUM | valid::FLFLAGS;
                reply_body.flags = OBD_FL_CKSUM_CRC32C;
                reply_body.cksum = crc32c(0, &data);
            }
            let md = node.lnet.md_bind(spec(buf, 0, Some(2), user_ptr(TAG_OSS, id)), true);
            self.waits.insert(id, Wait::BulkOut { req: send_req, buf, obdo: reply_body, digest: crc32c(0, &data), md, since: (self.clock)() });
            if let Err(e) = node.lnet.put(md, true, client, portal::OST_BULK, mbits, 0, 0) {
                self.fail_bulk(node, id, md, &e.to_string());
            }
        }
        Ok(())
    }

    /// Abandons bulk transfers that have not finished within `timeout` (their GET or data was
    /// lost): no reply is sent; the client's resend is then served afresh.
    pub fn expire_bulk(&mut self, node: &mut Node, timeout: std::time::Duration) {
        let now = (self.clock)();
        let mut old: Vec<u64> = self
            .waits
            .iter()
            .filter(|(_, w)| matches!(w, Wait::BulkIn { since, .. } | Wait::BulkOut { since, .. } if now.saturating_duration_since(*since) > timeout))
            .map(|(id, _)| *id)
            .collect();
        old.sort_unstable(); // a fixed order keeps simulated runs replayable
        for id in old {
            if let Some(Wait::BulkIn { req, .. } | Wait::BulkOut { req, .. }) = self.waits.get(&id) {
                warn!(peer = %req.peer, xid = req.xid, "bulk transfer timed out; request abandoned");
            }
            self.abandon_bulk(node, id);
        }
    }

    /// Gives up bulk transfer `id` without a reply (the client will resend).
    fn abandon_bulk(&mut self, node: &mut Node, id: u64) {
        let Some(Wait::BulkIn { req, buf, md, .. } | Wait::BulkOut { req, buf, md, .. }) = self.waits.remove(&id) else { return };
        self.active.remove(&(req.peer, req.xid));
        self.bulk_timeouts += 1;
        // The buffer goes back once LNet lets go of the MD (a late transfer may still land).
        self.waits.insert(id, Wait::Reply { buf });
        let _ = node.lnet.md_unlink(md);
    }

    fn fail_bulk(&mut self, node: &mut Node, id: u64, md: MdHandle, why: &str) {
        warn!("bulk transfer could not start: {why}");
        let _ = node.lnet.md_unlink(md);
        if let Some(Wait::BulkIn { req, buf, .. } | Wait::BulkOut { req, buf, .. }) = self.waits.remove(&id) {
            free(node, buf);
            self.reply(node, &req, errno::EIO, vec![Obdo::default().emit()]);
        }
    }

    /// Sends the reply PUT to the client's reply portal, match bits = xid.
    fn reply(&mut self, node: &mut Node, req: &Req, status: i32, mut bufs: Vec<Vec<u8>>) {
        let body = PtlrpcBody {
            msg_type: if status == 0 { PTL_RPC_MSG_REPLY } else { PTL_RPC_MSG_ERR },
            version: if req.opc == opc::OBD_PING { LUSTRE_OBD_VERSION } else { LUSTRE_OST_VERSION },
            opc: req.opc,
            status,
            handle: if req.opc == opc::OST_CONNECT && status == 0 { self.next_export } else { 0 },
            ..Default::default()
        };
        bufs.insert(0, body.emit());
        let bytes = LustreMsg::new(SECFLVR_NULL_OST, bufs).emit();
        let key = (req.peer, req.xid);
        self.active.remove(&key);
        if self.replies.insert(key, bytes.clone()).is_none() {
            self.reply_order.push_back(key);
            if self.reply_order.len() > REPLY_CACHE {
                if let Some(old) = self.reply_order.pop_front() {
                    self.replies.remove(&old);
                }
            }
        }
        let mut rec = json!({"rpc": opc::name(req.opc), "xid": req.xid, "peer": req.peer, "status": status});
        if let Some(d) = req.digest {
            rec["data"] = json!(format!("{d:08x}"));
        }
        self.trace.push(rec);
        self.send_reply(node, req.peer, req.xid, &bytes);
    }

    /// PUTs reply bytes to the client's reply portal, match bits = xid.
    fn send_reply(&mut self, node: &mut Node, peer: ProcessId, xid: u64, bytes: &[u8]) {
        let Ok(buf) = alloc(node, bytes.len(), Some(bytes)) else {
            return warn!(xid, "no memory for a reply");
        };
        let id = self.id();
        let md = node.lnet.md_bind(spec(buf, 0, Some(1), user_ptr(TAG_OSS, id)), true);
        self.waits.insert(id, Wait::Reply { buf });
        if let Err(e) = node.lnet.put(md, false, peer, portal::OSC_REPLY, xid, 0, 0) {
            warn!(xid, "reply: {e}");
            self.waits.remove(&id);
            free(node, buf);
        }
    }
}
