//! An OSS that loses power in the middle of a job's writes: what its OSTs had committed
//! survives, the client reconnects to the restarted OSS and replays what was lost.

use super::*;
use lnd::dev::inproc::InProcFabric;
use lnd::dmalnd::DmaLndConfig;
use lnd::node::Node;
use lnd::ost::osc::{IoReport, Osc};
use lnd::ost::oss::Oss;
use lnd::ost::store::Ost;
use std::time::{Duration, Instant};

/// What a crashed run saw.
pub struct Crashed {
    /// Each client's report.
    pub reports: Vec<IoReport>,
    /// Writes the client had acknowledged and the OSS had not committed when it crashed.
    pub uncommitted_at_crash: usize,
    /// The objects' contents (CRC32C of each) just before the crash and right after it.
    pub before_crash: Vec<u32>,
    pub after_crash: Vec<u32>,
    /// Requests the restarted OSS served as replays, and their (OST, transno) in the order served.
    pub oss_replays: u64,
    pub replayed: Vec<(u64, u64)>,
}

/// CRC32C of each object's bytes (ids from 1; the job makes fewer than 64).
fn contents(o: &Ost) -> Vec<u32> {
    (1..64).filter(|&oid| o.exists(oid)).map(|oid| lnd::ptlrpc::wire::crc32c(0, &o.read(oid, 0, 64 << 20).unwrap())).collect()
}

fn oss_node(fab: &InProcFabric, incarnation: u64) -> Node {
    Node::with_dma(fab.attach(1, 64 << 20).unwrap(), nid("1@dma"), 12345, incarnation, DmaLndConfig::default())
}

fn start_oss(node: &mut Node, osts: Vec<Ost>) -> Oss {
    let mut oss = Oss::start(node, osts).unwrap();
    oss.commit_interval = Duration::from_secs(3600); // only the test and OST_SYNC commit
    oss
}

/// One round: every node steps, events go to the OSS (node 0) or client `i - 1`.
fn step(nodes: &mut [Node], oss: &mut Oss, oscs: &mut [Osc], replayed: &mut Vec<(u64, u64)>) -> bool {
    let mut any = false;
    for (i, n) in nodes.iter_mut().enumerate() {
        any |= n.step();
        while let Some(e) = n.poll_event() {
            any = true;
            if i == 0 {
                oss.on_event(n, &e);
            } else {
                oscs[i - 1].on_event(n, &e);
            }
        }
    }
    for (i, o) in oscs.iter_mut().enumerate() {
        o.pump(&mut nodes[i + 1]);
    }
    oss.tick(&mut nodes[0]);
    for r in oss.trace.drain(..) {
        if r.get("replay").is_some() {
            replayed.push((r["ost"].as_u64().unwrap(), r["transno"].as_u64().unwrap()));
        }
    }
    any
}

/// `clients` clients each write four striped files over two OSTs; once their objects are
/// committed and half their data is acknowledged, the OSS crashes (power loss) and comes back on
/// the same address with a new incarnation; the jobs go on to read back and verify.
pub fn crash_during_writes(clients: usize) -> Crashed {
    crash_when(clients, &|oscs, total| oscs.iter().map(|o| o.report.bytes_written).sum::<u64>() >= total / 2)
}

/// As `crash_during_writes`, the crash coming once `when(clients, total bytes)` holds. The
/// restarted OSS must end its recovery and forget every client (they all disconnect at the end).
pub fn crash_when(clients: usize, when: &dyn Fn(&[Osc], u64) -> bool) -> Crashed {
    crash_then(clients, when, &|_| {})
}

/// As [`crash_when`], with `after` applied to the nodes (the OSS's first) once the OSS is back.
#[allow(dead_code)] // (each test file uses part of `common`)
pub fn crash_then(clients: usize, when: &dyn Fn(&[Osc], u64) -> bool, after: &dyn Fn(&mut [Node])) -> Crashed {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let fab = InProcFabric::new(71);
    let mut nodes = vec![oss_node(&fab, 1)];
    for c in 0..clients as u32 {
        nodes.push(Node::with_dma(fab.attach(2 + c, 32 << 20).unwrap(), nid(&format!("{}@dma", 2 + c)), 12345, 2 + c as u64, DmaLndConfig::default()));
    }
    let open = |i: u32| Ost::open(i, dir.path().join(format!("ost{i}")), 64 << 20).unwrap();
    let mut oss = start_oss(&mut nodes[0], vec![open(0), open(1)]);
    let mut oscs: Vec<Osc> = (0..clients as u64).map(|c| Osc::new(lnd::ost::osc::IoJob { files: 4, inflight: 2, timeout_ms: 300, ..super::ost::job(&format!("crashed{c}"), 10 * c) }).unwrap()).collect();
    let total = 4 * oscs[0].job.file_size * clients as u64;
    for (i, o) in oscs.iter_mut().enumerate() {
        o.pump(&mut nodes[i + 1]);
    }
    let t0 = Instant::now();
    let mut committed = false;
    let mut replayed = Vec::new();
    loop {
        assert!(t0.elapsed() < TIMEOUT, "the writes did not get half way: {:?}", oscs.iter().map(|o| &o.report).collect::<Vec<_>>());
        if !step(&mut nodes, &mut oss, &mut oscs, &mut replayed) {
            std::thread::sleep(Duration::from_micros(200));
        }
        if !committed && oss.ost(0).unwrap().objects() + oss.ost(1).unwrap().objects() == 8 * clients {
            oss.commit(); // the objects are on disk
            committed = true;
        }
        if when(&oscs, total) {
            break;
        }
    }
    let uncommitted_at_crash = oscs.iter().map(|o| o.uncommitted()).sum();
    eprintln!("crash: uncommitted bytes {} {}; {uncommitted_at_crash} changes the clients keep", oss.ost(0).unwrap().uncommitted_bytes(), oss.ost(1).unwrap().uncommitted_bytes());
    let before_crash = [0, 1].iter().flat_map(|&i| contents(oss.ost(i).unwrap())).collect();
    // Power loss: the OSS node and its memory are gone; the OSTs keep what was committed.
    let osts = oss.crash().unwrap();
    let after_crash = osts.iter().flat_map(contents).collect();
    drop(nodes.remove(0));
    nodes.insert(0, oss_node(&fab, 3));
    let mut oss = start_oss(&mut nodes[0], osts);
    assert!(oss.in_recovery(0) && oss.in_recovery(1), "the OSTs knew a client: they recover");
    after(&mut nodes);
    while !oscs.iter().all(|o| o.done()) {
        assert!(t0.elapsed() < TIMEOUT, "the jobs did not finish after the crash: {:?}", oscs.iter().map(|o| &o.report).collect::<Vec<_>>());
        if !step(&mut nodes, &mut oss, &mut oscs, &mut replayed) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert!(!oss.in_recovery(0) && !oss.in_recovery(1), "recovery never ended");
    assert!(oss.ost(0).unwrap().clients().is_empty() && oss.ost(1).unwrap().clients().is_empty(), "every client said goodbye");
    Crashed { reports: oscs.iter().map(|o| o.report.clone()).collect(), uncommitted_at_crash, before_crash, after_crash, oss_replays: oss.replays, replayed }
}
