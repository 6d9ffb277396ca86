//! LNet routing between a DMA fabric and a TCP net: PUT and GET of every size in both
//! directions through a router, the GET never taking the DMA shortcut end to end, and senders
//! failing cleanly (or switching router) when a router dies.

mod common;
use common::*;
use lnd::dev::inproc::InProcFabric;
use lnd::dev::DmaDevice;
use lnd::dmalnd::DmaLndConfig;
use lnd::lnet::{errno, opt, EventKind, Insert};
use lnd::node::{Node, NodeBuilder};
use lnd::wire::{Net, ProcessId};
use lnd::sock::io::MAX_UNREAD;
use std::time::{Duration, Instant};

const TCP0: &str = "tcp";
const DMA0: &str = "dma";

fn net(s: &str) -> Net {
    s.parse().unwrap()
}

fn dma_node(fab: &InProcFabric, n: &str, routes: &[(&str, &str)], router_tcp: Option<&str>) -> Node {
    let nid = nid(n);
    let dev = fab.attach(nid.addr(), 32 << 20).unwrap();
    let mut b = NodeBuilder::new(12345, nid.addr() as u64 + 1000);
    b.dma(nid, Box::new(dev), DmaLndConfig::default());
    if let Some(t) = router_tcp {
        b.tcp(common::nid(t), tcp_io(), sock_cfg()).routing(64, 64, 8);
    }
    for (net_s, gw) in routes {
        b.route(net(net_s), common::nid(gw));
    }
    b.build().unwrap()
}

fn tcp_routed(n: &str, routes: &[(&str, &str)]) -> Node {
    let mut b = NodeBuilder::new(12345, 7);
    b.tcp(nid(n), tcp_io(), sock_cfg()).mem_size(8 << 20);
    for (net_s, gw) in routes {
        b.route(net(net_s), common::nid(gw));
    }
    b.build().unwrap()
}

/// PUT with ACK then GET of `size` bytes from node `a` to `b` (`bpid`), checked.
fn put_get(w: &mut World, a: usize, b: usize, bpid: &str, size: usize, bits: u64) {
    let data = pattern(size, bits as u8);
    let sink = w.buf(b, &vec![0u8; size]);
    let me = w.nodes[b].lnet.me_attach(20, ProcessId::ANY, bits, 0, true, Insert::Tail).unwrap();
    w.nodes[b].lnet.md_attach(me, md(sink, opt::OP_PUT, Some(1))).unwrap();
    let src = w.buf(a, &data);
    let h = w.nodes[a].lnet.md_bind(md(src, 0, Some(2)), true);
    w.nodes[a].lnet.put(h, true, pid(bpid), 20, bits, 0, 0).unwrap();
    let put = w.wait_event(b, EventKind::Put);
    assert_eq!((put.mlength, put.status), (size as u64, 0), "routed PUT {size}");
    let ack = w.wait_event(a, EventKind::Ack);
    assert_eq!((ack.mlength, ack.status), (size as u64, 0));
    assert_eq!(w.read(b, sink), data, "routed PUT {size}");

    let me = w.nodes[b].lnet.me_attach(21, ProcessId::ANY, bits, 0, true, Insert::Tail).unwrap();
    w.nodes[b].lnet.md_attach(me, md(sink, opt::OP_GET, Some(1))).unwrap();
    let back = w.buf(a, &vec![0u8; size]);
    let h = w.nodes[a].lnet.md_bind(md(back, 0, Some(2)), true);
    w.nodes[a].lnet.get(h, pid(bpid), 21, bits, 0).unwrap();
    let reply = w.wait_event(a, EventKind::Reply);
    assert_eq!((reply.mlength, reply.status), (size as u64, 0), "routed GET {size}");
    assert_eq!(w.read(a, back), data, "routed GET {size}");
    w.run_until(|w| w.nodes.iter().all(|n| n.idle()));
    for i in 0..w.nodes.len() {
        w.take(i);
    }
}

