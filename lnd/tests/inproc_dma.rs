//! Two nodes on an in-process DMA fabric: every DMA LND path, data and events byte for byte.

use lnd::dev::inproc::InProcFabric;
use lnd::dev::{DmaDevice, Desc, Op};
use lnd::dmalnd::DmaLndConfig;
use lnd::lnet::{errno, opt, Event, EventKind, Insert, MdHandle, MdSpec};
use lnd::mem::{Mem, Seg};
use lnd::node::Node;
use lnd::wire::{Nid, ProcessId};
use std::sync::Arc;

const MEM: usize = 8 << 20;

struct Pair {
    fab: InProcFabric,
    a: Node,
    b: Node,
    am: Arc<Mem>,
    bm: Arc<Mem>,
}

fn nid(a: u32) -> Nid {
    format!("{a}@dma").parse().unwrap()
}
fn pid(a: u32) -> ProcessId {
    ProcessId::new(nid(a), 12345)
}

fn pair(peer_credits: u16) -> Pair {
    let fab = InProcFabric::new(7);
    let da = fab.attach(1, MEM).unwrap();
    let db = fab.attach(2, MEM).unwrap();
    let (am, bm) = (da.mem().clone(), db.mem().clone());
    let cfg = DmaLndConfig { peer_credits, ..Default::default() };
    let a = Node::with_dma(da, nid(1), 12345, 101, cfg.clone());
    let b = Node::with_dma(db, nid(2), 12345, 202, cfg);
    Pair { fab, a, b, am, bm }
}

impl Pair {
    /// Steps both nodes until neither has anything to do; a retry due a moment later (a
    /// bounced SMSG waits 1 ms on the LND's clock) moves both clocks on to it, as a driver would.
    fn drive(&mut self) {
        for _ in 0..100_000 {
            let x = self.a.step();
            let y = self.b.step();
            if !x && !y {
                let now = self.a.lnet.now_ms();
                match self.a.next_due_ms().into_iter().chain(self.b.next_due_ms()).min() {
                    Some(due) if due <= now + 10 => {
                        self.a.lnet.set_time_ms(due.max(now));
                        self.b.lnet.set_time_ms(due.max(now));
                    }
                    _ => return,
                }
            }
        }
        panic!("no quiescence");
    }
    fn events(&mut self) -> (Vec<Event>, Vec<Event>) {
        self.drive();
        (std::iter::from_fn(|| self.a.poll_event()).collect(), std::iter::from_fn(|| self.b.poll_event()).collect())
    }
    fn assert_idle(&self) {
        assert!(self.a.idle() && self.b.idle(), "transfers left in flight");
        assert_eq!(self.fab.engine().lock().unwrap().live_txs(), 0, "device transmits leaked");
    }
    fn stat(&self, n: &Node, k: &str) -> u64 {
        n.lnds[1].stats()[k].as_u64().unwrap()
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed).collect()
}

fn md(iov: Vec<Seg>, options: u32, threshold: Option<u32>) -> MdSpec {
    MdSpec { iov, options, threshold, max_size: 0, user_ptr: 0 }
}

fn seg(off: u64, len: usize) -> Seg {
    Seg { off, len: len as u32 }
}

fn find(ev: &[Event], k: EventKind) -> &Event {
    ev.iter().find(|e| e.kind == k).unwrap_or_else(|| panic!("no {k:?} in {ev:?}"))
}

