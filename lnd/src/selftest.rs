//! lnet-selftest-like load (`lst`): ping (LNet GETs of the ping info) and bulk read/write
//! (GET/PUT of `size` bytes against every node's selftest buffer on portal 50), with a number
//! in flight, for a count or a duration; rates, errors and latency percentiles.

use crate::lnet::{opt, Event, EventKind, Insert, MdHandle, MdSpec};
use crate::mem::Seg;
use crate::node::{Node, PING_MATCH_BITS};
use crate::ptlrpc::{tag_of, user_ptr};
use crate::wire::{Nid, ProcessId, LNET_MTU};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// lnet-selftest's test portal.
pub const ST_PORTAL: u32 = 50;
pub const ST_MATCH: u64 = 0x5345_4c46_5445_5354; // "SELFTEST"
pub const TAG_ST: u64 = 3;

/// Posts the buffer every node serves bulk tests from (and into): 1 MiB, remote offsets.
pub fn install_sink(node: &mut Node) -> Result<(), String> {
    let off = node.arena.alloc_top(LNET_MTU as u64).ok_or("no memory for the selftest buffer")?;
    let me = node.lnet.me_attach(ST_PORTAL, ProcessId::ANY, ST_MATCH, 0, false, Insert::Tail).map_err(|e| e.to_string())?;
    let spec = MdSpec { iov: vec![Seg { off, len: LNET_MTU }], options: opt::OP_PUT | opt::OP_GET | opt::MANAGE_REMOTE | opt::TRUNCATE, threshold: None, max_size: 0, user_ptr: 0 };
    node.lnet.md_attach(me, spec).map_err(|e| e.to_string())?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StTest {
    Ping,
    BrwRead,
    BrwWrite,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StJob {
    pub name: String,
    pub test: StTest,
    /// The nodes this client tests against, in turn.
    pub targets: Vec<Nid>,
    #[serde(default = "default_size")]
    pub size: u32,
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Stop after this many operations...
    #[serde(default)]
    pub count: Option<u64>,
    /// ...or after this long.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// An operation with no answer after this long counts as an error and is given up, as
    /// lnet-selftest's RPC timeout: a lost message must not stall the test.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    5000
}

fn default_size() -> u32 {
    4096
}
fn one() -> usize {
    1
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StReport {
    pub name: String,
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    pub rpc_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub done: bool,
    /// Operations given up after `timeout_ms` (counted among the errors too).
    pub timeouts: u64,
}

pub struct StEngine {
    pub job: StJob,
    buf: Seg,
    /// Operations in flight: when each started (on the wall clock, for its latency, and on
    /// `clock`, for its timeout), and its MD.
    inflight: HashMap<u64, (Instant, Instant, MdHandle)>,
    next: u64,
    started: Option<Instant>,
    issued: u64,
    lat_us: Vec<u32>,
    pub report: StReport,
    /// The clock operation timeouts use (virtual under simulation, where a lost message must
    /// time out however fast the simulator runs). Durations, rates and latencies are on the
    /// wall clock, as lnet-selftest measures them.
    pub clock: crate::Clock,
}

impl StEngine {
    pub fn new(node: &mut Node, job: StJob) -> Result<StEngine, String> {
        if job.targets.is_empty() || job.concurrency == 0 || job.size > LNET_MTU {
            return Err(format!("selftest `{}`: needs targets, concurrency ≥ 1 and size ≤ 1 MiB", job.name));
        }
        if job.count.is_none() && job.duration_ms.is_none() {
            return Err(format!("selftest `{}`: give a count or a duration", job.name));
        }
        let len = job.size.max(256);
        let off = node.arena.alloc(len as u64).ok_or("no memory for the selftest buffer")?;
        node.mem.fill(off, len as u64, 0xa5).map_err(|e| e.to_string())?;
        let report = StReport { name: job.name.clone(), ..Default::default() };
        Ok(StEngine { job, buf: Seg { off, len }, inflight: HashMap::new(), next: 1, started: None, issued: 0, lat_us: Vec::new(), report, clock: crate::wall_clock() })
    }

    fn stopping(&self) -> bool {
        let by_count = self.job.count.is_some_and(|c| self.issued >= c);
        let by_time = match (self.job.duration_ms, self.started) {
            (Some(d), Some(t)) => t.elapsed() >= Duration::from_millis(d),
            _ => false,
        };
        by_count || by_time
    }

    pub fn done(&self) -> bool {
        self.report.done
    }

    /// Keeps `concurrency` operations in flight until the count or time is up.
    pub fn pump(&mut self, node: &mut Node) {
        let now = (self.clock)();
        self.started.get_or_insert_with(Instant::now);
        self.expire(node, now);
        while self.inflight.len() < self.job.concurrency && !self.stopping() {
            let id = self.next;
            self.next += 1;
            let target = ProcessId::new(self.job.targets[(self.issued as usize) % self.job.targets.len()], ProcessId::PID_LUSTRE);
            self.issued += 1;
            let up = user_ptr(TAG_ST, id);
            let r = match self.job.test {
                StTest::Ping => {
                    let md = node.lnet.md_bind(MdSpec { iov: vec![Seg { off: self.buf.off, len: 256 }], options: opt::TRUNCATE, threshold: Some(2), max_size: 0, user_ptr: up }, true);
                    node.lnet.get(md, target, 0, PING_MATCH_BITS, 0).map(|_| md)
                }
                StTest::BrwRead => {
                    let md = node.lnet.md_bind(MdSpec { iov: vec![Seg { off: self.buf.off, len: self.job.size }], options: 0, threshold: Some(2), max_size: 0, user_ptr: up }, true);
                    node.lnet.get(md, target, ST_PORTAL, ST_MATCH, 0).map(|_| md)
                }
                StTest::BrwWrite => {
                    let md = node.lnet.md_bind(MdSpec { iov: vec![Seg { off: self.buf.off, len: self.job.size }], options: 0, threshold: Some(2), max_size: 0, user_ptr: up }, true);
                    node.lnet.put(md, true, target, ST_PORTAL, ST_MATCH, 0, 0).map(|_| md)
                }
            };
            match r {
                Ok(md) => {
                    self.inflight.insert(id, (Instant::now(), now, md));
                }
                Err(_) => self.report.errors += 1,
            }
        }
        if self.inflight.is_empty() && self.stopping() && !self.report.done {
            self.finish();
        }
    }

    /// Gives up the operations older than the timeout (their MDs unlinked: a late answer finds
    /// nothing), each an error.
    fn expire(&mut self, node: &mut Node, now: Instant) {
        let limit = Duration::from_millis(self.job.timeout_ms.max(1));
        let mut late: Vec<(u64, MdHandle)> = self.inflight.iter().filter(|(_, (_, t, _))| now.saturating_duration_since(*t) > limit).map(|(id, (_, _, md))| (*id, *md)).collect();
        late.sort_unstable_by_key(|l| l.0); // a fixed order keeps simulated runs replayable
        for (id, md) in late {
            self.inflight.remove(&id);
            let _ = node.lnet.md_unlink(md);
            self.report.errors += 1;
            self.report.timeouts += 1;
        }
    }

    /// Handles one of our events; false if it is not ours.
    pub fn on_event(&mut self, node: &mut Node, ev: &Event) -> bool {
        if tag_of(ev) != TAG_ST {
            return false;
        }
        let id = ev.user_ptr & ((1 << 56) - 1);
        let completes = ev.status != 0 || matches!(ev.kind, EventKind::Reply | EventKind::Ack);
        if !completes {
            return true;
        }
        if let Some((t0, _, _)) = self.inflight.remove(&id) {
            if ev.status != 0 {
                self.report.errors += 1;
            } else {
                self.report.ops += 1;
                self.report.bytes += ev.mlength;
                self.lat_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
        }
        self.pump(node);
        true
    }

    /// The current rates (for live stats).
    pub fn snapshot(&mut self) -> StReport {
        let secs = self.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0).max(1e-9);
        let mut r = self.report.clone();
        r.secs = secs;
        r.mb_per_s = r.bytes as f64 / secs / 1e6;
        r.rpc_per_s = r.ops as f64 / secs;
        r
    }

    fn finish(&mut self) {
        let mut r = self.snapshot();
        self.lat_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.lat_us.is_empty() {
                return 0.0;
            }
            let i = ((self.lat_us.len() as f64 * p).ceil() as usize).clamp(1, self.lat_us.len()) - 1;
            self.lat_us[i] as f64
        };
        r.p50_us = pct(0.50);
        r.p99_us = pct(0.99);
        r.p999_us = pct(0.999);
        r.done = true;
        self.report = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lnet::fault::FaultRule;
    use std::sync::{Arc, Mutex};

    /// A brw_write whose PUTs are all dropped (no ACK ever comes) ends anyway: each operation
    /// is given up after its timeout, on the engine's clock, as an error; the test is done.
    #[test]
    fn lost_operations_time_out_instead_of_stalling_the_test() {
        let mem = crate::mem::Mem::heap(4 << 20);
        let arena = crate::mem::Arena::new(mem.len() as u64, 64);
        let mut node = Node { lnet: crate::lnet::Lnet::new(12345, 42, 0), lnds: vec![Box::new(crate::lolnd::LoLnd::new(mem.clone()))], mem, arena, xids: crate::ptlrpc::xid::Xids::new(0) };
        install_sink(&mut node).unwrap();
        node.lnet.add_fault_rule(FaultRule { portal: Some(ST_PORTAL), msg_type: Some("PUT".into()), interval: Some(1), ..Default::default() }).unwrap();
        let job = StJob { name: "st".into(), test: StTest::BrwWrite, targets: vec![Nid::LO_0], size: 4096, concurrency: 2, count: Some(3), duration_ms: None, timeout_ms: 300 };
        let mut st = StEngine::new(&mut node, job).unwrap();
        let t = Arc::new(Mutex::new(Instant::now()));
        let now = t.clone();
        st.clock = Arc::new(move || *now.lock().unwrap());
        let spin = |st: &mut StEngine, node: &mut Node| {
            for _ in 0..10 {
                node.step();
                while let Some(e) = node.poll_event() {
                    st.on_event(node, &e);
                }
                st.pump(node);
            }
        };
        spin(&mut st, &mut node);
        assert!(!st.done(), "two PUTs in flight, unanswered");
        *t.lock().unwrap() += Duration::from_millis(301);
        spin(&mut st, &mut node);
        *t.lock().unwrap() += Duration::from_millis(301);
        spin(&mut st, &mut node);
        assert!(st.done(), "every operation given up: {:?}", st.report);
        assert_eq!((st.report.ops, st.report.errors, st.report.timeouts), (0, 3, 3));
    }
}
