//! SMSGs the device bounces (peer unreachable across a cut, or gone): the DMA LND tries again
//! later on its own clock, never in the same step, and keeps the credits it owes so a peer cut
//! off for a while gets them once the cut heals.

mod common;

use common::{md, pattern};
use lnd::dev::inproc::InProcFabric;
use lnd::dev::DmaDevice;
use lnd::dmalnd::DmaLndConfig;
use lnd::lnet::{opt, Event, EventKind, Insert};
use lnd::mem::Seg;
use lnd::node::Node;
use lnd::wire::{Nid, ProcessId};
use std::sync::mpsc;
use std::time::Duration;

const MEM: usize = 4 << 20;

fn nid(a: u32) -> Nid {
    format!("{a}@dma").parse().unwrap()
}

fn pid(a: u32) -> ProcessId {
    ProcessId::new(nid(a), 12345)
}

/// `node.step()` on another thread: the node back, or a panic naming `what` if the step does
/// not return within 10 s (a step that spins on a bounce never does).
fn step_bounded(node: Node, what: &str) -> Node {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut node = node;
        node.step();
        let _ = tx.send(node);
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("{what}: Node::step did not return in 10 s (it retries a bounced SMSG in a loop)"))
}

fn puts(from: &mut Node, to: ProcessId, n: u64) {
    for i in 0..n {
        let h = from.lnet.md_bind(md(Seg { off: 0, len: 64 }, 0, Some(1)), true);
        from.lnet.put(h, false, to, 5, i, 0, 0).unwrap();
    }
}

fn events(n: &mut Node) -> Vec<Event> {
    std::iter::from_fn(|| n.poll_event()).collect()
}

/// A owes B a window of credits when the fabric between them is cut: the NOOP that would carry
/// them back bounces (NoSuchPeer). A's step returns, the NOOP goes again only when A's clock
/// moves on, and once the cut heals B gets its credits and can send a full window again.
#[test]
fn a_noop_across_a_cut_is_retried_later_and_its_credits_are_kept() {
    let fab = InProcFabric::new(3);
    let (da, db) = (fab.attach(1, MEM).unwrap(), fab.attach(2, MEM).unwrap());
    da.mem().write(0, &pattern(64, 1)).unwrap();
    db.mem().write(0, &pattern(64, 2)).unwrap();
    let cfg = DmaLndConfig { peer_credits: 4, ..Default::default() };
    let mut a = Node::with_dma(da, nid(1), 12345, 1, cfg.clone());
    let mut b = Node::with_dma(db, nid(2), 12345, 2, cfg);
    let me = a.lnet.me_attach(5, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
    a.lnet.md_attach(me, md(Seg { off: 4096, len: 1 << 20 }, opt::OP_PUT, None)).unwrap();
    // B spends its whole window on A; the SMSGs land in A's mailbox, then the fabric is cut.
    puts(&mut b, pid(1), 4);
    b.step();
    assert_eq!(b.lnds[1].stats()["credit_stalls"].as_u64(), Some(0));
    fab.engine().lock().unwrap().set_cut(1, 2, true);
    let mut a = step_bounded(a, "A owing B across a cut");
    assert_eq!(events(&mut a).iter().filter(|e| e.kind == EventKind::Put).count(), 4);
    let noops = |n: &Node| n.lnds[1].stats()["noops"].as_u64().unwrap();
    // (A NOOP may go out after each half window consumed: both bounce.)
    let n0 = noops(&a);
    assert!((1..=2).contains(&n0), "{n0} NOOPs tried and bounced");
    for _ in 0..10 {
        a = step_bounded(a, "A stepped again at the same time");
    }
    assert_eq!(noops(&a), n0, "no retry before the clock moves");
    let due = a.next_due_ms().expect("a bounced NOOP makes the LND due again");
    a.lnet.set_time_ms(due);
    a = step_bounded(a, "A at the retry time, still cut");
    assert_eq!(noops(&a), n0 + 1, "tried again when due (one NOOP for all it owes), bounced again");
    // The cut heals: the next retry reaches B, whose window is full again.
    fab.engine().lock().unwrap().set_cut(1, 2, false);
    let due = a.next_due_ms().expect("still owing B");
    a.lnet.set_time_ms(due);
    for _ in 0..100 {
        let x = a.step();
        let y = b.step();
        if !x && !y {
            break;
        }
    }
    assert_eq!(noops(&a), n0 + 2);
    assert!(events(&mut b).iter().all(|e| e.status == 0));
    puts(&mut b, pid(1), 4);
    for _ in 0..100 {
        a.step();
        b.step();
    }
    assert_eq!(b.lnds[1].stats()["credit_stalls"].as_u64(), Some(0), "B got its 4 credits back");
    assert_eq!(events(&mut a).iter().filter(|e| e.kind == EventKind::Put).count(), 4);
    assert_eq!(a.next_due_ms(), None, "nothing owed, nothing due");
}
