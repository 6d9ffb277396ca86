//! The OSS service: request buffers on the OST portals, the checks every request passes as in
//! Lustre's `ptlrpc_server_handle_req_in` and `tgt_request_handle` (export, connection epoch,
//! resend in progress, `process_req_last_xid`, `tgt_handle_recovery`), the OST opcodes as the
//! OFD handles them, and the reply PUT. Bulk I/O is in `bulk`, connections in `export`.
//!
//! Replies are not kept: as in Lustre's OFD, a resent WRITE, PUNCH or SETATTR is executed again
//! (they are idempotent), a resend of a request still in progress is dropped (the first attempt
//! answers), and a request at or below the export's last xid is refused. Changes are committed
//! every commit interval (and on OST_SYNC); after a restart, `recovery` replays what was not.

mod bulk;
mod export;
mod mutant;
mod record;
mod recovery;
mod service;

use super::store::{punch_start, Ost};
use crate::lnet::{opt, Event, EventKind, MdHandle};
use crate::mem::Seg;
use crate::node::Node;
use crate::ptlrpc::wire::rc::*;
use crate::ptlrpc::wire::*;
use crate::ptlrpc::{alloc, free, spec, tag_of, user_ptr, TAG_OSS};
use crate::wire::ProcessId;
use record::Export;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

const REQ_BUF: usize = 16 << 10;
const REQ_BUFS: usize = 16;
/// Bulk transfers the OSS runs at once by default (Lustre's `ost_io` service threads); further
/// BRW requests queue (`service`).
pub const IO_THREADS: usize = 32;
/// `bulk_timeout`: the longest a bulk transfer may take, whatever the request's deadline.
const BULK_TIMEOUT: Duration = Duration::from_secs(100);
/// How often the OSTs commit by default (ldiskfs's journal commit interval, 5 s).
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Uncommitted write data past which an OST commits early (a full journal).
const CACHE_LIMIT: u64 = 32 << 20;

/// A request being served.
struct Req {
    peer: ProcessId,
    xid: u64,
    opc: u32,
    /// The export handle (for CONNECT, the one the reply hands out).
    handle: u64,
    msg: LustreMsg,
    /// When the client stops waiting (arrival + `pb_timeout`): a bulk transfer waits until then.
    deadline: Instant,
    /// CRC32C of the bulk data moved, for the trace.
    digest: Option<u32>,
    /// A replay (MSG_REPLAY): the transaction number of its first execution, which it keeps.
    replay: Option<u64>,
    /// The OST its export is of (its reply names that OST's last committed transno).
    ost: Option<u32>,
    /// When it arrived (its service time counts from here).
    arrival: Instant,
    /// The portal it came on (the service whose estimate it feeds).
    portal: u32,
    /// The client does adaptive timeouts (MSGHDR_AT_SUPPORT): early replies, reply at 224.
    at: bool,
}

enum Wait {
    /// WRITE: our GET of the client's pages into `buf`.
    BulkIn { req: Req, buf: Seg, niobufs: Vec<NioBuf>, oid: u64, ost: u32, cksum: Option<u32>, md: MdHandle },
    /// READ: our PUT of the `obdo.o_size`... pages that exist; reply once ACKed.
    BulkOut { req: Req, buf: Seg, obdo: Obdo, nob: u32, md: MdHandle },
    /// A reply being sent, or a buffer LNet still holds.
    Reply { buf: Seg },
    /// A posted request buffer.
    ReqBuf { buf: Seg, portal: u32 },
    /// A BRW waiting for a service thread.
    Queued(Box<record::Queued<Req>>),
}

