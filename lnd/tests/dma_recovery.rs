//! The DMA LND when transfers fail while the device may still be busy with them (issue 19
//! items 2 and 3): buffers stay with the device until it lets go, failed messages are not
//! delivered later, and a departed peer's credits are counted once.

mod common;

use common::{md, pattern};
use lnd::dev::engine::PullJob;
use lnd::dev::inproc::{InProcDevice, InProcFabric};
use lnd::dev::{Completion, DevError, Desc, DmaDevice, Op};
use lnd::dmalnd::{DmaLnd, DmaLndConfig};
use lnd::lnet::{errno, opt, Event, EventKind, Insert};
use lnd::mem::{Mem, Seg};
use lnd::node::Node;
use lnd::wire::{Nid, ProcessId};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const MEM: usize = 8 << 20;

/// What a [`SlowDev`] holds back: claimed pulls whose copy has not run yet, and every later
/// descriptor of the node (a device executes a node's descriptors in order).
#[derive(Default)]
struct Held {
    /// Hold pulls (`true`) or every descriptor (`all`).
    pulls: bool,
    all: bool,
    jobs: VecDeque<PullJob>,
    after: VecDeque<Desc>,
}

/// An in-process device whose copier is slow (`dma_late`): a pull claims its transmit at once
/// and copies only when the test says so.
struct SlowDev {
    inner: InProcDevice,
    fab: InProcFabric,
    held: Arc<Mutex<Held>>,
}

impl DmaDevice for SlowDev {
    fn addr(&self) -> u32 {
        self.inner.addr()
    }
    fn mem(&self) -> &Arc<Mem> {
        self.inner.mem()
    }
    fn key(&self) -> u32 {
        self.inner.key()
    }
    fn sq_space(&self) -> usize {
        self.inner.sq_space()
    }
    fn submit(&mut self, d: &Desc) -> Result<(), DevError> {
        let mut h = self.held.lock().unwrap();
        if h.all || !h.jobs.is_empty() {
            h.after.push_back(d.clone());
            return Ok(());
        }
        if h.pulls && matches!(d.op, Op::Pull { .. }) {
            if let Some(job) = self.fab.engine().lock().unwrap().submit(self.addr(), d.clone()) {
                h.jobs.push_back(job);
            }
            return Ok(());
        }
        drop(h);
        self.inner.submit(d)
    }
    fn doorbell(&mut self) {}
    fn poll(&mut self, f: &mut dyn FnMut(&Completion, &[u8])) -> usize {
        self.inner.poll(f)
    }
}

/// Lets node `addr`'s device finish what it held: the copies, then the later descriptors.
fn release(fab: &InProcFabric, held: &Mutex<Held>, addr: u32) {
    let mut h = held.lock().unwrap();
    h.pulls = false;
    h.all = false;
    let mut e = fab.engine().lock().unwrap();
    for job in h.jobs.drain(..) {
        let ok = job.copy();
        e.finish_pull(job, ok);
    }
    for d in h.after.drain(..) {
        e.submit_now(addr, d);
    }
}

fn nid(a: u32) -> Nid {
    format!("{a}@dma").parse().unwrap()
}
fn pid(a: u32) -> ProcessId {
    ProcessId::new(nid(a), 12345)
}

struct Pair {
    fab: InProcFabric,
    a: Node,
    b: Node,
    held_a: Arc<Mutex<Held>>,
    held_b: Arc<Mutex<Held>>,
}

fn slow_node(fab: &InProcFabric, addr: u32, cfg: &DmaLndConfig) -> (Node, Arc<Mutex<Held>>) {
    let held = Arc::new(Mutex::new(Held::default()));
    let dev = SlowDev { inner: fab.attach(addr, MEM).unwrap(), fab: fab.clone(), held: held.clone() };
    (Node::with_dma(dev, nid(addr), 12345, addr as u64, cfg.clone()), held)
}

fn pair(peer_credits: u16, tx_timeout_ms: u64) -> Pair {
    let fab = InProcFabric::new(5);
    let cfg = DmaLndConfig { peer_credits, tx_timeout_ms, ..Default::default() };
    let (a, held_a) = slow_node(&fab, 1, &cfg);
    let (b, held_b) = slow_node(&fab, 2, &cfg);
    Pair { fab, a, b, held_a, held_b }
}

impl Pair {
    fn drive(&mut self) {
        for _ in 0..1000 {
            if !self.a.step() & !self.b.step() {
                return;
            }
        }
        panic!("no quiescence");
    }
    fn set_time(&mut self, ms: u64) {
        self.a.lnet.set_time_ms(ms);
        self.b.lnet.set_time_ms(ms);
    }
}

fn events(n: &mut Node) -> Vec<Event> {
    std::iter::from_fn(|| n.poll_event()).collect()
}

fn seg(off: u64, len: usize) -> Seg {
    Seg { off, len: len as u32 }
}

