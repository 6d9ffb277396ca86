//! Shared test driver: nodes in one process, stepped round-robin until a condition holds.
#![allow(dead_code)]

use lnd::lnet::{Event, EventKind, MdSpec};
use lnd::mem::Seg;
use lnd::node::{Node, NodeBuilder};
use lnd::sock::io::ThreadIo;
use lnd::sock::{PortPolicy, SockConfig};
use lnd::wire::{Nid, ProcessId};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn port() -> u16 {
    // 988 is privileged; tests run as root in CI, elsewhere use an unprivileged stand-in.
    if unsafe { libc::geteuid() } == 0 { 988 } else { 10988 }
}

/// Root tests the default (secure) port rules; elsewhere the explicit unprivileged mode.
pub fn sock_cfg() -> SockConfig {
    let ports = if unsafe { libc::geteuid() } == 0 { PortPolicy::Secure } else { PortPolicy::Unprivileged };
    SockConfig { port: port(), ports, ..Default::default() }
}

/// Logs to the test's output when `LNETLAB_LOG` is set (e.g. `LNETLAB_LOG=debug`).
pub fn init_log() {
    if std::env::var("LNETLAB_LOG").is_ok() {
        let _ = lnd::daemon::init_logging(None);
    }
}

pub fn tcp_io() -> Box<ThreadIo> {
    init_log();
    Box::new(ThreadIo::new(Arc::new(|| {})))
}

pub fn nid(s: &str) -> Nid {
    s.parse().unwrap()
}

pub fn pid(s: &str) -> ProcessId {
    ProcessId::new(nid(s), 12345)
}

/// A TCP-only node.
pub fn tcp_node(n: &str, incarnation: u64) -> Node {
    let mut b = NodeBuilder::new(12345, incarnation);
    b.tcp(nid(n), tcp_io(), sock_cfg()).mem_size(8 << 20);
    b.build().unwrap()
}

pub struct World {
    pub nodes: Vec<Node>,
    pub events: Vec<Vec<Event>>,
}

impl World {
    pub fn new(nodes: Vec<Node>) -> World {
        let n = nodes.len();
        World { nodes, events: vec![Vec::new(); n] }
    }

    /// Steps every node until `done` says so (panics after TIMEOUT).
    pub fn run_until(&mut self, mut done: impl FnMut(&World) -> bool) {
        let t0 = Instant::now();
        loop {
            let mut any = false;
            for (i, n) in self.nodes.iter_mut().enumerate() {
                any |= n.step();
                while let Some(e) = n.poll_event() {
                    self.events[i].push(e);
                    any = true;
                }
            }
            if done(self) {
                return;
            }
            assert!(t0.elapsed() < TIMEOUT, "timed out; events so far: {:#?}", self.events);
            if !any {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Runs until node `i` has an event of `kind`; returns and removes that event.
    pub fn wait_event(&mut self, i: usize, kind: EventKind) -> Event {
        self.run_until(|w| w.events[i].iter().any(|e| e.kind == kind));
        let at = self.events[i].iter().position(|e| e.kind == kind).unwrap();
        self.events[i].remove(at)
    }

    pub fn take(&mut self, i: usize) -> Vec<Event> {
        std::mem::take(&mut self.events[i])
    }

    /// Allocates and fills a buffer in node `i`'s memory.
    pub fn buf(&mut self, i: usize, data: &[u8]) -> Seg {
        let n = &mut self.nodes[i];
        let off = n.arena.alloc(data.len() as u64).expect("test memory");
        n.mem.write(off, data).unwrap();
        Seg { off, len: data.len() as u32 }
    }

    pub fn read(&self, i: usize, s: Seg) -> Vec<u8> {
        self.nodes[i].mem.to_vec(s.off, s.len as usize).unwrap()
    }

    pub fn stat(&self, i: usize, lnd: usize, key: &str) -> u64 {
        self.nodes[i].lnds[lnd].stats()[key].as_u64().unwrap_or_else(|| panic!("no stat {key}"))
    }
}

pub fn md(seg: Seg, options: u32, threshold: Option<u32>) -> MdSpec {
    MdSpec { iov: vec![seg], options, threshold, max_size: 0, user_ptr: 0 }
}

pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + i / 253) as u8) ^ seed).collect()
}
pub mod crash;
pub mod ost;