pub struct Oss {
    osts: HashMap<u32, Ost>,
    exports: HashMap<u64, Export>,
    next_export: u64,
    waits: HashMap<u64, Wait>,
    next_id: u64,
    /// One JSON object per served RPC, for the node's trace.
    pub trace: Vec<serde_json::Value>,
    pub rpcs: u64,
    /// Requests in progress (a bulk transfer under way), by (export handle, xid).
    active: HashMap<(u64, u64), u64>,
    /// Resends dropped because their first attempt was still in progress.
    pub resends_in_progress: u64,
    pub bulk_timeouts: u64,
    /// The clock deadlines use (virtual under simulation).
    pub clock: crate::Clock,
    /// `obd_timeout`: an export silent for PING_EVICT_TIMEOUT (derived from it) is evicted.
    pub obd_timeout: Duration,
    /// Exports the ping evictor removed.
    pub evictions: u64,
    /// The write mutants' state (nothing happens unless one is on).
    mutants: mutant::WriteMutants,
    /// OSTs recovering after a restart.
    recovery: HashMap<u32, record::Recovery<Req>>,
    /// How often the OSTs commit (`COMMIT_INTERVAL` unless set).
    pub commit_interval: Duration,
    last_commit: Option<Instant>,
    /// Replayed requests served in recovery.
    pub replays: u64,
    /// The adaptive-timeout tunables (`at_extra`, `at_early_margin`, `at_max`...).
    pub at: crate::ptlrpc::at::AtConfig,
    /// Service-time estimates by request portal (`scp_at_estimate`).
    estimates: HashMap<u32, crate::ptlrpc::at::Estimate>,
    /// Early replies sent.
    pub early_replies: u64,
    /// BRWs waiting for a service thread, in arrival order (ids into `waits`).
    io_queue: std::collections::VecDeque<u64>,
    /// The longest that queue has been.
    pub queued_max: usize,
    /// Bulk transfers served at once (`IO_THREADS` unless set).
    pub io_threads: usize,
}

/// Ops that change an object: they get a transaction number, and their xid is the export's
/// "last xid" that a copy without MSG_RESENT must not reuse (`lcd_last_xid`).
fn modifies(opc: u32) -> bool {
    matches!(opc, opc::OST_CREATE | opc::OST_DESTROY | opc::OST_SETATTR | opc::OST_PUNCH | opc::OST_WRITE | opc::OST_FALLOCATE)
}

