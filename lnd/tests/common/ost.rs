//! An OSS and its clients in one process over the in-process DMA fabric, plus a raw ptlrpc
//! client that sends hand-made requests (for protocol tests an honest client never sends).

use super::*;
use lnd::dev::inproc::InProcFabric;
use lnd::dmalnd::DmaLndConfig;
use lnd::lnet::{opt, Event, EventKind, Insert, MdHandle, MdSpec};
use lnd::mem::Seg;
use lnd::node::Node;
use lnd::ost::osc::{IoJob, IoReport, Osc};
use lnd::ost::oss::Oss;
use lnd::ost::store::Ost;
use lnd::ptlrpc::wire::*;
use lnd::wire::ProcessId;
use std::time::{Duration, Instant};

/// How long a raw request waits for its reply.
const W: Duration = Duration::from_secs(2);

pub const OSS_NID: &str = "1@dma";

pub fn job(name: &str, first_file: u64) -> IoJob {
    IoJob {
        name: name.into(),
        targets: vec![(0, nid(OSS_NID)), (1, nid(OSS_NID))],
        files: 2,
        file_size: 2 * (1 << 20) + 12345,
        stripe_size: 1 << 20,
        stripe_count: 2,
        seed: 42,
        first_file,
        inflight: 8,
        verify: true,
        punch: false,
        fallocate: false,
        destroy: false,
        checksum: true,
        compare: true,
        objects: None,
        write: true,
        acked: Vec::new(),
        timeout_ms: 5000,
        at: None,
        max_tries: 8,
        obd_timeout_ms: 100_000,
    }
}

/// What a raw request moves in bulk: data the server GETs (a WRITE), or a sink of this many
/// bytes it PUTs into (a READ); on these match bits.
pub enum Bulk {
    Source(Vec<u8>, u64),
    Sink(u32, u64),
}

/// A reply to a raw request, and for a READ what landed in the sink (bytes, PUT mlength).
#[derive(Debug)]
pub struct Reply {
    pub msg: LustreMsg,
    pub body: PtlrpcBody,
    pub sunk: Option<(Vec<u8>, u64)>,
}

impl Reply {
    pub fn obdo(&self) -> Obdo {
        Obdo::parse(self.msg.buf(1, OBDO_LEN).unwrap(), false).unwrap()
    }
}

/// Node 0 the OSS (two OSTs), node 1 an honest client, node 2 a raw client.
pub struct Rig {
    pub nodes: Vec<Node>,
    pub oss: Oss,
    pub dir: tempfile::TempDir,
    /// Events of the raw client's MDs.
    pub raw_events: Vec<Event>,
    /// Every event the honest client's node saw (for checks on match bits).
    pub client_events: Vec<Event>,
    pub oscs: Vec<(usize, Osc)>,
    /// The LNet clock's origin (delay rules hold messages on it).
    pub t0: Instant,
}

impl Rig {
    pub fn new(fabric_seed: u64) -> Rig {
        init_log();
        let dir = tempfile::tempdir().unwrap();
        let fab = InProcFabric::new(fabric_seed);
        let mut nodes: Vec<Node> = [1u32, 2, 5].iter().map(|&a| Node::with_dma(fab.attach(a, 32 << 20).unwrap(), nid(&format!("{a}@dma")), 12345, a as u64, DmaLndConfig::default())).collect();
        let osts = vec![Ost::open(0, dir.path().join("ost0"), 64 << 20).unwrap(), Ost::open(1, dir.path().join("ost1"), 64 << 20).unwrap()];
        let oss = Oss::start(&mut nodes[0], osts).unwrap();
        Rig { nodes, oss, dir, raw_events: Vec::new(), client_events: Vec::new(), oscs: Vec::new(), t0: Instant::now() }
    }

