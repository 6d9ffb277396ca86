//! The client I/O engine: connects to OSTs, creates the objects of striped files (RAID0 like
//! Lustre), writes them, reads them back and verifies every byte, checks sizes, punches and
//! destroys — as ptlrpc RPCs, many in flight, bulk checksummed with CRC32C.

use crate::lnet::{opt, Event, EventKind, Insert, MdHandle};
use crate::mem::Seg;
use crate::node::Node;
use crate::ptlrpc::wire::*;
use crate::ptlrpc::{alloc, free, pattern_fill, spec, tag_of, user_ptr, TAG_OSC};
use crate::wire::{Nid, ProcessId};
use std::collections::{HashMap, VecDeque};
use tracing::{debug, warn};

/// What one client runs.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IoJob {
    pub name: String,
    /// OST index and the NID this client reaches its OSS by.
    pub targets: Vec<(u32, Nid)>,
    pub files: u64,
    pub file_size: u64,
    pub stripe_size: u32,
    pub stripe_count: u32,
    pub seed: u64,
    /// Files are numbered from here (so clients sharing OSTs write different files).
    #[serde(default)]
    pub first_file: u64,
    #[serde(default = "default_inflight")]
    pub inflight: usize,
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(default)]
    pub punch: bool,
    #[serde(default)]
    pub destroy: bool,
    /// CRC32C on bulk data (Lustre's `checksums=1`).
    #[serde(default = "yes")]
    pub checksum: bool,
    /// Compare the data read back with what was written.
    #[serde(default = "yes")]
    pub compare: bool,
    /// Use these objects (file, stripe, target, oid) instead of creating new ones, e.g. to read
    /// back what an earlier job wrote before an OSS restart.
    #[serde(default)]
    pub objects: Option<Vec<(u64, u32, usize, u64)>>,
    /// Write the files (off: only read and check what is there).
    #[serde(default = "yes")]
    pub write: bool,
    /// Resend an RPC (same xid, MSG_RESENT) when no reply came within this long.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Attempts per RPC (resends and bulk redos) before it counts as failed.
    #[serde(default = "default_tries")]
    pub max_tries: u32,
}

fn default_tries() -> u32 {
    8
}

fn default_timeout() -> u64 {
    5000
}

const MSG_RESENT: u32 = 0x2;
const EBADMSG: i32 = -74;
/// The server does not know our export (it restarted): reconnect, then send again.
const ENOTCONN: i32 = -107;