impl Oss {
    /// Opens the OSTs and posts request buffers on OST_REQUEST, OST_IO and OST_CREATE.
    pub fn start(node: &mut Node, osts: Vec<Ost>) -> Result<Oss, String> {
        // An OST that had clients connected waits for them to reconnect and replay.
        let recovery = osts.iter().filter(|o| !o.clients().is_empty()).map(|o| (o.index, record::Recovery::new(o.clients(), o.last_committed()))).collect();
        let mut s = Oss { osts: osts.into_iter().map(|o| (o.index, o)).collect(), exports: HashMap::new(), next_export: record::base(node.lnet.incarnation()), waits: HashMap::new(), next_id: 1, trace: Vec::new(), rpcs: 0, active: HashMap::new(), resends_in_progress: 0, bulk_timeouts: 0, clock: crate::wall_clock(), obd_timeout: crate::ptlrpc::pinger::OBD_TIMEOUT, evictions: 0, recovery, commit_interval: COMMIT_INTERVAL, last_commit: None, replays: 0, mutants: Default::default(), at: Default::default(), estimates: HashMap::new(), early_replies: 0, io_queue: Default::default(), queued_max: 0, io_threads: IO_THREADS };
        for (portal, n) in [(portal::OST_REQUEST, REQ_BUFS), (portal::OST_IO, REQ_BUFS), (portal::OST_CREATE, REQ_BUFS)] {
            node.lnet.set_lazy(portal);
            for _ in 0..n {
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

    /// Time passing: bulk transfers past their deadline end, silent exports are evicted, the
    /// OSTs commit when due, recovery gives up on clients that do not come back.
    pub fn tick(&mut self, node: &mut Node) {
        self.expire_bulk(node);
        self.check_queued(node);
        self.start_queued(node);
        self.evict_silent(node);
        self.commit_due();
        self.recovery_deadlines(node);
    }

    /// Power loss: the OSTs as their disks have them, uncommitted changes gone (the OSS's
    /// memory — exports, replies in progress — goes with it).
    pub fn crash(mut self) -> std::io::Result<Vec<Ost>> {
        let mut osts: Vec<Ost> = std::mem::take(&mut self.osts).into_values().collect();
        osts.sort_by_key(|o| o.index);
        osts.into_iter().map(Ost::crash).collect()
    }

    /// Whether OST `index` is recovering.
    pub fn in_recovery(&self, index: u32) -> bool {
        self.recovery.contains_key(&index)
    }

    /// OST `index`, if this OSS serves it.
    pub fn ost(&self, index: u32) -> Option<&Ost> {
        self.osts.get(&index)
    }

    /// Live exports (connected clients, one per client UUID and OST).
    pub fn exports(&self) -> usize {
        self.exports.len()
    }

    /// What the OSS holds, for the end-of-run checks: per OST the ids of its objects, and the
    /// writes the `oss_drop_acked_write` and `oss_damage_acked_write` mutants acknowledged and
    /// lost or damaged (0 without them).
    pub fn state(&self) -> serde_json::Value {
        let mut osts: Vec<(&u32, &Ost)> = self.osts.iter().collect();
        osts.sort_by_key(|(i, _)| **i);
        let objects: serde_json::Map<String, serde_json::Value> = osts.iter().map(|(i, o)| (i.to_string(), json!(o.oids()))).collect();
        json!({"rpcs": self.rpcs, "exports": self.exports.len(), "objects": objects, "mutant_lost_writes": self.mutants.lost.len(), "mutant_lost_over_damage": self.mutants.lost_over_damage.len(), "mutant_damaged_writes": self.mutants.damaged.len()})
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
                self.request(node, ev.peer, portal, ev.match_bits, &bytes);
            }
            (w @ (Wait::BulkIn { .. } | Wait::BulkOut { .. }), k) => {
                self.bulk_event(node, id, w, k, ev);
                self.start_queued(node); // a thread may be free
            }
            (Wait::Reply { buf }, _) => free(node, buf),
            (w, k) => {
                debug!(?k, "unexpected OSS event");
                self.waits.insert(id, w);
            }
        }
        true
    }

    /// The gate every request passes before its handler, in Lustre's order.
    fn request(&mut self, node: &mut Node, peer: ProcessId, portal: u32, xid: u64, bytes: &[u8]) {
        let msg = match LustreMsg::parse(bytes) {
            Ok(m) => m,
            Err(e) => return warn!(%peer, xid, "bad request: {e}"),
        };
        let body = match msg.body() {
            Ok(b) => b,
            Err(e) => return warn!(%peer, xid, "bad ptlrpc_body: {e}"),
        };
        let now = (self.clock)();
        let deadline = now + Duration::from_secs(body.timeout.max(1) as u64).min(BULK_TIMEOUT);
        let replay = (body.flags & MSG_REPLAY != 0 && body.transno != 0).then_some(body.transno);
        let at = msg.flags & MSGHDR_AT_SUPPORT != 0;
        let mut req = Req { peer, xid, opc: body.opc, handle: body.handle, msg, deadline, digest: None, replay, ost: None, arrival: now, portal, at };
        if body.opc == opc::OST_CONNECT {
            self.rpcs += 1;
            return self.connect(node, req, &body);
        }
        // No export (never connected, or this OSS restarted): the client must connect again.
        let Some(exp) = self.exports.get_mut(&body.handle).filter(|e| e.peer == peer) else {
            return self.error(node, &req, ENOTCONN);
        };
        // `ptlrpc_update_export_timer`: any request shows the client is alive.
        exp.last_request = now;
        // `ptlrpc_check_req`: a request of an older connection is dropped.
        if body.conn_cnt < exp.conn_cnt {
            return debug!(%peer, xid, "request from an old connection ({} < {}); dropped", body.conn_cnt, exp.conn_cnt);
        }
        // `ptlrpc_server_request_add`: the first attempt of a resend still in progress answers.
        if body.flags & MSG_RESENT != 0 && self.active.contains_key(&(body.handle, xid)) {
            self.resends_in_progress += 1;
            return debug!(%peer, xid, "resent request still in progress; dropped (EBUSY)");
        }
        // `process_req_last_xid`: the client has replies for everything up to `last_xid`.
        exp.last_xid = exp.last_xid.max(body.last_xid);
        let replied = exp.last_xid;
        exp.creates.retain(|&x, _| x > replied); // `tgt_release_reply_data`
        if xid == 0 || (xid <= exp.last_xid && body.flags & MSG_REPLAY == 0) {
            warn!(%peer, xid, last_xid = exp.last_xid, "request at or below the export's last xid");
            return self.error(node, &req, EPROTO);
        }
        // `tgt_handle_recovery`: the last change's xid again, and not marked resent.
        if xid == exp.last_mod_xid && body.flags & (MSG_RESENT | MSG_REPLAY) == 0 {
            warn!(%peer, xid, "xid of an executed request reused without MSG_RESENT");
            return self.error(node, &req, ENOTCONN);
        }
        let ost = exp.ost;
        if modifies(body.opc) {
            exp.last_mod_xid = xid;
        }
        req.handle = body.handle;
        req.ost = Some(ost);
        self.rpcs += 1;
        let Some(req) = self.recovering(node, req, &body, portal, ost) else { return };
        self.serve(node, req, &body, portal, ost);
    }

    /// Serves a request kept since it arrived (recovery held or queued it).
    fn serve_parsed(&mut self, node: &mut Node, req: Req, portal: u32, ost: u32) {
        match req.msg.body() {
            Ok(body) => self.serve(node, req, &body, portal, ost),
            Err(e) => warn!(xid = req.xid, "held request: {e}"),
        }
    }

    /// The transaction number of a change `req` just made on `ost`: a new one, or a replay's own.
    fn transno(&mut self, req: &Req, ost: u32) -> u64 {
        let o = self.osts.get_mut(&ost).expect("exports name our OSTs");
        match req.replay {
            Some(t) => o.replayed_transno(t),
            None => o.next_transno(),
        }
    }

    /// The OST handlers (`ofd_*_hdl`, `tgt_brw_*`).
    fn serve(&mut self, node: &mut Node, req: Req, body: &PtlrpcBody, portal: u32, ost: u32) {
        let swapped = req.msg.swapped;
        match body.opc {
            opc::OBD_PING => return self.reply(node, &req, 0, vec![], 0),
            opc::OST_DISCONNECT => {
                // `tgt_client_del`: the client's record goes in a synchronous transaction,
                // which commits everything before it — a client that has gone replays nothing.
                if let Some(e) = self.exports.remove(&req.handle) {
                    let o = self.osts.get_mut(&e.ost).expect("exports name our OSTs");
                    o.set_client(&e.uuid, false);
                    if let Err(err) = o.commit() {
                        warn!(ost = e.ost, "commit at disconnect: {err}");
                    }
                }
                return self.reply(node, &req, 0, vec![], 0);
            }
            opc::OST_WRITE | opc::OST_READ if portal != portal::OST_IO => {
                warn!(portal, "{} on a portal other than OST_IO", opc::name(body.opc));
                return self.error(node, &req, EPROTO);
            }
            _ => {}
        }
        let obdo = match req.msg.buf(1, OBDO_LEN).and_then(|b| Obdo::parse(b, swapped)) {
            Ok(o) => o,
            Err(e) => {
                warn!("{}: {e}", opc::name(body.opc));
                return self.error(node, &req, EPROTO);
            }
        };
        let attr = |o: &Ost, oid| o.size(oid).map(|size| Obdo { valid: valid::FLID | valid::FLGROUP | valid::FLSIZE, oid, seq: ost as u64, size, ..Default::default() });
        let created = |oid| Obdo { valid: valid::FLID | valid::FLGROUP, oid, seq: ost as u64, ..Default::default() };
        if body.opc == opc::OST_CREATE {
            // A resend whose first attempt created the object: its reply again
            // (`tgt_handle_recovery` → reconstruct), not a second object.
            let exp = self.exports.get_mut(&req.handle).expect("the gate found it");
            let reconstruct = body.flags & MSG_RESENT != 0 && !crate::mutant::active("oss_no_create_reconstruct");
            if let Some(&(oid, transno)) = exp.creates.get(&req.xid).filter(|_| reconstruct) {
                debug!(xid = req.xid, oid, "resent CREATE: reconstructed");
                return self.reply(node, &req, 0, vec![created(oid).emit()], transno);
            }
            let o = self.osts.get_mut(&ost).expect("exports name our OSTs");
            // A replayed CREATE makes the object its first execution made (the client names it).
            let made = match req.replay {
                Some(_) if obdo.valid & valid::FLID != 0 => o.create_at(obdo.oid).map(|_| obdo.oid),
                _ => o.create(),
            };
            return match made {
                Ok(oid) => {
                    let transno = match req.replay {
                        Some(t) => o.replayed_transno(t),
                        None => o.next_transno(),
                    };
                    exp.creates.insert(req.xid, (oid, transno));
                    if exp.creates.len() > record::MAX_REPLY_DATA {
                        exp.creates.pop_first(); // a client that never says what it has
                    }
                    self.reply(node, &req, 0, vec![created(oid).emit()], transno)
                }
                Err(e) => self.reply(node, &req, e, vec![obdo.emit()], 0),
            };
        }
        let o = self.osts.get_mut(&ost).expect("exports name our OSTs");
        let r: Result<Obdo, i32> = match body.opc {
            opc::OST_DESTROY => o.destroy(obdo.oid).map(|_| obdo),
            opc::OST_GETATTR => attr(o, obdo.oid),
            // `ofd_setattr_hdl`: a size change by SETATTR could truncate by accident (bug 12203).
            opc::OST_SETATTR if obdo.valid & valid::FLSIZE != 0 => Err(EPERM),
            opc::OST_SETATTR => attr(o, obdo.oid),
            opc::OST_PUNCH => {
                if obdo.valid & (valid::FLSIZE | valid::FLBLOCKS) != valid::FLSIZE | valid::FLBLOCKS {
                    return self.error(node, &req, EPROTO);
                }
                punch_start(obdo.size, obdo.blocks).and_then(|start| o.truncate(obdo.oid, start)).and_then(|_| attr(o, obdo.oid))
            }
            // `ofd_fallocate_hdl`: [o_size, o_blocks) with FLSIZE|FLBLOCKS, the mode in
            // o_falloc_mode; a handler error is a normal reply.
            opc::OST_FALLOCATE if obdo.valid & (valid::FLSIZE | valid::FLBLOCKS) != valid::FLSIZE | valid::FLBLOCKS => Err(EOPNOTSUPP),
            opc::OST_FALLOCATE => o.fallocate(obdo.oid, obdo.size, obdo.blocks, obdo.cksum).and_then(|_| attr(o, obdo.oid)),
            // `ofd_sync_hdl`: the object and byte range named ([o_size, o_blocks]; without
            // them the whole object), or with no object the whole OST.
            opc::OST_SYNC if obdo.oid == 0 => o.sync_all().map(|_| Obdo::default()),
            opc::OST_SYNC => {
                let ranged = obdo.valid & (valid::FLSIZE | valid::FLBLOCKS) == valid::FLSIZE | valid::FLBLOCKS;
                let (start, end) = if ranged { (obdo.size, obdo.blocks) } else { (0, OBD_OBJECT_EOF) };
                o.sync_range(obdo.oid, start, end).and_then(|_| attr(o, obdo.oid))
            }
            opc::OST_WRITE | opc::OST_READ => return self.brw_or_queue(node, req, body, obdo, ost),
            other => {
                warn!(opc = other, "unsupported opcode");
                return self.error(node, &req, EOPNOTSUPP);
            }
        };
        let transno = if r.is_ok() && modifies(body.opc) { self.transno(&req, ost) } else { 0 };
        match r {
            Ok(b) => self.reply(node, &req, 0, vec![b.emit()], transno),
            Err(e) => self.reply(node, &req, e, vec![obdo.emit()], 0),
        }
    }

    /// Drops a request without a reply (the client resends after its timeout).
    fn drop_request(&mut self, req: &Req, why: &str) {
        self.active.remove(&(req.handle, req.xid));
        warn!(peer = %req.peer, xid = req.xid, "{}: {why}; no reply", opc::name(req.opc));
        self.trace.push(json!({"dropped": opc::name(req.opc), "xid": req.xid, "peer": req.peer, "why": why}));
    }

    /// A serious error (`ptlrpc_error`): a PTL_RPC_MSG_ERR reply.
    fn error(&mut self, node: &mut Node, req: &Req, status: i32) {
        self.send(node, req, PTL_RPC_MSG_ERR, status, vec![], 0, 0);
    }

    /// A handler's reply, its status 0, bytes read or a negative errno.
    fn reply(&mut self, node: &mut Node, req: &Req, status: i32, bufs: Vec<Vec<u8>>, transno: u64) {
        self.send(node, req, PTL_RPC_MSG_REPLY, status, bufs, transno, 0);
    }

    /// Sends the reply PUT to the client's reply portal, match bits = xid.
    #[allow(clippy::too_many_arguments)]
    fn send(&mut self, node: &mut Node, req: &Req, msg_type: u32, status: i32, mut bufs: Vec<Vec<u8>>, transno: u64, op_flags: u32) {
        self.active.remove(&(req.handle, req.xid));
        let ost = self.exports.get(&req.handle).map(|e| e.ost).or(req.ost);
        let last_committed = ost.and_then(|i| self.osts.get(&i)).map_or(0, |o| o.last_committed());
        let (timeout, service_time, offset) = self.reply_timing(req);
        let body = PtlrpcBody {
            msg_type,
            version: if req.opc == opc::OBD_PING { LUSTRE_OBD_VERSION } else { LUSTRE_OST_VERSION },
            opc: req.opc,
            status,
            handle: if req.opc == opc::OST_CONNECT && status == 0 { req.handle } else { 0 },
            transno,
            last_committed,
            op_flags,
            timeout,
            service_time,
            ..Default::default()
        };
        bufs.insert(0, body.emit());
        let bytes = LustreMsg::new(SECFLVR_NULL_OST, bufs).emit();
        let mut rec = json!({"rpc": opc::name(req.opc), "xid": req.xid, "peer": req.peer, "status": status});
        if let Some(d) = req.digest {
            rec["data"] = json!(format!("{d:08x}"));
        }
        self.trace.push(rec);
        self.put_reply(node, req, &bytes, offset);
    }

    /// PUTs a reply (or an early reply) to the client's reply portal, match bits = xid.
    fn put_reply(&mut self, node: &mut Node, req: &Req, bytes: &[u8], offset: u32) {
        let Ok(buf) = alloc(node, bytes.len(), Some(bytes)) else {
            return warn!(xid = req.xid, "no memory for a reply");
        };
        let id = self.id();
        let md = node.lnet.md_bind(spec(buf, 0, Some(1), user_ptr(TAG_OSS, id)), true);
        self.waits.insert(id, Wait::Reply { buf });
        if let Err(e) = node.lnet.put(md, false, req.peer, portal::OSC_REPLY, req.xid, offset, 0) {
            warn!(xid = req.xid, "reply: {e}");
            self.waits.remove(&id);
            free(node, buf);
        }
    }
}
