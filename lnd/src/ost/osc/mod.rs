//! The client I/O engine: connects to OSTs, creates the objects of striped files (RAID0 like
//! Lustre), writes them, reads them back and verifies every byte, checks sizes, punches and
//! destroys — as ptlrpc RPCs, many in flight, bulk checksummed with CRC32C.
//!
//! This module holds the job, its report and the plan of phases; `rpc` sends requests and
//! resends them (Lustre's `ptl_send_rpc`, `ptlrpc_set_mbits`, reconnect), `reply` interprets
//! what comes back (`osc_brw_fini_request` and friends).

mod pinger;
mod replay;
mod reply;
mod rpc;
mod state;
mod timeouts;

use crate::lnet::MdHandle;
use crate::mem::Seg;
use crate::node::Node;
use crate::wire::Nid;
use state::{Import, Op, Parked, Rpc};
use std::collections::{HashMap, HashSet, VecDeque};
use tracing::warn;

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
    /// Preallocate each object to its final size (OST_FALLOCATE) before writing it.
    #[serde(default)]
    pub fallocate: bool,
    #[serde(default)]
    pub destroy: bool,
    /// CRC32C on bulk data (Lustre's `checksums=1`).
    #[serde(default = "yes")]
    pub checksum: bool,
    /// Compare the data read back with what was written.
    #[serde(default = "yes")]
    pub compare: bool,
    /// Use these objects (file, stripe, target, oid) instead of creating new ones, e.g. to read
    /// back what an earlier job wrote.
    #[serde(default)]
    pub objects: Option<Vec<(u64, u32, usize, u64)>>,
    /// Write the files (off: only read and check what is there).
    #[serde(default = "yes")]
    pub write: bool,
    /// Chunks an earlier job was told it wrote, as (file, first chunk, end chunk) ranges: one of
    /// them that does not read back is a lost acknowledged write of ours too.
    #[serde(default)]
    pub acked: Vec<(u64, u64, u64)>,
    /// When no reply came within this long, reconnect to that target and resend the RPC (same
    /// xid, MSG_RESENT); also the `pb_timeout` the server gets (in whole seconds, at least 1).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Adaptive timeouts instead of `timeout_ms`: deadlines from the service estimates servers
    /// report, early replies honoured (requests say MSGHDR_AT_SUPPORT).
    #[serde(default)]
    pub at: Option<crate::ptlrpc::at::AtConfig>,
    /// Attempts per RPC (resends and bulk redos) before it counts as failed.
    #[serde(default = "default_tries")]
    pub max_tries: u32,
    /// `obd_timeout`: an import idle for a quarter of it is pinged, so the server does not
    /// evict us (it waits six ping intervals).
    #[serde(default = "default_obd_timeout")]
    pub obd_timeout_ms: u64,
}

fn default_obd_timeout() -> u64 {
    crate::ptlrpc::pinger::OBD_TIMEOUT.as_millis() as u64
}

fn default_tries() -> u32 {
    8
}

fn default_timeout() -> u64 {
    5000
}

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
    /// Requests replayed to a recovering target (changes it had lost in a crash).
    #[serde(default)]
    pub replays: u64,
    /// Early replies received: a busy server moved an RPC's deadline out.
    #[serde(default)]
    pub early_replies: u64,
    /// Chunks whose acknowledged write did not read back.
    pub lost_acked_writes: u64,
    /// Wrong data that passed its checksum.
    pub silent_corruptions: u64,
    /// The objects the job used: (file, stripe, target, oid).
    pub objects: Vec<(u64, u32, usize, u64)>,
    /// The chunks whose write was acknowledged (this job's and those it was given), as
    /// (file, first chunk, end chunk) ranges.
    pub acked: Vec<(u64, u64, u64)>,
}