#[test]
fn put_sizes_immediate_and_pulled() {
    for size in [0usize, 1, 4000, 4001, 4096, 1 << 20] {
        let mut p = pair(8);
        let data = pattern(size, 3);
        p.am.write(7, &data).unwrap();
        let me = p.b.lnet.me_attach(10, ProcessId::ANY, 0xbeef, 0, true, Insert::Tail).unwrap();
        let sink = p.b.lnet.md_attach(me, md(vec![seg(13, size + 16)], opt::OP_PUT, Some(1))).unwrap();
        let src = p.a.lnet.md_bind(md(vec![seg(7, size)], 0, Some(2)), true);
        p.a.lnet.put(src, true, pid(2), 10, 0xbeef, 0, 99).unwrap();
        let (ea, eb) = p.events();
        assert_eq!(p.bm.to_vec(13, size).unwrap(), data, "size {size}");
        assert_eq!(p.bm.to_vec(13 + size as u64, 16).unwrap(), vec![0; 16], "no overrun at {size}");
        let put = find(&eb, EventKind::Put);
        assert_eq!((put.md, put.rlength, put.mlength, put.offset, put.hdr_data, put.status), (sink, size as u64, size as u64, 0, 99, 0));
        assert_eq!(put.peer, pid(1));
        assert!(put.unlinked);
        let send = find(&ea, EventKind::Send);
        assert_eq!((send.md, send.status, send.mlength), (src, 0, size as u64));
        let ack = find(&ea, EventKind::Ack);
        assert_eq!((ack.mlength, ack.status, ack.unlinked), (size as u64, 0, true));
        let path = if size <= 4000 { "immediate" } else { "put_rdma" };
        assert!(p.stat(&p.a, path) >= 1, "size {size} took {path}");
        p.assert_idle();
    }
}

/// A GET's reply up to the immediate limit comes back inline (GET_DONE); a larger one is
/// staged by the target and pulled by the initiator.
#[test]
fn get_sizes_inline_or_staged_by_target() {
    for size in [0usize, 1, 4096, 1 << 20] {
        let mut p = pair(8);
        let data = pattern(size, 9);
        p.bm.write(5, &data).unwrap();
        let me = p.b.lnet.me_attach(8, ProcessId::ANY, 42, 0, false, Insert::Tail).unwrap();
        let src = p.b.lnet.md_attach(me, md(vec![seg(5, size)], opt::OP_GET, None)).unwrap();
        let sink = p.a.lnet.md_bind(md(vec![seg(3, size)], 0, Some(2)), true);
        p.a.lnet.get(sink, pid(2), 8, 42, 0).unwrap();
        let (ea, eb) = p.events();
        assert_eq!(p.am.to_vec(3, size).unwrap(), data, "size {size}");
        let get = find(&eb, EventKind::Get);
        assert_eq!((get.md, get.mlength, get.rlength, get.status, get.peer), (src, size as u64, size as u64, 0, pid(1)));
        let reply = find(&ea, EventKind::Reply);
        assert_eq!((reply.md, reply.mlength, reply.status, reply.unlinked), (sink, size as u64, 0, true));
        assert_eq!(find(&ea, EventKind::Send).status, 0);
        let (inline, staged) = if size <= 4000 { (1, 0) } else { (0, 1) };
        assert_eq!((p.stat(&p.b, "get_immediate"), p.stat(&p.b, "get_rdma")), (inline, staged), "size {size}");
        assert_eq!(p.fab.engine().lock().unwrap().stats.pulls, staged, "size {size}: pulled only when staged");
        p.assert_idle();
    }
}