/// Item 2: a pull past its deadline while the device still copies (a late completion). Neither
/// end may finalize — and so unlink the MD and hand its pages back — before the device is done
/// with them: the puller waits for the copy to end, the transmitter (whose cancel now finds the
/// transmit claimed) for its TxDone.
#[test]
fn a_transfer_past_its_deadline_is_finalized_only_when_the_device_lets_go() {
    let mut p = pair(8, 100);
    let size = 256 << 10;
    let data = pattern(size, 7);
    p.a.mem.write(0, &data).unwrap();
    let me = p.b.lnet.me_attach(10, ProcessId::ANY, 1, 0, true, Insert::Tail).unwrap();
    p.b.lnet.md_attach(me, md(seg(0, size), opt::OP_PUT, Some(1))).unwrap();
    let src = p.a.lnet.md_bind(md(seg(0, size), 0, Some(1)), true);
    p.held_b.lock().unwrap().pulls = true;
    p.a.lnet.put(src, false, pid(2), 10, 1, 0, 0).unwrap();
    p.drive();
    assert_eq!(p.held_b.lock().unwrap().jobs.len(), 1, "B's pull is claimed and copying");
    p.set_time(100);
    p.drive();
    let (ea, eb) = (events(&mut p.a), events(&mut p.b));
    assert!(eb.is_empty(), "B finalized its PUT while the device still writes into the MD: {eb:?}");
    assert!(ea.is_empty(), "A finalized its PUT while the device still reads from the MD: {ea:?}");
    assert_eq!((p.a.lnet.md_count(), p.b.lnet.md_count()), (2, 2), "MDs still held (ping, this one)");
    release(&p.fab, &p.held_b, 2);
    p.drive();
    let (ea, eb) = (events(&mut p.a), events(&mut p.b));
    let put = eb.iter().find(|e| e.kind == EventKind::Put).expect("PUT event once the copy ended");
    assert_eq!(put.status, errno::ETIMEDOUT);
    assert!(put.unlinked);
    let send = ea.iter().find(|e| e.kind == EventKind::Send).expect("SEND event once the transmit was taken");
    assert_eq!(send.status, errno::ETIMEDOUT);
    assert!(p.a.idle() && p.b.idle());
    assert_eq!(p.fab.engine().lock().unwrap().live_txs(), 0);
}

/// Item 2: a PUT whose receiver never pulls expires at the transmitter: its transmit is
/// withdrawn (confirmed by the device) before the MD goes, so nobody can pull from it later.
#[test]
fn an_expired_transmit_is_cancelled_before_its_md_goes() {
    let mut p = pair(8, 100);
    let size = 64 << 10;
    let src = p.a.lnet.md_bind(md(seg(0, size), 0, Some(1)), true);
    // B never runs: the PUT_REQ sits in its mailbox.
    p.a.lnet.put(src, false, pid(2), 10, 1, 0, 0).unwrap();
    for _ in 0..10 {
        p.a.step();
    }
    assert_eq!(p.fab.engine().lock().unwrap().live_txs(), 1);
    p.held_a.lock().unwrap().all = true;
    p.a.lnet.set_time_ms(100);
    for _ in 0..10 {
        p.a.step();
    }
    assert!(events(&mut p.a).is_empty(), "finalized before the device confirmed the cancel");
    release(&p.fab, &p.held_a, 1);
    for _ in 0..10 {
        p.a.step();
    }
    let ev = events(&mut p.a);
    assert_eq!(ev.iter().find(|e| e.kind == EventKind::Send).map(|e| e.status), Some(errno::ETIMEDOUT), "{ev:?}");
    assert_eq!(p.fab.engine().lock().unwrap().live_txs(), 0, "transmit withdrawn");
    assert!(p.a.idle());
}

/// Item 3: a small PUT that timed out while queued for credits is not sent afterwards (its
/// sender already reported it failed: a late delivery is a duplicate).
#[test]
fn a_message_failed_while_queued_is_never_delivered() {
    let mut p = pair(2, 100);
    p.b.mem.write(0, &[0; 64]).unwrap();
    let me = p.b.lnet.me_attach(5, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
    p.b.lnet.md_attach(me, md(seg(4096, 1 << 20), opt::OP_PUT, None)).unwrap();
    for i in 0..4 {
        let h = p.a.lnet.md_bind(md(seg(0, 64), 0, Some(1)), true);
        p.a.lnet.put(h, false, pid(2), 5, i, 0, 0).unwrap();
    }
    // B does not run: A spends its 2 credits, the other two PUTs wait in A's queue.
    for _ in 0..10 {
        p.a.step();
    }
    p.set_time(100);
    p.drive();
    let ea = events(&mut p.a);
    let failed = ea.iter().filter(|e| e.kind == EventKind::Send && e.status == errno::ETIMEDOUT).count();
    let ok = ea.iter().filter(|e| e.kind == EventKind::Send && e.status == 0).count();
    assert_eq!((ok, failed), (2, 2), "{ea:?}");
    let eb = events(&mut p.b);
    assert_eq!(eb.iter().filter(|e| e.kind == EventKind::Put).count(), 2, "only what A reported sent arrives: {eb:?}");
    assert!(p.a.idle() && p.b.idle());
}

/// Item 3: SMSGs still in the device when their peer leaves are not counted twice: the credits
/// start afresh at the window, and the failed SMSGs of the old incarnation give none back.
#[test]
fn a_departed_peer_credits_are_reset_once() {
    let fab = InProcFabric::new(5);
    let cfg = DmaLndConfig { peer_credits: 2, tx_timeout_ms: 0, ..Default::default() };
    let (mut a, held_a) = slow_node(&fab, 1, &cfg);
    let (b, _) = slow_node(&fab, 2, &cfg);
    for i in 0..2 {
        let h = a.lnet.md_bind(md(seg(0, 64), 0, Some(1)), true);
        a.lnet.put(h, false, pid(2), 5, i, 0, 0).unwrap();
    }
    held_a.lock().unwrap().all = true;
    for _ in 0..10 {
        a.step();
    }
    drop(b);
    for _ in 0..10 {
        a.step();
    }
    release(&fab, &held_a, 1);
    for _ in 0..10 {
        a.step();
    }
    let lnd = a.lnds[1].as_any_mut().unwrap().downcast_mut::<DmaLnd<Box<dyn DmaDevice>>>().unwrap();
    assert_eq!(lnd.peer_credits(2), Some(2), "credits of the new incarnation");
    let _ = events(&mut a);
}