#[test]
fn put_and_get_through_a_router_both_ways() {
    let fab = InProcFabric::new(11);
    let c = dma_node(&fab, "1@dma", &[(TCP0, "2@dma")], None);
    let r = dma_node(&fab, "2@dma", &[], Some("127.0.6.2@tcp"));
    let s = tcp_routed("127.0.6.3@tcp", &[(DMA0, "127.0.6.2@tcp")]);
    let mut w = World::new(vec![c, r, s]);
    for (i, size) in [0usize, 1, 4096, 1 << 20].into_iter().enumerate() {
        put_get(&mut w, 0, 2, "127.0.6.3@tcp", size, i as u64 + 1); // dma -> tcp
        put_get(&mut w, 2, 0, "1@dma", size, i as u64 + 50); // tcp -> dma
    }
    let routed = w.nodes[1].lnet.counters.route_count;
    assert!(routed >= 32, "router forwarded {routed} messages");
    // The GETs crossed the router as plain GETs: no DMA GET shortcut anywhere.
    assert_eq!(w.stat(0, 1, "get_rdma"), 0);
    assert_eq!(w.stat(1, 1, "get_rdma"), 0);
    // The 1 MiB REPLY came back to the DMA client like a PUT: pulled from the router.
    assert!(w.stat(1, 1, "put_rdma") >= 2, "router pulled-PUT count");
    assert_eq!(fab.engine().lock().unwrap().live_txs(), 0);
}

#[test]
fn a_dead_router_fails_the_sender_cleanly() {
    let fab = InProcFabric::new(12);
    let c = dma_node(&fab, "1@dma", &[(TCP0, "2@dma")], None);
    let r = dma_node(&fab, "2@dma", &[], Some("127.0.8.2@tcp"));
    let s = tcp_routed("127.0.8.3@tcp", &[(DMA0, "127.0.8.2@tcp")]);
    let mut w = World::new(vec![c, r, s]);
    put_get(&mut w, 0, 2, "127.0.8.3@tcp", 100, 1);
    drop(w.nodes.remove(1)); // the router dies
    let src = w.buf(0, &[1u8; 5000]);
    let h = w.nodes[0].lnet.md_bind(md(src, 0, None), false);
    w.nodes[0].lnet.put(h, false, pid("127.0.8.3@tcp"), 20, 1, 0, 0).unwrap();
    let e = w.wait_event(0, EventKind::Send);
    assert_eq!(e.status, errno::EHOSTUNREACH);
    // The TCP side too, once it has seen the router's connections drop: a message towards the
    // DMA net has nowhere to go. (Before that, TCP may still accept bytes for a dead peer.)
    w.run_until(|w| w.nodes[1].lnds[1].stats()["conns_up"] == 0);
    let src = w.buf(1, &[2u8; 10]);
    let h = w.nodes[1].lnet.md_bind(md(src, 0, None), false);
    w.nodes[1].lnet.put(h, false, pid("1@dma"), 20, 1, 0, 0).unwrap();
    let e = w.wait_event(1, EventKind::Send);
    assert_eq!(e.status, errno::EHOSTUNREACH);
    w.run_until(|w| w.nodes.iter().all(|n| n.idle()));
}

#[test]
fn with_two_routers_traffic_moves_to_the_live_one() {
    let fab = InProcFabric::new(13);
    let c = dma_node(&fab, "1@dma", &[(TCP0, "2@dma"), (TCP0, "3@dma")], None);
    let r1 = dma_node(&fab, "2@dma", &[], Some("127.0.7.2@tcp"));
    let r2 = dma_node(&fab, "3@dma", &[], Some("127.0.7.3@tcp"));
    let s = tcp_routed("127.0.7.9@tcp", &[(DMA0, "127.0.7.2@tcp"), (DMA0, "127.0.7.3@tcp")]);
    let mut w = World::new(vec![c, r1, r2, s]);
    put_get(&mut w, 0, 3, "127.0.7.9@tcp", 4096, 1);
    assert!(w.nodes[1].lnet.counters.route_count > 0, "first router carried the traffic");
    drop(w.nodes.remove(1)); // router 1 dies; nodes are now [c, r2, s]
    for (i, size) in [0usize, 1 << 20].into_iter().enumerate() {
        put_get(&mut w, 0, 2, "127.0.7.9@tcp", size, 10 + i as u64);
        put_get(&mut w, 2, 0, "1@dma", size, 20 + i as u64);
    }
    assert!(w.nodes[0].lnet.counters.resends >= 1, "client resent through router 2");
    assert!(w.nodes[2].lnet.counters.resends >= 1, "server resent through router 2");
    assert!(w.nodes[1].lnet.counters.route_count >= 8);
}