#[test]
fn unaligned_segments_remote_offset_and_truncation() {
    let mut p = pair(8);
    let data = pattern(1 << 20, 1);
    // Source: three odd-sized, odd-placed pieces.
    let src_iov = vec![seg(1, 300_001), seg(400_003, 500_000), seg(1_000_007, (1 << 20) - 800_001)];
    let mut off = 0;
    for s in &src_iov {
        p.am.write(s.off, &data[off..off + s.len as usize]).unwrap();
        off += s.len as usize;
    }
    // Sink: two pieces, 700 KiB in all, remote-managed offset 1001, truncating.
    let sink_iov = vec![seg(11, 333_333), seg(2_000_001, 700 * 1024 - 333_333)];
    let me = p.b.lnet.me_attach(6, ProcessId::new(nid(1), ProcessId::PID_ANY), 1, 0, false, Insert::Tail).unwrap();
    let sink = p.b.lnet.md_attach(me, md(sink_iov.clone(), opt::OP_PUT | opt::MANAGE_REMOTE | opt::TRUNCATE, None)).unwrap();
    let src = p.a.lnet.md_bind(md(src_iov, 0, None), false);
    p.a.lnet.put(src, true, pid(2), 6, 1, 1001, 0).unwrap();
    let (ea, eb) = p.events();
    let put = find(&eb, EventKind::Put);
    let want = 700 * 1024 - 1001;
    assert_eq!((put.md, put.offset, put.mlength, put.rlength), (sink, 1001, want as u64, 1 << 20));
    assert_eq!(find(&ea, EventKind::Ack).mlength, want as u64);
    let mut got = Vec::new();
    lnd::mem::iov_read(&p.bm, &sink_iov, &mut got).unwrap();
    assert_eq!(&got[1001..], &data[..want]);
    assert_eq!(&got[..1001], &vec![0u8; 1001][..]);

    // GET truncated by a small sink: only sink_length bytes travel.
    p.bm.write(3_000_000, &data[..100_000]).unwrap();
    let me = p.b.lnet.me_attach(7, ProcessId::ANY, 2, 0, false, Insert::Tail).unwrap();
    p.b.lnet.md_attach(me, md(vec![seg(3_000_000, 100_000)], opt::OP_GET | opt::TRUNCATE, None)).unwrap();
    let sink = p.a.lnet.md_bind(md(vec![seg(5_000_001, 5000)], 0, None), false);
    p.a.lnet.get(sink, pid(2), 7, 2, 0).unwrap();
    let (ea, eb) = p.events();
    assert_eq!(find(&eb, EventKind::Get).mlength, 5000);
    assert_eq!(find(&ea, EventKind::Reply).mlength, 5000);
    assert_eq!(p.am.to_vec(5_000_001, 5000).unwrap(), &data[..5000]);
    p.assert_idle();
}

