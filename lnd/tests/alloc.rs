//! Steady-state allocations on the DMA path, counted by a global allocator: once warm, neither
//! the LNet core nor the DMA LND allocates per message (iovecs, short messages and inline
//! payloads come from pools). What is left, printed, is the in-process test device's own
//! copies (the shared-memory device writes descriptors into its ring instead).

use lnd::dev::inproc::InProcFabric;
use lnd::dmalnd::DmaLndConfig;
use lnd::lnet::{opt, Insert, MdSpec};
use lnd::mem::Seg;
use lnd::node::Node;
use lnd::wire::{Nid, ProcessId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BY_LND: AtomicU64 = AtomicU64::new(0);
static ATTRIBUTE: AtomicBool = AtomicBool::new(false);
thread_local! { static INSIDE: Cell<bool> = const { Cell::new(false) }; }

/// While attributing: does this allocation come from LNet or the DMA LND (not the test device)?
fn attribute() {
    if ATTRIBUTE.load(Ordering::Relaxed) && !INSIDE.with(|i| i.replace(true)) {
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        let first = bt.lines().find(|l| l.contains("lnd::") && !l.contains("alloc"));
        if first.is_some_and(|f| ["lnd::dmalnd", "lnd::lnet", "lnd::mem", "lnd::node"].iter().any(|m| f.contains(m))) {
            BY_LND.fetch_add(1, Ordering::Relaxed);
            eprintln!("allocation on the DMA path:\n{bt}");
        }
        INSIDE.with(|i| i.set(false));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        attribute();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        attribute();
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

struct Bench {
    a: Node,
    b: Node,
    src: lnd::lnet::MdHandle,
    target: ProcessId,
    _fab: InProcFabric,
}

impl Bench {
    fn new(size: u32) -> Bench {
        let fab = InProcFabric::new(1);
        let nid = |a: u32| -> Nid { format!("{a}@dma").parse().unwrap() };
        let mut a = Node::with_dma(fab.attach(1, 8 << 20).unwrap(), nid(1), 12345, 1, DmaLndConfig::default());
        let mut b = Node::with_dma(fab.attach(2, 8 << 20).unwrap(), nid(2), 12345, 2, DmaLndConfig::default());
        let me = b.lnet.me_attach(10, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail).unwrap();
        b.lnet.md_attach(me, MdSpec { iov: vec![Seg { off: 0, len: 4 << 20 }], options: opt::OP_PUT | opt::MANAGE_REMOTE, threshold: None, max_size: 0, user_ptr: 0 }).unwrap();
        let src = a.lnet.md_bind(MdSpec { iov: vec![Seg { off: 0, len: size }], options: 0, threshold: None, max_size: 0, user_ptr: 0 }, false);
        Bench { a, b, src, target: ProcessId::new(nid(2), 12345), _fab: fab }
    }

    /// `k` PUTs with ACK, one after the other, each run to completion.
    fn run(&mut self, k: u64) {
        for _ in 0..k {
            self.a.lnet.put(self.src, true, self.target, 10, 0, 0, 0).unwrap();
            while self.a.step() | self.b.step() {}
            while self.a.poll_event().is_some() {}
            while self.b.poll_event().is_some() {}
        }
    }
}

#[test]
fn the_dma_path_does_not_allocate_per_message_once_warm() {
    for size in [0u32, 1000, 64 << 10, 1 << 20] {
        let mut b = Bench::new(size);
        b.run(300); // warm up: slabs, queues and pools reach their sizes
        let before = ALLOCS.load(Ordering::Relaxed);
        b.run(2000);
        let all = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / 2000.0;
        ATTRIBUTE.store(true, Ordering::Relaxed);
        b.run(20);
        ATTRIBUTE.store(false, Ordering::Relaxed);
        eprintln!("PUT+ACK of {size} bytes: {all:.2} allocations per round trip, all in the in-process test device");
        assert_eq!(BY_LND.load(Ordering::Relaxed), 0, "LNet or the DMA LND allocated in steady state ({size} bytes)");
    }
}