    /// One round: every node steps, events go to their owners.
    pub fn step(&mut self) -> bool {
        let mut any = false;
        let now = self.t0.elapsed().as_millis() as u64;
        for i in 0..self.nodes.len() {
            self.nodes[i].lnet.set_time_ms(now);
            any |= self.nodes[i].step();
            while let Some(e) = self.nodes[i].poll_event() {
                any = true;
                let n = &mut self.nodes[i];
                if i == 0 {
                    self.oss.on_event(n, &e);
                } else if i == 2 {
                    self.raw_events.push(e);
                } else {
                    self.client_events.push(e.clone());
                    for (ci, o) in self.oscs.iter_mut() {
                        if *ci == i && o.on_event(n, &e) {
                            break;
                        }
                    }
                }
            }
        }
        for (ci, o) in self.oscs.iter_mut() {
            o.pump(&mut self.nodes[*ci]);
        }
        self.oss.tick(&mut self.nodes[0]);
        any
    }

    /// Runs `jobs` on the honest client (node 1) until all are done; returns their reports.
    pub fn run_jobs(&mut self, jobs: Vec<IoJob>) -> Vec<IoReport> {
        for j in jobs {
            let mut o = Osc::new(j).unwrap();
            o.pump(&mut self.nodes[1]);
            self.oscs.push((1, o));
        }
        let t0 = Instant::now();
        while !self.oscs.iter().all(|(_, o)| o.done()) {
            assert!(t0.elapsed() < Duration::from_secs(30), "I/O did not finish: {:?}", self.oscs.iter().map(|o| &o.1.report).collect::<Vec<_>>());
            if !self.step() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        std::mem::take(&mut self.oscs).into_iter().map(|(_, o)| o.report).collect()
    }

    /// Steps for about `d` (wall clock).
    pub fn idle_for(&mut self, d: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            if !self.step() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    fn raw_buf(&mut self, data: &[u8], len: usize) -> Seg {
        let n = &mut self.nodes[2];
        let off = n.arena.alloc(len.max(1) as u64).expect("raw client memory");
        n.mem.write(off, data).unwrap();
        Seg { off, len: len as u32 }
    }

    /// Sends a raw request from node 2 on `portal` with `xid`; returns the reply if one comes
    /// within `wait`.
    pub fn raw(&mut self, portal: u32, xid: u64, body: PtlrpcBody, bufs: Vec<Vec<u8>>, bulk: Option<Bulk>, wait: Duration) -> Option<Reply> {
        let oss = ProcessId::new(nid(OSS_NID), ProcessId::PID_LUSTRE);
        let reply = self.raw_buf(&[], 8192);
        let n = &mut self.nodes[2];
        let me = n.lnet.me_attach(portal::OSC_REPLY, ProcessId::ANY, xid, 0, true, Insert::Tail).unwrap();
        let rmd = n.lnet.md_attach(me, MdSpec { iov: vec![reply], options: opt::OP_PUT | opt::TRUNCATE, threshold: Some(1), max_size: 0, user_ptr: 0 }).unwrap();
        let mut bmd: Option<(MdHandle, Seg)> = None;
        match bulk {
            Some(Bulk::Source(data, mbits)) => {
                let s = self.raw_buf(&data, data.len());
                let n = &mut self.nodes[2];
                let me = n.lnet.me_attach(portal::OST_BULK, ProcessId::ANY, mbits, 0, true, Insert::Tail).unwrap();
                bmd = Some((n.lnet.md_attach(me, MdSpec { iov: vec![s], options: opt::OP_GET, threshold: Some(1), max_size: 0, user_ptr: 0 }).unwrap(), s));
            }
            Some(Bulk::Sink(len, mbits)) => {
                let s = self.raw_buf(&vec![0xee; len as usize], len as usize);
                let n = &mut self.nodes[2];
                let me = n.lnet.me_attach(portal::OST_BULK, ProcessId::ANY, mbits, 0, true, Insert::Tail).unwrap();
                bmd = Some((n.lnet.md_attach(me, MdSpec { iov: vec![s], options: opt::OP_PUT, threshold: Some(1), max_size: 0, user_ptr: 0 }).unwrap(), s));
            }
            None => {}
        }
        let mut all = vec![body.emit()];
        all.extend(bufs);
        let req = LustreMsg::new(0, all).emit();
        let q = self.raw_buf(&req, req.len());
        let n = &mut self.nodes[2];
        let qmd = n.lnet.md_bind(MdSpec { iov: vec![q], options: 0, threshold: Some(1), max_size: 0, user_ptr: 0 }, true);
        n.lnet.put(qmd, false, oss, portal, xid, 0, 0).unwrap();
        let t0 = Instant::now();
        let mut got = None;
        while t0.elapsed() < wait && got.is_none() {
            if !self.step() {
                std::thread::sleep(Duration::from_micros(200));
            }
            got = self.raw_events.iter().find(|e| e.md == rmd && e.kind == EventKind::Put).cloned();
        }
        let n = &mut self.nodes[2];
        let sunk = bmd.and_then(|(md, s)| {
            let ev = self.raw_events.iter().find(|e| e.md == md && e.kind == EventKind::Put)?;
            Some((n.mem.to_vec(s.off, ev.mlength as usize).unwrap(), ev.mlength))
        });
        if let Some((md, _)) = bmd {
            let _ = n.lnet.md_unlink(md);
        }
        let _ = n.lnet.md_unlink(rmd);
        let ev = got?;
        let bytes = n.mem.to_vec(reply.off, ev.mlength as usize).unwrap();
        let msg = LustreMsg::parse(&bytes).unwrap();
        let body = msg.body().unwrap();
        Some(Reply { msg, body, sunk })
    }
}

/// A request body for the raw client.
pub fn req(opc: u32, handle: u64, last_xid: u64) -> PtlrpcBody {
    PtlrpcBody { msg_type: PTL_RPC_MSG_REQUEST, version: LUSTRE_OST_VERSION, opc, handle, last_xid, conn_cnt: 1, timeout: 1, ..Default::default() }
}

/// OST_CONNECT buffers for OST `ost` from client `uuid`.
pub fn connect_bufs(ost: u32, uuid: &str) -> Vec<Vec<u8>> {
    let mut t = format!("lustre-OST{ost:04x}_UUID").into_bytes();
    t.resize(40, 0);
    let mut c = uuid.as_bytes().to_vec();
    c.resize(40, 0);
    vec![t, c, vec![0; 8], vec![0; 192]]
}

pub fn obdo(oid: u64) -> Obdo {
    Obdo { valid: valid::FLID | valid::FLGROUP, oid, ..Default::default() }
}

/// BRW buffers: body, one ioobj, one niobuf.
pub fn brw_bufs(body: Obdo, offset: u64, len: u32, flags: u32) -> Vec<Vec<u8>> {
    vec![body.emit(), IoObj { oid: body.oid, seq: body.seq, max_brw: 0, bufcnt: 1 }.emit(), NioBuf { offset, len, flags }.emit()]
}

/// Connects the raw client to OST `ost`; returns the export handle.
pub fn connect(r: &mut Rig, ost: u32, uuid: &str, xid: u64) -> u64 {
    connect_n(r, ost, uuid, xid, 1)
}

/// As `connect`, with the connection count `conn_cnt`.
pub fn connect_n(r: &mut Rig, ost: u32, uuid: &str, xid: u64, conn_cnt: u32) -> u64 {
    let rep = r.raw(portal::OST_REQUEST, xid, PtlrpcBody { conn_cnt, ..req(opc::OST_CONNECT, 0, 0) }, connect_bufs(ost, uuid), None, W).expect("connect reply");
    assert_eq!(rep.body.status, 0, "{rep:?}");
    rep.body.handle
}

pub fn create(r: &mut Rig, h: u64, xid: u64) -> u64 {
    let rep = r.raw(portal::OST_REQUEST, xid, req(opc::OST_CREATE, h, xid - 1), vec![obdo(0).emit()], None, W).expect("create reply");
    assert_eq!(rep.body.status, 0, "{rep:?}");
    rep.obdo().oid
}