#[test]
fn router_buffer_exhaustion_holds_messages_until_buffers_free() {
    let fab = InProcFabric::new(14);
    let c = dma_node(&fab, "1@dma", &[(TCP0, "2@dma")], None);
    let nid_r = nid("2@dma");
    let dev = fab.attach(nid_r.addr(), 32 << 20).unwrap();
    let mut b = NodeBuilder::new(12345, 99);
    // One buffer of each size: every routed message after the first has to wait its turn.
    b.dma(nid_r, Box::new(dev), DmaLndConfig::default()).tcp(nid("127.0.12.2@tcp"), tcp_io(), sock_cfg()).routing(1, 1, 1);
    let r = b.build().unwrap();
    let s = tcp_routed("127.0.12.3@tcp", &[(DMA0, "127.0.12.2@tcp")]);
    let mut w = World::new(vec![c, r, s]);
    let sink = w.buf(2, &vec![0u8; 64 << 10]);
    let me = w.nodes[2].lnet.me_attach(20, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
    w.nodes[2].lnet.md_attach(me, md(sink, opt::OP_PUT, None)).unwrap();
    let data = pattern(40 << 10, 3);
    for i in 0..20u64 {
        let len = [0usize, 100, 8000][i as usize % 3];
        let src = w.buf(0, &data[..len]);
        let h = w.nodes[0].lnet.md_bind(md(src, 0, Some(1)), true);
        w.nodes[0].lnet.put(h, false, pid("127.0.12.3@tcp"), 20, i, 0, 0).unwrap();
    }
    w.run_until(|w| w.events[2].iter().filter(|e| e.kind == EventKind::Put).count() == 20);
    assert!(w.events[2].iter().all(|e| e.status == 0));
    assert!(w.nodes[1].lnet.counters.credit_stalls > 0, "router had to hold messages");
    w.run_until(|w| w.nodes.iter().all(|n| n.idle()));
}

/// A router with a DMA NI on each of two fabrics (two devices, one node memory): PUT and GET
/// of every size both ways; the GET is served by its target and comes back like a PUT.
#[test]
fn put_and_get_through_a_router_between_two_dma_fabrics() {
    let (fa, fb) = (InProcFabric::new(21), InProcFabric::new(22));
    let c = dma_node(&fa, "1@dma", &[("dma1", "2@dma")], None);
    let r = {
        let (na, nb) = (nid("2@dma"), nid("2@dma1"));
        let da = fa.attach(na.addr(), 32 << 20).unwrap();
        let db = fb.attach_mem(nb.addr(), da.mem().clone()).unwrap();
        let mut b = NodeBuilder::new(12345, 2002);
        b.dma(na, Box::new(da), DmaLndConfig::default()).dma(nb, Box::new(db), DmaLndConfig::default()).routing(64, 64, 8);
        b.build().unwrap()
    };
    let s = dma_node(&fb, "3@dma1", &[(DMA0, "2@dma1")], None);
    let mut w = World::new(vec![c, r, s]);
    for (i, size) in [0usize, 1, 4096, 1 << 20].into_iter().enumerate() {
        put_get(&mut w, 0, 2, "3@dma1", size, i as u64 + 1); // dma -> dma1
        put_get(&mut w, 2, 0, "1@dma", size, i as u64 + 50); // dma1 -> dma
    }
    assert!(w.stat(1, 1, "put_rdma") > 0 && w.stat(1, 2, "put_rdma") > 0, "the router sent bulk on both fabrics");
}

/// Two DMA NIs whose devices registered different memories cannot make one node.
#[test]
fn dma_nis_must_share_the_node_memory() {
    let (fa, fb) = (InProcFabric::new(23), InProcFabric::new(24));
    let mut b = NodeBuilder::new(12345, 1);
    b.dma(nid("5@dma"), Box::new(fa.attach(5, 1 << 20).unwrap()), DmaLndConfig::default());
    b.dma(nid("5@dma1"), Box::new(fb.attach(5, 1 << 20).unwrap()), DmaLndConfig::default());
    let e = b.build().err().expect("refused").to_string();
    assert!(e.contains("5@dma ") && e.contains("5@dma1") && e.contains("one memory"), "{e}");
}

/// Steps every node but `parked` until `done` holds (false once `max` has passed), calling
/// `check` after every round.
fn run_without(w: &mut World, parked: usize, max: Duration, mut check: impl FnMut(&World), mut done: impl FnMut(&World) -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < max {
        for (i, n) in w.nodes.iter_mut().enumerate() {
            if i == parked {
                continue;
            }
            n.step();
            while let Some(e) = n.poll_event() {
                w.events[i].push(e);
            }
        }
        check(w);
        if done(w) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

fn puts(w: &World, i: usize) -> usize {
    w.events[i].iter().filter(|e| e.kind == EventKind::Put).count()
}

/// Issue 19 item 8 (router side): a DMA peer flooding a router towards a parked destination
/// holds at most its router credits' worth of buffers (`peer_buffer_credits`); the router
/// keeps its other messages as unconsumed rx, so their SMSG credits stay away and the flood
/// backs up at the sender. Another peer's messages to a live node still get buffers.
#[test]
fn a_flooding_peer_is_held_to_its_router_credits() {
    let fab = InProcFabric::new(15);
    let a = dma_node(&fab, "1@dma", &[(TCP0, "2@dma")], None);
    let b = dma_node(&fab, "3@dma", &[(TCP0, "2@dma")], None);
    let nid_r = nid("2@dma");
    let dev = fab.attach(nid_r.addr(), 32 << 20).unwrap();
    let mut rb = NodeBuilder::new(12345, 98);
    // The parked destination never answers our HELLO: keep waiting for it all along.
    let patient = lnd::sock::SockConfig { handshake_timeout: Duration::from_secs(300), ..sock_cfg() };
    rb.dma(nid_r, Box::new(dev), DmaLndConfig::default()).tcp(nid("127.0.15.2@tcp"), tcp_io(), patient).routing(0, 6, 0).peer_buffer_credits(2);
    let r = rb.build().unwrap();
    let e = tcp_routed("127.0.15.4@tcp", &[(DMA0, "127.0.15.2@tcp")]);
    let d = tcp_routed("127.0.15.3@tcp", &[(DMA0, "127.0.15.2@tcp")]);
    let (ia, ib, ir, ie, id) = (0, 1, 2, 3, 4);
    let mut w = World::new(vec![a, b, r, e, d]);
    for sink_node in [ie, id] {
        let sink = w.buf(sink_node, &vec![0u8; 64 << 10]);
        let me = w.nodes[sink_node].lnet.me_attach(20, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
        w.nodes[sink_node].lnet.md_attach(me, md(sink, opt::OP_PUT, None)).unwrap();
    }
    let put = |w: &mut World, from: usize, to: &str, n: u64| {
        let src = w.buf(from, &pattern(1000, 5));
        for i in 0..n {
            let h = w.nodes[from].lnet.md_bind(md(src, 0, Some(1)), true);
            w.nodes[from].lnet.put(h, false, pid(to), 20, i, 0, 0).unwrap();
        }
    };
    // A floods D, which is parked: whatever A gets forwarded stays in the router.
    put(&mut w, ia, "127.0.15.3@tcp", 40);
    let mut most = 0;
    let window = DmaLndConfig::default().peer_credits as usize;
    run_without(&mut w, id, Duration::from_millis(800), |w| most = most.max(w.nodes[ir].lnet.counters.route_count), |_| false);
    assert!(most <= 2, "A got {most} router buffers: more than its 2 router credits");
    let parked = w.nodes[ir].lnds[1].busy();
    assert!(parked <= window, "{parked} of A's messages parked at the router: more than A's window of {window}");
    let sent = w.events[ia].iter().filter(|e| e.kind == EventKind::Send).count();
    assert!(sent <= 2 + window, "A sent {sent} messages into a router that holds them");
    // B's messages to the live E still get buffers.
    put(&mut w, ib, "127.0.15.4@tcp", 4);
    assert!(run_without(&mut w, id, Duration::from_secs(5), |_| {}, |w| puts(w, ie) == 4), "B's messages to E got no router buffer: {} arrived", puts(&w, ie));
    // D wakes up: the flood drains.
    w.run_until(|w| puts(w, id) == 40);
    assert!(w.events[id].iter().all(|e| e.status == 0));
    w.run_until(|w| w.nodes.iter().all(|n| n.idle()));
}

/// Issue 19 item 8, both halves together: a TCP peer flooding a router towards a parked DMA
/// node holds at most its router credits' worth of buffers; the message past them is parked,
/// so the router stops reading that connection (what it holds stays within the read-ahead
/// cap) and the flooder's sends stop completing. A second TCP peer's messages to a live DMA
/// node still get buffers.
#[test]
fn a_flooding_tcp_peer_is_held_back_through_the_socket() {
    const MIB: usize = 1 << 20;
    let fab = InProcFabric::new(16);
    let d = dma_node(&fab, "3@dma", &[(TCP0, "2@dma")], None);
    let e = dma_node(&fab, "4@dma", &[(TCP0, "2@dma")], None);
    let nid_r = nid("2@dma");
    let dev = fab.attach(nid_r.addr(), 32 << 20).unwrap();
    let mut rb = NodeBuilder::new(12345, 97);
    rb.dma(nid_r, Box::new(dev), DmaLndConfig::default()).tcp(nid("127.0.16.2@tcp"), tcp_io(), sock_cfg()).routing(0, 0, 6).peer_buffer_credits(2);
    let r = rb.build().unwrap();
    let a = tcp_routed("127.0.16.1@tcp", &[(DMA0, "127.0.16.2@tcp")]);
    let b = tcp_routed("127.0.16.4@tcp", &[(DMA0, "127.0.16.2@tcp")]);
    let (ia, ib, ir, ie, id) = (0, 1, 2, 3, 4);
    let mut w = World::new(vec![a, b, r, e, d]);
    for sink_node in [ie, id] {
        let sink = w.buf(sink_node, &vec![0u8; MIB]);
        let me = w.nodes[sink_node].lnet.me_attach(20, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
        w.nodes[sink_node].lnet.md_attach(me, md(sink, opt::OP_PUT | opt::MANAGE_REMOTE, None)).unwrap();
    }
    let put = |w: &mut World, from: usize, to: &str, n: u64| {
        let src = w.buf(from, &pattern(MIB, 9));
        for i in 0..n {
            let h = w.nodes[from].lnet.md_bind(md(src, 0, Some(1)), true);
            w.nodes[from].lnet.put(h, false, pid(to), 20, i, 0, 0).unwrap();
        }
    };
    // Four read-ahead caps' worth: what the router may hold (two connections' caps, a read
    // chunk each, and the kernel's socket buffers) stays well below it.
    let flood = 4 * MAX_UNREAD / MIB;
    put(&mut w, ia, "3@dma", flood as u64);
    let (mut most_fwd, mut most_held) = (0, 0);
    run_without(
        &mut w,
        id,
        Duration::from_millis(1500),
        |w| {
            most_fwd = most_fwd.max(w.nodes[ir].lnet.counters.route_count);
            most_held = most_held.max(w.stat(ir, 2, "rx_held_bytes") as usize);
        },
        |_| false,
    );
    assert!(most_fwd <= 2, "A got {most_fwd} router buffers: more than its 2 router credits");
    let sent = w.events[ia].iter().filter(|e| e.kind == EventKind::Send).count();
    eprintln!("router held at most {most_held} bytes for A; {sent} of A's {flood} sends completed");
    // Each connection reads at most MAX_UNREAD ahead of what LNet consumed; A's 1 MiB frames
    // can come on two of its typed connections (BULK_OUT, and CONTROL before that is up): a debug
    // run under load once held 39780873 bytes over one cap.
    assert!(most_held <= 2 * MAX_UNREAD + 4 * MIB, "router held {most_held} bytes of A's parked messages");
    assert!(sent < flood * 3 / 4, "{sent} of A's {flood} sends completed: A was not held back");
    put(&mut w, ib, "4@dma", 4);
    assert!(run_without(&mut w, id, Duration::from_secs(5), |_| {}, |w| puts(w, ie) == 4), "B's messages to E got no router buffer: {} arrived", puts(&w, ie));
    w.run_until(|w| puts(w, id) == flood);
    assert!(w.events[id].iter().all(|e| e.status == 0 && e.mlength == MIB as u64));
    w.run_until(|w| w.nodes.iter().all(|n| n.idle()));
}