#[test]
fn no_match_is_nakked_never_hangs() {
    let mut p = pair(8);
    let big = p.a.lnet.md_bind(md(vec![seg(0, 1 << 20)], 0, None), false);
    p.a.lnet.put(big, true, pid(2), 33, 1, 0, 0).unwrap();
    let (ea, eb) = p.events();
    assert!(eb.is_empty());
    assert_eq!(find(&ea, EventKind::Send).status, errno::ENODATA);
    assert!(ea.iter().all(|e| e.kind != EventKind::Ack));

    let sink = p.a.lnet.md_bind(md(vec![seg(0, 10)], 0, None), false);
    p.a.lnet.get(sink, pid(2), 33, 1, 0).unwrap();
    let (ea, eb) = p.events();
    assert!(eb.is_empty());
    assert_eq!(find(&ea, EventKind::Send).status, errno::ENODATA);
    assert_eq!(find(&ea, EventKind::Reply).status, errno::ENODATA);
    // A too-long PUT into a non-truncating MD is a miss too.
    let me = p.b.lnet.me_attach(34, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    p.b.lnet.md_attach(me, md(vec![seg(0, 100)], opt::OP_PUT, None)).unwrap();
    p.a.lnet.put(big, false, pid(2), 34, 1, 0, 0).unwrap();
    let (ea, _) = p.events();
    assert_eq!(find(&ea, EventKind::Send).status, errno::EMSGSIZE);
    assert!(p.stat(&p.b, "naks_sent") >= 3);
    p.assert_idle();
}

#[test]
fn unreachable_peer_fails_cleanly() {
    let mut p = pair(8);
    let src = p.a.lnet.md_bind(md(vec![seg(0, 64)], 0, None), false);
    p.a.lnet.put(src, false, pid(9), 1, 0, 0, 0).unwrap();
    let big = p.a.lnet.md_bind(md(vec![seg(0, 1 << 20)], 0, None), false);
    p.a.lnet.put(big, false, pid(9), 1, 0, 0, 0).unwrap();
    let sink = p.a.lnet.md_bind(md(vec![seg(0, 64)], 0, None), false);
    p.a.lnet.get(sink, pid(9), 1, 0, 0).unwrap();
    let (ea, _) = p.events();
    let sends: Vec<_> = ea.iter().filter(|e| e.kind == EventKind::Send).map(|e| e.status).collect();
    assert_eq!(sends, [errno::EHOSTUNREACH; 3]);
    p.assert_idle();
}

#[test]
fn many_in_flight_with_few_credits() {
    let mut p = pair(2);
    let me = p.b.lnet.me_attach(12, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
    p.b.lnet.md_attach(me, md(vec![seg(0, 4 << 20)], opt::OP_PUT | opt::OP_GET, None)).unwrap();
    let data = pattern(4 << 20, 5);
    p.am.write(0, &data).unwrap();
    let mut mds: Vec<MdHandle> = Vec::new();
    for i in 0..128u64 {
        let len = if i % 2 == 0 { 512 } else { 32 * 1024 };
        let off = i * 32 * 1024;
        let h = p.a.lnet.md_bind(md(vec![seg(off, len)], 0, Some(1)), true);
        p.a.lnet.put(h, false, pid(2), 12, i, 0, 0).unwrap();
        mds.push(h);
    }
    let (ea, eb) = p.events();
    assert_eq!(ea.iter().filter(|e| e.kind == EventKind::Send && e.status == 0).count(), 128);
    let puts: Vec<_> = eb.iter().filter(|e| e.kind == EventKind::Put).collect();
    assert_eq!(puts.len(), 128);
    // Each PUT landed at the running offset of the shared MD, in arrival order.
    for e in puts {
        let i = e.match_bits;
        let len = e.mlength as usize;
        assert_eq!(p.bm.to_vec(e.offset, len).unwrap(), &data[(i * 32 * 1024) as usize..][..len], "put {i}");
    }
    assert!(p.a.lnet.counters.credit_stalls > 0, "LNet peer credits must have throttled");
    assert!(p.stat(&p.b, "noops") + p.stat(&p.a, "noops") > 0 || p.stat(&p.a, "credit_stalls") > 0);
    p.assert_idle();
}

#[test]
fn hostile_smsgs_are_dropped_and_node_keeps_serving() {
    let mut p = pair(8);
    let mut evil = p.fab.attach(3, 4096).unwrap();
    let mut junk = vec![vec![0u8; 3], vec![0xff; 200]];
    // A well-formed NOOP claiming to come from node 1: NID does not match the fabric address.
    let mut forged = Vec::new();
    lnd::dmalnd::wire::MsgRepr { credits: 100, src_nid: nid(1), dst_nid: nid(2), body: lnd::dmalnd::wire::Body::Noop }.emit(&mut forged);
    junk.push(forged);
    // A NAK for a tag B never issued, from a correctly named peer.
    let mut nak = Vec::new();
    lnd::dmalnd::wire::MsgRepr { credits: 0, src_nid: nid(3), dst_nid: nid(2), body: lnd::dmalnd::wire::Body::Nak { tag: 77, status: -5 } }.emit(&mut nak);
    junk.push(nak);
    for (i, data) in junk.into_iter().enumerate() {
        evil.submit(&Desc { tag: i as u64, op: Op::Smsg { dst: 2, data } }).unwrap();
    }
    // A pull against a made-up cookie: the device refuses it.
    let key = evil.key();
    evil.submit(&Desc { tag: 9, op: Op::Pull { src: 1, cookie: 12345, tx_off: 0, key, frags: vec![seg(0, 16)] } }).unwrap();
    let mut statuses = Vec::new();
    evil.poll(&mut |c, _| statuses.push(c.status));
    assert_eq!(statuses.last(), Some(&lnd::dev::DevStatus::NoSuchTx));
    p.drive();
    assert_eq!(p.stat(&p.b, "bad_msgs"), 4);
    // Still serving: a normal PUT goes through.
    let me = p.b.lnet.me_attach(1, ProcessId::ANY, 0, 0, false, Insert::Tail).unwrap();
    p.b.lnet.md_attach(me, md(vec![seg(0, 10)], opt::OP_PUT, None)).unwrap();
    p.am.write(0, b"still here").unwrap();
    let src = p.a.lnet.md_bind(md(vec![seg(0, 10)], 0, None), false);
    p.a.lnet.put(src, false, pid(2), 1, 0, 0, 0).unwrap();
    let (_, eb) = p.events();
    assert_eq!(find(&eb, EventKind::Put).mlength, 10);
    assert_eq!(p.bm.to_vec(0, 10).unwrap(), b"still here");
}

/// Device errors (refused transmit setups, failed pulls, bounced SMSGs) fail the transfers they
/// hit — every initiator hears back — and leak no credit, no transmit and no message: once the
/// faults stop, traffic flows as before.
#[test]
fn device_faults_fail_transfers_cleanly_and_leave_no_leak() {
    use lnd::dev::engine::FaultConfig;
    let mut p = pair(2);
    let me = p.b.lnet.me_attach(12, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
    p.b.lnet.md_attach(me, md(vec![seg(0, 4 << 20)], opt::OP_PUT | opt::OP_GET | opt::MANAGE_REMOTE, None)).unwrap();
    p.am.write(0, &pattern(1 << 20, 1)).unwrap();
    let faults = FaultConfig { txfail: 4, pullfail: 4, mailbox: 5, ..Default::default() };
    p.fab.engine().lock().unwrap().set_faults(faults, 99);
    let round = |p: &mut Pair, n: u64| -> (usize, usize) {
        for i in 0..n {
            let len = [0, 100, 9000, 64 << 10][i as usize % 4];
            if i % 3 == 2 {
                let h = p.a.lnet.md_bind(md(vec![seg(2 << 20, len)], 0, Some(2)), true);
                p.a.lnet.get(h, pid(2), 12, i, 0).unwrap();
            } else {
                let h = p.a.lnet.md_bind(md(vec![seg(0, len)], 0, Some(1)), true);
                p.a.lnet.put(h, false, pid(2), 12, i, 0, 0).unwrap();
            }
        }
        let (ea, _) = p.events();
        let sends: Vec<_> = ea.iter().filter(|e| e.kind == EventKind::Send).collect();
        assert_eq!(sends.len() as u64, n, "every initiator hears back");
        (sends.iter().filter(|e| e.status == 0).count(), sends.iter().filter(|e| e.status != 0).count())
    };
    let (ok, failed) = round(&mut p, 300);
    let st = p.fab.engine().lock().unwrap().stats;
    assert!(st.txfails > 0 && st.pullfails > 0 && st.mailbox_full > 0, "{st:?}");
    assert!(failed > 0 && ok > failed, "{ok} ok, {failed} failed");
    p.assert_idle();
    // Faults off: everything goes through, so no credit was lost on the way.
    p.fab.engine().lock().unwrap().set_faults(FaultConfig::default(), 0);
    assert_eq!(round(&mut p, 100), (100, 0));
    p.assert_idle();
}

/// A peer that leaves the fabric mid-transfer (its process died) fails every transfer waiting
/// on it; one that attaches at the same address later is served with fresh credits.
#[test]
fn peer_leaving_fails_waiting_transfers_and_a_new_incarnation_is_served() {
    let mut p = pair(2);
    let size = 1 << 20;
    p.am.write(0, &pattern(size, 4)).unwrap();
    let me = p.b.lnet.me_attach(10, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    p.b.lnet.md_attach(me, md(vec![seg(0, size)], opt::OP_PUT | opt::OP_GET, None)).unwrap();
    // A large PUT and a GET are under way, and B never gets to answer them.
    let src = p.a.lnet.md_bind(md(vec![seg(0, size)], 0, Some(1)), true);
    p.a.lnet.put(src, false, pid(2), 10, 1, 0, 0).unwrap();
    let sink = p.a.lnet.md_bind(md(vec![seg(2 << 20, 64)], 0, Some(2)), true);
    p.a.lnet.get(sink, pid(2), 10, 1, 0).unwrap();
    for _ in 0..100 {
        p.a.step();
    }
    assert!(!p.a.idle(), "waiting on B");
    let Pair { fab, mut a, b, am, .. } = p;
    drop(b); // B's process is gone: the device detaches it
    for _ in 0..100 {
        a.step();
    }
    let ev: Vec<Event> = std::iter::from_fn(|| a.poll_event()).collect();
    assert_eq!(ev.iter().filter(|e| e.status == errno::ECONNRESET).count(), 3, "SEND of the PUT, SEND and REPLY of the GET: {ev:?}");
    assert!(a.idle(), "nothing left waiting");
    assert_eq!(a.lnds[1].stats()["peers_down"].as_u64().unwrap(), 1);
    // B comes back (a new process at the same address) and is served as before.
    let db = fab.attach(2, MEM).unwrap();
    let bm = db.mem().clone();
    let mut b = Node::with_dma(db, nid(2), 12345, 303, DmaLndConfig { peer_credits: 2, ..Default::default() });
    let me = b.lnet.me_attach(10, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    b.lnet.md_attach(me, md(vec![seg(0, size)], opt::OP_PUT | opt::MANAGE_REMOTE, None)).unwrap();
    let mut p = Pair { fab, a, b, am, bm };
    for i in 0..6u64 {
        let len = if i % 2 == 0 { 100 } else { size };
        let src = p.a.lnet.md_bind(md(vec![seg(0, len)], 0, Some(1)), true);
        p.a.lnet.put(src, false, pid(2), 10, 1, 0, 0).unwrap();
    }
    let (ea, eb) = p.events();
    assert_eq!(ea.iter().filter(|e| e.kind == EventKind::Send && e.status == 0).count(), 6, "{ea:?}");
    assert_eq!(eb.iter().filter(|e| e.kind == EventKind::Put).count(), 6);
    assert_eq!(p.bm.to_vec(0, size).unwrap(), pattern(size, 4));
    p.assert_idle();
}

/// A completion the device never posts (a lost PullDone) does not leave the transfer hanging:
/// after `tx_timeout_ms` on the core's clock it fails with ETIMEDOUT and everything is released.
#[test]
fn a_lost_completion_times_out_cleanly() {
    use lnd::dev::engine::FaultConfig;
    let fab = InProcFabric::new(8);
    let (da, db) = (fab.attach(1, MEM).unwrap(), fab.attach(2, MEM).unwrap());
    let (am, bm) = (da.mem().clone(), db.mem().clone());
    let cfg = DmaLndConfig { tx_timeout_ms: 100, ..Default::default() };
    let a = Node::with_dma(da, nid(1), 12345, 1, cfg.clone());
    let b = Node::with_dma(db, nid(2), 12345, 2, cfg);
    let mut p = Pair { fab, a, b, am, bm };
    let size = 256 << 10;
    let me = p.b.lnet.me_attach(10, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    let sink = p.b.lnet.md_attach(me, md(vec![seg(0, size)], opt::OP_PUT, None)).unwrap();
    p.fab.engine().lock().unwrap().set_faults(FaultConfig { lost: 1, ..Default::default() }, 3);
    let src = p.a.lnet.md_bind(md(vec![seg(0, size)], 0, Some(1)), true);
    p.a.lnet.put(src, false, pid(2), 10, 1, 0, 0).unwrap();
    let (ea, eb) = p.events();
    assert_eq!(find(&ea, EventKind::Send).status, 0, "the transmitter saw its data taken");
    assert!(eb.is_empty(), "the receiver never heard: {eb:?}");
    assert!(!p.b.idle());
    p.b.lnet.set_time_ms(99);
    assert!(p.events().1.is_empty(), "not yet");
    p.b.lnet.set_time_ms(100);
    let (_, eb) = p.events();
    let put = find(&eb, EventKind::Put);
    assert_eq!((put.md, put.status), (sink, errno::ETIMEDOUT));
    assert_eq!(p.stat(&p.b, "timeouts"), 1);
    p.assert_idle();
}

/// Issue 19 item 1: both ends spend their whole SMSG window before either handles the other's
/// messages, and what they owe back is queued behind the stall (here NAKs for GETs that match
/// nothing, plus small PUTs). A NOOP must carry the credits back when we are at 0 credits with
/// messages queued (`kiblnd_need_noop`), or both ends sit at 0 for good.
#[test]
fn both_ends_spending_their_window_do_not_deadlock() {
    let mut p = pair(4);
    for (node, mem) in [(&mut p.a, &p.am), (&mut p.b, &p.bm)] {
        mem.write(0, &pattern(64, 2)).unwrap();
        let me = node.lnet.me_attach(5, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
        node.lnet.md_attach(me, md(vec![seg(4096, 1 << 20)], opt::OP_PUT, None)).unwrap();
    }
    let n = 4u64;
    for (node, to) in [(&mut p.a, pid(2)), (&mut p.b, pid(1))] {
        for i in 0..n {
            let h = node.lnet.md_bind(md(vec![seg(0, 64)], 0, Some(2)), true);
            node.lnet.get(h, to, 99, i, 0).unwrap();
            let h = node.lnet.md_bind(md(vec![seg(0, 64)], 0, Some(1)), true);
            node.lnet.put(h, false, to, 5, i, 0, 0).unwrap();
        }
    }
    for _ in 0..1000 {
        p.a.step();
        p.b.step();
    }
    let ea: Vec<Event> = std::iter::from_fn(|| p.a.poll_event()).collect();
    let eb: Vec<Event> = std::iter::from_fn(|| p.b.poll_event()).collect();
    for (name, ev) in [("a", &ea), ("b", &eb)] {
        let missed = ev.iter().filter(|e| e.kind == EventKind::Send && e.status == errno::ENODATA).count();
        let put_ok = ev.iter().filter(|e| e.kind == EventKind::Send && e.status == 0).count();
        let got = ev.iter().filter(|e| e.kind == EventKind::Put).count();
        assert_eq!((missed, put_ok, got), (n as usize, n as usize, n as usize), "node {name}: GETs NAKed, PUTs sent, PUTs received");
    }
    p.assert_idle();
}

/// Issue 19 item 8: a message LNet parks (lazy portal with no buffer) keeps its sender's SMSG
/// credit until LNet consumes it, as Lustre returns a credit only when the rx is reposted: a
/// sender can park at most a window of messages with us, the rest waits at the sender.
#[test]
fn parked_messages_hold_their_senders_credits() {
    let mut p = pair(4);
    p.b.lnet.set_lazy(9);
    for i in 0..12 {
        let h = p.a.lnet.md_bind(md(vec![seg(0, 64)], 0, Some(1)), true);
        p.a.lnet.put(h, false, pid(2), 9, i, 0, 0).unwrap();
    }
    p.drive();
    let parked = p.b.lnds[1].busy();
    assert!(parked <= 4, "{parked} messages parked at B: more than A's window of 4");
    let me = p.b.lnet.me_attach(9, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
    p.b.lnet.md_attach(me, md(vec![seg(4096, 1 << 20)], opt::OP_PUT, None)).unwrap();
    let (ea, eb) = p.events();
    assert_eq!(eb.iter().filter(|e| e.kind == EventKind::Put).count(), 12);
    assert_eq!(ea.iter().filter(|e| e.kind == EventKind::Send && e.status == 0).count(), 12);
    p.assert_idle();
}
