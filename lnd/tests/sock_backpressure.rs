//! socklnd receive back-pressure over real loopback TCP (issue 19 item 8): a message LNet parks
//! stops its connection being read until LNet lets go of it, so TCP flow control holds the
//! sender back instead of the receiver buffering whatever is sent.

mod common;
use common::*;
use lnd::lnet::{opt, EventKind, Insert};
use lnd::sock::io::MAX_UNREAD;
use lnd::wire::ProcessId;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Steps both nodes for `d`, calling `check` after every round.
fn run_for(w: &mut World, d: Duration, mut check: impl FnMut(&World)) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        for (i, n) in w.nodes.iter_mut().enumerate() {
            n.step();
            while let Some(e) = n.poll_event() {
                w.events[i].push(e);
            }
        }
        check(w);
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The sender pushes three read-ahead caps' worth of 1 MiB PUTs at a lazy portal with no
/// buffer: the receiver parks the first and reads no further, so what it holds stays under
/// the read-ahead cap of each connection and the sender's sends stop completing (its writes block in TCP); once a
/// buffer is posted every PUT arrives.
#[test]
fn parked_messages_stop_the_connection_and_the_sender() {
    let s = tcp_node("127.0.21.1@tcp", 1);
    let r = tcp_node("127.0.21.2@tcp", 2);
    let mut w = World::new(vec![s, r]);
    w.nodes[1].lnet.set_lazy(9);
    let total = 3 * MAX_UNREAD / MIB;
    let src = w.buf(0, &pattern(MIB, 1));
    for i in 0..total as u64 {
        let h = w.nodes[0].lnet.md_bind(md(src, 0, Some(1)), true);
        w.nodes[0].lnet.put(h, false, pid("127.0.21.2@tcp"), 9, i, 0, 0).unwrap();
    }
    let mut most = 0;
    run_for(&mut w, Duration::from_millis(2500), |w| most = most.max(w.stat(1, 1, "rx_held_bytes") as usize));
    let sent = w.events[0].iter().filter(|e| e.kind == EventKind::Send).count();
    eprintln!("receiver held at most {most} bytes; {sent} of {total} sends completed");
    // At most MAX_UNREAD read ahead per connection, and 1 MiB frames can come on two of the
    // sender's typed connections (BULK_OUT, and CONTROL before that is up).
    assert!(most <= 2 * MAX_UNREAD + 4 * MIB, "receiver held {most} bytes for LNet: it kept reading a connection whose message is parked");
    assert!(sent < total * 2 / 3, "{sent} of {total} sends completed: the sender was not held back");
    // A buffer for the lazy portal: the parked PUT lands, the connection is read again.
    let sink = w.buf(1, &vec![0u8; MIB]);
    let me = w.nodes[1].lnet.me_attach(9, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
    w.nodes[1].lnet.md_attach(me, md(sink, opt::OP_PUT | opt::MANAGE_REMOTE, None)).unwrap();
    w.run_until(|w| w.events[1].iter().filter(|e| e.kind == EventKind::Put).count() == total);
    assert!(w.events[1].iter().all(|e| e.status == 0 && e.mlength == MIB as u64));
    w.run_until(|w| w.events[0].iter().filter(|e| e.kind == EventKind::Send).count() == total);
    assert_eq!(w.read(1, sink), pattern(MIB, 1));
    w.run_until(|w| w.nodes.iter().all(|n| n.idle()));
}
