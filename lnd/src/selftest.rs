//! lnet-selftest-like load (`lst`): ping (LNet GETs of the ping info) and bulk read/write
//! (GET/PUT of `size` bytes against every node's selftest buffer on portal 50), with a number
//! in flight, for a count or a duration; rates, errors and latency percentiles.

use crate::lnet::{opt, Event, EventKind, Insert, MdSpec};
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
}

pub struct StEngine {
    pub job: StJob,
    buf: Seg,
    inflight: HashMap<u64, Instant>,
    next: u64,
    started: Option<Instant>,
    issued: u64,
    lat_us: Vec<u32>,
    pub report: StReport,
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
        Ok(StEngine { job, buf: Seg { off, len }, inflight: HashMap::new(), next: 1, started: None, issued: 0, lat_us: Vec::new(), report })
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
        self.started.get_or_insert_with(Instant::now);
        while self.inflight.len() < self.job.concurrency && !self.stopping() {
            let id = self.next;
            self.next += 1;
            let target = ProcessId::new(self.job.targets[(self.issued as usize) % self.job.targets.len()], ProcessId::PID_LUSTRE);
            self.issued += 1;
            let up = user_ptr(TAG_ST, id);
            let r = match self.job.test {
                StTest::Ping => {
                    let md = node.lnet.md_bind(MdSpec { iov: vec![Seg { off: self.buf.off, len: 256 }], options: opt::TRUNCATE, threshold: Some(2), max_size: 0, user_ptr: up }, true);
                    node.lnet.get(md, target, 0, PING_MATCH_BITS, 0).map(|_| ())
                }
                StTest::BrwRead => {
                    let md = node.lnet.md_bind(MdSpec { iov: vec![Seg { off: self.buf.off, len: self.job.size }], options: 0, threshold: Some(2), max_size: 0, user_ptr: up }, true);
                    node.lnet.get(md, target, ST_PORTAL, ST_MATCH, 0).map(|_| ())
                }
                StTest::BrwWrite => {
                    let md = node.lnet.md_bind(MdSpec { iov: vec![Seg { off: self.buf.off, len: self.job.size }], options: 0, threshold: Some(2), max_size: 0, user_ptr: up }, true);
                    node.lnet.put(md, true, target, ST_PORTAL, ST_MATCH, 0, 0).map(|_| ())
                }
            };
            match r {
                Ok(()) => {
                    self.inflight.insert(id, Instant::now());
                }
                Err(_) => self.report.errors += 1,
            }
        }
        if self.inflight.is_empty() && self.stopping() && !self.report.done {
            self.finish();
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
        if let Some(t0) = self.inflight.remove(&id) {
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