fn default_inflight() -> usize {
    8
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IoReport {
    pub name: String,
    pub bytes_written: u64,
    pub bytes_verified: u64,
    pub rpcs: u64,
    pub errors: u64,
    pub messages: Vec<String>,
    pub done: bool,
    /// RPCs sent again after a timeout, a lost message or a bad checksum.
    pub resends: u64,
    /// Times the client connected again after the server lost its export.
    #[serde(default)]
    pub reconnects: u64,
    /// Chunks whose acknowledged write did not read back.
    pub lost_acked_writes: u64,
    /// Wrong data that passed its checksum.
    pub silent_corruptions: u64,
    /// The objects the job used: (file, stripe, target, oid).
    pub objects: Vec<(u64, u32, usize, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Create,
    Write,
    Sync,
    Read,
    Getattr,
    Punch,
    GetattrPunched,
    Destroy,
    Disconnect,
    Done,
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Connect => "connect",
        Phase::Create => "create",
        Phase::Write => "write",
        Phase::Sync => "sync",
        Phase::Read => "read",
        Phase::Getattr => "getattr",
        Phase::Punch => "punch",
        Phase::GetattrPunched => "getattr_punched",
        Phase::Destroy => "destroy",
        Phase::Disconnect => "disconnect",
        Phase::Done => "done",
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Connect { t: usize },
    Create { file: u64, stripe: u32 },
    Write { file: u64, chunk: u64 },
    Read { file: u64, chunk: u64 },
    Sync { file: u64, stripe: u32 },
    Getattr { file: u64, stripe: u32, want: u64 },
    Punch { file: u64, stripe: u32, from: u64 },
    Destroy { file: u64, stripe: u32 },
    Disconnect { t: usize },
}

/// Unlinks the reply and bulk MDs of one attempt (their UNLINK events free the buffers).
fn unlink_attempt(node: &mut Node, rpc: &Rpc) {
    for md in &rpc.mds {
        let _ = node.lnet.md_unlink(*md);
    }
}

struct Rpc {
    op: Op,
    t: usize,
    xid: u64,
    reply: Seg,
    /// A read's sink, freed once the data is checked.
    bulk: Option<Seg>,
    /// The reply and bulk MDs, unlinked if the RPC fails.
    mds: Vec<MdHandle>,
    tries: u32,
    sent_at: std::time::Instant,
    /// The export handle it was sent with.
    handle: u64,
}

pub struct Osc {
    pub job: IoJob,
    pub report: IoReport,
    phase: Phase,
    todo: VecDeque<Op>,
    rpcs: HashMap<u64, Rpc>,
    /// Buffers freed when their MD is unlinked.
    bufs: HashMap<MdHandle, Seg>,
    handles: Vec<u64>,
    objects: HashMap<(u64, u32), (usize, u64)>,
    next_xid: u64,
    next_id: u64,
    pub trace: Vec<serde_json::Value>,
    /// When each phase began (for benchmarks).
    pub phases: Vec<(&'static str, std::time::Instant)>,
    /// The clock RPC timeouts use (virtual under simulation).
    pub clock: crate::Clock,
    /// Chunks whose write was acknowledged.
    acked: std::collections::HashSet<(u64, u64)>,
    /// Targets we are reconnecting to (their server restarted and forgot our export)...
    reconnecting: std::collections::HashSet<usize>,
    /// ...and the RPCs waiting for that: (target, op, tries so far, read buffer).
    parked: Vec<(usize, Op, u32, Option<Seg>)>,
}

impl Osc {
    pub fn new(job: IoJob) -> Result<Osc, String> {
        if job.targets.is_empty() || job.stripe_count == 0 || job.stripe_size == 0 || job.stripe_size > crate::wire::LNET_MTU {
            return Err(format!("io job `{}`: needs targets, stripe_count ≥ 1 and 0 < stripe_size ≤ 1 MiB", job.name));
        }
        if job.stripe_count as usize > job.targets.len() {
            return Err(format!("io job `{}`: stripe_count {} exceeds the {} OSTs", job.name, job.stripe_count, job.targets.len()));
        }
        let n = job.targets.len();
        let report = IoReport { name: job.name.clone(), ..Default::default() };
        let next_xid = ((job.seed & 0xffff_ffff) << 20) & !127;
        let given: HashMap<(u64, u32), (usize, u64)> = job.objects.iter().flatten().map(|&(f, s, t, oid)| ((f, s), (t, oid))).collect();
        let mut o = Osc { job, report, phase: Phase::Connect, todo: VecDeque::new(), rpcs: HashMap::new(), bufs: HashMap::new(), handles: vec![0; n], objects: given, next_xid, next_id: 1, trace: Vec::new(), phases: vec![("connect", std::time::Instant::now())], clock: crate::wall_clock(), acked: Default::default(), reconnecting: Default::default(), parked: Vec::new() };
        o.todo = (0..n).map(|t| Op::Connect { t }).collect();
        Ok(o)
    }

    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn files(&self) -> std::ops::Range<u64> {
        self.job.first_file..self.job.first_file + self.job.files
    }

    fn chunks(&self) -> u64 {
        self.job.file_size.div_ceil(self.job.stripe_size as u64)
    }

    /// (stripe, object offset, length) of chunk `c`.
    fn chunk(&self, c: u64) -> (u32, u64, u32) {
        let ss = self.job.stripe_size as u64;
        let stripe = (c % self.job.stripe_count as u64) as u32;
        let obj_off = (c / self.job.stripe_count as u64) * ss;
        let len = (self.job.file_size - c * ss).min(ss) as u32;
        (stripe, obj_off, len)
    }

    fn object_size(&self, stripe: u32) -> u64 {
        (0..self.chunks()).map(|c| self.chunk(c)).filter(|(s, _, _)| *s == stripe).map(|(_, off, len)| off + len as u64).max().unwrap_or(0)
    }

    fn next_phase(&mut self) {
        let stripes = |o: &Osc| -> Vec<(u64, u32)> { o.files().flat_map(|f| (0..o.job.stripe_count).map(move |s| (f, s))).collect() };
        loop {
            self.phase = match self.phase {
                Phase::Connect => Phase::Create,
                Phase::Create => Phase::Write,
                Phase::Write => Phase::Sync,
                Phase::Sync => Phase::Read,
                Phase::Read => Phase::Getattr,
                Phase::Getattr => Phase::Punch,
                Phase::Punch => Phase::GetattrPunched,
                Phase::GetattrPunched => Phase::Destroy,
                Phase::Destroy => Phase::Disconnect,
                Phase::Disconnect | Phase::Done => Phase::Done,
            };
            let ops: Vec<Op> = match self.phase {
                Phase::Create if self.job.objects.is_some() => Vec::new(),
                Phase::Create => stripes(self).into_iter().map(|(file, stripe)| Op::Create { file, stripe }).collect(),
                Phase::Write | Phase::Sync if !self.job.write => Vec::new(),
                Phase::Write => self.files().flat_map(|file| (0..self.chunks()).map(move |chunk| Op::Write { file, chunk })).collect(),
                Phase::Sync => stripes(self).into_iter().map(|(file, stripe)| Op::Sync { file, stripe }).collect(),
                Phase::Read if self.job.verify => self.files().flat_map(|file| (0..self.chunks()).map(move |chunk| Op::Read { file, chunk })).collect(),
                Phase::Getattr => stripes(self).into_iter().map(|(file, stripe)| Op::Getattr { file, stripe, want: self.object_size(stripe) }).collect(),
                Phase::Punch if self.job.punch => stripes(self).into_iter().map(|(file, stripe)| Op::Punch { file, stripe, from: self.object_size(stripe) / 2 }).collect(),
                Phase::GetattrPunched if self.job.punch => stripes(self).into_iter().map(|(file, stripe)| Op::Getattr { file, stripe, want: self.object_size(stripe) / 2 }).collect(),
                Phase::Destroy if self.job.destroy => stripes(self).into_iter().map(|(file, stripe)| Op::Destroy { file, stripe }).collect(),
                Phase::Disconnect => (0..self.job.targets.len()).map(|t| Op::Disconnect { t }).collect(),
                _ => Vec::new(),
            };
            self.todo = ops.into();
            self.phases.push((phase_name(self.phase), std::time::Instant::now()));
            if !self.todo.is_empty() || self.phase == Phase::Done {
                break;
            }
        }
        if self.phase == Phase::Done {
            self.report.done = true;
            let mut objs: Vec<_> = self.objects.iter().map(|(&(f, s), &(t, oid))| (f, s, t, oid)).collect();
            objs.sort_unstable();
            self.report.objects = objs;
        }
    }

    fn fail(&mut self, msg: String) {
        warn!(job = %self.job.name, "{msg}");
        self.report.errors += 1;
        if self.report.messages.len() < 20 {
            self.report.messages.push(msg);
        }
    }

    /// Starts RPCs while the window allows; moves to the next phase when one drains.
    pub fn pump(&mut self, node: &mut Node) {
        let timeout = std::time::Duration::from_millis(self.job.timeout_ms.max(1));
        let now = (self.clock)();
        let mut late: Vec<u64> = self.rpcs.iter().filter(|(_, r)| now.saturating_duration_since(r.sent_at) > timeout).map(|(id, _)| *id).collect();
        late.sort_unstable(); // a fixed order keeps simulated runs replayable
        for id in late {
            let rpc = self.rpcs.remove(&id).unwrap();
            self.retry(node, rpc, "timed out");
        }
        // RPCs parked for a reconnect go again once it is over (with the new export handle).
        let ready: Vec<_> = self.parked.iter().filter(|p| !self.reconnecting.contains(&p.0)).cloned().collect();
        self.parked.retain(|p| self.reconnecting.contains(&p.0));
        for (_, op, tries, bulk) in ready {
            self.report.resends += 1;
            if let Err(e) = self.start(node, op, Some((None, tries + 1, bulk))) {
                self.fail(format!("{op:?}: after reconnect: {e}"));
            }
        }
        loop {
            while self.rpcs.len() < self.job.inflight.max(1) {
                let Some(op) = self.todo.pop_front() else { break };
                if let Err(e) = self.start(node, op, None) {
                    self.fail(format!("{op:?}: {e}"));
                }
            }
            if self.rpcs.is_empty() && self.todo.is_empty() && self.parked.is_empty() && self.phase != Phase::Done {
                self.next_phase();
                continue;
            }
            return;
        }
    }

    fn object(&self, file: u64, stripe: u32) -> Result<(usize, u64), String> {
        self.objects.get(&(file, stripe)).copied().ok_or_else(|| format!("file {file} stripe {stripe} has no object"))
    }

    /// Sends `rpc` again with its xid (unlinking the old attempt's buffers), or gives up.
    fn retry(&mut self, node: &mut Node, rpc: Rpc, why: &str) {
        self.retry_as(node, rpc, why, true)
    }

    /// As `retry`; `same_xid: false` makes it a new request (a checksum error was a real,
    /// completed reply that the server remembers, so the redo needs a new xid as in Lustre).
    fn retry_as(&mut self, node: &mut Node, rpc: Rpc, why: &str, same_xid: bool) {
        let Some(rpc) = self.end_attempt(node, rpc, why) else { return };
        self.report.resends += 1;
        let op = rpc.op;
        let xid = same_xid.then_some(rpc.xid);
        if let Err(e) = self.start(node, op, Some((xid, rpc.tries + 1, rpc.bulk))) {
            self.fail(format!("{op:?}: resend: {e}"));
        }
    }

    /// Ends an attempt of `rpc` (unlinking its buffers); `None` if it has had all its tries
    /// (then it counts as failed because of `why`).
    fn end_attempt(&mut self, node: &mut Node, rpc: Rpc, why: &str) -> Option<Rpc> {
        unlink_attempt(node, &rpc);
        if rpc.tries < self.job.max_tries.max(1) {
            return Some(rpc);
        }
        if let Op::Connect { t } = rpc.op {
            self.reconnecting.remove(&t); // parked RPCs go again and fail on their own
        }
        if let Some(b) = rpc.bulk {
            free(node, b);
        }
        self.fail(format!("{:?} xid {}: {why}; gave up after {} tries", rpc.op, rpc.xid, rpc.tries));
        None
    }

    /// The server answered ENOTCONN (it restarted and lost our export): park the RPC, connect
    /// again (once per target), and send it anew when connected — Lustre's reconnect.
    fn reconnect(&mut self, node: &mut Node, rpc: Rpc) {
        if let Op::Disconnect { .. } = rpc.op {
            unlink_attempt(node, &rpc);
            return; // the server already forgot us: that is what we asked for
        }
        let Some(rpc) = self.end_attempt(node, rpc, "not connected") else { return };
        let t = rpc.t;
        // Sent before a reconnect that is now over: it just goes again with the new handle.
        let stale = rpc.handle != self.handles[t];
        if !stale && self.reconnecting.insert(t) {
            warn!(job = %self.job.name, ost = self.job.targets[t].0, "server lost our export (restarted?): reconnecting");
            self.report.reconnects += 1;
            if let Err(e) = self.start(node, Op::Connect { t }, None) {
                self.reconnecting.remove(&t);
                self.fail(format!("reconnect: {e}"));
            }
        }
        self.parked.push((t, rpc.op, rpc.tries, rpc.bulk));
    }

    fn start(&mut self, node: &mut Node, op: Op, again: Option<(Option<u64>, u32, Option<Seg>)>) -> Result<(), String> {
        let n = self.job.targets.len();
        let obdo_of = |oid: u64, t: usize, osc: &Osc| Obdo { valid: valid::FLID | valid::FLGROUP, oid, seq: osc.job.targets[t].0 as u64, ..Default::default() };
        let (t, opc, portal, bufs, bulk): (usize, u32, u32, Vec<Vec<u8>>, Option<(bool, Vec<u8>, u32)>) = match op {
            Op::Connect { t } | Op::Disconnect { t } => {
                let uuid = format!("lustre-OST{:04x}_UUID", self.job.targets[t].0);
                let mut u = uuid.into_bytes();
                u.resize(40, 0);
                let mut c = format!("{}_client_UUID", self.job.name).into_bytes();
                c.resize(40, 0);
                if let Op::Connect { .. } = op {
                    (t, opc::OST_CONNECT, portal::OST_REQUEST, vec![u, c, vec![0; 8], vec![0; 192]], None)
                } else {
                    (t, opc::OST_DISCONNECT, portal::OST_REQUEST, vec![], None)
                }
            }
            Op::Create { file, stripe } => {
                let t = ((file * self.job.stripe_count as u64 + stripe as u64) % n as u64) as usize;
                (t, opc::OST_CREATE, portal::OST_REQUEST, vec![Obdo { valid: valid::FLGROUP, seq: self.job.targets[t].0 as u64, ..Default::default() }.emit()], None)
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
                if self.job.checksum {
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
            Op::Sync { file, stripe } | Op::Getattr { file, stripe, .. } | Op::Destroy { file, stripe } => {
                let (t, oid) = self.object(file, stripe)?;
                let opc = match op {
                    Op::Sync { .. } => opc::OST_SYNC,
                    Op::Getattr { .. } => opc::OST_GETATTR,
                    _ => opc::OST_DESTROY,
                };
                let portal = if opc == opc::OST_SYNC { portal::OST_IO } else { portal::OST_REQUEST };
                (t, opc, portal, vec![obdo_of(oid, t, self).emit()], None)
            }
            Op::Punch { file, stripe, from } => {
                let (t, oid) = self.object(file, stripe)?;
                let b = Obdo { size: from, blocks: u64::MAX, ..obdo_of(oid, t, self) };
                (t, opc::OST_PUNCH, portal::OST_IO, vec![b.emit()], None)
            }
        };
        let (tgt_idx, nid) = self.job.targets[t];
        let _ = tgt_idx;
        let server = ProcessId::new(nid, ProcessId::PID_LUSTRE);
        let (xid, tries, old_bulk) = match again {
            Some((Some(xid), tries, b)) => (xid, tries, b),
            Some((None, tries, b)) => {
                self.next_xid += 128;
                (self.next_xid - 128, tries, b)
            }
            None => {
                self.next_xid += 128;
                (self.next_xid - 128, 1, None)
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let up = user_ptr(TAG_OSC, id);
        let flags = if again.is_some_and(|a| a.0.is_some()) { MSG_RESENT } else { 0 };
        let body = PtlrpcBody { msg_type: PTL_RPC_MSG_REQUEST, version: LUSTRE_OST_VERSION, opc, handle: self.handles[t], flags, ..Default::default() };
        let mut all = vec![body.emit()];
        all.extend(bufs);
        let req = LustreMsg::new(0, all).emit();
        // Reply buffer first, then bulk, then the request (Lustre's order).
        let reply = alloc(node, 4096, None)?;
        let me = node.lnet.me_attach(portal::OSC_REPLY, ProcessId::new(nid, ProcessId::PID_ANY), xid, 0, true, Insert::Tail).map_err(|e| e.to_string())?;
        let rmd = node.lnet.md_attach(me, spec(reply, opt::OP_PUT | opt::MANAGE_REMOTE | opt::TRUNCATE, Some(1), up)).map_err(|e| e.to_string())?;
        self.bufs.insert(rmd, reply);
        let mut mds = vec![rmd];
        let mut bulk_seg = None;
        if let Some((write, data, len)) = bulk {
            let seg = match old_bulk {
                Some(s) if !write => s,
                _ => alloc(node, len as usize, if write { Some(&data) } else { None })?,
            };
            let me = node.lnet.me_attach(portal::OST_BULK, ProcessId::new(nid, ProcessId::PID_ANY), xid, 0, true, Insert::Tail).map_err(|e| e.to_string())?;
            let ops = if write { opt::OP_GET } else { opt::OP_PUT };
            let bmd = node.lnet.md_attach(me, spec(seg, ops, Some(1), up)).map_err(|e| e.to_string())?;
            mds.push(bmd);
            if write {
                self.bufs.insert(bmd, seg);
            } else {
                bulk_seg = Some(seg);
            }
        }
        let rseg = alloc(node, req.len(), Some(&req))?;
        let qmd = node.lnet.md_bind(spec(rseg, 0, Some(1), up), true);
        self.bufs.insert(qmd, rseg);
        node.lnet.put(qmd, false, server, portal, xid, 0, 0).map_err(|e| e.to_string())?;
        self.report.rpcs += 1;
        self.rpcs.insert(id, Rpc { op, t, xid, reply, bulk: bulk_seg, mds, tries, sent_at: (self.clock)(), handle: self.handles[t] });
        Ok(())
    }

    /// Handles an event of one of our MDs; false if it is not ours.
    pub fn on_event(&mut self, node: &mut Node, ev: &Event) -> bool {
        if tag_of(ev) != TAG_OSC {
            return false;
        }
        let id = ev.user_ptr & ((1 << 56) - 1);
        let rpc = self.rpcs.get(&id).map(|r| (r.op, r.xid, r.reply));
        // A reply is read before its buffer goes back to the arena.
        let reply_bytes = match rpc {
            Some((_, xid, reply)) if ev.status == 0 && ev.kind == EventKind::Put && ev.portal == portal::OSC_REPLY && ev.match_bits == xid => {
                Some(node.mem.to_vec(reply.off, ev.mlength as usize).unwrap_or_default())
            }
            _ => None,
        };
        if ev.unlinked {
            if let Some(seg) = self.bufs.remove(&ev.md) {
                free(node, seg);
            }
        }
        let Some((op, xid, _)) = rpc else { return true };
        if ev.status != 0 && ev.kind == EventKind::Send {
            // The request did not get out (peer down or unreachable): resending at once would
            // only spin; the RPC timeout sends it again, as Lustre waits before a resend.
            debug!(job = %self.job.name, "{op:?} xid {xid}: request not sent ({}); resending after the timeout", crate::lnet::errno::name(ev.status));
            return true;
        }
        if ev.status != 0 {
            let rpc = self.rpcs.remove(&id).unwrap();
            let why = format!("{op:?} xid {xid}: {:?} failed with {}", ev.kind, crate::lnet::errno::name(ev.status));
            self.retry(node, rpc, &why);
        } else if let Some(bytes) = reply_bytes {
            let rpc = self.rpcs.remove(&id).unwrap();
            self.finish(node, rpc, &bytes);
        } else {
            return true;
        }
        self.pump(node);
        true
    }

    fn finish(&mut self, node: &mut Node, rpc: Rpc, bytes: &[u8]) {
        let op = rpc.op;
        let msg = match LustreMsg::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                if let Some(b) = rpc.bulk {
                    free(node, b);
                }
                return self.fail(format!("{op:?}: bad reply: {e}"));
            }
        };
        let body = match msg.body() {
            Ok(b) => b,
            Err(e) => return self.fail(format!("{op:?}: bad reply body: {e}")),
        };
        let mut rec = serde_json::json!({"rpc": opc::name(body.opc), "xid": rpc.xid, "ost": self.job.targets[rpc.t].0, "status": body.status});
        // A digest of the bulk data moved (never the bytes themselves).
        let digest = match op {
            Op::Write { file, chunk } => {
                let mut d = vec![0u8; self.chunk(chunk).2 as usize];
                pattern_fill(self.job.seed, file, chunk * self.job.stripe_size as u64, &mut d);
                Some(crc32c(0, &d))
            }
            Op::Read { chunk, .. } => rpc.bulk.and_then(|s| node.mem.to_vec(s.off, self.chunk(chunk).2 as usize).ok()).map(|d| crc32c(0, &d)),
            _ => None,
        };
        if let Some(d) = digest.filter(|_| body.status == 0) {
            rec["data"] = serde_json::json!(format!("{d:08x}"));
        }
        self.trace.push(rec);
        if (body.status == EBADMSG || body.status == crate::lnet::errno::EIO) && matches!(op, Op::Write { .. } | Op::Read { .. }) {
            // The bulk transfer failed (damaged or lost pages): redo it as a new request.
            return self.retry_as(node, rpc, &format!("bulk failed at the server (status {})", body.status), false);
        }
        if body.status == ENOTCONN && !matches!(op, Op::Connect { .. }) {
            return self.reconnect(node, rpc);
        }
        if body.status != 0 {
            if let Some(b) = rpc.bulk {
                free(node, b);
            }
            return self.fail(format!("{op:?} on OST{:04x}: status {}", self.job.targets[rpc.t].0, body.status));
        }
        let obdo = msg.buf(1, OBDO_LEN).and_then(|b| Obdo::parse(b, msg.swapped));
        match op {
            Op::Connect { t } => {
                self.handles[t] = body.handle;
                self.reconnecting.remove(&t);
            }
            Op::Create { file, stripe } => match obdo {
                Ok(o) => {
                    self.objects.insert((file, stripe), (rpc.t, o.oid));
                }
                Err(e) => self.fail(format!("{op:?}: {e}")),
            },
            Op::Write { file, chunk } => {
                let (_, _, len) = self.chunk(chunk);
                let rc = msg.buf(2, 4).map(|b| i32::from_le_bytes(b[..4].try_into().unwrap()));
                match rc {
                    Ok(0) => {
                        self.report.bytes_written += len as u64;
                        self.acked.insert((file, chunk));
                    }
                    other => self.fail(format!("{op:?}: niobuf rc {other:?}")),
                }
            }
            Op::Read { file, chunk } => {
                let (_, _, len) = self.chunk(chunk);
                let seg = rpc.bulk.expect("reads have a bulk buffer");
                let got = node.mem.to_vec(seg.off, len as usize).unwrap_or_default();
                let mut want = vec![0u8; if self.job.compare { len as usize } else { 0 }];
                pattern_fill(self.job.seed, file, chunk * self.job.stripe_size as u64, &mut want);
                let ck = obdo.as_ref().map(|o| (o.valid & valid::FLCKSUM != 0).then_some(o.cksum)).unwrap_or(None);
                let ck_ok = ck.is_some_and(|c| c == crc32c(0, &got));
                if self.job.checksum && ck.is_some() && !ck_ok {
                    // Damaged on the way: read it again (a new request).
                    let rpc = Rpc { bulk: Some(seg), ..rpc };
                    return self.retry_as(node, rpc, "read data failed its checksum", false);
                } else if self.job.compare && got != want {
                    // Wrong data that no checksum caught is a silent corruption; an acknowledged
                    // write that does not read back is a lost write.
                    if self.acked.contains(&(file, chunk)) {
                        self.report.lost_acked_writes += 1;
                        if ck_ok {
                            self.report.silent_corruptions += 1;
                        }
                    }
                    let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                    self.fail(format!("{op:?}: data differs at byte {at} of the chunk"));
                } else {
                    self.report.bytes_verified += len as u64;
                }
                free(node, seg);
            }
            Op::Getattr { want, .. } => match obdo {
                Ok(o) if o.size == want => {}
                Ok(o) => self.fail(format!("{op:?}: size {} (expected {want})", o.size)),
                Err(e) => self.fail(format!("{op:?}: {e}")),
            },
            Op::Sync { .. } | Op::Punch { .. } | Op::Destroy { .. } | Op::Disconnect { .. } => {}
        }
    }
}