/// Chunks as (file, first, end) ranges, in order.
pub fn chunk_ranges(chunks: &HashSet<(u64, u64)>) -> Vec<(u64, u64, u64)> {
    let mut v: Vec<(u64, u64)> = chunks.iter().copied().collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for (f, c) in v {
        match out.last_mut() {
            Some((lf, _, end)) if *lf == f && *end == c => *end += 1,
            _ => out.push((f, c, c + 1)),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Create,
    Fallocate,
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
        Phase::Fallocate => "fallocate",
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


/// Where the client places object `stripe` of file `file`: its target's index among the job's
/// `targets` (in OST order), round robin over files and stripes.
pub fn stripe_target(file: u64, stripe: u32, stripe_count: u32, targets: usize) -> usize {
    ((file * stripe_count as u64 + stripe as u64) % targets as u64) as usize
}

/// Bytes object `stripe` holds of a file of `file_size` bytes cut into `stripe_size` chunks
/// dealt round robin to `stripe_count` objects (its chunks lie end to end in it).
pub fn stripe_object_size(file_size: u64, stripe_size: u64, stripe_count: u32, stripe: u32) -> u64 {
    let (sc, s) = (stripe_count.max(1) as u64, stripe as u64);
    let (full, rem) = (file_size / stripe_size, file_size % stripe_size);
    let mut b = (full / sc + u64::from(s < full % sc)) * stripe_size;
    if rem > 0 && s == full % sc {
        b += rem;
    }
    b
}

pub struct Osc {
    pub job: IoJob,
    pub report: IoReport,
    phase: Phase,
    todo: VecDeque<Op>,
    rpcs: HashMap<u64, Rpc>,
    /// Buffers freed when their MD is unlinked.
    bufs: HashMap<MdHandle, Seg>,
    /// One import (connection) per target.
    imports: Vec<Import>,
    objects: HashMap<(u64, u32), (usize, u64)>,
    next_id: u64,
    /// This client's UUID (made at the first connect, unique per job instance).
    uuid: Option<String>,
    pub trace: Vec<serde_json::Value>,
    /// When each phase began (for benchmarks).
    pub phases: Vec<(&'static str, std::time::Instant)>,
    /// The clock RPC timeouts use (virtual under simulation).
    pub clock: crate::Clock,
    /// Chunks whose write was acknowledged.
    acked: HashSet<(u64, u64)>,
    /// RPCs waiting to go again (for a reconnect, or a while after -ENOMEM).
    parked: Vec<Parked>,
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
        let given: HashMap<(u64, u32), (usize, u64)> = job.objects.iter().flatten().map(|&(f, s, t, oid)| ((f, s), (t, oid))).collect();
        let acked = job.acked.iter().flat_map(|&(f, a, b)| (a..b).map(move |c| (f, c))).collect();
        let mut o = Osc { job, report, phase: Phase::Connect, todo: VecDeque::new(), rpcs: HashMap::new(), bufs: HashMap::new(), imports: vec![Import::default(); n], objects: given, next_id: 1, uuid: None, trace: Vec::new(), phases: vec![("connect", std::time::Instant::now())], clock: crate::wall_clock(), acked, parked: Vec::new() };
        o.todo = (0..n).map(|t| Op::Connect { t }).collect();
        Ok(o)
    }

    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// What this job waits for (a stalled run names it): its phase, each RPC in flight (opcode,
    /// target, xid, tries, age) or parked, and the targets it is reconnecting to.
    pub fn waiting(&self) -> serde_json::Value {
        let now = (self.clock)();
        let target = |t: usize| format!("OST{:04x} at {}", self.job.targets[t].0, self.job.targets[t].1);
        let mut in_flight: Vec<&Rpc> = self.rpcs.values().collect();
        in_flight.sort_by_key(|r| r.sent_at);
        let in_flight: Vec<serde_json::Value> = in_flight
            .iter()
            .map(|r| serde_json::json!({"op": r.op.label(), "target": target(r.t), "xid": r.xid, "tries": r.tries, "age_ms": now.saturating_duration_since(r.sent_at).as_millis() as u64}))
            .collect();
        let parked: Vec<serde_json::Value> = self.parked.iter().map(|p| serde_json::json!({"op": p.op.label(), "target": target(p.t), "tries": p.tries})).collect();
        let reconnecting: Vec<String> = self.imports.iter().enumerate().filter(|(_, i)| i.reconnecting).map(|(t, _)| target(t)).collect();
        serde_json::json!({"job": self.job.name, "phase": phase_name(self.phase), "in_flight": in_flight, "parked": parked, "reconnecting": reconnecting, "queued": self.todo.len()})
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
        stripe_object_size(self.job.file_size, self.job.stripe_size as u64, self.job.stripe_count, stripe)
    }

    fn next_phase(&mut self) {
        let stripes = |o: &Osc| -> Vec<(u64, u32)> { o.files().flat_map(|f| (0..o.job.stripe_count).map(move |s| (f, s))).collect() };
        loop {
            self.phase = match self.phase {
                Phase::Connect => Phase::Create,
                Phase::Create => Phase::Fallocate,
                Phase::Fallocate => Phase::Write,
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
                Phase::Fallocate | Phase::Write | Phase::Sync if !self.job.write => Vec::new(),
                Phase::Fallocate if self.job.fallocate => stripes(self).into_iter().map(|(file, stripe)| Op::Fallocate { file, stripe, len: self.object_size(stripe) }).filter(|op| !matches!(op, Op::Fallocate { len: 0, .. })).collect(),
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
            self.report.acked = chunk_ranges(&self.acked);
        }
    }

    fn fail(&mut self, msg: String) {
        warn!(job = %self.job.name, "{msg}");
        self.report.errors += 1;
        if self.report.messages.len() < 20 {
            self.report.messages.push(msg);
        }
    }

    /// Starts RPCs while the window allows; resends overdue ones; moves to the next phase when
    /// one drains.
    pub fn pump(&mut self, node: &mut Node) {
        self.resend_late(node);
        self.send_parked(node);
        self.ping_idle(node);
        loop {
            // Pings use no slot of the window (ptlrpcd sends them, not the I/O engine).
            let pings = self.rpcs.values().filter(|r| matches!(r.op, Op::Ping { .. })).count();
            while self.rpcs.len() - pings < self.job.inflight.max(1) {
                let Some(op) = self.todo.pop_front() else { break };
                // A target being reconnected takes new requests once it is connected again.
                if self.target_of(op).is_some_and(|t| self.imports[t].reconnecting && !matches!(op, Op::Connect { .. })) {
                    self.todo.push_front(op);
                    break;
                }
                if let Err(e) = self.start(node, op, None) {
                    self.fail(format!("{op:?}: {e}"));
                }
            }
            // A phase ends when its RPCs have; a ping in flight holds back only the end.
            let drained = self.rpcs.len() == if self.phase == Phase::Disconnect { 0 } else { pings };
            if drained && self.todo.is_empty() && self.parked.is_empty() && self.phase != Phase::Done {
                self.next_phase();
                continue;
            }
            return;
        }
    }

    fn object(&self, file: u64, stripe: u32) -> Result<(usize, u64), String> {
        self.objects.get(&(file, stripe)).copied().ok_or_else(|| format!("file {file} stripe {stripe} has no object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Object sizes agree with dealing the chunks out one by one (what `object_size` did).
    #[test]
    fn stripe_object_sizes_match_the_chunks_dealt_out() {
        for (size, ss, sc) in [(0u64, 4u64, 1u32), (1, 4, 2), (9, 4, 2), (16, 4, 3), (4 << 20, 1 << 20, 3), (5 * (1 << 20) + 7, 1 << 20, 2)] {
            let mut want = vec![0u64; sc as usize];
            for c in 0..size.div_ceil(ss) {
                want[(c % sc as u64) as usize] += (size - c * ss).min(ss);
            }
            let got: Vec<u64> = (0..sc).map(|s| stripe_object_size(size, ss, sc, s)).collect();
            assert_eq!(got, want, "size {size}, stripe {ss} x {sc}");
        }
    }

    #[test]
    fn acknowledged_chunks_as_ranges() {
        let set: HashSet<(u64, u64)> = [(1, 0), (1, 1), (1, 2), (1, 5), (0, 3), (2, 0)].into_iter().collect();
        assert_eq!(chunk_ranges(&set), vec![(0, 3, 4), (1, 0, 3), (1, 5, 6), (2, 0, 1)]);
        assert!(chunk_ranges(&HashSet::new()).is_empty());
        assert_eq!((0..4u64).map(|f| stripe_target(f, 1, 2, 3)).collect::<Vec<_>>(), [1, 0, 2, 1]);
    }
}
